//! Review r24 of ebf9728 (ended jobs' runs and recipe copies kept in `State::graves` and
//! freed later by a submitter, an idle slot, a `wait()` or the engine's drop): findings
//! 136–143 of RELIABILITY.md. Each test failed 3 runs of 3 there and passes since 186c388.
//!
//! Every test here is bounded in time; a test that fails shows a regression of that commit.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_aiopool::CommonAioPool;
use tokio::sync::oneshot;

mod support;
use support::{reach, Counted};

// ----- r24-1: a result's Drop runs inside another caller's submit ---------------------------

thread_local! {
    /// Set while this thread holds the application's lock (below).
    static HOLDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `Drop`s that ran on a thread while it held the application's lock: with a real
/// (non-reentrant) mutex each is a deadlock. Counted instead of blocking, so the test ends.
static UNDER_OWN_LOCK: AtomicUsize = AtomicUsize::new(0);

/// A result whose `Drop` takes an application lock (a connection going back to its pool,
/// a registry entry removed).
struct TakesLock(Arc<Mutex<u64>>);

impl Drop for TakesLock {
    fn drop(&mut self) {
        if HOLDING.with(|h| h.get()) {
            // `self.0.lock()` here would never return.
            UNDER_OWN_LOCK.fetch_add(1, SeqCst);
            return;
        }
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }
}

/// A submitter that holds an application lock around a (synchronous) `try_submit` must not
/// run the `Drop` of other tasks' results there: before ebf9728 they ran on the slot's
/// thread (after the pool's lock), as `abort` still takes care to do for a queued job ("not
/// on the aborting thread, which may hold a lock its `Drop` takes"). Now a `try_submit` from
/// a runtime thread drops a batch of 32 kept results itself, under the caller's lock: with
/// the mutex taken for real, a self-deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_submit_under_an_application_lock_does_not_run_other_results_drop() {
    let app = Arc::new(Mutex::new(0u64));
    let pool = CommonAioPool::new(2, 100_000);
    for i in 0..20_000 {
        let guard = app.lock().unwrap();
        HOLDING.with(|h| h.set(true));
        let out = TakesLock(app.clone());
        let r = pool.try_submit(async move { out });
        HOLDING.with(|h| h.set(false));
        drop(guard);
        // A refused job (and its result-to-be) is dropped after the lock.
        if let Ok(h) = r {
            h.detach();
        }
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), pool.wait()).await;
    assert_eq!(
        UNDER_OWN_LOCK.load(SeqCst),
        0,
        "results' Drop ran inside try_submit, on the submitting thread, while it held the \
         application's lock (each a deadlock with a real mutex)"
    );
}

// ----- r24-2: a concurrent wait returns while another wait drops the results --------------

/// A result whose drop takes a while (a big structure, a connection closed politely).
struct SlowDrop(Arc<AtomicUsize>, Duration);

impl Drop for SlowDrop {
    fn drop(&mut self) {
        std::thread::sleep(self.1);
        self.0.fetch_add(1, SeqCst);
    }
}

/// ebf9728 promises that a `wait()` that returns has dropped the results of the detached
/// tasks it covers, and waits for drops under way elsewhere (`reaping`). But the drops a
/// `wait()` makes itself (`reap_waited`) are not counted in `reaping`: a second wait that
/// runs meanwhile finds nothing kept and nothing "under way" and returns at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_concurrent_waits_both_return_after_the_results_are_dropped() {
    const N: usize = 20;
    let pool = CommonAioPool::new(2, 10_000);
    let drops = Arc::new(AtomicUsize::new(0));
    let (open, gate) = tokio::sync::watch::channel(false);
    for _ in 0..N {
        let out = SlowDrop(drops.clone(), Duration::from_millis(50));
        let mut gate = gate.clone();
        pool.submit(async move {
            let _ = gate.wait_for(|o| *o).await;
            out
        })
        .await
        .unwrap()
        .detach();
    }
    // Both waits cover exactly the N tasks.
    let wait_a = pool.wait();
    let wait_b = pool.wait();
    // Filler queued behind them keeps both slots busy (they never find nothing to run
    // and never go to sleep) until after the N tasks have ended.
    for _ in 0..150 {
        pool.submit(async { tokio::time::sleep(Duration::from_millis(10)).await })
            .await
            .unwrap()
            .detach();
    }
    // Each wait on a thread of its own (as two tasks on two workers would be).
    let on_thread = |wait: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
                     drops: Arc<AtomicUsize>| {
        let (tx, rx) = oneshot::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(wait);
            let _ = tx.send(drops.load(SeqCst));
        });
        rx
    };
    let a = on_thread(Box::pin(wait_a), drops.clone());
    let b = on_thread(Box::pin(wait_b), drops.clone());
    tokio::time::sleep(Duration::from_millis(20)).await;
    open.send(true).unwrap();
    let a = tokio::time::timeout(Duration::from_secs(20), a)
        .await
        .expect("wait A hung")
        .unwrap();
    let b = tokio::time::timeout(Duration::from_secs(20), b)
        .await
        .expect("wait B hung")
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(20), pool.wait()).await;
    assert_eq!(
        (a, b),
        (N, N),
        "results dropped when each wait returned (of {N}): a wait returned while the \
         other was still dropping the results it covers"
    );
}

// ----- r24-3: a steady stream of new jobs keeps a wait() waiting --------------------------

/// `wait()` is documented: "The jobs waited for are fixed when `wait()` is *called*, so a
/// steady stream of new jobs cannot keep it waiting forever." Since ebf9728 a wait whose
/// jobs have all ended still waits until no batch of kept results is being dropped
/// anywhere (`reaping == 0`), and drops the results kept meanwhile itself: results of jobs
/// submitted *after* it. With two async producers whose detached results take 1 ms to
/// drop, batches overlap and the counter is almost never 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_steady_stream_of_new_jobs_does_not_keep_a_wait_waiting() {
    let pool = CommonAioPool::new(4, 256);
    // The wait covers this one job only.
    let (release, gate) = oneshot::channel::<()>();
    let first = pool
        .submit(async move {
            let _ = gate.await;
        })
        .await
        .unwrap();
    let wait = pool.wait();
    let stop = Arc::new(AtomicBool::new(false));
    let drops = Arc::new(AtomicUsize::new(0));
    let mut producers = Vec::new();
    for _ in 0..2 {
        let pool = pool.clone();
        let stop = stop.clone();
        let drops = drops.clone();
        producers.push(tokio::spawn(async move {
            while !stop.load(SeqCst) {
                let out = SlowDrop(drops.clone(), Duration::from_millis(1));
                match pool.submit(async move { out }).await {
                    Ok(h) => h.detach(),
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.send(()).unwrap();
    let began = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(5), first).await;
    let ended = began.elapsed();
    let waited = tokio::time::timeout(Duration::from_secs(5), wait).await;
    let took = began.elapsed();
    stop.store(true, SeqCst);
    for p in producers {
        let _ = tokio::time::timeout(Duration::from_secs(20), p).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), pool.wait()).await;
    assert!(first.is_ok(), "the job waited for did not end");
    assert!(
        waited.is_ok() && took < ended + Duration::from_secs(1),
        "the one job the wait() covers ended after {ended:?}; the wait returned after \
         {took:?} (gave up after 5 s: {}) while new jobs kept coming",
        waited.is_err()
    );
}

// ----- r24-4: a closed pool keeps detached results until its last job ends ----------------

/// A detached task's result holds a semaphore permit (a pooled connection, a rate token).
/// Another task of the pool waits for that permit. A pool that is shutting down (closed:
/// `shutdown()`, or its last handle dropped) lets its slots exit instead of going to sleep,
/// and a slot drops the kept results only if nothing else runs: the permit stays in the
/// grave for as long as the other task runs, and that task waits for the permit. Before
/// ebf9728 the result was dropped when its task ended, and the shutdown completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_when_a_task_waits_for_what_a_detached_result_holds() {
    use tokio::sync::Semaphore;
    let pool = CommonAioPool::new(2, 10);
    let sem = Arc::new(Semaphore::new(1));
    let permit = sem.clone().acquire_owned().await.unwrap();
    let (go, gate) = oneshot::channel::<()>();
    // Its result (the permit) is not wanted: detached.
    pool.submit(async move {
        let _ = gate.await;
        permit
    })
    .await
    .unwrap()
    .detach();
    let sem2 = sem.clone();
    let waiter = pool
        .submit(async move {
            let _p = sem2.acquire().await.unwrap();
        })
        .await
        .unwrap();
    let p2 = pool.clone();
    let shutdown = tokio::spawn(async move { p2.shutdown().await });
    while !pool.is_closed() {
        tokio::task::yield_now().await;
    }
    go.send(()).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), waiter).await;
    let done = tokio::time::timeout(Duration::from_secs(5), shutdown).await;
    assert!(
        res.is_ok() && done.is_ok(),
        "the detached task's result (a permit) was not dropped: the task waiting for it \
         {} and the shutdown {}",
        if res.is_ok() {
            "finished"
        } else {
            "hung (5 s)"
        },
        if done.is_ok() {
            "completed"
        } else {
            "hung (5 s)"
        },
    );
}

/// The same without a semaphore: dropping the last handle closes the pool; a detached
/// result is then kept until the pool's long job ends (here: not within 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pool_drops_a_detached_result_when_its_task_ends() {
    let pool = CommonAioPool::new(2, 10);
    let drops = Arc::new(AtomicUsize::new(0));
    let (release, long_gate) = oneshot::channel::<()>();
    let long = pool
        .submit(async move {
            let _ = long_gate.await;
        })
        .await
        .unwrap();
    let (go, gate) = oneshot::channel::<()>();
    let out = Counted(drops.clone());
    let ended = Arc::new(AtomicUsize::new(0));
    let ended2 = ended.clone();
    pool.submit(async move {
        let _ = gate.await;
        ended2.store(1, SeqCst);
        out
    })
    .await
    .unwrap()
    .detach();
    // The last handle: intake closes, the jobs carry on.
    drop(pool);
    go.send(()).unwrap();
    assert_eq!(reach(&ended, 1, Duration::from_secs(5)).await, 1);
    let dropped = reach(&drops, 1, Duration::from_secs(2)).await;
    release.send(()).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), long).await;
    assert_eq!(
        dropped, 1,
        "a detached result of a closed pool was still kept 2 s after its task ended \
         (while another task of the pool ran)"
    );
}

// ----- r24-5: a pool whose slots stay busy keeps detached results indefinitely ------------

/// Every slot goes on with another (long) job right after the short one: no slot finds
/// nothing to run, none goes to sleep, nobody submits or waits. The short task's detached
/// result stays kept for as long as the long jobs run (before ebf9728: dropped when the
/// task ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_result_is_dropped_while_every_slot_stays_busy() {
    let pool = CommonAioPool::new(2, 10);
    let drops = Arc::new(AtomicUsize::new(0));
    let (release, long_gate) = tokio::sync::watch::channel(false);
    let mut g1 = long_gate.clone();
    let a = pool
        .submit(async move {
            let _ = g1.wait_for(|o| *o).await;
        })
        .await
        .unwrap();
    let (go, gate) = oneshot::channel::<()>();
    let out = Counted(drops.clone());
    pool.submit(async move {
        let _ = gate.await;
        out
    })
    .await
    .unwrap()
    .detach();
    // Queued: the short task's slot takes it when the short task ends.
    let mut g2 = long_gate.clone();
    let c = pool
        .submit(async move {
            let _ = g2.wait_for(|o| *o).await;
        })
        .await
        .unwrap();
    go.send(()).unwrap();
    let dropped = reach(&drops, 1, Duration::from_secs(2)).await;
    let completed = pool.stats().completed;
    release.send(true).unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), a).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
    assert_eq!(completed, 1, "the short task ended");
    assert_eq!(
        dropped, 1,
        "a detached result was still kept 2 s after its task ended (every slot busy with \
         a long job, no submit, no wait)"
    );
}

// ----- r24-6: after its runtime ends, a pool keeps results, then drops them off-runtime --

/// A result that records whether it was dropped inside a runtime.
struct WhereDropped(Arc<AtomicUsize>, Arc<AtomicUsize>);

impl Drop for WhereDropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
        if tokio::runtime::Handle::try_current().is_err() {
            self.1.fetch_add(1, SeqCst);
        }
    }
}

/// A pool outliving a runtime (documented: a pool may live in a `static` and serve several
/// runtimes). A detached task ended on that runtime while its slots were busy; the runtime
/// shuts down. Its result is not dropped with the runtime; it stays kept for as long as the
/// pool lives, and is finally dropped by the pool's drop, on whatever thread drops the last
/// handle, outside any runtime (a `Drop` that spawns its cleanup loses it).
#[test]
fn a_result_ended_before_its_runtime_shut_down_is_dropped_in_that_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let off_runtime = Arc::new(AtomicUsize::new(0));
    let pool = rt.block_on(async { CommonAioPool::new(2, 10) });
    rt.block_on(async {
        pool.submit(std::future::pending::<()>())
            .await
            .unwrap()
            .detach();
        let out = WhereDropped(drops.clone(), off_runtime.clone());
        pool.submit(async move {
            tokio::task::yield_now().await;
            out
        })
        .await
        .unwrap()
        .detach();
        // Taken by the short task's slot when it ends: both slots stay busy.
        pool.submit(std::future::pending::<()>())
            .await
            .unwrap()
            .detach();
        let end = Instant::now() + Duration::from_secs(5);
        while pool.stats().completed < 1 && Instant::now() < end {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.stats().completed, 1);
    });
    drop(rt);
    let after_runtime = drops.load(SeqCst);
    // The pool lives on a while (a static pool would live for ever).
    std::thread::sleep(Duration::from_millis(200));
    let later = drops.load(SeqCst);
    drop(pool);
    assert_eq!(
        (after_runtime, later, off_runtime.load(SeqCst)),
        (1, 1, 0),
        "(dropped after the runtime ended, 200 ms later, of them outside any runtime): \
         the result of a task that ended on the runtime was kept past its end and dropped \
         by the pool's drop, outside a runtime"
    );
}

// ----- r24-7: memory: ended results kept, up to 256, whatever the pool's size -----------

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// A large result (1 MiB), counted while it lives.
struct Big(#[allow(dead_code)] Vec<u8>);

impl Big {
    fn new() -> Self {
        let n = LIVE.fetch_add(1, SeqCst) + 1;
        PEAK.fetch_max(n, SeqCst);
        Big(vec![1u8; 1 << 20])
    }
}

impl Drop for Big {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, SeqCst);
    }
}

/// The crate's memory promise: a queued or running job costs its future and its result
/// slot; memory depends on the pool's size, never on the number of jobs. A pool of 2 slots
/// and a queue of 2 held at most a handful of results before ebf9728. Now up to 256 ended
/// results (here 1 MiB each: 256 MiB) stay kept while the pool is busy and the producer
/// submits from a plain thread (`blocking_submit` never frees them).
#[test]
fn ended_results_held_by_a_small_pool_stay_within_its_size() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(async { CommonAioPool::new(2, 2) });
    let end = Instant::now() + Duration::from_secs(20);
    for _ in 0..3000 {
        if Instant::now() > end {
            break;
        }
        pool.blocking_submit(async {
            tokio::task::yield_now().await;
            Big::new()
        })
        .unwrap()
        .detach();
    }
    let waiter = pool.clone();
    let _ =
        rt.block_on(
            async move { tokio::time::timeout(Duration::from_secs(20), waiter.wait()).await },
        );
    let peak = PEAK.load(SeqCst);
    rt.shutdown_background();
    assert!(
        peak <= 16,
        "{peak} detached 1 MiB results were alive at once in a pool of 2 slots and a \
         queue of 2"
    );
}
