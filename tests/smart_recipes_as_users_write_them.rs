//! SmartAioPool's recipes as a user writes them (a helper's review of `src/pool/recipe.rs`
//! and `src/pool/smart/`, 2026-12-06; RELIABILITY.md, 372): how often a recipe is called
//! (first run, re-run after its runtime ended, never after an abort or a `cancel_all`),
//! where and when a recipe and
//! what it captured are dropped (after its last run, never under the pool's lock, also
//! when the drop uses the pool or panics), recipes that panic when called, on a re-run or
//! in their future's later polls, `rerun_interrupted(false)`, recipes handed back by a
//! refused submit, `smart_run` and `shutdown_all_smart_aiopools` with recipes queued.

#![allow(clippy::async_yields_async)] // handles made on one runtime, awaited on another

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nb_aiopool::{CancelReason, SmartAioPool, SubmitOptions};
use support::{
    current_thread, multi_thread_of, on_thread_within, panic_message, serial, until, within,
    Counted,
};

/// Counts a recipe's calls and the drops of what it captured.
#[derive(Clone, Default)]
struct Tally {
    calls: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
}

impl Tally {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn drops(&self) -> usize {
        self.drops.load(Ordering::SeqCst)
    }
    /// A recipe that counts its calls, captures a drop counter, and returns `value`.
    fn recipe(&self, value: u32) -> impl Fn() -> std::future::Ready<u32> + Send + Sync + 'static {
        let calls = self.calls.clone();
        let held = Counted(self.drops.clone());
        move || {
            let _ = &held;
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(value)
        }
    }
    /// A recipe whose first run never ends (to be cut off) and whose later runs return
    /// `value`; counts calls and drops.
    fn cut_off_once(
        &self,
        value: u32,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>>
           + Send
           + Sync
           + 'static {
        let calls = self.calls.clone();
        let held = Counted(self.drops.clone());
        move || {
            let _ = &held;
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                if first {
                    std::future::pending::<()>().await;
                }
                value
            })
        }
    }
}

/// A private pool (no exit, no process-wide call) of `c` slots.
fn local(c: usize) -> nb_aiopool::SmartAioPoolBuilder {
    SmartAioPool::builder()
        .max_concurrency(c)
        .auto_shutdown(false)
        .process_wide(false)
}

/// A value whose drop uses the pool (its lock: `stats()`, `try_submit`), to find drops
/// made while the pool's lock is held (a deadlock then), and records it did.
struct UsesPoolOnDrop {
    pool: Arc<OnceLock<SmartAioPool>>,
    dropped: Arc<AtomicUsize>,
}

impl Drop for UsesPoolOnDrop {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.get() {
            let _ = pool.stats();
            let _ = pool.pending_count();
        }
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// The user submits a recipe, awaits its handle, and keeps the handle.
/// Expected: the recipe is called once; what it captured is dropped once, by the time
/// `wait()` returns ("later submits free the leftovers of ended jobs in batches (or the
/// pool does, about 2 ms later, and `wait()` before it returns", README), while the
/// handle is still held ("a handle held longer keeps only the allocation's bytes (the
/// result slot and the recipe's own size, not what the recipe owns)", recipe.rs).
/// Pinned: on a multi-thread runtime and on a current-thread one.
#[test]
fn pinned_a_finished_recipe_is_called_once_and_dropped_once_by_wait_with_its_handle_held() {
    for rt in [multi_thread_of(2), current_thread()] {
        let pool = local(2).build();
        let tally = Tally::default();
        rt.block_on(async {
            let mut h = pool.submit(tally.recipe(5)).await.unwrap();
            assert_eq!(within("the task", &mut h).await.unwrap(), 5);
            within("wait", pool.wait()).await;
            assert_eq!(tally.calls(), 1, "the recipe of a task that ran once was called {} times", tally.calls());
            assert_eq!(
                tally.drops(),
                1,
                "what a finished recipe captured was not freed by the time wait() returned, though its handle is all that is left"
            );
            drop(h);
            assert_eq!(tally.drops(), 1, "what the recipe captured was dropped twice");
            within("shutdown", pool.shutdown()).await;
        });
    }
}

/// The user's task is cut off by the end of its runtime (a multi-thread runtime dropped
/// while the first run waits), then the handle is awaited from a new runtime.
/// Expected: "a task that was interrupted mid-run is run again from its recipe" (README):
/// the recipe is called twice in all, its captures dropped once, after the re-run.
/// Pinned.
#[test]
fn pinned_a_recipe_cut_off_by_its_runtime_is_called_again_and_dropped_once_after() {
    let pool = local(1).build();
    let tally = Tally::default();
    let rt = multi_thread_of(1);
    let h = rt.block_on(pool.submit(tally.cut_off_once(4))).unwrap();
    until("the first run", || tally.calls() == 1);
    drop(rt);
    assert_eq!(
        tally.drops(),
        0,
        "the recipe was dropped though its task must run again"
    );
    let rt = current_thread();
    rt.block_on(async {
        assert_eq!(within("the re-run", h).await.unwrap(), 4);
        within("wait", pool.wait()).await;
    });
    assert_eq!(
        tally.calls(),
        2,
        "the cut-off recipe was called {} times, not twice",
        tally.calls()
    );
    assert_eq!(
        tally.drops(),
        1,
        "the recipe's captures were dropped {} times after its re-run",
        tally.drops()
    );
}

/// The user builds the pool with `rerun_interrupted(false)` and the task's runtime ends
/// while it runs.
/// Expected: "interrupted ones are reported (their handles say `RuntimeShutdown` ...), not
/// repeated" (README); the recipe is called once, and dropped (nothing will run it again),
/// without waiting for another runtime; the stats count it cancelled.
/// Pinned.
#[test]
fn pinned_without_reruns_an_interrupted_recipe_is_reported_never_called_again_and_dropped() {
    let pool = local(1).rerun_interrupted(false).build();
    let tally = Tally::default();
    let rt = multi_thread_of(1);
    let h = rt.block_on(pool.submit(tally.cut_off_once(4))).unwrap();
    until("the first run", || tally.calls() == 1);
    drop(rt);
    until("the interrupted recipe dropped", || tally.drops() == 1);
    let rt = current_thread();
    rt.block_on(async {
        let err = within("the interrupted task's handle", h)
            .await
            .unwrap_err();
        assert_eq!(
            err.cancel_reason(),
            Some(CancelReason::RuntimeShutdown),
            "{err}"
        );
        within("wait", pool.wait()).await;
        // The pool goes on with new work on the new runtime.
        assert_eq!(pool.run(|| async { 1 }).await.unwrap(), 1);
    });
    assert_eq!(
        tally.calls(),
        1,
        "an interrupted task of a pool without re-runs was run again"
    );
    assert_eq!(tally.drops(), 1);
    let s = pool.stats();
    assert_eq!(
        (s.cancelled, s.completed, s.running, s.queued),
        (1, 1, 0, 0),
        "{s:?}"
    );
}

/// The user aborts a running task (its future waits) from outside, and its runtime ends
/// right after, before the task's slot has seen the abort; another runtime then waits for
/// the pool.
/// Expected: the recipe is "never [called] after its task was aborted": the handle says
/// `Aborted` ("the first decision holds"; with `rerun_interrupted(false)` too: "unless an
/// abort ... covered them first"), the recipe is called once and dropped once.
/// Pinned.
#[test]
fn pinned_a_task_aborted_just_before_its_runtime_ends_is_not_called_again() {
    for round in 0..20 {
        // Re-runs on (odd rounds) and off: "unless an abort ... covered them first".
        let pool = local(1).rerun_interrupted(round % 2 == 1).build();
        let tally = Tally::default();
        let rt = multi_thread_of(1);
        let h = rt.block_on(pool.submit(tally.cut_off_once(4))).unwrap();
        until("the first run", || tally.calls() == 1);
        h.abort();
        drop(rt);
        let rt = current_thread();
        rt.block_on(async {
            within("wait", pool.wait()).await;
            let err = within("the aborted handle", h).await.unwrap_err();
            assert_eq!(
                err.cancel_reason(),
                Some(CancelReason::Aborted),
                "round {round}: {err}"
            );
        });
        assert_eq!(
            tally.calls(),
            1,
            "round {round}: an aborted task's recipe was called again after its runtime ended"
        );
        until("the aborted recipe dropped", || tally.drops() == 1);
        let s = pool.stats();
        assert_eq!(
            (s.cancelled, s.running, s.queued),
            (1, 0, 0),
            "round {round}: {s:?}"
        );
    }
}

/// The user calls `cancel_all` (spawned, not awaited) while a task runs, and the runtime
/// ends before the task is dropped at its next `.await`.
/// Expected: a task covered by `cancel_all` is not run again: "A task aborted, or covered
/// by a `cancel_all` ... is not run again either: its handle says that".
/// Pinned.
#[test]
fn pinned_a_task_covered_by_cancel_all_just_before_its_runtime_ends_is_not_called_again() {
    for round in 0..20 {
        // Re-runs on (odd rounds) and off.
        let pool = local(1).rerun_interrupted(round % 2 == 1).build();
        let tally = Tally::default();
        let rt = multi_thread_of(1);
        let h = rt.block_on(pool.submit(tally.cut_off_once(4))).unwrap();
        let queued = rt.block_on(pool.submit(tally.recipe(9))).unwrap();
        until("the first run", || tally.calls() == 1);
        // The call marks the tasks at once; its future is just dropped.
        drop(pool.cancel_all());
        drop(rt);
        let rt = current_thread();
        rt.block_on(async {
            within("wait", pool.wait()).await;
            for h in [h, queued] {
                let err = within("a cancelled handle", h).await.unwrap_err();
                assert_eq!(
                    err.cancel_reason(),
                    Some(CancelReason::CancelAll),
                    "round {round}: {err}"
                );
            }
        });
        assert_eq!(
            tally.calls(),
            1,
            "round {round}: a task covered by cancel_all was called again after its runtime ended"
        );
        until("both recipes dropped", || tally.drops() == 2);
    }
}

/// The user's recipe panics when it is called.
/// Expected: "A recipe that panics when called counts as a panicking task" (`submit`):
/// the handle gets the panic, the stats count a panic, `on_panic` sees it for a detached
/// task, and the recipe, never having made a future, is still dropped once.
/// Pinned.
#[test]
fn pinned_a_recipe_that_panics_when_called_is_a_panicking_task_and_is_dropped_once() {
    support::hide_panics(&["recipe panics when called", "future panics on a later poll"]);
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let pool = local(1)
        .on_panic(move |_, err| {
            assert!(err.is_panic());
            s2.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let drops = Arc::new(AtomicUsize::new(0));
    let rt = current_thread();
    rt.block_on(async {
        let held = Counted(drops.clone());
        let h = pool
            .submit(move || -> std::future::Ready<u8> {
                let _ = &held;
                panic!("recipe panics when called")
            })
            .await
            .unwrap();
        let err = within("the panicking recipe", h).await.unwrap_err();
        assert_eq!(
            panic_message(&*err.into_panic()),
            "recipe panics when called"
        );
        // Detached: `on_panic` is told.
        let held = Counted(drops.clone());
        pool.submit(move || -> std::future::Ready<u8> {
            let _ = &held;
            panic!("recipe panics when called")
        })
        .await
        .unwrap()
        .detach();
        // A future that panics on its second poll.
        let h = pool
            .submit(|| async {
                tokio::task::yield_now().await;
                if true {
                    panic!("future panics on a later poll");
                }
                1u8
            })
            .await
            .unwrap();
        assert!(within("the later panic", h).await.unwrap_err().is_panic());
        within("wait", pool.wait()).await;
        assert_eq!(pool.run(|| async { 3 }).await.unwrap(), 3);
    });
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "on_panic was not called once for the detached task whose recipe panicked"
    );
    assert_eq!(
        drops.load(Ordering::SeqCst),
        2,
        "a recipe that panicked when called was not dropped once"
    );
    let s = pool.stats();
    assert_eq!((s.panicked, s.completed), (3, 1), "{s:?}");
}

/// The user's recipe captures a value whose `Drop` uses the pool (`stats()`), and the
/// task ends in each way a recipe task can: completed, aborted while queued, covered by
/// `cancel_all` while queued, abandoned by a `shutdown_timeout`, interrupted in a pool
/// without re-runs, cancelled as the pool without handles is forgotten.
/// Expected: a recipe is never dropped under the pool's lock ("outside the pool's locks
/// (it may use the pool)" is what the crate promises for its callbacks; findings 81, 82,
/// 152): each drop returns and is counted.
/// Pinned.
#[test]
fn pinned_a_recipe_whose_drop_uses_the_pool_is_never_dropped_under_its_lock() {
    on_thread_within("recipes whose drops use the pool", 60, || {
        let dropped = Arc::new(AtomicUsize::new(0));
        let cell = Arc::new(OnceLock::new());
        let pool = local(1).max_queue_size(10).rerun_interrupted(false).build();
        assert!(cell.set(pool.clone()).is_ok());
        let started = Arc::new(AtomicUsize::new(0));
        let recipe = |v: u32| {
            let held = UsesPoolOnDrop {
                pool: cell.clone(),
                dropped: dropped.clone(),
            };
            let started = started.clone();
            move || {
                let _ = &held;
                let started = started.clone();
                async move {
                    if v == 0 {
                        started.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                    }
                    v
                }
            }
        };
        let rt = multi_thread_of(2);
        rt.block_on(async {
            // Completed.
            assert_eq!(pool.run(recipe(1)).await.unwrap(), 1);
            pool.wait().await;
            assert_eq!(dropped.load(Ordering::SeqCst), 1);
            // Aborted while queued, and covered by cancel_all while queued.
            let blocker = pool.submit(recipe(0)).await.unwrap();
            let q1 = pool.submit(recipe(2)).await.unwrap();
            let q2 = pool.submit(recipe(3)).await.unwrap();
            q1.abort();
            assert!(q1.await.unwrap_err().is_cancelled());
            pool.cancel_all().await;
            assert!(q2.await.unwrap_err().is_cancelled());
            assert!(blocker.await.unwrap_err().is_cancelled());
            pool.wait().await;
        });
        until("the recipes dropped", || {
            dropped.load(Ordering::SeqCst) == 4
        });
        // Interrupted without re-runs (its runtime ends). (The blocker above may have
        // been cancelled before it started: counted from here.)
        let before = started.load(Ordering::SeqCst);
        let h = rt.block_on(pool.submit(recipe(0))).unwrap();
        until("its first poll", || {
            started.load(Ordering::SeqCst) == before + 1
        });
        drop(rt);
        until("the interrupted recipe dropped", || {
            dropped.load(Ordering::SeqCst) == 5
        });
        drop(h);
        // Abandoned by a shutdown's deadline (running and queued).
        let rt = current_thread();
        rt.block_on(async {
            pool.submit(recipe(0)).await.unwrap().detach();
            pool.submit(recipe(6)).await.unwrap().detach();
            tokio::task::yield_now().await;
            let report = pool.shutdown_timeout(Duration::from_millis(20)).await;
            assert_eq!(report.abandoned(), 2, "{report:?}");
        });
        until("the abandoned recipes dropped", || {
            dropped.load(Ordering::SeqCst) == 7
        });
    });
}

/// The user's recipe's captured value panics when dropped (after a normal run, after an
/// abort while queued), and the user goes on submitting and waiting.
/// Expected: the panic stays inside the pool (the crate catches panics of the user's
/// drops, `drop_quietly`); later submits (which "free the leftovers of ended jobs") and
/// `wait()` neither panic nor hang, and the result is the task's.
/// Pinned.
#[test]
fn pinned_a_recipe_whose_drop_panics_does_not_reach_later_submits_or_waits() {
    struct PanicsOnDrop(Arc<AtomicUsize>);
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            panic!("recipe capture panics on drop");
        }
    }
    support::hide_panics(&[
        "recipe panics when called",
        "future panics on a later poll",
        "recipe capture panics on drop",
    ]);
    let drops = Arc::new(AtomicUsize::new(0));
    let pool = local(2).build();
    let rt = multi_thread_of(2);
    rt.block_on(async {
        for i in 0..50u32 {
            let held = PanicsOnDrop(drops.clone());
            let h = pool
                .submit(move || {
                    let _ = &held;
                    async move { i }
                })
                .await
                .unwrap();
            assert_eq!(within("the task", h).await.unwrap(), i);
        }
        within("wait", pool.wait()).await;
        let _busy = pool.submit(std::future::pending::<()>).await.unwrap();
        let _busy2 = pool.submit(std::future::pending::<()>).await.unwrap();
        let held = PanicsOnDrop(drops.clone());
        let q = pool
            .submit(move || {
                let _ = &held;
                async {}
            })
            .await
            .unwrap();
        q.abort();
        assert_eq!(
            within("aborted", q).await.unwrap_err().cancel_reason(),
            Some(CancelReason::Aborted)
        );
        within("cancel_all", pool.cancel_all()).await;
        within("wait", pool.wait()).await;
        assert_eq!(pool.run(|| async { 7 }).await.unwrap(), 7);
    });
    until("every capture dropped", || {
        drops.load(Ordering::SeqCst) == 51
    });
}

/// A refused submit (`try_submit` on a full pool, `submit_with` past its timeout,
/// `TooHeavy`) hands the recipe back.
/// Expected: "a rejected submission hands the job back" (README): the same recipe, never
/// called, nothing it captured dropped, and it can be submitted again.
/// Pinned.
#[test]
fn pinned_a_refused_recipe_comes_back_uncalled_and_undropped() {
    let rt = support::paused_runtime();
    rt.block_on(async {
        let pool = local(1).max_queue_size(0).weight_capacity(2).build();
        let tally = Tally::default();
        let _busy = pool.submit(std::future::pending::<()>).await.unwrap();
        let back = pool.try_submit(tally.recipe(1)).unwrap_err();
        assert!(back.is_full());
        let recipe = back.into_inner();
        let back = pool
            .submit_with(
                recipe,
                SubmitOptions::new().timeout(Duration::from_millis(5)),
            )
            .await
            .unwrap_err();
        assert!(back.is_timed_out());
        let recipe = back.into_inner();
        let back = pool
            .submit_with(recipe, SubmitOptions::new().weight(3))
            .await
            .unwrap_err();
        assert!(back.is_too_heavy());
        let recipe = back.into_inner();
        assert_eq!(
            (tally.calls(), tally.drops()),
            (0, 0),
            "a refused recipe was called or dropped"
        );
        within("cancel_all", pool.cancel_all()).await;
        assert_eq!(pool.run(recipe).await.unwrap(), 1);
        within("wait", pool.wait()).await;
        assert_eq!((tally.calls(), tally.drops()), (1, 1));
    });
}

/// `batch_submit` and `batch_run` of recipes, one of which panics when called; a
/// `batch_run` dropped under a timeout.
/// Expected: results in input order, the panicking recipe's an `Err` that is a panic;
/// "dropping the future ... aborts every task it submitted that has not finished": the
/// aborted tasks' recipes are never called and all are dropped once.
/// Pinned.
#[test]
fn pinned_batches_of_recipes_call_each_once_and_drop_each_once() {
    support::hide_panics(&["recipe panics when called", "future panics on a later poll"]);
    let rt = support::paused_runtime();
    rt.block_on(async {
        let pool = local(2).build();
        let tally = Tally::default();
        let t = tally.clone();
        let recipes = (0..6u32).map(move |i| {
            let inner = t.recipe(i);
            move || {
                let fut = inner();
                if i == 3 {
                    panic!("recipe panics when called");
                }
                fut
            }
        });
        let results = within("batch_run", pool.batch_run(recipes)).await.unwrap();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(v as usize, i),
                Err(e) => assert!(i == 3 && e.is_panic(), "task {i}: {e}"),
            }
        }
        within("wait", pool.wait()).await;
        assert_eq!((tally.calls(), tally.drops()), (6, 6));

        // Dropped under a timeout: 2 run (never end), 3 queued are aborted uncalled.
        let tally = Tally::default();
        let t = tally.clone();
        let recipes = (0..5u32).map(move |_| {
            let (calls, held) = (t.calls.clone(), Counted(t.drops.clone()));
            move || {
                let _ = &held;
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<u32>()
            }
        });
        // No run ends: the first two hold the pool, the other three wait in its queue.
        let cut = tokio::time::timeout(Duration::from_millis(10), pool.batch_run(recipes)).await;
        assert!(cut.is_err());
        within("wait", pool.wait()).await;
        assert_eq!(
            tally.calls(),
            2,
            "a batch_run dropped while its tasks were queued let the pool call their recipes"
        );
        assert_eq!(
            tally.drops(),
            5,
            "the recipes of a dropped batch_run were not all dropped once"
        );
    });
}

/// `smart_run` returns while recipes are still queued in an `auto_shutdown` pool.
/// Expected: "under `smart_run(async { .. })`, which waits for every such pool before
/// returning": every recipe called once; what they captured freed by then.
/// Pinned.
#[test]
fn pinned_smart_run_runs_queued_recipes_once_and_frees_them() {
    let _serial = serial();
    let tally = Tally::default();
    let t = tally.clone();
    nb_aiopool::smart_run(async move {
        let pool = SmartAioPool::builder()
            .name("review-recipes-smart-run")
            .max_concurrency(1)
            .process_wide(false)
            .build();
        for i in 0..20 {
            let calls = t.calls.clone();
            let held = Counted(t.drops.clone());
            pool.submit(move || {
                let _ = &held;
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    i
                }
            })
            .await
            .unwrap()
            .detach();
        }
    });
    assert_eq!(
        tally.calls(),
        20,
        "smart_run returned before every queued recipe had run once"
    );
    until("the recipes freed", || tally.drops() == 20);
}

/// `shutdown_all_smart_aiopools` with recipes queued in a process-wide pool.
/// Expected: "stops their intake, for good, and waits for all their tasks".
/// Pinned.
#[test]
fn pinned_shutdown_all_runs_queued_recipes_once() {
    let _serial = serial();
    let rt = multi_thread_of(2);
    let tally = Tally::default();
    rt.block_on(async {
        let pool = SmartAioPool::builder()
            .name("review-recipes-shutdown-all")
            .max_concurrency(1)
            .auto_shutdown(false)
            .build();
        let mut handles = Vec::new();
        for i in 0..10 {
            handles.push(pool.submit(tally.recipe(i)).await.unwrap());
        }
        within("shutdown_all", nb_aiopool::shutdown_all_smart_aiopools()).await;
        assert_eq!(tally.calls(), 10);
        for (i, h) in handles.into_iter().enumerate() {
            assert!(h.is_finished(), "task {i} not finished after shutdown_all");
            assert_eq!(h.await.unwrap() as usize, i);
        }
        assert!(pool.is_closed());
        assert!(pool.submit(|| async {}).await.unwrap_err().is_closed());
    });
    until("the recipes freed", || tally.drops() == 10);
}

/// A user's recipe whose first run is cut off by its runtime and that panics when called
/// again, awaited from a new runtime through `blocking_wait` on a plain thread.
/// Expected: the handle gets the panic (not a cancellation), the recipe was called twice
/// and is dropped once.
/// Pinned.
#[test]
fn pinned_a_recipe_panicking_only_on_its_rerun_is_reported_as_a_panic() {
    support::hide_panics(&[
        "recipe panics when called",
        "future panics on a later poll",
        "recipe capture panics on drop",
    ]);
    let pool = local(1).build();
    let calls = Arc::new(AtomicUsize::new(0));
    let drops = Arc::new(AtomicUsize::new(0));
    let rt = multi_thread_of(1);
    let (c, held) = (calls.clone(), Counted(drops.clone()));
    let h = rt
        .block_on(pool.submit(move || {
            let _ = &held;
            if c.fetch_add(1, Ordering::SeqCst) > 0 {
                panic!("recipe panics when called");
            }
            std::future::pending::<u8>()
        }))
        .unwrap();
    until("the first run", || calls.load(Ordering::SeqCst) == 1);
    drop(rt);
    let rt = current_thread();
    rt.block_on(async {
        let err = within("the re-run", h).await.unwrap_err();
        assert!(err.is_panic(), "{err}");
        within("wait", pool.wait()).await;
    });
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    until("dropped", || drops.load(Ordering::SeqCst) == 1);
    let s = pool.stats();
    assert_eq!((s.panicked, s.cancelled), (1, 0), "{s:?}");
}

/// The user's tasks (8, in a pool of 4 on a multi-thread runtime) record whether another
/// run of the same task is in progress; the 4 running are cut off by their runtime's
/// end (their runs then dropped), and a new runtime waits for the pool.
/// Expected: "The two runs of a task never overlap" (README).
/// Pinned.
#[test]
fn pinned_one_tasks_runs_never_overlap_across_runtime_ends() {
    let pool = local(4).build();
    let overlap = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let rt = multi_thread_of(2);
    let mut handles = Vec::new();
    for _ in 0..8 {
        let inside = Arc::new(AtomicUsize::new(0));
        let (overlap, calls) = (overlap.clone(), calls.clone());
        let h = rt
            .block_on(pool.submit(move || {
                let (inside, overlap) = (inside.clone(), overlap.clone());
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                        overlap.store(true, Ordering::SeqCst);
                    }
                    struct Out(Arc<AtomicUsize>);
                    impl Drop for Out {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    let _out = Out(inside);
                    // The first 4 runs (cut off) never end; later ones end after a moment
                    // spent in synchronous code.
                    if n < 4 {
                        std::future::pending::<()>().await;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                    tokio::task::yield_now().await;
                }
            }))
            .unwrap();
        handles.push(h);
    }
    until("4 runs started", || calls.load(Ordering::SeqCst) == 4);
    drop(rt);
    let rt = multi_thread_of(2);
    rt.block_on(async {
        within("wait", pool.wait()).await;
        for h in handles {
            within("a task", h).await.unwrap();
        }
    });
    assert_eq!(
        calls.load(Ordering::SeqCst),
        12,
        "4 cut-off runs and 8 to the end"
    );
    assert!(
        !overlap.load(Ordering::SeqCst),
        "two runs of one task overlapped"
    );
}

thread_local! {
    /// Set by a test while its thread holds a lock of the user's and calls into the pool.
    static HOLDING_USER_LOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A recipe's capture that records a drop made on a thread that was, at that moment,
/// inside a pool call with a user lock held (there a `Drop` that takes that lock, as the
/// captured value's owner may well do, deadlocks).
struct DropWhileUserLockHeld {
    drops: Arc<AtomicUsize>,
    under_user_lock: Arc<AtomicUsize>,
}

impl Drop for DropWhileUserLockHeld {
    fn drop(&mut self) {
        if HOLDING_USER_LOCK.with(|h| h.get()) {
            self.under_user_lock.fetch_add(1, Ordering::SeqCst);
        }
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// The user's tasks have ended on a multi-thread runtime (their recipes are kept for a
/// moment, to be freed in a batch), and the user, holding a lock of their own, shrinks
/// the pool with `set_max_concurrency` (a plain, synchronous call).
/// Expected: the crate docs ("Where an ended job is freed") list where what a recipe
/// captured is dropped: "in a `submit` from async code (never in a `try_submit` or
/// `blocking_submit`, whose caller may hold a lock, and never inside a job's poll); when
/// the pool runs out of work; else after about 2 ms, by a tokio task of the pool ...; and
/// before a `wait()` or `shutdown()` returns". `set_max_concurrency` was not among them
/// (372 added it to the calls that free nothing), and its caller may hold a lock as
/// well: it should run no user `Drop`.
/// Before the fix: "set_max_concurrency dropped what 2 ended recipes captured on the
/// caller's thread, inside the call (a Drop that takes a lock the caller holds
/// deadlocks there)" (`Graves::resize`, called by `Engine::set_max_concurrency`, took
/// what was kept beyond the new bound and the call freed it on the caller's thread).
#[test]
fn set_max_concurrency_does_not_drop_ended_recipes_on_the_callers_thread() {
    let rt = multi_thread_of(2);
    let mut seen = 0;
    for _round in 0..50 {
        let pool = local(4).max_queue_size(0).build();
        let drops = Arc::new(AtomicUsize::new(0));
        let under_user_lock = Arc::new(AtomicUsize::new(0));
        let (blocker, n) = rt.block_on(async {
            // Keeps the pool busy: what ended jobs leave is kept, not freed at once.
            let blocker = pool.submit(std::future::pending::<()>).await.unwrap();
            for i in 0..2u32 {
                let held = DropWhileUserLockHeld {
                    drops: drops.clone(),
                    under_user_lock: under_user_lock.clone(),
                };
                let h = pool
                    .submit(move || {
                        let _ = &held;
                        async move { i }
                    })
                    .await
                    .unwrap();
                assert_eq!(h.await.unwrap(), i);
            }
            (blocker, drops.load(Ordering::SeqCst))
        });
        if n != 0 {
            // The pool's timer freed them first: try again.
            blocker.abort();
            rt.block_on(async { within("wait", pool.wait()).await });
            continue;
        }
        seen += 1;
        let user_lock = std::sync::Mutex::new(());
        {
            let _guard = user_lock.lock().unwrap();
            HOLDING_USER_LOCK.with(|h| h.set(true));
            pool.set_max_concurrency(1);
            HOLDING_USER_LOCK.with(|h| h.set(false));
        }
        assert_eq!(
            under_user_lock.load(Ordering::SeqCst),
            0,
            "set_max_concurrency dropped what {} ended recipes captured on the caller's \
             thread, inside the call (a Drop that takes a lock the caller holds deadlocks \
             there)",
            under_user_lock.load(Ordering::SeqCst)
        );
        blocker.abort();
        rt.block_on(async { within("wait", pool.wait()).await });
        assert_eq!(
            drops.load(Ordering::SeqCst),
            2,
            "the ended recipes were not freed by wait()"
        );
    }
    assert!(
        seen > 0,
        "the pool's timer always freed the ended recipes first: nothing was checked"
    );
}

/// Polls `fut` with [`HOLDING_USER_LOCK`] set around each poll (a job that holds a lock
/// of the user's in its synchronous code, or any code the crate promises not to run
/// other jobs' `Drop`s in).
struct Flagged<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for Flagged<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        HOLDING_USER_LOCK.with(|h| h.set(true));
        let out = self.0.as_mut().poll(cx);
        HOLDING_USER_LOCK.with(|h| h.set(false));
        out
    }
}

/// With ended recipes kept for a batch free, the user calls `try_submit` and
/// `blocking_submit` (synchronous: "whose caller may hold a lock"), and a job of another
/// pool submits to this one from inside its poll.
/// Expected (crate docs, "Where an ended job is freed"): freed "in a `submit` from async
/// code (never in a `try_submit`, `blocking_submit` or `set_max_concurrency`, whose caller
/// may hold a lock, and never inside a job's poll)": none of these runs the kept recipes'
/// `Drop`s.
/// Pinned.
#[test]
fn pinned_sync_submits_and_submits_inside_a_job_drop_no_ended_recipes() {
    let rt = multi_thread_of(2);
    // A job of another pool submits to this one.
    let other = support::common_local(1, 1);
    let mut seen = 0;
    for _round in 0..50 {
        let pool = local(4).max_queue_size(8).build();
        let drops = Arc::new(AtomicUsize::new(0));
        let under_user_lock = Arc::new(AtomicUsize::new(0));
        let (blocker, n) = rt.block_on(async {
            let blocker = pool.submit(std::future::pending::<()>).await.unwrap();
            // 4 ended recipes kept: what a submit from async code would take (a batch).
            for i in 0..4u32 {
                let held = DropWhileUserLockHeld {
                    drops: drops.clone(),
                    under_user_lock: under_user_lock.clone(),
                };
                let h = pool
                    .submit(move || {
                        let _ = &held;
                        async move { i }
                    })
                    .await
                    .unwrap();
                assert_eq!(h.await.unwrap(), i);
            }
            (blocker, drops.load(Ordering::SeqCst))
        });
        if n != 0 {
            // The pool's timer freed them first: try again.
            blocker.abort();
            rt.block_on(async { within("wait", pool.wait()).await });
            continue;
        }
        seen += 1;
        HOLDING_USER_LOCK.with(|h| h.set(true));
        let a = pool.try_submit(|| async {}).unwrap();
        let b = pool.blocking_submit(|| async {}).unwrap();
        HOLDING_USER_LOCK.with(|h| h.set(false));
        let p = pool.clone();
        let nested = rt.block_on(async {
            let job = Flagged(Box::pin(
                async move { p.submit(|| async {}).await.unwrap() },
            ));
            other.run(job).await.unwrap()
        });
        assert_eq!(
            under_user_lock.load(Ordering::SeqCst),
            0,
            "a try_submit, a blocking_submit or a submit inside a job's poll ran the Drop of \
             what {} ended recipes captured",
            under_user_lock.load(Ordering::SeqCst)
        );
        blocker.abort();
        rt.block_on(async {
            for h in [a, b] {
                h.await.unwrap();
            }
            nested.await.unwrap();
            within("wait", pool.wait()).await;
        });
        assert_eq!(drops.load(Ordering::SeqCst), 4);
    }
    assert!(
        seen > 0,
        "the pool's timer always freed the ended recipes first: nothing was checked"
    );
}

/// A recipe's capture whose `Drop` submits a follow-up task to the same pool with
/// `try_submit` (a clean-up step queued when the work item goes away).
struct FollowUpOnDrop {
    pool: Arc<OnceLock<SmartAioPool>>,
    follow_ups: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl Drop for FollowUpOnDrop {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
        let Some(pool) = self.pool.get() else { return };
        let done = self.follow_ups.clone();
        match pool.try_submit(move || {
            let done = done.clone();
            async move {
                done.fetch_add(1, Ordering::SeqCst);
            }
        }) {
            Ok(h) => h.detach(),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// The user's recipes capture a value whose `Drop` queues a follow-up task in the same
/// pool (`try_submit`, "never waits"), and the tasks end every way: completed, aborted
/// while queued, covered by `cancel_all` while queued and running.
/// Expected: every follow-up is accepted (the pool has room) and runs (or, if an
/// aborted recipe's drop queued it before `cancel_all` was called, is cancelled by it);
/// `wait()` returns; nothing hangs or panics inside the pool.
/// Pinned.
#[test]
fn pinned_a_recipe_whose_drop_submits_a_follow_up_to_its_pool() {
    on_thread_within("recipes whose drops submit follow-ups", 60, || {
        for rt in [multi_thread_of(2), current_thread()] {
            let cell = Arc::new(OnceLock::new());
            let follow_ups = Arc::new(AtomicUsize::new(0));
            let refused = Arc::new(AtomicUsize::new(0));
            let dropped = Arc::new(AtomicUsize::new(0));
            let pool = local(2).max_queue_size(50).build();
            assert!(cell.set(pool.clone()).is_ok());
            let recipe = |v: u32| {
                let held = FollowUpOnDrop {
                    pool: cell.clone(),
                    follow_ups: follow_ups.clone(),
                    refused: refused.clone(),
                    dropped: dropped.clone(),
                };
                move || {
                    let _ = &held;
                    async move {
                        if v == 0 {
                            std::future::pending::<()>().await;
                        }
                        v
                    }
                }
            };
            rt.block_on(async {
                for i in 1..=10 {
                    assert_eq!(pool.run(recipe(i)).await.unwrap(), i);
                }
                within("wait", pool.wait()).await;
                let blockers = [
                    pool.submit(recipe(0)).await.unwrap(),
                    pool.submit(recipe(0)).await.unwrap(),
                ];
                let mut queued = Vec::new();
                for i in 1..=10 {
                    queued.push(pool.submit(recipe(i)).await.unwrap());
                }
                for h in queued.iter().step_by(2) {
                    h.abort();
                }
                within("cancel_all", pool.cancel_all()).await;
                for h in queued.into_iter().chain(blockers) {
                    assert!(within("a cancelled task", h)
                        .await
                        .unwrap_err()
                        .is_cancelled());
                }
                // Follow-ups of follow-ups: none (theirs capture nothing).
                let end = std::time::Instant::now() + Duration::from_secs(10);
                while follow_ups.load(Ordering::SeqCst) + refused.load(Ordering::SeqCst) < 22
                    && std::time::Instant::now() < end
                {
                    within("wait", pool.wait()).await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            // A follow-up queued by an aborted recipe's drop (made by a task of the
            // runtime) before `cancel_all` was called is one of the tasks "queued now"
            // that it cancels: counted with those that ran.
            let stats = pool.stats();
            let cancelled_follow_ups = stats.cancelled.saturating_sub(12) as usize;
            assert_eq!(
                (
                    dropped.load(Ordering::SeqCst),
                    follow_ups.load(Ordering::SeqCst) + cancelled_follow_ups,
                    refused.load(Ordering::SeqCst)
                ),
                (22, 22, 0),
                "(recipes dropped, follow-ups run or cancelled, refused): not every \
                 follow-up a dropped recipe queued ran; {stats:?}"
            );
        }
    });
}

/// A recipe's capture whose `Drop` builds a SmartAioPool (which takes the process-wide
/// list of pools) and drops it.
struct BuildsAPoolOnDrop(Arc<AtomicUsize>);

impl Drop for BuildsAPoolOnDrop {
    fn drop(&mut self) {
        drop(local(1).build());
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A private pool (`auto_shutdown(false)`, `process_wide(false)`) whose last handle and
/// whose task's handle are dropped, and whose runtime then ends while the task runs: its
/// re-run is stranded, and "for re-runs stranded after the last handle went, at the next
/// `build`" it is cancelled and its recipe dropped. The recipe's capture builds a pool
/// in its `Drop`.
/// Expected: the recipe is dropped (once) by the next `build`, outside the process-wide
/// list's lock: the nested `build` neither deadlocks nor panics.
/// Pinned.
#[test]
fn pinned_a_stranded_recipe_dropped_by_the_next_build_may_build_a_pool_in_its_drop() {
    let _serial = serial();
    on_thread_within("a recipe dropped by the next build", 30, || {
        let dropped = Arc::new(AtomicUsize::new(0));
        let tally = Tally::default();
        let pool = local(1).build();
        let rt = multi_thread_of(1);
        let held = BuildsAPoolOnDrop(dropped.clone());
        let inner = tally.cut_off_once(1);
        let h = rt
            .block_on(pool.submit(move || {
                let _ = &held;
                inner()
            }))
            .unwrap();
        until("the first run", || tally.calls() == 1);
        drop(h);
        drop(pool);
        drop(rt);
        assert_eq!(tally.calls(), 1);
        // The next build forgets the stranded pool, cancelling its re-run.
        let next = local(1).build();
        until("the stranded recipe dropped", || {
            dropped.load(Ordering::SeqCst) == 1
        });
        assert_eq!(
            tally.calls(),
            1,
            "a stranded recipe whose handles were gone was run again"
        );
        drop(next);
    });
}

/// With `rerun_interrupted(false)`, the user submits from a current-thread runtime that
/// is then dropped without being driven again: the task was given a slot there but never
/// started. The handle is then awaited from a new runtime, or from a plain executor.
/// Expected: "tasks that never started still run once" (README): the recipe is called
/// once and the handle gets its value, not `RuntimeShutdown`.
/// Pinned.
#[test]
fn pinned_without_reruns_a_task_given_a_slot_but_never_started_still_runs_once() {
    for plain in [false, true] {
        let pool = local(1).rerun_interrupted(false).build();
        let tally = Tally::default();
        let rt = current_thread();
        let h = rt.block_on(pool.submit(tally.recipe(6))).unwrap();
        assert_eq!(tally.calls(), 0);
        drop(rt);
        let got = if plain {
            on_thread_within("the handle on a plain executor", 30, move || {
                support::plain_block_on(h)
            })
        } else {
            current_thread().block_on(async { within("the handle", h).await })
        };
        assert_eq!(
            got.map_err(|e| e.to_string()),
            Ok(6),
            "a task that never started was not run once (plain executor: {plain})"
        );
        assert_eq!(tally.calls(), 1);
        until("the recipe dropped", || tally.drops() == 1);
    }
}
