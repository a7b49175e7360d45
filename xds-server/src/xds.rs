//! The aggregated discovery service (ADS): serves the current [`Snapshot`] to
//! Envoy over one gRPC stream per Envoy, state-of-the-world (`sotw`) or
//! incremental (`delta`), and records what each node accepts and rejects
//! (`nodes`). It knows nothing of policies: whoever builds snapshots publishes
//! them on a `watch` channel and every stream pushes what changed, in
//! [`type_url::ALL`] order (clusters before the listeners that use them).

mod auth;
mod delta;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod nodes;
mod service;
mod sotw;
mod wire;

use std::collections::VecDeque;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use futures::stream::BoxStream;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};

use crate::snapshot::{Snapshot, type_url};
use wire::Encoded;

pub use auth::{XdsAuth, XdsAuthArgs};
pub(crate) use nodes::rfc3339;
pub use nodes::{
    AckLatency, AckView, NackView, NodeView, Nodes, STALE_AFTER, STATUS_NODES, TypeCounts,
    TypeView, XdsCounts,
};
pub use service::AdsService;

/// The short name of a type Weir serves, as operators say it (`cds`, `eds`,
/// `lds`, `rds`, `ecds`); `None` for another type.
pub fn type_name(type_url: &str) -> Option<&'static str> {
    match type_url {
        type_url::CLUSTER => Some("cds"),
        type_url::ENDPOINT => Some("eds"),
        type_url::LISTENER => Some("lds"),
        type_url::ROUTE => Some("rds"),
        type_url::EXTENSION_CONFIG => Some("ecds"),
        _ => None,
    }
}

/// The largest response: a snapshot's whole type travels in one
/// state-of-the-world response, and a fleet's gateway can have many clusters.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// The largest request: requests name resources (hundreds of thousands fit)
/// and carry Envoy's node description and error messages.
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// A stream's responses, produced as the connection takes them.
pub(crate) type ResponseStream = BoxStream<'static, Result<Encoded, Status>>;

/// The ADS server: every stream serves the latest published snapshot.
#[derive(Debug)]
pub struct AdsServer {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    nodes: Nodes,
}

impl AdsServer {
    /// A server of the snapshots published on `snapshots`, recording each
    /// node's status in `nodes`.
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>, nodes: Nodes) -> Self {
        Self { snapshots, nodes }
    }

    /// The tonic service, ready for `tonic::transport::Server::add_service`.
    pub fn into_service(self) -> AdsService {
        AdsService::new(self)
    }

    /// Serves one stream with `protocol`: its responses.
    ///
    /// The stream is its own state machine, polled by the connection when it
    /// can send: no task and no queue per stream. A response is made only
    /// when the connection takes it, so an Envoy that reads slowly holds at
    /// most one batch (the responses of one request or one snapshot), and is
    /// sent the latest snapshot, never a backlog of stale ones.
    fn open<P: Protocol>(
        &self,
        requests: Streaming<P::Request>,
        start: impl FnOnce(Arc<Snapshot>) -> P,
    ) -> ResponseStream {
        let mut snapshots = self.snapshots.clone();
        let protocol = start(snapshots.borrow_and_update().clone());
        let state = StreamState {
            protocol,
            requests,
            snapshots,
            peer: nodes::Peer::new(self.nodes.clone()),
            pending: VecDeque::new(),
            watching: true,
        };
        Box::pin(futures::stream::unfold(state, StreamState::next))
    }
}

/// One flavour of the protocol, as a state machine per stream: requests and
/// new snapshots in, responses out. It sees the snapshot only through
/// `on_snapshot`, so that every push follows [`type_url::ALL`] order even when
/// a request arrives between a new snapshot and its push.
trait Protocol: Send + 'static {
    type Request: Send + 'static;

    fn node(request: &Self::Request) -> Option<&Node>;

    fn on_request(&mut self, request: Self::Request, peer: &nodes::Peer) -> Vec<Response>;

    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>, peer: &nodes::Peer) -> Vec<Response>;
}

/// A response to send, or why the stream cannot go on (one too large).
type Response = Result<Encoded, Status>;

/// One stream: the protocol's state, what it reads, and the responses made
/// but not yet taken.
struct StreamState<P: Protocol> {
    protocol: P,
    requests: Streaming<P::Request>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    peer: nodes::Peer,
    pending: VecDeque<Response>,
    /// Once the publisher is gone the last snapshot keeps being served.
    watching: bool,
}

impl<P: Protocol> StreamState<P> {
    /// The next response, reading requests and snapshots until there is
    /// one; `None` ends the stream (the Envoy closed it, or it failed).
    async fn next(mut self) -> Option<(Response, Self)> {
        loop {
            if let Some(response) = self.pending.pop_front() {
                if let Ok(encoded) = &response {
                    self.peer.sent(encoded.type_url());
                }
                return Some((response, self));
            }
            let out = tokio::select! {
                request = self.requests.next() => match request {
                    Some(Ok(request)) => {
                        self.peer.saw_request(P::node(&request));
                        self.protocol.on_request(request, &self.peer)
                    }
                    Some(Err(status)) => {
                        tracing::debug!(node = %self.peer.id(), %status, "xDS stream failed");
                        return None;
                    }
                    None => return None,
                },
                changed = self.snapshots.changed(), if self.watching => match changed {
                    Ok(()) => {
                        let snapshot = self.snapshots.borrow_and_update().clone();
                        self.protocol.on_snapshot(snapshot, &self.peer)
                    }
                    Err(_) => {
                        self.watching = false;
                        Vec::new()
                    }
                },
            };
            self.pending.extend(out);
        }
    }
}

fn served_type(type_url: &str) -> Option<&'static str> {
    type_url::ALL.iter().copied().find(|t| *t == type_url)
}

/// Whether a first request naming no resource subscribes to all of them: so
/// for listeners and clusters, which Envoy discovers that way.
fn wildcard_by_default(type_url: &str) -> bool {
    type_url == type_url::CLUSTER || type_url == type_url::LISTENER
}

/// Nonces, unique per stream.
#[derive(Debug, Default)]
struct Nonces(u64);

impl Nonces {
    fn next(&mut self) -> String {
        self.0 += 1;
        self.0.to_string()
    }
}
