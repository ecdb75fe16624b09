//! A SmartAioPool task cut off by the end of its runtime is queued again for any runtime.
//! When no runtime the pool knows is left, awaiting what it feeds (its handle, an ordered
//! stream of it, its group) from a new runtime runs it there: the pending poll offers that
//! runtime to the pool. Before, only a `wait()` or a submit did, and these awaits hung
//! (RELIABILITY.md, finding 158; each test timed out before the fix).

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use nb_aiopool::SmartAioPool;
use support::{current_thread, cut_off_once, multi_thread_of};

/// Fails the test instead of hanging: what the bug did.
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(v) => v,
        Err(_) => panic!(
            "{what} from a new runtime hung (10 s): the task cut off by the end of its \
             runtime was never run again"
        ),
    }
}

fn pool(rate_limited: bool) -> SmartAioPool {
    let b = SmartAioPool::builder()
        .max_concurrency(1)
        .auto_shutdown(false);
    if rate_limited {
        b.rate_limit(1000, Duration::from_secs(1)).build()
    } else {
        b.build()
    }
}

/// The handle of a task whose runtime ended, awaited from a new runtime (current-thread
/// or multi-thread; the pool plain or rate-limited, which needs a runtime with timers).
#[test]
fn a_handle_awaited_from_a_new_runtime_runs_its_cut_off_task() {
    for (multi, rate_limited) in [(false, false), (true, false), (false, true)] {
        let runs = Arc::new(AtomicUsize::new(0));
        let a = current_thread();
        let (pool, handle) = a.block_on(async {
            let pool = pool(rate_limited);
            let handle = pool.submit(cut_off_once(&runs, 7)).await.unwrap();
            support::reach(&runs, 1, Duration::from_secs(10)).await;
            (pool, handle)
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the first run started");
        drop(a);
        let b = if multi {
            multi_thread_of(2)
        } else {
            current_thread()
        };
        let got = b.block_on(within("awaiting the handle", handle));
        assert_eq!(
            got.unwrap(),
            7,
            "multi-thread: {multi}, rate-limited: {rate_limited}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(pool.stats().completed, 1);
    }
}

/// The handle was polled on the old runtime before it ended (its waker is the old
/// runtime's), then awaited again from a new one.
#[test]
fn a_handle_polled_before_its_runtime_ended_is_awaited_from_a_new_one() {
    let runs = Arc::new(AtomicUsize::new(0));
    let a = current_thread();
    let (pool, mut handle) = a.block_on(async {
        let pool = pool(false);
        let mut handle = pool.submit(cut_off_once(&runs, 3)).await.unwrap();
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut handle)
                .await
                .is_err(),
            "the first run never ends"
        );
        (pool, handle)
    });
    drop(a);
    let got = current_thread().block_on(within("awaiting the handle", &mut handle));
    assert_eq!(got.unwrap(), 3);
    drop(pool);
}

/// The handle was awaited from the new runtime (on another thread) before the old one
/// ended: its first poll found no pool stranded; when the old runtime ends, the pool wakes
/// it, and its next poll offers the new runtime.
#[test]
fn a_handle_awaited_from_a_new_runtime_before_the_old_one_ended_runs_there() {
    let runs = Arc::new(AtomicUsize::new(0));
    let a = current_thread();
    let (pool, mut handle) = a.block_on(async {
        let pool = pool(false);
        let handle = pool.submit(cut_off_once(&runs, 9)).await.unwrap();
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        (pool, handle)
    });
    let (polled, was_polled) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        current_thread().block_on(async move {
            let first = tokio::time::timeout(Duration::from_millis(10), &mut handle).await;
            assert!(first.is_err(), "the first run never ends");
            polled.send(()).unwrap();
            within("awaiting the handle", handle).await
        })
    });
    was_polled.recv().unwrap();
    drop(a);
    assert_eq!(waiter.join().unwrap().unwrap(), 9);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    drop(pool);
}

/// An ordered stream whose window is full of such tasks, collected from a new runtime
/// (the repro of the bug hunt of 2026-12-03).
#[test]
fn an_ordered_stream_collected_from_a_new_runtime_runs_its_cut_off_tasks() {
    // Runs on the first runtime never end; those on the second return their input.
    let on_first = Arc::new(AtomicBool::new(true));
    let a = current_thread();
    let (pool, mut stream) = a.block_on(async {
        // One slot and a queue of one: the window holds two tasks.
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(1)
            .auto_shutdown(false)
            .build();
        let on_first = Arc::clone(&on_first);
        let mut stream = pool.map_ordered(futures_util::stream::iter(0..4u32), move |i| {
            let on_first = Arc::clone(&on_first);
            move || {
                let hang = on_first.load(Ordering::SeqCst);
                async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    i
                }
            }
        });
        // The first task runs (and never ends), the second waits in the queue.
        let first = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
        assert!(first.is_err(), "the first task never ends on this runtime");
        (pool, stream)
    });
    drop(a);
    on_first.store(false, Ordering::SeqCst);
    let got: Vec<u32> = current_thread().block_on(within("collecting the stream", async {
        let mut got = Vec::new();
        while let Some(r) = stream.next().await {
            got.push(r.unwrap());
        }
        got
    }));
    assert_eq!(got, [0, 1, 2, 3]);
    assert_eq!(pool.stats().completed, 4);
}

/// A group's `join_next` from a new runtime.
#[test]
fn a_group_joined_from_a_new_runtime_runs_its_cut_off_task() {
    let runs = Arc::new(AtomicUsize::new(0));
    let a = current_thread();
    let (pool, mut group) = a.block_on(async {
        let pool = pool(false);
        let mut group = pool.group();
        group.submit(cut_off_once(&runs, 5)).await.unwrap();
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        let first = tokio::time::timeout(Duration::from_millis(20), group.join_next()).await;
        assert!(first.is_err(), "the first run never ends");
        (pool, group)
    });
    drop(a);
    let got = current_thread().block_on(within("joining the group", group.join_next()));
    assert_eq!(got.unwrap().unwrap(), 5);
    drop(pool);
}

/// A single pending poll (a peek) from a current-thread runtime that is then kept but not
/// driven: its offer hands the task to that runtime, where it waits. A `wait()` from a
/// driven runtime then gives the task a claimer there too, and it runs (found by a review
/// of 8065cc7: the `wait()` hung until the idle runtime was dropped).
#[test]
fn a_wait_runs_a_task_that_a_peek_from_an_undriven_runtime_took() {
    let runs = Arc::new(AtomicUsize::new(0));
    let a = current_thread();
    let (pool, mut handle) = a.block_on(async {
        let pool = pool(false);
        let handle = pool.submit(cut_off_once(&runs, 7)).await.unwrap();
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        (pool, handle)
    });
    drop(a);
    let b = current_thread();
    b.block_on(async {
        let peek = futures_util::FutureExt::now_or_never(&mut handle);
        assert!(peek.is_none());
    });
    let c = multi_thread_of(2);
    c.block_on(within("a wait from a driven runtime", pool.wait()));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "run again on the driven runtime"
    );
    let got = c.block_on(within("awaiting the handle", &mut handle));
    assert_eq!(got.unwrap(), 7);
    drop(b);
}
