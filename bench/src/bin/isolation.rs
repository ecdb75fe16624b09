//! Issue 9's blocking-isolation figure, for each pool beside `tokio::spawn`.
//!
//! On a 2-worker multi-thread runtime: one job blocks its thread for 300 ms
//! (`std::thread::sleep`), then, 20 ms later, 200 jobs of `tokio::time::sleep(1 ms)` are
//! submitted one after the other. For each of those, the delay from its submit to its end
//! is recorded. A job is *late* when that delay is over 100 ms (issue 9's target: at most
//! 5% late). Every round runs each variant once, in turn, each in a fresh runtime and
//! pool; the table gives medians over the rounds.
//!
//! ```sh
//! cargo run --release -p nb-aiopool-bench --bin isolation -- --rounds 5
//! ```
#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use nb_aiopool::{CommonAioPool, NoQueueAioPool, SmartAioPool};

const VARIANTS: &[&str] = &["tokio-spawn", "common", "no-queue", "smart"];

#[derive(Parser, Debug)]
#[command(about = "Blocking-job isolation: the pools beside tokio::spawn (issue 9)")]
struct Args {
    /// Rounds: every variant runs once per round, in turn.
    #[arg(short = 'r', long, default_value_t = 5)]
    rounds: usize,
    /// Jobs of `sleep(1 ms)` submitted after the blocking one.
    #[arg(short = 'n', long, default_value_t = 200)]
    jobs: usize,
    /// How long the blocking job holds its thread, in milliseconds.
    #[arg(long, default_value_t = 300)]
    block_ms: u64,
}

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One run: the delay of every short job, in milliseconds.
fn run(variant: &str, args: &Args) -> Vec<f64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let block = Duration::from_millis(args.block_ms);
    let jobs = args.jobs;
    let variant = variant.to_string();
    rt.block_on(async move {
        let common = CommonAioPool::new(1000, 1000);
        let no_queue = NoQueueAioPool::new(1000);
        let smart = SmartAioPool::builder()
            .max_concurrency(1000)
            .auto_shutdown(false)
            .build();
        // Submits `job` to the variant; hands back a future that resolves when it has ended.
        #[allow(clippy::async_yields_async)] // that future is awaited later, on purpose
        let submit = |job: Job| {
            let (common, no_queue, smart) = (common.clone(), no_queue.clone(), smart.clone());
            let variant = variant.clone();
            async move {
                if variant == "tokio-spawn" {
                    let h = tokio::spawn(job);
                    return Box::pin(async move { h.await.expect("job") }) as Job;
                }
                let h = match variant.as_str() {
                    "common" => common.submit(job).await.expect("submit"),
                    "no-queue" => no_queue.submit(job).await.expect("submit"),
                    "smart" => {
                        // A recipe runs once here; the job is taken out of its slot.
                        let slot = Arc::new(Mutex::new(Some(job)));
                        smart
                            .submit(move || {
                                let job = slot.lock().expect("slot").take();
                                async move {
                                    if let Some(job) = job {
                                        job.await
                                    }
                                }
                            })
                            .await
                            .expect("submit")
                    }
                    other => panic!("unknown variant {other:?}; known: {}", VARIANTS.join(", ")),
                };
                Box::pin(async move { h.await.expect("job") }) as Job
            }
        };
        let blocker = submit(Box::pin(async move { std::thread::sleep(block) })).await;
        // Let the blocker start on a worker thread.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let delays = Arc::new(Mutex::new(Vec::with_capacity(jobs)));
        let mut handles = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            let delays = delays.clone();
            let submitted = Instant::now();
            handles.push(
                submit(Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let ms = submitted.elapsed().as_secs_f64() * 1e3;
                    delays.lock().expect("delays").push(ms);
                }))
                .await,
            );
        }
        for h in handles {
            h.await;
        }
        blocker.await;
        let delays = delays.lock().expect("delays").clone();
        delays
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

fn main() {
    let args = Args::parse();
    println!(
        "isolation: 1 job blocking {} ms, then {} jobs of sleep(1 ms); 2 workers; {} rounds of [{}]",
        args.block_ms,
        args.jobs,
        args.rounds,
        VARIANTS.join(", ")
    );
    // Per variant: (late, p50, p99, max) of each round.
    let mut rows: Vec<Vec<[f64; 4]>> = vec![Vec::new(); VARIANTS.len()];
    for round in 1..=args.rounds {
        for (i, v) in VARIANTS.iter().enumerate() {
            let mut d = run(v, &args);
            assert_eq!(d.len(), args.jobs, "{v}: a job did not report");
            d.sort_by(f64::total_cmp);
            let late = d.iter().filter(|&&ms| ms > 100.0).count() as f64;
            let r = [
                late,
                percentile(&d, 0.5),
                percentile(&d, 0.99),
                d[d.len() - 1],
            ];
            println!(
                "  round {round} {v:<12} late {:>4}   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
                r[0], r[1], r[2], r[3]
            );
            rows[i].push(r);
        }
    }
    println!("\nMedians of {} rounds:\n", args.rounds);
    println!(
        "| variant | late (> 100 ms) of {} | p50 ms | p99 ms | max ms |",
        args.jobs
    );
    println!("|---|---:|---:|---:|---:|");
    for (i, v) in VARIANTS.iter().enumerate() {
        let col = |k: usize| median(rows[i].iter().map(|r| r[k]).collect());
        println!(
            "| {v} | {:.0} | {:.2} | {:.2} | {:.2} |",
            col(0),
            col(1),
            col(2),
            col(3)
        );
    }
}
