//! Pins: a submit with a timeout that waits for room when its SmartAioPool becomes
//! stranded. The untimed wait checks, each time it is woken, whether the pool is stranded
//! and offers its own runtime (the crate docs' "Which runtime"); the timed wait
//! (`Engine::admit_waiting_within`) has no such check, which a note of 7 December
//! suspected of making it wait out its timeout. It does not: a submit that has to wait
//! makes its runtime known to the pool first (`Engine::full`), so the runtime's end that
//! cuts the pool's runs off finds that live runtime and queues the re-runs there; the
//! pool is not stranded. These tests keep it so for the pool's, a group's and a
//! stream's timed waits, with the untimed wait beside them.

mod support;

use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use futures_util::StreamExt;
use nb_aiopool::{SmartAioPool, SubmitOptions};
use support::*;

/// Far beyond the test's bound: a wait that lasts it did not offer its runtime.
const LONG: Duration = Duration::from_secs(120);

/// Polls `fut` once: whether it was pending.
async fn pending_once<F: std::future::Future + Unpin>(mut fut: F) -> bool {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::pin::Pin::new(&mut fut).poll(cx).is_pending())
    })
    .await
}

/// The three timed waits of a submit into a full SmartAioPool.
#[derive(Clone, Copy, Debug)]
enum TimedWait {
    Pool,
    Group,
    Stream,
}

/// `pool` is full (its one slot held by a run of runtime A that never ends, see
/// [`full_smart_pool_on_a_runtime`]). A timed submit from runtime B waits for room; then
/// A ends, which cuts the run off and queues its re-run: the pool is stranded, full.
/// Returns the timed task's value and the stranded task's, each awaited within 20 s.
fn timed_submit_waiting_when_stranded(how: TimedWait) -> (u32, u32) {
    let runs = Arc::new(AtomicUsize::new(0));
    let (pool, rt_a, stranded) = full_smart_pool_on_a_runtime(&runs);
    let rt_b = multi_thread_of(1);
    let (waiting_tx, waiting_rx) = mpsc::channel();
    let p = pool.clone();
    let submitted = rt_b.spawn(async move {
        let opts = SubmitOptions::new().timeout(LONG);
        match how {
            TimedWait::Pool => {
                let fut = p.submit_with(|| async { 5u32 }, opts);
                let mut fut = std::pin::pin!(fut);
                // Polled once here: it waits for room.
                assert!(pending_once(fut.as_mut()).await, "the pool is full");
                waiting_tx.send(()).unwrap();
                let h = fut.await.map_err(|e| e.kind()).expect("the timed submit");
                h.await.expect("the timed task")
            }
            TimedWait::Group => {
                let mut group = p.group();
                {
                    let fut = group.submit_with(|| async { 5u32 }, opts);
                    let mut fut = std::pin::pin!(fut);
                    assert!(pending_once(fut.as_mut()).await, "the pool is full");
                    waiting_tx.send(()).unwrap();
                    fut.await
                        .map_err(|e| e.kind())
                        .expect("the group's timed submit");
                }
                let got = group.join_all().await;
                got.into_iter().next().unwrap().expect("the group's task")
            }
            TimedWait::Stream => {
                let inputs = futures_util::stream::iter([5u32]);
                let mut results = std::pin::pin!(p
                    .map_unordered(inputs, |v| move || async move { v })
                    .with_options(move |_| opts.clone()));
                assert!(pending_once(results.next()).await, "the pool is full");
                waiting_tx.send(()).unwrap();
                let got = results.next().await.expect("one result");
                got.expect("the stream's task")
            }
        }
    });
    waiting_rx.recv().unwrap();
    drop(rt_a); // the run is cut off and queued again: the pool is stranded, full
    let value = on_thread_within(
        &format!("{how:?}: the timed submit waiting when its pool became stranded"),
        20,
        move || rt_b.block_on(submitted).unwrap(),
    );
    let stranded = on_thread_within("the stranded task", 20, move || stranded.blocking_wait());
    drop(pool);
    (value, stranded.expect("the stranded task's value"))
}

/// Pinned: a user submits with a timeout (`SubmitOptions::timeout`) into a full
/// SmartAioPool from a runtime of theirs, while the runtime that ran the pool's task ends.
/// The re-run of the task cut off runs on the submitter's runtime, and the submit gets
/// its room long before its timeout (2 minutes here).
#[test]
fn a_timed_submit_offers_its_runtime_to_a_stranded_pool() {
    assert_eq!(timed_submit_waiting_when_stranded(TimedWait::Pool), (5, 9));
}

/// Pinned: as above, for a task group's `submit_with` with a timeout (its wait is the pool's).
#[test]
fn a_groups_timed_submit_offers_its_runtime_to_a_stranded_pool() {
    assert_eq!(timed_submit_waiting_when_stranded(TimedWait::Group), (5, 9));
}

/// Pinned: as above, for a map stream's input with a timeout (`with_options`), pulled while the
/// pool was full.
#[test]
fn a_streams_timed_input_offers_its_runtime_to_a_stranded_pool() {
    assert_eq!(
        timed_submit_waiting_when_stranded(TimedWait::Stream),
        (5, 9)
    );
}

/// Pinned: the untimed submit, the case the docs were written for, in the same shape.
#[test]
fn an_untimed_submit_offers_its_runtime_to_a_stranded_pool() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (pool, rt_a, stranded) = full_smart_pool_on_a_runtime(&runs);
    let rt_b = multi_thread_of(1);
    let (waiting_tx, waiting_rx) = mpsc::channel();
    let p: SmartAioPool = pool.clone();
    let submitted = rt_b.spawn(async move {
        let fut = p.submit(|| async { 5u32 });
        let mut fut = std::pin::pin!(fut);
        assert!(pending_once(fut.as_mut()).await, "the pool is full");
        waiting_tx.send(()).unwrap();
        fut.await.expect("the submit").await.expect("the task")
    });
    waiting_rx.recv().unwrap();
    drop(rt_a);
    let value = on_thread_within("the untimed submit", 20, move || {
        rt_b.block_on(submitted).unwrap()
    });
    assert_eq!(value, 5);
    let got = on_thread_within("the stranded task", 20, move || stranded.blocking_wait());
    assert_eq!(got.expect("its value"), 9);
}
