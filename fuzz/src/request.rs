//! Target `request`: the filter's per-request path in the policy crate it
//! links: a header map as the host hands it over (proxy-wasm's serialized
//! form, built from structured headers or taken raw) → the pairs the filter
//! reads, Weir's own headers removed → classify, admit, route and split
//! with a live feed.
//!
//! Properties: nothing panics, whatever the bytes; a serialized map reads
//! back as exactly its pairs; no `x-weir-*` header reaches the engine; the
//! filter's allocation-free `steer` picks the cluster `route` explains;
//! a request goes only to a cluster of the policy, in a class it has.

use arbitrary::{Arbitrary, Unstructured};
use weir_policy::engine::Request;
use weir_policy::{Engine, Feed, header_map, headers};

use crate::example_policies;

/// Header names the example policies read, Envoy's pseudo-headers, and a
/// few of Weir's own (which a client must never get through).
const NAMES: [&str; 12] = [
    ":method",
    ":path",
    ":authority",
    "x-region",
    "x-device-type",
    "x-device-id",
    "x-message-type",
    "x-firmware",
    "x-weir-cluster",
    "X-Weir-Priority",
    "x-weir-variant",
    "user-agent",
];

/// Values those headers take in a fleet's traffic.
const VALUES: [&str; 16] = [
    "POST",
    "GET",
    "PUT",
    "/v1/alarms",
    "/v1/commands/reboot",
    "/v1/heartbeat",
    "/v1/telemetry?batch=1",
    "devices.example.com:443",
    "eu-west",
    "us-east",
    "ap-south",
    "camera",
    "sensor",
    "vehicle",
    "alarm",
    "heartbeat",
];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    policy: u8,
    headers: Vec<(Text<'a>, Text<'a>)>,
    /// The header map exactly as these bytes, instead of `headers`.
    raw: Option<&'a [u8]>,
    in_flight: u16,
    fallback_key: u64,
    /// Canary weights (basis points) for the policy's canaries, in order.
    weights: Vec<u16>,
    /// SLA scores (in 255ths) for the policy's scored clusters, in order.
    scores: Vec<u8>,
    concurrency_limit: Option<u16>,
}

#[derive(Arbitrary, Debug)]
enum Text<'a> {
    Known(u8),
    Bytes(&'a [u8]),
}

impl Text<'_> {
    fn bytes<'t>(&'t self, known: &'static [&'static str]) -> &'t [u8] {
        match self {
            Self::Known(i) => known[*i as usize % known.len()].as_bytes(),
            Self::Bytes(bytes) => bytes,
        }
    }
}

pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let policies = example_policies();
    let policy = &policies[input.policy as usize % policies.len()];
    let Some(engine) = engine(policy, &input) else {
        return;
    };

    let pairs: Vec<(&[u8], &[u8])> = input
        .headers
        .iter()
        .map(|(name, value)| (name.bytes(&NAMES), value.bytes(&VALUES)))
        .collect();
    let serialized = header_map::serialize(&pairs);
    let map = match input.raw {
        Some(raw) => {
            assert!(header_map::pairs(raw).count() <= header_map::declared_len(raw));
            raw
        }
        None => {
            assert_eq!(header_map::declared_len(&serialized), pairs.len());
            assert!(
                header_map::pairs(&serialized).eq(pairs.iter().copied()),
                "a serialized map reads back as its pairs"
            );
            &serialized
        }
    };

    // As the filter reads them: in place when all are text, else lossy
    // copies of the values (names that are not UTF-8 left out).
    let lossy: Vec<(String, String)>;
    let kept: Vec<(&str, &str)> = match header_map::text_pairs(map) {
        Some(pairs) => pairs
            .filter(|(name, _)| !headers::is_internal(name))
            .collect(),
        None => {
            lossy = header_map::pairs(map)
                .filter_map(|(name, value)| {
                    let name = std::str::from_utf8(name).ok()?;
                    (!headers::is_internal(name))
                        .then(|| (name.to_owned(), String::from_utf8_lossy(value).into_owned()))
                })
                .collect();
            lossy
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect()
        }
    };
    assert!(kept.iter().all(|(name, _)| !headers::is_internal(name)));

    let pseudo = |name: &str| {
        kept.iter()
            .find(|(n, _)| *n == name)
            .map_or("", |&(_, v)| v)
    };
    let request = Request {
        method: pseudo(":method"),
        host: pseudo(":authority"),
        path: pseudo(":path"),
        headers: &kept,
    };

    let spread_key = engine.spread_key(&request, input.fallback_key);
    let mut scores = Vec::new();
    let steered = engine.steer(&request, spread_key, &mut scores);
    let routed = engine.route(&request, spread_key);
    assert_eq!(
        steered.map(|s| s.cluster),
        routed.as_ref().map(|r| r.cluster()),
        "steer and route agree"
    );

    let decision = engine.decide(&request, u64::from(input.in_flight), input.fallback_key);
    assert_eq!(decision.cluster.as_deref(), steered.map(|s| s.cluster));
    if let Some(cluster) = &decision.cluster {
        assert!(policy.clusters.iter().any(|c| &c.name == cluster));
    }
    assert!(engine.classes().contains(&decision.class.name));
    assert_eq!(engine.classes()[decision.class.rank], decision.class.name);
}

/// The engine for `policy` with the input's feed, if that feed is one `weir`
/// could serve.
fn engine(policy: &weir_policy::Policy, input: &Input<'_>) -> Option<Engine> {
    let mut feed = Feed::initial(policy);
    for (weight, value) in feed.canary_weights.values_mut().zip(&input.weights) {
        *weight = u32::from(*value);
    }
    for (score, value) in feed.sla_scores.values_mut().zip(&input.scores) {
        *score = f64::from(*value) / 255.0;
    }
    if input.concurrency_limit.is_some() {
        feed.concurrency_limit = input.concurrency_limit.map(u32::from);
    }
    feed.validate(policy)
        .is_empty()
        .then(|| Engine::new(policy, &feed))
}
