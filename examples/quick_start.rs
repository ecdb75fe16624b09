//! The seed's quick start (section 1.3): submit, run, and no shutdown needed.
//!
//! `cargo run --example quick_start`

use std::time::Duration;

use nb_aiopool::SmartAioPool;

async fn my_task(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_secs(1)).await;
    x * 2
}

#[tokio::main]
async fn main() {
    // A pool with at most 10 tasks running at once.
    let pool = SmartAioPool::new(10);

    // Submit: returns a handle at once (the task runs in the background).
    let handle = pool.submit(|| my_task(1)).await.unwrap();
    // Run: submit and wait for the result, `(pool.submit(..).await?).await`.
    let result = pool.run(|| my_task(2)).await.unwrap();
    println!("run result: {result}");
    println!("submit result: {}", handle.await.unwrap());

    // Fire and forget: even without awaiting, the task completes before the process
    // exits (SmartAioPool's auto_shutdown), although main returns right away.
    pool.submit(|| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!("fire-and-forget task finished after main returned");
    })
    .await
    .unwrap()
    .detach();
}
