//! Recipes as jobs: what SmartAioPool queues ([`SmartJob`]), and the runs a recipe makes.
//!
//! A task is its recipe and the one result slot all of its runs share; the engine keeps a
//! copy (a reference count) while a run is under way, to run it again after an
//! interruption.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::core::Submit;
use crate::engine::Job;
use crate::error::CancelReason;
use crate::task::{BoxRun, HasShared, Outcome, Shared, SlotRef};

/// A submitted recipe and the one result slot all of its runs share.
pub(crate) struct SmartTask<R, T> {
    // First: the handle is told before the recipe is dropped.
    shared: LastCopy<T>,
    recipe: R,
}

/// The result slot, as the task holds it.
struct LastCopy<T>(Arc<Shared<T>>);

impl<T> Drop for LastCopy<T> {
    fn drop(&mut self) {
        // The last copy of an unfinished task is going away (its pool or runtime is gone):
        // tell the handle rather than leave it waiting. Does nothing if the task ended. An
        // aborted task says so, even if its run ended before `abort` decided the outcome.
        if self.0.is_claimed() {
            // Decided already (nearly always: the task ended). Whoever decided stored the
            // result in the critical section that decided, and wakes the handle after it,
            // so nothing here needs to wait (unlike an `abort`, which returns only once
            // the handle is resolved): no lock, no error made to be dropped. Any lock this
            // thread takes later on the slot is ordered after that critical section.
            return;
        }
        let reason = self.0.aborted();
        self.0
            .cancel(reason.unwrap_or(CancelReason::RuntimeShutdown));
    }
}

/// The type-erased view the engine keeps of a [`SmartTask`].
trait SmartTaskDyn: Send + Sync + 'static {
    fn run(self: Arc<Self>) -> BoxRun;
    fn cancel(&self, reason: CancelReason);
    /// Why it was aborted, if it was.
    fn aborted(&self) -> Option<CancelReason>;
    /// The waker of its handle, if it is being awaited.
    fn handle_waker(&self) -> Option<std::task::Waker>;
    /// A run that calls no user code (for a task cancelled before it started).
    fn unstarted(self: Arc<Self>) -> BoxRun;
}

/// A queued recipe task (a named type rather than an alias of the trait object, which
/// keeps the submit futures `Send` for the compiler).
pub(crate) struct SmartJob(Arc<dyn SmartTaskDyn>);

impl<R, T> HasShared<T> for Arc<SmartTask<R, T>>
where
    R: Send + Sync + 'static,
    T: Send + 'static,
{
    fn shared(&self) -> &Shared<T> {
        &self.shared.0
    }

    // The task may run again; the last copy going away tells the handle (`LastCopy`'s
    // `Drop`).
    const CANCEL_ON_DROP: bool = false;
}

impl<R, Fut> SmartTaskDyn for SmartTask<R, Fut::Output>
where
    R: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn run(self: Arc<Self>) -> BoxRun {
        if self.shared.0.is_claimed() {
            // Ended already (aborted while queued, or finished by an earlier run).
            let outcome = if self.shared.0.is_aborted() {
                Outcome::Cancelled(self.shared.0.abort_reason())
            } else {
                Outcome::Completed
            };
            return BoxRun::ended(outcome);
        }
        match catch_unwind(AssertUnwindSafe(|| (self.recipe)())) {
            Ok(fut) => BoxRun::new(self, fut),
            // The recipe itself panicked: a run that re-raises the panic on its first poll,
            // so it is reported like a panic of the future.
            Err(payload) => BoxRun::new(self, PanicNow::<Fut::Output>::new(payload)),
        }
    }

    fn cancel(&self, reason: CancelReason) {
        self.shared.0.cancel(reason);
    }

    fn aborted(&self) -> Option<CancelReason> {
        self.shared.0.aborted()
    }

    fn handle_waker(&self) -> Option<std::task::Waker> {
        self.shared.0.handle_waker()
    }

    fn unstarted(self: Arc<Self>) -> BoxRun {
        // A future that is never polled: the run is cancelled before its first poll.
        BoxRun::new(self, std::future::pending::<Fut::Output>())
    }
}

/// The task of `recipe`, with the result slot `shared` its handle holds.
fn task<R, T>(recipe: R, shared: Arc<Shared<T>>) -> Arc<SmartTask<R, T>> {
    Arc::new(SmartTask {
        shared: LastCopy(shared),
        recipe,
    })
}

/// The job of `recipe`, with the result slot `shared` its handle holds (for a recipe made
/// under the engine's lock, whose slot was allocated before).
pub(crate) fn job<R, Fut>(recipe: R, shared: Arc<Shared<Fut::Output>>) -> SmartJob
where
    R: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    SmartJob(task(recipe, shared))
}

impl<R, Fut> Submit<SmartJob> for R
where
    R: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    type Output = Fut::Output;
    type Ready = Arc<SmartTask<R, Fut::Output>>;

    fn ready(self, shared: Shared<Fut::Output>) -> Self::Ready {
        task(self, Arc::new(shared))
    }

    fn slot(ready: &Self::Ready) -> SlotRef<Fut::Output> {
        ready.shared.0.clone()
    }

    fn into_job(ready: Self::Ready) -> SmartJob {
        SmartJob(ready)
    }

    fn unready(ready: Self::Ready) -> R {
        let SmartTask { shared, recipe } =
            Arc::into_inner(ready).expect("a task's recipe is shared only once its job is queued");
        // Its result slot, cancelled here, has no handle.
        drop(shared);
        recipe
    }
}

impl Job for SmartJob {
    const RERUN: bool = true;
    const STARTS_USER_CODE: bool = true;

    fn keep(&self) -> Option<Self> {
        Some(SmartJob(Arc::clone(&self.0)))
    }

    fn start(self) -> BoxRun {
        self.0.run()
    }

    fn start_cancelled(self, _reason: CancelReason) -> BoxRun {
        self.0.unstarted()
    }

    fn cancel(self, reason: CancelReason) {
        self.0.cancel(reason)
    }

    fn aborted(&self) -> Option<CancelReason> {
        self.0.aborted()
    }

    fn handle_waker(&self) -> Option<std::task::Waker> {
        self.0.handle_waker()
    }
}

/// A future that re-raises a recipe's panic when polled.
struct PanicNow<T> {
    payload: Option<Box<dyn std::any::Any + Send>>,
    _output: std::marker::PhantomData<fn() -> T>,
}

impl<T> PanicNow<T> {
    fn new(payload: Box<dyn std::any::Any + Send>) -> Self {
        PanicNow {
            payload: Some(payload),
            _output: std::marker::PhantomData,
        }
    }
}

impl<T> Future for PanicNow<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<T> {
        match self.payload.take() {
            Some(payload) => std::panic::resume_unwind(payload),
            None => Poll::Pending,
        }
    }
}
