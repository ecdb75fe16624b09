//! [`Run`]: one run of a task's future, as the engine drives it.
//!
//! It catches panics of the future's `poll` *and* of its `Drop` (the future is dropped as
//! soon as it returns), so a misbehaving task only ever affects its own handle. It claims
//! the task's outcome when the run ends and holds the result back until the engine has
//! counted it ([`RunJob::publish_locked`]).

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::shared::Woken;
use super::{Outcome, RunJob, Shared};
use crate::error::{CancelReason, TaskError};

/// Whatever owns the task's [`Shared`]: the shared slot itself (futures), or a recipe
/// together with its slot (SmartAioPool).
pub(crate) trait HasShared<T>: Send + 'static {
    fn shared(&self) -> &Shared<T>;

    /// Whether a run dropped before it ended tells the handle (futures: there is no other
    /// run), or leaves that to the owner (recipes: they may run again).
    const CANCEL_ON_DROP: bool;
}

impl<T: Send + 'static> HasShared<T> for Arc<Shared<T>> {
    fn shared(&self) -> &Shared<T> {
        self
    }

    const CANCEL_ON_DROP: bool = true;
}

pin_project! {
    #[project = StageProj]
    #[project_replace = StageReplace]
    enum Stage<F> {
        Running { #[pin] fut: F },
        Done,
    }
}

pin_project! {
    /// One run of a future for the task owned by `owner`.
    ///
    /// Dropped before it ended (its runtime shut down, or the pool dropped it unrun), the
    /// future is dropped (a panic in its `Drop` is caught) and, for futures, the handle
    /// resolves to [`CancelReason::RuntimeShutdown`]; a held result is handed over.
    pub(crate) struct Run<F: Future, H: HasShared<F::Output>> {
        #[pin]
        stage: Stage<F>,
        owner: H,
        held: Option<Result<F::Output, TaskError>>,
        outcome: Option<Outcome>,
        // The result was handed over (what is left in `held` is a result nobody wants).
        published: bool,
    }

    impl<F: Future, H: HasShared<F::Output>> PinnedDrop for Run<F, H> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            drop(drop_future(this.stage));
            if *this.published {
                return;
            }
            if let Some(result) = this.held.take() {
                this.owner.shared().fill_first(result);
            } else if H::CANCEL_ON_DROP && this.outcome.is_none() {
                this.owner.shared().cancel(CancelReason::RuntimeShutdown);
            }
        }
    }
}

impl<F: Future, H: HasShared<F::Output>> Run<F, H> {
    pub(crate) fn new(fut: F, owner: H) -> Self {
        Run {
            stage: Stage::Running { fut },
            owner,
            held: None,
            outcome: None,
            published: false,
        }
    }

    /// The future of a run that was never pinned (the pool refused its task after all),
    /// handed back; its result slot is left untouched.
    pub(crate) fn into_future(mut self) -> F {
        // Nothing to tell: there is no handle.
        self.published = true;
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Running { fut } => fut,
            Stage::Done => unreachable!("a run is made with its future"),
        }
    }
}

/// Drops the future, catching a panic in its `Drop`; returns the panic payload if any.
fn drop_future<F>(stage: Pin<&mut Stage<F>>) -> Option<Box<dyn std::any::Any + Send>> {
    catch_unwind(AssertUnwindSafe(|| {
        stage.project_replace(Stage::Done);
    }))
    .err()
}

impl<F: Future, H: HasShared<F::Output>> Run<F, H> {
    /// Ends the run with `result`, held back until [`publish_locked`] decides the task's
    /// outcome with it (unless an abort decided first).
    ///
    /// [`publish_locked`]: RunJob::publish_locked
    fn end(
        self: Pin<&mut Self>,
        outcome: Outcome,
        result: Result<F::Output, TaskError>,
    ) -> Outcome {
        let this = self.project();
        *this.held = Some(result);
        *this.outcome = Some(outcome);
        outcome
    }
}

impl<F, H> RunJob for Run<F, H>
where
    F: Future + Send,
    F::Output: Send,
    H: HasShared<F::Output>,
{
    fn poll_run(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        if let Some(outcome) = self.outcome {
            return Poll::Ready(outcome);
        }
        let mut this = self.as_mut().project();
        let shared = this.owner.shared();
        // Woken by the pool when it is aborted (see `unqueue::aborted`).
        if shared.is_aborted() {
            drop_future(this.stage);
            let aborted = Outcome::Cancelled(shared.abort_reason());
            *this.outcome = Some(aborted);
            return Poll::Ready(aborted);
        }
        let StageProj::Running { fut } = this.stage.as_mut().project() else {
            unreachable!("a run is polled after it ended");
        };
        let (outcome, result) = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(value)) => match drop_future(this.stage) {
                None => (Outcome::Completed, Ok(value)),
                Some(payload) => {
                    drop(value);
                    (Outcome::Panicked, Err(TaskError::panicked(payload)))
                }
            },
            Err(payload) => {
                // The future is dropped here too; a second panic in its Drop is dropped.
                drop(drop_future(this.stage));
                (Outcome::Panicked, Err(TaskError::panicked(payload)))
            }
        };
        Poll::Ready(self.end(outcome, result))
    }

    fn cancel(mut self: Pin<&mut Self>, reason: CancelReason) {
        if self.outcome.is_some() {
            return;
        }
        drop_future(self.as_mut().project().stage);
        self.end(
            Outcome::Cancelled(reason),
            Err(TaskError::cancelled(reason)),
        );
    }

    fn publish_locked(self: Pin<&mut Self>) -> (Woken, Outcome) {
        let this = self.project();
        let outcome = this
            .outcome
            .unwrap_or(Outcome::Cancelled(CancelReason::RuntimeShutdown));
        if *this.published {
            return (Woken::default(), outcome);
        }
        *this.published = true;
        match this.held.take() {
            Some(result) => match this.owner.shared().store_first(result) {
                Ok((woken, discarded)) => {
                    // Dropped with the run, outside the engine's lock.
                    *this.held = discarded;
                    (woken, outcome)
                }
                Err(lost) => {
                    // An abort decided first: the task counts as aborted.
                    *this.held = Some(lost);
                    let aborted = Outcome::Cancelled(this.owner.shared().abort_reason());
                    *this.outcome = Some(aborted);
                    (Woken::default(), aborted)
                }
            },
            None => (Woken::default(), outcome),
        }
    }

    fn held_error(&self) -> Option<&TaskError> {
        self.held.as_ref()?.as_ref().err()
    }

    fn aborted(&self) -> Option<CancelReason> {
        self.owner.shared().aborted()
    }

    fn handle_waker(&self) -> Option<std::task::Waker> {
        self.owner.shared().handle_waker()
    }
}
