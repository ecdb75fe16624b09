//! The pools inside a user's own tests with tokio's paused time (a helper's review,
//! 2026-12-06; RELIABILITY.md, 363–365):
//! `#[tokio::test(start_paused = true)]` (current-thread, auto-advance when idle),
//! `tokio::time::pause()` midway, `tokio::time::advance`, with the crate's timed features
//! (rate windows, submit deadlines, `shutdown_timeout`, elastic workers' `idle_timeout`,
//! `tokio::time::timeout` around `run`, `batch_run`, groups and streams).
//!
//! Every check of a time is exact: under paused time nothing else moves the clock.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use nb_aiopool::{CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitOptions};
use support::{on_thread_within, paused_runtime, per_pool, within, Pool};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

/// The three pools, each with `conc` slots (Common and Smart with a queue of `queue`),
/// each built by `common`, `no_queue` and `smart` from its builder.
fn pools_with(
    conc: usize,
    queue: usize,
    common: impl Fn(nb_aiopool::CommonAioPoolBuilder) -> nb_aiopool::CommonAioPoolBuilder,
    no_queue: impl Fn(nb_aiopool::NoQueueAioPoolBuilder) -> nb_aiopool::NoQueueAioPoolBuilder,
    smart: impl Fn(nb_aiopool::SmartAioPoolBuilder) -> nb_aiopool::SmartAioPoolBuilder,
) -> Vec<Pool> {
    vec![
        Pool::Common(
            common(
                CommonAioPool::builder()
                    .max_concurrency(conc)
                    .max_queue_size(queue)
                    .process_wide(false),
            )
            .build(),
        ),
        Pool::NoQueue(
            no_queue(
                NoQueueAioPool::builder()
                    .max_concurrency(conc)
                    .process_wide(false),
            )
            .build(),
        ),
        Pool::Smart(
            smart(
                SmartAioPool::builder()
                    .max_concurrency(conc)
                    .max_queue_size(queue)
                    .process_wide(false)
                    .auto_shutdown(false),
            )
            .build(),
        ),
    ]
}

fn plain_pools(conc: usize, queue: usize) -> Vec<Pool> {
    pools_with(conc, queue, |b| b, |b| b, |b| b)
}

fn rate_pools(conc: usize, queue: usize, count: u32, per: Duration) -> Vec<Pool> {
    pools_with(
        conc,
        queue,
        |b| b.rate_limit(count, per),
        |b| b.rate_limit(count, per),
        |b| b.rate_limit(count, per),
    )
}

/// Milliseconds of the paused clock since `t0`.
fn ms_since(t0: Instant) -> u64 {
    (Instant::now() - t0).as_millis() as u64
}

/// A job that records when (ms since `t0`) it starts, then sleeps `sleep_ms`.
fn stamped(
    t0: Instant,
    starts: &Arc<Mutex<Vec<u64>>>,
    sleep_ms: u64,
) -> impl std::future::Future<Output = u64> + Send + 'static {
    let starts = Arc::clone(starts);
    async move {
        let at = ms_since(t0);
        starts.lock().unwrap().push(at);
        if sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
        }
        at
    }
}

impl Pool {
    /// Submits (waiting for room) a job that records its start; detached.
    async fn submit_stamped(&self, t0: Instant, starts: &Arc<Mutex<Vec<u64>>>, sleep_ms: u64) {
        per_pool!(
            self,
            |p| p
                .submit(stamped(t0, starts, sleep_ms))
                .await
                .unwrap()
                .detach(),
            |p| {
                let starts = Arc::clone(starts);
                p.submit(move || stamped(t0, &starts, sleep_ms))
                    .await
                    .unwrap()
                    .detach()
            }
        )
    }

    async fn wait(&self) {
        per_pool!(self, |p| p.wait().await, |p| p.wait().await)
    }

    /// `submit_with` a job that records its start (sleeping `sleep_ms`); `Ok(handle
    /// resolved value)` awaited, or `Err(timed out?)`.
    async fn submit_with_stamped(
        &self,
        t0: Instant,
        starts: &Arc<Mutex<Vec<u64>>>,
        sleep_ms: u64,
        opts: SubmitOptions,
    ) -> Result<nb_aiopool::TaskHandle<u64>, bool> {
        per_pool!(
            self,
            |p| p
                .submit_with(stamped(t0, starts, sleep_ms), opts)
                .await
                .map_err(|e| e.is_timed_out()),
            |p| {
                let starts = Arc::clone(starts);
                p.submit_with(move || stamped(t0, &starts, sleep_ms), opts)
                    .await
                    .map_err(|e| e.is_timed_out())
            }
        )
    }

    /// `run` a job that sleeps `sleep_ms` and returns 7.
    async fn run_sleeping(&self, sleep_ms: u64) -> u32 {
        let job = move || async move {
            tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
            7u32
        };
        per_pool!(self, |p| p.run(job()).await.unwrap(), |p| p
            .run(job)
            .await
            .unwrap())
    }
}

/// README ("Flow control"): "Rate limit `rate_limit(count, per)`: at most `count` starts
/// in any window of `per` (a sliding window; a burst of `count` may start at once).
/// Exact, tested with paused time." A user's `#[tokio::test(start_paused = true)]` that
/// submits six instant jobs to each pool under `rate_limit(2, 1 s)` expects them to start
/// at 0, 0, 1, 1, 2, 2 s of the paused clock, the runtime auto-advancing between.
///
/// Pinned: so they do, in all three pools.
#[tokio::test(start_paused = true)]
async fn pin_a_rate_window_under_auto_advance_starts_exactly_count_per_window() {
    for pool in rate_pools(4, 10, 2, Duration::from_secs(1)) {
        let t0 = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..6 {
            pool.submit_stamped(t0, &starts, 0).await;
        }
        within("the rate-limited jobs", pool.wait()).await;
        let mut got = starts.lock().unwrap().clone();
        got.sort_unstable();
        assert_eq!(
            got,
            vec![0, 0, 1000, 1000, 2000, 2000],
            "{}: the rate window let jobs start at other paused times than 2 per second",
            pool.name()
        );
    }
}

/// A user who drives the clock by hand: `rate_limit(1, 1 s)`, two jobs, the first
/// starts; `tokio::time::advance(1 s)` and a few `yield_now()`s should let the second
/// start, at exactly 1 s (the README: the window is exact under paused time).
///
/// Pinned: it starts within a few yields of the advance, at 1000 ms.
#[tokio::test(start_paused = true)]
async fn pin_advance_by_the_window_lets_the_held_back_job_start_within_a_few_yields() {
    for pool in rate_pools(4, 10, 1, Duration::from_secs(1)) {
        let t0 = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        pool.submit_stamped(t0, &starts, 0).await;
        pool.submit_stamped(t0, &starts, 0).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            *starts.lock().unwrap(),
            vec![0],
            "{}: the first job should have started, the second held back",
            pool.name()
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            *starts.lock().unwrap(),
            vec![0, 1000],
            "{}: after advance(1 s) and 10 yields the held-back job has not started at 1 s",
            pool.name()
        );
        within("the pool's wait", pool.wait()).await;
    }
}

/// `SubmitOptions::timeout`: "Gives up waiting for room after `timeout`". A user's paused
/// test: one slot (no queue) held by a job that sleeps 5 ms, then a `submit_with` with a
/// 10 ms deadline. The room comes at 5 ms, before the deadline: the submit should be
/// accepted and its job start at 5 ms.
///
/// Pinned: accepted in all three pools, started at 5 ms.
#[tokio::test(start_paused = true)]
async fn pin_a_submit_deadline_later_than_the_room_is_accepted_at_the_room() {
    for pool in plain_pools(1, 0) {
        let t0 = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        pool.submit_stamped(t0, &starts, 5).await;
        let opts = SubmitOptions::new().timeout(Duration::from_millis(10));
        let handle = pool
            .submit_with_stamped(t0, &starts, 0, opts)
            .await
            .unwrap_or_else(|timed_out| {
                panic!(
                    "{}: a submit whose room came at 5 ms failed at {} ms (timed out: {timed_out})",
                    pool.name(),
                    ms_since(t0)
                )
            });
        assert_eq!(
            within("the second job", handle).await.unwrap(),
            5,
            "{}",
            pool.name()
        );
    }
}

/// `SubmitOptions::timeout` with no room ever: the submit fails `TimedOut` exactly at its
/// deadline of the paused clock (10 ms), not later.
///
/// Pinned: at 10 ms, in all three pools.
#[tokio::test(start_paused = true)]
async fn pin_a_submit_deadline_with_no_room_fails_at_exactly_its_deadline() {
    for pool in plain_pools(1, 0) {
        let gate = support::Gate::default();
        let g = gate.clone();
        per_pool!(
            &pool,
            |p| p
                .submit(async move { g.wait().await })
                .await
                .unwrap()
                .detach(),
            |p| p
                .submit(move || {
                    let g = g.clone();
                    async move { g.wait().await }
                })
                .await
                .unwrap()
                .detach()
        );
        let t0 = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let opts = SubmitOptions::new().timeout(Duration::from_millis(10));
        let got = pool.submit_with_stamped(t0, &starts, 0, opts).await;
        assert!(
            matches!(got, Err(true)),
            "{}: a submit with no room did not time out",
            pool.name()
        );
        assert_eq!(
            ms_since(t0),
            10,
            "{}: timed out at another time than its 10 ms deadline",
            pool.name()
        );
        gate.open();
        within("the pool's wait", pool.wait()).await;
    }
}

/// `tokio::time::timeout(10 ms, pool.run(job of 3 ms))` behind a job of 5 ms in a pool
/// of one slot: the job is ready at 5 ms and done at 8 ms, inside the timeout.
///
/// Pinned: done at 8 ms in all three pools.
#[tokio::test(start_paused = true)]
async fn pin_a_timeout_around_run_behind_a_running_job() {
    for pool in plain_pools(1, 1) {
        let t0 = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        pool.submit_stamped(t0, &starts, 5).await;
        let got = tokio::time::timeout(Duration::from_millis(10), pool.run_sleeping(3)).await;
        assert_eq!(
            got.ok(),
            Some(7),
            "{}: `run` of a job ready at 5 ms and done at 8 ms timed out at {} ms",
            pool.name(),
            ms_since(t0)
        );
        assert_eq!(ms_since(t0), 8, "{}", pool.name());
    }
}

/// `shutdown_timeout(3 s)` of a pool of one slot with two jobs of 1 s each (NoQueue, with
/// no queue: one job of 2 s): it returns when they are done (2 s), none abandoned; with a
/// deadline of 1.5 s it returns at 1.5 s with the job running then abandoned.
///
/// Pinned: so in all three pools.
#[tokio::test(start_paused = true)]
async fn pin_shutdown_timeout_under_paused_time_returns_at_the_right_moment() {
    for deadline in [3000u64, 1500] {
        for pool in plain_pools(1, 10) {
            let t0 = Instant::now();
            let starts = Arc::new(Mutex::new(Vec::new()));
            let want = if let Pool::NoQueue(_) = &pool {
                pool.submit_stamped(t0, &starts, 2000).await;
                if deadline == 3000 {
                    (1, 0, 2000)
                } else {
                    (0, 1, 1500)
                }
            } else {
                pool.submit_stamped(t0, &starts, 1000).await;
                pool.submit_stamped(t0, &starts, 1000).await;
                if deadline == 3000 {
                    (2, 0, 2000)
                } else {
                    (1, 1, 1500)
                }
            };
            let report = within(
                "shutdown_timeout",
                pool.shutdown_timeout(Duration::from_millis(deadline)),
            )
            .await;
            assert_eq!(
                (report.finished(), report.abandoned(), ms_since(t0)),
                want,
                "{} (deadline {deadline} ms): finished, abandoned, returned at (ms)",
                pool.name()
            );
        }
    }
}

/// `SmartAioPoolBuilder::idle_timeout`: workers idle for `idle_timeout` are retired,
/// never below `min_workers`. With `tokio::time::advance` (not `sleep`): 8 jobs of 1 s end
/// at 1 s; `advance(5 s - 1 ms)` keeps 8 workers, `advance(1 ms)` more retires down to 2.
///
/// Pinned.
#[tokio::test(start_paused = true)]
async fn pin_elastic_workers_retire_at_exactly_idle_timeout_with_advance() {
    let pool = SmartAioPool::builder()
        .max_concurrency(8)
        .min_workers(2)
        .idle_timeout(Duration::from_secs(5))
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let mut handles = Vec::new();
    for _ in 0..8 {
        handles.push(
            pool.submit(|| tokio::time::sleep(Duration::from_secs(1)))
                .await
                .unwrap(),
        );
    }
    for h in handles {
        h.await.unwrap();
    }
    tokio::task::yield_now().await;
    assert_eq!(pool.worker_count(), 8);
    tokio::time::advance(Duration::from_secs(5) - MS).await;
    assert_eq!(
        pool.worker_count(),
        8,
        "workers retired before their idle timeout"
    );
    tokio::time::advance(MS).await;
    assert_eq!(
        pool.worker_count(),
        2,
        "workers not retired at their idle timeout"
    );
}

/// A paused test that uses a pool and then sleeps an hour should take no real time: the
/// pool leaves no timer that fires again and again (each firing would stop the
/// auto-advance) and no task that keeps the runtime busy. Measured: the number of times
/// the runtime parks is not observable, so real time stands for it: under 2 s.
///
/// Pinned: each pool, each of its timed features used, then an hour of paused sleep, in
/// well under a second.
#[test]
fn pin_an_hour_of_paused_sleep_after_using_a_pool_takes_no_real_time() {
    on_thread_within("an hour of paused time after using the pools", 20, || {
        let rt = paused_runtime();
        rt.block_on(async {
            let t0 = Instant::now();
            let starts = Arc::new(Mutex::new(Vec::new()));
            let mut keep = Vec::new();
            for pool in rate_pools(2, 4, 1, Duration::from_millis(10)) {
                for _ in 0..3 {
                    pool.submit_stamped(t0, &starts, 1).await;
                }
                keep.push(pool);
            }
            let smart = SmartAioPool::builder()
                .max_concurrency(4)
                .idle_timeout(Duration::from_millis(3))
                .process_wide(false)
                .auto_shutdown(false)
                .build();
            for _ in 0..4 {
                smart
                    .submit(|| tokio::time::sleep(Duration::from_millis(2)))
                    .await
                    .unwrap()
                    .detach();
            }
            let real = std::time::Instant::now();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let took = real.elapsed();
            assert!(
                took < Duration::from_secs(2),
                "an hour of paused sleep after using the pools took {took:?} of real time"
            );
            assert_eq!(starts.lock().unwrap().len(), 9, "not every job started");
            drop(keep);
        });
    });
}

/// `tokio::time::timeout(250 ms, group.join_all())` on a pool of 2 slots with 4 jobs of
/// 100 ms: done at 200 ms; a `map_unordered` of the same under `timeout` likewise; and
/// `batch_run`.
///
/// Pinned: in all three pools.
#[tokio::test(start_paused = true)]
async fn pin_groups_streams_and_batch_run_under_a_timeout_end_when_their_jobs_do() {
    for pool in plain_pools(2, 10) {
        let t0 = Instant::now();
        let job = || async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            1u32
        };
        // Group.
        let sum: u32 = per_pool!(
            &pool,
            |p| {
                let mut g = p.group();
                for _ in 0..4 {
                    g.submit(job()).await.unwrap();
                }
                tokio::time::timeout(Duration::from_millis(250), g.join_all())
                    .await
                    .expect("group join_all timed out")
                    .into_iter()
                    .map(|r| r.unwrap())
                    .sum()
            },
            |p| {
                let mut g = p.group();
                for _ in 0..4 {
                    g.submit(job).await.unwrap();
                }
                tokio::time::timeout(Duration::from_millis(250), g.join_all())
                    .await
                    .expect("group join_all timed out")
                    .into_iter()
                    .map(|r| r.unwrap())
                    .sum()
            }
        );
        assert_eq!((sum, ms_since(t0)), (4, 200), "{}: group", pool.name());
        // Stream.
        let t0 = Instant::now();
        let stream = pool.unordered(futures_util::stream::iter(0..4u32), move |_| job());
        let got: Vec<u32> = tokio::time::timeout(
            Duration::from_millis(250),
            stream.map(|r| r.unwrap()).collect::<Vec<_>>(),
        )
        .await
        .expect("map_unordered timed out");
        assert_eq!(
            (got.len(), ms_since(t0)),
            (4, 200),
            "{}: stream",
            pool.name()
        );
        // batch_run.
        let t0 = Instant::now();
        let n = per_pool!(
            &pool,
            |p| tokio::time::timeout(
                Duration::from_millis(250),
                p.batch_run((0..4).map(|_| job()))
            )
            .await
            .expect("batch_run timed out")
            .unwrap()
            .len(),
            |p| tokio::time::timeout(Duration::from_millis(250), p.batch_run((0..4).map(|_| job)))
                .await
                .expect("batch_run timed out")
                .unwrap()
                .len()
        );
        assert_eq!((n, ms_since(t0)), (4, 200), "{}: batch_run", pool.name());
    }
}

/// `tokio::time::pause()` midway: a real-time current-thread runtime, a pool with
/// `rate_limit(1, 1 s)`, one job started on the real clock, then `pause()`, then a second
/// job: it should start exactly one window after the first (auto-advance), not earlier
/// and not an hour later.
///
/// Pinned: in all three pools.
#[test]
fn pin_pause_midway_keeps_the_rate_window_exact() {
    for which in 0..3 {
        on_thread_within("pause midway", 20, move || {
            let rt = support::current_thread();
            rt.block_on(async {
                let pool = rate_pools(4, 10, 1, Duration::from_secs(1)).swap_remove(which);
                let first = Arc::new(Mutex::new(None));
                let f = Arc::clone(&first);
                // The stamp is taken when the job runs (a CommonAioPool's future is
                // made at the submit).
                let mark = move || {
                    let f = Arc::clone(&f);
                    async move {
                        *f.lock().unwrap() = Some(Instant::now());
                    }
                };
                per_pool!(&pool, |p| p.run(mark()).await.unwrap(), |p| p
                    .run(mark)
                    .await
                    .unwrap());
                let first = first.lock().unwrap().unwrap();
                tokio::time::pause();
                let second = Arc::new(Mutex::new(None));
                let s = Arc::clone(&second);
                let mark = move || {
                    let s = Arc::clone(&s);
                    async move {
                        *s.lock().unwrap() = Some(Instant::now());
                    }
                };
                within("the second job", async {
                    per_pool!(&pool, |p| p.run(mark()).await.unwrap(), |p| p
                        .run(mark)
                        .await
                        .unwrap())
                })
                .await;
                let second = second.lock().unwrap().unwrap();
                let gap = second - first;
                assert!(
                    gap >= Duration::from_secs(1) && gap <= Duration::from_millis(1005),
                    "{}: after pause(), the second start came {gap:?} after the first (want 1 s)",
                    pool.name()
                );
            });
        });
    }
}

/// Finding: elastic workers of a pool shared by two paused runtimes (a `static` pool used
/// by two `#[tokio::test(start_paused = true)]`s, run one after the other here). The
/// first test's clock ran an hour ahead (it slept an hour) before its jobs ended. The
/// second test runs two jobs, then sleeps 6 s (idle timeout 5 s): every worker has been
/// idle for at least 6 s of its clock, and `SmartAioPoolBuilder::idle_timeout` says
/// "How long a worker beyond `min_workers` may stay idle before it retires", so
/// `worker_count()` should be `min_workers` (1). The README ("How jobs run") says paused
/// tests should have pools of their own for waiting for room; for a rate window the pool
/// takes a clock ahead as the later of the reader's and the real clock (finding 272),
/// which the idle stamps did not.
///
/// Failed before the fix: "workers idle 6 s of this test's clock (idle timeout 5 s) not
/// retired: a paused clock of another test that ran an hour ahead holds them" (left: 4,
/// right: 1). They would have retired only an hour later.
#[test]
fn elastic_workers_of_a_pool_shared_with_a_paused_clock_ahead_retire_on_time() {
    let pool = SmartAioPool::builder()
        .max_concurrency(4)
        .min_workers(1)
        .idle_timeout(Duration::from_secs(5))
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let p = pool.clone();
    on_thread_within("the first paused test", 20, move || {
        paused_runtime().block_on(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let hs: Vec<_> = futures_util::future::join_all(
                (0..4).map(|_| p.submit(|| tokio::time::sleep(Duration::from_millis(10)))),
            )
            .await;
            for h in hs {
                h.unwrap().await.unwrap();
            }
            assert_eq!(p.worker_count(), 4);
        })
    });
    let p = pool.clone();
    on_thread_within("the second paused test", 20, move || {
        paused_runtime().block_on(async {
            for _ in 0..2 {
                p.run(|| tokio::time::sleep(Duration::from_millis(10)))
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_secs(6)).await;
            assert_eq!(
                p.worker_count(),
                1,
                "workers idle 6 s of this test's clock (idle timeout 5 s) not retired: \
                 a paused clock of another test that ran an hour ahead holds them"
            );
        })
    });
}

/// A job of a pool of one slot (and room in the queue) submits a child and awaits it
/// under `tokio::time::timeout(1 s, ..)`: the crate docs ("Guarantees"): "when every slot
/// waits for tasks of its own pool ... one wait is broken with
/// `CancelReason::WouldDeadlock` instead of hanging". Under paused time the user expects
/// that error, not the timeout that auto-advance would fire at 1 s.
///
/// Pinned: the child's handle resolves with `WouldDeadlock` at 0 ms, before the timeout.
#[tokio::test(start_paused = true)]
async fn pin_a_nested_wait_in_a_full_pool_is_broken_before_a_paused_timeout_fires() {
    for pool in plain_pools(1, 4) {
        if matches!(pool, Pool::NoQueue(_)) {
            continue; // no queue: the child's submit itself is refused (WouldDeadlock)
        }
        let t0 = Instant::now();
        let outcome: Result<Result<u32, String>, ()> = per_pool!(
            &pool,
            |p| {
                let inner = p.clone();
                p.run(async move {
                    let child = inner.submit(async { 1u32 }).await.unwrap();
                    match tokio::time::timeout(Duration::from_secs(1), child).await {
                        Ok(r) => Ok(r.map_err(|e| e.to_string())),
                        Err(_) => Err(()),
                    }
                })
                .await
                .unwrap()
            },
            |p| {
                let inner = p.clone();
                p.run(move || {
                    let inner = inner.clone();
                    async move {
                        let child = inner.submit(|| async { 1u32 }).await.unwrap();
                        match tokio::time::timeout(Duration::from_secs(1), child).await {
                            Ok(r) => Ok(r.map_err(|e| e.to_string())),
                            Err(_) => Err(()),
                        }
                    }
                })
                .await
                .unwrap()
            }
        );
        let at = ms_since(t0);
        match outcome {
            Ok(Err(msg)) => {
                assert!(
                    msg.contains("every slot of its pool waited"),
                    "{}: the child failed for another reason: {msg}",
                    pool.name()
                );
                assert_eq!(at, 0, "{}: broken late: {msg}", pool.name());
            }
            Ok(Ok(v)) => panic!(
                "{}: the child ran ({v}) while its parent held the only slot",
                pool.name()
            ),
            Err(()) => panic!(
                "{}: the nested wait was not broken: the paused timeout fired at {at} ms",
                pool.name()
            ),
        }
    }
}

// ----- more pins and the findings with other runtimes ---------------------------------

/// `shutdown_timeout(1.5 s)` of a pool whose rate window (1 per 10 s) holds two of three
/// jobs back: the deadline passes at 1.5 s (not at the window's 10 s, to which the clock
/// could jump): finished 1, abandoned 2, the held-back handles resolved as abandoned.
///
/// Pinned: in all three pools.
#[tokio::test(start_paused = true)]
async fn pin_shutdown_timeout_with_jobs_held_back_by_the_rate_window() {
    for pool in rate_pools(4, 10, 1, Duration::from_secs(10)) {
        let t0 = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for _ in 0..3 {
            let opts = SubmitOptions::new();
            handles.push(
                pool.submit_with_stamped(t0, &starts, 1000, opts)
                    .await
                    .unwrap(),
            );
        }
        let report = within(
            "shutdown_timeout",
            pool.shutdown_timeout(Duration::from_millis(1500)),
        )
        .await;
        assert_eq!(
            (report.finished(), report.abandoned(), ms_since(t0)),
            (1, 2, 1500),
            "{}: finished, abandoned, returned at (ms)",
            pool.name()
        );
        let mut outcomes = Vec::new();
        for h in handles {
            outcomes.push(match within("a handle", h).await {
                Ok(v) => format!("ok {v}"),
                Err(e) => format!("{e}"),
            });
        }
        eprintln!("{}: {outcomes:?}", pool.name());
        assert_eq!(outcomes[0], "ok 0", "{}", pool.name());
    }
}

/// `shutdown()` of a pool under `rate_limit(1, 1 s)` with three instant jobs: the runtime
/// auto-advances to each window; `shutdown` returns at 2 s, when the third has run.
///
/// Pinned: in all three pools.
#[tokio::test(start_paused = true)]
async fn pin_shutdown_of_a_rate_limited_pool_returns_when_the_last_window_lets_it_run() {
    for pool in rate_pools(4, 10, 1, Duration::from_secs(1)) {
        let t0 = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..3 {
            pool.submit_stamped(t0, &starts, 0).await;
        }
        per_pool!(&pool, |p| within("shutdown", p.shutdown()).await, |p| {
            within("shutdown", p.shutdown()).await
        });
        assert_eq!(
            ms_since(t0),
            2000,
            "{}: shutdown returned at another time",
            pool.name()
        );
        assert_eq!(
            *starts.lock().unwrap(),
            vec![0, 1000, 2000],
            "{}",
            pool.name()
        );
    }
}

/// `timeout(50 ms, group.join_next())` on jobs of 100 ms fails at 50 ms and the group goes
/// on (its docs: `join_next` is cancel safe): `join_next()` gives both jobs at 100 ms;
/// `timeout(10 ms, stream.next())` on a `map_ordered` likewise loses nothing.
///
/// Pinned: in all three pools.
#[tokio::test(start_paused = true)]
async fn pin_timeouts_around_join_next_and_stream_next_lose_nothing() {
    for pool in plain_pools(2, 10) {
        let t0 = Instant::now();
        let job = || async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            1u32
        };
        let n = per_pool!(
            &pool,
            |p| {
                let mut g = p.group();
                g.submit(job()).await.unwrap();
                g.submit(job()).await.unwrap();
                assert!(
                    tokio::time::timeout(Duration::from_millis(50), g.join_next())
                        .await
                        .is_err()
                );
                assert_eq!(ms_since(t0), 50);
                let mut n = 0;
                while let Some(r) = within("join_next", g.join_next()).await {
                    n += r.unwrap();
                }
                n
            },
            |p| {
                let mut g = p.group();
                g.submit(job).await.unwrap();
                g.submit(job).await.unwrap();
                assert!(
                    tokio::time::timeout(Duration::from_millis(50), g.join_next())
                        .await
                        .is_err()
                );
                assert_eq!(ms_since(t0), 50);
                let mut n = 0;
                while let Some(r) = within("join_next", g.join_next()).await {
                    n += r.unwrap();
                }
                n
            }
        );
        assert_eq!((n, ms_since(t0)), (2, 100), "{}: group", pool.name());
        let t0 = Instant::now();
        let mut stream = pool.ordered(futures_util::stream::iter(0..3u32), move |_| job());
        assert!(
            tokio::time::timeout(Duration::from_millis(10), stream.next())
                .await
                .is_err()
        );
        let mut got = 0;
        while let Some(r) = within("stream next", stream.next()).await {
            got += r.unwrap();
        }
        assert_eq!(
            (got, ms_since(t0)),
            (3, 200),
            "{}: map_ordered",
            pool.name()
        );
    }
}

/// A rate-limited pool shared by two paused tests one after the other (a `static` pool),
/// `rate_limit(1, 1 s)`: the first test's clock ran an hour ahead, it started one job and
/// ended with a second held back. The second test's two jobs start within about one
/// window of its clock (README: a start from a clock ahead "holds a real-time runtime for
/// at most one window"; a SmartAioPool runs the first test's held-back job first, FIFO),
/// one window apart, and the second test takes no real time.
///
/// Pinned: the first start at 1001 ms of the second test's clock (2001 ms for Smart): the
/// clock ahead's start counts as made at the real clock's now, 1 ms ahead of the paused
/// clock frozen when that runtime was built.
#[test]
fn pin_a_rate_limited_pool_shared_by_two_paused_tests_one_after_the_other() {
    for which in 0..3 {
        let pool = rate_pools(4, 10, 1, Duration::from_secs(1)).swap_remove(which);
        let p = pool.clone();
        on_thread_within("the first paused test", 20, move || {
            paused_runtime().block_on(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                let t0 = Instant::now();
                let starts = Arc::new(Mutex::new(Vec::new()));
                p.submit_stamped(t0, &starts, 0).await;
                p.submit_stamped(t0, &starts, 0).await;
                tokio::task::yield_now().await;
                // The test ends with its second job held back by the window.
            })
        });
        let p = pool.clone();
        on_thread_within("the second paused test", 20, move || {
            let real = std::time::Instant::now();
            paused_runtime().block_on(async {
                let t0 = Instant::now();
                let starts = Arc::new(Mutex::new(Vec::new()));
                p.submit_stamped(t0, &starts, 0).await;
                p.submit_stamped(t0, &starts, 0).await;
                within("the second test's jobs", p.wait()).await;
                let got = starts.lock().unwrap().clone();
                eprintln!("{}: second test's starts {got:?}", p.name());
                assert_eq!(got.len(), 2, "{}", p.name());
                // A SmartAioPool queues the first test's held-back job again, ahead of
                // these two (FIFO): it takes the window first.
                let first_by = if p.name() == "smart" { 2100 } else { 1100 };
                assert!(
                    got[0] <= first_by && got[1] - got[0] >= 1000,
                    "{}: the second test's jobs started at {got:?} ms of its clock",
                    p.name()
                );
            });
            assert!(
                real.elapsed() < Duration::from_secs(3),
                "{}: took {:?} of real time",
                pool.name(),
                real.elapsed()
            );
        });
    }
}

/// Finding: a rate-limited pool that also knows a live multi-thread runtime (a `static`
/// pool used by a `#[tokio::test(flavor = "multi_thread")]` while a paused test runs, as
/// `cargo test` runs them, in one process). The paused test's second job, held back by
/// `rate_limit(1, 1 s)`, should start one window (1 s of its clock) after its first (the
/// README: the window is "exact, tested with paused time"; a static pool "serves every
/// runtime that uses it (each `#[tokio::test]`, say)"), and a
/// `tokio::time::timeout(5 s, handle)` around it should not fire.
///
/// Failed before the fix: "common: the paused test's second job, due at 1 s of its clock,
/// was not done when its 5 s timeout fired (at 5000 ms): its rate timer was armed on the
/// multi-thread runtime" (left: None, right: Some(1000)). The timer went to the
/// multi-thread runtime (which runs timers undriven), the paused runtime had none of its
/// own, was idle, and auto-advanced to the test's timeout.
#[test]
fn a_paused_test_sharing_a_rate_limited_pool_with_a_multi_thread_runtime_starts_its_job_on_time() {
    for which in 0..3 {
        let m = support::multi_thread_of(2);
        let pool = m.block_on(async {
            let pool = rate_pools(4, 10, 1, Duration::from_millis(1000)).swap_remove(which);
            // The multi-thread test's job, long before (its start left the window).
            per_pool!(&pool, |p| p.run(async {}).await.unwrap(), |p| p
                .run(|| async {})
                .await
                .unwrap());
            pool
        });
        std::thread::sleep(Duration::from_millis(1100));
        let p = pool.clone();
        let got = on_thread_within("the paused test", 20, move || {
            paused_runtime().block_on(async {
                let t0 = Instant::now();
                let starts = Arc::new(Mutex::new(Vec::new()));
                let opts = SubmitOptions::new();
                let first = p
                    .submit_with_stamped(t0, &starts, 0, opts.clone())
                    .await
                    .unwrap();
                let second = p.submit_with_stamped(t0, &starts, 0, opts).await.unwrap();
                first.await.unwrap();
                let second = tokio::time::timeout(Duration::from_secs(5), second).await;
                (second.map(|r| r.unwrap()).ok(), ms_since(t0))
            })
        });
        assert_eq!(
            got.0,
            Some(1000),
            "{}: the paused test's second job, due at 1 s of its clock, was not done when its \
             5 s timeout fired (at {} ms): its rate timer was armed on the multi-thread runtime",
            pool.name(),
            got.1
        );
        drop(m);
    }
}

/// Finding: the same sharing, with the paused test's clock an hour ahead (it slept an
/// hour). The rate timer for its held-back job was armed on the multi-thread runtime at
/// the paused clock's time, an hour into the real clock's future; the multi-thread
/// runtime's own job, submitted after it, found a timer armed and waited for it. README
/// ("How jobs run"): a start from a clock ahead "holds a real-time runtime for at most
/// one window" (here 200 ms).
///
/// Failed before the fix: "common: the multi-thread runtime's job, behind a paused test's
/// held-back job whose clock ran an hour ahead, had not run after 2.001398833s (window
/// 200 ms)".
#[test]
fn a_paused_clock_ahead_does_not_hold_a_multi_thread_runtimes_jobs_for_an_hour() {
    for which in 0..3 {
        let m = support::multi_thread_of(2);
        let pool = m.block_on(async {
            let pool = rate_pools(4, 10, 1, Duration::from_millis(200)).swap_remove(which);
            per_pool!(&pool, |p| p.run(async {}).await.unwrap(), |p| p
                .run(|| async {})
                .await
                .unwrap());
            pool
        });
        std::thread::sleep(Duration::from_millis(300));
        let p = pool.clone();
        // The paused test: an hour ahead, two jobs, the second held back; it then ends
        // (its runtime dropped: the held-back job is cancelled, or, in a SmartAioPool,
        // queued again).
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let paused = std::thread::spawn(move || {
            paused_runtime().block_on(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                let t0 = Instant::now();
                let starts = Arc::new(Mutex::new(Vec::new()));
                p.submit_stamped(t0, &starts, 0).await;
                p.submit_stamped(t0, &starts, 0).await;
                tokio::task::yield_now().await;
                tx.send(()).unwrap();
                // Stays alive and driven (its clock held by the blocking task) until the
                // multi-thread runtime's job is over.
                tokio::task::spawn_blocking(move || done_rx.recv_timeout(Duration::from_secs(5)))
                    .await
                    .unwrap()
                    .ok();
            })
        });
        rx.recv().unwrap();
        let real = std::time::Instant::now();
        let done = m.block_on(async {
            let run = per_pool!(
                &pool,
                |p| Box::pin(async move { p.run(async {}).await.is_ok() })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>,
                |p| Box::pin(async move { p.run(|| async {}).await.is_ok() })
            );
            tokio::time::timeout(Duration::from_secs(2), run).await
        });
        let took = real.elapsed();
        let _ = done_tx.send(());
        paused.join().unwrap();
        assert!(
            matches!(done, Ok(true)),
            "{}: the multi-thread runtime's job, behind a paused test's held-back job whose clock \
             ran an hour ahead, had not run after {took:?} (window 200 ms)",
            pool.name()
        );
        drop(m);
    }
}

/// A `static` pool (`LazyLock`) used at once by two paused tests (two threads, each with
/// its `start_paused` runtime, as `cargo test` runs two `#[tokio::test(start_paused =
/// true)]`s), with room for both: each test's jobs run on its own runtime and clock (the
/// README: "a job runs on the runtime it was submitted from"), so each sees its jobs of
/// 100, 200 and 300 ms end at exactly 100, 200 and 300 ms of its clock.
///
/// Pinned: for the three pools.
#[test]
fn pin_a_static_pool_used_at_once_by_two_paused_tests_keeps_each_tests_clock() {
    static POOLS: std::sync::LazyLock<Vec<Pool>> =
        std::sync::LazyLock::new(|| plain_pools(16, 100));
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let tests: Vec<_> = (0..2)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                paused_runtime().block_on(async {
                    barrier.wait();
                    for pool in POOLS.iter() {
                        let t0 = Instant::now();
                        let ends = Arc::new(Mutex::new(Vec::new()));
                        let mut all = Vec::new();
                        for ms in [300u64, 100, 200] {
                            let ends = Arc::clone(&ends);
                            let job = move || {
                                let ends = Arc::clone(&ends);
                                async move {
                                    tokio::time::sleep(Duration::from_millis(ms)).await;
                                    ends.lock().unwrap().push(ms_since(t0));
                                }
                            };
                            all.push(per_pool!(pool, |p| p.submit(job()).await.unwrap(), |p| p
                                .submit(job)
                                .await
                                .unwrap()));
                        }
                        for h in all {
                            within("a job of the shared pool", h).await.unwrap();
                        }
                        assert_eq!(
                            *ends.lock().unwrap(),
                            vec![100, 200, 300],
                            "{}: the jobs of a paused test on a shared pool ended at other \
                             times of its clock",
                            pool.name()
                        );
                    }
                })
            })
        })
        .collect();
    for t in tests {
        t.join().unwrap();
    }
}
