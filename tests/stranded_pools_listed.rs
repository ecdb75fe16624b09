//! The list of stranded pools (RELIABILITY.md, finding 158): four entries, the overflow
//! counted; more stranded pools than entries, and pools stranded and unstranded from
//! several threads at once, each task still runs where it is awaited. Written by the
//! second review of finding 158's fix.
//!
//!   cargo nextest run --test stranded_pools_listed

mod support;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool::{SmartAioPool, TaskHandle};
use support::{current_thread, cut_off_once, multi_thread_of};

/// A pool stranded with one queued re-run (its runtime dropped).
fn stranded(value: u32) -> (SmartAioPool, TaskHandle<u32>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let a = current_thread();
    let r = a.block_on(async {
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .auto_shutdown(false)
            .process_wide(false)
            .build();
        let handle = pool.submit(cut_off_once(&runs, value)).await.unwrap();
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        (pool, handle)
    });
    drop(a);
    r
}

/// Six pools stranded (two beyond the list), awaited one by one from new runtimes, in
/// both orders; each run leaves the list as it found it.
#[test]
fn more_stranded_pools_than_entries_each_handle_runs() {
    for round in 0..20 {
        let mut pools: Vec<_> = (0..6).map(stranded).collect();
        if round % 2 == 1 {
            pools.reverse();
        }
        for (pool, handle) in pools {
            let want = if round % 2 == 1 { None } else { Some(()) };
            let _ = want;
            let b = current_thread();
            let got =
                b.block_on(async { tokio::time::timeout(Duration::from_secs(5), handle).await });
            let v = got.expect("a stranded pool's handle hung").unwrap();
            assert!(v < 6);
            drop(b);
            drop(pool);
        }
    }
}

/// Pools stranded and unstranded on many threads at once (aborts, awaits, drops), more of
/// them than entries; then one more pool stranded must still be found by its handle.
#[test]
fn concurrent_strand_unstrand_then_one_more() {
    for _ in 0..5 {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..15 {
                        let (pool, handle) = stranded(i % 6);
                        match (t + i) % 3 {
                            0 => handle.abort(),
                            1 => {
                                let b = current_thread();
                                let got = b.block_on(async {
                                    tokio::time::timeout(Duration::from_secs(5), handle).await
                                });
                                got.expect("hung").unwrap();
                            }
                            _ => drop(handle),
                        }
                        drop(pool);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Now each of 6 new ones (two beyond the list) is still found.
        let pools: Vec<_> = (0..6).map(stranded).collect();
        let c = multi_thread_of(2);
        c.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for (pool, handle) in pools {
                set.spawn(async move {
                    let r = tokio::time::timeout(Duration::from_secs(5), handle).await;
                    drop(pool);
                    r.expect("hung").unwrap()
                });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
        });
    }
}
