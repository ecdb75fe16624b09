//! [`TaskHandle`]: the future a submit returns, resolving to the task's result.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::sync::atomic::Ordering;

use super::shared::{AbortTarget, SlotRef};
use super::{context, unqueue};
use super::{Shared, TaskId};
use crate::blocking;
use crate::error::{CancelReason, TaskError};

/// A handle to a task submitted to a pool; awaiting it gives the task's result.
///
/// `TaskHandle<T>` is a `Future<Output = Result<T, TaskError>>` that is `Send` (when `T` is)
/// and `Unpin`. From a thread that is not async, use [`blocking_wait`](Self::blocking_wait).
///
/// The handle resolves exactly once: to `Ok(value)`, or to a [`TaskError`] saying the task
/// panicked or why it was cancelled. A task that can never complete (aborted, abandoned at a
/// shutdown deadline, lost to a runtime shutdown) resolves to an error; it never hangs.
/// A [`SmartAioPool`](crate::SmartAioPool) task cut off by the end of its runtime is queued
/// again instead, and runs again on a runtime the pool knows; if none is left, on the
/// runtime that awaits its handle (or a stream's or a group's results): a pending poll
/// offers it to the pool. (A current-thread runtime that polls it once and is then no
/// longer driven holds it until driven again, dropped, or a `wait()` elsewhere takes it.)
/// Awaited with [`blocking_wait`](Self::blocking_wait) from a thread that has no live
/// runtime to offer (a plain thread, or a `spawn_blocking` thread whose runtime ended,
/// whose drop waits for that thread; a current-thread runtime entered with
/// `Handle::enter` is not offered, as the blocked thread could not drive it, while a
/// `spawn_blocking` thread of a live runtime offers that runtime, as any awaiting
/// runtime: a current-thread one runs the task while some thread drives it), it is run
/// on a current-thread runtime that `blocking_wait` makes for the rest of its wait, on
/// the calling thread (other queued tasks of the pool may start there too; those still
/// running when it returns are cut off with it and queued again, and blocking work they
/// started there with `spawn_blocking` goes on without being waited for). Awaited
/// (`.await`, not `blocking_wait`) where no live runtime can be offered (a non-tokio
/// executor, or `Handle::block_on` on a `spawn_blocking` thread of the runtime that is
/// ending), it is run on a current-thread runtime of a thread of the crate's
/// (`nb_aiopool-serve`), started for the pool and kept until the pool has no task queued
/// or running (but tasks that a rate window that never reopens holds back for ever),
/// then shut down (findings 273 and 275 of RELIABILITY.md).
///
/// # Awaiting from inside the same pool
///
/// A task running in a pool may await the handle of another task of the same pool. The
/// pool counts such waits; when every slot is held by a task waiting for a task of the
/// same pool (one still queued, which needs a slot, or one itself waiting), no task could
/// ever finish. The wait that completes that picture is broken instead: the task it awaits
/// is cancelled and the handle resolves to
/// [`CancelReason::WouldDeadlock`]. When the picture
/// is completed later, by a slot going away (after `set_max_concurrency` lowered the
/// size, the end of another task leaves only waiting tasks running), it is broken the
/// same way, one waiting task at a time: the pool picks the task whose refusals free a
/// slot soonest (one that does not also await a waiting task, then the one awaiting the
/// fewest tasks that have not started) and wakes it; each handle of a task not yet
/// started that it polls again is refused, as a wait starting then would be (a `select!`
/// over two such handles has one refused, a `join!` each). If it polls none of them, the
/// newest such task is cancelled at once. If no awaited task is queued (running tasks
/// await each other in a cycle), the newest waiting task is picked and its wait on a
/// waiting task refused when it polls it again, that task being cancelled, as a wait
/// starting then would be; if the picked task never polls that handle again (it awaits
/// something else for good), nothing is cancelled in its place and the pool stays stuck.
/// Waits while some slot still makes progress are
/// left alone. A task counts as waiting on a task from its first poll of that handle
/// until the task ends or the handle is dropped, also while it waits on something else
/// (a timer in a `select!`) or does other work (after a `timeout` on the handle).
///
/// Only waits the pool sees are counted: a poll of the handle by the job itself (directly,
/// or through a `select!`, `join!`, a group or a stream it polls). A job that never polls
/// the handle but waits on its task through something else (a spawned tokio task or a
/// thread that awaits the handle, a channel, a task of another pool that awaits it) does
/// not count as waiting, and a deadlock made so is not broken: the pool hangs, as a
/// `Semaphore` would.
///
/// In a pool built with `max_per_key` (or `weight_capacity`), keys (weights) make the
/// same kind of deadlock, which the pool does not break: a task holding key `k` that
/// awaits a queued task of key `k` (which can start only once a task of `k` ends) waits
/// for ever if every task of `k` does the same.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use nb_aiopool::{CancelReason, CommonAioPool};
///
/// let pool = CommonAioPool::new(1, 1);
/// let inner = pool.clone();
/// let outer = pool
///     .submit(async move {
///         let child = inner.submit(async { 1 }).await.unwrap(); // queued: no free slot
///         child.await // the only slot waits for it: broken at once
///     })
///     .await
///     .unwrap();
/// let err = outer.await.unwrap().unwrap_err();
/// assert_eq!(err.cancel_reason(), Some(CancelReason::WouldDeadlock));
/// # }
/// ```
///
/// # Dropping
///
/// Dropping the handle **detaches** the task: it still runs to completion and its result is
/// discarded. Use [`abort`](Self::abort) to cancel it.
///
/// A handle dropped after its task ended drops the result there and then. Otherwise, in
/// a [`CommonAioPool`](crate::CommonAioPool) or
/// [`NoQueueAioPool`](crate::NoQueueAioPool), the pool drops the result with the
/// future's box (see the crate docs, "Where an ended job is freed"): on a current-thread
/// runtime as the task ends, where it ran; on a multi-thread one soon after, usually in
/// a later `submit` from async code, on the thread that most likely allocated both; else
/// when the pool runs out of work, or about 2 ms after; and in any case before a
/// `wait()` or `shutdown()` of the pool returns. Never in a `try_submit` or
/// `blocking_submit`, never inside a job's poll, and never under the pool's lock. A
/// result whose `Drop` panics is dropped quietly (the panic hook shows the panic),
/// wherever it is dropped, by the handle too (as a tokio `JoinHandle` drops its task's
/// output): the submit, the slot it ran in, or the code that dropped or detached the
/// handle goes on.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use nb_aiopool::CommonAioPool;
///
/// let pool = CommonAioPool::new(4, 100);
/// let handle = pool.submit(async { 6 * 7 }).await.unwrap();
/// assert_eq!(handle.await.unwrap(), 42);
/// # }
/// ```
#[must_use = "dropping a TaskHandle detaches the task: it keeps running and its result is discarded"]
pub struct TaskHandle<T> {
    slot: SlotRef<T>,
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(slot: SlotRef<T>) -> Self {
        TaskHandle { slot }
    }

    fn shared(&self) -> &Shared<T> {
        self.slot.shared()
    }

    /// See `Shared::was_taken`: a hint, for aborting queued tasks before running ones.
    pub(crate) fn was_taken(&self) -> bool {
        self.shared().was_taken()
    }

    /// Cancels the task.
    ///
    /// The handle resolves at once to a [`TaskError`] whose
    /// [`cancel_reason`](TaskError::cancel_reason) is [`CancelReason::Aborted`] (for a
    /// running task that a `cancel_all` or a shutdown deadline covered first, and that is
    /// still inside a poll, that call's reason, `CancelAll` or `Abandoned`: the first
    /// decision holds, and the pool counts the task so). A running
    /// task is dropped at its next `.await` point. A task that has not started leaves the
    /// pool's queue before `abort` returns, whatever holds it there (busy slots, its key or
    /// weight limit, the rate limit): its place is free for the next submit (a submit
    /// waiting for room gets in), `stats()` counts it as cancelled and no longer as
    /// queued, and the tasks it held back (a heavy task at the head) may start. Its future
    /// (a recipe, for a `SmartAioPool`) is dropped right after by a task on its runtime,
    /// as a slot would drop it, not on the thread that calls `abort` (with none of the
    /// pool's runtimes alive, by a thread of its own); the pool's `wait`, shutdowns and
    /// exit do not wait for that drop (a runtime that is no longer driven drops it when
    /// it shuts down). During a `SmartAioPool`'s exit take-over, the take-over drops it at
    /// its turn. Aborting a task that already finished does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::{CancelReason, CommonAioPool};
    ///
    /// let pool = CommonAioPool::new(1, 1);
    /// let handle = pool.submit(std::future::pending::<()>()).await.unwrap();
    /// handle.abort();
    /// let err = handle.await.unwrap_err();
    /// assert_eq!(err.cancel_reason(), Some(CancelReason::Aborted));
    ///
    /// // A queued task gives its place back at once.
    /// let busy = pool.submit(std::future::pending::<()>()).await.unwrap();
    /// tokio::task::yield_now().await; // it starts
    /// let queued = pool.submit(async {}).await.unwrap();
    /// assert!(pool.try_submit(async {}).is_err()); // the queue (one place) is full
    /// queued.abort();
    /// assert_eq!(pool.stats().queued, 0);
    /// assert!(pool.try_submit(async {}).is_ok());
    /// # busy.abort();
    /// # }
    /// ```
    pub fn abort(&self) {
        self.shared().abort(CancelReason::Aborted);
    }

    /// The task's id in its pool: the order in which the pool accepted it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(4, 100);
    /// let first = pool.submit(async {}).await.unwrap();
    /// let second = pool.submit(async {}).await.unwrap();
    /// assert!(first.id() < second.id());
    /// # }
    /// ```
    pub fn id(&self) -> TaskId {
        // Relaxed: written before the handle was returned by the submit.
        TaskId(self.shared().job.load(Ordering::Relaxed))
    }

    /// A handle that can abort the task from elsewhere: it is `Clone`, `Send` and `Sync`,
    /// and does not carry the result.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(1, 1);
    /// let handle = pool.submit(std::future::pending::<()>()).await.unwrap();
    /// let aborter = handle.abort_handle();
    /// std::thread::spawn(move || aborter.abort()).join().unwrap();
    /// assert!(handle.await.unwrap_err().is_cancelled());
    /// # }
    /// ```
    pub fn abort_handle(&self) -> AbortHandle
    where
        T: Send + 'static,
    {
        AbortHandle {
            id: self.id(),
            target: self.slot.clone().abort_target(),
        }
    }

    /// Lets the task run on without anyone waiting for its result: the same as dropping
    /// the handle, said out loud (and without tripping `clippy::let_underscore_future`).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::CommonAioPool;
    ///
    /// let pool = CommonAioPool::new(4, 100);
    /// pool.submit(async { println!("fire and forget") }).await.unwrap().detach();
    /// pool.shutdown().await; // waits for it
    /// assert_eq!(pool.stats().completed, 1);
    /// # }
    /// ```
    pub fn detach(self) {}

    /// Returns `true` once the task has finished (its result is ready to take), or was
    /// aborted.
    ///
    /// Once this is `true`, [`PoolStats`](crate::PoolStats) counts the task and the pool
    /// has its room back: a `try_submit` made after finds it, unless submitters were
    /// already waiting for room (it goes to the first of them). An abort is the exception:
    /// it makes this `true` at once, while a running task's future runs on until its next
    /// `.await` (it may be in the middle of a poll on another thread) and is dropped
    /// there; the count and the room come then (see [`PoolStats`](crate::PoolStats)).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::CommonAioPool;
    ///
    /// let pool = CommonAioPool::new(1, 1);
    /// let handle = pool.submit(async { 1 }).await.unwrap();
    /// pool.shutdown().await;
    /// assert!(handle.is_finished());
    /// # }
    /// ```
    pub fn is_finished(&self) -> bool {
        self.shared().is_finished()
    }

    /// Waits for the task's result from a thread that is not async.
    ///
    /// # Panics
    ///
    /// Panics if called from a thread that drives async tasks (a tokio worker thread, or
    /// inside `block_on`), where blocking could stall or deadlock the task it waits for.
    /// Await the handle there instead. Plain threads and `spawn_blocking` threads may call
    /// it. The check is not made while the thread unwinds from a panic (in a `Drop` that
    /// the unwinding runs), where a second panic would abort the process: called there, it
    /// blocks as on a plain thread, and can deadlock. Nor can it be made in a `Drop` that a
    /// current-thread runtime's shutdown runs (tokio allows blocking there): waiting there
    /// for a task that runs on that runtime, it may wait for ever, as `blocking_submit`
    /// waits for room there. The task's end comes only when the same shutdown drops it,
    /// and the shutdown is held up by this `Drop`: whether the wait returns
    /// (`RuntimeShutdown`) depends on the order in which the shutdown drops its tasks,
    /// and a [`SmartAioPool`](crate::SmartAioPool) task, run again elsewhere only once its
    /// run there is dropped, never ends while it waits. Do not wait for a task in such a
    /// `Drop`: abort it, or hand the handle to another thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use nb_aiopool::CommonAioPool;
    ///
    /// let rt = tokio::runtime::Runtime::new().unwrap();
    /// let pool = CommonAioPool::new(2, 10);
    /// let handle = rt.block_on(pool.submit(async { "done" })).unwrap();
    /// assert_eq!(handle.blocking_wait().unwrap(), "done");
    /// ```
    #[track_caller]
    pub fn blocking_wait(self) -> Result<T, TaskError> {
        blocking::assert_not_async("TaskHandle::blocking_wait", "handle.await");
        let pool = self.shared().pool;
        blocking::block_on_serving(self, || unqueue::is_stranded(pool))
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    /// # Panics
    ///
    /// Panics if polled again after it returned its result.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let shared = self.shared();
        if let Poll::Ready(result) = shared.poll_result(cx) {
            return Poll::Ready(result);
        }
        // Polled by a job of the task's own pool: count the wait (until the task ends or
        // the handle goes), and break the deadlock if every slot now waits on this pool.
        // Counted once per waiting task: again if the handle was handed on to another task
        // of the pool (the first one may have ended, its count with it). The thread-local
        // check first: awaited outside the pool, this costs no lock.
        let waiter = context::current_task(shared.pool);
        if waiter.is_some() {
            // Relaxed: written before the handle was returned by the submit.
            let awaited = shared.job.load(Ordering::Relaxed);
            let refuse = if shared.waiting_task() != waiter {
                match context::start_waiting(shared.pool, awaited) {
                    Some(Ok(waiting)) => {
                        shared.set_waiting(waiting);
                        false
                    }
                    Some(Err(())) => true,
                    None => false,
                }
            } else {
                // Counted already: the same deadlock may have arisen since, by a slot
                // going away (a shrink); the pool then wakes the handles it concerns.
                context::refuse_stuck(shared.pool, awaited)
            };
            if refuse {
                shared.abort(CancelReason::WouldDeadlock);
                return shared.poll_result(cx);
            }
        }
        // A SmartAioPool task cut off by the end of its runtime, with no runtime left to run
        // it again, runs on the runtime that awaits it (one load while no pool is stranded).
        unqueue::offer_runtime(shared.pool);
        Poll::Pending
    }
}

// A handle reaches its task only through the result slot: its state word, its
// `AtomicWaker`, its nested-wait mutex (which recovers from poisoning) and the result's
// `UnsafeCell`, which it touches only once the state word says the result is its own, in
// one `take` that leaves nothing half-done if something unwinds. The `Arc<Shared<T>>` it
// once held, of locks and atomics, had both auto traits; the trait object it holds now
// (the slot may also sit in a cell with a run's `UnsafeCell`, which it never touches)
// carries neither.
impl<T> std::panic::UnwindSafe for TaskHandle<T> {}
impl<T> std::panic::RefUnwindSafe for TaskHandle<T> {}

impl<T> Drop for TaskHandle<T> {
    /// Inline: a detached handle's drop (a load, a `fetch_or` and the checks of what it
    /// found) is compiled in the user's crate, where, without the hint, it stayed a call
    /// (and `Shared::detach` a second one in some builds): 25 fewer instructions per job
    /// of common and no-queue on a current-thread runtime, 28 of smart
    /// (callgrind, `bench/instructions.sh`, against 52501ad).
    #[inline]
    fn drop(&mut self) {
        self.shared().detach();
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id())
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}

/// Aborts a task from anywhere, without access to its result; made by
/// [`TaskHandle::abort_handle`].
///
/// # Dropping
///
/// Dropping it does nothing to the task. While it (or a clone) lives, it keeps the task's
/// result slot in memory, as the [`TaskHandle`] does (with a small future's storage, or a
/// small recipe's own bytes: see the crate docs, "Memory").
#[derive(Clone)]
pub struct AbortHandle {
    id: TaskId,
    target: Arc<dyn AbortTarget>,
}

impl AbortHandle {
    /// Cancels the task, as [`TaskHandle::abort`] does.
    pub fn abort(&self) {
        self.target.abort();
    }

    /// Returns `true` once the task has finished (by any outcome), or was aborted: as
    /// [`TaskHandle::is_finished`], `true` at once after an abort, while a running task's
    /// future runs on until its next `.await`.
    pub fn is_finished(&self) -> bool {
        self.target.is_finished()
    }

    /// The task's id in its pool.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// See `Shared::was_taken`: a hint, for aborting queued tasks before running ones.
    pub(crate) fn was_taken(&self) -> bool {
        self.target.was_taken()
    }
}

// As for `TaskHandle`: it reaches only the result slot's atomics and mutex.
impl std::panic::UnwindSafe for AbortHandle {}
impl std::panic::RefUnwindSafe for AbortHandle {}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
