//! Shutdown, cancellation and observability: findings 32–39 of RELIABILITY.md, found on
//! 521b631 by a review of those areas; each test here failed there, all are fixed.
//!
//! The feature parts run with `cargo test -p nb-aiopool --all-features --test
//! shutdown_and_observability` (as `.ci/run` does).

// Some `block_on` blocks hand back handles, to await elsewhere.
#![allow(clippy::async_yields_async)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use nb_aiopool::{CancelReason, CommonAioPool};

mod support;

use support::{paused_runtime as current_thread, serial};

// ----- a per-thread allocation counter ------------------------------------------------------

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|l| l.set(l.get() + layout.size() as isize));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get() - layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LIVE.try_with(|l| l.set(l.get() + new_size as isize - layout.size() as isize));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_bytes() -> isize {
    LIVE.with(|l| l.get())
}

// ----- shutdown and cancellation --------------------------------------------------------------

/// `wait()` (and the future `cancel_all()` returns) registers its wait when it is *called*,
/// but only the first poll creates the guard that removes it. A wait future dropped unpolled
/// (`drop(pool.cancel_all())`, which the docs call cancel safe: "dropping the future only
/// stops the wait") leaves its entry in the engine for the pool's lifetime: memory grows
/// without bound, and every job's end walks all of them under the lock.
#[test]
fn an_unpolled_wait_future_dropped_leaves_nothing_behind() {
    let _serial = serial();
    current_thread().block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(1)
            .process_wide(false)
            .build();
        let stuck = pool.submit(std::future::pending::<()>()).await.unwrap();
        tokio::task::yield_now().await;
        // Warm up (first slab growth, etc.).
        drop(pool.wait());
        let before = live_bytes();
        for _ in 0..100_000 {
            drop(pool.wait());
        }
        stuck.abort();
        pool.wait().await;
        let grown = live_bytes() - before;
        assert!(
            grown < 64 * 1024,
            "100,000 dropped unpolled wait() futures left {grown} bytes behind in the pool"
        );
        pool.shutdown().await;
    });
}

/// `ShutdownReport::abandoned` counts "tasks still queued or running at the deadline ...
/// their handles resolve to `Abandoned`", and `finished` counts tasks that were aborted.
/// A task aborted while queued stayed in the queue until a slot reached it; when the
/// deadline's `cancel_all(Abandoned)` popped it, the engine counted it as `Abandoned`
/// without looking at the abort that decided its outcome first
/// (`Engine::cancel_all`, src/engine/lifecycle.rs, `count_end(.., Cancelled(reason))`).
/// Since an abort takes a queued task out of the queue at once, it ends before the
/// shutdown starts: the report counts it in neither figure.
#[test]
fn shutdown_timeout_does_not_count_an_aborted_queued_task_as_abandoned() {
    let _serial = serial();
    current_thread().block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(10)
            .process_wide(false)
            .build();
        let running = pool.submit(std::future::pending::<()>()).await.unwrap();
        let queued = pool.submit(std::future::pending::<()>()).await.unwrap();
        tokio::task::yield_now().await;
        queued.abort();
        let err = queued.await.unwrap_err();
        assert_eq!(err.cancel_reason(), Some(CancelReason::Aborted));

        let report = pool.shutdown_timeout(Duration::from_secs(1)).await;
        let err = running.await.unwrap_err();
        assert_eq!(err.cancel_reason(), Some(CancelReason::Abandoned));
        assert_eq!(
            (report.finished(), report.abandoned()),
            (0, 1),
            "one task abandoned at the deadline (the running one); the queued one was \
             aborted, and so ended, before the shutdown: {report}"
        );
        let stats = pool.stats();
        assert_eq!((stats.cancelled, stats.queued), (2, 0), "{stats:?}");
    });
}

// ----- tracing ----------------------------------------------------------------------------------

#[cfg(feature = "tracing")]
mod collector;

#[cfg(feature = "tracing")]
mod with_tracing {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use nb_aiopool::{CancelReason, CommonAioPool, SmartAioPool};

    use super::{current_thread, serial};
    use crate::collector::{Collector, EventRec};

    /// A task's span should end with the task: the slot keeps the `Running` of the last
    /// task it ran (`Slot::obs`, src/engine/slot.rs) until it starts another one or exits,
    /// so the span of a finished task (and, through it, the submitter's span it is a child
    /// of, in subscribers that keep parents alive) stays open while the slot idles: a span
    /// exporter reports a wrong end time, or never exports the span.
    #[test]
    fn a_task_span_is_closed_once_the_task_has_ended() {
        let _serial = serial();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            current_thread().block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(2)
                    .name("closing")
                    .process_wide(false)
                    .build();
                let h = pool.submit(async { 1 }).await.unwrap();
                let id = h.id();
                assert_eq!(h.await.unwrap(), 1);
                pool.wait().await;
                // Let the slot settle into idleness.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                let open = log.open_task_spans();
                assert!(
                    open.is_empty(),
                    "task {id} ended, its span is still open: {open:?}"
                );
                pool.shutdown().await;
            });
        });
    }

    /// The docs list `would_deadlock` as a reason of `task cancelled`, but a task cancelled
    /// because awaiting it would deadlock is cancelled through its abort flag
    /// (`Shared::abort(WouldDeadlock)`, src/task/handle.rs) and its run reports
    /// `Cancelled(Aborted)` (`Run::poll_run`, src/task/run.rs): the event says `aborted`.
    #[test]
    fn a_would_deadlock_cancellation_is_reported_as_would_deadlock() {
        let _serial = serial();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            current_thread().block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(1)
                    .max_queue_size(1)
                    .name("deadlock")
                    .process_wide(false)
                    .build();
                let inner_pool = pool.clone();
                let outer = pool
                    .submit(async move {
                        let inner = inner_pool.submit(async { 1 }).await.unwrap();
                        let id = inner.id();
                        (id, inner.await)
                    })
                    .await
                    .unwrap();
                let (inner_id, result) = outer.await.unwrap();
                assert_eq!(
                    result.unwrap_err().cancel_reason(),
                    Some(CancelReason::WouldDeadlock)
                );
                pool.shutdown().await;
                let reasons: Vec<(String, String)> = log
                    .events_with("task cancelled")
                    .into_iter()
                    .map(
                        |EventRec {
                             fields: f,
                             span_fields: span,
                             ..
                         }| {
                            let id =
                                f.0.get("task_id")
                                    .cloned()
                                    .or_else(|| span.and_then(|s| s.0.get("task_id").cloned()))
                                    .unwrap_or_default();
                            (id, f.0.get("reason").cloned().unwrap_or_default())
                        },
                    )
                    .collect();
                assert_eq!(
                    reasons,
                    [(inner_id.to_string(), "would_deadlock".to_string())],
                    "the handle says WouldDeadlock"
                );
            });
        });
    }

    /// Rejections are events: the pool's own `try_submit` of a full pool emits `submit
    /// rejected` (reason `full`), but a group's `try_submit` refused the same way emits
    /// nothing (`TaskGroup::try_submit`, src/pool/group/task_group.rs, never calls `rejected`).
    #[test]
    fn a_group_try_submit_refused_as_full_is_an_event() {
        let _serial = serial();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            current_thread().block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(1)
                    .max_queue_size(0)
                    .name("grouped")
                    .process_wide(false)
                    .build();
                let mut group = pool.group::<()>();
                group.try_submit(std::future::pending::<()>()).unwrap();
                assert!(group.try_submit(async {}).unwrap_err().is_full());
                let rejected = log.events_with("submit rejected");
                let reasons: Vec<_> = rejected
                    .iter()
                    .map(|EventRec { fields: f, .. }| {
                        f.0.get("reason").cloned().unwrap_or_default()
                    })
                    .collect();
                assert_eq!(reasons, ["full"], "one event for the refused try_submit");
                drop(group);
                pool.shutdown().await;
            });
        });
    }

    /// Nothing of the subscriber may run under the engine's lock (the engine takes the
    /// submit's span before it locks for that reason). But `Engine::cancel_all`
    /// (src/engine/lifecycle.rs) pops the queued jobs under the lock and drops each `Queued`
    /// there, with its `Stamp`, whose `parent` is a `Span`: its drop calls the
    /// subscriber's `try_close` under the pool's lock. A subscriber that uses the pool
    /// there (reads stats, submits an export) deadlocks.
    #[test]
    fn cancel_all_does_not_call_the_subscriber_under_the_pools_lock() {
        let _serial = serial();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            current_thread().block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(1)
                    .max_queue_size(4)
                    .name("locked")
                    .process_wide(false)
                    .build();
                let request = tracing::info_span!("request");
                let mut handles = Vec::new();
                {
                    let _in = request.enter();
                    for _ in 0..3 {
                        handles.push(pool.submit(std::future::pending::<()>()).await.unwrap());
                    }
                }
                tokio::task::yield_now().await;
                let p = pool.clone();
                log.probe(move || p.stats());
                let cancel = pool.cancel_all();
                log.stop_probe();
                cancel.await;
                let under_lock = log.closes_under_lock();
                for h in handles {
                    assert!(h.await.unwrap_err().is_cancelled());
                }
                pool.shutdown().await;
                assert_eq!(
                    under_lock, 0,
                    "the subscriber's try_close ran under the pool's lock {under_lock} times"
                );
            });
        });
    }

    /// A SmartAioPool run interrupted by the end of its runtime is queued again to run
    /// elsewhere; that happens under the pool's lock, so nothing there may ask the
    /// subscriber for the current span (the stamp of a submit is taken before the lock for
    /// that reason). Left open by the reviews of 1c94746 (`Stamp::now` in `requeue_first`).
    #[test]
    fn a_rerun_queued_again_does_not_call_the_subscriber_under_the_pools_lock() {
        let _serial = serial();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            let pool = SmartAioPool::builder()
                .max_concurrency(1)
                .name("rerun")
                .process_wide(false)
                .build();
            let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let first = current_thread();
            let r = runs.clone();
            let handle = first.block_on(async {
                let h = pool
                    .submit(move || {
                        let n = r.fetch_add(1, Ordering::SeqCst);
                        async move {
                            if n == 0 {
                                std::future::pending::<()>().await; // interrupted
                            }
                            n
                        }
                    })
                    .await
                    .unwrap();
                tokio::task::yield_now().await; // the first run starts
                h
            });
            let p = pool.clone();
            log.probe(move || p.stats());
            drop(first); // the run is interrupted and queued again
            log.stop_probe();
            let under_lock = log.currents_under_lock();
            let second = current_thread();
            let n = second.block_on(async {
                pool.shutdown().await; // runs what is queued, here
                handle.await.unwrap()
            });
            assert_eq!(n, 1, "the task ran again on the live runtime");
            assert_eq!(
                under_lock, 0,
                "the subscriber's current_span ran under the pool's lock {under_lock} times"
            );
        });
    }

    /// A queued task cancelled by the nested-wait check (`WouldDeadlock`) stays in the
    /// queue until something removes it; `cancel_all` did, and reported (and counted) it
    /// as `aborted`. Left open by the review of dacf7cc.
    #[test]
    fn a_queued_would_deadlock_task_dropped_by_cancel_all_is_reported_as_such() {
        let _serial = serial();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            current_thread().block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(1)
                    .max_queue_size(2)
                    .name("nested")
                    .process_wide(false)
                    .build();
                let (broken_tx, broken_rx) = tokio::sync::oneshot::channel();
                let inner = pool.clone();
                let outer = pool
                    .submit(async move {
                        let child = inner.submit(async {}).await.unwrap(); // queued
                        let id = child.id().as_u64();
                        let err = child.await.unwrap_err(); // the only slot waits for it
                        let _ = broken_tx.send((id, err.cancel_reason()));
                        std::future::pending::<()>().await;
                    })
                    .await
                    .unwrap();
                let (child, reason) = broken_rx.await.unwrap();
                assert_eq!(reason, Some(CancelReason::WouldDeadlock));
                pool.cancel_all().await;
                assert!(outer.await.unwrap_err().is_cancelled());
                let reasons: Vec<_> = log
                    .events_with("task cancelled")
                    .into_iter()
                    .filter(|EventRec { fields: f, .. }| {
                        f.0.get("task_id") == Some(&child.to_string())
                    })
                    .map(|EventRec { fields: f, .. }| {
                        f.0.get("reason").cloned().unwrap_or_default()
                    })
                    .collect();
                assert_eq!(reasons, ["would_deadlock"]);
                pool.shutdown().await;
            });
        });
    }

    /// A stream over a pool that was shut down refuses its inputs: like a submit, it emits
    /// one `submit rejected` event (reason `closed`). Its first admission, `try_admit`,
    /// reported nothing (noticed by the review of 5862fc8).
    #[test]
    fn a_stream_refused_by_a_closed_pool_emits_the_rejection() {
        use futures_util::StreamExt;
        let _serial = serial();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            current_thread().block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(1)
                    .name("closed")
                    .process_wide(false)
                    .build();
                pool.shutdown().await;
                let items: Vec<_> = pool
                    .map_unordered(futures_util::stream::iter([1, 2]), |i| async move { i })
                    .collect()
                    .await;
                assert!(items.iter().all(|r| r.is_err()), "{items:?}");
                let reasons: Vec<_> = log
                    .events_with("submit rejected")
                    .into_iter()
                    .map(|EventRec { fields: f, .. }| {
                        f.0.get("reason").cloned().unwrap_or_default()
                    })
                    .collect();
                assert_eq!(reasons, ["closed"]);
            });
        });
    }

    /// A running task aborted and then dropped by its runtime's shutdown before its slot
    /// polled it again is counted as aborted (its handle says Aborted), but `Slot::drop`
    /// (src/engine/slot.rs) reports the cancellation with reason `runtime_shutdown`
    /// whatever was decided.
    #[test]
    fn a_cancellation_event_names_the_reason_that_was_counted() {
        let _serial = serial();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            let pool = CommonAioPool::builder()
                .max_concurrency(1)
                .name("dying")
                .process_wide(false)
                .build();
            let rt = current_thread();
            let handle = rt.block_on(async {
                let h = pool.submit(std::future::pending::<()>()).await.unwrap();
                tokio::task::yield_now().await; // it starts
                h.abort();
                h
            });
            drop(rt);
            let err = futures_util::FutureExt::now_or_never(handle)
                .expect("resolved")
                .unwrap_err();
            assert_eq!(err.cancel_reason(), Some(CancelReason::Aborted));
            assert_eq!(pool.stats().cancelled, 1);
            let reasons: Vec<_> = log
                .events_with("task cancelled")
                .into_iter()
                .map(|EventRec { fields: f, .. }| f.0.get("reason").cloned().unwrap_or_default())
                .collect();
            assert_eq!(reasons, ["aborted"]);
        });
    }
}

// ----- metrics ----------------------------------------------------------------------------------

#[cfg(feature = "metrics")]
mod with_metrics {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use nb_aiopool::CommonAioPool;

    use super::serial;

    /// The gauges follow `PoolStats::queued` and `running`: but `set_max_concurrency`
    /// reserves slots for queued jobs (queued -> running in `stats()`) under the lock
    /// without recording the gauges (`Engine::set_max_concurrency`, src/engine/start.rs; also
    /// `rate_tick` and `ensure_started`); they catch up only when a claimer runs.
    #[test]
    fn gauges_follow_a_grow_of_set_max_concurrency() {
        let _serial = serial();
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let runtime = super::current_thread();
        let gauges = || {
            let mut out = (f64::NAN, f64::NAN);
            for (key, _, _, value) in snapshotter.snapshot().into_vec() {
                if let DebugValue::Gauge(v) = value {
                    match key.key().name() {
                        "nb_aiopool_tasks_queued" => out.0 = v.0,
                        "nb_aiopool_tasks_running" => out.1 = v.0,
                        _ => {}
                    }
                }
            }
            out
        };
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(1)
                    .max_queue_size(10)
                    .name("grown")
                    .process_wide(false)
                    .build();
                let mut handles = Vec::new();
                for _ in 0..3 {
                    handles.push(pool.submit(std::future::pending::<()>()).await.unwrap());
                }
                tokio::task::yield_now().await;
                // (Not read here: the debugging recorder's snapshot resets gauges to 0.)
                let s = pool.stats();
                assert_eq!((s.queued, s.running), (2, 1));
                pool.set_max_concurrency(3);
                let s = pool.stats();
                assert_eq!((s.queued, s.running), (0, 3));
                assert_eq!(
                    gauges(),
                    (s.queued as f64, s.running as f64),
                    "the gauges after set_max_concurrency disagree with stats()"
                );
                for h in &handles {
                    h.abort();
                }
                pool.shutdown().await;
            });
        });
    }
}
