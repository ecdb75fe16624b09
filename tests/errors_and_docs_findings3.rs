//! Regression tests of a review of the fixes of findings 219–224 (7035486, df22b72;
//! RELIABILITY.md, findings 241–244): the checks before `shutdown_timeout`'s and
//! `submit_with(.., timeout)`'s timers, and the exit report's lines for tasks a rate window
//! that never reopens holds back. Each failed before its fix; two are ignored (a crate
//! built with `panic = "abort"`, about a minute; a pinned hang, 6 s): run them with
//! `cargo test -p nb-aiopool --test errors_and_docs_findings3 -- --ignored`.

mod support;

use std::time::Duration;

use nb_aiopool::{CommonAioPool, SubmitOptions};

/// The lines of the exit report (stderr) that name `pool`.
fn report_lines(stderr: &str, pool: &str) -> Vec<String> {
    let lines: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains(pool))
        .map(str::to_owned)
        .collect();
    assert!(
        !lines.is_empty(),
        "no exit report line for {pool}; stderr: {stderr}"
    );
    lines
}

/// Runs the child `scenario` and returns its report lines for `pool`.
fn exit_report(scenario: &str, pool: &str) -> Vec<String> {
    let c = support::run_child(scenario, 30);
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    report_lines(&c.stderr, pool)
}

/// A call the exit report names "to wait for" tasks that would never return: a
/// `shutdown()`, a `wait()` or a `*_all_*` function waits for the held-back tasks too.
fn advises_a_wait_that_never_ends(line: &str) -> bool {
    line.contains("to wait for them")
        && (line.contains("shutdown().await")
            || line.contains("wait().await")
            || line.contains("_aiopools().await"))
}

/// Finding 241. A live pool at the exit with a task running and a task a never-reopening rate window
/// holds back: 223's fix gives the held-back task a line of its own, but the running one
/// still gets the usual line, which advises `pool.shutdown().await` "to wait for them":
/// that shutdown waits for the held-back task as well, for ever.
#[test]
fn a_live_pool_with_running_and_held_back_tasks_gets_no_advice_that_would_hang() {
    for kind in ["common", "no-queue"] {
        let pool = format!("mixed-{kind}-pool");
        let lines = exit_report(&format!("mixed-{kind}"), &pool);
        for line in &lines {
            assert!(
                !advises_a_wait_that_never_ends(line),
                "{kind}: the exit report advises a wait that would never end: {line}"
            );
        }
        assert!(
            lines
                .iter()
                .any(|l| l.contains("1 task(s) never started") && l.contains("rate_limit")),
            "{kind}: no line for the held-back task: {lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("1 unfinished task(s)")),
            "{kind}: no line for the running task: {lines:?}"
        );
    }
}

/// Finding 242. A live pool at the exit whose never-reopening window still has a start left, with
/// more tasks queued than that: the tasks past the window's last start will never start
/// either, but `held_back` counts only when the window is full already, so all were
/// "unfinished" and the line advised `pool.shutdown().await` "to wait for them".
#[test]
fn queued_tasks_beyond_a_never_reopening_windows_last_starts_are_counted_held_back() {
    for kind in ["common", "no-queue"] {
        let pool = format!("beyond-{kind}-pool");
        let lines = exit_report(&format!("beyond-{kind}"), &pool);
        for line in &lines {
            assert!(
                !advises_a_wait_that_never_ends(line),
                "{kind}: the exit report advises a wait that would never end: {line}"
            );
        }
        assert!(
            lines
                .iter()
                .any(|l| l.contains("1 task(s) never started") && l.contains("rate_limit")),
            "{kind}: the task that can never start is not counted held back: {lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("2 unfinished task(s)")),
            "{kind}: the running task and the one that may still start are not counted \
             unfinished: {lines:?}"
        );
    }
}

/// Submits a task (keyed `k` if `keyed`) that never ends (`pending`, as a long task at
/// the exit) or ends at once, from inside a runtime; detaches it.
async fn submit(pool: &support::Pool, pending: bool, keyed: bool) {
    let opts = if keyed {
        SubmitOptions::new().key("k")
    } else {
        SubmitOptions::new()
    };
    let task = async move {
        if pending {
            std::future::pending::<()>().await
        }
    };
    match pool {
        support::Pool::Common(p) => p.submit_with(task, opts).await.unwrap().detach(),
        support::Pool::NoQueue(p) => p.submit_with(task, opts).await.unwrap().detach(),
        support::Pool::Smart(_) => unreachable!(),
    }
    tokio::task::yield_now().await;
}

/// A private pool of `kind` ("common" or "no-queue") with a window of `count` starts
/// that never reopens, and one running task per key.
fn rate_limited(kind: &str, name: &str, size: usize, count: u32) -> support::Pool {
    match kind {
        "common" => support::Pool::Common(
            nb_aiopool::CommonAioPool::builder()
                .name(name)
                .max_concurrency(size)
                .max_queue_size(10)
                .max_per_key(1)
                .rate_limit(count, Duration::MAX)
                .process_wide(false)
                .build(),
        ),
        "no-queue" => support::Pool::NoQueue(
            nb_aiopool::NoQueueAioPool::builder()
                .name(name)
                .max_concurrency(size)
                .max_per_key(1)
                .rate_limit(count, Duration::MAX)
                .process_wide(false)
                .build(),
        ),
        other => panic!("unknown kind {other}"),
    }
}

#[test]
#[ignore = "a child process of the exit-report tests"]
fn child() {
    let (scenario, _dir) = support::child_scenario();
    let rt = support::current_thread();
    let (what, kind) = scenario.split_once('-').unwrap();
    let name = format!("{scenario}-pool");
    rt.block_on(async {
        match what {
            "mixed" => {
                // One start ever: the running task spends it, the next is held back.
                let pool = rate_limited(kind, &name, 2, 1);
                submit(&pool, true, false).await;
                submit(&pool, false, false).await;
                std::mem::forget(pool);
            }
            "beyond" => {
                // Two starts ever, one task per key: the running task spends one, the
                // next of its key may still take the other once it ends, the third never
                // starts.
                let pool = rate_limited(kind, &name, 3, 2);
                submit(&pool, true, true).await;
                submit(&pool, false, true).await;
                submit(&pool, false, true).await;
                std::mem::forget(pool);
            }
            other => panic!("unknown scenario {other}"),
        }
    });
    // The runtime lives on to the exit: nothing is lost to its shutdown.
    std::mem::forget(rt);
}

/// Finding 243. A program built with `panic = "abort"`, calling `shutdown_timeout` that has to wait in
/// the context of a runtime that has shut down (219's case): 219's check polls a timer
/// there to find out, its panic "caught and silenced" (`blocking::panics_quietly`); with
/// `panic = "abort"` nothing is caught, and the silencing hook left the process to abort
/// with no message at all (before 219's fix it printed tokio's "it is being shutdown";
/// a timerless runtime's check, 207's, the same). The probe's panic now reaches the hook
/// when the crate is built with `panic = "abort"`.
///
/// Builds a small crate with cargo (offline, about a minute the first time), hence
/// ignored: `cargo test --test errors_and_docs_findings3 -- --ignored panic_abort`.
#[test]
#[ignore = "builds a crate with panic = \"abort\" (cargo, offline, about a minute)"]
fn panic_abort_build_a_timer_probes_abort_is_not_silent() {
    use std::process::Command;
    let here = env!("CARGO_MANIFEST_DIR");
    let dir = std::env::temp_dir().join(format!("nb_aiopool_panic_abort_{}", std::process::id()));
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            r#"[package]
name = "panic-abort-probe"
version = "0.1.0"
edition = "2021"

[dependencies]
nb-aiopool = {{ path = {here:?} }}
tokio = {{ version = "1.54", features = ["rt", "rt-multi-thread", "time"] }}
futures-executor = "0.3"

[profile.dev]
panic = "abort"

[workspace]
"#
        ),
    )
    .unwrap();
    std::fs::copy(format!("{here}/Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    std::fs::write(
        dir.join("src/main.rs"),
        r#"
fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pool = nb_aiopool::CommonAioPool::builder()
        .max_concurrency(1)
        .process_wide(false)
        .build();
    rt.block_on(async { pool.submit(std::future::pending::<()>()).await.unwrap().detach() });
    let dead = {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let handle = rt.handle().clone();
        drop(rt);
        handle
    };
    let _in = dead.enter();
    eprintln!("before");
    futures_executor::block_on(pool.shutdown_timeout(std::time::Duration::from_secs(1)));
    eprintln!("returned");
}
"#,
    )
    .unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| std::path::PathBuf::from(t).join("panic-abort-probe"))
        .unwrap_or_else(|| dir.join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["run", "--offline", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("before") && !stderr.contains("returned"),
        "the program did not run as planned: {stderr}"
    );
    let after = stderr.split_once("before").unwrap().1;
    assert!(
        after.contains("panicked"),
        "the process aborted with no word of why (status {:?}); stderr: {stderr}",
        out.status
    );
}

/// Finding 244 (documentation), kept as a pin: `shutdown_timeout` polled on a plain thread under
/// `Handle::enter` of a live current-thread runtime that no thread drives: its deadline's
/// timer is that runtime's, which only runs while the runtime is driven, so the deadline
/// never passes. 219's check lets it through (the runtime is alive, with timers).
#[test]
#[ignore = "pins a hang (tokio's timers of an undriven current-thread runtime); 6 s"]
fn pin_shutdown_timeout_under_an_undriven_current_thread_runtime_never_passes() {
    let rt = support::multi_thread();
    let undriven = support::current_thread();
    let pool = support::common_local(1, 0);
    let task = rt
        .block_on(pool.submit(std::future::pending::<()>()))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = undriven.handle().clone();
    let waiting = pool.clone();
    std::thread::spawn(move || {
        let _in = handle.enter();
        let report = support::plain_block_on(waiting.shutdown_timeout(Duration::from_millis(100)));
        let _ = tx.send(report.abandoned());
    });
    let got = rx.recv_timeout(Duration::from_secs(6));
    task.abort();
    assert!(
        got.is_err(),
        "the deadline passed after all (abandoned {got:?}): no longer a limitation"
    );
}

/// The longest duration that can still be added to `now` (to the nanosecond).
fn max_addable(now: tokio::time::Instant) -> Duration {
    let (mut lo, mut hi) = (0u128, Duration::MAX.as_nanos());
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let d = Duration::new((mid / 1_000_000_000) as u64, (mid % 1_000_000_000) as u32);
        if now.checked_add(d).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Duration::new((lo / 1_000_000_000) as u64, (lo % 1_000_000_000) as u32)
}

/// Finding 254 (the core crate's twin of the Redis crate's finding 58): a
/// `shutdown_timeout` or a timed `submit_with` whose limit ends within a millisecond of the
/// largest time an `Instant` holds made tokio's timer panic inside the pool's future
/// ("overflow when adding duration to instant": tokio rounds a deadline up to its next
/// millisecond). `Duration::MAX` itself, which does not fit, was no deadline already; such
/// limits are now no deadline too, and so is a `rate_limit` window of that length.
#[test]
#[allow(clippy::async_yields_async)] // a block hands its task's handle out
fn limits_at_the_edge_of_instant_are_no_deadline() {
    let rt = support::multi_thread_of(1);
    for back in [Duration::from_micros(300), Duration::from_micros(600)] {
        let pool = support::common_local(1, 0);
        let report = rt.block_on(async {
            let h = pool
                .submit(tokio::time::sleep(Duration::from_millis(50)))
                .await
                .unwrap();
            // A submit into the full pool, with a limit at the edge: it waits for room.
            let edge = max_addable(tokio::time::Instant::now()) - back;
            let p = pool.clone();
            let waiting = tokio::spawn(async move {
                p.submit_with(async {}, SubmitOptions::new().timeout(edge))
                    .await
                    .map(|h| h.detach())
                    .is_ok()
            });
            let edge = max_addable(tokio::time::Instant::now()) - back;
            let report = tokio::spawn(pool.shutdown_timeout(edge)).await;
            let _ = h.await;
            (report.map(|r| r.abandoned()), waiting.await)
        });
        assert!(
            report.0.is_ok() && report.1.is_ok(),
            "{back:?} short of the largest Instant: {report:?}"
        );
        assert_eq!(report.0.unwrap(), 0, "no deadline passed");
    }
    // A rate window of that length: one start, then the rest held back (its timer is
    // set once the window is full).
    let pool = CommonAioPool::builder()
        .max_concurrency(2)
        .rate_limit(
            1,
            max_addable(tokio::time::Instant::now()) - Duration::from_micros(300),
        )
        .process_wide(false)
        .build();
    let held = rt.block_on(async {
        pool.run(async {}).await.unwrap();
        let held = pool.submit(async { 1 }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        held
    });
    assert!(!held.is_finished(), "the window let a second start through");
    held.abort();
}
