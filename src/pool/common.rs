//! [`CommonAioPool`]: a bounded FIFO queue in front of a fixed number of running slots.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::future_pool::{future_pool_api, FuturePool};
use super::registry::{self, PoolKind};
use crate::engine::Config;
use crate::stats::ShutdownReport;

/// A pool that runs at most `max_concurrency` futures at once and holds at most
/// `max_queue_size` more in a FIFO queue; submitting waits while both are full.
///
/// This is the seed's `CommonAioPool`: the pool to reach for when a loop must push millions
/// of jobs through a bounded number of slots. `submit(fut).await` returns as soon as the
/// job is queued, with a [`TaskHandle`](crate::TaskHandle) to its result; when the queue is full it waits,
/// which slows the producer down to the pool's pace (backpressure), so memory stays flat
/// however many jobs go through.
///
/// Jobs are not one tokio task each: a few long-lived driver tasks (one per runtime worker
/// thread) poll the running jobs, so a job costs far less than a `tokio::spawn`, and every
/// runtime thread takes part.
///
/// # Queue size 0
///
/// `max_queue_size == 0` means *no waiting room*: a submit waits until a slot is free (the
/// behaviour of [`NoQueueAioPool`](crate::NoQueueAioPool)). It never means "unbounded".
///
/// # Runtime
///
/// A pool can be created outside any runtime (in a `static`, for example); its drivers
/// start on the runtime of its first submit. If that runtime shuts down while jobs are
/// queued or running, they are cancelled with
/// [`CancelReason::RuntimeShutdown`](crate::CancelReason::RuntimeShutdown) and, at process
/// exit, a warning with their count is printed to stderr; the next submit starts the pool
/// again on the then-current runtime.
///
/// # Dropping
///
/// The pool is a cheap [`Clone`] handle; clones share one pool. Dropping the last handle
/// closes intake but cancels nothing: queued and running jobs still finish, then the
/// drivers stop. To *wait* for them, call [`shutdown`](Self::shutdown) or
/// [`shutdown_all_common_aiopools`](crate::shutdown_all_common_aiopools) at the end of
/// `main`; a runtime that shuts down first cancels them (see above).
///
/// # Examples
///
/// ```
/// use nb_aiopool::CommonAioPool;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = CommonAioPool::new(5, 100);
///
/// let result = pool.run(async { 100 * 2 }).await.unwrap();
/// assert_eq!(result, 200);
///
/// let mut handles = Vec::new();
/// for i in 0..10 {
///     handles.push(pool.submit(async move { i * 2 }).await.unwrap());
/// }
/// for (i, h) in handles.into_iter().enumerate() {
///     assert_eq!(h.await.unwrap(), i * 2);
/// }
///
/// // Fire and forget: shutdown waits for everything still queued or running.
/// for i in 0..3 {
///     pool.submit(async move { println!("task {i}") }).await.unwrap().detach();
/// }
/// pool.shutdown().await;
/// # }
/// ```
#[derive(Clone)]
pub struct CommonAioPool {
    inner: Arc<Inner>,
}

struct Inner {
    pool: FuturePool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.pool.engine.close();
    }
}

future_pool_api!(
    CommonAioPool,
    "CommonAioPool::new(4, 16)",
    "CommonAioPool::new(1, 0)"
);

impl CommonAioPool {
    fn pool(&self) -> &FuturePool {
        &self.inner.pool
    }

    /// Creates a pool running at most `max_concurrency` jobs at once, with room for
    /// `max_queue_size` more in its queue.
    ///
    /// Nothing is allocated in proportion to `max_queue_size`; the queue grows as jobs
    /// arrive. The pool is registered for
    /// [`shutdown_all_common_aiopools`](crate::shutdown_all_common_aiopools).
    ///
    /// # Panics
    ///
    /// Panics if `max_concurrency` is 0, or if `max_concurrency + max_queue_size` exceeds
    /// `tokio::sync::Semaphore::MAX_PERMITS` (about 2^61 on 64-bit targets).
    ///
    /// # Examples
    ///
    /// ```
    /// use nb_aiopool::CommonAioPool;
    ///
    /// // No runtime needed to create it.
    /// let pool = CommonAioPool::new(1000, 1000);
    /// assert_eq!(pool.max_concurrency(), 1000);
    /// ```
    #[track_caller]
    pub fn new(max_concurrency: usize, max_queue_size: usize) -> Self {
        let kind = PoolKind::Common;
        let config = Config {
            name: kind.name(),
            max_concurrency,
            max_queue_size,
            elastic: None,
        };
        let pool = FuturePool::new(config, Some(registry::drop_hook(kind, max_concurrency)));
        registry::register_future_pool(kind, &pool.engine);
        CommonAioPool {
            inner: Arc::new(Inner { pool }),
        }
    }

    /// Stops intake and waits until every queued and running job has finished.
    ///
    /// Later submits fail with the future handed back; submitters waiting for room are
    /// refused. Idempotent: every caller, from any clone, waits for the same drain.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future stops the wait, not the shutdown (intake stays
    /// closed and the jobs keep running).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::CommonAioPool;
    ///
    /// let pool = CommonAioPool::new(2, 10);
    /// let h = pool.submit(async { 7 }).await.unwrap();
    /// pool.shutdown().await;
    /// assert!(h.is_finished());
    /// assert!(pool.submit(async { 8 }).await.is_err());
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        self.pool().engine.shutdown().await
    }

    /// Like [`shutdown`](Self::shutdown), but after `timeout` abandons what is left:
    /// queued jobs are dropped without running, running ones are dropped at their next
    /// `.await`, and their handles resolve to
    /// [`CancelReason::Abandoned`](crate::CancelReason::Abandoned).
    ///
    /// A job that blocks its thread without ever yielding cannot be dropped until it
    /// yields; this waits for that.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe as [`shutdown`](Self::shutdown); if dropped before the deadline, nothing
    /// is abandoned.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use nb_aiopool::CommonAioPool;
    ///
    /// let pool = CommonAioPool::new(1, 10);
    /// pool.submit(tokio::time::sleep(Duration::from_secs(3600))).await.unwrap().detach();
    /// let report = pool.shutdown_timeout(Duration::from_secs(1)).await;
    /// assert_eq!(report.abandoned(), 1);
    /// # }
    /// ```
    pub async fn shutdown_timeout(&self, timeout: Duration) -> ShutdownReport {
        self.pool().engine.shutdown_timeout(timeout).await
    }

    /// The most jobs that wait in the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = nb_aiopool::CommonAioPool::new(8, 100);
    /// assert_eq!(pool.max_queue_size(), 100);
    /// ```
    pub fn max_queue_size(&self) -> usize {
        self.pool().engine.max_queue_size()
    }
}

impl fmt::Debug for CommonAioPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommonAioPool")
            .field("max_concurrency", &self.max_concurrency())
            .field("max_queue_size", &self.max_queue_size())
            .field("stats", &self.stats())
            .finish()
    }
}
