//! The exit guarantee applied to the surface API: tasks submitted through a
//! `SmartTaskGroup`, a `map_unordered` / `map_ordered` stream or `batch_run` /
//! `batch_submit` when `main` returns or `std::process::exit` is called (the group or
//! stream dropped, kept in a `static`, leaked, half consumed), a group's task failing at
//! the exit, a pool built in a runtime that ended, and CommonAioPool groups at the exit.
//! A review of 077e1d9 (2026-12-05). Exit scenarios run as child processes, as in
//! `tests/exit_paths.rs`.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use nb_aiopool::{
    shutdown_all_common_aiopools, CommonAioPool, MapOrdered, NoQueueAioPool, SmartAioPool,
    SmartTaskGroup, TaskGroup,
};
use support::{append, child_scenario, lines, run_child};

/// The panic a group's task raises on purpose at the exit.
const FAILS_AT_EXIT: &str = "task 0 fails at exit";

/// Tasks started in the child (all recipes below count their runs here).
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A group, a stream, kept until the process exits (never dropped).
static SMART_GROUP: Mutex<Option<SmartTaskGroup<()>>> = Mutex::new(None);
static COMMON_GROUP: Mutex<Option<TaskGroup<()>>> = Mutex::new(None);
type Ordered = MapOrdered<futures_util::stream::Iter<std::ops::Range<u32>>, ()>;
static STREAM: Mutex<Option<Ordered>> = Mutex::new(None);

/// A recipe that records `"{what} {i}"` in `dir/starts` at each run, sleeps `ms`, then
/// records the same in `dir/done`.
fn recorder(
    dir: &Path,
    what: &'static str,
    i: u32,
    ms: u64,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync + 'static
{
    let dir = Arc::new(dir.to_path_buf());
    move || {
        let dir = Arc::clone(&dir);
        Box::pin(async move {
            STARTED.fetch_add(1, Ordering::SeqCst);
            append(&dir.join("starts"), &format!("{what} {i}"));
            tokio::time::sleep(Duration::from_millis(ms)).await;
            append(&dir.join("done"), &format!("{what} {i}"));
        })
    }
}

/// A recipe that records its run and panics.
fn fails(dir: &Path) -> impl Fn() -> std::future::Ready<()> + Send + Sync + 'static {
    let dir = dir.to_path_buf();
    move || {
        append(&dir.join("starts"), "group 0");
        panic!("task 0 fails at exit")
    }
}

async fn until_started(n: usize) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while STARTED.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "only {STARTED:?} of {n} tasks started");
}

/// A task that counts its start in [`STARTED`], then sleeps for an hour.
async fn started_then_asleep() {
    STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

/// A group (3 tasks), a `map_unordered` stream (2) and a `batch_run` (2) of `pool`, all
/// running (sleeping for an hour), dropped by a `timeout` around them: what a program
/// does before it gives up and exits.
async fn seven_running_then_dropped(pool: &SmartAioPool, dir: &Path) {
    let mut group = pool.group();
    for i in 0..3 {
        group
            .submit(recorder(dir, "group", i, 3_600_000))
            .await
            .unwrap();
    }
    let d = dir.to_path_buf();
    let stream = pool.map_unordered(futures_util::stream::iter(0..2), move |i| {
        recorder(&d, "stream", i, 3_600_000)
    });
    let batch = pool.batch_run((0..2).map(|i| recorder(dir, "batch", i, 3_600_000)));
    let all = async { tokio::join!(group.join_all(), stream.collect::<Vec<_>>(), batch) };
    // The timeout, on the current-thread runtime, fires once every task has started and
    // slept: the group, the stream and the batch are dropped, which aborts their 7 tasks.
    let outcome = tokio::time::timeout(Duration::from_millis(300), all).await;
    assert!(outcome.is_err());
    assert_eq!(
        STARTED.load(Ordering::SeqCst),
        7,
        "every task ran before the drop"
    );
}

/// Group tasks 0..4 of a cancel-on-panic group kept in a `static`, none started before
/// the exit (task 0 panics when it runs); `main` returns.
fn tripped_at_exit(dir: &Path, rate: Option<(u32, Duration)>) {
    support::hide_panics(&[FAILS_AT_EXIT]);
    let rt = support::current_thread();
    rt.block_on(async {
        let mut b = SmartAioPool::builder().name("rated").max_concurrency(1);
        if let Some((count, per)) = rate {
            b = b.rate_limit(count, per);
        }
        let pool = b.build();
        let mut group = pool.group().cancel_on_panic(true);
        group.submit(fails(dir)).await.unwrap();
        for i in 1..4 {
            group.submit(recorder(dir, "group", i, 10)).await.unwrap();
        }
        // Nothing has started: the current-thread runtime was never yielded to.
        *SMART_GROUP.lock().unwrap() = Some(group);
    });
    drop(rt); // `main` returns
}

/// A SmartAioPool task busy in one poll on a worker when `std::process::exit` is called,
/// and one queued behind it; another thread aborts both 400 ms into the exit, while the
/// take-over waits for that poll (1.5 s). Writes `calls` (each call of a recipe),
/// `starts`, `done` and `aborted`.
fn aborted_during_the_busy_wait(dir: &Path) {
    let rt = support::multi_thread_of(2);
    rt.block_on(async {
        let pool = SmartAioPool::builder()
            .name("busy")
            .max_concurrency(1)
            .build();
        let d = Arc::new(dir.to_path_buf());
        let busy = {
            let d = Arc::clone(&d);
            pool.submit(move || {
                // A call of the recipe is a (re-)run made, polled or not.
                append(&d.join("calls"), "busy");
                let d = Arc::clone(&d);
                async move {
                    append(&d.join("starts"), "busy");
                    // Inside one poll, on a worker, when the process exits: the
                    // take-over waits for this poll to return.
                    std::thread::sleep(Duration::from_millis(1500));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    append(&d.join("done"), "busy");
                }
            })
            .await
            .unwrap()
        };
        let queued = {
            let d = Arc::clone(&d);
            pool.submit(move || {
                append(&d.join("calls"), "queued");
                let d = Arc::clone(&d);
                async move {
                    append(&d.join("starts"), "queued");
                }
            })
            .await
            .unwrap()
        };
        while lines(&d.join("starts")).is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (a, b) = (busy.abort_handle(), queued.abort_handle());
        let d2 = Arc::clone(&d);
        // Aborts both while the exit waits for the busy poll (it returns 1.5 s
        // after it began; the exit starts at once).
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            a.abort();
            b.abort();
            append(&d2.join("aborted"), "both");
        });
        std::process::exit(0);
    });
}

/// `main` on a multi-thread runtime (as `#[tokio::main]`): a SmartAioPool group of five
/// tasks, two running, then `main` returns with the group kept in a `static` (`keep`)
/// or dropped with `main`'s future, before the runtime (it aborts its tasks).
fn five_in_a_group_as_main_returns(dir: &Path, keep: bool) {
    let rt = support::multi_thread_of(2);
    rt.block_on(async {
        let pool = SmartAioPool::builder().max_concurrency(2).build();
        let mut group = pool.group();
        for i in 0..5 {
            group.submit(recorder(dir, "group", i, 50)).await.unwrap();
        }
        until_started(2).await;
        if keep {
            *SMART_GROUP.lock().unwrap() = Some(group);
        }
    });
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = child_scenario();
    match scenario.as_str() {
        "dropped-then-exit-no-rerun" | "dropped-then-exit-rerun" => {
            let rerun = scenario.ends_with("-rerun") && !scenario.contains("no-rerun");
            let rt = support::current_thread();
            rt.block_on(async {
                let pool = SmartAioPool::builder()
                    .name("mailer")
                    .max_concurrency(8)
                    .rerun_interrupted(rerun)
                    .build();
                seven_running_then_dropped(&pool, &dir).await;
                // Right after the drop, before the slots see the aborts.
                std::process::exit(0);
            });
        }
        "tripped-at-exit" => tripped_at_exit(&dir, None),
        "tripped-at-exit-rate-window" => {
            tripped_at_exit(&dir, Some((1, Duration::from_secs(3600))))
        }
        "tripped-at-exit-never-ending-window" => tripped_at_exit(&dir, Some((1, Duration::MAX))),
        "static-group-main-returns" => five_in_a_group_as_main_returns(&dir, true),
        "group-dropped-when-main-returns" => five_in_a_group_as_main_returns(&dir, false),
        "half-consumed-stream-kept" => {
            let rt = support::multi_thread_of(2);
            rt.block_on(async {
                let pool = SmartAioPool::builder()
                    .max_concurrency(2)
                    .max_queue_size(2)
                    .build();
                let d = dir.clone();
                let mut stream = pool.map_ordered(futures_util::stream::iter(0..10), move |i| {
                    recorder(&d, "stream", i, 50)
                });
                stream.next().await.unwrap().unwrap();
                append(&dir.join("in_flight"), &stream.in_flight().to_string());
                *STREAM.lock().unwrap() = Some(stream);
            });
        }
        "batch-submit-detached" => {
            let rt = support::multi_thread_of(2);
            rt.block_on(async {
                let pool = SmartAioPool::builder().max_concurrency(2).build();
                let handles = pool
                    .batch_submit((0..5).map(|i| recorder(&dir, "batch", i, 50)))
                    .await
                    .unwrap();
                drop(handles);
                until_started(2).await;
            });
        }
        "group-of-a-pool-whose-runtime-ended" => {
            // Built in runtime A, its group's tasks cut off by A's end; no runtime after.
            let a = support::current_thread();
            let group = a.block_on(async {
                let pool = SmartAioPool::builder().max_concurrency(2).build();
                let mut group = pool.group();
                for i in 0..4 {
                    group.submit(recorder(&dir, "group", i, 50)).await.unwrap();
                }
                until_started(2).await;
                group
            });
            drop(a);
            *SMART_GROUP.lock().unwrap() = Some(group);
        }
        "common-group-kept" => {
            let rt = support::current_thread();
            rt.block_on(async {
                let pool = CommonAioPool::builder()
                    .name("kept")
                    .max_concurrency(2)
                    .build();
                let mut group = pool.group();
                for _ in 0..3 {
                    group
                        .submit(tokio::time::sleep(Duration::from_secs(3600)))
                        .await
                        .unwrap();
                }
                tokio::task::yield_now().await;
                *COMMON_GROUP.lock().unwrap() = Some(group);
            });
        }
        "common-group-shutdown-all" => {
            let rt = support::current_thread();
            rt.block_on(async {
                let pool = CommonAioPool::new(2, 10);
                let mut group = pool.group();
                for i in 0..4u32 {
                    let d = dir.clone();
                    group
                        .submit(async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            append(&d.join("done"), &format!("common {i}"));
                        })
                        .await
                        .unwrap();
                }
                shutdown_all_common_aiopools().await;
                *COMMON_GROUP.lock().unwrap() = Some(group);
            });
        }
        "common-group-dropped-then-exit" => {
            let rt = support::current_thread();
            rt.block_on(async {
                let pool = CommonAioPool::builder()
                    .name("dropped")
                    .max_concurrency(3)
                    .max_queue_size(10)
                    .build();
                let mut group = pool.group();
                for _ in 0..5 {
                    group.submit(started_then_asleep()).await.unwrap();
                }
                until_started(3).await;
                // Three running, two queued: all aborted by the drop, right before the
                // exit (the running ones' slots never poll again).
                drop(group);
                std::process::exit(0);
            });
        }
        "no-queue-aborted-then-exit" => {
            let rt = support::current_thread();
            rt.block_on(async {
                let pool = NoQueueAioPool::builder()
                    .name("aborted")
                    .max_concurrency(3)
                    .build();
                let mut handles = Vec::new();
                for _ in 0..3 {
                    handles.push(pool.submit(started_then_asleep()).await.unwrap());
                }
                until_started(3).await;
                // Two aborted; the third, still running at the exit, is reported (the
                // figure is not just zeroed).
                handles[0].abort();
                handles[1].abort();
                std::process::exit(0);
            });
        }
        "aborted-during-the-busy-wait" => aborted_during_the_busy_wait(&dir),
        other => panic!("unknown scenario {other}"),
    }
}

/// What a child process left: its exit code, its stderr and the lines its recipes wrote
/// (`starts`, `done`, and `in_flight` for the stream scenario). Its directory is removed.
struct Ran {
    code: Option<i32>,
    stderr: String,
    starts: Vec<String>,
    done: Vec<String>,
    in_flight: Vec<String>,
    calls: Vec<String>,
    aborted: Vec<String>,
}

/// Runs `scenario` in a child process (killed after `secs`), reads what it wrote.
fn ran(scenario: &str, secs: u64) -> Ran {
    let c = run_child(scenario, secs);
    let read = |name: &str| lines(&c.dir.join(name));
    let r = Ran {
        starts: read("starts"),
        done: read("done"),
        in_flight: read("in_flight"),
        calls: read("calls"),
        aborted: read("aborted"),
        code: c.code,
        stderr: c.stderr,
    };
    let _ = std::fs::remove_dir_all(c.dir);
    r
}

/// The lines, as a set (each line's count is the vector's business).
fn set(lines: &[String]) -> BTreeSet<String> {
    lines.iter().cloned().collect()
}

fn names(what: &str, range: std::ops::Range<u32>) -> BTreeSet<String> {
    range.map(|i| format!("{what} {i}")).collect()
}

// ----- faults ------------------------------------------------------------------------------

/// Fault 1. A `rerun_interrupted(false)` pool whose group, stream and batch were dropped
/// (a `timeout` around them fired) right before `std::process::exit`: their running
/// tasks were aborted (their handles say `Aborted`), but the exit take-over found their
/// slots not yet polled again and reported them as "interrupted by the process exit and
/// not run again ... their handles say RuntimeShutdown". Nothing was interrupted by the
/// exit, and nothing would have run again.
#[test]
fn tasks_aborted_by_dropping_a_group_or_stream_before_process_exit_are_not_reported_as_cut() {
    let c = ran("dropped-then-exit-no-rerun", 20);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(c.starts.len(), 7, "starts: {:?}", c.starts);
    assert!(
        !c.stderr.contains("interrupted by the process exit"),
        "aborted tasks reported as cut by the exit; stderr: {}",
        c.stderr
    );
}

/// Fault 2 (a). A cancel-on-panic group kept in a `static`, its tasks run at the exit
/// under a rate limit of 1 per hour: task 0 panics, which aborts tasks 1..3 (still
/// queued). A queued task's abort takes it out of the queue at once, except after the
/// exit take-over: there it stays queued until a slot takes it, which the rate window
/// allows only an hour later, so the process waited an hour for tasks already aborted.
#[test]
fn a_group_tripped_at_exit_does_not_hold_the_exit_for_its_rate_window() {
    let c = ran("tripped-at-exit-rate-window", 5);
    assert_eq!(
        c.code,
        Some(0),
        "the exit waited for the rate window of tasks the group's failure aborted (killed \
         after 5 s); starts: {:?}, stderr: {}",
        c.starts,
        c.stderr
    );
    assert_eq!(c.starts, ["group 0"]);
}

/// Fault 2 (b). The same with a window that never ends (`Duration::MAX`): the aborted
/// tasks, left queued, were cancelled as held back for ever, and the exit reported them
/// as "never started: its rate_limit window never ends ... their handles say
/// RuntimeShutdown"; their handles say `Aborted`: the group's failure ended them.
#[test]
fn a_group_tripped_at_exit_in_a_never_ending_window_is_not_reported_as_held_back() {
    let c = ran("tripped-at-exit-never-ending-window", 20);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(c.starts, ["group 0"]);
    assert!(
        !c.stderr.contains("never started"),
        "tasks aborted by the group reported as held back by the rate window; stderr: {}",
        c.stderr
    );
}

// ----- pins: behaviour checked and found sound ---------------------------------------------

/// The same drop before `process::exit` with re-runs: the aborted tasks are not run
/// again at the exit (`SmartTaskGroup`'s "Dropping": "an aborted task is not re-run at
/// exit"; the same for the stream and the batch), and the exit is prompt.
#[test]
fn pin_tasks_aborted_by_a_dropped_group_or_stream_are_not_rerun_at_process_exit() {
    let c = ran("dropped-then-exit-rerun", 20);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(
        c.starts.len(),
        7,
        "an aborted task ran again: {:?}",
        c.starts
    );
    assert!(c.done.is_empty(), "done: {:?}", c.done);
}

/// A cancel-on-panic group kept in a `static`, run at the exit (one slot, no rate limit):
/// its task 0 panics there, which aborts the others before they start; the exit ends
/// promptly, with no warning.
#[test]
fn pin_a_group_task_panicking_at_exit_trips_the_group_and_the_exit_ends() {
    let c = ran("tripped-at-exit", 20);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(c.starts, ["group 0"]);
    assert!(c.done.is_empty(), "an aborted task finished: {:?}", c.done);
    assert!(!c.stderr.contains("warning"), "stderr: {}", c.stderr);
}

/// A plain group kept in a `static` when `main` returns (a multi-thread runtime, as
/// `#[tokio::main]`): every task of it completes at the exit, exactly once; the two cut
/// off mid-run are run again from their recipes.
#[test]
fn pin_a_group_kept_in_a_static_finishes_at_exit() {
    let c = ran("static-group-main-returns", 20);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(set(&c.done), names("group", 0..5));
    assert_eq!(c.done.len(), 5, "a task finished twice");
    assert!((5..=7).contains(&c.starts.len()), "starts: {:?}", c.starts);
}

/// A group dropped when `main` returns (a local of `main`'s future, dropped before the
/// runtime): its tasks are aborted, as its docs say, and not run at the exit; no warning.
#[test]
fn pin_a_group_dropped_when_main_returns_aborts_its_tasks() {
    let c = ran("group-dropped-when-main-returns", 20);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert!(set(&c.starts).len() <= 5);
    assert!(c.done.is_empty(), "an aborted task ran on: {:?}", c.done);
    assert!(!c.stderr.contains("warning"), "stderr: {}", c.stderr);
}

/// A `map_ordered` stream consumed once and kept in a `static` when `main` returns: the
/// inputs it had pulled (in flight) complete at the exit; the inputs never pulled never
/// run.
#[test]
fn pin_a_half_consumed_stream_kept_at_exit_finishes_what_it_pulled() {
    let c = ran("half-consumed-stream-kept", 20);
    let in_flight: u32 = c
        .in_flight
        .first()
        .map(|l| l.parse().unwrap())
        .unwrap_or(u32::MAX);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(
        in_flight, 3,
        "the window is max_concurrency + max_queue_size"
    );
    assert_eq!(set(&c.done), names("stream", 0..1 + in_flight));
    assert_eq!(c.done.len() as u32, 1 + in_flight);
}

/// `batch_submit`'s handles dropped (detached): every task completes at the exit.
#[test]
fn pin_batch_submitted_tasks_detached_finish_at_exit() {
    let c = ran("batch-submit-detached", 20);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(set(&c.done), names("batch", 0..5));
    assert_eq!(c.done.len(), 5);
}

/// A pool built in a runtime that ended, its group's tasks cut off by that end, the group
/// kept, no runtime after: the exit runs them (again, for those cut off).
#[test]
fn pin_a_group_of_a_pool_whose_runtime_ended_finishes_at_exit() {
    let c = ran("group-of-a-pool-whose-runtime-ended", 20);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(set(&c.done), names("group", 0..4));
    assert_eq!(c.done.len(), 4);
}

/// A CommonAioPool group kept in a `static` when `main` returns: its tasks are cancelled
/// by the runtime's end (CommonAioPool re-runs nothing), and the exit report counts them.
#[test]
fn pin_a_common_group_kept_at_exit_is_reported() {
    let c = ran("common-group-kept", 20);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert!(
        c.stderr.contains("CommonAioPool named \"kept\"")
            && c.stderr
                .contains("3 task(s) cancelled by a runtime shutdown"),
        "stderr: {}",
        c.stderr
    );
}

/// `shutdown_all_common_aiopools` waits for the tasks of a live group of a process-wide
/// CommonAioPool (its docs: "waits until all their queued and running tasks have
/// finished"); nothing is reported at the exit.
#[test]
fn pin_shutdown_all_common_aiopools_waits_for_a_live_groups_tasks() {
    let c = ran("common-group-shutdown-all", 20);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(set(&c.done), names("common", 0..4));
    assert!(!c.stderr.contains("warning"), "stderr: {}", c.stderr);
}

/// A SmartAioPool task busy in one poll on a worker when `std::process::exit` is called,
/// and a task queued behind it, both aborted (from another thread) while the exit waits
/// for that poll to return: the busy one is not run again, the queued one never starts,
/// and the exit reports neither as stuck or interrupted. It is over long before the
/// 5 s poll wait. (A pin from a review of 277–278's fixes: 077e1d9 passes it too, its re-queued copy
/// ending unrun.)
#[test]
fn tasks_aborted_while_the_exit_waits_for_a_busy_poll_end_as_aborted() {
    let c = ran("aborted-during-the-busy-wait", 30);
    let (calls, starts, aborted) = (c.calls, c.starts, c.aborted);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert_eq!(aborted, ["both"], "the aborts were made during the exit");
    assert_eq!(
        starts,
        ["busy"],
        "an aborted task ran again, or one aborted while queued started; stderr: {}",
        c.stderr
    );
    assert_eq!(
        calls,
        ["busy"],
        "the busy task, aborted during the wait, was started again at the exit; stderr: {}",
        c.stderr
    );
    assert!(
        !c.stderr.contains("warning"),
        "aborted tasks reported by the exit; stderr: {}",
        c.stderr
    );
}

/// Finding 282: a CommonAioPool group dropped right before `std::process::exit`, with
/// three tasks running and two queued. All five are aborted (their handles say so), so
/// the exit has nothing to warn about; the warning counted the three running ones as
/// "unfinished task(s) at process exit": a running task's end is counted when its slot
/// next polls it, which a current-thread runtime that is never driven again never does.
#[test]
fn tasks_of_a_common_group_dropped_before_process_exit_are_not_warned_about() {
    let c = ran("common-group-dropped-then-exit", 20);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert!(!c.stderr.contains("warning"), "stderr: {}", c.stderr);
}

/// Finding 282, the same with `abort()` on the handles of two of three running
/// NoQueueAioPool tasks: the third, not aborted and still running at the exit, is the
/// only one the warning counts.
#[test]
fn running_tasks_aborted_before_process_exit_are_not_counted_as_unfinished() {
    let c = ran("no-queue-aborted-then-exit", 20);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert!(
        c.stderr.contains("NoQueueAioPool named \"aborted\"")
            && c.stderr.contains("had 1 unfinished task(s)"),
        "stderr: {}",
        c.stderr
    );
}
