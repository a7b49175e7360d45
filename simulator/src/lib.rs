//! Weir's policy simulator: what the filter would decide for a request,
//! stage by stage, computed by the same `weir-policy` code the filter runs.
//!
//! The dashboard loads this crate compiled to WebAssembly (through
//! `wasm-bindgen`, see [`bindings`]) and calls [`simulate_json`] as the
//! operator edits a policy or a request; nothing leaves the browser. The
//! stages are those `weir explain` prints, line for line: [`Simulation::explain`]
//! is that command's output for the same policy and request.
//!
//! Build the module with `scripts/build-simulator.sh` (it lands in
//! `dist/simulator/`, where `weir serve` finds it); the logic here is tested
//! natively with `cargo test -p weir-simulator`.

pub mod bindings;
mod stages;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_policy::source::{self, Diagnostic};
use weir_policy::{Decision, Engine, Feed, Policy, Request};

pub use weir_policy::explain::Stage;

/// The file name policy diagnostics carry.
pub const POLICY_FILE: &str = "policy.yaml";

/// A request to simulate, as the dashboard sends it (JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimRequest {
    /// The method (`GET` when missing).
    #[serde(default = "default_method")]
    pub method: String,
    /// The host (`:authority`), possibly with a port; any when empty.
    #[serde(default)]
    pub host: String,
    /// The path, possibly with a query (`/` when missing).
    #[serde(default = "default_path")]
    pub path: String,
    /// The request headers: an object of names to values, or a list of
    /// `[name, value]` pairs (which may repeat a name).
    #[serde(default)]
    pub headers: Headers,
    /// Requests already in flight, for the admission stage.
    #[serde(default)]
    pub in_flight: u64,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_path() -> String {
    "/".to_owned()
}

/// Request headers, in either JSON form.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Headers {
    /// `[["x-device-id", "d-1"], …]`, in order.
    Pairs(Vec<(String, String)>),
    /// `{"x-device-id": "d-1", …}`.
    Map(BTreeMap<String, String>),
}

impl Default for Headers {
    fn default() -> Self {
        Headers::Pairs(Vec::new())
    }
}

impl Headers {
    /// The headers as `weir explain --header` takes them: names trimmed and
    /// lower-cased; an empty name is an error.
    fn normalised(&self) -> Result<Vec<(String, String)>, String> {
        let pairs: Vec<(&String, &String)> = match self {
            Headers::Pairs(pairs) => pairs.iter().map(|(n, v)| (n, v)).collect(),
            Headers::Map(map) => map.iter().collect(),
        };
        pairs
            .into_iter()
            .map(|(name, value)| {
                let name = name.trim();
                if name.is_empty() {
                    Err(format!("a header has an empty name (value `{value}`)"))
                } else {
                    Ok((name.to_ascii_lowercase(), value.clone()))
                }
            })
            .collect()
    }
}

/// Why a simulation could not run, where it is known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What is at fault: `parse` or `validation` (the policy), `request`, or `feed`.
    pub kind: &'static str,
    /// 1-based line in the policy text (0 when unknown or not about the policy).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// The path of the field at fault, e.g. `services[0].placements[1]`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// The whole diagnostic, as `weir validate` prints it.
    pub text: String,
}

impl Problem {
    fn of_policy(kind: &'static str, diagnostic: &Diagnostic) -> Self {
        Self {
            kind,
            line: diagnostic.line,
            column: diagnostic.column,
            path: diagnostic.path.clone(),
            message: diagnostic.message.clone(),
            text: diagnostic.to_string(),
        }
    }

    fn other(kind: &'static str, path: &str, message: String) -> Self {
        let text = if path.is_empty() {
            format!("{kind}: error: {message}")
        } else {
            format!("{kind}: error: {path}: {message}")
        };
        Self {
            kind,
            line: 0,
            column: 0,
            path: path.to_owned(),
            message,
            text,
        }
    }
}

/// A simulation's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Simulation {
    /// Whether every stage ran (no problems).
    pub ok: bool,
    /// What stopped it: policy diagnostics with line and column, or a bad
    /// request or feed.
    pub problems: Vec<Problem>,
    /// The stages in order: `policy`, then (when it is valid) `request`,
    /// `classify`, `admit`, `route`, `split` (placements with a canary) and
    /// `cluster`.
    pub stages: Vec<Stage>,
    /// What `weir explain` prints for the same policy and request.
    pub explain: String,
    /// The engine's decision, as `weir explain --json` prints it.
    pub decision: Option<Decision>,
}

impl Simulation {
    fn failed(problems: Vec<Problem>, stages: Vec<Stage>) -> Self {
        Self {
            ok: false,
            problems,
            stages,
            explain: String::new(),
            decision: None,
        }
    }
}

/// Reads a policy as `weir validate` does; a problem the YAML reader stops at
/// is a `parse` problem, the rest `validation` ones.
pub fn load_policy(text: &str) -> Result<Policy, Vec<Problem>> {
    source::load(POLICY_FILE, text).map_err(|diagnostics| {
        // The shape is right when the document reads as a policy at all;
        // then every diagnostic is validation's.
        let kind = if serde_saphyr::from_str::<Policy>(text).is_ok() {
            "validation"
        } else {
            "parse"
        };
        diagnostics
            .iter()
            .map(|d| Problem::of_policy(kind, d))
            .collect()
    })
}

/// Simulates `request` under `policy_text` with `feed` (the policy's initial
/// feed, as `weir explain` uses, when `None`).
pub fn simulate(policy_text: &str, request: &SimRequest, feed: Option<&Feed>) -> Simulation {
    let policy = match load_policy(policy_text) {
        Ok(policy) => policy,
        Err(problems) => {
            let stage = stages::policy_invalid(&problems);
            return Simulation::failed(problems, vec![stage]);
        }
    };
    let feed = match feed {
        Some(feed) => {
            let invalid = feed.validate(&policy);
            if !invalid.is_empty() {
                let problems: Vec<Problem> = invalid
                    .iter()
                    .map(|i| Problem::other("feed", &i.path, i.message.clone()))
                    .collect();
                let stage = stages::policy_valid(&policy, false);
                return Simulation::failed(problems, vec![stage]);
            }
            feed.clone()
        }
        None => Feed::initial(&policy),
    };
    let policy_stage = stages::policy_valid(&policy, true);
    let headers = match request.headers.normalised() {
        Ok(headers) => headers,
        Err(message) => {
            let problems = vec![Problem::other("request", "headers", message)];
            return Simulation::failed(problems, vec![policy_stage]);
        }
    };
    let engine = Engine::new(&policy, &feed);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let steered = Request {
        method: &request.method,
        host: &request.host,
        path: &request.path,
        headers: &headers,
    };
    let decision = engine.decide(
        &steered,
        request.in_flight,
        // Requests without a device id are spread by a counter in the
        // filter; 0 here, as in `weir explain`.
        0,
    );
    let explained = weir_policy::explain::stages(&steered, &engine, &decision);
    let explain = weir_policy::explain::text(&explained);
    let mut all = vec![policy_stage];
    all.extend(explained);
    Simulation {
        ok: true,
        problems: Vec::new(),
        stages: all,
        explain,
        decision: Some(decision),
    }
}

/// [`simulate`] from JSON texts, answering JSON: what the browser calls.
/// `request_json` is a [`SimRequest`]; `feed_json` a [`Feed`], or empty for
/// the policy's initial feed. Never fails: a bad input is a problem in the
/// answer.
pub fn simulate_json(policy_text: &str, request_json: &str, feed_json: &str) -> String {
    let simulation = match read_inputs(request_json, feed_json) {
        Ok((request, feed)) => simulate(policy_text, &request, feed.as_ref()),
        Err(problem) => Simulation::failed(vec![problem], Vec::new()),
    };
    serde_json::to_string(&simulation).unwrap_or_else(|err| {
        // Plain data always serialises; this only keeps the contract (JSON out).
        serde_json::json!({"ok": false, "problems": [{"kind": "internal", "line": 0,
            "column": 0, "path": "", "message": err.to_string(), "text": err.to_string()}],
            "stages": [], "explain": "", "decision": null})
        .to_string()
    })
}

fn read_inputs(request_json: &str, feed_json: &str) -> Result<(SimRequest, Option<Feed>), Problem> {
    let request: SimRequest = serde_json::from_str(request_json)
        .map_err(|err| Problem::other("request", "", err.to_string()))?;
    let feed = if feed_json.trim().is_empty() {
        None
    } else {
        Some(
            serde_json::from_str::<Feed>(feed_json)
                .map_err(|err| Problem::other("feed", "", err.to_string()))?,
        )
    };
    Ok((request, feed))
}

#[cfg(test)]
mod tests;
