//! A runtime that is alive but not driven (a current-thread runtime outside `block_on`)
//! holds the claimers scheduled on it. Jobs reserved for them must still run when code on
//! a driven runtime lets jobs start (a submit, a `wait`): that runtime gets a claimer of
//! its own when none of the claimers on the way is there (`Engine::claim_here`; RELIABILITY.md,
//! finding 158, the second review). Written by that review; three of these hung (5 s) on
//! 8eca13f, one of them (`preexisting_...`) since the claimers were introduced.
//!
//!   cargo nextest run --test undriven_runtimes

mod support;

use std::future::Future;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool::{CommonAioPool, SmartAioPool, SubmitOptions};
use support::{current_thread, cut_off_once, multi_thread_of};

async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(5), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} hung (5 s)"),
    }
}

/// The commit's own scenario (a peek from an undriven runtime b, then a wait from c),
/// then one more plain task submitted from the driven runtime c and awaited there.
/// The claimer spawned on b at the peek is still counted in `st.claimers`, so the new
/// task's reservation is seen as already having a claimer: none is spawned on c.
#[test]
fn after_the_wait_a_new_task_from_the_driven_runtime_runs() {
    let runs = Arc::new(AtomicUsize::new(0));
    let a = current_thread();
    let (pool, mut handle) = a.block_on(async {
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .auto_shutdown(false)
            .build();
        let handle = pool.submit(cut_off_once(&runs, 7)).await.unwrap();
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        (pool, handle)
    });
    drop(a);
    let b = current_thread();
    b.block_on(async {
        assert!(futures_util::FutureExt::now_or_never(&mut handle).is_none());
    });
    let c = multi_thread_of(2);
    c.block_on(within("the wait", pool.wait()));
    assert_eq!(c.block_on(within("the handle", &mut handle)).unwrap(), 7);
    // b is alive, not driven. A new task from c:
    c.block_on(async {
        let h = pool.submit(|| async { 9u32 }).await.unwrap();
        assert_eq!(
            within("a new task submitted from the driven runtime", h)
                .await
                .unwrap(),
            9
        );
    });
    drop(b);
}

/// The same, but the new task's handle... a wait() from c covering it.
#[test]
fn after_the_wait_a_new_task_is_run_by_another_wait() {
    let runs = Arc::new(AtomicUsize::new(0));
    let a = current_thread();
    let (pool, mut handle) = a.block_on(async {
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .auto_shutdown(false)
            .build();
        let handle = pool.submit(cut_off_once(&runs, 7)).await.unwrap();
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        (pool, handle)
    });
    drop(a);
    let b = current_thread();
    b.block_on(async {
        assert!(futures_util::FutureExt::now_or_never(&mut handle).is_none());
    });
    let c = multi_thread_of(2);
    c.block_on(within("the wait", pool.wait()));
    c.block_on(async {
        let _h = pool.submit(|| async { 9u32 }).await.unwrap();
        within("a second wait", pool.wait()).await;
    });
    drop(b);
}

/// Two tasks cut off by their runtime's end in a pool of two slots whose limit lets only
/// one of them start at a time (`builder` sets it, `options` puts each task under it); a
/// peek from an undriven runtime b takes the first. A `wait()` from the driven c runs
/// both (the second's first run, on c, ends).
fn limited_pool_wait_runs_the_tasks_a_peek_took(
    what: &str,
    builder: nb_aiopool::SmartAioPoolBuilder,
    options: fn() -> SubmitOptions,
) {
    let runs1 = Arc::new(AtomicUsize::new(0));
    let runs2 = Arc::new(AtomicUsize::new(1)); // its first run is on c: must end
    let a = current_thread();
    let (pool, mut h1, mut h2) = a.block_on(async {
        let pool = builder.max_concurrency(2).auto_shutdown(false).build();
        let h1 = pool
            .submit_with(cut_off_once(&runs1, 1), options())
            .await
            .unwrap();
        let h2 = pool
            .submit_with(cut_off_once(&runs2, 2), options())
            .await
            .unwrap();
        support::reach(&runs1, 1, Duration::from_secs(10)).await;
        (pool, h1, h2)
    });
    drop(a);
    let b = current_thread();
    b.block_on(async {
        assert!(futures_util::FutureExt::now_or_never(&mut h1).is_none());
    });
    let c = multi_thread_of(2);
    c.block_on(async {
        within(&format!("the wait ({what})"), pool.wait()).await;
        assert_eq!(within("h1", &mut h1).await.unwrap(), 1);
        assert_eq!(within("h2", &mut h2).await.unwrap(), 2);
    });
    drop(b);
}

/// With a key limit (`max_per_key(1)`, one key).
#[test]
fn keyed_pool_wait_runs_a_task_that_a_peek_took() {
    limited_pool_wait_runs_the_tasks_a_peek_took(
        "keyed pool",
        SmartAioPool::builder().max_per_key(1),
        || SubmitOptions::new().key("k"),
    );
}

/// With a weight capacity that one task fills.
#[test]
fn weighted_pool_wait_runs_a_task_that_a_peek_took() {
    limited_pool_wait_runs_the_tasks_a_peek_took(
        "weighted pool",
        SmartAioPool::builder().weight_capacity(10),
        || SubmitOptions::new().weight(10),
    );
}

/// Two undriven runtimes: a peek on b1, a wait polled once on b2 (claim_here adds its
/// claimer there: 2 = 2 * reserved), then a wait from the driven c adds none.
#[test]
fn two_undriven_runtimes_then_a_driven_wait() {
    let runs = Arc::new(AtomicUsize::new(0));
    let a = current_thread();
    let (pool, mut handle) = a.block_on(async {
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .auto_shutdown(false)
            .build();
        let handle = pool.submit(cut_off_once(&runs, 7)).await.unwrap();
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        (pool, handle)
    });
    drop(a);
    let b1 = current_thread();
    b1.block_on(async {
        assert!(futures_util::FutureExt::now_or_never(&mut handle).is_none());
    });
    let b2 = current_thread();
    b2.block_on(async {
        assert!(futures_util::FutureExt::now_or_never(pool.wait()).is_none());
    });
    let c = multi_thread_of(2);
    c.block_on(within("a wait from a driven runtime", pool.wait()));
    drop((b1, b2));
}

/// Control for `after_the_wait_a_new_task_from_the_driven_runtime_runs`: b dropped
/// before the new submit (its claimer's drop uncounts it): passes.
#[test]
fn control_b_dropped_before_the_new_task() {
    let runs = Arc::new(AtomicUsize::new(0));
    let a = current_thread();
    let (pool, mut handle) = a.block_on(async {
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .auto_shutdown(false)
            .build();
        let handle = pool.submit(cut_off_once(&runs, 7)).await.unwrap();
        support::reach(&runs, 1, Duration::from_secs(10)).await;
        (pool, handle)
    });
    drop(a);
    let b = current_thread();
    b.block_on(async {
        assert!(futures_util::FutureExt::now_or_never(&mut handle).is_none());
    });
    let c = multi_thread_of(2);
    c.block_on(within("the wait", pool.wait()));
    drop(b);
    c.block_on(async {
        let h = pool.submit(|| async { 9u32 }).await.unwrap();
        assert_eq!(within("new task", h).await.unwrap(), 9);
    });
}

/// Pre-existing (no stranding, not this commit): a task submitted from a current-thread
/// runtime b left undriven leaves a claimer counted there; a later task from the driven
/// c is reserved with no claimer of its own.
#[test]
fn preexisting_undriven_submitter_holds_a_later_task_of_another_runtime() {
    let pool = SmartAioPool::builder()
        .max_concurrency(2)
        .auto_shutdown(false)
        .build();
    let b = current_thread();
    let _hb = b.block_on(pool.submit(|| async { 1u32 })).unwrap();
    let c = multi_thread_of(2);
    c.block_on(async {
        let h = pool.submit(|| async { 2u32 }).await.unwrap();
        assert_eq!(
            within("a task from the driven runtime", h).await.unwrap(),
            2
        );
    });
    drop(b);
}

// ----- from the third review (of 96692ce): more paths -------------------------------

/// Rate-limited pool: the undriven b took the window's token (its claimer sits on b) and
/// queued a second job, so the rate timer was armed on b (the held job's runtime). A task
/// from the driven c, awaited by its handle only, waited for that timer until b was
/// dropped (hung 5 s on 96692ce and before it; the third review). The timer now goes to a
/// multi-thread runtime the pool knows when the held job's runtime is current-thread.
#[test]
fn rate_limited_task_of_a_driven_runtime_behind_an_undriven_one() {
    let pool = CommonAioPool::builder()
        .max_concurrency(4)
        .rate_limit(1, Duration::from_millis(50))
        .build();
    let b = current_thread();
    let (_h1, _h2) = b.block_on(async {
        (
            pool.submit(async { 1u32 }).await.unwrap(),
            pool.submit(async { 2u32 }).await.unwrap(),
        )
    });
    let c = multi_thread_of(2);
    c.block_on(async {
        let h = pool.submit(async { 3u32 }).await.unwrap();
        assert_eq!(within("rate-limited task from c", h).await.unwrap(), 3);
    });
    drop(b);
}

/// Control: b (undriven) holds the window's token and one claimer, but queued nothing
/// more, so no timer sits on b: c's two tasks run (hung on 8eca13f, pass on 96692ce).
#[test]
fn rate_limited_two_tasks_of_a_driven_runtime() {
    let pool = CommonAioPool::builder()
        .max_concurrency(4)
        .rate_limit(1, Duration::from_millis(50))
        .build();
    let b = current_thread();
    let _h1 = b.block_on(pool.submit(async { 1u32 })).unwrap();
    let c = multi_thread_of(2);
    c.block_on(async {
        let h = pool.submit(async { 3u32 }).await.unwrap();
        let h2 = pool.submit(async { 4u32 }).await.unwrap();
        assert_eq!(within("task 3 from c", h).await.unwrap(), 3);
        assert_eq!(within("task 4 from c", h2).await.unwrap(), 4);
    });
    drop(b);
}

/// max_concurrency 1: b (undriven) submitted first and holds the reservation; c's task
/// behind it. Then c grows the pool: `set_max_concurrency(2)` from c.
#[test]
fn growing_the_pool_from_a_driven_runtime_runs_its_task() {
    let pool = CommonAioPool::builder().max_concurrency(1).build();
    let b = current_thread();
    let _hb = b.block_on(pool.submit(async { 1u32 })).unwrap();
    let c = multi_thread_of(2);
    c.block_on(async {
        let h = pool.submit(async { 2u32 }).await.unwrap();
        pool.set_max_concurrency(2);
        assert_eq!(within("task from c after a grow", h).await.unwrap(), 2);
    });
    drop(b);
}

/// Two undriven runtimes each with a claimer, then c's tasks (pool of 3).
#[test]
fn two_undriven_submitters_then_driven_tasks() {
    let pool = SmartAioPool::builder()
        .max_concurrency(3)
        .auto_shutdown(false)
        .build();
    let b1 = current_thread();
    let _h1 = b1.block_on(pool.submit(|| async { 1u32 })).unwrap();
    let b2 = current_thread();
    let _h2 = b2.block_on(pool.submit(|| async { 2u32 })).unwrap();
    let c = multi_thread_of(2);
    c.block_on(async {
        let h = pool.submit(|| async { 3u32 }).await.unwrap();
        assert_eq!(within("task from c", h).await.unwrap(), 3);
    });
    drop((b1, b2));
}

/// The idle-slot path of `add_claimer`: c runs a task first (leaving an idle slot on c),
/// then b (undriven) submits, then c submits and awaits its handles (hung on 8eca13f).
#[test]
fn idle_slot_on_driven_runtime_then_undriven_then_driven() {
    let pool = CommonAioPool::builder().max_concurrency(2).build();
    let c = multi_thread_of(2);
    c.block_on(async { pool.submit(async { 0u32 }).await.unwrap().await.unwrap() });
    let b = current_thread();
    let _hb = b.block_on(pool.submit(async { 1u32 })).unwrap();
    c.block_on(async {
        for i in 0..50u32 {
            let h = pool.submit(async move { i }).await.unwrap();
            assert_eq!(within("task from c", h).await.unwrap(), i);
        }
    });
    drop(b);
}
