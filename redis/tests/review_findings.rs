//! Findings 8–20 of RELIABILITY.md: a review of e5dd07b; each test failed there.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool_redis::{Error, RedisQueue, Worker};
use serde::{Deserialize, Serialize};
use support::*;

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Job {
    n: u64,
}

fn spawn_run(w: &Worker) -> tokio::task::JoinHandle<nb_aiopool_redis::ShutdownReport> {
    let w = w.clone();
    tokio::spawn(async move { w.run().await.expect("run") })
}

async fn wait_dead(q: &RedisQueue, n: u64, secs: u64) {
    let q = q.clone();
    within(secs, "dead letters", async move {
        while q.stats().await.unwrap().dead < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// `requeue_all` ("requeues every dead letter ... returns how many were moved") must
/// return even while workers dead-letter the requeued jobs again (a task no worker knows
/// any more, e.g. after a deploy): it keeps reading the dead-letter stream until it is
/// empty, and re-dead-lettered jobs are appended to it faster than it drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_all_returns_while_workers_dead_letter_again() {
    let server = RedisServer::start();
    let queue = RedisQueue::connect(&server.url(), "rqa").await.unwrap();
    let worker = Worker::builder(&server.url(), "rqa")
        .concurrency(50)
        .task("other", |_j: Job| async { Ok::<(), String>(()) })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&worker);
    for n in 0..300 {
        queue.submit("gone", &Job { n }).await.unwrap();
    }
    wait_dead(&queue, 300, 10).await;
    let q = queue.clone();
    let moved = tokio::time::timeout(Duration::from_secs(8), q.requeue_all()).await;
    let s = queue.stats().await.unwrap();
    worker.shutdown().await;
    run.await.unwrap();
    match moved {
        // Exactly the letters there when it started; those dead-lettered again meanwhile
        // are newer.
        Ok(r) => assert_eq!(r.unwrap(), 300),
        Err(_) => panic!(
            "requeue_all did not return within 8 s (300 dead letters; worker dead-lettered {} \
             so far; stats {s:?})",
            worker.stats().dead_lettered
        ),
    }
}

/// After `requeue`, `wait_result` must wait for the job's new run; it returns the stale
/// `JobFailed` of the dead-lettered run instead (the error result is left in place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_clears_the_stale_failure_result() {
    let server = RedisServer::start();
    let queue = RedisQueue::connect(&server.url(), "rqr").await.unwrap();
    let broken = Arc::new(AtomicBool::new(true));
    let b2 = broken.clone();
    let worker = Worker::builder(&server.url(), "rqr")
        .max_deliveries(1)
        .task("t", move |j: Job| {
            let broken = b2.clone();
            async move {
                if broken.load(Ordering::SeqCst) {
                    return Err("smtp down".to_owned());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(j.n * 2)
            }
        })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&worker);
    let id = queue
        .submit_with_result("t", &Job { n: 21 }, Duration::from_secs(60))
        .await
        .unwrap();
    match queue.wait_result::<u64>(&id, Duration::from_secs(5)).await {
        Err(Error::JobFailed(m)) => assert!(m.contains("smtp down"), "{m}"),
        other => panic!("expected the first failure, got {other:?}"),
    }
    broken.store(false, Ordering::SeqCst);
    assert_eq!(queue.requeue_all().await.unwrap(), 1);
    let got = queue.wait_result::<u64>(&id, Duration::from_secs(5)).await;
    worker.shutdown().await;
    run.await.unwrap();
    assert_eq!(
        got.as_ref().ok(),
        Some(&42),
        "after requeue the job ran again and succeeded, but wait_result said {got:?}"
    );
    assert_eq!(queue.stats().await.unwrap().completed, 1);
}

/// `wait_result(id, Duration::MAX)` ("wait as long as it takes") panics with "overflow
/// when adding duration to instant" before even reading the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_result_with_duration_max_does_not_panic() {
    let server = RedisServer::start();
    let queue = RedisQueue::connect(&server.url(), "wrmax").await.unwrap();
    let worker = Worker::builder(&server.url(), "wrmax")
        .task("t", |j: Job| async move { Ok::<u64, String>(j.n + 1) })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&worker);
    let id = queue
        .submit_with_result("t", &Job { n: 1 }, Duration::from_secs(60))
        .await
        .unwrap();
    // The result is there already.
    assert_eq!(
        queue
            .wait_result::<u64>(&id, Duration::from_secs(5))
            .await
            .unwrap(),
        2
    );
    let q = queue.clone();
    let r = tokio::spawn(async move { q.wait_result::<u64>(&id, Duration::MAX).await }).await;
    worker.shutdown().await;
    run.await.unwrap();
    match r {
        Ok(Ok(2)) => {}
        Ok(other) => panic!("expected Ok(2), got {other:?}"),
        Err(e) => panic!("wait_result(.., Duration::MAX) panicked: {e}"),
    }
}

/// `dead_letters(count)` "lists up to `count`": 0 lists one.
#[tokio::test]
async fn dead_letters_zero_lists_none() {
    let server = RedisServer::start();
    let queue = RedisQueue::connect(&server.url(), "dl0").await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(dead_key("dl0"))
        .arg("*")
        .arg(&[
            "j", "1-1", "t", "t", "p", "1", "a", "1", "r", "0", "reason", "x", "at", "1",
        ])
        .query(&mut server.conn())
        .unwrap();
    let got = queue.dead_letters(0).await.unwrap();
    assert_eq!(got.len(), 0, "dead_letters(0) returned {got:?}");
}

/// `dead_letters(usize::MAX)` (all of them) fails with a Redis error: COUNT is sent as an
/// unsigned 64-bit number Redis cannot parse.
#[tokio::test]
async fn dead_letters_usize_max_lists_all() {
    let server = RedisServer::start();
    let queue = RedisQueue::connect(&server.url(), "dlmax").await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(dead_key("dlmax"))
        .arg("*")
        .arg(&[
            "j", "1-1", "t", "t", "p", "1", "a", "1", "r", "0", "reason", "x", "at", "1",
        ])
        .query(&mut server.conn())
        .unwrap();
    let got = queue.dead_letters(usize::MAX).await;
    assert_eq!(
        got.as_ref().map(|v| v.len()).ok(),
        Some(1),
        "dead_letters(usize::MAX): {got:?}"
    );
}

/// `requeue` with an id without its sequence part (`1000` for `1000-1`): XRANGE matches
/// every letter of that millisecond and the script copies the first one to the stream,
/// but XDEL reads the id as `1000-0` and deletes nothing: the job is now both queued and
/// still a dead letter (and each further call queues another copy).
#[tokio::test]
async fn requeue_with_an_incomplete_id_does_not_duplicate() {
    let server = RedisServer::start();
    let queue = RedisQueue::connect(&server.url(), "rqid").await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(dead_key("rqid"))
        .arg("1000-1")
        .arg(&[
            "j", "1-1", "t", "t", "p", "1", "a", "1", "r", "0", "reason", "x", "at", "1",
        ])
        .query(&mut server.conn())
        .unwrap();
    let r = queue.requeue("1000").await;
    let s = queue.stats().await.unwrap();
    match r {
        // The fix refuses an id without its sequence part.
        Err(Error::Config(m)) => {
            assert!(m.contains("<ms>-<seq>"), "{m}");
            assert_eq!((s.dead, s.waiting), (1, 0));
        }
        Ok(None) | Err(_) => assert_eq!((s.dead, s.waiting), (1, 0), "{r:?}"),
        Ok(Some(new)) => assert_eq!(
            (s.dead, s.waiting),
            (0, 1),
            "requeue(\"1000\") returned {new} but the dead letter 1000-1 is still there: \
             the job is queued and dead at once"
        ),
    }
}

/// Finding 10 without a worker: `requeue(id)` deletes the job's stored failure.
#[tokio::test]
async fn requeue_deletes_the_stored_failure() {
    let server = RedisServer::start();
    let queue = RedisQueue::connect(&server.url(), "rqdel").await.unwrap();
    let mut c = server.conn();
    let dead: String = redis::cmd("XADD")
        .arg(dead_key("rqdel"))
        .arg("*")
        .arg(&[
            "j", "5-1", "t", "t", "p", "1", "a", "1", "r", "60", "reason", "x", "at", "1",
        ])
        .query(&mut c)
        .unwrap();
    let result_key = "nbq:{rqdel}:result:5-1";
    let _: () = redis::cmd("SET")
        .arg(result_key)
        .arg(r#"{"err":"x"}"#)
        .query(&mut c)
        .unwrap();
    assert!(matches!(
        queue
            .wait_result::<u64>("5-1", Duration::from_millis(10))
            .await,
        Err(Error::JobFailed(_))
    ));
    assert!(queue.requeue(&dead).await.unwrap().is_some());
    let left: Option<String> = redis::cmd("GET").arg(result_key).query(&mut c).unwrap();
    assert_eq!(left, None);
    assert!(matches!(
        queue
            .wait_result::<u64>("5-1", Duration::from_millis(10))
            .await,
        Err(Error::ResultTimeout)
    ));
}

/// Finding 13, waiting: `wait_result(id, Duration::MAX)` for a result that is not there
/// yet waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_result_with_duration_max_waits_for_the_result() {
    let server = RedisServer::start();
    let queue = RedisQueue::connect(&server.url(), "wrmax2").await.unwrap();
    let worker = Worker::builder(&server.url(), "wrmax2")
        .task("t", |j: Job| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<u64, String>(j.n + 1)
        })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&worker);
    let id = queue
        .submit_with_result("t", &Job { n: 1 }, Duration::from_secs(60))
        .await
        .unwrap();
    let q = queue.clone();
    let r = within(
        5,
        "wait_result(MAX)",
        tokio::spawn(async move { q.wait_result::<u64>(&id, Duration::MAX).await }),
    )
    .await;
    worker.shutdown().await;
    run.await.unwrap();
    match r {
        Ok(Ok(2)) => {}
        other => panic!("expected Ok(Ok(2)), got {other:?}"),
    }
}
