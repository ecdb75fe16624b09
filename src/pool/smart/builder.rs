//! Building a [`SmartAioPool`]: [`SmartAioPoolBuilder`].

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Config, ElasticConfig, Figures, LimitsConfig};
use crate::observe::OnPanic;
use crate::pool::core::{checked, Core};

use super::{Inner, SmartAioPool};

use super::process_wide::{self, remember_cut};

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

// Settings only, and the `on_panic` callback, which the pool calls inside `catch_unwind`
// (see the pool's `UnwindSafe`).
impl std::panic::UnwindSafe for SmartAioPoolBuilder {}
impl std::panic::RefUnwindSafe for SmartAioPoolBuilder {}

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
    ///
    /// [`smart_run`]: crate::smart_run
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
    ///
    /// [`shutdown_all_smart_aiopools`]: crate::shutdown_all_smart_aiopools
    /// [`smart_run`]: crate::smart_run
    pub fn process_wide(mut self, enabled: bool) -> Self {
        self.process_wide = enabled;
        self
    }

    /// Whether a task *interrupted* mid-run by the end of its runtime (or by
    /// `std::process::exit`) is run again from its recipe. Default: `true` (at-least-once
    /// delivery). With `false`, a task that never started still runs (once), and an
    /// interrupted one is not run again: its handle resolves to
    /// [`CancelReason::RuntimeShutdown`](crate::CancelReason::RuntimeShutdown) (unless an
    /// abort, a `cancel_all` or a shutdown's deadline covered it first: then that reason)
    /// and the exit
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
    /// [`shutdown_timeout`](crate::SmartAioPool::shutdown_timeout)); [`smart_run`] does not wait
    /// for them, and at the process exit they are cancelled (their handles say
    /// `RuntimeShutdown`) with a warning on stderr, rather than keep the process from
    /// exiting. A pool that neither the exit nor
    /// [`shutdown_all_smart_aiopools`] would run (`auto_shutdown(false)` and
    /// `process_wide(false)`) cancels them as a `CommonAioPool` does: once its last handle
    /// is dropped and nothing else of it is left to run (see the pool's "Dropping").
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
    /// (or `shutdown`, `shutdown_timeout`) of the pool from a runtime the pool does not
    /// know yet does not offer it to the tasks (a wait makes no timer to find out whether
    /// it has timers); without a rate limit it does. So re-runs stranded by the end of
    /// the pool's runtimes wait there for good; [`smart_run`] and
    /// [`shutdown_all_smart_aiopools`] do offer their runtime (they check it for timers
    /// first), and so does awaiting one of the pool's tasks.
    ///
    /// [`shutdown_all_smart_aiopools`]: crate::shutdown_all_smart_aiopools
    /// [`smart_run`]: crate::smart_run
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
            Some(crate::pool::registry::drop_hook(
                crate::pool::registry::PoolKind::Smart,
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
        process_wide::list(&inner);
        SmartAioPool { inner }
    }
}
