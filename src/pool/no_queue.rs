//! [`NoQueueAioPool`]: at most `max_concurrency` futures at once, and no waiting room.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::future_pool::{future_pool_api, FuturePool};
use super::registry::{self, PoolKind};
use crate::engine::Config;

/// A pool with no queue: `submit(fut).await` waits until one of `max_concurrency` slots is
/// free, then starts the future at once.
///
/// This is the seed's `NoQueueAioPool`. It waits without polling or sleeping (the Python
/// original re-checks every 10 ms): a finishing job hands its slot to the next waiting
/// submitter directly. Use [`wait`](Self::wait) (or
/// [`wait_all_no_queue_aiopools`](crate::wait_all_no_queue_aiopools)) to wait for jobs
/// whose handles you dropped.
///
/// It shares its machinery with [`CommonAioPool`](crate::CommonAioPool): it *is* a common
/// pool whose queue holds nothing, plus `wait` without closing.
///
/// # Dropping
///
/// The pool is a cheap [`Clone`] handle; clones share one pool. Dropping the last handle
/// cancels nothing: running jobs still finish. As with `CommonAioPool`, a runtime that
/// shuts down while jobs run cancels them, and a warning with their count is printed to
/// stderr at process exit.
///
/// # Examples
///
/// ```
/// use nb_aiopool::NoQueueAioPool;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = NoQueueAioPool::new(10);
///
/// let mut handles = Vec::new();
/// for i in 0..20 {
///     handles.push(pool.submit(async move { i * 2 }).await.unwrap());
/// }
/// let mut results = Vec::new();
/// for h in handles {
///     results.push(h.await.unwrap());
/// }
/// assert_eq!(results[19], 38);
///
/// // Fire and forget, then wait for everything submitted so far.
/// for i in 20..25 {
///     pool.submit(async move { println!("task {i} finished") }).await.unwrap().detach();
/// }
/// pool.wait().await;
/// assert_eq!(pool.stats().completed, 25);
/// # }
/// ```
#[derive(Clone)]
pub struct NoQueueAioPool {
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
    NoQueueAioPool,
    "NoQueueAioPool::new(4)",
    "NoQueueAioPool::new(1)"
);

impl NoQueueAioPool {
    fn pool(&self) -> &FuturePool {
        &self.inner.pool
    }

    /// Creates a pool running at most `max_concurrency` jobs at once.
    ///
    /// The pool is registered for
    /// [`wait_all_no_queue_aiopools`](crate::wait_all_no_queue_aiopools).
    ///
    /// # Panics
    ///
    /// Panics if `max_concurrency` is 0 or larger than
    /// `tokio::sync::Semaphore::MAX_PERMITS`.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = nb_aiopool::NoQueueAioPool::new(1000);
    /// assert_eq!(pool.max_concurrency(), 1000);
    /// ```
    #[track_caller]
    pub fn new(max_concurrency: usize) -> Self {
        let kind = PoolKind::NoQueue;
        let config = Config {
            name: kind.name(),
            max_concurrency,
            max_queue_size: 0,
            elastic: None,
        };
        let pool = FuturePool::new(config, Some(registry::drop_hook(kind, max_concurrency)));
        registry::register_future_pool(kind, &pool.engine);
        NoQueueAioPool {
            inner: Arc::new(Inner { pool }),
        }
    }

    /// Waits until every job submitted before this call has finished.
    ///
    /// The jobs waited for are those submitted before `wait()` is *called* (not first
    /// polled); jobs submitted while it waits are not waited for, so a steady stream of new
    /// jobs cannot keep it waiting forever. The pool stays open.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops the wait.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::NoQueueAioPool;
    ///
    /// let pool = NoQueueAioPool::new(2);
    /// let h = pool.submit(async { 5 }).await.unwrap();
    /// pool.wait().await;
    /// assert!(h.is_finished());
    /// # }
    /// ```
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        self.pool().engine.wait_all()
    }

    /// Stops intake and waits until every running job has finished.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future stops the wait, not the shutdown.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::NoQueueAioPool;
    ///
    /// let pool = NoQueueAioPool::new(2);
    /// pool.shutdown().await;
    /// assert!(pool.try_submit(async {}).unwrap_err().is_closed());
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        self.pool().engine.shutdown().await
    }
}

impl fmt::Debug for NoQueueAioPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoQueueAioPool")
            .field("max_concurrency", &self.max_concurrency())
            .field("stats", &self.stats())
            .finish()
    }
}
