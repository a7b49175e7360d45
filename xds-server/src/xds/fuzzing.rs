//! One ADS stream driven in memory, for the fuzz targets (feature
//! `fuzzing`): the protocol state machines the server runs for each stream,
//! fed requests and snapshots in the order the server would, without a
//! connection.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};

use super::delta::Delta;
use super::nodes::{Nodes, Peer};
use super::sotw::Sotw;
use super::{Protocol, Response};
use crate::snapshot::Snapshot;

/// A request of either flavour; one of the other flavour is ignored, as a
/// stream of the other method would never decode it.
#[derive(Debug, Clone)]
pub enum Request {
    Sotw(DiscoveryRequest),
    Delta(DeltaDiscoveryRequest),
}

/// What a stream sends: a message's bytes as Envoy reads them (a
/// `DiscoveryResponse` or a `DeltaDiscoveryResponse`), or the status that
/// ends the stream.
pub type Answer = Result<Vec<u8>, tonic::Status>;

/// One stream, with the node record the server keeps for it.
pub struct Stream {
    flavour: Flavour,
    peer: Peer,
    nodes: Nodes,
}

enum Flavour {
    Sotw(Sotw),
    Delta(Delta),
}

impl Stream {
    /// A state-of-the-world stream opened while `snapshot` is current.
    pub fn sotw(snapshot: Arc<Snapshot>) -> Self {
        Self::new(Flavour::Sotw(Sotw::new(snapshot)))
    }

    /// An incremental stream opened while `snapshot` is current.
    pub fn delta(snapshot: Arc<Snapshot>) -> Self {
        Self::new(Flavour::Delta(Delta::new(snapshot)))
    }

    fn new(flavour: Flavour) -> Self {
        let nodes = Nodes::default();
        Self {
            flavour,
            peer: Peer::new(nodes.clone()),
            nodes,
        }
    }

    /// The answers to one request.
    pub fn request(&mut self, request: Request) -> Vec<Answer> {
        let responses = match (&mut self.flavour, request) {
            (Flavour::Sotw(sotw), Request::Sotw(request)) => {
                self.peer.saw_request(Sotw::node(&request));
                sotw.on_request(request, &self.peer)
            }
            (Flavour::Delta(delta), Request::Delta(request)) => {
                self.peer.saw_request(Delta::node(&request));
                delta.on_request(request, &self.peer)
            }
            _ => Vec::new(),
        };
        self.sent(responses)
    }

    /// The pushes a new snapshot makes.
    pub fn snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<Answer> {
        let responses = match &mut self.flavour {
            Flavour::Sotw(sotw) => sotw.on_snapshot(snapshot, &self.peer),
            Flavour::Delta(delta) => delta.on_snapshot(snapshot, &self.peer),
        };
        self.sent(responses)
    }

    /// The node's record as `weir status` would show it.
    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    fn sent(&self, responses: Vec<Response>) -> Vec<Answer> {
        responses
            .into_iter()
            .map(|response| {
                let encoded = response?;
                self.peer.sent(encoded.type_url());
                encoded.message_bytes().map_err(tonic::Status::internal)
            })
            .collect()
    }
}
