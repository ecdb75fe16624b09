//! Flow control (rate windows, weights, priorities, submit deadlines) when a pool is used
//! from several runtimes at once, when a runtime ends while flow-controlled work waits,
//! from plain and `spawn_blocking` threads, and with current-thread runtimes.
//!
//! Every test is bounded (a `tokio::time::timeout`, [`support::within`] or a thread
//! joined with a deadline, [`support::on_thread_within`]): a hang fails it.
#![allow(clippy::async_yields_async)] // blocks hand their tasks' handles out

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_aiopool::{
    CancelReason, CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitErrorKind, SubmitOptions,
    TaskError,
};

// A local CommonAioPool builder (not process-wide).
use support::common_builder as common;
use support::{current_thread, multi_thread_of, on_thread_within, Gate};

/// The cancel reason of a handle's error, if it is a cancellation.
fn reason(e: &TaskError) -> Option<CancelReason> {
    e.cancel_reason()
}

/// Records the order in which tasks start.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<(&'static str, Instant)>>>);

impl Starts {
    fn task(&self, name: &'static str) -> impl std::future::Future<Output = ()> + Send + 'static {
        let me = self.clone();
        async move {
            me.0.lock().unwrap().push((name, Instant::now()));
        }
    }

    fn names(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().iter().map(|(n, _)| *n).collect()
    }

    fn times(&self) -> Vec<Instant> {
        self.0.lock().unwrap().iter().map(|(_, t)| *t).collect()
    }
}

// ----- submit deadlines across runtimes ---------------------------------------------------

/// A `submit_with(.., SubmitOptions::timeout(..))` that began waiting for room on one
/// runtime (its timer made there) and is then awaited on another, after the first one
/// ended, is admitted when room comes (or times out), as a submit without a deadline is:
/// its timer, made on a runtime that has shut down, must not panic from inside tokio
/// ("A Tokio 1.x context was found, but it is being shutdown").
///
/// Failed before the fix (399) on the three pools and a group's `submit_with`, with that
/// panic from tokio's `runtime/time/entry.rs`.
#[test]
fn a_timed_submit_finished_on_another_runtime_after_its_first_ended_is_admitted() {
    let mut outs = Vec::new();
    for which in ["common", "no_queue", "smart", "common group"] {
        let out = on_thread_within(which, 20, move || {
            let home = multi_thread_of(1);
            let gate = Gate::new();
            enum P {
                C(CommonAioPool),
                N(NoQueueAioPool),
                S(SmartAioPool),
            }
            let pool = match which {
                "common" | "common group" => P::C(common(1, 0).build()),
                "no_queue" => P::N(
                    NoQueueAioPool::builder()
                        .max_concurrency(1)
                        .process_wide(false)
                        .build(),
                ),
                _ => P::S(
                    SmartAioPool::builder()
                        .max_concurrency(1)
                        .max_queue_size(0)
                        .auto_shutdown(false)
                        .process_wide(false)
                        .build(),
                ),
            };
            // The one place taken by a task of `home`, held until the gate opens.
            let held = home.block_on(async {
                match &pool {
                    P::C(p) => p.submit(gate.wait()).await.map_err(|e| e.kind()).unwrap(),
                    P::N(p) => p.submit(gate.wait()).await.map_err(|e| e.kind()).unwrap(),
                    P::S(p) => {
                        let g = gate.clone();
                        p.submit(move || g.wait())
                            .await
                            .map_err(|e| e.kind())
                            .unwrap()
                    }
                }
            });
            let opts = SubmitOptions::new().timeout(Duration::from_secs(10));
            let mut sub: std::pin::Pin<
                Box<
                    dyn std::future::Future<
                            Output = Result<nb_aiopool::TaskHandle<u32>, SubmitErrorKind>,
                        > + Send,
                >,
            > = match &pool {
                P::C(p) if which == "common group" => {
                    let mut group = p.group::<u32>();
                    Box::pin(async move {
                        group
                            .submit_with(async { 7u32 }, opts)
                            .await
                            .map_err(|e| e.kind())?;
                        match group.join_next().await {
                            Some(Ok(v)) => {
                                let p2 = CommonAioPool::new(1, 0);
                                Ok(p2
                                    .submit(async move { v })
                                    .await
                                    .map_err(|e| e.kind())
                                    .unwrap())
                            }
                            _ => Err(SubmitErrorKind::Closed),
                        }
                    })
                }
                P::C(p) => {
                    let p = p.clone();
                    Box::pin(async move {
                        p.submit_with(async { 7u32 }, opts)
                            .await
                            .map_err(|e| e.kind())
                    })
                }
                P::N(p) => {
                    let p = p.clone();
                    Box::pin(async move {
                        p.submit_with(async { 7u32 }, opts)
                            .await
                            .map_err(|e| e.kind())
                    })
                }
                P::S(p) => {
                    let p = p.clone();
                    Box::pin(async move {
                        p.submit_with(|| async { 7u32 }, opts)
                            .await
                            .map_err(|e| e.kind())
                    })
                }
            };
            // First polled on a current-thread runtime `a`: it waits, its timer made on `a`.
            let a = current_thread();
            a.block_on(async {
                assert!(
                    tokio::time::timeout(Duration::from_millis(50), &mut sub)
                        .await
                        .is_err(),
                    "{which}: the submit found room in a full pool"
                );
            });
            drop(a);
            // Finished on `home`, a live runtime: polled once while the pool is still full,
            // then the room comes.
            let (polled_tx, polled_rx) = std::sync::mpsc::channel::<()>();
            let joined = home.spawn(async move {
                let mut polled_tx = Some(polled_tx);
                let sub = std::future::poll_fn(move |cx| {
                    let r = sub.as_mut().poll(cx);
                    if let Some(tx) = polled_tx.take() {
                        let _ = tx.send(());
                    }
                    r
                });
                match tokio::time::timeout(Duration::from_secs(5), sub).await {
                    Ok(Ok(h)) => Ok(h.await.map_err(|e| format!("{e}"))),
                    Ok(Err(kind)) => Err(format!("refused: {kind:?}")),
                    Err(_) => Err("not admitted within 5 s".to_string()),
                }
            });
            polled_rx.recv_timeout(Duration::from_secs(5)).ok();
            gate.open();
            let out = home.block_on(joined);
            let _ = home.block_on(held);
            match out {
                Ok(r) => r
                    .map(|r| r.map_err(|e| format!("task failed: {e}")))
                    .and_then(|r| r),
                Err(j) if j.is_panic() => Err(format!(
                    "the submit panicked: {}",
                    support::panic_message(&*j.into_panic())
                )),
                Err(j) => Err(format!("{j}")),
            }
        });
        outs.push((which, out));
    }
    let want: Vec<_> = outs.iter().map(|(w, _)| (*w, Ok(7))).collect();
    assert_eq!(outs, want, "a timed submit awaited on a second runtime");
}

/// The same for `shutdown_timeout`: its deadline's timer, made on the runtime that first
/// polled it, must not panic from inside tokio when the shutdown is finished on another
/// runtime after that one ended; the report says what the deadline did.
///
/// Failed before the fix (399): the same panic from inside tokio.
#[test]
fn a_shutdown_timeout_finished_on_another_runtime_after_its_first_ended_reports() {
    let out = on_thread_within("shutdown_timeout", 20, || {
        let home = multi_thread_of(1);
        let gate = Gate::new();
        let pool = common(1, 0).build();
        let held = home.block_on(async {
            pool.submit(gate.wait())
                .await
                .map_err(|e| e.kind())
                .unwrap()
        });
        let mut down = Box::pin(pool.shutdown_timeout(Duration::from_secs(10)));
        let a = current_thread();
        a.block_on(async {
            assert!(
                tokio::time::timeout(Duration::from_millis(50), &mut down)
                    .await
                    .is_err(),
                "shutdown_timeout returned with a task running"
            );
        });
        drop(a);
        let (polled_tx, polled_rx) = std::sync::mpsc::channel::<()>();
        let joined = home.spawn(async move {
            let mut polled_tx = Some(polled_tx);
            let down = std::future::poll_fn(move |cx| {
                let r = down.as_mut().poll(cx);
                if let Some(tx) = polled_tx.take() {
                    let _ = tx.send(());
                }
                r
            });
            tokio::time::timeout(Duration::from_secs(5), down)
                .await
                .ok()
        });
        polled_rx.recv_timeout(Duration::from_secs(5)).ok();
        gate.open();
        let out = home.block_on(joined);
        let _ = home.block_on(held);
        match out {
            Ok(Some(report)) => Ok((report.finished(), report.abandoned())),
            Ok(None) => Err("shutdown_timeout did not return within 5 s".to_string()),
            Err(j) if j.is_panic() => Err(format!(
                "shutdown_timeout panicked: {}",
                support::panic_message(&*j.into_panic())
            )),
            Err(j) => Err(format!("{j}")),
        }
    });
    assert_eq!(
        out,
        Ok((1, 0)),
        "a shutdown_timeout awaited on a second runtime"
    );
}

// ----- weights, priorities and rate windows when a runtime ends ------------------------------

/// A heavy task queued from a current-thread runtime at the head of a weighted pool holds
/// the lighter tasks of another runtime behind it (they never overtake it). When its
/// runtime ends, it is cancelled (`RuntimeShutdown`) and the tasks behind it start at
/// once, while the task that held the weight still runs: no weight is kept for it.
#[test]
fn a_heavy_task_queued_from_a_runtime_that_ends_lets_the_lighter_ones_behind_it_start() {
    let out = on_thread_within("heavy", 20, || {
        let b = multi_thread_of(2);
        let pool = common(4, 16).weight_capacity(10).build();
        let gate = Gate::new();
        let running = b.block_on(async {
            pool.submit_with(gate.wait(), SubmitOptions::new().weight(6))
                .await
                .map_err(|e| e.kind())
                .unwrap()
        });
        let a = current_thread();
        let heavy = a.block_on(async {
            pool.submit_with(async { 10u32 }, SubmitOptions::new().weight(10))
                .await
                .map_err(|e| e.kind())
                .unwrap()
        });
        let started = Arc::new(AtomicUsize::new(0));
        let lights: Vec<_> = b.block_on(async {
            let mut v = Vec::new();
            for _ in 0..3 {
                let s = started.clone();
                v.push(
                    pool.submit_with(
                        async move {
                            s.fetch_add(1, Ordering::SeqCst);
                        },
                        SubmitOptions::new().weight(1),
                    )
                    .await
                    .map_err(|e| e.kind())
                    .unwrap(),
                );
            }
            v
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            started.load(Ordering::SeqCst),
            0,
            "a light task overtook the heavy one"
        );
        drop(a);
        let heavy_out =
            b.block_on(async { tokio::time::timeout(Duration::from_secs(5), heavy).await });
        let lit = support::reach_blocking(&started, 3, Duration::from_secs(3));
        let stats = pool.stats();
        gate.open();
        b.block_on(async {
            for h in lights {
                h.await.unwrap();
            }
            running.await.unwrap();
        });
        (heavy_out.map(|r| r.map_err(|e| reason(&e))), lit, stats)
    });
    let (heavy, lit, stats) = out;
    assert_eq!(
        heavy,
        Ok(Err(Some(CancelReason::RuntimeShutdown))),
        "the heavy task of the runtime that ended"
    );
    assert_eq!(
        lit, 3,
        "the light tasks behind it did not start with weight 6 of 10 in use ({stats})"
    );
}

/// A high-priority task queued from a runtime that ends is cancelled; the tasks of the live
/// runtime then start in their own priority and submission order, and `stats()` agrees.
#[test]
fn a_prioritised_task_of_a_runtime_that_ends_leaves_the_others_in_order() {
    let out = on_thread_within("priority", 20, || {
        let b = multi_thread_of(1);
        let pool = common(1, 16).build();
        let gate = Gate::new();
        let starts = Starts::default();
        let running = b.block_on(async {
            pool.submit(gate.wait())
                .await
                .map_err(|e| e.kind())
                .unwrap()
        });
        let a = current_thread();
        let high = a.block_on(async {
            pool.submit_with(starts.task("a-high"), SubmitOptions::new().priority(10))
                .await
                .map_err(|e| e.kind())
                .unwrap()
        });
        let mine: Vec<_> = b.block_on(async {
            let mut v = Vec::new();
            for (name, prio) in [("b-low", 0), ("b-mid", 5), ("b-low2", 0), ("b-mid2", 5)] {
                v.push(
                    pool.submit_with(starts.task(name), SubmitOptions::new().priority(prio))
                        .await
                        .map_err(|e| e.kind())
                        .unwrap(),
                );
            }
            v
        });
        drop(a);
        let high = b.block_on(async { tokio::time::timeout(Duration::from_secs(5), high).await });
        gate.open();
        let done = b.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), async {
                for h in mine {
                    h.await.unwrap();
                }
                running.await.unwrap();
            })
            .await
        });
        (
            high.map(|r| r.map_err(|e| reason(&e))),
            done.is_ok(),
            starts.names(),
            pool.stats(),
        )
    });
    let (high, done, names, stats) = out;
    assert_eq!(high, Ok(Err(Some(CancelReason::RuntimeShutdown))));
    assert!(done, "the live runtime's tasks did not all end ({stats})");
    assert_eq!(names, ["b-mid", "b-mid2", "b-low", "b-low2"]);
    assert_eq!(
        (
            stats.submitted,
            stats.completed,
            stats.cancelled,
            stats.queued,
            stats.running
        ),
        (6, 5, 1, 0, 0)
    );
}

/// What a task given a slot can hold that others wait for: a start of a window that never
/// reopens, of an hour's window, or the pool's whole weight (see [`held_by_one`]).
const HELD: [(&str, Duration, bool); 3] = [
    ("a window that never reopens", Duration::MAX, false),
    ("an hour's window", Duration::from_secs(3600), false),
    ("the weight", Duration::ZERO, true),
];

/// A CommonAioPool of 2 slots that one task holds up: by the one start of a
/// `rate_limit(1, per)` window, or (`weighted`) by its weight of 4 in a `weight_capacity(4)`;
/// and the options of such a task.
fn held_by_one(per: Duration, weighted: bool) -> (CommonAioPool, SubmitOptions) {
    let builder = common(2, 8);
    let builder = if weighted {
        builder.weight_capacity(4)
    } else {
        builder.rate_limit(1, per)
    };
    let opts = SubmitOptions::new().weight(if weighted { 4 } else { 1 });
    (builder.build(), opts)
}

/// Task x (returning 1, with `opts`), submitted to `pool` from a current-thread runtime
/// that is not driven after the submit: that runtime (alive) and x's handle.
fn one_from_an_undriven_runtime(
    pool: &CommonAioPool,
    opts: &SubmitOptions,
) -> (tokio::runtime::Runtime, nb_aiopool::TaskHandle<u32>) {
    let a = current_thread();
    let x = a.block_on(async {
        pool.submit_with(async { 1u32 }, opts.clone())
            .await
            .map_err(|e| e.kind())
            .unwrap()
    });
    (a, x)
}

/// A task given a slot at its submit on a current-thread runtime that is then never driven
/// again took a start of the rate window (or its weight) without ever starting. When that
/// runtime is dropped, the task is cancelled (`RuntimeShutdown`) and what it took comes
/// back: a task of a live runtime that the window (or the weight) held back starts.
#[test]
fn a_start_or_weight_taken_for_a_task_of_a_runtime_dropped_undriven_comes_back() {
    for (what, per, weighted) in HELD {
        let out = on_thread_within(what, 20, move || {
            let b = multi_thread_of(1);
            let (pool, opts) = held_by_one(per, weighted);
            let (a, x) = one_from_an_undriven_runtime(&pool, &opts);
            let y = b.block_on(async {
                pool.submit_with(async { 2u32 }, opts)
                    .await
                    .map_err(|e| e.kind())
                    .unwrap()
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(!y.is_finished(), "{what}: y started beside x");
            drop(a);
            b.block_on(async {
                let x = tokio::time::timeout(Duration::from_secs(3), x).await;
                let y = tokio::time::timeout(Duration::from_secs(3), y).await;
                (
                    x.map(|r| r.map_err(|e| reason(&e))),
                    y.map(|r| r.map_err(|e| reason(&e))),
                    pool.stats(),
                )
            })
        });
        let (x, y, stats) = out;
        assert_eq!(x, Ok(Err(Some(CancelReason::RuntimeShutdown))), "{what}: x");
        assert_eq!(
            y,
            Ok(Ok(2)),
            "{what}: y, held back by x, which never started ({stats})"
        );
    }
}

// ----- a randomised mix ----------------------------------------------------------------------

/// One of the three pools, built with flow control, for the randomised mix.
#[derive(Clone)]
enum P {
    C(CommonAioPool),
    N(NoQueueAioPool),
    S(SmartAioPool),
}

/// A task of the mix: sleeps `ms`, returns `v`.
async fn job(ms: u64, v: u32) -> u32 {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    v
}

type Handle = nb_aiopool::TaskHandle<u32>;

impl P {
    async fn submit(
        &self,
        opts: SubmitOptions,
        ms: u64,
        v: u32,
    ) -> Result<Handle, SubmitErrorKind> {
        match self {
            P::C(p) => p.submit_with(job(ms, v), opts).await.map_err(|e| e.kind()),
            P::N(p) => p.submit_with(job(ms, v), opts).await.map_err(|e| e.kind()),
            P::S(p) => p
                .submit_with(move || job(ms, v), opts)
                .await
                .map_err(|e| e.kind()),
        }
    }

    fn blocking(&self, opts: SubmitOptions, ms: u64, v: u32) -> Result<Handle, SubmitErrorKind> {
        match self {
            P::C(p) => p
                .blocking_submit_with(job(ms, v), opts)
                .map_err(|e| e.kind()),
            P::N(p) => p
                .blocking_submit_with(job(ms, v), opts)
                .map_err(|e| e.kind()),
            P::S(p) => p
                .blocking_submit_with(move || job(ms, v), opts)
                .map_err(|e| e.kind()),
        }
    }

    fn stats(&self) -> nb_aiopool::PoolStats {
        match self {
            P::C(p) => p.stats(),
            P::N(p) => p.stats(),
            P::S(p) => p.stats(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            P::C(_) => "common",
            P::N(_) => "no_queue",
            P::S(_) => "smart",
        }
    }

    /// How many tasks it holds at once.
    fn room(&self, conc: usize, queue: usize) -> usize {
        match self {
            P::N(_) => conc,
            _ => conc + queue,
        }
    }
}

/// A small xorshift generator (deterministic per seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn opts(&mut self) -> SubmitOptions {
        let mut o = SubmitOptions::new()
            .priority(self.below(3) as i32)
            .weight(1 + self.below(4) as u32);
        if self.below(3) == 0 {
            o = o.timeout(Duration::from_millis(5 + self.below(40)));
        }
        o
    }
}

/// Where a handle came from, and what it may end with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum From {
    /// The runtime that lives through the round.
    Live,
    /// A current-thread runtime dropped (undriven) at a random moment.
    Dropped,
    /// A multi-thread runtime shut down at a random moment (its producer task with it).
    ShutDown,
    /// A plain thread.
    Plain,
    /// A `spawn_blocking` thread of the runtime that is shut down.
    Blocking,
}

/// One round: a pool with weights, priorities and (in half the rounds) a rate window, fed
/// from a live multi-thread runtime, a current-thread runtime dropped undriven, a
/// multi-thread runtime shut down while its producer waits for room, a plain thread and a
/// `spawn_blocking` thread (submits with random priorities, weights and deadlines).
/// Every accepted handle resolves (a value, or `RuntimeShutdown` for a task of a runtime
/// that ended), `stats()` agrees with the handles, and afterwards the pool has all its
/// room, weight and rate window back: it takes `room` tasks of full weight at once
/// (`try_submit_with`) and runs them.
fn mix_round(seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let conc = 1 + rng.below(3) as usize;
    let queue = rng.below(4) as usize;
    let rated = rng.below(2) == 0;
    let per = Duration::from_millis(10 + rng.below(30));
    let count = 1 + rng.below(3) as u32;
    let pool = match rng.below(3) {
        0 => {
            let mut b = common(conc, queue).weight_capacity(4);
            if rated {
                b = b.rate_limit(count, per);
            }
            P::C(b.build())
        }
        1 => {
            let mut b = NoQueueAioPool::builder()
                .max_concurrency(conc)
                .process_wide(false)
                .weight_capacity(4);
            if rated {
                b = b.rate_limit(count, per);
            }
            P::N(b.build())
        }
        _ => {
            let mut b = SmartAioPool::builder()
                .max_concurrency(conc)
                .max_queue_size(queue)
                .auto_shutdown(false)
                .process_wide(false)
                .weight_capacity(4);
            if rated {
                b = b.rate_limit(count, per);
            }
            P::S(b.build())
        }
    };
    let what = format!(
        "seed {seed}: {} conc {conc} queue {queue} rate {}",
        pool.name(),
        if rated {
            format!("{count}/{per:?}")
        } else {
            "none".into()
        }
    );
    let handles: Arc<Mutex<Vec<(Handle, From, u32)>>> = Arc::default();
    let refused: Arc<Mutex<Vec<(SubmitErrorKind, From)>>> = Arc::default();
    let live = multi_thread_of(1);
    let doomed = multi_thread_of(1);
    let a = current_thread();
    let n = 6 + rng.below(6) as u32;
    let mut v = 0u32;
    let mut next_v = || {
        v += 1;
        v
    };
    // The current-thread runtime submits first, while it is driven, then is left undriven.
    let a_jobs: Vec<(SubmitOptions, u64, u32)> = (0..1 + rng.below(3))
        .map(|_| (rng.opts(), rng.below(10), next_v()))
        .collect();
    {
        let (pool, handles, refused) = (pool.clone(), handles.clone(), refused.clone());
        let _ = a.block_on(async move {
            tokio::time::timeout(Duration::from_millis(30), async move {
                for (o, ms, v) in a_jobs {
                    match pool.submit(o, ms, v).await {
                        Ok(h) => handles.lock().unwrap().push((h, From::Dropped, v)),
                        Err(k) => refused.lock().unwrap().push((k, From::Dropped)),
                    }
                }
            })
            .await
        });
    }
    let mut producers = Vec::new();
    for from in [From::Live, From::ShutDown, From::Plain, From::Blocking] {
        let jobs: Vec<(SubmitOptions, u64, u32)> = (0..n)
            .map(|_| (rng.opts(), rng.below(8), next_v()))
            .collect();
        let (pool, handles, refused) = (pool.clone(), handles.clone(), refused.clone());
        let one = move |r: Result<Handle, SubmitErrorKind>, v: u32| match r {
            Ok(h) => handles.lock().unwrap().push((h, from, v)),
            Err(k) => refused.lock().unwrap().push((k, from)),
        };
        match from {
            From::Live | From::ShutDown => {
                let rt = if from == From::Live { &live } else { &doomed };
                producers.push(rt.spawn(async move {
                    for (o, ms, v) in jobs {
                        let r = pool.submit(o, ms, v).await;
                        one(r, v);
                    }
                }));
            }
            From::Plain => {
                let t = std::thread::spawn(move || {
                    for (o, ms, v) in jobs {
                        let r = pool.blocking(o, ms, v);
                        one(r, v);
                    }
                });
                producers.push(live.spawn(async move {
                    let _ = tokio::task::spawn_blocking(move || t.join()).await;
                }));
            }
            From::Blocking => {
                drop(doomed.spawn_blocking(move || {
                    for (o, ms, v) in jobs {
                        let r = pool.blocking(o, ms, v);
                        one(r, v);
                    }
                }));
            }
            From::Dropped => unreachable!(),
        }
    }
    std::thread::sleep(Duration::from_millis(rng.below(40)));
    if rng.below(2) == 0 {
        drop(a);
        doomed.shutdown_background();
    } else {
        doomed.shutdown_background();
        std::thread::sleep(Duration::from_millis(rng.below(20)));
        drop(a);
    }
    // Every producer ends (the live one's and the plain thread's), bounded.
    let joined = live.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            for p in producers {
                let _ = p.await;
            }
        })
        .await
    });
    if joined.is_err() {
        return Err(format!(
            "{what}: a producer did not end within 10 s ({})",
            pool.stats()
        ));
    }
    // The spawn_blocking producer may still be going (its runtime shut down in the
    // background): wait until it has no more to submit.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = handles
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.1 == From::Blocking)
            .count()
            + refused
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.1 == From::Blocking)
                .count();
        if seen == n as usize {
            break;
        }
        if Instant::now() > end {
            return Err(format!(
                "{what}: the spawn_blocking producer did not end ({seen} of {n})"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for (k, from) in refused.lock().unwrap().iter() {
        let fine = match k {
            SubmitErrorKind::TimedOut => true,
            SubmitErrorKind::NoRuntime => matches!(
                from,
                From::Blocking | From::Plain | From::Dropped | From::ShutDown
            ),
            _ => false,
        };
        if !fine {
            return Err(format!(
                "{what}: a submit from {from:?} was refused with {k:?}"
            ));
        }
    }
    let handles = std::mem::take(&mut *handles.lock().unwrap());
    let accepted = handles.len();
    let mut ok = 0u64;
    let mut lost = 0u64;
    let outcome = live.block_on(async {
        for (h, from, v) in handles {
            match tokio::time::timeout(Duration::from_secs(10), h).await {
                Err(_) => {
                    return Err(format!(
                        "{what}: a handle of {from:?} (task {v}) never resolved ({})",
                        pool.stats()
                    ))
                }
                Ok(Ok(got)) if got == v => ok += 1,
                Ok(Ok(got)) => return Err(format!("{what}: task {v} returned {got}")),
                Ok(Err(e))
                    if reason(&e) == Some(CancelReason::RuntimeShutdown) && from != From::Live =>
                {
                    lost += 1
                }
                Ok(Err(e)) => return Err(format!("{what}: a task of {from:?} ended with {e}")),
            }
        }
        Ok(())
    });
    outcome?;
    let stats = pool.stats();
    if (stats.queued, stats.running) != (0, 0)
        || stats.submitted != accepted as u64
        || stats.completed != ok
        || stats.cancelled != lost
        || stats.panicked != 0
    {
        return Err(format!(
            "{what}: stats {stats} against {accepted} accepted, {ok} ok, {lost} lost"
        ));
    }
    // All the room, weight and rate window back: `room` tasks of full weight accepted at
    // once, and they all run.
    let room = pool.room(conc, queue);
    let again = live.block_on(async {
        let mut hs = Vec::new();
        for i in 0..room {
            let o = SubmitOptions::new().weight(4);
            let r = match &pool {
                P::C(p) => p
                    .try_submit_with(job(0, 1000 + i as u32), o)
                    .map_err(|e| format!("{:?}", e.kind())),
                P::N(p) => p
                    .try_submit_with(job(0, 1000 + i as u32), o)
                    .map_err(|e| format!("{:?}", e.kind())),
                P::S(p) => {
                    let i = i as u32;
                    p.try_submit_with(move || job(0, 1000 + i), o)
                        .map_err(|e| format!("{:?}", e.kind()))
                }
            };
            match r {
                Ok(h) => hs.push(h),
                Err(k) => {
                    return Err(format!(
                        "{what}: after the round, submit {i} of {room} refused: {k} ({})",
                        pool.stats()
                    ))
                }
            }
        }
        for h in hs {
            match tokio::time::timeout(Duration::from_secs(5), h).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(format!("{what}: after the round, a task ended with {e}"))
                }
                Err(_) => {
                    return Err(format!(
                        "{what}: after the round, a task never ended ({})",
                        pool.stats()
                    ))
                }
            }
        }
        Ok(())
    });
    again?;
    live.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// The randomised mix of [`mix_round`], 60 seeds (more with `NB_MIX_ROUNDS`); every
/// failing seed is reported.
#[test]
fn randomised_flow_controlled_submits_from_runtimes_and_threads_that_end() {
    let rounds: u64 = std::env::var("NB_MIX_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let first: u64 = std::env::var("NB_MIX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut failed = Vec::new();
    for seed in first..first + rounds {
        let r = support::on_thread_or_else(
            "a round",
            40,
            move || mix_round(seed),
            |what, secs| Err(format!("seed {seed}: {what} timed out ({secs} s)")),
        );
        if let Err(e) = r {
            eprintln!("{e}");
            failed.push(e);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {rounds} rounds failed; first: {}",
        failed.len(),
        failed[0]
    );
}

/// A `submit_with(.., timeout(100 ms))` first polled on a current-thread runtime that is
/// then left alive but not driven, and awaited from then on on a driven runtime while the
/// pool stays full, gives up when its deadline passes (`TimedOut`): its deadline must not
/// wait for the first runtime to be driven again (the docs: the timer runs on "the runtime
/// whose context polls the submit").
///
/// Failed before the fix (399): "its 100 ms deadline had not passed after 3 s on a driven
/// runtime" (the timer was the first runtime's).
#[test]
fn a_timed_submit_awaited_on_a_driven_runtime_times_out_though_its_first_runtime_is_not_driven() {
    let out = on_thread_within("undriven first runtime", 20, || {
        let home = multi_thread_of(1);
        let gate = Gate::new();
        let pool = common(1, 0).build();
        let held = home.block_on(async {
            pool.submit(gate.wait())
                .await
                .map_err(|e| e.kind())
                .unwrap()
        });
        let opts = SubmitOptions::new().timeout(Duration::from_millis(100));
        let p = pool.clone();
        let mut sub = Box::pin(async move {
            p.submit_with(async { 7u32 }, opts)
                .await
                .map_err(|e| e.kind())
        });
        let a = current_thread();
        a.block_on(async {
            assert!(
                tokio::time::timeout(Duration::from_millis(20), &mut sub)
                    .await
                    .is_err(),
                "the submit found room in a full pool"
            );
        });
        // `a` stays alive, not driven.
        let out = home.block_on(async move {
            let begun = Instant::now();
            match tokio::time::timeout(Duration::from_secs(3), sub).await {
                Ok(Err(kind)) => Ok((kind, begun.elapsed() < Duration::from_secs(1))),
                Ok(Ok(_)) => Err("admitted into a full pool".to_string()),
                Err(_) => Err(
                    "its 100 ms deadline had not passed after 3 s on a driven runtime".to_string(),
                ),
            }
        });
        gate.open();
        let _ = home.block_on(held);
        drop(a);
        out
    });
    assert_eq!(out, Ok((SubmitErrorKind::TimedOut, true)));
}

/// With a rate window of one start per 100 ms, tasks of several priorities queued from a
/// multi-thread runtime and from a current-thread runtime that a thread keeps driving
/// start one per window in priority order across both runtimes (strict priority; the
/// hand-overs between runtimes keep it), and every one of them starts.
///
/// A round judges the order only if its submits came in time: `b6` queued before the
/// window's first reopening after `first`'s start, `a5` before its second. A round whose
/// threads were held up past that (a loaded machine) is played again, up to 60 rounds in
/// all (RELIABILITY.md, 417).
#[test]
fn queued_priorities_of_two_runtimes_start_in_one_order_through_a_rate_window() {
    let rounds = 20;
    let mut bad = Vec::new();
    let (mut judged, mut played) = (0, 0);
    while judged < rounds {
        assert!(
            played < 60,
            "only {judged} of {played} rounds submitted in time (is the machine that busy?)"
        );
        let round = played;
        played += 1;
        let out = on_thread_within("priorities through a rate window", 30, move || {
            let b = multi_thread_of(2);
            let pool = common(4, 32)
                .rate_limit(1, Duration::from_millis(100))
                .build();
            let starts = Starts::default();
            // `first` is let start before the others come: until a slot task takes it, a
            // task of a higher priority submitted meanwhile would take its slot first (see
            // the pin below), and the order would depend on when b's worker got to it.
            let first = b.block_on(async {
                let h = pool
                    .submit(starts.task("first"))
                    .await
                    .map_err(|e| e.kind())
                    .unwrap();
                support::within("the first task's start", async {
                    while starts.names().is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
                h
            });
            // A current-thread runtime, driven by its own thread for the whole test.
            let (a_tx, a_rx) =
                std::sync::mpsc::channel::<(Vec<nb_aiopool::TaskHandle<()>>, Instant)>();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let a_thread = {
                let (pool, starts) = (pool.clone(), starts.clone());
                std::thread::spawn(move || {
                    current_thread().block_on(async move {
                        go_rx.recv().unwrap();
                        let mut hs = Vec::new();
                        for (name, prio) in [("a1", 1), ("a3", 3), ("a5", 5)] {
                            hs.push(
                                pool.submit_with(
                                    starts.task(name),
                                    SubmitOptions::new().priority(prio),
                                )
                                .await
                                .map_err(|e| e.kind())
                                .unwrap(),
                            );
                            tokio::task::yield_now().await;
                        }
                        a_tx.send((hs, Instant::now())).unwrap();
                        let _ = stop_rx.await;
                    })
                })
            };
            let mine = b.block_on(async {
                let mut hs = Vec::new();
                for (i, (name, prio)) in [("b2", 2), ("b4", 4), ("b6", 6)].into_iter().enumerate() {
                    if i == 1 {
                        go_tx.send(()).unwrap();
                    }
                    hs.push(
                        pool.submit_with(starts.task(name), SubmitOptions::new().priority(prio))
                            .await
                            .map_err(|e| e.kind())
                            .unwrap(),
                    );
                }
                hs
            });
            let b_done = Instant::now();
            let (theirs, a_done) = a_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("a's submits");
            let done = b.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), async {
                    first.await.unwrap();
                    for h in mine.into_iter().chain(theirs) {
                        h.await.unwrap();
                    }
                })
                .await
                .is_ok()
            });
            let _ = stop_tx.send(());
            a_thread.join().unwrap();
            let times = starts.times();
            let gaps: Vec<u128> = times
                .windows(2)
                .map(|w| (w[1] - w[0]).as_millis())
                .collect();
            let per = Duration::from_millis(100);
            let in_time = b_done < times[0] + per && a_done < times[0] + 2 * per;
            (in_time, done, starts.names(), gaps)
        });
        let (in_time, done, names, gaps) = out;
        if !in_time {
            continue;
        }
        judged += 1;
        if !done || names != ["first", "b6", "a5", "b4", "a3", "b2", "a1"] {
            bad.push(format!(
                "round {round}: done {done}, order {names:?}, gaps {gaps:?} ms"
            ));
        }
    }
    assert!(bad.is_empty(), "{} of {rounds} rounds: {bad:#?}", bad.len());
}

/// A task given a free slot at its submit counts as running (`stats().running`) from
/// then, but starts only when a slot task takes it, a moment later on its runtime; a task
/// of a higher priority submitted before that (its submitter had not yielded) takes that
/// slot, and the window's start, first: "higher runs first" holds among the tasks that no
/// slot task has taken, as `SubmitOptions::priority` documents. In a rate-limited pool of
/// one start per second on a paused clock, the later, higher task starts at once and the
/// earlier one a window later. (The review of flow control across runtimes took this for
/// a preemption; it is the documented order, pinned here on the three pools.)
#[test]
fn pin_a_higher_priority_submitted_before_a_slot_task_takes_the_first_task_starts_first() {
    let mut outs = Vec::new();
    for which in ["common", "no_queue", "smart"] {
        let out = on_thread_within(which, 20, move || {
            let rt = support::paused_runtime();
            rt.block_on(async {
                let per = Duration::from_secs(1);
                let pool = match which {
                    "common" => P::C(common(2, 8).rate_limit(1, per).build()),
                    "no_queue" => P::N(
                        NoQueueAioPool::builder()
                            .max_concurrency(2)
                            .process_wide(false)
                            .rate_limit(1, per)
                            .build(),
                    ),
                    _ => P::S(
                        SmartAioPool::builder()
                            .max_concurrency(2)
                            .max_queue_size(8)
                            .auto_shutdown(false)
                            .process_wide(false)
                            .rate_limit(1, per)
                            .build(),
                    ),
                };
                let t0 = tokio::time::Instant::now();
                let first = pool.submit(SubmitOptions::new(), 0, 1).await.unwrap();
                let running_at_once = pool.stats().running;
                let high = pool
                    .submit(SubmitOptions::new().priority(5), 0, 2)
                    .await
                    .unwrap();
                let mut order = Vec::new();
                let (mut first, mut high) = (Some(first), Some(high));
                support::within("both", async {
                    while first.is_some() || high.is_some() {
                        tokio::select! {
                            r = async { first.as_mut().unwrap().await }, if first.is_some() => {
                                r.unwrap();
                                first = None;
                                order.push(("first", t0.elapsed()));
                            }
                            r = async { high.as_mut().unwrap().await }, if high.is_some() => {
                                r.unwrap();
                                high = None;
                                order.push(("high", t0.elapsed()));
                            }
                        }
                    }
                })
                .await;
                (running_at_once, order)
            })
        });
        outs.push((which, out));
    }
    let want: Vec<_> = outs
        .iter()
        .map(|(w, _)| {
            (
                *w,
                (
                    1,
                    vec![("high", Duration::ZERO), ("first", Duration::from_secs(1))],
                ),
            )
        })
        .collect();
    assert_eq!(
        outs, want,
        "(pool, (running after the first submit, [(task, when it ended on the paused clock)])): \
         the higher priority did not start first among the tasks no slot task had taken"
    );
}

/// A `shutdown_timeout` whose deadline passes while a task handed to a slot task on a
/// current-thread runtime that is no longer driven has never been polled (counted
/// running, with its weight or without one; a wait of the shutdown on
/// another runtime hands it to a slot task there) returns at the deadline, with the task
/// counted abandoned (0 finished, 1 abandoned) and its handle saying `Abandoned`, while
/// that runtime is still alive: the task never started, so it is dropped as a queued one
/// is.
///
/// Failed before the fix (finding 400): the shutdown waited until that runtime was driven
/// again or dropped (it was pinned so).
#[test]
fn a_shutdown_deadline_abandons_a_task_handed_to_a_runtime_not_driven_at_the_deadline() {
    let mut outs = Vec::new();
    // (Not a rate-limited pool: there the shutdown's wait from `b`, a runtime whose timers
    // the pool does not know, hands nothing over, and x stays queued.)
    for what in ["plain", "weight"] {
        let out = on_thread_within(what, 20, move || {
            let b = multi_thread_of(1);
            let mut builder = common(1, 4);
            if what == "weight" {
                builder = builder.weight_capacity(3);
            }
            let pool = builder.build();
            let a = current_thread();
            let x = a.block_on(async {
                pool.submit_with(async { 1u32 }, SubmitOptions::new().weight(2))
                    .await
                    .map_err(|e| e.kind())
                    .unwrap()
            });
            let running = pool.stats().running;
            let shut = pool.shutdown_timeout(Duration::from_millis(100));
            // Past the deadline, `a` alive and not driven.
            let report = b.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), shut)
                    .await
                    .map(|r| (r.finished(), r.abandoned()))
                    .map_err(|_| format!("not returned 2 s after the call ({})", pool.stats()))
            });
            let x = b.block_on(async { tokio::time::timeout(Duration::from_secs(1), x).await });
            let stats = pool.stats();
            drop(a);
            (
                running,
                report,
                x.map(|r| r.map_err(|e| reason(&e)))
                    .map_err(|_| "x unresolved while `a` is alive"),
                (stats.running, stats.cancelled),
            )
        });
        outs.push((what, out));
    }
    let want: Vec<_> = outs
        .iter()
        .map(|(w, _)| {
            (
                *w,
                (
                    1,
                    Ok((0, 1)),
                    Ok(Err(Some(CancelReason::Abandoned))),
                    (0, 1),
                ),
            )
        })
        .collect();
    assert_eq!(
        outs, want,
        "(case, (running after the submit, the report (finished, abandoned), x, \
         (running, cancelled) then))"
    );
}

/// The same as
/// [`a_shutdown_deadline_abandons_a_task_handed_to_a_runtime_not_driven_at_the_deadline`]
/// for `cancel_all` (which "returns once they are all gone"), on the three pools: a task
/// given a slot on a current-thread runtime that is no longer driven, never polled, is
/// cancelled at once, whether it is still queued (a plain `cancel_all`) or a wait on
/// another runtime has handed it to a slot task there; so is it by a shutdown's deadline.
/// The call returns, the handle resolves and `stats()` counts it, while that runtime is
/// still alive.
///
/// Failed before the fix (finding 400) for the two cases with the hand-over, on the three
/// pools: the calls returned only once that runtime was dropped (they were pinned so).
#[test]
fn cancel_all_and_shutdown_deadlines_end_a_task_handed_to_a_runtime_not_driven_at_once() {
    let mut outs = Vec::new();
    for which in ["common", "no_queue", "smart"] {
        for call in ["cancel_all", "wait, then cancel_all", "shutdown_timeout"] {
            let out = on_thread_within(which, 20, move || {
                let b = multi_thread_of(1);
                let pool = match which {
                    "common" => P::C(common(1, 4).build()),
                    "no_queue" => P::N(
                        NoQueueAioPool::builder()
                            .max_concurrency(1)
                            .process_wide(false)
                            .build(),
                    ),
                    _ => P::S(support::one_slot_smart(4)),
                };
                let a = current_thread();
                let x =
                    a.block_on(async { pool.submit(SubmitOptions::new(), 0, 1).await.unwrap() });
                let done = b.block_on(async {
                    if call.starts_with("wait") {
                        // A wait polled on `b` for a moment: its look at the pool hands `x`
                        // to a slot task on `a` (a claimer on `b` takes it and hands it over).
                        let w: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match &pool {
                            P::C(p) => Box::pin(p.wait()),
                            P::N(p) => Box::pin(p.wait()),
                            P::S(p) => Box::pin(p.wait()),
                        };
                        let _ = tokio::time::timeout(Duration::from_millis(50), w).await;
                    }
                    let ended: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> =
                        match (&pool, call) {
                            (P::C(p), "shutdown_timeout") => {
                                let f = p.shutdown_timeout(Duration::from_millis(100));
                                Box::pin(async move {
                                    let _ = f.await;
                                })
                            }
                            (P::N(p), "shutdown_timeout") => {
                                let f = p.shutdown_timeout(Duration::from_millis(100));
                                Box::pin(async move {
                                    let _ = f.await;
                                })
                            }
                            (P::S(p), "shutdown_timeout") => {
                                let f = p.shutdown_timeout(Duration::from_millis(100));
                                Box::pin(async move {
                                    let _ = f.await;
                                })
                            }
                            (P::C(p), _) => Box::pin(p.cancel_all()),
                            (P::N(p), _) => Box::pin(p.cancel_all()),
                            (P::S(p), _) => Box::pin(p.cancel_all()),
                        };
                    // `a` alive and not driven.
                    tokio::time::timeout(Duration::from_secs(2), ended)
                        .await
                        .is_ok()
                });
                let stats = pool.stats();
                let x = b.block_on(async { tokio::time::timeout(Duration::from_secs(1), x).await });
                drop(a);
                (
                    done,
                    (stats.running, stats.cancelled),
                    x.map(|r| r.map_err(|e| reason(&e)))
                        .map_err(|_| "x unresolved while `a` is alive"),
                )
            });
            outs.push((which, call, out));
        }
    }
    let want: Vec<_> = outs
        .iter()
        .map(|(which, call, _)| {
            let reason = if *call == "shutdown_timeout" {
                CancelReason::Abandoned
            } else {
                CancelReason::CancelAll
            };
            (*which, *call, (true, (0, 1), Ok(Err(Some(reason)))))
        })
        .collect();
    assert_eq!(
        outs, want,
        "(pool, call, (returned within 2 s with `a` alive, (running, cancelled) then, x))"
    );
}

/// A task handed to a slot task on a current-thread runtime that is no longer driven
/// (never polled there), aborted by its handle or by a `cancel_all`, gives back at once
/// what it held: its slot, or its weight. A `wait()` on another runtime returns, and a
/// task of that runtime that it held back starts, while the first runtime is still alive.
/// The hand-over is checked first: h, of a higher priority and needing the same room,
/// waits (a task only reserved a slot, still queued, would yield it to h). (A rate
/// window's start is not in these cases: there a `wait()` from a runtime whose timers the
/// pool does not know hands nothing over; `tests/handed_jobs_review.rs` hands a task that
/// holds a start over another way.)
///
/// Failed before the fix (finding 400): its slot and what it held came back only when
/// its runtime was driven again or dropped.
#[test]
fn a_task_handed_to_a_runtime_not_driven_and_then_ended_gives_its_room_back_at_once() {
    let mut outs = Vec::new();
    for what in ["the slot", "the weight"] {
        for end in ["abort", "cancel_all"] {
            let out = on_thread_within(what, 20, move || {
                let b = multi_thread_of(1);
                let (pool, opts) = if what == "the weight" {
                    held_by_one(Duration::ZERO, true)
                } else {
                    (common(1, 8).build(), SubmitOptions::new())
                };
                let (a, x) = one_from_an_undriven_runtime(&pool, &opts);
                let a_tasks = a.metrics().num_alive_tasks();
                let out = b.block_on(async {
                    // Hands `x` over to a slot task on `a` (see above).
                    support::polled_until_handed_over(pool.wait(), &a, a_tasks).await;
                    let mut h = pool
                        .submit_with(async { 3u32 }, opts.clone().priority(10))
                        .await
                        .map_err(|e| e.kind())
                        .unwrap();
                    let handed = tokio::time::timeout(Duration::from_millis(200), &mut h)
                        .await
                        .is_err();
                    if end == "abort" {
                        x.abort();
                    } else {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), pool.cancel_all()).await;
                    }
                    let h = tokio::time::timeout(Duration::from_secs(2), h).await;
                    let waited = tokio::time::timeout(Duration::from_secs(2), pool.wait())
                        .await
                        .is_ok();
                    let y = pool
                        .submit_with(async { 2u32 }, opts)
                        .await
                        .map_err(|e| e.kind())
                        .unwrap();
                    let y = tokio::time::timeout(Duration::from_secs(2), y).await;
                    let x = tokio::time::timeout(Duration::from_secs(1), x).await;
                    (
                        handed,
                        h.map(|r| r.map_err(|e| reason(&e))),
                        waited,
                        x.map(|r| r.map_err(|e| reason(&e))).is_ok(),
                        y.map(|r| r.map_err(|e| reason(&e))),
                    )
                });
                drop(a);
                out
            });
            outs.push((what, end, out));
        }
    }
    let want: Vec<_> = outs
        .iter()
        .map(|(what, end, _)| {
            // A `cancel_all` covers h too (queued behind x).
            let h = if *end == "abort" {
                Ok(Ok(3))
            } else {
                Ok(Err(Some(CancelReason::CancelAll)))
            };
            (*what, *end, (true, h, true, true, Ok(Ok(2))))
        })
        .collect();
    assert_eq!(
        outs, want,
        "(case, end, (x handed over: h held back, h, wait() returned, x resolved, y)), \
         with `a` alive and not driven"
    );
}

/// A task of a current-thread runtime that is no longer driven, taken from the queue by a
/// slot of a driven runtime (a `wait()` polled there) and handed over to a slot of its own
/// runtime, took a start of the rate window (or its weight) there; when its runtime is
/// dropped, the task is cancelled (`RuntimeShutdown`) and the start (or weight) comes back:
/// a task of the live runtime that the window held back starts (in a window that never
/// reopens too, where a start kept would be kept for good). (In the two rate-window cases
/// the `wait()` hands nothing over: from `b`, a runtime whose timers the pool does not
/// know, it adds no slot task, and x stays queued with a slot reserved, so those cases
/// cover a queued task's runtime dropped; `tests/handed_jobs_review.rs` hands a task
/// holding a window's start over another way. Found by the review of finding 404.)
#[test]
fn a_start_or_weight_of_a_task_handed_to_a_runtime_dropped_undriven_comes_back() {
    let mut outs = Vec::new();
    for (what, per, weighted) in HELD {
        let out = on_thread_within(what, 20, move || {
            let b = multi_thread_of(1);
            let (pool, opts) = held_by_one(per, weighted);
            let (a, x) = one_from_an_undriven_runtime(&pool, &opts);
            let y = b.block_on(async {
                let _ = tokio::time::timeout(Duration::from_millis(50), pool.wait()).await;
                pool.submit_with(async { 2u32 }, opts)
                    .await
                    .map_err(|e| e.kind())
                    .unwrap()
            });
            std::thread::sleep(Duration::from_millis(50));
            let y_early = y.is_finished();
            drop(a);
            b.block_on(async {
                let x = tokio::time::timeout(Duration::from_secs(3), x).await;
                let y = tokio::time::timeout(Duration::from_secs(3), y).await;
                (
                    y_early,
                    x.map(|r| r.map_err(|e| reason(&e))),
                    y.map(|r| r.map_err(|e| reason(&e))),
                    format!("{}", pool.stats()),
                )
            })
        });
        outs.push((what, out));
    }
    let bad: Vec<_> = outs
        .iter()
        .filter(|(_, o)| {
            o.0 || o.1 != Ok(Err(Some(CancelReason::RuntimeShutdown))) || o.2 != Ok(Ok(2))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "(case, (y ended beside x, x, y, stats)): {bad:#?}"
    );
}

// ----- a timed wait moved where no timer can be made ---------------------------------------

/// A CommonAioPool of one slot and no queue, full: its slot held by a task of `home` (a
/// one-worker multi-thread runtime) until `gate` opens. Returns `(home, pool, gate, held)`.
fn full_pool() -> (
    tokio::runtime::Runtime,
    CommonAioPool,
    Gate,
    nb_aiopool::TaskHandle<()>,
) {
    let home = multi_thread_of(1);
    let pool = common(1, 0).build();
    let gate = Gate::new();
    let held = home.block_on(pool.submit(gate.wait())).unwrap();
    (home, pool, gate, held)
}

/// A current-thread runtime built without time (`enable_time`).
fn runtime_without_time() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// A `submit_with(.., timeout(300 ms))` that began waiting on a live multi-thread runtime
/// and is then awaited on a runtime without time keeps the first runtime's timer (which
/// fires undriven there) and times out, as it did with tokio's own timeout. 399's first
/// fix made the timer follow every runtime that polls the wait, and so panicked here ("on
/// a tokio runtime without time enabled") instead (a read-only review of the session's
/// diff).
#[test]
fn a_timed_submit_moved_to_a_runtime_without_time_keeps_its_first_runtimes_timer() {
    let out = on_thread_within("a timed submit moved", 20, || {
        let (home, pool, gate, held) = full_pool();
        let mut sub = Box::pin(pool.submit_with(
            async { 7u32 },
            SubmitOptions::new().timeout(Duration::from_millis(300)),
        ));
        home.block_on(async {
            assert!(
                tokio::time::timeout(Duration::from_millis(50), &mut sub)
                    .await
                    .is_err(),
                "the submit found room in a full pool"
            );
        });
        let bare = runtime_without_time();
        let begun = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bare.block_on(sub)));
        gate.open();
        let _ = home.block_on(held);
        match r {
            Ok(Err(e)) => Ok((e.kind(), begun.elapsed() < Duration::from_secs(5))),
            Ok(Ok(_)) => Err("admitted into a full pool".to_string()),
            Err(p) => Err(format!("panicked: {}", support::panic_message(&*p))),
        }
    });
    assert_eq!(out, Ok((SubmitErrorKind::TimedOut, true)));
}

/// The same for a map stream's input given a timeout (`with_options`): the stream, first
/// polled on a live multi-thread runtime and then on a runtime without time, ends with
/// `refused() == Some(TimedOut)`. With 399's first fix its `next()` panicked, naming
/// `submit_with` to a user who called no submit, and the next `next()` panicked from
/// inside the stream's state machine ("`async fn` resumed after panicking").
#[test]
fn a_timed_stream_input_moved_to_a_runtime_without_time_times_out() {
    let out = on_thread_within("a timed stream input moved", 20, || {
        let (home, pool, gate, held) = full_pool();
        let mut s = pool
            .map_unordered(futures_util::stream::iter(0..2u32), |i| async move { i })
            .with_options(|_| SubmitOptions::new().timeout(Duration::from_millis(300)));
        home.block_on(async {
            use futures_util::StreamExt;
            assert!(
                tokio::time::timeout(Duration::from_millis(50), s.next())
                    .await
                    .is_err(),
                "the stream's input found room in a full pool"
            );
        });
        let bare = runtime_without_time();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            use futures_util::StreamExt;
            bare.block_on(async {
                let mut n = 0;
                while s.next().await.is_some() {
                    n += 1;
                }
                n
            })
        }));
        gate.open();
        let _ = home.block_on(held);
        match r {
            Ok(n) => Ok((n, s.refused())),
            Err(p) => Err(format!("panicked: {}", support::panic_message(&*p))),
        }
    });
    assert_eq!(out, Ok((0, Some(SubmitErrorKind::TimedOut))));
}

/// A timed submit that began waiting on a current-thread runtime, which is then dropped,
/// and is polled outside any runtime (another executor on a plain thread): no timer can
/// work there, and the submit panics with this crate's message, not from inside tokio ("A
/// Tokio 1.x context was found, but it is being shutdown", which 399 was about; the
/// review of the session's diff found this path left).
#[test]
fn a_timed_submit_polled_outside_any_runtime_after_its_runtime_ended_panics_with_the_crates_message(
) {
    let out = on_thread_within("a timed submit outside", 20, || {
        let (home, pool, gate, held) = full_pool();
        let a = current_thread();
        let mut sub = Box::pin(pool.submit_with(
            async { 7u32 },
            SubmitOptions::new().timeout(Duration::from_secs(10)),
        ));
        a.block_on(async {
            assert!(
                tokio::time::timeout(Duration::from_millis(20), &mut sub)
                    .await
                    .is_err(),
                "the submit found room in a full pool"
            );
        });
        drop(a);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            support::plain_block_on(std::future::poll_fn(|cx| {
                std::task::Poll::Ready(sub.as_mut().poll(cx).is_ready())
            }))
        }));
        gate.open();
        let _ = home.block_on(held);
        match r {
            Ok(ready) => Err(format!("no panic (ready: {ready})")),
            Err(p) => Ok(support::panic_message(&*p)),
        }
    });
    let said = out.expect("a panic");
    assert!(
        said.starts_with("nb_aiopool:") && said.contains("outside a tokio runtime"),
        "the panic said `{said}`, not this crate's message for a timer outside a runtime"
    );
}
