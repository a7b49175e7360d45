//! The admin API's rollout answers as types, shared by the server that
//! writes them (`admin`) and the CLI that reads them (`cli`): a field renamed
//! on one side fails to compile on the other, instead of showing zeros.
//! `docs/api.md` documents them.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::controller::{Decision, Evidence, LimitStatus, RolloutState, Verdict};
use crate::replication::{ReplicaInfo, Role};
use crate::xds::{AckView, NackView};

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
    /// Set when the decision is served but not yet saved (the state store
    /// fails): why. It is saved once the store works again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsaved: Option<String>,
}

/// One cluster in `GET /v1/clusters`: the score served and, for a cluster
/// the controller scores, what it came from (absent for a score pinned on a
/// cluster it does not score).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    pub cluster: String,
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothed: Option<f64>,
    #[serde(default)]
    pub raw: Option<f64>,
    #[serde(default)]
    pub p99_ms: Option<f64>,
    #[serde(default)]
    pub target_p99_ms: Option<f64>,
    /// The RTT to the cluster from each client region that has one: the
    /// policy's table, the measured one, and the one routing uses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtt: Vec<RttView>,
}

/// The RTT from one client region to a cluster, in `GET /v1/clusters`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RttView {
    pub region: String,
    /// The policy's `regions` table (or its default).
    pub table_ms: Option<f64>,
    /// Measured by the region's Envoys, as served in the feed.
    pub measured_ms: Option<f64>,
    /// Connections in the last measuring window.
    #[serde(default)]
    pub connects: u64,
    /// What the geo score uses: the measured RTT, else the table's.
    pub used_ms: Option<f64>,
}

/// The concurrency limit in `GET /v1/clusters`: the controller's view, and
/// the limit in the feed served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimitView {
    #[serde(flatten)]
    pub status: LimitStatus,
    pub served: Option<u32>,
}

/// `GET /v1/clusters`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clusters {
    pub clusters: Vec<ClusterView>,
    pub limit: LimitView,
}

/// The versions served, in `GET /v1/nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Served {
    pub version: String,
    /// By short type name (`cds`…).
    pub types: BTreeMap<String, String>,
}

/// One type on one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeTypeView {
    pub type_url: String,
    pub acked: Option<AckView>,
    pub nack: Option<NackView>,
    /// It runs the version served now.
    pub in_sync: bool,
}

/// One Envoy in `GET /v1/nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSummary {
    pub id: String,
    pub connected: bool,
    pub streams: usize,
    pub last_request: String,
    pub in_sync: bool,
    /// By short type name, the types it asked for.
    pub types: BTreeMap<String, NodeTypeView>,
    pub last_nack: Option<NackView>,
}

/// `GET /v1/nodes`: a page of nodes by id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodesAnswer {
    pub snapshot: Served,
    pub nodes: Vec<NodeSummary>,
    /// When more follow: the `after` that asks for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `GET /readyz`: whether weir can serve and keep what it decides, and if
/// not, why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadinessView {
    pub ready: bool,
    #[serde(default)]
    pub problems: Vec<String>,
}

/// `replication` in `GET /v1/status`: this replica, the leader, the lease
/// and every replica (only `role` when `weir` runs alone).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicationView {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Whether this process decides now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deciding: Option<bool>,
    /// The digest of the policy text this replica serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseView>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl ReplicationView {
    /// One `weir` alone.
    pub fn single() -> Self {
        Self {
            role: Role::Single,
            replica: None,
            leader: None,
            deciding: None,
            policy: None,
            lease: None,
            replicas: Vec::new(),
            last_error: None,
        }
    }
}

/// This replica's lease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseView {
    /// etcd's lease id, in hex; `None` between leases.
    pub id: Option<String>,
    pub ttl_seconds: u64,
    /// Since when it leads (ms since the epoch), if it does.
    pub leading_since_ms: Option<u64>,
}

/// The part of `GET /v1/status` the CLI reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReplication {
    pub replication: ReplicationView,
    pub envoys: EnvoyCounts,
}

/// `envoys` in `GET /v1/status`: what `nodes` there lists, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvoyCounts {
    /// Nodes with a stream open.
    pub connected: u64,
    /// Nodes remembered without one.
    pub disconnected: u64,
    /// Streams open.
    pub streams: u64,
    /// Nodes `status` lists (the first by id, at most
    /// [`crate::xds::STATUS_NODES`]); `GET /v1/nodes` pages through all.
    pub listed: u64,
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
