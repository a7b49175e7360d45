//! One export request's numbers per cluster and kind of source, gathered
//! without allocating per data point (names and bounds are borrowed from the
//! request, bucket counts go into one buffer), then added to the store in
//! one go.

use std::collections::{HashMap, hash_map};
use std::rc::Rc;

use crate::metrics_store::{Counts, MetricsStore, SourceKind};

/// Bucket bounds in milliseconds: the request's own, or converted ones.
#[derive(Clone, Debug)]
pub(crate) enum Bounds<'r> {
    Borrowed(&'r [f64]),
    Converted(Rc<[f64]>),
}

impl std::ops::Deref for Bounds<'_> {
    type Target = [f64];

    fn deref(&self) -> &[f64] {
        match self {
            Bounds::Borrowed(b) => b,
            Bounds::Converted(b) => b,
        }
    }
}

/// A bound converted to milliseconds, without the float noise of the
/// multiplication (`0.005 × 1000` is `5`, not `5.000000000000001`).
pub(crate) fn tidy(value: f64) -> f64 {
    format!("{value:.12e}").parse().unwrap_or(value)
}

/// A cluster's totals from one kind of source.
#[derive(Debug)]
struct Entry<'r> {
    cluster: &'r str,
    /// Where it was measured from: the reporting Envoy's region for
    /// connect times, else empty.
    origin: &'r str,
    kind: SourceKind,
    requests: u64,
    errors: u64,
    observations: u64,
    /// The first histogram's bounds and where its counts start in `counts`.
    latency: Option<(Bounds<'r>, usize)>,
}

/// Every cluster's totals in one request.
#[derive(Debug, Default)]
pub(crate) struct Totals<'r> {
    index: HashMap<(&'r str, &'r str, SourceKind), usize>,
    entries: Vec<Entry<'r>>,
    counts: Vec<u64>,
    /// The entry found last: a cluster's data points usually come together.
    last: Option<usize>,
}

impl<'r> Totals<'r> {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `requests` (all failed if `failed`) and `observations` to the
    /// cluster as measured from `origin`, making its entry: its index, or
    /// `None` (and nothing added) if that would take either past `max`.
    pub(crate) fn add(
        &mut self,
        (cluster, origin): (&'r str, &'r str),
        kind: SourceKind,
        (requests, observations): (u64, u64),
        failed: bool,
        max: u64,
    ) -> Option<usize> {
        let i = match self.last {
            Some(i)
                if self.entries[i].kind == kind
                    && self.entries[i].cluster == cluster
                    && self.entries[i].origin == origin =>
            {
                i
            }
            _ => match self.index.entry((cluster, origin, kind)) {
                hash_map::Entry::Occupied(found) => *found.get(),
                hash_map::Entry::Vacant(vacant) => {
                    if requests > max || observations > max {
                        return None;
                    }
                    let i = self.entries.len();
                    vacant.insert(i);
                    self.entries.push(Entry {
                        cluster,
                        origin,
                        kind,
                        requests: 0,
                        errors: 0,
                        observations: 0,
                        latency: None,
                    });
                    i
                }
            },
        };
        self.last = Some(i);
        let entry = &mut self.entries[i];
        if requests > max.saturating_sub(entry.requests)
            || observations > max.saturating_sub(entry.observations)
        {
            return None;
        }
        entry.requests += requests;
        entry.observations += observations;
        if failed {
            entry.errors += requests;
        }
        Some(i)
    }

    /// Adds latencies to entry `i`: re-bucketed onto the cluster's first
    /// histogram in this request if the bounds differ.
    pub(crate) fn add_latency(&mut self, i: usize, bounds: &Bounds<'r>, counts: &[u64]) {
        let Some(entry) = self.entries.get_mut(i) else {
            return;
        };
        match &entry.latency {
            Some((onto, start)) => {
                let end = *start + onto.len() + 1;
                if let Some(into) = self.counts.get_mut(*start..end) {
                    crate::metrics_store::add_counts(onto, into, bounds, counts);
                }
            }
            None => {
                let start = self.counts.len();
                self.counts.extend_from_slice(counts);
                self.counts.resize(start + bounds.len() + 1, 0);
                entry.latency = Some((bounds.clone(), start));
            }
        }
    }

    /// The clusters with totals, sorted, once each.
    pub(crate) fn clusters(&self) -> Vec<String> {
        let mut names: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| matches!(e.kind, SourceKind::Envoy | SourceKind::Application))
            .map(|e| e.cluster)
            .collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().map(str::to_owned).collect()
    }

    /// Adds everything to `store`, received at `at_ms`.
    pub(crate) fn apply(&self, store: &mut MetricsStore, at_ms: u64) {
        for entry in &self.entries {
            let latency = entry.latency.as_ref().and_then(|(bounds, start)| {
                let counts = self.counts.get(*start..*start + bounds.len() + 1)?;
                Some((&bounds[..], counts))
            });
            let counts = Counts {
                requests: entry.requests,
                errors: entry.errors,
                latency,
            };
            match entry.kind {
                SourceKind::Connect => {
                    store.record_connect(entry.origin, entry.cluster, at_ms, counts)
                }
                kind => store.record(entry.cluster, kind, at_ms, counts),
            };
        }
    }

    /// The totals as samples per cluster (kinds merged), for tests.
    #[cfg(test)]
    pub(crate) fn samples(
        &self,
        at_ms: u64,
    ) -> std::collections::BTreeMap<String, crate::metrics_store::Sample> {
        use crate::metrics_store::{Histogram, Sample};
        let mut out = std::collections::BTreeMap::<String, Sample>::new();
        for entry in &self.entries {
            let sample = out.entry(entry.cluster.to_owned()).or_insert(Sample {
                at_ms,
                ..Sample::default()
            });
            sample.requests += entry.requests;
            sample.errors += entry.errors;
            if let Some((bounds, start)) = &entry.latency {
                let h = Histogram {
                    bounds: bounds.to_vec(),
                    counts: self.counts[*start..*start + bounds.len() + 1].to_vec(),
                };
                match &mut sample.latency {
                    Some(mine) => mine.merge(&h),
                    none => *none = Some(h),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bounds_in_milliseconds_carry_no_float_noise() {
        assert_eq!(super::tidy(0.005 * 1000.0), 5.0);
        assert_eq!(super::tidy(0.1 * 1000.0), 100.0);
    }
}
