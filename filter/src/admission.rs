//! Admission's host calls. The decisions are the gate's
//! (`weir_policy::admission::Gate`); here the shared in-flight gauge is its
//! slots, and its effects become resumed streams, local replies and metrics.

use proxy_wasm::hostcalls;
use weir_policy::admission::{Effect, Slots};
use weir_policy::headers;
use weir_policy::metrics::Outcome;

use crate::metrics::{self, Metrics};

/// The in-flight and waiting gauges, shared by every worker of the Envoy.
pub(crate) struct GaugeSlots<'a>(pub(crate) &'a Metrics);

impl Slots for GaugeSlots<'_> {
    /// Increment first, then read: two workers racing may both back off, but
    /// never both overshoot. Without the gauge every request is admitted.
    fn try_take(&mut self, limit: u64) -> bool {
        let gauge = self.0.in_flight;
        metrics::bump(gauge, 1);
        if gauge.is_some() && metrics::read(gauge) > limit {
            metrics::bump(gauge, -1);
            return false;
        }
        true
    }

    fn give_back(&mut self) {
        metrics::bump(self.0.in_flight, -1);
    }

    fn waiting_total(&self) -> u64 {
        metrics::read(self.0.queue_depth)
    }

    fn waiting(&self, rank: usize) -> u64 {
        metrics::read(self.0.waiting.get(rank).copied().flatten())
    }

    fn add_waiting(&mut self, rank: usize, by: i64) {
        metrics::bump(self.0.queue_depth, by);
        metrics::bump(self.0.waiting.get(rank).copied().flatten(), by);
    }
}

/// What a worker's gate decided for other streams, and what is needed to
/// carry it out once the state is no longer borrowed (resuming or answering
/// a stream can call back into this VM).
pub(crate) struct Pending<'a> {
    pub(crate) effects: &'a [Effect],
    pub(crate) metrics: &'a Metrics,
    pub(crate) classes: &'a [String],
    pub(crate) retry_after_s: u64,
}

impl Pending<'_> {
    /// Resumes the released streams and answers the shed ones. Returns the
    /// released streams that could not be resumed (they are gone), whose
    /// slots the caller gives back. `current` is the stream whose callback
    /// this is, made effective again afterwards.
    pub(crate) fn carry_out(&self, current: Option<u32>) -> Vec<u32> {
        let mut gone = Vec::new();
        for effect in self.effects {
            match *effect {
                Effect::Release {
                    id,
                    rank,
                    waited_ms,
                } => {
                    self.metrics.outcome(rank, Outcome::Released);
                    self.metrics.queue_wait(waited_ms);
                    let resumed = hostcalls::set_effective_context(id).is_ok()
                        && hostcalls::resume_http_request().is_ok();
                    if !resumed {
                        gone.push(id);
                    }
                }
                Effect::Shed { id, rank, .. } => {
                    self.metrics.outcome(rank, Outcome::Shed);
                    if hostcalls::set_effective_context(id).is_ok() {
                        let class = self.classes.get(rank).map_or("", String::as_str);
                        shed(class, self.retry_after_s);
                    }
                }
            }
        }
        if let Some(current) = current.filter(|_| !self.effects.is_empty()) {
            let _ = hostcalls::set_effective_context(current);
        }
        gone
    }
}

/// Answers the effective stream 503 with `retry-after`, naming the class shed.
pub(crate) fn shed(class: &str, retry_after_s: u64) {
    let retry_after = retry_after_s.to_string();
    let headers = vec![
        ("retry-after", retry_after.as_str()),
        (headers::SHED, class),
        ("content-type", "text/plain"),
    ];
    let _ = hostcalls::send_http_response(
        503,
        headers,
        Some(b"overloaded: request shed by priority\n"),
    );
}
