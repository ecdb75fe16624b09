//! Dropped pools and what they cannot run (findings 286–288 of RELIABILITY.md, from a
//! review of 282–285's fixes): a SmartAioPool built with `auto_shutdown(false)` and
//! `process_wide(false)` is forgotten once its handles are gone and it owes no task that
//! someone may see to its end (`Engine::owes_work`), also when it was dropped while it
//! ran tasks, and when its runtime ended; what it cancels then is reported at the exit,
//! as a CommonAioPool's is. And a pin that the exit's figures leave out only the running
//! task aborted just before the exit (`SlotEntry::aborted`), not the next task its slot
//! took.

// The submits' futures hand back handles.
#![allow(clippy::async_yields_async)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool::{CancelReason, SmartAioPool};
use support::{current_thread, multi_thread_of};

/// A SmartAioPool that neither the exit nor `shutdown_all_smart_aiopools` runs, whose
/// rate window (one start) never reopens.
fn held_back_pool() -> SmartAioPool {
    SmartAioPool::builder()
        .max_concurrency(2)
        .rate_limit(1, Duration::MAX)
        .process_wide(false)
        .auto_shutdown(false)
        .build()
}

/// Finding 286: finding 284's promise (README, "Rate limit"; the pool's "Dropping"): a task a
/// never-ending rate window holds back, in a SmartAioPool with `auto_shutdown(false)`
/// and `process_wide(false)`, is cancelled (`RuntimeShutdown`) "once its last handle is
/// dropped and the tasks it was running have ended", as a CommonAioPool's is. Here the
/// pool is dropped while a task still runs: the watcher `orphaned` leaves behind waits
/// with `Engine::when_done`, i.e. `wait_all`, for every task, the held-back one too,
/// which never starts; so the pool is never forgotten (on a multi-thread runtime it is
/// not even left for a later `build`), and the held-back task's handle never resolves.
#[test]
fn a_task_held_back_for_ever_by_a_smart_pool_dropped_while_a_task_runs_is_cancelled() {
    let _s = support::serial();
    let rt = multi_thread_of(2);
    rt.block_on(async {
        let pool = held_back_pool();
        let gate = support::Gate::default();
        let g = gate.clone();
        let first = pool
            .submit(move || {
                let g = g.clone();
                async move {
                    g.wait().await;
                    1u32
                }
            })
            .await
            .unwrap();
        let second = pool.submit(|| async { 2u32 }).await.unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while pool.stats().running != 1 {
            assert!(std::time::Instant::now() < end, "the first task starts");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The last handle goes while the first task runs: the pool owes it.
        drop(pool);
        gate.open();
        assert_eq!(support::within("the first task", first).await.unwrap(), 1);
        // A later build, which forgets the dropped pools that owe nothing, changes nothing.
        drop(support::smart_local(1));
        let err = tokio::time::timeout(Duration::from_secs(2), second)
            .await
            .expect(
                "the held-back task's handle resolves once its pool's last handle is gone \
                 and the task it was running has ended",
            )
            .unwrap_err();
        assert_eq!(err.cancel_reason(), Some(CancelReason::RuntimeShutdown));
    });
}

/// Finding 287: the same pool, whose runtime ended (the first task's run cut off, its re-run
/// queued for any runtime): `Engine::owes_work`'s branch for a stranded pool keeps the
/// pool for any queued task whose handle is held, also one that the rate window holds
/// back for ever, which the branch for a pool with a live runtime leaves out. So the
/// held handle, awaited on a new runtime (after a `build` that looked at the pool again),
/// waits for ever instead of resolving to `RuntimeShutdown`.
#[test]
fn a_held_back_task_of_a_stranded_dropped_smart_pool_is_cancelled() {
    let _s = support::serial();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let second = support::on_thread_within("a pool on a short-lived runtime", 20, move || {
        let rt = current_thread();
        let second = rt.block_on(async {
            let pool = held_back_pool();
            pool.submit(support::cut_off_once(&r, 1))
                .await
                .unwrap()
                .detach();
            let second = pool.submit(|| async { 2u32 }).await.unwrap();
            support::within("the first run", async {
                while r.load(Ordering::SeqCst) < 1 {
                    tokio::task::yield_now().await;
                }
            })
            .await;
            drop(pool);
            second
        });
        drop(rt);
        second
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Looks at the dropped pools again (their runtime ended since).
    drop(support::smart_local(1));
    let rt = current_thread();
    let err = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(2), second).await })
        .expect("the held-back task of a dropped, stranded pool resolves (it can never start)")
        .unwrap_err();
    assert_eq!(err.cancel_reason(), Some(CancelReason::RuntimeShutdown));
}

// ----- the exit's report of what a dropped pool cancelled -----------------------------------

/// Tasks of the child's scenarios that started.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A task that counts its start in [`STARTED`], then sleeps for an hour.
async fn started_then_asleep() {
    STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

/// Waits (bounded) until `n` tasks have started.
async fn until_started(n: usize) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while STARTED.load(Ordering::SeqCst) < n {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(waited.is_ok(), "only {STARTED:?} of {n} tasks started");
}

/// Plays a scenario in a child process (see `support::run_child`).
#[test]
#[ignore = "run by the exit tests as a child process"]
fn child() {
    let (scenario, _dir) = support::child_scenario();
    let rt = current_thread();
    rt.block_on(async {
        match scenario.as_str() {
            "smart-held-back-dropped" => {
                let pool = SmartAioPool::builder()
                    .name("heldback")
                    .rate_limit(1, Duration::MAX)
                    .process_wide(false)
                    .auto_shutdown(false)
                    .build();
                let first = pool.submit(|| async { 1u32 }).await.unwrap();
                pool.submit(|| async { 2u32 }).await.unwrap().detach();
                assert_eq!(first.await.unwrap(), 1);
                // Forgotten at once (it owes nothing): the held-back task is cancelled.
                drop(pool);
            }
            "common-held-back-dropped" => {
                let pool = nb_aiopool::CommonAioPool::builder()
                    .name("heldback")
                    .rate_limit(1, Duration::MAX)
                    .process_wide(false)
                    .build();
                let first = pool.submit(async { 1u32 }).await.unwrap();
                pool.submit(async { 2u32 }).await.unwrap().detach();
                assert_eq!(first.await.unwrap(), 1);
                drop(pool);
            }
            "slot-reused-after-an-abort-then-exit" => {
                let pool = nb_aiopool::CommonAioPool::builder()
                    .name("reused")
                    .max_concurrency(1)
                    .process_wide(false)
                    .build();
                let first = pool.submit(started_then_asleep()).await.unwrap();
                let _second = pool.submit(started_then_asleep()).await.unwrap();
                until_started(1).await;
                // Aborted while its slot holds it: the slot drops it at its next poll and
                // takes the second task, which still runs at the exit.
                first.abort();
                until_started(2).await;
                std::process::exit(0);
            }
            other => panic!("unknown scenario {other}"),
        }
        tokio::task::yield_now().await;
    });
}

/// Pin: a CommonAioPool dropped with a task that a never-ending rate window held back
/// cancels it, and the exit says so (README, "Rate limit": "the exit report gives them a
/// line of their own"; "nothing is lost silently").
#[test]
fn pin_a_common_pool_dropped_with_a_held_back_task_is_reported_at_exit() {
    let c = support::run_child("common-held-back-dropped", 20);
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert!(
        c.stderr.contains("never started") && c.stderr.contains("heldback"),
        "stderr: {}",
        c.stderr
    );
}

/// Finding 288 (a gap the fix of finding 284 opened in its own docs): the same with a
/// SmartAioPool built with `auto_shutdown(false)` and `process_wide(false)`, which now
/// cancels the held-back task "as a CommonAioPool does" (README, "Rate limit", where the
/// sentence goes on "(the exit report gives them a line of their own)"). Nothing was
/// printed: the engine's drop hook, which reports what a dropped pool lost, was set only
/// for `auto_shutdown` pools without re-runs (`SmartAioPoolBuilder::build`), and the
/// exit's reports covered only `auto_shutdown` SmartAioPools. So tasks the pool cancelled
/// on its own were lost silently; such a pool's drop hook now reports them as a
/// CommonAioPool's does.
#[test]
fn a_smart_pool_dropped_with_a_held_back_task_is_reported_at_exit() {
    let c = support::run_child("smart-held-back-dropped", 20);
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert!(
        c.stderr.contains("never started") && c.stderr.contains("heldback"),
        "the exit says nothing of the task the dropped SmartAioPool cancelled; stderr: {}",
        c.stderr
    );
}

/// Pin (finding 282's flag does not outlive its job): a running task aborted (its slot
/// marked `aborted`), then, at the slot's next poll, dropped, its slot taking the next
/// task, which still runs at `std::process::exit`: the exit counts that task as
/// unfinished (the mark was cleared when the slot took it).
#[test]
fn pin_a_slot_that_took_a_task_after_an_abort_reports_it_at_exit() {
    let c = support::run_child("slot-reused-after-an-abort-then-exit", 20);
    let _ = std::fs::remove_dir_all(&c.dir);
    assert_eq!(c.code, Some(0), "stderr: {}", c.stderr);
    assert!(
        c.stderr.contains("had 1 unfinished task(s)") && c.stderr.contains("reused"),
        "stderr: {}",
        c.stderr
    );
}
