//! Segment verdicts: the canary judged within each device segment the
//! filter counts (`analysis.segments`), canary against stable on the same
//! segment, so that a release broken for one device type or region alone is
//! not averaged away by the cluster's totals.
//!
//! - Per dimension the `top` values with the most requests are judged on
//!   their own; the rest (and the filter's own `(other)`) are pooled into
//!   one `(other)` segment.
//! - A segment is judged when both its variants have `min_samples` requests
//!   in the window, by the whole's checks: the error test and the latency
//!   ratios.
//! - Many segments mean many tests, and some noisy one would fail by
//!   chance: the error tests' p-values are corrected by **Holm**'s step-down
//!   method (the family-wise error rate stays at 1 % across all segments),
//!   and the latency bounds are read at the **Bonferroni** confidence
//!   (`1 − 0.01/m` for `m` segments judged).
//! - A segment is *bad* when its error increase is over the limit and its
//!   Holm-adjusted p-value under 0.01, or a latency ratio is over its limit
//!   at that confidence. Latency its buckets cannot resolve is reported,
//!   not held against the canary: the whole's check already holds it.

use serde::{Deserialize, Serialize};
use weir_policy::model::{Analysis, OnBadSegment, Segments};
use weir_policy::segments::OTHER;

use super::latency::{self, Outcome};
use super::{
    ErrorTest, Evidence, LatencyRatio, SIGNIFICANCE, VariantStats, Verdict, error_test, upper_tail,
};
use crate::metrics_store::SegmentWindow;

/// Segments kept in the evidence at most (the bad ones first, then by
/// adjusted p-value): a decision is stored with its evidence.
pub(crate) const MAX_IN_EVIDENCE: usize = 16;

/// One segment judged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentVerdict {
    /// The dimension, as the policy writes it (`device_type`, `header:x-firmware`).
    pub dimension: String,
    /// The segment's value (`(other)`: the values pooled).
    pub value: String,
    /// The canary's figures in this segment.
    pub canary: VariantStats,
    /// Stable's.
    pub stable: VariantStats,
    /// The error test.
    pub error_test: ErrorTest,
    /// Its p-value after Holm's correction over every segment judged.
    pub adjusted_p: f64,
    /// The latency ratios, when both variants reported enough latencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ratio: Option<LatencyRatio>,
    /// `healthy` or `bad`.
    pub verdict: Verdict,
}

impl SegmentVerdict {
    /// `dimension=value`.
    pub fn name(&self) -> String {
        format!("{}={}", self.dimension, self.value)
    }
}

/// Judges every segment of `windows` and folds the outcome into
/// `evidence` (its verdict, findings and `segments`).
pub(crate) fn judge(
    evidence: &mut Evidence,
    windows: Vec<SegmentWindow>,
    analysis: &Analysis,
    segments: &Segments,
) {
    let min = u64::from(analysis.min_samples.max(1));
    let pooled = pool(windows, usize::try_from(segments.top).unwrap_or(usize::MAX));
    let (judged, too_few): (Vec<_>, Vec<_>) = pooled
        .into_iter()
        .partition(|w| w.canary.requests >= min && w.stable.requests >= min);
    let mut verdicts = verdicts(&judged, analysis);
    let bad = verdicts
        .iter()
        .filter(|v| v.verdict == Verdict::Bad)
        .count();
    evidence
        .findings
        .push(summary(&verdicts, too_few.len(), bad));
    verdicts.sort_by(|a, b| {
        (b.verdict == Verdict::Bad)
            .cmp(&(a.verdict == Verdict::Bad))
            .then(a.adjusted_p.total_cmp(&b.adjusted_p))
    });
    for verdict in verdicts.iter().filter(|v| v.verdict == Verdict::Bad) {
        let holding = match segments.on_bad {
            OnBadSegment::Rollback => "",
            OnBadSegment::Hold => "; holding the canary at its step (segments.on_bad: hold)",
        };
        evidence.findings.push(format!(
            "segment {}: {}: bad{holding}",
            verdict.name(),
            figures(verdict)
        ));
    }
    if bad > 0 {
        evidence.verdict = match (segments.on_bad, evidence.verdict) {
            (OnBadSegment::Rollback, _) | (_, Verdict::Bad) => Verdict::Bad,
            (OnBadSegment::Hold, _) => Verdict::Inconclusive,
        };
    }
    verdicts.truncate(MAX_IN_EVIDENCE);
    evidence.segments = verdicts;
}

/// Per dimension: the `top` values with the most requests, and the rest
/// pooled as `(other)`.
fn pool(mut windows: Vec<SegmentWindow>, top: usize) -> Vec<SegmentWindow> {
    let requests = |w: &SegmentWindow| w.canary.requests.saturating_add(w.stable.requests);
    windows.sort_by(|a, b| {
        a.dimension
            .cmp(&b.dimension)
            .then((a.value == OTHER).cmp(&(b.value == OTHER)))
            .then(requests(b).cmp(&requests(a)))
            .then(a.value.cmp(&b.value))
    });
    let mut out: Vec<SegmentWindow> = Vec::new();
    let mut kept = 0;
    for window in windows {
        let new_dimension = out.last().is_none_or(|w| w.dimension != window.dimension);
        if new_dimension {
            kept = 0;
        }
        if kept < top && window.value != OTHER {
            kept += 1;
            out.push(window);
            continue;
        }
        let other = out
            .iter_mut()
            .rfind(|w| w.dimension == window.dimension && w.value == OTHER);
        match other {
            Some(other) => {
                other.canary.add(&window.canary);
                other.stable.add(&window.stable);
            }
            None => out.push(SegmentWindow {
                value: OTHER.to_owned(),
                ..window
            }),
        }
    }
    out
}

/// Every judged segment's verdict, the corrections applied.
fn verdicts(judged: &[SegmentWindow], analysis: &Analysis) -> Vec<SegmentVerdict> {
    let m = judged.len();
    let tests: Vec<ErrorTest> = judged
        .iter()
        .map(|w| error_test(&w.canary, &w.stable, analysis.max_error_rate_increase))
        .collect();
    let adjusted = holm(&tests.iter().map(|t| t.p_value).collect::<Vec<_>>());
    let z = z_for(SIGNIFICANCE / m.max(1) as f64);
    let min = u64::from(analysis.min_samples.max(1));
    judged
        .iter()
        .zip(tests)
        .zip(adjusted)
        .map(|((window, test), adjusted_p)| {
            let errors_bad =
                test.increase_pp > analysis.max_error_rate_increase && adjusted_p < SIGNIFICANCE;
            let latency = latency_of(window, analysis, z, min);
            let latency_bad = latency.as_ref().is_some_and(|(_, bad)| *bad);
            SegmentVerdict {
                dimension: window.dimension.clone(),
                value: window.value.clone(),
                canary: VariantStats::of(&window.canary),
                stable: VariantStats::of(&window.stable),
                error_test: test,
                adjusted_p,
                latency_ratio: latency.map(|(ratio, _)| ratio),
                verdict: if errors_bad || latency_bad {
                    Verdict::Bad
                } else {
                    Verdict::Healthy
                },
            }
        })
        .collect()
}

/// The segment's latency ratios and whether one is over its limit at the
/// corrected confidence; `None` without enough latencies in both.
fn latency_of(
    window: &SegmentWindow,
    analysis: &Analysis,
    z: f64,
    min: u64,
) -> Option<(LatencyRatio, bool)> {
    let (canary, stable) = (&window.canary.latency, &window.stable.latency);
    if canary.count() < min || stable.count() < min {
        return None;
    }
    let limits = &analysis.max_latency_ratio;
    let p95 = latency::judge("p95", (0.95, limits.p95, z), canary, stable)?;
    let p99 = latency::judge("p99", (0.99, limits.p99, z), canary, stable)?;
    let bad = p95.outcome == Outcome::Bad || p99.outcome == Outcome::Bad;
    Some((LatencyRatio::of(&p95, &p99), bad))
}

/// Holm's step-down adjusted p-values, in the order given: the `i`-th
/// smallest of `m` is multiplied by `m − i`, made non-decreasing, capped at 1.
fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![1.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        let value = (p[i] * (m - rank) as f64).min(1.0);
        running = running.max(value);
        adjusted[i] = running;
    }
    adjusted
}

/// The `z` with `P(Z > z) = p` for a standard normal `Z` (bisection on the
/// tail; 0 < p < 0.5).
fn z_for(p: f64) -> f64 {
    let (mut low, mut high) = (0.0_f64, 40.0_f64);
    for _ in 0..100 {
        let mid = (low + high) / 2.0;
        if upper_tail(mid) > p {
            low = mid;
        } else {
            high = mid;
        }
    }
    (low + high) / 2.0
}

fn figures(v: &SegmentVerdict) -> String {
    let latency = v.latency_ratio.as_ref().map_or(String::new(), |r| {
        format!(
            ", latency p95 ×{:.2} (at least ×{:.2}), p99 ×{:.2} (at least ×{:.2})",
            r.p95, r.p95_low, r.p99, r.p99_low
        )
    });
    format!(
        "errors canary {:.2} % of {} vs stable {:.2} % of {} ({:+.2} pp, Holm-adjusted p = {:.2e}){latency}",
        v.canary.error_rate * 100.0,
        v.canary.requests,
        v.stable.error_rate * 100.0,
        v.stable.requests,
        v.error_test.increase_pp,
        v.adjusted_p,
    )
}

fn summary(verdicts: &[SegmentVerdict], too_few: usize, bad: usize) -> String {
    let skipped = match too_few {
        0 => String::new(),
        n => format!(", {n} with too few requests to judge"),
    };
    let lowest = verdicts
        .iter()
        .min_by(|a, b| a.adjusted_p.total_cmp(&b.adjusted_p))
        .map_or(String::new(), |v| {
            format!(
                " (lowest Holm-adjusted p = {:.2e}, {})",
                v.adjusted_p,
                v.name()
            )
        });
    let outcome = match bad {
        0 => "none bad".to_owned(),
        n => format!("{n} bad"),
    };
    format!(
        "segments: {} judged{skipped}; {outcome}{lowest}",
        verdicts.len()
    )
}

#[cfg(test)]
mod tests {
    use weir_policy::model::LatencyRatios;

    use super::*;
    use crate::metrics_store::{Histogram, WindowStats};

    fn analysis() -> Analysis {
        Analysis {
            max_error_rate_increase: 1.0,
            max_latency_ratio: LatencyRatios { p95: 1.5, p99: 2.0 },
            min_samples: 40,
            segments: Some(segments(8, OnBadSegment::Rollback)),
            error_ceiling: None,
        }
    }

    fn segments(top: u32, on_bad: OnBadSegment) -> Segments {
        Segments {
            by: vec!["device_type".into()],
            top,
            on_bad,
            attributes: Default::default(),
        }
    }

    fn stats(requests: u64, errors: u64) -> WindowStats {
        WindowStats {
            requests,
            errors,
            latency: Histogram::default(),
        }
    }

    fn window(value: &str, canary: (u64, u64), stable: (u64, u64)) -> SegmentWindow {
        SegmentWindow {
            dimension: "device_type".into(),
            value: value.into(),
            canary: stats(canary.0, canary.1),
            stable: stats(stable.0, stable.1),
        }
    }

    fn healthy_evidence() -> Evidence {
        let mut e = Evidence::none(10_000);
        e.verdict = Verdict::Healthy;
        e.findings.clear();
        e
    }

    #[test]
    fn holm_adjusts_step_down_and_keeps_order() {
        let adjusted = holm(&[0.01, 0.04, 0.03, 0.005]);
        // Sorted: 0.005×4, 0.01×3, 0.03×2, 0.04×1 → 0.02, 0.03, 0.06, 0.06.
        let expected = [0.03, 0.06, 0.06, 0.02];
        for (a, e) in adjusted.iter().zip(expected) {
            assert!((a - e).abs() < 1e-12, "{adjusted:?}");
        }
        assert_eq!(holm(&[0.9, 0.8]), vec![1.0, 1.0]);
        assert!(holm(&[]).is_empty());
    }

    #[test]
    fn z_inverts_the_normal_tail() {
        assert!((z_for(0.01) - 2.326_348).abs() < 1e-4);
        assert!((z_for(0.001) - 3.090_232).abs() < 1e-4);
    }

    #[test]
    fn a_segment_failing_alone_is_bad_and_named() {
        // Cameras: 5 % of requests, the canary fails a sixth of theirs.
        let windows = vec![
            window("sensor", (950, 5), (9_500, 48)),
            window("camera", (60, 10), (500, 2)),
        ];
        let mut e = healthy_evidence();
        judge(
            &mut e,
            windows,
            &analysis(),
            &segments(8, OnBadSegment::Rollback),
        );
        assert_eq!(e.verdict, Verdict::Bad, "{:?}", e.findings);
        assert_eq!(e.segments[0].name(), "device_type=camera");
        assert!(
            e.findings
                .iter()
                .any(|f| f.starts_with("segment device_type=camera:") && f.ends_with("bad")),
            "{:?}",
            e.findings
        );
        // With `hold`, the canary only holds.
        let mut e = healthy_evidence();
        let windows = vec![window("camera", (60, 10), (500, 2))];
        judge(
            &mut e,
            windows,
            &analysis(),
            &segments(8, OnBadSegment::Hold),
        );
        assert_eq!(e.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn many_noisy_segments_are_not_bad_by_chance() {
        // Twenty segments, each with 2 % errors in both variants, one a
        // little worse by chance (p ≈ 0.005 uncorrected): not bad.
        let mut windows: Vec<SegmentWindow> = (0..19)
            .map(|i| window(&format!("t{i}"), (200, 4), (2_000, 40)))
            .collect();
        windows.push(window("unlucky", (200, 14), (2_000, 40)));
        let mut e = healthy_evidence();
        judge(
            &mut e,
            windows,
            &analysis(),
            &segments(32, OnBadSegment::Rollback),
        );
        assert_eq!(e.verdict, Verdict::Healthy, "{:?}", e.findings);
        let unlucky = e.segments.iter().find(|s| s.value == "unlucky").unwrap();
        assert!(unlucky.error_test.p_value < SIGNIFICANCE, "{unlucky:?}");
        assert!(unlucky.adjusted_p >= SIGNIFICANCE, "{unlucky:?}");
    }

    #[test]
    fn past_top_values_are_pooled_and_small_segments_skipped() {
        let windows = vec![
            window("a", (500, 0), (500, 0)),
            window("b", (400, 0), (400, 0)),
            window("c", (30, 15), (30, 0)),
            window("d", (30, 15), (30, 0)),
            window(OTHER, (10, 5), (10, 0)),
            window("tiny", (5, 5), (5, 0)),
        ];
        let pooled = pool(windows.clone(), 2);
        let values: Vec<&str> = pooled.iter().map(|w| w.value.as_str()).collect();
        assert_eq!(values, ["a", "b", OTHER]);
        let other = &pooled[2];
        assert_eq!((other.canary.requests, other.canary.errors), (75, 40));
        let mut e = healthy_evidence();
        judge(
            &mut e,
            windows,
            &analysis(),
            &segments(2, OnBadSegment::Rollback),
        );
        assert_eq!(e.verdict, Verdict::Bad, "the pooled segment fails");
        assert_eq!(e.segments[0].value, OTHER);
        // Every value on its own: the small ones have too few requests.
        let mut e = healthy_evidence();
        let windows = vec![window("c", (30, 15), (30, 0))];
        judge(
            &mut e,
            windows,
            &analysis(),
            &segments(8, OnBadSegment::Rollback),
        );
        assert_eq!(e.verdict, Verdict::Healthy);
        assert!(
            e.findings[0].contains("1 with too few requests"),
            "{:?}",
            e.findings
        );
    }
}
