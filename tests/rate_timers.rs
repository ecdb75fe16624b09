//! Findings 56–59 of RELIABILITY.md: a review of a803433..5862fc8 (findings 41–48: the
//! exit take-over's `fill_free` guard, `Job::aborted`'s reason, `later_by`, the timers
//! check of rate-limited pools, the admission split, the priority heap's `count`). Each
//! test here failed on 5862fc8; all four came from the timers check, since redone.
//!
//! Findings 173–176: a review of flow control on c022778 (a window that never ends,
//! `rate_limit(n, Duration::MAX)`, and the rate timer's hold on the pool). Each test
//! failed on c022778 but the control and the one that pins what the hold is for.

// A `block_on` block hands back a handle, to await on another thread.
#![allow(clippy::async_yields_async)]

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use nb_aiopool::CommonAioPool;
use support::{Gate, Gauge};

/// A multi-thread runtime with tokio's time driver.
fn timed_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A multi-thread runtime without the time driver (its workers run spawned tasks).
fn untimed_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap()
}

fn message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// c3de560: a rate-limited pool "panics at submit on a runtime without timers", and
/// `Engine::push_with` gives the admission permit back (`unadmit`) before it panics. A
/// `map_unordered` / `map_ordered` stream holds its permit in `Permit::Held` while it pushes
/// ("if `f` panics, it is still here to be given back"), and `Mapper::drop` gives a held
/// permit back: the permit is given back twice, and the pool admits one task more than
/// `max_concurrency + max_queue_size` for the rest of its life.
#[test]
fn a_stream_refused_for_want_of_timers_does_not_grow_the_pool() {
    let timed = timed_runtime();
    let pool = timed.block_on(async {
        CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(1)
            .process_wide(false)
            .rate_limit(1000, Duration::from_secs(1))
            .build()
    });
    let untimed = untimed_runtime();
    let p = pool.clone();
    let refused = catch_unwind(AssertUnwindSafe(|| {
        untimed.block_on(async move {
            let mut results =
                p.map_unordered(futures_util::stream::iter([1u32]), |i| async move { i });
            results.next().await
        })
    }));
    let msg = message(&*refused.expect_err("the stream's push on a runtime without timers panics"));
    assert!(msg.contains("rate_limit"), "{msg}");
    drop(untimed);
    // From the timed runtime: one running, one queued, then full.
    timed.block_on(async {
        let gate = Gate::default();
        let mut accepted = 0;
        for _ in 0..3 {
            let g = gate.clone();
            if pool.try_submit(async move { g.wait().await }).is_ok() {
                accepted += 1;
            }
        }
        gate.open();
        assert_eq!(
            accepted, 2,
            "a pool of max_concurrency 1 + max_queue_size 1 accepted {accepted} tasks at \
             once: the refused stream push gave its admission permit back twice"
        );
    });
}

/// c3de560: "a rate-limited pool panics at submit on a runtime without timers instead of
/// hanging". The refused submit still made its runtime the pool's home (`Runtimes::enter`
/// runs before the `has_timers` check), and the pool arms its rate timer on the runtime
/// `fill_free` is given: the home, for a rate tick. So after one refused submit from a
/// runtime without timers, tasks of a live, timed runtime waiting for the rate window
/// hang: the claimer the rate tick spawns on the home arms the next rate timer there, that
/// timer task panics inside tokio, and nothing looks at the queue again (while the pool's
/// running tasks go on).
#[test]
fn a_refused_submit_from_a_runtime_without_timers_does_not_strand_rate_limited_tasks() {
    let timed = timed_runtime();
    let window = Duration::from_millis(200);
    let pool = timed.block_on(async {
        CommonAioPool::builder()
            .max_concurrency(4)
            .max_queue_size(10)
            .process_wide(false)
            .rate_limit(1, window)
            .build()
    });
    let gate = Gate::default();
    let gauge = Gauge::default();
    // Three tasks of the timed runtime: the first starts, the other two wait for the rate
    // window (one start per 200 ms); the first two then stay running until the gate opens.
    let handles = timed.block_on(async {
        let mut handles = Vec::new();
        for _ in 0..3 {
            let (g, n) = (gate.clone(), gauge.clone());
            handles.push(
                pool.submit(async move {
                    let _in = n.enter();
                    g.wait().await
                })
                .await
                .unwrap(),
            );
        }
        handles
    });
    // A submit from a runtime without timers: refused (a panic), as documented.
    let untimed = untimed_runtime();
    let p = pool.clone();
    let refused = catch_unwind(AssertUnwindSafe(|| {
        untimed.block_on(async move { p.submit(async {}).await.map(drop) })
    }));
    assert!(
        refused.is_err(),
        "the submit from a runtime without timers is refused"
    );
    // The window lets the second task start at ~200 ms and the third at ~400 ms.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while gauge.started() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = gauge.started();
    gate.open();
    timed.block_on(async {
        for h in handles {
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
    });
    drop(untimed);
    assert_eq!(
        started, 3,
        "3 s after three submits to a pool allowing one start per 200 ms (4 slots), only \
         {started} had started: a refused submit from a runtime without timers made that \
         runtime the pool's home, and the rate timer armed there panicked"
    );
}

/// c3de560: "a rate-limited pool panics at submit on a runtime without timers instead of
/// hanging", checked for the submitter's runtime only. A SmartAioPool re-runs a task whose
/// runtime ended on another live runtime (`live_or_any`: the home, else the newest), which
/// nothing checks: here the runtime the pool was built in, which has no time driver. The
/// rate window holds the re-run back, the rate timer armed on that runtime panics inside
/// tokio, and the task's handle never resolves (neither run again nor cancelled).
///
/// Fixed by refusing such a runtime at the door: a rate-limited pool built inside it panics
/// at `build`, with the crate's message (a clear refusal, not a hang, passes).
#[test]
fn a_rate_limited_rerun_moved_to_a_runtime_without_timers_does_not_hang() {
    let untimed = untimed_runtime();
    let built = catch_unwind(AssertUnwindSafe(|| {
        untimed.block_on(async {
            nb_aiopool::SmartAioPool::builder()
                .max_concurrency(4)
                .min_workers(4)
                .process_wide(false)
                .auto_shutdown(false)
                .rate_limit(1, Duration::from_millis(200))
                .build()
        })
    }));
    let pool = match built {
        Ok(pool) => pool,
        Err(p) => {
            let msg = message(&*p);
            assert!(
                msg.contains("rate_limit") && msg.contains("enable_time"),
                "refused with an unclear message: {msg:?}"
            );
            return;
        }
    };
    let timed = timed_runtime();
    let gauge = Gauge::default();
    let gate = Gate::default();
    let handle = timed.block_on(async {
        let (n, g) = (gauge.clone(), gate.clone());
        let handle = pool
            .submit(move || {
                let (n, g) = (n.clone(), g.clone());
                async move {
                    let _in = n.enter();
                    g.wait().await;
                    7
                }
            })
            .await
            .unwrap();
        while gauge.started() < 1 {
            tokio::task::yield_now().await;
        }
        handle
    });
    // Its runtime ends mid-run: the task is to run again, on the only live runtime.
    drop(timed);
    gate.open();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(handle.blocking_wait());
    });
    let outcome = rx.recv_timeout(Duration::from_secs(3));
    drop(untimed);
    assert!(
        outcome.is_ok(),
        "3 s after its runtime ended, a SmartAioPool task (one start per 200 ms) was neither \
         run again nor cancelled: its re-run went to a runtime without timers (started: {})",
        gauge.started()
    );
}

/// c3de560: `Runtimes::has_timers` finds out whether a runtime has timers by making a
/// tokio `Sleep` inside `catch_unwind`; on a runtime without timers tokio panics, and the
/// process's panic hook runs, inside `Engine::push_with`, with the engine's lock held. The
/// crate's rule is that no user code runs under that lock (findings 35 and 42: a tracing
/// subscriber that uses the pool). A panic hook is user code: one that looks at the pool
/// (its `stats()`, or a log call whose subscriber uses the pool) deadlocks the submitter
/// instead of the documented panic. Played in a child process (the lock stays held).
#[test]
fn the_timers_probe_runs_no_panic_hook_under_the_pools_lock() {
    let child = support::run_child("probe-hook", 10);
    let got = support::lines(&child.dir.join("out"));
    let _ = std::fs::remove_dir_all(&child.dir);
    assert!(
        got.iter()
            .any(|l| l.starts_with("panicked:") && l.contains("rate_limit")),
        "a submit from a runtime without timers, with a panic hook that reads the pool's \
         stats, did not panic with the documented message within 5 s (the probe ran the hook \
         under the pool's lock, and `stats()` deadlocked): {got:?} (exit {:?})",
        child.code
    );
}

/// Finding 173 (a review of flow control, 2026-12-05). `rate_limit(count, Duration::MAX)`
/// is documented as "at most `count` starts, ever". The engine still armed a
/// rate timer for the window's end, which `later_by` puts ~30 years after the first start;
/// under tokio's paused clock (the crate's own way to test rate limits: "Exact, tested with
/// paused time") the runtime auto-advances to that timer when idle, the window "ends", and
/// a second task starts.
#[tokio::test(start_paused = true)]
async fn a_rate_window_that_never_ends_lets_no_second_task_start_under_paused_time() {
    let pool = one_start_ever().await;
    let second = pool.submit(async { 7 }).await.unwrap();
    let forty_years = Duration::from_secs(40 * 365 * 86_400);
    let r = tokio::time::timeout(forty_years, second).await;
    assert!(
        r.is_err(),
        "a second task started under rate_limit(1, Duration::MAX): {r:?} (stats {:?})",
        pool.stats()
    );
}

/// Finding 174 (the same review). The same ~30-year rate timer was a tokio task holding a strong
/// `Arc<Engine>`. Once the held-back task is aborted and the pool shut down and dropped,
/// nothing is left for the timer to do, but it keeps the pool's engine (its state, its
/// `on_panic` callback and what that captured) alive until the runtime shuts down: for a
/// `#[tokio::main]` program, for good. A pool made per request or per tenant leaks one
/// engine each (finding 164's class). The control below, without a rate limit, frees it.
#[tokio::test(start_paused = true)]
async fn a_never_ending_rate_window_does_not_keep_a_shut_down_pool_alive() {
    assert_eq!(
        engine_refs_left(Some(Duration::MAX)).await,
        1,
        "the shut-down, dropped pool's engine (and its on_panic closure) is still alive"
    );
}

/// The control for the test above: the same pool without a rate limit is freed.
#[tokio::test(start_paused = true)]
async fn control_a_shut_down_pool_without_rate_limit_is_freed() {
    assert_eq!(engine_refs_left(None).await, 1);
}

/// Finding 176 (the same review): with a finite window the rate timer kept a pool whose
/// queued tasks were all aborted, and which was shut down and dropped, alive until the
/// timer fired, up to `per` later (here an hour; "10 per hour" pools made per request
/// piled up that long). The timer now lets the engine go once the pool is closed and its
/// queue empty.
#[tokio::test(start_paused = true)]
async fn a_finite_rate_window_does_not_keep_a_shut_down_pool_alive_until_its_timer_fires() {
    assert_eq!(
        engine_refs_left(Some(Duration::from_secs(3600))).await,
        1,
        "kept alive by the rate timer"
    );
}

/// Finding 176, the other orders: the pool dropped while a task is held back (the timer
/// must keep the engine), then the task aborted (now it need not), or cancelled by a
/// `shutdown_timeout`.
#[tokio::test(start_paused = true)]
async fn a_rate_timer_lets_a_dropped_pool_go_once_its_held_back_tasks_are_gone() {
    for by_abort in [true, false] {
        let (pool, marker) = marked_pool(Some(Duration::from_secs(3600)));
        pool.run(async {}).await.unwrap();
        let held_back = pool.submit(async { 7 }).await.unwrap();
        tokio::task::yield_now().await;
        if by_abort {
            drop(pool);
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(Arc::strong_count(&marker), 2, "a task is still held back");
            held_back.abort();
            assert!(held_back.await.unwrap_err().is_cancelled());
        } else {
            let report = pool.shutdown_timeout(Duration::from_millis(5)).await;
            assert_eq!(report.abandoned(), 1, "{report:?}");
            drop((pool, held_back));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            Arc::strong_count(&marker),
            1,
            "kept alive by the rate timer (by abort: {by_abort})"
        );
    }
}

/// Finding 176, the last order: the queue of a dropped pool emptied by the end of the
/// runtime its held-back task came from, the timer armed on another runtime.
#[test]
fn a_rate_timer_lets_a_dropped_pool_go_once_a_runtimes_end_sweeps_its_queue() {
    let home = timed_runtime();
    let (pool, marker) = home.block_on(async {
        let (pool, marker) = marked_pool(Some(Duration::from_secs(3600)));
        pool.run(async {}).await.unwrap();
        (pool, marker)
    });
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Held back by the window; its timer goes to the multi-thread runtime.
    let held_back = other.block_on(pool.submit(async { 7 })).unwrap();
    drop(pool);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(Arc::strong_count(&marker), 2, "a task is still held back");
    drop(other);
    let outcome = home.block_on(held_back);
    assert!(outcome.unwrap_err().is_cancelled());
    let t0 = std::time::Instant::now();
    while Arc::strong_count(&marker) > 1 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        Arc::strong_count(&marker),
        1,
        "kept alive by the rate timer"
    );
}

/// What the rate timer's hold is for: a pool dropped while the window holds a task back
/// still starts it when the window reopens.
#[tokio::test(start_paused = true)]
async fn a_dropped_pool_starts_its_held_back_task_when_the_window_reopens() {
    let pool = CommonAioPool::builder()
        .max_concurrency(2)
        .rate_limit(1, Duration::from_secs(10))
        .process_wide(false)
        .build();
    pool.run(async {}).await.unwrap();
    let t0 = tokio::time::Instant::now();
    let held_back = pool.submit(async { 7 }).await.unwrap();
    drop(pool);
    assert_eq!(held_back.await.unwrap(), 7);
    assert_eq!(t0.elapsed(), Duration::from_secs(10));
}

/// A pool of 2 with `rate_limit(1, Duration::MAX)` that spent its one start.
async fn one_start_ever() -> CommonAioPool {
    let pool = CommonAioPool::builder()
        .max_concurrency(2)
        .rate_limit(1, Duration::MAX)
        .process_wide(false)
        .build();
    pool.run(async {}).await.unwrap();
    pool
}

/// A pool of 2 with `rate_limit(1, per)` (or none) whose `on_panic` closure holds a
/// clone of the returned marker: the marker's count is 1 once the pool's engine is gone.
fn marked_pool(per: Option<Duration>) -> (CommonAioPool, Arc<()>) {
    let marker = Arc::new(());
    let captured = marker.clone();
    let mut builder = CommonAioPool::builder()
        .max_concurrency(2)
        .on_panic(move |_, _| {
            let _ = &captured;
        })
        .process_wide(false);
    if let Some(per) = per {
        builder = builder.rate_limit(1, per);
    }
    (builder.build(), marker)
}

/// A pool of 2 with `rate_limit(1, per)` (or none) that runs one task, then holds back a
/// second (aborted), is shut down and dropped: how many references to what its
/// `on_panic` closure captured are left, 10 ms later (1: the engine is gone).
async fn engine_refs_left(per: Option<Duration>) -> usize {
    let (pool, marker) = marked_pool(per);
    pool.run(async {}).await.unwrap(); // the window's one start
    let held_back = pool.submit(async { 7 }).await.unwrap();
    tokio::task::yield_now().await;
    held_back.abort();
    pool.shutdown().await;
    assert_eq!(pool.stats().queued, 0);
    drop(pool);
    tokio::time::sleep(Duration::from_millis(10)).await;
    Arc::strong_count(&marker)
}

/// Finding 175 (a review of flow control, 2026-12-05). A SmartAioPool (with `auto_shutdown`, the default) built with
/// `rate_limit(1, Duration::MAX)` ("at most 1 start, ever", as documented) and given two
/// tasks: when `main` returns, the at-exit hook takes the pool over and waits for every
/// task, including the one the window will never let start, so the process never exits
/// (here killed after 20 s). Nothing documents this (the SmartAioPool docs list "a task
/// that never finishes" among what the exit cannot cover, not a task that may never start).
#[test]
fn a_smart_pool_whose_rate_window_never_reopens_does_not_hang_the_process_exit() {
    let (code, stderr, done) = exit_child("smart-never-window", "done");
    assert!(
        code.is_some(),
        "the process never exited (killed after 20 s); stderr: {stderr}"
    );
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(done.len(), 1, "the one start the window allows: {done:?}");
    assert!(
        warned_never_started(&stderr, 1),
        "the exit says which tasks it cancelled and why: {stderr}"
    );
}

/// Runs `scenario` of [`child`] in a child process (killed after 20 s): its exit code,
/// its stderr and the lines it wrote to `file`.
fn exit_child(scenario: &str, file: &str) -> (Option<i32>, String, Vec<String>) {
    let child = support::run_child(scenario, 20);
    let lines = support::lines(&child.dir.join(file));
    let _ = std::fs::remove_dir_all(&child.dir);
    (child.code, child.stderr, lines)
}

/// Whether the exit warned that `n` tasks of a SmartAioPool were never started.
fn warned_never_started(stderr: &str, n: usize) -> bool {
    stderr.contains(&format!("{n} task(s) of SmartAioPool"))
        && stderr.contains("were never started")
}

/// Finding 180 (a review of 85cff3c, finding 175's fix). The exit take-over cancels every queued job
/// once a window that never reopens is full, and so also the re-run of a task
/// *interrupted* mid-run (its runtime ended, or `process::exit` was called while it
/// waited): the window's one start is that task's own first run, and its re-run counts
/// as a second. The docs promise such a task runs again (SmartAioPool, "Shutdown": "run
/// **again from its recipe**: delivery is at least once"), and name only "tasks past
/// `count`" as cancelled (`rate_limit`); the exit's warning says the task was "never
/// started". Here one task, the one start the window allows, is interrupted; on 85cff3c
/// it is not run again, and the warning calls it never started (before 85cff3c the exit
/// hung on it instead).
#[test]
fn an_interrupted_task_within_a_never_ending_window_is_run_again_at_exit() {
    for scenario in [
        "smart-never-window-rerun-drop",
        "smart-never-window-rerun-exit",
    ] {
        let (code, stderr, runs) = exit_child(scenario, "runs");
        assert_eq!(code, Some(0), "{scenario}: stderr: {stderr}");
        assert!(
            runs == ["first", "again"] && !stderr.contains("never started"),
            "{scenario}: the interrupted task was not run again (runs {runs:?}); stderr: {stderr}"
        );
    }
}

/// Finding 181 (a review of 85cff3c, finding 175's fix). The exit reads `never_started` once, when
/// `take_over` returns; a job the window holds back only after that (the window still
/// had a start left at the take-over, which a job started by the take-over spent) is
/// cancelled too, but no warning is printed: the docs say such tasks "are cancelled
/// (their handles say `RuntimeShutdown`) with a warning on stderr". Here
/// `rate_limit(2, Duration::MAX)`: one task ran, then `main` returns right after queueing
/// two more; the exit starts one and cancels the other in silence.
#[test]
fn a_task_cancelled_after_the_take_over_by_a_never_ending_window_is_reported() {
    let (code, stderr, done) = exit_child("smart-never-window-late", "done");
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(done.len(), 2, "the two starts the window allows: {done:?}");
    assert!(
        warned_never_started(&stderr, 1),
        "a task was cancelled at the exit without the warning: stderr {stderr:?}"
    );
}

/// Finding 182 (a review of 85cff3c, finding 173's fix, incomplete). Without the timer, a window that
/// never ends is still ended by `RateWindow::expire`, which drops a start once the clock
/// passes `later_by(t, Duration::MAX)`, about 30 years after it: under tokio's paused
/// clock anything that sleeps that long (here a `sleep`, as finding 173's test's 40-year
/// `timeout` does) lets the next submit start a task past `count`.
#[tokio::test(start_paused = true)]
async fn a_rate_window_that_never_ends_stays_full_after_thirty_paused_years() {
    let pool = one_start_ever().await;
    tokio::time::sleep(Duration::from_secs(31 * 365 * 86_400)).await;
    let second = pool.submit(async { 7 }).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(1), second).await;
    assert!(
        r.is_err(),
        "a second task started under rate_limit(1, Duration::MAX): {r:?} (stats {:?})",
        pool.stats()
    );
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = support::child_scenario();
    let out = dir.join("out");
    match scenario.as_str() {
        "probe-hook" => {
            let timed = timed_runtime();
            let pool = timed.block_on(async {
                CommonAioPool::builder()
                    .max_concurrency(2)
                    .max_queue_size(2)
                    .process_wide(false)
                    .rate_limit(10, Duration::from_secs(1))
                    .build()
            });
            let seen = pool.clone();
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // A panic hook that reports the pool's figures (or logs through a
                // subscriber that does).
                let _ = seen.stats();
                previous(info);
            }));
            let (tx, rx) = std::sync::mpsc::channel();
            let p = pool.clone();
            std::thread::spawn(move || {
                let untimed = untimed_runtime();
                let r = catch_unwind(AssertUnwindSafe(|| {
                    untimed.block_on(async move { p.submit(async {}).await.map(drop) })
                }));
                let _ = tx.send(r.map_err(|p| message(&*p)));
            });
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Err(msg)) => support::append(&out, &format!("panicked: {msg}")),
                Ok(Ok(_)) => support::append(&out, "accepted"),
                Err(_) => support::append(&out, "hung"),
            }
            // The pool's lock may be held for good: leave at once.
            std::process::exit(0);
        }
        "smart-never-window" => {
            // What `#[tokio::main]` expands to: the runtime is dropped when main returns.
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let pool = nb_aiopool::SmartAioPool::builder()
                    .max_concurrency(2)
                    .rate_limit(1, Duration::MAX)
                    .build();
                for i in 0..2 {
                    let dir = dir.clone();
                    pool.submit(move || {
                        let dir = dir.clone();
                        async move { support::append(&dir.join("done"), &i.to_string()) }
                    })
                    .await
                    .unwrap()
                    .detach();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
        "smart-never-window-rerun-drop" | "smart-never-window-rerun-exit" => {
            let exit = scenario.ends_with("exit");
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let pool = nb_aiopool::SmartAioPool::builder()
                    .max_concurrency(2)
                    .rate_limit(1, Duration::MAX)
                    .build();
                let runs = dir.join("runs");
                pool.submit(move || {
                    let runs = runs.clone();
                    async move {
                        if support::lines(&runs).is_empty() {
                            support::append(&runs, "first");
                            // Interrupted here: the runtime ends, or the process exits.
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        } else {
                            support::append(&runs, "again");
                        }
                    }
                })
                .await
                .unwrap()
                .detach();
                support::appended(dir.join("runs")).await;
                if exit {
                    std::process::exit(0);
                }
            });
        }
        "smart-never-window-late" => {
            // `#[tokio::main(flavor = "current_thread")]`: the jobs queued last have not
            // been claimed when `main` returns.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let pool = nb_aiopool::SmartAioPool::builder()
                    .max_concurrency(2)
                    .rate_limit(2, Duration::MAX)
                    .build();
                for i in 0..3 {
                    let dir = dir.clone();
                    let handle = pool
                        .submit(move || {
                            let dir = dir.clone();
                            async move { support::append(&dir.join("done"), &i.to_string()) }
                        })
                        .await
                        .unwrap();
                    if i == 0 {
                        handle.await.unwrap(); // the window's first start
                    } else {
                        handle.detach();
                    }
                }
            });
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// Finding 183 (a review of 7a1bab0; finding 180's fix, incomplete). A job a slot took from the queue
/// for another runtime (a *bound* slot, spawned there with the job, which spent a start
/// of the window when it was taken) is queued again, first, when that runtime drops the
/// slot before running it: `Slot::drop` pushes it back without `rerun_queued`, so in a
/// window that never reopens it keeps the start it never used, and (here `rate_limit(2,
/// Duration::MAX)`, one task run) it can never start: its handle waits for ever, in a
/// live pool.
#[test]
fn a_job_handed_back_by_a_bound_slot_gives_back_its_start_in_a_never_ending_window() {
    let main = timed_runtime();
    let pool = nb_aiopool::SmartAioPool::builder()
        .max_concurrency(1)
        .rate_limit(2, Duration::MAX)
        .process_wide(false)
        .build();
    let (open, gate) = tokio::sync::oneshot::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(Some(gate)));
    // A: the window's first start, held running on `main` until B is queued.
    let a = main.block_on(async {
        pool.submit(move || {
            let gate = gate.lock().unwrap().take();
            async move {
                if let Some(g) = gate {
                    let _ = g.await;
                }
            }
        })
        .await
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(50));
    // B: queued from a current-thread runtime that is not driven afterwards.
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let b = other.block_on(async { pool.submit(|| async { 7 }).await.unwrap() });
    // A ends: its slot on `main` takes B (the window's second start) and hands it to a
    // slot spawned on `other`, which is never polled.
    let _ = open.send(());
    main.block_on(async { a.await.unwrap() });
    std::thread::sleep(Duration::from_millis(50));
    // `other` ends: B is queued again, on any runtime.
    drop(other);
    let r = main.block_on(async { tokio::time::timeout(Duration::from_secs(2), b).await });
    assert!(
        matches!(r, Ok(Ok(7))),
        "B never started: {r:?} (stats {:?})",
        pool.stats()
    );
}
