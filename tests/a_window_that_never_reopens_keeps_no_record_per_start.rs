//! A rate window that never reopens keeps no record per start (RELIABILITY.md, 351). The
//! test reads the process's resident memory, so it is the only test of its binary: under
//! `cargo test` the tests of one binary share a process, and others' allocations would
//! count.

mod support;

use std::time::Duration;

use nb_aiopool::CommonAioPool;
use support::within;

/// The user runs many tiny tasks through a pool with `rate_limit(u32::MAX,
/// Duration::MAX)` (a limit that is never reached in practice: "at most `count` starts,
/// ever"). The README: memory "depends on the pool's size and never on the number of
/// jobs".
///
/// What happened: "1000000 tasks through rate_limit(u32::MAX, Duration::MAX) grew the
/// process from 8628 KiB to 24380 KiB (+15752 KiB): the window keeps a record of every
/// start": the rate window kept the time of every start (16 bytes each) for the pool's
/// life, though in a window that never reopens only their count is ever read. Fixed: it
/// keeps the first start and counts the others.
#[tokio::test(flavor = "current_thread")]
async fn a_window_that_never_ends_keeps_no_record_per_start() {
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
    const N: u64 = 1_000_000;
    let pool = CommonAioPool::builder()
        .max_concurrency(64)
        .max_queue_size(1024)
        .rate_limit(u32::MAX, Duration::MAX)
        .build();
    // Warm up: the pool's own buffers, the runtime's.
    for _ in 0..10_000 {
        pool.submit(async {}).await.unwrap().detach();
    }
    within("the warm-up", pool.wait()).await;
    let before = rss_kib();
    for _ in 0..N {
        pool.submit(async {}).await.unwrap().detach();
    }
    within("the tasks", pool.wait()).await;
    let after = rss_kib();
    assert_eq!(pool.stats().completed, N + 10_000);
    assert!(
        after < before + 8 * 1024,
        "{N} tasks through rate_limit(u32::MAX, Duration::MAX) grew the process from {before} KiB \
         to {after} KiB (+{} KiB): the window keeps a record of every start",
        after - before
    );
}
