//! Findings 29–31 of RELIABILITY.md, found on 521b631 by a review of that day's fixes
//! (6bd262d..521b631); each test here failed there, all are fixed. The process-exit tests
//! re-run this binary as a child process, as `tests/runtime_ends.rs` does.

// Some tasks hand back handles, to await elsewhere.
#![allow(clippy::async_yields_async)]

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use nb_aiopool::{CommonAioPool, SmartAioPool};
use support::{append, child_scenario, lines, run_child};

// ----- A. the exit take-over: other jobs start while a busy run is still in its poll ------

static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static POOL: OnceLock<SmartAioPool> = OnceLock::new();
static DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

/// Registered before the crate's own at-exit hook, so it runs after it (atexit handlers
/// run in reverse order): records the pool's counters once the take-over is done.
extern "C" fn record_stats_at_exit() {
    if let (Some(pool), Some(dir)) = (POOL.get(), DIR.get()) {
        let s = pool.stats();
        append(
            &dir.join("stats"),
            &format!(
                "completed={} panicked={} cancelled={}",
                s.completed, s.panicked, s.cancelled
            ),
        );
    }
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = child_scenario();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match scenario.as_str() {
        // A pool of one: A is inside one long poll on a worker thread, B is queued behind
        // it, and main calls `process::exit`.
        "pool-of-one" => {
            rt.block_on(async {
                let pool = SmartAioPool::builder().max_concurrency(1).build();
                for name in ["A", "B"] {
                    let d = dir.clone();
                    pool.submit(move || {
                        let d = d.clone();
                        async move {
                            let before = ACTIVE.fetch_add(1, Ordering::SeqCst);
                            append(
                                &d.join("starts"),
                                &format!("{name} running beside: {before}"),
                            );
                            if name == "A" {
                                // Work done inside one poll (a synchronous call).
                                std::thread::sleep(Duration::from_millis(1500));
                            }
                            ACTIVE.fetch_sub(1, Ordering::SeqCst);
                        }
                    })
                    .await
                    .unwrap()
                    .detach();
                }
                support::appended(dir.join("starts")).await;
                std::process::exit(0);
            });
        }
        // A task inside one long poll that ends in a panic, when main calls `exit`.
        "busy-panics" => {
            DIR.set(dir.clone()).unwrap();
            // Before the pool registers the crate's hook: ours then runs after it.
            assert_eq!(unsafe { atexit(record_stats_at_exit) }, 0);
            rt.block_on(async {
                let pool = POOL.get_or_init(|| SmartAioPool::builder().max_concurrency(1).build());
                let d = dir.clone();
                pool.submit(move || {
                    let d = d.clone();
                    async move {
                        append(&d.join("starts"), "start");
                        std::thread::sleep(Duration::from_millis(1000));
                        panic!("the task fails after its work");
                    }
                })
                .await
                .unwrap()
                .detach();
                support::appended(dir.join("starts")).await;
                std::process::exit(0);
            });
        }
        // As "pool-of-one", and a plain thread submits C while the take-over waits for
        // A's poll to return.
        "submit-during-wait" => {
            rt.block_on(async {
                let pool = SmartAioPool::builder().max_concurrency(1).build();
                let record = |name: &'static str, busy_ms: u64| {
                    let d = dir.clone();
                    move || {
                        let d = d.clone();
                        async move {
                            let before = ACTIVE.fetch_add(1, Ordering::SeqCst);
                            append(
                                &d.join("starts"),
                                &format!("{name} running beside: {before}"),
                            );
                            std::thread::sleep(Duration::from_millis(busy_ms));
                            ACTIVE.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                };
                pool.submit(record("A", 1500)).await.unwrap().detach();
                support::appended(dir.join("starts")).await;
                let (p, c) = (pool.clone(), record("C", 0));
                std::thread::spawn(move || {
                    // By then main is in `exit`, and the take-over waits for A.
                    std::thread::sleep(Duration::from_millis(300));
                    p.blocking_submit(c).unwrap().detach();
                });
                std::process::exit(0);
            });
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// The exit take-over resets `running` to 0 and starts queued jobs on the exit runtime at
/// once, while it still waits for a run that is inside a poll on another thread: in a
/// pool of one, B runs while A is still running.
#[test]
fn exit_take_over_keeps_max_concurrency_while_a_busy_run_finishes_its_poll() {
    let c = run_child("pool-of-one", 30);
    let starts = lines(&c.dir.join("starts"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "child: {:?}\nstderr: {}", c.code, c.stderr);
    assert!(
        starts.iter().all(|l| l.ends_with("running beside: 0")),
        "a pool of one ran two tasks at once during the exit take-over: {starts:?}"
    );
}

/// While the exit take-over waits for a run still inside a poll on another thread, a
/// submit from a thread that goes on must not start a job beside it: in a pool of one, C
/// waits until A's poll has returned.
#[test]
fn a_submit_during_the_exit_take_overs_wait_starts_nothing_beside_the_busy_run() {
    let c = run_child("submit-during-wait", 30);
    let starts = lines(&c.dir.join("starts"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "child: {:?}\nstderr: {}", c.code, c.stderr);
    assert!(
        starts.iter().any(|l| l.starts_with('C')),
        "C never ran: {starts:?}\nstderr: {}",
        c.stderr
    );
    assert!(
        starts.iter().all(|l| l.ends_with("running beside: 0")),
        "a pool of one ran two tasks at once during the exit take-over: {starts:?}"
    );
}

/// A run busy in one poll at exit that panics in that poll: the take-over waits for the
/// poll, then queues the task again; the re-run finds the outcome decided and reports
/// it as `Completed`, so the pool counts a completion for a task that panicked.
#[test]
fn a_busy_run_that_panics_at_exit_is_counted_as_panicked() {
    let c = run_child("busy-panics", 30);
    let stats = lines(&c.dir.join("stats"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "child: {:?}\nstderr: {}", c.code, c.stderr);
    assert_eq!(
        stats,
        ["completed=0 panicked=1 cancelled=0"],
        "stderr: {}",
        c.stderr
    );
}

// ----- B. the nested-wait check: a wait that outlives its waiting task -------------------

/// A task polls a handle of its own pool once and hands it on (returns it); its counted
/// wait stays in the map under its id after it ended. A later task that awaits a queued
/// task of the pool, while the other slot runs a task that is not waiting at all, is then
/// wrongly cancelled with `WouldDeadlock`.
#[test]
fn a_wait_that_outlives_its_waiting_task_does_not_make_the_deadlock_check_fire() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), async {
            let pool = CommonAioPool::builder()
                .max_concurrency(2)
                .max_queue_size(10)
                .process_wide(false)
                .build();
            let (release_x, rx_x) = tokio::sync::oneshot::channel::<()>();
            // W: submits X (runs beside it, waits for an outside signal), polls X's
            // handle once, and returns it.
            let p = pool.clone();
            let w = pool
                .submit(async move {
                    let mut hx = p
                        .submit(async move {
                            let _ = rx_x.await;
                        })
                        .await
                        .unwrap();
                    let polled = tokio::time::timeout(Duration::from_millis(20), &mut hx).await;
                    assert!(polled.is_err(), "X does not end by itself");
                    hx
                })
                .await
                .unwrap();
            let hx = w.await.unwrap();
            // W has ended: X alone runs, waiting for us, not for the pool.
            while pool.stats().running != 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Y: takes the other slot, submits Q (queued: the pool is full) and awaits it.
            let p = pool.clone();
            let y = pool
                .submit(async move {
                    let hq = p.submit(async { 7u32 }).await.unwrap();
                    hq.await
                })
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            // X can end: Q then starts, and Y gets its value.
            let _ = release_x.send(());
            let y = y.await.unwrap();
            drop(hx);
            y
        })
        .await
    });
    let out = out.expect("timed out");
    assert!(
        matches!(out, Ok(7)),
        "Y's wait for Q was broken although X was not waiting: {out:?}"
    );
}
