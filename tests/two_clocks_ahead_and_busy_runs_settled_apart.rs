//! A read-only review of 260c017 and de57202 (RELIABILITY.md, 368, 370, 371, 373): the exit
//! settling busy runs one by one, elastic idle runs keeping the time they were stamped
//! at, and the rate timer armed for the held job's current-thread runtime.
//!
//! Every wait is bounded (`recv_timeout`, `timeout`, `support::until`).

mod support;

use std::sync::mpsc;
use std::time::Duration;

use nb_aiopool::SmartAioPool;
use support::{paused_runtime, Gate};
use tokio::time::Instant;

const SECS10: Duration = Duration::from_secs(10);

/// What the user does: a `static`-like SmartAioPool (elastic, `min_workers(1)`, 4 slots,
/// `idle_timeout(60 s)`) is shared by two paused tests (`start_paused`), one whose clock
/// ran two hours ahead (B: it slept 2 h) and one whose clock ran one hour ahead (A: it
/// slept 1 h). B's two jobs hold two workers; A's two jobs grow the pool to four workers
/// and end (A's two workers go idle); then B's jobs end (B's two go idle). A plain
/// thread (a multi-thread test, a metrics scraper) reads `worker_count()`; then A, with
/// no time passed on its clock, reads `worker_count()`.
///
/// What they expect: README ("How jobs run"): "SmartAioPool's elastic workers take the
/// times they went idle the same way (a paused clock ahead does not keep another
/// runtime's idle workers from retiring, and counts its own workers' idle time from its
/// own stamps)"; `idle_timeout`: "How long a worker beyond `min_workers` may stay idle
/// before it retires". A's own two workers, idle 0 s of A's clock, are still there (at
/// least 3 workers: B's two may go, A's two may not).
///
/// What happened (de57202): "the paused test A's own two workers, idle 0ns of its clock
/// (idle timeout 60 s), were retired once a plain thread had looked at the worker count
/// while another paused test's clock was further ahead: A saw 1 worker(s), want at least
/// 3". The plain thread's look (`Elastic::clamp`, src/engine/elastic.rs:156-171 at
/// de57202) merges the runs of both clocks ahead into one run at the real clock whose
/// stamp ("made") is the latest of them (B's, 2 h); A's clock has not reached that, so
/// `retire` (elastic.rs:191) counts A's workers from the clamped (real) time, an hour
/// behind A's clock, and retires them at once: 370's fix holds for one clock ahead only.
/// (Before 363 A saw 4.) Fixed by 8f7a3d5 (RELIABILITY.md, 373): `clamp` moves each run
/// back in place, keeping its own stamp, and `stamp` merges no workers into a run moved
/// back.
#[test]
fn a_paused_tests_idle_workers_do_not_retire_early_with_two_clocks_ahead() {
    let pool = SmartAioPool::builder()
        .max_concurrency(4)
        .min_workers(1)
        .idle_timeout(Duration::from_secs(60))
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let gate_b = Gate::default();
    let (b_busy_tx, b_busy_rx) = mpsc::channel::<()>();
    let (b_idle_tx, b_idle_rx) = mpsc::channel::<()>();
    let (b_end_tx, b_end_rx) = mpsc::channel::<()>();
    let (a_idle_tx, a_idle_rx) = mpsc::channel::<()>();
    let (a_look_tx, a_look_rx) = mpsc::channel::<()>();
    // B: two hours ahead, two jobs held on a gate.
    let (p, g) = (pool.clone(), gate_b.clone());
    let b = std::thread::spawn(move || {
        paused_runtime().block_on(async move {
            tokio::time::sleep(Duration::from_secs(7200)).await;
            let hs: Vec<_> = futures_util::future::join_all((0..2).map(|_| {
                let g = g.clone();
                p.submit(move || {
                    let g = g.clone();
                    async move { g.wait().await }
                })
            }))
            .await;
            b_busy_tx.send(()).unwrap();
            // (No `timeout`: this paused runtime would auto-advance to it; the main
            // thread's waits are bounded.)
            for h in hs {
                h.unwrap().await.unwrap();
            }
            b_idle_tx.send(()).unwrap();
            // Kept alive (its idle slot tasks with it) until the test is over.
            tokio::task::spawn_blocking(move || b_end_rx.recv_timeout(SECS10))
                .await
                .unwrap()
                .ok();
        })
    });
    b_busy_rx.recv_timeout(SECS10).unwrap();
    support::until("B's two jobs running", || pool.stats().running == 2);
    // A: one hour ahead, two short jobs that grow the pool to four workers.
    let p = pool.clone();
    let a = std::thread::spawn(move || {
        paused_runtime().block_on(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let hs: Vec<_> = futures_util::future::join_all(
                (0..2).map(|_| p.submit(|| tokio::time::sleep(Duration::from_millis(10)))),
            )
            .await;
            for h in hs {
                h.unwrap().await.unwrap();
            }
            let t = Instant::now();
            a_idle_tx.send(()).unwrap();
            // Not idle (its clock stays) while the others run and look.
            tokio::task::spawn_blocking(move || a_look_rx.recv_timeout(SECS10))
                .await
                .unwrap()
                .unwrap();
            (p.worker_count(), t.elapsed())
        })
    });
    a_idle_rx.recv_timeout(SECS10).unwrap();
    gate_b.open();
    b_idle_rx.recv_timeout(SECS10).unwrap();
    support::until("every job ended", || pool.stats().running == 0);
    let seen = pool.worker_count(); // a plain thread: the real clock
    a_look_tx.send(()).unwrap();
    let (after, idle_for) = a.join().unwrap();
    b_end_tx.send(()).unwrap();
    b.join().unwrap();
    assert_eq!(seen, 4, "the plain thread saw the workers retire");
    assert!(
        after >= 3 && idle_for == Duration::ZERO,
        "the paused test A's own two workers, idle {idle_for:?} of its clock (idle timeout \
         60 s), were retired once a plain thread had looked at the worker count while \
         another paused test's clock was further ahead: A saw {after} worker(s), want at \
         least 3"
    );
}

// ----- 368: the exit's busy runs, in a child process ---------------------------------------

mod child {
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use nb_aiopool::{SmartAioPool, SubmitOptions, TaskHandle};

    use super::support::{self, append, lines};

    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static POOL: OnceLock<SmartAioPool> = OnceLock::new();
    static HANDLES: Mutex<Vec<(&'static str, TaskHandle<()>)>> = Mutex::new(Vec::new());

    extern "C" {
        fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
    }

    /// Run after the crate's exit hook (registered before it): each handle's outcome
    /// and the pool's stats.
    extern "C" fn record() {
        let Some(dir) = DIR.get() else { return };
        support::record_handles(dir, &HANDLES, |()| "Ok".to_string());
        if let Some(pool) = POOL.get() {
            let s = pool.stats();
            append(
                &dir.join("stats"),
                &format!("running={} queued={}", s.running, s.queued),
            );
        }
    }

    /// A SmartAioPool of three slots and `weight_capacity(2)`: X (weight 1) is busy in
    /// one poll for 300 ms when `process::exit` comes, then returns `Pending` (run again
    /// at the exit: 200 ms); Y (weight 1) is busy in one poll for 700 ms and ends there;
    /// W (weight 2) waits for the weight.
    pub fn weight_busy(dir: &Path) {
        DIR.set(dir.to_path_buf()).unwrap();
        // SAFETY: registers a plain `extern "C"` function.
        unsafe { atexit(record) };
        let rt = support::multi_thread_of(3);
        let p = SmartAioPool::builder()
            .name("weighted")
            .max_concurrency(3)
            .weight_capacity(2)
            .build();
        POOL.set(p.clone()).unwrap();
        let (dx, dy, dw) = (dir.to_path_buf(), dir.to_path_buf(), dir.to_path_buf());
        let x = support::numbered_recipe(move |n| {
            let d = dx.clone();
            Box::pin(async move {
                support::event(&d, "X", &format!("start{n}"));
                if n == 0 {
                    std::thread::sleep(Duration::from_millis(300));
                    support::event(&d, "X", "pending0");
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                support::event(&d, "X", &format!("end{n}"));
            })
        });
        let y = support::numbered_recipe(move |n| {
            let d = dy.clone();
            Box::pin(async move {
                support::event(&d, "Y", &format!("start{n}"));
                if n == 0 {
                    std::thread::sleep(Duration::from_millis(700));
                }
                support::event(&d, "Y", &format!("end{n}"));
            })
        });
        let w = support::numbered_recipe(move |n| {
            let d = dw.clone();
            Box::pin(async move {
                support::event(&d, "W", &format!("start{n}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                support::event(&d, "W", &format!("end{n}"));
            })
        });
        let one = || SubmitOptions::new().weight(1);
        rt.block_on(async {
            let x = p.submit_with(x, one()).await.unwrap();
            HANDLES.lock().unwrap().push(("X", x));
            let y = p.submit_with(y, one()).await.unwrap();
            HANDLES.lock().unwrap().push(("Y", y));
        });
        support::until("X and Y started", || {
            let l = lines(&dir.join("ev"));
            l.iter().any(|e| e.starts_with("X start0"))
                && l.iter().any(|e| e.starts_with("Y start0"))
        });
        rt.block_on(async {
            let w = p
                .submit_with(w, SubmitOptions::new().weight(2))
                .await
                .unwrap();
            HANDLES.lock().unwrap().push(("W", w));
        });
        support::exit_from_main(dir, rt)
    }
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = support::child_scenario();
    match scenario.as_str() {
        "weight-busy" => child::weight_busy(&dir),
        other => panic!("unknown scenario {other}"),
    }
}

/// What the user does: a SmartAioPool of three slots and `weight_capacity(2)` runs X and
/// Y (weight 1 each); the program calls `process::exit` while both are busy in one poll
/// on another thread (X for 300 ms, then its poll returns `Pending`; Y for 700 ms, then
/// it ends in that poll), with W (weight 2) queued.
///
/// What they expect: SmartAioPool's Shutdown docs: "a run that `process::exit` finds
/// inside a poll on another thread ... is run again only once that poll has returned, and
/// not at all if it ended there"; "Such a run holds its slot while the exit waits for
/// it"; `weight_capacity`: the weights of the tasks running never exceed the capacity. X
/// runs again once its poll returns (Y still in its poll), Y does not; W starts only
/// once both X's re-run and Y have ended (each holds 1 of the 2); all three handles Ok,
/// and nothing is left running or queued.
///
/// Pinned (passes on de57202): each busy run settled on its own gives its weight back
/// once.
#[test]
fn pin_busy_runs_settled_one_by_one_give_their_weights_back_once() {
    let c = support::play("weight-busy", 30);
    let l = c.events();
    let at = |what: &str| c.at(what);
    let mut handles = c.lines("handles");
    handles.sort();
    let stats = c.lines("stats");
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(handles, ["W=Ok", "X=Ok", "Y=Ok"], "events: {l:?}");
    assert_eq!(stats, ["running=0 queued=0"], "events: {l:?}");
    let (x1, x_end1, y_end0, w0) = (at("X start1"), at("X end1"), at("Y end0"), at("W start0"));
    assert!(at("Y start1").is_none(), "Y ran again: {l:?}");
    let (Some(x1), Some(x_end1), Some(y_end0), Some(w0)) = (x1, x_end1, y_end0, w0) else {
        panic!("missing events: {l:?}");
    };
    assert!(
        x1 < y_end0,
        "X was not run again while Y was still in its poll: {l:?}"
    );
    assert!(
        w0 >= x_end1 && w0 >= y_end0,
        "W (weight 2) started while X's re-run or Y held weight (capacity 2): {l:?}"
    );
}
