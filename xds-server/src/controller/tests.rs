//! The controller against synthetic traffic on a simulated clock: samples
//! every second (as Envoy's stats sink sends them), an evaluation every 250 ms.

use std::path::Path;

use weir_policy::Duration;

use super::*;
use crate::metrics_store::{Histogram, Sample};

const CANARY: &str = "ingest-eu-canary";
const STABLE: &str = "ingest-eu";
/// The histogram buckets (ms) the shipped Envoy bootstraps configure.
const BOUNDS: [f64; 69] = crate::metrics_store::LATENCY_BOUNDS_MS;
/// Envoy's default histogram buckets (ms), as an Envoy without the shipped
/// bootstrap's settings reports them.
const ENVOY_DEFAULT_BOUNDS: [f64; 13] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
const START_MS: u64 = 1_700_000_000_000;
const TICK_MS: u64 = 250;

fn example_policy() -> Policy {
    crate::policy_source::parse(
        Path::new("examples/policies/iot-fleet.yaml"),
        include_str!("../../../examples/policies/iot-fleet.yaml"),
    )
    .unwrap()
}

/// The example policy with the canary's hold set to `hold`.
fn policy_with_hold(hold: &str) -> Policy {
    let mut policy = example_policy();
    canary_mut(&mut policy).hold = Duration(hold.into());
    policy
}

fn canary_mut(policy: &mut Policy) -> &mut weir_policy::model::Canary {
    policy
        .services
        .iter_mut()
        .flat_map(|s| &mut s.placements)
        .find_map(|p| p.canary.as_mut())
        .unwrap()
}

/// SplitMix64: deterministic and good enough for synthetic traffic.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How one variant behaves: an error probability, and a latency of
/// `base_ms` plus an exponential tail of mean `tail_ms`.
#[derive(Clone, Copy, Debug)]
struct Behaviour {
    errors: f64,
    base_ms: f64,
    tail_ms: f64,
}

const HEALTHY: Behaviour = Behaviour {
    errors: 0.005,
    base_ms: 10.0,
    tail_ms: 15.0,
};

/// Requests per second to each variant, given the canary's weight.
#[derive(Clone, Copy, Debug)]
enum Rates {
    /// This many through the placement, split by the weight.
    Split(f64),
    /// Fixed rates (canary, stable), whatever the weight.
    Fixed(f64, f64),
}

struct Sim {
    controller: Controller,
    store: MetricsStore,
    rng: Rng,
    now_ms: u64,
    policy: Policy,
    rates: Rates,
    canary: Behaviour,
    stable: Behaviour,
    /// Every decision so far, in order.
    decisions: Vec<Decision>,
    /// (time, phase, weight) after each evaluation.
    trace: Vec<(u64, Phase, u32)>,
    /// The bucket bounds the samples report latency in.
    bounds: &'static [f64],
}

impl Sim {
    fn new(policy: Policy, seed: u64) -> Self {
        Self {
            controller: Controller::new(&policy, Vec::new(), START_MS),
            store: MetricsStore::new(60_000),
            rng: Rng(seed),
            now_ms: START_MS,
            policy,
            rates: Rates::Split(5_000.0),
            canary: HEALTHY,
            stable: HEALTHY,
            decisions: Vec::new(),
            trace: Vec::new(),
            bounds: &BOUNDS,
        }
    }

    fn sample(&mut self, requests: u64, behaviour: Behaviour) -> Sample {
        let bounds = self.bounds;
        let mut latency = Histogram::with_bounds(bounds.to_vec());
        let mut errors = 0;
        for _ in 0..requests {
            if self.rng.next_f64() < behaviour.errors {
                errors += 1;
            }
            let u = self.rng.next_f64().max(1e-12);
            let ms = behaviour.base_ms - behaviour.tail_ms * u.ln();
            let slot = bounds.iter().position(|&b| ms <= b).unwrap_or(bounds.len());
            latency.counts[slot] += 1;
        }
        Sample {
            at_ms: self.now_ms,
            requests,
            errors,
            latency: Some(latency),
        }
    }

    fn weight(&self) -> u32 {
        self.controller.feed().canary_weights[CANARY]
    }

    fn mirror(&self) -> u32 {
        self.controller
            .feed()
            .canary_mirrors
            .get(CANARY)
            .copied()
            .unwrap_or(0)
    }

    fn state(&self) -> RolloutState {
        self.controller
            .rollouts()
            .into_iter()
            .find(|r| r.canary == CANARY)
            .unwrap()
    }

    /// One tick: samples on whole seconds, then an evaluation.
    fn tick(&mut self) -> Evaluation {
        self.now_ms += TICK_MS;
        if self.now_ms.is_multiple_of(1_000) {
            let (canary_rps, stable_rps) = match self.rates {
                Rates::Split(total) => {
                    let share = f64::from(self.weight()) / 10_000.0;
                    // The stable requests below the mirrored share are also
                    // copied to the canary.
                    let mirrored = (f64::from(self.mirror()) / 10_000.0 - share).max(0.0);
                    (total * (share + mirrored), total * (1.0 - share))
                }
                Rates::Fixed(canary, stable) => (canary, stable),
            };
            let (canary, stable) = (self.canary, self.stable);
            let sample = self.sample(canary_rps.round() as u64, canary);
            self.store.add(CANARY, sample);
            let sample = self.sample(stable_rps.round() as u64, stable);
            self.store.add(STABLE, sample);
            self.store.prune(self.now_ms);
        }
        let evaluation = self.controller.evaluate(&self.store, self.now_ms);
        let problems = evaluation.feed.validate(&self.policy);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(evaluation.feed, self.controller.feed());
        self.decisions.extend(evaluation.decisions.iter().cloned());
        let state = self.state();
        self.trace
            .push((self.now_ms, state.phase, state.feed_weight()));
        evaluation
    }

    /// Runs for `seconds` of simulated time.
    fn run(&mut self, seconds: u64) {
        for _ in 0..seconds * 1_000 / TICK_MS {
            self.tick();
        }
    }

    /// Runs until `done` holds, for at most `seconds`; whether it did.
    fn run_until(&mut self, seconds: u64, done: impl Fn(&Sim) -> bool) -> bool {
        for _ in 0..seconds * 1_000 / TICK_MS {
            self.tick();
            if done(self) {
                return true;
            }
        }
        false
    }

    fn rollbacks(&self) -> usize {
        self.decisions
            .iter()
            .filter(|d| d.to == Phase::RolledBack)
            .count()
    }
}

/// While a rollout keeps progressing, its weight never goes down.
fn assert_monotone_while_progressing(trace: &[(u64, Phase, u32)]) {
    for pair in trace.windows(2) {
        let ((_, p0, w0), (at, p1, w1)) = (pair[0], pair[1]);
        if p0 == Phase::Progressing && p1 == Phase::Progressing {
            assert!(w1 >= w0, "weight went down from {w0} to {w1} at {at}");
        }
    }
}

#[test]
fn a_healthy_canary_walks_every_step_and_is_promoted() {
    // A hold longer than the window, so that at 100 % the stable's live
    // window empties and the baseline is used.
    let mut sim = Sim::new(policy_with_hold("15s"), 1);
    let first = sim.tick();
    assert_eq!(first.decisions.len(), 1, "the rollout's start is recorded");
    assert!(first.decisions[0].reason.contains("rollout started"));
    assert_eq!(sim.weight(), 100);

    let promoted = sim.run_until(300, |s| s.state().phase == Phase::Promoted);
    assert!(promoted, "not promoted: {:?}", sim.state());
    assert_eq!(sim.rollbacks(), 0);
    let weights: Vec<u32> = sim.decisions.iter().map(|d| d.weight_bp).collect();
    assert_eq!(weights, vec![100, 500, 1_000, 2_500, 5_000, 10_000, 10_000]);
    let last = sim.decisions.last().unwrap();
    assert_eq!((last.from, last.to), (Phase::Progressing, Phase::Promoted));
    assert_eq!(last.evidence.verdict, Verdict::Healthy);
    assert!(
        last.evidence.stable_baseline_at_ms.is_some(),
        "at 100 % the stable's last full window is the comparison: {:?}",
        last.evidence
    );
    // Each step was held at least `hold` after it began.
    for pair in sim.decisions[1..].windows(2) {
        assert!(pair[1].at_ms - pair[0].at_ms >= 15_000, "{pair:?}");
    }
    assert_monotone_while_progressing(&sim.trace);
    assert_eq!(sim.controller.decisions(), sim.decisions.as_slice());

    // Promoted is terminal: more time, even bad traffic, changes nothing.
    sim.canary.errors = 0.5;
    sim.run(60);
    assert_eq!(sim.state().phase, Phase::Promoted);
    assert_eq!(sim.weight(), 10_000);
}

#[test]
fn twenty_percent_errors_roll_back_on_the_first_evaluation_with_enough_samples() {
    for seed in 0..5 {
        let mut sim = Sim::new(policy_with_hold("30s"), seed);
        sim.rates = Rates::Fixed(50.0, 1_000.0);
        sim.canary.errors = 0.20;
        sim.stable.errors = 0.01;
        let min = 200;
        loop {
            let evaluation = sim.tick();
            let canary = sim.store.window(CANARY, sim.now_ms, WINDOW_MS);
            if canary.requests >= min {
                let rollback = evaluation
                    .decisions
                    .iter()
                    .find(|d| d.to == Phase::RolledBack)
                    .unwrap_or_else(|| panic!("no rollback at {}", sim.now_ms - START_MS));
                assert_eq!(rollback.weight_bp, 0);
                assert_eq!(rollback.evidence.verdict, Verdict::Bad);
                assert!(rollback.reason.contains("errors"), "{}", rollback.reason);
                assert!(evaluation.changed);
                assert_eq!(evaluation.feed.canary_weights[CANARY], 0);
                break;
            }
            assert_eq!(sim.rollbacks(), 0, "rolled back before {min} samples");
        }
        // Rolled back is terminal.
        sim.canary.errors = 0.0;
        sim.run(120);
        assert_eq!(sim.state().phase, Phase::RolledBack);
        assert_eq!(sim.weight(), 0);
    }
}

#[test]
fn two_hundred_ms_more_latency_rolls_back() {
    let mut sim = Sim::new(policy_with_hold("30s"), 7);
    sim.rates = Rates::Fixed(50.0, 1_000.0);
    sim.canary.base_ms += 200.0;
    let rolled_back = sim.run_until(10, |s| s.state().phase == Phase::RolledBack);
    assert!(rolled_back);
    let decision = sim.decisions.last().unwrap();
    assert!(decision.reason.contains("latency"), "{}", decision.reason);
    let ratio = decision.evidence.latency_ratio.as_ref().unwrap();
    assert!(ratio.p95 > 1.2 && ratio.p99 > 1.5, "{ratio:?}");
    // On the first evaluation where both had enough observations.
    let canary = sim.store.window(CANARY, sim.now_ms - TICK_MS, WINDOW_MS);
    assert!(canary.latency.count() < 200);
}

#[test]
fn latency_in_buckets_too_wide_to_judge_is_never_promoted() {
    // Envoy's default buckets: a canary whose tail is twice stable's (p95
    // about ×1.8, over a ×1.2 limit) has its quantiles in buckets ×2 to ×2.5
    // wide next to stable's, which cannot tell ×1 from ×2.
    let mut sim = Sim::new(policy_with_hold("5s"), 11);
    sim.bounds = &ENVOY_DEFAULT_BOUNDS;
    sim.canary.tail_ms *= 2.0;
    sim.run(120);
    let state = sim.state();
    assert_eq!(
        (state.phase, state.step),
        (Phase::Progressing, 0),
        "{state:?}"
    );
    assert_eq!(sim.rollbacks(), 0);
    let evidence = sim.controller.evidence()[CANARY].clone();
    assert_eq!(
        evidence.verdict,
        Verdict::Inconclusive,
        "{:?}",
        evidence.findings
    );
    assert!(!evidence.latency_unresolved.is_empty());
    // The same canary with the shipped buckets is found out and rolled back.
    let mut sim = Sim::new(policy_with_hold("5s"), 11);
    sim.canary.tail_ms *= 2.0;
    assert!(sim.run_until(120, |s| s.state().phase == Phase::RolledBack));
}

#[test]
fn equal_noise_in_both_is_never_bad_over_a_long_run() {
    // 1 % errors in both, same latency; at the first step (the fewest canary
    // samples, the noisiest) for 15 minutes, then a full walk.
    let noisy = Behaviour {
        errors: 0.01,
        ..HEALTHY
    };
    for seed in [11, 12] {
        let mut sim = Sim::new(policy_with_hold("1h"), seed);
        sim.canary = noisy;
        sim.stable = noisy;
        sim.run(900);
        assert_eq!(sim.rollbacks(), 0, "{:?}", sim.decisions.last());
        assert_eq!(sim.state().phase, Phase::Progressing);
        let healthy = sim.controller.evidence()[CANARY].verdict;
        assert_eq!(healthy, Verdict::Healthy);
    }
    let mut sim = Sim::new(example_policy(), 13);
    sim.canary = noisy;
    sim.stable = noisy;
    assert!(sim.run_until(600, |s| s.state().phase == Phase::Promoted));
    assert_eq!(sim.rollbacks(), 0);
    assert_monotone_while_progressing(&sim.trace);
}

#[test]
fn no_traffic_holds_forever() {
    let mut sim = Sim::new(policy_with_hold("2s"), 3);
    sim.rates = Rates::Fixed(0.0, 0.0);
    sim.run(3_600);
    let state = sim.state();
    assert_eq!(
        (state.phase, state.step, state.weight_bp),
        (Phase::Progressing, 0, 100)
    );
    assert_eq!(state.healthy_ms, 0);
    assert_eq!(
        sim.decisions.len(),
        1,
        "only the start: {:?}",
        sim.decisions
    );
    let evidence = &sim.controller.evidence()[CANARY];
    assert_eq!(evidence.verdict, Verdict::Inconclusive);
    assert!(evidence.findings[0].contains("no traffic"), "{evidence:?}");

    // Stable traffic alone is no more evidence.
    sim.rates = Rates::Fixed(0.0, 1_000.0);
    sim.run(600);
    assert_eq!(sim.state().weight_bp, 100);
    assert_eq!(sim.decisions.len(), 1);
}

#[test]
fn min_samples_is_respected() {
    let mut policy = policy_with_hold("2s");
    canary_mut(&mut policy).analysis.min_samples = 300;
    let mut sim = Sim::new(policy, 5);
    // 25 requests a second: 250 in a 10 s window, all failing. No verdict.
    sim.rates = Rates::Fixed(25.0, 1_000.0);
    sim.canary.errors = 1.0;
    sim.run(300);
    assert_eq!(sim.state().phase, Phase::Progressing);
    assert_eq!(sim.weight(), 100);
    // Healthy but under the minimum: it does not advance either.
    sim.canary = HEALTHY;
    sim.run(300);
    assert_eq!((sim.state().step, sim.weight()), (0, 100));
    assert_eq!(sim.decisions.len(), 1);
    // 35 a second reaches 300 per window: healthy now advances.
    sim.rates = Rates::Fixed(35.0, 1_000.0);
    assert!(sim.run_until(30, |s| s.state().step == 1));
    // The same, failing: rolled back.
    sim.canary.errors = 1.0;
    assert!(sim.run_until(30, |s| s.state().phase == Phase::RolledBack));
}

#[test]
fn inconclusive_pauses_the_hold_clock() {
    let mut sim = Sim::new(policy_with_hold("20s"), 9);
    sim.rates = Rates::Fixed(100.0, 1_000.0);
    sim.run(10);
    let banked = sim.state().healthy_ms;
    assert!(banked > 5_000 && banked < 20_000, "{banked}");
    // Traffic stops: the window empties, the clock stops but keeps its time.
    sim.rates = Rates::Fixed(0.0, 0.0);
    sim.run(60);
    let paused = sim.state();
    assert_eq!(paused.step, 0);
    assert!(paused.healthy_ms >= banked, "{paused:?}");
    assert!(paused.healthy_since_ms.is_none());
    // Traffic is back: the step completes with the time already banked.
    sim.rates = Rates::Fixed(100.0, 1_000.0);
    let resumed_at = sim.now_ms;
    assert!(sim.run_until(60, |s| s.state().step == 1));
    let took = sim.now_ms - resumed_at;
    assert!(took < 12_000, "it started over: {took} ms");
}

#[test]
fn pause_resume_promote_and_abort() {
    let mut sim = Sim::new(policy_with_hold("5s"), 21);
    sim.run(3);
    assert!(
        sim.controller
            .command("nope", Command::Pause, sim.now_ms)
            .unwrap_err()
            .contains("ingest-eu-canary")
    );
    assert!(
        sim.controller
            .command(CANARY, Command::Resume, sim.now_ms)
            .is_err()
    );

    let paused = sim
        .controller
        .command(CANARY, Command::Pause, sim.now_ms)
        .unwrap();
    assert_eq!(
        (paused.from, paused.to, paused.weight_bp),
        (Phase::Progressing, Phase::Paused, 100)
    );
    assert!(
        sim.controller
            .command(CANARY, Command::Pause, sim.now_ms)
            .is_err()
    );
    // Paused: healthy for long, it stays; bad, it is not rolled back either.
    sim.run(60);
    assert_eq!((sim.state().phase, sim.weight()), (Phase::Paused, 100));
    sim.canary.errors = 0.5;
    sim.run(30);
    assert_eq!((sim.state().phase, sim.weight()), (Phase::Paused, 100));
    sim.canary.errors = HEALTHY.errors;
    sim.run(10);

    // Resume: the hold starts afresh.
    let resumed_at = sim.now_ms;
    let resumed = sim
        .controller
        .command(CANARY, Command::Resume, sim.now_ms)
        .unwrap();
    assert_eq!(resumed.to, Phase::Progressing);
    assert!(sim.run_until(30, |s| s.state().step == 1));
    assert!(sim.now_ms - resumed_at >= 5_000);

    // Promote from progressing: 100 % at once.
    let promoted = sim
        .controller
        .command(CANARY, Command::Promote, sim.now_ms)
        .unwrap();
    assert_eq!((promoted.to, promoted.weight_bp), (Phase::Promoted, 10_000));
    assert_eq!(sim.controller.feed().canary_weights[CANARY], 10_000);
    for command in [
        Command::Pause,
        Command::Resume,
        Command::Promote,
        Command::Abort,
    ] {
        let err = sim
            .controller
            .command(CANARY, command, sim.now_ms)
            .unwrap_err();
        assert!(err.contains("promoted"), "{err}");
    }
    // The command's decision is in the history.
    assert_eq!(sim.controller.decisions().last(), Some(&promoted));
    let evaluation = sim.tick();
    assert!(
        evaluation.decisions.is_empty(),
        "commands are not handed out twice"
    );
    assert!(
        evaluation.changed,
        "the feed moved since the last evaluation"
    );

    // Abort, from paused.
    let mut sim = Sim::new(policy_with_hold("5s"), 22);
    sim.run(3);
    sim.controller
        .command(CANARY, Command::Pause, sim.now_ms)
        .unwrap();
    let aborted = sim
        .controller
        .command(CANARY, Command::Abort, sim.now_ms)
        .unwrap();
    assert_eq!(
        (aborted.from, aborted.to, aborted.weight_bp),
        (Phase::Paused, Phase::RolledBack, 0)
    );
    assert_eq!(sim.controller.feed().canary_weights[CANARY], 0);
    assert!(
        sim.controller
            .command(CANARY, Command::Resume, sim.now_ms)
            .is_err()
    );
    assert_eq!("abort".parse::<Command>(), Ok(Command::Abort));
    assert!("restart".parse::<Command>().is_err());
}

#[test]
fn a_restart_resumes_at_the_same_step_and_weight() {
    let dir = tempfile::tempdir().unwrap();
    let store: Box<dyn crate::store::Store> =
        Box::new(crate::store::RedbStore::open(dir.path().join("state.redb")).unwrap());
    let mut sim = Sim::new(policy_with_hold("10s"), 31);
    let mut saved = Vec::new();
    assert!(sim.run_until(120, |s| s.state().step == 2));
    sim.run(5);
    let before = sim.state();
    assert_eq!((before.step, before.weight_bp), (2, 1_000));
    store
        .save(&crate::store::Checkpoint {
            rollouts: &sim.controller.rollouts(),
            new_decisions: &sim.decisions,
            scores: &sim.controller.scores(),
            feed: &sim.controller.feed(),
        })
        .unwrap();
    saved.extend(sim.decisions.clone());
    let feed_before = sim.controller.feed();

    // A minute later, a new process.
    let crate::store::Saved {
        rollouts: restored,
        decisions,
        scores,
        ..
    } = store.load().unwrap();
    assert_eq!(decisions, saved);
    let now = sim.now_ms + 60_000;
    let mut controller = Controller::new(&sim.policy, restored, now);
    controller.restore_history(decisions);
    controller.restore_scores(&scores);
    assert_eq!(controller.rollouts(), vec![before.clone()]);
    assert_eq!(controller.feed(), feed_before);
    assert_eq!(controller.decisions(), saved.as_slice());
    sim.controller = controller;
    sim.now_ms = now;
    let evaluation = sim.tick();
    assert!(
        evaluation.decisions.is_empty(),
        "{:?}",
        evaluation.decisions
    );
    assert!(!evaluation.changed);
    // The minute away is not credited to the hold; healthy traffic moves it on.
    assert_eq!(sim.state().healthy_ms, before.healthy_ms);
    assert!(sim.run_until(60, |s| s.state().step == 3));
    assert_eq!(sim.weight(), 2_500);
}

#[test]
fn set_policy_keeps_or_restarts_rollouts() {
    let mut sim = Sim::new(policy_with_hold("5s"), 41);
    assert!(sim.run_until(60, |s| s.state().step == 2));
    let at_step_2 = sim.state();

    // An edit elsewhere, or of the hold or analysis: the rollout goes on.
    let mut edited = sim.policy.clone();
    edited.admission.concurrency_limit = 150;
    canary_mut(&mut edited).hold = Duration("7s".into());
    canary_mut(&mut edited).analysis.min_samples = 150;
    sim.controller.set_policy(&edited, sim.now_ms);
    assert_eq!(sim.state(), at_step_2);
    assert_eq!(sim.controller.feed().concurrency_limit, Some(150));
    sim.policy = edited.clone();
    assert!(sim.tick().decisions.is_empty());

    // Steps edited, the current weight still one of them: same weight, new index.
    canary_mut(&mut edited).steps = vec![2.0, 10.0, 30.0, 100.0];
    sim.controller.set_policy(&edited, sim.now_ms);
    let state = sim.state();
    assert_eq!(
        (state.phase, state.step, state.weight_bp),
        (Phase::Progressing, 1, 1_000)
    );
    sim.policy = edited.clone();
    let evaluation = sim.tick();
    assert_eq!(
        evaluation.decisions.len(),
        1,
        "the step change is handed out once"
    );
    assert!(sim.tick().decisions.is_empty());

    // Steps edited without the current weight: back to the first step.
    canary_mut(&mut edited).steps = vec![5.0, 50.0, 100.0];
    sim.controller.set_policy(&edited, sim.now_ms);
    assert_eq!((sim.state().step, sim.weight()), (0, 500));
    sim.policy = edited.clone();

    // Promoted, then the steps change: a new rollout.
    sim.controller
        .command(CANARY, Command::Promote, sim.now_ms)
        .unwrap();
    canary_mut(&mut edited).steps = vec![1.0, 100.0];
    sim.controller.set_policy(&edited, sim.now_ms);
    let state = sim.state();
    assert_eq!(
        (state.phase, state.step, state.weight_bp),
        (Phase::Progressing, 0, 100)
    );
    sim.policy = edited.clone();

    // Rolled back, and only the hold changes: still rolled back.
    sim.controller
        .command(CANARY, Command::Abort, sim.now_ms)
        .unwrap();
    canary_mut(&mut edited).hold = Duration("9s".into());
    sim.controller.set_policy(&edited, sim.now_ms);
    assert_eq!(sim.state().phase, Phase::RolledBack);
    // A new salt: a new rollout (other devices).
    canary_mut(&mut edited).salt = Some("release-2".into());
    sim.controller.set_policy(&edited, sim.now_ms);
    let state = sim.state();
    assert_eq!(
        (state.phase, state.weight_bp, state.salt.as_str()),
        (Phase::Progressing, 100, "release-2")
    );
    sim.policy = edited.clone();
    let evaluation = sim.tick();
    assert!(
        evaluation
            .decisions
            .iter()
            .any(|d| d.reason.contains("salt"))
    );

    // The canary removed from the policy: its rollout is gone.
    let mut without = edited.clone();
    for placement in without.services.iter_mut().flat_map(|s| &mut s.placements) {
        placement.canary = None;
    }
    without.clusters.retain(|c| c.name != CANARY);
    sim.controller.set_policy(&without, sim.now_ms);
    assert!(sim.controller.rollouts().is_empty());
    let feed = sim.controller.feed();
    assert!(feed.canary_weights.is_empty());
    assert!(feed.validate(&without).is_empty());
    assert!(!feed.sla_scores.contains_key(CANARY));
}

#[test]
fn restored_states_that_no_longer_match_start_over() {
    let policy = policy_with_hold("5s");
    let mut stale = Controller::new(&policy, Vec::new(), START_MS).rollouts();
    stale[0].stable = "ingest-us".into();
    stale[0].step = 3;
    stale[0].weight_bp = 2_500;
    let mut unknown = stale[0].clone();
    unknown.canary = "gone-canary".into();
    stale.push(unknown);
    let mut controller = Controller::new(&policy, stale, START_MS);
    let rollouts = controller.rollouts();
    assert_eq!(rollouts.len(), 1);
    assert_eq!(
        (
            rollouts[0].step,
            rollouts[0].weight_bp,
            rollouts[0].stable.as_str()
        ),
        (0, 100, STABLE)
    );
    let evaluation = controller.evaluate(&MetricsStore::new(60_000), START_MS + TICK_MS);
    assert!(evaluation.decisions[0].reason.contains("stable cluster"));
}

#[test]
fn weights_never_go_down_while_progressing_whatever_the_traffic() {
    for seed in 100..106 {
        let mut sim = Sim::new(policy_with_hold("3s"), seed);
        let mut pick = Rng(seed * 7919);
        for _ in 0..40 {
            sim.canary = Behaviour {
                errors: if pick.next_f64() < 0.2 { 0.05 } else { 0.005 },
                base_ms: 10.0 + if pick.next_f64() < 0.1 { 100.0 } else { 0.0 },
                tail_ms: 15.0,
            };
            sim.rates = if pick.next_f64() < 0.3 {
                Rates::Fixed(pick.next_f64() * 40.0, pick.next_f64() * 1_000.0)
            } else {
                Rates::Split(2_000.0 + pick.next_f64() * 4_000.0)
            };
            sim.run(5);
        }
        assert_monotone_while_progressing(&sim.trace);
        // Every change of weight or phase is a decision.
        let mut last = (Phase::Progressing, 100);
        for &(at, phase, weight) in &sim.trace {
            if (phase, weight) != last {
                assert!(
                    sim.decisions
                        .iter()
                        .any(|d| d.at_ms == at && d.to == phase && d.weight_bp == weight),
                    "undocumented change at {at}"
                );
            }
            last = (phase, weight);
        }
    }
}

mod sla_scores {
    use super::*;

    const US: &str = "ingest-us";

    struct SlaSim {
        controller: Controller,
        store: MetricsStore,
        rng: Rng,
        now_ms: u64,
        rps: u64,
        published: Vec<f64>,
    }

    impl SlaSim {
        fn new(policy: &Policy, rps: u64) -> Self {
            Self {
                rps,
                controller: Controller::new(policy, Vec::new(), START_MS),
                store: MetricsStore::new(60_000),
                rng: Rng(77),
                now_ms: START_MS,
                published: Vec::new(),
            }
        }

        /// `seconds` of traffic on `cluster` with latencies `base + Exp(tail)`,
        /// or none.
        fn run(&mut self, cluster: &str, seconds: u64, latency: Option<(f64, f64)>) {
            for _ in 0..seconds * 4 {
                self.now_ms += TICK_MS;
                if let Some((base, tail)) = latency
                    && self.now_ms.is_multiple_of(1_000)
                {
                    let bounds = ENVOY_DEFAULT_BOUNDS;
                    let mut h = Histogram::with_bounds(bounds.to_vec());
                    for _ in 0..self.rps {
                        let ms = base - tail * self.rng.next_f64().max(1e-12).ln();
                        let slot = bounds.iter().position(|&b| ms <= b).unwrap_or(bounds.len());
                        h.counts[slot] += 1;
                    }
                    self.store.add(
                        cluster,
                        Sample {
                            at_ms: self.now_ms,
                            requests: self.rps,
                            errors: 0,
                            latency: Some(h),
                        },
                    );
                }
                self.store.prune(self.now_ms);
                let evaluation = self.controller.evaluate(&self.store, self.now_ms);
                let score = evaluation.feed.sla_scores[cluster];
                assert!((0.2..=1.0).contains(&score), "{score}");
                self.published.push(score);
            }
        }

        fn changes(&self) -> usize {
            self.published.windows(2).filter(|w| w[0] != w[1]).count()
        }

        fn status(&self, cluster: &str) -> SlaStatus {
            self.controller
                .sla()
                .into_iter()
                .find(|s| s.cluster == cluster)
                .unwrap()
        }
    }

    #[test]
    fn fast_clusters_keep_a_score_of_one() {
        let mut sim = SlaSim::new(&example_policy(), 100);
        sim.run(US, 120, Some((20.0, 20.0)));
        assert_eq!(sim.changes(), 0);
        assert_eq!(sim.published.last(), Some(&1.0));
        assert_eq!(sim.status(US).target_p99_ms, Some(250.0));
    }

    /// Published scores move by at most one EWMA step (0.3 of the full range).
    fn assert_no_jumps(published: &[f64]) {
        for pair in published.windows(2) {
            assert!((pair[1] - pair[0]).abs() <= 0.25, "jump {pair:?}");
        }
    }

    #[test]
    fn a_slow_cluster_is_scored_down_smoothly_then_drifts_back_without_data() {
        let mut sim = SlaSim::new(&example_policy(), 100);
        sim.run(US, 30, Some((20.0, 20.0)));
        // p99 far over the 250 ms target: down to the floor, in a few moves.
        sim.run(US, 60, Some((300.0, 30.0)));
        assert_eq!(sim.published.last(), Some(&0.2));
        let falls = sim.changes();
        assert!(
            (3..=12).contains(&falls),
            "{falls} changes: {:?}",
            sim.published
        );
        // No data: the score drifts back to 1 slowly, never jumps.
        let at_silence = *sim.published.last().unwrap();
        sim.run(US, 15, None);
        assert!(sim.status(US).p99_ms.is_none());
        let after = *sim.published.last().unwrap();
        assert!(after - at_silence < 0.5, "{at_silence} → {after}");
        sim.run(US, 300, None);
        assert_eq!(sim.published.last(), Some(&1.0));
        assert_no_jumps(&sim.published);
    }

    #[test]
    fn noise_around_a_level_does_not_make_the_score_flap() {
        let mut policy = example_policy();
        let ingest = policy
            .services
            .iter_mut()
            .find(|s| s.name == "ingest")
            .unwrap();
        ingest.sla = Some(weir_policy::model::Sla { p99_ms: 400.0 });
        let mut sim = SlaSim::new(&policy, 60);
        // p99 ≈ 470 ms (raw ≈ 0.82), wandering with the sampling noise.
        sim.run(US, 60, Some((100.0, 60.0)));
        let settled = sim.changes();
        let raw_before = sim.status(US).raw.unwrap();
        assert!((0.6..0.95).contains(&raw_before), "{raw_before}");
        let mut raws = Vec::new();
        let mut smoothed = Vec::new();
        for _ in 0..300 {
            sim.run(US, 1, Some((100.0, 60.0)));
            raws.push(sim.status(US).raw.unwrap());
            smoothed.push(sim.status(US).smoothed);
        }
        let spread = |v: &[f64]| {
            v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
        };
        let published_changes = sim.changes() - settled;
        // Without hysteresis, the score (to 0.01) would have moved this often.
        let unfiltered = smoothed
            .windows(2)
            .filter(|w| (w[0] * 100.0).round() != (w[1] * 100.0).round())
            .count();
        assert!(spread(&raws) > 0.05, "the test needs noise: {raws:?}");
        assert!(
            published_changes <= 4 && published_changes * 20 <= unfiltered,
            "{published_changes} changes over 5 minutes ({unfiltered} unfiltered); raw spread {:.3}, smoothed spread {:.3}",
            spread(&raws),
            spread(&smoothed)
        );
        assert_no_jumps(&sim.published);
    }

    #[test]
    fn the_strictest_target_applies_and_clusters_without_one_stay_at_one() {
        let mut policy = example_policy();
        // ingest-us is also placed by `commands` (300 ms); ingest keeps 250 ms.
        let commands = policy
            .services
            .iter_mut()
            .find(|s| s.name == "commands")
            .unwrap();
        commands.placements.push(weir_policy::model::Placement {
            matches: None,
            cluster: US.into(),
            canary: None,
        });
        commands.sla = Some(weir_policy::model::Sla { p99_ms: 100.0 });
        let ingest = policy
            .services
            .iter_mut()
            .find(|s| s.name == "ingest")
            .unwrap();
        ingest.sla = None;
        let mut sim = SlaSim::new(&policy, 100);
        assert_eq!(sim.status(US).target_p99_ms, Some(100.0));
        assert_eq!(sim.status(CANARY).target_p99_ms, None);
        sim.run(CANARY, 60, Some((900.0, 30.0)));
        assert_eq!(sim.published.last(), Some(&1.0));
        assert_eq!(sim.status(CANARY).published, 1.0);
    }
}

#[test]
fn sla_scores_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store: Box<dyn crate::store::Store> =
        Box::new(crate::store::RedbStore::open(dir.path().join("state.redb")).unwrap());
    let slow = Behaviour {
        errors: 0.0,
        base_ms: 400.0,
        tail_ms: 10.0,
    };
    let mut sim = Sim::new(example_policy(), 7);
    sim.stable = slow;
    sim.canary = slow;
    sim.run(20);
    let degraded = sim.controller.feed().sla_scores[STABLE];
    assert!(degraded < 0.9, "{degraded}");
    store
        .save(&crate::store::Checkpoint {
            rollouts: &sim.controller.rollouts(),
            new_decisions: &sim.decisions,
            scores: &sim.controller.scores(),
            feed: &sim.controller.feed(),
        })
        .unwrap();

    let saved = store.load().unwrap();
    let mut restarted = Controller::new(&sim.policy, saved.rollouts, sim.now_ms + 1_000);
    assert_eq!(
        restarted.feed().sla_scores[STABLE],
        1.0,
        "without the saved scores a restart forgets them"
    );
    restarted.restore_scores(&saved.scores);
    assert_eq!(restarted.feed().sla_scores[STABLE], degraded);
    assert_eq!(restarted.scores(), sim.controller.scores());
}

/// The example policy with a 10 % mirror phase held `mirror_hold`.
fn policy_with_mirror(mirror_hold: &str) -> Policy {
    let mut policy = policy_with_hold("30s");
    canary_mut(&mut policy).mirror = Some(weir_policy::model::Mirror {
        percent: 10.0,
        hold: Some(Duration(mirror_hold.into())),
    });
    policy
}

#[test]
fn a_healthy_mirror_phase_starts_the_split_after_its_hold() {
    let mut sim = Sim::new(policy_with_mirror("10s"), 3);
    let first = sim.tick();
    assert!(
        first.decisions[0]
            .reason
            .contains("rollout started: mirrored at 10 % before step 1 of 6"),
        "{:?}",
        first.decisions
    );
    assert_eq!((sim.weight(), sim.mirror()), (0, 1_000));
    assert!(sim.state().mirroring());

    let split = sim.run_until(60, |s| s.weight() > 0);
    assert!(split, "the split never started: {:?}", sim.state());
    let decision = sim.decisions.last().unwrap();
    assert!(
        decision
            .reason
            .contains("mirrored at 10 %: the split starts, step 1 of 6, 1 %"),
        "{}",
        decision.reason
    );
    assert!(decision.at_ms - START_MS >= 10_000, "{decision:?}");
    assert_eq!((decision.from_weight_bp, decision.weight_bp), (0, 100));
    assert_eq!((sim.weight(), sim.mirror()), (100, 0));
    assert!(!sim.state().mirroring());
    // Then the steps' own hold (30 s) applies.
    let at = sim.now_ms;
    assert!(sim.run_until(60, |s| s.weight() > 100));
    assert!(sim.now_ms - at >= 30_000);
}

#[test]
fn a_bad_mirrored_canary_is_rolled_back_before_any_device_gets_it() {
    let mut sim = Sim::new(policy_with_mirror("10s"), 4);
    sim.canary.errors = 0.2;
    let rolled_back = sim.run_until(30, |s| s.state().phase == Phase::RolledBack);
    assert!(rolled_back, "{:?}", sim.state());
    assert!(
        sim.trace.iter().all(|&(_, _, weight)| weight == 0),
        "a device got the canary: {:?}",
        sim.trace
    );
    let decision = sim.decisions.last().unwrap();
    assert!(
        decision
            .reason
            .starts_with("canary is bad mirrored at 10 %"),
        "{}",
        decision.reason
    );
    assert_eq!((sim.weight(), sim.mirror()), (0, 0));
    assert!(!sim.state().mirroring());
}

#[test]
fn the_policy_dropping_the_mirror_phase_starts_the_split() {
    let mut sim = Sim::new(policy_with_mirror("1m"), 5);
    sim.run(5);
    assert_eq!((sim.weight(), sim.mirror()), (0, 1_000));
    // A new share applies to the running phase.
    let mut policy = policy_with_mirror("1m");
    canary_mut(&mut policy).mirror.as_mut().unwrap().percent = 20.0;
    sim.controller.set_policy(&policy, sim.now_ms);
    assert_eq!((sim.weight(), sim.mirror()), (0, 2_000));
    // Without a mirror phase, the split starts at the first step.
    let policy = policy_with_hold("30s");
    sim.controller.set_policy(&policy, sim.now_ms);
    assert_eq!((sim.weight(), sim.mirror()), (100, 0));
    let evaluation = sim.tick();
    assert!(
        evaluation.decisions[0]
            .reason
            .contains("the policy removed the mirror phase: step 1 of 6, 1 %"),
        "{:?}",
        evaluation.decisions
    );
}

#[test]
fn a_controller_rebuilt_from_saved_state_keeps_the_measured_rtts() {
    let policy = example_policy();
    let mut sim = Sim::new(policy.clone(), 9);
    let bounds = BOUNDS;
    let mut counts = vec![0; bounds.len() + 1];
    counts[bounds.iter().position(|&b| 30.0 <= b).unwrap()] = 10;
    let connects = crate::metrics_store::Counts {
        requests: 10,
        errors: 0,
        latency: Some((&bounds[..], &counts[..])),
    };
    sim.store
        .know_clusters(policy.clusters.iter().map(|c| c.name.clone()));
    assert!(
        sim.store
            .record_connect("eu-west", "ingest-us", sim.now_ms, connects)
    );
    sim.tick();
    let measured = sim.controller.feed().rtt_ms;
    assert!(
        measured["eu-west"].contains_key("ingest-us"),
        "{measured:?}"
    );
    // Rebuilt as when a save fails: measurements are in no saved state.
    let mut rebuilt = Controller::new(&policy, sim.controller.rollouts(), sim.now_ms);
    assert!(rebuilt.feed().rtt_ms.is_empty());
    rebuilt.take_measurements(&mut sim.controller);
    assert_eq!(rebuilt.feed().rtt_ms, measured);
    assert_eq!(rebuilt.rtt().len(), 1);
}
