//! Clusters (CDS) and their endpoints (EDS): one per cluster of the policy,
//! and the cluster a remote filter module is fetched through.
//!
//! A cluster whose endpoints are all IP addresses is an `EDS` cluster, so
//! that moving an endpoint updates its assignment only and Envoy keeps the
//! cluster (its connections and statistics). A cluster with a DNS name among
//! its endpoints is `STRICT_DNS`, with the endpoints inline: Envoy resolves
//! them itself, which EDS cannot do.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::{Address, Locality};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use weir_policy::model;

use super::{WASM_CLUSTER, ads, ip_address, millis, socket_address};

/// How long Envoy waits for a connection to an upstream.
const CONNECT_TIMEOUT_MS: u32 = 1000;

/// The cluster for one cluster of the policy and, for an `EDS` cluster, its
/// endpoints; or why its endpoints cannot be used.
pub(super) fn policy_cluster(
    cluster: &model::Cluster,
) -> Result<(Cluster, Option<ClusterLoadAssignment>), Vec<String>> {
    let mut endpoints = Vec::new();
    let mut problems = Vec::new();
    for endpoint in &cluster.endpoints {
        match parse_endpoint(endpoint) {
            Ok(parsed) => endpoints.push(parsed),
            Err(why) => problems.push(format!("cluster `{}`: {why}", cluster.name)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let all_ip = endpoints.iter().all(|e| matches!(e.host, Host::Ip(_)));
    let assignment = ClusterLoadAssignment {
        cluster_name: cluster.name.clone(),
        endpoints: vec![LocalityLbEndpoints {
            locality: Some(Locality {
                region: cluster.region.clone(),
                ..Default::default()
            }),
            lb_endpoints: endpoints.into_iter().map(lb_endpoint).collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    Ok(if all_ip {
        let eds = Cluster {
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                eds_config: Some(ads()),
                // Empty: the assignment is named after the cluster.
                service_name: String::new(),
            }),
            ..base(&cluster.name)
        };
        (eds, Some(assignment))
    } else {
        (dns_cluster(&cluster.name, assignment), None)
    })
}

/// The cluster Envoy fetches a remote filter module through: `server`, weir's
/// HTTP server as Envoys reach it — `STATIC` on an address, `STRICT_DNS` on a
/// name (a Kubernetes Service, say).
pub(super) fn wasm_cluster(server: &HostPort) -> Cluster {
    let assignment = ClusterLoadAssignment {
        cluster_name: WASM_CLUSTER.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![lb_endpoint(server.clone())],
            ..Default::default()
        }],
        ..Default::default()
    };
    match server.host {
        Host::Ip(_) => Cluster {
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
            load_assignment: Some(assignment),
            ..base(WASM_CLUSTER)
        },
        Host::Name(_) => dns_cluster(WASM_CLUSTER, assignment),
    }
}

/// A cluster whose endpoints Envoy resolves itself.
fn dns_cluster(name: &str, assignment: ClusterLoadAssignment) -> Cluster {
    Cluster {
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32)),
        // Backends on one host often listen on IPv4 only; a name with
        // both kinds of address must not be sent to the IPv6 one first.
        dns_lookup_family: DnsLookupFamily::V4Preferred as i32,
        load_assignment: Some(assignment),
        ..base(name)
    }
}

/// What every cluster shares.
fn base(name: &str) -> Cluster {
    Cluster {
        name: name.to_owned(),
        connect_timeout: Some(millis(CONNECT_TIMEOUT_MS)),
        lb_policy: LbPolicy::RoundRobin as i32,
        ..Default::default()
    }
}

/// An endpoint's host: an address, or a name to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// A `host:port` Envoy can connect to: an IP address or a DNS name, and a
/// port from 1 to 65535. Policy endpoints and `--wasm-server` are parsed
/// into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    host: Host,
    port: u16,
}

impl std::str::FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_endpoint(text)
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Ip(ip) => SocketAddr::new(*ip, self.port).fmt(f),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

/// Parses `host:port`, `[v6]:port` or `name:port`. The policy's validation
/// has checked them already; this only refuses what Envoy could not use.
fn parse_endpoint(endpoint: &str) -> Result<HostPort, String> {
    let bad = |why: &str| format!("`{endpoint}` is not a usable endpoint: {why}");
    if let Ok(addr) = endpoint.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(bad("port 0"));
        }
        return Ok(HostPort {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        });
    }
    let Some((host, port_text)) = endpoint.rsplit_once(':') else {
        return Err(bad("write it as `host:port`"));
    };
    // Canonical digits only: `parse` would also take `+80` and `080`.
    let port = match port_text.parse::<u16>() {
        Ok(port) if port > 0 && port.to_string() == port_text => port,
        _ => return Err(bad("the port must be a number from 1 to 65535")),
    };
    let is_name = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    // An IP address with a bad port never reaches here; a host like `1.2.3`
    // is not an address either, and Envoy may resolve it as a name.
    if !is_name {
        return Err(bad("the host must be an IP address or a DNS name"));
    }
    Ok(HostPort {
        host: Host::Name(host.to_owned()),
        port,
    })
}

fn lb_endpoint(endpoint: HostPort) -> LbEndpoint {
    let address = match endpoint.host {
        Host::Ip(ip) => ip_address(ip, endpoint.port),
        Host::Name(name) => socket_address(name, endpoint.port),
    };
    endpoint_at(address)
}

fn endpoint_at(address: Address) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(address),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::address;
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
    use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;

    use super::*;
    use crate::resources::testing::fleet;

    fn cluster(endpoints: &[&str]) -> model::Cluster {
        model::Cluster {
            name: "c".into(),
            region: "eu-west".into(),
            device_types: None,
            variant: model::Variant::Stable,
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
        }
    }

    /// The (host, port) pairs of an assignment.
    fn hosts(assignment: &ClusterLoadAssignment) -> Vec<(String, u32)> {
        assignment
            .endpoints
            .iter()
            .flat_map(|l| &l.lb_endpoints)
            .map(|e| {
                let Some(HostIdentifier::Endpoint(endpoint)) = &e.host_identifier else {
                    panic!("no endpoint in {e:?}");
                };
                let Some(address::Address::SocketAddress(socket)) =
                    endpoint.address.as_ref().and_then(|a| a.address.as_ref())
                else {
                    panic!("no socket address in {endpoint:?}");
                };
                let Some(PortSpecifier::PortValue(port)) = socket.port_specifier else {
                    panic!("no port in {socket:?}");
                };
                (socket.address.clone(), port)
            })
            .collect()
    }

    #[test]
    fn ip_endpoints_make_an_eds_cluster() {
        let (c, assignment) =
            policy_cluster(&cluster(&["127.0.0.1:8080", "[::1]:8081", "10.0.0.2:80"])).unwrap();
        assert_eq!(c.name, "c");
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
        assert_eq!(c.lb_policy, LbPolicy::RoundRobin as i32);
        assert_eq!(c.connect_timeout, Some(millis(1000)));
        assert!(c.load_assignment.is_none());
        let eds = c.eds_cluster_config.unwrap();
        assert!(eds.service_name.is_empty());
        let source = eds.eds_config.unwrap();
        assert!(matches!(
            source.config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
        assert_eq!(source.resource_api_version, 2, "V3");

        let assignment = assignment.unwrap();
        assert_eq!(assignment.cluster_name, "c");
        assert_eq!(
            assignment.endpoints[0].locality.as_ref().unwrap().region,
            "eu-west"
        );
        assert_eq!(
            hosts(&assignment),
            [
                ("127.0.0.1".to_owned(), 8080),
                ("::1".to_owned(), 8081),
                ("10.0.0.2".to_owned(), 80)
            ]
        );
    }

    #[test]
    fn a_dns_name_makes_a_strict_dns_cluster() {
        let (c, assignment) =
            policy_cluster(&cluster(&["ingest.example.com:443", "10.0.0.2:80"])).unwrap();
        assert!(assignment.is_none(), "no EDS resource for a DNS cluster");
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
        );
        assert!(c.eds_cluster_config.is_none());
        assert_eq!(c.connect_timeout, Some(millis(1000)));
        let inline = c.load_assignment.unwrap();
        assert_eq!(inline.cluster_name, "c");
        assert_eq!(
            hosts(&inline),
            [
                ("ingest.example.com".to_owned(), 443),
                ("10.0.0.2".to_owned(), 80)
            ]
        );
    }

    #[test]
    fn the_example_policy_has_only_eds_clusters() {
        for c in &fleet().clusters {
            let (built, assignment) = policy_cluster(c).unwrap();
            assert!(built.eds_cluster_config.is_some(), "{}", c.name);
            assert_eq!(assignment.unwrap().cluster_name, c.name);
        }
    }

    #[test]
    fn unusable_endpoints_are_reported() {
        for bad in [
            "no-port",
            "host:",
            "host:0",
            "host:65536",
            "host:+80",
            "host:080",
            ":80",
            "1.2.3.4:0",
            "[::1]:0",
            "[::1:80",
            "[::1]",
            "::1:80x",
            "ho st:80",
            "host/x:80",
        ] {
            let err = policy_cluster(&cluster(&["127.0.0.1:80", bad])).unwrap_err();
            assert_eq!(err.len(), 1, "{bad}: {err:?}");
            assert!(err[0].contains(&format!("`{bad}`")), "{bad}: {err:?}");
            assert!(err[0].starts_with("cluster `c`: "), "{err:?}");
        }
    }

    #[test]
    fn the_wasm_cluster_resolves_a_named_server() {
        let server: HostPort = "weir.weir-system.svc:18001".parse().unwrap();
        assert_eq!(server.to_string(), "weir.weir-system.svc:18001");
        let c = wasm_cluster(&server);
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
        );
        assert_eq!(
            hosts(&c.load_assignment.unwrap()),
            [("weir.weir-system.svc".to_owned(), 18001)]
        );
        for bad in ["weir", "weir:0", "weir:http", "we ir:80", ":80"] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
        let v6: HostPort = "[::1]:18001".parse().unwrap();
        assert_eq!(v6.to_string(), "[::1]:18001");
    }

    #[test]
    fn the_wasm_cluster_is_static_on_the_server() {
        let c = wasm_cluster(&"127.0.0.1:9901".parse().unwrap());
        assert_eq!(c.name, WASM_CLUSTER);
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
        );
        let inline = c.load_assignment.unwrap();
        assert_eq!(inline.cluster_name, WASM_CLUSTER);
        assert_eq!(hosts(&inline), [("127.0.0.1".to_owned(), 9901)]);
    }
}
