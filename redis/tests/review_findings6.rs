//! A helper's review of 2aa1176, 1e9cacc and 8e336d4 (redis findings 59-63's fixes: FINISH
//! deletes only entries its XACK found pending; the reclaim skips entries the worker
//! still runs and gives back their delivery; oversized payloads refused; a panicking
//! `on_error` hook caught). Every test starts its own `redis-server` and bounds its waits.
//! The tests of findings 65 and 66 (late acknowledgements of a job whose id a new job
//! took; acknowledgement batches bounded in bytes and sent record by record after a lost
//! call) were added with their fixes; each fails with the sources before them.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool_redis::{JobCtx, RedisQueue, Worker};
use support::*;

/// The runs a handler started, as `(n, attempt)`, in order.
type Started = Arc<Mutex<Vec<(u64, u64)>>>;

/// A handler's run, boxed (one type for every run of the id-reuse tests' handler).
type Run = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// The id-reuse tests' handler (finding 65): records each run's `(n, attempt)` in
/// `started`; J1 (`n` 1) runs until `gate1` is notified, J2's first run (`n` 2) until
/// `gate2` is, and then fails; any other run succeeds at once.
fn j1_held_j2_fails_once(
    started: &Started,
    gate1: &Arc<tokio::sync::Notify>,
    gate2: &Arc<tokio::sync::Notify>,
) -> impl Fn(Job, JobCtx) -> Run + Clone + Send + Sync + 'static {
    let (s, g1, g2) = (started.clone(), gate1.clone(), gate2.clone());
    move |j: Job, ctx: JobCtx| {
        let (s, g1, g2) = (s.clone(), g1.clone(), g2.clone());
        Box::pin(async move {
            s.lock().unwrap().push((j.n, ctx.attempt()));
            match (j.n, ctx.attempt()) {
                (1, _) => {
                    g1.notified().await;
                    Ok(())
                }
                (2, 1) => {
                    g2.notified().await;
                    Err("the first run of J2 fails".to_owned())
                }
                _ => Ok(()),
            }
        })
    }
}

/// J1 ends (`gate1`), and its acknowledgement is given time to be written; then J2's
/// first run fails (`gate2`). The length of queue `q`'s stream between the two, and
/// whether J2 was run again (its second attempt started within the bounded wait).
async fn end_j1_then_fail_j2(
    c: &mut redis::Connection,
    q: &str,
    gate1: &tokio::sync::Notify,
    gate2: &tokio::sync::Notify,
    started: &Started,
) -> (u64, bool) {
    gate1.notify_one();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let len: u64 = redis::cmd("XLEN").arg(stream_key(q)).query(c).unwrap();
    gate2.notify_one();
    let retried = within(10, "J2's retry", async {
        comes_true(300, || started.lock().unwrap().contains(&(2, 2))).await
    })
    .await;
    (len, retried)
}

fn set_max_bulk(server: &RedisServer, value: &str) {
    config_set(&mut server.conn(), "proto-max-bulk-len", value);
}

/// Fault (finding 61's, on the worker's side). A handler's result (a job submitted with
/// `submit_with_result`) longer than the server's `proto-max-bulk-len` (1 MB here) is
/// sent as one argument of the FINISH script: Redis answers with a protocol error and
/// closes the worker's shared connection (the renewals and reclaims on it fail too). The
/// acknowledgement never lands, so the job runs again after every lease until
/// `max_deliveries`, and is then dead-lettered as "delivered N times without an
/// acknowledgement". (A final failure's reason, which quotes the handler's error, can
/// be as long.)
///
/// Expected: one run; the job's outcome recorded at once, as for a result that cannot be
/// encoded (dead-lettered: "the handler succeeded, but its result cannot be stored"),
/// and no Redis error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_longer_than_the_servers_argument_limit_is_not_run_again_and_again() {
    let server = RedisServer::start();
    set_max_bulk(&server, "1mb");
    let queue = RedisQueue::connect(&server.url(), "bigres").await.unwrap();
    let runs = Arc::new(AtomicU64::new(0));
    let r2 = runs.clone();
    let w = Worker::builder(&server.url(), "bigres")
        .concurrency(2)
        .lease(Duration::from_millis(300))
        .max_deliveries(4)
        .block(Duration::from_millis(50))
        .task("big", move |_: Job| {
            let r = r2.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<String, String>("y".repeat(2_000_000))
            }
        })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    queue
        .submit_with_result("big", &Job { n: 1 }, Duration::from_secs(60))
        .await
        .unwrap();
    eventually(5, "the job ran", || runs.load(Ordering::SeqCst) >= 1).await;
    // Ten leases: time for every re-run the fault makes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = runs.load(Ordering::SeqCst);
    let stats = w.stats();
    let dead = queue.dead_letters(10).await.unwrap();
    within(15, "shutdown", w.shutdown()).await;
    run.await.unwrap();
    assert_eq!(
        n,
        1,
        "the job ran {n} times: its acknowledgement (with a result over proto-max-bulk-len) \
         never landed; worker {stats:?}; dead letters {:?}",
        dead.iter().map(|d| &d.reason).collect::<Vec<_>>()
    );
    assert_eq!(dead.len(), 1, "its outcome is recorded at once");
}

/// Fault (finding 59's fix is partial). Ids restart from the clock when the stream is
/// lost (`FLUSHALL`, a restart without persistence, a purge), so a new job J2 can get the
/// stream id (and so the job id) of J1, still running from before. 2aa1176 keeps J1's late
/// acknowledgement from deleting J2 while J2 is not pending; but once a worker has read
/// J2 (pending, under another consumer), J1's ack finds "its" entry pending: it records
/// J1's outcome for it and deletes J2 while J2 runs. J2's own record then finds nothing
/// pending and is dropped: here J2 fails its first run, and its retry is lost (it never
/// runs again, though `max_deliveries` is 3).
///
/// Expected: J2's first failure is retried (a second run). Fixed (finding 65): FINISH
/// records and deletes only entries pending under the acknowledging consumer (a worker
/// whose lease lapsed and whose entry another worker reclaimed then records nothing,
/// whether or not that worker has finished it; one outcome per entry still).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_ack_does_not_take_over_a_new_job_that_reused_its_id_and_is_running() {
    let server = RedisServer::start();
    let queue = RedisQueue::connect(&server.url(), "reuse2").await.unwrap();
    // (n, attempt) of every run started.
    let started: Started = Arc::default();
    let gate1 = Arc::new(tokio::sync::Notify::new());
    let gate2 = Arc::new(tokio::sync::Notify::new());
    let handler = j1_held_j2_fails_once(&started, &gate1, &gate2);
    let worker = |name: &str| {
        Worker::builder(&server.url(), "reuse2")
            .consumer_name(name)
            .concurrency(1)
            .max_deliveries(3)
            .backoff(Duration::from_millis(50), Duration::from_millis(50))
            .block(Duration::from_millis(50))
            .task_with_ctx("t", handler.clone())
            .build()
    };
    let w1 = worker("w1").await.unwrap();
    let run1 = spawn_run(&w1);
    queue.submit("t", &Job { n: 1 }).await.unwrap();
    eventually(10, "J1 running on w1", || {
        started.lock().unwrap().contains(&(1, 1))
    })
    .await;
    // w1's one slot is busy with J1: J2 goes to w2.
    let w2 = worker("w2").await.unwrap();
    let run2 = spawn_run(&w2);
    let mut c = server.conn();
    // The stream is lost, and the new job, as a submit in the same millisecond would write
    // it, gets the running job's id.
    flush_and_reuse_first_id(&mut c, "reuse2", 2);
    eventually(10, "J2 running on w2 (the group recreated)", || {
        started.lock().unwrap().contains(&(2, 1))
    })
    .await;
    // J1 ends; its acknowledgement is written (w1 has nothing else to do). Then J2's
    // first run fails: it must be retried.
    let (len, retried) = end_j1_then_fail_j2(&mut c, "reuse2", &gate1, &gate2, &started).await;
    within(15, "shutdown w1", w1.shutdown()).await;
    within(15, "shutdown w2", w2.shutdown()).await;
    run1.await.unwrap();
    run2.await.unwrap();
    assert!(
        retried,
        "J2's failed first run was never retried: J1's late ack took J2's entry (stream \
         length after it: {len}, J2 still running), and J2's retry record found nothing \
         pending; runs: {:?}",
        started.lock().unwrap()
    );
}

/// Pin (2aa1176: plain acks now acknowledged one by one in the script): a batch of plain
/// acks and a result ack count each job exactly once in `completed`, delete every entry
/// (the stream is empty) and `stats()` says nothing waits or is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_plain_and_result_acks_count_once_and_leave_no_entry() {
    let server = RedisServer::start();
    let queue = RedisQueue::connect(&server.url(), "twice").await.unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let d2 = done.clone();
    let w = Worker::builder(&server.url(), "twice")
        .concurrency(4)
        .block(Duration::from_millis(50))
        .task("t", move |_: Job| {
            let d = d2.clone();
            async move {
                d.fetch_add(1, Ordering::SeqCst);
                Ok::<u64, String>(5)
            }
        })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    for n in 0..3 {
        queue.submit("t", &Job { n }).await.unwrap();
    }
    queue
        .submit_with_result("t", &Job { n: 9 }, Duration::from_secs(60))
        .await
        .unwrap();
    eventually(10, "every job ran", || done.load(Ordering::SeqCst) == 4).await;
    within(15, "shutdown", w.shutdown()).await;
    run.await.unwrap();
    let s = queue.stats().await.unwrap();
    assert_eq!((s.waiting, s.in_flight, s.completed), (0, 0, 4), "{s:?}");
    let mut c = server.conn();
    let len: u64 = redis::cmd("XLEN")
        .arg(stream_key("twice"))
        .query(&mut c)
        .unwrap();
    assert_eq!(len, 0);
}

/// The size of each result in the big-batch tests: its JSON just under the 1 MB
/// `proto-max-bulk-len` the tests set (finding 64 dead-letters longer ones).
const BIG: usize = 900_000;

/// Six jobs with results of 900 KB, held until all six run, then finished at once: their
/// records reach the acker together. Returns whether every result was stored within
/// `secs` seconds, and what the worker and Redis said.
async fn finish_big_results_together(
    server: &RedisServer,
    q: &str,
    limit_before_build: bool,
    secs: u64,
) -> (usize, u64, String) {
    set_max_bulk(server, "1mb");
    // Client eviction: Redis closes the connection of the client that holds the most
    // memory once all clients together hold more than this. One record of 900 KB fits;
    // two in one call do not (the call's arguments count while Redis reads them).
    let limit = "1500000";
    if limit_before_build {
        config_set(&mut server.conn(), "maxmemory-clients", limit);
    }
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let started = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (s2, g2) = (started.clone(), gate.clone());
    let w = Worker::builder(&server.url(), q)
        .concurrency(6)
        .block(Duration::from_millis(50))
        .task("big", move |j: Job| {
            let (s, g) = (s2.clone(), g2.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                g.acquire().await.unwrap().forget();
                Ok::<String, String>(format!("{}{}", j.n, "y".repeat(BIG)))
            }
        })
        .build()
        .await
        .unwrap();
    if !limit_before_build {
        // Set after the worker was built: whatever the worker read at build, the batch
        // meets a limit it does not know.
        config_set(&mut server.conn(), "maxmemory-clients", limit);
    }
    let run = spawn_run(&w);
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(
            queue
                .submit_with_result("big", &Job { n }, Duration::from_secs(120))
                .await
                .unwrap(),
        );
    }
    eventually(10, "the six jobs running", || {
        started.load(Ordering::SeqCst) == 6
    })
    .await;
    // All six finish at once: their records reach the acker together.
    gate.add_permits(6);
    let t = tokio::time::Instant::now();
    // Polled with small replies (EXISTS, STRLEN): reading the results themselves would put
    // 900 KB in this client's output buffer, which client eviction counts too.
    let mut c = server.conn();
    let keys: Vec<String> = ids
        .iter()
        .map(|id| format!("nbq:{{{q}}}:result:{id}"))
        .collect();
    let mut stored = 0;
    while t.elapsed() < Duration::from_secs(secs) {
        stored = 0;
        for k in &keys {
            let len: u64 = redis::cmd("STRLEN").arg(k).query(&mut c).unwrap();
            // {"ok":"<n>yyy..."}
            if len as usize == BIG + 1 + 9 {
                stored += 1;
            }
        }
        if stored == keys.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waited = t.elapsed();
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    let evicted = info_field(&info, "evicted_clients");
    let stats = w.stats();
    // Bounded: with the acker stalled, even a stop with a deadline waits for it (it
    // writes what finished before it reads the pending list).
    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        w.shutdown_timeout(Duration::from_secs(2)),
    )
    .await
    .is_ok();
    run.abort();
    let _ = run.await;
    (
        stored,
        evicted,
        format!(
            "waited {waited:?}; evicted_clients {evicted}; worker errors {}, last {:?}; \
             stopped within 10 s: {stopped}",
            stats.errors, stats.last_error
        ),
    )
}

/// Fault (finding 66). An acknowledgement batch was bounded by its number of records (up
/// to 256), not by its bytes: six results of 900 KB finishing together went out as one
/// FINISH call of several MB. A server with client eviction (`maxmemory-clients`, here
/// 1.5 MB) closes the connection of such a call (a server's `client-query-buffer-limit`
/// does not: a command's arguments are not counted in the query buffer once read); the
/// worker took that for a lost connection and sent the same batch again, for ever: no
/// result stored, and the acker stalled (every later acknowledgement waits behind it).
///
/// Expected: every result stored within a bounded time, without the worker's connection
/// being closed. Fixed: a batch is closed once its records reach a byte budget, a quarter
/// of the server's `maxmemory-clients` (read when the worker is built) and at most 4 MB.
/// (With the fallback below alone, the results are stored, but only after evictions.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_results_finished_together_are_all_recorded() {
    let server = RedisServer::start();
    let (stored, evicted, what) = finish_big_results_together(&server, "bigbatch", true, 20).await;
    assert_eq!(
        stored, 6,
        "only {stored} of the 6 results of 900 KB were stored within 20 s: the \
         acknowledgement batch carrying them together is refused (the connection closed) \
         and sent again and again; {what}"
    );
    // The budget knew the limit: no call was too big, so the worker's connection (which
    // its renewals and reclaims share) was never closed.
    assert_eq!(evicted, 0, "{what}");
}

/// Fault (finding 66, the fallback). A batch whose call loses the connection was sent
/// again whole, for ever, so a batch the server cannot take (here client eviction
/// configured after the worker was built, so that the worker's byte budget does not
/// know it) stalled the acker.
///
/// Expected: every result stored within a bounded time. Fixed: after a batch of more
/// than one record loses the connection, its records are sent one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_loses_the_connection_is_sent_again_record_by_record() {
    let server = RedisServer::start();
    let (stored, _, what) = finish_big_results_together(&server, "bigbatch2", false, 20).await;
    assert_eq!(
        stored, 6,
        "only {stored} of the 6 results of 900 KB were stored within 20 s: the batch \
         whose call the server closed was sent again whole, again and again; {what}"
    );
}

/// Fault (finding 66, a record alone). A record whose call the server closes every time
/// (a result of 900 KB, client eviction at 500 KB) was sent again for ever: the acker
/// stalled on it, so no later job's outcome was written (their slots stayed taken), and
/// the job itself was neither recorded nor given back.
///
/// Expected: a later job's result is stored within a bounded time; the job whose record
/// the server cannot take runs again after the lease, as a job whose record Redis refuses
/// does, and ends in the dead letters after `max_deliveries` (its dead letter is small).
/// Fixed: a lone record whose call loses the connection 6 times in a row, the last two
/// while Redis answered a `PING`, is given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_server_never_takes_does_not_stall_the_acker() {
    let server = RedisServer::start();
    set_max_bulk(&server, "1mb");
    config_set(&mut server.conn(), "maxmemory-clients", "500000");
    let queue = RedisQueue::connect(&server.url(), "lone").await.unwrap();
    let runs: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let r2 = runs.clone();
    let w = Worker::builder(&server.url(), "lone")
        .concurrency(2)
        .lease(Duration::from_millis(500))
        .max_deliveries(2)
        .block(Duration::from_millis(50))
        .task("t", move |j: Job| {
            let r = r2.clone();
            async move {
                r.lock().unwrap().push(j.n);
                let size = if j.n == 0 { BIG } else { 10 };
                Ok::<String, String>("y".repeat(size))
            }
        })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    let big = queue
        .submit_with_result("t", &Job { n: 0 }, Duration::from_secs(120))
        .await
        .unwrap();
    eventually(10, "the big job ran", || runs.lock().unwrap().contains(&0)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let small = queue
        .submit_with_result("t", &Job { n: 1 }, Duration::from_secs(120))
        .await
        .unwrap();
    let got = queue
        .wait_result::<String>(&small, Duration::from_secs(10))
        .await;
    let stats = w.stats();
    let fate = queue
        .wait_result::<String>(&big, Duration::from_secs(10))
        .await;
    let stopped = tokio::time::timeout(
        Duration::from_secs(10),
        w.shutdown_timeout(Duration::from_secs(2)),
    )
    .await
    .is_ok();
    run.abort();
    let _ = run.await;
    assert!(
        matches!(&got, Ok(v) if v.len() == 10),
        "the small job's result was not stored within 10 s ({got:?}): the acker is stuck \
         on the big job's record, sent again and again; worker errors {}, last {:?}; \
         stopped within 10 s: {stopped}",
        stats.errors,
        stats.last_error
    );
    let runs = runs.lock().unwrap().clone();
    assert!(
        matches!(&fate, Err(nb_aiopool_redis::Error::JobFailed(m)) if m.contains("without an acknowledgement")),
        "the big job, whose record the server never takes, ends in the dead letters after \
         2 runs: {fate:?}; runs {runs:?}"
    );
}

/// Fault (finding 65, on one worker). As `a_late_ack_does_not_take_over_a_new_job_that_
/// reused_its_id_and_is_running`, but the new job J2 is read by the worker that still
/// runs J1 (a free slot): J2's entry is pending under the very consumer that
/// acknowledges J1, so FINISH's check cannot tell them apart. The worker kept its running
/// jobs by entry id: J2's run replaced J1's there, J1's end took J2's place and recorded
/// J1's outcome for J2's entry (deleting it while J2 ran), and J2's own end found itself
/// gone and recorded nothing: J2's failed first run was never retried.
///
/// Expected: J2's first failure is retried. Fixed: a run is known by a number, not only
/// its entry id; a run whose id a new entry took while it ran records nothing (its entry
/// is gone with the lost stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_ack_does_not_take_over_a_new_job_with_its_id_on_the_same_worker() {
    let server = RedisServer::start();
    let queue = RedisQueue::connect(&server.url(), "reuse3").await.unwrap();
    let started: Started = Arc::default();
    let gate1 = Arc::new(tokio::sync::Notify::new());
    let gate2 = Arc::new(tokio::sync::Notify::new());
    let handler = j1_held_j2_fails_once(&started, &gate1, &gate2);
    let w = Worker::builder(&server.url(), "reuse3")
        .concurrency(2)
        .max_deliveries(3)
        .backoff(Duration::from_millis(50), Duration::from_millis(50))
        .block(Duration::from_millis(50))
        .task_with_ctx("t", handler)
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    queue.submit("t", &Job { n: 1 }).await.unwrap();
    eventually(10, "J1 running", || {
        started.lock().unwrap().contains(&(1, 1))
    })
    .await;
    let mut c = server.conn();
    flush_and_reuse_first_id(&mut c, "reuse3", 2);
    eventually(10, "J2 running on the same worker", || {
        started.lock().unwrap().contains(&(2, 1))
    })
    .await;
    let (len, retried) = end_j1_then_fail_j2(&mut c, "reuse3", &gate1, &gate2, &started).await;
    within(15, "shutdown", w.shutdown()).await;
    run.await.unwrap();
    assert!(
        retried,
        "J2's failed first run was never retried: J1's late ack, on the same worker, took \
         J2's entry (stream length after it: {len}, J2 still running); runs: {:?}",
        started.lock().unwrap()
    );
    assert_eq!(len, 1, "J1's ack deleted J2's entry while J2 ran");
}
