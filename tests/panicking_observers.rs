//! A `tracing` subscriber or a `metrics` recorder that panics when the pool calls it must
//! not take the pool down: every handle still resolves as its task ended, `wait()` and
//! `shutdown()` return, and the stats add up. (Before, a subscriber that panicked on the
//! "task panicked" event unwound the slot task past its deferred work: the waits' wake-up,
//! the handles' wake-ups and the task's room were lost, and `wait()` hung.) Also: the
//! gauges agree with `PoolStats` after a lost move, a pool builds though its metrics'
//! registration panics, and no span is left entered (RELIABILITY.md, finding 156).
//!
//! Run with `cargo test -p nb-aiopool --all-features --test panicking_observers`. The
//! subscriber and the recorder are process-wide (the slots run on worker threads), so the
//! tests of this file run one at a time and say through [`PANIC_AT`] which call panics.
#![cfg(all(feature = "tracing", feature = "metrics"))]

mod metric_figures;
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Once};
use std::time::Duration;

use nb_aiopool::{CommonAioPool, NoQueueAioPool, PoolStats, SmartAioPool, TaskHandle};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Which observer call panics (one of the constants below), read at every call.
static PANIC_AT: AtomicU8 = AtomicU8::new(NOWHERE);
const NOWHERE: u8 = 0;
const NEW_SPAN: u8 = 1;
const ENTER: u8 = 2;
const EXIT: u8 = 3;
const CLOSE: u8 = 4;
const EVENT: u8 = 5;
const CURRENT_SPAN: u8 = 6;
const METRICS: u8 = 7;
/// Only the second gauge move of the workload panics (a gauge must not stay off after it).
const ONE_GAUGE_MOVE: u8 = 8;
/// Registering the pool's metrics, at `build()`.
const REGISTER: u8 = 9;

/// The message of every panic the observers raise; the panic hook keeps them off stderr.
const MESSAGE: &str = "the observer panics";

static SERIAL: LazyLock<std::sync::Mutex<()>> = LazyLock::new(Default::default);

/// How many panics the observers raised (each point must be reached by the workload).
static RAISED: AtomicU64 = AtomicU64::new(0);

/// Gauge moves made while [`ONE_GAUGE_MOVE`] is set.
static GAUGE_MOVES: AtomicU64 = AtomicU64::new(0);

/// Spans the subscriber holds entered, over all threads: entering counts before the
/// subscriber panics, leaving before it does (as `tracing_subscriber`'s `Registry` pushes
/// and pops its stack before calling its layers). Back to zero after every workload.
static ENTERED: AtomicI64 = AtomicI64::new(0);

fn boom(at: u8) {
    if PANIC_AT.load(Ordering::SeqCst) == at {
        RAISED.fetch_add(1, Ordering::SeqCst);
        panic!("{MESSAGE}");
    }
}

/// A subscriber that records nothing and panics at the call [`PANIC_AT`] names. Only the
/// pool makes spans here (the tests make none), so every span call is one of the pool's.
struct Panicky {
    next: AtomicU64,
}

impl Subscriber for Panicky {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        boom(NEW_SPAN);
        Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        if event.metadata().target() == "nb_aiopool" {
            boom(EVENT);
        }
    }
    fn enter(&self, _: &Id) {
        ENTERED.fetch_add(1, Ordering::SeqCst);
        boom(ENTER);
    }
    fn exit(&self, _: &Id) {
        ENTERED.fetch_sub(1, Ordering::SeqCst);
        boom(EXIT);
    }
    fn try_close(&self, _: Id) -> bool {
        boom(CLOSE);
        true
    }
    fn current_span(&self) -> tracing_core::span::Current {
        boom(CURRENT_SPAN);
        tracing_core::span::Current::none()
    }
}

/// A recorder whose every counter, gauge and histogram panics while [`PANIC_AT`] is
/// [`METRICS`] (the pool records its counters and gauges under its lock), whose
/// registrations panic while it is [`REGISTER`], and whose gauges keep their value (in
/// thousandths), by pool name, for the test to compare with `PoolStats`.
struct PanickyRecorder;

struct PanickyMetric;

impl metrics::CounterFn for PanickyMetric {
    fn increment(&self, _: u64) {
        boom(METRICS);
    }
    fn absolute(&self, _: u64) {
        boom(METRICS);
    }
}

impl metrics::HistogramFn for PanickyMetric {
    fn record(&self, _: f64) {
        boom(METRICS);
    }
}

struct PanickyGauge(AtomicI64);

impl PanickyGauge {
    fn step(&self, by: f64) {
        boom(METRICS);
        if PANIC_AT.load(Ordering::SeqCst) == ONE_GAUGE_MOVE
            && GAUGE_MOVES.fetch_add(1, Ordering::SeqCst) == 1
        {
            RAISED.fetch_add(1, Ordering::SeqCst);
            panic!("{MESSAGE}");
        }
        self.0.fetch_add((by * 1000.0) as i64, Ordering::SeqCst);
    }
}

impl metrics::GaugeFn for PanickyGauge {
    fn increment(&self, by: f64) {
        self.step(by);
    }
    fn decrement(&self, by: f64) {
        self.step(-by);
    }
    fn set(&self, to: f64) {
        boom(METRICS);
        self.0.store((to * 1000.0) as i64, Ordering::SeqCst);
    }
}

/// The gauges registered, by "name pool".
static GAUGES: LazyLock<Mutex<HashMap<String, Arc<PanickyGauge>>>> =
    LazyLock::new(Default::default);

/// A pool's gauge, in units.
fn gauge(name: &str, pool: &str) -> f64 {
    let gauges = GAUGES.lock().unwrap();
    gauges
        .get(&format!("{name} {pool}"))
        .map_or(0.0, |g| g.0.load(Ordering::SeqCst) as f64 / 1000.0)
}

impl metrics::Recorder for PanickyRecorder {
    metric_figures::no_descriptions!();
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        boom(REGISTER);
        metrics::Counter::from_arc(Arc::new(PanickyMetric))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        boom(REGISTER);
        let pool = key
            .labels()
            .find(|l| l.key() == "pool")
            .map(|l| l.value().to_string());
        let gauge = Arc::new(PanickyGauge(AtomicI64::new(0)));
        let name = format!("{} {}", key.name(), pool.unwrap_or_default());
        // A new pool of the same name starts from zero (its figures are its own here).
        GAUGES.lock().unwrap().insert(name, gauge.clone());
        metrics::Gauge::from_arc(gauge)
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        boom(REGISTER);
        metrics::Histogram::from_arc(Arc::new(PanickyMetric))
    }
}

/// Installs the subscriber, the recorder, and a panic hook that keeps the observers'
/// panics (and the tasks' own, below) off stderr; other panics are printed as usual.
fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing::subscriber::set_global_default(Panicky {
            next: AtomicU64::new(1),
        })
        .expect("the only global subscriber of this test binary");
        metrics::set_global_recorder(PanickyRecorder)
            .expect("the only global recorder of this test binary");
        support::hide_panics(&[MESSAGE, TASK_PANIC]);
    });
}

const TASK_PANIC: &str = "the task panics";

/// Fails instead of hanging.
async fn soon<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// The workload's tasks: 8 that complete (with a yield, so that their span is entered
/// again), 3 that panic and are awaited, 2 that panic detached, and 2 that never end and
/// are aborted (one started, the other queued or started).
async fn value(i: u32) -> u32 {
    tokio::task::yield_now().await;
    i
}

async fn panics() -> u32 {
    tokio::task::yield_now().await;
    panic!("{TASK_PANIC}")
}

/// What the workload needs of a pool: its three pools submit futures or recipes.
trait Subject {
    async fn value(&self, i: u32) -> TaskHandle<u32>;
    async fn panics(&self) -> TaskHandle<u32>;
    async fn pending(&self) -> TaskHandle<u32>;
    /// Whether a submit is refused as closed.
    async fn refused(&self) -> bool;
    async fn wait(&self);
    async fn shutdown(&self);
    fn stats(&self) -> PoolStats;
}

/// The two pools that take futures share their calls.
macro_rules! subject_taking_futures {
    ($pool:ty) => {
        impl Subject for $pool {
            async fn value(&self, i: u32) -> TaskHandle<u32> {
                self.submit(value(i)).await.unwrap()
            }
            async fn panics(&self) -> TaskHandle<u32> {
                self.submit(panics()).await.unwrap()
            }
            async fn pending(&self) -> TaskHandle<u32> {
                self.submit(std::future::pending()).await.unwrap()
            }
            async fn refused(&self) -> bool {
                self.submit(async { 0 }).await.unwrap_err().is_closed()
            }
            async fn wait(&self) {
                <$pool>::wait(self).await
            }
            async fn shutdown(&self) {
                <$pool>::shutdown(self).await
            }
            fn stats(&self) -> PoolStats {
                <$pool>::stats(self)
            }
        }
    };
}

subject_taking_futures!(CommonAioPool);
subject_taking_futures!(NoQueueAioPool);

impl Subject for SmartAioPool {
    async fn value(&self, i: u32) -> TaskHandle<u32> {
        self.submit(move || value(i)).await.unwrap()
    }
    async fn panics(&self) -> TaskHandle<u32> {
        self.submit(panics).await.unwrap()
    }
    async fn pending(&self) -> TaskHandle<u32> {
        self.submit(std::future::pending).await.unwrap()
    }
    async fn refused(&self) -> bool {
        self.submit(|| async { 0 }).await.unwrap_err().is_closed()
    }
    async fn wait(&self) {
        SmartAioPool::wait(self).await
    }
    async fn shutdown(&self) {
        SmartAioPool::shutdown(self).await
    }
    fn stats(&self) -> PoolStats {
        SmartAioPool::stats(self)
    }
}

/// Runs the workload on `pool` with the observers panicking at `at`, and checks what the
/// user relies on after it: each handle as its task ended, `wait()` and `shutdown()`
/// return, the stats add up (and the gauges agree with them), a refused submit still says
/// why, and no span is left entered.
async fn workload(pool: impl Subject, name: &str, at: u8) {
    let started = soon("submit", pool.pending()).await;
    let mut values = Vec::new();
    let mut panicked = Vec::new();
    for i in 0..8 {
        values.push(soon("submit", pool.value(i)).await);
        if i < 3 {
            panicked.push(soon("submit", pool.panics()).await);
        }
        if i < 2 {
            soon("submit", pool.panics()).await.detach();
        }
    }
    // Queued behind the pool's room, or started: aborted either way.
    let second = soon("submit", pool.pending()).await;
    started.abort();
    second.abort();
    soon("wait", pool.wait()).await;
    for (i, h) in values.into_iter().enumerate() {
        let got = soon("a completed task's handle", h).await;
        assert_eq!(got.unwrap(), i as u32, "panic at {at}");
    }
    for h in panicked {
        let err = soon("a panicked task's handle", h).await.unwrap_err();
        assert!(err.is_panic(), "panic at {at}: {err}");
    }
    for h in [started, second] {
        let err = soon("an aborted task's handle", h).await.unwrap_err();
        assert!(err.is_cancelled(), "panic at {at}: {err}");
    }
    let s = pool.stats();
    assert_eq!(
        (s.completed, s.panicked, s.cancelled, s.running, s.queued),
        (8, 5, 2, 0, 0),
        "panic at {at}: {s:?}"
    );
    // A move lost to a panic is made at the next one: here, `wait()`'s last ones.
    for gauge_name in ["nb_aiopool_tasks_queued", "nb_aiopool_tasks_running"] {
        assert_eq!(gauge(gauge_name, name), 0.0, "{gauge_name}, panic at {at}");
    }
    soon("shutdown", pool.shutdown()).await;
    // Refused: a rejection event.
    assert!(
        soon("a refused submit", pool.refused()).await,
        "panic at {at}"
    );
    PANIC_AT.store(NOWHERE, Ordering::SeqCst);
}

fn each_panic_point(flavor: &str, runtime: impl Fn() -> tokio::runtime::Runtime) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    install();
    for at in [
        NEW_SPAN,
        ENTER,
        EXIT,
        CLOSE,
        EVENT,
        CURRENT_SPAN,
        METRICS,
        ONE_GAUGE_MOVE,
        REGISTER,
    ] {
        for (name, pool) in [("common", 0), ("no-queue", 1), ("smart", 2)] {
            eprintln!("{flavor}: {name}, panic at {at}");
            let before = RAISED.load(Ordering::SeqCst);
            GAUGE_MOVES.store(0, Ordering::SeqCst);
            // Set before the pool is built: `REGISTER` panics in `build()`.
            PANIC_AT.store(at, Ordering::SeqCst);
            const NAME: &str = "panicky";
            runtime().block_on(async {
                match pool {
                    0 => {
                        let pool = CommonAioPool::builder()
                            .max_concurrency(2)
                            .max_queue_size(4)
                            .name(NAME)
                            .process_wide(false);
                        workload(pool.build(), NAME, at).await
                    }
                    1 => {
                        let pool = NoQueueAioPool::builder()
                            .max_concurrency(3)
                            .name(NAME)
                            .process_wide(false);
                        workload(pool.build(), NAME, at).await
                    }
                    _ => {
                        let pool = SmartAioPool::builder()
                            .max_concurrency(2)
                            .max_queue_size(4)
                            .name(NAME)
                            .auto_shutdown(false)
                            .process_wide(false);
                        workload(pool.build(), NAME, at).await
                    }
                }
            });
            PANIC_AT.store(NOWHERE, Ordering::SeqCst);
            assert_eq!(
                ENTERED.load(Ordering::SeqCst),
                0,
                "{flavor}: {name}: a span left entered (panic at {at})"
            );
            let raised = RAISED.load(Ordering::SeqCst) - before;
            eprintln!("  {raised} observer panics");
            assert!(
                raised > 0,
                "{flavor}: {name}: the workload never reached point {at}"
            );
        }
    }
}

#[test]
fn a_panicking_observer_is_contained_on_a_current_thread_runtime() {
    each_panic_point("current-thread", || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    });
}

#[test]
fn a_panicking_observer_is_contained_on_a_multi_thread_runtime() {
    each_panic_point("multi-thread", || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    });
}
