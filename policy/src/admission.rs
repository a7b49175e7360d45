//! Admission: the work-conserving priority gate in front of the upstreams.
//!
//! One concurrency limit covers every class. A request takes a slot whenever
//! one is free and nothing of its class or above waits for it; when none is
//! free it waits, highest class first, for at most its class's `max_wait`;
//! every slot given back goes to the best request waiting; and when requests
//! must be turned away — the wait queue is full, or a wait ran out — the
//! lowest class goes first. Classes are protected by their order, never by
//! caps on the classes below, so capacity is idle only when nothing waits.
//!
//! - [`Settings`]: the limit, the waits and the queue's bound, from a policy
//!   and its feed;
//! - [`Gate`]: one worker's state machine (its held requests and the slots
//!   its streams hold), driven by arrivals, finished streams and ticks; it
//!   answers with what the host must do ([`Arrival`], [`Effect`]);
//! - [`Slots`]: the in-flight count the gate draws from, which the filter
//!   shares between Envoy's workers and tests and `weir explain` keep locally.
//!
//! Time is passed in, in milliseconds: the gate reads no clock.

mod gate;
mod queue;
mod settings;

pub use gate::{Arrival, ClassTally, Effect, Gate, ShedReason, Tally};
pub use queue::{AGING_STEP_MS, Held};
pub use settings::Settings;

/// What every worker's gate shares: the in-flight count it takes its slots
/// from, and how many requests of each class wait on all workers together.
///
/// In the filter these are Envoy gauges shared by every worker, so another
/// worker may change them between two calls. The waiting counts keep a slot
/// for the highest class waiting anywhere: a worker does not give a free slot
/// to its own request while a higher class waits on another worker, which
/// takes it at its next tick.
pub trait Slots {
    /// Takes one slot if that leaves the count within `limit`; whether it did.
    fn try_take(&mut self, limit: u64) -> bool;
    /// Gives one slot back.
    fn give_back(&mut self);
    /// Requests waiting on all workers together.
    fn waiting_total(&self) -> u64;
    /// Requests of class `rank` waiting on all workers together.
    fn waiting(&self, rank: usize) -> u64;
    /// This worker holds `by` more (or fewer) requests of class `rank`.
    fn add_waiting(&mut self, rank: usize, by: i64);
}

/// Slots counted in one place: for tests, the simulator and `weir explain`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalSlots {
    /// Slots taken.
    pub in_flight: u64,
    /// Requests waiting, by class rank.
    pub waiting: Vec<u64>,
}

impl LocalSlots {
    /// `in_flight` slots taken and nothing waiting.
    pub fn taken(in_flight: u64) -> Self {
        Self {
            in_flight,
            waiting: Vec::new(),
        }
    }
}

impl Slots for LocalSlots {
    fn try_take(&mut self, limit: u64) -> bool {
        if self.in_flight < limit {
            self.in_flight += 1;
            true
        } else {
            false
        }
    }

    fn give_back(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    fn waiting_total(&self) -> u64 {
        self.waiting.iter().sum()
    }

    fn waiting(&self, rank: usize) -> u64 {
        self.waiting.get(rank).copied().unwrap_or(0)
    }

    fn add_waiting(&mut self, rank: usize, by: i64) {
        if self.waiting.len() <= rank {
            self.waiting.resize(rank + 1, 0);
        }
        if let Some(count) = self.waiting.get_mut(rank) {
            *count = count.saturating_add_signed(by);
        }
    }
}
