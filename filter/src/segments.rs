//! Segment counts: for each canary whose analysis names segments, the
//! requests, 5xx and latency of each (dimension, value, variant), which
//! `weir` judges one by one (`weir_policy::segments` has the names).
//!
//! Each dimension counts its first `top` values on their own and pools the
//! rest under `(other)`, so a header with endless values defines a bounded
//! number of metrics. The counters are defined when a value is first seen.
//! Only requests of a segmented canary's placement pay anything: a scan of
//! a handful of values per dimension, and a histogram record per dimension
//! at the response.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use weir_policy::model::{Policy, Variant};
use weir_policy::segments::{self, MAX_DIMENSIONS, Measure, OTHER};
use weir_policy::{Request, headers};

use crate::metrics::{Counter, define};

/// The segmented canaries of a policy.
#[derive(Default)]
pub(crate) struct Segments {
    canaries: Vec<Canary>,
    /// Which configuration these are: a request that started under another
    /// (its value indices point into other tables) is not counted.
    generation: u64,
}

/// Configurations seen by this VM, numbering each [`Segments`].
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

struct Canary {
    cluster: String,
    dimensions: Vec<Dimension>,
}

struct Dimension {
    name: String,
    header: String,
    top: usize,
    /// Values seen, in order of first sighting: at most `top`, then `(other)`.
    values: RefCell<Vec<Value>>,
}

struct Value {
    value: String,
    /// `[stable, canary]`.
    variants: [Counts; 2],
}

struct Counts {
    ok: Counter,
    errors: Counter,
    latency: Option<u32>,
}

/// What a request of a segmented canary must count when its response comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pending {
    generation: u64,
    canary: usize,
    variant: Variant,
    /// The value's index in each dimension, `dimensions` of them.
    values: [u8; MAX_DIMENSIONS],
    dimensions: u8,
    started_ms: u64,
}

impl Counts {
    fn new(canary: &str, dimension: &str, value: &str, variant: Variant) -> Self {
        let name = |measure| segments::metric_name(canary, dimension, value, variant, measure);
        Self {
            ok: Counter::new(&name(Measure::Ok)),
            errors: Counter::new(&name(Measure::Errors)),
            latency: define(MetricType::Histogram, &name(Measure::LatencyMs)),
        }
    }
}

impl Segments {
    pub(crate) fn for_policy(policy: &Policy) -> Self {
        let routing = &policy.routing.headers;
        let canaries = policy
            .services
            .iter()
            .flat_map(|s| &s.placements)
            .filter_map(|p| p.canary.as_ref())
            .filter_map(|canary| {
                let wanted = canary.analysis.segments.as_ref()?;
                let top = usize::try_from(wanted.top.min(segments::MAX_TOP)).unwrap_or(1);
                let dimensions = wanted
                    .by
                    .iter()
                    .take(MAX_DIMENSIONS)
                    .filter_map(|written| segments::dimension(written, routing).ok())
                    .map(|d| Dimension {
                        name: d.name,
                        header: d.header,
                        top,
                        values: RefCell::new(Vec::new()),
                    })
                    .collect();
                Some(Canary {
                    cluster: canary.cluster.clone(),
                    dimensions,
                })
            })
            .collect();
        let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed) + 1;
        Self {
            canaries,
            generation,
        }
    }

    /// Notes a request split between `canary` and its stable cluster, if
    /// that canary is segmented: its value in each dimension.
    pub(crate) fn start(
        &self,
        canary: &str,
        variant: Variant,
        request: &Request<'_>,
        now_ms: impl FnOnce() -> u64,
    ) -> Option<Pending> {
        let index = self.canaries.iter().position(|c| c.cluster == canary)?;
        let canary = self.canaries.get(index)?;
        // The clock is a host call: read only for a segmented canary.
        let mut pending = Pending {
            generation: self.generation,
            canary: index,
            variant,
            values: [0; MAX_DIMENSIONS],
            dimensions: 0,
            started_ms: now_ms(),
        };
        for (slot, dimension) in pending.values.iter_mut().zip(&canary.dimensions) {
            let value = segments::value_of(request.header(&dimension.header));
            *slot = dimension.slot(&canary.cluster, value)?;
            pending.dimensions += 1;
        }
        Some(pending)
    }

    /// Counts `pending`'s response.
    pub(crate) fn finish(&self, pending: &Pending, status: u16, now_ms: u64, dirty: &Cell<bool>) {
        // A request in flight across a reconfiguration is lost, not
        // miscounted under another value.
        if pending.generation != self.generation {
            return;
        }
        let Some(canary) = self.canaries.get(pending.canary) else {
            return;
        };
        let variant = usize::from(pending.variant == Variant::Canary);
        let elapsed = now_ms.saturating_sub(pending.started_ms);
        let dimensions = canary
            .dimensions
            .iter()
            .take(usize::from(pending.dimensions));
        for (dimension, &slot) in dimensions.zip(&pending.values) {
            let Ok(values) = dimension.values.try_borrow() else {
                continue;
            };
            let Some(counts) = values
                .get(usize::from(slot))
                .and_then(|v| v.variants.get(variant))
            else {
                continue;
            };
            if status >= 500 {
                counts.errors.add(dirty);
            } else {
                counts.ok.add(dirty);
            }
            if let Some(id) = counts.latency {
                let _ = hostcalls::record_metric(id, elapsed);
            }
        }
    }

    /// Gives Envoy every segment counter's pending increments.
    pub(crate) fn flush(&self) {
        for dimension in self.canaries.iter().flat_map(|c| &c.dimensions) {
            if let Ok(values) = dimension.values.try_borrow() {
                for counts in values.iter().flat_map(|v| &v.variants) {
                    counts.ok.flush();
                    counts.errors.flush();
                }
            }
        }
    }
}

impl Dimension {
    /// The index of `value`'s counts, defining them at its first sighting;
    /// past `top` values, the index of `(other)`.
    fn slot(&self, canary: &str, value: &str) -> Option<u8> {
        let mut values = self.values.try_borrow_mut().ok()?;
        let index = match values.iter().position(|v| v.value == value) {
            Some(i) => i,
            None if values.len() < self.top => {
                values.push(self.value(canary, value));
                values.len() - 1
            }
            None => match values.iter().position(|v| v.value == OTHER) {
                Some(i) => i,
                None => {
                    values.push(self.value(canary, OTHER));
                    values.len() - 1
                }
            },
        };
        u8::try_from(index).ok()
    }

    fn value(&self, canary: &str, value: &str) -> Value {
        Value {
            value: value.to_owned(),
            variants: [Variant::Stable, Variant::Canary]
                .map(|variant| Counts::new(canary, &self.name, value, variant)),
        }
    }
}

/// The response's status, if it is one to count: not a local reply of
/// Weir's own shedding (those never reached either variant).
pub(crate) fn counted_status(status: Option<String>, shed: Option<String>) -> Option<u16> {
    if shed.is_some() {
        return None;
    }
    status?.parse().ok()
}

/// The header that marks Weir's own shed replies.
pub(crate) const SHED_HEADER: &str = headers::SHED;
