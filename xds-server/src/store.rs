//! The controller's memory: every rollout's state, the decisions taken, the
//! smoothed scores (SLA scores, concurrency limit), the feed served, the
//! operator's pinned values, and the dashboard's timeline.
//!
//! One interface, two engines: the embedded redb file of a single `weir`
//! (the default, nothing to install) and etcd, shared by replicas. `serve`
//! saves a [`Checkpoint`] after each evaluation or command that decided
//! something, durably, before it pushes the new feed: a restart — or another
//! replica taking over — never serves a weight that was not recorded.
//! Records are JSON, so fields added later read as their defaults.

mod etcd;
mod redb;

#[cfg(test)]
mod contract;

use weir_policy::Feed;

use crate::controller::{Decision, RolloutState, Scores};
use crate::timeline::Point;

pub use self::etcd::{Change, EtcdOptions, EtcdStore, Fence, Writes};
pub use self::redb::RedbStore;

/// Decisions kept; older ones are dropped as new ones come.
pub const MAX_STORED_DECISIONS: u64 = 10_000;

/// What a store holds.
#[derive(Debug, Default, PartialEq)]
pub struct Saved {
    /// Rollout states, by canary cluster.
    pub rollouts: Vec<RolloutState>,
    /// Decisions, oldest first (at most [`MAX_STORED_DECISIONS`]).
    pub decisions: Vec<Decision>,
    /// The smoothed scores.
    pub scores: Scores,
    /// The feed last served, pinned values included; none before the first save.
    pub feed: Option<Feed>,
    /// The values an operator pinned over the controller's.
    pub pins: Option<Feed>,
    /// The dashboard's timeline points, oldest first.
    pub timeline: Vec<Point>,
}

/// One save of the controller's state: the rollout states and scores replace
/// the stored ones, the decisions are appended, all or nothing.
#[derive(Clone, Copy, Debug)]
pub struct Checkpoint<'a> {
    pub rollouts: &'a [RolloutState],
    pub new_decisions: &'a [Decision],
    pub scores: &'a Scores,
    /// The feed being served with these states.
    pub feed: &'a Feed,
}

/// Where the controller's state is kept. Every method is one atomic,
/// durable write or one consistent read, or an error that names the store.
pub trait Store: Send + std::fmt::Debug {
    /// What the store holds.
    fn load(&self) -> anyhow::Result<Saved>;

    /// Saves a checkpoint durably, in one transaction.
    fn save(&self, checkpoint: &Checkpoint<'_>) -> anyhow::Result<()>;

    /// Replaces the operator's pinned values (`None` clears them), durably.
    fn save_pins(&self, pins: Option<&Feed>) -> anyhow::Result<()>;

    /// Adds timeline `points` and forgets those at or before
    /// `forget_until_ms`. It need not be durable by itself: a crash may lose a
    /// few seconds of chart, never a decision.
    fn save_timeline(&self, points: &[Point], forget_until_ms: u64) -> anyhow::Result<()>;

    /// Names the store for logs and errors (a file, or etcd endpoints and prefix).
    fn describe(&self) -> String;
}

/// A store shared with the replication, which watches and fences it.
impl<S: Store + Sync> Store for std::sync::Arc<S> {
    fn load(&self) -> anyhow::Result<Saved> {
        (**self).load()
    }

    fn save(&self, checkpoint: &Checkpoint<'_>) -> anyhow::Result<()> {
        (**self).save(checkpoint)
    }

    fn save_pins(&self, pins: Option<&Feed>) -> anyhow::Result<()> {
        (**self).save_pins(pins)
    }

    fn save_timeline(&self, points: &[Point], forget_until_ms: u64) -> anyhow::Result<()> {
        (**self).save_timeline(points, forget_until_ms)
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Where `weir serve` keeps its state: the redb file of `--state`, or etcd.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Keep the state in etcd instead of the `--state` file:
    /// `etcd://HOST:PORT[,HOST:PORT…]` (every replica of weir names the same
    /// cluster and prefix).
    #[arg(long = "store", env = "WEIR_STORE", value_name = "URL")]
    pub url: Option<StoreUrl>,
    /// The prefix of weir's keys in etcd.
    #[arg(long, env = "WEIR_STORE_PREFIX", default_value = "/weir/")]
    pub store_prefix: String,
    /// The CA that signed etcd's certificate: talk to etcd over TLS (etcdctl's `--cacert`).
    #[arg(long, env = "WEIR_ETCD_CACERT")]
    pub etcd_cacert: Option<std::path::PathBuf>,
    /// A client certificate for etcd's `--client-cert-auth` (etcdctl's `--cert`).
    #[arg(long, env = "WEIR_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<std::path::PathBuf>,
    /// The client certificate's key (etcdctl's `--key`).
    #[arg(long, env = "WEIR_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<std::path::PathBuf>,
    /// etcd's user, `NAME` or `NAME:PASSWORD` (etcdctl's `--user`).
    #[arg(long, env = "WEIR_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// The user's password, if not in `--etcd-user` (etcdctl's `--password`).
    #[arg(long, env = "WEIR_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    /// The deadline of every call to etcd, in milliseconds.
    #[arg(long, env = "WEIR_ETCD_TIMEOUT_MS", default_value_t = 2_000)]
    pub etcd_timeout_ms: u64,
}

/// `etcd://HOST:PORT[,HOST:PORT…]`.
/// An opened store.
pub enum Opened {
    Embedded(RedbStore),
    Etcd(std::sync::Arc<EtcdStore>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    pub endpoints: Vec<String>,
}

impl std::str::FromStr for StoreUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hosts = text
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("`{text}` is not etcd://HOST:PORT[,HOST:PORT…]"))?;
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if endpoints.is_empty() {
            return Err(format!("`{text}` names no etcd endpoint"));
        }
        for endpoint in &endpoints {
            let port = endpoint.rsplit_once(':').map(|(_, port)| port);
            if port.is_none_or(|p| p.parse::<u16>().is_err()) || endpoint.contains('/') {
                return Err(format!("`{endpoint}` is not HOST:PORT"));
            }
        }
        Ok(Self { endpoints })
    }
}

impl StoreArgs {
    /// The etcd options, if etcd is chosen.
    pub fn etcd_options(&self) -> Option<EtcdOptions> {
        let url = self.url.as_ref()?;
        let mut options = EtcdOptions::new(url.endpoints.clone()).with_prefix(&self.store_prefix);
        options.ca_file = self.etcd_cacert.clone();
        options.cert_file = self.etcd_cert.clone();
        options.key_file = self.etcd_key.clone();
        options.user = self
            .etcd_user
            .as_ref()
            .map(|user| match user.split_once(':') {
                Some((name, password)) => (name.to_owned(), password.to_owned()),
                None => (user.clone(), self.etcd_password.clone().unwrap_or_default()),
            });
        options.timeout = std::time::Duration::from_millis(self.etcd_timeout_ms.max(1));
        Some(options)
    }

    /// The store these options name: etcd, shared with the replication
    /// (which fences it), or the embedded file `state`.
    pub fn open(&self, state: &std::path::Path) -> anyhow::Result<Opened> {
        Ok(match self.etcd_options() {
            Some(options) => Opened::Etcd(std::sync::Arc::new(EtcdStore::open(&options)?)),
            None => Opened::Embedded(RedbStore::open(state)?),
        })
    }

    /// The deadline of each etcd request.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.etcd_timeout_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_name_one_or_more_endpoints() {
        let url: StoreUrl = "etcd://10.0.0.1:2379, etcd-1.etcd:2379".parse().unwrap();
        assert_eq!(url.endpoints, vec!["10.0.0.1:2379", "etcd-1.etcd:2379"]);
        for bad in [
            "http://a:1",
            "etcd://",
            "etcd://host",
            "etcd://a:port",
            "etcd://a:1/x",
        ] {
            assert!(bad.parse::<StoreUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn etcd_users_carry_their_password_like_etcdctl() {
        let args = |user: &str, password: Option<&str>| StoreArgs {
            url: Some("etcd://a:1".parse().unwrap()),
            store_prefix: "/weir".into(),
            etcd_cacert: None,
            etcd_cert: None,
            etcd_key: None,
            etcd_user: Some(user.into()),
            etcd_password: password.map(str::to_owned),
            etcd_timeout_ms: 2_000,
        };
        let options = args("weir:secret", None).etcd_options().unwrap();
        assert_eq!(options.user, Some(("weir".into(), "secret".into())));
        assert_eq!(options.prefix, "/weir/");
        let options = args("weir", Some("other")).etcd_options().unwrap();
        assert_eq!(options.user, Some(("weir".into(), "other".into())));
    }
}
