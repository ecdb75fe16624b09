//! Finding 345 of RELIABILITY.md (its test failed before the fix), and the pins of the
//! review that found it: what plain threads and `spawn_blocking` threads see while the
//! process exits (2026-12-06): `blocking_submit`, `try_submit`, `submit_with` with a timeout,
//! `TaskHandle::blocking_wait` and resizes, called from threads other than the exiting one
//! while `std::process::exit` runs the SmartAioPool exit take-over, with the admission
//! line barging (RELIABILITY.md, 340). Each scenario plays in a child process (see
//! `support::run_child`); an `atexit` hook registered before the crate's (so it runs after
//! it) writes what the threads saw and what `stats()` says once the exit's run is over.

// Some tasks hand back handles, to await elsewhere.
#![allow(clippy::async_yields_async)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nb_aiopool::{SmartAioPool, SubmitOptions, TaskHandle};
use support::{append, child_scenario, first_run_hangs, lines, ran, recorded, run_child, start_on};

// ----- the child process ---------------------------------------------------------------

static DIR: OnceLock<PathBuf> = OnceLock::new();
static POOL: OnceLock<SmartAioPool> = OnceLock::new();
/// Handles to read once the exit's run is over, by name.
static HANDLES: Mutex<Vec<(&'static str, TaskHandle<u32>)>> = Mutex::new(Vec::new());

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

/// Registered before the crate's at-exit hook, so it runs after it: waits (a little) for
/// the threads that expect to finish during the exit (`expect` names them, one a line;
/// each appends its name to `done`), then writes what the handles and `stats()` say.
extern "C" fn record_at_exit() {
    let Some(dir) = DIR.get() else { return };
    // The crate's hook has returned: the exit's run is over.
    append(&dir.join("exit_over"), "yes");
    let end = std::time::Instant::now() + Duration::from_secs(3);
    let expected = lines(&dir.join("expect"));
    while std::time::Instant::now() < end {
        let done = lines(&dir.join("done"));
        if expected.iter().all(|e| done.contains(e)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if dir.join("hook_submits").exists() {
        // A later at-exit hook (of the program, or of another library) that hands the pool
        // one last task and waits for it.
        let pool = POOL.get().unwrap();
        let submitted = pool
            .blocking_submit(recorded(dir, "H", 7))
            .map_err(|e| e.to_string());
        submit_then_wait(dir, "H", "hook", submitted);
    }
    if dir.join("hook_builds").exists() {
        // A later at-exit hook that builds a SmartAioPool of its own (a lazily built
        // `static`, say) and hands it one task.
        let q = SmartAioPool::builder().name("Q").build();
        let submitted = q
            .blocking_submit(recorded(dir, "H", 7))
            .map_err(|e| e.to_string());
        submit_then_wait(dir, "H", "hook", submitted);
    }
    support::record_handles(dir, &HANDLES, |v| format!("Ok({v})"));
    if let Some(pool) = POOL.get() {
        let s = pool.stats();
        append(
            &dir.join("stats"),
            &format!(
                "submitted={} completed={} cancelled={} queued={} running={}",
                s.submitted, s.completed, s.cancelled, s.queued, s.running
            ),
        );
    }
}

/// As [`recorded`], and appends to `b_rt` whether the run is on the runtime `frozen` and
/// whether A's re-run had ended (A appends to `ended` at its end: see [`first_run_hangs`]).
fn recorded_where(
    dir: &Path,
    name: &'static str,
    value: u32,
    frozen: tokio::runtime::Id,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>> + Send + Sync + 'static
{
    let inner = recorded(dir, name, value);
    let b_rt = dir.join("b_rt");
    let ended = dir.join("ended");
    move || {
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
        inner()
    }
}

/// A thread's line in `file`, then its name in `done` (for the record hook).
fn say(dir: &Path, thread: &str, file: &str, line: &str) {
    append(&dir.join(file), line);
    append(&dir.join("done"), thread);
}

/// Tells the record hook to wait for `thread`.
fn expect(dir: &Path, thread: &str) {
    append(&dir.join("expect"), thread);
}

/// What a blocking submit said, and then the handle's `blocking_wait`.
fn submit_then_wait(
    dir: &Path,
    thread: &str,
    file: &str,
    submitted: Result<TaskHandle<u32>, String>,
) {
    match submitted {
        Ok(h) => {
            append(&dir.join(file), "accepted");
            let said = match h.blocking_wait() {
                Ok(v) => format!("waited Ok({v})"),
                Err(e) => format!("waited Err({:?})", e.cancel_reason()),
            };
            say(dir, thread, file, &said);
        }
        Err(e) => say(dir, thread, file, &format!("refused {e}")),
    }
}

/// Plain thread T submits B ("B", value 2) to P with `blocking_submit` (it may wait for
/// room), calls `admitted` once the submit returned, then waits for B (see
/// [`submit_then_wait`]). Returns once T is submitting.
fn t_blocking_submits_b(dir: &Path, admitted: impl FnOnce(&Path) + Send + 'static) {
    expect(dir, "T");
    let d = dir.to_path_buf();
    std::thread::spawn(move || {
        append(&d.join("b"), "submitting");
        let submitted = POOL
            .get()
            .unwrap()
            .blocking_submit(recorded(&d, "B", 2))
            .map_err(|e| e.to_string());
        admitted(&d);
        submit_then_wait(&d, "T", "b", submitted);
    });
    support::until("T is submitting", || !lines(&dir.join("b")).is_empty());
}

/// P, the child's pool: a default SmartAioPool of one place and no queue.
fn one_place_pool() -> &'static SmartAioPool {
    POOL.get_or_init(|| {
        SmartAioPool::builder()
            .name("P")
            .max_concurrency(1)
            .max_queue_size(0)
            .build()
    })
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = child_scenario();
    DIR.set(dir.clone()).unwrap();
    // Before any pool registers the crate's hook: ours then runs after it.
    assert_eq!(unsafe { atexit(record_at_exit) }, 0);
    match scenario.as_str() {
        // P (two slots) runs A on a current-thread runtime rt, from inside whose
        // `block_on` main calls `process::exit`: rt is frozen. A `spawn_blocking` thread of
        // rt (it goes on) waits until A's re-run has started at the exit, then submits B
        // (`blocking_submit`, `try_submit`, or `Handle::block_on(submit)`) and waits for it.
        "spawn-blocking-blocking-submit"
        | "spawn-blocking-try-submit"
        | "spawn-blocking-async-submit"
        | "entered-blocking-submit" => {
            let pool =
                POOL.get_or_init(|| SmartAioPool::builder().name("P").max_concurrency(2).build());
            let rt = support::current_thread();
            let a = start_on(&rt, pool, &dir, "A", first_run_hangs(&dir, "A", 1, 1500));
            HANDLES.lock().unwrap().push(("A", a));
            expect(&dir, "T");
            let d = dir.clone();
            let how = scenario.clone();
            let frozen = rt.handle().id();
            let recorded =
                move |d: &Path, name: &'static str, v: u32| recorded_where(d, name, v, frozen);
            let work = move || {
                support::until("A's re-run started at the exit", || ran(&d, "A") == 2);
                let pool = POOL.get().unwrap();
                let submitted = match how.as_str() {
                    "spawn-blocking-try-submit" => pool
                        .try_submit(recorded(&d, "B", 2))
                        .map_err(|e| e.to_string()),
                    "spawn-blocking-async-submit" => tokio::runtime::Handle::current()
                        .block_on(pool.submit(recorded(&d, "B", 2)))
                        .map_err(|e| e.to_string()),
                    _ => pool
                        .blocking_submit(recorded(&d, "B", 2))
                        .map_err(|e| e.to_string()),
                };
                submit_then_wait(&d, "T", "b", submitted);
            };
            rt.block_on(async move {
                if scenario == "entered-blocking-submit" {
                    // A plain thread that entered rt (`Handle::enter`).
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
        // P (one place, no queue) runs A on rt (current-thread, not driven again). A plain
        // thread T waits in `blocking_submit(B)` for room when main calls `process::exit`.
        // With "-long", a task of pool Q (also frozen mid-run) keeps the exit's run going
        // for 1.5 s after A's re-run ends.
        "plain-waiter" | "plain-waiter-long" => {
            let pool = one_place_pool();
            let rt = support::current_thread();
            let a = start_on(&rt, pool, &dir, "A", first_run_hangs(&dir, "A", 1, 0));
            HANDLES.lock().unwrap().push(("A", a));
            if scenario.ends_with("-long") {
                let q = SmartAioPool::builder().name("Q").max_concurrency(1).build();
                let l = start_on(&rt, &q, &dir, "L", first_run_hangs(&dir, "L", 5, 1500));
                HANDLES.lock().unwrap().push(("L", l));
            }
            t_blocking_submits_b(&dir, |_| {});
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(pool.stats().submitted, 1, "T's submit waits for room");
            std::process::exit(0);
        }
        // P (one place, no queue) runs A on rt (current-thread, not driven again); a task C
        // of rt waits for room in P (a frozen waiter). At the exit A's re-run sleeps 1.5 s.
        // Plain thread T waits (blocking_submit) for room since before the exit; once A's
        // re-run started at the exit, plain thread G grows P to 2: T is admitted at once,
        // ahead of the frozen waiter, which never polls.
        "grow-during-exit" => {
            let pool = one_place_pool();
            let rt = support::current_thread();
            let a = start_on(&rt, pool, &dir, "A", first_run_hangs(&dir, "A", 1, 1500));
            HANDLES.lock().unwrap().push(("A", a));
            let pc = pool.clone();
            let c = rt.block_on(async move {
                let c = tokio::spawn(async move {
                    let _ = pc.submit(|| async { 3u32 }).await;
                });
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                c
            });
            assert!(!c.is_finished(), "C waits for room in P");
            t_blocking_submits_b(&dir, |d| {
                // Admitted while A's re-run still runs (before its 1.5 s are over).
                let a_running = !HANDLES.lock().unwrap()[0].1.is_finished();
                append(
                    &d.join("b"),
                    &format!("admitted with A running: {a_running}"),
                );
            });
            let d = dir.clone();
            std::thread::spawn(move || {
                support::until("A's re-run started at the exit", || ran(&d, "A") == 2);
                POOL.get().unwrap().set_max_concurrency(2);
                append(&d.join("grown"), "yes");
            });
            support::until("T is submitting", || !lines(&dir.join("b")).is_empty());
            std::thread::sleep(Duration::from_millis(200));
            std::mem::forget(rt);
            std::process::exit(0);
        }
        // P (one place, a queue of one) runs A on a current-thread runtime rt, from inside
        // whose `block_on` main calls `process::exit`: rt is frozen. A thread that entered
        // rt (`Handle::enter`) waits until A's re-run (1.5 s) has started at the exit,
        // submits B (queued behind it), grows P to two places and waits for B.
        "grow-from-frozen-thread" => {
            let pool = POOL.get_or_init(|| {
                SmartAioPool::builder()
                    .name("P")
                    .max_concurrency(1)
                    .max_queue_size(1)
                    .build()
            });
            let rt = support::current_thread();
            let a = start_on(&rt, pool, &dir, "A", first_run_hangs(&dir, "A", 1, 1500));
            HANDLES.lock().unwrap().push(("A", a));
            expect(&dir, "T");
            let d = dir.clone();
            let frozen = rt.handle().clone();
            std::thread::spawn(move || {
                let _in = frozen.enter();
                support::until("A's re-run started at the exit", || ran(&d, "A") == 2);
                let pool = POOL.get().unwrap();
                let submitted = pool
                    .blocking_submit(recorded_where(&d, "B", 2, frozen.id()))
                    .map_err(|e| e.to_string());
                let queued = pool.stats().queued;
                append(&d.join("b"), &format!("queued before the grow: {queued}"));
                pool.set_max_concurrency(2);
                submit_then_wait(&d, "T", "b", submitted);
            });
            rt.block_on(async { std::process::exit(0) });
        }
        // P (one place, no queue) runs A on rt (current-thread, not driven again); at the
        // exit A's re-run sleeps 1.5 s. A plain thread, with a current-thread runtime of its
        // own, waits since before the exit in `submit_with(.., timeout(300 ms))`.
        "plain-timeout" => {
            let pool = one_place_pool();
            let rt = support::current_thread();
            let a = start_on(&rt, pool, &dir, "A", first_run_hangs(&dir, "A", 1, 1500));
            HANDLES.lock().unwrap().push(("A", a));
            expect(&dir, "T");
            let d = dir.clone();
            std::thread::spawn(move || {
                let own = support::current_thread();
                let t0 = std::time::Instant::now();
                append(&d.join("b"), "submitting");
                let got = own.block_on(POOL.get().unwrap().submit_with(
                    recorded(&d, "B", 2),
                    SubmitOptions::new().timeout(Duration::from_millis(1000)),
                ));
                let ms = t0.elapsed().as_millis();
                let said = match got {
                    Ok(h) => {
                        h.detach();
                        format!("accepted after {ms} ms")
                    }
                    Err(e) => format!("{:?} after {ms} ms", e.kind()),
                };
                say(&d, "T", "b", &said);
            });
            support::until("T is submitting", || !lines(&dir.join("b")).is_empty());
            std::thread::sleep(Duration::from_millis(100));
            std::process::exit(0);
        }
        // P (one place) runs A on rt (current-thread, not driven again); a plain thread
        // waits in `a.blocking_wait()` when main calls `process::exit`; A is run again at
        // the exit and returns 1.
        "plain-blocking-wait" => {
            let pool =
                POOL.get_or_init(|| SmartAioPool::builder().name("P").max_concurrency(1).build());
            let rt = support::current_thread();
            let a = start_on(&rt, pool, &dir, "A", first_run_hangs(&dir, "A", 1, 0));
            expect(&dir, "T");
            let d = dir.clone();
            std::thread::spawn(move || {
                append(&d.join("b"), "waiting");
                let said = match a.blocking_wait() {
                    Ok(v) => format!("waited Ok({v})"),
                    Err(e) => format!("waited Err({:?})", e.cancel_reason()),
                };
                say(&d, "T", "b", &said);
            });
            support::until("T waits", || !lines(&dir.join("b")).is_empty());
            std::thread::sleep(Duration::from_millis(100));
            std::process::exit(0);
        }
        // P runs A on rt (current-thread), from inside whose `block_on` main calls
        // `process::exit` (rt frozen); with "-empty" A has finished before. The record hook,
        // run after the crate's, submits H with `blocking_submit` and `blocking_wait`s it.
        // With "hook-builds", the record hook builds a pool Q of its own and submits H to it.
        "hook-submit" | "hook-submit-empty" | "hook-builds" | "hook-builds-empty" => {
            let pool =
                POOL.get_or_init(|| SmartAioPool::builder().name("P").max_concurrency(1).build());
            let file = if scenario.starts_with("hook-builds") {
                "hook_builds"
            } else {
                "hook_submits"
            };
            std::fs::write(dir.join(file), "").unwrap();
            let rt = support::current_thread();
            if !scenario.ends_with("-empty") {
                let a = start_on(&rt, pool, &dir, "A", first_run_hangs(&dir, "A", 1, 0));
                HANDLES.lock().unwrap().push(("A", a));
            } else {
                rt.block_on(async {
                    assert_eq!(pool.run(recorded(&dir, "A", 1)).await.ok(), Some(1))
                });
            }
            rt.block_on(async { std::process::exit(0) });
        }
        // P runs A on a current-thread runtime rt, from inside whose `block_on` main calls
        // `process::exit` (rt frozen). A `spawn_blocking` thread T of rt waits until the
        // exit's run is over (the crate's hook has returned), then builds a pool Q of its
        // own, submits B to it with `blocking_submit` and waits for it.
        "late-thread-builds" => {
            let pool =
                POOL.get_or_init(|| SmartAioPool::builder().name("P").max_concurrency(1).build());
            let rt = support::current_thread();
            let a = start_on(&rt, pool, &dir, "A", first_run_hangs(&dir, "A", 1, 0));
            HANDLES.lock().unwrap().push(("A", a));
            expect(&dir, "T");
            let d = dir.clone();
            rt.block_on(async move {
                drop(tokio::task::spawn_blocking(move || {
                    support::until("the exit's run is over", || {
                        !lines(&d.join("exit_over")).is_empty()
                    });
                    let q = SmartAioPool::builder().name("Q").build();
                    let submitted = q
                        .blocking_submit(recorded(&d, "B", 2))
                        .map_err(|e| e.to_string());
                    submit_then_wait(&d, "T", "b", submitted);
                }));
                std::process::exit(0);
            });
        }
        // P (one place) runs A on rt (current-thread, not driven again); at the exit A's
        // re-run sleeps 1.5 s. Once it has started, a plain thread calls
        // `shutdown_timeout(300 ms)` on a runtime of its own ("plain-shutdown-timeout"), or
        // `wait()` on a plain executor, no runtime at all ("plain-wait").
        "plain-shutdown-timeout" | "plain-wait" => {
            let pool =
                POOL.get_or_init(|| SmartAioPool::builder().name("P").max_concurrency(1).build());
            let rt = support::current_thread();
            let a = start_on(&rt, pool, &dir, "A", first_run_hangs(&dir, "A", 1, 1500));
            HANDLES.lock().unwrap().push(("A", a));
            expect(&dir, "T");
            let d = dir.clone();
            let deadline = scenario == "plain-shutdown-timeout";
            std::thread::spawn(move || {
                support::until("A's re-run started at the exit", || ran(&d, "A") == 2);
                let pool = POOL.get().unwrap();
                let said = if deadline {
                    let report = support::current_thread()
                        .block_on(pool.shutdown_timeout(Duration::from_millis(300)));
                    format!("report {report:?}")
                } else {
                    support::plain_block_on(pool.wait());
                    "waited".to_string()
                };
                let a_done = HANDLES.lock().unwrap()[0].1.is_finished();
                say(&d, "T", "b", &format!("{said}, A finished: {a_done}"));
            });
            rt.block_on(async { std::process::exit(0) });
        }
        // P (one slot) runs A on rt1; B, submitted from rt2 and queued, is handed to a slot
        // on rt2 when A ends; rt2 is never driven again, so B has not started. A plain
        // thread waits in `b.blocking_wait()` when main calls `process::exit`.
        "handed-blocking-wait-rerun" | "handed-blocking-wait-norerun" => {
            let pool = POOL.get_or_init(|| {
                SmartAioPool::builder()
                    .name("P")
                    .max_concurrency(1)
                    .rerun_interrupted(scenario.ends_with("-rerun"))
                    .build()
            });
            let (rt1, rt2, b) =
                support::smart_handed_to_an_undriven_runtime(pool, recorded(&dir, "B", 2));
            expect(&dir, "T");
            let d = dir.clone();
            std::thread::spawn(move || {
                append(&d.join("b"), "waiting");
                let said = match b.blocking_wait() {
                    Ok(v) => format!("waited Ok({v})"),
                    Err(e) => format!("waited Err({:?})", e.cancel_reason()),
                };
                say(&d, "T", "b", &said);
            });
            support::until("T waits", || !lines(&dir.join("b")).is_empty());
            std::thread::sleep(Duration::from_millis(100));
            std::mem::forget((rt1, rt2));
            std::process::exit(0);
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// What a child process left: its exit code, stderr, and the lines of its files.
struct Played {
    code: Option<i32>,
    stderr: String,
    b: Vec<String>,
    runs: Vec<String>,
    handles: Vec<String>,
    stats: Vec<String>,
    hook: Vec<String>,
    b_rt: Vec<String>,
}

fn play(scenario: &str, secs: u64) -> Played {
    let child = run_child(scenario, secs);
    let p = Played {
        code: child.code,
        stderr: child.stderr.clone(),
        b: lines(&child.dir.join("b")),
        runs: lines(&child.dir.join("runs")),
        handles: lines(&child.dir.join("handles")),
        stats: lines(&child.dir.join("stats")),
        hook: lines(&child.dir.join("hook")),
        b_rt: lines(&child.dir.join("b_rt")),
    };
    let _ = std::fs::remove_dir_all(&child.dir);
    p
}

// ----- the tests -------------------------------------------------------------------------

fn a_submit_from_the_frozen_runtimes_thread_runs_at_the_exit(scenario: &str) {
    let p = play(scenario, 15);
    assert_eq!(
        p.code,
        Some(0),
        "the process never exited (killed after 15 s): B, submitted during the exit from \
         a thread of the runtime `exit` froze, was sent to that runtime. b: {:?} runs: {:?} \
         stderr: {}",
        p.b,
        p.runs,
        p.stderr
    );
    assert_eq!(
        p.b,
        ["accepted", "waited Ok(2)"],
        "B, submitted while the exit ran, should run; runs: {:?}",
        p.runs
    );
    assert_eq!(p.handles, ["A=Ok(1)"]);
    assert_eq!(
        p.b_rt,
        ["other", "before A's re-run ended"],
        "B ran on the runtime `exit` froze, or waited for A's re-run to end although P had \
         a free slot (its slot task was sent to the frozen runtime: finding 407)"
    );
}

/// A `spawn_blocking` thread of a current-thread runtime from whose `block_on` main called
/// `std::process::exit` (so the runtime is frozen: alive, never driven again) calls
/// `blocking_submit` while the exit runs the pool's tasks, then `blocking_wait`. The
/// README: "an at-exit hook runs what is left on a fresh runtime, and what its tasks, or
/// plain threads still going, submit to any such pool while it runs"; `blocking_submit`
/// is for "plain threads and `spawn_blocking`".
#[test]
fn a_spawn_blocking_threads_blocking_submit_during_the_exit_runs() {
    a_submit_from_the_frozen_runtimes_thread_runs_at_the_exit("spawn-blocking-blocking-submit");
}

/// The same with `try_submit`.
#[test]
fn a_spawn_blocking_threads_try_submit_during_the_exit_runs() {
    a_submit_from_the_frozen_runtimes_thread_runs_at_the_exit("spawn-blocking-try-submit");
}

/// The same with `Handle::current().block_on(pool.submit(..))`.
#[test]
fn a_spawn_blocking_threads_async_submit_during_the_exit_runs() {
    a_submit_from_the_frozen_runtimes_thread_runs_at_the_exit("spawn-blocking-async-submit");
}

/// The same from a plain thread that entered the frozen runtime (`Handle::enter`).
#[test]
fn an_entered_threads_blocking_submit_during_the_exit_runs() {
    a_submit_from_the_frozen_runtimes_thread_runs_at_the_exit("entered-blocking-submit");
}

/// Pinned: a plain thread waiting in `blocking_submit` for room in a full pool when
/// `process::exit` is called gets in once the exit's re-run frees the place (barging), and
/// its task runs while the exit's run goes on.
#[test]
fn a_plain_threads_waiting_blocking_submit_is_admitted_and_run_at_the_exit() {
    let p = play("plain-waiter-long", 20);
    assert_eq!(p.code, Some(0), "b: {:?} stderr: {}", p.b, p.stderr);
    assert_eq!(
        p.b,
        ["submitting", "accepted", "waited Ok(2)"],
        "the plain thread's submit, waiting since before the exit, should be admitted and \
         its task run; runs: {:?} stderr: {}",
        p.runs,
        p.stderr
    );
    assert_eq!(p.handles, ["A=Ok(1)", "L=Ok(5)"]);
    assert_eq!(
        p.stats,
        ["submitted=2 completed=2 cancelled=0 queued=0 running=0"]
    );
}

/// Pinned: a plain thread whose `submit_with(.., timeout(1 s))` (on a runtime of its own)
/// waits for room since before the exit, while the exit's re-run holds the pool's one
/// place for 1.5 s, times out at its deadline (its timer is on its own runtime).
#[test]
fn a_plain_threads_submit_timeout_fires_during_the_exit() {
    let p = play("plain-timeout", 20);
    assert_eq!(p.code, Some(0), "b: {:?} stderr: {}", p.b, p.stderr);
    assert_eq!(p.b.len(), 2, "b: {:?}", p.b);
    assert!(
        p.b[1].starts_with("TimedOut after "),
        "the submit should time out while the exit's re-run holds the place: {:?}",
        p.b
    );
    let ms: u128 = p.b[1]["TimedOut after ".len()..]
        .trim_end_matches(" ms")
        .parse()
        .unwrap();
    assert!(
        ms >= 1000,
        "the submit gave up after {ms} ms, before its 1 s timeout"
    );
    assert_eq!(p.handles, ["A=Ok(1)"]);
    assert_eq!(
        p.stats,
        ["submitted=1 completed=1 cancelled=0 queued=0 running=0"]
    );
}

/// Pinned: a plain thread in `blocking_wait` on a task interrupted by the exit returns the
/// value of its re-run at the exit.
#[test]
fn a_plain_threads_blocking_wait_returns_the_exits_rerun() {
    let p = play("plain-blocking-wait", 20);
    assert_eq!(p.code, Some(0), "b: {:?} stderr: {}", p.b, p.stderr);
    assert_eq!(p.b, ["waiting", "waited Ok(1)"], "stderr: {}", p.stderr);
    assert_eq!(
        p.stats,
        ["submitted=1 completed=1 cancelled=0 queued=0 running=0"]
    );
}

/// Finding 407: a grow (`set_max_concurrency(2)`) from a thread that entered the runtime
/// `exit` froze, while the exit's re-run of A (1.5 s) holds P's one place and B waits in
/// P's queue, starts B at once on the exit's runtime (before the fix its slot task went to
/// the frozen runtime, and B started only when A's re-run ended).
#[test]
fn a_grow_from_a_frozen_runtimes_thread_during_the_exit_starts_the_queued_task_at_once() {
    let p = play("grow-from-frozen-thread", 20);
    assert_eq!(p.code, Some(0), "b: {:?} stderr: {}", p.b, p.stderr);
    assert_eq!(
        p.b,
        ["queued before the grow: 1", "accepted", "waited Ok(2)"],
        "stderr: {}",
        p.stderr
    );
    assert_eq!(p.b_rt, ["other", "before A's re-run ended"]);
    assert_eq!(p.handles, ["A=Ok(1)"]);
}

/// Pinned: a grow (`set_max_concurrency(2)`) from a plain thread while the exit's re-run
/// of A holds P's one place admits the plain thread's waiting `blocking_submit` at once,
/// ahead of a frozen waiter (a task of the runtime `exit` froze), which never polls.
#[test]
fn a_grow_during_the_exit_admits_a_plain_waiter_ahead_of_a_frozen_one() {
    let p = play("grow-during-exit", 20);
    assert_eq!(p.code, Some(0), "b: {:?} stderr: {}", p.b, p.stderr);
    assert_eq!(
        p.b,
        [
            "submitting",
            "admitted with A running: true",
            "accepted",
            "waited Ok(2)"
        ],
        "stderr: {}",
        p.stderr
    );
    assert_eq!(p.handles, ["A=Ok(1)"]);
    assert_eq!(
        p.stats,
        ["submitted=2 completed=2 cancelled=0 queued=0 running=0"]
    );
}

/// After the exit's run (the crate's hook has returned), a later at-exit hook hands the
/// pool one last task with `blocking_submit` and waits for it with `blocking_wait`, with
/// the runtime `exit` froze (`process::exit` called inside its `block_on`) still alive.
/// Expected: the process exits (the crate docs, "Shutdown": every task submitted to the
/// pool completes before the process ends; the exit's run covers what plain threads
/// submit "while it runs"), and the later submit, after that run, is refused with
/// `Closed` (the SmartAioPool docs, "Shutdown").
/// Failed before the fix (the hook's `blocking_submit` was accepted for the frozen
/// runtime, its `blocking_wait` waited for ever): "hook-submit-empty: the process never
/// exited (killed after 15 s): a later at-exit hook's blocking_submit was accepted for a
/// runtime nothing drives, and its blocking_wait waited for ever. hook: ["accepted"]
/// runs: ["A"]", and the same for "hook-submit" (the exit had re-run A: runs
/// ["A", "A"]). Now both pools are closed once the exit's run is over: the submit
/// is refused with `Closed`.
#[test]
fn a_blocking_submit_from_a_later_exit_hook_does_not_hang_the_process() {
    for scenario in ["hook-submit-empty", "hook-submit"] {
        let p = play(scenario, 15);
        assert_eq!(
            p.code,
            Some(0),
            "{scenario}: the process never exited (killed after 15 s): a later at-exit \
             hook's blocking_submit was accepted for a runtime nothing drives, and its \
             blocking_wait waited for ever. hook: {:?} runs: {:?} stderr: {}",
            p.hook,
            p.runs,
            p.stderr
        );
        assert!(
            p.hook.len() == 1 && p.hook[0].starts_with("refused") && p.hook[0].contains("closed"),
            "{scenario}: the later hook's submit, after the exit's run, should be refused as \
             the pool is closed: {:?}",
            p.hook
        );
    }
}

/// Finding 409: a `spawn_blocking` thread of the runtime `exit` froze builds a
/// SmartAioPool of its own once the exit's run is over, and hands it a task with
/// `blocking_submit`: the new pool is closed, as the others are then, and the submit is
/// refused with `Closed`. Before the fix the new pool's home was the frozen runtime: the
/// task was accepted there and never ran, and the thread's `blocking_wait` never returned
/// (the process ended under it).
#[test]
fn a_pool_built_after_the_exits_run_by_a_frozen_runtimes_thread_refuses_its_submit() {
    let p = play("late-thread-builds", 15);
    assert_eq!(p.code, Some(0), "b: {:?} stderr: {}", p.b, p.stderr);
    assert!(
        p.b.len() == 1 && p.b[0].starts_with("refused") && p.b[0].contains("closed"),
        "a pool built after the exit's run should be closed: b: {:?} runs: {:?}",
        p.b,
        p.runs
    );
}

/// Pinned with finding 409: a later at-exit hook that builds a SmartAioPool of its own once
/// the exit's run is over (with A re-run at the exit, or with nothing to run) and hands it a
/// task with `blocking_submit`: the new pool is closed, as the others are then, and the
/// submit is refused with `Closed` (before the fix it was refused as `NoRuntime`: the hook
/// runs outside any runtime).
#[test]
fn a_pool_built_by_a_later_exit_hook_refuses_its_submit_and_does_not_hang_the_process() {
    for scenario in ["hook-builds-empty", "hook-builds"] {
        let p = play(scenario, 15);
        assert_eq!(
            p.code,
            Some(0),
            "{scenario}: the process never exited (killed after 15 s): the later hook's pool \
             accepted a task nothing runs. hook: {:?} runs: {:?} stderr: {}",
            p.hook,
            p.runs,
            p.stderr
        );
        assert!(
            p.hook.len() == 1 && p.hook[0].starts_with("refused") && p.hook[0].contains("closed"),
            "{scenario}: a pool built after the exit's run should be closed: {:?}",
            p.hook
        );
    }
}

/// Pinned (a probe of the end of the exit's run, 5 rounds): a plain thread waits in
/// `blocking_submit` for room in P (one place) since before the exit; nothing else keeps
/// the exit's run going once A's re-run ends. The submit must not be accepted for a task
/// that then never runs (admitted and run, or refused `Closed`).
#[test]
fn a_plain_threads_waiting_submit_is_not_accepted_and_lost_when_the_exits_run_ends() {
    for round in 0..5 {
        let p = play("plain-waiter", 15);
        assert_eq!(
            p.code,
            Some(0),
            "round {round}: b: {:?} stderr: {}",
            p.b,
            p.stderr
        );
        let accepted = p.b.iter().any(|l| l == "accepted");
        assert!(
            !accepted || p.runs.iter().any(|r| r == "B"),
            "round {round}: the plain thread's submit was accepted, but its task never ran \
             before the process exited: b: {:?} runs: {:?} handles: {:?} stats: {:?}",
            p.b,
            p.runs,
            p.handles,
            p.stats
        );
        eprintln!("round {round}: b: {:?} runs: {:?}", p.b, p.runs);
    }
}

/// Pinned: a plain thread's `shutdown_timeout(300 ms)` (on a runtime of its own) while the
/// exit's re-run of A sleeps 1.5 s abandons A at its deadline: the report says so, A's
/// handle says `Abandoned`, and the exit ends.
#[test]
fn a_plain_threads_shutdown_timeout_during_the_exit_abandons_the_rerun() {
    let p = play("plain-shutdown-timeout", 20);
    assert_eq!(p.code, Some(0), "b: {:?} stderr: {}", p.b, p.stderr);
    assert_eq!(
        p.b,
        ["report ShutdownReport { finished: 0, abandoned: 1 }, A finished: true"],
        "stderr: {}",
        p.stderr
    );
    assert_eq!(p.handles, ["A=Err(Some(Abandoned))"]);
    assert_eq!(
        p.stats,
        ["submitted=1 completed=0 cancelled=1 queued=0 running=0"]
    );
}

/// Pinned: a plain thread's `wait()` on a plain executor (no runtime) during the exit
/// returns once the exit's re-run of A has finished.
#[test]
fn a_plain_threads_wait_during_the_exit_returns_after_the_rerun() {
    let p = play("plain-wait", 20);
    assert_eq!(p.code, Some(0), "b: {:?} stderr: {}", p.b, p.stderr);
    assert_eq!(p.b, ["waited, A finished: true"], "stderr: {}", p.stderr);
    assert_eq!(p.handles, ["A=Ok(1)"]);
}

/// Pinned: a plain thread in `blocking_wait` on a task handed to a slot of a runtime not
/// driven since (so never started) gets its value once the exit runs it, with and without
/// re-runs (RELIABILITY.md, 341: "tasks that never started still run once").
#[test]
fn a_plain_threads_blocking_wait_on_a_handed_unstarted_task_returns_its_exit_run() {
    for scenario in ["handed-blocking-wait-rerun", "handed-blocking-wait-norerun"] {
        let p = play(scenario, 20);
        assert_eq!(
            p.code,
            Some(0),
            "{scenario}: b: {:?} stderr: {}",
            p.b,
            p.stderr
        );
        assert_eq!(
            p.b,
            ["waiting", "waited Ok(2)"],
            "{scenario}: the plain thread's blocking_wait should return B's value; stderr: {}",
            p.stderr
        );
        assert_eq!(p.runs, ["B"], "{scenario}: B runs once");
        assert_eq!(
            p.stats,
            ["submitted=2 completed=2 cancelled=0 queued=0 running=0"],
            "{scenario}"
        );
    }
}
