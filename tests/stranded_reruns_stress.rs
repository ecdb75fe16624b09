//! Finding 158 (RELIABILITY.md), written by the review of its fix: many tasks cut off or
//! queued when their runtime ends,
//! then awaited from a new runtime (handles, a group), with and without a rate limit, the
//! handles polled before the end or not, the old runtime current-thread or multi-thread.
//! A hang or a lost task fails (10 s per round).
//!
//!   cargo nextest run --test stranded_reruns_stress   (R158_ROUNDS=N for more rounds)

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use nb_aiopool::SmartAioPool;
use support::{current_thread, multi_thread_of};

fn round(seed: usize) {
    let multi_a = seed & 1 != 0;
    let multi_b = seed & 2 != 0;
    let rate = seed & 4 != 0;
    let polled_before = seed & 8 != 0;
    let group = seed & 16 != 0;
    let a = if multi_a {
        multi_thread_of(2)
    } else {
        current_thread()
    };
    let a_id = Arc::new(AtomicU64::new(0));
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let b = if multi_b {
        multi_thread_of(2)
    } else {
        current_thread()
    };
    const N: usize = 20;
    let mut builder = SmartAioPool::builder()
        .max_concurrency(3)
        .max_queue_size(50)
        .auto_shutdown(false)
        .process_wide(false);
    if rate {
        builder = builder.rate_limit(10_000, Duration::from_secs(1));
    }
    let pool = builder.build();
    let make = |i: usize| {
        let a_id = Arc::clone(&a_id);
        let started = Arc::clone(&started);
        move || {
            let a_id = Arc::clone(&a_id);
            let started = Arc::clone(&started);
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let here = tokio::runtime::Handle::current().id();
                let on_a = format!("{here}") == format!("{}", a_id.load(Ordering::SeqCst));
                if on_a {
                    std::future::pending::<()>().await;
                }
                tokio::task::yield_now().await;
                i
            }
        }
    };
    let (handles, grp) = a.block_on(async {
        // Runtime ids print as numbers: kept as u64 by parsing.
        let id: u64 = format!("{}", tokio::runtime::Handle::current().id())
            .parse()
            .unwrap();
        a_id.store(id, Ordering::SeqCst);
        if group {
            let mut g = pool.group();
            for i in 0..N {
                g.submit(make(i)).await.unwrap();
            }
            support::reach(&started, 3, Duration::from_secs(5)).await;
            (Vec::new(), Some(g))
        } else {
            let mut hs = Vec::new();
            for i in 0..N {
                hs.push(pool.submit(make(i)).await.unwrap());
            }
            support::reach(&started, 3, Duration::from_secs(5)).await;
            (hs, None)
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let waiter = std::thread::spawn(move || {
        let out = b.block_on(async move {
            let fut = async move {
                if let Some(mut g) = grp {
                    if polled_before {
                        let _ = tokio::time::timeout(Duration::from_millis(5), g.join_next()).await;
                    }
                    let _ = go_tx.send(());
                    let mut got = Vec::new();
                    while let Some(r) = g.join_next().await {
                        got.push(r.map_err(|e| e.to_string()));
                    }
                    got
                } else {
                    let mut all = join_all(handles);
                    if polled_before {
                        let _ = tokio::time::timeout(Duration::from_millis(5), &mut all).await;
                    }
                    let _ = go_tx.send(());
                    all.await
                        .into_iter()
                        .map(|r| r.map_err(|e| e.to_string()))
                        .collect()
                }
            };
            tokio::time::timeout(Duration::from_secs(10), fut).await
        });
        let _ = tx.send(());
        out
    });
    go_rx.recv().unwrap();
    drop(a);
    let out = waiter.join().unwrap();
    let _ = rx;
    let got = out.unwrap_or_else(|_| {
        panic!(
            "seed {seed} (multi_a {multi_a}, multi_b {multi_b}, rate {rate}, polled_before \
             {polled_before}, group {group}): hung; stats {:?}",
            pool.stats()
        )
    });
    let mut vals: Vec<usize> = got
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("seed {seed}: a task failed: {e}")))
        .collect();
    vals.sort();
    assert_eq!(vals, (0..N).collect::<Vec<_>>(), "seed {seed}");
    // Shut down, or SMART_POOLS keeps the pool (and the runtime handles it holds, with
    // their fds) for the rest of the process.
    current_thread().block_on(pool.shutdown());
}

#[test]
fn stranded_reruns_complete_under_many_variants() {
    let rounds: usize = std::env::var("R158_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    for seed in 0..rounds {
        let t = std::time::Instant::now();
        round(seed % 32);
        if std::env::var("R158_VERBOSE").is_ok() {
            eprintln!("seed {} took {:?}", seed % 32, t.elapsed());
        }
    }
}
