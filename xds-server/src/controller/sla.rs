//! SLA scores: how well each cluster meets the latency target of the
//! services that place it, smoothed so that routing does not flap.
//!
//! Per evaluation and cluster:
//! - target: the strictest `sla.p99_ms` of the services placing the cluster
//!   (as a placement's stable cluster or its canary); no target → score 1;
//! - measurement: the p99 of the cluster's latency histogram over the window,
//!   when it holds at least [`MIN_OBSERVATIONS`] observations;
//! - raw score: `max(0.2, min(1, 1 − (p99 − target) / target))`;
//! - smoothing: `smoothed += 0.3 · (raw − smoothed)` per evaluation with data;
//!   without data, `smoothed += 0.01 · (1 − smoothed)`: a slow drift back to
//!   1 (half-life ≈ 69 evaluations, ≈ 17 s at 4 per second), so a cluster that
//!   routing starved of traffic is eventually tried again, and missing data
//!   never makes the score jump;
//! - hysteresis: the published score (rounded to 0.01) changes only when the
//!   smoothed value is 0.05 or more away from it, or when the smoothed value
//!   rounds to a bound (1 or 0.2) the published one is not at yet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_policy::Policy;

use crate::metrics_store::MetricsStore;

/// Latency observations a window needs for its p99 to count.
pub(crate) const MIN_OBSERVATIONS: u64 = 20;
/// EWMA weight of a new measurement, per evaluation.
pub(crate) const ALPHA: f64 = 0.3;
/// Drift back toward 1 per evaluation without data.
pub(crate) const DECAY: f64 = 0.01;
/// How far the smoothed score must move from the published one.
pub(crate) const HYSTERESIS: f64 = 0.05;
/// The lowest score.
pub(crate) const FLOOR: f64 = 0.2;

/// One cluster's score and what it came from (for the admin API; persisted).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaStatus {
    /// The cluster.
    pub cluster: String,
    /// Its p99 target (ms), the strictest of the services placing it.
    pub target_p99_ms: Option<f64>,
    /// The last measured p99 (ms), if the last window had enough observations.
    pub p99_ms: Option<f64>,
    /// The last raw score, if measured.
    pub raw: Option<f64>,
    /// The smoothed score.
    pub smoothed: f64,
    /// The score in the feed.
    pub published: f64,
}

#[derive(Debug, Default)]
pub(crate) struct SlaScores {
    clusters: BTreeMap<String, SlaStatus>,
}

/// `max(0.2, min(1, 1 − (p99 − target) / target))`.
pub(crate) fn raw_score(p99_ms: f64, target_ms: f64) -> f64 {
    if !(p99_ms.is_finite() && target_ms.is_finite() && target_ms > 0.0) {
        return 1.0;
    }
    (1.0 - (p99_ms - target_ms) / target_ms).clamp(FLOOR, 1.0)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Each cluster's p99 target (ms): the strictest `sla.p99_ms` of the
/// services placing it, as a stable cluster or a canary.
pub(crate) fn targets(policy: &Policy) -> BTreeMap<String, f64> {
    let mut targets: BTreeMap<String, f64> = BTreeMap::new();
    for service in &policy.services {
        let Some(target) = service.sla.as_ref().map(|s| s.p99_ms) else {
            continue;
        };
        for placement in &service.placements {
            let canary = placement.canary.as_ref().map(|c| c.cluster.as_str());
            for cluster in std::iter::once(placement.cluster.as_str()).chain(canary) {
                let t = targets.entry(cluster.to_owned()).or_insert(target);
                *t = t.min(target);
            }
        }
    }
    targets
}

impl SlaScores {
    /// Follows the policy's clusters and targets; known clusters keep their scores.
    pub(crate) fn set_policy(&mut self, policy: &Policy) {
        let targets = targets(policy);
        let mut clusters = BTreeMap::new();
        for cluster in &policy.clusters {
            let mut status = self
                .clusters
                .remove(&cluster.name)
                .unwrap_or_else(|| SlaStatus {
                    cluster: cluster.name.clone(),
                    target_p99_ms: None,
                    p99_ms: None,
                    raw: None,
                    smoothed: 1.0,
                    published: 1.0,
                });
            status.target_p99_ms = targets.get(&cluster.name).copied();
            if status.target_p99_ms.is_none() {
                // No objective: nothing to fall short of.
                status.raw = None;
                status.smoothed = 1.0;
                status.published = 1.0;
            }
            clusters.insert(cluster.name.clone(), status);
        }
        self.clusters = clusters;
    }

    /// One evaluation: measures every cluster over the window and updates its score.
    pub(crate) fn update(&mut self, store: &MetricsStore, now_ms: u64, window_ms: u64) {
        for status in self.clusters.values_mut() {
            let Some(target) = status.target_p99_ms else {
                continue;
            };
            let window = store.window(&status.cluster, now_ms, window_ms);
            let p99 = (window.latency.count() >= MIN_OBSERVATIONS)
                .then(|| window.latency.quantile(0.99))
                .flatten()
                .filter(|p| p.is_finite());
            status.p99_ms = p99;
            status.raw = p99.map(|p| raw_score(p, target));
            status.smoothed = match status.raw {
                Some(raw) => status.smoothed + ALPHA * (raw - status.smoothed),
                None => status.smoothed + DECAY * (1.0 - status.smoothed),
            }
            .clamp(FLOOR, 1.0);
            let candidate = round2(status.smoothed);
            let at_bound =
                (candidate == 1.0 || candidate == FLOOR) && candidate != status.published;
            if (status.smoothed - status.published).abs() >= HYSTERESIS || at_bound {
                status.published = candidate.clamp(0.0, 1.0);
            }
        }
    }

    /// The published scores, by cluster.
    pub(crate) fn published(&self) -> BTreeMap<String, f64> {
        self.clusters
            .iter()
            .map(|(name, s)| (name.clone(), s.published))
            .collect()
    }

    pub(crate) fn status(&self) -> Vec<SlaStatus> {
        self.clusters.values().cloned().collect()
    }

    /// Puts persisted scores back (after a restart): the smoothed and
    /// published values of clusters that still exist and still have a target.
    pub(crate) fn restore(&mut self, saved: &[SlaStatus]) {
        for old in saved {
            let Some(status) = self.clusters.get_mut(&old.cluster) else {
                continue;
            };
            let valid = |x: f64| x.is_finite().then(|| x.clamp(FLOOR, 1.0));
            if let (Some(_), Some(smoothed), Some(published)) = (
                status.target_p99_ms,
                valid(old.smoothed),
                valid(old.published),
            ) {
                status.smoothed = smoothed;
                status.published = published;
                status.p99_ms = old.p99_ms;
                status.raw = old.raw;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_scores_follow_the_formula() {
        assert_eq!(raw_score(100.0, 250.0), 1.0);
        assert_eq!(raw_score(250.0, 250.0), 1.0);
        assert!((raw_score(300.0, 250.0) - 0.8).abs() < 1e-12);
        assert_eq!(raw_score(1000.0, 250.0), FLOOR);
        assert_eq!(raw_score(f64::NAN, 250.0), 1.0);
    }
}
