//! The filter steering real traffic in a real Envoy: classes, routes, canary
//! split, configuration updates. Overload has its own file.

use std::collections::{BTreeMap, BTreeSet};
use weir_policy::Feed;
use weir_policy::model::{HeaderConditions, HeaderMatch};

use weir_testbed::backend::Echo;
use weir_testbed::fleet::{Fleet, example_policy};
use weir_testbed::load::{SteadyLoad, failures};
use weir_testbed::{Envoy, http_client};

/// Sends one request; returns the status and what the backend saw.
async fn send(
    envoy: &Envoy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<Echo>) {
    envoy.send(method, path, headers).await.expect("send")
}

/// The example's feed with its canary at 0 %, so that routing alone decides.
fn no_canary() -> Option<Feed> {
    let policy = example_policy();
    let mut feed = Feed::initial(&policy);
    feed.canary_weights.values_mut().for_each(|w| *w = 0);
    Some(feed)
}

async fn backend_for(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> String {
    envoy.backend_for(path, headers).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_to_their_regions_cluster_and_unserved_device_types_elsewhere() {
    let fleet = Fleet::start(example_policy()).unwrap();
    let envoy = fleet.envoy(no_canary()).start().await.unwrap();

    for (region, cluster) in [
        ("eu-west", "ingest-eu"),
        ("us-east", "ingest-us"),
        ("ap-south", "ingest-ap"),
    ] {
        for _ in 0..5 {
            let got = backend_for(
                &envoy,
                "/v1/telemetry",
                &[("x-region", region), ("x-device-type", "sensor")],
            )
            .await;
            assert_eq!(got, cluster, "from {region}");
        }
    }
    assert_eq!(
        backend_for(&envoy, "/v1/commands/reboot", &[("x-region", "us-east")]).await,
        "commands-us"
    );
    // ingest-ap does not serve vehicles: they go to the best cluster that does.
    let got = backend_for(
        &envoy,
        "/v1/telemetry",
        &[("x-region", "ap-south"), ("x-device-type", "vehicle")],
    )
    .await;
    assert_eq!(got, "ingest-eu");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_class_travels_upstream_and_client_weir_headers_are_ignored() {
    let fleet = Fleet::start(example_policy()).unwrap();
    let envoy = fleet.envoy(no_canary()).start().await.unwrap();

    let (status, echo) = send(
        &envoy,
        "GET",
        "/v1/heartbeat",
        &[
            ("x-region", "eu-west"),
            ("x-weir-priority", "alarm"),
            ("x-weir-cluster", "ingest-us"),
            ("x-weir-variant", "canary"),
            ("x-weir-shed", "no"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let echo = echo.unwrap();
    assert_eq!(
        echo.backend, "ingest-eu",
        "a spoofed x-weir-cluster must not steer"
    );
    assert_eq!(echo.headers["x-weir-priority"], "heartbeat");
    assert_eq!(echo.headers["x-weir-cluster"], "ingest-eu");
    assert_eq!(echo.headers.get("x-weir-shed"), None);
    assert_ne!(
        echo.headers.get("x-weir-variant").map(String::as_str),
        Some("canary")
    );
}

/// Sends `rounds` requests from each device (many at a time) from eu-west,
/// with `extra` headers, and returns the set of backends each device reached.
async fn backends_by_device(
    envoy: &Envoy,
    devices: &[String],
    rounds: usize,
    extra: &[(&'static str, &'static str)],
) -> BTreeMap<String, BTreeSet<String>> {
    const IN_FLIGHT: usize = 48;
    let url = envoy.url("/v1/telemetry");
    let jobs: Vec<String> = (0..rounds).flat_map(|_| devices.iter().cloned()).collect();
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for chunk in jobs.chunks(IN_FLIGHT * 8) {
        let mut tasks = tokio::task::JoinSet::new();
        for part in chunk.chunks(8) {
            let (client, url, part) = (http_client(), url.clone(), part.to_vec());
            let extra = extra.to_vec();
            tasks.spawn(async move {
                let mut got = Vec::new();
                for device in part {
                    let mut request = client
                        .post(&url)
                        .header("x-region", "eu-west")
                        .header("x-device-type", "sensor")
                        .header("x-device-id", &device);
                    for (name, value) in &extra {
                        request = request.header(*name, *value);
                    }
                    let response = request.send().await.expect("send");
                    assert_eq!(response.status(), 200);
                    let echo: Echo = response.json().await.expect("echo");
                    got.push((device, echo.backend));
                }
                got
            });
        }
        while let Some(done) = tasks.join_next().await {
            for (device, backend) in done.expect("task") {
                seen.entry(device).or_default().insert(backend);
            }
        }
    }
    seen
}

fn canary_set(seen: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    seen.iter()
        .filter(|(_, backends)| backends.contains("ingest-eu-canary"))
        .map(|(device, _)| device.clone())
        .collect()
}

/// |share − p| ≤ 5σ with σ = √(p(1−p)/n): a correct split fails this about
/// once in 1.7 million runs.
fn assert_share(share: f64, p: f64, n: usize) {
    let tolerance = 5.0 * (p * (1.0 - p) / n as f64).sqrt();
    assert!(
        (share - p).abs() <= tolerance,
        "canary share {share:.4}, expected {p} ± {tolerance:.4}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_split_is_sticky_agreed_between_envoys_and_only_grows() {
    const DEVICES: usize = 2_000;
    const ROUNDS: usize = 10; // 20,000 requests
    let policy = example_policy();
    let fleet = Fleet::start(policy.clone()).unwrap();
    let mut feed = Feed::initial(&policy);
    feed.canary_weights.insert("ingest-eu-canary".into(), 1_000);
    let first = fleet.envoy(Some(feed.clone())).start().await.unwrap();
    let devices: Vec<String> = (0..DEVICES).map(|i| format!("sensor-{i:05}")).collect();

    let seen = backends_by_device(&first, &devices, ROUNDS, &[]).await;
    assert_eq!(seen.len(), DEVICES);
    for (device, backends) in &seen {
        assert_eq!(backends.len(), 1, "{device} flipped between {backends:?}");
    }
    let at_10 = canary_set(&seen);
    assert_share(at_10.len() as f64 / DEVICES as f64, 0.10, DEVICES);
    // Exactly the devices whose bucket is below the weight: the filter runs the shared engine.
    let predicted: BTreeSet<String> = devices
        .iter()
        .filter(|d| weir_policy::split::bucket("ingest-eu-canary", d) < 1_000)
        .cloned()
        .collect();
    assert_eq!(at_10, predicted);
    first.filter_counters_settled().await.unwrap();
    assert_eq!(
        first
            .stat("wasmcustom.weir.canary.ingest-eu-canary.canary")
            .await
            .unwrap(),
        Some((at_10.len() * ROUNDS) as u64)
    );

    // A second Envoy with the same configuration agrees on every device.
    let second = fleet.envoy(Some(feed.clone())).start().await.unwrap();
    assert_eq!(
        canary_set(&backends_by_device(&second, &devices, 1, &[]).await),
        at_10
    );

    // 10 % → 30 %: only stable devices move, and the share follows.
    feed.canary_weights.insert("ingest-eu-canary".into(), 3_000);
    fleet.push_feed(&first, feed).await.unwrap();
    let at_30 = canary_set(&backends_by_device(&first, &devices, 1, &[]).await);
    assert!(
        at_10.is_subset(&at_30),
        "a canary device went back to stable"
    );
    assert_share(at_30.len() as f64 / DEVICES as f64, 0.30, DEVICES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testers_always_reach_the_canary_others_by_weight_and_firmware_2_its_own_cluster() {
    const DEVICES: usize = 1_000;
    // The example's canary sends `x-tester: 1` to the canary at any weight;
    // here firmware 2.x is also targeted at ingest-us.
    let mut policy = example_policy();
    policy.services[1].placements[1].matches = Some(HeaderConditions {
        headers: vec![HeaderMatch {
            name: "x-firmware".into(),
            prefix: Some("2.".into()),
            ..HeaderMatch::default()
        }],
    });
    let fleet = Fleet::start(policy.clone()).unwrap();
    let mut feed = Feed::initial(&policy);
    feed.canary_weights.insert("ingest-eu-canary".into(), 1_000);
    let envoy = fleet.envoy(Some(feed)).start().await.unwrap();
    let devices: Vec<String> = (0..DEVICES).map(|i| format!("sensor-{i:05}")).collect();

    let testers = backends_by_device(&envoy, &devices, 2, &[("x-tester", "1")]).await;
    assert_eq!(testers.len(), DEVICES);
    for (device, backends) in &testers {
        assert_eq!(
            backends,
            &BTreeSet::from(["ingest-eu-canary".to_owned()]),
            "tester {device}"
        );
    }

    // The same devices without the header: by weight, 10 %, the bucket's devices.
    let others = canary_set(&backends_by_device(&envoy, &devices, 2, &[("x-tester", "0")]).await);
    assert_share(others.len() as f64 / DEVICES as f64, 0.10, DEVICES);
    let predicted: BTreeSet<String> = devices
        .iter()
        .filter(|d| weir_policy::split::bucket("ingest-eu-canary", d) < 1_000)
        .cloned()
        .collect();
    assert_eq!(others, predicted);

    // Firmware 2.x from eu-west goes to ingest-us, its only candidate;
    // firmware 1.x stays in eu-west.
    let v2 = backends_by_device(&envoy, &devices[..100], 1, &[("x-firmware", "2.3.1")]).await;
    assert!(
        v2.values()
            .all(|b| b == &BTreeSet::from(["ingest-us".to_owned()])),
        "{v2:?}"
    );
    let v1 = backends_by_device(&envoy, &devices[..100], 1, &[("x-firmware", "1.9.0")]).await;
    assert!(
        v1.values().flatten().all(|b| b.starts_with("ingest-eu")),
        "{v1:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_sla_score_in_the_feed_moves_traffic_away() {
    let policy = example_policy();
    let fleet = Fleet::start(policy.clone()).unwrap();
    let envoy = fleet.envoy(no_canary()).start().await.unwrap();
    let from_eu = [("x-region", "eu-west"), ("x-device-type", "sensor")];
    assert_eq!(
        backend_for(&envoy, "/v1/telemetry", &from_eu).await,
        "ingest-eu"
    );

    let mut feed = no_canary().unwrap();
    feed.sla_scores.insert("ingest-eu".into(), 0.2);
    fleet.push_feed(&envoy, feed).await.unwrap();
    // ingest-us (0.84) and ingest-ap (0.80) now beat ingest-eu (0.75) and are
    // near-equal, so they share the traffic.
    let mut reached = BTreeSet::new();
    for _ in 0..20 {
        reached.insert(backend_for(&envoy, "/v1/telemetry", &from_eu).await);
    }
    let expected: BTreeSet<String> = ["ingest-us".to_owned(), "ingest-ap".to_owned()].into();
    assert!(reached.is_subset(&expected), "{reached:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_configuration_is_refused_and_the_last_good_one_keeps_serving() {
    let policy = example_policy();
    let fleet = Fleet::start(policy.clone()).unwrap();
    let envoy = fleet.envoy(no_canary()).start().await.unwrap();

    // A document that parses but whose policy names a cluster that does not exist.
    let good = fleet.filter_config(no_canary());
    let broken = good.replacen(
        "\"cluster\":\"ingest-us\"",
        "\"cluster\":\"ingest-mars\"",
        1,
    );
    assert_ne!(broken, good);
    envoy.update_weir_config(&broken).unwrap();
    envoy
        .wait_for_log("weir filter refused its configuration: invalid plugin configuration: the policy is invalid: services[1].placements[1].cluster: unknown cluster `ingest-mars`", 1)
        .await
        .unwrap();
    // Still steering by the last good configuration.
    let from_us = [("x-region", "us-east"), ("x-device-type", "sensor")];
    for _ in 0..10 {
        assert_eq!(
            backend_for(&envoy, "/v1/telemetry", &from_us).await,
            "ingest-us"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_with_an_invalid_policy_is_refused_at_start() {
    let fleet = Fleet::start(example_policy()).unwrap();
    let broken = fleet.filter_config(None).replacen(
        "\"concurrency_limit\":200",
        "\"concurrency_limit\":0",
        1,
    );
    let (status, log) = weir_testbed::EnvoyBuilder::new()
        .cluster("ingest-eu", &[fleet.backend("ingest-eu").addr()])
        .weir_filter(&broken)
        .start_expecting_failure()
        .await
        .unwrap();
    assert!(!status.success());
    assert!(
        log.contains("admission.concurrency_limit: must be at least 1"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_configurations_take_effect_without_failing_requests_in_flight() {
    const LOOPS: usize = 8;
    const MAX_REQUESTS_PER_LOOP: usize = 5_000;
    // Requests that must complete before, between and after the pushes, so that
    // every reconfiguration lands while the load is flowing.
    const REQUESTS_AROUND_EACH_PUSH: usize = 40;

    let policy = example_policy();
    let fleet = Fleet::start(policy.clone()).unwrap();
    fleet
        .backend("ingest-eu")
        .set_behaviour(weir_testbed::Behaviour {
            delay: std::time::Duration::from_millis(5),
            ..Default::default()
        });
    let envoy = fleet.envoy(None).start().await.unwrap();
    let load = SteadyLoad::start(
        envoy.url("/v1/telemetry"),
        &[("x-region", "eu-west")],
        LOOPS,
        MAX_REQUESTS_PER_LOOP,
    );
    for weight in [500u32, 1_000, 2_500, 5_000, 10_000] {
        load.more(REQUESTS_AROUND_EACH_PUSH).await.unwrap();
        let mut feed = Feed::initial(&policy);
        feed.canary_weights
            .insert("ingest-eu-canary".into(), weight);
        fleet.push_feed(&envoy, feed).await.unwrap();
    }
    load.more(REQUESTS_AROUND_EACH_PUSH).await.unwrap();
    let statuses = load.finish().await;
    let failed = failures(&statuses);
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during reconfiguration",
        statuses.len()
    );
    // The last configuration is in force: every device goes to the canary.
    assert_eq!(
        backend_for(
            &envoy,
            "/v1/telemetry",
            &[("x-region", "eu-west"), ("x-device-id", "any")]
        )
        .await,
        "ingest-eu-canary"
    );
}

/// Header values that are not UTF-8 (obs-text, which HTTP allows) reach the
/// filter's slow path: the request is steered all the same, sticky by its
/// device id's bytes, and a spoofed internal header beside them is still removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_values_that_are_not_utf8_are_steered_and_guarded() {
    let fleet = Fleet::start(example_policy()).unwrap();
    let mut feed = Feed::initial(fleet.policy());
    feed.canary_weights.insert("ingest-eu-canary".into(), 5_000);
    let envoy = fleet.envoy(Some(feed)).start().await.unwrap();
    let client = http_client();
    let device = reqwest::header::HeaderValue::from_bytes(b"sensor-\xff\xfe-7").unwrap();
    let label = reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap();
    let mut backends = BTreeSet::new();
    for _ in 0..10 {
        let response = client
            .post(envoy.url("/v1/telemetry"))
            .header("x-region", "eu-west")
            .header("x-device-id", device.clone())
            .header("x-label", label.clone())
            .header("x-weir-cluster", "ingest-us")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let echo: Echo = response.json().await.unwrap();
        assert_eq!(
            echo.headers.get("x-weir-priority").map(String::as_str),
            Some("telemetry")
        );
        backends.insert(echo.backend);
    }
    // One device, one variant: the split is sticky on the id as the filter read it.
    assert_eq!(backends.len(), 1, "{backends:?}");
    let backend = backends.into_iter().next().unwrap();
    assert!(
        backend == "ingest-eu" || backend == "ingest-eu-canary",
        "the spoofed header steered the request to {backend}"
    );
}

/// Requests at Envoy's header limits reach the filter whole: ninety headers,
/// half of them spoofed `x-weir-*` headers in every case, and a value of
/// 48 KiB. The filter steers them, removes every spoofed header, and keeps
/// serving; a request beyond Envoy's limits is answered 431 by Envoy before
/// the filter runs, and the next request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_very_many_and_very_large_headers_are_steered_and_guarded() {
    let fleet = Fleet::start(example_policy()).unwrap();
    let envoy = fleet.envoy(no_canary()).start().await.unwrap();
    let client = http_client();

    let mut request = client
        .post(envoy.url("/v1/telemetry"))
        .header("x-region", "us-east")
        .header("x-device-id", "sensor-big")
        .header("x-large", "v".repeat(48 * 1024));
    for i in 0..44 {
        let spoofed = if i % 2 == 0 {
            "x-weir-cluster"
        } else {
            "X-Weir-Priority"
        };
        request = request
            .header(format!("{spoofed}-{i}"), "ingest-eu-canary")
            .header(format!("x-device-attr-{i}"), format!("value-{i}"));
    }
    request = request
        .header("x-weir-cluster", "ingest-eu-canary")
        .header("X-WEIR-PRIORITY", "alarm");
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let echo: Echo = response.json().await.unwrap();
    assert_eq!(
        echo.backend, "ingest-us",
        "steered by its region, not the spoofed cluster"
    );
    assert_eq!(echo.headers["x-large"].len(), 48 * 1024);
    assert_eq!(echo.headers["x-device-attr-43"], "value-43");
    let weirs: BTreeMap<&str, &str> = echo
        .headers
        .iter()
        .filter(|(name, _)| name.starts_with("x-weir-"))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        weirs.keys().copied().collect::<Vec<_>>(),
        ["x-weir-cluster", "x-weir-priority"],
        "only the filter's own: {weirs:?}"
    );
    assert_eq!(weirs["x-weir-cluster"], "ingest-us");
    assert_eq!(weirs["x-weir-priority"], "telemetry");

    // Beyond Envoy's limits (60 KiB, 100 headers): refused by Envoy itself.
    let too_large = client
        .post(envoy.url("/v1/telemetry"))
        .header("x-large", "v".repeat(64 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 431);
    let mut too_many = client.post(envoy.url("/v1/telemetry"));
    for i in 0..120 {
        too_many = too_many.header(format!("x-weir-h{i}"), "x");
    }
    assert_eq!(too_many.send().await.unwrap().status(), 431);

    // And the filter serves on.
    assert_eq!(
        backend_for(&envoy, "/v1/telemetry", &[("x-region", "eu-west")]).await,
        "ingest-eu"
    );
}
