//! One worker's admission state machine.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;

use super::queue::{Held, Queue};
use super::{Settings, Slots};

/// What becomes of a request as it arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Arrival {
    /// It took a slot: forward it now.
    Admit,
    /// No slot is free: hold it (pause the stream) until the gate releases
    /// it or answers it, within `max_wait_ms`.
    Queue {
        /// Longest wait before it is shed.
        max_wait_ms: u64,
    },
    /// Answer it 503 with `retry-after`.
    Shed {
        /// The `retry-after` value, in seconds.
        retry_after_s: u64,
        /// Why it was turned away.
        reason: ShedReason,
    },
}

/// Why a request was shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShedReason {
    /// No slot was free and its class may not wait (`max_wait: 0`).
    MayNotWait,
    /// No slot was free and the queue was full of its class or above.
    QueueFull,
    /// It was held, and a higher class took its place in a full queue.
    Displaced,
    /// It was held for its class's whole `max_wait` without a slot freeing.
    TimedOut,
}

/// What the host must do to a request other than the one arriving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A held request took a slot: resume its stream.
    Release {
        /// The stream.
        id: u32,
        /// Its class rank.
        rank: usize,
        /// How long it was held.
        waited_ms: u64,
    },
    /// A held request is turned away: answer its stream 503.
    Shed {
        /// The stream.
        id: u32,
        /// Its class rank.
        rank: usize,
        /// Why.
        reason: ShedReason,
    },
}

/// One class's counts since the gate was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClassTally {
    /// Requests that arrived.
    pub arrived: u64,
    /// Took a slot as they arrived.
    pub admitted: u64,
    /// Were held.
    pub queued: u64,
    /// Were held, then took a slot.
    pub released: u64,
    /// Were shed as they arrived.
    pub shed_on_arrival: u64,
    /// Were held, then shed (displaced or out of time).
    pub shed_held: u64,
    /// Ended while held (the client gave up).
    pub cancelled: u64,
    /// Gave their slot back.
    pub completed: u64,
}

/// Every class's counts, by rank.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally(Vec<ClassTally>);

impl Tally {
    /// The counts of class `rank`.
    pub fn class(&self, rank: usize) -> ClassTally {
        self.0.get(rank).copied().unwrap_or_default()
    }

    /// How many ranks have counts.
    pub fn ranks(&self) -> usize {
        self.0.len()
    }

    fn count(&mut self, rank: usize, count: impl FnOnce(&mut ClassTally)) {
        if self.0.len() <= rank {
            self.0.resize(rank + 1, ClassTally::default());
        }
        if let Some(class) = self.0.get_mut(rank) {
            count(class);
        }
    }
}

/// Where a stream the gate knows of is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Holds a slot; the class rank it arrived with.
    Slot(usize),
    /// Held in the queue, in this class.
    Held(usize),
}

/// One worker's admission: its held requests and which of its streams hold
/// a slot. Every call that can free or find capacity hands the slots to the
/// best requests held before it returns, so no slot stays free while a
/// request waits on this worker — unless a higher class waits on another,
/// which takes it at its next tick.
#[derive(Clone, Debug)]
pub struct Gate {
    settings: Settings,
    queue: Queue,
    streams: HashMap<u32, Place, BuildHasherDefault<StreamIdHasher>>,
    tally: Tally,
}

/// Hashes Envoy's stream ids (small, sequential integers that no client
/// chooses) with one multiplication: SipHash's defence against chosen keys
/// buys nothing here and costs every request twice.
#[derive(Default)]
struct StreamIdHasher(u64);

impl Hasher for StreamIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Gate {
    /// A gate with nothing held.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            queue: Queue::default(),
            streams: HashMap::default(),
            tally: Tally::default(),
        }
    }

    /// New settings (a new configuration). Held requests keep their
    /// deadlines; a raised limit is used at the next call.
    pub fn reconfigure(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Requests of class `rank` held.
    pub fn held_in(&self, rank: usize) -> usize {
        self.queue.len_of(rank)
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Requests held.
    pub fn held(&self) -> usize {
        self.queue.len()
    }

    /// This worker's streams that hold a slot.
    pub fn holding(&self) -> usize {
        self.streams.len() - self.queue.len()
    }

    /// The counts so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The held requests, in no particular order.
    pub fn held_requests(&self) -> impl Iterator<Item = &Held> {
        self.queue.iter()
    }

    /// Request `id` of class `rank` arrives. Held requests ahead of it (its
    /// class or above) take free slots first; then it takes one, waits, or —
    /// with no slot free — is shed if it may not wait or the queue is full of
    /// its class and above. Displaced requests go to `effects`. The clock is
    /// read only when something is or will be held.
    pub fn arrive(
        &mut self,
        id: u32,
        rank: usize,
        now_ms: impl FnOnce() -> u64,
        slots: &mut impl Slots,
        effects: &mut Vec<Effect>,
    ) -> Arrival {
        let mut clock = Some(now_ms);
        let mut cached = None;
        let mut read = || *cached.get_or_insert_with(|| clock.take().map_or(0, |f| f()));
        if self.streams.contains_key(&id) {
            // A stream id seen again (never in practice) starts afresh.
            let now = read();
            self.finish(id, || now, slots, effects);
        }
        self.tally.count(rank, |c| c.arrived += 1);
        if self.queue.is_empty() {
            if !self.higher_waits_elsewhere(rank, slots) && slots.try_take(self.settings.limit()) {
                return self.admit(id, rank);
            }
            let now = read();
            return self.hold_or_shed(id, rank, now, slots, effects);
        }

        let now = read();
        while self.queue.holds_at_or_above(rank, now) {
            if !self.release_best(now, slots, effects) {
                break;
            }
        }
        if !self.queue.holds_at_or_above(rank, now)
            && !self.higher_waits_elsewhere(rank, slots)
            && slots.try_take(self.settings.limit())
        {
            let admitted = self.admit(id, rank);
            self.fill(now, slots, effects);
            return admitted;
        }
        self.hold_or_shed(id, rank, now, slots, effects)
    }

    /// Whether a class above `rank` waits on another worker: then a free
    /// slot is left for it (its worker takes it at its next tick). Others'
    /// requests count by their class as they arrived, without aging.
    fn higher_waits_elsewhere(&self, rank: usize, slots: &impl Slots) -> bool {
        if rank == 0 || slots.waiting_total() <= self.queue.len() as u64 {
            return false;
        }
        (0..rank).any(|above| slots.waiting(above) > self.queue.len_of(above) as u64)
    }

    fn admit(&mut self, id: u32, rank: usize) -> Arrival {
        self.streams.insert(id, Place::Slot(rank));
        self.tally.count(rank, |c| c.admitted += 1);
        Arrival::Admit
    }

    /// No slot is free for request `id`: it waits, taking the place of a
    /// lower class if the queue is full, or is shed.
    fn hold_or_shed(
        &mut self,
        id: u32,
        rank: usize,
        now_ms: u64,
        slots: &mut impl Slots,
        effects: &mut Vec<Effect>,
    ) -> Arrival {
        let max_wait_ms = self.settings.max_wait_ms(rank);
        if max_wait_ms == 0 {
            return self.shed_on_arrival(rank, ShedReason::MayNotWait);
        }
        while self.queue.len() >= self.settings.queue_capacity() {
            let below = self
                .queue
                .worst(now_ms)
                .is_some_and(|w| w.effective_rank(now_ms) > rank);
            let displaced = if below {
                self.queue.pop_worst(now_ms)
            } else {
                None
            };
            let Some(displaced) = displaced else {
                return self.shed_on_arrival(rank, ShedReason::QueueFull);
            };
            self.shed_held(displaced, ShedReason::Displaced, slots, effects);
        }
        self.queue.push(id, rank, now_ms, max_wait_ms);
        slots.add_waiting(rank, 1);
        self.streams.insert(id, Place::Held(rank));
        self.tally.count(rank, |c| c.queued += 1);
        Arrival::Queue { max_wait_ms }
    }

    /// Stream `id` ended, however it ended: its slot goes to the best request
    /// held, or its place in the queue is given up. The clock is read only
    /// when something is held.
    pub fn finish(
        &mut self,
        id: u32,
        now_ms: impl FnOnce() -> u64,
        slots: &mut impl Slots,
        effects: &mut Vec<Effect>,
    ) {
        match self.streams.remove(&id) {
            Some(Place::Slot(rank)) => {
                slots.give_back();
                self.tally.count(rank, |c| c.completed += 1);
                if !self.queue.is_empty() {
                    self.fill(now_ms(), slots, effects);
                }
            }
            Some(Place::Held(rank)) => {
                if self.queue.remove(id, rank).is_some() {
                    slots.add_waiting(rank, -1);
                }
                self.tally.count(rank, |c| c.cancelled += 1);
            }
            None => {}
        }
    }

    /// Time passes: slots freed by other workers go to the best requests
    /// held (unless a higher class waits on another worker), then requests
    /// whose wait ran out are shed.
    pub fn tick(&mut self, now_ms: u64, slots: &mut impl Slots, effects: &mut Vec<Effect>) {
        self.fill(now_ms, slots, effects);
        let mut expired = Vec::new();
        self.queue.take_expired(now_ms, &mut expired);
        for held in expired {
            self.shed_held(held, ShedReason::TimedOut, slots, effects);
        }
    }

    /// A request taken out of the queue is to be answered 503.
    fn shed_held(
        &mut self,
        held: Held,
        reason: ShedReason,
        slots: &mut impl Slots,
        effects: &mut Vec<Effect>,
    ) {
        slots.add_waiting(held.rank, -1);
        self.streams.remove(&held.id);
        self.tally.count(held.rank, |c| c.shed_held += 1);
        effects.push(Effect::Shed {
            id: held.id,
            rank: held.rank,
            reason,
        });
    }

    fn shed_on_arrival(&mut self, rank: usize, reason: ShedReason) -> Arrival {
        self.tally.count(rank, |c| c.shed_on_arrival += 1);
        Arrival::Shed {
            retry_after_s: self.settings.retry_after_s(),
            reason,
        }
    }

    /// Releases held requests, best first, while slots are free.
    fn fill(&mut self, now_ms: u64, slots: &mut impl Slots, effects: &mut Vec<Effect>) {
        while self.release_best(now_ms, slots, effects) {}
    }

    /// Releases the best held request if a slot is free; whether it did.
    fn release_best(
        &mut self,
        now_ms: u64,
        slots: &mut impl Slots,
        effects: &mut Vec<Effect>,
    ) -> bool {
        let Some(best) = self.queue.best(now_ms) else {
            return false;
        };
        if self.higher_waits_elsewhere(best.effective_rank(now_ms), slots)
            || !slots.try_take(self.settings.limit())
        {
            return false;
        }
        let Some(held) = self.queue.pop_best(now_ms) else {
            slots.give_back();
            return false;
        };
        slots.add_waiting(held.rank, -1);
        self.streams.insert(held.id, Place::Slot(held.rank));
        self.tally.count(held.rank, |c| c.released += 1);
        effects.push(Effect::Release {
            id: held.id,
            rank: held.rank,
            waited_ms: now_ms.saturating_sub(held.since_ms),
        });
        true
    }
}
