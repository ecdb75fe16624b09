//! Deadlines while Redis does not answer, large submits under client eviction, the CLI's
//! output, and huge settings: findings 72–76 of a review of the crate (2026-12-05, on
//! c77046b; each test failed there for the reason its doc comment gives), and pins of
//! behaviour checked and found sound. Every test starts its own `redis-server` and
//! bounds its waits.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_aiopool_redis::{JobCtx, RedisQueue, Worker};
use support::proxy::{proxy, OnCall};
use support::*;

/// Fault (the producer's twin of finding 66). Concurrent `submit`s of one `RedisQueue`
/// are sent by its submitter task as one SUBMIT script call of up to 512 submissions,
/// bounded in count, not in bytes. With client eviction on (`maxmemory-clients`, Redis
/// 7.0+), a call's arguments count against the limit while Redis reads them: six payloads
/// of 900 KB, each of which the server takes alone (the first submit shows it), go out
/// as one call of 5.4 MB, Redis closes the connection, and every one of the six fails
/// ("broken pipe" / "connection reset"). A caller that retries (the error is retryable)
/// meets the same batching again. Expected: the submits are accepted, as they are one at
/// a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_big_submits_are_not_sent_as_one_call_the_server_evicts() {
    let server = RedisServer::start();
    config_set(&mut server.conn(), "proto-max-bulk-len", "1mb");
    // One payload of 900 KB fits; two in one call do not.
    config_set(&mut server.conn(), "maxmemory-clients", "2000000");
    let q = "bigsubmits";
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let payload = "x".repeat(900_000);
    within(20, "one big submit alone", queue.submit("t", &payload))
        .await
        .expect("a 900 KB payload alone is accepted");
    // Submits made while the submitter's call is held up pile up in its channel and go
    // out as one call: a write pause of 300 ms (the first submit's call waits in Redis)
    // stands for a busy server or a slow link.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(300)
        .arg("WRITE")
        .query(&mut server.conn())
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (queue, payload) = (queue.clone(), payload.clone());
        tasks.push(tokio::spawn(
            async move { queue.submit("t", &payload).await },
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut failed = Vec::new();
    for t in tasks {
        if let Err(e) = within(30, "a big submit", t).await.unwrap() {
            failed.push(e.to_string());
        }
    }
    let len = xlen(&mut server.conn(), &stream_key(q));
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut server.conn())
        .unwrap();
    let evicted = info_field(&info, "evicted_clients");
    assert!(
        failed.is_empty(),
        "{} of 6 concurrent submits of 900 KB failed although each alone is accepted \
         (stream length {len}, 7 expected; clients evicted by Redis: {evicted}): {failed:?}",
        failed.len()
    );
    assert_eq!(len, 7, "every submit added its job once");
}

fn signal_pid(pid: i32, sig: i32) {
    // SAFETY: kill(2) on the test's own child process.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

fn server_pid(server: &RedisServer) -> i32 {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut server.conn())
        .unwrap();
    info_field(&info, "process_id") as i32
}

/// Records when it is dropped: the moment a handler's future was aborted.
struct DroppedAt(Arc<Mutex<Option<Instant>>>);

impl Drop for DroppedAt {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

/// A worker of queue `q` at `url` (concurrency 2) whose handler of task "t" never ends
/// and notes when its future is dropped (aborted); and whether it started.
async fn endless_worker(
    url: &str,
    q: &str,
) -> (
    Worker,
    Arc<Mutex<Option<Instant>>>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let aborted: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (a2, s2) = (aborted.clone(), started.clone());
    let w = Worker::builder(url, q)
        .concurrency(2)
        .task("t", move |_j: Job| {
            let guard = DroppedAt(a2.clone());
            let s = s2.clone();
            async move {
                let _guard = guard;
                s.store(true, std::sync::atomic::Ordering::SeqCst);
                std::future::pending::<()>().await;
                Ok::<(), String>(())
            }
        })
        .build()
        .await
        .unwrap();
    (w, aborted, started)
}

/// Runs an endless job on a worker, stops Redis with `SIGSTOP` (a stalled server, or a
/// network partition: calls get no reply), calls `shutdown_timeout(300 ms)` and measures
/// when the handler was aborted and when the stop returned (both from the call).
///
/// With `resume_once_aborted`, Redis is resumed (`SIGCONT`) once the handler was aborted
/// (or after 3 s), so that the stop then returns quickly.
async fn deadline_stop_with_redis_stalled(
    q: &str,
    resume_once_aborted: bool,
) -> (Option<Duration>, Duration, String) {
    let server = RedisServer::start();
    let pid = server_pid(&server);
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let (w, aborted, started) = endless_worker(&server.url(), q).await;
    let run = spawn_run(&w);
    queue.submit("t", &Job { n: 1 }).await.unwrap();
    eventually(10, "the job running", || {
        started.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    // Let the read loop be in its next blocking read.
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal_pid(pid, libc::SIGSTOP);
    let t0 = Instant::now();
    let stop = tokio::spawn(w.shutdown_timeout(Duration::from_millis(300)));
    if resume_once_aborted {
        comes_true(300, || aborted.lock().unwrap().is_some()).await;
        signal_pid(pid, libc::SIGCONT);
    }
    let report = tokio::time::timeout(Duration::from_secs(60), stop)
        .await
        .map(|r| r.expect("the stop task"));
    let took = t0.elapsed();
    let aborted_after = aborted.lock().unwrap().map(|t| t.duration_since(t0));
    if !resume_once_aborted {
        signal_pid(pid, libc::SIGCONT);
    }
    let _ = within(20, "run to end", run).await;
    let report = report.expect("shutdown_timeout did not return within 60 s");
    (aborted_after, took, format!("{report:?}"))
}

/// Fault. The README (Shutdown) says: "at the deadline of `shutdown_timeout`, abort what
/// still runs and put those jobs back in the stream". When Redis stops answering (a
/// network partition, a stalled server: here `SIGSTOP`), handlers run on past the
/// deadline: `run` aborted them only in its drain, which starts after the read loop
/// returns, and the read loop waits for its `XREADGROUP` in flight (not raced against
/// the stop, on purpose) up to the read connection's response timeout (`block` + 5 s),
/// then for a maintenance call in flight (5 s). Measured: the handler aborted 5.4 s after
/// `shutdown_timeout(300 ms)` was called. (With Redis answering, a handler still ran up
/// to `block` past the deadline, for the same reason.) Expected: aborted at the deadline.
/// Fixed: `run` races its read loop against a timer that aborts the running handlers at
/// the deadline (they stay listed, and the drain puts their jobs back as before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_shutdown_aborts_handlers_at_the_deadline_while_redis_does_not_answer() {
    let (aborted_after, took, report) = deadline_stop_with_redis_stalled("stalled1", true).await;
    assert!(
        aborted_after.is_some_and(|d| d < Duration::from_millis(1500)),
        "the handler was aborted {aborted_after:?} after shutdown_timeout(300 ms) was \
         called, not at its deadline (Redis not answering); the stop returned after \
         {took:?} ({report})"
    );
}

/// Fault. The same stop returned about 20 s after `shutdown_timeout(300 ms)`
/// was called while Redis does not answer: after the read loop (up to `block` + 5 s)
/// and a maintenance call (5 s), the drain makes three more calls (RELEASE of the
/// aborted job, the leftover `XPENDING`, LEAVE), each waiting the 5 s response timeout
/// (and up to 10 s more for the acker's flush when it holds records). A deadline is what
/// a process stopping within a grace period relies on (a container's is 30 s by
/// default): past it the process is SIGKILLed, which loses nothing (the entries stay
/// pending and are reclaimed after the lease) but the report is never seen. Expected:
/// the stop returns within a bounded time of its deadline; what cannot be put back in
/// that time is left pending (counted in `left_pending`). Fixed: with a deadline, the
/// stop waits for the read in flight until `block` and 0.5 s past it, and for the
/// drain's calls until `block` and 2 s past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_shutdown_returns_soon_after_its_deadline_while_redis_does_not_answer() {
    let (aborted_after, took, report) = deadline_stop_with_redis_stalled("stalled2", false).await;
    eprintln!("stalled stop: took {took:?}, aborted after {aborted_after:?}: {report}");
    // The bound: the deadline (300 ms), `block` (500 ms) and 2 s of grace; 1 s of slack.
    assert!(
        took < Duration::from_millis(3800),
        "shutdown_timeout(300 ms) returned {took:?} after it was called (Redis not \
         answering); the handler was aborted {aborted_after:?} after ({report})"
    );
    assert!(
        report.contains("left_pending: 1"),
        "the job Redis could not take back is not counted as left pending: {report}"
    );
}

/// Fault (an operator's terminal). The CLI's `dead` prints a dead letter's reason and
/// payload as they are stored. Both come from outside: the payload of an entry anyone
/// wrote to the stream (dead-lettered as malformed or as an unknown task, lossy UTF-8),
/// the reason from a handler's error text. Terminal control sequences in them (ESC ...)
/// reach the operator's terminal raw (they can retitle it, clear it, or hide and fake
/// lines), and a newline in them breaks the listing's one-letter-per-three-lines shape
/// into fake lines. The task is printed with `{:?}` (escaped); the others are not.
/// Expected: control characters shown escaped.
#[test]
fn cli_dead_does_not_print_control_characters_raw() {
    let server = RedisServer::start();
    let q = "ctl";
    let _: String = redis::cmd("XADD")
        .arg(dead_key(q))
        .arg("*")
        .arg("j")
        .arg("1-1")
        .arg("t")
        .arg("t")
        .arg("p")
        .arg("\u{1b}]0;owned\u{7}\u{1b}[2J")
        .arg("a")
        .arg("1")
        .arg("r")
        .arg("0")
        .arg("reason")
        .arg("boom\n1-2  job 1-2  task \"t\"  attempts 0  at 0 ms")
        .arg("at")
        .arg("1")
        .query(&mut server.conn())
        .unwrap();
    let (status, out, err) = cli_run(&server.url(), &[q, "dead"]);
    assert_eq!(status, Some(0), "stderr: {err}");
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{7}'),
        "the CLI printed terminal control characters raw: {out:?}"
    );
    assert_eq!(
        out.lines().count(),
        3,
        "one dead letter should print as 3 lines (id, reason, payload): {out:?}"
    );
}

/// Pin: a producer's `response_timeout(Duration::MAX)` ("never time out") connects,
/// submits and reads stats without a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_a_response_timeout_of_duration_max_works() {
    let server = RedisServer::start();
    let queue = within(
        10,
        "connect",
        RedisQueue::builder(&server.url(), "rtmax")
            .response_timeout(Duration::MAX)
            .max_len(u64::MAX)
            .connect(),
    )
    .await
    .unwrap();
    within(10, "submit", queue.submit("t", &Job { n: 1 }))
        .await
        .unwrap();
    let s = within(10, "stats", queue.stats()).await.unwrap();
    assert_eq!(s.waiting, 1);
}

/// Pin: a backoff of `Duration::MAX` (retry "never") is accepted by FINISH: a failing job
/// waits in the delayed set, not lost, no error reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_a_huge_backoff_keeps_the_job_delayed() {
    let server = RedisServer::start();
    let q = "hugebackoff";
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let w = Worker::builder(&server.url(), q)
        .backoff(Duration::MAX, Duration::MAX)
        .block(Duration::from_millis(50))
        .task("t", |_j: Job| async move { Err::<(), _>("no") })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    queue.submit("t", &Job { n: 1 }).await.unwrap();
    let mut delayed = 0;
    for _ in 0..500 {
        delayed = queue.stats().await.unwrap().delayed;
        if delayed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = w.stats();
    within(10, "shutdown", w.shutdown()).await;
    let _ = within(10, "run", run).await;
    assert_eq!(
        delayed, 1,
        "the failed job waits in the delayed set: {stats:?}"
    );
    assert_eq!(stats.errors, 0, "{stats:?}");
}

/// Pin: the largest concurrency the builder takes (1,000,000) builds, runs a job and
/// stops gracefully in a bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_the_largest_concurrency_runs_and_stops() {
    let server = RedisServer::start();
    let q = "huge";
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let t0 = Instant::now();
    let w = Worker::builder(&server.url(), q)
        .concurrency(1_000_000)
        .block(Duration::from_millis(50))
        .task("t", |j: Job| async move { Ok::<u64, String>(j.n) })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    let v: u64 = submit_for_result(&queue, "t", &Job { n: 7 }).await;
    assert_eq!(v, 7);
    let report = within(10, "shutdown", w.shutdown()).await;
    let _ = within(10, "run", run).await;
    assert!(report.drained, "{report:?}");
    eprintln!("concurrency 1e6: {:?}", t0.elapsed());
}

/// Fault (finding 46's sibling, on the reclaim path). Finding 46's fix leaves the entries
/// of a read whose reply comes after a `shutdown_timeout` deadline pending (the drain
/// puts them back as leftovers: their delivery does not count as a run). The reclaim
/// (`XAUTOCLAIM`, made by the read loop every lease/2 before its read) has no such check:
/// entries it took from a dead worker, whose reply comes after the deadline, are
/// dispatched, so their handlers *start after the deadline* (and run until the read that
/// follows returns, up to `block`), are aborted by the drain and put back in the
/// `deadline` mode: that delivery counts as a run that was cut off. In the test a job
/// delivered once to a consumer that died (run 1) is reclaimed by a worker whose reply
/// comes 600 ms late, after the 50 ms deadline: its handler starts after the deadline,
/// and the next worker sees `attempt() == 3` (with `max_deliveries(2)` the job would be
/// dead-lettered without a second real run). Expected: as for a read, entries reclaimed
/// after the deadline are left pending and released as leftovers: no handler starts after
/// the deadline, and the next run is attempt 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_reclaimed_after_a_shutdown_deadline_are_not_started() {
    let server = RedisServer::start();
    let q = "lateclaim";
    let lease = Duration::from_millis(400);
    // The RECLAIM script's call: EVALSHA sha 1 stream workers consumer <lease ms> cursor
    // count. Applied at once; its reply delivered 600 ms late.
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let a2 = arrivals.clone();
    let url = proxy(server.port, move |args| {
        if args.len() == 9 && args[0].eq_ignore_ascii_case(b"EVALSHA") && args[6] == b"400" {
            a2.lock().unwrap().push(Instant::now());
            OnCall::LateReply(Duration::from_millis(600))
        } else {
            OnCall::Forward
        }
    })
    .await;
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let id = queue.submit("t", &Job { n: 1 }).await.unwrap();
    // A worker that took the job and died (its delivery is run 1).
    let mut c = server.conn();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("died")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(stream_key(q))
        .arg(">")
        .query(&mut c)
        .unwrap();
    let taken_at = Instant::now();
    let starts: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let s2 = starts.clone();
    let w = Worker::builder(&url, q)
        .concurrency(2)
        .lease(lease)
        .block(Duration::from_millis(50))
        .task_with_ctx("t", move |_j: Job, ctx: JobCtx| {
            let s = s2.clone();
            async move {
                s.lock().unwrap().push((Instant::now(), ctx.attempt()));
                std::future::pending::<()>().await;
                Ok::<(), String>(())
            }
        })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    // Wait for a reclaim call made once the entry is idle past the lease: it claims it.
    eventually(10, "a reclaim call once the entry is idle", || {
        arrivals
            .lock()
            .unwrap()
            .iter()
            .any(|t| t.duration_since(taken_at) > lease)
    })
    .await;
    let called = Instant::now();
    let deadline = called + Duration::from_millis(50);
    let report = within(
        20,
        "shutdown_timeout",
        w.shutdown_timeout(Duration::from_millis(50)),
    )
    .await;
    let _ = within(10, "run", run).await;
    let starts_b = starts.lock().unwrap().clone();
    // (A reclaim whose reply came before the stop would make this test meaningless.)
    assert!(
        starts_b.iter().all(|(t, _)| *t > called),
        "setup: the job started before the stop was requested: {starts_b:?}"
    );
    let started_b: Vec<(Duration, u64)> = starts_b
        .iter()
        .filter(|(t, _)| *t > deadline)
        .map(|(t, a)| (t.duration_since(deadline), *a))
        .collect();
    // The job's next run, on a worker without the proxy.
    let attempts: Arc<Mutex<Vec<(String, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let a3 = attempts.clone();
    let w2 = Worker::builder(&server.url(), q)
        .block(Duration::from_millis(50))
        .task_with_ctx("t", move |_j: Job, ctx: JobCtx| {
            let a = a3.clone();
            async move {
                a.lock().unwrap().push((ctx.id().to_owned(), ctx.attempt()));
                Ok::<(), String>(())
            }
        })
        .build()
        .await
        .unwrap();
    let run2 = spawn_run(&w2);
    let ran = comes_true(500, || !attempts.lock().unwrap().is_empty()).await;
    within(10, "shutdown", w2.shutdown()).await;
    let _ = within(10, "run", run2).await;
    let next = attempts.lock().unwrap().clone();
    assert!(
        started_b.is_empty(),
        "handlers started after the shutdown deadline (time after it, attempt): \
         {started_b:?}; report {report:?}; next run {next:?}"
    );
    assert!(ran, "the job ran again on the next worker: {report:?}");
    assert_eq!(
        next,
        vec![(id, 2)],
        "the next run is attempt 2 (the dead worker's delivery was run 1); report {report:?}"
    );
}
