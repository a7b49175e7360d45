//! What each Envoy node has accepted and rejected, for the admin API, tests
//! and benchmarks. Streams report here; nothing here drives the streams.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::Node;
use serde_json::{Value, json};

/// The id given to a stream whose first request names no node.
pub(super) const UNKNOWN_NODE: &str = "unknown";

/// Nodes with no stream left are remembered, the most recently seen first, up
/// to this many: enough to explain a fleet's recent past, bounded all the same.
const MAX_DISCONNECTED: usize = 1024;

/// Node status registry, shared with the admin API.
#[derive(Clone, Debug, Default)]
pub struct Nodes {
    inner: Arc<Mutex<BTreeMap<String, NodeState>>>,
}

#[derive(Debug)]
struct NodeState {
    streams: usize,
    last_request: SystemTime,
    /// Per type URL: the last version and nonce the node ACKed.
    acked: BTreeMap<String, Acked>,
    last_nack: Option<Nack>,
}

#[derive(Debug)]
struct Acked {
    version: String,
    nonce: String,
    at: SystemTime,
}

#[derive(Debug)]
struct Nack {
    type_url: String,
    version: String,
    nonce: String,
    message: String,
    at: SystemTime,
}

impl Nodes {
    /// JSON view for the admin API: an object keyed by node id, each with its
    /// number of connected `streams`, the time of its `last_request`, per type
    /// URL the last ACKed `version` and `nonce` (`acked`), and its `last_nack`
    /// (type URL, rejected version, nonce, Envoy's message) or `null`. Times
    /// are RFC 3339, UTC, to the second.
    pub fn status(&self) -> Value {
        let nodes = self.lock();
        let view: serde_json::Map<String, Value> = nodes
            .iter()
            .map(|(id, node)| {
                let acked: serde_json::Map<String, Value> = node
                    .acked
                    .iter()
                    .map(|(type_url, acked)| {
                        let entry = json!({
                            "version": acked.version,
                            "nonce": acked.nonce,
                            "at": rfc3339(acked.at),
                        });
                        (type_url.clone(), entry)
                    })
                    .collect();
                let last_nack = node.last_nack.as_ref().map(|nack| {
                    json!({
                        "type_url": nack.type_url,
                        "version": nack.version,
                        "nonce": nack.nonce,
                        "message": nack.message,
                        "at": rfc3339(nack.at),
                    })
                });
                let entry = json!({
                    "streams": node.streams,
                    "last_request": rfc3339(node.last_request),
                    "acked": acked,
                    "last_nack": last_nack,
                });
                (id.clone(), entry)
            })
            .collect();
        Value::Object(view)
    }

    /// Whether the last version node `id` ACKed for `type_url` is `version`.
    pub fn acked(&self, id: &str, type_url: &str, version: &str) -> bool {
        self.lock()
            .get(id)
            .and_then(|node| node.acked.get(type_url))
            .is_some_and(|acked| acked.version == version)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, NodeState>> {
        // The map stays consistent whatever a panicking holder was doing:
        // every update is a single assignment.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn connect(&self, id: &str, now: SystemTime) {
        let mut nodes = self.lock();
        let node = nodes.entry(id.to_owned()).or_insert_with(|| NodeState {
            streams: 0,
            last_request: now,
            acked: BTreeMap::new(),
            last_nack: None,
        });
        node.streams += 1;
        node.last_request = now;
    }

    fn disconnect(&self, id: &str) {
        let mut nodes = self.lock();
        if let Some(node) = nodes.get_mut(id) {
            node.streams = node.streams.saturating_sub(1);
        }
        let disconnected = nodes.values().filter(|n| n.streams == 0).count();
        if disconnected > MAX_DISCONNECTED {
            let oldest = nodes
                .iter()
                .filter(|(_, n)| n.streams == 0)
                .min_by_key(|(_, n)| n.last_request)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                nodes.remove(&oldest);
            }
        }
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut NodeState)) {
        if let Some(node) = self.lock().get_mut(id) {
            change(node);
        }
    }
}

/// One stream's view of the registry: it learns the node's id from the first
/// request, counts the stream as connected until dropped, and records what
/// the node ACKs and NACKs.
#[derive(Debug)]
pub(super) struct Peer {
    nodes: Nodes,
    id: Option<String>,
}

impl Peer {
    pub(super) fn new(nodes: Nodes) -> Self {
        Self { nodes, id: None }
    }

    /// A request arrived, naming `node` or not (only the first must).
    pub(super) fn saw_request(&mut self, node: Option<&Node>) {
        let now = SystemTime::now();
        match &self.id {
            Some(id) => self.nodes.update(id, |n| n.last_request = now),
            None => {
                let id = node
                    .map(|n| n.id.as_str())
                    .filter(|id| !id.is_empty())
                    .unwrap_or(UNKNOWN_NODE)
                    .to_owned();
                tracing::info!(node = %id, "xDS stream opened");
                self.nodes.connect(&id, now);
                self.id = Some(id);
            }
        }
    }

    /// The node's id (`unknown` until its first request).
    pub(super) fn id(&self) -> &str {
        self.id.as_deref().unwrap_or(UNKNOWN_NODE)
    }

    pub(super) fn ack(&self, type_url: &str, version: &str, nonce: &str) {
        let acked = Acked {
            version: version.to_owned(),
            nonce: nonce.to_owned(),
            at: SystemTime::now(),
        };
        self.nodes.update(self.id(), |n| {
            n.acked.insert(type_url.to_owned(), acked);
        });
    }

    pub(super) fn nack(&self, type_url: &str, version: &str, nonce: &str, message: &str) {
        tracing::warn!(
            node = %self.id(), type_url, version, nonce, message,
            "Envoy rejected the configuration; it keeps its last accepted version"
        );
        let nack = Nack {
            type_url: type_url.to_owned(),
            version: version.to_owned(),
            nonce: nonce.to_owned(),
            message: message.to_owned(),
            at: SystemTime::now(),
        };
        self.nodes.update(self.id(), |n| n.last_nack = Some(nack));
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(id) = &self.id {
            tracing::info!(node = %id, "xDS stream closed");
            self.nodes.disconnect(id);
        }
    }
}

/// `t` as RFC 3339 in UTC, to the second (times before 1970 read as 1970).
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_700_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(at(4_107_542_399)), "2100-02-28T23:59:59Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn counts_streams_and_records_acks_and_nacks() {
        let nodes = Nodes::default();
        let mut first = Peer::new(nodes.clone());
        first.saw_request(Some(&node("envoy-1")));
        let mut second = Peer::new(nodes.clone());
        second.saw_request(Some(&node("envoy-1")));
        // Later requests may omit the node: the stream keeps its id.
        second.saw_request(None);
        assert_eq!(nodes.status()["envoy-1"]["streams"], 2);

        first.ack("t", "v1", "1");
        assert!(nodes.acked("envoy-1", "t", "v1"));
        assert!(!nodes.acked("envoy-1", "t", "v2"));
        assert!(!nodes.acked("envoy-1", "other", "v1"));
        assert!(!nodes.acked("envoy-2", "t", "v1"));

        first.nack("t", "v2", "2", "bad cluster");
        let status = nodes.status();
        assert_eq!(status["envoy-1"]["acked"]["t"]["version"], "v1");
        assert_eq!(status["envoy-1"]["acked"]["t"]["nonce"], "1");
        assert_eq!(status["envoy-1"]["last_nack"]["version"], "v2");
        assert_eq!(status["envoy-1"]["last_nack"]["message"], "bad cluster");
        assert!(
            nodes.acked("envoy-1", "t", "v1"),
            "a NACK keeps the last ACKed version"
        );

        drop(first);
        assert_eq!(nodes.status()["envoy-1"]["streams"], 1);
        drop(second);
        assert_eq!(nodes.status()["envoy-1"]["streams"], 0);
    }

    #[test]
    fn a_stream_without_node_is_unknown() {
        let nodes = Nodes::default();
        let mut peer = Peer::new(nodes.clone());
        peer.saw_request(Some(&node("")));
        assert_eq!(peer.id(), UNKNOWN_NODE);
        assert_eq!(nodes.status()[UNKNOWN_NODE]["streams"], 1);
        // A stream that never sent a request was never counted.
        drop(Peer::new(nodes.clone()));
        assert_eq!(nodes.status()[UNKNOWN_NODE]["streams"], 1);
    }

    #[test]
    fn forgets_the_oldest_disconnected_nodes() {
        let nodes = Nodes::default();
        for i in 0..=MAX_DISCONNECTED {
            let id = format!("n{i}");
            nodes.connect(&id, at(i as u64));
            nodes.disconnect(&id);
        }
        let status = nodes.status();
        let view = status.as_object().map_or(0, |m| m.len());
        assert_eq!(view, MAX_DISCONNECTED);
        assert!(status.get("n0").is_none());
        assert!(status.get(format!("n{MAX_DISCONNECTED}")).is_some());
    }
}
