//! [`MapOrdered`]: the stream `map_ordered` returns, over the state machine of
//! [`Mapper`], yielding results in input order.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::{FusedStream, Stream};

use super::{feed, Mapper};
use crate::engine::Job;
use crate::error::{SubmitErrorKind, TaskError};
use crate::options::SubmitOptions;
use crate::pool::core::{Core, Submit};

/// The stream returned by `map_ordered` on a pool
/// ([`CommonAioPool::map_ordered`](crate::CommonAioPool::map_ordered),
/// [`NoQueueAioPool::map_ordered`](crate::NoQueueAioPool::map_ordered),
/// [`SmartAioPool::map_ordered`](crate::SmartAioPool::map_ordered)): each input's job runs in
/// the pool, and results come out **in input order**.
///
/// Everything [`MapUnordered`](crate::MapUnordered) says holds (bound, backpressure, refusal, dropping),
/// with one more consequence of the order: a result that finished before an earlier
/// one waits in the stream until that one is out. Those waiting results count in the
/// same bound: at most `max_concurrency + max_queue_size` inputs are pulled and not yet
/// yielded, so at most that many results (minus one) are ever buffered out of order
/// (after a shrink of the pool, those pulled before it, until they are yielded). A
/// slow job holds back the stream, never memory.
///
/// The stream awaits its jobs one after the other, in input order (a result that
/// finished early waits in its task's memory until its turn), which costs less per job
/// than polling them all; the room their ends free, and a resize of the pool, still
/// reach it at once. Once polled inside a job of its own pool, it polls all its jobs
/// together instead, as `MapUnordered` does, from then on.
///
/// # Examples
///
/// ```
/// use futures_util::{stream, StreamExt};
/// use nb_aiopool::CommonAioPool;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = CommonAioPool::new(4, 4);
/// let results: Vec<_> = pool
///     .map_ordered(stream::iter([30u64, 10, 20]), |ms| async move {
///         tokio::time::sleep(Duration::from_millis(ms)).await;
///         ms
///     })
///     .collect()
///     .await;
/// let values: Vec<u64> = results.into_iter().map(Result::unwrap).collect();
/// assert_eq!(values, [30, 10, 20]); // input order, not completion order
/// # }
/// ```
#[must_use = "streams do nothing unless polled; dropping one aborts its unfinished jobs"]
pub struct MapOrdered<St: Stream, T> {
    pub(super) inner: Mapper<St, T>,
}

impl<St: Stream, T> MapOrdered<St, T> {
    /// The stream of `f`'s jobs over `inputs` through a pool's core: the pools'
    /// `map_ordered` forward here.
    pub(crate) fn new<J, F, S>(core: &Core<J>, inputs: St, f: F) -> Self
    where
        J: Job,
        F: FnMut(St::Item) -> S + Send + 'static,
        S: Submit<J, Output = T>,
    {
        MapOrdered {
            inner: Mapper::new(inputs, feed::<J, _, _, _>(core, f), true),
        }
    }

    /// Submits each input's job with options of its own, as
    /// [`MapUnordered::with_options`](crate::MapUnordered::with_options) says: `options`
    /// is called on each input right before `f` takes it, and its [`SubmitOptions`]
    /// (key, weight, priority, timeout) apply to that job exactly as `submit_with`
    /// applies them; the results still come out in input order, whatever order the
    /// options make the jobs run in. Called on a stream already polled, it applies to
    /// the inputs pulled from then on. Works the same for the three pools' streams.
    ///
    /// # Refusal
    ///
    /// An input whose job `submit_with` would refuse (a weight above the pool's
    /// `weight_capacity`: [`TooHeavy`](SubmitErrorKind::TooHeavy); a wait for room past
    /// its timeout: [`TimedOut`](SubmitErrorKind::TimedOut)) is refused as any job of the
    /// stream is: the stream stops pulling, yields the results of the jobs already
    /// accepted, in input order, and ends; that input produces no item, and
    /// [`refused`](Self::refused) says why.
    ///
    /// # Panics
    ///
    /// A panic in `options` propagates out of `poll_next`, as one in `f` does. An input
    /// with a timeout that has to wait for room panics where its timer cannot be made,
    /// as [`MapUnordered::with_options`](crate::MapUnordered::with_options) says.
    ///
    /// # Examples
    ///
    /// Pages of two hosts, at most one request per host at a time, results in input
    /// order:
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use futures_util::{stream, StreamExt};
    /// use nb_aiopool::{CommonAioPool, SubmitOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let pool = CommonAioPool::builder().max_concurrency(4).max_per_key(1).build();
    /// let urls = ["a.example/1", "b.example/1", "a.example/2", "b.example/2"];
    /// let started = tokio::time::Instant::now();
    /// let pages: Vec<_> = pool
    ///     .map_ordered(stream::iter(urls), |url| async move {
    ///         tokio::time::sleep(Duration::from_secs(1)).await; // the request
    ///         url
    ///     })
    ///     .with_options(|url| SubmitOptions::new().key(url.split('/').next().unwrap()))
    ///     .map(Result::unwrap)
    ///     .collect()
    ///     .await;
    /// assert_eq!(pages, urls);
    /// // Two hosts, one request each at a time: two rounds of a second.
    /// assert_eq!(started.elapsed().as_secs(), 2);
    /// # }
    /// ```
    pub fn with_options<O>(mut self, options: O) -> Self
    where
        O: FnMut(&St::Item) -> SubmitOptions + Send + 'static,
    {
        self.inner.set_options(Box::new(options));
        self
    }

    /// Why the pool stopped taking this stream's jobs, if it did, as
    /// [`MapUnordered::refused`](crate::MapUnordered::refused) says: the stream then pulls
    /// no more inputs, yields the results of the jobs already accepted, still in input
    /// order, and ends. `None` while all goes well and after the inputs simply ran out.
    ///
    /// # Examples
    ///
    /// A pool shut down while the stream holds inputs:
    ///
    /// ```
    /// use futures_util::{stream, StreamExt};
    /// use nb_aiopool::{CommonAioPool, SubmitErrorKind};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = CommonAioPool::new(2, 2);
    /// let mut results = pool.map_ordered(stream::iter(0..100u32), |i| async move { i });
    /// assert_eq!(results.next().await.unwrap().unwrap(), 0);
    /// pool.shutdown().await; // runs the jobs already accepted, refuses new ones
    /// let rest: Vec<u32> = results.by_ref().map(Result::unwrap).collect().await;
    /// assert_eq!(rest, (1..=rest.len() as u32).collect::<Vec<_>>()); // in input order
    /// assert_eq!(results.refused(), Some(SubmitErrorKind::Closed));
    /// # }
    /// ```
    pub fn refused(&self) -> Option<SubmitErrorKind> {
        self.inner.refused
    }

    /// Inputs pulled and not yet yielded: running, queued, or finished and waiting for an
    /// earlier one to be yielded first. The bound is
    /// [`MapUnordered::in_flight`](crate::MapUnordered::in_flight)'s: never more than
    /// the pool's `max_concurrency + max_queue_size` (but after `set_max_concurrency`
    /// shrank the pool under it: the inputs pulled before stay counted until they are
    /// yielded, and no more is pulled until fewer than the new size are held).
    ///
    /// # Examples
    ///
    /// Two results wait behind a slow first one:
    ///
    /// ```
    /// use futures_util::{stream, StreamExt};
    /// use nb_aiopool::CommonAioPool;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let pool = CommonAioPool::new(4, 0);
    /// let mut results = pool.map_ordered(stream::iter([50u64, 0, 0]), |ms| async move {
    ///     tokio::time::sleep(Duration::from_millis(ms)).await;
    ///     ms
    /// });
    /// assert_eq!(results.in_flight(), 0); // nothing is pulled before the first poll
    /// let first = tokio::time::timeout(Duration::from_millis(20), results.next()).await;
    /// assert!(first.is_err()); // the 50 ms job holds back the two that ended
    /// assert_eq!(results.in_flight(), 3);
    /// assert_eq!(results.next().await.unwrap().unwrap(), 50);
    /// assert_eq!(results.in_flight(), 2);
    /// # }
    /// ```
    pub fn in_flight(&self) -> usize {
        self.inner.held()
    }

    /// Aborts every unfinished job of the stream and pulls no more inputs; the
    /// stream still yields the jobs' results, in input order (the finished ones as they
    /// were, aborted ones as [`CancelReason::Aborted`](crate::CancelReason::Aborted)
    /// errors), then ends.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::{stream, StreamExt};
    /// use nb_aiopool::CommonAioPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = CommonAioPool::new(2, 2);
    /// let mut results = pool.map_ordered(stream::iter(0..100u32), |i| async move {
    ///     if i > 0 {
    ///         std::future::pending::<()>().await; // all but the first never end
    ///     }
    ///     i
    /// });
    /// assert_eq!(results.next().await.unwrap().unwrap(), 0);
    /// results.abort_all();
    /// let rest: Vec<_> = results.collect().await;
    /// assert!(!rest.is_empty() && rest.len() <= 4); // what was pulled: the pool holds 4
    /// assert!(rest.iter().all(|r| r.as_ref().unwrap_err().is_cancelled()));
    /// # }
    /// ```
    pub fn abort_all(&mut self) {
        self.inner.abort_tasks();
        self.inner.stop_intake(None);
    }
}

impl<St: Stream, T> Stream for MapOrdered<St, T> {
    type Item = Result<T, TaskError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_ordered(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<St: Stream, T> FusedStream for MapOrdered<St, T> {
    fn is_terminated(&self) -> bool {
        self.inner.is_done()
    }
}

impl<St: Stream, T> fmt::Debug for MapOrdered<St, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_as("MapOrdered", f)
    }
}
