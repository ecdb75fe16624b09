//! [`CommonAioPool`]: a bounded FIFO queue in front of a fixed number of running slots.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;

use super::core::checked;
use super::core::{Core, FutureJob};
use super::group::TaskGroup;
use super::registry::{self, PoolKind};
use super::stream::{MapOrdered, MapUnordered};
use crate::engine::{Config, LimitsConfig};
use crate::error::{RunError, SubmitError, TaskError, TrySubmitError};
use crate::observe::OnPanic;
use crate::stats::PoolStats;
use crate::stats::ShutdownReport;
use crate::task::TaskHandle;

/// A pool that runs at most `max_concurrency` futures at once and holds at most
/// `max_queue_size` more in a FIFO queue; submitting waits while both are full.
///
/// This is the seed's `CommonAioPool`: the pool to reach for when a loop must push millions
/// of jobs through a bounded number of slots. `submit(fut).await` returns as soon as the
/// job is queued, with a [`TaskHandle`] to its result; when the queue is full it waits,
/// which slows the producer down to the pool's pace (backpressure), so memory stays flat
/// however many jobs go through.
///
/// Each job runs in a *slot*: a tokio task that runs jobs one after the other, so a
/// queued job costs no `tokio::spawn` (it runs in the slot that frees up), and tokio's
/// scheduler spreads the slots over its threads like any task.
///
/// # Queue size 0
///
/// `max_queue_size == 0` means *no waiting room*: a submit waits until a slot is free (the
/// behaviour of [`NoQueueAioPool`](crate::NoQueueAioPool)). It never means "unbounded".
///
/// # Runtime
///
/// A pool is not bound to a runtime: a job runs on the runtime of the code that submitted
/// it, and from a plain thread (`blocking_submit`) on the pool's *home* runtime, the one
/// it was created in or last used from. A pool can live in a `static` and serve several
/// runtimes at once (one per `#[tokio::test]`, say). When a runtime shuts down, the jobs
/// submitted from it that are queued or running are cancelled with
/// [`CancelReason::RuntimeShutdown`](crate::CancelReason::RuntimeShutdown) (and a warning
/// with their count is printed at process exit); jobs of other runtimes carry on. A job a
/// plain thread sent to the runtime that ended is cancelled with it only if it was
/// running there, or if no other runtime the pool knows is alive: one still queued goes
/// to another. A submit
/// that no runtime can serve fails with
/// [`SubmitErrorKind::NoRuntime`](crate::SubmitErrorKind::NoRuntime), the job handed back.
///
/// # Dropping
///
/// The pool is a cheap [`Clone`] handle; clones share one pool. Dropping the last handle
/// closes intake but cancels nothing: queued and running jobs still finish (but for jobs a
/// [`rate_limit`](CommonAioPoolBuilder::rate_limit) window that never reopens holds back,
/// which never could: they are cancelled, with
/// [`CancelReason::RuntimeShutdown`](crate::CancelReason::RuntimeShutdown), once the pool
/// is gone: at the drop if nothing else runs, else when its running jobs have ended). Streams and
/// groups made from the pool ([`map_unordered`](Self::map_unordered),
/// [`group`](Self::group), ...) count as handles: the pool stays open while one lives. To *wait* for
/// them, call [`shutdown`](Self::shutdown) or
/// [`shutdown_all_common_aiopools`](crate::shutdown_all_common_aiopools) at the end of
/// `main`; a runtime that shuts down first cancels them (see above). Once its jobs have
/// ended, a dropped pool leaves nothing behind, also on the runtimes it ran on, so pools
/// made per request or per batch do not pile up.
///
/// # Examples
///
/// ```
/// use nb_aiopool::CommonAioPool;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = CommonAioPool::new(5, 100);
///
/// let result = pool.run(async { 100 * 2 }).await.unwrap();
/// assert_eq!(result, 200);
///
/// let mut handles = Vec::new();
/// for i in 0..10 {
///     handles.push(pool.submit(async move { i * 2 }).await.unwrap());
/// }
/// for (i, h) in handles.into_iter().enumerate() {
///     assert_eq!(h.await.unwrap(), i * 2);
/// }
///
/// // Fire and forget: shutdown waits for everything still queued or running.
/// for i in 0..3 {
///     pool.submit(async move { println!("task {i}") }).await.unwrap().detach();
/// }
/// pool.shutdown().await;
/// # }
/// ```
#[derive(Clone)]
pub struct CommonAioPool {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Core<FutureJob>,
    name: Arc<str>,
}

/// Builds a [`CommonAioPool`] with settings other than `new`'s.
///
/// # Examples
///
/// ```
/// use nb_aiopool::CommonAioPool;
///
/// let pool = CommonAioPool::builder()
///     .max_concurrency(50)
///     .max_queue_size(500)
///     .name("crawler")
///     .build();
/// assert_eq!((pool.max_concurrency(), pool.max_queue_size()), (50, 500));
/// assert_eq!(pool.name(), "crawler");
/// ```
///
/// # Dropping
///
/// A builder holds only settings: dropped without [`build`](Self::build), it makes no pool
/// and starts nothing.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct CommonAioPoolBuilder {
    limits: LimitsConfig,
    max_concurrency: usize,
    max_queue_size: usize,
    name: Option<String>,
    process_wide: bool,
    on_panic: OnPanic,
}

// Settings only, and the `on_panic` callback, which the pool calls inside `catch_unwind`
// (see the pool's `UnwindSafe`).
impl std::panic::UnwindSafe for CommonAioPoolBuilder {}
impl std::panic::RefUnwindSafe for CommonAioPoolBuilder {}

/// The settings of [`CommonAioPool::builder`], as `SmartAioPoolBuilder`'s `Default` is
/// `SmartAioPool::builder`'s.
impl Default for CommonAioPoolBuilder {
    fn default() -> Self {
        CommonAioPool::builder()
    }
}

impl CommonAioPoolBuilder {
    /// The most jobs that run at once. Default: 100.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n;
        self
    }

    /// The most jobs that wait in the queue; 0 means no waiting room (a submit waits for a
    /// free slot). Default: 1000.
    pub fn max_queue_size(mut self, n: usize) -> Self {
        self.max_queue_size = n;
        self
    }

    /// The pool's name, shown by `Debug`, [`CommonAioPool::name`] and the exit warning.
    /// Default: `"CommonAioPool"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Calls `f` with the task's id and error when a task panics after its handle was
    /// dropped (a detached task, whose panic would otherwise only show in
    /// `stats().panicked`), as Go's ants `PanicHandler`. Not called for tasks whose handle
    /// is still held (the handle gets the error), nor for cancellations. Default: none.
    ///
    /// `f` runs once per such task, on the tokio task that ran it, after the pool counted
    /// the panic and outside the pool's locks (it may use the pool); a panic inside `f` is
    /// caught and dropped. Keep it short: that slot starts its next task after it. A
    /// `wait()` that covers the task (and so a shutdown) returns only after the call; one
    /// that starts while a call runs may wait for that call too.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use nb_aiopool::CommonAioPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let counter = seen.clone();
    /// let pool = CommonAioPool::builder()
    ///     .on_panic(move |id, err| {
    ///         eprintln!("task {id}: {err}");
    ///         counter.fetch_add(1, Ordering::Relaxed);
    ///     })
    ///     .build();
    /// pool.submit(async { panic!("boom") }).await.unwrap().detach();
    /// pool.wait().await;
    /// assert_eq!(seen.load(Ordering::Relaxed), 1);
    /// # }
    /// ```
    pub fn on_panic(
        mut self,
        f: impl Fn(crate::TaskId, &crate::TaskError) + Send + Sync + 'static,
    ) -> Self {
        self.on_panic = OnPanic::new(f);
        self
    }

    /// Whether [`shutdown_all_common_aiopools`](crate::shutdown_all_common_aiopools)
    /// reaches this pool. Default: `true`. A pool owned by a library or a test should say
    /// `false` and be shut down with [`CommonAioPool::shutdown`], so that a program's
    /// `shutdown_all_common_aiopools` does not close it.
    pub fn process_wide(mut self, enabled: bool) -> Self {
        self.process_wide = enabled;
        self
    }

    /// At most `count` tasks *start* in any window of `per` (a sliding window: a burst of
    /// `count` may start at once, then each further start waits until the start `count`
    /// places before it is `per` old). Combined with `max_concurrency`, "at most 50 starts
    /// per second, at most 100 at once". Default: no rate limit.
    ///
    /// Tasks waiting for the rate window stay queued (and count in `stats().queued`). A
    /// `per` too long to add to a time (`Duration::MAX`) is a window that never ends: at
    /// most `count` starts, ever. Tasks past `count` then never start: `wait()` and
    /// `shutdown()` wait for them for good (abort them, or use
    /// [`shutdown_timeout`](CommonAioPool::shutdown_timeout)); dropping the pool's last handle
    /// cancels them once its running jobs have ended (their handles say
    /// `RuntimeShutdown`; until then they wait, as the running jobs do).
    ///
    /// The window keeps the time of each start it holds, 16 bytes a start, at most `count`
    /// of them (for `per`; a window that never ends keeps one, and counts the rest): with a
    /// large `count` and a long `per` (`u32::MAX` in 100 years, meant as "no limit"), that
    /// memory grows with the tasks started within `per`. For no limit, set none.
    ///
    /// A task starts, for the window, when a slot of the runtime it runs on begins to run
    /// it: one that a slot of another runtime took from the queue and handed over to its
    /// own (which may be busy, or not driven: a current-thread runtime outside `block_on`)
    /// is counted again when that runtime gets to it, and goes back to the queue if the
    /// window has no room then, or if its start leaves no room beyond the tasks already
    /// given a slot and a task ahead of it in the queue (by priority, then submission) may
    /// start there (that one takes the start), so tasks handed over do not start together
    /// past the window, nor out of order. A runtime driven only now and then (a
    /// current-thread runtime outside `block_on` most of the time) starts its tasks only
    /// while it is driven and the window has room: while other runtimes keep the window
    /// full at those moments, its tasks wait (each hand-over to it spends a start of the
    /// window).
    ///
    /// # Panics
    ///
    /// `build` panics if `count` is 0 or `per` is zero. The pool's tasks need a runtime with
    /// time enabled: `build` inside a runtime without tokio's time driver panics, and so
    /// does a submit from one (before anything is taken: its task is dropped, never
    /// accepted). A submit future that waited for room on one runtime and is finished on
    /// one without timers is refused with
    /// [`NoRuntime`](crate::SubmitErrorKind::NoRuntime), its task handed back. A `wait`
    /// from a runtime the pool does not know yet does not offer it to the tasks (a wait
    /// makes no timer to find out whether it has timers); without a rate limit it does.
    pub fn rate_limit(mut self, count: u32, per: std::time::Duration) -> Self {
        self.limits.rate = Some((count, per));
        self
    }

    /// The sum of the [`weight`](crate::SubmitOptions::weight)s of running tasks stays
    /// within `capacity` (bytes in flight, say). A task heavier than the whole capacity is
    /// rejected at submit ([`SubmitErrorKind::TooHeavy`](crate::SubmitErrorKind::TooHeavy)).
    /// Weights keep FIFO order: a heavy task at the head of the queue waits for room and is
    /// not overtaken by lighter ones. Default: no weight limit (weights are ignored).
    ///
    /// A task that awaits a task of its own pool held back by the weight capacity (its
    /// own weight among the running ones) waits for ever: the pool's deadlock check
    /// sees slots, not weights.
    ///
    /// # Panics
    ///
    /// `build` panics if `capacity` is 0.
    pub fn weight_capacity(mut self, capacity: u64) -> Self {
        self.limits.weight_capacity = Some(capacity);
        self
    }

    /// At most `n` running tasks share a [`key`](crate::SubmitOptions::key) (a host, a
    /// tenant). Queued tasks of a saturated key wait without holding up tasks of other keys
    /// behind them in the queue, and without slowing their starts (they are set aside
    /// until their key has room again, so a start does not walk past them); they do take
    /// room in it (a queue full of one key's tasks makes submits of every key wait).
    /// What the pool keeps for a key goes with the key's last task: its memory depends on
    /// its size, not on how many keys it has seen (a key per URL is fine). Default: no
    /// per-key limit (keys are ignored).
    ///
    /// A task that awaits a task of its own pool held back by its own key waits for ever
    /// (the pool's deadlock check sees slots, not keys or weights).
    ///
    /// # Panics
    ///
    /// `build` panics if `n` is 0.
    pub fn max_per_key(mut self, n: usize) -> Self {
        self.limits.max_per_key = Some(n);
        self
    }

    /// Creates the pool. No runtime is needed.
    ///
    /// # Panics
    ///
    /// Panics if `max_concurrency` is 0, or if `max_concurrency + max_queue_size` exceeds
    /// `tokio::sync::Semaphore::MAX_PERMITS` (about 2^61 on 64-bit targets).
    #[track_caller]
    pub fn build(self) -> CommonAioPool {
        let kind = PoolKind::Common;
        let name: Arc<str> = self.name.as_deref().unwrap_or(kind.name()).into();
        let config = Config {
            name: kind.name(),
            max_concurrency: self.max_concurrency,
            max_queue_size: self.max_queue_size,
            elastic: None,
            rerun: false,
            limits: checked(self.limits),
            label: name.clone(),
            on_panic: self.on_panic,
        };
        let hook = registry::drop_hook(kind, name.clone(), self.process_wide);
        let pool = Core::new(config, Some(hook));
        registry::register_future_pool(kind, name.clone(), self.process_wide, &pool.engine);
        CommonAioPool {
            inner: Arc::new(Inner { pool, name }),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.pool.engine.close();
    }
}

impl CommonAioPool {
    pub(crate) fn pool(&self) -> &Core<FutureJob> {
        &self.inner.pool
    }

    /// The pool's core for a stream or a group: it keeps the pool open while it lives, as
    /// a handle does.
    fn kept(&self) -> Core<FutureJob> {
        self.inner.pool.kept_by(self.inner.clone())
    }

    /// Submits a future with per-task options ([`SubmitOptions`](crate::SubmitOptions)):
    /// priority, weight, key, and a deadline for waiting for room.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit), and
    /// [`SubmitErrorKind::TimedOut`](crate::SubmitErrorKind::TimedOut) when the timeout
    /// passes before there is room, or
    /// [`SubmitErrorKind::TooHeavy`](crate::SubmitErrorKind::TooHeavy) when the weight
    /// exceeds the pool's `weight_capacity`; the task is handed back either way.
    ///
    /// # Panics
    ///
    /// With a timeout, if the submit has to wait for room: panics (this crate's message)
    /// outside a tokio runtime, in one without a time driver (`enable_time`), or in the
    /// context of one that has shut down (a `spawn_blocking` thread that outlived it). A
    /// submit that finds room makes no timer and works from any executor. See also the builder's `rate_limit`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`submit`](Self::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use nb_aiopool::{CommonAioPool, SubmitOptions};
    ///
    /// let pool = CommonAioPool::new(1, 0);
    /// let _busy = pool.submit(std::future::pending::<()>()).await.unwrap();
    /// let opts = SubmitOptions::new().timeout(Duration::from_millis(10));
    /// let err = pool.submit_with(std::future::pending::<()>(), opts).await.unwrap_err();
    /// assert!(err.is_timed_out());
    /// # }
    /// ```
    pub fn submit_with<F>(
        &self,
        fut: F,
        opts: crate::SubmitOptions,
    ) -> impl Future<Output = Result<TaskHandle<F::Output>, SubmitError<F>>> + Send + '_
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // Not an `async fn`, as `submit`.
        self.pool().submit_with(fut, opts)
    }

    /// Submits a future with per-task options if there is room now, without waiting (the
    /// options' timeout does not apply).
    ///
    /// # Errors
    ///
    /// As [`try_submit`](Self::try_submit), and `is_too_heavy()` when the weight exceeds
    /// the pool's `weight_capacity`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::{CommonAioPool, SubmitOptions};
    ///
    /// let pool = CommonAioPool::new(1, 0);
    /// let opts = SubmitOptions::new().priority(5);
    /// let _h = pool.try_submit_with(std::future::pending::<()>(), opts).unwrap();
    /// # }
    /// ```
    pub fn try_submit_with<F>(
        &self,
        fut: F,
        opts: crate::SubmitOptions,
    ) -> Result<TaskHandle<F::Output>, TrySubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.pool().try_submit_with(fut, opts)
    }

    /// Changes how many tasks run at once, while the pool runs: growing starts queued
    /// tasks at once; shrinking lets running tasks finish and starts none until fewer
    /// than `n` run. The room for waiting submitters follows (`n` + the queue size).
    ///
    /// # Panics
    ///
    /// Panics if `n` is 0, or if `n` plus the queue size exceeds
    /// `tokio::sync::Semaphore::MAX_PERMITS`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = nb_aiopool::CommonAioPool::new(1, 0);
    /// pool.set_max_concurrency(8);
    /// assert_eq!(pool.max_concurrency(), 8);
    /// ```
    #[track_caller]
    pub fn set_max_concurrency(&self, n: usize) {
        self.pool().engine.set_max_concurrency(n)
    }

    /// Submits a future, waiting while the pool is full, and returns a handle to its
    /// result.
    ///
    /// The future starts when a slot is free, in submission order. Dropping the returned
    /// handle detaches the job; it still runs.
    ///
    /// # Errors
    ///
    /// Gives the future back, unpolled, in a [`SubmitError`] if the pool is shut down, or
    /// if this is called from a job of this same pool while the pool is full (waiting would
    /// deadlock), or if no runtime can run it
    /// ([`NoRuntime`](crate::SubmitErrorKind::NoRuntime): called outside a runtime when
    /// the pool knows no live runtime, because its runtimes have all shut down or it never
    /// had one; or, with a [`rate_limit`](CommonAioPoolBuilder::rate_limit), waited for room
    /// on one runtime and finished on one without timers).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the returned future is dropped while waiting for room, nothing is
    /// queued and the submitted future is dropped with it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::CommonAioPool;
    ///
    /// let pool = CommonAioPool::new(4, 16);
    /// let handle = pool.submit(async { "hello" }).await.unwrap();
    /// assert_eq!(handle.await.unwrap(), "hello");
    /// # }
    /// ```
    pub fn submit<F>(
        &self,
        fut: F,
    ) -> impl Future<Output = Result<TaskHandle<F::Output>, SubmitError<F>>> + Send + '_
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // Not an `async fn`: the core's future is handed out as it is, not wrapped in
        // one more that would move it (with the submitted future inside) at its first
        // poll.
        self.pool().submit(fut)
    }

    /// Submits a future if there is room now, without waiting.
    ///
    /// # Errors
    ///
    /// Gives the future back in a [`TrySubmitError`] if the pool is full or shut down, or
    /// if no runtime can run it ([`NoRuntime`](crate::SubmitErrorKind::NoRuntime): called
    /// from a plain thread after the pool's runtime shut down).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::CommonAioPool;
    ///
    /// let pool = CommonAioPool::new(1, 0);
    /// let _busy = pool.try_submit(std::future::pending::<()>()).unwrap();
    /// let err = pool.try_submit(async {}).unwrap_err();
    /// assert!(err.is_full());
    /// # }
    /// ```
    #[track_caller]
    pub fn try_submit<F>(&self, fut: F) -> Result<TaskHandle<F::Output>, TrySubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.pool().try_submit(fut)
    }

    /// Submits a future from a thread that is not async, blocking it while the pool is
    /// full.
    ///
    /// # Errors
    ///
    /// Gives the future back in a [`SubmitError`] if the pool is shut down, if no runtime
    /// can run it ([`NoRuntime`](crate::SubmitErrorKind::NoRuntime): the pool's runtime
    /// shut down, or it was never created in or used from one), or if called from a job
    /// of this same pool (inside `block_in_place`) while the pool is full
    /// ([`WouldDeadlock`](crate::SubmitErrorKind::WouldDeadlock), as
    /// [`submit`](Self::submit)).
    ///
    /// # Panics
    ///
    /// Panics if called from a thread that drives async tasks (a tokio worker thread, or
    /// inside `block_on`), where blocking could stall or deadlock the tasks it waits for;
    /// use [`submit`](Self::submit) there. Plain threads and `spawn_blocking` threads may
    /// call it. The check is not made while the thread unwinds from a panic (in a `Drop`
    /// that the unwinding runs), where a second panic would abort the process: called
    /// there, it blocks as on a plain thread, and can deadlock. Nor can it be made in a
    /// `Drop` that a current-thread runtime's shutdown runs (tokio allows blocking
    /// there): waiting for room held by that runtime's own jobs, which only the same
    /// shutdown would end, it waits for ever, as tokio's `blocking_send` on a full
    /// channel would. Use [`try_submit`](Self::try_submit) in a `Drop`: it never waits.
    ///
    /// # Examples
    ///
    /// ```
    /// use nb_aiopool::CommonAioPool;
    ///
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// let pool = CommonAioPool::new(4, 16);
    /// rt.block_on(pool.run(async {})).unwrap(); // starts the pool on `rt`
    ///
    /// let producer = {
    ///     let pool = pool.clone();
    ///     std::thread::spawn(move || {
    ///         let handles: Vec<_> = (0..100)
    ///             .map(|i| pool.blocking_submit(async move { i }).unwrap())
    ///             .collect();
    ///         handles.into_iter().map(|h| h.blocking_wait().unwrap()).sum::<i32>()
    ///     })
    /// };
    /// assert_eq!(producer.join().unwrap(), 4950);
    /// ```
    #[track_caller]
    pub fn blocking_submit<F>(&self, fut: F) -> Result<TaskHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.pool().blocking_submit(fut)
    }

    /// [`blocking_submit`](Self::blocking_submit) with per-task options: a sync producer
    /// (a plain thread reading a file of URLs) that keys its futures by host, or gives
    /// them a priority or a weight. It waits for room in line with the future's priority
    /// (as [`submit_with`](Self::submit_with) does); the options' timeout bounds that
    /// wait by the system clock (a blocked thread has no runtime's clock, so a paused
    /// test clock does not move it).
    ///
    /// # Errors
    ///
    /// As [`blocking_submit`](Self::blocking_submit), and
    /// [`TimedOut`](crate::SubmitErrorKind::TimedOut) when the options' timeout passes
    /// before there is room, [`TooHeavy`](crate::SubmitErrorKind::TooHeavy) at once when
    /// the weight exceeds the pool's `weight_capacity`; the future is handed back.
    ///
    /// # Panics
    ///
    /// As [`blocking_submit`](Self::blocking_submit): called from a thread that drives
    /// async tasks; use `submit_with(..).await` there.
    ///
    /// # Examples
    ///
    /// ```
    /// use nb_aiopool::{CommonAioPool, SubmitOptions};
    ///
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// let pool = CommonAioPool::builder().max_per_key(2).build();
    /// rt.block_on(pool.run(async {})).unwrap(); // starts the pool on `rt`
    ///
    /// let producer = {
    ///     let pool = pool.clone();
    ///     std::thread::spawn(move || {
    ///         let handles: Vec<_> = (0..20)
    ///             .map(|i| {
    ///                 let opts = SubmitOptions::new().key(format!("host-{}", i % 4));
    ///                 pool.blocking_submit_with(async move { i }, opts).unwrap()
    ///             })
    ///             .collect();
    ///         handles.into_iter().map(|h| h.blocking_wait().unwrap()).sum::<i32>()
    ///     })
    /// };
    /// assert_eq!(producer.join().unwrap(), 190);
    /// ```
    #[track_caller]
    pub fn blocking_submit_with<F>(
        &self,
        fut: F,
        opts: crate::SubmitOptions,
    ) -> Result<TaskHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.pool().blocking_submit_with(fut, opts)
    }

    /// Submits a future and waits for its result: `submit(fut).await?.await`.
    ///
    /// # Errors
    ///
    /// [`RunError::Rejected`] if the pool refused the future (it is inside),
    /// [`RunError::Failed`] if the job panicked or was cancelled.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future while it waits for room queues nothing; dropping it after the
    /// job was queued detaches the job, which still runs.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::CommonAioPool;
    ///
    /// let pool = CommonAioPool::new(4, 16);
    /// assert_eq!(pool.run(async { 1 + 1 }).await.unwrap(), 2);
    /// # }
    /// ```
    pub fn run<F>(&self, fut: F) -> impl Future<Output = Result<F::Output, RunError<F>>> + Send + '_
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // Not an `async fn`, as `submit`: the future is moved into its task's run at the
        // call, not carried by this one.
        self.pool().run(fut)
    }

    /// Submits every future of `futs` in order, with the same backpressure as
    /// [`submit`](Self::submit), and returns their handles in input order.
    ///
    /// # Errors
    ///
    /// Stops at the first rejected future and gives it back; the ones before it stay
    /// submitted (their handles are dropped, so they run detached) and the rest of the
    /// iterator is dropped.
    ///
    /// # Panics
    ///
    /// A panic of the iterator (in its `next`) comes out of this future; the tasks
    /// submitted before it stay submitted and run on, detached.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future part-way leaves the futures already submitted
    /// running, detached, and drops the others.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::CommonAioPool;
    ///
    /// let pool = CommonAioPool::new(4, 16);
    /// let handles = pool.batch_submit((0..5).map(|i| async move { i })).await.unwrap();
    /// assert_eq!(handles.len(), 5);
    /// # }
    /// ```
    pub async fn batch_submit<I>(
        &self,
        futs: I,
    ) -> Result<Vec<TaskHandle<<I::Item as Future>::Output>>, SubmitError<I::Item>>
    where
        I: IntoIterator,
        I::Item: Future + Send + 'static,
        <I::Item as Future>::Output: Send + 'static,
    {
        self.pool().batch_submit(futs).await
    }

    /// Submits every future of `futs` (as [`batch_submit`](Self::batch_submit)) and waits
    /// for all of them; results come back in input order.
    ///
    /// # Errors
    ///
    /// As [`batch_submit`](Self::batch_submit) if a future is rejected; otherwise each
    /// job's own result or [`TaskError`] is in the returned vector.
    ///
    /// # Panics
    ///
    /// A panic of the iterator (in its `next`, or in its drop once it is used up: it is
    /// dropped before the wait, so that what it owns is not kept until the last job ends)
    /// comes out of this future, and the jobs it submitted are aborted, as when the future
    /// is dropped.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, but leak-free: dropping the future (under a `timeout`, say) aborts
    /// every job it submitted that has not finished, as dropping a `JoinSet` does.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::CommonAioPool;
    ///
    /// let pool = CommonAioPool::new(4, 16);
    /// let results = pool.batch_run((0..5).map(|i| async move { i * 10 })).await.unwrap();
    /// let values: Vec<i32> = results.into_iter().map(Result::unwrap).collect();
    /// assert_eq!(values, [0, 10, 20, 30, 40]);
    /// # }
    /// ```
    pub async fn batch_run<I>(
        &self,
        futs: I,
    ) -> Result<Vec<Result<<I::Item as Future>::Output, TaskError>>, SubmitError<I::Item>>
    where
        I: IntoIterator,
        I::Item: Future + Send + 'static,
        <I::Item as Future>::Output: Send + 'static,
    {
        super::group::batch_run(self.pool(), futs).await
    }

    /// A snapshot of the pool's counters.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = nb_aiopool::CommonAioPool::new(4, 16);
    /// assert_eq!(pool.stats().submitted, 0);
    /// ```
    pub fn stats(&self) -> PoolStats {
        self.pool().engine.stats()
    }

    /// Returns `true` once the pool is shut down (it accepts no more jobs).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(4, 16);
    /// assert!(!pool.is_closed());
    /// pool.shutdown().await;
    /// assert!(pool.is_closed());
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.pool().engine.is_closed()
    }

    /// The most jobs that run at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = nb_aiopool::CommonAioPool::new(4, 16);
    /// assert_eq!(pool.max_concurrency(), 4);
    /// ```
    pub fn max_concurrency(&self) -> usize {
        self.pool().engine.max_concurrency()
    }

    /// Creates a pool running at most `max_concurrency` jobs at once, with room for
    /// `max_queue_size` more in its queue.
    ///
    /// Nothing is allocated in proportion to `max_queue_size`; the queue grows as jobs
    /// arrive. The pool is registered for
    /// [`shutdown_all_common_aiopools`](crate::shutdown_all_common_aiopools).
    ///
    /// # Panics
    ///
    /// Panics if `max_concurrency` is 0, or if `max_concurrency + max_queue_size` exceeds
    /// `tokio::sync::Semaphore::MAX_PERMITS` (about 2^61 on 64-bit targets).
    ///
    /// # Examples
    ///
    /// ```
    /// use nb_aiopool::CommonAioPool;
    ///
    /// // No runtime needed to create it.
    /// let pool = CommonAioPool::new(1000, 1000);
    /// assert_eq!(pool.max_concurrency(), 1000);
    /// ```
    #[track_caller]
    pub fn new(max_concurrency: usize, max_queue_size: usize) -> Self {
        Self::builder()
            .max_concurrency(max_concurrency)
            .max_queue_size(max_queue_size)
            .build()
    }

    /// A builder with the default settings (100 running, 1000 queued).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = nb_aiopool::CommonAioPool::builder().max_concurrency(8).build();
    /// assert_eq!(pool.max_concurrency(), 8);
    /// ```
    pub fn builder() -> CommonAioPoolBuilder {
        CommonAioPoolBuilder {
            max_concurrency: 100,
            max_queue_size: 1000,
            name: None,
            process_wide: true,
            on_panic: OnPanic::default(),
            limits: LimitsConfig::default(),
        }
    }

    /// The pool's name (see [`CommonAioPoolBuilder::name`]).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Waits until every job submitted before this call has finished; the pool stays
    /// open. The jobs waited for are fixed when `wait()` is *called*, so a steady stream
    /// of new jobs cannot keep it waiting forever.
    ///
    /// Called from inside a job of this pool, it does not wait for that job, which could
    /// never end while it waits for itself (the same for [`shutdown`](Self::shutdown)).
    /// It still waits for the others, so two jobs that both wait so wait for each other
    /// (each is among the other's jobs), as two tokio tasks joining each other would,
    /// and with every slot held by jobs that wait so, queued jobs never start: give
    /// such a wait a timeout, or wait from outside the pool. "Inside" means that the call
    /// is made while the job is being polled (in its own code, or in a future it polls:
    /// `join!`, `select!`); a call made in a task the job spawns, or made outside the job
    /// (after it was submitted) with its future then moved into it, does wait for the job.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops the wait.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(2, 10);
    /// let h = pool.submit(async { 5 }).await.unwrap();
    /// pool.wait().await;
    /// assert!(h.is_finished());
    /// assert!(!pool.is_closed());
    /// # }
    /// ```
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        self.pool().engine.wait_all()
    }

    /// Cancels every job queued or running now: queued ones are dropped, running ones at
    /// their next `.await`; their handles resolve to
    /// [`CancelReason::CancelAll`](crate::CancelReason::CancelAll) (one that
    /// a shutdown deadline covered first keeps `Abandoned`, one aborted first `Aborted`:
    /// the first decision holds). The pool stays open.
    /// Returns once they are all gone (a job running on a runtime that is alive but not
    /// driven, a current-thread runtime outside `block_on`, goes when that runtime is
    /// driven again or dropped, as for [`shutdown_timeout`](Self::shutdown_timeout); one
    /// given a slot there that its slot task has not started yet goes at once, as a
    /// queued one).
    ///
    /// Called from inside a job of this pool, that job is not spared (unlike with
    /// [`shutdown_timeout`](Self::shutdown_timeout)): it is cancelled too, at its next
    /// `.await`, so if the wait has any other job to wait for, the call never returns
    /// there (the job's handle says `CancelAll`, or `Abandoned` if a deadline covered it
    /// first).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the cancellation happens when it is called; dropping the future only
    /// stops the wait.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(1, 10);
    /// let running = pool.submit(std::future::pending::<()>()).await.unwrap();
    /// let queued = pool.submit(async {}).await.unwrap();
    /// pool.cancel_all().await;
    /// assert!(running.await.unwrap_err().is_cancelled());
    /// assert!(queued.await.unwrap_err().is_cancelled());
    /// # }
    /// ```
    pub fn cancel_all(&self) -> impl Future<Output = ()> + Send + 'static {
        self.pool().cancel_all()
    }

    /// Stops intake and waits until every queued and running job has finished.
    ///
    /// Later submits fail with the future handed back; submitters waiting for room are
    /// refused. Idempotent: every caller, from any clone, waits for the same drain.
    ///
    /// Called from inside a job of this pool, it does not wait for that job (see
    /// [`wait`](Self::wait)): it returns once the other jobs have finished, while the
    /// calling job still runs.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: intake closes when it is called; dropping the future (even unpolled)
    /// stops the wait, not the shutdown (intake stays closed and the jobs keep running).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::CommonAioPool;
    ///
    /// let pool = CommonAioPool::new(2, 10);
    /// let h = pool.submit(async { 7 }).await.unwrap();
    /// pool.shutdown().await;
    /// assert!(h.is_finished());
    /// assert!(pool.submit(async { 8 }).await.is_err());
    /// # }
    /// ```
    #[must_use = "intake closes at once, awaited or not; await the future to wait for the pool's tasks to end"]
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        // Not an `async fn`: intake closes at the call, not at the first poll.
        self.pool().engine.shutdown()
    }

    /// Like [`shutdown`](Self::shutdown), but after `timeout` abandons what is left:
    /// queued jobs are dropped without running, running ones are dropped at their next
    /// `.await`, and their handles resolve to
    /// [`CancelReason::Abandoned`](crate::CancelReason::Abandoned) (a running one that a
    /// `cancel_all` covered first: `CancelAll`).
    ///
    /// A job that blocks its thread without ever yielding cannot be dropped until it
    /// yields; this waits for that. So does a job on a runtime that is alive but not
    /// driven (a current-thread runtime outside `block_on`): it is dropped when that
    /// runtime is driven again or dropped. A job given a slot there that its slot task has
    /// not started yet is dropped at the deadline, as a queued one.
    ///
    /// The pool is closed, and the report's counts start, when this is called; `timeout`
    /// runs from the returned future's first poll. Its timer is tokio's, on the runtime
    /// whose context polls it, and runs only while that runtime is driven: polled under
    /// `Handle::enter` of a current-thread runtime that no thread drives (in `block_on`),
    /// the deadline never passes, and this waits as `shutdown` does. A future polled on
    /// another runtime later takes its timer there, for the time left by the system clock
    /// (if that runtime has time enabled; else it keeps the first runtime's while that
    /// runtime lives).
    ///
    /// Called from inside a job of this pool, that job is neither waited for nor
    /// abandoned at this call's own deadline (see [`wait`](Self::wait) for what "inside"
    /// means). It is spared from that deadline only: a `cancel_all`, or the deadline of
    /// another `shutdown_timeout` (made outside the pool, or in another job) that comes
    /// first, still cancels it.
    ///
    /// # Panics
    ///
    /// If it has to wait (something is left to finish at its first poll): outside a tokio
    /// runtime, on one without the time driver (`enable_time`), or in the context of one
    /// that has shut down (a `spawn_blocking` thread that outlived it), where its
    /// deadline's timer cannot be made; the pool stays closed. With nothing left it makes no timer
    /// and works from any executor, as [`shutdown`](Self::shutdown) does.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe as [`shutdown`](Self::shutdown); if dropped before the deadline, nothing
    /// is abandoned.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use nb_aiopool::CommonAioPool;
    ///
    /// let pool = CommonAioPool::new(1, 10);
    /// pool.submit(tokio::time::sleep(Duration::from_secs(3600))).await.unwrap().detach();
    /// let report = pool.shutdown_timeout(Duration::from_secs(1)).await;
    /// assert_eq!(report.abandoned(), 1);
    /// # }
    /// ```
    #[must_use = "intake closes at once, awaited or not; await the future to wait for the pool's tasks to end"]
    pub fn shutdown_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = ShutdownReport> + Send + 'static {
        self.pool().engine.shutdown_timeout(timeout)
    }

    /// The most jobs that wait in the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = nb_aiopool::CommonAioPool::new(8, 100);
    /// assert_eq!(pool.max_queue_size(), 100);
    /// ```
    pub fn max_queue_size(&self) -> usize {
        self.pool().engine.max_queue_size()
    }
}

/// Streams and task groups.
impl CommonAioPool {
    /// Runs `f(input)` in the pool for every input of `inputs`, with the pool's
    /// bound and backpressure, and returns a stream of the results **as they
    /// complete**. See [`MapUnordered`] for the bound and what dropping does.
    ///
    /// `inputs` is any [`Stream`]; for an iterator, wrap it in
    /// `futures_util::stream::iter` (or `tokio_stream::iter`). `f` turns an input
    /// into the future to run; it is called as each input is pulled, on the task
    /// that polls the stream.
    ///
    /// # Why not `stream.then(|i| pool.run(job(i)))`
    ///
    /// `then` awaits each future before it pulls the next input, so that runs the
    /// jobs **one at a time**, whatever the pool's size. `map_unordered` keeps the
    /// pool full and yields results as they come.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::{stream, StreamExt};
    /// use nb_aiopool::CommonAioPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = CommonAioPool::new(4, 16);
    /// let words = stream::iter(["a", "bb", "ccc"]);
    /// let mut lens: Vec<usize> = pool
    ///     .map_unordered(words, |w| async move { w.len() })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// lens.sort();
    /// assert_eq!(lens, [1, 2, 3]);
    /// # }
    /// ```
    pub fn map_unordered<St, F, Fut>(&self, inputs: St, f: F) -> MapUnordered<St, Fut::Output>
    where
        St: Stream,
        F: FnMut(St::Item) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        MapUnordered::new(&self.kept(), inputs, f)
    }

    /// Runs `f(input)` in the pool for every input of `inputs`, as
    /// [`map_unordered`](Self::map_unordered) does, and returns a stream of the
    /// results **in input order**. See [`MapOrdered`] for the bound on results
    /// waiting out of order, and what dropping does.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::{stream, StreamExt};
    /// use nb_aiopool::CommonAioPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = CommonAioPool::new(4, 16);
    /// let squares: Vec<u32> = pool
    ///     .map_ordered(stream::iter(0..10u32), |i| async move { i * i })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    /// # }
    /// ```
    pub fn map_ordered<St, F, Fut>(&self, inputs: St, f: F) -> MapOrdered<St, Fut::Output>
    where
        St: Stream,
        F: FnMut(St::Item) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        MapOrdered::new(&self.kept(), inputs, f)
    }

    /// A new, empty [`TaskGroup`] of this pool: submit futures to it, join them as they
    /// complete or all at once; dropping the group aborts its unfinished tasks.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(4, 16);
    /// let mut group = pool.group();
    /// group.submit(async { 1 }).await.unwrap();
    /// group.submit(async { 2 }).await.unwrap();
    /// let sum: i32 = group.join_all().await.into_iter().map(Result::unwrap).sum();
    /// assert_eq!(sum, 3);
    /// # }
    /// ```
    pub fn group<T: Send + 'static>(&self) -> TaskGroup<T> {
        TaskGroup::new(self.kept())
    }
}

// A pool can be used after a panic caught around its use, as tokio's `Handle` can: its
// engine's lock recovers from poisoning (its state is consistent between statements, see
// `Engine::lock`), and the user callbacks it keeps (`on_panic`, the `metrics` handles)
// are called inside `catch_unwind` already. The trait objects it holds carry neither
// trait, so the compiler cannot see this for itself.
impl std::panic::UnwindSafe for CommonAioPool {}
impl std::panic::RefUnwindSafe for CommonAioPool {}

impl fmt::Debug for CommonAioPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommonAioPool")
            .field("name", &self.name())
            .field("max_concurrency", &self.max_concurrency())
            .field("max_queue_size", &self.max_queue_size())
            .field("stats", self.pool().engine.for_debug().stats())
            .finish()
    }
}
