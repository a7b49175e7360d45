//! Ingestion rate: the same pre-encoded export requests decoded only, decoded
//! and aggregated in-process, and sent to a real `weir serve` over OTLP/gRPC
//! and OTLP/HTTP, measured in interleaved rounds.
//!
//! The in-process work runs in two worker processes (this binary again, with
//! `--worker`), so that no heap is shared between what is compared: one only
//! decodes and keeps nothing (the floor), the other holds an `Ingest` whose
//! metrics store is full, as weir's is, and also decodes beside it. The
//! network load comes from this process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use prost::Message as _;
use prost::bytes::{BufMut as _, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use weir::metrics_store::MetricsStore;
use weir::otlp::Ingest;
use weir_testbed::procfs;
use weir_testbed::weir::Weir;

use crate::payload::Payload;

/// The OTLP/gRPC export method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// How long one export may take over the network before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Distinct requests (same shape, different values), sent in turn.
pub(crate) const PAYLOAD_VARIANTS: usize = 16;

/// How long weir keeps samples, as `weir serve` does (`METRICS_RETENTION_MS`).
const RETENTION_MS: u64 = 60_000;

/// One way of taking in the requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Variant {
    /// `prost` decoding of the bytes, nothing else, on 1 or 2 threads.
    Decode(usize),
    /// `Ingest::ingest_bytes` (decode, translate, add to the store) on 1 or 2 threads.
    InProcess(usize),
    /// Decoding only, 1 thread, in the process that holds the full store.
    DecodeBesideStore,
    /// OTLP/gRPC to `weir serve`.
    Grpc,
    /// OTLP/HTTP (binary protobuf) to `weir serve`'s `/v1/metrics`.
    Http,
}

impl Variant {
    pub(crate) const ALL: [Variant; 7] = [
        Variant::Decode(1),
        Variant::Decode(2),
        Variant::InProcess(1),
        Variant::InProcess(2),
        Variant::DecodeBesideStore,
        Variant::Grpc,
        Variant::Http,
    ];

    pub(crate) fn label(self) -> String {
        match self {
            Variant::Decode(1) => "decode-only, 1 thread".to_owned(),
            Variant::Decode(n) => format!("decode-only, {n} threads"),
            Variant::InProcess(1) => "decode + aggregate in-process, 1 thread".to_owned(),
            Variant::InProcess(n) => format!("decode + aggregate in-process, {n} threads"),
            Variant::DecodeBesideStore => {
                "decode-only, 1 thread, beside a full metrics store".to_owned()
            }
            Variant::Grpc => "OTLP/gRPC to `weir serve`".to_owned(),
            Variant::Http => "OTLP/HTTP protobuf to `weir serve`".to_owned(),
        }
    }

    /// The decode-only variant the ratio is taken to: the same number of
    /// threads in-process, both cores' worth (2 threads) over the network.
    pub(crate) fn baseline(self) -> Variant {
        match self {
            Variant::Decode(n) | Variant::InProcess(n) => Variant::Decode(n),
            Variant::DecodeBesideStore => Variant::Decode(1),
            Variant::Grpc | Variant::Http => Variant::Decode(2),
        }
    }

    pub(crate) fn over_network(self) -> bool {
        matches!(self, Variant::Grpc | Variant::Http)
    }

    /// The name `--variants` takes.
    pub(crate) fn name(self) -> String {
        match self {
            Variant::Decode(n) => format!("decode-{n}"),
            Variant::InProcess(n) => format!("in-process-{n}"),
            Variant::DecodeBesideStore => "decode-beside-store".to_owned(),
            Variant::Grpc => "grpc".to_owned(),
            Variant::Http => "http".to_owned(),
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == text)
            .ok_or_else(|| {
                let names: Vec<String> = Variant::ALL.iter().map(|v| v.name()).collect();
                format!("{text:?} is not one of {}", names.join(", "))
            })
    }
}

/// What one variant did in one round.
#[derive(Clone, Debug)]
pub(crate) struct Measurement {
    pub(crate) variant: Variant,
    pub(crate) round: usize,
    pub(crate) requests: u64,
    pub(crate) data_points: u64,
    pub(crate) elapsed: Duration,
    /// CPU time of the benchmark: the worker threads in-process, every
    /// thread of the load generator over the network.
    pub(crate) own_cpu: Option<Duration>,
    /// CPU time of `weir serve` (network variants).
    pub(crate) weir_cpu: Option<Duration>,
}

impl Measurement {
    pub(crate) fn rate(&self) -> f64 {
        self.data_points as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The settings of the ingestion part.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) clusters: usize,
    pub(crate) requests: u64,
    pub(crate) max_time: Duration,
    pub(crate) rounds: usize,
    pub(crate) clients: usize,
    /// Unmeasured requests for this long before the first round, per store.
    pub(crate) warmup: Duration,
    /// The variants measured, in the order of the first round.
    pub(crate) variants: Vec<Variant>,
}

/// The whole ingestion part.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    pub(crate) settings: Settings,
    pub(crate) data_points_per_request: u64,
    pub(crate) bytes_per_request: usize,
    pub(crate) measurements: Vec<Measurement>,
    /// weir's OTLP counters at the end (`/v1/status`, `otlp`).
    pub(crate) weir_otlp: serde_json::Value,
    /// Data points this benchmark sent to weir, warm-up included.
    pub(crate) sent_to_weir: u64,
    pub(crate) weir_rss_kb: u64,
    pub(crate) weir_hwm_kb: u64,
    /// The in-process worker's resident memory after its warm-up (its store
    /// filled like weir's), and the decode-only worker's.
    pub(crate) store_worker_rss_kb: Option<u64>,
    pub(crate) decode_worker_rss_kb: Option<u64>,
    pub(crate) warmup_elapsed: Duration,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
}

/// The in-process workers and the network clients.
struct Targets {
    payloads: Arc<Vec<Payload>>,
    decode_worker: Worker,
    store_worker: Worker,
    weir: Weir,
    channels: Vec<Channel>,
    http: reqwest::Client,
    http_url: String,
}

pub(crate) fn run(
    runtime: &tokio::runtime::Runtime,
    settings: Settings,
    policy: &std::path::Path,
) -> anyhow::Result<Run> {
    let load_before = procfs::load_average();
    let payloads = Arc::new(crate::payload::payloads(
        settings.clusters,
        PAYLOAD_VARIANTS,
    ));
    let data_points_per_request = payloads[0].data_points;
    let bytes_per_request = payloads.iter().map(|p| p.bytes.len()).sum::<usize>() / payloads.len();
    anyhow::ensure!(
        bytes_per_request < weir::otlp::MAX_REQUEST_BYTES,
        "{bytes_per_request} bytes per request is over weir's limit"
    );
    let decode_worker = Worker::start(WorkerKind::Decode, settings.clusters)?;
    let store_worker = Worker::start(WorkerKind::Store, settings.clusters)?;
    let weir = runtime.block_on(Weir::start(policy, weir_testbed::weir::WasmDelivery::Local))?;
    let channels = runtime.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..settings.clients.max(1) {
            channels.push(
                Endpoint::from_shared(format!("http://{}", weir.xds_addr()))?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(REQUEST_TIMEOUT)
                    .connect()
                    .await?,
            );
        }
        anyhow::Ok(channels)
    })?;
    let http_url = format!("http://{}{}", weir.admin_addr(), weir::otlp::METRICS_PATH);
    let mut targets = Targets {
        payloads,
        decode_worker,
        store_worker,
        weir,
        channels,
        http: weir_testbed::http_client(),
        http_url,
    };

    // Warm-up, unmeasured: brings both stores to their steady state (a full
    // retention of time slots, each new one reusing the oldest), opens the
    // connections, and checks every path accepts every data point.
    let warm = Instant::now();
    let warm_limit = settings.max_time.max(Duration::from_secs(60));
    targets
        .decode_worker
        .measure(Variant::Decode(1), 200, warm_limit)?;
    let mut sent_to_weir = 0;
    if settings
        .variants
        .iter()
        .any(|v| matches!(v, Variant::InProcess(_) | Variant::DecodeBesideStore))
    {
        targets
            .store_worker
            .measure(Variant::InProcess(1), u64::MAX, settings.warmup)?;
    }
    let store_worker_rss_kb = procfs::status_kb(targets.store_worker.pid(), "VmRSS").ok();
    let decode_worker_rss_kb = procfs::status_kb(targets.decode_worker.pid(), "VmRSS").ok();
    // weir's store: the warm-up shared among the protocols measured.
    let network: Vec<Variant> = [Variant::Grpc, Variant::Http]
        .into_iter()
        .filter(|v| settings.variants.contains(v))
        .collect();
    for &variant in &network {
        let m = runtime.block_on(over_network(
            &targets,
            variant,
            u64::MAX,
            settings.clients,
            settings.warmup / network.len() as u32,
        ))?;
        sent_to_weir += m.data_points;
    }
    let warmup_elapsed = warm.elapsed();

    let mut measurements = Vec::new();
    for round in 0..settings.rounds {
        let variants = &settings.variants;
        for k in 0..variants.len() {
            let variant = variants[(round + k) % variants.len()];
            let mut m = if variant.over_network() {
                let m = runtime.block_on(over_network(
                    &targets,
                    variant,
                    settings.requests,
                    settings.clients,
                    settings.max_time,
                ))?;
                sent_to_weir += m.data_points;
                m
            } else if variant == Variant::Decode(1) || variant == Variant::Decode(2) {
                targets
                    .decode_worker
                    .measure(variant, settings.requests, settings.max_time)?
            } else {
                targets
                    .store_worker
                    .measure(variant, settings.requests, settings.max_time)?
            };
            m.round = round;
            eprintln!(
                "weir-otlp-bench: round {} {:<45} {:>6} requests {:>8.3} s {:>12.0} data points/s",
                round + 1,
                variant.label(),
                m.requests,
                m.elapsed.as_secs_f64(),
                m.rate()
            );
            measurements.push(m);
        }
    }
    let weir_otlp = runtime.block_on(targets.weir.status())?["otlp"].clone();
    let weir_rss_kb = procfs::status_kb(targets.weir.pid(), "VmRSS")?;
    let weir_hwm_kb = procfs::status_kb(targets.weir.pid(), "VmHWM")?;
    Ok(Run {
        settings,
        data_points_per_request,
        bytes_per_request,
        measurements,
        weir_otlp,
        sent_to_weir,
        weir_rss_kb,
        weir_hwm_kb,
        store_worker_rss_kb,
        decode_worker_rss_kb,
        warmup_elapsed,
        load_before,
        load_after: procfs::load_average(),
    })
}

fn cpu_delta(before: Option<u64>, after: Option<u64>) -> Option<Duration> {
    Some(Duration::from_nanos(after?.checked_sub(before?)?))
}

/// Decode-only or `Ingest::ingest_bytes` on plain threads: up to `requests`
/// requests, or until `max_time` has passed. Runs in a worker process.
fn in_process(
    payloads: &[Payload],
    ingest: Option<&Ingest>,
    variant: Variant,
    requests: u64,
    max_time: Duration,
) -> anyhow::Result<Measurement> {
    let (threads, aggregate) = match variant {
        Variant::Decode(n) => (n, false),
        Variant::DecodeBesideStore => (1, false),
        Variant::InProcess(n) => (n, true),
        _ => anyhow::bail!("{variant:?} is not in-process"),
    };
    anyhow::ensure!(
        !aggregate || ingest.is_some(),
        "{variant:?} needs the worker with the store"
    );
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let points = AtomicU64::new(0);
    let wrong = AtomicU64::new(0);
    let cpu_ns = AtomicU64::new(0);
    let cpu_known = std::sync::atomic::AtomicBool::new(true);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                // Each thread's own CPU time: the threads end before the
                // process's could be read.
                let cpu_before = procfs::thread_cpu_ns();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests || started.elapsed() > max_time {
                        break;
                    }
                    let payload = &payloads[i as usize % payloads.len()];
                    match ingest.filter(|_| aggregate) {
                        Some(ingest) => {
                            let (accepted, rejected) = ingest.ingest_bytes(&payload.bytes);
                            if accepted != payload.data_points || rejected != 0 {
                                wrong.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        None => match weir::otlp::decode_protobuf(&payload.bytes) {
                            Ok(request) => drop(std::hint::black_box(request)),
                            Err(_) => {
                                wrong.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    points.fetch_add(payload.data_points, Ordering::Relaxed);
                }
                match cpu_delta(cpu_before, procfs::thread_cpu_ns()) {
                    Some(used) => {
                        cpu_ns.fetch_add(used.as_nanos() as u64, Ordering::Relaxed);
                    }
                    None => cpu_known.store(false, Ordering::Relaxed),
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let wrong = wrong.load(Ordering::Relaxed);
    anyhow::ensure!(
        wrong == 0,
        "{}: {wrong} requests not taken in whole",
        variant.label()
    );
    Ok(Measurement {
        variant,
        round: 0,
        requests: done.load(Ordering::Relaxed),
        data_points: points.load(Ordering::Relaxed),
        elapsed,
        own_cpu: cpu_known
            .load(Ordering::Relaxed)
            .then(|| Duration::from_nanos(cpu_ns.load(Ordering::Relaxed))),
        weir_cpu: None,
    })
}

/// What a worker process holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkerKind {
    /// Nothing but the requests: decode-only.
    Decode,
    /// An `Ingest` and its metrics store.
    Store,
}

impl WorkerKind {
    fn name(self) -> &'static str {
        match self {
            WorkerKind::Decode => "decode",
            WorkerKind::Store => "store",
        }
    }
}

impl std::str::FromStr for WorkerKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "decode" => Ok(WorkerKind::Decode),
            "store" => Ok(WorkerKind::Store),
            other => Err(format!("{other:?} is not decode or store")),
        }
    }
}

/// A worker process: this binary with `--worker`, measuring what it is
/// told on its standard input, one line per measurement
/// (`<variant> <requests> <max ms>`), and answering one JSON line each.
/// Killed when dropped.
struct Worker {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl Worker {
    fn start(kind: WorkerKind, clusters: usize) -> anyhow::Result<Self> {
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["--worker", kind.name(), "--clusters", &clusters.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let input = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let output = std::io::BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
        );
        Ok(Self {
            child,
            input,
            output,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn measure(
        &mut self,
        variant: Variant,
        requests: u64,
        max_time: Duration,
    ) -> anyhow::Result<Measurement> {
        use std::io::{BufRead as _, Write as _};
        writeln!(
            self.input,
            "{} {requests} {}",
            variant.name(),
            max_time.as_millis()
        )?;
        self.input.flush()?;
        let mut line = String::new();
        self.output.read_line(&mut line)?;
        let answer: serde_json::Value = serde_json::from_str(&line)
            .map_err(|err| anyhow::anyhow!("worker answered {line:?}: {err}"))?;
        if let Some(error) = answer["error"].as_str() {
            anyhow::bail!("worker: {error}");
        }
        let field = |key: &str| {
            answer[key]
                .as_u64()
                .ok_or_else(|| anyhow::anyhow!("worker answered {line:?}"))
        };
        Ok(Measurement {
            variant,
            round: 0,
            requests: field("requests")?,
            data_points: field("data_points")?,
            elapsed: Duration::from_nanos(field("elapsed_ns")?),
            own_cpu: answer["cpu_ns"].as_u64().map(Duration::from_nanos),
            weir_cpu: None,
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The worker process's side: builds the same requests as the parent (and,
/// for [`WorkerKind::Store`], an `Ingest` with a store), then measures what
/// each line of its standard input asks until it closes.
pub(crate) fn worker_main(kind: WorkerKind, clusters: usize) -> anyhow::Result<()> {
    use std::io::{BufRead as _, Write as _};
    let payloads = crate::payload::payloads(clusters, PAYLOAD_VARIANTS);
    let ingest = (kind == WorkerKind::Store).then(|| {
        let store = Arc::new(std::sync::Mutex::new(MetricsStore::new(RETENTION_MS)));
        Ingest::new(store, weir::serving::now_ms)
    });
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let answer = match parse_command(&line).and_then(|(variant, requests, max_time)| {
            in_process(&payloads, ingest.as_ref(), variant, requests, max_time)
        }) {
            Ok(m) => serde_json::json!({
                "requests": m.requests,
                "data_points": m.data_points,
                "elapsed_ns": m.elapsed.as_nanos() as u64,
                "cpu_ns": m.own_cpu.map(|d| d.as_nanos() as u64),
            }),
            Err(err) => serde_json::json!({"error": format!("{err:#}")}),
        };
        let mut out = stdout.lock();
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

fn parse_command(line: &str) -> anyhow::Result<(Variant, u64, Duration)> {
    let mut words = line.split_whitespace();
    let mut next = || {
        words
            .next()
            .ok_or_else(|| anyhow::anyhow!("short command {line:?}"))
    };
    let variant: Variant = next()?.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let requests = next()?.parse()?;
    let max_ms = next()?.parse()?;
    Ok((variant, requests, Duration::from_millis(max_ms)))
}

/// `clients` concurrent clients, each with one request in flight, send up
/// to `requests` requests to `weir serve`, or until `max_time` has passed.
async fn over_network(
    targets: &Targets,
    variant: Variant,
    requests: u64,
    clients: usize,
    max_time: Duration,
) -> anyhow::Result<Measurement> {
    let next = Arc::new(AtomicU64::new(0));
    let points = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let weir_pid = targets.weir.pid();
    let own_before = procfs::cpu_ns(std::process::id());
    let weir_before = procfs::cpu_ns(weir_pid);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients.max(1) {
        let (next, points, done) = (Arc::clone(&next), Arc::clone(&points), Arc::clone(&done));
        let payloads = Arc::clone(&targets.payloads);
        let sender = match variant {
            Variant::Grpc => Sender::Grpc(tonic::client::Grpc::new(
                targets.channels[client % targets.channels.len()].clone(),
            )),
            Variant::Http => Sender::Http(targets.http.clone(), targets.http_url.clone()),
            _ => anyhow::bail!("{variant:?} is not over the network"),
        };
        tasks.spawn(async move {
            let mut sender = sender;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || started.elapsed() > max_time {
                    return anyhow::Ok(());
                }
                let payload = &payloads[i as usize % payloads.len()];
                sender.send(payload.bytes.clone()).await?;
                done.fetch_add(1, Ordering::Relaxed);
                points.fetch_add(payload.data_points, Ordering::Relaxed);
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let elapsed = started.elapsed();
    Ok(Measurement {
        variant,
        round: 0,
        requests: done.load(Ordering::Relaxed),
        data_points: points.load(Ordering::Relaxed),
        elapsed,
        own_cpu: cpu_delta(own_before, procfs::cpu_ns(std::process::id())),
        weir_cpu: cpu_delta(weir_before, procfs::cpu_ns(weir_pid)),
    })
}

enum Sender {
    Grpc(tonic::client::Grpc<Channel>),
    Http(reqwest::Client, String),
}

impl Sender {
    /// Sends one export request; an error unless weir accepted all of it.
    async fn send(&mut self, body: Bytes) -> anyhow::Result<()> {
        let response = match self {
            Sender::Grpc(grpc) => {
                grpc.ready()
                    .await
                    .map_err(|err| anyhow::anyhow!("gRPC channel not ready: {err}"))?;
                grpc.unary(
                    tonic::Request::new(body),
                    PathAndQuery::from_static(EXPORT_PATH),
                    RawCodec,
                )
                .await?
                .into_inner()
            }
            Sender::Http(client, url) => {
                let response = client
                    .post(url.as_str())
                    .header("content-type", "application/x-protobuf")
                    .timeout(REQUEST_TIMEOUT)
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let bytes = response.bytes().await?;
                anyhow::ensure!(status.is_success(), "weir answered {status}");
                ExportMetricsServiceResponse::decode(bytes)?
            }
        };
        if let Some(partial) = response.partial_success {
            anyhow::bail!(
                "weir rejected {} data points: {}",
                partial.rejected_data_points,
                partial.error_message
            );
        }
        Ok(())
    }
}

/// Sends pre-encoded request bytes as they are (the load generator does not
/// encode anything while measuring) and decodes the response.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

struct RawEncoder;

struct ResponseDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportMetricsServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportMetricsServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportMetricsServiceResponse::decode(src)
            .map(Some)
            .map_err(|err| Status::new(Code::Internal, err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_round_trip_through_their_names() {
        for variant in Variant::ALL {
            assert_eq!(variant.name().parse::<Variant>(), Ok(variant));
        }
        assert!("decode-3".parse::<Variant>().is_err());
    }

    #[test]
    fn worker_commands_parse() {
        let (variant, requests, max_time) = parse_command("in-process-2 2000 10000").unwrap();
        assert_eq!(variant, Variant::InProcess(2));
        assert_eq!((requests, max_time), (2_000, Duration::from_secs(10)));
        assert!(parse_command("grpc 10").is_err());
    }

    #[test]
    fn in_process_counts_every_data_point() {
        let payloads = crate::payload::payloads(10, 2);
        let m = in_process(
            &payloads,
            None,
            Variant::Decode(2),
            7,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!((m.requests, m.data_points), (7, 350));
        assert!(
            in_process(
                &payloads,
                None,
                Variant::InProcess(1),
                1,
                Duration::from_secs(5)
            )
            .is_err()
        );
        let store = Arc::new(std::sync::Mutex::new(MetricsStore::new(RETENTION_MS)));
        let ingest = Ingest::new(store, weir::serving::now_ms);
        let m = in_process(
            &payloads,
            Some(&ingest),
            Variant::InProcess(1),
            3,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(m.data_points, 150);
        assert_eq!(ingest.status()["data_points"]["used"], 150);
    }
}
