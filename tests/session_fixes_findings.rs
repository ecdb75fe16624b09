//! A helper's review of 5fa0b58 and 0f62108 (a current-thread slot dropping what its job
//! leaves; findings 255-258's fixes): the tests of findings 263-265, and pins.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use nb_aiopool::{CancelReason, TaskHandle};
use support::{common_local, current_thread, multi_thread_of, on_thread_within};

// ----- 255: a plain thread's queued job and the end of its runtime ---------------------------

/// One round: runtime B (alive throughout) runs `B_JOBS` jobs that wait for a gate; the
/// undriven current-thread runtime A is the home (it submitted last); a plain thread queues
/// `PLAIN` jobs, which go to A. Then, at the same instant, B's jobs are let go (their
/// slots take the plain jobs from the queue) and A is dropped. B is alive and known, so by
/// 255's fix every plain job must run (on B); none was running on A (A is never driven).
/// Returns how many plain jobs ended otherwise (with their reasons).
fn plain_jobs_when_home_ends_as_slots_take_them(round: u32) -> Vec<String> {
    const B_JOBS: usize = 6;
    const PLAIN: u64 = 12;
    let pool = common_local(B_JOBS + 1, 64);
    let rt_b = multi_thread_of(2);
    let (open, gate) = tokio::sync::watch::channel(false);
    let started = Arc::new(AtomicUsize::new(0));
    let b_jobs: Vec<TaskHandle<()>> = rt_b.block_on(async {
        let mut hs = Vec::new();
        for _ in 0..B_JOBS {
            let mut gate = gate.clone();
            let started = Arc::clone(&started);
            hs.push(
                pool.submit(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.wait_for(|o| *o).await;
                })
                .await
                .unwrap(),
            );
        }
        hs
    });
    support::until("B's jobs started", || {
        started.load(Ordering::SeqCst) == B_JOBS
    });
    // A: the home (the last runtime to submit), then never driven again.
    let rt_a = current_thread();
    rt_a.block_on(pool.run(async {})).unwrap();
    let p = pool.clone();
    let plain: Vec<TaskHandle<u64>> = std::thread::spawn(move || {
        (0..PLAIN)
            .map(|i| p.blocking_submit(async move { i }).unwrap())
            .collect()
    })
    .join()
    .unwrap();
    let go = Arc::new(Barrier::new(2));
    let g = Arc::clone(&go);
    let spin = Duration::from_micros(u64::from(round % 40) * 5);
    let dropper = std::thread::spawn(move || {
        g.wait();
        let t = std::time::Instant::now();
        while t.elapsed() < spin {
            std::hint::spin_loop();
        }
        drop(rt_a);
    });
    go.wait();
    open.send(true).unwrap();
    dropper.join().unwrap();
    let mut bad = Vec::new();
    for (i, h) in plain.into_iter().enumerate() {
        match h.blocking_wait() {
            Ok(v) => assert_eq!(v, i as u64),
            Err(e) => bad.push(format!("plain job {i}: {e:?}")),
        }
    }
    for h in b_jobs {
        h.blocking_wait().unwrap();
    }
    let s = pool.stats();
    assert_eq!((s.queued, s.running), (0, 0), "{s:?}");
    drop(rt_b);
    bad
}

/// 255's fix moves a plain thread's queued jobs to another live runtime when their
/// runtime's end is *settled* (`Engine::settle_dead`, under the lock, after the runtime's
/// sentinel cleared its "alive" flag). Between the flag and the settling, a slot of the
/// live runtime B that takes such a job from the queue (`Engine::take_next`) finds its
/// runtime gone and cancels it (`RuntimeShutdown`, "its runtime is gone: it can never
/// run"), though B is alive and the job is a plain thread's: the fault 255 fixed, again,
/// in a window. Sampled: rounds with their own timing.
#[test]
fn a_plain_threads_job_taken_as_its_runtime_ends_is_not_cancelled_while_another_lives() {
    let bad = on_thread_within("the rounds", 240, || {
        let mut bad = Vec::new();
        for round in 0..300 {
            let lost = plain_jobs_when_home_ends_as_slots_take_them(round);
            if !lost.is_empty() {
                bad.push((round, lost));
            }
        }
        bad
    });
    assert!(
        bad.is_empty(),
        "plain threads' jobs were cancelled while runtime B was alive: {bad:?}"
    );
}

/// Makes the undriven current-thread runtime `rt` the pool's home without queueing a job
/// there: a job submitted from it (the last submit: the home) and aborted while queued.
fn make_home_without_a_job(pool: &nb_aiopool::CommonAioPool, rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let h = pool.submit(async {}).await.unwrap();
        h.abort();
        assert!(h.await.unwrap_err().is_cancelled());
    });
}

/// 255's re-homing in a slot's drop (`Slot::drop`, `rehome`) puts back a plain thread's job
/// that a slot of another runtime took from the queue and handed to its runtime A, which
/// ended before it polled the job. The job never started, yet the rate window keeps the
/// start it was charged when it left the queue (`Limits::rerun_queued` gives it back only
/// in a window that never reopens): with `rate_limit(2, 1 h)` and one real start (C's
/// job), the job put back waits an hour for a window that no second start filled.
#[test]
fn a_plain_threads_job_put_back_unpolled_is_not_charged_a_start_of_the_rate_window() {
    let got = on_thread_within("the set-up", 20, || {
        let pool = nb_aiopool::CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(10)
            .rate_limit(2, Duration::from_secs(3600))
            .process_wide(false)
            .build();
        let rt_c = multi_thread_of(1);
        let (open, gate) = tokio::sync::oneshot::channel::<()>();
        let busy = rt_c
            .block_on(pool.submit(async move {
                let _ = gate.await;
            }))
            .unwrap(); // the window's first start
        let rt_a = current_thread();
        make_home_without_a_job(&pool, &rt_a);
        let p = pool.clone();
        let plain = std::thread::spawn(move || p.blocking_submit(async { 7u32 }).unwrap())
            .join()
            .unwrap();
        open.send(()).unwrap();
        busy.blocking_wait().unwrap();
        // C's slot took the plain job and handed it to A (its home), which is not driven.
        support::until("the job was handed to A", || {
            let s = pool.stats();
            (s.queued, s.running) == (0, 1)
        });
        drop(rt_a); // A ends before it ever polled the job: it goes back to the queue
        (pool, rt_c, plain)
    });
    let (pool, rt_c, plain) = got;
    runs_without_waiting_for_the_window(rt_c, plain, move || pool.stats());
}

/// Runtimes A (the undriven home of a plain thread's keyed jobs) and B (whose never-ending
/// jobs hold every slot) end at the same instant, on two threads; C lives on or not.
/// Every plain job runs on C if it lives, else runs on C before C ends (C is dropped
/// after A and B) or ends `RuntimeShutdown`; none is left
/// waiting; the counts settle; `max_per_key` is kept throughout and its counts are not
/// left behind (two jobs of each key still run together afterwards, where a count leaked
/// by a re-homed job would hold one back for ever).
fn home_and_slots_end_together(round: u32, c_lives: bool) {
    const KEYS: usize = 3;
    let pool = nb_aiopool::CommonAioPool::builder()
        .max_concurrency(3)
        .max_queue_size(64)
        .max_per_key(2)
        .process_wide(false)
        .build();
    let mut rt_c = Some(multi_thread_of(1));
    rt_c.as_ref().unwrap().block_on(pool.run(async {})).unwrap(); // C is known
    let rt_b = multi_thread_of(1);
    let b_jobs: Vec<TaskHandle<()>> = rt_b.block_on(async {
        let mut hs = Vec::new();
        for _ in 0..3 {
            hs.push(pool.submit(std::future::pending::<()>()).await.unwrap());
        }
        hs
    });
    support::until("B's jobs hold the slots", || pool.stats().running == 3);
    let rt_a = current_thread();
    make_home_without_a_job(&pool, &rt_a);
    let running: Arc<Vec<AtomicUsize>> = Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
    let most = Arc::new(AtomicUsize::new(0));
    let p = pool.clone();
    let (r, m) = (Arc::clone(&running), Arc::clone(&most));
    let plain: Vec<TaskHandle<usize>> = std::thread::spawn(move || {
        (0..12usize)
            .map(|i| {
                let (r, m) = (Arc::clone(&r), Arc::clone(&m));
                let opts = nb_aiopool::SubmitOptions::new().key(format!("k{}", i % KEYS));
                p.try_submit_with(
                    async move {
                        let now = r[i % KEYS].fetch_add(1, Ordering::SeqCst) + 1;
                        m.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        r[i % KEYS].fetch_sub(1, Ordering::SeqCst);
                        i
                    },
                    opts,
                )
                .map_err(|_| "refused")
                .unwrap()
            })
            .collect()
    })
    .join()
    .unwrap();
    let start = Arc::new(Barrier::new(2));
    let ends: Vec<_> = [rt_a, rt_b]
        .into_iter()
        .enumerate()
        .map(|(n, rt)| {
            let start = Arc::clone(&start);
            let spin = Duration::from_micros(u64::from(round % 8) * 10 * n as u64);
            std::thread::spawn(move || {
                start.wait();
                let t = std::time::Instant::now();
                while t.elapsed() < spin {
                    std::hint::spin_loop();
                }
                drop(rt);
            })
        })
        .collect();
    for t in ends {
        t.join().unwrap();
    }
    if !c_lives {
        drop(rt_c.take());
    }
    for h in b_jobs {
        assert_eq!(
            h.blocking_wait().unwrap_err().cancel_reason(),
            Some(CancelReason::RuntimeShutdown)
        );
    }
    for (i, h) in plain.into_iter().enumerate() {
        match (c_lives, h.blocking_wait()) {
            (true, Ok(v)) => assert_eq!(v, i),
            // C, dropped only after A and B ended, was alive meanwhile: a plain job may
            // have run there before its end (2 runs in 5 failed on this before).
            (false, Ok(v)) => assert_eq!(v, i),
            (false, Err(e)) if e.cancel_reason() == Some(CancelReason::RuntimeShutdown) => {}
            (_, other) => panic!(
                "round {round}, C lives {c_lives}: plain job {i} ended {other:?}; {:?}",
                pool.stats()
            ),
        }
    }
    assert!(most.load(Ordering::SeqCst) <= 2, "max_per_key(2) broken");
    let s = pool.stats();
    assert_eq!((s.queued, s.running), (0, 0), "round {round}: {s:?}");
    assert_eq!(
        s.completed + s.cancelled + s.panicked,
        s.submitted,
        "round {round}: {s:?}"
    );
    // The keys' counts were given back: two jobs of each key run together.
    let rt_d = multi_thread_of(1);
    rt_d.block_on(async {
        for k in 0..KEYS {
            let both = Arc::new(tokio::sync::Barrier::new(2));
            let mut hs = Vec::new();
            for _ in 0..2 {
                let both = Arc::clone(&both);
                let opts = nb_aiopool::SubmitOptions::new().key(format!("k{k}"));
                hs.push(
                    pool.submit_with(
                        async move {
                            both.wait().await;
                        },
                        opts,
                    )
                    .await
                    .map_err(|_| "refused")
                    .unwrap(),
                );
            }
            for h in hs {
                tokio::time::timeout(Duration::from_secs(5), h)
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: key k{k}'s count was left behind"))
                    .unwrap();
            }
        }
    });
    drop(rt_d);
    drop(rt_c);
}

/// Probe (tests/runtimes_ending_together.rs style, with keys): see
/// [`home_and_slots_end_together`].
#[test]
fn plain_threads_keyed_jobs_when_their_home_and_the_slots_runtime_end_together() {
    on_thread_within("the rounds", 120, || {
        for round in 0..24 {
            home_and_slots_end_together(round, round % 2 == 0);
        }
    });
}

// ----- 5fa0b58: a current-thread slot drops what its job leaves ------------------------------

/// A result whose `Drop` says it began (`began`), takes `ms`, then sets `done`.
struct SlowDrop {
    began: std::sync::mpsc::Sender<()>,
    done: Arc<std::sync::atomic::AtomicBool>,
    ms: u64,
}

impl Drop for SlowDrop {
    fn drop(&mut self) {
        let _ = self.began.send(());
        std::thread::sleep(Duration::from_millis(self.ms));
        self.done.store(true, Ordering::SeqCst);
    }
}

/// Pin: a detached task on a current-thread runtime has its result dropped by its slot,
/// after the lock that counted it; a `wait()` (or `shutdown()`) made from another thread
/// while that `Drop` runs (a plain thread's executor, another runtime) returns only once
/// it is over.
#[test]
fn pin_a_wait_from_another_thread_returns_after_a_current_thread_slot_dropped_the_result() {
    for how in ["plain wait", "other runtime wait", "plain shutdown"] {
        on_thread_within(how, 20, move || {
            let pool = common_local(2, 10);
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (began, begun) = std::sync::mpsc::channel();
            let (p, d) = (pool.clone(), Arc::clone(&done));
            let ct = std::thread::spawn(move || {
                let rt = current_thread();
                rt.block_on(async move {
                    let out = SlowDrop {
                        began,
                        done: d,
                        ms: 300,
                    };
                    p.submit(async move { out }).await.unwrap().detach();
                    // Drive the runtime until the slot has dropped the result.
                    tokio::time::sleep(Duration::from_millis(600)).await;
                });
            });
            begun
                .recv_timeout(Duration::from_secs(5))
                .expect("the result's drop began");
            match how {
                "plain wait" => support::plain_block_on(pool.wait()),
                "other runtime wait" => multi_thread_of(1).block_on(pool.wait()),
                _ => support::plain_block_on(pool.shutdown()),
            }
            assert!(
                done.load(Ordering::SeqCst),
                "{how} returned while the result it covers was being dropped"
            );
            ct.join().unwrap();
        });
    }
}

/// A result that panics when dropped.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("review: a result's drop panics");
    }
}

/// Pin: on a current-thread runtime a result whose `Drop` panics, dropped by the slot, fails
/// nothing else: the slot runs the next jobs, the task counts as completed (no panic of the
/// task: `on_panic` is not called), submits go on.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn pin_a_panicking_result_drop_on_a_current_thread_slot_fails_nothing_else() {
    support::hide_panics(&["review: a result's drop panics"]);
    let hooked = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hooked);
    let pool = nb_aiopool::CommonAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(10)
        .process_wide(false)
        .on_panic(move |_, _| {
            h.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    for _ in 0..3 {
        pool.submit(async {
            tokio::task::yield_now().await;
            PanicOnDrop
        })
        .await
        .unwrap()
        .detach();
    }
    assert_eq!(pool.run(async { 5 }).await.unwrap(), 5);
    pool.wait().await;
    let s = pool.stats();
    assert_eq!((s.completed, s.panicked), (4, 0), "{s:?}");
    assert_eq!(
        hooked.load(Ordering::SeqCst),
        0,
        "on_panic is for the tasks' panics"
    );
}

/// A result whose `Drop` submits a job to its own pool (`try_submit`: it never waits).
struct SubmitsOnDrop(nb_aiopool::CommonAioPool, Arc<AtomicUsize>);

impl Drop for SubmitsOnDrop {
    fn drop(&mut self) {
        let n = Arc::clone(&self.1);
        let _ = self.0.try_submit(async move {
            n.fetch_add(1, Ordering::SeqCst);
        });
    }
}

/// Pin: on a current-thread runtime, a result whose `Drop` submits to its own pool (the
/// slot drops it after the lock, inside its poll): no deadlock, and the job it submits
/// runs; a full pool refuses it (the drop never waits).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn pin_a_results_drop_that_submits_to_its_pool_on_a_current_thread_slot() {
    let pool = common_local(1, 1);
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        let out = SubmitsOnDrop(pool.clone(), Arc::clone(&ran));
        pool.submit(async move {
            tokio::task::yield_now().await;
            out
        })
        .await
        .unwrap()
        .detach();
    }
    tokio::time::timeout(Duration::from_secs(5), async {
        while pool.stats().unfinished() > 0 || ran.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the pool settles");
    pool.wait().await;
    assert!(ran.load(Ordering::SeqCst) >= 1);
    let s = pool.stats();
    assert_eq!(s.completed, s.submitted, "{s:?}");
}

/// Pin (255's fix, NoQueueAioPool): a plain thread's `blocking_submit` returns with its
/// task holding a slot reserved on the home A (a claimer there, never driven); A ends;
/// the task runs on C, the live runtime the pool knows.
#[test]
fn pin_a_no_queue_pools_plain_job_reserved_on_an_ended_home_runs_on_the_live_runtime() {
    on_thread_within("the plain thread's job", 20, || {
        let pool = nb_aiopool::NoQueueAioPool::builder()
            .max_concurrency(1)
            .process_wide(false)
            .build();
        let rt_c = multi_thread_of(1);
        rt_c.block_on(pool.run(async {})).unwrap();
        let rt_a = current_thread();
        rt_a.block_on(pool.run(async {})).unwrap(); // A: the home, then never driven
        let p = pool.clone();
        let h = std::thread::spawn(move || p.blocking_submit(async { 3 }).unwrap())
            .join()
            .unwrap();
        assert_eq!(pool.stats().running, 1);
        drop(rt_a);
        assert_eq!(h.blocking_wait().unwrap(), 3);
        drop(rt_c);
    });
}

// ----- 256: rerun_interrupted(false) tasks cut before the exit ----------------------------------

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = support::child_scenario();
    match scenario.as_str() {
        "cut-then-shut-down-then-exit" => cut_then_shut_down(&dir),
        "cut-before-and-by-exit" => cut_before_and_by_exit(&dir),
        other => panic!("unknown scenario {other}"),
    }
}

/// A `rerun_interrupted(false)` pool named `name` of `n` slots.
fn mailer(name: &str, n: usize) -> nb_aiopool::SmartAioPool {
    nb_aiopool::SmartAioPool::builder()
        .name(name)
        .max_concurrency(n)
        .rerun_interrupted(false)
        .build()
}

/// On a new multi-thread runtime, starts `n` tasks of `pool` that never end, then drops
/// the runtime: `n` runs cut, not run again.
fn cut_on_a_runtime(pool: &nb_aiopool::SmartAioPool, n: usize) {
    let rt = multi_thread_of(1);
    rt.block_on(start_never_ending(pool, n));
    drop(rt);
}

/// Starts `n` tasks of `pool` that never end, and waits until they all run.
async fn start_never_ending(pool: &nb_aiopool::SmartAioPool, n: usize) {
    let started = Arc::new(AtomicUsize::new(0));
    for _ in 0..n {
        let s = Arc::clone(&started);
        pool.submit(move || {
            s.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>()
        })
        .await
        .unwrap()
        .detach();
    }
    while started.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Two runs cut by the end of their runtime; then the pool is shut down on another
/// runtime (it leaves the process-wide list) and the process exits with the pool still
/// held (`process::exit` runs no destructor; a pool in a `static` is the same).
fn cut_then_shut_down(_dir: &std::path::Path) {
    let pool = mailer("shut-mailer", 2);
    cut_on_a_runtime(&pool, 2);
    multi_thread_of(1).block_on(pool.shutdown());
    std::process::exit(0);
}

/// Two runs cut by the end of their runtime, two more by `process::exit`.
fn cut_before_and_by_exit(_dir: &std::path::Path) {
    let pool = mailer("twice-mailer", 4);
    cut_on_a_runtime(&pool, 2);
    multi_thread_of(1).block_on(async {
        start_never_ending(&pool, 2).await;
        std::process::exit(0);
    });
}

/// 256's warning reads the live pools of the process-wide list and the pools dropped
/// before the exit (their drop hook). A pool shut down after its runs were cut leaves the
/// list (`forget_shut_down`) but, still held at the exit (`process::exit`, a `static`),
/// is never dropped: neither path sees it, and the cut runs go unreported, which
/// `rerun_interrupted(false)`'s docs promise ("the exit hook prints how many were cut").
#[test]
fn runs_cut_before_a_shutdown_of_a_pool_held_at_exit_are_reported() {
    let c = support::run_child("cut-then-shut-down-then-exit", 30);
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert!(
        c.stderr
            .contains("2 task(s) of SmartAioPool \"shut-mailer\" were interrupted by the end"),
        "the two cut runs went unreported; stderr: {:?}",
        c.stderr
    );
}

/// Pin: runs cut by a runtime's end before the exit and runs cut by the exit's take-over
/// are each reported once, on a line of their own (no count is given twice).
#[test]
fn pin_runs_cut_before_and_by_the_exit_are_each_reported_once() {
    let c = support::run_child("cut-before-and-by-exit", 30);
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    let end = "2 task(s) of SmartAioPool \"twice-mailer\" were interrupted by the end";
    let exit = "2 task(s) of SmartAioPool \"twice-mailer\" were interrupted by the process exit";
    assert_eq!(c.stderr.matches(end).count(), 1, "stderr: {:?}", c.stderr);
    assert_eq!(c.stderr.matches(exit).count(), 1, "stderr: {:?}", c.stderr);
    assert_eq!(
        c.stderr.matches("twice-mailer").count(),
        2,
        "stderr: {:?}",
        c.stderr
    );
}

/// The same charge in a SmartAioPool (older than 255's fix, whose re-homing copies this
/// path): a task of runtime A, taken from the queue by a slot of C and handed to A, which
/// ends before it polled it, is queued again for any runtime still charged a start it
/// never made: with `rate_limit(2, 1 h)` and one real start, it waits an hour.
#[test]
fn a_smart_task_put_back_unpolled_is_not_charged_a_start_of_the_rate_window() {
    let (pool, rt_c, h) = on_thread_within("the set-up", 20, || {
        let pool = nb_aiopool::SmartAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(10)
            .rate_limit(2, Duration::from_secs(3600))
            .process_wide(false)
            .auto_shutdown(false)
            .build();
        let rt_c = multi_thread_of(1);
        let (open, gate) = tokio::sync::watch::channel(false);
        let busy = rt_c
            .block_on(pool.submit(move || {
                let mut gate = gate.clone();
                async move {
                    let _ = gate.wait_for(|o| *o).await;
                }
            }))
            .unwrap(); // the window's first start
        let rt_a = current_thread();
        let h = rt_a.block_on(pool.submit(|| async { 7u32 })).unwrap();
        open.send(true).unwrap();
        busy.blocking_wait().unwrap();
        support::until("the task was handed to A", || {
            let s = pool.stats();
            (s.queued, s.running) == (0, 1)
        });
        drop(rt_a);
        (pool, rt_c, h)
    });
    runs_without_waiting_for_the_window(rt_c, h, move || pool.stats());
}

/// Awaits `handle`, put back unpolled, on `rt_c` (whose slot is free): it must run well
/// before its rate window (an hour) would let a second start in.
fn runs_without_waiting_for_the_window(
    rt_c: tokio::runtime::Runtime,
    handle: TaskHandle<u32>,
    stats: impl Fn() -> nb_aiopool::PoolStats + Send + 'static,
) {
    let waited = on_thread_within("the task, put back", 60, move || {
        let r = rt_c.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), handle)
                .await
                .map_err(|_| stats())
        });
        drop(rt_c);
        r
    });
    match waited {
        Ok(v) => assert_eq!(v.unwrap(), 7),
        Err(stats) => panic!(
            "the task put back waits for the rate window though only one start of two was \
             made: {stats:?}"
        ),
    }
}
