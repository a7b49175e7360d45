//! Target `ads`: one ADS stream, state of the world or incremental, fed a
//! sequence of requests (structured, so that they name the types, resources
//! and nonces the stream knows, or raw protobuf) and new snapshots, as an
//! Envoy and the controller would.
//!
//! Properties: nothing panics; every answer decodes as the response of its
//! flavour, for a type Weir serves, with a nonce never used before on the
//! stream; every resource it carries is the current snapshot's version of
//! it (a stream never sends a stale resource); an incremental response
//! never both sends and removes a name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use prost::Message;
use weir::snapshot::{Resource, Snapshot, type_url};
use weir::xds::fuzzing::{Request, Stream};

/// At most this many steps per input, so that one input stays fast.
const MAX_STEPS: usize = 64;

/// Resource names are drawn from a small pool, so that requests name what
/// snapshots hold.
const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

#[derive(Arbitrary, Debug)]
struct Input {
    delta: bool,
    first: Vec<Item>,
    steps: Vec<Step>,
}

/// A resource of a snapshot: its type, its name and a content.
#[derive(Arbitrary, Debug)]
struct Item {
    kind: u8,
    name: u8,
    content: u8,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Sotw {
        type_url: TypeUrl,
        names: Vec<Name>,
        nonce: Nonce,
        version: Option<u8>,
        nack: Option<String>,
        node: Option<String>,
    },
    Delta {
        type_url: TypeUrl,
        subscribe: Vec<Name>,
        unsubscribe: Vec<Name>,
        initial: Vec<(Name, String)>,
        nonce: Nonce,
        nack: Option<String>,
        node: Option<String>,
    },
    Snapshot(Vec<Item>),
    RawSotw(Vec<u8>),
    RawDelta(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum TypeUrl {
    Served(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Pool(u8),
    Wildcard,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Nonce {
    Empty,
    /// The last sent for the request's type.
    Latest,
    /// Any sent before on the stream.
    Earlier(u8),
    Other(String),
}

pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut current = snapshot(&input.first);
    let mut stream = if input.delta {
        Stream::delta(current.clone())
    } else {
        Stream::sotw(current.clone())
    };
    let mut nonces = Nonces::default();
    for step in input.steps.into_iter().take(MAX_STEPS) {
        let answers = match step {
            Step::Snapshot(items) => {
                current = snapshot(&items);
                stream.snapshot(current.clone())
            }
            Step::RawSotw(bytes) => match DiscoveryRequest::decode(bytes.as_slice()) {
                Ok(request) => stream.request(Request::Sotw(request)),
                Err(_) => continue,
            },
            Step::RawDelta(bytes) => match DeltaDiscoveryRequest::decode(bytes.as_slice()) {
                Ok(request) => stream.request(Request::Delta(request)),
                Err(_) => continue,
            },
            Step::Sotw {
                type_url,
                names,
                nonce,
                version,
                nack,
                node,
            } => {
                let type_url = type_url.resolve();
                let request = DiscoveryRequest {
                    version_info: version.map(|v| v.to_string()).unwrap_or_default(),
                    node: node.map(node_named),
                    resource_names: names.iter().map(Name::resolve).collect(),
                    response_nonce: nonces.pick(&type_url, &nonce),
                    error_detail: nack.map(status),
                    type_url,
                    ..Default::default()
                };
                stream.request(Request::Sotw(request))
            }
            Step::Delta {
                type_url,
                subscribe,
                unsubscribe,
                initial,
                nonce,
                nack,
                node,
            } => {
                let type_url = type_url.resolve();
                let request = DeltaDiscoveryRequest {
                    node: node.map(node_named),
                    resource_names_subscribe: subscribe.iter().map(Name::resolve).collect(),
                    resource_names_unsubscribe: unsubscribe.iter().map(Name::resolve).collect(),
                    initial_resource_versions: initial
                        .iter()
                        .map(|(name, version)| (name.resolve(), version.clone()))
                        .collect(),
                    response_nonce: nonces.pick(&type_url, &nonce),
                    error_detail: nack.map(status),
                    type_url,
                    ..Default::default()
                };
                stream.request(Request::Delta(request))
            }
        };
        for answer in answers {
            let bytes = answer.expect("no response is too large here");
            let (type_url, nonce) = if input.delta {
                check_delta(&bytes, &current)
            } else {
                check_sotw(&bytes, &current)
            };
            nonces.sent(type_url, nonce);
        }
    }
}

fn check_sotw(bytes: &[u8], current: &Snapshot) -> (String, String) {
    let response = DiscoveryResponse::decode(bytes).expect("a DiscoveryResponse");
    assert!(type_url::ALL.contains(&response.type_url.as_str()));
    assert_eq!(
        response.version_info,
        current.of_type(&response.type_url).version,
        "a response carries the current version"
    );
    for any in &response.resources {
        assert_current(current, &response.type_url, any);
    }
    (response.type_url, response.nonce)
}

fn check_delta(bytes: &[u8], current: &Snapshot) -> (String, String) {
    let response = DeltaDiscoveryResponse::decode(bytes).expect("a DeltaDiscoveryResponse");
    assert!(type_url::ALL.contains(&response.type_url.as_str()));
    let mut sent = BTreeSet::new();
    for resource in &response.resources {
        let any = resource.resource.as_ref().expect("a resource has a body");
        assert_current(current, &response.type_url, any);
        sent.insert(resource.name.as_str());
    }
    for removed in &response.removed_resources {
        assert!(
            !sent.contains(removed.as_str()),
            "{removed} sent and removed"
        );
    }
    (response.type_url, response.nonce)
}

/// `any` is the body the current snapshot holds under its name.
fn assert_current(current: &Snapshot, type_url: &str, any: &Any) {
    assert_eq!(any.type_url, type_url, "a resource of the response's type");
    let text = String::from_utf8_lossy(&any.value);
    let name = text.split('=').next().unwrap_or_default();
    let held = current
        .of_type(type_url)
        .items
        .get(name)
        .unwrap_or_else(|| panic!("{type_url} {name} sent but not in the snapshot"));
    assert_eq!(
        &held.body, any,
        "{name} sent as the current snapshot has it"
    );
}

/// The nonces the stream sent, per type and in order.
#[derive(Default)]
struct Nonces {
    all: Vec<String>,
    latest: BTreeMap<String, String>,
}

impl Nonces {
    fn sent(&mut self, type_url: String, nonce: String) {
        assert!(!nonce.is_empty(), "a response has a nonce");
        assert!(!self.all.contains(&nonce), "nonce {nonce} used twice");
        self.all.push(nonce.clone());
        self.latest.insert(type_url, nonce);
    }

    fn pick(&self, type_url: &str, nonce: &Nonce) -> String {
        match nonce {
            Nonce::Empty => String::new(),
            Nonce::Latest => self.latest.get(type_url).cloned().unwrap_or_default(),
            Nonce::Earlier(i) if !self.all.is_empty() => {
                self.all[*i as usize % self.all.len()].clone()
            }
            Nonce::Earlier(_) => String::new(),
            Nonce::Other(text) => text.clone(),
        }
    }
}

impl TypeUrl {
    fn resolve(&self) -> String {
        match self {
            Self::Served(i) => type_url::ALL[*i as usize % type_url::ALL.len()].to_owned(),
            Self::Other(text) => text.clone(),
        }
    }
}

impl Name {
    fn resolve(&self) -> String {
        match self {
            Self::Pool(i) => NAMES[*i as usize % NAMES.len()].to_owned(),
            Self::Wildcard => "*".to_owned(),
            Self::Other(text) => text.clone(),
        }
    }
}

fn snapshot(items: &[Item]) -> Arc<Snapshot> {
    let mut resources = BTreeMap::new();
    for item in items {
        let type_url = type_url::ALL[item.kind as usize % type_url::ALL.len()];
        let name = NAMES[item.name as usize % NAMES.len()];
        resources.insert((type_url, name), item.content);
    }
    Arc::new(Snapshot::new(resources.into_iter().map(
        |((type_url, name), content)| {
            let body = Any {
                type_url: type_url.to_owned(),
                value: format!("{name}={content}").into_bytes(),
            };
            Resource::new(name, body)
        },
    )))
}

fn node_named(id: String) -> Node {
    Node {
        id,
        cluster: "fuzz".into(),
        ..Default::default()
    }
}

fn status(message: String) -> Status {
    Status {
        code: 3,
        message,
        ..Default::default()
    }
}
