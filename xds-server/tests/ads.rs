//! The ADS server over real gRPC: a tonic server on loopback, and a tonic
//! client playing Envoy's part of the protocol, state-of-the-world and delta.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{Node, TypedExtensionConfig};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use envoy_types::util::pack_any;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, timeout};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use weir::snapshot::type_url::{CLUSTER, ENDPOINT, EXTENSION_CONFIG, LISTENER, ROUTE};
use weir::snapshot::{Resource, Snapshot};
use weir::xds::{AdsServer, Nodes};

const PATIENCE: Duration = Duration::from_secs(10);

// ---- resources ----------------------------------------------------------

/// A resource of `type_url` named `name`, whose content (and so version)
/// depends on `variant`.
fn resource(type_url: &str, name: &str, variant: u32) -> Resource {
    let tag = format!("v{variant}");
    let body = match type_url {
        CLUSTER => pack_any(Cluster {
            name: name.into(),
            alt_stat_name: tag,
            ..Default::default()
        }),
        ENDPOINT => pack_any(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                priority: variant,
                ..Default::default()
            }],
            ..Default::default()
        }),
        LISTENER => pack_any(Listener {
            name: name.into(),
            stat_prefix: tag,
            ..Default::default()
        }),
        ROUTE => pack_any(RouteConfiguration {
            name: name.into(),
            internal_only_headers: vec![tag],
            ..Default::default()
        }),
        EXTENSION_CONFIG => pack_any(TypedExtensionConfig {
            name: name.into(),
            typed_config: Some(Any {
                type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
                value: tag.into_bytes(),
            }),
        }),
        other => panic!("no such type {other}"),
    };
    Resource::new(name, body)
}

fn snapshot(resources: &[(&str, &str, u32)]) -> Snapshot {
    Snapshot::new(resources.iter().map(|(t, n, v)| resource(t, n, *v)))
}

/// The name inside a packed resource.
fn name_of(any: &Any) -> String {
    let bytes = any.value.as_slice();
    match any.type_url.as_str() {
        CLUSTER => Cluster::decode(bytes).unwrap().name,
        ENDPOINT => ClusterLoadAssignment::decode(bytes).unwrap().cluster_name,
        LISTENER => Listener::decode(bytes).unwrap().name,
        ROUTE => RouteConfiguration::decode(bytes).unwrap().name,
        EXTENSION_CONFIG => TypedExtensionConfig::decode(bytes).unwrap().name,
        other => panic!("unexpected type {other}"),
    }
}

fn names(response: &DiscoveryResponse) -> Vec<String> {
    response.resources.iter().map(name_of).collect()
}

fn delta_names(response: &DeltaDiscoveryResponse) -> Vec<String> {
    response
        .resources
        .iter()
        .map(|r| {
            let name = name_of(r.resource.as_ref().unwrap());
            assert_eq!(name, r.name);
            name
        })
        .collect()
}

// ---- the server and the client -------------------------------------------

struct Fixture {
    publish: watch::Sender<Arc<Snapshot>>,
    nodes: Nodes,
    client: AggregatedDiscoveryServiceClient<Channel>,
}

async fn start(initial: Snapshot) -> Fixture {
    let (publish, snapshots) = watch::channel(Arc::new(initial));
    let nodes = Nodes::default();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = incoming.local_addr().unwrap();
    let service = AdsServer::new(snapshots, nodes.clone()).into_service();
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    let client = AggregatedDiscoveryServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    Fixture {
        publish,
        nodes,
        client,
    }
}

impl Fixture {
    fn publish(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let snapshot = Arc::new(snapshot);
        self.publish.send_replace(snapshot.clone());
        snapshot
    }

    async fn sotw(&self, node: &str) -> SotwStream {
        let (requests, outbound) = mpsc::channel(16);
        let responses = self
            .client
            .clone()
            .stream_aggregated_resources(ReceiverStream::new(outbound))
            .await
            .unwrap()
            .into_inner();
        SotwStream {
            node: node.into(),
            requests,
            responses,
        }
    }

    async fn delta(&self, node: &str) -> DeltaStream {
        let (requests, outbound) = mpsc::channel(16);
        let responses = self
            .client
            .clone()
            .delta_aggregated_resources(ReceiverStream::new(outbound))
            .await
            .unwrap()
            .into_inner();
        DeltaStream {
            node: node.into(),
            requests,
            responses,
        }
    }
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        ..Default::default()
    })
}

fn nack(message: &str) -> Option<Status> {
    Some(Status {
        code: 13,
        message: message.into(),
        details: Vec::new(),
    })
}

/// Polls `check` until it holds, failing after [`PATIENCE`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(5)).await;
    }
}

/// A state-of-the-world stream, as Envoy drives one.
struct SotwStream {
    node: String,
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
}

impl SotwStream {
    /// A first request for `type_url` (with the node, as Envoy's first one).
    async fn subscribe(&self, type_url: &str, names: &[&str]) {
        self.send(DiscoveryRequest {
            node: node(&self.node),
            type_url: type_url.into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }

    /// Accepts `response` (without repeating the node, as Envoy may),
    /// keeping or changing the names asked for.
    async fn ack(&self, response: &DiscoveryResponse, names: &[&str]) {
        self.send(DiscoveryRequest {
            version_info: response.version_info.clone(),
            type_url: response.type_url.clone(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    /// Rejects `response`, having accepted `kept` before.
    async fn nack(&self, response: &DiscoveryResponse, kept: &str, message: &str) {
        self.send(DiscoveryRequest {
            version_info: kept.into(),
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            error_detail: nack(message),
            ..Default::default()
        })
        .await;
    }

    async fn send(&self, request: DiscoveryRequest) {
        self.requests.send(request).await.unwrap();
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        timeout(PATIENCE, self.responses.message())
            .await
            .expect("a response in time")
            .expect("a healthy stream")
            .expect("an open stream")
    }
}

/// A delta stream, as Envoy drives one.
struct DeltaStream {
    node: String,
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
}

impl DeltaStream {
    async fn subscribe(&self, type_url: &str, names: &[&str], initial: &[(&str, &str)]) {
        self.send(DeltaDiscoveryRequest {
            node: node(&self.node),
            type_url: type_url.into(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            initial_resource_versions: initial
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .await;
    }

    async fn answer(&self, response: &DeltaDiscoveryResponse, error: Option<&str>) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            error_detail: error.and_then(nack),
            ..Default::default()
        })
        .await;
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.requests.send(request).await.unwrap();
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        timeout(PATIENCE, self.responses.message())
            .await
            .expect("a response in time")
            .expect("a healthy stream")
            .expect("an open stream")
    }
}

// ---- state of the world --------------------------------------------------

#[tokio::test]
async fn sotw_wildcard_clusters_all_sent_and_the_ack_recorded() {
    let initial = snapshot(&[
        (CLUSTER, "a", 1),
        (CLUSTER, "b", 1),
        (CLUSTER, "c", 1),
        (ENDPOINT, "a", 1),
    ]);
    let version = initial.of_type(CLUSTER).version.clone();
    let fixture = start(initial).await;
    let mut envoy = fixture.sotw("envoy-1").await;

    envoy.subscribe(CLUSTER, &[]).await;
    let clusters = envoy.recv().await;
    assert_eq!(clusters.type_url, CLUSTER);
    assert_eq!(clusters.version_info, version);
    assert_eq!(names(&clusters), ["a", "b", "c"]);
    assert!(!clusters.nonce.is_empty());
    assert!(!fixture.nodes.acked("envoy-1", CLUSTER, &version));

    envoy.ack(&clusters, &[]).await;
    eventually("the ACK", || {
        fixture.nodes.acked("envoy-1", CLUSTER, &version)
    })
    .await;
    let status = fixture.nodes.status();
    assert_eq!(status["envoy-1"]["streams"], 1);
    assert_eq!(
        status["envoy-1"]["acked"][CLUSTER]["nonce"],
        clusters.nonce.as_str()
    );
    assert!(status["envoy-1"]["last_nack"].is_null());

    drop(envoy);
    eventually("the stream to close", || {
        fixture.nodes.status()["envoy-1"]["streams"] == 0
    })
    .await;
}

#[tokio::test]
async fn sotw_nack_recorded_and_the_rejected_version_not_resent() {
    let fixture = start(snapshot(&[(CLUSTER, "a", 1), (ENDPOINT, "a", 1)])).await;
    let mut envoy = fixture.sotw("envoy-1").await;
    envoy.subscribe(CLUSTER, &[]).await;
    let rejected = envoy.recv().await;
    envoy.nack(&rejected, "", "cluster a: bad").await;

    // The server answers requests in order: if the NACK made it resend the
    // clusters, they would come before the endpoints asked for next.
    envoy.subscribe(ENDPOINT, &["a"]).await;
    let endpoints = envoy.recv().await;
    assert_eq!(endpoints.type_url, ENDPOINT);
    assert_eq!(names(&endpoints), ["a"]);

    let status = fixture.nodes.status();
    let last_nack = &status["envoy-1"]["last_nack"];
    assert_eq!(last_nack["type_url"], CLUSTER);
    assert_eq!(last_nack["version"], rejected.version_info.as_str());
    assert_eq!(last_nack["nonce"], rejected.nonce.as_str());
    assert_eq!(last_nack["message"], "cluster a: bad");
    assert!(last_nack["at"].as_str().unwrap().ends_with('Z'));
    assert!(
        !fixture
            .nodes
            .acked("envoy-1", CLUSTER, &rejected.version_info)
    );

    // A newer snapshot is still pushed, and only the type that changed.
    let next = fixture.publish(snapshot(&[(CLUSTER, "a", 2), (ENDPOINT, "a", 1)]));
    let clusters = envoy.recv().await;
    assert_eq!(clusters.type_url, CLUSTER);
    assert_eq!(clusters.version_info, next.of_type(CLUSTER).version);
    assert_ne!(clusters.version_info, rejected.version_info);
    envoy.ack(&clusters, &[]).await;
    eventually("the ACK of the fix", || {
        fixture
            .nodes
            .acked("envoy-1", CLUSTER, &next.of_type(CLUSTER).version)
    })
    .await;
}

#[tokio::test]
async fn sotw_new_snapshot_pushes_only_changed_types_in_order() {
    let all = |cluster, listener, ecds| {
        snapshot(&[
            (CLUSTER, "a", cluster),
            (ENDPOINT, "a", 1),
            (LISTENER, "l", listener),
            (ROUTE, "r", 1),
            (EXTENSION_CONFIG, "weir", ecds),
        ])
    };
    let fixture = start(all(1, 1, 1)).await;
    let mut envoy = fixture.sotw("envoy-1").await;
    let subscriptions = [
        (CLUSTER, &[][..]),
        (ENDPOINT, &["a"][..]),
        (LISTENER, &[][..]),
        (ROUTE, &["r"][..]),
        (EXTENSION_CONFIG, &["weir"][..]),
    ];
    let names_of = |type_url: &str| {
        subscriptions
            .iter()
            .find(|(t, _)| *t == type_url)
            .map(|(_, names)| *names)
            .unwrap()
    };
    // Subscribe as Envoy does, accepting each answer.
    for (type_url, names) in subscriptions {
        envoy.subscribe(type_url, names).await;
        let response = envoy.recv().await;
        assert_eq!(response.type_url, type_url);
        assert_eq!(response.resources.len(), 1, "{type_url}");
        envoy.ack(&response, names).await;
    }

    // Extension config, listener and cluster change: pushed clusters first,
    // the filter's configuration last. Had endpoints or routes been pushed,
    // they would be among these three.
    let next = fixture.publish(all(2, 2, 2));
    let mut pushed = Vec::new();
    for _ in 0..3 {
        let response = envoy.recv().await;
        let current = next.of_type(&response.type_url);
        assert_eq!(response.version_info, current.version);
        assert_eq!(response.resources.len(), 1);
        pushed.push(response.type_url.clone());
        envoy.ack(&response, names_of(&response.type_url)).await;
    }
    assert_eq!(pushed, [CLUSTER, LISTENER, EXTENSION_CONFIG]);

    // The same content again changes no version and pushes nothing: the
    // routes that change next are the next push.
    fixture.publish(all(2, 2, 2));
    let routes_changed = snapshot(&[
        (CLUSTER, "a", 2),
        (ENDPOINT, "a", 1),
        (LISTENER, "l", 2),
        (ROUTE, "r", 2),
        (EXTENSION_CONFIG, "weir", 2),
    ]);
    let version = routes_changed.of_type(ROUTE).version.clone();
    fixture.publish(routes_changed);
    let routes = envoy.recv().await;
    assert_eq!(routes.type_url, ROUTE);
    assert_eq!(routes.version_info, version);
}

#[tokio::test]
async fn sotw_named_subscriptions_get_only_the_names_requested() {
    let initial = snapshot(&[
        (CLUSTER, "a", 1),
        (ENDPOINT, "a", 1),
        (ENDPOINT, "b", 1),
        (ENDPOINT, "c", 1),
    ]);
    let version = initial.of_type(ENDPOINT).version.clone();
    let fixture = start(initial).await;
    let mut envoy = fixture.sotw("envoy-1").await;

    envoy.subscribe(ENDPOINT, &["c", "a", "missing"]).await;
    let first = envoy.recv().await;
    assert_eq!(first.version_info, version);
    assert_eq!(names(&first), ["a", "c"]);

    // Asking for other names with the ACK: answered at once, same version.
    envoy.ack(&first, &["b"]).await;
    let second = envoy.recv().await;
    assert_eq!(second.version_info, version);
    assert_eq!(names(&second), ["b"]);
    assert_ne!(second.nonce, first.nonce);
    eventually("the ACK", || {
        fixture.nodes.acked("envoy-1", ENDPOINT, &version)
    })
    .await;

    // A request answering an older response is ignored, names and all; the
    // clusters asked for next are the next answer.
    envoy.ack(&first, &["a"]).await;
    envoy.subscribe(CLUSTER, &[]).await;
    let clusters = envoy.recv().await;
    assert_eq!(clusters.type_url, CLUSTER);

    // Types Weir does not serve are ignored too.
    envoy
        .send(DiscoveryRequest {
            type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into(),
            ..Default::default()
        })
        .await;
    envoy.ack(&second, &["a", "b"]).await;
    let third = envoy.recv().await;
    assert_eq!(names(&third), ["a", "b"]);
}

#[tokio::test]
async fn sotw_stream_without_node_is_unknown() {
    let fixture = start(snapshot(&[(CLUSTER, "a", 1)])).await;
    let mut envoy = fixture.sotw("").await;
    envoy.subscribe(CLUSTER, &[]).await;
    let clusters = envoy.recv().await;
    envoy.ack(&clusters, &[]).await;
    eventually("the ACK", || {
        fixture
            .nodes
            .acked("unknown", CLUSTER, &clusters.version_info)
    })
    .await;
}

// ---- delta ----------------------------------------------------------------

#[tokio::test]
async fn delta_sends_everything_then_only_changes_and_removals() {
    let initial = snapshot(&[(CLUSTER, "a", 1), (CLUSTER, "b", 1), (CLUSTER, "c", 1)]);
    let version = initial.of_type(CLUSTER).version.clone();
    let fixture = start(initial).await;
    let mut envoy = fixture.delta("envoy-1").await;

    envoy.subscribe(CLUSTER, &[], &[]).await;
    let first = envoy.recv().await;
    assert_eq!(first.type_url, CLUSTER);
    assert_eq!(first.system_version_info, version);
    assert_eq!(delta_names(&first), ["a", "b", "c"]);
    assert!(first.removed_resources.is_empty());
    envoy.answer(&first, None).await;
    eventually("the ACK", || {
        fixture.nodes.acked("envoy-1", CLUSTER, &version)
    })
    .await;

    // a changes, b stays, c goes, d comes.
    let next = fixture.publish(snapshot(&[
        (CLUSTER, "a", 2),
        (CLUSTER, "b", 1),
        (CLUSTER, "d", 1),
    ]));
    let update = envoy.recv().await;
    assert_eq!(update.system_version_info, next.of_type(CLUSTER).version);
    assert_eq!(delta_names(&update), ["a", "d"]);
    for resource in &update.resources {
        assert_eq!(
            resource.version,
            next.of_type(CLUSTER).items[&resource.name].version
        );
    }
    assert_eq!(update.removed_resources, ["c"]);

    // Rejected: recorded, and not sent again (the endpoints asked for next
    // are the next answer).
    envoy.answer(&update, Some("cluster d: bad")).await;
    envoy
        .send(DeltaDiscoveryRequest {
            type_url: ENDPOINT.into(),
            resource_names_subscribe: vec!["a".into()],
            ..Default::default()
        })
        .await;
    let endpoints = envoy.recv().await;
    assert_eq!(endpoints.type_url, ENDPOINT);
    assert!(endpoints.resources.is_empty());
    assert_eq!(
        endpoints.removed_resources,
        ["a"],
        "told that it does not exist"
    );

    let status = fixture.nodes.status();
    let last_nack = &status["envoy-1"]["last_nack"];
    assert_eq!(last_nack["type_url"], CLUSTER);
    assert_eq!(last_nack["version"], update.system_version_info.as_str());
    assert_eq!(last_nack["nonce"], update.nonce.as_str());
    assert_eq!(last_nack["message"], "cluster d: bad");
    assert!(
        fixture.nodes.acked("envoy-1", CLUSTER, &version),
        "keeps the last accepted"
    );

    // The next snapshot is pushed, with only what changed since.
    let fixed = fixture.publish(snapshot(&[
        (CLUSTER, "a", 2),
        (CLUSTER, "b", 1),
        (CLUSTER, "d", 2),
    ]));
    let update = envoy.recv().await;
    assert_eq!(delta_names(&update), ["d"]);
    assert!(update.removed_resources.is_empty());
    envoy.answer(&update, None).await;
    eventually("the ACK of the fix", || {
        fixture
            .nodes
            .acked("envoy-1", CLUSTER, &fixed.of_type(CLUSTER).version)
    })
    .await;
}

#[tokio::test]
async fn delta_initial_versions_spare_what_envoy_has() {
    let initial = snapshot(&[(CLUSTER, "a", 1), (CLUSTER, "b", 2), (CLUSTER, "c", 1)]);
    let a = initial.of_type(CLUSTER).items["a"].version.clone();
    let old_b = resource(CLUSTER, "b", 1).version;
    let fixture = start(initial).await;
    let mut envoy = fixture.delta("envoy-1").await;

    // Envoy reconnects holding a as it is, an older b, and a cluster since
    // deleted.
    envoy
        .subscribe(
            CLUSTER,
            &["*"],
            &[("a", &a), ("b", &old_b), ("gone", "0123")],
        )
        .await;
    let first = envoy.recv().await;
    assert_eq!(delta_names(&first), ["b", "c"]);
    assert_eq!(first.removed_resources, ["gone"]);
}

#[tokio::test]
async fn delta_named_subscriptions_follow_their_names() {
    let fixture = start(snapshot(&[(ENDPOINT, "a", 1), (ENDPOINT, "b", 1)])).await;
    let mut envoy = fixture.delta("envoy-1").await;
    envoy.subscribe(ENDPOINT, &["a"], &[]).await;
    let first = envoy.recv().await;
    assert_eq!(delta_names(&first), ["a"]);
    envoy.answer(&first, None).await;

    envoy
        .send(DeltaDiscoveryRequest {
            type_url: ENDPOINT.into(),
            resource_names_subscribe: vec!["b".into()],
            resource_names_unsubscribe: vec!["a".into()],
            ..Default::default()
        })
        .await;
    let second = envoy.recv().await;
    assert_eq!(delta_names(&second), ["b"]);
    assert!(second.removed_resources.is_empty());

    // a, no longer subscribed, is not pushed when it changes; b is.
    fixture.publish(snapshot(&[(ENDPOINT, "a", 2), (ENDPOINT, "b", 2)]));
    let update = envoy.recv().await;
    assert_eq!(delta_names(&update), ["b"]);
}
