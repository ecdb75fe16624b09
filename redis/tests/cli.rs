//! The `nb-aiopool-redis` command-line tool against a private redis-server.

mod support;

use nb_aiopool_redis::RedisQueue;
use support::*;

fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = cli_run(url, args);
    (code == Some(0), out, err)
}

#[tokio::test]
async fn stats_dead_and_requeue() {
    let server = RedisServer::start();
    let url = server.url();
    let queue = RedisQueue::connect(&url, "cli").await.unwrap();
    for n in 0..3 {
        queue.submit("t", &n).await.unwrap();
    }
    // A dead letter as a worker writes it.
    add_dead_letter(&mut server.conn(), "cli", "1-1", "42");

    let (ok, out, _) = cli(&url, &["cli", "stats"]);
    assert!(ok);
    assert!(
        out.contains("waiting 3  in_flight 0  delayed 0  dead 1  submitted 3"),
        "{out}"
    );

    let (ok, out, _) = cli(
        &url,
        &["cli", "stats", "--watch", "0.05", "--iterations", "2"],
    );
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("completed/s"), "{out}");

    let (ok, out, _) = cli(&url, &["cli", "dead"]);
    assert!(ok);
    assert!(
        out.contains("reason: smtp down") && out.contains("attempts 5"),
        "{out}"
    );

    let (ok, _, err) = cli(&url, &["cli", "requeue", "9-9"]);
    assert!(!ok);
    assert!(err.contains("no such dead letter"), "{err}");
    let (ok, _, err) = cli(&url, &["cli", "requeue"]);
    assert!(!ok && err.contains("--all"), "{err}");

    let (ok, out, _) = cli(&url, &["cli", "requeue", "--all"]);
    assert!(ok);
    assert_eq!(out.trim(), "requeued 1");
    let s = queue.stats().await.unwrap();
    assert_eq!((s.waiting, s.dead), (4, 0));

    let (ok, _, err) = cli(&url, &["bad{name}", "stats"]);
    assert!(!ok && err.contains("invalid name"), "{err}");
    let (ok, _, err) = cli(&url, &["cli", "stats", "--watch", "0"]);
    assert!(!ok && err.contains("--watch"), "{err}");
}

/// `--iterations` applies only with `--watch`, and asks for at least one print: without
/// `--watch` it was ignored, and `--iterations 0` printed once (finding 77). Both are
/// usage errors (status 2), as other flags that do not apply are in the demos.
#[tokio::test]
async fn iterations_without_watch_or_of_zero_is_a_usage_error() {
    let server = RedisServer::start();
    let url = server.url();
    let queue = RedisQueue::connect(&url, "iters").await.unwrap();
    queue.submit("t", &1).await.unwrap();
    for args in [
        &["iters", "stats", "--iterations", "2"][..],
        &["iters", "stats", "--watch", "0.05", "--iterations", "0"][..],
    ] {
        let (code, out, err) = cli_run(&url, args);
        assert_eq!(code, Some(2), "{args:?}: status {code:?}\n{out}\n{err}");
        assert!(err.contains("--iterations"), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: printed before refusing: {out}");
    }
}
