//! The private core of the two future-taking pools ([`CommonAioPool`](crate::CommonAioPool)
//! and [`NoQueueAioPool`](crate::NoQueueAioPool)): their jobs and submit paths, and the
//! batch helpers every pool shares.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::engine::{Config, DropHook, Engine, Job, PushError};
use crate::error::{CancelReason, RunError, SubmitError, TaskError, TrySubmitError};
use crate::task::{BoxRun, Run, Shared, TaskHandle};

/// A future job: its run, boxed once at submit.
pub(crate) struct FutureJob(BoxRun);

impl Job for FutureJob {
    const RERUN: bool = false;

    fn keep(&self) -> Option<Self> {
        None
    }

    fn start(self) -> BoxRun {
        self.0
    }

    fn cancel(mut self, reason: CancelReason) {
        self.0.as_mut().cancel(reason);
        self.0.as_mut().publish_locked().fire();
    }
}

/// The submit paths shared by [`CommonAioPool`](crate::CommonAioPool) and
/// [`NoQueueAioPool`](crate::NoQueueAioPool).
pub(crate) struct FuturePool {
    pub(crate) engine: Arc<Engine<FutureJob>>,
}

impl FuturePool {
    #[track_caller]
    pub(crate) fn new(config: Config, on_drop: Option<DropHook>) -> Self {
        FuturePool {
            engine: Arc::new(Engine::new(config, on_drop)),
        }
    }

    /// Pushes an admitted future; gives it back if the pool closed meanwhile or no
    /// runtime can run it.
    fn push<F>(&self, fut: F) -> Result<TaskHandle<F::Output>, PushError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let shared = Arc::new(Shared::new(self.engine.id()));
        let handle = TaskHandle::new(shared.clone());
        self.engine.push(fut, |fut, job| {
            // Relaxed: read back only through the handle this submit returns.
            shared.job.store(job, Ordering::Relaxed);
            // Built only once the pool has accepted the job, so a rejected future comes
            // back untouched.
            FutureJob(Box::pin(Run::new(fut, shared)))
        })?;
        Ok(handle)
    }

    pub(crate) async fn submit<F>(&self, fut: F) -> Result<TaskHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.engine.admit_submit().await {
            Ok(()) => self.push(fut).map_err(SubmitError::from_push),
            Err(kind) => Err(SubmitError::new(kind, fut)),
        }
    }

    #[track_caller]
    pub(crate) fn try_submit<F>(&self, fut: F) -> Result<TaskHandle<F::Output>, TrySubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.engine.try_admit() {
            Ok(()) => self.push(fut).map_err(TrySubmitError::from_push),
            Err(err) => Err(TrySubmitError::from_admit(err, fut)),
        }
    }

    #[track_caller]
    pub(crate) fn blocking_submit<F>(&self, fut: F) -> Result<TaskHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.engine.admit_blocking() {
            Ok(()) => self.push(fut).map_err(SubmitError::from_push),
            Err(kind) => Err(SubmitError::new(kind, fut)),
        }
    }

    pub(crate) async fn run<F>(&self, fut: F) -> Result<F::Output, RunError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Ok(self.submit(fut).await?.await?)
    }

    pub(crate) async fn batch_submit<I>(
        &self,
        futs: I,
    ) -> Result<Vec<TaskHandle<<I::Item as Future>::Output>>, SubmitError<I::Item>>
    where
        I: IntoIterator,
        I::Item: Future + Send + 'static,
        <I::Item as Future>::Output: Send + 'static,
    {
        submit_in_order(futs, |fut| self.submit(fut)).await
    }
}

/// Submits items one after the other with `submit`, stopping at the first rejection: the
/// shared body of every `batch_submit`.
pub(crate) async fn submit_in_order<I, H, E, S, Fut>(items: I, mut submit: S) -> Result<Vec<H>, E>
where
    I: IntoIterator,
    S: FnMut(I::Item) -> Fut,
    Fut: Future<Output = Result<H, E>>,
{
    let items = items.into_iter();
    let mut handles = Vec::with_capacity(items.size_hint().0);
    for item in items {
        handles.push(submit(item).await?);
    }
    Ok(handles)
}

/// Awaits handles in order: the shared tail of every `batch_run`.
pub(crate) async fn join_in_order<T>(handles: Vec<TaskHandle<T>>) -> Vec<Result<T, TaskError>> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await);
    }
    out
}

/// Generates the submit API that [`CommonAioPool`](crate::CommonAioPool) and
/// [`NoQueueAioPool`](crate::NoQueueAioPool) share; `$big` and `$tiny` construct a pool for
/// the doc examples (`$tiny` has one slot and no queue).
macro_rules! future_pool_api {
    ($ty:ident, $big:literal, $tiny:literal) => {
        impl $ty {
            /// Submits a future, waiting while the pool is full, and returns a handle to its
            /// result.
            ///
            /// The future starts when a slot is free, in submission order. Dropping the returned
            /// handle detaches the job; it still runs.
            ///
            /// # Errors
            ///
            /// Gives the future back, unpolled, in a [`SubmitError`](crate::SubmitError) if the pool is shut down, or
            /// if this is called from a job of this same pool while the pool is full (waiting would
            /// deadlock).
            ///
            /// # Cancel safety
            ///
            /// Cancel safe: if the returned future is dropped while waiting for room, nothing is
            /// queued and the submitted future is dropped with it.
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() {
            #[doc = concat!("use nb_aiopool::", stringify!($ty), ";")]
            ///
            #[doc = concat!("let pool = ", $big, ";")]
            /// let handle = pool.submit(async { "hello" }).await.unwrap();
            /// assert_eq!(handle.await.unwrap(), "hello");
            /// # }
            /// ```
            pub async fn submit<F>(
                &self,
                fut: F,
            ) -> Result<$crate::TaskHandle<F::Output>, $crate::SubmitError<F>>
            where
                F: ::std::future::Future + Send + 'static,
                F::Output: Send + 'static,
            {
                self.pool().submit(fut).await
            }

            /// Submits a future if there is room now, without waiting.
            ///
            /// # Errors
            ///
            /// Gives the future back in a [`TrySubmitError`](crate::TrySubmitError) if the pool is full or shut down.
            ///
            /// # Panics
            ///
            /// Panics if the pool has never been used inside a tokio runtime and none is current.
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() {
            #[doc = concat!("use nb_aiopool::", stringify!($ty), ";")]
            ///
            #[doc = concat!("let pool = ", $tiny, ";")]
            /// let _busy = pool.try_submit(std::future::pending::<()>()).unwrap();
            /// let err = pool.try_submit(async {}).unwrap_err();
            /// assert!(err.is_full());
            /// # }
            /// ```
            #[track_caller]
            pub fn try_submit<F>(
                &self,
                fut: F,
            ) -> Result<$crate::TaskHandle<F::Output>, $crate::TrySubmitError<F>>
            where
                F: ::std::future::Future + Send + 'static,
                F::Output: Send + 'static,
            {
                self.pool().try_submit(fut)
            }

            /// Submits a future from a thread that is not async, blocking it while the pool is
            /// full.
            ///
            /// # Errors
            ///
            /// Gives the future back in a [`SubmitError`](crate::SubmitError) if the pool is shut down.
            ///
            /// # Panics
            ///
            /// Panics if called from a thread with a tokio runtime context (an async task,
            /// `block_on` or `spawn_blocking`), where blocking can deadlock; use
            /// [`submit`](Self::submit) there. Panics if the pool has never been used inside a
            /// runtime (it needs one to run on).
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use nb_aiopool::", stringify!($ty), ";")]
            ///
            /// let rt = tokio::runtime::Runtime::new().unwrap();
            #[doc = concat!("let pool = ", $big, ";")]
            /// rt.block_on(pool.run(async {})).unwrap(); // starts the pool on `rt`
            ///
            /// let producer = {
            ///     let pool = pool.clone();
            ///     std::thread::spawn(move || {
            ///         let handles: Vec<_> = (0..100)
            ///             .map(|i| pool.blocking_submit(async move { i }).unwrap())
            ///             .collect();
            ///         handles.into_iter().map(|h| h.blocking_wait().unwrap()).sum::<i32>()
            ///     })
            /// };
            /// assert_eq!(producer.join().unwrap(), 4950);
            /// ```
            #[track_caller]
            pub fn blocking_submit<F>(
                &self,
                fut: F,
            ) -> Result<$crate::TaskHandle<F::Output>, $crate::SubmitError<F>>
            where
                F: ::std::future::Future + Send + 'static,
                F::Output: Send + 'static,
            {
                self.pool().blocking_submit(fut)
            }

            /// Submits a future and waits for its result: `submit(fut).await?.await`.
            ///
            /// # Errors
            ///
            /// [`RunError::Rejected`](crate::RunError::Rejected) if the pool refused the future (it is inside),
            /// [`RunError::Failed`](crate::RunError::Failed) if the job panicked or was cancelled.
            ///
            /// # Cancel safety
            ///
            /// Dropping the future while it waits for room queues nothing; dropping it after the
            /// job was queued detaches the job, which still runs.
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() {
            #[doc = concat!("use nb_aiopool::", stringify!($ty), ";")]
            ///
            #[doc = concat!("let pool = ", $big, ";")]
            /// assert_eq!(pool.run(async { 1 + 1 }).await.unwrap(), 2);
            /// # }
            /// ```
            pub async fn run<F>(&self, fut: F) -> Result<F::Output, $crate::RunError<F>>
            where
                F: ::std::future::Future + Send + 'static,
                F::Output: Send + 'static,
            {
                self.pool().run(fut).await
            }

            /// Submits every future of `futs` in order, with the same backpressure as
            /// [`submit`](Self::submit), and returns their handles in input order.
            ///
            /// # Errors
            ///
            /// Stops at the first rejected future and gives it back; the ones before it stay
            /// submitted (their handles are dropped, so they run detached) and the rest of the
            /// iterator is dropped.
            ///
            /// # Cancel safety
            ///
            /// Not cancel safe: dropping the future part-way leaves the futures already submitted
            /// running, detached, and drops the others.
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() {
            #[doc = concat!("use nb_aiopool::", stringify!($ty), ";")]
            ///
            #[doc = concat!("let pool = ", $big, ";")]
            /// let handles = pool.batch_submit((0..5).map(|i| async move { i })).await.unwrap();
            /// assert_eq!(handles.len(), 5);
            /// # }
            /// ```
            pub async fn batch_submit<I>(
                &self,
                futs: I,
            ) -> Result<
                Vec<$crate::TaskHandle<<I::Item as ::std::future::Future>::Output>>,
                $crate::SubmitError<I::Item>,
            >
            where
                I: IntoIterator,
                I::Item: ::std::future::Future + Send + 'static,
                <I::Item as ::std::future::Future>::Output: Send + 'static,
            {
                self.pool().batch_submit(futs).await
            }

            /// Submits every future of `futs` (as [`batch_submit`](Self::batch_submit)) and waits
            /// for all of them; results come back in input order.
            ///
            /// # Errors
            ///
            /// As [`batch_submit`](Self::batch_submit) if a future is rejected; otherwise each
            /// job's own result or [`TaskError`](crate::TaskError) is in the returned vector.
            ///
            /// # Cancel safety
            ///
            /// Not cancel safe, as [`batch_submit`](Self::batch_submit); jobs already submitted
            /// keep running, detached.
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() {
            #[doc = concat!("use nb_aiopool::", stringify!($ty), ";")]
            ///
            #[doc = concat!("let pool = ", $big, ";")]
            /// let results = pool.batch_run((0..5).map(|i| async move { i * 10 })).await.unwrap();
            /// let values: Vec<i32> = results.into_iter().map(Result::unwrap).collect();
            /// assert_eq!(values, [0, 10, 20, 30, 40]);
            /// # }
            /// ```
            pub async fn batch_run<I>(
                &self,
                futs: I,
            ) -> Result<
                Vec<Result<<I::Item as ::std::future::Future>::Output, $crate::TaskError>>,
                $crate::SubmitError<I::Item>,
            >
            where
                I: IntoIterator,
                I::Item: ::std::future::Future + Send + 'static,
                <I::Item as ::std::future::Future>::Output: Send + 'static,
            {
                Ok($crate::pool::future_pool::join_in_order(self.batch_submit(futs).await?).await)
            }

            /// A snapshot of the pool's counters.
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("let pool = nb_aiopool::", $big, ";")]
            /// assert_eq!(pool.stats().submitted, 0);
            /// ```
            pub fn stats(&self) -> $crate::PoolStats {
                self.pool().engine.stats()
            }

            /// Returns `true` once the pool is shut down (it accepts no more jobs).
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() {
            #[doc = concat!("let pool = nb_aiopool::", $big, ";")]
            /// assert!(!pool.is_closed());
            /// pool.shutdown().await;
            /// assert!(pool.is_closed());
            /// # }
            /// ```
            pub fn is_closed(&self) -> bool {
                self.pool().engine.is_closed()
            }

            /// The most jobs that run at once.
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("let pool = nb_aiopool::", $big, ";")]
            /// assert_eq!(pool.max_concurrency(), 4);
            /// ```
            pub fn max_concurrency(&self) -> usize {
                self.pool().engine.max_concurrency()
            }
        }
    };
}

pub(crate) use future_pool_api;
