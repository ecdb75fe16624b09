//! Several runtimes that end at the same instant, with tasks of one pool running and
//! queued on each, while another runtime lives on (RELIABILITY.md, "What is not checked",
//! had this case unchecked). Every handle resolves: a task that finished with its value,
//! one cut off or never started on a runtime that ended with `RuntimeShutdown`
//! (CommonAioPool), or, in a SmartAioPool, with its value after a run on the live
//! runtime; the pool's counts add up, and it takes new work. Several rounds, each with
//! its own timing, sample how the runtimes' ends interleave.

// The submits' futures hand back handles, to await on the live runtime.
#![allow(clippy::async_yields_async)]

mod support;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use nb_aiopool::{CancelReason, CommonAioPool, SmartAioPool, TaskHandle};
use support::{multi_thread_of, within};

const DYING: usize = 3;
const PER_RUNTIME: u64 = 12;
const ROUNDS: u64 = 8;

/// How long task `i` sleeps: a few finish before the runtimes end, most are running or
/// queued then (and a SmartAioPool's run them again afterwards).
fn sleep_of(i: u64, round: u64) -> Duration {
    Duration::from_millis(2 + (i * 7 + round * 3) % 40)
}

/// Task `i` of `round`: sleeps [`sleep_of`], returns `i`.
async fn sleeper(i: u64, round: u64) -> u64 {
    tokio::time::sleep(sleep_of(i, round)).await;
    i
}

/// Runtimes to end, and the handles of the tasks each submitted (`submit(i)` for
/// `i in 0..PER_RUNTIME`, from inside the runtime).
fn dying_runtimes<F>(
    submit: impl Fn(u64) -> F,
) -> (Vec<tokio::runtime::Runtime>, Vec<TaskHandle<u64>>)
where
    F: std::future::Future<Output = TaskHandle<u64>>,
{
    let dying: Vec<_> = (0..DYING).map(|_| multi_thread_of(1)).collect();
    let mut handles = Vec::new();
    for rt in &dying {
        rt.block_on(async {
            for i in 0..PER_RUNTIME {
                handles.push(submit(i).await);
            }
        });
    }
    (dying, handles)
}

/// Ends the runtimes `dying` at the same instant, each dropped on a thread of its own.
fn end_together(dying: Vec<tokio::runtime::Runtime>) {
    let start = Arc::new(Barrier::new(dying.len()));
    let threads: Vec<_> = dying
        .into_iter()
        .map(|rt| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                drop(rt);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a runtime's drop panicked");
    }
}

#[test]
fn common_pool_runtimes_ending_together_resolve_every_handle() {
    let live = multi_thread_of(2);
    for round in 0..ROUNDS {
        let pool = CommonAioPool::builder()
            .max_concurrency(4)
            .max_queue_size(64)
            .process_wide(false)
            .build();
        let (dying, handles) = dying_runtimes(|i| {
            let pool = pool.clone();
            async move { pool.submit(sleeper(i, round)).await.unwrap() }
        });
        let survivors: Vec<_> = live.block_on(async {
            let mut hs = Vec::new();
            for i in 0..PER_RUNTIME {
                hs.push(pool.submit(sleeper(i, round)).await.unwrap());
            }
            hs
        });
        std::thread::sleep(Duration::from_millis(5 + round % 4 * 5));
        end_together(dying);
        live.block_on(async {
            let (mut done, mut cut) = (0u64, 0u64);
            for (n, h) in handles.into_iter().enumerate() {
                match within(&format!("round {round}, dying task {n}"), h).await {
                    Ok(i) => {
                        assert_eq!(i, n as u64 % PER_RUNTIME);
                        done += 1;
                    }
                    Err(e) => {
                        assert_eq!(e.cancel_reason(), Some(CancelReason::RuntimeShutdown));
                        cut += 1;
                    }
                }
            }
            for (i, h) in survivors.into_iter().enumerate() {
                let got = within(&format!("round {round}, live task {i}"), h).await;
                assert_eq!(got.unwrap(), i as u64, "a task of the live runtime failed");
            }
            within("wait", pool.wait()).await;
            let s = pool.stats();
            assert_eq!(s.completed, done + PER_RUNTIME, "round {round}: {s:?}");
            assert_eq!(s.cancelled, cut, "round {round}: {s:?}");
            assert_eq!((s.running, s.queued, s.panicked), (0, 0, 0), "{s:?}");
            assert_eq!(pool.run(async { 7 }).await.unwrap(), 7);
        });
    }
}

#[test]
fn smart_pool_runtimes_ending_together_run_every_task_on_the_live_one() {
    let live = multi_thread_of(2);
    for round in 0..ROUNDS {
        let pool = SmartAioPool::builder()
            .max_concurrency(4)
            .max_queue_size(64)
            .process_wide(false)
            .build();
        // The live runtime is known to the pool before the others end.
        live.block_on(pool.wait());
        let (dying, handles) = dying_runtimes(|i| {
            let pool = pool.clone();
            async move { pool.submit(move || sleeper(i, round)).await.unwrap() }
        });
        std::thread::sleep(Duration::from_millis(5 + round % 4 * 5));
        end_together(dying);
        live.block_on(async {
            for (n, h) in handles.into_iter().enumerate() {
                let got = within(&format!("round {round}, task {n}"), h).await;
                assert_eq!(
                    got.unwrap(),
                    n as u64 % PER_RUNTIME,
                    "a task cut off by its runtime's end is run again on the live one"
                );
            }
            within("wait", pool.wait()).await;
            let s = pool.stats();
            assert_eq!(
                s.completed,
                DYING as u64 * PER_RUNTIME,
                "round {round}: {s:?}"
            );
            assert_eq!((s.cancelled, s.panicked), (0, 0), "{s:?}");
            assert_eq!((s.running, s.queued), (0, 0), "{s:?}");
            assert_eq!(pool.run(|| async { 7 }).await.unwrap(), 7);
        });
    }
}
