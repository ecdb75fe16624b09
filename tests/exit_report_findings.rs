//! Regression tests of a review of the fixes of findings 228–244 (394d1f2, 4b2a009,
//! be02b46; RELIABILITY.md, findings 246–247): the exit report's lines when stderr is a broken pipe, and the count of tasks a
//! never-reopening rate window holds back before its first start. Child processes, as in
//! `errors_and_docs_findings3.rs`.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs this binary's ignored `child` test playing `scenario` with its stderr a pipe whose
/// reading end is closed at once (`2>&1 | head -0`): every write there fails (EPIPE).
/// Returns the exit code (`None`: killed by a signal, or still running after `secs`).
fn run_child_with_a_broken_stderr(scenario: &str, dir: &std::path::Path, secs: u64) -> Option<i32> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NB_CHILD_SCENARIO", scenario)
        .env("NB_CHILD_DIR", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // the reader went away
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Finding 246. The exit report printed with `eprintln!`, which panics when stderr is a broken pipe. The
/// hook's `catch_unwind` catches that, then says so with `eprintln!` again, outside it, in
/// the `extern "C"` function the C runtime's `atexit` calls: a panic that cannot unwind,
/// so the process aborts (SIGABRT instead of main's exit code 0), and the hooks after it,
/// the SmartAioPool take-over that was to run the unfinished tasks, never run.
#[test]
fn a_broken_stderr_at_exit_neither_aborts_nor_skips_the_smart_pools_exit_run() {
    let dir = std::env::temp_dir().join(format!("nb_aiopool_rf241_stderr_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let code = run_child_with_a_broken_stderr("broken-stderr", &dir, 30);
    let done = support::lines(&dir.join("done"));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        code,
        Some(0),
        "the process did not exit with main's code (None: a signal, SIGABRT)"
    );
    assert_eq!(
        done,
        vec!["smart".to_string()],
        "the SmartAioPool task unfinished at the exit did not run"
    );
}

/// Finding 247. 242's count read whether the window never reopens from its first start, so
/// before any start (the jobs were submitted on a runtime not driven since) it counted
/// none held back: with a window of one start ever and three tasks, the report said "3
/// unfinished task(s)" and advised `pool.shutdown().await` "to wait for them", which would
/// wait for ever for the two that can never start.
#[test]
fn queued_tasks_before_a_never_reopening_windows_first_start_are_counted_held_back() {
    for kind in ["common", "no-queue"] {
        let pool = format!("unstarted-{kind}-pool");
        let c = support::run_child(&format!("unstarted-{kind}"), 30);
        let _ = std::fs::remove_dir_all(&c.dir);
        assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
        let lines: Vec<&str> = c.stderr.lines().filter(|l| l.contains(&pool)).collect();
        for line in &lines {
            assert!(
                !(line.contains("to wait for them")
                    && (line.contains("shutdown().await") || line.contains("wait().await"))),
                "{kind}: the exit report advises a wait that would never end: {line}"
            );
        }
        assert!(
            lines
                .iter()
                .any(|l| l.contains("2 task(s) never started") && l.contains("rate_limit")),
            "{kind}: the two tasks beyond the window's only start are not counted held \
             back: {lines:?}"
        );
    }
}

#[test]
#[ignore = "a child process of the tests in this file"]
fn child() {
    let (scenario, dir) = support::child_scenario();
    match scenario.split_once('-').unwrap() {
        ("broken", "stderr") => {
            let rt = support::multi_thread();
            // A CommonAioPool first, a task of it still running at the exit: the report
            // has a line for it (reports run after every pool's exit work, RELIABILITY.md,
            // 360).
            let common = support::common_local(1, 0);
            rt.block_on(async {
                common
                    .submit(std::future::pending::<()>())
                    .await
                    .unwrap()
                    .detach();
            });
            std::mem::forget(common);
            // Then a SmartAioPool with a task the exit take-over is to finish.
            let smart = nb_aiopool::SmartAioPool::builder()
                .max_concurrency(1)
                .build();
            let done = dir.join("done");
            rt.block_on(async {
                smart
                    .submit(move || {
                        let done = done.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            support::append(&done, "smart");
                        }
                    })
                    .await
                    .unwrap()
                    .detach();
                std::process::exit(0);
            });
        }
        ("unstarted", kind) => {
            let name = format!("{scenario}-pool");
            let rt = support::current_thread();
            let pool = match kind {
                "common" => support::Pool::Common(
                    nb_aiopool::CommonAioPool::builder()
                        .name(&name)
                        .max_concurrency(2)
                        .max_queue_size(10)
                        .rate_limit(1, Duration::MAX)
                        .process_wide(false)
                        .build(),
                ),
                _ => support::Pool::NoQueue(
                    nb_aiopool::NoQueueAioPool::builder()
                        .name(&name)
                        .max_concurrency(3)
                        .rate_limit(1, Duration::MAX)
                        .process_wide(false)
                        .build(),
                ),
            };
            {
                // Submitted under the runtime, which is never driven afterwards: no job
                // starts, no start is spent.
                let _in = rt.enter();
                for _ in 0..3 {
                    match &pool {
                        support::Pool::Common(p) => p.try_submit(async {}).ok().unwrap().detach(),
                        support::Pool::NoQueue(p) => p.try_submit(async {}).ok().unwrap().detach(),
                        support::Pool::Smart(_) => unreachable!(),
                    }
                }
            }
            std::mem::forget(pool);
            std::mem::forget(rt);
        }
        other => panic!("unknown scenario {other:?}"),
    }
}
