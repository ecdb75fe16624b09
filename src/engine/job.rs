//! What the engine needs of a submitted task: the [`Job`] trait.

use crate::error::CancelReason;
use crate::task::BoxRun;

/// A submitted task as the engine queues it.
///
/// The pool chooses the re-run policy through [`RERUN`](Job::RERUN): the engine itself
/// knows nothing of futures or recipes.
pub(crate) trait Job: Send + Sized + 'static {
    /// Whether a run interrupted by the end of its runtime is queued again (recipes)
    /// rather than reported as cancelled (futures).
    const RERUN: bool;

    /// Whether [`start`](Job::start) calls user code (a recipe), so that the engine marks
    /// the thread as inside the pool (and enters the task's span) around it. A future's
    /// start calls none: it hands over the run made at submit.
    const STARTS_USER_CODE: bool;

    /// A copy kept while the job runs, for running it again (only for `RERUN` jobs). Cheap
    /// (a reference count); taken under the engine's lock.
    fn keep(&self) -> Option<Self>;

    /// Starts a run. May call user code (a recipe); never called under the engine's lock.
    fn start(self) -> BoxRun;

    /// A run for a job cancelled for `reason` before it started: calls no user code; the
    /// caller cancels it and publishes it like any run.
    fn start_cancelled(self, reason: CancelReason) -> BoxRun;

    /// Drops a job that will never run, telling its handle why (unless something else
    /// decided its outcome first). Runs user `Drop` code; never called under the lock.
    fn cancel(self, reason: CancelReason);

    /// Why it was aborted, if it was (by its handle, or by the nested-wait check: either
    /// decided its outcome): a job cancelled after that is counted with that reason.
    /// Cheap (atomic loads); called under the lock.
    fn aborted(&self) -> Option<CancelReason>;

    /// The waker of the job's handle, if it is being awaited (cloned under the handle's
    /// own lock; never woken under the engine's).
    fn handle_waker(&self) -> Option<std::task::Waker>;

    /// Under the engine's lock, as a slot takes the job: the slot's key, which an abort of
    /// the task hands back ([`Unqueue::aborted`](crate::task::unqueue::Unqueue::aborted)).
    /// One store.
    fn set_runner(&self, key: usize);

    /// Whether the job's handle is gone (dropped or detached): no one can await it. Asked
    /// only of a SmartAioPool's jobs, by [`Engine::owes_work`](super::Engine::owes_work);
    /// cheap (an atomic load), called under the lock.
    fn detached(&self) -> bool {
        false
    }
}
