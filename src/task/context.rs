//! Which pool's task the current thread is polling, so that a nested submit into a full
//! pool, or a wait on a task of the same pool, can be recognised.
//!
//! The engine sets it around every poll of a task; the handle and the submit paths read
//! it. The thread-local holds two numbers (the pool's id and the task's), so entering
//! costs two stores; the pool itself is found by its id, in a [`Registry`], only by a
//! handle awaited inside its own pool.

use std::cell::Cell;
use std::sync::{Arc, Weak};

use super::registry::Registry;

/// What a [`TaskHandle`](crate::TaskHandle) polled inside a task may ask of that task's
/// pool.
///
/// Waits are counted per waiting task, not per handle: a task that awaits several handles
/// of its pool at once (a group, `join!`, a stream mapped through the pool) is one task
/// waiting.
pub(crate) trait Probe: Send + Sync {
    /// The running task `waiter` (the one polling the handle) starts waiting for task
    /// `awaited` of this pool. Returns `Some(false)` once the wait is counted (undo with
    /// `stop_waiting`), and `Some(true)` if counting it would make every slot wait for
    /// tasks of the pool itself, each on one not started or itself waiting: then no task
    /// of the pool can make progress (nothing is counted then). A wait still counted on a
    /// task that has ended (its handle is told, and the count ended, just after the lock
    /// that ended it, maybe on another thread) does not make its job stuck. `None`: not
    /// counted (the pool has no such rule now).
    ///
    /// The pool keeps which tasks are awaited, so that when the same deadlock arises
    /// later (a slot goes away, leaving only waiting tasks running), it can wake the
    /// handles of the task it picks, refuse their waits ([`refuse_stuck`](Self::refuse_stuck)),
    /// or cancel an awaited task that has not started.
    fn start_waiting(&self, waiter: u64, awaited: u64) -> Option<bool>;

    /// A wait of `waiter` on `awaited` counted by `start_waiting` ended.
    fn stop_waiting(&self, waiter: u64, awaited: u64);

    /// `waiter` polls again its counted wait on `awaited`: whether to refuse it now
    /// (`WouldDeadlock`), because the deadlock `start_waiting` refuses arose since (a slot
    /// went away), and `awaited` has not started. Costs one atomic load unless the pool
    /// found such a deadlock (then it woke the handles it concerns, to be asked this).
    fn refuse_stuck(&self, waiter: u64, awaited: u64) -> bool;
}

/// A counted wait ([`Probe::start_waiting`]), ended by [`end`](Self::end).
///
/// Kept in the awaited task's cell until the task ends or its handle is dropped, so it
/// holds its pool weakly: a handle whose wait was counted inside a job, then handed out
/// of it, would otherwise pin the pool's whole engine (and, for a task that never starts,
/// keep a dropped pool alive through its own queue), where a handle pins only its task's
/// cell. A pool gone has no count to end.
pub(crate) struct Waiting {
    probe: Weak<dyn Probe>,
    waiter: u64,
    awaited: u64,
}

impl Waiting {
    pub(crate) fn end(self) {
        if let Some(probe) = self.probe.upgrade() {
            probe.stop_waiting(self.waiter, self.awaited);
        }
    }

    /// The waiting task.
    pub(crate) fn waiter(&self) -> u64 {
        self.waiter
    }

    /// A counted wait made by hand, for the loom models of the result slot.
    #[cfg(all(test, nb_aiopool_loom))]
    pub(crate) fn for_model(probe: Arc<dyn Probe>, waiter: u64, awaited: u64) -> Self {
        Waiting {
            probe: Arc::downgrade(&probe),
            waiter,
            awaited,
        }
    }
}

/// The pool (its id; 0: none), and the task of it, that the current thread is polling.
#[derive(Clone, Copy)]
struct Current {
    pool: u32,
    task: u64,
}

thread_local! {
    static CURRENT: Cell<Current> = const { Cell::new(Current { pool: 0, task: 0 }) };
}

static PROBES: Registry<dyn Probe> = Registry::new();

/// Makes pool `id` reachable by the handles awaited in its tasks (until [`deregister`]).
pub(crate) fn register(id: u32, pool: Weak<dyn Probe>) {
    PROBES.insert(id, pool);
}

/// Pool `id` is being dropped.
pub(crate) fn deregister(id: u32) {
    PROBES.remove(id);
}

/// That pool's probe, with the current thread's task of pool `pool`.
fn current(pool: u32) -> Option<(Arc<dyn Probe>, u64)> {
    let task = current_task(pool)?;
    // A task of the pool is being polled: its slot holds the pool alive.
    Some((PROBES.get(pool)?, task))
}

/// Starts counting a wait of the task being polled on this thread on task `awaited` of
/// pool `pool`, if it belongs to that pool: `Some(Ok(wait))` once counted, `Some(Err(()))`
/// if counting it would stall the pool (see [`Probe::start_waiting`]), `None` if not
/// counted.
pub(crate) fn start_waiting(pool: u32, awaited: u64) -> Option<Result<Waiting, ()>> {
    let (probe, waiter) = current(pool)?;
    match probe.start_waiting(waiter, awaited)? {
        false => Some(Ok(Waiting {
            probe: Arc::downgrade(&probe),
            waiter,
            awaited,
        })),
        true => Some(Err(())),
    }
}

/// Whether the current thread's task of pool `pool`, polling again its counted wait on
/// task `awaited`, is to be refused (see [`Probe::refuse_stuck`]).
pub(crate) fn refuse_stuck(pool: u32, awaited: u64) -> bool {
    current(pool).is_some_and(|(probe, task)| probe.refuse_stuck(task, awaited))
}

/// The task of pool `pool` the current thread is polling, if any.
pub(crate) fn current_task(pool: u32) -> Option<u64> {
    let cur = CURRENT.try_with(Cell::get).ok()?;
    (cur.pool == pool && pool != 0).then_some(cur.task)
}

/// Whether the current thread is polling a task of any pool.
pub(crate) fn polling_a_task() -> bool {
    CURRENT.try_with(|c| c.get().pool != 0).unwrap_or(false)
}

/// Whether the current thread is polling a task of pool `pool`.
pub(crate) fn in_pool(pool: u32) -> bool {
    current_task(pool).is_some()
}

/// Marks the current thread as polling task `task` of pool `pool` (a non-zero id) until
/// dropped.
pub(crate) struct Entered {
    /// What it marked before (`None`: the thread-local is gone, at thread exit).
    saved: Option<Current>,
}

impl Entered {
    #[inline]
    pub(crate) fn new(pool: u32, task: u64) -> Self {
        Entered {
            saved: CURRENT.try_with(|c| c.replace(Current { pool, task })).ok(),
        }
    }
}

impl Drop for Entered {
    #[inline]
    fn drop(&mut self) {
        if let Some(saved) = self.saved {
            let _ = CURRENT.try_with(|c| c.set(saved));
        }
    }
}
