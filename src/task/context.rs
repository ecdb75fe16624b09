//! Which pool's task the current thread is polling, so that a nested submit into a full
//! pool, or a wait on a task of the same pool, can be recognised.
//!
//! The engine sets it around every poll of a task; the handle and the submit paths read
//! it. The probe is *moved* into the thread-local and back out, so entering costs no
//! reference-count traffic.

use std::cell::RefCell;
use std::sync::Arc;

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
    /// tasks of the pool itself: then no task of the pool can make progress (nothing is
    /// counted then). `None`: not counted (the pool has no such rule now).
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
pub(crate) struct Waiting {
    probe: Arc<dyn Probe>,
    waiter: u64,
    awaited: u64,
}

impl Waiting {
    pub(crate) fn end(self) {
        self.probe.stop_waiting(self.waiter, self.awaited);
    }

    /// The waiting task.
    pub(crate) fn waiter(&self) -> u64 {
        self.waiter
    }
}

/// The pool, and the task of it, that the current thread is polling.
struct Current {
    pool: usize,
    probe: Arc<dyn Probe>,
    task: u64,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Starts counting a wait of the task being polled on this thread on task `awaited` of
/// pool `pool`, if it belongs to that pool: `Some(Ok(wait))` once counted, `Some(Err(()))`
/// if counting it would stall the pool (see [`Probe::start_waiting`]), `None` if not
/// counted.
pub(crate) fn start_waiting(pool: usize, awaited: u64) -> Option<Result<Waiting, ()>> {
    let (probe, waiter) = with_current(pool, |cur| (Arc::clone(&cur.probe), cur.task))?;
    match probe.start_waiting(waiter, awaited)? {
        false => Some(Ok(Waiting {
            probe,
            waiter,
            awaited,
        })),
        true => Some(Err(())),
    }
}

/// Whether the current thread's task of pool `pool`, polling again its counted wait on
/// task `awaited`, is to be refused (see [`Probe::refuse_stuck`]).
pub(crate) fn refuse_stuck(pool: usize, awaited: u64) -> bool {
    with_current(pool, |cur| cur.probe.refuse_stuck(cur.task, awaited)).unwrap_or(false)
}

/// The task of pool `pool` the current thread is polling, if any.
pub(crate) fn current_task(pool: usize) -> Option<u64> {
    with_current(pool, |cur| cur.task)
}

/// `f` of what the current thread is polling, if that is a task of pool `pool`.
fn with_current<R>(pool: usize, f: impl FnOnce(&Current) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| match &*c.borrow() {
            Some(cur) if cur.pool == pool => Some(f(cur)),
            _ => None,
        })
        .ok()
        .flatten()
}

/// Whether the current thread is polling a task of any pool.
pub(crate) fn polling_a_task() -> bool {
    CURRENT.try_with(|c| c.borrow().is_some()).unwrap_or(false)
}

/// Whether the current thread is polling a task of pool `pool`.
pub(crate) fn in_pool(pool: usize) -> bool {
    current_task(pool).is_some()
}

/// Marks the current thread as polling task `task` of pool `id` until dropped; the probe
/// is moved out of `slot` meanwhile and put back on drop.
pub(crate) struct Entered<'a> {
    slot: &'a mut Option<Arc<dyn Probe>>,
    entered: bool,
    saved: Option<Current>,
}

impl<'a> Entered<'a> {
    pub(crate) fn new(id: usize, task: u64, slot: &'a mut Option<Arc<dyn Probe>>) -> Self {
        let mut probe = slot.take();
        let mut entered = false;
        let mut saved = None;
        if probe.is_some() {
            // If the thread-local is gone (thread exit), the closure does not run and the
            // probe stays with its owner.
            let _ = CURRENT.try_with(|c| {
                if let Some(probe) = probe.take() {
                    saved = c.borrow_mut().replace(Current {
                        pool: id,
                        probe,
                        task,
                    });
                    entered = true;
                }
            });
        }
        if !entered {
            *slot = probe;
        }
        Entered {
            slot,
            entered,
            saved,
        }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if !self.entered {
            return;
        }
        let saved = self.saved.take();
        let mine = CURRENT
            .try_with(|c| std::mem::replace(&mut *c.borrow_mut(), saved))
            .ok()
            .flatten();
        if let Some(cur) = mine {
            *self.slot = Some(cur.probe);
        }
    }
}
