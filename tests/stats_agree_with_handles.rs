//! Statistics agreeing with handles and with each other (`stats()`, the `metrics`
//! counters and gauges, `wait()` / `shutdown()` / `shutdown_timeout`), from a helper's
//! review (2026-12-06): one test per fault found (each failed before its fix:
//! RELIABILITY.md, findings 329, found by two reviews at once, 332 and 333), and pins of
//! what was checked and found sound. The `metrics` pins need the feature:
//! `cargo test -p nb-aiopool --all-features --test stats_agree_with_handles`.

#[cfg(feature = "metrics")]
mod metric_figures;
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use nb_aiopool::{CancelReason, CommonAioPool, NoQueueAioPool, PoolStats, TaskHandle};

use support::serial;

/// The message of the panics the tests raise on purpose.
const BOOM: &str = "boom";

fn ended(s: &PoolStats) -> u64 {
    s.completed + s.panicked + s.cancelled
}

fn no_queue(name: &str, c: usize) -> NoQueueAioPool {
    NoQueueAioPool::builder()
        .name(name)
        .max_concurrency(c)
        .process_wide(false)
        .build()
}

// ----- 329: `wait()` by a plain executor on a stranded pool waited for ever ----------------

/// A SmartAioPool whose runtime ended with a task running (queued again to run from its
/// recipe) and one queued: the pool is stranded, no runtime it knows is alive. Its
/// handles, groups and streams awaited by a plain executor are served by a thread of
/// the crate (RELIABILITY.md, findings 273, 275), and the README says such tasks run
/// "awaited where no runtime can take them, on a runtime of the crate's own thread".
/// `pool.wait()` (and `shutdown()`) awaited the same way waited for ever: the wait
/// offered no runtime and started no serving thread, so the counts stayed at
/// `queued: 2` for good. Fails before the fix with "timed out (5 s): wait() by a plain
/// executor".
#[test]
fn a_wait_polled_by_a_plain_executor_on_a_stranded_pool_returns() {
    let _serial = serial();
    for rerun in [true, false] {
        for shutdown in [false, true] {
            let name = format!("stranded_wait_{rerun}_{shutdown}");
            let pool = support::smart_named(&name, 1, 2, rerun);
            let rt = support::current_thread();
            let runs = Arc::new(AtomicUsize::new(0));
            rt.block_on(async {
                let first = pool.submit(support::cut_off_once(&runs, 1)).await.unwrap();
                first.detach();
                pool.submit(|| async { 2u32 }).await.unwrap().detach();
                support::reach(&runs, 1, Duration::from_secs(5)).await;
            });
            drop(rt);
            let stats = pool.stats();
            assert_eq!(stats.queued, 2 - usize::from(!rerun), "{name}: {stats:?}");
            let p = pool.clone();
            let stats = support::on_thread_within("wait() by a plain executor", 5, move || {
                if shutdown {
                    support::plain_block_on(p.shutdown());
                } else {
                    support::plain_block_on(p.wait());
                }
                p.stats()
            });
            assert_eq!(stats.unfinished(), 0, "{name}: {stats:?}");
            assert_eq!(ended(&stats), 2, "{name}: {stats:?}");
            assert_eq!(stats.completed, 1 + u64::from(rerun), "{name}: {stats:?}");
        }
    }
}

/// The same with the wait made, by a plain executor, while the runtime still runs the
/// task: the runtime's end strands the pool while the wait is pending; the wait must
/// hear of it (before the fix nothing woke it) and have the pool served. Fails before
/// the fix with "timed out (5 s): the plain executor's wait".
#[test]
fn a_wait_pending_on_a_plain_executor_when_the_pool_is_stranded_returns() {
    let _serial = serial();
    let pool = support::smart_named("stranded_while_waiting", 1, 2, true);
    let rt = support::multi_thread_of(1);
    let runs = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let first = pool.submit(support::cut_off_once(&runs, 1)).await.unwrap();
        first.detach();
        support::reach(&runs, 1, Duration::from_secs(5)).await;
    });
    let waiting = Arc::new(AtomicBool::new(false));
    let (p, w) = (pool.clone(), waiting.clone());
    let waiter = std::thread::spawn(move || {
        let wait = p.wait();
        w.store(true, Ordering::SeqCst);
        support::plain_block_on(wait);
        p.stats()
    });
    support::until("the wait to be made", || waiting.load(Ordering::SeqCst));
    std::thread::sleep(Duration::from_millis(20)); // polled, pending
    drop(rt);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(waiter.join());
    });
    let stats = match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(stats)) => stats,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("timed out (5 s): the plain executor's wait"),
    };
    assert_eq!(stats.unfinished(), 0, "{stats:?}");
    assert_eq!(stats.completed, 1, "{stats:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "run again once");
}

// ----- 332: a running task's cancel reason was the last cancel's, not the first -----------

/// A task that, once started, blocks its worker thread in one long poll until `release`
/// is sent: the slot sees a `cancel_all` (or a shutdown deadline) only after that poll.
/// Returns its handle, submitted from `rt`, once the poll has begun.
fn one_long_poll(
    pool: &CommonAioPool,
    rt: &tokio::runtime::Runtime,
) -> (TaskHandle<()>, std::sync::mpsc::Sender<()>) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let in_poll = Arc::new(AtomicBool::new(false));
    let flag = in_poll.clone();
    let h = rt
        .block_on(pool.submit(async move {
            flag.store(true, Ordering::SeqCst);
            let _ = released.recv();
            std::future::pending::<()>().await;
        }))
        .unwrap();
    support::until("the task's poll", || in_poll.load(Ordering::SeqCst));
    (h, release)
}

/// `cancel_all` cancels a running task "at its next `.await`; their handles resolve to
/// `CancelAll`", and a cancel decided first holds (an abort's does, and
/// `cancel_all_sparing` keeps a job an earlier call covered covered). But the slot read
/// the reason when it saw the mark, from the pool's one `cancel_reason`, which the last
/// call sets: a `shutdown_timeout` whose deadline passed while the task was still in the
/// poll it was in at the `cancel_all` relabelled it `Abandoned`, and its report counted
/// it abandoned. (The deadline runs on a paused runtime of its own, so its order with
/// the release is fixed.) Fails before the fix with `left: Some(Abandoned)`,
/// `right: Some(CancelAll)`.
#[test]
fn a_running_task_cancelled_by_cancel_all_keeps_its_reason_past_a_later_deadline() {
    let _serial = serial();
    let pool = support::common_local(1, 1);
    let rt = support::multi_thread_of(1);
    let (h, release) = one_long_poll(&pool, &rt);
    let report = support::paused_runtime().block_on(async {
        let cancelled = pool.cancel_all();
        // Released well after the deadline (paused time: in this order).
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            release.send(()).unwrap();
        });
        let report = pool.shutdown_timeout(Duration::from_millis(20)).await;
        release.await.unwrap();
        cancelled.await;
        report
    });
    let reason = h.blocking_wait().unwrap_err().cancel_reason();
    assert_eq!(reason, Some(CancelReason::CancelAll), "{report:?}");
    assert_eq!(
        report.abandoned(),
        0,
        "cancelled before the deadline: {report:?}"
    );
    assert_eq!(pool.stats().cancelled, 1);
}

/// The other order, where the counts are wrong: a `shutdown_timeout` whose deadline
/// passed while a task was in one long poll abandoned it (`ShutdownReport::abandoned`:
/// "still queued or running at the deadline, which were dropped"), and a `cancel_all`
/// made before that poll returned relabelled it `CancelAll`: the report said
/// `finished: 1, abandoned: 0`, `is_complete()` "every task finished before the
/// deadline", though the deadline cut the task. Fails before the fix with "the deadline
/// abandoned the task: ShutdownReport { finished: 1, abandoned: 0 }".
#[test]
fn a_task_abandoned_at_a_deadline_is_reported_abandoned_though_a_cancel_all_follows() {
    let _serial = serial();
    let pool = support::common_local(1, 1);
    let rt = support::multi_thread_of(1);
    let (h, release) = one_long_poll(&pool, &rt);
    let report = support::paused_runtime().block_on(async {
        let report = tokio::spawn(pool.shutdown_timeout(Duration::from_millis(20)));
        // Past the deadline (paused time: the shutdown's timer fires first).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let cancelled = pool.cancel_all();
        release.send(()).unwrap();
        let report = report.await.unwrap();
        cancelled.await;
        report
    });
    assert!(
        !report.is_complete() && report.abandoned() == 1,
        "the deadline abandoned the task: {report:?}"
    );
    let reason = h.blocking_wait().unwrap_err().cancel_reason();
    assert_eq!(reason, Some(CancelReason::Abandoned));
    assert_eq!(pool.stats().cancelled, 1);
}

// ----- 333: a SmartAioPool task aborted while running, then cut off by its runtime's
// end, is reported as if it never started -------------------------------------------------

/// A task that started, was aborted by its handle while its current-thread runtime was
/// not driven (its slot never saw the abort), and whose runtime then ended. On a
/// CommonAioPool the slot's drop reports the end as a run's end: a run-time sample and
/// the `task cancelled` event in the task's span. On a SmartAioPool (the copy's
/// `aborted()` branch of `Slot::drop`, through `end_aborted`) the task got no run-time
/// sample and a root `task cancelled` event, as one cancelled before it started; the
/// crate docs exempt from the sample only "a run cut off by its runtime's end, to run
/// again", and this one does not run again. Fails before the fix with "smart: run-time
/// samples: left: 0.0, right: 1.0".
#[cfg(feature = "metrics")]
#[test]
fn a_started_task_aborted_then_cut_off_by_its_runtime_records_its_run_time() {
    use metrics_util::MetricKind::Histogram;
    let _serial = serial();
    for kind in ["common", "smart"] {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let name = format!("aborted_then_cut_{kind}");
        let (common, smart) = metrics::with_local_recorder(&recorder, || {
            let common = CommonAioPool::builder()
                .name(name.as_str())
                .max_concurrency(1)
                .process_wide(false)
                .build();
            (common, support::smart_named(&name, 1, 1, true))
        });
        let rt = support::current_thread();
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let h = if kind == "common" {
            rt.block_on(common.submit(async move {
                s.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }))
            .unwrap()
        } else {
            rt.block_on(smart.submit(move || {
                let s = s.clone();
                async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                }
            }))
            .unwrap()
        };
        rt.block_on(support::reach(&started, 1, Duration::from_secs(5)));
        // The runtime is not driven now: the slot never sees the abort.
        h.abort();
        drop(rt);
        let stats = if kind == "common" {
            common.stats()
        } else {
            smart.stats()
        };
        assert_eq!(
            (stats.cancelled, stats.unfinished()),
            (1, 0),
            "{kind}: {stats:?}"
        );
        let mut figures = metric_figures::Figures::default();
        figures.take(&snapshotter, &name);
        assert_eq!(figures.against(&stats), None, "{kind}");
        assert_eq!(
            figures.get(Histogram, "nb_aiopool_queue_wait_seconds"),
            1.0,
            "{kind}: queue-wait samples"
        );
        assert_eq!(
            figures.get(Histogram, "nb_aiopool_run_time_seconds"),
            1.0,
            "{kind}: run-time samples"
        );
        assert_eq!(started.load(Ordering::SeqCst), 1, "{kind}: not run again");
    }
}

// ----- pins: checked and found sound --------------------------------------------------------

/// Pinned: from a plain thread, `blocking_submit` then `blocking_wait` on each pool (its
/// runtime a multi-thread one): once `blocking_wait` returns, `stats()` counts the task.
#[test]
fn pin_blocking_wait_from_a_plain_thread_is_counted_when_it_returns() {
    let _serial = serial();
    let rt = support::multi_thread_of(2);
    let common = support::common_local(2, 4);
    let smart = support::smart_named("pin_blocking_smart", 2, 4, true);
    let noq = no_queue("pin_blocking_noq", 2);
    rt.block_on(async {
        // Each pool's home is `rt`.
        common.run(async {}).await.unwrap();
        smart.run(|| async {}).await.unwrap();
        noq.run(async {}).await.unwrap();
    });
    let (c, s, n) = (common.clone(), smart.clone(), noq.clone());
    support::on_thread_within("blocking waits", 30, move || {
        for round in 0..200u64 {
            let yields = async move {
                tokio::task::yield_now().await;
                round
            };
            let h = c.blocking_submit(yields).unwrap();
            assert_eq!(h.blocking_wait().unwrap(), round);
            assert_eq!(c.stats().completed, round + 2, "common {:?}", c.stats());
            let h = s
                .blocking_submit(move || async move {
                    tokio::task::yield_now().await;
                    round
                })
                .unwrap();
            assert_eq!(h.blocking_wait().unwrap(), round);
            assert_eq!(s.stats().completed, round + 2, "smart {:?}", s.stats());
            let h = n
                .blocking_submit(async move {
                    tokio::task::yield_now().await;
                    round
                })
                .unwrap();
            assert_eq!(h.blocking_wait().unwrap(), round);
            assert_eq!(n.stats().completed, round + 2, "no_queue {:?}", n.stats());
        }
    });
}

/// Pinned: issue 9's `batch_run` promise on the two pools the earlier pins left out
/// (SmartAioPool, NoQueueAioPool) and CommonAioPool, on a multi-thread runtime:
/// `completed` is up by n right after `batch_run` of n returns.
#[test]
fn pin_batch_run_of_n_counts_n_when_it_returns_on_every_pool() {
    let _serial = serial();
    support::multi_thread_of(2).block_on(async {
        let smart = support::smart_named("pin_batch_smart", 3, 5, true);
        let noq = no_queue("pin_batch_noq", 3);
        let common = support::common_local(3, 5);
        let job = |i: u64| async move {
            if i % 3 == 0 {
                tokio::task::yield_now().await;
            }
            i
        };
        for round in 1..=50u64 {
            let r = smart
                .batch_run((0..10u64).map(|i| move || job(i)))
                .await
                .unwrap();
            assert_eq!(r.len(), 10);
            assert_eq!(smart.stats().completed, round * 10, "{:?}", smart.stats());
            let r = noq.batch_run((0..10u64).map(job)).await.unwrap();
            assert_eq!(r.len(), 10);
            assert_eq!(noq.stats().completed, round * 10, "{:?}", noq.stats());
            let r = common.batch_run((0..10u64).map(job)).await.unwrap();
            assert_eq!(r.len(), 10);
            assert_eq!(common.stats().completed, round * 10, "{:?}", common.stats());
        }
    });
}

/// Pinned: a SmartTaskGroup's and a TaskGroup's `join_next`, and the map streams of both
/// pools, yield a result only once `stats()` counts its task (panics included).
#[test]
fn pin_groups_and_streams_yield_only_counted_results() {
    let _serial = serial();
    support::hide_panics(&[BOOM]);
    support::multi_thread_of(2).block_on(async {
        let smart = support::smart_named("pin_groups_smart", 3, 5, true);
        let common = support::common_local(3, 5);
        let job = |i: u32| async move {
            if i % 2 == 0 {
                tokio::task::yield_now().await;
            }
            if i == 5 {
                panic!("{BOOM}");
            }
            i
        };
        for _ in 0..20 {
            let before = ended(&smart.stats());
            let mut g = smart.group::<u32>();
            for i in 0..8u32 {
                g.submit(move || job(i)).await.unwrap();
            }
            let mut got = 0;
            while g.join_next().await.is_some() {
                got += 1;
                let s = smart.stats();
                assert!(
                    ended(&s) >= before + got,
                    "smart group, {got} joined: {s:?}"
                );
            }
            let before = ended(&common.stats());
            let mut g = common.group::<u32>();
            for i in 0..8u32 {
                g.submit(job(i)).await.unwrap();
            }
            let mut got = 0;
            while g.join_next().await.is_some() {
                got += 1;
                let s = common.stats();
                assert!(ended(&s) >= before + got, "group, {got} joined: {s:?}");
            }
            let before = ended(&smart.stats());
            let mut st = smart.map_unordered(futures_util::stream::iter(0..8u32), move |i| {
                move || job(i + 10)
            });
            let mut got = 0;
            while st.next().await.is_some() {
                got += 1;
                let s = smart.stats();
                assert!(
                    ended(&s) >= before + got,
                    "smart stream, {got} yielded: {s:?}"
                );
            }
            let before = ended(&common.stats());
            let mut st =
                common.map_ordered(futures_util::stream::iter(0..8u32), move |i| job(i + 10));
            let mut got = 0;
            while st.next().await.is_some() {
                got += 1;
                let s = common.stats();
                assert!(
                    ended(&s) >= before + got,
                    "ordered stream, {got} yielded: {s:?}"
                );
            }
        }
    });
}

/// Pinned: a thread reading `stats()` all along while each pool runs a mixed load
/// (yields, panics, aborts of queued and running tasks, `cancel_all`) on a multi-thread
/// runtime: `running` never above `max_concurrency`, `queued` never above
/// `max_queue_size` (0 for a NoQueueAioPool), `submitted` and the ended count never go
/// back; after `wait()`, nothing is left and every submit is counted.
#[test]
fn pin_stats_stay_within_bounds_and_never_go_back_under_load() {
    let _serial = serial();
    support::hide_panics(&[BOOM]);
    for kind in 0..3 {
        let rt = support::multi_thread_of(2);
        let stop = Arc::new(AtomicBool::new(false));
        let common = support::common_local(3, 4);
        let smart = support::smart_named("pin_bounds_smart", 3, 4, true);
        let noq = no_queue("pin_bounds_noq", 3);
        let stats = {
            let (c, s, n) = (common.clone(), smart.clone(), noq.clone());
            move || match kind {
                0 => c.stats(),
                1 => s.stats(),
                _ => n.stats(),
            }
        };
        let reader = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::spawn(move || {
                let queue = if kind == 2 { 0 } else { 4 };
                let mut last = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let st = stats();
                    let now = (st.submitted, ended(&st));
                    if st.running > 3 || st.queued > queue || now.0 < last.0 || now.1 < last.1 {
                        return Some(format!("{st:?} after (submitted, ended) {last:?}"));
                    }
                    last = now;
                }
                None
            })
        };
        rt.block_on(async {
            for round in 0..100u32 {
                let mut hs: Vec<TaskHandle<u32>> = Vec::new();
                for i in 0..7u32 {
                    let boom = i == 3 && round % 5 == 0;
                    let job = move || async move {
                        if i % 2 == 0 {
                            tokio::task::yield_now().await;
                        }
                        if boom {
                            panic!("{BOOM}");
                        }
                        i
                    };
                    let h = match kind {
                        0 => common.submit(job()).await.unwrap(),
                        1 => smart.submit(job).await.unwrap(),
                        _ => noq.submit(job()).await.unwrap(),
                    };
                    if i == 6 && round % 3 == 0 {
                        h.abort();
                    }
                    hs.push(h);
                }
                if round % 7 == 0 {
                    match kind {
                        0 => common.cancel_all().await,
                        1 => smart.cancel_all().await,
                        _ => noq.cancel_all().await,
                    }
                }
                for h in hs {
                    let _ = h.await;
                }
            }
            match kind {
                0 => common.wait().await,
                1 => smart.wait().await,
                _ => noq.wait().await,
            }
        });
        stop.store(true, Ordering::Relaxed);
        if let Some(fault) = reader.join().unwrap() {
            panic!("pool kind {kind}: {fault}");
        }
        let st = stats();
        assert_eq!((st.unfinished(), st.submitted), (0, 700), "{st:?}");
    }
}

/// Pinned: a SmartAioPool stranded by its runtime's end (both runtime flavours, with
/// and without re-runs), its handles `blocking_wait`ed from a plain thread (served by
/// the wait itself): each is counted when its wait returns, and a wait on a live
/// runtime then finds nothing left; with `metrics`, the counters and gauges agree with
/// `stats()` before and after the pool's drop.
#[test]
fn pin_stranded_tasks_blocking_waited_are_counted_when_their_waits_return() {
    let _serial = serial();
    #[cfg(feature = "metrics")]
    let (recorder, snapshotter) = {
        let r = metrics_util::debugging::DebuggingRecorder::new();
        let s = r.snapshotter();
        (r, s)
    };
    for multi in [false, true] {
        for rerun in [true, false] {
            let name = format!("pin_stranded_{multi}_{rerun}");
            #[cfg(feature = "metrics")]
            let pool = metrics::with_local_recorder(&recorder, || {
                support::smart_named(&name, 2, 4, rerun)
            });
            #[cfg(not(feature = "metrics"))]
            let pool = support::smart_named(&name, 2, 4, rerun);
            let rt = if multi {
                support::multi_thread_of(2)
            } else {
                support::current_thread()
            };
            let (r1, r2) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let handles = rt.block_on(async {
                let h1 = pool.submit(support::cut_off_once(&r1, 1)).await.unwrap();
                let h2 = pool.submit(support::cut_off_once(&r2, 2)).await.unwrap();
                let h3 = pool.submit(|| async { 3u32 }).await.unwrap();
                support::reach(&r1, 1, Duration::from_secs(5)).await;
                support::reach(&r2, 1, Duration::from_secs(5)).await;
                [h1, h2, h3]
            });
            drop(rt);
            let p = pool.clone();
            let n = name.clone();
            support::on_thread_within("blocking waits on a stranded pool", 20, move || {
                for (i, h) in handles.into_iter().enumerate() {
                    let r = h.blocking_wait();
                    let s = p.stats();
                    assert!(ended(&s) > i as u64, "{n}: after wait {i} ({r:?}): {s:?}");
                }
            });
            let stats = support::current_thread().block_on(async {
                pool.wait().await;
                pool.stats()
            });
            let lost = if rerun { 0 } else { 2 };
            assert_eq!(stats.unfinished(), 0, "{name}: {stats:?}");
            assert_eq!(
                (stats.completed, stats.cancelled),
                (3 - lost, lost),
                "{name}"
            );
            #[cfg(feature = "metrics")]
            {
                let mut figures = metric_figures::Figures::default();
                figures.take(&snapshotter, &name);
                assert_eq!(figures.against(&stats), None, "{name}");
                drop(pool);
                figures.take(&snapshotter, &name);
                assert_eq!(figures.against(&stats), None, "{name}: after the drop");
            }
        }
    }
}

/// Pinned: a running task aborted by its handle resolves at once (the documented
/// exception), and a `wait()` made then returns only once the pool has counted it:
/// nothing running, one cancelled, on both runtime flavours.
#[test]
fn pin_a_wait_after_an_abort_of_a_running_task_returns_once_it_is_counted() {
    let _serial = serial();
    for multi in [false, true] {
        let rt = if multi {
            support::multi_thread_of(2)
        } else {
            support::current_thread()
        };
        rt.block_on(async {
            let pool = support::common_local(2, 2);
            let started = Arc::new(AtomicUsize::new(0));
            let s = started.clone();
            let h = pool
                .submit(async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                })
                .await
                .unwrap();
            support::reach(&started, 1, Duration::from_secs(5)).await;
            h.abort();
            support::within("wait", pool.wait()).await;
            let st = pool.stats();
            assert_eq!(
                (st.unfinished(), st.cancelled),
                (0, 1),
                "multi {multi}: {st:?}"
            );
        });
    }
}

/// Pinned: `shutdown_timeout`'s report adds up with `stats()`: one finished before the
/// deadline, two running and one queued abandoned at it (paused time).
#[test]
fn pin_a_shutdown_reports_what_stats_count() {
    let _serial = serial();
    support::paused_runtime().block_on(async {
        let pool = support::common_local(2, 4);
        let mut hs = vec![
            pool.submit(async { tokio::time::sleep(Duration::from_millis(10)).await })
                .await
                .unwrap(),
            pool.submit(std::future::pending::<()>()).await.unwrap(),
        ];
        hs.push(pool.submit(std::future::pending::<()>()).await.unwrap());
        hs.push(pool.submit(async {}).await.unwrap());
        let report = pool.shutdown_timeout(Duration::from_secs(1)).await;
        let st = pool.stats();
        assert_eq!((report.finished(), report.abandoned()), (1, 3), "{st:?}");
        assert_eq!((st.completed, st.cancelled, st.unfinished()), (1, 3, 0));
        for h in hs {
            assert!(h.is_finished());
        }
    });
}

// ----- 334: a cancel decided first, then the task's runtime ends ------------------------

/// Starts a task on a current-thread runtime of its own, then leaves that runtime
/// undriven: the task's slot sees no mark from now on.
fn started_on_an_undriven_runtime(
    pool: &CommonAioPool,
) -> (tokio::runtime::Runtime, TaskHandle<()>) {
    let rt = support::current_thread();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let h = rt
        .block_on(pool.submit(async move {
            s.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }))
        .unwrap();
    assert_eq!(
        rt.block_on(support::reach(&started, 1, Duration::from_secs(5))),
        1
    );
    (rt, h)
}

#[test]
fn a_running_task_cancel_all_covered_keeps_cancel_all_when_its_runtime_ends() {
    let _serial = serial();
    let pool = support::common_local(1, 1);
    let (rt, h) = started_on_an_undriven_runtime(&pool);
    drop(pool.cancel_all()); // the cancellation happens at the call
    drop(rt);
    let reason = h.blocking_wait().unwrap_err().cancel_reason();
    assert_eq!(
        reason,
        Some(CancelReason::CancelAll),
        "cancel_all came first"
    );
    let s = pool.stats();
    assert_eq!((s.cancelled, s.unfinished()), (1, 0), "{s:?}");
}

#[test]
fn a_running_task_a_deadline_abandoned_is_reported_abandoned_when_its_runtime_ends() {
    let _serial = serial();
    let pool = support::common_local(1, 1);
    let (rt, h) = started_on_an_undriven_runtime(&pool);
    let paused = support::paused_runtime();
    let mut shut = Box::pin(pool.shutdown_timeout(Duration::from_millis(20)));
    // Paused time: the deadline (20 ms) passes, then the wait for the task is cut at 100 ms.
    let waiting = paused
        .block_on(async { tokio::time::timeout(Duration::from_millis(100), &mut shut).await });
    assert!(
        waiting.is_err(),
        "the task's runtime is not driven: the shutdown still waits"
    );
    drop(rt);
    let report = paused.block_on(shut);
    let reason = h.blocking_wait().unwrap_err().cancel_reason();
    assert_eq!(reason, Some(CancelReason::Abandoned), "{report:?}");
    assert!(
        !report.is_complete() && report.abandoned() == 1,
        "the deadline came first: {report:?}"
    );
}

#[test]
fn a_task_that_left_the_queue_keeps_the_first_cancels_reason() {
    let _serial = serial();
    for (first, end) in [
        ("cancel_all", "start"),
        ("deadline", "start"),
        ("cancel_all", "runtime_end"),
        ("deadline", "runtime_end"),
    ] {
        let pool = support::common_local(1, 4);
        let (_rt1, rt2, b) = support::handed_to_an_undriven_runtime(&pool, async {});
        let paused = support::paused_runtime();
        let deadline = || {
            let cut = paused.block_on(async {
                tokio::time::timeout(
                    Duration::from_millis(100),
                    pool.shutdown_timeout(Duration::from_millis(20)),
                )
                .await
            });
            // B never started: a `cancel_all` drops it at the call, a deadline at the
            // deadline, though rt2 is not driven (finding 400).
            assert!(cut.is_ok(), "the shutdown returns by its deadline");
        };
        if first == "cancel_all" {
            drop(pool.cancel_all());
            deadline();
        } else {
            deadline();
            drop(pool.cancel_all());
        }
        let err = if end == "start" {
            rt2.block_on(support::within("B", b)).unwrap_err()
        } else {
            drop(rt2);
            b.blocking_wait().unwrap_err()
        };
        let want = if first == "cancel_all" {
            CancelReason::CancelAll
        } else {
            CancelReason::Abandoned
        };
        assert_eq!(
            err.cancel_reason(),
            Some(want),
            "{first} first, then B's {end}"
        );
        let s = pool.stats();
        assert_eq!(
            (s.cancelled, s.unfinished()),
            (1, 0),
            "{first}, {end}: {s:?}"
        );
    }
}
