//! Findings of review redis2 (of 1ac8385): each test failed before its fix.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use nb_aiopool_redis::{RedisQueue, Worker};
use support::*;

/// `nb-aiopool-redis --help` with the URL (and its password) in `REDIS_URL`, as the README
/// suggests, must not print the password: help output ends up in terminals, CI logs and
/// bug reports.
#[test]
fn cli_help_does_not_print_the_password_from_redis_url() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nb-aiopool-redis"))
        .arg("--help")
        .env("REDIS_URL", "redis://admin:s3cr3t-pass@db.example:6379/0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "--help failed: {stdout}");
    assert!(
        stdout.contains("REDIS_URL"),
        "the help still names the variable: {stdout}"
    );
    assert!(
        !stdout.contains("s3cr3t-pass"),
        "--help printed the password from REDIS_URL:\n{stdout}"
    );
}

/// `QueueBuilder` is `Debug`; its output (a log line, a panic message) must not carry the
/// password of the URL, as `WorkerBuilder`'s, `Worker`'s and `RedisQueue`'s do not.
#[test]
fn queue_builder_debug_does_not_show_the_password() {
    let b = RedisQueue::builder("redis://admin:s3cr3t-pass@db.example:6379/0", "emails").max_len(5);
    let shown = format!("{b:?}");
    assert!(shown.contains("emails"), "{shown}");
    assert!(
        !shown.contains("s3cr3t-pass"),
        "QueueBuilder's Debug shows the password: {shown}"
    );
    let w = Worker::builder("redis://admin:s3cr3t-pass@db.example:6379/0", "emails")
        .task("t", |_: u64| async { Ok::<(), String>(()) });
    assert!(!format!("{w:?}").contains("s3cr3t-pass"));
}

/// A handler that stops its own worker (a "stop" job, a handler that sees a fatal
/// condition) and awaits `shutdown()`: the shutdown waits for running jobs, this one
/// among them, which waits for the shutdown. The core crate's promise is that a
/// `shutdown()` made inside a job of its own pool does not wait for that job; here `run`
/// and the handler hung for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_awaited_inside_its_own_handler_does_not_hang() {
    let server = RedisServer::start();
    let url = server.url();
    let q = RedisQueue::connect(&url, "selfstop").await.unwrap();
    let me: Arc<OnceLock<Worker>> = Arc::new(OnceLock::new());
    let ran = Arc::new(AtomicU64::new(0));
    let worker = {
        let me = me.clone();
        let ran = ran.clone();
        Worker::builder(&url, "selfstop")
            .concurrency(2)
            .task("stop", move |_: u64| {
                let me = me.clone();
                let ran = ran.clone();
                async move {
                    let w = me.get().expect("worker set").clone();
                    w.shutdown().await;
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), String>(())
                }
            })
            .build()
            .await
            .unwrap()
    };
    me.set(worker.clone()).unwrap();
    let id = q.submit("stop", &1u64).await.unwrap();
    let run = {
        let w = worker.clone();
        tokio::spawn(async move { w.run().await })
    };
    let report = within(10, "run to return after a handler called shutdown()", run)
        .await
        .unwrap()
        .unwrap();
    assert!(report.drained, "{report:?}");
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "the handler went on after its shutdown()"
    );
    // The job that asked for the stop finished and was acknowledged, not left pending.
    let s = q.stats().await.unwrap();
    assert_eq!(
        (s.waiting, s.in_flight, s.completed),
        (0, 0, 1),
        "{s:?} ({id})"
    );
    // Another shutdown from outside returns the same way.
    let _ = within(5, "a later shutdown()", worker.shutdown()).await;
}
