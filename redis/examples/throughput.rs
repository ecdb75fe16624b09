//! End-to-end throughput (submit → run → ack, no-op handler, 400-byte payload) against
//! `redis-benchmark`'s XADD rate on the same private server, in the same run.
//!
//! ```text
//! cargo run --release -p nb-aiopool-redis --example throughput -- [--jobs 100000] [--rounds 3]
//! ```
//!
//! Starts its own `redis-server` on a free loopback port (`--save "" --appendonly no`),
//! runs `redis-benchmark -n <jobs> -c 50 -P 1 XADD bench * f <400 bytes>` as the
//! reference, then this crate with one producer (this process, 50 submits in flight, as
//! redis-benchmark's 50 clients) and no, 1, 2 and 4 worker processes (this binary re-run
//! with `worker`), and prints a Markdown table. Every run of ours follows its own
//! redis-benchmark run; the table gives medians of the rates and of the per-pair ratios.
//! Options: `--concurrency N` (slots per worker, 256), `--threads N` (tokio worker threads
//! per process; default 1, a current-thread runtime).

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nb_aiopool_redis::{RedisQueue, Worker};
use serde::{Deserialize, Serialize};

const QUEUE: &str = "throughput";
const IN_FLIGHT_SUBMITS: u64 = 50;

#[derive(Serialize, Deserialize)]
struct Payload {
    n: u64,
    data: String,
}

fn payload(n: u64) -> Payload {
    // {"n":12345,"data":"xxx..."} is 400 bytes for 5-digit n.
    Payload {
        n,
        data: "x".repeat(400 - 28),
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// `--concurrency N` (default 256): slots per worker process.
fn worker_concurrency() -> usize {
    arg("--concurrency")
        .map(|s| s.parse().expect("--concurrency N"))
        .unwrap_or(256)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(port: u16) -> Server {
    let server = Server(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server redis-tools)"),
    );
    let url = format!("redis://127.0.0.1:{port}/");
    for _ in 0..500 {
        if let Ok(mut c) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
            if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                return server;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("redis-server did not start on port {port}");
}

fn redis_benchmark(port: u16, jobs: u64) -> f64 {
    let value = "x".repeat(400);
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-n", &jobs.to_string(), "-c", "50", "-P", "1", "-q"])
        .args(["XADD", "bench", "*", "f", &value])
        .output()
        .expect("redis-benchmark on PATH (apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .split('\r')
        .chain(text.lines())
        .filter_map(|l| {
            l.split(" requests per second")
                .next()?
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .next_back()
        .unwrap_or_else(|| panic!("cannot parse redis-benchmark output: {text}"));
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("DEL").arg("bench").query(&mut c).unwrap();
    rate
}

/// Child mode: one worker process with a no-op handler, until SIGTERM.
async fn worker_process(url: String) {
    let worker = Worker::builder(&url, QUEUE)
        .concurrency(worker_concurrency())
        .task("noop", |_p: Payload| async { Ok::<(), String>(()) })
        .build()
        .await
        .expect("worker build");
    println!("ready");
    let w = worker.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        term.recv().await;
        w.shutdown().await;
    });
    worker.run().await.expect("run");
}

async fn ours(url: &str, workers: usize, jobs: u64) -> f64 {
    let queue = RedisQueue::connect(url, QUEUE).await.unwrap();
    queue.purge().await.unwrap();
    let queue = RedisQueue::connect(url, QUEUE).await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<Child> = (0..workers)
        .map(|_| {
            Command::new(&exe)
                .args(["worker", "--url", url])
                .args(["--concurrency", &worker_concurrency().to_string()])
                .args(["--threads", &arg("--threads").unwrap_or_else(|| "1".into())])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Wait until every worker is connected and in the group (it prints "ready").
    for ch in &mut children {
        let mut line = String::new();
        std::io::BufReader::new(ch.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "worker did not start");
    }
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let producers: Vec<_> = (0..IN_FLIGHT_SUBMITS)
        .map(|_| {
            let (q, next) = (queue.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= jobs {
                        return;
                    }
                    q.submit("noop", &payload(n)).await.unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    let submit_time = t0.elapsed();
    if workers == 0 {
        eprintln!("  submit only: {submit_time:?}");
        queue.purge().await.unwrap();
        return jobs as f64 / submit_time.as_secs_f64();
    }
    loop {
        let s = queue.stats().await.unwrap();
        if s.completed >= jobs {
            assert_eq!((s.waiting, s.in_flight, s.dead), (0, 0, 0), "{s:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let total = t0.elapsed();
    for ch in &mut children {
        // SIGTERM: graceful shutdown.
        let _ = Command::new("kill").arg(ch.id().to_string()).status();
    }
    for ch in &mut children {
        let _ = ch.wait();
    }
    eprintln!("  {workers} worker(s): submits done in {submit_time:?}, all acked in {total:?}");
    jobs as f64 / total.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // Single-threaded runtimes: on a small machine the processes already compete for the
    // cores, and cross-thread wake-ups only add cost. `--threads N` changes it.
    let rt = match arg("--threads").map(|s| s.parse::<usize>().expect("--threads N")) {
        Some(n) if n > 1 => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()
            .unwrap(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    };
    if std::env::args().nth(1).as_deref() == Some("worker") {
        rt.block_on(worker_process(arg("--url").expect("--url")));
        return;
    }
    let jobs: u64 = arg("--jobs").map(|s| s.parse().unwrap()).unwrap_or(100_000);
    let rounds: usize = arg("--rounds").map(|s| s.parse().unwrap()).unwrap_or(3);
    let port = free_port();
    let _server = start_server(port);
    let url = format!("redis://127.0.0.1:{port}/");
    // 0 = submit only, no workers.
    let worker_counts = [0usize, 1, 2, 4];
    // Each measurement of ours is paired with a redis-benchmark run just before it, and
    // the table gives the median of the per-pair ratios: on a shared machine the
    // reference itself moves a lot between runs.
    let mut reference = Vec::new();
    let mut measured: Vec<Vec<f64>> = vec![Vec::new(); worker_counts.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); worker_counts.len()];
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for (i, &w) in worker_counts.iter().enumerate() {
            let r = redis_benchmark(port, jobs);
            reference.push(r);
            let rate = rt.block_on(ours(&url, w, jobs));
            eprintln!("  redis-benchmark XADD {r:.0}/s; ours, {w} worker(s): {rate:.0} jobs/s");
            measured[i].push(rate);
            ratios[i].push(rate / r);
        }
    }
    println!(
        "\n{jobs} jobs per run, {rounds} rounds, medians; payload 400 bytes; 1 producer with \
         {IN_FLIGHT_SUBMITS} submits in flight; workers with concurrency {}\n",
        worker_concurrency()
    );
    println!("| setup | rate (per s) | ratio to the paired redis-benchmark run |");
    println!("|---|---:|---:|");
    println!(
        "| redis-benchmark -c 50 -P 1 XADD (reference, {} runs) | {:.0} (min {:.0}, max {:.0}) | 100% |",
        reference.len(),
        median(reference.clone()),
        reference.iter().cloned().fold(f64::MAX, f64::min),
        reference.iter().cloned().fold(0.0, f64::max)
    );
    for (i, &w) in worker_counts.iter().enumerate() {
        let m = median(measured[i].clone());
        let q = median(ratios[i].clone());
        let setup = if w == 0 {
            "submit only (1 producer, no workers)".to_owned()
        } else {
            format!("submit → run → ack, 1 producer + {w} worker process(es)")
        };
        println!("| {setup} | {m:.0} | {:.0}% |", 100.0 * q);
    }
}
