//! The latency check of one quantile: the canary's against stable's, decided
//! only where the histograms' buckets can tell.
//!
//! Each quantile is read at the edge of its 99 % confidence interval that
//! favours the canary (its lower edge for the canary, the upper for stable),
//! and lies in a bucket `(low, high]`. The true ratio then lies between
//! `canary.low / stable.high` and `canary.high / stable.low`:
//!
//! - above the limit even at its lowest: **bad**, whatever the buckets' width;
//! - within the limit even at its highest: **ok**;
//! - otherwise the buckets straddle the limit, and the interpolated ratio
//!   decides only if both buckets are *no wider than the limit* (`high / low
//!   ≤ limit`): a shift of the limit's size then moves a quantile by at least
//!   a bucket. Wider buckets — every observation in one `(0, 5 s]` bucket, say
//!   — cannot tell ×1 from ×10, and the check is **unresolved**: it never
//!   passes, and the evidence shows the buckets seen.

use serde::{Deserialize, Serialize};

use super::floored_ratio;
use crate::metrics_store::{Histogram, Located};

/// One-sided 99 % normal quantile: the confidence of the whole's bounds.
pub(super) const Z_99: f64 = 2.326_348;

/// Slack on "no wider than the limit", so that buckets written in decimal
/// (×1.2 steps: 10, 12) meet a limit of 1.2 despite rounding.
const WIDTH_SLACK: f64 = 1e-9;

/// The rank (as a quantile) at the lower (`sign` −1) or upper (+1) end of the
/// one-sided confidence interval (normal quantile `z`) of the `q` quantile
/// estimated from `n` observations.
fn bound(q: f64, n: u64, sign: f64, z: f64) -> f64 {
    let n = n.max(1) as f64;
    (q + sign * z * (q * (1.0 - q) / n).sqrt()).clamp(0.0, 1.0)
}

/// A histogram bucket, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Its lower bound (exclusive; 0 for the first bucket).
    pub low_ms: f64,
    /// Its upper bound (inclusive); `None` for the unbounded last bucket.
    pub high_ms: Option<f64>,
}

impl Bucket {
    fn of(at: &Located) -> Self {
        Self {
            low_ms: at.low,
            high_ms: at.high,
        }
    }

    /// `high / low`, both floored as the ratios are: how many times larger
    /// its top is than its bottom (infinite for the unbounded bucket).
    fn width(&self) -> f64 {
        match self.high_ms {
            Some(high) => floored_ratio(high, self.low_ms),
            None => f64::INFINITY,
        }
    }
}

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.high_ms {
            Some(high) => write!(f, "({}, {}] ms", self.low_ms, high),
            None => write!(f, "over {} ms", self.low_ms),
        }
    }
}

/// What one quantile's check found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Outcome {
    /// Within the limit.
    Ok,
    /// Over the limit with 99 % confidence.
    Bad,
    /// The buckets cannot tell.
    Unresolved,
}

/// A quantile whose buckets could not decide its limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unresolved {
    /// Which quantile: `p95` or `p99`.
    pub quantile: String,
    /// The ratio limit it was tested against.
    pub limit: f64,
    /// The bucket holding the canary's quantile (at its confidence edge).
    pub canary_bucket: Bucket,
    /// The bucket holding stable's.
    pub stable_bucket: Bucket,
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} not resolvable: canary's in {}, stable's in {}; buckets that wide cannot decide a ×{} limit",
            self.quantile, self.canary_bucket, self.stable_bucket, self.limit
        )
    }
}

/// One quantile judged.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Judged {
    /// Canary's quantile over stable's, as estimated.
    pub ratio: f64,
    /// The same at 99 % confidence: the canary's quantile at the lower edge
    /// of its interval over stable's at the upper edge.
    pub ratio_low: f64,
    pub outcome: Outcome,
    /// Set when the outcome is [`Outcome::Unresolved`].
    pub unresolved: Option<Unresolved>,
}

/// Judges the `q` quantile (named `name`) of `canary` against `stable`'s
/// under `limit`, each read at its confidence bound of normal quantile `z`
/// ([`Z_99`] for the whole); `None` when either histogram is empty.
pub(super) fn judge(
    name: &str,
    (q, limit, z): (f64, f64, f64),
    canary: &Histogram,
    stable: &Histogram,
) -> Option<Judged> {
    let ratio = floored_ratio(canary.quantile(q)?, stable.quantile(q)?);
    let c = canary.locate(bound(q, canary.count(), -1.0, z))?;
    let s = stable.locate(bound(q, stable.count(), 1.0, z))?;
    let ratio_low = floored_ratio(c.value, s.value).min(ratio);
    let (cb, sb) = (Bucket::of(&c), Bucket::of(&s));
    let lowest = match sb.high_ms {
        Some(high) => floored_ratio(cb.low_ms, high),
        // Stable's quantile is somewhere past its last bound.
        None => 0.0,
    };
    let highest = match cb.high_ms {
        Some(high) => floored_ratio(high, sb.low_ms),
        None => f64::INFINITY,
    };
    let fine = |b: &Bucket| b.width() <= limit * (1.0 + WIDTH_SLACK);
    let outcome = if lowest > limit {
        Outcome::Bad
    } else if highest <= limit {
        Outcome::Ok
    } else if fine(&cb) && fine(&sb) {
        if ratio_low > limit {
            Outcome::Bad
        } else {
            Outcome::Ok
        }
    } else {
        Outcome::Unresolved
    };
    let unresolved = (outcome == Outcome::Unresolved).then(|| Unresolved {
        quantile: name.to_owned(),
        limit,
        canary_bucket: cb,
        stable_bucket: sb,
    });
    Some(Judged {
        ratio,
        ratio_low,
        outcome,
        unresolved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(bounds: &[f64], observations: &[(f64, u64)]) -> Histogram {
        let mut h = Histogram::with_bounds(bounds.to_vec());
        for &(ms, n) in observations {
            let slot = bounds.iter().position(|&b| ms <= b).unwrap_or(bounds.len());
            h.counts[slot] += n;
        }
        h
    }

    /// The OpenTelemetry SDK's default bounds, read as seconds: one bucket
    /// from 0 to 5 s holds every ordinary request.
    const SECONDS: [f64; 3] = [0.0, 5_000.0, 10_000.0];
    /// ×1.2 steps.
    const FINE: [f64; 16] = [
        10.0, 12.0, 14.0, 16.0, 19.0, 22.0, 26.0, 31.0, 37.0, 44.0, 52.0, 62.0, 74.0, 88.0, 100.0,
        120.0,
    ];

    #[test]
    fn one_wide_bucket_cannot_tell_ten_times_slower() {
        let stable = histogram(&SECONDS, &[(300.0, 1000)]);
        let canary = histogram(&SECONDS, &[(3_000.0, 1000)]);
        let judged = judge("p95", (0.95, 1.2, Z_99), &canary, &stable).unwrap();
        assert_eq!(judged.outcome, Outcome::Unresolved);
        let why = judged.unresolved.unwrap();
        assert_eq!(
            (why.canary_bucket.low_ms, why.canary_bucket.high_ms),
            (0.0, Some(5_000.0))
        );
        assert!(why.to_string().contains("(0, 5000] ms"), "{why}");
        // Equal latency in that bucket is just as unresolved: it never passes.
        let judged = judge("p95", (0.95, 1.2, Z_99), &stable, &stable).unwrap();
        assert_eq!(judged.outcome, Outcome::Unresolved);
    }

    #[test]
    fn buckets_wholly_apart_decide_whatever_their_width() {
        let bounds = [5.0, 50.0, 500.0, 5_000.0];
        let stable = histogram(&bounds, &[(20.0, 1000)]);
        let canary = histogram(&bounds, &[(700.0, 1000)]);
        let judged = judge("p99", (0.99, 1.5, Z_99), &canary, &stable).unwrap();
        assert_eq!(judged.outcome, Outcome::Bad);
        // Past the last bound: at least 5 s against at most 50 ms.
        let canary = histogram(&bounds, &[(9_000.0, 1000)]);
        assert_eq!(
            judge("p99", (0.99, 1.5, Z_99), &canary, &stable)
                .unwrap()
                .outcome,
            Outcome::Bad
        );
        // Faster by whole buckets: ok, even against a 10× wide one.
        let canary = histogram(&bounds, &[(3.0, 1000)]);
        assert_eq!(
            judge("p99", (0.99, 1.5, Z_99), &canary, &stable)
                .unwrap()
                .outcome,
            Outcome::Ok
        );
    }

    #[test]
    fn buckets_as_fine_as_the_limit_let_interpolation_decide() {
        // Same spread in both: ok.
        let spread: Vec<(f64, u64)> = FINE[..12].iter().map(|&b| (b - 0.5, 100)).collect();
        let stable = histogram(&FINE, &spread);
        let judged = judge("p95", (0.95, 1.2, Z_99), &stable, &stable).unwrap();
        assert_eq!(judged.outcome, Outcome::Ok, "{judged:?}");
        assert!((judged.ratio - 1.0).abs() < 1e-9);
        // Shifted up by two buckets and more (×1.5): bad.
        let slower: Vec<(f64, u64)> = spread.iter().map(|&(ms, n)| (ms * 1.5, n)).collect();
        let canary = histogram(&FINE, &slower);
        let judged = judge("p95", (0.95, 1.2, Z_99), &canary, &stable).unwrap();
        assert_eq!(judged.outcome, Outcome::Bad, "{judged:?}");
    }

    #[test]
    fn sub_millisecond_buckets_count_as_resolved() {
        let bounds = [0.5, 1.0, 5.0];
        let fast = histogram(&bounds, &[(0.3, 900), (0.8, 100)]);
        let judged = judge("p99", (0.99, 1.5, Z_99), &fast, &fast).unwrap();
        assert_eq!(judged.outcome, Outcome::Ok, "{judged:?}");
    }

    #[test]
    fn empty_histograms_are_not_judged() {
        let h = histogram(&FINE, &[(11.0, 10)]);
        assert!(
            judge(
                "p95",
                (0.95, 1.2, Z_99),
                &Histogram::with_bounds(FINE.to_vec()),
                &h
            )
            .is_none()
        );
    }
}
