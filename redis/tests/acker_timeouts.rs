//! Finding 70: a record whose call Redis applies but whose reply comes after the worker's
//! 5 s response timeout (a big result on a slow link), while Redis answers everything
//! else. The worker talks to Redis through a small TCP proxy (`support::proxy`), which
//! forwards every byte but holds back the reply to each call carrying a big argument for
//! 6 s (and, as replies come in order on one connection, every reply behind it): the
//! call is applied at once, its reply is late, and a `PING` sent after its timeout is
//! answered within a second. Every test starts its own `redis-server` and bounds its waits.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_aiopool_redis::{RedisQueue, Worker};
use support::proxy::{proxy, OnCall};
use support::*;

/// How late the proxy delivers the reply to a call carrying a big argument: past the
/// worker's 5 s response timeout.
const LATE: Duration = Duration::from_secs(6);
/// An argument at least this long makes a call slow.
const BIG_ARG: usize = 100_000;

/// A proxy to Redis at `port` that delays the replies to calls carrying an argument of
/// [`BIG_ARG`] bytes or more by [`LATE`] (counted from the call's arrival). Returns its
/// URL and the number of such calls it has seen.
async fn slow_link_proxy(port: u16) -> (String, Arc<AtomicU64>) {
    let big_calls = Arc::new(AtomicU64::new(0));
    let seen = big_calls.clone();
    let url = proxy(port, move |args| {
        if args.iter().any(|a| a.len() >= BIG_ARG) {
            seen.fetch_add(1, Ordering::SeqCst);
            OnCall::LateReply(LATE)
        } else {
            OnCall::Forward
        }
    })
    .await;
    (url, big_calls)
}

/// A result of 300 KB: a call carrying it is slow (its reply comes after the timeout).
fn big() -> String {
    "z".repeat(300_000)
}

type Errors = Arc<Mutex<Vec<String>>>;

fn summary(errors: &Errors) -> Vec<String> {
    errors
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.chars().take(140).collect())
        .collect()
}

/// A running worker, and what its handlers and error hook saw.
struct Started {
    w: Worker,
    run: tokio::task::JoinHandle<nb_aiopool_redis::ShutdownReport>,
    runs: Runs,
    /// Jobs numbered above 1 finish once it is open.
    gate: Arc<AtomicBool>,
    errors: Errors,
}

/// A worker of `q` through the proxy at `url`: task `r` counts its run of job `n` and
/// returns [`big`] for odd `n` (after the gate opens for `n` > 1), a small string
/// otherwise; every error is kept. Runs it and waits until a warm-up job is acknowledged
/// (scripts loaded, connections made).
async fn started(
    url: &str,
    q: &str,
    concurrency: usize,
    queue: &RedisQueue,
    c: &mut redis::Connection,
) -> Started {
    let (runs, gate, errors): (Runs, Arc<AtomicBool>, Errors) = Default::default();
    let (r2, g2, e2) = (runs.clone(), gate.clone(), errors.clone());
    let w = Worker::builder(url, q)
        .concurrency(concurrency)
        .block(Duration::from_millis(50))
        .on_error(move |e| e2.lock().unwrap().push(e.to_string()))
        .task("r", move |j: Job| {
            let (r, g) = (r2.clone(), g2.clone());
            async move {
                *r.lock().unwrap().entry(j.n).or_default() += 1;
                if j.n > 1 {
                    while !g.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Ok::<String, String>(if j.n % 2 == 1 {
                    big()
                } else {
                    format!("small {}", j.n)
                })
            }
        })
        .task("warm", |_j: Job| async { Ok::<(), String>(()) })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    queue.submit("warm", &Job { n: 999 }).await.unwrap();
    eventually(10, "warm-up acked", || completed(c, q) == 1).await;
    Started {
        w,
        run,
        runs,
        gate,
        errors,
    }
}

/// Fault (finding 70). A job's result (300 KB) is written by its first call, whose reply
/// comes 1 s after the 5 s response timeout; Redis answers the `PING` the worker sends
/// after each lost call. Before the fix the worker re-sent the whole record five more
/// times (each call timing out the same way), then gave it up: about 31 s during which
/// the acker was held (a graceful shutdown waited for it) and then an "acknowledgement
/// given up" error saying the job "runs again after the lease", though its outcome had
/// been recorded by the first call and its entry deleted. Expected: the worker asks
/// whether the entry is still pending before re-sending, finds it is not, and is done:
/// the shutdown returns about 6 s after the job ended, the record was sent once, and
/// nothing is given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_applied_whose_reply_times_out_is_not_sent_again_nor_given_up() {
    let server = RedisServer::start();
    let q = "latereply";
    let (url, big_calls) = slow_link_proxy(server.port).await;
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let mut c = server.conn();
    let Started {
        w,
        run,
        runs,
        errors,
        ..
    } = started(&url, q, 2, &queue, &mut c).await;
    let id = queue
        .submit_with_result("r", &Job { n: 1 }, Duration::from_secs(60))
        .await
        .unwrap();
    // The first call is applied at once (only its reply is late).
    eventually(10, "the result stored", || {
        result_json(&mut c, q, &id).is_some()
    })
    .await;
    let ended = Instant::now();
    let report = within(60, "graceful shutdown", w.shutdown()).await;
    let took = ended.elapsed();
    let _ = within(10, "run", run).await;
    let errs = summary(&errors);
    let sent = big_calls.load(Ordering::SeqCst);
    assert!(
        took < Duration::from_secs(10),
        "a graceful shutdown took {took:?} after the job ended: the record's call was \
         applied but answered after the response timeout, and the record was sent {sent} \
         times; errors: {errs:?}"
    );
    assert!(
        !errs.iter().any(|e| e.contains("given up")),
        "an applied record reported as given up: {errs:?}"
    );
    assert_eq!(sent, 1, "calls carrying the 300 KB record");
    assert!(report.drained, "{report:?}");
    assert_eq!(report.left_pending, 0, "{report:?}");
    assert_eq!(runs_of(&runs, 1), 1, "runs");
    assert_eq!(
        result_json(&mut c, q, &id),
        Some(format!(r#"{{"ok":"{}"}}"#, big()))
    );
    assert_eq!(
        completed(&mut c, q),
        2,
        "completed (the warm-up and the job)"
    );
    assert_eq!(xlen(&mut c, &stream_key(q)), 0, "stream");
    assert!(pending(&mut c, q).is_empty(), "{:?}", pending(&mut c, q));
    assert_eq!(xlen(&mut c, &dead_key(q)), 0, "dead letters");
}

/// Fault (finding 70, through a batch). A lone record (job 1, 300 KB) holds the acker
/// while jobs 2 (small) and 3 (300 KB) finish; their records then go out in one batch,
/// whose call is applied but answered after the timeout, so the acker sends them again
/// one by one. Before the fix job 3's record was sent again alone, timed out five more
/// times and was given up (as was job 1's): the acker was held over a minute. Expected:
/// each record is checked (still pending here?) before it is sent again, and none is:
/// the acker is free about 12 s after job 1 ended (two late replies), each outcome
/// recorded once, nothing given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_applied_whose_reply_times_out_is_not_sent_again_record_by_record() {
    let server = RedisServer::start();
    let q = "latebatch";
    let (url, big_calls) = slow_link_proxy(server.port).await;
    let queue = RedisQueue::connect(&server.url(), q).await.unwrap();
    let mut c = server.conn();
    let Started {
        w,
        run,
        runs,
        gate,
        errors,
    } = started(&url, q, 3, &queue, &mut c).await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(
            queue
                .submit_with_result("r", &Job { n }, Duration::from_secs(60))
                .await
                .unwrap(),
        );
    }
    eventually(10, "job 1's result stored", || {
        result_json(&mut c, q, &ids[0]).is_some()
    })
    .await;
    let ended = Instant::now();
    eventually(5, "jobs 2 and 3 running", || {
        runs_of(&runs, 2) == 1 && runs_of(&runs, 3) == 1
    })
    .await;
    // Jobs 2 and 3 finish while job 1's record holds the acker: one batch next.
    gate.store(true, Ordering::SeqCst);
    let free = within(30, "the acker", async {
        comes_true(2500, || w.stats().held == 0).await
    })
    .await;
    let took = ended.elapsed();
    let sent = big_calls.load(Ordering::SeqCst);
    let errs = summary(&errors);
    let report = within(60, "graceful shutdown", w.shutdown()).await;
    let _ = within(10, "run", run).await;
    assert!(
        free && took < Duration::from_secs(15),
        "the acker still held records {took:?} after job 1 ended (freed: {free}): calls \
         carrying a 300 KB record: {sent}; errors: {errs:?}"
    );
    assert!(
        !errs.iter().any(|e| e.contains("given up")),
        "an applied record reported as given up: {errs:?}"
    );
    assert_eq!(
        sent, 2,
        "calls carrying a 300 KB record (job 1 alone, then the batch)"
    );
    assert!(report.drained, "{report:?}");
    for (i, n) in (1..=3u64).enumerate() {
        assert_eq!(runs_of(&runs, n), 1, "runs of job {n}");
        let want = if n % 2 == 1 {
            big()
        } else {
            format!("small {n}")
        };
        assert_eq!(
            result_json(&mut c, q, &ids[i]),
            Some(format!(r#"{{"ok":"{want}"}}"#)),
            "job {n}'s result"
        );
    }
    assert_eq!(
        completed(&mut c, q),
        4,
        "completed (the warm-up and 3 jobs)"
    );
    assert_eq!(xlen(&mut c, &stream_key(q)), 0, "stream");
    assert!(pending(&mut c, q).is_empty(), "{:?}", pending(&mut c, q));
    assert_eq!(xlen(&mut c, &dead_key(q)), 0, "dead letters");
}
