//! A task a slot took and never started goes back to its place in the queue (its priority,
//! then its submit order) when its slot is dropped with its runtime, or taken over at the
//! process exit (RELIABILITY.md, 347); an interrupted run still goes first. Before, both
//! put it at the queue's front, ahead of a higher priority queued since.
//!
//! The scenario, on a one-slot SmartAioPool: A runs on rt1; B (priority 0), submitted from
//! rt2, is queued and handed to a slot on rt2 when A ends; rt2 is not driven again, so B
//! has not started (`support::smart_handed_to_an_undriven_runtime`); C (priority 5) is
//! submitted from rt3 and queued. The exit test re-runs this binary as a child process
//! (`support::run_child`).

// The scenario hands back handles, to await elsewhere.
#![allow(clippy::async_yields_async)]

mod support;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use nb_aiopool::{SmartAioPool, SubmitOptions, TaskHandle};
use support::{append, child_scenario, lines, run_child, within};

type Recipe = Box<dyn Fn() -> Pin<Box<dyn Future<Output = u32> + Send>> + Send + Sync>;

/// A recipe that appends `name` to the file `runs` at each run and returns `value`.
fn recorded(runs: &Path, name: &'static str, value: u32) -> Recipe {
    let runs = runs.to_owned();
    Box::new(move || {
        append(&runs, name);
        Box::pin(async move { value })
    })
}

/// The pool of the scenario: one slot, re-runs as `rerun` says.
fn one_slot(rerun: bool) -> SmartAioPool {
    SmartAioPool::builder()
        .name("taken")
        .max_concurrency(1)
        .rerun_interrupted(rerun)
        .build()
}

/// The scenario up to C queued; returns B's and C's handles, rt1, rt2 and rt3.
fn b_taken_c_queued(
    pool: &SmartAioPool,
    runs: &Path,
) -> (
    TaskHandle<u32>,
    TaskHandle<u32>,
    [tokio::runtime::Runtime; 3],
) {
    let (rt1, rt2, b) = support::smart_handed_to_an_undriven_runtime(pool, recorded(runs, "B", 2));
    assert!(lines(runs).is_empty(), "B has not started");
    let rt3 = support::current_thread();
    let c = rt3.block_on(async {
        let opts = SubmitOptions::new().priority(5);
        pool.submit_with(recorded(runs, "C", 3), opts)
            .await
            .unwrap()
    });
    assert_eq!(pool.stats().queued, 1, "C is queued");
    (b, c, [rt1, rt2, rt3])
}

/// The user drops rt2 (the runtime of B's slot, which never polled it) and drives rt3.
/// `SubmitOptions::priority`: "Higher runs first"; "A task taken for a slot that never
/// started it (its slot dropped with its runtime, or the exit's) goes back to its place
/// by priority and submit order." Failed before the fix: "rerun_interrupted(true): B,
/// taken and never started, ran before C, queued with a higher priority" (`left: ["B",
/// "C"]`): B, put back at the queue's front, ran before C of priority 5.
#[test]
fn a_task_whose_slot_is_dropped_unstarted_goes_back_behind_a_higher_priority() {
    for rerun in [true, false] {
        let dir = tempdir("runtime_end", rerun);
        let runs = dir.join("runs");
        let pool = one_slot(rerun);
        let (b, c, [rt1, rt2, rt3]) = b_taken_c_queued(&pool, &runs);
        // rt1 is idle (A ended there); its end leaves only rt3 to run the queue.
        drop(rt1);
        drop(rt2);
        rt3.block_on(async {
            assert_eq!(within("C", c).await.unwrap(), 3);
            assert_eq!(within("B", b).await.unwrap(), 2);
        });
        assert_eq!(
            lines(&runs),
            ["C", "B"],
            "rerun_interrupted({rerun}): B, taken and never started, ran before C, queued \
             with a higher priority"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The same, with `process::exit` called while rt2 is alive and not driven (the exit's
/// take-over queues B again). The crate docs: tasks that never started run at the exit;
/// `SubmitOptions::priority`: queued tasks keep their priority order. Failed before the
/// fix: "exit-rerun: B, taken and never started, ran at the exit before C, queued with a
/// higher priority", `left: ["B", "C"]`.
#[test]
fn a_task_the_exit_finds_unstarted_goes_back_behind_a_higher_priority() {
    for scenario in ["exit-rerun", "exit-norerun"] {
        let child = run_child(scenario, 30);
        let runs = lines(&child.dir.join("runs"));
        let _ = std::fs::remove_dir_all(&child.dir);
        assert_eq!(
            child.code,
            Some(0),
            "the child process did not exit cleanly: {}",
            child.stderr
        );
        assert_eq!(
            runs,
            ["C", "B"],
            "{scenario}: B, taken and never started, ran at the exit before C, queued with \
             a higher priority"
        );
    }
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = child_scenario();
    let runs = dir.join("runs");
    let pool = one_slot(scenario == "exit-rerun");
    let (_b, _c, _runtimes) = b_taken_c_queued(&pool, &runs);
    // B and C run at the exit, on the exit's runtime, before the process ends.
    std::process::exit(0);
}

/// A fresh directory for one in-process scenario.
fn tempdir(name: &str, rerun: bool) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "nb_aiopool_taken_{name}_{rerun}_{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
