//! The process-wide list of SmartAioPools and what runs them all: [`smart_run`],
//! [`shutdown_all_smart_aiopools`] and the exit's run ([`finish_at_exit`]); pools without
//! handles forgotten once nothing of theirs can run, and the runs cut before the exit.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures_util::future::join_all;
use futures_util::FutureExt;

use super::Inner;

/// The process's SmartAioPools that may still have work: a pool is listed from its
/// build until it is shut down or forgotten (see [`forget_if_unused`]).
struct Listed {
    /// By address (see [`key`]).
    pools: BTreeMap<usize, Arc<Inner>>,
    /// Pools whose last handle went while they had unfinished tasks: forgotten once those
    /// have finished, by a task that waits for them, else by the next `build`.
    orphans: Vec<Weak<Inner>>,
    /// Where the process exit stands, for an `auto_shutdown` pool built while it runs (see
    /// [`list`]).
    exit: ExitPhase,
}

/// Where the exit's run stands (see [`finish_at_exit`]).
enum ExitPhase {
    /// The exit's run has not begun.
    Before,
    /// The exit's run has begun, on the runtime of `handle`; `exiting` is the exiting
    /// thread's token. With `started`, the pools it took over run their jobs. `built`:
    /// the `auto_shutdown` pools built since, kept for the exit's report (one may leave
    /// the list before the run is over, its handles gone and its tasks ended).
    Running {
        handle: tokio::runtime::Handle,
        exiting: u64,
        started: bool,
        built: Vec<Arc<Inner>>,
    },
    /// The exit's run is over (or had nothing to run): the pools are closed.
    Over,
}

static SMART_POOLS: Mutex<Listed> = Mutex::new(Listed {
    pools: BTreeMap::new(),
    orphans: Vec::new(),
    exit: ExitPhase::Before,
});

fn smart_pools() -> MutexGuard<'static, Listed> {
    SMART_POOLS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A listed pool's key: its address, which no other pool has while it is listed.
fn key(inner: &Arc<Inner>) -> usize {
    Arc::as_ptr(inner) as usize
}

/// Whether `inner` is in the list (for the unit tests).
#[cfg(all(test, not(nb_aiopool_loom)))]
pub(super) fn is_listed(inner: &Arc<Inner>) -> bool {
    smart_pools().pools.contains_key(&key(inner))
}

/// Lists a pool just built (its first handle is the caller's), and makes sure the exit's
/// run is registered. Pools whose last handle went while they had unfinished tasks, and
/// that have finished since, are forgotten first.
///
/// An `auto_shutdown` pool built while the exit's run goes on (by one of its tasks, a
/// thread still going, a later at-exit hook) is taken over by it at once, as the pools
/// listed when it began: its jobs run on the exit's runtime, and the exit waits for them.
/// Otherwise its home would be the builder's runtime, maybe one `exit` froze (alive, never
/// driven again), where its jobs would wait for ever, and the exit with them (RELIABILITY.md,
/// 409). One built once the run is over is closed, as the others are then: a submit is
/// refused with `Closed` rather than accepted for a task nothing would run.
pub(super) fn list(inner: &Arc<Inner>) {
    forget_finished_orphans();
    /// What the new pool does once listed.
    enum Then {
        Nothing,
        Start,
        Close,
    }
    let mut taken_over = false;
    let then = loop {
        let mut listed = smart_pools();
        if let ExitPhase::Running {
            handle, exiting, ..
        } = &listed.exit
        {
            if inner.auto_shutdown && !taken_over {
                let (handle, exiting) = (handle.clone(), *exiting);
                drop(listed);
                // Before it is listed, so that the exit's run, which starts the pools it
                // finds listed once it has taken the others over, cannot start this one
                // before its take-over (which would hold it again); outside the list's
                // lock, as a take-over may call a `metrics` recorder. Then listed, whatever
                // the phase has become meanwhile (see below).
                let (_, busy) = inner.core.engine.take_over(handle, exiting);
                drop(busy); // a new pool has no run in a poll
                taken_over = true;
                continue;
            }
        }
        listed.pools.insert(key(inner), Arc::clone(inner));
        break match &mut listed.exit {
            _ if !inner.auto_shutdown => Then::Nothing,
            ExitPhase::Before => Then::Nothing,
            // Taken over above: it starts now if the run has started its pools, else
            // with them.
            ExitPhase::Running { started, built, .. } => {
                built.push(Arc::clone(inner));
                if *started {
                    Then::Start
                } else {
                    Then::Nothing
                }
            }
            ExitPhase::Over => Then::Close,
        };
    };
    match then {
        Then::Start => exit_start(inner),
        Then::Close => inner.core.engine.close(),
        Then::Nothing => {}
    }
    crate::exit::at_exit(finish_at_exit);
}

/// Lets `pool`, taken over by the exit's run, start its jobs, on the exit's runtime.
fn exit_start(pool: &Inner) {
    let handle = match &smart_pools().exit {
        ExitPhase::Running { handle, .. } => handle.clone(),
        _ => return,
    };
    let _in = handle.enter();
    pool.core.engine.exit_start();
}

/// Closes and forgets `pool` if nothing can submit to it any more and it has no
/// unfinished task: it has no handle left, and nothing is queued or running in it (in a
/// pool that neither the exit nor `shutdown_all_smart_aiopools` runs, nothing that anyone
/// may still see to its end: see [`Engine::owes_work`](crate::engine::Engine::owes_work);
/// dropping the pool cancels the rest). A pool kept only by the list would otherwise hold
/// its engine, its idle slot tasks and the handles of the runtimes it served (their file
/// descriptors) until the process ends. Returns `true` if the pool is not listed (any
/// more).
pub(super) fn forget_if_unused(pool: &Arc<Inner>) -> bool {
    let forgotten = {
        let mut listed = smart_pools();
        let key = key(pool);
        if !listed.pools.contains_key(&key) {
            return true;
        }
        if pool.handles.load(Ordering::Acquire) > 0 {
            return false;
        }
        // A pool that neither the exit nor `shutdown_all_smart_aiopools` will run, with no
        // handle left, keeps only the tasks someone may still see to their end: not those
        // stranded with their handles gone, or held back for ever by a rate window.
        // Dropping it cancels them.
        let owes = if pool.auto_shutdown || pool.process_wide {
            pool.core.engine.stats().unfinished() > 0
        } else {
            pool.core.engine.owes_work()
        };
        if owes {
            return false;
        }
        listed.pools.remove(&key)
    };
    // Outside the list's lock: closing wakes the idle slot tasks, which then exit.
    pool.core.engine.close();
    // Off the list, and maybe still held (a `wait_auto_pools` list, a pending
    // `shutdown_all_smart_aiopools`) when the process exits: its cut runs are remembered
    // now, as a shutdown's are.
    remember_cut_of(pool);
    drop(forgotten);
    true
}

/// After a shutdown's wait: `pool` leaves the process-wide list, unless a task of it is
/// still unfinished (the task that called the shutdown, which the wait leaves out, or the
/// one its deadline spared): then it stays listed, so that `smart_run` and the exit hook
/// still cover that task, until its last handle goes and its tasks have finished (as for
/// any pool dropped busy).
pub(super) fn forget_shut_down(pool: &Arc<Inner>) {
    let forgotten = {
        let mut listed = smart_pools();
        if pool.core.engine.stats().unfinished() > 0 {
            return;
        }
        listed.pools.remove(&key(pool))
    };
    // Out of the list, and maybe held until the exit (a `static`, `process::exit`): its
    // cut runs are remembered now (closed, with nothing unfinished: no more are cut).
    if forgotten.is_some() {
        remember_cut_of(pool);
    }
    drop(forgotten);
}

/// The last handle of `pool` went while it had unfinished tasks: it is forgotten once
/// they have finished, by a task of a runtime the pool knows; by a later `build` if that
/// task cannot run (no runtime, or it is dropped first), finds the pool still busy, or is
/// on a current-thread runtime (which may never be driven again).
pub(super) fn orphaned(pool: &Arc<Inner>) {
    let weak = Arc::downgrade(pool);
    let watcher = weak.clone();
    // A pool that neither the exit nor `shutdown_all_smart_aiopools` runs is forgotten
    // once it owes no work (tasks held back for ever left out).
    let owed_only = !(pool.auto_shutdown || pool.process_wide);
    let driven = pool.core.engine.when_done(owed_only, move |done| {
        let Some(pool) = watcher.upgrade() else {
            return;
        };
        if !(done && forget_if_unused(&pool)) {
            smart_pools().orphans.push(watcher);
        }
    });
    if !driven {
        // Also for a later `build`, whichever comes first (a forgotten pool's entry is
        // dropped there).
        let mut listed = smart_pools();
        listed.orphans.retain(|w| w.strong_count() > 0);
        if !listed.orphans.iter().any(|w| w.ptr_eq(&weak)) {
            listed.orphans.push(weak);
        }
    }
}

/// Forgets the pools dropped while busy that no task watches and whose tasks have
/// finished since; keeps the others for a later call.
fn forget_finished_orphans() {
    let orphans = std::mem::take(&mut smart_pools().orphans);
    if orphans.is_empty() {
        return;
    }
    let left: Vec<Weak<Inner>> = orphans
        .into_iter()
        .filter(|w| w.upgrade().is_some_and(|p| !forget_if_unused(&p)))
        .collect();
    smart_pools().orphans.extend(left);
}

/// Runs of `auto_shutdown` pools built with `rerun_interrupted(false)` that the end of
/// their runtime cut off (a plain `#[tokio::main]` returning while they ran), counted for
/// pools dropped before the exit: one entry per name. Live pools are counted at the exit.
static CUT_BEFORE_EXIT: Mutex<Vec<(Arc<str>, u64)>> = Mutex::new(Vec::new());

/// A pool without re-runs, shut down or dropped, has lost `lost` runs to runtimes' ends,
/// of which `told` are remembered already: remembers the rest. Under the list's lock, as
/// [`warn_cut_before_exit`] reads the live pools' counts, so that a shutdown racing the
/// exit's report is counted once.
pub(super) fn remember_cut(name: &Arc<str>, lost: u64, told: &AtomicU64) {
    note_cut(&mut cut_before_exit(), name, lost, told);
}

/// With [`CUT_BEFORE_EXIT`] locked (`cut`): adds what of `lost` was not told yet (`told`
/// says how many were), and counts all of it told.
fn note_cut(cut: &mut Vec<(Arc<str>, u64)>, name: &Arc<str>, lost: u64, told: &AtomicU64) {
    // `lost` only grows, and is read after the count was last swapped in.
    let new = lost.saturating_sub(told.swap(lost, Ordering::AcqRel));
    if new > 0 {
        add_cut(cut, name, new);
    }
}

/// [`remember_cut`] for a pool taken off the process-wide list while it may still be held
/// at the exit: its runs cut so far (an `auto_shutdown` pool without re-runs).
fn remember_cut_of(pool: &Inner) {
    if pool.auto_shutdown && !pool.core.engine.reruns() {
        remember_cut(&pool.name, pool.core.engine.figures().lost, &pool.cut_told);
    }
}

/// [`CUT_BEFORE_EXIT`], locked.
fn cut_before_exit() -> MutexGuard<'static, Vec<(Arc<str>, u64)>> {
    CUT_BEFORE_EXIT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds `lost` runs cut to `name`'s entry (one per name).
fn add_cut(cut: &mut Vec<(Arc<str>, u64)>, name: &Arc<str>, lost: u64) {
    match cut.iter_mut().find(|(n, _)| n == name) {
        Some((_, n)) => *n += lost,
        None => cut.push((name.clone(), lost)),
    }
}

/// At the exit, before the take-over: the runs of `auto_shutdown` pools without re-runs
/// that a runtime's end cut off before the exit (the take-over reports those it cuts
/// itself), which no one would hear of otherwise. Such a pool's `lost` count holds only
/// those until the take-over: its queued jobs never lose their runtime (they run on any).
fn warn_cut_before_exit(pools: &[Arc<Inner>]) {
    let cut = {
        let mut remembered = cut_before_exit();
        // Read under the lock: a pool shut down meanwhile has either remembered its runs
        // (and `cut_told` says so) or will remember them after this takes the list.
        for p in pools.iter().filter(|p| !p.core.engine.reruns()) {
            note_cut(
                &mut remembered,
                &p.name,
                p.core.engine.figures().lost,
                &p.cut_told,
            );
        }
        std::mem::take(&mut *remembered)
    };
    for (name, n) in cut {
        warn_stderr!(
            "nb_aiopool: warning: {n} task(s) of SmartAioPool {name:?} were interrupted by \
             the end of their runtime (main returned, or the runtime was dropped) and not \
             run again (rerun_interrupted(false)); their handles say RuntimeShutdown"
        );
    }
}

fn auto_pools() -> Vec<Arc<Inner>> {
    auto_pools_in(&smart_pools())
}

/// Whether `pool` is one of `pools` (the same pool, not an equal one).
fn among(pools: &[Arc<Inner>], pool: &Arc<Inner>) -> bool {
    pools.iter().any(|p| Arc::ptr_eq(p, pool))
}

/// The `auto_shutdown` pools of `listed`.
fn auto_pools_in(listed: &Listed) -> Vec<Arc<Inner>> {
    listed
        .pools
        .values()
        .filter(|p| p.auto_shutdown)
        .cloned()
        .collect()
}

/// Waits until no `auto_shutdown` pool has unfinished tasks (tasks may submit more tasks,
/// to the same or other pools, so it checks again after each round).
///
/// With `held_back_too` false (`smart_run`), the tasks a `rate_limit` window that never
/// reopens holds back for ever are left out: they would never finish, and the exit
/// cancels them with a warning rather than keep the process from ending. The exit's own
/// wait counts them (its take-over cancels them as the window fills).
async fn wait_auto_pools(held_back_too: bool) {
    loop {
        // The runtime this waits on (`smart_run`'s, the exit's: both have timers) is
        // asked once, so that the waits below offer it also to rate-limited pools that
        // do not know it yet (one stranded by the end of its runtimes would otherwise
        // never start its re-runs, and this would wait for ever).
        // Only for a rate-limited pool: elsewhere no timer is made (finding 68).
        let pools = auto_pools();
        if pools.iter().any(|p| p.core.engine.needs_timers()) {
            crate::engine::runtimes::ask_current_for_timers();
        }
        if held_back_too {
            join_all(pools.iter().map(|p| p.core.engine.wait_all())).await;
        } else {
            join_all(pools.iter().map(|p| p.core.engine.wait_all_but_held_back())).await;
        }
        if pools
            .iter()
            .all(|p| p.core.engine.stats().unfinished() <= held_back(p, held_back_too))
        {
            return;
        }
    }
}

/// The tasks of `pool` that a rate window that never reopens holds back for ever, or 0
/// if they are waited for too.
fn held_back(pool: &Inner, held_back_too: bool) -> usize {
    if held_back_too || !pool.core.engine.needs_timers() {
        return 0;
    }
    pool.core.engine.figures().held_back
}

/// Runs `fut` to completion on a new multi-thread tokio runtime, then waits until every
/// [`SmartAioPool`] (with `auto_shutdown`) has finished all its tasks, and returns `fut`'s
/// output. Tasks that a [`rate_limit`](crate::SmartAioPoolBuilder::rate_limit) window that never
/// ends holds back are not waited for (they would never finish): the process exit then
/// cancels them, with a warning, as when `main` returns.
///
/// It waits for the pools also when `fut` panicked, then resumes the panic. The seed's
/// `smart_run(main())`.
///
/// # Panics
///
/// Panics if the runtime cannot be built, if called from a thread that drives async
/// tasks (a tokio worker thread, or inside `block_on`: the message says what to do
/// instead, and points at the caller's line), or with `fut`'s own panic. Plain threads,
/// `spawn_blocking` threads and threads that only entered a runtime (`Handle::enter`)
/// may call it.
///
/// # Examples
///
/// ```
/// use nb_aiopool::{smart_run, SmartAioPool};
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
///
/// let done = Arc::new(AtomicUsize::new(0));
/// let pool = SmartAioPool::new(10);
/// let counter = done.clone();
/// smart_run(async move {
///     for _ in 0..3 {
///         let counter = counter.clone();
///         // Submitted and never awaited:
///         pool.submit(move || {
///             let counter = counter.clone();
///             async move {
///                 tokio::time::sleep(std::time::Duration::from_millis(10)).await;
///                 counter.fetch_add(1, Ordering::SeqCst);
///             }
///         }).await.unwrap().detach();
///     }
/// });
/// assert_eq!(done.load(Ordering::SeqCst), 3);
/// ```
///
/// [`SmartAioPool`]: crate::SmartAioPool
/// [`SmartAioPoolBuilder::rate_limit`]: crate::SmartAioPoolBuilder::rate_limit
#[track_caller]
pub fn smart_run<F: Future>(fut: F) -> F::Output {
    crate::blocking::assert_not_async("smart_run", "shutdown_all_smart_aiopools().await");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("nb_aiopool: smart_run could not build a tokio runtime");
    let out = rt.block_on(async {
        let out = AssertUnwindSafe(fut).catch_unwind().await;
        wait_auto_pools(false).await;
        out
    });
    drop(rt);
    match out {
        Ok(v) => v,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// Shuts down every [`SmartAioPool`] of the process built with `process_wide(true)` (the
/// default; whatever its `auto_shutdown`): stops their intake, for good, and waits for all
/// their tasks. Pools owned by libraries and tests should say `process_wide(false)` and be
/// shut down with their own [`shutdown`](crate::SmartAioPool::shutdown).
///
/// Called from inside a task of one of these pools, it does not wait for that task (as
/// [`SmartAioPool::wait`]); that pool stays in the process-wide list until the task has
/// finished too, so [`smart_run`] and the exit hook still cover it. Tasks that a
/// [`rate_limit`](crate::SmartAioPoolBuilder::rate_limit) window that never ends holds back are
/// waited for, for good, as by [`SmartAioPool::shutdown`]: before a signal's
/// `process::exit`, use `shutdown_all_smart_aiopools` under a timeout for such pools.
///
/// It offers its runtime to a rate-limited pool whose re-runs are stranded (its runtimes
/// ended), checking first that the runtime has timers by making one. On a runtime built
/// without timers that check is tokio's "timers are disabled" panic, caught (a panic hook
/// the program set still sees it, and under `panic = "abort"` the process aborts); it is
/// made only when such a stranded rate-limited pool exists.
///
/// Use it for a graceful stop on a signal, for example:
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() {
/// tokio::spawn(async {
///     tokio::signal::ctrl_c().await.unwrap();
///     nb_aiopool::shutdown_all_smart_aiopools().await;
///     std::process::exit(130);
/// });
/// # }
/// ```
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
/// let pool = nb_aiopool::SmartAioPool::new(4);
/// pool.submit(|| async {}).await.unwrap().detach();
/// nb_aiopool::shutdown_all_smart_aiopools().await;
/// assert_eq!(pool.pending_count(), 0);
/// # }
/// ```
///
/// [`SmartAioPool`]: crate::SmartAioPool
/// [`SmartAioPool::shutdown`]: crate::SmartAioPool::shutdown
/// [`SmartAioPool::wait`]: crate::SmartAioPool::wait
/// [`SmartAioPoolBuilder::rate_limit`]: crate::SmartAioPoolBuilder::rate_limit
#[must_use = "the pools close at once, awaited or not; await the future to wait for their tasks to end"]
pub fn shutdown_all_smart_aiopools() -> impl Future<Output = ()> + Send + 'static {
    // Not an `async fn`: the pools close at the call, not at the first poll.
    let pools: Vec<_> = smart_pools()
        .pools
        .values()
        .filter(|p| p.process_wide)
        .cloned()
        .collect();
    let waits = join_all(
        pools
            .iter()
            .map(|p| p.core.engine.shutdown())
            .collect::<Vec<_>>(),
    );
    async move {
        // As `wait_auto_pools`: the waits offer this runtime to rate-limited pools too,
        // but only to a stranded one (the one that needs it): this may run on a runtime
        // without timers (a signal thread's), where the probe is tokio's panic.
        // At each poll: a pool may become stranded while this waits (335).
        let mut waits = std::pin::pin!(waits);
        std::future::poll_fn(|cx| {
            if pools.iter().any(|p| p.core.engine.needs_timer_probe()) {
                crate::engine::runtimes::ask_current_for_timers();
            }
            waits.as_mut().poll(cx)
        })
        .await;
        for p in &pools {
            forget_shut_down(p);
        }
        drop(pools);
        forget_finished_orphans();
    }
}

/// At the exit, once its run is over (or when it has nothing to run): closes every
/// `auto_shutdown` pool. Nothing is left to run a new task (the exit's own runtime, if it
/// built one, is dropped next, and `exit` froze the one it was called in): a submit
/// accepted from now on (a thread still going, a later at-exit hook) would wait for ever,
/// and so would a `blocking_wait` on it, holding the process's exit. It is refused with
/// `Closed` instead. So is one to a pool built from now on (see [`list`]). Returns the
/// pools it closed, with those built during the exit's run that have left the list since.
fn close_after_the_exit() -> Vec<Arc<Inner>> {
    let pools = {
        let mut listed = smart_pools();
        // A pool built from now on is closed at its build (see `list`).
        let built = match std::mem::replace(&mut listed.exit, ExitPhase::Over) {
            ExitPhase::Running { built, .. } => built,
            _ => Vec::new(),
        };
        let mut pools = auto_pools_in(&listed);
        let gone: Vec<_> = built.into_iter().filter(|b| !among(&pools, b)).collect();
        pools.extend(gone);
        pools
    };
    for p in &pools {
        p.core.engine.close();
    }
    pools
}

/// The at-exit path: runs every unfinished task of the `auto_shutdown` pools on a fresh
/// runtime, on a fresh thread (the exiting thread may be inside a runtime, and its
/// thread-locals may already be gone).
fn finish_at_exit() {
    // The thread running the exit hooks: the one that called `exit` (or returned from
    // `main`). A task it is polling will never return.
    let exiting = crate::engine::thread_token();
    // Runs still inside a poll elsewhere are waited for until then, in every pool at once
    // (the docs: one still in its poll 5 s after the exit began is not run again).
    let deadline = std::time::Instant::now() + crate::engine::EXIT_POLL_WAIT;
    // Every pool is taken over (listed again below, as the run begins), also those with
    // nothing unfinished now: a plain thread may submit to one while the exit runs.
    let pools: Vec<_> = auto_pools();
    warn_cut_before_exit(&pools);
    let idle = |pools: &[Arc<Inner>]| {
        pools
            .iter()
            .all(|p| p.core.engine.stats().unfinished() == 0)
    };
    if idle(&pools) {
        // Nothing to run: the pools are closed, as once the run below is over (see
        // `close_after_the_exit`); a submit that came in before the close is run as below,
        // also one to a pool built since the list above.
        if idle(&close_after_the_exit()) {
            return;
        }
    }
    let worker = std::thread::Builder::new()
        .name("nb_aiopool-exit".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("nb_aiopool: could not build the at-exit runtime");
            rt.block_on(async {
                let handle = tokio::runtime::Handle::current();
                // Listed again as the run begins, with the mark that makes a pool built
                // from now on take itself over (see `list`): every pool is taken over once.
                let pools = {
                    let mut listed = smart_pools();
                    listed.exit = ExitPhase::Running {
                        handle: handle.clone(),
                        exiting,
                        started: false,
                        built: Vec::new(),
                    };
                    auto_pools_in(&listed)
                };
                let mut reports = Vec::with_capacity(pools.len());
                let mut busy = Vec::with_capacity(pools.len());
                for p in &pools {
                    let (report, b) = p.core.engine.take_over(handle.clone(), exiting);
                    reports.push(report);
                    busy.push(b);
                }
                // Only now, with every pool taken over, their jobs start (on this runtime):
                // a task started earlier could submit into a pool not yet taken over, whose
                // take-over would then cut or re-run it as interrupted. So do those of the
                // pools built meanwhile (each took itself over, held, at its build).
                let late: Vec<_> = {
                    let mut listed = smart_pools();
                    if let ExitPhase::Running { started, .. } = &mut listed.exit {
                        *started = true;
                    }
                    auto_pools_in(&listed)
                        .into_iter()
                        .filter(|l| !among(&pools, l))
                        .collect()
                };
                for p in pools.iter().chain(&late) {
                    p.core.engine.exit_start();
                }
                // The runs still inside a poll on another thread, in every pool at once,
                // until the deadline: meanwhile the other jobs run (a poll may be waiting
                // for one of them), and each run is settled as soon as its own poll has
                // returned (another busy run may be waiting for its re-run).
                loop {
                    let mut left = false;
                    for (p, (b, report)) in pools.iter().zip(busy.iter_mut().zip(&mut reports)) {
                        let (all, new) = b.look();
                        if new {
                            report.add(p.core.engine.settle_busy(b, false));
                        }
                        left |= !all;
                    }
                    if !left || std::time::Instant::now() >= deadline {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                for (p, (b, report)) in pools.iter().zip(busy.iter_mut().zip(&mut reports)) {
                    report.add(p.core.engine.settle_busy(b, true));
                }
                for (p, report) in pools.iter().zip(&reports) {
                    if report.cut > 0 {
                        warn_stderr!(
                            "nb_aiopool: warning: {} task(s) of SmartAioPool {:?} were \
                             interrupted by the process exit and not run again \
                             (rerun_interrupted(false)); their handles say RuntimeShutdown",
                            report.cut,
                            p.name
                        );
                    }
                    if report.stuck > 0 {
                        warn_stderr!(
                            "nb_aiopool: warning: {} task(s) of SmartAioPool {:?} were still \
                             running at the process exit (the task that called exit, or one \
                             busy in a single poll for over {:?}) and were not run again; \
                             their handles say RuntimeShutdown",
                            report.stuck,
                            p.name,
                            crate::engine::EXIT_POLL_WAIT
                        );
                    }
                }
                wait_auto_pools(true).await;
                // The run is over: the pools are closed, and what a thread still going
                // submitted before the close runs too.
                let closed = close_after_the_exit();
                wait_auto_pools(true).await;
                // Read once every task has ended: a window can fill only after the
                // take-over (a job it started spent the last start), and the jobs behind
                // are cancelled then. Also for the pools built during the run (`closed`
                // has them all; a pool of the first list may have left the list since).
                let built_since = closed.iter().filter(|c| !among(&pools, c));
                for p in pools.iter().chain(built_since) {
                    let never_started = p.core.engine.never_started();
                    if never_started > 0 {
                        warn_stderr!(
                            "nb_aiopool: warning: {} task(s) of SmartAioPool {:?} were never \
                             started: its rate_limit window never ends (per = Duration::MAX) \
                             and allows no more starts; their handles say RuntimeShutdown",
                            never_started,
                            p.name
                        );
                    }
                }
            });
        });
    match worker.map(|t| t.join()) {
        Ok(Ok(())) => {}
        _ => {
            warn_stderr!("nb_aiopool: the at-exit run of SmartAioPool tasks failed");
            // Nothing runs a task from now on: a submit is refused rather than accepted,
            // and a pool built later is closed, not taken over by a runtime that is gone.
            drop(close_after_the_exit());
        }
    }
}
