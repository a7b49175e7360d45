//! Admission settings, prepared from a policy and its live feed.

use crate::feed::Feed;
use crate::model::Policy;

/// Held requests per worker: a multiple of the concurrency limit, and at
/// least a floor. Beyond it the lowest class is shed at once, so memory stays
/// bounded under any flood.
const QUEUE_PER_LIMIT: u64 = 4;
const QUEUE_FLOOR: u64 = 256;

/// The limit, the waits and the queue's bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    limit: u64,
    retry_after_s: u64,
    /// By class rank (0 = highest).
    max_wait_ms: Vec<u64>,
    queue_capacity: usize,
}

impl Settings {
    /// The settings of a validated policy under `feed`.
    pub fn new(policy: &Policy, feed: &Feed) -> Self {
        let admission = &policy.admission;
        let max_wait_ms = policy
            .priority
            .classes
            .iter()
            .map(|class| {
                admission
                    .classes
                    .get(class)
                    .and_then(|s| s.max_wait.millis())
                    .unwrap_or(0)
            })
            .collect();
        let limit = feed
            .concurrency_limit
            .unwrap_or(admission.concurrency_limit);
        let retry_after_ms = admission.retry_after.millis().unwrap_or(1_000);
        Self::from_parts(u64::from(limit), retry_after_ms, max_wait_ms)
    }

    /// Settings from their parts: the limit (at least 1 is used), the
    /// `retry-after` in milliseconds (rounded up to whole seconds, at least 1)
    /// and each class's longest wait, highest class first.
    pub fn from_parts(limit: u64, retry_after_ms: u64, max_wait_ms: Vec<u64>) -> Self {
        let limit = limit.max(1);
        let capacity = limit.saturating_mul(QUEUE_PER_LIMIT).max(QUEUE_FLOOR);
        Self {
            limit,
            retry_after_s: retry_after_ms.div_ceil(1_000).max(1),
            max_wait_ms,
            queue_capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
        }
    }

    /// Sets how many requests one worker may hold (for tests of a full queue).
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Requests in flight through one Envoy, all classes together.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The `retry-after` a shed request gets, in seconds.
    pub fn retry_after_s(&self) -> u64 {
        self.retry_after_s
    }

    /// How long a request of class `rank` may wait for a slot (0: it may not).
    pub fn max_wait_ms(&self, rank: usize) -> u64 {
        self.max_wait_ms.get(rank).copied().unwrap_or(0)
    }

    /// How many requests one worker may hold.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// How many classes there are.
    pub fn classes(&self) -> usize {
        self.max_wait_ms.len()
    }
}
