//! Regression tests for bugs the reliability work (issue 6) found in `src/`, each with the
//! scenario that showed it. They must pass on a fixed tree and fail (or hang, caught by a
//! timeout) on the tree that had the bug.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{SmartAioPool, TaskHandle};
use tokio::sync::Notify;

/// Found against 50cc80d: an elastic SmartAioPool with `min_workers(0)` stranded a task
/// forever. A submit saw one idle worker, so it added none and woke a driver; the janitor,
/// whose timer fired at the same instant, then retired that idle worker before the driver
/// ran, leaving `limit == 0` with a task queued and nothing to raise the limit until the
/// next submit. (Fixed in 228e6de: a submit reserves a slot for the task under the lock.)
#[tokio::test(start_paused = true)]
async fn smart_janitor_does_not_retire_the_worker_a_queued_task_needs() {
    let idle = Duration::from_millis(10);
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(10)
        .min_workers(0)
        .idle_timeout(idle)
        .auto_shutdown(false)
        .build();
    pool.run(|| async {}).await.unwrap();
    assert_eq!(pool.worker_count(), 1);
    // Wakes at the very instant the janitor's timer fires, and runs first.
    tokio::time::sleep(idle).await;
    let handle = pool.try_submit(|| async { 5 }).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(3600), handle).await;
    let stats = pool.stats();
    pool.cancel_all().await;
    assert_eq!(
        result
            .expect("hang: the task was queued with no worker left to run it")
            .unwrap(),
        5,
        "{stats:?}"
    );
}

/// What the checker thread saw while `cancel_all` was part-way through its queue.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// `wait_for_all` returned and the handle of a task submitted before was finished.
    ReturnedFinished,
    /// `wait_for_all` returned although that task's handle was not resolved yet: the bug.
    ReturnedUnfinished,
    /// `wait_for_all` kept waiting while the cancellation was under way (correct).
    KeptWaiting,
}

/// Runs the checker when dropped: the user code that `cancel_all` runs (dropping a queued
/// task's recipe) while it is part-way through the queue.
struct CheckOnDrop {
    pool: SmartAioPool,
    later: Arc<Mutex<Option<TaskHandle<()>>>>,
    go: Arc<Notify>,
    seen: Arc<Mutex<Option<Seen>>>,
}

impl Drop for CheckOnDrop {
    fn drop(&mut self) {
        let pool = self.pool.clone();
        let later = self
            .later
            .lock()
            .unwrap()
            .take()
            .expect("handle of the later task");
        let go = self.go.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        // A plain thread with its own runtime: its wake-ups reach the pool's runtime
        // through the injection queue, whatever this (blocked) thread is.
        std::thread::spawn(move || {
            go.notify_one(); // lets the running task finish
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let seen = rt.block_on(async {
                match tokio::time::timeout(Duration::from_secs(1), pool.wait_for_all()).await {
                    Ok(()) if later.is_finished() => Seen::ReturnedFinished,
                    Ok(()) => Seen::ReturnedUnfinished,
                    Err(_) => Seen::KeptWaiting,
                }
            });
            let _ = tx.send(seen);
        });
        let seen = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the checker thread answers");
        *self.seen.lock().unwrap() = Some(seen);
    }
}

/// Found against 50cc80d (still present in 228e6de; fixed in 0afda9f):
/// `Engine::cancel_all` (SmartAioPool::cancel_all, and the abandon step of
/// `shutdown_timeout`) marks the drained queue's epochs finished under the lock, then
/// tells the handles and drops the jobs *after* releasing it. A concurrent `wait_for_all`
/// (or `wait`, `shutdown`) can return in between, while a task submitted before it still
/// has an unresolved handle: the documented "`wait_for_all().await; assert!(h.is_finished())`"
/// does not hold. The fix: count the jobs cancelled under the first lock, tell and drop
/// them outside it, and only then take the lock again to `finish_epoch` them and notify
/// `changed` (also for `Driver::drop`'s cancelled queue).
///
/// Sequence: task R runs (one slot); A and B are queued; A's handle is dropped so that
/// `cancel_all` dropping A runs A's recipe's drop code, which (from a plain thread) lets R
/// finish and calls `wait_for_all` while B's handle is still untold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_all_does_not_return_before_cancelled_handles_are_told() {
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(2)
        .min_workers(1)
        .auto_shutdown(false)
        .build();
    let go = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let (go2, started2) = (go.clone(), started.clone());
    let running = pool
        .submit(move || {
            let (go, started) = (go2.clone(), started2.clone());
            async move {
                started.notify_one();
                go.notified().await;
            }
        })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("R starts");

    let later_slot = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(None));
    let guard = Arc::new(Mutex::new(Some(CheckOnDrop {
        pool: pool.clone(),
        later: later_slot.clone(),
        go: go.clone(),
        seen: seen.clone(),
    })));
    let a = pool
        .submit(move || {
            let _keep = guard.clone();
            async {}
        })
        .await
        .unwrap();
    drop(a); // the queue now holds A's recipe (and its CheckOnDrop) alone
    let b = pool.submit(|| async {}).await.unwrap();
    *later_slot.lock().unwrap() = Some(b);

    tokio::time::timeout(Duration::from_secs(20), pool.cancel_all())
        .await
        .expect("cancel_all returns");
    let _ = running.await;
    let seen = seen
        .lock()
        .unwrap()
        .take()
        .expect("A's recipe was dropped by cancel_all");
    pool.shutdown().await;
    assert_ne!(
        seen,
        Seen::ReturnedUnfinished,
        "wait_for_all returned while a task submitted before it had an unresolved handle"
    );
}
