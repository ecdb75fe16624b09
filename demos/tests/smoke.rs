//! Smoke tests: run both demo binaries with small sizes and check the figures they report.

use std::process::{Command, Output};

use nb_aiopool_demos::memory::EXIT_REFUSED;
use nb_aiopool_demos::report::ResultLine;

const BACKPRESSURE: &str = env!("CARGO_BIN_EXE_backpressure");
const HTTP_LOAD: &str = env!("CARGO_BIN_EXE_http_load");

fn run(exe: &str, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        // Quiet: no bar (stderr is not a terminal anyway), no per-interval lines.
        .args(["--no-progress", "--monitor-interval-ms=0"])
        .output()
        .expect("the demo binary runs")
}

fn results(out: &Output) -> Vec<ResultLine> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ResultLine::find_all(&stdout)
}

fn num(r: &ResultLine, key: &str) -> f64 {
    r.num(key)
        .unwrap_or_else(|| panic!("`{key}` missing or not a number in {r}"))
}

/// Peak RSS growth of a run, in MiB.
fn growth_mib(r: &ResultLine) -> f64 {
    num(r, "peak_rss_mib") - num(r, "base_rss_mib")
}

fn check_backpressure(r: &ResultLine, tasks: f64) {
    assert_eq!(num(r, "tasks"), tasks, "{r}");
    assert_eq!(num(r, "completed"), tasks, "{r}");
    assert_eq!(num(r, "payload_ok"), 1.0, "{r}");
    assert!(num(r, "tasks_per_s") > 0.0, "{r}");
    let wall = num(r, "wall_s");
    assert!(wall > 0.0, "{r}");
    assert!(num(r, "base_rss_mib") > 0.0, "{r}");
    // bytes_per_task is the growth per task (the MiB figures are rounded to 0.1 MiB).
    let per_task = growth_mib(r).max(0.0) * 1048576.0 / tasks;
    let rounding = 0.1 * 1048576.0 / tasks + 1.0;
    assert!(
        (num(r, "bytes_per_task") - per_task).abs() <= rounding,
        "bytes_per_task does not match the growth: {r}"
    );
    // CPU seconds of the whole process, in seconds (not ms or µs): at most every core
    // busy for the run, plus the start-up.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert!(num(r, "cpu_s") <= (wall + 1.0) * cores, "{r}");
}

#[test]
fn backpressure_compare_runs_every_mode() {
    // The current-thread runtime runs no task before the semaphore mode's spawning loop
    // ends, so all 30,000 tasks (~40 MiB) exist at once whatever the number of cores; the
    // pools hold 200 at most (~1-2 MiB of growth).
    let out = run(
        BACKPRESSURE,
        &[
            "--mode=compare",
            "--tasks=30000",
            "--concurrency=100",
            "--runtime=current",
        ],
    );
    let found = results(&out);
    let get = |mode: &str| {
        found
            .iter()
            .find(|r| r.mode() == mode)
            .unwrap_or_else(|| panic!("no RESULT for {mode} in {found:?}"))
    };
    for mode in ["common", "no-queue", "smart", "semaphore"] {
        let r = get(mode);
        check_backpressure(r, 30000.0);
        assert_eq!(num(r, "concurrency"), 100.0, "{r}");
        // 30,000 tasks take milliseconds of CPU at the least.
        assert!(num(r, "cpu_s") > 0.0, "{r}");
    }
    // The demo's claim: the naive pattern's memory grows with the tasks, the pools' not.
    let naive = get("semaphore");
    assert!(
        growth_mib(naive) > 10.0,
        "30,000 tasks at once should take well over 10 MiB: {naive}"
    );
    for pool in ["common", "no-queue", "smart"] {
        let r = get(pool);
        assert!(
            growth_mib(naive) > 2.0 * growth_mib(r),
            "semaphore's peak RSS growth is not clearly above {pool}'s:\n{naive}\n{r}"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("peak RSS MiB"),
        "no summary table:\n{stdout}"
    );
    assert!(stdout.contains("semaphore / common"), "no ratio:\n{stdout}");
}

#[test]
fn backpressure_single_mode_with_sleeping_tasks() {
    let out = run(
        BACKPRESSURE,
        &[
            "--mode=common",
            "--tasks=2000",
            "--concurrency=500",
            "--queue-size=10",
            "--kind=sleep:5",
            "--payload-bytes=1000",
            "--runtime=multi",
            "--threads=2",
        ],
    );
    let found = results(&out);
    assert_eq!(found.len(), 1, "{found:?}");
    check_backpressure(&found[0], 2000.0);
    assert_eq!(num(&found[0], "queue"), 10.0);
    assert_eq!(found[0].get("kind"), Some("sleep:5"));
    // 2000 tasks of 5 ms, 500 at a time: at least 4 rounds of 5 ms.
    assert!(num(&found[0], "wall_s") >= 0.02, "{}", found[0]);
}

#[test]
fn semaphore_mode_refuses_what_would_exhaust_memory() {
    let out = run(BACKPRESSURE, &["--mode=semaphore", "--tasks=100000000000"]);
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing"), "{stderr}");
    assert!(
        stderr.contains("--i-know-it-may-exhaust-memory"),
        "{stderr}"
    );
    assert!(ResultLine::find_all(&String::from_utf8_lossy(&out.stdout)).is_empty());
}

#[test]
fn pool_mode_refuses_what_it_would_hold_beyond_memory() {
    // 2001 tasks held at once (concurrency + queue + the one submitted) of 1 GiB each.
    let out = run(
        BACKPRESSURE,
        &[
            "--mode=common",
            "--tasks=100000",
            "--payload-bytes=1073741824",
        ],
    );
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to run the common mode"),
        "{stderr}"
    );
    assert!(ResultLine::find_all(&String::from_utf8_lossy(&out.stdout)).is_empty());
}

#[test]
fn bad_task_kind_is_a_usage_error() {
    let out = run(BACKPRESSURE, &["--kind=nap"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sleep:<milliseconds>"));
}

fn check_http(r: &ResultLine, requests: f64) {
    assert_eq!(num(r, "requests"), requests, "{r}");
    assert_eq!(num(r, "ok"), requests, "{r}");
    assert_eq!(num(r, "errors"), 0.0, "{r}");
    assert_eq!(num(r, "skipped"), 0.0, "{r}");
    assert!(num(r, "rps") > 0.0, "{r}");
    assert!(num(r, "p50_ms") > 0.0, "{r}");
    assert!(num(r, "p99_ms") >= num(r, "p50_ms"), "{r}");
    assert!(num(r, "max_ms") >= num(r, "p99_ms"), "{r}");
    assert!(num(r, "peak_rss_mib") > 0.0, "{r}");
    // Every body arrived whole (32 bytes by default).
    assert_eq!(num(r, "body_bytes"), requests * 32.0, "{r}");
}

#[test]
fn http_compare_against_its_own_server() {
    let out = run(
        HTTP_LOAD,
        &["--mode=compare", "--requests=2000", "--concurrency=50"],
    );
    let found = results(&out);
    for mode in ["pool", "semaphore"] {
        let r = found
            .iter()
            .find(|r| r.mode() == mode)
            .unwrap_or_else(|| panic!("no RESULT for {mode} in {found:?}"));
        check_http(r, 2000.0);
        assert_eq!(r.get("server"), Some("external"), "{r}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server: requests=4000 "), "{stderr}");
}

#[test]
fn http_single_mode_with_in_process_server() {
    let out = run(
        HTTP_LOAD,
        &["--mode=pool", "--requests=1000", "--concurrency=20"],
    );
    let found = results(&out);
    assert_eq!(found.len(), 1, "{found:?}");
    check_http(&found[0], 1000.0);
    assert_eq!(found[0].get("server"), Some("in-process"));
}

#[test]
fn http_every_client_on_both_runtimes() {
    for client in ["conn", "raw", "legacy"] {
        for runtime in ["current", "multi"] {
            let out = run(
                HTTP_LOAD,
                &[
                    "--mode=pool",
                    "--requests=500",
                    "--concurrency=10",
                    &format!("--client={client}"),
                    &format!("--runtime={runtime}"),
                ],
            );
            let found = results(&out);
            assert_eq!(found.len(), 1, "{client} {runtime}: {out:?}");
            check_http(&found[0], 500.0);
            assert_eq!(found[0].get("client"), Some(client));
            let connections = num(&found[0], "client_connections");
            if client == "legacy" {
                // The pooled client may open more connections than slots.
                assert!(connections >= 1.0, "{}", found[0]);
            } else {
                // One persistent connection per slot.
                assert_eq!(connections, 10.0, "{}", found[0]);
            }
        }
    }
}

#[test]
fn http_duration_bounds_the_run() {
    let out = run(
        HTTP_LOAD,
        &[
            "--mode=pool",
            "--requests=100000000",
            "--duration-s=0.5",
            "--concurrency=10",
            "--client=raw",
        ],
    );
    let found = results(&out);
    assert_eq!(found.len(), 1, "{out:?}");
    let r = &found[0];
    let requests = num(r, "requests");
    assert!(requests > 0.0 && requests < 100_000_000.0, "{r}");
    check_http(r, requests);
    assert!(num(r, "wall_s") < 10.0, "{r}");
}

#[test]
fn http_refuses_non_loopback_targets() {
    // Refused before any connection is attempted.
    let out = run(
        HTTP_LOAD,
        &["--mode=pool", "--url=http://192.0.2.1/", "--requests=1"],
    );
    assert_eq!(out.status.code(), Some(EXIT_REFUSED), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));
}

#[test]
fn http_serve_only_stops_by_itself() {
    let out = Command::new(HTTP_LOAD)
        .args(["--serve-only", "--serve-seconds=1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("LISTENING http://127.0.0.1:"), "{stdout}");
    assert!(
        stdout.contains("SERVED requests=0 connections=0"),
        "{stdout}"
    );
}
