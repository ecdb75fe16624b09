//! The unusual execution contexts a real program uses (a helper's review, 2026-12-05, on
//! d975e92): LocalSet, block_in_place, Handle::block_on, runtime shutdown flavours, nested
//! runtimes, a non-tokio executor, submits from a `Drop` during a runtime's shutdown,
//! `on_thread_stop`, `#[tokio::test]`s sharing `static` pools. The tests named `a_...` are
//! the review's findings (272 and 273 of RELIABILITY.md; they failed before their fixes);
//! the `pin_...` and `shared_...` tests pin behaviour checked and found sound.

// Handles are returned out of async blocks on purpose (awaited later, or held).
#![allow(clippy::async_yields_async)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use nb_aiopool::{CancelReason, SubmitErrorKind, TaskError, TaskHandle, TrySubmitErrorKind};
use support::*;

/// What a job reports: the id of the runtime it ran on.
fn rt_id() -> tokio::runtime::Id {
    tokio::runtime::Handle::current().id()
}

impl Pool {
    /// Submits a job that yields once and returns the id of the runtime it ran on.
    async fn where_it_runs(&self) -> TaskHandle<tokio::runtime::Id> {
        let job = || async {
            tokio::task::yield_now().await;
            rt_id()
        };
        per_pool!(self, |p| p.submit(job()).await.unwrap(), |p| p
            .submit(job)
            .await
            .unwrap())
    }

    fn blocking_where(&self) -> TaskHandle<tokio::runtime::Id> {
        let job = || async {
            tokio::task::yield_now().await;
            rt_id()
        };
        per_pool!(self, |p| p.blocking_submit(job()).unwrap(), |p| p
            .blocking_submit(job)
            .unwrap())
    }

    /// Submits a job that never ends while it runs on runtime `rt` (a SmartAioPool's run
    /// elsewhere, after `rt` ended, returns at once).
    async fn forever_on(&self, rt: tokio::runtime::Id) -> TaskHandle<()> {
        per_pool!(
            self,
            |p| p.submit(std::future::pending::<()>()).await.unwrap(),
            |p| p
                .submit(move || async move {
                    if rt_id() == rt {
                        std::future::pending::<()>().await;
                    }
                })
                .await
                .unwrap()
        )
    }

    /// `try_submit` of a job that yields once and returns the id of its runtime.
    fn try_where(&self) -> Result<TaskHandle<tokio::runtime::Id>, TrySubmitErrorKind> {
        let job = || async {
            tokio::task::yield_now().await;
            rt_id()
        };
        per_pool!(self, |p| p.try_submit(job()).map_err(|e| e.kind()), |p| p
            .try_submit(job)
            .map_err(|e| e.kind()))
    }

    /// Submits a job that never ends (a SmartAioPool's: its first run never ends, a re-run
    /// returns at once).
    async fn forever(&self) -> TaskHandle<()> {
        per_pool!(
            self,
            |p| p.submit(std::future::pending::<()>()).await.unwrap(),
            |p| p.submit(once_forever()).await.unwrap()
        )
    }

    fn try_forever(&self) -> Result<TaskHandle<()>, TrySubmitErrorKind> {
        per_pool!(
            self,
            |p| p
                .try_submit(std::future::pending::<()>())
                .map_err(|e| e.kind()),
            |p| p
                .try_submit(std::future::pending::<()>)
                .map_err(|e| e.kind())
        )
    }

    /// map_unordered over 0..n, each job returning its input doubled.
    async fn doubled(&self, n: u32) -> Vec<u32> {
        let inputs = futures_util::stream::iter(0..n);
        let mut out: Vec<u32> = per_pool!(
            self,
            |p| {
                p.map_unordered(inputs, |i| async move { i * 2 })
                    .map(Result::unwrap)
                    .collect()
                    .await
            },
            |p| {
                p.map_unordered(inputs, |i| move || async move { i * 2 })
                    .map(Result::unwrap)
                    .collect()
                    .await
            }
        );
        out.sort();
        out
    }

    /// A group of n jobs, each returning its index; joined all.
    async fn group_of(&self, n: u32) -> Vec<u32> {
        let res = per_pool!(
            self,
            |p| {
                let mut g = p.group();
                for i in 0..n {
                    g.submit(async move { i }).await.unwrap();
                }
                g.join_all().await
            },
            |p| {
                let mut g = p.group();
                for i in 0..n {
                    g.submit(move || async move { i }).await.unwrap();
                }
                g.join_all().await
            }
        );
        res.into_iter().map(Result::unwrap).collect()
    }
}

fn settled(pool: &Pool) {
    until("nothing queued or running", || {
        let s = pool.stats();
        s.queued == 0 && s.running == 0
    });
}

/// A recipe whose first run never ends; later runs return at once.
fn once_forever(
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync + 'static
{
    let runs = Arc::new(AtomicUsize::new(0));
    move || {
        let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
        Box::pin(async move {
            if first {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// How a handle of a never-ending job cut by its runtime's end resolves: RuntimeShutdown,
/// or for a SmartAioPool (re-run, returns), Ok.
fn cut(pool: &Pool, got: Result<(), TaskError>) {
    match pool {
        Pool::Smart(_) => assert!(got.is_ok(), "smart: {got:?}"),
        _ => assert_eq!(
            got.unwrap_err().cancel_reason(),
            Some(CancelReason::RuntimeShutdown),
            "{}",
            pool.name()
        ),
    }
}

// ----- LocalSet ---------------------------------------------------------------------------

/// `spawn_local` tasks (holding an `Rc` across the submit's await) submit to each pool and
/// await: each job runs on the runtime under the LocalSet, every handle resolves, and a
/// group and a map_unordered stream work there too.
#[test]
fn pin_localset_on_current_thread() {
    on_thread_within("localset", 20, || {
        let rt = current_thread();
        let want = rt.handle().id();
        for (pool, _) in Pool::all(2, 2) {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async {
                let mut hs = Vec::new();
                for i in 0..8u32 {
                    let pool = pool.clone();
                    hs.push(tokio::task::spawn_local(async move {
                        let rc = std::rc::Rc::new(i);
                        let h = pool.where_it_runs().await;
                        let got = h.await.unwrap();
                        assert_eq!(*rc, i);
                        got
                    }));
                }
                for h in hs {
                    assert_eq!(
                        within("local task", h).await.unwrap(),
                        want,
                        "{}",
                        pool.name()
                    );
                }
                let p = pool.clone();
                let (d, g) = tokio::task::spawn_local(async move {
                    let rc = std::rc::Rc::new(());
                    let d = p.doubled(10).await;
                    let g = p.group_of(10).await;
                    drop(rc);
                    (d, g)
                })
                .await
                .unwrap();
                assert_eq!(d, (0..10).map(|i| i * 2).collect::<Vec<_>>());
                assert_eq!(g, (0..10).collect::<Vec<_>>());
            });
            settled(&pool);
            let s = pool.stats();
            assert_eq!(s.completed, 28, "{}: {s:?}", pool.name());
        }
    });
}

/// The same with `run_until` on a multi-thread runtime's `block_on`.
#[test]
fn pin_localset_run_until_on_multi_thread() {
    on_thread_within("localset mt", 20, || {
        let rt = multi_thread_of(2);
        let want = rt.handle().id();
        for (pool, _) in Pool::all(2, 2) {
            let local = tokio::task::LocalSet::new();
            rt.block_on(local.run_until(async {
                let mut hs = Vec::new();
                for i in 0..8u32 {
                    let pool = pool.clone();
                    hs.push(tokio::task::spawn_local(async move {
                        let rc = std::rc::Rc::new(i);
                        let got = pool.where_it_runs().await.await.unwrap();
                        assert_eq!(*rc, i);
                        got
                    }));
                }
                for h in hs {
                    assert_eq!(
                        within("local task", h).await.unwrap(),
                        want,
                        "{}",
                        pool.name()
                    );
                }
                assert_eq!(pool.doubled(10).await.len(), 10);
                assert_eq!(pool.group_of(10).await.len(), 10);
            }));
            settled(&pool);
        }
    });
}

// ----- block_in_place and Handle::block_on ------------------------------------------------

/// A job that blocks in place and submits (blocking) a child to its pool, then waits on it
/// with `blocking_wait`: with room, it works.
#[test]
fn pin_block_in_place_inside_a_job() {
    on_thread_within("block_in_place job", 20, || {
        let rt = multi_thread_of(2);
        let want = rt.handle().id();
        for (pool, _) in Pool::all(2, 2) {
            let p = pool.clone();
            let got = rt.block_on(async move {
                let parent = per_pool!(
                    &p,
                    |c| {
                        let c2 = c.clone();
                        c.submit(async move {
                            tokio::task::block_in_place(|| {
                                c2.blocking_submit(async { rt_id() })
                                    .unwrap()
                                    .blocking_wait()
                            })
                        })
                        .await
                        .unwrap()
                    },
                    |c| {
                        let c2 = c.clone();
                        c.submit(move || {
                            let c2 = c2.clone();
                            async move {
                                tokio::task::block_in_place(|| {
                                    c2.blocking_submit(|| async { rt_id() })
                                        .unwrap()
                                        .blocking_wait()
                                })
                            }
                        })
                        .await
                        .unwrap()
                    }
                );
                within("parent", parent).await
            });
            assert_eq!(got.unwrap().unwrap(), want, "{}", pool.name());
            settled(&pool);
        }
    });
}

/// The same with a full pool of one slot: blocking_submit from inside the job is refused
/// (WouldDeadlock) rather than blocking for ever; with a queue place, the blocking_wait on
/// the queued child is broken with WouldDeadlock.
#[test]
fn pin_block_in_place_inside_a_job_of_a_full_pool_is_refused_not_deadlocked() {
    on_thread_within("block_in_place full", 20, || {
        let rt = multi_thread_of(2);
        for queue in [0usize, 1] {
            let pool = common_local(1, queue);
            let p = pool.clone();
            let got = rt.block_on(async move {
                let p2 = p.clone();
                let parent = p
                    .submit(async move {
                        tokio::task::block_in_place(|| match p2.blocking_submit(async { 5u32 }) {
                            Err(e) => Err(Err(e.kind())),
                            Ok(h) => h.blocking_wait().map_err(|e| Ok(e.cancel_reason())),
                        })
                    })
                    .await
                    .unwrap();
                within("parent", parent).await.unwrap()
            });
            let want = if queue == 0 {
                Err(Err(SubmitErrorKind::WouldDeadlock))
            } else {
                Err(Ok(Some(CancelReason::WouldDeadlock)))
            };
            assert_eq!(got, want, "queue {queue}");
            settled(&Pool::Common(pool));
        }
    });
}

/// The submitter blocks in place and submits through `Handle::block_on`, and with
/// `blocking_submit` / `blocking_wait`.
#[test]
fn pin_block_in_place_in_the_submitter() {
    on_thread_within("block_in_place submitter", 20, || {
        let rt = multi_thread_of(2);
        let want = rt.handle().id();
        for (pool, _) in Pool::all(1, 1) {
            let p = pool.clone();
            let (a, b) = rt.block_on(async move {
                tokio::spawn(async move {
                    tokio::task::block_in_place(|| {
                        let a = tokio::runtime::Handle::current()
                            .block_on(async { p.where_it_runs().await.await.unwrap() });
                        let b = p.blocking_where().blocking_wait().unwrap();
                        (a, b)
                    })
                })
                .await
                .unwrap()
            });
            assert_eq!((a, b), (want, want), "{}", pool.name());
            settled(&pool);
        }
    });
}

/// `Handle::block_on` on a `spawn_blocking` thread submits and awaits.
#[test]
fn pin_handle_block_on_from_spawn_blocking() {
    on_thread_within("spawn_blocking block_on", 20, || {
        let rt = multi_thread_of(1);
        let want = rt.handle().id();
        for (pool, _) in Pool::all(1, 1) {
            let p = pool.clone();
            let got = rt.block_on(async move {
                let handle = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    handle.block_on(async {
                        let mut v = Vec::new();
                        for _ in 0..4 {
                            v.push(p.where_it_runs().await.await.unwrap());
                        }
                        v
                    })
                })
                .await
                .unwrap()
            });
            assert_eq!(got, vec![want; 4], "{}", pool.name());
            settled(&pool);
        }
    });
}

// ----- runtime shutdown flavours ----------------------------------------------------------

/// Runtime A fills the pool with never-ending jobs and has submitters waiting for room;
/// runtime B (alive, on its own thread) waits for room too. A is shut down with
/// `shutdown_timeout` (or `shutdown_background`): A's jobs end with RuntimeShutdown (a
/// SmartAioPool's run again on B and return), B's submit gets in and its job runs on B; the
/// stats settle.
#[test]
fn pin_shutdown_timeout_and_background_while_jobs_run_and_submitters_wait() {
    for background in [false, true] {
        on_thread_within("shutdown flavours", 20, move || {
            for (pool, held) in Pool::all(2, 1) {
                let rt_a = multi_thread_of(1);
                let a = rt_a.handle().id();
                let fillers = rt_a.block_on(async {
                    let mut v = Vec::new();
                    for _ in 0..held {
                        v.push(pool.forever_on(a).await);
                    }
                    for _ in 0..2 {
                        let pool = pool.clone();
                        tokio::spawn(async move { pool.forever_on(a).await });
                    }
                    v
                });
                let p = pool.clone();
                let (tx, rx) = std::sync::mpsc::channel();
                let b = std::thread::spawn(move || {
                    let rt_b = current_thread();
                    let want = rt_b.handle().id();
                    rt_b.block_on(async move {
                        let fut = p.where_it_runs();
                        let mut fut = std::pin::pin!(fut);
                        assert!(futures_util::FutureExt::now_or_never(fut.as_mut()).is_none());
                        tx.send(()).unwrap();
                        let got = within("b's submit", fut).await;
                        assert_eq!(within("b's job", got).await.unwrap(), want);
                    })
                });
                rx.recv().unwrap();
                if background {
                    rt_a.shutdown_background();
                } else {
                    rt_a.shutdown_timeout(Duration::from_millis(100));
                }
                for f in fillers {
                    let what = format!("filler of {} (background {background})", pool.name());
                    let p = pool.clone();
                    let got = std::panic::catch_unwind(|| {
                        on_thread_within("filler", 5, move || f.blocking_wait())
                    });
                    let got = got.unwrap_or_else(|_| panic!("{what}: {:?}", p.stats()));
                    cut(&pool, got);
                }
                on_thread_within("b", 5, move || b.join().unwrap());
                settled(&pool);
            }
        });
    }
}

/// A runtime dropped from inside a `spawn_blocking` of another runtime, while its jobs run:
/// they end with RuntimeShutdown (a SmartAioPool's run again on the other runtime); the
/// other runtime's jobs go on.
#[test]
fn pin_runtime_dropped_inside_spawn_blocking_of_another() {
    on_thread_within("dropped in spawn_blocking", 20, || {
        for (pool, _) in Pool::all(2, 2) {
            let outer = multi_thread_of(1);
            let inner = current_thread();
            let i = inner.handle().id();
            let doomed = inner.block_on(async {
                let h = pool.forever_on(i).await;
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
                h
            });
            let p = pool.clone();
            let got = outer.block_on(async move {
                let mine = p.where_it_runs().await;
                tokio::task::spawn_blocking(move || drop(inner))
                    .await
                    .unwrap();
                within("outer's job", mine).await.unwrap()
            });
            assert_eq!(got, outer.handle().id());
            eprintln!(
                "{}: {:?} finished {}",
                pool.name(),
                pool.stats(),
                doomed.is_finished()
            );
            let got = on_thread_within("doomed", 5, move || doomed.blocking_wait());
            cut(&pool, got);
            settled(&pool);
        }
    });
}

// ----- nested runtimes ----------------------------------------------------------------------

/// A job builds its own current-thread runtime on a `spawn_blocking` thread and submits to
/// the same pool from it: that job runs on the nested runtime, and awaits fine.
#[test]
fn pin_nested_runtime_in_spawn_blocking_of_a_job() {
    on_thread_within("nested rt", 20, || {
        let rt = multi_thread_of(2);
        for (pool, _) in Pool::all(2, 2) {
            let p = pool.clone();
            let (outer_id, (inner_id, ran_on)) = rt.block_on(async move {
                let p2 = p.clone();
                let job = async move {
                    let outer = rt_id();
                    let inner = tokio::task::spawn_blocking(move || {
                        let nested = current_thread();
                        let nid = nested.handle().id();
                        let ran =
                            nested.block_on(async { p2.where_it_runs().await.await.unwrap() });
                        (nid, ran)
                    })
                    .await
                    .unwrap();
                    (outer, inner)
                };
                per_pool!(
                    &p,
                    |c| within("parent", c.submit(job).await.unwrap()).await,
                    |c| {
                        let job = std::sync::Mutex::new(Some(job));
                        within(
                            "parent",
                            c.submit(move || job.lock().unwrap().take().unwrap())
                                .await
                                .unwrap(),
                        )
                        .await
                    }
                )
                .unwrap()
            });
            assert_eq!(outer_id, rt.handle().id());
            assert_eq!(inner_id, ran_on, "{}", pool.name());
            settled(&pool);
        }
    });
}

// ----- a non-tokio executor -----------------------------------------------------------------

/// `futures::executor::block_on` (here `plain_block_on`) submitting and awaiting: outside
/// any runtime, the job runs on the pool's home (a live multi-thread runtime); with that
/// runtime entered, the same.
#[test]
fn pin_plain_executor_submits_and_awaits() {
    on_thread_within("plain executor", 20, || {
        let rt = multi_thread_of(1);
        let want = rt.handle().id();
        for (pool, _) in Pool::all(1, 1) {
            rt.block_on(async { pool.where_it_runs().await.await.unwrap() });
            let got = plain_block_on(async { pool.where_it_runs().await.await.unwrap() });
            assert_eq!(got, want, "{}", pool.name());
            let _in = rt.enter();
            let got = plain_block_on(async { pool.where_it_runs().await.await.unwrap() });
            assert_eq!(got, want, "{}", pool.name());
        }
    });
}

// ----- a Drop that submits during a runtime's shutdown --------------------------------------

type Submitted =
    Arc<std::sync::Mutex<Vec<Result<TaskHandle<tokio::runtime::Id>, TrySubmitErrorKind>>>>;

struct SubmitsOnDrop {
    pool: Pool,
    out: Submitted,
}

impl Drop for SubmitsOnDrop {
    fn drop(&mut self) {
        let r = self.pool.try_where();
        self.out.lock().unwrap().push(r);
    }
}

/// Tasks of runtime A hold values whose `Drop` calls `try_submit`; A is dropped (tokio drops
/// the tasks during its shutdown) while runtime B is alive and known to the pool. Each job
/// so submitted is accepted and either runs on B or ends with RuntimeShutdown (it came from
/// A, which was ending; a SmartAioPool's runs again on B): none is left unresolved, none
/// panics inside tokio, and the stats settle.
#[test]
fn pin_try_submit_from_a_drop_during_a_runtimes_shutdown_is_resolved() {
    on_thread_within("drop submits", 20, || {
        for flavour in ["current_thread", "multi_thread"] {
            for (pool, _) in Pool::all(4, 4) {
                let rt_b = multi_thread_of(1);
                let b = rt_b.block_on(async { pool.where_it_runs().await.await.unwrap() });
                let rt_a = if flavour == "current_thread" {
                    current_thread()
                } else {
                    multi_thread_of(1)
                };
                let out: Submitted = Arc::default();
                let ready = Arc::new(AtomicUsize::new(0));
                rt_a.block_on(async {
                    for _ in 0..3 {
                        let guard = SubmitsOnDrop {
                            pool: pool.clone(),
                            out: out.clone(),
                        };
                        let ready = ready.clone();
                        tokio::spawn(async move {
                            let _g = guard;
                            ready.fetch_add(1, Ordering::SeqCst);
                            std::future::pending::<()>().await;
                        });
                    }
                    pool.forever_on(rt_id()).await.detach();
                    while ready.load(Ordering::SeqCst) < 3 {
                        tokio::task::yield_now().await;
                    }
                });
                drop(rt_a);
                let results: Vec<_> = std::mem::take(&mut *out.lock().unwrap());
                assert_eq!(results.len(), 3);
                for r in results {
                    let h =
                        r.unwrap_or_else(|k| panic!("{flavour} {}: refused {k:?}", pool.name()));
                    match on_thread_within("the drop's job", 5, move || h.blocking_wait()) {
                        Ok(id) => assert_eq!(id, b, "{flavour} {}", pool.name()),
                        Err(e) => assert_eq!(
                            e.cancel_reason(),
                            Some(CancelReason::RuntimeShutdown),
                            "{flavour} {}",
                            pool.name()
                        ),
                    }
                }
                // The never-ending job of A: cancelled (SmartAioPool: ran again on B and
                // returned).
                rt_b.block_on(async {
                    within("settled", async {
                        while pool.stats().queued + pool.stats().running > 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    })
                    .await
                });
                let s = pool.stats();
                assert_eq!(s.submitted, s.completed + s.cancelled + s.panicked, "{s:?}");
            }
        }
    });
}

// ----- findings ---------------------------------------------------------------------------

/// Finding 272: a rate-limited pool shared by a paused-clock runtime (a
/// `#[tokio::test(start_paused = true)]`) whose clock has auto-advanced an hour and a
/// real-time runtime: the rate window keeps each start at the instant of the clock it was
/// read on, so the real-time runtime, whose clock is an hour behind, sees the paused one's
/// start an hour in its future and its job waits for an hour, not for the 1 s window.
#[test]
fn a_rate_window_shared_with_a_paused_runtime_does_not_hold_a_real_runtime_for_an_hour() {
    on_thread_within("mixed clocks", 20, || {
        let pool = nb_aiopool::CommonAioPool::builder()
            .max_concurrency(4)
            .max_queue_size(4)
            .rate_limit(1, Duration::from_secs(1))
            .process_wide(false)
            .build();
        let paused = paused_runtime();
        paused.block_on(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            pool.run(async {}).await.unwrap();
        });
        let real = current_thread();
        let t0 = std::time::Instant::now();
        let got = real.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), pool.run(async {})).await
        });
        assert!(
            got.is_ok(),
            "the real-time runtime's job waited past 5 s for a 1 s window ({:?})",
            t0.elapsed()
        );
    });
}

/// Finding 273: a SmartAioPool task cut off by its runtime's end, awaited with
/// `Handle::block_on` on a `spawn_blocking` thread of that runtime (finding 215's case, with
/// the handle awaited rather than `blocking_wait`ed): the re-run is queued with no live
/// runtime left, the await has none to offer (its runtime is the one ending), and the
/// runtime's drop waits for that thread for ever.
#[test]
fn a_smart_task_awaited_with_handle_block_on_in_spawn_blocking_does_not_hang_its_runtimes_drop() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (pool, rt, h) = full_smart_pool_on_a_runtime(&runs);
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = rt.handle().clone();
    rt.spawn_blocking(move || {
        let got = handle.block_on(h);
        let _ = tx.send(got);
    });
    on_thread_within("the runtime's drop", 5, move || drop(rt));
    let got = rx.recv_timeout(Duration::from_secs(5)).expect("the await");
    assert_eq!(got.unwrap(), 9);
    drop(pool);
}

/// Finding 273, on a plain thread: the same task awaited by a non-tokio executor
/// (`futures::executor::block_on`, here `plain_block_on`) after the runtime ended waits for
/// ever, where `blocking_wait` (finding 215) runs it on a runtime of its own.
#[test]
fn a_smart_task_awaited_by_a_plain_executor_after_its_runtime_ended_still_runs() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (pool, rt, h) = full_smart_pool_on_a_runtime(&runs);
    drop(rt);
    let got = on_thread_within("a plain executor's await", 5, move || plain_block_on(h));
    assert_eq!(got.unwrap(), 9);
    drop(pool);
}

/// `on_thread_stop` calls `try_submit` as each worker thread of runtime A stops during A's
/// shutdown, while runtime B is alive and known: each job is accepted and runs on B.
#[test]
fn pin_try_submit_from_on_thread_stop_runs_on_a_live_runtime() {
    on_thread_within("on_thread_stop", 20, || {
        for (pool, _) in Pool::all(4, 4) {
            let rt_b = multi_thread_of(1);
            let b = rt_b.block_on(async { pool.where_it_runs().await.await.unwrap() });
            let out: Submitted = Arc::default();
            let (p, o) = (pool.clone(), out.clone());
            let rt_a = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .on_thread_stop(move || {
                    let r = p.try_where();
                    o.lock().unwrap().push(r);
                })
                .build()
                .unwrap();
            let a = rt_a.block_on(async { pool.where_it_runs().await.await.unwrap() });
            assert_ne!(a, b);
            drop(rt_a);
            let results: Vec<_> = std::mem::take(&mut *out.lock().unwrap());
            assert!(results.len() >= 2, "{}: {}", pool.name(), results.len());
            for r in results {
                let h = r.unwrap_or_else(|k| panic!("{}: refused {k:?}", pool.name()));
                let got = on_thread_within("its job", 5, move || h.blocking_wait());
                assert_eq!(got.unwrap(), b, "{}", pool.name());
            }
            settled(&pool);
        }
    });
}

struct BlockingSubmitsOnDrop(Pool, Arc<std::sync::Mutex<Vec<String>>>);

impl Drop for BlockingSubmitsOnDrop {
    fn drop(&mut self) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            per_pool!(
                &self.0,
                |p| p.blocking_submit(async {}).map(drop).map_err(|e| e.kind()),
                |p| p
                    .blocking_submit(|| async {})
                    .map(drop)
                    .map_err(|e| e.kind())
            )
        }));
        let s = match r {
            Ok(r) => format!("{r:?}"),
            Err(p) => format!("panic: {}", panic_message(&*p)),
        };
        self.1.lock().unwrap().push(s);
    }
}

/// A multi-thread runtime's shutdown drops its tasks on a worker thread: a task's `Drop`
/// that calls `blocking_submit` there gets the crate's "async context" panic (which tokio
/// catches), not a hang, also with the pool full of that runtime's job.
#[test]
fn pin_blocking_submit_from_a_drop_during_a_multi_thread_runtimes_shutdown_panics_clearly() {
    for (pool, held) in Pool::all(1, 0) {
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let rt_a = multi_thread_of(1);
        rt_a.block_on(async {
            for _ in 0..held {
                pool.forever().await.detach();
            }
            let g = BlockingSubmitsOnDrop(pool.clone(), out.clone());
            tokio::spawn(async move {
                let _g = g;
                std::future::pending::<()>().await;
            });
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
        });
        on_thread_within("the runtime's drop", 5, move || drop(rt_a));
        let got = out.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "{}", pool.name());
        assert!(
            got[0].contains("`blocking_submit` was called from an async context"),
            "{}: {}",
            pool.name(),
            got[0]
        );
    }
}

/// A job that blocks in place and runs a nested current-thread runtime, whose future submits
/// to the same pool and awaits: the child runs on the nested runtime.
#[test]
fn pin_nested_runtime_in_block_in_place_of_a_job() {
    on_thread_within("nested in block_in_place", 20, || {
        let rt = multi_thread_of(2);
        let pool = common_local(2, 2);
        let p = pool.clone();
        let got = rt.block_on(async move {
            let p2 = p.clone();
            let h = p
                .submit(async move {
                    tokio::task::block_in_place(|| {
                        let nested = current_thread();
                        let nid = nested.handle().id();
                        let got = nested.block_on(async {
                            let h = p2.submit(async { rt_id() }).await.unwrap();
                            h.await
                        });
                        (nid, got)
                    })
                })
                .await
                .unwrap();
            within("parent", h).await.unwrap()
        });
        eprintln!("nested {:?} child {:?}", got.0, got.1);
        assert_eq!(Ok(got.0), got.1.map_err(|e| e.to_string()));
    });
}

// ----- #[tokio::test]s sharing static pools, run in parallel ----------------------------------

static SHARED_COMMON: std::sync::LazyLock<nb_aiopool::CommonAioPool> =
    std::sync::LazyLock::new(|| nb_aiopool::CommonAioPool::new(3, 3));
static SHARED_NOQ: std::sync::LazyLock<nb_aiopool::NoQueueAioPool> =
    std::sync::LazyLock::new(|| nb_aiopool::NoQueueAioPool::new(3));
static SHARED_SMART: std::sync::LazyLock<nb_aiopool::SmartAioPool> =
    std::sync::LazyLock::new(|| {
        nb_aiopool::SmartAioPool::builder()
            .max_concurrency(3)
            .max_queue_size(3)
            .auto_shutdown(false)
            .build()
    });

fn shared() -> Vec<Pool> {
    vec![
        Pool::Common(SHARED_COMMON.clone()),
        Pool::NoQueue(SHARED_NOQ.clone()),
        Pool::Smart(SHARED_SMART.clone()),
    ]
}

/// Leaves never-ending jobs behind and ends (its runtime's end cancels them).
#[tokio::test]
async fn shared_a_leaves_jobs_behind() {
    for p in shared() {
        for _ in 0..2 {
            if let Ok(h) = p.try_forever() {
                h.detach();
            }
        }
    }
    tokio::task::yield_now().await;
}

/// Current-thread, real time: jobs, a group and a stream, with sleeps between. (Not paused:
/// see `pin_a_paused_runtime_waiting_for_room_held_elsewhere_sees_its_clock_jump`.)
#[tokio::test]
async fn shared_b_current_thread() {
    for p in shared() {
        for _ in 0..3 {
            let id = within("paused job", p.where_it_runs().await).await.unwrap();
            assert_eq!(id, rt_id());
            assert_eq!(within("group", p.group_of(6)).await.len(), 6);
            assert_eq!(within("stream", p.doubled(6)).await.len(), 6);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Real time on two workers: many quick jobs through each pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_c_multi_thread() {
    for p in shared() {
        for _ in 0..5 {
            assert_eq!(
                within("group", p.group_of(10)).await,
                (0..10).collect::<Vec<_>>()
            );
            assert_eq!(within("stream", p.doubled(10)).await.len(), 10);
            let id = within("job", p.where_it_runs().await).await.unwrap();
            assert_eq!(id, rt_id());
        }
    }
}

/// Current-thread, ends while the others go on.
#[tokio::test]
async fn shared_d_ends_early() {
    for p in shared() {
        let p2 = p.clone();
        let _ = within("stream", p2.doubled(4)).await;
    }
}

/// Room granted to `spawn_local` submitters (a filler aborted) just before their LocalSet is
/// dropped, unpolled since: the room is not lost.
#[test]
fn pin_localset_dropped_after_room_was_granted() {
    on_thread_within("localset granted", 20, || {
        let rt = current_thread();
        for (pool, held) in Pool::all(1, 1) {
            let local = tokio::task::LocalSet::new();
            let fillers = local.block_on(&rt, async {
                let mut fillers = Vec::new();
                for _ in 0..held {
                    fillers.push(pool.forever().await);
                }
                for _ in 0..3 {
                    let pool = pool.clone();
                    tokio::task::spawn_local(async move {
                        let _rc = std::rc::Rc::new(());
                        pool.forever().await
                    });
                }
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                // Room for the first waiter: granted, not yet polled.
                for f in &fillers {
                    f.abort();
                }
                fillers
            });
            drop(local);
            rt.block_on(async {
                for f in fillers {
                    assert!(within("filler", f).await.unwrap_err().is_cancelled());
                }
                within("settled", async {
                    while pool.stats().queued + pool.stats().running > 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
                let s = pool.stats();
                assert_eq!(s.submitted, s.completed + s.cancelled + s.panicked, "{s:?}");
                for i in 0..held {
                    assert!(pool.try_forever().is_ok(), "{} place {i}", pool.name());
                }
            });
        }
    });
}

/// A `blocking_submit` (and a `Handle::block_on(submit)`) on a `spawn_blocking` thread waits
/// for room held by its own runtime's job; that runtime is shut down with
/// `shutdown_timeout`: the wait ends (refused NoRuntime, or accepted on another live
/// runtime), never hangs, and the job is not lost.
#[test]
fn pin_submit_waiting_in_spawn_blocking_when_its_runtime_shuts_down() {
    for other in [false, true] {
        for asyncly in [false, true] {
            on_thread_within("spawn_blocking submit at shutdown", 20, move || {
                for (pool, held) in Pool::all(1, 0) {
                    let rt_b = multi_thread_of(1);
                    if other {
                        rt_b.block_on(async { pool.where_it_runs().await.await.unwrap() });
                    }
                    let rt = multi_thread_of(1);
                    rt.block_on(async {
                        for _ in 0..held {
                            pool.forever().await.detach();
                        }
                    });
                    let (tx, rx) = std::sync::mpsc::channel();
                    let p = pool.clone();
                    let handle = rt.handle().clone();
                    rt.spawn_blocking(move || {
                        let r = if asyncly {
                            handle.block_on(async {
                                per_pool!(
                                    &p,
                                    |c| { c.submit(async { rt_id() }).await.map_err(|e| e.kind()) },
                                    |c| {
                                        c.submit(|| async { rt_id() }).await.map_err(|e| e.kind())
                                    }
                                )
                            })
                        } else {
                            per_pool!(
                                &p,
                                |c| { c.blocking_submit(async { rt_id() }).map_err(|e| e.kind()) },
                                |c| c
                                    .blocking_submit(|| async { rt_id() })
                                    .map_err(|e| e.kind())
                            )
                        };
                        let _ = tx.send(r);
                    });
                    std::thread::sleep(Duration::from_millis(50));
                    rt.shutdown_timeout(Duration::from_millis(200));
                    let r = rx
                        .recv_timeout(Duration::from_secs(5))
                        .expect("the submit's wait ended");
                    let outcome = match r {
                        Err(k) => format!("refused {k:?}"),
                        Ok(h) => format!(
                            "accepted -> {:?} (b {:?})",
                            on_thread_within("its job", 5, move || h.blocking_wait()),
                            rt_b.handle().id()
                        ),
                    };
                    eprintln!("other {other} async {asyncly} {}: {outcome}", pool.name());
                }
            });
        }
    }
}

/// A `spawn_local` task holding a group (running and queued tasks) and a map_unordered
/// stream half consumed; its LocalSet is dropped outside any runtime context: the group's
/// and stream's tasks are aborted, their room comes back, the stats settle.
#[test]
fn pin_localset_with_a_group_and_a_stream_dropped_outside_the_runtime() {
    on_thread_within("localset group", 20, || {
        let rt = current_thread();
        for (pool, held) in Pool::all(2, 2) {
            let local = tokio::task::LocalSet::new();
            let started = Arc::new(AtomicUsize::new(0));
            let st = started.clone();
            local.block_on(&rt, async {
                let p = pool.clone();
                tokio::task::spawn_local(async move {
                    let _rc = std::rc::Rc::new(());
                    let forever = {
                        let st = st.clone();
                        move || {
                            let st = st.clone();
                            async move {
                                st.fetch_add(1, Ordering::SeqCst);
                                std::future::pending::<u32>().await
                            }
                        }
                    };
                    per_pool!(
                        &p,
                        |c| {
                            let mut g = c.group();
                            g.submit(forever()).await.unwrap();
                            let mut s = c
                                .map_unordered(futures_util::stream::iter(0..10u32), move |_| {
                                    forever()
                                });
                            let _ = futures_util::FutureExt::now_or_never(s.next());
                            std::future::pending::<()>().await;
                            drop((g, s));
                        },
                        |c| {
                            let mut g = c.group();
                            g.submit(forever.clone()).await.unwrap();
                            let f2 = forever.clone();
                            let mut s = c
                                .map_unordered(futures_util::stream::iter(0..10u32), move |_| {
                                    f2.clone()
                                });
                            let _ = futures_util::FutureExt::now_or_never(s.next());
                            std::future::pending::<()>().await;
                            drop((g, s));
                        }
                    )
                });
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
            });
            eprintln!(
                "{}: before drop {:?}, started {}",
                pool.name(),
                pool.stats(),
                started.load(Ordering::SeqCst)
            );
            drop(local);
            rt.block_on(async {
                within("settled", async {
                    while pool.stats().queued + pool.stats().running > 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
                let s = pool.stats();
                assert_eq!(s.submitted, s.completed + s.cancelled + s.panicked, "{s:?}");
                let hs: Vec<_> = (0..held)
                    .map(|i| {
                        pool.try_forever()
                            .unwrap_or_else(|e| panic!("{} place {i}: {e:?}", pool.name()))
                    })
                    .collect();
                for h in hs {
                    h.abort();
                }
            });
        }
    });
}

/// A job blocks in place, runs a nested current-thread runtime that submits a never-ending
/// child to the same pool, and drops that runtime there (the thread still marked as polling
/// the job): the child ends with RuntimeShutdown (SmartAioPool: runs again on the outer
/// runtime and returns), and the job can await it.
#[test]
fn pin_nested_runtime_dropped_inside_a_job() {
    on_thread_within("nested dropped in job", 20, || {
        let rt = multi_thread_of(2);
        for (pool, _) in Pool::all(2, 2) {
            let p = pool.clone();
            let got: Result<(), TaskError> = rt.block_on(async move {
                let p2 = p.clone();
                let job = move || {
                    let p2 = p2.clone();
                    async move {
                        let child = tokio::task::block_in_place(|| {
                            let nested = current_thread();
                            let h = nested.block_on(async {
                                let h = p2.forever_on(rt_id()).await;
                                for _ in 0..10 {
                                    tokio::task::yield_now().await;
                                }
                                h
                            });
                            drop(nested);
                            h
                        });
                        child.await
                    }
                };
                let h = per_pool!(&p, |c| c.submit(job()).await.unwrap(), |c| c
                    .submit(job)
                    .await
                    .unwrap());
                within("parent", h).await.unwrap()
            });
            eprintln!("{}: {:?} {:?}", pool.name(), got, pool.stats());
            cut(&pool, got);
            settled(&pool);
        }
    });
}

/// A paused-clock runtime (a `#[tokio::test(start_paused = true)]`) waiting for room that a
/// job of another runtime holds: its runtime is idle, so tokio's auto-advance jumps its clock
/// to its next timer, and a `timeout` around the submit fires at once in real time. Inherent
/// to paused time (any wait on another runtime does this), but a `static` pool shared by
/// tests makes such waits implicit: pinned here, and said in the README (finding 274 of RELIABILITY.md).
#[test]
fn pin_a_paused_runtime_waiting_for_room_held_elsewhere_sees_its_clock_jump() {
    on_thread_within("paused waits for room", 20, || {
        for (pool, held) in Pool::all(1, 0) {
            let real = multi_thread_of(1);
            let fillers: Vec<_> = real.block_on(async {
                let mut v = Vec::new();
                for _ in 0..held {
                    v.push(pool.forever().await);
                }
                v
            });
            let t0 = std::time::Instant::now();
            let got = paused_runtime().block_on(async {
                tokio::time::timeout(Duration::from_secs(30), pool.where_it_runs()).await
            });
            assert!(got.is_err(), "{}: the submit got room", pool.name());
            assert!(t0.elapsed() < Duration::from_secs(5), "{}", pool.name());
            for f in fillers {
                f.abort();
            }
        }
    });
}
