//! Regression tests of a review of elastic workers, resizing and per-task options
//! (2026-12-05; RELIABILITY.md, findings 212–214). The first three failed before their fixes.

mod support;

use std::time::Duration;

use nb_aiopool::{CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitOptions};
use support::*;

fn smart(max: usize, min: usize, queue: usize) -> SmartAioPool {
    SmartAioPool::builder()
        .max_concurrency(max)
        .min_workers(min)
        .max_queue_size(queue)
        .idle_timeout(Duration::from_secs(5))
        .auto_shutdown(false)
        .process_wide(false)
        .build()
}

/// The tokio tasks of the pool alive on the current runtime.
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Finding 212. SmartAioPool's docs: "retires a worker idle for `idle_timeout` (never below
/// `min_workers`). A worker is a running slot of the pool (a tokio task that runs its jobs
/// one after the other) ... an idle one holds nothing". The count retired, but every slot
/// task a burst made stayed parked (up to 256 per pool) until the pool closed.
#[test]
fn retired_elastic_workers_end_their_slot_tasks() {
    let rt = paused_runtime();
    rt.block_on(async {
        let pool = smart(20, 1, 100);
        // The pool's watch on this runtime (made by `build`) is a task of its own.
        let base = alive_tasks();
        let gate = Gate::default();
        let mut handles = Vec::new();
        for _ in 0..20 {
            let g = gate.clone();
            let recipe = move || {
                let g = g.clone();
                async move { g.wait().await }
            };
            handles.push(pool.submit(recipe).await.unwrap());
        }
        tokio::task::yield_now().await;
        assert_eq!((pool.worker_count(), pool.busy_worker_count()), (20, 20));
        gate.open();
        for h in handles {
            within("a task", h).await.unwrap();
        }
        // Past the idle timeout (and the timer that frees ended jobs' leftovers).
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(pool.worker_count(), 1, "the count retires");
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            alive_tasks() - base,
            1,
            "tokio tasks left for 1 live (idle) worker"
        );
        // The one left still serves, and the pool grows again under load.
        assert_eq!(within("a run", pool.run(|| async { 7 })).await.unwrap(), 7);
        let gate = Gate::default();
        let mut handles = Vec::new();
        for _ in 0..5 {
            let g = gate.clone();
            let recipe = move || {
                let g = g.clone();
                async move { g.wait().await }
            };
            handles.push(pool.submit(recipe).await.unwrap());
        }
        tokio::task::yield_now().await;
        assert_eq!(pool.busy_worker_count(), 5);
        gate.open();
        for h in handles {
            within("a task", h).await.unwrap();
        }
        let s = pool.stats();
        assert_eq!((s.completed, s.queued, s.running), (26, 0, 0));
    });
}

thread_local! {
    static PANICS_HERE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts the panics of the calling thread (also those tokio catches, as in a task's drop
/// during a runtime's shutdown), on top of the hook in place.
fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS_HERE.with(|p| p.set(p.get() + 1));
            default(info);
        }));
    });
}

/// Finding 212, with its fix: a shrink retires idle workers and their slot tasks too; a retired slot
/// task dropped by its runtime's end before it was polled again counts as nothing (it was
/// no claimer), and the pool serves the next runtime.
#[test]
fn retired_slot_tasks_end_on_a_shrink_and_when_their_runtime_ends_first() {
    count_panics();
    let pool = smart(8, 0, 100);
    let rt = paused_runtime();
    rt.block_on(async {
        let gate = Gate::default();
        let mut handles = Vec::new();
        for _ in 0..8 {
            let g = gate.clone();
            let recipe = move || {
                let g = g.clone();
                async move { g.wait().await }
            };
            handles.push(pool.submit(recipe).await.unwrap());
        }
        tokio::task::yield_now().await;
        gate.open();
        for h in handles {
            within("a task", h).await.unwrap();
        }
        // (The timer that frees ended jobs' leftovers fires.)
        tokio::time::sleep(Duration::from_millis(10)).await;
        let before = alive_tasks();
        // Idle, not timed out: a shrink to 3 keeps 3 idle workers.
        pool.set_max_concurrency(3);
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.worker_count(), 3);
        assert_eq!(before - alive_tasks(), 5, "slot tasks ended by the shrink");
        // Timed out: retired by the count, not yet polled when the runtime ends.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(pool.worker_count(), 0);
    });
    drop(rt);
    assert_eq!(
        PANICS_HERE.with(|p| p.get()),
        0,
        "a panic in a slot task's drop"
    );
    let rt = paused_runtime();
    rt.block_on(async {
        assert_eq!(within("a run", pool.run(|| async { 5 })).await.unwrap(), 5);
        let s = pool.stats();
        assert_eq!((s.completed, s.queued, s.running), (9, 0, 0));
    });
}

/// Finding 213. NoQueueAioPool's `max_per_key` docs: "A task of a saturated key is still accepted when
/// a place is free: it waits inside the pool (in `stats().queued`)". Two tasks of one key,
/// submitted back to back into two free slots, were both reserved a slot (the start-time
/// check counted each against the keys of the tasks *started*, not of those reserved in
/// the same pass): `stats()` said 2 running, 0 queued, until a slot task found the second
/// one could not start and put it back. The same for weights (`weight_capacity`) in the
/// other pools.
#[test]
fn a_task_held_back_by_its_key_or_weight_is_counted_queued_at_once() {
    let rt = current_thread();
    rt.block_on(async {
        let pool = NoQueueAioPool::builder()
            .max_concurrency(2)
            .max_per_key(1)
            .process_wide(false)
            .build();
        let opts = || SubmitOptions::new().key("a");
        let _a1 = pool
            .submit_with(std::future::pending::<()>(), opts())
            .await
            .unwrap();
        let _a2 = pool
            .submit_with(std::future::pending::<()>(), opts())
            .await
            .unwrap();
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (1, 1), "no_queue, key: {s}");

        let pool = CommonAioPool::builder()
            .max_concurrency(3)
            .max_queue_size(10)
            .weight_capacity(10)
            .process_wide(false)
            .build();
        let opts = || SubmitOptions::new().weight(6);
        let _w1 = pool
            .submit_with(std::future::pending::<()>(), opts())
            .await
            .unwrap();
        let _w2 = pool
            .submit_with(std::future::pending::<()>(), opts())
            .await
            .unwrap();
        let _w3 = pool
            .submit_with(std::future::pending::<()>(), SubmitOptions::new().weight(4))
            .await
            .unwrap();
        let s = pool.stats();
        assert_eq!(
            (s.running, s.queued),
            (1, 2),
            "common, weights (FIFO: the 4 waits too): {s}"
        );
        // What a slot task sees agrees.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let s = pool.stats();
        assert_eq!(
            (s.running, s.queued),
            (1, 2),
            "common, weights, settled: {s}"
        );
    });
}

/// Finding 214 (documentation). Pins what `worker_count()`'s docs now say (they said "between `min_workers` and
/// `max_concurrency`", false after a shrink below `min_workers`): at most the new size,
/// and `min_workers` again once the pool grows back.
#[test]
fn worker_count_after_a_shrink_below_min_workers_is_the_new_size() {
    let pool = smart(5, 3, 10);
    assert_eq!(pool.worker_count(), 3);
    pool.set_max_concurrency(1);
    assert_eq!((pool.worker_count(), pool.idle_worker_count()), (1, 1));
    pool.set_max_concurrency(5);
    assert_eq!(pool.worker_count(), 3);
}
