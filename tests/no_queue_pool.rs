//! NoQueueAioPool (issue 2).

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use nb_aiopool::NoQueueAioPool;
use support::{within, Counter, Gate, Gauge};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_concurrency_and_no_queue() {
    let pool = NoQueueAioPool::new(5);
    let gauge = Gauge::default();
    for i in 0..400u32 {
        let gauge = gauge.clone();
        pool.submit(async move {
            let _g = gauge.enter();
            for _ in 0..(i % 3) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap()
        .detach();
        let s = pool.stats();
        assert_eq!(s.queued, 0, "a NoQueueAioPool queued a task: {s:?}");
        assert!(s.running <= 5, "{s:?}");
    }
    within("wait", pool.wait()).await;
    assert!(gauge.max() <= 5);
    assert_eq!(pool.stats().completed, 400);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_submit_starts_as_soon_as_a_slot_frees_without_polling() {
    let pool = NoQueueAioPool::new(1);
    let busy = pool
        .submit(tokio::time::sleep(Duration::from_millis(100)))
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let started_at = Arc::new(std::sync::Mutex::new(None));
    let s = started_at.clone();
    let h = pool
        .submit(async move {
            *s.lock().unwrap() = Some(tokio::time::Instant::now());
        })
        .await
        .unwrap();
    // The submit returned only once the slot was free: exactly when the first task ended,
    // not on the next tick of some polling loop.
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    busy.await.unwrap();
    h.await.unwrap();
    assert_eq!(
        started_at.lock().unwrap().unwrap() - t0,
        Duration::from_millis(100)
    );
}

#[tokio::test]
async fn wait_covers_everything_submitted_so_far_and_only_that() {
    let pool = NoQueueAioPool::new(3);
    let done = Counter::default();
    for _ in 0..6 {
        pool.submit(done.task()).await.unwrap().detach();
    }
    within("wait", pool.wait()).await;
    assert_eq!(done.get(), 6);

    // A task submitted after `wait` started does not hold it up.
    let gate = Gate::default();
    let g = gate.clone();
    let first = pool.submit(async {}).await.unwrap();
    let mut waiting = Box::pin(pool.wait());
    let _late = pool.submit(async move { g.wait().await }).await.unwrap();
    within("wait ignoring later tasks", &mut waiting).await;
    assert!(first.is_finished());
    gate.open();
    within("second wait", pool.wait()).await;
}

#[tokio::test]
async fn submit_waits_for_a_slot_and_try_submit_does_not() {
    let pool = NoQueueAioPool::new(2);
    let gate = Gate::default();
    let mut busy = Vec::new();
    for _ in 0..2 {
        let g = gate.clone();
        busy.push(pool.submit(async move { g.wait().await }).await.unwrap());
    }
    let rejected = pool.try_submit(async { 1 }).unwrap_err();
    assert!(rejected.is_full());
    assert_eq!(rejected.into_inner().await, 1);
    let mut waiting = Box::pin(pool.submit(async { 2 }));
    assert!((&mut waiting).now_or_never().is_none());
    gate.open();
    let h = within("submit after a slot frees", waiting).await.unwrap();
    assert_eq!(h.await.unwrap(), 2);
}

#[tokio::test]
async fn shutdown_refuses_new_work_after_finishing() {
    let pool = NoQueueAioPool::new(2);
    let h = pool.submit(async { 1 }).await.unwrap();
    within("shutdown", pool.shutdown()).await;
    assert_eq!(h.await.unwrap(), 1);
    let err = pool.submit(async { 3 }).await.unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err.into_inner().await, 3);
}

#[tokio::test]
async fn panics_and_aborts_do_not_leak_slots() {
    let pool = NoQueueAioPool::new(1);
    for _ in 0..3 {
        let h = pool.submit(async { panic!("boom") }).await.unwrap();
        assert!(within("panic", h).await.unwrap_err().is_panic());
        let h = pool.submit(std::future::pending::<()>()).await.unwrap();
        h.abort();
        assert!(within("abort", h).await.unwrap_err().is_cancelled());
    }
    assert_eq!(within("run", pool.run(async { 4 })).await.unwrap(), 4);
    let s = pool.stats();
    assert_eq!((s.panicked, s.cancelled, s.completed), (3, 3, 1));
}

#[test]
#[should_panic(expected = "nb_aiopool: NoQueueAioPool: max_concurrency must be at least 1, got 0")]
fn zero_concurrency_is_rejected() {
    let _ = NoQueueAioPool::new(0);
}

#[test]
fn blocking_submit_from_a_plain_thread() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pool = NoQueueAioPool::new(2);
    rt.block_on(pool.run(async {})).unwrap();
    let p = pool.clone();
    let total = std::thread::spawn(move || {
        (0..50)
            .map(|i| p.blocking_submit(async move { i }).unwrap())
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.blocking_wait().unwrap())
            .sum::<i32>()
    })
    .join()
    .unwrap();
    assert_eq!(total, 1225);
}
