//! What the filter counts per device segment: one series of requests,
//! errors and latencies per (canary, dimension, value, variant), kept like
//! a cluster's (see the parent module) and read back per canary.
//!
//! Bounded whatever the sources send: only canaries the policy names,
//! at most [`MAX_DIMENSIONS`] dimensions per canary and [`MAX_VALUES`]
//! values per dimension; a value past those is added to the dimension's
//! pooled `(other)` value.

use std::collections::HashMap;

use weir_policy::Policy;
use weir_policy::model::Variant;
use weir_policy::segments::{self, OTHER, SegmentKey, parse_series, series_name, value_of};

use super::{Counts, Series, WindowStats};

/// Dimensions kept per canary.
pub const MAX_DIMENSIONS: usize = 8;
/// Values kept per dimension of a canary (each with both variants); the
/// filter counts at most 32 on their own, and several Envoys may each have
/// seen different ones.
pub const MAX_VALUES: usize = 128;

/// Every segment series.
#[derive(Debug, Default)]
pub(super) struct Segments {
    /// By series name (the metric name without its measure).
    by_name: HashMap<String, usize>,
    series: Vec<(SegmentKey, Series)>,
    /// Values kept per (canary, dimension).
    values: HashMap<(String, String), usize>,
}

/// Which applications' reports count in which segments, by cluster: the
/// canary and the stable cluster of every canary that names segments.
#[derive(Debug, Default)]
pub(super) struct Plan(HashMap<String, Vec<PlanEntry>>);

#[derive(Debug)]
struct PlanEntry {
    canary: String,
    variant: Variant,
    /// (dimension, the attribute that carries its value).
    dimensions: Vec<(String, String)>,
}

impl Plan {
    pub(super) fn of(policy: &Policy) -> Self {
        let mut plan: HashMap<String, Vec<PlanEntry>> = HashMap::new();
        for placement in policy.services.iter().flat_map(|s| &s.placements) {
            let Some(canary) = &placement.canary else {
                continue;
            };
            let Some(wanted) = &canary.analysis.segments else {
                continue;
            };
            let dimensions: Vec<(String, String)> = wanted
                .by
                .iter()
                .filter_map(|written| segments::dimension(written, &policy.routing.headers).ok())
                .map(|d| {
                    let attribute = segments::attribute(&d, &wanted.attributes);
                    (d.name, attribute)
                })
                .collect();
            for (cluster, variant) in [
                (&placement.cluster, Variant::Stable),
                (&canary.cluster, Variant::Canary),
            ] {
                plan.entry(cluster.clone()).or_default().push(PlanEntry {
                    canary: canary.cluster.clone(),
                    variant,
                    dimensions: dimensions.clone(),
                });
            }
        }
        Self(plan)
    }

    /// The series an application's report of `cluster` counts in, given
    /// how to read its attributes.
    pub(super) fn series<'a>(
        &self,
        cluster: &str,
        attribute: &impl Fn(&str) -> Option<&'a str>,
    ) -> Vec<String> {
        let Some(entries) = self.0.get(cluster) else {
            return Vec::new();
        };
        entries
            .iter()
            .flat_map(|e| {
                e.dimensions.iter().map(move |(dimension, key)| {
                    let value = value_of(attribute(key));
                    series_name(&e.canary, dimension, value, e.variant)
                })
            })
            .collect()
    }
}

/// One segment's window: both variants.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SegmentWindow {
    /// The dimension, as the policy writes it.
    pub dimension: String,
    /// The value.
    pub value: String,
    /// The canary's requests of this segment.
    pub canary: WindowStats,
    /// Stable's.
    pub stable: WindowStats,
}

impl Segments {
    /// Records a report of the series `name` (a segment metric's name
    /// without its measure); `false` if refused.
    pub(super) fn record(
        &mut self,
        name: &str,
        known: impl Fn(&str) -> bool,
        key: u64,
        max_slots: u64,
        counts: Counts<'_>,
    ) -> bool {
        let index = match self.by_name.get(name) {
            Some(&i) => i,
            None => match self.admit(name, known) {
                Some(i) => i,
                None => return false,
            },
        };
        if let Some((_, series)) = self.series.get_mut(index) {
            series.record(key, max_slots, counts);
        }
        true
    }

    /// The series a new name is recorded in: its own, or its dimension's
    /// `(other)` once the dimension has [`MAX_VALUES`].
    fn admit(&mut self, name: &str, known: impl Fn(&str) -> bool) -> Option<usize> {
        let mut key = parse_series(name)?;
        if !known(&key.canary) {
            return None;
        }
        let dimension = (key.canary.clone(), key.dimension.clone());
        let kept = self.values.get(&dimension).copied();
        let dimensions = self.values.keys().filter(|(c, _)| *c == key.canary).count();
        let found = self.find(&key);
        let i = match found {
            Some(i) => i,
            None if kept.is_none() && dimensions >= MAX_DIMENSIONS => return None,
            None => {
                if kept.unwrap_or(0) >= MAX_VALUES * 2 {
                    key.value = OTHER.to_owned();
                }
                match self.find(&key) {
                    Some(i) => i,
                    None => {
                        *self.values.entry(dimension).or_default() += 1;
                        self.series.push((key, Series::default()));
                        self.series.len() - 1
                    }
                }
            }
        };
        self.by_name.insert(name.to_owned(), i);
        Some(i)
    }

    fn find(&self, key: &SegmentKey) -> Option<usize> {
        self.series.iter().position(|(k, _)| k == key)
    }

    /// Every segment of `canary` with reports in `(after, until]` slots.
    pub(super) fn windows(&self, canary: &str, after: u64, until: u64) -> Vec<SegmentWindow> {
        let mut out: Vec<SegmentWindow> = Vec::new();
        for (key, series) in self.series.iter().filter(|(k, _)| k.canary == canary) {
            let Some(stats) = series.window(after, until) else {
                continue;
            };
            let at = out
                .iter()
                .position(|w| w.dimension == key.dimension && w.value == key.value);
            let window = match at {
                Some(i) => &mut out[i],
                None => {
                    out.push(SegmentWindow {
                        dimension: key.dimension.clone(),
                        value: key.value.clone(),
                        ..SegmentWindow::default()
                    });
                    let last = out.len() - 1;
                    &mut out[last]
                }
            };
            let into = match key.variant {
                Variant::Canary => &mut window.canary,
                Variant::Stable => &mut window.stable,
            };
            into.add(&stats);
        }
        out
    }

    /// Drops slots older than `keep_after` (ms), and series left empty.
    pub(super) fn prune(&mut self, keep_after: u64) {
        for (_, series) in &mut self.series {
            series.prune(keep_after);
        }
        if self.series.iter().any(|(_, s)| s.slots.is_empty()) {
            self.series.retain(|(_, s)| !s.slots.is_empty());
            self.values.clear();
            for (key, _) in &self.series {
                *self
                    .values
                    .entry((key.canary.clone(), key.dimension.clone()))
                    .or_default() += 1;
            }
            // Names pooled into `(other)` are found again at their next report.
            self.by_name.clear();
        }
    }

    /// Series kept.
    pub(super) fn len(&self) -> usize {
        self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use weir_policy::segments::{Measure, metric_name, split_metric_name};

    use super::*;
    use crate::metrics_store::MetricsStore;

    fn series(canary: &str, value: &str, variant: Variant) -> String {
        let name = metric_name(canary, "device_type", value, variant, Measure::Ok);
        split_metric_name(&name).unwrap().0.to_owned()
    }

    fn counts(requests: u64, errors: u64) -> Counts<'static> {
        Counts {
            requests,
            errors,
            latency: None,
        }
    }

    #[test]
    fn segments_are_kept_per_value_with_both_variants() {
        let mut store = MetricsStore::new(60_000);
        store.know_clusters(["c"]);
        assert!(store.record_segment(
            &series("c", "camera", Variant::Canary),
            1_000,
            counts(10, 2)
        ));
        assert!(store.record_segment(
            &series("c", "camera", Variant::Stable),
            1_000,
            counts(90, 1)
        ));
        assert!(store.record_segment(&series("c", "sensor", Variant::Canary), 2_000, counts(5, 0)));
        // Not a canary of the policy, or not a segment name: refused.
        assert!(!store.record_segment(
            &series("nope", "camera", Variant::Canary),
            1_000,
            counts(1, 0)
        ));
        assert!(!store.record_segment("weir.segment.c.x", 1_000, counts(1, 0)));
        let mut windows = store.segment_windows("c", 2_000, 10_000);
        windows.sort_by(|a, b| a.value.cmp(&b.value));
        assert_eq!(windows.len(), 2);
        let camera = &windows[0];
        assert_eq!((camera.canary.requests, camera.canary.errors), (10, 2));
        assert_eq!((camera.stable.requests, camera.stable.errors), (90, 1));
        assert_eq!(windows[1].stable.requests, 0);
        assert_eq!(store.segment_series(), (3, 2));
        store.prune(70_000);
        assert!(store.segment_windows("c", 70_000, 10_000).is_empty());
        assert_eq!(store.segment_series().0, 0);
    }

    #[test]
    fn values_past_the_bound_are_pooled() {
        let mut store = MetricsStore::new(60_000);
        store.know_clusters(["c"]);
        for i in 0..MAX_VALUES + 10 {
            for variant in [Variant::Canary, Variant::Stable] {
                let name = series("c", &format!("v{i}"), variant);
                assert!(store.record_segment(&name, 1_000, counts(1, 0)));
            }
        }
        assert_eq!(store.segment_series().0, MAX_VALUES * 2 + 2);
        let windows = store.segment_windows("c", 1_000, 10_000);
        let total: u64 = windows.iter().map(|w| w.canary.requests).sum();
        assert_eq!(total, (MAX_VALUES + 10) as u64, "nothing lost");
        let other = windows.iter().find(|w| w.value == OTHER).unwrap();
        assert_eq!(other.canary.requests, 10);
    }

    #[test]
    fn applications_reports_count_in_the_planned_segments() {
        let mut policy = crate::policy_source::parse(
            std::path::Path::new("examples/policies/iot-fleet.yaml"),
            include_str!("../../../examples/policies/iot-fleet.yaml"),
        )
        .unwrap();
        let canary = policy
            .services
            .iter_mut()
            .flat_map(|s| &mut s.placements)
            .find_map(|p| p.canary.as_mut())
            .unwrap();
        let canary_cluster = canary.cluster.clone();
        canary.analysis.segments = Some(weir_policy::model::Segments {
            by: vec!["device_type".into(), "header:x-firmware".into()],
            top: 8,
            on_bad: weir_policy::model::OnBadSegment::Rollback,
            attributes: [("header:x-firmware".to_owned(), "device.firmware".to_owned())].into(),
        });
        let mut store = MetricsStore::new(60_000);
        store.know_clusters(policy.clusters.iter().map(|c| c.name.clone()));
        store.plan_segments(&policy);
        let attributes = |key: &str| match key {
            "http.request.header.x-device-type" => Some("camera"),
            "device.firmware" => Some("2.1.0"),
            _ => None,
        };
        let (bounds, times) = ([100.0, 200.0], [0, 10, 0]);
        let failed = Counts {
            requests: 10,
            errors: 10,
            latency: Some((&bounds[..], &times[..])),
        };
        let ok = Counts {
            requests: 5,
            errors: 0,
            latency: None,
        };
        store.record_app_segments(&canary_cluster, attributes, failed, 1_000);
        store.record_app_segments(&canary_cluster, |_| None, ok, 1_000);
        // A cluster no segmented canary involves counts nowhere.
        store.record_app_segments("elsewhere", attributes, failed, 1_000);
        let windows = store.segment_windows(&canary_cluster, 1_000, 10_000);
        let find = |dimension: &str, value: &str| {
            windows
                .iter()
                .find(|w| w.dimension == dimension && w.value == value)
                .unwrap_or_else(|| panic!("{dimension}={value}: {windows:?}"))
        };
        let camera = find("device_type", "camera");
        assert_eq!((camera.canary.requests, camera.canary.errors), (10, 10));
        // Their latency is the segment's too.
        assert_eq!(camera.canary.latency.count(), 10);
        assert_eq!(camera.canary.latency.bounds, [100.0, 200.0]);
        assert_eq!(find("header:x-firmware", "2.1.0").canary.requests, 10);
        assert_eq!(
            find("device_type", weir_policy::segments::MISSING)
                .canary
                .requests,
            5
        );
        assert_eq!(windows.len(), 4);
        assert_eq!(store.segment_series(), (4, 0));
    }
}
