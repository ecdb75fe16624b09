//! A read-only review of 9c678da (RELIABILITY.md, 359–361, 368): the exit's take-over in two
//! steps (busy runs keep their slots, keys and weights while the exit's other jobs run,
//! `Engine::settle_busy` settles them once their polls returned), one deadline for all
//! pools, and the future pools' report after every pool's exit work. Each scenario plays
//! in a child process (see `support::run_child`).

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nb_aiopool::{SmartAioPool, SubmitOptions, TaskHandle};
use support::{append, child_scenario, event, exit_from_main, lines, numbered_recipe, play};

// ----- the child process ---------------------------------------------------------------

/// Waits (bounded, 10 s) until `dir/ev` has a line starting with each of `names`.
fn until_events(dir: &Path, names: &[&str]) {
    support::until(&format!("events {names:?}"), || {
        let l = lines(&dir.join("ev"));
        names.iter().all(|n| l.iter().any(|e| e.starts_with(n)))
    });
}

/// Blocks this thread (one poll) until `dir/flag` has a line, at most `secs`; whether it
/// came.
fn wait_for_flag(dir: &Path, secs: u64) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if !lines(&dir.join("flag")).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// What an `atexit` callback registered before the crate's hook (so run after the exit's
/// run) records: each handle's outcome, and the pool's stats and worker counts.
mod after_exit {
    use super::*;

    pub static DIR: OnceLock<PathBuf> = OnceLock::new();
    pub static POOL: OnceLock<SmartAioPool> = OnceLock::new();
    pub static HANDLES: Mutex<Vec<(&'static str, TaskHandle<()>)>> = Mutex::new(Vec::new());

    extern "C" {
        fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
    }

    extern "C" fn record() {
        let Some(dir) = DIR.get() else { return };
        support::record_handles(dir, &HANDLES, |()| "Ok".to_string());
        if let Some(pool) = POOL.get() {
            let s = pool.stats();
            append(
                &dir.join("stats"),
                &format!("running={} queued={}", s.running, s.queued),
            );
            // Past the idle timeout (10 ms), with nothing left to run.
            std::thread::sleep(Duration::from_millis(30));
            append(
                &dir.join("after"),
                &format!(
                    "workers={} idle={} busy={}",
                    pool.worker_count(),
                    pool.idle_worker_count(),
                    pool.busy_worker_count()
                ),
            );
        }
    }

    pub fn register(dir: &Path) {
        DIR.set(dir.to_path_buf()).unwrap();
        // SAFETY: registers a plain `extern "C"` function.
        unsafe { atexit(record) };
    }

    pub fn keep(name: &'static str, h: TaskHandle<()>) {
        HANDLES.lock().unwrap().push((name, h));
    }
}

/// One SmartAioPool of two slots: X blocks its worker in one poll until Z's re-run sets
/// a flag; Z's first run is busy in one poll for 400 ms when `process::exit` comes, then
/// returns `Pending` (it awaits a long sleep). Z's poll returns long before the 5 s
/// deadline; its re-run should run then, and X's poll, waiting for it, return.
fn one_pool_pending(dir: &Path) {
    let rt = support::multi_thread_of(2);
    let p = SmartAioPool::builder()
        .name("one")
        .max_concurrency(2)
        .build();
    let (dx, dz) = (dir.to_path_buf(), dir.to_path_buf());
    let x = numbered_recipe(move |n| {
        let d = dx.clone();
        Box::pin(async move {
            if n == 0 {
                event(&d, "X", "start");
                let saw = wait_for_flag(&d, 20);
                event(&d, "X", if saw { "saw-flag" } else { "no-flag" });
            } else {
                event(&d, "X", "rerun");
            }
        })
    });
    let z = numbered_recipe(move |n| {
        let d = dz.clone();
        Box::pin(async move {
            if n == 0 {
                event(&d, "Z", "start");
                std::thread::sleep(Duration::from_millis(400));
                event(&d, "Z", "pending");
                tokio::time::sleep(Duration::from_secs(3600)).await;
            } else {
                event(&d, "Z", "rerun");
                append(&d.join("flag"), "Z rerun");
            }
        })
    });
    rt.block_on(async {
        p.submit(x).await.unwrap().detach();
        p.submit(z).await.unwrap().detach();
    });
    until_events(dir, &["X start", "Z start"]);
    exit_from_main(dir, rt);
}

/// An elastic SmartAioPool (`min_workers(0)`, max 4, idle timeout 10 ms): X is busy in
/// one poll for 500 ms and then ends (in that poll); Z is busy for 300 ms and then returns
/// `Pending` (run again at the exit); V is mid-run (awaiting) and run again.
fn elastic_busy(dir: &Path) {
    after_exit::register(dir);
    let rt = support::multi_thread_of(3);
    let p = SmartAioPool::builder()
        .name("elastic")
        .max_concurrency(4)
        .min_workers(0)
        .idle_timeout(Duration::from_millis(10))
        .build();
    after_exit::POOL.set(p.clone()).unwrap();
    let (dx, dz, dv) = (dir.to_path_buf(), dir.to_path_buf(), dir.to_path_buf());
    let x = numbered_recipe(move |n| {
        let d = dx.clone();
        Box::pin(async move {
            event(&d, "X", &format!("start{n}"));
            std::thread::sleep(Duration::from_millis(500));
            event(&d, "X", &format!("end{n}"));
        })
    });
    let z = numbered_recipe(move |n| {
        let d = dz.clone();
        Box::pin(async move {
            event(&d, "Z", &format!("start{n}"));
            if n == 0 {
                std::thread::sleep(Duration::from_millis(300));
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            event(&d, "Z", &format!("end{n}"));
        })
    });
    let v = numbered_recipe(move |n| {
        let d = dv.clone();
        Box::pin(async move {
            event(&d, "V", &format!("start{n}"));
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            event(&d, "V", &format!("end{n}"));
        })
    });
    rt.block_on(async {
        after_exit::keep("X", p.submit(x).await.unwrap());
        after_exit::keep("Z", p.submit(z).await.unwrap());
        after_exit::keep("V", p.submit(v).await.unwrap());
    });
    until_events(dir, &["X start0", "Z start0", "V start0"]);
    exit_from_main(dir, rt);
}

/// A SmartAioPool of two slots, one task per key (`max_per_key(1)`): X (key "k") is busy
/// in one poll for 800 ms when `process::exit` comes, then returns `Pending`; its re-run
/// sleeps 100 ms. W (key "k") waits for the key.
fn key_busy(dir: &Path) {
    after_exit::register(dir);
    let rt = support::multi_thread_of(2);
    let p = SmartAioPool::builder()
        .name("keyed")
        .max_concurrency(2)
        .max_per_key(1)
        .build();
    after_exit::POOL.set(p.clone()).unwrap();
    let (dx, dw) = (dir.to_path_buf(), dir.to_path_buf());
    let x = numbered_recipe(move |n| {
        let d = dx.clone();
        Box::pin(async move {
            event(&d, "X", &format!("start{n}"));
            if n == 0 {
                std::thread::sleep(Duration::from_millis(800));
                event(&d, "X", "pending0");
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            event(&d, "X", &format!("end{n}"));
        })
    });
    let w = numbered_recipe(move |n| {
        let d = dw.clone();
        Box::pin(async move {
            event(&d, "W", &format!("start{n}"));
            event(&d, "W", &format!("end{n}"));
        })
    });
    rt.block_on(async {
        let k = || SubmitOptions::new().key("k");
        after_exit::keep("X", p.submit_with(x, k()).await.unwrap());
    });
    until_events(dir, &["X start0"]);
    rt.block_on(async {
        let k = SubmitOptions::new().key("k");
        after_exit::keep("W", p.submit_with(w, k).await.unwrap());
    });
    exit_from_main(dir, rt);
}

/// A SmartAioPool of one slot: X is busy in one poll when `process::exit` comes; in that
/// poll, once the exit began, it calls the pool's `cancel_all`, then returns `Pending`.
/// W waits in the queue.
fn cancel_in_window(dir: &Path) {
    after_exit::register(dir);
    let rt = support::multi_thread_of(2);
    let p = SmartAioPool::builder()
        .name("cancelled")
        .max_concurrency(1)
        .build();
    after_exit::POOL.set(p.clone()).unwrap();
    let (dx, dw, px) = (dir.to_path_buf(), dir.to_path_buf(), p.clone());
    let x = numbered_recipe(move |n| {
        let (d, p) = (dx.clone(), px.clone());
        Box::pin(async move {
            event(&d, "X", &format!("start{n}"));
            if n == 0 {
                support::until("the exit began", || !lines(&d.join("exit_at")).is_empty());
                std::thread::sleep(Duration::from_millis(100));
                drop(p.cancel_all());
                event(&d, "X", "cancelled-all");
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            event(&d, "X", &format!("end{n}"));
        })
    });
    let w = numbered_recipe(move |n| {
        let d = dw.clone();
        Box::pin(async move {
            event(&d, "W", &format!("start{n}"));
        })
    });
    rt.block_on(async {
        after_exit::keep("X", p.submit(x).await.unwrap());
    });
    until_events(dir, &["X start0"]);
    rt.block_on(async {
        after_exit::keep("W", p.submit(w).await.unwrap());
    });
    exit_from_main(dir, rt);
}

/// A SmartAioPool task mid-run when a current-thread `main` returns; its re-run, at the
/// exit, builds a new SmartAioPool and submits a task there (detached), then ends.
fn pool_built_at_exit(dir: &Path) {
    let rt = support::current_thread();
    let p = SmartAioPool::builder()
        .name("outer")
        .max_concurrency(1)
        .build();
    let d0 = dir.to_path_buf();
    let x = numbered_recipe(move |n| {
        let d = d0.clone();
        Box::pin(async move {
            event(&d, "X", &format!("start{n}"));
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            let late = SmartAioPool::builder()
                .name("built-at-exit")
                .max_concurrency(1)
                .build();
            let d2 = d.clone();
            late.submit(move || {
                let d = d2.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    event(&d, "late", "ran");
                }
            })
            .await
            .unwrap()
            .detach();
            event(&d, "X", &format!("end{n}"));
        })
    });
    rt.block_on(async {
        p.submit(x).await.unwrap().detach();
        support::appended(dir.join("ev")).await;
    });
    drop(rt);
}

/// A SmartAioPool of two slots, at most one start per 300 ms: X's first run is busy in
/// one poll for 500 ms when `process::exit` comes, then returns `Pending`; W waits for
/// the rate window.
fn rate_busy(dir: &Path) {
    after_exit::register(dir);
    let rt = support::multi_thread_of(2);
    let p = SmartAioPool::builder()
        .name("rated")
        .max_concurrency(2)
        .rate_limit(1, Duration::from_millis(300))
        .build();
    after_exit::POOL.set(p.clone()).unwrap();
    let (dx, dw) = (dir.to_path_buf(), dir.to_path_buf());
    let x = numbered_recipe(move |n| {
        let d = dx.clone();
        Box::pin(async move {
            event(&d, "X", &format!("start{n}"));
            if n == 0 {
                std::thread::sleep(Duration::from_millis(500));
                event(&d, "X", "pending0");
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            event(&d, "X", &format!("end{n}"));
        })
    });
    let w = numbered_recipe(move |n| {
        let d = dw.clone();
        Box::pin(async move {
            event(&d, "W", &format!("start{n}"));
        })
    });
    rt.block_on(async {
        after_exit::keep("X", p.submit(x).await.unwrap());
    });
    until_events(dir, &["X start0"]);
    rt.block_on(async {
        after_exit::keep("W", p.submit(w).await.unwrap());
    });
    exit_from_main(dir, rt);
}

/// A SmartAioPool of one slot: X's first run is busy in one poll for 5.5 s when
/// `process::exit` comes, and then ends in that poll (after the 5 s deadline gave it
/// up); W, queued, sleeps 1.5 s at the exit, so the exit's run is still on when X's poll
/// ends.
fn late_end(dir: &Path) {
    after_exit::register(dir);
    let rt = support::multi_thread_of(2);
    let p = SmartAioPool::builder()
        .name("late-end")
        .max_concurrency(1)
        .build();
    after_exit::POOL.set(p.clone()).unwrap();
    let (dx, dw) = (dir.to_path_buf(), dir.to_path_buf());
    let x = numbered_recipe(move |n| {
        let d = dx.clone();
        Box::pin(async move {
            event(&d, "X", &format!("start{n}"));
            if n == 0 {
                std::thread::sleep(Duration::from_millis(5500));
            }
            event(&d, "X", &format!("end{n}"));
        })
    });
    let w = numbered_recipe(move |n| {
        let d = dw.clone();
        Box::pin(async move {
            event(&d, "W", &format!("start{n}"));
            tokio::time::sleep(Duration::from_millis(1500)).await;
            event(&d, "W", &format!("end{n}"));
        })
    });
    rt.block_on(async {
        after_exit::keep("X", p.submit(x).await.unwrap());
    });
    until_events(dir, &["X start0"]);
    rt.block_on(async {
        after_exit::keep("W", p.submit(w).await.unwrap());
    });
    exit_from_main(dir, rt);
}

#[test]
#[ignore = "run as a child process by the other tests in this file"]
fn child() {
    let (scenario, dir) = child_scenario();
    match scenario.as_str() {
        "one-pool-pending" => one_pool_pending(&dir),
        "elastic-busy" => elastic_busy(&dir),
        "key-busy" => key_busy(&dir),
        "cancel-in-window" => cancel_in_window(&dir),
        "pool-built-at-exit" => pool_built_at_exit(&dir),
        "rate-busy" => rate_busy(&dir),
        "late-end" => late_end(&dir),
        other => panic!("unknown scenario {other}"),
    }
}

// ----- the tests -------------------------------------------------------------------------

/// What the user does: a SmartAioPool of two slots runs X, which waits in synchronous code
/// (one poll) for something the pool's task Z does, and Z, busy in one poll for 400 ms
/// when the program calls `std::process::exit`, then awaiting (its poll returns
/// `Pending`). What they expect: SmartAioPool's Shutdown docs: "a run that
/// `process::exit` finds inside a poll on another thread ... is run again only once that
/// poll has returned, ... (meanwhile the exit's other tasks, of every pool, run: such a
/// poll may be waiting for one of them); one still in its poll 5 s after the exit began
/// ... is not run again". Z's poll returns after 400 ms, so Z's re-run runs then, X sees
/// it and its poll ends: the exit ends in about a second and gives nothing up.
/// What happened: Z's re-run was not even queued until X's poll returned too: a pool's
/// busy runs are settled together (`settle_busy` once `Busy::look` says all returned), so
/// Z held its slot and was not run again until the 5 s deadline gave X up: "Z's poll
/// returned 399 ms after the exit began, but its re-run started only 5001 ms after it,
/// and X, waiting in its poll for that re-run, was given up (exit took 5023 ms) ... 1
/// task(s) of SmartAioPool \"one\" were still running at the process exit". (It failed
/// so before 9c678da too, where nothing started until every busy poll had returned.)
/// Fixed by 260c017 (RELIABILITY.md, 368): each busy run is settled as soon as its own
/// poll has returned.
#[test]
fn a_busy_run_that_returned_pending_is_run_again_while_another_busy_run_of_its_pool_waits() {
    let c = play("one-pool-pending", 30);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    let took = c.ended_at - c.exit_at();
    assert!(
        !c.stderr.contains("were still running at the process exit") && took < 3000,
        "Z's poll returned {} ms after the exit began, but its re-run started only {} ms \
         after it, and X, waiting in its poll for that re-run, was given up (exit took {} \
         ms); events: {:?}; stderr: {}",
        c.at("Z pending").map_or(-1, |t| (t - c.exit_at()) as i64),
        c.at("Z rerun").map_or(-1, |t| (t - c.exit_at()) as i64),
        took,
        c.events(),
        c.stderr
    );
    assert!(c.has("X saw-flag"), "events: {:?}", c.events());
}

/// Pin. An elastic SmartAioPool (`min_workers(0)`, max 4, idle timeout 10 ms) with X busy
/// in a poll that ends its run, Z busy in a poll that returns `Pending`, and V awaiting,
/// when `process::exit` comes. Expected (finding 349, 361): Z and V run again, X does not;
/// after the exit's run, stats say nothing runs and, past the idle timeout, no worker is
/// left ("workers=0 idle=0 busy=0").
#[test]
fn pin_an_elastic_pools_counts_after_an_exit_with_busy_runs() {
    let c = play("elastic-busy", 30);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    let mut h = c.lines("handles");
    h.sort();
    assert_eq!(h, ["V=Ok", "X=Ok", "Z=Ok"], "events: {:?}", c.events());
    assert!(!c.has("X start1"), "X ran again: {:?}", c.events());
    assert!(c.has("Z end1") && c.has("V end1"), "{:?}", c.events());
    assert_eq!(c.lines("stats"), ["running=0 queued=0"]);
    assert_eq!(c.lines("after"), ["workers=0 idle=0 busy=0"]);
}

/// Pin. A SmartAioPool of two slots, `max_per_key(1)`: X (key "k") is busy in a poll
/// that returns `Pending` 800 ms after `process::exit`; W (key "k") waits for the key.
/// Expected: X's key is held while its poll runs and its re-run runs first (an
/// interrupted run goes first): W starts after X's re-run ended; stats are back to 0.
#[test]
fn pin_a_busy_runs_key_is_held_until_its_rerun_ends() {
    let c = play("key-busy", 30);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    let mut h = c.lines("handles");
    h.sort();
    assert_eq!(h, ["W=Ok", "X=Ok"], "events: {:?}", c.events());
    let (pending, rerun, rerun_end, w) = (
        c.at("X pending0").unwrap(),
        c.at("X start1").unwrap(),
        c.at("X end1").unwrap(),
        c.at("W start0").unwrap(),
    );
    assert!(
        pending <= rerun,
        "re-run before the poll returned: {:?}",
        c.events()
    );
    assert!(
        rerun_end <= w,
        "W started while X held the key: {:?}",
        c.events()
    );
    assert_eq!(c.lines("stats"), ["running=0 queued=0"]);
}

/// Pin. A SmartAioPool of one slot: X, busy in a poll when `process::exit` comes, calls
/// the pool's `cancel_all` in that poll (after the exit began), then returns `Pending`;
/// W waits in the queue. Expected (the Shutdown docs: "covered by a `cancel_all` ...
/// while the exit waits for it, is not run again either: its handle says that"): X and W
/// cancelled, X not run again, nothing left running.
#[test]
fn pin_a_cancel_all_made_in_a_busy_poll_during_the_exit() {
    let c = play("cancel-in-window", 30);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    let mut h = c.lines("handles");
    h.sort();
    assert_eq!(
        h,
        ["W=Err(Some(CancelAll))", "X=Err(Some(CancelAll))"],
        "events: {:?}; stderr: {}",
        c.events(),
        c.stderr
    );
    assert!(!c.has("X start1") && !c.has("W start0"), "{:?}", c.events());
    assert_eq!(c.lines("stats"), ["running=0 queued=0"]);
}

/// Pin. A task run at the exit builds a new SmartAioPool and submits a task there
/// (detached). Expected ("what they ... submit to any `auto_shutdown` pool while it runs"
/// runs): the new pool's task runs before the process ends.
#[test]
fn pin_a_smart_pool_built_during_the_exit_runs_its_task() {
    let c = play("pool-built-at-exit", 30);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert!(c.has("X end1"), "{:?}", c.events());
    assert!(
        c.has("late ran"),
        "the task of a pool built at the exit did not run: {:?}; stderr: {}",
        c.events(),
        c.stderr
    );
}

/// Pin. A SmartAioPool of two slots with `rate_limit(1, 300 ms)`: X is busy in a poll
/// that returns `Pending` 500 ms after `process::exit`; W waits for the window. Expected:
/// W starts while X's poll still runs (a slot is free), X's re-run after its poll
/// returned, and no two starts closer than the window allows.
#[test]
fn pin_a_rate_limited_pool_with_a_busy_run_at_the_exit() {
    let c = play("rate-busy", 30);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    let mut h = c.lines("handles");
    h.sort();
    assert_eq!(h, ["W=Ok", "X=Ok"], "events: {:?}", c.events());
    let mut starts = [
        c.at("X start0").unwrap(),
        c.at("W start0").unwrap(),
        c.at("X start1").unwrap(),
    ];
    assert!(c.at("X pending0").unwrap() <= starts[2], "{:?}", c.events());
    starts.sort();
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= 290, "starts too close: {:?}", c.events());
    }
    assert_eq!(c.lines("stats"), ["running=0 queued=0"]);
}

/// Pin. A SmartAioPool of one slot: X is busy in one poll for 5.5 s when `process::exit`
/// comes; the exit gives it up at 5 s (its slot given back, W started), and then X's run
/// ends in that poll while the exit still runs W. Expected: the late end settles nothing
/// more (no slot given back twice): X's handle says `RuntimeShutdown` (the exit decided
/// first), W completes, and stats say nothing runs after the exit.
#[test]
fn pin_a_run_ending_in_its_poll_after_the_exit_gave_it_up() {
    let c = play("late-end", 30);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert!(c.has("X end0") && c.has("W end0"), "{:?}", c.events());
    let mut h = c.lines("handles");
    h.sort();
    assert_eq!(
        h,
        ["W=Ok", "X=Err(Some(RuntimeShutdown))"],
        "events: {:?}",
        c.events()
    );
    assert!(!c.has("X start1"), "{:?}", c.events());
    assert_eq!(c.lines("stats"), ["running=0 queued=0"]);
}
