//! Weir's OTLP benchmark.
//!
//! - **Ingestion**: export requests shaped like one flush of Envoy's stats
//!   sink (a counter per response class and a latency histogram per cluster),
//!   pre-encoded, taken in four ways in interleaved rounds — decoded only
//!   (`prost`, the floor), decoded and aggregated in-process
//!   (`Ingest::ingest_bytes`), and sent to a real `weir serve` over OTLP/gRPC
//!   and OTLP/HTTP — in data points per second.
//! - **Reaction**: a canary that returns 503 to a fifth of its requests from
//!   the start, a real Envoy whose stats sink feeds `weir serve`, traffic
//!   through Envoy; the time from the first bad canary response the client
//!   sees until Envoy's own configuration has the canary at weight 0, over
//!   20 runs, each with fresh processes.
//!
//! `make bench-otlp` builds what it needs and runs it, writing its section of
//! `bench/RESULTS.md`.

mod ingestion;
mod payload;
mod reaction;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use weir_testbed::procfs;

#[derive(Parser, Debug)]
#[command(
    name = "weir-otlp-bench",
    about = "OTLP ingestion rate (decode-only, in-process, gRPC, HTTP) and rollback reaction time"
)]
pub(crate) struct Args {
    /// Clusters per export request (five data points each).
    #[arg(long, default_value_t = 200)]
    pub(crate) clusters: usize,
    /// Export requests per measurement (each variant, each round).
    #[arg(long, default_value_t = 2_000)]
    pub(crate) requests: u64,
    /// A measurement stops after this many seconds even if requests are left.
    #[arg(long, default_value_t = 10)]
    pub(crate) max_seconds: u64,
    /// Rounds of the ingestion part; each measures every variant once, in an
    /// order rotated every round (0 skips the ingestion part).
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// Concurrent clients over gRPC (one connection each) and over HTTP.
    #[arg(long, default_value_t = 4)]
    pub(crate) clients: usize,
    /// Unmeasured seconds of requests before the first round, per store
    /// (weir's store keeps 250 ms slots over its 60 s retention: past that
    /// each new slot reuses the oldest, its steady state).
    #[arg(long, default_value_t = 61)]
    pub(crate) warmup_seconds: u64,
    /// The ingestion variants, comma-separated, in the order of the first round.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "decode-1,decode-2,in-process-1,in-process-2,decode-beside-store,grpc,http"
    )]
    pub(crate) variants: Vec<ingestion::Variant>,
    /// Reaction-time runs (0 skips the reaction part).
    #[arg(long, default_value_t = 20)]
    pub(crate) runs: usize,
    /// Requests per second through Envoy in the reaction runs.
    #[arg(long, default_value_t = 100)]
    pub(crate) rate: u64,
    /// How often to read Envoy's config dump in the reaction runs, in ms.
    #[arg(long, default_value_t = 5)]
    pub(crate) poll_ms: u64,
    /// Instead of everything above: detection time of a failure of one
    /// device segment only, `--runs` runs of it beside as many of a failure
    /// of the whole cluster, at `--segment-rate`; written to its own section
    /// (`<!-- segments-bench:begin -->`).
    #[arg(long)]
    pub(crate) segments: bool,
    /// Requests per second through Envoy in the segment runs (and the
    /// whole-cluster runs beside them).
    #[arg(long, default_value_t = 300)]
    pub(crate) segment_rate: u64,
    /// Internal: run as a worker process of the ingestion part.
    #[arg(long, hide = true)]
    pub(crate) worker: Option<ingestion::WorkerKind>,
    /// Also write the report into this file, between the markers
    /// `<!-- otlp-bench:begin -->` and `<!-- otlp-bench:end -->` (added at
    /// the end if absent); the rest of the file is kept.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

/// A working folder of this run, removed at the end.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("weir-otlp-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// The allocator weir's binary uses, so in-process numbers match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(kind) = args.worker {
        return ingestion::worker_main(kind, args.clusters.max(1));
    }
    let weir_testbed::results::RunStart {
        command,
        machine,
        date,
        load_start,
    } = weir_testbed::results::RunStart::now("weir-otlp-bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = WorkDir::create()?;
    if args.segments {
        let mut runs = Vec::new();
        for scenario in [reaction::Scenario::Whole, reaction::Scenario::Segment] {
            eprintln!("weir-otlp-bench: {scenario:?} failure, {} runs", args.runs);
            let settings = reaction::Settings {
                runs: args.runs.max(1),
                rate: args.segment_rate.max(1),
                poll: Duration::from_millis(args.poll_ms.max(1)),
                scenario,
            };
            runs.push(runtime.block_on(reaction::run(settings, &dir.0))?);
        }
        let segment = runs.pop();
        let whole = runs.pop();
        let markdown =
            report::segments_markdown(&command, &date, &machine, whole.as_ref(), segment.as_ref());
        weir_testbed::results::publish(args.out.as_deref(), "segments", &markdown)?;
        return Ok(());
    }

    let ingestion = if args.rounds > 0 && !args.variants.is_empty() {
        eprintln!(
            "weir-otlp-bench: ingestion, {} rounds of {} requests of {} clusters",
            args.rounds, args.requests, args.clusters
        );
        let policy = dir.0.join("ingestion.yaml");
        std::fs::write(&policy, reaction::policy_yaml())?;
        let settings = ingestion::Settings {
            clusters: args.clusters.max(1),
            requests: args.requests.max(1),
            max_time: Duration::from_secs(args.max_seconds.max(1)),
            rounds: args.rounds,
            clients: args.clients.max(1),
            warmup: Duration::from_secs(args.warmup_seconds),
            variants: args.variants.clone(),
        };
        Some(ingestion::run(&runtime, settings, &policy)?)
    } else {
        None
    };
    let reaction = if args.runs > 0 {
        eprintln!("weir-otlp-bench: reaction time, {} runs", args.runs);
        let settings = reaction::Settings {
            runs: args.runs,
            rate: args.rate.max(1),
            poll: Duration::from_millis(args.poll_ms.max(1)),
            scenario: reaction::Scenario::Whole,
        };
        Some(runtime.block_on(reaction::run(settings, &dir.0))?)
    } else {
        None
    };
    let report = report::Report {
        command,
        date,
        machine,
        load_start,
        load_end: procfs::load_average(),
        ingestion,
        reaction,
    };
    weir_testbed::results::publish(args.out.as_deref(), "otlp", &report.markdown())?;
    Ok(())
}
