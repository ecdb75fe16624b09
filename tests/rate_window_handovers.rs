//! Tasks handed over between runtimes in a rate-limited pool (a review of 05b7a27, finding
//! 312's fix; RELIABILITY.md, findings 314–317): in a rate-limited pool, a slot whose next
//! task's start was charged before it runs it (a task handed over by a slot of another
//! runtime, `Slot::bound`; a task kept across a yield) takes the start again when the task
//! begins (`Slot::restart`, `Limits::restart`), and puts the task back in the queue if the
//! window has no room then.
//!
//! The faults have a test each, failing on 99188ea (314–316 are regressions of 05b7a27,
//! 317 a case it added to an older class): a task aborted, or covered by `cancel_all`, while it was handed over is put
//! back in the queue like a task that is to run, and holds its place (and its handle, for
//! `cancel_all`) until the window reopens; a start clamped by the window (charged on a
//! paused runtime whose clock ran ahead) is not found again, so the task is held back by
//! its own start; the put-back arms the rate timer on a current-thread runtime driven only
//! for a moment, which holds back another current-thread runtime driven all along. The
//! pins check what the review found sound: a task put back is counted as queued, is not
//! lost, runs once when the window reopens, and an abort finds it in the queue.
//!
//! Two runtimes are needed to hand a task over, so these run in real time: a
//! current-thread runtime left undriven (`v`) and a multi-thread one (`main`) whose slots
//! take `v`'s tasks. The windows are long (400 ms) next to the steps' latency, and every
//! wait is bounded; a run whose steps came later than the window allows (a loaded
//! machine) is played again, not judged (`in_time`).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nb_aiopool::{CancelReason, CommonAioPool, PoolStats, TaskHandle};
use support::{came_by, common_builder, counted, drive, in_time, HandedToV};

/// The rate window of these tests: one start per `PER`.
const PER: Duration = Duration::from_millis(400);

/// Asserts that the pool's stats `s` show it holds nothing, its one task counted
/// cancelled.
fn ended_cancelled(s: &PoolStats) {
    assert_eq!((s.queued, s.running, s.cancelled), (0, 0, 1), "{s}");
}

/// The set-up of the faults: `x`, a task of `v` (a current-thread runtime then left
/// undriven), is taken from the queue by a slot of `main`, which charges its start to the
/// window (`rate_limit(1, PER)`) and hands it to a slot task on `v`. A task of `main`, `w`,
/// starts when the window reopens, `PER` later: by the time `v` is driven again, `x`'s
/// start has left the window and `w`'s fills it, so `x`'s slot puts it back in the queue,
/// where the window holds it back for about `PER` more.
///
/// That holds only if `v` is driven while `w`'s start is in the window, up to `PER` after
/// it: a test checks `came_by(w_start + PER)?` once it has driven `v` and read what it
/// asserts on, and is played by `in_time`, so that a run whose thread was held up past
/// that (a loaded machine; `x` then finds room and runs) is played again, not judged.
/// Returns the pool, and the scenario once `x` is handed over and `w` has ended.
fn hand_over() -> (CommonAioPool, HandedToV<TaskHandle<u32>>) {
    let pool = common_builder(8, 10).rate_limit(1, PER).build();
    let (px, pw, ps) = (pool.clone(), pool.clone(), pool.clone());
    let handed = support::hand_x_over_to_v(
        PER,
        move |v, runs| v.block_on(px.submit(counted(runs))).unwrap(),
        move |runs| {
            let runs = runs.clone();
            Box::pin(async move { pw.submit(counted(&runs)).await.unwrap().detach() })
        },
        move || ps.stats().completed,
    );
    let s = pool.stats();
    assert_eq!(
        (s.queued, s.running, s.completed),
        (0, 1, 1),
        "x handed over to v (running), w completed: {s}"
    );
    assert_eq!(
        handed.x_runs.load(Ordering::SeqCst),
        0,
        "x ran before v was driven"
    );
    (pool, handed)
}

/// Finding 314. A task aborted while it was handed over to its runtime (its handle resolved
/// `Aborted` at once) is put back in the queue when that runtime polls it, as if it were
/// to run: it holds its place and counts as queued until the rate window lets it
/// "start", up to a window later (where it is dropped unrun). A task aborted while queued
/// spends no start (`Limits::started` with `runs: false`) and leaves at once; one aborted
/// while a slot holds it is dropped at that slot's next poll. On 05b7a27 (and 99188ea)
/// this fails with `the aborted task was put back in the queue: queued 1, running 0, ...
/// cancelled 0`.
#[test]
fn a_task_aborted_while_handed_over_is_dropped_when_its_runtime_polls_it() {
    in_time("the aborted hand-over scenario", || {
        let (
            pool,
            HandedToV {
                v,
                main,
                x,
                x_runs,
                w_start,
            },
        ) = hand_over();
        x.abort();
        assert!(x.is_finished(), "abort resolves the handle at once");
        drive(&v);
        let s = pool.stats();
        // `v` polled `x`'s slot while `w`'s start filled the window.
        came_by(w_start + PER)?;
        assert_eq!(
            (s.queued, s.running, s.cancelled),
            (0, 0, 1),
            "the aborted task was put back in the queue: {s}"
        );
        // Either way it never runs, and the pool ends.
        v.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), pool.wait())
                .await
                .expect("wait() did not return within 10 s");
        });
        assert_eq!(x_runs.load(Ordering::SeqCst), 0, "the aborted task ran");
        drop(main);
        Ok(())
    });
}

/// Finding 315. `cancel_all` covers the task handed over (it counts as running: its slot
/// cancels it at its next poll, without calling user code). That slot puts it back in
/// the queue instead, before it looks at the mark, so the task's handle stays unresolved
/// (and the task queued, `wait()` and `shutdown_timeout` waiting for it) until the window
/// reopens, up to a window later. On 05b7a27 (and 99188ea) this fails with `the task
/// cancel_all covered was put back: its handle is unresolved a quarter window after its
/// slot was polled`.
#[test]
fn a_task_cancel_all_covered_while_handed_over_ends_when_its_runtime_polls_it() {
    in_time("the covered hand-over scenario", || {
        let (
            pool,
            HandedToV {
                v,
                main,
                x,
                x_runs,
                w_start,
            },
        ) = hand_over();
        drop(pool.cancel_all());
        drive(&v);
        let s = pool.stats();
        // `v` polled `x`'s slot while `w`'s start filled the window, and a quarter window
        // before it reopens: a task put back (the fault) is not handed over again while
        // the wait below looks (it would then end `CancelAll` too, and pass).
        came_by(w_start + PER - PER / 4)?;
        let got = v.block_on(async { tokio::time::timeout(PER / 4, x).await });
        let got = got.unwrap_or_else(|_| {
            panic!(
                "the task cancel_all covered was put back: its handle is unresolved a quarter \
                 window after its slot was polled ({s})"
            )
        });
        let err = got.expect_err("a task cancel_all covered ran to its end");
        assert_eq!(err.cancel_reason(), Some(CancelReason::CancelAll), "{err}");
        assert_eq!(x_runs.load(Ordering::SeqCst), 0, "the covered task ran");
        ended_cancelled(&pool.stats());
        drop(main);
        Ok(())
    });
}

/// Finding 316. A start charged on a paused runtime whose clock ran ahead is clamped by the
/// window when a runtime whose clock is behind reads it (`RateWindow::clamp`, findings 272
/// and 276): `Limits::restart` clamps first (in `expire`) and then looks for the exact
/// start it charged, which it no longer finds. The task is then held back by its own
/// start: put back in the queue for a window (10 s here), though the window holds no other
/// start. (On 05b7a27 the same held a task for ever in a window that never reopens,
/// `Duration::MAX`; since 99188ea `restart` does nothing in such a window.) On 99188ea this
/// fails with `the task did not start within 2 s, its own start the only one in the
/// window`.
#[test]
fn a_task_handed_over_from_a_runtime_whose_clock_ran_ahead_still_starts() {
    support::on_thread_within("the clamped hand-over scenario", 30, || {
        let pool = common_builder(1, 10)
            .rate_limit(1, Duration::from_secs(10))
            .build();
        // `a`: paused (its clock advances when it idles). `b`: real time, current-thread.
        let a = support::paused_runtime();
        let b = support::current_thread();
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let first = a
            .block_on(pool.submit(async move {
                let _ = held.await;
                1u32
            }))
            .unwrap();
        // Let its slot start it (the window's start, on `a`'s clock).
        a.block_on(async {
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(pool.stats().running, 1, "{}", pool.stats());
        // Queued behind it, from `b` (not driven after this).
        let x_runs = Arc::new(AtomicUsize::new(0));
        let x = b.block_on(pool.submit(counted(&x_runs))).unwrap();
        assert_eq!(pool.stats().queued, 1, "{}", pool.stats());
        a.block_on(async {
            // `a`'s clock runs an hour ahead (the first start leaves the window, for `a`);
            // then its task ends, and its slot takes `x`, charging its start on `a`'s
            // clock, and hands it to `b`.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            release.send(()).unwrap();
            assert_eq!(first.await.unwrap(), 1);
        });
        let s = pool.stats();
        assert_eq!((s.queued, s.running), (0, 1), "x handed over to b: {s}");
        b.block_on(async {
            let got = tokio::time::timeout(Duration::from_secs(2), x)
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the task did not start within 2 s, its own start the only one in \
                         the window ({})",
                        pool.stats()
                    )
                });
            assert_eq!(got.unwrap(), 7);
        });
        assert_eq!(x_runs.load(Ordering::SeqCst), 1);
    });
}

/// Pin: a task put back by its runtime (the window full when it got to it) counts as
/// queued, not running, while it waits; it runs once, when the window reopens (the rate
/// timer armed by the put-back, on `main`, hands it over again), and `wait()` ends.
#[test]
fn pin_a_task_put_back_is_queued_then_runs_once_when_the_window_reopens() {
    in_time("the put-back scenario", || {
        let (
            pool,
            HandedToV {
                v,
                main,
                x,
                x_runs,
                w_start,
            },
        ) = hand_over();
        drive(&v);
        let s = pool.stats();
        let runs = x_runs.load(Ordering::SeqCst);
        // `v` polled `x`'s slot while `w`'s start filled the window.
        came_by(w_start + PER)?;
        assert_eq!(
            (s.queued, s.running, s.completed),
            (1, 0, 1),
            "x put back in the queue: {s}"
        );
        assert_eq!(runs, 0);
        let t0 = Instant::now();
        // The window reopens `PER` after `w`'s start: half a window or more after `t0`.
        came_by(w_start + PER / 2)?;
        v.block_on(async {
            let got = tokio::time::timeout(Duration::from_secs(10), x)
                .await
                .expect("the task put back did not run within 10 s");
            assert_eq!(got.unwrap(), 7);
            tokio::time::timeout(Duration::from_secs(10), pool.wait())
                .await
                .expect("wait() did not return within 10 s");
        });
        assert!(
            t0.elapsed() >= PER / 2,
            "the task put back started {:?} after it was put back, inside the window",
            t0.elapsed()
        );
        assert_eq!(
            x_runs.load(Ordering::SeqCst),
            1,
            "runs of the task put back"
        );
        let s = pool.stats();
        assert_eq!(
            (s.queued, s.running, s.completed, s.cancelled),
            (0, 0, 2, 0),
            "{s}"
        );
        drop(main);
        Ok(())
    });
}

/// Pin: an abort of a task put back in the queue finds it there (its runner key names a
/// slot that is gone): it leaves at once, its place given back, and it never runs.
#[test]
fn pin_a_task_put_back_then_aborted_leaves_the_queue_at_once() {
    in_time("the put-back then aborted scenario", || {
        let (
            pool,
            HandedToV {
                v,
                main,
                x,
                x_runs,
                w_start,
            },
        ) = hand_over();
        drive(&v);
        let put_back = pool.stats();
        x.abort();
        let s = pool.stats();
        // `v` polled `x`'s slot, and `x` was aborted, while `w`'s start filled the window
        // (once it reopens, `main`'s timer hands `x` over again).
        came_by(w_start + PER)?;
        assert_eq!(put_back.queued, 1, "{put_back}");
        ended_cancelled(&s);
        // The window reopening finds nothing to start.
        v.block_on(async { tokio::time::sleep(PER + PER / 2).await });
        assert_eq!(x_runs.load(Ordering::SeqCst), 0, "the aborted task ran");
        ended_cancelled(&pool.stats());
        drop(main);
        Ok(())
    });
}

/// Finding 317. The put-back arms the rate timer on the runtime of the task put back (the job
/// that starts next: `Engine::held_job_rt`), which is the runtime whose slot just polled it:
/// here a current-thread runtime, `b`, driven only for a moment (the very case of finding
/// 312: a runtime that is driven now and then). While that timer is pending no other is
/// armed, so a task another current-thread runtime, `a`, submits next, while the window is
/// full, waits for `b` to be driven again, though `a` is driven all along (finding 94's
/// hang, which 3789494 fixed only where the pool knows a multi-thread runtime). Before
/// 05b7a27 the task handed over simply ran when `b` polled it, no timer went to `b`, and
/// `a`'s task started a window later. On 05b7a27 (and 99188ea) this fails with `a's task
/// did not start within 3 windows`.
#[test]
fn a_task_put_back_by_a_runtime_then_left_undriven_does_not_hold_back_a_driven_one() {
    support::on_thread_within("the put-back timer scenario", 30, || {
        let pool = common_builder(8, 10).rate_limit(1, PER).build();
        let x_runs = Arc::new(AtomicUsize::new(0));
        let b = support::current_thread();
        let x = b.block_on(pool.submit(counted(&x_runs))).unwrap();
        // `a`'s claimer takes `x` and hands it to `b`; `w` starts a window later.
        let a = support::current_thread();
        let w_runs = Arc::new(AtomicUsize::new(0));
        a.block_on(async {
            pool.submit(counted(&w_runs)).await.unwrap().detach();
            let reached = support::reach(&w_runs, 1, Duration::from_secs(10)).await;
            assert_eq!(reached, 1, "w did not start within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        // `b` is driven for a moment: `x` goes back to the queue (the window holds `w`).
        drive(&b);
        let s = pool.stats();
        assert_eq!((s.queued, s.running), (1, 0), "x put back: {s}");
        // `a` submits and waits, driven all along; `b` is not driven.
        let a_runs = Arc::new(AtomicUsize::new(0));
        a.block_on(async {
            let h = pool.submit(counted(&a_runs)).await.unwrap();
            let got = tokio::time::timeout(PER * 3, h).await.unwrap_or_else(|_| {
                panic!(
                    "a's task did not start within 3 windows, a driven all along ({})",
                    pool.stats()
                )
            });
            assert_eq!(got.unwrap(), 7);
        });
        drop(x);
    });
}
