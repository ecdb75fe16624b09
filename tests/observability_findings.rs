//! Regression tests of a review of the `tracing` and `metrics` features (2026-12-05;
//! RELIABILITY.md, finding 251), and a pin of counters against `PoolStats`. Run with
//! `cargo test -p nb-aiopool --all-features --test observability_findings` (CI does).
#![cfg(all(feature = "tracing", feature = "metrics"))]

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use nb_aiopool::{CancelReason, CommonAioPool, NoQueueAioPool};

mod collector;
mod support;

// The tests of this file run one at a time (`support::serial`): one global recorder.
use support::serial;

/// The figures of one pool, summed over snapshots (the debugging recorder's snapshot
/// takes a gauge's value and leaves it at 0; the pool moves gauges by increments).
#[derive(Default)]
struct Figures(HashMap<(MetricKind, String), f64>);

impl Figures {
    fn take(&mut self, snapshotter: &Snapshotter, pool: &str) {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let label = key
                .labels()
                .find(|l| l.key() == "pool")
                .map(|l| l.value().to_string())
                .expect("every metric has a pool label");
            if label != pool {
                continue;
            }
            let add = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(v) => v.0,
                DebugValue::Histogram(v) => v.len() as f64,
            };
            *self.0.entry((kind, key.name().to_string())).or_default() += add;
        }
    }

    fn get(&self, kind: MetricKind, name: &str) -> f64 {
        self.0
            .get(&(kind, name.to_string()))
            .copied()
            .unwrap_or(0.0)
    }

    fn counter(&self, name: &str) -> f64 {
        self.get(MetricKind::Counter, name)
    }

    fn gauge(&self, name: &str) -> f64 {
        self.get(MetricKind::Gauge, name)
    }
}

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
    assert_eq!(
        (
            f.counter("nb_aiopool_tasks_submitted"),
            f.counter("nb_aiopool_tasks_completed"),
            f.counter("nb_aiopool_tasks_panicked"),
            f.counter("nb_aiopool_tasks_cancelled"),
            f.gauge("nb_aiopool_tasks_queued"),
            f.gauge("nb_aiopool_tasks_running"),
        ),
        (
            s.submitted as f64,
            s.completed as f64,
            s.panicked as f64,
            s.cancelled as f64,
            s.queued as f64,
            s.running as f64,
        ),
        "{what}: metrics (submitted, completed, panicked, cancelled, queued, running) vs {s:?}"
    );
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
