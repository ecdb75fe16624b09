//! A review of finding 407's fix (e5a8b79, RELIABILITY.md 408): once the exit has taken the
//! SmartAioPools over, the runtime a caller is on (one `process::exit` froze: alive, never
//! driven again) must not decide where a slot task, a claimer or a timer goes, nor become a
//! pool's home. Each scenario plays in a child process (see `support::run_child`), as in
//! `threads_during_the_exit.rs`: main runs task A of pool P (two slots unless said) on a
//! current-thread runtime F and calls `process::exit` inside F's `block_on`, so F is frozen;
//! A's first run never ends, its re-run at the exit sleeps 1.5 s. Once that re-run has
//! started, a thread does what the scenario says, and B's recipe writes whether it ran on F
//! and whether A's re-run had ended (`b_rt`). An `atexit` hook registered before the
//! crate's (so it runs after it) writes what the handles say. The four tests of a pool
//! built during the exit failed before the fix of finding 409 (RELIABILITY.md); the other
//! four pin behaviour that held already.

// Some tasks hand back handles, to await elsewhere.
#![allow(clippy::async_yields_async)]

mod support;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nb_aiopool::{SmartAioPool, TaskHandle};
use support::{append, child_scenario, lines, ran, run_child};

// ----- the child process ---------------------------------------------------------------

static DIR: OnceLock<PathBuf> = OnceLock::new();
static POOL: OnceLock<SmartAioPool> = OnceLock::new();
/// A pool built during the exit, after the exit listed its pools (finding 409).
static LATE: OnceLock<SmartAioPool> = OnceLock::new();
static HANDLES: Mutex<Vec<(&'static str, TaskHandle<u32>)>> = Mutex::new(Vec::new());

type Recipe = Box<dyn Fn() -> Pin<Box<dyn std::future::Future<Output = u32> + Send>> + Send + Sync>;

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

/// Registered before the crate's at-exit hook, so it runs after it: waits (at most 4 s)
/// for the thread `T` to say it is done, then writes what the handles say.
extern "C" fn record_at_exit() {
    let Some(dir) = DIR.get() else { return };
    let end = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < end && !lines(&dir.join("done")).iter().any(|l| l == "T") {
        std::thread::sleep(Duration::from_millis(2));
    }
    support::record_handles(dir, &HANDLES, |v| format!("Ok({v})"));
}

/// A's recipe: appends "A" to `runs` at each run; its first run never ends, later runs
/// sleep 1.5 s, append "A" to `ended`, record the event "A ended" (`ev`) and return 1.
fn a_recipe(dir: &Path) -> Recipe {
    let inner = hanging_recipe(dir, "A", 1500, 1);
    let dir = dir.to_path_buf();
    Box::new(move || {
        let run = inner();
        let dir = dir.clone();
        Box::pin(async move {
            let v = run.await;
            support::event(&dir, "A", "ended");
            v
        })
    })
}

/// A recipe that appends `name` to `runs` at each run; its first run never ends, later
/// runs sleep `ms`, append `name` to `ended` and return `value`.
fn hanging_recipe(dir: &Path, name: &'static str, ms: u64, value: u32) -> Recipe {
    Box::new(support::first_run_hangs(dir, name, value, ms))
}

/// [`a_recipe`], whose re-run (on the exit's runtime) first builds pool Q (one slot, the
/// defaults: `auto_shutdown`, process-wide), made in the exit's runtime's context.
fn a_recipe_building_q(dir: &Path) -> Recipe {
    let inner = a_recipe(dir);
    let n = AtomicUsize::new(0);
    Box::new(move || {
        if n.fetch_add(1, Ordering::SeqCst) == 1 {
            LATE.get_or_init(|| SmartAioPool::builder().name("Q").max_concurrency(1).build());
        }
        inner()
    })
}

/// B's recipe: appends to `b_rt` whether it runs on runtime `frozen` and whether A's re-run
/// had ended, then "B" to `runs`; returns 2.
fn b_recipe(dir: &Path, frozen: tokio::runtime::Id) -> Recipe {
    let runs = dir.join("runs");
    let ended = dir.join("ended");
    let b_rt = dir.join("b_rt");
    Box::new(move || {
        let on = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
        append(
            &b_rt,
            if on == Some(frozen) {
                "frozen"
            } else {
                "other"
            },
        );
        append(
            &b_rt,
            if lines(&ended).is_empty() {
                "before A's re-run ended"
            } else {
                "after A's re-run ended"
            },
        );
        append(&runs, "B");
        Box::pin(async { 2 })
    })
}

fn wait_for_a_rerun(dir: &Path) {
    support::until("A's re-run started at the exit", || ran(dir, "A") == 2);
}

/// What a submit said (`accepted`, or the refusal), then, once its task ended, what the
/// handle said; "T" in `done`.
fn said(
    dir: &Path,
    submitted: Result<TaskHandle<u32>, String>,
    wait: impl FnOnce(TaskHandle<u32>) -> String,
) {
    match submitted {
        Ok(h) => {
            append(&dir.join("b"), "accepted");
            append(&dir.join("b"), &wait(h));
        }
        Err(e) => append(&dir.join("b"), &format!("refused {e}")),
    }
    append(&dir.join("done"), "T");
}

fn blocking_waited(h: TaskHandle<u32>) -> String {
    match h.blocking_wait() {
        Ok(v) => format!("waited Ok({v})"),
        Err(e) => format!("waited Err({:?})", e.cancel_reason()),
    }
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = child_scenario();
    DIR.set(dir.clone()).unwrap();
    // Before any pool registers the crate's hook: ours then runs after it.
    assert_eq!(unsafe { atexit(record_at_exit) }, 0);
    let pool = POOL.get_or_init(|| {
        let b = SmartAioPool::builder().name("P");
        match scenario.as_str() {
            "waiting-submit-spawn-blocking" => b.max_concurrency(1).max_queue_size(0),
            "rate-spawn-blocking" => b
                .max_concurrency(2)
                .rate_limit(1, Duration::from_millis(400)),
            _ => b.max_concurrency(2),
        }
        .build()
    });
    let f = support::current_thread();
    let frozen = f.handle().id();
    let a = f.block_on(async {
        let recipe = if scenario == "exit-built-pool-spawn-blocking" {
            a_recipe_building_q(&dir)
        } else {
            a_recipe(&dir)
        };
        let h = pool.submit(recipe).await.unwrap();
        while ran(&dir, "A") == 0 {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        h
    });
    HANDLES.lock().unwrap().push(("A", a));
    let d = dir.clone();
    {
        // What the pools say, every 500 ms: read by a test whose child never exits.
        let d = dir.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            for (name, p) in [("P", POOL.get()), ("Q", LATE.get())] {
                if let Some(p) = p {
                    let s = p.stats();
                    append(
                        &d.join("diag"),
                        &format!(
                            "{name}: submitted={} running={} queued={} completed={}",
                            s.submitted, s.running, s.queued, s.completed
                        ),
                    );
                }
            }
        });
    }
    match scenario.as_str() {
        // A `spawn_blocking` thread of F (or a plain thread that entered F), once A's
        // re-run has started, builds pool Q (one slot, `auto_shutdown`, process-wide: the
        // defaults), submits B to it and waits for B.
        "late-pool-spawn-blocking" | "late-pool-try-submit" | "late-pool-entered" => {
            let how = scenario.clone();
            let work = move || {
                wait_for_a_rerun(&d);
                let q = LATE
                    .get_or_init(|| SmartAioPool::builder().name("Q").max_concurrency(1).build());
                let submitted = if how == "late-pool-try-submit" {
                    q.try_submit(b_recipe(&d, frozen))
                        .map_err(|e| e.to_string())
                } else {
                    q.blocking_submit(b_recipe(&d, frozen))
                        .map_err(|e| e.to_string())
                };
                said(&d, submitted, blocking_waited);
            };
            f.block_on(async move {
                if scenario == "late-pool-entered" {
                    let handle = tokio::runtime::Handle::current();
                    std::thread::spawn(move || {
                        let _in = handle.enter();
                        work();
                    });
                } else {
                    drop(tokio::task::spawn_blocking(work));
                }
                std::process::exit(0);
            });
        }
        // A's re-run at the exit builds pool Q on the exit's runtime (its home); then a
        // `spawn_blocking` thread of F submits B to Q and waits for it.
        "exit-built-pool-spawn-blocking" => {
            f.block_on(async move {
                drop(tokio::task::spawn_blocking(move || {
                    wait_for_a_rerun(&d);
                    support::until("Q built", || LATE.get().is_some());
                    let submitted = LATE
                        .get()
                        .unwrap()
                        .blocking_submit(b_recipe(&d, frozen))
                        .map_err(|e| e.to_string());
                    said(&d, submitted, blocking_waited);
                }));
                std::process::exit(0);
            });
        }
        // A task of R, a multi-thread runtime (one worker) driven all along on its own
        // thread, submits B to P once A's re-run has started and awaits its handle.
        "second-runtime-task" => {
            let r = support::multi_thread_of(1);
            drop(r.spawn(async move {
                while ran(&d, "A") < 2 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let submitted = POOL
                    .get()
                    .unwrap()
                    .submit(b_recipe(&d, frozen))
                    .await
                    .map_err(|e| e.to_string());
                match submitted {
                    Ok(h) => {
                        append(&d.join("b"), "accepted");
                        let v = match h.await {
                            Ok(v) => format!("awaited Ok({v})"),
                            Err(e) => format!("awaited Err({:?})", e.cancel_reason()),
                        };
                        append(&d.join("b"), &v);
                    }
                    Err(e) => append(&d.join("b"), &format!("refused {e}")),
                }
                append(&d.join("done"), "T");
            }));
            std::mem::forget(r);
            f.block_on(async { std::process::exit(0) });
        }
        // A plain thread that drives a current-thread runtime of its own (`block_on`)
        // submits B to P once A's re-run has started and awaits its handle.
        "own-current-thread" => {
            std::thread::spawn(move || {
                wait_for_a_rerun(&d);
                let own = support::current_thread();
                let got = own.block_on(async {
                    match POOL.get().unwrap().submit(b_recipe(&d, frozen)).await {
                        Ok(h) => {
                            append(&d.join("b"), "accepted");
                            match h.await {
                                Ok(v) => format!("awaited Ok({v})"),
                                Err(e) => format!("awaited Err({:?})", e.cancel_reason()),
                            }
                        }
                        Err(e) => format!("refused {e}"),
                    }
                });
                append(&d.join("b"), &got);
                append(&d.join("done"), "T");
            });
            f.block_on(async { std::process::exit(0) });
        }
        // P has a rate limit of one start per 400 ms: A's re-run spent the window's start.
        // A `spawn_blocking` thread of F submits B (`blocking_submit`) and waits for it: B
        // waits for the window (a timer), not for A's re-run.
        "rate-spawn-blocking" => {
            f.block_on(async move {
                drop(tokio::task::spawn_blocking(move || {
                    wait_for_a_rerun(&d);
                    let t0 = std::time::Instant::now();
                    let submitted = POOL
                        .get()
                        .unwrap()
                        .blocking_submit(b_recipe(&d, frozen))
                        .map_err(|e| e.to_string());
                    said(&d, submitted, |h| {
                        let w = blocking_waited(h);
                        append(&d.join("b_ms"), &t0.elapsed().as_millis().to_string());
                        support::event(&d, "B", "waited");
                        w
                    });
                }));
                std::process::exit(0);
            });
        }
        // P has one place and no queue: a `spawn_blocking` thread of F waits in
        // `blocking_submit(B)` for room (its `ensure_started` offers F) and then for B.
        // Pool L's task (also frozen mid-run; its re-run sleeps 3 s) keeps the exit's run
        // going after A's re-run ends, so that B is admitted rather than refused `Closed`.
        "waiting-submit-spawn-blocking" => {
            let l = SmartAioPool::builder().name("L").max_concurrency(1).build();
            let lh = f.block_on(async {
                let h = l.submit(hanging_recipe(&dir, "L", 3000, 5)).await.unwrap();
                while ran(&dir, "L") == 0 {
                    tokio::task::yield_now().await;
                }
                tokio::task::yield_now().await;
                h
            });
            HANDLES.lock().unwrap().push(("L", lh));
            std::mem::forget(l);
            f.block_on(async move {
                drop(tokio::task::spawn_blocking(move || {
                    wait_for_a_rerun(&d);
                    let submitted = POOL
                        .get()
                        .unwrap()
                        .blocking_submit(b_recipe(&d, frozen))
                        .map_err(|e| e.to_string());
                    said(&d, submitted, blocking_waited);
                }));
                std::process::exit(0);
            });
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// What a child process left.
struct Played {
    code: Option<i32>,
    stderr: String,
    b: Vec<String>,
    b_rt: Vec<String>,
    b_ms: Vec<String>,
    runs: Vec<String>,
    handles: Vec<String>,
    diag: Vec<String>,
    /// The events recorded (`support::event`), in the order they came.
    ev: Vec<String>,
}

fn play(scenario: &str) -> Played {
    let child = run_child(scenario, 20);
    let p = Played {
        code: child.code,
        stderr: child.stderr.clone(),
        b: lines(&child.dir.join("b")),
        b_rt: lines(&child.dir.join("b_rt")),
        b_ms: lines(&child.dir.join("b_ms")),
        runs: lines(&child.dir.join("runs")),
        handles: lines(&child.dir.join("handles")),
        diag: lines(&child.dir.join("diag")),
        ev: lines(&child.dir.join("ev")),
    };
    let _ = std::fs::remove_dir_all(&child.dir);
    p
}

// ----- the tests -------------------------------------------------------------------------

fn a_late_pools_task_starts_at_once(scenario: &str) {
    let p = play(scenario);
    assert_eq!(
        p.code,
        Some(0),
        "{scenario}: the process never exited (killed after 20 s): pool Q, built during the \
         exit's run, was not taken over (finding 409: the take-over ran before Q existed), so the submit \
         from a thread of the runtime `exit` froze made that runtime Q's home and B's runtime \
         (`Engine::push` enters it unless `taken_over`); B's claimer went there, never \
         polled, and a claimer on the exit's runtime (the exit's wait offers it) hands B \
         back to it (`take_next`: B's runtime is alive). The exit waits for B for ever. \
         b: {:?} runs: {:?} pools at the end: {:?} stderr: {}",
        p.b,
        p.runs,
        p.diag.iter().rev().take(2).rev().collect::<Vec<_>>(),
        support::stderr_head(&p.stderr)
    );
    assert_eq!(
        p.b,
        ["accepted", "waited Ok(2)"],
        "{scenario}: B, submitted during the exit to an `auto_shutdown` pool, should run; \
         runs: {:?}",
        p.runs
    );
    assert_eq!(p.handles, ["A=Ok(1)"], "{scenario}");
    assert_eq!(
        p.b_rt,
        ["other", "before A's re-run ended"],
        "{scenario}: B should start at once, on the exit's runtime, in Q's free slot (Q, \
         built during the exit's run, should be taken over as the pools the exit found were)"
    );
}

/// Finding 409 (a review of 407's fix; failed before, the process killed at 20 s): a
/// SmartAioPool built during the exit's run by a `spawn_blocking` thread of the runtime
/// `exit` froze was not taken over; its home was the frozen runtime, and B's slot task went
/// there. The docs ("Shutdown"): the exit runs
/// "what they, or plain threads still going, submit to any `auto_shutdown` pool while it
/// runs".
#[test]
fn a_pool_built_during_the_exit_on_a_frozen_runtimes_spawn_blocking_thread_starts_its_task_at_once()
{
    a_late_pools_task_starts_at_once("late-pool-spawn-blocking");
}

/// The same with `try_submit` (no wait for room, so no `ensure_started`).
#[test]
fn a_pool_built_during_the_exit_with_try_submit_starts_its_task_at_once() {
    a_late_pools_task_starts_at_once("late-pool-try-submit");
}

/// The same from a plain thread that entered the frozen runtime (`Handle::enter`).
#[test]
fn a_pool_built_during_the_exit_on_an_entered_thread_starts_its_task_at_once() {
    a_late_pools_task_starts_at_once("late-pool-entered");
}

/// The same when Q is built by A's re-run on the exit's runtime (so Q's home is that
/// runtime): before 409's fix the submit from the frozen runtime's `spawn_blocking` thread
/// made the frozen runtime Q's home and B's runtime (`Engine::push` entered the caller's
/// runtime: Q was never taken over).
#[test]
fn a_pool_built_by_an_exit_task_then_fed_from_a_frozen_runtimes_thread_starts_its_task_at_once() {
    a_late_pools_task_starts_at_once("exit-built-pool-spawn-blocking");
}

fn a_driven_runtimes_submit_runs_at_once(scenario: &str) {
    let p = play(scenario);
    assert_eq!(
        p.code,
        Some(0),
        "{scenario}: b: {:?} runs: {:?} stderr: {}",
        p.b,
        p.runs,
        support::stderr_head(&p.stderr)
    );
    assert_eq!(
        p.b,
        ["accepted", "awaited Ok(2)"],
        "{scenario}: runs: {:?}",
        p.runs
    );
    assert_eq!(
        p.b_rt,
        ["other", "before A's re-run ended"],
        "{scenario}: B should start at once in P's free slot"
    );
    assert_eq!(p.handles, ["A=Ok(1)"], "{scenario}");
}

/// Pinned: a task of a multi-thread runtime driven all along on its own thread submits to
/// P during the exit and awaits the handle: B starts at once (on the exit's runtime, since
/// the fix) and the await returns its value.
#[test]
fn a_driven_multi_thread_runtimes_submit_during_the_exit_runs_at_once() {
    a_driven_runtimes_submit_runs_at_once("second-runtime-task");
}

/// Pinned: the same from a plain thread driving a current-thread runtime of its own.
#[test]
fn a_driven_current_thread_runtimes_submit_during_the_exit_runs_at_once() {
    a_driven_runtimes_submit_runs_at_once("own-current-thread");
}

/// Pinned: in a rate-limited pool (one start per 400 ms) whose window A's re-run filled, B
/// submitted from a `spawn_blocking` thread of the frozen runtime starts when the window
/// reopens (the timer is on the exit's runtime), well before A's 1.5 s re-run ends, and
/// its `blocking_wait` returns before that end too.
#[test]
fn a_frozen_threads_submit_into_a_full_rate_window_starts_when_it_reopens() {
    let p = play("rate-spawn-blocking");
    assert_eq!(
        p.code,
        Some(0),
        "b: {:?} runs: {:?} stderr: {}",
        p.b,
        p.runs,
        support::stderr_head(&p.stderr)
    );
    assert_eq!(p.b, ["accepted", "waited Ok(2)"], "runs: {:?}", p.runs);
    assert_eq!(
        p.b_rt,
        ["other", "before A's re-run ended"],
        "B waited for A's re-run instead of the rate window (its timer on the frozen \
         runtime?); b_ms: {:?}",
        p.b_ms
    );
    // B's wait ended before A's re-run did: the two events in the order they came (one
    // file), not a bound in ms, which a loaded child can overrun. The window reopens 400
    // ms after A's re-run started, 1.1 s before that re-run ends on the same runtime.
    let at = |what: &str| p.ev.iter().position(|l| l.starts_with(what));
    let (b_waited, a_ended) = (at("B waited "), at("A ended "));
    assert!(
        b_waited.is_some() && a_ended.is_some() && b_waited < a_ended,
        "B's wait did not end before A's re-run (the window reopens 400 ms after its \
         start); events: {:?}, b_ms: {:?}",
        p.ev,
        p.b_ms
    );
    assert_eq!(p.handles, ["A=Ok(1)"]);
}

/// Pinned: a `spawn_blocking` thread of the frozen runtime waiting in `blocking_submit` for
/// room in a full pool (its `ensure_started` offers the frozen runtime) is admitted once
/// A's re-run ends, and B runs on the exit's runtime, not the frozen one.
#[test]
fn a_frozen_threads_waiting_submit_runs_on_the_exits_runtime() {
    let p = play("waiting-submit-spawn-blocking");
    assert_eq!(
        p.code,
        Some(0),
        "b: {:?} runs: {:?} stderr: {}",
        p.b,
        p.runs,
        support::stderr_head(&p.stderr)
    );
    assert_eq!(p.b, ["accepted", "waited Ok(2)"], "runs: {:?}", p.runs);
    assert_eq!(p.b_rt, ["other", "after A's re-run ended"]);
    assert_eq!(p.handles, ["A=Ok(1)", "L=Ok(5)"]);
}
