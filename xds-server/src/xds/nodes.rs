//! What each Envoy node has accepted and rejected, and how many responses,
//! ACKs and NACKs of each type went by, for the admin API, weir's own
//! metrics, tests and benchmarks. Streams report here; nothing here drives
//! the streams.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::Node;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::snapshot::type_url;

/// The id given to a stream whose first request names no node.
pub(super) const UNKNOWN_NODE: &str = "unknown";

/// Nodes with no stream left are remembered, the most recently seen first, up
/// to this many: enough to explain a fleet's recent past, bounded all the same.
const MAX_DISCONNECTED: usize = 1024;

/// Node status registry, shared with the admin API.
#[derive(Clone, Debug, Default)]
pub struct Nodes {
    inner: Arc<Mutex<BTreeMap<String, NodeState>>>,
    counters: Arc<Counters>,
}

#[derive(Debug)]
struct NodeState {
    streams: usize,
    last_request: SystemTime,
    /// Per type URL: the last version and nonce the node ACKed.
    acked: BTreeMap<String, Acked>,
    /// Per type URL: the node's NACK of the latest version it was sent, until
    /// it ACKs a later one.
    nacked: BTreeMap<String, Nack>,
    last_nack: Option<Nack>,
}

/// Counts since the process started, per type in [`type_url::ALL`] order.
#[derive(Debug, Default)]
struct Counters {
    pushes: [AtomicU64; type_url::ALL.len()],
    acks: [AtomicU64; type_url::ALL.len()],
    nacks: [AtomicU64; type_url::ALL.len()],
    streams_opened: AtomicU64,
}

impl Counters {
    fn add(counters: &[AtomicU64; type_url::ALL.len()], type_url: &str) {
        if let Some(i) = type_url::ALL.iter().position(|t| *t == type_url) {
            counters[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How many responses, ACKs and NACKs of one type went by since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TypeCounts {
    /// Responses sent (state-of-the-world or delta).
    pub pushes: u64,
    /// Responses Envoys accepted.
    pub acks: u64,
    /// Responses Envoys rejected.
    pub nacks: u64,
}

/// The registry's counters and gauges, for weir's own metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct XdsCounts {
    /// Per type URL, in [`type_url::ALL`] order.
    pub types: Vec<(&'static str, TypeCounts)>,
    /// Streams opened since the process started.
    pub streams_opened: u64,
    /// Streams open now.
    pub streams: u64,
    /// Nodes with at least one stream open now.
    pub nodes_connected: u64,
    /// Nodes remembered with no stream open.
    pub nodes_disconnected: u64,
}

/// One node as the admin API's `/v1/nodes` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeView {
    /// The node id Envoy sent.
    pub id: String,
    /// Open streams (0: disconnected, remembered).
    pub streams: usize,
    /// When it last sent a request (RFC 3339, UTC).
    pub last_request: String,
    /// Per type URL, what it accepted and rejected.
    pub types: BTreeMap<String, TypeView>,
    /// Its latest NACK of any type, even one a later ACK made good.
    pub last_nack: Option<NackView>,
}

/// One node's state for one type.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TypeView {
    /// The last version it ACKed.
    pub acked: Option<AckView>,
    /// Its NACK of the latest version it was sent, if it has not ACKed a
    /// later one since: the type is then stuck at `acked`.
    pub nack: Option<NackView>,
}

/// An ACK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckView {
    /// The version accepted.
    pub version: String,
    /// The nonce of the response accepted.
    pub nonce: String,
    /// When (RFC 3339, UTC).
    pub at: String,
}

/// A NACK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NackView {
    /// The type URL rejected.
    pub type_url: String,
    /// The version rejected.
    pub version: String,
    /// The nonce of the response rejected.
    pub nonce: String,
    /// Envoy's message.
    pub message: String,
    /// When (RFC 3339, UTC).
    pub at: String,
}

#[derive(Debug)]
struct Acked {
    version: String,
    nonce: String,
    at: SystemTime,
}

#[derive(Clone, Debug)]
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

    /// Every node, by id: what it accepted and rejected per type.
    pub fn list(&self) -> Vec<NodeView> {
        let nodes = self.lock();
        nodes
            .iter()
            .map(|(id, node)| {
                let mut types: BTreeMap<String, TypeView> = BTreeMap::new();
                for (type_url, acked) in &node.acked {
                    types.entry(type_url.clone()).or_default().acked = Some(AckView {
                        version: acked.version.clone(),
                        nonce: acked.nonce.clone(),
                        at: rfc3339(acked.at),
                    });
                }
                for (type_url, nack) in &node.nacked {
                    types.entry(type_url.clone()).or_default().nack = Some(nack.view());
                }
                NodeView {
                    id: id.clone(),
                    streams: node.streams,
                    last_request: rfc3339(node.last_request),
                    types,
                    last_nack: node.last_nack.as_ref().map(Nack::view),
                }
            })
            .collect()
    }

    /// Counts of responses, ACKs and NACKs per type, and of streams and nodes.
    pub fn counts(&self) -> XdsCounts {
        let c = &self.counters;
        let n = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let types = type_url::ALL
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let counts = TypeCounts {
                    pushes: n(&c.pushes[i]),
                    acks: n(&c.acks[i]),
                    nacks: n(&c.nacks[i]),
                };
                (*t, counts)
            })
            .collect();
        let nodes = self.lock();
        let streams: usize = nodes.values().map(|n| n.streams).sum();
        let connected = nodes.values().filter(|n| n.streams > 0).count();
        XdsCounts {
            types,
            streams_opened: n(&c.streams_opened),
            streams: streams as u64,
            nodes_connected: connected as u64,
            nodes_disconnected: (nodes.len() - connected) as u64,
        }
    }

    /// A response of `type_url` was sent on some stream.
    pub(super) fn pushed(&self, type_url: &str) {
        Counters::add(&self.counters.pushes, type_url);
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
            nacked: BTreeMap::new(),
            last_nack: None,
        });
        self.counters.streams_opened.fetch_add(1, Ordering::Relaxed);
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
        Counters::add(&self.nodes.counters.acks, type_url);
        self.nodes.update(self.id(), |n| {
            n.nacked.remove(type_url);
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
        Counters::add(&self.nodes.counters.nacks, type_url);
        self.nodes.update(self.id(), |n| {
            n.nacked.insert(type_url.to_owned(), nack.clone());
            n.last_nack = Some(nack);
        });
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

impl Nack {
    fn view(&self) -> NackView {
        NackView {
            type_url: self.type_url.clone(),
            version: self.version.clone(),
            nonce: self.nonce.clone(),
            message: self.message.clone(),
            at: rfc3339(self.at),
        }
    }
}

/// `t` as RFC 3339 in UTC, to the second (times before 1970 read as 1970).
pub(crate) fn rfc3339(t: SystemTime) -> String {
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

        let view = &nodes.list()[0];
        assert_eq!(
            view.types["t"].nack.as_ref().map(|n| n.version.as_str()),
            Some("v2")
        );
        assert_eq!(
            view.types["t"].acked.as_ref().map(|a| a.version.as_str()),
            Some("v1")
        );
        first.ack("t", "v3", "3");
        let view = &nodes.list()[0];
        assert_eq!(view.types["t"].nack, None, "a later ACK makes a NACK good");
        assert_eq!(
            view.last_nack.as_ref().map(|n| n.version.as_str()),
            Some("v2")
        );

        nodes.pushed("t");
        nodes.pushed(type_url::CLUSTER);
        first.ack(type_url::CLUSTER, "c1", "4");
        first.nack(type_url::CLUSTER, "c2", "5", "no");
        let counts = nodes.counts();
        assert_eq!(counts.streams, 2);
        assert_eq!(counts.streams_opened, 2);
        assert_eq!((counts.nodes_connected, counts.nodes_disconnected), (1, 0));
        assert_eq!(
            counts.types[0],
            (
                type_url::CLUSTER,
                TypeCounts {
                    pushes: 1,
                    acks: 1,
                    nacks: 1
                }
            ),
            "types not served are not counted"
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
