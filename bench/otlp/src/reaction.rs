//! Reaction time: a canary that fails from its first requests, a real Envoy
//! whose stats sink feeds `weir serve`, and the time from the first bad
//! canary response the client sees until the filter configuration Envoy
//! runs has the canary at weight 0. Every run starts its own backends, weir
//! and Envoy.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use weir_testbed::canary::envoy_weight;
use weir_testbed::fleet::{Fleet, policy_from_yaml};
use weir_testbed::wait::eventually;
use weir_testbed::weir::{WasmDelivery, Weir, ads_bootstrap};
use weir_testbed::{Behaviour, Envoy, http_client};

pub(crate) use weir_testbed::canary::CANARY;

/// The canary's analysis thresholds and failure share.
pub(crate) const MIN_SAMPLES: u32 = 40;
pub(crate) const MAX_ERROR_RATE_INCREASE_PP: f64 = 2.0;
pub(crate) const FAIL_BASIS_POINTS: u32 = 2_000;
pub(crate) const CANARY_PERCENT: u32 = 50;

/// Envoy's worker threads, as in the rollout tests.
pub(crate) const ENVOY_WORKERS: u32 = 2;

/// Distinct device ids per traffic lane (10 lanes).
const LANES: u64 = 10;
pub(crate) const DEVICES_PER_LANE: u64 = 500;

const NODE: &str = "otlp-bench-envoy";

/// Envoy's stats flush interval in `envoy/bootstrap.yaml`.
pub(crate) const STATS_FLUSH: Duration = Duration::from_secs(1);

/// `weir serve`'s default control interval (`--control-interval-ms`).
pub(crate) const CONTROL_INTERVAL: Duration = Duration::from_millis(250);

/// How long a run may wait for the first canary error, then for weight 0.
const FIRST_ERROR_DEADLINE: Duration = Duration::from_secs(10);
const ROLLBACK_DEADLINE: Duration = Duration::from_secs(30);
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The rollout tests' one-service policy: `app` and its canary at 50 %.
pub(crate) fn policy_yaml() -> String {
    weir_testbed::canary::policy_yaml(
        &format!("[{CANARY_PERCENT}, 100]"),
        "30s",
        MIN_SAMPLES,
        MAX_ERROR_RATE_INCREASE_PP,
    )
}

/// What goes wrong with the canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// It answers 503 to one request in five: the cluster's totals show it.
    Whole,
    /// It answers 503 to one camera request in six, and cameras are one
    /// device in ten: +1.7 points on the cluster, under its 2-point limit,
    /// so only the `device_type` segment verdict sees it.
    Segment,
}

/// One device in [`CAMERA_EVERY`] is a camera in the segment scenario.
pub(crate) const CAMERA_EVERY: u64 = 10;
/// Share of the cameras' requests the canary fails in the segment scenario.
pub(crate) const SEGMENT_FAIL_BASIS_POINTS: u32 = 1_667;

impl Scenario {
    fn policy_yaml(self) -> String {
        match self {
            Self::Whole => policy_yaml(),
            Self::Segment => weir_testbed::canary::policy_yaml_with(
                &format!("[{CANARY_PERCENT}, 100]"),
                "30s",
                MIN_SAMPLES,
                MAX_ERROR_RATE_INCREASE_PP,
                &[("segments", "{ by: [device_type] }")],
            ),
        }
    }

    fn behaviour(self) -> Behaviour {
        match self {
            Self::Whole => Behaviour {
                fail_basis_points: FAIL_BASIS_POINTS,
                fail_status: 503,
                ..Behaviour::default()
            },
            Self::Segment => Behaviour {
                fail_basis_points: SEGMENT_FAIL_BASIS_POINTS,
                fail_status: 503,
                only_header: Some(("x-device-type", "camera")),
                ..Behaviour::default()
            },
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) runs: usize,
    pub(crate) rate: u64,
    pub(crate) poll: Duration,
    pub(crate) scenario: Scenario,
}

/// One run, measured.
#[derive(Clone, Debug)]
pub(crate) struct RunResult {
    /// Which run (1-based).
    pub(crate) run: usize,
    /// First canary 5xx at the client → Envoy's config dump shows weight 0.
    pub(crate) reaction: Duration,
    /// First canary 5xx → weir's rollback decision (its `at_ms`, ms resolution).
    pub(crate) to_decision: Option<Duration>,
    /// Traffic start → first canary 5xx.
    pub(crate) traffic_to_error: Duration,
    /// The evidence of the decision: the canary's and stable's requests and
    /// errors in the window.
    pub(crate) canary_requests: u64,
    pub(crate) canary_errors: u64,
    pub(crate) stable_requests: u64,
    pub(crate) reason: String,
    /// Median round trip of one config dump poll.
    pub(crate) poll_rtt: Duration,
    pub(crate) sent: u64,
    /// First canary 5xx → the first stats flush weir received after it.
    pub(crate) to_first_flush: Option<Duration>,
    /// Which flush after the first error the decision followed (1: the first).
    pub(crate) deciding_flush: Option<usize>,
    /// That flush's arrival → the decision: the wait for the control tick.
    pub(crate) flush_to_decision: Option<Duration>,
    /// At each flush after the first error up to the deciding one, what the
    /// client had received: canary answers, of which errors, stable answers.
    pub(crate) at_flushes: Vec<(u64, u64, u64)>,
    /// The pauses that set the run's phase.
    pub(crate) phases: Phases,
}

#[derive(Clone, Debug)]
pub(crate) struct Run {
    pub(crate) settings: Settings,
    pub(crate) results: Vec<RunResult>,
    /// Runs that failed, and why.
    pub(crate) failures: Vec<String>,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
}

pub(crate) async fn run(settings: Settings, dir: &Path) -> anyhow::Result<Run> {
    let load_before = weir_testbed::procfs::load_average();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for i in 0..settings.runs {
        let phases = Phases::of(i, settings.runs);
        match one(&settings, dir, i, phases).await {
            Ok(result) => {
                eprintln!(
                    "weir-otlp-bench: reaction run {}: {:.1} ms; decided {} ms after the first 503, {} ms after flush #{}; client's counts at each flush (canary/errors stable): {}",
                    i + 1,
                    result.reaction.as_secs_f64() * 1000.0,
                    result.to_decision.map_or(0, |d| d.as_millis()),
                    result.flush_to_decision.map_or(0, |d| d.as_millis()),
                    result.deciding_flush.unwrap_or(0),
                    flush_counts(&result.at_flushes),
                );
                results.push(result);
            }
            Err(err) => {
                eprintln!("weir-otlp-bench: reaction run {} failed: {err:#}", i + 1);
                failures.push(format!("run {}: {err:#}", i + 1));
            }
        }
    }
    anyhow::ensure!(
        !results.is_empty() || settings.runs == 0,
        "every reaction run failed: {failures:?}"
    );
    Ok(Run {
        settings,
        results,
        failures,
        load_before,
        load_after: weir_testbed::procfs::load_average(),
    })
}

/// Pauses that spread the runs over the phases of the two clocks the
/// reaction depends on. Envoy flushes its stats every second from its own
/// start, and weir evaluates every 250 ms from its own; started back to back,
/// every run would meet both clocks at the same phase and measure the same
/// case 20 times. Run `i` of `n` waits `(i + ½) / n` of a flush interval
/// before the traffic starts, and a fraction of a control interval taken
/// from the golden-ratio sequence (evenly spread, unrelated to the first)
/// between weir's start and Envoy's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Phases {
    pub(crate) before_envoy: Duration,
    pub(crate) before_traffic: Duration,
}

impl Phases {
    pub(crate) fn of(i: usize, n: usize) -> Self {
        const GOLDEN: f64 = 0.618_033_988_749_894_8;
        let flush = (i as f64 + 0.5) / n.max(1) as f64;
        let control = ((i as f64 + 1.0) * GOLDEN).fract();
        Self {
            before_envoy: CONTROL_INTERVAL.mul_f64(control),
            before_traffic: STATS_FLUSH.mul_f64(flush),
        }
    }
}

async fn one(
    settings: &Settings,
    dir: &Path,
    index: usize,
    phases: Phases,
) -> anyhow::Result<RunResult> {
    let policy = settings.scenario.policy_yaml();
    let fleet = Fleet::start(policy_from_yaml("reaction.yaml", &policy)?)?;
    let path = dir.join(format!("reaction-{index}.yaml"));
    std::fs::write(&path, serde_json::to_string_pretty(fleet.policy())?)?;
    let weir = Weir::start(&path, WasmDelivery::Local).await?;
    tokio::time::sleep(phases.before_envoy).await;
    let envoy = Envoy::start(&ads_bootstrap(weir.xds_addr(), NODE, false)?, ENVOY_WORKERS).await?;
    eventually(
        "Envoy to run the canary at its first step",
        START_DEADLINE,
        || async {
            (envoy_weight(&envoy).await.ok()? == Some(CANARY_PERCENT as u64 * 100)).then_some(())
        },
    )
    .await?;
    // The canary fails from its first requests on.
    fleet
        .backend(CANARY)
        .set_behaviour(settings.scenario.behaviour());
    let arrivals = Arrivals::start(weir.admin_addr());
    tokio::time::sleep(phases.before_traffic).await;
    let cameras = settings.scenario == Scenario::Segment;
    let traffic = Traffic::start(&envoy, settings.rate, Duration::from_secs(40), cameras);
    let outcome = measure(settings, &envoy, &traffic).await;
    let flushes = arrivals.stop().await;
    let traffic_started = traffic.started;
    let (sent, answers) = traffic.stop().await;
    let (reaction, first_error, first_error_wall, poll_rtt) = match outcome {
        Ok(found) => found,
        Err(err) => {
            return Err(err.context(format!(
                "weir's status: {}",
                weir.status()
                    .await
                    .map(|s| s["rollouts"].to_string())
                    .unwrap_or_default()
            )));
        }
    };
    let history: Value = http_client()
        .get(format!("http://{}/v1/rollouts", weir.admin_addr()))
        .send()
        .await?
        .json()
        .await?;
    let decision = history["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["canary"] == CANARY && d["to"] == "rolled_back")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no rollback decision in weir's history: {history}"))?;
    let first_error_ms = epoch_ms(first_error_wall);
    let decided_ms = decision["at_ms"].as_u64();
    let to_decision = decided_ms.map(|at| Duration::from_millis(at.saturating_sub(first_error_ms)));
    // The flushes weir received after the first error, up to the decision.
    let after: Vec<u64> = flushes
        .iter()
        .copied()
        .filter(|&f| f >= first_error_ms && decided_ms.is_none_or(|d| f <= d))
        .collect();
    let deciding = after.last().copied();
    let evidence = &decision["evidence"];
    Ok(RunResult {
        run: index + 1,
        reaction,
        to_decision,
        traffic_to_error: first_error.saturating_duration_since(traffic_started),
        canary_requests: evidence["canary"]["requests"].as_u64().unwrap_or(0),
        canary_errors: evidence["canary"]["errors"].as_u64().unwrap_or(0),
        stable_requests: evidence["stable"]["requests"].as_u64().unwrap_or(0),
        reason: decision["reason"].as_str().unwrap_or_default().to_owned(),
        poll_rtt,
        sent,
        to_first_flush: flushes
            .iter()
            .find(|&&f| f >= first_error_ms)
            .map(|f| Duration::from_millis(f - first_error_ms)),
        deciding_flush: deciding.map(|_| after.len()),
        flush_to_decision: deciding
            .zip(decided_ms)
            .map(|(f, d)| Duration::from_millis(d.saturating_sub(f))),
        at_flushes: after.iter().map(|&f| answered_by(&answers, f)).collect(),
        phases,
    })
}

/// The client's counts at each flush: `canary/errors stable`, comma-separated.
pub(crate) fn flush_counts(at_flushes: &[(u64, u64, u64)]) -> String {
    at_flushes
        .iter()
        .map(|(c, e, s)| format!("{c}/{e} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// When weir received OTLP export requests (Envoy's stats flushes): its
/// `/v1/status` shows the latest (`otlp.last_request_at_ms`, weir's clock),
/// read every 50 ms — far more often than Envoy flushes.
struct Arrivals {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl Arrivals {
    fn start(admin: std::net::SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let client = http_client();
                let url = format!("http://{admin}/v1/status");
                let mut seen: Vec<u64> = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_millis(50));
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let Ok(response) = client.get(&url).send().await else {
                        continue;
                    };
                    let Ok(status) = response.json::<Value>().await else {
                        continue;
                    };
                    if let Some(at) = status["otlp"]["last_request_at_ms"].as_u64()
                        && seen.last() != Some(&at)
                    {
                        seen.push(at);
                    }
                }
                seen
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// Waits for the first canary error, then polls Envoy's config dump every
/// `poll` until the canary weight is 0: the reaction, the first error (both
/// clocks) and the median poll round trip.
async fn measure(
    settings: &Settings,
    envoy: &Envoy,
    traffic: &Traffic,
) -> anyhow::Result<(Duration, Instant, SystemTime, Duration)> {
    let waiting = Instant::now();
    let (first_error, first_error_wall) = loop {
        if let Some(first) = *traffic.first_canary_error.lock().expect("first error lock") {
            break first;
        }
        anyhow::ensure!(
            waiting.elapsed() < FIRST_ERROR_DEADLINE,
            "no canary error in {FIRST_ERROR_DEADLINE:?} ({} requests sent)",
            traffic.sent.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let mut tick = tokio::time::interval(settings.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rtts = Vec::new();
    let rolled_back_at = loop {
        tick.tick().await;
        let asked = Instant::now();
        let weight = envoy_weight(envoy).await?;
        let seen = Instant::now();
        rtts.push(seen - asked);
        if weight == Some(0) {
            break seen;
        }
        anyhow::ensure!(
            first_error.elapsed() < ROLLBACK_DEADLINE,
            "Envoy did not run canary weight 0 within {ROLLBACK_DEADLINE:?} of the first error (it runs {weight:?})"
        );
    };
    rtts.sort();
    let rtt = rtts.get(rtts.len() / 2).copied().unwrap_or_default();
    Ok((
        rolled_back_at.saturating_duration_since(first_error),
        first_error,
        first_error_wall,
        rtt,
    ))
}

/// Steady traffic from many devices at about `rate` requests/s through
/// Envoy, as in the rollout tests; it notes when the client first saw a 5xx
/// from the canary.
struct Traffic {
    stop: Arc<AtomicBool>,
    first_canary_error: Arc<Mutex<Option<(Instant, SystemTime)>>>,
    /// Every answer: when (ms since the epoch), from the canary, an error.
    answers: Arc<Mutex<Vec<Answer>>>,
    sent: Arc<AtomicU64>,
    started: Instant,
    tasks: tokio::task::JoinSet<()>,
}

impl Traffic {
    /// With `cameras`, one device in [`CAMERA_EVERY`] sends
    /// `x-device-type: camera`, the others `sensor`.
    fn start(envoy: &Envoy, rate: u64, limit: Duration, cameras: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let first_canary_error = Arc::new(Mutex::new(None));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        let started = Instant::now();
        let period = Duration::from_micros(1_000_000 * LANES / rate.max(1));
        for lane in 0..LANES {
            let (stop, first, answers, sent, url) = (
                Arc::clone(&stop),
                Arc::clone(&first_canary_error),
                Arc::clone(&answers),
                Arc::clone(&sent),
                envoy.url("/v1/telemetry"),
            );
            tasks.spawn(async move {
                let client = http_client();
                let mut tick = tokio::time::interval(period);
                for i in 0u64.. {
                    tick.tick().await;
                    if stop.load(Ordering::Relaxed) || started.elapsed() > limit {
                        break;
                    }
                    let number = i % DEVICES_PER_LANE;
                    let device = format!("device-{lane}-{number}");
                    let mut request = client.post(&url).header("x-device-id", device);
                    if cameras {
                        let kind = if number.is_multiple_of(CAMERA_EVERY) {
                            "camera"
                        } else {
                            "sensor"
                        };
                        request = request.header("x-device-type", kind);
                    }
                    let Ok(response) = request.send().await else {
                        continue;
                    };
                    let at = (Instant::now(), SystemTime::now());
                    sent.fetch_add(1, Ordering::Relaxed);
                    let canary = response
                        .headers()
                        .get(weir_testbed::backend::BACKEND_HEADER)
                        .is_some_and(|b| b == CANARY);
                    let error = response.status().is_server_error();
                    if canary && error {
                        first.lock().expect("first error lock").get_or_insert(at);
                    }
                    answers.lock().expect("answers lock").push(Answer {
                        at_ms: epoch_ms(at.1),
                        canary,
                        error,
                    });
                }
            });
        }
        Self {
            stop,
            first_canary_error,
            answers,
            sent,
            started,
            tasks,
        }
    }

    /// Stops it: the requests sent and every answer.
    async fn stop(mut self) -> (u64, Vec<Answer>) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        let answers = std::mem::take(&mut *self.answers.lock().expect("answers lock"));
        (self.sent.load(Ordering::Relaxed), answers)
    }
}

/// One answer the client received.
#[derive(Clone, Copy, Debug)]
struct Answer {
    at_ms: u64,
    canary: bool,
    error: bool,
}

fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the client had received up to `at_ms`: canary answers, of which
/// errors, and stable answers.
fn answered_by(answers: &[Answer], at_ms: u64) -> (u64, u64, u64) {
    let mut counts = (0, 0, 0);
    for a in answers.iter().filter(|a| a.at_ms <= at_ms) {
        if a.canary {
            counts.0 += 1;
            counts.1 += u64::from(a.error);
        } else {
            counts.2 += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_spread_over_both_intervals() {
        let n = 20;
        let phases: Vec<Phases> = (0..n).map(|i| Phases::of(i, n)).collect();
        assert!(phases.iter().all(|p| p.before_traffic < STATS_FLUSH));
        assert!(phases.iter().all(|p| p.before_envoy < CONTROL_INTERVAL));
        assert_eq!(phases[0].before_traffic, Duration::from_millis(25));
        assert_eq!(phases[19].before_traffic, Duration::from_millis(975));
        // Every quarter of the control interval gets some runs.
        for quarter in 0..4 {
            let low = CONTROL_INTERVAL.mul_f64(quarter as f64 / 4.0);
            let high = CONTROL_INTERVAL.mul_f64((quarter + 1) as f64 / 4.0);
            let inside = phases
                .iter()
                .filter(|p| p.before_envoy >= low && p.before_envoy < high)
                .count();
            assert!(
                (3..=7).contains(&inside),
                "{inside} runs in quarter {quarter}"
            );
        }
    }

    #[test]
    fn the_policies_are_valid() {
        for scenario in [Scenario::Whole, Scenario::Segment] {
            policy_from_yaml("reaction.yaml", &scenario.policy_yaml()).unwrap();
        }
    }
}
