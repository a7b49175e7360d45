//! Exponential histograms: their buckets, cumulative differences, and the
//! conversion to weir's fixed millisecond buckets.
//!
//! Bucket `i` at scale `s` covers `(base^i, base^(i+1)]` with
//! `base = 2^(2^-s)`. Everything here works on bucket indices and on `log2`
//! of the boundaries, so no scale or index overflows a float.

use crate::metrics_store::Histogram;

/// The millisecond bucket bounds exponential histograms are converted to.
pub const BOUNDS_MS: [f64; 14] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// The scales OTLP allows.
pub(crate) const MIN_SCALE: i32 = -10;
pub(crate) const MAX_SCALE: i32 = 20;

/// Populated buckets kept at most: wider histograms are downscaled (merging
/// neighbouring buckets) until they fit.
pub(crate) const MAX_BUCKETS: usize = 512;

/// The positive side of an exponential histogram, with its zero bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Buckets {
    pub(crate) scale: i32,
    /// Observations in the zero bucket.
    pub(crate) zero: u64,
    /// Index of `counts[0]`.
    pub(crate) offset: i64,
    pub(crate) counts: Vec<u64>,
}

impl Buckets {
    /// Builds the buckets, dropping empty ones at either end and downscaling
    /// to at most [`MAX_BUCKETS`]. `scale` must be within the allowed range.
    pub(crate) fn new(scale: i32, zero: u64, offset: i64, counts: &[u64]) -> Self {
        let first = counts.iter().position(|&c| c > 0);
        let last = counts.iter().rposition(|&c| c > 0);
        let (Some(first), Some(last)) = (first, last) else {
            return Self {
                scale,
                zero,
                offset: 0,
                counts: Vec::new(),
            };
        };
        let mut buckets = Self {
            scale,
            zero,
            offset: offset.saturating_add(first as i64),
            counts: counts[first..=last].to_vec(),
        };
        let mut shift = 0;
        while buckets.span_at(shift) > MAX_BUCKETS as i64 && scale - shift > MIN_SCALE {
            shift += 1;
        }
        buckets.downscale(shift);
        buckets
    }

    /// Observations counted.
    pub(crate) fn count(&self) -> u64 {
        self.counts
            .iter()
            .fold(self.zero, |sum, &c| sum.saturating_add(c))
    }

    fn end(&self) -> i64 {
        self.offset + self.counts.len() as i64
    }

    /// How many buckets the populated range would span `shift` scales lower.
    fn span_at(&self, shift: i32) -> i64 {
        if self.counts.is_empty() {
            return 0;
        }
        ((self.end() - 1) >> shift) - (self.offset >> shift) + 1
    }

    /// Lowers the scale by `shift`, merging each `2^shift` neighbours.
    fn downscale(&mut self, shift: i32) {
        if shift <= 0 {
            return;
        }
        self.scale -= shift;
        if self.counts.is_empty() {
            return;
        }
        let offset = self.offset >> shift;
        let mut counts = vec![0u64; self.span_at(shift).max(0) as usize];
        for (k, &c) in self.counts.iter().enumerate() {
            let slot = (((self.offset + k as i64) >> shift) - offset) as usize;
            if let Some(target) = counts.get_mut(slot) {
                *target = target.saturating_add(c);
            }
        }
        self.offset = offset;
        self.counts = counts;
    }

    fn get(&self, index: i64) -> u64 {
        let k = index - self.offset;
        if k < 0 {
            return 0;
        }
        self.counts.get(k as usize).copied().unwrap_or(0)
    }

    /// `self − earlier`, both cumulative, or `None` if some bucket went down
    /// (the source started over).
    pub(crate) fn minus(&self, earlier: &Buckets) -> Option<Buckets> {
        let scale = self.scale.min(earlier.scale);
        let mut now = self.clone();
        now.downscale(now.scale - scale);
        let mut before = earlier.clone();
        before.downscale(before.scale - scale);
        let zero = now.zero.checked_sub(before.zero)?;
        // Every bucket populated before must still be within today's range.
        for (k, &c) in before.counts.iter().enumerate() {
            if c > now.get(before.offset + k as i64) {
                return None;
            }
        }
        let counts = now
            .counts
            .iter()
            .enumerate()
            .map(|(k, &c)| c - before.get(now.offset + k as i64))
            .collect::<Vec<_>>();
        Some(Buckets::new(scale, zero, now.offset, &counts))
    }

    /// The same observations in [`BOUNDS_MS`] buckets. `ms_per_unit` turns
    /// the histogram's unit into milliseconds. Each bucket's count is spread
    /// over the millisecond buckets it overlaps in proportion to the overlap
    /// on a logarithmic scale; the zero bucket goes to the first one. Totals
    /// are exact.
    pub(crate) fn to_millis(&self, ms_per_unit: f64) -> Histogram {
        let mut out = Histogram::with_bounds(BOUNDS_MS.to_vec());
        out.counts[0] = self.zero;
        let log_bounds = BOUNDS_MS.map(f64::log2);
        let unit_shift = ms_per_unit.log2();
        let width = (-f64::from(self.scale)).exp2();
        for (k, &count) in self.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let index = (self.offset + k as i64) as f64;
            let low = index * width + unit_shift;
            let high = low + width;
            spread(count, low, high, &log_bounds, &mut out.counts);
        }
        out
    }
}

/// Adds `count` observations lying in `(2^low, 2^high]` to `counts`, whose
/// buckets end at `2^log_bounds[j]` (the last one is unbounded).
fn spread(count: u64, low: f64, high: f64, log_bounds: &[f64], counts: &mut [u64]) {
    let slot_of = |x: f64| log_bounds.partition_point(|&b| b < x);
    let (first, last) = (slot_of(low), slot_of(high));
    if first == last || high <= low {
        if let Some(c) = counts.get_mut(last) {
            *c = c.saturating_add(count);
        }
        return;
    }
    let mut left = count;
    let mut largest = (first, f64::MIN);
    for slot in first..=last {
        let from = if slot == 0 {
            low
        } else {
            log_bounds[slot - 1].max(low)
        };
        let to = log_bounds.get(slot).copied().unwrap_or(high).min(high);
        let share = ((to - from) / (high - low)).clamp(0.0, 1.0);
        if share > largest.1 {
            largest = (slot, share);
        }
        let piece = ((count as f64 * share).floor() as u64).min(left);
        left -= piece;
        if let Some(c) = counts.get_mut(slot) {
            *c = c.saturating_add(piece);
        }
    }
    if let Some(c) = counts.get_mut(largest.0) {
        *c = c.saturating_add(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_trimmed_and_downscaled_to_fit() {
        let b = Buckets::new(3, 2, -5, &[0, 0, 4, 0, 1, 0]);
        assert_eq!(
            (b.offset, b.counts.clone(), b.count()),
            (-3, vec![4, 0, 1], 7)
        );
        let mut wide = vec![0u64; 5_000];
        wide[0] = 1;
        wide[4_999] = 1;
        let b = Buckets::new(20, 0, 0, &wide);
        assert!(b.counts.len() <= MAX_BUCKETS, "{}", b.counts.len());
        assert_eq!(b.scale, 20 - 4);
        assert_eq!(b.count(), 2);
        // Negative indices round down when downscaling.
        let mut b = Buckets::new(1, 0, -3, &[1, 1, 1, 1]);
        b.downscale(1);
        assert_eq!(
            (b.scale, b.offset, b.counts.clone()),
            (0, -2, vec![1, 2, 1])
        );
    }

    #[test]
    fn cumulative_differences_across_scales() {
        let before = Buckets::new(2, 1, 0, &[1, 2, 3, 4]);
        let now = Buckets::new(2, 3, 0, &[2, 2, 5, 4, 7]);
        let d = now.minus(&before).unwrap();
        assert_eq!(
            (d.zero, d.offset, d.counts.clone()),
            (2, 0, vec![1, 0, 2, 0, 7])
        );
        // The source lowered its scale: the earlier buckets are merged to match.
        let now = Buckets::new(1, 1, 0, &[4, 9]);
        let d = now.minus(&before).unwrap();
        assert_eq!((d.scale, d.counts.clone()), (1, vec![1, 2]));
        // A bucket going down is a restart.
        let now = Buckets::new(2, 1, 0, &[0, 2, 3, 4]);
        assert_eq!(now.minus(&before), None);
        let now = Buckets::new(2, 0, 0, &[9, 9, 9, 9]);
        assert_eq!(now.minus(&before), None);
    }

    #[test]
    fn conversion_to_milliseconds_keeps_every_observation() {
        // Scale 0, seconds: bucket -4 is (1/16 s, 1/8 s] = (62.5, 125] ms, which
        // straddles the 100 ms bound: 2/3 of it (on a log scale) lies below.
        let b = Buckets::new(0, 5, -4, &[30]);
        let h = b.to_millis(1000.0);
        assert_eq!(h.bounds, BOUNDS_MS.to_vec());
        assert_eq!(h.count(), 35);
        assert_eq!(h.counts[0], 5);
        let below = h.counts[7];
        let above = h.counts[8];
        assert_eq!(below + above, 30);
        assert!((19..=21).contains(&below), "{:?}", h.counts);
        // Far beyond the last bound, and far below the first.
        let h = Buckets::new(0, 0, 40, &[3]).to_millis(1.0);
        assert_eq!(h.counts[14], 3);
        let h = Buckets::new(-10, 0, -3, &[2]).to_millis(1.0);
        assert_eq!(h.count(), 2);
        let h = Buckets::new(20, 0, i64::from(i32::MIN), &[u64::MAX]).to_millis(1000.0);
        assert_eq!(h.counts[0], u64::MAX);
    }
}
