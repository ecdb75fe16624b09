//! What a task shares with its [`TaskHandle`](crate::TaskHandle): the result slot and the
//! abort flag, in one allocation.
//!
//! The slot is a `std` mutex around the result and the handle's waker; the lock is held
//! for a few instructions and no user code runs under it. The abort flag is an
//! `AtomicBool` plus an `AtomicWaker` for the job's own waker, so a job checks it with one
//! load per poll.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

use crate::engine::{Outcome, Probe};
use crate::error::{CancelReason, TaskError};

pub(crate) struct Shared<T> {
    /// The pool the task belongs to (its engine's id) and the task's id in it.
    pub(crate) pool: usize,
    pub(crate) job: AtomicU64,
    aborted: AtomicBool,
    /// The waker of the job's current run, woken by `abort`.
    job_waker: AtomicWaker,
    slot: Mutex<Slot<T>>,
}

struct Slot<T> {
    /// How the task ended, once it has; the first outcome wins.
    outcome: Option<Outcome>,
    result: Option<Result<T, TaskError>>,
    /// The handle's waker, while it waits.
    waker: Option<Waker>,
    /// The handle was dropped: results are discarded.
    detached: bool,
    /// The handle took the result.
    taken: bool,
    /// Set while a job of the task's own pool waits on the handle and is counted by the
    /// pool; whoever takes it (the task ending, or the handle) ends the count.
    waiting_in_pool: Option<Arc<dyn Probe>>,
}

impl<T> Shared<T> {
    pub(crate) fn new(pool: usize) -> Self {
        Shared {
            pool,
            job: AtomicU64::new(u64::MAX),
            aborted: AtomicBool::new(false),
            job_waker: AtomicWaker::new(),
            slot: Mutex::new(Slot {
                outcome: None,
                result: None,
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

    /// Records how the task ended and hands `result` to the handle, unless the task had
    /// already ended (aborted first, or finished by an earlier run). Returns the outcome
    /// the handle sees.
    pub(crate) fn finish(&self, outcome: Outcome, result: Result<T, TaskError>) -> Outcome {
        let mut slot = self.slot();
        if let Some(first) = slot.outcome {
            drop(slot);
            drop(result); // user value dropped outside the lock
            return first;
        }
        slot.outcome = Some(outcome);
        // The task is over, so a job waiting for it no longer counts as stuck on the pool,
        // from now on rather than from its next poll.
        let waiting = slot.waiting_in_pool.take();
        if slot.detached {
            drop(slot);
            drop(result);
        } else {
            slot.result = Some(result);
            let waker = slot.waker.take();
            drop(slot);
            if let Some(w) = waker {
                w.wake();
            }
        }
        if let Some(probe) = waiting {
            probe.stop_waiting();
        }
        outcome
    }

    /// How the task ended, if it has.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        self.slot().outcome
    }

    /// Ends the task as cancelled for `reason` (if it has not ended yet).
    pub(crate) fn cancel(&self, reason: CancelReason) -> Outcome {
        self.finish(Outcome::Cancelled, Err(TaskError::cancelled(reason)))
    }

    /// For the job: whether the task was aborted; if not, makes sure `cx` is woken by an
    /// abort. `armed` says whether this run's waker is registered already: a driver polls a
    /// job with the same waker until it moves the job (and then calls `rearm`), so the
    /// registration is done once per run, not on every poll.
    pub(crate) fn poll_aborted(&self, cx: &mut Context<'_>, armed: &mut bool) -> bool {
        if self.aborted.load(Ordering::Acquire) {
            return true;
        }
        if *armed {
            return false;
        }
        *armed = true;
        self.job_waker.register(cx.waker());
        // Checked again after registering, so an abort in between is not missed (the
        // AtomicWaker protocol: `abort` stores then wakes; we register then load).
        self.aborted.load(Ordering::Acquire)
    }

    /// For the handle: aborts the task and resolves the handle at once, with `reason`.
    pub(crate) fn abort(&self, reason: CancelReason) {
        // Release pairs with the Acquire loads in `poll_aborted`.
        self.aborted.store(true, Ordering::Release);
        self.job_waker.wake();
        self.cancel(reason);
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
        self.slot().outcome.is_some()
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
        if let Some(probe) = waiting {
            probe.stop_waiting();
        }
    }

    /// For the handle: records that a counted wait is in progress. If the task ended
    /// meanwhile, ends the count at once instead.
    pub(crate) fn set_waiting(&self, probe: Arc<dyn Probe>) {
        let mut slot = self.slot();
        if slot.outcome.is_none() {
            slot.waiting_in_pool = Some(probe);
            return;
        }
        drop(slot);
        probe.stop_waiting();
    }

    /// For the handle: whether a counted wait is in progress.
    pub(crate) fn is_waiting(&self) -> bool {
        self.slot().waiting_in_pool.is_some()
    }
}
