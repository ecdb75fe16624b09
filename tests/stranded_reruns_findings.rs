//! SmartAioPool's re-runs after a runtime's end, and stranded pools, as a review of them
//! (2026-12-05, on 10f3ad7) tried them: `rerun_interrupted(false)`, a recipe panicking on
//! its re-run, re-runs with keys, priorities and elastic `min_workers(0)`, the two runs of
//! a task never overlapping, stats while stranded, `smart_run` twice, a plain thread's
//! submit into a stranded pool, no pool kept by thousands of short-lived runtimes; and the
//! regression tests of what it found (RELIABILITY.md, finding 201): `smart_run` and
//! `shutdown_all_smart_aiopools` never offered their runtime to a stranded rate-limited
//! pool, and waited for its re-run for ever.

#![allow(clippy::async_yields_async)] // handles made on one runtime, awaited on another

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool::{smart_run, CancelReason, SmartAioPool, SubmitOptions};
use support::{append, current_thread, cut_off_once, lines, multi_thread_of, run_child};

/// A pool whose one task's first run is cut off by the end of runtime `a` (its only one).
fn stranded_in(
    b: nb_aiopool::SmartAioPoolBuilder,
    runs: &Arc<AtomicUsize>,
) -> (SmartAioPool, nb_aiopool::TaskHandle<u32>) {
    let a = current_thread();
    let out = a.block_on(async {
        let pool = b.build();
        let h = pool.submit(cut_off_once(runs, 7)).await.unwrap();
        support::reach(runs, 1, Duration::from_secs(10)).await;
        (pool, h)
    });
    drop(a);
    out
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = support::child_scenario();
    match scenario.as_str() {
        // A task cut off by the end of its runtime (the pool's only one), then `smart_run`.
        "smart-run-stranded" | "smart-run-stranded-rate" => {
            let runs = Arc::new(AtomicUsize::new(0));
            let mut b = SmartAioPool::builder().max_concurrency(1);
            if scenario.ends_with("rate") {
                b = b.rate_limit(100, Duration::from_secs(1));
            }
            let (pool, h) = stranded_in(b, &runs);
            append(&dir.join("log"), "stranded");
            h.detach();
            smart_run(async {});
            append(
                &dir.join("log"),
                &format!(
                    "smart_run returned runs={} pending={}",
                    runs.load(Ordering::SeqCst),
                    pool.pending_count()
                ),
            );
            drop(pool);
        }
        // The same pool dropped (no handle left), stranded.
        "smart-run-stranded-dropped-rate" => {
            let runs = Arc::new(AtomicUsize::new(0));
            let b = SmartAioPool::builder()
                .max_concurrency(1)
                .rate_limit(100, Duration::from_secs(1));
            let (pool, h) = stranded_in(b, &runs);
            h.detach();
            drop(pool);
            smart_run(async {});
            append(
                &dir.join("log"),
                &format!("smart_run returned runs={}", runs.load(Ordering::SeqCst)),
            );
        }
        // The documented Ctrl-C path, from a new runtime.
        "shutdown-all-stranded-rate" => {
            let runs = Arc::new(AtomicUsize::new(0));
            let b = SmartAioPool::builder()
                .max_concurrency(1)
                .rate_limit(100, Duration::from_secs(1));
            let (pool, h) = stranded_in(b, &runs);
            h.detach();
            let rt = multi_thread_of(2);
            rt.block_on(nb_aiopool::shutdown_all_smart_aiopools());
            append(
                &dir.join("log"),
                &format!("smart_run returned runs={}", runs.load(Ordering::SeqCst)),
            );
            drop(pool);
            std::process::exit(0);
        }
        // smart_run twice; then from inside a runtime (documented to panic).
        "smart-run-twice" => {
            let runs = Arc::new(AtomicUsize::new(0));
            let pool = SmartAioPool::new(2);
            for _ in 0..2 {
                let (p, r) = (pool.clone(), runs.clone());
                smart_run(async move {
                    let r = r.clone();
                    p.submit(move || {
                        let r = r.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            r.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                    .await
                    .unwrap()
                    .detach();
                });
            }
            append(
                &dir.join("log"),
                &format!("smart_run returned runs={}", runs.load(Ordering::SeqCst)),
            );
        }
        // A dropped pool, stranded, at process exit.
        "exit-stranded-dropped" | "exit-stranded-dropped-rate" => {
            let runs = Arc::new(AtomicUsize::new(0));
            let mut b = SmartAioPool::builder().max_concurrency(1);
            if scenario.ends_with("rate") {
                b = b.rate_limit(1, Duration::from_millis(200));
            }
            let d = dir.clone();
            let r2 = runs.clone();
            let a = current_thread();
            a.block_on(async {
                let pool = b.build();
                let cut = cut_off_once(&runs, 7);
                pool.submit(move || {
                    let fut = cut();
                    let d = d.clone();
                    let r2 = r2.clone();
                    async move {
                        let v = fut.await;
                        append(
                            &d.join("log"),
                            &format!("smart_run returned runs={}", r2.load(Ordering::SeqCst)),
                        );
                        v
                    }
                })
                .await
                .unwrap()
                .detach();
                support::reach(&runs, 1, Duration::from_secs(10)).await;
                drop(pool);
            });
            drop(a);
            std::process::exit(0);
        }
        other => panic!("unknown scenario {other}"),
    }
}

fn smart_run_case(scenario: &str) {
    let child = run_child(scenario, 20);
    let log = lines(&child.dir.join("log"));
    let _ = std::fs::remove_dir_all(&child.dir);
    assert_eq!(
        child.code,
        Some(0),
        "{scenario}: child did not exit in 20 s (log {log:?}, stderr {})",
        child.stderr
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("smart_run returned runs=2")),
        "{scenario}: {log:?}"
    );
}

/// Control: `smart_run` runs the re-run of a stranded pool without a rate limit.
#[test]
fn smart_run_runs_a_stranded_rerun() {
    smart_run_case("smart-run-stranded");
}

/// Finding 201: `smart_run` waits for every auto_shutdown pool: a stranded rate-limited
/// pool's re-run never started (its `wait` did not offer smart_run's runtime), so
/// smart_run hung.
#[test]
fn smart_run_runs_a_stranded_rerun_of_a_rate_limited_pool() {
    smart_run_case("smart-run-stranded-rate");
}

/// Finding 201: the same for `shutdown_all_smart_aiopools().await` on a new runtime (the
/// README's Ctrl-C path).
#[test]
fn shutdown_all_from_a_new_runtime_runs_a_stranded_rerun_of_a_rate_limited_pool() {
    smart_run_case("shutdown-all-stranded-rate");
}

#[test]
fn smart_run_twice() {
    smart_run_case("smart-run-twice");
}

/// Finding 201: the same with the pool's last handle dropped.
#[test]
fn smart_run_runs_a_stranded_rerun_of_a_dropped_rate_limited_pool() {
    smart_run_case("smart-run-stranded-dropped-rate");
}

/// With `rerun_interrupted(false)`, a task cut off by its runtime's end runs once and its
/// handle says RuntimeShutdown; a queued one that never started runs once elsewhere.
#[test]
fn no_rerun_cuts_the_interrupted_and_runs_the_unstarted_once() {
    for round in 0..20 {
        let runs = Arc::new(AtomicUsize::new(0));
        let runs_q = Arc::new(AtomicUsize::new(0));
        let a = multi_thread_of(2);
        let (pool, h1, h2) = a.block_on(async {
            let pool = SmartAioPool::builder()
                .max_concurrency(1)
                .auto_shutdown(false)
                .process_wide(false)
                .rerun_interrupted(false)
                .build();
            let h1 = pool.submit(cut_off_once(&runs, 1)).await.unwrap();
            let r = runs_q.clone();
            let h2 = pool
                .submit(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    async { 2u32 }
                })
                .await
                .unwrap();
            support::reach(&runs, 1, Duration::from_secs(10)).await;
            (pool, h1, h2)
        });
        drop(a);
        let b = current_thread();
        b.block_on(async {
            let e = support::within("h1", h1).await.unwrap_err();
            assert_eq!(
                e.cancel_reason(),
                Some(CancelReason::RuntimeShutdown),
                "round {round}"
            );
            assert_eq!(support::within("h2", h2).await.unwrap(), 2);
            pool.wait().await;
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(runs_q.load(Ordering::SeqCst), 1);
        let s = pool.stats();
        assert_eq!(
            (s.completed, s.cancelled, s.queued, s.running),
            (1, 1, 0, 0),
            "{s:?}"
        );
        assert_eq!(pool.pending_count(), 0);
    }
}

/// A recipe that panics on its re-run: the handle gets the panic; counts agree.
#[test]
fn a_recipe_that_panics_on_its_rerun() {
    support::hide_panics(&["second call"]);
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let a = current_thread();
    let (pool, h) = a.block_on(async {
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .auto_shutdown(false)
            .process_wide(false)
            .build();
        let h = pool
            .submit(move || {
                if r.fetch_add(1, Ordering::SeqCst) == 1 {
                    panic!("second call");
                }
                async { std::future::pending::<u32>().await }
            })
            .await
            .unwrap();
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        (pool, h)
    });
    drop(a);
    assert_eq!(pool.pending_count(), 1);
    let b = current_thread();
    b.block_on(async {
        let e = support::within("h", h).await.unwrap_err();
        assert!(e.is_panic(), "{e:?}");
    });
    let s = pool.stats();
    assert_eq!((s.panicked, s.queued, s.running), (1, 0, 0), "{s:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// Re-runs keep their key: after the runtime ends, two cut-off tasks of one key with
/// max_per_key(1) never run at once.
#[test]
fn reruns_keep_their_key_limit() {
    for _ in 0..10 {
        let now = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let first = Arc::new(AtomicUsize::new(0));
        let a = multi_thread_of(2);
        let (pool, hs) = a.block_on(async {
            let pool = SmartAioPool::builder()
                .max_concurrency(4)
                .max_per_key(1)
                .auto_shutdown(false)
                .process_wide(false)
                .build();
            let mut hs = Vec::new();
            for k in 0..4u32 {
                let (now, max, first) = (now.clone(), max.clone(), first.clone());
                let key = if k < 2 { "a" } else { "b" };
                let h = pool
                    .submit_with(
                        move || {
                            let (now, max, first) = (now.clone(), max.clone(), first.clone());
                            async move {
                                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                                max.fetch_max(n, Ordering::SeqCst);
                                struct Dec(Arc<AtomicUsize>);
                                impl Drop for Dec {
                                    fn drop(&mut self) {
                                        self.0.fetch_sub(1, Ordering::SeqCst);
                                    }
                                }
                                let _d = Dec(now.clone());
                                if first.fetch_add(1, Ordering::SeqCst) < 2 {
                                    std::future::pending::<()>().await;
                                }
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                k
                            }
                        },
                        SubmitOptions::new().key(key),
                    )
                    .await
                    .unwrap();
                hs.push(h);
            }
            support::reach(&first, 2, Duration::from_secs(10)).await;
            (pool, hs)
        });
        drop(a);
        max.store(0, Ordering::SeqCst);
        let b = multi_thread_of(2);
        b.block_on(async {
            for h in hs {
                support::within("h", h).await.unwrap();
            }
        });
        assert!(
            max.load(Ordering::SeqCst) <= 2,
            "keys a and b each at most 1"
        );
        let s = pool.stats();
        assert_eq!((s.completed, s.queued, s.running), (4, 0, 0));
    }
}

/// Elastic min_workers(0): tasks cut off by a runtime's end re-run elsewhere; counts agree.
#[test]
fn elastic_min_zero_across_runtime_ends() {
    for _ in 0..20 {
        let runs = Arc::new(AtomicUsize::new(0));
        let a = multi_thread_of(2);
        let (pool, hs) = a.block_on(async {
            let pool = SmartAioPool::builder()
                .max_concurrency(3)
                .min_workers(0)
                .idle_timeout(Duration::from_millis(1))
                .auto_shutdown(false)
                .process_wide(false)
                .build();
            let mut hs = Vec::new();
            for i in 0..3 {
                let own = Arc::new(AtomicUsize::new(0));
                let (r, o) = (runs.clone(), own.clone());
                let cut = cut_off_once(&own, i);
                hs.push(
                    pool.submit(move || {
                        if o.load(Ordering::SeqCst) == 0 {
                            r.fetch_add(1, Ordering::SeqCst);
                        }
                        cut()
                    })
                    .await
                    .unwrap(),
                );
            }
            support::reach(&runs, 3, Duration::from_secs(10)).await;
            (pool, hs)
        });
        drop(a);
        assert_eq!(pool.pending_count(), 3);
        let b = current_thread();
        b.block_on(async {
            for h in hs {
                support::within("h", h).await.unwrap();
            }
            pool.wait().await;
        });
        let s = pool.stats();
        assert_eq!((s.completed, s.queued, s.running), (3, 0, 0), "{s:?}");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(pool.worker_count(), 0);
    }
}

/// Thousands of short-lived runtimes, each with a pool dropped busy (half of them with a
/// task cut off by the runtime's end, re-run from the next runtime): every pool's engine
/// is freed once its tasks have finished (counted by the drop of its `on_panic`).
#[test]
fn short_lived_runtimes_do_not_keep_pools() {
    let freed = Arc::new(AtomicUsize::new(0));
    const ROUNDS: usize = 1000;
    let mut carried: Option<nb_aiopool::TaskHandle<u32>> = None;
    for round in 0..ROUNDS {
        let rt = current_thread();
        let f = support::Counted(freed.clone());
        let cut = round % 2 == 0;
        carried = rt.block_on(async {
            if let Some(h) = carried.take() {
                assert_eq!(support::within("carried", h).await.unwrap(), 7);
            }
            let pool = SmartAioPool::builder()
                .max_concurrency(2)
                .auto_shutdown(false)
                .process_wide(false)
                .on_panic(move |_, _| {
                    let _ = &f;
                })
                .build();
            if cut {
                let runs = Arc::new(AtomicUsize::new(0));
                let h = pool.submit(cut_off_once(&runs, 7)).await.unwrap();
                support::reach(&runs, 1, Duration::from_secs(10)).await;
                drop(pool);
                Some(h)
            } else {
                let h = pool
                    .submit(|| async {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    })
                    .await
                    .unwrap();
                drop(pool); // busy: forgotten once its task has ended
                h.await.unwrap();
                tokio::task::yield_now().await;
                None
            }
        });
        drop(rt);
    }
    drop(carried);
    drop(SmartAioPool::builder().process_wide(false).build());
    let freed = freed.load(Ordering::SeqCst);
    assert!(
        freed >= ROUNDS - 1,
        "{} of {ROUNDS} pools kept",
        ROUNDS - freed
    );
}

/// Counts agree with handles while a pool is stranded and after.
#[test]
fn stats_agree_while_stranded() {
    let runs = Arc::new(AtomicUsize::new(0));
    let b = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(4)
        .auto_shutdown(false)
        .process_wide(false);
    let a = current_thread();
    let (pool, h, others) = a.block_on(async {
        let pool = b.build();
        let h = pool.submit(cut_off_once(&runs, 7)).await.unwrap();
        let mut others = Vec::new();
        for i in 0..3u32 {
            others.push(pool.submit(move || async move { i }).await.unwrap());
        }
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        (pool, h, others)
    });
    drop(a);
    let s = pool.stats();
    assert_eq!(
        (s.queued, s.running, pool.pending_count()),
        (4, 0, 4),
        "{s:?}"
    );
    assert!(!h.is_finished());
    let c = current_thread();
    c.block_on(async {
        assert_eq!(support::within("h", h).await.unwrap(), 7);
        for (i, o) in others.into_iter().enumerate() {
            assert_eq!(o.await.unwrap(), i as u32);
        }
    });
    let s = pool.stats();
    assert_eq!(
        (s.completed, s.queued, s.running, pool.pending_count()),
        (4, 0, 0, 0),
        "{s:?}"
    );
}

/// A re-run of a low-priority task, interrupted, does not jump a queued high-priority one
/// (or does: the docs say re-runs go first).
#[test]
fn rerun_order_with_priorities() {
    let runs = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let a = current_thread();
    let (pool, hs) = a.block_on(async {
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .auto_shutdown(false)
            .process_wide(false)
            .build();
        let mut hs = Vec::new();
        let (o, cut) = (order.clone(), cut_off_once(&runs, 0));
        hs.push(
            pool.submit_with(
                move || {
                    o.lock().unwrap().push("low");
                    cut()
                },
                SubmitOptions::new().priority(0),
            )
            .await
            .unwrap(),
        );
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        let o = order.clone();
        hs.push(
            pool.submit_with(
                move || {
                    o.lock().unwrap().push("high");
                    async { 1 }
                },
                SubmitOptions::new().priority(10),
            )
            .await
            .unwrap(),
        );
        (pool, hs)
    });
    drop(a);
    let c = current_thread();
    c.block_on(async {
        for h in hs {
            support::within("h", h).await.unwrap();
        }
    });
    eprintln!("order {:?}", order.lock().unwrap());
    drop(pool);
}

/// A run busy in a long synchronous poll when its multi-thread runtime is shut down in
/// the background: the re-run (on another live runtime the pool knows) starts only after
/// that poll returned.
#[test]
fn the_two_runs_never_overlap_when_a_runtime_is_shut_down_in_the_background() {
    use std::sync::atomic::AtomicBool;
    for round in 0..10 {
        let in_poll = Arc::new(AtomicBool::new(false));
        let overlap = Arc::new(AtomicBool::new(false));
        let runs = Arc::new(AtomicUsize::new(0));
        let b = multi_thread_of(2);
        let pool = SmartAioPool::builder()
            .max_concurrency(2)
            .auto_shutdown(false)
            .process_wide(false)
            .build();
        b.block_on(async { pool.run(|| async {}).await.unwrap() });
        let a = multi_thread_of(2);
        let (ip, ov, r) = (in_poll.clone(), overlap.clone(), runs.clone());
        let h = a.block_on(async {
            pool.submit(move || {
                let (ip, ov, r) = (ip.clone(), ov.clone(), r.clone());
                async move {
                    let n = r.fetch_add(1, Ordering::SeqCst);
                    if ip.load(Ordering::SeqCst) {
                        ov.store(true, Ordering::SeqCst);
                    }
                    if n == 0 {
                        tokio::task::yield_now().await;
                        ip.store(true, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(300));
                        ip.store(false, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                    }
                    n
                }
            })
            .await
            .unwrap()
        });
        while !in_poll.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        a.shutdown_background();
        let got = b.block_on(async { support::within("h", h).await });
        assert_eq!(got.unwrap(), 1, "round {round}");
        assert!(
            !overlap.load(Ordering::SeqCst),
            "round {round}: the re-run began inside the first run's poll"
        );
    }
}

/// A plain thread's submit into a stranded pool: refused NoRuntime (nothing can run it).
#[test]
fn a_plain_thread_submit_into_a_stranded_pool() {
    let runs = Arc::new(AtomicUsize::new(0));
    let b = SmartAioPool::builder()
        .max_concurrency(1)
        .auto_shutdown(false)
        .process_wide(false);
    let (pool, h) = stranded_in(b, &runs);
    let e = pool.blocking_submit(|| async { 1u32 }).unwrap_err();
    assert!(e.is_no_runtime(), "{e:?}");
    assert_eq!(pool.pending_count(), 1);
    let c = multi_thread_of(1);
    assert_eq!(
        c.block_on(async { support::within("h", h).await }).unwrap(),
        7
    );
    // Now the pool knows c: a plain thread's submit runs there.
    assert_eq!(
        pool.blocking_submit(|| async { 2u32 })
            .unwrap()
            .blocking_wait()
            .unwrap(),
        2
    );
}

#[test]
fn exit_runs_the_rerun_of_a_dropped_stranded_pool() {
    smart_run_case("exit-stranded-dropped");
    smart_run_case("exit-stranded-dropped-rate");
}
