//! Review r25 of 186c388 (ended jobs' leftovers kept in `Graves`, freed by submitters, idle
//! slots, a 2 ms timer task, `wait()` and the engine's drop).
//!
//! Every test is bounded in time; each failing test shows a bug of that mechanism.

// Some tests make a `wait()` future inside a runtime and poll it elsewhere, on purpose.
#![allow(clippy::async_yields_async)]

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nb_aiopool::CommonAioPool;
use tokio::sync::oneshot;

mod support;
use support::{
    current_thread, multi_thread_of as multi_thread, reach, reach_blocking, reach_completed,
    Counted,
};

/// On runtime `b` (current-thread, driven only inside this call): submits a detached task
/// returning `out`, and returns as soon as it has ended (the way a program that calls
/// `block_on` per request uses a runtime). The pool arms its reap timer on `b`, which is
/// then never driven again (but stays alive).
fn one_detached_task_on(b: &tokio::runtime::Runtime, pool: &CommonAioPool, out: Counted) {
    b.block_on(async {
        let (done, ended) = oneshot::channel::<()>();
        pool.submit(async move {
            let _ = done.send(());
            out
        })
        .await
        .unwrap()
        .detach();
        tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .expect("the task on B never ended")
            .unwrap();
    });
}

/// On runtime `b` (current-thread, driven only inside this call): a detached task
/// returning `out` ends after a `wait()` covering it began, while a task that never ends
/// keeps the pool busy (the short task's end does not find it idle). Its result stays
/// kept: the reap timer is armed on `b`, which is not driven afterwards. Returns the wait.
fn a_kept_result_and_its_wait<T: Send + 'static>(
    b: &tokio::runtime::Runtime,
    pool: &CommonAioPool,
    out: T,
) -> impl Future<Output = ()> + Send + 'static {
    b.block_on(async {
        let (go, gate) = oneshot::channel::<()>();
        let (done, ended) = oneshot::channel::<()>();
        pool.submit(async move {
            let _ = gate.await;
            let _ = done.send(());
            out
        })
        .await
        .unwrap()
        .detach();
        // Covers the short task only.
        let wait = pool.wait();
        pool.submit(std::future::pending::<()>())
            .await
            .unwrap()
            .detach();
        go.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .expect("the short task never ended")
            .unwrap();
        wait
    })
}

// ----- r25-1: a wait() outside a runtime returns before the results it covers are dropped --

/// `TaskHandle` ("Dropping") and the crate docs promise that a detached task's result is
/// dropped "in any case before a `wait()` or `shutdown()` of the pool returns". A `wait()`
/// polled outside a runtime (a plain executor, which the pool supports) only waits for
/// batches already being dropped elsewhere: it never takes the kept ones, so with the
/// pool busy (another task running) and the reap timer not firing it returns at once,
/// with the result it covers still alive.
#[test]
fn a_wait_outside_a_runtime_returns_after_the_results_it_covers_are_dropped() {
    let b = current_thread();
    let drops = Arc::new(AtomicUsize::new(0));
    let pool = b.block_on(async { CommonAioPool::new(2, 10) });
    let wait = a_kept_result_and_its_wait(&b, &pool, Counted(drops.clone()));
    // The wait, from a plain thread (bounded).
    let (tx, rx) = std::sync::mpsc::channel();
    let d = drops.clone();
    std::thread::spawn(move || {
        support::plain_block_on(wait);
        let _ = tx.send(d.load(SeqCst));
    });
    let at_return = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the wait outside a runtime never returned");
    // The runtime stays alive (not driven) until here.
    drop(pool);
    drop(b);
    assert_eq!(
        at_return, 1,
        "a wait() outside a runtime returned while the detached result of the task it \
         covers was still kept (not dropped)"
    );
}

/// The same in the ordinary setting: a pool on a multi-thread runtime, a `wait()` from a
/// plain thread (no undriven runtime). The wait returns as soon as the task ends; the
/// result is dropped only by the 2 ms timer, later.
#[test]
fn a_wait_outside_a_runtime_on_a_busy_multi_thread_pool_returns_after_the_drop() {
    let a = multi_thread(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let pool = a.block_on(async { CommonAioPool::new(2, 10) });
    let out = Counted(drops.clone());
    let (go, gate) = oneshot::channel::<()>();
    let (release, long_gate) = oneshot::channel::<()>();
    let wait = a.block_on(async {
        pool.submit(async move {
            let _ = gate.await;
            out
        })
        .await
        .unwrap()
        .detach();
        let wait = pool.wait();
        pool.submit(async move {
            let _ = long_gate.await;
        })
        .await
        .unwrap()
        .detach();
        wait
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let d = drops.clone();
    std::thread::spawn(move || {
        support::plain_block_on(wait);
        let _ = tx.send(d.load(SeqCst));
    });
    std::thread::sleep(Duration::from_millis(50));
    go.send(()).unwrap();
    let at_return = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the wait outside a runtime never returned");
    let _ = release.send(());
    a.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(5), pool.wait()).await;
    });
    drop(pool);
    a.shutdown_timeout(Duration::from_secs(5));
    assert_eq!(
        at_return, 1,
        "a wait() outside a runtime returned while the detached result of the task it \
         covers was still kept (not dropped)"
    );
}

// ----- r25-2: a reap timer on a runtime no longer driven stops every later reap ---------

/// The reap timer goes to the runtime of the slot whose job ended first. A current-thread
/// runtime B used with `block_on` per request stops being driven once its `block_on`
/// returns: the timer sleeps there for ever, `Graves::timer` stays true, and no timer is
/// armed again. Then, on a healthy multi-thread runtime A, a detached result of a busy
/// pool (r24-5) is kept for as long as the pool stays busy — the 2 ms promise of 186c388
/// does not hold, for every later result of the pool, as long as B lives.
#[test]
fn a_reap_timer_left_on_an_undriven_runtime_does_not_keep_later_results() {
    let b = current_thread();
    let a = multi_thread(2);
    let pool = a.block_on(async { CommonAioPool::new(2, 10) });
    let on_b = Arc::new(AtomicUsize::new(0));
    one_detached_task_on(&b, &pool, Counted(on_b.clone()));
    // (B's result itself: the pool was idle at its end, so it was dropped at once.)
    let drops = Arc::new(AtomicUsize::new(0));
    let dropped = a.block_on(async {
        let (release, long_gate) = oneshot::channel::<()>();
        let long = pool
            .submit(async move {
                let _ = long_gate.await;
            })
            .await
            .unwrap();
        let out = Counted(drops.clone());
        pool.submit(async move {
            tokio::task::yield_now().await;
            out
        })
        .await
        .unwrap()
        .detach();
        let completed = reach_completed(&pool, 2, Duration::from_secs(5)).await;
        assert_eq!(completed, 2, "the short task on A never ended");
        let dropped = reach(&drops, 1, Duration::from_secs(2)).await;
        release.send(()).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), long).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), pool.wait()).await;
        dropped
    });
    drop(pool);
    drop(b);
    a.shutdown_timeout(Duration::from_secs(5));
    assert_eq!(
        dropped, 1,
        "a detached result on a healthy runtime was still kept 2 s after its task ended \
         (the pool busy): the reap timer had been armed on a current-thread runtime no \
         longer driven, and no timer was armed again"
    );
}

/// The same from B's side: B's own detached result, kept because the pool was busy (on A)
/// when it ended, is kept for as long as the pool stays busy: its timer sleeps on B,
/// which nothing drives (the documented bound: "nothing waits longer than that while the
/// pool is busy and no submit comes").
#[test]
fn a_result_whose_task_ended_on_an_undriven_runtime_is_dropped_while_the_pool_is_busy() {
    let b = current_thread();
    let a = multi_thread(2);
    let pool = a.block_on(async { CommonAioPool::new(2, 10) });
    let (release, long_gate) = oneshot::channel::<()>();
    let long = a.block_on(async {
        pool.submit(async move {
            let _ = long_gate.await;
        })
        .await
        .unwrap()
    });
    let on_b = Arc::new(AtomicUsize::new(0));
    one_detached_task_on(&b, &pool, Counted(on_b.clone()));
    let dropped = reach_blocking(&on_b, 1, Duration::from_secs(2));
    release.send(()).unwrap();
    a.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(5), long).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), pool.wait()).await;
    });
    drop(pool);
    drop(b);
    a.shutdown_timeout(Duration::from_secs(5));
    assert_eq!(
        dropped, 1,
        "a detached result was still kept 2 s after its task ended (pool busy on another \
         runtime): its reap timer sleeps on a runtime nothing drives"
    );
}

// ----- r25-3: a wait() inside a job drops other tasks' results inside that job's poll --

thread_local! {
    /// Set while this thread polls the outer job (below).
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
}

/// Drops that ran inside a job's poll.
static DROPPED_IN_JOB: AtomicUsize = AtomicUsize::new(0);

/// Marks the thread while it polls `F`.
struct Marked<F>(Pin<Box<F>>);

impl<F: Future> Future for Marked<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        IN_JOB.with(|m| m.set(true));
        let r = self.0.as_mut().poll(cx);
        IN_JOB.with(|m| m.set(false));
        r
    }
}

struct NoteWhere(Arc<AtomicUsize>);

impl Drop for NoteWhere {
    fn drop(&mut self) {
        if IN_JOB.with(|m| m.get()) {
            DROPPED_IN_JOB.fetch_add(1, SeqCst);
        }
        self.0.fetch_add(1, SeqCst);
    }
}

/// 186c388 keeps the `Drop` of kept results out of a job's poll for a submit ("not from
/// inside a job of any pool": `context::polling_a_task`), but a `wait()` takes and drops
/// every kept result wherever it is polled: a job of pool P1 that waits for pool P2 runs
/// the `Drop` of P2's detached results (of other submitters' tasks) inside its own poll.
#[test]
fn a_wait_inside_a_job_does_not_drop_other_results_inside_the_jobs_poll() {
    let b = current_thread();
    let a = multi_thread(2);
    let p2 = b.block_on(async { CommonAioPool::new(2, 10) });
    let drops = Arc::new(AtomicUsize::new(0));
    // As in r25-1: P2's result is kept (P2 busy, its timer on B, not driven).
    let wait = a_kept_result_and_its_wait(&b, &p2, NoteWhere(drops.clone()));
    let p1 = a.block_on(async { CommonAioPool::new(2, 10) });
    let in_job = a.block_on(async {
        let h = p1
            .submit(Marked(Box::pin(async move {
                wait.await;
            })))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("the job's wait never returned")
            .unwrap();
        DROPPED_IN_JOB.load(SeqCst)
    });
    drop(p2);
    drop(p1);
    drop(b);
    a.shutdown_timeout(Duration::from_secs(5));
    assert_eq!(
        (drops.load(SeqCst), in_job),
        (1, 0),
        "(dropped, of them inside a job's poll): another submitter's detached result was \
         dropped inside a job's poll, by a wait() the job awaited"
    );
}
