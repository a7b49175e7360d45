//! Canary analysis: one window of the canary against one of its stable
//! cluster, judged against the canary's `analysis` thresholds.
//!
//! - Both variants need `min_samples` requests, else the verdict is
//!   inconclusive: no data never passes.
//! - Errors: a one-sided two-proportion z-test whose null hypothesis is "the
//!   canary's error rate exceeds stable's by at most the allowed increase"
//!   (proportions adjusted by Agresti–Caffo, one error and one success added
//!   to each variant, so that the test is defined at 0 % and 100 %). Bad when
//!   the observed increase is over the limit *and* the test rejects at
//!   p < 0.01 — clearly bad, not noise.
//! - Latency: p95 and p99 from the histograms (quantiles floored at 1 ms).
//!   Bad when a ratio exceeds its limit *with 99 % confidence*: the canary's
//!   quantile is read at the lower end of its distribution-free confidence
//!   interval (rank `q − 2.33·√(q(1−q)/n)`), stable's at the upper end, and
//!   that conservative ratio is compared with the limit — so a few hundred
//!   observations cannot fail a healthy canary by chance, while a real shift
//!   (+200 ms) fails at once. Where the histograms' buckets are too wide to
//!   decide the limit, the check is unresolved and the verdict inconclusive
//!   ([`latency`]). Judged only when both histograms hold `min_samples`
//!   observations; when neither variant reports latency at all, the verdict
//!   rests on errors alone.

use serde::{Deserialize, Serialize};
use weir_policy::model::{Analysis, ErrorCeiling};

use crate::metrics_store::WindowStats;

mod latency;
mod segments;

pub use latency::{Bucket, Unresolved};
pub use segments::SegmentVerdict;
pub(crate) use segments::judge as judge_segments;

/// Significance level of the error test.
pub(crate) const SIGNIFICANCE: f64 = 0.01;

/// Quantiles below this are taken as this, on both sides of a ratio, so that
/// ratios of near-zero latencies stay meaningful.
pub(crate) const LATENCY_FLOOR_MS: f64 = 1.0;

/// `canary / stable`, both taken as at least [`LATENCY_FLOOR_MS`]: two
/// sub-millisecond quantiles compare as equal, not by their noise.
fn floored_ratio(canary_ms: f64, stable_ms: f64) -> f64 {
    canary_ms.max(LATENCY_FLOOR_MS) / stable_ms.max(LATENCY_FLOOR_MS)
}

/// What a window says about a canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Enough data, and every check passed.
    Healthy,
    /// Enough data, and at least one check clearly failed.
    Bad,
    /// Not enough data for a verdict (no traffic, or fewer than `min_samples`
    /// requests or latency observations); the findings say which.
    Inconclusive,
}

/// One variant's figures over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantStats {
    /// Requests completed.
    pub requests: u64,
    /// Of which failed (5xx).
    pub errors: u64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// Latency observations in the histogram.
    #[serde(default)]
    pub latency_observations: u64,
    /// 95th percentile latency (ms), if any latency was reported.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency (ms), if any latency was reported.
    pub p99_ms: Option<f64>,
}

impl VariantStats {
    pub(crate) fn of(window: &WindowStats) -> Self {
        let error_rate = window.error_rate().filter(|r| r.is_finite()).unwrap_or(0.0);
        let finite = |q: Option<f64>| q.filter(|v| v.is_finite());
        Self {
            requests: window.requests,
            errors: window.errors,
            error_rate,
            latency_observations: window.latency.count(),
            p95_ms: finite(window.latency.quantile(0.95)),
            p99_ms: finite(window.latency.quantile(0.99)),
        }
    }
}

/// The error test's figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorTest {
    /// The z statistic (positive: canary worse than stable plus the allowed increase).
    pub z: f64,
    /// One-sided p-value.
    pub p_value: f64,
    /// Observed increase of the canary's error rate over stable's, in percentage points.
    pub increase_pp: f64,
}

/// Canary latency over stable latency, by percentile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyRatio {
    /// Ratio of the 95th percentiles.
    pub p95: f64,
    /// Ratio of the 99th percentiles.
    pub p99: f64,
    /// The p95 ratio at 99 % confidence (canary's lower bound over stable's
    /// upper bound): what is compared with the limit.
    pub p95_low: f64,
    /// The same for p99.
    pub p99_low: f64,
}

impl LatencyRatio {
    fn of(p95: &latency::Judged, p99: &latency::Judged) -> Self {
        Self {
            p95: p95.ratio,
            p99: p99.ratio,
            p95_low: p95.ratio_low,
            p99_low: p99.ratio_low,
        }
    }
}

/// Everything a decision was based on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Length of the window analysed (ms).
    pub window_ms: u64,
    /// The canary cluster's figures.
    pub canary: VariantStats,
    /// The stable cluster's figures.
    pub stable: VariantStats,
    /// Set when the stable figures are not the live window but the last one
    /// with enough samples, taken at this time (at full weight the stable
    /// cluster gets none of the placement's traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_baseline_at_ms: Option<u64>,
    /// The error test, when both variants had enough requests.
    pub error_test: Option<ErrorTest>,
    /// The latency ratios, when both variants had enough latency observations.
    pub latency_ratio: Option<LatencyRatio>,
    /// The quantiles whose histogram buckets were too wide to decide their
    /// limit: the latency check is then inconclusive, never passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_unresolved: Vec<Unresolved>,
    /// The device segments judged (`analysis.segments`): the bad ones first,
    /// then by Holm-adjusted p-value, at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentVerdict>,
    /// The verdict.
    pub verdict: Verdict,
    /// One line per check, in words.
    #[serde(default)]
    pub findings: Vec<String>,
}

impl Evidence {
    /// Evidence of nothing: before the first evaluation.
    pub(crate) fn none(window_ms: u64) -> Self {
        Self {
            window_ms,
            canary: VariantStats::default(),
            stable: VariantStats::default(),
            stable_baseline_at_ms: None,
            error_test: None,
            latency_ratio: None,
            latency_unresolved: Vec::new(),
            segments: Vec::new(),
            verdict: Verdict::Inconclusive,
            findings: vec!["not evaluated yet".to_owned()],
        }
    }
}

/// Judges `canary` against `stable` over a window of `window_ms`.
pub(crate) fn analyse(
    canary: &WindowStats,
    stable: &WindowStats,
    stable_baseline_at_ms: Option<u64>,
    analysis: &Analysis,
    window_ms: u64,
) -> Evidence {
    let min = u64::from(analysis.min_samples.max(1));
    let mut evidence = Evidence {
        window_ms,
        canary: VariantStats::of(canary),
        stable: VariantStats::of(stable),
        stable_baseline_at_ms,
        error_test: None,
        latency_ratio: None,
        latency_unresolved: Vec::new(),
        segments: Vec::new(),
        verdict: Verdict::Inconclusive,
        findings: Vec::new(),
    };
    let seconds = window_ms as f64 / 1000.0;
    if canary.requests == 0 && stable.requests == 0 {
        evidence.findings.push(format!(
            "no traffic on either variant in the last {seconds} s"
        ));
        return evidence;
    }
    let mut enough = true;
    for (name, stats) in [("canary", canary), ("stable", stable)] {
        if stats.requests < min {
            enough = false;
            evidence.findings.push(format!(
                "{name}: {} requests in the last {seconds} s, {min} needed",
                stats.requests
            ));
        }
    }
    if !enough {
        return evidence;
    }

    let mut bad = false;
    let test = error_test(canary, stable, analysis.max_error_rate_increase);
    let errors_bad =
        test.increase_pp > analysis.max_error_rate_increase && test.p_value < SIGNIFICANCE;
    bad |= errors_bad;
    evidence.findings.push(format!(
        "errors: canary {:.2} % vs stable {:.2} % ({:+.2} pp, limit {} pp; z = {:.2}, p = {:.2e}): {}",
        evidence.canary.error_rate * 100.0,
        evidence.stable.error_rate * 100.0,
        test.increase_pp,
        analysis.max_error_rate_increase,
        test.z,
        test.p_value,
        if errors_bad { "bad" } else { "ok" },
    ));
    evidence.error_test = Some(test);

    let mut latency_judged = true;
    let (canary_obs, stable_obs) = (canary.latency.count(), stable.latency.count());
    if canary_obs == 0 && stable_obs == 0 {
        evidence
            .findings
            .push("latency: not reported by either variant; judged on errors alone".to_owned());
    } else if canary_obs < min || stable_obs < min {
        latency_judged = false;
        evidence.findings.push(format!(
            "latency: {canary_obs} canary and {stable_obs} stable observations, {min} needed in both"
        ));
    } else {
        let limits = &analysis.max_latency_ratio;
        let judged = |name, q, limit| {
            latency::judge(
                name,
                (q, limit, latency::Z_99),
                &canary.latency,
                &stable.latency,
            )
        };
        match (
            judged("p95", 0.95, limits.p95),
            judged("p99", 0.99, limits.p99),
            (evidence.canary.p95_ms, evidence.stable.p95_ms),
            (evidence.canary.p99_ms, evidence.stable.p99_ms),
        ) {
            (Some(p95), Some(p99), (Some(c95), Some(s95)), (Some(c99), Some(s99))) => {
                let outcomes = [p95.outcome, p99.outcome];
                let latency_bad = outcomes.contains(&latency::Outcome::Bad);
                let unresolved: Vec<Unresolved> = [&p95, &p99]
                    .iter()
                    .filter_map(|j| j.unresolved.clone())
                    .collect();
                bad |= latency_bad;
                latency_judged = unresolved.is_empty();
                evidence.findings.push(format!(
                    "latency: p95 {c95:.1} ms vs {s95:.1} ms (×{:.2}, at least ×{:.2} at 99 % confidence, limit ×{}), p99 {c99:.1} ms vs {s99:.1} ms (×{:.2}, at least ×{:.2}, limit ×{}): {}",
                    p95.ratio,
                    p95.ratio_low,
                    limits.p95,
                    p99.ratio,
                    p99.ratio_low,
                    limits.p99,
                    if latency_bad {
                        "bad"
                    } else if unresolved.is_empty() {
                        "ok"
                    } else {
                        "inconclusive"
                    },
                ));
                for why in &unresolved {
                    evidence.findings.push(format!(
                        "latency: {why}; inconclusive until the histograms have finer buckets"
                    ));
                }
                evidence.latency_ratio = Some(LatencyRatio::of(&p95, &p99));
                evidence.latency_unresolved = unresolved;
            }
            _ => {
                latency_judged = false;
                evidence
                    .findings
                    .push("latency: quantiles unavailable".to_owned());
            }
        }
    }

    if let Some(ceiling) = &analysis.error_ceiling {
        bad |= ceiling_check(&mut evidence, canary, ceiling);
    }

    evidence.verdict = if bad {
        Verdict::Bad
    } else if latency_judged {
        Verdict::Healthy
    } else {
        Verdict::Inconclusive
    };
    evidence
}

/// The seed's error ceiling, `base + per_p99_ratio × (canary p99 / stable
/// p99)` (the ratio 1 when latency was not compared): bad when the canary's
/// error rate is over it and a one-sided test of "the rate exceeds the
/// ceiling" rejects at p < 0.01. Adds its finding; whether it is bad.
fn ceiling_check(evidence: &mut Evidence, canary: &WindowStats, ceiling: &ErrorCeiling) -> bool {
    let ratio = evidence.latency_ratio.as_ref().map_or(1.0, |r| r.p99);
    let limit = (ceiling.base + ceiling.per_p99_ratio * ratio).clamp(0.0, 1.0);
    let n = canary.requests.max(1) as f64;
    let rate = canary.errors.min(canary.requests) as f64 / n;
    // Normal approximation under the null (rate = limit), the limit kept off
    // 0 and 1 so that the test stays defined.
    let at = limit.clamp(1e-6, 1.0 - 1e-6);
    let z = (rate - at) / (at * (1.0 - at) / n).sqrt();
    let z = if z.is_finite() { z } else { 0.0 };
    let p_value = upper_tail(z);
    let bad = rate > limit && p_value < SIGNIFICANCE;
    evidence.findings.push(format!(
        "error ceiling: canary {:.2} % vs {} + {} × {ratio:.2} (p99 ratio) = {:.2} % (z = {z:.2}, p = {p_value:.2e}): {}",
        rate * 100.0,
        ceiling.base,
        ceiling.per_p99_ratio,
        limit * 100.0,
        if bad { "bad" } else { "ok" },
    ));
    bad
}

/// The one-sided test of "canary error rate − stable error rate > margin".
fn error_test(canary: &WindowStats, stable: &WindowStats, margin_pp: f64) -> ErrorTest {
    let rate = |w: &WindowStats| w.errors.min(w.requests) as f64 / w.requests.max(1) as f64;
    let increase_pp = (rate(canary) - rate(stable)) * 100.0;
    // Agresti–Caffo: one error and one success more in each variant.
    let adjusted = |w: &WindowStats| {
        let n = w.requests as f64 + 2.0;
        ((w.errors.min(w.requests) as f64 + 1.0) / n, n)
    };
    let ((pc, nc), (ps, ns)) = (adjusted(canary), adjusted(stable));
    let se = (pc * (1.0 - pc) / nc + ps * (1.0 - ps) / ns).sqrt();
    let z = (pc - ps - margin_pp / 100.0) / se;
    let z = if z.is_finite() { z } else { 0.0 };
    ErrorTest {
        z,
        p_value: upper_tail(z),
        increase_pp,
    }
}

/// P(Z > z) for a standard normal Z.
fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' `erfcc`, relative
/// error below 1.2e-7 everywhere).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use weir_policy::model::LatencyRatios;

    use super::*;
    use crate::metrics_store::{Histogram, LATENCY_BOUNDS_MS};

    fn thresholds(min_samples: u32) -> Analysis {
        Analysis {
            max_error_rate_increase: 1.0,
            max_latency_ratio: LatencyRatios { p95: 1.2, p99: 1.5 },
            min_samples,
            segments: None,
            error_ceiling: None,
        }
    }

    fn window(requests: u64, errors: u64, latency: &[(f64, u64)]) -> WindowStats {
        let mut h = Histogram::with_bounds(LATENCY_BOUNDS_MS.to_vec());
        for &(ms, n) in latency {
            let slot = h
                .bounds
                .iter()
                .position(|&b| ms <= b)
                .unwrap_or(h.bounds.len());
            h.counts[slot] += n;
        }
        WindowStats {
            requests,
            errors,
            latency: h,
        }
    }

    #[test]
    fn normal_tail_matches_tables() {
        assert!((upper_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((upper_tail(1.959_964) - 0.025).abs() < 1e-6);
        assert!((upper_tail(2.326_348) - 0.01).abs() < 1e-6);
        assert!((upper_tail(-1.644_854) - 0.95).abs() < 1e-6);
        assert!(upper_tail(40.0) >= 0.0 && upper_tail(40.0) < 1e-300);
    }

    #[test]
    fn no_data_and_too_few_samples_are_inconclusive() {
        let e = analyse(
            &WindowStats::default(),
            &WindowStats::default(),
            None,
            &thresholds(10),
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Inconclusive);
        assert!(e.findings[0].contains("no traffic"), "{:?}", e.findings);
        // Terrible canary, but only 9 requests: still no verdict.
        let e = analyse(
            &window(9, 9, &[]),
            &window(1000, 0, &[]),
            None,
            &thresholds(10),
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Inconclusive);
        assert!(e.error_test.is_none());
        let e = analyse(
            &window(100, 0, &[]),
            &window(9, 0, &[]),
            None,
            &thresholds(10),
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn clearly_more_errors_is_bad() {
        let e = analyse(
            &window(200, 40, &[]),
            &window(5000, 50, &[]),
            None,
            &thresholds(200),
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Bad, "{:?}", e.findings);
        let test = e.error_test.unwrap();
        assert!((test.increase_pp - 19.0).abs() < 1e-9);
        assert!(test.p_value < 1e-6);
        // Every canary request failing, no stable one: bad, and finite figures.
        let e = analyse(
            &window(50, 50, &[]),
            &window(50, 0, &[]),
            None,
            &thresholds(50),
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Bad);
        assert!(serde_json::to_string(&e).is_ok());
    }

    #[test]
    fn equal_noise_and_small_or_insignificant_increases_are_not_bad() {
        // 1 % in both.
        let e = analyse(
            &window(500, 5, &[]),
            &window(50_000, 500, &[]),
            None,
            &thresholds(200),
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Healthy, "{:?}", e.findings);
        // +1.5 pp observed on 200 requests: over the limit but not significant.
        let e = analyse(
            &window(200, 5, &[]),
            &window(50_000, 500, &[]),
            None,
            &thresholds(200),
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Healthy, "{:?}", e.findings);
        // Significant, but within the allowed increase.
        let e = analyse(
            &window(100_000, 1_800, &[]),
            &window(100_000, 1_000, &[]),
            None,
            &thresholds(200),
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Healthy, "{:?}", e.findings);
    }

    #[test]
    fn latency_ratios_use_the_limits_and_a_floor() {
        let fast = [(8.0, 900), (20.0, 100)];
        let slow = [(200.0, 900), (400.0, 100)];
        let e = analyse(
            &window(1000, 0, &slow),
            &window(1000, 0, &fast),
            None,
            &thresholds(200),
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Bad, "{:?}", e.findings);
        assert!(e.latency_ratio.as_ref().unwrap().p95 > 1.2);
        let e = analyse(
            &window(1000, 0, &fast),
            &window(1000, 0, &fast),
            None,
            &thresholds(200),
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Healthy, "{:?}", e.findings);
        let ratio = e.latency_ratio.unwrap();
        assert!((ratio.p95 - 1.0).abs() < 1e-9 && (ratio.p99 - 1.0).abs() < 1e-9);
        // A stable latency of 0 is floored at 1 ms: the ratio stays finite.
        let mut zero = window(1000, 0, &[]);
        zero.latency = Histogram::with_bounds(vec![0.0, 1.0]);
        zero.latency.counts = vec![1000, 0, 0];
        let mut tiny = zero.clone();
        tiny.latency.counts = vec![0, 1000, 0];
        let e = analyse(&tiny, &zero, None, &thresholds(200), 10_000);
        let ratio = e.latency_ratio.unwrap();
        assert!(ratio.p99.is_finite() && ratio.p99 <= 1.0, "{ratio:?}");
        // Both under the floor: equal, not a canary "twice as fast" by noise.
        let mut half = zero.clone();
        half.latency = Histogram::with_bounds(vec![0.5, 1.0]);
        half.latency.counts = vec![1000, 0, 0];
        let e = analyse(&half, &tiny, None, &thresholds(200), 10_000);
        let ratio = e.latency_ratio.unwrap();
        assert_eq!((ratio.p95, ratio.p99), (1.0, 1.0), "{:?}", e.findings);
    }

    #[test]
    fn latency_that_buckets_cannot_resolve_is_inconclusive_never_healthy() {
        // Envoy's default buckets: (10, 25] ms holds both p95s, a ×1.2 limit
        // cannot be decided there, whether the canary is as fast or slower.
        let coarse = |ms: f64| {
            let mut w = window(1000, 0, &[]);
            w.latency = Histogram::with_bounds(vec![5.0, 10.0, 25.0, 50.0, 100.0]);
            w.latency.counts = vec![0, 0, 0, 0, 0, 0];
            let slot = w.latency.bounds.iter().position(|&b| ms <= b).unwrap();
            w.latency.counts[slot] = 1000;
            w
        };
        for canary_ms in [12.0, 24.0] {
            let e = analyse(
                &coarse(canary_ms),
                &coarse(12.0),
                None,
                &thresholds(200),
                10_000,
            );
            assert_eq!(e.verdict, Verdict::Inconclusive, "{:?}", e.findings);
            let why = &e.latency_unresolved[0];
            assert_eq!(why.quantile, "p95");
            assert_eq!(
                (why.canary_bucket.low_ms, why.canary_bucket.high_ms),
                (10.0, Some(25.0))
            );
            assert!(
                e.findings.iter().any(|f| f.contains("p95 not resolvable")),
                "{:?}",
                e.findings
            );
        }
        // Clearly bad errors still roll back.
        let mut failing = coarse(12.0);
        failing.errors = 300;
        let e = analyse(&failing, &coarse(12.0), None, &thresholds(200), 10_000);
        assert_eq!(e.verdict, Verdict::Bad);
        // So does a canary whole buckets slower.
        let e = analyse(&coarse(80.0), &coarse(12.0), None, &thresholds(200), 10_000);
        assert_eq!(e.verdict, Verdict::Bad, "{:?}", e.findings);
    }

    #[test]
    fn the_seeds_error_ceiling_rises_with_latency_degradation() {
        let mut analysis = thresholds(200);
        analysis.max_error_rate_increase = 10.0;
        analysis.error_ceiling = Some(ErrorCeiling {
            base: 0.03,
            per_p99_ratio: 0.02,
        });
        let fast = [(8.0, 1000)];
        // 8 % errors, same latency: over 3 % + 2 % × 1 = 5 %: bad, though
        // within the 10-point increase allowed over stable.
        let e = analyse(
            &window(1000, 80, &fast),
            &window(1000, 0, &fast),
            None,
            &analysis,
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Bad, "{:?}", e.findings);
        assert!(
            e.findings
                .iter()
                .any(|f| f.starts_with("error ceiling") && f.ends_with("bad")),
            "{:?}",
            e.findings
        );
        // 6 % errors: bad at the same latency (ceiling 5 %)…
        let e = analyse(
            &window(4000, 240, &fast),
            &window(1000, 0, &fast),
            None,
            &analysis,
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Bad, "{:?}", e.findings);
        // …but under the ceiling of a canary twice as slow (3 % + 2 % × 2 =
        // 7 %), whose latency the generous limits let pass.
        analysis.max_latency_ratio = LatencyRatios {
            p95: 10.0,
            p99: 10.0,
        };
        let e = analyse(
            &window(4000, 240, &[(16.0, 4000)]),
            &window(1000, 0, &fast),
            None,
            &analysis,
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Healthy, "{:?}", e.findings);
        // Noise over the ceiling on few requests is not bad.
        let e = analyse(
            &window(200, 12, &fast),
            &window(1000, 0, &fast),
            None,
            &analysis,
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Healthy, "{:?}", e.findings);
    }

    #[test]
    fn latency_needs_enough_observations_in_both() {
        let e = analyse(
            &window(1000, 0, &[(8.0, 100)]),
            &window(1000, 0, &[(8.0, 1000)]),
            None,
            &thresholds(200),
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Inconclusive, "{:?}", e.findings);
        // Clearly bad errors are bad even without latency.
        let e = analyse(
            &window(1000, 300, &[(8.0, 100)]),
            &window(1000, 0, &[(8.0, 1000)]),
            None,
            &thresholds(200),
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Bad);
        // No latency reported at all: judged on errors.
        let e = analyse(
            &window(1000, 0, &[]),
            &window(1000, 0, &[]),
            None,
            &thresholds(200),
            10_000,
        );
        assert_eq!(e.verdict, Verdict::Healthy);
        assert!(e.latency_ratio.is_none());
    }
}
