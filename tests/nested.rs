//! Nested submission (issue 6): a task that submits into its own full pool gets
//! `SubmitErrorKind::WouldDeadlock` at once instead of hanging; with room, nested submits
//! work; a task of another pool is not refused, it waits. On both runtime flavours.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use nb_aiopool::{
    CancelReason, CommonAioPool, NoQueueAioPool, PoolStats, SmartAioPool, SubmitErrorKind,
    TaskHandle,
};
use tokio::sync::Notify;

/// Fails the test with a message instead of hanging.
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("hang: {what}"))
}

/// What a nested submit into a full pool observed: the error kind, and the value of the
/// future that was handed back (run by the outer task itself).
type Observed = (SubmitErrorKind, u32);

macro_rules! nested_full_future_pool {
    ($name:ident, $flavor:meta, $pool:expr) => {
        #[tokio::test($flavor)]
        async fn $name() {
            let pool = $pool;
            let inner = pool.clone();
            let outer = pool
                .submit(async move {
                    // This task holds the pool's only slot and there is no queue room.
                    let err = inner.submit(async { 41 }).await.unwrap_err();
                    assert!(err.is_would_deadlock(), "{err:?}");
                    assert!(!err.is_closed());
                    let kind = err.kind();
                    // try_submit never waits: it says "full".
                    let full = inner.try_submit(async {}).unwrap_err();
                    assert!(full.is_full(), "{full:?}");
                    let back = err.into_inner().await + 1;
                    (kind, back)
                })
                .await
                .unwrap();
            let observed: Observed = within("the outer task", outer).await.unwrap();
            assert_eq!(observed, (SubmitErrorKind::WouldDeadlock, 42));
            within("shutdown", pool.shutdown()).await;
            let stats = pool.stats();
            assert_eq!((stats.submitted, stats.completed), (1, 1), "{stats:?}");
        }
    };
}

nested_full_future_pool!(
    common_nested_submit_into_full_pool_is_refused,
    flavor = "current_thread",
    CommonAioPool::new(1, 0)
);
nested_full_future_pool!(
    common_nested_submit_into_full_pool_is_refused_multi_thread,
    flavor = "multi_thread",
    CommonAioPool::new(1, 0)
);
nested_full_future_pool!(
    no_queue_nested_submit_into_full_pool_is_refused,
    flavor = "current_thread",
    NoQueueAioPool::new(1)
);
nested_full_future_pool!(
    no_queue_nested_submit_into_full_pool_is_refused_multi_thread,
    flavor = "multi_thread",
    NoQueueAioPool::new(1)
);

fn tiny_smart() -> SmartAioPool {
    SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(0)
        .auto_shutdown(false)
        .build()
}

async fn smart_nested_full(pool: SmartAioPool) {
    let inner = pool.clone();
    let outer = pool
        .submit(move || {
            let inner = inner.clone();
            async move {
                let err = inner.submit(|| async { 41 }).await.unwrap_err();
                assert!(err.is_would_deadlock(), "{err:?}");
                let kind = err.kind();
                assert!(inner.try_submit(|| async { 0 }).unwrap_err().is_full());
                let recipe = err.into_inner();
                (kind, recipe().await + 1)
            }
        })
        .await
        .unwrap();
    let observed: Observed = within("the outer task", outer).await.unwrap();
    assert_eq!(observed, (SubmitErrorKind::WouldDeadlock, 42));
    within("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn smart_nested_submit_into_full_pool_is_refused() {
    smart_nested_full(tiny_smart()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smart_nested_submit_into_full_pool_is_refused_multi_thread() {
    smart_nested_full(tiny_smart()).await;
}

/// A queue with room: the nested submit is accepted (it waits in the queue) even though
/// every slot is busy.
#[tokio::test]
async fn common_nested_submit_with_queue_room_is_accepted() {
    let pool = CommonAioPool::new(1, 1);
    let inner = pool.clone();
    let outer = pool
        .submit(async move {
            // Handed out, not awaited here: with one slot, awaiting would deadlock (see
            // bad_input.rs).
            Some(inner.submit(async { 7 }).await.expect("room in the queue"))
        })
        .await
        .unwrap();
    let nested = within("outer", outer).await.unwrap().unwrap();
    assert_eq!(within("nested", nested).await.unwrap(), 7);
    within("shutdown", pool.shutdown()).await;
}

macro_rules! nested_with_room {
    ($name:ident, $flavor:meta, $pool:expr) => {
        /// Two slots: the nested task runs in the second one and the outer task awaits it.
        #[tokio::test($flavor)]
        async fn $name() {
            let pool = $pool;
            let inner = pool.clone();
            let outer = pool
                .submit(async move {
                    let h = inner.submit(async { 20 }).await.expect("a slot is free");
                    h.await.unwrap() + 1
                })
                .await
                .unwrap();
            assert_eq!(within("outer", outer).await.unwrap(), 21);
            // A handle resolves as its task ends, a moment before the pool's counters see
            // it; `shutdown` waits for both.
            within("shutdown", pool.shutdown()).await;
            let stats = pool.stats();
            assert_eq!((stats.submitted, stats.completed), (2, 2), "{stats:?}");
        }
    };
}

nested_with_room!(
    common_nested_submit_with_room_works,
    flavor = "current_thread",
    CommonAioPool::new(2, 0)
);
nested_with_room!(
    common_nested_submit_with_room_works_multi_thread,
    flavor = "multi_thread",
    CommonAioPool::new(2, 0)
);
nested_with_room!(
    no_queue_nested_submit_with_room_works,
    flavor = "current_thread",
    NoQueueAioPool::new(2)
);
nested_with_room!(
    no_queue_nested_submit_with_room_works_multi_thread,
    flavor = "multi_thread",
    NoQueueAioPool::new(2)
);

async fn smart_nested_room(pool: SmartAioPool) {
    let inner = pool.clone();
    let outer = pool
        .submit(move || {
            let inner = inner.clone();
            async move {
                let h = inner.submit(|| async { 20 }).await.expect("a slot is free");
                h.await.unwrap() + 1
            }
        })
        .await
        .unwrap();
    assert_eq!(within("outer", outer).await.unwrap(), 21);
    within("shutdown", pool.shutdown()).await;
}

#[tokio::test]
async fn smart_nested_submit_with_room_works() {
    // min_workers 1: the second worker is added by the nested submit.
    let pool = SmartAioPool::builder()
        .max_concurrency(2)
        .max_queue_size(0)
        .min_workers(1)
        .auto_shutdown(false)
        .build();
    smart_nested_room(pool).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn smart_nested_submit_with_room_works_multi_thread() {
    let pool = SmartAioPool::builder()
        .max_concurrency(2)
        .max_queue_size(0)
        .min_workers(0)
        .auto_shutdown(false)
        .build();
    smart_nested_room(pool).await;
}

/// The check is per pool: a task of pool A submitting into a *different* full pool B waits
/// for room like any other submitter (it is not refused), and gets in when B frees up.
async fn other_full_pool_waits() {
    let a = CommonAioPool::new(1, 0);
    let b = CommonAioPool::new(1, 0);
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let blocker = b.submit(async move { g.notified().await }).await.unwrap();
    let b2 = b.clone();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let outer = a
        .submit(async move {
            let _ = entered_tx.send(());
            let h = b2.submit(async { 5 }).await.expect("waits, then gets in");
            h.await.unwrap()
        })
        .await
        .unwrap();
    within("outer task starts", entered_rx).await.unwrap();
    // The outer task is now waiting for room in b; b's slot is held by the blocker.
    gate.notify_one();
    assert_eq!(within("outer", outer).await.unwrap(), 5);
    within("blocker", blocker).await.unwrap();
    within("shutdown a", a.shutdown()).await;
    within("shutdown b", b.shutdown()).await;
}

#[tokio::test]
async fn nested_submit_into_another_full_pool_waits() {
    other_full_pool_waits().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_submit_into_another_full_pool_waits_multi_thread() {
    other_full_pool_waits().await;
}

/// Many tasks of a full pool each try a nested submit at once: every one is refused at
/// once, none hangs, and the pool's capacity is intact afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_nested_submits_into_full_pool_all_refused() {
    let pool = CommonAioPool::new(4, 0);
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let tried = Arc::new(tokio::sync::Barrier::new(4));
    let mut outers = Vec::new();
    for i in 0..4u32 {
        let inner = pool.clone();
        let barrier = barrier.clone();
        let tried = tried.clone();
        outers.push(
            pool.submit(async move {
                // All four slots are taken once everyone is here, and stay taken until
                // everyone has tried (a finished job frees its slot at once).
                barrier.wait().await;
                let err = inner.submit(async move { i }).await.unwrap_err();
                assert!(err.is_would_deadlock(), "{err:?}");
                tried.wait().await;
                err.into_inner().await
            })
            .await
            .unwrap(),
        );
    }
    for (i, h) in outers.into_iter().enumerate() {
        assert_eq!(within("outer", h).await.unwrap(), i as u32);
    }
    // Capacity intact: four more run.
    let results = within("batch", pool.batch_run((0..4u32).map(|i| async move { i }))).await;
    assert_eq!(results.unwrap().len(), 4);
    within("shutdown", pool.shutdown()).await;
}

/// Finding 40 (a regression of dacf7cc, found by a review of that commit, fixed in the
/// next): finding 31's fix (src/engine/slot.rs, `finish`: `st.waiting_on_own.remove(&id)`) ends
/// the count of a task's waits when the task ends, but the handle it polled keeps its
/// `Waiting` (`Shared::waiting_in_pool`), so the task that awaits that handle next is never
/// counted (`TaskHandle::poll` skips `start_waiting` while `is_waiting()`). A real deadlock
/// is then missed and the pool hangs for good:
///
/// - pool of 2, B and A run; A submits X then C (both queued: the pool is full), polls C's
///   handle once (A counted), gives C's handle to X and X's handle to B, and ends;
/// - X takes A's slot and awaits C (queued: needs a slot; X not counted, the handle says
///   "waiting" already); B awaits X (counted: 0 + 1 < 2, not broken).
///
/// Both slots now wait on tasks of the pool, C can never start. Before dacf7cc the count of
/// A stood in for X and B's wait was broken with `WouldDeadlock` (the documented behaviour:
/// "when every slot is held by a task waiting for a task of the same pool ... the wait that
/// completes that picture is broken instead").
///
/// Fixed: a handle counts the wait of the task polling it now; polled by another task
/// than the one counted (handed on), it counts the new one and ends the old count.
#[test]
fn a_handed_on_wait_is_still_counted_and_a_real_deadlock_is_broken() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(2)
            .max_queue_size(10)
            .process_wide(false)
            .build();
        let (tx_b, rx_b) = tokio::sync::oneshot::channel();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        // B: takes a slot, gets X's handle, waits until X runs, then awaits it.
        let b = pool
            .submit(async move {
                let hx: nb_aiopool::TaskHandle<Result<u32, nb_aiopool::TaskError>> =
                    rx_b.await.unwrap();
                let _ = started_rx.await;
                hx.await
            })
            .await
            .unwrap();
        // A: the other slot.
        let p = pool.clone();
        let a = pool
            .submit(async move {
                let (tx_x, rx_x) = tokio::sync::oneshot::channel();
                // X: queued (the pool is full); once running, awaits C.
                let hx = p
                    .submit(async move {
                        let mut hc: nb_aiopool::TaskHandle<u32> = rx_x.await.unwrap();
                        // X's wait on C is counted at its first poll; B awaits X only
                        // after that, so that B's wait is the one that completes the
                        // deadlock (finding 154: signalled before, B's wait could come
                        // first and X's be the one broken).
                        let first =
                            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut hc).poll(cx)))
                                .await;
                        assert!(first.is_pending(), "C cannot have run: the pool is full");
                        let _ = started_tx.send(());
                        hc.await
                    })
                    .await
                    .unwrap();
                // C: queued behind X.
                let mut hc = p.submit(async { 7u32 }).await.unwrap();
                // A polls C's handle once: its wait is counted (one of two slots waits).
                let polled = tokio::time::timeout(Duration::from_millis(20), &mut hc).await;
                assert!(polled.is_err(), "C cannot have run: the pool is full");
                let _ = tx_x.send(hc);
                let _ = tx_b.send(hx);
            })
            .await
            .unwrap();
        a.await.unwrap();
        let out = tokio::time::timeout(Duration::from_secs(5), b).await;
        // Lets whatever is stuck go, so the runtime can shut down.
        drop(pool.cancel_all());
        out
    });
    drop(rt);
    let out = out.expect(
        "hang: both slots wait on tasks of the pool (B on X, X on the queued C) and the \
         nested-wait check did not break it",
    );
    let inner = out.expect("B itself was not cancelled");
    match inner {
        Err(e) => assert_eq!(
            e.cancel_reason(),
            Some(CancelReason::WouldDeadlock),
            "{e:?}"
        ),
        Ok(v) => panic!("B's wait cannot have completed normally: {v:?}"),
    }
}

/// Finding 79 (a review of findings 70–76 on 7d9597c; a limitation until 0b18778). A
/// shrink by `set_max_concurrency` under a parent that already waits on its queued child:
/// when the other running task ends, the parent holds the pool's only slot and waits for a
/// task that needs one, which is the deadlock `WouldDeadlock` reports. The check ran only
/// when the wait started (then the pool had two running tasks), so the parent waited for
/// ever. Now a job's end re-checks the waits, and the child is cancelled.
#[tokio::test(start_paused = true)]
async fn a_nested_wait_made_a_deadlock_by_a_shrink_is_reported_not_hung() {
    shrink_scenario(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_nested_wait_made_a_deadlock_by_a_shrink_is_reported_not_hung_elastic() {
    shrink_scenario(true).await;
}

#[tokio::test(start_paused = true)]
async fn a_nested_wait_started_after_a_shrink_left_no_room_is_a_deadlock() {
    for smart in [false, true] {
        shrink_scenario_order(smart, false).await;
    }
}

async fn shrink_scenario(smart: bool) {
    shrink_scenario_order(smart, true).await;
}

#[allow(clippy::async_yields_async)] // the child's submit hands back a handle to await later
async fn shrink_scenario_order(smart: bool, wait_first: bool) {
    let common = CommonAioPool::new(2, 4);
    let smart_pool = SmartAioPool::builder()
        .max_concurrency(2)
        .max_queue_size(4)
        .min_workers(2)
        .auto_shutdown(false)
        .build();
    let blocker_gate = support::Gate::default();
    let parent_gate = support::Gate::default();
    let (queued_tx, queued_rx) = tokio::sync::oneshot::channel::<()>();
    let queued_tx = Arc::new(std::sync::Mutex::new(Some(queued_tx)));
    type Child = std::pin::Pin<Box<dyn Future<Output = nb_aiopool::TaskHandle<u32>> + Send>>;
    let submit_child: Arc<dyn Fn() -> Child + Send + Sync> = if smart {
        let p = smart_pool.clone();
        Arc::new(move || {
            let p = p.clone();
            Box::pin(async move { p.submit(|| async { 7u32 }).await.unwrap() })
        })
    } else {
        let p = common.clone();
        Arc::new(move || {
            let p = p.clone();
            Box::pin(async move { p.submit(async { 7u32 }).await.unwrap() })
        })
    };
    // The blocker waits for its gate; the parent submits a child, says so, waits for its
    // gate, then awaits the child.
    let g = blocker_gate.clone();
    let blocker = move || {
        let g = g.clone();
        async move { g.wait().await }
    };
    let pg = parent_gate.clone();
    let parent = move || {
        let (submit_child, pg, q) = (submit_child.clone(), pg.clone(), queued_tx.clone());
        async move {
            let child = submit_child().await;
            if let Some(tx) = q.lock().unwrap().take() {
                let _ = tx.send(());
            }
            pg.wait().await;
            child.await.map_err(|e| e.cancel_reason())
        }
    };
    let (name, parent) = if smart {
        drop(smart_pool.submit(blocker).await.unwrap());
        (
            "smart",
            tokio::spawn(smart_pool.submit(parent).await.unwrap()),
        )
    } else {
        drop(common.submit(blocker()).await.unwrap());
        (
            "common",
            tokio::spawn(common.submit(parent()).await.unwrap()),
        )
    };
    queued_rx.await.unwrap();
    let stats = if smart {
        smart_pool.stats()
    } else {
        common.stats()
    };
    assert_eq!((stats.running, stats.queued), (2, 1), "{name}");
    if smart {
        smart_pool.set_max_concurrency(1);
    } else {
        common.set_max_concurrency(1);
    }
    let (first, second) = if wait_first {
        (&parent_gate, &blocker_gate)
    } else {
        (&blocker_gate, &parent_gate)
    };
    first.open();
    tokio::time::sleep(Duration::from_millis(10)).await;
    second.open();
    let r = tokio::time::timeout(Duration::from_secs(5), parent)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{name}: hang: after the shrink the parent holds the only slot and waits for \
                 its queued child (expected WouldDeadlock)"
            )
        })
        .unwrap()
        .unwrap();
    assert_eq!(r, Err(Some(CancelReason::WouldDeadlock)), "{name}");
}

/// The re-check of finding 79 spares waits that still have a way out: a parent waits on
/// its queued child in a pool of 3 shrunk to 2. The first other task's end leaves the
/// parent and one more task running (not every slot waits); the second's end gives the
/// child a slot. The child runs, and the parent gets its value.
#[tokio::test(start_paused = true)]
async fn a_shrink_that_leaves_the_awaited_task_a_slot_cancels_nothing() {
    let pool = CommonAioPool::new(3, 4);
    let (b_gate, d_gate) = (support::Gate::default(), support::Gate::default());
    let (queued_tx, queued_rx) = tokio::sync::oneshot::channel::<()>();
    for gate in [&b_gate, &d_gate] {
        let g = gate.clone();
        drop(pool.submit(async move { g.wait().await }).await.unwrap());
    }
    let inner = pool.clone();
    let parent = pool
        .submit(async move {
            let child = inner.submit(async { 7u32 }).await.unwrap();
            let _ = queued_tx.send(());
            child.await.map_err(|e| e.cancel_reason())
        })
        .await
        .unwrap();
    queued_rx.await.unwrap();
    let stats = pool.stats();
    assert_eq!((stats.running, stats.queued), (3, 1));
    pool.set_max_concurrency(2);
    b_gate.open();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let stats = pool.stats();
    assert_eq!((stats.running, stats.queued, stats.cancelled), (2, 1, 0));
    d_gate.open();
    let r = within("the parent, once its child had a slot", parent)
        .await
        .unwrap();
    assert_eq!(r, Ok(7));
    assert_eq!(pool.stats().cancelled, 0);
}

/// The re-check cancels only a task that has not started: a parent waiting on a child
/// that runs (and waits on a timer) is left alone when the pool shrinks to the parent and
/// the child, and gets the child's value.
#[tokio::test(start_paused = true)]
async fn a_shrink_under_a_parent_whose_child_runs_cancels_nothing() {
    let pool = CommonAioPool::new(3, 4);
    let gate = support::Gate::default();
    let g = gate.clone();
    drop(pool.submit(async move { g.wait().await }).await.unwrap());
    let inner = pool.clone();
    let parent = pool
        .submit(async move {
            let child = inner
                .submit(async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    7u32
                })
                .await
                .unwrap();
            child.await.map_err(|e| e.cancel_reason())
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(pool.stats().running, 3);
    pool.set_max_concurrency(2);
    gate.open();
    let r = within("the parent of a running child", parent)
        .await
        .unwrap();
    assert_eq!(r, Ok(7));
    assert_eq!(pool.stats().cancelled, 0);
}

/// Finding 98 (review r12 of 92–97; a gap in 79's fix). After a shrink, a parent that
/// awaits two queued children at once (`join!`) is left holding the pool's only slot. Awaited from the start in a pool of 1, both children get
/// `WouldDeadlock`; after the shrink, the re-check cancelled only the newest child, and the
/// parent waited for ever on the other one. Now both are cancelled, as from the start.
#[tokio::test(start_paused = true)]
async fn join_of_two_queued_children_after_a_shrink_is_not_left_hanging() {
    // Control: in a pool of one from the start, the same `join!` gets `WouldDeadlock` for
    // both children (each handle's first poll is refused).
    let one = CommonAioPool::new(1, 4);
    let inner = one.clone();
    let r = one
        .run(async move {
            let a = inner.submit(async { 1u32 }).await.unwrap();
            let b = inner.submit(async { 2u32 }).await.unwrap();
            let (a, b) = tokio::join!(a, b);
            (
                a.map_err(|e| e.cancel_reason()),
                b.map_err(|e| e.cancel_reason()),
            )
        })
        .await
        .unwrap();
    let wd = Err(Some(CancelReason::WouldDeadlock));
    assert_eq!(r, (wd, wd));

    let pool = CommonAioPool::new(2, 4);
    let gate = support::Gate::default();
    let g = gate.clone();
    drop(pool.submit(async move { g.wait().await }).await.unwrap());
    let (queued_tx, queued_rx) = tokio::sync::oneshot::channel::<()>();
    let inner = pool.clone();
    let parent = pool
        .submit(async move {
            let a = inner.submit(async { 1u32 }).await.unwrap();
            let b = inner.submit(async { 2u32 }).await.unwrap();
            let _ = queued_tx.send(());
            let (a, b) = tokio::join!(a, b);
            (
                a.map_err(|e| e.cancel_reason()),
                b.map_err(|e| e.cancel_reason()),
            )
        })
        .await
        .unwrap();
    queued_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let s = pool.stats();
    assert_eq!((s.running, s.queued), (2, 2));
    pool.set_max_concurrency(1);
    gate.open();
    let r = tokio::time::timeout(Duration::from_secs(5), parent)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "hang: the parent holds the only slot, awaiting two queued children; stats: {}",
                pool.stats()
            )
        })
        .unwrap();
    // Neither child can ever start while the parent waits: both are refused, as in the
    // pool of one.
    assert_eq!(r, (wd, wd));
}

/// The same with a task group's `join_all`, in a SmartAioPool.
#[tokio::test(start_paused = true)]
async fn group_join_all_of_queued_children_after_a_shrink_is_not_left_hanging() {
    let pool = SmartAioPool::builder()
        .max_concurrency(2)
        .max_queue_size(8)
        .min_workers(2)
        .auto_shutdown(false)
        .process_wide(false)
        .build();
    let gate = support::Gate::default();
    let g = gate.clone();
    drop(
        pool.submit(move || {
            let g = g.clone();
            async move { g.wait().await }
        })
        .await
        .unwrap(),
    );
    let (queued_tx, queued_rx) = tokio::sync::oneshot::channel::<()>();
    let queued_tx = Arc::new(std::sync::Mutex::new(Some(queued_tx)));
    let inner = pool.clone();
    let parent = pool
        .submit(move || {
            let (inner, q) = (inner.clone(), queued_tx.clone());
            async move {
                let mut group = inner.group();
                for i in 0..3u32 {
                    group.submit(move || async move { i }).await.unwrap();
                }
                if let Some(tx) = q.lock().unwrap().take() {
                    let _ = tx.send(());
                }
                group
                    .join_all()
                    .await
                    .into_iter()
                    .map(|r| r.map_err(|e| e.cancel_reason()))
                    .collect::<Vec<_>>()
            }
        })
        .await
        .unwrap();
    queued_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let s = pool.stats();
    assert_eq!((s.running, s.queued), (2, 3));
    pool.set_max_concurrency(1);
    gate.open();
    let r = tokio::time::timeout(Duration::from_secs(5), parent)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "hang: the parent holds the only slot, awaiting a group of queued children; \
                 stats: {}",
                pool.stats()
            )
        });
    let r = r.unwrap();
    assert_eq!(r, vec![Err(Some(CancelReason::WouldDeadlock)); 3]);
}

type R = Result<u32, Option<CancelReason>>;

fn reason(r: Result<u32, nb_aiopool::TaskError>) -> R {
    r.map_err(|e| e.cancel_reason())
}

/// Submits two children that count their runs in `ran` (both queued: the pool is full),
/// says so on `queued`, and races them with a biased `select!`; the loser's handle is
/// dropped (detached: it still runs to completion).
async fn race_two_children(
    pool: CommonAioPool,
    ran: Arc<AtomicUsize>,
    queued: Option<tokio::sync::oneshot::Sender<()>>,
) -> R {
    let child = |v: u32| {
        let ran = ran.clone();
        async move {
            ran.fetch_add(1, Ordering::SeqCst);
            v
        }
    };
    let mut a: TaskHandle<u32> = pool.submit(child(1)).await.unwrap();
    let mut b: TaskHandle<u32> = pool.submit(child(2)).await.unwrap();
    if let Some(tx) = queued {
        let _ = tx.send(());
    }
    tokio::select! {
        biased;
        r = &mut a => reason(r),
        r = &mut b => reason(r),
    }
}

/// Finding 100 (review r13 of 98–99; a regression of 98's fix). A parent that races two
/// of its queued children with `select!` (first one wins, the
/// other is dropped: detached, "it still runs to completion"). In a pool full from the
/// start, the first handle polled is refused with `WouldDeadlock`, the `select!` returns,
/// the parent ends and the other child runs: one task cancelled. Made a deadlock by a
/// shrink instead (the parent left holding the only slot), the re-check of 0ac0caf
/// cancelled both children in one pass (it counted the parent "stuck" on the second
/// child after refusing the first, though the first refusal already resumes the
/// `select!`), so the loser never ran. Now the pool wakes the awaited handles and the
/// first one polled is refused, as in the pool full from the start.
#[tokio::test(start_paused = true)]
async fn select_of_two_queued_children_after_a_shrink_cancels_only_one() {
    // Control: a pool of one from the start.
    let ran = Arc::new(AtomicUsize::new(0));
    let one = CommonAioPool::new(1, 4);
    let first = one
        .run(race_two_children(one.clone(), ran.clone(), None))
        .await
        .unwrap();
    assert_eq!(first, Err(Some(CancelReason::WouldDeadlock)));
    support::within("the control pool's loser child", async {
        while ran.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(one.stats().cancelled, 1, "control: {}", one.stats());

    // After a shrink.
    let ran = Arc::new(AtomicUsize::new(0));
    let pool = CommonAioPool::new(2, 4);
    let gate = support::Gate::default();
    let g = gate.clone();
    drop(pool.submit(async move { g.wait().await }).await.unwrap());
    let (queued_tx, queued_rx) = tokio::sync::oneshot::channel::<()>();
    let parent = pool
        .submit(race_two_children(
            pool.clone(),
            ran.clone(),
            Some(queued_tx),
        ))
        .await
        .unwrap();
    queued_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let s = pool.stats();
    assert_eq!((s.running, s.queued), (2, 2));
    pool.set_max_concurrency(1);
    gate.open();
    let first = support::within("the parent after the shrink", parent)
        .await
        .unwrap();
    assert_eq!(first, Err(Some(CancelReason::WouldDeadlock)));
    // The parent has ended: its slot is free for the detached loser.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = pool.stats();
    assert_eq!(
        (ran.load(Ordering::SeqCst), s.cancelled),
        (1, 1),
        "the select!'s loser, detached after the parent resumed, was cancelled too \
         (WouldDeadlock) and never ran, though the parent's end left it a slot; stats: {s}"
    );
}

/// Finding 101 (review r13; a gap in 98's fix). Two parents left holding every slot by a
/// shrink: P1 `join!`s its children a1 and a3,
/// P2 awaits a2 (submitted between them: a1 < a2 < a3). Cancelling a2 alone lets P2 end,
/// and its slot runs a1 and a3. The re-check cancelled newest first across all waiting
/// tasks: a3 (P1 still stuck on a1), then a2. P1's a3 was refused though that refusal
/// freed nothing. Now the handles of the job one refusal frees are woken first; on this
/// current-thread runtime P2 is polled first, and P1's next poll finds the pool unstuck.
#[tokio::test(start_paused = true)]
async fn a_refusal_that_frees_no_slot_is_not_made() {
    let (r1, r2, s) = two_parents_left_waiting_by_a_shrink(Duration::from_millis(1)).await;
    assert_eq!(r2, Err(Some(CancelReason::WouldDeadlock)));
    assert_eq!(
        r1,
        (Ok(1), Ok(3)),
        "P1's child a3 was refused though cancelling a2 alone let the pool go on; stats: {s}"
    );
    assert_eq!(s.cancelled, 1, "{s}");
}

/// Findings 101 and 104: a pool of 3 with a blocker; P1 `join!`s its children a1 and a3,
/// P2 awaits a2 (submitted between them: a1 < a2 < a3), all three queued. The pool is
/// shrunk to 2 (after `settle`, once both parents wait) and the blocker ends, leaving the
/// parents holding every slot. Returns P1's and P2's results and the stats after both.
async fn two_parents_left_waiting_by_a_shrink(settle: Duration) -> ((R, R), R, PoolStats) {
    let pool = CommonAioPool::new(3, 8);
    let gate = support::Gate::default();
    let g = gate.clone();
    drop(pool.submit(async move { g.wait().await }).await.unwrap());
    // Orders the three child submits across the two parents, after both parents hold
    // their slots (P1 may run before P2 is submitted: its child would then take the
    // slot P2 is meant to hold).
    let (p2_in_tx, p2_in_rx) = tokio::sync::oneshot::channel::<()>();
    let (a1_tx, a1_rx) = tokio::sync::oneshot::channel::<()>();
    let (a2_tx, a2_rx) = tokio::sync::oneshot::channel::<()>();
    let (waiting_tx, waiting_rx) = tokio::sync::oneshot::channel::<()>();
    let inner = pool.clone();
    let p1 = pool
        .submit(async move {
            p2_in_rx.await.unwrap();
            let a1 = inner.submit(async { 1u32 }).await.unwrap();
            let _ = a1_tx.send(());
            a2_rx.await.unwrap();
            let a3 = inner.submit(async { 3u32 }).await.unwrap();
            let _ = waiting_tx.send(());
            let (a1, a3) = tokio::join!(a1, a3);
            (reason(a1), reason(a3))
        })
        .await
        .unwrap();
    let inner = pool.clone();
    let p2 = pool
        .submit(async move {
            a1_rx.await.unwrap();
            let a2 = inner.submit(async { 2u32 }).await.unwrap();
            let _ = a2_tx.send(());
            reason(a2.await)
        })
        .await
        .unwrap();
    p2_in_tx.send(()).unwrap();
    waiting_rx.await.unwrap();
    tokio::time::sleep(settle).await;
    let s = pool.stats();
    assert_eq!((s.running, s.queued, s.cancelled), (3, 3, 0), "{s}");
    pool.set_max_concurrency(2);
    gate.open();
    let r2 = support::within("P2", p2).await.unwrap();
    let r1 = support::within("P1", p1).await.unwrap();
    (r1, r2, pool.stats())
}

/// Finding 102 (review r14 of a826662; a regression of it). Chained waiter woken first. W1 runs and submits W2 (which starts: there is room) and a
/// queued child c1, and `join!`s W2's handle and c1. Then W2 submits two queued children
/// c2, c3 and `join!`s them. Every slot but none (control: a pool of 2 from the start) or
/// one (a pool of 3 with a blocker, shrunk to 2 before the blocker ends) is left.
///
/// Control: W2's wait closes the picture, c2 and c3 are refused, W2 ends and its slot
/// runs c1: W1 gets `(Ok((WD, WD)), Ok(1))`, two tasks cancelled. After the shrink the
/// state is the same, but the pool wakes W1's handles first (one queued awaited task,
/// fewer than W2's two), though W1 also waits on W2, a waiting task: refusing c1 frees no
/// slot (finding 101's rule). Then c2 and c3 are refused too: three cancelled.
#[allow(clippy::async_yields_async)]
async fn chained_scenario(shrink: bool) -> ((Result<(R, R), Option<CancelReason>>, R), u64) {
    let pool = if shrink {
        CommonAioPool::new(3, 8)
    } else {
        CommonAioPool::new(2, 8)
    };
    let gate = support::Gate::default();
    if shrink {
        let g = gate.clone();
        drop(pool.submit(async move { g.wait().await }).await.unwrap());
    }
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (w2_waiting_tx, w2_waiting_rx) = tokio::sync::oneshot::channel::<()>();
    let inner = pool.clone();
    let w1 = pool
        .submit(async move {
            let inner2 = inner.clone();
            // W2 starts at once (there is room).
            let w2: TaskHandle<(R, R)> = inner
                .submit(async move {
                    go_rx.await.unwrap();
                    let c2 = inner2.submit(async { 2u32 }).await.unwrap();
                    let c3 = inner2.submit(async { 3u32 }).await.unwrap();
                    let _ = w2_waiting_tx.send(());
                    let (c2, c3) = tokio::join!(c2, c3);
                    (reason(c2), reason(c3))
                })
                .await
                .unwrap();
            let c1 = inner.submit(async { 1u32 }).await.unwrap();
            // W1's wait is counted (both handles polled) before W2 starts waiting.
            let (w2, c1, ()) = tokio::join!(w2, c1, async move {
                let _ = go_tx.send(());
            });
            (w2.map_err(|e| e.cancel_reason()), reason(c1))
        })
        .await
        .unwrap();
    w2_waiting_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    if shrink {
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (3, 3), "{s}");
        pool.set_max_concurrency(2);
        gate.open();
    }
    let r = support::within("W1", w1).await.unwrap();
    support::within("the pool's wait", pool.wait()).await;
    (r, pool.stats().cancelled)
}

#[tokio::test(start_paused = true)]
async fn a_waiter_chained_on_a_waiting_task_is_not_refused_first_after_a_shrink() {
    let wd = Err(Some(CancelReason::WouldDeadlock));
    // Control: the pool of 2 from the start.
    let control = chained_scenario(false).await;
    assert_eq!(control, ((Ok((wd, wd)), Ok(1)), 2), "control");
    let after_shrink = chained_scenario(true).await;
    assert_eq!(
        after_shrink,
        ((Ok((wd, wd)), Ok(1)), 2),
        "after the shrink, W1's c1 was refused though W1 also waits on W2 (a waiting task): \
         that refusal freed no slot"
    );
}

/// Finding 103 (review r14; a regression of a826662). A parent that gave its queued
/// child's handle one chance (`timeout` of 1 ms, which
/// polls it and counts the wait), then checks `is_finished()` until the child is done and
/// takes the result. In a pool full from the start the first poll is refused: the handle
/// resolves to `WouldDeadlock`. Made a deadlock by a shrink, 0ac0caf cancelled the queued
/// child (its handle resolved, `is_finished()` turned true); a826662 only woke the
/// handle, which is not polled again: the parent held the only slot for ever. Now a poll
/// of the picked job that refuses none of its waits has its newest queued child cancelled.
async fn timeout_then_is_finished(shrink: bool) -> Option<R> {
    let pool = if shrink {
        CommonAioPool::new(2, 4)
    } else {
        CommonAioPool::new(1, 4)
    };
    let gate = support::Gate::default();
    if shrink {
        let g = gate.clone();
        drop(pool.submit(async move { g.wait().await }).await.unwrap());
    }
    let (waiting_tx, waiting_rx) = tokio::sync::oneshot::channel::<()>();
    let inner = pool.clone();
    let parent = pool
        .submit(async move {
            let mut child = inner.submit(async move { 7u32 }).await.unwrap();
            let quick = tokio::time::timeout(Duration::from_millis(1), &mut child).await;
            let _ = waiting_tx.send(());
            match quick {
                Ok(r) => reason(r),
                Err(_) => loop {
                    if child.is_finished() {
                        break reason(child.await);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                },
            }
        })
        .await
        .unwrap();
    waiting_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    if shrink {
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (2, 1), "{s}");
        pool.set_max_concurrency(1);
        gate.open();
    }
    tokio::time::timeout(Duration::from_secs(5), parent)
        .await
        .ok()
        .map(Result::unwrap)
}

#[tokio::test(start_paused = true)]
async fn a_counted_wait_not_polled_again_still_resolves_after_a_shrink() {
    let wd = Err(Some(CancelReason::WouldDeadlock));
    let control = timeout_then_is_finished(false).await;
    assert_eq!(control, Some(wd), "control");
    let after = timeout_then_is_finished(true).await;
    assert_eq!(
        after,
        Some(wd),
        "hang: after the shrink the parent holds the only slot, counted as waiting on its \
         queued child, but the child's handle never resolves (not polled again)"
    );
}

/// Finding 104 (review r14; 101 again). Finding 101's scenario on a multi-thread runtime
/// of one worker (no two polls at once):
/// P1 `join!`s a1 and a3, P2 awaits a2; a shrink leaves them holding every slot. The pool
/// woke P2's handle first, but a wake from a worker thread goes to its LIFO slot, so the
/// last woken (P1) ran first and both of P1's children were refused. Now only the picked
/// job's waits are refused, whatever order the jobs are polled in.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_refusal_that_frees_no_slot_is_not_made_on_one_worker() {
    let (r1, r2, s) = two_parents_left_waiting_by_a_shrink(Duration::from_millis(20)).await;
    assert_eq!(
        (r1, r2),
        ((Ok(1), Ok(3)), Err(Some(CancelReason::WouldDeadlock))),
        "stats: {s}",
    );
}

/// Polls `h` once with the current task's waker (counts the wait, like the first poll of
/// an `.await`); returns whether it was still pending.
async fn poll_once(h: &mut TaskHandle<u32>) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *h).poll(cx).is_pending())).await
}

/// Finding 107 (review r16 of 277f7f5; a gap in 79's fix). A pool of 2: the parent holds
/// one slot and submits a child, which gets the other slot
/// as a *reservation* (its claimer slot task is spawned, not yet polled). The parent polls
/// the child's handle once (the wait is counted), then shrinks the pool to 1 and awaits
/// the child. The shrink's re-check finds `reserved > 0` ("not stuck"); then the claimer
/// finds `running > limit`, gave the reserved unit back and exited, with no re-check: the
/// parent held the only slot, waiting on its queued child. A unit given back now asks
/// for the re-check. The docs ("when the picture is
/// completed later, by a slot going away (after `set_max_concurrency` lowered the size
/// ...), it is broken the same way") promise `WouldDeadlock` (or the child's value), not
/// a hang.
#[tokio::test(flavor = "current_thread")]
async fn a_shrink_while_the_awaited_child_holds_a_reservation_is_reported_not_hung() {
    let pool = CommonAioPool::new(2, 4);
    let inner = pool.clone();
    let parent = pool
        .submit(async move {
            let mut child = inner.submit(async { 7u32 }).await.unwrap();
            let s = inner.stats();
            assert!(poll_once(&mut child).await, "the child ran already ({s})");
            inner.set_max_concurrency(1);
            reason(child.await)
        })
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), parent)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "hang: the parent holds the only slot after the shrink and waits for its queued \
                 child for ever (stats: {})",
                pool.stats()
            )
        })
        .unwrap();
    assert!(
        matches!(r, Ok(7) | Err(Some(CancelReason::WouldDeadlock))),
        "{r:?}"
    );
}

/// Finding 107, from outside the pool: a controller thread shrinks the pool while the parent
/// (on a one-worker multi-thread runtime) has just submitted its child (reserved, claimer
/// not yet run) and polled its handle once.
#[test]
fn a_shrink_from_outside_while_the_awaited_child_holds_a_reservation_is_not_hung() {
    let rt = support::multi_thread();
    rt.block_on(async {
        let pool = CommonAioPool::new(2, 4);
        let inner = pool.clone();
        let (polled_tx, polled_rx) = std::sync::mpsc::channel::<()>();
        let (shrunk_tx, shrunk_rx) = std::sync::mpsc::channel::<()>();
        let parent = pool
            .submit(async move {
                let mut child = inner.submit(async { 7u32 }).await.unwrap();
                assert!(poll_once(&mut child).await);
                polled_tx.send(()).unwrap();
                // Blocks the only worker until the controller has shrunk the pool: the
                // child's claimer cannot run meanwhile.
                shrunk_rx.recv_timeout(Duration::from_secs(5)).unwrap();
                reason(child.await)
            })
            .await
            .unwrap();
        let p = pool.clone();
        let controller = std::thread::spawn(move || {
            polled_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            p.set_max_concurrency(1);
            shrunk_tx.send(()).unwrap();
        });
        let r = tokio::time::timeout(Duration::from_secs(5), parent)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "hang: the parent holds the only slot after the shrink and waits for its \
                     queued child for ever (stats: {})",
                    pool.stats()
                )
            })
            .unwrap();
        controller.join().unwrap();
        assert!(
            matches!(r, Ok(7) | Err(Some(CancelReason::WouldDeadlock))),
            "{r:?}"
        );
    });
}

/// Finding 108 (review r16; a gap in 103's fix). Finding 100's promise ("a `select!` over
/// two such handles has one refused") on a
/// multi-thread runtime, when the pool becomes stuck *during* the parent's poll: the
/// parent (a biased select of two queued children, written out as a `poll_fn`) has polled
/// both handles (counted, nothing to refuse yet) when the blocker's end on the other
/// worker leaves it holding the only slot of a shrunk pool; the re-check picks it. Its
/// poll then returned `Pending` with no refusal made, and `after_stuck_poll` took that as
/// "it polls none of its waits" and cancelled the newest child; the re-check picked it
/// again and its next poll refused the other child too: the loser of the select,
/// detached, never ran. Now only a poll that began after the pick counts.
/// The blocking pause in the parent's poll only widens the window a real run can hit.
#[test]
fn a_select_of_two_children_straddling_the_stuck_moment_cancels_only_one() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = CommonAioPool::new(2, 4);
        let gate = support::Gate::default();
        let g = gate.clone();
        let blocker = pool.submit(async move { g.wait().await }).await.unwrap();
        let inner = pool.clone();
        let (polled_tx, polled_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let ran = [
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        ];
        let r2 = ran.clone();
        let parent = pool
            .submit(async move {
                let f1 = r2[0].clone();
                let f2 = r2[1].clone();
                let mut c1 = inner
                    .submit(async move {
                        f1.store(true, Ordering::SeqCst);
                        1u32
                    })
                    .await
                    .unwrap();
                let mut c2 = inner
                    .submit(async move {
                        f2.store(true, Ordering::SeqCst);
                        2u32
                    })
                    .await
                    .unwrap();
                let mut first = true;
                let (h1, h2) = (&mut c1, &mut c2);
                let out = std::future::poll_fn(move |cx| {
                    if let Poll::Ready(r) = Pin::new(&mut *h1).poll(cx) {
                        return Poll::Ready((1, reason(r)));
                    }
                    if let Poll::Ready(r) = Pin::new(&mut *h2).poll(cx) {
                        return Poll::Ready((2, reason(r)));
                    }
                    if std::mem::take(&mut first) {
                        polled_tx.send(()).unwrap();
                        // The blocker ends (on the other worker) while this poll runs.
                        let _ = go_rx.recv_timeout(Duration::from_secs(5));
                    }
                    Poll::Pending
                })
                .await;
                drop((c1, c2)); // the loser is detached: it still runs
                out
            })
            .await
            .unwrap();
        polled_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        pool.set_max_concurrency(1);
        gate.open();
        support::within("the blocker", blocker).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await; // its end's re-check is done
        go_tx.send(()).unwrap();
        let (winner, r) = support::within("the parent", parent).await.unwrap();
        support::within("the pool's wait", pool.wait()).await;
        let ran = [ran[0].load(Ordering::SeqCst), ran[1].load(Ordering::SeqCst)];
        let s = pool.stats();
        assert_eq!(r, Err(Some(CancelReason::WouldDeadlock)), "child {winner}");
        assert!(
            ran[2 - winner] && s.cancelled == 1,
            "both children of the select were cancelled: the parent got child {winner}'s \
             refusal, and the loser (child {}) never ran (ran: {ran:?}; {s})",
            3 - winner
        );
    });
}

/// What a nested `batch_run` or group returned, per result: its value, or "wd" for a task
/// refused as a deadlock (`Cancelled(WouldDeadlock)`).
fn describe<T: std::fmt::Debug>(r: &Result<T, nb_aiopool::TaskError>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) if e.cancel_reason() == Some(CancelReason::WouldDeadlock) => "wd".to_string(),
        Err(e) => format!("{e:?}"),
    }
}

/// Two levels of nested joins in a pool of two slots: a job joins two jobs of its pool,
/// each of which joins two more. The pool's nested-wait check sees the outer job waiting
/// on both middle jobs at once (a join polls every handle together inside a job of the
/// joined tasks' own pool), so it refuses the middle jobs' waits, which return, rather than
/// cancel a middle job that has started. A review of 58301af (`batch_run` awaiting its
/// handles one after the other everywhere) found the second middle job cancelled while
/// running: `[["wd", "wd"], "wd"]`.
#[tokio::test(flavor = "current_thread")]
async fn two_levels_of_nested_joins_refuse_waits_not_started_jobs() {
    for use_group in [false, true] {
        let pool = CommonAioPool::builder()
            .max_concurrency(2)
            .max_queue_size(3)
            .process_wide(false)
            .build();
        let p = pool.clone();
        let outer = pool
            .submit(async move {
                let middle = |p: CommonAioPool| async move {
                    let leaves = (0..2).map(|i| async move {
                        tokio::task::yield_now().await;
                        i
                    });
                    let r = join(&p, leaves, use_group).await;
                    format!("{:?}", r.iter().map(describe).collect::<Vec<_>>())
                };
                let r = join(&p, (0..2).map(|_| middle(p.clone())), use_group).await;
                r.iter().map(describe).collect::<Vec<_>>()
            })
            .await
            .unwrap();
        let got = within("the outer job", outer).await.unwrap();
        assert_eq!(
            got,
            [r#""[\"wd\", \"wd\"]""#, r#""[\"wd\", \"wd\"]""#],
            "group: {use_group}"
        );
    }
}

/// `batch_run` of `futs`, or a group's submits and `join_all`.
async fn join<F>(
    pool: &CommonAioPool,
    futs: impl Iterator<Item = F>,
    use_group: bool,
) -> Vec<Result<F::Output, nb_aiopool::TaskError>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if !use_group {
        return pool.batch_run(futs).await.unwrap();
    }
    let mut group = pool.group();
    for fut in futs {
        group.submit(fut).await.unwrap();
    }
    group.join_all().await
}
