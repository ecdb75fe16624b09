//! What queued tasks of a saturated key cost the starts of other keys (RELIABILITY.md,
//! finding 376): a `CommonAioPool` of 8 slots with `max_per_key(4)`, on a current-thread
//! runtime. Four tasks of key `slow` hold that key (and 4 slots) all along; `--queued`
//! more of them wait in the queue; then `--others` tasks of 100 other keys (each a
//! `yield_now`) go through the pool behind them. Each start of another key's task visits
//! the saturated key's queued tasks (under the pool's lock), so the time for the others
//! grows with `queued`: this prints it for each `queued`, as a median over `--rounds`
//! rounds run in turn, and its ratio to the run with none queued.
//!
//! A second table times a crawl in which the busy key's tasks run too: `queued` tasks of
//! the busy key and as many of 100 other keys, submitted in turn (each a `yield_now`), all
//! timed, against as many tasks of other keys alone.
//!
//! A third table spreads the waiting tasks over many saturated keys (RELIABILITY.md,
//! finding 378): `max_per_key(1)`, each of `keys` hosts with one task running and `each`
//! more waiting, then `--others` tasks of 100 other keys timed behind them: the same
//! number of waiting tasks over one key and over a thousand.
//!
//! ```sh
//! cargo run --release -p nb-aiopool-bench --bin key_scan -- --queued 0,500,1000,2000,4000
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use nb_aiopool::{CommonAioPool, SubmitOptions};
use tokio::sync::Semaphore;

#[derive(Parser)]
struct Args {
    /// How many tasks of the saturated key wait in the queue, for each run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,500,1000,2000,4000")]
    queued: Vec<usize>,
    /// Tasks of other keys timed behind them.
    #[arg(long, default_value_t = 2000)]
    others: usize,
    /// Rounds: each runs every `queued` once, in turn.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// The time `others` tasks (each a `yield_now`) of 100 keys take through `pool`.
async fn time_others(pool: &CommonAioPool, others: usize) -> Duration {
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(others);
    for i in 0..others {
        let opts = SubmitOptions::new().key(format!("h{}", i % 100));
        let job = tokio::task::yield_now();
        handles.push(pool.submit_with(job, opts).await.unwrap());
    }
    for h in handles {
        h.await.unwrap();
    }
    t0.elapsed()
}

/// The time `others` tasks of 100 keys take behind `queued` tasks of a saturated key.
async fn others_behind(queued: usize, others: usize) -> Duration {
    let pool = CommonAioPool::builder()
        .max_concurrency(8)
        .max_queue_size(queued + others + 8)
        .max_per_key(4)
        .process_wide(false)
        .build();
    let gate = Arc::new(Semaphore::new(0));
    let slow = || SubmitOptions::new().key("slow");
    let mut held = Vec::with_capacity(queued + 4);
    for _ in 0..4 {
        let gate = Arc::clone(&gate);
        let job = async move { drop(gate.acquire().await) };
        held.push(pool.submit_with(job, slow()).await.unwrap());
    }
    for _ in 0..queued {
        held.push(pool.submit_with(async {}, slow()).await.unwrap());
    }
    let took = time_others(&pool, others).await;
    gate.add_permits(4);
    for h in held {
        h.await.unwrap();
    }
    pool.shutdown().await;
    took
}

/// The time `others` tasks of 100 keys take behind `keys` saturated keys (`max_per_key(1)`,
/// one task of each running) with `each` more tasks of each key waiting.
async fn others_behind_spread(keys: usize, each: usize, others: usize) -> Duration {
    let pool = CommonAioPool::builder()
        .max_concurrency(keys + 8)
        .max_queue_size(keys * each + others + 8)
        .max_per_key(1)
        .process_wide(false)
        .build();
    let gate = Arc::new(Semaphore::new(0));
    let mut held = Vec::with_capacity(keys * (each + 1));
    for k in 0..keys {
        let gate = Arc::clone(&gate);
        let job = async move { drop(gate.acquire().await) };
        let opts = SubmitOptions::new().key(format!("busy{k}"));
        held.push(pool.submit_with(job, opts).await.unwrap());
    }
    for k in 0..keys {
        for _ in 0..each {
            let opts = SubmitOptions::new().key(format!("busy{k}"));
            held.push(pool.submit_with(async {}, opts).await.unwrap());
        }
    }
    let took = time_others(&pool, others).await;
    gate.add_permits(keys);
    for h in held {
        h.await.unwrap();
    }
    pool.shutdown().await;
    took
}

/// The time `n` tasks of key `busy` and `n` of 100 other keys, submitted in turn, take
/// through the same pool (with `busy == false`: `2n` tasks of the other keys).
async fn crawl(n: usize, busy: bool) -> Duration {
    let pool = CommonAioPool::builder()
        .max_concurrency(8)
        .max_queue_size(2 * n + 8)
        .max_per_key(4)
        .process_wide(false)
        .build();
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(2 * n);
    for i in 0..2 * n {
        let key = if busy && i % 2 == 0 {
            "busy".to_string()
        } else {
            format!("h{}", i % 100)
        };
        let opts = SubmitOptions::new().key(key);
        handles.push(
            pool.submit_with(tokio::task::yield_now(), opts)
                .await
                .unwrap(),
        );
    }
    for h in handles {
        h.await.unwrap();
    }
    let took = t0.elapsed();
    pool.shutdown().await;
    took
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); args.queued.len()];
    for _ in 0..args.rounds {
        for (i, &queued) in args.queued.iter().enumerate() {
            times[i].push(rt.block_on(others_behind(queued, args.others)));
        }
    }
    let median = |ts: &mut Vec<Duration>| {
        ts.sort();
        ts[ts.len() / 2]
    };
    let medians: Vec<Duration> = times.iter_mut().map(median).collect();
    let base = medians[0];
    println!(
        "| saturated-key tasks queued | {} other tasks: median of {} | against the first row | per other task |",
        args.others, args.rounds
    );
    println!("|---:|---:|---:|---:|");
    for (queued, m) in args.queued.iter().zip(&medians) {
        println!(
            "| {queued} | {:.1} ms | {:.1}× | {:.2} µs |",
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() / base.as_secs_f64(),
            m.as_secs_f64() * 1e6 / args.others as f64
        );
    }
    println!();
    println!(
        "| saturated keys × tasks waiting each | {} other tasks: median of {} | against none waiting | per other task |",
        args.others, args.rounds
    );
    println!("|---|---:|---:|---:|");
    let spreads = [(0, 0), (1, 3000), (1000, 3)];
    let mut spread_times: Vec<Vec<Duration>> = vec![Vec::new(); spreads.len()];
    for _ in 0..args.rounds {
        for (i, &(keys, each)) in spreads.iter().enumerate() {
            spread_times[i].push(rt.block_on(others_behind_spread(keys, each, args.others)));
        }
    }
    let spread_medians: Vec<Duration> = spread_times.iter_mut().map(median).collect();
    for ((keys, each), m) in spreads.iter().zip(&spread_medians) {
        println!(
            "| {keys} × {each} | {:.1} ms | {:.1}× | {:.2} µs |",
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() / spread_medians[0].as_secs_f64(),
            m.as_secs_f64() * 1e6 / args.others as f64
        );
    }
    println!();
    println!(
        "| tasks of the busy key (and as many of others), in turn | all of them: median of {} | other keys alone | ratio |",
        args.rounds
    );
    println!("|---:|---:|---:|---:|");
    for &n in args.queued.iter().filter(|&&n| n > 0) {
        let (mut with, mut alone) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            with.push(rt.block_on(crawl(n, true)));
            alone.push(rt.block_on(crawl(n, false)));
        }
        let (w, a) = (median(&mut with), median(&mut alone));
        println!(
            "| {n} | {:.1} ms | {:.1} ms | {:.2}× |",
            w.as_secs_f64() * 1e3,
            a.as_secs_f64() * 1e3,
            w.as_secs_f64() / a.as_secs_f64()
        );
    }
}
