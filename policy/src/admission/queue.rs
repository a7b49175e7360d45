//! The held requests of one worker: a FIFO per class, so that the best to
//! release and the worst to displace are found among the classes' ends
//! rather than by scanning every request.

use std::collections::VecDeque;

/// Every this many milliseconds of waiting promote a held request by one
/// class, so that a steady stream of higher classes cannot starve it.
pub const AGING_STEP_MS: u64 = 1_000;

/// A held request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The stream's id.
    pub id: u32,
    /// Its class rank (0 = highest).
    pub rank: usize,
    /// When it was held.
    pub since_ms: u64,
    /// When it must be answered if still held.
    pub deadline_ms: u64,
    /// Arrival order, across classes.
    seq: u64,
}

impl Held {
    /// Its rank after aging: one class higher per [`AGING_STEP_MS`] waited.
    pub fn effective_rank(&self, now_ms: u64) -> usize {
        let promotions = now_ms.saturating_sub(self.since_ms) / AGING_STEP_MS;
        self.rank
            .saturating_sub(usize::try_from(promotions).unwrap_or(usize::MAX))
    }

    /// Release order: the highest aged class, then the earliest.
    fn priority(&self, now_ms: u64) -> (usize, u64) {
        (self.effective_rank(now_ms), self.seq)
    }
}

/// Held requests, bounded by the caller.
#[derive(Clone, Debug, Default)]
pub(super) struct Queue {
    /// By class rank; each in arrival order, so its front has waited longest
    /// (and is aged the most) and its back the least.
    classes: Vec<VecDeque<Held>>,
    len: usize,
    seq: u64,
}

impl Queue {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Requests of class `rank` held.
    pub(super) fn len_of(&self, rank: usize) -> usize {
        self.classes.get(rank).map_or(0, VecDeque::len)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn push(&mut self, id: u32, rank: usize, now_ms: u64, max_wait_ms: u64) {
        if self.classes.len() <= rank {
            self.classes.resize_with(rank + 1, VecDeque::new);
        }
        self.seq += 1;
        let held = Held {
            id,
            rank,
            since_ms: now_ms,
            deadline_ms: now_ms.saturating_add(max_wait_ms),
            seq: self.seq,
        };
        if let Some(class) = self.classes.get_mut(rank) {
            class.push_back(held);
            self.len += 1;
        }
    }

    /// The request to release next.
    pub(super) fn best(&self, now_ms: u64) -> Option<&Held> {
        self.classes
            .iter()
            .filter_map(VecDeque::front)
            .min_by_key(|h| h.priority(now_ms))
    }

    /// The request to give up first: the lowest aged class, the newest.
    pub(super) fn worst(&self, now_ms: u64) -> Option<&Held> {
        self.classes
            .iter()
            .filter_map(VecDeque::back)
            .max_by_key(|h| h.priority(now_ms))
    }

    pub(super) fn pop_best(&mut self, now_ms: u64) -> Option<Held> {
        let rank = self.best(now_ms)?.rank;
        self.pop(rank, VecDeque::pop_front)
    }

    pub(super) fn pop_worst(&mut self, now_ms: u64) -> Option<Held> {
        let rank = self.worst(now_ms)?.rank;
        self.pop(rank, VecDeque::pop_back)
    }

    fn pop(
        &mut self,
        rank: usize,
        take: impl FnOnce(&mut VecDeque<Held>) -> Option<Held>,
    ) -> Option<Held> {
        let held = take(self.classes.get_mut(rank)?)?;
        self.len -= 1;
        Some(held)
    }

    /// Whether a request of class `rank` arriving now has a held request of
    /// its class or above (aged) ahead of it.
    pub(super) fn holds_at_or_above(&self, rank: usize, now_ms: u64) -> bool {
        self.best(now_ms)
            .is_some_and(|h| h.effective_rank(now_ms) <= rank)
    }

    /// Takes request `id` of class `rank` out.
    pub(super) fn remove(&mut self, id: u32, rank: usize) -> Option<Held> {
        let class = self.classes.get_mut(rank)?;
        let index = class.iter().position(|h| h.id == id)?;
        let held = class.remove(index)?;
        self.len -= 1;
        Some(held)
    }

    /// Takes out, oldest first, every request whose deadline has come.
    pub(super) fn take_expired(&mut self, now_ms: u64, out: &mut Vec<Held>) {
        let first = out.len();
        for class in &mut self.classes {
            class.retain(|h| {
                let expired = h.deadline_ms <= now_ms;
                if expired {
                    out.push(*h);
                }
                !expired
            });
        }
        self.len -= out.len() - first;
        if let Some(taken) = out.get_mut(first..) {
            taken.sort_by_key(|h| h.seq);
        }
    }

    /// Every held request, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Held> {
        self.classes.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(queue: &mut Queue, now: u64) -> Vec<u32> {
        std::iter::from_fn(|| queue.pop_best(now))
            .map(|h| h.id)
            .collect()
    }

    #[test]
    fn releases_highest_class_first_then_in_arrival_order() {
        let mut queue = Queue::default();
        for (id, rank) in [(1, 3), (2, 0), (3, 3), (4, 1), (5, 0)] {
            queue.push(id, rank, u64::from(id), 1_000);
        }
        assert_eq!(queue.len(), 5);
        assert_eq!(ids(&mut queue, 10), vec![2, 5, 4, 1, 3]);
        assert!(queue.is_empty());
    }

    #[test]
    fn waiting_promotes_so_nothing_starves() {
        let mut queue = Queue::default();
        queue.push(1, 3, 0, 10_000);
        // A heartbeat that has waited three aging steps ranks with a fresh alarm…
        queue.push(2, 0, 3 * AGING_STEP_MS, 10_000);
        let now = 3 * AGING_STEP_MS;
        assert_eq!(queue.best(now).map(|h| h.effective_rank(now)), Some(0));
        // …and, having come first, goes first.
        assert_eq!(ids(&mut queue, now), vec![1, 2]);
    }

    #[test]
    fn the_worst_is_the_newest_of_the_lowest_aged_class() {
        let mut queue = Queue::default();
        queue.push(1, 3, 0, 10_000);
        queue.push(2, 3, 1, 10_000);
        assert_eq!(queue.pop_worst(2).map(|h| h.id), Some(2));
        // Aged two steps, the remaining heartbeat ranks with a fresh command:
        // of those two the command is the newer.
        let now = 2 * AGING_STEP_MS;
        queue.push(3, 1, now, 10_000);
        assert_eq!(queue.worst(now).map(|h| h.id), Some(3));
        assert_eq!(queue.worst(now + 1).map(|h| h.id), Some(3));
    }

    #[test]
    fn expired_requests_are_taken_out_at_their_deadline_oldest_first() {
        let mut queue = Queue::default();
        queue.push(1, 3, 0, 100);
        queue.push(2, 0, 10, 90);
        queue.push(3, 0, 0, 2_000);
        let mut out = Vec::new();
        queue.take_expired(99, &mut out);
        assert!(out.is_empty());
        queue.take_expired(100, &mut out);
        assert_eq!(out.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn removing_forgets_a_request_once() {
        let mut queue = Queue::default();
        queue.push(1, 2, 0, 10);
        assert_eq!(queue.remove(1, 1), None, "not in that class");
        assert_eq!(queue.remove(1, 2).map(|h| h.id), Some(1));
        assert_eq!(queue.remove(1, 2), None);
        assert!(queue.is_empty());
    }
}
