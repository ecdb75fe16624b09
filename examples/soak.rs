//! Soak run (issue 6; not part of CI): keeps a pool at full load for a while and watches
//! resident memory, to show nothing leaks per task.
//!
//! ```text
//! cargo run --release --example soak -- --pool common --secs 300
//! cargo run --release --example soak -- --pool all --secs 200   # each pool in turn
//! ```
//!
//! Options: `--pool common|no_queue|smart|all` (default `all`), `--secs N` per pool
//! (default 60), `--every N` seconds between reports (default 5), `--concurrency N`
//! (default 100), `--queue N` (default 1000), `--workers N` runtime threads (default 2),
//! `--churn-ms N`: the producers run on runtimes of their own, each dropped and made
//! again every N ms (current-thread and multi-thread in turn), with jobs still queued
//! and running: one pool used from thousands of short-lived runtimes, as a `static`
//! pool is by a test suite (CommonAioPool and NoQueueAioPool jobs then end cancelled
//! with `RuntimeShutdown`; SmartAioPool's run again on the next runtime).
//!
//! Load: three async producers submit without pause; tasks yield, 2% sleep 0-2 ms, 1%
//! panic, 1% are aborted, 90% of the handles are dropped (detached) and the rest awaited
//! in a sliding window. Every `--every` seconds it prints the tasks finished, the rate and
//! VmRSS (from /proc/self/status); at the end the RSS slope by least squares over the
//! samples after the first fifth of the run (the warm-up), in KiB per minute, and the
//! accounting: `submitted - (completed + panicked + cancelled)` must be 0 after shutdown.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nb_aiopool::{CommonAioPool, NoQueueAioPool, PoolStats, SmartAioPool, TaskHandle};

const PANIC_TEXT: &str = "soak: intentional panic";

#[derive(Clone)]
enum Pool {
    Common(CommonAioPool),
    NoQueue(NoQueueAioPool),
    Smart(SmartAioPool),
}

impl Pool {
    fn stats(&self) -> PoolStats {
        match self {
            Pool::Common(p) => p.stats(),
            Pool::NoQueue(p) => p.stats(),
            Pool::Smart(p) => p.stats(),
        }
    }

    async fn submit(&self, kind: u64) -> Option<TaskHandle<u64>> {
        match self {
            Pool::Common(p) => p.submit(job(kind)).await.ok(),
            Pool::NoQueue(p) => p.submit(job(kind)).await.ok(),
            Pool::Smart(p) => p.submit(move || job(kind)).await.ok(),
        }
    }

    async fn shutdown(&self) {
        match self {
            Pool::Common(p) => p.shutdown().await,
            Pool::NoQueue(p) => p.shutdown().await,
            Pool::Smart(p) => p.shutdown().await,
        }
    }
}

/// A task: `kind` (a random number) picks what it does.
async fn job(kind: u64) -> u64 {
    match kind % 100 {
        0 => panic!("{PANIC_TEXT}"),
        1 | 2 => tokio::time::sleep(Duration::from_micros(kind % 2000)).await,
        _ => tokio::task::yield_now().await,
    }
    // A little allocation per task, so a leak of task state would show.
    // Wrapping: `kind` is random, and a debug build checks for overflow.
    let v: Vec<u64> = (0..16u64).map(|i| i.wrapping_mul(kind)).collect();
    v.iter().fold(0, |a, &b| a.wrapping_add(b))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Least-squares slope of `(t seconds, kib)` in KiB per minute.
fn slope_kib_per_min(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mx = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let sxy: f64 = samples.iter().map(|s| (s.0 - mx) * (s.1 as f64 - my)).sum();
    let sxx: f64 = samples.iter().map(|s| (s.0 - mx) * (s.0 - mx)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx * 60.0
    }
}

struct Args {
    pool: String,
    secs: u64,
    every: u64,
    concurrency: usize,
    queue: usize,
    workers: usize,
    churn_ms: Option<u64>,
}

fn parse_args() -> Args {
    let mut a = Args {
        pool: "all".into(),
        secs: 60,
        every: 5,
        concurrency: 100,
        queue: 1000,
        workers: 2,
        churn_ms: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| panic!("soak: {flag} needs a value"))
        };
        match flag.as_str() {
            "--pool" => a.pool = value(),
            "--secs" => a.secs = value().parse().expect("--secs N"),
            "--every" => a.every = value().parse().expect("--every N"),
            "--concurrency" => a.concurrency = value().parse().expect("--concurrency N"),
            "--queue" => a.queue = value().parse().expect("--queue N"),
            "--workers" => a.workers = value().parse().expect("--workers N"),
            "--churn-ms" => a.churn_ms = Some(value().parse().expect("--churn-ms N")),
            other => panic!("soak: unknown option {other}"),
        }
    }
    a
}

/// Submits until `stop` (or `until`), awaiting a sliding window of the handles.
async fn produce(pool: Pool, stop: Arc<AtomicBool>, seq: Arc<AtomicU64>, until: Option<Instant>) {
    let mut window: VecDeque<TaskHandle<u64>> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) && until.is_none_or(|u| Instant::now() < u) {
        // splitmix64 over a shared counter: cheap random numbers.
        let mut z = seq.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let x = z ^ (z >> 31);
        let Some(h) = pool.submit(x).await else { break };
        match x % 100 {
            3 => h.abort(),
            4..=13 => window.push_back(h),
            _ => {} // dropped: detached
        }
        if window.len() > 64 {
            let _ = window.pop_front().unwrap().await;
        }
    }
    if until.is_none() {
        for h in window {
            let _ = h.await;
        }
    }
}

/// A producer on runtimes of its own, each dropped after `churn` with its jobs still
/// queued and running; returns how many runtimes it went through.
fn churning_producer(
    pool: Pool,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
    churn: Duration,
) -> u64 {
    let mut runtimes = 0;
    while !stop.load(Ordering::Relaxed) {
        let rt = if runtimes % 2 == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
        }
        .expect("runtime");
        let until = Instant::now() + churn;
        rt.block_on(produce(
            pool.clone(),
            stop.clone(),
            seq.clone(),
            Some(until),
        ));
        drop(rt);
        runtimes += 1;
    }
    runtimes
}

async fn soak(name: &str, pool: Pool, a: &Args) -> bool {
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0x9E37_79B9_7F4A_7C15));
    let mut producers = Vec::new();
    let mut churners = Vec::new();
    for _ in 0..3 {
        let (pool, stop, seq) = (pool.clone(), stop.clone(), seq.clone());
        match a.churn_ms {
            None => producers.push(tokio::spawn(produce(pool, stop, seq, None))),
            Some(ms) => churners.push(std::thread::spawn(move || {
                churning_producer(pool, stop, seq, Duration::from_millis(ms))
            })),
        }
    }

    let start = Instant::now();
    let total = Duration::from_secs(a.secs);
    let mut samples = Vec::new();
    let mut last_done = 0;
    let mut last_t = start;
    println!(
        "{name}: {} s at full load, max_concurrency {}, queue {}",
        a.secs, a.concurrency, a.queue
    );
    while start.elapsed() < total {
        let left = total.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(a.every))).await;
        let s = pool.stats();
        let done = s.completed + s.panicked + s.cancelled;
        let t = start.elapsed().as_secs_f64();
        let rss = rss_kib();
        samples.push((t, rss));
        let rate = (done - last_done) as f64 / last_t.elapsed().as_secs_f64();
        println!(
            "{name}: t={t:>6.1}s finished={done:>11} rate={rate:>9.0}/s rss={rss} KiB queued={} running={}",
            s.queued, s.running
        );
        last_done = done;
        last_t = Instant::now();
    }
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        let _ = p.await;
    }
    if !churners.is_empty() {
        let joined = tokio::task::spawn_blocking(move || {
            churners
                .into_iter()
                .map(|c| c.join().expect("producer"))
                .sum::<u64>()
        });
        println!(
            "{name}: the producers went through {} runtimes",
            joined.await.expect("join")
        );
    }
    pool.shutdown().await;
    let s = pool.stats();
    let lost = s.submitted as i128 - (s.completed + s.panicked + s.cancelled) as i128;
    let skip = samples.len() / 5;
    let slope = slope_kib_per_min(&samples[skip..]);
    let first = samples.get(skip).map(|s| s.1).unwrap_or(0);
    let last = samples.last().map(|s| s.1).unwrap_or(0);
    println!(
        "{name}: SUMMARY secs={} submitted={} completed={} panicked={} cancelled={} lost={lost} \
         queued={} running={} rss_start={first} KiB rss_end={last} KiB rss_slope={slope:+.1} KiB/min \
         (least squares over {} samples after warm-up)",
        a.secs,
        s.submitted,
        s.completed,
        s.panicked,
        s.cancelled,
        s.queued,
        s.running,
        samples.len() - skip
    );
    lost == 0 && s.queued == 0 && s.running == 0
}

fn main() {
    let a = parse_args();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let text = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !text.contains(PANIC_TEXT) {
            previous(info);
        }
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.workers)
        .enable_all()
        .build()
        .expect("runtime");
    let pools: Vec<&str> = match a.pool.as_str() {
        "all" => vec!["common", "no_queue", "smart"],
        one => vec![one],
    };
    let mut ok = true;
    for name in pools {
        let pool = match name {
            "common" => Pool::Common(CommonAioPool::new(a.concurrency, a.queue)),
            "no_queue" => Pool::NoQueue(NoQueueAioPool::new(a.concurrency)),
            "smart" => Pool::Smart(
                SmartAioPool::builder()
                    .max_concurrency(a.concurrency)
                    .max_queue_size(a.queue)
                    .min_workers(1)
                    .idle_timeout(Duration::from_millis(50))
                    .auto_shutdown(false)
                    .build(),
            ),
            other => panic!("soak: unknown pool {other} (common, no_queue, smart, all)"),
        };
        ok &= rt.block_on(soak(name, pool, &a));
    }
    if !ok {
        eprintln!("soak: tasks unaccounted for");
        std::process::exit(1);
    }
}
