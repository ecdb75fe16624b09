//! Tests written by a hand-made mutation review of flow control (`src/engine/limits.rs`,
//! `src/engine/rate.rs`, the priority and key parts of `src/engine/queue.rs`,
//! `src/engine/admission.rs`): each pins a behaviour that a plausible one-token change
//! altered while the rest of the suite still passed (see the doc comment of each test for
//! the mutation it catches). Every wait is bounded (`recv_timeout`, `timeout`, `within`).
#![allow(clippy::async_yields_async)] // handles made on one runtime, awaited on another

mod support;

use std::sync::mpsc;
use std::time::Duration;

use nb_aiopool::CommonAioPool;
use support::paused_runtime;

const SECS10: Duration = Duration::from_secs(10);

/// Holds the one worker of multi-thread runtime `m` busy (blocked in a task) until the
/// sender returned is used or dropped, or 10 s pass; returns once it is.
fn hold_the_worker(m: &tokio::runtime::Runtime) -> mpsc::Sender<()> {
    let (blocked_tx, blocked_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    m.spawn(async move {
        blocked_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(SECS10);
    });
    blocked_rx.recv_timeout(SECS10).unwrap();
    release_tx
}

/// A rate timer armed from a paused clock that ran an hour ahead, on a multi-thread
/// runtime whose worker was busy until the window had room again on its own clock, fires
/// at once when that runtime first runs it: the job queued behind the window starts
/// within a window or two of real time, not an hour later (README: a clock ahead holds a
/// real-time runtime "for at most one window"; RELIABILITY.md, 365).
///
/// Catches `Engine::rate_timer_due` (src/engine/rate.rs) falling back to the deadline
/// read on the arming clock when the window has room now (`unwrap_or(now)` changed to
/// `unwrap_or(at)`): the timer then sleeps until the paused clock's deadline, an hour of
/// real time away, and the job waits for it.
#[test]
fn a_rate_timer_armed_on_a_clock_ahead_fires_at_once_where_the_window_has_room() {
    let per = Duration::from_millis(200);
    // `m2` runs the job watched (C); `m`, known to the pool after it (the newest
    // multi-thread runtime), gets the paused runtime's timer.
    let m2 = support::multi_thread_of(1);
    let m = support::multi_thread_of(1);
    let pool = rate_limited(per);
    // Both multi-thread runtimes are known to the pool (their jobs ran); their starts
    // leave the window.
    m2.block_on(async {
        support::within("the other multi-thread runtime's first job", async {
            pool.submit(async {}).await.unwrap().await.unwrap()
        })
        .await
    });
    std::thread::sleep(per + Duration::from_millis(50));
    m.block_on(async {
        support::within("the multi-thread runtime's first job", async {
            pool.submit(async {}).await.unwrap().await.unwrap()
        })
        .await
    });
    std::thread::sleep(per + Duration::from_millis(50));
    // Its one worker is busy (blocked) until released: a timer armed there waits to run.
    let release_tx = hold_the_worker(&m);
    // A paused runtime whose clock ran an hour ahead: its job A spends the window's
    // start; its job B is held back, and the timer for B goes to the multi-thread
    // runtime, with a deadline read on the paused clock (an hour ahead).
    let p = paused_runtime();
    let b = p.block_on(async {
        tokio::time::advance(Duration::from_secs(3600)).await;
        let a = pool.submit(async {}).await.unwrap();
        tokio::time::timeout(SECS10, a).await.unwrap().unwrap();
        pool.submit(async {}).await.unwrap()
    });
    // A submit on the other multi-thread runtime reads the window on the real clock (A's
    // start is taken as made now) and queues C behind B.
    let c = m2.block_on(async {
        support::within(
            "C's submit",
            pool.submit(async { std::time::Instant::now() }),
        )
        .await
        .unwrap()
    });
    let queued = std::time::Instant::now();
    // The window has room again on the real clock before the timer first runs.
    std::thread::sleep(2 * per);
    release_tx.send(()).unwrap();
    let ran = m2.block_on(async { tokio::time::timeout(Duration::from_secs(5), c).await });
    let ran = ran.unwrap_or_else(|_| {
        panic!(
            "C, queued behind the window, had not run 5 s after the window had room on the \
             real clock (window {per:?}): the rate timer slept until the paused clock's \
             deadline, an hour ahead"
        )
    });
    assert!(ran.unwrap().duration_since(queued) < Duration::from_secs(4));
    drop(b);
}

/// A paused test (`start_paused`, current-thread) shares a rate-limited pool with a
/// multi-thread runtime whose job is the next the window holds back; the paused test's own
/// job is queued behind it. The paused runtime, idle while it awaits its job, gets a rate
/// timer of its own and auto-advances to the window's reopenings, not to the test's
/// `timeout` (README: "a current-thread runtime whose jobs a rate window holds back gets a
/// timer of its own ... when its code finds the window full"; RELIABILITY.md, 364).
///
/// Catches `RateTimers::only_on_others_of` (src/engine/rate.rs) with its test of the
/// runtime being driven negated (`!is_multi_thread(h)` changed to `is_multi_thread(h)`):
/// with the only timer armed on the multi-thread runtime (for its held job) and none for
/// the paused runtime's job behind it (`arm_for_held` arms one only for the next job's
/// runtime), the paused runtime had no timer, and jumped to the test's 5 s timeout.
///
/// The multi-thread runtime's one worker is held busy while the paused test runs: the
/// paused runtime's first tick hands X over to it, and its second starts Y while X waits
/// there. A worker free to run X's slot at once (within a few hundred microseconds, seen
/// once in CI: RELIABILITY.md, 414) finds the window full on the real clock and puts X back; the
/// paused runtime's next tick then hands X over again, not Y, and so on at each of its
/// leaps, until its timeout (a paused clock does not wait for the real one).
#[test]
fn a_paused_tests_job_behind_another_runtimes_held_job_gets_a_timer_of_its_own() {
    let per = Duration::from_secs(1);
    let m = support::multi_thread_of(1);
    let pool = rate_limited(per);
    // The multi-thread runtime's first job spends the window's start; its second, X, is
    // held back: the next job the window lets start.
    let x = m.block_on(async {
        let first = pool.submit(async {}).await.unwrap();
        let x = pool.submit(async {}).await.unwrap();
        support::within("the first job", first).await.unwrap();
        x
    });
    assert_eq!(pool.stats().queued, 1, "X waits for the window");
    let release_tx = hold_the_worker(&m);
    // The paused test's job Y, queued behind X.
    let p = paused_runtime();
    let took = p.block_on(async {
        let t0 = tokio::time::Instant::now();
        let y = pool.submit(async {}).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), y)
            .await
            .map(|r| r.unwrap())
            .map(|()| t0.elapsed())
    });
    let took = took.unwrap_or_else(|_| {
        panic!(
            "the paused test's job, behind the multi-thread runtime's held job, was not \
             done when its 5 s timeout fired (window {per:?}): no rate timer of its own"
        )
    });
    assert!(took <= 3 * per, "done after {took:?} of paused time");
    release_tx.send(()).unwrap();
    m.block_on(async { support::within("X", x).await.unwrap() });
}

/// A local CommonAioPool of 4 slots and a queue of 10 that starts one task per `per`.
fn rate_limited(per: Duration) -> CommonAioPool {
    CommonAioPool::builder()
        .max_concurrency(4)
        .max_queue_size(10)
        .rate_limit(1, per)
        .process_wide(false)
        .build()
}
