//! The live feed: the numbers `weir` moves while a policy stays the same —
//! canary weights, cluster SLA scores and the concurrency limit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Policy;
use crate::split::BUCKETS;
use crate::validate::Invalid;

/// The live feed that accompanies a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Feed {
    /// Canary weight in basis points (0–10,000), by canary cluster; a canary
    /// missing here is at its first step.
    #[serde(default)]
    pub canary_weights: BTreeMap<String, u32>,
    /// Share of a canary's placement mirrored to it, in basis points, by
    /// canary cluster: its mirror phase. None when missing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub canary_mirrors: BTreeMap<String, u32>,
    /// SLA score (0–1, 1 = meeting its target), by cluster; 1 when missing.
    #[serde(default)]
    pub sla_scores: BTreeMap<String, f64>,
    /// Round-trip times measured from a client region to a cluster, in
    /// milliseconds, by region and cluster: the geo score uses them instead
    /// of the policy's table, which stays the fallback.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rtt_ms: BTreeMap<String, BTreeMap<String, f64>>,
    /// The concurrency limit in force; the policy's when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u32>,
}

impl Feed {
    /// The feed a policy starts with: each canary at its first step, or at
    /// weight 0 and mirrored if it has a mirror phase; every cluster's SLA
    /// score neutral (1); the configured limit.
    pub fn initial(policy: &Policy) -> Self {
        let canaries = policy
            .services
            .iter()
            .flat_map(|service| &service.placements)
            .filter_map(|placement| placement.canary.as_ref());
        let canary_weights = canaries
            .clone()
            .map(|canary| {
                let first = match canary.mirror {
                    Some(_) => 0.0,
                    None => canary.steps.first().copied().unwrap_or(0.0),
                };
                (canary.cluster.clone(), percent_to_basis_points(first))
            })
            .collect();
        let canary_mirrors = canaries
            .filter_map(|canary| {
                let mirror = canary.mirror.as_ref()?;
                Some((
                    canary.cluster.clone(),
                    percent_to_basis_points(mirror.percent),
                ))
            })
            .collect();
        let sla_scores = policy
            .clusters
            .iter()
            .map(|c| (c.name.clone(), 1.0))
            .collect();
        Self {
            canary_weights,
            canary_mirrors,
            rtt_ms: BTreeMap::new(),
            sla_scores,
            concurrency_limit: Some(policy.admission.concurrency_limit),
        }
    }

    /// Checks the feed against the policy it accompanies.
    pub fn validate(&self, policy: &Policy) -> Vec<Invalid> {
        let mut errors = Vec::new();
        let canaries: Vec<&str> = policy
            .services
            .iter()
            .flat_map(|s| &s.placements)
            .filter_map(|p| p.canary.as_ref().map(|c| c.cluster.as_str()))
            .collect();
        let shares = self
            .canary_weights
            .iter()
            .map(|(cluster, weight)| ("canary_weights", cluster, weight))
            .chain(
                self.canary_mirrors
                    .iter()
                    .map(|(cluster, share)| ("canary_mirrors", cluster, share)),
            );
        for (field, cluster, &weight) in shares {
            let path = format!("feed.{field}.{cluster}");
            if !canaries.contains(&cluster.as_str()) {
                errors.push(Invalid {
                    path,
                    message: format!("`{cluster}` is not the canary of any placement"),
                });
            } else if weight > BUCKETS {
                errors.push(Invalid {
                    path,
                    message: format!("a weight is at most {BUCKETS} basis points, not {weight}"),
                });
            }
        }
        for (cluster, &score) in &self.sla_scores {
            let path = format!("feed.sla_scores.{cluster}");
            if !policy.clusters.iter().any(|c| &c.name == cluster) {
                errors.push(Invalid {
                    path,
                    message: format!("unknown cluster `{cluster}`"),
                });
            } else if !(0.0..=1.0).contains(&score) {
                errors.push(Invalid {
                    path,
                    message: format!("a score is between 0 and 1, not {score}"),
                });
            }
        }
        let regions = policy.region_names();
        for (region, row) in &self.rtt_ms {
            if !regions.contains(region.as_str()) {
                errors.push(Invalid {
                    path: format!("feed.rtt_ms.{region}"),
                    message: format!("unknown region `{region}`"),
                });
                continue;
            }
            for (cluster, &ms) in row {
                let path = format!("feed.rtt_ms.{region}.{cluster}");
                if !policy.clusters.iter().any(|c| &c.name == cluster) {
                    errors.push(Invalid {
                        path,
                        message: format!("unknown cluster `{cluster}`"),
                    });
                } else if !(0.0..=MAX_RTT_MS).contains(&ms) {
                    errors.push(Invalid {
                        path,
                        message: format!("an RTT is between 0 and {MAX_RTT_MS} ms, not {ms}"),
                    });
                }
            }
        }
        if self.concurrency_limit == Some(0) {
            errors.push(Invalid {
                path: "feed.concurrency_limit".into(),
                message: "must be at least 1".into(),
            });
        }
        errors
    }
}

/// The largest round-trip time a feed may carry, in milliseconds.
pub const MAX_RTT_MS: f64 = 600_000.0;

/// A percentage (0–100) in basis points (0–10,000), rounded to the nearest.
pub fn percent_to_basis_points(percent: f64) -> u32 {
    if percent.is_finite() {
        (percent.clamp(0.0, 100.0) * 100.0).round() as u32
    } else {
        0
    }
}
