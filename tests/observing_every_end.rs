//! What a user observes of a pool on every way a task ends: `stats()`, the `metrics`
//! counters, gauges and their descriptions, the `tracing` spans and events, and the ids on
//! handles (findings 318 and 319 and pins of what a helper's review found sound; see
//! RELIABILITY.md). Run with
//! `cargo test -p nb-aiopool --all-features --test observing_every_end`.
//!
//! The tests of this file share one process-wide subscriber (`collector`) and recorder
//! (the pools' slots run on runtime worker threads), run one at a time
//! (`support::serial`), and each names its pools apart; the recorder is replaced on the
//! building thread where a test needs a recorder of its own
//! (`metrics::with_local_recorder`: a pool registers its metrics at `build`).
#![cfg(all(feature = "tracing", feature = "metrics"))]

mod collector;
mod metric_figures;
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use metric_figures::Figures;
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use nb_aiopool::{
    CancelReason, CommonAioPool, NoQueueAioPool, PoolStats, SmartAioPool, SubmitOptions, TaskHandle,
};

use collector::{Collector, Fields, SpanRec};
use support::serial;

/// The message of the panics the tests raise on purpose.
const BOOM: &str = "boom";

/// The process-wide subscriber's record and the process-wide recorder's snapshots.
struct Observed {
    log: Collector,
    snapshotter: Snapshotter,
}

static OBSERVED: LazyLock<Observed> = LazyLock::new(|| {
    let log = Collector::default();
    tracing::subscriber::set_global_default(log.clone())
        .expect("the only global subscriber of this test binary");
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).expect("the only global recorder of this test binary");
    support::hide_panics(&[BOOM]);
    Observed { log, snapshotter }
});

fn observe() -> &'static Observed {
    &OBSERVED
}

/// The `task` spans of pool `pool`, by the `task_id` they carry.
fn task_spans(pool: &str) -> HashMap<u64, Vec<SpanRec>> {
    observe().log.task_spans(pool)
}

/// The `nb_aiopool` events of pool `pool`: their fields and those of the span they are in.
fn events(pool: &str) -> Vec<(Fields, Option<Fields>)> {
    observe()
        .log
        .events_of(pool)
        .into_iter()
        .map(|e| (e.fields, e.span_fields))
        .collect()
}

/// What is wrong, once pool `pool` has no task left (`stats`): its `metrics` figures
/// against `stats` (gauges at 0 then), and its `task` spans: each closed, left as often as
/// entered, one per task (`reruns`: a SmartAioPool run started again has one more), each
/// carrying the id of a handle (`ids`, if given).
fn faults(
    pool: &str,
    stats: PoolStats,
    figures: &mut Figures,
    reruns: bool,
    ids: Option<&[u64]>,
) -> Vec<String> {
    let mut faults = Vec::new();
    figures.take(&observe().snapshotter, pool);
    if let Some(e) = figures.against(&stats) {
        faults.push(e);
    }
    for (id, spans) in task_spans(pool) {
        if spans.len() > 1 && !reruns {
            faults.push(format!("task {id}: {} spans", spans.len()));
        }
        if ids.is_some_and(|ids| !ids.contains(&id)) {
            faults.push(format!("a span with task_id {id}, the id of no handle"));
        }
        for s in spans {
            if s.refs != 0 {
                faults.push(format!(
                    "task {id}: its span is still open ({} handles)",
                    s.refs
                ));
            }
            if s.enters != s.exits {
                faults.push(format!(
                    "task {id}: entered {} times, left {}",
                    s.enters, s.exits
                ));
            }
        }
    }
    faults
}

fn common(name: &str, c: usize, q: usize) -> CommonAioPool {
    CommonAioPool::builder()
        .name(name)
        .max_concurrency(c)
        .max_queue_size(q)
        .process_wide(false)
        .build()
}

// ----- fault 1: a gauge move lost to a panicking recorder, for good -----------------------

/// A recorder whose gauges keep their values (by metric name) and whose gauge move number
/// `panic_at` (counted over all its gauges, from 1) panics.
struct LosesOneMove {
    values: Arc<Mutex<HashMap<String, f64>>>,
    moves: Arc<AtomicUsize>,
    panic_at: usize,
}

struct KeptGauge {
    name: String,
    values: Arc<Mutex<HashMap<String, f64>>>,
    moves: Arc<AtomicUsize>,
    panic_at: usize,
}

impl KeptGauge {
    fn step(&self, by: f64) {
        if self.moves.fetch_add(1, Ordering::SeqCst) + 1 == self.panic_at {
            panic!("{BOOM}");
        }
        *self
            .values
            .lock()
            .unwrap()
            .entry(self.name.clone())
            .or_default() += by;
    }
}

impl metrics::GaugeFn for KeptGauge {
    fn increment(&self, by: f64) {
        self.step(by);
    }
    fn decrement(&self, by: f64) {
        self.step(-by);
    }
    fn set(&self, to: f64) {
        self.values.lock().unwrap().insert(self.name.clone(), to);
    }
}

impl metrics::Recorder for LosesOneMove {
    metric_figures::no_descriptions!();
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(Arc::new(KeptGauge {
            name: key.name().to_string(),
            values: self.values.clone(),
            moves: self.moves.clone(),
            panic_at: self.panic_at,
        }))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// Fault 1. The crate docs: a recorder that panics "costs only that record ... A gauge move
/// lost so is made at the next one". When the lost move is the pool's last (here the
/// `running` gauge's move back to 0 when `cancel_all` ends the one running task, and the
/// pool is then dropped while its runtime lives on), no next one comes: the gauge says 1
/// task running for good after the pool is gone (and so for every later pool of the same
/// name, whose moves add to it). A pool that is dropped runs and queues nothing: its share
/// of the gauges must go back to 0 then (`Engine::drop` moves them only when it cancels
/// queued tasks).
#[test]
fn a_gauge_move_lost_to_a_panicking_recorder_is_made_when_the_pool_is_dropped() {
    let _serial = serial();
    observe();
    let recorder = LosesOneMove {
        values: Default::default(),
        moves: Default::default(),
        // Move 1: `running` +1 when the task is submitted; move 2: -1 at its end.
        panic_at: 2,
    };
    let (values, moves) = (recorder.values.clone(), recorder.moves.clone());
    let pool = metrics::with_local_recorder(&recorder, || common("lost_last_move", 1, 1));
    // One thread: `cancel_all`'s wait looks at the pool (its first poll) before the slot
    // ends the task, which makes the last move.
    let rt = support::current_thread();
    let stats = rt.block_on(async move {
        let h = pool.submit(std::future::pending::<()>()).await.unwrap();
        tokio::task::yield_now().await;
        assert_eq!(pool.stats().running, 1);
        support::within("cancel_all", pool.cancel_all()).await;
        let err = support::within("the task", h).await.unwrap_err();
        assert_eq!(err.cancel_reason(), Some(CancelReason::CancelAll));
        let stats = pool.stats();
        // The pool goes; its idle slot task, which holds it, exits when next polled.
        drop(pool);
        tokio::time::sleep(Duration::from_millis(20)).await;
        stats
    });
    drop(rt);
    assert_eq!((stats.queued, stats.running, stats.cancelled), (0, 0, 1));
    assert!(
        moves.load(Ordering::SeqCst) >= 2,
        "the workload made {} gauge moves; the test needs the second to be the last",
        moves.load(Ordering::SeqCst)
    );
    let running = values
        .lock()
        .unwrap()
        .get("nb_aiopool_tasks_running")
        .copied();
    assert_eq!(
        running,
        Some(0.0),
        "nb_aiopool_tasks_running after the pool, whose last move the recorder lost, was \
         dropped (stats before the drop: {stats:?})"
    );
}

// ----- fault 2: a never-started task's `task cancelled` inside another task's span ---------

/// Fault 2. The crate docs: `task cancelled` is emitted "inside the task's span, or with a
/// `task_id` field for a task cancelled before it started". A task cancelled before it
/// started by code running inside another task of the pool (a cancel-on-error group's
/// failing task aborts the others from its own poll; a job calls `cancel_all`; a job's
/// nested wait refused with `WouldDeadlock` cancels the queued task it awaited) has its
/// event emitted in the span current there: the `task` span of the task that cancelled it.
/// A subscriber then sees a `task cancelled` inside task A's span saying `task_id` B (a
/// `fmt` line `task{pool=.. task_id=0}: task cancelled task_id=1`; an exporter attaches it
/// to task 0's span). An event about a task must not sit in another task's span.
#[test]
fn a_task_cancelled_before_it_started_is_not_reported_inside_another_tasks_span() {
    let _serial = serial();
    observe();
    let rt = support::paused_runtime();
    rt.block_on(async {
        // A cancel-on-error group: task 0 fails, its watcher aborts the queued 1 and 2.
        let pool = common("trip_span", 1, 4);
        let mut group = pool.group::<Result<u32, u32>>().cancel_on_error(true);
        group
            .submit(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Err(0)
            })
            .await
            .unwrap();
        for i in 1..3 {
            group.submit(async move { Ok(i) }).await.unwrap();
        }
        let results = support::within("the group", group.join_all()).await;
        assert!(
            results[1].as_ref().unwrap_err().is_cancelled(),
            "{results:?}"
        );
        pool.shutdown().await;

        // A job that calls `cancel_all` while two tasks are queued behind it.
        let pool = common("cancel_all_span", 1, 4);
        let p = pool.clone();
        let caller = pool
            .submit(async move {
                tokio::task::yield_now().await;
                drop(p.cancel_all());
            })
            .await
            .unwrap();
        let queued: Vec<_> = futures_util::future::join_all((0..2).map(|_| pool.submit(async {})))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let _ = support::within("the caller", caller).await;
        for h in queued {
            let r = support::within("a queued task", h).await;
            assert_eq!(
                r.unwrap_err().cancel_reason(),
                Some(CancelReason::CancelAll)
            );
        }
        pool.shutdown().await;
    });
    let mut wrong = Vec::new();
    for pool in ["trip_span", "cancel_all_span"] {
        for (f, span) in events(pool) {
            let about = f.get("task_id");
            let within = span.as_ref().and_then(|s| s.get("task_id"));
            if about.is_some() && within.is_some() && about != within {
                wrong.push(format!(
                    "{pool}: `{}` with task_id {} inside the span of task {}",
                    f.get("message").unwrap_or(""),
                    about.unwrap_or(""),
                    within.unwrap_or("")
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

// ----- pins ------------------------------------------------------------------------------

/// Pinned (passed before): on a CommonAioPool, completed, panicked, aborted (queued and
/// running), `cancel_all`, `batch_run`, a group, map streams (one dropped early), a
/// `batch_run` dropped by a timeout, a `shutdown` and a refusal of the closed pool: every
/// handle's outcome is counted once it has resolved (an abort of a running task once the
/// slot dropped it), `batch_run` of n returns with n more completed, the counters and
/// gauges agree with `stats()` (gauges back to 0), each task has one span, closed and
/// left as often as entered, carrying its handle's id.
#[test]
fn pin_counters_gauges_and_spans_agree_with_handles_on_a_common_pool() {
    let _serial = serial();
    observe();
    let name = "pin_common";
    let mut figures = Figures::default();
    let rt = support::multi_thread_of(2);
    rt.block_on(async {
        let pool = common(name, 2, 4);
        let mut ids = Vec::new();
        let done = pool.submit(async { 1 }).await.unwrap();
        ids.push(done.id().as_u64());
        assert_eq!(done.await.unwrap(), 1);
        assert_eq!(
            pool.stats().completed,
            1,
            "counted once its handle resolved"
        );
        let panics = pool.submit(async { panic!("{BOOM}") }).await.unwrap();
        ids.push(panics.id().as_u64());
        assert!(panics.await.unwrap_err().is_panic());
        assert_eq!(pool.stats().panicked, 1, "counted once its handle resolved");
        // (`stats().running` counts a task handed to a slot that has not polled it yet:
        // the tasks say when they have started.)
        let started = Arc::new(AtomicUsize::new(0));
        let start = || {
            let started = started.clone();
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await
            }
        };
        let running: Vec<TaskHandle<()>> = vec![
            pool.submit(start()).await.unwrap(),
            pool.submit(start()).await.unwrap(),
        ];
        let queued = pool.submit(std::future::pending::<()>()).await.unwrap();
        ids.extend(running.iter().map(|h| h.id().as_u64()));
        ids.push(queued.id().as_u64());
        assert_eq!(
            support::reach(&started, 2, Duration::from_secs(10)).await,
            2
        );
        queued.abort();
        assert_eq!(
            pool.stats().cancelled,
            1,
            "a queued task is counted as `abort` returns"
        );
        running[0].abort();
        let mut running = running.into_iter();
        let aborted = running.next().unwrap();
        assert!(aborted.await.unwrap_err().is_cancelled());
        support::within("cancel_all", pool.cancel_all()).await;
        let cancelled = running.next().unwrap();
        assert_eq!(
            cancelled.await.unwrap_err().cancel_reason(),
            Some(CancelReason::CancelAll)
        );
        assert_eq!(pool.stats().cancelled, 3);
        let before = pool.stats().completed;
        let results = pool
            .batch_run((0..5).map(|i| async move { i }))
            .await
            .unwrap();
        assert_eq!(results.len(), 5);
        assert_eq!(
            pool.stats().completed,
            before + 5,
            "right after batch_run of 5 returned"
        );
        let mut group = pool.group::<u32>();
        for i in 0..3 {
            ids.push(group.submit(async move { i }).await.unwrap().as_u64());
        }
        assert_eq!(group.join_all().await.len(), 3);
        let mut stream = pool.map_unordered(futures_util::stream::iter(0..8u32), |i| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            i
        });
        stream.next().await.unwrap().unwrap();
        drop(stream);
        let ordered: Vec<_> = pool
            .map_ordered(futures_util::stream::iter(0..6u32), |i| async move { i })
            .collect()
            .await;
        assert_eq!(ordered.len(), 6);
        let cut = tokio::time::timeout(
            Duration::from_millis(5),
            pool.batch_run((0..4).map(|_| std::future::pending::<u32>())),
        )
        .await;
        assert!(cut.is_err());
        support::within("shutdown", pool.shutdown()).await;
        assert!(pool.submit(async { 1 }).await.is_err());
        let stats = pool.stats();
        assert_eq!((stats.queued, stats.running), (0, 0));
        let faults = faults(name, stats, &mut figures, false, None);
        assert!(faults.is_empty(), "{faults:?} ({stats:?})");
        let spans = task_spans(name);
        for id in ids.iter().filter(|&&id| id != 4) {
            assert!(
                spans.contains_key(id),
                "task {id}, which started, has no span"
            );
        }
        assert!(
            !spans.contains_key(&4),
            "the task aborted while queued has a span"
        );
    });
}

/// Pinned (passed before): a runtime dropped with tasks running and queued, for each pool
/// (a SmartAioPool with and without re-runs), on both runtime flavours: every handle
/// resolves (the value, run again, or `RuntimeShutdown`), the counters and gauges agree
/// with `stats()` before and after the pool's drop (gauges at 0), every span closed and
/// balanced (one per task, but a re-run's), and a task cancelled before it started has
/// its `task cancelled` event with its handle's id.
#[test]
fn pin_a_runtimes_end_is_observed_as_handles_say() {
    let _serial = serial();
    observe();
    enum P {
        C(CommonAioPool),
        N(NoQueueAioPool),
        S(SmartAioPool),
    }
    for multi in [false, true] {
        for kind in ["common", "no_queue", "smart", "smart_no_rerun"] {
            let name = format!("pin_end_{kind}_{multi}");
            let mut figures = Figures::default();
            let pool = match kind {
                "common" => P::C(common(&name, 2, 4)),
                "no_queue" => P::N(
                    NoQueueAioPool::builder()
                        .name(name.as_str())
                        .max_concurrency(2)
                        .process_wide(false)
                        .build(),
                ),
                "smart" => P::S(support::smart_named(&name, 2, 4, true)),
                _ => P::S(support::smart_named(&name, 2, 4, false)),
            };
            let rt = if multi {
                support::multi_thread_of(2)
            } else {
                support::current_thread()
            };
            let runs = Arc::new(AtomicUsize::new(0));
            let tasks = if kind == "no_queue" { 2 } else { 4 };
            let handles: Vec<TaskHandle<u32>> = rt.block_on(async {
                let mut hs = Vec::new();
                for i in 0..tasks {
                    let runs = runs.clone();
                    hs.push(match &pool {
                        P::C(p) => p
                            .submit(async move {
                                runs.fetch_add(1, Ordering::SeqCst);
                                std::future::pending::<()>().await;
                                i
                            })
                            .await
                            .unwrap(),
                        P::N(p) => p
                            .submit(async move {
                                runs.fetch_add(1, Ordering::SeqCst);
                                std::future::pending::<()>().await;
                                i
                            })
                            .await
                            .unwrap(),
                        P::S(p) => p
                            .submit(move || {
                                let runs = runs.clone();
                                async move {
                                    if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                                        std::future::pending::<()>().await;
                                    }
                                    i
                                }
                            })
                            .await
                            .unwrap(),
                    });
                }
                support::reach(&runs, 2, Duration::from_secs(10)).await;
                hs
            });
            let ids: Vec<u64> = handles.iter().map(|h| h.id().as_u64()).collect();
            drop(rt);
            let (outcomes, stats) = support::current_thread().block_on(async {
                let mut outcomes = Vec::new();
                for h in handles {
                    let r = support::within("a handle", h).await;
                    outcomes.push(r.map_err(|e| e.cancel_reason()));
                }
                let stats = match &pool {
                    P::C(p) => {
                        p.wait().await;
                        p.stats()
                    }
                    P::N(p) => {
                        p.wait().await;
                        p.stats()
                    }
                    P::S(p) => {
                        p.wait().await;
                        p.stats()
                    }
                };
                (outcomes, stats)
            });
            let lost = outcomes.iter().filter(|o| o.is_err()).count() as u64;
            assert_eq!(stats.cancelled, lost, "{name}: {outcomes:?} {stats:?}");
            assert_eq!(stats.completed, tasks as u64 - lost, "{name}: {outcomes:?}");
            let reruns = kind == "smart";
            let before = faults(&name, stats, &mut figures, reruns, Some(&ids));
            drop(pool);
            let after = faults(&name, stats, &mut figures, reruns, Some(&ids));
            assert!(
                before.is_empty() && after.is_empty(),
                "{name}: {before:?} {after:?}"
            );
            for (f, _) in events(&name) {
                if let Some(id) = f.get("task_id") {
                    assert!(ids.contains(&id.parse().unwrap()), "{name}: {f:?}");
                }
            }
        }
    }
}

/// Pinned (passed before): flow control on a paused runtime (priorities, weights, a key
/// limit, a rate window, a submit that times out waiting for room, an abort of a task
/// held back): after every step the counters and gauges agree with `stats()`, a refused
/// submit counts nothing, and at the end every span is closed.
#[test]
fn pin_flow_control_is_observed_as_stats_count() {
    let _serial = serial();
    observe();
    let name = "pin_flow";
    let mut figures = Figures::default();
    support::paused_runtime().block_on(async {
        let pool = CommonAioPool::builder()
            .name(name)
            .max_concurrency(2)
            .max_queue_size(3)
            .process_wide(false)
            .rate_limit(2, Duration::from_secs(1))
            .weight_capacity(3)
            .max_per_key(1)
            .build();
        let mut agree = |what: &str| {
            let stats = pool.stats();
            figures.take(&observe().snapshotter, name);
            if let Some(e) = figures.against(&stats) {
                panic!("{what}: {e}");
            }
        };
        let mut handles = Vec::new();
        for i in 0..5u32 {
            let opts = SubmitOptions::new()
                .priority((i % 3) as i32)
                .weight(1 + i % 2)
                .key(format!("k{}", i % 2));
            let fut = async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                i
            };
            handles.push(pool.submit_with(fut, opts).await.unwrap());
            agree(&format!("after submit {i}"));
        }
        let submitted = pool.stats().submitted;
        let opts = SubmitOptions::new().timeout(Duration::from_millis(100));
        let refused = pool.submit_with(async { 9 }, opts).await.unwrap_err();
        assert_eq!(refused.kind(), nb_aiopool::SubmitErrorKind::TimedOut);
        assert_eq!(
            pool.stats().submitted,
            submitted,
            "a refused submit is not counted"
        );
        agree("after a timed-out submit");
        handles[4].abort();
        agree("after an abort");
        for h in handles {
            let _ = support::within("a handle", h).await;
            agree("after a handle resolved");
        }
        pool.shutdown().await;
        let stats = pool.stats();
        let faults = faults(name, stats, &mut figures, false, None);
        assert!(faults.is_empty(), "{faults:?}");
    });
}

// ----- the metrics' descriptions -------------------------------------------------------------

/// An exporter learns what each metric is and its unit: the histograms are in seconds (a
/// recorder that is not told shows them as plain numbers), the counters and gauges counts.
#[test]
fn the_metrics_are_described_with_their_units() {
    use metrics::Unit;
    let _serial = serial();
    observe();
    let _pool = common("described", 1, 1);
    let units: HashMap<String, (Option<Unit>, bool)> = observe()
        .snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key()
                .labels()
                .any(|l| l.key() == "pool" && l.value() == "described")
        })
        .map(|(key, unit, description, _)| {
            let described = description.is_some_and(|d| !d.is_empty());
            (key.key().name().to_string(), (unit, described))
        })
        .collect();
    let expected = [
        ("nb_aiopool_tasks_submitted", Unit::Count),
        ("nb_aiopool_tasks_completed", Unit::Count),
        ("nb_aiopool_tasks_panicked", Unit::Count),
        ("nb_aiopool_tasks_cancelled", Unit::Count),
        ("nb_aiopool_submits_rejected", Unit::Count),
        ("nb_aiopool_tasks_queued", Unit::Count),
        ("nb_aiopool_tasks_running", Unit::Count),
        ("nb_aiopool_queue_wait_seconds", Unit::Seconds),
        ("nb_aiopool_run_time_seconds", Unit::Seconds),
    ];
    for (name, unit) in expected {
        assert_eq!(
            units.get(name),
            Some(&(Some(unit), true)),
            "{name}: its unit and whether it has a description (all: {units:?})"
        );
    }
}
