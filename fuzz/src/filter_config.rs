//! Target `filter_config`: the JSON document the filter's `on_configure`
//! parses → its engine → a few requests decided with it.
//!
//! Properties: a document is accepted or refused, never a panic; an
//! accepted one (but the empty document, which stands for no configuration)
//! survives being written and read again unchanged (`weir` writes what the
//! filter reads); its engine decides any request, and sends it only to a
//! cluster the policy names.

use weir_policy::{FilterConfig, Request};

pub fn run(data: &[u8]) {
    let Ok(config) = FilterConfig::from_json(data) else {
        return;
    };
    if config == FilterConfig::default() {
        return;
    }
    let json = serde_json::to_vec(&config).expect("an accepted configuration serializes");
    let again = FilterConfig::from_json(&json).expect("a configuration written is read again");
    assert_eq!(again, config, "the configuration survives JSON");

    let (Some(policy), Some(engine)) = (&config.policy, config.engine()) else {
        return;
    };
    let headers = [
        ("x-region", "eu-west"),
        ("x-device-type", "camera"),
        ("x-device-id", "device-1"),
        ("x-message-type", "alarm"),
    ];
    for (method, path) in [
        ("POST", "/v1/alarms"),
        ("GET", "/"),
        ("PUT", "/v1/heartbeat"),
    ] {
        let request = Request {
            method,
            host: "devices.example.com",
            path,
            headers: &headers,
        };
        for in_flight in [0, u64::MAX] {
            let decision = engine.decide(&request, in_flight, 7);
            if let Some(cluster) = &decision.cluster {
                assert!(
                    policy.clusters.iter().any(|c| &c.name == cluster),
                    "routed to {cluster}, which the policy does not name"
                );
            }
        }
    }
}
