//! State one worker's VM shares between its root context and its requests.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use weir_policy::Engine;
use weir_policy::engine::Scored;
use weir_policy::queue::AdmissionQueue;

use crate::metrics::{self, Metrics};

/// How often a worker with held requests looks for capacity and deadlines.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// Held requests per worker: a multiple of the concurrency limit, and at
/// least a floor. Beyond it the lowest class is shed at once, so memory stays
/// bounded under any flood.
const QUEUE_PER_LIMIT: usize = 4;
const QUEUE_FLOOR: usize = 256;

pub(crate) type SharedState = Rc<RefCell<State>>;

pub(crate) struct State {
    /// The decision engine; `None` without a policy (headers are still guarded).
    pub(crate) engine: Option<Rc<Engine>>,
    pub(crate) metrics: Rc<Metrics>,
    pub(crate) queue: AdmissionQueue,
    /// Streams that hold one unit of the shared in-flight gauge.
    pub(crate) counted: HashSet<u32>,
    /// Spreads requests that carry no device id.
    pub(crate) request_counter: u64,
    /// Routing's scratch space, kept between requests so that routing
    /// allocates nothing per request.
    pub(crate) scores: Vec<Scored>,
    /// Whether responses carry `x-weir-filter` (the configuration's `version_header`).
    pub(crate) version_header: bool,
    ticking: bool,
}

impl State {
    pub(crate) fn new() -> Self {
        Self {
            engine: None,
            metrics: Rc::new(Metrics::gauges()),
            queue: AdmissionQueue::new(0),
            counted: HashSet::new(),
            request_counter: 0,
            scores: Vec::new(),
            version_header: false,
            ticking: false,
        }
    }

    pub(crate) fn configure(
        &mut self,
        engine: Option<Engine>,
        metrics: Metrics,
        version_header: bool,
    ) {
        let limit = engine.as_ref().map_or(0, |e| {
            usize::try_from(e.admitter().limit()).unwrap_or(usize::MAX)
        });
        let capacity = limit.saturating_mul(QUEUE_PER_LIMIT).max(QUEUE_FLOOR);
        self.queue.set_capacity(capacity);
        self.engine = engine.map(Rc::new);
        self.metrics = Rc::new(metrics);
        self.version_header = version_header;
    }

    /// Takes one unit of the shared in-flight gauge for `id` if that leaves
    /// it within `threshold`. Increment first, then read: two workers racing
    /// may both back off, but never both overshoot.
    pub(crate) fn try_take_slot(&mut self, id: u32, threshold: u64) -> bool {
        let gauge = self.metrics.in_flight;
        metrics::bump(gauge, 1);
        if gauge.is_some() && metrics::read(gauge) > threshold {
            metrics::bump(gauge, -1);
            return false;
        }
        self.counted.insert(id);
        true
    }

    /// Gives back `id`'s unit of the in-flight gauge, if it holds one.
    pub(crate) fn release_slot(&mut self, id: u32) {
        if self.counted.remove(&id) {
            metrics::bump(self.metrics.in_flight, -1);
        }
    }

    /// Ticks while this worker holds requests, and only then.
    pub(crate) fn set_ticking(&mut self, on: bool) {
        if self.ticking != on {
            self.ticking = on;
            let period = if on { TICK } else { Duration::ZERO };
            if let Err(status) = hostcalls::set_tick_period(period) {
                log::warn!("weir filter cannot set its tick period: {status:?}");
            }
        }
    }
}

/// Milliseconds since the epoch, by Envoy's clock.
pub(crate) fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .or_else(|| SystemTime::UNIX_EPOCH.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
