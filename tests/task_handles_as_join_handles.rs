//! `TaskHandle` as a user treats a tokio `JoinHandle` (src/task/handle.rs,
//! src/task/shared.rs, src/task/run.rs): a task that awaits its own handle, handles of a
//! stranded SmartAioPool outliving the pool, a handle's waker moved to another runtime
//! after the first one died, outputs of unusual layouts, aborts racing a task's end or its
//! runtime's end on another thread, handles of `batch_submit`, handles held while the pool
//! is dropped, a `blocking_wait` whose task's runtime ends, user `Drop`s that call back into
//! the pool, SmartAioPool tasks aborted or cancelled on a runtime that is not driven, task
//! ids, and handles moved about at random: behaviour worth keeping, pinned (a helper's
//! review, 2026-12-06; its one finding, a handle polled with a waker whose `clone` or
//! `drop` panics, is a documented limitation: RELIABILITY.md, 362).

// Handles are returned from `block_on` to be awaited later, elsewhere.
#![allow(clippy::async_yields_async)]

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use nb_aiopool::{CancelReason, CommonAioPool, NoQueueAioPool, SmartAioPool, TaskHandle};
use support::{current_thread, multi_thread_of, on_thread_within, until, within, Counted, Gate};

/// The panics the tests raise on purpose, kept off stderr (one list for the whole binary:
/// see `support::hide_panics`).
const HIDDEN: &[&str] = &[
    "TaskHandle polled after it returned its result",
    "task_handles_as_join_handles: a random task panics",
];

fn no_queue_local(c: usize) -> NoQueueAioPool {
    NoQueueAioPool::builder()
        .max_concurrency(c)
        .process_wide(false)
        .build()
}

fn smart_pool(c: usize, q: usize) -> SmartAioPool {
    SmartAioPool::builder()
        .max_concurrency(c)
        .max_queue_size(q)
        .process_wide(false)
        .auto_shutdown(false)
        .build()
}

/// Polls `fut` once with a no-op waker.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(fut).poll(&mut cx)
}

// ---------------------------------------------------------------------------------------
// A task that awaits its own handle.
// ---------------------------------------------------------------------------------------

/// The user hands a task its own handle (through a oneshot channel, as one does with a
/// tokio `JoinHandle` to let a task watch itself) and the task awaits it, in a pool of
/// one slot. With tokio this hangs; the pool's docs promise (`TaskHandle`, "Awaiting from
/// inside the same pool") that "when every slot is held by a task waiting for a task of
/// the same pool (one still queued, which needs a slot, or one itself waiting), no task
/// could ever finish. The wait that completes that picture is broken": the only slot
/// waits on a running task that is itself waiting. Expected: the wait is broken (the
/// task's own handle resolves to `WouldDeadlock`, the task is cancelled), `wait()`
/// returns, the pool runs the next task. Pinned: so in every pool (the task sees its own
/// handle resolve to `WouldDeadlock`, and is counted cancelled). (With a free slot left,
/// the wait is not broken and hangs, as awaiting one's own tokio `JoinHandle` does.)
#[test]
fn pin_a_task_awaiting_its_own_handle_in_a_one_slot_pool_is_broken_not_hung() {
    on_thread_within("a task awaiting its own handle", 20, || {
        let rt = multi_thread_of(2);
        rt.block_on(async {
            for which in ["common", "no_queue", "smart"] {
                let seen = Arc::new(std::sync::Mutex::new(None));
                let s = Arc::clone(&seen);
                let (tx, rx) = tokio::sync::oneshot::channel::<TaskHandle<u32>>();
                let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
                let job = move || {
                    let (s, rx) = (Arc::clone(&s), rx.lock().unwrap().take());
                    async move {
                        let Some(rx) = rx else { return 0 };
                        let own = rx.await.unwrap();
                        let r = own.await;
                        *s.lock().unwrap() = Some(format!("{r:?}"));
                        tokio::task::yield_now().await;
                        1
                    }
                };
                let (stats, next) = match which {
                    "common" => {
                        let pool = support::common_local(1, 4);
                        tx.send(pool.submit(job()).await.unwrap()).ok().unwrap();
                        within(
                            "common: wait() after a task awaited its own handle",
                            pool.wait(),
                        )
                        .await;
                        (pool.stats(), pool.run(async { 2 }).await.ok())
                    }
                    "no_queue" => {
                        let pool = no_queue_local(1);
                        tx.send(pool.submit(job()).await.unwrap()).ok().unwrap();
                        within(
                            "no_queue: wait() after a task awaited its own handle",
                            pool.wait(),
                        )
                        .await;
                        (pool.stats(), pool.run(async { 2 }).await.ok())
                    }
                    _ => {
                        let pool = smart_pool(1, 4);
                        tx.send(pool.submit(job).await.unwrap()).ok().unwrap();
                        within(
                            "smart: wait() after a task awaited its own handle",
                            pool.wait(),
                        )
                        .await;
                        (pool.stats(), pool.run(|| async { 2 }).await.ok())
                    }
                };
                assert_eq!(next, Some(2), "{which}: the pool did not run the next task");
                assert_eq!(
                    (stats.completed, stats.cancelled),
                    (0, 1),
                    "{which}: the self-awaiting task was not counted as cancelled: {stats:?}"
                );
                let seen = seen.lock().unwrap().clone();
                assert!(
                    seen.as_deref().is_none_or(|s| s.contains("WouldDeadlock")),
                    "{which}: the task saw its own handle resolve to {seen:?}"
                );
            }
        });
    });
}

// ---------------------------------------------------------------------------------------
// Handles outliving a stranded SmartAioPool.
// ---------------------------------------------------------------------------------------

/// A SmartAioPool task is cut off by the end of its runtime (queued again, no runtime
/// left: the pool is stranded); the user drops the pool, keeping the handle, and later
/// awaits the handle on a new runtime. `SmartAioPool`, "Dropping": "a stranded task whose
/// handle is held ... keeps the pool until it is run (awaiting the handle offers the
/// awaiting runtime) or the handle is dropped". Pinned: the re-run's value (9).
#[test]
fn pin_a_stranded_smart_task_of_a_dropped_pool_runs_when_awaited() {
    on_thread_within("a stranded task of a dropped pool", 20, || {
        let runs = Arc::new(AtomicUsize::new(0));
        let (pool, rt, h) = support::full_smart_pool_on_a_runtime(&runs);
        drop(rt);
        drop(pool);
        let r = current_thread().block_on(within("the handle of a dropped stranded pool", h));
        assert_eq!(
            r.ok(),
            Some(9),
            "the stranded task was not run again for its handle"
        );
    });
}

/// The same, awaited with `blocking_wait` from a plain thread (which makes "a
/// current-thread runtime ... for the rest of its wait" for a stranded pool). Pinned: 9.
#[test]
fn pin_a_stranded_smart_task_of_a_dropped_pool_runs_in_blocking_wait() {
    on_thread_within(
        "blocking_wait on a stranded task of a dropped pool",
        20,
        || {
            let runs = Arc::new(AtomicUsize::new(0));
            let (pool, rt, h) = support::full_smart_pool_on_a_runtime(&runs);
            drop(rt);
            drop(pool);
            let r = h.blocking_wait();
            assert_eq!(
                r.ok(),
                Some(9),
                "the stranded task was not run again for blocking_wait"
            );
        },
    );
}

// ---------------------------------------------------------------------------------------
// A handle's waker moved to another runtime after the first died.
// ---------------------------------------------------------------------------------------

/// The user polls a handle on runtime A (a `timeout` that expires), drops A, then awaits
/// the handle on runtime B, and on a plain executor; the task runs on a third runtime M
/// and ends when another thread opens its gate. Expected (as a tokio `JoinHandle`): the
/// newest waker is the one woken, in every pool.
#[test]
fn pin_a_handle_polled_on_a_dead_runtime_then_awaited_elsewhere_is_woken_there() {
    on_thread_within("handles moved between runtimes", 30, || {
        let m = multi_thread_of(1);
        let common = support::common_local(2, 2);
        let no_queue = no_queue_local(2);
        let smart = smart_pool(2, 2);
        for which in ["common", "no_queue", "smart"] {
            for plain in [false, true] {
                let gate = Gate::default();
                let g = gate.clone();
                let mut h: TaskHandle<u32> = m.block_on(async {
                    match which {
                        "common" => common
                            .submit(async move {
                                g.wait().await;
                                5
                            })
                            .await
                            .unwrap(),
                        "no_queue" => no_queue
                            .submit(async move {
                                g.wait().await;
                                5
                            })
                            .await
                            .unwrap(),
                        _ => smart
                            .submit(move || {
                                let g = g.clone();
                                async move {
                                    g.wait().await;
                                    5
                                }
                            })
                            .await
                            .unwrap(),
                    }
                });
                let a = current_thread();
                let r = a.block_on(async {
                    tokio::time::timeout(Duration::from_millis(5), &mut h).await
                });
                assert!(r.is_err(), "{which}: resolved before the gate opened");
                drop(a);
                let opener = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    gate.open();
                });
                let r = if plain {
                    support::plain_block_on(h)
                } else {
                    current_thread().block_on(within("the handle on runtime B", h))
                };
                opener.join().unwrap();
                assert_eq!(
                    r.ok(),
                    Some(5),
                    "{which} (plain: {plain}): not the task's value"
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// Outputs of unusual layouts.
// ---------------------------------------------------------------------------------------

#[repr(align(256))]
#[derive(Debug, PartialEq)]
struct Aligned(u8);

/// Outputs that are large (16 KiB), over-aligned (256), zero-sized, and `!Sync`
/// (`Cell`), from every pool: each handle says `is_finished` once its task ended, a poll
/// then is ready with the value (as a `JoinHandle`'s), and a second poll panics with the
/// documented message ("Panics if polled again after it returned its result"), in every
/// pool; `is_finished` stays `true` after the value was taken.
#[test]
fn pin_outputs_of_unusual_layouts_come_back_whole_from_every_pool() {
    support::hide_panics(HIDDEN);
    let rt = multi_thread_of(2);
    rt.block_on(async {
        let common = support::common_local(2, 8);
        let no_queue = no_queue_local(2);
        let smart = smart_pool(2, 8);
        macro_rules! check {
            ($name:expr, $submit:expr, $want:expr) => {{
                let mut h = $submit;
                within($name, async {
                    while !h.is_finished() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
                let Poll::Ready(r) = poll_once(&mut h) else {
                    panic!("{}: is_finished said true, but the poll was pending", $name);
                };
                let v = r.expect($name);
                assert!(v == $want, "{}: not the value the task returned", $name);
                assert!(
                    h.is_finished(),
                    "{}: no longer finished after the take",
                    $name
                );
                let again =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| poll_once(&mut h)));
                let msg = support::panic_message(&*again.expect_err("a second poll did not panic"));
                assert!(msg.contains("polled after it returned"), "{}: {msg}", $name);
            }};
        }
        let big = || {
            let mut v = [0u8; 16 * 1024];
            v[16 * 1024 - 1] = 7;
            v
        };
        check!(
            "common big",
            common.submit(async move { big() }).await.unwrap(),
            big()
        );
        check!(
            "no_queue big",
            no_queue.submit(async move { big() }).await.unwrap(),
            big()
        );
        check!(
            "smart big",
            smart.submit(move || async move { big() }).await.unwrap(),
            big()
        );
        check!(
            "common aligned",
            common.submit(async { Aligned(3) }).await.unwrap(),
            Aligned(3)
        );
        check!(
            "no_queue aligned",
            no_queue.submit(async { Aligned(3) }).await.unwrap(),
            Aligned(3)
        );
        check!(
            "smart aligned",
            smart.submit(|| async { Aligned(3) }).await.unwrap(),
            Aligned(3)
        );
        check!("common unit", common.submit(async {}).await.unwrap(), ());
        check!(
            "no_queue unit",
            no_queue.submit(async {}).await.unwrap(),
            ()
        );
        check!("smart unit", smart.submit(|| async {}).await.unwrap(), ());
        let cell = std::cell::Cell::new(4u32);
        check!(
            "common cell",
            common
                .submit(async { std::cell::Cell::new(4u32) })
                .await
                .unwrap(),
            cell
        );
        check!(
            "no_queue cell",
            no_queue
                .submit(async { std::cell::Cell::new(4u32) })
                .await
                .unwrap(),
            cell
        );
        check!(
            "smart cell",
            smart
                .submit(|| async { std::cell::Cell::new(4u32) })
                .await
                .unwrap(),
            cell
        );
    });
}

// ---------------------------------------------------------------------------------------
// Aborts racing the task's end on another thread.
// ---------------------------------------------------------------------------------------

/// A task ends (yields once, returns a value that counts its drop) while another thread
/// aborts it, on a 2-worker runtime, 200 rounds per pool. `abort`: "Aborting a task that
/// already finished does nothing"; crate docs: "`PoolStats` agree with handles".
/// Expected each round: the handle resolves to the value or to `Aborted`, `is_finished`
/// is true once `abort` returned, the value is dropped exactly once, and the counts of
/// completed and cancelled tasks are those of the handles that resolved so; a
/// SmartAioPool's recipe runs once.
#[test]
fn pin_aborts_racing_the_end_agree_with_the_handles_and_the_stats() {
    on_thread_within("aborts racing ends", 60, || {
        let rt = multi_thread_of(2);
        let common = support::common_local(2, 8);
        let no_queue = no_queue_local(2);
        let smart = smart_pool(2, 8);
        for which in ["common", "no_queue", "smart"] {
            let (mut ok, mut aborted) = (0u64, 0u64);
            let drops = Arc::new(AtomicUsize::new(0));
            let made = Arc::new(AtomicUsize::new(0));
            let runs = Arc::new(AtomicUsize::new(0));
            for round in 0..200u64 {
                let (d, r, m) = (Arc::clone(&drops), Arc::clone(&runs), Arc::clone(&made));
                let h: TaskHandle<Counted> = rt.block_on(async {
                    match which {
                        "common" => common
                            .submit(async move {
                                tokio::task::yield_now().await;
                                m.fetch_add(1, Ordering::SeqCst);
                                Counted(d)
                            })
                            .await
                            .unwrap(),
                        "no_queue" => no_queue
                            .submit(async move {
                                tokio::task::yield_now().await;
                                m.fetch_add(1, Ordering::SeqCst);
                                Counted(d)
                            })
                            .await
                            .unwrap(),
                        _ => smart
                            .submit(move || {
                                r.fetch_add(1, Ordering::SeqCst);
                                let (d, m) = (Arc::clone(&d), Arc::clone(&m));
                                async move {
                                    tokio::task::yield_now().await;
                                    m.fetch_add(1, Ordering::SeqCst);
                                    Counted(d)
                                }
                            })
                            .await
                            .unwrap(),
                    }
                });
                if round % 4 > 0 {
                    std::thread::sleep(Duration::from_micros((round % 4) * 20));
                }
                let h = std::thread::spawn(move || {
                    h.abort();
                    assert!(h.is_finished(), "{which}: not finished once abort returned");
                    h
                })
                .join()
                .unwrap();
                match rt.block_on(within("the handle after the abort", h)) {
                    Ok(v) => {
                        ok += 1;
                        drop(v);
                    }
                    Err(e) => {
                        assert_eq!(e.cancel_reason(), Some(CancelReason::Aborted), "{which}");
                        aborted += 1;
                    }
                }
            }
            let s = rt.block_on(async {
                match which {
                    "common" => {
                        within("wait", common.wait()).await;
                        common.stats()
                    }
                    "no_queue" => {
                        within("wait", no_queue.wait()).await;
                        no_queue.stats()
                    }
                    _ => {
                        within("wait", smart.wait()).await;
                        smart.stats()
                    }
                }
            });
            assert_eq!(
                (s.completed, s.cancelled),
                (ok, aborted),
                "{which}: the stats do not agree with the handles: {s:?}"
            );
            // A value made but lost to the abort (which decided first) is dropped by the
            // pool, a returned one here.
            assert_eq!(
                drops.load(Ordering::SeqCst),
                made.load(Ordering::SeqCst),
                "{which}: the values made were not all dropped once ({ok} returned)"
            );
            if which == "smart" {
                // A task aborted before a slot took it is never run at all.
                let runs = runs.load(Ordering::SeqCst) as u64;
                assert!(
                    runs <= 200 && runs >= ok,
                    "{which}: {runs} runs of 200 recipes ({ok} returned)"
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// An aborted SmartAioPool task whose runtime is not driven, then dropped.
// ---------------------------------------------------------------------------------------

/// A SmartAioPool task runs on a current-thread runtime V; outside `block_on` (V not
/// driven) the user aborts it, then drops V. `abort`: "The handle resolves at once"; a
/// run cut off by its runtime's end is queued again, but an aborted task must not be.
/// Expected: the handle resolves at once to `Aborted`, the recipe never runs again
/// (another runtime M alive to run re-runs), the task is counted cancelled once.
/// Pinned.
#[test]
fn pin_an_aborted_smart_task_on_an_undriven_runtime_is_not_run_again_when_it_ends() {
    on_thread_within("an aborted task of an undriven runtime", 20, || {
        let pool = smart_pool(1, 4);
        let m = multi_thread_of(1);
        assert_eq!(m.block_on(pool.run(|| async { 1 })).ok(), Some(1));
        let runs = Arc::new(AtomicUsize::new(0));
        let v = current_thread();
        let r = Arc::clone(&runs);
        let mut h = v.block_on(async {
            let h = pool
                .submit(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<u32>()
                })
                .await
                .unwrap();
            while runs.load(Ordering::SeqCst) < 1 {
                tokio::task::yield_now().await;
            }
            h
        });
        h.abort();
        let Poll::Ready(Err(e)) = poll_once(&mut h) else {
            panic!("the handle did not resolve at once to an error after the abort");
        };
        assert_eq!(e.cancel_reason(), Some(CancelReason::Aborted));
        drop(v);
        m.block_on(within("wait() after the abort and V's end", pool.wait()));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the aborted recipe ran again"
        );
        let s = pool.stats();
        assert_eq!((s.running, s.queued, s.cancelled), (0, 0, 1), "{s:?}");
    });
}

// ---------------------------------------------------------------------------------------
// batch_submit's handles.
// ---------------------------------------------------------------------------------------

/// `batch_submit` "returns their handles in input order": their ids follow the input
/// order (`id`: "the order in which the pool accepted it"), an abort of one queued
/// handle cancels only that one, and the others resolve to their own values, in every
/// pool.
#[test]
fn pin_batch_submit_handles_are_in_input_order_and_abort_alone() {
    let rt = multi_thread_of(2);
    rt.block_on(async {
        let (gate, smart_gate) = (Gate::default(), Gate::default());
        let common = support::common_local(1, 8);
        let smart = smart_pool(1, 8);
        let g = gate.clone();
        let hs = common
            .batch_submit((0..5u32).map(|i| {
                let g = g.clone();
                async move {
                    g.wait().await;
                    i
                }
            }))
            .await
            .unwrap();
        let g = smart_gate.clone();
        let ss = smart
            .batch_submit((0..5u32).map(|i| {
                let g = g.clone();
                move || {
                    let g = g.clone();
                    async move {
                        g.wait().await;
                        i
                    }
                }
            }))
            .await
            .unwrap();
        for (name, hs) in [("common", hs), ("smart", ss)] {
            let ids: Vec<u64> = hs.iter().map(|h| h.id().as_u64()).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{name}: ids {ids:?}");
            hs[2].abort();
            match name {
                "common" => gate.open(),
                _ => smart_gate.open(),
            }
            let mut got = Vec::new();
            for h in hs {
                got.push(
                    within("a batch handle", h)
                        .await
                        .map_err(|e| e.cancel_reason()),
                );
            }
            assert_eq!(
                got,
                [Ok(0), Ok(1), Err(Some(CancelReason::Aborted)), Ok(3), Ok(4)],
                "{name}"
            );
        }
        let no_queue = no_queue_local(5);
        let hs = no_queue
            .batch_submit((0..5u32).map(|i| async move { i }))
            .await
            .unwrap();
        let ids: Vec<u64> = hs.iter().map(|h| h.id().as_u64()).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4], "no_queue");
    });
}

// ---------------------------------------------------------------------------------------
// Handles held while the pool is dropped.
// ---------------------------------------------------------------------------------------

/// The user drops every clone of the pool while holding handles of a running and a
/// queued task. "Dropping the last handle closes intake but cancels nothing: queued and
/// running jobs still finish." Expected: both handles resolve to their values, in every
/// pool (NoQueue: two running tasks), and a new pool made meanwhile (which may take the
/// old pool's number) is not disturbed by the old handles' aborts.
#[test]
fn pin_handles_held_while_the_pool_is_dropped_resolve_to_their_values() {
    let rt = multi_thread_of(2);
    rt.block_on(async {
        for which in ["common", "no_queue", "smart"] {
            let gate = Gate::default();
            let (g1, g2) = (gate.clone(), gate.clone());
            let (a, b): (TaskHandle<u32>, TaskHandle<u32>) = match which {
                "common" => {
                    let pool = support::common_local(1, 2);
                    let a = pool
                        .submit(async move {
                            g1.wait().await;
                            1
                        })
                        .await
                        .unwrap();
                    let b = pool
                        .submit(async move {
                            g2.wait().await;
                            2
                        })
                        .await
                        .unwrap();
                    (a, b)
                }
                "no_queue" => {
                    let pool = no_queue_local(2);
                    let a = pool
                        .submit(async move {
                            g1.wait().await;
                            1
                        })
                        .await
                        .unwrap();
                    let b = pool
                        .submit(async move {
                            g2.wait().await;
                            2
                        })
                        .await
                        .unwrap();
                    (a, b)
                }
                _ => {
                    let pool = smart_pool(1, 2);
                    let a = pool
                        .submit(move || {
                            let g = g1.clone();
                            async move {
                                g.wait().await;
                                1
                            }
                        })
                        .await
                        .unwrap();
                    let b = pool
                        .submit(move || {
                            let g = g2.clone();
                            async move {
                                g.wait().await;
                                2
                            }
                        })
                        .await
                        .unwrap();
                    (a, b)
                }
            };
            // The pool's last clone is gone. A new pool may reuse its number.
            let other = support::common_local(1, 1);
            let bystander = other.submit(std::future::pending::<u32>()).await.unwrap();
            let queued = other.submit(async { 3u32 }).await.unwrap();
            gate.open();
            let (ra, rb) = within("handles of a dropped pool", async { (a.await, b.await) }).await;
            assert_eq!((ra.ok(), rb.ok()), (Some(1), Some(2)), "{which}");
            assert!(
                !bystander.is_finished() && !queued.is_finished(),
                "{which}: the new pool's tasks were touched"
            );
            bystander.abort();
            assert_eq!(
                within("the new pool's queued task", queued).await.ok(),
                Some(3)
            );
        }
    });
}

// ---------------------------------------------------------------------------------------
// blocking_wait whose task's runtime ends.
// ---------------------------------------------------------------------------------------

/// A plain thread `blocking_wait`s on a CommonAioPool / NoQueueAioPool task that runs on
/// a runtime which is then dropped. `TaskHandle`: a task "lost to a runtime shutdown
/// resolves to an error; it never hangs". Expected: `RuntimeShutdown`.
#[test]
fn pin_blocking_wait_on_a_task_whose_runtime_ends_returns_runtime_shutdown() {
    on_thread_within("blocking_wait across a runtime's end", 20, || {
        for which in ["common", "no_queue"] {
            let rt = multi_thread_of(1);
            let common = support::common_local(1, 1);
            let no_queue = no_queue_local(1);
            let started = Arc::new(AtomicUsize::new(0));
            let s = Arc::clone(&started);
            let h: TaskHandle<u32> = rt.block_on(async {
                let fut = async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<u32>().await
                };
                match which {
                    "common" => common.submit(fut).await.unwrap(),
                    _ => no_queue.submit(fut).await.unwrap(),
                }
            });
            until("the task started", || started.load(Ordering::SeqCst) == 1);
            let waiter = std::thread::spawn(move || h.blocking_wait());
            std::thread::sleep(Duration::from_millis(10));
            drop(rt);
            let r = waiter.join().unwrap();
            assert_eq!(
                r.err().and_then(|e| e.cancel_reason()),
                Some(CancelReason::RuntimeShutdown),
                "{which}"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------
// Aborts racing the end of the runtime that runs (or queued) the task.
// ---------------------------------------------------------------------------------------

/// A CommonAioPool / NoQueueAioPool task submitted from runtime V (running, or queued
/// behind a running one) is aborted from another thread while V is dropped, 40 rounds
/// each, spread over the drop's steps; runtime M stays alive. Expected: the handle
/// resolves to `Aborted` or `RuntimeShutdown` (whichever decided first), every future is
/// dropped once, the stats count each task cancelled once with nothing left running or
/// queued, `wait()` returns and the pool runs the next task on M.
#[test]
fn pin_aborts_racing_the_end_of_the_tasks_runtime_end_each_task_once() {
    on_thread_within(
        "aborts racing runtimes' ends (common, no_queue)",
        60,
        || {
            let m = multi_thread_of(1);
            for which in ["common running", "common queued", "no_queue running"] {
                let common = support::common_local(1, 2);
                let no_queue = no_queue_local(1);
                // The pools know M.
                m.block_on(async {
                    assert_eq!(common.run(async { 0 }).await.ok(), Some(0));
                    assert_eq!(no_queue.run(async { 0 }).await.ok(), Some(0));
                });
                let dropped = Arc::new(AtomicUsize::new(0));
                let mut tasks = 0u64;
                for round in 0..40u64 {
                    let v = multi_thread_of(1);
                    let started = Arc::new(AtomicUsize::new(0));
                    let (guard, s) = (Counted(Arc::clone(&dropped)), Arc::clone(&started));
                    let fut = async move {
                        let _guard = guard;
                        s.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<u32>().await
                    };
                    let (h, blocker): (TaskHandle<u32>, Option<TaskHandle<u32>>) =
                        v.block_on(async {
                            match which {
                                "common running" => (common.submit(fut).await.unwrap(), None),
                                "common queued" => {
                                    let guard = Counted(Arc::clone(&dropped));
                                    let b = common
                                        .submit(async move {
                                            let _guard = guard;
                                            std::future::pending::<u32>().await
                                        })
                                        .await
                                        .unwrap();
                                    (common.submit(fut).await.unwrap(), Some(b))
                                }
                                _ => (no_queue.submit(fut).await.unwrap(), None),
                            }
                        });
                    tasks += 1 + u64::from(blocker.is_some());
                    if blocker.is_none() {
                        until("the task started", || started.load(Ordering::SeqCst) == 1);
                    }
                    let barrier = Arc::new(std::sync::Barrier::new(2));
                    let b = Arc::clone(&barrier);
                    let aborter = std::thread::spawn(move || {
                        b.wait();
                        if round % 8 > 0 {
                            std::thread::sleep(Duration::from_micros((round % 8) * 100));
                        }
                        h.abort();
                        h
                    });
                    barrier.wait();
                    drop(v);
                    let h = aborter.join().unwrap();
                    let r = m.block_on(within("the aborted handle", h));
                    let reason = r.err().and_then(|e| e.cancel_reason());
                    assert!(
                        matches!(
                            reason,
                            Some(CancelReason::Aborted | CancelReason::RuntimeShutdown)
                        ),
                        "{which}, round {round}: the handle resolved to {reason:?}"
                    );
                    if let Some(b) = blocker {
                        let r = m.block_on(within("the blocker's handle", b));
                        assert_eq!(
                            r.err().and_then(|e| e.cancel_reason()),
                            Some(CancelReason::RuntimeShutdown),
                            "{which}, round {round}: the blocker"
                        );
                    }
                    let s = m.block_on(async {
                        match which {
                            "no_queue running" => {
                                within("wait", no_queue.wait()).await;
                                no_queue.stats()
                            }
                            _ => {
                                within("wait", common.wait()).await;
                                common.stats()
                            }
                        }
                    });
                    assert_eq!(
                        (s.running, s.queued, s.cancelled),
                        (0, 0, tasks),
                        "{which}, round {round}: the stats after the abort and the runtime's end"
                    );
                    let all = || dropped.load(Ordering::SeqCst) == tasks as usize;
                    let end = std::time::Instant::now() + Duration::from_secs(5);
                    while !all() && std::time::Instant::now() < end {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    assert!(
                        all(),
                        "{which}, round {round}: {} of {tasks} futures dropped",
                        dropped.load(Ordering::SeqCst)
                    );
                }
                let next = m.block_on(async {
                    match which {
                        "no_queue running" => no_queue.run(async { 2 }).await.ok(),
                        _ => common.run(async { 2 }).await.ok(),
                    }
                });
                assert_eq!(next, Some(2), "{which}: the pool did not run the next task");
            }
        },
    );
}

// ---------------------------------------------------------------------------------------
// User `Drop` code that calls back into the pool, wherever the pool drops it.
// ---------------------------------------------------------------------------------------

/// Runs its closure when dropped (user `Drop` code that calls back into the pool).
struct OnDrop(Option<Box<dyn FnOnce() + Send>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// What the `Drop`s call: `stats()` and `try_submit` (both take the pool's lock), and
/// `abort` of another task of the pool; counts the calls that returned.
#[derive(Clone)]
enum AnyPool {
    Common(CommonAioPool),
    NoQueue(NoQueueAioPool),
    Smart(SmartAioPool),
}

impl AnyPool {
    fn call_back(
        &self,
        victim: &Arc<std::sync::Mutex<Vec<TaskHandle<u32>>>>,
        done: &Arc<AtomicUsize>,
    ) -> OnDrop {
        let (pool, victim, done) = (self.clone(), Arc::clone(victim), Arc::clone(done));
        OnDrop(Some(Box::new(move || {
            let _ = match &pool {
                AnyPool::Common(p) => (
                    p.stats(),
                    p.try_submit(async {}).map(TaskHandle::detach).is_ok(),
                ),
                AnyPool::NoQueue(p) => (
                    p.stats(),
                    p.try_submit(async {}).map(TaskHandle::detach).is_ok(),
                ),
                AnyPool::Smart(p) => (
                    p.stats(),
                    p.try_submit(|| async {}).map(TaskHandle::detach).is_ok(),
                ),
            };
            if let Some(h) = victim.lock().unwrap().pop() {
                h.abort();
            }
            done.fetch_add(1, Ordering::SeqCst);
        })))
    }

    /// Submits a task that holds `guard` (in its future, or in the recipe and each run's
    /// future) and is pending for ever, or returns `out` made from `guard` at once.
    async fn submit(&self, guard: OnDrop, forever: bool) -> TaskHandle<Option<OnDrop>> {
        let fut = |g: OnDrop| async move {
            if forever {
                std::future::pending::<()>().await;
            }
            tokio::task::yield_now().await;
            Some(g)
        };
        match self {
            AnyPool::Common(p) => p.submit(fut(guard)).await.unwrap(),
            AnyPool::NoQueue(p) => p.submit(fut(guard)).await.unwrap(),
            AnyPool::Smart(p) => {
                let guard = Arc::new(std::sync::Mutex::new(Some(guard)));
                p.submit(move || {
                    let g = guard.lock().unwrap().take();
                    async move {
                        if forever {
                            std::future::pending::<()>().await;
                        }
                        tokio::task::yield_now().await;
                        g
                    }
                })
                .await
                .unwrap()
            }
        }
    }

    async fn wait(&self) {
        match self {
            AnyPool::Common(p) => p.wait().await,
            AnyPool::NoQueue(p) => p.wait().await,
            AnyPool::Smart(p) => p.wait().await,
        }
    }

    async fn cancel_all(&self) {
        match self {
            AnyPool::Common(p) => p.cancel_all().await,
            AnyPool::NoQueue(p) => p.cancel_all().await,
            AnyPool::Smart(p) => p.cancel_all().await,
        }
    }
}

/// The user's values, futures and recipes hold guards whose `Drop` calls back into the
/// pool (`stats()`, `try_submit`, another handle's `abort`), and the pool drops them: a
/// detached task's result, an aborted running task's future, an aborted queued task's
/// future, futures cancelled by `cancel_all`, futures cut off by the end of their runtime
/// and a recipe whose task ended. The docs: results are dropped "never under the pool's
/// lock"; an aborted task's future "is dropped right after by a task on its runtime, as a
/// slot would drop it". Expected: every drop's call returns (no deadlock on the pool's
/// lock), in every pool.
#[test]
fn pin_drops_that_call_back_into_the_pool_do_not_deadlock() {
    on_thread_within("drops calling back into the pool", 60, || {
        let m = multi_thread_of(2);
        for which in ["common", "no_queue", "smart"] {
            let pool = match which {
                "common" => AnyPool::Common(support::common_local(4, 4)),
                "no_queue" => AnyPool::NoQueue(no_queue_local(4)),
                _ => AnyPool::Smart(smart_pool(4, 4)),
            };
            let victims = Arc::new(std::sync::Mutex::new(Vec::new()));
            let done = Arc::new(AtomicUsize::new(0));
            let mut expected = 0;
            m.block_on(async {
                // Victims: running tasks the drops abort (never ending by themselves).
                for _ in 0..2 {
                    let h = match &pool {
                        AnyPool::Common(p) => p.try_submit(std::future::pending::<u32>()).ok(),
                        AnyPool::NoQueue(p) => p.try_submit(std::future::pending::<u32>()).ok(),
                        AnyPool::Smart(p) => p.try_submit(std::future::pending::<u32>).ok(),
                    };
                    if let Some(h) = h {
                        victims.lock().unwrap().push(h);
                    }
                }
                // 1. A detached task's result.
                let g = pool.call_back(&victims, &done);
                pool.submit(g, false).await.detach();
                expected += 1;
                within(&format!("{which}: a detached result's drop"), async {
                    while done.load(Ordering::SeqCst) < expected {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
                // 2. An aborted running task's future (and, Smart, its recipe).
                let g = pool.call_back(&victims, &done);
                let h = pool.submit(g, true).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                h.abort();
                expected += 1;
                within(
                    &format!("{which}: an aborted task's future's drop"),
                    async {
                        while done.load(Ordering::SeqCst) < expected {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    },
                )
                .await;
                // 3. Futures cancelled by cancel_all.
                let g = pool.call_back(&victims, &done);
                let _h = pool.submit(g, true).await;
                expected += 1;
                within(&format!("{which}: cancel_all's drops"), pool.cancel_all()).await;
                within(&format!("{which}: cancel_all's drops"), async {
                    while done.load(Ordering::SeqCst) < expected {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
            });
            // 4. A future cut off by the end of its runtime (SmartAioPool: run again on M,
            //    then aborted).
            let v = multi_thread_of(1);
            let g = pool.call_back(&victims, &done);
            let h = v.block_on(async {
                let h = pool.submit(g, true).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                h
            });
            drop(v);
            expected += 1;
            m.block_on(async {
                if which == "smart" {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    h.abort();
                } else {
                    drop(h);
                }
                within(&format!("{which}: drops at a runtime's end"), async {
                    while done.load(Ordering::SeqCst) < expected {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
                for h in victims.lock().unwrap().drain(..) {
                    h.abort();
                }
                within(&format!("{which}: wait() after the drops"), pool.wait()).await;
            });
        }
    });
}

// ---------------------------------------------------------------------------------------
// A nested wait made a deadlock by a runtime's end.
// ---------------------------------------------------------------------------------------

/// In a SmartAioPool of two slots, task C runs on runtime V and task J, on runtime M,
/// awaits C's handle (counted: C runs, so nothing is stuck). The user lowers the pool to
/// one slot (`set_max_concurrency(1)`), then V ends: C's run is cut off and queued again,
/// and it can start only in the slot J holds while J waits for it. `TaskHandle`, "Awaiting
/// from inside the same pool": "When the picture is completed later, by a slot going away
/// (after `set_max_concurrency` lowered the size, the end of another task leaves only
/// waiting tasks running), it is broken the same way". Expected: the wait is broken (C
/// cancelled with `WouldDeadlock`, J's handle resolves), not a hang. Pinned: J's await of
/// C's handle returns `WouldDeadlock`, and C's recipe is not run again.
#[test]
fn pin_a_wait_on_a_task_cut_off_by_its_runtimes_end_after_a_shrink_is_broken() {
    on_thread_within("a wait made stuck by a runtime's end", 30, || {
        let pool = smart_pool(2, 4);
        let m = multi_thread_of(1);
        assert_eq!(m.block_on(pool.run(|| async { 1 })).ok(), Some(1));
        let runs = Arc::new(AtomicUsize::new(0));
        let v = current_thread();
        let hc = v.block_on(async {
            let h = pool.submit(support::cut_off_once(&runs, 9)).await.unwrap();
            while runs.load(Ordering::SeqCst) < 1 {
                tokio::task::yield_now().await;
            }
            h
        });
        let polled = Arc::new(AtomicUsize::new(0));
        let (p, slot) = (
            Arc::clone(&polled),
            Arc::new(std::sync::Mutex::new(Some(hc))),
        );
        let hj = m.block_on(async {
            pool.submit(move || {
                let (p, hc) = (Arc::clone(&p), slot.lock().unwrap().take());
                async move {
                    let Some(mut hc) = hc else {
                        return "J ran again".to_string();
                    };
                    // Polled once (counted), then awaited.
                    let first = std::future::poll_fn(|cx| {
                        Poll::Ready(std::pin::Pin::new(&mut hc).poll(cx))
                    })
                    .await;
                    p.fetch_add(1, Ordering::SeqCst);
                    if let Poll::Ready(r) = first {
                        return format!("ready at once: {r:?}");
                    }
                    format!("{:?}", hc.await.map_err(|e| e.cancel_reason()))
                }
            })
            .await
            .unwrap()
        });
        until("J polled C's handle", || polled.load(Ordering::SeqCst) == 1);
        pool.set_max_concurrency(1);
        drop(v);
        let r = m.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), hj)
                .await
                .map(|r| r.map_err(|e| e.cancel_reason()))
        });
        let s = pool.stats();
        assert!(
            r.is_ok(),
            "J, awaiting a task cut off by its runtime's end that only J's slot could run, \
             still waits after 5 s (C's runs: {}; stats: {s:?})",
            runs.load(Ordering::SeqCst)
        );
        assert!(
            matches!(&r, Ok(Ok(seen)) if seen == "Err(Some(WouldDeadlock))"),
            "J's wait on C was not broken with WouldDeadlock: {r:?}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "C was run again");
    });
}

// ---------------------------------------------------------------------------------------
// A SmartAioPool task cancelled (cancel_all, a shutdown's deadline) while its runtime is
// not driven, then cut off by that runtime's end.
// ---------------------------------------------------------------------------------------

/// A SmartAioPool task runs on a current-thread runtime V that is not driven (outside
/// `block_on`); the user cancels it with `cancel_all` (the future dropped: "the
/// cancellation happens when it is called"), or a `shutdown_timeout` whose deadline
/// passes, then drops V. `rerun_interrupted`: an interrupted task's "handle resolves to
/// `RuntimeShutdown` (unless an abort, a `cancel_all` or a shutdown's deadline covered it
/// first: then that reason)"; `cancel_all`: "their handles resolve to
/// `CancelReason::CancelAll` ... the first decision holds". Expected, with and without
/// re-runs: the handle resolves to `CancelAll` (`Abandoned`), and the recipe is not run
/// again. Pinned (all four cases).
#[test]
fn pin_a_smart_task_cancelled_on_an_undriven_runtime_is_not_run_again_at_its_end() {
    on_thread_within("cancelled tasks of an undriven runtime", 40, || {
        for rerun in [true, false] {
            for how in ["cancel_all", "shutdown_timeout"] {
                let pool = SmartAioPool::builder()
                    .max_concurrency(1)
                    .max_queue_size(4)
                    .rerun_interrupted(rerun)
                    .process_wide(false)
                    .auto_shutdown(false)
                    .build();
                let m = multi_thread_of(1);
                assert_eq!(m.block_on(pool.run(|| async { 1 })).ok(), Some(1));
                let runs = Arc::new(AtomicUsize::new(0));
                let r = Arc::clone(&runs);
                let v = current_thread();
                let h = v.block_on(async {
                    let h = pool
                        .submit(move || {
                            r.fetch_add(1, Ordering::SeqCst);
                            std::future::pending::<u32>()
                        })
                        .await
                        .unwrap();
                    while runs.load(Ordering::SeqCst) < 1 {
                        tokio::task::yield_now().await;
                    }
                    h
                });
                let want = match how {
                    "cancel_all" => {
                        drop(pool.cancel_all());
                        CancelReason::CancelAll
                    }
                    _ => {
                        m.spawn(pool.shutdown_timeout(Duration::from_millis(1)));
                        std::thread::sleep(Duration::from_millis(50));
                        CancelReason::Abandoned
                    }
                };
                drop(v);
                let got = m.block_on(async {
                    tokio::time::timeout(Duration::from_secs(5), h)
                        .await
                        .map(|r| r.map_err(|e| e.cancel_reason()))
                });
                std::thread::sleep(Duration::from_millis(20));
                let runs = runs.load(Ordering::SeqCst);
                assert!(
                    got == Ok(Err(Some(want))) && runs == 1,
                    "rerun_interrupted({rerun}), {how} before the runtime's end: the handle \
                     resolved to {got:?} (want {want:?}) after {runs} run(s) of the recipe \
                     (want 1); stats: {:?}",
                    pool.stats()
                );
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// Handles moved about at random.
// ---------------------------------------------------------------------------------------

/// What one random task does.
fn random_task(
    kind: u64,
    gate: &Gate,
    made: &Arc<AtomicUsize>,
    dropped: &Arc<AtomicUsize>,
) -> impl Future<Output = Counted> + Send + 'static {
    let (gate, made, dropped) = (gate.clone(), Arc::clone(made), Arc::clone(dropped));
    async move {
        match kind {
            0 => tokio::task::yield_now().await,
            1 => gate.wait().await,
            2 => tokio::time::sleep(Duration::from_millis(1)).await,
            _ => {
                tokio::task::yield_now().await;
                panic!("task_handles_as_join_handles: a random task panics");
            }
        }
        made.fetch_add(1, Ordering::SeqCst);
        Counted(dropped)
    }
}

/// Rounds of random handle use, as a user of tokio's `JoinHandle` might: tasks submitted
/// from a runtime V (dropped at a random moment) or M, to the three pools; each handle
/// awaited on M, polled on V first then awaited on M, aborted from a plain thread,
/// dropped on a plain thread, `blocking_wait`ed on a plain thread, or awaited on a plain
/// executor. Expected: every handle resolves (to the task's value, its panic, or
/// `Aborted` / `RuntimeShutdown`), every value made is dropped once, and each pool's
/// stats add up with nothing left running once `wait()` returns.
#[test]
fn pin_handles_moved_about_at_random_all_resolve() {
    support::hide_panics(HIDDEN);
    on_thread_within("handles moved about at random", 120, || {
        let m = multi_thread_of(2);
        let pools = [
            AnyPool::Common(support::common_local(2, 8)),
            AnyPool::NoQueue(no_queue_local(8)),
            AnyPool::Smart(smart_pool(2, 8)),
        ];
        m.block_on(async {
            for p in &pools {
                p.wait().await;
            }
        });
        let (made, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut rng = support::Rng::new(
            std::env::var("REVIEW_HANDLES_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(7),
        );
        for round in 0..60 {
            let gate = Gate::default();
            let v = if rng.chance(50) {
                current_thread()
            } else {
                multi_thread_of(1)
            };
            let mut handles = Vec::new();
            for _ in 0..6 {
                let p = &pools[rng.below(3) as usize];
                let kind = rng.below(4);
                let from_v = rng.chance(50);
                let submit = async {
                    match p {
                        AnyPool::Common(p) => p
                            .submit(random_task(kind, &gate, &made, &dropped))
                            .await
                            .unwrap(),
                        AnyPool::NoQueue(p) => p
                            .submit(random_task(kind, &gate, &made, &dropped))
                            .await
                            .unwrap(),
                        AnyPool::Smart(p) => {
                            let (g, mk, dr) =
                                (gate.clone(), Arc::clone(&made), Arc::clone(&dropped));
                            p.submit(move || random_task(kind, &g, &mk, &dr))
                                .await
                                .unwrap()
                        }
                    }
                };
                let h = if from_v {
                    v.block_on(within("submit on V", submit))
                } else {
                    m.block_on(within("submit on M", submit))
                };
                handles.push((h, rng.below(6)));
            }
            let drop_v_first = rng.chance(50);
            let v = if drop_v_first {
                drop(v);
                None
            } else {
                Some(v)
            };
            let mut waiters = Vec::new();
            for (mut h, how) in handles {
                match how {
                    0 => waiters.push(m.spawn(async move { within("a handle on M", h).await })),
                    1 => {
                        let early = v.as_ref().and_then(|v| {
                            v.block_on(async {
                                tokio::time::timeout(Duration::from_micros(200), &mut h).await
                            })
                            .ok()
                        });
                        waiters.push(m.spawn(async move {
                            match early {
                                Some(r) => r,
                                None => within("a handle moved to M", h).await,
                            }
                        }));
                    }
                    2 => {
                        let h = std::thread::spawn(move || {
                            h.abort();
                            h
                        })
                        .join()
                        .unwrap();
                        waiters.push(m.spawn(async move { within("an aborted handle", h).await }));
                    }
                    3 => std::thread::spawn(move || drop(h)).join().unwrap(),
                    4 => {
                        let t = std::thread::spawn(move || h.blocking_wait());
                        waiters.push(m.spawn(async move {
                            within("a blocking_wait", async {
                                while !t.is_finished() {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                            })
                            .await;
                            t.join().unwrap()
                        }));
                    }
                    _ => {
                        let t = std::thread::spawn(move || support::plain_block_on(h));
                        waiters.push(m.spawn(async move {
                            within("a handle on a plain executor", async {
                                while !t.is_finished() {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                            })
                            .await;
                            t.join().unwrap()
                        }));
                    }
                }
            }
            if rng.chance(50) {
                std::thread::sleep(Duration::from_millis(rng.below(3)));
            }
            gate.open();
            drop(v);
            for w in waiters {
                match m.block_on(w).unwrap() {
                    Ok(value) => drop(value),
                    Err(e) => assert!(
                        e.is_panic()
                            || matches!(
                                e.cancel_reason(),
                                Some(CancelReason::Aborted | CancelReason::RuntimeShutdown)
                            ),
                        "round {round}: a handle resolved to {e:?}"
                    ),
                }
            }
            m.block_on(async {
                for p in &pools {
                    within("wait() after a round", p.wait()).await;
                }
            });
            for p in &pools {
                let s = match p {
                    AnyPool::Common(p) => p.stats(),
                    AnyPool::NoQueue(p) => p.stats(),
                    AnyPool::Smart(p) => p.stats(),
                };
                assert_eq!(
                    (s.running, s.queued, s.submitted),
                    (0, 0, s.completed + s.panicked + s.cancelled),
                    "round {round}: the stats do not add up: {s:?}"
                );
            }
            let end = std::time::Instant::now() + Duration::from_secs(5);
            while made.load(Ordering::SeqCst) != dropped.load(Ordering::SeqCst)
                && std::time::Instant::now() < end
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(
                made.load(Ordering::SeqCst),
                dropped.load(Ordering::SeqCst),
                "round {round}: values made and dropped"
            );
        }
    });
}

/// The same stranded task of a dropped pool, its handle then dropped on a plain thread
/// (no runtime): "the others are cancelled ... for re-runs stranded after the last handle
/// went, at the next `build`". Pinned: once another SmartAioPool is built, the task's
/// recipe (and what it captured) is dropped, and nothing hangs.
#[test]
fn pin_a_stranded_task_of_a_dropped_pool_whose_handle_is_dropped_frees_its_recipe() {
    on_thread_within("a stranded task's handle dropped", 20, || {
        let runs = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(0)
            .process_wide(false)
            .auto_shutdown(false)
            .build();
        let rt = multi_thread_of(1);
        let (r, guard) = (Arc::clone(&runs), Counted(Arc::clone(&dropped)));
        let h = rt
            .block_on(pool.submit(move || {
                let _ = &guard;
                r.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<u32>()
            }))
            .unwrap();
        until("the first run", || runs.load(Ordering::SeqCst) == 1);
        drop(rt);
        drop(pool);
        std::thread::spawn(move || drop(h)).join().unwrap();
        let _next = smart_pool(1, 1);
        until("the stranded task's recipe dropped", || {
            dropped.load(Ordering::SeqCst) == 1
        });
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "run again with nobody to see it"
        );
    });
}

// ---------------------------------------------------------------------------------------
// Task ids.
// ---------------------------------------------------------------------------------------

/// `TaskId`: "Identifies a task within its pool: the order in which the pool accepted
/// it, from 0." Pinned: ids are per pool (the first tasks of two pools both have id 0 and
/// compare equal: a map keyed by `TaskId` alone must not mix pools); a handle's id is the
/// same before and after its SmartAioPool task is cut off by its runtime's end and run
/// again, and equals its `AbortHandle`'s; `Debug` of a handle shows its id and whether it
/// finished.
#[test]
fn pin_task_ids_are_per_pool_and_stable_across_reruns() {
    on_thread_within("task ids", 20, || {
        let m = multi_thread_of(1);
        let common = support::common_local(1, 1);
        let smart = smart_pool(1, 2);
        let a = m.block_on(common.submit(async { 1 })).unwrap();
        let b = m.block_on(smart.submit(|| async { 2 })).unwrap();
        assert_eq!(
            a.id(),
            b.id(),
            "the first tasks of two pools have different ids"
        );
        assert_eq!(a.id().as_u64(), 0);
        m.block_on(async { (a.await.unwrap(), b.await.unwrap()) });
        let runs = Arc::new(AtomicUsize::new(0));
        let v = current_thread();
        let h = v.block_on(async {
            let h = smart.submit(support::cut_off_once(&runs, 9)).await.unwrap();
            while runs.load(Ordering::SeqCst) < 1 {
                tokio::task::yield_now().await;
            }
            h
        });
        let (before, aborter) = (h.id(), h.abort_handle());
        assert_eq!(aborter.id(), before);
        assert!(format!("{h:?}").contains("finished: false"), "{h:?}");
        drop(v);
        let mut h = h;
        assert_eq!(m.block_on(within("the re-run", &mut h)).ok(), Some(9));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(h.id(), before, "the id changed with the re-run");
        assert!(format!("{h:?}").contains("finished: true"), "{h:?}");
        assert!(aborter.is_finished());
    });
}
