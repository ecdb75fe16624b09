//! Regression tests of a review of findings 184-188's fixes (2026-12-05, on aefe117),
//! RELIABILITY.md findings 189-191: `shutdown_timeout` inside a job of its own pool no
//! longer abandons its caller at the deadline (189); the exit take-over resets an empty
//! pool as any other, so a rate timer left on the runtime `exit` froze holds nothing back
//! (190); no job starts before every pool is taken over, not even a plain thread's (191).
//! And from a review of those fixes: 189's spare made a `shutdown_timeout` polled outside
//! its calling job wait for that job (199), and could undo an earlier `cancel_all` (200);
//! and from a review of those: a spared caller's re-run started cancelled (202).
//! With the review's checks that held (`wait`'s exclusion in odd places, the new
//! signatures). Exit scenarios run as child processes, as in `tests/exit_paths.rs`.

#![allow(clippy::async_yields_async)]

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nb_aiopool::{CancelReason, NoQueueAioPool, SmartAioPool, SubmitErrorKind};
use support::{append, child_scenario, lines, run_child, within};

// ----- 189: shutdown_timeout inside a job of its own pool --------------------------------

/// Finding 189: a job calls `shutdown_timeout` on its own pool while another job outlives
/// the deadline. Since 184 the wait leaves the caller out, but the abandon step at the
/// deadline (`cancel_all(Abandoned)`) still covered the caller: the job that asked for the
/// report was abandoned itself, and never saw it.
#[tokio::test(start_paused = true)]
async fn shutdown_timeout_inside_a_job_does_not_abandon_its_caller_common() {
    let pool = support::common_local(2, 10);
    let other = pool
        .submit(tokio::time::sleep(Duration::from_secs(60)))
        .await
        .unwrap();
    let inner = pool.clone();
    let caller = pool
        .submit(async move {
            let r = inner.shutdown_timeout(Duration::from_secs(1)).await;
            (r.finished(), r.abandoned())
        })
        .await
        .unwrap();
    let got = within("caller", caller).await;
    let other = within("other", other).await;
    assert_eq!(
        other.unwrap_err().cancel_reason(),
        Some(CancelReason::Abandoned),
        "the job that outlived the deadline is abandoned"
    );
    match got {
        Ok((finished, abandoned)) => assert_eq!((finished, abandoned), (0, 1)),
        Err(e) => panic!("the job that called shutdown_timeout was itself cancelled: {e}"),
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_timeout_inside_a_job_does_not_abandon_its_caller_no_queue_and_smart() {
    let nq = NoQueueAioPool::builder()
        .max_concurrency(2)
        .process_wide(false)
        .build();
    let _other = nq
        .submit(tokio::time::sleep(Duration::from_secs(60)))
        .await
        .unwrap();
    let inner = nq.clone();
    let caller = nq
        .submit(async move {
            inner
                .shutdown_timeout(Duration::from_secs(1))
                .await
                .abandoned()
        })
        .await
        .unwrap();
    match within("nq caller", caller).await {
        Ok(abandoned) => assert_eq!(abandoned, 1),
        Err(e) => panic!("NoQueueAioPool: the caller of shutdown_timeout was cancelled: {e}"),
    }

    let smart = support::smart_local(2);
    let _other = smart
        .submit(|| tokio::time::sleep(Duration::from_secs(60)))
        .await
        .unwrap();
    let inner = smart.clone();
    let caller = smart
        .submit(move || {
            let inner = inner.clone();
            async move {
                inner
                    .shutdown_timeout(Duration::from_secs(1))
                    .await
                    .abandoned()
            }
        })
        .await
        .unwrap();
    match within("smart caller", caller).await {
        Ok(abandoned) => assert_eq!(abandoned, 1),
        Err(e) => panic!("SmartAioPool: the caller of shutdown_timeout was cancelled: {e}"),
    }
}

/// Finding 189: after a spared `shutdown_timeout` abandon, a later `cancel_all` still
/// reaches the job that was spared (the fix must not leave it immune for good).
#[tokio::test(start_paused = true)]
async fn a_spared_caller_is_still_reached_by_a_later_cancel_all() {
    let smart = support::smart_local(2);
    let _other = smart
        .submit(|| tokio::time::sleep(Duration::from_secs(60)))
        .await
        .unwrap();
    let inner = smart.clone();
    let caller = smart
        .submit(move || {
            let inner = inner.clone();
            async move {
                let _ = inner.shutdown_timeout(Duration::from_secs(1)).await;
                std::future::pending::<()>().await;
            }
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!caller.is_finished());
    smart.cancel_all().await;
    let r = within("caller", caller).await;
    assert_eq!(
        r.unwrap_err().cancel_reason(),
        Some(CancelReason::CancelAll)
    );
}

/// Finding 199: a job calls `shutdown_timeout` on its own pool and has the future polled by
/// a task of its own (`tokio::spawn`, awaited by the job): at the deadline the job is
/// spared, but the second wait (made inside the spawned task, not inside the job) waits for
/// it, and the job waits for that task: neither ever ends. Before 189 the job was abandoned
/// and the report returned.
#[tokio::test(start_paused = true)]
async fn shutdown_timeout_called_in_a_job_and_spawned_returns_at_the_deadline() {
    let mut hung = Vec::new();
    for (pool, name) in [
        (support::Pool::Smart(support::smart_local(2)), "smart"),
        (
            support::Pool::Common(support::common_local(2, 10)),
            "common",
        ),
    ] {
        let caller = match &pool {
            support::Pool::Common(p) => {
                let _other = p
                    .submit(tokio::time::sleep(Duration::from_secs(600)))
                    .await
                    .unwrap();
                let inner = p.clone();
                p.submit(async move {
                    let f = inner.shutdown_timeout(Duration::from_secs(1));
                    tokio::spawn(f).await.unwrap().abandoned()
                })
                .await
                .unwrap()
            }
            support::Pool::Smart(p) => {
                let _other = p
                    .submit(|| tokio::time::sleep(Duration::from_secs(600)))
                    .await
                    .unwrap();
                let inner = p.clone();
                p.submit(move || {
                    let inner = inner.clone();
                    async move {
                        // Its future borrows the pool: a leaked handle makes it `'static`.
                        let leaked: &'static nb_aiopool::SmartAioPool =
                            Box::leak(Box::new(inner.clone()));
                        let f = leaked.shutdown_timeout(Duration::from_secs(1));
                        tokio::spawn(f).await.unwrap().abandoned()
                    }
                })
                .await
                .unwrap()
            }
            support::Pool::NoQueue(_) => unreachable!(),
        };
        match tokio::time::timeout(Duration::from_secs(60), caller).await {
            Ok(Ok(abandoned)) => assert_eq!(abandoned, 1, "{name}"),
            Ok(Err(e)) => assert_eq!(e.cancel_reason(), Some(CancelReason::Abandoned), "{name}"),
            Err(_) => hung.push(name),
        }
    }
    assert!(
        hung.is_empty(),
        "{hung:?}: shutdown_timeout(1 s) made in a job and polled by a spawned task never \
         returned (60 s): the spared job and the wait deadlock"
    );
}

/// Finding 200: `cancel_all()` covers every running job, the one that later calls
/// `shutdown_timeout` too. If that job's `shutdown_timeout` reaches its deadline before the
/// job's slot applied the `cancel_all` mark (its poll was under way on another worker, or
/// the future is polled elsewhere), `cancel_all_sparing` overwrites the spared job and the
/// job that `cancel_all` covered is left running: `cancel_all().await` waits for it for
/// ever. Deterministic version: the future is polled outside the job.
#[tokio::test(start_paused = true)]
async fn a_later_sparing_deadline_does_not_undo_an_earlier_cancel_all() {
    let pool = support::common_local(2, 10);
    let _other = pool
        .submit(tokio::time::sleep(Duration::from_secs(600)))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let inner = pool.clone();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let x = pool
        .submit(async move {
            s.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(inner.shutdown_timeout(Duration::from_secs(1)));
            std::future::pending::<()>().await;
        })
        .await
        .unwrap();
    let f = rx.await.unwrap();
    let mut f = Box::pin(f);
    // First poll: its deadline starts.
    assert!(futures_poll_once(f.as_mut()).await.is_none());
    tokio::time::sleep(Duration::from_secs(2)).await;
    // cancel_all covers X; X's slot has not polled since.
    let cancelled = pool.cancel_all();
    // The deadline of X's shutdown_timeout is seen now: it spares X.
    let report = tokio::time::timeout(Duration::from_secs(60), f).await;
    let _ = report;
    match tokio::time::timeout(Duration::from_secs(60), cancelled).await {
        Ok(()) => {}
        Err(_) => panic!("cancel_all() never returned: the job it covered was spared later"),
    }
    let r = tokio::time::timeout(Duration::from_secs(1), x).await;
    assert!(
        matches!(&r, Ok(Err(e)) if e.is_cancelled()),
        "the job is cancelled: {r:?}"
    );
}

async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
    let mut f = f;
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// Finding 200: the same, with the job awaiting its own `shutdown_timeout` as 189's tests
/// do: the outside `cancel_all()` comes while the job's poll is under way on another worker
/// (held there, deterministically, until the cancel_all), and the deadline is seen later in
/// that same poll. The other job, also inside a poll (held until well past the deadline),
/// cannot end at once. The job `cancel_all` covered is spared, and `cancel_all().await`
/// never returns.
#[test]
fn a_cancel_all_during_the_callers_poll_is_not_undone_by_its_deadline() {
    let rt = support::multi_thread_of(4);
    let done = Arc::new(AtomicUsize::new(0));
    // Keeps a free worker busy, so that it drives the timers while two others are held.
    let d = done.clone();
    rt.spawn(async move {
        while d.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    });
    let _stop = StoreOnDrop(done);
    rt.block_on(async {
        let pool = support::common_local(2, 10);
        let release = Arc::new(AtomicUsize::new(0));
        let (r, other_in) = (release.clone(), Arc::new(AtomicUsize::new(0)));
        let oi = other_in.clone();
        let _other = pool
            .submit(async move {
                oi.store(1, Ordering::SeqCst);
                while r.load(Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                tokio::time::sleep(Duration::from_secs(600)).await;
            })
            .await
            .unwrap();
        while other_in.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let in_poll = Arc::new(AtomicUsize::new(0));
        let cancelled = Arc::new(AtomicUsize::new(0));
        let inner = pool.clone();
        let (ip, cc) = (in_poll.clone(), cancelled.clone());
        let x = pool
            .submit(async move {
                let mut f = Box::pin(inner.shutdown_timeout(Duration::from_millis(50)));
                let mut held = true;
                // One poll of the job: held (on this worker) until the outside cancel_all,
                // then it polls the shutdown until its deadline is seen (the other worker
                // drives the timer), all in that same poll.
                let _report = std::future::poll_fn(|cx| {
                    if std::mem::take(&mut held) {
                        ip.store(1, Ordering::SeqCst);
                        while cc.load(Ordering::SeqCst) == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        let end = std::time::Instant::now() + Duration::from_secs(1);
                        while std::time::Instant::now() < end {
                            if let std::task::Poll::Ready(r) = f.as_mut().poll(cx) {
                                return std::task::Poll::Ready(r);
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        return std::task::Poll::Pending;
                    }
                    f.as_mut().poll(cx)
                })
                .await;
                std::future::pending::<()>().await;
            })
            .await
            .unwrap();
        while in_poll.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let wait = pool.cancel_all();
        cancelled.store(1, Ordering::SeqCst);
        // The other job ends (cancelled) only well after the 50 ms deadline.
        std::thread::sleep(Duration::from_millis(300));
        release.store(1, Ordering::SeqCst);
        match tokio::time::timeout(Duration::from_secs(5), wait).await {
            Ok(()) => {}
            Err(_) => panic!(
                "cancel_all() did not return in 5 s: the job it covered was spared by its own \
                 shutdown_timeout's deadline, seen later in the poll under way"
            ),
        }
        let r = tokio::time::timeout(Duration::from_secs(1), x).await;
        assert!(
            matches!(&r, Ok(Err(e)) if e.is_cancelled()),
            "the job is cancelled: {r:?}"
        );
    });
}

struct StoreOnDrop(Arc<AtomicUsize>);

impl Drop for StoreOnDrop {
    fn drop(&mut self) {
        self.0.store(1, Ordering::SeqCst);
    }
}

// ----- a review of 198-200's fixes (finding 202) --------------------------------------

/// Finding 202: a SmartAioPool job X calls `shutdown_timeout` on its own pool: at the deadline the other
/// job is abandoned and X is spared ("that job is neither waited for nor abandoned"). X's
/// runtime then ends while X still runs: the pool re-runs interrupted tasks, and X's re-run
/// is started on a new runtime. Its id is below the deadline's mark, so the start cancels
/// it as `Abandoned`, although that mark spared X.
#[test]
fn a_spared_caller_rerun_after_its_runtime_ended_is_not_abandoned() {
    spared_rerun(false);
}

/// The same; the re-run, spared, goes on: a later `cancel_all` still reaches it.
#[test]
fn a_spared_caller_rerun_is_still_reached_by_a_later_cancel_all() {
    spared_rerun(true);
}

fn spared_rerun(rerun_pends: bool) {
    let runs = Arc::new(AtomicUsize::new(0));
    let reported = Arc::new(AtomicUsize::new(0));
    let a = support::current_thread();
    let pool = SmartAioPool::builder()
        .max_concurrency(2)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let leaked: &'static SmartAioPool = Box::leak(Box::new(pool.clone()));
    let x = a.block_on(async {
        let other = pool
            .submit(|| tokio::time::sleep(Duration::from_secs(600)))
            .await
            .unwrap();
        let (r, rep) = (runs.clone(), reported.clone());
        let x = pool
            .submit(move || {
                let (r, rep) = (r.clone(), rep.clone());
                async move {
                    if r.fetch_add(1, Ordering::SeqCst) == 0 {
                        let report = leaked.shutdown_timeout(Duration::from_millis(100)).await;
                        rep.store(1 + report.abandoned() as usize, Ordering::SeqCst);
                        // Still running when its runtime ends.
                        std::future::pending::<()>().await;
                    }
                    if rerun_pends {
                        std::future::pending::<()>().await;
                    }
                    7u32
                }
            })
            .await
            .unwrap();
        support::reach(&reported, 1, Duration::from_secs(10)).await;
        let o = tokio::time::timeout(Duration::from_secs(5), other).await;
        assert!(
            matches!(&o, Ok(Err(e)) if e.cancel_reason() == Some(CancelReason::Abandoned)),
            "the other job is abandoned: {o:?}"
        );
        x
    });
    assert_eq!(
        reported.load(Ordering::SeqCst),
        2,
        "X got its report: 1 abandoned"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    drop(a); // X's run is cut off: queued again (re-runs on)
    let b = support::current_thread();
    let got = b.block_on(async {
        if rerun_pends {
            let mut x = x;
            // Offers this runtime to the pool: the re-run starts.
            let _ = tokio::time::timeout(Duration::from_millis(200), &mut x).await;
            assert_eq!(runs.load(Ordering::SeqCst), 2, "the re-run started");
            tokio::time::timeout(Duration::from_secs(10), pool.cancel_all())
                .await
                .expect("cancel_all hung: the spared re-run was not reached");
            tokio::time::timeout(Duration::from_secs(10), x).await
        } else {
            tokio::time::timeout(Duration::from_secs(10), x).await
        }
    });
    let got = got.expect("X's handle hung");
    if rerun_pends {
        assert_eq!(
            got.map_err(|e| e.cancel_reason()),
            Err(Some(CancelReason::CancelAll))
        );
        return;
    }
    assert_eq!(
        got.as_ref().map_err(|e| e.cancel_reason()),
        Ok(&7),
        "the spared caller's re-run runs (runs: {}), not cancelled as abandoned",
        runs.load(Ordering::SeqCst)
    );
}

/// A pool of 3 slots (a queue of 10) with one job that sleeps 600 s, to be abandoned.
async fn pool_with_a_sleeper() -> nb_aiopool::CommonAioPool {
    let pool = support::common_local(3, 10);
    pool.submit(tokio::time::sleep(Duration::from_secs(600)))
        .await
        .unwrap()
        .detach();
    pool
}

/// Two jobs X and Y call `shutdown_timeout` on their own pool (deadlines 1 s and 2 s),
/// each awaiting it in its poll, or in a task it spawns (`spawned`); a third job sleeps
/// 600 s. What X and Y give (the number their report abandoned, or why they were
/// cancelled), within 60 s each; then the pool's wait, within 60 s.
async fn two_callers(spawned: bool) -> (R, R) {
    let pool = pool_with_a_sleeper().await;
    let mk = |d: u64| {
        let inner = pool.clone();
        async move {
            let f = inner.shutdown_timeout(Duration::from_secs(d));
            let r = if spawned {
                tokio::spawn(f).await.unwrap()
            } else {
                f.await
            };
            tokio::time::sleep(Duration::from_secs(5)).await;
            r.abandoned()
        }
    };
    let x = pool.submit(mk(1)).await.unwrap();
    let y = pool.submit(mk(2)).await.unwrap();
    let x = tokio::time::timeout(Duration::from_secs(60), x)
        .await
        .expect("x hung");
    let y = tokio::time::timeout(Duration::from_secs(60), y)
        .await
        .expect("y hung");
    tokio::time::timeout(Duration::from_secs(60), pool.wait())
        .await
        .expect("wait hung");
    let r = |v: Result<u64, nb_aiopool::TaskError>| v.map_err(|e| e.cancel_reason());
    (r(x), r(y))
}

type R = Result<u64, Option<CancelReason>>;

/// Awaited in their polls: at 1 s X spares itself and abandons the rest, Y among them; X
/// gets its report.
#[tokio::test(start_paused = true)]
async fn two_callers_the_first_deadline_wins() {
    let (x, y) = two_callers(false).await;
    assert_eq!(x, Ok(2));
    assert_eq!(y, Err(Some(CancelReason::Abandoned)));
}

/// Spawned (polled outside their jobs): Y's future outlives Y, and its deadline at 2 s
/// abandons X, still running after its report came at 1 s. Nothing hangs.
#[tokio::test(start_paused = true)]
async fn two_spawned_callers_no_hang() {
    let (x, y) = two_callers(true).await;
    assert_eq!(y, Err(Some(CancelReason::Abandoned)));
    assert_eq!(x, Err(Some(CancelReason::Abandoned)));
}

/// An outside `shutdown_timeout` (3 s) and one inside job X (1 s): X gets its report at
/// 1 s and goes on; the outside one abandons X at 3 s, and returns.
#[tokio::test(start_paused = true)]
async fn outside_and_inside_callers() {
    let pool = pool_with_a_sleeper().await;
    let inner = pool.clone();
    let x = pool
        .submit(async move {
            let r = inner.shutdown_timeout(Duration::from_secs(1)).await;
            tokio::time::sleep(Duration::from_secs(600)).await;
            r.abandoned()
        })
        .await
        .unwrap();
    let out = pool.shutdown_timeout(Duration::from_secs(3));
    let rep = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("outside hung");
    let x = tokio::time::timeout(Duration::from_secs(60), x)
        .await
        .expect("x hung");
    assert_eq!(
        x.map_err(|e| e.cancel_reason()),
        Err(Some(CancelReason::Abandoned))
    );
    assert_eq!(rep.abandoned(), 2, "{rep:?}");
}

/// Job X's future spawned; X spared at the deadline, its report back; then an outside
/// `cancel_all` reaches X (the spare is not a lasting immunity).
#[tokio::test(start_paused = true)]
async fn spawned_spared_caller_then_cancel_all() {
    let pool = pool_with_a_sleeper().await;
    let inner = pool.clone();
    let x = pool
        .submit(async move {
            let r = tokio::spawn(inner.shutdown_timeout(Duration::from_secs(1)))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(600)).await;
            r.abandoned()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!x.is_finished());
    tokio::time::timeout(Duration::from_secs(60), pool.cancel_all())
        .await
        .expect("cancel_all hung");
    let x = tokio::time::timeout(Duration::from_secs(1), x)
        .await
        .expect("x hung");
    assert_eq!(
        x.map_err(|e| e.cancel_reason()),
        Err(Some(CancelReason::CancelAll))
    );
}

// ----- 184: the counting of `except` --------------------------------------------------------

/// A wait made inside a job, sent out and awaited after the job ended; a second wait made
/// in the same job; a job of another pool waiting on this one (not left out). Counts must
/// neither underflow nor stay above zero.
#[tokio::test(start_paused = true)]
async fn except_counts_in_odd_places() {
    let a = support::common_local(2, 10);
    let b = support::common_local(2, 10);
    let slow = b
        .submit(tokio::time::sleep(Duration::from_secs(2)))
        .await
        .unwrap();
    // A job of A waits on B: B's job is waited for.
    let bb = b.clone();
    let t0 = tokio::time::Instant::now();
    let h = a
        .submit(async move {
            bb.wait().await;
            t0.elapsed()
        })
        .await
        .unwrap();
    let took = within("a job", h).await.unwrap();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(slow.is_finished());

    // Waits made in a job, handed out, awaited after the job ended.
    let aa = a.clone();
    let h = a
        .submit(async move { (aa.wait(), aa.wait()) })
        .await
        .unwrap();
    let (w1, w2) = within("maker", h).await.unwrap();
    within("w1", w1).await;
    within("w2", w2).await;
    // And a fresh wait after all that returns at once.
    within("fresh", a.wait()).await;
    let s = a.stats();
    assert_eq!(s.completed, s.submitted, "{s:?}");
}

/// The new signatures: the futures of the Common and NoQueue pools are `'static` and
/// `Send` (spawnable, boxable, usable in `select!`).
#[tokio::test(start_paused = true)]
async fn shutdown_futures_are_spawnable_and_boxable() {
    fn is_static_send<F: Future + Send + 'static>(_: &F) {}
    let pool = support::common_local(1, 1);
    let f = pool.shutdown();
    is_static_send(&f);
    let j = tokio::spawn(f);
    within("spawned shutdown", j).await.unwrap();
    let pool = support::common_local(1, 1);
    let b: std::pin::Pin<Box<dyn Future<Output = nb_aiopool::ShutdownReport> + Send>> =
        Box::pin(pool.shutdown_timeout(Duration::from_secs(1)));
    let _ = within("boxed", b).await;
    let j = tokio::spawn(nb_aiopool::shutdown_all_common_aiopools());
    within("all", j).await.unwrap();
}

// ----- exit scenarios (child processes) -----------------------------------------------------

static PS: OnceLock<Vec<SmartAioPool>> = OnceLock::new();
static QS: OnceLock<Vec<SmartAioPool>> = OnceLock::new();
const N: usize = 6;

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = child_scenario();
    match scenario.as_str() {
        "rate-timer-on-frozen-runtime" => rate_timer_on_frozen_runtime(&dir),
        "plain-thread-into-taken-over-pool" => plain_thread_into_taken_over_pool(&dir),
        "shutdown-inside-then-smart-run" => shutdown_inside_then_smart_run(&dir, false),
        "shutdown-all-inside-then-smart-run" => shutdown_inside_then_smart_run(&dir, true),
        other => panic!("unknown scenario {other}"),
    }
}

/// A task of an `auto_shutdown` SmartAioPool shuts its own pool down (`shutdown()`, or
/// `shutdown_all_smart_aiopools()` if `all`), then goes on for 300 ms; `smart_run` (whose
/// body returns at once) must wait for it. Logs whether the task had ended when
/// `smart_run` returned, and the pool's pending count then.
fn shutdown_inside_then_smart_run(dir: &std::path::Path, all: bool) {
    let done = Arc::new(AtomicUsize::new(0));
    let pool = SmartAioPool::builder().name("self-shut").build();
    let (d, p) = (Arc::clone(&done), pool.clone());
    nb_aiopool::smart_run(async move {
        p.clone()
            .submit(move || {
                let (p, d) = (p.clone(), Arc::clone(&d));
                async move {
                    if all {
                        nb_aiopool::shutdown_all_smart_aiopools().await;
                    } else {
                        p.shutdown().await;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    d.fetch_add(1, Ordering::SeqCst);
                }
            })
            .await
            .unwrap()
            .detach();
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    append(
        &dir.join("log"),
        &format!(
            "done={} pending={}",
            done.load(Ordering::SeqCst),
            pool.pending_count()
        ),
    );
}

/// Pool R (rate_limit 1 per 2 s) is empty at exit, but its rate timer is armed on the
/// runtime `exit` froze (a held job was aborted, so nothing is queued). Pool A's task,
/// run by the exit hook, submits into R inside the window: the job is held back, and no
/// timer is armed for it (the pool thinks one is), so it never starts and the exit hangs.
fn rate_timer_on_frozen_runtime(dir: &std::path::Path) {
    let rt = support::current_thread();
    rt.block_on(async {
        let r = SmartAioPool::builder()
            .name("R")
            .max_concurrency(2)
            .rate_limit(1, Duration::from_secs(2))
            .build();
        let a = SmartAioPool::builder().name("A").max_concurrency(2).build();
        r.run(|| async {}).await.unwrap();
        let held = r.submit(|| async {}).await.unwrap();
        tokio::task::yield_now().await;
        held.abort();
        let _ = held.await;
        assert_eq!(r.stats().unfinished(), 0);
        let d = dir.to_path_buf();
        let r2 = r.clone();
        a.submit(move || {
            let d = d.clone();
            let r2 = r2.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let d2 = d.clone();
                let h = r2
                    .submit(move || {
                        let d2 = d2.clone();
                        async move { append(&d2.join("r"), "ran") }
                    })
                    .await
                    .unwrap();
                let _ = h.await;
                append(&d.join("a"), "done");
            }
        })
        .await
        .unwrap()
        .detach();
        std::process::exit(0);
    });
}

/// Old runtime: multi-thread, `exit` called from `block_on`, with pool B's run busy in one
/// long poll (its take-over waits for it). Pools P (made before B: most likely listed
/// before it) are empty at exit; a plain thread submits into them while B's take-over
/// waits. Their jobs, started at once on the exit runtime, submit into pools Q (made
/// after B, not taken over yet; `rerun_interrupted(false)`): Q's take-over then cuts those
/// tasks as interrupted by the exit (finding 188 again, by another door).
fn plain_thread_into_taken_over_pool(dir: &std::path::Path) {
    let rt = support::multi_thread_of(2);
    PS.set(support::named_smart_pools("P", N, true)).unwrap();
    let b = SmartAioPool::builder().name("B").build();
    QS.set(support::named_smart_pools("Q", N, false)).unwrap();
    rt.block_on(async {
        let d = dir.to_path_buf();
        b.submit(move || {
            let d = d.clone();
            async move {
                append(&d.join("b"), "start");
                std::thread::sleep(Duration::from_millis(2000));
            }
        })
        .await
        .unwrap()
        .detach();
        support::appended(dir.join("b")).await;
        let d = dir.to_path_buf();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            for p in PS.get().unwrap() {
                let dj = d.clone();
                let job = move || {
                    let d = dj.clone();
                    async move {
                        let mut hs = Vec::new();
                        for q in QS.get().unwrap() {
                            let d2 = d.clone();
                            hs.push(
                                q.submit(move || {
                                    let d2 = d2.clone();
                                    async move {
                                        append(&d2.join("nested"), "start");
                                        tokio::time::sleep(Duration::from_millis(2500)).await;
                                    }
                                })
                                .await
                                .unwrap(),
                            );
                        }
                        for h in hs {
                            match h.await {
                                Ok(()) => append(&d.join("outer"), "ok"),
                                Err(e) => append(&d.join("outer"), &format!("err {e}")),
                            }
                        }
                    }
                };
                // `NoRuntime` until the exit takes the pool over (it was never used): on a
                // loaded machine that may come after 400 ms, so ask again for a while.
                let mut tries = 0;
                let h = loop {
                    match p.blocking_submit(job.clone()) {
                        Err(e) if e.kind() == SubmitErrorKind::NoRuntime && tries < 500 => {
                            tries += 1;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        other => break other,
                    }
                };
                match h {
                    Ok(h) => h.detach(),
                    Err(e) => append(&d.join("refused"), &e.to_string()),
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::process::exit(0);
    });
}

fn count(v: &[String], prefix: &str) -> usize {
    v.iter().filter(|l| l.starts_with(prefix)).count()
}

/// Finding 190: 187's take-over of empty pools did not reset their rate timer, which may
/// be armed on the runtime `exit` froze: a job submitted into such a pool at exit never
/// started.
#[test]
fn exit_runs_a_job_submitted_into_an_empty_rate_limited_pool() {
    let c = run_child("rate-timer-on-frozen-runtime", 20);
    let r = lines(&c.dir.join("r"));
    let a = lines(&c.dir.join("a"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(
        c.code,
        Some(0),
        "hung (killed after 20 s) or failed; r: {r:?} a: {a:?} stderr: {}",
        c.stderr
    );
    assert_eq!((r.len(), a.len()), (1, 1), "r: {r:?} a: {a:?}");
}

/// Finding 191: a plain thread's submit into a pool already taken over started its job at
/// once, before every pool was taken over: what that job submitted into a pool taken over
/// later was cut.
#[test]
fn plain_thread_submits_during_the_take_over_do_not_start_early() {
    let c = run_child("plain-thread-into-taken-over-pool", 60);
    let outer = lines(&c.dir.join("outer"));
    let nested = lines(&c.dir.join("nested"));
    let refused = lines(&c.dir.join("refused"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(
        (outer.len(), count(&outer, "err")),
        (N * N, 0),
        "outer errors: {:?}\nnested: {}\nstderr: {}",
        outer
            .iter()
            .filter(|l| l.starts_with("err"))
            .collect::<Vec<_>>(),
        nested.len(),
        c.stderr
    );
    assert!(
        !c.stderr.contains("interrupted by the process exit"),
        "stderr: {}",
        c.stderr
    );
}

#[allow(dead_code)]
fn unused(_: Arc<AtomicUsize>) {
    let _ = Ordering::SeqCst;
}

/// Finding 206: a SmartAioPool task that shut its own pool down (184 leaves it out of the
/// wait) had the pool taken off the process-wide list while it still ran, so `smart_run`
/// (and the exit hook) no longer covered it: `smart_run` returned with the task unfinished,
/// and at the process's end it was lost. The pool now stays listed while a task of it is
/// unfinished.
#[test]
fn a_task_that_shuts_its_own_pool_down_is_still_waited_for_by_smart_run() {
    for scenario in [
        "shutdown-inside-then-smart-run",
        "shutdown-all-inside-then-smart-run",
    ] {
        let c = run_child(scenario, 20);
        let log = lines(&c.dir.join("log"));
        let _ = std::fs::remove_dir_all(&c.dir);
        assert_eq!(c.code, Some(0), "{scenario}: stderr: {}", c.stderr);
        assert_eq!(
            log,
            ["done=1 pending=0"],
            "{scenario}: stderr: {}",
            c.stderr
        );
    }
}
