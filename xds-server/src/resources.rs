//! The one place where Envoy resources are built: a policy and its live feed
//! in, a checked [`Snapshot`] out.
//!
//! Envoy sees these resources, all delivered over ADS:
//!
//! | type | name | what it is |
//! |---|---|---|
//! | LDS | `weir_ingress` ([`LISTENER_NAME`]) | the listener device traffic arrives on, [`Options::listener`]; its HTTP connection manager runs the Weir filter, then the router |
//! | RDS | `weir_routes` ([`ROUTE_NAME`]) | a request the filter assigned a cluster (`x-weir-cluster`) goes there; any other is answered 404 |
//! | ECDS | `weir_filter` ([`FILTER_NAME`]) | the Weir wasm filter with its configuration document, the output of `weir compile` for the policy and feed |
//! | CDS | each cluster of the policy | `EDS` when every endpoint is an IP address, `STRICT_DNS` otherwise |
//! | EDS | each `EDS` cluster of the policy | the cluster's endpoints |
//! | CDS | `weir_wasm` ([`WASM_CLUSTER`]) | only for [`WasmSource::Remote`] with a server: where Envoy fetches the filter module (over HTTPS, the bootstrap defines it instead) |
//!
//! The listener names its filter but does not hold its configuration, so a
//! feed-only change (canary weights, SLA scores, the concurrency limit)
//! changes the `weir_filter` extension configuration alone: Envoy rebuilds
//! no listener, cluster or route for it. Until the extension configuration
//! arrives the listener warms and takes no traffic.

mod check;
mod clusters;
mod filter;
mod listener;
mod routes;
#[cfg(test)]
mod testing;

pub use clusters::HostPort;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, TypedExtensionConfig,
    address,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Duration;
use envoy_types::util::pack_any;
use weir_policy::{Feed, Policy};

use crate::snapshot::{InvalidSnapshot, Resource, Snapshot};

/// The listener device traffic arrives on (LDS).
pub const LISTENER_NAME: &str = "weir_ingress";
/// The route configuration the listener reads its routes from (RDS).
pub const ROUTE_NAME: &str = "weir_routes";
/// The Weir filter: the HTTP filter's name in the listener and the name of
/// its extension configuration (ECDS).
pub const FILTER_NAME: &str = "weir_filter";
/// The cluster Envoy fetches a remote filter module through (CDS).
pub const WASM_CLUSTER: &str = "weir_wasm";

/// Where Envoy listens unless told otherwise: 127.0.0.1:10000.
pub const DEFAULT_LISTENER: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 10000));

/// How the resources are built, beyond the policy and its feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Where Envoy listens for device traffic (default 127.0.0.1:10000; port 0 allowed, Envoy then picks).
    pub listener: SocketAddr,
    /// How Envoy gets the filter module.
    pub wasm: WasmSource,
    /// Whether the filter stamps responses with `x-weir-filter: <version>`.
    pub version_header: bool,
}

impl Options {
    /// Options with the default listener address.
    pub fn new(wasm: WasmSource) -> Self {
        Self {
            listener: DEFAULT_LISTENER,
            wasm,
            version_header: false,
        }
    }
}

/// How Envoy gets the filter module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WasmSource {
    /// A file on Envoy's host.
    Local(PathBuf),
    /// Fetched by Envoy from `uri` (served by weir) through the
    /// [`WASM_CLUSTER`] cluster, checked against `sha256` (hex).
    Remote {
        /// The module's URL, `http://…` or `https://…`.
        uri: String,
        /// SHA-256 of the module, 64 lower-case hex digits.
        sha256: String,
        /// Where `uri` is served, as Envoys reach it (an address or a DNS
        /// name), for the cluster weir serves over CDS; `None` when the
        /// Envoys' bootstrap defines [`WASM_CLUSTER`] itself, with the TLS it
        /// takes (`envoy/bootstrap-tls.yaml`).
        server: Option<HostPort>,
    },
}

/// Every resource Envoy needs for `policy` with `feed`, checked for
/// consistency: a snapshot is returned only if nothing in it refers to
/// something missing, and the filter would accept its configuration.
pub fn build(policy: &Policy, feed: &Feed, options: &Options) -> Result<Snapshot, InvalidSnapshot> {
    let mut problems = Vec::new();
    let mut built = Built::default();
    for cluster in &policy.clusters {
        match clusters::policy_cluster(cluster) {
            Ok((cluster, assignment)) => {
                built.clusters.push(cluster);
                built.assignments.extend(assignment);
            }
            Err(why) => problems.extend(why),
        }
    }
    match &options.wasm {
        WasmSource::Remote {
            server: Some(server),
            ..
        } => built.clusters.push(clusters::wasm_cluster(server)),
        WasmSource::Remote { server: None, .. } => built.bootstrap_clusters.push(WASM_CLUSTER),
        WasmSource::Local(_) => {}
    }
    built.listeners.push(listener::listener(options.listener));
    let mirroring = feed.canary_mirrors.values().any(|&share| share > 0);
    built.routes.push(routes::route_configuration(mirroring));
    match filter::extension_config(policy, feed, options) {
        Ok(extension) => built.extensions.push(extension),
        Err(why) => problems.extend(why),
    }
    problems.extend(check::check(&built, policy));
    if problems.is_empty() {
        Ok(built.into_snapshot())
    } else {
        Err(InvalidSnapshot(problems))
    }
}

/// The resources, typed, before they are packed into a snapshot.
#[derive(Debug, Default)]
struct Built {
    clusters: Vec<Cluster>,
    /// Clusters the Envoys' bootstrap defines, which resources may name.
    bootstrap_clusters: Vec<&'static str>,
    assignments: Vec<ClusterLoadAssignment>,
    listeners: Vec<Listener>,
    routes: Vec<RouteConfiguration>,
    extensions: Vec<TypedExtensionConfig>,
}

impl Built {
    fn into_snapshot(self) -> Snapshot {
        let clusters = self
            .clusters
            .into_iter()
            .map(|c| Resource::new(c.name.clone(), pack_any(c)));
        let assignments = self
            .assignments
            .into_iter()
            .map(|a| Resource::new(a.cluster_name.clone(), pack_any(a)));
        let listeners = self
            .listeners
            .into_iter()
            .map(|l| Resource::new(l.name.clone(), pack_any(l)));
        let routes = self
            .routes
            .into_iter()
            .map(|r| Resource::new(r.name.clone(), pack_any(r)));
        let extensions = self
            .extensions
            .into_iter()
            .map(|e| Resource::new(e.name.clone(), pack_any(e)));
        Snapshot::new(
            clusters
                .chain(assignments)
                .chain(listeners)
                .chain(routes)
                .chain(extensions),
        )
    }
}

/// Where every dynamic resource comes from: the ADS stream, API v3.
fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// An address Envoy connects to or listens on; `host` is an IP address or,
/// for DNS clusters, a name.
fn socket_address(host: String, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host,
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn ip_address(ip: IpAddr, port: u16) -> Address {
    socket_address(ip.to_string(), port)
}

fn millis(ms: u32) -> Duration {
    Duration {
        seconds: i64::from(ms / 1000),
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType,
    };
    use weir_policy::model;

    use super::testing::{decode, fleet, local_options, remote_options};
    use super::*;
    use crate::snapshot::type_url;

    fn names(snapshot: &Snapshot, type_url: &str) -> Vec<String> {
        snapshot.of_type(type_url).items.keys().cloned().collect()
    }

    fn versions(snapshot: &Snapshot) -> Vec<(&'static str, String)> {
        type_url::ALL
            .iter()
            .map(|t| (*t, snapshot.of_type(t).version.clone()))
            .collect()
    }

    #[test]
    fn the_fleet_policy_gives_every_resource() {
        let policy = fleet();
        let snapshot = build(&policy, &Feed::initial(&policy), &local_options()).unwrap();
        let clusters: Vec<String> = policy.clusters.iter().map(|c| c.name.clone()).collect();
        let mut sorted = clusters.clone();
        sorted.sort();
        assert_eq!(names(&snapshot, type_url::CLUSTER), sorted);
        // Every endpoint of the example is an IP address: all clusters are EDS.
        assert_eq!(names(&snapshot, type_url::ENDPOINT), sorted);
        assert_eq!(names(&snapshot, type_url::LISTENER), [LISTENER_NAME]);
        assert_eq!(names(&snapshot, type_url::ROUTE), [ROUTE_NAME]);
        assert_eq!(names(&snapshot, type_url::EXTENSION_CONFIG), [FILTER_NAME]);
        for t in type_url::ALL {
            for (name, resource) in &snapshot.of_type(t).items {
                assert_eq!(resource.body.type_url, t, "{name}");
                assert_eq!(&resource.name, name);
            }
        }
    }

    #[test]
    fn the_same_input_gives_the_same_versions() {
        let policy = fleet();
        let feed = Feed::initial(&policy);
        let a = build(&policy, &feed, &local_options()).unwrap();
        let b = build(&policy, &feed, &local_options()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.version, b.version);
        assert_eq!(versions(&a), versions(&b));
    }

    #[test]
    fn a_feed_only_change_changes_only_the_filter_configuration() {
        let policy = fleet();
        let initial = Feed::initial(&policy);
        let before = build(&policy, &initial, &remote_options()).unwrap();

        let mut weights = initial.clone();
        weights
            .canary_weights
            .insert("ingest-eu-canary".into(), 5000);
        let mut scores = initial.clone();
        scores.sla_scores.insert("ingest-us".into(), 0.4);
        let mut limit = initial.clone();
        limit.concurrency_limit = Some(120);

        for (what, feed) in [
            ("weights", weights),
            ("SLA scores", scores),
            ("limit", limit),
        ] {
            let after = build(&policy, &feed, &remote_options()).unwrap();
            assert_ne!(before.version, after.version, "{what}");
            for t in type_url::ALL {
                let (was, is) = (&before.of_type(t), &after.of_type(t));
                if t == type_url::EXTENSION_CONFIG {
                    assert_ne!(was.version, is.version, "{what}: {t}");
                    assert_ne!(
                        was.items[FILTER_NAME].version, is.items[FILTER_NAME].version,
                        "{what}"
                    );
                } else {
                    assert_eq!(was, is, "{what} changed {t}");
                }
            }
        }
    }

    #[test]
    fn a_policy_edit_changes_clusters_and_endpoints() {
        let policy = fleet();
        let before = build(&policy, &Feed::initial(&policy), &local_options()).unwrap();

        let mut edited = policy.clone();
        edited.clusters.push(model::Cluster {
            name: "ingest-eu-2".into(),
            region: "eu-west".into(),
            device_types: None,
            variant: model::Variant::Stable,
            endpoints: vec!["127.0.0.1:18087".into()],
        });
        edited.services[1].placements.push(model::Placement {
            matches: None,
            cluster: "ingest-eu-2".into(),
            canary: None,
        });
        let after = build(&edited, &Feed::initial(&edited), &local_options()).unwrap();
        for t in [
            type_url::CLUSTER,
            type_url::ENDPOINT,
            type_url::EXTENSION_CONFIG,
        ] {
            assert_ne!(before.of_type(t).version, after.of_type(t).version, "{t}");
        }
        for t in [type_url::LISTENER, type_url::ROUTE] {
            assert_eq!(before.of_type(t), after.of_type(t), "{t}");
        }
        // The clusters that did not change keep their versions.
        let (was, is) = (
            before.of_type(type_url::CLUSTER),
            after.of_type(type_url::CLUSTER),
        );
        assert!(is.items.contains_key("ingest-eu-2"));
        assert_eq!(was.items["ingest-us"], is.items["ingest-us"]);

        // Moving an endpoint changes that cluster's assignment, not its cluster.
        let mut moved = policy.clone();
        moved.clusters[2].endpoints = vec!["127.0.0.1:19083".into()];
        let after = build(&moved, &Feed::initial(&moved), &local_options()).unwrap();
        assert_eq!(
            before.of_type(type_url::CLUSTER),
            after.of_type(type_url::CLUSTER)
        );
        assert_ne!(
            before.of_type(type_url::ENDPOINT).items["ingest-us"],
            after.of_type(type_url::ENDPOINT).items["ingest-us"]
        );
    }

    #[test]
    fn a_remote_module_adds_its_cluster() {
        let policy = fleet();
        let snapshot = build(&policy, &Feed::initial(&policy), &remote_options()).unwrap();
        let clusters = snapshot.of_type(type_url::CLUSTER);
        assert_eq!(clusters.items.len(), policy.clusters.len() + 1);
        let wasm: Cluster = decode(&clusters.items[WASM_CLUSTER].body);
        assert_eq!(
            wasm.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
        );
        // It has no EDS resource: its endpoint is inline.
        assert!(
            !snapshot
                .of_type(type_url::ENDPOINT)
                .items
                .contains_key(WASM_CLUSTER)
        );
    }

    #[test]
    fn a_bad_endpoint_is_reported_not_panicked_on() {
        let mut policy = fleet();
        policy.clusters[0].endpoints = vec!["no-port".into(), "[::1:80".into()];
        let err = build(&policy, &Feed::initial(&policy), &local_options()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`no-port`"), "{text}");
        assert!(text.contains("`[::1:80`"), "{text}");
    }

    #[test]
    fn a_placement_on_a_missing_cluster_is_refused() {
        let mut policy = fleet();
        policy.clusters.retain(|c| c.name != "commands-us");
        let err = build(&policy, &Feed::initial(&policy), &local_options()).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|p| p.contains("`commands-us`") && p.contains("no such cluster")),
            "{err}"
        );
    }

    #[test]
    fn a_policy_cluster_named_like_weirs_own_is_refused() {
        let mut policy = fleet();
        policy.clusters[3].name = WASM_CLUSTER.into();
        policy.services[1].placements[2].cluster = WASM_CLUSTER.into();
        let feed = Feed::initial(&policy);
        // Local module: there is no clash.
        build(&policy, &feed, &local_options()).unwrap();
        let err = build(&policy, &feed, &remote_options()).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|p| p.contains("two clusters named `weir_wasm`")),
            "{err}"
        );
    }

    #[test]
    fn a_feed_the_filter_would_refuse_is_refused() {
        let policy = fleet();
        let mut feed = Feed::initial(&policy);
        feed.sla_scores.insert("ingest-mars".into(), 0.5);
        let err = build(&policy, &feed, &local_options()).unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|p| p.contains("the filter would refuse") && p.contains("ingest-mars")),
            "{err}"
        );
    }

    #[test]
    fn durations_are_split_into_seconds_and_nanos() {
        assert_eq!(
            millis(1500),
            Duration {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            millis(15_000),
            Duration {
                seconds: 15,
                nanos: 0
            }
        );
    }
}
