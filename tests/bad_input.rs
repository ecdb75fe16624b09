//! Bad input (issue 6): every misuse ends in a clear message, a handed-back task or an
//! error on the handle, never in a hang, a lost task or an allocation sized by a number.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool::{
    CancelReason, CommonAioPool, NoQueueAioPool, SmartAioPool, TaskHandle, TrySubmitErrorKind,
};
use tokio::sync::Semaphore;

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("hang: {what}"))
}

// ----- sizes ----------------------------------------------------------------------------

#[test]
#[should_panic(expected = "nb_aiopool: CommonAioPool: max_concurrency must be at least 1, got 0")]
fn common_zero_concurrency() {
    let _ = CommonAioPool::new(0, 10);
}

#[test]
#[should_panic(expected = "nb_aiopool: NoQueueAioPool: max_concurrency must be at least 1, got 0")]
fn no_queue_zero_concurrency() {
    let _ = NoQueueAioPool::new(0);
}

#[test]
#[should_panic(expected = "nb_aiopool: SmartAioPool: max_concurrency must be at least 1, got 0")]
fn smart_zero_concurrency() {
    let _ = SmartAioPool::builder()
        .max_concurrency(0)
        .auto_shutdown(false)
        .build();
}

#[test]
#[should_panic(
    expected = "nb_aiopool: SmartAioPool: min_workers (5) must not exceed max_concurrency (4)"
)]
fn smart_min_workers_above_max() {
    let _ = SmartAioPool::builder()
        .max_concurrency(4)
        .min_workers(5)
        .auto_shutdown(false)
        .build();
}

/// `usize::MAX / 4` is above tokio's `Semaphore::MAX_PERMITS` (`usize::MAX >> 3`): refused
/// with the crate's message, not tokio's.
#[test]
#[should_panic(expected = "exceeds the largest supported size")]
fn common_queue_beyond_semaphore_limit() {
    let _ = CommonAioPool::new(1, usize::MAX / 4);
}

#[test]
#[should_panic(expected = "nb_aiopool: CommonAioPool: max_concurrency + max_queue_size")]
fn common_sizes_overflowing_usize() {
    let _ = CommonAioPool::new(usize::MAX, 1);
}

#[test]
#[should_panic(expected = "nb_aiopool: NoQueueAioPool: max_concurrency + max_queue_size")]
fn no_queue_concurrency_beyond_semaphore_limit() {
    let _ = NoQueueAioPool::new(usize::MAX);
}

#[test]
#[should_panic(expected = "nb_aiopool: SmartAioPool: max_concurrency + max_queue_size")]
fn smart_queue_beyond_semaphore_limit() {
    let _ = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(usize::MAX)
        .auto_shutdown(false)
        .build();
}

/// Resident memory of this process in KiB (Linux), to show a huge size allocates nothing.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The largest sizes accepted work and allocate nothing in proportion: the queue grows
/// with the jobs, not with `max_queue_size`.
#[tokio::test]
async fn huge_sizes_allocate_nothing_up_front() {
    let before = rss_kib();
    let biggest_queue = Semaphore::MAX_PERMITS - 1;
    let common = CommonAioPool::new(1, biggest_queue);
    let wide = CommonAioPool::new(Semaphore::MAX_PERMITS - 1, 1);
    let no_queue = NoQueueAioPool::new(Semaphore::MAX_PERMITS);
    let smart = SmartAioPool::builder()
        .max_concurrency(1 << 40)
        .max_queue_size(1 << 40)
        .min_workers(0)
        .auto_shutdown(false)
        .build();
    assert_eq!(common.max_queue_size(), biggest_queue);
    for i in 0..100u64 {
        common.submit(async move { i }).await.unwrap().detach();
        wide.submit(async move { i }).await.unwrap().detach();
        no_queue.submit(async move { i }).await.unwrap().detach();
        smart
            .submit(move || async move { i })
            .await
            .unwrap()
            .detach();
    }
    assert_eq!(within("common", common.run(async { 7 })).await.unwrap(), 7);
    within("common", common.shutdown()).await;
    within("wide", wide.shutdown()).await;
    within("no_queue", no_queue.shutdown()).await;
    within("smart", smart.shutdown()).await;
    assert_eq!(common.stats().completed, 101);
    assert_eq!(wide.stats().completed, 100);
    assert_eq!(smart.stats().completed, 100);
    // A pre-sized queue of 2^61 slots could not exist; still, check the process did not
    // grow by more than a generous 64 MiB.
    if let (Some(b), Some(a)) = (before, rss_kib()) {
        assert!(a < b + 64 * 1024, "RSS grew from {b} KiB to {a} KiB");
    }
}

/// Queue size 0 is "no waiting room", never "unbounded".
#[tokio::test(start_paused = true)]
async fn common_queue_zero_means_no_waiting_room() {
    let pool = CommonAioPool::new(1, 0);
    let busy = pool
        .try_submit(tokio::time::sleep(Duration::from_secs(1)))
        .unwrap();
    let err = pool.try_submit(async {}).unwrap_err();
    assert!(err.is_full());
    assert_eq!(err.kind(), TrySubmitErrorKind::Full);
    within("busy", busy).await.unwrap();
    within("shutdown", pool.shutdown()).await;
}

/// An idle timeout of zero retires idle workers at once, yet every task still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_zero_idle_timeout_still_runs_everything() {
    let pool = SmartAioPool::builder()
        .max_concurrency(4)
        .max_queue_size(4)
        .min_workers(0)
        .idle_timeout(Duration::ZERO)
        .auto_shutdown(false)
        .build();
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..500 {
        let done = done.clone();
        within(
            "submit",
            pool.submit(move || {
                let done = done.clone();
                async move {
                    tokio::task::yield_now().await;
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }),
        )
        .await
        .unwrap()
        .detach();
    }
    within("shutdown", pool.shutdown()).await;
    assert_eq!(done.load(Ordering::SeqCst), 500);
}

// ----- submit after shutdown --------------------------------------------------------------

#[tokio::test]
async fn submit_after_shutdown_hands_the_task_back() {
    let common = CommonAioPool::new(2, 2);
    let no_queue = NoQueueAioPool::new(2);
    let smart = SmartAioPool::builder()
        .max_concurrency(2)
        .auto_shutdown(false)
        .build();
    common.shutdown().await;
    no_queue.shutdown().await;
    smart.shutdown().await;

    let e = common.submit(async { 1 }).await.unwrap_err();
    assert!(e.is_closed(), "{e:?}");
    assert_eq!(e.to_string(), "closed: the pool is shut down (or, for a task group with cancel-on-error, one of its tasks failed) and accepts no tasks");
    assert_eq!(e.into_inner().await, 1);
    let e = common.try_submit(async { 2 }).unwrap_err();
    assert!(e.is_closed() && !e.is_full(), "{e:?}");
    assert_eq!(e.kind(), TrySubmitErrorKind::Closed);
    assert_eq!(e.into_inner().await, 2);

    let e = no_queue.submit(async { 3 }).await.unwrap_err();
    assert!(e.is_closed());
    assert_eq!(e.into_inner().await, 3);
    let e = no_queue.try_submit(async { 4 }).unwrap_err();
    assert!(e.is_closed());
    assert_eq!(e.into_inner().await, 4);

    let e = smart.submit(|| async { 5 }).await.unwrap_err();
    assert!(e.is_closed());
    assert_eq!(e.into_inner()().await, 5);
    let e = smart.try_submit(|| async { 6 }).unwrap_err();
    assert!(e.is_closed());
    assert_eq!(e.kind(), TrySubmitErrorKind::Closed);
    assert_eq!(e.into_inner()().await, 6);

    for s in [common.stats(), no_queue.stats(), smart.stats()] {
        assert_eq!(s.submitted, 0, "{s:?}");
    }
}

#[test]
fn blocking_submit_after_shutdown_hands_the_task_back() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let common = CommonAioPool::new(2, 2);
    let smart = SmartAioPool::builder()
        .max_concurrency(2)
        .auto_shutdown(false)
        .build();
    rt.block_on(async {
        common.run(async {}).await.unwrap();
        smart.run(|| async {}).await.unwrap();
        common.shutdown().await;
        smart.shutdown().await;
    });
    let (common2, smart2) = (common.clone(), smart.clone());
    std::thread::spawn(move || {
        let e = common2.blocking_submit(async { 1 }).unwrap_err();
        assert!(e.is_closed());
        let fut = e.into_inner();
        let e = smart2.blocking_submit(|| async { 2 }).unwrap_err();
        assert!(e.is_closed());
        (fut, e.into_inner())
    })
    .join()
    .map(|(fut, recipe)| {
        assert_eq!(rt.block_on(fut), 1);
        assert_eq!(rt.block_on(recipe()), 2);
    })
    .unwrap();
}

/// A submitter waiting for room when the pool shuts down gets its task back.
#[tokio::test(start_paused = true)]
async fn waiting_submitter_is_refused_by_shutdown() {
    let pool = CommonAioPool::new(1, 0);
    let busy = pool
        .submit(tokio::time::sleep(Duration::from_secs(10)))
        .await
        .unwrap();
    let p2 = pool.clone();
    let waiting = tokio::spawn(async move { p2.submit(async { 9 }).await });
    tokio::task::yield_now().await; // the submitter is now waiting for room
    let shutdown = tokio::spawn({
        let pool = pool.clone();
        async move { pool.shutdown().await }
    });
    let err = within("refused submitter", waiting)
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err.into_inner().await, 9);
    within("busy", busy).await.unwrap();
    within("shutdown", shutdown).await.unwrap();
}

// ----- blocking calls from async contexts -------------------------------------------------

#[tokio::test]
#[should_panic(expected = "nb_aiopool: `blocking_submit` was called from an async context")]
async fn common_blocking_submit_in_async_context_panics() {
    let pool = CommonAioPool::new(1, 1);
    let _ = pool.blocking_submit(async {});
}

#[tokio::test]
#[should_panic(expected = "nb_aiopool: `blocking_submit` was called from an async context")]
async fn no_queue_blocking_submit_in_async_context_panics() {
    let pool = NoQueueAioPool::new(1);
    let _ = pool.blocking_submit(async {});
}

#[tokio::test]
#[should_panic(expected = "nb_aiopool: `blocking_submit` was called from an async context")]
async fn smart_blocking_submit_in_async_context_panics() {
    let pool = SmartAioPool::builder().auto_shutdown(false).build();
    let _ = pool.blocking_submit(|| async {});
}

#[tokio::test]
#[should_panic(
    expected = "nb_aiopool: `TaskHandle::blocking_wait` was called from an async context"
)]
async fn blocking_wait_in_async_context_panics() {
    let pool = CommonAioPool::new(1, 1);
    let h = pool.submit(async {}).await.unwrap();
    let _ = h.blocking_wait();
}

/// `spawn_blocking` threads may block (as with tokio's own `blocking_send`): submitting and
/// waiting from one works, and the pool is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_submit_and_wait_work_in_spawn_blocking() {
    let pool = CommonAioPool::new(1, 1);
    let p = pool.clone();
    let sum = tokio::task::spawn_blocking(move || {
        (0..10)
            .map(|i| p.blocking_submit(async move { i }).unwrap())
            .map(|h| h.blocking_wait().unwrap())
            .sum::<i32>()
    });
    assert_eq!(within("spawn_blocking", sum).await.unwrap(), 45);
    assert_eq!(within("run", pool.run(async { 3 })).await.unwrap(), 3);
}

/// From a plain thread, before the pool ever saw a runtime: an error of its own kind with
/// the future handed back (never a panic, never a silent cancel), and the admission permit
/// is given back (the pool keeps its full capacity).
#[test]
fn blocking_submit_without_any_runtime_is_an_error_and_keeps_capacity() {
    let pool = CommonAioPool::new(1, 1);
    let p = pool.clone();
    let handed_back = std::thread::spawn(move || {
        let err = p.blocking_submit(async { 7 }).unwrap_err();
        assert!(err.is_no_runtime(), "{err:?}");
        assert!(err.to_string().contains("no tokio runtime"), "{err}");
        let err = p.try_submit(async { 7 }).unwrap_err();
        assert!(err.is_no_runtime(), "{err:?}");
        assert_eq!(err.kind(), TrySubmitErrorKind::NoRuntime);
        err.into_inner()
    })
    .join()
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(handed_back.await, 7);
        // Both places (1 slot + 1 queue) are free again.
        let a = pool.try_submit(async { 1 }).expect("first place free");
        let b = pool.try_submit(async { 2 }).expect("second place free");
        assert_eq!(
            within("a", a).await.unwrap() + within("b", b).await.unwrap(),
            3
        );
        assert_eq!(pool.stats().submitted, 2);
        pool.shutdown().await;
    });
}

/// After the pool's runtime is gone, a submit from a plain thread is refused with
/// `NoRuntime` and the job handed back, never accepted and then cancelled.
#[test]
fn blocking_submit_after_the_runtime_is_gone_is_an_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pool = rt.block_on(async {
        let pool = CommonAioPool::new(2, 2);
        pool.run(async {}).await.unwrap();
        pool
    });
    drop(rt);
    let err = pool.blocking_submit(async { 5 }).unwrap_err();
    assert!(err.is_no_runtime(), "{err:?}");
    assert_eq!(pool.stats().submitted, 1);
}

// ----- failing and stuck tasks ------------------------------------------------------------

/// A recipe that panics when called: the handle reports the panic, and the pool keeps its
/// capacity (one slot here, used again at once).
#[tokio::test]
async fn smart_recipe_panicking_when_called() {
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(0)
        .auto_shutdown(false)
        .build();
    let recipe = || -> std::future::Ready<u32> { panic!("recipe exploded") };
    for _ in 0..3 {
        let h = within("submit", pool.submit(recipe)).await.unwrap();
        let err = within("handle", h).await.unwrap_err();
        assert!(err.is_panic(), "{err:?}");
        assert_eq!(err.to_string(), "the task panicked: recipe exploded");
    }
    assert_eq!(within("after", pool.run(|| async { 8 })).await.unwrap(), 8);
    let s = pool.stats();
    assert_eq!(
        (s.panicked, s.completed, s.running, s.queued),
        (3, 1, 0, 0),
        "{s:?}"
    );
    pool.shutdown().await;
}

/// A future that panics at its first poll, in every pool: reported, capacity kept.
#[tokio::test]
async fn panicking_futures_keep_capacity() {
    let common = CommonAioPool::new(1, 0);
    let no_queue = NoQueueAioPool::new(1);
    for _ in 0..3 {
        let err = within("common", common.run(async { panic!("boom") }))
            .await
            .unwrap_err()
            .into_task_error()
            .unwrap();
        assert!(err.is_panic());
        let err = within("no_queue", no_queue.run(async { panic!("boom") }))
            .await
            .unwrap_err()
            .into_task_error()
            .unwrap();
        assert!(err.is_panic());
    }
    assert_eq!(within("common", common.run(async { 1 })).await.unwrap(), 1);
    assert_eq!(
        within("no_queue", no_queue.run(async { 1 })).await.unwrap(),
        1
    );
}

/// A task that never finishes under `shutdown_timeout`: abandoned, its handle says so, and
/// a task queued behind it is abandoned without running.
#[tokio::test(start_paused = true)]
async fn never_finishing_task_is_abandoned_at_the_deadline() {
    let common = CommonAioPool::new(1, 1);
    let smart = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(1)
        .auto_shutdown(false)
        .build();
    let ran = Arc::new(AtomicUsize::new(0));
    let stuck = common.submit(std::future::pending::<()>()).await.unwrap();
    let r = ran.clone();
    let behind = common
        .submit(async move {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
    let report = within(
        "shutdown_timeout",
        common.shutdown_timeout(Duration::from_secs(5)),
    )
    .await;
    assert_eq!(
        (report.finished(), report.abandoned()),
        (0, 2),
        "{report:?}"
    );
    assert!(!report.is_complete());
    for h in [stuck, behind] {
        let err = within("abandoned handle", h).await.unwrap_err();
        assert_eq!(
            err.cancel_reason(),
            Some(CancelReason::Abandoned),
            "{err:?}"
        );
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the queued task ran");
    let s = common.stats();
    assert_eq!((s.cancelled, s.running, s.queued), (2, 0, 0), "{s:?}");

    let stuck: TaskHandle<()> = smart.submit(std::future::pending::<()>).await.unwrap();
    let report = within(
        "shutdown_timeout",
        smart.shutdown_timeout(Duration::from_secs(5)),
    )
    .await;
    assert_eq!(report.abandoned(), 1);
    let err = within("abandoned handle", stuck).await.unwrap_err();
    assert_eq!(err.cancel_reason(), Some(CancelReason::Abandoned));
}

// ----- awaiting a handle from inside the pool ---------------------------------------------

/// Awaiting, from inside a pool's own task, the handle of a task still queued in that pool
/// while every slot waits on the pool fails at once (the awaited task is cancelled with
/// `CancelReason::WouldDeadlock`) instead of deadlocking.
#[tokio::test(start_paused = true)]
async fn awaiting_queued_handle_inside_own_full_pool_is_an_error() {
    let pool = CommonAioPool::new(1, 1);
    let inner_pool = pool.clone();
    let outer = pool
        .submit(async move {
            let inner = inner_pool.submit(async { 1 }).await.unwrap();
            inner.await
        })
        .await
        .unwrap();
    let result = within("outer", outer)
        .await
        .expect("the outer task returns");
    let err = result.expect_err("awaiting a queued handle in the own full pool is an error");
    assert_eq!(
        err.cancel_reason(),
        Some(CancelReason::WouldDeadlock),
        "{err:?}"
    );
    assert!(err.to_string().contains("could never start"), "{err}");
    within("shutdown", pool.shutdown()).await;
    let s = pool.stats();
    assert_eq!(
        (s.completed, s.cancelled),
        (1, 1),
        "the inner task never ran: {s:?}"
    );
}
