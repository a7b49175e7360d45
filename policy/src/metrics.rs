//! The one table of metric names the filter defines. Envoy shows them under
//! `wasmcustom.` (e.g. `wasmcustom.weir.class.alarm.admitted`) in `/stats`
//! and exports them through its stats sinks.

/// Gauge: requests admitted and not yet finished, shared by all workers.
pub const IN_FLIGHT: &str = "weir.in_flight";
/// Gauge: requests held in the admission queues, all workers together.
pub const QUEUED_NOW: &str = "weir.queue.depth";
/// Histogram: how long released requests waited in the queue, in milliseconds.
pub const QUEUE_WAIT_MS: &str = "weir.queue.wait_ms";
/// Counter: requests no service matched (they take the default route).
pub const UNROUTED: &str = "weir.unrouted";

/// The filter counts in its VM and hands Envoy its counters' increments at
/// least this often (gauges at once): a count is in Envoy's stats, and so in
/// its next OTLP report, at most this long after the request it counts.
pub const COUNTER_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

/// What happened to a request at admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded at once.
    Admitted,
    /// Held in the queue.
    Queued,
    /// Released from the queue and forwarded.
    Released,
    /// Answered 503 (at once, or when its wait ran out).
    Shed,
}

impl Outcome {
    /// Every outcome, for defining the counters up front.
    pub const ALL: [Self; 4] = [Self::Admitted, Self::Queued, Self::Released, Self::Shed];

    fn name(self) -> &'static str {
        match self {
            Self::Admitted => "admitted",
            Self::Queued => "queued",
            Self::Released => "released",
            Self::Shed => "shed",
        }
    }
}

/// Counter: requests of `class` with `outcome`.
pub fn class_outcome(class: &str, outcome: Outcome) -> String {
    format!("weir.class.{class}.{}", outcome.name())
}

/// Gauge: requests of `class` held in the admission queues, all workers
/// together; a worker leaves a free slot to a higher class waiting on another.
pub fn class_waiting(class: &str) -> String {
    format!("weir.queue.waiting.{class}")
}

/// Counter: requests of the rollout of `canary_cluster` that went to `variant` (`canary` or `stable`).
pub fn canary_variant(canary_cluster: &str, variant: crate::model::Variant) -> String {
    let variant = match variant {
        crate::model::Variant::Canary => "canary",
        crate::model::Variant::Stable => "stable",
    };
    format!("weir.canary.{canary_cluster}.{variant}")
}
