//! A task of a pool, seen from both ends: the result slot it shares with its
//! [`TaskHandle`], the handle itself, and [`Run`], the future that runs one submitted
//! future (or one run of a recipe) and reports how it ended.
//!
//! Nothing here knows the engine: the engine drives [`RunJob`]s, and the handle asks the
//! pool it is polled in (if any) through the [`Probe`](context::Probe) trait.

pub(crate) mod context;
mod handle;
mod registry;
mod run;
mod shared;
pub(crate) mod unqueue;

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use handle::{AbortHandle, TaskHandle};
pub(crate) use run::{HasShared, Run};
pub(crate) use shared::Shared;

use crate::error::CancelReason;

pub(crate) use shared::Woken;

/// How a task ended, as counted by its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Panicked,
    /// Cancelled for this reason (the abort's, `Aborted` or `WouldDeadlock`, also when an
    /// abort resolved the handle first).
    Cancelled(CancelReason),
}

/// One run of a task, as the engine drives it.
///
/// The engine polls it to an [`Outcome`], records that outcome in the pool's counters, and
/// only then calls [`publish`](RunJob::publish_locked), so that a handle never resolves before the
/// pool's statistics count its task.
pub(crate) trait RunJob: Send {
    /// Polls the task. On `Ready` the user future is already dropped (a panic in its
    /// `Drop` is caught and reported as the task's panic) and the result is held back
    /// until `publish`.
    fn poll_run(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome>;

    /// Ends the run now for `reason` (dropping the user future); the next `poll_run`
    /// returns the outcome.
    fn cancel(self: Pin<&mut Self>, reason: CancelReason);

    /// Decides the task's outcome with the held result and stores it for the handle;
    /// called under the engine's lock, right where the pool counts the outcome, so the two
    /// agree. Returns the wake-up to fire once the lock is released, and the outcome to
    /// count (`Cancelled(Aborted)` if an abort decided first). A result nobody wants is
    /// dropped with the run.
    fn publish_locked(self: Pin<&mut Self>) -> (Woken, Outcome);

    /// The error the run ended with: before `publish_locked`, the one about to be handed
    /// over; after it, only one nobody took (the handle was dropped: a detached task), for
    /// the pool's `on_panic` callback.
    fn held_error(&self) -> Option<&crate::error::TaskError> {
        None
    }

    /// Why the task was aborted (by its handle, or by the nested-wait check), if it was.
    fn aborted(&self) -> Option<CancelReason> {
        None
    }

    /// The waker of the task's handle, if it is being awaited.
    fn handle_waker(&self) -> Option<std::task::Waker> {
        None
    }
}

/// A boxed, type-erased run.
pub(crate) type BoxRun = Pin<Box<dyn RunJob>>;

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
