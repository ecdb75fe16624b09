//! Review of the at-least-once guarantee under crashes and restarts (a helper's review,
//! findings 60-62): worker processes killed with SIGKILL mid-task and between finishing a
//! job and acknowledging it, a job that kills its worker, lease renewals that fail, very
//! large payloads, and several workers starting at once on a new queue.
//!
//! The worker processes are this test binary run again (`crash_child`, ignored unless
//! started by a test here), as in `tests/chaos.rs`. Every test starts its own
//! `redis-server` and bounds its waits.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_aiopool_redis::{JobCtx, RedisQueue, Worker};
use support::*;

// ---- the worker process --------------------------------------------------------------

/// A worker process for the tests below; does nothing unless started by one of them.
///
/// `NB_CRASH_MODE`:
/// - `hold`: handlers write "run <job> <attempt> <redelivery>" and then wait (60 s): the
///   test kills the process mid-task;
/// - `suicide`: handlers write the same line, then SIGKILL their own process (a job that
///   kills its worker: a segfault, an OOM kill);
/// - `finish`: handlers write the line and return `Ok` at once; the process connects as a
///   user that may not run scripts, so its acknowledgement never reaches Redis: the test
///   kills it between the handler's end and the acknowledgement.
#[test]
#[ignore = "run as a child process by the review_findings5 tests"]
fn crash_child() {
    let Ok(url) = std::env::var("NB_CRASH_URL") else {
        return;
    };
    let mode = std::env::var("NB_CRASH_MODE").unwrap();
    let out = PathBuf::from(std::env::var("NB_CRASH_OUT").unwrap());
    let concurrency: usize = std::env::var("NB_CRASH_CONCURRENCY")
        .map(|c| c.parse().unwrap())
        .unwrap_or(4);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let file = Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&out)
                .unwrap(),
        ));
        let f2 = file.clone();
        let worker = Worker::builder(&url, QUEUE)
            .concurrency(concurrency)
            .lease(LEASE)
            .max_deliveries(2)
            .block(Duration::from_millis(50))
            .task_with_ctx("job", move |n: u64, ctx: JobCtx| {
                let file = f2.clone();
                let mode = mode.clone();
                async move {
                    // One unbuffered write: a SIGKILL cannot lose a line the kernel has.
                    file.lock()
                        .unwrap()
                        .write_all(
                            format!("run {n} {} {}\n", ctx.attempt(), ctx.is_redelivery())
                                .as_bytes(),
                        )
                        .unwrap();
                    match mode.as_str() {
                        "suicide" => {
                            // SAFETY: kill(2) of our own pid has no memory-safety preconditions.
                            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        "hold" => tokio::time::sleep(Duration::from_secs(60)).await,
                        _ => {}
                    }
                    Ok::<u64, String>(n * 10)
                }
            })
            .build()
            .await
            .unwrap();
        file.lock()
            .unwrap()
            .write_all(format!("consumer {}\n", worker.consumer_name()).as_bytes())
            .unwrap();
        worker.run().await.unwrap();
    });
}

const QUEUE: &str = "crash";
const LEASE: Duration = Duration::from_millis(400);

struct ChildProc {
    child: Child,
    file: PathBuf,
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_child(url: &str, dir: &Path, name: &str, mode: &str, concurrency: usize) -> ChildProc {
    let file = dir.join(format!("{name}.log"));
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NB_CRASH_URL", url)
        .env("NB_CRASH_MODE", mode)
        .env("NB_CRASH_OUT", &file)
        .env("NB_CRASH_CONCURRENCY", concurrency.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    ChildProc { child, file }
}

/// The "run <job> <attempt> <redelivery>" lines of a child's file.
fn runs_of(file: &Path) -> Vec<(u64, u64, bool)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("run ")?.split(' ');
            Some((
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// Waits (bounded) until `child` has exited; returns whether it was killed by SIGKILL.
async fn wait_exit(child: &mut ChildProc, secs: u64) -> bool {
    use std::os::unix::process::ExitStatusExt;
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.child.try_wait().unwrap() {
            return status.signal() == Some(libc::SIGKILL);
        }
        assert!(Instant::now() < deadline, "child did not exit in {secs} s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn sigkill(child: &mut ChildProc) {
    child.child.kill().unwrap();
    child.child.wait().unwrap();
}

/// An in-process worker of [`QUEUE`] with the children's settings, recording its runs.
async fn local_worker(url: &str, runs: Arc<Mutex<Vec<(u64, u64, bool)>>>) -> Worker {
    Worker::builder(url, QUEUE)
        .concurrency(8)
        .lease(LEASE)
        .max_deliveries(2)
        .block(Duration::from_millis(50))
        .task_with_ctx("job", move |n: u64, ctx: JobCtx| {
            let runs = runs.clone();
            async move {
                runs.lock()
                    .unwrap()
                    .push((n, ctx.attempt(), ctx.is_redelivery()));
                Ok::<u64, String>(n * 10)
            }
        })
        .build()
        .await
        .unwrap()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "nb-aiopool-redis-review-crash-{}-{tag}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---- pins: real processes ------------------------------------------------------------

/// Pin. A worker process SIGKILLed while it runs 3 jobs (concurrency 3; 2 more wait in
/// the stream): after the lease, another worker takes over exactly those 3 entries
/// (`reclaimed` 3, each run seen as attempt 2 and a redelivery) and reads the 2 waiting
/// ones as first runs; every job completes once, results stored, nothing left pending,
/// delayed or dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_process_s_running_jobs_are_reclaimed_exactly_once_each() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = temp_dir("reclaim");
    let queue = RedisQueue::connect(&url, QUEUE).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5u64 {
        ids.push(
            queue
                .submit_with_result("job", &n, Duration::from_secs(60))
                .await
                .unwrap(),
        );
    }
    let mut child = spawn_child(&url, &dir, "hold", "hold", 3);
    within(20, "the child holds 3 running jobs", async {
        while runs_of(&child.file).len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let held: Vec<u64> = runs_of(&child.file).iter().map(|r| r.0).collect();
    sigkill(&mut child);

    let runs = Arc::new(Mutex::new(Vec::new()));
    let w = local_worker(&url, runs.clone()).await;
    let run = spawn_run(&w);
    for (n, id) in ids.iter().enumerate() {
        let v: u64 = within(
            10,
            "every job's result",
            queue.wait_result(id, Duration::MAX),
        )
        .await
        .unwrap();
        assert_eq!(v, n as u64 * 10);
    }
    let s = queue.stats().await.unwrap();
    assert_eq!(
        (s.waiting, s.in_flight, s.delayed, s.dead),
        (0, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.completed, 5, "{s:?}");
    assert_eq!(
        w.stats().reclaimed,
        3,
        "exactly the 3 entries the dead worker held"
    );
    let mut runs = runs.lock().unwrap().clone();
    runs.sort();
    let expected: Vec<(u64, u64, bool)> = (0..5u64)
        .map(|n| {
            if held.contains(&n) {
                (n, 2, true)
            } else {
                (n, 1, false)
            }
        })
        .collect();
    assert_eq!(
        runs, expected,
        "one run per job here; the held ones as redeliveries"
    );
    within(10, "shutdown", w.shutdown_timeout(Duration::from_secs(2))).await;
    run.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pin. A job that kills its worker process (SIGKILL from the handler: a segfault, an OOM
/// kill) with `max_deliveries(2)`: the first process runs it (attempt 1) and dies, the
/// next reclaims it after the lease and runs it (attempt 2, a redelivery) and dies, and
/// the third dead-letters it without running it: "delivered 2 times without an
/// acknowledgement", attempts 2; `wait_result` reports the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_kills_its_worker_process_is_dead_lettered_after_max_deliveries() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = temp_dir("suicide");
    let queue = RedisQueue::connect(&url, QUEUE).await.unwrap();
    let id = queue
        .submit_with_result("job", &7u64, Duration::from_secs(60))
        .await
        .unwrap();
    let mut first = spawn_child(&url, &dir, "first", "suicide", 4);
    assert!(
        wait_exit(&mut first, 20).await,
        "the first worker killed itself"
    );
    let mut second = spawn_child(&url, &dir, "second", "suicide", 4);
    assert!(
        wait_exit(&mut second, 20).await,
        "the second worker killed itself"
    );
    assert_eq!(runs_of(&first.file), vec![(7, 1, false)]);
    assert_eq!(runs_of(&second.file), vec![(7, 2, true)]);

    let runs = Arc::new(Mutex::new(Vec::new()));
    let w = local_worker(&url, runs.clone()).await;
    let run = spawn_run(&w);
    let r = within(
        10,
        "the job's outcome",
        queue.wait_result::<u64>(&id, Duration::MAX),
    )
    .await;
    match r {
        Err(nb_aiopool_redis::Error::JobFailed(reason)) => {
            assert!(reason.contains("delivered 2 times"), "{reason}")
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
    assert!(runs.lock().unwrap().is_empty(), "no third run");
    let dead = queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].job.as_str(), dead[0].attempts), (id.as_str(), 2));
    let s = queue.stats().await.unwrap();
    assert_eq!(
        (s.waiting, s.in_flight, s.delayed, s.completed),
        (0, 0, 0, 0),
        "{s:?}"
    );
    within(10, "shutdown", w.shutdown_timeout(Duration::from_secs(2))).await;
    run.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pin. A worker process killed after its handler returned `Ok` but before the
/// acknowledgement reached Redis (simulated exactly: the process's Redis user may not
/// run scripts, so its acknowledgement is refused, and it is killed after the handler
/// ran). The job is not lost and not recorded twice: another worker reclaims it after
/// the lease and runs it once more (attempt 2, a redelivery); its result is that run's,
/// `completed` is 1, nothing is left anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_finishing_and_acknowledging_loses_nothing() {
    let server = RedisServer::start();
    let mut c = server.conn();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "noack", "on", ">pw", "~*", "&*", "+@all", "-evalsha", "-eval",
        ])
        .query(&mut c)
        .unwrap();
    let url = server.url();
    let noack_url = format!("redis://noack:pw@127.0.0.1:{}/", server.port);
    let dir = temp_dir("noack");
    let queue = RedisQueue::connect(&url, QUEUE).await.unwrap();
    let id = queue
        .submit_with_result("job", &3u64, Duration::from_secs(60))
        .await
        .unwrap();
    let mut child = spawn_child(&noack_url, &dir, "noack", "finish", 4);
    within(20, "the child ran the job", async {
        while runs_of(&child.file).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The handler returned; its acknowledgement cannot have been written.
    tokio::time::sleep(Duration::from_millis(50)).await;
    sigkill(&mut child);
    let s = queue.stats().await.unwrap();
    assert_eq!((s.in_flight, s.completed), (1, 0), "{s:?}");

    let runs = Arc::new(Mutex::new(Vec::new()));
    let w = local_worker(&url, runs.clone()).await;
    let run = spawn_run(&w);
    let v: u64 = within(10, "the result", queue.wait_result(&id, Duration::MAX))
        .await
        .unwrap();
    assert_eq!(v, 30);
    assert_eq!(runs_of(&child.file), vec![(3, 1, false)]);
    assert_eq!(*runs.lock().unwrap(), vec![(3, 2, true)]);
    let s = queue.stats().await.unwrap();
    assert_eq!(
        (s.waiting, s.in_flight, s.delayed, s.dead, s.completed),
        (0, 0, 0, 0, 1),
        "{s:?}"
    );
    within(10, "shutdown", w.shutdown_timeout(Duration::from_secs(2))).await;
    run.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pin. Jobs submitted to a queue nobody created (`create(false)`: the first submit makes
/// the stream, no group yet), then 6 workers built at the same moment (6 racing
/// `XGROUP CREATE ... MKSTREAM`): every build succeeds, the group starts at id 0, and
/// every job runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_starting_at_once_on_a_new_queue_run_every_job_once() {
    let server = RedisServer::start();
    let url = server.url();
    let queue = RedisQueue::builder(&url, "race")
        .create(false)
        .connect()
        .await
        .unwrap();
    for n in 0..200u64 {
        queue.submit("t", &n).await.unwrap();
    }
    let counts = Arc::new(Mutex::new(vec![0u32; 200]));
    let builds = (0..6).map(|_| {
        let counts = counts.clone();
        let url = url.clone();
        tokio::spawn(async move {
            Worker::builder(&url, "race")
                .concurrency(4)
                .block(Duration::from_millis(50))
                .task("t", move |n: u64| {
                    let counts = counts.clone();
                    async move {
                        counts.lock().unwrap()[n as usize] += 1;
                        Ok::<(), String>(())
                    }
                })
                .build()
                .await
        })
    });
    let workers: Vec<Worker> = futures_join_all(builds.collect()).await;
    let runs: Vec<_> = workers.iter().map(spawn_run).collect();
    eventually(10, "every job ran", || {
        counts.lock().unwrap().iter().all(|c| *c >= 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        counts.lock().unwrap().iter().all(|c| *c == 1),
        "a job ran twice"
    );
    for (w, r) in workers.iter().zip(runs) {
        within(10, "shutdown", w.shutdown()).await;
        r.await.unwrap();
    }
    let s = queue.stats().await.unwrap();
    assert_eq!((s.waiting, s.in_flight, s.completed), (0, 0, 200), "{s:?}");
}

async fn futures_join_all(
    hs: Vec<tokio::task::JoinHandle<Result<Worker, nb_aiopool_redis::Error>>>,
) -> Vec<Worker> {
    let mut out = Vec::new();
    for h in hs {
        out.push(
            within(10, "a worker build", h)
                .await
                .unwrap()
                .expect("build"),
        );
    }
    out
}

// ---- faults --------------------------------------------------------------------------

/// Counts a handler run as live until its future is dropped (ended or aborted).
struct Live(Arc<AtomicU64>);
impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Fault 1. A worker whose lease renewals lapse for longer than the lease while its
/// reclaim still works (here, deterministically, a Redis user that may not run `XCLAIM`,
/// which only the renewal uses; also a lease-keeper task that ended, or a renewal that
/// lost the race with the reclaim after an outage) reclaims, with its own `XAUTOCLAIM`,
/// the entry of a job it is still running, and starts that job again beside the first
/// run: every lease another run (4 in 1.5 s here, up to the free slots). The second dispatch overwrites the first run's
/// abort handle, so a `shutdown_timeout` cannot abort the earlier runs: it returned
/// after 5 s (the pool's grace), not 200 ms, and the earlier runs went on after `run`
/// had returned, while the job was also put back for another worker.
///
/// Expected: a worker does not start a second run of an entry it runs (a reclaim of its
/// own running entry only renews it), and `shutdown_timeout` leaves no handler running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_does_not_run_again_a_job_it_is_still_running() {
    let server = RedisServer::start();
    let url = norenew_url(&server);
    let queue = RedisQueue::connect(&url, "self").await.unwrap();
    let starts = Arc::new(AtomicU64::new(0));
    let live = Arc::new(AtomicU64::new(0));
    let (s2, l2) = (starts.clone(), live.clone());
    let w = Worker::builder(&url, "self")
        .concurrency(4)
        .lease(Duration::from_millis(300))
        .block(Duration::from_millis(50))
        .task("slow", move |_: u64| {
            let (s, l) = (s2.clone(), l2.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                l.fetch_add(1, Ordering::SeqCst);
                let _live = Live(l);
                tokio::time::sleep(Duration::from_secs(20)).await;
                Ok::<(), String>(())
            }
        })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    queue.submit("slow", &1u64).await.unwrap();
    eventually(5, "the job started", || starts.load(Ordering::SeqCst) >= 1).await;
    // Five leases: each would let the worker's own reclaim take the entry again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = starts.load(Ordering::SeqCst);
    let t = Instant::now();
    let report = within(
        15,
        "shutdown_timeout",
        w.shutdown_timeout(Duration::from_millis(200)),
    )
    .await;
    let took = t.elapsed();
    let still_live = live.load(Ordering::SeqCst);
    run.await.unwrap();
    assert_eq!(
        started, 1,
        "the worker started the job {started} times while its first run was still running \
         (its own reclaim took the entry again)"
    );
    assert_eq!(
        still_live, 0,
        "{still_live} handler run(s) still running after shutdown_timeout(200 ms) returned \
         ({took:?}, {report:?})"
    );
    assert!(
        took < Duration::from_secs(3),
        "shutdown_timeout took {took:?}"
    );
    assert_eq!(report.released, 1, "{report:?}");
}

/// Fault 2. A submit whose payload is larger than the server takes in one argument
/// (`proto-max-bulk-len`, 512 MB by default; 1 MB here) fails, as it should; but Redis
/// answers such a command with a protocol error and closes the connection, which the
/// queue handle shares: a small submit batched with it (or queued behind it), and a
/// concurrent `stats()`, failed too ("broken pipe"), although the server was reachable
/// and nothing was wrong with them.
///
/// Expected: only the oversized submit fails; the others are not affected.
#[tokio::test(flavor = "current_thread")]
async fn an_oversized_payload_does_not_fail_the_submits_around_it() {
    let server = RedisServer::start();
    let mut c = server.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("proto-max-bulk-len")
        .arg("1mb")
        .query(&mut c)
        .unwrap();
    let queue = RedisQueue::connect(&server.url(), "big").await.unwrap();
    let huge = "y".repeat(2_000_000);
    let (big, small, stats) = within(10, "the submits", async {
        tokio::join!(
            queue.submit("t", &huge),
            queue.submit("t", &"small"),
            queue.stats()
        )
    })
    .await;
    assert!(big.is_err(), "the oversized submit must fail");
    let small = small.map_err(|e| e.to_string());
    let stats = stats.map(|_| ()).map_err(|e| e.to_string());
    assert!(
        small.is_ok() && stats.is_ok(),
        "an oversized payload failed its neighbours: small submit {small:?}, stats {stats:?}"
    );
}

/// Blocks the server for `ms` with a busy read-only script (other clients' commands wait;
/// BUSY is only answered after lua-time-limit, 5 s).
fn block_server(url: String, ms: u64) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        tx.send(()).unwrap();
        let _: i64 = redis::cmd("EVAL")
            .arg(
                "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] \
                 while true do local u = redis.call('TIME') \
                 if u[1] * 1000000 + u[2] - s > tonumber(ARGV[1]) * 1000 then break end end \
                 return 1",
            )
            .arg(0)
            .arg(ms)
            .query(&mut c)
            .unwrap();
    });
    rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(100)); // the script is running by now
    h
}

/// Pin (the `submit` docs: "the job may or may not have been added when the reply was
/// lost"). A submit whose reply does not come within the queue's response timeout (the
/// server stalled 800 ms; timeout 200 ms) returns a retryable `Error::Redis` at the
/// timeout, and the job was added anyway once the server went on: a producer that
/// retries such an error must expect a second copy (make the handler idempotent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_that_times_out_returns_an_error_and_may_still_be_added() {
    let server = RedisServer::start();
    let url = server.url();
    let queue = RedisQueue::builder(&url, "late")
        .response_timeout(Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    // Loads the script: a first submit's EVALSHA meets NOSCRIPT, and its reload would
    // come after the timeout.
    queue.submit("t", &0u64).await.unwrap();
    let blocker = block_server(url.clone(), 800);
    let t = Instant::now();
    let r = queue.submit("t", &1u64).await;
    let took = t.elapsed();
    let e = r.expect_err("the reply came after the timeout");
    assert!(e.is_retryable(), "{e}");
    assert!(took < Duration::from_millis(700), "{took:?}");
    blocker.join().unwrap();
    let mut c = server.conn();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: u64 = redis::cmd("XLEN")
            .arg(stream_key("late"))
            .query(&mut c)
            .unwrap();
        if n == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the timed-out job was never added"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pin (README: "Without persistence a restart empties Redis: the jobs in it are gone ...
/// Workers survive it anyway"). A `redis-server` without persistence killed and started
/// again while a worker runs a job with a result and a producer submits: the worker
/// reports the outage through `on_error`, the running job's result is gone with the
/// server (its acknowledgement records nothing on the empty server, and reports no
/// error), the producer's submits fail with retryable errors while the server is down
/// (none is silently accepted), and a job submitted after the restart runs and its
/// result is readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_persistence_is_survived_and_surfaced() {
    let mut server = RedisServer::start();
    let url = server.url();
    let queue = RedisQueue::connect(&url, "amnesia").await.unwrap();
    let errors = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let (e2, s2) = (errors.clone(), started.clone());
    let w = Worker::builder(&url, "amnesia")
        .lease(Duration::from_millis(300))
        .block(Duration::from_millis(50))
        .on_error(move |_| {
            e2.fetch_add(1, Ordering::SeqCst);
        })
        .task("t", move |ms: u64| {
            let s = s2.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<u64, String>(ms)
            }
        })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    let lost = queue
        .submit_with_result("t", &600u64, Duration::from_secs(60))
        .await
        .unwrap();
    eventually(5, "the first job started", || {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    server.kill();
    let down = queue.submit("t", &1u64).await;
    assert!(
        down.as_ref().is_err_and(|e| e.is_retryable()),
        "a submit while the server is down: {down:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    let id = within(10, "a submit after the restart", async {
        loop {
            match queue
                .submit_with_result("t", &5u64, Duration::from_secs(60))
                .await
            {
                Ok(id) => break id,
                Err(e) => {
                    assert!(e.is_retryable(), "{e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    })
    .await;
    let v: u64 = within(
        10,
        "the new job's result",
        queue.wait_result(&id, Duration::MAX),
    )
    .await
    .unwrap();
    assert_eq!(v, 5);
    // The first job finished after the restart; nothing of it is left to record.
    eventually(5, "the first job ended", || w.stats().succeeded >= 2).await;
    let r = queue
        .wait_result::<u64>(&lost, Duration::from_millis(300))
        .await;
    assert!(
        matches!(r, Err(nb_aiopool_redis::Error::ResultTimeout)),
        "{r:?}"
    );
    assert!(errors.load(Ordering::SeqCst) > 0, "the outage was reported");
    let s = queue.stats().await.unwrap();
    assert_eq!(
        (s.waiting, s.in_flight, s.delayed, s.dead),
        (0, 0, 0, 0),
        "{s:?}"
    );
    within(10, "shutdown", w.shutdown_timeout(Duration::from_secs(2))).await;
    run.await.unwrap();
}

/// A URL of `server` for a user that may not run `XCLAIM`, which only the lease
/// renewal uses: its renewals fail while everything else works.
fn norenew_url(server: &RedisServer) -> String {
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "norenew", "on", ">pw", "~*", "&*", "+@all", "-xclaim",
        ])
        .query(&mut server.conn())
        .unwrap();
    format!("redis://norenew:pw@127.0.0.1:{}/", server.port)
}

/// Finding 63. An `on_error` hook that panics must not stop the worker's own tasks that
/// call it: here the lease renewals fail (a user that may not run `XCLAIM`) and the hook
/// panics at each error. Before, the first panic ended the lease keeper (no renewal, no
/// error, ever again; in the acker it would have stopped every acknowledgement, and a
/// graceful shutdown would then wait for ever); now each renewal's error is reported,
/// and a job submitted after the panics still runs and is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_on_error_hook_does_not_stop_the_worker() {
    let server = RedisServer::start();
    let url = norenew_url(&server);
    let queue = RedisQueue::connect(&url, "hook").await.unwrap();
    let hooked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let (h2, d2) = (hooked.clone(), done.clone());
    let w = Worker::builder(&url, "hook")
        .concurrency(2)
        .lease(Duration::from_millis(300))
        .block(Duration::from_millis(50))
        .on_error(move |_| {
            h2.fetch_add(1, Ordering::SeqCst);
            panic!("an on_error hook that panics");
        })
        .task("t", move |n: u64| {
            let d = d2.clone();
            async move {
                if n == 0 {
                    // Held long enough for several renewals to fail.
                    tokio::time::sleep(Duration::from_millis(800)).await;
                }
                d.fetch_add(1, Ordering::SeqCst);
                Ok::<(), String>(())
            }
        })
        .build()
        .await
        .unwrap();
    let run = spawn_run(&w);
    queue.submit("t", &0u64).await.unwrap();
    eventually(
        10,
        "renewal errors reported after the hook panicked",
        || hooked.load(Ordering::SeqCst) >= 3,
    )
    .await;
    queue.submit("t", &1u64).await.unwrap();
    eventually(10, "both jobs run", || done.load(Ordering::SeqCst) == 2).await;
    within(10, "a graceful shutdown", w.shutdown()).await;
    run.await.unwrap();
    let s = queue.stats().await.unwrap();
    assert_eq!((s.waiting, s.in_flight), (0, 0), "{s:?}");
}
