//! Weir's overload benchmark.
//!
//! One backend of fixed capacity (`--slots` requests at a time, each taking
//! `--service-ms`), one Envoy in front of it per admission mechanism — none,
//! Envoy's circuit breaker, `admission_control`, `adaptive_concurrency`, and
//! Weir's filter — and open-loop Poisson device traffic (2 % alarms, 8 %
//! commands, 60 % telemetry, 30 % heartbeats) at multiples of the capacity.
//! Every mechanism sees the same arrivals in a round. Per class: offered,
//! served, shed, timed out, p50/p99 of the served; goodput, the requests
//! served within the offered window as a share of what the backend could
//! serve in it.
//!
//! `make bench-overload` builds what it needs and runs it, writing its
//! section of `bench/RESULTS.md`.

mod report;
mod variant;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use weir_testbed::fleet::Fleet;
use weir_testbed::procfs;
use weir_testbed::traffic::{self, Outcome, Spacing, Target};
use weir_testbed::wait::eventually;

use crate::variant::Variant;

#[derive(Parser, Debug)]
#[command(
    name = "weir-overload-bench",
    about = "Priority admission under overload: Weir against Envoy's own mechanisms, per class"
)]
pub(crate) struct Args {
    /// Requests the backend works on at once (and Weir's concurrency limit).
    #[arg(long, default_value_t = 8)]
    pub(crate) slots: u32,
    /// Each request's service time at the backend, in ms.
    #[arg(long, default_value_t = 80)]
    pub(crate) service_ms: u64,
    /// Offered loads, as multiples of the backend's capacity; the first is
    /// the unloaded reference for latency.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.5,1,3,10")]
    pub(crate) loads: Vec<f64>,
    /// Seconds of traffic per load, variant and round.
    #[arg(long, default_value_t = 8)]
    pub(crate) duration: u64,
    /// Rounds; each runs every variant once, in an order rotated every round,
    /// on arrivals of its own seed.
    #[arg(long, default_value_t = 2)]
    pub(crate) rounds: usize,
    /// The mechanisms, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,breaker,admission-control,adaptive-concurrency,weir"
    )]
    pub(crate) variants: Vec<Variant>,
    /// Envoy's worker threads.
    #[arg(long, default_value_t = 2)]
    pub(crate) workers: u32,
    /// HTTP/2 connections the devices' requests are spread over.
    #[arg(long, default_value_t = 4)]
    pub(crate) connections: usize,
    /// Distinct device ids.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) devices: u32,
    /// Envoy's route timeout (the upstream request), in ms.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) route_timeout_ms: u64,
    /// The devices give up on a request after this long, in ms.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) client_timeout_ms: u64,
    /// The arrivals' seed (each round and load adds to it).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Also write the report into this file, between the markers
    /// `<!-- overload-bench:begin -->` and `<!-- overload-bench:end -->`.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

impl Args {
    /// The backend's capacity in requests per second.
    pub(crate) fn capacity(&self) -> f64 {
        f64::from(self.slots) / self.service().as_secs_f64()
    }

    fn service(&self) -> Duration {
        Duration::from_millis(self.service_ms.max(1))
    }
}

/// One variant at one load in one round.
pub(crate) struct Measurement {
    pub(crate) variant: Variant,
    pub(crate) load: f64,
    /// The offered window: the schedule's length.
    pub(crate) window: Duration,
    pub(crate) arrivals: Vec<traffic::Arrival>,
    pub(crate) outcomes: Vec<Outcome>,
}

/// How long the backend may take to let go of the last requests of a load.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Unmeasured requests before the first load, at the first load's rate: V8
/// compiles the module, `adaptive_concurrency` measures its minimum latency.
const WARMUP_REQUESTS: usize = 100;

async fn run_variant(
    args: &Args,
    variant: Variant,
    round: usize,
) -> anyhow::Result<Vec<Measurement>> {
    let fleet = Fleet::start(traffic::device_policy(args.slots)?)?;
    let backend = fleet.backend("backend");
    backend.set_behaviour(weir_testbed::Behaviour {
        delay: args.service(),
        ..weir_testbed::Behaviour::default()
    });
    backend.set_capacity(Some(args.slots as usize));
    let envoy = variant
        .envoy(
            &fleet,
            args.slots,
            Duration::from_millis(args.route_timeout_ms),
        )
        .concurrency(args.workers)
        .start()
        .await?;
    let target = Target {
        base: envoy.url(""),
        connections: args.connections,
        timeout: Duration::from_millis(args.client_timeout_ms),
        headers: vec![("x-region".to_owned(), "eu-west".to_owned())],
    };
    let mix = traffic::device_mix();
    let first = args.loads.first().copied().unwrap_or(0.1);
    let warmup = traffic::schedule(
        &mix,
        first * args.capacity(),
        WARMUP_REQUESTS,
        args.devices,
        Spacing::Poisson {
            seed: u64::MAX - args.seed,
        },
    );
    traffic::send(&target, &mix, &warmup).await;
    drained(backend).await?;

    let mut measured = Vec::new();
    for (i, &load) in args.loads.iter().enumerate() {
        let rate = load * args.capacity();
        let count = (rate * args.duration as f64).round().max(1.0) as usize;
        let seed = args.seed + (round * args.loads.len() + i) as u64;
        let arrivals =
            traffic::schedule(&mix, rate, count, args.devices, Spacing::Poisson { seed });
        eprintln!(
            "weir-overload-bench: round {} · {} · {load}× ({rate:.0} requests/s, {count} requests)",
            round + 1,
            variant.label()
        );
        let outcomes = traffic::send(&target, &mix, &arrivals).await;
        drained(backend).await?;
        measured.push(Measurement {
            variant,
            load,
            window: Duration::from_secs_f64(count as f64 / rate),
            arrivals,
            outcomes,
        });
    }
    Ok(measured)
}

/// Waits until the backend holds no request (those Envoy gave up on leave
/// its line when Envoy resets them).
async fn drained(backend: &weir_testbed::Backend) -> anyhow::Result<()> {
    eventually("the backend drained", DRAIN_DEADLINE, || async {
        (backend.active() == 0).then_some(())
    })
    .await
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(!args.loads.is_empty(), "--loads: give at least one load");
    anyhow::ensure!(
        args.loads.iter().all(|&l| l > 0.0 && l.is_finite()),
        "--loads: every load must be a positive multiple of the capacity"
    );
    let weir_testbed::results::RunStart {
        command,
        machine,
        date,
        load_start,
    } = weir_testbed::results::RunStart::now("weir-overload-bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut measurements = Vec::new();
    for round in 0..args.rounds.max(1) {
        let mut order = args.variants.clone();
        if !order.is_empty() {
            let shift = round % order.len();
            order.rotate_left(shift);
        }
        for variant in order {
            measurements.extend(runtime.block_on(run_variant(&args, variant, round))?);
        }
    }
    let report = report::Report {
        command,
        date,
        machine,
        load_start,
        load_end: procfs::load_average(),
        args: &args,
        measurements: &measurements,
    };
    let markdown = report.markdown();
    println!("{markdown}");
    if let Some(out) = &args.out {
        weir_testbed::results::write_section(out, "overload", &markdown)?;
        eprintln!(
            "weir-overload-bench: wrote its section of {}",
            out.display()
        );
    }
    Ok(())
}
