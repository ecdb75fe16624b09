//! The batch APIs of the three pools (`batch_submit`, `batch_run`) as a user
//! feeds them: endless and slow iterators, iterators that panic midway, futures and
//! recipes that panic, a rejection by a shutdown from another task, a batch inside a job
//! of its own pool, flow control with the pool's defaults, and `stats()` against the
//! results returned. Pools here are the tests' own (`process_wide(false)`, and no exit
//! take-over for SmartAioPool). A helper's review, 2026-12-06 (RELIABILITY.md, 366–367).

mod support;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nb_aiopool::{NoQueueAioPool, SmartAioPool, SubmitErrorKind};
use support::{per_pool, within, Pool};

/// Panics these tests raise on purpose (kept off stderr).
const QUIET: &[&str] = &["iterator broke", "job broke", "recipe broke"];

/// The three pools with `c` slots and `q` places in the queue (NoQueueAioPool has none),
/// each with how many tasks it holds at once.
fn pools(c: usize, q: usize) -> Vec<(Pool, usize)> {
    let pools = support::local_pools(c, q).into_iter();
    pools
        .map(|p| {
            let held = if matches!(p, Pool::NoQueue(_)) {
                c
            } else {
                c + q
            };
            (p, held)
        })
        .collect()
}

async fn wait(pool: &Pool) {
    per_pool!(pool, |p| p.wait().await, |p| p.wait().await)
}

fn api(run: bool) -> &'static str {
    if run {
        "batch_run"
    } else {
        "batch_submit"
    }
}

/// A future's outcome, or the message of the panic its poll raised.
struct Caught<F>(Pin<Box<F>>);

impl<F: Future> Future for Caught<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(move || fut.poll(cx))) {
            Ok(p) => p.map(Ok),
            Err(payload) => Poll::Ready(Err(support::panic_message(&*payload))),
        }
    }
}

fn caught<F: Future>(fut: F) -> Caught<F> {
    Caught(Box::pin(fut))
}

/// The user feeds a batch an endless source of jobs (`std::iter::repeat_with`, whose
/// `size_hint` is `(usize::MAX, None)`) and lets a `tokio::time::timeout` end it: the docs
/// promise "the same backpressure as `submit`" and, for `batch_submit`, "dropping the
/// future part-way leaves the futures already submitted running, detached, and drops the
/// others". Expected: the timeout fires with the pool full, the iterator pulled once per
/// place plus the one waiting for room.
///
/// Before the fix, every pool's `batch_submit` panicked at its first poll:
/// `... batch_submit of an endless iterator under a 1 s timeout should have waited for room
/// until the timeout, but: Err("capacity overflow")` (it sized its vector of handles by
/// the iterator's lower bound, src/pool/core.rs, `batch_submit`). `batch_run` passed.
#[test]
fn an_endless_iterator_under_a_timeout_is_submitted_as_room_comes() {
    support::paused_runtime().block_on(async {
        for run in [false, true] {
            for (pool, holds) in pools(2, 2) {
                let pulled = Arc::new(AtomicUsize::new(0));
                let p2 = pulled.clone();
                let limit = Duration::from_secs(1);
                let outcome: Result<bool, String> = per_pool!(
                    &pool,
                    |p| {
                        let jobs = std::iter::repeat_with(move || {
                            p2.fetch_add(1, Ordering::SeqCst);
                            std::future::pending::<()>()
                        });
                        if run {
                            caught(tokio::time::timeout(limit, p.batch_run(jobs)))
                                .await
                                .map(|r| r.is_err())
                        } else {
                            caught(tokio::time::timeout(limit, p.batch_submit(jobs)))
                                .await
                                .map(|r| r.is_err())
                        }
                    },
                    |p| {
                        let jobs = std::iter::repeat_with(move || {
                            p2.fetch_add(1, Ordering::SeqCst);
                            std::future::pending::<()>
                        });
                        if run {
                            caught(tokio::time::timeout(limit, p.batch_run(jobs)))
                                .await
                                .map(|r| r.is_err())
                        } else {
                            caught(tokio::time::timeout(limit, p.batch_submit(jobs)))
                                .await
                                .map(|r| r.is_err())
                        }
                    }
                );
                let what = format!("{} {}", pool.name(), api(run));
                assert_eq!(
                    outcome,
                    Ok(true),
                    "{what} of an endless iterator under a 1 s timeout should have waited for \
                     room until the timeout, but: {outcome:?}"
                );
                assert_eq!(
                    pulled.load(Ordering::SeqCst),
                    holds + 1,
                    "{what}: the iterator was not pulled once per place in the pool plus the \
                     one waiting for room"
                );
                assert_eq!(
                    pool.stats().submitted,
                    holds as u64,
                    "{what}: the pool did not take exactly as many jobs as it has room for"
                );
                within("cancel_all", pool.cancel_all_now()).await;
            }
        }
    });
}

/// Pinned: a lazy iterator whose jobs take a while is pulled only as room comes: at any
/// moment, the items pulled are at most the jobs finished, plus the pool's room, plus the
/// one item waiting for room ("the same backpressure as `submit`").
#[test]
fn pin_a_lazy_iterator_is_pulled_only_as_room_comes() {
    support::paused_runtime().block_on(async {
        for run in [false, true] {
            for (pool, holds) in pools(1, 1) {
                let pulled = Arc::new(AtomicUsize::new(0));
                let over = Arc::new(AtomicUsize::new(0));
                let stop = Arc::new(AtomicBool::new(false));
                let n = 8;
                let watch = {
                    let (pulled, over, stop, pool) =
                        (pulled.clone(), over.clone(), stop.clone(), pool.clone());
                    async move {
                        while !stop.load(Ordering::SeqCst) {
                            let s = pool.stats();
                            let ahead = pulled.load(Ordering::SeqCst) as u64 - s.completed;
                            over.fetch_max(ahead as usize, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                };
                let p2 = pulled.clone();
                let pull = move |i: u64| {
                    p2.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        i
                    }
                };
                let batch = async {
                    let got: Vec<u64> = per_pool!(
                        &pool,
                        |p| {
                            let jobs = (0..n).map(pull);
                            if run {
                                p.batch_run(jobs)
                                    .await
                                    .ok()
                                    .unwrap()
                                    .into_iter()
                                    .map(Result::unwrap)
                                    .collect()
                            } else {
                                let mut out = Vec::new();
                                for h in p.batch_submit(jobs).await.ok().unwrap() {
                                    out.push(h.await.unwrap());
                                }
                                out
                            }
                        },
                        |p| {
                            let jobs = (0..n).map(move |i| {
                                let fut = pull(i);
                                let fut = std::sync::Mutex::new(Some(fut));
                                move || fut.lock().unwrap().take().unwrap()
                            });
                            if run {
                                p.batch_run(jobs)
                                    .await
                                    .ok()
                                    .unwrap()
                                    .into_iter()
                                    .map(Result::unwrap)
                                    .collect()
                            } else {
                                let mut out = Vec::new();
                                for h in p.batch_submit(jobs).await.ok().unwrap() {
                                    out.push(h.await.unwrap());
                                }
                                out
                            }
                        }
                    );
                    stop.store(true, Ordering::SeqCst);
                    got
                };
                let (got, ()) = within("the batch", async { tokio::join!(batch, watch) }).await;
                let what = format!("{} {}", pool.name(), api(run));
                assert_eq!(
                    got,
                    (0..n).collect::<Vec<_>>(),
                    "{what}: results out of order"
                );
                assert!(
                    over.load(Ordering::SeqCst) <= holds + 1,
                    "{what}: {} items were pulled ahead of the finished jobs, more than the \
                     pool's room ({holds}) plus the one waiting",
                    over.load(Ordering::SeqCst)
                );
            }
        }
    });
}

/// Pinned: an iterator that panics midway (after three jobs were submitted). The panic
/// reaches the caller of the batch (the library catches nothing). What happens to the
/// three jobs follows the documented drop of each future part-way: `batch_submit`'s
/// "leaves the futures already submitted running, detached" (they finish), `batch_run`'s
/// "aborts every job it submitted that has not finished" (none finishes).
#[test]
fn pin_an_iterator_that_panics_midway() {
    support::hide_panics(QUIET);
    support::paused_runtime().block_on(async {
        for run in [false, true] {
            for (pool, _) in pools(4, 2) {
                let done = Arc::new(AtomicUsize::new(0));
                let d = done.clone();
                let job = move |i: u32| {
                    if i == 3 {
                        panic!("iterator broke");
                    }
                    let d = d.clone();
                    async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        d.fetch_add(1, Ordering::SeqCst);
                    }
                };
                let outcome: Result<(), String> = per_pool!(
                    &pool,
                    |p| {
                        let jobs = (0..6).map(job);
                        if run {
                            caught(p.batch_run(jobs)).await.map(|_| ())
                        } else {
                            caught(p.batch_submit(jobs)).await.map(|_| ())
                        }
                    },
                    |p| {
                        let jobs = (0..6).map(move |i| {
                            let fut = std::sync::Mutex::new(Some(job(i)));
                            move || fut.lock().unwrap().take().unwrap()
                        });
                        if run {
                            caught(p.batch_run(jobs)).await.map(|_| ())
                        } else {
                            caught(p.batch_submit(jobs)).await.map(|_| ())
                        }
                    }
                );
                let what = format!("{} {}", pool.name(), api(run));
                assert_eq!(
                    outcome,
                    Err("iterator broke".to_string()),
                    "{what}: the iterator's panic did not reach the caller"
                );
                within("the pool's wait", wait(&pool)).await;
                let s = pool.stats();
                assert_eq!(s.submitted, 3, "{what}: {s}");
                if run {
                    assert_eq!(
                        done.load(Ordering::SeqCst),
                        0,
                        "{what}: jobs of a batch_run unwound by its iterator's panic ran on"
                    );
                    assert_eq!(s.cancelled, 3, "{what}: {s}");
                } else {
                    assert_eq!(
                        done.load(Ordering::SeqCst),
                        3,
                        "{what}: jobs submitted before the iterator's panic did not run on, \
                         detached"
                    );
                    assert_eq!(s.completed, 3, "{what}: {s}");
                }
            }
        }
    });
}

/// Pinned: a batch inside a job of its own pool, with room for only part of it: the
/// README's "a job that submits into its own full pool ... gets an error rather than a
/// deadlock". The batch stops with `WouldDeadlock` at the first item the pool has no room
/// for, hands that item back, and the items before it run, detached (as documented for a
/// rejection).
#[test]
fn pin_a_batch_inside_a_job_of_its_own_pool_stops_at_the_first_item_without_room() {
    support::current_thread().block_on(async {
        for run in [false, true] {
            for (pool, holds) in pools(2, 1) {
                let done = Arc::new(AtomicUsize::new(0));
                let d = done.clone();
                let job = move |i: u32| {
                    let d = d.clone();
                    async move {
                        d.fetch_add(1, Ordering::SeqCst);
                        i
                    }
                };
                let (kind, back): (SubmitErrorKind, u32) = per_pool!(
                    &pool,
                    |p| {
                        let inner = p.clone();
                        let outer = p
                            .submit(async move {
                                let jobs = (0..4).map(job);
                                let e = if run {
                                    inner.batch_run(jobs).await.err().unwrap()
                                } else {
                                    inner.batch_submit(jobs).await.err().unwrap()
                                };
                                (e.kind(), e.into_inner().await)
                            })
                            .await
                            .unwrap();
                        within("the outer job", outer).await.unwrap()
                    },
                    |p| {
                        let inner = p.clone();
                        let outer = p
                            .submit(move || {
                                let inner = inner.clone();
                                let job = job.clone();
                                async move {
                                    let jobs = (0..4).map(move |i| {
                                        let job = job.clone();
                                        move || job(i)
                                    });
                                    let e = if run {
                                        inner.batch_run(jobs).await.err().unwrap()
                                    } else {
                                        inner.batch_submit(jobs).await.err().unwrap()
                                    };
                                    (e.kind(), e.into_inner()().await)
                                }
                            })
                            .await
                            .unwrap();
                        within("the outer job", outer).await.unwrap()
                    }
                );
                let what = format!("{} {}", pool.name(), api(run));
                assert_eq!(kind, SubmitErrorKind::WouldDeadlock, "{what}");
                // The outer job holds one place.
                let room = holds - 1;
                assert_eq!(
                    back, room as u32,
                    "{what}: the item handed back is not the first the pool had no room for"
                );
                within("the pool's wait", wait(&pool)).await;
                // The handed-back item was run by the outer job itself.
                assert_eq!(
                    done.load(Ordering::SeqCst),
                    room + 1,
                    "{what}: the items submitted before the refusal did not run, detached"
                );
                assert_eq!(pool.stats().completed, room as u64 + 1, "{what}");
            }
        }
    });
}

/// Pinned: a batch waiting for room when another task shuts the pool down: it stops with
/// `Closed`, hands back the item that was waiting (not another), pulls no more of the
/// iterator, and the jobs before it run to their end (the shutdown waits for them).
#[test]
fn pin_a_batch_refused_by_a_shutdown_from_another_task_hands_back_the_waiting_item() {
    support::paused_runtime().block_on(async {
        for run in [false, true] {
            for (pool, holds) in pools(1, 1) {
                let done = Arc::new(AtomicUsize::new(0));
                let pulled = Arc::new(AtomicUsize::new(0));
                let (d, p2) = (done.clone(), pulled.clone());
                let job = move |i: u32| {
                    p2.fetch_add(1, Ordering::SeqCst);
                    let d = d.clone();
                    async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        d.fetch_add(1, Ordering::SeqCst);
                        i
                    }
                };
                let closer = async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    per_pool!(&pool, |p| p.shutdown().await, |p| p.shutdown().await);
                };
                let batch = async {
                    per_pool!(
                        &pool,
                        |p| {
                            let jobs = (0..5).map(job);
                            let e = if run {
                                p.batch_run(jobs).await.err().unwrap()
                            } else {
                                p.batch_submit(jobs).await.err().unwrap()
                            };
                            (e.kind(), e.into_inner().await)
                        },
                        |p| {
                            let jobs = (0..5).map(move |i| {
                                let fut = std::sync::Mutex::new(Some(job(i)));
                                move || fut.lock().unwrap().take().unwrap()
                            });
                            let e = if run {
                                p.batch_run(jobs).await.err().unwrap()
                            } else {
                                p.batch_submit(jobs).await.err().unwrap()
                            };
                            (e.kind(), e.into_inner()().await)
                        }
                    )
                };
                let ((kind, back), ()) = within("the batch and the shutdown", async {
                    tokio::join!(batch, closer)
                })
                .await;
                let what = format!("{} {}", pool.name(), api(run));
                assert_eq!(kind, SubmitErrorKind::Closed, "{what}");
                assert_eq!(back, holds as u32, "{what}: the wrong item was handed back");
                assert_eq!(
                    pulled.load(Ordering::SeqCst),
                    holds + 1,
                    "{what}: the iterator was pulled past the refused item"
                );
                // The handed-back item ran once more, by the test.
                assert_eq!(
                    done.load(Ordering::SeqCst),
                    holds + 1,
                    "{what}: the jobs accepted before the refusal did not run to their end"
                );
                let s = pool.stats();
                assert_eq!(
                    (s.submitted, s.completed),
                    (holds as u64, holds as u64),
                    "{what}: {s}"
                );
            }
        }
    });
}

/// Pinned: `batch_run` with jobs that panic (a future when polled, a SmartAioPool recipe
/// when called): the results say which panicked, in input order, and `stats()` agrees
/// with them the moment `batch_run` returns ("once a handle has resolved, its task is
/// counted").
#[test]
fn pin_stats_agree_with_a_batch_run_whose_jobs_panic() {
    support::hide_panics(QUIET);
    support::current_thread().block_on(async {
        for (pool, _) in pools(2, 8) {
            let results: Vec<Result<u32, bool>> = per_pool!(
                &pool,
                |p| {
                    let jobs = (0..6u32).map(|i| async move {
                        tokio::task::yield_now().await;
                        if i == 1 || i == 4 {
                            panic!("job broke");
                        }
                        i
                    });
                    within("batch_run", p.batch_run(jobs))
                        .await
                        .ok()
                        .unwrap()
                        .into_iter()
                        .map(|r| r.map_err(|e| e.is_panic()))
                        .collect()
                },
                |p| {
                    let jobs = (0..6u32).map(|i| {
                        move || {
                            if i == 1 {
                                panic!("recipe broke");
                            }
                            async move {
                                tokio::task::yield_now().await;
                                if i == 4 {
                                    panic!("job broke");
                                }
                                i
                            }
                        }
                    });
                    within("batch_run", p.batch_run(jobs))
                        .await
                        .ok()
                        .unwrap()
                        .into_iter()
                        .map(|r| r.map_err(|e| e.is_panic()))
                        .collect()
                }
            );
            let name = pool.name();
            assert_eq!(
                results,
                [Ok(0), Err(true), Ok(2), Ok(3), Err(true), Ok(5)],
                "{name}: batch_run's results do not say which jobs panicked"
            );
            let s = pool.stats();
            assert_eq!(
                (
                    s.submitted,
                    s.completed,
                    s.panicked,
                    s.cancelled,
                    s.queued,
                    s.running
                ),
                (6, 4, 2, 0, 0, 0),
                "{name}: stats() right after batch_run returned disagree with its results: {s}"
            );
        }
    });
}

/// Pinned: a batch on a pool with flow control (a rate window, a weight capacity of 1, a
/// per-key limit) submits its items with the pool's defaults (weight 1, no key, priority
/// 0): every item runs, one at a time (weight 1 of 1), two starts per second, results in
/// input order.
#[test]
fn pin_a_batch_on_a_flow_controlled_pool_runs_with_the_pools_defaults() {
    support::paused_runtime().block_on(async {
        let per = Duration::from_secs(1);
        let all = vec![
            Pool::Common(
                support::common_builder(4, 4)
                    .rate_limit(2, per)
                    .weight_capacity(1)
                    .max_per_key(1)
                    .build(),
            ),
            Pool::NoQueue(
                NoQueueAioPool::builder()
                    .max_concurrency(4)
                    .process_wide(false)
                    .rate_limit(2, per)
                    .weight_capacity(1)
                    .max_per_key(1)
                    .build(),
            ),
            Pool::Smart(
                SmartAioPool::builder()
                    .max_concurrency(4)
                    .max_queue_size(4)
                    .process_wide(false)
                    .auto_shutdown(false)
                    .rate_limit(2, per)
                    .weight_capacity(1)
                    .max_per_key(1)
                    .build(),
            ),
        ];
        for pool in all {
            for run in [false, true] {
                let gauge = support::Gauge::default();
                let start = tokio::time::Instant::now();
                let job = {
                    let gauge = gauge.clone();
                    move |i: u32| {
                        let gauge = gauge.clone();
                        async move {
                            let _in = gauge.enter();
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            i
                        }
                    }
                };
                let got: Vec<u32> = per_pool!(
                    &pool,
                    |p| {
                        let jobs = (0..6).map(job);
                        if run {
                            within("batch_run", p.batch_run(jobs))
                                .await
                                .ok()
                                .unwrap()
                                .into_iter()
                                .map(Result::unwrap)
                                .collect()
                        } else {
                            let mut out = Vec::new();
                            for h in within("batch_submit", p.batch_submit(jobs))
                                .await
                                .ok()
                                .unwrap()
                            {
                                out.push(within("a handle", h).await.unwrap());
                            }
                            out
                        }
                    },
                    |p| {
                        let jobs = (0..6).map(move |i| {
                            let job = job.clone();
                            move || job(i)
                        });
                        if run {
                            within("batch_run", p.batch_run(jobs))
                                .await
                                .ok()
                                .unwrap()
                                .into_iter()
                                .map(Result::unwrap)
                                .collect()
                        } else {
                            let mut out = Vec::new();
                            for h in within("batch_submit", p.batch_submit(jobs))
                                .await
                                .ok()
                                .unwrap()
                            {
                                out.push(within("a handle", h).await.unwrap());
                            }
                            out
                        }
                    }
                );
                let what = format!("{} {}", pool.name(), api(run));
                let took = start.elapsed();
                assert_eq!(got, [0, 1, 2, 3, 4, 5], "{what}");
                assert_eq!(
                    gauge.max(),
                    1,
                    "{what}: more than one job of weight 1 ran under a capacity of 1"
                );
                // Windows of two starts: 0 s, 1 s, 2 s (each job 10 ms, one at a time).
                assert!(
                    took >= Duration::from_secs(2) && took < Duration::from_secs(3),
                    "{what}: six starts at two per second took {took:?}"
                );
                // The next round starts with a fresh window.
                tokio::time::sleep(per * 2).await;
            }
        }
    });
}

/// Pinned: a `batch_run` on a pool whose rate window never ends (`rate_limit(1,
/// Duration::MAX)`), dropped by a `timeout`: the one job allowed ran, the two held back
/// are aborted ("dropping the future ... aborts every job it submitted that has not
/// finished") and leave the pool: `stats()` counts them cancelled, none queued, and the
/// pool's `wait()` returns (the README: tasks past the count "never start, so `wait()` ...
/// wait[s] for them for good (abort them ...)").
#[test]
fn pin_a_batch_run_dropped_on_a_never_ending_window_leaves_nothing_queued() {
    support::paused_runtime().block_on(async {
        let all = vec![
            Pool::Common(
                support::common_builder(2, 4)
                    .rate_limit(1, Duration::MAX)
                    .build(),
            ),
            Pool::NoQueue(
                NoQueueAioPool::builder()
                    .max_concurrency(4)
                    .process_wide(false)
                    .rate_limit(1, Duration::MAX)
                    .build(),
            ),
            Pool::Smart(
                SmartAioPool::builder()
                    .max_concurrency(2)
                    .max_queue_size(4)
                    .process_wide(false)
                    .auto_shutdown(false)
                    .rate_limit(1, Duration::MAX)
                    .build(),
            ),
        ];
        for pool in all {
            let limit = Duration::from_secs(1);
            let timed_out = per_pool!(
                &pool,
                |p| tokio::time::timeout(limit, p.batch_run((0..3u32).map(|i| async move { i })))
                    .await
                    .is_err(),
                |p| tokio::time::timeout(
                    limit,
                    p.batch_run((0..3u32).map(|i| move || async move { i }))
                )
                .await
                .is_err()
            );
            let name = pool.name();
            assert!(
                timed_out,
                "{name}: the batch_run ended though two jobs cannot start"
            );
            within(
                "the pool's wait after the batch_run was dropped",
                wait(&pool),
            )
            .await;
            let s = pool.stats();
            assert_eq!(
                (s.submitted, s.completed, s.cancelled, s.queued, s.running),
                (3, 1, 2, 0, 0),
                "{name}: after the batch_run was dropped: {s}"
            );
        }
    });
}

type BoxFut = Pin<Box<dyn Future<Output = u32> + Send>>;
type BoxRecipe = Box<dyn Fn() -> BoxFut + Send + Sync>;

/// The user runs a collector and three producers as one `batch_run`; the producers' sender
/// is cloned from one the iterator's `map` closure owns, so the collector ends once the
/// iterator and the three producers are done with the channel. Expected: as with
/// `batch_submit` (whose future drops the iterator when it returns) and a `for` loop over
/// a group's `submit`, the iterator, used up, is dropped before the batch waits for its
/// jobs; nothing in the docs says `batch_run` keeps it (only that "the rest of the
/// iterator is dropped" at a rejection), and the crate docs say "`batch_run` of many
/// large futures holds little beyond their results".
///
/// Before the fix, every pool's `batch_run` kept the used-up iterator (and, for a `Vec`,
/// its buffer of every item's bytes) until every job had ended: `timed out (30 s) waiting
/// for: common batch_run of a collector and three producers; the collector waits for the
/// sender the used-up iterator still holds` (src/pool/group/mod.rs, `batch_run`: `items`
/// lived across `join_all`). `batch_submit` passed.
#[test]
fn a_used_up_iterator_is_dropped_before_the_batch_waits_for_its_jobs() {
    support::paused_runtime().block_on(async {
        for run in [false, true] {
            for (pool, _) in pools(4, 4) {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
                let collector = async move {
                    let mut rx = rx;
                    let mut sum = 0;
                    while let Some(v) = rx.recv().await {
                        sum += v;
                    }
                    sum
                };
                let producer = move |tx: tokio::sync::mpsc::UnboundedSender<u32>, i: u32| async move {
                    tx.send(i).unwrap();
                    0u32
                };
                let what = format!(
                    "{} {} of a collector and three producers; the collector waits for the \
                     sender the used-up iterator still holds",
                    pool.name(),
                    api(run)
                );
                let got: Vec<u32> = per_pool!(
                    &pool,
                    |p| {
                        let jobs = std::iter::once(Box::pin(collector) as BoxFut).chain(
                            (1..=3).map(move |i| Box::pin(producer(tx.clone(), i)) as BoxFut),
                        );
                        if run {
                            within(&what, p.batch_run(jobs))
                                .await
                                .ok()
                                .unwrap()
                                .into_iter()
                                .map(Result::unwrap)
                                .collect()
                        } else {
                            let handles = within(&what, p.batch_submit(jobs)).await.ok().unwrap();
                            let mut out = Vec::new();
                            for h in handles {
                                out.push(within(&what, h).await.unwrap());
                            }
                            out
                        }
                    },
                    |p| {
                        let collector = std::sync::Mutex::new(Some(collector));
                        let first: BoxRecipe = Box::new(move || {
                            Box::pin(collector.lock().unwrap().take().expect("run once")) as BoxFut
                        });
                        let jobs = std::iter::once(first).chain((1..=3).map(move |i| {
                            let tx = tx.clone();
                            Box::new(move || Box::pin(producer(tx.clone(), i)) as BoxFut)
                                as BoxRecipe
                        }));
                        if run {
                            within(&what, p.batch_run(jobs))
                                .await
                                .ok()
                                .unwrap()
                                .into_iter()
                                .map(Result::unwrap)
                                .collect()
                        } else {
                            let handles = within(&what, p.batch_submit(jobs)).await.ok().unwrap();
                            let mut out = Vec::new();
                            for h in handles {
                                out.push(within(&what, h).await.unwrap());
                            }
                            out
                        }
                    }
                );
                assert_eq!(got, [6, 0, 0, 0], "{what}");
            }
        }
    });
}

/// A future that returns `i` after one yield and panics when dropped.
struct PanicsOnDrop(u32, bool);

impl Future for PanicsOnDrop {
    type Output = u32;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
        if self.1 {
            Poll::Ready(self.0)
        } else {
            self.1 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("job broke");
        }
    }
}

/// Pinned: `batch_run` of futures that panic when dropped. After they returned, each
/// result says `Panicked` (the run reports a panic in the future's `Drop` as the task's
/// panic: RELIABILITY.md, finding 20) and `stats()` agrees; a `batch_run` of such jobs
/// dropped by a `timeout` aborts them (their drops' panics stay in the pool: the
/// `timeout` returns `Elapsed`), and `stats()` counts them cancelled, none left.
#[test]
fn pin_batch_run_of_futures_that_panic_when_dropped() {
    support::hide_panics(QUIET);
    support::current_thread().block_on(async {
        for (pool, _) in pools(2, 4) {
            let name = pool.name();
            let got: Vec<String> = per_pool!(
                &pool,
                |p| within(
                    "batch_run",
                    p.batch_run((0..4).map(|i| PanicsOnDrop(i, false)))
                )
                .await
                .ok()
                .unwrap()
                .into_iter()
                .map(|r| format!("{r:?}"))
                .collect(),
                |p| within(
                    "batch_run",
                    p.batch_run((0..4).map(|i| move || PanicsOnDrop(i, false)))
                )
                .await
                .ok()
                .unwrap()
                .into_iter()
                .map(|r| format!("{r:?}"))
                .collect()
            );
            let s = pool.stats();
            assert_eq!(
                got,
                vec![r#"Err(Panicked("job broke"))"#.to_string(); 4],
                "{name}: jobs whose future panicked when dropped"
            );
            assert_eq!(
                (s.submitted, s.completed, s.panicked),
                (4, 0, 4),
                "{name}: {s}"
            );
            // Dropped by a timeout with two queued.
            let timed_out = per_pool!(
                &pool,
                |p| caught(tokio::time::timeout(
                    Duration::from_millis(50),
                    p.batch_run((0..6).map(|_| async {
                        let _d = PanicsOnDrop(0, false);
                        std::future::pending::<u32>().await
                    }))
                ))
                .await
                .map(|r| r.is_err()),
                |p| caught(tokio::time::timeout(
                    Duration::from_millis(50),
                    p.batch_run((0..6).map(|_| || async {
                        let _d = PanicsOnDrop(0, false);
                        std::future::pending::<u32>().await
                    }))
                ))
                .await
                .map(|r| r.is_err())
            );
            within("wait", wait(&pool)).await;
            assert_eq!(
                timed_out,
                Ok(true),
                "{name}: a batch_run of jobs that panic when dropped, dropped by a timeout"
            );
            let s = pool.stats();
            let taken = if name == "no_queue" { 2 } else { 6 };
            assert_eq!(
                (s.submitted, s.panicked, s.cancelled, s.queued, s.running),
                (4 + taken, 4, taken, 0, 0),
                "{name}: after the dropped batch_run: {s}"
            );
        }
    });
}

/// Pinned: a batch polled outside any runtime (`futures::executor::block_on`-style, on a
/// plain thread) on pools a live multi-thread runtime serves: its jobs run there (the
/// README: "from a plain thread, on the runtime the pool was created in or last used
/// from"), the batch waits for room as in async code, and the results come back in order.
#[test]
fn pin_a_batch_polled_on_a_plain_thread_runs_on_the_pools_runtime() {
    let rt = support::multi_thread_of(2);
    for run in [false, true] {
        for (pool, _) in rt.block_on(async { pools(1, 1) }) {
            // Used once from the runtime, so the pool knows it.
            rt.block_on(async {
                per_pool!(&pool, |p| p.run(async {}).await.ok().unwrap(), |p| p
                    .run(|| async {})
                    .await
                    .ok()
                    .unwrap())
            });
            let what = format!("{} {} on a plain thread", pool.name(), api(run));
            let p = pool.clone();
            let got: Vec<u32> = support::on_thread_within(&what.clone(), 20, move || {
                let job = |i: u32| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    i
                };
                support::plain_block_on(async {
                    per_pool!(
                        &p,
                        |p| {
                            if run {
                                p.batch_run((0..6).map(job))
                                    .await
                                    .ok()
                                    .unwrap()
                                    .into_iter()
                                    .map(Result::unwrap)
                                    .collect()
                            } else {
                                let mut out = Vec::new();
                                for h in p.batch_submit((0..6).map(job)).await.ok().unwrap() {
                                    out.push(h.await.unwrap());
                                }
                                out
                            }
                        },
                        |p| {
                            let jobs = (0..6).map(move |i| move || job(i));
                            if run {
                                p.batch_run(jobs)
                                    .await
                                    .ok()
                                    .unwrap()
                                    .into_iter()
                                    .map(Result::unwrap)
                                    .collect()
                            } else {
                                let mut out = Vec::new();
                                for h in p.batch_submit(jobs).await.ok().unwrap() {
                                    out.push(h.await.unwrap());
                                }
                                out
                            }
                        }
                    )
                })
            });
            assert_eq!(got, [0, 1, 2, 3, 4, 5], "{what}");
            let s = pool.stats();
            assert_eq!((s.completed, s.queued, s.running), (7, 0, 0), "{what}: {s}");
        }
    }
}

/// Pinned: a `batch_run` inside the only slot of its own pool, its jobs accepted into the
/// queue: the job would wait for jobs that need its slot. The README: "a job that ...
/// waits for its own pool's tasks while every slot does the same, gets an error rather
/// than a deadlock": the batch returns, each result `Cancelled(WouldDeadlock)`, none of
/// its jobs ran, and `stats()` counts them cancelled. (NoQueueAioPool, with no queue,
/// refuses the first submit instead: `WouldDeadlock`, the item handed back.)
#[test]
fn pin_a_batch_run_in_the_only_slot_of_its_own_pool_is_refused_not_hung() {
    support::current_thread().block_on(async {
        for (pool, _) in pools(1, 4) {
            let ran = Arc::new(AtomicUsize::new(0));
            let r = ran.clone();
            let job = move |i: u32| {
                let r = r.clone();
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    i
                }
            };
            let got: Result<Vec<String>, SubmitErrorKind> = per_pool!(
                &pool,
                |p| {
                    let inner = p.clone();
                    let outer = p
                        .submit(async move {
                            match inner.batch_run((0..2).map(job)).await {
                                Ok(rs) => Ok(rs.iter().map(|r| format!("{r:?}")).collect()),
                                Err(e) => Err(e.kind()),
                            }
                        })
                        .await
                        .unwrap();
                    within("the outer job", outer).await.unwrap()
                },
                |p| {
                    let inner = p.clone();
                    let outer = p
                        .submit(move || {
                            let inner = inner.clone();
                            let job = job.clone();
                            async move {
                                let jobs = (0..2).map(move |i| {
                                    let job = job.clone();
                                    move || job(i)
                                });
                                match inner.batch_run(jobs).await {
                                    Ok(rs) => Ok(rs.iter().map(|r| format!("{r:?}")).collect()),
                                    Err(e) => Err(e.kind()),
                                }
                            }
                        })
                        .await
                        .unwrap();
                    within("the outer job", outer).await.unwrap()
                }
            );
            within("the pool's wait", wait(&pool)).await;
            let name = pool.name();
            let s = pool.stats();
            assert_eq!(
                ran.load(Ordering::SeqCst),
                0,
                "{name}: a job of the refused batch ran"
            );
            if name == "no_queue" {
                assert_eq!(got, Err(SubmitErrorKind::WouldDeadlock), "{name}");
                assert_eq!((s.submitted, s.cancelled), (1, 0), "{name}: {s}");
            } else {
                let wd = "Err(Cancelled(WouldDeadlock))".to_string();
                assert_eq!(
                    got,
                    Ok(vec![wd.clone(), wd]),
                    "{name}: the batch's waits were not refused as a deadlock"
                );
                assert_eq!(
                    (s.submitted, s.completed, s.cancelled, s.queued, s.running),
                    (3, 1, 2, 0, 0),
                    "{name}: {s}"
                );
            }
        }
    });
}
