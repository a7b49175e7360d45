//! What operators install from, checked with the real tools:
//!
//! - the alert rules (`deploy/prometheus/weir-rules.yaml`) pass
//!   `promtool check rules` and their unit tests (`promtool test rules`);
//! - every query of the Grafana dashboard (`deploy/grafana/weir.json`), its
//!   panels' and its annotations', parses and returns data on a real
//!   Prometheus scraping a real `weir` whose Envoy's stats sink feeds it —
//!   and the rules loaded there fire on a real rollback.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use weir_testbed::Behaviour;
use weir_testbed::canary::{self, CANARY};
use weir_testbed::fleet::policy_from_yaml;
use weir_testbed::paths::{packaging_tool, repo_root};
use weir_testbed::prometheus::Prometheus;
use weir_testbed::served::Served;
use weir_testbed::steady::Traffic;
use weir_testbed::wait::eventually;

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = repo_root().join("deploy/prometheus");
    for args in [
        ["check", "rules", "weir-rules.yaml"],
        ["test", "rules", "weir-rules.test.yaml"],
    ] {
        let out = Command::new(packaging_tool("promtool"))
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every PromQL expression of the dashboard: its panels' targets and its
/// annotations' queries.
fn dashboard_queries() -> Vec<String> {
    let path = repo_root().join("deploy/grafana/weir.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap().iter();
    let targets = panels.flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default());
    let annotations = dashboard["annotations"]["list"]
        .as_array()
        .unwrap()
        .clone()
        .into_iter()
        .filter(|a| a["datasource"]["type"] == "prometheus");
    targets
        .chain(annotations)
        .map(|q| q["expr"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_and_the_rules_fire_on_a_real_rollback() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{queries:?}");
    let policy = policy_from_yaml(
        "dash.yaml",
        &canary::policy_yaml("[50, 100]", "30s", 40, 2.0),
    )
    .unwrap();
    let w = Served::start(policy, "dashboard-envoy", 2).await.unwrap();
    let prometheus = Prometheus::scraping(w.weir.admin_addr()).await.unwrap();
    let rules = prometheus.rules().await.unwrap();
    let loaded: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), 12, "{rules}");
    assert!(loaded.iter().all(|r| r["health"] == "ok"), "{rules}");

    // Traffic through the filter, then a canary failing a fifth of its
    // requests: weir rolls it back.
    let traffic = Traffic::start(&w.envoy, 100, Duration::from_secs(60));
    eventually(
        "a few scrapes with traffic",
        Duration::from_secs(20),
        || async {
            let admitted = prometheus
                .query("sum(weir_fleet_admission_requests_total)")
                .await
                .ok()?;
            (admitted.first()?["value"][1].as_str()? != "0").then_some(())
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}; weir's log:\n{}", w.weir.log()));
    w.fleet.backend(CANARY).set_behaviour(Behaviour {
        fail_basis_points: 2_000,
        ..Behaviour::default()
    });

    // The queries without data at the last try.
    let silent = std::sync::Mutex::new(BTreeSet::new());
    let answered = eventually(
        "every dashboard query to return data",
        Duration::from_secs(30),
        || {
            let (prometheus, queries, silent) = (&prometheus, &queries, &silent);
            async move {
                let mut none = BTreeSet::new();
                for query in queries {
                    match prometheus.query(query).await {
                        Ok(result) if !result.is_empty() => {}
                        Ok(_) => {
                            none.insert(query.clone());
                        }
                        Err(err) => panic!("{err}"),
                    }
                }
                let done = none.is_empty();
                *silent.lock().unwrap() = none;
                done.then_some(())
            }
        },
    )
    .await;
    assert!(
        answered.is_ok(),
        "no data for:\n{:#?}",
        silent.lock().unwrap()
    );

    let fired = eventually(
        "WeirCanaryRolledBack to fire",
        Duration::from_secs(20),
        || async {
            let alerts = prometheus
                .query(r#"ALERTS{alertname="WeirCanaryRolledBack",alertstate="firing"}"#)
                .await
                .ok()?;
            alerts.first().cloned()
        },
    )
    .await
    .unwrap_or_else(|err| panic!("{err}; Prometheus's log:\n{}", prometheus.log()));
    assert_eq!(fired["metric"]["canary"], CANARY);
    traffic.stop().await;
}
