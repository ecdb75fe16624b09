//! [`SmartAioPool`]: elastic workers, re-runnable recipes, and no task lost when `main`
//! returns.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::{FutureExt, Stream};

use super::core::{checked, Core};
use super::group::SmartTaskGroup;
use super::recipe::SmartJob;
use super::stream::{MapOrdered, MapUnordered};
use crate::engine::{Config, ElasticConfig, Figures, LimitsConfig};
use crate::error::{RunError, SubmitError, TaskError, TrySubmitError};
use crate::observe::OnPanic;
use crate::stats::{PoolStats, ShutdownReport};
use crate::task::TaskHandle;

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
///    `auto_shutdown` pool while it runs (no task starts before every such pool is taken
///    over). A task that never started runs once. A task that was *interrupted*
///    mid-run (its runtime went away, or `process::exit` was called while it ran) is run
///    **again from its recipe**: delivery is *at least once*, so make recipes safe to
///    repeat (idempotent), or await their handles. That is why tasks are recipes.
///    The two runs never overlap: a run that `process::exit` finds inside a poll on
///    another thread (busy in synchronous code) is run again only once that poll has
///    returned, and not at all if it ended there; one still in its poll after 5 s, or the
///    task that called `exit` itself, is not run again (its handle says
///    [`RuntimeShutdown`](crate::CancelReason::RuntimeShutdown); the exit prints how
///    many).
///
/// What cannot be covered: a process killed by a signal it does not handle (`SIGKILL`,
/// default `SIGTERM`/`SIGINT`), `std::process::abort`, a panic with `panic = "abort"`, a
/// crash, a task that never finishes (the exit then waits for it), a task that a
/// [`rate_limit`](SmartAioPoolBuilder::rate_limit) window that never ends holds back (it
/// is cancelled at the exit, with a warning), or, after
/// `process::exit` called from inside a runtime, a re-run that needs something its
/// interrupted first run still holds (a lock, a semaphore permit, a pooled connection:
/// that run is frozen with it, and the re-run, and so the exit, wait forever), or a task
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

/// The process's SmartAioPools that may still have work: a pool is listed from its
/// build until it is shut down or forgotten (see [`forget_if_unused`]).
struct Listed {
    /// By address (see [`key`]).
    pools: BTreeMap<usize, Arc<Inner>>,
    /// Pools whose last handle went while they had unfinished tasks: forgotten once those
    /// have finished, by a task that waits for them, else by the next `build`.
    orphans: Vec<Weak<Inner>>,
}

static SMART_POOLS: Mutex<Listed> = Mutex::new(Listed {
    pools: BTreeMap::new(),
    orphans: Vec::new(),
});

fn smart_pools() -> MutexGuard<'static, Listed> {
    SMART_POOLS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A listed pool's key: its address, which no other pool has while it is listed.
fn key(inner: &Arc<Inner>) -> usize {
    Arc::as_ptr(inner) as usize
}

/// Builds a [`SmartAioPool`] with settings other than the defaults.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nb_aiopool::SmartAioPool;
///
/// let pool = SmartAioPool::builder()
///     .max_concurrency(50)
///     .max_queue_size(500)
///     .min_workers(2)
///     .idle_timeout(Duration::from_secs(10))
///     .auto_shutdown(true)
///     .build();
/// assert_eq!(pool.worker_count(), 2);
/// ```
///
/// # Dropping
///
/// A builder holds only settings: dropped without [`build`](Self::build), it makes no pool
/// and starts nothing.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct SmartAioPoolBuilder {
    limits: LimitsConfig,
    max_concurrency: usize,
    max_queue_size: usize,
    min_workers: usize,
    idle_timeout: Duration,
    auto_shutdown: bool,
    name: Option<String>,
    process_wide: bool,
    rerun_interrupted: bool,
    on_panic: OnPanic,
}

impl Default for SmartAioPoolBuilder {
    fn default() -> Self {
        SmartAioPoolBuilder {
            max_concurrency: 100,
            max_queue_size: 1000,
            min_workers: 1,
            idle_timeout: Duration::from_secs(5),
            auto_shutdown: true,
            name: None,
            process_wide: true,
            on_panic: OnPanic::default(),
            rerun_interrupted: true,
            limits: LimitsConfig::default(),
        }
    }
}

impl SmartAioPoolBuilder {
    /// The most tasks that run at once (and the most workers). Default: 100.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n;
        self
    }

    /// The most tasks that wait in the queue; 0 means no waiting room (a submit waits for
    /// a free worker). Default: 1000.
    pub fn max_queue_size(mut self, n: usize) -> Self {
        self.max_queue_size = n;
        self
    }

    /// Workers kept even when idle. Default: 1.
    pub fn min_workers(mut self, n: usize) -> Self {
        self.min_workers = n;
        self
    }

    /// How long a worker beyond `min_workers` may stay idle before it retires.
    /// Default: 5 seconds. `Duration::MAX` keeps them (for the life of a process).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Whether the pool's tasks are finished automatically by [`smart_run`] and at process
    /// exit. Default: `true`.
    pub fn auto_shutdown(mut self, enabled: bool) -> Self {
        self.auto_shutdown = enabled;
        self
    }

    /// The pool's name, shown by `Debug`, [`SmartAioPool::name`] and the exit's warnings,
    /// and the `pool` field of its `tracing` spans and its metrics' `pool` label (with the
    /// features of those names). Default: `"SmartAioPool"`.
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
    /// use nb_aiopool::SmartAioPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let counter = seen.clone();
    /// let pool = SmartAioPool::builder()
    ///     .on_panic(move |id, err| {
    ///         eprintln!("task {id}: {err}");
    ///         counter.fetch_add(1, Ordering::Relaxed);
    ///     })
    ///     .build();
    /// pool.submit(|| async { panic!("boom") }).await.unwrap().detach();
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

    /// Whether [`shutdown_all_smart_aiopools`] reaches this pool. Default: `true`; say
    /// `false` for a pool owned by a library or a test (and `auto_shutdown` decides about
    /// [`smart_run`] and the exit hook).
    pub fn process_wide(mut self, enabled: bool) -> Self {
        self.process_wide = enabled;
        self
    }

    /// Whether a task *interrupted* mid-run by the end of its runtime (or by
    /// `std::process::exit`) is run again from its recipe. Default: `true` (at-least-once
    /// delivery). With `false`, a task that never started still runs (once), and an
    /// interrupted one is not run again: its handle resolves to
    /// [`CancelReason::RuntimeShutdown`](crate::CancelReason::RuntimeShutdown) and the exit
    /// hook prints how many were cut: by `process::exit`, and, in an `auto_shutdown` pool,
    /// by the end of their runtime before the exit (a plain `#[tokio::main]` returning
    /// while they ran; also for a pool dropped since). Use it for tasks that must not run
    /// twice (sending an email).
    pub fn rerun_interrupted(mut self, enabled: bool) -> Self {
        self.rerun_interrupted = enabled;
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
    /// [`shutdown_timeout`](SmartAioPool::shutdown_timeout)); [`smart_run`] does not wait
    /// for them, and at the process exit they are cancelled (their handles say
    /// `RuntimeShutdown`) with a warning on stderr, rather than keep the process from
    /// exiting. A pool that neither the exit nor
    /// [`shutdown_all_smart_aiopools`] would run (`auto_shutdown(false)` and
    /// `process_wide(false)`) cancels them as a `CommonAioPool` does: once its last handle
    /// is dropped and nothing else of it is left to run (see the pool's "Dropping").
    ///
    /// # Panics
    ///
    /// `build` panics if `count` is 0 or `per` is zero. The pool's tasks need a runtime with
    /// time enabled: `build` inside a runtime without tokio's time driver panics, and so
    /// does a submit from one (before anything is taken: its task is dropped, never
    /// accepted). A submit future that waited for room on one runtime and is finished on
    /// one without timers is refused with
    /// [`NoRuntime`](crate::SubmitErrorKind::NoRuntime), its task handed back. A `wait`
    /// (or `shutdown`, `shutdown_timeout`) of the pool from a runtime the pool does not
    /// know yet does not offer it to the tasks (a wait makes no timer to find out whether
    /// it has timers); without a rate limit it does. So re-runs stranded by the end of
    /// the pool's runtimes wait there for good; [`smart_run`] and
    /// [`shutdown_all_smart_aiopools`] do offer their runtime (they check it for timers
    /// first), and so does awaiting one of the pool's tasks.
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
    /// behind them in the queue; they do take room in it (a queue full of one key's tasks
    /// makes submits of every key wait). Default: no per-key limit (keys are ignored).
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

    /// Creates the pool. No runtime is needed; it starts on first use.
    ///
    /// # Panics
    ///
    /// Panics if `max_concurrency` is 0, if `min_workers` exceeds `max_concurrency`, or if
    /// `max_concurrency + max_queue_size` exceeds `tokio::sync::Semaphore::MAX_PERMITS`.
    #[track_caller]
    pub fn build(self) -> SmartAioPool {
        let name: Arc<str> = self.name.as_deref().unwrap_or("SmartAioPool").into();
        let config = Config {
            name: "SmartAioPool",
            max_concurrency: self.max_concurrency,
            max_queue_size: self.max_queue_size,
            elastic: Some(ElasticConfig {
                min_workers: self.min_workers,
                idle_timeout: self.idle_timeout,
            }),
            rerun: self.rerun_interrupted,
            limits: checked(self.limits),
            label: name.clone(),
            on_panic: self.on_panic,
        };
        // A pool without re-runs whose runs a runtime's end cut off is reported at the
        // exit also once it is gone (see `warn_cut_before_exit`).
        let cut_told = Arc::new(AtomicU64::new(0));
        let on_drop = if self.auto_shutdown && !self.rerun_interrupted {
            let name = name.clone();
            let told = Arc::clone(&cut_told);
            Some(
                Box::new(move |figures: Figures| remember_cut(&name, figures.lost, &told))
                    as crate::engine::DropHook,
            )
        } else if !self.auto_shutdown && !self.process_wide {
            // Neither the exit nor `shutdown_all_smart_aiopools` runs it: what its drop
            // cancels (tasks a never-ending rate window held back, re-runs stranded by the
            // end of its runtimes) is reported at the exit as a CommonAioPool's is.
            Some(super::registry::drop_hook(
                super::registry::PoolKind::Smart,
                name.clone(),
                false,
            ))
        } else {
            None
        };
        let inner = Arc::new(Inner {
            core: Core::new(config, on_drop),
            auto_shutdown: self.auto_shutdown,
            name,
            process_wide: self.process_wide,
            handles: AtomicUsize::new(1),
            cut_told,
        });
        forget_finished_orphans();
        smart_pools().pools.insert(key(&inner), Arc::clone(&inner));
        crate::exit::at_exit(finish_at_exit);
        SmartAioPool { inner }
    }
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

    /// Stops intake and waits until every queued and running task has finished; the pool
    /// then leaves the process-wide list. Idempotent.
    ///
    /// Called from inside a task of this pool, it does not wait for that task (see
    /// [`wait`](Self::wait)); the pool then stays in the process-wide list until that task
    /// has finished too, so [`smart_run`] and the exit hook still cover it.
    ///
    /// The returned future is `'static`, as the other pools' are (it holds a handle of the
    /// pool until it ends): it can be spawned, `tokio::spawn(pool.shutdown())`.
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
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        // Not an `async fn`: intake closes at the call, not at the first poll. The future
        // holds a handle of its own (so it is `'static`, as the other pools' are, and
        // keeps the pool open to the forget at its end as the borrow it replaced did).
        let wait = self.inner.core.engine.shutdown();
        let pool = self.clone();
        async move {
            wait.await;
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

    /// Returns `true` once the pool is shut down (it accepts no more tasks).
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
    /// [`CancelReason::CancelAll`](crate::CancelReason::CancelAll). The pool stays open.
    /// Returns once they are all gone.
    ///
    /// Called from inside a task of this pool, that task is not spared (unlike with
    /// [`shutdown_timeout`](Self::shutdown_timeout)): it is cancelled too, at its next
    /// `.await`, so if the wait has any other task to wait for, the call never returns
    /// there (the task's handle says `CancelAll`).
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
        super::stream::unordered(&self.kept(), inputs, f)
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
        super::stream::ordered(&self.kept(), inputs, f)
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

impl fmt::Debug for SmartAioPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmartAioPool")
            .field("name", &self.name())
            .field("max_concurrency", &self.max_concurrency())
            .field("workers", &self.worker_count())
            .field("auto_shutdown", &self.inner.auto_shutdown)
            .field("stats", &self.stats())
            .finish()
    }
}

// ----- process-wide functions -------------------------------------------------------------

/// Closes and forgets `pool` if nothing can submit to it any more and it has no
/// unfinished task: it has no handle left, and nothing is queued or running in it (in a
/// pool that neither the exit nor `shutdown_all_smart_aiopools` runs, nothing that anyone
/// may still see to its end: see [`Engine::owes_work`](crate::engine::Engine::owes_work);
/// dropping the pool cancels the rest). A pool kept only by the list would otherwise hold
/// its engine, its idle slot tasks and the handles of the runtimes it served (their file
/// descriptors) until the process ends. Returns `true` if the pool is not listed (any
/// more).
fn forget_if_unused(pool: &Arc<Inner>) -> bool {
    let forgotten = {
        let mut listed = smart_pools();
        let key = key(pool);
        if !listed.pools.contains_key(&key) {
            return true;
        }
        if pool.handles.load(Ordering::Acquire) > 0 {
            return false;
        }
        // A pool that neither the exit nor `shutdown_all_smart_aiopools` will run, with no
        // handle left, keeps only the tasks someone may still see to their end: not those
        // stranded with their handles gone, or held back for ever by a rate window.
        // Dropping it cancels them.
        let owes = if pool.auto_shutdown || pool.process_wide {
            pool.core.engine.stats().unfinished() > 0
        } else {
            pool.core.engine.owes_work()
        };
        if owes {
            return false;
        }
        listed.pools.remove(&key)
    };
    // Outside the list's lock: closing wakes the idle slot tasks, which then exit.
    pool.core.engine.close();
    // Off the list, and maybe still held (a `wait_auto_pools` list, a pending
    // `shutdown_all_smart_aiopools`) when the process exits: its cut runs are remembered
    // now, as a shutdown's are.
    remember_cut_of(pool);
    drop(forgotten);
    true
}

/// After a shutdown's wait: `pool` leaves the process-wide list, unless a task of it is
/// still unfinished (the task that called the shutdown, which the wait leaves out, or the
/// one its deadline spared): then it stays listed, so that `smart_run` and the exit hook
/// still cover that task, until its last handle goes and its tasks have finished (as for
/// any pool dropped busy).
fn forget_shut_down(pool: &Arc<Inner>) {
    let forgotten = {
        let mut listed = smart_pools();
        if pool.core.engine.stats().unfinished() > 0 {
            return;
        }
        listed.pools.remove(&key(pool))
    };
    // Out of the list, and maybe held until the exit (a `static`, `process::exit`): its
    // cut runs are remembered now (closed, with nothing unfinished: no more are cut).
    if forgotten.is_some() {
        remember_cut_of(pool);
    }
    drop(forgotten);
}

/// The last handle of `pool` went while it had unfinished tasks: it is forgotten once
/// they have finished, by a task of a runtime the pool knows; by a later `build` if that
/// task cannot run (no runtime, or it is dropped first), finds the pool still busy, or is
/// on a current-thread runtime (which may never be driven again).
fn orphaned(pool: &Arc<Inner>) {
    let weak = Arc::downgrade(pool);
    let watcher = weak.clone();
    // A pool that neither the exit nor `shutdown_all_smart_aiopools` runs is forgotten
    // once it owes no work (tasks held back for ever left out).
    let owed_only = !(pool.auto_shutdown || pool.process_wide);
    let driven = pool.core.engine.when_done(owed_only, move |done| {
        let Some(pool) = watcher.upgrade() else {
            return;
        };
        if !(done && forget_if_unused(&pool)) {
            smart_pools().orphans.push(watcher);
        }
    });
    if !driven {
        // Also for a later `build`, whichever comes first (a forgotten pool's entry is
        // dropped there).
        let mut listed = smart_pools();
        listed.orphans.retain(|w| w.strong_count() > 0);
        if !listed.orphans.iter().any(|w| w.ptr_eq(&weak)) {
            listed.orphans.push(weak);
        }
    }
}

/// Forgets the pools dropped while busy that no task watches and whose tasks have
/// finished since; keeps the others for a later call.
fn forget_finished_orphans() {
    let orphans = std::mem::take(&mut smart_pools().orphans);
    if orphans.is_empty() {
        return;
    }
    let left: Vec<Weak<Inner>> = orphans
        .into_iter()
        .filter(|w| w.upgrade().is_some_and(|p| !forget_if_unused(&p)))
        .collect();
    smart_pools().orphans.extend(left);
}

/// Runs of `auto_shutdown` pools built with `rerun_interrupted(false)` that the end of
/// their runtime cut off (a plain `#[tokio::main]` returning while they ran), counted for
/// pools dropped before the exit: one entry per name. Live pools are counted at the exit.
static CUT_BEFORE_EXIT: Mutex<Vec<(Arc<str>, u64)>> = Mutex::new(Vec::new());

/// A pool without re-runs, shut down or dropped, has lost `lost` runs to runtimes' ends,
/// of which `told` are remembered already: remembers the rest. Under the list's lock, as
/// [`warn_cut_before_exit`] reads the live pools' counts, so that a shutdown racing the
/// exit's report is counted once.
fn remember_cut(name: &Arc<str>, lost: u64, told: &AtomicU64) {
    note_cut(&mut cut_before_exit(), name, lost, told);
}

/// With [`CUT_BEFORE_EXIT`] locked (`cut`): adds what of `lost` was not told yet (`told`
/// says how many were), and counts all of it told.
fn note_cut(cut: &mut Vec<(Arc<str>, u64)>, name: &Arc<str>, lost: u64, told: &AtomicU64) {
    // `lost` only grows, and is read after the count was last swapped in.
    let new = lost.saturating_sub(told.swap(lost, Ordering::AcqRel));
    if new > 0 {
        add_cut(cut, name, new);
    }
}

/// [`remember_cut`] for a pool taken off the process-wide list while it may still be held
/// at the exit: its runs cut so far (an `auto_shutdown` pool without re-runs).
fn remember_cut_of(pool: &Inner) {
    if pool.auto_shutdown && !pool.core.engine.reruns() {
        remember_cut(&pool.name, pool.core.engine.figures().lost, &pool.cut_told);
    }
}

/// [`CUT_BEFORE_EXIT`], locked.
fn cut_before_exit() -> MutexGuard<'static, Vec<(Arc<str>, u64)>> {
    CUT_BEFORE_EXIT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds `lost` runs cut to `name`'s entry (one per name).
fn add_cut(cut: &mut Vec<(Arc<str>, u64)>, name: &Arc<str>, lost: u64) {
    match cut.iter_mut().find(|(n, _)| n == name) {
        Some((_, n)) => *n += lost,
        None => cut.push((name.clone(), lost)),
    }
}

/// At the exit, before the take-over: the runs of `auto_shutdown` pools without re-runs
/// that a runtime's end cut off before the exit (the take-over reports those it cuts
/// itself), which no one would hear of otherwise. Such a pool's `lost` count holds only
/// those until the take-over: its queued jobs never lose their runtime (they run on any).
fn warn_cut_before_exit(pools: &[Arc<Inner>]) {
    let cut = {
        let mut remembered = cut_before_exit();
        // Read under the lock: a pool shut down meanwhile has either remembered its runs
        // (and `cut_told` says so) or will remember them after this takes the list.
        for p in pools.iter().filter(|p| !p.core.engine.reruns()) {
            note_cut(
                &mut remembered,
                &p.name,
                p.core.engine.figures().lost,
                &p.cut_told,
            );
        }
        std::mem::take(&mut *remembered)
    };
    for (name, n) in cut {
        warn_stderr!(
            "nb_aiopool: warning: {n} task(s) of SmartAioPool {name:?} were interrupted by \
             the end of their runtime (main returned, or the runtime was dropped) and not \
             run again (rerun_interrupted(false)); their handles say RuntimeShutdown"
        );
    }
}

fn auto_pools() -> Vec<Arc<Inner>> {
    smart_pools()
        .pools
        .values()
        .filter(|p| p.auto_shutdown)
        .cloned()
        .collect()
}

/// Waits until no `auto_shutdown` pool has unfinished tasks (tasks may submit more tasks,
/// to the same or other pools, so it checks again after each round).
///
/// With `held_back_too` false (`smart_run`), the tasks a `rate_limit` window that never
/// reopens holds back for ever are left out: they would never finish, and the exit
/// cancels them with a warning rather than keep the process from ending. The exit's own
/// wait counts them (its take-over cancels them as the window fills).
async fn wait_auto_pools(held_back_too: bool) {
    loop {
        // The runtime this waits on (`smart_run`'s, the exit's: both have timers) is
        // asked once, so that the waits below offer it also to rate-limited pools that
        // do not know it yet (one stranded by the end of its runtimes would otherwise
        // never start its re-runs, and this would wait for ever).
        // Only for a rate-limited pool: elsewhere no timer is made (finding 68).
        let pools = auto_pools();
        if pools.iter().any(|p| p.core.engine.needs_timers()) {
            crate::engine::runtimes::ask_current_for_timers();
        }
        if held_back_too {
            join_all(pools.iter().map(|p| p.core.engine.wait_all())).await;
        } else {
            join_all(pools.iter().map(|p| wait_but_held_back(p))).await;
        }
        if pools
            .iter()
            .all(|p| p.core.engine.stats().unfinished() <= held_back(p, held_back_too))
        {
            return;
        }
    }
}

/// The tasks of `pool` that a rate window that never reopens holds back for ever, or 0
/// if they are waited for too.
fn held_back(pool: &Inner, held_back_too: bool) -> usize {
    if held_back_too || !pool.core.engine.needs_timers() {
        return 0;
    }
    pool.core.engine.figures().held_back
}

/// How often [`wait_but_held_back`] looks again while tasks are held back for ever: the
/// wait for every task would not end (as the serving thread's, `SERVE_RECHECK`).
const HELD_BACK_RECHECK: Duration = Duration::from_millis(50);

/// Waits until `pool` has no task queued or running but those a rate window that never
/// reopens holds back for ever.
async fn wait_but_held_back(pool: &Inner) {
    loop {
        let held = held_back(pool, false);
        if held == 0 {
            pool.core.engine.wait_all().await;
            return;
        }
        if pool.core.engine.stats().unfinished() <= held {
            return;
        }
        let _ = tokio::time::timeout(HELD_BACK_RECHECK, pool.core.engine.wait_all()).await;
    }
}

/// Runs `fut` to completion on a new multi-thread tokio runtime, then waits until every
/// [`SmartAioPool`] (with `auto_shutdown`) has finished all its tasks, and returns `fut`'s
/// output. Tasks that a [`rate_limit`](SmartAioPoolBuilder::rate_limit) window that never
/// ends holds back are not waited for (they would never finish): the process exit then
/// cancels them, with a warning, as when `main` returns.
///
/// It waits for the pools also when `fut` panicked, then resumes the panic. The seed's
/// `smart_run(main())`.
///
/// # Panics
///
/// Panics if the runtime cannot be built, if called from a thread that drives async
/// tasks (a tokio worker thread, or inside `block_on`: the message says what to do
/// instead, and points at the caller's line), or with `fut`'s own panic. Plain threads,
/// `spawn_blocking` threads and threads that only entered a runtime (`Handle::enter`)
/// may call it.
///
/// # Examples
///
/// ```
/// use nb_aiopool::{smart_run, SmartAioPool};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// let done = Arc::new(AtomicUsize::new(0));
/// let pool = SmartAioPool::new(10);
/// let counter = done.clone();
/// smart_run(async move {
///     for _ in 0..3 {
///         let counter = counter.clone();
///         // Submitted and never awaited:
///         pool.submit(move || {
///             let counter = counter.clone();
///             async move {
///                 tokio::time::sleep(std::time::Duration::from_millis(10)).await;
///                 counter.fetch_add(1, Ordering::SeqCst);
///             }
///         }).await.unwrap().detach();
///     }
/// });
/// assert_eq!(done.load(Ordering::SeqCst), 3);
/// ```
#[track_caller]
pub fn smart_run<F: Future>(fut: F) -> F::Output {
    crate::blocking::assert_not_async("smart_run", "shutdown_all_smart_aiopools().await");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("nb_aiopool: smart_run could not build a tokio runtime");
    let out = rt.block_on(async {
        let out = AssertUnwindSafe(fut).catch_unwind().await;
        wait_auto_pools(false).await;
        out
    });
    drop(rt);
    match out {
        Ok(v) => v,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// Shuts down every [`SmartAioPool`] of the process built with `process_wide(true)` (the
/// default; whatever its `auto_shutdown`): stops their intake, for good, and waits for all
/// their tasks. Pools owned by libraries and tests should say `process_wide(false)` and be
/// shut down with their own [`shutdown`](SmartAioPool::shutdown).
///
/// Called from inside a task of one of these pools, it does not wait for that task (as
/// [`SmartAioPool::wait`]); that pool stays in the process-wide list until the task has
/// finished too, so [`smart_run`] and the exit hook still cover it. Tasks that a
/// [`rate_limit`](SmartAioPoolBuilder::rate_limit) window that never ends holds back are
/// waited for, for good, as by [`SmartAioPool::shutdown`]: before a signal's
/// `process::exit`, use `shutdown_all_smart_aiopools` under a timeout for such pools.
///
/// It offers its runtime to a rate-limited pool whose re-runs are stranded (its runtimes
/// ended), checking first that the runtime has timers by making one. On a runtime built
/// without timers that check is tokio's "timers are disabled" panic, caught (a panic hook
/// the program set still sees it, and under `panic = "abort"` the process aborts); it is
/// made only when such a stranded rate-limited pool exists.
///
/// Use it for a graceful stop on a signal, for example:
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() {
/// tokio::spawn(async {
///     tokio::signal::ctrl_c().await.unwrap();
///     nb_aiopool::shutdown_all_smart_aiopools().await;
///     std::process::exit(130);
/// });
/// # }
/// ```
///
/// # Cancel safety
///
/// Cancel safe: the pools are shut down when it is called; dropping the future (even
/// unpolled) stops the wait, and the pools stay shut down.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = nb_aiopool::SmartAioPool::new(4);
/// pool.submit(|| async {}).await.unwrap().detach();
/// nb_aiopool::shutdown_all_smart_aiopools().await;
/// assert_eq!(pool.pending_count(), 0);
/// # }
/// ```
pub fn shutdown_all_smart_aiopools() -> impl Future<Output = ()> + Send + 'static {
    // Not an `async fn`: the pools close at the call, not at the first poll.
    let pools: Vec<_> = smart_pools()
        .pools
        .values()
        .filter(|p| p.process_wide)
        .cloned()
        .collect();
    let waits = join_all(
        pools
            .iter()
            .map(|p| p.core.engine.shutdown())
            .collect::<Vec<_>>(),
    );
    async move {
        // As `wait_auto_pools`: the waits offer this runtime to rate-limited pools too,
        // but only to a stranded one (the one that needs it): this may run on a runtime
        // without timers (a signal thread's), where the probe is tokio's panic.
        if pools.iter().any(|p| p.core.engine.needs_timer_probe()) {
            crate::engine::runtimes::ask_current_for_timers();
        }
        waits.await;
        for p in &pools {
            forget_shut_down(p);
        }
        drop(pools);
        forget_finished_orphans();
    }
}

/// The at-exit path: runs every unfinished task of the `auto_shutdown` pools on a fresh
/// runtime, on a fresh thread (the exiting thread may be inside a runtime, and its
/// thread-locals may already be gone).
pub(crate) fn finish_at_exit() {
    // The thread running the exit hooks: the one that called `exit` (or returned from
    // `main`). A task it is polling will never return.
    let exiting = crate::engine::thread_token();
    // Every pool is taken over, also those with nothing unfinished now: a plain thread
    // may submit to one while the exit runs.
    let pools: Vec<_> = auto_pools();
    warn_cut_before_exit(&pools);
    if pools
        .iter()
        .all(|p| p.core.engine.stats().unfinished() == 0)
    {
        return;
    }
    let worker = std::thread::Builder::new()
        .name("nb_aiopool-exit".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("nb_aiopool: could not build the at-exit runtime");
            rt.block_on(async {
                let handle = tokio::runtime::Handle::current();
                for p in &pools {
                    let report = p.core.engine.take_over(handle.clone(), exiting);
                    if report.cut > 0 {
                        warn_stderr!(
                            "nb_aiopool: warning: {} task(s) of SmartAioPool {:?} were \
                             interrupted by the process exit and not run again \
                             (rerun_interrupted(false)); their handles say RuntimeShutdown",
                            report.cut,
                            p.name
                        );
                    }
                    if report.stuck > 0 {
                        warn_stderr!(
                            "nb_aiopool: warning: {} task(s) of SmartAioPool {:?} were still \
                             running at the process exit (the task that called exit, or one \
                             busy in a single poll for over {:?}) and were not run again; \
                             their handles say RuntimeShutdown",
                            report.stuck,
                            p.name,
                            crate::engine::EXIT_POLL_WAIT
                        );
                    }
                }
                // Only now, with every pool taken over, their jobs start (on this runtime):
                // a task started earlier could submit into a pool not yet taken over, whose
                // take-over would then cut or re-run it as interrupted.
                for p in &pools {
                    p.core.engine.exit_start();
                }
                wait_auto_pools(true).await;
                // Read once every task has ended: a window can fill only after the
                // take-over (a job it started spent the last start), and the jobs behind
                // are cancelled then.
                for p in &pools {
                    let never_started = p.core.engine.never_started();
                    if never_started > 0 {
                        warn_stderr!(
                            "nb_aiopool: warning: {} task(s) of SmartAioPool {:?} were never \
                             started: its rate_limit window never ends (per = Duration::MAX) \
                             and allows no more starts; their handles say RuntimeShutdown",
                            never_started,
                            p.name
                        );
                    }
                }
            });
        });
    match worker.map(|t| t.join()) {
        Ok(Ok(())) => {}
        _ => warn_stderr!("nb_aiopool: the at-exit run of SmartAioPool tasks failed"),
    }
}

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
                .is_some_and(|p| super::smart_pools().pools.contains_key(&super::key(&p)))
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
