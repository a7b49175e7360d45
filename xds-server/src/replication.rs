//! Replicas of `weir` on etcd: every replica serves Envoys, one leader decides.
//!
//! Each replica holds an etcd lease (`--lease-ttl-secs`, kept alive four
//! times per TTL), registers itself under `replicas/<id>` on that lease, and
//! campaigns in etcd's election `leader` with it. The winner fences the
//! store on its election key (every write is conditioned on the key still
//! being the one it created, see [`Writes::Fenced`]), reloads the state the
//! previous leader left, and decides. The others follow: they watch the
//! prefix from the revision they loaded, adopt each change the leader saves
//! (rollouts, scores, pins, decisions) and serve the feed it makes under
//! their own policy, so every replica serves the same snapshot for the same
//! policy and state. A replica that cannot confirm its lease within the TTL
//! stops deciding at once and campaigns again with a new lease.
//!
//! Without `--store etcd://…` there is one process: [`Replication::single`]
//! decides, always.

mod forward;
mod term;

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

pub(crate) use forward::{FORWARDED, Forwarder, forward_command};
pub(crate) use term::run;

/// Flags of `weir serve` for replicas (with `--store etcd://…`).
#[derive(Debug, Clone, clap::Args)]
pub struct ReplicationArgs {
    /// This replica's name among the replicas (default: the host name and the
    /// admin port).
    #[arg(long, env = "WEIR_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// The TTL of the leader's lease, in seconds: a leader that dies is
    /// replaced within it (plus one control interval).
    #[arg(long, env = "WEIR_LEASE_TTL_SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub lease_ttl_secs: u64,
    /// The admin API as the other replicas reach it (`host:port`; default: the
    /// address it is bound to). Commands and OTLP metrics are forwarded there.
    #[arg(long, env = "WEIR_ADVERTISE_ADMIN")]
    pub advertise_admin: Option<crate::resources::HostPort>,
}

/// One replica as it registers itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub id: String,
    /// Its admin API, `host:port`.
    pub admin: String,
    /// Its ADS address, `host:port`.
    pub xds: String,
    /// The digest of the policy text it serves.
    pub policy: String,
    /// The version of the snapshot it serves.
    pub snapshot: String,
    /// Envoys with a stream open to it.
    pub envoys: u64,
    /// Whether it leads.
    pub leader: bool,
}

/// What this replica does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// One `weir`, no replicas: it decides.
    Single,
    /// Between leases (starting, or etcd unreachable): it serves, nobody here decides.
    Candidate,
    /// It serves the leader's decisions.
    Follower,
    /// It decides.
    Leader,
}

/// Where an operator's command must go.
#[derive(Debug, PartialEq)]
pub(crate) enum CommandTarget {
    /// This process decides.
    Here,
    /// The leader does, at this admin address.
    Leader(ReplicaInfo),
    /// Nobody leads now (an election is under way).
    Nobody,
}

/// This replica's view of the replicas, shared with the admin API.
#[derive(Clone)]
pub(crate) struct Replication {
    inner: Arc<Inner>,
}

struct Inner {
    me: ReplicaInfo,
    ttl_secs: u64,
    view: Mutex<View>,
    /// The client for the leader's admin API, and its scheme (`https` when
    /// the replicas serve TLS); `None` alone.
    http: Option<(crate::http_client::HttpClient, &'static str)>,
    token: Option<String>,
}

#[derive(Default)]
struct View {
    role: Option<Role>,
    leader: Option<ReplicaInfo>,
    lease: Option<i64>,
    leading_since_ms: Option<u64>,
    replicas: Vec<ReplicaInfo>,
    last_error: Option<String>,
}

impl Replication {
    /// One `weir` alone.
    pub(crate) fn single() -> Self {
        Self::new(ReplicaInfo::default(), Role::Single, 0, None, None)
    }

    /// A replica named by `me`, not leading yet; `token` is the token it
    /// presents to the leader, `tls` how it reaches the leader over TLS
    /// (`None`: in the clear).
    pub(crate) fn replica(
        me: ReplicaInfo,
        ttl_secs: u64,
        token: Option<String>,
        tls: Option<crate::http_client::ClientTlsArgs>,
    ) -> anyhow::Result<Self> {
        let timeout = std::time::Duration::from_secs(5);
        let (args, scheme) = match tls {
            Some(args) => (args, "https"),
            None => (crate::http_client::ClientTlsArgs::default(), "http"),
        };
        let client = crate::http_client::HttpClient::new(&args, timeout, timeout)?;
        Ok(Self::new(
            me,
            Role::Candidate,
            ttl_secs,
            token,
            Some((client, scheme)),
        ))
    }

    fn new(
        me: ReplicaInfo,
        role: Role,
        ttl_secs: u64,
        token: Option<String>,
        http: Option<(crate::http_client::HttpClient, &'static str)>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                me,
                ttl_secs,
                view: Mutex::new(View {
                    role: Some(role),
                    ..View::default()
                }),
                http,
                token,
            }),
        }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.inner
            .view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn role(&self) -> Role {
        self.view().role.unwrap_or(Role::Candidate)
    }

    /// This replica's id (empty when alone).
    pub(crate) fn id(&self) -> &str {
        &self.inner.me.id
    }

    /// The leader's id, when one is known.
    pub(crate) fn leader_id(&self) -> Option<String> {
        match self.role() {
            Role::Single => None,
            Role::Leader => Some(self.inner.me.id.clone()),
            Role::Follower | Role::Candidate => self.view().leader.as_ref().map(|l| l.id.clone()),
        }
    }

    pub(crate) fn command_target(&self) -> CommandTarget {
        let view = self.view();
        match view.role {
            Some(Role::Single | Role::Leader) => CommandTarget::Here,
            _ => match &view.leader {
                Some(leader) if leader.id != self.inner.me.id => {
                    CommandTarget::Leader(leader.clone())
                }
                _ => CommandTarget::Nobody,
            },
        }
    }

    /// The client for another replica's admin API and the URL of `path`
    /// there; `None` alone.
    pub(crate) fn http(
        &self,
        replica: &ReplicaInfo,
        path: &str,
    ) -> Option<(&crate::http_client::HttpClient, String)> {
        let (client, scheme) = self.inner.http.as_ref()?;
        Some((client, format!("{scheme}://{}{path}", replica.admin)))
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.inner.token.as_deref()
    }

    pub(crate) fn me(&self) -> &ReplicaInfo {
        &self.inner.me
    }

    pub(crate) fn ttl_secs(&self) -> u64 {
        self.inner.ttl_secs
    }

    fn set_role(&self, role: Role, lease: Option<i64>) {
        let mut view = self.view();
        if role == Role::Leader && view.role != Some(Role::Leader) {
            view.leading_since_ms = Some(crate::serving::now_ms());
        } else if role != Role::Leader {
            view.leading_since_ms = None;
        }
        view.role = Some(role);
        view.lease = lease;
    }

    fn set_leader(&self, leader: Option<ReplicaInfo>) {
        self.view().leader = leader;
    }

    fn set_replicas(&self, replicas: Vec<ReplicaInfo>) {
        self.view().replicas = replicas;
    }

    /// Why this replica is out of touch with etcd, while it is.
    pub(crate) fn problem(&self) -> Option<String> {
        self.view().last_error.clone()
    }

    fn set_error(&self, error: Option<String>) {
        self.view().last_error = error;
    }

    /// `replication` in `GET /v1/status`, but for what the serving state
    /// adds (`deciding`, `policy`).
    pub(crate) fn status(&self) -> crate::api::ReplicationView {
        let view = self.view();
        let role = view.role.unwrap_or(Role::Candidate);
        if role == Role::Single {
            return crate::api::ReplicationView::single();
        }
        let leader = match role {
            Role::Leader => Some(self.inner.me.id.clone()),
            _ => view.leader.as_ref().map(|l| l.id.clone()),
        };
        crate::api::ReplicationView {
            role,
            replica: Some(self.inner.me.id.clone()),
            leader,
            deciding: None,
            policy: None,
            lease: Some(crate::api::LeaseView {
                id: view.lease.map(|id| format!("{id:x}")),
                ttl_seconds: self.inner.ttl_secs,
                leading_since_ms: view.leading_since_ms,
            }),
            replicas: view.replicas.clone(),
            last_error: view.last_error.clone(),
        }
    }
}
