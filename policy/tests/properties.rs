//! Properties of the decisions that must hold for every input.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use weir_policy::split::{BUCKETS, bucket, in_canary};
use weir_policy::{Engine, Feed, Policy, Request, engine::geo_score};

fn example() -> Policy {
    let text = include_str!("../../examples/policies/iot-fleet.yaml");
    weir_policy::source::load("iot-fleet.yaml", text).expect("the example is valid")
}

/// A header map serialized as proxy-wasm hosts do.
fn serialize_map(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (name, value) in pairs {
        out.extend((name.len() as u32).to_le_bytes());
        out.extend((value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend(name);
        out.push(0);
        out.extend(value);
        out.push(0);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Raising the weight only moves devices from stable to canary, never back.
    #[test]
    fn split_is_monotonic_in_the_weight(salt in "[a-z-]{1,20}", id in ".{0,40}", w1 in 0u32..=BUCKETS, w2 in 0u32..=BUCKETS) {
        let (low, high) = (w1.min(w2), w1.max(w2));
        let b = bucket(&salt, &id);
        prop_assert!(b < BUCKETS);
        if in_canary(b, low) {
            prop_assert!(in_canary(b, high));
        }
    }

    /// A device's bucket depends only on (salt, id): the same on every call,
    /// hence on every Envoy replica.
    #[test]
    fn split_is_sticky(salt in "[a-z-]{1,20}", id in ".{0,40}") {
        prop_assert_eq!(bucket(&salt, &id), bucket(&salt.clone(), &id.clone()));
    }

    /// A closer cluster never scores lower on geography.
    #[test]
    fn lower_rtt_never_lowers_the_geo_score(a in 0.0f64..1_000.0, b in 0.0f64..1_000.0) {
        let (near, far) = (a.min(b), a.max(b));
        prop_assert!(geo_score(near) >= geo_score(far));
        prop_assert!((0.0..=1.0).contains(&geo_score(near)));
    }

    /// Through the whole engine: with any RTT table, a candidate with lower
    /// RTT from the client has a geo part at least as high.
    #[test]
    fn engine_geo_parts_follow_rtt(eu in 0.0f64..400.0, us in 0.0f64..400.0, ap in 0.0f64..400.0) {
        let mut policy = example();
        policy.regions.rtt_ms.clear();
        policy.regions.default_rtt_ms = None;
        let row = [("eu-west", eu), ("us-east", us), ("ap-south", ap)];
        policy.regions.rtt_ms.insert("client".into(), row.iter().map(|(r, ms)| (r.to_string(), *ms)).collect());
        policy.regions.rtt_ms.insert("eu-west".into(), [("us-east".to_string(), 80.0), ("ap-south".to_string(), 100.0)].into());
        policy.regions.rtt_ms.insert("us-east".into(), [("ap-south".to_string(), 210.0)].into());
        prop_assert!(weir_policy::validate(&policy).is_empty(), "{:?}", weir_policy::validate(&policy));
        let engine = Engine::new(&policy, &Feed::initial(&policy));
        let headers = vec![("x-region", "client")];
        let request = Request { method: "POST", host: "", path: "/v1/telemetry", headers: &headers };
        let routed = engine.route(&request, 0).unwrap();
        for x in &routed.candidates {
            for y in &routed.candidates {
                if x.rtt_ms.unwrap() <= y.rtt_ms.unwrap() {
                    prop_assert!(x.geo >= y.geo, "{x:?} vs {y:?}");
                }
            }
        }
    }

    /// The same request, policy and feed always give the same decision.
    #[test]
    fn decisions_are_deterministic(
        path in "/v1/(alarms|commands|telemetry|heartbeat|other)[a-z/]{0,10}",
        method in "(GET|POST|PUT)",
        region in "(eu-west|us-east|ap-south|mars)",
        device_type in "(sensor|gateway|vehicle|toaster)",
        id in "[a-z0-9]{0,12}",
        in_flight in 0u64..400,
        key in any::<u64>(),
    ) {
        let policy = example();
        let headers = vec![
            ("x-region", region.as_str()),
            ("x-device-type", device_type.as_str()),
            ("x-device-id", id.as_str()),
        ];
        let request = Request { method: &method, host: "", path: &path, headers: &headers };
        let first = Engine::new(&policy, &Feed::initial(&policy)).decide(&request, in_flight, key);
        let second = Engine::new(&policy.clone(), &Feed::initial(&policy)).decide(&request, in_flight, key);
        prop_assert_eq!(first, second);
    }

    /// The filter's allocation-free `steer` chooses exactly what `route`
    /// (with its evidence) chooses, whatever the request, the weights, the
    /// SLA scores and the scratch space left by the request before.
    #[test]
    fn steer_chooses_what_route_chooses(
        path in "/v1/(alarms|commands|telemetry|heartbeat|other)[a-z/]{0,10}",
        region in "(eu-west|us-east|ap-south|mars|)",
        device_type in "(sensor|gateway|vehicle|toaster|)",
        id in "[a-z0-9]{0,12}",
        key in any::<u64>(),
        weight in 0u32..=BUCKETS,
        sla in proptest::collection::vec(0.0f64..=1.0, 8),
        leftover in 0usize..6,
    ) {
        let policy = example();
        let mut feed = Feed::initial(&policy);
        for weight_bp in feed.canary_weights.values_mut() {
            *weight_bp = weight;
        }
        for (score, new) in feed.sla_scores.values_mut().zip(&sla) {
            *score = *new;
        }
        let engine = Engine::new(&policy, &feed);
        let headers = vec![
            ("x-region", region.as_str()),
            ("x-device-type", device_type.as_str()),
            ("x-device-id", id.as_str()),
        ];
        let request = Request { method: "POST", host: "", path: &path, headers: &headers };
        let mut scores = vec![Default::default(); leftover];
        let steered = engine.steer(&request, key, &mut scores);
        let routed = engine.route(&request, key);
        prop_assert_eq!(steered.map(|s| s.cluster), routed.as_ref().map(|r| r.cluster()));
        prop_assert_eq!(
            steered.and_then(|s| s.split),
            routed.as_ref().and_then(|r| r.split.as_ref().map(|s| (s.canary_cluster.as_str(), s.variant)))
        );
    }
}

/// Over 100,000 random device ids the canary share is the weight, within a
/// tolerance of five standard deviations of the binomial proportion
/// (σ = √(p(1−p)/n)): a correct split fails this about once in 1.7 million runs.
#[test]
fn canary_share_matches_the_weight_over_many_devices() {
    const DEVICES: u32 = 100_000;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let ids = proptest::collection::vec("[a-zA-Z0-9:-]{4,24}", DEVICES as usize);
    let ids = ids.new_tree(&mut runner).unwrap().current();
    for weight in [100u32, 500, 1_000, 2_500, 5_000, 9_000] {
        for salt in ["ingest-eu-canary", "another-rollout"] {
            let in_canary_count = ids
                .iter()
                .filter(|id| in_canary(bucket(salt, id), weight))
                .count();
            let p = f64::from(weight) / f64::from(BUCKETS);
            let n = f64::from(DEVICES);
            let share = in_canary_count as f64 / n;
            let sigma = (p * (1.0 - p) / n).sqrt();
            assert!(
                (share - p).abs() <= 5.0 * sigma,
                "weight {weight} bp, salt {salt}: share {share:.5}, expected {p} ± {:.5}",
                5.0 * sigma
            );
        }
    }
}

proptest! {
    /// The filter reads the host's header map in place: every pair comes
    /// back as it was, whatever bytes it holds.
    #[test]
    fn a_serialized_header_map_reads_back_as_written(
        map in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..40), proptest::collection::vec(any::<u8>(), 0..200)),
            0..30,
        )
    ) {
        let bytes = serialize_map(&map);
        let read: Vec<(Vec<u8>, Vec<u8>)> = weir_policy::header_map::pairs(&bytes)
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        prop_assert_eq!(read, map);
    }

    /// Any bytes at all read as at most as many pairs as they could hold, without a panic.
    #[test]
    fn any_bytes_read_as_a_header_map_without_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let count = weir_policy::header_map::pairs(&bytes).count();
        prop_assert!(count * 10 <= bytes.len());
    }
}
