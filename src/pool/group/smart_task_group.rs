//! [`SmartTaskGroup`]: a set of recipes submitted to one [`SmartAioPool`](crate::SmartAioPool),
//! over the generic [`Group`].

use std::fmt;
use std::future::Future;
use std::task::{Context, Poll};

use futures_util::future::{Either, FutureExt};

use super::super::core::{meta_of, Core};
use super::super::recipe::SmartJob;
use super::{Group, WatchedRecipe};
use crate::engine::{AdmitError, Meta, PushError};
use crate::error::{SubmitError, SubmitErrorKind, TaskError, TrySubmitError};
use crate::options::SubmitOptions;
use crate::task::TaskId;

/// A set of recipes submitted to one [`SmartAioPool`](crate::SmartAioPool): [`TaskGroup`](crate::TaskGroup)'s API in recipe form;
/// made by [`SmartAioPool::group`](crate::SmartAioPool::group).
///
/// Everything [`TaskGroup`](crate::TaskGroup) says holds, with recipes (`Fn() -> Future`) where it takes
/// futures; a task re-run at exit (see [Shutdown](crate::SmartAioPool#shutdown)) stays one task of
/// the group. With cancel-on-error, a recipe that panics when called counts as a failed
/// task.
///
/// # Dropping
///
/// Dropping the group **aborts** its unfinished tasks, as [`TaskGroup`](crate::TaskGroup) does; an aborted
/// task is not re-run at exit, nor reported by the exit as cut or held back. So a group
/// that is a local of `main` is dropped when `main` returns (before the runtime is), and
/// its unfinished tasks are aborted, not finished at the exit; `std::process::exit`
/// drops nothing, so there they are finished. To have them finished either way, join
/// the group before returning, or submit with the pool's own `submit` and detach.
/// (The same for a map stream, and a `batch_run` future.)
///
/// # Examples
///
/// ```
/// use nb_aiopool::SmartAioPool;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = SmartAioPool::new(4);
/// let mut group = pool.group().cancel_on_error(true);
/// for i in 0..5 {
///     group.submit(move || async move { Ok::<i32, String>(i * 2) }).await.unwrap();
/// }
/// let values: Vec<i32> = group
///     .join_all()
///     .await
///     .into_iter()
///     .map(|r| r.unwrap().unwrap())
///     .collect();
/// assert_eq!(values, [0, 2, 4, 6, 8]);
/// # }
/// ```
#[must_use = "dropping a SmartTaskGroup aborts its tasks"]
pub struct SmartTaskGroup<T> {
    inner: Group<SmartJob, T>,
}

impl<T: Send + 'static> SmartTaskGroup<T> {
    pub(crate) fn new(core: Core<SmartJob>) -> Self {
        SmartTaskGroup {
            inner: Group::new(core),
        }
    }

    /// With `true`, the first task that panics aborts the others, as
    /// [`TaskGroup::cancel_on_panic`](crate::TaskGroup::cancel_on_panic). Default: `false`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(2);
    /// let mut group = pool.group().cancel_on_panic(true);
    /// group.submit(|| async { panic!("boom") }).await.unwrap();
    /// group.submit(std::future::pending::<()>).await.unwrap();
    /// let results = group.join_all().await;
    /// assert!(results[1].as_ref().unwrap_err().is_cancelled());
    /// # }
    /// ```
    pub fn cancel_on_panic(mut self, enabled: bool) -> Self {
        self.inner
            .set_cancel(enabled.then_some((|_| false) as fn(&T) -> bool));
        self
    }

    /// Submits a recipe as a task of this group, waiting while the pool is full; returns
    /// the task's id.
    ///
    /// # Errors
    ///
    /// As [`TaskGroup::submit`](crate::TaskGroup::submit); the recipe comes back.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting for room, it submits nothing.
    ///
    /// The recipe moves into the allocation of its task at the call, as with the pool's
    /// own `submit`: the returned future holds a pointer to it, whatever its size.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(2);
    /// let mut group = pool.group();
    /// group.submit(|| async { 7 }).await.unwrap();
    /// assert_eq!(group.join_next().await.unwrap().unwrap(), 7);
    /// # }
    /// ```
    #[allow(clippy::manual_async_fn)] // declared `Send`, as the pool's `submit`
    #[inline]
    pub fn submit<R, Fut>(
        &mut self,
        recipe: R,
    ) -> impl Future<Output = Result<TaskId, SubmitError<R>>> + Send + '_
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        // Made ready at the call, as `TaskGroup::submit`: the future holds a pointer.
        match self.inner.watch() {
            None => Either::Left(self.inner.submit(recipe)),
            Some(watch) => {
                let key = watch.registered();
                let submit = self
                    .inner
                    .submit_watched(WatchedRecipe { recipe, watch }, key);
                Either::Right(submit.map(|r| r.map_err(unwatched_recipe)))
            }
        }
    }

    /// Submits a recipe as a task of this group with per-task options
    /// ([`SubmitOptions`]: priority, weight, key, and a deadline for waiting for room),
    /// waiting while the pool is full; returns the task's id.
    ///
    /// As [`TaskGroup::submit_with`](crate::TaskGroup::submit_with), with a recipe: the
    /// options work as with the pool's own
    /// [`SmartAioPool::submit_with`](crate::SmartAioPool::submit_with), and the task is the
    /// group's. A run re-run at exit or after its runtime ended keeps the task's options:
    /// its priority in the queue, its weight, and its place under its key's
    /// `max_per_key`.
    ///
    /// # Errors
    ///
    /// As [`TaskGroup::submit_with`](crate::TaskGroup::submit_with)
    /// ([`Closed`](SubmitErrorKind::Closed), [`TimedOut`](SubmitErrorKind::TimedOut),
    /// [`TooHeavy`](SubmitErrorKind::TooHeavy) at once, ...); the recipe comes back,
    /// never called.
    ///
    /// # Panics
    ///
    /// With a timeout, if the submit has to wait for room, where no timer can be made, as
    /// the pool's [`submit_with`](crate::SmartAioPool::submit_with).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting for room, it submits nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use nb_aiopool::{SmartAioPool, SubmitOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = SmartAioPool::builder().max_concurrency(8).max_per_key(2).build();
    /// let mut group = pool.group();
    /// for host in ["a.example", "a.example", "b.example"] {
    ///     let opts = SubmitOptions::new().key(host);
    ///     group.submit_with(move || async move { host.len() }, opts).await.unwrap();
    /// }
    /// let lens: Vec<usize> = group.join_all().await.into_iter().map(Result::unwrap).collect();
    /// assert_eq!(lens, [9, 9, 9]);
    /// # }
    /// ```
    #[allow(clippy::manual_async_fn)] // declared `Send`, as the pool's `submit_with`
    pub fn submit_with<R, Fut>(
        &mut self,
        recipe: R,
        options: SubmitOptions,
    ) -> impl Future<Output = Result<TaskId, SubmitError<R>>> + Send + '_
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        match self.inner.watch() {
            None => Either::Left(self.inner.submit_with(recipe, options)),
            Some(watch) => {
                let key = watch.registered();
                let watched = WatchedRecipe { recipe, watch };
                let submit = self.inner.submit_watched_with(watched, key, options);
                Either::Right(submit.map(|r| r.map_err(unwatched_recipe)))
            }
        }
    }

    /// Submits a recipe as a task of this group if the pool has room now.
    ///
    /// # Errors
    ///
    /// As [`TaskGroup::try_submit`](crate::TaskGroup::try_submit); the recipe comes back.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(2);
    /// let mut group = pool.group();
    /// group.try_submit(|| async { 1 }).unwrap();
    /// assert_eq!(group.join_all().await.len(), 1);
    /// # }
    /// ```
    pub fn try_submit<R, Fut>(&mut self, recipe: R) -> Result<TaskId, TrySubmitError<R>>
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.try_submit_as(recipe, Meta::default())
    }

    /// Submits a recipe as a task of this group with per-task options if the pool has
    /// room now, without waiting (the options' timeout does not apply).
    ///
    /// # Errors
    ///
    /// As [`TaskGroup::try_submit_with`](crate::TaskGroup::try_submit_with) (`Full`,
    /// `Closed`, `NoRuntime`, `TooHeavy`); the recipe comes back.
    ///
    /// # Examples
    ///
    /// ```
    /// use nb_aiopool::{SmartAioPool, SubmitOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = SmartAioPool::builder().max_concurrency(2).max_per_key(1).build();
    /// let mut group = pool.group();
    /// let opts = SubmitOptions::new().key("a.example").priority(3);
    /// group.try_submit_with(|| async { 1 }, opts).unwrap();
    /// assert_eq!(group.join_next().await.unwrap().unwrap(), 1);
    /// # }
    /// ```
    pub fn try_submit_with<R, Fut>(
        &mut self,
        recipe: R,
        options: SubmitOptions,
    ) -> Result<TaskId, TrySubmitError<R>>
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let meta = meta_of(&options);
        if let Err(kind) = self.inner.check_weight(&meta) {
            return Err(TrySubmitError::refused(kind, recipe));
        }
        self.try_submit_as(recipe, meta)
    }

    /// The body of [`try_submit`](Self::try_submit) (with `Meta::default()`, which needs
    /// no weight check) and [`try_submit_with`](Self::try_submit_with).
    fn try_submit_as<R, Fut>(&mut self, recipe: R, meta: Meta) -> Result<TaskId, TrySubmitError<R>>
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        match self.inner.try_admit() {
            Ok(()) => self
                .push(recipe, meta)
                .map_err(|e| TrySubmitError::refused(e.kind(), e.into_inner())),
            Err(AdmitError::Full) => Err(TrySubmitError::full(recipe)),
            Err(AdmitError::Closed) => {
                Err(TrySubmitError::refused(SubmitErrorKind::Closed, recipe))
            }
        }
    }

    fn push<R, Fut>(&mut self, recipe: R, meta: Meta) -> Result<TaskId, PushError<R>>
    where
        R: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        match self.inner.watch() {
            None => self.inner.push(recipe, meta, None),
            Some(watch) => {
                let key = Some(watch.registered());
                self.inner
                    .push(WatchedRecipe { recipe, watch }, meta, key)
                    .map_err(|e| e.map(|w| w.recipe))
            }
        }
    }

    /// As [`TaskGroup::join_next`](crate::TaskGroup::join_next).
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
    /// let pool = nb_aiopool::SmartAioPool::new(2);
    /// let mut group = pool.group();
    /// group.submit(|| async { 1 }).await.unwrap();
    /// assert_eq!(group.join_next().await.unwrap().unwrap(), 1);
    /// assert!(group.join_next().await.is_none());
    /// # }
    /// ```
    pub async fn join_next(&mut self) -> Option<Result<T, TaskError>> {
        std::future::poll_fn(|cx| self.inner.poll_join_next(cx)).await
    }

    /// As [`TaskGroup::poll_join_next`](crate::TaskGroup::poll_join_next).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(2);
    /// let mut group = pool.group();
    /// group.submit(|| async { 5 }).await.unwrap();
    /// let r = std::future::poll_fn(|cx| group.poll_join_next(cx)).await;
    /// assert_eq!(r.unwrap().unwrap(), 5);
    /// # }
    /// ```
    pub fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, TaskError>>> {
        self.inner.poll_join_next(cx)
    }

    /// As [`TaskGroup::join_next_with_id`](crate::TaskGroup::join_next_with_id): the next result with the id
    /// [`submit`](Self::submit) returned for its task.
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
    /// let pool = nb_aiopool::SmartAioPool::new(2);
    /// let mut group = pool.group();
    /// let id = group.submit(|| async { 1 }).await.unwrap();
    /// assert_eq!(group.join_next_with_id().await.map(|(id, r)| (id, r.unwrap())), Some((id, 1)));
    /// # }
    /// ```
    pub async fn join_next_with_id(&mut self) -> Option<(TaskId, Result<T, TaskError>)> {
        std::future::poll_fn(|cx| self.inner.poll_join_next_with_id(cx)).await
    }

    /// As [`TaskGroup::poll_join_next_with_id`](crate::TaskGroup::poll_join_next_with_id).
    pub fn poll_join_next_with_id(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(TaskId, Result<T, TaskError>)>> {
        self.inner.poll_join_next_with_id(cx)
    }

    /// As [`TaskGroup::join_all`](crate::TaskGroup::join_all): every remaining result, in submission order.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe by design: dropping the future drops the group, which aborts the
    /// tasks not finished yet.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(2);
    /// let mut group = pool.group();
    /// for i in 0..3 {
    ///     group.submit(move || async move { i }).await.unwrap();
    /// }
    /// let all: Vec<i32> = group.join_all().await.into_iter().map(Result::unwrap).collect();
    /// assert_eq!(all, [0, 1, 2]);
    /// # }
    /// ```
    pub async fn join_all(self) -> Vec<Result<T, TaskError>> {
        self.inner.join_all().await
    }

    /// As [`TaskGroup::len`](crate::TaskGroup::len): tasks not joined yet.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(2);
    /// let mut group = pool.group();
    /// group.submit(|| async {}).await.unwrap();
    /// assert_eq!(group.len(), 1);
    /// group.join_next().await.unwrap().unwrap();
    /// assert!(group.is_empty());
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// As [`TaskGroup::is_empty`](crate::TaskGroup::is_empty).
    pub fn is_empty(&self) -> bool {
        self.inner.len() == 0
    }

    /// As [`TaskGroup::abort_all`](crate::TaskGroup::abort_all): aborted tasks are not re-run at exit.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(2);
    /// let mut group = pool.group();
    /// group.submit(std::future::pending::<()>).await.unwrap();
    /// group.abort_all();
    /// assert!(group.join_next().await.unwrap().unwrap_err().is_cancelled());
    /// # }
    /// ```
    pub fn abort_all(&self) {
        self.inner.abort_all();
    }
}

impl<T: Send + 'static, E: Send + 'static> SmartTaskGroup<Result<T, E>> {
    /// With `true`, the first task that returns `Err` or panics aborts the others, as
    /// [`TaskGroup::cancel_on_error`](crate::TaskGroup::cancel_on_error). Default: `false`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = nb_aiopool::SmartAioPool::new(2);
    /// let mut group = pool.group().cancel_on_error(true);
    /// group.submit(|| async { Err::<(), _>("no") }).await.unwrap();
    /// group.submit(std::future::pending::<Result<(), &str>>).await.unwrap();
    /// let results = group.join_all().await;
    /// assert!(results[1].as_ref().unwrap_err().is_cancelled());
    /// # }
    /// ```
    pub fn cancel_on_error(mut self, enabled: bool) -> Self {
        let is_error: fn(&Result<T, E>) -> bool = Result::is_err;
        self.inner.set_cancel(enabled.then_some(is_error));
        self
    }
}

/// A refused watched recipe's error, with the recipe unwrapped (never called).
fn unwatched_recipe<R, T>(e: SubmitError<WatchedRecipe<R, T>>) -> SubmitError<R> {
    let kind = e.kind();
    SubmitError::new(kind, e.into_inner().recipe)
}

// Its pool's core and its tasks' handles, each unwind safe (see `TaskHandle` and the
// pools): no user callback is kept.
impl<T> std::panic::UnwindSafe for SmartTaskGroup<T> {}
impl<T> std::panic::RefUnwindSafe for SmartTaskGroup<T> {}

impl<T> fmt::Debug for SmartTaskGroup<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Smart")?;
        fmt::Debug::fmt(&self.inner, f)
    }
}
