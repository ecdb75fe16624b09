//! Regression tests of a review of findings 201-202's fixes (2026-12-05, on d844f58),
//! RELIABILITY.md findings 203-204: `shutdown_all_smart_aiopools` probed its runtime for
//! timers with no rate-limited pool to serve (203: tokio's panic, caught, but an abort
//! under `panic = "abort"`); a `shutdown_timeout` caller whose re-run was still queued at
//! the deadline was abandoned (204).

#![allow(clippy::async_yields_async)] // a handle made on one runtime, awaited on another

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use nb_aiopool::{CancelReason, SmartAioPool};
use support::{append, lines, run_child};

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = support::child_scenario();
    match scenario.as_str() {
        // A program with no rate-limited pool at all: its pool runs on a timed
        // multi-thread runtime; a later panic hook counts panics; the documented Ctrl-C
        // path (`shutdown_all_smart_aiopools`) is run from a runtime without timers (a
        // signal thread's runtime needs only IO).
        "shutdown-all-timerless" => {
            let m = support::multi_thread_of(1);
            let pool = m.block_on(async {
                let pool = SmartAioPool::builder().max_concurrency(2).build();
                let h = pool.submit(|| async { 1u32 }).await.unwrap();
                assert_eq!(h.await.unwrap(), 1);
                pool
            });
            // Any earlier probe of the crate (here: a first shutdown_all on a timed
            // runtime, with nothing to shut down) installs its silencing hook; the
            // program's own hook comes later (logging set up after the pools, say).
            support::current_thread().block_on(async {});
            static HOOKED: AtomicUsize = AtomicUsize::new(0);
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                HOOKED.fetch_add(1, Ordering::SeqCst);
                previous(info);
            }));
            let timerless = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            timerless.block_on(nb_aiopool::shutdown_all_smart_aiopools());
            append(
                &dir.join("log"),
                &format!(
                    "returned hooked={} pending={}",
                    HOOKED.load(Ordering::SeqCst),
                    pool.pending_count()
                ),
            );
            drop(pool);
            drop(m);
        }
        _ => panic!("unknown scenario {scenario}"),
    }
}

/// Finding 203: since 201, `shutdown_all_smart_aiopools` made a tokio timer on its
/// runtime whatever the pools (none here is rate-limited): on a runtime without timers that
/// is tokio's "timers are disabled" panic, caught; a panic hook the program set after the
/// crate's first probe runs for it (finding 68 bounded that to rate-limited pools), and
/// with `panic = "abort"` the process aborts.
#[test]
fn shutdown_all_from_a_timerless_runtime_makes_no_timer_without_rate_limited_pools() {
    let child = run_child("shutdown-all-timerless", 30);
    let log = lines(&child.dir.join("log"));
    let _ = std::fs::remove_dir_all(&child.dir);
    assert_eq!(child.code, Some(0), "child: {}", child.stderr);
    assert_eq!(
        log,
        vec!["returned hooked=0 pending=0".to_owned()],
        "shutdown_all_smart_aiopools on a timerless runtime ran the program's panic hook \
         (a timer probe, with no rate-limited pool); stderr: {}",
        child.stderr
    );
}

// ----- 202: the spared caller ---------------------------------------------------------

static SPARE_POOL: LazyLock<SmartAioPool> = LazyLock::new(|| {
    SmartAioPool::builder()
        .name("review-fixes4-spared")
        .max_concurrency(2)
        .rate_limit(100, Duration::from_secs(1))
        .process_wide(false)
        .auto_shutdown(false)
        .build()
});

/// Finding 204: 202 made a spared caller cut off *after* the deadline re-run. Cut off
/// *before* it (its re-run queued when the deadline comes, here because the rate-limited
/// pool is stranded), the deadline's `cancel_all_sparing` drains it from the queue as
/// Abandoned: the task that called `shutdown_timeout` (a future made in the task and
/// spawned, as 199's test does) is abandoned, never re-run.
#[test]
fn a_spared_caller_queued_for_its_rerun_at_the_deadline_is_not_abandoned() {
    let runs = Arc::new(AtomicUsize::new(0));
    let report: Arc<Mutex<Option<tokio::task::JoinHandle<nb_aiopool::ShutdownReport>>>> =
        Arc::default();
    let m = support::multi_thread_of(1);
    let a = support::current_thread();
    let h = a.block_on(async {
        let (r, rep, mh) = (Arc::clone(&runs), Arc::clone(&report), m.handle().clone());
        let h = SPARE_POOL
            .submit(move || {
                let first = r.fetch_add(1, Ordering::SeqCst) == 0;
                let (rep, mh) = (Arc::clone(&rep), mh.clone());
                async move {
                    if first {
                        // Made here (this task is the caller), awaited elsewhere.
                        let j = mh.spawn(SPARE_POOL.shutdown_timeout(Duration::from_millis(300)));
                        *rep.lock().unwrap() = Some(j);
                        std::future::pending::<()>().await;
                    }
                    7u32
                }
            })
            .await
            .unwrap();
        // Another task, which the shutdown waits for and abandons at the deadline.
        SPARE_POOL
            .submit(std::future::pending::<()>)
            .await
            .unwrap()
            .detach();
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        h
    });
    // Its runtime ends before the deadline: the task is queued again (the pool knows no
    // other runtime, and a wait from `m` offers it none: a rate limit).
    drop(a);
    let before = format!(
        "{:?} runs={}",
        SPARE_POOL.stats(),
        runs.load(Ordering::SeqCst)
    );
    std::thread::sleep(Duration::from_millis(700));
    let after = format!(
        "{:?} runs={}",
        SPARE_POOL.stats(),
        runs.load(Ordering::SeqCst)
    );
    eprintln!("before deadline: {before}\nafter deadline: {after}");
    let b = support::current_thread();
    let out = b.block_on(async { tokio::time::timeout(Duration::from_secs(5), h).await });
    let j = report.lock().unwrap().take().unwrap();
    let rep = m.block_on(async { tokio::time::timeout(Duration::from_secs(5), j).await });
    match out {
        Ok(Ok(v)) => {
            eprintln!(
                "report {:?}",
                rep.map(|r| r.map(|r| (r.finished(), r.abandoned())))
            );
            assert_eq!(v, 7)
        }
        Ok(Err(e)) => panic!(
            "the caller of shutdown_timeout, queued for its re-run at the deadline, ended {:?} \
             (runs={}; report {:?})",
            e.cancel_reason(),
            runs.load(Ordering::SeqCst),
            rep.map(|r| r.map(|r| (r.finished(), r.abandoned())))
        ),
        Err(_) => panic!("its handle did not resolve in 5 s"),
    }
    let _ = CancelReason::Abandoned;
}
