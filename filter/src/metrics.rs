//! The filter's Envoy metrics, defined once per configuration; requests then
//! only bump them by id.
//!
//! Counters collect their increments inside the VM and hand them to Envoy
//! in one host call each per flush (every [`crate::state::FLUSH`] while there
//! is something to flush): a host call costs about as much as a thousand
//! instructions, and a request would otherwise make two for counters alone.
//! The shared gauges (in flight, waiting) are updated at once: other
//! workers' admission reads them.

use std::cell::Cell;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use weir_policy::metrics::{self, Outcome};
use weir_policy::model::Variant;
use weir_policy::{Engine, Policy};

use crate::segments::{Pending, Segments};

/// A counter whose increments wait in the VM until the next flush.
#[derive(Default)]
pub(crate) struct Counter {
    /// `None`: Envoy refused to define it, and it is not counted.
    id: Option<u32>,
    pending: Cell<u64>,
}

impl Counter {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            id: define(MetricType::Counter, name),
            pending: Cell::new(0),
        }
    }

    pub(crate) fn add(&self, dirty: &Cell<bool>) {
        if self.id.is_some() {
            self.pending.set(self.pending.get().saturating_add(1));
            dirty.set(true);
        }
    }

    pub(crate) fn flush(&self) {
        let pending = self.pending.replace(0);
        if let (Some(id), true) = (self.id, pending > 0) {
            let _ = hostcalls::increment_metric(id, i64::try_from(pending).unwrap_or(i64::MAX));
        }
    }
}

/// Metric ids; a metric Envoy refused to define is simply not counted.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) in_flight: Option<u32>,
    pub(crate) queue_depth: Option<u32>,
    queue_wait: Option<u32>,
    unrouted: Counter,
    /// By class rank, then outcome.
    outcomes: Vec<[Counter; 4]>,
    /// By class rank: requests held, all workers together.
    pub(crate) waiting: Vec<Option<u32>>,
    /// By canary cluster: the counters of `[stable, canary]` (a policy has a
    /// handful of canaries: a scan beats hashing the name every request).
    variants: Vec<(String, [Counter; 2])>,
    /// Counts per device segment of the canaries that name segments.
    pub(crate) segments: Segments,
    /// Whether any counter holds increments Envoy has not been given.
    dirty: Cell<bool>,
}

pub(crate) fn define(kind: MetricType, name: &str) -> Option<u32> {
    match hostcalls::define_metric(kind, name) {
        Ok(id) => Some(id),
        Err(status) => {
            log::warn!("weir filter cannot define metric {name}: {status:?}");
            None
        }
    }
}

impl Metrics {
    /// The shared gauges, which exist with or without a policy.
    pub(crate) fn gauges() -> Self {
        Self {
            in_flight: define(MetricType::Gauge, metrics::IN_FLIGHT),
            queue_depth: define(MetricType::Gauge, metrics::QUEUED_NOW),
            ..Self::default()
        }
    }

    /// Every metric of a policy.
    pub(crate) fn for_policy(policy: &Policy, engine: &Engine) -> Self {
        let mut m = Self::gauges();
        m.queue_wait = define(MetricType::Histogram, metrics::QUEUE_WAIT_MS);
        m.unrouted = Counter::new(metrics::UNROUTED);
        m.outcomes = engine
            .classes()
            .iter()
            .map(|class| Outcome::ALL.map(|o| Counter::new(&metrics::class_outcome(class, o))))
            .collect();
        m.waiting = engine
            .classes()
            .iter()
            .map(|class| define(MetricType::Gauge, &metrics::class_waiting(class)))
            .collect();
        let canaries = policy
            .services
            .iter()
            .flat_map(|s| &s.placements)
            .filter_map(|p| p.canary.as_ref());
        for canary in canaries {
            let counters = [Variant::Stable, Variant::Canary]
                .map(|variant| Counter::new(&metrics::canary_variant(&canary.cluster, variant)));
            m.variants.push((canary.cluster.clone(), counters));
        }
        m.segments = Segments::for_policy(policy);
        m
    }

    /// Counts a segmented request's response.
    pub(crate) fn segment_finish(&self, pending: &Pending, status: u16, now_ms: u64) {
        self.segments.finish(pending, status, now_ms, &self.dirty);
    }

    pub(crate) fn outcome(&self, rank: usize, outcome: Outcome) {
        let index = Outcome::ALL.iter().position(|&o| o == outcome).unwrap_or(0);
        if let Some(counter) = self.outcomes.get(rank).and_then(|c| c.get(index)) {
            counter.add(&self.dirty);
        }
    }

    pub(crate) fn variant(&self, canary: &str, variant: Variant) {
        let index = usize::from(variant == Variant::Canary);
        let counter = self
            .variants
            .iter()
            .find(|(cluster, _)| cluster == canary)
            .and_then(|(_, counters)| counters.get(index));
        if let Some(counter) = counter {
            counter.add(&self.dirty);
        }
    }

    pub(crate) fn unrouted(&self) {
        self.unrouted.add(&self.dirty);
    }

    /// Whether counters hold increments Envoy has not been given.
    pub(crate) fn dirty(&self) -> bool {
        self.dirty.get()
    }

    /// Gives Envoy every counter's pending increments.
    pub(crate) fn flush(&self) {
        if !self.dirty.replace(false) {
            return;
        }
        self.unrouted.flush();
        self.outcomes.iter().flatten().for_each(Counter::flush);
        self.variants
            .iter()
            .flat_map(|(_, counters)| counters)
            .for_each(Counter::flush);
        self.segments.flush();
    }

    pub(crate) fn queue_wait(&self, ms: u64) {
        if let Some(id) = self.queue_wait {
            let _ = hostcalls::record_metric(id, ms);
        }
    }
}

/// Adds `by` to a gauge.
pub(crate) fn bump(id: Option<u32>, by: i64) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, by);
    }
}

/// A gauge's value (0 if it cannot be read).
pub(crate) fn read(id: Option<u32>) -> u64 {
    id.and_then(|id| hostcalls::get_metric(id).ok())
        .unwrap_or(0)
}
