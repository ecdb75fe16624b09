//! Redis restart in the middle of a run: the server (AOF on, fsync always) is SIGKILLed
//! and started again on the same port; the producer retries, the worker reconnects with
//! backoff and resumes, and no job is lost.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_aiopool_redis::{RedisQueue, Worker};
use support::*;

const JOBS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run_loses_nothing() {
    let mut server = RedisServer::start_persistent();
    let url = server.url();
    let queue = RedisQueue::builder(&url, "restart")
        .max_len(500)
        .connect()
        .await
        .unwrap();
    let done = Arc::new(Mutex::new(HashSet::new()));
    let runs = Arc::new(AtomicU64::new(0));
    let (d2, r2) = (done.clone(), runs.clone());
    let worker = Worker::builder(&url, "restart")
        .concurrency(16)
        .lease(Duration::from_secs(1))
        .block(Duration::from_millis(100))
        .task("job", move |j: Job| {
            let (done, runs) = (d2.clone(), r2.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                runs.fetch_add(1, Ordering::SeqCst);
                done.lock().unwrap().insert(j.n);
                Ok::<(), String>(())
            }
        })
        .build()
        .await
        .unwrap();
    let run = {
        let w = worker.clone();
        tokio::spawn(async move { w.run().await.unwrap() })
    };
    // The producer retries a submit that failed on the connection: a lost reply may mean
    // the job was added anyway, so the test counts distinct job numbers.
    let submit_errors = Arc::new(AtomicU64::new(0));
    let producer = {
        let (q, errs) = (queue.clone(), submit_errors.clone());
        tokio::spawn(async move {
            for n in 0..JOBS {
                loop {
                    match q.submit("job", &Job { n }).await {
                        Ok(_) => break,
                        Err(e) => {
                            assert!(e.is_retryable(), "unexpected error: {e}");
                            errs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        })
    };
    eventually(60, "a third of the jobs done", || {
        done.lock().unwrap().len() as u64 >= JOBS / 3
    })
    .await;
    let before = done.lock().unwrap().len();
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted_at = Instant::now();
    server.restart();
    let at_restart = done.lock().unwrap().len();
    eventually(30, "first completion after the restart", || {
        done.lock().unwrap().len() > at_restart
    })
    .await;
    let resumed = restarted_at.elapsed();
    within(60, "producer", producer).await.unwrap();
    let start = Instant::now();
    loop {
        let n = done.lock().unwrap().len() as u64;
        let s = queue.stats().await;
        if let Ok(s) = &s {
            if n == JOBS && s.waiting == 0 && s.in_flight == 0 && s.delayed == 0 {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "not drained after the restart: {n}/{JOBS}, {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = queue.stats().await.unwrap();
    assert_eq!(s.dead, 0, "{s:?}");
    let ws = worker.stats();
    assert!(ws.errors > 0, "the worker must have seen the outage");
    println!(
        "restart: {before} of {JOBS} done before the kill; resumed {resumed:?} and all done \
         {:?} after the restart; \
         {} runs ({} duplicates); {} worker errors retried; {} submits retried",
        restarted_at.elapsed(),
        runs.load(Ordering::SeqCst),
        runs.load(Ordering::SeqCst) - JOBS,
        ws.errors,
        submit_errors.load(Ordering::SeqCst)
    );
    worker.shutdown().await;
    run.await.unwrap();
}
