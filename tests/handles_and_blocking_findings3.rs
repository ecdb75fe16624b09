//! Regression tests of a review of the fixes of findings 225–227 (777d5c5; RELIABILITY.md,
//! findings 239–240): the current-thread runtimes a blocked wait or submit does not
//! offer, and those it does. Each failed before its fix.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nb_aiopool::SubmitErrorKind;
use support::*;

/// Finding 239, 227's case for `blocking_submit`: a plain thread that entered a current-thread
/// runtime it does not drive (`Handle::enter`) waits in `blocking_submit` for room in a
/// SmartAioPool whose task runs on another runtime. The submit made the entered runtime
/// known to the pool (a submit that waits offers its runtime); when the other runtime
/// ends, the re-run is queued for that entered runtime, which nothing drives: the only
/// thread that could is blocked in the submit, for ever.
#[test]
fn blocking_submit_under_an_entered_current_thread_runtime_does_not_hang() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (pool, rt, h) = full_smart_pool_on_a_runtime(&runs);
    let p = pool.clone();
    let (waiting_tx, waiting_rx) = mpsc::channel();
    let submitter = std::thread::spawn(move || {
        let ct = current_thread();
        let _g = ct.enter();
        waiting_tx.send(()).unwrap();
        p.blocking_submit(|| async { 3u32 })
            .map(|_| ())
            .map_err(|e| e.kind())
    });
    waiting_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // the submit waits for room
    drop(rt); // the task is cut off and queued again
    let got = on_thread_within("the blocking submit", 5, move || submitter.join().unwrap());
    assert_eq!(got, Err(SubmitErrorKind::NoRuntime));
    // The task is kept, and runs once something can run it.
    assert_eq!(
        on_thread_within("its blocking_wait", 10, move || h.blocking_wait()).unwrap(),
        9
    );
}

/// Finding 240: a documentation fault of 227's fix (and a needless cut-off): the docs say a
/// `blocking_wait` makes a runtime of its own only with no live runtime to offer, or only
/// a current-thread one it *entered* (`Handle::enter`); but a `spawn_blocking` thread of a
/// live current-thread runtime (`#[tokio::main(flavor = "current_thread")]`, or any
/// `#[tokio::test]`), which that runtime's `block_on` drives, did not offer it either.
/// The wait made its own runtime, where the pool's other re-runs started too, and cut
/// them off when it returned: here task B, started there, ran a third time, and the pool
/// was left stranded (B ran again only once awaited), though a driven runtime was there.
#[test]
fn blocking_wait_in_spawn_blocking_of_a_live_current_thread_runtime_offers_it() {
    let pool = smart_local(2);
    let runs_a = Arc::new(AtomicUsize::new(0));
    let runs_b = Arc::new(AtomicUsize::new(0));
    let b_started = Arc::new(AtomicBool::new(false));
    let released = Arc::new(AtomicBool::new(false));
    let a_ran_on = Arc::new(std::sync::Mutex::new(None));
    let rt = multi_thread_of(1);
    let (ra, bs, on) = (runs_a.clone(), b_started.clone(), a_ran_on.clone());
    let a = rt
        .block_on(pool.submit(move || {
            let first = ra.fetch_add(1, Ordering::SeqCst) == 0;
            let (bs, on) = (bs.clone(), on.clone());
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                *on.lock().unwrap() = Some(tokio::runtime::Handle::current().id());
                // Ends once B's re-run has started.
                while !bs.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                1u32
            }
        }))
        .unwrap();
    let (rb, bs, rel) = (runs_b.clone(), b_started.clone(), released.clone());
    let b = rt
        .block_on(pool.submit(move || {
            let first = rb.fetch_add(1, Ordering::SeqCst) == 0;
            let (bs, rel) = (bs.clone(), rel.clone());
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                bs.store(true, Ordering::SeqCst);
                while !rel.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                2u32
            }
        }))
        .unwrap();
    until("both first runs", || {
        runs_a.load(Ordering::SeqCst) == 1 && runs_b.load(Ordering::SeqCst) == 1
    });
    drop(rt); // both cut off: the pool is stranded
    let ct_id = on_thread_within("the waits", 10, move || {
        let ct = current_thread();
        let got = ct.block_on(async move {
            let got_a = within(
                "a's blocking_wait",
                tokio::task::spawn_blocking(move || a.blocking_wait()),
            )
            .await
            .unwrap();
            released.store(true, Ordering::SeqCst);
            let got_b = within("b", b).await;
            (got_a.unwrap(), got_b.unwrap())
        });
        assert_eq!(got, (1, 2));
        ct.handle().id()
    });
    assert_eq!(
        *a_ran_on.lock().unwrap(),
        Some(ct_id),
        "A's re-run ran elsewhere"
    );
    assert_eq!(
        runs_b.load(Ordering::SeqCst),
        2,
        "B's re-run was cut off and ran again"
    );
}
