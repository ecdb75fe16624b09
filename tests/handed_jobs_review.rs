//! Review of 9b3b95a (finding 400/404): a job handed over to a slot task of its own
//! runtime waits in that slot's entry until the slot task's first poll; an abort, a
//! `cancel_all`, a shutdown deadline or the exit may take it from there meanwhile.
//!
//! Every test is bounded (a `tokio::time::timeout`, or a thread joined with a deadline).
#![allow(clippy::async_yields_async)]

mod support;

use std::time::Duration;

use nb_aiopool::{CancelReason, CommonAioPool, SmartAioPool, TaskError, TaskHandle};

use support::common_builder as common;
use support::{current_thread, multi_thread_of, on_thread_within, Gate};

fn reason(e: &TaskError) -> Option<CancelReason> {
    e.cancel_reason()
}

type Stat = (usize, usize, u64, u64);

fn stat(s: nb_aiopool::PoolStats) -> Stat {
    (s.queued, s.running, s.completed, s.cancelled)
}

/// x (returning 1) submitted to a 1-slot pool from current-thread runtime `a`, then
/// handed over to a slot task on `a` by a `wait()` polled on `b` (a claimer on `b` takes
/// it): `a` is alive and not driven.
fn handed_over(
    pool: &CommonAioPool,
    b: &tokio::runtime::Runtime,
) -> (tokio::runtime::Runtime, TaskHandle<u32>) {
    let a = current_thread();
    let x = a.block_on(async { pool.submit(async { 1u32 }).await.unwrap() });
    let a_tasks = a.metrics().num_alive_tasks();
    b.block_on(support::polled_until_handed_over(pool.wait(), &a, a_tasks));
    (a, x)
}

/// Drives current-thread runtime `a` for a moment (its slot tasks are polled).
/// `a` driven for a moment (`then` "drive a"), kept alive after; or dropped.
fn drive_or_drop(a: tokio::runtime::Runtime, then: &str) -> Option<tokio::runtime::Runtime> {
    if then == "drive a" {
        drive(&a);
        Some(a)
    } else {
        drop(a);
        None
    }
}

fn drive(a: &tokio::runtime::Runtime) {
    a.block_on(async {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    });
}

/// A handed-over task ended (abort, `cancel_all`) while its slot task is unpolled; then
/// the slot its end freed goes to z (on `b`, gated: running while the stale slot task on
/// `a` is polled or dropped, its key perhaps z's slot's now). Then `a` is driven, or
/// dropped. Every handle resolves, z completes, and `stats()` counts x once.
#[test]
fn a_handed_task_ended_then_its_stale_slot_task_polled_or_dropped_changes_nothing() {
    let mut outs = Vec::new();
    for end in ["abort", "cancel_all"] {
        for then in ["drive a", "drop a"] {
            let out = on_thread_within(end, 20, move || {
                let b = multi_thread_of(1);
                let pool = common(1, 4).build();
                let (a, x) = handed_over(&pool, &b);
                let gate = Gate::new();
                let z = b.block_on(async {
                    if end == "abort" {
                        x.abort();
                    } else {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), pool.cancel_all()).await;
                    }
                    let g = gate.wait();
                    pool.submit(async move {
                        g.await;
                        3u32
                    })
                    .await
                    .unwrap()
                });
                std::thread::sleep(Duration::from_millis(30));
                let mid = stat(pool.stats());
                let a = drive_or_drop(a, then);
                let after_a = stat(pool.stats());
                gate.open();
                let out = b.block_on(async {
                    let z = tokio::time::timeout(Duration::from_secs(2), z).await;
                    let x = tokio::time::timeout(Duration::from_secs(2), x).await;
                    let waited = tokio::time::timeout(Duration::from_secs(2), pool.wait())
                        .await
                        .is_ok();
                    // The slot is free: one more runs.
                    let w = pool.submit(async { 4u32 }).await.unwrap();
                    let w = tokio::time::timeout(Duration::from_secs(2), w).await;
                    (
                        z.map(|r| r.map_err(|e| reason(&e))),
                        x.map(|r| r.map_err(|e| reason(&e))),
                        waited,
                        w.map(|r| r.map_err(|e| reason(&e))),
                    )
                });
                let fin = stat(pool.stats());
                drop(a);
                (mid, after_a, out, fin)
            });
            outs.push((end, then, out));
        }
    }
    let want: Vec<_> = outs
        .iter()
        .map(|(end, then, _)| {
            let r = if *end == "abort" {
                CancelReason::Aborted
            } else {
                CancelReason::CancelAll
            };
            (
                *end,
                *then,
                (
                    (0, 1, 0, 1),
                    (0, 1, 0, 1),
                    (Ok(Ok(3)), Ok(Err(Some(r))), true, Ok(Ok(4))),
                    (0, 0, 2, 1),
                ),
            )
        })
        .collect();
    assert_eq!(
        outs, want,
        "(end, then, ((queued, running, completed, cancelled) with z running, after `a`, \
         (z, x, wait() returned, w), stats at the end))"
    );
}

/// The hand-over to a multi-thread runtime `a`: y holds the one slot on `b`; x, submitted
/// from `a`, waits; y's end hands x over to a slot task on `a` that a worker there polls
/// at once, while the test thread aborts x (or calls `cancel_all`). Whoever wins, x
/// resolves once, `stats()` counts it once, the slot comes back and `wait()` returns.
fn race_round(end: &'static str, flow: &'static str, round: u32) -> Result<(), String> {
    on_thread_within("race", 20, move || {
        let a = multi_thread_of(1);
        let b = multi_thread_of(1);
        let builder = common(1, 4);
        let builder = match flow {
            "rate" => builder.rate_limit(100_000, Duration::from_secs(1)),
            "weight" => builder.weight_capacity(4),
            _ => builder,
        };
        let pool = builder.build();
        let gate = Gate::new();
        let y = b.block_on(async {
            let g = gate.wait();
            pool.submit(async move {
                g.await;
                2u32
            })
            .await
            .unwrap()
        });
        let x = a.block_on(async { pool.submit(async { 1u32 }).await.unwrap() });
        gate.open();
        // y's result is published in the critical section that hands x over: from then
        // on, spin a varying moment, so that the end lands before, at or after the first
        // poll on `a`.
        let t = std::time::Instant::now();
        while !y.is_finished() && t.elapsed() < Duration::from_secs(2) {
            std::hint::spin_loop();
        }
        for i in 0..(round % 20) * 20 {
            std::hint::black_box(i);
        }
        let cancelled_all = end == "cancel_all";
        if cancelled_all {
            b.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(2), pool.cancel_all()).await;
            });
        } else {
            x.abort();
        }
        let (y, x, waited, w) = b.block_on(async {
            let y = tokio::time::timeout(Duration::from_secs(2), y).await;
            let x = tokio::time::timeout(Duration::from_secs(2), x).await;
            let waited = tokio::time::timeout(Duration::from_secs(2), pool.wait())
                .await
                .is_ok();
            let w = pool.submit(async { 4u32 }).await.unwrap();
            let w = tokio::time::timeout(Duration::from_secs(2), w).await;
            (y, x, waited, w)
        });
        let s = pool.stats();
        let y = y.map_err(|_| "y unresolved".to_string())?;
        let x = x.map_err(|_| format!("x unresolved ({s})"))?;
        if !waited {
            return Err(format!("wait() did not return ({s})"));
        }
        let w = w.map_err(|_| format!("w unresolved ({s})"))?;
        if w.is_err() {
            return Err(format!("w: {:?}", w.err().map(|e| reason(&e))));
        }
        let x_cancelled = match (&x, cancelled_all) {
            (Ok(1), _) => 0,
            (Err(e), false) if reason(e) == Some(CancelReason::Aborted) => 1,
            (Err(e), true) if reason(e) == Some(CancelReason::CancelAll) => 1,
            _ => return Err(format!("x: {:?}", x.map_err(|e| reason(&e)))),
        };
        let y_cancelled = match (&y, cancelled_all) {
            (Ok(2), _) => 0,
            (Err(e), true) if reason(e) == Some(CancelReason::CancelAll) => 1,
            _ => return Err(format!("y: {:?}", y.map_err(|e| reason(&e)))),
        };
        let cancelled = x_cancelled + y_cancelled;
        let want = (0, 0, 3 - cancelled, cancelled);
        if stat(s) != want {
            return Err(format!(
                "stats {s}, want (queued, running, completed, cancelled) {want:?}"
            ));
        }
        drop(a);
        Ok(())
    })
}

#[test]
fn an_abort_or_cancel_all_racing_a_handed_tasks_first_poll_counts_it_once() {
    every_round_passes(
        &["abort", "cancel_all"],
        &["plain", "rate", "weight"],
        race_round,
    );
}

/// SmartAioPool: a task handed to a slot task on current-thread runtime `a`, not driven,
/// ended by an abort or a `cancel_all`; then `a` is driven or dropped: its handle says so,
/// it is counted once, and the pool's worker counts come back (no busy worker left).
#[test]
fn a_smart_handed_task_ended_then_its_runtime_driven_or_dropped_leaves_the_pool_idle() {
    let mut outs = Vec::new();
    for rerun in [true, false] {
        for end in ["abort", "cancel_all"] {
            for then in ["drive a", "drop a"] {
                let out = on_thread_within(end, 20, move || {
                    let b = multi_thread_of(1);
                    let pool = SmartAioPool::builder()
                        .max_concurrency(1)
                        .max_queue_size(4)
                        .auto_shutdown(false)
                        .process_wide(false)
                        .rerun_interrupted(rerun)
                        .build();
                    let a = current_thread();
                    let x = a.block_on(async { pool.submit(|| async { 1u32 }).await.unwrap() });
                    b.block_on(async {
                        let _ = tokio::time::timeout(Duration::from_millis(50), pool.wait()).await;
                    });
                    let handed = pool.stats().running;
                    b.block_on(async {
                        if end == "abort" {
                            x.abort();
                        } else {
                            let _ = tokio::time::timeout(Duration::from_secs(2), pool.cancel_all())
                                .await;
                        }
                    });
                    let a = drive_or_drop(a, then);
                    let out = b.block_on(async {
                        let x = tokio::time::timeout(Duration::from_secs(2), x).await;
                        let waited = tokio::time::timeout(Duration::from_secs(2), pool.wait())
                            .await
                            .is_ok();
                        let w = pool.submit(|| async { 4u32 }).await.unwrap();
                        let w = tokio::time::timeout(Duration::from_secs(2), w).await;
                        (
                            x.map(|r| r.map_err(|e| reason(&e))),
                            waited,
                            w.map(|r| r.map_err(|e| reason(&e))),
                        )
                    });
                    std::thread::sleep(Duration::from_millis(30));
                    let fin = (stat(pool.stats()), pool.busy_worker_count());
                    drop(a);
                    (handed, out, fin)
                });
                outs.push((rerun, end, then, out));
            }
        }
    }
    let want: Vec<_> = outs
        .iter()
        .map(|(rerun, end, then, _)| {
            let r = if *end == "abort" {
                CancelReason::Aborted
            } else {
                CancelReason::CancelAll
            };
            (
                *rerun,
                *end,
                *then,
                (1, (Ok(Err(Some(r))), true, Ok(Ok(4))), ((0, 0, 1, 1), 0)),
            )
        })
        .collect();
    assert_eq!(
        outs, want,
        "(rerun, end, then, (running once handed, (x, wait() returned, w), \
         ((queued, running, completed, cancelled), busy workers) at the end))"
    );
}

/// A pool of one slot, common or smart (with or without re-runs).
enum P {
    C(CommonAioPool),
    S(SmartAioPool),
}

impl P {
    fn new(kind: &str) -> P {
        match kind {
            "common" => P::C(common(1, 4).build()),
            _ => P::S(
                SmartAioPool::builder()
                    .max_concurrency(1)
                    .max_queue_size(4)
                    .auto_shutdown(false)
                    .process_wide(false)
                    .rerun_interrupted(kind == "smart rerun")
                    .build(),
            ),
        }
    }

    async fn submit<F>(&self, make: impl Fn() -> F + Send + Sync + 'static) -> TaskHandle<u32>
    where
        F: std::future::Future<Output = u32> + Send + 'static,
    {
        match self {
            P::C(p) => p.submit(make()).await.map_err(|e| e.kind()).unwrap(),
            P::S(p) => p.submit(make).await.map_err(|e| e.kind()).unwrap(),
        }
    }

    fn cancel_all(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        match self {
            P::C(p) => Box::pin(p.cancel_all()),
            P::S(p) => Box::pin(p.cancel_all()),
        }
    }

    fn wait(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        match self {
            P::C(p) => Box::pin(p.wait()),
            P::S(p) => Box::pin(p.wait()),
        }
    }

    fn stats(&self) -> nb_aiopool::PoolStats {
        match self {
            P::C(p) => p.stats(),
            P::S(p) => p.stats(),
        }
    }
}

/// As [`race_round`], on `kind`'s pool, with multi-thread runtime `a` dropped on another
/// thread at the same moment as the abort or `cancel_all` (or with neither, `end`
/// "none"): x ends once (completed, re-run elsewhere, aborted, cancelled or lost), its
/// handle resolves, and `stats()` agrees.
fn drop_race_round(kind: &'static str, end: &'static str, round: u32) -> Result<(), String> {
    on_thread_within("drop race", 20, move || {
        let a = multi_thread_of(1);
        let b = multi_thread_of(1);
        let pool = std::sync::Arc::new(P::new(kind));
        let gate = Gate::new();
        let y = b.block_on(async {
            let g = gate.clone();
            pool.submit(move || {
                let g = g.wait();
                async move {
                    g.await;
                    2u32
                }
            })
            .await
        });
        let x = a.block_on(pool.submit(|| async { 1u32 }));
        gate.open();
        let t = std::time::Instant::now();
        while !y.is_finished() && t.elapsed() < Duration::from_secs(2) {
            std::hint::spin_loop();
        }
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let dropper = {
            let barrier = barrier.clone();
            let spins = (round % 10) * 50;
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..spins {
                    std::hint::black_box(i);
                }
                drop(a);
            })
        };
        barrier.wait();
        for i in 0..(round / 10 % 10) * 50 {
            std::hint::black_box(i);
        }
        match end {
            "abort" => x.abort(),
            "cancel_all" => b.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(2), pool.cancel_all()).await;
            }),
            _ => {}
        }
        let _ = dropper.join();
        let (y, x, waited, w) = b.block_on(async {
            let y = tokio::time::timeout(Duration::from_secs(2), y).await;
            let x = tokio::time::timeout(Duration::from_secs(2), x).await;
            let waited = tokio::time::timeout(Duration::from_secs(2), pool.wait())
                .await
                .is_ok();
            let w = pool.submit(|| async { 4u32 }).await;
            let w = tokio::time::timeout(Duration::from_secs(2), w).await;
            (y, x, waited, w)
        });
        let s = pool.stats();
        let y = y.map_err(|_| "y unresolved".to_string())?;
        let x = x.map_err(|_| format!("x unresolved ({s})"))?;
        if !waited {
            return Err(format!("wait() did not return ({s})"));
        }
        match w {
            Ok(Ok(4)) => {}
            _ => {
                return Err(format!(
                    "w: {:?} ({s})",
                    w.map(|r| r.map_err(|e| reason(&e)))
                ))
            }
        }
        let ok = |r: &Result<u32, TaskError>, v: u32| match r {
            Ok(got) if *got == v => Some(0),
            Ok(_) => None,
            Err(e) => match reason(e) {
                Some(CancelReason::Aborted) if end == "abort" && v == 1 => Some(1),
                Some(CancelReason::CancelAll) if end == "cancel_all" => Some(1),
                Some(CancelReason::RuntimeShutdown) if v == 1 => Some(1),
                _ => None,
            },
        };
        let (Some(cx), Some(cy)) = (ok(&x, 1), ok(&y, 2)) else {
            return Err(format!(
                "x {:?}, y {:?} ({s})",
                x.map_err(|e| reason(&e)),
                y.map_err(|e| reason(&e))
            ));
        };
        let cancelled = cx + cy;
        let want = (0, 0, 3 - cancelled, cancelled);
        if stat(s) != want {
            return Err(format!(
                "x {:?}: stats {s}, want (queued, running, completed, cancelled) {want:?}",
                x.map_err(|e| reason(&e))
            ));
        }
        Ok(())
    })
}

#[test]
fn a_handed_tasks_runtime_dropped_racing_an_abort_or_cancel_all_counts_it_once() {
    every_round_passes(
        &["common", "smart rerun", "smart"],
        &["none", "abort", "cancel_all"],
        drop_race_round,
    );
}

/// Runs `round(x, y, n)` for every `x` of `xs`, `y` of `ys` and `n` below the number of
/// rounds (`HANDED_ROUNDS`, 40 if unset), and fails with every failed round's message (and
/// how many failed) if any did.
fn every_round_passes(
    xs: &[&'static str],
    ys: &[&'static str],
    round: fn(&'static str, &'static str, u32) -> Result<(), String>,
) {
    let rounds = std::env::var("HANDED_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40u32);
    let mut failed = Vec::new();
    let mut total = 0;
    for &x in xs {
        for &y in ys {
            for n in 0..rounds {
                total += 1;
                if let Err(e) = round(x, y, n) {
                    failed.push(format!("{x} {y} round {n}: {e}"));
                }
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {total} rounds failed: {failed:#?}",
        failed.len()
    );
}

/// What a handed-over task holds (a start of a window of an hour, its weight, its key),
/// given back when it is ended unpolled, and not given back a second time when its stale
/// slot task is then polled or dropped: of y and z (each needing what x held), one starts
/// and the other stays queued.
#[test]
fn room_of_a_handed_task_ended_unpolled_is_given_back_once() {
    let mut outs = Vec::new();
    for held in ["window", "weight", "key"] {
        for end in ["abort", "cancel_all"] {
            for then in ["drive a", "drop a"] {
                let out = on_thread_within(held, 20, move || {
                    let b = multi_thread_of(1);
                    let builder = common(3, 8);
                    let (builder, opts) = match held {
                        "window" => (
                            builder.rate_limit(1, Duration::from_secs(3600)),
                            nb_aiopool::SubmitOptions::new(),
                        ),
                        "weight" => (
                            builder.weight_capacity(4),
                            nb_aiopool::SubmitOptions::new().weight(3),
                        ),
                        _ => (
                            builder.max_per_key(1),
                            nb_aiopool::SubmitOptions::new().key("k"),
                        ),
                    };
                    let pool = builder.build();
                    let a = current_thread();
                    let x = a.block_on(async {
                        pool.submit_with(async { 1u32 }, opts.clone())
                            .await
                            .unwrap()
                    });
                    b.block_on(async {
                        let _ = tokio::time::timeout(Duration::from_millis(50), pool.wait()).await;
                        if end == "abort" {
                            x.abort();
                        } else {
                            let _ = tokio::time::timeout(Duration::from_secs(2), pool.cancel_all())
                                .await;
                        }
                    });
                    let a = drive_or_drop(a, then);
                    let gate = Gate::new();
                    let (first, second) = b.block_on(async {
                        let g = gate.wait();
                        let y = pool
                            .submit_with(
                                async move {
                                    g.await;
                                    2u32
                                },
                                opts.clone(),
                            )
                            .await
                            .unwrap();
                        let g = gate.wait();
                        let z = pool
                            .submit_with(
                                async move {
                                    g.await;
                                    3u32
                                },
                                opts,
                            )
                            .await
                            .unwrap();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let first = stat(pool.stats());
                        gate.open();
                        let y = tokio::time::timeout(Duration::from_secs(2), y).await;
                        let _ = tokio::time::timeout(Duration::from_millis(300), z).await;
                        (first, y.map(|r| r.map_err(|e| reason(&e))))
                    });
                    drop(a);
                    (first, second)
                });
                outs.push((held, end, then, out));
            }
        }
    }
    let want: Vec<_> = outs
        .iter()
        .map(|(held, end, then, _)| {
            // Once y has ended, z starts, but for the window of an hour.
            (*held, *end, *then, ((1, 1, 0, 1), Ok(Ok(2))))
        })
        .collect();
    assert_eq!(
        outs, want,
        "(held, end, then, ((queued, running, completed, cancelled) with y and z submitted, y))"
    );
}

/// A rate-limited pool (3 slots, 4 starts an hour): g1..g3 on `b` take three starts; x,
/// submitted from current-thread runtime `a` (not driven after), waits for a slot; g1's
/// end hands x over to a slot task on `a` with the fourth start. x, ended unpolled, gives
/// that start back, once: with g2 and g3 over too, of y and z one starts, the other
/// waits for the window. (The rate-window cases of
/// `a_task_handed_to_a_runtime_not_driven_and_then_ended_gives_its_room_back_at_once`
/// never hand x over: x stays queued there.)
#[test]
fn a_rate_window_start_of_a_handed_task_ended_unpolled_is_given_back_once() {
    let mut outs = Vec::new();
    for end in ["abort", "cancel_all"] {
        for then in ["keep a", "drive a", "drop a"] {
            let out = on_thread_within(end, 20, move || {
                let b = multi_thread_of(1);
                let pool = common(3, 8)
                    .rate_limit(4, Duration::from_secs(3600))
                    .build();
                let gates = [Gate::new(), Gate::new(), Gate::new()];
                let gs: Vec<TaskHandle<u32>> = b.block_on(async {
                    let mut v = Vec::new();
                    for g in &gates {
                        let g = g.wait();
                        v.push(
                            pool.submit(async move {
                                g.await;
                                0u32
                            })
                            .await
                            .unwrap(),
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    v
                });
                let a = current_thread();
                let x = a.block_on(async { pool.submit(async { 1u32 }).await.unwrap() });
                gates[0].open();
                let queued_after_g1 = b.block_on(async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let q = pool.stats().queued;
                    if end == "abort" {
                        x.abort();
                    } else {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), pool.cancel_all()).await;
                    }
                    q
                });
                gates[1].open();
                gates[2].open();
                let a = match then {
                    "drive a" => {
                        drive(&a);
                        Some(a)
                    }
                    "drop a" => {
                        drop(a);
                        None
                    }
                    // Alive, not driven: the start comes back all the same (finding 400).
                    _ => Some(a),
                };
                let gate = Gate::new();
                let out = b.block_on(async {
                    for g in gs {
                        let _ = tokio::time::timeout(Duration::from_secs(2), g).await;
                    }
                    let g = gate.wait();
                    let y = pool
                        .submit(async move {
                            g.await;
                            2u32
                        })
                        .await
                        .unwrap();
                    let g = gate.wait();
                    let z = pool
                        .submit(async move {
                            g.await;
                            3u32
                        })
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let s = pool.stats();
                    gate.open();
                    drop((y, z));
                    (s.queued, s.running)
                });
                drop(a);
                (queued_after_g1, out)
            });
            outs.push((end, then, out));
        }
    }
    let want: Vec<_> = outs
        .iter()
        .map(|(end, then, _)| (*end, *then, (0, (1, 1))))
        .collect();
    assert_eq!(
        outs, want,
        "(end, then, (queued once g1 ended (x handed over), (queued, running) with y and z))"
    );
}

/// `shutdown_timeout` called by task c of the pool, while x is handed to a slot task on
/// current-thread runtime `a`, not driven: at the deadline x is abandoned at once (it
/// never started), c is spared and finishes with the report.
#[test]
fn a_shutdown_deadline_from_inside_a_task_abandons_a_handed_task_and_spares_its_caller() {
    let out = on_thread_within("spared", 20, move || {
        let b = multi_thread_of(1);
        let pool = common(2, 4).weight_capacity(4).build();
        let a = current_thread();
        let opts = nb_aiopool::SubmitOptions::new().weight(3);
        let x = a.block_on(async { pool.submit_with(async { 1u32 }, opts).await.unwrap() });
        let out = b.block_on(async {
            let _ = tokio::time::timeout(Duration::from_millis(50), pool.wait()).await;
            let inner = pool.clone();
            let c = pool
                .submit(async move {
                    let r = inner.shutdown_timeout(Duration::from_millis(100)).await;
                    (r.finished(), r.abandoned())
                })
                .await
                .unwrap();
            let c = tokio::time::timeout(Duration::from_secs(2), c).await;
            let x = tokio::time::timeout(Duration::from_secs(1), x).await;
            (
                c.map(|r| r.map_err(|e| reason(&e))),
                x.map(|r| r.map_err(|e| reason(&e))),
                stat(pool.stats()),
            )
        });
        drop(a);
        out
    });
    assert_eq!(
        out,
        (
            Ok(Ok((0, 1))),
            Ok(Err(Some(CancelReason::Abandoned))),
            (0, 0, 1, 1)
        ),
        "(c's report (finished, abandoned), x, (queued, running, completed, cancelled) \
         once c ended)"
    );
}

/// SmartAioPool with `min_workers(0)`: a task handed to a slot task on `a` (not driven)
/// and aborted gives its worker back: the counts agree, none busy.
#[test]
fn a_smart_handed_task_aborted_leaves_the_worker_counts_agreeing() {
    let out = on_thread_within("elastic", 20, move || {
        let b = multi_thread_of(1);
        let pool = SmartAioPool::builder()
            .max_concurrency(2)
            .min_workers(0)
            .max_queue_size(4)
            .weight_capacity(4)
            .auto_shutdown(false)
            .process_wide(false)
            .build();
        let a = current_thread();
        let opts = nb_aiopool::SubmitOptions::new().weight(4);
        let x = a.block_on(async {
            pool.submit_with(|| async { 1u32 }, opts.clone())
                .await
                .unwrap()
        });
        let out = b.block_on(async {
            let _ = tokio::time::timeout(Duration::from_millis(50), pool.wait()).await;
            let before = (pool.worker_count(), pool.busy_worker_count());
            x.abort();
            let y = pool.submit_with(|| async { 2u32 }, opts).await.unwrap();
            let y = tokio::time::timeout(Duration::from_secs(2), y).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let after = (
                pool.worker_count(),
                pool.busy_worker_count(),
                pool.idle_worker_count(),
            );
            (before, y.map(|r| r.map_err(|e| reason(&e))), after)
        });
        drop(a);
        out
    });
    let shown = format!("{out:?}");
    let ((_, busy_before), y, (workers, busy, idle)) = out;
    assert_eq!(
        (busy_before, y, busy, workers == busy + idle && workers <= 2),
        (1, Ok(Ok(2)), 0, true),
        "{shown}: (busy when handed, y, busy at the end, counts agree)"
    );
}
