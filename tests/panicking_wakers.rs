//! A waker that panics when woken (an executor's fault: a handle, a submit or a `wait()`
//! polled by it) costs nobody else anything: the pool catches the panic where it wakes
//! that waker (the panic hook has shown it), as tokio's own tasks do with a `JoinHandle`'s
//! waker, and goes on with its other wake-ups and its next jobs. (Before, the panic
//! unwound the slot task that woke it, past what the job's end left to do: the next queued
//! task was cancelled as if its runtime had shut down, a handle woken after the faulty one
//! never was, and the `wait()` callers woken in the same batch of tokio's `Notify` hung.)
//! RELIABILITY.md, finding 163.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use nb_aiopool::{CommonAioPool, NoQueueAioPool, PoolStats, SmartAioPool};
use support::{within, Gate};

const MESSAGE: &str = "this waker panics";

/// A waker whose `wake` panics.
struct Boom;

impl Wake for Boom {
    fn wake(self: Arc<Self>) {
        panic!("{MESSAGE}");
    }
}

/// Polls `fut` once with a waker that panics when woken.
fn poll_with_boom<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    support::hide_panics(&[MESSAGE]);
    let waker = Waker::from(Arc::new(Boom));
    Pin::new(fut).poll(&mut Context::from_waker(&waker))
}

/// A task that waits for `gate` to open, then returns 1.
fn gated(gate: &Gate) -> impl Future<Output = u32> + Send + 'static {
    let gate = gate.clone();
    async move {
        gate.wait().await;
        1
    }
}

fn assert_all_completed(stats: PoolStats, n: u64) {
    assert_eq!(
        (stats.completed, stats.cancelled, stats.panicked),
        (n, 0, 0),
        "{stats:?}"
    );
}

/// The task after the one whose handle's waker panics (queued behind it, or waiting for a
/// slot in a pool without a queue) runs and completes, the faulty handle still gets its
/// result, `wait()` returns and the pool takes new work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_whose_waker_panics_costs_the_next_task_nothing() {
    // CommonAioPool: the next task queued.
    let pool = CommonAioPool::new(1, 10);
    let gate = Gate::default();
    let mut first = pool.submit(gated(&gate)).await.unwrap();
    let next = pool.submit(async { 2 }).await.unwrap();
    assert!(poll_with_boom(&mut first).is_pending());
    gate.open();
    assert_eq!(within("the next task", next).await.unwrap(), 2);
    within("wait", pool.wait()).await;
    assert_eq!(within("the faulty handle", first).await.unwrap(), 1);
    assert_eq!(pool.run(async { 3 }).await.unwrap(), 3);
    assert_all_completed(pool.stats(), 3);

    // SmartAioPool: the same with recipes.
    let pool = SmartAioPool::builder().max_concurrency(1).build();
    let gate = Gate::default();
    let mut first = {
        let gate = gate.clone();
        pool.submit(move || gated(&gate)).await.unwrap()
    };
    let next = pool.submit(|| async { 2 }).await.unwrap();
    assert!(poll_with_boom(&mut first).is_pending());
    gate.open();
    assert_eq!(within("the next task", next).await.unwrap(), 2);
    within("wait", pool.wait()).await;
    assert_eq!(within("the faulty handle", first).await.unwrap(), 1);
    assert_eq!(pool.run(|| async { 3 }).await.unwrap(), 3);
    assert_all_completed(pool.stats(), 3);

    // NoQueueAioPool: the next task's submit waits for the slot.
    let pool = NoQueueAioPool::new(1);
    let gate = Gate::default();
    let mut first = pool.submit(gated(&gate)).await.unwrap();
    let next = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.submit(async { 2 }).await.unwrap().await })
    };
    assert!(poll_with_boom(&mut first).is_pending());
    tokio::time::sleep(Duration::from_millis(20)).await; // the submit waits for the slot
    gate.open();
    assert_eq!(within("the next task", next).await.unwrap().unwrap(), 2);
    within("wait", pool.wait()).await;
    assert_eq!(within("the faulty handle", first).await.unwrap(), 1);
    assert_eq!(pool.run(async { 3 }).await.unwrap(), 3);
    assert_all_completed(pool.stats(), 3);
}

/// A submit waiting for room whose waker panics when the room is granted: the task whose
/// end gave the room back still tells its handle (woken after the submitter), and the
/// room comes back when the faulty submit is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_whose_waker_panics_costs_the_ending_task_nothing() {
    let pool = NoQueueAioPool::new(1);
    let gate = Gate::default();
    let running = pool.submit(gated(&gate)).await.unwrap();
    let awaited = tokio::spawn(running);
    let mut faulty = Box::pin(pool.submit(async { 2 }));
    assert!(
        poll_with_boom(&mut faulty).is_pending(),
        "the slot is taken"
    );
    tokio::time::sleep(Duration::from_millis(20)).await; // `awaited` polls its handle
    gate.open();
    assert_eq!(
        within("the ended task's handle", awaited)
            .await
            .unwrap()
            .unwrap(),
        1
    );
    drop(faulty);
    assert_eq!(
        within("a new task", pool.run(async { 3 })).await.unwrap(),
        3
    );
    within("wait", pool.wait()).await;
    assert_all_completed(pool.stats(), 2);
}

/// `wait()` callers woken together with one whose waker panics all return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_whose_waker_panics_costs_the_other_waits_nothing() {
    let pool = CommonAioPool::new(1, 10);
    let gate = Gate::default();
    let task = pool.submit(gated(&gate)).await.unwrap();
    let spawn_waits = |n| {
        (0..n)
            .map(|_| tokio::spawn(pool.wait()))
            .collect::<Vec<_>>()
    };
    let mut waits = spawn_waits(3);
    tokio::time::sleep(Duration::from_millis(20)).await; // they wait
    let mut faulty = Box::pin(pool.wait());
    assert!(poll_with_boom(&mut faulty).is_pending());
    waits.extend(spawn_waits(3));
    tokio::time::sleep(Duration::from_millis(20)).await;
    gate.open();
    for (i, wait) in waits.into_iter().enumerate() {
        within(&format!("wait {i}"), wait).await.unwrap();
    }
    assert_eq!(task.await.unwrap(), 1);
    within("the faulty wait, polled again", faulty).await;
    assert_all_completed(pool.stats(), 1);
}
