//! Probes of a review of 2ab9f5a and 0499519 (findings 238–240's fixes; RELIABILITY.md,
//! finding 245, documentation): a slot task out
//! of its per-poll budget that gives its unit back (the rate window's timer, keys freed
//! by the job that just ended), and the runtimes a blocked wait offers (block_in_place,
//! a multi-thread runtime's handle entered, a blocking submit in a Drop while unwinding,
//! nested blocked waits). These pass on the current code: they pin behaviour.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nb_aiopool::{CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitOptions};
use support::*;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Common,
    Smart,
}

/// One slot, a rate window of 32 starts: one slot task runs the 32 quick jobs in one
/// poll and is out of budget with the 33rd queued and the window full. It gives its unit
/// back; a timer must be armed to start the 33rd when the window reopens.
fn rate_case(kind: Kind) {
    let rt = paused_runtime();
    rt.block_on(async move {
        let per = Duration::from_secs(3600);
        let ran = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        macro_rules! go {
            ($pool:expr) => {{
                let pool = $pool;
                for _ in 0..33 {
                    let ran = ran.clone();
                    handles.push(
                        pool.try_submit_with(
                            async move {
                                ran.fetch_add(1, Ordering::SeqCst);
                            },
                            SubmitOptions::new(),
                        )
                        .unwrap(),
                    );
                }
                for _ in 0..50 {
                    tokio::task::yield_now().await;
                }
                assert_eq!(ran.load(Ordering::SeqCst), 32, "{kind:?}");
                let s = pool.stats();
                assert_eq!((s.running, s.queued), (0, 1), "{kind:?}: {s}");
                tokio::time::advance(per + Duration::from_secs(1)).await;
                for h in handles.drain(..) {
                    within("a job", h).await.unwrap();
                }
                assert_eq!(ran.load(Ordering::SeqCst), 33);
            }};
        }
        match kind {
            Kind::Common => go!(CommonAioPool::builder()
                .max_concurrency(1)
                .max_queue_size(100)
                .rate_limit(32, per)
                .process_wide(false)
                .build()),
            Kind::Smart => {
                // A recipe pool: its recipe ignores the shared counter's clone per run.
                let pool = SmartAioPool::builder()
                    .max_concurrency(1)
                    .max_queue_size(100)
                    .rate_limit(32, per)
                    .process_wide(false)
                    .build();
                for _ in 0..33 {
                    let ran = ran.clone();
                    handles.push(
                        pool.try_submit(move || {
                            let ran = ran.clone();
                            async move {
                                ran.fetch_add(1, Ordering::SeqCst);
                            }
                        })
                        .unwrap(),
                    );
                }
                for _ in 0..50 {
                    tokio::task::yield_now().await;
                }
                assert_eq!(ran.load(Ordering::SeqCst), 32, "{kind:?}");
                let s = pool.stats();
                assert_eq!((s.running, s.queued), (0, 1), "{kind:?}: {s}");
                tokio::time::advance(per + Duration::from_secs(1)).await;
                for h in handles.drain(..) {
                    within("a job", h).await.unwrap();
                }
                assert_eq!(ran.load(Ordering::SeqCst), 33);
            }
        }
    });
}

#[test]
fn pin_common_rate_window_reopening_after_a_slot_out_of_budget_starts_the_job() {
    rate_case(Kind::Common);
}

#[test]
fn pin_smart_rate_window_reopening_after_a_slot_out_of_budget_starts_the_job() {
    rate_case(Kind::Smart);
}

/// 33 jobs of one key (max_per_key 1) in a pool of 2: one slot runs them one after the
/// other, each freed by the end of the one before, in the same poll; out of budget after
/// the 32nd, the 33rd may start (its key was freed by that job's end): no hang, right counts.
#[test]
fn pin_a_key_freed_by_the_last_job_of_the_budget_lets_the_next_start() {
    let rt = paused_runtime();
    rt.block_on(async {
        let pool = CommonAioPool::builder()
            .max_concurrency(2)
            .max_queue_size(100)
            .max_per_key(1)
            .process_wide(false)
            .build();
        let ran = Arc::new(AtomicUsize::new(0));
        let mut hs = Vec::new();
        for _ in 0..40 {
            let ran = ran.clone();
            hs.push(
                pool.try_submit_with(
                    async move {
                        ran.fetch_add(1, Ordering::SeqCst);
                    },
                    SubmitOptions::new().key("k"),
                )
                .unwrap(),
            );
        }
        for h in hs {
            within("a keyed job", h).await.unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 40);
        let s = pool.stats();
        assert_eq!((s.running, s.queued), (0, 0), "{s}");
    });
}

/// A no-queue pool with a key limit: 40 slots, 40 jobs of one key, each admitted at once;
/// they run one at a time. No hang, every job runs.
#[test]
fn pin_no_queue_pool_with_a_key_limit_runs_every_job() {
    let rt = paused_runtime();
    rt.block_on(async {
        let pool = NoQueueAioPool::builder()
            .max_concurrency(40)
            .max_per_key(1)
            .process_wide(false)
            .build();
        let ran = Arc::new(AtomicUsize::new(0));
        let mut hs = Vec::new();
        for _ in 0..40 {
            let ran = ran.clone();
            hs.push(
                pool.try_submit_with(
                    async move {
                        ran.fetch_add(1, Ordering::SeqCst);
                    },
                    SubmitOptions::new().key("k"),
                )
                .unwrap(),
            );
        }
        for h in hs {
            within("a keyed job", h).await.unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 40);
    });
}

/// `block_in_place` on a multi-thread worker: blocking_wait and blocking_submit are
/// allowed there (the worker is given up to blocking), and the runtime, multi-thread, is
/// offered and runs the task.
#[test]
fn pin_block_in_place_blocking_wait_and_submit_work() {
    on_thread_within("block_in_place", 10, || {
        let rt = multi_thread_of(2);
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(0)
            .process_wide(false)
            .build();
        rt.block_on(async {
            let p = pool.clone();
            tokio::spawn(async move {
                tokio::task::block_in_place(|| {
                    assert!(
                        tokio::task::try_id().is_some(),
                        "a task's id in block_in_place"
                    );
                    let h = p.blocking_submit(|| async { 5u32 }).unwrap();
                    let h2 = p.blocking_submit(|| async { 6u32 }).unwrap();
                    (h.blocking_wait().unwrap(), h2.blocking_wait().unwrap())
                })
            })
            .await
            .unwrap()
        })
    });
}

/// A plain thread that entered a multi-thread runtime's handle: its blocking_submit that
/// waits for room offers that runtime (its workers drive it) and is not refused.
#[test]
fn pin_blocking_submit_under_an_entered_multi_thread_runtime_waits_and_runs() {
    let out = on_thread_within("entered multi-thread", 10, || {
        let rt = multi_thread_of(1);
        let pool = SmartAioPool::builder()
            .max_concurrency(1)
            .max_queue_size(0)
            .process_wide(false)
            .build();
        let _g = rt.enter();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let first = pool
            .blocking_submit(move || {
                let g = g.clone();
                async move {
                    let _ = g.acquire().await;
                    1u32
                }
            })
            .unwrap();
        let opener = std::thread::spawn({
            let gate = gate.clone();
            move || {
                std::thread::sleep(Duration::from_millis(50));
                gate.add_permits(10);
            }
        });
        let second = pool.blocking_submit(|| async { 2u32 }).unwrap();
        opener.join().unwrap();
        (
            first.blocking_wait().unwrap(),
            second.blocking_wait().unwrap(),
        )
    });
    assert_eq!(out, (1, 2));
}

/// A blocking_submit in a Drop that a panic's unwinding runs, on a plain thread (the
/// pool's runtime alive on another): it is accepted and its task runs.
#[test]
fn pin_blocking_submit_in_a_drop_while_unwinding_on_a_plain_thread() {
    let rt = multi_thread_of(1);
    let pool = CommonAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(4)
        .process_wide(false)
        .build();
    rt.block_on(pool.run(async {})).unwrap();
    struct OnDrop(CommonAioPool, mpsc::Sender<u32>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            let h = self.0.blocking_submit(async { 7u32 }).unwrap();
            let _ = self.1.send(h.blocking_wait().unwrap());
        }
    }
    let (tx, rx) = mpsc::channel();
    let p = pool.clone();
    hide_panics(&["unwinding on purpose"]);
    let r = on_thread_within("drop while unwinding", 10, move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _d = OnDrop(p, tx);
            panic!("unwinding on purpose");
        }))
        .is_err()
    });
    assert!(r);
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
}

/// Documentation fault (`SmartAioPool::blocking_submit`): its docs said that if every
/// runtime the pool knows ends while the pool is full, "this call waits with them: a
/// plain thread cannot offer a runtime". Since finding 216 (and 239 relies on it), such
/// a submit from a plain thread is refused with `NoRuntime`, the recipe handed back.
/// This pins the behaviour the corrected docs describe.
#[test]
fn doc_smart_blocking_submit_from_a_plain_thread_is_refused_when_the_pool_is_stranded() {
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(0)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let rt = multi_thread_of(1);
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let h = rt
        .block_on(pool.submit(move || {
            let s = s.clone();
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
        }))
        .unwrap();
    while started.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let p = pool.clone();
    let (waiting_tx, waiting_rx) = mpsc::channel();
    let submitter = std::thread::spawn(move || {
        waiting_tx.send(()).unwrap();
        p.blocking_submit(|| async { 3u32 })
            .map(|_| ())
            .map_err(|e| e.kind())
    });
    waiting_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // the submit waits for room
    drop(rt); // its task is cut off and queued again: the pool is stranded and full
    let got = on_thread_within("the blocking submit", 5, move || submitter.join().unwrap());
    assert_eq!(got, Err(nb_aiopool::SubmitErrorKind::NoRuntime));
    h.abort();
}
