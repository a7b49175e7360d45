//! Scale: one `weir serve`, and a load client of its own — many ADS streams,
//! each a distinct node, multiplexed over a few HTTP/2 connections — that
//! subscribes as Envoy does and ACKs every response. Every stream records when
//! it ACKed each version of each type; a policy change has converged when
//! every stream has ACKed the version weir serves of every type that changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use weir_testbed::procfs;
use weir_testbed::weir::{WasmDelivery, Weir};

use crate::edits::{Editor, Kind, write_policy};
use crate::{CDS, ECDS, EDS, Jitter, LDS, RDS, TYPES, short_type};

/// The route configuration and the filter's extension configuration, by the
/// names weir gives them (what Envoy learns from the listener).
const ROUTE_NAME: &str = "weir_routes";
const FILTER_NAME: &str = "weir_filter";

/// The largest response a stream accepts (weir's own limit is 256 MiB).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// How long all streams may take to ACK their first configuration.
const INITIAL_DEADLINE: Duration = Duration::from_secs(60);
/// How long all streams may take to ACK one change.
const CHANGE_DEADLINE: Duration = Duration::from_secs(30);
/// How long to connect one HTTP/2 channel.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A pause before reading weir's memory, for its allocator to settle.
const SETTLE: Duration = Duration::from_millis(500);

/// State-of-the-world or incremental xDS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    /// `StreamAggregatedResources`.
    Sotw,
    /// `DeltaAggregatedResources`.
    Delta,
}

impl Protocol {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Sotw => "state of the world",
            Self::Delta => "delta",
        }
    }
}

/// What the run was asked to do.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) protocol: Protocol,
    pub(crate) streams: usize,
    pub(crate) channels: usize,
    pub(crate) changes: usize,
    pub(crate) poll: Duration,
    /// `weir serve` processes sharing the streams (more than one: replicas
    /// on a real etcd, the connections spread over them).
    pub(crate) replicas: usize,
}

impl Settings {
    /// The protocol, and the replicas when there are several.
    pub(crate) fn label(&self) -> String {
        match self.replicas {
            0 | 1 => self.protocol.label().to_owned(),
            n => format!("{}, {n} replicas", self.protocol.label()),
        }
    }
}

/// The `weir serve` processes of a run, and the etcd replicas share.
struct Servers {
    weirs: Vec<Weir>,
    _etcd: Option<weir_testbed::etcd::Etcd>,
}

impl Servers {
    async fn start(path: &Path, replicas: usize) -> anyhow::Result<Self> {
        if replicas <= 1 {
            let weir = Weir::start(path, WasmDelivery::Local).await?;
            return Ok(Self {
                weirs: vec![weir],
                _etcd: None,
            });
        }
        let etcd = weir_testbed::etcd::Etcd::start().await?;
        let store = etcd.store_url();
        let mut weirs = Vec::with_capacity(replicas);
        for i in 0..replicas {
            let id = format!("r{i}");
            let env = [
                ("WEIR_STORE", store.as_str()),
                ("WEIR_REPLICA_ID", id.as_str()),
            ];
            weirs.push(Weir::start_at(path, "127.0.0.1:0".parse()?, &env).await?);
        }
        Ok(Self {
            weirs,
            _etcd: Some(etcd),
        })
    }

    /// The largest of the replicas' `key` in `/proc/<pid>/status` (kB).
    fn max_kb(&self, key: &str) -> anyhow::Result<u64> {
        let mut max = 0;
        for weir in &self.weirs {
            max = max.max(procfs::status_kb(weir.pid(), key)?);
        }
        Ok(max)
    }

    /// The replicas' CPU time, summed.
    fn cpu_ns(&self) -> Option<u64> {
        self.weirs.iter().map(|w| procfs::cpu_ns(w.pid())).sum()
    }
}

/// One policy change, measured.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub(crate) kind: Kind,
    pub(crate) changed: Vec<&'static str>,
    /// From the write until the first stream had ACKed every changed type.
    pub(crate) first: Duration,
    /// … until half the streams had.
    pub(crate) median: Duration,
    /// … until every stream had.
    pub(crate) all: Duration,
    /// weir's CPU time from the write until every stream had ACKed.
    pub(crate) weir_cpu: Option<Duration>,
    /// The load client's.
    pub(crate) client_cpu: Option<Duration>,
    /// weir's `VmRSS` once every stream had ACKed (kB).
    pub(crate) rss_kb: u64,
}

/// The whole run.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    pub(crate) settings: Settings,
    /// From opening the streams until every one had ACKed every type.
    pub(crate) initial: Duration,
    /// weir's and the client's CPU time over the same.
    pub(crate) initial_weir_cpu: Option<Duration>,
    pub(crate) initial_client_cpu: Option<Duration>,
    /// Nodes weir's status showed with a connected stream.
    pub(crate) nodes_connected: usize,
    /// weir's `VmRSS` before any stream, with every stream connected, after
    /// the changes; and its `VmHWM` at the end (kB).
    pub(crate) rss_idle_kb: u64,
    pub(crate) rss_connected_kb: u64,
    /// The peak (VmHWM) once every stream had its first configuration.
    pub(crate) hwm_connected_kb: u64,
    pub(crate) rss_after_kb: u64,
    pub(crate) hwm_kb: u64,
    pub(crate) changes: Vec<Change>,
}

/// What one stream has ACKed.
#[derive(Debug, Default)]
struct Tracker {
    /// Per type (in [`TYPES`] order), the last version ACKed.
    acked: [Option<String>; 5],
    /// Every time the ACKed version of a type changed: type, new version, when.
    changes: Vec<(usize, String, Instant)>,
}

type Shared = Arc<Mutex<Tracker>>;

fn lock(tracker: &Shared) -> std::sync::MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tracker {
    fn record(tracker: &Shared, type_index: usize, version: &str) {
        let at = Instant::now();
        let mut t = lock(tracker);
        if t.acked[type_index].as_deref() != Some(version) {
            t.acked[type_index] = Some(version.to_owned());
            t.changes.push((type_index, version.to_owned(), at));
        }
    }

    /// When the stream first ACKed `version` of the type, at `since` or later
    /// (a change may bring back a version ACKed before).
    fn acked_since(&self, type_index: usize, version: &str, since: Instant) -> Option<Instant> {
        self.changes
            .iter()
            .find(|(i, v, at)| *i == type_index && v == version && *at >= since)
            .map(|(_, _, at)| *at)
    }
}

fn type_index(type_url: &str) -> anyhow::Result<usize> {
    TYPES
        .iter()
        .position(|t| *t == type_url)
        .ok_or_else(|| anyhow::anyhow!("a response of an unexpected type: {type_url}"))
}

/// Whether a cluster resource is an EDS cluster (its endpoints come by EDS).
fn is_eds(any: &Any) -> anyhow::Result<(String, bool)> {
    let cluster = Cluster::decode(any.value.as_slice())?;
    let eds = cluster.cluster_discovery_type
        == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
    Ok((cluster.name, eds))
}

fn node(id: &str) -> Node {
    Node {
        id: id.to_owned(),
        cluster: "weir-xds-bench".to_owned(),
        ..Default::default()
    }
}

/// One state-of-the-world stream, as Envoy runs it: clusters and listeners
/// by wildcard, the endpoints of every EDS cluster it is sent, the route and
/// the filter's configuration once it has the listener; every response ACKed.
async fn sotw_stream(channel: Channel, id: String, tracker: Shared) -> anyhow::Result<()> {
    let (requests, outgoing) = mpsc::channel::<DiscoveryRequest>(16);
    for (i, type_url) in [CDS, LDS].into_iter().enumerate() {
        requests
            .send(DiscoveryRequest {
                node: (i == 0).then(|| node(&id)),
                type_url: type_url.to_owned(),
                ..Default::default()
            })
            .await?;
    }
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    let eds_index = type_index(EDS)?;
    let mut names: [Vec<String>; 5] = Default::default();
    let mut subscribed = [true, false, true, false, false];
    // Per type, the version and nonce of the last response.
    let mut last: [(String, String); 5] = Default::default();
    while let Some(response) = responses.message().await? {
        let DiscoveryResponse {
            version_info,
            resources,
            type_url,
            nonce,
            ..
        } = response;
        let index = type_index(&type_url)?;
        last[index] = (version_info.clone(), nonce.clone());
        let mut follow = Vec::new();
        if type_url == CDS {
            let mut eds = Vec::new();
            for any in &resources {
                let (name, is_eds) = is_eds(any)?;
                if is_eds {
                    eds.push(name);
                }
            }
            eds.sort();
            if !subscribed[eds_index] || eds != names[eds_index] {
                names[eds_index] = eds;
                follow.push(eds_index);
            }
        } else if type_url == LDS {
            for (type_url, name) in [(RDS, ROUTE_NAME), (ECDS, FILTER_NAME)] {
                let i = type_index(type_url)?;
                if !subscribed[i] {
                    names[i] = vec![name.to_owned()];
                    follow.push(i);
                }
            }
        }
        requests
            .send(DiscoveryRequest {
                version_info: version_info.clone(),
                resource_names: names[index].clone(),
                type_url,
                response_nonce: nonce,
                ..Default::default()
            })
            .await?;
        Tracker::record(&tracker, index, &version_info);
        for i in follow {
            subscribed[i] = true;
            let (version_info, response_nonce) = last[i].clone();
            requests
                .send(DiscoveryRequest {
                    version_info,
                    resource_names: names[i].clone(),
                    type_url: TYPES[i].to_owned(),
                    response_nonce,
                    ..Default::default()
                })
                .await?;
        }
    }
    Ok(())
}

/// One delta stream, subscribing as [`sotw_stream`] does, by difference.
async fn delta_stream(channel: Channel, id: String, tracker: Shared) -> anyhow::Result<()> {
    let (requests, outgoing) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    for (i, type_url) in [CDS, LDS].into_iter().enumerate() {
        requests
            .send(DeltaDiscoveryRequest {
                node: (i == 0).then(|| node(&id)),
                type_url: type_url.to_owned(),
                ..Default::default()
            })
            .await?;
    }
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(outgoing))
        .await?
        .into_inner();
    // Cluster name → whether it is an EDS cluster.
    let mut clusters: BTreeMap<String, bool> = BTreeMap::new();
    let mut eds_subscribed: BTreeSet<String> = BTreeSet::new();
    let mut listener_seen = false;
    while let Some(response) = responses.message().await? {
        let DeltaDiscoveryResponse {
            system_version_info,
            resources,
            type_url,
            removed_resources,
            nonce,
            ..
        } = response;
        let index = type_index(&type_url)?;
        let mut follow = Vec::new();
        if type_url == CDS {
            for resource in &resources {
                if let Some(any) = &resource.resource {
                    let (_, eds) = is_eds(any)?;
                    clusters.insert(resource.name.clone(), eds);
                }
            }
            for name in &removed_resources {
                clusters.remove(name);
            }
            let wanted: BTreeSet<String> = clusters
                .iter()
                .filter(|(_, eds)| **eds)
                .map(|(name, _)| name.clone())
                .collect();
            let subscribe: Vec<String> = wanted.difference(&eds_subscribed).cloned().collect();
            let unsubscribe: Vec<String> = eds_subscribed.difference(&wanted).cloned().collect();
            if !subscribe.is_empty() || !unsubscribe.is_empty() {
                follow.push(DeltaDiscoveryRequest {
                    type_url: EDS.to_owned(),
                    resource_names_subscribe: subscribe,
                    resource_names_unsubscribe: unsubscribe,
                    ..Default::default()
                });
                eds_subscribed = wanted;
            }
        } else if type_url == LDS && !listener_seen {
            listener_seen = true;
            for (type_url, name) in [(RDS, ROUTE_NAME), (ECDS, FILTER_NAME)] {
                follow.push(DeltaDiscoveryRequest {
                    type_url: type_url.to_owned(),
                    resource_names_subscribe: vec![name.to_owned()],
                    ..Default::default()
                });
            }
        }
        requests
            .send(DeltaDiscoveryRequest {
                type_url,
                response_nonce: nonce,
                ..Default::default()
            })
            .await?;
        Tracker::record(&tracker, index, &system_version_info);
        for request in follow {
            requests.send(request).await?;
        }
    }
    Ok(())
}

/// Per type URL, the version weir serves.
/// (From `GET /v1/snapshot`: `/v1/status` lists every node, which at this
/// scale would make the measurement cost weir more than what it measures.)
async fn serving(weir: &Weir) -> anyhow::Result<[String; 5]> {
    let status = weir.get_json("/v1/snapshot").await?;
    let mut versions: [String; 5] = Default::default();
    for (i, t) in TYPES.iter().enumerate() {
        versions[i] = status["types"][*t]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no version of {t} in weir's status"))?
            .to_owned();
    }
    Ok(versions)
}

/// When each stream had ACKed, since `since`, `versions` of every type in
/// `types`; `None` while any has not.
fn completions(
    trackers: &[Shared],
    types: &[usize],
    versions: &[String; 5],
    since: Instant,
) -> Option<Vec<Instant>> {
    trackers
        .iter()
        .map(|tracker| {
            let t = lock(tracker);
            types
                .iter()
                .map(|&i| t.acked_since(i, &versions[i], since))
                .try_fold(None::<Instant>, |latest, at| {
                    let at = at?;
                    Some(Some(latest.map_or(at, |l| l.max(at))))
                })
                .flatten()
        })
        .collect()
}

/// A candidate for the versions every stream has converged on: per type,
/// the version all streams last ACKed, or `None` while they disagree.
fn agreed(trackers: &[Shared]) -> Option<[String; 5]> {
    let mut versions: [Option<String>; 5] = Default::default();
    for tracker in trackers {
        let t = lock(tracker);
        for (i, acked) in t.acked.iter().enumerate() {
            let acked = acked.as_ref()?;
            match &versions[i] {
                None => versions[i] = Some(acked.clone()),
                Some(v) if v == acked => {}
                Some(_) => return None,
            }
        }
    }
    let [a, b, c, d, e] = versions;
    Some([a?, b?, c?, d?, e?])
}

/// Fails if any stream ended: every one must stay open for the whole run.
fn check_streams(tasks: &mut JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    if let Some(done) = tasks.try_join_next() {
        let outcome = done.map_err(|e| anyhow::anyhow!("a stream task failed: {e}"))?;
        outcome.map_err(|e| anyhow::anyhow!("a stream failed: {e:#}"))?;
        anyhow::bail!("a stream was closed by weir");
    }
    Ok(())
}

fn cpu_between(before: Option<u64>, after: Option<u64>) -> Option<Duration> {
    Some(Duration::from_nanos(after?.checked_sub(before?)?))
}

/// Runs the scale benchmark with `settings` on `policy` (a policy serialised to JSON).
pub(crate) async fn run(
    settings: Settings,
    policy: Value,
    spare_endpoint: String,
    dir: &Path,
) -> anyhow::Result<Run> {
    let path = dir.join(format!("scale-{:?}-policy.yaml", settings.protocol).to_lowercase());
    let mut editor = Editor::new(policy, spare_endpoint)?;
    write_policy(&path, editor.doc())?;
    let servers = Servers::start(&path, settings.replicas).await?;
    let weir = servers
        .weirs
        .first()
        .ok_or_else(|| anyhow::anyhow!("no weir started"))?;
    let me = std::process::id();
    tokio::time::sleep(SETTLE).await;
    let rss_idle_kb = servers.max_kb("VmRSS")?;

    let mut channels = Vec::with_capacity(settings.channels);
    for c in 0..settings.channels.max(1) {
        let serving = &servers.weirs[c % servers.weirs.len()];
        let channel = Endpoint::from_shared(format!("http://{}", serving.xds_addr()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await?;
        channels.push(channel);
    }
    let baseline = serving(weir).await?;
    let trackers: Vec<Shared> = (0..settings.streams).map(|_| Shared::default()).collect();
    let mut tasks = JoinSet::new();
    let (weir_cpu0, client_cpu0) = (servers.cpu_ns(), procfs::cpu_ns(me));
    let opened = Instant::now();
    for (i, tracker) in trackers.iter().enumerate() {
        let channel = channels[i % channels.len()].clone();
        let (id, tracker) = (format!("bench-node-{i}"), Arc::clone(tracker));
        match settings.protocol {
            Protocol::Sotw => tasks.spawn(sotw_stream(channel, id, tracker)),
            Protocol::Delta => tasks.spawn(delta_stream(channel, id, tracker)),
        };
    }
    let every_type: Vec<usize> = (0..TYPES.len()).collect();
    let initial_done = loop {
        check_streams(&mut tasks)?;
        if let Some(done) = completions(&trackers, &every_type, &baseline, opened) {
            break done;
        }
        anyhow::ensure!(
            opened.elapsed() < INITIAL_DEADLINE,
            "the streams did not all ACK their first configuration in {INITIAL_DEADLINE:?}"
        );
        tokio::time::sleep(settings.poll).await;
    };
    let (weir_cpu1, client_cpu1) = (servers.cpu_ns(), procfs::cpu_ns(me));
    let initial = initial_done
        .iter()
        .max()
        .map_or(Duration::ZERO, |last| *last - opened);
    tokio::time::sleep(SETTLE).await;
    let rss_connected_kb = servers.max_kb("VmRSS")?;
    let hwm_connected_kb = servers.max_kb("VmHWM")?;
    let mut jitter = Jitter::new(0xacdc);
    let mut changes = Vec::with_capacity(settings.changes);
    for c in 0..settings.changes {
        let kind = Kind::ALL[c % Kind::ALL.len()];
        let before = serving(weir).await?;
        editor.apply(kind)?;
        tokio::time::sleep(jitter.next(crate::WEIR_FILE_POLL)).await;
        let (weir_cpu0, client_cpu0) = (servers.cpu_ns(), procfs::cpu_ns(me));
        let written = write_policy(&path, editor.doc())?;
        let (changed, done) = loop {
            check_streams(&mut tasks)?;
            anyhow::ensure!(
                written.elapsed() < CHANGE_DEADLINE,
                "change {c} ({kind:?}) did not reach every stream in {CHANGE_DEADLINE:?}"
            );
            tokio::time::sleep(settings.poll).await;
            let Some(agreed) = agreed(&trackers) else {
                continue;
            };
            if agreed == before {
                continue;
            }
            // Every stream agrees on new versions: check they are the ones
            // weir serves (a type pushed later may still be on its way).
            let serving = serving(weir).await?;
            if serving != agreed {
                continue;
            }
            let changed: Vec<usize> = (0..TYPES.len())
                .filter(|&i| agreed[i] != before[i])
                .collect();
            if let Some(done) = completions(&trackers, &changed, &agreed, written) {
                break (changed, done);
            }
        };
        let (weir_cpu1, client_cpu1) = (servers.cpu_ns(), procfs::cpu_ns(me));
        let mut since: Vec<Duration> = done
            .iter()
            .map(|at| at.saturating_duration_since(written))
            .collect();
        since.sort();
        changes.push(Change {
            kind,
            changed: changed.iter().map(|&i| short_type(TYPES[i])).collect(),
            first: since.first().copied().unwrap_or_default(),
            median: since.get(since.len() / 2).copied().unwrap_or_default(),
            all: since.last().copied().unwrap_or_default(),
            weir_cpu: cpu_between(weir_cpu0, weir_cpu1),
            client_cpu: cpu_between(client_cpu0, client_cpu1),
            rss_kb: servers.max_kb("VmRSS")?,
        });
    }
    tokio::time::sleep(SETTLE).await;
    let rss_after_kb = servers.max_kb("VmRSS")?;
    let hwm_kb = servers.max_kb("VmHWM")?;
    // Counted after the memory is read: weir's status costs a little.
    let mut nodes_connected = 0;
    for serving in &servers.weirs {
        let status = serving.status().await?;
        nodes_connected += status["envoys"]["connected"].as_u64().unwrap_or(0) as usize;
    }

    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    drop(channels);
    drop(servers);
    Ok(Run {
        settings,
        initial,
        initial_weir_cpu: cpu_between(weir_cpu0, weir_cpu1),
        initial_client_cpu: cpu_between(client_cpu0, client_cpu1),
        nodes_connected,
        rss_idle_kb,
        rss_connected_kb,
        hwm_connected_kb,
        rss_after_kb,
        hwm_kb,
        changes,
    })
}
