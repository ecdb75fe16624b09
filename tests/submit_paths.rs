//! The submit family and the handles, as a review of them (2026-12-05, on 6ec285d) tried
//! them: cancel safety of submits dropped at each point, the order of waiting submitters,
//! timeouts at the deadline, `batch_run`'s counts, handles after completion, storms of
//! drops, aborts and resizes on a multi-thread runtime; and the regression tests of the
//! faults it found (RELIABILITY.md, findings 184-186): `wait()` and `shutdown()` awaited
//! inside a job of their own pool waited for that job (184); `shutdown()` closed the pool
//! only at its first poll (185); `submit` can refuse with `NoRuntime` (186, docs).

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nb_aiopool::{CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitErrorKind, SubmitOptions};
use support::within;

fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(f).poll(&mut cx)
}

/// Whether `wait` (a pool's wait, awaited inside one of its jobs) returns within 5 s.
async fn returns_in_a_job(wait: impl Future<Output = ()>) -> bool {
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .is_ok()
}

/// A granted waiter dropped before its next poll passes its place to the next waiter.
#[tokio::test(start_paused = true)]
async fn granted_then_dropped_submit_passes_the_place_on() {
    let pool = support::common_local(1, 0);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let busy = pool.submit(async move { rx.await.ok() }).await.unwrap();
    let mut a = Box::pin(pool.submit(async { 1 }));
    let mut b = Box::pin(pool.submit(async { 2 }));
    assert!(poll_once(&mut a).is_pending());
    assert!(poll_once(&mut b).is_pending());
    tx.send(()).unwrap();
    within("busy", busy).await.unwrap();
    drop(a);
    let hb = match poll_once(&mut b) {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => panic!("b did not get the place a gave up"),
    };
    assert_eq!(within("b", hb).await.unwrap(), 2);
    let s = pool.stats();
    assert_eq!((s.submitted, s.completed), (2, 2), "{s:?}");
    assert!(pool.try_submit(async {}).is_ok());
}

/// Waiting submitters are served by priority, then in the order they came.
#[tokio::test(start_paused = true)]
async fn waiting_submitters_by_priority_common_and_no_queue() {
    for no_queue in [false, true] {
        let order = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c: Option<CommonAioPool> = (!no_queue).then(|| support::common_local(1, 0));
        let n: Option<NoQueueAioPool> = no_queue.then(|| {
            NoQueueAioPool::builder()
                .max_concurrency(1)
                .process_wide(false)
                .build()
        });
        let busy = async move {
            rx.await.ok();
        };
        if let Some(c) = &c {
            c.submit(busy).await.unwrap().detach();
        } else {
            n.as_ref().unwrap().submit(busy).await.unwrap().detach();
        }
        let prios = [0, 5, 0, 5, -1, 7];
        let mut subs = Vec::new();
        for (i, p) in prios.iter().enumerate() {
            let order = order.clone();
            let fut = async move {
                order.lock().unwrap().push(i);
            };
            let opts = SubmitOptions::new().priority(*p);
            let mut s: Pin<Box<dyn Future<Output = _>>> = if let Some(c) = &c {
                Box::pin(c.submit_with(fut, opts))
            } else {
                Box::pin(n.as_ref().unwrap().submit_with(fut, opts))
            };
            assert!(poll_once(&mut s).is_pending());
            subs.push(s);
        }
        tx.send(()).unwrap();
        let handles = within("subs", futures_util::future::join_all(subs)).await;
        for h in handles {
            let h = h.unwrap();
            within("h", h).await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec![5, 1, 3, 0, 2, 4],
            "no_queue={no_queue}"
        );
    }
}

/// A zero timeout into a full pool: TimedOut, the task handed back, nothing counted.
#[tokio::test(start_paused = true)]
async fn zero_timeout_into_a_full_pool() {
    let pool = support::common_local(1, 0);
    let _busy = pool.submit(std::future::pending::<()>()).await.unwrap();
    let err = pool
        .submit_with(async { 3 }, SubmitOptions::new().timeout(Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), SubmitErrorKind::TimedOut);
    assert_eq!(err.into_inner().await, 3);
    assert_eq!(pool.stats().submitted, 1);
}

/// A grant arriving at the same instant as the deadline: whatever the outcome, no place
/// is lost.
#[tokio::test(start_paused = true)]
async fn grant_at_the_deadline_loses_no_place() {
    for _ in 0..20 {
        let pool = support::common_local(1, 0);
        pool.submit(tokio::time::sleep(Duration::from_millis(10)))
            .await
            .unwrap()
            .detach();
        let r = pool
            .submit_with(
                async { 3 },
                SubmitOptions::new().timeout(Duration::from_millis(10)),
            )
            .await;
        if let Ok(h) = r {
            within("h", h).await.unwrap();
        }
        within("wait", pool.wait()).await;
        let s = pool.stats();
        assert_eq!(s.unfinished(), 0);
        // The room is whole: exactly one try_submit fits.
        let h = pool.try_submit(std::future::pending::<()>()).unwrap();
        assert!(pool.try_submit(async {}).unwrap_err().is_full());
        h.abort();
    }
}

/// `batch_run` of n: `stats().completed == n` right after, on a multi-thread runtime.
#[test]
fn batch_run_counts_right_after_multi_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..30 {
        rt.block_on(async {
            let pool = support::common_local(3, 2);
            let res = pool
                .batch_run((0..50u32).map(|i| async move {
                    tokio::task::yield_now().await;
                    i
                }))
                .await
                .unwrap();
            assert_eq!(pool.stats().completed, 50, "round {round}");
            let v: Vec<u32> = res.into_iter().map(Result::unwrap).collect();
            assert_eq!(v, (0..50).collect::<Vec<_>>());
            let smart = SmartAioPool::builder()
                .max_concurrency(3)
                .max_queue_size(2)
                .process_wide(false)
                .auto_shutdown(false)
                .build();
            let res = smart
                .batch_run((0..50u32).map(|i| {
                    move || async move {
                        tokio::task::yield_now().await;
                        i
                    }
                }))
                .await
                .unwrap();
            assert_eq!(smart.stats().completed, 50, "round {round}");
            assert_eq!(res.len(), 50);
        });
    }
}

/// Abort after completion does nothing: the handle still gives the value.
#[tokio::test(start_paused = true)]
async fn abort_after_completion_keeps_the_value() {
    let pool = support::common_local(2, 2);
    let h = pool.submit(async { 9 }).await.unwrap();
    pool.wait().await;
    assert!(h.is_finished());
    let ah = h.abort_handle();
    h.abort();
    ah.abort();
    assert!(ah.is_finished());
    assert_eq!(h.await.unwrap(), 9);
    assert_eq!(pool.stats().cancelled, 0);
}

/// Submit drops at random points, under a multi-thread runtime: every accepted task is
/// counted once, every handle resolves, and the room is whole at the end.
#[test]
fn random_submit_drops_lose_no_place() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..20u64 {
        rt.block_on(async move {
            let pool = support::common_local(2, 1);
            let ran = Arc::new(AtomicUsize::new(0));
            let accepted = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for t in 0..4u64 {
                let pool = pool.clone();
                let ran = ran.clone();
                let accepted = accepted.clone();
                tasks.push(tokio::spawn(async move {
                    let mut handles = Vec::new();
                    for i in 0..200u64 {
                        let ran = ran.clone();
                        let fut = async move {
                            if i % 3 == 0 {
                                tokio::task::yield_now().await;
                            }
                            ran.fetch_add(1, Ordering::SeqCst);
                        };
                        let opts = SubmitOptions::new().priority(((i + t + round) % 3) as i32);
                        let sub = pool.submit_with(fut, opts);
                        tokio::select! {
                            r = sub => { handles.push(r.unwrap()); accepted.fetch_add(1, Ordering::SeqCst); }
                            _ = tokio::task::yield_now() => {}
                        }
                    }
                    for h in handles {
                        h.await.unwrap();
                    }
                }));
            }
            for t in tasks {
                within("task", t).await.unwrap();
            }
            within("wait", pool.wait()).await;
            let s = pool.stats();
            assert_eq!(s.submitted as usize, accepted.load(Ordering::SeqCst), "{s:?}");
            assert_eq!(s.completed as usize, ran.load(Ordering::SeqCst), "{s:?}");
            assert_eq!(s.completed, s.submitted);
            let mut hs = Vec::new();
            for _ in 0..3 {
                hs.push(pool.try_submit(std::future::pending::<()>()).unwrap());
            }
            assert!(pool.try_submit(async {}).unwrap_err().is_full());
            for h in hs {
                h.abort();
            }
        });
    }
}

/// Shutdown while submitters wait: they are refused with Closed and get their task back.
#[tokio::test(start_paused = true)]
async fn waiting_submitters_refused_on_shutdown_get_tasks_back() {
    let pool = support::common_local(1, 0);
    let _busy = pool
        .submit(tokio::time::sleep(Duration::from_millis(5)))
        .await
        .unwrap();
    let mut w = Box::pin(pool.submit_with(
        async { 4 },
        SubmitOptions::new().timeout(Duration::from_secs(1)),
    ));
    assert!(poll_once(&mut w).is_pending());
    let sd = pool.shutdown();
    let (r, ()) = tokio::join!(w, sd);
    let err = r.unwrap_err();
    assert_eq!(err.kind(), SubmitErrorKind::Closed);
    assert_eq!(err.into_inner().await, 4);
}

/// A handle polled again after its result panics with the documented message.
#[tokio::test]
#[should_panic(expected = "TaskHandle polled after it returned its result")]
async fn handle_polled_again_panics() {
    let pool = support::common_local(1, 0);
    let mut h = pool.submit(async { 1 }).await.unwrap();
    assert_eq!((&mut h).await.unwrap(), 1);
    let _ = poll_once(&mut h);
}

/// Finding 184: `wait()` called from inside a job of the same pool waited for that job
/// itself: it could never return (a hang, with no error and no panic).
#[tokio::test(start_paused = true)]
async fn wait_from_inside_own_job_does_not_hang() {
    let pool = support::common_local(2, 10);
    let inner = pool.clone();
    let h = pool
        .submit(async move { returns_in_a_job(inner.wait()).await })
        .await
        .unwrap();
    let returned = within("job", h).await.unwrap();
    assert!(
        returned,
        "wait() inside a job of its own pool never returned"
    );
}

/// Finding 185: `shutdown()` (and `shutdown_timeout`) dropped before its first poll: the
/// docs say dropping it "stops the wait, not the shutdown (intake stays closed)".
#[tokio::test(start_paused = true)]
async fn shutdown_dropped_before_first_poll_still_closes() {
    let pool = support::common_local(1, 1);
    drop(pool.shutdown());
    assert!(
        pool.is_closed(),
        "a shutdown() dropped unpolled left the pool open"
    );
    let pool = support::common_local(1, 1);
    drop(pool.shutdown_timeout(Duration::from_secs(1)));
    assert!(pool.is_closed(), "shutdown_timeout, dropped unpolled");

    let no_queue = || {
        NoQueueAioPool::builder()
            .max_concurrency(1)
            .process_wide(false)
            .build()
    };
    let pool = no_queue();
    drop(pool.shutdown());
    assert!(
        pool.is_closed(),
        "NoQueueAioPool::shutdown, dropped unpolled"
    );
    let pool = no_queue();
    drop(pool.shutdown_timeout(Duration::from_secs(1)));
    assert!(
        pool.is_closed(),
        "NoQueueAioPool::shutdown_timeout, dropped unpolled"
    );

    let smart = || support::smart_local(1);
    let pool = smart();
    drop(pool.shutdown());
    assert!(pool.is_closed(), "SmartAioPool::shutdown, dropped unpolled");
    let pool = smart();
    drop(pool.shutdown_timeout(Duration::from_secs(1)));
    assert!(
        pool.is_closed(),
        "SmartAioPool::shutdown_timeout, dropped unpolled"
    );
}

/// Finding 185: `shutdown()` raced in a `select!` against a branch that is ready at once.
#[tokio::test(start_paused = true)]
async fn shutdown_in_select_against_a_ready_branch() {
    let mut open = 0;
    for _ in 0..64 {
        let pool = support::common_local(1, 1);
        tokio::select! {
            () = pool.shutdown() => {}
            () = std::future::ready(()) => {}
        }
        open += usize::from(!pool.is_closed());
    }
    assert_eq!(open, 0, "{open} of 64 shutdowns left their pool open");
}

/// Finding 184, for `shutdown()` and the other pools: a wait inside a job still waits for
/// the others.
#[tokio::test(start_paused = true)]
async fn wait_and_shutdown_from_inside_own_job_wait_for_the_others() {
    let pool = support::common_local(2, 10);
    let other = pool
        .submit(tokio::time::sleep(Duration::from_secs(1)))
        .await
        .unwrap();
    let (inner, t0) = (pool.clone(), tokio::time::Instant::now());
    let h = pool
        .submit(async move {
            let ok = tokio::time::timeout(Duration::from_secs(5), inner.shutdown())
                .await
                .is_ok();
            (ok, t0.elapsed())
        })
        .await
        .unwrap();
    let (ok, took) = within("job", h).await.unwrap();
    assert!(ok, "shutdown() inside a job of its own pool never returned");
    assert!(
        took >= Duration::from_secs(1),
        "returned before the other job ended: {took:?}"
    );
    assert!(other.is_finished());

    let nq = NoQueueAioPool::builder()
        .max_concurrency(2)
        .process_wide(false)
        .build();
    let inner = nq.clone();
    let h = nq
        .submit(async move { returns_in_a_job(inner.wait()).await })
        .await
        .unwrap();
    assert!(
        within("nq job", h).await.unwrap(),
        "NoQueueAioPool wait() inside a job"
    );

    let smart = support::smart_local(2);
    let inner = smart.clone();
    let h = smart
        .submit(move || {
            let inner = inner.clone();
            async move { returns_in_a_job(inner.wait()).await }
        })
        .await
        .unwrap();
    assert!(
        within("smart job", h).await.unwrap(),
        "SmartAioPool wait() inside a job"
    );
}

/// A mixed storm (timed submits dropped at random, aborts, cancel_all, resizes, blocking
/// submits from a plain thread) on a multi-thread runtime: every accepted task resolves,
/// the counters add up, and at rest the room is whole.
#[test]
fn storm_keeps_the_room_whole() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..25u64 {
        let pool = support::common_local(3, 2);
        let accepted = Arc::new(AtomicUsize::new(0));
        let blocking = {
            let pool = pool.clone();
            let accepted = accepted.clone();
            let _ = rt.block_on(pool.run(async {}));
            std::thread::spawn(move || {
                let mut hs = Vec::new();
                for i in 0..50u64 {
                    if let Ok(h) = pool.blocking_submit(async move {
                        if i % 2 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }) {
                        accepted.fetch_add(1, Ordering::SeqCst);
                        if i % 5 == 0 {
                            h.abort();
                        }
                        hs.push(h);
                    }
                }
                for h in hs {
                    let _ = h.blocking_wait();
                }
            })
        };
        rt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..3u64 {
                let pool = pool.clone();
                let accepted = accepted.clone();
                tasks.push(tokio::spawn(async move {
                    let mut hs = Vec::new();
                    for i in 0..150u64 {
                        let k = (i * 7 + t * 13 + round) % 11;
                        let opts = SubmitOptions::new()
                            .priority((k % 3) as i32)
                            .timeout(Duration::from_micros(50 * k));
                        let fut = async move {
                            if k % 2 == 0 {
                                tokio::task::yield_now().await;
                            }
                            if k == 3 {
                                tokio::time::sleep(Duration::from_micros(100)).await;
                            }
                        };
                        let sub = pool.submit_with(fut, opts);
                        let r = tokio::select! {
                            r = sub => Some(r),
                            _ = tokio::task::yield_now(), if k == 5 => None,
                        };
                        if let Some(Ok(h)) = r {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            if k == 7 {
                                h.abort();
                            }
                            hs.push(h);
                        }
                        if k == 9 && i % 50 == 0 {
                            pool.set_max_concurrency(1 + (i as usize % 4));
                        }
                        if t == 0 && i == 75 {
                            drop(pool.cancel_all());
                        }
                    }
                    for h in hs {
                        let _ = h.await;
                    }
                }));
            }
            for t in tasks {
                within("task", t).await.unwrap();
            }
        });
        blocking.join().unwrap();
        rt.block_on(async {
            pool.set_max_concurrency(3);
            within("wait", pool.wait()).await;
            let s = pool.stats();
            assert_eq!(s.unfinished(), 0, "{s:?}");
            assert_eq!(
                s.submitted as usize,
                accepted.load(Ordering::SeqCst) + 1,
                "{s:?}"
            );
            assert_eq!(s.submitted, s.completed + s.panicked + s.cancelled, "{s:?}");
            let mut hs = Vec::new();
            for _ in 0..5 {
                hs.push(
                    pool.try_submit(std::future::pending::<()>())
                        .expect("room lost"),
                );
            }
            assert!(
                pool.try_submit(async {}).unwrap_err().is_full(),
                "room grew"
            );
            for h in hs {
                h.abort();
            }
            within("wait2", pool.wait()).await;
        });
    }
}

/// Finding 186 (docs): a plain `block_on` (no tokio context) of `CommonAioPool::submit`
/// after the pool's only runtime ended: `NoRuntime`, which `submit`'s docs did not list.
#[test]
fn common_submit_from_a_plain_executor_after_the_runtime_ended_is_no_runtime() {
    let pool = support::common_local(1, 1);
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(pool.run(async {})).unwrap();
    }
    let mut sub = Box::pin(pool.submit(async { 5 }));
    let err = match poll_once(&mut sub) {
        Poll::Ready(r) => r.unwrap_err(),
        Poll::Pending => panic!("pending"),
    };
    assert_eq!(err.kind(), SubmitErrorKind::NoRuntime);
    let try_err = pool.try_submit(async { 6 }).unwrap_err();
    assert!(try_err.is_no_runtime());
}

/// A `blocking_submit` parked for room is refused with `Closed` by a shutdown, and gets
/// its task back.
#[test]
fn parked_blocking_submit_is_refused_by_shutdown() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pool = support::common_local(1, 0);
    let busy = rt
        .block_on(pool.submit(async { tokio::time::sleep(Duration::from_millis(300)).await }))
        .unwrap();
    let p2 = pool.clone();
    let t = std::thread::spawn(move || {
        let err = p2.blocking_submit(async { 11 }).unwrap_err();
        (err.kind(), err.into_inner())
    });
    std::thread::sleep(Duration::from_millis(50));
    rt.block_on(pool.shutdown());
    let (kind, fut) = t.join().unwrap();
    assert_eq!(kind, SubmitErrorKind::Closed);
    assert_eq!(rt.block_on(fut), 11);
    rt.block_on(busy).unwrap();
}

/// SmartAioPool: a granted waiter dropped before its next poll passes its place on.
#[tokio::test(start_paused = true)]
async fn smart_granted_then_dropped_submit_passes_the_place_on() {
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(0)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let busy = pool
        .submit(move || {
            let g = g.clone();
            async move { g.notified().await }
        })
        .await
        .unwrap();
    tokio::task::yield_now().await;
    let mut a = Box::pin(pool.submit(|| async { 1 }));
    let mut b = Box::pin(pool.submit(|| async { 2 }));
    assert!(poll_once(&mut a).is_pending());
    assert!(poll_once(&mut b).is_pending());
    gate.notify_one();
    within("busy", busy).await.unwrap();
    drop(a);
    let hb = match poll_once(&mut b) {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => panic!("b did not get the place a gave up"),
    };
    assert_eq!(within("b", hb).await.unwrap(), 2);
    assert_eq!(pool.stats().submitted, 2);
}
