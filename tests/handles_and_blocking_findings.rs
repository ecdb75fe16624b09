//! Regression tests of a review of task handles, results and the blocking API
//! (2026-12-05; RELIABILITY.md, findings 215–218): the findings' tests, of which 215 and
//! 216 failed before their fixes, and pins of behaviour that held already (`pin_*`).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nb_aiopool::{CancelReason, NoQueueAioPool, SmartAioPool};
use support::*;

// ----- pins: behaviour that held already, kept because nothing else pins it ------------

#[test]
fn pin_common_blocking_submit_waiting_for_room_is_refused_by_shutdown() {
    let rt = multi_thread_of(1);
    let pool = common_local(1, 1);
    let gate = Gate::default();
    let g = gate.clone();
    rt.block_on(async {
        pool.submit(async move { g.wait().await })
            .await
            .unwrap()
            .detach();
        pool.submit(async {}).await.unwrap().detach();
    });
    let p = pool.clone();
    let (started_tx, started_rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        started_tx.send(()).unwrap();
        p.blocking_submit(async { 5 })
            .map(|_| ())
            .map_err(|e| e.kind())
    });
    started_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let sd = rt.spawn({
        let pool = pool.clone();
        async move { pool.shutdown().await }
    });
    let got = on_thread_within("blocking submit refused", 10, move || t.join().unwrap());
    assert_eq!(got, Err(nb_aiopool::SubmitErrorKind::Closed));
    gate.open();
    rt.block_on(sd).unwrap();
}

#[test]
fn pin_smart_run_works_from_spawn_blocking_and_under_an_entered_runtime() {
    let rt = multi_thread_of(1);
    let v = rt.block_on(async {
        tokio::task::spawn_blocking(|| nb_aiopool::smart_run(async { 3 }))
            .await
            .unwrap()
    });
    assert_eq!(v, 3);
    let _g = rt.enter();
    assert_eq!(nb_aiopool::smart_run(async { 4 }), 4);
}

#[test]
fn pin_blocking_wait_in_block_in_place_inside_its_own_full_pool_is_would_deadlock() {
    let rt = multi_thread_of(2);
    let pool = common_local(1, 4);
    let p = pool.clone();
    let r = rt.block_on(async move {
        let outer = pool
            .submit(async move {
                let child = p.submit(async { 1 }).await.unwrap();
                tokio::task::block_in_place(|| child.blocking_wait()).map_err(|e| e.cancel_reason())
            })
            .await
            .unwrap();
        within("outer", outer).await
    });
    assert_eq!(r.unwrap(), Err(Some(CancelReason::WouldDeadlock)));
}

#[test]
fn pin_blocking_submit_in_block_in_place_inside_its_own_full_pool_is_would_deadlock() {
    let rt = multi_thread_of(2);
    let pool = common_local(1, 0);
    let p = pool.clone();
    let r = rt.block_on(async move {
        let outer = pool
            .submit(async move {
                tokio::task::block_in_place(|| p.blocking_submit(async { 1 }).map(|_| ()))
                    .map_err(|e| e.kind())
            })
            .await
            .unwrap();
        within("outer", outer).await
    });
    assert_eq!(r.unwrap(), Err(nb_aiopool::SubmitErrorKind::WouldDeadlock));
}

#[test]
fn pin_smart_blocking_submit_waiting_for_room_is_refused_by_shutdown() {
    let rt = multi_thread_of(1);
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(1)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let gate = Gate::default();
    let g = gate.clone();
    rt.block_on(async {
        pool.submit(move || {
            let g = g.clone();
            async move { g.wait().await }
        })
        .await
        .unwrap()
        .detach();
        pool.submit(|| async {}).await.unwrap().detach();
    });
    let p = pool.clone();
    let t = std::thread::spawn(move || {
        p.blocking_submit(|| async { 5 })
            .map(|_| ())
            .map_err(|e| e.kind())
    });
    std::thread::sleep(Duration::from_millis(50));
    let sd = rt.spawn({
        let pool = pool.clone();
        async move { pool.shutdown().await }
    });
    let got = on_thread_within("smart blocking submit refused", 10, move || {
        t.join().unwrap()
    });
    assert_eq!(got, Err(nb_aiopool::SubmitErrorKind::Closed));
    gate.open();
    rt.block_on(sd).unwrap();
}

#[test]
fn pin_no_queue_blocking_submit_waiting_when_the_runtime_ends_is_no_runtime() {
    let rt = multi_thread_of(1);
    let pool = NoQueueAioPool::new(1);
    rt.block_on(async {
        pool.submit(std::future::pending::<()>())
            .await
            .unwrap()
            .detach();
    });
    let p = pool.clone();
    let t = std::thread::spawn(move || {
        p.blocking_submit(async { 5 })
            .map(|h| h.blocking_wait().map_err(|e| e.cancel_reason()))
            .map_err(|e| e.kind())
    });
    std::thread::sleep(Duration::from_millis(50));
    drop(rt);
    let got = on_thread_within("noq blocking submit when runtime dies", 10, move || {
        t.join().unwrap()
    });
    assert_eq!(got.unwrap_err(), nb_aiopool::SubmitErrorKind::NoRuntime);
}

#[test]
fn pin_common_blocking_submit_waiting_when_the_runtime_ends_is_no_runtime() {
    let rt = multi_thread_of(1);
    let pool = common_local(1, 1);
    rt.block_on(async {
        pool.submit(std::future::pending::<()>())
            .await
            .unwrap()
            .detach();
        pool.submit(std::future::pending::<()>())
            .await
            .unwrap()
            .detach();
    });
    let p = pool.clone();
    let t = std::thread::spawn(move || {
        p.blocking_submit(async { 5 })
            .map(|h| h.blocking_wait().map_err(|e| e.cancel_reason()))
            .map_err(|e| e.kind())
    });
    std::thread::sleep(Duration::from_millis(50));
    drop(rt);
    let got = on_thread_within("common blocking submit when runtime dies", 10, move || {
        t.join().unwrap()
    });
    assert_eq!(got.unwrap_err(), nb_aiopool::SubmitErrorKind::NoRuntime);
}

/// Finding 215: a SmartAioPool task submitted and waited for (`blocking_wait`) from a
/// `spawn_blocking` thread, cut off by the end of that thread's runtime, is queued again
/// with no live runtime to run it. The thread's `blocking_wait` had no runtime to offer
/// (its own has ended), so it waited for ever, and the runtime's drop, which waits for its
/// blocking threads, with it: the program hung at the end of `main`.
#[test]
fn smart_blocking_wait_in_spawn_blocking_does_not_hang_its_runtimes_drop() {
    let pool = smart_local(1);
    let runs = Arc::new(AtomicUsize::new(0));
    let recipe = cut_off_once(&runs, 9);
    let (started_tx, started_rx) = mpsc::channel();
    let (result_tx, result_rx) = mpsc::channel();
    let r2 = runs.clone();
    on_thread_within("the runtime's drop", 10, move || {
        let rt = multi_thread_of(1);
        let p = pool.clone();
        drop(rt.spawn_blocking(move || {
            let h = p.blocking_submit(recipe).unwrap();
            started_tx.send(()).unwrap();
            let _ = result_tx.send(h.blocking_wait().map_err(|e| e.to_string()));
        }));
        started_rx.recv().unwrap();
        // Its first run has started (and never ends).
        while r2.load(Ordering::SeqCst) < 1 {
            std::thread::yield_now();
        }
        drop(rt);
    });
    assert_eq!(result_rx.recv_timeout(Duration::from_secs(1)), Ok(Ok(9)));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// Finding 217 (docs): an abort resolves the handle, and makes `is_finished` true, while a
/// running task's future is still in the middle of a poll on another thread; the pool
/// counts it (and gives its room back) only when it is dropped at its next `.await`. The
/// crate docs' "Guarantees" said without exception that the counters include a resolved
/// handle's task and its room is back, and `is_finished` that the task "has finished".
/// This pins the behaviour the docs now describe.
#[test]
fn an_abort_resolves_the_handle_before_a_running_task_stops_or_is_counted() {
    let rt = multi_thread_of(2);
    let pool = common_local(1, 0);
    let inside = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let after = Arc::new(AtomicUsize::new(0));
    let (i, r, d, a) = (
        inside.clone(),
        release.clone(),
        dropped.clone(),
        after.clone(),
    );
    let h = rt
        .block_on(pool.submit(async move {
            let _guard = Counted(d);
            i.store(1, Ordering::SeqCst);
            // In the middle of a poll: no `.await` until released.
            while r.load(Ordering::SeqCst) == 0 {
                std::hint::spin_loop();
            }
            tokio::task::yield_now().await;
            a.store(1, Ordering::SeqCst);
        }))
        .unwrap();
    assert_eq!(reach_blocking(&inside, 1, Duration::from_secs(10)), 1);
    h.abort();
    assert!(
        h.is_finished(),
        "is_finished is true at once after an abort"
    );
    let stats = pool.stats();
    assert_eq!((stats.running, stats.cancelled), (1, 0), "counted later");
    assert!(
        pool.try_submit(async {}).is_err(),
        "its room is not back yet"
    );
    assert_eq!(dropped.load(Ordering::SeqCst), 0, "the future still runs");
    let err = plain_block_on(h).unwrap_err();
    assert_eq!(err.cancel_reason(), Some(CancelReason::Aborted));
    release.store(1, Ordering::SeqCst);
    rt.block_on(async { within("wait", pool.wait()).await });
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    assert_eq!(
        after.load(Ordering::SeqCst),
        0,
        "dropped at its next .await"
    );
    assert_eq!(pool.stats().cancelled, 1);
}

/// Finding 218 (docs): the blocking calls do not check for an async thread while it unwinds
/// from a panic (a second panic there would abort the process): on a thread inside
/// `block_on`, a `Drop` run by a panic's unwinding may call `blocking_wait`, which then
/// blocks (here it returns at once, the task having ended) rather than panic as the docs
/// said without exception.
#[test]
fn blocking_wait_while_unwinding_on_an_async_thread_is_not_checked() {
    struct WaitOnDrop(
        Option<nb_aiopool::TaskHandle<i32>>,
        mpsc::Sender<Result<i32, String>>,
    );
    impl Drop for WaitOnDrop {
        fn drop(&mut self) {
            let h = self.0.take().unwrap();
            let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.blocking_wait()));
            let _ = self.1.send(match got {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("panicked".into()),
            });
        }
    }
    hide_panics(&["unwinding on purpose"]);
    let rt = current_thread();
    let pool = common_local(1, 1);
    let h = rt.block_on(pool.submit(async { 5 })).unwrap();
    rt.block_on(pool.wait());
    let (tx, rx) = mpsc::channel();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async move {
            let _guard = WaitOnDrop(Some(h), tx);
            panic!("unwinding on purpose");
        })
    }));
    assert!(unwound.is_err());
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(Ok(5)));
}

/// Finding 216: a `spawn_blocking` thread waits for room in `blocking_submit` when its
/// runtime, the only one the pool knows, ends and leaves the pool stranded, full of the
/// re-runs of the tasks it cut off. No room can come (nothing runs them) and the thread
/// waited for ever, and the runtime's drop, which waits for it, with it. Now the submit is
/// refused with `NoRuntime` (as one that finds the pool so at once), and the thread's
/// `blocking_wait`s run the re-runs (finding 215).
#[test]
fn smart_blocking_submit_waiting_in_spawn_blocking_of_an_ending_runtime_is_refused() {
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(1)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let runs = Arc::new(AtomicUsize::new(0));
    let recipe = cut_off_once(&runs, 9);
    let (started_tx, started_rx) = mpsc::channel();
    let (result_tx, result_rx) = mpsc::channel();
    let r2 = runs.clone();
    on_thread_within("the runtime's drop", 10, move || {
        let rt = multi_thread_of(1);
        let p = pool.clone();
        drop(rt.spawn_blocking(move || {
            let a = p.blocking_submit(recipe).unwrap();
            let b = p.blocking_submit(|| async { 2u32 }).unwrap();
            started_tx.send(()).unwrap();
            // The pool is full: this waits for room.
            let c = p.blocking_submit(|| async { 3u32 });
            let _ = result_tx.send((
                c.map(|_| ()).map_err(|e| e.kind()),
                a.blocking_wait().map_err(|e| e.to_string()),
                b.blocking_wait().map_err(|e| e.to_string()),
            ));
        }));
        started_rx.recv().unwrap();
        while r2.load(Ordering::SeqCst) < 1 {
            std::thread::yield_now();
        }
        drop(rt);
    });
    assert_eq!(
        result_rx.recv_timeout(Duration::from_secs(1)),
        Ok((Err(nb_aiopool::SubmitErrorKind::NoRuntime), Ok(9), Ok(2)))
    );
}
