//! The aggregated discovery service (ADS): serves the current [`Snapshot`] to
//! Envoy over one gRPC stream per Envoy, state-of-the-world (`sotw`) or
//! incremental (`delta`), and records what each node accepts and rejects
//! (`nodes`). It knows nothing of policies: whoever builds snapshots publishes
//! them on a `watch` channel and every stream pushes what changed, in
//! [`type_url::ALL`] order (clusters before the listeners that use them).

mod auth;
mod delta;
mod nodes;
mod sotw;

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::snapshot::{Snapshot, type_url};

pub use auth::{XdsAuth, XdsAuthArgs};
pub(crate) use nodes::rfc3339;
pub use nodes::{AckView, NackView, NodeView, Nodes, TypeCounts, TypeView, XdsCounts};

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

/// Responses a stream may have queued for a slow Envoy before it stops
/// reading: one push of every type, twice. This bounds a stream's memory to
/// a couple of copies of the snapshot (what it asked for of it, in fact).
const RESPONSE_QUEUE: usize = 2 * type_url::ALL.len();

/// The ADS gRPC service.
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
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// Starts serving one stream with `protocol` and returns its responses.
    fn open<P: Protocol>(
        &self,
        requests: Streaming<P::Request>,
        start: impl FnOnce(Arc<Snapshot>) -> P,
    ) -> ReceiverStream<Result<P::Response, Status>> {
        let mut snapshots = self.snapshots.clone();
        let protocol = start(snapshots.borrow_and_update().clone());
        let (responses, stream) = mpsc::channel(RESPONSE_QUEUE);
        tokio::spawn(serve_stream(
            protocol,
            requests,
            snapshots,
            self.nodes.clone(),
            responses,
        ));
        ReceiverStream::new(stream)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(
            self.open(request.into_inner(), sotw::Sotw::new),
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(
            self.open(request.into_inner(), delta::Delta::new),
        ))
    }
}

/// One flavour of the protocol, as a state machine per stream: requests and
/// new snapshots in, responses out. It sees the snapshot only through
/// `on_snapshot`, so that every push follows [`type_url::ALL`] order even when
/// a request arrives between a new snapshot and its push.
trait Protocol: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;

    fn node(request: &Self::Request) -> Option<&Node>;

    fn type_url(response: &Self::Response) -> &str;

    fn on_request(&mut self, request: Self::Request, peer: &nodes::Peer) -> Vec<Self::Response>;

    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<Self::Response>;
}

/// Runs one stream until Envoy closes it or stops reading it.
async fn serve_stream<P, S>(
    mut protocol: P,
    requests: S,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    nodes: Nodes,
    responses: mpsc::Sender<Result<P::Response, Status>>,
) where
    P: Protocol,
    S: Stream<Item = Result<P::Request, Status>> + Send + 'static,
{
    let mut requests = std::pin::pin!(requests);
    let mut peer = nodes::Peer::new(nodes.clone());
    // Once the publisher is gone the last snapshot keeps being served.
    let mut watching = true;
    loop {
        let out = tokio::select! {
            request = requests.next() => match request {
                Some(Ok(request)) => {
                    peer.saw_request(P::node(&request));
                    protocol.on_request(request, &peer)
                }
                Some(Err(status)) => {
                    tracing::debug!(node = %peer.id(), %status, "xDS stream failed");
                    break;
                }
                None => break,
            },
            changed = snapshots.changed(), if watching => match changed {
                Ok(()) => protocol.on_snapshot(snapshots.borrow_and_update().clone()),
                Err(_) => {
                    watching = false;
                    Vec::new()
                }
            },
            () = responses.closed() => break,
        };
        for response in out {
            nodes.pushed(P::type_url(&response));
            if responses.send(Ok(response)).await.is_err() {
                return;
            }
        }
    }
}

/// `type_url` as one of the types Weir serves, or `None` for another type.
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
