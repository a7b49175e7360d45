//! Envoy's connect times to each cluster, by the region of the Envoys that
//! measured them: what the measured RTT matrix is made of.
//!
//! Only the policy's clusters are kept, and at most [`MAX_PAIRS`] (region,
//! cluster) pairs: a source inventing region names cannot grow the store.

use std::collections::HashMap;

use super::{Counts, Histogram, Series};

/// (region, cluster) pairs kept at most.
pub const MAX_PAIRS: usize = 1024;
/// The longest region name kept.
const MAX_REGION_LEN: usize = 64;

/// The connect times one region's Envoys measured to one cluster in a window.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectWindow {
    /// The region of the Envoys that measured them.
    pub region: String,
    /// The cluster connected to.
    pub cluster: String,
    /// Connections made.
    pub connects: u64,
    /// Their connect times (ms).
    pub times: Histogram,
}

#[derive(Debug, Default)]
pub(super) struct ConnectTimes {
    series: HashMap<(String, String), Series>,
}

impl ConnectTimes {
    /// Adds `counts` (connections, and their times) measured from `region`
    /// to `cluster`; `false` if refused (a cluster `known` does not name, a
    /// region name too long, or one pair too many).
    pub(super) fn record(
        &mut self,
        (region, cluster): (&str, &str),
        known: impl Fn(&str) -> bool,
        (key, max_slots): (u64, u64),
        counts: Counts<'_>,
    ) -> bool {
        if region.is_empty() || region.len() > MAX_REGION_LEN || !known(cluster) {
            return false;
        }
        let pair = (region.to_owned(), cluster.to_owned());
        if self.series.len() >= MAX_PAIRS && !self.series.contains_key(&pair) {
            return false;
        }
        self.series
            .entry(pair)
            .or_default()
            .record(key, max_slots, counts);
        true
    }

    /// Every pair's connect times in the slots `(after, until]`, sorted.
    pub(super) fn windows(&self, after: u64, until: u64) -> Vec<ConnectWindow> {
        let mut windows: Vec<ConnectWindow> = self
            .series
            .iter()
            .filter_map(|((region, cluster), series)| {
                let stats = series.window(after, until)?;
                Some(ConnectWindow {
                    region: region.clone(),
                    cluster: cluster.clone(),
                    connects: stats.requests,
                    times: stats.latency,
                })
            })
            .collect();
        windows.sort_by(|a, b| (&a.region, &a.cluster).cmp(&(&b.region, &b.cluster)));
        windows
    }

    pub(super) fn prune(&mut self, keep_after: u64) {
        for series in self.series.values_mut() {
            series.prune(keep_after);
        }
        self.series.retain(|_, series| !series.slots.is_empty());
    }

    pub(super) fn len(&self) -> usize {
        self.series.len()
    }
}
