//! Review r26 of c70618c (ended jobs' runs kept in `Graves` and freed by async submits,
//! idle slots, a 2 ms timer task, `wait()` and the engine's drop).
//!
//! Every test is bounded in time; each failing test shows a bug of that mechanism.

// A test makes a task handle inside one `block_on` and awaits it in another, on purpose.
#![allow(clippy::async_yields_async)]

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool::CommonAioPool;
use tokio::sync::oneshot;

mod support;
use support::{current_thread, multi_thread_of as multi_thread, reach, reach_completed, Counted};

// ----- r26-1: a stale timer and a grave still kept: no timer is armed again --------------

/// r25-2's fix re-arms a timer that has not fired 8 ms after it was armed, but checks that
/// only when the *first* grave is kept or at every 16th (`Graves::keep`). A timer left on
/// a current-thread runtime B that is no longer driven, armed for a result B's job left
/// while the pool was busy, keeps that grave kept: every later result, also one whose task
/// ended on a healthy multi-thread runtime A that the pool knows, is then the 2nd, 3rd...
/// kept, and no timer is armed for it. While the pool stays busy and nobody submits, it is
/// kept (here: not dropped within 2 s; documented: "after about 2 ms, by a tokio task of
/// the pool on a multi-thread runtime it knows").
#[test]
fn a_result_on_a_multi_thread_runtime_is_dropped_though_an_earlier_one_waits_on_an_undriven_runtime(
) {
    let b = current_thread();
    let a = multi_thread(2);
    let pool = b.block_on(async { CommonAioPool::new(4, 10) });
    let on_b = Arc::new(AtomicUsize::new(0));
    // On B only (the pool knows no multi-thread runtime yet): a long job keeps the pool
    // busy; a short detached one ends, its result is kept, the timer is armed on B. Then
    // B is not driven any more (one `block_on` per request).
    let (release_b, gate_b) = oneshot::channel::<()>();
    let long_b = b.block_on(async {
        let long_b = pool
            .submit(async move {
                let _ = gate_b.await;
            })
            .await
            .unwrap();
        let (done, ended) = oneshot::channel::<()>();
        let out = Counted(on_b.clone());
        pool.submit(async move {
            let _ = done.send(());
            out
        })
        .await
        .unwrap()
        .detach();
        tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .expect("the task on B never ended")
            .unwrap();
        long_b
    });
    // On A, a healthy multi-thread runtime: one short detached task.
    let on_a = Arc::new(AtomicUsize::new(0));
    let dropped = a.block_on(async {
        let out = Counted(on_a.clone());
        pool.submit(async move {
            tokio::task::yield_now().await;
            out
        })
        .await
        .unwrap()
        .detach();
        let completed = reach_completed(&pool, 2, Duration::from_secs(5)).await;
        assert_eq!(completed, 2, "the short task on A never ended");
        reach(&on_a, 1, Duration::from_secs(2)).await
    });
    // Clean up: B's long job ends, the pool is waited for on B.
    release_b.send(()).unwrap();
    b.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(5), long_b).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), pool.wait()).await;
    });
    drop(pool);
    drop(b);
    a.shutdown_timeout(Duration::from_secs(5));
    assert_eq!(
        dropped, 1,
        "a detached result whose task ended on a healthy multi-thread runtime was still \
         kept 2 s after its task ended (pool busy): an earlier result kept, its timer on a \
         current-thread runtime no longer driven, and no timer armed again for this one"
    );
}

// ----- r26-2: set_max_concurrency does not bound what is kept -----------------------------

/// Runs 100 short detached tasks through `pool` (a long task keeps it busy), submitted by
/// `try_submit` on a paused current-thread runtime that never goes idle (so the 2 ms timer
/// does not fire); returns how many results were still kept once all 100 had ended.
fn kept_after_100(pool_of: impl FnOnce() -> CommonAioPool) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = pool_of();
        let (release, gate) = oneshot::channel::<()>();
        let long = pool
            .try_submit(async move {
                let _ = gate.await;
            })
            .unwrap_or_else(|_| panic!("the long task was refused"));
        let drops = Arc::new(AtomicUsize::new(0));
        let mut n = 0;
        let mut turns = 0;
        while n < 100 && turns < 200_000 {
            turns += 1;
            let d = drops.clone();
            match pool.try_submit(async move { Counted(d) }) {
                Ok(h) => {
                    h.detach();
                    n += 1;
                }
                Err(_) => tokio::task::yield_now().await,
            }
        }
        assert_eq!(n, 100, "not all 100 tasks were accepted");
        while pool.stats().completed < 100 && turns < 400_000 {
            turns += 1;
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.stats().completed, 100, "not all 100 tasks ended");
        let kept = 100 - drops.load(SeqCst);
        release.send(()).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), long).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), pool.wait()).await;
        kept
    })
}

/// The crate docs: "the pool keeps what ended jobs leave (at most `max_concurrency +
/// max_queue_size` of them, and 256)". A pool made with 254 slots and a queue of 2, then
/// shrunk by `set_max_concurrency(2)`, holds at most 4 jobs, as a pool made with (2, 2)
/// does; but `Graves::most` is fixed when the pool is made (`Engine::new`) and never
/// follows `set_max_concurrency`: the shrunk pool keeps up to 256 ended results (here
/// 1 MiB each would be 100 MiB for a pool of 4).
#[test]
fn a_pool_shrunk_by_set_max_concurrency_keeps_no_more_than_its_new_size() {
    let made_small = kept_after_100(|| CommonAioPool::new(2, 2));
    let shrunk = kept_after_100(|| {
        let pool = CommonAioPool::new(254, 2);
        pool.set_max_concurrency(2);
        pool
    });
    assert!(
        made_small <= 4 && shrunk <= 4,
        "results kept after 100 short detached tasks: {made_small} by a pool made with \
         (2, 2), {shrunk} by a pool made with (254, 2) and shrunk to (2, 2) (documented: at \
         most max_concurrency + max_queue_size)"
    );
}
