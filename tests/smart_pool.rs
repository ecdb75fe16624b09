//! SmartAioPool: elastic workers, recipes, and the guarantees the core pools give (issue 3).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use nb_aiopool::{smart_run, CancelReason, SmartAioPool, SubmitErrorKind};
use support::{within, Counter, Gate, Gauge};

/// Finding 70: on a runtime without tokio's time driver, an elastic pool's janitor task
/// panicked inside tokio ("timers are disabled") each time a worker went idle, and no
/// worker ever retired. Workers now retire when the worker count is read: no task, no
/// timer.
#[test]
fn idle_workers_retire_on_a_runtime_without_timers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let pool = rt.block_on(async {
        SmartAioPool::builder()
            .max_concurrency(8)
            .min_workers(1)
            .idle_timeout(Duration::from_millis(50))
            .auto_shutdown(false)
            .build()
    });
    let gate = Gate::default();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let g = gate.clone();
            pool.blocking_submit(move || {
                let g = g.clone();
                async move { g.wait().await }
            })
            .unwrap()
        })
        .collect();
    gate.open();
    for h in handles {
        rt.block_on(h).unwrap();
    }
    let grown = pool.worker_count();
    assert!(grown > 1, "the pool never grew: {grown} workers");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pool.worker_count(), 1, "idle workers did not retire");
    // The pool still grows and runs jobs after they retired.
    assert_eq!(rt.block_on(pool.run(|| async { 5 })).unwrap(), 5);
    rt.block_on(pool.shutdown());
}

/// Found by a review of finding 70's fix: a parent job submits a child that the rate
/// limit holds back (the pool grows a worker for it), then awaits it after
/// `idle_timeout`. Counting the workers meanwhile (`worker_count()`, or `{:?}` of the
/// pool) retired the grown worker, and the nested-wait check, which compared the running
/// jobs with the live workers, broke the wait with `WouldDeadlock`, although the child
/// starts when the rate window reopens. The check now compares with `max_concurrency`.
#[tokio::test(start_paused = true)]
async fn counting_workers_does_not_make_a_nested_wait_a_deadlock() {
    for count in [
        (|p: &SmartAioPool| {
            let _ = p.worker_count();
        }) as fn(&SmartAioPool),
        |p| drop(format!("{p:?}")),
        |_| {},
    ] {
        let pool = SmartAioPool::builder()
            .max_concurrency(4)
            .max_queue_size(10)
            .min_workers(1)
            .idle_timeout(Duration::from_millis(50))
            .rate_limit(1, Duration::from_secs(1))
            .auto_shutdown(false)
            .build();
        let p = pool.clone();
        let parent = pool
            .try_submit(move || {
                let p = p.clone();
                async move {
                    let child = p.try_submit(|| async { 7u32 }).map_err(|e| e.to_string())?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    child
                        .await
                        .map_err(|e| format!("{e} (reason {:?})", e.cancel_reason()))
                }
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        count(&pool);
        let r = within("the parent", parent).await.unwrap();
        pool.cancel_all().await;
        assert_eq!(r, Ok(7), "counting the workers broke the nested wait");
    }
}

#[tokio::test(start_paused = true)]
async fn workers_scale_up_under_load_and_retire_when_idle() {
    let pool = SmartAioPool::builder()
        .max_concurrency(4)
        .max_queue_size(100)
        .min_workers(1)
        .idle_timeout(Duration::from_secs(5))
        .build();
    assert_eq!(pool.worker_count(), 1);
    assert_eq!(pool.idle_worker_count(), 1);

    let gate = Gate::default();
    let gauge = Gauge::default();
    let mut handles = Vec::new();
    for i in 0..10 {
        let gate = gate.clone();
        let gauge = gauge.clone();
        handles.push(
            pool.submit(move || {
                let gate = gate.clone();
                let gauge = gauge.clone();
                async move {
                    let _g = gauge.enter();
                    gate.wait().await;
                    i
                }
            })
            .await
            .unwrap(),
        );
        assert!(pool.worker_count() <= 4);
    }
    tokio::task::yield_now().await;
    assert_eq!(
        pool.worker_count(),
        4,
        "did not scale up to max_concurrency"
    );
    assert_eq!(pool.busy_worker_count(), 4);
    assert_eq!(pool.pending_count(), 10);

    gate.open();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(within("task", h).await.unwrap(), i);
    }
    assert!(gauge.max() <= 4, "{} ran at once", gauge.max());
    assert_eq!(pool.busy_worker_count(), 0);
    assert_eq!(pool.worker_count(), 4);
    assert_eq!(pool.idle_worker_count(), 4);

    tokio::time::sleep(Duration::from_millis(4900)).await;
    assert_eq!(pool.worker_count(), 4, "retired before idle_timeout");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pool.worker_count(), 1, "idle workers did not retire");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(pool.worker_count(), 1, "went below min_workers");
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn min_workers_are_kept_and_reused() {
    let pool = SmartAioPool::builder()
        .max_concurrency(8)
        .min_workers(3)
        .idle_timeout(Duration::from_millis(100))
        .build();
    assert_eq!(pool.worker_count(), 3);
    for _ in 0..3 {
        pool.run(|| async {}).await.unwrap();
    }
    assert_eq!(
        pool.worker_count(),
        3,
        "sequential tasks should reuse idle workers"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pool.worker_count(), 3);
    pool.shutdown().await;
}

/// Finding 96 (review r11): `worker_count` is "between `min_workers` and
/// `max_concurrency`"; a shrink below `min_workers` and a grow back left the pool at the
/// shrunk size for good. Growing restores `min_workers`.
#[test]
fn growing_after_a_shrink_below_min_workers_restores_them() {
    let pool = SmartAioPool::builder()
        .max_concurrency(5)
        .min_workers(3)
        .idle_timeout(Duration::from_secs(3600))
        .auto_shutdown(false)
        .process_wide(false)
        .build();
    assert_eq!(pool.worker_count(), 3);
    pool.set_max_concurrency(1);
    assert_eq!(
        pool.worker_count(),
        1,
        "capped by the lowered max_concurrency"
    );
    pool.set_max_concurrency(2);
    assert_eq!(
        pool.worker_count(),
        2,
        "min_workers, capped by max_concurrency"
    );
    pool.set_max_concurrency(5);
    assert_eq!(pool.worker_count(), 3, "min_workers again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_concurrency_running() {
    let pool = SmartAioPool::builder()
        .max_concurrency(5)
        .max_queue_size(10)
        .build();
    let gauge = Gauge::default();
    for i in 0..300u32 {
        let gauge = gauge.clone();
        pool.submit(move || {
            let gauge = gauge.clone();
            async move {
                let _g = gauge.enter();
                for _ in 0..(i % 3) {
                    tokio::task::yield_now().await;
                }
            }
        })
        .await
        .unwrap()
        .detach();
        assert!(pool.worker_count() <= 5);
        assert!(pool.stats().queued <= 10);
    }
    within("shutdown", pool.shutdown()).await;
    assert!(gauge.max() <= 5, "{} ran at once", gauge.max());
    assert_eq!(pool.stats().completed, 300);
}

#[tokio::test]
async fn panics_are_reported_and_keep_capacity() {
    let pool = SmartAioPool::builder().max_concurrency(1).build();
    let h = pool
        .submit(|| async { panic!("recipe future exploded") })
        .await
        .unwrap();
    assert!(within("panic", h).await.unwrap_err().is_panic());

    // A recipe that panics when called counts as a panicking task.
    let h = pool
        .submit(|| -> std::future::Ready<()> { panic!("recipe exploded") })
        .await
        .unwrap();
    let err = within("recipe panic", h).await.unwrap_err();
    assert!(err.is_panic());
    assert!(err.to_string().contains("recipe exploded"), "{err}");

    assert_eq!(pool.run(|| async { 3 }).await.unwrap(), 3);
    let s = pool.stats();
    assert_eq!((s.panicked, s.completed), (2, 1));
    pool.shutdown().await;
}

#[tokio::test]
async fn abort_and_cancel_all() {
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(5)
        .build();
    let running = pool.submit(std::future::pending::<()>).await.unwrap();
    let queued = pool.submit(|| async {}).await.unwrap();
    queued.abort();
    assert_eq!(
        within("aborted", queued).await.unwrap_err().cancel_reason(),
        Some(CancelReason::Aborted)
    );

    let queued = pool.submit(|| async { 1 }).await.unwrap();
    within("cancel_all", pool.cancel_all()).await;
    assert_eq!(
        within("cancelled", running)
            .await
            .unwrap_err()
            .cancel_reason(),
        Some(CancelReason::CancelAll)
    );
    assert_eq!(
        within("cancelled", queued)
            .await
            .unwrap_err()
            .cancel_reason(),
        Some(CancelReason::CancelAll)
    );
    // The pool stays open and works.
    assert_eq!(pool.run(|| async { 2 }).await.unwrap(), 2);
    let s = pool.stats();
    assert_eq!(
        (s.cancelled, s.completed, s.queued, s.running),
        (3, 1, 0, 0),
        "{s:?}"
    );
    pool.shutdown().await;
}

#[tokio::test]
async fn submit_is_cancel_safe_and_try_submit_hands_the_recipe_back() {
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(0)
        .build();
    let gate = Gate::default();
    let g = gate.clone();
    let busy = pool
        .submit(move || {
            let g = g.clone();
            async move { g.wait().await }
        })
        .await
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let recipe = move || {
        r.fetch_add(1, Ordering::SeqCst);
        async {}
    };
    let mut waiting = Box::pin(pool.submit(recipe.clone()));
    assert!((&mut waiting).now_or_never().is_none());
    drop(waiting);
    let back = pool.try_submit(recipe).unwrap_err();
    assert!(back.is_full());
    let recipe = back.into_inner();
    gate.open();
    busy.await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    pool.run(recipe).await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(pool.stats().submitted, 2);
    pool.shutdown().await;
    let err = pool.submit(|| async {}).await.unwrap_err();
    assert_eq!(err.kind(), SubmitErrorKind::Closed);
}

#[tokio::test]
async fn wait_for_all_waits_for_earlier_tasks_only() {
    let pool = SmartAioPool::new(2);
    let gate = Gate::default();
    let done = Counter::default();
    for _ in 0..3 {
        let done = done.clone();
        pool.submit(move || done.task()).await.unwrap().detach();
    }
    within("wait_for_all", pool.wait_for_all()).await;
    assert_eq!(done.get(), 3);

    // A task submitted later that never ends does not keep an earlier wait waiting.
    let g = gate.clone();
    let _slow = pool
        .submit(move || {
            let g = g.clone();
            async move { g.wait().await }
        })
        .await
        .unwrap();
    let waiter = pool.wait_for_all();
    gate.open();
    within("second wait", waiter).await;
    pool.shutdown().await;
}

#[test]
#[should_panic(expected = "min_workers (5) must not exceed max_concurrency (2)")]
fn min_workers_above_max_is_rejected() {
    let _ = SmartAioPool::builder()
        .max_concurrency(2)
        .min_workers(5)
        .build();
}

#[test]
#[should_panic(expected = "nb_aiopool: SmartAioPool: max_concurrency must be at least 1, got 0")]
fn zero_concurrency_is_rejected() {
    let _ = SmartAioPool::new(0);
}

#[test]
fn defaults_match_the_python_original() {
    let pool = SmartAioPool::builder().build();
    assert_eq!(pool.max_concurrency(), 100);
    assert_eq!(pool.worker_count(), 1);
    let dbg = format!("{pool:?}");
    assert!(dbg.contains("auto_shutdown: true"), "{dbg}");
}

#[test]
fn smart_run_waits_for_tasks_nobody_awaited() {
    let pool = SmartAioPool::new(4);
    let done = Counter::default();
    let d = done.clone();
    let out = smart_run(async move {
        for _ in 0..20 {
            let d = d.clone();
            pool.submit(move || d.sleeping_task(5))
                .await
                .unwrap()
                .detach();
        }
        "main's value"
    });
    assert_eq!(out, "main's value");
    assert_eq!(done.get(), 20);
}

#[test]
fn smart_run_waits_also_when_main_panics() {
    let pool = SmartAioPool::new(4);
    let done = Counter::default();
    let d = done.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        smart_run(async move {
            for _ in 0..5 {
                let d = d.clone();
                pool.submit(move || d.sleeping_task(5))
                    .await
                    .unwrap()
                    .detach();
            }
            panic!("main failed");
        })
    }));
    let payload = result.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"main failed"));
    assert_eq!(done.get(), 5);
}

#[test]
fn tasks_interrupted_by_a_runtime_shutdown_are_rerun_on_the_next_runtime() {
    let pool = SmartAioPool::builder().max_concurrency(2).build();
    let starts = Arc::new(AtomicUsize::new(0));
    let ends = Arc::new(AtomicUsize::new(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handles = rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..5 {
            let (s, e) = (starts.clone(), ends.clone());
            handles.push(
                pool.submit(move || {
                    let (s, e) = (s.clone(), e.clone());
                    async move {
                        s.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        e.fetch_add(1, Ordering::SeqCst);
                        i
                    }
                })
                .await
                .unwrap(),
            );
        }
        tokio::task::yield_now().await; // two tasks start, then the runtime goes away
        handles
    });
    drop(rt);
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    assert_eq!(ends.load(Ordering::SeqCst), 0);
    assert_eq!(pool.pending_count(), 5, "interrupted tasks were not kept");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        pool.wait_for_all().await;
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap(), i);
        }
    });
    assert_eq!(ends.load(Ordering::SeqCst), 5);
    assert_eq!(
        starts.load(Ordering::SeqCst),
        7,
        "the two interrupted runs start over"
    );
    rt.block_on(pool.shutdown());
}
