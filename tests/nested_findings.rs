//! Nested use of a pool from its own jobs, as a review of the deadlock detection tried it
//! (2026-12-05, on ee06310): nested submits into a full pool (also by `join!`, groups and
//! streams) refused with the task handed back, nesting with room never refused, an elastic
//! pool not refused while it can grow, two jobs awaiting each other's queued children at
//! once (one refusal); and the regression tests of what it found (RELIABILITY.md,
//! findings 194-197): after a shrink the breaker woke only the handles' wakers, not the
//! job it picked (194); a cycle of running waiters closed by a shrink was never broken
//! (195); a started task can be cancelled as `WouldDeadlock` (196, docs); weights, like
//! keys, make deadlocks the check does not see (197, docs); and, from a review of those
//! fixes, a cycle pick that outlived its cycle blocked the break of the deadlock the pool
//! then was in (198), with that review's probes of cycles (three jobs, a grow after the
//! pick, a pick that never polls, SmartAioPool).

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use nb_aiopool::{CancelReason, CommonAioPool, SmartAioPool, SubmitOptions, TaskError, TaskHandle};
use tokio::sync::oneshot;

type R = Result<u32, Option<CancelReason>>;

fn reason(r: Result<u32, TaskError>) -> R {
    r.map_err(|e| e.cancel_reason())
}

/// `Some(output)`, or `None` on a hang (paused time: 60 s pass at once when idle).
async fn bounded<F: Future>(fut: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .ok()
}

/// Polls `h` once inside the current task (counts the wait if in a job of its pool).
async fn poll_once(h: &mut TaskHandle<u32>) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *h).poll(cx).is_ready())).await
}

/// A pool of `conc` slots (a queue of 4) with a filler job held by `gate`: shrunk by one
/// and the gate opened by the caller, it leaves the jobs submitted after it holding every
/// slot.
async fn pool_with_filler(conc: usize) -> (CommonAioPool, support::Gate) {
    let pool = support::common_local(conc, 4);
    let gate = support::Gate::default();
    let g = gate.clone();
    pool.submit(async move { g.wait().await })
        .await
        .unwrap()
        .detach();
    (pool, gate)
}

/// Shrinks `pool` to one slot and opens `gate` (its filler ends), leaving `parent` the
/// only slot while it waits on its queued child: the pool must refuse that wait.
async fn shrink_and_expect_refusal(
    pool: CommonAioPool,
    gate: support::Gate,
    parent: TaskHandle<R>,
) {
    pool.set_max_concurrency(1);
    gate.open(); // the other job ends: the parent holds the only slot
    let r = bounded(parent).await;
    pool.cancel_all().await;
    let r = r.expect("hang: the parent holds the only slot and waits for its queued child");
    assert_eq!(r.unwrap(), Err(Some(CancelReason::WouldDeadlock)));
}

/// Finding 194: a shrink leaves the parent holding the only slot, waiting on its queued child; the
/// parent polled the child's handle (counted) and then handed it to a spawned tokio task,
/// whose result it awaits. The pool picks the parent and "wakes it" (TaskHandle docs):
/// it wakes the handle's waker (the spawned task's), which polls outside the pool, so the
/// parent is never polled, and nothing is refused or cancelled.
#[tokio::test(start_paused = true)]
async fn a_counted_handle_moved_to_a_spawned_task_is_not_left_hanging_after_a_shrink() {
    let (pool, gate) = pool_with_filler(2).await;
    let p = pool.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let parent = pool
        .submit(async move {
            let mut child = p.submit(async { 7u32 }).await.unwrap();
            assert!(!poll_once(&mut child).await, "queued: the pool is full");
            let spawned = tokio::spawn(child);
            let _ = ready_tx.send(());
            reason(spawned.await.unwrap())
        })
        .await
        .unwrap();
    ready_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await; // the spawned task polls the child
    shrink_and_expect_refusal(pool, gate, parent).await;
}

/// Finding 194: the same with the handle polled later with a no-op waker (`now_or_never`) while the
/// parent waits on something the child's end would signal.
#[tokio::test(start_paused = true)]
async fn a_counted_handle_polled_with_a_noop_waker_is_not_left_hanging_after_a_shrink() {
    let (pool, gate) = pool_with_filler(2).await;
    let p = pool.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let parent = pool
        .submit(async move {
            // The child signals when it runs, or (the sender dropped) when it is dropped.
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let mut child = p
                .submit(async move {
                    let _ = done_tx.send(());
                    7u32
                })
                .await
                .unwrap();
            assert!(!poll_once(&mut child).await, "queued: the pool is full");
            // Looks at the child without registering a useful waker.
            assert!((&mut child).now_or_never().is_none());
            let _ = ready_tx.send(());
            let _ = done_rx.await;
            reason(child.await)
        })
        .await
        .unwrap();
    ready_rx.await.unwrap();
    shrink_and_expect_refusal(pool, gate, parent).await;
}

/// Finding 196: a parent awaits a task A that has started and itself waits on a queued task B: the
/// check at the parent's wait cancels A, which was running. `CancelReason::WouldDeadlock`
/// says the cancelled task "was still queued behind them: it could never start".
#[tokio::test(start_paused = true)]
async fn a_running_task_cancelled_by_the_nested_wait_check() {
    let pool = support::common_local(2, 4);
    let p = pool.clone();
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, f) = (started.clone(), finished.clone());
    let parent = pool
        .submit(async move {
            let p2 = p.clone();
            let (waiting_tx, waiting_rx) = tokio::sync::oneshot::channel();
            let a = p
                .submit(async move {
                    s.store(true, std::sync::atomic::Ordering::SeqCst);
                    let mut b = p2.submit(async { 1u32 }).await.unwrap(); // queued
                    assert!(!poll_once(&mut b).await);
                    let _ = waiting_tx.send(());
                    let r = b.await;
                    f.store(true, std::sync::atomic::Ordering::SeqCst);
                    reason(r).unwrap_or(99) + 10
                })
                .await
                .unwrap();
            waiting_rx.await.unwrap();
            reason(a.await)
        })
        .await
        .unwrap();
    let r = bounded(parent).await.expect("hang").unwrap();
    pool.shutdown().await;
    println!(
        "parent saw {r:?}; A started: {}, A finished: {}",
        started.load(std::sync::atomic::Ordering::SeqCst),
        finished.load(std::sync::atomic::Ordering::SeqCst)
    );
    // Pins the behaviour the docs now describe: A, started and waiting on the queued B,
    // is the task cancelled with WouldDeadlock (the docs said "still queued ... could
    // never start"; doc finding).
    assert!(started.load(std::sync::atomic::Ordering::SeqCst));
    assert!(!finished.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(r, Err(Some(CancelReason::WouldDeadlock)));
}

/// Finding 197: weights: a parent of weight 2 in a pool of weight capacity 2 awaits a child of weight
/// 1; slots are free, the child never starts. Limitation 51 says "keys or weights"; the
/// user docs (README, TaskHandle, weight_capacity) mention keys only.
#[tokio::test(start_paused = true)]
async fn a_child_held_back_by_weight_hangs_its_parent() {
    let pool = CommonAioPool::builder()
        .max_concurrency(4)
        .max_queue_size(4)
        .weight_capacity(2)
        .process_wide(false)
        .build();
    let p = pool.clone();
    let parent = pool
        .submit_with(
            async move {
                let child = p
                    .submit_with(async { 1u32 }, SubmitOptions::new().weight(1))
                    .await
                    .unwrap();
                reason(child.await)
            },
            SubmitOptions::new().weight(2),
        )
        .await
        .unwrap();
    let r = bounded(parent).await;
    pool.cancel_all().await;
    // Pins the limitation the docs now state at `weight_capacity` (doc finding): the
    // parent waits for ever (60 s of paused time here), no WouldDeadlock.
    assert!(
        r.is_none(),
        "the weight deadlock was broken after all: {r:?}"
    );
}

/// Elastic SmartAioPool, min_workers 0: a parent awaiting its child has room to grow.
#[tokio::test(start_paused = true)]
async fn elastic_nested_wait_with_room_is_not_refused() {
    for min in [0usize, 1] {
        let pool = SmartAioPool::builder()
            .max_concurrency(3)
            .min_workers(min)
            .max_queue_size(4)
            .auto_shutdown(false)
            .process_wide(false)
            .build();
        let p = pool.clone();
        let parent = pool
            .submit(move || {
                let p = p.clone();
                async move {
                    let a = p.submit(|| async { 1u32 }).await.unwrap();
                    let b = p.submit(|| async { 2u32 }).await.unwrap();
                    let (a, b) = tokio::join!(a, b);
                    Ok::<_, Option<CancelReason>>(reason(a)? + reason(b)?)
                }
            })
            .await
            .unwrap();
        let r = bounded(parent).await.expect("hang").unwrap();
        assert_eq!(r, Ok(3), "min_workers {min}");
        pool.shutdown().await;
    }
}

/// Two jobs on two workers, each awaiting the other's queued child at the same moment:
/// exactly one wait is refused, the other child runs; never a hang, never two refusals.
#[test]
fn two_jobs_awaiting_each_others_queued_children_at_once() {
    for round in 0..40 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(async {
            let pool = support::common_local(2, 4);
            let barrier = Arc::new(tokio::sync::Barrier::new(2));
            let (tx1, rx1) = tokio::sync::oneshot::channel::<TaskHandle<u32>>();
            let (tx2, rx2) = tokio::sync::oneshot::channel::<TaskHandle<u32>>();
            let mk = |tx: tokio::sync::oneshot::Sender<TaskHandle<u32>>,
                      rx: tokio::sync::oneshot::Receiver<TaskHandle<u32>>,
                      v: u32| {
                let (p, b) = (pool.clone(), barrier.clone());
                async move {
                    b.wait().await; // both hold a slot now
                    let child = p.submit(async move { v }).await.unwrap(); // queued
                    let _ = tx.send(child);
                    let other = rx.await.unwrap();
                    b.wait().await;
                    reason(other.await)
                }
            };
            let a = pool.submit(mk(tx1, rx2, 1)).await.unwrap();
            let b = pool.submit(mk(tx2, rx1, 2)).await.unwrap();
            let r =
                tokio::time::timeout(Duration::from_secs(10), async { (a.await, b.await) }).await;
            drop(pool.cancel_all());
            r
        });
        drop(rt);
        let (a, b) = out.unwrap_or_else(|_| panic!("round {round}: hang"));
        let (a, b) = (a.unwrap(), b.unwrap());
        let refused = [a, b]
            .iter()
            .filter(|r| **r == Err(Some(CancelReason::WouldDeadlock)))
            .count();
        assert_eq!(refused, 1, "round {round}: {a:?} {b:?}");
    }
}

/// Inside a job of a pool of `conc` slots and a queue of `queue`, fans out two children
/// in one of four ways (`join!` of two handles, a group's `join_next`, its `join_all`, a
/// stream), and returns what they gave, sorted (within 10 s, else a panic: a hang).
async fn fan_out_in_a_job(conc: usize, queue: usize, kind: u32) -> Vec<R> {
    let pool = support::common_local(conc, queue);
    let p = pool.clone();
    let outer = pool
        .submit(async move {
            let mut out: Vec<R> = match kind {
                0 => {
                    let a = p.submit(async { 1u32 }).await.unwrap();
                    let b = p.submit(async { 2u32 }).await.unwrap();
                    let (a, b) = tokio::join!(a, b);
                    vec![reason(a), reason(b)]
                }
                1 => {
                    let mut g = p.group();
                    g.submit(async { 1u32 }).await.unwrap();
                    g.submit(async { 2u32 }).await.unwrap();
                    let mut out = vec![];
                    while let Some(r) = g.join_next().await {
                        out.push(reason(r));
                    }
                    out
                }
                2 => {
                    let mut g = p.group();
                    g.submit(async { 1u32 }).await.unwrap();
                    g.submit(async { 2u32 }).await.unwrap();
                    g.join_all().await.into_iter().map(reason).collect()
                }
                _ => {
                    use futures_util::StreamExt;
                    p.map_unordered(futures_util::stream::iter(1..3u32), |i| async move { i })
                        .map(reason)
                        .collect::<Vec<_>>()
                        .await
                }
            };
            out.sort_by_key(|r| (*r).unwrap_or(0));
            out
        })
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), outer)
        .await
        .unwrap_or_else(|_| panic!("kind {kind}: hang"))
        .unwrap();
    pool.shutdown().await;
    r
}

/// Inside a job of a full pool (from the start): `join!` of two queued children has both
/// refused; a group's `join_next` and `join_all`, and a stream, end; nothing hangs. On both
/// runtime flavours.
async fn full_from_start_kinds() {
    for kind in 0..4 {
        let r = fan_out_in_a_job(1, 3, kind).await;
        assert!(
            r.iter()
                .all(|r| *r == Err(Some(CancelReason::WouldDeadlock))),
            "kind {kind}: {r:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn full_from_start_kinds_current_thread() {
    full_from_start_kinds().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_from_start_kinds_multi_thread() {
    for _ in 0..20 {
        full_from_start_kinds().await;
    }
}

/// With room (a pool of 3, one job fanning out 2 children each way): nothing is refused.
async fn room_kinds() {
    for kind in 0..4 {
        assert_eq!(
            fan_out_in_a_job(3, 0, kind).await,
            vec![Ok(1), Ok(2)],
            "kind {kind}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn room_kinds_current_thread() {
    room_kinds().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_kinds_multi_thread() {
    for _ in 0..30 {
        room_kinds().await;
    }
}

/// Finding 195: two running jobs await each other (a cycle of waits) in a pool of 3 whose third job
/// runs on; a shrink to 2, then the third job's end, leaves every slot waiting on a task
/// of the pool. Had the pool been of 2 from the start, the second wait would have been
/// refused. The crate docs: "when every slot waits for tasks of its own pool (also once a
/// shrink leaves only waiting tasks running), one wait is broken with WouldDeadlock".
#[tokio::test(start_paused = true)]
async fn a_cycle_of_running_waiters_left_by_a_shrink_is_broken() {
    for shrink in [false, true] {
        let pool = CommonAioPool::builder()
            .max_concurrency(if shrink { 3 } else { 2 })
            .max_queue_size(4)
            .process_wide(false)
            .build();
        let gate = support::Gate::default();
        if shrink {
            let g = gate.clone();
            pool.submit(async move { g.wait().await })
                .await
                .unwrap()
                .detach();
        }
        let (tx1, rx1) = tokio::sync::oneshot::channel::<TaskHandle<u32>>();
        let (tx2, rx2) = tokio::sync::oneshot::channel::<TaskHandle<u32>>();
        let a = pool
            .submit(async move { reason(rx1.await.unwrap().await).unwrap_or(100) + 1 })
            .await
            .unwrap();
        let b = pool
            .submit(async move { reason(rx2.await.unwrap().await).unwrap_or(100) + 2 })
            .await
            .unwrap();
        // Each gets the other's handle.
        let (a, b) = (
            Arc::new(std::sync::Mutex::new(Some(a))),
            Arc::new(std::sync::Mutex::new(Some(b))),
        );
        let _ = tx1.send(b.lock().unwrap().take().unwrap());
        tokio::time::sleep(Duration::from_millis(1)).await; // a waits on b
        let _ = tx2.send(a.lock().unwrap().take().unwrap());
        tokio::time::sleep(Duration::from_millis(1)).await; // b waits on a
        if shrink {
            pool.set_max_concurrency(2);
            gate.open();
        }
        let done = bounded(pool.wait()).await;
        pool.cancel_all().await;
        assert!(
            done.is_some(),
            "shrink {shrink}: hang: two running jobs await each other, every slot waits"
        );
    }
}

/// Finding 195: the cycle left by a shrink, on two workers: broken every round, with one refusal.
#[test]
fn a_cycle_of_running_waiters_left_by_a_shrink_is_broken_multi_thread() {
    for round in 0..30 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let out = rt.block_on(async {
            let (pool, gate) = pool_with_filler(3).await;
            let (tx1, rx1) = tokio::sync::oneshot::channel::<TaskHandle<u32>>();
            let (tx2, rx2) = tokio::sync::oneshot::channel::<TaskHandle<u32>>();
            let (r_tx, mut r_rx) = tokio::sync::mpsc::unbounded_channel();
            let (r1, r2) = (r_tx.clone(), r_tx);
            let a = pool
                .submit(async move {
                    let _ = r1.send(reason(rx1.await.unwrap().await));
                    1u32
                })
                .await
                .unwrap();
            let b = pool
                .submit(async move {
                    let _ = r2.send(reason(rx2.await.unwrap().await));
                    2u32
                })
                .await
                .unwrap();
            let _ = tx1.send(b);
            let _ = tx2.send(a);
            tokio::time::sleep(Duration::from_millis(5)).await;
            pool.set_max_concurrency(2);
            gate.open();
            let done = tokio::time::timeout(Duration::from_secs(10), pool.wait()).await;
            drop(pool.cancel_all());
            let mut seen = vec![];
            while let Ok(r) = r_rx.try_recv() {
                seen.push(r);
            }
            (done.is_ok(), seen)
        });
        drop(rt);
        assert!(out.0, "round {round}: hang");
        // One job cancelled (its own send never happens), the other told WouldDeadlock.
        assert_eq!(
            out.1,
            vec![Err(Some(CancelReason::WouldDeadlock))],
            "round {round}"
        );
    }
}

// ----- a review of 194-197's fixes (finding 198) --------------------------------------

/// Finding 198: a stale cycle pick blocked the break of the deadlock the picture became.
///
/// A (older) awaits B's handle in a `select!` with a 10 s timer; B (newest) polled A's
/// handle once (its wait counts, as the docs say, "also while it waits on something
/// else") and then waits for a message A sends once its child is done. A shrink to 2 and
/// the filler's end leave both slots "waiting": a cycle, so B is picked; B's poll refuses
/// nothing (it does not poll A's handle) and the pick stays. At 10 s A submits child D
/// (queued: no slot) and awaits it: now every slot waits and A awaits a queued task, the
/// case the breaker handles by refusing A's wait on D ("picks the task whose refusals free
/// a slot soonest ... each handle of a task not yet started that it polls again is
/// refused"). A polls D's handle at once, but the pick is still B (`break_nested_deadlock`
/// returns early: "its poll decides first"), and B never polls again: the pool hangs for
/// ever.
#[tokio::test(start_paused = true)]
async fn stale_cycle_pick_blocks_the_break_of_a_later_queued_child_wait() {
    let (pool, gate) = pool_with_filler(3).await;
    let (to_a, from_test_a) = oneshot::channel::<TaskHandle<u32>>();
    let (to_b, from_test_b) = oneshot::channel::<TaskHandle<u32>>();
    let (a_to_b, b_from_a) = oneshot::channel::<R>();
    let (out_tx, mut out) = tokio::sync::mpsc::unbounded_channel::<(char, R)>();
    let (p, o) = (pool.clone(), out_tx.clone());
    let a = pool
        .submit(async move {
            let mut hb = from_test_a.await.unwrap();
            tokio::select! {
                r = &mut hb => { let _ = o.send(('b', reason(r))); return 0u32; }
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
            // Still holding B's handle (counted). A child, queued: no free slot.
            let d = p.submit(async { 5u32 }).await.unwrap();
            let r = reason(d.await);
            let _ = o.send(('d', r));
            let _ = a_to_b.send(r);
            drop(hb);
            1
        })
        .await
        .unwrap();
    let o = out_tx;
    let b = pool
        .submit(async move {
            let mut ha = from_test_b.await.unwrap();
            assert!(!poll_once(&mut ha).await, "A is running");
            // Really waits on A's child's outcome; A's handle kept (the wait counts).
            let r = b_from_a.await.unwrap();
            drop(ha);
            let _ = o.send(('a', r));
            2u32
        })
        .await
        .unwrap();
    to_a.send(b).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await; // A waits on B
    to_b.send(a).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await; // B's wait on A counts
    pool.set_max_concurrency(2);
    gate.open(); // the filler ends: A and B hold both slots, a "cycle"; B is picked
    let done = bounded(pool.wait()).await;
    pool.cancel_all().await;
    let mut seen = vec![];
    while let Ok(x) = out.try_recv() {
        seen.push(x);
    }
    assert!(
        done.is_some(),
        "hang: A awaits its queued child with every slot waiting, never refused; seen {seen:?}"
    );
    assert_eq!(
        seen,
        vec![
            ('d', Err(Some(CancelReason::WouldDeadlock))),
            ('a', Err(Some(CancelReason::WouldDeadlock)))
        ]
    );
}

/// Finding 198: the same stale pick cancels the wrong task: a running job instead of a queued child.
///
/// As above, but B waits on a 20 s timer instead of A's message, then awaits A's handle
/// again. At 10 s A awaits its queued child D with every slot waiting: the breaker's rule
/// refuses A's wait on D (A goes on, ends, and B gets A's value). With the stale cycle
/// pick, nothing happens at 10 s; at 20 s B's poll of A's handle is refused
/// (`refuse_stuck`: `stuck_cycle && waiting_on_own.contains_key(A)`) and A, a running job
/// that only awaited a queued child, is cancelled with `WouldDeadlock`.
#[tokio::test(start_paused = true)]
async fn stale_cycle_pick_cancels_a_running_job_instead_of_its_queued_child() {
    let (pool, gate) = pool_with_filler(3).await;
    let (to_a, from_test_a) = oneshot::channel::<TaskHandle<u32>>();
    let (to_b, from_test_b) = oneshot::channel::<TaskHandle<u32>>();
    let (out_tx, mut out) = tokio::sync::mpsc::unbounded_channel::<(char, R)>();
    let (p, o) = (pool.clone(), out_tx.clone());
    let a = pool
        .submit(async move {
            let mut hb = from_test_a.await.unwrap();
            tokio::select! {
                r = &mut hb => { let _ = o.send(('b', reason(r))); return 0u32; }
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
            let d = p.submit(async { 5u32 }).await.unwrap();
            let r = reason(d.await);
            let _ = o.send(('d', r));
            drop(hb);
            1
        })
        .await
        .unwrap();
    let o = out_tx;
    let b = pool
        .submit(async move {
            let mut ha = from_test_b.await.unwrap();
            assert!(!poll_once(&mut ha).await, "A is running");
            tokio::time::sleep(Duration::from_secs(20)).await;
            let _ = o.send(('a', reason(ha.await)));
            2u32
        })
        .await
        .unwrap();
    to_a.send(b).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    to_b.send(a).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    pool.set_max_concurrency(2);
    gate.open();
    let done = bounded(pool.wait()).await;
    pool.cancel_all().await;
    let mut seen = vec![];
    while let Ok(x) = out.try_recv() {
        seen.push(x);
    }
    assert!(done.is_some(), "hang; seen {seen:?}");
    // A's wait on its queued child refused at 10 s; A ends with 1, which B gets at 20 s.
    assert_eq!(
        seen,
        vec![('d', Err(Some(CancelReason::WouldDeadlock))), ('a', Ok(1))]
    );
}

// ----- probes that found nothing (kept as checks) -----------------------------------

/// A future that counts its polls.
struct Counted<F> {
    inner: std::pin::Pin<Box<F>>,
    polls: Arc<std::sync::atomic::AtomicUsize>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<F::Output> {
        self.polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.as_mut().poll(cx)
    }
}

/// A cycle pick whose job never polls that handle again: no wake/poll loop (the job is
/// polled a bounded number of times while the pool stays stuck), and once the job's
/// other wait ends, everything ends (no false refusal of later waits).
#[tokio::test(start_paused = true)]
async fn probe_cycle_pick_that_never_polls_does_not_spin() {
    let (pool, gate) = pool_with_filler(3).await;
    let (to_a, from_test_a) = oneshot::channel::<TaskHandle<u32>>();
    let (to_b, from_test_b) = oneshot::channel::<TaskHandle<u32>>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = pool
        .submit(async move { reason(from_test_a.await.unwrap().await).unwrap_or(100) + 1 })
        .await
        .unwrap();
    let b = pool
        .submit(Counted {
            inner: Box::pin(async move {
                let mut ha = from_test_b.await.unwrap();
                assert!(!poll_once(&mut ha).await);
                release_rx.await.unwrap();
                drop(ha);
                2u32
            }),
            polls: polls.clone(),
        })
        .await
        .unwrap();
    to_a.send(b).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    to_b.send(a).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    pool.set_max_concurrency(2);
    gate.open();
    let before = polls.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Real time too: a wake loop would poll on and on while this thread yields.
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    let during = polls.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(
        during <= 3,
        "the picked job was polled {during} times: a wake loop"
    );
    release_tx.send(()).unwrap();
    let done = bounded(pool.wait()).await;
    assert!(done.is_some(), "hang after B's release");
    pool.cancel_all().await;
}

/// A chain closing a cycle (A waits on B, B on C, C on A), left by a shrink: whether the
/// pool's wait returned (within 10 s), and what the three jobs gave, by job.
async fn three_cycle_left_by_a_shrink() -> (bool, Vec<(u32, R)>) {
    let pool = support::common_local(4, 4);
    let gate = support::Gate::default();
    let g = gate.clone();
    pool.submit(async move { g.wait().await })
        .await
        .unwrap()
        .detach();
    let (out_tx, mut out) = tokio::sync::mpsc::unbounded_channel::<(u32, R)>();
    let mut txs = vec![];
    let mut hs = vec![];
    for i in 0..3u32 {
        let (tx, rx) = oneshot::channel::<TaskHandle<u32>>();
        txs.push(tx);
        let o = out_tx.clone();
        hs.push(Some(
            pool.submit(async move {
                let r = reason(rx.await.unwrap().await);
                let _ = o.send((i, r));
                i
            })
            .await
            .unwrap(),
        ));
    }
    // A (0) waits on B (1), B on C (2), C on A.
    for awaited in [1usize, 2, 0] {
        let h = hs[awaited].take().unwrap();
        let _ = txs.remove(0).send(h);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    pool.set_max_concurrency(3);
    gate.open();
    let done = tokio::time::timeout(Duration::from_secs(10), pool.wait()).await;
    drop(pool.cancel_all());
    drop(out_tx);
    let mut seen = vec![];
    while let Ok(x) = out.try_recv() {
        seen.push(x);
    }
    seen.sort_by_key(|(i, _)| *i);
    (done.is_ok(), seen)
}

/// The three-job cycle left by a shrink: broken, one job cancelled; the newest (C) told
/// `WouldDeadlock` (C refused its wait on A, A cancelled and sends nothing; C ends with 2,
/// which B gets); nothing hangs.
#[tokio::test(start_paused = true)]
async fn probe_three_cycle_left_by_a_shrink_is_broken_once() {
    let (done, seen) = three_cycle_left_by_a_shrink().await;
    assert!(done, "hang; seen {seen:?}");
    assert_eq!(
        seen,
        vec![(1, Ok(2)), (2, Err(Some(CancelReason::WouldDeadlock)))]
    );
}

/// A cycle pick, then a grow: the picked job's later waits with room are not refused.
#[tokio::test(start_paused = true)]
async fn probe_cycle_pick_then_grow_refuses_nothing_later() {
    let (pool, gate) = pool_with_filler(3).await;
    let (to_a, from_test_a) = oneshot::channel::<TaskHandle<u32>>();
    let (to_b, from_test_b) = oneshot::channel::<TaskHandle<u32>>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (out_tx, mut out) = tokio::sync::mpsc::unbounded_channel::<(char, R)>();
    let o = out_tx.clone();
    let a = pool
        .submit(async move {
            let r = reason(from_test_a.await.unwrap().await);
            let _ = o.send(('b', r));
            1u32
        })
        .await
        .unwrap();
    let (p, o) = (pool.clone(), out_tx);
    let b = pool
        .submit(async move {
            let mut ha = from_test_b.await.unwrap();
            assert!(!poll_once(&mut ha).await);
            release_rx.await.unwrap();
            // A child, now with room (grown): not refused.
            let c = p.submit(async { 9u32 }).await.unwrap();
            let _ = o.send(('c', reason(c.await)));
            drop(ha);
            2u32
        })
        .await
        .unwrap();
    to_a.send(b).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    to_b.send(a).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    pool.set_max_concurrency(2);
    gate.open();
    tokio::time::sleep(Duration::from_millis(1)).await; // B picked, refuses nothing
    pool.set_max_concurrency(3);
    release_tx.send(()).unwrap();
    let done = bounded(pool.wait()).await;
    pool.cancel_all().await;
    let mut seen = vec![];
    while let Ok(x) = out.try_recv() {
        seen.push(x);
    }
    assert!(done.is_some(), "hang; seen {seen:?}");
    assert_eq!(seen, vec![('c', Ok(9)), ('b', Ok(2))]);
}

/// An elastic SmartAioPool: the cycle left by a shrink is broken too (one refusal).
#[tokio::test(start_paused = true)]
async fn probe_smart_pool_cycle_left_by_a_shrink_is_broken() {
    for min in [0usize, 3] {
        let pool = SmartAioPool::builder()
            .max_concurrency(3)
            .min_workers(min)
            .max_queue_size(4)
            .auto_shutdown(false)
            .process_wide(false)
            .build();
        let gate = support::Gate::default();
        let g = gate.clone();
        pool.submit(move || {
            let g = g.clone();
            async move { g.wait().await }
        })
        .await
        .unwrap()
        .detach();
        let (out_tx, mut out) = tokio::sync::mpsc::unbounded_channel::<R>();
        let slots: Vec<Arc<std::sync::Mutex<Option<TaskHandle<u32>>>>> = (0..2)
            .map(|_| Arc::new(std::sync::Mutex::new(None)))
            .collect();
        let notify: Vec<Arc<tokio::sync::Notify>> = (0..2)
            .map(|_| Arc::new(tokio::sync::Notify::new()))
            .collect();
        let mut hs = vec![];
        for i in 0..2usize {
            let (slot, n, o) = (slots[i].clone(), notify[i].clone(), out_tx.clone());
            hs.push(
                pool.submit(move || {
                    let (slot, n, o) = (slot.clone(), n.clone(), o.clone());
                    async move {
                        n.notified().await;
                        let h = slot.lock().unwrap().take().unwrap();
                        let _ = o.send(reason(h.await));
                        i as u32
                    }
                })
                .await
                .unwrap(),
            );
        }
        let b = hs.pop().unwrap();
        let a = hs.pop().unwrap();
        *slots[0].lock().unwrap() = Some(b);
        notify[0].notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        *slots[1].lock().unwrap() = Some(a);
        notify[1].notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        pool.set_max_concurrency(2);
        gate.open();
        let done = bounded(pool.wait()).await;
        pool.cancel_all().await;
        drop(out_tx);
        let mut seen = vec![];
        while let Some(x) = out.recv().await {
            seen.push(x);
        }
        assert!(done.is_some(), "min {min}: hang; seen {seen:?}");
        assert_eq!(
            seen,
            vec![Err(Some(CancelReason::WouldDeadlock))],
            "min {min}"
        );
        pool.shutdown().await;
    }
}

#[test]
fn probe_three_cycle_left_by_a_shrink_multi_thread() {
    for round in 0..30 {
        let rt = support::multi_thread_of(2);
        let (done, seen) = rt.block_on(three_cycle_left_by_a_shrink());
        drop(rt);
        assert!(done, "round {round}: hang; {seen:?}");
        assert_eq!(
            seen,
            vec![(1, Ok(2)), (2, Err(Some(CancelReason::WouldDeadlock)))],
            "round {round}"
        );
    }
}

// ----- a review of 198's fix: a cycle that keeps changing -----------------------------

/// A and B await each other (a shrink closes the cycle); A, in a loop, submits a child,
/// polls it once (counted: not a cycle any more), aborts it (a cycle again) and sleeps.
/// The pool must still break the cycle (B's wait on A refused, or A's), with no wake loop.
#[tokio::test(start_paused = true)]
async fn a_cycle_with_a_flapping_queued_child_is_broken() {
    for b_polls_every in [None, Some(3u64)] {
        let (pool, gate) = pool_with_filler(3).await;
        let (to_a, from_test_a) = tokio::sync::oneshot::channel::<TaskHandle<u32>>();
        let (to_b, from_test_b) = tokio::sync::oneshot::channel::<TaskHandle<u32>>();
        let loops = Arc::new(AtomicUsize::new(0));
        let (p, l) = (pool.clone(), loops.clone());
        let a = pool
            .submit(async move {
                let mut hb = from_test_a.await.unwrap();
                assert!(!poll_once(&mut hb).await);
                loop {
                    l.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut d) = p.try_submit(async { 5u32 }) {
                        let _ = poll_once(&mut d).await;
                        d.abort();
                        let _ = poll_once(&mut d).await;
                        drop(d);
                    }
                    tokio::select! {
                        r = &mut hb => { return r.map(|_| 0).unwrap_or(9); }
                        _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                    }
                }
            })
            .await
            .unwrap();
        let b = pool
            .submit(async move {
                let mut ha = from_test_b.await.unwrap();
                match b_polls_every {
                    None => ha.await.map(|_| 2u32).unwrap_or(8),
                    Some(s) => {
                        assert!(!poll_once(&mut ha).await);
                        loop {
                            tokio::time::sleep(Duration::from_secs(s)).await;
                            if poll_once(&mut ha).await {
                                return 3;
                            }
                        }
                    }
                }
            })
            .await
            .unwrap();
        to_a.send(b).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        to_b.send(a).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        pool.set_max_concurrency(2);
        gate.open();
        let done = tokio::time::timeout(Duration::from_secs(60), pool.wait()).await;
        let n = loops.load(Ordering::SeqCst);
        pool.cancel_all().await;
        assert!(
            done.is_ok(),
            "{b_polls_every:?}: the cycle was never broken (A looped {n} times)"
        );
        eprintln!("{b_polls_every:?}: broken after {n} loops of A");
    }
}
