//! State-of-the-world xDS (`StreamAggregatedResources`): every response
//! carries all the resources of its type the stream asked for, versioned by
//! the type's version in the snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::nodes::Peer;
use super::wire::Encoded;
use super::{Nonces, Protocol, Response, served_type, wildcard_by_default};
use crate::snapshot::{Snapshot, type_url};

/// One stream's state.
#[derive(Debug)]
pub(super) struct Sotw {
    snapshot: Arc<Snapshot>,
    watches: BTreeMap<&'static str, Watch>,
    nonces: Nonces,
}

/// One type on one stream: what the stream asked for and what it was last sent.
#[derive(Debug)]
struct Watch {
    names: Names,
    sent: Option<Sent>,
}

/// The resources a stream asked for.
#[derive(Debug, PartialEq, Eq)]
enum Names {
    All,
    These(BTreeSet<String>),
}

#[derive(Debug)]
struct Sent {
    version: String,
    nonce: String,
}

impl Names {
    fn of(type_url: &str, names: Vec<String>) -> Self {
        let wildcard =
            names.iter().any(|n| n == "*") || (names.is_empty() && wildcard_by_default(type_url));
        if wildcard {
            Self::All
        } else {
            Self::These(names.into_iter().collect())
        }
    }
}

impl Sotw {
    pub(super) fn new(snapshot: Arc<Snapshot>) -> Self {
        Self {
            snapshot,
            watches: BTreeMap::new(),
            nonces: Nonces::default(),
        }
    }

    /// The response for `type_url` from the current snapshot, if the stream
    /// asked for anything the snapshot has (a wildcard asks for everything,
    /// even nothing: then Envoy learns it has no listener, or no cluster).
    fn respond(&mut self, type_url: &'static str) -> Option<Response> {
        let watch = self.watches.get_mut(type_url)?;
        let resources = self.snapshot.of_type(type_url);
        let entries: Vec<_> = match &watch.names {
            Names::All => vec![resources.sotw_wire.clone()],
            Names::These(names) => names
                .iter()
                .filter_map(|name| resources.items.get(name))
                .map(|r| r.wire.sotw.clone())
                .collect(),
        };
        if entries.is_empty() {
            return None;
        }
        let nonce = self.nonces.next();
        let own = DiscoveryResponse {
            version_info: resources.version.clone(),
            type_url: type_url.to_owned(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        watch.sent = Some(Sent {
            version: resources.version.clone(),
            nonce,
        });
        Some(Encoded::new(type_url, &own, entries))
    }
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;

    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn on_request(&mut self, request: DiscoveryRequest, peer: &Peer) -> Vec<Response> {
        let Some(type_url) = served_type(&request.type_url) else {
            tracing::debug!(
                node = %peer.id(), type_url = %request.type_url,
                "request for a type not served; ignored"
            );
            return Vec::new();
        };
        let watch = self.watches.entry(type_url).or_insert(Watch {
            names: Names::These(BTreeSet::new()),
            sent: None,
        });
        let fresh = request.response_nonce.is_empty();
        if !fresh {
            // Only an answer to the latest response counts: an older one was
            // overtaken by what followed it, and Envoy will answer that too.
            let Some(sent) = watch
                .sent
                .as_ref()
                .filter(|s| s.nonce == request.response_nonce)
            else {
                tracing::debug!(
                    node = %peer.id(), type_url, nonce = %request.response_nonce,
                    "stale nonce; ignored"
                );
                return Vec::new();
            };
            match &request.error_detail {
                None => peer.ack(type_url, &sent.version, &sent.nonce),
                // The rejected version stays the one sent: it is not sent
                // again, and the next snapshot's is.
                Some(error) => peer.nack(type_url, &sent.version, &sent.nonce, &error.message),
            }
        }
        let names = Names::of(type_url, request.resource_names);
        let renamed = names != watch.names;
        watch.names = names;
        let current = &self.snapshot.of_type(type_url).version;
        let behind = watch.sent.as_ref().is_none_or(|s| &s.version != current);
        if fresh || renamed || behind {
            self.respond(type_url).into_iter().collect()
        } else {
            Vec::new()
        }
    }

    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<Response> {
        self.snapshot = snapshot;
        let mut out = Vec::new();
        for type_url in type_url::ALL {
            let Some(watch) = self.watches.get(type_url) else {
                continue;
            };
            let current = &self.snapshot.of_type(type_url).version;
            if watch.sent.as_ref().is_some_and(|s| &s.version == current) {
                continue;
            }
            out.extend(self.respond(type_url));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::Any;
    use envoy_types::pb::google::rpc::Status;

    use super::*;
    use crate::snapshot::Resource;
    use crate::xds::Nodes;

    fn resource(type_url: &str, name: &str, content: &str) -> Resource {
        let body = Any {
            type_url: type_url.into(),
            value: format!("{name}={content}").into_bytes(),
        };
        Resource::new(name, body)
    }

    fn snapshot(resources: &[(&str, &str, &str)]) -> Arc<Snapshot> {
        Arc::new(Snapshot::new(
            resources.iter().map(|(t, n, c)| resource(t, n, c)),
        ))
    }

    fn request(type_url: &str, names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            node: Some(Node {
                id: "n".into(),
                ..Default::default()
            }),
            type_url: type_url.into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn names(response: &DiscoveryResponse) -> Vec<String> {
        response
            .resources
            .iter()
            .map(|any| String::from_utf8_lossy(&any.value).into_owned())
            .collect()
    }

    /// The protocol's answers, as Envoy decodes them.
    trait Decoded {
        fn request(&mut self, request: DiscoveryRequest, peer: &Peer) -> Vec<DiscoveryResponse>;
        fn snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DiscoveryResponse>;
    }

    impl Decoded for Sotw {
        fn request(&mut self, request: DiscoveryRequest, peer: &Peer) -> Vec<DiscoveryResponse> {
            decoded(self.on_request(request, peer))
        }
        fn snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DiscoveryResponse> {
            decoded(self.on_snapshot(snapshot))
        }
    }

    fn decoded(out: Vec<Response>) -> Vec<DiscoveryResponse> {
        out.into_iter().map(|r| r.unwrap().decode()).collect()
    }

    fn peer() -> Peer {
        let mut peer = Peer::new(Nodes::default());
        peer.saw_request(None);
        peer
    }

    #[test]
    fn ignores_unknown_types_and_stale_nonces() {
        let peer = peer();
        let mut stream = Sotw::new(snapshot(&[(type_url::CLUSTER, "a", "1")]));
        assert!(
            stream
                .request(request("type.googleapis.com/x.Y", &[], ""), &peer)
                .is_empty()
        );
        assert!(stream.request(request("", &[], ""), &peer).is_empty());

        let first = stream.request(request(type_url::CLUSTER, &[], ""), &peer);
        assert_eq!(first.len(), 1);
        // A request answering a nonce never sent is ignored, even with new names.
        assert!(
            stream
                .request(request(type_url::CLUSTER, &["a"], "99"), &peer)
                .is_empty()
        );
        // The ACK to the latest response asks for nothing new.
        assert!(
            stream
                .request(request(type_url::CLUSTER, &[], &first[0].nonce), &peer)
                .is_empty()
        );
    }

    #[test]
    fn named_types_answer_only_for_resources_that_exist() {
        let peer = peer();
        let mut stream = Sotw::new(snapshot(&[
            (type_url::ENDPOINT, "a", "1"),
            (type_url::ENDPOINT, "b", "1"),
        ]));
        // No name: no subscription for a type that is not wildcard.
        assert!(
            stream
                .request(request(type_url::ENDPOINT, &[], ""), &peer)
                .is_empty()
        );
        let missing = stream.request(request(type_url::ENDPOINT, &["zz"], ""), &peer);
        assert!(missing.is_empty());

        let out = stream.request(request(type_url::ENDPOINT, &["b", "zz"], ""), &peer);
        assert_eq!(names(&out[0]), ["b=1"]);
        // The missing one is sent when it appears.
        let pushed = stream.snapshot(snapshot(&[
            (type_url::ENDPOINT, "b", "1"),
            (type_url::ENDPOINT, "zz", "1"),
        ]));
        assert_eq!(names(&pushed[0]), ["b=1", "zz=1"]);
        // A wildcard with nothing to send still answers.
        let empty = stream.request(request(type_url::LISTENER, &[], ""), &peer);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].resources.is_empty());
    }

    #[test]
    fn a_nacked_version_is_not_resent_but_the_next_one_is() {
        let peer = peer();
        let mut stream = Sotw::new(snapshot(&[(type_url::CLUSTER, "a", "1")]));
        let sent = stream.request(request(type_url::CLUSTER, &[], ""), &peer);
        let mut nack = request(type_url::CLUSTER, &[], &sent[0].nonce);
        nack.error_detail = Some(Status {
            code: 3,
            message: "no".into(),
            details: Vec::new(),
        });
        assert!(stream.request(nack, &peer).is_empty());
        // A snapshot that changes another type only does not resend it.
        assert!(
            stream
                .snapshot(snapshot(&[
                    (type_url::CLUSTER, "a", "1"),
                    (type_url::LISTENER, "l", "1"),
                ]))
                .is_empty()
        );
        let next = stream.snapshot(snapshot(&[(type_url::CLUSTER, "a", "2")]));
        assert_eq!(names(&next[0]), ["a=2"]);
        assert_ne!(next[0].version_info, sent[0].version_info);
        assert_ne!(next[0].nonce, sent[0].nonce);
    }
}
