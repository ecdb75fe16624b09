//! The ways a user ends work (a helper's review, 2026-12-06) (`shutdown`, `shutdown_timeout`, `cancel_all`,
//! `wait`, the process-wide functions) across the three pools, on multi-thread runtimes:
//! called concurrently, with flow control holding tasks back, with streams and groups
//! feeding the pool, with `set_max_concurrency` racing them.

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use nb_aiopool::{
    CancelReason, CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitOptions, TaskHandle,
};
use support::{local_pools, multi_thread_of, on_thread_within, per_pool, within, Pool};

// ----- helpers ---------------------------------------------------------------------------

/// Sets a bit when dropped (a job's future, to see when the pool dropped it).
struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Pool {
    /// Submits the future `make()` makes (for SmartAioPool, `make` is the recipe).
    async fn put<F, M>(&self, make: M) -> TaskHandle<F::Output>
    where
        M: Fn() -> F + Send + Sync + 'static,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.put_with(make, SubmitOptions::new()).await
    }

    async fn put_with<F, M>(&self, make: M, opts: SubmitOptions) -> TaskHandle<F::Output>
    where
        M: Fn() -> F + Send + Sync + 'static,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let r = per_pool!(
            self,
            |p| p.submit_with(make(), opts).await.map_err(|e| e.kind()),
            |p| p.submit_with(make, opts).await.map_err(|e| e.kind())
        );
        match r {
            Ok(h) => h,
            Err(kind) => panic!(
                "{}: a submit to an open pool with room was refused: {kind:?}",
                self.name()
            ),
        }
    }

    fn shutdown(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        per_pool!(self, |p| Box::pin(p.shutdown()), |p| Box::pin(p.shutdown()))
    }

    fn wait(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        per_pool!(self, |p| Box::pin(p.wait()), |p| Box::pin(p.wait()))
    }

    fn cancel_all(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        per_pool!(self, |p| Box::pin(p.cancel_all()), |p| Box::pin(
            p.cancel_all()
        ))
    }

    fn is_closed(&self) -> bool {
        per_pool!(self, |p| p.is_closed(), |p| p.is_closed())
    }

    fn resize(&self, n: usize) {
        per_pool!(self, |p| p.set_max_concurrency(n), |p| p
            .set_max_concurrency(n))
    }
}

fn reason<T>(r: Result<T, nb_aiopool::TaskError>) -> Option<CancelReason> {
    match r {
        Ok(_) => None,
        Err(e) => e.cancel_reason(),
    }
}

// ----- tests -----------------------------------------------------------------------------

/// What the user does: on a multi-thread runtime, fills each pool with tasks that each sit
/// in a synchronous 30 ms call before their next `.await`, then calls `cancel_all()` from
/// two tasks at once.
///
/// What they expect: "Cancels every job queued or running now ... Returns once they are
/// all gone." Both calls return only once every task's future was dropped, and
/// `stats()` then shows nothing running.
///
/// Pinned: both calls return after the futures were dropped.
#[test]
fn two_concurrent_cancel_alls_both_return_after_every_future_is_gone() {
    let rt = multi_thread_of(4);
    rt.block_on(async {
        for pool in local_pools(2, 8) {
            let dropped = Arc::new(AtomicUsize::new(0));
            let started = Arc::new(AtomicUsize::new(0));
            let mut handles = Vec::new();
            for _ in 0..2 {
                let (d, s) = (dropped.clone(), started.clone());
                handles.push(
                    pool.put(move || {
                        let flag = DropFlag(d.clone());
                        let s = s.clone();
                        async move {
                            let _flag = flag;
                            s.fetch_add(1, Ordering::SeqCst);
                            loop {
                                std::thread::sleep(Duration::from_millis(30));
                                tokio::task::yield_now().await;
                            }
                        }
                    })
                    .await,
                );
            }
            support::reach(&started, 2, Duration::from_secs(10)).await;
            let a = tokio::spawn(pool.cancel_all());
            let b = tokio::spawn(pool.cancel_all());
            let (ra, rb) = within("two cancel_alls", async { (a.await, b.await) }).await;
            ra.unwrap();
            rb.unwrap();
            assert_eq!(
                dropped.load(Ordering::SeqCst),
                2,
                "{}: cancel_all() returned while a cancelled task's future was not dropped yet",
                pool.name()
            );
            let st = pool.stats();
            assert_eq!(
                (st.running, st.queued),
                (0, 0),
                "{}: after cancel_all() returned, stats still show tasks: {st:?}",
                pool.name()
            );
            for h in handles {
                assert_eq!(
                    reason(h.await),
                    Some(CancelReason::CancelAll),
                    "{}",
                    pool.name()
                );
            }
        }
    });
}

/// What the user does: two tasks call `shutdown()` at once while tasks that take 20 ms
/// each are queued and running, on a multi-thread runtime.
///
/// What they expect: "Idempotent: every caller, from any clone, waits for the same
/// drain." Neither call returns before every task has finished.
///
/// Pinned: both wait for the drain.
#[test]
fn a_second_concurrent_shutdown_waits_for_the_same_drain() {
    let rt = multi_thread_of(4);
    rt.block_on(async {
        for pool in local_pools(2, 8) {
            let done = Arc::new(AtomicUsize::new(0));
            let n = if matches!(pool, Pool::NoQueue(_)) {
                2
            } else {
                10
            };
            for _ in 0..n {
                let d = done.clone();
                pool.put(move || {
                    let d = d.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        d.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .await
                .detach();
            }
            let first = tokio::spawn(pool.shutdown());
            let second = pool.shutdown();
            within("the second shutdown", second).await;
            assert_eq!(
                done.load(Ordering::SeqCst),
                n,
                "{}: the second shutdown() returned before the first one's drain was over",
                pool.name()
            );
            within("the first shutdown", first).await.unwrap();
        }
    });
}

/// What the user does: a shutdown_timeout with a short deadline and one with a long one
/// overlap, with two tasks that never end.
///
/// What they expect (`ShutdownReport::abandoned`): "of two shutdowns overlapping, each
/// counts the tasks either one's deadline abandoned"; the handles say `Abandoned`.
///
/// Pinned.
#[test]
fn overlapping_shutdown_timeouts_each_count_what_either_abandoned() {
    let rt = multi_thread_of(2);
    rt.block_on(async {
        for pool in local_pools(2, 4) {
            let h1 = pool.put(std::future::pending::<()>).await;
            let h2 = pool.put(std::future::pending::<()>).await;
            let long = pool.shutdown_timeout(Duration::from_secs(20));
            let short = pool.shutdown_timeout(Duration::from_millis(50));
            let (rl, rs) =
                within("two shutdown_timeouts", async { tokio::join!(long, short) }).await;
            assert_eq!(rs.abandoned(), 2, "{}: short report {rs}", pool.name());
            assert_eq!(rl.abandoned(), 2, "{}: long report {rl}", pool.name());
            assert_eq!(
                reason(h1.await),
                Some(CancelReason::Abandoned),
                "{}",
                pool.name()
            );
            assert_eq!(
                reason(h2.await),
                Some(CancelReason::Abandoned),
                "{}",
                pool.name()
            );
        }
    });
}

/// What the user does: tasks held back by flow control (a key limit of 1: the second task
/// of the key waits behind the first, which never ends), then `shutdown_timeout`.
///
/// What they expect: at the deadline, "queued jobs are dropped without running, running
/// ones are dropped at their next `.await`, and their handles resolve to
/// `CancelReason::Abandoned`"; the report counts both.
#[test]
fn shutdown_timeout_abandons_tasks_held_back_by_a_key() {
    let rt = multi_thread_of(2);
    rt.block_on(async {
        for pool in [
            Pool::Common(
                CommonAioPool::builder()
                    .max_concurrency(4)
                    .max_queue_size(4)
                    .max_per_key(1)
                    .process_wide(false)
                    .build(),
            ),
            Pool::NoQueue(
                NoQueueAioPool::builder()
                    .max_concurrency(4)
                    .max_per_key(1)
                    .process_wide(false)
                    .build(),
            ),
            Pool::Smart(
                SmartAioPool::builder()
                    .max_concurrency(4)
                    .max_per_key(1)
                    .process_wide(false)
                    .auto_shutdown(false)
                    .build(),
            ),
        ] {
            let opts = || SubmitOptions::new().key("k");
            let running = pool.put_with(std::future::pending::<()>, opts()).await;
            let held = pool.put_with(|| async { 1 }, opts()).await;
            let report = within(
                "shutdown_timeout",
                pool.shutdown_timeout(Duration::from_millis(50)),
            )
            .await;
            assert_eq!(
                report.abandoned(),
                2,
                "{}: the report does not count the task held back by its key as abandoned: {report}",
                pool.name()
            );
            assert_eq!(reason(running.await), Some(CancelReason::Abandoned), "{}", pool.name());
            assert_eq!(
                reason(held.await),
                Some(CancelReason::Abandoned),
                "{}: the task held back by its key did not say Abandoned",
                pool.name()
            );
            let st = pool.stats();
            assert_eq!(st.unfinished(), 0, "{}: {st:?}", pool.name());
        }
    });
}

/// What the user does: a rate limit of 1 start per hour, three tasks (one starts, two
/// wait for the window), then `cancel_all()`, then a new task.
///
/// What they expect: the two held back resolve to `CancelAll`, `cancel_all()` returns,
/// and the pool stays open (the new task is accepted; it waits for the window).
#[test]
fn cancel_all_ends_tasks_the_rate_window_holds_back() {
    let rt = multi_thread_of(2);
    rt.block_on(async {
        for pool in [
            Pool::Common(
                CommonAioPool::builder()
                    .max_concurrency(4)
                    .max_queue_size(4)
                    .rate_limit(1, Duration::from_secs(3600))
                    .process_wide(false)
                    .build(),
            ),
            Pool::NoQueue(
                NoQueueAioPool::builder()
                    .max_concurrency(4)
                    .rate_limit(1, Duration::from_secs(3600))
                    .process_wide(false)
                    .build(),
            ),
            Pool::Smart(
                SmartAioPool::builder()
                    .max_concurrency(4)
                    .rate_limit(1, Duration::from_secs(3600))
                    .process_wide(false)
                    .auto_shutdown(false)
                    .build(),
            ),
        ] {
            let first = pool.put(|| async { 0 }).await;
            let a = pool.put(|| async { 1 }).await;
            let b = pool.put(|| async { 2 }).await;
            assert_eq!(within("first", first).await.unwrap(), 0);
            within("cancel_all", pool.cancel_all()).await;
            assert_eq!(
                reason(a.await),
                Some(CancelReason::CancelAll),
                "{}",
                pool.name()
            );
            assert_eq!(
                reason(b.await),
                Some(CancelReason::CancelAll),
                "{}",
                pool.name()
            );
            assert!(
                !pool.is_closed(),
                "{}: cancel_all closed the pool",
                pool.name()
            );
            let st = pool.stats();
            assert_eq!(st.unfinished(), 0, "{}: {st:?}", pool.name());
            let report = within(
                "shutdown_timeout after cancel_all",
                pool.shutdown_timeout(Duration::from_millis(20)),
            )
            .await;
            assert_eq!(report.abandoned(), 0, "{}: {report}", pool.name());
        }
    });
}

/// What the user does: a task of the pool calls `shutdown_timeout(50 ms)` on its own pool
/// while another task never ends; meanwhile the user, outside, awaits `shutdown()`.
///
/// What they expect: the calling task is "neither waited for nor abandoned at this call's
/// own deadline": the other task is abandoned, the caller gets its report and finishes
/// normally; the outside `shutdown()` returns once the caller has finished.
#[test]
fn shutdown_timeout_inside_a_task_spares_the_caller_only() {
    let rt = multi_thread_of(2);
    rt.block_on(async {
        for pool in local_pools(2, 4) {
            let stuck = pool.put(std::future::pending::<()>).await;
            let p2 = pool.clone();
            let caller = pool
                .put(move || {
                    let p = p2.clone();
                    async move {
                        let r = p.shutdown_timeout(Duration::from_millis(50)).await;
                        tokio::task::yield_now().await;
                        (r.finished(), r.abandoned())
                    }
                })
                .await;
            let outside = pool.shutdown();
            let got = within("the calling task", caller).await;
            assert_eq!(
                got.as_ref().ok().copied(),
                Some((0, 1)),
                "{}: the task that called shutdown_timeout did not get its report (0 finished, 1 abandoned): {:?}",
                pool.name(),
                got.map_err(|e| e.cancel_reason())
            );
            assert_eq!(reason(stuck.await), Some(CancelReason::Abandoned), "{}", pool.name());
            within("the outside shutdown", outside).await;
            assert_eq!(pool.stats().unfinished(), 0, "{}", pool.name());
        }
    });
}

/// What the user does: a `map_unordered` stream feeds the pool from a slow input while
/// another task calls `shutdown()`.
///
/// What they expect: `shutdown()` returns once every accepted task has finished; the
/// stream then ends (the pool refuses the rest); nothing is left running.
#[test]
fn shutdown_while_a_stream_feeds_the_pool() {
    let rt = multi_thread_of(2);
    rt.block_on(async {
        for pool in local_pools(2, 4) {
            let inputs = futures_util::stream::iter(0..1000u32).then(|i| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                i
            });
            let mut results = pool.unordered(inputs, |i| async move {
                tokio::time::sleep(Duration::from_millis(3)).await;
                i
            });
            let mut got = 0;
            while got < 5 {
                if results.next().await.is_some() {
                    got += 1;
                }
            }
            let shut = tokio::spawn(pool.shutdown());
            within("shutdown with a stream feeding the pool", shut)
                .await
                .unwrap();
            let st = pool.stats();
            assert_eq!(
                st.unfinished(),
                0,
                "{}: shutdown() returned with tasks of the stream unfinished: {st:?}",
                pool.name()
            );
            let rest: Vec<_> = within("the stream's end", results.collect::<Vec<_>>()).await;
            let ok = rest.iter().filter(|r| r.is_ok()).count() as u64;
            let st = pool.stats();
            assert_eq!(
                got as u64 + ok,
                st.completed,
                "{}: the stream's results do not match the tasks completed: {st:?}",
                pool.name()
            );
        }
    });
}

/// What the user does: a task group submits tasks from one task while another calls
/// `wait()` right after the group's `submit` returned.
///
/// What they expect: "Waits until every job submitted before this call has finished":
/// the task the group submitted just before is finished when `wait()` returns.
#[test]
fn wait_covers_a_task_a_group_submitted_just_before() {
    let rt = multi_thread_of(4);
    rt.block_on(async {
        for pool in local_pools(2, 4) {
            for round in 0..50 {
                let done = Arc::new(AtomicUsize::new(0));
                let d = done.clone();
                per_pool!(
                    &pool,
                    |p| {
                        let mut g = p.group::<()>();
                        g.submit(async move {
                            tokio::task::yield_now().await;
                            d.fetch_add(1, Ordering::SeqCst);
                        })
                        .await
                        .unwrap();
                        within("wait", p.wait()).await;
                        drop(g);
                    },
                    |p| {
                        let mut g = p.group::<()>();
                        g.submit(move || {
                            let d = d.clone();
                            async move {
                                tokio::task::yield_now().await;
                                d.fetch_add(1, Ordering::SeqCst);
                            }
                        })
                        .await
                        .unwrap();
                        within("wait", p.wait()).await;
                        drop(g);
                    }
                );
                assert_eq!(
                    done.load(Ordering::SeqCst),
                    1,
                    "{} round {round}: wait() returned before the group's task it covers had run",
                    pool.name()
                );
            }
        }
    });
}

/// What the user does: while tasks are queued and running, a thread keeps calling
/// `set_max_concurrency` (1, 3, 1, 3, ...) and the test calls `shutdown()`.
///
/// What they expect: shutdown returns once every task has finished; none is lost.
#[test]
fn shutdown_with_resizes_racing_it() {
    let rt = multi_thread_of(4);
    rt.block_on(async {
        for pool in local_pools(2, 50) {
            let done = Arc::new(AtomicUsize::new(0));
            let n = if matches!(pool, Pool::NoQueue(_)) {
                2
            } else {
                40
            };
            let mut handles = Vec::new();
            for _ in 0..n {
                let d = done.clone();
                handles.push(
                    pool.put(move || {
                        let d = d.clone();
                        async move {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            d.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                    .await,
                );
            }
            let stop = Arc::new(AtomicUsize::new(0));
            let (p2, s2) = (pool.clone(), stop.clone());
            let resizer = std::thread::spawn(move || {
                let mut i = 0;
                while s2.load(Ordering::SeqCst) == 0 {
                    p2.resize(if i % 2 == 0 { 1 } else { 3 });
                    i += 1;
                    std::thread::yield_now();
                }
            });
            within("shutdown with resizes racing it", pool.shutdown()).await;
            stop.store(1, Ordering::SeqCst);
            resizer.join().unwrap();
            assert_eq!(
                done.load(Ordering::SeqCst),
                n,
                "{}: shutdown() returned before every task ran",
                pool.name()
            );
            for h in handles {
                assert!(
                    h.is_finished(),
                    "{}: a handle is unresolved after shutdown()",
                    pool.name()
                );
            }
        }
    });
}

/// What the user does: three threads submit in a loop (until refused) while two other
/// tasks call `cancel_all()` and then `shutdown()`.
///
/// What they expect: every accepted task's handle resolves (a value or a cancellation),
/// `shutdown()` returns, and the counts add up: submitted = completed + cancelled.
#[test]
fn submits_racing_cancel_all_and_shutdown_lose_nothing() {
    let rt = multi_thread_of(4);
    rt.block_on(async {
        for pool in local_pools(3, 10) {
            let mut feeders = Vec::new();
            for _ in 0..3 {
                let p = pool.clone();
                feeders.push(tokio::spawn(async move {
                    let mut hs = Vec::new();
                    loop {
                        let r = per_pool!(
                            &p,
                            |q| q
                                .submit(async {
                                    tokio::time::sleep(Duration::from_millis(1)).await
                                })
                                .await
                                .map_err(|e| e.kind()),
                            |q| q
                                .submit(|| async {
                                    tokio::time::sleep(Duration::from_millis(1)).await
                                })
                                .await
                                .map_err(|e| e.kind())
                        );
                        match r {
                            Ok(h) => hs.push(h),
                            Err(_) => return hs,
                        }
                    }
                }));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let c1 = tokio::spawn(pool.cancel_all());
            let c2 = tokio::spawn(pool.cancel_all());
            tokio::time::sleep(Duration::from_millis(10)).await;
            within("shutdown", pool.shutdown()).await;
            within("cancel_all 1", c1).await.unwrap();
            within("cancel_all 2", c2).await.unwrap();
            let mut all = Vec::new();
            for f in feeders {
                all.extend(within("a feeder", f).await.unwrap());
            }
            for h in all {
                let _ = within("an accepted task's handle", h).await;
            }
            let st = pool.stats();
            assert_eq!(st.unfinished(), 0, "{}: {st:?}", pool.name());
            assert_eq!(
                st.submitted,
                st.completed + st.cancelled + st.panicked,
                "{}: the counts do not add up after shutdown: {st:?}",
                pool.name()
            );
        }
    });
}

/// What the user does: aborts a task that is in the middle of a 300 ms synchronous call
/// (it cannot be dropped before that call returns), then calls `shutdown_timeout(50 ms)`.
///
/// What they expect: "the first decision holds": the handle says `Aborted`, and the
/// report's `abandoned()` counts only "tasks ... which were dropped; their handles resolve
/// to `CancelReason::Abandoned`", so 0 here; `finished()` counts the aborted task.
#[test]
fn a_task_aborted_before_the_deadline_is_not_reported_abandoned() {
    let rt = multi_thread_of(2);
    rt.block_on(async {
        for pool in local_pools(2, 4) {
            let started = Arc::new(AtomicUsize::new(0));
            let s = started.clone();
            let h = pool
                .put(move || {
                    let s = s.clone();
                    async move {
                        s.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(300));
                        tokio::task::yield_now().await;
                        std::future::pending::<()>().await;
                    }
                })
                .await;
            support::reach(&started, 1, Duration::from_secs(10)).await;
            h.abort();
            let report = within(
                "shutdown_timeout",
                pool.shutdown_timeout(Duration::from_millis(50)),
            )
            .await;
            assert_eq!(
                reason(h.await),
                Some(CancelReason::Aborted),
                "{}",
                pool.name()
            );
            assert_eq!(
                (report.finished(), report.abandoned()),
                (1, 0),
                "{}: a task aborted before the deadline was reported as abandoned: {report}",
                pool.name()
            );
        }
    });
}

/// What the user does: builds a process-wide CommonAioPool with a rate limit of one start
/// per 100 ms, submits three detached tasks, drops the pool, then calls
/// `shutdown_all_common_aiopools()`.
///
/// What they expect: the README: "call `shutdown_all_common_aiopools().await` at the end
/// of `main`" so that detached tasks are not lost; all three run before it returns.
#[test]
fn shutdown_all_common_waits_for_rate_held_tasks_of_a_dropped_pool() {
    let _serial = support::serial();
    let rt = multi_thread_of(2);
    rt.block_on(async {
        let done = Arc::new(AtomicUsize::new(0));
        {
            let pool = CommonAioPool::builder()
                .max_concurrency(4)
                .max_queue_size(4)
                .rate_limit(1, Duration::from_millis(100))
                .build();
            for _ in 0..3 {
                let d = done.clone();
                pool.submit(async move {
                    d.fetch_add(1, Ordering::SeqCst);
                })
                .await
                .unwrap()
                .detach();
            }
        }
        within(
            "shutdown_all_common_aiopools",
            nb_aiopool::shutdown_all_common_aiopools(),
        )
        .await;
        assert_eq!(
            done.load(Ordering::SeqCst),
            3,
            "shutdown_all_common_aiopools() returned before the dropped pool's tasks ran"
        );
    });
}

/// What the user does: one thread keeps building process-wide CommonAioPools and
/// NoQueueAioPools, submitting a task to each and dropping them, while two other threads
/// call `shutdown_all_common_aiopools()` and `wait_all_no_queue_aiopools()` in loops.
///
/// What they expect: no panic, no hang; every task accepted runs or is refused.
#[test]
fn process_wide_calls_while_pools_are_built_and_dropped() {
    let _serial = support::serial();
    on_thread_within("process-wide calls racing builds and drops", 60, || {
        let rt = multi_thread_of(3);
        let stop = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        rt.block_on(async {
            let (s, r, a) = (stop.clone(), ran.clone(), accepted.clone());
            let builder = tokio::spawn(async move {
                for i in 0..300 {
                    let c = CommonAioPool::new(2, 2);
                    let n = NoQueueAioPool::new(2);
                    let r1 = r.clone();
                    if let Ok(h) = c
                        .submit(async move {
                            tokio::task::yield_now().await;
                            r1.fetch_add(1, Ordering::SeqCst);
                        })
                        .await
                    {
                        a.fetch_add(1, Ordering::SeqCst);
                        h.detach();
                    }
                    let r2 = r.clone();
                    if let Ok(h) = n
                        .submit(async move {
                            tokio::task::yield_now().await;
                            r2.fetch_add(1, Ordering::SeqCst);
                        })
                        .await
                    {
                        a.fetch_add(1, Ordering::SeqCst);
                        h.detach();
                    }
                    if i % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                s.store(1, Ordering::SeqCst);
            });
            let s1 = stop.clone();
            let shut = tokio::spawn(async move {
                while s1.load(Ordering::SeqCst) == 0 {
                    nb_aiopool::shutdown_all_common_aiopools().await;
                    tokio::task::yield_now().await;
                }
            });
            let s2 = stop.clone();
            let waits = std::thread::spawn(move || {
                let rt = multi_thread_of(1);
                rt.block_on(async move {
                    while s2.load(Ordering::SeqCst) == 0 {
                        nb_aiopool::wait_all_no_queue_aiopools().await;
                        tokio::task::yield_now().await;
                    }
                });
            });
            builder.await.unwrap();
            shut.await.unwrap();
            waits.join().unwrap();
            nb_aiopool::shutdown_all_common_aiopools().await;
            nb_aiopool::wait_all_no_queue_aiopools().await;
        });
        assert_eq!(
            ran.load(Ordering::SeqCst),
            accepted.load(Ordering::SeqCst),
            "a task accepted by a pool built beside the process-wide calls never ran"
        );
    });
}

/// What the user does: a job of process-wide CommonAioPool A calls
/// `shutdown_all_common_aiopools()` while pool B (also process-wide) runs a 50 ms task.
///
/// What they expect: "Called from inside a job of one of these pools, it does not wait for
/// that job": the call returns inside the job once B's task has finished.
#[test]
fn shutdown_all_common_from_inside_a_job() {
    let _serial = support::serial();
    let rt = multi_thread_of(2);
    rt.block_on(async {
        let a = CommonAioPool::new(2, 2);
        let b = CommonAioPool::new(2, 2);
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        b.submit(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            d.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap()
        .detach();
        let d = done.clone();
        let h = a
            .submit(async move {
                nb_aiopool::shutdown_all_common_aiopools().await;
                d.load(Ordering::SeqCst)
            })
            .await
            .unwrap();
        let seen = within("the job calling shutdown_all_common_aiopools", h)
            .await
            .unwrap();
        assert_eq!(
            seen, 1,
            "shutdown_all_common_aiopools() returned inside a job before B's task ended"
        );
        assert!(a.is_closed() && b.is_closed());
    });
}

/// What the user does: an elastic SmartAioPool (`min_workers(0)`, short idle timeout) with
/// a rate limit of one start per 60 ms; five tasks; `shutdown()`.
///
/// What they expect: `shutdown()` "waits until every queued and running task has
/// finished": all five run, though the workers retire between the window's starts.
#[test]
fn smart_shutdown_with_retiring_workers_and_a_rate_window() {
    let rt = multi_thread_of(2);
    rt.block_on(async {
        let pool = SmartAioPool::builder()
            .max_concurrency(3)
            .min_workers(0)
            .idle_timeout(Duration::from_millis(5))
            .rate_limit(1, Duration::from_millis(60))
            .process_wide(false)
            .auto_shutdown(false)
            .build();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..5 {
            let d = done.clone();
            pool.submit(move || {
                let d = d.clone();
                async move {
                    d.fetch_add(1, Ordering::SeqCst);
                }
            })
            .await
            .unwrap()
            .detach();
        }
        within("shutdown", pool.shutdown()).await;
        assert_eq!(
            done.load(Ordering::SeqCst),
            5,
            "shutdown() returned before every task ran"
        );
    });
}

/// What the user does: a weight capacity of 3, tasks of weight 1 and 3 mixed, a thread
/// resizing the pool (1, 4, 1, 4, ...), then `shutdown()`.
///
/// What they expect: `shutdown()` returns once every task has finished.
#[test]
fn shutdown_with_weights_and_resizes() {
    let rt = multi_thread_of(4);
    rt.block_on(async {
        for pool in [
            Pool::Common(
                CommonAioPool::builder()
                    .max_concurrency(4)
                    .max_queue_size(40)
                    .weight_capacity(3)
                    .process_wide(false)
                    .build(),
            ),
            Pool::NoQueue(
                NoQueueAioPool::builder()
                    .max_concurrency(4)
                    .weight_capacity(3)
                    .process_wide(false)
                    .build(),
            ),
            Pool::Smart(
                SmartAioPool::builder()
                    .max_concurrency(4)
                    .max_queue_size(40)
                    .weight_capacity(3)
                    .process_wide(false)
                    .auto_shutdown(false)
                    .build(),
            ),
        ] {
            let stop = Arc::new(AtomicUsize::new(0));
            let (p2, s2) = (pool.clone(), stop.clone());
            let resizer = std::thread::spawn(move || {
                let mut i = 0;
                while s2.load(Ordering::SeqCst) == 0 {
                    p2.resize(if i % 2 == 0 { 1 } else { 4 });
                    i += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
            });
            let done = Arc::new(AtomicUsize::new(0));
            let mut handles = Vec::new();
            for i in 0..30u32 {
                let d = done.clone();
                let w = if i % 4 == 0 { 3 } else { 1 };
                handles.push(
                    within(
                        "a submit",
                        pool.put_with(
                            move || {
                                let d = d.clone();
                                async move {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                    d.fetch_add(1, Ordering::SeqCst);
                                }
                            },
                            SubmitOptions::new().weight(w),
                        ),
                    )
                    .await,
                );
            }
            within("shutdown with weights and resizes", pool.shutdown()).await;
            stop.store(1, Ordering::SeqCst);
            resizer.join().unwrap();
            assert_eq!(
                done.load(Ordering::SeqCst),
                30,
                "{}: shutdown() returned early",
                pool.name()
            );
        }
    });
}

/// A task that signals its start, then sits in one synchronous call of `ms` before its
/// first `.await` (a slot cannot drop it meanwhile), then never ends.
fn busy_then_pending(
    started: &Arc<AtomicUsize>,
    ms: u64,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static {
    let started = started.clone();
    move || {
        let s = started.clone();
        Box::pin(async move {
            s.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(ms));
            tokio::task::yield_now().await;
            std::future::pending::<()>().await;
        })
    }
}

/// What the user does: `cancel_all()` while a task is inside a long synchronous call, then
/// (before that call returns) `abort()` on the task's handle (a group or stream dropped,
/// a `timeout` around `batch_run`, would do the same).
///
/// What they expect: `cancel_all`'s docs: "their handles resolve to
/// `CancelReason::CancelAll` (one that a shutdown deadline covered first keeps
/// `Abandoned`, one aborted first `Aborted`: the first decision holds)". The cancel came
/// first: `CancelAll`.
///
/// Finding 377. What happened (before the fix in `Shared::abort`, all three pools): "cancel_all() came
/// first, but the handle took the later abort's reason: [\"common: Some(Aborted)\",
/// \"no_queue: Some(Aborted)\", \"smart: Some(Aborted)\"]". The cancel only marked the
/// task's slot; the abort decided the handle before the slot looked at the mark.
#[test]
fn an_abort_after_cancel_all_does_not_override_its_reason() {
    let rt = multi_thread_of(2);
    rt.block_on(async {
        let mut wrong = Vec::new();
        for pool in local_pools(2, 4) {
            let started = Arc::new(AtomicUsize::new(0));
            let h = pool.put(busy_then_pending(&started, 300)).await;
            support::reach(&started, 1, Duration::from_secs(10)).await;
            let cancel = pool.cancel_all(); // the cancellation happens at the call
            h.abort();
            assert!(
                h.is_finished(),
                "{}: the handle did not resolve at once on abort()",
                pool.name()
            );
            within("cancel_all", cancel).await;
            let r = reason(h.await);
            if r != Some(CancelReason::CancelAll) {
                wrong.push(format!("{}: {r:?}", pool.name()));
            }
        }
        assert!(
            wrong.is_empty(),
            "cancel_all() came first, but the handle took the later abort's reason: {wrong:?}"
        );
    });
}

/// What the user does: `shutdown_timeout(20 ms)` while a task is inside a long
/// synchronous call; once the deadline has passed (and before that call returns), the
/// task's handle is aborted (say, its group is dropped when the code that awaited the
/// report moves on). The task here sits 400 ms; the abort comes 150 ms after the call.
///
/// What they expect: the deadline decided first, so the handle says `Abandoned` and the
/// report counts it as abandoned ("Tasks still queued or running at the deadline, which
/// were dropped; their handles resolve to `CancelReason::Abandoned`"); `is_complete()` is
/// false.
///
/// Finding 377. What happened (before the fix, all three pools): "the deadline came first, but an
/// abort made after it decided the handle and the report: [\"common: handle
/// Some(Aborted), report 1 finished, 0 abandoned\", \"no_queue: ...\", \"smart: ...\"]":
/// the report said `is_complete()` although the deadline cut the task off.
#[test]
fn an_abort_after_the_deadline_does_not_undo_the_abandon() {
    let rt = multi_thread_of(2);
    rt.block_on(async {
        let mut wrong = Vec::new();
        for pool in local_pools(2, 4) {
            let started = Arc::new(AtomicUsize::new(0));
            let h = pool.put(busy_then_pending(&started, 400)).await;
            support::reach(&started, 1, Duration::from_secs(10)).await;
            let abort = h.abort_handle();
            let report = pool.shutdown_timeout(Duration::from_millis(20));
            let aborter = tokio::spawn(async move {
                // Past the deadline, while the task is still in its synchronous call.
                tokio::time::sleep(Duration::from_millis(150)).await;
                abort.abort();
            });
            let report = within("shutdown_timeout", report).await;
            aborter.await.unwrap();
            let r = reason(h.await);
            if (r, report.abandoned()) != (Some(CancelReason::Abandoned), 1) {
                wrong.push(format!("{}: handle {r:?}, report {report}", pool.name()));
            }
        }
        assert!(
            wrong.is_empty(),
            "the deadline came first, but an abort made after it decided the handle and the \
             report: {wrong:?}"
        );
    });
}

impl Pool {
    fn try_put(&self) -> bool {
        per_pool!(
            self,
            |p| p
                .try_submit(std::future::pending::<()>())
                .map(|h| h.detach())
                .is_ok(),
            |p| p
                .try_submit(std::future::pending::<()>)
                .map(|h| h.detach())
                .is_ok()
        )
    }
}

/// What the user does: a full pool of 4 slots (and a queue of 2 where there is one),
/// shrunk to 1 with its 4 tasks still running, then `cancel_all()`; then fills it again
/// with `try_submit`, grows it back to 4 and fills it again.
///
/// What they expect: `set_max_concurrency`:
/// "The room for waiting submitters follows (`n` + the queue size)."
/// Once `cancel_all()` returned, the pool takes exactly 1 + 2 tasks, then, grown to 4,
/// exactly 3 more.
///
/// Pinned.
#[test]
fn the_room_after_cancel_all_on_a_shrunk_pool_is_the_new_size() {
    let rt = multi_thread_of(2);
    rt.block_on(async {
        for pool in local_pools(4, 2) {
            let q = if matches!(pool, Pool::NoQueue(_)) { 0 } else { 2 };
            let mut n = 0;
            while pool.try_put() {
                n += 1;
                assert!(n <= 10, "{}: the pool took more than its room", pool.name());
            }
            assert_eq!(n, 4 + q, "{}", pool.name());
            tokio::task::yield_now().await;
            pool.resize(1);
            within("cancel_all", pool.cancel_all()).await;
            let mut n = 0;
            while pool.try_put() {
                n += 1;
                assert!(n <= 10, "{}: the pool took more than its room", pool.name());
            }
            assert_eq!(
                n,
                1 + q,
                "{}: after cancel_all on a pool shrunk to 1, try_submit found room for {n} tasks, not 1 + the queue",
                pool.name()
            );
            pool.resize(4);
            let mut m = 0;
            while pool.try_put() {
                m += 1;
                assert!(m <= 10, "{}: the pool took more than its room", pool.name());
            }
            assert_eq!(m, 3, "{}: grown back to 4, the pool took {m} more, not 3", pool.name());
            within("cancel_all", pool.cancel_all()).await;
            let st = pool.stats();
            assert_eq!(st.unfinished(), 0, "{}: {st:?}", pool.name());
        }
    });
}

/// What the user does: queues tasks whose futures hold a `pool.wait()` future made outside
/// them (and a handle of another task of the pool), then ends them with `cancel_all()`,
/// with a shutdown deadline, and by aborting them.
///
/// What they expect: the pool drops those futures (whose `Drop` reaches the pool again)
/// outside its lock: each call returns, no deadlock.
///
/// Pinned.
#[test]
fn dropping_queued_futures_that_hold_waits_of_their_own_pool_does_not_deadlock() {
    on_thread_within("ends of tasks holding waits of their own pool", 60, || {
        let rt = multi_thread_of(2);
        rt.block_on(async {
            for how in ["cancel_all", "deadline", "abort"] {
                for pool in local_pools(1, 8) {
                    let blocker = pool.put(std::future::pending::<()>).await;
                    let mut queued = Vec::new();
                    // The NoQueueAioPool has no queue: its tasks wait in running slots.
                    let n = if matches!(pool, Pool::NoQueue(_)) {
                        0
                    } else {
                        4
                    };
                    for _ in 0..n {
                        let held = Arc::new(std::sync::Mutex::new(Some(pool.wait())));
                        queued.push(
                            pool.put(move || {
                                let held = held.clone();
                                async move {
                                    let w = held.lock().unwrap().take();
                                    if let Some(w) = w {
                                        w.await;
                                    }
                                }
                            })
                            .await,
                        );
                    }
                    match how {
                        "cancel_all" => within("cancel_all", pool.cancel_all()).await,
                        "deadline" => {
                            within(
                                "shutdown_timeout",
                                pool.shutdown_timeout(Duration::from_millis(10)),
                            )
                            .await;
                        }
                        _ => {
                            for h in &queued {
                                h.abort();
                            }
                            blocker.abort();
                        }
                    }
                    for h in queued {
                        let _ = within("a queued task's handle", h).await;
                    }
                    let _ = within("the blocker's handle", blocker).await;
                    within("a wait after the ends", pool.wait()).await;
                }
            }
        });
    });
}

/// What the user does (randomised, 10 seeds per pool, replayable): three tasks submit
/// with random keys, weights and priorities (tasks that yield, sit in short synchronous
/// calls, or never end) and abort some of their earlier handles; meanwhile a controller
/// resizes the pool, calls `cancel_all()` once, and ends with `shutdown_timeout(20 ms)`.
///
/// What they expect: every handle resolves; `stats()` and the report agree with the
/// handles: completed = handles with a value, cancelled = handles cancelled, and the
/// report's `abandoned()` = handles that say `Abandoned`.
///
/// Pinned (with the fix of the two abort tests above; before it, the handle and the count
/// still agreed with each other, both saying `Aborted`).
#[test]
fn random_ends_agree_with_handles_and_reports() {
    let rt = multi_thread_of(4);
    rt.block_on(async {
        for seed in 0..10u64 {
            let pools = vec![
                Pool::Common(
                    CommonAioPool::builder()
                        .max_concurrency(3)
                        .max_queue_size(6)
                        .max_per_key(2)
                        .weight_capacity(4)
                        .process_wide(false)
                        .build(),
                ),
                Pool::NoQueue(
                    NoQueueAioPool::builder()
                        .max_concurrency(3)
                        .max_per_key(2)
                        .weight_capacity(4)
                        .process_wide(false)
                        .build(),
                ),
                Pool::Smart(
                    SmartAioPool::builder()
                        .max_concurrency(3)
                        .max_queue_size(6)
                        .max_per_key(2)
                        .weight_capacity(4)
                        .process_wide(false)
                        .auto_shutdown(false)
                        .build(),
                ),
            ];
            for pool in pools {
                let mut feeders = Vec::new();
                for f in 0..3u64 {
                    let p = pool.clone();
                    feeders.push(tokio::spawn(async move {
                        let mut rng = support::Rng::new(seed * 31 + f);
                        let mut hs: Vec<TaskHandle<u8>> = Vec::new();
                        for _ in 0..25 {
                            let kind = rng.below(10);
                            let ms = rng.below(3);
                            let opts = SubmitOptions::new()
                                .key(format!("k{}", rng.below(3)))
                                .weight(1 + rng.below(3) as u32)
                                .priority(rng.below(3) as i32)
                                .timeout(Duration::from_secs(5));
                            let make = move || async move {
                                match kind {
                                    0 => std::future::pending::<u8>().await,
                                    1..=3 => {
                                        std::thread::sleep(Duration::from_millis(ms));
                                        tokio::task::yield_now().await;
                                        1
                                    }
                                    _ => {
                                        tokio::time::sleep(Duration::from_millis(ms)).await;
                                        2
                                    }
                                }
                            };
                            let r = per_pool!(
                                &p,
                                |q| q.submit_with(make(), opts).await.map_err(|e| e.kind()),
                                |q| q.submit_with(make, opts).await.map_err(|e| e.kind())
                            );
                            match r {
                                Ok(h) => hs.push(h),
                                Err(_) => break,
                            }
                            if !hs.is_empty() && rng.chance(15) {
                                let i = rng.below(hs.len() as u64) as usize;
                                hs[i].abort();
                            }
                        }
                        hs
                    }));
                }
                let mut rng = support::Rng::new(seed + 1000);
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(rng.below(4))).await;
                    pool.resize(1 + rng.below(4) as usize);
                }
                let cancel = pool.cancel_all();
                pool.resize(3);
                tokio::time::sleep(Duration::from_millis(rng.below(5))).await;
                let report = within(
                    "shutdown_timeout",
                    pool.shutdown_timeout(Duration::from_millis(20)),
                )
                .await;
                within("cancel_all", cancel).await;
                let mut handles = Vec::new();
                for f in feeders {
                    handles.extend(within("a feeder", f).await.unwrap());
                }
                let (mut ok, mut cancelled, mut abandoned) = (0u64, 0u64, 0u64);
                for h in handles {
                    match within("an accepted task's handle", h).await {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            cancelled += u64::from(e.is_cancelled());
                            abandoned +=
                                u64::from(e.cancel_reason() == Some(CancelReason::Abandoned));
                        }
                    }
                }
                let st = pool.stats();
                let what = format!("{} seed {seed}: {st:?}, report {report}", pool.name());
                assert_eq!(
                    st.unfinished(),
                    0,
                    "{what}: tasks left after shutdown_timeout"
                );
                assert_eq!(
                    st.completed, ok,
                    "{what}: completed != handles with a value"
                );
                assert_eq!(
                    st.cancelled, cancelled,
                    "{what}: cancelled != handles cancelled"
                );
                assert_eq!(
                    report.abandoned(),
                    abandoned,
                    "{what}: the report's abandoned != handles saying Abandoned"
                );
            }
        }
    });
}

/// What the user does: a `map_ordered` stream of 200 inputs through the pool while
/// another task calls `cancel_all()` three times, on a multi-thread runtime.
///
/// What they expect: the pool stays open, so the stream yields one item per input, in
/// input order, each the task's value or a `CancelAll` error; the pool's counts agree.
///
/// Pinned.
#[test]
fn a_stream_through_cancel_alls_yields_one_item_per_input_in_order() {
    let rt = multi_thread_of(4);
    rt.block_on(async {
        for pool in local_pools(3, 4) {
            let inputs = futures_util::stream::iter(0..200u32);
            let results = pool.ordered(inputs, |i| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                i
            });
            let p = pool.clone();
            let canceller = tokio::spawn(async move {
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    p.cancel_all().await;
                }
            });
            let got: Vec<_> = within("the stream", results.collect::<Vec<_>>()).await;
            within("the canceller", canceller).await.unwrap();
            assert_eq!(
                got.len(),
                200,
                "{}: the stream did not yield one item per input",
                pool.name()
            );
            let mut cancelled = 0;
            for (i, r) in got.iter().enumerate() {
                match r {
                    Ok(v) => assert_eq!(*v as usize, i, "{}: out of order", pool.name()),
                    Err(e) => {
                        assert_eq!(
                            e.cancel_reason(),
                            Some(CancelReason::CancelAll),
                            "{}: item {i} failed with something else than CancelAll: {e}",
                            pool.name()
                        );
                        cancelled += 1;
                    }
                }
            }
            let st = pool.stats();
            assert_eq!(st.cancelled, cancelled, "{}: {st:?}", pool.name());
            assert_eq!(st.submitted, 200, "{}: {st:?}", pool.name());
        }
    });
}

/// What the user does: a full pool; a submitter waits for room with
/// `SubmitOptions::timeout(10 s)`; another task calls `shutdown_timeout(30 ms)`.
///
/// What they expect: `shutdown`'s docs: "submitters waiting for room are refused": the
/// waiting submit fails at once with `Closed` (not `TimedOut` ten seconds later), and the
/// report counts the running task as abandoned.
///
/// Pinned.
#[test]
fn a_submitter_waiting_with_a_deadline_is_refused_closed_at_shutdown() {
    let rt = multi_thread_of(2);
    rt.block_on(async {
        for pool in local_pools(1, 0) {
            let running = pool.put(std::future::pending::<()>).await;
            let p = pool.clone();
            let waiting = tokio::spawn(async move {
                let opts = SubmitOptions::new().timeout(Duration::from_secs(10));
                per_pool!(
                    &p,
                    |q| q
                        .submit_with(async {}, opts)
                        .await
                        .map(drop)
                        .map_err(|e| e.kind()),
                    |q| q
                        .submit_with(|| async {}, opts)
                        .await
                        .map(drop)
                        .map_err(|e| e.kind())
                )
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            let report = within(
                "shutdown_timeout",
                pool.shutdown_timeout(Duration::from_millis(30)),
            )
            .await;
            let refused = tokio::time::timeout(Duration::from_secs(2), waiting)
                .await
                .expect("the waiting submit was not refused at the shutdown")
                .unwrap();
            assert_eq!(
                refused,
                Err(nb_aiopool::SubmitErrorKind::Closed),
                "{}: the submitter waiting for room was not refused as Closed",
                pool.name()
            );
            assert_eq!(report.abandoned(), 1, "{}: {report}", pool.name());
            assert_eq!(reason(running.await), Some(CancelReason::Abandoned));
        }
    });
}
