//! The exit guarantee (issue 3), tested the only way it can be: in child processes.
//!
//! Each test re-runs this test binary as a child, selecting the ignored `child` test and a
//! scenario through environment variables. The child submits tasks that each append a
//! line to a file, then leaves `main` in one of the ways a program can; the parent counts
//! the lines.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool::{smart_run, CommonAioPool, SmartAioPool};
use support::append;

const TASKS: usize = 30;
const SLOTS: usize = 10;

/// Submits `TASKS` recipes that record their start, sleep, optionally hop through a
/// spawned tokio task, and record their end; returns once `SLOTS` of them are running.
async fn submit_tasks(pool: &SmartAioPool, dir: &Path, spawn_inside: bool) {
    let dir = Arc::new(dir.to_path_buf());
    for i in 0..TASKS {
        let dir = dir.clone();
        pool.submit(move || {
            let dir = dir.clone();
            async move {
                append(&dir.join("starts"), &i.to_string());
                tokio::time::sleep(Duration::from_millis(50)).await;
                if spawn_inside && i % 2 == 0 {
                    // A task spawned by the recipe needs a live runtime with timers.
                    tokio::spawn(async { tokio::time::sleep(Duration::from_millis(5)).await })
                        .await
                        .unwrap();
                }
                append(&dir.join("done"), &i.to_string());
            }
        })
        .await
        .unwrap()
        .detach();
    }
    // Until SLOTS tasks have really started (a slot counts as busy from the moment it is
    // given a task, before its first poll).
    let started = || {
        std::fs::read_to_string(dir.join("starts"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    while pool.busy_worker_count() < SLOTS || started() < SLOTS {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn smart_pool() -> SmartAioPool {
    SmartAioPool::builder().max_concurrency(SLOTS).build()
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let scenario = std::env::var("NB_EXIT_SCENARIO").expect("NB_EXIT_SCENARIO");
    let dir = PathBuf::from(std::env::var("NB_EXIT_DIR").expect("NB_EXIT_DIR"));
    match scenario.as_str() {
        "main-returns" => {
            // What `#[tokio::main]` expands to: the runtime is dropped when main returns.
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let pool = smart_pool();
                submit_tasks(&pool, &dir, true).await;
            });
        }
        "process-exit" => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let pool = smart_pool();
                submit_tasks(&pool, &dir, true).await;
                std::process::exit(0);
            });
        }
        "process-exit-current-thread" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let pool = smart_pool();
                submit_tasks(&pool, &dir, false).await;
                std::process::exit(0);
            });
        }
        "process-exit-no-rerun" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let pool = SmartAioPool::builder()
                    .max_concurrency(SLOTS)
                    .rerun_interrupted(false)
                    .name("mailer")
                    .build();
                submit_tasks(&pool, &dir, false).await;
                std::process::exit(0);
            });
        }
        "smart-run" => {
            smart_run(async {
                let pool = smart_pool();
                submit_tasks(&pool, &dir, true).await;
            });
            append(&dir.join("after"), "smart_run returned");
        }
        "common-pool-left-running" => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let pool = CommonAioPool::new(2, 100);
                for _ in 0..10 {
                    pool.submit(tokio::time::sleep(Duration::from_secs(3600)))
                        .await
                        .unwrap()
                        .detach();
                }
            });
        }
        // A no-queue pool resized, then dropped with tasks running.
        "resized-no-queue-dropped" => {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let pool = nb_aiopool::NoQueueAioPool::new(2);
                pool.set_max_concurrency(5);
                for _ in 0..3 {
                    pool.submit(tokio::time::sleep(Duration::from_secs(3600)))
                        .await
                        .unwrap()
                        .detach();
                }
            });
        }
        // Alike pools, one per runtime (a `block_on` per request), dropped with tasks
        // cut off by their runtime's end.
        "many-common-pools-dropped" => {
            for _ in 0..50 {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let pool = CommonAioPool::builder()
                        .max_concurrency(1)
                        .name("per-request")
                        .build();
                    for _ in 0..3 {
                        pool.submit(tokio::time::sleep(Duration::from_secs(3600)))
                            .await
                            .unwrap()
                            .detach();
                    }
                });
            }
        }
        other => panic!("unknown scenario {other}"),
    }
}

struct Outcome {
    starts: BTreeMap<usize, usize>,
    done: BTreeMap<usize, usize>,
    stderr: String,
    dir: PathBuf,
}

fn run_child(scenario: &str) -> Outcome {
    let dir =
        std::env::temp_dir().join(format!("nb_aiopool_exit_{scenario}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NB_EXIT_SCENARIO", scenario)
        .env("NB_EXIT_DIR", &dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "child {scenario} failed: {:?}\nstdout: {}\nstderr: {stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let count = |name: &str| {
        let mut m = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            for line in text.lines() {
                *m.entry(line.parse::<usize>().unwrap()).or_insert(0) += 1;
            }
        }
        m
    };
    Outcome {
        starts: count("starts"),
        done: count("done"),
        stderr,
        dir,
    }
}

fn assert_every_task_done(o: &Outcome, exactly_once: bool) {
    let ids: Vec<usize> = o.done.keys().copied().collect();
    assert_eq!(ids, (0..TASKS).collect::<Vec<_>>(), "tasks missing at exit");
    if exactly_once {
        assert!(
            o.done.values().all(|&n| n == 1),
            "a task finished twice: {:?}",
            o.done
        );
    }
    let _ = std::fs::remove_dir_all(&o.dir);
}

#[test]
fn tasks_complete_when_tokio_main_returns() {
    let o = run_child("main-returns");
    assert_every_task_done(&o, true);
    // The SLOTS tasks that were mid-run when the runtime went away ran again from the
    // recipe (at least once delivery).
    let starts: usize = o.starts.values().sum();
    assert_eq!(starts, TASKS + SLOTS, "starts: {:?}", o.starts);
}

#[test]
fn tasks_complete_when_the_program_calls_process_exit() {
    let o = run_child("process-exit");
    assert_every_task_done(&o, false);
    let done: usize = o.done.values().sum();
    assert!(done <= TASKS + SLOTS, "{:?}", o.done);
}

#[test]
fn tasks_complete_on_process_exit_from_a_current_thread_runtime() {
    let o = run_child("process-exit-current-thread");
    assert_every_task_done(&o, true);
}

#[test]
fn smart_run_returns_after_every_task() {
    let o = run_child("smart-run");
    let after = std::fs::read_to_string(o.dir.join("after")).unwrap();
    assert_eq!(after.trim(), "smart_run returned");
    // Under smart_run nothing is interrupted: every task runs exactly once.
    assert!(o.starts.values().all(|&n| n == 1), "{:?}", o.starts);
    assert_every_task_done(&o, true);
}

#[test]
fn unfinished_common_pool_tasks_are_reported_at_exit() {
    let o = run_child("common-pool-left-running");
    assert!(
        o.stderr
            .contains("nb_aiopool: warning: a CommonAioPool (max_concurrency 2)")
            && o.stderr
                .contains("10 task(s) cancelled by a runtime shutdown")
            && o.stderr.contains("shutdown_all_common_aiopools().await"),
        "stderr: {}",
        o.stderr
    );
    let _ = std::fs::remove_dir_all(&o.dir);
}

/// The warning names the pool's size when it was dropped, not the builder's (finding 52:
/// after `set_max_concurrency` it said 2 here).
#[test]
fn the_exit_warning_names_the_size_after_a_resize() {
    let o = run_child("resized-no-queue-dropped");
    assert!(
        o.stderr
            .contains("nb_aiopool: warning: a NoQueueAioPool (max_concurrency 5)")
            && o.stderr
                .contains("3 task(s) cancelled by a runtime shutdown"),
        "stderr: {}",
        o.stderr
    );
    let _ = std::fs::remove_dir_all(&o.dir);
}

/// Alike pools dropped with lost tasks share one line of the report (and one entry in the
/// list kept for it, which grew by one per pool).
#[test]
fn alike_dropped_pools_are_reported_in_one_line() {
    let o = run_child("many-common-pools-dropped");
    let warnings: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.starts_with("nb_aiopool: warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "stderr: {}", o.stderr);
    assert!(
        warnings[0].contains("50 dropped CommonAioPools named \"per-request\" (max_concurrency 1)")
            && warnings[0].contains("150 task(s) cancelled by a runtime shutdown"),
        "stderr: {}",
        o.stderr
    );
    let _ = std::fs::remove_dir_all(&o.dir);
}

/// `rerun_interrupted(false)`: at exit, the tasks that never started run once; the ones
/// cut mid-run are not run again, and the exit hook says how many.
#[test]
fn without_reruns_interrupted_tasks_are_reported_not_repeated() {
    let o = run_child("process-exit-no-rerun");
    assert!(
        o.starts.values().all(|&n| n == 1),
        "a task started twice: {:?}",
        o.starts
    );
    assert_eq!(o.starts.len(), TASKS, "{:?}", o.starts);
    // The first SLOTS tasks were mid-run on the frozen runtime; the others ran at exit.
    let done: Vec<usize> = o.done.keys().copied().collect();
    assert_eq!(done, (SLOTS..TASKS).collect::<Vec<_>>(), "{:?}", o.done);
    assert!(
        o.stderr.contains(&format!(
            "{SLOTS} task(s) of SmartAioPool \"mailer\" were interrupted"
        )),
        "stderr: {}",
        o.stderr
    );
    let _ = std::fs::remove_dir_all(&o.dir);
}
