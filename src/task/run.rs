//! [`BoxRun`]: one run of a task's future, as the engine drives it, in one allocation with
//! the task's result slot when it can.
//!
//! A run catches panics of the future's `poll` *and* of its `Drop` (the future is dropped as
//! soon as it returns), so a misbehaving task only ever affects its own handle. It claims
//! the task's outcome when the run ends and holds the result back until the engine has
//! counted it ([`BoxRun::publish_locked`]).
//!
//! # One allocation per future task
//!
//! A run lives in a [`RunCell`]: its owner (the task's result slot, or a recipe task), then
//! the future and what the run holds back. A submitted future and its result slot share one
//! cell, as tokio's task cell holds a task's future and its output: the engine owns the run
//! through a [`BoxRun`], the handle shares the result slot through a [`SlotRef`]. A held
//! handle then pins the cell's memory, the future's storage included (not what the future
//! owned: it is dropped when it ends), so a future larger than [`INLINE_LIMIT`] bytes (or
//! aligned to more than a word) runs in a cell of its own beside its result slot
//! ([`ReadyRun`]): a handle pins at most the slot, the run's bookkeeping (with room for the
//! result it holds back) and that many bytes. A recipe's run is a cell of its own too: its
//! result slot outlives it, shared by all the task's runs.
//!
//! # `unsafe`
//!
//! The run's state sits in an `UnsafeCell` of the cell, shared (by reference count) with
//! the handle. Only the cell's one [`BoxRun`] reaches that state, as if it owned it: the
//! `BoxRun` is neither `Clone` nor `Sync`, every access that writes the state takes it by
//! `&mut`, and the handle's copy reaches only the owner part. The state is pinned because
//! the cell is: nothing moves a cell out of its `Arc` once its run is made
//! ([`ReadyRun::into_run`]). `cargo +nightly miri test --lib task::run` runs this module's
//! tests under Miri (RELIABILITY.md).
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;

use super::shared::{HeldByHandles, ResultSlot, SlotRef, Woken};
use super::{Outcome, Shared};
use crate::error::{CancelReason, TaskError};
use crate::unwind::{self, drop_payload, Payload};

/// The largest future, in bytes, that shares its cell with its result slot; a larger one
/// gets a cell of its own, so that a held handle never pins more than this of a future's
/// storage.
pub(crate) const INLINE_LIMIT: usize = 256;

/// The largest alignment of a future that shares its cell with its result slot: a future
/// aligned to more would pad the cell beyond what [`INLINE_LIMIT`] promises.
const INLINE_ALIGN: usize = 8;

/// Whether a value of type `V` (a future, or a SmartAioPool recipe) may share an
/// allocation with its task's result slot, which a held handle pins: at most
/// [`INLINE_LIMIT`] bytes, aligned to at most [`INLINE_ALIGN`].
pub(crate) const fn fits_inline<V>() -> bool {
    std::mem::size_of::<V>() <= INLINE_LIMIT && std::mem::align_of::<V>() <= INLINE_ALIGN
}

/// Whatever owns a run's task: its result slot (a future, in its cell), a reference to it
/// (a large future) or a copy of a recipe task (SmartAioPool).
pub(crate) trait RunOwner: ResultSlot {
    /// Whether a run dropped before it ended tells the handle (futures: there is no other
    /// run), or leaves that to the owner (recipes: they may run again).
    const CANCEL_ON_DROP: bool;
}

impl<T: Send + 'static> RunOwner for Shared<T> {
    const CANCEL_ON_DROP: bool = true;
}

impl<T: Send + 'static> RunOwner for Arc<Shared<T>> {
    const CANCEL_ON_DROP: bool = true;
}

pin_project! {
    #[project = StageProj]
    #[project_replace = StageReplace]
    enum Stage<F> {
        Running { #[pin] fut: F },
        Done,
    }
}

pin_project! {
    /// What one run holds: its future until it ends, then the result it holds back until
    /// the engine publishes it.
    // `C`, `outcome` first: every poll reads it, and the task's abort flag, which every
    // poll reads too, ends the owner just before it (where rustc lays out a `Shared`
    // today: its flags last; not a guarantee, only a measured gain); with the future's
    // first bytes right after, a poll touches one cache line fewer (BENCHMARKS.md,
    // "2026-12-03, midday").
    #[repr(C)]
    struct RunState<F: Future> {
        outcome: Option<Outcome>,
        // The result was handed over (what is left in `held` is a result nobody wants).
        published: bool,
        #[pin]
        stage: Stage<F>,
        held: Option<Result<F::Output, TaskError>>,
    }
}

/// One run and its owner, in one allocation.
///
/// # Dropping
///
/// Dropping it drops what is left: the owner, and a run state that its [`BoxRun`] emptied
/// when it was dropped (so the last copy, a handle's, runs no user code of the run).
pub(crate) struct RunCell<H, F: Future> {
    owner: H,
    /// Reached only through the cell's [`BoxRun`].
    state: UnsafeCell<RunState<F>>,
}

// SAFETY: `state`, the one part that is not `Sync`, is reached only through the cell's one
// `BoxRun` (module docs), which is neither `Sync` nor `Clone`: other copies of the cell
// (the handle's) share only `owner`, which must be `Sync`. The `BoxRun` moves the state
// between threads, hence `Send` for the future and its output.
unsafe impl<H: Send + Sync, F: Future + Send> Sync for RunCell<H, F> where F::Output: Send {}

impl<H, F: Future> RunCell<H, F> {
    fn new(owner: H, fut: F) -> Self {
        RunCell {
            owner,
            state: UnsafeCell::new(RunState {
                stage: Stage::Running { fut },
                held: None,
                outcome: None,
                published: false,
            }),
        }
    }

    /// Writes a cell into `cell`, an allocation made for it before the owner and the
    /// future moved ([`ReadyRun::room`]).
    ///
    /// # Safety
    ///
    /// `cell` is the only reference to its allocation, strong or weak (as made by
    /// `Arc::new(MaybeUninit::uninit())` and never cloned).
    #[inline(always)]
    unsafe fn init(cell: Room<H, F>, owner: H, fut: F) -> Arc<Self> {
        // SAFETY: `cell` has no other copy and no `Weak` (the caller's promise): nothing
        // else reads or writes its value while it is written. `Arc::as_ptr` points into
        // the allocation with the `Arc`'s own pointer's provenance (no reference is made),
        // as `Arc::get_mut_unchecked` writes through it; the write initialises the whole
        // value, so `assume_init` holds.
        unsafe {
            Arc::as_ptr(&cell)
                .cast_mut()
                .cast::<Self>()
                .write(RunCell::new(owner, fut));
            cell.assume_init()
        }
    }

    /// The run's state.
    ///
    /// # Safety
    ///
    /// Only the cell's [`BoxRun`] calls it, through a method that takes the `BoxRun` by
    /// `&mut`; so the reference is the only one to the state while it lives.
    #[allow(clippy::mut_from_ref)] // unique by the caller's promise
    unsafe fn state(self: Pin<&Self>) -> Pin<&mut RunState<F>> {
        // SAFETY: unique by the caller's promise. Pinned: the cell is, and nothing moves
        // the state out of a pinned cell (it is structurally pinned).
        unsafe { Pin::new_unchecked(&mut *self.get_ref().state.get()) }
    }
}

/// A handle's view of a future's cell: the result slot at its head.
impl<F> ResultSlot for RunCell<Shared<F::Output>, F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn shared(&self) -> &Shared<F::Output> {
        &self.owner
    }
}

impl<F> HeldByHandles for RunCell<Shared<F::Output>, F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
}

/// A run as the engine owns it: a type-erased [`RunCell`] (or a run that ended before it
/// began), driven to an [`Outcome`].
///
/// The engine polls it to an outcome, records that outcome in the pool's counters, and
/// only then calls [`publish_locked`](Self::publish_locked), so that a handle never resolves
/// before the pool's statistics count its task.
///
/// # Dropping
///
/// Dropped before it ended (its runtime shut down, or the pool dropped it unrun), the
/// future is dropped (a panic in its `Drop` is caught) and, for futures, the handle
/// resolves to [`CancelReason::RuntimeShutdown`]; a held result is handed over. A result
/// nobody wants (the handle is gone) is dropped here. The cell's memory goes with the last
/// of the run and the handle.
pub(crate) struct BoxRun {
    run: Pin<Arc<dyn Erased>>,
    // Not `Sync`: `held_error` lends out the run's state by `&self` (module docs).
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl BoxRun {
    /// A run of `fut` for the task `owner` holds, in a cell of its own.
    pub(crate) fn new<H, F>(owner: H, fut: F) -> BoxRun
    where
        H: RunOwner<Output = F::Output>,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        BoxRun::from_pinned(Arc::pin(RunCell::new(owner, fut)))
    }

    /// A run that ended before it began, with `outcome` (the task had one already).
    pub(crate) fn ended(outcome: Outcome) -> BoxRun {
        BoxRun::from_pinned(Arc::pin(Ended(outcome)))
    }

    fn from_pinned(run: Pin<Arc<dyn Erased>>) -> BoxRun {
        BoxRun {
            run,
            _not_sync: PhantomData,
        }
    }

    #[inline]
    fn erased(&self) -> Pin<&dyn Erased> {
        self.run.as_ref()
    }

    /// Polls the task. On `Ready` the user future is already dropped (a panic in its
    /// `Drop` is caught and reported as the task's panic) and the result is held back
    /// until [`publish_locked`](Self::publish_locked).
    #[inline]
    pub(crate) fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        // SAFETY: `&mut self`: this `BoxRun` is the run's only one (module docs).
        unsafe { self.erased().poll_run(cx) }
    }

    /// Ends the run now for `reason` (dropping the user future); the next `poll_run`
    /// returns the outcome.
    #[inline]
    pub(crate) fn cancel(&mut self, reason: CancelReason) {
        // SAFETY: as in `poll_run`.
        unsafe { self.erased().cancel(reason) }
    }

    /// Decides the task's outcome with the held result and stores it for the handle;
    /// called under the engine's lock, right where the pool counts the outcome, so the two
    /// agree. Returns the wake-up to fire once the lock is released, and the outcome to
    /// count (`Cancelled(Aborted)` if an abort decided first). A result nobody wants is
    /// dropped with the run.
    #[inline]
    pub(crate) fn publish_locked(&mut self) -> (Woken, Outcome) {
        // SAFETY: as in `poll_run`.
        unsafe { self.erased().publish_locked() }
    }

    /// The error the run ended with: before `publish_locked`, the one about to be handed
    /// over; after it, only one nobody took (the handle was dropped: a detached task), for
    /// the pool's `on_panic` callback.
    #[inline]
    pub(crate) fn held_error(&self) -> Option<&TaskError> {
        // SAFETY: a shared borrow of this `BoxRun`, the run's only one, which is not `Sync`:
        // nothing writes the state while the returned reference lives.
        unsafe { self.erased().get_ref().held_error() }
    }

    /// Why the task was aborted (by its handle, or by the nested-wait check), if it was.
    #[inline]
    pub(crate) fn aborted(&self) -> Option<CancelReason> {
        self.erased().aborted()
    }

    /// The waker of the task's handle, if it is being awaited.
    #[inline]
    pub(crate) fn handle_waker(&self) -> Option<Waker> {
        self.erased().handle_waker()
    }

    /// See [`Shared::set_runner`].
    #[inline]
    pub(crate) fn set_runner(&self, key: usize) {
        self.erased().set_runner(key);
    }
}

impl Drop for BoxRun {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: as in `poll_run`: the `BoxRun` is going away, and with it the last access.
        unsafe { self.erased().release() }
    }
}

/// What a [`BoxRun`] drives, type-erased.
///
/// The `unsafe` methods reach the run's state: only the run's `BoxRun` calls them, and
/// never two at once (see [`RunCell::state`]).
trait Erased: Send + Sync {
    unsafe fn poll_run(self: Pin<&Self>, cx: &mut Context<'_>) -> Poll<Outcome>;
    unsafe fn cancel(self: Pin<&Self>, reason: CancelReason);
    unsafe fn publish_locked(self: Pin<&Self>) -> (Woken, Outcome);
    unsafe fn held_error(&self) -> Option<&TaskError>;
    /// The `BoxRun` is dropped: what [`BoxRun`]'s "Dropping" says.
    unsafe fn release(self: Pin<&Self>);
    fn aborted(&self) -> Option<CancelReason>;
    fn handle_waker(&self) -> Option<Waker>;
    /// See [`Shared::set_runner`].
    fn set_runner(&self, key: usize);
}

/// Drops the future, catching a panic in its `Drop`; returns the panic payload if any.
fn drop_future<F>(stage: Pin<&mut Stage<F>>) -> Option<Payload> {
    catch_unwind(AssertUnwindSafe(|| {
        stage.project_replace(Stage::Done);
    }))
    .err()
}

/// [`drop_future`] for a run that ends for another reason (an abort, a cancel, its
/// drop): a panic in the future's `Drop` is dropped ([`drop_payload`], which a payload
/// that panics again cannot unwind past).
fn drop_future_quietly<F>(stage: Pin<&mut Stage<F>>) {
    if let Some(payload) = drop_future(stage) {
        drop_payload(payload);
    }
}

/// Ends the run with `result`, held back until `publish_locked` decides the task's outcome
/// with it (unless an abort decided first).
fn end<F: Future>(
    state: Pin<&mut RunState<F>>,
    outcome: Outcome,
    result: Result<F::Output, TaskError>,
) -> Outcome {
    let this = state.project();
    *this.held = Some(result);
    *this.outcome = Some(outcome);
    outcome
}

impl<H, F> Erased for RunCell<H, F>
where
    H: RunOwner<Output = F::Output>,
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    unsafe fn poll_run(self: Pin<&Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let shared = self.get_ref().owner.shared();
        // SAFETY: forwarded from the caller.
        let mut state = unsafe { self.state() };
        // Fields are read through the projection only: reading one through the pinned
        // reference (`state.outcome`, by `Deref`) makes a shared reference to the whole
        // state, the future's bytes included, which invalidates (under Stacked Borrows)
        // the pointers a self-referential future keeps into itself across an await.
        let mut this = state.as_mut().project();
        if let Some(outcome) = *this.outcome {
            return Poll::Ready(outcome);
        }
        // Woken by the pool when it is aborted (see `Unqueue::aborted`).
        if shared.is_aborted() {
            drop_future_quietly(this.stage);
            let aborted = Outcome::Cancelled(shared.abort_reason());
            *this.outcome = Some(aborted);
            return Poll::Ready(aborted);
        }
        let StageProj::Running { fut } = this.stage.as_mut().project() else {
            unreachable!("a run is polled after it ended");
        };
        let (outcome, result) = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(value)) => match drop_future(this.stage) {
                None => (Outcome::Completed, Ok(value)),
                Some(payload) => {
                    unwind::drop_quietly(value);
                    (Outcome::Panicked, Err(TaskError::panicked(payload)))
                }
            },
            Err(payload) => {
                // The future is dropped here too; a second panic in its Drop is dropped.
                drop_future_quietly(this.stage);
                (Outcome::Panicked, Err(TaskError::panicked(payload)))
            }
        };
        Poll::Ready(end(state, outcome, result))
    }

    unsafe fn cancel(self: Pin<&Self>, reason: CancelReason) {
        // SAFETY: forwarded from the caller.
        let mut state = unsafe { self.state() };
        // Read through the projection (see `poll_run`).
        let this = state.as_mut().project();
        if this.outcome.is_some() {
            return;
        }
        drop_future_quietly(this.stage);
        end(
            state,
            Outcome::Cancelled(reason),
            Err(TaskError::cancelled(reason)),
        );
    }

    unsafe fn publish_locked(self: Pin<&Self>) -> (Woken, Outcome) {
        let shared = self.get_ref().owner.shared();
        // SAFETY: forwarded from the caller.
        let this = unsafe { self.state() }.project();
        let outcome = this
            .outcome
            .unwrap_or(Outcome::Cancelled(CancelReason::RuntimeShutdown));
        if *this.published {
            return (Woken::default(), outcome);
        }
        *this.published = true;
        match this.held.take() {
            Some(result) => match shared.store_first(result) {
                Ok((woken, discarded)) => {
                    // Dropped with the run, outside the engine's lock.
                    *this.held = discarded;
                    (woken, outcome)
                }
                Err(lost) => {
                    // An abort decided first: the task counts as aborted.
                    *this.held = Some(lost);
                    let aborted = Outcome::Cancelled(shared.abort_reason());
                    *this.outcome = Some(aborted);
                    (Woken::default(), aborted)
                }
            },
            None => (Woken::default(), outcome),
        }
    }

    unsafe fn held_error(&self) -> Option<&TaskError> {
        // SAFETY: the caller's promise: nothing writes the state while this reference lives.
        // Only `held` is borrowed, not the whole state with the future's bytes (see
        // `poll_run`), so it is sound also while the future is alive.
        let held = unsafe { &*std::ptr::addr_of!((*self.state.get()).held) };
        held.as_ref()?.as_ref().err()
    }

    unsafe fn release(self: Pin<&Self>) {
        let shared = self.get_ref().owner.shared();
        // SAFETY: forwarded from the caller.
        let this = unsafe { self.state() }.project();
        drop_future_quietly(this.stage);
        let held = this.held.take();
        if *this.published {
            // A result nobody wants: dropped here, where the engine drops the run.
            drop(held);
            return;
        }
        *this.published = true;
        if let Some(result) = held {
            shared.fill_first(result);
        } else if H::CANCEL_ON_DROP && this.outcome.is_none() {
            shared.cancel(CancelReason::RuntimeShutdown);
        }
    }

    fn aborted(&self) -> Option<CancelReason> {
        self.owner.shared().aborted()
    }

    fn handle_waker(&self) -> Option<Waker> {
        self.owner.shared().handle_waker()
    }

    fn set_runner(&self, key: usize) {
        self.owner.shared().set_runner(key);
    }
}

/// A run that ended before it began (the task already had an outcome).
struct Ended(Outcome);

impl Erased for Ended {
    unsafe fn poll_run(self: Pin<&Self>, _cx: &mut Context<'_>) -> Poll<Outcome> {
        Poll::Ready(self.0)
    }

    unsafe fn cancel(self: Pin<&Self>, _reason: CancelReason) {}

    unsafe fn publish_locked(self: Pin<&Self>) -> (Woken, Outcome) {
        (Woken::default(), self.0)
    }

    unsafe fn held_error(&self) -> Option<&TaskError> {
        None
    }

    unsafe fn release(self: Pin<&Self>) {}

    fn aborted(&self) -> Option<CancelReason> {
        None
    }

    fn handle_waker(&self) -> Option<Waker> {
        None
    }

    fn set_runner(&self, _key: usize) {}
}

/// The allocation of a [`ReadyRun`], not written yet: made only by [`ReadyRun::room`],
/// which makes its `Arc` and never clones it (its field is private to this module, so no
/// other code can make one: [`RunCell::init`]'s promise).
pub(crate) struct ReadyRoom<F: Future>(RoomOf<F>);

enum RoomOf<F: Future> {
    Inline(Room<Shared<F::Output>, F>),
    Apart(Room<Arc<Shared<F::Output>>, F>),
}

/// An allocation for a [`RunCell`], not written yet.
type Room<H, F> = Arc<MaybeUninit<RunCell<H, F>>>;

impl<F> ReadyRoom<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// The ready run of `fut` with its result slot `shared`, written into this room.
    #[inline(always)]
    pub(crate) fn fill(self, fut: F, shared: Shared<F::Output>) -> ReadyRun<F> {
        // SAFETY: a `ReadyRoom` holds the only reference to its allocation (made by
        // `room`, never cloned, and consumed here).
        match self.0 {
            RoomOf::Inline(cell) => ReadyRun::Inline(unsafe { RunCell::init(cell, shared, fut) }),
            RoomOf::Apart(cell) => {
                ReadyRun::Apart(unsafe { RunCell::init(cell, Arc::new(shared), fut) })
            }
        }
    }
}

/// A submitted future made ready to queue, before the engine's lock is taken: its run in
/// one cell with its result slot, or (a future larger than [`INLINE_LIMIT`]) in a cell of
/// its own beside the slot. Not pinned yet: a refused submit takes the future back out.
pub(crate) enum ReadyRun<F: Future> {
    Inline(Arc<RunCell<Shared<F::Output>, F>>),
    Apart(Arc<RunCell<Arc<Shared<F::Output>>, F>>),
}

impl<F> ReadyRun<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// A ready run of `fut` with its result slot `shared`:
    /// [`room`](Self::room)`.`[`fill`](ReadyRoom::fill)`(fut, shared)`.
    #[cfg(all(test, not(nb_aiopool_loom)))]
    pub(crate) fn new(fut: F, shared: Shared<F::Output>) -> Self {
        Self::room().fill(fut, shared)
    }

    /// The allocation a ready run of `F` is written into, made before the future moves:
    /// made by `Arc::new(RunCell::new(..))` after the cell was built, the cell was built on
    /// the stack, the future copied there from the caller, and then copied, 344 bytes for
    /// the benchmark's future, into the allocation. A caller that holds the future as an
    /// argument makes the room first and then [`fill`](ReadyRoom::fill)s it: the future
    /// is copied once, into the cell (passed on to a function that makes the room, the
    /// compiler copied it aside first, for the drop if the allocation unwound).
    #[inline(always)]
    pub(crate) fn room() -> ReadyRoom<F> {
        ReadyRoom(if fits_inline::<F>() {
            RoomOf::Inline(Arc::new(MaybeUninit::uninit()))
        } else {
            RoomOf::Apart(Arc::new(MaybeUninit::uninit()))
        })
    }

    /// The handle's reference to the result slot.
    pub(crate) fn slot(&self) -> SlotRef<F::Output> {
        match self {
            ReadyRun::Inline(cell) => cell.clone(),
            ReadyRun::Apart(cell) => cell.owner.clone(),
        }
    }

    /// The run the engine queues.
    pub(crate) fn into_run(self) -> BoxRun {
        let cell: Arc<dyn Erased> = match self {
            ReadyRun::Inline(cell) => cell,
            ReadyRun::Apart(cell) => cell,
        };
        // SAFETY: from here on the cell is never moved out of its `Arc`: its other copy,
        // the handle's, reaches only the result slot, by shared reference, and only a
        // `ReadyRun` ever takes a cell out of its `Arc` (`into_future`).
        BoxRun::from_pinned(unsafe { Pin::new_unchecked(cell) })
    }

    /// The future back, for a refused submit.
    ///
    /// # Panics
    ///
    /// Panics if a copy of the slot from [`slot`](Self::slot) is still alive.
    pub(crate) fn into_future(self) -> F {
        fn take<H, F: Future>(cell: Arc<RunCell<H, F>>) -> F {
            let cell = Arc::into_inner(cell).expect("a refused task's slot is dropped first");
            match cell.state.into_inner().stage {
                Stage::Running { fut } => fut,
                Stage::Done => unreachable!("a ready run has its future"),
            }
        }
        match self {
            ReadyRun::Inline(cell) => take(cell),
            ReadyRun::Apart(cell) => take(cell),
        }
    }
}

#[cfg(all(test, not(nb_aiopool_loom)))]
mod tests {
    //! The cell's own contract, without a runtime (so that Miri can run it: module docs).

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use super::{BoxRun, ReadyRun, Shared, INLINE_LIMIT};
    use crate::error::CancelReason;
    use crate::task::{Outcome, TaskHandle};

    use crate::testing::Dropped;

    fn poll<T>(handle: &mut TaskHandle<T>) -> Poll<Result<T, crate::TaskError>> {
        let mut cx = Context::from_waker(Waker::noop());
        std::pin::Pin::new(handle).poll(&mut cx)
    }

    use std::future::Future;

    /// A future of `N` bytes that holds `drops`, returns 7 on its second poll.
    fn counted<const N: usize>(drops: &Arc<AtomicUsize>) -> impl Future<Output = u32> + Send {
        let held = Dropped(drops.clone());
        let pad = [0u8; N];
        let mut polled = false;
        std::future::poll_fn(move |_| {
            let _ = (&held, &pad);
            if polled {
                Poll::Ready(7)
            } else {
                polled = true;
                Poll::Pending
            }
        })
    }

    fn ready<F: Future + Send + 'static>(fut: F) -> (BoxRun, TaskHandle<F::Output>)
    where
        F::Output: Send + 'static,
    {
        let ready = ReadyRun::new(fut, Shared::new(1, 0));
        let handle = TaskHandle::new(ready.slot());
        (ready.into_run(), handle)
    }

    fn run_to_end(run: &mut BoxRun) -> Outcome {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(outcome) = run.poll_run(&mut cx) {
                return outcome;
            }
        }
    }

    /// A future of at least `N` bytes that keeps a reference into itself across an await
    /// (as most `async fn`s do); returns 1 + N.
    async fn self_referential<const N: usize>() -> usize {
        let local = [1usize; 1];
        let pad = [0u8; N];
        let held = &local;
        // Outside a runtime it wakes the task itself. (A hand-written future that is
        // pending once did not show the fault below under Miri: tokio's does.)
        tokio::task::yield_now().await;
        held[0] + std::hint::black_box(&pad).len()
    }

    /// Such a future is polled again through its cell (both kinds of cell): under Miri's
    /// Stacked Borrows the cell must not read its state through a reference that covers
    /// the future (it did, before the run's fields were read through their projection
    /// only).
    #[test]
    fn a_self_referential_future_is_polled_again_in_its_cell() {
        let (mut run, mut handle) = ready(self_referential::<8>());
        assert_eq!(run_to_end(&mut run), Outcome::Completed);
        run.publish_locked().0.fire();
        assert!(matches!(poll(&mut handle), Poll::Ready(Ok(9))));
        let (mut run, mut handle) = ready(self_referential::<{ INLINE_LIMIT + 1 }>());
        assert_eq!(run_to_end(&mut run), Outcome::Completed);
        run.publish_locked().0.fire();
        assert!(matches!(poll(&mut handle), Poll::Ready(Ok(n)) if n == INLINE_LIMIT + 2));
    }

    #[test]
    fn small_futures_share_their_cell_and_large_ones_do_not() {
        let drops = Arc::new(AtomicUsize::new(0));
        let small = ReadyRun::new(counted::<8>(&drops), Shared::new(1, 0));
        assert!(matches!(small, ReadyRun::Inline(_)));
        let large = ReadyRun::new(counted::<{ INLINE_LIMIT + 1 }>(&drops), Shared::new(1, 0));
        assert!(matches!(large, ReadyRun::Apart(_)));
        drop((small, large));
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    /// The run ends, the future is dropped at once, the handle gets the result after the
    /// publish and keeps the cell alive after the run is gone.
    fn a_run_hands_its_result_to_a_handle_that_outlives_it<const N: usize>() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut run, mut handle) = ready(counted::<N>(&drops));
        assert_eq!(run_to_end(&mut run), Outcome::Completed);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "the future outlived its end"
        );
        assert!(
            poll(&mut handle).is_pending(),
            "resolved before the publish"
        );
        let (woken, outcome) = run.publish_locked();
        woken.fire();
        assert_eq!(outcome, Outcome::Completed);
        drop(run);
        assert_eq!(poll(&mut handle).map(Result::unwrap), Poll::Ready(7));
    }

    #[test]
    fn a_small_run_hands_its_result_to_a_handle_that_outlives_it() {
        a_run_hands_its_result_to_a_handle_that_outlives_it::<8>();
    }

    #[test]
    fn a_large_run_hands_its_result_to_a_handle_that_outlives_it() {
        a_run_hands_its_result_to_a_handle_that_outlives_it::<{ INLINE_LIMIT * 2 }>();
    }

    /// Dropped unrun, or half-way: the future is dropped with the run, not with the
    /// handle, and the handle says why.
    #[test]
    fn a_run_dropped_before_it_ended_drops_its_future_and_tells_the_handle() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut run, mut handle) = ready(counted::<8>(&drops));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(run.poll_run(&mut cx).is_pending());
        drop(run);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let Poll::Ready(Err(err)) = poll(&mut handle) else {
            panic!("the handle did not resolve to an error");
        };
        assert_eq!(err.cancel_reason(), Some(CancelReason::RuntimeShutdown));
    }

    /// The handle dropped first (detached): the result nobody wants is dropped with the
    /// run, which is the last copy of the cell.
    #[test]
    fn a_detached_result_is_dropped_with_the_run() {
        let drops = Arc::new(AtomicUsize::new(0));
        let result = Dropped(drops.clone());
        let (mut run, handle) = ready(async move { result });
        drop(handle);
        assert_eq!(run_to_end(&mut run), Outcome::Completed);
        run.publish_locked().0.fire();
        assert_eq!(
            drops.load(Ordering::SeqCst),
            0,
            "dropped under the engine's lock"
        );
        drop(run);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    /// A panic in the future's poll and one in its `Drop` stay in the run.
    #[test]
    fn a_panicking_future_ends_its_run_as_panicked() {
        struct PanicOnDrop;
        impl Drop for PanicOnDrop {
            fn drop(&mut self) {
                panic!("drop");
            }
        }
        let guard = PanicOnDrop;
        let (mut run, mut handle) = ready(async move {
            let _guard = guard;
        });
        assert_eq!(run_to_end(&mut run), Outcome::Panicked);
        assert!(run.held_error().is_some_and(|e| e.is_panic()));
        run.publish_locked().0.fire();
        drop(run);
        assert!(matches!(poll(&mut handle), Poll::Ready(Err(e)) if e.is_panic()));
    }

    /// A refused submit gets its future back whole, small or large.
    #[test]
    fn a_ready_run_gives_its_future_back() {
        let drops = Arc::new(AtomicUsize::new(0));
        let small = ReadyRun::new(counted::<8>(&drops), Shared::new(1, 0));
        let large = ReadyRun::new(counted::<{ INLINE_LIMIT + 8 }>(&drops), Shared::new(1, 0));
        drop((small.slot(), large.slot()));
        let (small, large) = (small.into_future(), large.into_future());
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop((small, large));
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    /// What a held handle pins (the crate docs quote it): at most the cell of a future of
    /// `INLINE_LIMIT` bytes with a `u64` result, whatever the future's alignment.
    #[test]
    fn a_handle_pins_at_most_the_slot_and_the_inline_limit() {
        #[repr(C)]
        struct Bytes([u8; INLINE_LIMIT]);
        #[repr(C, align(8))]
        struct Words([u8; INLINE_LIMIT]);
        #[repr(C, align(16))]
        struct Wide([u8; INLINE_LIMIT]);
        macro_rules! future {
            ($t:ident) => {
                impl Future for $t {
                    type Output = u64;
                    fn poll(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u64> {
                        Poll::Ready(u64::from(self.0[0]))
                    }
                }
            };
        }
        future!(Bytes);
        future!(Words);
        future!(Wide);
        // The `Arc`'s two counts come on top of the cell.
        fn pinned<F: Future + Send + 'static>(fut: F) -> Option<usize>
        where
            F::Output: Send + 'static,
        {
            match ReadyRun::new(fut, Shared::new(1, 0)) {
                ReadyRun::Inline(cell) => Some(std::mem::size_of_val(&*cell) + 16),
                ReadyRun::Apart(_) => None,
            }
        }
        for size in [
            pinned(Bytes([0; INLINE_LIMIT])),
            pinned(Words([0; INLINE_LIMIT])),
        ] {
            let size = size.expect("a future within the limits got a cell of its own");
            assert!(size <= 416, "a cell is {size} bytes");
        }
        assert_eq!(
            pinned(Wide([0; INLINE_LIMIT])),
            None,
            "a wide future was inlined"
        );
    }

    /// A future whose `Drop` panics with a payload whose own `Drop` panics: however its run
    /// ends early (dropped, cancelled, aborted), its handle resolves with that end's reason
    /// (RELIABILITY.md, finding 328: the payload's panic unwound out of the run first).
    #[test]
    fn a_run_ended_early_resolves_its_handle_whatever_the_futures_drop_panics_with() {
        struct Bomb(Arc<AtomicUsize>);
        impl Drop for Bomb {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
                panic!("the payload's own drop");
            }
        }
        struct PanicsOnDrop(Arc<AtomicUsize>);
        impl Drop for PanicsOnDrop {
            fn drop(&mut self) {
                std::panic::panic_any(Bomb(self.0.clone()));
            }
        }
        let bombs = Arc::new(AtomicUsize::new(0));
        let bomb_future = || {
            let guard = PanicsOnDrop(bombs.clone());
            async move {
                let _guard = guard;
                std::future::pending::<u32>().await
            }
        };
        let mut cx = Context::from_waker(Waker::noop());
        let reason = |handle: &mut TaskHandle<u32>| match poll(handle) {
            Poll::Ready(Err(err)) => err.cancel_reason(),
            other => panic!("the handle did not resolve to a cancel: {other:?}"),
        };

        // Dropped (its runtime ended).
        let (mut run, mut handle) = ready(bomb_future());
        assert!(run.poll_run(&mut cx).is_pending());
        drop(run);
        assert_eq!(reason(&mut handle), Some(CancelReason::RuntimeShutdown));

        // Cancelled (a queued task at a shutdown).
        let (mut run, mut handle) = ready(bomb_future());
        run.cancel(CancelReason::Abandoned);
        assert_eq!(
            run.poll_run(&mut cx),
            Poll::Ready(Outcome::Cancelled(CancelReason::Abandoned))
        );
        run.publish_locked().0.fire();
        assert_eq!(reason(&mut handle), Some(CancelReason::Abandoned));

        // Aborted while running.
        let (mut run, mut handle) = ready(bomb_future());
        assert!(run.poll_run(&mut cx).is_pending());
        handle.abort();
        assert_eq!(
            run.poll_run(&mut cx),
            Poll::Ready(Outcome::Cancelled(CancelReason::Aborted))
        );
        assert_eq!(reason(&mut handle), Some(CancelReason::Aborted));
        drop(run);

        assert_eq!(bombs.load(Ordering::SeqCst), 3);
    }
}
