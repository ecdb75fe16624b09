//! What a task shares with its [`TaskHandle`](crate::TaskHandle): the result slot, the
//! claim on its outcome and the abort flag, in one allocation.
//!
//! The slot is a `std` mutex around the result and the handle's waker; the lock is held
//! for a few instructions and no user code runs under it. The abort flag is an
//! `AtomicBool`, which a job checks with one load per poll; a running job is woken to see
//! it by its pool (through [`unqueue::aborted`](super::unqueue::aborted)), which knows the
//! waker of the slot task that polls it.

use std::task::{Context, Poll, Waker};

use crate::sync::{AtomicBool, AtomicU64, Mutex, MutexGuard, Ordering};

use super::context::Waiting;
use crate::error::{CancelReason, TaskError};

pub(crate) struct Shared<T> {
    /// The pool the task belongs to (its engine's id) and the task's id in it.
    pub(crate) pool: usize,
    pub(crate) job: AtomicU64,
    /// The priority it was queued with (how its pool finds it in a prioritised queue).
    pub(crate) priority: i32,
    /// An outcome was decided: the first of completion, panic or cancellation to claim it
    /// wins, and only the winner fills the slot.
    claimed: AtomicBool,
    aborted: AtomicBool,
    /// The abort was the pool's nested-wait check (`WouldDeadlock`), not the user's.
    would_deadlock: AtomicBool,
    slot: Mutex<Slot<T>>,
}

struct Slot<T> {
    result: Option<Result<T, TaskError>>,
    /// The result was filled in (and may have been taken or discarded since).
    done: bool,
    /// The handle's waker, while it waits.
    waker: Option<Waker>,
    /// The handle was dropped: results are discarded.
    detached: bool,
    /// The handle took the result.
    taken: bool,
    /// Set while a job of the task's own pool waits on the handle and is counted by the
    /// pool; whoever takes it (the task ending, or the handle) ends the count. Boxed: only
    /// nested waits set it, and every task carries the field (one word, not four, in the
    /// result slot that a job's end writes: BENCHMARKS.md, "2026-12-03, midday").
    waiting_in_pool: Option<Box<Waiting>>,
}

impl<T> Shared<T> {
    pub(crate) fn new(pool: usize, priority: i32) -> Self {
        Shared {
            pool,
            job: AtomicU64::new(u64::MAX),
            priority,
            claimed: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            would_deadlock: AtomicBool::new(false),
            slot: Mutex::new(Slot {
                result: None,
                done: false,
                waker: None,
                detached: false,
                taken: false,
                waiting_in_pool: None,
            }),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Slot<T>> {
        // Nothing panics under this lock; recover the data if something ever did.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an outcome was decided.
    pub(crate) fn is_claimed(&self) -> bool {
        self.claimed.load(Ordering::Acquire)
    }

    /// Decides the task's outcome with `result`, unless something else decided it first
    /// (then `result` comes back in `Err`). Deciding and storing are one critical section
    /// of the result slot, so whoever finds the outcome decided also finds the result
    /// stored: an `abort` that loses the race returns with the handle resolved.
    ///
    /// Safe under the engine's lock: on success it returns the wake-up to fire and, if the
    /// handle is gone, the result itself, to be dropped later outside every lock (dropping
    /// it runs user code).
    #[allow(clippy::type_complexity)]
    pub(crate) fn store_first(
        &self,
        result: Result<T, TaskError>,
    ) -> Result<(Woken, Option<Result<T, TaskError>>), Result<T, TaskError>> {
        self.decide(result, None)
    }

    /// [`store_first`](Self::store_first); `abort`, if this call decides the outcome, marks
    /// the task aborted for that reason in the same critical section. So whoever sees the
    /// handle resolved, or loses the race for the outcome (and takes this lock to find
    /// out), also sees the flag and the reason the handle resolved to.
    #[allow(clippy::type_complexity)]
    fn decide(
        &self,
        result: Result<T, TaskError>,
        abort: Option<CancelReason>,
    ) -> Result<(Woken, Option<Result<T, TaskError>>), Result<T, TaskError>> {
        let mut slot = self.slot();
        // Every write of `claimed` is made here, under the slot's lock: a load, then a
        // store, is one decision. Readers outside the lock (`is_claimed`) only skip work.
        if self.claimed.load(Ordering::Acquire) {
            return Err(result);
        }
        if let Some(reason) = abort {
            if reason == CancelReason::WouldDeadlock {
                // Published by the Release stores below.
                self.would_deadlock.store(true, Ordering::Relaxed);
            }
            // Release pairs with the Acquire loads in `poll_aborted` and `abort_reason`.
            self.aborted.store(true, Ordering::Release);
        }
        // After the abort flag: whoever sees the outcome decided (Acquire) also sees that
        // an abort decided it (a recipe task taken from the queue counts it as aborted).
        self.claimed.store(true, Ordering::Release);
        debug_assert!(!slot.done, "a task's result was stored twice");
        slot.done = true;
        // The task is over, so a job waiting for it no longer counts as stuck on the pool,
        // from now on rather than from its next poll.
        let probe = slot.waiting_in_pool.take();
        if slot.detached {
            Ok((Woken { waker: None, probe }, Some(result)))
        } else {
            slot.result = Some(result);
            let waker = slot.waker.take();
            Ok((Woken { waker, probe }, None))
        }
    }

    /// [`store_first`](Self::store_first), then wakes the handle and drops what nobody
    /// wants; for callers outside the engine's lock. Returns whether this call decided.
    pub(crate) fn fill_first(&self, result: Result<T, TaskError>) -> bool {
        self.fill_decided(self.store_first(result))
    }

    /// Fires the wake-up of a decided outcome and drops what nobody wants (outside every
    /// lock); returns whether the outcome was decided by this call.
    #[allow(clippy::type_complexity)]
    fn fill_decided(
        &self,
        decided: Result<(Woken, Option<Result<T, TaskError>>), Result<T, TaskError>>,
    ) -> bool {
        match decided {
            Ok((woken, discarded)) => {
                drop(discarded);
                woken.fire();
                true
            }
            Err(lost) => {
                drop(lost);
                false
            }
        }
    }

    /// Ends the task as cancelled for `reason`, if nobody decided its outcome yet. Returns
    /// whether this call decided it.
    pub(crate) fn cancel(&self, reason: CancelReason) -> bool {
        // No lock-free shortcut on `is_claimed`: taking the slot's lock is what makes a
        // losing caller return only once the winner's result is stored. (A recipe task's
        // last copy, which needs no such wait, checks `is_claimed` before calling this:
        // see `SmartTask::release_copy` in `pool::recipe`.)
        self.fill_first(Err(TaskError::cancelled(reason)))
    }

    /// For the handle: aborts the task and resolves the handle at once, with `reason`.
    ///
    /// Only the abort that decides the outcome marks the task aborted, so the reason the
    /// job and the pool report is the one the handle resolved to. One that finds the outcome
    /// decided (the task ended, or another abort came first) does nothing.
    pub(crate) fn abort(&self, reason: CancelReason) {
        // The outcome is decided before the job can see the flag (both in one critical
        // section): otherwise the job, ending at once, could drop the task's last reference
        // (whose `Drop` cancels it with another reason) before this claim.
        let decided = self.decide(Err(TaskError::cancelled(reason)), Some(reason));
        if self.fill_decided(decided) {
            // A queued job leaves the queue now; a running one is woken, and drops its
            // future at its next poll (Relaxed: the id was written before the handle was
            // returned).
            let job = self.job.load(Ordering::Relaxed);
            super::unqueue::aborted(self.pool, job, self.priority);
        }
    }

    /// The waker of the handle waiting for the task, if one waits.
    pub(crate) fn handle_waker(&self) -> Option<Waker> {
        self.slot().waker.clone()
    }

    /// Whether the task was aborted.
    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Why it was aborted, if it was: by its handle, or by the pool's nested-wait check.
    pub(crate) fn aborted(&self) -> Option<CancelReason> {
        self.is_aborted().then(|| self.abort_reason())
    }

    /// Why it was aborted (once [`is_aborted`](Self::is_aborted), or once the outcome was
    /// found decided by an abort, which sets the flag as it decides): by its handle, or by
    /// the pool's nested-wait check.
    pub(crate) fn abort_reason(&self) -> CancelReason {
        if self.aborted.load(Ordering::Acquire) && self.would_deadlock.load(Ordering::Relaxed) {
            CancelReason::WouldDeadlock
        } else {
            CancelReason::Aborted
        }
    }

    /// For the handle: the result, once there is one.
    ///
    /// # Panics
    ///
    /// Panics if the result was already taken.
    pub(crate) fn poll_result(&self, cx: &mut Context<'_>) -> Poll<Result<T, TaskError>> {
        let mut slot = self.slot();
        if let Some(result) = slot.result.take() {
            slot.taken = true;
            return Poll::Ready(result);
        }
        assert!(
            !slot.taken,
            "TaskHandle polled after it returned its result"
        );
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// For the handle: whether the result is ready (or was taken).
    pub(crate) fn is_finished(&self) -> bool {
        self.slot().done
    }

    /// For the handle being dropped: later results are discarded.
    pub(crate) fn detach(&self) {
        let mut slot = self.slot();
        slot.detached = true;
        slot.waker = None;
        let result = slot.result.take();
        let waiting = slot.waiting_in_pool.take();
        drop(slot);
        drop(result);
        if let Some(waiting) = waiting {
            waiting.end();
        }
    }

    /// For the handle: records that a counted wait is in progress. If the task ended
    /// meanwhile, ends the count at once instead.
    ///
    /// A wait counted for another task before (the handle was handed on) is ended: the
    /// task polling the handle now is the one waiting.
    pub(crate) fn set_waiting(&self, waiting: Waiting) {
        let mut slot = self.slot();
        if !slot.done {
            let before = slot.waiting_in_pool.replace(Box::new(waiting));
            drop(slot);
            if let Some(before) = before {
                before.end();
            }
            return;
        }
        drop(slot);
        waiting.end();
    }

    /// For the handle: the task whose wait on it is counted, if any.
    pub(crate) fn waiting_task(&self) -> Option<u64> {
        self.slot().waiting_in_pool.as_ref().map(|w| w.waiter())
    }
}

/// Whatever holds a task's result slot: the slot itself, a reference to it (a large
/// future's, or a task's of a cancel-on-error group), the cell a future runs in (the slot
/// at its head), a recipe task, or a copy of one (SmartAioPool).
///
/// Each holder says only where its slot is; the views of it that handles need
/// ([`HandleSlot`], [`AbortTarget`]) follow for the holders a handle may reference
/// ([`HeldByHandles`]).
pub(crate) trait ResultSlot: Send + Sync + 'static {
    type Output: Send + 'static;

    fn shared(&self) -> &Shared<Self::Output>;
}

impl<T: Send + 'static> ResultSlot for Shared<T> {
    type Output = T;

    fn shared(&self) -> &Shared<T> {
        self
    }
}

impl<T: Send + 'static> ResultSlot for std::sync::Arc<Shared<T>> {
    type Output = T;

    fn shared(&self) -> &Shared<T> {
        self
    }
}

/// The holders a handle may reference: the slot itself, a future's cell, and a recipe task
/// that holds its slot. Not a reference to a slot, a recipe task whose slot is apart (a
/// handle would pin the recipe) or a copy of a recipe task (a handle would keep the task
/// from ever being told it ended): those must not compile as a handle's slot.
pub(crate) trait HeldByHandles: ResultSlot {}

impl<T: Send + 'static> HeldByHandles for Shared<T> {}

/// What a [`TaskHandle`](super::TaskHandle) holds, without the holder's type: its task's
/// result slot, alone (a recipe task's, or a large future's) or at the head of the cell
/// its future runs in.
pub(crate) trait HandleSlot<T>: Send + Sync {
    fn shared(&self) -> &Shared<T>;

    /// The same allocation, seen as what an [`AbortHandle`](super::AbortHandle) needs.
    fn abort_target(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn AbortTarget>;
}

impl<S: HeldByHandles> HandleSlot<S::Output> for S {
    fn shared(&self) -> &Shared<S::Output> {
        ResultSlot::shared(self)
    }

    fn abort_target(self: std::sync::Arc<Self>) -> std::sync::Arc<dyn AbortTarget> {
        self
    }
}

/// A handle's reference to its task's result slot.
pub(crate) type SlotRef<T> = std::sync::Arc<dyn HandleSlot<T>>;

/// What an [`AbortHandle`](super::AbortHandle) reaches: the task's result slot, without
/// its type.
pub(crate) trait AbortTarget: Send + Sync {
    fn abort(&self);
    fn is_finished(&self) -> bool;
}

impl<S: HeldByHandles> AbortTarget for S {
    fn abort(&self) {
        ResultSlot::shared(self).abort(CancelReason::Aborted);
    }

    fn is_finished(&self) -> bool {
        ResultSlot::shared(self).is_finished()
    }
}

/// A wake-up owed to a handle whose result was just stored; fired outside every lock.
#[must_use = "a stored result must be announced with `fire`"]
#[derive(Default)]
pub(crate) struct Woken {
    waker: Option<Waker>,
    probe: Option<Box<Waiting>>,
}

impl Woken {
    pub(crate) fn fire(self) {
        if let Some(w) = self.waker {
            w.wake();
        }
        if let Some(waiting) = self.probe {
            waiting.end();
        }
    }
}

/// Loom models of this file's real code: run with
/// `RUSTFLAGS="--cfg nb_aiopool_loom" cargo test --lib --release loom`.
#[cfg(all(test, nb_aiopool_loom))]
mod loom_tests {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;

    use super::Shared;
    use crate::error::{CancelReason, TaskError};

    /// A waker that counts its wakes.
    struct Flag(AtomicUsize);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn flag() -> (Arc<Flag>, Waker) {
        let f = Arc::new(Flag(AtomicUsize::new(0)));
        (f.clone(), Waker::from(f))
    }

    /// Completion and abort race for the outcome: exactly one wins, the handle gets that
    /// one result, and a handle that waited is woken.
    #[test]
    fn completion_and_abort_race() {
        loom::model(|| {
            let shared = Arc::new(Shared::<u32>::new(0, 0));
            let (woke, waker) = flag();
            let mut cx = Context::from_waker(&waker);
            let first = shared.poll_result(&mut cx);
            let job = {
                let shared = shared.clone();
                thread::spawn(move || match shared.store_first(Ok(7)) {
                    Ok((woken, discarded)) => {
                        assert!(discarded.is_none());
                        woken.fire();
                        true
                    }
                    Err(_) => false,
                })
            };
            let aborter = {
                let shared = shared.clone();
                thread::spawn(move || shared.abort(CancelReason::Aborted))
            };
            let completed = job.join().unwrap();
            aborter.join().unwrap();
            // However the race went, the handle was resolved when `abort` returned.
            assert!(shared.is_finished());
            assert!(first.is_pending());
            assert!(
                woke.0.load(Ordering::SeqCst) >= 1,
                "the waiting handle was not woken"
            );
            match shared.poll_result(&mut cx) {
                Poll::Ready(Ok(v)) => assert!(completed && v == 7),
                Poll::Ready(Err(e)) => {
                    assert!(!completed);
                    assert_eq!(e.cancel_reason(), Some(CancelReason::Aborted));
                }
                Poll::Pending => panic!("no result after both ended"),
            }
        });
    }

    /// Two aborts race (the user's and the pool's nested-wait check): the reason the job
    /// reports (and the pool counts) is the one its handle resolved to.
    #[test]
    fn two_aborts_race_and_the_job_reports_the_handles_reason() {
        loom::model(|| {
            let shared = Arc::new(Shared::<u32>::new(0, 0));
            let check = {
                let shared = shared.clone();
                thread::spawn(move || shared.abort(CancelReason::WouldDeadlock))
            };
            shared.abort(CancelReason::Aborted);
            check.join().unwrap();
            let (_, waker) = flag();
            let Poll::Ready(Err(e)) = shared.poll_result(&mut Context::from_waker(&waker)) else {
                panic!("an aborted handle did not resolve to an error");
            };
            assert_eq!(shared.aborted(), e.cancel_reason());
        });
    }

    /// A run that ends while the nested-wait check aborts its task, and loses the race for
    /// the outcome, reports the check's reason, the one its handle resolved to.
    #[test]
    fn a_run_that_loses_to_an_abort_reports_the_handles_reason() {
        loom::model(|| {
            let shared = Arc::new(Shared::<u32>::new(0, 0));
            let check = {
                let shared = shared.clone();
                thread::spawn(move || shared.abort(CancelReason::WouldDeadlock))
            };
            let lost_to = shared
                .store_first(Ok(7))
                .err()
                .map(|_| shared.abort_reason());
            check.join().unwrap();
            let (_, waker) = flag();
            match shared.poll_result(&mut Context::from_waker(&waker)) {
                Poll::Ready(Ok(v)) => assert!(lost_to.is_none() && v == 7),
                Poll::Ready(Err(e)) => assert_eq!(lost_to, e.cancel_reason()),
                Poll::Pending => panic!("no result after both ended"),
            }
        });
    }

    /// A queued recipe task taken while an abort decides its outcome: whoever finds the
    /// outcome decided (`is_claimed`, without the lock) also finds that the abort decided
    /// it, so the task is counted as aborted, not as completed.
    #[test]
    fn a_claim_seen_during_an_abort_is_seen_as_the_abort() {
        loom::model(|| {
            let shared = Arc::new(Shared::<u32>::new(0, 0));
            let taker = {
                let shared = shared.clone();
                thread::spawn(move || {
                    if shared.is_claimed() {
                        assert!(shared.is_aborted(), "claimed by the abort, but not aborted");
                    }
                })
            };
            shared.abort(CancelReason::Aborted);
            taker.join().unwrap();
        });
    }

    /// An abort that comes after the task finished does nothing: the task is not counted
    /// as aborted.
    #[test]
    fn an_abort_after_the_end_does_nothing() {
        loom::model(|| {
            let shared = Arc::new(Shared::<u32>::new(0, 0));
            assert!(shared.store_first(Ok(7)).is_ok());
            shared.abort(CancelReason::Aborted);
            assert_eq!(shared.aborted(), None);
        });
    }

    /// A result stored while the handle is dropped is dropped exactly once, whichever
    /// comes first.
    #[test]
    fn result_and_detach_race() {
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        loom::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let shared = Arc::new(Shared::<Counted>::new(0, 0));
            let job = {
                let shared = shared.clone();
                let value = Counted(drops.clone());
                thread::spawn(move || {
                    let Ok((woken, discarded)) = shared.store_first(Ok(value)) else {
                        panic!("nothing else decides the outcome here");
                    };
                    drop(discarded);
                    woken.fire();
                })
            };
            shared.detach();
            job.join().unwrap();
            assert_eq!(drops.load(Ordering::SeqCst), 1);
            let _ = TaskError::cancelled(CancelReason::Aborted);
        });
    }
}

#[cfg(all(test, not(nb_aiopool_loom)))]
mod tests {
    /// What a held handle of a future larger than the cell's limit pins in memory (the
    /// crate docs quote it): the shared slot, not the future. (A recipe task's handle
    /// pins the slot and the recipe's own bytes, at most 256 of them: `pool::recipe`.)
    #[test]
    fn a_handle_pins_a_small_slot() {
        let size = std::mem::size_of::<super::Shared<u64>>();
        assert!(size <= 160, "Shared<u64> is {size} bytes");
    }
}
