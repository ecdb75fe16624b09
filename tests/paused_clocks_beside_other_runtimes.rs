//! A read-only review of b5a37a3 and 89569a0 (RELIABILITY.md, 363–367, 370–371): a pool shared by runtimes
//! with different clocks (elastic idle stamps clamped, rate timers of current-thread
//! runtimes, rate timers re-reading their deadline), and `batch_submit`/`batch_run`.
//!
//! Every wait is bounded (`on_thread_within`, `recv_timeout`, `timeout`).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nb_aiopool::{CommonAioPool, SmartAioPool};
use support::{came_by, in_time, paused_runtime, Gate};
use tokio::time::Instant;

const SECS10: Duration = Duration::from_secs(10);

/// What the user does: a rate-limited pool (1 slot, 1 start per second) is shared by a
/// multi-thread runtime and a paused test (`start_paused`, current-thread). The
/// multi-thread runtime's job holds the slot; the paused test submits a job (queued: no
/// slot free), and the multi-thread runtime's job ends within the window, so the paused
/// test's job is now held back by the rate window alone. The test awaits its handle
/// under `tokio::time::timeout(5 s, ..)`.
///
/// What they expect: README ("How jobs run", as 364 left it): "a current-thread runtime
/// whose jobs a rate window holds back gets a timer of its own (a paused one
/// auto-advances to it), also when another waits on a multi-thread runtime" (since 371 it
/// says: "when its code finds the window full or when its job is the next the window
/// holds back"): the paused runtime's clock advances to the window's reopening (1 s) and
/// the job runs then, well within the 5 s timeout.
///
/// What happened: "the paused test's job, held back by the rate window after the
/// multi-thread runtime's job ended, was not done when its 5 s timeout fired (at 5000 ms
/// of its clock): no rate timer of its own". The window filled for the queued job in
/// `pop_startable` (the multi-thread job's end; src/engine/start.rs:332-336 at 89569a0),
/// which arms one timer, on the held job's runtime or, as that is a current-thread
/// runtime, on the multi-thread one (`driven_handle`); `fill`'s extra timer
/// (`only_on_others_of`, start.rs:201) goes only to the runtime calling it (the
/// multi-thread one here). The paused runtime had no timer, was idle, and auto-advanced
/// to the test's timeout.
///
/// The scenario plays against the window (1 s of real time, filled by the multi-thread
/// runtime's job's start): its job must end, and the paused test's job be seen held
/// back, before the window reopens, and the paused test must be done before a timer
/// could have fired at the reopening on the multi-thread runtime (which would hand the
/// job over to the paused runtime, no timer of its own needed). A run whose steps came
/// later (its threads held up by a loaded machine) is played again, not judged
/// (`in_time`).
#[test]
fn a_paused_tests_job_held_back_after_another_runtimes_job_ends_gets_a_timer_of_its_own() {
    in_time("the paused test's held-back job", || {
        let m = support::multi_thread_of(2);
        let window = Duration::from_secs(1);
        let pool = CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(10)
            .rate_limit(1, window)
            .process_wide(false)
            .build();
        let gate = Gate::default();
        let started = Arc::new(AtomicBool::new(false));
        // The multi-thread job's start, which fills the window, comes after this: until
        // `start + window` the window holds the paused test's job back.
        let start = std::time::Instant::now();
        // The multi-thread runtime's job: holds the one slot; its start fills the window.
        let held = {
            let gate = gate.clone();
            let started = started.clone();
            m.block_on(pool.submit(async move {
                started.store(true, Ordering::SeqCst);
                gate.wait().await
            }))
            .unwrap()
        };
        // Its body ran, not only its slot reserved (`running` counts a reservation a
        // moment before `m`'s claimer takes the job): the paused test's job is submitted
        // beside a job running, as the scenario says.
        support::until("the multi-thread job's start", || {
            started.load(Ordering::SeqCst)
        });
        let (queued_tx, queued_rx) = mpsc::channel::<()>();
        let (ended_tx, ended_rx) = mpsc::channel::<()>();
        let p = pool.clone();
        let paused = std::thread::spawn(move || {
            paused_runtime().block_on(async move {
                let t0 = Instant::now();
                let h = p.submit(async { Instant::now() }).await.unwrap();
                queued_tx.send(()).unwrap();
                // Not idle (a blocking task holds the clock) until the other job has ended.
                tokio::task::spawn_blocking(move || ended_rx.recv_timeout(SECS10))
                    .await
                    .unwrap()
                    .unwrap();
                let r = tokio::time::timeout(Duration::from_secs(5), h).await;
                (
                    r.ok().map(|r| r.unwrap().duration_since(t0).as_millis()),
                    t0.elapsed().as_millis(),
                )
            })
        });
        queued_rx.recv_timeout(SECS10).unwrap();
        gate.open();
        m.block_on(async { support::within("the multi-thread job", held).await.unwrap() });
        // Its slot has looked at the queue (the window holds the paused test's job back);
        // and a short grace for the negative check (not started early).
        std::thread::sleep(Duration::from_millis(100));
        let running = pool.stats().running;
        // Read while the window was still full? The paused test is let go and joined
        // first either way (a run played again leaves no thread waiting).
        let read_in_time = came_by(start + window);
        ended_tx.send(()).unwrap();
        let (done_at, waited) = paused.join().unwrap();
        drop(m);
        read_in_time?;
        assert_eq!(running, 0, "the held-back job started early");
        // Done before any timer at the reopening could fire, on either runtime's clock:
        // only a timer of the paused runtime's own (auto-advanced to the reopening) ran it.
        came_by(start + window)?;
        assert!(
            done_at.is_some(),
            "the paused test's job, held back by the rate window after the multi-thread \
             runtime's job ended, was not done when its 5 s timeout fired (at {waited} ms of its \
             clock): no rate timer of its own"
        );
        Ok(())
    });
}

/// What the user does: a `static`-like SmartAioPool (elastic, `min_workers(1)`, 4 slots,
/// `idle_timeout(60 s)`) is used by a paused test whose clock ran an hour ahead (it slept
/// an hour): four jobs grow it to four workers, which then go idle. Meanwhile another
/// thread (a plain thread here; a multi-thread test or a metrics scraper alike) reads
/// `worker_count()`. The paused test, with no time passed on its clock, reads
/// `worker_count()` too.
///
/// What they expect: `SmartAioPoolBuilder::idle_timeout`: "How long a worker beyond
/// `min_workers` may stay idle before it retires": workers idle for 0 s of the test's
/// clock, with a 60 s timeout, are all still there: 4. (Before b5a37a3 the other
/// thread's look moved nothing and the test saw 4.)
///
/// What happened: "the paused test's workers, idle 0 s of its clock (idle timeout 60 s),
/// were retired once another thread had looked at the worker count" (`left: (1, 0ns)`,
/// `right: (4, 0ns)`). The other thread's look (`retire` at the real clock) clamps the
/// idle stamps from the clock ahead to the real clock (`Elastic::clamp`,
/// src/engine/elastic.rs:138-160 at 89569a0); read on the paused clock an hour ahead
/// (`retire`, elastic.rs:171), they are then an hour old, and all but `min_workers`
/// retire at once. README ("How jobs run") says as much for the rate window ("the clock
/// ahead may then start up to `count` more"), not for idle workers.
#[test]
fn a_paused_tests_idle_workers_do_not_retire_early_when_another_thread_looks() {
    let pool = SmartAioPool::builder()
        .max_concurrency(4)
        .min_workers(1)
        .idle_timeout(Duration::from_secs(60))
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let (idle_tx, idle_rx) = mpsc::channel::<usize>();
    let (looked_tx, looked_rx) = mpsc::channel::<()>();
    let p = pool.clone();
    let paused = std::thread::spawn(move || {
        paused_runtime().block_on(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let hs: Vec<_> = futures_util::future::join_all(
                (0..4).map(|_| p.submit(|| tokio::time::sleep(Duration::from_millis(10)))),
            )
            .await;
            for h in hs {
                h.unwrap().await.unwrap();
            }
            let t = Instant::now();
            idle_tx.send(p.worker_count()).unwrap();
            // Not idle (its clock stays) while the other thread looks.
            tokio::task::spawn_blocking(move || looked_rx.recv_timeout(SECS10))
                .await
                .unwrap()
                .unwrap();
            (p.worker_count(), t.elapsed())
        })
    });
    let before = idle_rx.recv_timeout(SECS10).unwrap();
    assert_eq!(before, 4, "the four jobs grew the pool to four workers");
    let seen = pool.worker_count(); // a plain thread: the real clock
    looked_tx.send(()).unwrap();
    let (after, idle_for) = paused.join().unwrap();
    assert_eq!(seen, 4, "the plain thread saw the workers retire");
    assert_eq!(
        (after, idle_for),
        (4, Duration::ZERO),
        "the paused test's workers, idle 0 s of its clock (idle timeout 60 s), were retired \
         once another thread had looked at the worker count"
    );
}

/// An iterator of `n` jobs, each waiting on `gate`; each job's future counts its drop in
/// `dropped`; the iterator panics when dropped (used up or not).
struct PanickingOnDrop {
    left: usize,
    gate: Gate,
    dropped: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Iterator for PanickingOnDrop {
    type Item = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        let gate = self.gate.clone();
        let guard = support::Counted(self.dropped.clone());
        Some(Box::pin(async move {
            let _guard = guard;
            gate.wait().await;
        }))
    }
}

impl Drop for PanickingOnDrop {
    fn drop(&mut self) {
        panic!("the iterator's drop panics");
    }
}

/// What the user does: `batch_run` (CommonAioPool, 4 slots) of an iterator of two jobs
/// that wait on a gate the test never opens; the iterator panics in its drop. The panic is
/// caught around the future (`catch_unwind`).
///
/// What they expect: the crate docs (`batch_run`, "# Panics"): "A panic of the iterator
/// (in its `next`, or in its drop once it is used up ...) comes out of this future, and
/// the jobs it submitted are aborted, as when the future is dropped": the panic's message
/// comes out, and both jobs' futures are dropped unfinished (the pool runs nothing).
///
/// Pinned (passes on 89569a0).
#[test]
fn pin_batch_run_whose_used_up_iterator_panics_in_its_drop_aborts_its_jobs() {
    use futures_util::FutureExt;
    support::hide_panics(&["the iterator's drop panics"]);
    let rt = support::current_thread();
    rt.block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(4)
            .max_queue_size(4)
            .process_wide(false)
            .build();
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let items = PanickingOnDrop {
            left: 2,
            gate: Gate::default(),
            dropped: dropped.clone(),
        };
        let got = std::panic::AssertUnwindSafe(pool.batch_run(items))
            .catch_unwind()
            .await
            .map(|r| r.map(|v| v.len()).map_err(|e| e.kind()))
            .map_err(|p| support::panic_message(&*p));
        assert_eq!(got, Err("the iterator's drop panics".to_owned()));
        let n = support::reach(&dropped, 2, SECS10).await;
        support::within("the pool's wait", pool.wait()).await;
        assert_eq!(
            (n, pool.stats().running, pool.stats().cancelled),
            (2, 0, 2),
            "the two jobs of a batch_run whose iterator panicked in its drop were not aborted"
        );
    });
}
