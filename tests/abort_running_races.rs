//! A review of finding 281's fix (647bd6c: an abort finds the slot of its running task by
//! the number the pool gave the task when a slot took it, `Shared::set_runner`, instead
//! of searching every slot). Pins of paths by which a task comes to be held by a slot, or
//! leaves one without ending, that `tests/abort_running.rs` does not cover: a SmartAioPool
//! run cut off by the end of its runtime, queued again and taken by an idle slot task of
//! another runtime (a slot whose key changed when it went idle: the task's number is no
//! longer the one the first slot had), and an abort racing the end of the runtime that
//! runs the task (the slot dropped by its runtime, the run queued again or ended). What a
//! user relies on in each: the aborted task ends (its future dropped, `wait()` returns,
//! the stats count it cancelled once) and the pool runs the next task.

// Handles are returned from `block_on` to be aborted and awaited later, elsewhere.
#![allow(clippy::async_yields_async)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool::{CancelReason, SmartAioPool};
use support::{current_thread, multi_thread_of, on_thread_within, until, Counted};

/// A recipe whose every run never ends by itself; counts its runs in `runs` and the drops
/// of their futures in `dropped`.
fn forever_recipe(
    runs: &Arc<AtomicUsize>,
    dropped: &Arc<AtomicUsize>,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>> + Send + Sync + 'static
{
    let (runs, dropped) = (Arc::clone(runs), Arc::clone(dropped));
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        let guard = Counted(Arc::clone(&dropped));
        Box::pin(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            0
        })
    }
}

fn smart_pool(c: usize) -> SmartAioPool {
    SmartAioPool::builder()
        .max_concurrency(c)
        .max_queue_size(4)
        .process_wide(false)
        .auto_shutdown(false)
        .build()
}

/// Runtime M (the pool's home) ran a task, so its slot task went idle (with a new entry in
/// the pool's slots). A task submitted from runtime V runs there, in a slot of V; V is
/// dropped while it runs: the run is cut off and queued again, and M's idle slot task
/// takes it. Aborted while it runs there, it ends: M's `wait()` returns, both runs'
/// futures are dropped, the stats count one cancelled task, and the pool runs the next
/// task. (The task's number changed from V's slot to M's: an abort that looked at the
/// first slot only would find nothing to wake, and the run would never end.)
#[test]
fn a_rerun_taken_by_an_idle_slot_of_another_runtime_ends_when_aborted_there() {
    on_thread_within("the re-run aborted on another runtime", 20, || {
        let pool = smart_pool(1);
        let m = multi_thread_of(1);
        // M becomes known (the home), and its slot task goes idle.
        assert_eq!(m.block_on(pool.run(|| async { 1 })).ok(), Some(1));
        let (runs, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let v = current_thread();
        let h = v.block_on(async {
            let h = pool.submit(forever_recipe(&runs, &dropped)).await.unwrap();
            support::within("the first run started on V", async {
                while runs.load(Ordering::SeqCst) < 1 {
                    tokio::task::yield_now().await;
                }
            })
            .await;
            h
        });
        // The run on V is cut off: queued again for any runtime, and M takes it.
        drop(v);
        until("the re-run started on M", || {
            runs.load(Ordering::SeqCst) == 2
        });
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "the cut run's future dropped"
        );
        h.abort();
        m.block_on(async {
            support::within("wait() after the abort of the re-run", pool.wait()).await;
        });
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            2,
            "the re-run's future dropped"
        );
        let s = pool.stats();
        assert_eq!(
            (s.running, s.queued, s.cancelled, s.completed),
            (0, 0, 1, 1),
            "{s:?}"
        );
        let r = m.block_on(h);
        assert!(
            matches!(&r, Err(e) if e.cancel_reason() == Some(CancelReason::Aborted)),
            "{r:?}"
        );
        // The slot runs the next task.
        assert_eq!(m.block_on(pool.run(|| async { 2 })).ok(), Some(2));
        assert_eq!(runs.load(Ordering::SeqCst), 2, "not run a third time");
    });
}

/// An abort racing the end of the runtime whose slot runs the task (a SmartAioPool, whose
/// runs cut off by a runtime's end are queued again; another runtime alive to run them):
/// whichever comes first (the slot dropped before or after the abort looked for it, the
/// run queued again and taken by a slot of the live runtime or not yet), the task ends
/// as aborted, every run's future is dropped, it is counted cancelled once, `wait()`
/// returns, and it is not run again after the abort.
#[test]
fn an_abort_racing_the_end_of_the_runtime_running_the_task_ends_it() {
    on_thread_within("aborts racing runtimes' ends", 60, || {
        let pool = smart_pool(2);
        let m = multi_thread_of(1);
        assert_eq!(m.block_on(pool.run(|| async { 1 })).ok(), Some(1));
        for round in 0..40u64 {
            let (runs, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let v = multi_thread_of(1);
            let h = v.block_on(async {
                let h = pool.submit(forever_recipe(&runs, &dropped)).await.unwrap();
                support::within("the first run started on V", async {
                    while runs.load(Ordering::SeqCst) < 1 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
                h
            });
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let b = Arc::clone(&barrier);
            let aborter = std::thread::spawn(move || {
                b.wait();
                // Spread over the drop's steps and the re-run's start on M.
                if round % 10 > 0 {
                    std::thread::sleep(Duration::from_micros((round % 10) * 150));
                }
                h.abort();
                h
            });
            barrier.wait();
            drop(v);
            let h = aborter.join().unwrap();
            m.block_on(async {
                support::within("wait() after the abort and the runtime's end", pool.wait()).await;
            });
            let runs_now = runs.load(Ordering::SeqCst);
            assert_eq!(
                dropped.load(Ordering::SeqCst),
                runs_now,
                "round {round}: every run's future dropped"
            );
            let r = m.block_on(h);
            assert!(
                matches!(&r, Err(e) if e.cancel_reason() == Some(CancelReason::Aborted)),
                "round {round}: {r:?}"
            );
            let s = pool.stats();
            assert_eq!(
                (s.running, s.queued, s.cancelled),
                (0, 0, round + 1),
                "round {round}: {s:?}"
            );
            // Nothing runs it again later.
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(
                runs.load(Ordering::SeqCst),
                runs_now,
                "round {round}: run again"
            );
        }
        assert_eq!(m.block_on(pool.run(|| async { 2 })).ok(), Some(2));
    });
}
