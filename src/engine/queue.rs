//! The queue discipline: the order in which admitted jobs wait for a slot.
//!
//! [`Queue`] starts as a plain FIFO ring and turns itself into a sorted map the first
//! time a job with a priority other than 0 arrives, so a pool that never uses priorities
//! pays nothing for them. Among equal priorities the order is FIFO (by job id, which is
//! the admission order); jobs put back at the front (interrupted re-runs) go before all.
//!
//! The map (a `BTreeMap` keyed by priority, then id) rather than a binary heap: flow
//! control visits the queue in order on every start ([`Queue::count`]), which a map does
//! by iterating and a heap only by sorting (measured: sorting made a pool with priorities
//! and limits 1.7x slower).

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};

/// What the queue needs to know of a queued item.
pub(crate) trait Ordered {
    /// Higher runs first.
    fn priority(&self) -> i32;
    /// The admission order: lower runs first among equal priorities.
    fn seq(&self) -> u64;
}

/// Queue order: higher priority, then lower seq; then the order of insertion, so that two
/// items can never share a key.
type Key = (Reverse<i32>, u64, u64);

pub(crate) enum Queue<T> {
    /// The ring, and how many items at its head were put back at the front (interrupted
    /// runs, which go first: an item put back at its place goes after them).
    Fifo(VecDeque<T>, usize),
    Sorted {
        map: BTreeMap<Key, T>,
        /// Insertions so far (the last part of the key).
        inserted: u64,
        /// Items put back at the front, in order: they go before the map.
        front: VecDeque<T>,
    },
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue::Fifo(VecDeque::new(), 0)
    }
}

impl<T: Ordered> Queue<T> {
    /// Adds a newly admitted item.
    pub(crate) fn push(&mut self, item: T) {
        if let Queue::Fifo(ring, first) = self {
            if item.priority() == 0 {
                ring.push_back(item);
                return;
            }
            // The first prioritised item: keep the order so far, by seq, in the map; the
            // items put back at the front stay first.
            let front: VecDeque<T> = ring.drain(..*first).collect();
            let mut map = BTreeMap::new();
            let mut inserted = 0;
            for old in ring.drain(..) {
                map.insert((Reverse(old.priority()), old.seq(), inserted), old);
                inserted += 1;
            }
            *self = Queue::Sorted {
                map,
                inserted,
                front,
            };
        }
        if let Queue::Sorted { map, inserted, .. } = self {
            map.insert((Reverse(item.priority()), item.seq(), *inserted), item);
            *inserted += 1;
        }
    }

    /// Puts back an item that must go first (an interrupted run).
    pub(crate) fn push_front(&mut self, item: T) {
        match self {
            Queue::Fifo(ring, first) => {
                ring.push_front(item);
                *first += 1;
            }
            Queue::Sorted { front, .. } => front.push_front(item),
        }
    }

    /// Puts back an item that left the queue and did not start (a job handed to a slot of
    /// its own runtime that found the rate window full, or whose slot was dropped with its
    /// runtime or taken over at the exit before it started it): at its place by seq among the
    /// items of its priority, before the first later one, so that several put back keep
    /// their order; after the items pushed to the front (interrupted re-runs), which stay
    /// first.
    pub(crate) fn put_back(&mut self, item: T) {
        match self {
            Queue::Fifo(ring, first) if item.priority() == 0 => {
                let pos = ring
                    .iter()
                    .skip(*first)
                    .position(|x| x.priority() == 0 && x.seq() > item.seq())
                    .map_or(ring.len(), |p| p + *first);
                ring.insert(pos, item);
            }
            // A prioritised one in a ring: the ring becomes sorted, as for a new one.
            _ => self.push(item),
        }
    }

    /// Whether it is ordered by priority (a job it takes may go ahead of queued ones).
    pub(crate) fn is_sorted(&self) -> bool {
        matches!(self, Queue::Sorted { .. })
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Queue::Fifo(ring, _) => ring.len(),
            Queue::Sorted { map, front, .. } => map.len() + front.len(),
        }
    }

    /// The item [`pop`](Self::pop) would take.
    pub(crate) fn first(&self) -> Option<&T> {
        match self {
            Queue::Fifo(ring, _) => ring.front(),
            Queue::Sorted { map, front, .. } => front
                .front()
                .or_else(|| map.first_key_value().map(|(_, item)| item)),
        }
    }

    /// The next item to start.
    pub(crate) fn pop(&mut self) -> Option<T> {
        match self {
            Queue::Fifo(ring, first) => {
                *first = first.saturating_sub(1);
                ring.pop_front()
            }
            Queue::Sorted { map, front, .. } => front
                .pop_front()
                .or_else(|| map.pop_first().map(|(_, item)| item)),
        }
    }

    /// The first item, in queue order, that `ok` accepts, or `None`. Items before it stay
    /// where they are. Costs a scan past the refused items.
    pub(crate) fn pop_first(&mut self, mut ok: impl FnMut(&T) -> bool) -> Option<T> {
        match self {
            Queue::Fifo(ring, first) => {
                let pos = ring.iter().position(ok)?;
                *first -= usize::from(pos < *first);
                ring.remove(pos)
            }
            Queue::Sorted { map, front, .. } => {
                if let Some(pos) = front.iter().position(&mut ok) {
                    return front.remove(pos);
                }
                let key = *map.iter().find(|(_, item)| ok(item))?.0;
                map.remove(&key)
            }
        }
    }

    /// The item [`pop_first`](Self::pop_first) would take with `ok`, left in place.
    pub(crate) fn first_where(&self, mut ok: impl FnMut(&T) -> bool) -> Option<&T> {
        match self {
            Queue::Fifo(ring, _) => ring.iter().find(|item| ok(item)),
            Queue::Sorted { map, front, .. } => {
                front.iter().chain(map.values()).find(|item| ok(item))
            }
        }
    }

    /// Removes the item whose [`seq`](Ordered::seq) is `seq` and whose priority is
    /// `priority`, if it is queued. A FIFO ring is in seq order but for items put back at
    /// the front, so it is searched by bisection first; a sorted queue is keyed by
    /// priority and seq. Items put back at the front are searched one by one.
    pub(crate) fn remove_seq(&mut self, seq: u64, priority: i32) -> Option<T> {
        match self {
            Queue::Fifo(ring, first) => {
                let pos = match ring.binary_search_by_key(&seq, T::seq) {
                    Ok(pos) => Some(pos),
                    Err(_) => ring.iter().position(|item| item.seq() == seq),
                }?;
                *first -= usize::from(pos < *first);
                ring.remove(pos)
            }
            Queue::Sorted { map, front, .. } => {
                if let Some(pos) = front.iter().position(|item| item.seq() == seq) {
                    return front.remove(pos);
                }
                let from = (Reverse(priority), seq, 0);
                let to = (Reverse(priority), seq, u64::MAX);
                let key = *map.range(from..=to).next()?.0;
                map.remove(&key)
            }
        }
    }

    /// How many items `ok` accepts, visited in queue order (as `pop_first` takes them: the
    /// picker's answer depends on the jobs before, for weights), counting no further than
    /// `most`. Costs the items it visits, not the queue's length.
    pub(crate) fn count(&self, most: usize, mut ok: impl FnMut(&T) -> bool) -> usize {
        let mut n = 0;
        let mut visit = |item: &T| {
            if ok(item) {
                n += 1;
            }
            n < most
        };
        match self {
            Queue::Fifo(ring, _) => {
                for item in ring {
                    if !visit(item) {
                        break;
                    }
                }
            }
            Queue::Sorted { map, front, .. } => {
                for item in front.iter().chain(map.values()) {
                    if !visit(item) {
                        break;
                    }
                }
            }
        }
        n
    }

    /// Removes the items for which `take` returns `true`.
    pub(crate) fn extract_if(&mut self, mut take: impl FnMut(&mut T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        // Returns how many of the first `first` items it kept.
        let mut from_ring = |ring: &mut VecDeque<T>, first: usize| {
            let mut kept = VecDeque::with_capacity(ring.len());
            let mut kept_first = 0;
            for (n, mut item) in ring.drain(..).enumerate() {
                if take(&mut item) {
                    out.push(item);
                } else {
                    kept_first += usize::from(n < first);
                    kept.push_back(item);
                }
            }
            *ring = kept;
            kept_first
        };
        match self {
            Queue::Fifo(ring, first) => *first = from_ring(ring, *first),
            Queue::Sorted { map, front, .. } => {
                from_ring(front, 0);
                let taken: Vec<Key> = map
                    .iter_mut()
                    .filter_map(|(key, item)| take(item).then_some(*key))
                    .collect();
                out.extend(taken.iter().filter_map(|key| map.remove(key)));
            }
        }
        out
    }

    /// Visits every item (in queue order).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&T)) {
        match self {
            Queue::Fifo(ring, _) => ring.iter().for_each(f),
            Queue::Sorted { map, front, .. } => {
                front.iter().for_each(&mut f);
                map.values().for_each(f);
            }
        }
    }

    /// Visits every item (in queue order), mutably.
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(&mut T)) {
        match self {
            Queue::Fifo(ring, _) => ring.iter_mut().for_each(f),
            Queue::Sorted { map, front, .. } => {
                front.iter_mut().for_each(&mut f);
                map.values_mut().for_each(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(i32, u64);

    impl Ordered for Item {
        fn priority(&self) -> i32 {
            self.0
        }
        fn seq(&self) -> u64 {
            self.1
        }
    }

    fn drain(q: &mut Queue<Item>) -> Vec<u64> {
        std::iter::from_fn(|| q.pop()).map(|i| i.1).collect()
    }

    #[test]
    fn fifo_until_a_priority_arrives_then_priority_then_fifo() {
        let mut q = Queue::default();
        q.push(Item(0, 0));
        q.push(Item(0, 1));
        assert!(matches!(q, Queue::Fifo(..)));
        q.push(Item(5, 2));
        q.push(Item(-1, 3));
        q.push(Item(5, 4));
        q.push(Item(0, 5));
        q.push_front(Item(-9, 6)); // an interrupted run goes first, whatever its priority
        assert_eq!(drain(&mut q), [6, 2, 4, 0, 1, 5, 3]);
    }

    /// `put_back` puts items back at their place by seq, in a ring and in a sorted queue.
    #[test]
    fn put_back_keeps_the_seq_order_of_items_put_back() {
        for sorted in [false, true] {
            let mut q = Queue::default();
            for seq in [5, 6] {
                q.push(Item(0, seq));
            }
            if sorted {
                q.push(Item(1, 7));
            }
            // Taken in order and put back in the same order: they keep it.
            for seq in [2, 3, 4] {
                q.put_back(Item(0, seq));
            }
            let want: Vec<u64> = if sorted {
                vec![7, 2, 3, 4, 5, 6]
            } else {
                vec![2, 3, 4, 5, 6]
            };
            assert_eq!(drain(&mut q), want, "sorted {sorted}");
        }
    }

    /// `remove_seq` takes exactly the item named, from a ring out of seq order (items put
    /// back at the front), from a sorted queue, and from its front; nothing for an item
    /// that is not there.
    #[test]
    fn remove_seq_takes_the_item_named_and_nothing_else() {
        let mut q = Queue::default();
        for s in 10..20 {
            q.push(Item(0, s));
        }
        assert_eq!(q.remove_seq(19, 0), Some(Item(0, 19)));
        assert_eq!(q.remove_seq(10, 0), Some(Item(0, 10)));
        assert_eq!(q.remove_seq(99, 0), None);
        let mut q = Queue::default();
        for s in 0..6 {
            q.push(Item(0, s));
        }
        q.push_front(Item(0, 40));
        q.push_front(Item(0, 30)); // ring: 30, 40, 0, 1, ..., 5
        assert_eq!(q.remove_seq(40, 0), Some(Item(0, 40)));
        assert_eq!(q.remove_seq(3, 0), Some(Item(0, 3)));
        assert_eq!(drain(&mut q), [30, 0, 1, 2, 4, 5]);

        let mut q = Queue::default();
        for (p, s) in [(0, 0), (5, 1), (5, 2), (-1, 3)] {
            q.push(Item(p, s));
        }
        q.push_front(Item(9, 7));
        assert_eq!(q.remove_seq(2, 0), None, "the priority is part of the key");
        assert_eq!(q.remove_seq(2, 5), Some(Item(5, 2)));
        assert_eq!(q.remove_seq(7, 9), Some(Item(9, 7)));
        assert_eq!(q.remove_seq(3, -1), Some(Item(-1, 3)));
        assert_eq!(drain(&mut q), [1, 0]);
    }

    /// An item put back at its place goes after the items pushed to the front (interrupted
    /// runs), in a ring as in a sorted queue; a ring that becomes sorted keeps those first.
    #[test]
    fn put_back_goes_after_the_items_pushed_to_the_front() {
        let mut q = Queue::default();
        q.push(Item(0, 3));
        q.push_front(Item(0, 2)); // an interrupted run
        q.put_back(Item(0, 1)); // taken and never started
        assert_eq!(drain(&mut q), [2, 1, 3]);
        let mut q = Queue::default();
        q.push(Item(0, 3));
        q.push_front(Item(0, 2));
        q.push(Item(5, 4)); // sorted now: the interrupted run stays first
        q.put_back(Item(0, 1));
        assert_eq!(drain(&mut q), [2, 4, 1, 3]);
        // The count of items at the front follows what leaves them.
        let mut q = Queue::default();
        for s in 10..13 {
            q.push(Item(0, s));
        }
        q.push_front(Item(0, 21));
        q.push_front(Item(0, 20));
        assert_eq!(q.pop(), Some(Item(0, 20)));
        assert_eq!(q.extract_if(|i| i.1 == 21).len(), 1);
        q.put_back(Item(0, 5)); // no interrupted run left: back to the head
        assert_eq!(drain(&mut q), [5, 10, 11, 12]);
        let mut q = Queue::default();
        q.push(Item(0, 10));
        q.push_front(Item(0, 21));
        assert_eq!(q.remove_seq(21, 0), Some(Item(0, 21)));
        q.put_back(Item(0, 5));
        assert_eq!(drain(&mut q), [5, 10]);
    }

    #[test]
    fn pop_first_skips_refused_items_and_keeps_them() {
        let mut q = Queue::default();
        for (p, s) in [(0, 0), (0, 1), (0, 2)] {
            q.push(Item(p, s));
        }
        assert_eq!(q.pop_first(|i| i.1 == 1), Some(Item(0, 1)));
        assert_eq!(q.count(10, |_| true), 2);
        q.push(Item(3, 3));
        assert_eq!(q.pop_first(|i| i.1 != 3), Some(Item(0, 0)));
        assert_eq!(drain(&mut q), [3, 2]);
    }

    /// `count` yields exactly the order of `pop`, over many items with repeated priorities,
    /// after pops and pushes, with an item put back at the front.
    #[test]
    fn count_visits_a_large_queue_in_pop_order() {
        let mut q = Queue::default();
        let mut seq = 0;
        let mut push = |q: &mut Queue<Item>, n: u64| {
            for _ in 0..n {
                let p = ((seq * 7919) % 13) as i32 - 6;
                q.push(Item(p, seq));
                seq += 1;
            }
        };
        push(&mut q, 300);
        for _ in 0..40 {
            q.pop();
        }
        push(&mut q, 100);
        q.push_front(Item(-100, 10_000));
        let mut seen = Vec::new();
        let n = q.count(usize::MAX, |i| {
            seen.push(i.1);
            i.0 >= 0 || i.1 == 10_000
        });
        let taken = q.extract_if(|i| i.1 % 5 == 0);
        assert!(taken.iter().all(|i| i.1 % 5 == 0) && !taken.is_empty());
        let rest = drain(&mut q);
        seen.retain(|s| s % 5 != 0);
        assert_eq!(seen, rest, "count's order is the queue's");
        assert!(n > 0 && n < 360);
    }

    /// `count` visits a prioritised queue in the order `pop_first` takes from it (finding
    /// 11: a heap's storage order was not it): a picker that stops at the first refusal
    /// (weights) counts what `pop_first` finds.
    #[test]
    fn count_visits_a_prioritised_queue_in_queue_order() {
        let mut q = Queue::default();
        for (p, s) in [(10, 0), (1, 1), (5, 2), (7, 3), (0, 4)] {
            q.push(Item(p, s));
        }
        q.push_front(Item(-9, 5)); // an interrupted run: first
        let mut seen = Vec::new();
        q.count(usize::MAX, |i| {
            seen.push(i.1);
            true
        });
        assert_eq!(seen, [5, 0, 3, 2, 1, 4]);
        // Counting no further than `most` visits no further either.
        let mut seen = Vec::new();
        let n = q.count(3, |i| {
            seen.push(i.1);
            i.1 != 0
        });
        assert_eq!((n, seen), (3, vec![5, 0, 3, 2]));
        assert_eq!(drain(&mut q), [5, 0, 3, 2, 1, 4], "counting took nothing");
        for (p, s) in [(10, 0), (1, 1), (5, 2), (7, 3), (0, 4)] {
            q.push(Item(p, s));
        }
        // Stops accepting at seq 1 (priority 1): the jobs before it in queue order count.
        let mut blocked = false;
        let n = q.count(usize::MAX, |i| {
            blocked |= i.1 == 1;
            !blocked
        });
        assert_eq!(n, 3);
    }
}
