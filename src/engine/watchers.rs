//! [`SizeWatchers`]: wakers told when a pool's size changes, or the pool closes.
//!
//! For code that bounds itself by the pool's size and would not otherwise hear of a
//! change: an ordered map stream whose window is full waits on its first job alone, and
//! only a resize can open its window before that job ends. And for a map stream waiting
//! for its input, which would otherwise hear of a shutdown only at its next input.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use futures_util::task::AtomicWaker;

use crate::task::wake_quietly;

/// The watchers of one pool. Each is the watcher's own [`AtomicWaker`], which it registers
/// its task's waker in (no lock); the pool keeps a weak reference, dropped at the next
/// [`watch`](Self::watch) once the watcher is gone.
#[derive(Default)]
pub(crate) struct SizeWatchers(Mutex<Vec<Weak<AtomicWaker>>>);

impl SizeWatchers {
    /// A new watcher.
    pub(crate) fn watch(&self) -> Arc<AtomicWaker> {
        let watcher = Arc::new(AtomicWaker::new());
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&watcher));
        watcher
    }

    /// The size changed, or the pool closed: wakes every watcher's registered waker,
    /// outside the lock (a waker's panic is caught: see [`wake_quietly`]).
    pub(crate) fn wake_all(&self) {
        let wakers: Vec<_> = {
            let list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if list.is_empty() {
                return;
            }
            list.iter().filter_map(|w| w.upgrade()?.take()).collect()
        };
        wakers.into_iter().for_each(wake_quietly);
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;
    use crate::testing::WakeCount;

    #[test]
    fn a_resize_wakes_the_live_watchers_once_and_forgets_the_dropped() {
        let watchers = SizeWatchers::default();
        let (a, b) = (watchers.watch(), watchers.watch());
        let (ca, cb) = (
            Arc::new(WakeCount::default()),
            Arc::new(WakeCount::default()),
        );
        a.register(&Waker::from(Arc::clone(&ca)));
        b.register(&Waker::from(Arc::clone(&cb)));
        drop(b);
        watchers.wake_all();
        // Woken once: a watcher registers again after each wake-up.
        watchers.wake_all();
        assert_eq!(ca.get(), 1);
        assert_eq!(cb.get(), 0);
        let _c = watchers.watch();
        assert_eq!(
            watchers.0.lock().unwrap().len(),
            2,
            "the dropped one is forgotten"
        );
    }
}
