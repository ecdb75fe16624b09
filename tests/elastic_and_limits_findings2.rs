//! Regression tests of a review of a16b9b5 (findings 212–214's fixes: retired elastic
//! workers end their slot tasks; `Limits::counter` where slots are reserved; RELIABILITY.md,
//! findings 235–237), each failing before its fix, and a pin of retiring workers under
//! bursts. The randomized model of the counts that found 235's second form and 237 is in
//! `elastic_and_limits_findings3.rs`, extended there.

mod support;

use std::time::Duration;

use nb_aiopool::{CommonAioPool, SmartAioPool, SubmitOptions};
use support::*;

/// Finding 235. 213's fix counts each job against the ones counted before it where slots are
/// reserved, but a reservation made before a job of higher priority arrived is not looked
/// at again: two tasks of weight 3 reserved two slots (capacity 10), then a task of weight
/// 8 and priority 5 went before them. Only it can start (8 + 3 > 10), yet `stats()` said
/// 2 running, 1 queued until the second slot task found its job could not start.
#[test]
fn a_reservation_overtaken_by_a_heavier_prioritised_task_is_counted_queued_at_once() {
    let rt = current_thread();
    rt.block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(3)
            .max_queue_size(10)
            .weight_capacity(10)
            .process_wide(false)
            .build();
        let w = |n| SubmitOptions::new().weight(n);
        let _w1 = pool
            .submit_with(std::future::pending::<()>(), w(3))
            .await
            .unwrap();
        let _w2 = pool
            .submit_with(std::future::pending::<()>(), w(3))
            .await
            .unwrap();
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (2, 0), "both fit: {s}");
        let _h = pool
            .submit_with(std::future::pending::<()>(), w(8).priority(5))
            .await
            .unwrap();
        let s = pool.stats();
        assert_eq!(
            (s.running, s.queued),
            (1, 2),
            "only the heavy one starts: {s}"
        );
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (1, 2), "settled: {s}");
    });
}

/// The same with no priorities: a job of priority 0 goes before a reserved one of
/// priority -1 (found by the randomized test below).
#[test]
fn a_reservation_overtaken_by_a_heavier_task_of_the_default_priority_is_counted_queued() {
    let rt = current_thread();
    rt.block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(2)
            .max_queue_size(10)
            .weight_capacity(5)
            .process_wide(false)
            .build();
        let w = |n| SubmitOptions::new().weight(n);
        let _a = pool
            .submit_with(std::future::pending::<()>(), w(2))
            .await
            .unwrap();
        let _low = pool
            .submit_with(std::future::pending::<()>(), w(1).priority(-1))
            .await
            .unwrap();
        let _b = pool
            .submit_with(std::future::pending::<()>(), w(4))
            .await
            .unwrap();
        let s = pool.stats();
        assert_eq!(
            (s.running, s.queued),
            (1, 2),
            "2 + 4 > 5, and the 1 waits behind: {s}"
        );
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (1, 2), "settled: {s}");
    });
}

/// Finding 236. A runtime's end takes the reserved jobs submitted from it out of the queue; the
/// reservations were clamped to the queue's length, not to what may start, so a job of
/// another runtime held back by its key counted as running (until a slot task of its
/// runtime found it could not start: none while that runtime is not driven).
#[test]
fn a_runtimes_end_leaves_no_reservation_to_a_job_held_back_by_its_key() {
    let pool = CommonAioPool::builder()
        .max_concurrency(3)
        .max_queue_size(10)
        .max_per_key(1)
        .process_wide(false)
        .build();
    let key = |k: &str| SubmitOptions::new().key(k);
    let home = current_thread();
    let (gate, x) = home.block_on(async {
        let gate = Gate::default();
        let g = gate.clone();
        let x = pool
            .submit_with(async move { g.wait().await }, key("a"))
            .await
            .unwrap();
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        (gate, x)
    });
    assert_eq!((pool.stats().running, pool.stats().queued), (1, 0));
    let other = current_thread();
    // Reserved, their slot tasks spawned on `other` and not run: its `block_on` returns first.
    let (_b, _c) = other.block_on(async {
        let b = pool
            .submit_with(std::future::pending::<()>(), key("b"))
            .await
            .unwrap();
        let c = pool
            .submit_with(std::future::pending::<()>(), key("c"))
            .await
            .unwrap();
        (b, c)
    });
    let held = home
        .block_on(pool.submit_with(async { 5 }, key("a")))
        .unwrap();
    let s = pool.stats();
    assert_eq!((s.running, s.queued), (3, 1), "a's second waits: {s}");
    drop(other);
    let s = pool.stats();
    assert_eq!(
        (s.running, s.queued),
        (1, 1),
        "b and c lost; a's second still held back: {s}"
    );
    home.block_on(async {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (1, 1), "settled: {s}");
        gate.open();
        within("a", x).await.unwrap();
        assert_eq!(within("a's second", held).await.unwrap(), 5);
    });
}

/// Finding 237. `set_max_concurrency` below the reserved jobs (submitted, their slot tasks not run
/// yet) kept their reservations: `stats()` said 3 running after a shrink to 1, until the
/// slot tasks found they could not start them. They count as queued at once now. (Older
/// than a16b9b5, and in every pool; found by the randomized test below.)
#[test]
fn a_shrink_gives_back_the_reservations_beyond_the_new_size() {
    let rt = current_thread();
    rt.block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(3)
            .max_queue_size(10)
            .process_wide(false)
            .build();
        let mut handles = Vec::new();
        for _ in 0..3 {
            handles.push(pool.submit(std::future::pending::<()>()).await.unwrap());
        }
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (3, 0), "{s}");
        pool.set_max_concurrency(1);
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (1, 2), "after the shrink: {s}");
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (1, 2), "settled: {s}");

        let smart = nb_aiopool::SmartAioPool::builder()
            .max_concurrency(3)
            .min_workers(3)
            .max_queue_size(10)
            .auto_shutdown(false)
            .process_wide(false)
            .build();
        let mut handles = Vec::new();
        for _ in 0..3 {
            handles.push(smart.submit(std::future::pending::<()>).await.unwrap());
        }
        smart.set_max_concurrency(1);
        let s = smart.stats();
        assert_eq!(
            (s.running, s.queued),
            (1, 2),
            "smart, after the shrink: {s}"
        );
        assert_eq!((smart.worker_count(), smart.busy_worker_count()), (1, 1));
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let s = smart.stats();
        assert_eq!((s.running, s.queued), (1, 2), "smart, settled: {s}");
        smart.set_max_concurrency(3);
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let s = smart.stats();
        assert_eq!((s.running, s.queued), (3, 0), "smart, grown back: {s}");
    });
}

/// Pinned (passes): an elastic pool on a multi-thread runtime, its workers retired (by a
/// count from another thread, and by shrinks) while bursts of tasks come and go, never
/// strands a task and ends up with no more slot tasks than live workers.
#[test]
fn retiring_workers_under_bursts_strands_nothing_and_leaves_no_extra_slot_tasks() {
    let rt = multi_thread_of(2);
    let pool = SmartAioPool::builder()
        .max_concurrency(16)
        .min_workers(1)
        .max_queue_size(1000)
        .idle_timeout(Duration::from_millis(1))
        .auto_shutdown(false)
        .process_wide(false)
        .max_per_key(2)
        .build();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counter = {
        let (pool, stop) = (pool.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += pool.worker_count() as u64;
                if n % 7 == 0 {
                    pool.set_max_concurrency(1 + (n as usize % 16));
                }
                std::thread::yield_now();
            }
        })
    };
    let base = rt.block_on(async {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    });
    rt.block_on(async {
        for round in 0..200u64 {
            let mut handles = Vec::new();
            for i in 0..(round % 23 + 1) {
                let opts = SubmitOptions::new().key(format!("k{}", i % 3));
                let recipe = move || async move {
                    if i % 2 == 0 {
                        tokio::task::yield_now().await;
                    }
                    i
                };
                handles.push(pool.submit_with(recipe, opts).await.unwrap());
            }
            for h in handles {
                within("a task", h).await.unwrap();
            }
            if round % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    counter.join().unwrap();
    pool.set_max_concurrency(16);
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let workers = pool.worker_count();
        let mut alive = usize::MAX;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            alive = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            // And the pool's sentinel on this runtime (made by the first submit).
            if alive <= base + 1 + workers {
                break;
            }
        }
        assert!(
            alive <= base + 1 + workers,
            "{alive} tasks, {workers} workers, base {base}"
        );
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (0, 0), "{s}");
    });
}
