//! The seed's CommonAioPool example (section 1.4.3).
//!
//! `cargo run --example common`

use std::time::Duration;

use nb_aiopool::{shutdown_all_common_aiopools, CommonAioPool};

async fn sample_task(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("Executing task {x}");
    x * 2
}

#[tokio::main]
async fn main() {
    let pool = CommonAioPool::new(5, 100);

    // 1. run: submit and wait for the result.
    let result = pool.run(sample_task(100)).await.unwrap();
    println!("Run result: {result}");

    // 2. submit a batch, keep the handles, gather them.
    let mut handles = Vec::new();
    for i in 0..10 {
        handles.push(pool.submit(sample_task(i)).await.unwrap());
    }
    let results: Vec<u64> = futures_util::future::join_all(handles)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    println!("Batch results: {results:?}");
    pool.shutdown().await;

    // Fire and forget: without the last line, tasks 100..=102 would never run.
    let pool = CommonAioPool::new(5, 100);
    for i in 100..=102 {
        pool.submit(sample_task(i)).await.unwrap().detach();
    }
    shutdown_all_common_aiopools().await; // keep this as the last line of main
}
