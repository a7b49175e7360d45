//! The admission queue: requests held because their class is over its share,
//! released highest class first as capacity frees, and never held past their
//! class's maximum wait.
//!
//! Each Envoy worker keeps one queue (its wasm VM's); the in-flight count it
//! is compared against is shared by all workers. Time is passed in, in
//! milliseconds, so the queue is a pure data structure.

/// Every this many milliseconds of waiting promote a queued request by one
/// class, so that a steady stream of higher classes cannot starve it.
pub const AGING_STEP_MS: u64 = 1_000;

/// A held request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queued {
    /// The stream's context id.
    pub id: u32,
    /// Its class rank (0 = highest).
    pub rank: usize,
    /// When it was queued.
    pub since_ms: u64,
    /// When it must be shed if still queued.
    pub deadline_ms: u64,
    seq: u64,
}

impl Queued {
    /// Its rank after aging: one class higher per [`AGING_STEP_MS`] waited.
    pub fn effective_rank(&self, now_ms: u64) -> usize {
        let promotions = now_ms.saturating_sub(self.since_ms) / AGING_STEP_MS;
        self.rank
            .saturating_sub(usize::try_from(promotions).unwrap_or(usize::MAX))
    }
}

/// The queue is full: the request must be shed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

/// A bounded priority queue of held requests.
#[derive(Clone, Debug)]
pub struct AdmissionQueue {
    entries: Vec<Queued>,
    capacity: usize,
    seq: u64,
}

impl AdmissionQueue {
    /// An empty queue holding at most `capacity` requests.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Vec::new(),
            capacity,
            seq: 0,
        }
    }

    /// Requests held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no request is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Changes the bound (for a new configuration); held requests stay.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    /// Holds request `id` of class `rank` for at most `max_wait_ms`. When the
    /// queue is full, the request takes the place of the lowest-class held
    /// request below it, which is returned to be shed; with none below it, the
    /// new request itself cannot be held.
    pub fn push(
        &mut self,
        id: u32,
        rank: usize,
        now_ms: u64,
        max_wait_ms: u64,
    ) -> Result<Option<Queued>, QueueFull> {
        let mut evicted = None;
        if self.entries.len() >= self.capacity {
            let (index, worst) = self
                .entries
                .iter()
                .enumerate()
                .max_by_key(|(_, q)| (q.effective_rank(now_ms), q.seq))
                .ok_or(QueueFull)?;
            if worst.effective_rank(now_ms) <= rank {
                return Err(QueueFull);
            }
            evicted = Some(self.entries.swap_remove(index));
        }
        self.seq += 1;
        self.entries.push(Queued {
            id,
            rank,
            since_ms: now_ms,
            deadline_ms: now_ms.saturating_add(max_wait_ms),
            seq: self.seq,
        });
        Ok(evicted)
    }

    /// Forgets request `id` (its stream ended while held); whether it was held.
    pub fn remove(&mut self, id: u32) -> bool {
        let before = self.entries.len();
        self.entries.retain(|q| q.id != id);
        self.entries.len() != before
    }

    /// Removes and returns the requests whose wait has run out, oldest first.
    pub fn take_expired(&mut self, now_ms: u64) -> Vec<Queued> {
        let mut expired: Vec<Queued> = self
            .entries
            .iter()
            .copied()
            .filter(|q| q.deadline_ms <= now_ms)
            .collect();
        self.entries.retain(|q| q.deadline_ms > now_ms);
        expired.sort_by_key(|q| q.seq);
        expired
    }

    /// Whether a request of class `rank` arriving now would overtake a held
    /// request of the same or a higher (aged) class; then it must queue too.
    pub fn holds_at_or_above(&self, rank: usize, now_ms: u64) -> bool {
        self.entries
            .iter()
            .any(|q| q.effective_rank(now_ms) <= rank)
    }

    /// Removes and returns the next request to release, if `admits(rank)` says
    /// its (aged) class may be admitted now: the highest aged class first,
    /// first come first served within a class.
    pub fn pop_next(&mut self, now_ms: u64, admits: impl Fn(usize) -> bool) -> Option<Queued> {
        let (index, best) = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, q)| (q.effective_rank(now_ms), q.seq))?;
        if !admits(best.effective_rank(now_ms)) {
            return None;
        }
        Some(self.entries.swap_remove(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_highest_class_first_then_in_arrival_order() {
        let mut queue = AdmissionQueue::new(10);
        queue.push(1, 3, 0, 1_000).unwrap();
        queue.push(2, 0, 1, 1_000).unwrap();
        queue.push(3, 3, 2, 1_000).unwrap();
        queue.push(4, 1, 3, 1_000).unwrap();
        queue.push(5, 0, 4, 1_000).unwrap();
        let order: Vec<u32> = std::iter::from_fn(|| queue.pop_next(10, |_| true))
            .map(|q| q.id)
            .collect();
        assert_eq!(order, vec![2, 5, 4, 1, 3]);
    }

    #[test]
    fn nothing_is_released_when_the_best_class_is_over_its_share() {
        let mut queue = AdmissionQueue::new(10);
        queue.push(1, 2, 0, 1_000).unwrap();
        queue.push(2, 3, 0, 1_000).unwrap();
        assert_eq!(queue.pop_next(0, |rank| rank > 2), None);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.pop_next(0, |rank| rank <= 2).map(|q| q.id), Some(1));
    }

    #[test]
    fn waiting_promotes_so_nothing_starves() {
        let mut queue = AdmissionQueue::new(10);
        queue.push(1, 3, 0, 10_000).unwrap();
        // A heartbeat that has waited three aging steps ranks with a fresh alarm…
        queue.push(2, 0, 3 * AGING_STEP_MS, 10_000).unwrap();
        assert_eq!(queue.entries[0].effective_rank(3 * AGING_STEP_MS), 0);
        // …and, having come first, goes first.
        assert_eq!(
            queue.pop_next(3 * AGING_STEP_MS, |_| true).map(|q| q.id),
            Some(1)
        );
    }

    #[test]
    fn expired_requests_are_taken_out_at_their_deadline() {
        let mut queue = AdmissionQueue::new(10);
        queue.push(1, 3, 0, 100).unwrap();
        queue.push(2, 0, 0, 2_000).unwrap();
        assert!(queue.take_expired(99).is_empty());
        assert_eq!(
            queue
                .take_expired(100)
                .iter()
                .map(|q| q.id)
                .collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn the_queue_is_bounded_and_forgets_ended_streams() {
        let mut queue = AdmissionQueue::new(2);
        queue.push(1, 0, 0, 10).unwrap();
        queue.push(2, 0, 0, 10).unwrap();
        assert_eq!(queue.push(3, 0, 0, 10), Err(QueueFull));
        assert!(queue.remove(1));
        assert!(!queue.remove(1));
        assert_eq!(queue.push(3, 0, 0, 10), Ok(None));
    }

    #[test]
    fn when_full_a_higher_class_displaces_the_lowest_newest() {
        let mut queue = AdmissionQueue::new(3);
        queue.push(1, 3, 0, 1_000).unwrap();
        queue.push(2, 3, 1, 1_000).unwrap();
        queue.push(3, 1, 2, 1_000).unwrap();
        let evicted = queue.push(4, 0, 3, 1_000).unwrap().unwrap();
        assert_eq!(evicted.id, 2, "the newest of the lowest class goes");
        // An equal or lower class cannot displace anyone.
        assert_eq!(queue.push(5, 3, 4, 1_000), Err(QueueFull));
        assert_eq!(queue.len(), 3);
    }
}
