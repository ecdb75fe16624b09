//! A SmartAioPool job's end drops what the job leaves on the slot's thread (on a
//! current-thread runtime, or after a panic): the run, with a result its detached handle
//! left, and the pool's copy of the recipe. Both are user code; a panic in either's `Drop`
//! must cost only that drop (the crate docs: a job whose `Drop` panics affects only that
//! job), never the process.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nb_aiopool::SmartAioPool;

/// Panics when dropped, with its message (hidden from the test's output), even while
/// another panic unwinds (as a user's `Drop` may: it cannot know).
struct Bomb(&'static str);

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("{}", self.0);
    }
}

const RESULT_BOMB: &str = "recipe_end result bomb";
const RECIPE_BOMB: &str = "recipe_end recipe bomb";

/// On a current-thread runtime: a recipe that holds a [`Bomb`] (so the pool's copy of it
/// panics when dropped, once the caller's copy is gone) and whose run returns a `Bomb`,
/// submitted with its handle detached, so that the job's end drops both. Then a plain job
/// of the same pool, whose value is returned: the pool goes on.
fn both_drops_panic_at_the_end() -> u32 {
    support::hide_panics(&[RESULT_BOMB, RECIPE_BOMB]);
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(4)
        .auto_shutdown(false)
        .process_wide(false)
        .build();
    let runs = Arc::new(AtomicUsize::new(0));
    let next = support::current_thread().block_on(async {
        let held = Arc::new(Bomb(RECIPE_BOMB));
        let r = runs.clone();
        let recipe = move || {
            let _held = &held;
            r.fetch_add(1, Ordering::SeqCst);
            async { Bomb(RESULT_BOMB) }
        };
        pool.submit(recipe).await.unwrap().detach();
        support::within("the bombs' job", pool.wait()).await;
        let h = pool.submit(|| async { 7u32 }).await.unwrap();
        support::within("the next job", h).await.unwrap()
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the recipe ran once");
    next
}

/// The result's `Drop` panicked first; the copy of the recipe, dropped in the same drop
/// glue while that panic unwound, panicked too: "panic in a destructor during cleanup",
/// and the process aborted (finding 401; a helper's note while cutting the slot's path).
/// Each is dropped on its own now, each panic caught.
#[test]
fn a_recipe_and_its_result_that_both_panic_when_dropped_do_not_abort_the_process() {
    let child = support::run_child("both_drops", 60);
    let _ = std::fs::remove_dir_all(&child.dir);
    assert_eq!(
        child.code,
        Some(0),
        "the child died (code {:?}) at the end of a job whose result and recipe both \
         panic when dropped; stderr: {}",
        child.code,
        support::stderr_head(&child.stderr)
    );
}

/// The child process of the test above.
#[test]
#[ignore = "run by the test above, in a child process"]
fn child() {
    let (scenario, _dir) = support::child_scenario();
    assert_eq!(scenario, "both_drops");
    assert_eq!(both_drops_panic_at_the_end(), 7);
}
