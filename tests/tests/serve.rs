//! `weir serve` driving a real Envoy that starts from `envoy/bootstrap.yaml`
//! alone: everything else arrives over ADS, state-of-the-world or delta.

use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_policy::{Feed, Policy};
use weir_testbed::Envoy;
use weir_testbed::backend::Echo;
use weir_testbed::fleet::{Fleet, PolicyFile, example_policy};
use weir_testbed::load::{SteadyLoad, failures};
use weir_testbed::wait::eventually;
use weir_testbed::weir::{WasmDelivery, Weir, ads_bootstrap, with_xds_token};

const ECDS: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// Writes a policy where weir watches it, atomically (as editors do).
fn write_policy(path: &Path, policy: &Policy) {
    // JSON is YAML: the policy as its own serialisation.
    let staged = path.with_extension("staged");
    std::fs::write(&staged, serde_json::to_string_pretty(policy).unwrap()).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

struct World {
    fleet: Fleet,
    policy_path: PathBuf,
    weir: Weir,
    envoy: Envoy,
    _dir: tempfile::TempDir,
}

/// Backends for the example policy, `weir serve` on it, and an Envoy from the bootstrap alone.
async fn world(delta: bool, delivery: WasmDelivery, feed: impl FnOnce(&mut Policy)) -> World {
    let mut policy = example_policy();
    feed(&mut policy);
    let fleet = Fleet::start(policy).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.yaml");
    write_policy(&policy_path, fleet.policy());
    let weir = Weir::start(&policy_path, delivery).await.unwrap();
    let bootstrap = ads_bootstrap(weir.xds_addr(), "envoy-test", delta).unwrap();
    let envoy = Envoy::start(&bootstrap, 2).await.unwrap();
    World {
        fleet,
        policy_path,
        weir,
        envoy,
        _dir: dir,
    }
}

async fn backend_for(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> (u16, Option<Echo>) {
    envoy.send("POST", path, headers).await.expect("send")
}

async fn cluster_for(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> String {
    envoy.backend_for(path, headers).await.unwrap()
}

async fn traffic_flows_as_the_policy_says(delta: bool) {
    // The canary at 0 %: routing alone decides where these requests go.
    let w = world(delta, WasmDelivery::Local, |p| {
        p.services[1].placements[0].canary.as_mut().unwrap().steps = vec![100.0];
    })
    .await;
    for (region, cluster) in [("us-east", "ingest-us"), ("ap-south", "ingest-ap")] {
        assert_eq!(
            cluster_for(&w.envoy, "/v1/telemetry", &[("x-region", region)]).await,
            cluster
        );
    }
    // Steps [100]: every eu-west device is on the canary.
    assert_eq!(
        cluster_for(
            &w.envoy,
            "/v1/telemetry",
            &[("x-region", "eu-west"), ("x-device-id", "d1")]
        )
        .await,
        "ingest-eu-canary"
    );
    let (_, echo) = backend_for(
        &w.envoy,
        "/v1/alarms",
        &[("x-region", "us-east"), ("x-weir-priority", "heartbeat")],
    )
    .await;
    assert_eq!(echo.unwrap().headers["x-weir-priority"], "alarm");
    // No service matches: the route answers 404 rather than guessing a cluster.
    assert_eq!(backend_for(&w.envoy, "/healthz", &[]).await.0, 404);
    w.weir.wait_acked("envoy-test", ECDS).await.unwrap();
    w.weir.wait_acked("envoy-test", LDS).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_flows_as_the_policy_says_with_nothing_static_in_envoy() {
    traffic_flows_as_the_policy_says(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_flows_as_the_policy_says_over_delta_xds() {
    traffic_flows_as_the_policy_says(true).await;
}

async fn policy_edits_reach_envoy(delta: bool) {
    let w = world(delta, WasmDelivery::Local, |_| {}).await;
    let mut policy = w.fleet.policy().clone();
    assert_eq!(
        cluster_for(&w.envoy, "/v1/commands/x", &[("x-region", "eu-west")]).await,
        "commands-eu"
    );

    // Change routing and add a cluster: commands move to a new cluster.
    let extra = weir_testbed::Backend::start("commands-new").unwrap();
    let mut cluster = policy
        .clusters
        .iter()
        .find(|c| c.name == "commands-eu")
        .unwrap()
        .clone();
    cluster.name = "commands-new".into();
    cluster.endpoints = vec![extra.addr().to_string()];
    policy.clusters.push(cluster);
    policy.services[0].placements[0].cluster = "commands-new".into();
    let before = w.weir.snapshot_version().await.unwrap();
    write_policy(&w.policy_path, &policy);
    eventually(
        "weir to apply the edit",
        Duration::from_secs(10),
        || async {
            let now = w.weir.snapshot_version().await.ok()?;
            (now != before).then_some(())
        },
    )
    .await
    .unwrap();
    w.weir.wait_acked("envoy-test", CDS).await.unwrap();
    w.weir.wait_acked("envoy-test", ECDS).await.unwrap();
    assert_eq!(
        cluster_for(&w.envoy, "/v1/commands/x", &[("x-region", "eu-west")]).await,
        "commands-new"
    );
    let dump = w.envoy.admin_text("/config_dump").await.unwrap();
    assert!(
        dump.contains("commands-new"),
        "Envoy's config_dump shows the new cluster"
    );

    // Change a canary weight: steps starting at 100 % send every eu device to the canary.
    policy.services[1].placements[0]
        .canary
        .as_mut()
        .unwrap()
        .steps = vec![100.0];
    write_policy(&w.policy_path, &policy);
    let expected = weir_policy::source::compile(&policy).version;
    eventually(
        "Envoy to run the new filter configuration",
        Duration::from_secs(10),
        || async {
            let dump = w
                .envoy
                .admin_text("/config_dump?resource=ecds_filters")
                .await
                .ok()?;
            dump.contains(&expected).then_some(())
        },
    )
    .await
    .unwrap();
    w.envoy.wait_for_filter_version(&expected).await.unwrap();
    assert_eq!(
        cluster_for(
            &w.envoy,
            "/v1/telemetry",
            &[("x-region", "eu-west"), ("x-device-id", "d7")]
        )
        .await,
        "ingest-eu-canary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_edits_reach_envoy_over_sotw() {
    policy_edits_reach_envoy(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_edits_reach_envoy_over_delta() {
    policy_edits_reach_envoy(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_edit_changes_nothing_and_no_request_fails_under_load() {
    const LOOPS: usize = 6;
    const MAX_PER_LOOP: usize = 3_000;
    let w = world(false, WasmDelivery::Local, |_| {}).await;
    let before = w.weir.snapshot_version().await.unwrap();
    // Requests that must complete around each edit, so both land under load.
    const REQUESTS_AROUND_EACH_EDIT: usize = 40;
    let load = SteadyLoad::start(
        w.envoy.url("/v1/telemetry"),
        &[("x-region", "us-east")],
        LOOPS,
        MAX_PER_LOOP,
    );
    load.more(REQUESTS_AROUND_EACH_EDIT).await.unwrap();
    let good = std::fs::read_to_string(&w.policy_path).unwrap();
    let bad = good.replacen(
        "\"cluster\": \"ingest-us\"",
        "\"cluster\": \"ingest-mars\"",
        1,
    );
    assert_ne!(bad, good);
    std::fs::write(&w.policy_path, &bad).unwrap();
    let error = eventually(
        "weir to report the invalid edit",
        Duration::from_secs(10),
        || async {
            let status = w.weir.status().await.ok()?;
            status["policy"]["last_error"].as_str().map(str::to_owned)
        },
    )
    .await
    .unwrap();
    assert!(
        error.contains("policy.yaml:"),
        "the error names the file: {error}"
    );
    assert!(
        error.contains("services[1].placements[1].cluster: unknown cluster `ingest-mars`"),
        "{error}"
    );
    assert_eq!(
        w.weir.snapshot_version().await.unwrap(),
        before,
        "an invalid edit changed the snapshot"
    );
    // Keep the load going past the rejection, then fix the file again.
    load.more(REQUESTS_AROUND_EACH_EDIT).await.unwrap();
    std::fs::write(&w.policy_path, &good).unwrap();
    eventually(
        "weir to clear the error",
        Duration::from_secs(10),
        || async {
            let status = w.weir.status().await.ok()?;
            status["policy"]["last_error"].is_null().then_some(())
        },
    )
    .await
    .unwrap();
    load.more(REQUESTS_AROUND_EACH_EDIT).await.unwrap();
    let statuses = load.finish().await;
    assert_eq!(
        failures(&statuses),
        0,
        "{} of {} failed",
        failures(&statuses),
        statuses.len()
    );
}

async fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy.stat(name).await.unwrap().unwrap_or(0)
}

/// Counters that move when Envoy rebuilds listeners or clusters.
async fn churn(envoy: &Envoy) -> [u64; 4] {
    [
        stat(envoy, "listener_manager.listener_modified").await,
        stat(envoy, "listener_manager.listener_added").await,
        stat(envoy, "cluster_manager.cluster_modified").await,
        stat(envoy, "cluster_manager.cluster_added").await,
    ]
}

async fn envoy_outlives_weir_and_resyncs_without_churn(delta: bool) {
    let w = world(delta, WasmDelivery::Local, |_| {}).await;
    for type_url in [CDS, LDS, ECDS] {
        w.weir.wait_acked("envoy-test", type_url).await.unwrap();
    }
    let version = w.weir.snapshot_version().await.unwrap();
    let before = churn(&w.envoy).await;
    let from_us = [("x-region", "us-east")];

    // weir dies: Envoy keeps serving its last configuration.
    let stopped = w.weir.kill();
    for _ in 0..20 {
        assert_eq!(
            cluster_for(&w.envoy, "/v1/telemetry", &from_us).await,
            "ingest-us"
        );
    }
    // weir comes back: Envoy reconnects and gets the same version, and nothing churns.
    let weir = stopped.start().await.unwrap();
    for type_url in [CDS, LDS, ECDS] {
        weir.wait_acked("envoy-test", type_url).await.unwrap();
    }
    assert_eq!(weir.snapshot_version().await.unwrap(), version);
    assert_eq!(
        churn(&w.envoy).await,
        before,
        "listeners or clusters were rebuilt after the reconnect"
    );
    assert_eq!(
        cluster_for(&w.envoy, "/v1/telemetry", &from_us).await,
        "ingest-us"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_outlives_weir_and_resyncs_without_churn_over_sotw() {
    envoy_outlives_weir_and_resyncs_without_churn(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_outlives_weir_and_resyncs_without_churn_over_delta() {
    envoy_outlives_weir_and_resyncs_without_churn(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_change_updates_only_the_filter_configuration() {
    let w = world(false, WasmDelivery::Local, |_| {}).await;
    w.weir.wait_acked("envoy-test", ECDS).await.unwrap();
    let before = w.weir.status().await.unwrap()["snapshot"]["types"].clone();
    let listeners_modified = stat(&w.envoy, "listener_manager.listener_modified").await;
    let mut feed = Feed::initial(w.fleet.policy());
    feed.canary_weights
        .insert("ingest-eu-canary".into(), 10_000);
    w.weir.put_feed(&feed).await.unwrap().unwrap();
    let after = w.weir.status().await.unwrap()["snapshot"]["types"].clone();
    for (type_url, version) in before.as_object().unwrap() {
        if type_url == ECDS {
            assert_ne!(
                &after[type_url], version,
                "the filter configuration changed"
            );
        } else {
            assert_eq!(
                &after[type_url], version,
                "{type_url} changed on a feed-only update"
            );
        }
    }
    w.weir.wait_acked("envoy-test", ECDS).await.unwrap();
    let expected = weir_policy::source::with_feed(w.fleet.policy(), feed).version;
    w.envoy.wait_for_filter_version(&expected).await.unwrap();
    assert_eq!(
        cluster_for(
            &w.envoy,
            "/v1/telemetry",
            &[("x-region", "eu-west"), ("x-device-id", "d1")]
        )
        .await,
        "ingest-eu-canary"
    );
    assert_eq!(
        stat(&w.envoy, "listener_manager.listener_modified").await,
        listeners_modified
    );

    // A feed that does not fit the policy is refused and changes nothing.
    let mut bad = Feed::initial(w.fleet.policy());
    bad.canary_weights.insert("no-such-canary".into(), 10);
    let refused = w.weir.put_feed(&bad).await.unwrap().unwrap_err();
    assert!(refused.to_string().contains("no-such-canary"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_module_can_be_fetched_from_weir_over_http() {
    let w = world(false, WasmDelivery::Http, |p| {
        p.services[1].placements[0].canary.as_mut().unwrap().steps = vec![100.0];
    })
    .await;
    assert_eq!(
        cluster_for(&w.envoy, "/v1/telemetry", &[("x-region", "us-east")]).await,
        "ingest-us"
    );
    let dump = w
        .envoy
        .admin_text("/config_dump?resource=ecds_filters")
        .await
        .unwrap();
    assert!(
        dump.contains("sha256"),
        "the module came from a remote source checked by sha256"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_server_can_be_named_by_dns() {
    // `--wasm-server localhost:PORT`: Envoy resolves the name itself. The
    // module is served by another weir's admin API (the same file), so the
    // only way Envoy gets it is through that name.
    let fleet = Fleet::start(example_policy()).unwrap();
    let policy_file = PolicyFile::new("policy.yaml", fleet.policy()).unwrap();
    let module_server = Weir::start(policy_file.path(), WasmDelivery::Local)
        .await
        .unwrap();
    let named = format!("localhost:{}", module_server.admin_addr().port());
    let weir = Weir::start_with_env(
        policy_file.path(),
        WasmDelivery::Http,
        &[("WEIR_WASM_SERVER", named.as_str())],
    )
    .await
    .unwrap();
    let bootstrap = ads_bootstrap(weir.xds_addr(), "dns-envoy", false).unwrap();
    let envoy = Envoy::start(&bootstrap, 1).await.unwrap();
    assert_eq!(
        cluster_for(&envoy, "/v1/telemetry", &[("x-region", "us-east")]).await,
        "ingest-us"
    );
    let dump = envoy
        .admin_text("/config_dump?resource=ecds_filters")
        .await
        .unwrap();
    assert!(
        dump.contains(&format!("http://{named}/v1/wasm/weir_filter.wasm")),
        "{dump}"
    );
    let clusters = envoy.admin_text("/clusters").await.unwrap();
    assert!(
        clusters.contains("weir_wasm::") && clusters.contains("hostname::localhost"),
        "{clusters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_name_the_filter_version_only_when_weir_is_told_to() {
    let fleet = Fleet::start(example_policy()).unwrap();
    let policy_file = PolicyFile::new("policy.yaml", fleet.policy()).unwrap();
    for (env, stamped) in [
        (&[][..], false),
        (&[("WEIR_VERSION_HEADER", "true")][..], true),
    ] {
        let weir = Weir::start_with_env(policy_file.path(), WasmDelivery::Local, env)
            .await
            .unwrap();
        let bootstrap = ads_bootstrap(weir.xds_addr(), "version-envoy", false).unwrap();
        let envoy = Envoy::start(&bootstrap, 1).await.unwrap();
        let response = weir_testbed::http_client()
            .post(envoy.url("/v1/telemetry"))
            .header("x-region", "us-east")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let version = response
            .headers()
            .get("x-weir-filter")
            .map(|v| v.to_str().unwrap().to_owned());
        let expected = stamped.then(|| env!("CARGO_PKG_VERSION").to_owned());
        assert_eq!(version, expected, "with {env:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_carrying_the_xds_token_is_served_and_reports() {
    const TOKEN: &str = "only-our-envoys-know-this";
    let fleet = Fleet::start(example_policy()).unwrap();
    let policy_file = PolicyFile::new("policy.yaml", fleet.policy()).unwrap();
    let weir = Weir::start_with_env(
        policy_file.path(),
        WasmDelivery::Local,
        &[("WEIR_XDS_TOKEN", TOKEN)],
    )
    .await
    .unwrap();
    let mut bootstrap = ads_bootstrap(weir.xds_addr(), "token-envoy", false).unwrap();
    with_xds_token(&mut bootstrap, TOKEN);
    // Ready means it took its listener from weir.
    let envoy = Envoy::start(&bootstrap, 1).await.unwrap();
    assert_eq!(
        cluster_for(&envoy, "/v1/telemetry", &[("x-region", "us-east")]).await,
        "ingest-us"
    );
    // Its stats sink, carrying the token too, reaches weir's OTLP receiver.
    let used = eventually(
        "Envoy's stats to be taken by weir",
        Duration::from_secs(15),
        || async {
            let status = weir.status().await.ok()?;
            let used = status["otlp"]["data_points"]["used"].as_u64()?;
            (used > 0).then_some(used)
        },
    )
    .await;
    assert!(used.is_ok(), "{used:?}; weir's log:\n{}", weir.log());
}
