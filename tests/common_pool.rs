//! CommonAioPool: the behaviours users rely on (issue 2).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use nb_aiopool::{CancelReason, CommonAioPool, RunError, SubmitErrorKind};
use support::{within, Gate, Gauge};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_concurrency_running() {
    let pool = CommonAioPool::new(7, 20);
    let gauge = Gauge::default();
    let mut handles = Vec::new();
    for i in 0..500u64 {
        let gauge = gauge.clone();
        handles.push(
            pool.submit(async move {
                let _g = gauge.enter();
                for _ in 0..(i % 4) {
                    tokio::task::yield_now().await;
                }
                i
            })
            .await
            .unwrap(),
        );
        let stats = pool.stats();
        assert!(stats.running <= 7, "{stats:?}");
        assert!(stats.queued <= 20, "{stats:?}");
    }
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(within("handle", h).await.unwrap(), i as u64);
    }
    assert!(gauge.max() <= 7, "saw {} running at once", gauge.max());
    assert!(gauge.max() >= 2, "the pool never ran two tasks at once");
}

#[tokio::test]
async fn queued_tasks_start_in_submission_order() {
    let pool = CommonAioPool::new(1, 100);
    let order = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate::default();
    let blocker = {
        let gate = gate.clone();
        pool.submit(async move { gate.wait().await }).await.unwrap()
    };
    for i in 0..50 {
        let order = order.clone();
        pool.submit(async move { order.lock().unwrap().push(i) })
            .await
            .unwrap()
            .detach();
    }
    gate.open();
    blocker.await.unwrap();
    within("shutdown", pool.shutdown()).await;
    assert_eq!(*order.lock().unwrap(), (0..50).collect::<Vec<_>>());
}

/// A burst of submits into free slots starts every job at once, in submission order,
/// though the pool wakes only a few slot tasks at a time for it (each one that takes a job
/// schedules the next): stats count them all as running from the submit on.
#[tokio::test]
async fn a_burst_into_free_slots_starts_every_job_in_order() {
    burst_starts_every_job(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_into_free_slots_starts_every_job_on_two_threads() {
    burst_starts_every_job(false).await;
}

async fn burst_starts_every_job(check_order: bool) {
    const N: usize = 200;
    let pool = CommonAioPool::new(N, 0);
    let gauge = Gauge::default();
    let gate = Gate::default();
    let order = Arc::new(Mutex::new(Vec::new()));
    for i in 0..N {
        let (gauge, gate, order) = (gauge.clone(), gate.clone(), order.clone());
        pool.submit(async move {
            order.lock().unwrap().push(i);
            let _running = gauge.enter();
            gate.wait().await;
        })
        .await
        .unwrap()
        .detach();
    }
    let stats = pool.stats();
    assert_eq!((stats.running, stats.queued), (N, 0), "{stats:?}");
    within("every job of the burst to start", async {
        while gauge.now() < N {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    if check_order {
        assert_eq!(*order.lock().unwrap(), (0..N).collect::<Vec<_>>());
    }
    gate.open();
    within("shutdown", pool.shutdown()).await;
    assert_eq!(pool.stats().completed, N as u64);
}

#[tokio::test]
async fn submit_waits_while_full_then_proceeds() {
    let pool = CommonAioPool::new(1, 1);
    let gate = Gate::default();
    let g = gate.clone();
    let running = pool.submit(async move { g.wait().await }).await.unwrap();
    let queued = pool.submit(async { 2 }).await.unwrap();

    let mut third = Box::pin(pool.submit(async { 3 }));
    assert!((&mut third).now_or_never().is_none(), "submit did not wait");
    assert!(pool.try_submit(async { 4 }).unwrap_err().is_full());
    assert_eq!(pool.stats().queued, 1);

    gate.open();
    let third = within("third submit", third).await.unwrap();
    running.await.unwrap();
    assert_eq!(queued.await.unwrap(), 2);
    assert_eq!(third.await.unwrap(), 3);
}

#[tokio::test]
async fn a_submit_dropped_while_waiting_enqueues_nothing() {
    let pool = CommonAioPool::new(1, 0);
    let gate = Gate::default();
    let g = gate.clone();
    let busy = pool.submit(async move { g.wait().await }).await.unwrap();

    let dropped = Arc::new(AtomicUsize::new(0));
    struct OnDrop(Arc<AtomicUsize>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let guard = OnDrop(dropped.clone());
    let ran = Arc::new(AtomicUsize::new(0));
    let ran2 = ran.clone();
    let mut waiting = Box::pin(pool.submit(async move {
        let _guard = guard;
        ran2.fetch_add(1, Ordering::SeqCst);
    }));
    assert!((&mut waiting).now_or_never().is_none());
    drop(waiting);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the future was not dropped"
    );

    gate.open();
    busy.await.unwrap();
    within("shutdown", pool.shutdown()).await;
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(pool.stats().submitted, 1);
}

/// Room freed while submitters wait is theirs, in the order they came: a later waiter or
/// a `try_submit` never takes it, even before the first waiter is polled again.
#[tokio::test]
async fn waiting_submitters_get_room_in_turn_and_a_try_submit_takes_none_of_it() {
    let pool = CommonAioPool::new(1, 0);
    let gate = Gate::default();
    let g = gate.clone();
    let busy = pool.submit(async move { g.wait().await }).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let submit = |n: u32| {
        let order = order.clone();
        Box::pin(pool.submit(async move { order.lock().unwrap().push(n) }))
    };
    let mut first = submit(1);
    let mut second = submit(2);
    assert!((&mut first).now_or_never().is_none());
    assert!((&mut second).now_or_never().is_none());

    gate.open();
    busy.await.unwrap();
    assert!(pool.try_submit(async {}).unwrap_err().is_full());
    assert!(
        (&mut second).now_or_never().is_none(),
        "the second waiter took the room that came for the first"
    );
    let first = within("first submit", first).await.unwrap();
    first.await.unwrap();
    let second = within("second submit", second).await.unwrap();
    second.await.unwrap();
    assert_eq!(*order.lock().unwrap(), [1, 2]);
    assert_eq!(pool.stats().submitted, 3);
}

/// A submit dropped after room came for it (before it was polled again) passes the room
/// to the next waiter: no place is lost.
#[tokio::test]
async fn a_submit_dropped_after_room_came_for_it_passes_the_room_on() {
    let pool = CommonAioPool::new(1, 0);
    let gate = Gate::default();
    let g = gate.clone();
    let busy = pool.submit(async move { g.wait().await }).await.unwrap();
    let mut first = Box::pin(pool.submit(async { 1 }));
    let mut second = Box::pin(pool.submit(async { 2 }));
    assert!((&mut first).now_or_never().is_none());
    assert!((&mut second).now_or_never().is_none());

    gate.open();
    busy.await.unwrap();
    drop(first);
    let second = within("second submit", second).await.unwrap();
    assert_eq!(second.await.unwrap(), 2);
    // And the place comes back once more: the pool is not one short.
    assert_eq!(within("a run", pool.run(async { 3 })).await.unwrap(), 3);
    assert_eq!(pool.stats().submitted, 3);
    assert_eq!(pool.stats().completed, 3);
}

#[tokio::test]
async fn dropping_a_handle_detaches_the_task() {
    let pool = CommonAioPool::new(2, 10);
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..5 {
        let done = done.clone();
        drop(
            pool.submit(async move {
                tokio::task::yield_now().await;
                done.fetch_add(1, Ordering::SeqCst);
            })
            .await
            .unwrap(),
        );
    }
    within("shutdown", pool.shutdown()).await;
    assert_eq!(done.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_panic_is_reported_and_keeps_capacity() {
    let pool = CommonAioPool::new(1, 4);
    for _ in 0..3 {
        let h = pool
            .submit(async { panic!("task exploded") })
            .await
            .unwrap();
        let err = within("panicking task", h).await.unwrap_err();
        assert!(err.is_panic());
        assert!(err.to_string().contains("task exploded"), "{err}");
        let payload = err.into_panic();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"task exploded"));
    }
    assert_eq!(pool.run(async { 5 }).await.unwrap(), 5);
    let stats = pool.stats();
    assert_eq!((stats.panicked, stats.completed), (3, 1));
}

#[tokio::test]
async fn abort_cancels_queued_and_running_tasks() {
    let pool = CommonAioPool::new(1, 4);
    let running = pool.submit(std::future::pending::<()>()).await.unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let queued = pool
        .submit(async move {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
    queued.abort();
    running.abort();
    let e1 = within("running", running).await.unwrap_err();
    let e2 = within("queued", queued).await.unwrap_err();
    assert_eq!(e1.cancel_reason(), Some(CancelReason::Aborted));
    assert_eq!(e2.cancel_reason(), Some(CancelReason::Aborted));
    within("shutdown", pool.shutdown()).await;
    assert_eq!(ran.load(Ordering::SeqCst), 0, "an aborted queued task ran");
    assert_eq!(pool.stats().cancelled, 2);
}

/// An abort that comes while the job's first poll is still under way, before its slot
/// task has told the pool how to wake it, still reaches the job: the slot looks at the
/// abort once it has, so the job's place is freed (here the job never wakes itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_during_the_first_poll_reaches_the_job() {
    let pool = CommonAioPool::new(1, 4);
    let (polling_tx, polling_rx) = std::sync::mpsc::channel();
    let mut first = true;
    let never = std::future::poll_fn(move |_| {
        if std::mem::take(&mut first) {
            polling_tx.send(()).unwrap();
            // The abort comes now, while this poll holds its thread.
            std::thread::sleep(Duration::from_millis(200));
        }
        std::task::Poll::<()>::Pending
    });
    let running = pool.submit(never).await.unwrap();
    let abort = running.abort_handle();
    tokio::task::spawn_blocking(move || {
        polling_rx.recv().unwrap();
        abort.abort();
    })
    .await
    .unwrap();
    let err = within("the aborted handle", running).await.unwrap_err();
    assert_eq!(err.cancel_reason(), Some(CancelReason::Aborted));
    // Its slot was woken, and dropped the job: the pool drains.
    within("shutdown after the abort", pool.shutdown()).await;
    assert_eq!(pool.stats().cancelled, 1);
}

#[tokio::test]
async fn shutdown_completes_everything_refuses_new_work_and_is_idempotent() {
    let pool = CommonAioPool::new(2, 50);
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..40 {
        let done = done.clone();
        pool.submit(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            done.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap()
        .detach();
    }
    let other = pool.clone();
    let (_, _) = within("two shutdowns", async {
        tokio::join!(pool.shutdown(), other.shutdown())
    })
    .await;
    assert_eq!(done.load(Ordering::SeqCst), 40);
    assert!(pool.is_closed());
    within("third shutdown", pool.shutdown()).await;

    let err = pool.submit(async { 7 }).await.unwrap_err();
    assert_eq!(err.kind(), SubmitErrorKind::Closed);
    assert_eq!(err.into_inner().await, 7, "the future is handed back");
    assert!(pool.try_submit(async {}).unwrap_err().is_closed());
    match pool.run(async { 1 }).await {
        Err(RunError::Rejected(e)) => assert!(e.is_closed()),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn submitters_waiting_for_room_are_refused_at_shutdown() {
    let pool = CommonAioPool::new(1, 0);
    let gate = Gate::default();
    let g = gate.clone();
    let _busy = pool.submit(async move { g.wait().await }).await.unwrap();
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.submit(async { 1 })
                .await
                .map(drop)
                .map_err(|e| e.is_closed())
        }
    });
    tokio::task::yield_now().await;
    let shutdown = tokio::spawn({
        let pool = pool.clone();
        async move { pool.shutdown().await }
    });
    assert_eq!(
        within("refused submitter", waiting).await.unwrap(),
        Err(true)
    );
    gate.open();
    within("shutdown", shutdown).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_timeout_abandons_what_is_left_and_reports() {
    let pool = CommonAioPool::new(2, 10);
    let quick: Vec<_> = futures_util::future::join_all(
        (0..3).map(|_| pool.submit(tokio::time::sleep(Duration::from_millis(10)))),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let stuck_running = pool.submit(std::future::pending::<()>()).await.unwrap();
    let stuck_queued = pool.submit(std::future::pending::<()>()).await.unwrap();
    let stuck_queued2 = pool.submit(async {}).await.unwrap();

    let report = pool.shutdown_timeout(Duration::from_secs(1)).await;
    // 2 slots: the quick ones finish, then one slot stays stuck on a pending task, and the
    // other on the second pending task, so the last (ready) task never gets a slot.
    assert_eq!(report.finished(), 3, "{report:?}");
    assert_eq!(report.abandoned(), 3, "{report:?}");
    assert!(!report.is_complete());
    for h in quick {
        h.await.unwrap();
    }
    for h in [stuck_running, stuck_queued, stuck_queued2] {
        let err = within("abandoned task", h).await.unwrap_err();
        assert_eq!(err.cancel_reason(), Some(CancelReason::Abandoned), "{err}");
    }
    let stats = pool.stats();
    assert_eq!(stats.running + stats.queued, 0, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_timeout_reports_complete_when_in_time() {
    let pool = CommonAioPool::new(2, 10);
    for _ in 0..4 {
        pool.submit(tokio::time::sleep(Duration::from_millis(100)))
            .await
            .unwrap()
            .detach();
    }
    let report = pool.shutdown_timeout(Duration::from_secs(5)).await;
    assert!(report.is_complete());
    assert_eq!(report.finished(), 4);
}

#[test]
fn a_runtime_shutdown_resolves_handles_instead_of_hanging() {
    let pool = CommonAioPool::new(1, 5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (running, queued) = rt.block_on(async {
        let running = pool.submit(std::future::pending::<()>()).await.unwrap();
        let queued = pool.submit(async { 1 }).await.unwrap();
        tokio::task::yield_now().await;
        (running, queued)
    });
    drop(rt);
    let err = running.blocking_wait().unwrap_err();
    assert_eq!(err.cancel_reason(), Some(CancelReason::RuntimeShutdown));
    let err = queued.blocking_wait().unwrap_err();
    assert_eq!(err.cancel_reason(), Some(CancelReason::RuntimeShutdown));
    let stats = pool.stats();
    assert_eq!((stats.cancelled, stats.running, stats.queued), (2, 0, 0));

    // The next runtime picks the pool up again.
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(pool.run(async { 9 })).unwrap(), 9);
}

static GLOBAL: LazyLock<CommonAioPool> = LazyLock::new(|| CommonAioPool::new(4, 8));

#[test]
fn a_static_pool_serves_several_runtimes() {
    for i in 0..3 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(GLOBAL.run(async move { i })).unwrap(), i);
    }
}

#[test]
fn blocking_submit_from_plain_threads() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = CommonAioPool::new(3, 3);
    let gauge = Gauge::default();
    rt.block_on(pool.run(async {})).unwrap();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let pool = pool.clone();
            let gauge = gauge.clone();
            std::thread::spawn(move || {
                let handles: Vec<_> = (0..200)
                    .map(|i| {
                        let gauge = gauge.clone();
                        pool.blocking_submit(async move {
                            let _g = gauge.enter();
                            tokio::task::yield_now().await;
                            t * 1000 + i
                        })
                        .unwrap()
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.blocking_wait().unwrap())
                    .sum::<usize>()
            })
        })
        .collect();
    let sums: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(sums, [19900, 1000 * 200 + 19900]);
    assert!(gauge.max() <= 3);
    rt.block_on(pool.shutdown());
    assert!(pool.blocking_submit(async {}).unwrap_err().is_closed());
}

#[tokio::test]
#[should_panic(expected = "nb_aiopool: `blocking_submit` was called from an async context")]
async fn blocking_submit_in_async_context_panics_clearly() {
    let pool = CommonAioPool::new(1, 1);
    let _ = pool.blocking_submit(async {});
}

#[tokio::test]
#[should_panic(
    expected = "nb_aiopool: `TaskHandle::blocking_wait` was called from an async context"
)]
async fn blocking_wait_in_async_context_panics_clearly() {
    let pool = CommonAioPool::new(1, 1);
    let h = pool.submit(async {}).await.unwrap();
    let _ = h.blocking_wait();
}

#[test]
#[should_panic(expected = "nb_aiopool: CommonAioPool: max_concurrency must be at least 1, got 0")]
fn zero_concurrency_is_rejected() {
    let _ = CommonAioPool::new(0, 10);
}

#[test]
#[should_panic(expected = "exceeds the largest supported size")]
fn sizes_beyond_the_semaphore_are_rejected() {
    let _ = CommonAioPool::new(usize::MAX, 1);
}

#[tokio::test]
async fn queue_size_zero_means_no_waiting_room() {
    let pool = CommonAioPool::new(1, 0);
    let gate = Gate::default();
    let g = gate.clone();
    let busy = pool.submit(async move { g.wait().await }).await.unwrap();
    assert!(pool.try_submit(async {}).unwrap_err().is_full());
    gate.open();
    busy.await.unwrap();
    assert!(within("rendezvous", pool.run(async { 1 })).await.is_ok());
}

#[tokio::test]
async fn a_huge_queue_size_allocates_nothing_up_front() {
    // If the queue were allocated up front this would abort with an allocation failure.
    let pool = CommonAioPool::new(2, usize::MAX / 16);
    assert_eq!(pool.run(async { 3 }).await.unwrap(), 3);
}

#[tokio::test]
async fn batch_run_returns_results_in_input_order() {
    let pool = CommonAioPool::new(4, 2);
    let results = pool
        .batch_run((0..20u64).map(|i| async move {
            tokio::time::sleep(Duration::from_millis(20 - i)).await;
            i
        }))
        .await
        .unwrap();
    let values: Vec<u64> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, (0..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn stats_add_up() {
    let pool = CommonAioPool::new(2, 10);
    let gate = Gate::default();
    let mut handles = Vec::new();
    for i in 0..6 {
        let g = gate.clone();
        handles.push(
            pool.submit(async move {
                g.wait().await;
                if i == 0 {
                    panic!("one panics");
                }
            })
            .await
            .unwrap(),
        );
    }
    handles[5].abort();
    tokio::task::yield_now().await;
    let s = pool.stats();
    assert_eq!(s.submitted, 6);
    assert_eq!(
        s.submitted,
        (s.queued + s.running) as u64 + s.completed + s.panicked + s.cancelled
    );
    gate.open();
    within("shutdown", pool.shutdown()).await;
    let s = pool.stats();
    assert_eq!((s.completed, s.panicked, s.cancelled), (4, 1, 1), "{s:?}");
    assert_eq!((s.queued, s.running), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_blocking_its_thread_does_not_hold_up_queued_jobs() {
    let pool = CommonAioPool::new(8, 100);
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let blocker = pool
        .submit(async move {
            started_tx.send(()).unwrap();
            // Blocks this runtime thread until the test releases it.
            release_rx.recv().unwrap();
        })
        .await
        .unwrap();
    started_rx.await.unwrap();
    let mut quick = Vec::new();
    for i in 0..20 {
        quick.push(pool.submit(async move { i }).await.unwrap());
    }
    let sum: i32 = within("quick jobs while one thread is blocked", async {
        let mut sum = 0;
        for h in quick {
            sum += h.await.unwrap();
        }
        sum
    })
    .await;
    assert_eq!(sum, 190);
    release_tx.send(()).unwrap();
    within("blocker", blocker).await.unwrap();
}

#[tokio::test]
async fn a_nested_submit_into_a_full_pool_fails_instead_of_deadlocking() {
    let pool = CommonAioPool::new(1, 0);
    let inner = pool.clone();
    let outcome = pool
        .run(async move {
            match inner.submit(async { 1 }).await {
                Ok(_) => None,
                Err(e) => Some(e.kind()),
            }
        })
        .await
        .unwrap();
    assert_eq!(outcome, Some(SubmitErrorKind::WouldDeadlock));

    // With room, a nested submit works.
    let pool = CommonAioPool::new(2, 0);
    let inner = pool.clone();
    let v = pool
        .run(async move { inner.run(async { 2 }).await.unwrap() })
        .await
        .unwrap();
    assert_eq!(v, 2);
}

/// Every slot waits for a task queued behind it: the last wait to join breaks the
/// deadlock by cancelling the task it awaits; the other one completes.
#[tokio::test(start_paused = true)]
async fn awaiting_own_queued_tasks_from_every_slot_is_broken_with_would_deadlock() {
    let pool = CommonAioPool::new(2, 4);
    let gate = Gate::default();
    let mut parents = Vec::new();
    for i in 0..2 {
        let inner = pool.clone();
        let gate = gate.clone();
        parents.push(
            pool.submit(async move {
                gate.wait().await; // both parents hold their slots before submitting
                let child = inner.submit(async move { i * 10 }).await.unwrap();
                child.await
            })
            .await
            .unwrap(),
        );
    }
    gate.open();
    let mut results = Vec::new();
    for p in parents {
        results.push(within("parent", p).await.unwrap());
    }
    let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(errors.len(), 1, "{results:?}");
    assert_eq!(errors[0].cancel_reason(), Some(CancelReason::WouldDeadlock));
    assert!(results.iter().any(|r| matches!(r, Ok(v) if *v % 10 == 0)));
    within("shutdown", pool.shutdown()).await;
    let s = pool.stats();
    assert_eq!((s.completed, s.cancelled), (3, 1), "{s:?}");
}

/// Waiting for an own queued task is fine while another slot makes progress.
#[tokio::test(start_paused = true)]
async fn awaiting_an_own_queued_task_waits_while_another_slot_progresses() {
    let pool = CommonAioPool::new(2, 4);
    let gate = Gate::default();
    let g = gate.clone();
    let busy = pool.submit(async move { g.wait().await }).await.unwrap();
    let inner = pool.clone();
    let parent = pool
        .submit(async move {
            let child = inner.submit(async { 7 }).await.unwrap();
            child.await
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !parent.is_finished(),
        "the parent gave up although a slot could free"
    );
    gate.open();
    busy.await.unwrap();
    assert_eq!(within("parent", parent).await.unwrap().unwrap(), 7);
}

/// Two running tasks waiting for each other: neither can finish, so one wait is broken.
#[tokio::test(start_paused = true)]
async fn running_tasks_waiting_for_each_other_are_broken() {
    let pool = CommonAioPool::new(2, 0);
    let (tx_a, rx_a) = tokio::sync::oneshot::channel::<nb_aiopool::TaskHandle<u32>>();
    let (tx_b, rx_b) = tokio::sync::oneshot::channel::<nb_aiopool::TaskHandle<u32>>();
    let a = pool
        .submit(async move {
            let b = rx_b.await.unwrap();
            b.await.map(|v| v + 1).unwrap_or(100)
        })
        .await
        .unwrap();
    let b = pool
        .submit(async move {
            let a = rx_a.await.unwrap();
            a.await.map(|v| v + 1).unwrap_or(200)
        })
        .await
        .unwrap();
    // Each task gets the other's handle.
    tx_a.send(a).ok().unwrap();
    tx_b.send(b).ok().unwrap();
    within("shutdown", pool.shutdown()).await;
    let s = pool.stats();
    assert_eq!(s.cancelled, 1, "one wait was broken: {s:?}");
    assert_eq!(s.completed, 1, "{s:?}");
}

/// `PoolStats::running` after a shrink (finding 97, review r11): the tasks running then
/// finish, so `running` may exceed the new `max_concurrency`; no task starts until it is
/// below it.
#[tokio::test(start_paused = true)]
async fn after_a_shrink_running_tasks_finish_and_nothing_starts_until_below_the_new_size() {
    let pool = CommonAioPool::new(4, 4);
    let mut running = Vec::new();
    for _ in 0..4 {
        running.push(pool.submit(std::future::pending::<()>()).await.unwrap());
    }
    tokio::task::yield_now().await;
    pool.set_max_concurrency(1);
    let next = pool.submit(async { 7u32 }).await.unwrap();
    tokio::task::yield_now().await;
    let s = pool.stats();
    assert_eq!((s.running, s.queued), (4, 1), "{s}");
    for h in running.drain(..3) {
        h.abort();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let s = pool.stats();
    assert_eq!(
        (s.running, s.queued),
        (1, 1),
        "at the new size: nothing starts: {s}"
    );
    running.pop().unwrap().abort();
    assert_eq!(within("the queued task", next).await.unwrap(), 7);
}
