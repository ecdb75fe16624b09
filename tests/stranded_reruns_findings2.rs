//! Regression tests of a review of findings 201-202's fixes (2026-12-05, on d844f58),
//! RELIABILITY.md findings 203-204: `shutdown_all_smart_aiopools` probed its runtime for
//! timers with no rate-limited pool to serve (203: tokio's panic, caught, but an abort
//! under `panic = "abort"`); a `shutdown_timeout` caller whose re-run was still queued at
//! the deadline was abandoned (204). And from a review of those fixes: a healthy
//! rate-limited pool still made it probe (205), with that review's probes of 204 (a spared
//! caller queued for its re-run, with priorities, keys, aborts and a later `cancel_all`).

#![allow(clippy::async_yields_async)] // a handle made on one runtime, awaited on another

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{CancelReason, SmartAioPool};
use support::{append, came_by, lines, run_child, TooLate};

/// A program whose SmartAioPools (one plain, and a rate-limited one if `limited`) ran on a
/// timed runtime, that then sets a counting panic hook (after the crate's first probe, as
/// logging set up after the pools would) and runs the documented Ctrl-C path,
/// `shutdown_all_smart_aiopools`, from a runtime without timers (a signal thread's needs
/// only IO): logs what the hook saw.
fn shutdown_all_timerless(dir: &std::path::Path, limited: bool) {
    let m = support::multi_thread_of(1);
    let pools = m.block_on(async {
        let mut pools = vec![SmartAioPool::builder().max_concurrency(2).build()];
        if limited {
            pools.push(
                SmartAioPool::builder()
                    .max_concurrency(2)
                    .rate_limit(100, Duration::from_secs(1))
                    .build(),
            );
        }
        for pool in &pools {
            let h = pool.submit(|| async { 1u32 }).await.unwrap();
            assert_eq!(h.await.unwrap(), 1);
        }
        pools
    });
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
            pools.iter().map(SmartAioPool::pending_count).sum::<usize>()
        ),
    );
    drop(pools);
    drop(m);
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = support::child_scenario();
    match scenario.as_str() {
        // No rate-limited pool at all (203), or a healthy one (205).
        "shutdown-all-timerless" => shutdown_all_timerless(&dir, false),
        "shutdown-all-timerless-with-a-rate-limited-pool" => shutdown_all_timerless(&dir, true),
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
    assert_no_panic_seen("shutdown-all-timerless");
}

/// Runs `scenario` (a `shutdown_all_timerless`): it must return, with every task ended,
/// and with no panic seen by the program's hook (no timer probe on the timerless runtime).
fn assert_no_panic_seen(scenario: &str) {
    let child = run_child(scenario, 30);
    let log = lines(&child.dir.join("log"));
    let _ = std::fs::remove_dir_all(&child.dir);
    assert_eq!(child.code, Some(0), "child: {}", child.stderr);
    assert_eq!(
        log,
        vec!["returned hooked=0 pending=0".to_owned()],
        "{scenario}: shutdown_all_smart_aiopools on a timerless runtime ran the program's \
         panic hook (a timer probe it did not need); stderr: {}",
        child.stderr
    );
}

// ----- 202: the spared caller ---------------------------------------------------------

/// What a `shutdown_timeout` called by a task records: when the call was made (its
/// deadline is 300 ms after its first poll, so not before this plus 300 ms) and the task
/// awaiting it (spawned on `m`), whose end is the deadline's effect.
type Shutdown = Arc<
    Mutex<
        Option<(
            std::time::Instant,
            tokio::task::JoinHandle<nb_aiopool::ShutdownReport>,
        )>,
    >,
>;

/// The shutdown's 300 ms timeout.
const DEADLINE: Duration = Duration::from_millis(300);

/// Waits (bounded) for the deadline of the shutdown `report` holds to have been applied:
/// the task awaiting it ended (it waits for jobs that never end until the deadline
/// abandons them). Not a fixed time: on a loaded machine `m`'s worker or timer may run
/// late, and `b` would then be offered to the stranded pool before the deadline.
fn until_the_deadline_applied(report: &Shutdown) {
    support::until("the shutdown's deadline applied (its report made)", || {
        (report.lock().unwrap().as_ref()).is_some_and(|(_, j)| j.is_finished())
    });
}

/// `Err(TooLate)` unless `a` ended (this is called after `drop(a)`) before the deadline of
/// the shutdown `report` holds: a run whose caller was cut off after the deadline plays
/// 202's case (spared while running), not 204's (queued for its re-run at the deadline).
fn a_ended_before_the_deadline(report: &Shutdown) -> Result<(), TooLate> {
    let made = report
        .lock()
        .unwrap()
        .as_ref()
        .expect("shutdown_timeout called")
        .0;
    came_by(made + DEADLINE)
}

/// Finding 204: 202 made a spared caller cut off *after* the deadline re-run. Cut off
/// *before* it (its re-run queued when the deadline comes, here because the rate-limited
/// pool is stranded), the deadline's `cancel_all_sparing` drains it from the queue as
/// Abandoned: the task that called `shutdown_timeout` (a future made in the task and
/// spawned, as 199's test does) is abandoned, never re-run. A run whose runtime `a` ended
/// only after the deadline (a loaded machine) is played again (`in_time`), with a fresh
/// pool: the first `shutdown_timeout` closes a pool for good.
#[test]
fn a_spared_caller_queued_for_its_rerun_at_the_deadline_is_not_abandoned() {
    support::in_time("the spared caller queued at the deadline", || {
        let pool: &'static SmartAioPool = Box::leak(Box::new(
            SmartAioPool::builder()
                .name("review-fixes4-spared")
                .max_concurrency(2)
                .rate_limit(100, Duration::from_secs(1))
                .process_wide(false)
                .auto_shutdown(false)
                .build(),
        ));
        let runs = Arc::new(AtomicUsize::new(0));
        let report: Shutdown = Arc::default();
        let m = support::multi_thread_of(1);
        let a = support::current_thread();
        let h = a.block_on(async {
            let (r, rep, mh) = (Arc::clone(&runs), Arc::clone(&report), m.handle().clone());
            let h = pool
                .submit(move || {
                    let first = r.fetch_add(1, Ordering::SeqCst) == 0;
                    let (rep, mh) = (Arc::clone(&rep), mh.clone());
                    async move {
                        if first {
                            // Made here (this task is the caller), awaited elsewhere.
                            let made = std::time::Instant::now();
                            let j = mh.spawn(pool.shutdown_timeout(DEADLINE));
                            *rep.lock().unwrap() = Some((made, j));
                            std::future::pending::<()>().await;
                        }
                        7u32
                    }
                })
                .await
                .unwrap();
            // Another task, which the shutdown waits for and abandons at the deadline.
            pool.submit(std::future::pending::<()>)
                .await
                .unwrap()
                .detach();
            support::reach(&runs, 1, Duration::from_secs(10)).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            h
        });
        // Its runtime ends before the deadline: the task is queued again (the pool knows
        // no other runtime, and a wait from `m` offers it none: a rate limit).
        drop(a);
        a_ended_before_the_deadline(&report)?;
        let before = format!("{:?} runs={}", pool.stats(), runs.load(Ordering::SeqCst));
        until_the_deadline_applied(&report);
        let after = format!("{:?} runs={}", pool.stats(), runs.load(Ordering::SeqCst));
        eprintln!("before deadline: {before}\nafter deadline: {after}");
        let b = support::current_thread();
        let out = b.block_on(async { tokio::time::timeout(Duration::from_secs(5), h).await });
        let (_, j) = report.lock().unwrap().take().unwrap();
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
                "the caller of shutdown_timeout, queued for its re-run at the deadline, ended \
                 {:?} (runs={}; report {:?})",
                e.cancel_reason(),
                runs.load(Ordering::SeqCst),
                rep.map(|r| r.map(|r| (r.finished(), r.abandoned())))
            ),
            Err(_) => panic!("its handle did not resolve in 5 s"),
        }
        let _ = CancelReason::Abandoned;
        Ok(())
    });
}

// ----- a review of 203-204's fixes (finding 205) ----------------------------------------

/// Finding 205: 203 left the probe for any program that has a rate-limited pool: a healthy
/// one (its runtime alive, nothing stranded) still makes `shutdown_all_smart_aiopools` on a
/// timerless runtime trip tokio's panic (the program's hook runs; `panic = "abort"`
/// aborts). Before 201 no probe was made; only a stranded pool needs it.
#[test]
fn shutdown_all_from_a_timerless_runtime_with_a_healthy_rate_limited_pool_makes_no_timer() {
    assert_no_panic_seen("shutdown-all-timerless-with-a-rate-limited-pool");
}

// ----- 204 probes -------------------------------------------------------------------

/// A stranded, rate-limited, prioritised, keyed pool: the caller of `shutdown_timeout`
/// (priority -5, key "k") is queued for its re-run at the deadline beside queued jobs of
/// higher priority and the same key. Returns (pool, caller handle, report join, runs), once
/// the deadline has been applied; `Err(TooLate)` if the caller's runtime ended only after
/// the deadline (a loaded machine: the probe plays it again, see `in_time`).
#[allow(clippy::type_complexity)]
fn spared_queued_setup(
    name: &str,
) -> Result<
    (
        &'static SmartAioPool,
        nb_aiopool::TaskHandle<u32>,
        tokio::task::JoinHandle<nb_aiopool::ShutdownReport>,
        Arc<AtomicUsize>,
        tokio::runtime::Runtime,
    ),
    TooLate,
> {
    let pool: &'static SmartAioPool = Box::leak(Box::new(
        SmartAioPool::builder()
            .name(name)
            .max_concurrency(2)
            .max_per_key(2)
            .rate_limit(100, Duration::from_secs(1))
            .process_wide(false)
            .auto_shutdown(false)
            .build(),
    ));
    let runs = Arc::new(AtomicUsize::new(0));
    let report: Shutdown = Arc::default();
    let m = support::multi_thread_of(1);
    let a = support::current_thread();
    // Opened once the third job is queued: the caller calls `shutdown_timeout` (which
    // closes the pool) then, not after a fixed time its runtime's thread may overrun.
    let third_queued = support::Gate::new();
    let h = a.block_on(async {
        let (r, rep, mh) = (Arc::clone(&runs), Arc::clone(&report), m.handle().clone());
        let rep_seen = Arc::clone(&report);
        let gate = third_queued.clone();
        let h = pool
            .submit_with(
                move || {
                    let first = r.fetch_add(1, Ordering::SeqCst) == 0;
                    let (rep, mh, queued) = (Arc::clone(&rep), mh.clone(), gate.wait());
                    async move {
                        if first {
                            // After the third job is queued.
                            queued.await;
                            let made = std::time::Instant::now();
                            let j = mh.spawn(pool.shutdown_timeout(DEADLINE));
                            *rep.lock().unwrap() = Some((made, j));
                            std::future::pending::<()>().await;
                        }
                        7u32
                    }
                },
                nb_aiopool::SubmitOptions::new().priority(-5).key("k"),
            )
            .await
            .unwrap();
        pool.submit(std::future::pending::<()>)
            .await
            .unwrap()
            .detach();
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Queued (both slots busy), higher priority, same key: abandoned at the deadline.
        pool.submit_with(
            std::future::pending::<()>,
            nb_aiopool::SubmitOptions::new().priority(10).key("k"),
        )
        .await
        .unwrap()
        .detach();
        eprintln!("set up: {:?}", pool.stats());
        third_queued.open();
        // The caller, let through, calls `shutdown_timeout` at its next poll (on `a`).
        let called = async {
            while rep_seen.lock().unwrap().is_none() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        support::within("shutdown_timeout called", called).await;
        h
    });
    drop(a);
    a_ended_before_the_deadline(&report)?;
    until_the_deadline_applied(&report);
    let (_, j) = report.lock().unwrap().take().unwrap();
    Ok((pool, h, j, runs, m))
}

fn bounded<F: std::future::Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), f).await })
        .expect("timed out")
}

/// Probe of 204's fix: the spared caller queued for its re-run beside queued jobs of
/// higher priority and its key re-runs once, returns its value, and the report counts the
/// two others abandoned; the pool ends with nothing pending.
#[test]
fn probe_spared_queued_with_priorities_and_keys_reruns_and_counts() {
    support::in_time("the spared caller with priorities and keys", || {
        let (pool, h, j, runs, m) = spared_queued_setup("rf5-prio")?;
        eprintln!("after deadline: {:?}", pool.stats());
        let b = support::current_thread();
        let v = bounded(&b, h);
        let rep = bounded(&m, j).unwrap();
        eprintln!(
            "v={v:?} report=({}, {}) stats={:?}",
            rep.finished(),
            rep.abandoned(),
            pool.stats()
        );
        assert_eq!(v.unwrap(), 7);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(rep.abandoned(), 2);
        bounded(&b, pool.wait());
        assert_eq!(pool.pending_count(), 0);
        assert_eq!(pool.stats().unfinished(), 0);
        Ok(())
    });
}

/// Probe of 204's fix: an abort of the spared caller queued for its re-run ends it
/// `Aborted`; the report counts the two others abandoned, and the pool ends.
#[test]
fn probe_spared_queued_then_aborted() {
    support::in_time("the spared caller aborted", || {
        let (pool, h, j, _runs, m) = spared_queued_setup("rf5-abort")?;
        h.abort();
        let b = support::current_thread();
        let v = bounded(&b, h);
        assert_eq!(v.unwrap_err().cancel_reason(), Some(CancelReason::Aborted));
        let rep = bounded(&m, j).unwrap();
        assert_eq!(rep.abandoned(), 2);
        bounded(&b, pool.wait());
        assert_eq!(pool.pending_count(), 0);
        eprintln!("stats={:?}", pool.stats());
        assert_eq!(pool.stats().unfinished(), 0);
        Ok(())
    });
}

/// Probe of 204's fix: a later `cancel_all` (from a plain thread, which offers the
/// stranded pool no runtime) still reaches the spared caller queued for its re-run.
#[test]
fn probe_spared_queued_then_cancel_all() {
    support::in_time("the spared caller then cancel_all", || {
        let (pool, h, j, runs, m) = spared_queued_setup("rf5-cancel")?;
        let b = support::current_thread();
        // From a plain thread: nothing offered, the kept job stays queued till cancel_all.
        let c = pool.cancel_all();
        bounded(&b, c);
        let v = bounded(&b, h);
        eprintln!(
            "v={:?} runs={}",
            v.as_ref().err().map(|e| e.cancel_reason()),
            runs.load(Ordering::SeqCst)
        );
        assert!(v.is_err());
        let rep = bounded(&m, j).unwrap();
        assert_eq!(rep.abandoned(), 2);
        assert_eq!(pool.pending_count(), 0);
        Ok(())
    });
}
