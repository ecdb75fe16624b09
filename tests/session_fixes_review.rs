//! A helper's review of the session's fixes 289-299 (on a121692): what the fixes of the
//! groups (292-296) and the map streams (297-299) leave or risk. The faults' tests come
//! first, the pins after them.

mod counting_alloc;
mod support;

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt};
use nb_aiopool::SubmitErrorKind;
use tokio::sync::oneshot;
use tokio::time::timeout;

/// Polls `s` once with a waker that does nothing.
fn poll_once<S: Stream + Unpin>(s: &mut S) -> Poll<Option<S::Item>> {
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    s.poll_next_unpin(&mut cx)
}

/// Polls `f` once, with the current task's waker.
async fn poll_now<F: std::future::Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx))).await
}

// ----- faults ------------------------------------------------------------------------------

/// Finding 296's fix gives a cancel-on-error group's abort registry (a `Slab`) its room
/// back only once the registry is *empty* (`unwatch`). A long-lived group that always has
/// one task left (a watchdog, a listener, the next request in flight) never empties it:
/// after a burst of 100,000 tasks, all joined, the registry keeps their 100,000 entries'
/// room (2.4 MB) for the group's life. The group's docs ("# Memory": "once the tasks of a
/// burst have all been joined, the room the group took to list them is given back") say
/// otherwise. Without cancel-on-error the same group keeps nothing: the list of tasks is
/// cut off as its front is joined, and the set polled together frees each node.
#[test]
fn a_cancel_on_error_group_with_one_task_left_keeps_no_memory_of_a_joined_burst() {
    let rt = support::current_thread();
    let n: u64 = 100_000;
    let mut held = Vec::new();
    for watched in [false, true] {
        let kept = rt.block_on(async {
            let pool = support::common_local(2, 16);
            let mut g = pool.group::<Result<u64, ()>>();
            if watched {
                g = g.cancel_on_error(true);
            }
            // The task that stays: it holds one slot for the group's life.
            g.submit(std::future::pending()).await.unwrap();
            // Warm-up: what the runtime, the pool and the group make once.
            for i in 0..1000 {
                g.submit(async move { Ok(i) }).await.unwrap();
            }
            for _ in 0..1000 {
                g.join_next().await.unwrap().unwrap().unwrap();
            }
            let before = counting_alloc::live_bytes();
            for i in 0..n {
                g.submit(async move { Ok(i) }).await.unwrap();
            }
            let mut sum = 0;
            for _ in 0..n {
                sum += g.join_next().await.unwrap().unwrap().unwrap();
            }
            assert_eq!(sum, (0..n).sum::<u64>());
            assert_eq!(g.len(), 1, "the task left");
            let kept = counting_alloc::live_bytes() - before;
            g.abort_all();
            drop(g);
            kept
        });
        held.push((watched, kept));
    }
    assert!(
        held.iter().all(|&(_, kept)| kept < 64 * 1024),
        "a group with one task left that joined a burst of {n} tasks still holds more bytes \
         than before them (per group, with cancel on error or not, the bytes): {held:?}"
    );
}

/// Finding 297's fix registers every map stream whose input pends among its pool's size
/// watchers (`SizeWatchers`, `src/engine/watchers.rs`; before, only a stream whose window
/// was full did). The pool keeps a weak reference per watcher and drops the dead ones
/// only at the next `watch()`, by walking the whole list: so each stream's first idle
/// input costs a walk over every stream of the pool under the list's lock (quadratic in
/// the streams of a shared pool, one per connection), and the streams that ended stay
/// listed, each keeping its watcher's allocation, until another stream registers (the
/// list's room, 8 bytes per stream of the largest burst, for good). Here 10,000 streams
/// that waited for their input once and were dropped leave about 530 kB in the pool.
#[test]
fn idle_streams_that_were_dropped_leave_no_memory_in_their_pool() {
    let rt = support::current_thread();
    let n = 10_000;
    let kept = rt.block_on(async {
        let pool = support::common_local(2, 2);
        let idle = |pool: &nb_aiopool::CommonAioPool| {
            let mut s = pool.map_unordered(stream::pending::<u32>(), |i| async move { i });
            assert!(poll_once(&mut s).is_pending(), "an idle input");
            s
        };
        // Warm-up: what the pool makes once.
        drop((0..64).map(|_| idle(&pool)).collect::<Vec<_>>());
        let before = counting_alloc::live_bytes();
        // A burst of streams (connections), each waiting for its input, then gone.
        let streams: Vec<_> = (0..n).map(|_| idle(&pool)).collect();
        drop(streams);
        let after_burst = counting_alloc::live_bytes() - before;
        // One more stream waits for its input: it drops the dead watchers from the list.
        drop(idle(&pool));
        let after_next = counting_alloc::live_bytes() - before;
        assert_eq!(pool.stats().unfinished(), 0);
        (after_burst, after_next)
    });
    assert!(
        kept.0 < 64 * 1024 && kept.1 < 64 * 1024,
        "{n} map streams that waited for their input at once and were dropped left bytes in \
         their pool (right after them, and after one more stream waited): {kept:?}"
    );
}

// ----- pins -------------------------------------------------------------------------------

/// Pin (293): a cancel-on-error group's submit waiting for room when a task of its group
/// fails is refused with `Closed` and hands its future back, and the place the failing
/// task frees goes to the plain submit that waited behind it (nothing leaks, the line
/// keeps its order), on the three pools' CommonAioPool and a current-thread runtime.
#[test]
fn pin_a_refused_waiting_group_submit_leaves_its_place_to_the_next_in_line() {
    let rt = support::current_thread();
    rt.block_on(async {
        // Two places, no queue: the group's failing task and a blocker fill it.
        let pool = support::common_local(2, 0);
        let mut g = pool.group::<Result<u32, ()>>().cancel_on_error(true);
        let (fail_tx, fail_rx) = oneshot::channel::<()>();
        g.submit(async move {
            let _ = fail_rx.await;
            Err(())
        })
        .await
        .unwrap();
        let (block_tx, block_rx) = oneshot::channel::<()>();
        let blocker = pool
            .submit(async move {
                let _ = block_rx.await;
            })
            .await
            .unwrap();
        let refused = Arc::new(AtomicBool::new(false));
        let behind_ran = Arc::new(AtomicBool::new(false));
        let mut waiting = Box::pin(g.submit(async { Ok(1) }));
        // The group's submit waits first, then a plain one behind it.
        assert!(poll_now(&mut waiting.as_mut()).await.is_pending());
        let ran = Arc::clone(&behind_ran);
        let mut behind = pin!(pool.submit(async move { ran.store(true, Ordering::SeqCst) }));
        assert!(poll_now(&mut behind.as_mut()).await.is_pending());
        fail_tx.send(()).unwrap();
        let r = support::within("the waiting group submit's refusal", waiting).await;
        match r {
            Err(e) => {
                assert_eq!(e.kind(), SubmitErrorKind::Closed);
                refused.store(true, Ordering::SeqCst);
                let _fut = e.into_inner();
            }
            Ok(id) => panic!("the waiting group submit was accepted after the trip: {id}"),
        }
        let h = support::within("the plain submit behind it", behind)
            .await
            .unwrap();
        support::within("the plain task", h).await.unwrap();
        assert!(behind_ran.load(Ordering::SeqCst));
        block_tx.send(()).unwrap();
        blocker.await.unwrap();
        let results = g.join_all().await;
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].as_ref().unwrap(), &Err(()));
        support::within("the pool's wait", pool.wait()).await;
        // Every place is back: two tasks fit at once again.
        let a = pool.try_submit(std::future::pending::<()>()).unwrap();
        let b = pool.try_submit(std::future::pending::<()>()).unwrap();
        assert!(pool.try_submit(async {}).unwrap_err().is_full());
        a.abort();
        b.abort();
        assert!(refused.load(Ordering::SeqCst));
    });
}

/// Pin (293, the Notify's registration): a group's submit that finds the pool full races
/// the failure of the group's running task on a 2-worker runtime (the failure at a
/// varying instant around the submit's look at `tripped`, its try for room and its
/// `Notified`'s creation): it is refused with `Closed` every time, never left waiting.
#[test]
fn pin_a_group_submit_racing_its_groups_failure_is_always_refused() {
    let rt = support::multi_thread_of(2);
    rt.block_on(async {
        for round in 0..300u32 {
            let pool = support::common_local(2, 0);
            let (block_tx, block_rx) = oneshot::channel::<()>();
            let blocker = pool
                .submit(async move {
                    let _ = block_rx.await;
                })
                .await
                .unwrap();
            let mut g = pool.group::<Result<u32, ()>>().cancel_on_error(true);
            let spins = (round % 30) * 40;
            let go = Arc::new(AtomicBool::new(false));
            let go2 = Arc::clone(&go);
            g.submit(async move {
                while !go2.load(Ordering::Acquire) {
                    tokio::task::yield_now().await;
                }
                for _ in 0..spins {
                    std::hint::spin_loop();
                }
                Err(())
            })
            .await
            .unwrap();
            go.store(true, Ordering::Release);
            let r = timeout(Duration::from_secs(10), g.submit(async { Ok(2) })).await;
            match r {
                Ok(Err(e)) => assert_eq!(e.kind(), SubmitErrorKind::Closed, "round {round}"),
                // Room comes only when the failing task's slot frees, after its poll
                // tripped the group: never admitted.
                Ok(Ok(id)) => panic!("round {round}: admitted after the failure: {id}"),
                Err(_) => panic!(
                    "round {round}: a group submit waiting for room was not refused within \
                     10 s of its group's failure"
                ),
            }
            let results = timeout(Duration::from_secs(10), g.join_all())
                .await
                .unwrap_or_else(|_| panic!("round {round}: the group's join hung"));
            assert_eq!(results[0].as_ref().unwrap(), &Err(()), "round {round}");
            block_tx.send(()).unwrap();
            blocker.await.unwrap();
        }
    });
}

/// Pin (298, the line's order): a stream whose input is idle, granted a place in the
/// admission line ahead of a plain submit, gives it to that submit at once; once its
/// input has an item, it takes a place again (behind whoever waits then) and maps it.
/// So a stream's give-back neither skips the line nor loses its input.
#[test]
fn pin_an_idle_stream_granted_a_place_passes_it_on_and_maps_its_next_input() {
    let rt = support::current_thread();
    rt.block_on(async {
        let pool = support::common_local(1, 0);
        let (block_tx, block_rx) = oneshot::channel::<()>();
        let blocker = pool
            .submit(async move {
                let _ = block_rx.await;
            })
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let inputs = tokio_stream_from(rx);
        let mut s = pool.map_unordered(inputs, |i| async move { i * 10 });
        // The stream waits for room first (its input is not even asked yet).
        assert!(poll_now(&mut s.next()).await.is_pending());
        let ran = Arc::new(AtomicBool::new(false));
        let ran2 = Arc::clone(&ran);
        let mut behind = pin!(pool.submit(async move { ran2.store(true, Ordering::SeqCst) }));
        assert!(poll_now(&mut behind.as_mut()).await.is_pending());
        // The blocker's place goes to the stream, first in line; its input is idle, so
        // it passes the place on to the plain submit.
        block_tx.send(()).unwrap();
        blocker.await.unwrap();
        assert!(poll_now(&mut s.next()).await.is_pending());
        let h = support::within("the plain submit behind the idle stream", behind)
            .await
            .unwrap();
        support::within("the plain task", h).await.unwrap();
        assert!(ran.load(Ordering::SeqCst));
        tx.send(4).unwrap();
        let got = support::within("the stream's mapped input", s.next()).await;
        assert_eq!(got.unwrap().unwrap(), 40);
        drop(tx);
        assert!(support::within("the stream's end", s.next())
            .await
            .is_none());
        support::within("the pool's wait", pool.wait()).await;
    });
}

/// An `UnboundedReceiver` as a `Stream` (no `tokio-stream` dependency).
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Unpin {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}
