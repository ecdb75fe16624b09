//! A helper's review (2026-12-05) of the acker's failure paths (finding 66: acknowledgement
//! batches bounded in bytes, a lost batch call re-sent record by record, a lone record
//! given up after about 0.6 s of lost calls while Redis answers a `PING`, a record
//! refused with `OOM` given up after about 1.5 s), with real `redis-server` fault
//! injection: `CONFIG SET maxmemory` (noeviction: `OOM`), `CONFIG SET proto-max-bulk-len`
//! after the worker is built (Redis closes the connection of a call with a longer
//! argument), `CLIENT PAUSE WRITE`. Every test starts its own `redis-server` and bounds
//! its waits.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_aiopool_redis::{JobCtx, RedisQueue, Worker};
use support::*;

/// Runs one "warm" job through the worker (so that its FINISH script is loaded before
/// Redis starts refusing writes).
async fn warm_up(queue: &RedisQueue, c: &mut redis::Connection, q: &str) {
    queue.submit("warm", &Job { n: 999 }).await.unwrap();
    eventually(5, "warm-up acked", || completed(c, q) == 1).await;
}

/// Counts a run of job `n` in `runs`, then waits until `gate` opens.
async fn counted_then_gated(runs: &Runs, n: u64, gate: &AtomicBool) {
    *runs.lock().unwrap().entry(n).or_default() += 1;
    while !gate.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Builds the worker (with a `warm` task), runs it, and waits until a warm-up job is
/// acknowledged (the worker's connections made): the worker, its run and a connection.
async fn started(
    builder: nb_aiopool_redis::WorkerBuilder,
    queue: &RedisQueue,
    server: &RedisServer,
    q: &str,
) -> (
    Worker,
    tokio::task::JoinHandle<nb_aiopool_redis::ShutdownReport>,
    redis::Connection,
) {
    let w = builder
        .task("warm", |_j: Job| async { Ok::<(), String>(()) })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    let mut c = server.conn();
    warm_up(queue, &mut c, q).await;
    (w, run, c)
}

/// A result of 900 KB: under the server's argument limit (`proto-max-bulk-len` 1 MB, set
/// before the worker is built, so that it sends it), over a client eviction limit of
/// 500 KB set after the build (the worker's byte budget does not know it): Redis closes
/// the connection of each call that carries it, without a reply (a lost call).
fn big() -> String {
    "y".repeat(900_000)
}

fn start_for_big_records() -> RedisServer {
    let server = RedisServer::start();
    config_set(&mut server.conn(), "proto-max-bulk-len", "1mb");
    server
}

/// Client eviction from now on: calls carrying a [`big`] result are lost.
fn evict_big_calls(c: &mut redis::Connection) {
    config_set(c, "maxmemory-clients", "500000");
}

fn stop_evicting(c: &mut redis::Connection) {
    config_set(c, "maxmemory-clients", "0");
}

/// Fault. A worker that is alive, renewing and reading runs again a job it has
/// *finished*, because that job's record waited in the acker for longer than the lease:
/// the lease keeper renews only entries whose handler still runs (`Inner::running`), not
/// those whose record waits to be written (`Inner::ran_unrecorded`), and the read loop's
/// own reclaim skips only running entries (finding 60), so `XAUTOCLAIM` hands the idle
/// entry back to the same worker, which dispatches it again. The first run's record is
/// then dropped (the second run's insertion replaced it) or deletes the entry under the
/// second run. The docs: "Running handlers renew it every lease/3, so only the entries of
/// dead (or partitioned) workers are reclaimed" (`WorkerBuilder::lease`), "its own reclaim
/// of an entry it still runs only renews it" (README), and RELIABILITY.md 52: a memory
/// spike "shorter than about 1.5 s costs no second run".
///
/// The acker is held here by `OOM` for 1 s (the record is tried again for about 1.5 s),
/// with a 600 ms lease; any hold longer than the lease does the same at any scale: big
/// records each given up after about 0.6 s of lost calls (a burst of `concurrency` of
/// them holds every later record `concurrency` x 0.6 s, a minute for 100), `OOM` batch
/// after batch, a connection being re-established, an outage longer than the lease (the
/// README admits that *other* workers may then run the job again; not that the worker
/// that finished it starts it again).
///
/// Run twice: alone (its own reclaim runs the job again), then with a second, idle
/// worker on the queue (either may reclaim the entry; the second usually does). Expected: one run (the record is written once memory
/// is back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_whose_ack_waits_is_not_run_again() {
    for second in [false, true] {
        let mut runs = 1;
        while finished_job_waiting_for_its_ack(second).await.is_err() {
            assert!(
                runs < 5,
                "none of 5 runs (a second worker: {second}) ended the memory spike within \
                 {SPIKE_MAX:?} (is the machine that busy?)"
            );
            runs += 1;
        }
    }
}

/// The longest the test's memory spike may last, from the `CONFIG SET` that starts it to
/// the one that ends it having returned: it plays 1 s, shorter than the acker's 1.55 s of
/// `OOM` retries after the record's first refusal (which comes after the spike began).
/// A run whose spike lasted longer (its runtime held up by a loaded machine: the same
/// runtime runs the worker's lease keeper) did not play the scenario, and is run again
/// (CI on 3cd7315 failed this test once; its output was not kept).
const SPIKE_MAX: Duration = Duration::from_millis(1300);

/// A spike that outlasted [`SPIKE_MAX`].
struct TooLate;

async fn finished_job_waiting_for_its_ack(second: bool) -> Result<(), TooLate> {
    let server = RedisServer::start();
    let q = "ackwait";
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let runs: Runs = Arc::default();
    let gate = Arc::new(AtomicBool::new(false));
    let mk = || {
        let (r2, g2) = (runs.clone(), gate.clone());
        Worker::builder(&server.url(), q)
            .concurrency(2)
            .lease(Duration::from_millis(600))
            .block(Duration::from_millis(50))
            .task("r", move |j: Job| {
                let (r, g) = (r2.clone(), g2.clone());
                async move {
                    counted_then_gated(&r, j.n, &g).await;
                    Ok::<u64, String>(7)
                }
            })
            .task("warm", |_j: Job| async { Ok::<(), String>(()) })
            .build()
    };
    let w = mk().await.unwrap();
    let run = spawn_run(&w);
    let mut c = server.conn();
    warm_up(&queue, &mut c, q).await;
    let id = queue
        .submit_with_result("r", &Job { n: 1 }, Duration::from_secs(60))
        .await
        .unwrap();
    eventually(5, "job running", || runs_of(&runs, 1) == 1).await;
    // A second, idle worker (it reclaims idle entries too), or none.
    let w2 = mk().await.unwrap();
    let run2 = second.then(|| spawn_run(&w2));
    // A memory spike of 1 s, shorter than the acker's 1.5 s of OOM retries, while the
    // job finishes: its record (a result, a SET) is refused, then written.
    let spiked = Instant::now();
    config_set(&mut c, "maxmemory", "1");
    gate.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    config_set(&mut c, "maxmemory", "0");
    let spike = spiked.elapsed();
    eventually(5, "the result stored", || {
        result_json(&mut c, q, &id).is_some()
    })
    .await;
    // Past two leases: a second run would have happened by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (st, st2) = (w.stats(), w2.stats());
    let n = runs_of(&runs, 1);
    within(10, "shutdown", w.shutdown_timeout(Duration::from_secs(2))).await;
    within(
        10,
        "shutdown 2",
        w2.shutdown_timeout(Duration::from_secs(2)),
    )
    .await;
    let _ = within(10, "run", run).await;
    if let Some(run2) = run2 {
        let _ = within(10, "run 2", run2).await;
    }
    if spike > SPIKE_MAX {
        eprintln!("the memory spike lasted {spike:?}, over {SPIKE_MAX:?}: run again");
        return Err(TooLate);
    }
    assert_eq!(
        n, 1,
        "the job ran {n} times: its record waited in the acker (OOM for 1 s) past the \
         600 ms lease of its live worker (a second worker: {second}), nothing renewed the finished entry, and a reclaim \
         ran it again (the spike lasted {spike:?}; reclaimed by its own worker: {}, by the \
         other: {}; errors: {}, last: {:?})",
        st.reclaimed, st2.reclaimed, st.errors, st.last_error
    );
    Ok(())
}

/// Pin (question 1 of the review: Redis answers `PING` but every FINISH call times out).
/// `CLIENT PAUSE WRITE` longer than the worker's 5 s response timeout while 8 jobs with
/// results finish: the calls are not lost but postponed on the server (a timed-out call
/// stays queued on the connection: redis-rs does not reconnect on a timeout), and the
/// acker's `PING` shares that connection, so it waits behind them: no record is given up
/// (that needs a `PING` answered), the acker is held about as long as the pause, every
/// record is written once when it ends, each job ran once, the worker held its 8 slots
/// and read nothing more meanwhile (memory bounded by the concurrency), and a graceful
/// shutdown asked during the pause returns, drained, shortly after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_a_write_pause_longer_than_the_response_timeout_holds_the_acker_for_the_pause() {
    let server = RedisServer::start();
    let q = "ackpause";
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let runs: Runs = Arc::default();
    let gate = Arc::new(AtomicBool::new(false));
    let (r2, g2) = (runs.clone(), gate.clone());
    let (w, run, mut c) = started(
        Worker::builder(&server.url(), q)
            .concurrency(8)
            .block(Duration::from_millis(50))
            .task("r", move |j: Job| {
                let (r, g) = (r2.clone(), g2.clone());
                async move {
                    counted_then_gated(&r, j.n, &g).await;
                    Ok::<u64, String>(j.n)
                }
            }),
        &queue,
        &server,
        q,
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(
            queue
                .submit_with_result("r", &Job { n }, Duration::from_secs(60))
                .await
                .unwrap(),
        );
    }
    queue.submit("r", &Job { n: 8 }).await.unwrap();
    eventually(5, "8 jobs running", || runs.lock().unwrap().len() == 8).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(6500)
        .arg("WRITE")
        .query(&mut c)
        .unwrap();
    let paused = Instant::now();
    gate.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let held = w.stats().held;
    let ninth_ran = runs_of(&runs, 8);
    let done_in_pause = completed(&mut c, q);
    let stop = w.shutdown();
    let report = within(15, "graceful shutdown after the pause", stop).await;
    let stopped = paused.elapsed();
    let _ = within(10, "run", run).await;
    assert_eq!(
        held, 8,
        "slots held by the unwritten records during the pause"
    );
    assert_eq!(
        ninth_ran, 0,
        "a 9th job read while 8 records were unwritten"
    );
    assert_eq!(done_in_pause, 1, "something written during the write pause");
    assert!(report.drained, "{report:?}");
    assert!(
        stopped < Duration::from_millis(9500),
        "shutdown returned {stopped:?} after a 6.5 s pause began"
    );
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(
            result_json(&mut c, q, id),
            Some(format!(r#"{{"ok":{n}}}"#)),
            "job {n}'s result"
        );
    }
    let r = runs.lock().unwrap().clone();
    assert!(r.values().all(|&k| k == 1), "a job ran twice: {r:?}");
    // The 9th job was left pending-free in the stream (read by nobody) or ran once.
    assert!(
        completed(&mut c, q) >= 9,
        "completed {}",
        completed(&mut c, q)
    );
}

/// Pin (question 2: the give-up path). A record whose calls Redis never takes (a 900 KB
/// result under client eviction at 500 KB: the server closes the connection of each call)
/// is given up after about 0.6 s; its entry stays pending, is reclaimed after the lease and runs
/// again; the second run's record (a small result) is the one outcome: one completion,
/// its result stored, nothing pending, no dead letter. The give-up is visible through
/// the error hook only as the connection errors of its tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_a_given_up_record_runs_again_and_records_one_outcome() {
    let server = start_for_big_records();
    let q = "giveup";
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let runs: Runs = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let (r2, e2) = (runs.clone(), errors.clone());
    let (w, run, mut c) = started(
        Worker::builder(&server.url(), q)
            .concurrency(2)
            .lease(Duration::from_millis(800))
            .max_deliveries(3)
            .block(Duration::from_millis(50))
            .on_error(move |e| e2.lock().unwrap().push(e.to_string()))
            .task_with_ctx("r", move |j: Job, ctx: JobCtx| {
                let r = r2.clone();
                async move {
                    *r.lock().unwrap().entry(j.n).or_default() += 1;
                    if ctx.attempt() == 1 {
                        Ok::<String, String>(big())
                    } else {
                        Ok(format!("attempt {}", ctx.attempt()))
                    }
                }
            }),
        &queue,
        &server,
        q,
    )
    .await;
    evict_big_calls(&mut c);
    let id = queue
        .submit_with_result("r", &Job { n: 1 }, Duration::from_secs(60))
        .await
        .unwrap();
    eventually(10, "the second run's result", || {
        result_json(&mut c, q, &id).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = runs_of(&runs, 1);
    let done = completed(&mut c, q);
    let pend = pending(&mut c, q);
    let dead = xlen(&mut c, &dead_key(q));
    let res = result_json(&mut c, q, &id);
    stop_evicting(&mut c);
    within(10, "shutdown", w.shutdown_timeout(Duration::from_secs(2))).await;
    let _ = within(10, "run", run).await;
    assert_eq!(n, 2, "runs");
    assert_eq!(res.as_deref(), Some(r#"{"ok":"attempt 2"}"#));
    assert_eq!(done, 2, "completed (the warm-up and the second run)");
    assert!(pend.is_empty(), "pending: {pend:?}");
    assert_eq!(dead, 0);
    let errs = errors.lock().unwrap();
    assert!(!errs.is_empty(), "no error reported for the lost calls");
}

/// Pin (question 3: `OOM` for longer than the acker's 1.5 s of retries). The record is
/// given up; once memory is back its entry, still pending, is reclaimed after the lease
/// and runs again; one outcome, the second run's. Before finding 68's fix this failed
/// too, most runs ("ran 2 times during the spike"): the entry was not renewed while its
/// record was tried, so the 2 s lease ran from the read, not from the give-up, and the
/// job ran again (its record refused again) while memory was still short; with the fix
/// the lease runs from the give-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_a_record_refused_for_memory_too_long_runs_again_with_one_outcome() {
    let server = RedisServer::start();
    let q = "oomlong";
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let runs: Runs = Arc::default();
    let gate = Arc::new(AtomicBool::new(false));
    let (r2, g2) = (runs.clone(), gate.clone());
    let (w, run, mut c) = started(
        Worker::builder(&server.url(), q)
            .concurrency(2)
            .lease(Duration::from_secs(2))
            .block(Duration::from_millis(50))
            .task_with_ctx("r", move |j: Job, ctx: JobCtx| {
                let (r, g) = (r2.clone(), g2.clone());
                async move {
                    counted_then_gated(&r, j.n, &g).await;
                    Ok::<u64, String>(ctx.attempt())
                }
            }),
        &queue,
        &server,
        q,
    )
    .await;
    let id = queue
        .submit_with_result("r", &Job { n: 1 }, Duration::from_secs(60))
        .await
        .unwrap();
    eventually(5, "job running", || runs_of(&runs, 1) == 1).await;
    config_set(&mut c, "maxmemory", "1");
    gate.store(true, Ordering::SeqCst);
    // 2.2 s of OOM: past the acker's retries.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let first = runs_of(&runs, 1);
    let during = result_json(&mut c, q, &id);
    config_set(&mut c, "maxmemory", "0");
    eventually(10, "the result stored", || {
        result_json(&mut c, q, &id).is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = runs_of(&runs, 1);
    let done = completed(&mut c, q);
    let pend = pending(&mut c, q);
    let res = result_json(&mut c, q, &id);
    within(10, "shutdown", w.shutdown_timeout(Duration::from_secs(2))).await;
    let _ = within(10, "run", run).await;
    assert!(first <= 1, "ran {first} times during the spike");
    assert_eq!(during, None);
    assert_eq!(n, 2, "runs");
    assert_eq!(res.as_deref(), Some(r#"{"ok":2}"#));
    assert_eq!(done, 2, "completed (the warm-up and the second run)");
    assert!(pend.is_empty(), "pending: {pend:?}");
}

/// Pin (question 4: the record-by-record re-send after a lost batch). One batch holds a
/// plain ack, a result, a retry, a dead letter, a record whose entry another consumer
/// took meanwhile (`XCLAIM` by hand), and a 900 KB result Redis will not take (client
/// eviction set after the build): the call is lost, the records go one
/// by one; each is recorded once, the taken entry records nothing (it stays with the
/// other consumer until that one's lease lapses), the big ones are given up and their
/// jobs run again after the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_a_lost_mixed_batch_is_recorded_once_record_by_record() {
    let server = start_for_big_records();
    let q = "mixed";
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let runs: Runs = Arc::default();
    let gate0 = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(AtomicBool::new(false));
    let (r2, g0, g) = (runs.clone(), gate0.clone(), gate.clone());
    let (w, run, mut c) = started(
        Worker::builder(&server.url(), q)
            .concurrency(8)
            .lease(Duration::from_secs(3))
            .max_deliveries(2)
            .backoff(Duration::from_secs(60), Duration::from_secs(60))
            .block(Duration::from_millis(50))
            .task_with_ctx("r", move |j: Job, ctx: JobCtx| {
                let (r, g0, g) = (r2.clone(), g0.clone(), g.clone());
                async move {
                    *r.lock().unwrap().entry(j.n).or_default() += 1;
                    let gate = if j.n == 0 { g0 } else { g };
                    while !gate.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    match (j.n, ctx.attempt()) {
                        (0 | 5, 1) => Ok(big()),
                        (3 | 4, _) => Err(format!("fails at attempt {}", ctx.attempt())),
                        _ => Ok(format!("n{} a{}", j.n, ctx.attempt())),
                    }
                }
            }),
        &queue,
        &server,
        q,
    )
    .await;
    // 0: big (holds the acker while the others finish), 1: plain ack, 2: result,
    // 3: retry, 4: dead letter (its entry says one run failed before), 5: big, 6: taken.
    let big0 = queue
        .submit_with_result("r", &Job { n: 0 }, Duration::from_secs(60))
        .await
        .unwrap();
    queue.submit("r", &Job { n: 1 }).await.unwrap();
    let res2 = queue
        .submit_with_result("r", &Job { n: 2 }, Duration::from_secs(60))
        .await
        .unwrap();
    queue.submit("r", &Job { n: 3 }).await.unwrap();
    let dead4: String = redis::cmd("XADD")
        .arg(stream_key(q))
        .arg("*")
        .arg("t")
        .arg("r")
        .arg("p")
        .arg(r#"{"n":4}"#)
        .arg("a")
        .arg("1")
        .query(&mut c)
        .unwrap();
    let big5 = queue
        .submit_with_result("r", &Job { n: 5 }, Duration::from_secs(60))
        .await
        .unwrap();
    let taken6 = queue
        .submit_with_result("r", &Job { n: 6 }, Duration::from_secs(60))
        .await
        .unwrap();
    eventually(5, "7 jobs running", || runs.lock().unwrap().len() == 7).await;
    // Another consumer takes job 6's entry (as after a lapsed lease).
    let _: Vec<String> = redis::cmd("XCLAIM")
        .arg(stream_key(q))
        .arg("workers")
        .arg("other")
        .arg(0)
        .arg(&taken6)
        .arg("JUSTID")
        .query(&mut c)
        .unwrap();
    evict_big_calls(&mut c);
    gate0.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The others finish while job 0's record is being given up: one batch next.
    gate.store(true, Ordering::SeqCst);
    eventually(10, "results of 2", || {
        result_json(&mut c, q, &res2).is_some()
    })
    .await;
    // Give-ups (about 0.6 s each) done: every record settled or given up, no entry held
    // (waited for, not slept: on a loaded machine a fixed 1.2 s was too short, eviction
    // stopped before job 5's give-up, and its record then went through); the big jobs'
    // second runs (after the 3 s lease) not yet.
    let settled = within(10, "every record settled or given up", async {
        comes_true(500, || w.stats().held == 0).await
    })
    .await;
    let done = completed(&mut c, q);
    let pend = pending(&mut c, q);
    let delayed: u64 = redis::cmd("ZCARD")
        .arg(delayed_key(q))
        .query(&mut c)
        .unwrap();
    let dead = xlen(&mut c, &dead_key(q));
    let r6 = result_json(&mut c, q, &taken6);
    let r2v = result_json(&mut c, q, &res2);
    let early = runs.lock().unwrap().clone();
    stop_evicting(&mut c);
    // The big ones run again after the lease and are recorded then.
    eventually(10, "big jobs' second runs recorded", || {
        result_json(&mut c, q, &big0).is_some() && result_json(&mut c, q, &big5).is_some()
    })
    .await;
    let r = runs.lock().unwrap().clone();
    within(10, "shutdown", w.shutdown_timeout(Duration::from_secs(2))).await;
    let _ = within(10, "run", run).await;
    assert!(
        settled,
        "the worker still held entries 5 s after its jobs ended"
    );
    assert_eq!(done, 3, "completed: warm-up, plain ack 1, result 2");
    assert_eq!(r2v.as_deref(), Some(r#"{"ok":"n2 a1"}"#));
    assert_eq!(delayed, 1, "job 3's retry");
    assert_eq!(dead, 1, "job 4's dead letter");
    assert_eq!(
        r6, None,
        "the taken entry's outcome recorded by the worker that lost it"
    );
    let mut pend_sorted: Vec<_> = pend.clone();
    pend_sorted.sort();
    let mut want = vec![
        (big0.clone(), w.consumer_name().to_owned()),
        (big5.clone(), w.consumer_name().to_owned()),
        (taken6.clone(), "other".to_owned()),
    ];
    want.sort();
    assert_eq!(
        pend_sorted, want,
        "pending after the re-send (dead 4 = {dead4})"
    );
    for n in 0..7 {
        assert_eq!(
            early.get(&n),
            Some(&1),
            "runs of job {n} before the lease: {early:?}"
        );
    }
    // After the lease: the big jobs ran again (their records were given up), and so did
    // job 6 (reclaimed from "other", which never renews). Nothing else.
    for n in [1, 2, 3, 4] {
        assert_eq!(r.get(&n), Some(&1), "runs of job {n}: {r:?}");
    }
    for n in [0, 5] {
        assert_eq!(r.get(&n), Some(&2), "runs of big job {n}: {r:?}");
    }
}

/// Fault (observability). A record given up is not reported as such: the error hook and
/// `stats()` see only the errors of its tries (`broken pipe`, `OOM ...`), which the hook's
/// docs say the worker "retries anyway", and nothing names the job whose outcome was
/// dropped and that will run again after the lease (its `succeeded` was counted already).
/// A user cannot tell "Redis hiccuped, retried" from "this job's run was thrown away".
/// Both give-up paths: a lone record whose calls are lost (a 900 KB result under client
/// eviction at 500 KB) and a record refused with `OOM` for longer
/// than the acker's retries.
///
/// Expected: an error reported through `on_error` names the given-up entry's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_up_record_is_reported_with_its_entry() {
    for oom in [false, true] {
        let server = start_for_big_records();
        let q = if oom { "gupoom" } else { "guplost" };
        let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let runs: Runs = Arc::default();
        let gate = Arc::new(AtomicBool::new(false));
        let (e2, r2, g2) = (errors.clone(), runs.clone(), gate.clone());
        let (w, run, mut c) = started(
            Worker::builder(&server.url(), q)
                .concurrency(2)
                .lease(Duration::from_secs(30))
                .block(Duration::from_millis(50))
                .on_error(move |e| e2.lock().unwrap().push(e.to_string()))
                .task("r", move |j: Job| {
                    let (r, g) = (r2.clone(), g2.clone());
                    async move {
                        counted_then_gated(&r, j.n, &g).await;
                        Ok::<String, String>(if oom { "small".to_owned() } else { big() })
                    }
                }),
            &queue,
            &server,
            q,
        )
        .await;
        let id = queue
            .submit_with_result("r", &Job { n: 1 }, Duration::from_secs(60))
            .await
            .unwrap();
        eventually(5, "job running", || runs_of(&runs, 1) == 1).await;
        if oom {
            config_set(&mut c, "maxmemory", "1");
        } else {
            evict_big_calls(&mut c);
        }
        gate.store(true, Ordering::SeqCst);
        // Given up after about 0.6 s (lost calls) or 1.5 s (OOM); its slot is freed then.
        let freed = within(10, "the record given up (slot freed)", async {
            comes_true(500, || w.stats().held == 0).await
        })
        .await;
        let pend = pending(&mut c, q);
        config_set(&mut c, "maxmemory", "0");
        stop_evicting(&mut c);
        within(10, "shutdown", w.shutdown_timeout(Duration::from_secs(2))).await;
        let _ = within(10, "run", run).await;
        assert!(freed, "the record was not given up in 5 s (oom: {oom})");
        assert_eq!(pend.len(), 1, "the given-up entry stays pending: {pend:?}");
        let errs = errors.lock().unwrap().clone();
        assert!(
            errs.iter().any(|e| e.contains(&id)),
            "the record of entry {id} was given up (oom: {oom}; its job will run again after \
             the lease), and no error reported says so: {} errors, {:?}",
            errs.len(),
            errs.iter()
                .map(|e| e.chars().take(100).collect::<String>())
                .collect::<Vec<_>>()
        );
    }
}
