//! Process exit, several runtimes and elastic workers, as a review of them (2026-12-05, on
//! 6ec285d) tried them, with the regression tests of the two faults it found in the
//! SmartAioPool exit take-over (RELIABILITY.md, findings 187-188).
//! Exit scenarios run as child processes, as in `tests/exit_take_over.rs`.

#![allow(clippy::async_yields_async)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nb_aiopool::SmartAioPool;
use support::{append, child_scenario, lines, run_child};

static POOLS: OnceLock<Vec<SmartAioPool>> = OnceLock::new();

const NESTED_POOLS: usize = 40;

/// Each of `NESTED_POOLS` pools gets one queued task; at exit each task submits a task into
/// the next pool and awaits it. The nested tasks never ran before the exit.
fn nested_pools(dir: &std::path::Path, rerun: bool) {
    let rt = support::current_thread();
    let pools: Vec<SmartAioPool> = (0..NESTED_POOLS)
        .map(|i| {
            SmartAioPool::builder()
                .max_concurrency(2)
                .rerun_interrupted(rerun)
                .name(format!("p{i}"))
                .build()
        })
        .collect();
    POOLS.set(pools).unwrap();
    rt.block_on(async {
        let pools = POOLS.get().unwrap();
        for (i, pool) in pools.iter().enumerate() {
            let d = dir.to_path_buf();
            pool.submit(move || {
                let d = d.clone();
                async move {
                    let next = &POOLS.get().unwrap()[(i + 1) % NESTED_POOLS];
                    let d2 = d.clone();
                    let h = next
                        .submit(move || {
                            let d2 = d2.clone();
                            async move {
                                append(&d2.join("nested"), &i.to_string());
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                i
                            }
                        })
                        .await
                        .unwrap();
                    match h.await {
                        Ok(v) => append(&d.join("outer"), &format!("ok {v}")),
                        Err(e) => append(&d.join("outer"), &format!("err {i} {e}")),
                    }
                }
            })
            .await
            .unwrap()
            .detach();
        }
        // Nothing has started: the current-thread runtime was never yielded to.
        std::process::exit(0);
    });
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = child_scenario();
    match scenario.as_str() {
        "nested-no-rerun" => nested_pools(&dir, false),
        "nested-rerun" => nested_pools(&dir, true),
        // A pool with nothing unfinished when the exit hook starts; a plain thread
        // submits to it while another pool's task still runs at exit.
        "plain-thread-submit-during-exit" => {
            let rt = support::current_thread();
            rt.block_on(async {
                let a = SmartAioPool::new(2);
                let b = SmartAioPool::new(2);
                b.run(|| async {}).await.unwrap();
                let d = dir.clone();
                a.submit(move || {
                    let d = d.clone();
                    async move {
                        append(&d.join("a"), "start");
                        tokio::time::sleep(Duration::from_millis(800)).await;
                        append(&d.join("a"), "end");
                    }
                })
                .await
                .unwrap()
                .detach();
                let d = dir.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(200));
                    let d2 = d.clone();
                    match b.blocking_submit(move || {
                        let d2 = d2.clone();
                        async move { append(&d2.join("b"), "ran") }
                    }) {
                        Ok(h) => {
                            append(&d.join("b"), "accepted");
                            h.detach();
                        }
                        Err(e) => append(&d.join("b"), &format!("refused {e}")),
                    }
                });
                std::process::exit(0);
            });
        }
        "nested-during-busy-wait" => nested_during_busy_wait(&dir),
        other => panic!("unknown scenario {other}"),
    }
}

fn count(v: &[String], prefix: &str) -> usize {
    v.iter().filter(|l| l.starts_with(prefix)).count()
}

/// Finding 188: tasks that a take-over run submitted into a pool the exit hook had not
/// taken over yet started on the exit runtime, and the later take-over of that pool
/// treated them as interrupted: without re-runs it cancelled them (their handles said
/// RuntimeShutdown). A race here (the test below makes it certain).
#[test]
fn nested_submits_at_exit_into_pools_taken_over_later_are_not_cut() {
    let c = run_child("nested-no-rerun", 60);
    let outer = lines(&c.dir.join("outer"));
    let nested = lines(&c.dir.join("nested"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert!(
        count(&outer, "err") == 0 && outer.len() == NESTED_POOLS,
        "outer: {outer:?}\nnested: {nested:?}\nstderr: {}",
        c.stderr
    );
    assert!(
        !c.stderr.contains("interrupted by the process exit"),
        "stderr: {}",
        c.stderr
    );
}

/// Finding 188, with re-runs: the same tasks ran twice although their first run was never
/// interrupted (a race: 1 run in about 26 before the fix).
#[test]
fn nested_submits_at_exit_into_pools_taken_over_later_run_once() {
    let c = run_child("nested-rerun", 60);
    let outer = lines(&c.dir.join("outer"));
    let nested = lines(&c.dir.join("nested"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(outer.len(), NESTED_POOLS, "outer: {outer:?}");
    assert_eq!(
        nested.len(),
        NESTED_POOLS,
        "a nested task ran twice: {nested:?}"
    );
}

/// Finding 187: a plain thread's `blocking_submit` during the exit, into a pool that had
/// nothing unfinished when the exit hook began, was accepted and queued for the runtime
/// `exit` froze, and the process never exited.
#[test]
fn a_plain_thread_submit_during_exit_runs() {
    let c = run_child("plain-thread-submit-during-exit", 10);
    let a = lines(&c.dir.join("a"));
    let b = lines(&c.dir.join("b"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(
        c.code,
        Some(0),
        "hung or failed; a: {a:?} b: {b:?} stderr: {}",
        c.stderr
    );
    assert_eq!(a, ["start", "end"]);
    assert!(
        b.iter().any(|l| l.starts_with("refused")) || b.iter().any(|l| l == "ran"),
        "b: {b:?} stderr: {}",
        c.stderr
    );
}

static XS: OnceLock<Vec<SmartAioPool>> = OnceLock::new();
static YS: OnceLock<Vec<SmartAioPool>> = OnceLock::new();
const RING: usize = 8;

/// Old runtime: multi-thread, `exit` called from `block_on`. Pool P has a run busy in one
/// long poll on a worker thread: its take-over waits for it (up to 5 s). Pools X (re-run)
/// have runs cut off by the exit: their re-runs, at exit, submit tasks into pools Y
/// (rerun_interrupted(false)), each of which also has one task cut off by the exit. The
/// tasks submitted at exit start on the exit runtime and must not be cut by a later
/// take-over of their pool.
fn nested_during_busy_wait(dir: &std::path::Path) {
    let rt = support::multi_thread_of(2);
    XS.set(support::named_smart_pools("X", RING, true)).unwrap();
    // Made between them: listed (by address) between them, most likely.
    let p = SmartAioPool::builder().name("P").build();
    YS.set(support::named_smart_pools("Y", RING, false))
        .unwrap();
    rt.block_on(async {
        let d = dir.to_path_buf();
        p.submit(move || {
            let d = d.clone();
            async move {
                append(&d.join("p"), "start");
                std::thread::sleep(Duration::from_millis(1500));
            }
        })
        .await
        .unwrap()
        .detach();
        for y in YS.get().unwrap() {
            y.submit(std::future::pending::<()>).await.unwrap().detach();
        }
        for x in XS.get().unwrap() {
            let runs = Arc::new(AtomicUsize::new(0));
            let d = dir.to_path_buf();
            x.submit(move || {
                let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
                let d = d.clone();
                async move {
                    if first {
                        std::future::pending::<()>().await;
                    }
                    let mut hs = Vec::new();
                    for (j, y) in YS.get().unwrap().iter().enumerate() {
                        let d2 = d.clone();
                        hs.push(
                            y.submit(move || {
                                let d2 = d2.clone();
                                async move {
                                    append(&d2.join("nested"), &j.to_string());
                                    tokio::time::sleep(Duration::from_millis(3000)).await;
                                }
                            })
                            .await
                            .unwrap(),
                        );
                    }
                    for h in hs {
                        match h.await {
                            Ok(()) => append(&d.join("outer"), "ok"),
                            Err(e) => append(&d.join("outer"), &format!("err {e}")),
                        }
                    }
                }
            })
            .await
            .unwrap()
            .detach();
        }
        support::appended(dir.join("p")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::process::exit(0);
    });
}

/// Finding 188, made deterministic: a busy run holds one pool's take-over, so the pools
/// taken over before it have long started their jobs.
#[test]
fn tasks_submitted_at_exit_into_a_pool_not_yet_taken_over_are_not_cut() {
    let c = run_child("nested-during-busy-wait", 60);
    let outer = lines(&c.dir.join("outer"));
    let nested = lines(&c.dir.join("nested"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(
        (outer.len(), count(&outer, "err")),
        (RING * RING, 0),
        "outer: {outer:?}\nnested: {}\nstderr: {}",
        nested.len(),
        c.stderr
    );
}

// ----- elastic workers (in process, paused time) -----------------------------------------

/// Random submits, resizes and idle periods: the worker counts stay consistent, between
/// min_workers and the current max, never more running than allowed, and workers idle for
/// the timeout retire.
#[test]
fn elastic_workers_stay_within_bounds_under_random_load() {
    for seed in 0..40u64 {
        let rt = support::paused_runtime();
        rt.block_on(async move {
            let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let mut next = move |n: u64| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (rng >> 33) % n
            };
            let min = 1 + next(3) as usize;
            let mut max = min + next(5) as usize;
            let idle = Duration::from_millis(100);
            let pool = SmartAioPool::builder()
                .max_concurrency(max)
                .min_workers(min)
                .idle_timeout(idle)
                .process_wide(false)
                .auto_shutdown(false)
                .build();
            let running = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            for step in 0..60 {
                match next(4) {
                    0 | 1 => {
                        for _ in 0..next(8) {
                            let (r, p) = (running.clone(), peak.clone());
                            let ms = next(300);
                            pool.submit(move || {
                                let (r, p) = (r.clone(), p.clone());
                                async move {
                                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                                    p.fetch_max(now, Ordering::SeqCst);
                                    tokio::time::sleep(Duration::from_millis(ms)).await;
                                    r.fetch_sub(1, Ordering::SeqCst);
                                }
                            })
                            .await
                            .unwrap()
                            .detach();
                        }
                    }
                    2 => {
                        let n = 1 + next(7) as usize;
                        pool.set_max_concurrency(n);
                        max = n;
                        peak.store(0, Ordering::SeqCst);
                    }
                    _ => tokio::time::sleep(Duration::from_millis(next(250))).await,
                }
                tokio::task::yield_now().await;
                let (w, b, i) = (
                    pool.worker_count(),
                    pool.busy_worker_count(),
                    pool.idle_worker_count(),
                );
                let s = pool.stats();
                assert!(b <= w, "seed {seed} step {step}: busy {b} > workers {w}");
                assert_eq!(w, b + i, "seed {seed} step {step}: w {w} b {b} i {i} {s:?}");
                assert!(
                    w >= min.min(max),
                    "seed {seed} step {step}: workers {w} below min {min} (max {max})"
                );
                assert!(
                    peak.load(Ordering::SeqCst) <= max,
                    "seed {seed} step {step}: ran {} at once, max {max}",
                    peak.load(Ordering::SeqCst)
                );
            }
            pool.wait().await;
            tokio::time::sleep(idle * 2).await;
            let w = pool.worker_count();
            assert_eq!(
                w,
                min.min(max),
                "seed {seed}: idle workers did not retire to min_workers (max {max})"
            );
            assert_eq!(pool.busy_worker_count(), 0);
        });
    }
}

/// The docs of `CommonAioPool` ("Dropping"): dropping the last handle cancels nothing, and
/// `shutdown_all_common_aiopools` waits for what it left.
#[test]
fn shutdown_all_common_aiopools_waits_for_a_dropped_pools_jobs() {
    let rt = support::multi_thread_of(2);
    rt.block_on(async {
        let done = Arc::new(AtomicUsize::new(0));
        let pool = nb_aiopool::CommonAioPool::new(1, 10);
        for _ in 0..5 {
            let d = done.clone();
            pool.submit(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                d.fetch_add(1, Ordering::SeqCst);
            })
            .await
            .unwrap()
            .detach();
        }
        drop(pool);
        nb_aiopool::shutdown_all_common_aiopools().await;
        assert_eq!(done.load(Ordering::SeqCst), 5);
    });
}

/// A job submitted from a plain thread runs on the runtime the pool last served; the end of
/// that runtime, with the job queued, hands it back as RuntimeShutdown (Common) while jobs
/// of another live runtime go on.
#[test]
fn a_static_pool_from_two_runtimes_and_a_plain_thread() {
    static POOL: std::sync::LazyLock<nb_aiopool::CommonAioPool> = std::sync::LazyLock::new(|| {
        nb_aiopool::CommonAioPool::builder()
            .max_concurrency(2)
            .max_queue_size(100)
            .process_wide(false)
            .build()
    });
    for _round in 0..20 {
        let rt_a = support::multi_thread_of(1);
        let rt_b = support::current_thread();
        let long_b = rt_b.block_on(async {
            POOL.submit(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                7u32
            })
            .await
            .unwrap()
        });
        // Home is rt_b now (undriven); a plain thread's job goes there.
        let plain = std::thread::spawn(|| POOL.blocking_submit(async { 1u32 }))
            .join()
            .unwrap()
            .unwrap();
        let a_handles: Vec<_> = rt_a.block_on(async {
            let mut v = Vec::new();
            for i in 0..6u32 {
                v.push(
                    POOL.submit(async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        i
                    })
                    .await
                    .unwrap(),
                );
            }
            v
        });
        drop(rt_b);
        let got: Vec<_> = rt_a.block_on(async {
            let mut out = Vec::new();
            for h in a_handles {
                out.push(
                    tokio::time::timeout(Duration::from_secs(5), h)
                        .await
                        .expect("a job of the live runtime hangs"),
                );
            }
            out
        });
        for (i, r) in got.into_iter().enumerate() {
            assert_eq!(
                r.unwrap(),
                i as u32,
                "a job of the live runtime was not run"
            );
        }
        let r = rt_a.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), long_b)
                .await
                .unwrap()
        });
        assert!(r.unwrap_err().is_cancelled());
        let r = rt_a.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), plain)
                .await
                .unwrap()
        });
        // Either ran (on rt_a, picked up by a claimer there) or cancelled by rt_b's end.
        match r {
            Ok(v) => assert_eq!(v, 1),
            Err(e) => assert!(e.is_cancelled(), "{e:?}"),
        }
    }
}

/// From a plain thread with no runtime known (pool made in a LazyLock, never used), or
/// whose only runtime ended: NoRuntime, the job handed back; blocking calls refuse async
/// contexts with a message, and work from spawn_blocking.
#[test]
fn no_runtime_and_blocking_contexts() {
    let smart = SmartAioPool::builder()
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let common = nb_aiopool::CommonAioPool::builder()
        .process_wide(false)
        .build();
    let e = smart.blocking_submit(|| async { 1u8 }).unwrap_err();
    assert_eq!(e.kind(), nb_aiopool::SubmitErrorKind::NoRuntime);
    let recipe = e.into_inner();
    let e = common.blocking_submit(async { 1u8 }).unwrap_err();
    assert_eq!(e.kind(), nb_aiopool::SubmitErrorKind::NoRuntime);
    drop(e.into_inner());
    {
        let rt = support::current_thread();
        rt.block_on(async {
            assert_eq!(smart.run(recipe).await.unwrap(), 1);
            assert_eq!(common.run(async { 2u8 }).await.unwrap(), 2);
        });
    }
    // Its only runtime has ended.
    let e = common.blocking_submit(async { 3u8 }).unwrap_err();
    assert_eq!(e.kind(), nb_aiopool::SubmitErrorKind::NoRuntime);
    let rt = support::multi_thread_of(2);
    let (s2, c2) = (smart.clone(), common.clone());
    rt.block_on(async move {
        let got = tokio::task::spawn_blocking(move || {
            let a = s2
                .blocking_submit(|| async { 4u8 })
                .unwrap()
                .blocking_wait()
                .unwrap();
            let b = c2
                .blocking_submit(async { 5u8 })
                .unwrap()
                .blocking_wait()
                .unwrap();
            (a, b)
        })
        .await
        .unwrap();
        assert_eq!(got, (4, 5));
        let c3 = common.clone();
        let refused = tokio::spawn(async move {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                c3.blocking_submit(async { 6u8 }).map(|h| h.detach()).ok();
            }))
        })
        .await
        .unwrap();
        let msg = refused.expect_err("blocking_submit in an async task must refuse");
        let msg = msg
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| msg.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(msg.contains("submit"), "unhelpful message: {msg}");
    });
}
