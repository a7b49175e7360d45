//! Snapshots: an immutable, versioned, internally consistent set of Envoy
//! resources, built from a policy and its live feed, and only then served.
//!
//! Resource generation (`resources`) knows nothing of streams; the ADS server
//! (`xds`) knows nothing of policies. This module is the contract between them.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource as DeltaResource,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use sha2::{Digest, Sha256};

/// Type URLs of the resources Weir serves, in the order updates are pushed:
/// clusters and their endpoints before the listeners and routes that use
/// them, and the filter's configuration last (make before break).
pub mod type_url {
    /// Clusters (CDS).
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// Endpoints (EDS).
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// Listeners (LDS).
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// Route configurations (RDS).
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// Extension configurations (ECDS): the filter with its configuration.
    pub const EXTENSION_CONFIG: &str =
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

    /// Every type, in push order.
    pub const ALL: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, EXTENSION_CONFIG];
}

/// One named resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// The resource's name (a cluster's name, a listener's…).
    pub name: String,
    /// Version of this resource alone: a hash of its encoding.
    pub version: String,
    /// The resource.
    pub body: Any,
    /// How it goes on the wire, encoded once and shared by every stream.
    pub wire: Wire,
}

/// A resource's encodings as an entry of a response's `resources`: the
/// bytes of that one field, which a response made of its other fields and
/// any number of such entries, concatenated, carries as is (protobuf merges
/// concatenated encodings of a message).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wire {
    /// In a state-of-the-world `DiscoveryResponse`: the body.
    pub sotw: Bytes,
    /// In a `DeltaDiscoveryResponse`: name, version and body.
    pub delta: Bytes,
}

impl Resource {
    /// A resource named `name`, versioned by its content.
    pub fn new(name: impl Into<String>, body: Any) -> Self {
        let name = name.into();
        let version = short_hash(&[body.type_url.as_bytes(), &body.value]);
        let sotw = DiscoveryResponse {
            resources: vec![body.clone()],
            ..Default::default()
        };
        let delta = DeltaDiscoveryResponse {
            resources: vec![DeltaResource {
                name: name.clone(),
                version: version.clone(),
                resource: Some(body.clone()),
                ..Default::default()
            }],
            ..Default::default()
        };
        Self {
            wire: Wire {
                sotw: sotw.encode_to_vec().into(),
                delta: delta.encode_to_vec().into(),
            },
            name,
            version,
            body,
        }
    }
}

/// All resources of one type, with a version that changes iff any of them does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypeResources {
    /// The type's version.
    pub version: String,
    /// Resources by name.
    pub items: BTreeMap<String, Resource>,
    /// Every resource as state-of-the-world `resources` entries, in name
    /// order: what a wildcard subscriber is sent.
    pub sotw_wire: Bytes,
}

/// An immutable set of resources of every type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Version of the whole snapshot (changes iff any type's version does).
    pub version: String,
    types: BTreeMap<&'static str, TypeResources>,
}

impl Snapshot {
    /// A snapshot of `resources`, grouped by type URL; types not given are empty.
    pub fn new(resources: impl IntoIterator<Item = Resource>) -> Self {
        let mut types: BTreeMap<&'static str, TypeResources> = type_url::ALL
            .iter()
            .map(|t| (*t, TypeResources::default()))
            .collect();
        for resource in resources {
            if let Some(slot) = types.get_mut(resource.body.type_url.as_str()) {
                slot.items.insert(resource.name.clone(), resource);
            }
        }
        for resources in types.values_mut() {
            let parts: Vec<&[u8]> = resources
                .items
                .values()
                .flat_map(|r| [r.name.as_bytes(), r.version.as_bytes()])
                .collect();
            resources.version = short_hash(&parts);
            resources.sotw_wire = resources
                .items
                .values()
                .flat_map(|r| r.wire.sotw.iter().copied())
                .collect::<Vec<u8>>()
                .into();
        }
        let versions: Vec<&[u8]> = types.values().map(|t| t.version.as_bytes()).collect();
        Self {
            version: short_hash(&versions),
            types,
        }
    }

    /// The resources of one type (empty for a type Weir does not serve).
    pub fn of_type(&self, type_url: &str) -> &TypeResources {
        static EMPTY: std::sync::OnceLock<TypeResources> = std::sync::OnceLock::new();
        self.types
            .get(type_url)
            .unwrap_or_else(|| EMPTY.get_or_init(TypeResources::default))
    }
}

/// A snapshot that would have Envoy reference something it does not have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSnapshot(pub Vec<String>);

impl fmt::Display for InvalidSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inconsistent snapshot: {}", self.0.join("; "))
    }
}

impl std::error::Error for InvalidSnapshot {}

/// A short, stable content hash (12 hex digits of SHA-256).
pub fn short_hash(parts: &[&[u8]]) -> String {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update((part.len() as u64).to_le_bytes());
        digest.update(part);
    }
    digest
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}
