//! Findings of review redis56 (of cfbc531, finding 56's fix: `shutdown()` and
//! `shutdown_timeout()` request the stop at the call and return a `'static` future).

mod support;

use std::sync::Arc;
use std::time::Duration;

use nb_aiopool_redis::{Error, RedisQueue, Worker};
use support::*;
use tokio::sync::Notify;

/// The longest timeout that can still be added to `now` (to the nanosecond).
fn max_addable(now: tokio::time::Instant) -> Duration {
    let (mut lo, mut hi) = (0u128, Duration::MAX.as_nanos());
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let d = Duration::new((mid / 1_000_000_000) as u64, (mid % 1_000_000_000) as u32);
        if now.checked_add(d).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Duration::new((lo / 1_000_000_000) as u64, (lo % 1_000_000_000) as u32)
}

/// Finding 57: a `shutdown()` whose future is dropped unpolled on a worker that never
/// ran requests the stop (finding 56), but did not mark the worker as shut down: `run`
/// then ran anyway (joined the group, read nothing, returned a report) instead of
/// returning `Error::AlreadyRunning`, as its docs say it does for a worker "shut down
/// before it ran" and as it does when the same `shutdown()` future is awaited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_dropped_unpolled_before_run_makes_run_refuse() {
    let server = RedisServer::start();
    let url = server.url();
    for timeout in [None, Some(Duration::from_secs(5))] {
        let w = Worker::builder(&url, "unpolledidle")
            .task("t", |_: u64| async { Ok::<(), String>(()) })
            .build()
            .await
            .unwrap();
        match timeout {
            None => drop(w.shutdown()),
            Some(t) => drop(w.shutdown_timeout(t)),
        }
        let r = within(10, "run after a dropped shutdown", w.run()).await;
        assert!(
            matches!(r, Err(Error::AlreadyRunning)),
            "shut down before it ran ({timeout:?}): run must refuse, got {r:?}"
        );
        // And the shutdown called again reports the drained no-op stop.
        let again = within(5, "a second shutdown", w.shutdown()).await;
        assert!(again.drained, "{again:?}");
    }
}

/// Finding 58: a `shutdown_timeout` whose deadline can be represented, but lies within
/// a millisecond of the largest `Instant` (a "practically never" timeout computed as
/// `Duration::MAX - something`, or `Duration::from_secs(i64::MAX as u64 - ...)`),
/// made `run` panic inside tokio ("overflow when adding duration to instant": tokio's
/// timer rounds a deadline up to the next millisecond) as soon as the drain had a
/// running job to wait for. The docs say a timeout too long to be added to the current
/// time sets no deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_timeout_at_the_edge_of_instant_does_not_panic_run() {
    let server = RedisServer::start();
    let url = server.url();
    let q = RedisQueue::connect(&url, "edgedeadline").await.unwrap();
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let w = {
        let (started, release) = (started.clone(), release.clone());
        Worker::builder(&url, "edgedeadline")
            .concurrency(1)
            .block(Duration::from_millis(100))
            .task("slow", move |_: u64| {
                let (started, release) = (started.clone(), release.clone());
                async move {
                    started.notify_one();
                    release.notified().await;
                    Ok::<(), String>(())
                }
            })
            .build()
            .await
            .unwrap()
    };
    q.submit("slow", &1u64).await.unwrap();
    let run = {
        let w = w.clone();
        tokio::spawn(async move { w.run().await })
    };
    within(10, "the job starting", started.notified()).await;
    // 200 µs short of the largest representable deadline: still addable at the call
    // (a few µs later), but not with tokio's extra 999_999 ns.
    let d = max_addable(tokio::time::Instant::now()) - Duration::from_micros(200);
    let stop = w.shutdown_timeout(d);
    // Let the drain start waiting with that deadline, then let the job finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    release.notify_one();
    let r = within(10, "run's report", run).await;
    let r = match r {
        Ok(r) => r.unwrap(),
        Err(e) => panic!("run panicked: {e}"),
    };
    assert!(r.drained, "{r:?}");
    assert_eq!(r.released, 0, "{r:?}");
    let s = within(5, "the shutdown's report", stop).await;
    assert_eq!(s, r);
}
