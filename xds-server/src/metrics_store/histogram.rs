//! Latency histograms with explicit bucket bounds, and the re-bucketing that
//! lets sources with different layouts be added up.

/// Latency buckets (ms) fine enough for canary analysis to decide latency
/// limits down to ×1.2: steps of at most ×1.2 from 1 ms to 62 s (Envoy's
/// default buckets, ×2 to ×5 wide, cannot; see `controller::analysis`).
/// `envoy/bootstrap.yaml` and `envoy/bootstrap-tls.yaml` give them to
/// Envoy's `cluster.*.upstream_rq_time`, and fine exponential histograms are
/// converted onto them.
pub const LATENCY_BOUNDS_MS: [f64; 69] = [
    0.5, 1.0, 1.2, 1.4, 1.6, 1.9, 2.2, 2.6, 3.1, 3.7, 4.4, 5.2, 6.2, 7.4, 8.8, 10.0, 12.0, 14.0,
    16.0, 19.0, 22.0, 26.0, 31.0, 37.0, 44.0, 52.0, 62.0, 74.0, 88.0, 100.0, 120.0, 140.0, 160.0,
    190.0, 220.0, 260.0, 310.0, 370.0, 440.0, 520.0, 620.0, 740.0, 880.0, 1000.0, 1200.0, 1400.0,
    1600.0, 1900.0, 2200.0, 2600.0, 3100.0, 3700.0, 4400.0, 5200.0, 6200.0, 7400.0, 8800.0,
    10000.0, 12000.0, 14000.0, 16000.0, 19000.0, 22000.0, 26000.0, 31000.0, 37000.0, 44000.0,
    52000.0, 62000.0,
];

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
        self.locate(q).map(|at| at.value)
    }

    /// The `q` quantile (0–1) and the bucket it lies in; `None` when empty.
    pub fn locate(&self, q: f64) -> Option<Located> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0.0;
        for (i, &count) in self.counts.iter().enumerate() {
            let next = seen + count as f64;
            if next >= rank && count > 0 {
                let low = match i {
                    0 => 0.0,
                    _ => self.bounds.get(i - 1).copied().unwrap_or(0.0),
                };
                let high = self.bounds.get(i).copied();
                let value = match high {
                    Some(high) => low + (high - low) * ((rank - seen) / count as f64),
                    None => low,
                };
                return Some(Located { value, low, high });
            }
            seen = next;
        }
        None
    }
}

/// Where a quantile lies: its interpolated value and the bucket holding it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Located {
    /// The value, interpolated linearly inside the bucket (its lower bound in
    /// the unbounded last bucket).
    pub value: f64,
    /// The bucket's lower bound (0 for the first).
    pub low: f64,
    /// The bucket's upper bound; `None` for the unbounded last bucket.
    pub high: Option<f64>,
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
    fn a_quantile_is_located_in_its_bucket() {
        let mut h = Histogram::with_bounds(vec![10.0, 20.0, 50.0]);
        h.counts = vec![50, 40, 0, 10];
        let at = h.locate(0.6).unwrap();
        assert_eq!((at.low, at.high), (10.0, Some(20.0)));
        assert!((at.value - 12.5).abs() < 1e-9, "{at:?}");
        assert_eq!(h.locate(0.1).unwrap().low, 0.0);
        // The unbounded last bucket: its lower bound, and no upper one.
        let tail = h.locate(0.99).unwrap();
        assert_eq!((tail.value, tail.low, tail.high), (50.0, 50.0, None));
    }

    #[test]
    fn the_shipped_envoy_buckets_are_no_wider_than_x1_2() {
        let bounds = LATENCY_BOUNDS_MS;
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        for w in bounds.windows(2).filter(|w| w[0] >= 1.0) {
            assert!(w[1] / w[0] <= 1.2 + 1e-9, "{w:?}");
        }
    }

    /// The bounds in a bootstrap's `histogram_bucket_settings` for the
    /// request time, which connect times and segment latencies share.
    fn bootstrap_bounds(yaml: &str) -> Vec<f64> {
        let bootstrap: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
        let settings = bootstrap["stats_config"]["histogram_bucket_settings"]
            .as_array()
            .expect("histogram_bucket_settings");
        let request_time = settings
            .iter()
            .find(|s| {
                s["match"]["safe_regex"]["regex"]
                    .as_str()
                    .is_some_and(|r| r.contains("upstream_rq_time"))
            })
            .expect("a setting for upstream_rq_time");
        let regex = request_time["match"]["safe_regex"]["regex"]
            .as_str()
            .unwrap();
        for name in ["upstream_cx_connect_ms", "segment"] {
            assert!(regex.contains(name), "{regex} covers {name}");
        }
        request_time["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_f64().unwrap())
            .collect()
    }

    #[test]
    fn the_bootstraps_ship_these_buckets() {
        for yaml in [
            include_str!("../../../envoy/bootstrap.yaml"),
            include_str!("../../../envoy/bootstrap-tls.yaml"),
            include_str!("../../../examples/existing-envoy/ecds-only.yaml"),
        ] {
            assert_eq!(bootstrap_bounds(yaml), LATENCY_BOUNDS_MS);
        }
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
