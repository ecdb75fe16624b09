//! The process exit of SmartAioPools built with flow-control options (a review of
//! 2026-12-07): a rate window at the exit (one that reopens, one that never does), the
//! order of priorities, a cancel-on-error group, and submitters waiting for room when the
//! exit comes. Each scenario plays in a child process (this binary's ignored `child` test,
//! see `support::run_child`), bounded by the parent's deadline; an `atexit` hook
//! registered before the crate's own (so run after it) records what the handles and the
//! pool's counters say once the exit's run is over.
//!
//! `a_rate_window_held_by_a_frozen_single_worker_runtime_does_not_hang_the_exit` failed
//! before the fix of finding 402 (the exit hung: the rate timer went to the runtime
//! `process::exit` froze); the other tests pin behaviour that held already.

mod support;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nb_aiopool::{SmartAioPool, SubmitOptions, TaskHandle};
use support::{append, child_scenario, run_child};

// ----- the child process ---------------------------------------------------------------

static DIR: OnceLock<PathBuf> = OnceLock::new();
static POOL: OnceLock<SmartAioPool> = OnceLock::new();
/// Handles to read once the exit's run is over, by name.
static HANDLES: Mutex<Vec<(&'static str, TaskHandle<u32>)>> = Mutex::new(Vec::new());

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

/// Registered before the crate's at-exit hook, so it runs after it: writes what each
/// handle says and the pool's counters.
extern "C" fn record_at_exit() {
    let Some(dir) = DIR.get() else { return };
    // A plain thread's submit answered by the exit's run hears of it on its own thread:
    // its answer is waited for (2 s at most), so that it is recorded before the process
    // ends.
    if dir.join("expect_c").exists() {
        let end = std::time::Instant::now() + Duration::from_secs(2);
        let answered = || {
            support::lines(&dir.join("ev"))
                .iter()
                .any(|l| l.starts_with("C ended") || l.starts_with("C refused"))
        };
        while !answered() && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    support::record_handles(dir, &HANDLES, |v| format!("Ok({v})"));
    if let Some(pool) = POOL.get() {
        support::record_exit_stats(dir, pool);
    }
}

type Run<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// A recipe that appends `name` to `runs` (and the time to `ran_at`) and returns `value`.
fn recorded(
    dir: &std::path::Path,
    name: &'static str,
    value: u32,
) -> impl Fn() -> Run<u32> + Send + Sync + 'static {
    let runs = dir.join("runs");
    let at = dir.join("ran_at");
    move || {
        append(&runs, name);
        append(&at, &format!("{name} {}", support::unix_ms()));
        Box::pin(async move { value })
    }
}

/// As [`recorded`], returning `Ok(value)`, or `Err` if `fail`, after `ms` milliseconds.
fn recorded_result(
    dir: &std::path::Path,
    name: &'static str,
    value: u32,
    fail: bool,
    ms: u64,
) -> impl Fn() -> Run<Result<u32, String>> + Send + Sync + 'static {
    let runs = dir.join("runs");
    move || {
        append(&runs, name);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if fail {
                Err(format!("{name} failed"))
            } else {
                Ok(value)
            }
        })
    }
}

fn mark_exit(dir: &std::path::Path) {
    append(&dir.join("exit_at"), &support::unix_ms().to_string());
}

fn push(name: &'static str, h: TaskHandle<u32>) {
    HANDLES.lock().unwrap().push((name, h));
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = child_scenario();
    DIR.set(dir.clone()).unwrap();
    // Before any pool registers the crate's hook: ours then runs after it.
    assert_eq!(unsafe { atexit(record_at_exit) }, 0);
    match scenario.as_str() {
        // A rate-limited pool (`rate_limit(1, 300 ms)`) used from a task of a multi-thread
        // runtime of `workers` worker threads: A runs and ends (its start fills the
        // window for 300 ms), B and C are queued behind it, and the task calls
        // `process::exit` on its worker thread. With one worker, that runtime is alive and
        // never driven again; with two, its other worker goes on.
        "frozen-worker-rate-1" | "frozen-worker-rate-2" => {
            let workers = if scenario.ends_with('1') { 1 } else { 2 };
            POOL.get_or_init(|| {
                SmartAioPool::builder()
                    .name("rated")
                    .max_concurrency(4)
                    .rate_limit(1, Duration::from_millis(300))
                    .build()
            });
            let rt = support::multi_thread_of(workers);
            rt.block_on(async move {
                tokio::spawn(async move {
                    let pool = POOL.get().unwrap();
                    assert_eq!(pool.run(recorded(&dir, "A", 1)).await.unwrap(), 1);
                    for (name, v) in [("B", 2), ("C", 3)] {
                        push(name, pool.submit(recorded(&dir, name, v)).await.unwrap());
                    }
                    mark_exit(&dir);
                    std::process::exit(0);
                })
                .await
                .unwrap();
            });
            unreachable!("the task exits the process");
        }
        // The same with the task submitting from a current-thread runtime frozen by
        // `process::exit` inside its `block_on`, while the pool also knows a multi-thread
        // runtime of one worker frozen the same way (its worker is parked in a poll that
        // never returns): the exit's timer must go to a runtime that runs.
        "frozen-ct-and-stuck-mt-rate" => {
            let pool = POOL.get_or_init(|| {
                SmartAioPool::builder()
                    .name("rated")
                    .max_concurrency(4)
                    .rate_limit(1, Duration::from_millis(300))
                    .build()
            });
            // The pool learns of a 1-worker runtime whose worker then blocks for good in
            // a task of its own (not the pool's).
            let mt = support::multi_thread_of(1);
            mt.block_on(async {
                assert_eq!(pool.run(recorded(&dir, "W", 0)).await.unwrap(), 0);
            });
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            mt.spawn(async move {
                tx.send(()).unwrap();
                std::thread::sleep(Duration::from_secs(3600));
            });
            rx.recv().unwrap();
            std::mem::forget(mt);
            let rt = support::current_thread();
            rt.block_on(async {
                assert_eq!(pool.run(recorded(&dir, "A", 1)).await.unwrap(), 1);
                for (name, v) in [("B", 2), ("C", 3)] {
                    push(name, pool.submit(recorded(&dir, name, v)).await.unwrap());
                }
                mark_exit(&dir);
                std::process::exit(0);
            });
            unreachable!("main exits the process");
        }
        // `rate_limit(3, Duration::MAX)`, one slot: A ran (one start spent); then B, C, D
        // and E are queued with priorities 0, 5, 1 and 9 from a current-thread runtime
        // that `process::exit`, called inside its `block_on`, never drives again. Two
        // starts are left, for E and C.
        "max-window-priorities" => {
            let pool = POOL.get_or_init(|| {
                SmartAioPool::builder()
                    .name("ever")
                    .max_concurrency(1)
                    .rate_limit(3, Duration::MAX)
                    .build()
            });
            let rt = support::current_thread();
            rt.block_on(async {
                assert_eq!(pool.run(recorded(&dir, "A", 1)).await.unwrap(), 1);
                for (name, v, p) in [("B", 2, 0), ("C", 3, 5), ("D", 4, 1), ("E", 5, 9)] {
                    let opts = SubmitOptions::new().priority(p);
                    push(
                        name,
                        pool.submit_with(recorded(&dir, name, v), opts)
                            .await
                            .unwrap(),
                    );
                }
                mark_exit(&dir);
                std::process::exit(0);
            });
            unreachable!("main exits the process");
        }
        // `rate_limit(1, Duration::MAX)`, one slot, a queue of one: A ran (the only
        // start), B and D are queued (held back for ever: the pool's two places), and a plain thread waits in
        // `blocking_submit_with` (timeout 3 s) for room for C when `process::exit` comes
        // (inside a `block_on` of a current-thread runtime, never driven again). The
        // take-over cancels B and D; C is then admitted, or refused: either way, the exit ends
        // and the thread hears an answer well before its 3 s.
        "max-window-plain-waiter" => {
            let pool = POOL.get_or_init(|| {
                SmartAioPool::builder()
                    .name("ever")
                    .max_concurrency(1)
                    .max_queue_size(1)
                    .rate_limit(1, Duration::MAX)
                    .build()
            });
            let rt = support::current_thread();
            rt.block_on(async {
                assert_eq!(pool.run(recorded(&dir, "A", 1)).await.unwrap(), 1);
                push("B", pool.submit(recorded(&dir, "B", 2)).await.unwrap());
                push("D", pool.submit(recorded(&dir, "D", 4)).await.unwrap());
                assert_eq!(pool.stats().queued, 2, "B and D are held back");
            });
            std::fs::write(dir.join("expect_c"), "").unwrap();
            let d = dir.clone();
            std::thread::spawn(move || {
                let pool = POOL.get().unwrap();
                event(&d, "C submit began");
                let opts = SubmitOptions::new().timeout(Duration::from_secs(3));
                match pool.blocking_submit_with(recorded(&d, "C", 3), opts) {
                    Ok(h) => {
                        event(&d, "C admitted");
                        let said =
                            format!("{:?}", h.blocking_wait().map_err(|e| e.cancel_reason()));
                        event(&d, &format!("C ended {said}"));
                    }
                    Err(e) => event(&d, &format!("C refused {:?}", e.kind())),
                }
            });
            support::until("the plain thread waits for room", || {
                !support::lines(&dir.join("ev")).is_empty()
            });
            std::thread::sleep(Duration::from_millis(100));
            rt.block_on(async {
                mark_exit(&dir);
                std::process::exit(0);
            });
            unreachable!("main exits the process");
        }
        // A cancel-on-error group of a one-slot pool with `rate_limit(1, 200 ms)` (or
        // `rate_limit(1, Duration::MAX)`, "-max-window"): X (fails
        // after 50 ms), Y and Z are queued from a current-thread runtime that
        // `process::exit` (inside its `block_on`) never drives again. At the exit X runs
        // and fails; "the first task that fails aborts every other task of the group ...
        // whether or not the group is being joined": Y and Z must not run.
        "group-cancel-on-error-rate" | "group-cancel-on-error-max-window" => {
            let per = if scenario.ends_with("max-window") {
                Duration::MAX
            } else {
                Duration::from_millis(200)
            };
            let pool = POOL.get_or_init(|| {
                SmartAioPool::builder()
                    .name("group")
                    .max_concurrency(1)
                    .rate_limit(1, per)
                    .build()
            });
            let rt = support::current_thread();
            rt.block_on(async {
                let mut group = pool.group().cancel_on_error(true);
                for (name, fail) in [("X", true), ("Y", false), ("Z", false)] {
                    group
                        .submit(recorded_result(&dir, name, 7, fail, 50))
                        .await
                        .unwrap();
                }
                // The group stays alive (not dropped: `process::exit` drops nothing).
                let group = Box::leak(Box::new(group));
                let _ = group;
                mark_exit(&dir);
                std::process::exit(0);
            });
            unreachable!("main exits the process");
        }
        // `weight_capacity(10)`, 4 slots: R (weight 5) is inside one synchronous poll of
        // 30 s on a worker of a 2-worker runtime when `main` calls `process::exit`
        // (outside the runtime, whose workers go on); H (weight 10) is queued, then L
        // (weight 1). The exit waits 5 s for R's poll, then gives R up ("not once given
        // up at that deadline": its weight is free). H then runs, then L: "a heavy task at
        // the head of the queue waits for room and is not overtaken by lighter ones".
        "weight-head-busy-run" => {
            let pool = POOL.get_or_init(|| {
                SmartAioPool::builder()
                    .name("weighted")
                    .max_concurrency(4)
                    .weight_capacity(10)
                    .build()
            });
            let rt = support::multi_thread_of(2);
            let runs = dir.join("runs");
            rt.block_on(async {
                let r = pool
                    .submit_with(
                        move || {
                            append(&runs, "R");
                            Box::pin(async {
                                std::thread::sleep(Duration::from_secs(30));
                                0u32
                            }) as Run<u32>
                        },
                        SubmitOptions::new().weight(5),
                    )
                    .await
                    .unwrap();
                support::appended(dir.join("runs")).await;
                for (name, v, w) in [("H", 2, 10), ("L", 3, 1)] {
                    let opts = SubmitOptions::new().weight(w);
                    push(
                        name,
                        pool.submit_with(recorded(&dir, name, v), opts)
                            .await
                            .unwrap(),
                    );
                }
                assert_eq!(pool.stats().queued, 2, "H and L wait for R's weight");
                push("R", r);
            });
            support::exit_from_main(&dir, rt);
        }
        // As "frozen-ct-rate" below, in an elastic pool (`min_workers(0)`) with a key
        // limit beside the rate window: B and C of one key ("k", `max_per_key(1)`).
        "frozen-ct-rate-elastic-keyed" | "frozen-ct-rate" => {
            let pool = POOL.get_or_init(|| {
                let b = SmartAioPool::builder()
                    .name("rated")
                    .max_concurrency(4)
                    .rate_limit(1, Duration::from_millis(300));
                if scenario == "frozen-ct-rate" {
                    b.build()
                } else {
                    b.min_workers(0)
                        .idle_timeout(Duration::from_millis(10))
                        .max_per_key(1)
                        .build()
                }
            });
            let rt = support::current_thread();
            rt.block_on(async {
                assert_eq!(pool.run(recorded(&dir, "A", 1)).await.unwrap(), 1);
                for (name, v) in [("B", 2), ("C", 3)] {
                    let opts = SubmitOptions::new().key("k");
                    push(
                        name,
                        pool.submit_with(recorded(&dir, name, v), opts)
                            .await
                            .unwrap(),
                    );
                }
                mark_exit(&dir);
                std::process::exit(0);
            });
            unreachable!("main exits the process");
        }
        // A map stream of a SmartAioPool (2 slots, 2 queued, `rate_limit(1, 100 ms)`,
        // `max_per_key(1)`, every input of key "k") over 0..10, read for one result; then
        // `process::exit` inside the `block_on` of its current-thread runtime (the stream
        // alive, never polled again). Every input the stream pulled has its task accepted
        // (the stream pulls no more than the pool can hold), and each such task must run at
        // the exit.
        "map-stream-mid-flight" => {
            use futures_util::StreamExt;
            let pool = POOL.get_or_init(|| {
                SmartAioPool::builder()
                    .name("mapped")
                    .max_concurrency(2)
                    .max_queue_size(2)
                    .rate_limit(1, Duration::from_millis(100))
                    .max_per_key(1)
                    .build()
            });
            let rt = support::current_thread();
            rt.block_on(async {
                let pulled = dir.join("pulled");
                let runs = dir.join("runs");
                let mut stream = pool
                    .map_unordered(futures_util::stream::iter(0..10u32), move |i| {
                        append(&pulled, &i.to_string());
                        let runs = runs.clone();
                        move || {
                            append(&runs, &i.to_string());
                            Box::pin(async move { i }) as Run<u32>
                        }
                    })
                    .with_options(|_| SubmitOptions::new().key("k"));
                let first = stream.next().await.unwrap().unwrap();
                append(&dir.join("first"), &first.to_string());
                let stream = Box::leak(Box::new(stream));
                let _ = stream;
                mark_exit(&dir);
                std::process::exit(0);
            });
            unreachable!("main exits the process");
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// In a child process: records `"{what} {unix ms}"` in `dir/ev`.
fn event(dir: &std::path::Path, what: &str) {
    append(&dir.join("ev"), &format!("{what} {}", support::unix_ms()));
}

// ----- the tests -----------------------------------------------------------------------

/// A child played to its end, its files read, its directory removed.
struct Ran {
    code: Option<i32>,
    stderr: String,
    runs: Vec<String>,
    handles: Vec<String>,
    stats: Vec<String>,
    ev: Vec<String>,
    exit_at: Option<u128>,
    ran_at: Vec<String>,
    secs: u64,
}

fn play(scenario: &str, secs: u64) -> Ran {
    let c = run_child(scenario, secs);
    let read = |f: &str| support::lines(&c.dir.join(f));
    let ran = Ran {
        code: c.code,
        stderr: c.stderr.clone(),
        runs: read("runs"),
        handles: read("handles"),
        stats: read("stats"),
        ev: read("ev"),
        exit_at: read("exit_at").first().and_then(|l| l.parse().ok()),
        ran_at: read("ran_at"),
        secs,
    };
    let _ = std::fs::remove_dir_all(&c.dir);
    ran
}

impl Ran {
    /// Fails with what the child did if it did not exit with 0 before its deadline.
    fn exited(&self, what: &str) {
        assert!(
            self.code.is_some(),
            "{what}: the process never exited (killed after {} s): runs {:?}, stderr {:?}",
            self.secs,
            self.runs,
            self.stderr
        );
        assert_eq!(self.code, Some(0), "{what}: stderr {}", self.stderr);
    }

    /// Milliseconds from the exit's start to the run of `name`.
    fn ran_after_exit(&self, name: &str) -> Option<u128> {
        let at: u128 = self
            .ran_at
            .iter()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())?;
        Some(at.saturating_sub(self.exit_at?))
    }
}

/// `rate_limit(1, 300 ms)`, B and C queued behind A's start when a task on the only worker
/// of a multi-thread runtime calls `std::process::exit` (a `#[tokio::main]` on a one-core
/// machine, whose signal task calls `process::exit` as `shutdown_all_smart_aiopools`'s
/// docs show). The docs: every task of an `auto_shutdown` pool completes before the
/// process ends; a window that reopens only delays starts ("a task that a rate_limit
/// window that never ends holds back" is the only rate case not covered). B and C should
/// run 300 ms apart and the process exit within a second or so.
///
/// Failed before the fix (402) in 7 of 7 rounds: the child killed at its deadline, `runs
/// ["A"]`, B never started.
#[test]
fn a_rate_window_held_by_a_frozen_single_worker_runtime_does_not_hang_the_exit() {
    let r = play("frozen-worker-rate-1", 8);
    r.exited("frozen-worker-rate-1");
    assert_eq!(r.runs, ["A", "B", "C"], "{}", r.stderr);
    assert_eq!(r.handles, ["B=Ok(2)", "C=Ok(3)"], "{}", r.stderr);
    assert_eq!(r.stats, ["completed=3 cancelled=0 unfinished=0"]);
    let c = r.ran_after_exit("C").unwrap();
    assert!(c < 3000, "C started {c} ms after the exit began");
}

/// The control of the test above (a pin): the same with two workers, one of which goes on
/// after the other called `process::exit`, so that a timer armed on that runtime fires.
#[test]
fn a_rate_window_at_the_exit_of_a_two_worker_runtime_lets_its_tasks_run() {
    let r = play("frozen-worker-rate-2", 15);
    r.exited("frozen-worker-rate-2");
    assert_eq!(r.runs, ["A", "B", "C"], "{}", r.stderr);
    assert_eq!(r.handles, ["B=Ok(2)", "C=Ok(3)"], "{}", r.stderr);
    assert_eq!(r.stats, ["completed=3 cancelled=0 unfinished=0"]);
}

/// `rate_limit(1, 300 ms)`: B and C queued from a current-thread runtime that
/// `process::exit` froze, while the pool also knows a one-worker multi-thread runtime
/// whose worker is stuck in a synchronous poll. The exit's rate timer must be armed where
/// something runs it.
#[test]
fn a_rate_window_at_the_exit_ignores_a_known_multi_thread_runtime_whose_worker_is_stuck() {
    let r = play("frozen-ct-and-stuck-mt-rate", 15);
    r.exited("frozen-ct-and-stuck-mt-rate");
    assert_eq!(r.runs, ["W", "A", "B", "C"], "{}", r.stderr);
    assert_eq!(r.handles, ["B=Ok(2)", "C=Ok(3)"], "{}", r.stderr);
}

/// `rate_limit(3, Duration::MAX)` ("at most 3 starts, ever"), one start spent before the
/// exit, four tasks queued with priorities 0, 5, 1, 9. `SubmitOptions::priority`: "Higher
/// runs first"; queued tasks keep their priority order at the exit. The two starts left
/// go to E (9) and C (5); B and D are cancelled (`RuntimeShutdown`) with the warning that
/// two tasks never started; the counters agree.
#[test]
fn a_window_that_never_reopens_spends_its_last_starts_by_priority_at_the_exit() {
    let r = play("max-window-priorities", 15);
    r.exited("max-window-priorities");
    assert_eq!(r.runs, ["A", "E", "C"], "{}", r.stderr);
    assert_eq!(
        r.handles,
        [
            "B=Err(Some(RuntimeShutdown))",
            "C=Ok(3)",
            "D=Err(Some(RuntimeShutdown))",
            "E=Ok(5)"
        ],
        "{}",
        r.stderr
    );
    assert_eq!(r.stats, ["completed=3 cancelled=2 unfinished=0"]);
    assert!(
        r.stderr
            .contains("2 task(s) of SmartAioPool \"ever\" were never started"),
        "{}",
        r.stderr
    );
}

/// `rate_limit(1, Duration::MAX)`, spent; B and D queued (held back for ever) fill the pool;
/// a plain thread waits in `blocking_submit_with` (3 s timeout) when `process::exit`
/// comes. The exit must end (not wait for ever for a task that can never start), and the
/// thread must get an answer before its deadline: C admitted and then cancelled as held
/// back (counted in the warning), or refused `Closed`; never accepted and left pending.
#[test]
fn a_plain_submitter_waiting_behind_tasks_held_back_for_ever_gets_an_answer_at_the_exit() {
    let r = play("max-window-plain-waiter", 15);
    r.exited("max-window-plain-waiter");
    assert_eq!(r.runs, ["A"], "nothing but A may start: {}", r.stderr);
    assert_eq!(
        r.handles,
        [
            "B=Err(Some(RuntimeShutdown))",
            "D=Err(Some(RuntimeShutdown))"
        ],
        "{}",
        r.stderr
    );
    let c: Vec<&String> = r.ev.iter().filter(|l| !l.starts_with("C submit")).collect();
    let exit_at = r.exit_at.expect("the exit's time");
    let before: Vec<&&String> = c
        .iter()
        .filter(|l| l.rsplit(' ').next().and_then(|t| t.parse::<u128>().ok()) < Some(exit_at))
        .collect();
    assert!(
        before.is_empty(),
        "the plain thread's submit was answered before the exit: {before:?} (runs {:?})",
        r.runs
    );
    let answered = c.iter().any(|l| {
        l.starts_with("C ended Err(Some(RuntimeShutdown))") || l.starts_with("C refused Closed")
    });
    assert!(
        answered,
        "the plain thread's submit got no answer, or a wrong one: {c:?}, stderr {}",
        r.stderr
    );
    assert!(
        !c.iter().any(|l| l.starts_with("C refused TimedOut")),
        "the plain thread's submit timed out: {c:?}"
    );
}

/// A cancel-on-error group, at the exit: X fails, Y and Z (held behind it by the rate
/// window) must be aborted, not run ("the first task that fails aborts every other task
/// of the group ... This happens inside the pool, whether or not the group is being
/// joined"; `std::process::exit` drops nothing, so the group's tasks are finished at the
/// exit).
#[test]
fn a_cancel_on_error_group_trips_at_the_exit_and_its_held_tasks_do_not_run() {
    let r = play("group-cancel-on-error-rate", 15);
    r.exited("group-cancel-on-error-rate");
    assert_eq!(r.runs, ["X"], "Y and Z ran after X failed: {}", r.stderr);
    assert_eq!(
        r.stats,
        ["completed=1 cancelled=2 unfinished=0"],
        "{}",
        r.stderr
    );
}

/// A pin: `rate_limit(1, 300 ms)`, B and C queued from a current-thread runtime frozen by
/// `process::exit` inside its `block_on`; plain, and in an elastic pool (`min_workers(0)`,
/// workers retired after 10 ms) with `max_per_key(1)` for B and C's key. Both run at the
/// exit, a window apart, and the process exits.
#[test]
fn a_rate_window_at_the_exit_of_a_frozen_current_thread_runtime_lets_its_tasks_run() {
    for scenario in ["frozen-ct-rate", "frozen-ct-rate-elastic-keyed"] {
        let r = play(scenario, 15);
        r.exited(scenario);
        assert_eq!(r.runs, ["A", "B", "C"], "{scenario}: {}", r.stderr);
        assert_eq!(
            r.handles,
            ["B=Ok(2)", "C=Ok(3)"],
            "{scenario}: {}",
            r.stderr
        );
        assert_eq!(
            r.stats,
            ["completed=3 cancelled=0 unfinished=0"],
            "{scenario}"
        );
        let (b, c) = (
            r.ran_after_exit("B").unwrap(),
            r.ran_after_exit("C").unwrap(),
        );
        assert!(
            c >= b + 250,
            "{scenario}: B at {b} ms, C at {c} ms: less than a window apart"
        );
    }
}

/// A pin: `weight_capacity(10)`; R (weight 5) busy in a 30 s synchronous poll when `main`
/// calls `process::exit`; H (weight 10) queued, then L (weight 1). The exit gives R up
/// after its 5 s wait (warning, `RuntimeShutdown`), and its weight with it; H runs, and L
/// (which R's weight left room for all along) does not overtake H.
#[test]
fn at_the_exit_a_heavy_head_waits_for_a_busy_runs_weight_and_is_not_overtaken() {
    let r = play("weight-head-busy-run", 25);
    r.exited("weight-head-busy-run");
    assert_eq!(r.runs, ["R", "H", "L"], "{}", r.stderr);
    assert_eq!(
        r.handles,
        ["H=Ok(2)", "L=Ok(3)", "R=Err(Some(RuntimeShutdown))"],
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("were still running at the process exit"),
        "{}",
        r.stderr
    );
    let h = r.ran_after_exit("H").unwrap();
    assert!(
        (4500..9000).contains(&h),
        "H started {h} ms after the exit began"
    );
}

/// A pin: a map stream (rate window, key limit) read for one result, then `process::exit`
/// with the stream alive. Every input it pulled (its task accepted) runs exactly once by
/// the end of the exit; nothing pulled is lost.
#[test]
fn the_tasks_of_a_map_stream_mid_flight_all_run_at_the_exit() {
    let c = run_child("map-stream-mid-flight", 15);
    let read = |f: &str| support::lines(&c.dir.join(f));
    let (mut pulled, mut runs, first) = (read("pulled"), read("runs"), read("first"));
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(
        c.code,
        Some(0),
        "killed after 15 s, or failed: {}",
        c.stderr
    );
    assert_eq!(first.len(), 1);
    assert!(pulled.len() >= 2, "the stream pulled {pulled:?}");
    pulled.sort();
    runs.sort();
    assert_eq!(runs, pulled, "each pulled input runs once: {}", c.stderr);
}

/// The same under `rate_limit(1, Duration::MAX)`: X takes the window's one start at the
/// exit and fails; Y and Z, held back, are aborted by the group's trip ("they resolve to
/// `Aborted`"), which comes first: they are not reported as held back by the window.
#[test]
fn a_cancel_on_error_group_trips_at_the_exit_before_a_window_that_never_reopens_cancels() {
    let r = play("group-cancel-on-error-max-window", 15);
    r.exited("group-cancel-on-error-max-window");
    assert_eq!(r.runs, ["X"], "{}", r.stderr);
    assert_eq!(
        r.stats,
        ["completed=1 cancelled=2 unfinished=0"],
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("never started"), "{}", r.stderr);
}
