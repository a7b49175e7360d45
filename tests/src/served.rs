//! A fleet served entirely by `weir serve`: a backend per cluster of the
//! policy, `weir` watching the policy in a file, and an Envoy started from
//! `envoy/bootstrap.yaml` alone (state-of-the-world ADS).

use weir_policy::Policy;

use crate::Envoy;
use crate::fleet::{Fleet, PolicyFile};
use crate::weir::{WasmDelivery, Weir, ads_bootstrap};

/// Backends, `weir` and one Envoy, stopped when dropped.
pub struct Served {
    /// The backends.
    pub fleet: Fleet,
    /// `weir serve`, delivering the filter as a local file.
    pub weir: Weir,
    /// The Envoy, ready: it has taken its listener from `weir`.
    pub envoy: Envoy,
    /// The policy file `weir` watches.
    pub policy_file: PolicyFile,
}

impl Served {
    /// Starts them; the Envoy is node `node` with `concurrency` workers.
    pub async fn start(policy: Policy, node: &str, concurrency: u32) -> anyhow::Result<Self> {
        Self::start_with_env(policy, node, concurrency, &[]).await
    }

    /// [`Served::start`], with `weir serve` given these environment variables.
    pub async fn start_with_env(
        policy: Policy,
        node: &str,
        concurrency: u32,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let fleet = Fleet::start(policy)?;
        let policy_file = PolicyFile::new("policy.yaml", fleet.policy())?;
        let weir = Weir::start_with_env(policy_file.path(), WasmDelivery::Local, env).await?;
        let envoy =
            Envoy::start(&ads_bootstrap(weir.xds_addr(), node, false)?, concurrency).await?;
        Ok(Self {
            fleet,
            weir,
            envoy,
            policy_file,
        })
    }
}
