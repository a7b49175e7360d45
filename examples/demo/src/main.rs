//! Weir's demo: `weir serve` on `examples/policies/iot-fleet.yaml`, an Envoy
//! started from `envoy/bootstrap.yaml` alone (everything else arrives over
//! ADS), a backend for each of the policy's clusters, and device traffic in
//! three acts — steady traffic, a canary step, an overload — with what happened.
//!
//! Run it with `make demo`, which builds and installs what is missing first.

mod traffic;

use std::collections::BTreeMap;
use std::time::Duration;

use weir_policy::Feed;
use weir_testbed::fleet::{Fleet, example_policy};
use weir_testbed::weir::{WasmDelivery, Weir, ads_bootstrap};
use weir_testbed::{Behaviour, Envoy};

use traffic::{Mix, Tally};

const CANARY: &str = "ingest-eu-canary";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let fleet = Fleet::start(example_policy())?;
    let dir = tempfile::tempdir()?;
    let policy_path = dir.path().join("iot-fleet.yaml");
    // The example with its endpoints on this demo's backends (JSON is YAML).
    std::fs::write(&policy_path, serde_json::to_string_pretty(fleet.policy())?)?;
    let weir = Weir::start(&policy_path, WasmDelivery::Local).await?;
    let envoy = Envoy::start(&ads_bootstrap(weir.xds_addr(), "demo-envoy", false)?, 2).await?;
    let mut feed = Feed::initial(fleet.policy());
    feed.canary_weights.insert(CANARY.into(), 1_000);
    push_feed(&weir, &envoy, &fleet, &feed).await?;
    println!("Weir demo — examples/policies/iot-fleet.yaml");
    println!(
        "  weir serve: ADS on {}; Envoy {} from envoy/bootstrap.yaml (admin http://{}); {} backends on loopback\n",
        weir.xds_addr(),
        envoy.url(""),
        envoy.admin_addr(),
        fleet.backends().len()
    );

    println!(
        "Act 1: steady traffic — 3,000 requests from 600 devices in 3 regions; every 10th tries to spoof x-weir-* headers"
    );
    let steady = traffic::run(&envoy, Mix::steady(3_000, 600), 32).await;
    report_routes(&steady);
    report_classes(&steady);
    let before = steady.canary_devices(CANARY);
    println!(
        "  canary {CANARY} at 10%: {} of {} eu-west ingest devices ({:.1}%)",
        before.len(),
        steady.eu_ingest_devices().len(),
        100.0 * before.len() as f64 / steady.eu_ingest_devices().len().max(1) as f64
    );
    println!(
        "  spoofed requests: {} sent, {} reached a backend with a client's x-weir-* value\n",
        steady.spoofed, steady.spoof_leaks
    );

    println!(
        "Act 2: the canary steps from 10% to 50% (a new feed: weir pushes only the filter configuration, over ECDS)"
    );
    feed.canary_weights.insert(CANARY.into(), 5_000);
    push_feed(&weir, &envoy, &fleet, &feed).await?;
    let stepped = traffic::run(&envoy, Mix::steady(3_000, 600), 32).await;
    let after = stepped.canary_devices(CANARY);
    let moved_back = before
        .iter()
        .filter(|d| !after.contains(*d) && stepped.saw(d))
        .count();
    println!(
        "  canary now: {} of {} devices ({:.1}%); devices that went back to stable: {moved_back}; failed requests: {}\n",
        after.len(),
        stepped.eu_ingest_devices().len(),
        100.0 * after.len() as f64 / stepped.eu_ingest_devices().len().max(1) as f64,
        stepped.failed()
    );

    println!(
        "Act 3: overload — ingest backends slow to 200 ms, limit lowered to 20, a burst of 400 alarms and heartbeats"
    );
    for cluster in ["ingest-eu", "ingest-eu-canary", "ingest-us", "ingest-ap"] {
        fleet.backend(cluster).set_behaviour(Behaviour {
            delay: Duration::from_millis(200),
            ..Behaviour::default()
        });
    }
    feed.concurrency_limit = Some(20);
    push_feed(&weir, &envoy, &fleet, &feed).await?;
    let burst = traffic::run(&envoy, Mix::overload(400), 100).await;
    report_classes(&burst);

    let rollback = bad_release(&weir, &envoy, &fleet, &policy_path).await?;

    println!("\nThe filter's own metrics (Envoy /stats, wasmcustom.weir.*):");
    let stats = envoy
        .admin_text("/stats?filter=wasmcustom.weir.class")
        .await?;
    for line in stats.lines().filter(|l| !l.ends_with(": 0")) {
        println!("  {line}");
    }
    let alarms_shed = burst.by_class.get("alarm").map_or(0, |c| c.shed);
    if alarms_shed > 0
        || steady.spoof_leaks > 0
        || moved_back > 0
        || stepped.failed() > 0
        || rollback.is_none()
    {
        anyhow::bail!("the demo saw something Weir promises never happens: see above");
    }
    Ok(())
}

/// Act 4: a new release of the canary answers 20 % of its requests with 503;
/// weir sees it in Envoy's metrics and rolls it back by itself. Returns how
/// long that took, from the first traffic.
async fn bad_release(
    weir: &Weir,
    envoy: &Envoy,
    fleet: &Fleet,
    policy_path: &std::path::Path,
) -> anyhow::Result<Option<Duration>> {
    println!(
        "\nAct 4: a bad release — a new rollout of {CANARY} (steps 50%, 100%) whose backend fails 20% of requests; nobody touches anything"
    );
    for backend in fleet.backends().values() {
        backend.set_behaviour(Behaviour::default());
    }
    fleet.backend(CANARY).set_behaviour(Behaviour {
        fail_basis_points: 2_000,
        ..Behaviour::default()
    });
    // The controller owns the feed again, and a policy edit starts a new,
    // quicker rollout (new steps, fewer samples needed for a verdict).
    weir.clear_feed().await?;
    let mut policy = fleet.policy().clone();
    for placement in policy.services.iter_mut().flat_map(|s| &mut s.placements) {
        if let Some(canary) = placement.canary.as_mut() {
            canary.steps = vec![50.0, 100.0];
            canary.analysis.min_samples = 50;
        }
    }
    std::fs::write(policy_path, serde_json::to_string_pretty(&policy)?)?;
    weir_testbed::wait::eventually("the new rollout", Duration::from_secs(10), || async {
        let rollout = weir.rollout(CANARY).await.ok()?;
        (rollout["phase"] == "progressing" && rollout["weight_bp"] == 5_000).then_some(())
    })
    .await?;
    let started = std::time::Instant::now();
    let traffic = {
        let base_envoy = envoy.url("");
        tokio::spawn(async move { traffic::run_at(&base_envoy, Mix::steady(6_000, 600), 16).await })
    };
    let rolled_back =
        weir_testbed::wait::eventually("the rollback", Duration::from_secs(30), || async {
            let rollout = weir.rollout(CANARY).await.ok()?;
            (rollout["phase"] == "rolled_back").then(|| started.elapsed())
        })
        .await
        .ok();
    traffic.abort();
    let rollouts: serde_json::Value = weir_testbed::http_client()
        .get(format!("http://{}/v1/rollouts", weir.admin_addr()))
        .send()
        .await?
        .json()
        .await?;
    let decision = rollouts["decisions"].as_array().and_then(|all| {
        all.iter()
            .rev()
            .find(|d| d["canary"] == CANARY && d["to"] == "rolled_back")
    });
    match (rolled_back, decision) {
        (Some(after), Some(decision)) => {
            let evidence = &decision["evidence"];
            println!(
                "  weir rolled the canary back to 0% {:.1} s after traffic began",
                after.as_secs_f64()
            );
            println!(
                "  reason: {}",
                decision["reason"].as_str().unwrap_or_default()
            );
            println!(
                "  evidence: canary {} requests, {} errors; stable {} requests, {} errors; window {} ms",
                evidence["canary"]["requests"],
                evidence["canary"]["errors"],
                evidence["stable"]["requests"],
                evidence["stable"]["errors"],
                evidence["window_ms"]
            );
        }
        _ => println!("  the canary was NOT rolled back within 30 s"),
    }
    Ok(rolled_back)
}

/// Sets weir's live feed and waits until every Envoy worker runs it.
async fn push_feed(weir: &Weir, envoy: &Envoy, fleet: &Fleet, feed: &Feed) -> anyhow::Result<()> {
    weir.put_feed(feed)
        .await?
        .map_err(|errors| anyhow::anyhow!("weir refused the feed: {errors}"))?;
    let version = weir_policy::source::with_feed(fleet.policy(), feed.clone()).version;
    envoy.wait_for_filter_version(&version).await
}

fn report_routes(tally: &Tally) {
    println!("  {:<10} {:<18} {:>8}", "region", "cluster", "requests");
    for ((region, cluster), n) in &tally.by_region_cluster {
        println!("  {region:<10} {cluster:<18} {n:>8}");
    }
}

fn report_classes(tally: &Tally) {
    println!(
        "  {:<10} {:>7} {:>7} {:>9} {:>9}",
        "class", "sent", "served", "shed(503)", "p99 ms"
    );
    let mut rows: BTreeMap<usize, (&String, &traffic::ClassTally)> = BTreeMap::new();
    for (class, counts) in &tally.by_class {
        rows.insert(traffic::rank(class), (class, counts));
    }
    for (class, c) in rows.values() {
        println!(
            "  {:<10} {:>7} {:>7} {:>9} {:>9.1}",
            class,
            c.sent,
            c.served,
            c.shed,
            c.p99_ms()
        );
    }
}
