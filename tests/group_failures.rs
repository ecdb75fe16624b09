//! Task groups, as a helper's review of them (2026-12-05, on b7c4278) tried them: a
//! cancel-on-error group's trip against its queued tasks and against a submit waiting for
//! room, the trip's own failing task, dropping a group whose results panic when dropped,
//! what a group that once held many tasks keeps after joining them, groups across
//! runtimes and re-runs. The faults' tests come first; the pins after them.

mod counting_alloc;
mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool::{CancelReason, NoQueueAioPool, SmartAioPool};
use support::{multi_thread_of, per_pool, Pool};
use tokio::time::{sleep, timeout};

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The panics this file's tasks raise on purpose (kept off stderr).
const PANICS: &[&str] = &["review: the failing task", "review: a result's drop"];

/// The three pools, private (outside the process-wide functions and the exit), with
/// `conc` slots and a queue of `queue` (none for NoQueue).
fn pools(conc: usize, queue: usize) -> Vec<Pool> {
    vec![
        Pool::Common(support::common_local(conc, queue)),
        Pool::NoQueue(
            NoQueueAioPool::builder()
                .max_concurrency(conc)
                .process_wide(false)
                .build(),
        ),
        Pool::Smart(
            SmartAioPool::builder()
                .max_concurrency(conc)
                .max_queue_size(queue)
                .process_wide(false)
                .auto_shutdown(false)
                .build(),
        ),
    ]
}

/// A job that counts its start (its first poll; a recipe's call for SmartAioPool) and
/// never ends.
fn counted_pending(
    started: &Arc<AtomicUsize>,
) -> impl Fn() -> BoxFut<Result<(), &'static str>> + Clone + Send + Sync + 'static {
    let started = started.clone();
    move || {
        let started = started.clone();
        Box::pin(async move {
            started.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
            Ok(())
        })
    }
}

// ----- faults ----------------------------------------------------------------------------

/// A cancel-on-error group that trips on a multi-thread runtime starts none of its queued
/// tasks: the trip aborts them all "at once". It aborts them in the order of its abort
/// registry (a slab: oldest first), so a running task's abort wakes its slot, which on
/// the other worker drops that task and takes the next queued one of the group before the
/// trip's loop reached it: the task starts (its future is polled, a SmartAioPool recipe
/// called) although its group failed before. The same fault as finding 166, in
/// `Trip::trip` (which 166's fix, for the drop and `abort_all`, did not touch).
#[test]
fn a_tripped_group_starts_none_of_its_queued_tasks() {
    let rt = multi_thread_of(2);
    let n = 200;
    let mut started_after = Vec::new();
    for kind in ["common", "smart"] {
        let mut worst = 0;
        for _ in 0..10 {
            let extra = rt.block_on(async {
                let pool = match kind {
                    "common" => Pool::Common(support::common_local(2, n)),
                    _ => Pool::Smart(
                        SmartAioPool::builder()
                            .max_concurrency(2)
                            .max_queue_size(n)
                            .process_wide(false)
                            .auto_shutdown(false)
                            .build(),
                    ),
                };
                let started = Arc::new(AtomicUsize::new(0));
                let job = counted_pending(&started);
                let (fail_tx, fail_rx) = tokio::sync::watch::channel(false);
                // The failing task (the oldest), then a running one, then `n` queued.
                let fail = move || {
                    let mut rx = fail_rx.clone();
                    Box::pin(async move {
                        let _ = rx.wait_for(|go| *go).await;
                        Err("bad")
                    }) as BoxFut<Result<(), &'static str>>
                };
                per_pool!(
                    &pool,
                    |p| {
                        let mut g = p.group().cancel_on_error(true);
                        g.submit(fail()).await.unwrap();
                        for _ in 0..=n {
                            g.submit(job()).await.unwrap();
                        }
                        trip_and_count(&pool, &started, fail_tx, g.len()).await
                    },
                    |p| {
                        let mut g = p.group().cancel_on_error(true);
                        g.submit(fail).await.unwrap();
                        for _ in 0..=n {
                            g.submit(job.clone()).await.unwrap();
                        }
                        trip_and_count(&pool, &started, fail_tx, g.len()).await
                    }
                )
            });
            worst = worst.max(extra);
        }
        started_after.push((kind, worst));
    }
    assert!(
        started_after.iter().all(|&(_, worst)| worst == 0),
        "queued tasks of a cancel-on-error group started after the group failed (per pool, \
         the most of {n} in one of 10 rounds): {started_after:?}"
    );
}

/// For [`a_tripped_group_starts_none_of_its_queued_tasks`]: once the running task has
/// started, fails the group and returns how many tasks started beyond that one.
async fn trip_and_count(
    pool: &Pool,
    started: &AtomicUsize,
    fail: tokio::sync::watch::Sender<bool>,
    len: usize,
) -> usize {
    assert_eq!(len, 202);
    let stats = || per_pool!(pool, |p| p.stats(), |p| p.stats());
    support::within("the running task's start", async {
        while started.load(Ordering::SeqCst) < 1 {
            sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    fail.send(true).unwrap();
    support::within("every task of the group to end", async {
        loop {
            let s = stats();
            if (s.running, s.queued) == (0, 0) {
                break;
            }
            sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    started.load(Ordering::SeqCst) - 1
}

/// A cancel-on-error group's submit that waits for room when a task of the group fails
/// is refused with `Closed` ("later submits are refused"), also when the room is held by
/// other work of the pool: the failure does not wake it, and `Group::admit` looks at the
/// trip only once it has room, so it waits for as long as the pool stays full (here, for
/// good: the failing task's place goes to a submitter ahead of it in line, and the pool's
/// other task never ends), although its group failed and every task of it was aborted.
#[tokio::test(start_paused = true)]
async fn a_submit_waiting_for_room_held_elsewhere_is_refused_when_its_group_fails() {
    let mut still_waiting = Vec::new();
    for pool in pools(2, 0) {
        let name = pool.name();
        let outside = Arc::new(AtomicUsize::new(0));
        let other = counted_pending(&outside);
        let waiter = {
            let other = other.clone();
            let pool = pool.clone();
            // One slot held for good by work outside the group.
            per_pool!(&pool, |p| drop(p.submit(other()).await.unwrap()), |p| drop(
                p.submit(other.clone()).await.unwrap()
            ));
            per_pool!(
                &pool,
                |p| {
                    let mut g = p.group::<Result<(), &str>>().cancel_on_error(true);
                    g.submit(async {
                        sleep(Duration::from_secs(1)).await;
                        Err("bad")
                    })
                    .await
                    .unwrap();
                    // Another submitter waits for room first (it takes the failing task's).
                    let p2 = p.clone();
                    let other2 = other.clone();
                    let waiter = tokio::spawn(async move {
                        drop(p2.submit(other2()).await.unwrap());
                    });
                    sleep(Duration::from_millis(10)).await;
                    match timeout(Duration::from_secs(60), g.submit(async { Ok(()) })).await {
                        Ok(refused) => assert!(refused.unwrap_err().is_closed(), "{name}"),
                        Err(_) => still_waiting.push(name),
                    }
                    assert_eq!(g.join_next().await.unwrap().unwrap(), Err("bad"));
                    waiter
                },
                |p| {
                    let mut g = p.group::<Result<(), &str>>().cancel_on_error(true);
                    g.submit(|| async {
                        sleep(Duration::from_secs(1)).await;
                        Err("bad")
                    })
                    .await
                    .unwrap();
                    let p2 = p.clone();
                    let other2 = other.clone();
                    let waiter = tokio::spawn(async move {
                        drop(p2.submit(other2).await.unwrap());
                    });
                    sleep(Duration::from_millis(10)).await;
                    match timeout(Duration::from_secs(60), g.submit(|| async { Ok(()) })).await {
                        Ok(refused) => assert!(refused.unwrap_err().is_closed(), "{name}"),
                        Err(_) => still_waiting.push(name),
                    }
                    assert_eq!(g.join_next().await.unwrap().unwrap(), Err("bad"));
                    waiter
                }
            )
        };
        waiter.await.unwrap();
        per_pool!(&pool, |p| p.cancel_all().await, |p| p.cancel_all().await);
    }
    assert!(
        still_waiting.is_empty(),
        "the group's submit still waited for room 59 s after a task of its group failed, \
         in these pools: {still_waiting:?}"
    );
}

/// The task of a cancel-on-error group that fails keeps its own result ("The failing task
/// keeps its own result"), also when it fails before its submit has stored its abort
/// handle in the group's registry: `Group::keep` finds the group tripped and aborts the
/// handle it is storing, which is the failing task's own. If the task's outcome is not
/// decided yet (a panicking task whose future is still being dropped, or an `Err` whose
/// slot has not yet published it) the failing task's result becomes `Aborted`, and the
/// error that failed the group is lost: every result of the group says `Aborted`.
///
/// The window is between the push (the engine's lock released) and `keep`, on the
/// submitting thread; it is held open here by a slow free on that thread
/// (`counting_alloc::slow_frees`), while the task runs on the other worker, panics (tripping the group) and
/// is dropped slowly (500 ms). Under load a preempted submitter opens the same window.
#[test]
fn the_failing_task_keeps_its_own_result_when_it_fails_before_its_submit_returns() {
    support::hide_panics(PANICS);
    /// Panics when polled (a hand-written future: the panic leaves it whole, to be dropped
    /// by the task's run after the panic is caught), and sleeps when dropped: the task's
    /// outcome stays open meanwhile, after the panic tripped the group.
    struct PanicsThenDropsSlowly;
    impl Future for PanicsThenDropsSlowly {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
            panic!("review: the failing task");
        }
    }
    impl Drop for PanicsThenDropsSlowly {
        fn drop(&mut self) {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let rt = multi_thread_of(2);
    let mut lost = Vec::new();
    for pool in pools(2, 2) {
        let name = pool.name();
        let r = rt.block_on(async {
            let fail = || PanicsThenDropsSlowly;
            per_pool!(
                &pool,
                |p| {
                    let mut g = p.group::<()>().cancel_on_panic(true);
                    counting_alloc::slow_frees(true);
                    let submitted = g.submit(fail()).await;
                    counting_alloc::slow_frees(false);
                    submitted.unwrap();
                    support::within("the failing task's result", g.join_next()).await
                },
                |p| {
                    let mut g = p.group::<()>().cancel_on_panic(true);
                    counting_alloc::slow_frees(true);
                    let submitted = g.submit(fail).await;
                    counting_alloc::slow_frees(false);
                    submitted.unwrap();
                    support::within("the failing task's result", g.join_next()).await
                }
            )
        });
        let e = r.unwrap().unwrap_err();
        if !e.is_panic() {
            lost.push((name, e.cancel_reason()));
        }
    }
    assert!(
        lost.is_empty(),
        "the failing task's own result is not its panic but a cancellation (per pool, the \
         reason): {lost:?}"
    );
}

/// A result whose `Drop` panics (with this file's message).
struct PanicsWhenDropped;

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        panic!("review: a result's drop");
    }
}

/// In a child process: a group of `pool` holding two finished, unjoined tasks whose
/// results panic when dropped, dropped; then exits with code 0.
fn drop_a_group_of_two_panicking_results(pool: &Pool) {
    let rt = support::current_thread();
    rt.block_on(async {
        per_pool!(
            pool,
            |p| {
                let mut g = p.group();
                for _ in 0..2 {
                    g.submit(async { PanicsWhenDropped }).await.unwrap();
                }
                sleep(Duration::from_millis(50)).await; // both ended
                drop(g);
            },
            |p| {
                let mut g = p.group();
                for _ in 0..2 {
                    g.submit(|| async { PanicsWhenDropped }).await.unwrap();
                }
                sleep(Duration::from_millis(50)).await;
                drop(g);
            }
        );
    });
    std::process::exit(0);
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    support::hide_panics(PANICS);
    let (scenario, _dir) = support::child_scenario();
    let at = match scenario.as_str() {
        "drop-two-panicking-results-common" => 0,
        "drop-two-panicking-results-no-queue" => 1,
        "drop-two-panicking-results-smart" => 2,
        other => panic!("unknown scenario {other}"),
    };
    let pool = pools(2, 2).swap_remove(at);
    drop_a_group_of_two_panicking_results(&pool);
}

/// Dropping a group drops the results of its finished tasks that nobody joined. A result
/// whose `Drop` panics: the panic comes out of the group's drop (out of a `timeout` around
/// `join_all`, say), unlike a detached task's result, which the pool drops quietly (the
/// panic hook shows it), and unlike tokio's `JoinSet`, whose handles drop their output
/// quietly. With two such results the second panics while the first unwinds (the group's
/// list of tasks drops its other elements during the unwinding): the process **aborts**.
/// The same when the group is dropped by a panic's unwinding with one such result.
#[test]
fn dropping_a_group_with_results_that_panic_when_dropped_does_not_abort_the_process() {
    let mut ended = Vec::new();
    for kind in ["common", "no-queue", "smart"] {
        let child = support::run_child(&format!("drop-two-panicking-results-{kind}"), 30);
        let _ = std::fs::remove_dir_all(&child.dir);
        if child.code != Some(0) {
            let last = child.stderr.lines().last().unwrap_or("").to_string();
            ended.push((kind, child.code, last));
        }
    }
    assert!(
        ended.is_empty(),
        "the process did not exit normally after dropping the group (per pool: its exit \
         code, None if still running at 30 s, -1 if killed by a signal; the last line of \
         its stderr): {ended:?}"
    );
}

/// The same with one such result, in this process: the group's drop does not panic.
#[test]
fn dropping_a_group_with_a_result_that_panics_when_dropped_does_not_panic() {
    support::hide_panics(PANICS);
    let rt = support::current_thread();
    let mut panicked = Vec::new();
    for pool in pools(2, 2) {
        let name = pool.name();
        let g = rt.block_on(async {
            per_pool!(
                &pool,
                |p| {
                    let mut g = p.group();
                    g.submit(async { PanicsWhenDropped }).await.unwrap();
                    sleep(Duration::from_millis(50)).await;
                    Box::new(g) as Box<dyn Send>
                },
                |p| {
                    let mut g = p.group();
                    g.submit(|| async { PanicsWhenDropped }).await.unwrap();
                    sleep(Duration::from_millis(50)).await;
                    Box::new(g) as Box<dyn Send>
                }
            )
        });
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(g)));
        if dropped.is_err() {
            panicked.push(name);
        }
    }
    assert!(
        panicked.is_empty(),
        "the group's drop panicked (a finished task's result panicked when dropped), in \
         these pools: {panicked:?}"
    );
}

/// A group that once held many tasks keeps nothing of them once they are joined: after
/// 100,000 tasks submitted, ended and joined one by one with `join_next` (the group kept
/// for more), the group holds what it held before. Each joined task's handle is freed,
/// but the group's in-order list (`InOrder::tasks`, a `Vec`) is only cleared (`clear`
/// and `drain` keep its capacity): 100,000 entries of 40-odd bytes stay allocated until
/// the group is dropped, and a cancel-on-error group's abort registry (a `Slab`) keeps
/// its 100,000 entries' room too. A long-lived group (a server's) holds the memory of its
/// largest burst for good. Counted on the test's thread (a current-thread runtime, where
/// the tasks are allocated and freed too).
#[test]
fn a_group_joined_after_a_burst_keeps_no_memory_of_it() {
    let rt = support::current_thread();
    let n: u64 = 100_000;
    let mut held = Vec::new();
    for watched in [false, true] {
        let kept = rt.block_on(async {
            let pool = support::common_local(2, 16);
            let mut g = pool.group::<Result<u64, ()>>();
            if watched {
                g = g.cancel_on_error(true);
            }
            // Warm-up: what the runtime, the pool and the group make once.
            for i in 0..1000 {
                g.submit(async move { Ok(i) }).await.unwrap();
            }
            while g.join_next().await.is_some() {}
            pool.wait().await;
            let before = counting_alloc::live_bytes();
            for i in 0..n {
                g.submit(async move { Ok(i) }).await.unwrap();
            }
            pool.wait().await;
            let mut sum = 0;
            while let Some(r) = g.join_next().await {
                sum += r.unwrap().unwrap();
            }
            assert_eq!(sum, (0..n).sum::<u64>());
            pool.wait().await;
            let kept = counting_alloc::live_bytes() - before;
            drop(g);
            kept
        });
        held.push((watched, kept));
    }
    assert!(
        held.iter().all(|&(_, kept)| kept < 64 * 1024),
        "a group that joined its {n} tasks still holds more bytes than before them (per \
         group, with cancel on error or not, the bytes): {held:?}"
    );
}

// ----- pins ------------------------------------------------------------------------------

/// Pin: a group of a CommonAioPool or NoQueueAioPool filled from a runtime that then
/// ends, joined on another runtime: every task's result comes once, in submission order
/// for `join_all`, the tasks cut off by their runtime's end (running or queued)
/// cancelled with `RuntimeShutdown`; a later submit from the new runtime runs there.
#[test]
fn pin_a_group_filled_on_a_runtime_that_ends_is_joined_on_another() {
    for pool in pools(1, 4).into_iter().take(2) {
        let name = pool.name();
        let rt1 = support::current_thread();
        // NoQueue holds one task: one running; Common one running and two queued.
        let n = if name == "common" { 3 } else { 1 };
        let mut g = rt1.block_on(async {
            per_pool!(
                &pool,
                |p| {
                    let mut g = p.group::<u32>();
                    for _ in 0..n {
                        g.submit(std::future::pending()).await.unwrap();
                    }
                    tokio::task::yield_now().await;
                    g
                },
                |_p| unreachable!()
            )
        });
        drop(rt1);
        let rt2 = support::current_thread();
        rt2.block_on(async {
            let fresh = per_pool!(
                &pool,
                |p| {
                    support::within("a submit after the runtime's end", async {
                        let mut g2 = p.group::<u32>();
                        g2.submit(async { 7 }).await.unwrap();
                        g2.join_all().await
                    })
                    .await
                },
                |_p| unreachable!()
            );
            assert_eq!(
                fresh.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
                [7]
            );
            assert_eq!(g.len(), n);
            let first = support::within("the first result", g.join_next_with_id()).await;
            let (_, r) = first.unwrap();
            assert_eq!(
                r.unwrap_err().cancel_reason(),
                Some(CancelReason::RuntimeShutdown),
                "{name}"
            );
            let rest = support::within("join_all", g.join_all()).await;
            assert_eq!(rest.len(), n - 1, "{name}");
            for r in rest {
                assert_eq!(
                    r.unwrap_err().cancel_reason(),
                    Some(CancelReason::RuntimeShutdown),
                    "{name}"
                );
            }
        });
    }
}

/// Pin: a cancel-on-error group of a SmartAioPool whose runs are cut off by the end of
/// their runtime: the cut-off trips nothing, the tasks run again when the group is joined
/// from another runtime (each stays one task of the group: one result each, with its
/// id), and a failure of a re-run trips the group, aborting the other task's re-run.
#[test]
fn pin_a_smart_groups_tasks_cut_off_and_run_again_stay_its_tasks() {
    let pool = SmartAioPool::builder()
        .max_concurrency(2)
        .max_queue_size(2)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let runs = Arc::new(AtomicUsize::new(0));
    let rt1 = support::current_thread();
    let (mut g, ids) = rt1.block_on(async {
        let mut g = pool.group::<Result<u32, &str>>().cancel_on_error(true);
        let r = runs.clone();
        // First run: never ends. Run again: fails after 50 ms.
        let fails = move || {
            let again = r.fetch_add(1, Ordering::SeqCst) > 0;
            Box::pin(async move {
                if !again {
                    std::future::pending::<()>().await;
                }
                sleep(Duration::from_millis(50)).await;
                Err("failed when run again")
            }) as BoxFut<Result<u32, &'static str>>
        };
        let a = g.submit(fails).await.unwrap();
        let b = g
            .submit(|| async {
                std::future::pending::<()>().await;
                Ok(1)
            })
            .await
            .unwrap();
        while runs.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        (g, [a, b])
    });
    drop(rt1);
    let rt2 = support::current_thread();
    rt2.block_on(async {
        let mut seen = Vec::new();
        while let Some((id, r)) = support::within("the re-runs", g.join_next_with_id()).await {
            seen.push((id, r));
        }
        assert_eq!(seen.len(), 2);
        let a = seen.iter().find(|(id, _)| *id == ids[0]).unwrap();
        let b = seen.iter().find(|(id, _)| *id == ids[1]).unwrap();
        assert_eq!(a.1.as_ref().unwrap(), &Err("failed when run again"));
        assert_eq!(
            b.1.as_ref().unwrap_err().cancel_reason(),
            Some(CancelReason::Aborted)
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // Tripped: later submits are refused.
        assert!(g.submit(|| async { Ok(2) }).await.unwrap_err().is_closed());
    });
}

/// Pin: a group used inside a job of its own full pool: its submit is refused with
/// `WouldDeadlock` (the future or recipe handed back, nothing left in the group or its
/// abort registry), with cancel-on-error or without; `try_submit` says full.
#[tokio::test]
async fn pin_a_group_submit_inside_a_job_of_its_full_pool_is_refused() {
    for pool in pools(1, 0) {
        let name = pool.name();
        let outcome = per_pool!(
            &pool,
            |p| {
                let inner = p.clone();
                p.run(async move {
                    let mut plain = inner.group::<Result<u32, ()>>();
                    let a = plain.submit(async { Ok(1) }).await.unwrap_err();
                    let mut watched = inner.group::<Result<u32, ()>>().cancel_on_error(true);
                    let b = watched.submit(async { Ok(2) }).await.unwrap_err();
                    let full = watched.try_submit(async { Ok(3) }).unwrap_err().is_full();
                    (
                        a.kind(),
                        b.kind(),
                        a.into_inner().await,
                        b.into_inner().await,
                        full,
                        plain.len() + watched.len(),
                    )
                })
                .await
                .map_err(drop)
            },
            |p| {
                let inner = p.clone();
                p.run(move || {
                    let inner = inner.clone();
                    async move {
                        let mut plain = inner.group::<Result<u32, ()>>();
                        let a = plain.submit(|| async { Ok(1) }).await.unwrap_err();
                        let mut watched = inner.group::<Result<u32, ()>>().cancel_on_error(true);
                        let b = watched.submit(|| async { Ok(2) }).await.unwrap_err();
                        let full = watched
                            .try_submit(|| async { Ok(3) })
                            .unwrap_err()
                            .is_full();
                        (
                            a.kind(),
                            b.kind(),
                            a.into_inner()().await,
                            b.into_inner()().await,
                            full,
                            plain.len() + watched.len(),
                        )
                    }
                })
                .await
                .map_err(drop)
            }
        );
        let Ok(outcome) = outcome else {
            panic!("{name}: the job failed");
        };
        use nb_aiopool::SubmitErrorKind::WouldDeadlock;
        assert_eq!(
            outcome,
            (WouldDeadlock, WouldDeadlock, Ok(1), Ok(2), true, 0),
            "{name}"
        );
    }
}

/// The same for results `join_all` has gathered when its future is dropped (a timeout
/// around it): the first task's result, which panics when dropped, is in hand while
/// `join_all` waits for the second; dropping the future drops it quietly, and does not
/// panic (found while noting what finding 295 left).
#[test]
fn dropping_join_all_with_a_gathered_result_that_panics_when_dropped_does_not_panic() {
    support::hide_panics(PANICS);
    let rt = support::current_thread();
    let mut panicked = Vec::new();
    for pool in pools(2, 2) {
        let name = pool.name();
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async {
                per_pool!(
                    &pool,
                    |p| {
                        let mut g = p.group();
                        g.submit(async { Some(PanicsWhenDropped) }).await.unwrap();
                        g.submit(std::future::pending::<Option<PanicsWhenDropped>>())
                            .await
                            .unwrap();
                        let joined = tokio::time::timeout(Duration::from_millis(50), g.join_all());
                        assert!(joined.await.is_err(), "the second task never ends");
                    },
                    |p| {
                        let mut g = p.group();
                        g.submit(|| async { Some(PanicsWhenDropped) })
                            .await
                            .unwrap();
                        g.submit(std::future::pending::<Option<PanicsWhenDropped>>)
                            .await
                            .unwrap();
                        let joined = tokio::time::timeout(Duration::from_millis(50), g.join_all());
                        assert!(joined.await.is_err(), "the second task never ends");
                    }
                )
            })
        }));
        if dropped.is_err() {
            panicked.push(name);
        }
    }
    assert!(
        panicked.is_empty(),
        "dropping join_all's future panicked (a gathered result panicked when dropped), in \
         these pools: {panicked:?}"
    );
}
