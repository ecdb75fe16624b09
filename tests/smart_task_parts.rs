//! What becomes of a SmartAioPool task's parts (the recipe and what it captured, each
//! run's future, the result) when results panic when dropped, when handles are held, and
//! when a run is cut off by the end of its runtime, for small futures and large ones.
//!
//! Written by a review of cde11df, which ran a small recipe's first run in the task's own
//! allocation (withdrawn in e46a7be: BENCHMARKS.md, "2026-12-05, 21:07–00:07 UTC"); the
//! first test failed there (a panic in the result's drop skipped the end of the run's
//! copy of the task, so the recipe was never dropped). Every test passes on the runs in
//! cells of their own that SmartAioPool uses; they pin that, for small futures and large
//! (over 256 bytes) alike, should the room come back.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nb_aiopool::SmartAioPool;
use support::Counted;

/// The message of the panics these tests raise on purpose.
const BOMB: &str = "a result's Drop panicked (expected by smart_task_parts)";

/// A result whose `Drop` panics.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("{}", BOMB);
    }
}

/// A 2-worker runtime, or a current-thread one.
fn runtime(multi: bool) -> tokio::runtime::Runtime {
    if multi {
        support::multi_thread_of(2)
    } else {
        support::current_thread()
    }
}

/// A pool of its own, of `c` slots (not process-wide, no exit take-over).
fn pool(c: usize) -> SmartAioPool {
    support::smart_local(c)
}

/// A detached task whose result's `Drop` panics: the pool drops that result when the run
/// ends (nobody wants it), and catches the panic. What the recipe captured must still be
/// dropped once the task has ended and the pool holds no copy of it (the crate docs,
/// "Memory"), as it is when the run has a cell of its own.
///
/// Failed on cde11df for the run in the room: `Erased::release` for `SmartTask<_, _,
/// FirstRun<_>>` calls the room's release, which drops the unwanted result and panics,
/// so the `release_copy` after it is skipped: the task's count of copies never reaches
/// zero and the recipe (with its captures) is never dropped.
#[test]
fn a_detached_tasks_recipe_is_dropped_even_when_its_result_panics_on_drop() {
    support::hide_panics(&[BOMB]);
    fn case<F>(what: &str, make: impl Fn() -> F + Send + Sync + Clone + 'static)
    where
        F: std::future::Future<Output = Bomb> + Send + 'static,
    {
        for multi in [false, true] {
            let captured = Arc::new(AtomicUsize::new(0));
            let rt = runtime(multi);
            rt.block_on(async {
                let pool = pool(1);
                let guard = Counted(captured.clone());
                let make = make.clone();
                let recipe = move || {
                    let _ = &guard;
                    make()
                };
                pool.submit(recipe).await.unwrap().detach();
                support::within("the pool's wait", pool.wait()).await;
                assert_eq!(pool.stats().completed, 1, "{what}");
                pool.shutdown().await;
            });
            drop(rt);
            assert_eq!(
                captured.load(Ordering::SeqCst),
                1,
                "{what}, multi-thread runtime: {multi}: the recipe's capture was not dropped \
             after the task ended, its result dropped and its pool shut down (a copy of the \
             task was never ended)"
            );
        }
    }
    case("a large future (a cell of its own)", || async {
        let pad = [1u8; 300];
        tokio::task::yield_now().await;
        std::hint::black_box(&pad);
        Bomb
    });
    case("a small future", || async {
        tokio::task::yield_now().await;
        Bomb
    });
}

/// A future that counts its drop: what a run's future owns.
fn owned(drops: &Arc<AtomicUsize>) -> Counted {
    Counted(drops.clone())
}

/// Pin: a task drops its run's future (and what it owned) when the run ends, and its
/// recipe (with what it captured) once the pool holds no copy of it, while its handle is
/// still held: the handle pins the allocation's bytes, not what they owned (the crate
/// docs, "Memory"). Then the handle still gives the result.
#[test]
fn pin_a_held_handle_pins_neither_the_futures_nor_the_recipes_captures() {
    for multi in [false, true] {
        let captured = Arc::new(AtomicUsize::new(0));
        let fut_owned = Arc::new(AtomicUsize::new(0));
        let rt = runtime(multi);
        rt.block_on(async {
            let pool = pool(2);
            let guard = Counted(captured.clone());
            let drops = fut_owned.clone();
            let handle = pool
                .submit(move || {
                    let _ = &guard;
                    let held = owned(&drops);
                    async move {
                        tokio::task::yield_now().await;
                        drop(held);
                        5u32
                    }
                })
                .await
                .unwrap();
            support::within("the pool's wait", pool.wait()).await;
            assert_eq!(
                fut_owned.load(Ordering::SeqCst),
                1,
                "the future's own, multi: {multi}"
            );
            assert_eq!(
                captured.load(Ordering::SeqCst),
                1,
                "the recipe's capture, with the handle held, multi: {multi}"
            );
            assert_eq!(support::within("the handle", handle).await.unwrap(), 5);
            let stats = pool.stats();
            assert_eq!((stats.completed, stats.panicked), (1, 0));
            pool.shutdown().await;
        });
    }
}

/// A future whose `Drop` panics (after it returned a value).
struct PanicsOnDrop(u32);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if self.0 == 1 {
            panic!("{}", BOMB);
        }
    }
}

/// Pin: a run's future whose `Drop` panics after it returned is the task's panic, as for
/// a submitted future (`BoxRun::poll_run`): the handle gets a panic error, the pool counts
/// a panic, and the recipe is dropped once the task ended.
#[test]
fn pin_a_future_that_panics_when_dropped_is_the_tasks_panic() {
    support::hide_panics(&[BOMB]);
    let captured = Arc::new(AtomicUsize::new(0));
    support::current_thread().block_on(async {
        let pool = pool(1);
        let guard = Counted(captured.clone());
        let handle = pool
            .submit(move || {
                let _ = &guard;
                let bomb = PanicsOnDrop(1);
                async move {
                    tokio::task::yield_now().await;
                    let _bomb = &bomb;
                    3u32
                }
            })
            .await
            .unwrap();
        let err = support::within("the handle", handle)
            .await
            .expect_err("a future whose Drop panicked");
        assert!(err.is_panic(), "{err:?}");
        support::within("the pool's wait", pool.wait()).await;
        let stats = pool.stats();
        assert_eq!((stats.completed, stats.panicked), (0, 1));
        assert_eq!(captured.load(Ordering::SeqCst), 1, "the recipe's capture");
        pool.shutdown().await;
    });
}

/// Pin: a task whose first run is cut off by the end of its runtime runs again when its
/// handle is awaited from another runtime: each run's future is dropped once, the recipe
/// once after both, and the pool counts one completed task.
#[test]
#[allow(clippy::async_yields_async)] // the block hands back a handle to await later
fn pin_a_first_run_cut_off_by_its_runtime_runs_again_and_each_part_drops_once() {
    let runs = Arc::new(AtomicUsize::new(0));
    let fut_owned = Arc::new(AtomicUsize::new(0));
    let captured = Arc::new(AtomicUsize::new(0));
    let pool = support::one_slot_smart(4);
    let a = support::multi_thread_of(1);
    let handle = a.block_on(async {
        let runs = runs.clone();
        let drops = fut_owned.clone();
        let guard = Counted(captured.clone());
        pool.submit(move || {
            let _ = &guard;
            let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
            let held = owned(&drops);
            async move {
                let _held = held;
                if first {
                    std::future::pending::<()>().await;
                }
                11u32
            }
        })
        .await
        .unwrap()
    });
    support::until("the first run", || runs.load(Ordering::SeqCst) == 1);
    drop(a);
    assert_eq!(
        fut_owned.load(Ordering::SeqCst),
        1,
        "the first run's future, cut off"
    );
    assert_eq!(
        captured.load(Ordering::SeqCst),
        0,
        "the recipe, kept to run again"
    );
    let b = support::current_thread();
    b.block_on(async {
        assert_eq!(support::within("the handle", handle).await.unwrap(), 11);
        support::within("the pool's wait", pool.wait()).await;
    });
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(fut_owned.load(Ordering::SeqCst), 2, "the re-run's future");
    assert_eq!(
        captured.load(Ordering::SeqCst),
        1,
        "the recipe, after both runs"
    );
    assert_eq!(pool.stats().completed, 1);
    drop(b);
}
