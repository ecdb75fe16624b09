//! Aborting a task that has not started: it leaves the queue at once. Its place is free
//! for the next submit and `stats()` no longer counts it as queued, whatever holds the
//! queue up (busy slots, a key limit, a rate window that never reopens), and `wait()` no
//! longer waits for it; its future (or recipe) is dropped right after on its runtime.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool::{CancelReason, CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitOptions};
use support::{current_thread, Gate};

/// Sets its flag when dropped: tells when a queued future (or recipe) is dropped.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn flag() -> (Arc<AtomicBool>, Dropped) {
    let f = Arc::new(AtomicBool::new(false));
    (f.clone(), Dropped(f))
}

/// Waits (yielding to the runtime, which drops an aborted queued job) until `flag` is set.
async fn dropped_soon(flag: &AtomicBool, what: &str) {
    let drop_seen = async {
        while !flag.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), drop_seen)
        .await
        .is_err()
    {
        panic!("{what} was not dropped");
    }
}

/// A future that records whether it ever ran, and is dropped with `guard`.
fn tracked(ran: &Arc<AtomicUsize>, guard: Dropped) -> impl std::future::Future<Output = ()> {
    let ran = ran.clone();
    async move {
        let _guard = guard;
        ran.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn an_aborted_queued_task_frees_its_place_at_once() {
    current_thread().block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(2)
            .process_wide(false)
            .build();
        let gate = Gate::default();
        let g = gate.clone();
        let busy = pool.submit(async move { g.wait().await }).await.unwrap();
        tokio::task::yield_now().await; // it starts and holds the only slot
        let ran = Arc::new(AtomicUsize::new(0));
        let (dropped_a, guard_a) = flag();
        let (dropped_b, guard_b) = flag();
        let a = pool.submit(tracked(&ran, guard_a)).await.unwrap();
        let b = pool.submit(tracked(&ran, guard_b)).await.unwrap();
        assert_eq!(pool.stats().queued, 2);
        assert!(pool.try_submit(async {}).is_err(), "the queue is full");

        a.abort();
        let s = pool.stats();
        assert_eq!((s.queued, s.cancelled), (1, 1), "{s:?}");
        let c = pool
            .try_submit(async { 3 })
            .expect("the aborted task's place is free at once");
        assert!(pool.try_submit(async {}).is_err(), "one place only");
        // Dropped on its runtime, as a slot would drop it.
        dropped_soon(&dropped_a, "the aborted future").await;
        assert!(!dropped_b.load(Ordering::SeqCst));

        let err = a.await.unwrap_err();
        assert_eq!(err.cancel_reason(), Some(CancelReason::Aborted));
        gate.open();
        busy.await.unwrap();
        b.await.unwrap();
        assert_eq!(c.await.unwrap(), 3);
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the aborted task ran");
        pool.shutdown().await;
        let s = pool.stats();
        assert_eq!((s.completed, s.cancelled, s.queued), (3, 1, 0), "{s:?}");
    });
}

/// The waiting submitter is let in by the abort, not by the busy task's end.
#[test]
fn an_abort_lets_a_waiting_submit_in() {
    current_thread().block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(1)
            .process_wide(false)
            .build();
        let gate = Gate::default();
        let g = gate.clone();
        let _busy = pool.submit(async move { g.wait().await }).await.unwrap();
        tokio::task::yield_now().await;
        let queued = pool.submit(async {}).await.unwrap();
        let p = pool.clone();
        let waiting = tokio::spawn(async move { p.submit(async { 5 }).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "the queue is full: the submit waits"
        );
        queued.abort();
        let admitted = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert!(
            matches!(admitted, Ok(Ok(Ok(())))),
            "the submit still waited after the abort: {:?}",
            pool.stats()
        );
        assert_eq!(pool.stats().queued, 1);
        gate.open();
        pool.shutdown().await;
    });
}

/// A task aborted between its submit and the start of the slot reserved for it (on a
/// current-thread runtime, before the submitter yields): it never runs, its slot is free.
#[test]
fn a_task_aborted_before_its_reserved_slot_starts_never_runs() {
    current_thread().block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(0)
            .process_wide(false)
            .build();
        let ran = Arc::new(AtomicUsize::new(0));
        let (dropped, guard) = flag();
        let h = pool.submit(tracked(&ran, guard)).await.unwrap();
        h.abort();
        let s = pool.stats();
        assert_eq!((s.running, s.queued, s.cancelled), (0, 0, 1), "{s:?}");
        let next = pool
            .try_submit(async { 1 })
            .expect("the reserved slot is free again");
        dropped_soon(&dropped, "the aborted future").await;
        assert_eq!(next.await.unwrap(), 1);
        pool.wait().await;
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the aborted task ran");
        assert_eq!(pool.stats().completed, 1);
    });
}

/// With priorities the queue is ordered by them; the abort finds the task there too.
#[test]
fn an_aborted_task_leaves_a_prioritised_queue() {
    current_thread().block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(3)
            .process_wide(false)
            .build();
        let gate = Gate::default();
        let g = gate.clone();
        let _busy = pool.submit(async move { g.wait().await }).await.unwrap();
        tokio::task::yield_now().await;
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for p in [1, 5, 3] {
            let o = order.clone();
            let h = pool
                .submit_with(
                    async move {
                        o.lock().unwrap().push(p);
                    },
                    SubmitOptions::new().priority(p),
                )
                .await
                .unwrap();
            handles.push(h);
        }
        handles[1].abort(); // priority 5: the queue's head
        assert_eq!(pool.stats().queued, 2);
        let _kept = pool.try_submit(async {}).expect("its place is free");
        gate.open();
        pool.shutdown().await;
        assert_eq!(*order.lock().unwrap(), [3, 1]);
    });
}

/// Limitation 74 until this change: with a rate window that never reopens, a task held
/// back by it and aborted stayed queued for good (`wait()` never returned).
#[tokio::test(start_paused = true)]
async fn a_task_aborted_while_the_rate_limit_holds_it_back_leaves_at_once() {
    let pool = CommonAioPool::builder()
        .max_concurrency(2)
        .max_queue_size(2)
        .rate_limit(1, Duration::MAX)
        .process_wide(false)
        .build();
    pool.submit(async {}).await.unwrap().await.unwrap(); // the one start, ever
    let (dropped, guard) = flag();
    let held = pool
        .submit(async move {
            let _g = guard;
        })
        .await
        .unwrap();
    assert_eq!(pool.stats().queued, 1);
    held.abort();
    assert_eq!(pool.stats().queued, 0);
    dropped_soon(&dropped, "the aborted future").await;
    let waited = tokio::time::timeout(Duration::from_secs(60), pool.wait()).await;
    assert!(waited.is_ok(), "wait() hung: {:?}", pool.stats());
}

/// A `NoQueueAioPool` holds back, inside the pool, a task whose key is at its limit.
#[test]
fn an_aborted_task_held_back_by_its_key_leaves_a_no_queue_pool() {
    current_thread().block_on(async {
        let pool = NoQueueAioPool::builder()
            .max_concurrency(2)
            .max_per_key(1)
            .process_wide(false)
            .build();
        let gate = Gate::default();
        let g = gate.clone();
        let opts = || SubmitOptions::new().key("host");
        let _busy = pool
            .submit_with(async move { g.wait().await }, opts())
            .await
            .unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let (dropped, guard) = flag();
        let held = pool
            .submit_with(tracked(&ran, guard), opts())
            .await
            .unwrap();
        tokio::task::yield_now().await;
        assert_eq!(pool.stats().queued, 1, "held back by its key");
        held.abort();
        assert_eq!(pool.stats().queued, 0);
        dropped_soon(&dropped, "the aborted future").await;
        gate.open();
        pool.wait().await;
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn an_aborted_queued_smart_task_drops_its_recipe_at_once() {
    current_thread().block_on(async {
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(1)
            .process_wide(false)
            .auto_shutdown(false)
            .build();
        let gate = Gate::default();
        let g = gate.clone();
        let _busy = pool
            .submit(move || {
                let g = g.clone();
                async move { g.wait().await }
            })
            .await
            .unwrap();
        tokio::task::yield_now().await;
        let (dropped, guard) = flag();
        let queued = pool
            .submit(move || {
                let _keep = &guard;
                async {}
            })
            .await
            .unwrap();
        assert!(pool.try_submit(|| async {}).is_err(), "the queue is full");
        queued.abort();
        let s = pool.stats();
        assert_eq!((s.queued, s.cancelled), (0, 1), "{s:?}");
        let _kept = pool.try_submit(|| async {}).expect("its place is free");
        dropped_soon(&dropped, "the recipe").await;
        gate.open();
        pool.wait().await;
        assert_eq!(pool.stats().completed, 2);
    });
}

/// Dropping a group aborts its queued tasks: their places are free when the drop returns.
#[test]
fn dropping_a_group_frees_the_places_of_its_queued_tasks() {
    current_thread().block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(100)
            .process_wide(false)
            .build();
        let gate = Gate::default();
        let g = gate.clone();
        let _busy = pool.submit(async move { g.wait().await }).await.unwrap();
        tokio::task::yield_now().await;
        let mut group = pool.group::<()>();
        for _ in 0..100 {
            group.submit(async {}).await.unwrap();
        }
        assert!(pool.try_submit(async {}).is_err());
        drop(group);
        let s = pool.stats();
        assert_eq!((s.queued, s.cancelled), (0, 100), "{s:?}");
        for _ in 0..100 {
            let _kept = pool
                .try_submit(async {})
                .expect("a place freed by the group's drop");
        }
        gate.open();
        pool.shutdown().await;
        assert_eq!(pool.stats().completed, 101);
    });
}

/// Panics when dropped; counts its drops.
struct PanicsOnDrop(Arc<AtomicUsize>);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("a queued future's Drop panics");
    }
}

/// A `cancel_on_panic` group aborts its other tasks while the panicking one unwinds; its
/// queued tasks leave the queue then and are dropped afterwards on the runtime, where a
/// panic in a `Drop` is caught (a second panic during the unwinding would abort the
/// process, as would a stack of nested drops).
#[test]
fn queued_tasks_aborted_while_a_panic_unwinds_are_dropped_safely() {
    current_thread().block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(4)
            .process_wide(false)
            .build();
        let mut group = pool.group::<()>().cancel_on_panic(true);
        group
            .submit(async {
                tokio::task::yield_now().await;
                panic!("trips the group");
            })
            .await
            .unwrap();
        let drops = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let guard = PanicsOnDrop(drops.clone());
            group
                .submit(async move {
                    let _g = guard;
                })
                .await
                .unwrap();
        }
        let results = group.join_all().await;
        assert!(results[0].as_ref().unwrap_err().is_panic());
        for r in &results[1..] {
            assert_eq!(
                r.as_ref().unwrap_err().cancel_reason(),
                Some(CancelReason::Aborted)
            );
        }
        pool.wait().await;
        // Dropped by tasks of the runtime, which `wait()` does not wait for.
        let both_dropped = async {
            while drops.load(Ordering::SeqCst) < 2 {
                tokio::task::yield_now().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), both_dropped).await;
        assert_eq!(
            drops.load(Ordering::SeqCst),
            2,
            "both queued futures dropped"
        );
        let s = pool.stats();
        assert_eq!(
            (s.queued, s.running, s.panicked, s.cancelled),
            (0, 0, 1, 2),
            "{s:?}"
        );
    });
}
