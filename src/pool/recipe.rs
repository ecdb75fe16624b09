//! Recipes as jobs: what SmartAioPool queues ([`SmartJob`]), and the runs a recipe makes.
//!
//! A task is its recipe and the one result slot all of its runs share, in one allocation
//! ([`SmartTask`]). Its handle references that allocation for the slot; the engine holds
//! *copies* of the task, counted apart: the queued job, the copy kept while a run is
//! under way (to run it again after an interruption) and the run itself. When the last
//! copy goes, the handle of a task that never ended is told, and the recipe, with what it
//! captured, is dropped; a handle held longer keeps only the allocation's bytes (the
//! result slot and the recipe's own size, not what the recipe owns).
//!
//! A recipe larger than 256 bytes (or aligned to more than 8) holds its slot in an
//! allocation of its own instead, so that a held handle pins only the slot, as a large
//! future gets a cell of its own ([`fits_inline`]).
//!
//! What a task holds is a [`Recipe`]: every `Fn() -> Future` is one, and so is the watched
//! recipe of a cancel-on-error [`SmartTaskGroup`](crate::SmartTaskGroup), a type of its
//! own rather than a closure so that a refused one gives the user's recipe back.
//!
//! # `unsafe`
//!
//! The recipe sits in an `UnsafeCell<ManuallyDrop<_>>` of the task, and the last copy drops
//! it in place: the count of copies works as `Arc`'s count of references does (a `Release`
//! decrement, an `Acquire` fence before the drop). Every use of the recipe goes through a
//! copy, which keeps the count above zero while it lives, so no use comes after the drop;
//! the handle never touches the recipe. This saves one allocation per task against a
//! result slot of its own (BENCHMARKS.md, "2026-12-03, morning"). The copies also share
//! one counted reference to the task's allocation, dropped by the last copy ([`TaskCopy`]:
//! a copy's `Arc` is made without a count of its own), a copy reaches the count through
//! its pointer to the task (the count is first in a `#[repr(C)]` task: [`Counted`]'s
//! contract), and a task's allocation is written in place ([`TaskRoom`]). The loom models
//! below race the last copies: they check the count's atomic steps (a decrement made a
//! plain load and store fails them), but not the ordering around the recipe and the
//! allocation, which sit in std's `UnsafeCell` and `Arc`, unseen by loom (a `Relaxed`
//! decrement without the fence passes them). `cargo +nightly miri test --lib pool::recipe`
//! runs the unit tests under Miri, which does check that ordering (the test that uses a
//! recipe on one thread and drops it on another reports the data race of that mutant), and
//! the paths the shared reference adds (a queued copy's end freeing the allocation, two
//! last copies racing, an unstarted run, a panic at the last copy's end, a refused task's
//! recipe not taken while another copy lives), under Stacked and Tree Borrows.
//! `TaskCopy` and `SmartJob` must never be `Clone` (a derived clone would copy the shared
//! reference without counting a copy): a copy is made only by `TaskCopy::duplicate`.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::future::Future;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::core::Submit;
use crate::engine::Job;
use crate::error::CancelReason;
use crate::sync::{fence, AtomicUsize, Ordering};
use crate::task::{
    fits_inline, BoxRun, HeldByHandles, Outcome, ResultSlot, RunOwner, Shared, SlotRef,
};

/// What a SmartAioPool task runs: something that makes the task's future, once for each
/// run. Every `Fn() -> Future` is one.
pub(crate) trait Recipe: Send + Sync + 'static {
    /// The future of one run.
    type Fut: Future<Output = Self::Output> + Send + 'static;
    /// The task's result.
    type Output: Send + 'static;

    /// Makes a run's future (user code: it may panic).
    fn call(&self) -> Self::Fut;
}

impl<R, Fut> Recipe for R
where
    R: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    type Fut = Fut;
    type Output = Fut::Output;

    #[inline]
    fn call(&self) -> Fut {
        self()
    }
}

/// A submitted recipe and the one result slot all of its runs share.
///
/// # Dropping
///
/// Its memory goes with the last of its copies and its handle; the recipe goes with the
/// last copy (module docs), or is taken back out of a task refused before it was queued
/// ([`Submit::unready`]).
// `C`, the count of copies first: next to the `Arc`'s own counts, which making a copy
// (under the engine's lock, on another thread than the submit's) writes too, so that both
// are on one cache line unless the allocation starts in a line's last 40 bytes.
#[repr(C)]
pub(crate) struct SmartTask<R, S: ResultSlot> {
    /// The live copies (module docs).
    copies: AtomicUsize,
    /// The result slot: in the task's own allocation (`Shared<T>`; the handle then
    /// references the task), or in one of its own (`Arc<Shared<T>>`: a large recipe's
    /// task).
    slot: S,
    /// Used only through a copy; dropped in place by the last one.
    recipe: UnsafeCell<ManuallyDrop<R>>,
}

// SAFETY: the recipe, the one part that is not `Sync`, is used by shared reference only
// (it is `Fn + Sync`: copies on several threads may use it at once) and dropped only by
// the last copy, when no other is left to use it (module docs); that drop may happen on
// any thread (`R: Send`).
unsafe impl<R: Send + Sync, S: ResultSlot> Sync for SmartTask<R, S> {}

impl<R, S: ResultSlot> SmartTask<R, S> {
    /// A task and its first copy, the caller's, written into `room`, an allocation made
    /// before the recipe moved ([`TaskRoom`]).
    #[inline(always)]
    fn first_copy_in(room: TaskRoom<Self>, recipe: R, slot: S) -> TaskCopy<Self> {
        let room = room.0;
        // SAFETY: a `TaskRoom` holds the only reference to its allocation, strong or weak
        // (made by `TaskRoom::new`, never cloned, and consumed here): nothing else reads or
        // writes its value while it is written. `Arc::as_ptr` points into the allocation
        // with the `Arc`'s own pointer's provenance (no reference is made); the write
        // initialises the whole value, so `assume_init` holds. As `RunCell::init`.
        let task = unsafe {
            Arc::as_ptr(&room)
                .cast_mut()
                .cast::<Self>()
                .write(SmartTask {
                    slot,
                    copies: AtomicUsize::new(1),
                    recipe: UnsafeCell::new(ManuallyDrop::new(recipe)),
                });
            room.assume_init()
        };
        TaskCopy::adopt(task)
    }

    /// The recipe, for the holder of a copy.
    ///
    /// # Safety
    ///
    /// The caller holds a copy for as long as the reference lives.
    unsafe fn recipe(&self) -> &R {
        // SAFETY: the caller's copy keeps the count above zero, so the last copy's drop of
        // the recipe has not begun and cannot begin while the reference lives; every other
        // reference to it is shared too.
        unsafe { &*self.recipe.get() }
    }
}

/// What a [`TaskCopy`] counts on: a task's count of copies, which `TaskCopy` reads and
/// writes itself, through its pointer (no call through the trait object's table), and
/// the last copy's end.
///
/// # Safety
///
/// An implementor is `#[repr(C)]` with its count of copies, a [`AtomicUsize`], as its
/// first field (at offset 0).
pub(crate) unsafe trait Counted {
    /// The last copy ended: tells the handle of a task that never ended, then drops the
    /// recipe.
    ///
    /// # Safety
    ///
    /// Called once, by the copy whose decrement took the count to zero, after an
    /// `Acquire` fence.
    unsafe fn release_last(&self);
}

// SAFETY: `SmartTask` is `#[repr(C)]` with `copies: AtomicUsize` first.
unsafe impl<R, S: ResultSlot> Counted for SmartTask<R, S> {
    unsafe fn release_last(&self) {
        // Dropped after the handle is told, even if telling it panics (a waker's `wake`).
        let _recipe = DropRecipe(&self.recipe);
        let shared = self.slot.shared();
        // The last copy of an unfinished task is going away (its pool or runtime is gone):
        // tell the handle rather than leave it waiting. An aborted task says so, even if
        // its run ended before `abort` decided the outcome.
        if shared.is_claimed() {
            // Decided already (nearly always: the task ended). The decider stores the
            // result a few instructions after its claim (taking no lock and running no
            // user code between) and then wakes the handle, which waits out that gap
            // before it says it is finished or pending (`Shared::poll_result`,
            // `is_finished`): so nothing here needs to wait (unlike an `abort`, which
            // returns only once the handle is resolved), and no error is made to be
            // dropped.
            return;
        }
        let reason = shared.aborted();
        shared.cancel(reason.unwrap_or(CancelReason::RuntimeShutdown));
    }
}

/// A submitted recipe made ready to queue, before the engine's lock is taken: its task,
/// with the result slot in the same allocation, or (a recipe larger than a handle should
/// pin: [`fits_inline`]) beside it.
pub(crate) enum ReadyTask<R, T: Send + 'static> {
    Inline(TaskCopy<SmartTask<R, Shared<T>>>),
    Apart(TaskCopy<SmartTask<R, Arc<Shared<T>>>>),
}

/// The allocation of a task, not written yet, made before the recipe moves: built on the
/// stack and then moved into `Arc::new`'s allocation, the task (0x98 bytes for the
/// benchmark's recipe) was copied once more. Made only by [`TaskRoom::new`], which makes
/// its `Arc` and never clones it (its field is private to this module, and only
/// [`SmartTask::first_copy_in`] takes it apart).
struct TaskRoom<X>(Arc<MaybeUninit<X>>);

impl<X> TaskRoom<X> {
    #[inline(always)]
    fn new() -> Self {
        TaskRoom(Arc::new(MaybeUninit::uninit()))
    }
}

/// Drops a task's recipe in place when it is dropped: made by the last copy only.
struct DropRecipe<'a, R>(&'a UnsafeCell<ManuallyDrop<R>>);

impl<R> Drop for DropRecipe<'_, R> {
    fn drop(&mut self) {
        // SAFETY: made only by the last copy, after the count fell to zero and the
        // `Acquire` fence: no copy is left to use the recipe and none can be made (a copy
        // is made only by another), the handle never touches it, and this runs once.
        unsafe { ManuallyDrop::drop(&mut *self.0.get()) }
    }
}

/// One copy of a task: typed (`X` a [`SmartTask`]: a task being submitted, or the owner
/// of one of its runs), or as the engine queues it (`X` the trait object, in a
/// [`SmartJob`]).
///
/// # Dropping
///
/// Ends the copy (the last one tells an unfinished task's handle and drops the recipe).
///
/// # The copies' reference
///
/// The copies of a task share one counted reference to its allocation (the handle holds
/// another): a copy made by [`duplicate`](Self::duplicate) holds an `Arc` made from the
/// same pointer without a count of its own, and only the last copy's drop drops an `Arc`
/// (the shared reference); the others forget theirs. The count of copies keeps the
/// allocation alive for as long as any copy lives, as the `Arc`'s count did when each
/// copy held its own (one atomic increment and one decrement fewer per re-runnable
/// task: 22 instructions per SmartAioPool job, callgrind, current-thread, 2026-12-07).
/// An `Arc` handed on by [`into_task`](Self::into_task) is that shared reference too: its
/// taker adopts it again ([`adopt`](Self::adopt)), or, as the task's only copy, owns it.
// The task in a `ManuallyDrop`, not an `Option` taken by `into_task`: every use of an
// `Option` checked it (`task()`'s `expect`), 20 instructions per SmartAioPool job
// (callgrind, current-thread, 2026-12-07); `into_task` consumes the copy, so no use can
// follow it.
pub(crate) struct TaskCopy<X: ?Sized + Counted>(ManuallyDrop<Arc<X>>);

impl<X: ?Sized + Counted> TaskCopy<X> {
    /// Takes over the copy whose count `task` carries.
    #[inline(always)]
    fn adopt(task: Arc<X>) -> Self {
        TaskCopy(ManuallyDrop::new(task))
    }

    #[inline(always)]
    fn task(&self) -> &Arc<X> {
        &self.0
    }

    /// The task, with this copy's count handed on to the caller (who adopts it again, or
    /// owns it as the only copy: see "The copies' reference" above).
    #[inline(always)]
    fn into_task(self) -> Arc<X> {
        let mut copy = ManuallyDrop::new(self);
        // SAFETY: `copy` is never dropped (so the copy is not ended and its task not taken
        // again by `Drop`), and it is consumed here: its task is taken once.
        unsafe { ManuallyDrop::take(&mut copy.0) }
    }

    /// The task's count of copies.
    #[inline(always)]
    fn copies(&self) -> &AtomicUsize {
        // SAFETY: `X: Counted` puts the count at offset 0 of the task (the trait's
        // contract); the pointer is the `Arc`'s (its metadata dropped by the cast), valid
        // while `self`, a copy, keeps the task alive; the count is only used atomically.
        unsafe { &*Arc::as_ptr(self.task()).cast::<AtomicUsize>() }
    }

    /// Another copy of the task.
    fn duplicate(&self) -> Self {
        let task = self.task();
        // `Relaxed`, as `Arc::clone`: this copy keeps the count above zero meanwhile.
        self.copies().fetch_add(1, Ordering::Relaxed);
        // SAFETY: the copies share one counted reference to the task (see `TaskCopy`),
        // which `self`, a copy, keeps alive until the new copy is the last: the new copy's
        // `Arc` is made from the same pointer without a count of its own (`Arc::as_ptr`
        // gives the pointer `Arc::from_raw` takes, metadata included), and it is dropped
        // only as that shared reference, by the last copy (`Drop`).
        TaskCopy::adopt(unsafe { Arc::from_raw(Arc::as_ptr(task)) })
    }
}

impl<R, S: ResultSlot> TaskCopy<SmartTask<R, S>> {
    /// The recipe of a task never queued, whose handle's reference to it is gone: the
    /// copy is not ended (nothing is told, nothing dropped but the result slot).
    fn into_recipe(self) -> R {
        // Checked before the `Arc` is taken: its reference is the copies' shared one (see
        // `TaskCopy`), which `Arc::into_inner` gives up when it fails, so it must be this
        // copy's alone; a copy dropped as this panic unwinds ends as any other.
        assert_eq!(
            self.task().copies.load(Ordering::Relaxed),
            1,
            "a task's recipe is shared only once its job is queued"
        );
        let task = Arc::into_inner(self.into_task())
            .expect("a task's recipe is shared only once its job is queued");
        let SmartTask { recipe, .. } = task;
        ManuallyDrop::into_inner(recipe.into_inner())
    }
}

impl<X: ?Sized + Counted> Drop for TaskCopy<X> {
    fn drop(&mut self) {
        // This copy ends here, once (`into_task` hands its count on instead). As `Arc`'s
        // drop: `Release`, so that every use of the recipe by a copy comes before the
        // decrement that ends the copy; the last copy's `Acquire` fence orders all of
        // them before the recipe's drop.
        if self.copies().fetch_sub(1, Ordering::Release) != 1 {
            // Not the last copy: its `Arc` is the copies' shared reference, which the
            // others still hold (a copy's `Arc` is dropped by the last copy only).
            return;
        }
        fence(Ordering::Acquire);
        // SAFETY: taken once, here (a copy handed on by `into_task` is never dropped), and
        // `self.0` is not used after.
        let task = unsafe { ManuallyDrop::take(&mut self.0) };
        // SAFETY: the last copy, after the fence. `task`, the copies' reference, goes
        // after it, or while a panic of it (the handle's waker, the recipe's drop)
        // unwinds.
        unsafe { task.release_last() };
    }
}

impl<R, S> ResultSlot for TaskCopy<SmartTask<R, S>>
where
    R: Send + Sync + 'static,
    S: ResultSlot,
{
    type Output = S::Output;

    fn shared(&self) -> &Shared<S::Output> {
        self.task().shared()
    }
}

impl<R, S> RunOwner for TaskCopy<SmartTask<R, S>>
where
    R: Send + Sync + 'static,
    S: ResultSlot,
{
    // The task may run again; its last copy going away tells the handle.
    const CANCEL_ON_DROP: bool = false;
}

/// Where a task's slot is, for a run's owner (a copy) and, when the slot is in the task's
/// own allocation, for its handle.
impl<R, S> ResultSlot for SmartTask<R, S>
where
    R: Send + Sync + 'static,
    S: ResultSlot,
{
    type Output = S::Output;

    fn shared(&self) -> &Shared<S::Output> {
        self.slot.shared()
    }
}

/// The handle's view of a task that holds its slot: the task's allocation (the recipe is
/// never touched through it). Only then: see [`HeldByHandles`].
impl<R, T> HeldByHandles for SmartTask<R, Shared<T>>
where
    R: Send + Sync + 'static,
    T: Send + 'static,
{
}

/// The type-erased view the engine keeps of a [`SmartTask`], through a copy.
trait SmartTaskDyn: Counted + Send + Sync + 'static {
    /// Starts a run, which takes over the caller's copy.
    fn run(self: Arc<Self>) -> BoxRun;
    fn cancel(&self, reason: CancelReason);
    /// Why it was aborted, if it was.
    fn aborted(&self) -> Option<CancelReason>;
    /// The waker of its handle, if it is being awaited.
    fn handle_waker(&self) -> Option<std::task::Waker>;
    /// See `Shared::set_runner`.
    fn set_runner(&self, key: usize);
    /// Whether its handle is gone.
    fn detached(&self) -> bool;
    /// A run that calls no user code (for a task cancelled before it started); it takes
    /// over the caller's copy.
    fn unstarted(self: Arc<Self>) -> BoxRun;
}

/// A queued recipe task: one copy of it (a named type rather than an alias of the trait
/// object, which keeps the submit futures `Send` for the compiler).
///
/// # Dropping
///
/// Ends the copy, as [`TaskCopy`]'s drop does.
pub(crate) struct SmartJob(TaskCopy<dyn SmartTaskDyn>);

impl SmartJob {
    /// The job of a task's copy.
    fn new<X: SmartTaskDyn>(copy: TaskCopy<X>) -> Self {
        SmartJob(TaskCopy::adopt(copy.into_task()))
    }
}

impl<R, S> SmartTaskDyn for SmartTask<R, S>
where
    R: Recipe<Output = S::Output>,
    S: ResultSlot,
{
    fn run(self: Arc<Self>) -> BoxRun {
        let copy = TaskCopy::adopt(self);
        let shared = copy.task().shared();
        if shared.is_claimed() {
            // Ended already (aborted while queued, or finished by an earlier run).
            let outcome = if shared.is_aborted() {
                Outcome::Cancelled(shared.abort_reason())
            } else {
                Outcome::Completed
            };
            return BoxRun::ended(outcome);
        }
        // SAFETY: `copy` is held until after the call (it moves into the run below).
        let recipe = unsafe { copy.task().recipe() };
        match catch_unwind(AssertUnwindSafe(|| recipe.call())) {
            Ok(fut) => BoxRun::new(copy, fut),
            // The recipe itself panicked: a run that re-raises the panic on its first poll,
            // so it is reported like a panic of the future.
            Err(payload) => BoxRun::new(copy, PanicNow::<R::Output>::new(payload)),
        }
    }

    fn cancel(&self, reason: CancelReason) {
        self.shared().cancel(reason);
    }

    fn aborted(&self) -> Option<CancelReason> {
        self.shared().aborted()
    }

    fn handle_waker(&self) -> Option<std::task::Waker> {
        self.shared().handle_waker()
    }

    fn set_runner(&self, key: usize) {
        self.shared().set_runner(key);
    }

    fn detached(&self) -> bool {
        self.shared().is_detached()
    }

    fn unstarted(self: Arc<Self>) -> BoxRun {
        // A future that is never polled: the run is cancelled before its first poll.
        BoxRun::new(TaskCopy::adopt(self), std::future::pending::<R::Output>())
    }
}

impl<R: Recipe> Submit<SmartJob> for R {
    type Output = R::Output;
    type Ready = ReadyTask<R, R::Output>;

    fn ready(self, shared: Shared<R::Output>) -> Self::Ready {
        self.ready_slot(|| shared)
    }

    /// The task's room first, the recipe moved into it after, and the slot made between
    /// (nothing that could unwind between the call and the allocation: see
    /// [`Submit::ready_slot`]).
    #[inline(always)]
    fn ready_slot(self, make: impl FnOnce() -> Shared<R::Output>) -> Self::Ready {
        if fits_inline::<R>() {
            let room = TaskRoom::new();
            ReadyTask::Inline(SmartTask::first_copy_in(room, self, make()))
        } else {
            let room = TaskRoom::new();
            ReadyTask::Apart(SmartTask::first_copy_in(room, self, Arc::new(make())))
        }
    }

    fn slot(ready: &Self::Ready) -> SlotRef<R::Output> {
        match ready {
            ReadyTask::Inline(copy) => copy.task().clone(),
            ReadyTask::Apart(copy) => copy.task().slot.clone(),
        }
    }

    /// Inline: a call in the submit's critical section, 12 instructions per job, for a
    /// match and a move.
    #[inline]
    fn into_job(ready: Self::Ready) -> SmartJob {
        match ready {
            ReadyTask::Inline(copy) => SmartJob::new(copy),
            ReadyTask::Apart(copy) => SmartJob::new(copy),
        }
    }

    fn unready(ready: Self::Ready) -> R {
        // Never queued: its result slot has no handle, and the copy is not ended (the
        // recipe goes back to the caller).
        match ready {
            ReadyTask::Inline(copy) => copy.into_recipe(),
            ReadyTask::Apart(copy) => copy.into_recipe(),
        }
    }
}

impl Job for SmartJob {
    const RERUN: bool = true;
    const STARTS_USER_CODE: bool = true;

    fn keep(&self) -> Option<Self> {
        Some(SmartJob(self.0.duplicate()))
    }

    fn start(self) -> BoxRun {
        self.0.into_task().run()
    }

    fn start_cancelled(self, _reason: CancelReason) -> BoxRun {
        self.0.into_task().unstarted()
    }

    fn cancel(self, reason: CancelReason) {
        self.0.task().cancel(reason)
    }

    fn aborted(&self) -> Option<CancelReason> {
        self.0.task().aborted()
    }

    fn handle_waker(&self) -> Option<std::task::Waker> {
        self.0.task().handle_waker()
    }

    fn set_runner(&self, key: usize) {
        self.0.task().set_runner(key);
    }

    fn detached(&self) -> bool {
        self.0.task().detached()
    }
}

/// A future that re-raises a recipe's panic when polled.
struct PanicNow<T> {
    payload: Option<Box<dyn std::any::Any + Send>>,
    _output: std::marker::PhantomData<fn() -> T>,
}

impl<T> PanicNow<T> {
    fn new(payload: Box<dyn std::any::Any + Send>) -> Self {
        PanicNow {
            payload: Some(payload),
            _output: std::marker::PhantomData,
        }
    }
}

impl<T> Future for PanicNow<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<T> {
        match self.payload.take() {
            Some(payload) => std::panic::resume_unwind(payload),
            None => Poll::Pending,
        }
    }
}

/// What the unit tests and the loom models share.
#[cfg(test)]
mod fixtures {
    use std::future::Future;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use super::SmartJob;
    use crate::pool::core::Submit;
    use crate::task::{BoxRun, Outcome, Shared, TaskHandle};

    pub(super) use crate::testing::Dropped;

    /// A submitted recipe that returns 8 and holds a drop counter: what `Core::push_with`
    /// makes of it, its job and its handle (of no pool: `abort` finds none to tell).
    pub(super) fn submitted(drops: &Arc<AtomicUsize>) -> (SmartJob, TaskHandle<u32>) {
        let held = Dropped(drops.clone());
        let recipe = move || {
            let _ = &held;
            async { 8u32 }
        };
        parts(recipe)
    }

    pub(super) fn parts<S: Submit<SmartJob>>(item: S) -> (SmartJob, TaskHandle<S::Output>) {
        let ready = item.ready(Shared::new(0, 0));
        let handle = TaskHandle::new(S::slot(&ready));
        (S::into_job(ready), handle)
    }

    pub(super) fn poll<T>(handle: &mut TaskHandle<T>) -> Poll<Result<T, crate::TaskError>> {
        let mut cx = Context::from_waker(Waker::noop());
        std::pin::Pin::new(handle).poll(&mut cx)
    }

    /// Polls a run until it ends, then publishes its outcome as the engine does.
    pub(super) fn run_to_end(run: &mut BoxRun) -> Outcome {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if run.poll_run(&mut cx).is_ready() {
                let (woken, decided) = run.publish_locked();
                woken.fire();
                return decided;
            }
        }
    }
}

#[cfg(all(test, not(nb_aiopool_loom)))]
mod tests {
    //! The copies' contract, without a runtime (so that Miri can run it: module docs).

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use super::fixtures::{poll, run_to_end, submitted};
    use crate::engine::Job;
    use crate::error::CancelReason;
    use crate::task::Outcome;

    /// The recipe lives as long as a copy does (a run, the engine's kept copy), not as
    /// long as the handle; a handle held after the last copy still has the result.
    #[test]
    fn the_last_copy_drops_the_recipe_and_the_handle_keeps_the_result() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (job, mut handle) = submitted(&drops);
        let kept = job.keep().expect("a recipe task keeps a copy");
        let mut run = job.start();
        assert_eq!(run_to_end(&mut run), Outcome::Completed);
        drop(run);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "dropped while a copy lives"
        );
        drop(kept);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "not dropped with the last copy"
        );
        assert!(matches!(poll(&mut handle), Poll::Ready(Ok(8))));
    }

    /// The last copy of a task that never ended (its pool or runtime went away) resolves
    /// the handle, and a run started from a copy kept after that is not needed for it.
    #[test]
    fn the_last_copy_of_an_unfinished_task_cancels_its_handle() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (job, mut handle) = submitted(&drops);
        assert!(poll(&mut handle).is_pending());
        let kept = job.keep().expect("a recipe task keeps a copy");
        // A run dropped before it ended leaves the outcome to the last copy.
        drop(job.start());
        assert!(
            poll(&mut handle).is_pending(),
            "resolved while a copy lives"
        );
        drop(kept);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let Poll::Ready(Err(e)) = poll(&mut handle) else {
            panic!("the handle of an unfinished task was not resolved by its last copy");
        };
        assert_eq!(e.cancel_reason(), Some(CancelReason::RuntimeShutdown));
    }

    /// An aborted task's last copy reports the abort, and the recipe is never called.
    #[test]
    fn an_aborted_task_is_not_run_and_its_recipe_is_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (job, handle) = submitted(&drops);
        handle.abort();
        let mut run = job.start();
        assert_eq!(
            run_to_end(&mut run),
            Outcome::Cancelled(CancelReason::Aborted)
        );
        drop(run);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        drop(handle);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    /// A handle dropped first leaves the recipe to the copies; the allocation goes with
    /// the last of them.
    #[test]
    fn a_detached_task_drops_its_recipe_with_its_last_copy() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (job, handle) = submitted(&drops);
        drop(handle);
        let mut run = job.start();
        assert_eq!(run_to_end(&mut run), Outcome::Completed);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(run);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    /// A task refused before it was queued gives its recipe back, undropped, from its
    /// allocation written in place (`TaskRoom`), once the handle's reference is gone
    /// (`Submit::unready`); its one copy holds the copies' reference.
    #[test]
    fn a_refused_task_gives_its_recipe_back() {
        use crate::pool::core::Submit;
        use crate::task::{Shared, TaskHandle};

        let drops = Arc::new(AtomicUsize::new(0));
        let held = super::fixtures::Dropped(drops.clone());
        let recipe = move || {
            let _ = &held;
            async { 8u32 }
        };
        fn refused<S: Submit<super::SmartJob>>(item: S) -> S {
            let ready = item.ready(Shared::new(0, 0));
            drop(TaskHandle::new(S::slot(&ready)));
            S::unready(ready)
        }
        let recipe = refused(recipe);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "the recipe comes back whole"
        );
        drop(recipe);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    /// A recipe larger than a handle should pin gets its result slot apart, and works
    /// the same; a small one shares its task's allocation.
    #[test]
    fn a_large_recipe_keeps_its_slot_apart() {
        use super::fixtures::{parts, Dropped};
        use super::{ReadyTask, SmartJob};
        use crate::pool::core::Submit;
        use crate::task::Shared;
        fn large(held: Dropped) -> impl Fn() -> std::future::Ready<u32> + Send + Sync {
            let pad = [1u8; 300];
            move || {
                let _ = &held;
                std::future::ready(pad.iter().map(|&b| u32::from(b)).sum())
            }
        }
        let drops = Arc::new(AtomicUsize::new(0));
        let ready = Submit::<SmartJob>::ready(large(Dropped(drops.clone())), Shared::new(0, 0));
        assert!(matches!(ready, ReadyTask::Apart(_)));
        drop(ready);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let (job, mut handle) = parts(large(Dropped(drops.clone())));
        let kept = job.keep().expect("a recipe task keeps a copy");
        let mut run = job.start();
        assert_eq!(run_to_end(&mut run), Outcome::Completed);
        drop((run, kept));
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        assert!(matches!(poll(&mut handle), Poll::Ready(Ok(300))));
        let small = Submit::<SmartJob>::ready(|| async { 1u32 }, Shared::new(0, 0));
        assert!(matches!(small, ReadyTask::Inline(_)));
    }

    /// A run uses the recipe on one thread and the last copy drops it on another: the
    /// count's `Release` decrement and `Acquire` fence order the use before the drop.
    /// Miri reports a data race here if either is weakened (checked by making the
    /// decrement `Relaxed` and removing the fence).
    #[test]
    fn a_recipe_used_on_one_thread_is_dropped_on_another_after_the_use() {
        /// Written by its drop, read by the recipe: plain memory, no atomics.
        struct Plain(Box<u64>);
        impl Drop for Plain {
            fn drop(&mut self) {
                *self.0 += 1;
            }
        }
        for _ in 0..4 {
            let plain = Plain(Box::new(5));
            let recipe = move || {
                let v = *plain.0;
                async move {
                    std::future::pending::<()>().await;
                    v
                }
            };
            let (job, handle) = super::fixtures::parts(recipe);
            let kept = job.keep().expect("a recipe task keeps a copy");
            let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let runner = {
                let ran = ran.clone();
                std::thread::spawn(move || {
                    let mut run = job.start();
                    let _ = run.poll_run(&mut Context::from_waker(Waker::noop()));
                    drop(run);
                    // Relaxed: only the copies' count may order the recipe's use and drop.
                    ran.store(true, Ordering::Relaxed);
                })
            };
            while !ran.load(Ordering::Relaxed) {
                std::thread::yield_now();
            }
            drop(kept);
            runner.join().unwrap();
            drop(handle);
        }
    }
}

/// Loom models of the copies' count: run with
/// `RUSTFLAGS="--cfg nb_aiopool_loom" cargo test --lib --release loom`.
#[cfg(all(test, nb_aiopool_loom))]
mod loom_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Poll;

    use loom::thread;

    use super::fixtures::{poll, run_to_end, submitted};
    use crate::engine::Job;
    use crate::error::CancelReason;

    /// A run that completes and the engine's kept copy end on two threads: the recipe is
    /// dropped once, after both, and the handle gets the result, never a cancellation.
    #[test]
    fn a_finished_run_and_the_kept_copy_end_at_once() {
        loom::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let (job, mut handle) = submitted(&drops);
            let kept = job.keep().expect("a recipe task keeps a copy");
            let mut run = job.start();
            let other = thread::spawn(move || drop(kept));
            run_to_end(&mut run);
            drop(run);
            other.join().unwrap();
            assert_eq!(drops.load(Ordering::SeqCst), 1);
            assert!(matches!(poll(&mut handle), Poll::Ready(Ok(8))));
        });
    }

    /// An unfinished task's last two copies end on two threads: exactly one of them
    /// resolves the handle, and the recipe is dropped once.
    #[test]
    fn the_last_two_copies_of_an_unfinished_task_end_at_once() {
        loom::model(|| {
            let drops = Arc::new(AtomicUsize::new(0));
            let (job, mut handle) = submitted(&drops);
            let kept = job.keep().expect("a recipe task keeps a copy");
            let other = thread::spawn(move || drop(kept));
            drop(job);
            other.join().unwrap();
            assert_eq!(drops.load(Ordering::SeqCst), 1);
            let Poll::Ready(Err(e)) = poll(&mut handle) else {
                panic!("the handle of an unfinished task was not resolved");
            };
            assert_eq!(e.cancel_reason(), Some(CancelReason::RuntimeShutdown));
        });
    }
}

/// Review of the copies' shared reference (6a091ed, c104841): the paths the unit tests
/// above leave out, under Miri (`cargo +nightly miri test --lib pool::recipe`): the
/// allocation freed through a queued copy's `Arc<dyn _>` by the last of two copies ending
/// at once on two threads, the copies' reference dropped while a panic of the last copy's
/// end unwinds (a recipe's drop, a handle's waker), the start of a task cancelled while
/// queued, and a refused task's check of its copies.
#[cfg(all(test, not(nb_aiopool_loom)))]
mod shared_reference_tests {
    use std::future::Future;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    use super::fixtures::{parts, poll, run_to_end, submitted, Dropped};
    use crate::engine::Job;
    use crate::error::CancelReason;

    /// A detached task's last two copies, both queued ones (`Arc<dyn _>`), end at once on
    /// two threads, the handle's reference gone first: the last frees the allocation.
    #[test]
    fn a_detached_tasks_last_two_copies_end_at_once_and_free_it() {
        for _ in 0..8 {
            let drops = Arc::new(AtomicUsize::new(0));
            let (job, handle) = submitted(&drops);
            drop(handle);
            let kept = job.keep().expect("a recipe task keeps a copy");
            let other = std::thread::spawn(move || drop(kept));
            drop(job);
            other.join().unwrap();
            assert_eq!(drops.load(Ordering::SeqCst), 1);
        }
    }

    /// The two copies and the handle end at once on three threads.
    #[test]
    fn two_copies_and_the_handle_end_at_once() {
        for _ in 0..6 {
            let drops = Arc::new(AtomicUsize::new(0));
            let (job, handle) = submitted(&drops);
            let kept = job.keep().expect("a recipe task keeps a copy");
            let a = std::thread::spawn(move || drop(kept));
            let b = std::thread::spawn(move || drop(handle));
            drop(job);
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(drops.load(Ordering::SeqCst), 1);
        }
    }

    /// Panics when dropped (not while a panic unwinds), and counts its drop.
    struct PanicsOnDrop(#[allow(dead_code)] Dropped);
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("a recipe's drop panicked");
            }
        }
    }

    /// The last copy's end panics in the recipe's drop, the handle gone: the copies'
    /// reference (the last to the allocation) is dropped as the panic unwinds, once
    /// (Miri: no leak, no double free).
    #[test]
    fn a_recipe_whose_drop_panics_frees_its_task() {
        let drops = Arc::new(AtomicUsize::new(0));
        let held = PanicsOnDrop(Dropped(drops.clone()));
        let recipe = move || {
            let _ = &held;
            async { 8u32 }
        };
        let (job, handle) = parts(recipe);
        drop(handle);
        let kept = job.keep().expect("a recipe task keeps a copy");
        drop(job);
        assert!(catch_unwind(AssertUnwindSafe(move || drop(kept))).is_err());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    /// A waker that panics when woken.
    struct PanicWaker;
    impl Wake for PanicWaker {
        fn wake(self: Arc<Self>) {
            panic!("a handle's waker panicked");
        }
    }

    /// The last copy of an unfinished task tells its awaited handle, whose waker panics:
    /// the wake is made quietly (`unwind::quietly`: the panic does not unwind through
    /// `release_last`), the recipe is dropped and the copies' reference too; the handle,
    /// dropped after, frees the allocation.
    #[test]
    fn a_handles_waker_that_panics_at_the_last_copys_end() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (job, mut handle) = submitted(&drops);
        let waker = Waker::from(Arc::new(PanicWaker));
        let mut cx = Context::from_waker(&waker);
        assert!(std::pin::Pin::new(&mut handle).poll(&mut cx).is_pending());
        let kept = job.keep().expect("a recipe task keeps a copy");
        drop(job);
        drop(kept);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let Poll::Ready(Err(e)) = poll(&mut handle) else {
            panic!("the handle was not resolved");
        };
        assert_eq!(e.cancel_reason(), Some(CancelReason::RuntimeShutdown));
        drop(handle);
    }

    /// A task cancelled while queued starts as a run that calls no user code
    /// (`start_cancelled`, `unstarted`: the copy's `Arc` handed on and adopted again).
    #[test]
    fn a_task_cancelled_in_the_queue_starts_unstarted() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (job, handle) = submitted(&drops);
        handle.abort();
        let kept = job.keep().expect("a recipe task keeps a copy");
        let mut run = job.start_cancelled(CancelReason::Aborted);
        let _ = run_to_end(&mut run);
        drop(run);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(handle);
        drop(kept);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    /// `into_recipe` of a copy that is not the only one refuses before it takes the
    /// copies' reference; both copies then end as any other, once.
    #[test]
    fn a_refused_tasks_recipe_is_not_taken_while_another_copy_lives() {
        use super::ReadyTask;
        use crate::pool::core::Submit;
        use crate::task::Shared;

        let drops = Arc::new(AtomicUsize::new(0));
        let held = Dropped(drops.clone());
        let recipe = move || {
            let _ = &held;
            async { 8u32 }
        };
        let ready = Submit::<super::SmartJob>::ready(recipe, Shared::new(0, 0));
        let ReadyTask::Inline(copy) = ready else {
            panic!("a small recipe's slot is inline");
        };
        let other = copy.duplicate();
        assert!(catch_unwind(AssertUnwindSafe(move || copy.into_recipe())).is_err());
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(other);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}
