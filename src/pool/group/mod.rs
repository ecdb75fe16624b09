//! Task groups: [`TaskGroup`] (futures, for [`CommonAioPool`](crate::CommonAioPool) and
//! [`NoQueueAioPool`](crate::NoQueueAioPool); `task_group.rs`) and [`SmartTaskGroup`]
//! (recipes, for [`SmartAioPool`](crate::SmartAioPool); `smart_task_group.rs`), both over
//! the private [`Group`] (here), which `batch_run` (below) also
//! uses so that dropping it aborts its jobs.
//!
//! A group owns the handles of its tasks; dropping the group aborts them (the model is
//! tokio's `JoinSet`). `join_next` takes the oldest task if it ended already, and
//! otherwise polls them together in a `FuturesUnordered`; `join_all` awaits them one after
//! the other ([`InOrder`]) unless it runs inside a job of the group's own pool. With
//! cancel-on-error, each task is wrapped in a watcher that, when its task fails, aborts
//! the other tasks of the group right away, from inside the pool: nobody has to be
//! polling the group for it.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::Either;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use super::core::{meta_of, Core, Submit};
use super::recipe::Recipe;
use crate::engine::{AdmitError, Engine, Job, Meta, PushError};
use crate::error::{SubmitError, SubmitErrorKind, TaskError};
use crate::options::SubmitOptions;
use crate::task::{AbortHandle, TaskHandle, TaskId};

mod smart_task_group;
mod task_group;

pub use smart_task_group::SmartTaskGroup;
pub use task_group::TaskGroup;

// ----- shared with stream/ ---------------------------------------------------------------

/// A task handle with its position among the tasks of a group or stream, and its id (a
/// group's, for `join_next_with_id`; a stream keeps `()`: reading it from the handle
/// costs a call through the handle's slot).
pub(super) struct Tagged<T, I = ()> {
    pub(super) seq: u64,
    /// The task's entry in its abort registry (cancel-on-error only).
    pub(super) key: Option<Registered>,
    pub(super) id: I,
    pub(super) handle: TaskHandle<T>,
}

/// A task's result, with its position, its registry entry and its id.
pub(super) type Joined<T, I = ()> = (u64, Option<Registered>, I, Result<T, TaskError>);

impl<T, I: Copy + Unpin> Future for Tagged<T, I> {
    type Output = Joined<T, I>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        Pin::new(&mut this.handle)
            .poll(cx)
            .map(|r| (this.seq, this.key.take(), this.id, r))
    }
}

/// Aborts the tasks of a group or stream (their handles stay in place), newest first:
/// those awaited in order (`fresh`, oldest first), from the last, then those polled
/// together (`set`, all older; a `FuturesUnordered` lists the last pushed first); and of
/// these, first those no slot has taken, then the others. Queued ones then leave the
/// queue before a running one is woken to end, whose slot would otherwise take the next
/// queued task and start it before its abort came (on a multi-thread runtime; a review of
/// dc685cf saw up to 66 of 1,000 start so). Newest first alone is not enough with
/// priorities: a newer task of a higher priority may run while older ones are queued (a
/// review of the flow-control docs saw 153 of 300 rounds start one so, in a group).
pub(super) fn abort_newest_first<'a, T: 'a, I: Unpin + 'a>(
    fresh: impl DoubleEndedIterator<Item = &'a Tagged<T, I>>,
    set: &'a FuturesUnordered<Tagged<T, I>>,
) {
    // Each read once, before any abort: an abort frees room, and a slot may then take a
    // task (which this order is there to keep from happening to the group's own).
    // Not the task that tripped its group: its future has returned its failure, which
    // its run is about to keep; an abort now would only take that result's place (an
    // `abort_all` called on seeing the trip, before that task's handle resolved, turned
    // the group's one error into `Aborted`: finding 403).
    let (queued, taken): (Vec<_>, Vec<_>) = fresh
        .rev()
        .chain(set.iter())
        .filter(|t| !t.key.as_ref().is_some_and(Registered::tripped_it))
        .partition(|t| !t.handle.was_taken());
    for t in queued.into_iter().chain(taken) {
        t.handle.abort();
    }
}

/// The room for entries a group's list of tasks keeps once its tasks have left: more is
/// given back (see [`InOrder::leave`]; the abort registry, a map, holds only its entries).
const KEPT_ROOM: usize = 128;

/// Tasks awaited one after the other, in the order they were pushed: what a group's
/// `join_all` (and so `batch_run`) does instead of polling a set of futures, outside a job
/// of the group's own pool. A handle reached after its task ended resolves at its first
/// poll, with no waker registered and no node of a `FuturesUnordered` allocated for it.
///
/// # Dropping
///
/// Drops the handles of the tasks not awaited yet, which detaches them: its group's drop
/// aborts them first ([`abort_newest_first`]).
struct InOrder<T> {
    /// The tasks in order; `None` once awaited (a ring buffer's pops cost more). Taken
    /// from by `join_next`, in a group that may live long, it is emptied when the last
    /// one leaves and its awaited front is cut off as it grows ([`leave`](Self::leave)).
    tasks: Vec<Option<Tagged<T, TaskId>>>,
    /// The first not awaited yet.
    next: usize,
}

impl<T> InOrder<T> {
    fn new() -> Self {
        InOrder {
            tasks: Vec::new(),
            next: 0,
        }
    }

    fn push(&mut self, task: Tagged<T, TaskId>) {
        self.tasks.push(Some(task));
    }

    fn len(&self) -> usize {
        self.tasks.len() - self.next
    }

    /// The first task's outcome, once it has one; the task then leaves (and its handle
    /// lets go of the task's memory). `None` when there is none left. Cancel safe: the
    /// task stays first until it has an outcome.
    async fn next(&mut self) -> Option<Joined<T, TaskId>> {
        let first = self.tasks.get_mut(self.next)?;
        let out = first.as_mut().expect("a task not awaited yet").await;
        *first = None;
        // `join_all`, which uses the list up: nothing to cut off on the way.
        self.next += 1;
        Some(out)
    }

    /// The first task left by `join_next` (its entry is `None` now). Once none is left
    /// the list is cleared; once the awaited front is half of the list, and long, it is
    /// cut off (each entry is moved at most once per halving: constant time per task,
    /// amortised). The room of a burst is given back: a list left empty with room for
    /// more than [`KEPT_ROOM`] entries is freed, and one cut to a quarter of its room or
    /// less is shrunk to twice its length (a review of b7c4278 found 100,000 joined
    /// tasks' room, 7 MiB, kept until the group was dropped).
    fn leave(&mut self) {
        self.next += 1;
        if self.next == self.tasks.len() {
            self.next = 0;
            if self.tasks.capacity() > KEPT_ROOM {
                self.tasks = Vec::new();
            } else {
                self.tasks.clear();
            }
        } else if self.next >= 64 && 2 * self.next >= self.tasks.len() {
            self.tasks.drain(..self.next);
            self.next = 0;
            let len = self.tasks.len();
            if self.tasks.capacity() > KEPT_ROOM && self.tasks.capacity() >= 4 * len {
                self.tasks.shrink_to(2 * len);
            }
        }
    }

    /// The first task's outcome if it has one already (its handle resolves without
    /// registering a waker), else `None` and the task stays first.
    fn next_finished(&mut self, cx: &mut Context<'_>) -> Option<Joined<T, TaskId>> {
        let first = self.tasks.get_mut(self.next)?;
        let task = first.as_mut().expect("a task not awaited yet");
        if !task.handle.is_finished() {
            return None;
        }
        let Poll::Ready(out) = Pin::new(task).poll(cx) else {
            // Not after `is_finished`; should it be, it is polled with the others.
            return None;
        };
        *first = None;
        self.leave();
        Some(out)
    }

    /// Every task not awaited yet, handed over (none aborted).
    fn take(&mut self) -> impl Iterator<Item = Tagged<T, TaskId>> {
        let next = std::mem::replace(&mut self.next, 0);
        std::mem::take(&mut self.tasks)
            .into_iter()
            .skip(next)
            .flatten()
    }

    /// The tasks not awaited yet, oldest first.
    fn pending(&self) -> impl DoubleEndedIterator<Item = &Tagged<T, TaskId>> {
        self.tasks[self.next..].iter().flatten()
    }
}

// ----- cancel on error ---------------------------------------------------------------------

/// Says whether a task's value is an error (`Result::is_err`, or never).
type IsError<T> = fn(&T) -> bool;

/// What the tasks of a cancel-on-error group share: whether one failed, and how to abort
/// the others.
struct Trip {
    tripped: AtomicBool,
    /// The group's unfinished tasks, by the generation of their entry (oldest first);
    /// the abort handle is `None` from a submit's call until its task is queued (while it
    /// waits for room, and while it is pushed). A map, not a slab: its memory follows the
    /// tasks it holds, so a group that always keeps a task or two does not keep the room
    /// of its largest burst (a slab keeps its longest length until it is empty: a review
    /// of a121692 found 100,000 joined tasks' room, 5 MB, kept so).
    aborts: Mutex<BTreeMap<u64, Option<AbortHandle>>>,
    /// The next entry's generation.
    generations: AtomicU64,
    /// The generation of the entry whose task tripped the group ([`NO_ONE`] until then);
    /// written and read under the registry's lock.
    tripped_by: AtomicU64,
    /// Told when the group trips: a submit of the group waiting for room is refused then,
    /// not once room comes (which a pool full of other work may never give it).
    failed: tokio::sync::Notify,
}

/// [`Trip::tripped_by`] before the group trips (no entry has this generation).
const NO_ONE: u64 = u64::MAX;

/// A task's place in its abort registry: its entry's generation (never given twice).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    generation: u64,
}

impl Trip {
    fn new() -> Self {
        Trip {
            tripped: AtomicBool::new(false),
            aborts: Mutex::new(BTreeMap::new()),
            generations: AtomicU64::new(0),
            tripped_by: AtomicU64::new(NO_ONE),
            failed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Option<AbortHandle>>> {
        // Only abort handles live under this lock, and no task is aborted under it (an
        // abort wakes a handle: any executor's code) but a task just pushed, whose handle
        // nobody polled yet (`keep`).
        self.aborts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_tripped(&self) -> bool {
        // Acquire/Release are enough; the registry itself is read under its mutex.
        self.tripped.load(Ordering::Acquire)
    }

    /// A new entry (its abort handle to come), for a task about to be submitted.
    fn insert(&self) -> Key {
        // Relaxed: only told apart, under the lock.
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(generation, None);
        Key { generation }
    }

    /// The task `key` failed: abort every other task of the group, now and later. Unless
    /// its result will not say so: its outcome was decided already (it was aborted, or
    /// cancelled by its pool, while its poll ran on), or it was even joined already (its
    /// entry gone). A failure that comes after the task's handle
    /// resolved to a cancellation trips nothing, so that tasks submitted after an
    /// `abort_all` are not aborted by a task whose result was `Aborted`.
    fn trip(&self, key: Key) {
        let reg = self.lock();
        match reg.get(&key.generation) {
            Some(abort) => {
                if abort.as_ref().is_some_and(AbortHandle::is_finished) {
                    return;
                }
            }
            None => return,
        }
        if self.tripped.swap(true, Ordering::AcqRel) {
            // Tripped already, by a task whose aborts (made after the lock, so not
            // necessarily made yet) include this one's, or this one's `keep` makes it:
            // as when they were made under the lock.
            return;
        }
        // Relaxed: read under this lock (`keep`).
        self.tripped_by.store(key.generation, Ordering::Relaxed);
        // Newest first, as a group's drop aborts (see `abort_newest_first`): a running
        // task's abort wakes its slot, which on another worker took the next queued task
        // of the group, not aborted yet, and started it (a review of b7c4278 saw up to 34
        // of 200 start so, aborted oldest first).
        // And of these, those no slot has taken first (see `abort_newest_first`: with
        // priorities, a newer task may run while older ones are queued).
        // Each task's hint is read once: it can change meanwhile (a slot takes a task
        // under the engine's lock, not this one), and a sort that read it at each
        // comparison could see an inconsistent order, which std's sort may answer with a
        // panic (here, inside a task's panic: an abort of the process).
        let (queued, taken): (Vec<AbortHandle>, Vec<AbortHandle>) = reg
            .iter()
            .rev()
            .filter(|&(&generation, _)| generation != key.generation)
            .filter_map(|(_, h)| h.clone())
            .partition(|h| !h.was_taken());
        // Aborted after the lock: an abort wakes the task's handle, polled by the group's
        // poller, whose waker is any executor's code (which may join the group at once,
        // and so take this lock). A task registered meanwhile sees `tripped` (`keep`).
        drop(reg);
        for h in queued.into_iter().chain(taken) {
            h.abort();
        }
        // A submit of the group waiting for room is refused now (`Group::admit`).
        self.failed.notify_waiters();
    }
}

/// A task's entry in the abort registry it was registered in. Each `cancel_on_error` or
/// `cancel_on_panic` call gives the group a new registry, so the entry names its own.
pub(super) struct Registered {
    trip: Arc<Trip>,
    key: Key,
}

impl Registered {
    /// Whether this task tripped its group: its future returned a failure, which its run
    /// keeps as its result.
    fn tripped_it(&self) -> bool {
        if !self.trip.is_tripped() {
            return false;
        }
        // Relaxed: `tripped_by` is written under this lock, with `tripped` set.
        let _reg = self.trip.lock();
        self.trip.tripped_by.load(Ordering::Relaxed) == self.key.generation
    }
}

/// Takes a task out of its abort registry (it was joined, or refused), if it has one.
fn unwatch(key: Option<Registered>) {
    if let Some(Registered { trip, key }) = key {
        trip.lock().remove(&key.generation);
    }
}

/// A task's registry entry while its submit waits: removed if the submit is refused or
/// dropped before the task is queued.
///
/// # Dropping
///
/// Takes the entry out of its registry, unless [`keep`](Self::keep) took it first.
struct PendingEntry(Option<Registered>);

impl PendingEntry {
    /// The entry, for the task just queued.
    fn keep(mut self) -> Option<Registered> {
        self.0.take()
    }
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        unwatch(self.0.take());
    }
}

/// Watches one task of a cancel-on-error group.
struct Watch<T> {
    trip: Arc<Trip>,
    key: Key,
    is_error: IsError<T>,
}

impl<T> Watch<T> {
    fn registered(&self) -> Registered {
        Registered {
            trip: Arc::clone(&self.trip),
            key: self.key,
        }
    }
}

impl<T> Clone for Watch<T> {
    fn clone(&self) -> Self {
        Watch {
            trip: Arc::clone(&self.trip),
            key: self.key,
            is_error: self.is_error,
        }
    }
}

/// Trips the group if dropped while unwinding out of the task's code (a panic).
struct PanicGuard<'a, T>(&'a Watch<T>);

impl<T> Drop for PanicGuard<'_, T> {
    fn drop(&mut self) {
        self.0.trip.trip(self.0.key);
    }
}

pin_project_lite::pin_project! {
    /// A task of a cancel-on-error group: trips the group when the task panics or returns
    /// a value its group calls an error.
    struct Watched<F: Future> {
        // `None` once the future has returned (it is dropped then).
        #[pin]
        fut: Option<F>,
        watch: Watch<F::Output>,
    }
}

impl<F: Future> Watched<F> {
    fn new(fut: F, watch: Watch<F::Output>) -> Self {
        Watched {
            fut: Some(fut),
            watch,
        }
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let guard = PanicGuard(this.watch);
        let fut = this.fut.as_mut().as_pin_mut();
        let out = fut.expect("a task is polled after it returned").poll(cx);
        if out.is_ready() {
            // Dropped here, under the guard: the run reports a panic in the future's
            // `Drop` after it returned as the task's panic, so it trips the group too.
            this.fut.set(None);
        }
        std::mem::forget(guard);
        if let Poll::Ready(v) = &out {
            if (this.watch.is_error)(v) {
                this.watch.trip.trip(this.watch.key);
            }
        }
        out
    }
}

/// A refused watched future's error, with the future unwrapped (it never ran: its
/// watcher, dropped, trips nothing).
fn unwatched<F: Future>(e: SubmitError<Watched<F>>) -> SubmitError<F> {
    let kind = e.kind();
    let fut = e.into_inner().fut;
    SubmitError::new(kind, fut.expect("a refused task was never polled"))
}

/// A recipe of a cancel-on-error [`SmartTaskGroup`]: each run is watched.
struct WatchedRecipe<R, T> {
    recipe: R,
    watch: Watch<T>,
}

/// Each run trips the group if the recipe panics when called, and is watched.
impl<R, Fut> Recipe for WatchedRecipe<R, Fut::Output>
where
    R: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    type Fut = Watched<Fut>;
    type Output = Fut::Output;

    fn call(&self) -> Watched<Fut> {
        let guard = PanicGuard(&self.watch);
        let fut = (self.recipe)();
        std::mem::forget(guard);
        Watched::new(fut, self.watch.clone())
    }
}

// ----- how a watched submit waits -----------------------------------------------------------

/// How a submit of a watching group waits for room once the pool is full, and with what
/// settings its task is queued: as `submit` ([`Plain`]: priority 0, no deadline, no
/// options) or as `submit_with` ([`WithOptions`]). A type rather than a value, so that a
/// plain submit's future holds no timer and no settings, and takes no branch for options
/// it has none of (as the core keeps `submit_ready` and `submit_ready_within` apart).
trait Waiting: Send + Sync + 'static {
    /// Refuses the task before it waits if it can never run (a weight beyond the pool's
    /// `weight_capacity`: `TooHeavy`, reported), as the pool's `submit_with` does.
    fn check<J: Job>(&self, _engine: &Engine<J>) -> Result<(), SubmitErrorKind> {
        Ok(())
    }

    /// The wait for room: the engine's [`admit_waiting`](Engine::admit_waiting) in line
    /// with the task's priority, or [`admit_waiting_within`](Engine::admit_waiting_within)
    /// its deadline. Cancel safe.
    fn wait<'a, J: Job>(
        &'a self,
        engine: &'a Arc<Engine<J>>,
    ) -> impl Future<Output = Result<(), SubmitErrorKind>> + Send + 'a;

    /// The task's flow-control settings, for its push.
    fn into_meta(self) -> Meta;
}

/// A watched `submit`: priority 0, no deadline, the default settings.
struct Plain;

impl Waiting for Plain {
    #[inline]
    fn wait<'a, J: Job>(
        &'a self,
        engine: &'a Arc<Engine<J>>,
    ) -> impl Future<Output = Result<(), SubmitErrorKind>> + Send + 'a {
        engine.admit_waiting(0)
    }

    #[inline]
    fn into_meta(self) -> Meta {
        Meta::default()
    }
}

/// A watched `submit_with`: its options' settings, and their deadline for room.
struct WithOptions {
    meta: Meta,
    limit: Option<Duration>,
}

impl Waiting for WithOptions {
    fn check<J: Job>(&self, engine: &Engine<J>) -> Result<(), SubmitErrorKind> {
        engine.check_weight(&self.meta)
    }

    fn wait<'a, J: Job>(
        &'a self,
        engine: &'a Arc<Engine<J>>,
    ) -> impl Future<Output = Result<(), SubmitErrorKind>> + Send + 'a {
        engine.admit_waiting_with(
            self.meta.priority(),
            self.limit,
            &crate::engine::TIMED_SUBMIT,
        )
    }

    fn into_meta(self) -> Meta {
        self.meta
    }
}

// ----- the generic group --------------------------------------------------------------------

/// A set of tasks of one pool, aborted when dropped.
///
/// Submitted tasks wait in `fresh`, in submission order. `join_next` takes the first of
/// them if it ended already (and none are polled together); otherwise it moves them all
/// into `tasks` (a `FuturesUnordered`) to be polled together. `join_all` awaits them in
/// order. So a group joined at its end pays for no set of futures, nor, mostly, one
/// joined task by task after its tasks were submitted.
pub(crate) struct Group<J: Job, T> {
    core: Core<J>,
    /// Moved here by `join_next`; all earlier than those in `fresh`.
    tasks: FuturesUnordered<Tagged<T, TaskId>>,
    fresh: InOrder<T>,
    next_seq: u64,
    /// Cancel-on-error: the shared state and what counts as an error.
    cancel: Option<(Arc<Trip>, IsError<T>)>,
}

impl<J: Job, T: Send + 'static> Group<J, T> {
    pub(crate) fn new(core: Core<J>) -> Self {
        Group {
            core,
            tasks: FuturesUnordered::new(),
            fresh: InOrder::new(),
            next_seq: 0,
            cancel: None,
        }
    }

    /// Turns cancel-on-error on (with `is_error` for values) or off, for the tasks
    /// submitted from now on. Turned on while on, it keeps its registry: a failure of any
    /// task submitted while it was on aborts all of them. Turned on after being off, it
    /// starts a new registry; the tasks of the earlier one keep theirs.
    fn set_cancel(&mut self, is_error: Option<IsError<T>>) {
        match (is_error, &mut self.cancel) {
            (Some(f), Some((_, current))) => *current = f,
            (is_error, cancel) => *cancel = is_error.map(|f| (Arc::new(Trip::new()), f)),
        }
    }

    fn is_tripped(&self) -> bool {
        self.cancel.as_ref().is_some_and(|(t, _)| t.is_tripped())
    }

    /// Waits for room in the pool, for a task of a group that watches its tasks, unless a
    /// task of the group fails first (then, or if one failed already, `Closed`); a refusal
    /// is reported to the observability features, as `try_admit`'s is. It waits as
    /// `waiting` says (in line with its priority, and until its deadline: then
    /// `TimedOut`). Cancel safe.
    async fn admit<W: Waiting>(&self, waiting: &W) -> Result<(), SubmitErrorKind> {
        let trip = &self.cancel.as_ref().expect("a watching group").0;
        // Made before the look at `tripped`: a trip after that look wakes it.
        let failed = trip.failed.notified();
        if trip.is_tripped() {
            self.core.engine.refused(AdmitError::Closed);
            return Err(SubmitErrorKind::Closed);
        }
        match self.core.engine.admit_or_wait() {
            Some(done) => done?,
            None => {
                let waiting = waiting.wait(&self.core.engine);
                match futures_util::future::select(std::pin::pin!(waiting), std::pin::pin!(failed))
                    .await
                {
                    Either::Left((admitted, _)) => admitted?,
                    Either::Right(((), _)) => {
                        // The wait is dropped: a place granted to it meanwhile goes to the
                        // next submitter in line.
                        self.core.engine.refused(AdmitError::Closed);
                        return Err(SubmitErrorKind::Closed);
                    }
                }
            }
        }
        if trip.is_tripped() {
            // A task failed while this submit waited for room.
            self.core.engine.unadmit();
            self.core.engine.refused(AdmitError::Closed);
            return Err(SubmitErrorKind::Closed);
        }
        Ok(())
    }

    /// A place for a `try_submit`; a refusal is reported to the observability features as
    /// the pool's own `try_submit` reports it.
    fn try_admit(&self) -> Result<(), AdmitError> {
        if self.is_tripped() {
            self.core.engine.refused(AdmitError::Closed);
            return Err(AdmitError::Closed);
        }
        self.core.engine.try_admit_reported()
    }

    /// Reserves an abort-registry entry for the next task (cancel-on-error only).
    #[inline]
    fn watch(&self) -> Option<Watch<T>> {
        let (trip, is_error) = self.cancel.as_ref()?;
        let key = trip.insert();
        Some(Watch {
            trip: Arc::clone(trip),
            key,
            is_error: *is_error,
        })
    }

    /// A `try_submit_with`'s first check, as the pool's: a weight beyond the pool's
    /// `weight_capacity` is refused (`TooHeavy`, reported).
    fn check_weight(&self, meta: &Meta) -> Result<(), SubmitErrorKind> {
        self.core.engine.check_weight(meta)
    }

    /// Pushes an admitted item (its watcher, if any, already inside) with its settings
    /// (`Meta::default()` for a plain `try_submit`) and keeps its handle.
    fn push<S: Submit<J, Output = T>>(
        &mut self,
        item: S,
        meta: Meta,
        key: Option<Registered>,
    ) -> Result<TaskId, PushError<S>> {
        match self.core.push_admitted_with(item, meta) {
            Ok(handle) => Ok(self.keep(handle, key)),
            Err(e) => {
                unwatch(key);
                Err(e)
            }
        }
    }

    /// Keeps the handle of a task just pushed (with its registry entry, if any).
    fn keep(&mut self, handle: TaskHandle<T>, key: Option<Registered>) -> TaskId {
        if let Some(Registered { trip, key }) = &key {
            let mut reg = trip.lock();
            // Relaxed: written under this lock.
            if trip.is_tripped() && trip.tripped_by.load(Ordering::Relaxed) != key.generation {
                // Another task failed between this one's admission and now. (This one may
                // have failed itself already, running on another thread: then it keeps
                // its own result, as a failing task does.)
                handle.abort();
            }
            if let Some(entry) = reg.get_mut(&key.generation) {
                *entry = Some(handle.abort_handle());
            }
        }
        let id = handle.id();
        self.fresh.push(Tagged {
            seq: self.next_seq,
            key,
            id,
            handle,
        });
        self.next_seq += 1;
        id
    }

    /// Whether the group watches its tasks (cancel-on-error).
    fn watches(&self) -> bool {
        self.cancel.is_some()
    }

    /// Submits an item into a group that does not watch its tasks (`batch_run`'s, or a
    /// group without cancel-on-error): with room, its place is taken and it is queued
    /// under one lock of the pool's ([`Core::submit_for_group`]). Declared `Send` rather
    /// than an `async fn`, for the reason given at `Core::submit`. Cancel safe.
    #[allow(clippy::manual_async_fn)] // declared `Send` on purpose (see above)
    pub(crate) fn submit<S: Submit<J, Output = T>>(
        &mut self,
        item: S,
    ) -> impl Future<Output = Result<TaskId, SubmitError<S>>> + Send + '_
    where
        T: Send + 'static,
    {
        debug_assert!(!self.watches(), "a watching group submits with its watcher");
        // Made ready at the call, as in `Core::submit`: the future holds a pointer.
        let ready = self.core.ready_for_group(item, &Meta::default());
        async move {
            let handle = self.core.submit_for_group::<S>(ready).await?;
            Ok(self.keep(handle, None))
        }
    }

    /// [`submit`](Self::submit) with per-task options: the pool's `submit_with`
    /// ([`Core::submit_for_group_with`]: weight, priority, key, deadline), then the task
    /// kept as the group's. Kept apart from `submit` as the core keeps its `submit_with`
    /// apart, so that a plain submit's future carries no settings and no deadline.
    /// Declared `Send`, as `submit`. Cancel safe.
    #[allow(clippy::manual_async_fn)] // declared `Send` on purpose (see `submit`)
    pub(crate) fn submit_with<S: Submit<J, Output = T>>(
        &mut self,
        item: S,
        opts: SubmitOptions,
    ) -> impl Future<Output = Result<TaskId, SubmitError<S>>> + Send + '_
    where
        T: Send + 'static,
    {
        debug_assert!(!self.watches(), "a watching group submits with its watcher");
        let (meta, limit) = (meta_of(&opts), opts.timeout);
        let ready = self.core.ready_for_group(item, &meta);
        async move {
            let handle = (self.core)
                .submit_for_group_with::<S>(ready, meta, limit)
                .await?;
            Ok(self.keep(handle, None))
        }
    }

    /// Submits an item into a group that watches its tasks (the item holds its watcher,
    /// whose registry entry is `key`), as `submit` does ([`Plain`]).
    fn submit_watched<S: Submit<J, Output = T>>(
        &mut self,
        item: S,
        key: Registered,
    ) -> impl Future<Output = Result<TaskId, SubmitError<S>>> + Send + '_
    where
        T: Send + 'static,
    {
        let ready = self.core.ready_for_group(item, &Meta::default());
        self.submit_watched_as::<S, _>(ready, key, Plain)
    }

    /// [`submit_watched`](Self::submit_watched) with per-task options, as `submit_with`
    /// takes them ([`WithOptions`]).
    fn submit_watched_with<S: Submit<J, Output = T>>(
        &mut self,
        item: S,
        key: Registered,
        opts: SubmitOptions,
    ) -> impl Future<Output = Result<TaskId, SubmitError<S>>> + Send + '_
    where
        T: Send + 'static,
    {
        let (meta, limit) = (meta_of(&opts), opts.timeout);
        let ready = self.core.ready_for_group(item, &meta);
        self.submit_watched_as::<S, _>(ready, key, WithOptions { meta, limit })
    }

    /// The body of a watching group's submits: the item made ready at the call (as
    /// [`submit`](Self::submit) makes its item; with `waiting`'s settings), then queued
    /// once there is room and no task of the group has failed. Declared `Send` rather
    /// than an `async fn`, as `submit`. Cancel safe: dropped while it waits, it submits
    /// nothing, and the entry is removed.
    #[allow(clippy::manual_async_fn)] // declared `Send` on purpose (see above)
    fn submit_watched_as<S: Submit<J, Output = T>, W: Waiting>(
        &mut self,
        ready: S::Ready,
        key: Registered,
        waiting: W,
    ) -> impl Future<Output = Result<TaskId, SubmitError<S>>> + Send + '_
    where
        T: Send + 'static,
    {
        let entry = PendingEntry(Some(key));
        async move {
            let admitted = match waiting.check(&self.core.engine) {
                Ok(()) => self.admit(&waiting).await,
                Err(kind) => Err(kind),
            };
            if let Err(kind) = admitted {
                return Err(SubmitError::new(kind, S::unready(ready)));
            }
            match (self.core).push_admitted_ready::<S>(ready, waiting.into_meta()) {
                Ok(handle) => Ok(self.keep(handle, entry.keep())),
                Err(e) => Err(SubmitError::new(e.kind(), e.into_inner())),
            }
        }
    }

    /// Moves the fresh tasks among those polled together.
    fn take_fresh(&mut self) {
        if self.fresh.len() > 0 {
            for task in self.fresh.take() {
                self.tasks.push(task);
            }
        }
    }

    /// The result of a task that ended: with none polled together, the oldest fresh
    /// task's if it ended already (most often the case when a group is joined after its
    /// tasks were submitted: a pool starts them in order), which costs no node of the set
    /// and no waker; otherwise the fresh tasks join those polled together, and the first of
    /// those to end is taken.
    fn poll_join_next_with_id(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(TaskId, Result<T, TaskError>)>> {
        if self.tasks.is_empty() {
            if let Some((_, key, id, r)) = self.fresh.next_finished(cx) {
                unwatch(key);
                return Poll::Ready(Some((id, r)));
            }
        }
        self.take_fresh();
        match self.tasks.poll_next_unpin(cx) {
            Poll::Ready(Some((_, key, id, r))) => {
                unwatch(key);
                Poll::Ready(Some((id, r)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, TaskError>>> {
        self.poll_join_next_with_id(cx).map(|r| r.map(|(_, r)| r))
    }

    /// Every remaining result, in submission order. Dropping the future drops the group,
    /// which aborts what is left.
    ///
    /// The fresh tasks are awaited one after the other, unless this runs (at its first
    /// poll) inside a job of the group's own pool: then the pool counts the job's waits
    /// on them for its nested-wait check (`Probe`), which must see them all at once, so
    /// every handle is polled together, as `join_next` does. (Awaited in order there, a
    /// nested group's wait on its second task would begin only once the first ended;
    /// with two levels of nesting, the check then refused a job that had started, where
    /// it had refused a wait before: fewer jobs completed. Found by a review of 58301af.
    /// A future first polled outside and then moved into such a job stays in order: a
    /// review of dc685cf found that this needs a hand-made poll, and that the set of
    /// futures hung there before, where the order completes.)
    pub(crate) async fn join_all(mut self) -> Vec<Result<T, TaskError>> {
        if crate::task::context::in_pool(self.core.engine.id()) {
            self.take_fresh();
        }
        // Those polled together first: all earlier than the fresh ones.
        let mut joined = Gathered(Vec::with_capacity(self.tasks.len()));
        while let Some((seq, key, _, r)) = self.tasks.next().await {
            unwatch(key);
            joined.0.push((seq, r));
        }
        joined.0.sort_unstable_by_key(|(seq, _)| *seq);
        let mut out = Gathered(Vec::with_capacity(joined.0.len() + self.fresh.len()));
        out.0.extend(joined.0.drain(..).map(|(_, r)| r));
        while let Some((_, key, _, r)) = self.fresh.next().await {
            unwatch(key);
            out.0.push(r);
        }
        std::mem::take(&mut out.0)
    }

    fn len(&self) -> usize {
        self.tasks.len() + self.fresh.len()
    }

    /// Lets the tasks run on, detached (what `batch_run` promises on a rejection).
    pub(crate) fn detach_all(&mut self) {
        self.drop_handles();
    }
}

/// Results [`Group::join_all`] has gathered: dropped quietly if its future is dropped
/// before it returns them (a timeout around it), as the group drops the results it was
/// not asked for ([`Group::drop_handles`]): a result whose `Drop` panics then lets the
/// others drop too, and the future's drop does not panic.
///
/// # Dropping
///
/// Drops what it holds, each through [`drop_quietly`](crate::engine::drop_quietly).
struct Gathered<R>(Vec<R>);

impl<R> Drop for Gathered<R> {
    fn drop(&mut self) {
        for r in self.0.drain(..) {
            crate::engine::drop_quietly(r);
        }
    }
}

impl<J: Job, T> Group<J, T> {
    /// Newest first ([`abort_newest_first`]): the fresh tasks, then those polled
    /// together.
    fn abort_all(&self) {
        abort_newest_first(self.fresh.pending(), &self.tasks);
    }

    /// Drops the handles of the tasks not joined. The handle of a task that ended drops
    /// its result: one whose `Drop` panics is dropped quietly (the panic hook shows the
    /// panic), as the pool drops a detached task's result, so that the others are dropped
    /// too and the group's drop does not panic (with two such results, the second panic
    /// came during the first one's unwinding, and aborted the process).
    fn drop_handles(&mut self) {
        for task in self.fresh.take() {
            crate::engine::drop_quietly(task);
        }
        for task in std::mem::take(&mut self.tasks) {
            crate::engine::drop_quietly(task);
        }
    }
}

/// Aborts the tasks not joined, newest first ([`Group::abort_all`]), then drops their
/// handles ([`Group::drop_handles`]).
impl<J: Job, T> Drop for Group<J, T> {
    fn drop(&mut self) {
        self.abort_all();
        self.drop_handles();
    }
}

impl<J: Job, T> fmt::Debug for Group<J, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGroup")
            .field("len", &(self.tasks.len() + self.fresh.len()))
            .field("cancel_on_error", &self.cancel.is_some())
            .finish_non_exhaustive()
    }
}

/// Submits every item into a task group, then joins it: results in input order (see
/// [`Group::join_all`]). Dropping the future drops the group, which aborts the jobs not
/// finished yet (so a `timeout` around it leaks nothing); a rejection leaves the jobs
/// before it running, detached, as `batch_submit` does.
#[allow(clippy::type_complexity)]
pub(crate) async fn batch_run<J: Job, I, T>(
    core: &Core<J>,
    items: I,
) -> Result<Vec<Result<T, TaskError>>, SubmitError<I::Item>>
where
    I: IntoIterator,
    I::Item: Submit<J, Output = T>,
    T: Send + 'static,
{
    let mut group = Group::new(core.clone());
    let mut items = items.into_iter();
    // Each item goes from the iterator straight into its submit, which makes it ready at
    // the call: no variable of the item's type lives across the await (one in a `for`
    // binding would, and this future would hold an item's bytes).
    loop {
        let Some(submit) = items.next().map(|item| group.submit(item)) else {
            break;
        };
        if let Err(e) = submit.await {
            group.detach_all();
            return Err(e);
        }
    }
    // The iterator, used up, goes before the wait (as `batch_submit`'s goes when it
    // returns): what it owns (a `Vec`'s buffer of every item, a sender its jobs wait to
    // see dropped) is not kept until the last job ends (a review of a4515b7 found a
    // collector job waiting for ever on a sender the iterator held).
    drop(items);
    Ok(group.join_all().await)
}

#[cfg(all(test, not(nb_aiopool_loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::TaskGroup;
    use crate::testing::Dropped;

    /// The abort registry entries of a cancel-on-error group (its unjoined tasks, and
    /// submits in progress).
    fn entries<T: Send + 'static>(group: &TaskGroup<T>) -> usize {
        let (trip, _) = group.inner.cancel.as_ref().expect("a watching group");
        trip.lock().len()
    }

    /// A group joined task by task with `join_next`, its tasks ended before they are
    /// joined (each taken from the in-order list, not the set), keeps no list of the tasks
    /// it joined (a review of db0610c found the list growing by one entry per task).
    #[tokio::test]
    async fn a_group_joined_task_by_task_keeps_no_list_of_joined_tasks() {
        let pool = crate::CommonAioPool::new(2, 2);
        let mut group = pool.group::<u64>();
        // Fewer under Miri, which interprets every step (still past the list's cut).
        let n: u64 = if cfg!(miri) { 300 } else { 10_000 };
        let (mut sum, mut longest) = (0, 0);
        for i in 0..n {
            // Four in flight; the oldest has mostly ended when it is joined.
            if group.len() >= 4 {
                tokio::task::yield_now().await;
                sum += group.join_next().await.unwrap().unwrap();
            }
            group.submit(async move { i }).await.unwrap();
            longest = longest.max(group.inner.fresh.tasks.len());
        }
        while let Some(r) = group.join_next().await {
            sum += r.unwrap();
        }
        assert_eq!(sum, (0..n).sum::<u64>());
        assert!(longest <= 128, "the list grew to {longest}");
        // Submitted, ended, joined: the list is empty each time.
        for i in 0..100u64 {
            group.submit(async move { i }).await.unwrap();
            while !group.inner.fresh.tasks[group.inner.fresh.next]
                .as_ref()
                .is_some_and(|t| t.handle.is_finished())
            {
                tokio::task::yield_now().await;
            }
            assert_eq!(group.join_next().await.unwrap().unwrap(), i);
            assert_eq!(group.inner.fresh.tasks.len(), 0);
        }
    }

    /// A cancel-on-error group's submit registers its task's entry at the call (it makes
    /// the task ready there): a submit dropped while it waits for room, dropped unpolled,
    /// or refused, leaves no entry behind, and a refused one hands its future back.
    #[tokio::test(start_paused = true)]
    async fn a_watched_submit_dropped_or_refused_leaves_no_entry() {
        let pool = crate::CommonAioPool::new(2, 0);
        let mut group = pool.group::<Result<(), ()>>().cancel_on_error(true);
        group.submit(std::future::pending()).await.unwrap();
        group
            .submit(async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Err(())
            })
            .await
            .unwrap();
        assert_eq!(entries(&group), 2);
        // Each future dropped with its submit counts its drop.
        let dropped = Arc::new(AtomicUsize::new(0));
        let counted = || {
            let d = Dropped(dropped.clone());
            async move {
                let _d = d;
                Ok(())
            }
        };
        let waited = tokio::time::timeout(Duration::from_millis(10), group.submit(counted())).await;
        assert!(waited.is_err(), "the pool was full");
        assert_eq!(entries(&group), 2, "a submit dropped while it waited");
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        drop(group.submit(counted()));
        assert_eq!(entries(&group), 2, "a submit dropped unpolled");
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
        // Waits for room; the second task fails meanwhile, which aborts the first.
        let refused = group.submit(async { Ok(()) }).await.unwrap_err();
        assert!(refused.is_closed());
        assert_eq!(entries(&group), 2, "a refused submit");
        assert_eq!(refused.into_inner().await, Ok(()));
        let results = group.join_all().await;
        assert!(results[0].as_ref().unwrap_err().is_cancelled());
        assert_eq!(results[1].as_ref().unwrap(), &Err(()));
    }
}
