//! Exponential histograms: their buckets, cumulative differences, and the
//! conversion to weir's fixed millisecond buckets.
//!
//! Bucket `i` at scale `s` covers `(base^i, base^(i+1)]` with
//! `base = 2^(2^-s)`. Everything here works on bucket indices and on `log2`
//! of the boundaries, so no scale or index overflows a float.

use std::rc::Rc;

use super::totals::tidy;
use crate::metrics_store::LATENCY_BOUNDS_MS;

/// The millisecond bucket bounds exponential histograms of scale
/// [`FINE_SCALE`] or finer are converted to (steps of at most ×1.2).
pub const BOUNDS_MS: [f64; 69] = LATENCY_BOUNDS_MS;

/// The coarsest scale spread over [`BOUNDS_MS`]: its buckets are ×2^(1/4) ≈
/// ×1.19 wide, no wider than those. A coarser histogram keeps its own bucket
/// edges, so that it is never shown finer than it is measured (canary
/// analysis calls a quantile in too wide a bucket unresolved).
pub(crate) const FINE_SCALE: i32 = 2;

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

    /// The same observations in millisecond buckets: [`BOUNDS_MS`] from
    /// [`FINE_SCALE`] up, else the histogram's own bucket edges over the same
    /// range. `ms_per_unit` turns the histogram's unit into milliseconds. Each
    /// bucket's count is spread over the millisecond buckets it overlaps in
    /// proportion to the overlap on a logarithmic scale; the zero bucket goes
    /// to the first one. Totals are exact.
    pub(crate) fn to_millis(&self, ms_per_unit: f64) -> Millis {
        let native = (self.scale < FINE_SCALE).then(|| self.native_bounds_ms(ms_per_unit));
        let bounds = native.as_deref().unwrap_or(&BOUNDS_MS);
        let mut counts = vec![0; bounds.len() + 1];
        counts[0] = self.zero;
        let log_bounds: Vec<f64> = bounds.iter().map(|b| b.log2()).collect();
        let unit_shift = ms_per_unit.log2();
        let width = (-f64::from(self.scale)).exp2();
        for (k, &count) in self.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let index = (self.offset + k as i64) as f64;
            let low = index * width + unit_shift;
            let high = low + width;
            spread(count, low, high, &log_bounds, &mut counts);
        }
        Millis { native, counts }
    }

    /// This scale's bucket edges in milliseconds, from the one at or below
    /// [`BOUNDS_MS`]' first to the one at or above its last.
    fn native_bounds_ms(&self, ms_per_unit: f64) -> Rc<[f64]> {
        let width = (-f64::from(self.scale)).exp2();
        let shift = ms_per_unit.log2();
        let edge = |ms: f64| (ms.log2() - shift) / width;
        let first = edge(BOUNDS_MS[0]).floor() as i64;
        let last = edge(BOUNDS_MS[BOUNDS_MS.len() - 1]).ceil() as i64;
        let bounds: Rc<[f64]> = (first..=last)
            .map(|i| tidy((i as f64 * width + shift).exp2()))
            .filter(|b| b.is_finite() && *b > 0.0)
            .collect();
        if bounds.is_empty() {
            Rc::from(BOUNDS_MS.as_slice())
        } else {
            bounds
        }
    }
}

/// Exponential buckets in milliseconds ([`Buckets::to_millis`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Millis {
    /// The histogram's own bucket edges, if it is coarser than [`BOUNDS_MS`].
    pub(crate) native: Option<Rc<[f64]>>,
    /// Counts per bucket: one more than the bounds.
    pub(crate) counts: Vec<u64>,
}

#[cfg(test)]
impl Millis {
    fn bounds(&self) -> &[f64] {
        self.native.as_deref().unwrap_or(&BOUNDS_MS)
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum()
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
        // Scale 2, seconds: bucket -16 is (2^-4 s, 2^-3.75 s] = (62.5, 74.3]
        // ms, which straddles the 74 ms bound: 97.5 % of it (on a log scale)
        // lies below.
        let b = Buckets::new(2, 5, -16, &[100]);
        let h = b.to_millis(1000.0);
        assert_eq!((h.bounds(), h.native.is_none()), (&BOUNDS_MS[..], true));
        assert_eq!(h.count(), 105);
        assert_eq!(h.counts[0], 5);
        let at = BOUNDS_MS.iter().position(|&b| b == 74.0).unwrap();
        let (below, above) = (h.counts[at], h.counts[at + 1]);
        assert_eq!(below + above, 100);
        assert!((97..=98).contains(&below), "{:?}", h.counts);
        // Far beyond the last bound, and far below the first.
        let h = Buckets::new(3, 0, 200, &[3]).to_millis(1.0);
        assert_eq!(h.counts[BOUNDS_MS.len()], 3);
        let h = Buckets::new(20, 0, i64::from(i32::MIN), &[u64::MAX]).to_millis(1000.0);
        assert_eq!(h.counts[0], u64::MAX);
    }

    #[test]
    fn coarse_scales_keep_their_own_edges() {
        // Scale 0, seconds: bucket -4 is (62.5, 125] ms, kept whole in a
        // bucket with those edges rather than spread over finer ones.
        let h = Buckets::new(0, 5, -4, &[30]).to_millis(1000.0);
        let bounds = h.bounds();
        let at = bounds.iter().position(|&b| b == 125.0).unwrap();
        assert_eq!(bounds[at - 1], 62.5);
        assert_eq!(h.counts[at], 30, "{bounds:?} {:?}", h.counts);
        assert_eq!(h.count(), 35);
        assert!(bounds.windows(2).all(|w| (w[1] / w[0] - 2.0).abs() < 1e-9));
        // Scale -10 (buckets ×2^1024): still a histogram, every observation kept.
        let h = Buckets::new(-10, 0, -3, &[2]).to_millis(1.0);
        assert_eq!(h.count(), 2);
        assert!(!h.bounds().is_empty());
    }
}
