//! Latency histograms with explicit bucket bounds, and the re-bucketing that
//! lets sources with different layouts be added up.

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
        self.counts.iter().fold(0, |sum, &c| sum.saturating_add(c))
    }

    /// Adds `other` in. Histograms with other bounds are re-bucketed onto
    /// these (each of `other`'s buckets counted at its upper bound), so that
    /// sources with different layouts can still be compared.
    pub fn merge(&mut self, other: &Histogram) {
        if self.bounds.is_empty() && self.counts.iter().all(|&c| c == 0) {
            *self = other.clone();
            return;
        }
        add_counts(&self.bounds, &mut self.counts, &other.bounds, &other.counts);
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

/// Adds `counts` (with bucket bounds `bounds`) into `into` (with bounds
/// `onto`): bucket by bucket when the bounds are the same, else each bucket
/// counted at its upper bound in the bucket of `onto` that holds it.
pub(crate) fn add_counts(onto: &[f64], into: &mut [u64], bounds: &[f64], counts: &[u64]) {
    if onto == bounds {
        for (mine, theirs) in into.iter_mut().zip(counts) {
            *mine = mine.saturating_add(*theirs);
        }
        return;
    }
    for (i, &count) in counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let at = bounds.get(i).copied().unwrap_or(f64::INFINITY);
        let slot = onto.partition_point(|&b| b < at);
        if let Some(c) = into.get_mut(slot) {
            *c = c.saturating_add(count);
        }
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
    fn histograms_with_other_bounds_are_rebucketed() {
        let mut a = Histogram::with_bounds(vec![10.0, 100.0]);
        a.counts = vec![1, 1, 0];
        let mut b = Histogram::with_bounds(vec![5.0, 50.0, 500.0]);
        b.counts = vec![1, 1, 1, 1];
        a.merge(&b);
        assert_eq!(a.counts, vec![2, 2, 2]);
        assert_eq!(a.count(), 6);
        // A bound equal to one of ours lands in that bucket.
        let mut c = Histogram::with_bounds(vec![10.0, 100.0]);
        add_counts(&[10.0, 100.0], &mut c.counts, &[10.0, 20.0], &[1, 1, 1]);
        assert_eq!(c.counts, vec![1, 1, 1]);
    }
}
