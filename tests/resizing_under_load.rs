//! A review of resizing a pool while it works (2026-12-06): `set_max_concurrency` of the
//! three pools (and SmartAioPool's elastic workers) racing with submits of every kind,
//! with tasks ending, panicking, being aborted, with `cancel_all` and shutdowns, with
//! flow control, and across runtimes. Findings 337 and 338 of RELIABILITY.md; the tests
//! that are not findings pin behaviour found sound.

// Blocks and closures here hand tasks' handles out, to be awaited later.
#![allow(clippy::async_yields_async)]

#[cfg(feature = "metrics")]
mod metric_figures;
mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{
    CommonAioPool, NoQueueAioPool, PoolStats, SmartAioPool, SubmitErrorKind, SubmitOptions,
    TaskHandle, TrySubmitErrorKind,
};
use support::{
    current_thread, multi_thread_of, on_thread_within, panic_message, until, within, Gauge,
};

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The panics of this file's tasks, kept off the output.
const PANICS: &[&str] = &["resizing_under_load: a task panics"];

/// A gate tasks wait on; each `open(n)` lets `n` more through.
#[derive(Clone)]
struct Gate(Arc<tokio::sync::Semaphore>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }
}

impl Gate {
    async fn pass(&self) {
        self.0.acquire().await.unwrap().forget();
    }
    fn open(&self, n: usize) {
        self.0.add_permits(n);
    }
}

/// A task that counts itself in `meter` while it runs and ends when `gate` lets it.
fn gated(meter: &Gauge, gate: &Gate) -> impl Fn() -> BoxFut<()> + Send + Sync + Clone + 'static {
    let (meter, gate) = (meter.clone(), gate.clone());
    move || {
        let (meter, gate) = (meter.clone(), gate.clone());
        Box::pin(async move {
            let _inside = meter.enter();
            gate.pass().await;
        })
    }
}

#[derive(Clone)]
enum Pool {
    Common(CommonAioPool),
    NoQueue(NoQueueAioPool),
    Smart(SmartAioPool),
}

impl Pool {
    /// The three pools with `c` slots and `q` places in the queue (NoQueue: none).
    fn all(c: usize, q: usize) -> Vec<Pool> {
        Self::all_with(c, q, |b| b, |b| b, |b| b)
    }

    fn all_with(
        c: usize,
        q: usize,
        common: impl FnOnce(nb_aiopool::CommonAioPoolBuilder) -> nb_aiopool::CommonAioPoolBuilder,
        no_queue: impl FnOnce(nb_aiopool::NoQueueAioPoolBuilder) -> nb_aiopool::NoQueueAioPoolBuilder,
        smart: impl FnOnce(nb_aiopool::SmartAioPoolBuilder) -> nb_aiopool::SmartAioPoolBuilder,
    ) -> Vec<Pool> {
        vec![
            Pool::Common(common(support::common_builder(c, q)).build()),
            Pool::NoQueue(
                no_queue(
                    NoQueueAioPool::builder()
                        .max_concurrency(c)
                        .process_wide(false),
                )
                .build(),
            ),
            Pool::Smart(
                smart(
                    SmartAioPool::builder()
                        .max_concurrency(c)
                        .max_queue_size(q)
                        .process_wide(false)
                        .auto_shutdown(false),
                )
                .build(),
            ),
        ]
    }

    fn name(&self) -> &'static str {
        match self {
            Pool::Common(_) => "CommonAioPool",
            Pool::NoQueue(_) => "NoQueueAioPool",
            Pool::Smart(_) => "SmartAioPool",
        }
    }

    /// How many tasks the pool holds at once (`c` + `q`; NoQueue: `c`).
    fn room(&self, c: usize, q: usize) -> usize {
        match self {
            Pool::NoQueue(_) => c,
            _ => c + q,
        }
    }

    fn submit_with<F>(
        &self,
        make: F,
        opts: SubmitOptions,
    ) -> BoxFut<Result<TaskHandle<()>, SubmitErrorKind>>
    where
        F: Fn() -> BoxFut<()> + Send + Sync + 'static,
    {
        match self.clone() {
            Pool::Common(p) => {
                Box::pin(async move { p.submit_with(make(), opts).await.map_err(|e| e.kind()) })
            }
            Pool::NoQueue(p) => {
                Box::pin(async move { p.submit_with(make(), opts).await.map_err(|e| e.kind()) })
            }
            Pool::Smart(p) => {
                Box::pin(async move { p.submit_with(make, opts).await.map_err(|e| e.kind()) })
            }
        }
    }

    fn submit<F>(&self, make: F) -> BoxFut<Result<TaskHandle<()>, SubmitErrorKind>>
    where
        F: Fn() -> BoxFut<()> + Send + Sync + 'static,
    {
        self.submit_with(make, SubmitOptions::new())
    }

    fn try_submit<F>(&self, make: F) -> Result<TaskHandle<()>, TrySubmitErrorKind>
    where
        F: Fn() -> BoxFut<()> + Send + Sync + 'static,
    {
        match self {
            Pool::Common(p) => p.try_submit(make()).map_err(|e| e.kind()),
            Pool::NoQueue(p) => p.try_submit(make()).map_err(|e| e.kind()),
            Pool::Smart(p) => p.try_submit(make).map_err(|e| e.kind()),
        }
    }

    fn blocking_submit<F>(&self, make: F) -> Result<TaskHandle<()>, SubmitErrorKind>
    where
        F: Fn() -> BoxFut<()> + Send + Sync + 'static,
    {
        match self {
            Pool::Common(p) => p.blocking_submit(make()).map_err(|e| e.kind()),
            Pool::NoQueue(p) => p.blocking_submit(make()).map_err(|e| e.kind()),
            Pool::Smart(p) => p.blocking_submit(make).map_err(|e| e.kind()),
        }
    }

    #[track_caller]
    fn set(&self, n: usize) {
        match self {
            Pool::Common(p) => p.set_max_concurrency(n),
            Pool::NoQueue(p) => p.set_max_concurrency(n),
            Pool::Smart(p) => p.set_max_concurrency(n),
        }
    }

    fn max_concurrency(&self) -> usize {
        match self {
            Pool::Common(p) => p.max_concurrency(),
            Pool::NoQueue(p) => p.max_concurrency(),
            Pool::Smart(p) => p.max_concurrency(),
        }
    }

    fn stats(&self) -> PoolStats {
        match self {
            Pool::Common(p) => p.stats(),
            Pool::NoQueue(p) => p.stats(),
            Pool::Smart(p) => p.stats(),
        }
    }

    fn shutdown(&self) -> BoxFut<()> {
        match self.clone() {
            Pool::Common(p) => Box::pin(async move { p.shutdown().await }),
            Pool::NoQueue(p) => Box::pin(async move { p.shutdown().await }),
            Pool::Smart(p) => Box::pin(async move { p.shutdown().await }),
        }
    }

    fn cancel_all(&self) -> BoxFut<()> {
        match self {
            Pool::Common(p) => Box::pin(p.cancel_all()),
            Pool::NoQueue(p) => Box::pin(p.cancel_all()),
            Pool::Smart(p) => Box::pin(p.cancel_all()),
        }
    }

    fn wait(&self) -> BoxFut<()> {
        match self.clone() {
            Pool::Common(p) => Box::pin(async move { p.wait().await }),
            Pool::NoQueue(p) => Box::pin(async move { p.wait().await }),
            Pool::Smart(p) => Box::pin(async move { p.wait().await }),
        }
    }
}

/// Yields (paused or not) until `cond` holds, for at most a few seconds of real time.
async fn settle_until(what: &str, cond: impl Fn() -> bool) {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            std::time::Instant::now() < end,
            "timed out (5 s) waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Fills `pool` (of `c` slots and `q` places) with gated tasks: `c` running, the rest
/// queued (NoQueue: `c` running only). Returns their handles.
async fn fill(pool: &Pool, c: usize, q: usize, meter: &Gauge, gate: &Gate) -> Vec<TaskHandle<()>> {
    let mut handles = Vec::new();
    for _ in 0..pool.room(c, q) {
        handles.push(
            pool.try_submit(gated(meter, gate))
                .expect("room in the pool"),
        );
    }
    settle_until("the first tasks to start", || meter.now() == c).await;
    handles
}

// ---------------------------------------------------------------------------------------
// Shrinking under running tasks
// ---------------------------------------------------------------------------------------

/// Pinned: a shrink below the running tasks lets them finish; once the excess has ended
/// no more than the new size run at once, `stats().running` included, and the queued
/// tasks all run; a grow back starts queued tasks at once.
#[test]
fn a_shrink_below_the_running_tasks_is_kept_once_the_excess_ended_and_a_grow_starts_at_once() {
    for pool in Pool::all(4, 6) {
        let name = pool.name();
        current_thread().block_on(async {
            let (meter, gate) = (Gauge::default(), Gate::default());
            let mut handles = fill(&pool, 4, 6, &meter, &gate).await;
            pool.set(2);
            assert_eq!(pool.max_concurrency(), 2, "{name}");
            // Nothing running is stopped.
            tokio::task::yield_now().await;
            assert_eq!(meter.now(), 4, "{name}: a shrink stopped running tasks");
            assert_eq!(pool.stats().running, 4, "{name}: stats after the shrink");
            // One ends: 3 left, above 2: nothing starts.
            gate.open(1);
            settle_until("one task to end", || pool.stats().running == 3).await;
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            assert_eq!(meter.now(), 3, "{name}: a task started above the new size");
            gate.open(1);
            settle_until("the excess to end", || {
                meter.now() <= 2 && pool.stats().running <= 2
            })
            .await;
            meter.reset_max();
            // Grow back while tasks are queued: they start at once.
            if !matches!(pool, Pool::NoQueue(_)) {
                pool.set(5);
                settle_until("a grow to start queued tasks", || meter.now() == 5).await;
                assert_eq!(pool.stats().running, 5, "{name}");
                pool.set(2);
                meter.reset_max();
            }
            // More tasks through the shrunk pool: never above 2 once the excess ended.
            gate.open(3);
            settle_until("the excess to end", || meter.now() <= 2).await;
            meter.reset_max();
            for _ in 0..6 {
                handles.push(
                    within("a submit", pool.submit(gated(&meter, &gate)))
                        .await
                        .unwrap(),
                );
                gate.open(1);
            }
            gate.open(100);
            for h in handles {
                within("a task", h).await.unwrap();
            }
            assert!(
                meter.max() <= 2,
                "{name}: {} ran at once after a shrink to 2",
                meter.max()
            );
            let s = pool.stats();
            assert_eq!(
                (s.running, s.queued, s.completed),
                (0, 0, s.submitted),
                "{name}: {s:?}"
            );
            within("shutdown", pool.shutdown()).await;
        });
    }
}

/// Pinned: a shrink to 0 panics with a message that names the call (as the docs say), and
/// leaves the pool as it was; so does a size above the crate's largest. A size at the
/// largest is taken and costs nothing (no worker is made for it).
#[test]
fn bad_sizes_panic_with_a_clear_message_and_leave_the_pool_as_it_was() {
    let max = tokio::sync::Semaphore::MAX_PERMITS;
    for pool in Pool::all(2, 3) {
        let name = pool.name();
        let queue = pool.room(2, 3) - 2;
        for (n, want) in [
            (0, "set_max_concurrency(0): a pool needs at least one slot"),
            (usize::MAX, "exceeds the largest supported size"),
            (max - queue + 1, "exceeds the largest supported size"),
        ] {
            let p = pool.clone();
            let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || p.set(n)))
                .expect_err(name);
            let msg = panic_message(&*err);
            assert!(
                msg.contains(want),
                "{name}: set_max_concurrency({n}) panicked with {msg:?}"
            );
            assert_eq!(pool.max_concurrency(), 2, "{name}: the pool changed");
        }
        current_thread().block_on(async {
            let (meter, gate) = (Gauge::default(), Gate::default());
            let _h = fill(&pool, 2, 3, &meter, &gate).await;
            assert_eq!(
                pool.try_submit(gated(&meter, &gate)).unwrap_err(),
                TrySubmitErrorKind::Full,
                "{name}"
            );
            // The largest size: every queued task starts at once.
            pool.set(max - queue);
            settle_until("queued tasks to start", || meter.now() == pool.room(2, 3)).await;
            if let Pool::Smart(p) = &pool {
                assert_eq!(p.busy_worker_count(), 5, "{name}");
                assert!(
                    p.worker_count() <= 5,
                    "{name}: {} workers",
                    p.worker_count()
                );
            }
            pool.set(1);
            gate.open(100);
            within("wait", pool.wait()).await;
            assert_eq!(pool.stats().completed, pool.room(2, 3) as u64, "{name}");
        });
    }
}

// ---------------------------------------------------------------------------------------
// Grows that let waiting submitters in
// ---------------------------------------------------------------------------------------

/// Pinned: a grow lets a `blocking_submit` waiting on a plain thread in at once, and its
/// task starts, while the tasks that filled the pool still run.
#[test]
fn a_grow_lets_a_waiting_blocking_submit_in_and_starts_its_task() {
    for pool in Pool::all(1, 0) {
        let name = pool.name();
        let rt = multi_thread_of(2);
        let (meter, gate) = (Gauge::default(), Gate::default());
        let _first = rt.block_on(fill(&pool, 1, 0, &meter, &gate));
        let started = Gauge::default();
        let (p, s) = (pool.clone(), started.clone());
        let thread = std::thread::spawn(move || {
            let s = s.clone();
            p.blocking_submit(move || {
                let s = s.clone();
                Box::pin(async move {
                    let _e = s.enter();
                    std::future::pending::<()>().await
                })
            })
        });
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(started.started(), 0, "{name}: started in a full pool");
        rt.block_on(async {
            pool.set(2);
            settle_until("the blocking submitter's task to start", || {
                started.started() == 1
            })
            .await;
        });
        let h = on_thread_within("the blocking submit", 5, move || thread.join().unwrap());
        let h = h.unwrap_or_else(|e| panic!("{name}: blocking_submit failed: {e:?}"));
        assert_eq!(meter.now(), 1, "{name}");
        h.abort();
        gate.open(10);
        rt.block_on(async { within("wait", pool.wait()).await });
    }
}

/// Pinned: `set_max_concurrency` called from a plain thread (no runtime) starts the
/// queued tasks at once, on the runtime that submitted them.
#[test]
fn a_grow_from_a_plain_thread_starts_queued_tasks() {
    for pool in Pool::all(1, 4) {
        if matches!(pool, Pool::NoQueue(_)) {
            continue;
        }
        let name = pool.name();
        let rt = multi_thread_of(2);
        let (meter, gate) = (Gauge::default(), Gate::default());
        let _h = rt.block_on(fill(&pool, 1, 4, &meter, &gate));
        let p = pool.clone();
        on_thread_within("set_max_concurrency", 5, move || p.set(5));
        until(&format!("{name}: queued tasks to start"), || {
            meter.now() == 5
        });
        gate.open(10);
        rt.block_on(async { within("wait", pool.wait()).await });
    }
}

/// Pinned: a grow lets in the waiting submitters by priority (the highest first), also
/// for NoQueueAioPool, whose waiting submitters are its queue.
#[test]
fn a_grow_admits_waiting_submitters_by_priority() {
    for pool in Pool::all(1, 0) {
        let name = pool.name();
        current_thread().block_on(async {
            let (meter, gate) = (Gauge::default(), Gate::default());
            let _h = fill(&pool, 1, 0, &meter, &gate).await;
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut waiting = Vec::new();
            for prio in [1, 5, 3] {
                let (order, p) = (order.clone(), pool.clone());
                let make = move || -> BoxFut<()> {
                    let order = order.clone();
                    Box::pin(async move {
                        order.lock().unwrap().push(prio);
                        std::future::pending::<()>().await
                    })
                };
                waiting.push(tokio::spawn(
                    p.submit_with(make, SubmitOptions::new().priority(prio)),
                ));
                tokio::task::yield_now().await;
            }
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert!(order.lock().unwrap().is_empty(), "{name}");
            pool.set(2);
            settle_until("one to start", || order.lock().unwrap().len() == 1).await;
            pool.set(3);
            settle_until("two to start", || order.lock().unwrap().len() == 2).await;
            pool.set(4);
            settle_until("three to start", || order.lock().unwrap().len() == 3).await;
            assert_eq!(*order.lock().unwrap(), vec![5, 3, 1], "{name}: start order");
            for w in waiting {
                w.await.unwrap().unwrap().abort();
            }
            gate.open(10);
            within("wait", pool.wait()).await;
        });
    }
}

// ---------------------------------------------------------------------------------------
// Shrinks with ends of every kind
// ---------------------------------------------------------------------------------------

/// Pinned: after a shrink, tasks that panic, are aborted while running, or are cancelled
/// by `cancel_all` give their slots back as any end does: once fewer than the new size
/// run, the pool runs exactly the new size again (no slot lost, none gained).
#[test]
fn after_a_shrink_panics_aborts_and_cancel_all_neither_lose_nor_add_slots() {
    support::hide_panics(PANICS);
    for pool in Pool::all(4, 4) {
        let name = pool.name();
        current_thread().block_on(async {
            let (meter, gate, panic_gate) = (Gauge::default(), Gate::default(), Gate::default());
            // Two panic when let through, one is aborted.
            let mut handles = Vec::new();
            for i in 0..4 {
                let (meter, gate) = (
                    meter.clone(),
                    if i < 2 {
                        panic_gate.clone()
                    } else {
                        gate.clone()
                    },
                );
                let make = move || -> BoxFut<()> {
                    let (meter, gate) = (meter.clone(), gate.clone());
                    Box::pin(async move {
                        let _inside = meter.enter();
                        gate.pass().await;
                        if i < 2 {
                            panic!("resizing_under_load: a task panics");
                        }
                    })
                };
                handles.push(pool.try_submit(make).unwrap());
            }
            settle_until("4 running", || meter.now() == 4).await;
            let queued: Vec<_> = (0..pool.room(4, 4) - 4)
                .map(|_| pool.try_submit(gated(&meter, &gate)).unwrap())
                .collect();
            pool.set(3);
            panic_gate.open(2); // both panicking tasks end (panic)
            handles[2].abort();
            settle_until("the excess to end", || {
                pool.stats().running <= 3 && meter.now() <= 3
            })
            .await;
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            // One was aborted, one still runs, the queued fill the rest up to 3.
            assert_eq!(
                meter.now(),
                3.min(1 + queued.len()),
                "{name}: running after the ends"
            );
            assert_eq!(pool.stats().running, meter.now(), "{name}: stats");
            // cancel_all: every running task goes; the pool takes exactly 3 again.
            within("cancel_all", pool.cancel_all()).await;
            settle_until("all cancelled", || {
                pool.stats().running == 0 && meter.now() == 0
            })
            .await;
            meter.reset_max();
            let mut more = Vec::new();
            for _ in 0..pool.room(3, 4) {
                more.push(
                    pool.try_submit(gated(&meter, &gate))
                        .unwrap_or_else(|e| panic!("{name}: {e:?}")),
                );
            }
            assert_eq!(
                pool.try_submit(gated(&meter, &gate)).unwrap_err(),
                TrySubmitErrorKind::Full,
                "{name}"
            );
            settle_until("3 running", || meter.now() == 3).await;
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            assert_eq!(meter.max(), 3, "{name}");
            gate.open(100);
            for h in more {
                within("a task", h).await.unwrap();
            }
            within("shutdown", pool.shutdown()).await;
        });
    }
}

/// Pinned: a shrink while `shutdown()` drains the pool holds the drain to the new size;
/// a grow then starts the queued tasks at once; the drain ends with every task run.
#[test]
fn a_resize_while_shutdown_drains_is_followed() {
    for pool in Pool::all(4, 8) {
        if matches!(pool, Pool::NoQueue(_)) {
            continue;
        }
        let name = pool.name();
        multi_thread_of(2).block_on(async {
            let (meter, gate) = (Gauge::default(), Gate::default());
            let _h = fill(&pool, 4, 8, &meter, &gate).await;
            let shut = tokio::spawn(pool.shutdown());
            settle_until("closed", || match &pool {
                Pool::Common(p) => p.is_closed(),
                Pool::NoQueue(p) => p.is_closed(),
                Pool::Smart(p) => p.is_closed(),
            })
            .await;
            pool.set(1);
            gate.open(3);
            settle_until("the excess to end", || meter.now() <= 1).await;
            meter.reset_max();
            gate.open(2);
            settle_until("two more to end", || pool.stats().completed == 5).await;
            assert!(
                meter.max() <= 1,
                "{name}: {} ran at once during the drain",
                meter.max()
            );
            pool.set(6);
            settle_until("a grow during the drain to start 6", || meter.now() == 6).await;
            gate.open(100);
            within("shutdown", shut).await.unwrap();
            assert_eq!(pool.stats().completed, 12, "{name}");
        });
    }
}

// ---------------------------------------------------------------------------------------
// Flow control
// ---------------------------------------------------------------------------------------

/// Pinned: a grow starts what the rate window allows and no more; the rest start as the
/// window slides.
#[test]
fn a_grow_under_a_rate_window_starts_only_what_the_window_allows() {
    let per = Duration::from_secs(1);
    for pool in Pool::all_with(
        1,
        6,
        |b| b.rate_limit(2, per),
        |b| b.rate_limit(2, per),
        |b| b.rate_limit(2, per),
    ) {
        if matches!(pool, Pool::NoQueue(_)) {
            continue;
        }
        let name = pool.name();
        support::paused_runtime().block_on(async {
            let (meter, gate) = (Gauge::default(), Gate::default());
            let mut hs = Vec::new();
            for _ in 0..7 {
                hs.push(pool.try_submit(gated(&meter, &gate)).unwrap());
            }
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            assert_eq!(meter.started(), 1, "{name}");
            pool.set(7);
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            assert_eq!(
                meter.started(),
                2,
                "{name}: a grow started more than the window allows"
            );
            tokio::time::sleep(per + Duration::from_millis(1)).await;
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            assert_eq!(meter.started(), 4, "{name}: after one window");
            gate.open(100);
            tokio::time::sleep(per * 3).await;
            for h in hs {
                within("a task", h).await.unwrap();
            }
        });
    }
}

/// Pinned: with `max_per_key(1)`, a grow starts a queued task of another key at once,
/// past one of a saturated key.
#[test]
fn a_grow_starts_other_keys_past_a_saturated_one() {
    for pool in Pool::all_with(
        1,
        4,
        |b| b.max_per_key(1),
        |b| b.max_per_key(1),
        |b| b.max_per_key(1),
    ) {
        if matches!(pool, Pool::NoQueue(_)) {
            continue;
        }
        let name = pool.name();
        current_thread().block_on(async {
            let (meter, gate) = (Gauge::default(), Gate::default());
            let a = SubmitOptions::new().key("a");
            let b = SubmitOptions::new().key("b");
            let h1 = pool
                .submit_with(gated(&meter, &gate), a.clone())
                .await
                .unwrap();
            let h2 = pool.submit_with(gated(&meter, &gate), a).await.unwrap();
            let h3 = pool.submit_with(gated(&meter, &gate), b).await.unwrap();
            settle_until("one to start", || meter.started() == 1).await;
            pool.set(3);
            settle_until("b to start", || meter.started() == 2).await;
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            assert_eq!(meter.started(), 2, "{name}: a second task of key a started");
            gate.open(100);
            for h in [h1, h2, h3] {
                within("a task", h).await.unwrap();
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// Across runtimes
// ---------------------------------------------------------------------------------------

/// Pinned: a SmartAioPool shrunk while the runtime that ran its tasks ends: their
/// re-runs go through the pool at the new size, never more at once.
#[test]
fn a_smart_pool_shrunk_as_its_runtime_ends_reruns_at_the_new_size() {
    let pool = SmartAioPool::builder()
        .max_concurrency(4)
        .max_queue_size(8)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let meter = Gauge::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let recipe = {
        let (meter, runs) = (meter.clone(), runs.clone());
        move || {
            let (meter, first) = (meter.clone(), runs.fetch_add(1, Ordering::SeqCst) < 4);
            async move {
                let _inside = meter.enter();
                if first {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let a = multi_thread_of(1);
    let handles: Vec<_> = a.block_on(async {
        let mut hs = Vec::new();
        for _ in 0..4 {
            hs.push(pool.submit(recipe.clone()).await.unwrap());
        }
        settle_until("4 running", || meter.now() == 4).await;
        hs
    });
    pool.set_max_concurrency(1);
    drop(a);
    meter.reset_max();
    current_thread().block_on(async {
        for h in handles {
            within("a re-run", h).await.unwrap();
        }
        within("wait", pool.wait()).await;
    });
    assert!(
        meter.max() <= 1,
        "{} re-runs ran at once after a shrink to 1",
        meter.max()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 8);
}

/// Finding 337: a grow called in a short `block_on` of a current-thread runtime
/// A (alive, then not driven) while the queued tasks are those of runtime B, driven on
/// another thread and awaiting them. The docs: "growing starts queued tasks at once".
/// The slot tasks that take the reserved tasks were all spawned on A, which runs nothing
/// until it is driven again: B's tasks waited (counted running) until B's own blocker
/// ended. With A dropped right after the grow (`drop_a`), they start (pinned).
#[test]
fn a_grow_from_a_runtime_not_driven_afterwards_starts_another_runtimes_queued_tasks() {
    for (b_multi, drop_a) in [(false, false), (true, false), (false, true)] {
        let pool = support::common_local(1, 10);
        let rt_a = current_thread();
        // A uses the pool once: the pool knows it.
        rt_a.block_on(async { pool.run(async {}).await.unwrap() });
        let (tx, rx) = std::sync::mpsc::channel();
        let p = pool.clone();
        let b = std::thread::spawn(move || {
            let rt_b = if b_multi {
                multi_thread_of(1)
            } else {
                current_thread()
            };
            rt_b.block_on(async move {
                let blocker = p.submit(std::future::pending::<()>()).await.unwrap();
                let queued = [
                    p.submit(async { 1 }).await.unwrap(),
                    p.submit(async { 2 }).await.unwrap(),
                ];
                tx.send(()).unwrap();
                let all = futures_util::future::join_all(queued);
                let got = tokio::time::timeout(Duration::from_secs(3), all).await;
                let stats = p.stats();
                blocker.abort();
                (
                    got.map(|v| v.into_iter().map(Result::unwrap).collect::<Vec<_>>()),
                    stats,
                )
            })
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("B submitted");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pool.stats().queued, 2);
        rt_a.block_on(async { pool.set_max_concurrency(3) });
        if drop_a {
            drop(rt_a);
        }
        let (got, stats) = on_thread_within("B's wait", 10, move || b.join().unwrap());
        assert_eq!(
            got.ok(),
            Some(vec![1, 2]),
            "B multi-thread {b_multi}, A dropped {drop_a}: after a grow to 3 called on runtime A \
             (not driven afterwards), B's queued tasks did not start within 3 s while B awaited \
             them; stats then: {stats}"
        );
    }
}

/// Pinned: a CommonAioPool shrunk to 1 while runtime A runs every slot, then A ends: A's
/// tasks are cancelled, and runtime B's queued tasks (B awaiting them) start one at a
/// time.
#[test]
fn a_shrink_then_the_end_of_the_runtime_holding_every_slot_starts_the_others_tasks_at_the_new_size()
{
    let pool = support::common_local(3, 10);
    let a = multi_thread_of(1);
    let a_handles: Vec<_> = a.block_on(async {
        let mut hs = Vec::new();
        for _ in 0..3 {
            hs.push(pool.submit(std::future::pending::<()>()).await.unwrap());
        }
        hs
    });
    let meter = Gauge::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let (p, m) = (pool.clone(), meter.clone());
    let b = std::thread::spawn(move || {
        current_thread().block_on(async move {
            let mut hs = Vec::new();
            for _ in 0..3 {
                let m = m.clone();
                hs.push(
                    p.submit(async move {
                        let _inside = m.enter();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    })
                    .await
                    .unwrap(),
                );
            }
            tx.send(()).unwrap();
            let all = futures_util::future::join_all(hs);
            tokio::time::timeout(Duration::from_secs(5), all)
                .await
                .is_ok()
        })
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("B submitted");
    pool.set_max_concurrency(1);
    drop(a);
    let done = on_thread_within("B's wait", 10, move || b.join().unwrap());
    assert!(
        done,
        "B's tasks did not all run within 5 s: {}",
        pool.stats()
    );
    assert_eq!(
        meter.max(),
        1,
        "B's tasks ran {} at once after a shrink to 1",
        meter.max()
    );
    for h in a_handles {
        assert!(h.is_finished());
    }
}

/// Pinned (with the `metrics` feature): the `queued` and `running` gauges agree with
/// `stats()` after a shrink that gives back reservations (tasks given a slot that had not
/// started yet), after a grow, and once every task ended.
#[cfg(feature = "metrics")]
#[test]
fn the_gauges_follow_stats_through_shrinks_and_grows() {
    let _serial = support::serial();
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let pools = Pool::all_with(
            3,
            4,
            |b| b.name("resize_gauges_common"),
            |b| b.name("resize_gauges_no_queue"),
            |b| b.name("resize_gauges_smart"),
        );
        for (pool, label) in pools.into_iter().zip([
            "resize_gauges_common",
            "resize_gauges_no_queue",
            "resize_gauges_smart",
        ]) {
            let name = pool.name();
            let mut f = metric_figures::Figures::default();
            let mut agree = |what: &str| {
                f.take(&snapshotter, label);
                let s = pool.stats();
                if let Some(e) = f.against(&s) {
                    panic!("{name}, {what}: {e}");
                }
            };
            current_thread().block_on(async {
                let (meter, gate) = (Gauge::default(), Gate::default());
                // Reserved, not started: no yield since.
                let hs: Vec<_> = (0..pool.room(3, 4))
                    .map(|_| pool.try_submit(gated(&meter, &gate)).unwrap())
                    .collect();
                agree("after the submits");
                pool.set(1);
                assert_eq!(
                    pool.stats().running,
                    1,
                    "{name}: reservations beyond 1 given back"
                );
                agree("after a shrink below the reservations");
                settle_until("one to start", || meter.now() == 1).await;
                agree("once one started");
                pool.set(5);
                agree("after a grow");
                settle_until("the queued to start", || {
                    meter.now() == pool.room(3, 4).min(5)
                })
                .await;
                pool.set(2);
                agree("after a shrink below the running");
                gate.open(100);
                for h in hs {
                    within("a task", h).await.unwrap();
                }
                within("wait", pool.wait()).await;
                agree("at the end");
            });
        }
    });
}

/// Finding 338: a SmartAioPool with a large `min_workers` (valid: at most
/// `max_concurrency`, itself at most the crate's largest size) kept one timestamp per idle
/// worker: `min_workers(1 << 40)` aborted the process at `build()` ("memory allocation of
/// 17592186044416 bytes failed"); `1 << 26` took about a second and 1 GiB at `build()`,
/// and as long again, under the pool's lock, in each grow back to it after a shrink.
/// Played in a child process (the abort would end this test binary).
#[test]
fn a_large_min_workers_costs_nothing_per_worker_at_build_or_resize() {
    let child = support::run_child("large-min-workers", 60);
    let _ = std::fs::remove_dir_all(&child.dir);
    assert_eq!(
        child.code,
        Some(0),
        "a SmartAioPool of 2^40 workers (min_workers = max_concurrency), built, shrunk, grown \
         back and given one task, in a child process: it did not exit 0 (None: still running \
         after 60 s); its stderr:\n{}",
        child.stderr
    );
}

/// The child process of the tests above (`support::run_child`).
#[test]
#[ignore = "run as a child process by the tests above"]
fn child() {
    let (scenario, _dir) = support::child_scenario();
    assert_eq!(scenario, "large-min-workers");
    let n = 1usize << 40;
    let started = std::time::Instant::now();
    let pool = SmartAioPool::builder()
        .max_concurrency(n)
        .min_workers(n)
        .max_queue_size(0)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    assert_eq!((pool.worker_count(), pool.idle_worker_count()), (n, n));
    pool.set_max_concurrency(1);
    assert_eq!(pool.worker_count(), 1);
    pool.set_max_concurrency(n);
    assert_eq!((pool.worker_count(), pool.idle_worker_count()), (n, n));
    current_thread().block_on(async {
        assert_eq!(within("a run", pool.run(|| async { 5 })).await.unwrap(), 5);
        within("wait", pool.wait()).await;
    });
    assert_eq!(pool.worker_count(), n);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a pool of {n} workers took {:?} to build, resize and run one task",
        started.elapsed()
    );
}

/// Runtime B, on a thread of its own, driven: submits tasks 1 and 2 with `submit` (both
/// queued), then awaits them for at most 3 s. Returns once both are submitted; the thread
/// gives `(their values, if both ended in time; the stats then)`.
fn b_awaits_two(
    stats: impl Fn() -> PoolStats + Send + 'static,
    submit: impl Fn(u32) -> BoxFut<TaskHandle<u32>> + Send + 'static,
) -> std::thread::JoinHandle<(Option<Vec<u32>>, PoolStats)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let b = std::thread::spawn(move || {
        current_thread().block_on(async move {
            let queued = [submit(1).await, submit(2).await];
            tx.send(()).unwrap();
            let all = futures_util::future::join_all(queued);
            let got = tokio::time::timeout(Duration::from_secs(3), all).await;
            let got = got
                .ok()
                .map(|v| v.into_iter().map(Result::unwrap).collect());
            (got, stats())
        })
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("B submitted");
    b
}

/// Finding 337's fix sends claimers to the runtime of the queue's head only: when the
/// head is a task of A itself (the runtime the grow is called on, not driven after),
/// runtime B's tasks reserved behind it waited as before the fix.
#[test]
fn a_grow_from_a_runtime_not_driven_afterwards_starts_another_runtimes_tasks_behind_its_own() {
    let pool = support::common_local(1, 10);
    let rt_a = current_thread();
    let (blocker, own, b) = a_heads_the_queue_b_awaits_two_behind(&pool, &rt_a);
    rt_a.block_on(async { pool.set_max_concurrency(4) });
    let (got, stats) = on_thread_within("B's wait", 10, move || b.join().unwrap());
    assert_eq!(
        got,
        Some(vec![1, 2]),
        "after a grow to 4 called on runtime A (not driven afterwards), with A's own task at \
         the queue's head, B's queued tasks did not start within 3 s while B awaited them; \
         stats then: {stats}"
    );
    blocker.abort();
    drop(own);
    drop(rt_a);
}

/// The same with a SmartAioPool re-run (queued again for any runtime after its runtime
/// ended) at the queue's head: `held_job_rt` is `None` for it, and the fix sent no
/// claimer anywhere but A.
#[test]
fn a_grow_from_a_runtime_not_driven_afterwards_starts_another_runtimes_tasks_behind_a_rerun() {
    let pool = SmartAioPool::builder()
        .max_concurrency(2)
        .min_workers(2)
        .max_queue_size(10)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let rt_a = current_thread();
    let started = Started::default();
    // A: a blocker holding one slot, started; A is not driven afterwards.
    let blocker = rt_a.block_on(async {
        let s = started.clone();
        let blocker = pool.submit(move || s.then_pend()).await.unwrap();
        started.wait().await;
        blocker
    });
    // R: a re-runnable task whose first run never ends holds the other slot.
    let runs = Arc::new(AtomicUsize::new(0));
    let rt_r = multi_thread_of(1);
    let rerun = rt_r
        .block_on(pool.submit(support::cut_off_once(&runs, 9)))
        .unwrap();
    until("the first run", || runs.load(Ordering::SeqCst) == 1);
    // B: two tasks queued, awaited.
    let (p, q) = (pool.clone(), pool.clone());
    let b = b_awaits_two(
        move || p.stats(),
        move |v| {
            let q = q.clone();
            Box::pin(async move { q.submit(move || async move { v }).await.unwrap() })
        },
    );
    // A shrink to 1 (from this plain thread), then R's end: the re-run is queued again,
    // first, for any runtime, with no slot free (A's blocker holds the one left).
    pool.set_max_concurrency(1);
    drop(rt_r);
    until("the re-run queued again", || pool.stats().queued == 3);
    rt_a.block_on(async { pool.set_max_concurrency(4) });
    let (got, stats) = on_thread_within("B's wait", 10, move || b.join().unwrap());
    assert_eq!(
        got,
        Some(vec![1, 2]),
        "after a grow to 4 called on runtime A (not driven afterwards), with a re-run for any \
         runtime at the queue's head, B's queued tasks did not start within 3 s while B \
         awaited them; stats then: {stats}"
    );
    blocker.abort();
    drop(rerun);
    drop(rt_a);
}

/// Finding 339 (337's left case): a grow called from a plain thread, or inside a runtime
/// the pool never knew, sent its slot tasks to the runtime of the queue's head: runtime A,
/// current-thread, alive but not driven (its own task heads the queue). Runtime B's tasks
/// reserved behind it waited while B, driven, awaited them. The docs of
/// `set_max_concurrency`: "growing starts queued tasks at once".
#[test]
fn a_grow_from_a_plain_thread_or_an_unknown_runtime_starts_tasks_behind_an_undriven_runtimes_own() {
    for from_unknown_runtime in [false, true] {
        let pool = support::common_local(1, 10);
        let rt_a = current_thread();
        let (blocker, own, b) = a_heads_the_queue_b_awaits_two_behind(&pool, &rt_a);
        if from_unknown_runtime {
            current_thread().block_on(async { pool.set_max_concurrency(4) });
        } else {
            pool.set_max_concurrency(4);
        }
        let (got, stats) = on_thread_within("B's wait", 10, move || b.join().unwrap());
        let from = if from_unknown_runtime {
            "inside a runtime the pool never knew"
        } else {
            "from a plain thread"
        };
        assert_eq!(
            got,
            Some(vec![1, 2]),
            "after a grow to 4 called {from}, with a task of runtime A (alive, not driven) at \
             the queue's head, B's queued tasks did not start within 3 s while B awaited them; \
             stats then: {stats}"
        );
        blocker.abort();
        drop(own);
        drop(rt_a);
    }
}

/// On current-thread runtime A (not driven afterwards): a blocker holding `pool`'s one slot
/// (started), then a task of A's own, queued: the queue's head. Then runtime B's two tasks
/// queued behind it, awaited ([`b_awaits_two`]). Returns the blocker's and A's task's
/// handles, and B's thread.
#[allow(clippy::type_complexity)]
fn a_heads_the_queue_b_awaits_two_behind(
    pool: &CommonAioPool,
    rt_a: &tokio::runtime::Runtime,
) -> (
    TaskHandle<()>,
    TaskHandle<u32>,
    std::thread::JoinHandle<(Option<Vec<u32>>, PoolStats)>,
) {
    let started = Started::default();
    let (blocker, own) = rt_a.block_on(async {
        let blocker = pool.submit(started.then_pend()).await.unwrap();
        started.wait().await;
        let own = pool.submit(async { 0 }).await.unwrap();
        (blocker, own)
    });
    assert_eq!(pool.stats().queued, 1);
    let (p, q) = (pool.clone(), pool.clone());
    let b = b_awaits_two(
        move || p.stats(),
        move |v| {
            let q = q.clone();
            Box::pin(async move { q.submit(async move { v }).await.unwrap() })
        },
    );
    assert_eq!(pool.stats().queued, 3);
    (blocker, own, b)
}

/// A flag a blocker sets when it starts, and a bounded wait for it.
#[derive(Clone, Default)]
struct Started(Arc<std::sync::atomic::AtomicBool>);

impl Started {
    /// A task that marks its start, then never ends.
    fn then_pend(&self) -> impl Future<Output = ()> + Send + 'static {
        let flag = self.0.clone();
        async move {
            flag.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await
        }
    }

    /// Waits (at most `within`'s bound) until a task made by `then_pend` started.
    async fn wait(&self) {
        within("the blocker's start", async {
            while !self.0.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
}
