//! A producer and several worker processes sharing one Redis queue.
//!
//! ```text
//! redis-server --port 6379 --save "" &          # or any Redis 7+
//! cargo run -p nb-aiopool-redis --example fleet -- --workers 3 --jobs 2000
//! ```
//!
//! Without a mode it runs the whole demo: starts `--workers` worker processes (this
//! binary re-run as `fleet worker`), submits `--jobs` jobs with a `max_len` of 500
//! (the producer waits when the queue is full), prints the queue's stats twice a second,
//! awaits one job's result, then stops the workers with SIGTERM (a graceful shutdown).
//! One job in 33 fails about half of its runs and is retried after a backoff; the few
//! that fail 5 times in a row end in the dead letters (see the CLI's `dead`).
//!
//! The modes can also run alone, in as many terminals or machines as you like:
//!
//! ```text
//! cargo run -p nb-aiopool-redis --example fleet -- worker [--concurrency 50]
//! cargo run -p nb-aiopool-redis --example fleet -- produce --jobs 10000
//! cargo run -p nb-aiopool-redis --bin nb-aiopool-redis -- images stats --watch 1
//! ```

use std::process::{Child, Command};
use std::time::Duration;

use nb_aiopool_redis::{RedisQueue, Worker};
use serde::{Deserialize, Serialize};

const QUEUE: &str = "images";

#[derive(Serialize, Deserialize, Debug)]
struct Resize {
    id: u64,
    width: u32,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn url() -> String {
    arg("--url").unwrap_or_else(|| "redis://127.0.0.1:6379/".to_owned())
}

/// Worker mode: runs until SIGTERM or Ctrl-C, then shuts down gracefully.
async fn worker() -> Result<(), Box<dyn std::error::Error>> {
    let concurrency = arg("--concurrency").map_or(Ok(50), |s| s.parse())?;
    let worker = Worker::builder(&url(), QUEUE)
        .concurrency(concurrency)
        .lease(Duration::from_secs(10))
        .max_deliveries(5)
        .backoff(Duration::from_millis(200), Duration::from_secs(10))
        .task("resize", |job: Resize| async move {
            // Pretend to work for 5-20 ms; fail once in ~33 jobs, as a flaky service would.
            tokio::time::sleep(Duration::from_millis(5 + job.id % 16)).await;
            if job.id % 33 == 7 && rand_bit() {
                return Err(format!("image service timed out for {}", job.id));
            }
            Ok(job.width / 2)
        })
        .on_error(|e| eprintln!("worker: redis error (retrying): {e}"))
        .build()
        .await?;
    let stopper = worker.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stopper.shutdown_timeout(Duration::from_secs(10)).await;
    });
    let report = worker.run().await?;
    let s = worker.stats();
    println!(
        "worker {} (pid {}): {} succeeded, {} failed runs, {} reclaimed; shutdown {:?}",
        s.consumer,
        std::process::id(),
        s.succeeded,
        s.failed,
        s.reclaimed,
        report
    );
    Ok(())
}

/// A coin flip from the clock, so that a job fails on some deliveries only.
fn rand_bit() -> bool {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() & 1 == 0)
        .unwrap_or(false)
}

async fn produce(queue: &RedisQueue, jobs: u64) -> Result<(), nb_aiopool_redis::Error> {
    for id in 0..jobs {
        // Waits while the queue holds max_len unfinished jobs.
        queue.submit("resize", &Resize { id, width: 1024 }).await?;
    }
    Ok(())
}

async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let workers: usize = arg("--workers").map_or(Ok(3), |s| s.parse())?;
    let jobs: u64 = arg("--jobs").map_or(Ok(2000), |s| s.parse())?;
    let queue = RedisQueue::builder(&url(), QUEUE)
        .max_len(500)
        .connect()
        .await?;
    let before = queue.stats().await?;
    let exe = std::env::current_exe()?;
    let mut children: Vec<Child> = (0..workers)
        .map(|_| Command::new(&exe).args(["worker", "--url", &url()]).spawn())
        .collect::<Result<_, _>>()?;
    println!("started {workers} worker processes; submitting {jobs} jobs");

    let producer = {
        let q = queue.clone();
        tokio::spawn(async move { produce(&q, jobs).await })
    };
    let id = queue
        .submit_with_result(
            "resize",
            &Resize { id: 1, width: 640 },
            Duration::from_secs(60),
        )
        .await?;
    let half: u32 = queue.wait_result(&id, Duration::from_secs(30)).await?;
    println!("job {id} returned {half}");
    loop {
        let s = queue.stats().await?;
        println!(
            "waiting {:5}  in flight {:4}  delayed {:3}  dead {}  completed {}  per worker {:?}",
            s.waiting,
            s.in_flight,
            s.delayed,
            s.dead,
            s.completed - before.completed,
            s.consumers.iter().map(|(_, n)| n).collect::<Vec<_>>()
        );
        if producer.is_finished() && s.waiting + s.in_flight + s.delayed == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    producer.await??;
    for c in &children {
        Command::new("kill").arg(c.id().to_string()).status()?;
    }
    for c in &mut children {
        c.wait()?;
    }
    let s = queue.stats().await?;
    println!(
        "done: {} completed, {} dead letters",
        s.completed - before.completed,
        s.dead
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1).as_deref() {
        Some("worker") => worker().await,
        Some("produce") => {
            let jobs: u64 = arg("--jobs").map_or(Ok(1000), |s| s.parse())?;
            let queue = RedisQueue::connect(&url(), QUEUE).await?;
            produce(&queue, jobs).await?;
            println!("submitted {jobs} jobs");
            Ok(())
        }
        _ => demo().await,
    }
}
