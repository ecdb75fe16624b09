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
pub(crate) trait Probe: Send + Sync {
    /// The running task polling the handle starts waiting for task `job` of this pool.
    /// Returns `Some(false)` once the wait is counted (undo with `stop_waiting`), and
    /// `Some(true)` if counting it would make every slot wait for tasks of the pool itself:
    /// then no task of the pool can make progress (nothing is counted then). `None`: not
    /// counted (the pool has no such rule now).
    fn start_waiting(&self, job: u64) -> Option<bool>;

    /// A wait counted by `start_waiting` ended.
    fn stop_waiting(&self);
}

thread_local! {
    static CURRENT: RefCell<Option<(usize, Arc<dyn Probe>)>> = const { RefCell::new(None) };
}

/// The probe of pool `pool`, if the current thread is polling one of its tasks.
pub(crate) fn current_probe(pool: usize) -> Option<Arc<dyn Probe>> {
    CURRENT
        .try_with(|c| match &*c.borrow() {
            Some((id, probe)) if *id == pool => Some(Arc::clone(probe)),
            _ => None,
        })
        .ok()
        .flatten()
}

/// Whether the current thread is polling a task of pool `pool`.
pub(crate) fn in_pool(pool: usize) -> bool {
    CURRENT
        .try_with(|c| matches!(&*c.borrow(), Some((id, _)) if *id == pool))
        .unwrap_or(false)
}

/// Marks the current thread as polling a task of pool `id` until dropped; the probe is
/// moved out of `slot` meanwhile and put back on drop.
pub(crate) struct Entered<'a> {
    slot: &'a mut Option<Arc<dyn Probe>>,
    entered: bool,
    saved: Option<(usize, Arc<dyn Probe>)>,
}

impl<'a> Entered<'a> {
    pub(crate) fn new(id: usize, slot: &'a mut Option<Arc<dyn Probe>>) -> Self {
        let mut probe = slot.take();
        let mut entered = false;
        let mut saved = None;
        if probe.is_some() {
            // If the thread-local is gone (thread exit), the closure does not run and the
            // probe stays with its owner.
            let _ = CURRENT.try_with(|c| {
                if let Some(p) = probe.take() {
                    saved = c.borrow_mut().replace((id, p));
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
        if let Some((_, probe)) = mine {
            *self.slot = Some(probe);
        }
    }
}
