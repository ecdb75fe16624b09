//! Admission: the room a pool has for jobs (queued and running ones, and places taken
//! ahead by streams and groups), counted under the engine's lock, with the submitters
//! waiting for room, served by priority, then in the order they came.
//!
//! A submit that finds room takes its place in the same critical section that queues its
//! job, and a job's end gives its place back in the one that counts the end: admission
//! costs no atomic operation of its own. (A `tokio::sync::Semaphore` beside the lock,
//! which this replaces, cost four per task: a compare-and-swap to take a permit, and its
//! waiter list's lock plus an add to give it back, even with nobody waiting; see
//! BENCHMARKS.md, "2026-12-04".)
//!
//! A freed place goes straight to the first waiter, if any (it is *granted*): so a
//! `try_submit` never takes the place of a submitter that waited, and while anyone waits
//! there is no free room. A waiter dropped after its grant passes the place on. Waiters
//! are served by their task's priority (`SubmitOptions::priority`, higher first), in the
//! order they came among equal priorities.
//!
//! At the process exit ([`barge`](Admission::barge)) places are no longer granted: the
//! runtimes the exit does not drive are frozen, and a waiter of one would hold a place
//! granted to it for ever while the tasks the exit runs wait for room. From then on every
//! waiter is woken when a place frees and takes it, if it is still free, at its next poll,
//! as a new submit takes one (RELIABILITY.md, 340).
//!
//! A waiter's waker is the submitter's: any executor's (a submit, a stream or a group
//! polled by hand or outside tokio), whose `clone`, `drop` and `wake` are that executor's
//! code, which may panic or call the pool again. None of them runs here, under the lock:
//! a waker comes in cloned ([`wait`](Admission::wait), [`poll_wait`](Admission::poll_wait)),
//! and every waker that leaves (to be woken, or one replaced or left behind, to be
//! dropped) is handed to the caller, which wakes or drops it once the lock is released
//! (through `wake_quietly` and `drop_quietly`, which catch a panic), as tokio's own
//! semaphore and `Notify` do.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::task::{Poll, Waker};

use slab::Slab;

/// The largest room a pool may have (`max_concurrency + max_queue_size`): tokio's
/// `Semaphore::MAX_PERMITS`, the limit the crate has always documented.
pub(crate) const MAX_ROOM: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// The room for waiters the line keeps once none is left: more is given back (see
/// [`Admission::remove`]).
const KEPT_ROOM: usize = 128;

/// Lives in the engine's state: every method is called under its lock.
pub(crate) struct Admission {
    /// How many places there are: `max_concurrency + max_queue_size`.
    room: usize,
    /// How many are taken. May exceed `room` after the pool shrank: then nothing is
    /// admitted until enough are given back.
    taken: usize,
    waiters: Slab<Waiter>,
    /// The waiters in the order they are served (priority, then ticket: the order they
    /// came), each with its slab key: an entry whose waiter has gone (or whose key now
    /// holds a later waiter) is skipped when reached.
    order: BinaryHeap<(i32, Reverse<u64>, usize)>,
    next_ticket: u64,
    /// Set at the process exit: places go to whoever polls first (see the module docs).
    barging: bool,
}

struct Waiter {
    ticket: u64,
    waker: Option<Waker>,
    /// Holds a place given back by a job's end (counted in `taken`).
    granted: bool,
}

/// A submitter waiting for room: the key of its entry, from [`Admission::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaitKey(usize);

impl Admission {
    pub(crate) fn new(room: usize) -> Self {
        Admission {
            room,
            taken: 0,
            waiters: Slab::new(),
            order: BinaryHeap::new(),
            next_ticket: 0,
            barging: false,
        }
    }

    /// Takes a place if one is free.
    #[inline]
    pub(crate) fn try_take(&mut self) -> bool {
        if self.taken < self.room {
            self.taken += 1;
            true
        } else {
            false
        }
    }

    /// Gives `n` places back: the first waiters get them; their wakers go to `wake`, to
    /// be woken once the lock is released.
    #[inline]
    pub(crate) fn give_back(&mut self, n: usize, wake: &mut impl Extend<Waker>) {
        debug_assert!(n <= self.taken, "more places given back than taken");
        self.taken -= n;
        // Not while every waiter left holds its place already (granted, not polled yet:
        // their entries stay in `waiters`, out of `order`), which a full pool's job ends
        // find again and again: `grant`, which pops the empty order and returns, was a call
        // of about 50 instructions per job. Once barged, waiters are not in `order`.
        if !self.waiters.is_empty() && (self.barging || !self.order.is_empty()) {
            self.grant(wake);
        }
    }

    /// Changes the room (`set_max_concurrency`): growing admits waiters at once;
    /// shrinking admits nobody until the places taken fall below the new room.
    pub(crate) fn set_room(&mut self, room: usize, wake: &mut impl Extend<Waker>) {
        self.room = room;
        self.grant(wake);
    }

    /// Takes waiter `key` out of the line. Once none is left, the room a burst of waiters
    /// took is given back (beyond [`KEPT_ROOM`]; the order's entries left then are all of
    /// waiters gone): a pool that once had many submitters waiting does not keep their
    /// room for good.
    fn remove(&mut self, key: usize) -> Waiter {
        let w = self.waiters.remove(key);
        if self.waiters.is_empty() && self.waiters.capacity() > KEPT_ROOM {
            self.waiters = Slab::new();
            self.order = BinaryHeap::new();
        }
        w
    }

    /// Free places to the first waiters; once [`barge`](Self::barge)d, every waiter is
    /// woken instead, while a place is free (the first to poll takes it).
    fn grant(&mut self, wake: &mut impl Extend<Waker>) {
        if self.barging {
            if self.taken < self.room {
                self.wake_waiting(wake);
            }
            return;
        }
        while self.taken < self.room {
            let Some((_, Reverse(ticket), key)) = self.order.pop() else {
                return;
            };
            if let Some(w) = self.waiters.get_mut(key).filter(|w| w.ticket == ticket) {
                w.granted = true;
                self.taken += 1;
                wake.extend(w.waker.take());
            }
        }
    }

    /// Queues a waiter for a task of `priority`: behind those already waiting with the
    /// same or a higher one (once [`barge`](Self::barge)d, in no order: see the module
    /// docs). Called only when [`try_take`](Self::try_take) found no room.
    /// `waker`: the submitter's, cloned before the lock was taken.
    pub(crate) fn wait(&mut self, waker: Waker, priority: i32) -> WaitKey {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let key = self.waiters.insert(Waiter {
            ticket,
            waker: Some(waker),
            granted: false,
        });
        if !self.barging {
            self.order.push((priority, Reverse(ticket), key));
        }
        WaitKey(key)
    }

    /// A waiter's poll: `Ready(true)` once it holds a place (its entry goes), `Ready(false)`
    /// if the pool closed first (likewise), otherwise `Pending`, if the waker it keeps
    /// [`will_wake`](Waker::will_wake) `waker` (no user code). `None` if that waker is to
    /// be replaced (or, which does not happen, an entry done still holds one): nothing
    /// changed, and the caller calls [`poll_wait_with`](Self::poll_wait_with) with a clone
    /// of `waker` made outside the lock.
    #[inline]
    pub(crate) fn poll_wait(
        &mut self,
        key: WaitKey,
        waker: &Waker,
        closed: bool,
    ) -> Option<Poll<bool>> {
        let w = &self.waiters[key.0];
        if w.granted || closed {
            // Its waker went when it was granted its place or the pool closed (both woke
            // it): nothing of the submitter's is dropped here, under the lock.
            if w.waker.is_some() {
                return None;
            }
            let granted = w.granted;
            self.remove(key.0);
            return Some(Poll::Ready(granted));
        }
        if self.barging && self.taken < self.room {
            // A place is free: taken now, after the waker goes (outside the lock).
            if w.waker.is_some() {
                return None;
            }
            self.taken += 1;
            self.remove(key.0);
            return Some(Poll::Ready(true));
        }
        match &w.waker {
            Some(kept) if kept.will_wake(waker) => Some(Poll::Pending),
            _ => None,
        }
    }

    /// [`poll_wait`](Self::poll_wait) with `fresh`, a clone of the waiter's new waker made
    /// outside the lock: kept if the waiter waits on. What the caller drops once the lock is
    /// released: the waker replaced, or an entry's left behind, in `left`; `fresh` if
    /// unused.
    pub(crate) fn poll_wait_with(
        &mut self,
        key: WaitKey,
        fresh: &mut Option<Waker>,
        closed: bool,
        left: &mut Option<Waker>,
    ) -> Poll<bool> {
        let w = &mut self.waiters[key.0];
        if w.granted || closed {
            let granted = w.granted;
            *left = self.remove(key.0).waker;
            return Poll::Ready(granted);
        }
        if self.barging && self.taken < self.room {
            self.taken += 1;
            *left = self.remove(key.0).waker;
            return Poll::Ready(true);
        }
        *left = std::mem::replace(&mut w.waker, fresh.take());
        Poll::Pending
    }

    /// A waiter gave up (its future was dropped): a place it was granted goes to the next.
    /// Returns its waker, for the caller to drop once the lock is released.
    #[must_use = "a waiter's waker is dropped outside the lock"]
    pub(crate) fn cancel(&mut self, key: WaitKey, wake: &mut impl Extend<Waker>) -> Option<Waker> {
        let w = self.remove(key.0);
        if w.granted {
            self.give_back(1, wake);
        } else if self.order.len() > 2 * self.waiters.len() + 32 {
            // Mostly entries of waiters that gave up (timed-out submits into a pool that
            // stays full): drop them, so that the list stays as long as the waiters.
            let waiters = &self.waiters;
            self.order.retain(|&(_, Reverse(t), k)| {
                waiters.get(k).is_some_and(|w| w.ticket == t && !w.granted)
            });
        }
        w.waker
    }

    /// The pool closed: wakes every waiter not yet granted a place (each finds the pool
    /// closed at its next poll); none will be granted one from now on.
    pub(crate) fn close(&mut self, wake: &mut impl Extend<Waker>) {
        self.order.clear();
        for (_, w) in self.waiters.iter_mut() {
            if !w.granted {
                wake.extend(w.waker.take());
            }
        }
    }

    /// Wakes every waiter not yet granted a place, without granting it one: each looks at
    /// the pool again at its next poll (whether room can still come).
    pub(crate) fn wake_waiting(&mut self, wake: &mut impl Extend<Waker>) {
        for (_, w) in self.waiters.iter_mut() {
            if !w.granted {
                wake.extend(w.waker.take());
            }
        }
    }

    /// The process exits: from now on no place is granted (see the module docs). The
    /// places granted and not yet taken are given back, and every waiter is woken: each
    /// takes a place, if one is free, at its next poll (one frozen by the exit never
    /// polls, and holds none).
    pub(crate) fn barge(&mut self, wake: &mut impl Extend<Waker>) {
        self.barging = true;
        self.order.clear();
        for (_, w) in self.waiters.iter_mut() {
            if std::mem::take(&mut w.granted) {
                self.taken -= 1;
            }
            wake.extend(w.waker.take());
        }
    }

    /// Whether a submitter waits for room.
    #[cfg(test)]
    fn has_waiters(&self) -> bool {
        !self.waiters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waker() -> Waker {
        Waker::noop().clone()
    }

    /// A waiter's poll, with a fresh clone when one is needed, as `Admit::poll` makes it.
    fn poll(a: &mut Admission, key: WaitKey, closed: bool) -> Poll<bool> {
        a.poll_wait(key, &waker(), closed).unwrap_or_else(|| {
            let (mut fresh, mut left) = (Some(waker()), None);
            a.poll_wait_with(key, &mut fresh, closed, &mut left)
        })
    }

    /// A waker of its own (`will_wake` tells it apart from the others).
    fn other() -> Waker {
        struct Own;
        impl std::task::Wake for Own {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        Waker::from(std::sync::Arc::new(Own))
    }

    #[test]
    fn at_the_exit_a_place_goes_to_whoever_polls_first() {
        let mut a = Admission::new(1);
        assert!(a.try_take());
        let (frozen, live) = (a.wait(waker(), 5), a.wait(waker(), 0));
        let mut wake = Vec::new();
        a.give_back(1, &mut wake);
        assert_eq!(wake.len(), 1, "the place granted to the first waiter");
        // The exit: the grant is taken back, both waiters are woken (one had been).
        wake.clear();
        a.barge(&mut wake);
        assert_eq!(wake.len(), 1);
        // The live waiter polls first and takes the place the frozen one never polls for.
        assert_eq!(poll(&mut a, live, false), Poll::Ready(true));
        assert!(!a.try_take(), "one place, taken");
        // A place freed goes to nobody: every waiter is woken, the first to poll takes it.
        let fresh = a.wait(waker(), 9);
        wake.clear();
        a.give_back(1, &mut wake);
        assert_eq!(
            wake.len(),
            1,
            "the new waiter woken (the frozen one's waker is gone)"
        );
        assert!(a.try_take(), "a new submit takes it");
        assert_eq!(poll(&mut a, fresh, false), Poll::Pending);
        assert_eq!(poll(&mut a, frozen, false), Poll::Pending);
        // A waiter that gives up holds nothing; the place freed goes to the next to poll.
        assert!(a.cancel(fresh, &mut wake).is_some());
        a.give_back(1, &mut wake);
        assert_eq!(poll(&mut a, frozen, false), Poll::Ready(true));
        assert!(!a.has_waiters());
    }

    #[test]
    // Miri gives each use of a waker's vtable an address of its own, so `will_wake` says
    // `false` for clones there, and the pool, rightly, clones again.
    #[cfg_attr(miri, ignore = "will_wake tells clones apart under Miri")]
    fn wakers_come_in_cloned_and_leave_to_the_caller() {
        let mut a = Admission::new(1);
        assert!(a.try_take());
        let first = other();
        let w = a.wait(first.clone(), 0);
        // The same waker: kept, nothing to clone or drop.
        assert_eq!(a.poll_wait(w, &first, false), Some(Poll::Pending));
        // Another waker: nothing changes, the caller clones it.
        let second = other();
        assert_eq!(a.poll_wait(w, &second, false), None);
        // With the clone: kept, and the first comes back to be dropped after the lock.
        let (mut fresh, mut left) = (Some(second.clone()), None);
        assert_eq!(
            a.poll_wait_with(w, &mut fresh, false, &mut left),
            Poll::Pending
        );
        assert!(fresh.is_none());
        assert!(left.take().is_some_and(|l| l.will_wake(&first)));
        assert_eq!(a.poll_wait(w, &second, false), Some(Poll::Pending));
        // A waiter that gives up hands back the one it holds.
        let mut wake = Vec::new();
        assert!(a.cancel(w, &mut wake).is_some_and(|l| l.will_wake(&second)));
        assert!(wake.is_empty());
    }

    #[test]
    fn places_go_to_waiters_in_order_before_anyone_else() {
        let mut a = Admission::new(2);
        assert!(a.try_take() && a.try_take());
        assert!(!a.try_take());
        let first = a.wait(waker(), 0);
        let second = a.wait(waker(), 0);
        let mut wake = Vec::new();
        a.give_back(1, &mut wake);
        assert_eq!(wake.len(), 1);
        // The freed place is the first waiter's: a `try_take` finds none.
        assert!(!a.try_take());
        assert_eq!(poll(&mut a, second, false), Poll::Pending);
        assert_eq!(poll(&mut a, first, false), Poll::Ready(true));
        a.give_back(1, &mut wake);
        assert_eq!(poll(&mut a, second, false), Poll::Ready(true));
        assert!(!a.has_waiters());
    }

    #[test]
    fn a_higher_priority_waiter_is_served_first_and_equals_in_turn() {
        let mut a = Admission::new(1);
        assert!(a.try_take());
        let low = a.wait(waker(), -1);
        let first = a.wait(waker(), 0);
        let high = a.wait(waker(), 5);
        let second = a.wait(waker(), 0);
        let mut wake = Vec::new();
        for next in [high, first, second, low] {
            a.give_back(1, &mut wake);
            for other in [high, first, second, low] {
                if other != next && a.waiters.contains(other.0) {
                    assert_eq!(poll(&mut a, other, false), Poll::Pending);
                }
            }
            assert_eq!(poll(&mut a, next, false), Poll::Ready(true));
        }
    }

    #[test]
    fn a_granted_waiter_that_gives_up_passes_its_place_on() {
        let mut a = Admission::new(1);
        assert!(a.try_take());
        let first = a.wait(waker(), 0);
        let second = a.wait(waker(), 0);
        let mut wake = Vec::new();
        a.give_back(1, &mut wake);
        assert!(
            a.cancel(first, &mut wake).is_none(),
            "taken when it was granted"
        );
        assert_eq!(wake.len(), 2);
        assert_eq!(poll(&mut a, second, false), Poll::Ready(true));
        // An ungranted waiter that gives up frees nothing.
        let third = a.wait(waker(), 0);
        assert!(a.cancel(third, &mut wake).is_some());
        assert!(!a.try_take());
        a.give_back(1, &mut wake);
        assert!(a.try_take());
    }

    #[test]
    fn a_shrink_admits_nobody_until_the_places_taken_fall_below_the_new_room() {
        let mut a = Admission::new(3);
        assert!(a.try_take() && a.try_take() && a.try_take());
        let mut wake = Vec::new();
        a.set_room(1, &mut wake);
        let w = a.wait(waker(), 0);
        a.give_back(1, &mut wake);
        a.give_back(1, &mut wake);
        assert_eq!(poll(&mut a, w, false), Poll::Pending);
        a.give_back(1, &mut wake);
        assert_eq!(poll(&mut a, w, false), Poll::Ready(true));
        // A growth admits at once.
        let w = a.wait(waker(), 0);
        a.set_room(2, &mut wake);
        assert_eq!(poll(&mut a, w, false), Poll::Ready(true));
    }

    #[test]
    fn a_close_wakes_the_waiters_and_grants_nothing_after() {
        let mut a = Admission::new(1);
        assert!(a.try_take());
        let w = a.wait(waker(), 0);
        let mut wake = Vec::new();
        a.close(&mut wake);
        assert_eq!(wake.len(), 1);
        a.give_back(1, &mut wake);
        assert_eq!(poll(&mut a, w, true), Poll::Ready(false));
        assert!(a.try_take(), "the place given back is free");
    }

    /// A burst of waiters, all served or gone, leaves no room behind (a review of this
    /// session's fixes found 10,000 dropped streams that had waited for room leaving
    /// 914 kB in the pool).
    #[test]
    fn a_burst_of_waiters_gone_leaves_no_room_behind() {
        for give_up in [false, true] {
            let mut a = Admission::new(1);
            assert!(a.try_take());
            let keys: Vec<WaitKey> = (0..10_000).map(|_| a.wait(waker(), 0)).collect();
            let mut wake = Vec::new();
            for key in keys {
                if give_up {
                    assert!(a.cancel(key, &mut wake).is_some());
                } else {
                    a.give_back(1, &mut wake);
                    assert_eq!(poll(&mut a, key, false), Poll::Ready(true));
                }
            }
            assert!(!a.has_waiters());
            assert!(
                a.waiters.capacity() <= KEPT_ROOM && a.order.capacity() <= KEPT_ROOM,
                "give_up {give_up}: room kept for {} waiters, {} entries",
                a.waiters.capacity(),
                a.order.capacity()
            );
            // And it serves waiters as before.
            let w = a.wait(waker(), 0);
            a.give_back(1, &mut wake);
            assert_eq!(poll(&mut a, w, false), Poll::Ready(true));
        }
    }

    #[test]
    fn waiters_that_give_up_do_not_pile_up_in_the_order() {
        let mut a = Admission::new(1);
        assert!(a.try_take());
        let mut wake = Vec::new();
        for _ in 0..10_000 {
            let w = a.wait(waker(), 0);
            assert!(a.cancel(w, &mut wake).is_some());
        }
        let kept = a.wait(waker(), 0);
        assert!(a.order.len() <= 64, "{} entries kept", a.order.len());
        a.give_back(1, &mut wake);
        assert_eq!(poll(&mut a, kept, false), Poll::Ready(true));
    }
}
