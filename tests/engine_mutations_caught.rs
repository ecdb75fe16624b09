//! Tests written by a hand-made mutation review of the engine (`src/engine/`): each pins a
//! behaviour that a plausible one-token change to the engine altered while the rest of
//! the suite still passed (see the doc comment of each test for the mutation it catches;
//! RELIABILITY.md, "Re-run on this session's head", 2026-12-07: 28 mutations, 22 caught
//! by the suite before, these six written for the rest).

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nb_aiopool::SmartAioPool;
use support::Gate;

/// Four tasks submitted to `pool`, each held until the gate opens.
async fn four_held(pool: &SmartAioPool) -> (Gate, Vec<nb_aiopool::TaskHandle<()>>) {
    let gate = Gate::new();
    let mut handles = Vec::new();
    for _ in 0..4 {
        let gate = gate.clone();
        handles.push(pool.submit(move || gate.wait()).await.unwrap());
    }
    (gate, handles)
}

/// An elastic worker that ends a task stays live (idle) for `idle_timeout`, even when the
/// pool had been shrunk under running tasks and idle workers had retired meanwhile: after
/// a shrink from 4 busy workers to 2, and a retirement that leaves one worker busy, that
/// worker is still counted once its task ends, and retires only after `idle_timeout`.
///
/// Catches `Engine::vacate` (src/engine/start.rs) treating a slot freed when the running
/// count falls to the (lowered) limit as an idle worker (`st.running >= limit` weakened
/// to `>`): the elastic bookkeeping then counts one idle worker too many, the next
/// retirement takes the pool's limit below its busy worker, and that worker vanishes
/// (`worker_count() == 0`) the moment its task ends.
#[tokio::test(start_paused = true)]
async fn a_worker_freed_after_a_shrink_under_load_stays_idle_for_its_timeout() {
    let pool = SmartAioPool::builder()
        .max_concurrency(4)
        .min_workers(0)
        .idle_timeout(Duration::from_secs(1))
        .auto_shutdown(false)
        .process_wide(false)
        .build();
    let (gate, handles) = four_held(&pool).await;
    tokio::task::yield_now().await;
    assert_eq!(pool.busy_worker_count(), 4);
    // Shrunk under its 4 running tasks: they finish on their workers.
    pool.set_max_concurrency(2);
    gate.open();
    for h in handles {
        support::within("a task", h).await.unwrap();
    }
    assert_eq!(
        pool.worker_count(),
        2,
        "two idle workers left after the shrink"
    );
    assert_eq!(pool.idle_worker_count(), 2);

    // One more task, running past the idle timeout: the other worker retires.
    let gate = Gate::new();
    let h = pool
        .submit({
            let gate = gate.clone();
            move || gate.wait()
        })
        .await
        .unwrap();
    tokio::task::yield_now().await;
    assert_eq!(pool.busy_worker_count(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        pool.worker_count(),
        1,
        "the idle worker retired, the busy one stays"
    );

    gate.open();
    support::within("the last task", h).await.unwrap();
    assert_eq!(
        (pool.worker_count(), pool.idle_worker_count()),
        (1, 1),
        "the worker that just ended its task is idle, not gone"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(pool.worker_count(), 0, "it retires after idle_timeout");
    pool.shutdown().await;
}

/// `wait()` waits for the jobs submitted before it was called, and for those only: the end
/// of a job submitted after the call does not stand in for one of them. With a job `A`
/// running, `wait()` called, then job `B` submitted and finished, the wait is still
/// pending until `A` ends.
///
/// Catches `Engine::wait_end` (src/engine/ending.rs) counting the end of the first job
/// submitted after the call (`id < w.target` weakened to `id <= w.target`): `B`'s end then
/// took `A`'s place, and `wait()` returned while `A` still ran.
#[tokio::test(start_paused = true)]
async fn a_job_submitted_after_wait_was_called_does_not_end_the_wait() {
    let pool = nb_aiopool::CommonAioPool::builder()
        .max_concurrency(2)
        .max_queue_size(4)
        .process_wide(false)
        .build();
    let gate = Gate::new();
    let a = pool
        .submit({
            let gate = gate.clone();
            async move { gate.wait().await }
        })
        .await
        .unwrap();
    let mut wait = std::pin::pin!(pool.wait());
    let b = pool.submit(async { 2 }).await.unwrap();
    assert_eq!(support::within("job B", b).await.unwrap(), 2);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), wait.as_mut())
            .await
            .is_err(),
        "wait() returned while job A, submitted before it, still ran"
    );
    assert!(!a.is_finished());
    gate.open();
    support::within("wait()", wait).await;
    assert!(a.is_finished());
    pool.shutdown().await;
}

/// A rate-limited pool on a paused clock (tokio's `start_paused`, as tests run it) starts
/// its held-back jobs when the window reopens: the start that made the window full leaves
/// it at exactly `per` after it, the instant its timer fires. Run on a thread of its own
/// with a bound on the wall clock, so that a pool that spins instead of moving on fails
/// here rather than hanging the test (a spinning runtime never idles, so its paused clock
/// never advances and no timeout inside it ever fires).
///
/// Catches `RateWindow::expire` (src/engine/limits.rs) keeping a start whose window ends
/// exactly now (`end <= now` narrowed to `end < now`): the rate timer then fires at the
/// window's end, finds the start still in it, re-arms itself for that same instant, and the
/// runtime spins there for ever (the rest of the suite's tests that meet it hang rather
/// than fail).
#[test]
fn a_rate_window_on_a_paused_clock_reopens_at_exactly_its_end() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        support::paused_runtime().block_on(async {
            let pool = nb_aiopool::CommonAioPool::builder()
                .max_concurrency(4)
                .max_queue_size(8)
                .rate_limit(1, Duration::from_millis(100))
                .process_wide(false)
                .build();
            let t0 = tokio::time::Instant::now();
            let mut handles = Vec::new();
            for _ in 0..3 {
                handles.push(pool.submit(async move { t0.elapsed() }).await.unwrap());
            }
            let mut starts = Vec::new();
            for h in handles {
                starts.push(h.await.unwrap());
            }
            pool.shutdown().await;
            let _ = done.send(starts);
        });
    });
    let starts = finished
        .recv_timeout(Duration::from_secs(20))
        .expect("the rate-limited pool did not finish 3 jobs in 20 s of wall clock (it spins)");
    let ms: Vec<u128> = starts.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [0, 100, 200], "one start per 100 ms window, at its end");
}

/// An elastic pool keeps no more parked slot tasks (tokio tasks) than it has idle
/// workers: shrunk from 4 busy workers to 2, once the 4 tasks end it has 2 idle workers
/// and exactly 2 slot tasks left on the runtime (the others exit), before anything (such
/// as `worker_count()`) trims them.
///
/// Catches `Engine::keep_idle` (src/engine/idle.rs) keeping a slot task idle when the idle
/// slot tasks already match the idle workers (`idle.len() >= limit - running` weakened to
/// `>`): one slot task too many stayed parked on the runtime.
#[test]
fn a_shrunk_elastic_pool_keeps_one_parked_slot_task_per_idle_worker() {
    fn alive_tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }
    support::paused_runtime().block_on(async {
        let pool = SmartAioPool::builder()
            .max_concurrency(4)
            .min_workers(0)
            .idle_timeout(Duration::from_secs(3600))
            .auto_shutdown(false)
            .process_wide(false)
            .build();
        let base = alive_tasks();
        let (gate, handles) = four_held(&pool).await;
        tokio::task::yield_now().await;
        pool.set_max_concurrency(2);
        gate.open();
        for h in handles {
            support::within("a task", h).await.unwrap();
        }
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            alive_tasks() - base,
            2,
            "parked slot tasks for the 2 idle workers"
        );
        assert_eq!(pool.idle_worker_count(), 2);
        pool.shutdown().await;
    });
}

/// `stats()` tells running and queued jobs apart as a job starts: a job `A` that submits
/// `B` and `C` (one key, `max_per_key(1)`) and ends, in a pool of 2 slots, leaves `B`
/// running on its slot at once and `C` queued behind `B`'s key; `B`, at its first poll,
/// sees 1 running and 1 queued. (A current-thread runtime: `B` starts in the same poll of
/// the slot task that ran `A`, before the slot task scheduled for `B`'s reservation runs.)
///
/// Catches `Slot::finish` (src/engine/slot.rs) not taking the reservation its next job
/// used (`Engine::take_reservation` dropped): the slot then ran `B` while the reservation
/// made for it stayed, counted as a running job, and `stats()` said 2 running, 0 queued
/// until another slot task came to claim it.
#[tokio::test]
async fn a_reserved_job_run_by_the_slot_that_ended_the_last_one_is_counted_once() {
    let pool = nb_aiopool::CommonAioPool::builder()
        .max_concurrency(2)
        .max_queue_size(8)
        .max_per_key(1)
        .process_wide(false)
        .build();
    let inner = pool.clone();
    let a = pool
        .submit(async move {
            let seen = inner.clone();
            let Ok(b) = inner.try_submit_with(
                async move {
                    let s = seen.stats();
                    (s.running, s.queued)
                },
                nb_aiopool::SubmitOptions::new().key("k"),
            ) else {
                panic!("no room for B");
            };
            let Ok(c) = inner.try_submit_with(async {}, nb_aiopool::SubmitOptions::new().key("k"))
            else {
                panic!("no room for C");
            };
            (b, c)
        })
        .await
        .unwrap();
    let (b, c) = support::within("job A", a).await.unwrap();
    assert_eq!(
        support::within("job B", b).await.unwrap(),
        (1, 1),
        "B sees itself running and C queued"
    );
    support::within("job C", c).await.unwrap();
    pool.shutdown().await;
}

/// A task that a `shutdown_timeout` deadline covered while it was inside a poll, and whose
/// handle is aborted before its slot gets back to it, ends `Abandoned` both for its handle
/// and for the pool: the report of that shutdown counts it as abandoned.
///
/// Catches `Shared::decide` (src/task/shared.rs) marking an abort for `Abandoned` without
/// its reason bit (`BY_DEADLINE` dropped): the handle still said `Abandoned`, but the slot
/// read the reason back as `Aborted` and the report said `0 abandoned`.
#[test]
fn an_abort_of_a_task_the_deadline_covered_mid_poll_counts_it_abandoned() {
    let rt = support::multi_thread_of(2);
    rt.block_on(async {
        let pool = nb_aiopool::CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(1)
            .process_wide(false)
            .build();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let h = pool
            .submit(async move {
                let _ = started_tx.send(());
                // Inside its poll (its thread blocked) when the deadline passes, until the
                // test has aborted it (30 s at most).
                let _ = released.recv_timeout(Duration::from_secs(30));
                std::future::pending::<()>().await;
            })
            .await
            .unwrap();
        support::within("the start", started).await.unwrap();
        // The shutdown's future polled once more after its deadline (its timer's wake;
        // nothing else wakes it then): the deadline has covered the task.
        // Waited for, not a fixed 250 ms: the free worker that fires the timer may not run
        // for that long on a loaded machine (RELIABILITY.md, 417).
        let deadline = Duration::from_millis(50);
        let covered = Arc::new(AtomicBool::new(false));
        let report = {
            let mut shutdown = Box::pin(pool.shutdown_timeout(deadline));
            let covered = covered.clone();
            let mut first = None;
            tokio::spawn(std::future::poll_fn(move |cx| {
                let now = std::time::Instant::now();
                let t0 = *first.get_or_insert(now);
                let out = shutdown.as_mut().poll(cx);
                if now >= t0 + deadline {
                    covered.store(true, Ordering::SeqCst);
                }
                out
            }))
        };
        support::within("the deadline's poll", async {
            while !covered.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        assert!(!h.is_finished(), "still inside its poll");
        h.abort();
        release.send(()).unwrap();
        let err = support::within("the handle", h).await.unwrap_err();
        assert_eq!(
            err.cancel_reason(),
            Some(nb_aiopool::CancelReason::Abandoned)
        );
        let report = support::within("the report", report).await.unwrap();
        assert_eq!(report.abandoned(), 1, "{report}");
    });
}
