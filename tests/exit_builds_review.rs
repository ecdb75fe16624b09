//! Review of finding 409's fix (RELIABILITY.md, 409; commit 1357fe0): SmartAioPools built
//! while the exit's run goes on (2026-12-07). Each scenario plays in a child process (see
//! `support::run_child`); an `atexit` hook registered before the crate's (so it runs after
//! it) writes what the threads saw once the exit's run is over.
//!
//! - A pool built during the exit's run whose `rate_limit` window never reopens: its tasks
//!   held back are cancelled (as those of a pool listed before the exit), but the exit's
//!   "were never started" warning read only the pools it listed as its run began
//!   (`finish_at_exit`'s `pools`), so they went unreported (finding 410: failed before its
//!   fix); the same pool built before the exit is the control (a pin).
//! - Pins: plain threads and `spawn_blocking` threads of the frozen runtime that keep
//!   building pools and feeding each one task (`blocking_submit`, `blocking_wait`) all
//!   through the exit, with a busy exit (a re-run) and with nothing to run: every submit
//!   accepted is run, every later one refused `Closed`, and nothing hangs (each build may
//!   meet any phase of the exit: before, between the run's two listings, after `started`,
//!   between its two waits, after the close).

// Some blocks hand back handles, to await elsewhere.
#![allow(clippy::async_yields_async)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nb_aiopool::{SmartAioPool, TaskHandle};
use support::{append, child_scenario, first_run_hangs, lines, ran, recorded, run_child, start_on};

// ----- the child process ---------------------------------------------------------------

static DIR: OnceLock<PathBuf> = OnceLock::new();
static HANDLES: Mutex<Vec<(&'static str, TaskHandle<u32>)>> = Mutex::new(Vec::new());

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

/// Registered before the crate's at-exit hook, so it runs after it: waits (up to 5 s) for
/// the threads named in `expect` to append their names to `done`, writes those that did
/// not to `missing`, then what the handles say.
extern "C" fn record_at_exit() {
    let Some(dir) = DIR.get() else { return };
    append(&dir.join("exit_over"), "yes");
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let expected = lines(&dir.join("expect"));
    loop {
        let done = lines(&dir.join("done"));
        let missing: Vec<_> = expected.iter().filter(|e| !done.contains(e)).collect();
        if missing.is_empty() {
            break;
        }
        if std::time::Instant::now() >= end {
            for m in missing {
                append(&dir.join("missing"), m);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    support::record_handles(dir, &HANDLES, |v| format!("Ok({v})"));
}

fn expect(dir: &Path, thread: &str) {
    append(&dir.join("expect"), thread);
}

/// Q: `rate_limit(1, Duration::MAX)` (one start, ever), one slot; three tasks submitted
/// with `blocking_submit` (Q1, Q2, Q3): Q1 runs, Q2 and Q3 are held back for ever.
fn q_with_three_tasks(dir: &Path) {
    let q = SmartAioPool::builder()
        .name("Q")
        .max_concurrency(1)
        .rate_limit(1, Duration::MAX)
        .build();
    for (name, v) in [("Q1", 1), ("Q2", 2), ("Q3", 3)] {
        let h = q.blocking_submit(recorded(dir, name, v)).unwrap();
        HANDLES.lock().unwrap().push((name, h));
    }
}

/// A builder thread: until a build meets a closed pool (the exit's run is over), builds a
/// pool, hands it one task with `blocking_submit` and waits for it (`blocking_wait`)
/// (a plain thread's submit before the exit's run is refused `NoRuntime`: it tries again);
/// counts what it saw in `seen` ("ok N", then "closed" or the other refusal), then says
/// it is done.
fn build_and_feed_until_closed(dir: &Path, thread: String) {
    let mut ok = 0u32;
    let mut other = Vec::new();
    let end = loop {
        let q = SmartAioPool::builder().name("B").max_concurrency(1).build();
        match q.blocking_submit(|| async { 7u32 }) {
            Ok(h) => match h.blocking_wait() {
                Ok(7) => ok += 1,
                r => other.push(format!("{:?}", r.map_err(|e| e.cancel_reason()))),
            },
            Err(e) if e.to_string().contains("closed") => break "closed".to_string(),
            // A plain thread before the exit's run: no runtime to run it yet.
            Err(e) if e.to_string().contains("no tokio runtime") => {}
            Err(e) => break format!("refused {e}"),
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    append(
        &dir.join("seen"),
        &format!("{thread} ok>0={} other={other:?} end={end}", ok > 0),
    );
    append(&dir.join("done"), &thread);
}

#[test]
#[ignore = "run by the tests below, as a child process"]
fn child() {
    let (scenario, dir) = child_scenario();
    DIR.set(dir.clone()).unwrap();
    // Before any pool registers the crate's hook: ours then runs after it.
    assert_eq!(unsafe { atexit(record_at_exit) }, 0);
    match scenario.as_str() {
        // P runs A on rt (current-thread, frozen by the `exit` called from its
        // `block_on`); A's re-run at the exit sleeps 600 ms. "late": a plain thread waits
        // until A's re-run has started (the exit's run has started its pools), then builds
        // Q and submits its three tasks. "early": Q is built and fed before the exit.
        "window-late" | "window-early" => {
            let p = SmartAioPool::builder().name("P").build();
            let rt = support::current_thread();
            let a = start_on(&rt, &p, &dir, "A", first_run_hangs(&dir, "A", 1, 600));
            HANDLES.lock().unwrap().push(("A", a));
            if scenario == "window-early" {
                // From inside a runtime that stays alive (its workers go on).
                let mt = support::multi_thread();
                {
                    let _in = mt.handle().enter();
                    q_with_three_tasks(&dir);
                }
                support::until("Q1 ran", || ran(&dir, "Q1") == 1);
                std::mem::forget(mt);
            } else {
                expect(&dir, "T");
                let d = dir.clone();
                std::thread::spawn(move || {
                    support::until("A's re-run started at the exit", || ran(&d, "A") == 2);
                    q_with_three_tasks(&d);
                    append(&d.join("done"), "T");
                });
            }
            rt.block_on(async { std::process::exit(0) });
        }
        // Four plain threads and four `spawn_blocking` threads of rt (current-thread,
        // frozen by `exit`) build and feed pools all through the exit (see
        // `build_and_feed_until_closed`). "busy": P's A is re-run at the exit (300 ms);
        // "idle": P has nothing to run.
        "builders-busy" | "builders-idle" => {
            let p = SmartAioPool::builder().name("P").build();
            let rt = support::current_thread();
            if scenario == "builders-busy" {
                let a = start_on(&rt, &p, &dir, "A", first_run_hangs(&dir, "A", 1, 300));
                HANDLES.lock().unwrap().push(("A", a));
            }
            for i in 0..4 {
                let name = format!("plain{i}");
                expect(&dir, &name);
                let d = dir.clone();
                std::thread::spawn(move || build_and_feed_until_closed(&d, name));
            }
            rt.block_on(async {
                for i in 0..4 {
                    let name = format!("blocking{i}");
                    expect(&dir, &name);
                    let d = dir.clone();
                    drop(tokio::task::spawn_blocking(move || {
                        build_and_feed_until_closed(&d, name)
                    }));
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
                std::process::exit(0);
            });
        }
        other => panic!("unknown scenario {other}"),
    }
}

// ----- the parent's side ------------------------------------------------------------------

struct Played {
    code: Option<i32>,
    stderr: String,
    handles: Vec<String>,
    seen: Vec<String>,
    missing: Vec<String>,
}

fn play(scenario: &str, secs: u64) -> Played {
    let child = run_child(scenario, secs);
    let p = Played {
        code: child.code,
        stderr: child.stderr.clone(),
        handles: lines(&child.dir.join("handles")),
        seen: lines(&child.dir.join("seen")),
        missing: lines(&child.dir.join("missing")),
    };
    let _ = std::fs::remove_dir_all(&child.dir);
    p
}

/// The control (a pin): Q, fed before the exit, `rate_limit(1, Duration::MAX)`: Q1 runs,
/// Q2 and Q3 are cancelled (`RuntimeShutdown`) and the exit prints that 2 tasks of Q were
/// never started (the crate docs: "a task that a rate_limit window that never ends holds
/// back ... is cancelled at the exit, with a warning").
#[test]
fn a_never_ending_window_of_a_pool_fed_before_the_exit_is_reported() {
    let p = play("window-early", 15);
    assert_eq!(p.code, Some(0), "{}", p.stderr);
    assert_eq!(
        p.handles,
        [
            "A=Ok(1)",
            "Q1=Ok(1)",
            "Q2=Err(Some(RuntimeShutdown))",
            "Q3=Err(Some(RuntimeShutdown))"
        ],
        "{}",
        p.stderr
    );
    assert!(
        p.stderr
            .contains("2 task(s) of SmartAioPool \"Q\" were never started"),
        "{}",
        p.stderr
    );
}

/// The same Q built and fed by a plain thread while the exit's run goes on (after it has
/// started its pools): 409's fix takes it over and runs Q1 on the exit's runtime, and Q2
/// and Q3 are cancelled as above, with the warning. Finding 410, failed before its fix: the
/// exit's warning loop read only the pools listed as its run began, so nothing said so
/// (the handles said `RuntimeShutdown`, silently); Q, its handle dropped and its tasks
/// ended, also leaves the list before the run is over.
#[test]
fn a_never_ending_window_of_a_pool_built_during_the_exits_run_is_reported() {
    let p = play("window-late", 15);
    assert_eq!(p.code, Some(0), "{}", p.stderr);
    assert_eq!(
        p.handles,
        [
            "A=Ok(1)",
            "Q1=Ok(1)",
            "Q2=Err(Some(RuntimeShutdown))",
            "Q3=Err(Some(RuntimeShutdown))"
        ],
        "{}",
        p.stderr
    );
    assert!(
        p.stderr
            .contains("2 task(s) of SmartAioPool \"Q\" were never started"),
        "Q's two tasks held back for ever were cancelled without the exit's warning; \
         stderr: {:?}",
        p.stderr
    );
}

fn builders_through_the_exit(scenario: &str) {
    for round in 0..3 {
        let p = play(scenario, 20);
        eprintln!("{scenario} round {round}: {:?}", p.seen);
        assert_eq!(
            p.code,
            Some(0),
            "round {round}: the process never exited (killed after 20 s); seen: {:?} \
             stderr: {}",
            p.seen,
            support::stderr_head(&p.stderr)
        );
        assert!(
            p.missing.is_empty(),
            "round {round}: threads that never met a closed pool (a blocking_wait hung?): \
             {:?}; seen: {:?}",
            p.missing,
            p.seen
        );
        assert_eq!(p.seen.len(), 8, "round {round}: {:?}", p.seen);
        for s in &p.seen {
            assert!(
                s.ends_with("other=[] end=closed"),
                "round {round}: every accepted task runs, the end is Closed: {:?}",
                p.seen
            );
            // Some task of each thread ran: through a busy exit every thread builds pools
            // while the run goes on (a fix that closed those at their build would pass the
            // check above); through an idle one, a plain thread may meet only the closed
            // phase (its submits before the exit are refused `NoRuntime`).
            if scenario == "builders-busy" || s.starts_with("blocking") {
                assert!(
                    s.contains("ok>0=true"),
                    "round {round}: no task of this thread ran: {:?}",
                    p.seen
                );
            }
        }
        if scenario == "builders-busy" {
            assert_eq!(p.handles, ["A=Ok(1)"], "round {round}");
        }
    }
}

/// Pinned: pools built and fed by plain threads and frozen `spawn_blocking` threads all
/// through a busy exit.
#[test]
fn pools_built_and_fed_all_through_a_busy_exit_run_every_task_and_end_closed() {
    builders_through_the_exit("builders-busy");
}

/// Pinned: the same through an exit with nothing of its own to run (its early close, then
/// the run the builders' tasks make it start).
#[test]
fn pools_built_and_fed_all_through_an_idle_exit_run_every_task_and_end_closed() {
    builders_through_the_exit("builders-idle");
}
