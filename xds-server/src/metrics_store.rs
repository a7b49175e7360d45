//! What the controller knows of each cluster's traffic: short sliding windows
//! of request counts, errors and latency histograms, fed by the OTLP receivers
//! (Envoy's stats sink, applications) and read by the controller.
//!
//! Time is passed in (milliseconds since the epoch), never read here, so the
//! controller can be tested with a simulated clock.
//!
//! It also keeps what the filter reports of its admission decisions, per
//! reporting source: [`MetricsStore::admission`].

use std::collections::{BTreeMap, HashMap, VecDeque};

use weir_policy::metrics::Outcome;

/// A latency histogram with explicit bucket bounds, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Upper bounds of the buckets, increasing; the last bucket is unbounded.
    pub bounds: Vec<f64>,
    /// Counts per bucket: `bounds.len() + 1` of them.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// An empty histogram with these bucket bounds.
    pub fn with_bounds(bounds: Vec<f64>) -> Self {
        let counts = vec![0; bounds.len() + 1];
        Self { bounds, counts }
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other` in. Histograms with other bounds are re-bucketed onto
    /// these (each of `other`'s buckets counted at its upper bound), so that
    /// sources with different layouts can still be compared.
    pub fn merge(&mut self, other: &Histogram) {
        if self.bounds.is_empty() && self.counts.iter().all(|&c| c == 0) {
            *self = other.clone();
            return;
        }
        if self.bounds == other.bounds {
            for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
                *mine += theirs;
            }
            return;
        }
        for (i, &count) in other.counts.iter().enumerate() {
            let at = other.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            let slot = self
                .bounds
                .iter()
                .position(|&b| at <= b)
                .unwrap_or(self.bounds.len());
            if let Some(c) = self.counts.get_mut(slot) {
                *c += count;
            }
        }
    }

    /// The `q` quantile (0–1), interpolated linearly inside its bucket;
    /// `None` when empty. The unbounded last bucket reports its lower bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0.0;
        for (i, &count) in self.counts.iter().enumerate() {
            let next = seen + count as f64;
            if next >= rank && count > 0 {
                let low = if i == 0 {
                    0.0
                } else {
                    self.bounds.get(i - 1).copied().unwrap_or(0.0)
                };
                let Some(&high) = self.bounds.get(i) else {
                    return Some(low);
                };
                let within = (rank - seen) / count as f64;
                return Some(low + (high - low) * within);
            }
            seen = next;
        }
        self.bounds.last().copied()
    }
}

/// What happened on one cluster during one reporting interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// When it was received (ms since the epoch).
    pub at_ms: u64,
    /// Requests completed.
    pub requests: u64,
    /// Of which failed (5xx).
    pub errors: u64,
    /// Their latencies, if the source reported them.
    pub latency: Option<Histogram>,
}

/// A window's totals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowStats {
    /// Requests completed in the window.
    pub requests: u64,
    /// Of which failed (5xx).
    pub errors: u64,
    /// Their latencies (empty if no source reported any).
    pub latency: Histogram,
}

impl WindowStats {
    /// The error proportion, if there were requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

/// The filter's admission outcomes for one priority class: totals since the
/// source started (cumulative counters), or since weir first heard from it
/// (delta counters, added up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClassCounts {
    /// Forwarded at once.
    pub admitted: u64,
    /// Held in the queue.
    pub queued: u64,
    /// Released from the queue and forwarded.
    pub released: u64,
    /// Answered 503.
    pub shed: u64,
}

impl ClassCounts {
    fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Admitted => self.admitted,
            Outcome::Queued => self.queued,
            Outcome::Released => self.released,
            Outcome::Shed => self.shed,
        }
    }

    fn get_mut(&mut self, outcome: Outcome) -> &mut u64 {
        match outcome {
            Outcome::Admitted => &mut self.admitted,
            Outcome::Queued => &mut self.queued,
            Outcome::Released => &mut self.released,
            Outcome::Shed => &mut self.shed,
        }
    }

    fn add(&mut self, other: &ClassCounts) {
        for outcome in Outcome::ALL {
            let theirs = other.get(outcome);
            let mine = self.get_mut(outcome);
            *mine = mine.saturating_add(theirs);
        }
    }
}

/// The filter's admission, summed over every source that reported it within
/// the retention.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Admission {
    /// Outcomes per priority class.
    pub classes: BTreeMap<String, ClassCounts>,
    /// Requests admitted and not yet finished (the sources' last values).
    pub in_flight: u64,
    /// Requests held in the admission queues (the sources' last values).
    pub queue_depth: u64,
    /// Sources summed.
    pub sources: usize,
}

/// One admission data point of one source, as the OTLP receivers hand it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdmissionPoint {
    /// A class's outcome counter: a delta to add, or the source's
    /// cumulative total, which replaces the one before.
    Count {
        /// The priority class.
        class: String,
        /// The outcome counted.
        outcome: Outcome,
        /// The delta or the total.
        value: u64,
        /// Whether `value` is a total.
        cumulative: bool,
    },
    /// The gauge of requests in flight.
    InFlight(u64),
    /// The gauge of requests queued.
    QueueDepth(u64),
}

/// What one source last said about admission.
#[derive(Debug, Default)]
struct SourceAdmission {
    seen_ms: u64,
    classes: BTreeMap<String, ClassCounts>,
    in_flight: u64,
    queue_depth: u64,
}

/// Sources of admission metrics kept at most, and classes per source: a
/// misbehaving source cannot grow the store without bound.
const MAX_ADMISSION_SOURCES: usize = 4_096;
const MAX_CLASSES_PER_SOURCE: usize = 64;

/// Samples per cluster, kept for `retention_ms`.
#[derive(Debug)]
pub struct MetricsStore {
    retention_ms: u64,
    clusters: HashMap<String, VecDeque<Sample>>,
    admission: HashMap<String, SourceAdmission>,
}

/// Samples kept per cluster at most, whatever the retention: memory stays
/// bounded even if a source reports far more often than expected.
const MAX_SAMPLES_PER_CLUSTER: usize = 4_096;

impl MetricsStore {
    /// A store keeping samples for `retention_ms`.
    pub fn new(retention_ms: u64) -> Self {
        Self {
            retention_ms,
            clusters: HashMap::new(),
            admission: HashMap::new(),
        }
    }

    /// Records a sample for `cluster`.
    pub fn add(&mut self, cluster: &str, sample: Sample) {
        let samples = self.clusters.entry(cluster.to_owned()).or_default();
        samples.push_back(sample);
        while samples.len() > MAX_SAMPLES_PER_CLUSTER {
            samples.pop_front();
        }
    }

    /// Totals of `cluster`'s samples received in `(now_ms − span_ms, now_ms]`.
    pub fn window(&self, cluster: &str, now_ms: u64, span_ms: u64) -> WindowStats {
        let since = now_ms.saturating_sub(span_ms);
        let mut stats = WindowStats::default();
        for sample in self.clusters.get(cluster).into_iter().flatten() {
            if sample.at_ms > since && sample.at_ms <= now_ms {
                stats.requests += sample.requests;
                stats.errors += sample.errors;
                if let Some(latency) = &sample.latency {
                    stats.latency.merge(latency);
                }
            }
        }
        stats
    }

    /// Forgets samples older than the retention.
    pub fn prune(&mut self, now_ms: u64) {
        let keep_after = now_ms.saturating_sub(self.retention_ms);
        for samples in self.clusters.values_mut() {
            while samples.front().is_some_and(|s| s.at_ms <= keep_after) {
                samples.pop_front();
            }
        }
        self.clusters.retain(|_, samples| !samples.is_empty());
        self.admission
            .retain(|_, source| source.seen_ms > keep_after);
    }

    /// Records admission data points `source` (a resource's identity) sent
    /// at `at_ms`.
    pub fn add_admission(&mut self, source: &str, at_ms: u64, points: &[AdmissionPoint]) {
        if points.is_empty() {
            return;
        }
        if !self.admission.contains_key(source) {
            if self.admission.len() >= MAX_ADMISSION_SOURCES {
                return;
            }
            self.admission
                .insert(source.to_owned(), SourceAdmission::default());
        }
        let Some(mine) = self.admission.get_mut(source) else {
            return;
        };
        mine.seen_ms = mine.seen_ms.max(at_ms);
        for point in points {
            match point {
                AdmissionPoint::Count {
                    class,
                    outcome,
                    value,
                    cumulative,
                } => {
                    if !mine.classes.contains_key(class.as_str()) {
                        if mine.classes.len() >= MAX_CLASSES_PER_SOURCE {
                            continue;
                        }
                        mine.classes.insert(class.clone(), ClassCounts::default());
                    }
                    let Some(counts) = mine.classes.get_mut(class.as_str()) else {
                        continue;
                    };
                    let slot = counts.get_mut(*outcome);
                    *slot = if *cumulative {
                        *value
                    } else {
                        slot.saturating_add(*value)
                    };
                }
                AdmissionPoint::InFlight(v) => mine.in_flight = *v,
                AdmissionPoint::QueueDepth(v) => mine.queue_depth = *v,
            }
        }
    }

    /// The filter's admission, summed over every source that reported it
    /// within the retention (until [`Self::prune`] forgets the others).
    pub fn admission(&self) -> Admission {
        let mut total = Admission {
            sources: self.admission.len(),
            ..Admission::default()
        };
        for source in self.admission.values() {
            for (class, counts) in &source.classes {
                match total.classes.get_mut(class.as_str()) {
                    Some(sum) => sum.add(counts),
                    None => {
                        total.classes.insert(class.clone(), *counts);
                    }
                }
            }
            total.in_flight = total.in_flight.saturating_add(source.in_flight);
            total.queue_depth = total.queue_depth.saturating_add(source.queue_depth);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut h = Histogram::with_bounds(vec![10.0, 20.0, 50.0]);
        h.counts = vec![50, 40, 10, 0];
        assert_eq!(h.quantile(0.5), Some(10.0));
        let p90 = h.quantile(0.9).unwrap();
        assert!((p90 - 20.0).abs() < 1e-9, "{p90}");
        let p95 = h.quantile(0.95).unwrap();
        assert!((p95 - 35.0).abs() < 1e-9, "{p95}");
        assert_eq!(Histogram::with_bounds(vec![1.0]).quantile(0.5), None);
    }

    #[test]
    fn windows_sum_the_samples_inside_them() {
        let mut store = MetricsStore::new(10_000);
        for (at, requests, errors) in [(1_000, 10, 1), (2_000, 20, 0), (3_000, 30, 3)] {
            store.add(
                "c",
                Sample {
                    at_ms: at,
                    requests,
                    errors,
                    latency: None,
                },
            );
        }
        let w = store.window("c", 3_000, 1_500);
        assert_eq!((w.requests, w.errors), (50, 3));
        assert_eq!(store.window("other", 3_000, 10_000), WindowStats::default());
        store.prune(12_500);
        assert_eq!(store.window("c", 3_000, 10_000).requests, 30);
    }

    #[test]
    fn histograms_with_other_bounds_are_rebucketed() {
        let mut a = Histogram::with_bounds(vec![10.0, 100.0]);
        a.counts = vec![1, 1, 0];
        let mut b = Histogram::with_bounds(vec![5.0, 50.0, 500.0]);
        b.counts = vec![1, 1, 1, 1];
        a.merge(&b);
        assert_eq!(a.counts, vec![2, 2, 2]);
        assert_eq!(a.count(), 6);
    }

    #[test]
    fn admission_is_summed_over_sources_and_forgotten_after_the_retention() {
        let count = |class: &str, outcome, value, cumulative| AdmissionPoint::Count {
            class: class.to_owned(),
            outcome,
            value,
            cumulative,
        };
        let mut store = MetricsStore::new(10_000);
        assert_eq!(store.admission(), Admission::default());
        // A source sending deltas: they add up.
        for at in [1_000, 2_000] {
            store.add_admission(
                "envoy-a",
                at,
                &[
                    count("alarm", Outcome::Admitted, 5, false),
                    count("heartbeat", Outcome::Shed, 2, false),
                    AdmissionPoint::InFlight(3),
                ],
            );
        }
        // A source sending totals: the last one counts.
        for (at, total) in [(1_500, 40), (2_500, 42)] {
            store.add_admission(
                "envoy-b",
                at,
                &[
                    count("alarm", Outcome::Admitted, total, true),
                    AdmissionPoint::QueueDepth(7),
                ],
            );
        }
        let admission = store.admission();
        assert_eq!(admission.sources, 2);
        assert_eq!(
            admission.classes["alarm"],
            ClassCounts {
                admitted: 52,
                ..ClassCounts::default()
            }
        );
        assert_eq!(admission.classes["heartbeat"].shed, 4);
        assert_eq!((admission.in_flight, admission.queue_depth), (3, 7));
        // envoy-a was last heard from at 2 s: gone after 12 s.
        store.prune(12_000);
        let admission = store.admission();
        assert_eq!(admission.sources, 1);
        assert_eq!(admission.classes["alarm"].admitted, 42);
        assert!(!admission.classes.contains_key("heartbeat"));
    }
}
