//! The seed's SmartAioPool "black magic" (section 1.4.1.b): tasks submitted and never
//! awaited still complete before the process exits.
//!
//! `cargo run --example smart_auto_shutdown` uses `smart_run`;
//! `cargo run --example smart_auto_shutdown -- tokio-main` returns from a plain
//! `#[tokio::main]`-style runtime while the tasks are still running: they are finished by
//! the at-exit hook on a fresh runtime (re-run from their recipes if they were mid-run).
//! `-- process-exit` calls `std::process::exit(0)` instead.

use std::sync::LazyLock;
use std::time::Duration;

use nb_aiopool::{smart_run, SmartAioPool};

// A pool can live in a static; it starts on first use.
static POOL: LazyLock<SmartAioPool> =
    LazyLock::new(|| SmartAioPool::builder().auto_shutdown(true).build());

async fn sample_task(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("task {x} finished");
    x * 2
}

async fn main_body() {
    // Submitted but not awaited: the handles are dropped.
    for x in 1..=3 {
        POOL.submit(move || sample_task(x)).await.unwrap().detach();
    }
    println!("main body returns without awaiting its tasks");
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        None | Some("smart-run") => smart_run(main_body()),
        Some("tokio-main") => {
            // What #[tokio::main] expands to.
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(main_body());
        }
        Some("process-exit") => {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                main_body().await;
                tokio::time::sleep(Duration::from_millis(50)).await; // tasks are mid-run
                std::process::exit(0);
            });
        }
        Some(other) => eprintln!("unknown mode {other}: use smart-run, tokio-main or process-exit"),
    }
}
