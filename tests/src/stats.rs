//! Percentiles of a sample of durations, medians of rates.

use std::time::Duration;

/// A sample's order statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// How many values the sample holds.
    pub count: usize,
    /// The smallest value.
    pub min: Duration,
    /// The median by nearest rank.
    pub p50: Duration,
    /// The 99th percentile by nearest rank.
    pub p99: Duration,
    /// The largest value.
    pub max: Duration,
}

impl Summary {
    /// The summary of `sample`; `None` if it is empty. Percentiles are by
    /// nearest rank: the p-th is the smallest value with at least p % of the
    /// sample at or below it (so with 50 values, p99 is the largest).
    pub fn of(sample: &[Duration]) -> Option<Self> {
        let mut sorted = sample.to_vec();
        sorted.sort();
        let (&min, &max) = (sorted.first()?, sorted.last()?);
        Some(Self {
            count: sorted.len(),
            min,
            p50: percentile(&sorted, 50),
            p99: percentile(&sorted, 99),
            max,
        })
    }
}

/// The `p`-th percentile of `sorted` (not empty) by nearest rank.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// `d` in milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// The median of `values` (the mean of the two middle ones for an even
/// count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let fifty: Vec<u64> = (1..=50).collect();
        let s = Summary::of(&millis(&fifty)).unwrap();
        assert_eq!(s.p50, Duration::from_millis(25));
        assert_eq!(s.p99, Duration::from_millis(50));
        assert_eq!(
            (s.min, s.max, s.count),
            (millis(&[1])[0], millis(&[50])[0], 50)
        );

        let hundred: Vec<u64> = (1..=100).rev().collect();
        let s = Summary::of(&millis(&hundred)).unwrap();
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));

        let one = Summary::of(&millis(&[7])).unwrap();
        assert_eq!((one.p50, one.p99), (one.min, one.max));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
