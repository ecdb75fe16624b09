//! A review of finding 289 (pools numbered by a 32-bit `PoolId`, a dropped pool's number
//! given to the next pool made): where a number of a dropped pool could reach the pool
//! that was given it.
//!
//! The tests of this file hold `support::serial()`: the number a pool frees goes to the
//! next pool made (the freed numbers are reused last-freed first), and no other test of
//! this binary makes one in between.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use nb_aiopool::{CancelReason, CommonAioPool, SmartAioPool, TaskHandle};

/// A waker that runs a hook, once, when it is woken (on the waking thread, inside the
/// call that woke it): it holds open the window between the two steps of that call, as
/// another thread getting there first would.
struct Hooked(Mutex<Option<Box<dyn FnOnce() + Send>>>);

impl Hooked {
    fn waker(hook: impl FnOnce() + Send + 'static) -> Waker {
        Waker::from(Arc::new(Hooked(Mutex::new(Some(Box::new(hook))))))
    }
}

impl Wake for Hooked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let hook = self.0.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
    }
}

/// Polls `handle` once with `waker` (it is pending): the handle keeps that waker.
fn register<T>(handle: &mut TaskHandle<T>, waker: &Waker) {
    let mut cx = Context::from_waker(waker);
    assert!(
        Pin::new(handle).poll(&mut cx).is_pending(),
        "the held-back task ended"
    );
}

/// Set when dropped.
struct Flag(Arc<AtomicBool>);

impl Drop for Flag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A pool of either kind whose rate window never reopens: its first task is the only one
/// it ever starts, its second is held back in its queue for good, no slot and no timer
/// holding the pool for it (its last handle's drop frees it, once its idle slot is gone).
enum Pool {
    Common(CommonAioPool),
    Smart(SmartAioPool),
}

impl Pool {
    fn new(smart: bool) -> Pool {
        if smart {
            Pool::Smart(
                SmartAioPool::builder()
                    .max_concurrency(1)
                    .rate_limit(1, Duration::MAX)
                    .process_wide(false)
                    .auto_shutdown(false)
                    .build(),
            )
        } else {
            Pool::Common(
                CommonAioPool::builder()
                    .max_concurrency(1)
                    .max_queue_size(4)
                    .rate_limit(1, Duration::MAX)
                    .process_wide(false)
                    .build(),
            )
        }
    }

    /// Submits without waiting its first task (started), then its second (held back),
    /// whose future (or recipe) holds `flag`.
    fn two_tasks(&self, flag: Option<Flag>) -> (TaskHandle<u32>, TaskHandle<u32>) {
        match self {
            Pool::Common(p) => (
                p.try_submit(async { 1 }).unwrap(),
                p.try_submit(async move {
                    let _flag = flag;
                    2
                })
                .unwrap(),
            ),
            Pool::Smart(p) => (
                p.try_submit(|| async { 1 }).unwrap(),
                p.try_submit(move || {
                    let _ = &flag;
                    async { 2 }
                })
                .unwrap(),
            ),
        }
    }

    fn stats(&self) -> nb_aiopool::PoolStats {
        match self {
            Pool::Common(p) => p.stats(),
            Pool::Smart(p) => p.stats(),
        }
    }
}

/// Finding A (review of 289). A task's `abort()` decides the task's outcome, wakes the
/// handle's waker, and only then looks its pool up by number (`Shared::abort` →
/// `unqueue::aborted`) to take the task out of its queue. If the pool is dropped in
/// between (on another thread, or by the woken code itself: a task held back by a rate
/// window holds no slot, so that drop frees the engine, and with it its number) and a
/// pool is made then (given that number), the abort reaches the new pool: its task of
/// the same `TaskId` and priority is taken out of its queue and cancelled as `Aborted`,
/// though nothing aborted it. (With the engine's address as the number, the same needed
/// the allocator to put a new engine where the old one was; the reuse of numbers, last
/// freed first, makes it certain.) Here the abort runs on a thread of its own, and the
/// handle's waker holds it in that window while the test drops the old pool and makes the
/// new ones.
///
/// Fails on 85362f5: "the new pool's queued task was cancelled by the old pool's abort".
#[test]
fn an_abort_racing_its_pools_drop_leaves_a_new_pool_alone() {
    let _serial = support::serial();
    for smart in [false, true] {
        support::current_thread().block_on(async {
            let old = Pool::new(smart);
            let freed = Arc::new(AtomicBool::new(false));
            let (first, mut held) = old.two_tasks(Some(Flag(Arc::clone(&freed))));
            assert_eq!(support::within("the first task", first).await.unwrap(), 1);
            assert_eq!(old.stats().queued, 1, "smart {smart}");
            let (woken_tx, woken_rx) = tokio::sync::oneshot::channel::<()>();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let waker = Hooked::waker(move || {
                let _ = woken_tx.send(());
                let _ = go_rx.recv_timeout(Duration::from_secs(20));
            });
            register(&mut held, &waker);
            let held_id = held.id();
            let abort = held.abort_handle();
            let aborter = std::thread::spawn(move || abort.abort());
            support::within("the abort waking the handle", woken_rx)
                .await
                .unwrap();
            // The outcome is decided: the handle says `Aborted` already.
            assert!(held.is_finished());
            // Its last handle goes: its engine goes as soon as its idle slot task has
            // exited (a few polls), dropping the held task's future (`freed`), unless
            // something holds it (the abort under way, once fixed: then the wait lasts its
            // 500 ms bound, and the new pools get new numbers).
            drop(old);
            let end = std::time::Instant::now() + Duration::from_millis(500);
            while !freed.load(Ordering::SeqCst) && std::time::Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // New pools, each with a held-back task whose `TaskId` is the old task's.
            let made: Vec<(Pool, TaskHandle<u32>)> = (0..4)
                .map(|_| {
                    let pool = Pool::new(smart);
                    let (_, queued) = pool.two_tasks(None);
                    (pool, queued)
                })
                .collect();
            go_tx.send(()).unwrap();
            support::within(
                "the abort's end",
                tokio::task::spawn_blocking(move || aborter.join().unwrap()),
            )
            .await
            .unwrap();
            let err = support::within("the aborted task", held).await.unwrap_err();
            assert_eq!(err.cancel_reason(), Some(CancelReason::Aborted));
            // Its future is dropped: by the old pool's drop, or on the runtime by the abort.
            support::within("the aborted task's future dropped", async {
                while !freed.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await;
            for (pool, queued) in &made {
                assert_eq!(queued.id(), held_id, "each new task has the old task's id");
                let stats = pool.stats();
                assert!(
                    !queued.is_finished() && stats.queued == 1 && stats.cancelled == 0,
                    "smart {smart}: the new pool's queued task was cancelled by the old \
                     pool's abort: {stats:?}"
                );
            }
            // Dropping them cancels their held-back tasks (`RuntimeShutdown`).
            for (pool, queued) in made {
                drop(pool);
                let err = support::within("a new pool's held-back task", queued)
                    .await
                    .unwrap_err();
                assert_eq!(err.cancel_reason(), Some(CancelReason::RuntimeShutdown));
            }
        });
    }
}

/// A pool of one slot and a queue of four, of either kind (a SmartAioPool that does not
/// re-run interrupted tasks: the end of its runtime cancels them, as a CommonAioPool's).
fn one_slot(smart: bool) -> Pool {
    if smart {
        Pool::Smart(
            SmartAioPool::builder()
                .max_concurrency(1)
                .max_queue_size(4)
                .rerun_interrupted(false)
                .process_wide(false)
                .auto_shutdown(false)
                .build(),
        )
    } else {
        Pool::Common(support::common_local(1, 4))
    }
}

impl Pool {
    /// Its first task waits on `gate` (and counts its start in `started`), its second is
    /// queued behind it.
    fn running_and_queued(
        &self,
        gate: &support::Gate,
        started: &Arc<AtomicUsize>,
    ) -> (TaskHandle<u32>, TaskHandle<u32>) {
        let (g, s) = (gate.clone(), Arc::clone(started));
        let first = move || {
            let (g, s) = (g.clone(), s.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                g.wait().await;
                1u32
            }
        };
        match self {
            Pool::Common(p) => (
                p.try_submit(first()).unwrap(),
                p.try_submit(async { 2 }).unwrap(),
            ),
            Pool::Smart(p) => (
                p.try_submit(first).unwrap(),
                p.try_submit(|| async { 2 }).unwrap(),
            ),
        }
    }
}

/// Pin (review of 289): tasks cut off by the end of their runtime are decided before
/// their pool is freed (`Slot::drop` cancels the running one, `runtime_gone` a
/// CommonAioPool's queued one; a SmartAioPool's never-started one runs where it is
/// awaited), so their handles' aborts, made after the pool's number went to new pools
/// whose tasks of the same `TaskId`s run and wait in the queue, reach nothing. (The
/// CommonAioPool's number is reused, last freed first: the first new pool has it. The
/// SmartAioPool, dropped busy, is still kept when the new pools are made, and its number
/// with it: that round checks only that aborts of decided tasks reach no other pool.)
#[test]
fn pin_aborts_of_tasks_cut_off_by_their_runtimes_end_leave_new_pools_alone() {
    let _serial = support::serial();
    for smart in [false, true] {
        let rt = support::current_thread();
        let (cut_running, cut_queued) = rt.block_on(async {
            let pool = one_slot(smart);
            let started = Arc::new(AtomicUsize::new(0));
            let handles = pool.running_and_queued(&support::Gate::default(), &started);
            support::reach(&started, 1, Duration::from_secs(10)).await;
            handles
            // The pool's handle goes here; its slot keeps the engine until the runtime's end.
        });
        drop(rt);
        let (running_abort, queued_abort) = (cut_running.abort_handle(), cut_queued.abort_handle());
        support::current_thread().block_on(async {
            let err = support::within("the task cut off", cut_running)
                .await
                .unwrap_err();
            assert_eq!(err.cancel_reason(), Some(CancelReason::RuntimeShutdown));
            let queued = support::within("the queued task", cut_queued).await;
            if smart {
                // A recipe never started runs on the runtime that awaits it.
                assert_eq!(queued.unwrap(), 2);
            } else {
                let reason = queued.unwrap_err().cancel_reason();
                assert_eq!(reason, Some(CancelReason::RuntimeShutdown));
            }
            // Let a pool that ran it there see its end.
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let gate = support::Gate::default();
            let started = Arc::new(AtomicUsize::new(0));
            let made: Vec<(Pool, TaskHandle<u32>, TaskHandle<u32>)> = (0..4)
                .map(|_| {
                    let pool = one_slot(smart);
                    let (a, b) = pool.running_and_queued(&gate, &started);
                    assert_eq!((a.id(), b.id()), (running_abort.id(), queued_abort.id()));
                    (pool, a, b)
                })
                .collect();
            assert_eq!(
                support::reach(&started, 4, Duration::from_secs(10)).await,
                4
            );
            running_abort.abort();
            queued_abort.abort();
            for (pool, _, _) in &made {
                let stats = pool.stats();
                assert_eq!(
                    (stats.running, stats.queued, stats.cancelled),
                    (1, 1, 0),
                    "smart {smart}: an old abort reached a new pool: {stats:?}"
                );
            }
            gate.open();
            for (_, a, b) in made {
                assert_eq!(support::within("a new running task", a).await.unwrap(), 1);
                assert_eq!(support::within("a new queued task", b).await.unwrap(), 2);
            }
        });
    }
}

/// Pin (review of 289): the handle of a finished task of a dropped pool, awaited inside
/// a task of a pool made later (which has the old pool's number), gives its result: the
/// handle's poll finds the outcome before it asks whether it is awaited inside its own
/// pool (`context::current_task`), so the new pool counts no wait on it and, its only
/// slot waiting, refuses nothing (`WouldDeadlock`).
#[test]
fn pin_an_old_handle_awaited_in_a_pool_that_took_its_pools_number_gives_its_result() {
    let _serial = support::serial();
    for smart in [false, true] {
        support::current_thread().block_on(async {
            let old_handle = {
                let pool = one_slot(smart);
                let h = match &pool {
                    Pool::Common(p) => p.try_submit(async { 7u32 }).unwrap(),
                    Pool::Smart(p) => p.try_submit(|| async { 7u32 }).unwrap(),
                };
                support::within("the old task", async {
                    while !h.is_finished() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
                h
            };
            // Let the old pool's idle slot task exit, freeing its engine and its number.
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let new = one_slot(smart);
            let old_handle = Arc::new(Mutex::new(Some(old_handle)));
            let h = match &new {
                Pool::Common(p) => {
                    let old = old_handle.lock().unwrap().take().unwrap();
                    p.try_submit(old).unwrap()
                }
                Pool::Smart(p) => {
                    let old = Arc::clone(&old_handle);
                    p.try_submit(move || {
                        let old = old.lock().unwrap().take();
                        async move { old.expect("run once").await }
                    })
                    .unwrap()
                }
            };
            let out = support::within("the new task", h).await.unwrap();
            assert_eq!(out.unwrap(), 7, "smart {smart}");
            assert_eq!(new.stats().cancelled, 0);
        });
    }
}
