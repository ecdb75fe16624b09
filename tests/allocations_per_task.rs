//! A SmartAioPool task makes no more heap allocations than a CommonAioPool task: one, for
//! the task (its recipe and result slot), whose first run runs in that same allocation
//! when its future is small (BENCHMARKS.md, "2026-12-05, 21:07–00:07 UTC"), as a submitted
//! future runs in the cell that holds its result slot. Before, each run of a recipe got a
//! cell of its own: two allocations per task.
//!
//! The file's one test counts the allocations its thread makes (`tests/counting_alloc`),
//! on a current-thread runtime, so that everything a task makes is counted there.

mod counting_alloc;
mod support;

use counting_alloc::allocations;
use nb_aiopool::{CommonAioPool, SmartAioPool};

/// Tasks counted, one after another (submitted, then awaited).
const N: u64 = 1_000;

#[test]
fn a_smart_task_allocates_no_more_than_a_future_task() {
    support::current_thread().block_on(async {
        let common = CommonAioPool::new(4, 16);
        let smart = SmartAioPool::builder()
            .max_concurrency(4)
            .max_queue_size(16)
            .build();
        let run_common = async |n: u64| {
            for i in 0..n {
                let h = common.submit(async move { i + 1 }).await.unwrap();
                assert_eq!(h.await.unwrap(), i + 1);
            }
        };
        let run_smart = async |n: u64| {
            for i in 0..n {
                let h = smart.submit(move || async move { i + 1 }).await.unwrap();
                assert_eq!(h.await.unwrap(), i + 1);
            }
        };
        // Warm up: the engines' and tokio's buffers reach their sizes.
        run_common(N).await;
        run_smart(N).await;
        let before = allocations();
        run_common(N).await;
        let common_made = allocations() - before;
        let before = allocations();
        run_smart(N).await;
        let smart_made = allocations() - before;
        eprintln!("allocations for {N} tasks: common {common_made}, smart {smart_made}");
        assert!(
            common_made >= N as usize,
            "a future task allocates its cell: {common_made} allocations for {N} tasks"
        );
        assert!(
            smart_made <= common_made + N as usize / 10,
            "a SmartAioPool task allocates more than a future task: {smart_made} allocations \
             for {N} tasks, against {common_made} (its first run in a cell of its own?)"
        );
        common.shutdown().await;
        smart.shutdown().await;
    });
}
