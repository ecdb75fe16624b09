//! Regression tests of a review of the `tracing` and `metrics` features (2026-12-05;
//! RELIABILITY.md, findings 251–253), and pins of counters and gauges against `PoolStats`. Run with
//! `cargo test -p nb-aiopool --all-features --test observability_findings` (CI does).
#![cfg(all(feature = "tracing", feature = "metrics"))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::DebuggingRecorder;
use metrics_util::MetricKind;
use nb_aiopool::{CancelReason, CommonAioPool, NoQueueAioPool};

mod collector;
mod metric_figures;
mod support;

use metric_figures::Figures;

// The tests of this file run one at a time (`support::serial`): one global recorder.
use support::serial;

/// Finding 251. A task held back by a rate window that never reopens, cancelled when its pool is
/// dropped (findings 210, 222, 247, 250): its handle resolves `Cancelled`, so the
/// `metrics` figures must count it as cancelled (counters "as `PoolStats` counts them":
/// submitted = completed + panicked + cancelled once nothing is left) and the
/// `nb_aiopool_tasks_queued` gauge must come back to 0, and the `tracing` feature must
/// emit its `task cancelled` event (with `task_id`, as for any task cancelled before it
/// started).
#[test]
fn a_held_back_task_cancelled_at_its_pools_drop_is_counted_and_leaves_no_queued_gauge() {
    let _serial = serial();
    for no_queue in [false, true] {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let log = collector::Collector::default();
        let runtime = support::current_thread();
        let name = if no_queue { "held_nq" } else { "held_common" };
        tracing::subscriber::with_default(log.clone(), || {
            metrics::with_local_recorder(&recorder, || {
                runtime.block_on(async {
                    let (first, held) = if no_queue {
                        let pool = NoQueueAioPool::builder()
                            .max_concurrency(2)
                            .rate_limit(1, Duration::MAX)
                            .name(name)
                            .process_wide(false)
                            .build();
                        let first = pool.submit(async {}).await.unwrap();
                        let held = pool.submit(async { 1 }).await.unwrap();
                        (first, held)
                    } else {
                        let pool = CommonAioPool::builder()
                            .max_concurrency(2)
                            .rate_limit(1, Duration::MAX)
                            .name(name)
                            .process_wide(false)
                            .build();
                        let first = pool.submit(async {}).await.unwrap();
                        let held = pool.submit(async { 1 }).await.unwrap();
                        (first, held)
                    };
                    // The pool is dropped (the end of the block above).
                    support::within("the first task", first).await.unwrap();
                    let err = support::within("the held-back task", held)
                        .await
                        .unwrap_err();
                    assert_eq!(err.cancel_reason(), Some(CancelReason::RuntimeShutdown));
                });
            });
        });
        let mut f = Figures::default();
        f.take(&snapshotter, name);
        let submitted = f.counter("nb_aiopool_tasks_submitted");
        let ended = f.counter("nb_aiopool_tasks_completed")
            + f.counter("nb_aiopool_tasks_panicked")
            + f.counter("nb_aiopool_tasks_cancelled");
        let queued = f.gauge("nb_aiopool_tasks_queued");
        let running = f.gauge("nb_aiopool_tasks_running");
        let cancel_events = log.events_with("task cancelled").len();
        assert_eq!(
            (
                submitted,
                ended,
                f.counter("nb_aiopool_tasks_cancelled"),
                queued,
                running,
                cancel_events
            ),
            (2.0, 2.0, 1.0, 0.0, 0.0, 1),
            "no_queue {no_queue}: (submitted, ended, cancelled, queued gauge, running gauge, \
             `task cancelled` events) after the pool was dropped and both handles resolved"
        );
    }
}

/// Checks that the `metrics` figures of pool `name` agree with its `stats`.
fn agree(f: &Figures, s: nb_aiopool::PoolStats, what: &str) {
    if let Some(e) = f.against(&s) {
        panic!("{what}: {e} ({s:?})");
    }
}

/// Pinned (passes): the counters and gauges agree with `PoolStats` after a runtime's end,
/// `cancel_all`, aborts and a `shutdown_timeout` that abandons.
#[test]
fn counters_and_gauges_agree_with_stats_after_runtime_ends_cancel_all_and_abandons() {
    let _serial = serial();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let mut f = Figures::default();
    metrics::with_local_recorder(&recorder, || {
        let pool = CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(10)
            .name("agree")
            .process_wide(false)
            .build();
        // A runtime's end with one running and two queued.
        let rt = support::current_thread();
        let handles = rt.block_on(async {
            let mut hs = Vec::new();
            for _ in 0..3 {
                hs.push(pool.submit(std::future::pending::<()>()).await.unwrap());
            }
            tokio::task::yield_now().await;
            hs
        });
        drop(rt);
        let rt = support::current_thread();
        rt.block_on(async {
            for h in handles {
                assert!(support::within("lost", h).await.unwrap_err().is_cancelled());
            }
            f.take(&snapshotter, "agree");
            agree(&f, pool.stats(), "after a runtime's end");
            // cancel_all with one running and two queued, one aborted first.
            let mut hs = Vec::new();
            for _ in 0..3 {
                hs.push(pool.submit(std::future::pending::<()>()).await.unwrap());
            }
            tokio::task::yield_now().await;
            hs[2].abort();
            support::within("cancel_all", pool.cancel_all()).await;
            for h in hs {
                assert!(h.await.unwrap_err().is_cancelled());
            }
            f.take(&snapshotter, "agree");
            agree(&f, pool.stats(), "after cancel_all");
            for _ in 0..3 {
                pool.submit(std::future::pending::<()>())
                    .await
                    .unwrap()
                    .detach();
            }
            let report = pool.shutdown_timeout(Duration::from_millis(10)).await;
            assert_eq!(report.abandoned(), 3);
            f.take(&snapshotter, "agree");
            agree(&f, pool.stats(), "after shutdown_timeout");
        });
    });
}

/// Pinned (it passed before any fix: the runtime's end gives the reservation back, so no
/// reserved job reaches the engine's drop). A job reserved a slot (a claimer was spawned for it on its runtime) when that runtime
/// shut down before polling the claimer, then its pool dropped: the engine's drop cancels
/// it (its handle says `RuntimeShutdown`, the cancelled counter counts it), so the
/// `nb_aiopool_tasks_running` gauge, in which a reserved job counts, must come back to 0
/// as the queued one does (gauges "as `PoolStats::queued` and `running`"; a pool gone
/// runs nothing).
#[test]
fn a_reserved_job_cancelled_at_its_pools_drop_leaves_no_running_gauge() {
    let _serial = serial();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let name = "reserved_at_drop";
    let mut f = Figures::default();
    metrics::with_local_recorder(&recorder, || {
        let pool = CommonAioPool::builder()
            .max_concurrency(1)
            .name(name)
            .process_wide(false)
            .build();
        let rt = support::current_thread();
        // Submitted without yielding: a claimer is spawned on `rt`, never polled.
        let handle = rt.block_on(pool.submit(async { 1 })).unwrap();
        drop(rt);
        let before = pool.stats();
        drop(pool);
        let err = support::current_thread()
            .block_on(support::within("the reserved job", handle))
            .unwrap_err();
        assert_eq!(err.cancel_reason(), Some(CancelReason::RuntimeShutdown));
        f.take(&snapshotter, name);
        let submitted = f.get(MetricKind::Counter, "nb_aiopool_tasks_submitted");
        let cancelled = f.get(MetricKind::Counter, "nb_aiopool_tasks_cancelled");
        let queued = f.get(MetricKind::Gauge, "nb_aiopool_tasks_queued");
        let running = f.get(MetricKind::Gauge, "nb_aiopool_tasks_running");
        assert_eq!(
            (submitted, cancelled, queued, running),
            (1.0, 1.0, 0.0, 0.0),
            "(submitted, cancelled, queued gauge, running gauge) after the pool dropped \
             (stats before its drop: {before:?})"
        );
    });
}

/// Finding 252. A task that a `cancel_all` covered after it left the queue (handed to a slot of its
/// own runtime, which had not polled it yet) never starts: its future is dropped
/// unpolled, as a queued task's is. The docs say `nb_aiopool_queue_wait_seconds` is
/// "accepted to started", `nb_aiopool_run_time_seconds` "started to ended", and that a
/// task cancelled before it started has its `task cancelled` event with a `task_id`
/// field (not inside a `task` span). It must be observed as a task cancelled while queued
/// is: no queue-wait or run-time sample, no `task` span.
#[test]
#[allow(clippy::async_yields_async)] // the cancel_all's wait is dropped, not awaited
fn a_task_cancel_all_covers_after_it_left_the_queue_is_observed_as_never_started() {
    let _serial = serial();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let log = collector::Collector::default();
    let name = "covered_after_queue";
    let mut f = Figures::default();
    let polled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    tracing::subscriber::with_default(log.clone(), || {
        metrics::with_local_recorder(&recorder, || {
            let pool = CommonAioPool::builder()
                .max_concurrency(1)
                .name(name)
                .process_wide(false)
                .build();
            // A runs on rt1 until released, B is queued for rt2; A ends on rt1: its slot
            // hands B to a new slot on rt2 (not driven now).
            let seen = polled.clone();
            let (rt1, rt2, b) = support::handed_to_an_undriven_runtime(&pool, async move {
                seen.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            // The cancellation happens at the call; the wait (for B, on rt2) is dropped.
            drop(rt1.block_on(async { pool.cancel_all() }));
            let err = rt2.block_on(support::within("B", b)).unwrap_err();
            assert_eq!(err.cancel_reason(), Some(CancelReason::CancelAll));
            assert!(
                !polled.load(std::sync::atomic::Ordering::SeqCst),
                "B never ran"
            );
            f.take(&snapshotter, name);
        });
    });
    let waits = f.get(MetricKind::Histogram, "nb_aiopool_queue_wait_seconds");
    let runs = f.get(MetricKind::Histogram, "nb_aiopool_run_time_seconds");
    let events = log.events_with("task cancelled");
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = &events[0];
    let in_span = ev.span.is_some();
    let has_task_id = ev.fields.get("task_id").is_some();
    assert_eq!(
        (waits, runs, in_span, has_task_id),
        (1.0, 1.0, false, true),
        "(queue-wait samples, run-time samples, event in a span, event has task_id): only \
         A started; B was cancelled before it started: {ev:?}"
    );
}

/// Finding 253. A task aborted by its handle after it left the queue (handed to a slot of its own
/// runtime, not polled yet) never starts either: the slot's run sees the abort before its
/// first poll and drops the future unpolled, as a covered one's is. As for a task a
/// `cancel_all` covered there (finding 252), it must be observed as a task cancelled
/// before it started: no queue-wait ("accepted to started") or run-time sample, no `task`
/// span, and its `task cancelled` event with a `task_id`.
#[test]
fn a_task_aborted_after_it_left_the_queue_is_observed_as_never_started() {
    let _serial = serial();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let log = collector::Collector::default();
    let name = "aborted_after_queue";
    let mut f = Figures::default();
    let polled = Arc::new(AtomicBool::new(false));
    tracing::subscriber::with_default(log.clone(), || {
        metrics::with_local_recorder(&recorder, || {
            let pool = CommonAioPool::builder()
                .max_concurrency(1)
                .name(name)
                .process_wide(false)
                .build();
            // A ends on rt1: its slot hands B to a new slot on rt2 (not driven now).
            let seen = polled.clone();
            let (_rt1, rt2, b) = support::handed_to_an_undriven_runtime(&pool, async move {
                seen.store(true, Ordering::SeqCst);
            });
            b.abort();
            let err = rt2.block_on(support::within("B", b)).unwrap_err();
            assert_eq!(err.cancel_reason(), Some(CancelReason::Aborted));
            assert!(!polled.load(Ordering::SeqCst), "B never ran");
            // Its slot ends it at its first poll: let rt2 run it.
            rt2.block_on(async {
                support::within("B's slot", async {
                    while pool.stats().running > 0 {
                        tokio::task::yield_now().await;
                    }
                })
                .await
            });
            let stats = pool.stats();
            f.take(&snapshotter, name);
            assert_eq!(
                f.get(MetricKind::Counter, "nb_aiopool_tasks_cancelled"),
                stats.cancelled as f64
            );
        });
    });
    let waits = f.get(MetricKind::Histogram, "nb_aiopool_queue_wait_seconds");
    let runs = f.get(MetricKind::Histogram, "nb_aiopool_run_time_seconds");
    let events = log.events_with("task cancelled");
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = &events[0];
    let in_span = ev.span.is_some();
    let has_task_id = ev.fields.get("task_id").is_some();
    assert_eq!(
        (waits, runs, in_span, has_task_id),
        (1.0, 1.0, false, true),
        "(queue-wait samples, run-time samples, event in a span, event has task_id): only \
         A started; B was aborted before it started: {ev:?}"
    );
}

/// A started SmartAioPool task that a `cancel_all` covered while its runtime did not poll
/// its slot, whose runtime then ended, is observed as a task that started (its end in its
/// span, with its run time), as 333's aborted one is (RELIABILITY.md, 334).
#[test]
fn a_started_smart_task_cancel_all_covered_then_cut_off_is_observed_as_started() {
    let _serial = serial();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let log = collector::Collector::default();
    let name = "covered_then_cut_smart";
    let mut f = Figures::default();
    tracing::subscriber::with_default(log.clone(), || {
        metrics::with_local_recorder(&recorder, || {
            let pool = support::smart_named(name, 1, 1, true);
            let rt = support::current_thread();
            let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let s = started.clone();
            let h = rt
                .block_on(pool.submit(move || {
                    let s = s.clone();
                    async move {
                        s.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                    }
                }))
                .unwrap();
            rt.block_on(support::reach(&started, 1, Duration::from_secs(5)));
            drop(pool.cancel_all()); // covered; the runtime never polls its slot again
            drop(rt);
            let err = h.blocking_wait().unwrap_err();
            assert_eq!(err.cancel_reason(), Some(CancelReason::CancelAll));
            assert_eq!(started.load(Ordering::SeqCst), 1, "not run again");
            f.take(&snapshotter, name);
            assert_eq!(f.against(&pool.stats()), None);
        });
    });
    let runs = f.get(MetricKind::Histogram, "nb_aiopool_run_time_seconds");
    let events = log.events_with("task cancelled");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (runs, events[0].span.is_some()),
        (1.0, true),
        "it started: its end in its span, with its run time: {:?}",
        events[0]
    );
}
