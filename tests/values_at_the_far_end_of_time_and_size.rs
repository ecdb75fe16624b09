//! Extreme and boundary values across the public API (a helper's review, 2026-12-06):
//! windows, deadlines and idle times at the far end of what a tokio `Instant` can hold,
//! and the largest sizes, weights and key limits the builders take.
//!
//! `tests/bad_input.rs` and `tests/bad_input_on_the_newer_surface.rs` already pin zero and
//! `Duration::MAX` for each setting, priorities at the `i32` extremes, weights 0 and
//! `u32::MAX`, and sizes at `Semaphore::MAX_PERMITS`; these tests take the values in
//! between (a window or a deadline that a time can hold but a timer cannot, ten-year
//! windows on a paused clock) and the combinations (an elastic pool at its largest size
//! with every worker kept, resized down and back).
//!
//! Each test says what the user does, what the docs promise, and what happened ("Pinned:"
//! for a behaviour that held and is worth keeping). The review's third finding (376, the
//! starts of other keys scan a saturated key's queued tasks) is a cost, not a wrong
//! result: it is measured by `bench/src/bin/key_scan.rs`, not in a timed test
//! (RELIABILITY.md, 376).

mod support;

use std::time::Duration;

use nb_aiopool::{CancelReason, SmartAioPool, SubmitErrorKind, SubmitOptions};
use support::{flow_pools, on_thread_within, paused_runtime, per_pool, FlowLimits, Gate, Pool};
use tokio::time::Instant;

const YEAR: Duration = Duration::from_secs(365 * 86_400);

/// The three pools (one slot, one queue place where there is a queue) with the same
/// flow-control settings, none of them process-wide.
fn pools_with(
    rate: Option<(u32, Duration)>,
    weight_capacity: Option<u64>,
    max_per_key: Option<usize>,
    conc: usize,
    queue: usize,
) -> Vec<Pool> {
    let limits = FlowLimits {
        max_per_key,
        weight_capacity,
        rate,
    };
    flow_pools(conc, queue, conc, limits)
}

/// Submits a task that returns `v` (a recipe on SmartAioPool) with `opts`.
async fn submit_value(pool: &Pool, v: u32, opts: SubmitOptions) -> nb_aiopool::TaskHandle<u32> {
    per_pool!(
        pool,
        |p| p.submit_with(async move { v }, opts).await.unwrap(),
        |p| p.submit_with(move || async move { v }, opts).await.unwrap()
    )
}

/// Submits a task that waits at `gate`, then returns `v`.
async fn submit_gated(
    pool: &Pool,
    gate: &Gate,
    v: u32,
    opts: SubmitOptions,
) -> nb_aiopool::TaskHandle<u32> {
    per_pool!(
        pool,
        |p| {
            let g = gate.wait();
            p.submit_with(
                async move {
                    g.await;
                    v
                },
                opts,
            )
            .await
            .unwrap()
        },
        |p| {
            let gate = gate.clone();
            p.submit_with(
                move || {
                    let g = gate.wait();
                    async move {
                        g.await;
                        v
                    }
                },
                opts,
            )
            .await
            .unwrap()
        }
    )
}

/// The longest `Duration` that can be added to `t` (the sum is the largest `Instant`).
fn longest_addable(t: Instant) -> Duration {
    let (mut lo, mut hi) = (0u128, Duration::MAX.as_nanos());
    let of = |n: u128| Duration::new((n / 1_000_000_000) as u64, (n % 1_000_000_000) as u32);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if t.checked_add(of(mid)).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    of(lo)
}

// ----- rate windows ---------------------------------------------------------------------

/// The user builds each pool with `rate_limit(1, per)`, `per` a window that a time can
/// hold (the start's time plus `per` is an `Instant`) but that ends within a second of
/// the largest `Instant` (computed as "until the end of time" from the clock's now), on a
/// paused clock; submits two tasks and waits for the second for 100 years of that clock.
/// `rate_limit`: "each further start waits until the start `count` places before it is
/// `per` old"; `per` here is about 292 billion years, so the second task must still be
/// waiting when the 100 years are up (the `timeout` says `Elapsed`).
///
/// Finding 374. Before the fix: "timed out (20 s): a rate window ending within a second of the largest
/// Instant, on a paused clock" — the runtime spun for ever at 30 years of its
/// clock. The window armed its rate timer at `later_by(start, per)` (the start plus about
/// 30 years, as for a window that cannot hold a timer), but `expire` kept the start until
/// `start + per` and `never_reopens` said the window reopens: at 30 years the timer
/// fired, found the window still full, and armed itself again at the same past instant,
/// which fired at once, and so on, a task re-spawned without end on a runtime that never
/// idled again (so its clock, and the test's 100-year timeout, stood still).
#[test]
fn a_rate_window_ending_within_a_second_of_the_last_instant_neither_spins_nor_reopens() {
    on_thread_within(
        "a rate window ending within a second of the largest Instant, on a paused clock",
        20,
        || {
            paused_runtime().block_on(async {
                for kind in ["common", "no_queue", "smart"] {
                    // Half a second short of the longest: the start's time may be a little
                    // off the clock's now and the window still ends within a second of the
                    // largest `Instant` (where no timer can be set).
                    let per = longest_addable(Instant::now()) - Duration::from_millis(500);
                    let pool = pools_with(Some((1, per)), None, None, 1, 1)
                        .into_iter()
                        .find(|p| p.name() == kind)
                        .unwrap();
                    let first = submit_value(&pool, 1, SubmitOptions::new()).await;
                    let mut second = submit_value(&pool, 2, SubmitOptions::new()).await;
                    assert_eq!(first.await.unwrap(), 1, "{kind}: the first task");
                    let waited = tokio::time::timeout(100 * YEAR, &mut second).await;
                    assert!(
                        waited.is_err(),
                        "{kind}: rate_limit(1, ~292 billion years) started a second task \
                         within 100 years: {waited:?}"
                    );
                    second.abort();
                    let r = second.await;
                    assert_eq!(
                        r.unwrap_err().cancel_reason(),
                        Some(CancelReason::Aborted),
                        "{kind}: the held task, aborted"
                    );
                }
            })
        },
    );
}

/// The user builds each pool with `rate_limit(1, 10 years)` on a paused clock (past
/// tokio's timer wheel's ~2.2-year top level) and submits two tasks. `rate_limit`: "each
/// further start waits until the start `count` places before it is `per` old".
///
/// Pinned: the second task starts at 10 years of the clock, not before, not later than
/// 10 years and a second.
#[test]
fn a_ten_year_rate_window_reopens_after_ten_years_on_a_paused_clock() {
    on_thread_within("ten-year rate windows on a paused clock", 60, || {
        paused_runtime().block_on(async {
            for pool in pools_with(Some((1, 10 * YEAR)), None, None, 1, 1) {
                let kind = pool.name();
                let t0 = Instant::now();
                let first = submit_value(&pool, 1, SubmitOptions::new()).await;
                let second = submit_value(&pool, 2, SubmitOptions::new()).await;
                assert_eq!(first.await.unwrap(), 1, "{kind}: the first task");
                let mut second = std::pin::pin!(second);
                let early =
                    tokio::time::timeout(10 * YEAR - Duration::from_secs(1), &mut second).await;
                assert!(
                    early.is_err(),
                    "{kind}: rate_limit(1, 10 years) started the second task before 10 years: \
                     {early:?}"
                );
                let r = tokio::time::timeout(Duration::from_secs(2), &mut second).await;
                assert_eq!(
                    r.ok().map(|r| r.unwrap()),
                    Some(2),
                    "{kind}: the second task did not end by 10 years and a second (at {:?})",
                    t0.elapsed()
                );
            }
        })
    });
}

// ----- submit deadlines and shutdown deadlines --------------------------------------------

/// The user submits with `SubmitOptions::timeout(10 years)` to each full pool, on a paused
/// clock. `timeout`: "Gives up waiting for room after `timeout`: the submit fails with
/// `SubmitErrorKind::TimedOut` and hands the task back".
///
/// Pinned: the submit waits 10 years of the clock, then fails with `TimedOut`, the task
/// handed back unpolled; the running task still ends well.
#[test]
fn a_ten_year_submit_timeout_gives_up_after_ten_years_on_a_paused_clock() {
    on_thread_within("ten-year submit timeouts on a paused clock", 60, || {
        paused_runtime().block_on(async {
            for pool in pools_with(None, None, None, 1, 0) {
                let kind = pool.name();
                let gate = Gate::new();
                let running = submit_gated(&pool, &gate, 1, SubmitOptions::new()).await;
                let t0 = Instant::now();
                let opts = SubmitOptions::new().timeout(10 * YEAR);
                let kind_of = per_pool!(
                    &pool,
                    |p| p
                        .submit_with(async { 2u32 }, opts)
                        .await
                        .map(drop)
                        .map_err(|e| e.kind()),
                    |p| p
                        .submit_with(|| async { 2u32 }, opts)
                        .await
                        .map(drop)
                        .map_err(|e| e.kind())
                );
                let waited = t0.elapsed();
                assert_eq!(
                    kind_of,
                    Err(SubmitErrorKind::TimedOut),
                    "{kind}: a submit with a 10-year timeout to a full pool"
                );
                assert!(
                    waited >= 10 * YEAR && waited < 10 * YEAR + Duration::from_secs(1),
                    "{kind}: the 10-year submit timeout gave up after {waited:?}"
                );
                gate.open();
                assert_eq!(running.await.unwrap(), 1, "{kind}: the running task");
            }
        })
    });
}

/// The user calls `shutdown_timeout(10 years)` on each pool with a task that never ends,
/// on a paused clock. `shutdown_timeout`: tasks "still running when the deadline passes
/// are abandoned".
///
/// Pinned: the shutdown returns at 10 years of the clock with one task abandoned, whose
/// handle says `Abandoned`.
#[test]
fn a_ten_year_shutdown_deadline_abandons_after_ten_years_on_a_paused_clock() {
    on_thread_within("ten-year shutdown deadlines on a paused clock", 60, || {
        paused_runtime().block_on(async {
            for pool in pools_with(None, None, None, 1, 1) {
                let kind = pool.name();
                let never = Gate::new();
                let h = submit_gated(&pool, &never, 1, SubmitOptions::new()).await;
                tokio::task::yield_now().await;
                let t0 = Instant::now();
                let report = pool.shutdown_timeout(10 * YEAR).await;
                let waited = t0.elapsed();
                assert_eq!(report.abandoned(), 1, "{kind}: {report}");
                assert!(
                    waited >= 10 * YEAR && waited < 10 * YEAR + Duration::from_secs(1),
                    "{kind}: shutdown_timeout(10 years) returned after {waited:?}"
                );
                assert_eq!(
                    h.await.unwrap_err().cancel_reason(),
                    Some(CancelReason::Abandoned),
                    "{kind}: the never-ending task's handle"
                );
            }
        })
    });
}

// ----- elastic workers ------------------------------------------------------------------

/// The user builds a SmartAioPool with `idle_timeout(Duration::MAX)` and `min_workers(0)`,
/// runs three tasks at once (three workers), and, on a paused clock, lets the pool idle
/// for 31 years before looking at its workers. `SmartAioPoolBuilder::idle_timeout`:
/// "`Duration::MAX` keeps them (for the life of a process)".
///
/// Finding 375. Before the fix: "idle_timeout(Duration::MAX) retired idle workers after 31 years of a
/// paused clock", `left: 0`, `right: 3`. `Elastic::retire` counted a worker's idle time
/// against `later_by(since, idle_timeout)`, which is `since` plus about 30 years for a
/// timeout too long to add; the rate window's `expire` already keeps a start of such a
/// window for good ("not even once a paused clock has passed `later_by`'s ~30 years").
#[test]
fn idle_timeout_duration_max_keeps_workers_past_thirty_years_of_a_paused_clock() {
    on_thread_within("idle_timeout(MAX) on a paused clock", 60, || {
        paused_runtime().block_on(async {
            for timeout in [Duration::MAX, Duration::from_secs(u64::MAX)] {
                let pool = SmartAioPool::builder()
                    .max_concurrency(4)
                    .min_workers(0)
                    .idle_timeout(timeout)
                    .process_wide(false)
                    .auto_shutdown(false)
                    .build();
                let gate = Gate::new();
                let mut hs = Vec::new();
                for i in 0..3 {
                    let g = gate.clone();
                    hs.push(
                        pool.submit(move || {
                            let w = g.wait();
                            async move {
                                w.await;
                                i
                            }
                        })
                        .await
                        .unwrap(),
                    );
                }
                while pool.busy_worker_count() < 3 {
                    tokio::task::yield_now().await;
                }
                gate.open();
                for h in hs {
                    h.await.unwrap();
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
                assert_eq!(
                    pool.worker_count(),
                    3,
                    "idle_timeout({timeout:?}) retired idle workers after a minute"
                );
                tokio::time::sleep(31 * YEAR).await;
                assert_eq!(
                    pool.worker_count(),
                    3,
                    "idle_timeout({timeout:?}) retired idle workers after 31 years of a paused \
                     clock"
                );
            }
        })
    });
}

/// The user builds a SmartAioPool at the largest size with every worker kept
/// (`max_concurrency(n).min_workers(n)`, n = 2^40), shrinks it to 1, runs tasks, grows it
/// back, and runs tasks again. `min_workers`: "Workers kept even when idle";
/// `set_max_concurrency`: "On SmartAioPool `n` caps the elastic workers".
///
/// Pinned: the worker count follows (n, then 1, then n again) at once, with no memory or
/// time per worker, and every task runs.
#[test]
fn an_elastic_pool_at_its_largest_with_every_worker_kept_resizes_down_and_back() {
    on_thread_within("an elastic pool of 2^40 workers resized", 30, || {
        paused_runtime().block_on(async {
            let n = 1usize << 40;
            let pool = SmartAioPool::builder()
                .max_concurrency(n)
                .min_workers(n)
                .max_queue_size(4)
                .idle_timeout(Duration::ZERO)
                .process_wide(false)
                .auto_shutdown(false)
                .build();
            assert_eq!(pool.worker_count(), n, "the workers kept at build");
            pool.set_max_concurrency(1);
            assert_eq!(pool.worker_count(), 1, "after a shrink to 1");
            let mut hs = Vec::new();
            for i in 0..5u32 {
                hs.push(pool.submit(move || async move { i }).await.unwrap());
            }
            for (i, h) in hs.into_iter().enumerate() {
                assert_eq!(h.await.unwrap(), i as u32, "a task of the shrunk pool");
            }
            pool.set_max_concurrency(n);
            assert_eq!(pool.worker_count(), n, "after growing back to 2^40");
            assert_eq!(pool.idle_worker_count(), n, "idle after growing back");
            tokio::time::sleep(Duration::from_secs(10)).await;
            assert_eq!(
                pool.worker_count(),
                n,
                "min_workers kept after an idle time"
            );
            let h = pool.submit(|| async { 9u32 }).await.unwrap();
            assert_eq!(h.await.unwrap(), 9, "a task of the grown pool");
            let s = pool.stats();
            assert_eq!((s.running, s.queued, s.completed), (0, 0, 6), "{s:?}");
        })
    });
}

// ----- weights and keys at their largest ------------------------------------------------

/// The user builds each pool with `weight_capacity(u64::MAX)` and `max_per_key(usize::MAX)`
/// and runs three tasks of `weight(u32::MAX)` sharing one key at once. `weight_capacity`:
/// "The sum of the weights of running tasks stays within `capacity`"; `max_per_key`: "At
/// most `n` running tasks share a key".
///
/// Pinned: all three run together (3 × `u32::MAX` is far within `u64::MAX`; the key
/// limit holds nothing back) and `stats()` counts them.
#[test]
fn the_largest_weight_capacity_and_key_limit_hold_nothing_back() {
    on_thread_within("the largest weights and key limits", 30, || {
        paused_runtime().block_on(async {
            for pool in pools_with(None, Some(u64::MAX), Some(usize::MAX), 3, 3) {
                let kind = pool.name();
                let gate = Gate::new();
                let opts = || SubmitOptions::new().weight(u32::MAX).key("k");
                let mut hs = Vec::new();
                for i in 0..3 {
                    hs.push(submit_gated(&pool, &gate, i, opts()).await);
                }
                let mut turns = 0;
                while pool_running(&pool) < 3 {
                    assert!(
                        turns < 1000,
                        "{kind}: only {} of 3 ran",
                        pool_running(&pool)
                    );
                    turns += 1;
                    tokio::task::yield_now().await;
                }
                gate.open();
                for (i, h) in hs.into_iter().enumerate() {
                    assert_eq!(h.await.unwrap(), i as u32, "{kind}");
                }
            }
        })
    });
}

fn pool_running(pool: &Pool) -> usize {
    per_pool!(pool, |p| p.stats().running, |p| p.stats().running)
}
