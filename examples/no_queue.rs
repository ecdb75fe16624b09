//! The seed's NoQueueAioPool example (section 1.4.2).
//!
//! `cargo run --example no_queue`

use std::time::Duration;

use nb_aiopool::NoQueueAioPool;

async fn sample_task(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("Task {x} finished");
    x * 2
}

#[tokio::main]
async fn main() {
    let pool = NoQueueAioPool::new(10);

    // submit waits for a free slot, then starts the task.
    let mut handles = Vec::new();
    for i in 0..20 {
        handles.push(pool.submit(sample_task(i)).await.unwrap());
    }
    let results: Vec<u64> = futures_util::future::join_all(handles)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    println!("batch results: {results:?}");

    let result = pool.run(sample_task(100)).await.unwrap();
    println!("run result: {result}");

    // Fire and forget, then wait() for what was submitted.
    for i in 20..25 {
        pool.submit(sample_task(i)).await.unwrap().detach();
    }
    println!("waiting for the remaining tasks...");
    pool.wait().await;
    println!("all tasks finished.");
}
