//! The synchronisation types the task cell and the engine's lock-free marks
//! (`engine::marks`) use, through one door: `std`'s normally,
//! loom's models under `--cfg nb_aiopool_loom`, so that loom runs
//! this crate's real code (as tokio's `crate::loom` does). A custom cfg name, because
//! `--cfg loom` would switch tokio itself into its loom mode.

#[cfg(not(nb_aiopool_loom))]
mod imp {
    pub(crate) use std::sync::atomic::{
        fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };
    pub(crate) use std::sync::{Arc, Mutex};

    /// `futures`' `AtomicWaker`, under the names loom's model of it uses.
    #[derive(Default)]
    pub(crate) struct AtomicWaker(futures_util::task::AtomicWaker);

    impl AtomicWaker {
        pub(crate) fn register_by_ref(&self, waker: &std::task::Waker) {
            self.0.register(waker);
        }

        pub(crate) fn take_waker(&self) -> Option<std::task::Waker> {
            self.0.take()
        }
    }

    /// `std`'s `UnsafeCell`, with the closure-based access of loom's model of it (which
    /// checks that no access overlaps a write).
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Waits a moment for another thread that is a few instructions from publishing
    /// something (taking no lock and running no user code in between).
    pub(crate) fn spin_wait(round: u32) {
        if round < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

#[cfg(nb_aiopool_loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::future::AtomicWaker;
    pub(crate) use loom::sync::atomic::{
        fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering,
    };
    pub(crate) use loom::sync::{Arc, Mutex};

    pub(crate) fn spin_wait(_round: u32) {
        loom::thread::yield_now();
    }
}

pub(crate) use imp::*;
