//! The admin API's rollout answers as types, shared by the server that
//! writes them (`admin`) and the CLI that reads them (`cli`): a field renamed
//! on one side fails to compile on the other, instead of showing zeros.
//! `docs/api.md` documents them.

use serde::{Deserialize, Serialize};

use crate::controller::{Decision, Evidence, RolloutState, Verdict};

/// A decision as the API shows it: its fields, its `kind` (see
/// [`crate::telemetry::decision_kind`]) and its time in RFC 3339.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionView {
    #[serde(flatten)]
    pub decision: Decision,
    pub kind: String,
    pub at: String,
}

/// One rollout in `GET /v1/rollouts`: its state, its latest verdict and
/// findings, and its last decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutSummary {
    #[serde(flatten)]
    pub state: RolloutState,
    pub verdict: Option<Verdict>,
    pub findings: Option<Vec<String>>,
    pub last_decision: Option<DecisionView>,
}

/// `GET /v1/rollouts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollouts {
    pub rollouts: Vec<RolloutSummary>,
    /// The recent decisions of every rollout, oldest first.
    pub decisions: Vec<DecisionView>,
}

/// `GET /v1/rollouts/{canary}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutDetail {
    pub rollout: RolloutState,
    pub evidence: Option<Evidence>,
    pub last_decision: Option<DecisionView>,
}

/// `GET /v1/rollouts/{canary}/history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub canary: String,
    /// `None` for a canary the policy no longer has (its decisions remain).
    pub rollout: Option<RolloutState>,
    /// Decisions of the canary in memory; `decisions` may hold fewer (`?limit=N`).
    pub total: usize,
    pub decisions: Vec<DecisionView>,
}

/// `POST /v1/rollouts/{canary}/{command}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandAnswer {
    pub decision: DecisionView,
}

/// `name` as one path segment: everything but unreserved characters
/// percent-encoded (canary names are DNS-like, but a typo should reach the
/// server as the typo, not as another path).
pub fn path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("app-canary"), "app-canary");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
