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
use crate::snapshot::{Snapshot, TypeResources, type_url};

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
    /// Envoy accepted it.
    acked: bool,
}

impl Names {
    /// Whether `previous` and `current` hold the same versions of what these
    /// name (never for a wildcard: a new version of its type changed
    /// something in it).
    fn unchanged(&self, previous: &TypeResources, current: &TypeResources) -> bool {
        let Self::These(names) = self else {
            return false;
        };
        names.iter().all(|name| {
            previous.items.get(name).map(|r| &r.version)
                == current.items.get(name).map(|r| &r.version)
        })
    }

    /// Whether these are some of `before` and no other.
    fn dropped_from(&self, before: &Self) -> bool {
        matches!((self, before), (Self::These(now), Self::These(before)) if now.is_subset(before))
    }

    fn of(type_url: &str, names: Vec<String>) -> Self {
        if Self::wildcard(type_url, &names) {
            Self::All
        } else {
            Self::These(names.into_iter().collect())
        }
    }

    fn wildcard(type_url: &str, names: &[String]) -> bool {
        names.iter().any(|n| n == "*") || (names.is_empty() && wildcard_by_default(type_url))
    }

    /// Whether `names`, as a request gives them (any order, maybe repeated),
    /// ask for exactly these. Every ACK of a state-of-the-world stream
    /// repeats its subscription, so this spares building the same set again
    /// for each one.
    fn asked_by(&self, type_url: &str, names: &[String]) -> bool {
        match self {
            Self::All => Self::wildcard(type_url, names),
            Self::These(these) => {
                if Self::wildcard(type_url, names) {
                    return false;
                }
                let mut asked: Vec<&str> = names.iter().map(String::as_str).collect();
                asked.sort_unstable();
                asked.dedup();
                asked.len() == these.len() && asked.iter().zip(these).all(|(a, b)| *a == b)
            }
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
            acked: false,
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
                .as_mut()
                .filter(|s| s.nonce == request.response_nonce)
            else {
                tracing::debug!(
                    node = %peer.id(), type_url, nonce = %request.response_nonce,
                    "stale nonce; ignored"
                );
                return Vec::new();
            };
            sent.acked = request.error_detail.is_none();
            match &request.error_detail {
                None => peer.ack(type_url, &sent.version, &sent.nonce),
                // The rejected version stays the one sent: it is not sent
                // again, and the next snapshot's is.
                Some(error) => peer.nack(type_url, &sent.version, &sent.nonce, &error.message),
            }
        }
        let current = &self.snapshot.of_type(type_url).version;
        let renamed = if watch.names.asked_by(type_url, &request.resource_names) {
            false
        } else {
            let names = Names::of(type_url, request.resource_names);
            let up_to_date = watch
                .sent
                .as_ref()
                .is_some_and(|s| &s.version == current && s.acked);
            // Names only dropped from a subscription that has the current
            // version need no answer: Envoy keeps what it still asks for.
            let renamed = !(up_to_date && names.dropped_from(&watch.names));
            watch.names = names;
            renamed
        };
        let behind = watch.sent.as_ref().is_none_or(|s| &s.version != current);
        if fresh || renamed || behind {
            self.respond(type_url).into_iter().collect()
        } else {
            Vec::new()
        }
    }

    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>, peer: &Peer) -> Vec<Response> {
        let previous = std::mem::replace(&mut self.snapshot, snapshot);
        let mut out = Vec::new();
        for type_url in type_url::ALL {
            let Some(watch) = self.watches.get_mut(type_url) else {
                continue;
            };
            let (before, now) = (previous.of_type(type_url), self.snapshot.of_type(type_url));
            let Some(sent) = &mut watch.sent else {
                out.extend(self.respond(type_url));
                continue;
            };
            if sent.version == now.version {
                continue;
            }
            // A stream running the last version, subscribed by name to
            // resources the new one leaves as they were, has nothing to
            // learn: it is not sent the new version and counts as running it
            // (EDS, when a cluster it does not use changes).
            if sent.acked && sent.version == before.version && watch.names.unchanged(before, now) {
                sent.version.clone_from(&now.version);
                peer.ack(type_url, &sent.version, &sent.nonce);
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
            decoded(self.on_snapshot(snapshot, &peer()))
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

    #[test]
    fn a_named_subscriber_is_not_sent_a_version_that_changes_none_of_its_resources() {
        let nodes = Nodes::default();
        let mut peer = Peer::new(nodes.clone());
        peer.saw_request(Some(&Node {
            id: "n".into(),
            ..Default::default()
        }));
        let mut stream = Sotw::new(snapshot(&[
            (type_url::ENDPOINT, "a", "1"),
            (type_url::ENDPOINT, "b", "1"),
        ]));
        let sent = stream.request(request(type_url::ENDPOINT, &["a"], ""), &peer);
        // Not yet ACKed: a new version is sent even if `a` is the same.
        let resent = decoded(stream.on_snapshot(
            snapshot(&[
                (type_url::ENDPOINT, "a", "1"),
                (type_url::ENDPOINT, "b", "2"),
            ]),
            &peer,
        ));
        assert_eq!(names(&resent[0]), ["a=1"]);
        assert_ne!(resent[0].nonce, sent[0].nonce);
        assert!(
            stream
                .request(request(type_url::ENDPOINT, &["a"], &resent[0].nonce), &peer)
                .is_empty()
        );
        // ACKed: only `b` changes, so nothing is sent, and the node counts
        // as running the new version.
        let only_b = snapshot(&[
            (type_url::ENDPOINT, "a", "1"),
            (type_url::ENDPOINT, "b", "3"),
        ]);
        let version = only_b.of_type(type_url::ENDPOINT).version.clone();
        assert!(stream.on_snapshot(only_b, &peer).is_empty());
        assert!(nodes.acked("n", type_url::ENDPOINT, &version));
        // `a` changes: sent.
        let out = decoded(stream.on_snapshot(
            snapshot(&[
                (type_url::ENDPOINT, "a", "2"),
                (type_url::ENDPOINT, "b", "3"),
            ]),
            &peer,
        ));
        assert_eq!(names(&out[0]), ["a=2"]);
    }

    #[test]
    fn dropping_names_from_an_up_to_date_subscription_needs_no_answer() {
        let peer = peer();
        let mut stream = Sotw::new(snapshot(&[
            (type_url::ENDPOINT, "a", "1"),
            (type_url::ENDPOINT, "b", "1"),
        ]));
        let sent = stream.request(request(type_url::ENDPOINT, &["a", "b"], ""), &peer);
        assert_eq!(names(&sent[0]), ["a=1", "b=1"]);
        // The ACK that drops `b`.
        assert!(
            stream
                .request(request(type_url::ENDPOINT, &["a"], &sent[0].nonce), &peer)
                .is_empty()
        );
        // Asking for one more is answered.
        let out = stream.request(
            request(type_url::ENDPOINT, &["a", "b"], &sent[0].nonce),
            &peer,
        );
        assert_eq!(names(&out[0]), ["a=1", "b=1"]);
        // Dropping one while rejecting the version is answered.
        let mut nack = request(type_url::ENDPOINT, &["b"], &out[0].nonce);
        nack.error_detail = Some(Status {
            code: 3,
            message: "no".into(),
            details: Vec::new(),
        });
        let out = stream.request(nack, &peer);
        assert_eq!(names(&out[0]), ["b=1"]);
    }

    #[test]
    fn a_subscription_is_the_same_whatever_the_order_or_repeats_of_its_names() {
        let owned = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let these = Names::of(type_url::ENDPOINT, owned(&["a", "b"]));
        assert!(these.asked_by(type_url::ENDPOINT, &owned(&["b", "a"])));
        assert!(these.asked_by(type_url::ENDPOINT, &owned(&["a", "b", "a"])));
        assert!(!these.asked_by(type_url::ENDPOINT, &owned(&["a", "a"])));
        assert!(!these.asked_by(type_url::ENDPOINT, &owned(&["a", "b", "c"])));
        assert!(!these.asked_by(type_url::ENDPOINT, &owned(&["a", "b", "*"])));
        assert!(!these.asked_by(type_url::ENDPOINT, &[]));

        let all = Names::of(type_url::CLUSTER, Vec::new());
        assert!(all.asked_by(type_url::CLUSTER, &[]));
        assert!(all.asked_by(type_url::CLUSTER, &owned(&["*"])));
        assert!(!all.asked_by(type_url::CLUSTER, &owned(&["a"])));
        // Nothing, for a type not wildcard by default, is not everything.
        assert!(!Names::These(BTreeSet::new()).asked_by(type_url::ENDPOINT, &owned(&["*"])));
        assert!(Names::These(BTreeSet::new()).asked_by(type_url::ENDPOINT, &[]));
    }
}
