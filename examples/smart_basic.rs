//! The seed's SmartAioPool basics (section 1.4.1): run, and batch submit + gather.
//!
//! `cargo run --example smart_basic`

use std::time::Duration;

use nb_aiopool::SmartAioPool;

async fn sample_task(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(100)).await;
    x * 2
}

#[tokio::main]
async fn main() {
    let pool = SmartAioPool::new(10);

    // run = submit, then await the result.
    let result = pool.run(|| sample_task(5)).await.unwrap();
    println!("result: {result}");

    // Submit a batch (recipes: `move || sample_task(i)`), then gather the handles.
    let mut handles = Vec::new();
    for i in 0..20 {
        handles.push(pool.submit(move || sample_task(i)).await.unwrap());
    }
    let results: Vec<u64> = futures_util::future::join_all(handles)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    println!("batch results: {results:?}");

    // Or in one call, results in input order:
    let results = pool
        .batch_run((0..5).map(|i| move || sample_task(i)))
        .await
        .unwrap();
    println!(
        "batch_run: {:?}",
        results.into_iter().map(Result::unwrap).collect::<Vec<_>>()
    );

    pool.shutdown().await;
}
