//! Weir's benchmark: what the filter costs Envoy.
//!
//! Starts one Envoy (`--concurrency 1`) per variant in front of backends for
//! every cluster of the example policy — no filter, a wasm filter that does
//! nothing, Weir's filter, a one-line Lua filter, Envoy's native
//! `weighted_clusters` — and sends each the same open-loop load at a fixed
//! rate, variants interleaved, for several rounds. For each measurement it
//! reads Envoy's CPU time from `/proc/<pid>/stat` before and after and times
//! every request. Then it sends requests from 100,000 distinct devices through
//! Weir's filter and watches the memory of Envoy and of the wasm VM.
//!
//! `make bench` builds what it needs and runs it; see `bench/README.md`.

mod instructions;
mod load;
mod report;
mod saturation;
mod smaps;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use weir_policy::Feed;
use weir_testbed::backend::Echo;
use weir_testbed::envoy::FilterChoice;
use weir_testbed::fleet::{Fleet, example_policy};
use weir_testbed::procfs::{self, CpuTime};
use weir_testbed::{Envoy, EnvoyBuilder};

use crate::load::LoadResult;
use crate::report::{Measurement, MemoryPoint, MemoryRun, Report, Settings};

/// The canary of the example policy, and its weight in the benchmark.
const CANARY: &str = "ingest-eu-canary";
const STABLE: &str = "ingest-eu";
const CANARY_PERCENT: u32 = 10;

/// The Lua variant: sets the class header and nothing else.
const LUA_SOURCE: &str = r#"function envoy_on_request(request_handle) request_handle:headers():replace("x-weir-priority", "telemetry") end"#;

/// Envoy's worker threads: one, so that its CPU time is steady.
const ENVOY_WORKERS: u32 = 1;

/// Requests in flight during the memory run.
const MEMORY_IN_FLIGHT: u64 = 16;

/// Distinct device ids after which the memory run takes a reading.
const MEMORY_CHECKPOINTS: [u64; 4] = [10_000, 25_000, 50_000, 100_000];

/// Device ids of the memory run start here, apart from the warm-up's.
const MEMORY_FIRST_DEVICE: u64 = 1_000_000;

/// Time for Envoy to finish a stream's bookkeeping after its last byte.
const SETTLE: Duration = Duration::from_millis(50);

#[derive(Parser, Debug)]
#[command(
    name = "weir-bench",
    about = "Envoy's CPU per request and latency with and without Weir's filter, and the wasm VM's memory"
)]
struct Args {
    /// Requests per second of every load (open loop: sent on schedule, answered or not).
    #[arg(long, default_value_t = 1_000)]
    rate: u32,
    /// Seconds of measured load per variant and round.
    #[arg(long, default_value_t = 5)]
    duration: u32,
    /// Requests sent at the same rate before each measurement, not measured.
    #[arg(long, default_value_t = 500)]
    warmup: u64,
    /// Rounds; each measures every variant once, in an order rotated every round.
    #[arg(long, default_value_t = 7)]
    rounds: u32,
    /// Distinct device ids the measured load cycles through.
    #[arg(long, default_value_t = 4_096)]
    devices: u64,
    /// Seconds of closed-loop load at saturation per variant and round (0 skips it).
    #[arg(long, default_value_t = 3)]
    saturation: u32,
    /// Requests kept in flight at saturation, each lane sending its next as
    /// soon as its last is answered.
    #[arg(long, default_value_t = 32)]
    lanes: u64,
    /// Distinct device ids sent through Weir's filter in the memory run (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    memory_devices: u64,
    /// The variants to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,noop,weir,lua,weighted"
    )]
    variants: Vec<Variant>,
    /// The do-nothing wasm module (relative paths are the repository's).
    #[arg(long, default_value = "dist/weir_noop_filter.wasm")]
    noop_wasm: PathBuf,
    /// The do-nothing module pruned to the callbacks Weir's module exports.
    #[arg(long, default_value = "dist/weir_noop_pruned.wasm")]
    noop_pruned_wasm: PathBuf,
    /// Instead of timing, count the instructions Envoy executes per request
    /// under valgrind's callgrind, and write that section of the report.
    #[arg(long)]
    instructions: bool,
    /// Also write the report (Markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What runs in Envoy's HTTP filter chain, and how the route picks a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Variant {
    /// No filter: the baseline every ratio is taken against.
    None,
    /// A wasm filter that does nothing: the floor of any wasm filter.
    Noop,
    /// The do-nothing module making only the host calls of steering: it
    /// reads the request headers and sets Weir's two (the floor of a filter
    /// doing Weir's job).
    Steer,
    /// Weir's filter with the example policy, canary at 10 %.
    Weir,
    /// A Lua filter that sets the class header.
    Lua,
    /// No filter; the route splits 90/10 with native `weighted_clusters`.
    Weighted,
}

impl Variant {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::None => "no filter",
            Self::Noop => "wasm, does nothing",
            Self::Steer => "wasm, only reads the headers and sets two",
            Self::Weir => "Weir, example policy",
            Self::Lua => "Lua, sets one header",
            Self::Weighted => "native weighted_clusters",
        }
    }

    fn builder(self, fleet: &Fleet, noop_wasm: &Path) -> EnvoyBuilder {
        let mut plain = EnvoyBuilder::new();
        for cluster in &fleet.policy().clusters {
            plain = plain.cluster(&cluster.name, &[fleet.backend(&cluster.name).addr()]);
        }
        let plain = plain.default_cluster(STABLE);
        let builder = match self {
            Self::None => plain,
            Self::Noop => plain.filter(FilterChoice::Wasm {
                module: noop_wasm.to_path_buf(),
                configuration: String::new(),
            }),
            Self::Steer => plain.filter(FilterChoice::Wasm {
                module: noop_wasm.to_path_buf(),
                configuration: "steer".to_owned(),
            }),
            Self::Weir => {
                let mut feed = Feed::initial(fleet.policy());
                feed.canary_weights
                    .insert(CANARY.into(), CANARY_PERCENT * 100);
                fleet.envoy(Some(feed))
            }
            Self::Lua => plain.filter(FilterChoice::Lua(LUA_SOURCE.to_owned())),
            Self::Weighted => {
                plain.weighted_default(&[(STABLE, 100 - CANARY_PERCENT), (CANARY, CANARY_PERCENT)])
            }
        };
        builder.concurrency(ENVOY_WORKERS)
    }

    /// Checks that a request through this variant's Envoy is steered as the
    /// variant says, so that every variant does the work it is meant to.
    async fn check(self, envoy: &Envoy, client: &reqwest::Client) -> anyhow::Result<()> {
        let response = client
            .post(envoy.url(load::PATH))
            .header("x-region", "eu-west")
            .header("x-device-type", "sensor")
            .header("x-device-id", load::device_id(0))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == reqwest::StatusCode::OK,
            "{self:?}: answered {}",
            response.status()
        );
        let echo: Echo = serde_json::from_slice(&response.bytes().await?)?;
        let priority = echo.headers.get("x-weir-priority").map(String::as_str);
        let cluster = echo.headers.get("x-weir-cluster").map(String::as_str);
        let ok = match self {
            Self::None | Self::Noop => echo.backend == STABLE && priority.is_none(),
            Self::Lua => echo.backend == STABLE && priority == Some("telemetry"),
            Self::Steer => {
                echo.backend == STABLE && priority == Some("telemetry") && cluster == Some(STABLE)
            }
            Self::Weighted => echo.backend == STABLE || echo.backend == CANARY,
            Self::Weir => {
                priority == Some("telemetry")
                    && cluster == Some(echo.backend.as_str())
                    && (echo.backend == STABLE || echo.backend == CANARY)
            }
        };
        anyhow::ensure!(ok, "{self:?} steered a request unexpectedly: {echo:?}");
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0, "--rate must be positive");
    anyhow::ensure!(args.duration > 0, "--duration must be positive");
    anyhow::ensure!(args.rounds > 0, "--rounds must be positive");
    anyhow::ensure!(!args.variants.is_empty(), "--variants names none");
    let noop_wasm = weir_testbed::paths::repo_root().join(&args.noop_wasm);
    if args.variants.contains(&Variant::Noop) {
        anyhow::ensure!(
            noop_wasm.exists(),
            "{} does not exist: run `scripts/build-filter.sh weir-noop-filter` (or `make bench`)",
            noop_wasm.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.instructions {
        return runtime.block_on(count_instructions(&args, &noop_wasm));
    }
    let report = runtime.block_on(run(&args, &noop_wasm))?;
    let markdown = report.markdown();
    print!("{markdown}");
    if let Some(out) = &args.out {
        // The control-plane benchmark owns its own marked section of the same file.
        let kept = std::fs::read_to_string(out)
            .ok()
            .and_then(|old| other_sections(&old))
            .unwrap_or_default();
        std::fs::write(out, format!("{markdown}{kept}"))?;
        eprintln!("weir-bench: wrote {}", out.display());
    }
    Ok(())
}

/// The `--instructions` run: every variant counted under callgrind, written
/// as the report's `cost` section.
async fn count_instructions(args: &Args, noop_wasm: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        instructions::available(),
        "valgrind is not installed: `apt-get install valgrind` (or `make bench-cost`, which does)"
    );
    let noop_pruned = weir_testbed::paths::repo_root().join(&args.noop_pruned_wasm);
    anyhow::ensure!(
        noop_pruned.exists(),
        "{} does not exist: run `scripts/build-filter.sh weir-noop-filter`",
        noop_pruned.display()
    );
    let start = weir_testbed::results::RunStart::now("weir-bench");
    let client = load::client()?;
    let fleet = Fleet::start(example_policy())?;
    let counted = instructions::count_all(&fleet, noop_wasm, &noop_pruned, &client).await?;
    let markdown = instructions::markdown(&counted, &start.command, &start.date);
    weir_testbed::results::publish(args.out.as_deref(), "cost", &markdown)
}

async fn run(args: &Args, noop_wasm: &Path) -> anyhow::Result<Report> {
    let envoy_binary = weir_testbed::paths::envoy_binary();
    let settings = Settings {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date: procfs::utc_now(),
        machine: procfs::Machine::describe(&envoy_binary),
        load_before: procfs::load_average(),
        load_after: String::new(),
        rate: args.rate,
        duration_s: args.duration,
        warmup: args.warmup,
        rounds: args.rounds,
        devices: args.devices,
        clock_ticks: procfs::clock_ticks_per_second(),
        workers: ENVOY_WORKERS,
        saturation_s: args.saturation,
        lanes: args.lanes,
        canary_percent: CANARY_PERCENT,
        lua_source: LUA_SOURCE,
    };
    let client = load::client()?;
    let fleet = Fleet::start(example_policy())?;
    let mut measurements = Vec::new();
    let mut saturation = Vec::new();
    {
        let mut envoys = Vec::new();
        for &variant in &args.variants {
            eprintln!("weir-bench: starting Envoy: {}", variant.label());
            let envoy = variant.builder(&fleet, noop_wasm).start().await?;
            variant.check(&envoy, &client).await?;
            envoys.push((variant, envoy));
        }
        // Once per variant before any measurement: V8 compiles hot code in
        // the background, connections open, caches fill.
        for (variant, envoy) in &envoys {
            eprintln!("weir-bench: priming {}", variant.label());
            let primed = load::open_loop(
                &client,
                &envoy.url(load::PATH),
                args.rate,
                args.warmup * 4,
                args.devices,
                0,
            )
            .await;
            anyhow::ensure!(
                primed.errors == 0,
                "{variant:?}: {} of {} priming requests failed",
                primed.errors,
                primed.sent()
            );
        }
        let count = u64::from(args.rate) * u64::from(args.duration);
        for round in 0..args.rounds {
            let n = envoys.len();
            for k in 0..n {
                let (variant, envoy) = &envoys[(k + round as usize) % n];
                let url = envoy.url(load::PATH);
                let slot = Slot {
                    envoy,
                    round: round + 1,
                    variant: *variant,
                    settings: &settings,
                };
                load::open_loop(&client, &url, args.rate, args.warmup, args.devices, 0).await;
                let measurement = slot
                    .measure(load::open_loop(
                        &client,
                        &url,
                        args.rate,
                        count,
                        args.devices,
                        0,
                    ))
                    .await?;
                eprintln!("weir-bench: {}", measurement.summary());
                measurements.push(measurement);
                if args.saturation > 0 {
                    // As many requests as the Envoy's one worker serves.
                    load::closed_loop(&client, &url, args.lanes, SATURATION_WARMUP, args.devices)
                        .await;
                    let duration = Duration::from_secs(u64::from(args.saturation));
                    let measurement = slot
                        .measure(load::closed_loop(
                            &client,
                            &url,
                            args.lanes,
                            duration,
                            args.devices,
                        ))
                        .await?;
                    eprintln!("weir-bench: saturated: {}", measurement.summary());
                    saturation.push(measurement);
                }
            }
        }
    }
    let mut memory = Vec::new();
    if args.memory_devices > 0 {
        for variant in [Variant::Weir, Variant::None] {
            if args.variants.contains(&variant) {
                memory.push(memory_run(variant, &fleet, noop_wasm, &client, args).await?);
            }
        }
    }
    Ok(Report {
        settings: Settings {
            load_after: procfs::load_average(),
            ..settings
        },
        measurements,
        saturation,
        memory,
    })
}

/// Time each Envoy gets at saturation before the measured closed loop.
pub(crate) const SATURATION_WARMUP: Duration = Duration::from_millis(500);

/// One variant's Envoy in one round, measured under a load.
struct Slot<'a> {
    envoy: &'a Envoy,
    round: u32,
    variant: Variant,
    settings: &'a Settings,
}

impl Slot<'_> {
    /// Envoy's CPU time around `load`, each reading after Envoy has settled.
    async fn measure(
        &self,
        load: impl std::future::Future<Output = LoadResult>,
    ) -> anyhow::Result<Measurement> {
        tokio::time::sleep(SETTLE).await;
        let before = CpuTime::of(self.envoy.pid())?;
        let result = load.await;
        tokio::time::sleep(SETTLE).await;
        let after = CpuTime::of(self.envoy.pid())?;
        Ok(Measurement::new(
            self.round,
            self.variant,
            &result,
            before,
            after,
            self.settings,
        ))
    }
}

/// Sends one request from each of `--memory-devices` distinct devices through
/// a fresh Envoy of `variant`, reading its memory along the way.
async fn memory_run(
    variant: Variant,
    fleet: &Fleet,
    noop_wasm: &Path,
    client: &reqwest::Client,
    args: &Args,
) -> anyhow::Result<MemoryRun> {
    eprintln!(
        "weir-bench: memory, {} distinct devices: {}",
        args.memory_devices,
        variant.label()
    );
    let envoy = variant.builder(fleet, noop_wasm).start().await?;
    variant.check(&envoy, client).await?;
    let url = envoy.url(load::PATH);
    let pid = envoy.pid();
    let reading = |distinct: u64| -> anyhow::Result<MemoryPoint> {
        Ok(MemoryPoint {
            distinct,
            rss_kb: procfs::status_kb(pid, "VmRSS")?,
            wasm: smaps::wasm_memory(pid)?,
        })
    };
    // Warm-up: the requests of the CPU measurement's warm-up, from a handful of devices.
    let warm = load::open_loop(client, &url, args.rate, args.warmup, 16, 0).await;
    let mut failed = warm.errors;
    tokio::time::sleep(SETTLE).await;
    let mut points = vec![reading(0)?];
    let mut done = 0;
    let checkpoints = MEMORY_CHECKPOINTS
        .iter()
        .copied()
        .filter(|&c| c < args.memory_devices)
        .chain([args.memory_devices]);
    for checkpoint in checkpoints {
        let devices = MEMORY_FIRST_DEVICE + done..MEMORY_FIRST_DEVICE + checkpoint;
        failed += load::each_device_once(client, &url, devices, MEMORY_IN_FLIGHT).await?;
        done = checkpoint;
        tokio::time::sleep(SETTLE).await;
        let point = reading(done)?;
        eprintln!(
            "weir-bench:   after {done} devices: VmRSS {} kB, wasm memory {} kB ({} kB resident) in {} VM(s)",
            point.rss_kb, point.wasm.size_kb, point.wasm.rss_kb, point.wasm.memories
        );
        points.push(point);
    }
    let stats = envoy.admin_text("/stats?filter=wasm").await?;
    Ok(MemoryRun {
        variant,
        points,
        failed,
        sent: args.warmup + args.memory_devices,
        wasm_stats: stats
            .lines()
            .filter(|line| !line.starts_with("wasmcustom."))
            .map(str::to_owned)
            .collect(),
    })
}

impl Measurement {
    fn new(
        round: u32,
        variant: Variant,
        result: &LoadResult,
        before: CpuTime,
        after: CpuTime,
        settings: &Settings,
    ) -> Self {
        let sent = result.sent().max(1) as f64;
        let ticks = after.ticks.saturating_sub(before.ticks);
        let cpu_us_per_req = ticks as f64 * 1e6 / settings.clock_ticks as f64 / sent;
        let sched_us_per_req = match (before.sched_ns, after.sched_ns) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / 1e3 / sent),
            _ => None,
        };
        let mut latencies = result.latencies.clone();
        latencies.sort_unstable();
        Self {
            round,
            variant,
            sent: result.sent(),
            errors: result.errors,
            cpu_ticks: ticks,
            cpu_us_per_req,
            sched_us_per_req,
            p50_ms: report::percentile_ms(&latencies, 0.50),
            p99_ms: report::percentile_ms(&latencies, 0.99),
            achieved_rate: result.sent() as f64 / result.elapsed.as_secs_f64().max(1e-9),
            max_lag_ms: result.max_lag.as_secs_f64() * 1e3,
        }
    }
}

/// The sections other benchmarks keep in the results file, each between its
/// own markers (`weir_testbed::results::markers`: `xds-bench`, `otlp-bench`,
/// …), in the order they appear; this runner has none of its own. `None` if there is none.
fn other_sections(old: &str) -> Option<String> {
    const OPEN: &str = "<!-- ";
    const BEGIN_TAIL: &str = "-bench:begin -->";
    let mut kept = String::new();
    let mut rest = old;
    while let Some(tail) = rest.find(BEGIN_TAIL) {
        let after_begin = tail + BEGIN_TAIL.len();
        // The marker starts at the last "<!-- " before its tail; its name is
        // what lies between (letters, digits, '-' and '_').
        let block = rest[..tail].rfind(OPEN).and_then(|open| {
            let name = &rest[open + OPEN.len()..tail];
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            let (_, end_marker) = weir_testbed::results::markers(name);
            let end = rest[after_begin..].find(&end_marker)? + after_begin + end_marker.len();
            valid.then_some((open, end))
        });
        match block {
            Some((open, end)) => {
                kept.push_str(&format!("\n{}\n", &rest[open..end]));
                rest = &rest[end..];
            }
            None => rest = &rest[after_begin..],
        }
    }
    (!kept.is_empty()).then_some(kept)
}
