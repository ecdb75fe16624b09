//! Nested waits under `max_per_key` (finding 110): findings 117–121, from review r19 of
//! 4c57e62, the first form of the key rule (`Engine::leaves_key_stuck`, replaced by
//! `Engine::key_deadlock`), and 122–126, from review r21 of its second form (e067903).
//! Each failed 3 runs of 3 there; the `probe_*` tests are the reviews' checks that held.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{CancelReason, CommonAioPool, SubmitOptions, TaskError};
use support::Gate;

fn key(k: &'static str) -> SubmitOptions {
    SubmitOptions::new().key(k)
}

fn common(conc: usize, per_key: usize) -> CommonAioPool {
    CommonAioPool::builder()
        .max_concurrency(conc)
        .max_queue_size(16)
        .max_per_key(per_key)
        .process_wide(false)
        .build()
}

/// Bounded wait (paused time advances on its own): `None` on a hang.
async fn bounded<F: std::future::Future>(fut: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .ok()
}

fn would_deadlock(r: &Result<impl std::fmt::Debug, TaskError>) -> bool {
    matches!(r, Err(e) if e.cancel_reason() == Some(CancelReason::WouldDeadlock))
}

/// `max_per_key(2)`: "a task of key `k` awaiting a child of key `k`, with `n` such parents
/// ... is refused ... rather than both waiting for ever". A parent P of "a" awaits its
/// child S of "a" (it starts: room for two), and S awaits its own child C of "a" (queued:
/// P and S hold both places). Both running tasks of "a" wait, nothing of "a" can start:
/// S's wait must be refused. It is let wait, because P waits on S, a running task, which
/// `leaves_key_stuck` does not count as stuck.
#[tokio::test(start_paused = true)]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
async fn a_chain_of_two_parents_of_one_key_is_refused_not_hung() {
    let pool = common(4, 2);
    let p = pool.clone();
    let parent = pool
        .submit_with(
            async move {
                let p2 = p.clone();
                let s = p
                    .submit_with(
                        async move {
                            let c = p2.submit_with(async { 7 }, key("a")).await.unwrap();
                            c.await
                        },
                        key("a"),
                    )
                    .await
                    .unwrap();
                s.await.unwrap()
            },
            key("a"),
        )
        .await
        .unwrap();
    let r = bounded(parent).await;
    let s = pool.stats();
    let r =
        r.unwrap_or_else(|| panic!("hung: a parent and its child of key a wait for ever ({s:?})"));
    let inner = r.unwrap();
    assert!(would_deadlock(&inner), "{inner:?}");
    let _ = pool.shutdown_timeout(Duration::from_millis(1)).await;
}

/// The same with `max_per_key(1)` and a task without a key in the middle: P of "a" awaits
/// Q (no key, starts at once), Q awaits C of "a" (held back by P). Every running task of
/// "a" waits for a queued task of "a" (through Q), and both hang.
#[tokio::test(start_paused = true)]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
async fn a_chain_through_a_task_without_key_is_refused_not_hung() {
    let pool = common(4, 1);
    let p = pool.clone();
    let parent = pool
        .submit_with(
            async move {
                let p2 = p.clone();
                let q = p
                    .submit(async move {
                        let c = p2.submit_with(async { 7 }, key("a")).await.unwrap();
                        c.await
                    })
                    .await
                    .unwrap();
                q.await.unwrap()
            },
            key("a"),
        )
        .await
        .unwrap();
    let r = bounded(parent).await;
    let s = pool.stats();
    let r = r.unwrap_or_else(|| panic!("hung ({s:?})"));
    let inner = r.unwrap();
    assert!(would_deadlock(&inner), "{inner:?}");
    let _ = pool.shutdown_timeout(Duration::from_millis(1)).await;
}

/// "a task that also waits on a task that can progress is let wait": W of "a"
/// (`max_per_key(1)`) races its child C of "a" against X (no key, ends after 10 ms) in a
/// `select!`. X ends, W takes that branch and ends, and C (detached) runs. But the handle
/// polled first is C's: the wait is refused before X's is counted, and C is cancelled.
#[tokio::test(start_paused = true)]
async fn a_select_over_a_held_back_child_and_a_running_task_is_not_refused() {
    let pool = common(4, 1);
    let p = pool.clone();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let w = pool
        .submit_with(
            async move {
                let x = p
                    .submit(async {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        5
                    })
                    .await
                    .unwrap();
                let mut c = p
                    .submit_with(async move { r.store(true, Ordering::SeqCst) }, key("a"))
                    .await
                    .unwrap();
                let mut x = x;
                tokio::select! {
                    biased;
                    rc = &mut c => Err(rc),
                    rx = &mut x => Ok(rx.unwrap()),
                }
            },
            key("a"),
        )
        .await
        .unwrap();
    let got = bounded(w).await.expect("W hung").unwrap();
    bounded(pool.wait()).await.expect("the pool hung");
    let s = pool.stats();
    assert_eq!(
        got.as_ref().ok(),
        Some(&5),
        "the child was refused: {got:?}"
    );
    assert!(ran.load(Ordering::SeqCst), "the child never ran ({s:?})");
    assert_eq!(s.cancelled, 0, "{s:?}");
}

/// `max_per_key(2)`: H of "a" awaits its child C2 of "a" (queued). W of "a" aborts H (a
/// running task "is dropped at its next .await point") and awaits its own child C of
/// "a". Once H is dropped, "a" has room: C2 (detached) and C run. W's wait is refused,
/// because H, aborted, still counts as a holder of "a" waiting on C2.
#[tokio::test(start_paused = true)]
async fn a_wait_after_aborting_the_other_waiting_holder_is_not_refused() {
    let pool = common(4, 2);
    let gate = Gate::default();
    let slot: Arc<Mutex<Option<nb_aiopool::AbortHandle>>> = Arc::default();
    let (p, g, sl) = (pool.clone(), gate.clone(), slot.clone());
    let w = pool
        .submit_with(
            async move {
                g.wait().await;
                sl.lock().unwrap().take().unwrap().abort();
                let c = p.submit_with(async { 3 }, key("a")).await.unwrap();
                c.await
            },
            key("a"),
        )
        .await
        .unwrap();
    let p = pool.clone();
    let h = pool
        .submit_with(
            async move {
                let c2 = p.submit_with(async { 2 }, key("a")).await.unwrap();
                c2.await
            },
            key("a"),
        )
        .await
        .unwrap();
    *slot.lock().unwrap() = Some(h.abort_handle());
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(pool.stats().running, 2);
    gate.open();
    let got = bounded(w).await.expect("W hung").unwrap();
    assert_eq!(got.as_ref().ok(), Some(&3), "{got:?}");
    let h = bounded(h).await.expect("H hung");
    assert_eq!(h.unwrap_err().cancel_reason(), Some(CancelReason::Aborted));
}

/// `max_per_key(2)`: H of "a" gives its child C2 of "a" 1 ms (`timeout(&mut c2)`), then
/// does 20 ms of other work holding the handle, and ends. W of "a", meanwhile, awaits its
/// own child C of "a": H ends, C2 and C run. W's wait is refused: H's 1 ms wait on C2 is
/// still counted (until the handle goes), so H counts as stuck.
#[tokio::test(start_paused = true)]
#[ignore = "documented at TaskHandle: a task counts as waiting on a handle it polled until that task ends or the handle is dropped (finding 121)"]
async fn a_wait_while_the_other_holder_gave_up_waiting_is_not_refused() {
    let pool = common(4, 2);
    let p = pool.clone();
    let h = pool
        .submit_with(
            async move {
                let mut c2 = p.submit_with(async { 2 }, key("a")).await.unwrap();
                let first = tokio::time::timeout(Duration::from_millis(1), &mut c2).await;
                assert!(first.is_err(), "C2 cannot start yet");
                tokio::time::sleep(Duration::from_millis(20)).await; // other work
                drop(c2);
                1
            },
            key("a"),
        )
        .await
        .unwrap();
    let p = pool.clone();
    let w = pool
        .submit_with(
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await; // after H's timeout
                let c = p.submit_with(async { 3 }, key("a")).await.unwrap();
                c.await
            },
            key("a"),
        )
        .await
        .unwrap();
    let got = bounded(w).await.expect("W hung").unwrap();
    assert_eq!(got.as_ref().ok(), Some(&3), "{got:?}");
    assert_eq!(bounded(h).await.expect("H hung").unwrap(), 1);
}

/// The chain above on a `NoQueueAioPool`.
#[tokio::test(start_paused = true)]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
async fn a_chain_of_two_parents_of_one_key_is_refused_not_hung_no_queue_pool() {
    let pool = nb_aiopool::NoQueueAioPool::builder()
        .max_concurrency(4)
        .max_per_key(2)
        .process_wide(false)
        .build();
    let p = pool.clone();
    let parent = pool
        .submit_with(
            async move {
                let p2 = p.clone();
                let s = p
                    .submit_with(
                        async move {
                            let c = p2.submit_with(async { 7 }, key("a")).await.unwrap();
                            c.await
                        },
                        key("a"),
                    )
                    .await
                    .unwrap();
                s.await.unwrap()
            },
            key("a"),
        )
        .await
        .unwrap();
    let r = bounded(parent).await.expect("hung").unwrap();
    assert!(would_deadlock(&r), "{r:?}");
}

/// The chain above on an elastic `SmartAioPool` (recipes).
#[tokio::test(start_paused = true)]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
async fn a_chain_of_two_parents_of_one_key_is_refused_not_hung_smart_pool() {
    let pool = nb_aiopool::SmartAioPool::builder()
        .max_concurrency(4)
        .min_workers(1)
        .max_queue_size(16)
        .max_per_key(2)
        .auto_shutdown(false)
        .build();
    let p = pool.clone();
    let parent = pool
        .submit_with(
            move || {
                let p = p.clone();
                async move {
                    let p2 = p.clone();
                    let s = p
                        .submit_with(
                            move || {
                                let p2 = p2.clone();
                                async move {
                                    let c = p2.submit_with(|| async { 7 }, key("a")).await.unwrap();
                                    c.await
                                }
                            },
                            key("a"),
                        )
                        .await
                        .unwrap();
                    s.await.unwrap()
                }
            },
            key("a"),
        )
        .await
        .unwrap();
    let r = bounded(parent).await.expect("hung").unwrap();
    assert!(would_deadlock(&r), "{r:?}");
}

/// A cycle across two keys (`max_per_key(1)`): P of "a" awaits a queued child of "b" while
/// Q of "b" awaits a queued child of "a". Neither child can start before the other parent
/// ends: one wait is refused, the other parent then completes.
#[tokio::test(start_paused = true)]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
async fn a_cycle_across_two_keys_is_refused_not_hung() {
    let pool = common(4, 1);
    let gate = Gate::default();
    let mut parents = Vec::new();
    for (own, other) in [("a", "b"), ("b", "a")] {
        let p = pool.clone();
        let g = gate.clone();
        parents.push(
            pool.submit_with(
                async move {
                    g.wait().await; // both hold their key before either waits
                    let child = p.submit_with(async { 5 }, key(other)).await.unwrap();
                    child.await
                },
                key(own),
            )
            .await
            .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    gate.open();
    let q = bounded(parents.pop().unwrap())
        .await
        .expect("Q hung")
        .unwrap();
    let p = bounded(parents.pop().unwrap())
        .await
        .expect("P hung")
        .unwrap();
    let refused = [&p, &q].iter().filter(|r| would_deadlock(r)).count();
    assert_eq!(refused, 1, "{p:?} {q:?}");
    assert!(
        p.as_ref().ok() == Some(&5) || q.as_ref().ok() == Some(&5),
        "{p:?} {q:?}"
    );
    bounded(pool.wait()).await.expect("wait hung");
}

// ----- review r21 (findings 122–126) ---------------------------------------------------

/// `max_per_key(1)`. P of "a" starts S (no key), which awaits its child C2 of "a" (queued:
/// P holds "a"; S is not stuck yet, P does not wait). Then P awaits, in one `join!`, its own
/// child C1 of "a" and S. Every running holder of "a" (P) now waits, directly (C1) or
/// through S (C2), on queued tasks of "a": a deadlock, found at P's wait. P is picked (it
/// waits on a hopeless task) and C1 is refused; but P still waits on S, S on C2, C2 on P's
/// key: the deadlock survives the pick's refusals, and nothing looks again.
#[tokio::test(start_paused = true)]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
async fn a_join_over_a_hopeless_child_and_a_stuck_task_is_not_left_hanging() {
    let pool = common(4, 1);
    let p = pool.clone();
    let parent = pool
        .submit_with(
            async move {
                let p2 = p.clone();
                let s = p
                    .submit(async move {
                        let c2 = p2.submit_with(async { 2 }, key("a")).await.unwrap();
                        c2.await
                    })
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await; // S waits first
                let c1 = p.submit_with(async { 1 }, key("a")).await.unwrap();
                let (r1, rs) = futures_util::future::join(c1, s).await;
                (r1, rs.map(|r| r.map_err(|e| e.to_string())))
            },
            key("a"),
        )
        .await
        .unwrap();
    let r = bounded(parent).await;
    let s = pool.stats();
    let (r1, rs) = r
        .unwrap_or_else(|| panic!("hung: P waits on S, S on C2, C2 on P's key ({s:?})"))
        .unwrap();
    assert!(would_deadlock(&r1), "{r1:?} {rs:?}");
}

/// The same through a group: P of "a" (`max_per_key(1)`) makes a group of two tasks
/// without key, S1 and S2, each awaiting a child of "a" (queued: P holds "a"), then
/// `join_all`s it. The pick (the newest stuck task that waits on a hopeless task, S2)
/// refuses its child and ends; P still waits on S1, S1 on its child, the child on P's key.
#[tokio::test(start_paused = true)]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
async fn a_group_of_two_chains_into_the_parents_key_is_not_left_hanging() {
    let pool = common(6, 1);
    let p = pool.clone();
    let parent = pool
        .submit_with(
            async move {
                let mut group = p.group::<Result<i32, String>>();
                for i in 0..2 {
                    let p2 = p.clone();
                    group
                        .submit(async move {
                            let c = p2.submit_with(async move { i }, key("a")).await.unwrap();
                            c.await.map_err(|e| e.to_string())
                        })
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(1)).await; // S1, S2 wait first
                group.join_all().await
            },
            key("a"),
        )
        .await
        .unwrap();
    let r = bounded(parent).await;
    let s = pool.stats();
    let all = r
        .unwrap_or_else(|| panic!("hung: P waits on S1, S1 on its child of P's key ({s:?})"))
        .unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
}

/// Two deadlocks in one tick (`max_per_key(1)`). D2: P of "a" awaits S (no key), which
/// already awaits its child Ca of "a" (P holds "a"): the wait closing D2 is P's, which
/// waits on no hopeless task itself, so the pool picks "the newest" stuck task that does.
/// D1: H of "b" awaits its own child Cb of "b", just before (H is picked, to be refused at
/// its next poll). H is newer than S, so D2's pick is H again: H's refusal breaks D1 only,
/// and P and S wait for ever.
#[tokio::test(start_paused = true)]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
async fn a_deadlock_closed_while_another_is_pending_gets_its_own_pick() {
    let pool = common(8, 1);
    let gate_p = Gate::default();
    let gate_h = Gate::default();
    let p = pool.clone();
    let g = gate_p.clone();
    let parent = pool
        .submit_with(
            async move {
                let p2 = p.clone();
                let s = p
                    .submit(async move {
                        let ca = p2.submit_with(async { 1 }, key("a")).await.unwrap();
                        ca.await
                    })
                    .await
                    .unwrap();
                g.wait().await;
                s.await.unwrap()
            },
            key("a"),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await; // S waits on Ca
    let p = pool.clone();
    let g = gate_h.clone();
    let h = pool
        .submit_with(
            async move {
                let cb = p.submit_with(async { 2 }, key("b")).await.unwrap();
                g.wait().await;
                cb.await
            },
            key("b"),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(pool.stats().running, 3);
    // In one go: H waits first, then P, before H is polled again.
    gate_h.open();
    gate_p.open();
    let h = bounded(h).await.expect("H hung").unwrap();
    assert!(would_deadlock(&h), "{h:?}");
    let r = bounded(parent).await;
    let s = pool.stats();
    let r = r
        .unwrap_or_else(|| panic!("hung: P waits on S, S on Ca, Ca on P's key ({s:?})"))
        .unwrap();
    assert!(would_deadlock(&r), "{r:?}");
}

/// Finding 120 on a multi-thread runtime: W of "a" (`max_per_key(2)`) aborts H, the other
/// holder of "a" (waiting on its child C2 of "a"), then awaits its own child C of "a".
/// Once H is dropped "a" has room: C2 and C run. The refusal at W's next poll is meant to
/// come after H's slot dropped H; with two workers, W's next poll may come first.
#[test]
fn a_wait_after_aborting_the_other_waiting_holder_is_not_refused_multi_thread() {
    let mut refused = 0;
    let rounds = 300;
    for _ in 0..rounds {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let pool = common(4, 2);
            let gate = Gate::default();
            let slot: Arc<Mutex<Option<nb_aiopool::AbortHandle>>> = Arc::default();
            let (p, g, sl) = (pool.clone(), gate.clone(), slot.clone());
            let w = pool
                .submit_with(
                    async move {
                        g.wait().await;
                        sl.lock().unwrap().take().unwrap().abort();
                        let c = p.submit_with(async { 3 }, key("a")).await.unwrap();
                        c.await
                    },
                    key("a"),
                )
                .await
                .unwrap();
            let p = pool.clone();
            let h = pool
                .submit_with(
                    async move {
                        let c2 = p.submit_with(async { 2 }, key("a")).await.unwrap();
                        c2.await
                    },
                    key("a"),
                )
                .await
                .unwrap();
            *slot.lock().unwrap() = Some(h.abort_handle());
            while pool.stats().running < 2 || pool.stats().queued < 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            gate.open();
            let got = tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("W hung")
                .unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
            got
        });
        if would_deadlock(&got) {
            refused += 1;
        } else {
            assert_eq!(got.as_ref().ok(), Some(&3), "{got:?}");
        }
    }
    assert_eq!(
        refused, 0,
        "W's child refused in {refused} of {rounds} rounds"
    );
}

/// Counts the polls of the future it wraps.
struct Polls<F> {
    inner: std::pin::Pin<Box<F>>,
    count: Arc<AtomicUsize>,
}

impl<F: std::future::Future> std::future::Future for Polls<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.inner.as_mut().poll(cx)
    }
}

fn polls<F: std::future::Future>(f: F, count: &Arc<AtomicUsize>) -> Polls<F> {
    Polls {
        inner: Box::pin(f),
        count: count.clone(),
    }
}

fn assert_stats_add_up(s: &nb_aiopool::PoolStats) {
    assert_eq!(
        s.submitted,
        s.completed + s.panicked + s.cancelled + s.queued as u64 + s.running as u64,
        "{s:?}"
    );
}

/// Probe (expected to hold): a cycle across three keys (`max_per_key(1)`): P(a) awaits a
/// child of "b", Q(b) one of "c", R(c) one of "a". One wait refused, the others complete.
#[tokio::test(start_paused = true)]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
async fn probe_a_cycle_across_three_keys_is_refused_once() {
    let pool = common(8, 1);
    let gate = Gate::default();
    let mut parents = Vec::new();
    for (own, other) in [("a", "b"), ("b", "c"), ("c", "a")] {
        let p = pool.clone();
        let g = gate.clone();
        parents.push(
            pool.submit_with(
                async move {
                    g.wait().await;
                    let child = p.submit_with(async { 5 }, key(other)).await.unwrap();
                    child.await
                },
                key(own),
            )
            .await
            .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    gate.open();
    let mut results = Vec::new();
    for h in parents {
        results.push(bounded(h).await.expect("hung").unwrap());
    }
    let refused = results.iter().filter(|r| would_deadlock(r)).count();
    assert_eq!(refused, 1, "{results:?}");
    bounded(pool.wait()).await.expect("wait hung");
    let s = pool.stats();
    assert_stats_add_up(&s);
    assert_eq!((s.completed, s.cancelled), (5, 1), "{s:?}");
}

/// Probe: the chain P(a) -> S(a) -> C(a) with priorities (a prioritised queue) and polls
/// counted: refused, S polled a few times only.
#[tokio::test(start_paused = true)]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
async fn probe_a_chain_with_priorities_is_refused_without_busy_polls() {
    let pool = common(4, 2);
    let count = Arc::new(AtomicUsize::new(0));
    let p = pool.clone();
    let c2 = count.clone();
    let parent = pool
        .submit_with(
            async move {
                let p2 = p.clone();
                let s = p
                    .submit_with(
                        polls(
                            async move {
                                let c = p2
                                    .submit_with(async { 7 }, key("a").priority(-3))
                                    .await
                                    .unwrap();
                                c.await
                            },
                            &c2,
                        ),
                        key("a").priority(5),
                    )
                    .await
                    .unwrap();
                s.await.unwrap()
            },
            key("a").priority(1),
        )
        .await
        .unwrap();
    let r = bounded(parent).await.expect("hung").unwrap();
    assert!(would_deadlock(&r), "{r:?}");
    let n = count.load(Ordering::SeqCst);
    assert!(n <= 4, "S polled {n} times");
    bounded(pool.wait()).await.expect("wait hung");
    assert_stats_add_up(&pool.stats());
}

/// Probe: an unbiased `select!` over a held-back child of the task's own key and a
/// running task (no key) that ends: never refused, whatever the branch order.
#[tokio::test(start_paused = true)]
async fn probe_an_unbiased_select_over_a_held_back_child_and_a_running_task() {
    for _ in 0..20 {
        let pool = common(4, 1);
        let p = pool.clone();
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let w = pool
            .submit_with(
                async move {
                    let mut x = p
                        .submit(async {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            5
                        })
                        .await
                        .unwrap();
                    let mut c = p
                        .submit_with(async move { r.store(true, Ordering::SeqCst) }, key("a"))
                        .await
                        .unwrap();
                    tokio::select! {
                        rc = &mut c => Err(rc),
                        rx = &mut x => Ok(rx.unwrap()),
                    }
                },
                key("a"),
            )
            .await
            .unwrap();
        let got = bounded(w).await.expect("W hung").unwrap();
        bounded(pool.wait()).await.expect("the pool hung");
        assert_eq!(got.as_ref().ok(), Some(&5), "{got:?}");
        assert!(ran.load(Ordering::SeqCst));
        assert_eq!(pool.stats().cancelled, 0);
    }
}

/// Probe: the two-key cycle on a multi-thread runtime, many rounds: exactly one refusal.
#[test]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
fn probe_a_cycle_across_two_keys_multi_thread_refuses_exactly_one() {
    for round in 0..200 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = common(4, 1);
            let gate = Gate::default();
            let mut parents = Vec::new();
            for (own, other) in [("a", "b"), ("b", "a")] {
                let p = pool.clone();
                let g = gate.clone();
                parents.push(
                    pool.submit_with(
                        async move {
                            g.wait().await;
                            let child = p.submit_with(async { 5 }, key(other)).await.unwrap();
                            child.await
                        },
                        key(own),
                    )
                    .await
                    .unwrap(),
                );
            }
            while pool.stats().running < 2 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            gate.open();
            let mut results = Vec::new();
            for h in parents {
                let r = tokio::time::timeout(Duration::from_secs(10), h)
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: hung {:?}", pool.stats()));
                results.push(r.unwrap());
            }
            let refused = results.iter().filter(|r| would_deadlock(r)).count();
            assert_eq!(refused, 1, "round {round}: {results:?}");
            tokio::time::timeout(Duration::from_secs(10), pool.wait())
                .await
                .expect("wait hung");
            assert_stats_add_up(&pool.stats());
        });
    }
}

/// Probe: the chain P(a) -> S(a) -> C(a) (`max_per_key(2)`) on a multi-thread runtime,
/// many rounds.
#[test]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
fn probe_a_chain_multi_thread() {
    for round in 0..200 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pool = common(4, 2);
            let p = pool.clone();
            let parent = pool
                .submit_with(
                    async move {
                        let p2 = p.clone();
                        let s = p
                            .submit_with(
                                async move {
                                    let c = p2.submit_with(async { 7 }, key("a")).await.unwrap();
                                    c.await
                                },
                                key("a"),
                            )
                            .await
                            .unwrap();
                        s.await.unwrap()
                    },
                    key("a"),
                )
                .await
                .unwrap();
            let r = tokio::time::timeout(Duration::from_secs(10), parent)
                .await
                .unwrap_or_else(|_| panic!("round {round}: hung {:?}", pool.stats()))
                .unwrap();
            assert!(would_deadlock(&r), "round {round}: {r:?}");
            tokio::time::timeout(Duration::from_secs(10), pool.wait())
                .await
                .expect("wait hung");
            assert_stats_add_up(&pool.stats());
        });
    }
}

/// Probe: the chain on an elastic SmartAioPool with no idle workers kept, and on a
/// rate-limited pool.
#[tokio::test(start_paused = true)]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
async fn probe_a_chain_on_an_elastic_smart_pool_and_a_rate_limited_pool() {
    let pool = nb_aiopool::SmartAioPool::builder()
        .max_concurrency(4)
        .min_workers(0)
        .max_queue_size(16)
        .max_per_key(1)
        .auto_shutdown(false)
        .build();
    let p = pool.clone();
    let parent = pool
        .submit_with(
            move || {
                let p = p.clone();
                async move {
                    let p2 = p.clone();
                    let q = p
                        .submit(move || {
                            let p2 = p2.clone();
                            async move {
                                let c = p2.submit_with(|| async { 7 }, key("a")).await.unwrap();
                                c.await
                            }
                        })
                        .await
                        .unwrap();
                    q.await.unwrap()
                }
            },
            key("a"),
        )
        .await
        .unwrap();
    let r = bounded(parent).await.expect("smart hung").unwrap();
    assert!(would_deadlock(&r), "{r:?}");

    let pool = CommonAioPool::builder()
        .max_concurrency(4)
        .max_queue_size(16)
        .max_per_key(1)
        .rate_limit(2, Duration::from_millis(100))
        .process_wide(false)
        .build();
    let p = pool.clone();
    let parent = pool
        .submit_with(
            async move {
                let p2 = p.clone();
                let q = p
                    .submit(async move {
                        let c = p2.submit_with(async { 7 }, key("a")).await.unwrap();
                        c.await
                    })
                    .await
                    .unwrap();
                q.await.unwrap()
            },
            key("a"),
        )
        .await
        .unwrap();
    let r = bounded(parent).await.expect("rate-limited hung").unwrap();
    assert!(would_deadlock(&r), "{r:?}");
    bounded(pool.wait()).await.expect("wait hung");
    assert_stats_add_up(&pool.stats());
}

/// The join of `a_join_over_a_hopeless_child_and_a_stuck_task_is_not_left_hanging` on the
/// other pools (a NoQueueAioPool, an elastic SmartAioPool), with `tokio::join!`.
#[tokio::test(start_paused = true)]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
async fn a_join_over_a_hopeless_child_and_a_stuck_task_hangs_on_every_pool() {
    let pool = nb_aiopool::NoQueueAioPool::builder()
        .max_concurrency(4)
        .max_per_key(1)
        .process_wide(false)
        .build();
    let p = pool.clone();
    let parent = pool
        .submit_with(
            async move {
                let p2 = p.clone();
                let s = p
                    .submit(async move {
                        let c2 = p2.submit_with(async { 2 }, key("a")).await.unwrap();
                        c2.await
                    })
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                let c1 = p.submit_with(async { 1 }, key("a")).await.unwrap();
                let (r1, _rs) = tokio::join!(c1, s);
                r1
            },
            key("a"),
        )
        .await
        .unwrap();
    let no_queue = bounded(parent).await;

    let pool = nb_aiopool::SmartAioPool::builder()
        .max_concurrency(4)
        .min_workers(0)
        .max_queue_size(16)
        .max_per_key(1)
        .auto_shutdown(false)
        .build();
    let p = pool.clone();
    let parent = pool
        .submit_with(
            move || {
                let p = p.clone();
                async move {
                    let p2 = p.clone();
                    let s = p
                        .submit(move || {
                            let p2 = p2.clone();
                            async move {
                                let c2 = p2.submit_with(|| async { 2 }, key("a")).await.unwrap();
                                c2.await
                            }
                        })
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let c1 = p.submit_with(|| async { 1 }, key("a")).await.unwrap();
                    let (r1, _rs) = tokio::join!(c1, s);
                    r1
                }
            },
            key("a"),
        )
        .await
        .unwrap();
    let smart = bounded(parent).await;
    assert!(
        no_queue.is_some() && smart.is_some(),
        "hung: no_queue {no_queue:?}, smart {smart:?}"
    );
}

/// Probe: the join the other way round (S first): S is picked (the newest that waits on a
/// hopeless task), refuses C2 and ends; then P, still stuck, refuses C1. Both needed.
#[tokio::test(start_paused = true)]
#[ignore = "limitation 51 (RELIABILITY.md 110): the nested-wait check sees slots, not keys; a key rule was tried and withdrawn (findings 117-126, r23)"]
async fn probe_a_join_with_the_stuck_task_first() {
    let pool = common(4, 1);
    let p = pool.clone();
    let parent = pool
        .submit_with(
            async move {
                let p2 = p.clone();
                let s = p
                    .submit(async move {
                        let c2 = p2.submit_with(async { 2 }, key("a")).await.unwrap();
                        c2.await
                    })
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                let c1 = p.submit_with(async { 1 }, key("a")).await.unwrap();
                let (rs, r1) = futures_util::future::join(s, c1).await;
                (r1, rs.map(|r| r.map_err(|e| e.to_string())))
            },
            key("a"),
        )
        .await
        .unwrap();
    let (r1, rs) = bounded(parent).await.expect("hung").unwrap();
    assert!(would_deadlock(&r1), "{r1:?} {rs:?}");
    bounded(pool.wait()).await.expect("wait hung");
    assert_stats_add_up(&pool.stats());
}

/// Finding 120 on a multi-thread runtime, the window widened: H's future holds a guard
/// whose `Drop` takes 20 ms (user code run when the aborted H is dropped; declared after
/// H's handle on C2, so dropped first, while that wait still counts). W's next poll, on
/// the other worker, comes during that drop: W's child is refused, though "a" has room
/// as soon as H's drop ends.
#[test]
fn a_wait_after_aborting_a_holder_whose_drop_takes_time_is_not_refused() {
    /// Holds the handle; its `Drop` runs before the handle's.
    struct Slow(nb_aiopool::TaskHandle<i32>);
    impl Drop for Slow {
        fn drop(&mut self) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut refused = 0;
    let rounds = 10;
    for _ in 0..rounds {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let pool = common(4, 2);
            let gate = Gate::default();
            let slot: Arc<Mutex<Option<nb_aiopool::AbortHandle>>> = Arc::default();
            let (p, g, sl) = (pool.clone(), gate.clone(), slot.clone());
            let w = pool
                .submit_with(
                    async move {
                        g.wait().await;
                        sl.lock().unwrap().take().unwrap().abort();
                        let c = p.submit_with(async { 3 }, key("a")).await.unwrap();
                        c.await
                    },
                    key("a"),
                )
                .await
                .unwrap();
            let p = pool.clone();
            let h = pool
                .submit_with(
                    async move {
                        let c2 = p.submit_with(async { 2 }, key("a")).await.unwrap();
                        let mut slow = Slow(c2);
                        (&mut slow.0).await
                    },
                    key("a"),
                )
                .await
                .unwrap();
            *slot.lock().unwrap() = Some(h.abort_handle());
            while pool.stats().running < 2 || pool.stats().queued < 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            gate.open();
            let got = tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("W hung")
                .unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
            tokio::time::timeout(Duration::from_secs(10), pool.wait())
                .await
                .expect("wait hung");
            got
        });
        if would_deadlock(&got) {
            refused += 1;
        } else {
            assert_eq!(got.as_ref().ok(), Some(&3), "{got:?}");
        }
    }
    assert_eq!(
        refused, 0,
        "W's child refused in {refused} of {rounds} rounds"
    );
}

/// The slot rule and the key rule picking the same task. `max_per_key(1)`, two slots: P of
/// "a" awaits its children C1 and C2 of "a" in a biased `select!` (the key rule picks P);
/// before P's next poll the pool shrinks to one slot, so P, waiting, holds every slot (the
/// slot rule picks P too). At that poll C1 is refused, by the key rule, and the `select!`
/// ends; the slot rule was not told (`stuck_refused` stays false), so at the end of the
/// poll it cancels "the newest" awaited task, C2, at once: "a `select!` over two such
/// handles has one refused". P drops C2 at its next poll and ends: C2 would have run.
#[tokio::test(start_paused = true)]
async fn a_select_refused_by_the_key_rule_is_not_refused_again_by_the_slot_rule() {
    let pool = common(2, 1);
    let ran = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let p = pool.clone();
    let r = ran.clone();
    let parent = pool
        .submit_with(
            async move {
                let mut c1 = p.submit_with(async { 1 }, key("a")).await.unwrap();
                let mut c2 = p
                    .submit_with(async move { r.store(true, Ordering::SeqCst) }, key("a"))
                    .await
                    .unwrap();
                tx.send(()).unwrap(); // the test runs before P's next poll
                let first = tokio::select! {
                    biased;
                    r1 = &mut c1 => r1.map(|_| "c1"),
                    r2 = &mut c2 => r2.map(|_| "c2"),
                };
                tokio::task::yield_now().await;
                drop(c2); // detached: runs once P ends
                first
            },
            key("a"),
        )
        .await
        .unwrap();
    let shrink = pool.clone();
    tokio::spawn(async move {
        rx.await.unwrap();
        shrink.set_max_concurrency(1);
    });
    let first = bounded(parent).await.expect("P hung").unwrap();
    assert!(would_deadlock(&first), "{first:?}");
    bounded(pool.wait()).await.expect("wait hung");
    let s = pool.stats();
    assert_stats_add_up(&s);
    assert!(
        ran.load(Ordering::SeqCst),
        "C2 was cancelled too, though P let it go and ended ({s:?})"
    );
    assert_eq!(s.cancelled, 1, "{s:?}");
}
