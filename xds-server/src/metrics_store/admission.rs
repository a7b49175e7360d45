//! What the filter reports of its admission decisions (counters per priority
//! class and outcome, gauges of requests in flight and queued), kept per
//! reporting source.

use std::collections::{BTreeMap, HashMap};

use weir_policy::metrics::Outcome;

/// The filter's admission outcomes for one priority class: totals since the
/// source started (cumulative counters), or since weir first heard from it
/// (delta counters, added up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClassCounts {
    /// Forwarded at once.
    pub admitted: u64,
    /// Held in the queue.
    pub queued: u64,
    /// Released from the queue and forwarded.
    pub released: u64,
    /// Answered 503.
    pub shed: u64,
}

impl ClassCounts {
    fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Admitted => self.admitted,
            Outcome::Queued => self.queued,
            Outcome::Released => self.released,
            Outcome::Shed => self.shed,
        }
    }

    fn get_mut(&mut self, outcome: Outcome) -> &mut u64 {
        match outcome {
            Outcome::Admitted => &mut self.admitted,
            Outcome::Queued => &mut self.queued,
            Outcome::Released => &mut self.released,
            Outcome::Shed => &mut self.shed,
        }
    }

    fn add(&mut self, other: &ClassCounts) {
        for outcome in Outcome::ALL {
            let theirs = other.get(outcome);
            let mine = self.get_mut(outcome);
            *mine = mine.saturating_add(theirs);
        }
    }
}

/// The filter's admission, summed over every source that reported it within
/// the retention.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Admission {
    /// Outcomes per priority class.
    pub classes: BTreeMap<String, ClassCounts>,
    /// Requests admitted and not yet finished (the sources' last values).
    pub in_flight: u64,
    /// Requests held in the admission queues (the sources' last values).
    pub queue_depth: u64,
    /// Sources summed.
    pub sources: usize,
}

/// One admission data point of one source, as the OTLP receivers hand it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdmissionPoint {
    /// A class's outcome counter: a delta to add, or the source's
    /// cumulative total, which replaces the one before.
    Count {
        /// The priority class.
        class: String,
        /// The outcome counted.
        outcome: Outcome,
        /// The delta or the total.
        value: u64,
        /// Whether `value` is a total.
        cumulative: bool,
    },
    /// The gauge of requests in flight.
    InFlight(u64),
    /// The gauge of requests queued.
    QueueDepth(u64),
}

/// Sources of admission metrics kept at most, and classes per source: a
/// misbehaving source cannot grow the store without bound.
const MAX_SOURCES: usize = 4_096;
const MAX_CLASSES_PER_SOURCE: usize = 64;

/// Every source's admission.
#[derive(Debug, Default)]
pub(super) struct Sources {
    sources: HashMap<String, Source>,
}

/// What one source last said.
#[derive(Debug, Default)]
struct Source {
    seen_ms: u64,
    classes: BTreeMap<String, ClassCounts>,
    in_flight: u64,
    queue_depth: u64,
}

impl Sources {
    pub(super) fn add(&mut self, source: &str, at_ms: u64, points: &[AdmissionPoint]) {
        if points.is_empty() {
            return;
        }
        if !self.sources.contains_key(source) {
            if self.sources.len() >= MAX_SOURCES {
                return;
            }
            self.sources.insert(source.to_owned(), Source::default());
        }
        let Some(mine) = self.sources.get_mut(source) else {
            return;
        };
        mine.seen_ms = mine.seen_ms.max(at_ms);
        for point in points {
            match point {
                AdmissionPoint::Count {
                    class,
                    outcome,
                    value,
                    cumulative,
                } => {
                    if !mine.classes.contains_key(class.as_str()) {
                        if mine.classes.len() >= MAX_CLASSES_PER_SOURCE {
                            continue;
                        }
                        mine.classes.insert(class.clone(), ClassCounts::default());
                    }
                    let Some(counts) = mine.classes.get_mut(class.as_str()) else {
                        continue;
                    };
                    let slot = counts.get_mut(*outcome);
                    *slot = if *cumulative {
                        *value
                    } else {
                        slot.saturating_add(*value)
                    };
                }
                AdmissionPoint::InFlight(v) => mine.in_flight = *v,
                AdmissionPoint::QueueDepth(v) => mine.queue_depth = *v,
            }
        }
    }

    pub(super) fn total(&self) -> Admission {
        let mut total = Admission {
            sources: self.sources.len(),
            ..Admission::default()
        };
        for source in self.sources.values() {
            for (class, counts) in &source.classes {
                match total.classes.get_mut(class.as_str()) {
                    Some(sum) => sum.add(counts),
                    None => {
                        total.classes.insert(class.clone(), *counts);
                    }
                }
            }
            total.in_flight = total.in_flight.saturating_add(source.in_flight);
            total.queue_depth = total.queue_depth.saturating_add(source.queue_depth);
        }
        total
    }

    /// Forgets the sources not heard from after `keep_after`.
    pub(super) fn prune(&mut self, keep_after: u64) {
        self.sources.retain(|_, source| source.seen_ms > keep_after);
    }
}
