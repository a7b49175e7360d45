//! The JavaScript face of the simulator: one function, JSON in and out, so
//! that this layer stays a pass-through and the logic is tested natively.
//!
//! ```js
//! import init, { simulate, version } from "/simulator/weir_simulator.js";
//! await init();
//! const answer = JSON.parse(simulate(policyYaml, JSON.stringify(request), ""));
//! ```

use wasm_bindgen::prelude::wasm_bindgen;

/// Simulates a request (JSON, see [`crate::SimRequest`]) under a policy
/// (YAML) and a feed (JSON, or empty for the policy's initial feed); answers
/// a [`crate::Simulation`] as JSON.
#[wasm_bindgen]
pub fn simulate(policy_yaml: &str, request_json: &str, feed_json: &str) -> String {
    crate::simulate_json(policy_yaml, request_json, feed_json)
}

/// The simulator's version (the workspace's).
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
