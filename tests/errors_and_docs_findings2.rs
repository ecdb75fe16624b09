//! Regression tests of a review of the fixes of findings 207–210 (7b1e1dc; RELIABILITY.md,
//! findings 219–223): the timers `shutdown_timeout` and `submit_with(.., timeout)` make,
//! and the exit report of pools with held-back tasks. Each failed before its fix.

mod support;

use support::panic_message;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use nb_aiopool::{NoQueueAioPool, SubmitOptions};

/// A private pool of each kind: one slot, no queue (a submit into it busy waits).
fn three_pools() -> Vec<(&'static str, support::Pool)> {
    vec![
        ("common", support::Pool::Common(support::common_local(1, 0))),
        (
            "no_queue",
            support::Pool::NoQueue(
                NoQueueAioPool::builder()
                    .max_concurrency(1)
                    .process_wide(false)
                    .build(),
            ),
        ),
        ("smart", support::Pool::Smart(support::one_slot_smart(0))),
    ]
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl support::Pool {
    /// A `submit_with` with a timeout of a task that ends at once; `true` if accepted.
    fn submit_within(&self, d: Duration) -> Boxed<'_, bool> {
        let opts = SubmitOptions::new().timeout(d);
        match self {
            support::Pool::Common(p) => Box::pin(async move {
                p.submit_with(async {}, opts)
                    .await
                    .map(|h| h.detach())
                    .is_ok()
            }),
            support::Pool::NoQueue(p) => Box::pin(async move {
                p.submit_with(async {}, opts)
                    .await
                    .map(|h| h.detach())
                    .is_ok()
            }),
            support::Pool::Smart(p) => Box::pin(async move {
                p.submit_with(|| async {}, opts)
                    .await
                    .map(|h| h.detach())
                    .is_ok()
            }),
        }
    }

    /// Closes the pool and waits for its tasks (`shutdown`; a NoQueueAioPool's `wait`).
    fn shutdown(&self) -> Boxed<'_, ()> {
        match self {
            support::Pool::Common(p) => Box::pin(p.shutdown()),
            support::Pool::NoQueue(p) => Box::pin(p.shutdown()),
            support::Pool::Smart(p) => Box::pin(p.shutdown()),
        }
    }

    /// A plain `submit` of a task that ends at once; `true` if accepted.
    fn submit_done(&self) -> Boxed<'_, bool> {
        match self {
            support::Pool::Common(p) => {
                Box::pin(async move { p.submit(async {}).await.map(|h| h.detach()).is_ok() })
            }
            support::Pool::NoQueue(p) => {
                Box::pin(async move { p.submit(async {}).await.map(|h| h.detach()).is_ok() })
            }
            support::Pool::Smart(p) => {
                Box::pin(async move { p.submit(|| async {}).await.map(|h| h.detach()).is_ok() })
            }
        }
    }

    /// Submits a task that never ends, from inside a runtime; returns its abort handle.
    async fn submit_pending(&self) -> nb_aiopool::AbortHandle {
        match self {
            support::Pool::Common(p) => p
                .submit(std::future::pending::<()>())
                .await
                .unwrap()
                .abort_handle(),
            support::Pool::NoQueue(p) => p
                .submit(std::future::pending::<()>())
                .await
                .unwrap()
                .abort_handle(),
            support::Pool::Smart(p) => p
                .submit(std::future::pending::<()>)
                .await
                .unwrap()
                .abort_handle(),
        }
    }
}

/// The message `f` panics with; fails the test if it returns.
fn panics_with<T>(what: &str, f: impl FnOnce() -> T) -> String {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(_) => panic!("{what} returned"),
        Err(p) => panic_message(&*p),
    }
}

/// Runs `f` on a new thread inside the context of `handle`; fails the test if it takes
/// more than 30 s (a hang).
fn on_thread_in<T: Send + 'static>(
    what: &str,
    handle: &tokio::runtime::Handle,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = handle.clone();
    std::thread::spawn(move || {
        let _in = handle.enter();
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("timed out (30 s): {what}"))
}

/// A handle of a runtime (with every driver) that has shut down.
fn dead_runtime_handle() -> tokio::runtime::Handle {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    drop(rt);
    handle
}

// ----- shutdown_timeout in the context of a runtime that has shut down -----------------

/// Finding 219. `shutdown_timeout` that has to wait, polled with the context of a runtime that has
/// shut down (a `spawn_blocking` thread that outlived it, a `Handle::enter` guard: the
/// contexts `SubmitErrorKind::NoRuntime`'s docs name), while the pool's jobs run on a
/// live runtime: the deadline's timer was made on the dead runtime, and tokio panicked
/// ("A Tokio 1.x context was found, but it is being shutdown."), which the docs do not
/// list. 207's fix checks only for no runtime and for a runtime without timers.
#[test]
fn shutdown_timeout_in_a_dead_runtimes_context_panics_with_the_crates_message() {
    support::hide_panics(&[]);
    let rt = support::multi_thread();
    let dead = dead_runtime_handle();
    for (name, pool) in three_pools() {
        let task = rt.block_on(pool.submit_pending());
        let msg = panics_with(&format!("{name}: shutdown_timeout"), || {
            let _in = dead.enter();
            support::plain_block_on(pool.shutdown_timeout(Duration::from_secs(1)))
        });
        assert!(
            msg.starts_with("nb_aiopool:") && msg.contains("shutdown_timeout"),
            "{name}: shutdown_timeout in a dead runtime's context panicked with: {msg:?}"
        );
        // What the message says works there: `shutdown()`, once the task has ended.
        let waiting = pool.clone();
        let shut = std::thread::spawn({
            let dead = dead.clone();
            move || {
                on_thread_in("shutdown() in a dead runtime's context", &dead, move || {
                    support::plain_block_on(waiting.shutdown())
                })
            }
        });
        task.abort();
        shut.join().unwrap();
    }
}

// ----- submit_with(.., timeout): the same timer, the same faults ------------------------

/// Finding 220. `submit_with(.., SubmitOptions::timeout(..))` that has to wait for room, on a runtime
/// without tokio's time driver: tokio's "timers are disabled" panic (the docs list a
/// panic there, but the message is tokio's, which names no call of this crate; 207 made
/// `shutdown_timeout`'s the crate's in the same case).
#[test]
fn submit_with_timeout_on_a_timerless_runtime_panics_with_the_crates_message() {
    support::hide_panics(&[]);
    let rt = support::multi_thread();
    let timerless = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (name, pool) in three_pools() {
        let task = rt.block_on(pool.submit_pending());
        let msg = panics_with(&format!("{name}: submit_with"), || {
            timerless.block_on(pool.submit_within(Duration::from_secs(1)))
        });
        assert!(
            msg.starts_with("nb_aiopool:") && msg.contains("submit_with"),
            "{name}: submit_with(timeout) on a timerless runtime panicked with: {msg:?}"
        );
        task.abort();
    }
}

/// Finding 221. The same, polled in the context of a runtime that has shut down, the pool's own
/// runtime alive: tokio's "it is being shutdown" panic.
#[test]
fn submit_with_timeout_in_a_dead_runtimes_context_panics_with_the_crates_message() {
    support::hide_panics(&[]);
    let rt = support::multi_thread();
    let dead = dead_runtime_handle();
    for (name, pool) in three_pools() {
        let task = rt.block_on(pool.submit_pending());
        let msg = panics_with(&format!("{name}: submit_with"), || {
            let _in = dead.enter();
            support::plain_block_on(pool.submit_within(Duration::from_secs(1)))
        });
        assert!(
            msg.starts_with("nb_aiopool:") && msg.contains("submit_with"),
            "{name}: submit_with(timeout) in a dead runtime's context panicked with: {msg:?}"
        );
        // What the message says works there: a submit without a timeout, waiting for
        // room if the task has not ended yet.
        let waiting = pool.clone();
        let submit = std::thread::spawn({
            let dead = dead.clone();
            move || {
                on_thread_in("submit() in a dead runtime's context", &dead, move || {
                    support::plain_block_on(waiting.submit_done())
                })
            }
        });
        task.abort();
        assert!(submit.join().unwrap(), "{name}: the submit was refused");
    }
}

// ----- the exit report of tasks a never-ending rate window held back --------------------

/// The line of the exit report (stderr) that names `pool`.
fn report_line(stderr: &str, pool: &str) -> String {
    stderr
        .lines()
        .find(|l| l.contains(pool))
        .unwrap_or_else(|| panic!("no exit report line for {pool}; stderr: {stderr}"))
        .to_owned()
}

/// Finding 222. 210's fix counts a task that a `rate_limit` window that never reopens held back, and
/// that its pool's drop cancelled, among the tasks "cancelled by a runtime shutdown", and
/// the line goes on "call `pool.shutdown().await` at the end of main to wait for them":
/// no runtime shut down (the one that ran the pool lived on), and `shutdown()` would
/// have waited for that task for ever (`rate_limit`'s docs say so).
#[test]
fn a_dropped_pools_held_back_task_is_not_blamed_on_a_runtime_shutdown_at_exit() {
    let c = support::run_child("dropped-held-back", 30);
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    let line = report_line(&c.stderr, "dropped-held-back-pool");
    assert!(
        !line.contains("runtime shutdown") && !line.contains("to wait for them"),
        "the exit report blames a runtime shutdown, or advises a shutdown that would never \
         end: {line}"
    );
    assert!(
        line.contains("1 task(s)") && line.contains("rate_limit"),
        "the exit report does not say what became of the task: {line}"
    );
}

/// Finding 223. The same task in a pool still alive at the exit (a pool in a `static`): the report
/// counted it "unfinished at process exit" and advised `pool.shutdown().await` "to wait
/// for" it, which would never return.
#[test]
fn a_live_pools_held_back_task_gets_no_advice_that_would_hang_at_exit() {
    let c = support::run_child("live-held-back", 30);
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    let line = report_line(&c.stderr, "live-held-back-pool");
    assert!(
        !line.contains("to wait for them"),
        "the exit report advises a shutdown that would never end: {line}"
    );
    assert!(
        line.contains("1 task(s)") && line.contains("rate_limit"),
        "the exit report does not say why the task never started: {line}"
    );
}

#[test]
#[ignore = "a child process of the exit-report tests"]
fn child() {
    let (scenario, _dir) = support::child_scenario();
    let rt = support::current_thread();
    match scenario.as_str() {
        "dropped-held-back" => rt.block_on(async {
            let pool = nb_aiopool::CommonAioPool::builder()
                .name("dropped-held-back-pool")
                .max_concurrency(2)
                .rate_limit(1, Duration::MAX)
                .process_wide(false)
                .build();
            pool.run(async {}).await.unwrap();
            let held = pool.submit(async {}).await.unwrap();
            drop(pool);
            let err = held.await.unwrap_err();
            assert_eq!(
                err.cancel_reason(),
                Some(nb_aiopool::CancelReason::RuntimeShutdown)
            );
        }),
        "live-held-back" => rt.block_on(async {
            let pool = nb_aiopool::CommonAioPool::builder()
                .name("live-held-back-pool")
                .max_concurrency(2)
                .rate_limit(1, Duration::MAX)
                .process_wide(false)
                .build();
            pool.run(async {}).await.unwrap();
            pool.submit(async {}).await.unwrap().detach();
            // Alive at the exit, as a pool in a `static` is.
            std::mem::forget(pool);
        }),
        other => panic!("unknown scenario {other}"),
    }
    // The runtime lives on to the exit: nothing is lost to its shutdown.
    std::mem::forget(rt);
}
