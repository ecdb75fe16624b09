//! A task of a pool, seen from both ends: the result slot it shares with its
//! [`TaskHandle`], the handle itself, and [`BoxRun`], one run of a submitted future (or of
//! a recipe), which reports how it ended and shares one allocation with the result slot
//! when it can.
//!
//! Nothing here knows the engine: the engine drives [`BoxRun`]s, and the handle asks the
//! pool it is polled in (if any) through the [`Probe`](context::Probe) trait.

pub(crate) mod context;
mod handle;
mod registry;
mod run;
mod shared;
pub(crate) mod unqueue;

use std::fmt;

use crate::error::CancelReason;

pub use handle::{AbortHandle, TaskHandle};
pub(crate) use registry::PoolId;
pub(crate) use run::{fits_inline, BoxRun, ReadyRun, RunOwner};
pub(crate) use shared::{HeldByHandles, ResultSlot, Shared, SlotRef, RUNNER_FAR};

pub(crate) use shared::{wake_quietly, QuietPoll, Woken};

/// How a task ended, as counted by its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Panicked,
    /// Cancelled for this reason (the abort's, `Aborted` or `WouldDeadlock`, also when an
    /// abort resolved the handle first).
    Cancelled(CancelReason),
}

/// Identifies a task within its pool: the order in which the pool accepted it, from 0.
///
/// Every task of a pool has its own id, also when several run one after another on the
/// same tokio task; `tracing` spans and log lines can use it.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = nb_aiopool::CommonAioPool::new(2, 10);
/// let a = pool.submit(async {}).await.unwrap();
/// let b = pool.submit(async {}).await.unwrap();
/// assert_ne!(a.id(), b.id());
/// assert_eq!(a.id().to_string(), "0");
/// # }
/// ```
///
/// # Dropping
///
/// Plain data (`Copy`): dropping it does nothing to the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub(crate) u64);

impl TaskId {
    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
