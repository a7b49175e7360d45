//! The policy's RTT table, indexed: from any region it names to any other,
//! the table's entry (given in either direction), 0 within a region, else
//! `regions.default_rtt_ms`.

use std::collections::HashMap;

use crate::model::Policy;

/// The RTTs of a policy's table between every pair of its regions.
#[derive(Clone, Debug)]
pub struct RttTable {
    /// Every region the policy names; a region is found here once, then
    /// RTTs are read by index.
    regions: Vec<String>,
    /// By index: from, then to.
    rtt: Vec<Vec<Option<f64>>>,
    default_rtt_ms: Option<f64>,
}

impl RttTable {
    /// The table of a policy.
    pub fn of(policy: &Policy) -> Self {
        let mut table: HashMap<&str, HashMap<&str, f64>> = HashMap::new();
        for (from, row) in &policy.regions.rtt_ms {
            for (to, &ms) in row {
                table.entry(from).or_default().insert(to, ms);
                table.entry(to).or_default().entry(from).or_insert(ms);
            }
        }
        let regions: Vec<String> = policy
            .region_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let default_rtt_ms = policy.regions.default_rtt_ms;
        let rtt = regions
            .iter()
            .map(|from| {
                regions
                    .iter()
                    .map(|to| {
                        let listed = table
                            .get(from.as_str())
                            .and_then(|row| row.get(to.as_str()));
                        listed
                            .copied()
                            .or(if from == to { Some(0.0) } else { None })
                            .or(default_rtt_ms)
                    })
                    .collect()
            })
            .collect();
        Self {
            regions,
            rtt,
            default_rtt_ms,
        }
    }

    /// Every region the policy names, in order: what indexes mean.
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    /// The index of a region the policy names.
    pub fn index(&self, region: &str) -> Option<usize> {
        self.regions.iter().position(|r| r == region)
    }

    /// The RTT between two regions, by index.
    pub(super) fn by_index(&self, from: usize, to: usize) -> Option<f64> {
        self.rtt
            .get(from)
            .and_then(|row| row.get(to))
            .copied()
            .flatten()
    }

    /// The RTT for a client in a region the policy does not name.
    pub(super) fn default_rtt_ms(&self) -> Option<f64> {
        self.default_rtt_ms
    }

    /// The RTT from region `from` to region `to`, as routing reads it: a
    /// `from` the policy does not name gets the default.
    pub fn between(&self, from: &str, to: &str) -> Option<f64> {
        match (self.index(from), self.index(to)) {
            (Some(from), Some(to)) => self.by_index(from, to),
            (None, Some(_)) => self.default_rtt_ms,
            _ => None,
        }
    }
}
