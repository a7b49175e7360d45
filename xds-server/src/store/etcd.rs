//! The shared store: etcd (the v3 API), for replicas of `weir`.
//!
//! Every record lives under one prefix (`/weir/` by default):
//!
//! | key | value |
//! |---|---|
//! | `format` | the layout version, `1` |
//! | `rollouts` | every rollout's state, one JSON array |
//! | `scores`, `feed`, `pins` | JSON |
//! | `decisions/<seq>` | the decisions of one save, a JSON array; `<seq>` zero-padded |
//! | `timeline/<at_ms>` | one dashboard point, zero-padded time |
//!
//! A checkpoint is one etcd transaction. When the store is fenced (a leader
//! holds it, see [`Fence`]), every write is conditioned on the fence's key
//! still having the revision it was created at: a replica that lost its
//! leadership can never write, whatever its clock or its network says.
//!
//! The controller calls the store synchronously (as it does redb, whose
//! writes wait for the disk); the etcd client runs on the store's own small
//! runtime, and every call has a deadline, so a lost etcd is an error within
//! [`EtcdOptions::timeout`], never a hang.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};
use weir_policy::Feed;

use super::{Checkpoint, MAX_STORED_DECISIONS, Saved, Store};

mod members;
use crate::controller::{Decision, RolloutState, Scores};
use crate::timeline::Point;

/// The layout this build reads and writes.
const FORMAT: &str = "1";

/// Keys read per page when loading decisions and the timeline: each decision
/// batch is small, and a page stays well under gRPC's message limit.
const PAGE: i64 = 64;

/// etcd refuses transactions of more than 128 operations by default.
const MAX_TXN_OPS: usize = 100;

/// How to reach etcd, as `weir serve --store etcd://…` and its options say.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// `host:port` of each member.
    pub endpoints: Vec<String>,
    /// The prefix of every key, ending in `/`.
    pub prefix: String,
    /// The CA that signed etcd's serving certificate (TLS when set).
    pub ca_file: Option<PathBuf>,
    /// This client's certificate and key, for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// etcd's user and password, for etcd's `auth enable`.
    pub user: Option<(String, String)>,
    /// The deadline of every call.
    pub timeout: Duration,
}

impl EtcdOptions {
    /// Options for the plaintext `endpoints` with the default prefix and deadline.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: "/weir/".into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            user: None,
            timeout: Duration::from_secs(2),
        }
    }

    /// The same options under another prefix (a `/` is added if missing).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = if prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        self
    }

    fn urls(&self) -> Vec<String> {
        let scheme = if self.ca_file.is_some() {
            "https"
        } else {
            "http"
        };
        self.endpoints
            .iter()
            .map(|endpoint| format!("{scheme}://{endpoint}"))
            .collect()
    }

    /// How to connect; `deadline`: every request's, which also ends streams
    /// (watches, elections) that run longer, so a client for those has none.
    fn connect_options(&self, deadline: bool) -> anyhow::Result<ConnectOptions> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_keep_alive(Duration::from_secs(2), self.timeout)
            .with_require_leader(true);
        if deadline {
            options = options.with_timeout(self.timeout);
        }
        if let Some((user, password)) = &self.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(ca_file) = &self.ca_file {
            let read = |path: &PathBuf| {
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
            };
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(ca_file)?));
            match (&self.cert_file, &self.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => bail!("a client certificate for etcd needs both its file and its key"),
            }
            options = options.with_tls(tls);
        } else if self.cert_file.is_some() || self.key_file.is_some() {
            bail!("a client certificate for etcd needs the CA of etcd's certificate too");
        }
        Ok(options)
    }
}

/// The leadership a store's writes are conditioned on: the election key a
/// leader created and the revision it was created at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub revision: i64,
}

/// Whether, and on what condition, a store may write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Writes {
    /// Unconditioned: one `weir` alone on its prefix (and tests).
    #[default]
    Open,
    /// Only while `Fence` holds: the leader.
    Fenced(Fence),
    /// Never: a follower, or a leader that lost its lease.
    Refused,
}

/// One change of the controller's state, as a watch on the prefix sees it.
#[derive(Debug, PartialEq)]
pub enum Change {
    Rollouts(Vec<RolloutState>),
    Scores(Scores),
    Pins(Option<Feed>),
    Decisions(Vec<Decision>),
}

/// The keys of one prefix.
#[derive(Clone, Debug)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn decision_batch(&self, seq: u64) -> String {
        self.key(&format!("decisions/{seq:020}"))
    }

    fn timeline_point(&self, at_ms: u64) -> String {
        self.key(&format!("timeline/{at_ms:020}"))
    }

    /// The end of the range of keys that start with `name`.
    fn range_end(&self, name: &str) -> Vec<u8> {
        let mut end = self.key(name).into_bytes();
        if let Some(last) = end.last_mut() {
            *last = last.saturating_add(1);
        }
        end
    }
}

/// The etcd store.
pub struct EtcdStore {
    runtime: Option<tokio::runtime::Runtime>,
    client: Client,
    /// For the replication's watches, election and lease: no request deadline.
    streams: Client,
    keys: Keys,
    timeout: Duration,
    writes: Mutex<Writes>,
    described: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.described)
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Dropping a runtime waits for its tasks, which an async caller may not do.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl EtcdStore {
    /// Connects to etcd and checks (or writes) the layout version.
    pub fn open(options: &EtcdOptions) -> anyhow::Result<Self> {
        let described = format!(
            "etcd at {} (prefix {})",
            options.endpoints.join(","),
            options.prefix
        );
        if options.endpoints.is_empty() {
            bail!("no etcd endpoint given");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-etcd")
            .enable_all()
            .build()?;
        let connect = |deadline: bool| -> anyhow::Result<Client> {
            let (urls, connect) = (options.urls(), options.connect_options(deadline)?);
            on_runtime(&runtime, options.timeout, async move {
                Ok(Client::connect(urls, Some(connect)).await?)
            })
            .with_context(|| format!("cannot connect to {described}"))
        };
        let (client, streams) = (connect(true)?, connect(false)?);
        runtime.spawn(members::keep_to_healthy(
            options.urls(),
            options.connect_options(true)?,
            vec![client.clone(), streams.clone()],
        ));
        let store = Self {
            runtime: Some(runtime),
            client,
            streams,
            keys: Keys {
                prefix: options.prefix.clone(),
            },
            timeout: options.timeout,
            writes: Mutex::default(),
            described,
        };
        store
            .init()
            .with_context(|| format!("cannot use {}", store.described))?;
        Ok(store)
    }

    /// Sets the condition of every later write.
    pub fn set_writes(&self, writes: Writes) {
        let mut current = self
            .writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = writes;
    }

    /// Everything saved, and the etcd revision it was read at: a watch from
    /// the next revision sees every later change exactly once.
    pub fn load_at(&self) -> anyhow::Result<(Saved, i64)> {
        self.read()
            .with_context(|| format!("cannot read {}", self.described))
    }

    /// The key watched to follow the state (every key under the prefix).
    pub fn watched(&self) -> (String, Vec<u8>) {
        (self.keys.key(""), self.keys.range_end(""))
    }

    /// What a put or a delete of `key` seen by a watch changes; `None` for
    /// keys a follower has no use for (the feed, made from the rest; the
    /// dashboard's timeline; other replicas' records).
    pub fn change(&self, key: &[u8], value: Option<&[u8]>) -> anyhow::Result<Option<Change>> {
        let Some(name) = key
            .strip_prefix(self.keys.prefix.as_bytes())
            .and_then(|name| std::str::from_utf8(name).ok())
        else {
            return Ok(None);
        };
        let parse = |what: &str| -> anyhow::Result<&[u8]> {
            value.ok_or_else(|| anyhow!("{what} were deleted"))
        };
        Ok(Some(match name {
            "rollouts" => Change::Rollouts(
                serde_json::from_slice(parse("the rollout states")?)
                    .context("the rollout states are not readable")?,
            ),
            "scores" => Change::Scores(
                serde_json::from_slice(parse("the scores")?)
                    .context("the saved scores are not readable")?,
            ),
            "pins" => Change::Pins(
                value
                    .map(serde_json::from_slice)
                    .transpose()
                    .context("the pinned feed values are not readable")?,
            ),
            name if name.starts_with("decisions/") => match value {
                Some(json) => Change::Decisions(
                    serde_json::from_slice(json)
                        .with_context(|| format!("decisions {name} are not readable"))?,
                ),
                // Old batches are deleted as new ones come: nothing to undo.
                None => return Ok(None),
            },
            _ => return Ok(None),
        }))
    }

    /// A client of the same etcd whose requests have the store's deadline.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client of the same etcd without a request deadline, for watches, the
    /// election and the lease's keep-alive, which last as long as they must
    /// (callers bound each request themselves).
    pub fn streaming_client(&self) -> Client {
        self.streams.clone()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.keys.prefix
    }

    fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = anyhow::Result<T>> + Send + 'static,
    ) -> anyhow::Result<T> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| anyhow!("the etcd client is shut down"))?;
        on_runtime(runtime, self.timeout, future)
    }

    fn init(&self) -> anyhow::Result<()> {
        let (mut client, key) = (self.client.clone(), self.keys.key("format"));
        let found = self.run(async move {
            let txn = Txn::new()
                .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), FORMAT, None)])
                .or_else([TxnOp::get(key, None)]);
            let response = client.txn(txn).await?;
            Ok(first_value(&response.op_responses()))
        })?;
        match found {
            None => Ok(()),
            Some(version) if version == FORMAT.as_bytes() => Ok(()),
            Some(other) => bail!(
                "it has layout version {}, this weir reads version {FORMAT} (written by another release?)",
                String::from_utf8_lossy(&other)
            ),
        }
    }

    /// Runs `ops` as one transaction under the fence, if any.
    fn write(&self, ops: Vec<TxnOp>) -> anyhow::Result<()> {
        let writes = self
            .writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let compares: Vec<Compare> = match writes {
            Writes::Open => Vec::new(),
            Writes::Fenced(f) => vec![Compare::create_revision(
                f.key,
                CompareOp::Equal,
                f.revision,
            )],
            Writes::Refused => bail!("this replica is not the leader: only the leader writes"),
        };
        let mut client = self.client.clone();
        self.run(async move {
            let response = client.txn(Txn::new().when(compares).and_then(ops)).await?;
            if !response.succeeded() {
                bail!("this replica is no longer the leader: the write was refused");
            }
            Ok(())
        })
    }

    /// The sequence number of the newest decision batch, if any.
    fn last_batch(&self) -> anyhow::Result<Option<u64>> {
        let mut client = self.client.clone();
        let (from, end) = (
            self.keys.key("decisions/"),
            self.keys.range_end("decisions/"),
        );
        let prefix_len = from.len();
        self.run(async move {
            let options = GetOptions::new()
                .with_range(end)
                .with_limit(1)
                .with_keys_only()
                .with_sort(SortTarget::Key, SortOrder::Descend);
            let response = client.get(from, Some(options)).await?;
            Ok(response
                .kvs()
                .first()
                .and_then(|kv| kv.key().get(prefix_len..))
                .and_then(|seq| std::str::from_utf8(seq).ok()?.parse().ok()))
        })
    }

    fn read(&self) -> anyhow::Result<(Saved, i64)> {
        let mut client = self.client.clone();
        let keys = self.keys.clone();
        self.run(async move {
            let singles = ["rollouts", "scores", "feed", "pins"].map(|name| keys.key(name));
            let response = client
                .txn(Txn::new().and_then(singles.clone().map(|key| TxnOp::get(key, None))))
                .await?;
            let revision = response.header().map_or(0, |h| h.revision());
            let values: Vec<Option<Vec<u8>>> = response
                .op_responses()
                .iter()
                .map(|op| first_value(std::slice::from_ref(op)))
                .collect();
            let value = |i: usize| values.get(i).cloned().flatten();
            let rollouts: Vec<RolloutState> = match value(0) {
                Some(json) => {
                    serde_json::from_slice(&json).context("the rollout states are not readable")?
                }
                None => Vec::new(),
            };
            let scores: Scores = match value(1) {
                Some(json) => {
                    serde_json::from_slice(&json).context("the saved scores are not readable")?
                }
                None => Scores::default(),
            };
            let feed: Option<Feed> = value(2)
                .map(|json| serde_json::from_slice(&json))
                .transpose()
                .context("the saved feed is not readable")?;
            let pins: Option<Feed> = value(3)
                .map(|json| serde_json::from_slice(&json))
                .transpose()
                .context("the pinned feed values are not readable")?;

            let mut decisions = Vec::new();
            for (key, json) in range(&mut client, &keys, "decisions/", revision).await? {
                let batch: Vec<Decision> = serde_json::from_slice(&json)
                    .with_context(|| format!("decisions {key} are not readable"))?;
                decisions.extend(batch);
            }
            let excess = decisions.len().saturating_sub(max_decisions());
            decisions.drain(..excess);
            let mut timeline = Vec::new();
            for (key, json) in range(&mut client, &keys, "timeline/", revision).await? {
                let point: Point = serde_json::from_slice(&json)
                    .with_context(|| format!("timeline point {key} is not readable"))?;
                timeline.push(point);
            }
            let saved = Saved {
                rollouts,
                decisions,
                scores,
                feed,
                pins,
                timeline,
            };
            Ok((saved, revision))
        })
    }

    fn checkpoint_ops(&self, checkpoint: &Checkpoint<'_>) -> anyhow::Result<Vec<TxnOp>> {
        let keys = &self.keys;
        let mut ops = vec![
            TxnOp::put(
                keys.key("rollouts"),
                serde_json::to_vec(checkpoint.rollouts)?,
                None,
            ),
            TxnOp::put(
                keys.key("scores"),
                serde_json::to_vec(checkpoint.scores)?,
                None,
            ),
            TxnOp::put(keys.key("feed"), serde_json::to_vec(checkpoint.feed)?, None),
        ];
        if !checkpoint.new_decisions.is_empty() {
            // Only the leader appends, so the next number is the last one's successor.
            let seq = self.last_batch()?.map_or(0, |last| last.saturating_add(1));
            let keep = checkpoint
                .new_decisions
                .len()
                .saturating_sub(max_decisions());
            let batch = checkpoint.new_decisions.get(keep..).unwrap_or_default();
            ops.push(TxnOp::put(
                keys.decision_batch(seq),
                serde_json::to_vec(batch)?,
                None,
            ));
            // Every batch holds at least one decision: keeping the newest
            // MAX_STORED_DECISIONS batches keeps at least as many decisions.
            if let Some(oldest_kept) = seq.checked_sub(MAX_STORED_DECISIONS - 1) {
                ops.push(TxnOp::delete(
                    keys.key("decisions/"),
                    Some(
                        etcd_client::DeleteOptions::new()
                            .with_range(keys.decision_batch(oldest_kept)),
                    ),
                ));
            }
        }
        Ok(ops)
    }
}

impl Store for EtcdStore {
    fn load(&self) -> anyhow::Result<Saved> {
        self.load_at().map(|(saved, _)| saved)
    }

    fn save(&self, checkpoint: &Checkpoint<'_>) -> anyhow::Result<()> {
        self.checkpoint_ops(checkpoint)
            .and_then(|ops| self.write(ops))
            .with_context(|| format!("cannot save to {}", self.described))
    }

    fn save_pins(&self, pins: Option<&Feed>) -> anyhow::Result<()> {
        let key = self.keys.key("pins");
        let op = match pins {
            Some(pins) => TxnOp::put(key, serde_json::to_vec(pins)?, None),
            None => TxnOp::delete(key, None),
        };
        self.write(vec![op])
            .with_context(|| format!("cannot save to {}", self.described))
    }

    fn save_timeline(&self, points: &[Point], forget_until_ms: u64) -> anyhow::Result<()> {
        let mut ops = Vec::with_capacity(points.len().saturating_add(1));
        ops.push(TxnOp::delete(
            self.keys.key("timeline/"),
            Some(
                etcd_client::DeleteOptions::new()
                    .with_range(self.keys.timeline_point(forget_until_ms.saturating_add(1))),
            ),
        ));
        for point in points.iter().filter(|p| p.at_ms > forget_until_ms) {
            ops.push(TxnOp::put(
                self.keys.timeline_point(point.at_ms),
                serde_json::to_vec(point)?,
                None,
            ));
        }
        // Points are a chart, not a decision: a long backlog may take several
        // transactions.
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let chunk: Vec<TxnOp> = ops.by_ref().take(MAX_TXN_OPS).collect();
            self.write(chunk)
                .with_context(|| format!("cannot save to {}", self.described))?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.described.clone()
    }
}

fn max_decisions() -> usize {
    usize::try_from(MAX_STORED_DECISIONS).unwrap_or(usize::MAX)
}

/// Every key and value under `keys.key(name)` at `revision`, page by page.
async fn range(
    client: &mut Client,
    keys: &Keys,
    name: &str,
    revision: i64,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let end = keys.range_end(name);
    let mut from = keys.key(name).into_bytes();
    let mut found = Vec::new();
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(PAGE)
            .with_revision(revision);
        let response = client.get(from.clone(), Some(options)).await?;
        for kv in response.kvs() {
            found.push((
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            ));
        }
        match response.kvs().last() {
            Some(last) if response.more() => {
                // The next page starts just after the last key seen.
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(found),
        }
    }
}

/// The value of the first key a transaction's first get found.
fn first_value(responses: &[TxnOpResponse]) -> Option<Vec<u8>> {
    match responses.first()? {
        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    }
}

/// Runs `future` on `runtime` and waits for it, at most `timeout`, from any
/// thread (an async caller's included: the caller blocks, the runtime works).
fn on_runtime<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    timeout: Duration,
    future: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    let (done, result) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let outcome = tokio::time::timeout(timeout, future)
            .await
            .unwrap_or_else(|_| Err(anyhow!("etcd did not answer within {timeout:?}")));
        let _ = done.send(outcome);
    });
    result
        .recv_timeout(timeout.saturating_add(Duration::from_secs(1)))
        .unwrap_or_else(|_| Err(anyhow!("etcd did not answer within {timeout:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::{checkpoint, decision, pins, scores, state};

    /// A real etcd (one member) for one test, and an opener of the store on it.
    fn etcd() -> (weir_testbed::etcd::Etcd, impl Fn() -> Box<dyn Store>) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let etcd = runtime.block_on(weir_testbed::etcd::Etcd::start()).unwrap();
        let endpoints = etcd.endpoints().iter().map(ToString::to_string).collect();
        let options = EtcdOptions::new(endpoints).with_prefix("/test/weir");
        (etcd, move || {
            Box::new(EtcdStore::open(&options).unwrap()) as Box<dyn Store>
        })
    }

    crate::store::contract::store_contract_tests!(etcd);

    #[test]
    fn a_fenced_write_is_refused_once_the_fence_is_gone() {
        let (etcd, _) = etcd();
        let endpoints = etcd.endpoints().iter().map(ToString::to_string).collect();
        let store = EtcdStore::open(&EtcdOptions::new(endpoints)).unwrap();
        let mut client = store.client();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let revision = runtime
            .block_on(client.put("/election/leader", "me", None))
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let fence = Fence {
            key: b"/election/leader".to_vec(),
            revision,
        };
        store.set_writes(Writes::Fenced(fence.clone()));
        let first = [state("a", 0, 100)];
        store
            .save(&checkpoint(&first, &[decision(1)], &scores(0.5)))
            .unwrap();

        // Another leader's key (deleted and created again) is another fence.
        runtime
            .block_on(client.delete("/election/leader", None))
            .unwrap();
        runtime
            .block_on(client.put("/election/leader", "someone else", None))
            .unwrap();
        let refused = store
            .save(&checkpoint(
                &[state("a", 1, 500)],
                &[decision(2)],
                &scores(0.6),
            ))
            .unwrap_err();
        assert!(
            format!("{refused:#}").contains("no longer the leader"),
            "{refused:#}"
        );
        assert!(store.save_pins(Some(&pins())).is_err());
        assert!(store.save_timeline(&[], 0).is_err());
        let saved = store.load().unwrap();
        assert_eq!(saved.rollouts, first);
        assert_eq!(saved.decisions, vec![decision(1)]);
        assert_eq!(saved.pins, None);
    }

    #[test]
    fn a_follower_never_writes_and_sees_the_leaders_writes_as_changes() {
        let (etcd, _) = etcd();
        let endpoints: Vec<String> = etcd.endpoints().iter().map(ToString::to_string).collect();
        let leader = EtcdStore::open(&EtcdOptions::new(endpoints.clone())).unwrap();
        let follower = EtcdStore::open(&EtcdOptions::new(endpoints)).unwrap();
        follower.set_writes(Writes::Refused);
        let refused = follower
            .save(&checkpoint(&[state("a", 0, 100)], &[], &scores(0.5)))
            .unwrap_err();
        assert!(
            format!("{refused:#}").contains("not the leader"),
            "{refused:#}"
        );
        assert!(follower.save_pins(Some(&pins())).is_err());

        let (_, revision) = follower.load_at().unwrap();
        let rollouts = [state("a", 1, 500)];
        leader
            .save(&checkpoint(&rollouts, &[decision(7)], &scores(0.25)))
            .unwrap();
        leader.save_pins(Some(&pins())).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (key, end) = follower.watched();
        let mut client = follower.client();
        let changes = runtime.block_on(async {
            let options = etcd_client::WatchOptions::new()
                .with_range(end)
                .with_start_revision(revision + 1);
            let mut stream = client.watch(key, Some(options)).await.unwrap();
            let mut changes = Vec::new();
            while changes.len() < 4 {
                let response = stream.message().await.unwrap().unwrap();
                for event in response.events() {
                    let kv = event.kv().unwrap();
                    let value =
                        (event.event_type() == etcd_client::EventType::Put).then(|| kv.value());
                    changes.extend(follower.change(kv.key(), value).unwrap());
                }
            }
            changes
        });
        assert!(
            changes.contains(&Change::Rollouts(rollouts.to_vec())),
            "{changes:?}"
        );
        assert!(
            changes.contains(&Change::Decisions(vec![decision(7)])),
            "{changes:?}"
        );
        assert!(changes.contains(&Change::Pins(Some(pins()))), "{changes:?}");
        assert!(
            changes.iter().any(|c| matches!(c, Change::Scores(_))),
            "{changes:?}"
        );
    }

    #[test]
    fn another_layout_version_is_refused() {
        let (etcd, _) = etcd();
        let endpoints: Vec<String> = etcd.endpoints().iter().map(ToString::to_string).collect();
        let store = EtcdStore::open(&EtcdOptions::new(endpoints.clone())).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime
            .block_on(store.client().put("/weir/format", "99", None))
            .unwrap();
        let message = format!(
            "{:#}",
            EtcdStore::open(&EtcdOptions::new(endpoints)).unwrap_err()
        );
        assert!(message.contains("layout version 99"), "{message}");
        assert!(message.contains("prefix /weir/"), "{message}");
    }

    #[test]
    fn an_unreachable_etcd_is_an_error_within_the_deadline() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut options = EtcdOptions::new(vec![port.to_string()]);
        options.timeout = Duration::from_millis(500);
        let started = std::time::Instant::now();
        let message = format!("{:#}", EtcdStore::open(&options).unwrap_err());
        assert!(message.contains(&port.to_string()), "{message}");
        assert!(started.elapsed() < Duration::from_secs(10), "{message}");
    }
}
