//! What a task shares with its [`TaskHandle`](crate::TaskHandle): the result slot, the
//! claim on its outcome and the abort flag, in one allocation.
//!
//! One state word (`state`) says who may touch the result: whoever sets `CLAIMED` (the
//! first of completion, panic or cancellation) writes it, then sets `COMPLETE`, after
//! which it is the handle's; a handle that went away first (`DETACHED`) leaves it to the
//! decider to drop. The handle's waker is an `AtomicWaker`, which the decider (or the
//! pool, to make the handle look at its task again) takes and wakes. So a task's outcome
//! costs two atomic operations when its handle waits for it and one when the handle was
//! dropped, and dropping a handle one (none once the task ended): no lock on either side.
//! A job checks the abort flag, a bit of the same word, with one load per poll; a
//! running job is woken to see it by its pool (through
//! [`Unqueue::aborted`](super::unqueue::Unqueue::aborted)), which knows the waker of the
//! slot task that polls it. Loom models of this file's code are at its end.

#![allow(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::sync::{spin_wait, AtomicU32, AtomicU64, AtomicWaker, Mutex, Ordering, UnsafeCell};

use super::context::Waiting;
use crate::error::{CancelReason, TaskError};
use crate::unwind;

/// An outcome was decided; until `COMPLETE`, its decider alone writes `result`.
const CLAIMED: u32 = 1;
/// The outcome is stored in `result` (or was dropped, the handle being gone); from now
/// on `result` is the handle's.
const COMPLETE: u32 = 1 << 1;
/// The handle was dropped: the decider drops the result.
const DETACHED: u32 = 1 << 2;
/// The handle registered a waker (set once, never cleared): the decider takes it.
const WAKER: u32 = 1 << 3;
/// `waiting` was given a counted wait (set once, never cleared): the decider looks there.
const WAITING: u32 = 1 << 4;
/// Decided by an abort (set with `CLAIMED`).
const ABORTED: u32 = 1 << 5;
/// Decided by the pool's nested-wait check (set with `ABORTED`).
const DEADLOCK: u32 = 1 << 6;
/// Decided by an abort of a task a `cancel_all` had covered first (set with `ABORTED`):
/// the handle and the pool's count take that call's reason (see [`Shared::abort`]).
const BY_CANCEL_ALL: u32 = 1 << 7;
/// The same for a task a shutdown deadline had covered first (`Abandoned`).
const BY_DEADLINE: u32 = 1 << 8;

/// `Shared::runner` before a slot takes the task.
pub(crate) const RUNNER_NONE: u32 = u32::MAX;
/// `Shared::runner` for a slot whose key does not fit below `RUNNER_NONE`.
pub(crate) const RUNNER_FAR: u32 = u32::MAX - 1;

pub(crate) struct Shared<T> {
    /// The pool the task belongs to (its engine's [`PoolId`](super::PoolId)) and the
    /// task's id in it.
    pub(crate) pool: u32,
    pub(crate) job: AtomicU64,
    /// The priority it was queued with (how its pool finds it in a prioritised queue).
    pub(crate) priority: i32,
    /// The bits above (four bytes: beside `priority`, they take no room of their own).
    state: AtomicU32,
    /// Where its pool runs it: the number the pool gave it when it took it from the queue
    /// (its slot's key; [`RUNNER_NONE`] before, [`RUNNER_FAR`] for a key that does not
    /// fit: then an abort searches the slots), so that an abort finds a running task
    /// without searching every slot. Written and read under the pool's lock. With `pool`,
    /// 32 bits each: both take one word, and the result slot of a `u64` task 96 bytes, not
    /// 104 (a held handle of such a task pins 8 bytes less, and the soak's resident memory
    /// is back at its level before finding 281: finding 289).
    runner: AtomicU32,
    /// The outcome; who may touch it is said by `state` (see `CLAIMED` and `COMPLETE`).
    result: UnsafeCell<Option<Result<T, TaskError>>>,
    /// The waker of the handle waiting for the task.
    waker: AtomicWaker,
    /// Set while a job of the task's own pool waits on the handle and is counted by the
    /// pool; whoever takes it (the task ending, or the handle) ends the count. Only nested
    /// waits use it (the `WAITING` bit says whether one did): boxed, so that every task
    /// carries one word for it, not four.
    waiting: Mutex<Option<Box<Waiting>>>,
}

// SAFETY: `result` is the only field that is not `Sync` by itself. It is written by one
// thread at a time, by the rules of `state`: the decider between its `CLAIMED` and its
// `COMPLETE` (set with `Release` after the write, so whoever sees `COMPLETE` with
// `Acquire` sees the value), then the handle, or the decider again if the handle went
// away first (each learns it from the read-modify-write that came second). A value moves
// between threads through it, hence `T: Send`, as for `Mutex<T>`.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub(crate) fn new(pool: u32, priority: i32) -> Self {
        Shared {
            pool,
            job: AtomicU64::new(u64::MAX),
            priority,
            state: AtomicU32::new(0),
            runner: AtomicU32::new(RUNNER_NONE),
            result: UnsafeCell::new(None),
            waker: AtomicWaker::default(),
            waiting: Mutex::new(None),
        }
    }

    /// Whether an outcome was decided.
    pub(crate) fn is_claimed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLAIMED != 0
    }

    /// Decides the task's outcome with `result`, unless something else decided it first
    /// (then `result` comes back in `Err`, once the winner's result is stored: so whoever
    /// finds the outcome decided also finds the result stored, and an `abort` that loses
    /// the race returns with the handle resolved).
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
    /// the task aborted for that reason in the same atomic step. So whoever sees the
    /// handle resolved, or loses the race for the outcome, also sees the flag and the
    /// reason the handle resolved to.
    ///
    /// Inlined: a job's end calls it once (through `store_first`, from the run's
    /// `publish_locked`), and as a call it took its entry and exit, the `abort` match for
    /// a constant `None`, and its large result written to memory and read back: 21 to 25
    /// instructions per job (callgrind, current-thread, 2026-12-07). `#[inline]` alone was
    /// not taken up (7 to 9).
    #[allow(clippy::type_complexity)]
    #[inline(always)]
    fn decide(
        &self,
        result: Result<T, TaskError>,
        abort: Option<CancelReason>,
    ) -> Result<(Woken, Option<Result<T, TaskError>>), Result<T, TaskError>> {
        let claim = match abort {
            None => CLAIMED,
            Some(CancelReason::WouldDeadlock) => CLAIMED | ABORTED | DEADLOCK,
            Some(CancelReason::CancelAll) => CLAIMED | ABORTED | BY_CANCEL_ALL,
            Some(CancelReason::Abandoned) => CLAIMED | ABORTED | BY_DEADLINE,
            Some(_) => CLAIMED | ABORTED,
        };
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & CLAIMED != 0 {
                self.wait_stored(s);
                return Err(result);
            }
            // With the handle gone there is nothing to store: decided and done at once.
            let new = match s & DETACHED {
                0 => s | claim,
                _ => s | claim | COMPLETE,
            };
            match self
                .state
                .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        if s & DETACHED != 0 {
            return Ok((Woken::default(), Some(result)));
        }
        // SAFETY: this call set `CLAIMED` and `COMPLETE` is not set: nobody else touches
        // `result` until the `fetch_or` below publishes it.
        self.result.with_mut(|r| unsafe { *r = Some(result) });
        let before = self.state.fetch_or(COMPLETE, Ordering::AcqRel);
        // The task is over, so a job waiting for it no longer counts as stuck on the pool,
        // from now on rather than from its next poll.
        let probe = match before & WAITING {
            0 => None,
            _ => self.take_waiting(),
        };
        if before & DETACHED != 0 {
            // SAFETY: the handle went away before `COMPLETE` (its `fetch_or` came first),
            // so it never touches `result`: the value is ours again, to drop.
            let result = self.result.with_mut(|r| unsafe { (*r).take() });
            return Ok((Woken { waker: None, probe }, result));
        }
        let waker = match before & WAKER {
            0 => None,
            _ => self.waker.take_waker(),
        };
        Ok((Woken { waker, probe }, None))
    }

    /// Returns once the outcome claimed by another thread is stored. The winner is a few
    /// instructions from it: nothing between its claim and its store takes a lock, waits
    /// or runs user code (the winner may hold the engine's lock meanwhile, which no
    /// caller of this needs).
    fn wait_stored(&self, mut s: u32) {
        let mut round = 0;
        while s & COMPLETE == 0 {
            spin_wait(round);
            round += 1;
            s = self.state.load(Ordering::Acquire);
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
                // Fired first: a panic in the discarded result's `Drop` must not skip it.
                woken.fire();
                drop(discarded);
                true
            }
            Err(lost) => {
                drop(lost);
                false
            }
        }
    }

    /// Ends the task as cancelled for `reason`, if nobody decided its outcome yet. Returns
    /// whether this call decided it; a losing call returns once the winner's result is
    /// stored. (A recipe task's last copy, which needs no such wait, checks `is_claimed`
    /// before calling this: see `Counted::release_last` in `pool::recipe`.)
    pub(crate) fn cancel(&self, reason: CancelReason) -> bool {
        self.fill_first(Err(TaskError::cancelled(reason)))
    }

    /// For the handle: aborts the task and resolves the handle at once, with `reason`.
    ///
    /// Only the abort that decides the outcome marks the task aborted, so the reason the
    /// job and the pool report is the one the handle resolved to. One that finds the outcome
    /// decided (the task ended, or another abort came first) does nothing.
    pub(crate) fn abort(&self, reason: CancelReason) {
        // The pool is reached before the outcome is decided, and held until the abort has
        // reached it. While the outcome is open the task's pool is alive or being dropped
        // (it decides every task it holds before its number is freed: `Drop for Engine`),
        // so its number names it or nothing; held, it keeps its number from going to a
        // pool made meanwhile. Looked up after the decision, which wakes the handle (user
        // code), the number could name a pool made since the task's own was dropped, whose
        // task of the same id would be taken out of its queue (a review of finding 289).
        // An outcome decided already needs no pool. The pool may be dropped meanwhile:
        // then its engine goes when this returns, on this thread.
        let pool = if self.is_claimed() {
            None
        } else {
            super::unqueue::pool(self.pool)
        };
        // A task a `cancel_all` or a shutdown deadline covered first, which its slot has
        // not cancelled yet (still inside a poll): the first decision holds, so the
        // handle resolves now with that call's reason, as the pool counts it (Relaxed:
        // the id was written before the handle was returned).
        let reason = pool
            .as_ref()
            .and_then(|p| p.covering(self.job.load(Ordering::Relaxed), &self.runner))
            .unwrap_or(reason);
        // The outcome is decided before the job can see the flag (both in one atomic
        // step): otherwise the job, ending at once, could drop the task's last reference
        // (whose `Drop` cancels it with another reason) before this claim.
        let decided = self.decide(Err(TaskError::cancelled(reason)), Some(reason));
        if self.fill_decided(decided) {
            // A queued job leaves the queue now; a running one is woken, and drops its
            // future at its next poll (Relaxed: the id was written before the handle was
            // returned).
            if let Some(pool) = pool {
                let job = self.job.load(Ordering::Relaxed);
                pool.aborted(job, self.priority, &self.runner);
            }
        }
    }

    /// Under the pool's lock: a slot of the pool (`key`) takes the task to run it (see
    /// [`Unqueue::aborted`](super::unqueue::Unqueue::aborted)).
    #[inline]
    pub(crate) fn set_runner(&self, key: usize) {
        // Relaxed: read only under the same lock.
        let key = if key < RUNNER_FAR as usize {
            key as u32
        } else {
            RUNNER_FAR
        };
        self.runner.store(key, Ordering::Relaxed);
    }

    /// Takes the waker of the handle waiting for the task, if one waits, for the pool to
    /// wake it (the handle registers it again when it is polled).
    pub(crate) fn handle_waker(&self) -> Option<Waker> {
        self.waker.take_waker()
    }

    /// Whether its handle is gone (dropped or detached before the task ended): no one
    /// can await the task any more.
    pub(crate) fn is_detached(&self) -> bool {
        self.state.load(Ordering::Acquire) & DETACHED != 0
    }

    /// Whether the task was aborted.
    pub(crate) fn is_aborted(&self) -> bool {
        self.state.load(Ordering::Acquire) & ABORTED != 0
    }

    /// Why it was aborted, if it was: by its handle, or by the pool's nested-wait check.
    pub(crate) fn aborted(&self) -> Option<CancelReason> {
        self.is_aborted().then(|| self.abort_reason())
    }

    /// Why it was aborted (once [`is_aborted`](Self::is_aborted), or once the outcome was
    /// found decided by an abort, which sets the flag as it decides): by its handle, or by
    /// the pool's nested-wait check.
    pub(crate) fn abort_reason(&self) -> CancelReason {
        let s = self.state.load(Ordering::Acquire);
        if s & ABORTED == 0 {
            CancelReason::Aborted
        } else if s & DEADLOCK != 0 {
            CancelReason::WouldDeadlock
        } else if s & BY_CANCEL_ALL != 0 {
            CancelReason::CancelAll
        } else if s & BY_DEADLINE != 0 {
            CancelReason::Abandoned
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
        // An outcome claimed but not yet stored is waited for (see `is_finished`): the
        // handle never says pending about a task its pool may already count as ended.
        let s = self.state.load(Ordering::Acquire);
        if s & CLAIMED != 0 {
            self.wait_stored(s);
            return Poll::Ready(self.take_result());
        }
        self.waker.register_by_ref(cx.waker());
        // Looked at again after registering: a decider that claimed before it saw
        // `WAKER`, or that took the waker before this registration, is seen now.
        let s = match s & WAKER {
            0 => self.state.fetch_or(WAKER, Ordering::AcqRel),
            _ => self.state.load(Ordering::Acquire),
        };
        if s & CLAIMED != 0 {
            self.wait_stored(s);
            // The decider may not have taken this registration: nobody needs it now.
            drop(self.waker.take_waker());
            return Poll::Ready(self.take_result());
        }
        Poll::Pending
    }

    /// For the handle, once it saw `COMPLETE`: the result.
    fn take_result(&self) -> Result<T, TaskError> {
        // SAFETY: `COMPLETE` was seen (with `Acquire`) by the handle, which has not
        // detached (it is the caller): the decider is done with `result`, which is the
        // handle's now.
        let result = self.result.with_mut(|r| unsafe { (*r).take() });
        result.expect("TaskHandle polled after it returned its result")
    }

    /// Whether a slot of its pool took the task from the queue (to run it) at some time:
    /// read outside the pool's lock, so a hint only, for aborting many tasks in an order
    /// (those still queued before those a slot took: see `abort_newest_first` in
    /// `pool::group`). A SmartAioPool task queued again for a re-run still says `true`.
    pub(crate) fn was_taken(&self) -> bool {
        // Relaxed: a hint; the abort that follows decides under the pool's lock.
        self.runner.load(Ordering::Relaxed) != RUNNER_NONE
    }

    /// For the handle: whether the result is ready (or was taken).
    ///
    /// An outcome claimed but not yet stored counts as finished once it is stored (a few
    /// instructions away): the engine acts on a claim as soon as it sees it (a job sees
    /// the abort bit and ends, and its pool counts it), and whoever saw that must find the
    /// handle finished.
    pub(crate) fn is_finished(&self) -> bool {
        let s = self.state.load(Ordering::Acquire);
        if s & CLAIMED == 0 {
            return false;
        }
        self.wait_stored(s);
        true
    }

    /// For the handle being dropped: later results are dropped by the decider, and one
    /// stored already is dropped now, with the handle's waker and counted wait.
    ///
    /// Inline, up to the `fetch_or`: a handle dropped while its task runs and nobody waited
    /// on it (the most common drop) has nothing more to do; what it may have to drop is
    /// apart ([`detach_rest`](Self::detach_rest)).
    #[inline]
    pub(crate) fn detach(&self) {
        let mut s = self.state.load(Ordering::Acquire);
        if s & COMPLETE == 0 {
            s = self.state.fetch_or(DETACHED, Ordering::AcqRel);
        }
        if s & (COMPLETE | WAKER | WAITING) != 0 {
            // SAFETY: `s` is what this handle read as it detached.
            unsafe { self.detach_rest(s) };
        }
    }

    /// [`detach`](Self::detach) of a handle that found its result stored, its waker
    /// registered or a counted wait set.
    ///
    /// # Safety
    ///
    /// `s` is the state the handle's own `detach` read (its load that found `COMPLETE`,
    /// else its `fetch_or` of `DETACHED`): `result` is taken on its word.
    #[inline(never)]
    unsafe fn detach_rest(&self, s: u32) {
        let mut result = None;
        let mut waker = None;
        if s & COMPLETE != 0 {
            // SAFETY: `COMPLETE` was seen before this handle detached: `result` is the
            // handle's (the decider takes it back only if it saw `DETACHED` first).
            result = self.result.with_mut(|r| unsafe { (*r).take() });
        } else if s & WAKER != 0 {
            // The decider will see `DETACHED` and leave the waker alone.
            waker = self.waker.take_waker();
        }
        if s & WAITING != 0 {
            if let Some(waiting) = self.take_waiting() {
                waiting.end();
            }
        }
        // Dropped last (user code, which may panic): the wait is ended whatever they do.
        // Quietly (the panic hook shows the panic), as the pool drops the result of a task
        // that ends after its handle went, and as tokio's `JoinHandle` drops a stored
        // output: whether the task ended before the handle was dropped is a race, and a
        // `submit(..).await?.detach()` must not panic only when the task won it.
        // At most one of the two is set (a result stored leaves no waker to take), so a
        // panic in one's drop cannot unwind through the other's (as at a job's end,
        // finding 401).
        if result.is_some() || waker.is_some() {
            crate::unwind::drop_quietly((result, waker));
        }
    }

    /// The counted wait, if one is still set.
    fn take_waiting(&self) -> Option<Box<Waiting>> {
        // Nothing panics under this lock; recover the data if something ever did.
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// For the handle: records that a counted wait is in progress. If the task ended
    /// meanwhile, ends the count at once instead.
    ///
    /// A wait counted for another task before (the handle was handed on) is ended: the
    /// task polling the handle now is the one waiting.
    pub(crate) fn set_waiting(&self, waiting: Waiting) {
        let mut slot = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if self.state.load(Ordering::Acquire) & COMPLETE != 0 {
            drop(slot);
            waiting.end();
            return;
        }
        let before = slot.replace(Box::new(waiting));
        // A decider that set `COMPLETE` before it saw `WAITING` did not look here: then
        // the wait just set ends now. (One that sees it takes it after this lock.)
        let now = match self.state.fetch_or(WAITING, Ordering::AcqRel) & COMPLETE {
            0 => None,
            _ => slot.take(),
        };
        drop(slot);
        before.into_iter().chain(now).for_each(|w| w.end());
    }

    /// For the handle: the task whose wait on it is counted, if any.
    pub(crate) fn waiting_task(&self) -> Option<u64> {
        let slot = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().map(|w| w.waiter())
    }
}

/// Whatever holds a task's result slot: the slot itself, a reference to it (a large
/// future's or a large recipe's), the cell a future runs in (the slot
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
    fn was_taken(&self) -> bool;
}

impl<S: HeldByHandles> AbortTarget for S {
    fn abort(&self) {
        ResultSlot::shared(self).abort(CancelReason::Aborted);
    }

    fn is_finished(&self) -> bool {
        ResultSlot::shared(self).is_finished()
    }

    fn was_taken(&self) -> bool {
        ResultSlot::shared(self).was_taken()
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
    /// Whether firing it does nothing (the handle was dropped, and no counted wait was
    /// left): such a wake-up need not be kept for after the lock.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.waker.is_none() && self.probe.is_none()
    }

    /// Wakes the handle, then ends its counted wait, even if the waker panics (see
    /// [`wake_quietly`]).
    #[inline]
    pub(crate) fn fire(self) {
        if let Some(w) = self.waker {
            wake_quietly(w);
        }
        if let Some(waiting) = self.probe {
            waiting.end();
        }
    }
}

/// Wakes `waker`, which may be a user's (a handle's, a submitter's, a `wait()` caller's:
/// any executor's), and catches a panic in its `wake` (the panic hook has shown it), as
/// tokio's own tasks do with the waker of a `JoinHandle`. The pool's work around the
/// call (the other wake-ups, the slots to start, the next job of the slot that calls it)
/// must not be skipped by one executor's faulty waker, nor that panic end a slot task
/// whose jobs are someone else's. The task the waker stands for has its result stored
/// already: a later poll of its handle finds it.
pub(crate) fn wake_quietly(waker: Waker) {
    unwind::quietly(move || waker.wake());
}

/// Polls a future that hands its waker to something that wakes wakers in batches (tokio's
/// `Notify`, which drops the rest of a batch unwoken when one waker panics) with a waker
/// of ours that wakes the caller's quietly ([`wake_quietly`]): a caller whose waker
/// panics then costs the others nothing. The waker of ours is made again only when the
/// caller's changes.
#[derive(Default)]
pub(crate) struct QuietPoll(Option<(Waker, Waker)>);

impl QuietPoll {
    pub(crate) fn poll<F: Future>(
        &mut self,
        fut: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        let caller = cx.waker();
        if !self.0.as_ref().is_some_and(|(of, _)| of.will_wake(caller)) {
            self.0 = None;
        }
        let (_, quiet) = self
            .0
            .get_or_insert_with(|| (caller.clone(), Waker::from(Arc::new(Quiet(caller.clone())))));
        fut.poll(&mut Context::from_waker(quiet))
    }
}

/// The waker [`QuietPoll`] polls with.
struct Quiet(Waker);

// Everything that touches the caller's waker (its `wake`, its `clone`, the drop of the
// last reference) happens inside the catch: tokio's `Notify` calls these.
impl Wake for Quiet {
    fn wake(self: Arc<Self>) {
        // The reference dropped inside too: it may be the last, the wait dropped meanwhile.
        unwind::quietly(move || {
            self.0.wake_by_ref();
            drop(self);
        });
    }

    fn wake_by_ref(self: &Arc<Self>) {
        unwind::quietly(|| self.0.wake_by_ref());
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

    /// A value that counts its drops.
    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A handle that polled `shared` once, before its task ended: its wake count and waker.
    fn waiting_handle(shared: &Shared<u32>) -> (Arc<Flag>, Waker) {
        let (woke, waker) = flag();
        let first = shared.poll_result(&mut Context::from_waker(&waker));
        assert!(first.is_pending());
        (woke, waker)
    }

    /// After the task stored 7, for a handle that last returned `Pending` with `waker`:
    /// it was woken (`who` names the waker if not), and its next poll returns the value.
    fn woken_then_ready(shared: &Shared<u32>, woke: &Flag, waker: &Waker, who: &str) {
        assert!(woke.0.load(Ordering::SeqCst) >= 1, "{who} was not woken");
        let again = shared.poll_result(&mut Context::from_waker(waker));
        assert!(matches!(again, Poll::Ready(Ok(7))));
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
                thread::spawn(move || {
                    shared.abort(CancelReason::Aborted);
                    // Won or lost, the handle is resolved when `abort` returns.
                    assert!(shared.is_finished());
                })
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
    /// comes first, and before both return; whether or not the handle waited (registered
    /// a waker) first.
    #[test]
    fn result_and_detach_race() {
        for waited in [false, true] {
            result_and_detach_race_after(waited);
        }
    }

    fn result_and_detach_race_after(waited: bool) {
        loom::model(move || {
            let drops = Arc::new(AtomicUsize::new(0));
            let shared = Arc::new(Shared::<Counted>::new(0, 0));
            let (_, waker) = flag();
            if waited {
                let first = shared.poll_result(&mut Context::from_waker(&waker));
                assert!(first.is_pending());
            }
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

    /// A handle polled while the task ends: it either sees the result at once or is
    /// woken for it, whichever order the two take.
    #[test]
    fn a_handle_polled_as_the_task_ends_is_woken_or_ready() {
        loom::model(|| {
            let shared = Arc::new(Shared::<u32>::new(0, 0));
            let job = {
                let shared = shared.clone();
                thread::spawn(move || assert!(shared.fill_first(Ok(7))))
            };
            let (woke, waker) = flag();
            let first = shared.poll_result(&mut Context::from_waker(&waker));
            job.join().unwrap();
            match first {
                Poll::Ready(r) => assert_eq!(r.unwrap(), 7),
                Poll::Pending => woken_then_ready(&shared, &woke, &waker, "a waiting handle"),
            }
            shared.detach();
        });
    }

    /// A handle polled again with another waker (it moved to another task) while the task
    /// ends: if that poll returns `Pending`, the new waker is the one woken, even when the
    /// task took the first waker just before the new one was registered.
    #[test]
    fn a_handle_polled_again_with_a_new_waker_is_woken_there() {
        loom::model(|| {
            let shared = Arc::new(Shared::<u32>::new(0, 0));
            waiting_handle(&shared);
            let job = {
                let shared = shared.clone();
                thread::spawn(move || assert!(shared.fill_first(Ok(7))))
            };
            let (woke, waker) = flag();
            let second = shared.poll_result(&mut Context::from_waker(&waker));
            job.join().unwrap();
            if second.is_pending() {
                woken_then_ready(&shared, &woke, &waker, "the new waker");
            }
        });
    }

    /// The pool takes a waiting handle's waker (to make it look at its task again) while
    /// the task ends: the handle is woken by one or the other, and sees the result.
    #[test]
    fn the_pool_taking_the_waker_as_the_task_ends_loses_no_wake_up() {
        loom::model(|| {
            let shared = Arc::new(Shared::<u32>::new(0, 0));
            let (woke, waker) = waiting_handle(&shared);
            let pool = {
                let shared = shared.clone();
                thread::spawn(move || {
                    if let Some(w) = shared.handle_waker() {
                        w.wake();
                    }
                })
            };
            assert!(shared.fill_first(Ok(7)));
            pool.join().unwrap();
            woken_then_ready(&shared, &woke, &waker, "the handle");
        });
    }

    /// A probe that counts the counted waits ended.
    struct EndedWaits(AtomicUsize);

    impl crate::task::context::Probe for EndedWaits {
        fn start_waiting(&self, _: u64, _: u64) -> Option<bool> {
            Some(false)
        }
        fn stop_waiting(&self, _: u64, _: u64) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn refuse_stuck(&self, _: u64, _: u64) -> bool {
            false
        }
    }

    /// A counted wait set by the handle while the task ends is ended exactly once: by the
    /// task's end if it saw the wait, by the handle otherwise.
    #[test]
    fn a_wait_counted_as_the_task_ends_is_ended_once() {
        use crate::task::context::Waiting;
        loom::model(|| {
            let count = Arc::new(EndedWaits(AtomicUsize::new(0)));
            let shared = Arc::new(Shared::<u32>::new(0, 0));
            let job = {
                let shared = shared.clone();
                thread::spawn(move || assert!(shared.fill_first(Ok(7))))
            };
            shared.set_waiting(Waiting::for_model(count.clone(), 1, 2));
            job.join().unwrap();
            assert_eq!(
                count.0.load(Ordering::SeqCst),
                1,
                "the wait was not ended once"
            );
            assert_eq!(shared.waiting_task(), None);
        });
    }

    /// A handle with a counted wait is dropped while the task ends: the wait is ended
    /// exactly once, by the task's end or by the drop, whichever saw it.
    #[test]
    fn a_counted_wait_of_a_handle_dropped_as_the_task_ends_is_ended_once() {
        use crate::task::context::Waiting;
        loom::model(|| {
            let count = Arc::new(EndedWaits(AtomicUsize::new(0)));
            let shared = Arc::new(Shared::<u32>::new(0, 0));
            shared.set_waiting(Waiting::for_model(count.clone(), 1, 2));
            let job = {
                let shared = shared.clone();
                thread::spawn(move || assert!(shared.fill_first(Ok(7))))
            };
            shared.detach();
            job.join().unwrap();
            assert_eq!(
                count.0.load(Ordering::SeqCst),
                1,
                "the wait was not ended once"
            );
        });
    }

    /// A handle polled on another thread than the one that stores the result: if it finds
    /// the result, it reads the value stored (the store is published to it), and if not,
    /// it is woken for it.
    #[test]
    fn a_handle_polled_on_another_thread_reads_the_value_stored() {
        loom::model(|| {
            let shared = Arc::new(Shared::<u32>::new(0, 0));
            let handle = {
                let shared = shared.clone();
                thread::spawn(move || {
                    let (woke, waker) = flag();
                    match shared.poll_result(&mut Context::from_waker(&waker)) {
                        Poll::Ready(r) => {
                            assert_eq!(r.unwrap(), 7);
                            None
                        }
                        Poll::Pending => Some((woke, waker)),
                    }
                })
            };
            assert!(shared.fill_first(Ok(7)));
            if let Some((woke, waker)) = handle.join().unwrap() {
                woken_then_ready(&shared, &woke, &waker, "the handle");
            }
        });
    }

    /// The abort of a task whose handle was dropped (through an `AbortHandle`) races the
    /// task's end: when `abort` returns, the task is finished, and the result is dropped
    /// once.
    #[test]
    fn an_abort_of_a_detached_task_racing_its_end_returns_finished() {
        loom::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let shared = Arc::new(Shared::<Counted>::new(0, 0));
            shared.detach();
            let job = {
                let shared = shared.clone();
                let value = Counted(drops.clone());
                thread::spawn(move || {
                    shared.fill_first(Ok(value));
                })
            };
            shared.abort(CancelReason::Aborted);
            assert!(
                shared.is_finished(),
                "abort returned before the task finished"
            );
            job.join().unwrap();
            assert_eq!(drops.load(Ordering::SeqCst), 1);
        });
    }

    /// A task seen during its abort: whoever finds the outcome decided (a queued recipe
    /// task being taken, `is_claimed` without the lock) also finds that the abort decided
    /// it, so the task is counted as aborted, not as completed; and whoever sees it aborted
    /// (a running job about to end, and its pool to count it) finds its handle finished,
    /// and a poll of it ready with the abort's result: the abort claims the outcome a few
    /// instructions before it stores it, and the handle waits out that gap. Run twice:
    /// `is_finished` asked first, then a poll first (each pins its own half of the wait).
    #[test]
    fn a_task_seen_during_its_abort_is_aborted_and_its_handle_finished() {
        for poll_first in [false, true] {
            a_task_seen_during_its_abort_with(poll_first);
        }
    }

    fn a_task_seen_during_its_abort_with(poll_first: bool) {
        loom::model(move || {
            let shared = Arc::new(Shared::<u32>::new(0, 0));
            let job = {
                let shared = shared.clone();
                thread::spawn(move || {
                    let claimed = shared.is_claimed();
                    let aborted = shared.is_aborted();
                    assert!(aborted || !claimed, "claimed by the abort, but not aborted");
                    if !aborted {
                        return;
                    }
                    if !poll_first {
                        assert!(
                            shared.is_finished(),
                            "aborted, but the handle is not finished"
                        );
                    }
                    let (_, waker) = flag();
                    let polled = shared.poll_result(&mut Context::from_waker(&waker));
                    let Poll::Ready(Err(e)) = polled else {
                        panic!("aborted, but the handle's poll did not return the abort");
                    };
                    assert_eq!(e.cancel_reason(), Some(CancelReason::Aborted));
                    assert!(shared.is_finished());
                })
            };
            shared.abort(CancelReason::Aborted);
            job.join().unwrap();
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
