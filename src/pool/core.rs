//! The private core every pool forwards to: the submit paths, generic over what a pool
//! takes (a future, or a recipe) through [`Submit`], and the batch helpers.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::engine::{
    AdmitError, Admitting, Config, DropHook, Engine, Job, LimitsConfig, Meta, PushError,
};
use crate::error::{CancelReason, RunError, SubmitError, SubmitErrorKind, TrySubmitError};
use crate::options::SubmitOptions;
use crate::task::{BoxRun, ReadyRun, Shared, SlotRef, TaskHandle};

/// What a pool accepts, and how it becomes that pool's job.
///
/// In two steps, so that the engine's lock is held only to queue the job: [`ready`]
/// allocates it before the lock is taken, [`into_job`] (under the lock) only renames what
/// was allocated; a rejected item comes back untouched through [`unready`].
///
/// [`ready`]: Submit::ready
/// [`into_job`]: Submit::into_job
/// [`unready`]: Submit::unready
pub(crate) trait Submit<J>: Sized + Send + 'static {
    /// The task's result.
    type Output: Send + 'static;

    /// The item made ready to queue, its task's result slot inside.
    type Ready: Send + 'static;

    /// Makes the item ready to queue with its task's result slot `shared` (in the same
    /// allocation as the item's run, where it can be); calls no user code.
    fn ready(self, shared: Shared<Self::Output>) -> Self::Ready;

    /// [`ready`](Self::ready) with the slot `make` makes, called once. For an item that
    /// makes its allocation first ([`ReadyRun::room`]), the slot is made after it, and
    /// nothing that could unwind comes between the call and the allocation, so the item is
    /// passed on where it is, not copied aside for its drop if such a call unwound.
    #[inline(always)]
    fn ready_slot(self, make: impl FnOnce() -> Shared<Self::Output>) -> Self::Ready {
        let shared = make();
        self.ready(shared)
    }

    /// The handle's reference to the task's result slot. Dropped before [`unready`] on a
    /// refusal.
    ///
    /// [`unready`]: Submit::unready
    fn slot(ready: &Self::Ready) -> SlotRef<Self::Output>;

    /// The job the engine queues; cheap (taken under the engine's lock).
    fn into_job(ready: Self::Ready) -> J;

    /// The item, handed back when the pool refused it: after it was made ready (closed,
    /// or no runtime, found under the engine's lock), or, for a submit that makes it
    /// ready at the call, while it waited for room (any [`SubmitErrorKind`]).
    fn unready(ready: Self::Ready) -> Self;
}

/// A future job: its run, allocated once at submit (with its result slot, see
/// [`ReadyRun`]).
pub(crate) struct FutureJob(BoxRun);

impl Job for FutureJob {
    const RERUN: bool = false;
    const STARTS_USER_CODE: bool = false;

    fn keep(&self) -> Option<Self> {
        None
    }

    fn start(self) -> BoxRun {
        self.0
    }

    fn start_cancelled(self, _reason: CancelReason) -> BoxRun {
        self.0 // boxing the future called no user code; cancelling drops it
    }

    fn cancel(mut self, reason: CancelReason) {
        self.0.cancel(reason);
        self.0.publish_locked().0.fire();
    }

    fn aborted(&self) -> Option<CancelReason> {
        self.0.aborted()
    }

    fn handle_waker(&self) -> Option<std::task::Waker> {
        self.0.handle_waker()
    }

    #[inline]
    fn set_runner(&self, key: usize) {
        self.0.set_runner(key);
    }
}

impl<F> Submit<FutureJob> for F
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;
    type Ready = ReadyRun<F>;

    #[inline]
    fn ready(self, shared: Shared<F::Output>) -> Self::Ready {
        // The room first, the future moved into it after: one copy (`ReadyRun::room`).
        ReadyRun::room().fill(self, shared)
    }

    #[inline(always)]
    fn ready_slot(self, make: impl FnOnce() -> Shared<F::Output>) -> Self::Ready {
        let room = ReadyRun::room();
        room.fill(self, make())
    }

    fn slot(ready: &Self::Ready) -> SlotRef<F::Output> {
        ready.slot()
    }

    fn into_job(ready: Self::Ready) -> FutureJob {
        FutureJob(ready.into_run())
    }

    fn unready(ready: Self::Ready) -> F {
        ready.into_future()
    }
}

/// A pool's engine and its submit paths. Cloning it shares the pool.
pub(crate) struct Core<J: Job> {
    pub(crate) engine: Arc<Engine<J>>,
    /// What this copy keeps alive: the pool handle's shared part, for the copy a stream or
    /// a group holds, so that the pool stays open while they live (see [`kept_by`]).
    ///
    /// [`kept_by`]: Self::kept_by
    keep: Option<Arc<dyn Send + Sync>>,
}

impl<J: Job> Clone for Core<J> {
    fn clone(&self) -> Self {
        Core {
            engine: Arc::clone(&self.engine),
            keep: self.keep.clone(),
        }
    }
}

impl<J: Job> Core<J> {
    #[track_caller]
    pub(crate) fn new(config: Config, on_drop: Option<DropHook>) -> Self {
        Core {
            engine: Arc::new_cyclic(|me| Engine::new(config, on_drop, me.clone())),
            keep: None,
        }
    }

    /// A copy that keeps `owner` (a pool handle's shared part, whose drop closes the pool)
    /// alive as long as it, or a clone of it, lives: for streams and groups, which are
    /// ways to submit like the pool's handles.
    pub(crate) fn kept_by(&self, owner: Arc<dyn Send + Sync>) -> Self {
        Core {
            engine: Arc::clone(&self.engine),
            keep: Some(owner),
        }
    }

    /// An item with its options made ready, as `submit_with` makes it ready at its call,
    /// for a stream given options (which pushes it with
    /// [`push_admitted_ready`](Self::push_admitted_ready) once admitted, after
    /// [`wait_for_room`](Self::wait_for_room) if the pool was full); refused at once if its
    /// weight is above the pool's capacity (`TooHeavy`), as `submit_with` refuses it.
    pub(crate) fn ready_with<S: Submit<J>>(
        &self,
        item: S,
        opts: &SubmitOptions,
    ) -> Result<(S::Ready, Meta), SubmitError<S>> {
        let meta = meta_of(opts);
        if let Err(kind) = self.engine.check_weight(&meta) {
            return Err(SubmitError::new(kind, item));
        }
        Ok((self.ready(item, &meta), meta))
    }

    /// The wait for room of `submit_with` (of [`submit_ready`](Self::submit_ready), or
    /// [`submit_ready_within`](Self::submit_ready_within) with a timeout), for a submit
    /// that found the pool full: refused at once where waiting could never end
    /// (`WouldDeadlock`, `NoRuntime`), else in line with `priority`, for at most `limit`
    /// (`TimedOut`). Owned, for a stream to hold across its polls; boxed by the caller.
    /// Cancel safe: dropped, it takes no place. (Not shared with the submits' own paths,
    /// whose futures it would grow.)
    pub(crate) fn wait_for_room(
        &self,
        priority: i32,
        limit: Option<std::time::Duration>,
    ) -> impl Future<Output = Result<(), SubmitErrorKind>> + Send + 'static {
        let engine = Arc::clone(&self.engine);
        // Both steps before the wait is made, not at its first poll: a panic there (a
        // timeout on a runtime without time) would leave the stream holding a future that
        // panicked, whose next poll panics from inside the compiler's state machine
        // ("`async fn` resumed after panicking") instead of with this crate's message.
        // The stream polls the wait at once, so `full`'s start of stranded jobs comes no
        // earlier than at that poll.
        let full = engine.full();
        if full.is_ok() && limit.is_some() {
            crate::engine::assert_stream_timer_here();
        }
        async move {
            full?;
            engine
                .admit_waiting_with(priority, limit, &crate::engine::TIMED_STREAM_INPUT)
                .await
        }
    }

    /// Pushes an admitted item of a group or a stream, with its settings
    /// (`Meta::default()` for a plain `try_submit` or a stream's plain input), freeing
    /// nothing ended jobs left (their submits never do); gives it back if the pool closed
    /// meanwhile or no runtime can run it.
    pub(crate) fn push_admitted_with<S: Submit<J>>(
        &self,
        item: S,
        meta: Meta,
    ) -> Result<TaskHandle<S::Output>, PushError<S>> {
        self.push_with(item, meta, false)
    }

    /// [`push_admitted_with`](Self::push_admitted_with) of an item made
    /// [`ready_for_group`](Self::ready_for_group) (with the same settings), or, for a
    /// stream given options, [`ready_with`](Self::ready_with).
    pub(crate) fn push_admitted_ready<S: Submit<J>>(
        &self,
        ready: S::Ready,
        meta: Meta,
    ) -> Result<TaskHandle<S::Output>, PushError<S>> {
        self.push_ready::<S>(ready, meta, false)
    }

    /// Pushes an admitted item with its settings; gives it back if the pool closed
    /// meanwhile or no runtime can run it.
    ///
    /// `reap`: an async submit, which frees what ended jobs left for a submitter (see
    /// [`Engine::push`]); a synchronous one never runs such `Drop` code, since its
    /// caller may hold a lock that code takes.
    fn push_with<S: Submit<J>>(
        &self,
        item: S,
        meta: Meta,
        reap: bool,
    ) -> Result<TaskHandle<S::Output>, PushError<S>> {
        let ready = self.ready(item, &meta);
        self.push_ready::<S>(ready, meta, reap)
    }

    /// Makes `item` ready to queue: moves it into the allocation it will run in, with its
    /// result slot (before the engine's lock is taken). Not inlined: inlined, the
    /// allocation kept `submit` from being inlined in its caller, whose future then copied
    /// the one `submit` returns (measured with `bench/src/bin/future_size.rs`).
    #[inline(never)]
    fn ready<S: Submit<J>>(&self, item: S, meta: &Meta) -> S::Ready {
        // The slot is made by the item's `ready_slot`, not here: here, with a call made for
        // it that could unwind (`meta.priority()`), the item was copied aside before it
        // was passed on (184 bytes for the benchmark's future), for its drop.
        item.ready_slot(|| Shared::new(self.engine.id(), meta.priority()))
    }

    /// [`push_with`](Self::push_with) of an item made [`ready`](Self::ready).
    fn push_ready<S: Submit<J>>(
        &self,
        ready: S::Ready,
        meta: Meta,
        reap: bool,
    ) -> Result<TaskHandle<S::Output>, PushError<S>> {
        match self.push_ready_as::<S>(ready, meta, reap, false) {
            Ok(handle) => Ok(handle),
            Err(Admitting::Refused(refused)) => Err(refused.map(S::unready)),
            Err(Admitting::Full(..)) => unreachable!("an admitted item never finds the pool full"),
        }
    }

    /// Queues an item made [`ready`](Self::ready) ([`Engine::push`]): one admitted already,
    /// or with `admit` one that takes its place in the same critical section, handed back
    /// with its settings if there is no room.
    ///
    /// Always inline, as is [`submit_now`](Self::submit_now): a call, it cost every submit
    /// its entry and exit, its arguments and its result passed through memory; inline in
    /// the submits' futures, 35 fewer instructions per job of common and no-queue on a
    /// current-thread runtime, 33 of smart (callgrind, `bench/instructions.sh`, against
    /// c93efd2; this one alone: 5, 5 and 40).
    #[track_caller]
    #[inline(always)]
    fn push_ready_as<S: Submit<J>>(
        &self,
        ready: S::Ready,
        meta: Meta,
        reap: bool,
        admit: bool,
    ) -> Result<TaskHandle<S::Output>, Admitting<S::Ready>> {
        let slot = S::slot(&ready);
        let pushed = self.engine.push(ready, meta, reap, admit, |ready, id| {
            // Relaxed: read back only through the handle this submit returns.
            slot.shared().job.store(id, Ordering::Relaxed);
            S::into_job(ready)
        });
        match pushed {
            Ok(()) => Ok(TaskHandle::new(slot)),
            Err(refused) => {
                drop(slot);
                Err(refused)
            }
        }
    }

    /// An async submit of an item made [`ready`](Self::ready): takes its place and queues
    /// it under one lock if there is room, or waits for room, then queues it. Cancel safe:
    /// dropped while it waits, it takes no place.
    ///
    /// `reap` as in [`push_with`](Self::push_with).
    async fn submit_ready<S: Submit<J>>(
        &self,
        ready: S::Ready,
        meta: Meta,
        reap: bool,
    ) -> Result<TaskHandle<S::Output>, SubmitError<S>> {
        let (ready, meta) = match self.submit_now::<S>(ready, meta, reap) {
            Ok(waits) => waits,
            Err(done) => return done,
        };
        let admitted = match self.engine.full() {
            Ok(()) => self.engine.admit_waiting(meta.priority()).await,
            Err(kind) => Err(kind),
        };
        self.submit_waited::<S>(ready, meta, reap, admitted)
    }

    /// [`submit_ready`](Self::submit_ready) that gives up waiting for room after `limit`.
    /// Separate, so that its timer does not grow every plain submit's future. Cancel safe.
    async fn submit_ready_within<S: Submit<J>>(
        &self,
        ready: S::Ready,
        meta: Meta,
        limit: std::time::Duration,
        reap: bool,
    ) -> Result<TaskHandle<S::Output>, SubmitError<S>> {
        let (ready, meta) = match self.submit_now::<S>(ready, meta, reap) {
            Ok(waits) => waits,
            Err(done) => return done,
        };
        let admitted = match self.engine.full() {
            Ok(()) => {
                self.engine
                    .admit_waiting_within(limit, meta.priority(), &crate::engine::TIMED_SUBMIT)
                    .await
            }
            Err(kind) => Err(kind),
        };
        self.submit_waited::<S>(ready, meta, reap, admitted)
    }

    /// A submit with options of an item made [`ready`](Self::ready) with `meta`: refused
    /// at once if its weight can never fit, otherwise [`submit_ready`](Self::submit_ready),
    /// or [`submit_ready_within`](Self::submit_ready_within) with a deadline. The body of
    /// the pool's `submit_with` and of a group's (`reap` as in
    /// [`push_with`](Self::push_with)). Cancel safe.
    async fn submit_ready_with<S: Submit<J>>(
        &self,
        ready: S::Ready,
        meta: Meta,
        limit: Option<std::time::Duration>,
        reap: bool,
    ) -> Result<TaskHandle<S::Output>, SubmitError<S>> {
        if let Err(kind) = self.engine.check_weight(&meta) {
            return Err(SubmitError::new(kind, S::unready(ready)));
        }
        match limit {
            None => self.submit_ready::<S>(ready, meta, reap).await,
            Some(limit) => {
                self.submit_ready_within::<S>(ready, meta, limit, reap)
                    .await
            }
        }
    }

    /// The first step of a submit: `Ok` with the item back (and its settings) if it is to
    /// wait for room, `Err` with the submit's result if it is decided now.
    ///
    /// Inline in its callers (the submits' futures): out of line, it was a call that only
    /// passed [`push_ready_as`](Self::push_ready_as)'s result on, rewrapped, 29
    /// instructions per submit; inline, 26 fewer per job of common and no-queue on a
    /// current-thread runtime, 34 of smart (callgrind, `bench/instructions.sh`, against
    /// 52501ad). Always inline since [`push_ready_as`](Self::push_ready_as) is: left to
    /// the compiler, it grew with it and became a call again in CommonAioPool's and
    /// NoQueueAioPool's submits (2026-12-07).
    #[allow(clippy::type_complexity)]
    #[track_caller]
    #[inline(always)]
    fn submit_now<S: Submit<J>>(
        &self,
        ready: S::Ready,
        meta: Meta,
        reap: bool,
    ) -> Result<(S::Ready, Meta), Result<TaskHandle<S::Output>, SubmitError<S>>> {
        match self.push_ready_as::<S>(ready, meta, reap, true) {
            Ok(handle) => Err(Ok(handle)),
            Err(Admitting::Full(ready, meta)) => Ok((ready, meta)),
            Err(Admitting::Refused(refused)) => Err(Err(refused_submit(refused))),
        }
    }

    /// The last step of a submit that waited for room: queues the item if `admitted`.
    fn submit_waited<S: Submit<J>>(
        &self,
        ready: S::Ready,
        meta: Meta,
        reap: bool,
        admitted: Result<(), SubmitErrorKind>,
    ) -> Result<TaskHandle<S::Output>, SubmitError<S>> {
        match admitted {
            Ok(()) => self
                .push_ready::<S>(ready, meta, reap)
                .map_err(|e| SubmitError::new(e.kind(), e.into_inner())),
            Err(kind) => Err(SubmitError::new(kind, S::unready(ready))),
        }
    }

    /// Returns a future declared `Send`, rather than being an `async fn`: the callers'
    /// futures then need not prove `S: Submit<J>` for every lifetime (which fails, with
    /// "higher-ranked lifetime error", when the submitted future holds a `dyn Trait`).
    #[allow(clippy::manual_async_fn)] // declared `Send` on purpose (see above)
    pub(crate) fn submit<S: Submit<J>>(
        &self,
        item: S,
    ) -> impl Future<Output = Result<TaskHandle<S::Output>, SubmitError<S>>> + Send + '_ {
        // Made ready at the call: the returned future holds a pointer to the item's run,
        // not the item, which it would otherwise copy at its first poll and again on its
        // way into that run (a refused item is moved back out).
        let ready = self.ready(item, &Meta::default());
        self.submit_ready::<S>(ready, Meta::default(), true)
    }

    /// An item made ready for [`submit_for_group`](Self::submit_for_group) (with
    /// `Meta::default()`) or [`submit_for_group_with`](Self::submit_for_group_with) (with
    /// its options' settings), at the group's submit call (so that the group's future
    /// holds a pointer, not the item).
    pub(crate) fn ready_for_group<S: Submit<J>>(&self, item: S, meta: &Meta) -> S::Ready {
        self.ready(item, meta)
    }

    /// [`submit`](Self::submit) for a group without a watcher, of an item made
    /// [`ready_for_group`](Self::ready_for_group): as a group's
    /// [`push_admitted_with`](Self::push_admitted_with), it frees nothing ended jobs left.
    /// Cancel safe.
    #[allow(clippy::manual_async_fn)] // declared `Send`, as `submit`
    pub(crate) fn submit_for_group<S: Submit<J>>(
        &self,
        ready: S::Ready,
    ) -> impl Future<Output = Result<TaskHandle<S::Output>, SubmitError<S>>> + Send + '_ {
        self.submit_ready::<S>(ready, Meta::default(), false)
    }

    /// [`submit_for_group`](Self::submit_for_group) with options: the pool's
    /// [`submit_with`](Self::submit_with) of an item made
    /// [`ready_for_group`](Self::ready_for_group) with `meta` (its weight checked at the
    /// first poll, its wait in line with its priority and bounded by `limit`), freeing
    /// nothing ended jobs left, as the group's plain submit. Cancel safe.
    #[allow(clippy::manual_async_fn)] // declared `Send`, as `submit`
    pub(crate) fn submit_for_group_with<S: Submit<J>>(
        &self,
        ready: S::Ready,
        meta: Meta,
        limit: Option<std::time::Duration>,
    ) -> impl Future<Output = Result<TaskHandle<S::Output>, SubmitError<S>>> + Send + '_ {
        self.submit_ready_with::<S>(ready, meta, limit, false)
    }

    pub(crate) fn try_submit<S: Submit<J>>(
        &self,
        item: S,
    ) -> Result<TaskHandle<S::Output>, TrySubmitError<S>> {
        // The default options: weight 1 always fits (a capacity is at least 1).
        self.try_submit_with(item, SubmitOptions::new())
    }

    #[track_caller]
    pub(crate) fn blocking_submit<S: Submit<J>>(
        &self,
        item: S,
    ) -> Result<TaskHandle<S::Output>, SubmitError<S>> {
        // Checked even when there is room, so misuse shows at once, not only under load.
        crate::blocking::assert_not_async("blocking_submit", "submit(..).await");
        self.blocking_submit_ready(self.ready(item, &Meta::default()), Meta::default(), None)
    }

    /// `blocking_submit` with per-task options (its timeout by the system clock).
    #[track_caller]
    pub(crate) fn blocking_submit_with<S: Submit<J>>(
        &self,
        item: S,
        opts: SubmitOptions,
    ) -> Result<TaskHandle<S::Output>, SubmitError<S>> {
        crate::blocking::assert_not_async("blocking_submit_with", "submit_with(..).await");
        let meta = meta_of(&opts);
        if let Err(kind) = self.engine.check_weight(&meta) {
            return Err(SubmitError::new(kind, item));
        }
        self.blocking_submit_ready(self.ready(item, &meta), meta, opts.timeout)
    }

    /// The blocking submit of an item made [`ready`](Self::ready): queued at once if
    /// there is room, else after the calling thread waited for room (in line with the
    /// item's priority, for at most `limit`). `#[track_caller]`, as its callers: a panic
    /// of the submit's checks names the user's line.
    #[track_caller]
    fn blocking_submit_ready<S: Submit<J>>(
        &self,
        ready: S::Ready,
        meta: Meta,
        limit: Option<std::time::Duration>,
    ) -> Result<TaskHandle<S::Output>, SubmitError<S>> {
        let (ready, meta) = match self.submit_now::<S>(ready, meta, false) {
            Ok(waits) => waits,
            Err(done) => return done,
        };
        // Marked blocked: a current-thread runtime this thread entered is not offered to
        // the pool, which would queue jobs there that only this thread could drive.
        let admitted = crate::blocking::blocked(|| {
            self.engine
                .full()
                .and_then(|()| self.engine.admit_blocking(meta.priority(), limit))
        });
        self.submit_waited::<S>(ready, meta, false, admitted)
    }

    /// `submit` with per-task options: priority, weight, key, and a deadline for waiting
    /// for room.
    /// Declared `Send` for the reason given at [`submit`](Self::submit).
    #[allow(clippy::manual_async_fn)] // declared `Send` on purpose (see above)
    pub(crate) fn submit_with<S: Submit<J>>(
        &self,
        item: S,
        opts: SubmitOptions,
    ) -> impl Future<Output = Result<TaskHandle<S::Output>, SubmitError<S>>> + Send + '_ {
        // Made ready at the call, as in `submit`.
        let meta = meta_of(&opts);
        let ready = self.ready(item, &meta);
        self.submit_ready_with::<S>(ready, meta, opts.timeout, true)
    }

    /// `try_submit` with per-task options (the timeout does not apply: it never waits).
    pub(crate) fn try_submit_with<S: Submit<J>>(
        &self,
        item: S,
        opts: SubmitOptions,
    ) -> Result<TaskHandle<S::Output>, TrySubmitError<S>> {
        let meta = meta_of(&opts);
        if let Err(kind) = self.engine.check_weight(&meta) {
            return Err(TrySubmitError::refused(kind, item));
        }
        match self.engine.try_admit_reported() {
            Ok(()) => self
                .push_with(item, meta, false)
                .map_err(|e| TrySubmitError::refused(e.kind(), e.into_inner())),
            Err(AdmitError::Full) => Err(TrySubmitError::full(item)),
            Err(AdmitError::Closed) => Err(TrySubmitError::refused(SubmitErrorKind::Closed, item)),
        }
    }

    /// Cancels every job queued or running now; the returned future waits until they are
    /// gone. The cancellation happens at the call, not at the first poll.
    pub(crate) fn cancel_all(&self) -> impl Future<Output = ()> + Send + 'static {
        self.engine.cancel_all(CancelReason::CancelAll);
        self.engine.wait_all()
    }

    /// Declared `Send` for the reason given at [`submit`](Self::submit).
    #[allow(clippy::manual_async_fn)] // declared `Send` on purpose (see above)
    pub(crate) fn run<S: Submit<J>>(
        &self,
        item: S,
    ) -> impl Future<Output = Result<S::Output, RunError<S>>> + Send + '_ {
        // The submit's future made at the call: it holds the item's run, not the item.
        let submit = self.submit(item);
        async move { Ok(submit.await?.await?) }
    }

    /// Submits items one after the other, stopping at the first rejection.
    ///
    /// Generic over the output `T` rather than naming `<I::Item as Submit<J>>::Output`:
    /// with the projection inside, a caller's future could not be proven `Send` when the
    /// items hold a `dyn Trait` (a "higher-ranked lifetime error").
    pub(crate) async fn batch_submit<I, T>(
        &self,
        items: I,
    ) -> Result<Vec<TaskHandle<T>>, SubmitError<I::Item>>
    where
        I: IntoIterator,
        I::Item: Submit<J, Output = T>,
    {
        let mut items = items.into_iter();
        // Room for the handles up to a bound: an iterator's lower bound may be far beyond
        // what the pool will take before a timeout drops this future (`repeat_with` and
        // `cycle` say `usize::MAX`, which overflowed the allocation: a review of a4515b7).
        let mut handles = Vec::with_capacity(items.size_hint().0.min(PREALLOCATED_HANDLES));
        // No variable of the item's type across the await (as in `group::batch_run`).
        while let Some(submit) = items.next().map(|item| self.submit(item)) {
            handles.push(submit.await?);
        }
        Ok(handles)
    }
}

/// The most handles `batch_submit` makes room for before it has them (the vector grows as
/// usual past it).
const PREALLOCATED_HANDLES: usize = 1024;

/// A submit refused after its item was made ready, with the item.
fn refused_submit<J: Job, S: Submit<J>>(refused: PushError<S::Ready>) -> SubmitError<S> {
    SubmitError::new(refused.kind(), S::unready(refused.into_inner()))
}

/// A submit's flow-control settings, from its options (the defaults take no allocation).
pub(crate) fn meta_of(opts: &SubmitOptions) -> Meta {
    Meta::new(opts.priority, opts.weight, opts.key.clone())
}

/// Checks a builder's flow-control settings.
///
/// # Panics
///
/// Panics with a clear message on a setting that would stop every task.
#[track_caller]
pub(crate) fn checked(limits: LimitsConfig) -> LimitsConfig {
    if let Some((count, per)) = limits.rate {
        assert!(
            count > 0 && !per.is_zero(),
            "nb_aiopool: rate_limit({count}, {per:?}): both the count and the window must be \
             above zero"
        );
    }
    assert!(
        limits.max_per_key != Some(0),
        "nb_aiopool: max_per_key(0) would never start a task that has a key"
    );
    assert!(
        limits.weight_capacity != Some(0),
        "nb_aiopool: weight_capacity(0) would never start a task of weight 1 or more"
    );
    limits
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::{FutureJob, Submit};
    use crate::pool::recipe::SmartJob;
    use crate::task::Shared;

    /// Counts its drops.
    struct Dropped(Arc<AtomicUsize>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Made ready, then refused: what comes back.
    fn round_trip<J, S: Submit<J>>(item: S) -> S {
        let ready = item.ready(Shared::new(1, 0));
        // The handle's copy of the slot goes first, as in `Core::push_with`.
        drop(S::slot(&ready));
        S::unready(ready)
    }

    /// A refused item comes back whole: made ready (allocated) before the engine's lock,
    /// taken apart again, it is the item that was submitted, dropped once, by its owner.
    #[tokio::test]
    async fn a_ready_future_comes_back_whole() {
        let drops = Arc::new(AtomicUsize::new(0));
        let held = Dropped(drops.clone());
        let fut = async move {
            let _held = held;
            7u32
        };
        let fut = round_trip::<FutureJob, _>(fut);
        assert_eq!(drops.load(Ordering::SeqCst), 0, "dropped while handed back");
        assert_eq!(fut.await, 7);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_ready_recipe_comes_back_whole() {
        let drops = Arc::new(AtomicUsize::new(0));
        let held = Dropped(drops.clone());
        let recipe = move || {
            let _ = &held;
            async { 8u32 }
        };
        let recipe = round_trip::<SmartJob, _>(recipe);
        assert_eq!(drops.load(Ordering::SeqCst), 0, "dropped while handed back");
        assert_eq!(recipe().await, 8);
        drop(recipe);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    /// `submit`, once it is checked to be a small future (under 512 bytes).
    fn small<F: std::future::Future>(submit: F) -> F {
        assert!(std::mem::size_of_val(&submit) < 512);
        submit
    }

    /// What a caller's future holds while it awaits a submit does not grow with the
    /// submitted future: the submit's future holds a pointer to the task's run (made at
    /// the call), and its `Result` a boxed rejection. A future of several kilobytes is so
    /// not copied again at every step of the submit (BENCHMARKS.md, "2026-12-03,
    /// evening").
    #[tokio::test]
    async fn a_submit_does_not_carry_the_submitted_future() {
        async fn big() -> u8 {
            let state = [1u8; 4096];
            tokio::task::yield_now().await;
            std::hint::black_box(&state)[0]
        }
        let pool = crate::CommonAioPool::new(1, 1);
        assert!(std::mem::size_of_val(&big()) > 4096);
        let submit = pool.submit(big());
        assert!(std::mem::size_of_val(&submit) < 512);
        type Submitted = Result<crate::TaskHandle<u8>, crate::SubmitError<[u8; 4096]>>;
        assert!(std::mem::size_of::<Submitted>() <= 32);
        let run = pool.run(big());
        assert!(std::mem::size_of_val(&run) < 512);
        // A batch's items wait in their `Vec`; each is made ready as it is submitted, and
        // the batch's future holds none of them (a group's submit makes it ready at the
        // call too).
        let batch = pool.batch_run(vec![big(), big()]);
        assert!(std::mem::size_of_val(&batch) < 1024);
        assert_eq!(batch.await.unwrap().len(), 2);
        let batch = pool.batch_submit(vec![big(), big()]);
        assert!(std::mem::size_of_val(&batch) < 1024);
        for handle in batch.await.unwrap() {
            assert_eq!(handle.await.unwrap(), 1);
        }
        assert_eq!(submit.await.unwrap().await.unwrap(), 1);
        assert_eq!(run.await.unwrap(), 1);
        // A group's submit and submit_with, with and without a watcher (cancel-on-panic).
        let mut group = pool.group();
        small(group.submit(big())).await.unwrap();
        let mut watched = pool.group().cancel_on_panic(true);
        small(watched.submit(big())).await.unwrap();
        assert_eq!(group.join_next().await.unwrap().unwrap(), 1);
        assert_eq!(watched.join_next().await.unwrap().unwrap(), 1);
        let opts = || {
            crate::SubmitOptions::new()
                .key("k")
                .timeout(Duration::from_secs(9))
        };
        small(group.submit_with(big(), opts())).await.unwrap();
        small(watched.submit_with(big(), opts())).await.unwrap();
        assert_eq!(group.join_next().await.unwrap().unwrap(), 1);
        assert_eq!(watched.join_next().await.unwrap().unwrap(), 1);
        // Refused after all: the future comes back from its run's allocation, whole.
        pool.shutdown().await;
        let back = pool.submit(big()).await.unwrap_err().into_inner();
        assert_eq!(back.await, 1);
    }

    /// The same for SmartAioPool's recipes: a recipe that holds kilobytes is not carried
    /// by the submit's future, the pool's or a group's (with and without a watcher).
    #[tokio::test]
    async fn a_submit_does_not_carry_the_submitted_recipe() {
        fn big() -> impl Fn() -> std::future::Ready<u8> + Send + Sync + 'static {
            let state = [1u8; 4096];
            move || std::future::ready(std::hint::black_box(&state)[0])
        }
        let pool = crate::SmartAioPool::new(1);
        assert!(std::mem::size_of_val(&big()) >= 4096);
        let handle = small(pool.submit(big())).await.unwrap();
        assert_eq!(handle.await.unwrap(), 1);
        let (mut group, mut watched) = (pool.group(), pool.group().cancel_on_panic(true));
        small(group.submit(big())).await.unwrap();
        small(watched.submit(big())).await.unwrap();
        for group in [&mut group, &mut watched] {
            assert_eq!(group.join_next().await.unwrap().unwrap(), 1);
        }
        let opts = || crate::SubmitOptions::new().key("k").priority(2);
        small(group.submit_with(big(), opts())).await.unwrap();
        small(watched.submit_with(big(), opts())).await.unwrap();
        for group in [&mut group, &mut watched] {
            assert_eq!(group.join_next().await.unwrap().unwrap(), 1);
        }
        // Refused: the recipe comes back whole, from a group's submit too.
        pool.shutdown().await;
        let back = pool.submit(big()).await.unwrap_err().into_inner();
        assert_eq!(back().await, 1);
        let back = watched.submit(big()).await.unwrap_err().into_inner();
        assert_eq!(back().await, 1);
    }
}
