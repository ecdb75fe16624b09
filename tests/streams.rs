//! `map_unordered` / `map_ordered` on the three pools: results and their order, the bound
//! on running jobs and on inputs pulled, backpressure, refusal, and abort on drop.
//! Deterministic: paused time, no `thread::sleep`.

mod support;

use support::{within, Gauge as Live, Pool};

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt};
use nb_aiopool::{CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitErrorKind, TaskError};
use tokio::time::sleep;

// More of the same surface on each pool (`Pool::unordered` and `ordered` are in
// `support`).
impl Pool {
    fn running(&self) -> usize {
        self.stats().running
    }

    /// Submits a job that never ends, from outside any stream.
    async fn occupy(&self) -> nb_aiopool::AbortHandle {
        match self {
            Pool::Common(p) => p
                .submit(std::future::pending::<()>())
                .await
                .unwrap()
                .abort_handle(),
            Pool::NoQueue(p) => p
                .submit(std::future::pending::<()>())
                .await
                .unwrap()
                .abort_handle(),
            Pool::Smart(p) => p
                .submit(std::future::pending::<()>)
                .await
                .unwrap()
                .abort_handle(),
        }
    }

    /// How many never-ending jobs `try_submit` accepts now (the room left). They are
    /// aborted once counted, which gives their places back at once.
    fn room(&self) -> usize {
        let mut taken = Vec::new();
        loop {
            let handle = match self {
                Pool::Common(p) => p
                    .try_submit(std::future::pending::<()>())
                    .map(|h| h.abort_handle())
                    .ok(),
                Pool::NoQueue(p) => p
                    .try_submit(std::future::pending::<()>())
                    .map(|h| h.abort_handle())
                    .ok(),
                Pool::Smart(p) => p
                    .try_submit(std::future::pending::<()>)
                    .map(|h| h.abort_handle())
                    .ok(),
            };
            match handle {
                Some(h) => taken.push(h),
                None => break,
            }
        }
        for h in &taken {
            h.abort();
        }
        taken.len()
    }

    async fn shutdown(&self) {
        match self {
            Pool::Common(p) => p.shutdown().await,
            Pool::NoQueue(p) => p.shutdown().await,
            Pool::Smart(p) => p.shutdown().await,
        }
    }
}

/// An input stream that counts how many items were pulled from it.
fn counted<I: Iterator>(items: I, pulls: &Arc<AtomicUsize>) -> impl Stream<Item = I::Item> {
    let pulls = pulls.clone();
    stream::iter(items).inspect(move |_| {
        pulls.fetch_add(1, Ordering::SeqCst);
    })
}

/// Polls `s` until it has nothing ready (lets the pool run in between).
async fn poll_idle<S: Stream + Unpin>(s: &mut S) -> Vec<S::Item> {
    let mut out = Vec::new();
    for _ in 0..50 {
        match poll_once(s).await {
            Poll::Ready(Some(x)) => out.push(x),
            Poll::Ready(None) => break,
            Poll::Pending => tokio::task::yield_now().await,
        }
    }
    out
}

/// Polls `s` once, without waiting.
async fn poll_once<S: Stream + Unpin>(s: &mut S) -> Poll<Option<S::Item>> {
    std::future::poll_fn(|cx| Poll::Ready(s.poll_next_unpin(cx))).await
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn unordered_yields_every_result_as_completed() {
    for (pool, _) in Pool::all(4, 4) {
        // Later inputs finish first: completion order is the reverse of input order.
        let results: Vec<u64> = pool
            .unordered(stream::iter(0..8u64), |i| async move {
                sleep(Duration::from_secs(10 - i)).await;
                i
            })
            .map(Result::unwrap)
            .collect()
            .await;
        let mut sorted = results.clone();
        sorted.sort();
        assert_eq!(sorted, (0..8).collect::<Vec<_>>(), "{}", pool.name());
        // The first four run together; 3 ends first.
        assert_eq!(results[0], 3, "{}: as completed", pool.name());
    }
}

#[tokio::test(start_paused = true)]
async fn ordered_yields_in_input_order() {
    for (pool, _) in Pool::all(4, 4) {
        let results: Vec<u64> = pool
            .ordered(stream::iter(0..20u64), |i| async move {
                sleep(Duration::from_millis(100 * (20 - i))).await;
                i
            })
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(results, (0..20).collect::<Vec<_>>(), "{}", pool.name());
    }
}

#[tokio::test(start_paused = true)]
async fn errors_come_out_as_items() {
    for (pool, _) in Pool::all(2, 2) {
        let results: Vec<Result<u32, TaskError>> = pool
            .ordered(stream::iter(0..4u32), |i| async move {
                if i == 2 {
                    panic!("job {i} fails");
                }
                i
            })
            .collect()
            .await;
        assert_eq!(results.len(), 4);
        assert!(
            results[2].as_ref().unwrap_err().is_panic(),
            "{}",
            pool.name()
        );
        assert_eq!(*results[3].as_ref().unwrap(), 3);
    }
}

#[tokio::test(start_paused = true)]
async fn never_more_running_than_max_concurrency() {
    for (pool, _) in Pool::all(3, 5) {
        for ordered in [false, true] {
            let live = Live::default();
            let job = {
                let live = live.clone();
                move |i: u64| {
                    let live = live.clone();
                    async move {
                        let _g = live.enter();
                        sleep(Duration::from_millis(1 + i % 7)).await;
                        i
                    }
                }
            };
            let n = if ordered {
                pool.ordered(stream::iter(0..60u64), job).count().await
            } else {
                pool.unordered(stream::iter(0..60u64), job).count().await
            };
            assert_eq!(n, 60);
            assert_eq!(live.max(), 3, "{} ordered={ordered}", pool.name());
        }
    }
}

#[tokio::test(start_paused = true)]
async fn pulls_no_more_inputs_than_the_pool_can_hold() {
    for (pool, capacity) in Pool::all(2, 3) {
        let pulls = Arc::new(AtomicUsize::new(0));
        let mut s = pool.unordered(counted(0..100u32, &pulls), |i| async move {
            sleep(Duration::from_secs(3600)).await;
            i
        });
        assert!(poll_idle(&mut s).await.is_empty());
        assert_eq!(pulls.load(Ordering::SeqCst), capacity, "{}", pool.name());
        assert_eq!(pool.running(), 2, "{}", pool.name());
        drop(s);
    }
}

#[tokio::test(start_paused = true)]
async fn shares_the_pool_with_other_submitters() {
    for (pool, capacity) in Pool::all(2, 3) {
        let other = pool.occupy().await;
        let pulls = Arc::new(AtomicUsize::new(0));
        let mut s = pool.ordered(counted(0..100u32, &pulls), |i| async move {
            sleep(Duration::from_secs(3600)).await;
            i
        });
        poll_idle(&mut s).await;
        assert_eq!(
            pulls.load(Ordering::SeqCst),
            capacity - 1,
            "{}",
            pool.name()
        );
        drop(s);
        other.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn backpressure_pulls_as_room_frees() {
    for (pool, capacity) in Pool::all(2, 2) {
        let pulls = Arc::new(AtomicUsize::new(0));
        let mut s = pool.unordered(counted(0..20u32, &pulls), |i| async move {
            sleep(Duration::from_secs(1)).await;
            i
        });
        assert!(poll_idle(&mut s).await.is_empty());
        assert_eq!(pulls.load(Ordering::SeqCst), capacity);
        // Two jobs run per second: each second frees two places, and two more are pulled.
        let mut got = 0;
        while let Some(r) = s.next().await {
            r.unwrap();
            got += 1;
            let pulled = pulls.load(Ordering::SeqCst);
            assert!(
                pulled <= got + capacity,
                "{}: {pulled} pulled, {got} out",
                pool.name()
            );
        }
        assert_eq!(got, 20);
    }
}

#[tokio::test(start_paused = true)]
async fn ordered_bounds_results_waiting_out_of_order() {
    for (pool, capacity) in Pool::all(2, 2) {
        let pulls = Arc::new(AtomicUsize::new(0));
        // Input 0 takes an hour; the others a second: they finish and wait for it.
        let mut s = pool.ordered(counted(0..100u64, &pulls), |i| async move {
            sleep(Duration::from_secs(if i == 0 { 3600 } else { 1 })).await;
            i
        });
        for _ in 0..10 {
            assert!(poll_idle(&mut s).await.is_empty());
            sleep(Duration::from_secs(5)).await;
        }
        // The pool has room again (only input 0 still runs), but the stream holds
        // `capacity` inputs already: it pulls no more.
        assert_eq!(pool.running(), 1, "{}", pool.name());
        assert_eq!(pulls.load(Ordering::SeqCst), capacity, "{}", pool.name());
        assert_eq!(s.in_flight(), capacity);
        let first = s.next().await.unwrap().unwrap();
        assert_eq!(first, 0);
        let rest: Vec<u64> = s.map(Result::unwrap).collect().await;
        assert_eq!(rest, (1..100).collect::<Vec<_>>(), "{}", pool.name());
    }
}

/// An ordered stream held up by its first job still pulls inputs as the pool frees room:
/// its later jobs' ends, which it has no result to yield for, reach it through its wait
/// for room.
#[tokio::test(start_paused = true)]
async fn ordered_pulls_as_room_frees_while_its_first_job_runs() {
    for (pool, capacity) in Pool::all(3, 1) {
        // A place taken by another user: the stream's window (`capacity`) is larger than
        // the room it finds.
        let other = pool.occupy().await;
        let pulls = Arc::new(AtomicUsize::new(0));
        let mut s = pool.ordered(counted(0..100u64, &pulls), |i| async move {
            sleep(Duration::from_secs(if i == 0 { 100 } else { 1 })).await;
            i
        });
        // Waiting for input 0 all along.
        assert!(tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .is_err());
        assert_eq!(
            pulls.load(Ordering::SeqCst),
            capacity,
            "{}: room freed by jobs 1.. let the stream fill its window",
            pool.name()
        );
        assert_eq!(s.next().await.unwrap().unwrap(), 0);
        drop(s);
        other.abort();
    }
}

/// A pool grown while a stream's window is full and its jobs run: the stream pulls up to
/// the new size at once, not when a job ends (a review of e945bdd found an ordered stream
/// waiting for its first job; an unordered one waited for any of its jobs).
#[tokio::test(start_paused = true)]
async fn a_stream_pulls_more_as_soon_as_the_pool_grows() {
    for (pool, capacity) in Pool::all(2, 0) {
        for ordered in [true, false] {
            let pulls = Arc::new(AtomicUsize::new(0));
            let inputs = counted(0..100u64, &pulls);
            let job = |i| async move {
                sleep(Duration::from_secs(100)).await;
                i
            };
            let mut s: Pin<Box<dyn Stream<Item = _> + Send>> = if ordered {
                Box::pin(pool.ordered(inputs, job))
            } else {
                Box::pin(pool.unordered(inputs, job))
            };
            let first = tokio::spawn(async move { (s.next().await, s) });
            sleep(Duration::from_millis(500)).await;
            assert_eq!(pulls.load(Ordering::SeqCst), capacity, "{}", pool.name());
            pool.set_max_concurrency(6);
            sleep(Duration::from_secs(5)).await;
            assert_eq!(
                pulls.load(Ordering::SeqCst),
                6,
                "{} ordered={ordered}",
                pool.name()
            );
            pool.set_max_concurrency(2);
            let (first, s) = first.await.unwrap();
            first.unwrap().unwrap();
            drop(s);
        }
    }
}

thread_local! {
    /// Run by the next clone of a [`hooked`] waker (then cleared).
    static ON_CLONE: std::cell::RefCell<Option<Box<dyn FnOnce()>>> = const { std::cell::RefCell::new(None) };
}

static HOOKED: std::task::RawWakerVTable =
    std::task::RawWakerVTable::new(run_hook, |_| {}, |_| {}, |_| {});

fn run_hook(_: *const ()) -> std::task::RawWaker {
    if let Some(hook) = ON_CLONE.with(|h| h.borrow_mut().take()) {
        hook();
    }
    std::task::RawWaker::new(std::ptr::null(), &HOOKED)
}

/// A waker that does nothing when woken, and runs [`ON_CLONE`]'s hook when cloned.
fn hooked() -> std::task::Waker {
    // SAFETY: the vtable's functions ignore the data pointer (null), do nothing when
    // woken or dropped, and a clone returns the same kind of waker: the `RawWaker`
    // contract holds.
    unsafe { std::task::Waker::from_raw(std::task::RawWaker::new(std::ptr::null(), &HOOKED)) }
}

/// The same, with the pool grown between the stream's last look at its full window and
/// its wait (while its first job's handle stores the waker): no watcher is registered
/// then, and the stream must still see the room (a review of 9f3c7ba found it waiting for
/// its first job there).
#[tokio::test(start_paused = true)]
async fn ordered_pulls_more_when_the_pool_grows_just_before_it_waits() {
    for (pool, capacity) in Pool::all(2, 0) {
        let pool = Arc::new(pool);
        let pulls = Arc::new(AtomicUsize::new(0));
        let mut s = pool.ordered(counted(0..100u64, &pulls), |i| async move {
            sleep(Duration::from_secs(if i == 0 { 100 } else { 1 })).await;
            i
        });
        let (grower, counted_pulls) = (Arc::clone(&pool), Arc::clone(&pulls));
        ON_CLONE.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                assert_eq!(counted_pulls.load(Ordering::SeqCst), capacity);
                grower.set_max_concurrency(6);
            }))
        });
        let waker = hooked();
        assert!(Pin::new(&mut s)
            .poll_next(&mut Context::from_waker(&waker))
            .is_pending());
        assert!(ON_CLONE.with(|h| h.borrow().is_none()), "the hook ran");
        assert_eq!(pulls.load(Ordering::SeqCst), 6, "{}", pool.name());
        drop(s);
    }
}

#[tokio::test(start_paused = true)]
async fn unordered_bounds_results_not_yet_taken() {
    for (pool, capacity) in Pool::all(2, 1) {
        let pulls = Arc::new(AtomicUsize::new(0));
        let mut s = pool.unordered(counted(0..100u64, &pulls), |i| async move { i });
        // A slow consumer: every job has finished (and freed its place in the pool)
        // before the next result is taken. Without a bound, each poll would pull a pool's
        // worth of inputs more than it yields.
        let mut got = 0;
        while let Some(r) = s.next().await {
            r.unwrap();
            got += 1;
            settle().await;
            assert!(s.in_flight() <= capacity, "{}", pool.name());
            let pulled = pulls.load(Ordering::SeqCst);
            assert!(
                pulled <= got + capacity,
                "{}: {pulled} pulled, {got} out",
                pool.name()
            );
        }
        assert_eq!(got, 100);
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_stream_aborts_its_jobs() {
    for (pool, capacity) in Pool::all(2, 3) {
        for ordered in [false, true] {
            let live = Live::default();
            let job = {
                let live = live.clone();
                move |i: u64| {
                    let live = live.clone();
                    async move {
                        let _g = live.enter();
                        sleep(Duration::from_secs(3600)).await;
                        i
                    }
                }
            };
            let mut s: Pin<Box<dyn Stream<Item = _> + Send>> = if ordered {
                Box::pin(pool.ordered(stream::iter(0..100u64), job))
            } else {
                Box::pin(pool.unordered(stream::iter(0..100u64), job))
            };
            assert!(poll_idle(&mut s).await.is_empty());
            assert_eq!(live.now(), 2);
            drop(s);
            settle().await;
            sleep(Duration::from_millis(1)).await;
            assert_eq!(
                live.now(),
                0,
                "{} ordered={ordered}: jobs dropped",
                pool.name()
            );
            // Queued jobs were dropped without running: no third one ever started.
            assert_eq!(live.started(), 2, "{}", pool.name());
            let stats = pool.stats();
            assert_eq!((stats.running, stats.queued), (0, 0), "{}", pool.name());
            assert_eq!(
                pool.room(),
                capacity,
                "{}: every place given back",
                pool.name()
            );
        }
    }
}

/// A stream that yields its items, then stays pending (a slow producer).
struct ThenPending<I>(I);

impl<I: Iterator + Unpin> Stream for ThenPending<I> {
    type Item = I::Item;
    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<I::Item>> {
        match self.0.next() {
            Some(x) => Poll::Ready(Some(x)),
            None => Poll::Pending,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_place_held_for_a_slow_input_is_given_back() {
    for (pool, capacity) in Pool::all(2, 2) {
        let mut s = pool.unordered(ThenPending(0..1u32), |i| async move { i });
        assert_eq!(s.next().await.unwrap().unwrap(), 0);
        assert!(poll_once(&mut s).await.is_pending());
        // Waiting for its next input, the stream holds no place: it gave back the one it
        // took for that input (before the review of the streams, it held it; see
        // `review_streams::an_idle_input_holds_no_place_in_the_pool`).
        assert_eq!(pool.room(), capacity, "{}", pool.name());
        settle().await;
        drop(s);
        assert_eq!(pool.room(), capacity, "{}", pool.name());
    }
}

#[tokio::test(start_paused = true)]
async fn the_end_of_the_inputs_gives_the_place_back() {
    for (pool, capacity) in Pool::all(2, 2) {
        let s = pool.unordered(stream::iter(0..5u32), |i| async move { i });
        assert_eq!(s.count().await, 5);
        settle().await;
        assert_eq!(pool.room(), capacity, "{}", pool.name());
        let s = pool.ordered(stream::iter(Vec::<u32>::new()), |i| async move { i });
        assert_eq!(s.count().await, 0);
        assert_eq!(pool.room(), capacity, "{}", pool.name());
    }
}

#[tokio::test(start_paused = true)]
async fn a_shut_down_pool_ends_the_stream() {
    for (pool, _) in Pool::all(2, 2) {
        pool.shutdown().await;
        let pulls = Arc::new(AtomicUsize::new(0));
        let mut s = pool.unordered(counted(0..5u32, &pulls), |i| async move { i });
        assert!(s.next().await.is_none());
        assert_eq!(
            s.refused(),
            Some(SubmitErrorKind::Closed),
            "{}",
            pool.name()
        );
        assert_eq!(
            pulls.load(Ordering::SeqCst),
            0,
            "admission comes before the pull"
        );
    }
}

/// A panic in the mapping function reaches the caller and leaves the pool its place.
#[tokio::test(start_paused = true)]
async fn a_panic_in_the_mapping_function_gives_the_place_back() {
    use futures_util::FutureExt;
    let pool = CommonAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(0)
        .process_wide(false)
        .build();
    let mut s = pool.map_unordered(stream::iter(0..1u32), |_| -> std::future::Ready<u32> {
        panic!("mapping function fails")
    });
    let caught = std::panic::AssertUnwindSafe(s.next()).catch_unwind().await;
    assert!(caught.is_err(), "f panicked inside poll_next");
    drop(s);
    let stats = pool.stats();
    let r = pool.try_submit(async { 1 });
    assert!(
        r.is_ok(),
        "an empty pool of one slot refuses a job: the place taken for f's input leaked \
         ({stats:?})"
    );
    assert_eq!(within("job", r.ok().unwrap()).await.unwrap(), 1);
}

/// A stream holding a place for a slow input pulls nothing more once its pool shuts down.
#[tokio::test(start_paused = true)]
async fn an_input_pulled_and_refused_is_not_silently_dropped() {
    let pool = CommonAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(1)
        .process_wide(false)
        .build();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let inputs = stream::poll_fn(move |cx| {
        let r = rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = r {
            p.fetch_add(1, Ordering::SeqCst);
        }
        r
    });
    let mut s = pool.map_unordered(inputs, |i| async move { i });
    assert!(tokio::time::timeout(Duration::from_millis(1), s.next())
        .await
        .is_err());
    within("shutdown", pool.shutdown()).await;
    tx.send(7).unwrap();
    drop(tx);
    let items: Vec<_> = within("stream", (&mut s).collect::<Vec<_>>()).await;
    let pulled = pulled.load(Ordering::SeqCst);
    assert_eq!(
        items.len(),
        pulled,
        "inputs pulled {pulled}, items {items:?}, refused {:?}",
        s.refused()
    );
    assert_eq!(
        pulled, 0,
        "the input came after the shutdown: it is not pulled"
    );
    assert_eq!(s.refused(), Some(SubmitErrorKind::Closed));
}

#[tokio::test(start_paused = true)]
async fn abort_all_stops_the_stream() {
    for (pool, capacity) in Pool::all(2, 2) {
        let mut s = pool.ordered(stream::iter(0..10u32), |i| async move {
            sleep(Duration::from_secs(3600)).await;
            i
        });
        poll_idle(&mut s).await;
        s.abort_all();
        let results: Vec<_> = s.collect().await;
        assert_eq!(results.len(), capacity, "{}", pool.name());
        assert!(results
            .iter()
            .all(|r| r.as_ref().unwrap_err().is_cancelled()));
    }
}

#[test]
fn streams_are_send_and_unpin() {
    fn send_unpin<T: Send + Unpin>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let pool = CommonAioPool::new(1, 1);
    // A result type that is not `Unpin`, and an input stream that is not `Unpin` either.
    let s = pool.map_unordered(
        stream::iter(0..1).then(|i| async move { i }),
        |i| async move { (i, std::marker::PhantomPinned) },
    );
    send_unpin(&s);
    let s = SmartAioPool::builder()
        .auto_shutdown(false)
        .build()
        .map_ordered(stream::iter(0..1), |i| move || async move { i });
    send_unpin(&s);
}

#[tokio::test(start_paused = true)]
async fn a_job_can_fan_out_through_its_own_full_pool() {
    // Two slots: the outer job holds one; its stream's jobs take turns in the other. A
    // plain `submit().await` there would fail with WouldDeadlock once the pool is full.
    let common = CommonAioPool::new(2, 0);
    let inner = common.clone();
    let n = common
        .run(async move {
            let s = inner.map_unordered(stream::iter(0..10u32), |i| async move {
                sleep(Duration::from_millis(10)).await;
                i
            });
            let results: Vec<_> = s.collect().await;
            results.into_iter().map(Result::unwrap).count()
        })
        .await
        .unwrap();
    assert_eq!(n, 10);

    let no_queue = NoQueueAioPool::new(2);
    let inner = no_queue.clone();
    let values: Vec<u32> = no_queue
        .run(async move {
            let s = inner.map_ordered(stream::iter(0..10u32), |i| async move { i });
            s.map(Result::unwrap).collect().await
        })
        .await
        .unwrap();
    assert_eq!(values, (0..10).collect::<Vec<_>>());

    let smart = SmartAioPool::builder()
        .max_concurrency(2)
        .max_queue_size(0)
        .auto_shutdown(false)
        .build();
    let inner = smart.clone();
    let n = smart
        .run(move || {
            let inner = inner.clone();
            async move {
                let s = inner.map_unordered(stream::iter(0..10u32), |i| move || async move { i });
                s.count().await
            }
        })
        .await
        .unwrap();
    assert_eq!(n, 10);
}

/// An ordered stream mapped by a job through its own full pool retries a refused input as
/// soon as any of its jobs ends, not only the one first in order. Four slots: another
/// user's job in one, the outer job in another, so the stream has room for two jobs and a
/// window of four; input 0 takes 5 s, the others 1 s. Retried at each end, it ends at 8 s;
/// woken only by the end of the job first in order, at 9 s.
#[tokio::test(start_paused = true)]
async fn an_ordered_fan_out_in_its_own_full_pool_retries_as_any_job_ends() {
    macro_rules! fan_out {
        ($pool:expr) => {{
            let pool = $pool;
            let other = pool
                .submit(std::future::pending::<()>())
                .await
                .unwrap()
                .abort_handle();
            let inner = pool.clone();
            let start = tokio::time::Instant::now();
            let values: Vec<u64> = pool
                .run(async move {
                    let s = inner.map_ordered(stream::iter(0..10u64), |i| async move {
                        sleep(Duration::from_secs(if i == 0 { 5 } else { 1 })).await;
                        i
                    });
                    s.map(Result::unwrap).collect().await
                })
                .await
                .unwrap();
            other.abort();
            assert_eq!(values, (0..10).collect::<Vec<_>>());
            start.elapsed()
        }};
    }
    for took in [
        fan_out!(CommonAioPool::new(4, 0)),
        fan_out!(NoQueueAioPool::new(4)),
    ] {
        assert!(took < Duration::from_secs(9), "took {took:?}");
    }
}

/// A job's fan-out through its own full pool, refused room (`WouldDeadlock`) and waiting
/// for one of its jobs to end, pulls more as soon as the pool grows, though none of its
/// jobs ends (a review of d1f4b66 found it waiting for such an end).
#[tokio::test(start_paused = true)]
async fn a_fan_out_refused_room_in_its_own_pool_pulls_more_when_the_pool_grows() {
    macro_rules! pulls_before_and_after_grow {
        ($map:ident) => {{
            let pool = CommonAioPool::new(2, 0);
            let inner = pool.clone();
            let pulls = Arc::new(AtomicUsize::new(0));
            let inputs = counted(0..100u64, &pulls);
            let outer = pool
                .submit(async move {
                    let mut s = inner.$map(inputs, |_| std::future::pending::<u64>());
                    // Waits all along; none of the stream's jobs ever ends.
                    assert!(tokio::time::timeout(Duration::from_secs(10), s.next())
                        .await
                        .is_err());
                })
                .await
                .unwrap();
            sleep(Duration::from_secs(1)).await;
            let before = pulls.load(Ordering::SeqCst);
            pool.set_max_concurrency(5);
            sleep(Duration::from_secs(1)).await;
            let after = pulls.load(Ordering::SeqCst);
            outer.await.unwrap();
            (before, after)
        }};
    }
    // 2 slots, the outer job in one: 1 input pulled; 5 slots: 4.
    assert_eq!(pulls_before_and_after_grow!(map_ordered), (1, 4), "ordered");
    assert_eq!(
        pulls_before_and_after_grow!(map_unordered),
        (1, 4),
        "unordered"
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_alone_in_its_full_pool_is_refused() {
    let pool = CommonAioPool::new(1, 0);
    let inner = pool.clone();
    let (items, refused) = pool
        .run(async move {
            let mut s = inner.map_unordered(stream::iter(0..3u32), |i| async move { i });
            let items = (&mut s).count().await;
            (items, s.refused())
        })
        .await
        .unwrap();
    assert_eq!(items, 0);
    assert_eq!(refused, Some(SubmitErrorKind::WouldDeadlock));
}

/// A stream counts as a handle of its pool: a pool dropped right after making the stream
/// stays open until the stream is done (before, every input was refused with `Closed`).
#[tokio::test]
async fn a_stream_keeps_its_pool_open() {
    let common = CommonAioPool::new(2, 4).map_unordered(stream::iter(0..5), |i| async move { i });
    let no_queue = NoQueueAioPool::new(2).map_unordered(stream::iter(0..5), |i| async move { i });
    for (name, s) in [("common", common), ("no_queue", no_queue)] {
        let mut out: Vec<_> = s.map(|r| r.unwrap()).collect().await;
        out.sort_unstable();
        assert_eq!(out, [0, 1, 2, 3, 4], "{name}");
    }
}

/// Finding 76 (a review of groups and streams on e5dd07b). `Stream::size_hint`'s lower
/// bound is a promise (the stream yields at least that many
/// items). A stream over a closed pool (the `refused` doc example) says it will yield 3
/// and yields none.
#[tokio::test(start_paused = true)]
async fn size_hint_does_not_promise_items_a_closed_pool_will_never_yield() {
    let pool = CommonAioPool::builder()
        .max_concurrency(2)
        .max_queue_size(2)
        .process_wide(false)
        .build();
    pool.shutdown().await;
    let results = pool.map_unordered(stream::iter(0..3u32), |i| async move { i });
    let (lo, _) = results.size_hint();
    let yielded = results.collect::<Vec<_>>().await.len();
    assert!(
        yielded >= lo,
        "size_hint promised at least {lo} items; the stream yielded {yielded}"
    );
}
