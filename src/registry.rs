//! The process-wide lists of pools, the `*_all_*` functions, and the process-exit hook.

use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};

use futures_util::future::join_all;

use crate::engine::{Engine, PoolKind};
use crate::task::FutureJob;

static FUTURE_POOLS: Mutex<Vec<Weak<Engine<FutureJob>>>> = Mutex::new(Vec::new());

fn future_pools() -> MutexGuard<'static, Vec<Weak<Engine<FutureJob>>>> {
    FUTURE_POOLS.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn register_future_pool(engine: &Arc<Engine<FutureJob>>) {
    let mut pools = future_pools();
    pools.retain(|w| w.strong_count() > 0);
    pools.push(Arc::downgrade(engine));
    drop(pools);
    ensure_exit_hook();
}

fn live_future_pools(kind: PoolKind) -> Vec<Arc<Engine<FutureJob>>> {
    future_pools()
        .iter()
        .filter_map(Weak::upgrade)
        .filter(|e| e.kind() == kind)
        .collect()
}

/// Shuts down every [`CommonAioPool`](crate::CommonAioPool) in the process: stops their
/// intake and waits until all their queued and running tasks have finished.
///
/// Call it at the end of `main` (the seed's `await shutdown_all_common_aiopools()`), so
/// that tasks submitted without awaiting their handles are not lost when the runtime
/// shuts down.
///
/// # Cancel safety
///
/// Cancel safe: dropping the future stops the wait; the pools stay shut down.
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
pub async fn shutdown_all_common_aiopools() {
    let pools = live_future_pools(PoolKind::Common);
    join_all(pools.iter().map(|e| e.shutdown())).await;
}

/// Waits until every task submitted so far to any
/// [`NoQueueAioPool`](crate::NoQueueAioPool) in the process has finished. The pools stay
/// open.
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
pub async fn wait_all_no_queue_aiopools() {
    let pools = live_future_pools(PoolKind::NoQueue);
    join_all(pools.iter().map(|e| e.wait_all())).await;
}

static EXIT_HOOK: Once = Once::new();

pub(crate) fn ensure_exit_hook() {
    EXIT_HOOK.call_once(|| {
        crate::sys::register_at_exit(at_exit);
    });
}

extern "C" fn at_exit() {
    // Nothing may unwind into the C runtime.
    let result = std::panic::catch_unwind(|| {
        crate::smart::finish_at_exit();
        warn_unfinished_future_pools();
    });
    if result.is_err() {
        eprintln!("nb_aiopool: the process-exit hook panicked; some tasks may not have run");
    }
}

/// What the exit report says about one pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExitFigures {
    pub(crate) kind: PoolKind,
    pub(crate) max_concurrency: usize,
    pub(crate) unfinished: usize,
    pub(crate) lost: u64,
}

/// Figures of pools already dropped, kept for the exit report.
static DROPPED: Mutex<Vec<ExitFigures>> = Mutex::new(Vec::new());

pub(crate) fn remember_dropped(figures: ExitFigures) {
    DROPPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(figures);
}

/// Prints one line per common or no-queue pool that still had unfinished tasks, or lost
/// tasks to a runtime shutdown: nothing is lost silently.
fn warn_unfinished_future_pools() {
    let live: Vec<ExitFigures> = future_pools()
        .iter()
        .filter_map(Weak::upgrade)
        .map(|e| e.exit_figures())
        .collect();
    let dropped = DROPPED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for f in live.into_iter().chain(dropped) {
        if f.unfinished == 0 && f.lost == 0 {
            continue;
        }
        let call = match f.kind {
            PoolKind::NoQueue => "`pool.wait().await` or `wait_all_no_queue_aiopools().await`",
            _ => "`pool.shutdown().await` or `shutdown_all_common_aiopools().await`",
        };
        eprintln!(
            "nb_aiopool: warning: a {} (max_concurrency {}) had {} unfinished task(s) at process \
             exit and {} task(s) cancelled by a runtime shutdown; call {} at the end of main to \
             wait for them",
            f.kind.name(),
            f.max_concurrency,
            f.unfinished,
            f.lost,
            call
        );
    }
}
