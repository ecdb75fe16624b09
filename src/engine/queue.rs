//! The queue discipline: the order in which admitted jobs wait for a slot.
//!
//! [`Queue`] starts as a plain FIFO ring and turns itself into a priority heap the first
//! time a job with a priority other than 0 arrives, so a pool that never uses priorities
//! pays nothing for them. Among equal priorities the order is FIFO (by job id, which is
//! the admission order); jobs put back at the front (interrupted re-runs) go before all.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

/// What the queue needs to know of a queued item.
pub(crate) trait Ordered {
    /// Higher runs first.
    fn priority(&self) -> i32;
    /// The admission order: lower runs first among equal priorities.
    fn seq(&self) -> u64;
}

pub(crate) enum Queue<T> {
    Fifo(VecDeque<T>),
    Heap {
        heap: BinaryHeap<ByPriority<T>>,
        /// Items put back at the front, in order: they go before the heap.
        front: VecDeque<T>,
    },
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue::Fifo(VecDeque::new())
    }
}

pub(crate) struct ByPriority<T>(T);

impl<T: Ordered> PartialEq for ByPriority<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T: Ordered> Eq for ByPriority<T> {}

impl<T: Ordered> PartialOrd for ByPriority<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: Ordered> Ord for ByPriority<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        // The heap pops its greatest: higher priority, then lower seq.
        self.0
            .priority()
            .cmp(&other.0.priority())
            .then_with(|| other.0.seq().cmp(&self.0.seq()))
    }
}

impl<T: Ordered> Queue<T> {
    /// Adds a newly admitted item.
    pub(crate) fn push(&mut self, item: T) {
        if let Queue::Fifo(ring) = self {
            if item.priority() == 0 {
                ring.push_back(item);
                return;
            }
            // The first prioritised item: keep the order so far, by seq, in a heap.
            let heap = ring.drain(..).map(ByPriority).collect();
            *self = Queue::Heap {
                heap,
                front: VecDeque::new(),
            };
        }
        if let Queue::Heap { heap, .. } = self {
            heap.push(ByPriority(item));
        }
    }

    /// Puts back an item that must go first (an interrupted run).
    pub(crate) fn push_front(&mut self, item: T) {
        match self {
            Queue::Fifo(ring) => ring.push_front(item),
            Queue::Heap { front, .. } => front.push_front(item),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Queue::Fifo(ring) => ring.len(),
            Queue::Heap { heap, front } => heap.len() + front.len(),
        }
    }

    /// The next item to start.
    pub(crate) fn pop(&mut self) -> Option<T> {
        match self {
            Queue::Fifo(ring) => ring.pop_front(),
            Queue::Heap { heap, front } => front.pop_front().or_else(|| heap.pop().map(|b| b.0)),
        }
    }

    /// The first item, in queue order, that `ok` accepts, or `None`. Items before it stay
    /// where they are. Costs a scan past the refused items.
    pub(crate) fn pop_first(&mut self, mut ok: impl FnMut(&T) -> bool) -> Option<T> {
        match self {
            Queue::Fifo(ring) => {
                let pos = ring.iter().position(ok)?;
                ring.remove(pos)
            }
            Queue::Heap { heap, front } => {
                if let Some(pos) = front.iter().position(&mut ok) {
                    return front.remove(pos);
                }
                let mut refused = Vec::new();
                let mut found = None;
                while let Some(b) = heap.pop() {
                    if ok(&b.0) {
                        found = Some(b.0);
                        break;
                    }
                    refused.push(b);
                }
                heap.extend(refused);
                found
            }
        }
    }

    /// How many items `ok` accepts, visited in queue order, counting no further than
    /// `most`.
    pub(crate) fn count(&self, most: usize, mut ok: impl FnMut(&T) -> bool) -> usize {
        let mut n = 0;
        let mut visit = |item: &T| {
            if ok(item) {
                n += 1;
            }
            n < most
        };
        match self {
            Queue::Fifo(ring) => {
                for item in ring {
                    if !visit(item) {
                        break;
                    }
                }
            }
            Queue::Heap { heap, front } => {
                // In queue order, as `pop_first` takes them: a heap iterates in storage
                // order, and the picker's answer depends on the jobs before (weights). A
                // heap of references (built in linear time) yields that order lazily, so a
                // count that stops early sorts nothing beyond what it visits. (Popping the
                // visited items from the queue's own heap and pushing them back measured
                // slower: a count may visit most of the queue.)
                for item in front {
                    if !visit(item) {
                        return n;
                    }
                }
                let mut ordered: BinaryHeap<&ByPriority<T>> = heap.iter().collect();
                while let Some(b) = ordered.pop() {
                    if !visit(&b.0) {
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
        match self {
            Queue::Fifo(ring) => {
                let mut kept = VecDeque::with_capacity(ring.len());
                for mut item in ring.drain(..) {
                    if take(&mut item) {
                        out.push(item);
                    } else {
                        kept.push_back(item);
                    }
                }
                *ring = kept;
            }
            Queue::Heap { heap, front } => {
                let mut kept = VecDeque::with_capacity(front.len());
                for mut item in front.drain(..) {
                    if take(&mut item) {
                        out.push(item);
                    } else {
                        kept.push_back(item);
                    }
                }
                *front = kept;
                let mut rest = Vec::with_capacity(heap.len());
                for ByPriority(mut item) in std::mem::take(heap).into_vec() {
                    if take(&mut item) {
                        out.push(item);
                    } else {
                        rest.push(ByPriority(item));
                    }
                }
                *heap = rest.into();
            }
        }
        out
    }

    /// Visits every item (the heap's in no particular order).
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(&mut T)) {
        match self {
            Queue::Fifo(ring) => ring.iter_mut().for_each(f),
            Queue::Heap { heap, front } => {
                front.iter_mut().for_each(&mut f);
                let mut items = std::mem::take(heap).into_vec();
                items.iter_mut().for_each(|b| f(&mut b.0));
                *heap = items.into();
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
        assert!(matches!(q, Queue::Fifo(_)));
        q.push(Item(5, 2));
        q.push(Item(-1, 3));
        q.push(Item(5, 4));
        q.push(Item(0, 5));
        q.push_front(Item(-9, 6)); // an interrupted run goes first, whatever its priority
        assert_eq!(drain(&mut q), [6, 2, 4, 0, 1, 5, 3]);
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

    /// `count` visits a heap in the order `pop_first` takes from it, not in storage order:
    /// a picker that stops at the first refusal (weights) counts what `pop_first` finds.
    #[test]
    fn count_visits_a_heap_in_queue_order() {
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
