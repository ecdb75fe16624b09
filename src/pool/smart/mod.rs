//! [`SmartAioPool`]: elastic workers, re-runnable recipes, and no task lost when `main`
//! returns.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;

use super::core::Core;
use super::group::SmartTaskGroup;
use super::recipe::SmartJob;
use super::stream::{MapOrdered, MapUnordered};
use crate::error::{RunError, SubmitError, TaskError, TrySubmitError};
use crate::stats::{PoolStats, ShutdownReport};
use crate::task::TaskHandle;

mod builder;
mod process_wide;

pub use builder::SmartAioPoolBuilder;
use process_wide::{forget_if_unused, forget_shut_down, orphaned};
pub use process_wide::{shutdown_all_smart_aiopools, smart_run};

/// A pool of elastic workers that runs *recipes* (closures that build a future) and, with
/// `auto_shutdown` (the default), finishes every submitted task before the process exits,
/// even if nobody awaited it.
///
/// This is the seed's `SmartAioPool`. Compared with [`CommonAioPool`](crate::CommonAioPool):
///
/// - **Recipes, not futures.** `submit(move || async move { .. })` takes an
///   `Fn() -> Future`, so a task interrupted by the end of its runtime can be started again
///   from scratch on a fresh one (the seed's `submit(func, *args)`).
/// - **Elastic workers.** It starts with `min_workers` workers, adds one whenever queued
///   tasks outnumber idle workers (up to `max_concurrency`), and retires a worker idle for
///   `idle_timeout` (never below `min_workers`). A worker is a running slot of the pool
///   (a tokio task that runs its jobs one after the other); adding one costs nothing until
///   it runs a job, and an idle one holds at most a parked tokio task. So nothing runs to
///   retire them: the workers idle for `idle_timeout` are retired when the pool next
///   counts them ([`worker_count`](Self::worker_count) and the other counts,
///   `set_max_concurrency`), and the parked tokio tasks of the retired ones end then; an
///   elastic pool needs no timer (it works on a runtime without tokio's time driver).
/// - **No task lost at exit.** See [Shutdown](#shutdown).
///
/// A recipe may run more than once, so a recipe that owns a value its future consumes
/// gives each run a copy (`move || work(payload.clone())`): a queued task holds the
/// recipe's value, a running one also the run's copy, made when the run starts (from
/// memory that may have gone cold while the task waited). For large values, capture them
/// behind an `Arc` (`Arc<str>`, `Arc<[u8]>`, `bytes::Bytes`) so that a run clones a
/// pointer. In this crate's benchmark at 100,000 slots (1M tiny tasks, 407-byte payloads,
/// 2 workers; medians of nine sets of 18 runs, 2026-12-05), the peak is how far the
/// producer gets ahead of the workers: in most sets it was 17.0 MiB for a recipe that
/// shared its payload so, 19.8 for one that cloned a `String` and 15.7 for CommonAioPool
/// with the same futures; on a quieter machine, where the producer gets further ahead,
/// 56.0, 116.9 and 53.0 MiB: the clone, from memory gone cold, slows the runs enough that
/// the pool fills close to its bound (BENCHMARKS.md, "Where issue 9's targets stand").
///
/// # Shutdown
///
/// With `auto_shutdown(true)` (the default), every task submitted to the pool completes
/// before the process ends:
///
/// 1. under [`smart_run`], which waits for every such pool before returning;
/// 2. when a plain `#[tokio::main]` returns, or the program calls `std::process::exit`,
///    while tasks are queued or running: an at-exit hook starts a fresh runtime and runs
///    them there, and what they, or plain threads still going, submit to any
///    `auto_shutdown` pool while it runs, also one built meanwhile, all on that runtime
///    (no task starts before every such pool is taken over). A task that never started runs once. A task that was *interrupted*
///    mid-run (its runtime went away, or `process::exit` was called while it ran) is run
///    **again from its recipe**: delivery is *at least once*, so make recipes safe to
///    repeat (idempotent), or await their handles. That is why tasks are recipes.
///    The two runs never overlap: a run that `process::exit` finds inside a poll on
///    another thread (busy in synchronous code) is run again only once that poll has
///    returned, and not at all if it ended there (meanwhile the exit's other tasks, of
///    every pool, run: such a poll may be waiting for one of them); one still in its poll
///    5 s after the exit began (one wait for all the pools), or the task that called
///    `exit` itself, is not run again (its handle says
///    [`RuntimeShutdown`](crate::CancelReason::RuntimeShutdown); the exit prints how
///    many). Such a run holds its slot (and its key and weight) while the exit waits for
///    it, but not once given up at that deadline, nor, in a pool built with
///    [`rerun_interrupted(false)`](SmartAioPoolBuilder::rerun_interrupted), at all (its
///    slots do not mark their polls, which would cost every poll a fence): the pool may
///    then start another task while that poll still runs, one more than its size (and
///    over `max_per_key` or `weight_capacity`) per such run, until the poll returns. A task aborted, or covered by a `cancel_all` or a shutdown's deadline,
///    before or while the exit waits for it, is not run again either: its handle says
///    that (the first covering call's reason), and the exit does not count it.
///    Once that run is over (or at once, if there is nothing to run), every
///    `auto_shutdown` pool is closed, and so is one built later: nothing is left to run a
///    new task, so a submit made later (a thread still going, a later at-exit hook) is refused with
///    [`Closed`](crate::SubmitErrorKind::Closed) rather than accepted for a task that
///    would never run (and a `blocking_wait` on it, waiting for ever, would hold the
///    process's exit). If the exit found nothing to run and closed the pools, and a task
///    submitted just before that close runs after all, what it submits to those pools is
///    refused with `Closed` too; a pool built while it runs takes tasks until it is over.
///
/// What cannot be covered: a process killed by a signal it does not handle (`SIGKILL`,
/// default `SIGTERM`/`SIGINT`), `std::process::abort`, a panic with `panic = "abort"`, a
/// crash, a task that never finishes (the exit then waits for it), a task that a
/// [`rate_limit`](SmartAioPoolBuilder::rate_limit) window that never ends holds back (it
/// is cancelled at the exit, with a warning), or, after
/// `process::exit` called from inside a runtime, a re-run that needs something its
/// interrupted first run still holds (a lock, a semaphore permit, a pooled connection:
/// that run is frozen with it, and the re-run, and so the exit, wait forever; so does a
/// task run at the exit that awaits a [`CommonAioPool`](crate::CommonAioPool) or
/// [`NoQueueAioPool`](crate::NoQueueAioPool) job submitted from that frozen runtime,
/// which runs its jobs, or calls `shutdown_all_common_aiopools` while such a job is
/// unfinished: only SmartAioPools are taken over at the exit), or a task
/// run at the exit that calls `process::exit` itself (std lets one thread exit: a call
/// from another thread while `main` returns or `exit` runs waits for ever, so the task
/// never ends and the exit waits for it: the process hangs). For Ctrl-C and `SIGTERM`,
/// handle the signal and shut down (see [`shutdown_all_smart_aiopools`]).
///
/// A pool with `auto_shutdown(false)` is left out of both automatic waits; shut it down
/// yourself.
///
/// # Dropping
///
/// The pool is a cheap [`Clone`] handle; clones share one pool (its streams and groups
/// count as handles too). Dropping every handle does not cancel or lose anything: the pool
/// stays in a process-wide list while it has unfinished tasks (so they still finish, and
/// the at-exit hook can find them). Once nothing is queued or running in a pool without
/// handles, it is closed and forgotten: its idle workers exit and it lets go of the
/// runtimes it served. That happens when the last handle is dropped, if the pool is idle
/// then; otherwise once its tasks have finished, seen by a task of a runtime the pool
/// knows (if that runtime ends first, or is a current-thread runtime, which may not be
/// driven again, the next [`build`](SmartAioPoolBuilder::build) of a SmartAioPool after
/// they have finished does it). So pools made per request or per test do not pile up; a
/// pool made once (in a `static`) and shared costs less still. (Tasks that a
/// [`rate_limit`](SmartAioPoolBuilder::rate_limit) window that never ends holds back
/// count as unfinished here: such a pool stays listed until the exit cancels them.)
///
/// A pool built with `auto_shutdown(false)` and `process_wide(false)` (a library's or a
/// test's own) is run by no exit and no process-wide call, so once its handles are gone
/// it keeps only the tasks someone may still see to their end: the running ones, and the
/// queued ones but those a [`rate_limit`](SmartAioPoolBuilder::rate_limit) window that
/// never ends holds back and, while no runtime it knows is alive (its runtimes ended
/// while its tasks ran: their re-runs are stranded), those whose handles are gone too.
/// The others are cancelled (their handles, if held, say
/// [`RuntimeShutdown`](crate::CancelReason::RuntimeShutdown), and the exit's report gives
/// them a line, as a `CommonAioPool`'s) when it is forgotten: at
/// once, or once the tasks it was running have ended, or, for re-runs stranded after the
/// last handle went, at the next `build`; a stranded task whose handle is held (and that
/// the rate window may start) keeps the pool until it is run (awaiting the handle offers
/// the awaiting runtime) or the handle is dropped. Cloning a handle and
/// dropping it cost two atomic operations each (the `Arc` and a count of handles).
///
/// # Examples
///
/// ```
/// use nb_aiopool::SmartAioPool;
///
/// async fn sample_task(x: u64) -> u64 {
///     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
///     x * 2
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = SmartAioPool::new(10);
///
/// // run = submit, then await the result.
/// assert_eq!(pool.run(|| sample_task(5)).await.unwrap(), 10);
///
/// let mut handles = Vec::new();
/// for i in 0..20 {
///     handles.push(pool.submit(move || sample_task(i)).await.unwrap());
/// }
/// for (i, h) in handles.into_iter().enumerate() {
///     assert_eq!(h.await.unwrap(), i as u64 * 2);
/// }
/// pool.shutdown().await;
/// # }
/// ```
pub struct SmartAioPool {
    inner: Arc<Inner>,
}

impl Clone for SmartAioPool {
    fn clone(&self) -> Self {
        // Relaxed, as `Arc`'s own count: a clone is made from a live handle.
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        SmartAioPool {
            inner: Arc::clone(&self.inner),
        }
    }
}

pub(crate) struct Inner {
    core: Core<SmartJob>,
    auto_shutdown: bool,
    name: Arc<str>,
    /// Reached by `shutdown_all_smart_aiopools`.
    process_wide: bool,
    /// Live `SmartAioPool` handles (streams and groups hold one). Once 0, it stays 0: a
    /// handle is made only from another, or by `build`. Unlike the `Arc`'s count, it
    /// leaves out the references the list's functions take for a moment.
    handles: AtomicUsize,
    /// Runs cut before the exit already remembered for its report (see `forget_shut_down`).
    cut_told: Arc<AtomicU64>,
}

impl SmartAioPool {
    /// Creates a pool running at most `max_concurrency` tasks at once, with the other
    /// settings at their defaults (queue 1000, 1 minimum worker, 5 s idle timeout,
    /// `auto_shutdown` on).
    ///
    /// # Panics
    ///
    /// Panics if `max_concurrency` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = nb_aiopool::SmartAioPool::new(10);
    /// assert_eq!(pool.worker_count(), 1);
    /// ```
    #[track_caller]
    pub fn new(max_concurrency: usize) -> Self {
        Self::builder().max_concurrency(max_concurrency).build()
    }

    /// A builder with the default settings.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = nb_aiopool::SmartAioPool::builder().min_workers(3).build();
    /// assert_eq!(pool.worker_count(), 3);
    /// ```
    pub fn builder() -> SmartAioPoolBuilder {
        SmartAioPoolBuilder::default()
    }

    pub(crate) fn core(&self) -> &Core<SmartJob> {
        &self.inner.core
    }

    /// The pool's core for a stream or a group: it counts as a handle of the pool while it
    /// lives, so the pool is not forgotten under it (see "Dropping" above).
    fn kept(&self) -> Core<SmartJob> {
        self.inner.core.kept_by(Arc::new(self.clone()))
    }

    /// Submits a recipe with per-task options ([`SubmitOptions`](crate::SubmitOptions)):
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
    /// use nb_aiopool::{SmartAioPool, SubmitOptions};
    ///
    /// let pool = SmartAioPool::builder().max_concurrency(1).max_queue_size(0).auto_shutdown(false).build();
    /// let _busy = pool.submit(std::future::pending::<()>).await.unwrap();
    /// let opts = SubmitOptions::new().timeout(Duration::from_millis(10));
    /// let err = pool.submit_with(std::future::pending::<()>, opts).await.unwrap_err();
    /// assert!(err.is_timed_out());
    /// # }
    /// ```
    pub fn submit_with<R, Fut>(
        &self,
        recipe: R,
        opts: crate::SubmitOptions,
    ) -> impl Future<Output = Result<TaskHandle<Fut::Output>, SubmitError<R>>> + Send + '_
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        // Not an `async fn`, as `submit`.
        self.core().submit_with(recipe, opts)
    }

    /// Submits a recipe with per-task options if there is room now, without waiting (the
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
    /// use nb_aiopool::{SmartAioPool, SubmitOptions};
    ///
    /// let pool = SmartAioPool::builder().max_concurrency(1).max_queue_size(0).auto_shutdown(false).build();
    /// let opts = SubmitOptions::new().priority(5);
    /// let _h = pool.try_submit_with(std::future::pending::<()>, opts).unwrap();
    /// # }
    /// ```
    pub fn try_submit_with<R, Fut>(
        &self,
        recipe: R,
        opts: crate::SubmitOptions,
    ) -> Result<TaskHandle<Fut::Output>, TrySubmitError<R>>
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        self.core().try_submit_with(recipe, opts)
    }

    /// Changes how many tasks run at once, while the pool runs: growing starts queued
    /// tasks at once; shrinking lets running tasks finish and starts none until fewer
    /// than `n` run. The room for waiting submitters follows (`n` + the queue size).
    /// With elastic workers, `n` caps the live workers (they still grow with the queue
    /// and retire when idle, never below `min_workers`, which `n` may go under).
    ///
    /// # Panics
    ///
    /// Panics if `n` is 0, or if `n` plus the queue size exceeds
    /// `tokio::sync::Semaphore::MAX_PERMITS`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = nb_aiopool::SmartAioPool::builder().max_concurrency(1).max_queue_size(0).auto_shutdown(false).build();
    /// pool.set_max_concurrency(8);
    /// assert_eq!(pool.max_concurrency(), 8);
    /// ```
    #[track_caller]
    pub fn set_max_concurrency(&self, n: usize) {
        self.core().engine.set_max_concurrency(n)
    }

    /// Submits a recipe, waiting while the pool is full, and returns a handle to its
    /// result.
    ///
    /// The recipe is called when a worker takes the task (again, if the task is re-run at
    /// exit; see [Shutdown](SmartAioPool#shutdown)). A recipe that panics when called
    /// counts as a panicking task.
    ///
    /// # Errors
    ///
    /// Gives the recipe back in a [`SubmitError`] if the pool is shut down, if called
    /// from a task of this same pool while it is full, or if no runtime can run it
    /// ([`NoRuntime`](crate::SubmitErrorKind::NoRuntime): called outside a runtime when
    /// the pool knows no live runtime; or, with a
    /// [`rate_limit`](SmartAioPoolBuilder::rate_limit), waited for room on one runtime and
    /// finished on one without timers).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting for room, it queues nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::SmartAioPool;
    ///
    /// async fn add(x: i32, y: i32) -> i32 { x + y }
    ///
    /// let pool = SmartAioPool::new(5);
    /// let handle = pool.submit(|| add(10, 20)).await.unwrap();
    /// assert_eq!(handle.await.unwrap(), 30);
    /// # }
    /// ```
    pub fn submit<R, Fut>(
        &self,
        recipe: R,
    ) -> impl Future<Output = Result<TaskHandle<Fut::Output>, SubmitError<R>>> + Send + '_
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        // Not an `async fn`: see `CommonAioPool::submit`.
        self.inner.core.submit(recipe)
    }

    /// Submits a recipe if there is room now, without waiting.
    ///
    /// # Errors
    ///
    /// Gives the recipe back in a [`TrySubmitError`] if the pool is full or shut down, or
    /// if no runtime can run it ([`NoRuntime`](crate::SubmitErrorKind::NoRuntime): called
    /// from a plain thread after the pool's runtime shut down).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::SmartAioPool;
    ///
    /// let pool = SmartAioPool::builder().max_concurrency(1).max_queue_size(0).build();
    /// let _busy = pool.try_submit(std::future::pending::<()>).unwrap();
    /// assert!(pool.try_submit(|| async {}).unwrap_err().is_full());
    /// pool.cancel_all().await;
    /// # }
    /// ```
    #[track_caller]
    pub fn try_submit<R, Fut>(
        &self,
        recipe: R,
    ) -> Result<TaskHandle<Fut::Output>, TrySubmitError<R>>
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        self.inner.core.try_submit(recipe)
    }

    /// Submits a recipe from a thread that is not async, blocking it while the pool is
    /// full.
    ///
    /// If every runtime the pool knows ends while the pool is full, their tasks wait to run
    /// again on a runtime that calls `wait`, a submit that waits for room, or awaits one of
    /// the pool's tasks (with a rate limit, a `wait` only from a runtime the pool knows; or
    /// at process exit). No room would come for this call then: a plain thread cannot offer
    /// a runtime (nor can a current-thread runtime it entered with `Handle::enter`, which
    /// its blocked thread could not drive), so the call is refused with
    /// [`NoRuntime`](crate::SubmitErrorKind::NoRuntime) and the recipe handed back; a
    /// `spawn_blocking` thread of a live runtime offers that runtime and goes on waiting.
    ///
    /// # Errors
    ///
    /// Gives the recipe back in a [`SubmitError`] if the pool is shut down, if no runtime
    /// can run it ([`NoRuntime`](crate::SubmitErrorKind::NoRuntime): the pool's runtime
    /// shut down, or it was never created in or used from one), or if called from a job
    /// of this same pool (inside `block_in_place`) while the pool is full
    /// ([`WouldDeadlock`](crate::SubmitErrorKind::WouldDeadlock), as
    /// [`submit`](Self::submit)).
    ///
    /// # Panics
    ///
    /// Panics if called from a thread that drives async tasks (a tokio worker thread, or
    /// inside `block_on`); use [`submit`](Self::submit) there. Plain threads and
    /// `spawn_blocking` threads may call it. The check is not made while the thread
    /// unwinds from a panic (in a `Drop` that the unwinding runs), where a second panic
    /// would abort the process: called there, it blocks as on a plain thread, and can
    /// deadlock. Nor can it be made in a `Drop` that a current-thread runtime's shutdown
    /// runs (tokio allows blocking there): waiting for room held by that runtime's own
    /// jobs, which only the same shutdown would end, it waits for ever, as tokio's
    /// `blocking_send` on a full channel would. Use [`try_submit`](Self::try_submit) in a
    /// `Drop`: it never waits.
    ///
    /// # Examples
    ///
    /// ```
    /// use nb_aiopool::SmartAioPool;
    ///
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// let pool = SmartAioPool::new(4);
    /// rt.block_on(pool.run(|| async {})).unwrap(); // starts the pool on `rt`
    /// let handle = pool.blocking_submit(|| async { 3 }).unwrap();
    /// assert_eq!(handle.blocking_wait().unwrap(), 3);
    /// ```
    #[track_caller]
    pub fn blocking_submit<R, Fut>(
        &self,
        recipe: R,
    ) -> Result<TaskHandle<Fut::Output>, SubmitError<R>>
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        self.inner.core.blocking_submit(recipe)
    }

    /// [`blocking_submit`](Self::blocking_submit) with per-task options: a sync producer
    /// (a plain thread reading a file of URLs) that keys its recipes by host, or gives
    /// them a priority or a weight. It waits for room in line with the recipe's priority
    /// (as [`submit_with`](Self::submit_with) does); the options' timeout bounds that
    /// wait by the system clock (a blocked thread has no runtime's clock, so a paused
    /// test clock does not move it).
    ///
    /// # Errors
    ///
    /// As [`blocking_submit`](Self::blocking_submit), and
    /// [`TimedOut`](crate::SubmitErrorKind::TimedOut) when the options' timeout passes
    /// before there is room, [`TooHeavy`](crate::SubmitErrorKind::TooHeavy) at once when
    /// the weight exceeds the pool's `weight_capacity`; the recipe is handed back.
    ///
    /// # Panics
    ///
    /// As [`blocking_submit`](Self::blocking_submit): called from a thread that drives
    /// async tasks; use `submit_with(..).await` there.
    ///
    /// # Examples
    ///
    /// ```
    /// use nb_aiopool::{SmartAioPool, SubmitOptions};
    ///
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// let pool = SmartAioPool::builder().max_per_key(2).auto_shutdown(false).build();
    /// rt.block_on(pool.run(|| async {})).unwrap(); // starts the pool on `rt`
    ///
    /// let producer = {
    ///     let pool = pool.clone();
    ///     std::thread::spawn(move || {
    ///         let handles: Vec<_> = (0..20)
    ///             .map(|i| {
    ///                 let opts = SubmitOptions::new().key(format!("host-{}", i % 4));
    ///                 pool.blocking_submit_with(move || async move { i }, opts).unwrap()
    ///             })
    ///             .collect();
    ///         handles.into_iter().map(|h| h.blocking_wait().unwrap()).sum::<i32>()
    ///     })
    /// };
    /// assert_eq!(producer.join().unwrap(), 190);
    /// ```
    #[track_caller]
    pub fn blocking_submit_with<R, Fut>(
        &self,
        recipe: R,
        opts: crate::SubmitOptions,
    ) -> Result<TaskHandle<Fut::Output>, SubmitError<R>>
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        self.inner.core.blocking_submit_with(recipe, opts)
    }

    /// Submits a recipe and waits for its result.
    ///
    /// # Errors
    ///
    /// [`RunError::Rejected`] if the pool refused the recipe, [`RunError::Failed`] if the
    /// task panicked or was cancelled.
    ///
    /// # Cancel safety
    ///
    /// Dropped while waiting for room, it queues nothing; dropped later, the task runs on,
    /// detached.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(2);
    /// assert_eq!(pool.run(|| async { 2 }).await.unwrap(), 2);
    /// # }
    /// ```
    pub fn run<R, Fut>(
        &self,
        recipe: R,
    ) -> impl Future<Output = Result<Fut::Output, RunError<R>>> + Send + '_
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        // Not an `async fn`, as `submit`: the recipe is moved into its task at the call.
        self.inner.core.run(recipe)
    }

    /// Submits every recipe of `recipes` in order, with the same backpressure as
    /// [`submit`](Self::submit); handles come back in input order.
    ///
    /// # Errors
    ///
    /// Stops at the first rejected recipe and gives it back; earlier ones stay submitted.
    ///
    /// # Panics
    ///
    /// A panic of the iterator (in its `next`) comes out of this future; the tasks
    /// submitted before it stay submitted and run on, detached.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped part-way, the recipes already submitted keep running.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(4);
    /// let recipes = (0..3).map(|i| move || async move { i });
    /// let handles = pool.batch_submit(recipes).await.unwrap();
    /// assert_eq!(handles.len(), 3);
    /// # }
    /// ```
    #[allow(clippy::type_complexity)]
    pub async fn batch_submit<I, R, Fut>(
        &self,
        recipes: I,
    ) -> Result<Vec<TaskHandle<Fut::Output>>, SubmitError<R>>
    where
        I: IntoIterator<Item = R>,
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        self.inner.core.batch_submit(recipes).await
    }

    /// Submits every recipe (as [`batch_submit`](Self::batch_submit)) and waits for all;
    /// results come back in input order.
    ///
    /// # Errors
    ///
    /// As [`batch_submit`](Self::batch_submit) if a recipe is rejected.
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
    /// every task it submitted that has not finished, as dropping a `JoinSet` does.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(4);
    /// let results = pool.batch_run((0..3).map(|i| move || async move { i * 2 })).await.unwrap();
    /// assert_eq!(results.into_iter().map(Result::unwrap).collect::<Vec<_>>(), [0, 2, 4]);
    /// # }
    /// ```
    #[allow(clippy::type_complexity)]
    pub async fn batch_run<I, R, Fut>(
        &self,
        recipes: I,
    ) -> Result<Vec<Result<Fut::Output, TaskError>>, SubmitError<R>>
    where
        I: IntoIterator<Item = R>,
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        super::group::batch_run(&self.inner.core, recipes).await
    }

    /// Stops intake and waits until every queued and running task has finished.
    /// Idempotent. The pool leaves the process-wide list once its tasks have finished and
    /// its last handle is gone (see the type's docs).
    ///
    /// Called from inside a task of this pool, it does not wait for that task (see
    /// [`wait`](Self::wait)); the pool stays in the process-wide list until that task has
    /// finished too, so [`smart_run`] and the exit hook still cover it.
    ///
    /// The returned future is `'static`, as the other pools' are (it holds a handle of the
    /// pool until it ends): it can be spawned, `tokio::spawn(pool.shutdown())`.
    ///
    /// As [`shutdown_all_smart_aiopools`] does, it offers the runtime that polls it to a
    /// pool with a [`rate_limit`](SmartAioPoolBuilder::rate_limit) whose re-runs are
    /// stranded (every runtime it knew ended while its tasks ran; also when that happens
    /// while it waits), checking first that the runtime has timers by making one: on a
    /// runtime without timers, tokio's "timers are disabled" panic, caught (a panic hook
    /// the program set still sees it, and under `panic = "abort"` the process aborts);
    /// made only for such a pool. Otherwise nothing would run them, and the shutdown
    /// would wait for ever. Where the runtime cannot take them (it has no timers, or it
    /// has shut down), a thread of the crate runs them.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: intake closes when it is called; dropping the future (even unpolled)
    /// stops the wait, not the shutdown. The pool then leaves the process-wide list when
    /// its last handle goes, not at once; closed, its tasks are still run to their end
    /// by [`smart_run`] and the exit hook, as those of a listed pool are.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(4);
    /// pool.submit(|| async {}).await.unwrap().detach();
    /// pool.shutdown().await;
    /// assert_eq!(pool.pending_count(), 0);
    /// # }
    /// ```
    #[must_use = "intake closes at once, awaited or not; await the future to wait for the pool's tasks to end"]
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        // Not an `async fn`: intake closes at the call, not at the first poll. The future
        // holds a handle of its own (so it is `'static`, as the other pools' are, and
        // keeps the pool open to the forget at its end as the borrow it replaced did).
        let wait = self.inner.core.engine.shutdown();
        let pool = self.clone();
        async move {
            // Before each poll of the wait, which offers this runtime: a stranded
            // rate-limited pool takes only a runtime known to have timers, and the pool
            // may become stranded while this waits (the wait is woken then: 329, 335).
            let mut wait = std::pin::pin!(wait);
            std::future::poll_fn(|cx| {
                if pool.inner.core.engine.needs_timer_probe() {
                    crate::engine::runtimes::ask_current_for_timers();
                }
                wait.as_mut().poll(cx)
            })
            .await;
            pool.forget();
        }
    }

    /// Like [`shutdown`](Self::shutdown), but abandons what is left after `timeout`; see
    /// [`CommonAioPool::shutdown_timeout`](crate::CommonAioPool::shutdown_timeout).
    ///
    /// Called from inside a task of this pool, that task is neither waited for nor
    /// abandoned at this call's own deadline (a `cancel_all`, or another
    /// `shutdown_timeout`'s deadline that comes first, still cancels it; see
    /// [`CommonAioPool::shutdown_timeout`](crate::CommonAioPool::shutdown_timeout)), and,
    /// as with [`shutdown`](Self::shutdown), the pool stays in the process-wide list until
    /// that task has finished too, so [`smart_run`] and the exit hook still cover it.
    ///
    /// # Panics
    ///
    /// As [`CommonAioPool::shutdown_timeout`](crate::CommonAioPool::shutdown_timeout):
    /// if it has to wait, outside a tokio runtime, on one without the time driver, or in
    /// the context of one that has shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe as [`shutdown`](Self::shutdown).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    ///
    /// let pool = nb_aiopool::SmartAioPool::new(4);
    /// pool.submit(std::future::pending::<()>).await.unwrap().detach();
    /// let report = pool.shutdown_timeout(Duration::from_secs(1)).await;
    /// assert_eq!(report.abandoned(), 1);
    /// # }
    /// ```
    #[must_use = "intake closes at once, awaited or not; await the future to wait for the pool's tasks to end"]
    pub fn shutdown_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = ShutdownReport> + Send + 'static {
        let shutdown = self.inner.core.engine.shutdown_timeout(timeout);
        // A handle of its own, as `shutdown`'s.
        let pool = self.clone();
        async move {
            let report = shutdown.await;
            pool.forget();
            report
        }
    }

    fn forget(&self) {
        forget_shut_down(&self.inner);
    }

    /// The pool's name (see [`SmartAioPoolBuilder::name`]).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Returns `true` once the pool is shut down (it accepts no more tasks); an
    /// `auto_shutdown` pool is also closed once the process exit's run is over (see
    /// "Shutdown" above).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(2);
    /// assert!(!pool.is_closed());
    /// pool.shutdown().await;
    /// assert!(pool.is_closed());
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.core.engine.is_closed()
    }

    /// Waits until every task submitted before this call has finished; the pool stays
    /// open. The same as [`wait_for_all`](Self::wait_for_all) (the seed's name), under the
    /// name the other pools use.
    ///
    /// Called from inside a task of this pool, it does not wait for that task, which could
    /// never end while it waits for itself (the same for [`shutdown`](Self::shutdown)).
    /// It still waits for the others, so two tasks that both wait so wait for each other
    /// (each is among the other's tasks), as two tokio tasks joining each other would,
    /// and with every slot held by tasks that wait so, queued tasks never start: give
    /// such a wait a timeout, or wait from outside the pool. "Inside" means that the call
    /// is made while the task is being polled (in its own code, or in a future it polls:
    /// `join!`, `select!`); a call made in a task it spawns, or made outside the task
    /// (after it was submitted) with its future then moved into it, does wait for it.
    ///
    /// Tasks queued again after every runtime the pool knew ended run on the runtime that
    /// polls the wait. With a [`rate_limit`](SmartAioPoolBuilder::rate_limit), the wait
    /// offers only a runtime known to have timers and does not check a new one itself:
    /// on a runtime the pool does not know, it waits until something else offers one
    /// (awaiting one of the tasks' handles, [`shutdown`](Self::shutdown), [`smart_run`],
    /// [`shutdown_all_smart_aiopools`], which check theirs). Polled where no live runtime
    /// can be offered (a non-tokio executor, `Handle::block_on` on a `spawn_blocking`
    /// thread of the runtime that ended, or, for a rate-limited pool, a runtime without
    /// timers), they run on a thread of the crate, as for an awaited [`TaskHandle`]; the
    /// same for [`shutdown`](Self::shutdown) and [`shutdown_all_smart_aiopools`].
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
    /// let pool = nb_aiopool::SmartAioPool::new(4);
    /// let h = pool.submit(|| async { 1 }).await.unwrap();
    /// pool.wait().await;
    /// assert!(h.is_finished());
    /// # }
    /// ```
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        self.inner.core.engine.wait_all()
    }

    /// Waits until every task submitted before this call has finished (fixed when it is
    /// *called*, not first polled); the pool stays open. Called from inside a task of this
    /// pool, it does not wait for that task, as [`wait`](Self::wait).
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
    /// let pool = nb_aiopool::SmartAioPool::new(4);
    /// let h = pool.submit(|| async { 1 }).await.unwrap();
    /// pool.wait_for_all().await;
    /// assert!(h.is_finished());
    /// # }
    /// ```
    pub fn wait_for_all(&self) -> impl Future<Output = ()> + Send + 'static {
        self.inner.core.engine.wait_all()
    }

    /// Cancels every task queued or running now: queued ones are dropped, running ones at
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
    /// Called from inside a task of this pool, that task is not spared (unlike with
    /// [`shutdown_timeout`](Self::shutdown_timeout)): it is cancelled too, at its next
    /// `.await`, so if the wait has any other task to wait for, the call never returns
    /// there (the task's handle says `CancelAll`, or `Abandoned` if a deadline covered it
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
    /// let pool = nb_aiopool::SmartAioPool::new(4);
    /// let h = pool.submit(std::future::pending::<()>).await.unwrap();
    /// pool.cancel_all().await;
    /// assert!(h.await.unwrap_err().is_cancelled());
    /// # }
    /// ```
    pub fn cancel_all(&self) -> impl Future<Output = ()> + Send + 'static {
        self.inner.core.cancel_all()
    }

    /// Tasks submitted and not yet finished (queued + running).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(nb_aiopool::SmartAioPool::new(4).pending_count(), 0);
    /// ```
    pub fn pending_count(&self) -> usize {
        self.stats().unfinished()
    }

    /// Live workers: between `min_workers` and `max_concurrency`. (After
    /// [`set_max_concurrency`](Self::set_max_concurrency) set the pool's size below
    /// `min_workers`, at most that size.)
    ///
    /// Right after [`set_max_concurrency`](Self::set_max_concurrency) shrank the pool
    /// below its running tasks, those tasks finish on their workers, which count as live
    /// (and busy) until then: the count may exceed `max_concurrency` meanwhile.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(nb_aiopool::SmartAioPool::new(4).worker_count(), 1);
    /// ```
    pub fn worker_count(&self) -> usize {
        let (workers, busy) = self.inner.core.engine.workers();
        workers.max(busy)
    }

    /// Workers running a task.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(nb_aiopool::SmartAioPool::new(4).busy_worker_count(), 0);
    /// ```
    pub fn busy_worker_count(&self) -> usize {
        self.inner.core.engine.workers().1
    }

    /// Workers waiting for a task.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(nb_aiopool::SmartAioPool::new(4).idle_worker_count(), 1);
    /// ```
    pub fn idle_worker_count(&self) -> usize {
        let (workers, busy) = self.inner.core.engine.workers();
        // Busy workers beyond the limit (a shrink under running tasks) leave none idle.
        workers.saturating_sub(busy)
    }

    /// A snapshot of the pool's counters.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(nb_aiopool::SmartAioPool::new(4).stats().submitted, 0);
    /// ```
    pub fn stats(&self) -> PoolStats {
        self.inner.core.engine.stats()
    }

    /// The most tasks that run at once.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(nb_aiopool::SmartAioPool::new(4).max_concurrency(), 4);
    /// ```
    pub fn max_concurrency(&self) -> usize {
        self.inner.core.engine.max_concurrency()
    }
}

/// Streams and task groups.
impl SmartAioPool {
    /// Runs a task for every input of `inputs`, with the pool's bound and backpressure,
    /// and returns a stream of the results **as they complete**. See [`MapUnordered`] for
    /// the bound and what dropping does.
    ///
    /// In recipe form: `f` turns an input into a **recipe** (`Fn() -> Future`), which the
    /// pool calls to start the task (and again if the task is re-run at exit, see
    /// [Shutdown](SmartAioPool#shutdown)); so `f` returns a closure, typically
    /// `move |i| move || job(i.clone())`. `inputs` is any [`Stream`]; wrap an iterator in
    /// `futures_util::stream::iter`.
    ///
    /// `stream.then(|i| pool.run(..))` runs the tasks one at a time; this keeps the pool
    /// full.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::{stream, StreamExt};
    /// use nb_aiopool::SmartAioPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = SmartAioPool::new(4);
    /// let mut doubled: Vec<u32> = pool
    ///     .map_unordered(stream::iter(0..5u32), |i| move || async move { i * 2 })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// doubled.sort();
    /// assert_eq!(doubled, [0, 2, 4, 6, 8]);
    /// # }
    /// ```
    pub fn map_unordered<St, F, R, Fut>(&self, inputs: St, f: F) -> MapUnordered<St, Fut::Output>
    where
        St: Stream,
        F: FnMut(St::Item) -> R + Send + 'static,
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        MapUnordered::new(&self.kept(), inputs, f)
    }

    /// Runs a task for every input of `inputs`, as [`map_unordered`](Self::map_unordered)
    /// does (`f` returns a recipe), and returns a stream of the results **in input
    /// order**. See [`MapOrdered`] for the bound and what dropping does.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::{stream, StreamExt};
    /// use nb_aiopool::SmartAioPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = SmartAioPool::new(4);
    /// let names: Vec<String> = pool
    ///     .map_ordered(stream::iter(["a", "b"]), |s| move || async move { s.repeat(2) })
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(names, ["aa", "bb"]);
    /// # }
    /// ```
    pub fn map_ordered<St, F, R, Fut>(&self, inputs: St, f: F) -> MapOrdered<St, Fut::Output>
    where
        St: Stream,
        F: FnMut(St::Item) -> R + Send + 'static,
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        MapOrdered::new(&self.kept(), inputs, f)
    }

    /// A new, empty [`SmartTaskGroup`] of this pool: [`TaskGroup`](crate::TaskGroup) in recipe form.
    /// Dropping the group aborts its unfinished tasks.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(4);
    /// let mut group = pool.group();
    /// group.submit(|| async { 1 }).await.unwrap();
    /// assert_eq!(group.join_next().await.unwrap().unwrap(), 1);
    /// # }
    /// ```
    pub fn group<T: Send + 'static>(&self) -> SmartTaskGroup<T> {
        SmartTaskGroup::new(self.kept())
    }
}

impl Drop for SmartAioPool {
    fn drop(&mut self) {
        // AcqRel: the last handle sees what the others did before they went.
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) == 1 && !forget_if_unused(&self.inner)
        {
            orphaned(&self.inner);
        }
    }
}

// A pool can be used after a panic caught around its use, as tokio's `Handle` can: its
// engine's lock recovers from poisoning (its state is consistent between statements, see
// `Engine::lock`), and the user callbacks it keeps (`on_panic`, the `metrics` handles)
// are called inside `catch_unwind` already. The trait objects it holds carry neither
// trait, so the compiler cannot see this for itself.
impl std::panic::UnwindSafe for SmartAioPool {}
impl std::panic::RefUnwindSafe for SmartAioPool {}

impl fmt::Debug for SmartAioPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let figures = self.inner.core.engine.for_debug();
        f.debug_struct("SmartAioPool")
            .field("name", &self.name())
            .field("max_concurrency", &self.max_concurrency())
            .field("workers", figures.workers())
            .field("auto_shutdown", &self.inner.auto_shutdown)
            .field("stats", figures.stats())
            .finish()
    }
}

// ----- process-wide functions -------------------------------------------------------------

/// A pool stranded by its runtime's end (see `Engine::note_stranded`) stops counting as
/// stranded once nothing is queued any more, whatever emptied the queue; before, only a
/// runtime made known did that, and every pending poll of any pool's handle in the process
/// took the slow path for as long as the pool lived (found by a review of 8065cc7).
#[cfg(all(test, not(nb_aiopool_loom)))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::SmartAioPool;
    use crate::task::unqueue;
    use crate::TaskHandle;

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A pool whose one task was cut off by the end of its runtime (the only runtime the
    /// pool knew): stranded, the task queued again.
    fn stranded() -> (SmartAioPool, TaskHandle<u32>) {
        let runs = Arc::new(AtomicUsize::new(0));
        let a = current_thread();
        let (pool, handle) = a.block_on(async {
            let pool = SmartAioPool::builder()
                .max_concurrency(1)
                .auto_shutdown(false)
                .process_wide(false)
                .build();
            let r = Arc::clone(&runs);
            let handle = pool
                .submit(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<u32>()
                })
                .await
                .unwrap();
            while runs.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (pool, handle)
        });
        drop(a);
        assert!(
            pool.core().engine.stranded_now(),
            "the end of its runtime strands it"
        );
        assert!(unqueue::stranded_listed(pool.core().engine.id()));
        assert_eq!(pool.pending_count(), 1);
        (pool, handle)
    }

    fn assert_unstranded(pool: &SmartAioPool) {
        assert_eq!(pool.stats().queued, 0);
        assert!(
            !pool.core().engine.stranded_now(),
            "still counted as stranded"
        );
        let id = pool.core().engine.id();
        assert!(
            !unqueue::stranded_listed(id),
            "still listed as stranded (or some pool unlisted)"
        );
    }

    #[test]
    fn a_stranded_pool_whose_queued_task_is_aborted_is_stranded_no_more() {
        let (pool, handle) = stranded();
        handle.abort();
        assert_unstranded(&pool);
    }

    #[test]
    fn a_stranded_pool_cancelled_is_stranded_no_more() {
        let (pool, _handle) = stranded();
        // Polled outside a runtime: it takes the queue at its first poll.
        futures_util::FutureExt::now_or_never(pool.cancel_all());
        assert_unstranded(&pool);
    }

    #[test]
    fn a_stranded_pool_given_a_runtime_is_stranded_no_more() {
        let (pool, mut handle) = stranded();
        let b = current_thread();
        b.block_on(async {
            // Its pending poll offers this runtime, where the task starts (and never ends).
            let waited = tokio::time::timeout(Duration::from_millis(20), &mut handle).await;
            assert!(waited.is_err());
            assert_eq!(pool.stats().running, 1);
        });
        assert_unstranded(&pool);
        // Cut off again: stranded again.
        drop(b);
        assert!(pool.core().engine.stranded_now());
        handle.abort();
        assert_unstranded(&pool);
    }

    /// The watcher of a pool dropped busy, polled on a runtime that has shut down while
    /// the pool is stranded, as a worker of a multi-thread runtime may poll it while that
    /// runtime's shutdown drops the pool's slot tasks: it starts no thread to serve the
    /// pool (RELIABILITY.md, 419). One did, and ran the re-runs there; a process exit
    /// right after (`main` returned) took them over mid-run and ran them a third time
    /// (`exit::tasks_complete_when_tokio_main_returns`, 3 times in 1,800 runs). A caller's
    /// wait polled the same way still has the pool served (finding 273).
    #[test]
    fn a_dropped_pools_watcher_polled_as_its_runtime_shuts_down_has_no_thread_serve_it() {
        let (pool, handle) = stranded();
        let engine = Arc::clone(&pool.core().engine);
        // A runtime that has shut down, entered: a spawn there is dropped at once, so the
        // pool cannot take it (as the runtime whose shutdown polls the watcher).
        let ended = current_thread();
        let gone = ended.handle().clone();
        drop(ended);
        let _in = gone.enter();
        let told = Arc::new(std::sync::Mutex::new(None));
        let t = Arc::clone(&told);
        let mut watcher = Box::pin(engine.watcher(false, move |done| {
            *t.lock().unwrap() = Some(done);
        }));
        assert!(futures_util::FutureExt::now_or_never(watcher.as_mut()).is_none());
        assert!(
            !engine.serving_now(),
            "the watcher had a thread serve the pool"
        );
        assert!(engine.stranded_now());
        assert_eq!(pool.pending_count(), 1);
        drop(watcher);
        assert_eq!(*told.lock().unwrap(), Some(false), "dropped unfinished");
        // A caller's wait, polled the same way, has the pool served.
        let mut wait = Box::pin(pool.wait());
        assert!(futures_util::FutureExt::now_or_never(wait.as_mut()).is_none());
        assert!(
            engine.serving_now(),
            "a caller's wait left the pool stranded"
        );
        drop(wait);
        // Its thread ends once the task is aborted.
        handle.abort();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while engine.serving_now() && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            !engine.serving_now(),
            "the serving thread outlived the task"
        );
    }

    /// A pool dropped busy whose watcher went to a current-thread runtime that is never
    /// driven again (the home, kept alive): a later `build` forgets it once its tasks have
    /// ended on another runtime (a review found it kept while that runtime lived).
    #[test]
    fn a_pool_whose_watcher_sits_on_an_undriven_runtime_is_forgotten_by_a_build() {
        let (home, other) = (current_thread(), current_thread());
        let pool = SmartAioPool::builder()
            .max_concurrency(4)
            .process_wide(false)
            .auto_shutdown(false)
            .build();
        let weak = Arc::downgrade(&pool.inner);
        let listed = |w: &std::sync::Weak<super::Inner>| {
            w.upgrade()
                .is_some_and(|p| super::process_wide::is_listed(&p))
        };
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let handles: Vec<TaskHandle<()>> = other.block_on(async {
            let mut handles = Vec::new();
            for _ in 0..3 {
                let gate = Arc::clone(&gate);
                let handle = pool
                    .submit(move || {
                        let gate = Arc::clone(&gate);
                        async move {
                            drop(gate.acquire().await.unwrap());
                        }
                    })
                    .await
                    .unwrap();
                handles.push(handle);
            }
            handles
        });
        // `home` becomes the pool's home, then sits idle (alive, not driven).
        home.block_on(async { pool.run(|| async {}).await.unwrap() });
        drop(pool); // busy: its watcher goes to `home`
        assert!(listed(&weak));
        other.block_on(async {
            gate.add_permits(3);
            for handle in handles {
                handle.await.unwrap();
            }
        });
        drop(SmartAioPool::builder().process_wide(false).build());
        assert!(
            !listed(&weak),
            "kept while its watcher's runtime is not driven"
        );
        drop(home);
    }
}
