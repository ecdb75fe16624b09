//! The process exit with several pools at once (a helper's review, 2026-12-06;
//! RELIABILITY.md, 359–361): SmartAioPool's
//! at-exit run beside CommonAioPools, tasks of one pool submitting into another while the
//! exit runs (Smart -> Smart, Smart -> Common, Common -> Smart, a chain A -> B -> A),
//! after a plain `main` returns or `std::process::exit`, on multi-thread and
//! current-thread runtimes, and what the exit prints per pool. Each scenario plays in a
//! child process (see `support::run_child`).

mod support;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use nb_aiopool::{shutdown_all_common_aiopools, CommonAioPool, SmartAioPool, TaskHandle};
use support::{append, child_scenario, lines, play, unix_ms};

// ----- the child process ---------------------------------------------------------------

/// A handle of a CommonAioPool task, for a SmartAioPool task run at the exit to await.
static COMMON_HANDLE: Mutex<Option<TaskHandle<u32>>> = Mutex::new(None);

fn common(name: &str, c: usize) -> CommonAioPool {
    CommonAioPool::builder()
        .name(name)
        .max_concurrency(c)
        .max_queue_size(10)
        .build()
}

fn smart(name: &str, c: usize) -> SmartAioPool {
    SmartAioPool::builder()
        .name(name)
        .max_concurrency(c)
        .build()
}

/// A recipe whose first run records `"{name} start"` in `dir/runs` and then blocks its
/// worker thread in one poll for `secs`; a later run records `"{name} rerun"` and ends.
fn blocks_its_thread(
    dir: &Path,
    name: &'static str,
    secs: u64,
) -> impl Fn() -> std::future::Ready<()> + Send + Sync + 'static {
    let runs = dir.join("runs");
    let first = std::sync::atomic::AtomicBool::new(true);
    move || {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            append(&runs, &format!("{name} start"));
            std::thread::sleep(Duration::from_secs(secs));
        } else {
            append(&runs, &format!("{name} rerun"));
        }
        std::future::ready(())
    }
}

/// Pools A and B (SmartAioPools of one slot each) on a runtime of two workers: each runs a
/// task that blocks its worker in one poll for 30 s; then `process::exit` from the main
/// thread.
fn two_stuck_polls(dir: &Path) {
    let rt = support::multi_thread_of(2);
    let a = smart("stuck-a", 1);
    let b = smart("stuck-b", 1);
    rt.block_on(async {
        a.submit(blocks_its_thread(dir, "a", 30))
            .await
            .unwrap()
            .detach();
        b.submit(blocks_its_thread(dir, "b", 30))
            .await
            .unwrap()
            .detach();
    });
    support::until("both polls started", || lines(&dir.join("runs")).len() == 2);
    append(&dir.join("exit_at"), &unix_ms().to_string());
    std::mem::forget(rt);
    std::process::exit(0);
}

/// As a plain `#[tokio::main(flavor = "current_thread")]`: a CommonAioPool "late" and a
/// SmartAioPool, built in the order `order` says (`common-first`, `smart-first`, or
/// `at-exit`: the CommonAioPool is built by the Smart task, at the exit); the Smart task,
/// run at the exit, submits a task into the CommonAioPool that is still running when the
/// exit's run ends, then ends itself. `main` returns.
fn smart_submits_into_common_at_exit(dir: &Path, order: &str) {
    let rt = support::current_thread();
    rt.block_on(async {
        let (c, s) = match order {
            "common-first" => {
                let c = common("late", 1);
                (Some(c), smart("outer", 2))
            }
            "smart-first" => {
                let s = smart("outer", 2);
                (Some(common("late", 1)), s)
            }
            _ => (None, smart("outer", 2)),
        };
        let marks = dir.join("smart");
        s.submit(move || {
            let c = c.clone();
            let marks = marks.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let c = c.unwrap_or_else(|| common("late", 1));
                c.submit(tokio::time::sleep(Duration::from_secs(3600)))
                    .await
                    .unwrap()
                    .detach();
                append(&marks, "submitted");
            }
        })
        .await
        .unwrap()
        .detach();
    });
    drop(rt);
}

/// A -> B -> A: a task of SmartAioPool A runs a task in SmartAioPool B, which runs a task
/// in A and waits for it; the innermost sleeps 300 ms. All three are mid-run when the
/// main runtime ends (`main` returns, or `exit` from inside it).
fn chain(dir: &Path, multi: bool, exit_inside: bool) {
    let rt = if multi {
        support::multi_thread_of(2)
    } else {
        support::current_thread()
    };
    let a = smart("chain-a", 2);
    let b = smart("chain-b", 2);
    let d = dir.to_path_buf();
    rt.block_on(async move {
        let (a2, b2, d2) = (a.clone(), b.clone(), d.clone());
        a.submit(move || {
            let (a, b, d) = (a2.clone(), b2.clone(), d2.clone());
            async move {
                let (a3, d3) = (a.clone(), d.clone());
                let got = b
                    .run(move || {
                        let (a, d) = (a3.clone(), d3.clone());
                        async move {
                            let d4 = d.clone();
                            let v = a
                                .run(move || {
                                    let d = d4.clone();
                                    async move {
                                        append(&d.join("inner"), "start");
                                        tokio::time::sleep(Duration::from_millis(300)).await;
                                        append(&d.join("inner"), "end");
                                        3u32
                                    }
                                })
                                .await;
                            match v {
                                Ok(v) => v + 1,
                                Err(e) => {
                                    append(&d.join("errors"), &format!("B's run in A: {e}"));
                                    0
                                }
                            }
                        }
                    })
                    .await;
                match got {
                    Ok(v) => append(&d.join("outer"), &format!("got {v}")),
                    Err(e) => append(&d.join("errors"), &format!("A's run in B: {e}")),
                }
            }
        })
        .await
        .unwrap()
        .detach();
        let inner = d.join("inner");
        while lines(&inner).is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if exit_inside {
            std::process::exit(0);
        }
    });
    drop(rt);
}

/// A CommonAioPool task that submits a task into a SmartAioPool (detached), then never
/// ends; `main` (current-thread) returns while both run.
fn common_submits_into_smart(dir: &Path) {
    let rt = support::current_thread();
    let d = dir.to_path_buf();
    rt.block_on(async move {
        let c = common("submitter", 1);
        let s = smart("target", 2);
        let d2 = d.clone();
        c.submit(async move {
            let d3 = d2.clone();
            s.submit(move || {
                let d = d3.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    append(&d.join("smart"), "ran");
                }
            })
            .await
            .unwrap()
            .detach();
            append(&d2.join("common"), "submitted");
            std::future::pending::<()>().await
        })
        .await
        .unwrap()
        .detach();
        let marks = d.join("common");
        while lines(&marks).is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    drop(rt);
}

/// As a plain `#[tokio::main(flavor = "current_thread")]` that never yielded: CommonAioPool
/// C has task J queued, and `main` returns (the runtime's end cancels J); a SmartAioPool
/// task, never started, waits at the exit for J (`how`: its handle, or
/// `shutdown_all_common_aiopools`).
fn smart_waits_for_a_common_job_at_exit(dir: &Path, how: &str) {
    let rt = support::current_thread();
    let d = dir.to_path_buf();
    let how = how.to_string();
    rt.block_on(async move {
        let c = common("frozen-home", 2);
        let s = smart("waiter", 2);
        let dj = d.clone();
        let j = c
            .submit(async move {
                append(&dj.join("common"), "J ran");
                7u32
            })
            .await
            .unwrap();
        *COMMON_HANDLE.lock().unwrap() = Some(j);
        let ds = d.clone();
        s.submit(move || {
            let d = ds.clone();
            let how = how.clone();
            async move {
                append(&d.join("started"), "S");
                if how == "handle" {
                    let j = COMMON_HANDLE.lock().unwrap().take();
                    match j {
                        Some(j) => match j.await {
                            Ok(v) => append(&d.join("smart"), &format!("got {v}")),
                            Err(e) => {
                                append(&d.join("smart"), &format!("err {:?}", e.cancel_reason()))
                            }
                        },
                        None => append(&d.join("smart"), "no handle"),
                    }
                } else {
                    shutdown_all_common_aiopools().await;
                    append(&d.join("smart"), "shutdown returned");
                }
            }
        })
        .await
        .unwrap()
        .detach();
    });
    drop(rt);
}

/// A recipe that records `"{name} start"` in `dir/runs`, sleeps 1.5 s, records
/// `"{name} end"` and returns `v`.
fn sleeper(
    dir: &Path,
    name: &'static str,
    v: u32,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>> + Send + Sync + 'static
{
    let runs = dir.join("runs");
    move || {
        let runs = runs.clone();
        Box::pin(async move {
            append(&runs, &format!("{name} start"));
            tokio::time::sleep(Duration::from_millis(1500)).await;
            append(&runs, &format!("{name} end"));
            v
        })
    }
}

/// A recipe (a task of one pool) whose run, in one poll, submits `inner` into `other`
/// and waits for it there (`block_in_place` + `blocking_submit` + `blocking_wait`, the
/// way synchronous code calls into a pool), then records what it got in `dir/got`.
fn waits_in_one_poll_for(
    dir: &Path,
    name: &'static str,
    other: &SmartAioPool,
    inner: &'static str,
    v: u32,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync + 'static
{
    let dir = dir.to_path_buf();
    let other = other.clone();
    move || {
        let (dir, other) = (dir.clone(), other.clone());
        Box::pin(async move {
            append(&dir.join("runs"), &format!("{name} start"));
            let inner = sleeper(&dir, inner, v);
            let got = tokio::task::block_in_place(|| {
                other
                    .blocking_submit(inner)
                    .map_err(|e| e.to_string())?
                    .blocking_wait()
                    .map_err(|e| e.to_string())
            });
            append(&dir.join("got"), &format!("{name} {got:?}"));
        })
    }
}

/// SmartAioPools A and B on a runtime of two workers: X (in A) waits in one poll for Y
/// (in B), and Z (in B) for W (in A); Y and W sleep 1.5 s. `process::exit` from the main
/// thread while all four run.
fn crossed_waits(dir: &Path) {
    let rt = support::multi_thread_of(2);
    let a = smart("crossed-a", 4);
    let b = smart("crossed-b", 4);
    rt.block_on(async {
        a.submit(waits_in_one_poll_for(dir, "X", &b, "Y", 5))
            .await
            .unwrap()
            .detach();
        b.submit(waits_in_one_poll_for(dir, "Z", &a, "W", 6))
            .await
            .unwrap()
            .detach();
    });
    support::until("X, Y, Z and W started", || {
        lines(&dir.join("runs")).len() == 4
    });
    append(&dir.join("exit_at"), &unix_ms().to_string());
    std::mem::forget(rt);
    std::process::exit(0);
}

/// Two SmartAioPools named "dup" without re-runs and two CommonAioPools named "dup", each
/// with one task mid-run (a sleep) when `process::exit` is called inside a current-thread
/// runtime.
fn same_names(dir: &Path) {
    let rt = support::current_thread();
    let smarts: Vec<SmartAioPool> = (0..2)
        .map(|_| {
            SmartAioPool::builder()
                .name("dup")
                .max_concurrency(1)
                .rerun_interrupted(false)
                .build()
        })
        .collect();
    let commons: Vec<CommonAioPool> = (0..2).map(|_| common("dup", 1)).collect();
    let runs = dir.join("runs");
    rt.block_on(async move {
        for s in &smarts {
            let runs = runs.clone();
            s.submit(move || {
                let runs = runs.clone();
                async move {
                    append(&runs, "smart");
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            })
            .await
            .unwrap()
            .detach();
        }
        for c in &commons {
            let runs = runs.clone();
            c.submit(async move {
                append(&runs, "common");
                tokio::time::sleep(Duration::from_secs(3600)).await;
            })
            .await
            .unwrap()
            .detach();
        }
        while lines(&runs).len() < 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        std::process::exit(0);
    });
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = child_scenario();
    match scenario.as_str() {
        "two-stuck-polls" => two_stuck_polls(&dir),
        "crossed-waits" => crossed_waits(&dir),
        "same-names" => same_names(&dir),
        "common-first" | "smart-first" | "at-exit" => {
            smart_submits_into_common_at_exit(&dir, &scenario)
        }
        "chain-multi-return" => chain(&dir, true, false),
        "chain-current-return" => chain(&dir, false, false),
        "chain-current-exit" => chain(&dir, false, true),
        "chain-multi-exit" => chain(&dir, true, true),
        "common-into-smart" => common_submits_into_smart(&dir),
        "wait-handle" => smart_waits_for_a_common_job_at_exit(&dir, "handle"),
        "wait-shutdown-all" => smart_waits_for_a_common_job_at_exit(&dir, "shutdown"),
        other => panic!("unknown scenario {other}"),
    }
}

// ----- the tests -------------------------------------------------------------------------

/// What the user does: two SmartAioPools each have a task blocking its worker thread in
/// one long poll (a synchronous call) when the program calls `std::process::exit`.
/// What they expect: SmartAioPool's docs ("Shutdown"): "The two runs never overlap: a run
/// that `process::exit` finds inside a poll on another thread ... is run again only once
/// that poll has returned ...; one still in its poll after 5 s ... is not run again"
/// (since 359: "5 s after the exit began (one wait for all the pools)"); the README:
/// "(up to 5 s ...)". So the exit waits about 5 s for such polls, however
/// many pools have one. What happened (before the fix): "the exit waited 10015 ms for two
/// runs stuck in a poll, where the docs say a run still in its poll after 5 s is given
/// up: each pool waited 5 s of its own" (each pool's take-over had its own 5 s deadline,
/// one after the other; a run busy for 7 s in the second pool was even run again).
#[test]
fn two_pools_with_a_stuck_poll_each_do_not_double_the_exits_wait() {
    let p = play("two-stuck-polls", 40);
    let exit_at: u128 = p.lines("exit_at")[0].parse().unwrap();
    let took = unix_ms() - exit_at;
    assert_eq!(p.code, Some(0), "the process did not exit: {}", p.stderr);
    let stuck = p
        .stderr
        .lines()
        .filter(|l| l.contains("were still running at the process exit"))
        .count();
    assert_eq!(stuck, 2, "each pool's stuck run is reported: {}", p.stderr);
    assert!(
        took < 8_000,
        "the exit waited {took} ms for two runs stuck in a poll, where the docs say a \
         run still in its poll after 5 s is given up: each pool waited 5 s of its own"
    );
}

/// What the user does: `main` builds a CommonAioPool, then a SmartAioPool (or the
/// SmartAioPool only, whose task builds the CommonAioPool at the exit); a SmartAioPool
/// task left when `main` returns runs at the exit and submits a task into the
/// CommonAioPool that is still running when the exit's run ends (the exit runtime's end
/// cancels it). What they expect: the README ("SmartAioPool: no task lost"):
/// "`CommonAioPool` and `NoQueueAioPool` do not re-run anything, but the same exit path
/// prints a one-line warning to stderr with the count of tasks they lost". What happened
/// (before the fix): with the CommonAioPool built first, or at the exit, stderr was empty:
/// "common-first: the CommonAioPool task cancelled at the end of the exit's run was lost
/// without the exit's warning: stderr: \"\"" (with the SmartAioPool built first, the
/// line was there).
#[test]
fn a_common_task_lost_in_the_smart_exit_run_is_reported_whatever_the_build_order() {
    for scenario in ["smart-first", "common-first", "at-exit"] {
        let p = play(scenario, 30);
        assert_eq!(p.code, Some(0), "{scenario}: {}", p.stderr);
        assert_eq!(
            p.lines("smart"),
            ["submitted"],
            "{scenario}: the SmartAioPool task did not run at the exit: {}",
            p.stderr
        );
        assert!(
            p.stderr
                .lines()
                .any(|l| l.contains("CommonAioPool named \"late\"")
                    && l.contains("1 task(s) cancelled by a runtime shutdown")),
            "{scenario}: the CommonAioPool task cancelled at the end of the exit's run was \
             lost without the exit's warning: stderr: {:?}",
            p.stderr
        );
    }
}

fn check_chain(scenario: &str) {
    let p = play(scenario, 30);
    assert_eq!(p.code, Some(0), "{scenario}: hung or failed: {}", p.stderr);
    assert!(
        p.lines("errors").is_empty(),
        "{scenario}: {:?}",
        p.lines("errors")
    );
    assert!(
        p.lines("outer").contains(&"got 4".to_string()),
        "{scenario}: the outer task of the chain A -> B -> A never got its result at the \
         exit: outer {:?}, inner {:?}, stderr {}",
        p.lines("outer"),
        p.lines("inner"),
        p.stderr
    );
}

/// Pinned: a chain A -> B -> A of SmartAioPool tasks, each awaiting the next, all mid-run
/// when `main` returns (multi-thread and current-thread runtimes) or calls
/// `process::exit` from inside its runtime: the exit runs the chain again and the
/// outermost task gets its result ("what its tasks ... submit to any such pool while it
/// runs").
#[test]
fn pin_a_chain_a_b_a_mid_run_at_the_exit_completes() {
    for scenario in [
        "chain-multi-return",
        "chain-current-return",
        "chain-current-exit",
        "chain-multi-exit",
    ] {
        check_chain(scenario);
    }
}

/// Pinned: a CommonAioPool task that submitted a SmartAioPool task and never ends, when
/// `main` returns: the SmartAioPool task still runs (at the exit), and the CommonAioPool
/// task cancelled by the runtime's end gets its line in the exit report.
#[test]
fn pin_a_smart_task_submitted_by_a_common_task_runs_at_the_exit() {
    let p = play("common-into-smart", 30);
    assert_eq!(p.code, Some(0), "{}", p.stderr);
    assert_eq!(p.lines("smart"), ["ran"], "stderr: {}", p.stderr);
    assert!(
        p.stderr
            .lines()
            .any(|l| l.contains("CommonAioPool named \"submitter\"")),
        "stderr: {}",
        p.stderr
    );
}

/// Pinned: a CommonAioPool task J still queued when `main` returns is cancelled by the
/// runtime's end ("the end of one runtime cancels only the jobs submitted from it"); a
/// SmartAioPool task run at the exit that awaits J's handle is told so
/// (`RuntimeShutdown`), and one that calls `shutdown_all_common_aiopools` gets it back at
/// once, rather than either waiting for ever.
#[test]
fn pin_a_smart_task_at_the_exit_waiting_for_a_common_job_cancelled_when_main_returned() {
    for (scenario, want) in [
        ("wait-handle", "err Some(RuntimeShutdown)"),
        ("wait-shutdown-all", "shutdown returned"),
    ] {
        let p = play(scenario, 30);
        assert_eq!(
            p.code,
            Some(0),
            "{scenario}: hung or failed; the SmartAioPool task started: {:?}; stderr: {}",
            p.lines("started"),
            p.stderr
        );
        assert_eq!(p.lines("smart"), [want], "{scenario}: {}", p.stderr);
        assert!(p.lines("common").is_empty(), "{scenario}: J ran");
    }
}

/// What the user does: two SmartAioPools whose tasks call into each other from
/// synchronous code (`block_in_place`, `blocking_submit`, `blocking_wait`): X in A waits
/// for Y in B, Z in B for W in A; Y and W take 1.5 s. The program calls
/// `std::process::exit` while all four run. What they expect: SmartAioPool's docs
/// ("Shutdown"): the exit runs what is left, "and what they ... submit to any
/// `auto_shutdown` pool while it runs"; "a run that `process::exit` finds inside a poll
/// on another thread ... is run again only once that poll has returned, and not at all
/// if it ended there". Both polls can return (each waits for a 1.5 s task), so X and Z
/// both get their values, and the exit takes about 1.5 s. What happened (before the fix):
/// "a task waiting for another pool's task was given up by the exit (after 8010 ms),
/// although that task would have ended in 1.5 s: ... stderr: nb_aiopool: warning: 1
/// task(s) of SmartAioPool "crossed-b" were still running at the process exit ... their
/// handles say RuntimeShutdown": the exit held every start until all pools were taken
/// over, and each pool's take-over waited for its busy polls before the next one began,
/// so Z (in the pool taken over second) waited for W's re-run, which waited for Z's
/// take-over to end.
#[test]
fn crossed_waits_between_two_pools_at_the_exit_lose_no_task() {
    let p = play("crossed-waits", 40);
    let exit_at: u128 = p.lines("exit_at")[0].parse().unwrap();
    let took = unix_ms() - exit_at;
    assert_eq!(p.code, Some(0), "the process did not exit: {}", p.stderr);
    let mut got = p.lines("got");
    got.sort();
    assert!(
        !p.stderr.contains("were still running at the process exit"),
        "a task waiting for another pool's task was given up by the exit (after {took} \
         ms), although that task would have ended in 1.5 s: got {got:?}, runs {:?}, \
         stderr: {}",
        p.lines("runs"),
        p.stderr
    );
    assert_eq!(got, ["X Ok(5)", "Z Ok(6)"], "stderr: {}", p.stderr);
    assert!(took < 4_000, "the exit took {took} ms");
}

/// Pinned: pools that share a name are each counted at the exit: two SmartAioPools named
/// "dup" without re-runs, each with a run cut by `process::exit`, and two CommonAioPools
/// named "dup", each with a task still running: the exit's lines add up to two cut runs
/// and two unfinished CommonAioPool tasks (none is lost from the report because another
/// pool has its name).
#[test]
fn pin_pools_of_one_name_are_each_counted_at_the_exit() {
    let p = play("same-names", 30);
    assert_eq!(p.code, Some(0), "{}", p.stderr);
    let count = |l: &str, after: &str| -> u64 {
        l.split(after)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let cut: u64 = p
        .stderr
        .lines()
        .filter(|l| l.contains("SmartAioPool \"dup\" were interrupted by the process exit"))
        .map(|l| count(l, "warning: "))
        .sum();
    let unfinished: u64 = p
        .stderr
        .lines()
        .filter(|l| l.contains("CommonAioPool named \"dup\""))
        .map(|l| count(l, "had "))
        .sum();
    assert_eq!(
        (cut, unfinished),
        (2, 2),
        "the exit's report lost a pool that shares its name with another: {}",
        p.stderr
    );
}
