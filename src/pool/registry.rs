//! The process-wide lists of future pools, the `*_all_*` functions for them, and their
//! exit report.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use std::future::Future;

use futures_util::future::join_all;
use futures_util::FutureExt;

use super::core::FutureJob;
use crate::engine::{DropHook, Engine, Figures};

/// Which pool an engine serves: a future pool, or (for the exit's report of what a
/// dropped pool cancelled, only) a SmartAioPool that neither the exit nor
/// `shutdown_all_smart_aiopools` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    Common,
    NoQueue,
    Smart,
}

impl PoolKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            PoolKind::Common => "CommonAioPool",
            PoolKind::NoQueue => "NoQueueAioPool",
            PoolKind::Smart => "SmartAioPool",
        }
    }
}

struct Entry {
    kind: PoolKind,
    name: Arc<str>,
    /// Reached by the `*_all_*` functions.
    process_wide: bool,
    engine: Weak<Engine<FutureJob>>,
}

static FUTURE_POOLS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

fn future_pools() -> MutexGuard<'static, Vec<Entry>> {
    FUTURE_POOLS.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn register_future_pool(
    kind: PoolKind,
    name: Arc<str>,
    process_wide: bool,
    engine: &Arc<Engine<FutureJob>>,
) {
    let mut pools = future_pools();
    pools.retain(|e| e.engine.strong_count() > 0);
    pools.push(Entry {
        kind,
        name,
        process_wide,
        engine: Arc::downgrade(engine),
    });
    drop(pools);
    crate::exit::at_exit_report(warn_unfinished_future_pools);
}

/// The hook an engine calls when dropped with unfinished or lost tasks. The exit's report
/// of them is armed by the pool's registration ([`register_future_pool`]), or for a
/// SmartAioPool here.
pub(crate) fn drop_hook(kind: PoolKind, name: Arc<str>, process_wide: bool) -> DropHook {
    if kind == PoolKind::Smart {
        crate::exit::at_exit_report(warn_unfinished_future_pools);
    }
    Box::new(move |figures| {
        remember_dropped(ExitFigures {
            kind,
            name: name.clone(),
            process_wide,
            figures,
            pools: 1,
            dropped: true,
        })
    })
}

/// The live pools of `kind` that the `*_all_*` functions reach.
fn live_future_pools(kind: PoolKind) -> Vec<Arc<Engine<FutureJob>>> {
    future_pools()
        .iter()
        .filter(|e| e.kind == kind && e.process_wide)
        .filter_map(|e| e.engine.upgrade())
        .collect()
}

/// Shuts down every [`CommonAioPool`](crate::CommonAioPool) of the process that was
/// built with `process_wide(true)` (the default, and every pool made by `new`): stops
/// their intake, for good, and waits until all their queued and running tasks have
/// finished. Called from inside a job of one of these pools, it does not wait for that
/// job (see [`CommonAioPool::wait`](crate::CommonAioPool::wait)).
///
/// Call it at the end of `main` (the seed's `await shutdown_all_common_aiopools()`), so
/// that tasks submitted without awaiting their handles are not lost when the runtime
/// shuts down. Pools owned by libraries and tests should be built with
/// [`process_wide(false)`](crate::CommonAioPoolBuilder::process_wide) and shut down with
/// their own [`shutdown`](crate::CommonAioPool::shutdown), so that this call does not close
/// them.
///
/// # Cancel safety
///
/// Cancel safe: the pools are shut down when it is called; dropping the future (even
/// unpolled) stops the wait, and the pools stay shut down.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use nb_aiopool::{shutdown_all_common_aiopools, CommonAioPool};
///
/// let pool = CommonAioPool::new(5, 100);
/// for i in 100..103 {
///     pool.submit(async move { println!("task {i}") }).await.unwrap().detach();
/// }
/// shutdown_all_common_aiopools().await; // without it, 100..103 may never print
/// assert_eq!(pool.stats().completed, 3);
/// # }
/// ```
#[must_use = "the pools close at once, awaited or not; await the future to wait for their tasks to end"]
pub fn shutdown_all_common_aiopools() -> impl Future<Output = ()> + Send + 'static {
    // Not an `async fn`: the pools close at the call, not at the first poll.
    join_pools(PoolKind::Common, |e| e.shutdown())
}

/// Waits until every task submitted before the call to any
/// [`NoQueueAioPool`](crate::NoQueueAioPool) of the process built with
/// `process_wide(true)` (the default, and every pool made by `new`) has finished. The
/// pools stay open. Called from inside a job of one of these pools, it does not wait for
/// that job (see [`NoQueueAioPool::wait`](crate::NoQueueAioPool::wait)).
///
/// # Cancel safety
///
/// Cancel safe: dropping the future only stops the wait.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use nb_aiopool::{wait_all_no_queue_aiopools, NoQueueAioPool};
///
/// let pool = NoQueueAioPool::new(4);
/// pool.submit(async {}).await.unwrap().detach();
/// wait_all_no_queue_aiopools().await;
/// assert_eq!(pool.stats().completed, 1);
/// # }
/// ```
pub fn wait_all_no_queue_aiopools() -> impl Future<Output = ()> + Send + 'static {
    // Not an `async fn`: the tasks waited for are fixed at the call, as `wait()`'s are.
    join_pools(PoolKind::NoQueue, |e| e.wait_all())
}

/// Calls `f` now on every live pool of `kind` (so what it does at its call, it does for
/// all of them before the caller's first poll), and joins the futures it returns.
fn join_pools<F: Future<Output = ()>>(
    kind: PoolKind,
    f: impl Fn(&Arc<Engine<FutureJob>>) -> F,
) -> impl Future<Output = ()> {
    join_all(live_future_pools(kind).iter().map(f).collect::<Vec<_>>()).map(drop)
}

/// What the exit report says about one pool.
#[derive(Debug, Clone)]
struct ExitFigures {
    kind: PoolKind,
    name: Arc<str>,
    /// Reached by the `*_all_*` functions: the warning names them only then.
    process_wide: bool,
    figures: Figures,
    /// Pools these figures add up (dropped pools alike in all the fields above but the
    /// counts of tasks share one entry).
    pools: usize,
    /// Figures of pools dropped before the exit (their held-back tasks were cancelled
    /// then), not of a live one.
    dropped: bool,
}

/// Figures of pools already dropped, kept for the exit report: one entry per kind, name,
/// size and reach, so that a program dropping many alike pools with tasks lost (one per
/// request or per test) keeps a bounded list and gets one line at exit.
static DROPPED: Mutex<Vec<ExitFigures>> = Mutex::new(Vec::new());

fn remember_dropped(new: ExitFigures) {
    let mut dropped = DROPPED.lock().unwrap_or_else(|e| e.into_inner());
    let alike = dropped.iter_mut().find(|f| {
        f.kind == new.kind
            && f.name == new.name
            && f.process_wide == new.process_wide
            && f.figures.max_concurrency == new.figures.max_concurrency
    });
    match alike {
        Some(f) => {
            f.figures.unfinished += new.figures.unfinished;
            f.figures.lost += new.figures.lost;
            f.figures.held_back += new.figures.held_back;
            f.pools += new.pools;
        }
        None => dropped.push(new),
    }
}

/// Prints one line per common or no-queue pool that still had unfinished tasks, or lost
/// tasks to a runtime shutdown, and per dropped SmartAioPool of the kind nothing else
/// reports (`auto_shutdown(false)`, `process_wide(false)`) that cancelled tasks: nothing
/// is lost silently.
fn warn_unfinished_future_pools() {
    // Kept beside their figures past the registry's lock, and let go after it: a pool
    // whose other handles went meanwhile is dropped here, with its queued jobs, whose
    // `Drop`s are user code (one that builds a pool takes this lock, and `DROPPED`'s).
    let (live, engines): (Vec<ExitFigures>, Vec<_>) = future_pools()
        .iter()
        .filter_map(|entry| {
            let e = entry.engine.upgrade()?;
            let figures = ExitFigures {
                kind: entry.kind,
                name: entry.name.clone(),
                process_wide: entry.process_wide,
                figures: e.figures(),
                pools: 1,
                dropped: false,
            };
            Some((figures, e))
        })
        .unzip();
    let dropped = DROPPED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // After `DROPPED` was read: a pool dropped here is reported once, as a live one.
    drop(engines);
    for f in live.into_iter().chain(dropped) {
        if f.figures.held_back > 0 {
            warn_held_back(&f);
        }
        if f.figures.unfinished == 0 && f.figures.lost == 0 {
            continue;
        }
        // A pool built with `process_wide(false)` is not reached by the `*_all_*` call.
        // One with held-back tasks gets a deadline: any wait without one (`shutdown()`,
        // `wait()`, the `*_all_*` calls) would wait for those too, for ever.
        let call = match (f.kind, f.process_wide) {
            _ if f.figures.held_back > 0 => "`pool.shutdown_timeout(..).await`",
            (PoolKind::NoQueue, true) => {
                "`pool.wait().await` or `wait_all_no_queue_aiopools().await`"
            }
            (PoolKind::NoQueue, false) => "`pool.wait().await`",
            (PoolKind::Common, true) => {
                "`pool.shutdown().await` or `shutdown_all_common_aiopools().await`"
            }
            (PoolKind::Common, false) | (PoolKind::Smart, _) => "`pool.shutdown().await`",
        };
        let pools = pools_named(&f);
        warn_stderr!(
            "nb_aiopool: warning: {} (max_concurrency {}) had {} unfinished task(s) at \
             process exit and {} task(s) cancelled by a runtime shutdown; call {} at the end of \
             main to wait for them{}",
            pools,
            f.figures.max_concurrency,
            f.figures.unfinished,
            f.figures.lost,
            call,
            if f.figures.held_back > 0 {
                " (a wait without a deadline would wait for the held-back ones too, for ever)"
            } else {
                ""
            }
        );
    }
}

/// "a CommonAioPool named \"x\"", or "3 dropped CommonAioPools", for the exit report.
fn pools_named(f: &ExitFigures) -> String {
    let named = if &*f.name == f.kind.name() {
        String::new()
    } else {
        format!(" named {:?}", f.name)
    };
    match f.pools {
        1 => format!("a {}{named}", f.kind.name()),
        n => format!("{n} dropped {}s{named}", f.kind.name()),
    }
}

/// The exit report's line for tasks a `rate_limit` window that never reopens held back:
/// no runtime shutdown cancelled them, and waiting for them (`shutdown()`, `wait()`)
/// would never end, so the report's usual advice does not apply.
fn warn_held_back(f: &ExitFigures) {
    let fate = if f.dropped {
        "they were cancelled when the pool was dropped (their handles say RuntimeShutdown)"
    } else {
        "they were still queued at process exit (waiting for them would never end: abort \
         them, or use `shutdown_timeout`)"
    };
    warn_stderr!(
        "nb_aiopool: warning: {} (max_concurrency {}): {} task(s) never started, held back \
         by a rate_limit window that never ends (per = Duration::MAX); {}",
        pools_named(f),
        f.figures.max_concurrency,
        f.figures.held_back,
        fate
    );
}
