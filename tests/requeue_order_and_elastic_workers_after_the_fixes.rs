//! A read-only review of findings 346–350 (RELIABILITY.md; a helper, 2026-12-06, on
//! 56af2a4): the exit take-over's start mark, tasks taken and never started put back at
//! their place, a stranded pool's reservations given back, elastic workers restarted from
//! `min_workers` at the exit, and idle slot tasks kept no more than idle workers. One
//! finding (354: an interrupted run goes before a task put back unstarted); the other
//! tests pin what held. The Redis part (Redis 84) is in
//! `redis/tests/review_redis8.rs`.
#![allow(clippy::async_yields_async)]

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{SmartAioPool, SubmitOptions, TaskHandle};
use support::{append, child_scenario, lines, run_child, within};

type Recipe = Box<dyn Fn() -> Pin<Box<dyn Future<Output = u32> + Send>> + Send + Sync>;
type Log = Arc<Mutex<Vec<String>>>;

/// A recipe that logs `name` at each run and returns `value`.
fn logged(log: &Log, name: &'static str, value: u32) -> Recipe {
    let log = log.clone();
    Box::new(move || {
        log.lock().unwrap().push(name.to_owned());
        Box::pin(async move { value })
    })
}

/// A recipe whose first run logs "<name>1" and never ends, and whose later runs log
/// "<name>2" and return `value`; `started` counts the runs.
fn cut_once(log: &Log, name: &'static str, value: u32, started: &Arc<AtomicUsize>) -> Recipe {
    let (log, started) = (log.clone(), started.clone());
    Box::new(move || {
        let first = started.fetch_add(1, Ordering::SeqCst) == 0;
        log.lock()
            .unwrap()
            .push(format!("{name}{}", if first { 1 } else { 2 }));
        Box::pin(async move {
            if first {
                std::future::pending::<()>().await;
            }
            value
        })
    })
}

/// 347, a case the new order still gets wrong. A SmartAioPool that re-runs interrupted
/// tasks: U is submitted and handed to a slot on a runtime that is then not driven (U never
/// starts); the pool grows and I, submitted after U, starts on another runtime and is cut
/// off there (its runtime dropped first); then U's runtime is dropped. The user expects,
/// from `SubmitOptions::priority`: "queued tasks keep their priority order, but for
/// interrupted runs queued again (at the exit or a runtime's end), which go first. A task
/// taken for a slot that never started it ... goes back to its place by priority and
/// submit order": I's re-run first, then U, then Q (queued, same priority, submitted
/// last). What happens: U, put back "at its place by seq", goes ahead of I's re-run (I's
/// seq is later): `left: ["U", "I2", "Q"]`. At the exit the take-over queues I first and
/// then puts U back the same way (the same order). `Queue::put_back`'s own doc admits it
/// ("in a ring it may go ahead of an item pushed to the front with a later seq"); the
/// user-facing doc says interrupted runs go first.
#[test]
fn an_interrupted_run_goes_before_a_task_put_back_unstarted() {
    let log: Log = Default::default();
    let pool = SmartAioPool::builder()
        .name("rofix2-order")
        .max_concurrency(1)
        .rerun_interrupted(true)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    // A runs on rt1; U (from rt2) is handed to a slot on rt2, not driven: never started.
    let (rt1, rt2, u) = support::smart_handed_to_an_undriven_runtime(&pool, logged(&log, "U", 2));
    assert!(log.lock().unwrap().is_empty(), "U has not started");
    // One more slot: I starts on rt4 (driven while it starts) and is cut off there.
    pool.set_max_concurrency(2);
    let started = Arc::new(AtomicUsize::new(0));
    let rt4 = support::current_thread();
    let i = rt4.block_on(async {
        let i = pool.submit(cut_once(&log, "I", 3, &started)).await.unwrap();
        while started.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        i
    });
    // Q, submitted last (from rt1, which ends up the only runtime), is queued.
    let q = rt1.block_on(async { pool.submit(logged(&log, "Q", 4)).await.unwrap() });
    assert_eq!(pool.stats().queued, 1, "Q is queued");
    // One at a time from now on, so that the runs follow the queue's order.
    pool.set_max_concurrency(1);
    drop(rt4); // I's run is cut off: queued again, first
    drop(rt2); // U's slot is dropped: U goes back, never started
    log.lock().unwrap().clear();
    rt1.block_on(async {
        assert_eq!(within("I", i).await.unwrap(), 3);
        assert_eq!(within("U", u).await.unwrap(), 2);
        assert_eq!(within("Q", q).await.unwrap(), 4);
    });
    assert_eq!(
        *log.lock().unwrap(),
        ["I2", "U", "Q"],
        "the interrupted run I (queued again) did not go first: U, taken and never \
         started, was put back ahead of it"
    );
}

/// 348 with flow control and elastic workers (a pin). An elastic SmartAioPool (min 1, max
/// 4) with a rate limit, `max_per_key(1)` and a weight capacity: a `block_on` submits four
/// tasks (two of one key) and the runtime is dropped before it drives them. Expected: they
/// count as queued, no worker is busy ("with its only runtime gone before it started, the
/// task shows as running" was the bug); a new runtime that awaits them runs each once,
/// and the counts come back to nothing running or queued.
#[test]
fn a_stranded_pool_with_flow_control_gives_its_reservations_back_and_runs_each_once() {
    let log: Log = Default::default();
    let pool = SmartAioPool::builder()
        .name("rofix2-stranded")
        .max_concurrency(4)
        .min_workers(1)
        .idle_timeout(Duration::from_secs(30))
        .rate_limit(3, Duration::from_millis(50))
        .max_per_key(1)
        .weight_capacity(10)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let rt1 = support::current_thread();
    let handles: Vec<TaskHandle<u32>> = rt1.block_on(async {
        let mut hs = Vec::new();
        for (n, (name, key, w)) in [("a", "k", 3), ("b", "k", 3), ("c", "j", 4), ("d", "i", 4)]
            .into_iter()
            .enumerate()
        {
            let opts = SubmitOptions::new().key(key).weight(w);
            hs.push(
                pool.submit_with(logged(&log, name, n as u32), opts)
                    .await
                    .unwrap(),
            );
        }
        hs
    });
    drop(rt1);
    assert!(log.lock().unwrap().is_empty(), "nothing ran");
    let s = pool.stats();
    assert_eq!(
        (s.queued, s.running, pool.busy_worker_count()),
        (4, 0, 0),
        "a stranded pool's tasks count as queued, no worker busy (stats: {s})"
    );
    assert_eq!(
        pool.idle_worker_count(),
        pool.worker_count(),
        "every worker of a stranded pool is idle"
    );
    let rt2 = support::current_thread();
    rt2.block_on(async {
        for (n, h) in handles.into_iter().enumerate() {
            assert_eq!(within("a stranded task", h).await.unwrap(), n as u32);
        }
    });
    let mut ran = log.lock().unwrap().clone();
    ran.sort();
    assert_eq!(ran, ["a", "b", "c", "d"], "each ran once");
    let s = pool.stats();
    assert_eq!((s.queued, s.running, s.completed), (0, 0, 4), "{s}");
    assert_eq!(pool.busy_worker_count(), 0);
}

/// 350 (a pin): an elastic pool (min 0, max 4) runs a burst of four tasks at once, they end,
/// then a second burst of four: all four of it run at once again (the idle slot tasks kept
/// are no more than the idle workers, and none is missing), and afterwards the runtime holds
/// no more parked tokio tasks than the pool has idle workers.
#[test]
fn elastic_bursts_after_a_burst_still_run_together() {
    let pool = elastic_0_to_4("rofix2-bursts");
    let rt = support::multi_thread_of(2);
    rt.block_on(async {
        for round in 0..3 {
            burst_runs_together(&pool, &format!("round {round}")).await;
        }
        no_more_parked_tasks_than_idle_workers(&pool).await;
    });
}

/// A burst of four tasks on `pool` runs at once (`what` names the burst), then ends.
async fn burst_runs_together(pool: &SmartAioPool, what: &str) {
    let (now, gate, hs) = burst(pool).await;
    let reached = support::reach(&now, 4, Duration::from_secs(10)).await;
    assert_eq!(reached, 4, "{what}: only {reached} of 4 tasks ran at once");
    gate.notify_waiters();
    for h in hs {
        within("a burst's task", h).await.unwrap();
    }
}

/// An elastic pool of 0 to 4 workers, private, its idle workers kept 30 s.
fn elastic_0_to_4(name: &str) -> SmartAioPool {
    SmartAioPool::builder()
        .name(name)
        .max_concurrency(4)
        .min_workers(0)
        .idle_timeout(Duration::from_secs(30))
        .process_wide(false)
        .auto_shutdown(false)
        .build()
}

/// After 50 ms, the runtime holds no more tokio tasks than `pool`'s idle workers, plus the
/// pool's sentinel of this runtime (the `block_on` future is not a spawned task).
async fn no_more_parked_tasks_than_idle_workers(pool: &SmartAioPool) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(
        alive <= pool.idle_worker_count() + 1,
        "{alive} tokio tasks parked (one the pool's sentinel) for {} idle workers",
        pool.idle_worker_count()
    );
}

/// 349 at the exit (a child process): an elastic SmartAioPool with `min_workers(0)`, a
/// rate limit and `max_per_key(1)`. A (key "k") is interrupted by `std::process::exit`;
/// its re-run at the exit submits B to the same pool and awaits it; C (key "k") waits
/// behind A. The user expects, from the crate docs, that every task runs at the exit
/// ("tasks complete before process exit"), with the workers growing from `min_workers` as
/// a submit grows them: "A2", "B", "C" all logged, and the process to end.
#[test]
fn an_elastic_pool_from_zero_workers_runs_nested_keyed_rate_limited_tasks_at_the_exit() {
    let child = run_child("elastic-exit", 30);
    let ran = lines(&child.dir.join("runs"));
    let _ = std::fs::remove_dir_all(&child.dir);
    assert_eq!(
        child.code,
        Some(0),
        "the child process did not exit cleanly (ran: {ran:?}): {}",
        child.stderr
    );
    let mut sorted = ran.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["A1", "A2", "B", "C", "D"],
        "the exit's run of an elastic pool from zero workers: {ran:?}"
    );
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    static POOL: std::sync::OnceLock<SmartAioPool> = std::sync::OnceLock::new();
    let (scenario, dir) = child_scenario();
    if scenario == "fenced-exit" {
        fenced_exit(dir);
    }
    assert_eq!(scenario, "elastic-exit");
    let runs = dir.join("runs");
    let pool = POOL.get_or_init(|| {
        SmartAioPool::builder()
            .name("rofix2-exit")
            .max_concurrency(2)
            .min_workers(0)
            .idle_timeout(Duration::from_millis(10))
            .rate_limit(2, Duration::from_millis(50))
            .max_per_key(1)
            .rerun_interrupted(true)
            .build()
    });
    let rt = support::multi_thread_of(2);
    let (r, started) = (runs.clone(), Arc::new(AtomicUsize::new(0)));
    let s = started.clone();
    rt.block_on(async {
        let a = move || {
            let first = s.fetch_add(1, Ordering::SeqCst) == 0;
            let r = r.clone();
            async move {
                if first {
                    append(&r, "A1");
                    std::future::pending::<()>().await;
                }
                let rb = r.clone();
                let b = POOL
                    .get()
                    .unwrap()
                    .submit(move || {
                        let rb = rb.clone();
                        async move {
                            append(&rb, "B");
                            2u32
                        }
                    })
                    .await
                    .unwrap();
                assert_eq!(b.await.unwrap(), 2);
                append(&r, "A2");
                1u32
            }
        };
        let opts = || SubmitOptions::new().key("k");
        let _a = pool.submit_with(a, opts()).await.unwrap();
        let rc = runs.clone();
        let _c = pool
            .submit_with(
                move || {
                    let rc = rc.clone();
                    async move {
                        append(&rc, "C");
                        3u32
                    }
                },
                opts(),
            )
            .await
            .unwrap();
        let rd = runs.clone();
        let d = pool
            .submit(move || {
                let rd = rd.clone();
                async move {
                    append(&rd, "D");
                    4u32
                }
            })
            .await
            .unwrap();
        assert_eq!(d.await.unwrap(), 4);
        while started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Past the idle timeout: the workers not running A retire.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let _ = pool.worker_count();
    });
    // The runtime stays alive (its workers park); A's first run is cut by the exit.
    std::process::exit(0);
}

/// Submits four tasks that each count themselves running and wait for the gate.
async fn burst(
    pool: &SmartAioPool,
) -> (
    Arc<AtomicUsize>,
    Arc<tokio::sync::Notify>,
    Vec<TaskHandle<u32>>,
) {
    let now = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut hs = Vec::new();
    for _ in 0..4 {
        let (now, gate) = (now.clone(), gate.clone());
        let h = pool
            .submit(move || {
                let (now, gate) = (now.clone(), gate.clone());
                async move {
                    let notified = gate.notified();
                    now.fetch_add(1, Ordering::SeqCst);
                    notified.await;
                    1u32
                }
            })
            .await
            .unwrap();
        hs.push(h);
    }
    (now, gate, hs)
}

/// 350 after a shrink under load (a pin): an elastic pool (min 0, max 4) runs four tasks,
/// is shrunk to 1 while they run (the workers retired while busy: their slot tasks exit
/// when the tasks end), then grown back to 4: a burst of four runs at once again, and
/// the runtime holds no more parked tokio tasks than idle workers (plus the pool's
/// sentinel of this runtime).
#[test]
fn elastic_pool_shrunk_under_load_then_grown_runs_a_burst_together() {
    let pool = elastic_0_to_4("rofix2-shrink");
    let rt = support::multi_thread_of(2);
    rt.block_on(async {
        let (now, gate, hs) = burst(&pool).await;
        assert_eq!(support::reach(&now, 4, Duration::from_secs(10)).await, 4);
        pool.set_max_concurrency(1);
        gate.notify_waiters();
        for h in hs {
            within("a task of the first burst", h).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        pool.set_max_concurrency(4);
        burst_runs_together(&pool, "after the shrink and the growth").await;
        no_more_parked_tasks_than_idle_workers(&pool).await;
    });
}

/// 347 with a rate window (a pin): a one-slot SmartAioPool allowing 3 starts an hour. A
/// runs; B is handed to a slot on a runtime then not driven (its start spent); C (same
/// priority) is queued. The runtime of B's slot is dropped: B goes back before C, and
/// gives its start back (`RateLimit`: tasks put back before they ran spend nothing), so
/// A, B and C fit in the 3 starts: B then C run on the remaining runtime.
#[test]
fn a_task_put_back_unstarted_in_a_rate_window_keeps_its_place_and_its_start() {
    let log: Log = Default::default();
    let pool = SmartAioPool::builder()
        .name("rofix2-rate")
        .max_concurrency(1)
        .rate_limit(3, Duration::from_secs(3600))
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let (rt1, rt2, b) = support::smart_handed_to_an_undriven_runtime(&pool, logged(&log, "B", 2));
    let c = rt1.block_on(async { pool.submit(logged(&log, "C", 3)).await.unwrap() });
    drop(rt2);
    rt1.block_on(async {
        assert_eq!(within("B", b).await.unwrap(), 2);
        assert_eq!(within("C", c).await.unwrap(), 3);
    });
    assert_eq!(*log.lock().unwrap(), ["B", "C"]);
    let s = pool.stats();
    assert_eq!((s.queued, s.running, s.completed), (0, 0, 3), "{s}");
}

/// 346 (a pin): a SmartAioPool without re-runs, one slot. B, submitted from a multi-thread
/// runtime R, is handed to a slot on R while R's only worker is blocked (a task sleeping
/// on its thread), so B's slot is not polled; `std::process::exit` is called. The README:
/// a task that never started runs once at the exit. The exit runs B, then C, which
/// sleeps long enough for R's worker to come back and poll B's slot, stale by then: B
/// must not run there too (its start is refused: the take-over settled its mark).
#[test]
fn a_fenced_slot_polled_after_the_exit_took_its_task_over_starts_nothing() {
    let child = run_child("fenced-exit", 30);
    let ran = lines(&child.dir.join("runs"));
    let _ = std::fs::remove_dir_all(&child.dir);
    assert_eq!(
        child.code,
        Some(0),
        "the child process did not exit cleanly (ran: {ran:?}): {}",
        child.stderr
    );
    assert_eq!(ran, ["B", "R back", "C"], "B ran once, at the exit");
}

fn fenced_exit(dir: std::path::PathBuf) -> ! {
    let runs = dir.join("runs");
    let pool = SmartAioPool::builder()
        .name("rofix2-fenced")
        .max_concurrency(1)
        .rerun_interrupted(false)
        .build();
    let rt1 = support::current_thread();
    let big_r = support::multi_thread_of(1);
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let wait = Mutex::new(Some(wait));
    let a = rt1.block_on(async {
        let a = pool
            .submit(move || {
                let w = wait.lock().unwrap().take();
                async move {
                    if let Some(w) = w {
                        let _ = w.await;
                    }
                    1u32
                }
            })
            .await
            .unwrap();
        tokio::task::yield_now().await;
        a
    });
    let rb = runs.clone();
    let b = big_r.block_on(async {
        pool.submit(move || {
            append(&rb, "B");
            async { 2u32 }
        })
        .await
        .unwrap()
    });
    let rc = runs.clone();
    let c = rt1.block_on(async {
        pool.submit(move || {
            let rc = rc.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(800)).await;
                append(&rc, "C");
                3u32
            }
        })
        .await
        .unwrap()
    });
    assert_eq!(pool.stats().queued, 2, "B and C are queued");
    // R's only worker is blocked for 400 ms.
    let blocked = Arc::new(AtomicUsize::new(0));
    let (bl, rr) = (blocked.clone(), runs.clone());
    big_r.spawn(async move {
        bl.store(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(400));
        append(&rr, "R back");
    });
    while blocked.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
    rt1.block_on(async {
        release.send(()).unwrap();
        assert_eq!(within("A", a).await.unwrap(), 1);
    });
    assert_eq!(pool.stats().queued, 1, "B left the queue for a slot on R");
    assert!(lines(&runs).is_empty(), "B has not started");
    std::mem::forget((rt1, big_r, b, c));
    std::process::exit(0);
}
