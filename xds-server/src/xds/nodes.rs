//! What each Envoy node has accepted and rejected, and how many responses,
//! ACKs and NACKs of each type went by, for the admin API, weir's own
//! metrics, tests and benchmarks. Streams report here; nothing here drives
//! the streams.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::Node;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::snapshot::type_url;

/// The id given to a stream whose first request names no node.
pub(super) const UNKNOWN_NODE: &str = "unknown";

/// Nodes with no stream left are remembered, the most recently seen first, up
/// to this many: enough to explain a fleet's recent past, bounded all the same.
const MAX_DISCONNECTED: usize = 1024;

/// The nodes `status` lists, the first by id: the admin API's status stays
/// small however many Envoys are connected (`/v1/nodes` pages through all).
pub const STATUS_NODES: usize = 100;

/// How long a response may go unanswered before its node counts as stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// Bucket bounds of the ACK latency histogram, in seconds.
const ACK_LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// ACK latency per type: a histogram labelled `type` (the short name).
pub type AckLatency = Family<Vec<(&'static str, String)>, Histogram, fn() -> Histogram>;

fn ack_latency_histogram() -> Histogram {
    Histogram::new(ACK_LATENCY_BUCKETS)
}

/// Node status registry, shared with the admin API.
///
/// Which nodes exist is behind one lock, taken when a stream opens or
/// closes; what each node ACKs and NACKs is behind its own, which its
/// streams hold a handle to, so that ten thousand Envoys ACKing a push do not
/// queue on one lock or search one map.
#[derive(Clone, Debug, Default)]
pub struct Nodes {
    inner: Arc<Mutex<Registry>>,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Registry {
    nodes: BTreeMap<String, Member>,
    /// Nodes without a stream, oldest first: (when the last one closed, id).
    idle: BTreeSet<(SystemTime, String)>,
    streams: usize,
}

#[derive(Debug)]
struct Member {
    streams: usize,
    /// When its last stream closed, while it has none.
    idle_since: Option<SystemTime>,
    state: Arc<Mutex<NodeState>>,
}

#[derive(Debug)]
struct NodeState {
    last_request: SystemTime,
    /// Per type, in [`type_url::ALL`] order: the last version and nonce the
    /// node ACKed.
    acked: [Option<Acked>; type_url::ALL.len()],
    /// Per type: the node's NACK of the latest version it was sent, until it
    /// ACKs a later one.
    nacked: [Option<Nack>; type_url::ALL.len()],
    last_nack: Option<Nack>,
    /// Per type: when the oldest response the node has not answered yet
    /// (ACK or NACK) was sent.
    unanswered: [Option<Instant>; type_url::ALL.len()],
}

impl NodeState {
    fn new(now: SystemTime) -> Self {
        Self {
            last_request: now,
            acked: Default::default(),
            nacked: Default::default(),
            last_nack: None,
            unanswered: Default::default(),
        }
    }

    /// Whether a response has waited for an answer longer than [`STALE_AFTER`].
    fn stale(&self, now: Instant) -> bool {
        self.unanswered
            .iter()
            .flatten()
            .any(|&sent| now.saturating_duration_since(sent) > STALE_AFTER)
    }
}

fn type_index(type_url: &str) -> Option<usize> {
    type_url::ALL.iter().position(|t| *t == type_url)
}

/// Counts since the process started, per type in [`type_url::ALL`] order.
#[derive(Debug)]
struct Counters {
    pushes: [AtomicU64; type_url::ALL.len()],
    acks: [AtomicU64; type_url::ALL.len()],
    nacks: [AtomicU64; type_url::ALL.len()],
    streams_opened: AtomicU64,
    /// From a response sent (the oldest unanswered) to the node's ACK.
    ack_latency: AckLatency,
    /// `ack_latency`'s histogram of each type, in [`type_url::ALL`] order:
    /// an ACK observes it without building labels or taking the family's lock.
    ack_latency_by_type: Vec<Histogram>,
}

impl Default for Counters {
    fn default() -> Self {
        let ack_latency: AckLatency = Family::new_with_constructor(ack_latency_histogram);
        let ack_latency_by_type = type_url::ALL
            .iter()
            .map(|type_url| {
                let name = super::type_name(type_url).unwrap_or("other");
                ack_latency.get_or_create_owned(&vec![("type", name.to_owned())])
            })
            .collect();
        Self {
            pushes: Default::default(),
            acks: Default::default(),
            nacks: Default::default(),
            streams_opened: AtomicU64::default(),
            ack_latency,
            ack_latency_by_type,
        }
    }
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
    /// Connected nodes with a response unanswered for over [`STALE_AFTER`].
    pub nodes_stale: u64,
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
    /// are RFC 3339, UTC, to the second. At most [`STATUS_NODES`], by id.
    pub fn status(&self) -> Value {
        let registry = self.lock();
        let view: serde_json::Map<String, Value> = registry
            .nodes
            .iter()
            .take(STATUS_NODES)
            .map(|(id, member)| {
                let node = lock(&member.state);
                let acked: serde_json::Map<String, Value> = type_url::ALL
                    .iter()
                    .zip(&node.acked)
                    .filter_map(|(type_url, acked)| {
                        let acked = acked.as_ref()?;
                        let entry = json!({
                            "version": acked.version,
                            "nonce": acked.nonce,
                            "at": rfc3339(acked.at),
                        });
                        Some(((*type_url).to_owned(), entry))
                    })
                    .collect();
                let entry = json!({
                    "streams": member.streams,
                    "last_request": rfc3339(node.last_request),
                    "acked": acked,
                    "last_nack": node.last_nack.as_ref().map(Nack::view),
                });
                (id.clone(), entry)
            })
            .collect();
        Value::Object(view)
    }

    /// Every node, by id: what it accepted and rejected per type.
    pub fn list(&self) -> Vec<NodeView> {
        self.page(None, usize::MAX)
    }

    /// Up to `limit` nodes by id, from the first after `after`.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Vec<NodeView> {
        use std::ops::Bound;
        let registry = self.lock();
        let from = after.map_or(Bound::Unbounded, |id| Bound::Excluded(id.to_owned()));
        registry
            .nodes
            .range((from, Bound::Unbounded))
            .take(limit)
            .map(|(id, member)| {
                let node = lock(&member.state);
                let mut types: BTreeMap<String, TypeView> = BTreeMap::new();
                for (type_url, acked) in type_url::ALL.iter().zip(&node.acked) {
                    if let Some(acked) = acked {
                        types.entry((*type_url).to_owned()).or_default().acked = Some(AckView {
                            version: acked.version.clone(),
                            nonce: acked.nonce.clone(),
                            at: rfc3339(acked.at),
                        });
                    }
                }
                for (type_url, nack) in type_url::ALL.iter().zip(&node.nacked) {
                    if let Some(nack) = nack {
                        types.entry((*type_url).to_owned()).or_default().nack = Some(nack.view());
                    }
                }
                NodeView {
                    id: id.clone(),
                    streams: member.streams,
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
        let registry = self.lock();
        let disconnected = registry.idle.len();
        let now = Instant::now();
        let stale = registry
            .nodes
            .values()
            .filter(|m| m.streams > 0 && lock(&m.state).stale(now))
            .count();
        XdsCounts {
            types,
            streams_opened: n(&c.streams_opened),
            streams: registry.streams as u64,
            nodes_connected: (registry.nodes.len() - disconnected) as u64,
            nodes_disconnected: disconnected as u64,
            nodes_stale: stale as u64,
        }
    }

    /// The ACK latency histograms, by type (for weir's own metrics).
    pub fn ack_latency(&self) -> AckLatency {
        self.counters.ack_latency.clone()
    }

    /// A response of `type_url` was sent on some stream (of no node known here).
    pub(super) fn pushed(&self, type_url: &str) {
        Counters::add(&self.counters.pushes, type_url);
    }

    /// Whether the last version node `id` ACKed for `type_url` is `version`.
    pub fn acked(&self, id: &str, type_url: &str, version: &str) -> bool {
        let Some(i) = type_index(type_url) else {
            return false;
        };
        let registry = self.lock();
        registry.nodes.get(id).is_some_and(|member| {
            lock(&member.state)
                .acked
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|acked| acked.version == version)
        })
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        lock(&self.inner)
    }

    /// A stream of node `id` opened: the handle its requests update.
    fn connect(&self, id: &str, now: SystemTime) -> Arc<Mutex<NodeState>> {
        self.counters.streams_opened.fetch_add(1, Ordering::Relaxed);
        let mut registry = self.lock();
        let registry = &mut *registry;
        let member = registry
            .nodes
            .entry(id.to_owned())
            .or_insert_with(|| Member {
                streams: 0,
                idle_since: None,
                state: Arc::new(Mutex::new(NodeState::new(now))),
            });
        if let Some(since) = member.idle_since.take() {
            registry.idle.remove(&(since, id.to_owned()));
        }
        member.streams += 1;
        registry.streams += 1;
        lock(&member.state).last_request = now;
        Arc::clone(&member.state)
    }

    fn disconnect(&self, id: &str, now: SystemTime) {
        let mut registry = self.lock();
        let registry = &mut *registry;
        let Some(member) = registry.nodes.get_mut(id) else {
            return;
        };
        if member.streams == 0 {
            return;
        }
        member.streams -= 1;
        registry.streams = registry.streams.saturating_sub(1);
        if member.streams == 0 {
            member.idle_since = Some(now);
            registry.idle.insert((now, id.to_owned()));
        }
        while registry.idle.len() > MAX_DISCONNECTED {
            let Some((_, oldest)) = registry.idle.pop_first() else {
                break;
            };
            registry.nodes.remove(&oldest);
        }
    }
}

/// The registry stays consistent whatever a panicking holder was doing:
/// every update is a single assignment.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One stream's view of the registry: it learns the node's id from the first
/// request, counts the stream as connected until dropped, and records what
/// the node ACKs and NACKs.
#[derive(Debug)]
pub(super) struct Peer {
    nodes: Nodes,
    node: Option<(String, Arc<Mutex<NodeState>>)>,
}

impl Peer {
    pub(super) fn new(nodes: Nodes) -> Self {
        Self { nodes, node: None }
    }

    /// A request arrived, naming `node` or not (only the first must).
    pub(super) fn saw_request(&mut self, node: Option<&Node>) {
        let now = SystemTime::now();
        match &self.node {
            Some((_, state)) => lock(state).last_request = now,
            None => {
                let id = node
                    .map(|n| n.id.as_str())
                    .filter(|id| !id.is_empty())
                    .unwrap_or(UNKNOWN_NODE)
                    .to_owned();
                tracing::info!(node = %id, "xDS stream opened");
                let state = self.nodes.connect(&id, now);
                self.node = Some((id, state));
            }
        }
    }

    /// The node's id (`unknown` until its first request).
    pub(super) fn id(&self) -> &str {
        self.node
            .as_ref()
            .map_or(UNKNOWN_NODE, |(id, _)| id.as_str())
    }

    fn update(&self, change: impl FnOnce(&mut NodeState)) {
        if let Some((_, state)) = &self.node {
            change(&mut lock(state));
        }
    }

    /// A response of `type_url` was sent to the node.
    pub(super) fn sent(&self, type_url: &str) {
        self.nodes.pushed(type_url);
        if let Some(i) = type_index(type_url) {
            self.update(|n| {
                if let Some(slot) = n.unanswered.get_mut(i) {
                    slot.get_or_insert_with(Instant::now);
                }
            });
        }
    }

    pub(super) fn ack(&self, type_url: &str, version: &str, nonce: &str) {
        Counters::add(&self.nodes.counters.acks, type_url);
        let Some(i) = type_index(type_url) else {
            return;
        };
        let acked = Acked {
            version: version.to_owned(),
            nonce: nonce.to_owned(),
            at: SystemTime::now(),
        };
        let mut waited = None;
        self.update(|n| {
            if let (Some(nacked), Some(slot)) = (n.nacked.get_mut(i), n.acked.get_mut(i)) {
                *nacked = None;
                *slot = Some(acked);
            }
            waited = n.unanswered.get_mut(i).and_then(Option::take);
        });
        // An ACK weir infers (nothing new was sent) has no latency.
        if let (Some(sent), Some(histogram)) =
            (waited, self.nodes.counters.ack_latency_by_type.get(i))
        {
            histogram.observe(sent.elapsed().as_secs_f64());
        }
    }

    pub(super) fn nack(&self, type_url: &str, version: &str, nonce: &str, message: &str) {
        tracing::warn!(
            node = %self.id(), type_url, version, nonce, message,
            "Envoy rejected the configuration; it keeps its last accepted version"
        );
        Counters::add(&self.nodes.counters.nacks, type_url);
        let nack = Nack {
            type_url: type_url.to_owned(),
            version: version.to_owned(),
            nonce: nonce.to_owned(),
            message: message.to_owned(),
            at: SystemTime::now(),
        };
        let i = type_index(type_url);
        self.update(|n| {
            if let Some(slot) = i.and_then(|i| n.nacked.get_mut(i)) {
                *slot = Some(nack.clone());
            }
            if let Some(slot) = i.and_then(|i| n.unanswered.get_mut(i)) {
                *slot = None;
            }
            n.last_nack = Some(nack);
        });
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some((id, _)) = &self.node {
            tracing::info!(node = %id, "xDS stream closed");
            self.nodes.disconnect(id, SystemTime::now());
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
    fn an_unanswered_response_makes_its_node_stale_and_its_ack_is_timed() {
        const T: &str = type_url::LISTENER;
        let nodes = Nodes::default();
        let mut peer = Peer::new(nodes.clone());
        peer.saw_request(Some(&node("envoy-1")));
        let stale_later = |nodes: &Nodes| {
            let registry = nodes.lock();
            let state = lock(&registry.nodes["envoy-1"].state);
            state.stale(Instant::now() + STALE_AFTER + Duration::from_secs(1))
        };
        assert!(!stale_later(&nodes), "nothing sent yet");
        peer.sent(T);
        peer.sent(T);
        assert!(stale_later(&nodes), "two responses unanswered");
        assert_eq!(nodes.counts().nodes_stale, 0, "not for 30 s yet");
        // The ACK answers them, and its wait is timed from the first.
        peer.ack(T, "v2", "2");
        assert!(!stale_later(&nodes));
        // An ACK weir infers, with nothing sent, is not timed.
        peer.ack(T, "v3", "2");
        // A NACK is an answer too.
        peer.sent(T);
        peer.nack(T, "v4", "3", "bad");
        assert!(!stale_later(&nodes));

        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("ack_latency", "", nodes.ack_latency());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("ack_latency_count{type=\"lds\"} 1\n"),
            "{text}"
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

        const T: &str = type_url::LISTENER;
        first.ack(T, "v1", "1");
        assert!(nodes.acked("envoy-1", T, "v1"));
        assert!(!nodes.acked("envoy-1", T, "v2"));
        assert!(!nodes.acked("envoy-1", type_url::ROUTE, "v1"));
        assert!(!nodes.acked("envoy-2", T, "v1"));

        first.nack(T, "v2", "2", "bad cluster");
        let status = nodes.status();
        assert_eq!(status["envoy-1"]["acked"][T]["version"], "v1");
        assert_eq!(status["envoy-1"]["acked"][T]["nonce"], "1");
        assert_eq!(status["envoy-1"]["last_nack"]["version"], "v2");
        assert_eq!(status["envoy-1"]["last_nack"]["message"], "bad cluster");
        assert!(
            nodes.acked("envoy-1", T, "v1"),
            "a NACK keeps the last ACKed version"
        );

        let view = &nodes.list()[0];
        assert_eq!(
            view.types[T].nack.as_ref().map(|n| n.version.as_str()),
            Some("v2")
        );
        assert_eq!(
            view.types[T].acked.as_ref().map(|a| a.version.as_str()),
            Some("v1")
        );
        first.ack(T, "v3", "3");
        let view = &nodes.list()[0];
        assert_eq!(view.types[T].nack, None, "a later ACK makes a NACK good");
        assert_eq!(
            view.last_nack.as_ref().map(|n| n.version.as_str()),
            Some("v2")
        );

        nodes.pushed("t");
        nodes.pushed(type_url::CLUSTER);
        first.ack(type_url::CLUSTER, "c1", "4");
        first.nack(type_url::CLUSTER, "c2", "5", "no");
        first.ack("t", "c1", "6");
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
            nodes.disconnect(&id, at(i as u64 + 1));
        }
        // One that comes back is not forgotten, however old its first visit.
        nodes.connect("n1", at(5000));
        nodes.disconnect("n1", at(5001));
        nodes.connect("late", at(6000));
        nodes.disconnect("late", at(6001));
        let listed: Vec<String> = nodes.list().into_iter().map(|n| n.id).collect();
        assert_eq!(listed.len(), MAX_DISCONNECTED);
        assert!(!listed.contains(&"n0".to_owned()) && !listed.contains(&"n2".to_owned()));
        assert!(listed.contains(&"n1".to_owned()) && listed.contains(&"late".to_owned()));
        assert!(listed.contains(&format!("n{MAX_DISCONNECTED}")));
        let counts = nodes.counts();
        assert_eq!(
            (
                counts.nodes_connected,
                counts.nodes_disconnected,
                counts.streams
            ),
            (0, MAX_DISCONNECTED as u64, 0)
        );
    }

    #[test]
    fn status_lists_a_bounded_number_of_nodes_and_pages_list_them_all() {
        let nodes = Nodes::default();
        let _streams: Vec<Peer> = (0..STATUS_NODES + 5)
            .map(|i| {
                let mut peer = Peer::new(nodes.clone());
                peer.saw_request(Some(&node(&format!("n{i:04}"))));
                peer
            })
            .collect();
        assert_eq!(
            nodes.status().as_object().map(|m| m.len()),
            Some(STATUS_NODES)
        );
        assert_eq!(nodes.counts().nodes_connected, (STATUS_NODES + 5) as u64);
        let first = nodes.page(None, 3);
        let ids: Vec<&str> = first.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["n0000", "n0001", "n0002"]);
        let next = nodes.page(Some("n0002"), 2);
        let ids: Vec<&str> = next.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["n0003", "n0004"]);
        assert!(nodes.page(Some("n9999"), 10).is_empty());
    }
}
