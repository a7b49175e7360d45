//! One replica's life on etcd, term after term: a lease, its registration,
//! following the leader's state, campaigning, and leading until the lease is
//! lost or the process stops.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::sync::watch;

use super::{ReplicaInfo, Replication, Role};
use crate::serving::Control;
use crate::store::{Change, EtcdStore, Fence, Saved, Writes};
use crate::xds::Nodes;

/// How often a replica refreshes its registration and reads the others'.
const REGISTRY_EVERY: Duration = Duration::from_secs(1);

/// The longest pause between two attempts to reach etcd again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A leader the observer saw: its election key and its record.
type Seen = (Vec<u8>, Option<ReplicaInfo>);

/// The campaign in flight.
type Campaign = std::pin::Pin<
    Box<dyn Future<Output = Result<etcd_client::CampaignResponse, etcd_client::Error>> + Send>,
>;

/// How long the observer waits before observing again after a failure.
const OBSERVE_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// Sends every leader of `election` to `seen`, observing again whenever the
/// stream fails, until `seen` is closed (the term ended).
async fn observe(mut client: Client, election: String, seen: tokio::sync::mpsc::Sender<Seen>) {
    loop {
        let outcome: anyhow::Result<()> = async {
            let mut leaders = client
                .observe(election.clone())
                .await
                .context("cannot observe the election")?;
            while let Some(leader) = leaders
                .message()
                .await
                .context("the election's observer failed")?
            {
                let Some(kv) = leader.kv() else { continue };
                let info = serde_json::from_slice(kv.value()).ok();
                if seen.send((kv.key().to_vec(), info)).await.is_err() {
                    return Ok(());
                }
            }
            Err(anyhow!("etcd ended the election's observer"))
        }
        .await;
        match outcome {
            Ok(()) => return,
            Err(err) => tracing::debug!("{err:#}; observing again"),
        }
        if seen.is_closed() {
            return;
        }
        tokio::time::sleep(OBSERVE_AGAIN_AFTER).await;
    }
}

/// The next renewal answer, or never while the keep-alive is not open.
async fn next_ack(
    keepalive: &mut Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
) -> anyhow::Result<etcd_client::LeaseKeepAliveResponse> {
    match keepalive {
        Some((_, acks)) => acks
            .message()
            .await?
            .ok_or_else(|| anyhow!("etcd closed the lease's keep-alive stream")),
        None => std::future::pending().await,
    }
}

/// The next change of the state, or never while the watch is not open.
async fn next_change(
    changes: &mut Option<etcd_client::WatchStream>,
) -> anyhow::Result<etcd_client::WatchResponse> {
    match changes {
        Some(stream) => stream
            .message()
            .await?
            .ok_or_else(|| anyhow!("etcd ended the watch of the leader's state")),
        None => std::future::pending().await,
    }
}

/// Stops a task when its owner goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a term ended without an error.
enum Ended {
    Shutdown,
    LeaseLost(&'static str),
}

/// Everything a term works with.
struct Term<'a> {
    replication: &'a Replication,
    etcd: &'a Arc<EtcdStore>,
    control: &'a Arc<Mutex<Control>>,
    nodes: &'a Nodes,
    client: Client,
    timeout: Duration,
}

/// Runs this replica until `shutdown` turns true: on return it no longer
/// leads (it resigned) and its lease is revoked.
pub(crate) async fn run(
    replication: Replication,
    etcd: Arc<EtcdStore>,
    control: Arc<Mutex<Control>>,
    nodes: Nodes,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let term = Term {
            replication: &replication,
            etcd: &etcd,
            control: &control,
            nodes: &nodes,
            client: etcd.streaming_client(),
            timeout,
        };
        let started = Instant::now();
        let ended = term.run(&mut shutdown).await;
        term.stop_deciding();
        // Who leads is known again once the next term observes the election.
        replication.set_leader(None);
        match ended {
            Ok(Ended::Shutdown) => return,
            Ok(Ended::LeaseLost(why)) => {
                tracing::warn!("the lease is lost ({why}): not deciding; campaigning again");
                replication.set_error(Some(format!("lease lost: {why}")));
            }
            Err(err) => {
                tracing::warn!("replication: {err:#}; trying again");
                replication.set_error(Some(format!("{err:#}")));
            }
        }
        if started.elapsed() > MAX_BACKOFF * 4 {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

impl Term<'_> {
    async fn run(&self, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<Ended> {
        let ttl = self.replication.ttl_secs();
        let mut client = self.client.clone();
        let granted_at = Instant::now();
        let lease = self
            .deadline(client.lease_grant(i64::try_from(ttl).unwrap_or(60), None))
            .await
            .context("cannot get a lease from etcd")?
            .id();
        let outcome = self.with_lease(lease, granted_at, shutdown).await;
        // Whatever ended the term, the lease goes with it: another replica
        // need not wait for it to expire (best effort: etcd may be gone).
        let _ = tokio::time::timeout(self.timeout, client.lease_revoke(lease)).await;
        outcome
    }

    async fn with_lease(
        &self,
        lease: i64,
        granted_at: Instant,
        shutdown: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<Ended> {
        let replication = self.replication;
        let ttl = Duration::from_secs(replication.ttl_secs());
        let mut keepalive = Some(self.keep_alive(lease).await?);
        let mut registered = None;
        self.register(lease, &mut registered).await?;

        // Follow: the state as saved, then every change after it.
        let (mut mirror, revision) = self.load().await?;
        self.adopt(&mirror, false);
        replication.set_role(Role::Follower, Some(lease));
        replication.set_error(None);
        let mut watch_from = revision.saturating_add(1);
        let mut changes = Some(self.watch(watch_from).await?);
        let election = self.election_name();
        // etcd answers an observer only once somebody leads: it runs beside,
        // observing again whenever its stream fails, until the term ends.
        let (leader_seen, mut leaders) = tokio::sync::mpsc::channel(4);
        let _observer = AbortOnDrop(tokio::spawn(observe(
            self.client.clone(),
            election.clone(),
            leader_seen,
        )));
        let me = serde_json::to_vec(replication.me())?;
        let mut campaign = self.campaign(&election, &me, lease);

        // A stream through an etcd member that went away fails while the
        // lease lives on the others: each is opened again within the term.
        // Only a lease that cannot be renewed in time ends it.
        let renew_every = ttl / 4;
        let mut renew = tokio::time::interval(renew_every);
        let mut registry = tokio::time::interval(REGISTRY_EVERY);
        let mut unacked: VecDeque<Instant> = VecDeque::new();
        let mut lease_valid_until = granted_at + ttl;
        let mut leading: Option<etcd_client::LeaderKey> = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    if let Some(key) = leading.take() {
                        self.stop_deciding();
                        let mut client = self.client.clone();
                        let resign = etcd_client::ResignOptions::new().with_leader(key);
                        let _ = tokio::time::timeout(self.timeout, client.resign(Some(resign))).await;
                        tracing::info!("resigned the leadership");
                    }
                    return Ok(Ended::Shutdown);
                }
                _ = renew.tick() => {
                    // Counted from when the last acknowledged renewal was
                    // sent, the lease may expire before the next one lands.
                    if Instant::now() + renew_every >= lease_valid_until {
                        return Ok(Ended::LeaseLost("etcd did not renew it in time"));
                    }
                    if keepalive.is_none() {
                        keepalive = self.keep_alive(lease).await.map_err(|err| {
                            tracing::debug!("the lease's keep-alive is not open again yet: {err:#}");
                        }).ok();
                        unacked.clear();
                    }
                    if let Some((keeper, _)) = &mut keepalive {
                        match keeper.keep_alive().await {
                            Ok(()) => unacked.push_back(Instant::now()),
                            Err(err) => {
                                tracing::debug!("cannot renew the lease: {err}");
                                keepalive = None;
                            }
                        }
                    }
                }
                ack = next_ack(&mut keepalive) => match ack {
                    Ok(ack) if ack.ttl() <= 0 => return Ok(Ended::LeaseLost("it expired")),
                    Ok(ack) => {
                        let sent = unacked.pop_front().unwrap_or(granted_at);
                        let granted = Duration::from_secs(u64::try_from(ack.ttl()).unwrap_or(0));
                        lease_valid_until = sent + granted;
                    }
                    Err(err) => {
                        tracing::debug!("the lease's keep-alive stream failed: {err:#}");
                        keepalive = None;
                    }
                },
                won = &mut campaign, if leading.is_none() => match won {
                    Ok(mut won) => {
                        let key = won.take_leader().ok_or_else(|| anyhow!("etcd elected no key"))?;
                        self.lead(&key).await?;
                        replication.set_role(Role::Leader, Some(lease));
                        replication.set_leader(Some(replication.me().clone()));
                        tracing::info!(replica = replication.id(), "leading");
                        leading = Some(key);
                        let _ = self.register(lease, &mut registered).await;
                    }
                    Err(err) => {
                        tracing::debug!("the campaign failed: {err}; campaigning again");
                        campaign = self.campaign(&election, &me, lease);
                    }
                },
                response = next_change(&mut changes), if leading.is_none() => match response {
                    Ok(response) => {
                        if response.canceled() {
                            // Compacted past what this replica has: read it all again.
                            bail!("etcd canceled the watch: {}", response.cancel_reason());
                        }
                        if let Some(header) = response.header() {
                            watch_from = watch_from.max(header.revision().saturating_add(1));
                        }
                        if self.apply(&mut mirror, response.events())? {
                            self.adopt(&mirror, false);
                        }
                    }
                    Err(err) => {
                        tracing::debug!("the watch of the leader's state failed: {err:#}");
                        changes = None;
                    }
                },
                leader = leaders.recv() => {
                    let Some((key, info)) = leader else {
                        bail!("the election's observer ended");
                    };
                    if let Some(ours) = &leading && key != ours.key() {
                        return Ok(Ended::LeaseLost("another replica's key leads the election"));
                    }
                    if leading.is_none() {
                        tracing::info!(leader = info.as_ref().map(|i| i.id.as_str()), "following");
                        replication.set_leader(info);
                    }
                }
                _ = registry.tick() => {
                    if let Err(err) = self.register(lease, &mut registered).await {
                        tracing::debug!("{err:#}");
                    }
                    if changes.is_none() && leading.is_none() {
                        changes = self.watch(watch_from).await.map_err(|err| {
                            tracing::debug!("the watch is not open again yet: {err:#}");
                        }).ok();
                    }
                }
            }
        }
    }

    async fn keep_alive(
        &self,
        lease: i64,
    ) -> anyhow::Result<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)> {
        let mut client = self.client.clone();
        self.deadline(client.lease_keep_alive(lease))
            .await
            .context("cannot keep the lease alive")
    }

    /// A watch of the state from revision `from`.
    async fn watch(&self, from: i64) -> anyhow::Result<etcd_client::WatchStream> {
        let mut client = self.client.clone();
        let (key, end) = self.etcd.watched();
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(from);
        self.deadline(client.watch(key, Some(options)))
            .await
            .context("cannot watch the leader's state")
    }

    /// Campaigning with `lease`: resolves once this replica leads.
    fn campaign(&self, election: &str, me: &[u8], lease: i64) -> Campaign {
        let (mut client, election, me) = (self.client.clone(), election.to_owned(), me.to_vec());
        Box::pin(async move { client.campaign(election, me, lease).await })
    }

    /// Takes the lead: fences the store on `key`, then adopts the state the
    /// previous leader left, which no one can change any more.
    async fn lead(&self, key: &etcd_client::LeaderKey) -> anyhow::Result<()> {
        self.etcd.set_writes(Writes::Fenced(Fence {
            key: key.key().to_vec(),
            revision: key.rev(),
        }));
        let (saved, _) = self.load().await?;
        self.adopt(&saved, true);
        Ok(())
    }

    fn stop_deciding(&self) {
        self.etcd.set_writes(Writes::Refused);
        self.control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stop_deciding();
        if self.replication.role() != Role::Single {
            self.replication.set_role(Role::Candidate, None);
        }
    }

    fn adopt(&self, saved: &Saved, deciding: bool) {
        let state = Saved {
            rollouts: saved.rollouts.clone(),
            decisions: saved.decisions.clone(),
            scores: saved.scores.clone(),
            feed: None,
            pins: saved.pins.clone(),
            timeline: Vec::new(),
        };
        self.control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .adopt(state, deciding);
    }

    /// Applies the changes of one watch response to `mirror`; whether any did.
    fn apply(&self, mirror: &mut Saved, events: &[etcd_client::Event]) -> anyhow::Result<bool> {
        let mut changed = false;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let value = (event.event_type() == EventType::Put).then(|| kv.value());
            let Some(change) = self.etcd.change(kv.key(), value)? else {
                continue;
            };
            match change {
                Change::Rollouts(rollouts) => mirror.rollouts = rollouts,
                Change::Scores(scores) => mirror.scores = scores,
                Change::Pins(pins) => mirror.pins = pins,
                Change::Decisions(decisions) => {
                    mirror.decisions.extend(decisions);
                    let excess = mirror
                        .decisions
                        .len()
                        .saturating_sub(crate::controller::HISTORY);
                    mirror.decisions.drain(..excess);
                }
            }
            changed = true;
        }
        Ok(changed)
    }

    /// Reads the saved state off the async threads (the store blocks).
    async fn load(&self) -> anyhow::Result<(Saved, i64)> {
        let etcd = Arc::clone(self.etcd);
        tokio::task::spawn_blocking(move || etcd.load_at())
            .await
            .map_err(|err| anyhow!("the state could not be read: {err}"))?
    }

    /// Puts this replica's record on its lease when it changed, and reads
    /// every replica's.
    async fn register(
        &self,
        lease: i64,
        registered: &mut Option<ReplicaInfo>,
    ) -> anyhow::Result<()> {
        let replication = self.replication;
        let mut info = replication.me().clone();
        {
            let control = self.control.lock().unwrap_or_else(PoisonError::into_inner);
            info.policy = control.policy_digest().to_owned();
            info.snapshot = control.snapshot().version.clone();
        }
        info.envoys = self.nodes.counts().nodes_connected;
        info.leader = replication.role() == Role::Leader;
        let mut client = self.client.clone();
        let prefix = format!("{}replicas/", self.etcd.prefix());
        if registered.as_ref() != Some(&info) {
            let key = format!("{prefix}{}", info.id);
            self.deadline(client.put(
                key,
                serde_json::to_vec(&info)?,
                Some(PutOptions::new().with_lease(lease)),
            ))
            .await
            .context("cannot register this replica")?;
            *registered = Some(info);
        }
        let listed = self
            .deadline(client.get(prefix, Some(GetOptions::new().with_prefix())))
            .await
            .context("cannot list the replicas")?;
        let replicas = listed
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        replication.set_replicas(replicas);
        Ok(())
    }

    fn election_name(&self) -> String {
        format!("{}leader", self.etcd.prefix())
    }

    /// `call`, or an error once the store's deadline passed.
    async fn deadline<T>(
        &self,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(result?),
            Err(_) => bail!("etcd did not answer within {:?}", self.timeout),
        }
    }
}
