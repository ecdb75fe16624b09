//! How long aborting many running tasks takes, by how many run (finding 281 of
//! RELIABILITY.md: each abort used to search every slot of its pool under the pool's
//! lock, so aborting all of N running tasks took time in N², the pool stalled meanwhile).
//!
//! For each N: a pool of N slots runs N tasks that never end; the time to abort them all
//! (newest first: the order that searched the most) and for `wait()` to see them end,
//! per task, and the same for a SmartAioPool group of N running tasks dropped. Flat per
//! task across N means linear. One process, runs one after the other: read the ratios
//! between N, not the absolute times (a shared, noisy machine).
//!
//!     cargo run --release -p nb-aiopool-bench --bin abort_many [-- ROUNDS]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nb_aiopool::{CommonAioPool, NoQueueAioPool, SmartAioPool, TaskHandle};

/// A task that never ends by itself; counts its first poll.
fn forever(started: &Arc<AtomicUsize>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let started = Arc::clone(started);
    async move {
        started.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await
    }
}

async fn until_started(started: &AtomicUsize, n: usize) {
    while started.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// µs per task to abort `handles` (`n` running tasks, newest first) and for `wait` (the
/// pool's `wait()`) to see them end.
async fn abort_all(
    handles: Vec<TaskHandle<()>>,
    wait: impl std::future::Future<Output = ()>,
) -> f64 {
    let t = Instant::now();
    handles.iter().rev().for_each(|h| h.abort());
    wait.await;
    t.elapsed().as_secs_f64() * 1e6 / handles.len() as f64
}

/// µs per task to abort `n` running tasks of each kind and see them end.
async fn once(kind: &str, n: usize) -> f64 {
    let started = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(n);
    // A pool of futures (the two kinds' `submit` and `wait` are alike, their types not).
    macro_rules! aborted {
        ($pool:expr) => {{
            let pool = $pool;
            for _ in 0..n {
                handles.push(pool.submit(forever(&started)).await.unwrap());
            }
            until_started(&started, n).await;
            abort_all(handles, pool.wait()).await
        }};
    }
    match kind {
        "common" => aborted!(CommonAioPool::builder()
            .max_concurrency(n)
            .max_queue_size(n)
            .process_wide(false)
            .build()),
        "no-queue" => aborted!(NoQueueAioPool::builder()
            .max_concurrency(n)
            .process_wide(false)
            .build()),
        "smart-group" => {
            let pool = SmartAioPool::builder()
                .max_concurrency(n)
                .process_wide(false)
                .auto_shutdown(false)
                .build();
            let mut group = pool.group();
            for _ in 0..n {
                let s = Arc::clone(&started);
                group.submit(move || forever(&s)).await.unwrap();
            }
            until_started(&started, n).await;
            let t = Instant::now();
            drop(group);
            pool.wait().await;
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        }
        other => unreachable!("{other}"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(3, |r| r.parse().expect("ROUNDS: a number"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sizes = [1_000, 10_000, 50_000];
    println!(
        "µs per task to abort N running tasks and see them end (median of {rounds}; 2 workers)"
    );
    println!();
    println!("| kind | N = 1,000 | N = 10,000 | N = 50,000 | 50,000 / 1,000 |");
    println!("|---|---:|---:|---:|---:|");
    for kind in ["common", "no-queue", "smart-group"] {
        let per: Vec<f64> = sizes
            .iter()
            .map(|&n| median((0..rounds).map(|_| rt.block_on(once(kind, n))).collect()))
            .collect();
        println!(
            "| {kind} | {:.2} | {:.2} | {:.2} | {:.1}× |",
            per[0],
            per[1],
            per[2],
            per[2] / per[0]
        );
    }
}
