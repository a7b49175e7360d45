//! What the controller knows of each cluster's traffic: short sliding windows
//! of request counts, errors and latency histograms, fed by the OTLP receivers
//! (Envoy's stats sink, applications) and read by the controller.
//!
//! Time is passed in (milliseconds since the epoch), never read here, so the
//! controller can be tested with a simulated clock.
//!
//! Each cluster keeps, per kind of source ([`SourceKind`]), a run of time
//! slots of [`SLOT_MS`]: each slot holds the requests, errors and latency
//! bucket counts of every report received in it, against one bucket layout
//! per cluster and kind (the first histogram's bounds; histograms with
//! other bounds are re-bucketed onto it, see [`Histogram::merge`]). Adding a
//! report costs one pass over its buckets and, once the slots of the
//! retention exist, no allocation; a window sums the slots inside it. A
//! window's edges are therefore slot-aligned: slot `k` holds the reports
//! received in `((k − 1)·SLOT_MS, k·SLOT_MS]`, and a window
//! `(now − span, now]` sums the slots from the one after the slot of
//! `now − span` to the slot of `now`.
//!
//! A cluster reported both by Envoy's stats sink and by an application would
//! be counted twice if both were added up: a window uses Envoy's reports of
//! the cluster when there are any in the window, else the application's.
//!
//! It also keeps what the filter reports of its admission decisions, per
//! reporting source: [`MetricsStore::admission`].

use std::collections::{HashMap, HashSet, VecDeque};

mod admission;
mod connect;
mod histogram;
mod segments;

pub use admission::{Admission, AdmissionPoint, ClassCounts};
pub use connect::{ConnectWindow, MAX_PAIRS as MAX_CONNECT_PAIRS};
pub(crate) use histogram::add_counts;
pub use histogram::{Histogram, LATENCY_BOUNDS_MS, Located};
pub use segments::{
    MAX_DIMENSIONS as MAX_SEGMENT_DIMENSIONS, MAX_VALUES as MAX_SEGMENT_VALUES, SegmentWindow,
};

/// The width of a time slot, in milliseconds: the precision of a window's
/// edges.
pub const SLOT_MS: u64 = 250;

/// Where a cluster's numbers come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Envoy's stats sink: the upstream cluster's request counters and times.
    Envoy,
    /// An application's own metrics (`http.server.request.duration`).
    Application,
    /// The filter's counts of one device segment of a canary: the name
    /// recorded is the segment series' ([`MetricsStore::record_segment`]).
    Segment,
    /// Envoy's connect times to a cluster, by the reporting Envoy's region
    /// ([`MetricsStore::record_connect`]).
    Connect,
}

/// What happened on one cluster during one reporting interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// When it was received (ms since the epoch).
    pub at_ms: u64,
    /// Requests completed.
    pub requests: u64,
    /// Of which failed (5xx).
    pub errors: u64,
    /// Their latencies, if the source reported them.
    pub latency: Option<Histogram>,
}

/// One report's numbers for one cluster, borrowed: what [`MetricsStore::record`] adds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts<'a> {
    /// Requests completed.
    pub requests: u64,
    /// Of which failed (5xx).
    pub errors: u64,
    /// Their latencies, if reported: bucket bounds (ms) and counts (one more).
    pub latency: Option<(&'a [f64], &'a [u64])>,
}

/// A window's totals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowStats {
    /// Requests completed in the window.
    pub requests: u64,
    /// Of which failed (5xx).
    pub errors: u64,
    /// Their latencies (empty if no source reported any).
    pub latency: Histogram,
}

impl WindowStats {
    /// The error proportion, if there were requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// Adds `other` in: requests, errors and latencies (re-bucketed onto
    /// these bounds if they differ).
    pub fn add(&mut self, other: &WindowStats) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.latency.merge(&other.latency);
    }
}

/// The slot keys `(after, until]` of the window `(now_ms − span_ms, now_ms]`.
fn window_keys(now_ms: u64, span_ms: u64) -> (u64, u64) {
    (slot_key(now_ms.saturating_sub(span_ms)), slot_key(now_ms))
}

/// The sliding window every evaluation reads: long enough to gather
/// `min_samples` at modest rates, short enough to react within seconds.
pub const WINDOW_MS: u64 = 10_000;

/// Clusters the policy does not name whose reports are kept at most (they
/// show in `/v1/status`, where a name that does not match the policy's is
/// spotted); reports of more are refused, so that a source inventing names
/// cannot grow the store without limit. The policy's own are always kept.
pub const MAX_UNKNOWN_CLUSTERS: usize = 1024;

/// Every cluster's recent traffic, kept for `retention_ms`, and the filter's
/// admission per source.
#[derive(Debug)]
pub struct MetricsStore {
    retention_ms: u64,
    /// Slots kept per series at most: the retention's, and one more.
    max_slots: u64,
    clusters: HashMap<String, Cluster>,
    /// The policy's cluster names.
    known: HashSet<String>,
    /// How many of `clusters` are not `known`.
    unknown: usize,
    /// Reports refused because [`MAX_UNKNOWN_CLUSTERS`] were kept.
    refused: u64,
    admission: admission::Sources,
    segments: segments::Segments,
    /// Which applications' reports count in which segments.
    segment_plan: segments::Plan,
    /// Segment reports refused (a canary the policy does not name, or past
    /// the bounds of [`segments`]).
    segments_refused: u64,
    connect: connect::ConnectTimes,
    /// Connect-time reports refused (see [`connect`]).
    connect_refused: u64,
}

#[derive(Debug, Default)]
struct Cluster {
    envoy: Series,
    application: Series,
}

impl Cluster {
    fn series_mut(&mut self, kind: SourceKind) -> &mut Series {
        match kind {
            SourceKind::Envoy => &mut self.envoy,
            // Segments never reach a cluster: `record` keeps them apart.
            SourceKind::Application | SourceKind::Segment | SourceKind::Connect => {
                &mut self.application
            }
        }
    }

    fn series(&self, kind: SourceKind) -> &Series {
        match kind {
            SourceKind::Envoy => &self.envoy,
            SourceKind::Application | SourceKind::Segment | SourceKind::Connect => {
                &self.application
            }
        }
    }
}

/// One cluster's reports from one kind of source.
#[derive(Debug, Default)]
struct Series {
    /// The bucket bounds of every slot's counts, once a histogram came.
    bounds: Option<Vec<f64>>,
    /// Slots with reports, oldest first, by increasing key.
    slots: VecDeque<Slot>,
    /// Counts of slots dropped, for new slots to reuse.
    spare: Vec<Vec<u64>>,
}

#[derive(Debug)]
struct Slot {
    /// `⌈received ms / SLOT_MS⌉`.
    key: u64,
    requests: u64,
    errors: u64,
    /// Whether any report in it had latencies.
    latency: bool,
    /// Per bucket of the series' bounds (empty until a report had latencies).
    counts: Vec<u64>,
}

/// The slot of a time: slot `k` holds `((k − 1)·SLOT_MS, k·SLOT_MS]`.
fn slot_key(ms: u64) -> u64 {
    ms.div_ceil(SLOT_MS)
}

impl Series {
    fn record(&mut self, key: u64, max_slots: u64, counts: Counts<'_>) {
        let newest = self.slots.back().map_or(key, |s| s.key.max(key));
        if key.saturating_add(max_slots) <= newest {
            return;
        }
        while self
            .slots
            .front()
            .is_some_and(|s| s.key.saturating_add(max_slots) <= newest)
        {
            self.drop_oldest();
        }
        if let Some((bounds, _)) = counts.latency
            && self.bounds.is_none()
        {
            self.bounds = Some(bounds.to_vec());
        }
        let index = self.slot_index(key);
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        slot.requests = slot.requests.saturating_add(counts.requests);
        slot.errors = slot.errors.saturating_add(counts.errors);
        if let (Some((bounds, added)), Some(onto)) = (counts.latency, &self.bounds) {
            if slot.counts.len() != onto.len() + 1 {
                slot.counts.clear();
                slot.counts.resize(onto.len() + 1, 0);
            }
            histogram::add_counts(onto, &mut slot.counts, bounds, added);
            slot.latency = true;
        }
    }

    /// The index of the slot `key`, added if missing.
    fn slot_index(&mut self, key: u64) -> usize {
        let position = match self.slots.back() {
            Some(back) if back.key == key => return self.slots.len() - 1,
            Some(back) if back.key > key => {
                match self.slots.binary_search_by_key(&key, |s| s.key) {
                    Ok(i) => return i,
                    Err(i) => i,
                }
            }
            _ => self.slots.len(),
        };
        let mut counts = self.spare.pop().unwrap_or_default();
        counts.clear();
        let slot = Slot {
            key,
            requests: 0,
            errors: 0,
            latency: false,
            counts,
        };
        self.slots.insert(position, slot);
        position
    }

    /// Drops the slots that end at or before `keep_after` (ms).
    fn prune(&mut self, keep_after: u64) {
        while self
            .slots
            .front()
            .is_some_and(|s| s.key.saturating_mul(SLOT_MS) <= keep_after)
        {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(slot) = self.slots.pop_front() {
            self.spare.push(slot.counts);
        }
        if self.slots.is_empty() {
            // A new layout may come with the next report.
            self.bounds = None;
            self.spare.clear();
        }
    }

    /// Totals of the slots with keys in `(after, until]`; `None` if none.
    fn window(&self, after: u64, until: u64) -> Option<WindowStats> {
        let start = self.slots.partition_point(|s| s.key <= after);
        let mut stats: Option<WindowStats> = None;
        for slot in self.slots.range(start..).take_while(|s| s.key <= until) {
            let stats = stats.get_or_insert_with(WindowStats::default);
            stats.requests = stats.requests.saturating_add(slot.requests);
            stats.errors = stats.errors.saturating_add(slot.errors);
            if let (true, Some(bounds)) = (slot.latency, &self.bounds) {
                let latency = &mut stats.latency;
                if latency.bounds.is_empty() && latency.counts.is_empty() {
                    *latency = Histogram::with_bounds(bounds.clone());
                }
                for (sum, &count) in latency.counts.iter_mut().zip(&slot.counts) {
                    *sum = sum.saturating_add(count);
                }
            }
        }
        stats
    }
}

impl MetricsStore {
    /// A store keeping reports for `retention_ms`.
    pub fn new(retention_ms: u64) -> Self {
        Self {
            retention_ms,
            max_slots: retention_ms.div_ceil(SLOT_MS) + 1,
            clusters: HashMap::new(),
            known: HashSet::new(),
            unknown: 0,
            refused: 0,
            admission: admission::Sources::default(),
            segments: segments::Segments::default(),
            segment_plan: segments::Plan::default(),
            segments_refused: 0,
            connect: connect::ConnectTimes::default(),
            connect_refused: 0,
        }
    }

    /// The policy's cluster names, whose reports are always kept.
    pub fn know_clusters<S: Into<String>>(&mut self, names: impl IntoIterator<Item = S>) {
        self.known = names.into_iter().map(Into::into).collect();
        self.count_unknown();
    }

    /// Clusters kept that the policy does not name.
    pub fn unknown_clusters(&self) -> usize {
        self.unknown
    }

    /// Reports refused since the start because [`MAX_UNKNOWN_CLUSTERS`]
    /// clusters the policy does not name were kept.
    pub fn refused_reports(&self) -> u64 {
        self.refused
    }

    fn count_unknown(&mut self) {
        self.unknown = self
            .clusters
            .keys()
            .filter(|name| !self.known.contains(*name))
            .count();
    }

    /// Records a sample for `cluster`, as reported by Envoy.
    pub fn add(&mut self, cluster: &str, sample: Sample) {
        self.add_from(cluster, SourceKind::Envoy, &sample);
    }

    /// Records a sample for `cluster` from a `kind` of source.
    pub fn add_from(&mut self, cluster: &str, kind: SourceKind, sample: &Sample) {
        let counts = Counts {
            requests: sample.requests,
            errors: sample.errors,
            latency: sample
                .latency
                .as_ref()
                .map(|h| (&h.bounds[..], &h.counts[..])),
        };
        self.record(cluster, kind, sample.at_ms, counts);
    }

    /// Records what a `kind` of source reported of `cluster`, received at
    /// `at_ms`; `false` if it was refused (a cluster the policy does not
    /// name, with [`MAX_UNKNOWN_CLUSTERS`] of those kept already).
    pub fn record(
        &mut self,
        cluster: &str,
        kind: SourceKind,
        at_ms: u64,
        counts: Counts<'_>,
    ) -> bool {
        match kind {
            SourceKind::Segment => return self.record_segment(cluster, at_ms, counts),
            // A connect time needs its region: `record_connect`.
            SourceKind::Connect => return false,
            SourceKind::Envoy | SourceKind::Application => {}
        }
        let entry = match self.clusters.get_mut(cluster) {
            Some(entry) => entry,
            None => {
                if !self.known.contains(cluster) {
                    if self.unknown >= MAX_UNKNOWN_CLUSTERS {
                        self.refused += 1;
                        return false;
                    }
                    self.unknown += 1;
                }
                self.clusters.entry(cluster.to_owned()).or_default()
            }
        };
        entry
            .series_mut(kind)
            .record(slot_key(at_ms), self.max_slots, counts);
        true
    }

    /// Totals of `cluster`'s reports received in `(now_ms − span_ms, now_ms]`
    /// (to the slot): Envoy's if Envoy reported the cluster in the window,
    /// else the applications'.
    pub fn window(&self, cluster: &str, now_ms: u64, span_ms: u64) -> WindowStats {
        self.window_from(cluster, SourceKind::Envoy, now_ms, span_ms)
            .or_else(|| self.window_from(cluster, SourceKind::Application, now_ms, span_ms))
            .unwrap_or_default()
    }

    /// Totals of what one `kind` of source reported of `cluster` in
    /// `(now_ms − span_ms, now_ms]`; `None` if it reported nothing there.
    pub fn window_from(
        &self,
        cluster: &str,
        kind: SourceKind,
        now_ms: u64,
        span_ms: u64,
    ) -> Option<WindowStats> {
        let (after, until) = window_keys(now_ms, span_ms);
        self.clusters
            .get(cluster)?
            .series(kind)
            .window(after, until)
    }

    /// Records what the filter counted of a device segment: `series` is the
    /// segment metric's name without Envoy's prefix and the measure
    /// (`weir_policy::segments`); `false` if refused (not a segment of a
    /// canary the policy names, or past the bounds).
    pub fn record_segment(&mut self, series: &str, at_ms: u64, counts: Counts<'_>) -> bool {
        let known = &self.known;
        let recorded = self.segments.record(
            series,
            |canary| known.contains(canary),
            slot_key(at_ms),
            self.max_slots,
            counts,
        );
        if !recorded {
            self.segments_refused += 1;
        }
        recorded
    }

    /// Follows the policy's segmented canaries: which applications' reports
    /// count in which segments ([`Self::record_app_segments`]).
    pub fn plan_segments(&mut self, policy: &weir_policy::Policy) {
        self.segment_plan = segments::Plan::of(policy);
    }

    /// Adds an application's report of `cluster` (its requests, errors and
    /// latency) to the segments it counts in, each dimension's value read
    /// with `attribute` from the report's attributes.
    pub fn record_app_segments<'a>(
        &mut self,
        cluster: &str,
        attribute: impl Fn(&str) -> Option<&'a str>,
        counts: Counts<'_>,
        at_ms: u64,
    ) {
        for series in self.segment_plan.series(cluster, &attribute) {
            self.record_segment(&series, at_ms, counts);
        }
    }

    /// Every segment of `canary` reported in `(now_ms − span_ms, now_ms]`.
    pub fn segment_windows(&self, canary: &str, now_ms: u64, span_ms: u64) -> Vec<SegmentWindow> {
        let (after, until) = window_keys(now_ms, span_ms);
        self.segments.windows(canary, after, until)
    }

    /// Segment series kept, and segment reports refused since the start.
    pub fn segment_series(&self) -> (usize, u64) {
        (self.segments.len(), self.segments_refused)
    }

    /// Records connect times Envoys of `region` measured to `cluster`
    /// (`counts.requests` connections, their times as latency); `false` if
    /// refused (a cluster the policy does not name, or past the bounds).
    pub fn record_connect(
        &mut self,
        region: &str,
        cluster: &str,
        at_ms: u64,
        counts: Counts<'_>,
    ) -> bool {
        let known = &self.known;
        let recorded = self.connect.record(
            (region, cluster),
            |cluster| known.contains(cluster),
            (slot_key(at_ms), self.max_slots),
            counts,
        );
        if !recorded {
            self.connect_refused += 1;
        }
        recorded
    }

    /// Every (region, cluster) pair's connect times in
    /// `(now_ms − span_ms, now_ms]`.
    pub fn connect_windows(&self, now_ms: u64, span_ms: u64) -> Vec<ConnectWindow> {
        let (after, until) = window_keys(now_ms, span_ms);
        self.connect.windows(after, until)
    }

    /// Connect-time pairs kept, and connect-time reports refused since the start.
    pub fn connect_pairs(&self) -> (usize, u64) {
        (self.connect.len(), self.connect_refused)
    }

    /// Forgets reports older than the retention.
    pub fn prune(&mut self, now_ms: u64) {
        let keep_after = now_ms.saturating_sub(self.retention_ms);
        for cluster in self.clusters.values_mut() {
            cluster.envoy.prune(keep_after);
            cluster.application.prune(keep_after);
        }
        self.segments.prune(keep_after);
        self.connect.prune(keep_after);
        self.clusters
            .retain(|_, c| !c.envoy.slots.is_empty() || !c.application.slots.is_empty());
        self.count_unknown();
        self.admission.prune(keep_after);
    }

    /// Records admission data points `source` (a resource's identity) sent
    /// at `at_ms`.
    pub fn add_admission(&mut self, source: &str, at_ms: u64, points: &[AdmissionPoint]) {
        self.admission.add(source, at_ms, points);
    }

    /// The filter's admission, summed over every source that reported it
    /// within the retention (until [`Self::prune`] forgets the others).
    pub fn admission(&self) -> Admission {
        self.admission.total()
    }
}

#[cfg(test)]
mod tests {
    use weir_policy::metrics::Outcome;

    use super::*;

    fn sample(at_ms: u64, requests: u64, errors: u64) -> Sample {
        Sample {
            at_ms,
            requests,
            errors,
            latency: None,
        }
    }

    #[test]
    fn windows_sum_the_samples_inside_them() {
        let mut store = MetricsStore::new(10_000);
        for (at, requests, errors) in [(1_000, 10, 1), (2_000, 20, 0), (3_000, 30, 3)] {
            store.add("c", sample(at, requests, errors));
        }
        let w = store.window("c", 3_000, 1_500);
        assert_eq!((w.requests, w.errors), (50, 3));
        assert_eq!(store.window("other", 3_000, 10_000), WindowStats::default());
        store.prune(12_500);
        assert_eq!(store.window("c", 3_000, 10_000).requests, 30);
    }

    #[test]
    fn reports_in_one_slot_add_up_and_edges_are_slot_aligned() {
        let mut store = MetricsStore::new(60_000);
        // 1_001..=1_250 is one slot; out of order is fine.
        for at in [1_100, 1_250, 1_001, 900] {
            store.add("c", sample(at, 1, 0));
        }
        assert_eq!(store.window("c", 1_250, 250).requests, 3);
        assert_eq!(store.window("c", 1_250, 500).requests, 4);
        // The slot of `now` counts whole; that of `now − span` not at all.
        assert_eq!(store.window("c", 1_001, 1).requests, 3);
        assert_eq!(store.window("c", 1_200, 200).requests, 3);
        assert_eq!(store.window("c", 1_250, 1_250).requests, 4);
    }

    #[test]
    fn latencies_are_summed_against_the_first_layout() {
        let mut store = MetricsStore::new(60_000);
        store.add("c", sample(1_000, 5, 0));
        let mut h = Histogram::with_bounds(vec![10.0, 100.0]);
        h.counts = vec![1, 2, 3];
        store.add(
            "c",
            Sample {
                latency: Some(h.clone()),
                ..sample(2_000, 6, 1)
            },
        );
        let mut other = Histogram::with_bounds(vec![5.0, 50.0, 500.0]);
        other.counts = vec![1, 1, 1, 1];
        store.add(
            "c",
            Sample {
                latency: Some(other),
                ..sample(3_000, 4, 0)
            },
        );
        let w = store.window("c", 3_000, 10_000);
        assert_eq!((w.requests, w.errors), (15, 1));
        assert_eq!(w.latency.bounds, vec![10.0, 100.0]);
        assert_eq!(w.latency.counts, vec![2, 3, 5]);
        // No latencies in the window: an empty histogram, as before.
        assert_eq!(store.window("c", 1_000, 500).latency, Histogram::default());
        // Once everything expired, a new layout may come.
        store.prune(100_000);
        let mut h = Histogram::with_bounds(vec![1.0]);
        h.counts = vec![1, 0];
        store.add(
            "c",
            Sample {
                latency: Some(h),
                ..sample(100_000, 1, 0)
            },
        );
        assert_eq!(store.window("c", 100_000, 1_000).latency.bounds, vec![1.0]);
    }

    #[test]
    fn memory_is_bounded_by_the_retention_without_pruning() {
        let mut store = MetricsStore::new(1_000);
        for at in (0..100_000).step_by(100) {
            store.add("c", sample(at, 1, 0));
        }
        let series = &store.clusters["c"].envoy;
        assert!(
            series.slots.len() as u64 <= store.max_slots,
            "{}",
            series.slots.len()
        );
        // Too old for the retention behind the newest: dropped.
        store.add("c", sample(1_000, 1, 0));
        assert_eq!(store.window("c", 2_000, 2_000).requests, 0);
    }

    #[test]
    fn envoy_counts_a_cluster_when_it_reported_it_else_the_application() {
        let mut store = MetricsStore::new(60_000);
        let app = |store: &mut MetricsStore, at| {
            store.add_from("c", SourceKind::Application, &sample(at, 10, 1));
        };
        app(&mut store, 1_000);
        app(&mut store, 2_000);
        assert_eq!(store.window("c", 2_000, 5_000).requests, 20);
        // Envoy reports the cluster too: its numbers, not the sum.
        store.add_from("c", SourceKind::Envoy, &sample(3_000, 12, 0));
        app(&mut store, 3_000);
        let w = store.window("c", 3_000, 5_000);
        assert_eq!((w.requests, w.errors), (12, 0));
        // Envoy's zero is a report too.
        store.add_from("c", SourceKind::Envoy, &sample(4_000, 0, 0));
        assert_eq!(store.window("c", 4_000, 500).requests, 0);
        // A window in which only the application reported: the application's.
        app(&mut store, 6_000);
        assert_eq!(store.window("c", 6_000, 1_000).requests, 10);
        assert_eq!(
            store
                .window_from("c", SourceKind::Application, 6_000, 10_000)
                .map(|w| w.requests),
            Some(40)
        );
        assert_eq!(
            store.window_from("c", SourceKind::Envoy, 6_000, 1_000),
            None
        );
    }

    #[test]
    fn admission_is_summed_over_sources_and_forgotten_after_the_retention() {
        let count = |class: &str, outcome, value, cumulative| AdmissionPoint::Count {
            class: class.to_owned(),
            outcome,
            value,
            cumulative,
        };
        let mut store = MetricsStore::new(10_000);
        assert_eq!(store.admission(), Admission::default());
        // A source sending deltas: they add up.
        for at in [1_000, 2_000] {
            store.add_admission(
                "envoy-a",
                at,
                &[
                    count("alarm", Outcome::Admitted, 5, false),
                    count("heartbeat", Outcome::Shed, 2, false),
                    AdmissionPoint::InFlight(3),
                ],
            );
        }
        // A source sending totals: the last one counts.
        for (at, total) in [(1_500, 40), (2_500, 42)] {
            store.add_admission(
                "envoy-b",
                at,
                &[
                    count("alarm", Outcome::Admitted, total, true),
                    AdmissionPoint::QueueDepth(7),
                ],
            );
        }
        let admission = store.admission();
        assert_eq!(admission.sources, 2);
        assert_eq!(
            admission.classes["alarm"],
            ClassCounts {
                admitted: 52,
                ..ClassCounts::default()
            }
        );
        assert_eq!(admission.classes["heartbeat"].shed, 4);
        assert_eq!((admission.in_flight, admission.queue_depth), (3, 7));
        // envoy-a was last heard from at 2 s: gone after 12 s.
        store.prune(12_000);
        let admission = store.admission();
        assert_eq!(admission.sources, 1);
        assert_eq!(admission.classes["alarm"].admitted, 42);
        assert!(!admission.classes.contains_key("heartbeat"));
    }

    #[test]
    fn clusters_the_policy_does_not_name_are_bounded_and_its_own_always_kept() {
        let mut store = MetricsStore::new(10_000);
        store.know_clusters(["ingest-eu"]);
        let counts = Counts {
            requests: 1,
            ..Counts::default()
        };
        for i in 0..MAX_UNKNOWN_CLUSTERS {
            assert!(store.record(&format!("junk-{i}"), SourceKind::Envoy, 1_000, counts));
        }
        assert_eq!(store.unknown_clusters(), MAX_UNKNOWN_CLUSTERS);
        assert!(!store.record("one-more", SourceKind::Envoy, 1_000, counts));
        assert!(
            store.record("junk-7", SourceKind::Envoy, 1_000, counts),
            "a kept one goes on"
        );
        assert!(store.record("ingest-eu", SourceKind::Envoy, 1_000, counts));
        assert_eq!(store.refused_reports(), 1);
        assert_eq!(store.window("ingest-eu", 1_000, 1_000).requests, 1);
        assert_eq!(store.window("one-more", 1_000, 1_000).requests, 0);

        // Once the junk ages out there is room again.
        store.prune(20_000);
        assert_eq!(store.unknown_clusters(), 0);
        assert!(store.record("one-more", SourceKind::Envoy, 20_000, counts));
        // A policy naming it makes it known.
        store.know_clusters(["ingest-eu", "one-more"]);
        assert_eq!(store.unknown_clusters(), 0);
    }
}
