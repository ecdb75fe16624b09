//! [`MapUnordered`]: the stream `map_unordered` returns, over the state machine of
//! [`Mapper`], yielding results as the jobs complete.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::{FusedStream, Stream};

use super::{feed, Mapper};
use crate::engine::Job;
use crate::error::{SubmitErrorKind, TaskError};
use crate::options::SubmitOptions;
use crate::pool::core::{Core, Submit};

/// The stream returned by `map_unordered` on a pool
/// ([`CommonAioPool::map_unordered`](crate::CommonAioPool::map_unordered),
/// [`NoQueueAioPool::map_unordered`](crate::NoQueueAioPool::map_unordered),
/// [`SmartAioPool::map_unordered`](crate::SmartAioPool::map_unordered)): each input's job runs in
/// the pool, and results come out **as the jobs complete**.
///
/// It is a [`Stream`] of `Result<T, TaskError>`: `Ok` with the job's value, or the
/// [`TaskError`] saying it panicked or was cancelled. It is `Unpin`, and `Send` when
/// the input stream is (the mapping function and the results must be `Send` anyway).
///
/// # Bound and backpressure
///
/// An input is pulled only once the pool has a place for its job (the stream waits
/// for room as `submit().await` does, *then* pulls), so the input stream is never
/// pulled further than the pool can hold. Besides, the stream holds at most
/// `max_concurrency + max_queue_size` inputs between pulling them and yielding their
/// results, so results the consumer has not taken yet stay bounded too (the bound
/// follows the pool's size if it changes: a stream waiting with as many inputs as
/// the pool held pulls more as soon as `set_max_concurrency` grows it; after a
/// shrink, it pulls nothing until it holds fewer than the new size). Other users of
/// the pool share its room as usual.
///
/// While its input stream has nothing ready (a channel, a socket, idle for as long as
/// it likes), the stream holds no place in the pool: it gives back the one it took
/// for the next input, and the input's wake-up takes one again (waiting for room if
/// the pool is full) before it pulls. So streams waiting for input, one per
/// connection say, leave a shared pool its room. (Inside a job of its own pool it
/// keeps that place, see below. Any `Pending` of the input counts, also one that
/// tokio's cooperative budget makes: the next poll takes a place again.)
///
/// A stream given per-input options ([`with_options`](Self::with_options)) waits for
/// room with each input's priority and timeout, which it knows only once it has the
/// input: finding the pool full, it pulls that one input first, then waits (holding
/// the input's job, not a place), as `submit_with` would. It still pulls no further.
///
/// A stream whose input is another stream mapped through the same pool (two stages
/// of a pipeline through one pool) needs room for a job of each: with a pool of one
/// place (`max_concurrency + max_queue_size == 1`), the outer stream takes it before
/// it pulls from the inner one, which then waits for room that never comes, and
/// neither moves. Give such a pipeline two places at least, or a pool per stage.
///
/// # Inside a job of the same pool
///
/// A job may map a stream through its own pool (a fan-out). Waiting for room there
/// could deadlock, so where `submit().await` would fail with
/// [`WouldDeadlock`](SubmitErrorKind::WouldDeadlock), the stream instead waits for one
/// of its own jobs to end (or for the pool to grow) and tries again; only when it has
/// no job of its own in the pool is the input refused (see below). For the same
/// reason, a stream there whose input has nothing ready keeps the place it took for
/// it (given back, the input could find the pool full when it comes, and be refused):
/// other submitters wait for that place meanwhile.
///
/// This holds also for a stream that began waiting for room outside the pool and is
/// then polled inside one of its jobs (moved there): its wait is dropped and asked for
/// again, checked, losing its turn (a place granted to it meanwhile goes to the next
/// waiter). A `submit` future moved the same way is not checked again: it keeps waiting
/// (and deadlocks where a nested wait for room would).
///
/// # Refusal
///
/// When the pool refuses a job (it was shut down, or the case above; with
/// [`with_options`](Self::with_options), also a job too heavy for the pool or one whose
/// wait for room timed out), the stream stops pulling, yields the results of the jobs
/// already accepted, and ends: **check [`refused`](Self::refused)** after the end if
/// the pool may close under you, since the inputs not pulled produce no item.
///
/// A stream waiting for its input stops pulling as soon as the pool is shut down (the
/// shutdown wakes it: it yields the results of its jobs and ends, not at its next
/// input), and one that took a place checks that the pool is still open right before
/// it pulls an input, so an input is not consumed for a job the pool will refuse.
/// Only a refusal of the push itself costs an input: if the pool is shut down (from
/// another thread) in the instant between that check and the push, while the input
/// is pulled and `f` runs, or has no runtime to run the job on
/// ([`NoRuntime`](SubmitErrorKind::NoRuntime)), that one input's job is dropped
/// without running, the input produces no item, and `refused` says why.
///
/// # Panics
///
/// `f` is called on the task that polls the stream, as each input is pulled: a panic
/// in `f` propagates out of `poll_next` to that task. The place taken for that input
/// is not lost: the stream gives it back when dropped (or uses it for the next input
/// if polled again).
///
/// # Dropping
///
/// Dropping the stream **aborts** its unfinished jobs (see
/// [`TaskHandle::abort`](crate::TaskHandle::abort): queued ones leave the pool's queue
/// at once, their places free for the next submit, each dropped unpolled right after
/// by a task on its runtime; running ones are dropped at their next `.await`, holding
/// their slots until then) and gives back a place it held for an input not pulled
/// yet. Inputs not pulled stay in the input stream, which is dropped with it.
///
/// The stream counts as a handle of its pool: the pool stays open while the stream
/// lives, so `CommonAioPool::new(..).map_unordered(..)` works as a one-off.
///
/// # Cancel safety
///
/// Polling is cancel safe: a `next()` dropped before it returns (a `select!` branch
/// that lost) loses no result and no input. An input is pulled only together with the
/// push of its job, and a result leaves the stream only in the poll that returns it;
/// the others wait in the stream for its next poll. A stream left waiting for room
/// (its `next()` dropped while the pool was full) keeps its turn among the waiting
/// submitters: a place granted to it is held, with nothing running in it, until the
/// stream is polled again or dropped, as any waiting submitter's is (the crate docs,
/// "Guarantees"): read two streams of one small pool together, not one after the
/// other.
///
/// # Examples
///
/// ```
/// use futures_util::{stream, StreamExt};
/// use nb_aiopool::CommonAioPool;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = CommonAioPool::new(8, 8);
/// let mut results = pool.map_unordered(stream::iter(1..=100u64), |i| async move { i * 2 });
/// let mut sum = 0;
/// while let Some(r) = results.next().await {
///     sum += r.unwrap();
/// }
/// assert_eq!(sum, 10_100);
/// # }
/// ```
#[must_use = "streams do nothing unless polled; dropping one aborts its unfinished jobs"]
pub struct MapUnordered<St: Stream, T> {
    pub(super) inner: Mapper<St, T>,
}

impl<St: Stream, T> MapUnordered<St, T> {
    /// The stream of `f`'s jobs over `inputs` through a pool's core: the pools'
    /// `map_unordered` forward here.
    pub(crate) fn new<J, F, S>(core: &Core<J>, inputs: St, f: F) -> Self
    where
        J: Job,
        F: FnMut(St::Item) -> S + Send + 'static,
        S: Submit<J, Output = T>,
    {
        MapUnordered {
            inner: Mapper::new(inputs, feed::<J, _, _, _>(core, f), false),
        }
    }

    /// Submits each input's job with options of its own: `options` is called on each
    /// input (on the task polling the stream, right before `f` takes the input), and the
    /// [`SubmitOptions`] it returns apply to that input's job exactly as
    /// [`submit_with`](crate::CommonAioPool::submit_with) applies them: its key counts
    /// against the pool's `max_per_key` (together with every other task of that key in
    /// the pool, the stream's and the pool's others), its weight against
    /// `weight_capacity`, its priority orders the queue, and, when the pool is full, the
    /// stream waits for room with the input's priority (ahead of lower-priority waiters,
    /// behind higher ones and earlier equal ones) for at most its timeout. Works the same
    /// for the three pools' streams (SmartAioPool's recipes included).
    ///
    /// A setting the pool has no use for is ignored, as by `submit_with`. Without options
    /// the stream submits each job as `submit` does (priority 0, weight 1, no key, no
    /// deadline), at no cost for this method's existence.
    ///
    /// Called on a stream already polled, it applies to the inputs pulled from then on;
    /// those pulled before keep the options they were submitted with. Called again, it
    /// replaces the function. An input pulled while the pool was full, waiting for room
    /// with its options when the stream is dropped (or [`abort_all`](Self::abort_all) is
    /// called), is dropped with its job, which never entered the pool.
    ///
    /// Inside a job of the stream's own pool, where a full pool refuses a wait for room
    /// (see "Inside a job of the same pool" above), the stream takes a place before it
    /// pulls as usual: the options then set the job's key, weight and priority; no wait
    /// is made that a priority or timeout could apply to.
    ///
    /// # Refusal
    ///
    /// An input whose job `submit_with` would refuse is refused so (see
    /// [Refusal](Self#refusal)): the stream stops pulling, yields the results of the jobs
    /// already accepted and ends, and [`refused`](Self::refused) says why:
    /// [`TooHeavy`](SubmitErrorKind::TooHeavy) for a weight above the pool's
    /// `weight_capacity` (refused before it waits), or
    /// [`TimedOut`](SubmitErrorKind::TimedOut) when its wait for room outlasted its
    /// timeout. That input was pulled and produces no item; its job is dropped without
    /// running; the inputs after it stay in the input stream. The refusal is counted by
    /// the observability features as `submit_with`'s is. An input pulled while the pool
    /// was full is consumed so by any refusal of its wait, also when the pool is shut
    /// down meanwhile ([`Closed`](SubmitErrorKind::Closed)), unlike a plain stream's
    /// next input, which is pulled only once the pool has a place for it.
    ///
    /// # Panics
    ///
    /// A panic in `options` propagates out of `poll_next`, as one in `f` does (see
    /// [Panics](Self#panics)); the input is lost, no place is. An input with a timeout
    /// that has to wait for room panics where its timer cannot be made (outside a tokio
    /// runtime, or on one without time enabled), as `submit_with` does, naming this
    /// method; polled again, the stream panics so again.
    ///
    /// # Examples
    ///
    /// A crawler keeping at most two requests per host in flight, whatever the order of
    /// its URLs:
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// use futures_util::{stream, StreamExt};
    /// use nb_aiopool::{CommonAioPool, SubmitOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let pool = CommonAioPool::builder()
    ///     .max_concurrency(8)
    ///     .max_queue_size(8)
    ///     .max_per_key(2)
    ///     .build();
    /// let urls = (0..12).map(|i| format!("https://example.com/page/{i}"));
    /// let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    /// let (n, m) = (now.clone(), most.clone());
    /// let pages = pool
    ///     .map_unordered(stream::iter(urls), move |url: String| {
    ///         let (now, most) = (n.clone(), m.clone());
    ///         async move {
    ///             most.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
    ///             tokio::time::sleep(Duration::from_millis(10)).await; // the request
    ///             now.fetch_sub(1, SeqCst);
    ///             url.len()
    ///         }
    ///     })
    ///     .with_options(|url: &String| {
    ///         let host = url.split('/').nth(2).unwrap_or_default();
    ///         SubmitOptions::new().key(host)
    ///     });
    /// let fetched: Vec<_> = pages.collect().await;
    /// assert_eq!(fetched.len(), 12);
    /// assert_eq!(most.load(SeqCst), 2); // one host: never more than 2 at once
    /// # }
    /// ```
    pub fn with_options<O>(mut self, options: O) -> Self
    where
        O: FnMut(&St::Item) -> SubmitOptions + Send + 'static,
    {
        self.inner.set_options(Box::new(options));
        self
    }

    /// Why the pool stopped taking this stream's jobs, if it did: the stream then
    /// pulls no more inputs, yields the results of the jobs already accepted, and
    /// ends. `None` while all goes well and after the inputs simply ran out. (With
    /// [`with_options`](Self::with_options), also `TooHeavy` or `TimedOut`, for the input
    /// whose job was refused so.)
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::{stream, StreamExt};
    /// use nb_aiopool::{CommonAioPool, SubmitErrorKind};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = CommonAioPool::new(2, 2);
    /// pool.shutdown().await;
    /// let mut results = pool.map_unordered(stream::iter(0..3), |i| async move { i });
    /// assert!(results.next().await.is_none());
    /// assert_eq!(results.refused(), Some(SubmitErrorKind::Closed));
    /// # }
    /// ```
    pub fn refused(&self) -> Option<SubmitErrorKind> {
        self.inner.refused
    }

    /// Inputs pulled and not yet yielded (running, queued, or finished and
    /// waiting to be yielded); never more than the pool's
    /// `max_concurrency + max_queue_size`, but after `set_max_concurrency` shrank
    /// the pool under it: the inputs pulled before stay counted until they are
    /// yielded, and no more is pulled until fewer than the new size are held.
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
    /// let mut results = pool.map_unordered(stream::iter(0..100), |i| async move { i });
    /// assert_eq!(results.in_flight(), 0); // nothing is pulled before the first poll
    /// results.next().await.unwrap().unwrap();
    /// assert!(results.in_flight() <= 4);
    /// # }
    /// ```
    pub fn in_flight(&self) -> usize {
        self.inner.held()
    }

    /// Aborts every unfinished job of the stream and pulls no more inputs; the
    /// stream still yields the jobs' results (aborted ones as
    /// [`CancelReason::Aborted`](crate::CancelReason::Aborted) errors), then ends.
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
    /// let pool = CommonAioPool::new(2, 2);
    /// let mut results = pool.map_unordered(stream::iter(0..100), |_| std::future::pending::<()>());
    /// assert!(tokio::time::timeout(Duration::from_millis(10), results.next()).await.is_err());
    /// results.abort_all();
    /// let rest: Vec<_> = results.collect().await;
    /// assert_eq!(rest.len(), 4); // the inputs pulled: as many as the pool holds
    /// assert!(rest.iter().all(|r| r.as_ref().unwrap_err().is_cancelled()));
    /// # }
    /// ```
    pub fn abort_all(&mut self) {
        self.inner.abort_tasks();
        self.inner.stop_intake(None);
    }
}

impl<St: Stream, T> Stream for MapUnordered<St, T> {
    type Item = Result<T, TaskError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_unordered(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<St: Stream, T> FusedStream for MapUnordered<St, T> {
    fn is_terminated(&self) -> bool {
        self.inner.is_done()
    }
}

impl<St: Stream, T> fmt::Debug for MapUnordered<St, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_as("MapUnordered", f)
    }
}
