//! State one worker's VM shares between its root context and its requests.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use weir_policy::Engine;
use weir_policy::admission::{Effect, Gate, Settings, Slots};
use weir_policy::engine::Scored;

use crate::admission::{GaugeSlots, Pending};
use crate::metrics::Metrics;

/// How often a worker with held requests looks for capacity other workers
/// gave back, and for deadlines. (Slots its own streams give back are handed
/// on at once.)
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// How often a worker with nothing held gives Envoy its counters' pending
/// increments, while it has any: the longest a count waits in the VM.
/// (Envoy's stats sink reports every second.)
pub(crate) const FLUSH: Duration = weir_policy::metrics::COUNTER_FLUSH;

/// Rounds of giving back the slots of released streams that had gone, each
/// of which may release others: a bound, so a storm of vanished streams
/// cannot keep one callback busy.
const SETTLE_ROUNDS: usize = 16;

pub(crate) type SharedState = Rc<RefCell<State>>;

pub(crate) struct State {
    /// The decision engine; `None` without a policy (headers are still guarded).
    pub(crate) engine: Option<Rc<Engine>>,
    pub(crate) metrics: Rc<Metrics>,
    /// This worker's admission: its held requests, its streams' slots.
    gate: Gate,
    /// Spreads requests that carry no device id.
    pub(crate) request_counter: u64,
    /// Routing's scratch space, kept between requests so that routing
    /// allocates nothing per request.
    pub(crate) scores: Vec<Scored>,
    /// Whether responses carry `x-weir-filter` (the configuration's `version_header`).
    pub(crate) version_header: bool,
    /// The tick period asked of Envoy (zero: no tick).
    tick: Duration,
}

/// Settings without a policy: nothing is held, and anything still held from
/// an earlier configuration is released at the next tick.
fn unlimited() -> Settings {
    Settings::from_parts(u64::MAX, 1_000, Vec::new())
}

impl State {
    pub(crate) fn new() -> Self {
        Self {
            engine: None,
            metrics: Rc::new(Metrics::gauges()),
            gate: Gate::new(unlimited()),
            request_counter: 0,
            scores: Vec::new(),
            version_header: false,
            tick: Duration::ZERO,
        }
    }

    pub(crate) fn configure(
        &mut self,
        engine: Option<Engine>,
        metrics: Metrics,
        version_header: bool,
    ) {
        let settings = engine
            .as_ref()
            .map_or_else(unlimited, |e| e.admission().clone());
        self.gate.reconfigure(settings);
        // What this worker holds moves from the old gauges to the new ones
        // (the classes may have changed).
        let (mut old, mut new) = (GaugeSlots(&self.metrics), GaugeSlots(&metrics));
        for rank in 0..self.metrics.waiting.len().max(metrics.waiting.len()) {
            let held = i64::try_from(self.gate.held_in(rank)).unwrap_or(i64::MAX);
            if held > 0 {
                old.add_waiting(rank, -held);
                new.add_waiting(rank, held);
            }
        }
        // Counts under the old configuration reach Envoy before its metrics go.
        self.metrics.flush();
        self.engine = engine.map(Rc::new);
        self.metrics = Rc::new(metrics);
        self.version_header = version_header;
        // A raised limit releases held requests at the next tick.
        self.retick();
    }

    /// Runs one gate call with the shared gauges as its slots, keeping the
    /// tick in step with what it holds. Returns the call's result and what it
    /// decided for other streams, to [`settle`] once the state is released.
    pub(crate) fn with_gate<R>(
        &mut self,
        call: impl FnOnce(&mut Gate, &mut GaugeSlots<'_>, &mut Vec<Effect>) -> R,
    ) -> (R, Vec<Effect>) {
        let mut effects = Vec::new();
        let mut slots = GaugeSlots(&self.metrics);
        let result = call(&mut self.gate, &mut slots, &mut effects);
        self.retick();
        (result, effects)
    }

    /// Whether this worker holds requests.
    pub(crate) fn holds(&self) -> bool {
        self.gate.held() > 0
    }

    /// Ticks every [`TICK`] while this worker holds requests, every
    /// [`FLUSH`] while counters wait to be flushed, and not at all otherwise.
    /// Envoy is asked only when the period changes.
    pub(crate) fn retick(&mut self) {
        let period = if self.holds() {
            TICK
        } else if self.metrics.dirty() {
            FLUSH
        } else {
            Duration::ZERO
        };
        if self.tick != period {
            self.tick = period;
            if let Err(status) = hostcalls::set_tick_period(period) {
                log::warn!("weir filter cannot set its tick period: {status:?}");
            }
        }
    }
}

/// Carries out a gate call's effects once the state is no longer borrowed.
/// A released stream that is gone gives its slot back, which may release
/// another, and so on, for a bounded number of rounds (the rest wait for the
/// next tick). `current` is the stream whose callback this is, if any.
pub(crate) fn settle(shared: &SharedState, effects: Vec<Effect>, current: Option<u32>) {
    if effects.is_empty() {
        return;
    }
    settle_rounds(shared, effects, current);
    // What was released or shed was counted: the flush tick must run.
    if let Ok(mut state) = shared.try_borrow_mut() {
        state.retick();
    }
}

fn settle_rounds(shared: &SharedState, mut effects: Vec<Effect>, current: Option<u32>) {
    for _ in 0..SETTLE_ROUNDS {
        if effects.is_empty() {
            return;
        }
        let Ok(state) = shared.try_borrow() else {
            return;
        };
        let metrics = Rc::clone(&state.metrics);
        let engine = state.engine.clone();
        let retry_after_s = state.gate.settings().retry_after_s();
        drop(state);
        let gone = Pending {
            effects: &effects,
            metrics: &metrics,
            classes: engine.as_deref().map_or(&[], Engine::classes),
            retry_after_s,
        }
        .carry_out(current);
        if gone.is_empty() {
            return;
        }
        let Ok(mut state) = shared.try_borrow_mut() else {
            return;
        };
        effects.clear();
        for id in gone {
            let ((), more) = state.with_gate(|gate, slots, fx| gate.finish(id, now_ms, slots, fx));
            effects.extend(more);
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
