//! The measured RTT matrix: from each client region to each cluster, what
//! the region's Envoys measure when they connect to it, smoothed so that
//! routing does not flap. The policy's table stays the fallback.
//!
//! Per evaluation and (region, cluster) pair of the policy:
//! - measurement: the median connect time over [`RTT_WINDOW_MS`], when the
//!   window holds at least [`MIN_CONNECTS`] connections (Envoy reports
//!   `cluster.upstream_cx_connect_ms`; its region comes from the report's
//!   `cloud.region` resource attribute). A TCP connect takes one round
//!   trip; to a TLS upstream it includes the handshake too;
//! - smoothing: `smoothed += 0.3 · (median − smoothed)` per evaluation with
//!   data, starting at the first median;
//! - hysteresis: the published RTT (rounded to 0.1 ms) changes only when the
//!   smoothed one is [`MIN_MOVE_MS`] and [`MIN_MOVE_SHARE`] of it away;
//! - staleness: connections are made rarely where they are reused, and not
//!   at all to a cluster routing left, so a measurement holds until none came
//!   for [`STALE_MS`]; then the pair falls back to the table (and the
//!   cluster, if it won traffic back, is measured again).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use weir_policy::Policy;
use weir_policy::feed::MAX_RTT_MS;

use crate::metrics_store::MetricsStore;

/// The span of connect times each measurement reads.
pub(crate) const RTT_WINDOW_MS: u64 = 10_000;
/// Connections a window needs for its median to count.
pub(crate) const MIN_CONNECTS: u64 = 5;
/// EWMA weight of a new measurement, per evaluation.
pub(crate) const ALPHA: f64 = 0.3;
/// How far (ms) the smoothed RTT must move from the published one …
pub(crate) const MIN_MOVE_MS: f64 = 2.0;
/// … and by what share of it.
pub(crate) const MIN_MOVE_SHARE: f64 = 0.1;
/// How long a measurement holds without new connections: a cluster that
/// lost its traffic to a slow connect gets no more connections to measure,
/// and is tried again on the table's RTT after this.
pub(crate) const STALE_MS: u64 = 60_000;

/// One pair's measured RTT (for the admin API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RttStatus {
    /// The client region (of the Envoys that measured it).
    pub region: String,
    /// The cluster.
    pub cluster: String,
    /// The last window's median connect time (ms), if it had enough connections.
    pub median_ms: Option<f64>,
    /// Connections in the last window.
    pub connects: u64,
    /// The smoothed RTT (ms).
    pub smoothed_ms: f64,
    /// The RTT in the feed (ms).
    pub published_ms: f64,
    /// When the last measurement came (ms since the epoch).
    pub measured_at_ms: u64,
}

#[derive(Debug, Default)]
pub(crate) struct MeasuredRtt {
    regions: BTreeSet<String>,
    clusters: BTreeSet<String>,
    pairs: BTreeMap<(String, String), RttStatus>,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

impl MeasuredRtt {
    /// Follows the policy's regions and clusters; known pairs keep their RTT.
    pub(crate) fn set_policy(&mut self, policy: &Policy) {
        self.regions = policy
            .region_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        self.clusters = policy.clusters.iter().map(|c| c.name.clone()).collect();
        let (regions, clusters) = (&self.regions, &self.clusters);
        self.pairs
            .retain(|(region, cluster), _| regions.contains(region) && clusters.contains(cluster));
    }

    /// One evaluation: measures every pair with connections in the window.
    pub(crate) fn update(&mut self, store: &MetricsStore, now_ms: u64) {
        for status in self.pairs.values_mut() {
            status.median_ms = None;
            status.connects = 0;
        }
        for window in store.connect_windows(now_ms, RTT_WINDOW_MS) {
            if !self.regions.contains(&window.region) || !self.clusters.contains(&window.cluster) {
                continue;
            }
            let median = (window.connects >= MIN_CONNECTS)
                .then(|| window.times.quantile(0.5))
                .flatten()
                .filter(|ms| ms.is_finite() && (0.0..=MAX_RTT_MS).contains(ms));
            let key = (window.region.clone(), window.cluster.clone());
            let Some(median) = median else {
                if let Some(status) = self.pairs.get_mut(&key) {
                    status.connects = window.connects;
                }
                continue;
            };
            let status = self.pairs.entry(key).or_insert_with(|| RttStatus {
                region: window.region.clone(),
                cluster: window.cluster.clone(),
                median_ms: None,
                connects: 0,
                smoothed_ms: median,
                published_ms: round1(median),
                measured_at_ms: now_ms,
            });
            status.median_ms = Some(median);
            status.connects = window.connects;
            status.measured_at_ms = now_ms;
            status.smoothed_ms += ALPHA * (median - status.smoothed_ms);
            let moved = (status.smoothed_ms - status.published_ms).abs();
            if moved >= MIN_MOVE_MS && moved >= MIN_MOVE_SHARE * status.published_ms {
                status.published_ms = round1(status.smoothed_ms);
            }
        }
        self.pairs
            .retain(|_, status| now_ms.saturating_sub(status.measured_at_ms) < STALE_MS);
    }

    /// Takes back RTTs published before this process ran — the saved feed's,
    /// at start-up or when this replica takes over the lead — for the
    /// policy's pairs: each is served at once, smoothing resumes from it, and
    /// it counts as measured now, so it holds for [`STALE_MS`] unless
    /// connections refresh it. Without this, routing would fall back to the
    /// table on every restart and failover, and move devices twice.
    pub(crate) fn restore(
        &mut self,
        published: &BTreeMap<String, BTreeMap<String, f64>>,
        now_ms: u64,
    ) {
        for (region, row) in published {
            if !self.regions.contains(region) {
                continue;
            }
            for (cluster, &ms) in row {
                if !self.clusters.contains(cluster) || !(0.0..=MAX_RTT_MS).contains(&ms) {
                    continue;
                }
                self.pairs
                    .entry((region.clone(), cluster.clone()))
                    .or_insert_with(|| RttStatus {
                        region: region.clone(),
                        cluster: cluster.clone(),
                        median_ms: None,
                        connects: 0,
                        smoothed_ms: ms,
                        published_ms: ms,
                        measured_at_ms: now_ms,
                    });
            }
        }
    }

    /// The published RTTs, by region and cluster: what the feed carries.
    pub(crate) fn published(&self) -> BTreeMap<String, BTreeMap<String, f64>> {
        let mut matrix: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for ((region, cluster), status) in &self.pairs {
            matrix
                .entry(region.clone())
                .or_default()
                .insert(cluster.clone(), status.published_ms);
        }
        matrix
    }

    /// Every measured pair, for the admin API.
    pub(crate) fn status(&self) -> Vec<RttStatus> {
        self.pairs.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics_store::{Counts, LATENCY_BOUNDS_MS};

    fn policy() -> Policy {
        crate::policy_source::parse(
            std::path::Path::new("iot-fleet.yaml"),
            include_str!("../../../examples/policies/iot-fleet.yaml"),
        )
        .unwrap()
    }

    /// `n` connections of `ms` each, from `region` to `cluster`.
    fn connects(
        store: &mut MetricsStore,
        at_ms: u64,
        (region, cluster): (&str, &str),
        n: u64,
        ms: f64,
    ) {
        let bounds = LATENCY_BOUNDS_MS;
        let mut counts = vec![0; bounds.len() + 1];
        counts[bounds.iter().position(|&b| ms <= b).unwrap_or(bounds.len())] = n;
        let counts = Counts {
            requests: n,
            errors: 0,
            latency: Some((&bounds[..], &counts[..])),
        };
        assert!(store.record_connect(region, cluster, at_ms, counts));
    }

    fn store() -> MetricsStore {
        let mut store = MetricsStore::new(60_000);
        store.know_clusters(policy().clusters.iter().map(|c| c.name.clone()));
        store
    }

    #[test]
    fn a_rise_in_connect_time_is_published_smoothed_and_without_flapping() {
        let policy = policy();
        let mut rtt = MeasuredRtt::default();
        rtt.set_policy(&policy);
        let mut store = store();
        let start = 1_000_000;
        let pair = ("eu-west", "ingest-eu");
        connects(&mut store, start, pair, 10, 5.0);
        rtt.update(&store, start);
        let first = rtt.published()["eu-west"]["ingest-eu"];
        assert!((4.0..=6.0).contains(&first), "{first}");

        // Noise within the hysteresis leaves the feed alone.
        connects(&mut store, start + 1_000, pair, 10, 5.6);
        rtt.update(&store, start + 1_000);
        assert_eq!(rtt.published()["eu-west"]["ingest-eu"], first);

        // A sustained rise to 150 ms is followed within a few evaluations.
        let mut at = start + 2_000;
        let mut followed = None;
        for i in 0..60 {
            connects(&mut store, at, pair, 20, 150.0);
            rtt.update(&store, at);
            if rtt.published()["eu-west"]["ingest-eu"] > 100.0 {
                followed = Some(i);
                break;
            }
            at += 250;
        }
        let followed = followed.expect("the rise was never published");
        assert!(followed <= 20, "published after {followed} evaluations");
        let status = &rtt.status()[0];
        assert!(
            status.median_ms.is_some() && status.connects > 0,
            "{status:?}"
        );
    }

    #[test]
    fn too_few_connections_unknown_pairs_and_stale_measurements_are_not_published() {
        let policy = policy();
        let mut rtt = MeasuredRtt::default();
        rtt.set_policy(&policy);
        let mut store = store();
        let start = 1_000_000;
        connects(
            &mut store,
            start,
            ("eu-west", "ingest-us"),
            MIN_CONNECTS - 1,
            80.0,
        );
        connects(&mut store, start, ("mars", "ingest-us"), 50, 80.0);
        rtt.update(&store, start);
        assert!(rtt.published().is_empty(), "{:?}", rtt.published());

        connects(&mut store, start, ("eu-west", "ingest-us"), 1, 80.0);
        rtt.update(&store, start);
        assert!((70.0..=90.0).contains(&rtt.published()["eu-west"]["ingest-us"]));
        // No connections for a while: the measurement holds, then goes.
        let empty = MetricsStore::new(60_000);
        rtt.update(&empty, start + STALE_MS - 1);
        assert_eq!(rtt.published().len(), 1);
        rtt.update(&empty, start + STALE_MS);
        assert!(rtt.published().is_empty());
    }

    #[test]
    fn a_policy_without_the_pairs_region_or_cluster_forgets_it() {
        let mut policy = policy();
        let mut rtt = MeasuredRtt::default();
        rtt.set_policy(&policy);
        let mut store = store();
        connects(&mut store, 1_000, ("ap-south", "ingest-ap"), 10, 3.0);
        rtt.update(&store, 1_000);
        assert_eq!(rtt.status().len(), 1);
        policy.clusters.retain(|c| c.name != "ingest-ap");
        rtt.set_policy(&policy);
        assert!(rtt.status().is_empty());
    }

    #[test]
    fn restored_rtts_are_served_at_once_then_measured_or_forgotten() {
        let policy = policy();
        let mut rtt = MeasuredRtt::default();
        rtt.set_policy(&policy);
        let saved: BTreeMap<String, BTreeMap<String, f64>> = [
            ("eu-west", "ingest-eu", 40.0),
            ("eu-west", "ingest-us", 90.0),
            // Not the policy's, or not an RTT: left out.
            ("mars", "ingest-eu", 1.0),
            ("eu-west", "gone", 1.0),
            ("eu-west", "ingest-ap", f64::NAN),
        ]
        .into_iter()
        .fold(BTreeMap::new(), |mut m, (r, c, ms)| {
            m.entry(r.to_owned())
                .or_insert_with(BTreeMap::new)
                .insert(c.to_owned(), ms);
            m
        });
        let start = 1_000_000;
        rtt.restore(&saved, start);
        let published = rtt.published();
        assert_eq!(published.len(), 1, "{published:?}");
        assert_eq!(published["eu-west"].len(), 2, "{published:?}");
        assert_eq!(published["eu-west"]["ingest-eu"], 40.0);
        assert_eq!(published["eu-west"]["ingest-us"], 90.0);

        // Connections resume smoothing from the restored value.
        let mut store = store();
        connects(&mut store, start + 1_000, ("eu-west", "ingest-eu"), 10, 5.0);
        rtt.update(&store, start + 1_000);
        let smoothed = rtt.published()["eu-west"]["ingest-eu"];
        assert!((25.0..35.0).contains(&smoothed), "{smoothed}");

        // A restored pair no connection refreshes is forgotten in time.
        rtt.update(&store, start + STALE_MS);
        assert!(!rtt.published()["eu-west"].contains_key("ingest-us"));
    }
}
