//! The filter's Envoy metrics, defined once per configuration; requests then
//! only bump them by id.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use weir_policy::metrics::{self, Outcome};
use weir_policy::model::Variant;
use weir_policy::{Engine, Policy};

/// Metric ids; a metric Envoy refused to define is simply not counted.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) in_flight: Option<u32>,
    pub(crate) queue_depth: Option<u32>,
    queue_wait: Option<u32>,
    unrouted: Option<u32>,
    /// By class rank, then outcome.
    outcomes: Vec<[Option<u32>; 4]>,
    /// By class rank: requests held, all workers together.
    pub(crate) waiting: Vec<Option<u32>>,
    /// By canary cluster: the ids for `[stable, canary]` (a policy has a
    /// handful of canaries: a scan beats hashing the name every request).
    variants: Vec<(String, [Option<u32>; 2])>,
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
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
        m.unrouted = define(MetricType::Counter, metrics::UNROUTED);
        m.outcomes = engine
            .classes()
            .iter()
            .map(|class| {
                Outcome::ALL.map(|o| define(MetricType::Counter, &metrics::class_outcome(class, o)))
            })
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
            let ids = [Variant::Stable, Variant::Canary].map(|variant| {
                define(
                    MetricType::Counter,
                    &metrics::canary_variant(&canary.cluster, variant),
                )
            });
            m.variants.push((canary.cluster.clone(), ids));
        }
        m
    }

    pub(crate) fn outcome(&self, rank: usize, outcome: Outcome) {
        let index = Outcome::ALL.iter().position(|&o| o == outcome).unwrap_or(0);
        bump(
            self.outcomes
                .get(rank)
                .and_then(|ids| ids.get(index).copied().flatten()),
            1,
        );
    }

    pub(crate) fn variant(&self, canary: &str, variant: Variant) {
        let index = usize::from(variant == Variant::Canary);
        bump(
            self.variants
                .iter()
                .find(|(cluster, _)| cluster == canary)
                .and_then(|(_, ids)| ids.get(index).copied().flatten()),
            1,
        );
    }

    pub(crate) fn unrouted(&self) {
        bump(self.unrouted, 1);
    }

    pub(crate) fn queue_wait(&self, ms: u64) {
        if let Some(id) = self.queue_wait {
            let _ = hostcalls::record_metric(id, ms);
        }
    }
}

/// Adds `by` to a counter or gauge.
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
