//! The synchronisation types the task cell uses, through one door: `std` and
//! `futures-util` normally, loom's models under `--cfg nb_aiopool_loom`, so that loom runs
//! this crate's real code (as tokio's `crate::loom` does). A custom cfg name, because
//! `--cfg loom` would switch tokio itself into its loom mode.

#[cfg(not(nb_aiopool_loom))]
mod imp {
    pub(crate) use futures_util::task::AtomicWaker;
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    pub(crate) use std::sync::{Mutex, MutexGuard};
}

#[cfg(nb_aiopool_loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    pub(crate) use loom::sync::{Mutex, MutexGuard};

    /// loom's `AtomicWaker`, with the `futures` method name.
    #[derive(Debug, Default)]
    pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

    impl AtomicWaker {
        pub(crate) fn new() -> Self {
            AtomicWaker(loom::future::AtomicWaker::new())
        }

        pub(crate) fn register(&self, waker: &std::task::Waker) {
            self.0.register_by_ref(waker);
        }

        pub(crate) fn wake(&self) {
            self.0.wake();
        }
    }
}

pub(crate) use imp::*;
