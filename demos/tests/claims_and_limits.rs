//! The demos as a user runs them (a review of 2026-12-05, evening, on c77046b): the
//! command lines of `backpressure` and `http_load` with bad values, the HTTP demo's counts
//! and latencies against a server that records what it did, the process monitor against
//! `/proc`, and the README's commands. The first tests each show a fault (they failed on
//! c77046b); the `pin_` ones pin behaviour that was checked and found right. They run the
//! built binaries with small sizes (`cargo test -p nb-aiopool-demos --test claims_and_limits`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nb_aiopool_demos::monitor::ProcessMonitor;

mod common;

use common::*;

/// The tests that start a monitor in this process, one at a time (one counts the
/// monitor threads, the other sets the panic hook).
static IN_PROCESS_MONITOR: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------
// Faults

/// `--url` with a port that is not a port (above 65535, or not a number) was accepted,
/// and the run went to port 80: hyper's `Uri` keeps the text, `port_u16()` gives `None`
/// for it, and `KeptConnections::new` (like hyper-util's connector) falls back to 80. A
/// load tool must not send its traffic to another port than the one asked for.
#[test]
fn http_url_with_a_port_out_of_range_is_a_usage_error() {
    for url in [
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:65536/",
        "http://127.0.0.1:8o8o/",
        "http://localhost:-1/",
    ] {
        let out = run_for(
            HTTP_LOAD,
            &[
                "--mode=pool",
                &format!("--url={url}"),
                "--requests=1",
                "--concurrency=1",
                "--timeout-ms=200",
            ],
            Duration::from_secs(20),
        );
        assert!(
            out.code() == Some(2) && out.stderr.contains("port"),
            "--url={url}: expected a usage error about the port (exit 2); got\n{}",
            out.describe()
        );
    }
}

/// A loopback server (plain threads, HTTP/1.1 keep-alive) that answers each request after
/// `delay` with a body of `body` bytes, `503` instead of `200` for every `fail_every`-th
/// request (0: never); counts the requests it answered and the connections it accepted.
struct TestServer {
    url: String,
    requests: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
}

fn test_server(delay: Duration, body: usize, fail_every: u64) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let body: Arc<[u8]> = vec![b'x'; body].into();
    let (r, c) = (requests.clone(), connections.clone());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            c.fetch_add(1, Ordering::Relaxed);
            let (r, body) = (r.clone(), body.clone());
            thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    // One request head (GET: no body).
                    let end = loop {
                        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    };
                    pending.drain(..end);
                    thread::sleep(delay);
                    let n = r.fetch_add(1, Ordering::Relaxed) + 1;
                    let status = if fail_every > 0 && n % fail_every == 0 {
                        "503 Service Unavailable"
                    } else {
                        "200 OK"
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    if stream.write_all(head.as_bytes()).is_err()
                        || stream.write_all(&body).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    TestServer {
        url,
        requests,
        connections,
    }
}

/// `--client legacy` collected every response body whole (`HttpClient::get`'s legacy arm,
/// `collect().await`), where `conn` and `raw` count the frames and drop them: its memory
/// grew by concurrency x body size (40 x 10 MiB: ~350 MiB, against ~20 MiB for `conn` and
/// ~1 MiB for `raw`), so `--response-bytes` up to the 1 GiB the parser allows, at the
/// default concurrency of 1000, asks for a terabyte; and its peak RSS, which `compare`
/// prints, measured the bodies, not the client.
#[test]
fn http_legacy_client_does_not_hold_whole_bodies() {
    const BODY: usize = 8 << 20;
    let server = test_server(Duration::ZERO, BODY, 0);
    let out = run_for(
        HTTP_LOAD,
        &[
            "--mode=pool",
            "--client=legacy",
            &format!("--url={}", server.url),
            "--requests=24",
            "--concurrency=24",
        ],
        Duration::from_secs(60),
    );
    let r = out.result();
    assert_eq!(num(&r, "ok"), 24.0, "{}", out.describe());
    assert_eq!(num(&r, "body_bytes"), (24 * BODY) as f64, "{r}");
    let growth = num(&r, "peak_rss_mib") - num(&r, "base_rss_mib");
    assert!(
        growth < 64.0,
        "24 requests at once for an 8 MiB body each grew the client by {growth:.1} MiB: \
         the bodies were held whole (24 x 8 MiB = 192 MiB)\n{r}"
    );
}

/// `--kind sleep:N` took any u64: a task of `sleep:18446744073709551615` sleeps for tokio's
/// "far future" (about 30 years), so the run never ends; every other duration of the demos
/// is bounded (`--monitor-interval-ms` a day, `http_load`'s a year).
#[test]
fn backpressure_huge_sleep_is_a_usage_error_not_a_hang() {
    for kind in ["sleep:18446744073709551615", "sleep:100000000000"] {
        let out = run_for(
            BACKPRESSURE,
            &["--mode=common", "--tasks=1", &format!("--kind={kind}")],
            Duration::from_secs(5),
        );
        assert!(
            out.status.is_some(),
            "--kind={kind}: still running after 5 s (killed)\n{}",
            out.describe()
        );
        out.assert_usage_error();
    }
}

/// Finding 231 refused `--port` and `--serve-seconds` without `--serve-only`, and
/// `--threads` with `--runtime current`; the other directions still ignore a flag without
/// a word: the client's flags with `--serve-only` (`--mode pool --url ... --requests 5`
/// serve and send nothing), `--response-bytes` with `--url` (no server of ours to size),
/// and `backpressure --queue-size` with `--mode no-queue` or `--mode semaphore`, which
/// have no queue (the RESULT line then says `queue=0`).
#[test]
fn flags_that_do_not_apply_are_usage_errors() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("--url=http://127.0.0.1:{closed}/");
    let cases: [(&str, Vec<&str>); 5] = [
        (
            HTTP_LOAD,
            vec!["--serve-only", "--serve-seconds=1", "--mode=pool"],
        ),
        (
            HTTP_LOAD,
            vec!["--serve-only", "--serve-seconds=1", "--requests=5"],
        ),
        (
            HTTP_LOAD,
            vec!["--mode=pool", &url, "--requests=1", "--response-bytes=1000"],
        ),
        (
            BACKPRESSURE,
            vec!["--mode=no-queue", "--tasks=10", "--queue-size=5"],
        ),
        (
            BACKPRESSURE,
            vec!["--mode=semaphore", "--tasks=10", "--queue-size=5"],
        ),
    ];
    for (exe, args) in cases {
        let out = run_for(exe, &args, Duration::from_secs(20));
        assert!(
            out.code() == Some(2),
            "{exe} {args:?}: a flag that does not apply was ignored (expected exit 2)\n{}",
            out.describe()
        );
        out.assert_usage_error();
    }
}

/// `ProcessMonitor::start` documents one panic (a zero interval); a very long interval
/// (`Duration::MAX`, "report never") made the monitor thread panic at once ("overflow when
/// adding duration to instant", `run`), printed by the panic hook, and left the monitor
/// without its thread.
#[test]
fn monitor_with_a_very_long_interval_does_not_panic() {
    let _one = IN_PROCESS_MONITOR.lock().unwrap_or_else(|e| e.into_inner());
    let panics: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if thread::current().name() == Some("nb-aiopool-monitor") {
            seen.lock().unwrap().push(info.to_string());
        } else {
            previous(info);
        }
    }));
    let monitor = ProcessMonitor::start(Duration::MAX, |_| {}).expect("a monitor");
    thread::sleep(Duration::from_millis(200));
    let last = monitor.stop();
    let _ = std::panic::take_hook();
    assert!(last.is_some());
    let panics = panics.lock().unwrap();
    assert!(panics.is_empty(), "the monitor thread panicked: {panics:?}");
}

// ---------------------------------------------------------------------------------------
// Pins: checked and found right

/// What the HTTP demo counts is what the server did: requests sent, `ok`, `err_status`,
/// body bytes, and latencies at least the server's delay, for each client in both modes.
#[test]
fn pin_http_counts_and_latencies_match_the_server() {
    for mode in ["pool", "semaphore"] {
        for client in ["conn", "raw", "legacy"] {
            let server = test_server(Duration::from_millis(20), 100, 5);
            let out = run_for(
                HTTP_LOAD,
                &[
                    &format!("--mode={mode}"),
                    &format!("--client={client}"),
                    &format!("--url={}", server.url),
                    "--requests=40",
                    "--concurrency=4",
                ],
                Duration::from_secs(30),
            );
            let r = out.result();
            let what = format!("{mode}/{client}\n{}", out.describe());
            assert_eq!(out.code(), Some(0), "{what}");
            assert_eq!(server.requests.load(Ordering::Relaxed), 40, "{what}");
            assert_eq!(num(&r, "requests"), 40.0, "{what}");
            assert_eq!(num(&r, "ok"), 32.0, "{what}");
            assert_eq!(num(&r, "err_status"), 8.0, "{what}");
            assert_eq!(num(&r, "errors"), 8.0, "{what}");
            assert_eq!(num(&r, "body_bytes"), 3200.0, "{what}");
            for key in ["p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"] {
                assert!(
                    num(&r, key) >= 19.9,
                    "{key} below the server's 20 ms: {what}"
                );
            }
            assert!(num(&r, "p50_ms") <= num(&r, "p90_ms"), "{what}");
            assert!(num(&r, "p90_ms") <= num(&r, "p99_ms"), "{what}");
            assert!(num(&r, "p99_ms") <= num(&r, "max_ms"), "{what}");
            // At most one connection per slot, plus one per 503 (dropped after it), for the
            // clients that count their own.
            if client != "legacy" {
                let opened = num(&r, "client_connections");
                assert!((1.0..=12.0).contains(&opened), "{what}");
                assert_eq!(
                    server.connections.load(Ordering::Relaxed) as f64,
                    opened,
                    "{what}"
                );
            }
        }
    }
}

/// A server that accepts and then resets every connection, and one that answers nothing:
/// each request is counted once as an error, the run ends within its timeouts and exits 1
/// with its RESULT line, in both modes and with each client.
#[test]
fn pin_http_ends_cleanly_against_a_server_that_resets_or_stalls() {
    // Resets: accept, then close without reading (the request's write or read fails).
    let resetting = TcpListener::bind("127.0.0.1:0").unwrap();
    let reset_url = format!("http://{}/", resetting.local_addr().unwrap());
    thread::spawn(move || {
        for stream in resetting.incoming() {
            drop(stream);
        }
    });
    // Stalls: the kernel accepts, nobody reads.
    let stalling = TcpListener::bind("127.0.0.1:0").unwrap();
    let stall_url = format!("http://{}/", stalling.local_addr().unwrap());
    for (url, kind) in [(&reset_url, "reset"), (&stall_url, "stall")] {
        for mode in ["pool", "semaphore"] {
            for client in ["conn", "raw", "legacy"] {
                let started = Instant::now();
                let out = run_for(
                    HTTP_LOAD,
                    &[
                        &format!("--mode={mode}"),
                        &format!("--client={client}"),
                        &format!("--url={url}"),
                        "--requests=12",
                        "--concurrency=4",
                        "--timeout-ms=100",
                    ],
                    Duration::from_secs(20),
                );
                let what = format!("{kind} {mode}/{client}\n{}", out.describe());
                assert_eq!(out.code(), Some(1), "{what}");
                let r = out.result();
                assert_eq!(num(&r, "requests"), 12.0, "{what}");
                assert_eq!(num(&r, "ok"), 0.0, "{what}");
                assert_eq!(num(&r, "errors"), 12.0, "{what}");
                if kind == "stall" {
                    assert_eq!(num(&r, "err_timeout"), 12.0, "{what}");
                }
                assert!(started.elapsed() < Duration::from_secs(10), "{what}");
            }
        }
    }
    drop(stalling);
}

/// The monitor's figures are the kernel's: resident memory as `/proc/self/status` says it,
/// CPU time as `/proc/self/stat` (utime + stime) says it, the peak at least the kernel's
/// high-water mark; and its thread is gone once `stop` returns.
#[test]
fn pin_monitor_agrees_with_proc_and_its_thread_ends() {
    fn status_kib(field: &str) -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    }
    fn proc_rss() -> u64 {
        status_kib("VmRSS:")
    }
    fn proc_cpu_s() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // Fields 14 and 15 of stat; `after` starts at field 3. Ticks of 1/100 s.
        (f[11] + f[12]) as f64 / 100.0
    }
    fn monitor_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim() == "nb-aiopool-moni")
            .count()
    }
    if !std::path::Path::new("/proc/self/status").exists() {
        return; // not Linux
    }
    let _one = IN_PROCESS_MONITOR.lock().unwrap_or_else(|e| e.into_inner());
    // A new thread sets its name itself, just after it starts: poll for it.
    let count_becomes = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while monitor_threads() != n {
            assert!(
                Instant::now() < deadline,
                "{} monitor threads, expected {n}",
                monitor_threads()
            );
            thread::sleep(Duration::from_millis(5));
        }
    };
    let before = monitor_threads();
    let monitor = ProcessMonitor::start(Duration::from_millis(10), |_| {}).unwrap();
    count_becomes(before + 1);
    // Touch 64 MiB and burn some CPU, so both figures move.
    let block = vec![3u8; 64 << 20];
    let spin = Instant::now();
    let mut x = 0u64;
    while spin.elapsed() < Duration::from_millis(300) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    let (rss_a, cpu_a) = (proc_rss(), proc_cpu_s());
    let s = monitor.sample_now().unwrap();
    let (rss_b, cpu_b) = (proc_rss(), proc_cpu_s());
    let slack = 8 << 20; // other tests' threads run in this process too
    assert!(
        s.rss_bytes + slack >= rss_a.min(rss_b) && s.rss_bytes <= rss_a.max(rss_b) + slack,
        "monitor rss {} vs /proc {rss_a}..{rss_b}",
        s.rss_bytes
    );
    assert!(
        s.cpu_seconds >= cpu_a - 0.011 && s.cpu_seconds <= cpu_b + 0.011,
        "monitor cpu {} s vs /proc {cpu_a}..{cpu_b} s",
        s.cpu_seconds
    );
    let hwm = status_kib("VmHWM:");
    assert!(s.peak_rss_bytes >= s.rss_bytes);
    assert!(
        s.peak_rss_bytes + slack >= hwm,
        "peak {} vs VmHWM {hwm}",
        s.peak_rss_bytes
    );
    assert_eq!(block.len(), 64 << 20);
    drop(block);
    assert!(monitor.stop().is_some());
    // `stop` joined the thread (the kernel may list it for a moment after that).
    count_becomes(before);
}

/// The backpressure demo's claim, as it measures it: a pool's peak memory does not grow
/// with the number of tasks; the Semaphore pattern's does, by its ~0.7 KiB per task.
#[test]
fn pin_backpressure_memory_flat_under_a_pool_growing_with_a_semaphore() {
    let peak = |mode: &str, tasks: u64| {
        let out = run_for(
            BACKPRESSURE,
            &[
                &format!("--mode={mode}"),
                &format!("--tasks={tasks}"),
                "--concurrency=100",
            ],
            Duration::from_secs(60),
        );
        let r = out.result();
        assert_eq!(out.code(), Some(0), "{}", out.describe());
        assert_eq!(num(&r, "completed"), tasks as f64, "{r}");
        assert_eq!(num(&r, "payload_ok"), 1.0, "{r}");
        num(&r, "peak_rss_mib") - num(&r, "base_rss_mib")
    };
    let (small, big) = (20_000, 200_000);
    let pool = (peak("common", small), peak("common", big));
    let naive = (peak("semaphore", small), peak("semaphore", big));
    assert!(
        pool.1 < pool.0 + 8.0,
        "the pool's growth went from {:.1} to {:.1} MiB for 10x the tasks",
        pool.0,
        pool.1
    );
    assert!(
        naive.1 > naive.0 + 60.0,
        "the semaphore's growth went from {:.1} to {:.1} MiB for 10x the tasks",
        naive.0,
        naive.1
    );
}

/// `compare` with `--queue-size` (which the single modes without a queue now refuse)
/// hands it to the modes that have one only: every child runs, and says its queue.
#[test]
fn pin_compare_with_a_queue_size_runs_every_mode() {
    let out = run(
        BACKPRESSURE,
        &["--tasks=50", "--concurrency=4", "--queue-size=3"],
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let found = out.results();
    let queue = |mode: &str| {
        let r = found
            .iter()
            .find(|r| r.mode() == mode)
            .unwrap_or_else(|| panic!("no {mode} row\n{}", out.describe()));
        assert_eq!(num(r, "completed"), 50.0, "{r}");
        num(r, "queue")
    };
    assert_eq!(queue("common"), 3.0);
    assert_eq!(queue("smart"), 3.0);
    assert_eq!(queue("no-queue"), 0.0);
    assert_eq!(queue("semaphore"), 0.0);

    let out = run(
        HTTP_LOAD,
        &["--requests=20", "--concurrency=2", "--queue-size=1"],
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let found = out.results();
    for mode in ["pool", "semaphore"] {
        let r = found
            .iter()
            .find(|r| r.mode() == mode)
            .unwrap_or_else(|| panic!("no {mode} row\n{}", out.describe()));
        assert_eq!(num(r, "ok"), 20.0, "{r}");
    }
}
