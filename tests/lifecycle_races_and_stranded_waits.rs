//! A pool's life from several runtimes and threads at once: `close`, `shutdown`,
//! `shutdown_timeout`, the last handle dropped, `shutdown_all_common_aiopools` and the
//! end of runtimes, racing with submits of every kind (async, `try_submit`,
//! `blocking_submit` from plain and `spawn_blocking` threads), elastic workers retiring,
//! and tasks that submit to their own pool (a pin), and a stranded SmartAioPool's waits and
//! shutdowns, which waited for ever where no live runtime could be offered (RELIABILITY.md,
//! findings 329 and 330).

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{
    CancelReason, CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitErrorKind, TaskHandle,
    TrySubmitErrorKind,
};
use support::*;

/// What every task of a scenario shares: how many task bodies are alive now, how many
/// refused items came back, and every handle accepted so far.
#[derive(Clone, Default)]
struct Books {
    live: Arc<AtomicUsize>,
    back: Arc<AtomicUsize>,
    handles: Arc<Mutex<Vec<TaskHandle<()>>>>,
    odd: Arc<Mutex<Vec<String>>>,
}

/// Alive while a task body is.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One of the three pools, with the submit paths of [`race_round`].
#[derive(Clone)]
enum P {
    Common(CommonAioPool),
    NoQueue(NoQueueAioPool),
    Smart(SmartAioPool),
}

impl P {
    fn all() -> Vec<P> {
        vec![
            P::Common(
                CommonAioPool::builder()
                    .max_concurrency(2)
                    .max_queue_size(2)
                    .process_wide(false)
                    .build(),
            ),
            P::NoQueue(
                NoQueueAioPool::builder()
                    .max_concurrency(3)
                    .process_wide(false)
                    .build(),
            ),
            P::Smart(
                SmartAioPool::builder()
                    .max_concurrency(3)
                    .max_queue_size(2)
                    .min_workers(0)
                    .idle_timeout(Duration::from_millis(1))
                    .auto_shutdown(false)
                    .process_wide(false)
                    .build(),
            ),
        ]
    }

    fn name(&self) -> &'static str {
        match self {
            P::Common(_) => "common",
            P::NoQueue(_) => "no_queue",
            P::Smart(_) => "smart",
        }
    }

    /// The body of a task: counted alive, sleeps or yields, maybe submits to its own pool.
    #[allow(clippy::manual_async_fn)] // declared `Send`: the nested submit is recursive
    fn body(
        pool: Option<P>,
        books: Books,
        seed: u64,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        async move {
            books.live.fetch_add(1, Ordering::SeqCst);
            let _live = Live(books.live.clone());
            match seed % 4 {
                0 => tokio::task::yield_now().await,
                1 => tokio::time::sleep(Duration::from_micros(200 + seed % 700)).await,
                2 => std::thread::sleep(Duration::from_micros(100)),
                _ => {}
            }
            if let Some(pool) = pool {
                // Nested: a try_submit and an async submit into the own pool.
                let _ = pool.try_submit(&books, seed / 7, false);
                if seed % 3 == 0 {
                    let _ = pool.submit(&books, seed / 11, false).await;
                }
            }
            tokio::task::yield_now().await;
        }
    }

    fn check_kind(books: &Books, what: &str, kind: SubmitErrorKind) {
        if !matches!(
            kind,
            SubmitErrorKind::Closed | SubmitErrorKind::NoRuntime | SubmitErrorKind::WouldDeadlock
        ) {
            books.odd.lock().unwrap().push(format!("{what}: {kind:?}"));
        }
    }

    fn keep(books: &Books, h: TaskHandle<()>) {
        books.handles.lock().unwrap().push(h);
    }

    /// Returns `false` once the pool refuses as closed.
    fn submit(
        &self,
        books: &Books,
        seed: u64,
        nest: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'static>> {
        let (this, books) = (self.clone(), books.clone());
        Box::pin(async move { this.submit_inner(&books, seed, nest).await })
    }

    async fn submit_inner(&self, books: &Books, seed: u64, nest: bool) -> bool {
        let nested = nest.then(|| self.clone());
        let res = match self {
            P::Common(p) => p
                .submit(Self::body(nested, books.clone(), seed))
                .await
                .map_err(|e| (e.kind(), drop(e.into_inner()))),
            P::NoQueue(p) => p
                .submit(Self::body(nested, books.clone(), seed))
                .await
                .map_err(|e| (e.kind(), drop(e.into_inner()))),
            P::Smart(p) => {
                let b = books.clone();
                p.submit(move || Self::body(nested.clone(), b.clone(), seed))
                    .await
                    .map_err(|e| (e.kind(), drop(e.into_inner())))
            }
        };
        Self::settle(books, "submit", res)
    }

    /// Books a submit's result: a handle kept, or an item back with an expected kind;
    /// whether the pool was still open.
    fn settle(
        books: &Books,
        what: &str,
        res: Result<TaskHandle<()>, (SubmitErrorKind, ())>,
    ) -> bool {
        match res {
            Ok(h) => {
                Self::keep(books, h);
                true
            }
            Err((kind, ())) => {
                books.back.fetch_add(1, Ordering::SeqCst);
                Self::check_kind(books, what, kind);
                kind != SubmitErrorKind::Closed
            }
        }
    }

    fn try_submit(&self, books: &Books, seed: u64, nest: bool) -> bool {
        let nested = nest.then(|| self.clone());
        let res = match self {
            P::Common(p) => p
                .try_submit(Self::body(nested, books.clone(), seed))
                .map_err(|e| (e.kind(), drop(e.into_inner()))),
            P::NoQueue(p) => p
                .try_submit(Self::body(nested, books.clone(), seed))
                .map_err(|e| (e.kind(), drop(e.into_inner()))),
            P::Smart(p) => {
                let b = books.clone();
                p.try_submit(move || Self::body(nested.clone(), b.clone(), seed))
                    .map_err(|e| (e.kind(), drop(e.into_inner())))
            }
        };
        match res {
            Ok(h) => {
                Self::keep(books, h);
                true
            }
            Err((kind, ())) => {
                books.back.fetch_add(1, Ordering::SeqCst);
                if !matches!(
                    kind,
                    TrySubmitErrorKind::Full
                        | TrySubmitErrorKind::Closed
                        | TrySubmitErrorKind::NoRuntime
                ) {
                    books
                        .odd
                        .lock()
                        .unwrap()
                        .push(format!("try_submit: {kind:?}"));
                }
                kind != TrySubmitErrorKind::Closed
            }
        }
    }

    fn blocking_submit(&self, books: &Books, seed: u64) -> bool {
        let res = match self {
            P::Common(p) => p
                .blocking_submit(Self::body(None, books.clone(), seed))
                .map_err(|e| (e.kind(), drop(e.into_inner()))),
            P::NoQueue(p) => p
                .blocking_submit(Self::body(None, books.clone(), seed))
                .map_err(|e| (e.kind(), drop(e.into_inner()))),
            P::Smart(p) => {
                let b = books.clone();
                p.blocking_submit(move || Self::body(None, b.clone(), seed))
                    .map_err(|e| (e.kind(), drop(e.into_inner())))
            }
        };
        Self::settle(books, "blocking_submit", res)
    }

    fn shutdown(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        match self {
            P::Common(p) => Box::pin(p.shutdown()),
            P::NoQueue(p) => Box::pin(p.shutdown()),
            P::Smart(p) => Box::pin(p.shutdown()),
        }
    }

    fn worker_count(&self) {
        if let P::Smart(p) = self {
            let _ = p.worker_count();
        }
    }
}

/// One round: runtime `a` (two workers) submits and then shuts the pool down; runtime
/// `b` (current-thread or one worker, by the seed), driven on a thread of its own,
/// submits until it is dropped at a random moment; a plain thread and a `spawn_blocking`
/// thread of `a` call `blocking_submit`; tasks submit into their own pool (`try_submit`
/// and `submit`), holding handles of it (the last one may go inside a task); the
/// SmartAioPool's elastic workers retire (1 ms idle timeout, counted from `b`). Checked:
/// `shutdown()` returns; when it does, no task body is alive and every accepted handle
/// is resolved, each with its value (SmartAioPool: re-runs) or `RuntimeShutdown` (the
/// other pools' tasks of `b`); every refused item came back, as `Closed`, `NoRuntime`,
/// `WouldDeadlock` or (`try_submit`) `Full`.
fn race_round(pool: P, seed: u64) -> Result<(), String> {
    let books = Books::default();
    let stop = Arc::new(AtomicBool::new(false));
    let a = multi_thread_of(2);
    let mut rng = Rng::new(seed);
    let b_for = Duration::from_micros(rng.below(8000));
    let shut_after = Duration::from_micros(rng.below(4000));

    // b: submits from its own runtime until dropped.
    let b_thread = {
        let (pool, books, stop) = (pool.clone(), books.clone(), stop.clone());
        std::thread::spawn(move || {
            let b = if seed % 2 == 0 {
                current_thread()
            } else {
                multi_thread_of(1)
            };
            b.block_on(async {
                let end = std::time::Instant::now() + b_for;
                let mut i = 0u64;
                while std::time::Instant::now() < end && !stop.load(Ordering::SeqCst) {
                    i += 1;
                    if !pool
                        .submit(&books, seed.wrapping_mul(31) + i, i % 2 == 0)
                        .await
                    {
                        break;
                    }
                    pool.worker_count();
                }
            });
            drop(b);
        })
    };
    // A plain thread.
    let plain = {
        let (pool, books, stop) = (pool.clone(), books.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                if !pool.blocking_submit(&books, seed.wrapping_mul(17) + i) {
                    break;
                }
            }
        })
    };
    let res = a.block_on(async {
        // A spawn_blocking thread of `a`.
        let sb = {
            let (pool, books, stop) = (pool.clone(), books.clone(), stop.clone());
            tokio::task::spawn_blocking(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    if !pool.blocking_submit(&books, seed.wrapping_mul(13) + i) {
                        break;
                    }
                }
            })
        };
        let feeder = {
            let (pool, books, stop) = (pool.clone(), books.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let go = if i % 3 == 0 {
                        let go = pool.try_submit(&books, seed.wrapping_mul(7) + i, true);
                        tokio::task::yield_now().await;
                        go
                    } else {
                        pool.submit(&books, seed.wrapping_mul(7) + i, i % 2 == 0)
                            .await
                    };
                    if !go {
                        break;
                    }
                }
            })
        };
        tokio::time::sleep(shut_after).await;
        let shut = pool.shutdown();
        match tokio::time::timeout(Duration::from_secs(10), shut).await {
            Ok(()) => {}
            Err(_) => return Err("shutdown() did not return within 10 s".to_string()),
        }
        let live = books.live.load(Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(Duration::from_secs(10), feeder).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), sb).await;
        if live != 0 {
            return Err(format!("{live} task bodies alive when shutdown() returned"));
        }
        Ok(())
    });
    stop.store(true, Ordering::SeqCst);
    let _ = b_thread.join();
    let _ = plain.join();
    res?;
    let unresolved = books
        .handles
        .lock()
        .unwrap()
        .iter()
        .filter(|h| !h.is_finished())
        .count();
    if unresolved > 0 {
        return Err(format!(
            "{unresolved} accepted handles unresolved after shutdown()"
        ));
    }
    let handles = std::mem::take(&mut *books.handles.lock().unwrap());
    let is_smart = matches!(pool, P::Smart(_));
    for h in handles {
        match h.blocking_wait() {
            Ok(()) => {}
            Err(e) if e.cancel_reason() == Some(CancelReason::RuntimeShutdown) && !is_smart => {}
            Err(e) => books.odd.lock().unwrap().push(format!("a handle said {e}")),
        }
    }
    let odd = books.odd.lock().unwrap().clone();
    if !odd.is_empty() {
        return Err(format!("unexpected refusals: {odd:?}"));
    }
    drop(a);
    Ok(())
}

/// Pin (passes on the head): for each pool, rounds of [`race_round`] with seeded timings.
/// The review ran about 700 rounds per pool (300 of them with both flavours for `b`)
/// without a failure.
#[test]
fn pin_submits_from_every_context_racing_a_shutdown_and_a_runtimes_end() {
    let mut failures = Vec::new();
    for seed in 0..4 {
        for pool in P::all() {
            let name = pool.name();
            let r = on_thread_within("a race round", 60, move || race_round(pool, seed));
            if let Err(e) = r {
                failures.push(format!("{name} seed {seed}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ----- Finding 329: a stranded SmartAioPool's wait from where no runtime can be offered --

/// A SmartAioPool whose one runtime ended while its task ran (its re-run is queued, the
/// pool knows no live runtime: stranded), shut down or waited for by a non-tokio executor
/// on a plain thread: as `handle.await` there (finding 273), the wait has the re-run run
/// (on a thread of the crate) and returns. Before, `shutdown()`, `wait()` and
/// `shutdown_all_smart_aiopools()` waited for ever (nothing ran the re-run), although
/// `shutdown_timeout`'s panic there says "shutdown() without a deadline works from any
/// executor".
#[test]
fn a_stranded_pools_shutdown_polled_by_a_plain_executor_returns() {
    for how in ["shutdown", "wait", "shutdown_all_smart_aiopools"] {
        on_thread_within(how, 5, move || {
            let runs = Arc::new(AtomicUsize::new(0));
            let pool = SmartAioPool::builder()
                .max_concurrency(1)
                .process_wide(how == "shutdown_all_smart_aiopools")
                .auto_shutdown(false)
                .build();
            let rt = multi_thread_of(1);
            let h = rt.block_on(pool.submit(cut_off_once(&runs, 9))).unwrap();
            until("the first run", || runs.load(Ordering::SeqCst) == 1);
            drop(rt); // the run is cut off, queued again: no runtime left
            match how {
                "shutdown" => plain_block_on(pool.shutdown()),
                "wait" => plain_block_on(pool.wait()),
                _ => plain_block_on(nb_aiopool::shutdown_all_smart_aiopools()),
            }
            assert!(h.is_finished(), "{how} returned before the task ended");
            assert_eq!(plain_block_on(h).unwrap(), 9, "{how}: the re-run's value");
            assert_eq!(runs.load(Ordering::SeqCst), 2);
        });
    }
}

/// The same pool stranded while the plain executor's wait is pending (its runtime ends
/// after the wait began): the wait is woken and has the re-run run. Before, the pool
/// becoming stranded woke the handles of its queued tasks and its waiting submitters,
/// not its waits: the wait never looked again (the same hang, also once the fix above
/// was in).
#[test]
fn a_plain_executors_wait_returns_when_the_pool_is_stranded_meanwhile() {
    for how in ["shutdown", "wait"] {
        on_thread_within(how, 5, move || {
            let runs = Arc::new(AtomicUsize::new(0));
            let (pool, rt, h) = full_smart_pool_on_a_runtime(&runs);
            let waiting = pool.clone();
            let (began, begun) = std::sync::mpsc::channel();
            let waiter = std::thread::spawn(move || {
                let wait: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
                    if how == "shutdown" {
                        Box::pin(waiting.shutdown())
                    } else {
                        Box::pin(waiting.wait())
                    };
                plain_block_on(async move {
                    let mut wait = wait;
                    // Polled once (pending) before the runtime ends.
                    let first =
                        std::future::poll_fn(|cx| std::task::Poll::Ready(wait.as_mut().poll(cx)))
                            .await;
                    assert!(first.is_pending(), "{how} returned while the task ran");
                    began.send(()).unwrap();
                    wait.await
                })
            });
            begun.recv_timeout(Duration::from_secs(5)).unwrap();
            drop(rt);
            waiter.join().unwrap();
            assert_eq!(plain_block_on(h).unwrap(), 9, "{how}: the re-run's value");
        });
    }
}

/// The end of `main` with a `spawn_blocking` task that shuts a SmartAioPool down with
/// `Handle::block_on`: the runtime's drop waits for that thread, and the thread's
/// shutdown waits for the task the runtime's end cut off (queued again, no runtime
/// left). The shutdown has it run on a thread of the crate and returns, and so does the
/// runtime's drop. Before, both waited for ever.
#[test]
fn a_runtimes_drop_waiting_for_a_blocking_shutdown_of_its_stranded_pool_returns() {
    on_thread_within("the runtime's drop", 5, || {
        let runs = Arc::new(AtomicUsize::new(0));
        let (pool, rt, h) = full_smart_pool_on_a_runtime(&runs);
        let p = pool.clone();
        let blocking = rt.spawn_blocking(move || {
            // Once the runtime is shutting down (its drop waits for this thread).
            std::thread::sleep(Duration::from_millis(100));
            tokio::runtime::Handle::current().block_on(p.shutdown());
        });
        drop(blocking);
        drop(rt);
        assert_eq!(plain_block_on(h).unwrap(), 9);
        assert!(pool.is_closed());
    });
}

// ----- Finding 330: a stranded rate-limited SmartAioPool's own shutdown --------------------

/// A SmartAioPool with a `rate_limit`, of one slot, whose task (`cut_off_once`: 9 when
/// run again) has started on a runtime of its own: `(its runs, the pool, that runtime,
/// its handle)`. Dropping the runtime strands the pool.
fn rate_limited_running_on_its_own_runtime() -> (
    Arc<AtomicUsize>,
    SmartAioPool,
    tokio::runtime::Runtime,
    TaskHandle<u32>,
) {
    let runs = Arc::new(AtomicUsize::new(0));
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .rate_limit(100, Duration::from_secs(1))
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let rt = multi_thread_of(1);
    let h = rt.block_on(pool.submit(cut_off_once(&runs, 9))).unwrap();
    until("the first run", || runs.load(Ordering::SeqCst) == 1);
    (runs, pool, rt, h)
}

/// A SmartAioPool with a `rate_limit` whose task was cut off by the end of its only
/// runtime (its re-run queued, stranded), shut down with `pool.shutdown().await` on a new
/// runtime: as `shutdown_all_smart_aiopools().await` there (finding 201) and awaiting the
/// handle, the shutdown offers its runtime (checked for timers first), the re-run runs
/// and the shutdown returns. Before, it waited for ever: a rate-limited pool takes only
/// a runtime known to have timers, and the pool's own shutdown, unlike the process-wide
/// one, never checked.
#[test]
fn a_stranded_rate_limited_pools_shutdown_on_a_new_runtime_runs_its_rerun() {
    on_thread_within("shutdown() on a new runtime", 5, || {
        let (runs, pool, rt, h) = rate_limited_running_on_its_own_runtime();
        drop(rt); // cut off, queued again; the pool knows no live runtime
        multi_thread_of(1).block_on(async {
            pool.shutdown().await;
            assert!(h.is_finished(), "shutdown() returned before the task ended");
            assert_eq!(h.await.unwrap(), 9, "the re-run's value");
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    });
}

/// Finding 335: 330's pool, stranded only after `shutdown()` was first polled on the new
/// runtime: the shutdown is woken (329) and must then check its runtime for timers and
/// offer it, as it does when the pool was stranded before its first poll.
#[test]
fn a_rate_limited_pools_shutdown_on_a_new_runtime_returns_when_stranded_after_its_first_poll() {
    on_thread_within("shutdown() stranded after its first poll", 5, || {
        let (runs, pool, rt, h) = rate_limited_running_on_its_own_runtime();
        // The first runtime is dropped on another thread once the shutdown is pending.
        let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
        let ender = std::thread::spawn(move || {
            end_rx.recv().unwrap();
            drop(rt);
        });
        multi_thread_of(1).block_on(async {
            let mut shutdown = std::pin::pin!(pool.shutdown());
            let first = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::future::Future::poll(shutdown.as_mut(), cx))
            })
            .await;
            assert!(first.is_pending(), "shutdown() returned while the task ran");
            end_tx.send(()).unwrap();
            shutdown.await;
            assert!(h.is_finished(), "shutdown() returned before the task ended");
            assert_eq!(h.await.unwrap(), 9, "the re-run's value");
        });
        ender.join().unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    });
}

/// Finding 336: 329's `spawn_blocking` case for a pool with a `rate_limit`, waited for with `wait()`:
/// the blocking thread's runtime has ended, so it cannot be offered, and the pool must be
/// served by a thread of the crate, as for a pool without a rate limit (and as its
/// handle, awaited there, is). Before, `ensure_started` called the dead runtime
/// "unasked" and the wait never started the serving thread: the wait, and the runtime's
/// drop waiting for that thread, hung.
#[test]
fn a_runtimes_drop_waiting_for_a_blocking_wait_of_its_stranded_rate_limited_pool_returns() {
    on_thread_within("the runtime's drop (rate-limited, wait)", 5, || {
        let (runs, pool, rt, h) = rate_limited_running_on_its_own_runtime();
        let p = pool.clone();
        drop(rt.spawn_blocking(move || {
            // Once the runtime is shutting down (its drop waits for this thread).
            std::thread::sleep(Duration::from_millis(100));
            tokio::runtime::Handle::current().block_on(p.wait());
        }));
        drop(rt);
        assert_eq!(plain_block_on(h).unwrap(), 9);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    });
}
