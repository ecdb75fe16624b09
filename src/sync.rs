//! The synchronisation types the task cell uses, through one door: `std`'s normally,
//! loom's models under `--cfg nb_aiopool_loom`, so that loom runs
//! this crate's real code (as tokio's `crate::loom` does). A custom cfg name, because
//! `--cfg loom` would switch tokio itself into its loom mode.

#[cfg(not(nb_aiopool_loom))]
mod imp {
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
    pub(crate) use std::sync::{Mutex, MutexGuard};
}

#[cfg(nb_aiopool_loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
    pub(crate) use loom::sync::{Mutex, MutexGuard};
}

pub(crate) use imp::*;
