//! [`TaskGroup`]: a set of futures submitted to one [`CommonAioPool`](crate::CommonAioPool) or
//! [`NoQueueAioPool`](crate::NoQueueAioPool), over the generic [`Group`].

use std::fmt;
use std::future::Future;
use std::task::{Context, Poll};

use futures_util::future::{Either, FutureExt};

use super::super::core::{meta_of, Core, FutureJob};
use super::{unwatched, Group, Watched};
use crate::engine::{AdmitError, Meta, PushError};
use crate::error::{SubmitError, SubmitErrorKind, TaskError, TrySubmitError};
use crate::options::SubmitOptions;
use crate::task::TaskId;

/// A set of futures submitted to one [`CommonAioPool`](crate::CommonAioPool) or [`NoQueueAioPool`](crate::NoQueueAioPool), joined as
/// they complete or all at once; made by [`CommonAioPool::group`](crate::CommonAioPool::group) or
/// [`NoQueueAioPool::group`](crate::NoQueueAioPool::group).
///
/// The tasks run in the pool, under its bound and backpressure, like any other job: a
/// group is only the set of their handles. This is tokio's `JoinSet`, over a pool.
///
/// # Cancel on error
///
/// [`cancel_on_error`](TaskGroup::cancel_on_error) (for tasks returning a `Result`) and
/// [`cancel_on_panic`](TaskGroup::cancel_on_panic) make the group behave like Go's
/// `errgroup` or pond's groups: the first task that fails aborts every other task of the
/// group at once (they resolve to [`CancelReason::Aborted`](crate::CancelReason::Aborted);
/// those still queued first, newest first, so that the slot a running task's abort frees
/// does not start one of them, also when priorities let a newer task run before older
/// ones; a slot freed meanwhile by other work may still start one, which the abort then
/// ends), and later submits are
/// refused with [`SubmitErrorKind::Closed`], as is a submit of the group that is waiting
/// for room then (at once, whoever holds the room). The failing task keeps its own result,
/// also when it fails before its `submit` has returned. This happens inside the pool,
/// whether or not the group is being joined. A panic counts wherever the task's result
/// reports it: in the future's `poll`, or in its `Drop` when it is dropped right after
/// returning.
///
/// Each call sets what fails a task submitted after it: `cancel_on_panic(true)` after
/// `cancel_on_error(true)` makes only panics count for those tasks (the earlier ones keep
/// counting `Err`), and either call with `false` turns both off. Turned on again while on
/// (or switched between the two), it stays one set: a failure aborts every task submitted
/// while it was on. Turned off, it covers no task submitted after that; turned on once
/// more, a new set starts.
///
/// # Dropping
///
/// Dropping the group **aborts** its unfinished tasks, as dropping a `JoinSet` does (see
/// [`TaskHandle::abort`](crate::TaskHandle::abort)): queued ones leave the pool's queue at
/// once (their places are free for the next submit, `stats()` counts them cancelled, and
/// each future is dropped unpolled right after, by a task on its runtime); running ones
/// are dropped at their next `.await`, and hold their slots until then. So
/// `tokio::time::timeout(d, group.join_all())` leaves nothing of the group to run on once
/// it fires: its queued tasks are gone, and its running ones end at their slots' next
/// poll (until then they count as running, and their slots are not free).
///
/// The results of the tasks that ended and were not joined are dropped with the group; a
/// result whose `Drop` panics is dropped quietly (the panic hook shows the panic), as the
/// pool drops a detached task's result, and the others are dropped too.
///
/// # Memory
///
/// The group holds a handle for each task not joined yet (see the crate docs, "Memory").
/// A joined task's handle is freed as it is joined, and once the tasks of a burst have
/// been joined, the room the group took to list them is given back (beyond a hundred or
/// so entries), also while other tasks of the group run on, so a long-lived group does
/// not keep the size of its largest burst.
///
/// The group counts as a handle of its pool: the pool stays open while the group lives,
/// even if every handle of the pool itself was dropped.
///
/// # Examples
///
/// ```
/// use nb_aiopool::CommonAioPool;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = CommonAioPool::new(4, 16);
/// let mut group = pool.group();
/// for i in 0..10u64 {
///     group.submit(async move { i * i }).await.unwrap();
/// }
/// assert_eq!(group.len(), 10);
///
/// // As they complete:
/// let first = group.join_next().await.unwrap().unwrap();
/// assert!(first < 100);
/// // The rest, in submission order:
/// let rest: Vec<u64> = group.join_all().await.into_iter().map(Result::unwrap).collect();
/// assert_eq!(rest.len(), 9);
/// # }
/// ```
///
/// Cancel the rest on the first error:
///
/// ```
/// use nb_aiopool::CommonAioPool;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = CommonAioPool::new(4, 16);
/// let mut group = pool.group().cancel_on_error(true);
/// group.submit(async { Err::<u32, &str>("bad input") }).await.unwrap();
/// group.submit(std::future::pending::<Result<u32, &str>>()).await.unwrap();
/// let results = group.join_all().await;
/// assert_eq!(results[0].as_ref().unwrap(), &Err("bad input"));
/// assert!(results[1].as_ref().unwrap_err().is_cancelled()); // aborted by the error
/// # }
/// ```
#[must_use = "dropping a TaskGroup aborts its tasks"]
pub struct TaskGroup<T> {
    pub(super) inner: Group<FutureJob, T>,
}

impl<T: Send + 'static> TaskGroup<T> {
    pub(crate) fn new(core: Core<FutureJob>) -> Self {
        TaskGroup {
            inner: Group::new(core),
        }
    }

    /// With `true`, the first task that panics aborts the others (see
    /// [Cancel on error](TaskGroup#cancel-on-error)). Default: `false`. For tasks returning
    /// a `Result`, [`cancel_on_error`](TaskGroup::cancel_on_error) also counts `Err`.
    ///
    /// Set it before submitting: it applies to the tasks submitted after it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(2, 2);
    /// let mut group = pool.group().cancel_on_panic(true);
    /// group.submit(async { panic!("boom") }).await.unwrap();
    /// group.submit(std::future::pending::<()>()).await.unwrap();
    /// let results = group.join_all().await;
    /// assert!(results[0].as_ref().unwrap_err().is_panic());
    /// assert!(results[1].as_ref().unwrap_err().is_cancelled());
    /// # }
    /// ```
    pub fn cancel_on_panic(mut self, enabled: bool) -> Self {
        self.inner
            .set_cancel(enabled.then_some((|_| false) as fn(&T) -> bool));
        self
    }

    /// Submits a future to the pool as a task of this group, waiting while the pool is
    /// full; returns the task's id.
    ///
    /// # Errors
    ///
    /// Gives the future back, unpolled, in a [`SubmitError`] if the pool is shut down (or,
    /// with cancel-on-error, a task of the group failed: kind
    /// [`Closed`](SubmitErrorKind::Closed)), if called from a job of the same pool
    /// while it is full, or if no runtime can run it
    /// ([`NoRuntime`](SubmitErrorKind::NoRuntime): called outside a runtime when the pool
    /// knows no live runtime, as the pool's own `submit`).
    ///
    /// With cancel-on-error, a submit waiting for room when a task of the group fails is
    /// refused then, with the future, whoever holds the room.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting for room, it submits nothing.
    ///
    /// The future moves into the allocation its task runs in at the call, as with the
    /// pool's own `submit`: the returned future holds a pointer to it, whatever its size.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(2, 2);
    /// let mut group = pool.group();
    /// let id = group.submit(async { 1 }).await.unwrap();
    /// println!("task {id}");
    /// assert_eq!(group.join_next().await.unwrap().unwrap(), 1);
    /// # }
    /// ```
    #[allow(clippy::manual_async_fn)] // declared `Send`, as the pool's `submit`
    #[inline]
    pub fn submit<F>(
        &mut self,
        fut: F,
    ) -> impl Future<Output = Result<TaskId, SubmitError<F>>> + Send + '_
    where
        F: Future<Output = T> + Send + 'static,
    {
        match self.inner.watch() {
            None => Either::Left(self.inner.submit(fut)),
            Some(watch) => {
                let key = watch.registered();
                let submit = self.inner.submit_watched(Watched::new(fut, watch), key);
                Either::Right(submit.map(|r| r.map_err(unwatched)))
            }
        }
    }

    /// Submits a future to the pool as a task of this group with per-task options
    /// ([`SubmitOptions`]: priority, weight, key, and a deadline for waiting for room),
    /// waiting while the pool is full; returns the task's id.
    ///
    /// The options work as with the pool's own
    /// [`CommonAioPool::submit_with`](crate::CommonAioPool::submit_with): the submit waits
    /// for room in line with its priority (a higher one gets the next room first; a plain
    /// [`submit`](Self::submit) waits with priority 0), the task is queued by its
    /// priority, counts against its key's `max_per_key` and the pool's `weight_capacity`
    /// beside every other task of the pool, and the deadline bounds only the wait for
    /// room. The task is then the group's as with `submit`: [`join_next`](Self::join_next)
    /// and [`join_all`](Self::join_all) return its result,
    /// [`abort_all`](Self::abort_all) and the group's drop abort it, and with
    /// cancel-on-error its failure aborts the group's other tasks.
    ///
    /// # Errors
    ///
    /// Gives the future back, unpolled, in a [`SubmitError`] as [`submit`](Self::submit)
    /// does ([`Closed`](SubmitErrorKind::Closed): the pool is shut down, or with
    /// cancel-on-error a task of the group failed, also while this submit waited for
    /// room), and as the pool's `submit_with` does:
    /// [`TimedOut`](SubmitErrorKind::TimedOut) when the options' timeout passes before
    /// there is room, [`TooHeavy`](SubmitErrorKind::TooHeavy) at once (at the first poll,
    /// without waiting) when the weight exceeds the pool's `weight_capacity`.
    ///
    /// # Panics
    ///
    /// With a timeout, if the submit has to wait for room, where no timer can be made, as
    /// the pool's [`submit_with`](crate::CommonAioPool::submit_with).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting for room, it submits nothing (the future is
    /// dropped with it, and the place in line goes to the next submitter).
    ///
    /// # Examples
    ///
    /// A crawler's group, at most one request per host at once:
    ///
    /// ```
    /// use nb_aiopool::{CommonAioPool, SubmitOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = CommonAioPool::builder().max_concurrency(8).max_per_key(1).build();
    /// let mut group = pool.group();
    /// for (host, path) in [("a.example", "/"), ("a.example", "/about"), ("b.example", "/")] {
    ///     let opts = SubmitOptions::new().key(host).priority(1);
    ///     group
    ///         .submit_with(async move { format!("{host}{path}") }, opts)
    ///         .await
    ///         .unwrap();
    /// }
    /// let pages: Vec<String> = group.join_all().await.into_iter().map(Result::unwrap).collect();
    /// assert_eq!(pages, ["a.example/", "a.example/about", "b.example/"]);
    /// # }
    /// ```
    #[allow(clippy::manual_async_fn)] // declared `Send`, as the pool's `submit_with`
    pub fn submit_with<F>(
        &mut self,
        fut: F,
        options: SubmitOptions,
    ) -> impl Future<Output = Result<TaskId, SubmitError<F>>> + Send + '_
    where
        F: Future<Output = T> + Send + 'static,
    {
        match self.inner.watch() {
            None => Either::Left(self.inner.submit_with(fut, options)),
            Some(watch) => {
                let key = watch.registered();
                let watched = Watched::new(fut, watch);
                let submit = self.inner.submit_watched_with(watched, key, options);
                Either::Right(submit.map(|r| r.map_err(unwatched)))
            }
        }
    }

    /// Submits a future as a task of this group if the pool has room now, without
    /// waiting.
    ///
    /// # Errors
    ///
    /// Gives the future back in a [`TrySubmitError`] if the pool is full or shut down (or,
    /// with cancel-on-error, a task of the group failed: "closed"), or if no runtime can
    /// run it ([`NoRuntime`](crate::TrySubmitErrorKind::NoRuntime): called from a plain
    /// thread after the pool's runtimes shut down, as the pool's own `try_submit`).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(1, 0);
    /// let mut group = pool.group();
    /// group.try_submit(std::future::pending::<()>()).unwrap();
    /// assert!(group.try_submit(async {}).unwrap_err().is_full());
    /// # }
    /// ```
    pub fn try_submit<F>(&mut self, fut: F) -> Result<TaskId, TrySubmitError<F>>
    where
        F: Future<Output = T> + Send + 'static,
    {
        self.try_submit_as(fut, Meta::default())
    }

    /// Submits a future as a task of this group with per-task options
    /// ([`SubmitOptions`]) if the pool has room now, without waiting (the options'
    /// timeout does not apply); the task is then the group's as with
    /// [`submit_with`](Self::submit_with).
    ///
    /// # Errors
    ///
    /// Gives the future back in a [`TrySubmitError`] as [`try_submit`](Self::try_submit)
    /// does ([`Full`](crate::TrySubmitErrorKind::Full),
    /// [`Closed`](crate::TrySubmitErrorKind::Closed) also when, with cancel-on-error, a
    /// task of the group failed, [`NoRuntime`](crate::TrySubmitErrorKind::NoRuntime)), and
    /// [`TooHeavy`](crate::TrySubmitErrorKind::TooHeavy) when the weight exceeds the pool's
    /// `weight_capacity`, as the pool's
    /// [`try_submit_with`](crate::CommonAioPool::try_submit_with).
    ///
    /// # Examples
    ///
    /// ```
    /// use nb_aiopool::{CommonAioPool, SubmitOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = CommonAioPool::builder().max_concurrency(1).max_queue_size(0).build();
    /// let mut group = pool.group();
    /// let opts = SubmitOptions::new().key("a.example");
    /// group.try_submit_with(std::future::pending::<()>(), opts.clone()).unwrap();
    /// assert!(group.try_submit_with(async {}, opts).unwrap_err().is_full());
    /// # }
    /// ```
    pub fn try_submit_with<F>(
        &mut self,
        fut: F,
        options: SubmitOptions,
    ) -> Result<TaskId, TrySubmitError<F>>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let meta = meta_of(&options);
        if let Err(kind) = self.inner.check_weight(&meta) {
            return Err(TrySubmitError::refused(kind, fut));
        }
        self.try_submit_as(fut, meta)
    }

    /// The body of [`try_submit`](Self::try_submit) (with `Meta::default()`, which
    /// needs no weight check: a weight of 1 always fits) and
    /// [`try_submit_with`](Self::try_submit_with).
    fn try_submit_as<F>(&mut self, fut: F, meta: Meta) -> Result<TaskId, TrySubmitError<F>>
    where
        F: Future<Output = T> + Send + 'static,
    {
        match self.inner.try_admit() {
            Ok(()) => self
                .push(fut, meta)
                .map_err(|e| TrySubmitError::refused(e.kind(), e.into_inner())),
            Err(AdmitError::Full) => Err(TrySubmitError::full(fut)),
            Err(AdmitError::Closed) => Err(TrySubmitError::refused(SubmitErrorKind::Closed, fut)),
        }
    }

    fn push<F>(&mut self, fut: F, meta: Meta) -> Result<TaskId, PushError<F>>
    where
        F: Future<Output = T> + Send + 'static,
    {
        match self.inner.watch() {
            None => self.inner.push(fut, meta, None),
            Some(watch) => {
                let key = Some(watch.registered());
                self.inner
                    .push(Watched::new(fut, watch), meta, key)
                    .map_err(|e| e.map(|w| w.fut.expect("a refused task was never polled")))
            }
        }
    }

    /// Waits for the next task of the group to finish and returns its result, as tasks
    /// complete; `None` when the group is empty.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if dropped before it returns, no result is lost.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(2, 2);
    /// let mut group = pool.group();
    /// group.submit(async { 1 }).await.unwrap();
    /// group.submit(async { 2 }).await.unwrap();
    /// let mut sum = 0;
    /// while let Some(r) = group.join_next().await {
    ///     sum += r.unwrap();
    /// }
    /// assert_eq!(sum, 3);
    /// # }
    /// ```
    pub async fn join_next(&mut self) -> Option<Result<T, TaskError>> {
        std::future::poll_fn(|cx| self.inner.poll_join_next(cx)).await
    }

    /// Polls for the next result, as [`join_next`](Self::join_next) does, for code that
    /// writes its own futures.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(2, 2);
    /// let mut group = pool.group();
    /// group.submit(async { 5 }).await.unwrap();
    /// let r = std::future::poll_fn(|cx| group.poll_join_next(cx)).await;
    /// assert_eq!(r.unwrap().unwrap(), 5);
    /// # }
    /// ```
    pub fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, TaskError>>> {
        self.inner.poll_join_next(cx)
    }

    /// As [`join_next`](Self::join_next), with the id of the task the result is of: the
    /// [`TaskId`] that [`submit`](Self::submit) returned for it, so that a result (an
    /// error above all: a [`TaskError`] carries no id) can be matched with what was
    /// submitted, as with tokio's `JoinSet::join_next_with_id`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if dropped before it returns, no result is lost.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(2, 4);
    /// let mut group = pool.group();
    /// let mut urls = HashMap::new();
    /// for url in ["a.example", "b.example"] {
    ///     let id = group
    ///         .submit(async move { if url.starts_with('b') { Err("timeout") } else { Ok(200) } })
    ///         .await
    ///         .unwrap();
    ///     urls.insert(id, url);
    /// }
    /// let mut failed = Vec::new();
    /// while let Some((id, r)) = group.join_next_with_id().await {
    ///     if let Ok(Err(_)) = r {
    ///         failed.push(urls[&id]);
    ///     }
    /// }
    /// assert_eq!(failed, ["b.example"]);
    /// # }
    /// ```
    pub async fn join_next_with_id(&mut self) -> Option<(TaskId, Result<T, TaskError>)> {
        std::future::poll_fn(|cx| self.inner.poll_join_next_with_id(cx)).await
    }

    /// Polls for the next result with its task's id, as
    /// [`join_next_with_id`](Self::join_next_with_id) does, for code that writes its own
    /// futures.
    pub fn poll_join_next_with_id(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(TaskId, Result<T, TaskError>)>> {
        self.inner.poll_join_next_with_id(cx)
    }

    /// Waits for every task of the group and returns their results in submission order
    /// (the tasks already taken by [`join_next`](Self::join_next) left out).
    ///
    /// The handles of the tasks submitted since the last `join_next` are awaited in
    /// submission order, unless the returned future is first polled inside a task of the
    /// group's own pool (then they are polled together, as `join_next` does, for the
    /// pool's nested-wait check). In order, a task that ends before an earlier one keeps
    /// its result, and the memory its handle pins (the crate docs' "Memory"), until the
    /// earlier ones are in; it costs about a fifth less per task than polling them
    /// together (BENCHMARKS.md, "2026-12-04, night").
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe by design: dropping the future drops the group, which aborts the
    /// tasks not finished yet (results already gathered are lost too: dropped, one whose
    /// `Drop` panics quietly, as the group drops its results).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(2, 8);
    /// let mut group = pool.group();
    /// for i in 0..5 {
    ///     group.submit(async move { i }).await.unwrap();
    /// }
    /// let all: Vec<i32> = group.join_all().await.into_iter().map(Result::unwrap).collect();
    /// assert_eq!(all, [0, 1, 2, 3, 4]);
    /// # }
    /// ```
    pub async fn join_all(self) -> Vec<Result<T, TaskError>> {
        self.inner.join_all().await
    }

    /// How many tasks of the group have not been joined yet (running, queued, or
    /// finished with a result not yet taken).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(2, 2);
    /// let mut group = pool.group();
    /// assert!(group.is_empty());
    /// group.submit(async {}).await.unwrap();
    /// assert_eq!(group.len(), 1);
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Returns `true` if the group holds no task that has not been joined.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(2, 2);
    /// let mut group = pool.group();
    /// group.submit(async {}).await.unwrap();
    /// group.join_next().await.unwrap().unwrap();
    /// assert!(group.is_empty());
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.inner.len() == 0
    }

    /// Aborts every unfinished task of the group (see [`TaskHandle::abort`](crate::TaskHandle::abort)); their
    /// results, still to be joined, are [`CancelReason::Aborted`](crate::CancelReason::Aborted)
    /// errors (but for a running task a `cancel_all` or a shutdown deadline covered first,
    /// whose result keeps that call's reason, as `TaskHandle::abort` says; and but for the
    /// task whose failure tripped a cancel-on-error group, which keeps its own result, also
    /// while its handle has not resolved yet). The group stays usable.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(2, 2);
    /// let mut group = pool.group();
    /// group.submit(std::future::pending::<()>()).await.unwrap();
    /// group.abort_all();
    /// assert!(group.join_next().await.unwrap().unwrap_err().is_cancelled());
    /// # }
    /// ```
    pub fn abort_all(&self) {
        self.inner.abort_all();
    }
}

impl<T: Send + 'static, E: Send + 'static> TaskGroup<Result<T, E>> {
    /// With `true`, the first task that returns `Err` or panics aborts the others (see
    /// [Cancel on error](TaskGroup#cancel-on-error)). Default: `false`.
    ///
    /// Set it before submitting: it applies to the tasks submitted after it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::CommonAioPool::new(4, 4);
    /// let mut group = pool.group().cancel_on_error(true);
    /// group.submit(async { Ok::<_, String>(1) }).await.unwrap();
    /// group.submit(async { Err::<i32, _>("no".to_string()) }).await.unwrap();
    /// let results = group.join_all().await;
    /// assert_eq!(results[1].as_ref().unwrap(), &Err("no".to_string()));
    /// # }
    /// ```
    pub fn cancel_on_error(mut self, enabled: bool) -> Self {
        let is_error: fn(&Result<T, E>) -> bool = Result::is_err;
        self.inner.set_cancel(enabled.then_some(is_error));
        self
    }
}

// Its pool's core and its tasks' handles, each unwind safe (see `TaskHandle` and the
// pools): no user callback is kept.
impl<T> std::panic::UnwindSafe for TaskGroup<T> {}
impl<T> std::panic::RefUnwindSafe for TaskGroup<T> {}

impl<T> fmt::Debug for TaskGroup<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}
