//! What the crate's unit tests share (a leaf: it imports nothing of the crate).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Wake;

/// Counts its drops, in the counter it shares (a plain atomic: loom runs its threads on
/// one).
///
/// # Dropping
///
/// Adds one to the counter.
pub(crate) struct Dropped(pub(crate) Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A waker's target that counts its wake-ups.
#[derive(Default)]
pub(crate) struct WakeCount(pub(crate) AtomicUsize);

impl WakeCount {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
