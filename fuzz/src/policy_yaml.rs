//! Target `policy_yaml`: a policy file's text → load (YAML, then every
//! validation) → the Envoy resources `weir` would serve.
//!
//! Properties: a policy that loads is compiled into resources or refused
//! with reasons, never a panic; when it compiles, the filter accepts the
//! configuration `weir compile` makes of it (nothing that `weir` validates
//! reaches a filter that would refuse it).

use std::path::Path;

use weir::resources::{self, Options, WasmSource};
use weir_policy::{Engine, Feed, FilterConfig};

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = weir::policy_source::parse(Path::new("fuzz.yaml"), text) else {
        return;
    };
    let feed = Feed::initial(&policy);
    assert!(
        feed.validate(&policy).is_empty(),
        "the initial feed of a valid policy is valid"
    );
    let options = Options::new(WasmSource::Local("/etc/envoy/weir_filter.wasm".into()));
    if resources::build(&policy, &feed, &options).is_err() {
        return;
    }
    let config = FilterConfig {
        version: "fuzz".into(),
        policy: Some(policy.clone()),
        feed: Some(feed.clone()),
        version_header: false,
    };
    let json = serde_json::to_vec(&config).expect("a configuration serializes");
    match FilterConfig::from_json(&json) {
        Ok(parsed) => assert_eq!(parsed, config, "the configuration survives JSON"),
        Err(refused) => panic!("the filter refuses what weir compiled: {refused}"),
    }
    let _ = Engine::new(&policy, &feed);
}
