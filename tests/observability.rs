//! Observability: the builders' `on_panic` callback (always built), the `tracing` feature's
//! spans and events, and the `metrics` feature's figures.
//!
//! Run the feature parts with `cargo test -p nb-aiopool --all-features --test observability`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{CommonAioPool, NoQueueAioPool, PoolStats, SmartAioPool, TaskError, TaskId};

/// The tests of this file run one at a time: with `tracing` on, a callsite first reached
/// on a thread without a subscriber while a test's scoped subscriber is the only one can
/// cache "never" for every thread (tracing-core's single-dispatcher shortcut), which would
/// hide events from the tracing tests.
static SERIAL: std::sync::LazyLock<tokio::sync::Mutex<()>> =
    std::sync::LazyLock::new(|| tokio::sync::Mutex::new(()));

// ----- on_panic -------------------------------------------------------------------------------

/// One call of the callback: the task, its error's text, and the pool's stats as read from
/// another thread during the call (`None` if they could not be read: the call ran under the
/// pool's lock).
type Call = (TaskId, bool, String, Option<PoolStats>);

/// A callback that records its calls; `stats` reads the pool's stats (it is filled in once
/// the pool exists).
#[allow(clippy::type_complexity)]
fn recorder(
    stats: Arc<Mutex<Option<Box<dyn Fn() -> PoolStats + Send + Sync>>>>,
) -> (
    Arc<Mutex<Vec<Call>>>,
    impl Fn(TaskId, &TaskError) + Send + Sync + 'static,
) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let callback = move |id: TaskId, err: &TaskError| {
        // Read the stats on another thread: if this call held the pool's lock, that thread
        // would block and the read time out (rather than this test hanging).
        let stats = stats.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let read = stats.lock().unwrap().as_ref().map(|f| f());
            let _ = tx.send(read);
        });
        let read = rx.recv_timeout(Duration::from_secs(10)).ok().flatten();
        seen.lock()
            .unwrap()
            .push((id, err.is_panic(), err.to_string(), read));
    };
    (calls, callback)
}

fn check_calls(calls: &[Call], detached: &[TaskId]) {
    let mut ids: Vec<TaskId> = calls.iter().map(|c| c.0).collect();
    ids.sort();
    let mut want = detached.to_vec();
    want.sort();
    assert_eq!(
        ids, want,
        "one call per detached panicking task, none for others"
    );
    for (id, is_panic, text, stats) in calls {
        assert!(is_panic, "task {id}: {text}");
        assert!(text.contains("detached boom"), "task {id}: {text}");
        let stats = stats.expect("on_panic ran under the pool's lock: stats() blocked");
        assert!(
            stats.panicked >= 1,
            "the panic is counted before the callback"
        );
    }
}

type StatsFn = Arc<Mutex<Option<Box<dyn Fn() -> PoolStats + Send + Sync>>>>;

#[tokio::test(flavor = "current_thread")]
async fn common_on_panic_is_called_once_per_detached_panic() {
    let _serial = SERIAL.lock().await;
    let stats: StatsFn = Arc::default();
    let (calls, callback) = recorder(stats.clone());
    let pool = CommonAioPool::builder()
        .max_concurrency(2)
        .process_wide(false)
        .on_panic(callback)
        .build();
    let p = pool.clone();
    *stats.lock().unwrap() = Some(Box::new(move || p.stats()));

    let mut detached = Vec::new();
    for _ in 0..3 {
        let h = pool
            .submit(async { panic!("detached boom") })
            .await
            .unwrap();
        detached.push(h.id());
        h.detach();
    }
    // Awaited panics go to their handles, not to the callback.
    for _ in 0..2 {
        let h = pool.submit(async { panic!("awaited boom") }).await.unwrap();
        assert!(h.await.unwrap_err().is_panic());
    }
    // A held handle, awaited only after the task ended, is not detached either.
    let late = pool.submit(async { panic!("held boom") }).await.unwrap();
    // Completed and cancelled detached tasks are no panics.
    pool.submit(async { 1 }).await.unwrap().detach();
    let pending = pool.submit(std::future::pending::<()>()).await.unwrap();
    let abort = pending.abort_handle();
    pending.detach();
    pool.submit(async {}).await.unwrap().detach();
    abort.abort();
    pool.wait().await;
    assert!(late.await.unwrap_err().is_panic());

    check_calls(&calls.lock().unwrap(), &detached);
    let s = pool.stats();
    assert_eq!((s.panicked, s.completed, s.cancelled), (6, 2, 1));
    stats.lock().unwrap().take();
    pool.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn no_queue_on_panic_is_called_once_per_detached_panic() {
    let _serial = SERIAL.lock().await;
    let stats: StatsFn = Arc::default();
    let (calls, callback) = recorder(stats.clone());
    let pool = NoQueueAioPool::builder()
        .max_concurrency(2)
        .process_wide(false)
        .on_panic(callback)
        .build();
    let p = pool.clone();
    *stats.lock().unwrap() = Some(Box::new(move || p.stats()));

    let mut detached = Vec::new();
    for _ in 0..4 {
        let h = pool
            .submit(async { panic!("detached boom") })
            .await
            .unwrap();
        detached.push(h.id());
        h.detach();
        let h = pool.submit(async { panic!("awaited boom") }).await.unwrap();
        assert!(h.await.unwrap_err().is_panic());
    }
    pool.wait().await;
    check_calls(&calls.lock().unwrap(), &detached);
    assert_eq!(pool.stats().panicked, 8);
    stats.lock().unwrap().take();
    pool.shutdown().await;
}

fn recipe_boom() -> std::future::Ready<u32> {
    panic!("detached boom in the recipe")
}

#[tokio::test(flavor = "current_thread")]
async fn smart_on_panic_is_called_once_per_detached_panic() {
    let _serial = SERIAL.lock().await;
    let stats: StatsFn = Arc::default();
    let (calls, callback) = recorder(stats.clone());
    let pool = SmartAioPool::builder()
        .max_concurrency(3)
        .auto_shutdown(false)
        .process_wide(false)
        .on_panic(callback)
        .build();
    let p = pool.clone();
    *stats.lock().unwrap() = Some(Box::new(move || p.stats()));

    let mut detached = Vec::new();
    let h = pool
        .submit(|| async { panic!("detached boom") })
        .await
        .unwrap();
    detached.push(h.id());
    h.detach();
    // A recipe that panics itself is reported like a panic of its future.
    let h = pool.submit(recipe_boom).await.unwrap();
    detached.push(h.id());
    h.detach();
    let h = pool
        .submit(|| async { panic!("awaited boom") })
        .await
        .unwrap();
    assert!(h.await.unwrap_err().is_panic());
    pool.submit(|| async { 5 }).await.unwrap().detach();
    pool.wait().await;

    check_calls(&calls.lock().unwrap(), &detached);
    assert_eq!(pool.stats().panicked, 3);
    stats.lock().unwrap().take();
    pool.shutdown().await;
}

/// Panics once `rx` fires: the test drops the task's handle first, so that the task is
/// detached when it panics (one that panicked first would hand its error to the handle).
async fn boom_after(rx: tokio::sync::oneshot::Receiver<()>) {
    let _ = rx.await;
    panic!("boom")
}

/// Waits until the pool has counted the panic (which it does before calling `on_panic`),
/// then calls `wait`, which so starts while the callback runs.
async fn wait_while_on_panic_runs<W: std::future::Future<Output = ()>>(
    panicked: impl Fn() -> u64,
    wait: impl FnOnce() -> W,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while panicked() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the panic was never counted"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    wait().await;
}

/// `wait()` returns only after the `on_panic` calls of the tasks it covers, on a
/// multi-thread runtime too, where the call runs on a worker after the task's end is
/// counted (the doc examples assert the count right after `wait()`). The callback is
/// slow, and the `wait()` starts once the end is counted, while the callback runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_after_the_on_panic_calls_it_covers() {
    let _serial = SERIAL.lock().await;
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slow = |seen: &Arc<std::sync::atomic::AtomicUsize>| {
        let seen = seen.clone();
        move |_: TaskId, _: &TaskError| {
            std::thread::sleep(Duration::from_millis(100));
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    };
    let common = CommonAioPool::builder()
        .max_concurrency(2)
        .process_wide(false)
        .on_panic(slow(&seen))
        .build();
    let no_queue = NoQueueAioPool::builder()
        .max_concurrency(2)
        .process_wide(false)
        .on_panic(slow(&seen))
        .build();
    let smart = SmartAioPool::builder()
        .max_concurrency(2)
        .auto_shutdown(false)
        .process_wide(false)
        .on_panic(slow(&seen))
        .build();
    let (go, rx) = tokio::sync::oneshot::channel();
    common.submit(boom_after(rx)).await.unwrap().detach();
    go.send(()).unwrap();
    wait_while_on_panic_runs(|| common.stats().panicked, || common.wait()).await;
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "CommonAioPool"
    );
    let (go, rx) = tokio::sync::oneshot::channel();
    no_queue.submit(boom_after(rx)).await.unwrap().detach();
    go.send(()).unwrap();
    wait_while_on_panic_runs(|| no_queue.stats().panicked, || no_queue.wait()).await;
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "NoQueueAioPool"
    );
    let (go, rx) = tokio::sync::oneshot::channel();
    let rx = Mutex::new(Some(rx));
    smart
        .submit(move || boom_after(rx.lock().unwrap().take().expect("runs once")))
        .await
        .unwrap()
        .detach();
    go.send(()).unwrap();
    wait_while_on_panic_runs(|| smart.stats().panicked, || smart.wait()).await;
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "SmartAioPool"
    );
    common.shutdown().await;
    no_queue.shutdown().await;
    smart.shutdown().await;
}

/// A panic inside the callback is caught: the slot and the pool go on.
#[tokio::test(flavor = "current_thread")]
async fn a_panicking_callback_is_contained() {
    let _serial = SERIAL.lock().await;
    let pool = CommonAioPool::builder()
        .max_concurrency(1)
        .process_wide(false)
        .on_panic(|_, _| panic!("the callback panics"))
        .build();
    for _ in 0..3 {
        pool.submit(async { panic!("detached boom") })
            .await
            .unwrap()
            .detach();
    }
    assert_eq!(pool.run(async { 7 }).await.unwrap(), 7);
    let s = pool.stats();
    assert_eq!((s.panicked, s.completed, s.running), (3, 1, 0));
    pool.shutdown().await;
}

// ----- tracing --------------------------------------------------------------------------------

#[cfg(feature = "tracing")]
mod collector;

#[cfg(feature = "tracing")]
mod with_tracing {
    use nb_aiopool::{CommonAioPool, SmartAioPool};
    use tracing::Level;

    use crate::collector::{Collector, EventRec};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// The id of the span current where it is called, with its name.
    fn current_span() -> (Option<u64>, Option<&'static str>) {
        let span = tracing::Span::current();
        (
            span.id().map(|id| id.into_u64()),
            span.metadata().map(|m| m.name()),
        )
    }

    #[test]
    fn a_span_per_task_carries_pool_and_task_id_and_is_entered_while_it_runs() {
        let _serial = super::SERIAL.blocking_lock();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            runtime().block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(2)
                    .name("traced")
                    .process_wide(false)
                    .build();
                let request = tracing::info_span!("request");
                let request_id = request.id().unwrap().into_u64();
                let mut handles = Vec::new();
                {
                    let _in_request = request.enter();
                    for _ in 0..4 {
                        handles.push(
                            pool.submit(async {
                                let before = current_span();
                                tokio::task::yield_now().await;
                                // Entered again at the next poll.
                                (before, current_span())
                            })
                            .await
                            .unwrap(),
                        );
                    }
                }
                let mut seen = Vec::new();
                for h in handles {
                    let id = h.id();
                    let (before, after) = h.await.unwrap();
                    assert_eq!(before, after, "the same span at every poll");
                    let (span_id, name) = before;
                    assert_eq!(name, Some("task"));
                    let (name, fields, parent) = log.span(span_id.unwrap());
                    assert_eq!(name, "task");
                    assert_eq!(fields.get("pool"), Some("traced"));
                    assert_eq!(fields.get("task_id"), Some(id.to_string().as_str()));
                    assert_eq!(parent, Some(request_id), "a child of the submitter's span");
                    seen.push(span_id);
                }
                seen.sort();
                seen.dedup();
                assert_eq!(
                    seen.len(),
                    4,
                    "one span per task, also in a shared slot task"
                );
                assert_eq!(current_span().0, None, "no span left entered");
                pool.shutdown().await;

                // Recipes: the span is entered while the recipe builds the future, too.
                let smart = SmartAioPool::builder()
                    .name("traced-smart")
                    .auto_shutdown(false)
                    .process_wide(false)
                    .build();
                let h = smart
                    .submit(|| {
                        let in_recipe = current_span();
                        async move { (in_recipe, current_span()) }
                    })
                    .await
                    .unwrap();
                let id = h.id();
                let (in_recipe, in_future) = h.await.unwrap();
                assert_eq!(in_recipe, in_future);
                let (_, fields, _) = log.span(in_future.0.unwrap());
                assert_eq!(fields.get("pool"), Some("traced-smart"));
                assert_eq!(fields.get("task_id"), Some(id.to_string().as_str()));
                smart.shutdown().await;
            });
        });
    }

    #[test]
    fn panics_cancellations_and_rejections_are_events() {
        let _serial = super::SERIAL.blocking_lock();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            runtime().block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(1)
                    .max_queue_size(1)
                    .name("events")
                    .process_wide(false)
                    .build();

                // A panic: WARN, inside the task's span, with the message.
                let h = pool.submit(async { panic!("kaboom") }).await.unwrap();
                let panic_id = h.id();
                assert!(h.await.unwrap_err().is_panic());
                let panics = log.events_with("task panicked");
                assert_eq!(panics.len(), 1, "{panics:?}");
                let EventRec {
                    level,
                    fields,
                    span,
                    ..
                } = &panics[0];
                assert_eq!(*level, Level::WARN);
                assert!(fields.get("error").unwrap().contains("kaboom"));
                let (_, span_fields, _) = log.span(span.unwrap());
                assert_eq!(
                    span_fields.get("task_id"),
                    Some(panic_id.to_string().as_str())
                );
                assert_eq!(span_fields.get("pool"), Some("events"));

                // Rejections: full (try_submit), then closed (below).
                let first = pool.submit(std::future::pending::<()>()).await.unwrap();
                let second = pool.submit(std::future::pending::<()>()).await.unwrap();
                let (first_id, second_id) = (first.id(), second.id());
                assert!(pool.try_submit(async {}).unwrap_err().is_full());

                // Cancellations: both by cancel_all, then a running one aborted.
                pool.cancel_all().await;
                assert!(first.await.unwrap_err().is_cancelled());
                assert!(second.await.unwrap_err().is_cancelled());
                let aborted = pool.submit(std::future::pending::<()>()).await.unwrap();
                tokio::task::yield_now().await; // it starts
                aborted.abort();
                let aborted_id = aborted.id();
                assert!(aborted.await.unwrap_err().is_cancelled());

                pool.shutdown().await;
                assert!(pool.submit(async {}).await.unwrap_err().is_closed());

                let rejected = log.events_with("submit rejected");
                let reasons: Vec<_> = rejected
                    .iter()
                    .map(|EventRec { fields: f, .. }| {
                        (f.get("pool").unwrap(), f.get("reason").unwrap())
                    })
                    .collect();
                assert_eq!(reasons, [("events", "full"), ("events", "closed")]);

                // Each cancellation names its task: in a field (never started) or through
                // the task's span (cancelled while it ran).
                let mut cancels: Vec<(String, String)> = log
                    .events_with("task cancelled")
                    .into_iter()
                    .map(
                        |EventRec {
                             level,
                             fields: f,
                             span,
                             ..
                         }| {
                            assert_eq!(level, Level::DEBUG);
                            let id = match f.get("task_id") {
                                Some(id) => id.to_string(),
                                None => {
                                    let (_, span_fields, _) = log.span(span.unwrap());
                                    assert_eq!(span_fields.get("pool"), Some("events"));
                                    span_fields.get("task_id").unwrap().to_string()
                                }
                            };
                            (id, f.get("reason").unwrap().to_string())
                        },
                    )
                    .collect();
                cancels.sort();
                let mut want = vec![
                    (first_id.to_string(), "cancel_all".to_string()),
                    (second_id.to_string(), "cancel_all".to_string()),
                    (aborted_id.to_string(), "aborted".to_string()),
                ];
                want.sort();
                assert_eq!(cancels, want);
            });
        });
    }
}

// ----- metrics --------------------------------------------------------------------------------

#[cfg(feature = "metrics")]
mod with_metrics {
    use std::collections::HashMap;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::MetricKind;
    use nb_aiopool::{CommonAioPool, SmartAioPool};
    use std::sync::Arc;

    #[test]
    fn counters_gauges_and_histograms_after_a_known_workload() {
        let _serial = super::SERIAL.blocking_lock();
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                // The recorder in place when the pool is built receives its metrics.
                let pool = CommonAioPool::builder()
                    .max_concurrency(2)
                    .max_queue_size(20)
                    .name("measured")
                    .process_wide(false)
                    .build();
                // Another pool, to show the label keeps them apart.
                let other = CommonAioPool::builder()
                    .name("other")
                    .process_wide(false)
                    .build();
                other.run(async {}).await.unwrap();

                let stuck = pool.submit(std::future::pending::<()>()).await.unwrap();
                let mut handles = Vec::new();
                for i in 0..9 {
                    handles.push(
                        pool.submit(async move {
                            tokio::task::yield_now().await;
                            if i % 4 == 3 {
                                panic!("boom {i}");
                            }
                        })
                        .await
                        .unwrap(),
                    );
                }
                let results: Vec<_> = futures_util::future::join_all(handles).await;
                assert_eq!(results.iter().filter(|r| r.is_err()).count(), 2);
                stuck.abort();
                pool.wait().await;
                let s = pool.stats();
                assert_eq!(
                    (s.submitted, s.completed, s.panicked, s.cancelled),
                    (10, 7, 2, 1)
                );
                pool.shutdown().await;
                other.shutdown().await;
            });
        });

        let mut figures = HashMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let pool = key
                .labels()
                .find(|l| l.key() == "pool")
                .map(|l| l.value().to_string())
                .expect("every metric has a pool label");
            figures.insert((kind, key.name().to_string(), pool), value);
        }
        let get = |kind, name: &str, pool: &str| {
            figures
                .get(&(kind, name.to_string(), pool.to_string()))
                .unwrap_or_else(|| panic!("no {name} for {pool}: {figures:?}"))
        };
        let counter = |name: &str, pool: &str| match get(MetricKind::Counter, name, pool) {
            DebugValue::Counter(n) => *n,
            v => panic!("{name}: {v:?}"),
        };
        let gauge = |name: &str| match get(MetricKind::Gauge, name, "measured") {
            DebugValue::Gauge(v) => v.0,
            v => panic!("{name}: {v:?}"),
        };
        let samples = |name: &str| match get(MetricKind::Histogram, name, "measured") {
            DebugValue::Histogram(v) => v.iter().map(|f| f.0).collect::<Vec<f64>>(),
            v => panic!("{name}: {v:?}"),
        };

        assert_eq!(counter("nb_aiopool_tasks_submitted", "measured"), 10);
        assert_eq!(counter("nb_aiopool_tasks_completed", "measured"), 7);
        assert_eq!(counter("nb_aiopool_tasks_panicked", "measured"), 2);
        assert_eq!(counter("nb_aiopool_tasks_cancelled", "measured"), 1);
        assert_eq!(counter("nb_aiopool_tasks_submitted", "other"), 1);
        assert_eq!(counter("nb_aiopool_tasks_completed", "other"), 1);
        assert_eq!(gauge("nb_aiopool_tasks_queued"), 0.0);
        assert_eq!(gauge("nb_aiopool_tasks_running"), 0.0);
        // Every task started (the stuck one too), and every one ended after starting.
        let waits = samples("nb_aiopool_queue_wait_seconds");
        let runs = samples("nb_aiopool_run_time_seconds");
        assert_eq!((waits.len(), runs.len()), (10, 10));
        assert!(waits
            .iter()
            .chain(&runs)
            .all(|s| *s >= 0.0 && s.is_finite()));
    }

    /// The gauges follow the pool while it works.
    #[test]
    fn gauges_follow_queued_and_running() {
        let _serial = super::SERIAL.blocking_lock();
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The debugging recorder's snapshot takes a gauge's value and leaves it at 0, and
        // the pool moves its gauges by increments (pools sharing a name add up): the
        // gauge's value is the sum of what the snapshots took.
        let seen = std::cell::Cell::new((0.0, 0.0));
        let gauges = || {
            let mut out = seen.get();
            for (key, _, _, value) in snapshotter.snapshot().into_vec() {
                if let DebugValue::Gauge(v) = value {
                    match key.key().name() {
                        "nb_aiopool_tasks_queued" => out.0 += v.0,
                        "nb_aiopool_tasks_running" => out.1 += v.0,
                        _ => {}
                    }
                }
            }
            seen.set(out);
            out
        };
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(2)
                    .max_queue_size(10)
                    .name("gauged")
                    .process_wide(false)
                    .build();
                let mut handles = Vec::new();
                for _ in 0..5 {
                    handles.push(pool.submit(std::future::pending::<()>()).await.unwrap());
                }
                tokio::task::yield_now().await;
                assert_eq!(gauges(), (3.0, 2.0));
                for h in &handles {
                    h.abort();
                }
                pool.wait().await;
                assert_eq!(gauges(), (0.0, 0.0));
                pool.shutdown().await;
            });
        });
    }

    /// Finding 177 (a review of flow control, 2026-12-05). The `metrics` histograms were
    /// measured with `std::time::Instant`, while the rate limit (and every other clock of
    /// the pool: submit timeouts, `idle_timeout`) uses tokio's. Under tokio's paused clock
    /// a task the rate limit held back 10 s recorded a queue wait of about 0.0001 s. They
    /// now read tokio's clock (std's underneath, outside tests with paused time).
    #[test]
    fn the_queue_wait_histogram_follows_the_clock_the_rate_limit_uses() {
        let _serial = super::SERIAL.blocking_lock();
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(4)
                    .rate_limit(1, std::time::Duration::from_secs(10))
                    .name("paced")
                    .process_wide(false)
                    .build();
                let t0 = tokio::time::Instant::now();
                let first = pool.submit(async {}).await.unwrap();
                let second = pool.submit(async {}).await.unwrap();
                first.await.unwrap();
                second.await.unwrap();
                assert_eq!(t0.elapsed(), std::time::Duration::from_secs(10));
                pool.shutdown().await;
            })
        });
        let mut waits = Vec::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            if key.key().name() == "nb_aiopool_queue_wait_seconds" {
                if let DebugValue::Histogram(v) = value {
                    waits.extend(v.iter().map(|f| f.0));
                }
            }
        }
        waits.sort_by(f64::total_cmp);
        assert_eq!(waits.len(), 2, "{waits:?}");
        assert!(
            waits[0] < 0.5 && (9.9..10.5).contains(&waits[1]),
            "queue waits recorded {waits:?}; the second task waited 10 s in the queue"
        );
    }

    /// Finding 179 (a review of 85cff3c, finding 177's fix). The metrics stamps now read
    /// `tokio::time::Instant::now()`, which with tokio's `test-util` on (this crate's
    /// dev-dependencies, and most users' tests) and a clock paused anywhere in the process
    /// before (a process-wide flag, never reset) asks tokio's context thread-local for the
    /// current runtime, and panics when that thread-local is gone ("cannot access a Thread
    /// Local Storage value during or after destruction"). `std::time::Instant::now()`
    /// never did: a `blocking_submit` from a thread-local's destructor (tokio's context
    /// destroyed first) worked before, and now panics in `Stamp::now`. The same call is
    /// made under the pool's lock by `Stamp::requeued` (a re-run queued by a slot dropped
    /// with its runtime), and was by `Running::none` in a slot's `Drop` (which reads no
    /// clock since 58619a0).
    #[test]
    fn a_submit_from_a_thread_local_destructor_does_not_panic_on_tokios_clock() {
        use std::cell::RefCell;
        use std::panic::{catch_unwind, AssertUnwindSafe};

        let _serial = super::SERIAL.blocking_lock();
        pause_a_clock_once();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let pool = runtime.block_on(async {
            CommonAioPool::builder()
                .max_concurrency(2)
                .process_wide(false)
                .build()
        });
        type Sent = std::sync::mpsc::Sender<Result<bool, String>>;
        struct SubmitOnDrop(CommonAioPool, Sent);
        impl Drop for SubmitOnDrop {
            fn drop(&mut self) {
                let r = catch_unwind(AssertUnwindSafe(|| {
                    self.0.blocking_submit(async { 7 }).is_ok()
                }));
                let _ = self.1.send(r.map_err(|p| {
                    p.downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default()
                }));
            }
        }
        thread_local! {
            static GUARD: RefCell<Option<SubmitOnDrop>> = const { RefCell::new(None) };
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let p = pool.clone();
        std::thread::spawn(move || {
            GUARD.with(|g| *g.borrow_mut() = Some(SubmitOnDrop(p, tx)));
            // tokio's context thread-local, first reached after ours, is destroyed first.
            let _ = tokio::runtime::Handle::try_current();
        })
        .join()
        .unwrap();
        let r = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert!(
            matches!(r, Ok(Ok(true))),
            "a blocking_submit from a thread-local destructor: {r:?}"
        );
        runtime.block_on(pool.shutdown());
    }

    /// Finding 179, the same clock under the pool's lock (a review of 85cff3c). A
    /// current-thread runtime kept in a thread-local is dropped with the thread's other
    /// thread-locals, after tokio's context: its tasks are dropped then, and a
    /// SmartAioPool slot dropped mid-run queues its job again (`Engine::requeue_first`),
    /// building `Stamp::requeued()` under the lock. On 85cff3c that reads tokio's clock,
    /// which panics there (test-util on, a clock paused once in the process): the job's
    /// copy unwinds away before it is queued, uncounted, and the pool shows
    /// `running: 1` for good; `wait()` never returns (nor, with `auto_shutdown`, the
    /// process exit). Before, with std's clock, the job ran again and `wait()` returned.
    #[test]
    fn a_rerun_queued_by_a_runtime_dropped_with_its_thread_is_not_lost() {
        use std::cell::RefCell;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let _serial = super::SERIAL.blocking_lock();
        pause_a_clock_once();
        thread_local! {
            static RT: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
        }
        let pool = SmartAioPool::builder()
            .max_concurrency(2)
            .process_wide(false)
            .auto_shutdown(false)
            .build();
        let runs = Arc::new(AtomicUsize::new(0));
        let (p, counted) = (pool.clone(), runs.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            // Ours first: tokio's context thread-local, first reached below, goes first.
            RT.with(|r| *r.borrow_mut() = Some(rt));
            RT.with(|r| {
                r.borrow().as_ref().unwrap().block_on(async move {
                    let handle = p
                        .submit(move || {
                            let runs = counted.clone();
                            async move {
                                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                                    std::future::pending::<()>().await; // interrupted
                                }
                                7
                            }
                        })
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                    tokio::task::yield_now().await;
                    handle.detach();
                });
            });
        })
        .join()
        .unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let waited = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), pool.wait()).await
        });
        assert!(
            waited.is_ok() && runs.load(Ordering::SeqCst) == 2,
            "the interrupted run was not run again: wait {waited:?}, runs {}, stats {:?}",
            runs.load(Ordering::SeqCst),
            pool.stats()
        );
    }

    /// What a test with paused time does to the process: tokio's `DID_PAUSE_CLOCK` is set
    /// for good, and from then on `tokio::time::Instant::now()` asks the runtime context.
    fn pause_a_clock_once() {
        drop(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap(),
        );
    }
}
