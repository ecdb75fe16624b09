//! A helper's review (2026-12-05) of 86a26f9, the fixes of redis findings 65 and 66 (an
//! acknowledgement records only an entry pending under the worker that acknowledges, runs
//! numbered so that a run whose id a new entry took records nothing; acknowledgement
//! batches bounded in bytes, re-sent record by record, a lone record given up once Redis
//! answers): finding 67, and pins of what held. Every test starts its own `redis-server`
//! and bounds its waits.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool_redis::{JobCtx, RedisQueue, Worker};
use support::*;

/// The stream id of the entry of queue `q` whose payload is `{"n":n}`.
fn id_of(c: &mut redis::Connection, q: &str, n: u64) -> String {
    let all: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(stream_key(q))
        .arg("-")
        .arg("+")
        .query(c)
        .unwrap();
    let want = format!(r#"{{"n":{n}}}"#);
    all.into_iter()
        .find(|(_, f)| f.get("p") == Some(&want))
        .map(|(id, _)| id)
        .unwrap_or_else(|| panic!("no entry with payload {want} in {q}"))
}

/// Fault (finding 65's fix is partial, one worker). The run numbers of 86a26f9 cover a
/// new entry J2 read while J1, whose id it took, is still *running* on the same worker.
/// They do not cover J2 read after J1's handler returned but before J1's record was
/// written (it waits in the acker): J1's record then finds "its" id pending under this
/// very consumer (FINISH cannot tell the two entries apart), records J1's outcome for
/// J2's entry, and deletes J2 while J2 runs; J2's own record finds nothing pending and is
/// dropped: J2's failed first run is never retried.
///
/// The acker is held here, deterministically, by another record the server keeps
/// refusing (a 900 KB result under client eviction at 500 KB: about 0.6 s before it is
/// given up, finding 66); any delay of the acker opens the same window (a batch being
/// written, a memory spike's retries of up to 1.5 s, a connection being re-established).
/// The id reuse itself needs the stream lost within the millisecond of J1's submission
/// (or Redis's clock stepped back), as in finding 65's own tests.
///
/// Expected: J2's first failure is retried (a second run); J2's entry is not deleted
/// while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_but_unwritten_ack_does_not_take_over_a_new_job_with_its_id() {
    let server = RedisServer::start();
    config_set(&mut server.conn(), "proto-max-bulk-len", "1mb");
    let q = "r65same";
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let started: Arc<Mutex<Vec<(u64, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let ended: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let gate0 = Arc::new(tokio::sync::Notify::new());
    let gate1 = Arc::new(tokio::sync::Notify::new());
    let gate2 = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let (s, e) = (started.clone(), ended.clone());
        let (g0, g1, g2) = (gate0.clone(), gate1.clone(), gate2.clone());
        move |j: Job, ctx: JobCtx| {
            let (s, e) = (s.clone(), e.clone());
            let (g0, g1, g2) = (g0.clone(), g1.clone(), g2.clone());
            async move {
                s.lock().unwrap().push((j.n, ctx.attempt()));
                let out = match (j.n, ctx.attempt()) {
                    // J0: a result the server will not take in one call.
                    (0, 1) => {
                        g0.notified().await;
                        Ok("y".repeat(900_000))
                    }
                    (1, _) => {
                        g1.notified().await;
                        Ok("one".to_owned())
                    }
                    (2, 1) => {
                        g2.notified().await;
                        Err("the first run of J2 fails".to_owned())
                    }
                    _ => Ok("ok".to_owned()),
                };
                e.lock().unwrap().push(j.n);
                out
            }
        }
    };
    let w = Worker::builder(&server.url(), q)
        .concurrency(3)
        .max_deliveries(3)
        .backoff(Duration::from_millis(50), Duration::from_millis(50))
        .block(Duration::from_millis(50))
        .task_with_ctx("t", handler)
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    queue
        .submit_with_result("t", &Job { n: 0 }, Duration::from_secs(60))
        .await
        .unwrap();
    queue.submit("t", &Job { n: 1 }).await.unwrap();
    eventually(10, "J0 and J1 running", || {
        let s = started.lock().unwrap();
        s.contains(&(0, 1)) && s.contains(&(1, 1))
    })
    .await;
    let mut c = server.conn();
    let j1 = id_of(&mut c, q, 1);
    // Client eviction from now on (the worker's byte budget, read at build, does not know
    // it): J0's record alone is closed each time, for about 0.6 s.
    config_set(&mut server.conn(), "maxmemory-clients", "500000");
    gate0.notify_one();
    eventually(10, "J0 ended", || ended.lock().unwrap().contains(&0)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // J1 ends while the acker is busy with J0's record: J1's record waits.
    gate1.notify_one();
    eventually(10, "J1 ended", || ended.lock().unwrap().contains(&1)).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The stream is lost; a new job J2 gets J1's id (a submit in J1's millisecond).
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    let _: String = redis::cmd("XADD")
        .arg(stream_key(q))
        .arg(&j1)
        .arg("t")
        .arg("t")
        .arg("p")
        .arg(r#"{"n":2}"#)
        .query(&mut c)
        .unwrap();
    eventually(10, "J2 running on the same worker", || {
        started.lock().unwrap().contains(&(2, 1))
    })
    .await;
    // Time for the acker to give J0's record up and write J1's.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let len: u64 = redis::cmd("XLEN").arg(stream_key(q)).query(&mut c).unwrap();
    let completed: Option<u64> = redis::cmd("GET")
        .arg(format!("nbq:{{{q}}}:completed"))
        .query(&mut c)
        .unwrap();
    gate2.notify_one();
    let retried = within(10, "J2's retry", async {
        comes_true(300, || started.lock().unwrap().contains(&(2, 2))).await
    })
    .await;
    config_set(&mut server.conn(), "maxmemory-clients", "0");
    within(15, "shutdown", w.shutdown_timeout(Duration::from_secs(2))).await;
    let _ = within(15, "run", run).await;
    assert!(
        retried,
        "J2's failed first run was never retried: J1's record, written after J2 was read \
         by the same worker, took J2's entry (stream length while J2 ran: {len}; \
         completed count {completed:?}); runs: {:?}",
        started.lock().unwrap()
    );
    assert_eq!(len, 1, "J1's late record deleted J2's entry while J2 ran");
}

/// Pin (the rule change). A worker whose lease lapsed (its runtime stalled: no renewal)
/// while another worker reclaimed its entry records nothing when it finishes, even if it
/// finishes first; the reclaimer's run records the one outcome, and the job is not left
/// pending anywhere. Here the stalled worker's run succeeds first and the reclaimer's run
/// fails once, then succeeds: the outcome is the reclaimer's (a retry, then a success).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_the_reclaimers_run_decides_even_if_the_lapsed_worker_finishes_first() {
    let server = RedisServer::start();
    let q = "r65lapse";
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let runs: Arc<Mutex<Vec<(String, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let release_b = Arc::new(tokio::sync::Notify::new());
    let mk = |name: &'static str| {
        let r = runs.clone();
        let rb = release_b.clone();
        Worker::builder(&server.url(), q)
            .consumer_name(name)
            .concurrency(1)
            .lease(Duration::from_millis(600))
            .max_deliveries(5)
            .backoff(Duration::from_millis(50), Duration::from_millis(50))
            .block(Duration::from_millis(50))
            .task_with_ctx("t", move |_j: Job, ctx: JobCtx| {
                let (r, rb) = (r.clone(), rb.clone());
                async move {
                    r.lock().unwrap().push((name.to_owned(), ctx.attempt()));
                    if name == "a" && ctx.attempt() == 1 {
                        // A stalled runtime: nothing else of this worker runs (its lease
                        // keeper cannot renew) for three leases.
                        std::thread::sleep(Duration::from_millis(1800));
                        return Ok::<u64, String>(1);
                    }
                    if name == "b" && ctx.attempt() == 2 {
                        rb.notified().await;
                        return Err("b's run fails".to_owned());
                    }
                    Ok(2)
                }
            })
            .build()
    };
    let a = mk("a").await.unwrap();
    let run_a = {
        // Worker a on its own current-thread runtime, so that the stall stops it whole.
        let a = a.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move { a.run().await.expect("run a") })
        })
    };
    let id = queue
        .submit_with_result("t", &Job { n: 1 }, Duration::from_secs(60))
        .await
        .unwrap();
    eventually(10, "a running", || {
        runs.lock().unwrap().contains(&("a".to_owned(), 1))
    })
    .await;
    let b = mk("b").await.unwrap();
    let run_b = spawn_run(&b);
    eventually(10, "b reclaimed and runs the job", || {
        runs.lock().unwrap().contains(&("b".to_owned(), 2))
    })
    .await;
    // a finishes (first) and writes its record; then b's run fails.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut c = server.conn();
    let early: Option<String> = redis::cmd("GET")
        .arg(format!("nbq:{{{q}}}:result:{id}"))
        .query(&mut c)
        .unwrap();
    release_b.notify_one();
    let result = queue.wait_result::<u64>(&id, Duration::from_secs(10)).await;
    within(15, "shutdown b", b.shutdown()).await;
    within(15, "shutdown a", a.shutdown()).await;
    run_b.await.unwrap();
    run_a.join().unwrap();
    assert_eq!(early, None, "the lapsed worker's late success was recorded");
    assert!(
        matches!(result, Ok(2)),
        "one outcome, the reclaimer's retry's: {result:?}; runs {:?}",
        runs.lock().unwrap()
    );
    assert!(pending_per_consumer(&mut c, q).is_empty());
    let len: u64 = redis::cmd("XLEN").arg(stream_key(q)).query(&mut c).unwrap();
    assert_eq!(len, 0);
}

/// Pin (the plain acks' ranged `XPENDING`). A worker holding more entries than the
/// script's page (4096) at once, acknowledging plain acks whose ids span a wide range
/// (entries written by hand with very old and new ids, duplicates impossible to tell
/// from the crate's side): every one is acknowledged, deleted and counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_plain_acks_beyond_the_page_and_across_a_wide_range_count_once() {
    let server = RedisServer::start();
    let q = "r65page";
    let mut c = server.conn();
    let n: u64 = 5000;
    // Ids across a wide range: 1-0 .. and ms near 2^53 (beyond a double's integers), in
    // order, each a plain job.
    let mut pipe = redis::pipe();
    for i in 0..n {
        let id = if i < n / 2 {
            format!("{}-{}", 1 + i / 7, i % 7)
        } else {
            format!("{}-{}", 9_007_199_254_740_993u64 + i, 0)
        };
        pipe.cmd("XADD")
            .arg(stream_key(q))
            .arg(id)
            .arg("t")
            .arg("t")
            .arg("p")
            .arg(format!(r#"{{"n":{i}}}"#))
            .ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let ran = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (r2, g2) = (ran.clone(), gate.clone());
    let w = Worker::builder(&server.url(), q)
        .concurrency(n as usize)
        .block(Duration::from_millis(50))
        .task("t", move |_j: Job| {
            let (r, g) = (r2.clone(), g2.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                g.acquire().await.unwrap().forget();
                Ok::<(), String>(())
            }
        })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    eventually(30, "all jobs running", || ran.load(Ordering::SeqCst) == n).await;
    gate.add_permits(n as usize);
    let key = format!("nbq:{{{q}}}:completed");
    let mut done = 0;
    for _ in 0..1500 {
        done = redis::cmd("GET")
            .arg(&key)
            .query::<Option<u64>>(&mut c)
            .unwrap()
            .unwrap_or(0);
        if done >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = w.stats();
    within(30, "shutdown", w.shutdown()).await;
    run.await.unwrap();
    assert_eq!(done, n, "completed count; worker {st:?}");
    let len: u64 = redis::cmd("XLEN").arg(stream_key(q)).query(&mut c).unwrap();
    assert_eq!(len, 0);
    assert!(pending_per_consumer(&mut c, q).is_empty());
    assert_eq!(ran.load(Ordering::SeqCst), n, "no job ran twice");
}

/// Pin (finding 66's give-up). A lone record whose calls are lost while Redis is down (a
/// crash and restart of a persistent server, 2 s) is not given up: Redis answers no
/// `PING` meanwhile, and the record is written once Redis is back. The job runs once
/// and its result is stored (a give-up would leave it pending until the 30 s lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_a_record_is_not_given_up_while_redis_restarts() {
    let mut server = RedisServer::start_persistent();
    let q = "r65blip";
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let (r2, g2) = (runs.clone(), gate.clone());
    let w = Worker::builder(&server.url(), q)
        .concurrency(2)
        .block(Duration::from_millis(50))
        .task("t", move |j: Job| {
            let (r, g) = (r2.clone(), g2.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                g.notified().await;
                Ok::<u64, String>(j.n * 10)
            }
        })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    let id = queue
        .submit_with_result("t", &Job { n: 4 }, Duration::from_secs(60))
        .await
        .unwrap();
    eventually(10, "the job running", || runs.load(Ordering::SeqCst) == 1).await;
    server.kill();
    gate.notify_one();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart();
    // A new handle: the old one's connection broke with the restart.
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let got = queue.wait_result::<u64>(&id, Duration::from_secs(8)).await;
    let st = w.stats();
    within(15, "shutdown", w.shutdown()).await;
    run.await.unwrap();
    assert!(
        matches!(got, Ok(40)),
        "the result was not stored once Redis was back: {got:?}; worker errors {}, last {:?}",
        st.errors,
        st.last_error
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
