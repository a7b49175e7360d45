//! The dashboard's recent past: a bounded ring of points, one a second for
//! fifteen minutes by default, each what the controller and the metrics store
//! said at that moment — every rollout's phase, weight and canary-vs-stable
//! figures, the filter's admission counts per priority class, every
//! cluster's SLA score — and the rollout decisions, to mark on the charts.
//!
//! `serve` records after each controller evaluation, and saves the points in
//! the state database now and then so that a restarted weir draws its past
//! again (the marks come back from the decision history); the admin API's
//! `GET /v1/timeline?since=MS` hands out what is newer than `since`. Pure
//! logic: time is passed in, and nothing is read from anywhere.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::controller::{Decision, Evidence, Phase, RolloutState, SlaStatus, Unresolved, Verdict};
use crate::metrics_store::{Admission, ClassCounts};

/// Time between two points (ms).
pub const INTERVAL_MS: u64 = 1_000;

/// Points kept: fifteen minutes at one a second.
pub const CAPACITY: usize = 900;

/// Decision marks kept at most (older ones also go with their points).
pub const MAX_MARKS: usize = 1_000;

/// One variant's figures over the controller's analysis window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantPoint {
    /// Requests in the window.
    pub requests: u64,
    /// Of which 5xx.
    pub errors: u64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// 99th percentile latency (ms), when latency was reported.
    pub p99_ms: Option<f64>,
}

impl VariantPoint {
    fn of(stats: &crate::controller::VariantStats) -> Self {
        Self {
            requests: stats.requests,
            errors: stats.errors,
            error_rate: stats.error_rate,
            p99_ms: stats.p99_ms,
        }
    }
}

/// A rollout at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutPoint {
    /// The stable cluster it is compared with.
    pub stable_cluster: String,
    /// Where it is.
    pub phase: Phase,
    /// The step index.
    pub step: usize,
    /// The canary's weight (basis points).
    pub weight_bp: u32,
    /// The share mirrored to the canary in its mirror phase (basis points).
    #[serde(default, skip_serializing_if = "weir_policy::split::is_zero")]
    pub mirror_bp: u32,
    /// The latest analysis verdict.
    pub verdict: Verdict,
    /// The canary's figures.
    pub canary: VariantPoint,
    /// The stable cluster's figures (its last full window at 100 %).
    pub stable: VariantPoint,
    /// The latency quantiles the histograms' buckets could not decide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_unresolved: Vec<Unresolved>,
}

/// One priority class's admission outcomes: the filter's totals, and their
/// rates since the point before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassPoint {
    /// Totals, as the metrics store sums them over the reporting Envoys.
    pub totals: ClassCounts,
    /// Admitted at once, per second.
    pub admitted_per_s: f64,
    /// Queued, per second.
    pub queued_per_s: f64,
    /// Released from the queue, per second.
    pub released_per_s: f64,
    /// Shed, per second.
    pub shed_per_s: f64,
}

/// A cluster's SLA health at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterPoint {
    /// The score in the feed (0.2–1).
    pub score: f64,
    /// The last measured p99 (ms), if the window had enough observations.
    pub p99_ms: Option<f64>,
    /// Its p99 target (ms).
    pub target_p99_ms: Option<f64>,
}

/// Everything at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Rollouts, by canary cluster.
    pub rollouts: BTreeMap<String, RolloutPoint>,
    /// Admission outcomes, by priority class (empty until a filter reports).
    pub classes: BTreeMap<String, ClassPoint>,
    /// Requests in flight through the reporting Envoys.
    pub in_flight: u64,
    /// Requests held in their admission queues.
    pub queue_depth: u64,
    /// The concurrency limit in the feed.
    pub concurrency_limit: Option<u32>,
    /// SLA health, by cluster.
    pub clusters: BTreeMap<String, ClusterPoint>,
}

/// A rollout decision, to mark on the charts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mark {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The canary cluster.
    pub canary: String,
    /// The phase before.
    pub from: Phase,
    /// The phase after.
    pub to: Phase,
    /// The weight before (basis points).
    pub from_weight_bp: u32,
    /// The weight after.
    pub weight_bp: u32,
    /// Why, in words.
    pub reason: String,
    /// The verdict in force.
    pub verdict: Verdict,
}

impl Mark {
    fn of(decision: &Decision) -> Self {
        Self {
            at_ms: decision.at_ms,
            canary: decision.canary.clone(),
            from: decision.from,
            to: decision.to,
            from_weight_bp: decision.from_weight_bp,
            weight_bp: decision.weight_bp,
            reason: decision.reason.clone(),
            verdict: decision.evidence.verdict,
        }
    }
}

/// What the controller and the metrics store say now.
pub struct Observation<'a> {
    /// Every rollout's state.
    pub rollouts: &'a [RolloutState],
    /// The latest evidence, by canary cluster.
    pub evidence: &'a BTreeMap<String, Evidence>,
    /// The decision history, oldest first (the controller's, whole: the
    /// timeline picks out what it has not marked yet).
    pub decisions: &'a [Decision],
    /// The filter's admission, summed over the reporting Envoys.
    pub admission: &'a Admission,
    /// The concurrency limit in the feed.
    pub concurrency_limit: Option<u32>,
    /// Every cluster's SLA status.
    pub sla: &'a [SlaStatus],
}

/// What a reader asked for: the points and marks newer than `since`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct View {
    /// Time between points (ms).
    pub interval_ms: u64,
    /// Points kept at most.
    pub capacity: usize,
    /// The newest point's time: the `since` of the next request.
    pub latest_ms: Option<u64>,
    /// Points after `since`, oldest first.
    pub points: Vec<Point>,
    /// Decisions after `since`, oldest first.
    pub marks: Vec<Mark>,
}

/// The ring.
#[derive(Debug)]
pub struct Timeline {
    interval_ms: u64,
    capacity: usize,
    points: VecDeque<Point>,
    marks: VecDeque<Mark>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new(INTERVAL_MS, CAPACITY)
    }
}

impl Timeline {
    /// A timeline of at most `capacity` points, one per `interval_ms`.
    pub fn new(interval_ms: u64, capacity: usize) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            capacity: capacity.max(1),
            points: VecDeque::new(),
            marks: VecDeque::new(),
        }
    }

    /// Records what `observed` says at `now_ms`: decisions not marked yet
    /// always, a point when the interval since the last one has passed.
    /// Returns whether a point was added.
    pub fn record(&mut self, now_ms: u64, observed: &Observation<'_>) -> bool {
        if self
            .points
            .back()
            .is_some_and(|last| now_ms.saturating_add(self.interval_ms) <= last.at_ms)
        {
            // The clock went back by more than an interval: what came before
            // would draw backwards.
            self.points.clear();
            self.marks.clear();
        }
        self.mark(now_ms, observed.decisions);
        if self
            .points
            .back()
            .is_some_and(|last| now_ms < last.at_ms.saturating_add(self.interval_ms))
        {
            return false;
        }
        let point = self.point(now_ms, observed);
        self.points.push_back(point);
        while self.points.len() > self.capacity {
            self.points.pop_front();
        }
        // Marks are kept for the span the ring covers, which reaches back
        // before its first points while it fills (decisions restored after a
        // restart).
        let cutoff = now_ms.saturating_sub(self.span_ms());
        while self.marks.front().is_some_and(|m| m.at_ms <= cutoff) {
            self.marks.pop_front();
        }
        true
    }

    /// The time the ring covers when full.
    fn span_ms(&self) -> u64 {
        self.interval_ms.saturating_mul(self.capacity as u64)
    }

    /// Marks the decisions newer than the newest marked (when none is, those
    /// within the span the ring covers, such as decisions restored after a
    /// restart).
    fn mark(&mut self, now_ms: u64, decisions: &[Decision]) {
        let newest = self.marks.back().map(|m| m.at_ms);
        let cutoff = now_ms.saturating_sub(self.span_ms());
        // Decisions share a time when one evaluation moves several rollouts:
        // those at the newest marked time are compared with what is marked.
        let fresh: Vec<Mark> = decisions
            .iter()
            .filter(|d| match newest {
                Some(newest) => d.at_ms >= newest,
                None => d.at_ms > cutoff,
            })
            .map(Mark::of)
            .filter(|m| {
                newest.is_none_or(|newest| m.at_ms > newest)
                    || !self
                        .marks
                        .iter()
                        .rev()
                        .take_while(|old| Some(old.at_ms) == newest)
                        .any(|old| old == m)
            })
            .collect();
        self.marks.extend(fresh);
        while self.marks.len() > MAX_MARKS {
            self.marks.pop_front();
        }
    }

    fn point(&self, now_ms: u64, observed: &Observation<'_>) -> Point {
        let rollouts = observed
            .rollouts
            .iter()
            .map(|state| {
                let evidence = observed.evidence.get(&state.canary);
                let point = RolloutPoint {
                    stable_cluster: state.stable.clone(),
                    phase: state.phase,
                    step: state.step,
                    weight_bp: state.weight_bp,
                    mirror_bp: state.feed_mirror(),
                    verdict: evidence.map_or(Verdict::Inconclusive, |e| e.verdict),
                    canary: evidence
                        .map(|e| VariantPoint::of(&e.canary))
                        .unwrap_or_default(),
                    stable: evidence
                        .map(|e| VariantPoint::of(&e.stable))
                        .unwrap_or_default(),
                    latency_unresolved: evidence
                        .map(|e| e.latency_unresolved.clone())
                        .unwrap_or_default(),
                };
                (state.canary.clone(), point)
            })
            .collect();
        let previous = self.points.back();
        let seconds = previous
            .map(|p| now_ms.saturating_sub(p.at_ms) as f64 / 1_000.0)
            .filter(|s| *s > 0.0);
        let classes = observed
            .admission
            .classes
            .iter()
            .map(|(class, totals)| {
                let before = previous
                    .and_then(|p| p.classes.get(class))
                    .map(|c| c.totals);
                (class.clone(), class_point(*totals, before, seconds))
            })
            .collect();
        let clusters = observed
            .sla
            .iter()
            .map(|s| {
                let point = ClusterPoint {
                    score: s.published,
                    p99_ms: s.p99_ms,
                    target_p99_ms: s.target_p99_ms,
                };
                (s.cluster.clone(), point)
            })
            .collect();
        Point {
            at_ms: now_ms,
            rollouts,
            classes,
            in_flight: observed.admission.in_flight,
            queue_depth: observed.admission.queue_depth,
            concurrency_limit: observed.concurrency_limit,
            clusters,
        }
    }

    /// The points and marks newer than `since_ms` (everything for 0).
    pub fn since(&self, since_ms: u64) -> View {
        View {
            interval_ms: self.interval_ms,
            capacity: self.capacity,
            latest_ms: self.points.back().map(|p| p.at_ms),
            points: self
                .points
                .iter()
                .filter(|p| p.at_ms > since_ms)
                .cloned()
                .collect(),
            marks: self
                .marks
                .iter()
                .filter(|m| m.at_ms > since_ms)
                .cloned()
                .collect(),
        }
    }

    /// Puts saved points back (after a restart): those from the span the ring
    /// covers before `now_ms`, oldest first, at most its capacity. Only into
    /// an empty timeline: what was recorded since is not overwritten.
    pub fn restore(&mut self, now_ms: u64, mut points: Vec<Point>) {
        if !self.points.is_empty() {
            return;
        }
        let cutoff = now_ms.saturating_sub(self.span_ms());
        points.retain(|p| p.at_ms > cutoff && p.at_ms <= now_ms);
        points.sort_by_key(|p| p.at_ms);
        points.dedup_by_key(|p| p.at_ms);
        let excess = points.len().saturating_sub(self.capacity);
        self.points = points.into_iter().skip(excess).collect();
    }

    /// The points newer than `since_ms`, oldest first (what to save).
    pub fn points_after(&self, since_ms: u64) -> Vec<Point> {
        self.points
            .iter()
            .filter(|p| p.at_ms > since_ms)
            .cloned()
            .collect()
    }

    /// The time the oldest point kept could have: older ones can go.
    pub fn horizon_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.span_ms())
    }

    /// Points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether no point is held yet.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// Rates from two totals `seconds` apart. A total that went down (an Envoy
/// restarted, or stopped reporting and was forgotten) is a new start, not a
/// negative rate: that interval counts nothing.
fn class_point(
    totals: ClassCounts,
    before: Option<ClassCounts>,
    seconds: Option<f64>,
) -> ClassPoint {
    let rate = |now: u64, then: Option<u64>| match (then, seconds) {
        (Some(then), Some(seconds)) if now >= then => (now - then) as f64 / seconds,
        _ => 0.0,
    };
    ClassPoint {
        totals,
        admitted_per_s: rate(totals.admitted, before.map(|b| b.admitted)),
        queued_per_s: rate(totals.queued, before.map(|b| b.queued)),
        released_per_s: rate(totals.released, before.map(|b| b.released)),
        shed_per_s: rate(totals.shed, before.map(|b| b.shed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_points_come_back_within_the_span_and_never_over_new_ones() {
        let point = |at_ms| Point {
            at_ms,
            rollouts: BTreeMap::new(),
            classes: BTreeMap::new(),
            in_flight: 0,
            queue_depth: 0,
            concurrency_limit: None,
            clusters: BTreeMap::new(),
        };
        let mut timeline = Timeline::new(1_000, 3);
        // Too old (beyond the 3 s span), in the future, duplicated, unordered.
        let saved = vec![
            point(10_000),
            point(6_000),
            point(9_000),
            point(12_000),
            point(9_000),
        ];
        timeline.restore(11_000, saved.clone());
        let at: Vec<u64> = timeline.points_after(0).iter().map(|p| p.at_ms).collect();
        assert_eq!(at, [9_000, 10_000]);
        assert_eq!(timeline.points_after(9_000).len(), 1);
        assert_eq!(timeline.horizon_ms(11_000), 8_000);
        // A timeline that already has points keeps them.
        timeline.restore(11_000, vec![point(8_500)]);
        assert_eq!(timeline.len(), 2);
    }
    use crate::metrics_store::Admission;

    fn decision(at_ms: u64, canary: &str, weight_bp: u32) -> Decision {
        Decision {
            at_ms,
            canary: canary.to_owned(),
            from: Phase::Progressing,
            to: Phase::Progressing,
            step: 1,
            from_weight_bp: 5_000,
            weight_bp,
            reason: "held healthy".to_owned(),
            evidence: Evidence::none(10_000),
            policy: String::new(),
        }
    }

    struct World {
        rollouts: Vec<RolloutState>,
        evidence: BTreeMap<String, Evidence>,
        decisions: Vec<Decision>,
        admission: Admission,
        sla: Vec<SlaStatus>,
    }

    impl World {
        fn new() -> Self {
            let mut evidence = Evidence::none(10_000);
            evidence.canary.requests = 100;
            evidence.canary.errors = 5;
            evidence.canary.error_rate = 0.05;
            evidence.canary.p99_ms = Some(42.0);
            evidence.verdict = Verdict::Healthy;
            Self {
                rollouts: vec![RolloutState::for_tests(
                    "app-canary",
                    5_000,
                    Phase::Progressing,
                )],
                evidence: BTreeMap::from([("app-canary".to_owned(), evidence)]),
                decisions: Vec::new(),
                admission: Admission::default(),
                sla: vec![SlaStatus {
                    cluster: "app".to_owned(),
                    target_p99_ms: Some(250.0),
                    p99_ms: Some(100.0),
                    raw: Some(1.0),
                    smoothed: 1.0,
                    published: 1.0,
                }],
            }
        }

        fn observed(&self) -> Observation<'_> {
            Observation {
                rollouts: &self.rollouts,
                evidence: &self.evidence,
                decisions: &self.decisions,
                admission: &self.admission,
                concurrency_limit: Some(100),
                sla: &self.sla,
            }
        }
    }

    #[test]
    fn one_point_per_interval_and_every_decision_marked() {
        let mut world = World::new();
        let mut timeline = Timeline::new(1_000, 10);
        assert!(timeline.record(10_000, &world.observed()));
        assert!(!timeline.record(10_250, &world.observed()));
        world.decisions.push(decision(10_500, "app-canary", 10_000));
        world.rollouts[0].weight_bp = 10_000;
        assert!(!timeline.record(10_500, &world.observed()));
        assert!(timeline.record(11_000, &world.observed()));
        let view = timeline.since(0);
        assert_eq!(view.points.len(), 2);
        assert_eq!(view.latest_ms, Some(11_000));
        assert_eq!(view.marks.len(), 1, "marked once: {:?}", view.marks);
        assert_eq!(view.marks[0].at_ms, 10_500);
        let first = &view.points[0].rollouts["app-canary"];
        assert_eq!((first.weight_bp, first.verdict), (5_000, Verdict::Healthy));
        assert_eq!(first.canary.error_rate, 0.05);
        assert_eq!(first.canary.p99_ms, Some(42.0));
        assert_eq!(view.points[1].rollouts["app-canary"].weight_bp, 10_000);
        assert_eq!(view.points[0].clusters["app"].score, 1.0);
        assert_eq!(view.points[0].concurrency_limit, Some(100));
    }

    #[test]
    fn readers_get_what_is_newer_than_they_have() {
        let mut world = World::new();
        let mut timeline = Timeline::new(1_000, 10);
        timeline.record(1_000, &world.observed());
        world.decisions.push(decision(1_500, "app-canary", 7_500));
        timeline.record(2_000, &world.observed());
        let view = timeline.since(1_000);
        assert_eq!(
            view.points.iter().map(|p| p.at_ms).collect::<Vec<_>>(),
            [2_000]
        );
        assert_eq!(view.marks.len(), 1);
        let none = timeline.since(2_000);
        assert!(none.points.is_empty() && none.marks.is_empty());
        assert_eq!(none.latest_ms, Some(2_000));
    }

    #[test]
    fn the_ring_is_bounded_and_old_marks_go_with_their_points() {
        let mut world = World::new();
        let mut timeline = Timeline::new(1_000, 3);
        for second in 1..=10u64 {
            world
                .decisions
                .push(decision(second * 1_000, "app-canary", 5_000));
            timeline.record(second * 1_000, &world.observed());
        }
        assert_eq!(timeline.len(), 3);
        let view = timeline.since(0);
        assert_eq!(view.points[0].at_ms, 8_000);
        assert!(
            view.marks.iter().all(|m| m.at_ms >= 8_000),
            "{:?}",
            view.marks
        );
        assert_eq!(view.marks.len(), 3);
    }

    #[test]
    fn decisions_at_the_same_moment_are_each_marked_once() {
        let mut world = World::new();
        let mut timeline = Timeline::new(1_000, 10);
        world.decisions.push(decision(1_000, "a-canary", 7_500));
        timeline.record(1_000, &world.observed());
        world.decisions.push(decision(1_000, "b-canary", 7_500));
        timeline.record(1_250, &world.observed());
        timeline.record(2_000, &world.observed());
        let view = timeline.since(0);
        let marked: Vec<&str> = view.marks.iter().map(|m| m.canary.as_str()).collect();
        assert_eq!(marked, ["a-canary", "b-canary"]);
    }

    #[test]
    fn restored_decisions_within_the_span_are_marked_at_the_start() {
        let mut world = World::new();
        world.decisions = vec![
            decision(1_000, "app-canary", 5_000),
            decision(95_000, "app-canary", 7_500),
        ];
        let mut timeline = Timeline::new(1_000, 10);
        timeline.record(100_000, &world.observed());
        let marks = timeline.since(0).marks;
        assert_eq!(marks.iter().map(|m| m.at_ms).collect::<Vec<_>>(), [95_000]);
    }

    #[test]
    fn class_rates_come_from_the_totals_and_a_reset_counts_nothing() {
        let mut world = World::new();
        let mut timeline = Timeline::new(1_000, 10);
        let counts = |admitted, shed| ClassCounts {
            admitted,
            queued: 0,
            released: 0,
            shed,
        };
        world
            .admission
            .classes
            .insert("alarm".to_owned(), counts(100, 0));
        timeline.record(1_000, &world.observed());
        world
            .admission
            .classes
            .insert("alarm".to_owned(), counts(300, 10));
        world.admission.in_flight = 7;
        timeline.record(3_000, &world.observed());
        world
            .admission
            .classes
            .insert("alarm".to_owned(), counts(50, 0));
        timeline.record(4_000, &world.observed());
        let view = timeline.since(0);
        let alarm = |i: usize| view.points[i].classes["alarm"];
        assert_eq!(
            alarm(0).admitted_per_s,
            0.0,
            "no rate without a point before"
        );
        assert_eq!((alarm(1).admitted_per_s, alarm(1).shed_per_s), (100.0, 5.0));
        assert_eq!(alarm(1).totals.admitted, 300);
        assert_eq!(view.points[1].in_flight, 7);
        assert_eq!(alarm(2).admitted_per_s, 0.0);
    }

    #[test]
    fn a_clock_that_goes_back_starts_afresh() {
        let world = World::new();
        let mut timeline = Timeline::new(1_000, 10);
        timeline.record(50_000, &world.observed());
        timeline.record(51_000, &world.observed());
        assert!(timeline.record(10_000, &world.observed()));
        let view = timeline.since(0);
        assert_eq!(
            view.points.iter().map(|p| p.at_ms).collect::<Vec<_>>(),
            [10_000]
        );
    }
}
