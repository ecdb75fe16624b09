//! A task keeps its pool's number, not the pool's address (finding 289, RELIABILITY.md:
//! 32 bits, so that the task's result slot stays at 96 bytes), and a dropped pool's
//! number goes to a pool made later. What a user relies on: a handle of a task of a
//! dropped pool, aborted after that, leaves alone the new pools' tasks, whose `TaskId`s
//! are the same. (The handle's task ended before its pool was freed, so its abort decides
//! nothing and reaches no pool; this pins that a reused number does not change that.)
//!
//! One test in its own process: no other test takes the freed number first.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{current_thread, Gate};

/// How many pools are made after the old one is freed: its number goes to one of them.
const NEW_POOLS: usize = 16;

#[test]
fn an_old_handle_aborted_after_its_pools_number_was_reused_aborts_nothing() {
    for smart in [false, true] {
        // The old pool, on a runtime of its own: dropping the runtime ends its slot tasks,
        // the last holders of its engine, so the engine (and its number) is freed.
        let old_abort = {
            let rt = current_thread();
            let old = rt.block_on(async {
                let h = if smart {
                    let pool = support::smart_local(1);
                    pool.submit(|| async { 1u32 }).await.unwrap()
                } else {
                    let pool = support::common_local(1, 1);
                    pool.submit(async { 1u32 }).await.unwrap()
                };
                let abort = h.abort_handle();
                assert_eq!(support::within("the old task", h).await.unwrap(), 1);
                abort
            });
            drop(rt);
            old
        };
        current_thread().block_on(async {
            let gate = Gate::default();
            let started = Arc::new(AtomicUsize::new(0));
            let task = |gate: Gate, started: Arc<AtomicUsize>| async move {
                started.fetch_add(1, Ordering::SeqCst);
                gate.wait().await;
                2u32
            };
            let mut pools = Vec::new();
            let mut handles = Vec::new();
            for _ in 0..NEW_POOLS {
                let (g, s) = (gate.clone(), Arc::clone(&started));
                let h = if smart {
                    let pool = support::smart_local(1);
                    let h = pool.submit(move || task(g.clone(), s.clone())).await;
                    pools.push((None, Some(pool)));
                    h.unwrap()
                } else {
                    let pool = support::common_local(1, 1);
                    let h = pool.submit(task(g, s)).await;
                    pools.push((Some(pool), None));
                    h.unwrap()
                };
                assert_eq!(h.id(), old_abort.id(), "each is its pool's first task");
                handles.push(h);
            }
            support::within("every new task started", async {
                while started.load(Ordering::SeqCst) < NEW_POOLS {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await;
            old_abort.abort();
            gate.open();
            for h in handles {
                let out = support::within("a new task", h).await;
                assert_eq!(out.unwrap(), 2, "the old handle's abort reached a new task");
            }
            for (common, smart) in &pools {
                let stats = match (common, smart) {
                    (Some(p), _) => p.stats(),
                    (_, Some(p)) => p.stats(),
                    _ => unreachable!(),
                };
                assert_eq!((stats.completed, stats.cancelled), (1, 0), "{stats:?}");
            }
        });
    }
}
