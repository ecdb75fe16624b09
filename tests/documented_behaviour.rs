//! A review of the documentation against the code (README.md, the crate docs, the
//! rustdoc of the pools, handles, errors, stats and options): each test checks a claim a
//! user reads there. Pools here are the tests' own (`process_wide(false)`), but for the
//! README's quick start, which is run as written, in a child process.

mod support;

use std::future::Future as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool::{
    AbortHandle, CancelReason, MapOrdered, MapUnordered, NoQueueAioPool, RunError, SmartAioPool,
    SubmitError, SubmitOptions, TaskError, TaskHandle, TrySubmitError,
};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}
fn assert_unpin<T: Unpin>() {}

/// A future that is `Send` but not `Sync` (a `Cell` inside).
async fn not_sync() -> u32 {
    let c = std::cell::Cell::new(1u32);
    tokio::task::yield_now().await;
    c.get()
}

/// The auto traits the docs promise: `TaskHandle` is `Send` (when `T` is) and `Unpin`;
/// `AbortHandle` is `Clone`, `Send` and `Sync`; the error types are `Send + Sync`
/// whenever the task is `Send` (also a task that is not `Sync`); the map streams are
/// `Unpin`, and `Send` when the input stream is.
#[test]
fn pin_auto_traits_promised_by_the_docs() {
    assert_send::<TaskHandle<u32>>();
    assert_unpin::<TaskHandle<u32>>();
    assert_send_sync::<AbortHandle>();
    fn clone<T: Clone>() {}
    clone::<AbortHandle>();
    type NotSync = std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>>;
    let _ = not_sync; // its type is unnameable: a boxed `dyn Future + Send` stands for it
    assert_send_sync::<SubmitError<NotSync>>();
    assert_send_sync::<TrySubmitError<NotSync>>();
    assert_send_sync::<RunError<NotSync>>();
    assert_send_sync::<TaskError>();
    type Inputs = futures_util::stream::Iter<std::vec::IntoIter<u32>>;
    assert_unpin::<MapUnordered<Inputs, u32>>();
    assert_send::<MapUnordered<Inputs, u32>>();
    assert_unpin::<MapOrdered<Inputs, u32>>();
    assert_send::<MapOrdered<Inputs, u32>>();
}

/// `TaskId`: "the order in which the pool accepted it, from 0", for each pool; a refused
/// submit takes no id.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn pin_task_ids_count_accepted_tasks_from_zero() {
    let pool = support::common_local(1, 1);
    let a = pool.submit(std::future::pending::<()>()).await.unwrap();
    let b = pool.submit(async {}).await.unwrap();
    assert!(pool.try_submit(async {}).is_err()); // full: refused, no id taken
    a.abort();
    let c = pool.submit(async {}).await.unwrap();
    assert_eq!(
        [a.id().as_u64(), b.id().as_u64(), c.id().as_u64()],
        [0, 1, 2]
    );
    let smart = support::smart_local(2);
    pool.wait().await;
    let s0 = smart.submit(|| async {}).await.unwrap();
    let s1 = smart.submit(|| async {}).await.unwrap();
    assert_eq!((s0.id().as_u64(), s1.id().as_u64()), (0, 1));
    assert_eq!(s0.id().to_string(), "0");
}

/// README ("Which pool do I want?"): a SmartAioPool's queue is "bounded FIFO (default
/// 1000)"; `SmartAioPool::new` "with the other settings at their defaults (queue 1000, 1
/// minimum worker, 5 s idle timeout)".
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn pin_smart_pool_defaults_queue_1000_and_idle_timeout_5_s() {
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let mut handles = Vec::new();
    for _ in 0..1001 {
        handles.push(pool.try_submit(std::future::pending::<()>).unwrap());
    }
    assert!(pool.try_submit(|| async {}).unwrap_err().is_full());
    pool.cancel_all().await;

    let pool = SmartAioPool::builder()
        .max_concurrency(4)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let gate = support::Gate::default();
    let hs: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            let g = gate.clone();
            v.push(
                pool.submit(move || {
                    let g = g.clone();
                    async move { g.wait().await }
                })
                .await
                .unwrap(),
            );
        }
        v
    };
    tokio::task::yield_now().await;
    assert_eq!(pool.worker_count(), 4);
    gate.open();
    for h in hs {
        h.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(4_900)).await;
    assert_eq!(
        pool.worker_count(),
        4,
        "retired before its 5 s idle timeout"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        pool.worker_count(),
        1,
        "not retired after its 5 s idle timeout"
    );
}

/// `SmartAioPool::submit`: "A recipe that panics when called counts as a panicking task";
/// `on_panic` is called for a detached one.
#[tokio::test(flavor = "current_thread")]
async fn pin_a_recipe_panicking_when_called_is_a_panicking_task_for_on_panic() {
    support::hide_panics(&["recipe boom"]);
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let pool = SmartAioPool::builder()
        .process_wide(false)
        .auto_shutdown(false)
        .on_panic(move |_, e| {
            assert!(e.is_panic());
            s.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    fn recipe() -> impl Fn() -> std::future::Ready<u32> + Send + Sync + 'static {
        || panic!("recipe boom")
    }
    let held = pool.submit(recipe()).await.unwrap();
    assert!(held.await.unwrap_err().is_panic());
    pool.submit(recipe()).await.unwrap().detach();
    pool.wait().await;
    assert_eq!(pool.stats().panicked, 2);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "on_panic: the detached task only"
    );
}

/// `ShutdownReport::finished`: "Tasks that finished (returned, panicked or were aborted)
/// between the start of the shutdown and its end"; `abandoned`: those dropped at the
/// deadline.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn pin_shutdown_report_counts() {
    let pool = support::common_local(4, 10);
    pool.run(async {}).await.unwrap(); // before the shutdown: not counted
    let ok = pool
        .submit(tokio::time::sleep(Duration::from_millis(10)))
        .await
        .unwrap();
    let aborted = pool.submit(std::future::pending::<()>()).await.unwrap();
    let stuck = pool.submit(std::future::pending::<()>()).await.unwrap();
    let queued: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(pool.submit(std::future::pending::<()>()).await.unwrap());
        }
        v
    };
    tokio::task::yield_now().await;
    let report = pool.shutdown_timeout(Duration::from_secs(1));
    aborted.abort();
    let report = report.await;
    assert!(ok.await.is_ok());
    assert_eq!(
        stuck.await.unwrap_err().cancel_reason(),
        Some(CancelReason::Abandoned)
    );
    for q in queued {
        assert!(q.await.unwrap_err().is_cancelled());
    }
    assert_eq!((report.finished(), report.abandoned()), (2, 4), "{report}");
}

/// Every pool has the README's surface (a compile check, run once each).
#[tokio::test(flavor = "current_thread")]
async fn pin_the_readme_surface_on_every_pool() {
    use futures_util::StreamExt;
    let c = support::common_local(2, 2);
    let n = NoQueueAioPool::builder()
        .max_concurrency(2)
        .process_wide(false)
        .build();
    let s = support::smart_local(2);
    let inputs = || futures_util::stream::iter(0..3u32);
    macro_rules! futures_pool {
        ($p:expr) => {{
            let p = &$p;
            p.submit(async {}).await.unwrap().await.unwrap();
            p.try_submit(async {}).unwrap().await.unwrap();
            p.run(async {}).await.unwrap();
            p.batch_submit([async {}]).await.unwrap();
            p.batch_run([async {}]).await.unwrap();
            assert_eq!(
                p.map_unordered(inputs(), |i| async move { i })
                    .count()
                    .await,
                3
            );
            assert_eq!(
                p.map_ordered(inputs(), |i| async move { i }).count().await,
                3
            );
            let mut g = p.group();
            g.submit(async { 1 }).await.unwrap();
            assert_eq!(g.join_all().await.len(), 1);
            p.submit_with(async {}, SubmitOptions::new())
                .await
                .unwrap()
                .detach();
            p.try_submit_with(async {}, SubmitOptions::new())
                .unwrap()
                .detach();
            p.set_max_concurrency(3);
            p.wait().await;
            p.cancel_all().await;
            let _ = (p.stats(), p.is_closed(), p.max_concurrency(), p.name());
            p.shutdown_timeout(Duration::from_secs(1)).await;
            p.shutdown().await;
        }};
    }
    futures_pool!(c);
    futures_pool!(n);
    s.submit(|| async {}).await.unwrap().await.unwrap();
    s.try_submit(|| async {}).unwrap().await.unwrap();
    s.run(|| async {}).await.unwrap();
    s.batch_submit([|| async {}]).await.unwrap();
    s.batch_run([|| async {}]).await.unwrap();
    assert_eq!(
        s.map_unordered(inputs(), |i| move || async move { i })
            .count()
            .await,
        3
    );
    assert_eq!(
        s.map_ordered(inputs(), |i| move || async move { i })
            .count()
            .await,
        3
    );
    let mut g = s.group();
    g.submit(|| async { 1 }).await.unwrap();
    assert_eq!(g.join_all().await.len(), 1);
    s.submit_with(|| async {}, SubmitOptions::new())
        .await
        .unwrap()
        .detach();
    s.try_submit_with(|| async {}, SubmitOptions::new())
        .unwrap()
        .detach();
    s.set_max_concurrency(3);
    s.wait().await;
    s.wait_for_all().await;
    s.cancel_all().await;
    let _ = (s.stats(), s.is_closed(), s.max_concurrency(), s.name());
    s.shutdown_timeout(Duration::from_secs(1)).await;
    s.shutdown().await;
}

/// The README's quick start, as written (its `main` in a child process, real time): it
/// runs, every job completes, and it takes "about a second in all".
#[test]
fn pin_the_readme_quick_start_runs_as_written() {
    let c = support::run_child("quick-start", 60);
    let lines = support::lines(&c.dir.join("done"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert!(c.stderr.is_empty(), "stderr: {}", c.stderr);
    let line = lines.first().expect("the child wrote nothing");
    let (completed, secs) = line.split_once(' ').unwrap();
    assert_eq!(completed, "10001");
    let secs: f64 = secs.parse().unwrap();
    assert!(
        (0.9..10.0).contains(&secs),
        "took {secs} s, not about a second"
    );
}

/// `smart_run` with a SmartAioPool whose `rate_limit` window never ends (`per` =
/// `Duration::MAX`) and a task past its `count`: the README and `rate_limit`'s docs say
/// such tasks are cancelled at the process exit, with a warning, "rather than keep the
/// process from exiting"; `smart_run(main())` is the README's first way of running such
/// a pool. `smart_run` waits for the held-back task for good instead: the process never
/// ends.
#[test]
fn smart_run_with_a_task_a_never_ending_window_holds_back_lets_the_process_exit() {
    let c = support::run_child("smart-run-held-back", 15);
    let lines = support::lines(&c.dir.join("done"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert!(
        c.code.is_some(),
        "the process hung in smart_run (killed after 15 s); wrote {lines:?}; stderr: {}",
        c.stderr
    );
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(lines, ["ran", "returned"], "stderr: {}", c.stderr);
    assert!(
        c.stderr
            .contains("1 task(s) of SmartAioPool \"quota\" were never started"),
        "no warning at exit: {}",
        c.stderr
    );
}

#[test]
#[ignore = "a child process of the tests in this file"]
fn child() {
    let (scenario, dir) = support::child_scenario();
    let done = dir.join("done");
    match scenario.as_str() {
        "quick-start" => {
            // README.md, "Quick start", verbatim but for the two lines marked.
            use nb_aiopool::{shutdown_all_common_aiopools, CommonAioPool};

            async fn fetch(i: u64) -> u64 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                i * 2
            }

            #[tokio::main]
            async fn quick_start(done: &std::path::Path) {
                let started = std::time::Instant::now(); // (added)
                                                         // At most 100 jobs running, at most 1000 more waiting.
                let pool = CommonAioPool::new(100, 1000);

                // run = submit and wait for the result.
                assert_eq!(pool.run(fetch(21)).await.unwrap(), 42);

                // submit returns a handle as soon as the job is queued; it waits while the pool is
                // full (backpressure), so this loop keeps memory flat however long it is.
                for i in 0..10_000 {
                    pool.submit(fetch(i)).await.unwrap().detach(); // runs on without anyone waiting
                }

                // Wait for everything still queued or running; without it they are cancelled when
                // the runtime shuts down (and a warning says how many). About a second in all.
                shutdown_all_common_aiopools().await;
                let secs = started.elapsed().as_secs_f64(); // (added)
                let line = format!("{} {secs}", pool.stats().completed);
                support::append(done, &line);
            }
            quick_start(&done);
        }
        "smart-run-held-back" => {
            let pool = SmartAioPool::builder()
                .name("quota")
                .rate_limit(1, Duration::MAX)
                .build();
            let d = done.clone();
            nb_aiopool::smart_run(async move {
                for _ in 0..2 {
                    let d = d.clone();
                    pool.submit(move || {
                        let d = d.clone();
                        async move { support::append(&d, "ran") }
                    })
                    .await
                    .unwrap()
                    .detach();
                }
            });
            support::append(&done, "returned");
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// `batch_submit` and `batch_run`: a rejection "stops at the first rejected future and
/// gives it back; the ones before it stay submitted (their handles are dropped, so they run
/// detached) and the rest of the iterator is dropped" (`batch_run`: "As `batch_submit`").
#[tokio::test(flavor = "current_thread")]
async fn pin_a_batch_stopped_by_a_rejection_runs_the_jobs_before_it_and_drops_the_rest() {
    for run in [false, true] {
        let pool = support::common_local(2, 10);
        let done = Arc::new(AtomicUsize::new(0));
        let made = Arc::new(AtomicUsize::new(0));
        let (closer, d, m) = (pool.clone(), done.clone(), made.clone());
        let jobs = (0..5u32).map(move |i| {
            m.fetch_add(1, Ordering::SeqCst);
            if i == 2 {
                drop(closer.shutdown()); // closes at the call: job 2 is refused
            }
            let d = d.clone();
            async move {
                tokio::task::yield_now().await;
                d.fetch_add(1, Ordering::SeqCst);
                i
            }
        });
        let back = if run {
            pool.batch_run(jobs).await.unwrap_err().into_inner()
        } else {
            pool.batch_submit(jobs).await.unwrap_err().into_inner()
        };
        assert_eq!(back.await, 2, "the rejected job comes back, unpolled");
        pool.shutdown().await;
        assert_eq!(
            made.load(Ordering::SeqCst),
            3,
            "the rest of the iterator was pulled"
        );
        assert_eq!(
            done.load(Ordering::SeqCst),
            3,
            "the jobs before it ran (run: {run})"
        );
        assert_eq!(pool.stats().completed, 2);
    }
}

/// `TaskHandle`'s `poll`: "Panics if polled again after it returned its result."
#[tokio::test(flavor = "current_thread")]
async fn pin_a_handle_polled_again_after_its_result_panics() {
    let pool = support::common_local(1, 1);
    let mut handle = pool.submit(async { 1 }).await.unwrap();
    assert_eq!((&mut handle).await.unwrap(), 1);
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let _ = std::pin::Pin::new(&mut handle).poll(&mut cx);
    }));
    let msg = support::panic_message(&*again.unwrap_err());
    assert!(msg.contains("polled after it returned its result"), "{msg}");
}

/// `SubmitOptions`: "Each is ignored by a pool that has no use for it: a weight counts
/// only in a pool built with `weight_capacity`, a key only in a pool built with
/// `max_per_key`."
#[tokio::test(flavor = "current_thread")]
async fn pin_weights_and_keys_are_ignored_by_pools_without_their_limits() {
    let pool = support::common_local(3, 3);
    let gauge = support::Gauge::default();
    let gate = support::Gate::default();
    let mut handles = Vec::new();
    for _ in 0..3 {
        let (g, gate) = (gauge.clone(), gate.clone());
        let opts = SubmitOptions::new().weight(u32::MAX).key("one-host");
        let job = async move {
            let _running = g.enter();
            gate.wait().await;
        };
        handles.push(pool.submit_with(job, opts).await.unwrap());
    }
    let opts = SubmitOptions::new().weight(u32::MAX);
    let h = pool.try_submit_with(async { 7 }, opts).unwrap();
    while gauge.now() < 3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        pool.stats().running,
        3,
        "keys and weights held nothing back"
    );
    gate.open();
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(h.await.unwrap(), 7);
}
