//! Findings 61–64 of RELIABILITY.md: regressions of 5862fc8..f58f82e found by a review of
//! those commits (each test failed on f58f82e, 3 runs of 3). A `wait` or a waiting submit
//! offers its runtime to jobs that lost theirs without taking the home from a live one;
//! rate-limited pools ask about timers without a panic message, never in a `wait`, and
//! refuse a submit finished on a runtime without timers.

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use nb_aiopool::{CommonAioPool, SubmitOptions};
use support::Gate;
use support::{current_thread, multi_thread};

/// A pool built in runtime A (its home, alive for the whole test) serves a plain thread.
/// Some other code waits on the pool once from a short-lived runtime B (nothing to wait
/// for), which then ends. On 5862fc8 the plain thread's next submit ran on A; since
/// 88aa8e4 the empty `wait` made B the home, so with B gone the submit is refused with
/// `NoRuntime` although A is alive.
#[test]
fn empty_wait_on_a_short_lived_runtime_strands_plain_thread_submits() {
    let rt_a = multi_thread();
    let pool = {
        let _in = rt_a.enter();
        CommonAioPool::new(2, 8)
    };
    // From the plain test thread: runs on the home, A.
    let h = pool.blocking_submit(async { 1 }).unwrap();
    assert_eq!(h.blocking_wait().unwrap(), 1);

    let p = pool.clone();
    std::thread::spawn(move || current_thread().block_on(p.wait()))
        .join()
        .unwrap();

    let submitted = pool.blocking_submit(async { 2 });
    let h = match submitted {
        Ok(h) => h,
        Err(e) => panic!(
            "a plain-thread submit was refused ({:?}) while the pool's creating runtime is \
             alive: an empty wait() on a runtime that has since ended became the home",
            e.kind()
        ),
    };
    assert_eq!(h.blocking_wait().unwrap(), 2);
    drop(rt_a);
}

/// Same mechanism, worse outcome: a job submitted from a plain thread while another
/// thread waits on the pool from a short-lived runtime B is routed to B (the waiter made
/// it the home), and is cancelled with `RuntimeShutdown` when B ends after its wait,
/// although the pool's runtime A is alive and the job was not submitted from B.
#[test]
fn plain_thread_submit_during_a_wait_is_lost_when_the_waiters_runtime_ends() {
    let rt_a = multi_thread();
    let pool = {
        let _in = rt_a.enter();
        CommonAioPool::new(2, 8)
    };
    let gate1 = Gate::default();
    let gate2 = Gate::default();
    let g1 = gate1.clone();
    let h1 = pool
        .blocking_submit(async move { g1.wait().await })
        .unwrap();

    // Thread T waits on the pool from its own runtime B, which ends when the wait does.
    let (polled_tx, polled_rx) = mpsc::channel();
    let p = pool.clone();
    let waiter = std::thread::spawn(move || {
        let rt_b = current_thread();
        rt_b.block_on(async move {
            let mut wait = Box::pin(p.wait());
            // First poll: the wait has registered (and offered B to the pool).
            let first = std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await;
            assert!(first.is_pending());
            polled_tx.send(()).unwrap();
            wait.await;
        });
        drop(rt_b);
    });
    polled_rx.recv().unwrap();

    // A plain-thread submit while T waits.
    let g2 = gate2.clone();
    let h2 = pool
        .blocking_submit(async move {
            g2.wait().await;
            2
        })
        .unwrap();

    gate1.open();
    h1.blocking_wait().unwrap();
    waiter.join().unwrap(); // B has ended
    gate2.open();
    match h2.blocking_wait() {
        Ok(v) => assert_eq!(v, 2),
        Err(e) => panic!(
            "a job submitted from a plain thread was cancelled ({:?}) by the end of a runtime \
             that only waited on the pool, while the pool's runtime is alive",
            e.cancel_reason()
        ),
    }
    drop(rt_a);
}

/// A `wait` from a runtime without timers on a rate-limited pool is documented to work
/// ("waits without offering it"). Since bf1ce7a it probes the runtime by making a tokio
/// timer and catching tokio's panic: the user's panic hook runs on every such wait
/// (a "thread panicked" message on stderr; with `panic = "abort"` the process aborts).
/// On 5862fc8 a wait made no timer.
#[test]
fn wait_from_a_timerless_runtime_runs_the_panic_hook() {
    const NAME: &str = "review-last-timerless-waiter";
    static HOOKED: AtomicUsize = AtomicUsize::new(0);
    let previous = Arc::new(std::panic::take_hook());
    let prev = Arc::clone(&previous);
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(NAME) {
            HOOKED.fetch_add(1, Ordering::SeqCst);
        }
        prev(info);
    }));

    let rt_a = multi_thread();
    let pool = {
        let _in = rt_a.enter();
        CommonAioPool::builder()
            .max_concurrency(2)
            .rate_limit(100, Duration::from_secs(1))
            .build()
    };
    let p = pool.clone();
    std::thread::Builder::new()
        .name(NAME.into())
        .spawn(move || {
            let timerless = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            for _ in 0..3 {
                timerless.block_on(p.wait());
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let n = HOOKED.load(Ordering::SeqCst);
    assert_eq!(
        n, 0,
        "three wait() calls from a runtime without timers ran the panic hook {n} times"
    );
    drop(rt_a);
}

/// bf1ce7a moved the timers check from the push (under the lock, with the runtime the job
/// will run on) to the start of admission. A `submit` future that had to wait for room is
/// checked where it was first polled (a timed runtime A); finished on a runtime T without
/// timers, it is accepted and its job is bound to T (T becomes the home), where the rate
/// limit's timer task panics (tokio: "timers are disabled"): the job never starts and
/// nothing says why. The builders' doc promises a panic for a submit from such a runtime
/// (5862fc8 panicked at the push, refusing the job).
#[test]
fn submit_finished_on_a_timerless_runtime_is_accepted_and_never_starts() {
    let rt_a = multi_thread();
    let pool = {
        let _in = rt_a.enter();
        CommonAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(0)
            .rate_limit(1, Duration::from_secs(2))
            .build()
    };
    let gate1 = Gate::default();
    let g1 = gate1.clone();
    let h1 = pool
        .blocking_submit(async move { g1.wait().await })
        .unwrap();
    // The submit waits for room, first polled on A.
    let p = pool.clone();
    let mut fut = Box::pin(async move { p.submit(async { 2 }).await });
    rt_a.block_on(async {
        let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "the pool is full");
    });
    gate1.open();
    h1.blocking_wait().unwrap();

    // Finished on T (no timers), within the rate window: the job has to wait for the rate
    // limit's timer.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let timerless = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let submitted =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| timerless.block_on(fut)));
        match submitted {
            Err(_) => tx
                .send("refused with a panic (documented)".to_string())
                .unwrap(),
            Ok(Err(e)) => tx.send(format!("refused: {:?}", e.kind())).unwrap(),
            Ok(Ok(h)) => {
                let r = timerless.block_on(h);
                tx.send(format!("ran: {:?}", r.ok())).unwrap();
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(8)) {
        Ok(outcome) => eprintln!("outcome: {outcome}"),
        Err(_) => panic!(
            "a submit finished on a runtime without timers was accepted, and its job has \
             not started 6 s after its 2 s rate window (its rate timer panicked there)"
        ),
    }
    drop(rt_a);
}

/// A SmartAioPool full of the re-runs of a runtime that ended, and no other runtime known:
/// a submit from outside any runtime waited for room for ever (a plain thread's
/// `blocking_submit`, or `submit().await` polled by another executor), where the docs
/// promise `NoRuntime` when no runtime can run the task. It is refused at once now; once a
/// runtime waits on the pool, the re-runs run there and submits are served again.
#[test]
fn a_submit_from_outside_a_runtime_into_a_pool_no_runtime_can_drain_is_refused() {
    let pool = support::one_slot_smart(1);
    let (rt_v, first, second) = support::fill_smart_from_a_new_runtime(&pool);
    drop(rt_v);
    let p = pool.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = p.blocking_submit(|| async { 3u32 }).map(drop);
        let _ = tx.send(r.map_err(|e| e.kind()));
    });
    let r = rx.recv_timeout(Duration::from_secs(5)).expect(
        "hang: a plain thread's blocking_submit waited for room that no runtime would make",
    );
    assert_eq!(r, Err(nb_aiopool::SubmitErrorKind::NoRuntime));
    // The same through `submit().await`, polled outside tokio.
    let mut submit = std::pin::pin!(pool.submit(|| async { 4u32 }));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match submit.as_mut().poll(&mut cx) {
        Poll::Ready(r) => assert_eq!(
            r.map(drop).map_err(|e| e.kind()),
            Err(nb_aiopool::SubmitErrorKind::NoRuntime)
        ),
        Poll::Pending => {
            panic!("a submit polled outside tokio waited for room no runtime would make")
        }
    }
    // A runtime that waits on the pool runs the re-runs; then there is room again.
    let rt_c = multi_thread();
    rt_c.block_on(pool.wait());
    assert_eq!(first.blocking_wait().unwrap(), 1);
    assert_eq!(second.blocking_wait().unwrap(), 2);
    let h = pool.blocking_submit(|| async { 5u32 }).unwrap();
    assert_eq!(h.blocking_wait().unwrap(), 5);
}

/// Finding 77 (a review of findings 70–76 on 7d9597c): finding 72's fix, from a `spawn_blocking` thread that outlived its runtime B: the thread
/// has a runtime context (B's, dead), so `ensure_started` says "a runtime can serve" and
/// the submit waits for room no runtime will make: it hangs, where a plain thread gets
/// `NoRuntime`.
#[test]
fn blocking_submit_from_a_spawn_blocking_thread_of_a_dead_runtime_is_refused_not_hung() {
    let pool = support::one_slot_smart(1);
    let (rt_v, _first, _second) = support::fill_smart_from_a_new_runtime(&pool);
    drop(rt_v);
    let rt_b = current_thread();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    let p = pool.clone();
    drop(rt_b.spawn_blocking(move || {
        started_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        let r = p.blocking_submit(|| async { 3u32 }).map(drop);
        let _ = tx.send(r.map_err(|e| e.kind()));
    }));
    started_rx.recv().unwrap();
    // B ends; its blocking thread goes on.
    rt_b.shutdown_timeout(Duration::from_millis(10));
    go_tx.send(()).unwrap();
    let r = rx.recv_timeout(Duration::from_secs(5)).expect(
        "hang: blocking_submit from a spawn_blocking thread of a runtime that ended waited for \
         room no runtime would make (a plain thread gets NoRuntime)",
    );
    assert_eq!(r, Err(nb_aiopool::SubmitErrorKind::NoRuntime));
}

/// The same through `submit().await`, polled outside tokio under a `Handle::enter` guard of
/// a runtime that has ended.
#[test]
fn submit_under_an_entered_dead_runtime_into_a_pool_no_runtime_can_drain_is_refused() {
    let pool = support::one_slot_smart(1);
    let (rt_v, _first, _second) = support::fill_smart_from_a_new_runtime(&pool);
    drop(rt_v);
    let rt_b = current_thread();
    let handle = rt_b.handle().clone();
    drop(rt_b);
    let _in = handle.enter();
    let mut submit = std::pin::pin!(pool.submit(|| async { 4u32 }));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match submit.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => assert_eq!(
            r.map(drop).map_err(|e| e.kind()),
            Err(nb_aiopool::SubmitErrorKind::NoRuntime)
        ),
        std::task::Poll::Pending => {
            panic!("a submit under a dead runtime's context waited for room no runtime would make")
        }
    }
}

/// A submit that finds the pool full and never queues its job (here it times out) does
/// not make its runtime the pool's home: a review of b8a09b7 found that the admission
/// under the engine's lock entered the submitter's runtime before it checked for room, so
/// a plain thread's next job went to a runtime nobody drove, and never ran.
#[test]
fn a_full_submit_that_times_out_leaves_the_home_where_it_was() {
    let home = multi_thread();
    let pool = home.block_on(async { CommonAioPool::new(1, 0) });
    let (release, released) = mpsc::channel::<()>();
    let job = async move {
        tokio::task::spawn_blocking(move || released.recv())
            .await
            .ok();
    };
    let blocker = home.block_on(pool.submit(job)).unwrap();
    // A second runtime, alive but driven only during its `block_on`.
    let other = current_thread();
    let refused = other
        .block_on(pool.submit_with(
            async {},
            SubmitOptions::new().timeout(Duration::from_millis(20)),
        ))
        .unwrap_err();
    assert!(refused.is_timed_out(), "{refused:?}");
    release.send(()).unwrap();
    home.block_on(async { blocker.await.unwrap() });

    let p = pool.clone();
    let plain = std::thread::spawn(move || p.blocking_submit(async { 7 }).unwrap().blocking_wait());
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !plain.is_finished() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished = plain.is_finished();
    drop(other); // ends a job sent there (cancelled), so that the thread ends
    assert!(
        finished,
        "the plain thread's job went to the runtime nobody drives"
    );
    assert_eq!(plain.join().unwrap().unwrap(), 7);
}
