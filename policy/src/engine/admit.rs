//! Stage 2: admission. A class is admitted at once while the requests in
//! flight stay below its share of the concurrency limit; beyond that it
//! queues for at most its maximum wait, or is shed when it may not wait.

use serde::Serialize;

use crate::feed::{Feed, percent_to_basis_points};
use crate::model::Policy;
use crate::split::BUCKETS;

/// What happens to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    /// Forward it now.
    Admit,
    /// Hold it until capacity frees, for at most `max_wait_ms`.
    Queue {
        /// Longest wait before it is shed.
        max_wait_ms: u64,
    },
    /// Answer 503 with `retry-after`.
    Shed {
        /// The `retry-after` value, in seconds.
        retry_after_s: u64,
    },
}

/// An admission decision with its evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Admission {
    /// The decision.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Requests in flight when it was taken.
    pub in_flight: u64,
    /// The class's threshold: admitted at once below it.
    pub threshold: u64,
    /// The concurrency limit in force.
    pub limit: u64,
}

#[derive(Clone, Debug)]
struct ClassLimits {
    share_bp: u32,
    max_wait_ms: u64,
}

/// Admission settings, prepared.
#[derive(Clone, Debug)]
pub struct Admitter {
    limit: u64,
    retry_after_s: u64,
    classes: Vec<ClassLimits>,
}

impl Admitter {
    pub(super) fn new(policy: &Policy, feed: &Feed) -> Self {
        let admission = &policy.admission;
        let classes = policy
            .priority
            .classes
            .iter()
            .map(|class| {
                let settings = admission.classes.get(class);
                ClassLimits {
                    share_bp: settings.map_or(BUCKETS, |s| percent_to_basis_points(s.share)),
                    max_wait_ms: settings.and_then(|s| s.max_wait.millis()).unwrap_or(0),
                }
            })
            .collect();
        let retry_after_ms = admission.retry_after.millis().unwrap_or(1_000);
        Self {
            limit: u64::from(
                feed.concurrency_limit
                    .unwrap_or(admission.concurrency_limit)
                    .max(1),
            ),
            retry_after_s: retry_after_ms.div_ceil(1_000).max(1),
            classes,
        }
    }

    /// The concurrency limit in force.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The `retry-after` a shed request gets, in seconds.
    pub fn retry_after_s(&self) -> u64 {
        self.retry_after_s
    }

    /// Requests in flight below which class `rank` is admitted at once (at least 1).
    pub fn threshold(&self, rank: usize) -> u64 {
        let share = self.classes.get(rank).map_or(BUCKETS, |c| c.share_bp);
        (self.limit * u64::from(share) / u64::from(BUCKETS)).max(1)
    }

    /// How long class `rank` may queue.
    pub fn max_wait_ms(&self, rank: usize) -> u64 {
        self.classes.get(rank).map_or(0, |c| c.max_wait_ms)
    }

    /// The decision for a request of class `rank` with `in_flight` in flight.
    pub fn admit(&self, rank: usize, in_flight: u64) -> Admission {
        let threshold = self.threshold(rank);
        let max_wait_ms = self.max_wait_ms(rank);
        let verdict = if in_flight < threshold {
            Verdict::Admit
        } else if max_wait_ms > 0 {
            Verdict::Queue { max_wait_ms }
        } else {
            Verdict::Shed {
                retry_after_s: self.retry_after_s,
            }
        };
        Admission {
            verdict,
            in_flight,
            threshold,
            limit: self.limit,
        }
    }
}
