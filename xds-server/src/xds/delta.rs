//! Incremental xDS (`DeltaAggregatedResources`): the stream remembers which
//! version of each resource Envoy has and sends only what is new or changed,
//! and the names of what went away.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};

use super::nodes::Peer;
use super::wire::Encoded;
use super::{Nonces, Protocol, Response, served_type, wildcard_by_default};
use crate::snapshot::{Snapshot, type_url};

/// One stream's state.
#[derive(Debug)]
pub(super) struct Delta {
    snapshot: Arc<Snapshot>,
    watches: BTreeMap<&'static str, Watch>,
    nonces: Nonces,
}

/// One type on one stream.
#[derive(Debug, Default)]
struct Watch {
    /// Subscribed to every resource of the type.
    wildcard: bool,
    /// Subscribed to these by name.
    names: BTreeSet<String>,
    /// What Envoy has, but for `exceptions`: what it subscribes to of the
    /// snapshot it was last brought up to date with. Taken to have been
    /// received when sent, not when ACKed: a rejected version is not sent
    /// again, a newer one is. Every stream that was sent the same snapshot
    /// holds the same one, instead of a map of names and versions each.
    sent_from: Option<Arc<Snapshot>>,
    /// Names whose version Envoy has is not `sent_from`'s: the version it
    /// said it has (reconnecting), or `None` for one to send again (it
    /// subscribed anew).
    exceptions: BTreeMap<String, Option<String>>,
    /// Names subscribed to that the snapshot lacks and Envoy has been told
    /// so (in `removed_resources`), so it stops waiting for them.
    absent: BTreeSet<String>,
    /// The last response.
    sent: Option<Sent>,
}

#[derive(Debug)]
struct Sent {
    /// The type's version it brought Envoy up to.
    version: String,
    nonce: String,
    /// Envoy accepted it.
    acked: bool,
}

impl Watch {
    fn first(type_url: &str, request: &DeltaDiscoveryRequest) -> Self {
        let subscribe = &request.resource_names_subscribe;
        let wildcard = subscribe.iter().any(|n| n == "*")
            || (subscribe.is_empty() && wildcard_by_default(type_url));
        Self {
            wildcard,
            names: subscribe.iter().filter(|n| *n != "*").cloned().collect(),
            exceptions: request
                .initial_resource_versions
                .iter()
                .map(|(name, version)| (name.clone(), Some(version.clone())))
                .collect(),
            ..Self::default()
        }
    }

    fn subscribe(&mut self, request: &DeltaDiscoveryRequest) {
        for name in &request.resource_names_subscribe {
            if name == "*" {
                if !self.wildcard {
                    // Envoy dropped what it had only by the wildcard: what
                    // it still has is sent again rather than tracked apart.
                    self.sent_from = None;
                }
                self.wildcard = true;
            } else {
                // A name subscribed to again is sent again.
                self.names.insert(name.clone());
                self.exceptions.insert(name.clone(), None);
                self.absent.remove(name);
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                self.wildcard = false;
            } else {
                self.names.remove(name);
                self.absent.remove(name);
            }
        }
    }

    fn subscribed(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// The version of `name` Envoy has, if any (subscribed or not).
    fn known(&self, type_url: &str, name: &str) -> Option<&str> {
        if let Some(exception) = self.exceptions.get(name) {
            return exception.as_deref();
        }
        let resources = self.sent_from.as_ref()?.of_type(type_url);
        resources.items.get(name).map(|r| r.version.as_str())
    }

    /// The names Envoy has and still subscribes to.
    fn held<'a>(&'a self, type_url: &str) -> impl Iterator<Item = &'a str> {
        let from_snapshot = self
            .sent_from
            .iter()
            .flat_map(move |snapshot| snapshot.of_type(type_url).items.keys())
            .filter(|name| !self.exceptions.contains_key(*name));
        let excepted = self
            .exceptions
            .iter()
            .filter(|(_, version)| version.is_some())
            .map(|(name, _)| name);
        from_snapshot
            .chain(excepted)
            .map(String::as_str)
            .filter(|name| self.subscribed(name))
    }

    /// What Envoy lacks of `snapshot`'s resources of `type_url`, and what
    /// it has that is gone; from then on, Envoy is taken to have what was sent.
    fn diff(&mut self, type_url: &str, snapshot: &Arc<Snapshot>) -> (Vec<Bytes>, Vec<String>) {
        let resources = snapshot.of_type(type_url);
        let mut removed: BTreeSet<String> = self
            .held(type_url)
            .filter(|name| !resources.items.contains_key(*name))
            .map(str::to_owned)
            .collect();
        for name in &self.names {
            if !resources.items.contains_key(name) && self.absent.insert(name.clone()) {
                removed.insert(name.clone());
            }
        }
        self.absent
            .retain(|name| self.names.contains(name) && !resources.items.contains_key(name));

        let changed = resources
            .items
            .values()
            .filter(|r| {
                self.subscribed(&r.name) && self.known(type_url, &r.name) != Some(&r.version)
            })
            .map(|r| r.wire.delta.clone())
            .collect();
        self.sent_from = Some(Arc::clone(snapshot));
        self.exceptions.clear();
        (changed, removed.into_iter().collect())
    }
}

impl Delta {
    pub(super) fn new(snapshot: Arc<Snapshot>) -> Self {
        Self {
            snapshot,
            watches: BTreeMap::new(),
            nonces: Nonces::default(),
        }
    }

    /// The difference between the current snapshot and what Envoy has of
    /// `type_url`, if any. A first request is answered even when Envoy has it
    /// all (after a reconnect, say), so that a wildcard subscriber stops
    /// waiting and every node's ACK of the current version is on record.
    ///
    /// A stream that accepted its last response and lacks nothing of a new
    /// version (it subscribes to resources the version leaves as they were)
    /// counts as running it, as in the state of the world.
    fn respond(&mut self, type_url: &'static str, peer: &Peer) -> Option<Response> {
        let watch = self.watches.get_mut(type_url)?;
        let (changed, removed) = watch.diff(type_url, &self.snapshot);
        let resources = self.snapshot.of_type(type_url);
        let first_answer = watch.sent.is_none() && (watch.wildcard || !watch.names.is_empty());
        if changed.is_empty() && removed.is_empty() && !first_answer {
            if let Some(sent) = watch.sent.as_mut().filter(|s| s.acked)
                && sent.version != resources.version
            {
                sent.version.clone_from(&resources.version);
                peer.ack(type_url, &sent.version, &sent.nonce);
            }
            return None;
        }
        let nonce = self.nonces.next();
        watch.sent = Some(Sent {
            version: resources.version.clone(),
            nonce: nonce.clone(),
            acked: false,
        });
        let own = DeltaDiscoveryResponse {
            system_version_info: resources.version.clone(),
            type_url: type_url.to_owned(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        };
        Some(Encoded::new(type_url, &own, changed))
    }
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    fn on_request(&mut self, request: DeltaDiscoveryRequest, peer: &Peer) -> Vec<Response> {
        let Some(type_url) = served_type(&request.type_url) else {
            tracing::debug!(
                node = %peer.id(), type_url = %request.type_url,
                "request for a type not served; ignored"
            );
            return Vec::new();
        };
        let Some(watch) = self.watches.get_mut(type_url) else {
            self.watches
                .insert(type_url, Watch::first(type_url, &request));
            return self.respond(type_url, peer).into_iter().collect();
        };
        if !request.response_nonce.is_empty() {
            match &mut watch.sent {
                Some(sent) if sent.nonce == request.response_nonce => {
                    sent.acked = request.error_detail.is_none();
                    match &request.error_detail {
                        None => peer.ack(type_url, &sent.version, &sent.nonce),
                        Some(error) => {
                            peer.nack(type_url, &sent.version, &sent.nonce, &error.message);
                        }
                    }
                }
                // Subscriptions change by difference, so unlike in the state
                // of the world a stale request's changes still count.
                _ => tracing::debug!(
                    node = %peer.id(), type_url, nonce = %request.response_nonce, "stale nonce"
                ),
            }
        }
        watch.subscribe(&request);
        self.respond(type_url, peer).into_iter().collect()
    }

    fn on_snapshot(&mut self, snapshot: Arc<Snapshot>, peer: &Peer) -> Vec<Response> {
        self.snapshot = snapshot;
        type_url::ALL
            .into_iter()
            .filter_map(|type_url| self.respond(type_url, peer))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf::Any;

    use super::*;
    use crate::snapshot::Resource;
    use crate::xds::Nodes;

    fn snapshot(resources: &[(&str, &str, &str)]) -> Arc<Snapshot> {
        Arc::new(Snapshot::new(resources.iter().map(|(t, n, c)| {
            let body = Any {
                type_url: (*t).into(),
                value: c.as_bytes().to_vec(),
            };
            Resource::new(*n, body)
        })))
    }

    fn request(
        type_url: &str,
        subscribe: &[&str],
        unsubscribe: &[&str],
        nonce: &str,
    ) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_subscribe: subscribe.iter().map(|n| n.to_string()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|n| n.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn names(response: &DeltaDiscoveryResponse) -> Vec<&str> {
        response.resources.iter().map(|r| r.name.as_str()).collect()
    }

    /// The protocol's answers, as Envoy decodes them.
    trait Decoded {
        fn request(
            &mut self,
            request: DeltaDiscoveryRequest,
            peer: &Peer,
        ) -> Vec<DeltaDiscoveryResponse>;
        fn snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DeltaDiscoveryResponse>;
    }

    impl Decoded for Delta {
        fn request(
            &mut self,
            request: DeltaDiscoveryRequest,
            peer: &Peer,
        ) -> Vec<DeltaDiscoveryResponse> {
            decoded(self.on_request(request, peer))
        }
        fn snapshot(&mut self, snapshot: Arc<Snapshot>) -> Vec<DeltaDiscoveryResponse> {
            decoded(self.on_snapshot(snapshot, &peer()))
        }
    }

    fn decoded(out: Vec<Response>) -> Vec<DeltaDiscoveryResponse> {
        out.into_iter().map(|r| r.unwrap().decode()).collect()
    }

    fn peer() -> Peer {
        let mut peer = Peer::new(Nodes::default());
        peer.saw_request(None);
        peer
    }

    #[test]
    fn named_subscriptions_learn_what_is_missing_once() {
        let peer = peer();
        let mut stream = Delta::new(snapshot(&[(type_url::ENDPOINT, "a", "1")]));
        // Nothing subscribed: nothing to say.
        assert!(
            stream
                .request(request(type_url::ENDPOINT, &[], &[], ""), &peer)
                .is_empty()
        );
        let out = stream.request(request(type_url::ENDPOINT, &["a", "zz"], &[], ""), &peer);
        assert_eq!(names(&out[0]), ["a"]);
        assert_eq!(out[0].removed_resources, ["zz"]);
        // A snapshot that does not change them says nothing more.
        assert!(
            stream
                .snapshot(snapshot(&[
                    (type_url::ENDPOINT, "a", "1"),
                    (type_url::CLUSTER, "c", "1")
                ]))
                .is_empty()
        );
        // Until it appears.
        let out = stream.snapshot(snapshot(&[
            (type_url::ENDPOINT, "a", "1"),
            (type_url::ENDPOINT, "zz", "1"),
        ]));
        assert_eq!(names(&out[0]), ["zz"]);
        assert!(out[0].removed_resources.is_empty());
    }

    #[test]
    fn a_reconnect_that_has_everything_is_still_answered_once() {
        // After weir restarts, Envoy subscribes with what it has: the answer is
        // empty, but it lets Envoy ACK, so the node shows as in sync.
        let peer = peer();
        let snap = snapshot(&[(type_url::EXTENSION_CONFIG, "weir_filter", "1")]);
        let version = snap.of_type(type_url::EXTENSION_CONFIG).items["weir_filter"]
            .version
            .clone();
        let mut stream = Delta::new(snap);
        let mut first = request(type_url::EXTENSION_CONFIG, &["weir_filter"], &[], "");
        first
            .initial_resource_versions
            .insert("weir_filter".into(), version);
        let out = stream.request(first, &peer);
        assert_eq!(out.len(), 1);
        assert!(out[0].resources.is_empty() && out[0].removed_resources.is_empty());
    }

    #[test]
    fn unsubscribing_and_resubscribing() {
        let peer = peer();
        let mut stream = Delta::new(snapshot(&[
            (type_url::ENDPOINT, "a", "1"),
            (type_url::ENDPOINT, "b", "1"),
        ]));
        let out = stream.request(request(type_url::ENDPOINT, &["a", "b"], &[], ""), &peer);
        assert_eq!(names(&out[0]), ["a", "b"]);
        // Unsubscribing needs no answer, and the next change of `b` is not sent.
        assert!(
            stream
                .request(
                    request(type_url::ENDPOINT, &[], &["b"], &out[0].nonce),
                    &peer
                )
                .is_empty()
        );
        assert!(
            stream
                .snapshot(snapshot(&[
                    (type_url::ENDPOINT, "a", "1"),
                    (type_url::ENDPOINT, "b", "2")
                ]))
                .is_empty()
        );
        // Subscribing again sends it again.
        let out = stream.request(request(type_url::ENDPOINT, &["b"], &[], ""), &peer);
        assert_eq!(names(&out[0]), ["b"]);
    }

    #[test]
    fn wildcard_with_everything_known_is_answered_once() {
        let peer = peer();
        let snap = snapshot(&[(type_url::CLUSTER, "a", "1")]);
        let version = snap.of_type(type_url::CLUSTER).items["a"].version.clone();
        let mut stream = Delta::new(snap);
        let mut first = request(type_url::CLUSTER, &["*"], &[], "");
        first.initial_resource_versions.insert("a".into(), version);
        let out = stream.request(first, &peer);
        assert_eq!(out.len(), 1);
        assert!(out[0].resources.is_empty() && out[0].removed_resources.is_empty());
        // Leaving the wildcard drops everything, silently: Envoy knows.
        assert!(
            stream
                .request(
                    request(type_url::CLUSTER, &[], &["*"], &out[0].nonce),
                    &peer
                )
                .is_empty()
        );
        assert!(
            stream
                .snapshot(snapshot(&[(type_url::CLUSTER, "a", "2")]))
                .is_empty()
        );
    }

    #[test]
    fn what_goes_away_is_removed_and_a_wildcard_taken_again_is_sent_again() {
        let peer = peer();
        let mut stream = Delta::new(snapshot(&[
            (type_url::CLUSTER, "a", "1"),
            (type_url::CLUSTER, "b", "1"),
        ]));
        let out = stream.request(request(type_url::CLUSTER, &["*"], &[], ""), &peer);
        assert_eq!(names(&out[0]), ["a", "b"]);
        // `b` goes, `a` changes: only those are said.
        let out = stream.snapshot(snapshot(&[(type_url::CLUSTER, "a", "2")]));
        assert_eq!(names(&out[0]), ["a"]);
        assert_eq!(out[0].removed_resources, ["b"]);
        // The same again: nothing.
        assert!(
            stream
                .snapshot(snapshot(&[(type_url::CLUSTER, "a", "2")]))
                .is_empty()
        );
        // Leaving the wildcard and taking it again: Envoy dropped `a`.
        let nonce = out[0].nonce.clone();
        assert!(
            stream
                .request(request(type_url::CLUSTER, &[], &["*"], &nonce), &peer)
                .is_empty()
        );
        let out = stream.request(request(type_url::CLUSTER, &["*"], &[], &nonce), &peer);
        assert_eq!(names(&out[0]), ["a"]);
    }

    #[test]
    fn a_reconnect_with_an_older_version_is_sent_the_current_one() {
        let peer = peer();
        let mut stream = Delta::new(snapshot(&[
            (type_url::CLUSTER, "a", "2"),
            (type_url::CLUSTER, "b", "1"),
        ]));
        let b_version = stream.snapshot.of_type(type_url::CLUSTER).items["b"]
            .version
            .clone();
        let mut first = request(type_url::CLUSTER, &["*"], &[], "");
        first
            .initial_resource_versions
            .insert("a".into(), "old".into());
        first
            .initial_resource_versions
            .insert("b".into(), b_version);
        first
            .initial_resource_versions
            .insert("gone".into(), "1".into());
        let out = stream.request(first, &peer);
        assert_eq!(names(&out[0]), ["a"]);
        assert_eq!(out[0].removed_resources, ["gone"]);
    }

    #[test]
    fn a_stream_that_lacks_nothing_of_a_new_version_counts_as_running_it() {
        let nodes = Nodes::default();
        let mut peer = Peer::new(nodes.clone());
        peer.saw_request(Some(&Node {
            id: "n".into(),
            ..Default::default()
        }));
        let mut stream = Delta::new(snapshot(&[
            (type_url::ENDPOINT, "a", "1"),
            (type_url::ENDPOINT, "b", "1"),
        ]));
        let out = stream.request(request(type_url::ENDPOINT, &["a"], &[], ""), &peer);
        assert!(
            stream
                .request(request(type_url::ENDPOINT, &[], &[], &out[0].nonce), &peer)
                .is_empty()
        );
        let only_b = snapshot(&[
            (type_url::ENDPOINT, "a", "1"),
            (type_url::ENDPOINT, "b", "2"),
        ]);
        let version = only_b.of_type(type_url::ENDPOINT).version.clone();
        assert!(stream.on_snapshot(only_b, &peer).is_empty());
        assert!(nodes.acked("n", type_url::ENDPOINT, &version));
    }
}
