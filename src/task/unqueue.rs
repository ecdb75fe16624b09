//! How a handle reaches its task's pool: a process-wide map from a pool's id to its
//! engine, as an [`Unqueue`]. Consulted by an abort that may decide a task's outcome (a
//! handle's `abort`, a group's, or a refused nested wait: see [`pool`]), and by a pending
//! poll while some pool is stranded (see [`stranded`]), so submits and runs pay nothing
//! for it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::registry::Registry;
use crate::sync;

/// What an abort asks of the pool of its task.
pub(crate) trait Unqueue: Send + Sync {
    /// Task `job`, queued with `priority`, was just aborted: if it has not started, take
    /// it out of the queue now (its place freed, its end counted; its job dropped on its
    /// runtime); if a slot has taken it, wake that slot, which drops it at its next poll.
    /// `runner` is where the pool said it runs the task (see `Shared::set_runner`), read
    /// under the pool's lock. Never called under the pool's lock.
    fn aborted(self: Arc<Self>, job: u64, priority: i32, runner: &sync::AtomicU32);

    /// The reason of the `cancel_all` (or shutdown deadline) that covered task `job`
    /// before this call, if one did and the task has not ended: an abort made now comes
    /// second, and takes that reason (the first decision holds). `runner` as for
    /// [`aborted`](Self::aborted). Never called under the pool's lock.
    fn covering(&self, job: u64, runner: &sync::AtomicU32) -> Option<crate::CancelReason>;

    /// Something waits, on the current runtime, for a task of this pool: if the pool is
    /// stranded (queued jobs, no live runtime it knows), offer it this runtime to run them
    /// on. Never called under the pool's lock.
    fn offer_runtime(self: Arc<Self>);

    /// Whether the pool is stranded now (see [`stranded`]).
    fn is_stranded(&self) -> bool;
}

static POOLS: Registry<dyn Unqueue> = Registry::new();

/// How many pools are stranded: they hold queued jobs (re-runs cut off by the end of their
/// runtime) and know no live runtime to run them on.
static STRANDED: AtomicUsize = AtomicUsize::new(0);

/// The ids of up to four stranded pools (0: free), so that while a pool is stranded, a
/// pending poll of another pool's handle costs a few loads, not a look-up of its pool;
/// and how many stranded pools found no free entry (their handles, and while there are
/// any every handle, look their pool up).
static STRANDED_IDS: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
static STRANDED_UNLISTED: AtomicUsize = AtomicUsize::new(0);

/// Pool `pool` became stranded (`now`) or no longer is; each pool reports each change once,
/// under its lock.
pub(crate) fn stranded(pool: u32, now: bool) {
    let (from, to) = if now { (0, pool) } else { (pool, 0) };
    let listed = STRANDED_IDS.iter().any(|id| {
        id.compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    });
    if !listed {
        if now {
            STRANDED_UNLISTED.fetch_add(1, Ordering::Relaxed);
        } else {
            STRANDED_UNLISTED.fetch_sub(1, Ordering::Relaxed);
        }
    }
    // The count last (Release): a reader that sees it raised by this pool (Acquire) sees
    // the entry too. A reader that sees it raised by another pool and misses this entry
    // is a handle polled as this pool becomes stranded: it is woken after this.
    if now {
        STRANDED.fetch_add(1, Ordering::Release);
    } else {
        STRANDED.fetch_sub(1, Ordering::Release);
    }
}

/// Whether pool `pool` is listed as stranded, or some pool is counted unlisted.
#[cfg(all(test, not(nb_aiopool_loom)))]
pub(crate) fn stranded_listed(pool: u32) -> bool {
    STRANDED_IDS
        .iter()
        .any(|id| id.load(Ordering::Relaxed) == pool)
        || STRANDED_UNLISTED.load(Ordering::Relaxed) != 0
}

/// For a pending poll of a handle of a task of pool `pool`: if that pool is stranded,
/// offers it the current runtime (see [`Unqueue::offer_runtime`]). One load while no
/// pool is stranded (a hint: the pool checks again).
#[inline]
pub(crate) fn offer_runtime(pool: u32) {
    if STRANDED.load(Ordering::Acquire) != 0 {
        offer_runtime_slow(pool);
    }
}

#[cold]
fn offer_runtime_slow(pool: u32) {
    let listed = STRANDED_IDS
        .iter()
        .any(|id| id.load(Ordering::Relaxed) == pool);
    if !listed && STRANDED_UNLISTED.load(Ordering::Relaxed) == 0 {
        return; // another pool is stranded
    }
    // The map's lock is released before the pool's is taken.
    if let Some(pool) = POOLS.get(pool) {
        pool.offer_runtime();
    }
}

/// Whether pool `pool` is stranded now: it holds queued jobs and knows no live runtime to
/// run them on. One load while no pool is stranded.
pub(crate) fn is_stranded(pool: u32) -> bool {
    if STRANDED.load(Ordering::Acquire) == 0 {
        return false;
    }
    POOLS.get(pool).is_some_and(|pool| pool.is_stranded())
}

/// Makes pool `id` reachable by the aborts of its tasks (until [`deregister`]).
pub(crate) fn register(id: u32, pool: Weak<dyn Unqueue>) {
    POOLS.insert(id, pool);
}

/// Pool `id` is being dropped.
pub(crate) fn deregister(id: u32) {
    POOLS.remove(id);
}

/// Pool `pool`, for an abort of one of its tasks ([`Unqueue::aborted`]), if it is alive:
/// looked up before the abort decides the task's outcome, and held until the abort has
/// reached it, so that the number cannot go to another pool in between (see
/// `Shared::abort`). The map's lock is released before the pool's is taken.
pub(crate) fn pool(pool: u32) -> Option<Arc<dyn Unqueue>> {
    POOLS.get(pool)
}

/// A piece of work for [`run_flat`] or [`run_elsewhere`]: dropping a job. It must not
/// unwind (a job's drop is caught inside).
pub(crate) type Work = Box<dyn FnOnce() + Send>;

thread_local! {
    /// Work waiting for a [`run_flat`] under way on this thread.
    static PENDING: RefCell<Option<Vec<Work>>> = const { RefCell::new(None) };
}

/// Runs `work` on this thread. Work that, through user `Drop` code, asks for more (a
/// queued task whose `Drop` aborts the next one) has that run after it returns, not inside
/// it: a chain of such drops takes no stack.
pub(crate) fn run_flat(work: Work) {
    let mut work = Some(work);
    let first = PENDING.try_with(|p| {
        let mut p = p.borrow_mut();
        match p.as_mut() {
            Some(pending) => {
                pending.extend(work.take());
                false
            }
            None => {
                *p = Some(Vec::new());
                true
            }
        }
    });
    // Not the first (`Ok(false)`): the run under way takes it. The thread-local gone
    // (`Err`: the thread is exiting): run here.
    if let Some(work) = work.take() {
        work();
    }
    if first == Ok(true) {
        while let Some(next) = PENDING.with(|p| p.borrow_mut().as_mut().and_then(Vec::pop)) {
            next();
        }
        PENDING.with(|p| *p.borrow_mut() = None);
    }
}

/// Work to run off the aborting thread when no runtime is there to do it, and whether a
/// thread is running it.
static ORPHANS: Mutex<(Vec<Work>, bool)> = Mutex::new((Vec::new(), false));

/// Runs `work` on a thread of the crate (`nb_aiopool-drop`, started when needed and ended
/// when it has nothing left: one at a time). If no thread can be started, runs it here.
pub(crate) fn run_elsewhere(work: Work) {
    let orphans = || ORPHANS.lock().unwrap_or_else(|e| e.into_inner());
    let mut o = orphans();
    o.0.push(work);
    if o.1 {
        return; // the thread under way takes it
    }
    o.1 = true;
    drop(o);
    let started = std::thread::Builder::new()
        .name("nb_aiopool-drop".into())
        .spawn(move || loop {
            let batch = {
                let mut o = orphans();
                if o.0.is_empty() {
                    o.1 = false;
                    return;
                }
                std::mem::take(&mut o.0)
            };
            // Outside the lock: the work may call `run_elsewhere` again.
            batch.into_iter().for_each(run_flat);
        });
    if started.is_err() {
        let batch = {
            let mut o = orphans();
            o.1 = false;
            std::mem::take(&mut o.0)
        };
        batch.into_iter().for_each(run_flat);
    }
}
