//! `blocking_submit_with`: a sync producer (a plain thread) submits with per-task options,
//! blocking while the pool is full, in line with its priority, for at most its timeout;
//! then the API at its edges (RELIABILITY.md, 381; a review of 8bcd5dc): timeouts,
//! spurious unparks, mixed priorities and timeouts among blocked threads, the pool closed
//! or cancelled while a thread is blocked, a stranded pool, a SmartAioPool's exit, and
//! the caller's location in the crate's panics.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_aiopool::{
    CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitErrorKind, SubmitOptions, TaskHandle,
};
use support::{
    flow_pools, multi_thread_of, on_thread_within, within, FlowLimits, Gate, Gauge, Pool,
};

impl Pool {
    /// The pool's `blocking_submit_with` of `make()` (for SmartAioPool, `make` as the
    /// recipe); the refusal's kind if refused.
    fn blocking_submit_with<T, F, M>(
        &self,
        make: M,
        opts: SubmitOptions,
    ) -> Result<TaskHandle<T>, SubmitErrorKind>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
        M: Fn() -> F + Send + Sync + 'static,
    {
        match self {
            Pool::Common(p) => p.blocking_submit_with(make(), opts).map_err(|e| e.kind()),
            Pool::NoQueue(p) => p.blocking_submit_with(make(), opts).map_err(|e| e.kind()),
            Pool::Smart(p) => p.blocking_submit_with(make, opts).map_err(|e| e.kind()),
        }
    }
}

/// A sync producer keys its tasks by host (`max_per_key(1)`, 4 hosts) and submits 40 of
/// them from a plain thread into pools of 4 slots and 4 queue places, so that it blocks
/// for room again and again. The user expects every task to run, never two of one host
/// at once (`max_per_key`'s docs), and the producer to return once all are queued.
#[test]
fn a_sync_producer_keys_its_tasks_and_blocks_for_room() {
    let rt = multi_thread_of(2);
    let pools = rt.block_on(async { flow_pools(4, 4, 8, FlowLimits::keys(1)) });
    for pool in pools {
        let name = pool.name();
        // Makes the pool's home `rt`, where a plain thread's tasks run.
        rt.block_on(pool.wait_within());
        let gauges: Arc<Vec<Gauge>> = Arc::new((0..4).map(|_| Gauge::default()).collect());
        let handles = {
            let (pool, gauges) = (pool.clone(), gauges.clone());
            on_thread_within(&format!("{name}: the producer"), 30, move || {
                (0..40)
                    .map(|i| {
                        let gauges = gauges.clone();
                        let opts = SubmitOptions::new().key(format!("host-{}", i % 4));
                        let make = move || {
                            let gauges = gauges.clone();
                            async move {
                                let _in = gauges[i % 4].enter();
                                tokio::time::sleep(Duration::from_millis(2)).await;
                                i
                            }
                        };
                        pool.blocking_submit_with(make, opts)
                            .unwrap_or_else(|kind| panic!("{name}: submit {i} refused: {kind:?}"))
                    })
                    .collect::<Vec<_>>()
            })
        };
        let sum: usize = rt.block_on(async {
            let mut sum = 0;
            for h in handles {
                sum += within("a task", h).await.unwrap();
            }
            sum
        });
        assert_eq!(
            sum,
            (0..40).sum::<usize>(),
            "{name}: a task's result is missing"
        );
        for (host, g) in gauges.iter().enumerate() {
            assert_eq!(
                g.started(),
                10,
                "{name}: host-{host}'s tasks did not all run"
            );
            assert_eq!(
                g.max(),
                1,
                "{name}: host-{host} ran {} tasks at once",
                g.max()
            );
        }
        assert_eq!(pool.stats().completed, 40, "{name}: {:?}", pool.stats());
    }
}

/// Two plain threads block for room in a full pool (one slot, no queue), one with
/// priority 0 and, after it, one with priority 5. The user expects the room freed next to
/// go to the higher priority (`SubmitOptions::priority`: "a higher one gets the next room
/// first"), as it does for `submit_with(..).await`.
#[test]
fn blocked_submitters_get_room_by_priority() {
    let rt = multi_thread_of(2);
    for (pool, gate, holder) in full_pools(&rt) {
        let name = pool.name();
        let started = Arc::new(Mutex::new(Vec::new()));
        let submitter = |label: &'static str, priority: i32| {
            let (pool, started) = (pool.clone(), started.clone());
            std::thread::spawn(move || {
                let opts = SubmitOptions::new().priority(priority);
                let make = move || {
                    let started = started.clone();
                    async move { started.lock().unwrap().push(label) }
                };
                pool.blocking_submit_with(make, opts)
                    .unwrap_or_else(|kind| panic!("{label} refused: {kind:?}"))
            })
        };
        let low = submitter("low", 0);
        // Both wait before the room frees (the order they came in does not matter to
        // the answer: the higher priority goes first either way).
        let_them_block();
        let high = submitter("high", 5);
        let_them_block();
        assert!(
            started.lock().unwrap().is_empty(),
            "{name}: a blocked submit ran while the pool was full"
        );
        gate.open();
        let (low, high) = (low.join().unwrap(), high.join().unwrap());
        rt.block_on(async {
            for h in [holder, low, high] {
                within("a task", h).await.unwrap();
            }
        });
        assert_eq!(
            *started.lock().unwrap(),
            ["high", "low"],
            "{name}: the room went to the lower priority first"
        );
    }
}

/// A plain thread's `blocking_submit_with` with a 50 ms timeout into a full pool. The user
/// expects (`SubmitOptions::timeout`, `blocking_submit_with`'s docs) `TimedOut` after
/// about that long, the task handed back (it can still be run), and the pool's room
/// untouched: once the pool frees up, a submit is admitted at once.
#[test]
fn a_blocked_submit_times_out_and_hands_its_task_back() {
    let rt = multi_thread_of(1);
    let pool = rt.block_on(async { CommonAioPool::new(1, 0) });
    let gate = Gate::new();
    let holder = rt.block_on(pool.submit(gate.wait())).unwrap();
    let (kind, elapsed, fut) = {
        let pool = pool.clone();
        on_thread_within("the timed submit", 10, move || {
            let t0 = Instant::now();
            let opts = SubmitOptions::new().timeout(Duration::from_millis(50));
            let err = pool
                .blocking_submit_with(async { 7 }, opts)
                .expect_err("a full pool admitted a submit");
            (err.kind(), t0.elapsed(), err.into_inner())
        })
    };
    assert_eq!(kind, SubmitErrorKind::TimedOut);
    assert!(
        elapsed >= Duration::from_millis(50),
        "gave up after {elapsed:?}, before its 50 ms timeout"
    );
    assert_eq!(
        rt.block_on(fut),
        7,
        "the task handed back is not the one submitted"
    );
    gate.open();
    rt.block_on(within("the holder", holder)).unwrap();
    rt.block_on(pool.wait());
    let s = pool.stats();
    assert_eq!(
        (s.submitted, s.completed, s.queued, s.running),
        (1, 1, 0, 0),
        "{s:?}"
    );
    assert!(
        pool.try_submit(async {}).is_ok(),
        "the timed-out submit kept a place: {:?}",
        pool.stats()
    );
}

/// A weight above the pool's `weight_capacity` can never fit: the user expects
/// `TooHeavy` at once, not a wait (as `submit_with`), even while the pool is full.
#[test]
fn a_weight_above_the_capacity_is_refused_at_once() {
    let rt = multi_thread_of(1);
    let pool = rt.block_on(async {
        CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(0)
            .weight_capacity(2)
            .build()
    });
    let gate = Gate::new();
    let holder = rt.block_on(pool.submit(gate.wait())).unwrap();
    let kind = {
        let pool = pool.clone();
        on_thread_within("a too heavy submit", 10, move || {
            pool.blocking_submit_with(async {}, SubmitOptions::new().weight(3))
                .expect_err("a task heavier than the capacity was admitted")
                .kind()
        })
    };
    assert_eq!(kind, SubmitErrorKind::TooHeavy);
    gate.open();
    rt.block_on(within("the holder", holder)).unwrap();
}

/// Called from async code, where blocking could deadlock the tasks it waits for, it
/// panics with a message that names the async call to use instead, as `blocking_submit`
/// does.
#[test]
fn from_async_code_it_panics_and_names_submit_with() {
    let rt = support::current_thread();
    let pool = CommonAioPool::new(1, 1);
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let _ = pool.blocking_submit_with(async {}, SubmitOptions::new());
        })
    }))
    .expect_err("blocking_submit_with from async code did not panic");
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        text.contains("`blocking_submit_with`") && text.contains("`submit_with(..).await`"),
        "the panic does not say what to call instead: {text:?}"
    );
}

/// The three pools with one slot and no queue place, each made full by a task that waits
/// for the returned gate (started on `rt`, their home).
fn full_pools(rt: &tokio::runtime::Runtime) -> Vec<(Pool, Gate, TaskHandle<()>)> {
    let pools = rt.block_on(async {
        vec![
            Pool::Common(CommonAioPool::new(1, 0)),
            Pool::NoQueue(NoQueueAioPool::new(1)),
            Pool::Smart(
                SmartAioPool::builder()
                    .max_concurrency(1)
                    .max_queue_size(0)
                    .auto_shutdown(false)
                    .build(),
            ),
        ]
    });
    pools
        .into_iter()
        .map(|pool| {
            let gate = Gate::new();
            let holder = {
                let gate = gate.clone();
                rt.block_on(pool.submit_with(SubmitOptions::new(), move || gate.wait()))
            };
            (pool, gate, holder)
        })
        .collect()
}

/// Gives threads just started time to reach their park in a full pool (there is no
/// public count of waiting submitters): ample on a loaded machine, where a thread takes
/// well under a millisecond to get there. The priority tests need it (both submitters
/// in line before the room frees); the others only exercise the blocked path with it.
fn let_them_block() {
    std::thread::sleep(Duration::from_millis(150));
}

/// Pinned: `timeout(Duration::ZERO)` into a full pool: `TimedOut` at once, the task
/// handed back, as `submit_with(..).await` with a zero timeout; into a pool with room,
/// accepted (the timeout "bounds the wait for admission only").
#[test]
fn a_zero_timeout_times_out_at_once_when_full_and_is_accepted_with_room() {
    let rt = multi_thread_of(2);
    for (pool, gate, holder) in full_pools(&rt) {
        let name = pool.name();
        let (kind, took) = {
            let pool = pool.clone();
            on_thread_within(&format!("{name}: a zero timeout"), 10, move || {
                let t0 = Instant::now();
                let r = pool.blocking_submit_with(
                    || async { 1 },
                    SubmitOptions::new().timeout(Duration::ZERO),
                );
                (r.err(), t0.elapsed())
            })
        };
        assert_eq!(
            kind,
            Some(SubmitErrorKind::TimedOut),
            "{name}: a zero timeout into a full pool was not TimedOut"
        );
        assert!(
            took < Duration::from_secs(1),
            "{name}: a zero timeout waited {took:?}"
        );
        let asy = rt.block_on(
            pool.try_submit_with(SubmitOptions::new().timeout(Duration::ZERO), || async { 1 }),
        );
        assert_eq!(
            asy.err(),
            Some(SubmitErrorKind::TimedOut),
            "{name}: submit_with(..).await disagrees"
        );
        gate.open();
        rt.block_on(within("the holder", holder)).unwrap();
        rt.block_on(pool.wait_within());
        let h = {
            let pool = pool.clone();
            on_thread_within(
                &format!("{name}: a zero timeout with room"),
                10,
                move || {
                    pool.blocking_submit_with(
                        || async { 2 },
                        SubmitOptions::new().timeout(Duration::ZERO),
                    )
                },
            )
        }
        .unwrap_or_else(|k| {
            panic!("{name}: a zero-timeout submit into an idle pool was refused: {k:?}")
        });
        assert_eq!(rt.block_on(within("the task", h)).unwrap(), 2);
    }
}

/// Pinned: `timeout(Duration::MAX)` (and a timeout just short of overflowing the clock)
/// must not panic on overflow: the thread waits as long as it takes and is admitted once
/// the room frees.
#[test]
fn a_timeout_of_duration_max_waits_and_is_admitted() {
    let rt = multi_thread_of(2);
    for limit in [Duration::MAX, Duration::from_secs(u64::MAX / 4)] {
        for (pool, gate, holder) in full_pools(&rt) {
            let name = pool.name();
            let t = {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    pool.blocking_submit_with(|| async { 3 }, SubmitOptions::new().timeout(limit))
                })
            };
            let_them_block();
            assert!(
                !t.is_finished(),
                "{name}: a {limit:?} timeout returned while the pool was full"
            );
            gate.open();
            let h = on_thread_within("the join", 10, move || t.join())
                .unwrap_or_else(|_| {
                    panic!("{name}: blocking_submit_with with a {limit:?} timeout panicked")
                })
                .unwrap_or_else(|k| panic!("{name}: a {limit:?} timeout was refused: {k:?}"));
            assert_eq!(rt.block_on(within("the task", h)).unwrap(), 3);
            rt.block_on(within("the holder", holder)).unwrap();
        }
    }
}

/// Pinned: the blocked thread's own `unpark` from elsewhere (spurious unparks) must not
/// end its wait early: with a 300 ms timeout it returns `TimedOut` no sooner than that,
/// and without one it stays blocked until the room frees.
#[test]
fn spurious_unparks_do_not_end_the_wait() {
    let rt = multi_thread_of(2);
    for (pool, gate, holder) in full_pools(&rt) {
        let name = pool.name();
        let stop = Arc::new(AtomicBool::new(false));
        let timed = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let r = pool.blocking_submit_with(
                    || async {},
                    SubmitOptions::new().timeout(Duration::from_millis(300)),
                );
                (r.err(), t0.elapsed())
            })
        };
        let untimed = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.blocking_submit_with(|| async { 5 }, SubmitOptions::new())
            })
        };
        let unparker = {
            let (stop, a, b) = (
                stop.clone(),
                timed.thread().clone(),
                untimed.thread().clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    a.unpark();
                    b.unpark();
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        let (kind, took) = on_thread_within("the timed submit", 10, move || timed.join().unwrap());
        assert_eq!(kind, Some(SubmitErrorKind::TimedOut), "{name}");
        assert!(
            took >= Duration::from_millis(300),
            "{name}: unparks ended a 300 ms wait after {took:?}"
        );
        assert!(
            !untimed.is_finished(),
            "{name}: an unpark ended an untimed blocked submit"
        );
        stop.store(true, Ordering::SeqCst);
        unparker.join().unwrap();
        gate.open();
        let h = on_thread_within("the untimed submit", 10, move || untimed.join().unwrap())
            .unwrap_or_else(|k| panic!("{name}: the untimed submit was refused: {k:?}"));
        assert_eq!(rt.block_on(within("the task", h)).unwrap(), 5);
        rt.block_on(within("the holder", holder)).unwrap();
    }
}

/// Pinned: three blocked threads: "high" (priority 10, timeout 80 ms), "mid" (priority 5,
/// no timeout), "low" (priority 0, no timeout). "high" times out; then the room frees
/// one place at a time. The user expects the timed-out waiter to keep no place nor hold
/// up the line: "mid" gets the first room, "low" the next, and the stats to agree with
/// the handles (`SubmitOptions::priority`: "a higher one gets the next room first").
#[test]
fn a_timed_out_high_priority_waiter_keeps_no_place_in_line() {
    let rt = multi_thread_of(2);
    for (pool, gate, holder) in full_pools(&rt) {
        let name = pool.name();
        let order = Arc::new(Mutex::new(Vec::new()));
        let spawn = |label: &'static str, opts: SubmitOptions| {
            let (pool, order) = (pool.clone(), order.clone());
            std::thread::spawn(move || {
                let make = move || {
                    let order = order.clone();
                    async move {
                        order.lock().unwrap().push(label);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                };
                pool.blocking_submit_with(make, opts)
            })
        };
        let low = spawn("low", SubmitOptions::new());
        let_them_block();
        let mid = spawn("mid", SubmitOptions::new().priority(5));
        let high = spawn(
            "high",
            SubmitOptions::new()
                .priority(10)
                .timeout(Duration::from_millis(80)),
        );
        let high = on_thread_within("high", 10, move || high.join().unwrap());
        assert_eq!(
            high.err(),
            Some(SubmitErrorKind::TimedOut),
            "{name}: the timed waiter did not time out"
        );
        assert!(
            order.lock().unwrap().is_empty(),
            "{name}: a task ran while the pool was full"
        );
        gate.open();
        let (mid, low) = on_thread_within("mid and low", 10, move || {
            (mid.join().unwrap(), low.join().unwrap())
        });
        let (mid, low) = (mid.unwrap(), low.unwrap());
        rt.block_on(async {
            within("holder", holder).await.unwrap();
            within("mid", mid).await.unwrap();
            within("low", low).await.unwrap();
        });
        assert_eq!(
            *order.lock().unwrap(),
            ["mid", "low"],
            "{name}: the room went out of priority order"
        );
        rt.block_on(pool.wait_within());
        let s = pool.stats();
        assert_eq!(
            (s.submitted, s.completed, s.queued, s.running),
            (3, 3, 0, 0),
            "{name}: the stats do not agree with the three handles: {s:?}"
        );
    }
}

/// Pinned: the pool shut down while two threads are blocked in it (one with a timeout):
/// both get `Closed` promptly, not `TimedOut` nor a hang, as `blocking_submit`.
#[test]
fn a_shutdown_while_blocked_refuses_with_closed() {
    let rt = multi_thread_of(2);
    for (pool, gate, holder) in full_pools(&rt) {
        let name = pool.name();
        let a = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.blocking_submit_with(|| async {}, SubmitOptions::new().priority(3))
            })
        };
        let b = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.blocking_submit_with(
                    || async {},
                    SubmitOptions::new().timeout(Duration::from_secs(30)),
                )
            })
        };
        let_them_block();
        let report = {
            let pool = pool.clone();
            rt.spawn(async move {
                pool.shutdown_timeout(Duration::from_secs(5)).await;
            })
        };
        let (a, b) = on_thread_within(
            &format!("{name}: the blocked submits after shutdown"),
            10,
            move || (a.join().unwrap(), b.join().unwrap()),
        );
        assert_eq!(
            a.err(),
            Some(SubmitErrorKind::Closed),
            "{name}: the untimed blocked submit"
        );
        assert_eq!(
            b.err(),
            Some(SubmitErrorKind::Closed),
            "{name}: the timed blocked submit"
        );
        gate.open();
        rt.block_on(within("the shutdown", report)).unwrap();
        let _ = rt.block_on(within("the holder", holder));
    }
}

/// Pinned: `cancel_all` while a thread is blocked with a timeout: the holder is
/// cancelled, which frees the room, and the blocked thread is admitted and its task runs.
#[test]
fn cancel_all_frees_room_for_a_blocked_thread() {
    let rt = multi_thread_of(2);
    for (pool, _gate, holder) in full_pools(&rt) {
        let name = pool.name();
        let t = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.blocking_submit_with(
                    || async { 9 },
                    SubmitOptions::new()
                        .timeout(Duration::from_secs(30))
                        .key("k"),
                )
            })
        };
        let_them_block();
        rt.block_on(within("cancel_all", pool.cancel_all_now()));
        let h = on_thread_within("the blocked submit", 10, move || t.join().unwrap())
            .unwrap_or_else(|k| {
                panic!("{name}: the blocked submit was refused after cancel_all: {k:?}")
            });
        assert_eq!(rt.block_on(within("the task", h)).unwrap(), 9, "{name}");
        assert!(
            rt.block_on(within("the holder", holder)).is_err(),
            "{name}: the holder was not cancelled"
        );
    }
}

/// Pinned: a SmartAioPool full of a task whose runtime ends while a plain thread is
/// blocked in `blocking_submit_with` (with a long timeout): the pool is stranded, no room
/// can come, and the user expects `NoRuntime` (as `blocking_submit`), not a wait until
/// the timeout.
#[test]
fn the_runtime_ending_while_blocked_refuses_with_no_runtime() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (pool, rt, _h) = support::full_smart_pool_on_a_runtime(&runs);
    let t = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let r = pool
                .blocking_submit_with(
                    || async {},
                    SubmitOptions::new()
                        .timeout(Duration::from_secs(60))
                        .priority(2),
                )
                .map_err(|e| e.kind());
            (r.err(), t0.elapsed())
        })
    };
    let_them_block();
    drop(rt);
    let (kind, took) = on_thread_within("the blocked submit", 10, move || t.join().unwrap());
    assert_eq!(
        kind,
        Some(SubmitErrorKind::NoRuntime),
        "the blocked submit into a stranded pool"
    );
    assert!(took < Duration::from_secs(10), "it waited {took:?}");
}

/// Pinned: from a `spawn_blocking` thread, with keys and weights: `max_per_key(1)` and
/// `weight_capacity(2)`: never two of a key at once nor more weight than 2, every task
/// runs; `TooHeavy` at once for weight 3.
#[test]
fn from_spawn_blocking_with_keys_and_weights() {
    let rt = multi_thread_of(2);
    let pool = rt.block_on(async {
        CommonAioPool::builder()
            .max_concurrency(3)
            .max_queue_size(1)
            .max_per_key(1)
            .weight_capacity(2)
            .build()
    });
    let per_key: Arc<Vec<support::Gauge>> =
        Arc::new((0..2).map(|_| support::Gauge::default()).collect());
    let weight = Arc::new(AtomicUsize::new(0));
    let max_weight = Arc::new(AtomicUsize::new(0));
    let handles = {
        let (pool, per_key, weight, max_weight) = (
            pool.clone(),
            per_key.clone(),
            weight.clone(),
            max_weight.clone(),
        );
        rt.block_on(within(
            "the spawn_blocking producer",
            rt.spawn_blocking(move || {
                let heavy = pool.blocking_submit_with(async {}, SubmitOptions::new().weight(3));
                assert_eq!(
                    heavy.err().map(|e| e.kind()),
                    Some(SubmitErrorKind::TooHeavy)
                );
                (0..20usize)
                    .map(|i| {
                        let w = 1 + i % 2;
                        let (per_key, weight, max_weight) =
                            (per_key.clone(), weight.clone(), max_weight.clone());
                        let opts = SubmitOptions::new()
                            .key(format!("k{}", i % 2))
                            .weight(w as u32)
                            .priority((i % 3) as i32);
                        pool.blocking_submit_with(
                            async move {
                                let _in = per_key[i % 2].enter();
                                let now = weight.fetch_add(w, Ordering::SeqCst) + w;
                                max_weight.fetch_max(now, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(2)).await;
                                weight.fetch_sub(w, Ordering::SeqCst);
                                i
                            },
                            opts,
                        )
                        .unwrap_or_else(|e| panic!("submit {i} refused: {:?}", e.kind()))
                    })
                    .collect::<Vec<_>>()
            }),
        ))
        .unwrap()
    };
    let sum: usize = rt.block_on(async {
        let mut s = 0;
        for h in handles {
            s += within("a task", h).await.unwrap();
        }
        s
    });
    assert_eq!(sum, (0..20).sum::<usize>(), "a task's result is missing");
    for (k, g) in per_key.iter().enumerate() {
        assert_eq!(g.max(), 1, "key k{k} ran {} at once", g.max());
    }
    assert!(
        max_weight.load(Ordering::SeqCst) <= 2,
        "more weight than the capacity ran at once"
    );
    rt.block_on(pool.wait());
    let s = pool.stats();
    assert_eq!((s.submitted, s.completed), (20, 20), "{s:?}");
}

/// Finding: a rate-limited pool's `blocking_submit_with` (and `blocking_submit`) from a
/// plain thread that entered a runtime without timers: the crate panics (its
/// "nb_aiopool: ... time driver" message), and the methods being `#[track_caller]`, the
/// user expects the panic to name their own line, as `blocking_submit` did before 8bcd5dc
/// and the async submits do. What happened: both panics named the crate's own line,
/// "the panic names the crate's own line, not the caller's: src/pool/core.rs:388 (all:
/// ["src/pool/core.rs:388", "src/pool/core.rs:388"])": the new `blocking_submit_ready`
/// that both now call was not `#[track_caller]`. Fixed by marking it so.
#[test]
fn a_panic_in_a_blocking_submit_names_the_callers_line() {
    let home = multi_thread_of(1);
    let pool = home.block_on(async {
        CommonAioPool::builder()
            .max_concurrency(1)
            .rate_limit(100, Duration::from_secs(1))
            .build()
    });
    home.block_on(pool.wait());
    let where_ = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let where_ = where_.clone();
        std::panic::set_hook(Box::new(move |info| {
            let msg = support::panic_message(info.payload());
            if let (Some(l), true) = (info.location(), msg.contains("nb_aiopool")) {
                where_
                    .lock()
                    .unwrap()
                    .push(format!("{}:{}", l.file(), l.line()));
            }
        }));
    }
    for with in [true, false] {
        let pool = pool.clone();
        let r = on_thread_within("the blocking submit", 10, move || {
            let no_timers = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let _g = no_timers.enter();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if with {
                    let _ = pool.blocking_submit_with(async {}, SubmitOptions::new());
                } else {
                    let _ = pool.blocking_submit(async {});
                }
            }))
            .is_err()
        });
        assert!(r, "no panic on a runtime without timers");
    }
    let _ = std::panic::take_hook();
    let seen = where_.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "the crate's panics seen: {seen:?}");
    for l in &seen {
        assert!(
            l.contains("blocking_submit_with.rs"),
            "the panic names the crate's own line, not the caller's: {l} (all: {seen:?})"
        );
    }
}

/// Child process scenarios (see `support::run_child`).
#[test]
#[ignore]
fn child() {
    let (scenario, dir) = support::child_scenario();
    match scenario.as_str() {
        "blocked-at-exit" => blocked_at_exit(&dir),
        other => panic!("unknown scenario {other}"),
    }
}

/// An `auto_shutdown` SmartAioPool of one slot, full with a task of 300 ms; two plain
/// threads blocked in `blocking_submit_with` (priority 5 with a 10 s timeout, priority 0
/// with none); then `process::exit` from the main thread.
fn blocked_at_exit(dir: &std::path::Path) {
    use support::append;
    let rt = multi_thread_of(1);
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(0)
        .build();
    let d = dir.to_path_buf();
    rt.block_on(pool.submit(move || {
        let d = d.clone();
        async move {
            append(&d.join("holder"), "start");
            tokio::time::sleep(Duration::from_millis(300)).await;
            append(&d.join("holder"), "end");
        }
    }))
    .unwrap()
    .detach();
    for (label, opts) in [
        (
            "high",
            SubmitOptions::new()
                .priority(5)
                .timeout(Duration::from_secs(10)),
        ),
        ("low", SubmitOptions::new()),
    ] {
        let (pool, d) = (pool.clone(), dir.to_path_buf());
        std::thread::spawn(move || {
            let d2 = d.clone();
            let recipe = move || {
                let d2 = d2.clone();
                async move { append(&d2.join(label), "ran") }
            };
            match pool.blocking_submit_with(recipe, opts) {
                Ok(h) => {
                    append(&d.join(label), "accepted");
                    h.detach();
                }
                Err(e) => append(&d.join(label), &format!("refused {:?}", e.kind())),
            }
        });
    }
    std::thread::sleep(Duration::from_millis(100));
    support::exit_from_main(dir, rt);
}

/// Pinned: a SmartAioPool's exit while two plain threads are blocked in
/// `blocking_submit_with`: the process exits (no hang), the running task completes
/// ("tasks complete before process exit"), and each blocked submit is either refused or
/// accepted and run: an accepted task is not lost at the exit (a thread refused at the
/// very end may not get to say so before the process ends).
/// (Seen: `high` refused with `Closed`, `low` accepted and run, as the crate docs allow:
/// from the exit's take-over on, room goes to whichever waiting submitter takes it first,
/// whatever its priority, and the pool is closed once the exit's run is over.)
#[test]
fn smart_exit_while_threads_are_blocked_in_it() {
    let c = support::run_child("blocked-at-exit", 20);
    let holder = support::lines(&c.dir.join("holder"));
    let high = support::lines(&c.dir.join("high"));
    let low = support::lines(&c.dir.join("low"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(
        c.code,
        Some(0),
        "the exit hung or failed; holder {holder:?} high {high:?} low {low:?}; stderr: {}",
        c.stderr
    );
    // Its run may be interrupted by the exit's take-over and run again (a re-runnable
    // recipe, `rerun_interrupted` by default): it must end once.
    assert_eq!(
        holder.last().map(String::as_str),
        Some("end"),
        "the running task did not complete before the exit: {holder:?}"
    );
    assert_eq!(
        holder.iter().filter(|l| *l == "end").count(),
        1,
        "the running task completed twice: {holder:?}"
    );
    eprintln!("holder {holder:?} high {high:?} low {low:?}");
    for (label, l) in [("high", &high), ("low", &low)] {
        let accepted = l.iter().any(|x| x == "accepted");
        let ran = l.iter().any(|x| x == "ran");
        let refused = l.iter().any(|x| x.starts_with("refused"));
        // Nothing written: the thread, refused as the exit closed the pool, had not
        // written it down when the process ended (the exit waits for the pools' tasks,
        // not for plain threads).
        assert!(
            l.is_empty() || ((!accepted || ran) && ran != refused),
            "{label}: a blocked submit's task was lost at the exit: {l:?}; stderr: {}",
            c.stderr
        );
    }
}

/// Pinned: blocked threads and async `submit_with(..).await` share one line: an async
/// submitter (priority 0, first in line) and a blocked thread (priority 5, after it),
/// then the reverse priorities; the room freed goes to the higher priority whichever
/// way it waits ("It waits for room in line with the future's priority (as
/// `submit_with` does)").
#[test]
fn blocked_threads_and_async_submitters_share_one_line_by_priority() {
    let rt = multi_thread_of(2);
    for async_priority in [0, 10] {
        for (pool, gate, holder) in full_pools(&rt) {
            let name = pool.name();
            let order = Arc::new(Mutex::new(Vec::new()));
            let make = |label: &'static str| {
                let order = order.clone();
                move || {
                    let order = order.clone();
                    async move { order.lock().unwrap().push(label) }
                }
            };
            let asy = {
                let (pool, make) = (pool.clone(), make("async"));
                rt.spawn(async move {
                    pool.try_submit_with(SubmitOptions::new().priority(async_priority), make)
                        .await
                })
            };
            let_them_block();
            let blk = {
                let (pool, make) = (pool.clone(), make("blocking"));
                std::thread::spawn(move || {
                    pool.blocking_submit_with(make, SubmitOptions::new().priority(5))
                })
            };
            let_them_block();
            gate.open();
            let b = on_thread_within("the blocked submit", 10, move || blk.join().unwrap())
                .unwrap_or_else(|k| panic!("{name}: the blocked submit was refused: {k:?}"));
            rt.block_on(async {
                let a = within("the async submit", asy).await.unwrap().unwrap();
                within("holder", holder).await.unwrap();
                within("a", a).await.unwrap();
                within("b", b).await.unwrap();
            });
            let want = if async_priority > 5 {
                ["async", "blocking"]
            } else {
                ["blocking", "async"]
            };
            assert_eq!(
                *order.lock().unwrap(),
                want,
                "{name}: the room did not go to the higher priority (async at {async_priority}, blocked thread at 5)"
            );
        }
    }
}
