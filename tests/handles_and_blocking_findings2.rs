//! Regression tests of a review of the fixes of findings 215–218 (2fa952f; RELIABILITY.md,
//! findings 225–227): `blocking_wait`'s runtime of its own for a stranded SmartAioPool,
//! and the waking of waiting submitters when a pool becomes stranded; each failed before
//! its fix. The `probe_*` tests pin cases the review found sound.

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nb_aiopool::{SmartAioPool, SubmitErrorKind};
use support::*;

/// Finding 225: the runtime `blocking_wait` makes for a stranded pool ran other queued
/// re-runs too, and was then dropped: tokio's drop of a runtime waits for every blocking
/// task spawned on it, so a re-run of *another* task that had started a `spawn_blocking`
/// (here one that waits for something the caller does after its wait returns) held the
/// `blocking_wait` after its own task had ended, for as long as that closure ran (for
/// ever, in this test's shape: a deadlock).
#[test]
fn blocking_waits_own_runtime_does_not_wait_for_another_tasks_blocking_work() {
    let pool = smart_local(2);
    let runs_a = Arc::new(AtomicUsize::new(0));
    let runs_b = Arc::new(AtomicUsize::new(0));
    let b_blocking = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(AtomicBool::new(false));
    let rt = multi_thread_of(1);
    let (ra, bb) = (runs_a.clone(), b_blocking.clone());
    let a = rt
        .block_on(pool.submit(move || {
            let first = ra.fetch_add(1, Ordering::SeqCst) == 0;
            let bb = bb.clone();
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                // Ends once B's blocking closure runs.
                while bb.load(Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                1u32
            }
        }))
        .unwrap();
    let (rb, bb, rel) = (runs_b.clone(), b_blocking.clone(), released.clone());
    let b = rt
        .block_on(pool.submit(move || {
            let first = rb.fetch_add(1, Ordering::SeqCst) == 0;
            let (bb, rel) = (bb.clone(), rel.clone());
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                tokio::task::spawn_blocking(move || {
                    bb.fetch_add(1, Ordering::SeqCst);
                    // Released by the test once `a`'s wait has returned (30 s at most).
                    let end = Instant::now() + Duration::from_secs(30);
                    while !rel.load(Ordering::SeqCst) && Instant::now() < end {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
                .await
                .unwrap();
                2u32
            }
        }))
        .unwrap();
    until("both first runs", || {
        runs_a.load(Ordering::SeqCst) == 1 && runs_b.load(Ordering::SeqCst) == 1
    });
    drop(rt); // both cut off: the pool is stranded
    let got = on_thread_within("a's blocking_wait", 5, move || a.blocking_wait());
    released.store(true, Ordering::SeqCst);
    assert_eq!(got.unwrap(), 1);
    // B was cut off with that runtime and queued again: it still runs, and returns.
    let got = on_thread_within("b's blocking_wait", 10, move || b.blocking_wait());
    assert_eq!(got.unwrap(), 2);
}

/// Finding 226: finding 216's case for an async submit polled outside any tokio runtime
/// (`futures::executor::block_on`, here the helper `plain_block_on`): it waited for room
/// while the pool's runtime ran its task; that runtime's end left the pool stranded, full
/// of the re-run, and the submit, woken by 216's fix, only waited again, for ever. The
/// same submit made once the pool is stranded is refused with `NoRuntime` at once (the
/// crate docs' "Which runtime"), and so is a `blocking_submit` waiting at that moment.
#[test]
fn an_async_submit_outside_any_runtime_waiting_when_the_pool_becomes_stranded_is_refused() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (pool, rt, h) = full_smart_pool_on_a_runtime(&runs);
    let p = pool.clone();
    let (waiting_tx, waiting_rx) = mpsc::channel();
    let submitter = std::thread::spawn(move || {
        let fut = p.submit(|| async { 3u32 });
        let mut fut = std::pin::pin!(fut);
        // Polled once here: it waits for room.
        let waker = std::task::Waker::noop();
        assert!(fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_pending());
        waiting_tx.send(()).unwrap();
        plain_block_on(fut).map(|_| ()).map_err(|e| e.kind())
    });
    waiting_rx.recv().unwrap();
    drop(rt); // the pool is stranded, full
    let got = on_thread_within("the async submit", 5, move || submitter.join().unwrap());
    assert_eq!(got, Err(SubmitErrorKind::NoRuntime));
    // The stranded task is kept, and runs once something offers a runtime.
    assert_eq!(
        on_thread_within("its blocking_wait", 10, move || h.blocking_wait()).unwrap(),
        9
    );
}

/// A recipe for probes of several stranded tasks: runs started while `hold` is set never
/// end (to be cut off); later runs take `ms` milliseconds of sleeps and return `value`.
/// `gauge` counts the runs alive at once (entered, not yet dropped).
fn held_then_sleepy(
    hold: &Arc<AtomicBool>,
    gauge: &Gauge,
    ms: u64,
    value: usize,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = usize> + Send>> + Send + Sync + 'static {
    let (hold, gauge) = (hold.clone(), gauge.clone());
    move || {
        let held = hold.load(Ordering::SeqCst);
        let gauge = gauge.clone();
        Box::pin(async move {
            let _g = gauge.enter();
            if held {
                std::future::pending::<()>().await;
            }
            for _ in 0..ms {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            value
        })
    }
}

/// Probe (passes): several threads (plain ones and `spawn_blocking` threads of the runtime
/// that ended) `blocking_wait` at once for tasks of one stranded pool: each makes a runtime
/// when it finds the pool stranded, and the end of each cuts off the re-runs of the
/// others' tasks that started there. Every task returns its value, and no task has two
/// runs alive at once.
#[test]
fn probe_several_threads_blocking_wait_on_one_stranded_pool() {
    for round in 0..5 {
        let pool = smart_local(2);
        let hold = Arc::new(AtomicBool::new(true));
        let gauges: Vec<Gauge> = (0..6).map(|_| Gauge::default()).collect();
        let rt = multi_thread_of(1);
        let handles: Vec<_> = (0..6)
            .map(|i| {
                rt.block_on(pool.submit(held_then_sleepy(&hold, &gauges[i], 3 + 2 * i as u64, i)))
                    .unwrap()
            })
            .collect();
        until("two first runs", || {
            gauges[0].started() + gauges[1].started() == 2
        });
        hold.store(false, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        for (i, h) in handles.into_iter().enumerate() {
            let tx = tx.clone();
            let wait = move || {
                let _ = tx.send((i, h.blocking_wait().map_err(|e| e.to_string())));
            };
            if i % 2 == 0 {
                std::thread::spawn(wait);
            } else {
                drop(rt.spawn_blocking(wait));
            }
        }
        drop(tx);
        on_thread_within("the runtime's drop", 20, move || drop(rt));
        let mut got: Vec<_> = (0..6)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(20))
                    .expect("a wait hung")
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            (0..6).map(|i| (i, Ok(i))).collect::<Vec<_>>(),
            "round {round}"
        );
        for (i, g) in gauges.iter().enumerate() {
            assert_eq!(
                g.max(),
                1,
                "round {round}: task {i} had two runs alive at once"
            );
        }
    }
}

/// A boxed SmartAioPool recipe.
type Recipe<T> = Box<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = T> + Send>> + Send + Sync>;

/// A pool of `c` slots whose tasks `recipes` are started on a new multi-thread runtime,
/// which is then dropped while `hold` is set (their runs never end): the pool is
/// stranded, every task queued again. Returns the pool and the handles.
fn stranded_with<T: Send + 'static>(
    c: usize,
    recipes: Vec<Recipe<T>>,
    started: impl Fn() -> bool,
) -> (SmartAioPool, Vec<nb_aiopool::TaskHandle<T>>) {
    let pool = smart_local(c);
    let rt = multi_thread_of(1);
    let handles = recipes
        .into_iter()
        .map(|r| rt.block_on(pool.submit(r)).unwrap())
        .collect();
    until("the first runs", started);
    drop(rt);
    (pool, handles)
}

/// Probe (passes): a re-run that panics on the runtime `blocking_wait` makes resolves its
/// handle to the panic; another task's re-run panicking there fails only that task.
#[test]
fn probe_panics_in_reruns_on_blocking_waits_runtime() {
    hide_panics(&["rerun panics"]);
    let runs = Arc::new(AtomicUsize::new(0));
    let recipe = |panics: bool| {
        let runs = runs.clone();
        Box::new(move || {
            let first = runs.fetch_add(1, Ordering::SeqCst) < 2;
            Box::pin(async move {
                if first {
                    std::future::pending::<()>().await;
                }
                tokio::task::yield_now().await;
                if panics {
                    panic!("rerun panics");
                }
                7u32
            }) as std::pin::Pin<Box<dyn Future<Output = u32> + Send>>
        }) as Box<dyn Fn() -> _ + Send + Sync>
    };
    let (_pool, mut hs) = stranded_with(2, vec![recipe(true), recipe(false)], || {
        runs.load(Ordering::SeqCst) == 2
    });
    let ok = hs.pop().unwrap();
    let bad = hs.pop().unwrap();
    let got = on_thread_within("the good task's wait", 10, move || ok.blocking_wait());
    assert_eq!(got.unwrap(), 7u32);
    let got = on_thread_within("the panicking task's wait", 10, move || bad.blocking_wait());
    assert!(got.unwrap_err().is_panic());
}

/// Probe (passes): `blocking_wait` on a plain thread that holds a `Handle::enter` guard of
/// the runtime that ended (no live runtime to offer) makes its own, as a plain thread's.
#[test]
fn probe_blocking_wait_under_an_entered_dead_runtime() {
    let runs = Arc::new(AtomicUsize::new(0));
    let pool = smart_local(1);
    let rt = multi_thread_of(1);
    let h = rt.block_on(pool.submit(cut_off_once(&runs, 4))).unwrap();
    until("the first run", || runs.load(Ordering::SeqCst) == 1);
    let handle = rt.handle().clone();
    drop(rt);
    let got = on_thread_within("the wait", 10, move || {
        let _g = handle.enter();
        h.blocking_wait()
    });
    assert_eq!(got.unwrap(), 4);
}

/// Probe (passes): a stranded rate-limited pool's task: the runtime `blocking_wait` makes
/// has timers, and is taken.
#[test]
fn probe_blocking_wait_on_a_stranded_rate_limited_pool() {
    let runs = Arc::new(AtomicUsize::new(0));
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .rate_limit(100, Duration::from_millis(10))
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let rt = multi_thread_of(1);
    let h = rt.block_on(pool.submit(cut_off_once(&runs, 5))).unwrap();
    let h2 = rt.block_on(pool.submit(|| async { 6u32 })).unwrap();
    until("the first run", || runs.load(Ordering::SeqCst) == 1);
    drop(rt);
    let got = on_thread_within("the wait", 10, move || {
        (h.blocking_wait(), h2.blocking_wait())
    });
    assert_eq!((got.0.unwrap(), got.1.unwrap()), (5, 6));
}

/// Probe (passes, pins a noted behaviour): a re-run that calls
/// `tokio::task::block_in_place` (fine on the multi-thread runtime it was submitted from)
/// run on the current-thread runtime `blocking_wait` makes panics there.
#[test]
fn probe_block_in_place_in_a_rerun_on_blocking_waits_runtime() {
    let runs = Arc::new(AtomicUsize::new(0));
    let pool = smart_local(1);
    let rt = multi_thread_of(1);
    let r = runs.clone();
    let h = rt
        .block_on(pool.submit(move || {
            let first = r.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                tokio::task::block_in_place(|| 8u32)
            }
        }))
        .unwrap();
    until("the first run", || runs.load(Ordering::SeqCst) == 1);
    drop(rt);
    let got = on_thread_within("the wait", 10, move || h.blocking_wait());
    // Pinned: tokio's "can call blocking only when running on the multi-threaded
    // runtime", as on any current-thread runtime that awaits the handle.
    assert!(got.unwrap_err().is_panic());
}

/// Probe (passes): a `spawn_blocking` thread of a live runtime R2 waits in
/// `blocking_submit` for room while the pool's other runtime R1 runs its task; R1's end
/// does not strand the pool (R2 is known: the submit offered it), and the submit gets in.
#[test]
fn probe_blocking_submit_in_a_live_runtimes_spawn_blocking_is_not_refused() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (pool, rt1, h) = full_smart_pool_on_a_runtime(&runs);
    let rt2 = multi_thread_of(1);
    let p = pool.clone();
    let (waiting_tx, waiting_rx) = mpsc::channel();
    let sub = rt2.spawn_blocking(move || {
        waiting_tx.send(()).unwrap();
        p.blocking_submit(|| async { 3u32 })
            .map(|h| h.blocking_wait().unwrap())
            .map_err(|e| e.kind())
    });
    waiting_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    drop(rt1);
    let got = rt2.block_on(async { within("the submit", sub).await.unwrap() });
    assert_eq!(got, Ok(3));
    assert_eq!(rt2.block_on(within("h", h)).unwrap(), 9);
}

#[test]
#[ignore = "a child process of the exit tests"]
fn child() {
    let (scenario, dir) = child_scenario();
    match scenario.as_str() {
        "exit-during-blocking-waits-runtime" => exit_during_blocking_waits_runtime(&dir),
        other => panic!("unknown scenario {other}"),
    }
}

/// A process-wide SmartAioPool's task, stranded by its runtime's end, is re-run on the
/// runtime a plain thread's `blocking_wait` makes; the process exits while that run sleeps.
/// Logs each run's start and end, and the most runs alive at once.
fn exit_during_blocking_waits_runtime(dir: &std::path::Path) {
    let pool = SmartAioPool::builder().name("exiting").build();
    let runs = Arc::new(AtomicUsize::new(0));
    let gauge = Gauge::default();
    let rt = multi_thread_of(1);
    let (r, g, d) = (runs.clone(), gauge.clone(), dir.to_path_buf());
    let h = rt
        .block_on(pool.submit(move || {
            let n = r.fetch_add(1, Ordering::SeqCst) + 1;
            let (g, d) = (g.clone(), d.clone());
            async move {
                let _g = g.enter();
                append(&d.join("log"), &format!("start {n}"));
                if n == 1 {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                append(&d.join("log"), &format!("end {n} max {}", g.max()));
                n
            }
        }))
        .unwrap();
    until("the first run", || runs.load(Ordering::SeqCst) == 1);
    drop(rt);
    let d = dir.to_path_buf();
    std::thread::spawn(move || {
        let got = h.blocking_wait();
        append(
            &d.join("waited"),
            &format!("{:?}", got.map_err(|e| e.to_string())),
        );
    });
    until("the re-run", || runs.load(Ordering::SeqCst) == 2);
    // Returns: the process exits while run 2 sleeps on the thread's runtime.
}

/// Probe (passes): the exit hook takes over a pool whose re-run sleeps on the runtime a
/// plain thread's `blocking_wait` made: it is run again at exit (run 3) and ends; run 2,
/// left in a stale slot, never resumes.
#[test]
fn probe_exit_while_blocking_waits_runtime_runs_a_rerun() {
    let c = run_child("exit-during-blocking-waits-runtime", 30);
    let log = lines(&c.dir.join("log"));
    let waited = lines(&c.dir.join("waited"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    eprintln!("log: {log:?}\nwaited: {waited:?}\nstderr: {}", c.stderr);
    assert!(log.iter().any(|l| l.starts_with("end 3")), "{log:?}");
    assert!(!log.iter().any(|l| l.starts_with("end 2")), "{log:?}");
}

/// Finding 227: `blocking_wait` on a thread that entered a live current-thread runtime it
/// does not drive (`Handle::enter`; it cannot be driving it: `blocking_wait` would panic
/// inside its `block_on`), for a task of a stranded pool. The handle's poll offered that
/// runtime; the pool took it and queued the re-run there, where nothing ran it, and the
/// only thread that could drive it was blocked in the wait: a hang. 215's fix made a
/// runtime only when nothing could be offered. Now a blocked wait does not offer a
/// current-thread runtime, and makes its own.
#[test]
fn blocking_wait_under_an_entered_current_thread_runtime_does_not_hang() {
    let runs = Arc::new(AtomicUsize::new(0));
    let pool = smart_local(1);
    let rt = multi_thread_of(1);
    let h = rt.block_on(pool.submit(cut_off_once(&runs, 4))).unwrap();
    until("the first run", || runs.load(Ordering::SeqCst) == 1);
    drop(rt);
    let got = on_thread_within("the wait", 5, move || {
        let ct = current_thread();
        let _g = ct.enter();
        h.blocking_wait().map_err(|e| e.to_string())
    });
    assert_eq!(got, Ok(4));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
