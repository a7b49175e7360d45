//! What the controller knows of each cluster's traffic: short sliding windows
//! of request counts, errors and latency histograms, fed by the OTLP receivers
//! (Envoy's stats sink, applications) and read by the controller.
//!
//! Time is passed in (milliseconds since the epoch), never read here, so the
//! controller can be tested with a simulated clock.

use std::collections::{HashMap, VecDeque};

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

/// Samples per cluster, kept for `retention_ms`.
#[derive(Debug)]
pub struct MetricsStore {
    retention_ms: u64,
    clusters: HashMap<String, VecDeque<Sample>>,
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
}
