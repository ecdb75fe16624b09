//! The queue discipline: the order in which admitted jobs wait for a slot.
//!
//! The engine only talks to [`Discipline`]; [`Fifo`] is the one it uses today. A priority
//! queue is another implementation of the trait (and a builder option choosing it).

use std::collections::VecDeque;

/// Where admitted jobs wait for a slot. The engine holds it under its lock; no method runs
/// user code.
pub(crate) trait Discipline<T>: Send {
    /// Adds a newly admitted job.
    fn push(&mut self, item: T);
    /// Puts back a job that must go first (an interrupted run, or a job that could not be
    /// started yet).
    fn push_front(&mut self, item: T);
    /// The next job to start.
    fn pop(&mut self) -> Option<T>;
    fn len(&self) -> usize;
    /// Removes the jobs for which `take` returns `true`, in queue order.
    fn extract_if(&mut self, take: impl FnMut(&mut T) -> bool) -> Vec<T>;
    /// Visits every job in queue order.
    fn for_each_mut(&mut self, f: impl FnMut(&mut T));
}

/// First in, first out.
pub(crate) struct Fifo<T>(VecDeque<T>);

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Fifo(VecDeque::new())
    }
}

impl<T: Send> Discipline<T> for Fifo<T> {
    fn push(&mut self, item: T) {
        self.0.push_back(item);
    }

    fn push_front(&mut self, item: T) {
        self.0.push_front(item);
    }

    fn pop(&mut self) -> Option<T> {
        self.0.pop_front()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn extract_if(&mut self, mut take: impl FnMut(&mut T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        let mut kept = VecDeque::with_capacity(self.0.len());
        for mut item in self.0.drain(..) {
            if take(&mut item) {
                out.push(item);
            } else {
                kept.push_back(item);
            }
        }
        self.0 = kept;
        out
    }

    fn for_each_mut(&mut self, f: impl FnMut(&mut T)) {
        self.0.iter_mut().for_each(f);
    }
}
