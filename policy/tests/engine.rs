//! The decision engine, stage by stage, on the example policy.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use weir_policy::admission::{Arrival, ShedReason};
use weir_policy::engine::Routed;
use weir_policy::model::Variant;
use weir_policy::{Engine, Feed, Policy, Request};

fn example() -> Policy {
    let text = include_str!("../../examples/policies/iot-fleet.yaml");
    weir_policy::source::load("iot-fleet.yaml", text).expect("the example is valid")
}

fn headers<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    pairs.to_vec()
}

fn request<'a>(method: &'a str, path: &'a str, headers: &'a [(&'a str, &'a str)]) -> Request<'a> {
    Request {
        method,
        host: "ingest.example.com",
        path,
        headers,
    }
}

fn route(engine: &Engine, path: &str, pairs: &[(&str, &str)]) -> Routed {
    let h = headers(pairs);
    let req = request("POST", path, &h);
    engine
        .route(&req, engine.spread_key(&req, 0))
        .expect("a service matches")
}

#[test]
fn classification_follows_the_first_matching_rule() {
    let policy = example();
    let engine = Engine::new(&policy, &Feed::initial(&policy));
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a str,
        Option<usize>,
    );
    let cases: &[Case<'_>] = &[
        ("POST", "/v1/alarms/fire", &[], "alarm", Some(0)),
        (
            "POST",
            "/v1/telemetry",
            &[("x-message-type", "alarm")],
            "alarm",
            Some(1),
        ),
        ("POST", "/v1/commands/reboot", &[], "command", Some(2)),
        ("GET", "/v1/heartbeat", &[], "heartbeat", Some(3)),
        (
            "PUT",
            "/v1/status",
            &[("x-message-type", "heartbeat")],
            "heartbeat",
            Some(4),
        ),
        // Method and header must both hold for rule 4.
        (
            "POST",
            "/v1/status",
            &[("x-message-type", "heartbeat")],
            "telemetry",
            None,
        ),
        ("POST", "/v1/telemetry", &[], "telemetry", None),
        // Header names are matched case-insensitively.
        (
            "POST",
            "/v1/x",
            &[("X-Message-Type", "alarm")],
            "alarm",
            Some(1),
        ),
    ];
    for (method, path, pairs, class, rule) in cases {
        let h = headers(pairs);
        let got = engine.classify(&request(method, path, &h));
        assert_eq!(
            (got.name.as_str(), got.rule),
            (*class, *rule),
            "{method} {path} {pairs:?}"
        );
        assert_eq!(engine.classes()[got.rank], *class);
        // The filter's allocation-free path agrees.
        assert_eq!(engine.class_rank(&request(method, path, &h)), got.rank);
    }
}

#[test]
fn header_conditions_prefix_and_presence() {
    let mut policy = example();
    policy.priority.rules.insert(
        0,
        serde_json::from_value(serde_json::json!({
            "class": "command",
            "match": {"headers": [
                {"name": "x-firmware", "prefix": "2."},
                {"name": "x-debug", "present": false}
            ]}
        }))
        .unwrap(),
    );
    assert!(weir_policy::validate(&policy).is_empty());
    let engine = Engine::new(&policy, &Feed::initial(&policy));
    let class = |pairs: &[(&str, &str)]| {
        let h = headers(pairs);
        engine.classify(&request("GET", "/v1/telemetry", &h)).name
    };
    assert_eq!(class(&[("x-firmware", "2.4.1")]), "command");
    assert_eq!(class(&[("x-firmware", "1.9")]), "telemetry");
    assert_eq!(
        class(&[("x-firmware", "2.4.1"), ("x-debug", "1")]),
        "telemetry"
    );
}

#[test]
fn every_class_is_admitted_up_to_the_whole_limit() {
    let policy = example();
    let engine = Engine::new(&policy, &Feed::initial(&policy));
    let admit = |path: &str, in_flight: u64| {
        let h = headers(&[]);
        let req = request("GET", path, &h);
        engine.admit(&engine.classify(&req), in_flight)
    };
    // Limit 200, for heartbeats as for alarms: a free slot is always used.
    for path in ["/v1/alarms", "/v1/heartbeat"] {
        assert_eq!(admit(path, 0).verdict, Arrival::Admit, "{path}");
        assert_eq!(admit(path, 199).verdict, Arrival::Admit, "{path}");
    }
    assert_eq!(
        admit("/v1/alarms", 200).verdict,
        Arrival::Queue { max_wait_ms: 2_000 }
    );
    let queued = admit("/v1/heartbeat", 200);
    assert_eq!(
        (queued.verdict, queued.limit),
        (Arrival::Queue { max_wait_ms: 100 }, 200)
    );

    // A class that may not wait is shed once no slot is free, with the
    // policy's retry-after — and not before.
    let mut policy = example();
    policy
        .admission
        .classes
        .get_mut("heartbeat")
        .unwrap()
        .max_wait = weir_policy::Duration::from_millis(0);
    let engine = Engine::new(&policy, &Feed::initial(&policy));
    let h = headers(&[]);
    let req = request("GET", "/v1/heartbeat", &h);
    assert_eq!(
        engine.admit(&engine.classify(&req), 199).verdict,
        Arrival::Admit
    );
    assert_eq!(
        engine.admit(&engine.classify(&req), 200).verdict,
        Arrival::Shed {
            retry_after_s: 2,
            reason: ShedReason::MayNotWait
        }
    );
}

#[test]
fn the_feed_limit_overrides_the_policy_limit() {
    let policy = example();
    let feed = Feed {
        canary_mirrors: Default::default(),
        rtt_ms: Default::default(),
        concurrency_limit: Some(20),
        ..Feed::initial(&policy)
    };
    let engine = Engine::new(&policy, &feed);
    let h = headers(&[]);
    let req = request("GET", "/v1/heartbeat", &h);
    assert_eq!(
        engine.admit(&engine.classify(&req), 19).verdict,
        Arrival::Admit
    );
    let admission = engine.admit(&engine.classify(&req), 20);
    assert_eq!(admission.limit, 20);
    assert_eq!(admission.verdict, Arrival::Queue { max_wait_ms: 100 });
}

#[test]
fn requests_go_to_their_regions_cluster() {
    let policy = example();
    let engine = Engine::new(&policy, &Feed::initial(&policy));
    for (region, cluster) in [
        ("eu-west", "ingest-eu"),
        ("us-east", "ingest-us"),
        ("ap-south", "ingest-ap"),
    ] {
        let routed = route(
            &engine,
            "/v1/telemetry",
            &[("x-region", region), ("x-device-type", "sensor")],
        );
        assert_eq!(routed.placement, cluster, "from {region}");
        assert_eq!(routed.near_best, vec![cluster.to_owned()]);
    }
    let commands = route(&engine, "/v1/commands/x", &[("x-region", "us-east")]);
    assert_eq!(
        (commands.service.as_str(), commands.placement.as_str()),
        ("commands", "commands-us")
    );
}

#[test]
fn a_device_type_the_local_cluster_does_not_serve_goes_to_the_best_that_does() {
    let policy = example();
    let engine = Engine::new(&policy, &Feed::initial(&policy));
    let routed = route(
        &engine,
        "/v1/telemetry",
        &[("x-region", "ap-south"), ("x-device-type", "vehicle")],
    );
    let local = routed
        .candidates
        .iter()
        .find(|c| c.cluster == "ingest-ap")
        .unwrap();
    assert_eq!(local.device, 0.3);
    assert_eq!(routed.placement, "ingest-eu", "{routed:#?}");
    // Whatever the device (and so the spread key), never the unserving cluster.
    for i in 0..200 {
        let id = format!("vehicle-{i}");
        let pairs = [
            ("x-region", "ap-south"),
            ("x-device-type", "vehicle"),
            ("x-device-id", id.as_str()),
        ];
        let routed = route(&engine, "/v1/telemetry", &pairs);
        assert_ne!(routed.placement, "ingest-ap", "{routed:#?}");
    }
}

#[test]
fn a_degraded_sla_score_moves_traffic_away() {
    let policy = example();
    let mut feed = Feed::initial(&policy);
    feed.sla_scores.insert("ingest-eu".into(), 0.2);
    let engine = Engine::new(&policy, &feed);
    let routed = route(&engine, "/v1/telemetry", &[("x-region", "eu-west")]);
    assert_eq!(routed.placement, "ingest-us", "{routed:#?}");
    let eu = routed
        .candidates
        .iter()
        .find(|c| c.cluster == "ingest-eu")
        .unwrap();
    assert!((eu.score - (0.4 * 0.975 + 0.3 + 0.3 * 0.2)).abs() < 1e-9);
}

#[test]
fn near_equal_candidates_share_traffic_by_device() {
    // Without ingest-ap, a client in ap-south is 100 ms from both eu-west and
    // us-east: the two tie, and devices spread over both instead of herding.
    let mut policy = example();
    policy.services[1]
        .placements
        .retain(|p| p.cluster != "ingest-ap");
    policy
        .regions
        .rtt_ms
        .get_mut("us-east")
        .unwrap()
        .insert("ap-south".into(), 100.0);
    let engine = Engine::new(&policy, &Feed::initial(&policy));
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..400 {
        let id = format!("dev-{i}");
        let pairs = [("x-region", "ap-south"), ("x-device-id", id.as_str())];
        let routed = route(&engine, "/v1/telemetry", &pairs);
        assert_eq!(routed.near_best.len(), 2, "eu and us tie: {routed:#?}");
        // The same device always gets the same cluster.
        assert_eq!(
            route(&engine, "/v1/telemetry", &pairs).placement,
            routed.placement
        );
        *counts.entry(routed.placement).or_default() += 1;
    }
    assert_eq!(
        counts.len(),
        2,
        "both near-equal clusters get traffic: {counts:?}"
    );
    // Binomial(400, 1/2): σ = 10, so ±80 is 8σ.
    for (cluster, n) in &counts {
        assert!((120..=280).contains(n), "{cluster} got {n} of 400");
    }
}

#[test]
fn split_uses_the_feed_weight_and_is_sticky() {
    let policy = example();
    let mut feed = Feed::initial(&policy);
    assert_eq!(
        feed.canary_weights["ingest-eu-canary"], 100,
        "starts at the first step, 1 %"
    );
    feed.canary_weights
        .insert("ingest-eu-canary".into(), 10_000);
    let engine = Engine::new(&policy, &feed);
    let routed = route(
        &engine,
        "/v1/telemetry",
        &[("x-region", "eu-west"), ("x-device-id", "d1")],
    );
    let split = routed.split.clone().unwrap();
    assert_eq!(
        (split.weight_bp, split.variant, split.sticky),
        (10_000, Variant::Canary, true)
    );
    assert_eq!(
        split.bucket,
        weir_policy::split::bucket("ingest-eu-canary", "d1")
    );
    assert_eq!(routed.cluster(), "ingest-eu-canary");

    feed.canary_weights.insert("ingest-eu-canary".into(), 0);
    let engine = Engine::new(&policy, &feed);
    let routed = route(
        &engine,
        "/v1/telemetry",
        &[("x-region", "eu-west"), ("x-device-id", "d1")],
    );
    assert_eq!(routed.cluster(), "ingest-eu");
    // Without a device id the split is not sticky.
    let routed = route(&engine, "/v1/telemetry", &[("x-region", "eu-west")]);
    assert!(!routed.split.unwrap().sticky);
}

#[test]
fn unmatched_requests_are_not_routed() {
    let policy = example();
    let engine = Engine::new(&policy, &Feed::initial(&policy));
    let h = headers(&[]);
    let decision = engine.decide(&request("GET", "/healthz", &h), 0, 0);
    assert!(decision.route.is_none());
    assert!(decision.cluster.is_none());
    assert_eq!(decision.class.name, "telemetry");
}

#[test]
fn service_hosts_match_exactly_or_by_wildcard() {
    let mut policy = example();
    policy.services[0].matches.hosts = vec!["cmd.example.com".into(), "*.fleet.example.com".into()];
    assert!(weir_policy::validate(&policy).is_empty());
    let engine = Engine::new(&policy, &Feed::initial(&policy));
    let service = |host: &str| {
        let h = headers(&[]);
        let req = Request {
            method: "POST",
            host,
            path: "/v1/commands/x",
            headers: &h,
        };
        engine.route(&req, 0).map(|r| r.service)
    };
    assert_eq!(service("cmd.example.com").as_deref(), Some("commands"));
    assert_eq!(service("CMD.example.com:8443").as_deref(), Some("commands"));
    assert_eq!(service("eu.fleet.example.com").as_deref(), Some("commands"));
    // Not a subdomain: falls through to the next service, ingest (/v1/).
    assert_eq!(service("fleet.example.com").as_deref(), Some("ingest"));
    assert_eq!(service("evilfleet.example.com").as_deref(), Some("ingest"));
}

/// The example with firmware `2.*` targeted at `ingest-us`, and testers
/// (`x-tester: 1`) always and critical devices never on the canary.
fn targeted_example() -> Policy {
    let text = include_str!("../../examples/policies/iot-fleet.yaml")
        .replace(
            "      - cluster: ingest-us\n",
            "      - cluster: ingest-us\n        match: { headers: [{ name: x-firmware, prefix: \"2.\" }] }\n",
        )
        .replace(
            "          hold: 30s\n",
            "          hold: 30s\n          never: { headers: [{ name: x-critical, present: true }] }\n",
        );
    weir_policy::source::load("targeted.yaml", &text).expect("valid")
}

#[test]
fn a_targeted_placement_takes_the_requests_it_matches_and_only_those() {
    let policy = targeted_example();
    let engine = Engine::new(&policy, &Feed::initial(&policy));
    // Firmware 2.x goes to the v2 placement even from eu-west, where
    // ingest-eu is nearer; it is the only candidate.
    let routed = route(
        &engine,
        "/v1/telemetry",
        &[("x-region", "eu-west"), ("x-firmware", "2.1.0")],
    );
    assert!(routed.targeted);
    assert_eq!(routed.cluster(), "ingest-us");
    let candidates: Vec<&str> = routed
        .candidates
        .iter()
        .map(|c| c.cluster.as_str())
        .collect();
    assert_eq!(candidates, ["ingest-us"]);
    // Other firmware, and none, never reaches it: from us-east, where it
    // would be nearest, the request goes elsewhere.
    for firmware in [Some("1.9.4"), None] {
        let mut pairs = vec![("x-region", "us-east")];
        pairs.extend(firmware.map(|f| ("x-firmware", f)));
        let routed = route(&engine, "/v1/telemetry", &pairs);
        assert!(!routed.targeted);
        assert!(
            routed.candidates.iter().all(|c| c.cluster != "ingest-us"),
            "{routed:?}"
        );
        assert_ne!(routed.cluster(), "ingest-us");
    }
}

#[test]
fn testers_are_always_on_the_canary_and_critical_devices_never() {
    let policy = targeted_example();
    let mut feed = Feed::initial(&policy);
    let eu = |extra: &'static [(&'static str, &'static str)]| {
        let mut pairs = vec![("x-region", "eu-west")];
        pairs.extend_from_slice(extra);
        pairs
    };
    // At 1 %, a tester of any id is on the canary; without the header the
    // weight decides, so about 1 % of 2,000 devices are.
    let engine = Engine::new(&policy, &feed);
    let mut on_canary = 0;
    for i in 0..2_000 {
        let id = format!("device-{i}");
        let mut pairs = eu(&[("x-tester", "1")]);
        pairs.push(("x-device-id", &id));
        let routed = route(&engine, "/v1/telemetry", &pairs);
        let split = routed.split.clone().unwrap();
        assert_eq!(split.targeted, Some(weir_policy::engine::Targeted::Always));
        assert_eq!(routed.cluster(), "ingest-eu-canary");
        let mut pairs = eu(&[]);
        pairs.push(("x-device-id", &id));
        let routed = route(&engine, "/v1/telemetry", &pairs);
        assert_eq!(routed.split.clone().unwrap().targeted, None);
        on_canary += usize::from(routed.cluster() == "ingest-eu-canary");
    }
    // Binomial(2000, 0.01): mean 20, σ ≈ 4.4; 0..=45 is over 5σ.
    assert!((1..=45).contains(&on_canary), "{on_canary} of 2000");
    // Another value of the header is not a tester.
    let routed = route(
        &engine,
        "/v1/telemetry",
        &eu(&[("x-tester", "0"), ("x-device-id", "d1")]),
    );
    assert_eq!(routed.split.unwrap().targeted, None);

    // At 100 %, a critical device stays on stable, tester or not.
    feed.canary_weights
        .insert("ingest-eu-canary".into(), 10_000);
    let engine = Engine::new(&policy, &feed);
    let routed = route(
        &engine,
        "/v1/telemetry",
        &eu(&[
            ("x-critical", "yes"),
            ("x-tester", "1"),
            ("x-device-id", "d1"),
        ]),
    );
    assert_eq!(
        routed.split.clone().unwrap().targeted,
        Some(weir_policy::engine::Targeted::Never)
    );
    assert_eq!(routed.cluster(), "ingest-eu");

    // Rolled back (weight 0), testers are back on stable.
    feed.canary_weights.insert("ingest-eu-canary".into(), 0);
    let engine = Engine::new(&policy, &feed);
    let routed = route(
        &engine,
        "/v1/telemetry",
        &eu(&[("x-tester", "1"), ("x-device-id", "d1")]),
    );
    assert_eq!(routed.split.clone().unwrap().targeted, None);
    assert_eq!(routed.cluster(), "ingest-eu");
}

#[test]
fn explain_says_why_a_request_was_targeted() {
    let policy = targeted_example();
    let engine = Engine::new(&policy, &Feed::initial(&policy));
    let pairs = headers(&[
        ("x-region", "eu-west"),
        ("x-tester", "1"),
        ("x-device-id", "d1"),
    ]);
    let req = request("POST", "/v1/telemetry", &pairs);
    let decision = engine.decide(&req, 0, 0);
    let text = weir_policy::explain::text(&weir_policy::explain::stages(&req, &engine, &decision));
    assert!(
        text.contains("target     the placements without a `match`"),
        "{text}"
    );
    assert!(
        text.contains("the canary's `always` conditions hold → canary"),
        "{text}"
    );
    let pairs = headers(&[("x-region", "eu-west"), ("x-firmware", "2.0")]);
    let req = request("POST", "/v1/telemetry", &pairs);
    let decision = engine.decide(&req, 0, 0);
    let text = weir_policy::explain::text(&weir_policy::explain::stages(&req, &engine, &decision));
    assert!(
        text.contains("target     the placements whose `match` the request satisfies"),
        "{text}"
    );
    assert_eq!(decision.cluster.as_deref(), Some("ingest-us"));
}

#[test]
fn a_mirror_phase_copies_the_lowest_buckets_stable_requests_to_the_canary() {
    let text = include_str!("../../examples/policies/iot-fleet.yaml").replace(
        "          hold: 30s\n",
        "          hold: 30s\n          mirror: { percent: 20 }\n          never: { headers: [{ name: x-critical, present: true }] }\n",
    );
    let policy = weir_policy::source::load("mirror.yaml", &text).expect("valid");
    let feed = Feed::initial(&policy);
    assert_eq!(feed.canary_weights["ingest-eu-canary"], 0, "no split yet");
    assert_eq!(feed.canary_mirrors["ingest-eu-canary"], 2_000);
    let engine = Engine::new(&policy, &feed);
    let mut scores = Vec::new();
    let mut mirrored = 0;
    for i in 0..1_000 {
        let id = format!("device-{i}");
        let pairs = [("x-region", "eu-west"), ("x-device-id", id.as_str())];
        let req = request("POST", "/v1/telemetry", &pairs);
        let steered = engine
            .steer(&req, engine.spread_key(&req, 0), &mut scores)
            .unwrap();
        assert_eq!(steered.cluster, "ingest-eu", "no device gets the canary");
        let bucket = weir_policy::split::bucket("ingest-eu-canary", &id);
        let expected = (bucket < 2_000).then_some("ingest-eu-canary");
        assert_eq!(steered.mirror, expected, "{id} in bucket {bucket}");
        mirrored += usize::from(steered.mirror.is_some());
        // A device kept off the canary is not copied to it either.
        let pairs = [
            ("x-region", "eu-west"),
            ("x-device-id", id.as_str()),
            ("x-critical", "1"),
        ];
        let req = request("POST", "/v1/telemetry", &pairs);
        let routed = engine.route(&req, 0).unwrap();
        assert!(!routed.split.unwrap().mirrored);
    }
    // Binomial(1000, 0.2): σ ≈ 12.6; ±65 is over 5σ.
    assert!((135..=265).contains(&mirrored), "{mirrored} of 1000");

    // Once the split starts, the mirror is gone from the feed and nothing is copied.
    let mut feed = feed;
    feed.canary_mirrors.clear();
    feed.canary_weights.insert("ingest-eu-canary".into(), 100);
    let engine = Engine::new(&policy, &feed);
    let pairs = [("x-region", "eu-west"), ("x-device-id", "device-1")];
    let req = request("POST", "/v1/telemetry", &pairs);
    let steered = engine.steer(&req, 0, &mut scores).unwrap();
    assert_eq!(steered.mirror, None);
}

#[test]
fn a_measured_rtt_replaces_the_tables_and_moves_traffic() {
    let policy = example();
    let mut feed = Feed::initial(&policy);
    let engine = Engine::new(&policy, &feed);
    let pairs = [("x-region", "eu-west"), ("x-device-type", "sensor")];
    assert_eq!(
        route(&engine, "/v1/telemetry", &pairs).placement,
        "ingest-eu"
    );

    // eu-west's devices now measure 180 ms to ingest-eu: ingest-us (the
    // table's 80 ms) wins, and the evidence says which RTT was measured.
    feed.rtt_ms
        .entry("eu-west".into())
        .or_default()
        .insert("ingest-eu".into(), 180.0);
    assert!(feed.validate(&policy).is_empty());
    let engine = Engine::new(&policy, &feed);
    let routed = route(&engine, "/v1/telemetry", &pairs);
    assert_eq!(routed.placement, "ingest-us");
    let eu = routed
        .candidates
        .iter()
        .find(|c| c.cluster == "ingest-eu")
        .unwrap();
    assert_eq!((eu.rtt_ms, eu.rtt_measured), (Some(180.0), true));
    let us = routed
        .candidates
        .iter()
        .find(|c| c.cluster == "ingest-us")
        .unwrap();
    assert_eq!((us.rtt_ms, us.rtt_measured), (Some(80.0), false));
    let h = headers(&pairs);
    let req = request("POST", "/v1/telemetry", &h);
    let decision = engine.decide(&req, 0, 0);
    let text = weir_policy::explain::text(&weir_policy::explain::stages(&req, &engine, &decision));
    let eu_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("ingest-eu "))
        .unwrap();
    assert!(eu_line.ends_with("(rtt measured)"), "{text}");
    // Other regions keep the table.
    let routed = route(&engine, "/v1/telemetry", &[("x-region", "us-east")]);
    assert_eq!(routed.placement, "ingest-us");
    assert!(routed.candidates.iter().all(|c| !c.rtt_measured));

    // A feed naming an unknown region or cluster, or an RTT out of range, is refused.
    feed.rtt_ms
        .entry("mars".into())
        .or_default()
        .insert("ingest-eu".into(), 1.0);
    feed.rtt_ms
        .entry("us-east".into())
        .or_default()
        .insert("nowhere".into(), 1.0);
    feed.rtt_ms
        .entry("ap-south".into())
        .or_default()
        .insert("ingest-ap".into(), -1.0);
    let problems: Vec<String> = feed
        .validate(&policy)
        .iter()
        .map(|i| i.path.clone())
        .collect();
    assert_eq!(
        problems,
        [
            "feed.rtt_ms.ap-south.ingest-ap",
            "feed.rtt_ms.mars",
            "feed.rtt_ms.us-east.nowhere"
        ]
    );
}
