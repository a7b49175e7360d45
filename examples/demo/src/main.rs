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

    println!("\nThe filter's own metrics (Envoy /stats, wasmcustom.weir.*):");
    let stats = envoy
        .admin_text("/stats?filter=wasmcustom.weir.class")
        .await?;
    for line in stats.lines().filter(|l| !l.ends_with(": 0")) {
        println!("  {line}");
    }
    let alarms_shed = burst.by_class.get("alarm").map_or(0, |c| c.shed);
    if alarms_shed > 0 || steady.spoof_leaks > 0 || moved_back > 0 || stepped.failed() > 0 {
        anyhow::bail!("the demo saw something Weir promises never happens: see above");
    }
    Ok(())
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
