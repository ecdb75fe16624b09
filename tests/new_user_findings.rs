//! A new user's walkthrough of the public API (2026-12-05, on f6d5747): a `static`
//! pool shared by `#[tokio::test]`s and plain threads, the blocking calls, the SmartAioPool
//! exit path, streams, groups, options, the error types and the panic messages.
//!
//! Faults found (each test failed on f6d5747):
//! - a job a plain thread queued into a CommonAioPool was cancelled by the end of the
//!   pool's home runtime while another runtime the pool knows was alive, though "the end
//!   of one runtime cancels only the jobs submitted from it";
//! - the tasks of a `rerun_interrupted(false)` SmartAioPool cut off when a plain
//!   `#[tokio::main]` returned were lost without the promised exit warning (only
//!   `process::exit` printed it);
//! - `smart_run`'s panic inside a runtime quoted its advice with doubled backquotes.
//!
//! With pins of what the walkthrough found sound.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;

use nb_aiopool::{CancelReason, CommonAioPool, NoQueueAioPool, SmartAioPool};
use support::{child_scenario, multi_thread_of, on_thread_within, panic_message, run_child, until};

// ----- a plain thread's queued job and the end of the home runtime -------------------------

/// A CommonAioPool of one slot, with a queue of `queue`, known to two live runtimes:
/// `rt1`, and `rt2`, the home (it submitted last), whose never-ending job holds the slot.
fn home_busy_beside_a_live_runtime(
    queue: usize,
) -> (CommonAioPool, Runtime, Runtime, nb_aiopool::TaskHandle<()>) {
    let pool = support::common_local(1, queue);
    let rt1 = multi_thread_of(1);
    rt1.block_on(pool.run(async {})).unwrap();
    let rt2 = multi_thread_of(1);
    let busy = rt2
        .block_on(pool.submit(std::future::pending::<()>()))
        .unwrap();
    (pool, rt1, rt2, busy)
}

/// A CommonAioPool known to two live runtimes, `rt1` and `rt2` (the home: it submitted
/// last and holds the one slot). A plain thread queues a job (`blocking_submit`), then
/// `rt2` ends. The job was not submitted from `rt2`, and `rt1` is alive and known, so by
/// the docs ("the end of one runtime cancels only the jobs submitted from it"; "from a
/// plain thread it runs on the pool's home runtime ... if it has ended, another live
/// runtime the pool knows") it should run there. On f6d5747 it was cancelled
/// (`RuntimeShutdown`): the queued job is bound to the home at the submit and
/// `Engine::settle_dead` cancels every queued job of the dead runtime. This is what makes
/// a `static` pool shared by `#[tokio::test]`s and plain threads fail at random: the plain
/// thread's jobs are cancelled when whichever test last submitted ends.
#[test]
fn a_plain_threads_queued_job_outlives_its_home_runtime_while_another_is_known() {
    on_thread_within("the plain thread's job", 20, || {
        let (pool, rt1, rt2, busy) = home_busy_beside_a_live_runtime(10);
        let p = pool.clone();
        let queued =
            std::thread::spawn(move || p.blocking_submit(async { 7 }).map_err(|e| e.kind()))
                .join()
                .unwrap()
                .expect("the plain thread's submit is accepted (rt2 is alive)");
        assert_eq!(pool.stats().queued, 1, "{:?}", pool.stats());
        drop(rt2); // the home ends; rt1 is alive and known to the pool
        assert_eq!(
            busy.blocking_wait().unwrap_err().cancel_reason(),
            Some(CancelReason::RuntimeShutdown),
            "rt2's own job is cancelled with it"
        );
        let got = queued.blocking_wait();
        drop(rt1);
        match got {
            Ok(v) => assert_eq!(v, 7),
            Err(e) => panic!(
                "a job queued from a plain thread was cancelled by the end of the home \
                 runtime while another known runtime was alive: {e:?}"
            ),
        }
    });
}

/// A plain thread's queued job outlives its home only while it has not started and some
/// runtime is alive: `rt1` runs the pool's one slot, `rt2` (the home) and the plain thread
/// queue a job each; `rt2` ends. Its own job is cancelled; the plain thread's runs on
/// `rt1` once the slot is free (`release`), or, if `rt1` ends too, is cancelled with it
/// (no runtime is left to run it), never left waiting.
#[test]
fn a_plain_threads_rehomed_job_runs_on_the_live_runtime_or_ends_with_the_last() {
    for release in [true, false] {
        on_thread_within("the plain thread's job", 20, move || {
            let pool = support::common_local(1, 10);
            let rt1 = multi_thread_of(1);
            let (open, gate) = tokio::sync::oneshot::channel::<()>();
            let busy = rt1
                .block_on(pool.submit(async move {
                    let _ = gate.await;
                }))
                .unwrap();
            let rt2 = multi_thread_of(1);
            let own = rt2.block_on(pool.submit(async { 1 })).unwrap();
            let p = pool.clone();
            let plain = std::thread::spawn(move || p.blocking_submit(async { 7 }).unwrap())
                .join()
                .unwrap();
            assert_eq!(pool.stats().queued, 2, "{:?}", pool.stats());
            drop(rt2);
            assert_eq!(
                own.blocking_wait().unwrap_err().cancel_reason(),
                Some(CancelReason::RuntimeShutdown),
                "rt2's own queued job ends with it"
            );
            assert_eq!(pool.stats().queued, 1, "{:?}", pool.stats());
            if release {
                open.send(()).unwrap();
                busy.blocking_wait().unwrap();
                assert_eq!(plain.blocking_wait().unwrap(), 7);
                drop(rt1);
            } else {
                drop(rt1);
                drop(open);
                assert_eq!(
                    plain.blocking_wait().unwrap_err().cancel_reason(),
                    Some(CancelReason::RuntimeShutdown),
                    "no runtime is left to run it"
                );
                assert_eq!(pool.stats().queued, 0, "{:?}", pool.stats());
            }
        });
    }
}

/// Pin (passes on f6d5747): the same, but the plain thread waits for room (no queue)
/// instead of being queued: it gets in after `rt2` ended and its job runs on `rt1`. The
/// same user code, with a queue of 0, does not lose the job.
#[test]
fn pin_a_plain_threads_submit_waiting_for_room_runs_on_the_live_runtime_after_the_home_ends() {
    on_thread_within("the plain thread's job", 20, || {
        let (pool, rt1, rt2, busy) = home_busy_beside_a_live_runtime(0);
        let p = pool.clone();
        let submitter =
            std::thread::spawn(move || p.blocking_submit(async { 7 }).map_err(|e| e.kind()));
        std::thread::sleep(Duration::from_millis(50)); // the submitter waits for room
        drop(rt2);
        let _ = busy.blocking_wait();
        let h = submitter
            .join()
            .unwrap()
            .expect("accepted once rt2's slot is gone");
        assert_eq!(h.blocking_wait().unwrap(), 7);
        drop(rt1);
    });
}

// ----- rerun_interrupted(false): tasks cut when main returns ------------------------------

/// The README and `SmartAioPoolBuilder::rerun_interrupted`: with `false`, interrupted
/// tasks "are reported (their handles say `RuntimeShutdown`, and the exit hook prints how
/// many), not repeated". A child process plays a plain `#[tokio::main]` (a multi-thread
/// runtime dropped when `main`'s body returns) with two "send an email" tasks mid-run and
/// two queued. On f6d5747 the two queued ones ran at exit, and the two cut ones were lost
/// without a word: the runtime's drop cancels them (`Slot::drop`, counted in
/// `counts.lost`), and `finish_at_exit` reports only the runs its own take-over cuts
/// (`process::exit`'s case).
#[test]
fn tasks_cut_when_main_returns_without_reruns_are_reported_at_exit() {
    let c = run_child("main-returns-no-rerun", 30);
    let sent = support::lines(&c.dir.join("sent"));
    let started = support::lines(&c.dir.join("started"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    let mut started_sorted = started.clone();
    started_sorted.sort();
    assert_eq!(
        started_sorted,
        ["0", "1", "2", "3"],
        "each task started once"
    );
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    assert_eq!(
        sent_sorted,
        ["2", "3"],
        "the queued tasks ran at exit, the cut ones not again"
    );
    assert!(
        c.stderr
            .contains("2 task(s) of SmartAioPool \"mailer\" were interrupted"),
        "the two cut tasks were lost without the promised warning; stderr: {:?}",
        c.stderr
    );
}

/// Pin (passes on f6d5747): with `std::process::exit` instead of a return, the exit's
/// take-over cuts them and says so, once (no second line for the same tasks).
#[test]
fn pin_tasks_cut_by_process_exit_without_reruns_are_reported_once() {
    let c = run_child("exit-no-rerun", 30);
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(
        c.stderr
            .matches("task(s) of SmartAioPool \"mailer\" were interrupted")
            .count(),
        1,
        "stderr: {:?}",
        c.stderr
    );
    assert!(
        c.stderr
            .contains("2 task(s) of SmartAioPool \"mailer\" were interrupted by the process exit"),
        "stderr: {:?}",
        c.stderr
    );
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = child_scenario();
    match scenario.as_str() {
        "main-returns-no-rerun" => mailer(&dir, false),
        "exit-no-rerun" => mailer(&dir, true),
        other => panic!("unknown scenario {other}"),
    }
}

/// `#[tokio::main]` by hand: a multi-thread runtime whose body submits four tasks to an
/// `auto_shutdown` pool of two slots without re-runs, lets two start, and returns (the
/// runtime is dropped), or calls `process::exit(0)` if `exit`.
fn mailer(dir: &std::path::Path, exit: bool) {
    let rt = multi_thread_of(2);
    let dir = dir.to_path_buf();
    rt.block_on(async move {
        let pool = SmartAioPool::builder()
            .name("mailer")
            .max_concurrency(2)
            .rerun_interrupted(false)
            .build();
        let started = Arc::new(AtomicUsize::new(0));
        for i in 0..4u32 {
            let (d, s) = (dir.clone(), Arc::clone(&started));
            pool.submit(move || {
                let (d, s) = (d.clone(), Arc::clone(&s));
                async move {
                    support::append(&d.join("started"), &i.to_string());
                    s.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    support::append(&d.join("sent"), &i.to_string());
                }
            })
            .await
            .unwrap()
            .detach();
        }
        while started.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if exit {
            std::process::exit(0);
        }
    });
    drop(rt);
}

// ----- panic messages ------------------------------------------------------------------

/// `smart_run` called inside a runtime panics with advice on what to call instead. On
/// f6d5747 the advice came out as "Use ``shutdown_all_smart_aiopools().await` at the end
/// of your async main` there": `assert_not_async` wraps its `instead` in backquotes, and
/// `smart_run` passed one that had its own.
#[test]
fn smart_run_inside_a_runtime_gives_cleanly_quoted_advice() {
    let rt = support::current_thread();
    let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async { nb_aiopool::smart_run(async {}) })
    }))
    .expect_err("smart_run inside block_on panics");
    let msg = panic_message(&*p);
    assert!(
        msg.contains("`shutdown_all_smart_aiopools().await`"),
        "the advice names the call: {msg}"
    );
    assert!(!msg.contains("``"), "doubled backquotes in: {msg}");
}

/// Pin (passes on f6d5747): the other two blocking calls' messages name the async call
/// to use, quoted once.
#[test]
fn pin_blocking_calls_inside_a_runtime_name_the_async_call() {
    let rt = support::current_thread();
    let pool = support::common_local(1, 1);
    let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async { drop(pool.blocking_submit(async {})) })
    }))
    .expect_err("blocking_submit inside block_on panics");
    let msg = panic_message(&*p);
    assert!(
        msg.contains("Use `submit(..).await` there") && !msg.contains("``"),
        "{msg}"
    );
    let h = rt.block_on(pool.submit(async {})).unwrap();
    let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async move { drop(h.blocking_wait()) })
    }))
    .expect_err("blocking_wait inside block_on panics");
    let msg = panic_message(&*p);
    assert!(
        msg.contains("Use `handle.await` there") && !msg.contains("``"),
        "{msg}"
    );
}

// ----- pins: what the walkthrough found sound ----------------------------------------------

/// Pin: a submit (and a `run`) dropped while waiting for room queues nothing and drops
/// the future at once, in the three pools; the pool's counts are untouched.
#[tokio::test(start_paused = true)]
async fn pin_a_submit_dropped_while_waiting_for_room_loses_nothing_and_queues_nothing() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let counted = || support::Counted(Arc::clone(&dropped));
    let common = support::common_local(1, 0);
    let no_queue = NoQueueAioPool::builder()
        .max_concurrency(1)
        .process_wide(false)
        .build();
    let smart = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(0)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let _c = common.submit(std::future::pending::<()>()).await.unwrap();
    let _n = no_queue.submit(std::future::pending::<()>()).await.unwrap();
    let _s = smart.submit(std::future::pending::<()>).await.unwrap();
    let short = Duration::from_millis(10);
    let c = counted();
    assert!(
        tokio::time::timeout(short, common.submit(async move { drop(c) }))
            .await
            .is_err()
    );
    let c = counted();
    assert!(
        tokio::time::timeout(short, common.run(async move { drop(c) }))
            .await
            .is_err()
    );
    let c = counted();
    assert!(
        tokio::time::timeout(short, no_queue.submit(async move { drop(c) }))
            .await
            .is_err()
    );
    let c = counted();
    let recipe = move || {
        let _keep = &c;
        async {}
    };
    assert!(tokio::time::timeout(short, smart.submit(recipe))
        .await
        .is_err());
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        4,
        "each dropped submit dropped its task"
    );
    for stats in [common.stats(), no_queue.stats(), smart.stats()] {
        assert_eq!(
            (stats.submitted, stats.queued, stats.running),
            (1, 0, 1),
            "{stats:?}"
        );
    }
    common.cancel_all().await;
    no_queue.cancel_all().await;
    smart.cancel_all().await;
}

/// Pin: a `static` pool serves several `#[tokio::test]`-style runtimes at once, and
/// `blocking_submit` from a `spawn_blocking` thread of a current-thread runtime (the
/// default `#[tokio::test]`) runs its jobs there, also while the pool is full.
#[test]
fn pin_a_static_pool_serves_runtimes_and_their_spawn_blocking_threads() {
    static POOL: std::sync::LazyLock<CommonAioPool> = std::sync::LazyLock::new(|| {
        CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(0)
            .process_wide(false)
            .build()
    });
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            std::thread::spawn(move || {
                let rt = support::current_thread();
                rt.block_on(async move {
                    let own = POOL.run(async move { t }).await.unwrap();
                    let blocking = tokio::task::spawn_blocking(move || {
                        let hs: Vec<_> = (0..4u64)
                            .map(|i| POOL.blocking_submit(async move { t * 10 + i }).unwrap())
                            .collect();
                        hs.into_iter()
                            .map(|h| h.blocking_wait().unwrap())
                            .sum::<u64>()
                    });
                    let sum = tokio::time::timeout(Duration::from_secs(10), blocking)
                        .await
                        .expect("the spawn_blocking thread's jobs ran")
                        .unwrap();
                    (own, sum)
                })
            })
        })
        .collect();
    for (t, th) in threads.into_iter().enumerate() {
        let t = t as u64;
        assert_eq!(th.join().unwrap(), (t, 4 * t * 10 + 6));
    }
    until("the pool is idle", || POOL.stats().unfinished() == 0);
}

/// A `NoRuntime` refusal says what to do, in its `Display` (what an `unwrap` shows), not
/// only in the kind's docs: a pool made on a plain thread has no runtime to run a job.
#[test]
fn a_no_runtime_refusal_says_what_to_do() {
    let pool = CommonAioPool::new(1, 1);
    let err = pool.blocking_submit(async {}).unwrap_err();
    assert_eq!(err.kind(), nb_aiopool::SubmitErrorKind::NoRuntime);
    let err = err.to_string();
    assert!(err.contains("enter one first (Handle::enter)"), "{err}");
    let err = pool.try_submit(async {}).unwrap_err().to_string();
    assert!(err.contains("enter one first (Handle::enter)"), "{err}");
}
