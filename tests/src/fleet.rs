//! A policy's whole world on loopback: one named backend per cluster of the
//! policy, and an Envoy whose clusters point at them, running Weir's filter
//! configured with the compiled policy.

use std::collections::BTreeMap;

use weir_policy::{Feed, FilterConfig, Policy};

use crate::backend::Backend;
use crate::envoy::{EnvoyBuilder, FilterChoice};
use crate::paths;

/// Reads and validates a policy file of the repository (e.g. `examples/policies/iot-fleet.yaml`).
pub fn load_policy(relative: &str) -> anyhow::Result<Policy> {
    let path = paths::repo_root().join(relative);
    policy_from_yaml(relative, &std::fs::read_to_string(&path)?)
}

/// The example policy, `examples/policies/iot-fleet.yaml`.
pub fn example_policy() -> Policy {
    load_policy("examples/policies/iot-fleet.yaml").expect("the example policy is valid")
}

/// Backends standing in for every cluster of a policy.
pub struct Fleet {
    policy: Policy,
    backends: BTreeMap<String, Backend>,
}

impl Fleet {
    /// Starts one backend per cluster, named after it, and points the
    /// policy's endpoints at them.
    pub fn start(mut policy: Policy) -> anyhow::Result<Self> {
        let mut backends = BTreeMap::new();
        for cluster in &mut policy.clusters {
            let backend = Backend::start(&cluster.name)?;
            cluster.endpoints = vec![backend.addr().to_string()];
            backends.insert(cluster.name.clone(), backend);
        }
        Ok(Self { policy, backends })
    }

    /// The policy, with endpoints on this fleet's backends.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The backend standing in for `cluster`.
    pub fn backend(&self, cluster: &str) -> &Backend {
        &self.backends[cluster]
    }

    /// Every backend, by cluster name.
    pub fn backends(&self) -> &BTreeMap<String, Backend> {
        &self.backends
    }

    /// The filter's configuration for this fleet's policy and `feed` (the
    /// initial feed when `None`), as `weir compile` prints it.
    pub fn filter_config(&self, feed: Option<Feed>) -> String {
        let config: FilterConfig = match feed {
            Some(feed) => weir_policy::source::with_feed(&self.policy, feed),
            None => weir_policy::source::compile(&self.policy),
        };
        serde_json::to_string(&config).expect("serialise the filter configuration")
    }

    /// Delivers this fleet's policy with a new `feed` to a running `envoy`
    /// (over ECDS) and waits until every worker runs it.
    pub async fn push_feed(&self, envoy: &crate::Envoy, feed: Feed) -> anyhow::Result<()> {
        let config = weir_policy::source::with_feed(&self.policy, feed);
        envoy.update_weir_config(&serde_json::to_string(&config)?)?;
        envoy.wait_for_filter_version(&config.version).await
    }

    /// An Envoy with a cluster per policy cluster and the filter configured
    /// through ECDS, so tests can change the feed while it runs.
    pub fn envoy(&self, feed: Option<Feed>) -> EnvoyBuilder {
        let mut builder = EnvoyBuilder::new();
        for cluster in &self.policy.clusters {
            builder = builder.cluster(&cluster.name, &[self.backends[&cluster.name].addr()]);
        }
        builder.filter(FilterChoice::WeirDiscovered(self.filter_config(feed)))
    }
}

/// Reads a policy from YAML text (for tests that write their own).
pub fn policy_from_yaml(name: &str, text: &str) -> anyhow::Result<Policy> {
    weir_policy::source::load(name, text).map_err(|diagnostics| {
        let shown: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{}", shown.join("\n"))
    })
}

/// A policy written to a file of its own, for `weir serve` to watch; the
/// file (JSON, which is YAML) and its folder go when this is dropped.
pub struct PolicyFile {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl PolicyFile {
    /// Writes `policy` to `<temporary folder>/<name>`.
    pub fn new(name: &str, policy: &Policy) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_string_pretty(policy)?)?;
        Ok(Self { path, _dir: dir })
    }

    /// Where it is.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}
