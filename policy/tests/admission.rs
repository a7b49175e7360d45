//! The admission gate: scenarios, then properties over random sequences of
//! arrivals, finished streams, cancellations and time on two workers that
//! share one in-flight count, as Envoy's workers do.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use proptest::prelude::*;
use weir_policy::admission::{
    AGING_STEP_MS, Arrival, Effect, Gate, LocalSlots, Settings, ShedReason, Slots,
};

const ALARM: usize = 0;
const COMMAND: usize = 1;
const TELEMETRY: usize = 2;
const HEARTBEAT: usize = 3;

/// The example policy's waits: alarm 2 s, command 1 s, telemetry 500 ms, heartbeat 100 ms.
fn settings(limit: u64) -> Settings {
    Settings::from_parts(limit, 2_000, vec![2_000, 1_000, 500, 100])
}

fn released(effects: &[Effect]) -> Vec<u32> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Release { id, .. } => Some(*id),
            Effect::Shed { .. } => None,
        })
        .collect()
}

#[test]
fn every_class_uses_free_slots_and_waits_only_when_none_is_free() {
    let mut gate = Gate::new(settings(3));
    let mut slots = LocalSlots::default();
    let mut fx = Vec::new();
    for id in 1..=3 {
        assert_eq!(
            gate.arrive(id, HEARTBEAT, || 0, &mut slots, &mut fx),
            Arrival::Admit
        );
    }
    assert_eq!(slots.in_flight, 3);
    assert_eq!(
        gate.arrive(4, HEARTBEAT, || 0, &mut slots, &mut fx),
        Arrival::Queue { max_wait_ms: 100 }
    );
    assert!(fx.is_empty());
}

#[test]
fn a_released_slot_goes_to_the_highest_class_waiting() {
    let mut gate = Gate::new(settings(1));
    let mut slots = LocalSlots::default();
    let mut fx = Vec::new();
    assert_eq!(
        gate.arrive(1, HEARTBEAT, || 0, &mut slots, &mut fx),
        Arrival::Admit
    );
    gate.arrive(2, HEARTBEAT, || 1, &mut slots, &mut fx);
    gate.arrive(3, TELEMETRY, || 2, &mut slots, &mut fx);
    gate.arrive(4, ALARM, || 3, &mut slots, &mut fx);
    gate.arrive(5, ALARM, || 4, &mut slots, &mut fx);
    assert_eq!(gate.held(), 4);
    let mut order = Vec::new();
    for finishing in [1, 4, 5, 3] {
        fx.clear();
        gate.finish(finishing, || 10, &mut slots, &mut fx);
        order.extend(released(&fx));
    }
    assert_eq!(
        order,
        vec![4, 5, 3, 2],
        "alarms in arrival order, then down the classes"
    );
    assert_eq!(
        fx,
        vec![Effect::Release {
            id: 2,
            rank: HEARTBEAT,
            waited_ms: 9
        }]
    );
}

#[test]
fn a_slot_freed_by_another_worker_goes_to_those_waiting_ahead_first() {
    let mut gate = Gate::new(settings(2));
    let mut slots = LocalSlots::taken(2);
    let mut fx = Vec::new();
    gate.arrive(1, COMMAND, || 0, &mut slots, &mut fx);
    gate.arrive(2, HEARTBEAT, || 0, &mut slots, &mut fx);
    // The other worker gives one slot back: a telemetry request arriving now
    // waits behind the command held here, but goes before the heartbeat.
    slots.give_back();
    assert_eq!(
        gate.arrive(3, TELEMETRY, || 1, &mut slots, &mut fx),
        Arrival::Queue { max_wait_ms: 500 }
    );
    assert_eq!(released(&fx), vec![1]);
    // An alarm arriving as a slot frees takes it before anything held below it.
    slots.give_back();
    fx.clear();
    assert_eq!(
        gate.arrive(4, ALARM, || 2, &mut slots, &mut fx),
        Arrival::Admit
    );
    assert!(fx.is_empty());
    // Two slots free at a tick: telemetry, then the heartbeat.
    slots.give_back();
    slots.give_back();
    gate.tick(3, &mut slots, &mut fx);
    assert_eq!(released(&fx), vec![3, 2]);
}

#[test]
fn a_free_slot_is_left_for_a_higher_class_waiting_on_another_worker() {
    let mut slots = LocalSlots::taken(1);
    let (mut here, mut there) = (Gate::new(settings(1)), Gate::new(settings(1)));
    let mut fx = Vec::new();
    there.arrive(1, ALARM, || 0, &mut slots, &mut fx);
    here.arrive(2, TELEMETRY, || 0, &mut slots, &mut fx);
    assert_eq!(slots.waiting_total(), 2);
    // The slot frees; neither this worker's telemetry nor a fresh heartbeat
    // takes it while the other worker's alarm waits…
    slots.give_back();
    here.tick(1, &mut slots, &mut fx);
    assert_eq!(
        here.arrive(3, HEARTBEAT, || 1, &mut slots, &mut fx),
        Arrival::Queue { max_wait_ms: 100 }
    );
    assert!(fx.is_empty());
    // …which takes it at its worker's tick; a fresh alarm would not wait at all.
    there.tick(2, &mut slots, &mut fx);
    assert_eq!(released(&fx), vec![1]);
    assert_eq!(slots.waiting(ALARM), 0);
}

#[test]
fn a_full_queue_sheds_the_newest_of_the_lowest_class_below_the_arrival() {
    let mut gate = Gate::new(settings(1).with_queue_capacity(3));
    let mut slots = LocalSlots::default();
    let mut fx = Vec::new();
    gate.arrive(1, ALARM, || 0, &mut slots, &mut fx);
    gate.arrive(2, HEARTBEAT, || 0, &mut slots, &mut fx);
    gate.arrive(3, HEARTBEAT, || 1, &mut slots, &mut fx);
    gate.arrive(4, TELEMETRY, || 2, &mut slots, &mut fx);
    assert_eq!(gate.held(), 3);
    assert_eq!(
        gate.arrive(5, COMMAND, || 3, &mut slots, &mut fx),
        Arrival::Queue { max_wait_ms: 1_000 }
    );
    assert_eq!(
        fx,
        vec![Effect::Shed {
            id: 3,
            rank: HEARTBEAT,
            reason: ShedReason::Displaced
        }]
    );
    // A heartbeat finds nothing below it to displace.
    fx.clear();
    assert_eq!(
        gate.arrive(6, HEARTBEAT, || 4, &mut slots, &mut fx),
        Arrival::Shed {
            retry_after_s: 2,
            reason: ShedReason::QueueFull
        }
    );
    assert!(fx.is_empty());
    assert_eq!(gate.held(), 3);
}

#[test]
fn a_class_that_may_not_wait_is_shed_only_when_no_slot_is_free() {
    let mut gate = Gate::new(Settings::from_parts(1, 1_500, vec![1_000, 0]));
    let mut slots = LocalSlots::default();
    let mut fx = Vec::new();
    assert_eq!(gate.arrive(1, 1, || 0, &mut slots, &mut fx), Arrival::Admit);
    assert_eq!(
        gate.arrive(2, 1, || 0, &mut slots, &mut fx),
        Arrival::Shed {
            retry_after_s: 2,
            reason: ShedReason::MayNotWait
        }
    );
}

#[test]
fn a_held_request_is_answered_at_its_deadline_unless_a_slot_frees_first() {
    let mut gate = Gate::new(settings(1));
    let mut slots = LocalSlots::default();
    let mut fx = Vec::new();
    gate.arrive(1, ALARM, || 0, &mut slots, &mut fx);
    gate.arrive(2, HEARTBEAT, || 0, &mut slots, &mut fx);
    gate.arrive(3, TELEMETRY, || 0, &mut slots, &mut fx);
    gate.tick(99, &mut slots, &mut fx);
    assert!(fx.is_empty());
    gate.tick(100, &mut slots, &mut fx);
    assert_eq!(
        fx,
        vec![Effect::Shed {
            id: 2,
            rank: HEARTBEAT,
            reason: ShedReason::TimedOut
        }]
    );
    // Past its deadline but with a slot free at the same tick, it is released.
    fx.clear();
    slots.give_back();
    gate.tick(600, &mut slots, &mut fx);
    assert_eq!(released(&fx), vec![3]);
}

#[test]
fn waiting_promotes_a_held_request_past_fresher_higher_classes() {
    let mut gate = Gate::new(Settings::from_parts(1, 1_000, vec![10_000; 4]));
    let mut slots = LocalSlots::default();
    let mut fx = Vec::new();
    gate.arrive(1, ALARM, || 0, &mut slots, &mut fx);
    gate.arrive(2, HEARTBEAT, || 0, &mut slots, &mut fx);
    let later = 3 * AGING_STEP_MS;
    gate.arrive(3, ALARM, || later, &mut slots, &mut fx);
    gate.finish(1, || later, &mut slots, &mut fx);
    assert_eq!(
        released(&fx),
        vec![2],
        "the heartbeat aged to an alarm, and came first"
    );
}

#[test]
fn a_stream_that_ends_while_held_gives_up_its_place_and_no_slot() {
    let mut gate = Gate::new(settings(1));
    let mut slots = LocalSlots::default();
    let mut fx = Vec::new();
    gate.arrive(1, ALARM, || 0, &mut slots, &mut fx);
    gate.arrive(2, COMMAND, || 0, &mut slots, &mut fx);
    gate.finish(2, || 5, &mut slots, &mut fx);
    assert_eq!((gate.held(), slots.in_flight), (0, 1));
    gate.finish(2, || 6, &mut slots, &mut fx);
    assert_eq!(slots.in_flight, 1, "a stream is forgotten once");
    gate.finish(1, || 7, &mut slots, &mut fx);
    assert_eq!((slots.in_flight, gate.holding()), (0, 0));
    assert!(fx.is_empty());
    let tally = gate.tally().class(COMMAND);
    assert_eq!((tally.queued, tally.cancelled), (1, 1));
}

#[test]
fn a_raised_limit_releases_held_requests_at_the_next_tick() {
    let mut gate = Gate::new(settings(1));
    let mut slots = LocalSlots::default();
    let mut fx = Vec::new();
    gate.arrive(1, ALARM, || 0, &mut slots, &mut fx);
    gate.arrive(2, COMMAND, || 0, &mut slots, &mut fx);
    gate.arrive(3, COMMAND, || 0, &mut slots, &mut fx);
    gate.reconfigure(settings(3));
    gate.tick(1, &mut slots, &mut fx);
    assert_eq!(released(&fx), vec![2, 3]);
    assert_eq!(slots.in_flight, 3);
}

// Properties.

#[derive(Clone, Debug)]
enum Op {
    Arrive {
        worker: usize,
        rank: usize,
    },
    /// The `n`-th (modulo) stream holding a slot ends.
    Finish {
        n: usize,
    },
    /// The `n`-th (modulo) held stream's client gives up.
    Cancel {
        n: usize,
    },
    /// Time passes; every worker ticks.
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..2usize, 0..4usize).prop_map(|(worker, rank)| Op::Arrive { worker, rank }),
        3 => any::<usize>().prop_map(|n| Op::Finish { n }),
        1 => any::<usize>().prop_map(|n| Op::Cancel { n }),
        2 => (0..1_500u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// Two workers sharing one count, and what the host saw of every stream.
struct Fleet {
    gates: [Gate; 2],
    slots: LocalSlots,
    now: u64,
    next_id: u32,
    /// Streams holding a slot, with their worker.
    running: Vec<(u32, usize)>,
    /// Streams held, with their worker.
    waiting: Vec<(u32, usize)>,
    /// Per rank: answered 503, and resumed or admitted.
    shed: [u64; 4],
    served: [u64; 4],
    capacity: usize,
}

impl Fleet {
    fn new(limit: u64, capacity: usize) -> Self {
        let gate = || Gate::new(settings(limit).with_queue_capacity(capacity));
        Self {
            gates: [gate(), gate()],
            slots: LocalSlots::default(),
            now: 0,
            next_id: 0,
            running: Vec::new(),
            waiting: Vec::new(),
            shed: [0; 4],
            served: [0; 4],
            capacity,
        }
    }

    fn limit(&self) -> u64 {
        self.gates[0].settings().limit()
    }

    fn full(&self) -> bool {
        self.slots.in_flight >= self.limit()
    }

    /// Applies a worker's effects as the filter does, checking each.
    fn apply(&mut self, worker: usize, effects: &[Effect], arriving: Option<usize>) {
        for effect in effects {
            match *effect {
                Effect::Release {
                    id,
                    rank,
                    waited_ms,
                } => {
                    // No higher class waited on the other worker.
                    let aged = rank.saturating_sub((waited_ms / AGING_STEP_MS) as usize);
                    assert!(
                        self.gates[1 - worker]
                            .held_requests()
                            .all(|h| h.rank >= aged),
                        "rank {aged} released while a higher class waited on the other worker"
                    );
                    self.waiting.retain(|&(held, _)| held != id);
                    self.running.push((id, worker));
                    self.served[rank] += 1;
                }
                Effect::Shed { id, rank, reason } => {
                    assert!(
                        self.full() || self.higher_waits_on_other(worker, rank),
                        "{reason:?} with a slot free"
                    );
                    if reason == ShedReason::Displaced {
                        assert_ne!(rank, ALARM, "an alarm was displaced");
                        let arriving = arriving.expect("displaced only by an arrival");
                        assert!(rank > arriving, "rank {rank} displaced by rank {arriving}");
                    } else {
                        assert_eq!(reason, ShedReason::TimedOut);
                    }
                    self.waiting.retain(|&(held, _)| held != id);
                    self.shed[rank] += 1;
                }
            }
        }
    }

    fn step(&mut self, op: &Op) {
        let mut fx = Vec::new();
        match *op {
            Op::Arrive { worker, rank } => {
                self.next_id += 1;
                let id = self.next_id;
                let now = self.now;
                let gate = &mut self.gates[worker];
                let verdict = gate.arrive(id, rank, || now, &mut self.slots, &mut fx);
                let lowest_held = gate.held_requests().map(|h| h.effective_rank(now)).max();
                let held = gate.held();
                self.apply(worker, &fx, Some(rank));
                match verdict {
                    Arrival::Admit => {
                        self.running.push((id, worker));
                        self.served[rank] += 1;
                    }
                    Arrival::Queue { .. } => self.waiting.push((id, worker)),
                    Arrival::Shed { reason, .. } => {
                        assert!(
                            self.full() || self.higher_waits_on_other(worker, rank),
                            "shed ({reason:?}) with a slot free"
                        );
                        match reason {
                            ShedReason::QueueFull => {
                                assert_eq!(held, self.capacity);
                                // Nothing below it held a place it could take.
                                assert!(lowest_held.is_none_or(|low| low <= rank));
                            }
                            ShedReason::MayNotWait => panic!("every class here may wait"),
                            other => panic!("an arrival shed as {other:?}"),
                        }
                        self.shed[rank] += 1;
                    }
                }
                self.check_worker(worker);
            }
            Op::Finish { n } => {
                if self.running.is_empty() {
                    return;
                }
                let (id, worker) = self.running.remove(n % self.running.len());
                self.gates[worker].finish(id, || self.now, &mut self.slots, &mut fx);
                let now = self.now;
                // The slot went to the best held on that worker.
                let releases: Vec<(usize, u64)> = fx
                    .iter()
                    .filter_map(|e| match *e {
                        Effect::Release {
                            rank, waited_ms, ..
                        } => Some((rank, waited_ms)),
                        Effect::Shed { .. } => None,
                    })
                    .collect();
                // (More than one when other workers gave slots back meanwhile.)
                for &(rank, waited_ms) in &releases {
                    let aged = rank.saturating_sub((waited_ms / AGING_STEP_MS) as usize);
                    assert!(
                        self.gates[worker]
                            .held_requests()
                            .all(|h| h.effective_rank(now) >= aged),
                        "released rank {aged} while a higher class waited"
                    );
                }
                self.apply(worker, &fx, None);
                self.check_worker(worker);
            }
            Op::Cancel { n } => {
                if self.waiting.is_empty() {
                    return;
                }
                let (id, worker) = self.waiting.remove(n % self.waiting.len());
                self.gates[worker].finish(id, || self.now, &mut self.slots, &mut fx);
                assert!(fx.is_empty());
            }
            Op::Advance { ms } => {
                self.now += ms;
                // Two rounds: a slot one worker left for the other's higher
                // class is taken in the first, what remains in the second.
                for worker in [0, 1, 0, 1] {
                    fx.clear();
                    self.gates[worker].tick(self.now, &mut self.slots, &mut fx);
                    self.apply(worker, &fx, None);
                    let now = self.now;
                    assert!(
                        self.gates[worker]
                            .held_requests()
                            .all(|h| h.deadline_ms > now),
                        "a request held past its deadline"
                    );
                }
                for worker in 0..2 {
                    self.check_worker(worker);
                }
            }
        }
        self.check_counts();
    }

    fn higher_waits_on_other(&self, worker: usize, rank: usize) -> bool {
        self.gates[1 - worker]
            .held_requests()
            .any(|h| h.rank < rank)
    }

    /// Right after a worker's call: it holds nothing while a slot is free,
    /// unless the slot is left for a higher class on the other worker.
    fn check_worker(&self, worker: usize) {
        let now = self.now;
        let best = self.gates[worker]
            .held_requests()
            .map(|h| h.effective_rank(now))
            .min();
        let higher_elsewhere = best.is_some_and(|best| {
            self.gates[1 - worker]
                .held_requests()
                .any(|h| h.rank < best)
        });
        assert!(
            self.full() || self.gates[worker].held() == 0 || higher_elsewhere,
            "worker {worker} holds {} with {} of {} slots taken",
            self.gates[worker].held(),
            self.slots.in_flight,
            self.limit()
        );
    }

    fn check_counts(&self) {
        let holding: usize = self.gates.iter().map(Gate::holding).sum();
        assert_eq!(holding as u64, self.slots.in_flight);
        assert_eq!(holding, self.running.len());
        let held: usize = self.gates.iter().map(Gate::held).sum();
        assert_eq!(held, self.waiting.len());
        assert_eq!(self.slots.waiting_total(), held as u64);
        for rank in 0..4 {
            let of_rank: usize = self.gates.iter().map(|g| g.held_in(rank)).sum();
            assert_eq!(self.slots.waiting(rank), of_rank as u64);
        }
        for rank in 0..4 {
            let [a, b] = [
                self.gates[0].tally().class(rank),
                self.gates[1].tally().class(rank),
            ];
            let arrived = a.arrived + b.arrived;
            let admitted = a.admitted + b.admitted;
            let queued = a.queued + b.queued;
            let released = a.released + b.released;
            let shed = a.shed_on_arrival + b.shed_on_arrival + a.shed_held + b.shed_held;
            let cancelled = a.cancelled + b.cancelled;
            let completed = a.completed + b.completed;
            let still_held = self
                .gates
                .iter()
                .flat_map(Gate::held_requests)
                .filter(|h| h.rank == rank)
                .count() as u64;
            assert_eq!(
                arrived,
                admitted + queued + a.shed_on_arrival + b.shed_on_arrival
            );
            assert_eq!(
                queued,
                released + a.shed_held + b.shed_held + cancelled + still_held
            );
            assert_eq!(self.served[rank], admitted + released, "rank {rank} served");
            assert_eq!(self.shed[rank], shed, "rank {rank} shed");
            assert!(completed <= admitted + released);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_gate_is_work_conserving_sheds_lowest_first_and_balances(
        limit in 1..6u64,
        capacity in 1..8usize,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let mut fleet = Fleet::new(limit, capacity);
        for op in &ops {
            fleet.step(op);
        }
        // Draining: every stream ends and time runs past every deadline;
        // everything held is then released or answered.
        for _ in 0..1_000 {
            if fleet.running.is_empty() && fleet.waiting.is_empty() {
                break;
            }
            fleet.step(&Op::Finish { n: 0 });
            fleet.step(&Op::Advance { ms: 50 });
        }
        prop_assert!(fleet.waiting.is_empty() && fleet.running.is_empty());
        prop_assert_eq!(fleet.slots.in_flight, 0);
    }
}
