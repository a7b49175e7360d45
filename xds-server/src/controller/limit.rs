//! The adaptive concurrency limit: how many requests one Envoy lets in at
//! once, moved by the fleet's latency against the services' SLA targets.
//!
//! Enabled by the policy's `admission.adaptive_limit`; otherwise the limit is
//! the policy's `admission.concurrency_limit`, fixed.
//!
//! Every [`ADJUST_EVERY_MS`] (Envoy's stats flush interval, so each step sees
//! new data):
//! - **pressure**: for each cluster with a p99 target and at least
//!   [`MIN_OBSERVATIONS`] latencies in the last [`LIMIT_WINDOW_MS`], the
//!   ratio `p99 / target`; the pressure is their mean weighted by requests
//!   (a small slow cluster is routing's business, through its SLA score, and
//!   does not throttle the whole fleet). No cluster measured → no pressure.
//! - **smoothing**: `ratio += 0.5 · (pressure − ratio)`; without data the
//!   ratio relaxes to 0 at the same pace.
//! - **decrease** (ratio above `1 + TOLERANCE`): multiplicative, by the ratio
//!   itself and at least 10 %, at most halving: `limit · clamp(1/ratio, ½, 0.9)`,
//!   never below `min`.
//! - **increase** (ratio at or below 1): additive, by 5 % of the ceiling, so
//!   the limit climbs from its floor to the ceiling in 20 s at most.
//! - between 1 and `1 + TOLERANCE`: hold (a dead band, so it does not hunt).
//! - **hysteresis**: the published limit changes only when the computed one
//!   is 5 % (at least 1) away from it or reaches a bound.
//!
//! With `adaptive_limit.by: throughput` the limit follows the request rate
//! instead, the seed's `max(min, ceiling × baseline_rps / current_rps)`:
//! - **current**: the requests of every policy cluster in the last
//!   [`LIMIT_WINDOW_MS`], per second;
//! - **baseline**: an EWMA of the current rate with a time constant of
//!   [`BASELINE_MS`], seeded by the first reading — the fleet's usual rate;
//! - the limit is `ceiling × baseline / current`, between `min` and the
//!   ceiling: twice the usual traffic, half the limit. Without traffic it is
//!   the ceiling. The same hysteresis applies.
//!
//! A latency-based limit cannot tell a loaded backend from a slow one: a
//! cluster slow at any load holds the limit at `min`. That is the intended
//! trade for a device fleet — lower classes queue and shed first, alarms keep
//! their share — and `min` bounds it.

use serde::{Deserialize, Serialize};
use weir_policy::Policy;
use weir_policy::model::LimitSignal;

use crate::metrics_store::MetricsStore;

/// How often the limit moves.
pub(crate) const ADJUST_EVERY_MS: u64 = 1_000;
/// The window each step measures (a few stats flushes).
pub(crate) const LIMIT_WINDOW_MS: u64 = 3_000;
/// Latency observations a cluster needs in the window to count.
pub(crate) const MIN_OBSERVATIONS: u64 = 20;
/// EWMA weight of a new pressure reading.
pub(crate) const ALPHA: f64 = 0.5;
/// Pressure above 1 that is tolerated before the limit is cut.
pub(crate) const TOLERANCE: f64 = 0.1;
/// The additive increase, as a share of the ceiling.
pub(crate) const INCREASE: f64 = 0.05;
/// The throughput baseline's time constant: the fleet's usual rate over
/// about a minute.
pub(crate) const BASELINE_MS: u64 = 60_000;
/// Below this many requests a second, the throughput limit is the ceiling.
const IDLE_RPS: f64 = 1.0;
/// The published limit's dead band, as a share of it.
pub(crate) const HYSTERESIS: f64 = 0.05;

/// The limit's state and what it came from (for the admin API; persisted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimitStatus {
    /// Whether the limit adapts (`admission.adaptive_limit` is set).
    pub adaptive: bool,
    /// The floor (`adaptive_limit.min`); the ceiling when fixed.
    pub min: u32,
    /// The ceiling (`admission.concurrency_limit`).
    pub max: u32,
    /// The last pressure measured (`p99 / target`, weighted), if any cluster had data.
    pub pressure: Option<f64>,
    /// The smoothed pressure.
    pub ratio: f64,
    /// The computed limit, before hysteresis.
    pub computed: f64,
    /// The limit in the feed.
    pub published: u32,
    /// When it was last evaluated (ms since the epoch).
    #[serde(default)]
    pub adjusted_at_ms: u64,
    /// What moves it (`adaptive_limit.by`).
    #[serde(default)]
    pub by: LimitSignal,
    /// With `by: throughput`: the requests a second measured last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_rps: Option<f64>,
    /// With `by: throughput`: the usual rate (its EWMA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_rps: Option<f64>,
}

/// The adaptive (or fixed) concurrency limit of one policy.
#[derive(Debug)]
pub(crate) struct ConcurrencyLimit {
    status: LimitStatus,
    /// (cluster, p99 target in ms) of the clusters whose latency counts.
    targets: Vec<(String, f64)>,
    /// Every cluster of the policy, whose requests the throughput counts.
    clusters: Vec<String>,
    /// When the throughput limit first saw traffic (not persisted).
    traffic_since_ms: Option<u64>,
}

impl ConcurrencyLimit {
    pub(crate) fn new(policy: &Policy) -> Self {
        let max = policy.admission.concurrency_limit.max(1);
        let mut limit = Self {
            status: LimitStatus {
                adaptive: false,
                min: max,
                max,
                pressure: None,
                ratio: 0.0,
                computed: f64::from(max),
                published: max,
                adjusted_at_ms: 0,
                by: LimitSignal::Latency,
                current_rps: None,
                baseline_rps: None,
            },
            targets: Vec::new(),
            clusters: Vec::new(),
            traffic_since_ms: None,
        };
        limit.set_policy(policy);
        limit
    }

    /// Follows the policy's bounds; an adaptive limit keeps its value, clamped
    /// into the new bounds.
    pub(crate) fn set_policy(&mut self, policy: &Policy) {
        let max = policy.admission.concurrency_limit.max(1);
        let adaptive = policy.admission.adaptive_limit.as_ref();
        let min = adaptive.map_or(max, |a| a.min.clamp(1, max));
        let status = &mut self.status;
        let was_adaptive = status.adaptive;
        let by = adaptive.map_or(LimitSignal::Latency, |a| a.by);
        let was_by = std::mem::replace(&mut status.by, by);
        status.adaptive = adaptive.is_some();
        status.min = min;
        status.max = max;
        if status.adaptive && was_adaptive && by == was_by {
            status.computed = status.computed.clamp(f64::from(min), f64::from(max));
            status.published = status.published.clamp(min, max);
        } else {
            // Newly adaptive: start at the ceiling, as a fixed limit would be.
            status.computed = f64::from(max);
            status.published = max;
            status.ratio = 0.0;
            status.pressure = None;
            status.current_rps = None;
            status.baseline_rps = None;
        }
        self.targets = super::sla::targets(policy).into_iter().collect();
        self.clusters = policy.clusters.iter().map(|c| c.name.clone()).collect();
    }

    /// Puts a persisted state back (after a restart), within the current bounds.
    pub(crate) fn restore(&mut self, saved: &LimitStatus) {
        let status = &mut self.status;
        if !(status.adaptive && saved.adaptive && status.by == saved.by) {
            return;
        }
        let finite = |v: Option<f64>| v.filter(|v| v.is_finite() && *v >= 0.0);
        status.current_rps = finite(saved.current_rps);
        status.baseline_rps = finite(saved.baseline_rps);
        let (min, max) = (status.min, status.max);
        status.ratio = if saved.ratio.is_finite() {
            saved.ratio.max(0.0)
        } else {
            0.0
        };
        status.pressure = saved.pressure.filter(|p| p.is_finite());
        status.computed = if saved.computed.is_finite() {
            saved.computed.clamp(f64::from(min), f64::from(max))
        } else {
            f64::from(max)
        };
        status.published = saved.published.clamp(min, max);
        status.adjusted_at_ms = saved.adjusted_at_ms;
    }

    /// The weighted `p99 / target` over the clusters with enough data.
    fn pressure(&self, store: &MetricsStore, now_ms: u64) -> Option<f64> {
        let (mut weighted, mut requests) = (0.0, 0.0);
        for (cluster, target) in &self.targets {
            let window = store.window(cluster, now_ms, LIMIT_WINDOW_MS);
            let observed = window.latency.count();
            if observed < MIN_OBSERVATIONS {
                continue;
            }
            let Some(p99) = window.latency.quantile(0.99).filter(|p| p.is_finite()) else {
                continue;
            };
            let weight = window.requests.max(observed) as f64;
            weighted += weight * p99 / target;
            requests += weight;
        }
        (requests > 0.0).then(|| weighted / requests)
    }

    /// One evaluation; returns whether the published limit changed.
    pub(crate) fn update(&mut self, store: &MetricsStore, now_ms: u64) -> bool {
        if !self.status.adaptive
            || now_ms < self.status.adjusted_at_ms.saturating_add(ADJUST_EVERY_MS)
        {
            return false;
        }
        if self.status.by == LimitSignal::Throughput {
            let current = self.throughput(store, now_ms);
            self.status.adjusted_at_ms = now_ms;
            return self.follow_throughput(current, now_ms);
        }
        let pressure = self.pressure(store, now_ms);
        let status = &mut self.status;
        status.adjusted_at_ms = now_ms;
        status.pressure = pressure;
        status.ratio += ALPHA * (pressure.unwrap_or(0.0) - status.ratio);
        let (min, max) = (f64::from(status.min), f64::from(status.max));
        if status.ratio > 1.0 + TOLERANCE {
            let factor = (1.0 / status.ratio).clamp(0.5, 0.9);
            status.computed = (status.computed * factor).max(min);
        } else if status.ratio <= 1.0 {
            status.computed = (status.computed + (max * INCREASE).max(1.0)).min(max);
        }
        self.publish()
    }

    /// Requests a second over every policy cluster in the last window.
    fn throughput(&self, store: &MetricsStore, now_ms: u64) -> f64 {
        let requests: u64 = self
            .clusters
            .iter()
            .map(|c| store.window(c, now_ms, LIMIT_WINDOW_MS).requests)
            .fold(0, u64::saturating_add);
        requests as f64 * 1000.0 / LIMIT_WINDOW_MS as f64
    }

    /// The seed's throughput limit from the current rate; whether the
    /// published limit changed.
    fn follow_throughput(&mut self, current: f64, now_ms: u64) -> bool {
        let status = &mut self.status;
        status.current_rps = Some(current);
        let (min, max) = (f64::from(status.min), f64::from(status.max));
        let alpha = ADJUST_EVERY_MS as f64 / BASELINE_MS as f64;
        // The first readings cover less than a window: the baseline is
        // seeded once traffic has been seen for a whole one.
        let first = *self.traffic_since_ms.get_or_insert(now_ms);
        let warm = now_ms.saturating_sub(first) >= LIMIT_WINDOW_MS;
        status.baseline_rps = match status.baseline_rps {
            Some(b) => Some(b + alpha * (current - b)),
            None if warm && current >= IDLE_RPS => Some(current),
            None => None,
        };
        status.computed = match status.baseline_rps {
            Some(baseline) if current >= IDLE_RPS => (max * baseline / current).clamp(min, max),
            _ => max,
        };
        if current < IDLE_RPS && status.baseline_rps.is_none() {
            self.traffic_since_ms = None;
        }
        self.publish()
    }

    /// Moves the published limit to the computed one, past the hysteresis.
    fn publish(&mut self) -> bool {
        let status = &mut self.status;
        let candidate = status.computed.round() as u32;
        let band = (f64::from(status.published) * HYSTERESIS).max(1.0);
        let at_bound =
            (candidate == status.min || candidate == status.max) && candidate != status.published;
        if f64::from(candidate.abs_diff(status.published)) >= band || at_bound {
            status.published = candidate.clamp(status.min, status.max);
            return true;
        }
        false
    }

    /// The limit to serve.
    pub(crate) fn published(&self) -> u32 {
        self.status.published.max(1)
    }

    pub(crate) fn status(&self) -> &LimitStatus {
        &self.status
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use weir_policy::model::{AdaptiveLimit, LimitSignal};

    use super::*;
    use crate::metrics_store::{Histogram, Sample};

    const START_MS: u64 = 1_700_000_000_000;
    const CLUSTER: &str = "ingest-eu";

    fn policy(adaptive: Option<u32>) -> Policy {
        let mut policy = crate::policy_source::parse(
            Path::new("examples/policies/iot-fleet.yaml"),
            include_str!("../../../examples/policies/iot-fleet.yaml"),
        )
        .unwrap();
        policy.admission.adaptive_limit = adaptive.map(|min| AdaptiveLimit {
            min,
            by: LimitSignal::Latency,
        });
        policy
    }

    /// One second of `CLUSTER` traffic: 200 requests, all at `latency_ms`.
    fn second(store: &mut MetricsStore, at_ms: u64, latency_ms: f64) {
        let bounds = vec![10.0, 50.0, 100.0, 250.0, 275.0, 500.0, 1000.0, 5000.0];
        let mut latency = Histogram::with_bounds(bounds.clone());
        let slot = bounds.iter().position(|&b| latency_ms <= b).unwrap();
        latency.counts[slot] = 200;
        store.add(
            CLUSTER,
            Sample {
                at_ms,
                requests: 200,
                errors: 0,
                latency: Some(latency),
            },
        );
    }

    /// Runs `seconds` of traffic at `latency_ms` (none when `None`), four
    /// evaluations a second; the published limit after each second.
    fn run(
        limit: &mut ConcurrencyLimit,
        store: &mut MetricsStore,
        now: &mut u64,
        seconds: u64,
        latency_ms: Option<f64>,
    ) -> Vec<u32> {
        let mut published = Vec::new();
        for _ in 0..seconds {
            if let Some(ms) = latency_ms {
                second(store, *now, ms);
            }
            for _ in 0..4 {
                *now += 250;
                limit.update(store, *now);
            }
            published.push(limit.published());
        }
        published
    }

    #[test]
    fn without_adaptive_limit_the_policy_limit_is_fixed() {
        let mut limit = ConcurrencyLimit::new(&policy(None));
        let (mut store, mut now) = (MetricsStore::new(60_000), START_MS);
        let seen = run(&mut limit, &mut store, &mut now, 10, Some(900.0));
        assert!(seen.iter().all(|&l| l == 200), "{seen:?}");
        assert!(!limit.status().adaptive);
    }

    #[test]
    fn slow_clusters_cut_the_limit_to_its_floor_and_it_recovers_to_the_ceiling() {
        let mut limit = ConcurrencyLimit::new(&policy(Some(20)));
        let (mut store, mut now) = (MetricsStore::new(60_000), START_MS);
        assert_eq!(limit.published(), 200);

        // p99 at 1 s against a 250 ms target: cut hard, but never below 20.
        let slow = run(&mut limit, &mut store, &mut now, 15, Some(900.0));
        assert!(slow.windows(2).all(|w| w[1] <= w[0]), "{slow:?}");
        assert!(slow[3] < 100, "cut by at least half within 4 s: {slow:?}");
        assert_eq!(*slow.last().unwrap(), 20, "{slow:?}");
        let pressure = limit.status().pressure.unwrap();
        assert!(pressure > 3.0, "{pressure}");

        // Back under the target: additive increase to the ceiling within ~20 s.
        let healthy = run(&mut limit, &mut store, &mut now, 30, Some(40.0));
        assert!(healthy.windows(2).all(|w| w[1] >= w[0]), "{healthy:?}");
        let step = healthy[6] - healthy[5];
        assert!(
            (8..=12).contains(&step),
            "5 % of the ceiling a second: {healthy:?}"
        );
        assert_eq!(*healthy.last().unwrap(), 200, "{healthy:?}");
    }

    #[test]
    fn no_data_means_no_pressure_and_the_dead_band_holds() {
        let mut limit = ConcurrencyLimit::new(&policy(Some(20)));
        let (mut store, mut now) = (MetricsStore::new(60_000), START_MS);
        run(&mut limit, &mut store, &mut now, 6, Some(900.0));
        let cut = limit.published();
        assert!(cut < 100, "{cut}");

        // Just above the target (p99 in the 250–275 ms bucket, interpolated
        // to ≈ 275 ms: ratio ≈ 1.1), inside the dead band: it holds.
        let mut held = ConcurrencyLimit::new(&policy(Some(20)));
        let (mut store2, mut now2) = (MetricsStore::new(60_000), START_MS);
        let seen = run(&mut held, &mut store2, &mut now2, 20, Some(260.0));
        let ratio = held.status().ratio;
        assert!(ratio > 1.0 && ratio <= 1.0 + TOLERANCE, "{ratio}");
        assert!(seen.iter().all(|&l| l == 200), "{seen:?}");

        // Silence: the pressure relaxes and the limit climbs back.
        let quiet = run(&mut limit, &mut store, &mut now, 40, None);
        assert_eq!(limit.status().pressure, None);
        assert_eq!(*quiet.last().unwrap(), 200, "{quiet:?}");
    }

    #[test]
    fn a_restored_limit_is_kept_within_the_new_bounds() {
        let mut limit = ConcurrencyLimit::new(&policy(Some(20)));
        let (mut store, mut now) = (MetricsStore::new(60_000), START_MS);
        run(&mut limit, &mut store, &mut now, 5, Some(900.0));
        let saved = limit.status().clone();
        assert!(saved.published < 200);

        let mut restarted = ConcurrencyLimit::new(&policy(Some(20)));
        restarted.restore(&saved);
        assert_eq!(restarted.status(), &saved);

        // A policy that raised the floor above the saved value clamps it.
        let mut raised = ConcurrencyLimit::new(&policy(Some(150)));
        raised.restore(&saved);
        assert_eq!(raised.published(), 150);

        // A fixed limit ignores what an adaptive one saved.
        let mut fixed = ConcurrencyLimit::new(&policy(None));
        fixed.restore(&saved);
        assert_eq!(fixed.published(), 200);
    }

    #[test]
    fn the_throughput_limit_falls_with_a_surge_over_the_baseline() {
        let mut policy = policy(None);
        policy.admission.adaptive_limit = Some(AdaptiveLimit {
            min: 10,
            by: LimitSignal::Throughput,
        });
        let max = policy.admission.concurrency_limit;
        let mut limit = ConcurrencyLimit::new(&policy);
        let mut store = MetricsStore::new(60_000);
        let mut now = START_MS;
        let at = |limit: &mut ConcurrencyLimit,
                  store: &mut MetricsStore,
                  now: &mut u64,
                  seconds: u64,
                  rps: u64| {
            for _ in 0..seconds * 4 {
                *now += 250;
                if now.is_multiple_of(1_000) {
                    store.add(
                        CLUSTER,
                        Sample {
                            at_ms: *now,
                            requests: rps,
                            errors: 0,
                            latency: None,
                        },
                    );
                }
                store.prune(*now);
                limit.update(store, *now);
            }
            limit.published()
        };
        // The usual rate: the baseline, and the ceiling.
        assert_eq!(at(&mut limit, &mut store, &mut now, 20, 100), max);
        // Four times the usual traffic: about a quarter of the ceiling,
        // rising slowly as the baseline follows the new rate.
        let surged = at(&mut limit, &mut store, &mut now, 5, 400);
        let expected = f64::from(max) * limit.status().baseline_rps.unwrap() / 400.0;
        assert!(
            (f64::from(surged) - expected).abs() <= expected * 0.06 + 1.0,
            "{surged} vs {expected}"
        );
        assert!(surged < max / 3, "{surged}");
        // Never below the floor, however large the surge.
        assert!(at(&mut limit, &mut store, &mut now, 5, 1_000_000) >= 10);
        // Without traffic: the ceiling.
        assert_eq!(at(&mut limit, &mut store, &mut now, 10, 0), max);
    }
}
