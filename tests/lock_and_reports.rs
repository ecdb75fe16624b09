//! Findings 81–88 of RELIABILITY.md, found on abe3d2e by a review of the observability
//! features, the registry, shutdown and the exit path: user code (a recipe's captures, a
//! tracing subscriber) never runs under the pool's lock; events and gauges agree with
//! `stats()`; the exit warning advises a call that reaches the pool. Each test failed on
//! abe3d2e. Also finding 105 (module `stuck_mark`, found on 2051388): once a nested-wait
//! deadlock is broken, jobs' polls no longer take the pool's lock. The tracing and metrics
//! ones need the features:
//! `cargo test -p nb-aiopool --all-features --test lock_and_reports` (CI runs it so).

#![allow(dead_code, unused_imports)]
// A `block_on` block hands back a handle, to await on another runtime.
#![allow(clippy::async_yields_async)]

mod metric_figures;
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{CancelReason, CommonAioPool, PoolStats, SmartAioPool};

use support::{paused_runtime as current_thread, serial};

/// Runs `read` on another thread; `true` if it did not return within 2 s (the caller
/// holds the pool's lock).
fn blocked(read: impl FnOnce() -> PoolStats + Send + 'static) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read());
    });
    rx.recv_timeout(Duration::from_secs(2)).is_err()
}

// ----- user code under the lock (no feature needed) ----------------------------------------

/// Something captured by a recipe; its `Drop` (user code) reads the pool's stats from
/// another thread and records whether that read was blocked by the pool's lock.
struct DropProbe {
    pool: SmartAioPool,
    under_lock: Arc<AtomicUsize>,
    armed: bool,
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let p = self.pool.clone();
        if blocked(move || p.stats()) {
            self.under_lock.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// README / engine docs: "User code (futures, recipes, their drops) never runs under [the
/// lock]". A SmartAioPool task aborted while queued is started at its turn as an `Ended`
/// run, which holds no reference to the task (src/pool/recipe.rs `SmartTaskDyn::run`); the
/// slot entry's copy is then the last one, and `finish` (src/engine/slot.rs) drops it
/// under the lock (`entry.copy = None`): the recipe, and everything it captured, is dropped
/// under the pool's lock. A `Drop` that uses the pool deadlocks.
#[test]
fn an_aborted_queued_smart_tasks_recipe_is_not_dropped_under_the_pools_lock() {
    let _serial = serial();
    let under_lock = Arc::new(AtomicUsize::new(0));
    current_thread().block_on(async {
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .min_workers(1)
            .process_wide(false)
            .auto_shutdown(false)
            .build();
        let gate = support::Gate::default();
        let g = gate.clone();
        let first = pool
            .submit(move || {
                let g = g.clone();
                async move { g.wait().await }
            })
            .await
            .unwrap();
        tokio::task::yield_now().await; // it starts
        let probe = DropProbe {
            pool: pool.clone(),
            under_lock: under_lock.clone(),
            armed: true,
        };
        let queued = pool
            .submit(move || {
                let _keep = &probe;
                async {}
            })
            .await
            .unwrap();
        assert_eq!(pool.stats().queued, 1);
        queued.abort();
        gate.open();
        first.await.unwrap();
        pool.wait().await;
        let s = pool.stats();
        assert_eq!(
            (s.completed, s.cancelled, s.queued, s.running),
            (1, 1, 0, 0)
        );
        pool.shutdown().await;
    });
    assert_eq!(
        under_lock.load(Ordering::SeqCst),
        0,
        "the aborted task's recipe was dropped under the pool's lock"
    );
}

// ----- tracing ------------------------------------------------------------------------------

#[cfg(feature = "tracing")]
mod collector;

#[cfg(feature = "tracing")]
mod with_tracing {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use nb_aiopool::{CancelReason, CommonAioPool};

    use super::{current_thread, serial};
    use crate::collector::{Collector, EventRec};

    fn reasons(log: &Collector, message: &str) -> Vec<String> {
        log.events_with(message)
            .into_iter()
            .map(|EventRec { fields: f, .. }| f.0.get("reason").cloned().unwrap_or_default())
            .collect()
    }

    /// Crate docs: `task panicked` / `task cancelled` events report each task's end as
    /// `PoolStats` counts it. An abort that lands while the task's last poll runs (here the
    /// task aborts itself, then panics; in real programs a group's `cancel_on_error` or
    /// another thread racing the end) decides the outcome: the task is counted as
    /// cancelled (`publish_locked` in src/task/run.rs turns the outcome into
    /// `Cancelled(Aborted)`), but the slot (src/engine/slot.rs, `observer().ended(..)`
    /// right after `poll_run`) reports the outcome of the poll, before the publish: a WARN
    /// `task panicked` for a task counted as cancelled, and no `task cancelled` event.
    #[test]
    fn a_task_aborted_during_its_last_poll_is_reported_as_counted() {
        let _serial = serial();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            current_thread().block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(1)
                    .name("self-abort")
                    .process_wide(false)
                    .build();
                let me = Arc::new(Mutex::new(None::<nb_aiopool::AbortHandle>));
                let m = me.clone();
                let h = pool
                    .submit(async move {
                        tokio::task::yield_now().await;
                        m.lock().unwrap().take().unwrap().abort();
                        panic!("after the abort");
                    })
                    .await
                    .unwrap();
                *me.lock().unwrap() = Some(h.abort_handle());
                let err = h.await.unwrap_err();
                assert_eq!(err.cancel_reason(), Some(CancelReason::Aborted));
                pool.wait().await;
                let s = pool.stats();
                assert_eq!((s.panicked, s.cancelled), (0, 1));
                let panicked = log.events_with("task panicked").len();
                let cancelled = reasons(&log, "task cancelled");
                assert_eq!(
                    (panicked, cancelled),
                    (0, vec!["aborted".to_string()]),
                    "events disagree with stats() (panicked 0, cancelled 1)"
                );
                pool.shutdown().await;
            });
        });
    }

    /// The same with a task that returns a value after the abort: counted as cancelled,
    /// and no `task cancelled` event at all.
    #[test]
    fn a_task_aborted_during_its_last_poll_that_completes_emits_its_cancellation() {
        let _serial = serial();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            current_thread().block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(1)
                    .name("self-abort-ok")
                    .process_wide(false)
                    .build();
                let me = Arc::new(Mutex::new(None::<nb_aiopool::AbortHandle>));
                let m = me.clone();
                let h = pool
                    .submit(async move {
                        tokio::task::yield_now().await;
                        m.lock().unwrap().take().unwrap().abort();
                        7
                    })
                    .await
                    .unwrap();
                *me.lock().unwrap() = Some(h.abort_handle());
                assert!(h.await.unwrap_err().is_cancelled());
                pool.wait().await;
                assert_eq!(pool.stats().cancelled, 1);
                assert_eq!(
                    reasons(&log, "task cancelled"),
                    ["aborted"],
                    "one cancellation counted, none reported"
                );
                pool.shutdown().await;
            });
        });
    }

    /// Finding 35's rule: a queued task's stamp (its `Span`, whose drop calls the
    /// subscriber's `try_close`) is dropped after the pool's lock. A queued job that a slot
    /// of another runtime hands to its own runtime's new slot (`take_next`,
    /// src/engine/start.rs) when that runtime is shutting down (its task list closed, its
    /// sentinel not dropped yet) is dropped by `handle.spawn` at once; `Slot::drop`
    /// (src/engine/slot.rs, the `next` branch) then calls `lose(q.job, q.id)` under the
    /// lock and the rest of the `Queued`, its stamp, is dropped there: `try_close` runs under
    /// the pool's lock (a subscriber that uses the pool there deadlocks).
    #[test]
    fn a_job_handed_to_a_runtime_shutting_down_drops_its_stamp_outside_the_lock() {
        let _serial = serial();
        let log = Collector::default();
        let pool = CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(4)
            .name("handed")
            .process_wide(false)
            .build();
        // Runtime B, on its own thread, holds the only slot until told.
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
        let pb = pool.clone();
        let b = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let h = pb
                    .submit(async move {
                        let _ = go_rx.await;
                    })
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
                started_tx.send(()).unwrap();
                h.await.unwrap();
            });
            let _ = end_rx.recv_timeout(Duration::from_secs(10));
        });
        started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(pool.stats().running, 1);

        /// Dropped by runtime A's shutdown before A's sentinel: tokio drops a runtime's
        /// tasks shard by shard (by task id), oldest first within a shard, so eight
        /// blockers spawned before the sentinel cover every shard; the first one dropped
        /// acts.
        struct Blocker {
            go: Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
            pool: CommonAioPool,
            log: Collector,
        }
        impl std::future::Future for Blocker {
            type Output = ();
            fn poll(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<()> {
                std::task::Poll::Pending
            }
        }
        impl Drop for Blocker {
            fn drop(&mut self) {
                let Some(go) = self.go.lock().unwrap().take() else {
                    return;
                };
                let p = self.pool.clone();
                self.log.probe(move || p.stats());
                let _ = go.send(());
                let deadline = std::time::Instant::now() + Duration::from_secs(8);
                while self.pool.stats().cancelled == 0 && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.log.stop_probe();
            }
        }

        let queued = tracing::subscriber::with_default(log.clone(), || {
            let a = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let queued = a.block_on(async {
                let go = Arc::new(Mutex::new(Some(go_tx)));
                for _ in 0..8 {
                    drop(tokio::spawn(Blocker {
                        go: go.clone(),
                        pool: pool.clone(),
                        log: log.clone(),
                    }));
                }
                let request = tracing::info_span!("request");
                let _in = request.enter();
                let h = pool.submit(async {}).await.unwrap(); // queued: B holds the slot
                h
            });
            assert_eq!(pool.stats().queued, 1);
            drop(a);
            queued
        });
        end_tx.send(()).unwrap();
        b.join().unwrap();
        let err = futures_util::FutureExt::now_or_never(queued)
            .expect("resolved")
            .unwrap_err();
        assert_eq!(err.cancel_reason(), Some(CancelReason::RuntimeShutdown));
        let s = pool.stats();
        assert_eq!(
            (s.completed, s.cancelled, s.queued, s.running),
            (1, 1, 0, 0)
        );
        let under_lock = log.under_lock();
        assert_eq!(
            under_lock, 0,
            "the subscriber was called under the pool's lock {under_lock} times"
        );
    }

    /// Crate docs: `submit rejected` (reason `closed`) for every refused submit; finding 37
    /// made a group's `try_submit` report it, also when the group's `cancel_on_error` has
    /// tripped (`Group::try_admit`, src/pool/group/mod.rs). The group's `submit` refused for
    /// the same reason (`Inner::admit`: `if self.is_tripped() { return Err(Closed) }`)
    /// reports nothing.
    #[test]
    fn a_group_submit_refused_after_cancel_on_error_emits_the_rejection() {
        let _serial = serial();
        let log = Collector::default();
        tracing::subscriber::with_default(log.clone(), || {
            current_thread().block_on(async {
                let pool = CommonAioPool::builder()
                    .max_concurrency(2)
                    .name("tripped")
                    .process_wide(false)
                    .build();
                let mut group = pool.group::<Result<(), ()>>().cancel_on_error(true);
                group.submit(async { Err(()) }).await.unwrap();
                let _ = group.join_next().await;
                // try_submit: reported.
                assert!(group.try_submit(async { Ok(()) }).is_err());
                assert_eq!(reasons(&log, "submit rejected"), ["closed"]);
                // submit: the same refusal.
                let err = group.submit(async { Ok(()) }).await.unwrap_err();
                assert_eq!(err.kind(), nb_aiopool::SubmitErrorKind::Closed);
                assert_eq!(
                    reasons(&log, "submit rejected"),
                    ["closed", "closed"],
                    "the group's submit refusal emitted no event"
                );
                pool.shutdown().await;
            });
        });
    }
}

// ----- metrics ------------------------------------------------------------------------------

#[cfg(feature = "metrics")]
mod with_metrics {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use nb_aiopool::CommonAioPool;

    use super::{current_thread, serial};

    /// Crate docs: every figure is labelled `pool` (the builder's `name`, by default
    /// `"CommonAioPool"`); the gauges follow `PoolStats::queued` and `running`. Every pool
    /// made by `CommonAioPool::new` has the same label, and each sets the shared gauge to its
    /// own figure (`Observer::gauges`, src/observe.rs: `Gauge::set`), so the last pool to
    /// change wins: the counters add up across such pools, the gauges do not. Here a pool
    /// with 2 running tasks and another that ran one task: the `running` gauge says 0.
    #[test]
    fn gauges_of_pools_sharing_a_name_add_up_like_the_counters() {
        let _serial = serial();
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            current_thread().block_on(async {
                let busy = CommonAioPool::builder()
                    .max_concurrency(4)
                    .process_wide(false)
                    .build();
                let quiet = CommonAioPool::builder()
                    .max_concurrency(4)
                    .process_wide(false)
                    .build();
                assert_eq!(busy.name(), quiet.name());
                let a = busy.submit(std::future::pending::<()>()).await.unwrap();
                let b = busy.submit(std::future::pending::<()>()).await.unwrap();
                tokio::task::yield_now().await;
                quiet.run(async {}).await.unwrap();
                let running = busy.stats().running + quiet.stats().running;
                assert_eq!(running, 2);
                let (mut gauge, mut submitted) = (f64::NAN, 0);
                for (key, _, _, value) in snapshotter.snapshot().into_vec() {
                    match (key.key().name(), value) {
                        ("nb_aiopool_tasks_running", DebugValue::Gauge(v)) => gauge = v.0,
                        ("nb_aiopool_tasks_submitted", DebugValue::Counter(n)) => submitted = n,
                        _ => {}
                    }
                }
                assert_eq!(submitted, 3, "the counter adds up the two pools");
                assert_eq!(
                    gauge, running as f64,
                    "the running gauge of the label `CommonAioPool` shows the last pool's figure"
                );
                a.abort();
                b.abort();
                busy.shutdown().await;
                quiet.shutdown().await;
            });
        });
    }
}

// ----- the exit take-over (child processes) -------------------------------------------------

static EXIT_POOL: std::sync::OnceLock<SmartAioPool> = std::sync::OnceLock::new();
static EXIT_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Captured by a recipe: its `Drop` reads the pool's stats from another thread and
/// records in `drops` whether that read was blocked by the pool's lock.
struct ExitDropProbe;

impl Drop for ExitDropProbe {
    fn drop(&mut self) {
        let (Some(pool), Some(dir)) = (EXIT_POOL.get(), EXIT_DIR.get()) else {
            return;
        };
        let p = pool.clone();
        let line = if blocked(move || p.stats()) {
            "under the lock"
        } else {
            "outside the lock"
        };
        support::append(&dir.join("drops"), line);
    }
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = support::child_scenario();
    match scenario.as_str() {
        // A task busy in one poll on a worker thread when main calls `exit`; that poll ends
        // (the task completes) while the take-over waits for it.
        "busy-completes" => {
            EXIT_DIR.set(dir.clone()).unwrap();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let pool =
                    EXIT_POOL.get_or_init(|| SmartAioPool::builder().max_concurrency(1).build());
                let d = dir.clone();
                let probe = ExitDropProbe;
                pool.submit(move || {
                    let _keep = &probe;
                    let d = d.clone();
                    async move {
                        support::append(&d.join("starts"), "start");
                        std::thread::sleep(Duration::from_millis(1000));
                    }
                })
                .await
                .unwrap()
                .detach();
                support::appended(dir.join("starts")).await;
                std::process::exit(0);
            });
        }
        // A private CommonAioPool loses a task to the end of `main`'s runtime.
        "private-common-lost" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let pool = CommonAioPool::builder()
                .name("private")
                .process_wide(false)
                .build();
            rt.block_on(async {
                pool.submit(std::future::pending::<()>())
                    .await
                    .unwrap()
                    .detach();
                tokio::task::yield_now().await;
            });
            drop(rt);
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// The same rule at exit: a run the take-over waited for (`Engine::take_over`,
/// src/engine/lifecycle.rs) that ended in that poll is counted by its stale slot, which drops
/// the run outside the lock; the take-over then skips it (`if counted.contains(&id) {
/// continue; }`) and so drops its copy of the task, now the last one, under the pool's
/// lock: the recipe and what it captured are dropped there.
#[test]
fn a_run_that_ends_while_the_exit_take_over_waits_drops_its_recipe_outside_the_lock() {
    let c = support::run_child("busy-completes", 30);
    let drops = support::lines(&c.dir.join("drops"));
    let starts = support::lines(&c.dir.join("starts"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "child: {:?}\nstderr: {}", c.code, c.stderr);
    assert_eq!(starts.len(), 1, "run once: {starts:?}");
    assert_eq!(drops, ["outside the lock"], "stderr: {}", c.stderr);
}

/// The exit warning (src/pool/registry.rs, `warn_unfinished_future_pools`) tells a pool
/// built with `process_wide(false)` to "call `pool.shutdown().await` or
/// `shutdown_all_common_aiopools().await`", though `shutdown_all_common_aiopools` does not
/// reach such a pool (its docs and the builder's say so): following the second half of
/// the advice loses the tasks again. The entry knows `process_wide`; the message ignores it.
#[test]
fn the_exit_warning_of_a_private_pool_does_not_advise_the_process_wide_call() {
    let c = support::run_child("private-common-lost", 30);
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "child: {:?}\nstderr: {}", c.code, c.stderr);
    let warning = c
        .stderr
        .lines()
        .find(|l| l.contains("nb_aiopool: warning"))
        .unwrap_or_else(|| panic!("no warning; stderr: {}", c.stderr))
        .to_owned();
    assert!(warning.contains("named \"private\""), "{warning}");
    assert!(
        !warning.contains("shutdown_all_common_aiopools"),
        "advises a call that does not reach this pool: {warning}"
    );
}

// ----- the nested-wait "stuck" mark (finding 105) -------------------------------------------

#[cfg(feature = "metrics")]
mod stuck_mark {
    use super::*;

    type R = Result<u32, Option<CancelReason>>;

    fn reason(r: Result<u32, nb_aiopool::TaskError>) -> R {
        r.map_err(|e| e.cancel_reason())
    }

    /// Finding 79's scenario: a pool of 2 with a blocker and a parent awaiting a queued
    /// child, shrunk to 1; the blocker's end leaves the parent stuck: its child is refused.
    /// Returns the parent's result.
    async fn shrink_deadlock_episode(pool: &CommonAioPool) -> R {
        assert_eq!(pool.max_concurrency(), 2);
        let gate = support::Gate::default();
        let g = gate.clone();
        drop(pool.submit(async move { g.wait().await }).await.unwrap());
        let (waiting_tx, waiting_rx) = tokio::sync::oneshot::channel::<()>();
        let inner = pool.clone();
        let parent = pool
            .submit(async move {
                let mut child = inner.submit(async { 7u32 }).await.unwrap();
                // Poll it once (counts the wait), then say so.
                let quick = tokio::time::timeout(Duration::from_millis(1), &mut child).await;
                let _ = waiting_tx.send(());
                match quick {
                    Ok(r) => reason(r),
                    Err(_) => reason(child.await),
                }
            })
            .await
            .unwrap();
        waiting_rx.await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (2, 1), "{s}");
        pool.set_max_concurrency(1);
        gate.open();
        let r = support::within("the parent after the shrink", parent)
            .await
            .unwrap();
        support::within("the pool's wait", pool.wait()).await;
        r
    }

    mod stall {
        use super::*;

        /// While set, every gauge move of a pool built with [`Staller`] sleeps (under the
        /// pool's lock, where gauges are recorded: src/observe.rs).
        pub static STALL: AtomicBool = AtomicBool::new(false);

        struct SlowGauge;

        impl metrics::GaugeFn for SlowGauge {
            fn increment(&self, _: f64) {
                if STALL.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(800));
                }
            }
            fn decrement(&self, _: f64) {
                if STALL.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(800));
                }
            }
            fn set(&self, _: f64) {
                if STALL.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(800));
                }
            }
        }

        pub struct Staller;

        impl metrics::Recorder for Staller {
            crate::metric_figures::no_descriptions!();
            fn register_counter(
                &self,
                _: &metrics::Key,
                _: &metrics::Metadata<'_>,
            ) -> metrics::Counter {
                metrics::Counter::noop()
            }
            fn register_gauge(
                &self,
                _: &metrics::Key,
                _: &metrics::Metadata<'_>,
            ) -> metrics::Gauge {
                metrics::Gauge::from_arc(Arc::new(SlowGauge))
            }
            fn register_histogram(
                &self,
                _: &metrics::Key,
                _: &metrics::Metadata<'_>,
            ) -> metrics::Histogram {
                metrics::Histogram::noop()
            }
        }

        pub fn pool() -> CommonAioPool {
            metrics::with_local_recorder(&Staller, || {
                CommonAioPool::builder()
                    .max_concurrency(2)
                    .max_queue_size(8)
                    .process_wide(false)
                    .build()
            })
        }

        /// Runs a job that only yields, in a loop, in `pool`; then holds the pool's lock for
        /// 800 ms from a plain thread (a submit whose gauge move sleeps) and returns how many
        /// times the job was polled meanwhile (in the middle 600 ms).
        pub async fn polls_while_the_lock_is_held(pool: &CommonAioPool) -> usize {
            let ticks = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (t, s) = (ticks.clone(), stop.clone());
            let spinner = pool
                .submit(async move {
                    while !s.load(Ordering::SeqCst) {
                        tokio::task::yield_now().await;
                        t.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .await
                .unwrap();
            while ticks.load(Ordering::SeqCst) < 100 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let p = pool.clone();
            let rt = tokio::runtime::Handle::current();
            let holder = std::thread::spawn(move || {
                let _enter = rt.enter();
                STALL.store(true, Ordering::SeqCst);
                // Under the lock: the queued gauge moves (and sleeps).
                let h = p.try_submit(async {}).unwrap();
                STALL.store(false, Ordering::SeqCst);
                h.detach();
            });
            std::thread::sleep(Duration::from_millis(100)); // the holder is in its sleep
            let before = ticks.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(600));
            let during = ticks.load(Ordering::SeqCst) - before;
            holder.join().unwrap();
            stop.store(true, Ordering::SeqCst);
            spinner.await.unwrap();
            during
        }
    }

    /// Finding 105 (review r15 of 2051388; a regression of it). The slot's check after a
    /// Pending poll is documented as "one load; set only in that
    /// rare state" (src/engine/slot.rs), and BENCHMARKS.md measured 2051388 with the flag
    /// clear. But once finding 79's deadlock is broken (the parent's child refused, the
    /// parent ends), `waits_stuck` stays set: the parent's refusal ended its wait, so
    /// `waiting_on_own` is empty at its end and `run_ended` asks no re-check; nothing else
    /// clears the flag. From then on every Pending poll of every job of the pool takes the
    /// engine's lock (`after_stuck_poll`). Shown here by holding the lock from another thread
    /// (a metrics gauge that sleeps; gauges are recorded under the lock): a job that only
    /// yields keeps being polled in a fresh pool, and is frozen in the pool that went through
    /// the episode.
    #[test]
    fn after_a_broken_shrink_deadlock_job_polls_do_not_take_the_pools_lock() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Control: a fresh pool, never stuck.
            let fresh = stall::pool();
            fresh.set_max_concurrency(1);
            let control = stall::polls_while_the_lock_is_held(&fresh).await;
            assert!(
                control > 10,
                "control: the spinner was not polled while the lock was held ({control})"
            );

            let pool = stall::pool();
            let r = shrink_deadlock_episode(&pool).await;
            assert_eq!(r, Err(Some(CancelReason::WouldDeadlock)));
            let s = pool.stats();
            assert_eq!((s.running, s.queued), (0, 0), "{s}");
            let after = stall::polls_while_the_lock_is_held(&pool).await;
            assert!(
                after > 10,
                "after the deadlock was broken and the pool went idle, a job's polls still wait \
                 for the pool's lock: polled {after} times in 600 ms while the lock was held \
                 (a fresh pool: {control})"
            );
        });
    }
}
