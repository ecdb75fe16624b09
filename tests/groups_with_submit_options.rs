//! A task group's `submit_with` and `try_submit_with` (`TaskGroup`, `SmartTaskGroup`): the
//! options work as with the pool's own `submit_with` (a key's `max_per_key` shared with
//! the pool's other tasks, the priority of a waiting submit, the timeout, the weight),
//! and the task is the group's (`join_next` returns it, `abort_all` aborts it,
//! cancel-on-error refuses a waiting submit), on the three pools, with and without a
//! watcher (cancel-on-panic or cancel-on-error: the group's other submit path).
//! Deterministic: paused time, bounded waits ([`within`]).

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use nb_aiopool::{CancelReason, SmartAioPool, SubmitErrorKind, SubmitOptions, TrySubmitErrorKind};
use support::{flow_pools, make, within, FlowLimits, Gate, Gauge, Make, Pool};
use tokio::time::Instant;

/// A job that returns `v` at once.
fn value<T: Clone + Send + Sync + 'static>(v: T) -> Make<T> {
    make(move || std::future::ready(v.clone()))
}

/// A job that never ends.
fn forever<T: Send + 'static>() -> Make<T> {
    make(std::future::pending::<T>)
}

/// A job that sets `started` when it starts, then waits at `gate` and returns `v`.
fn held<T: Clone + Send + Sync + 'static>(started: &Arc<AtomicBool>, gate: &Gate, v: T) -> Make<T> {
    let (started, gate) = (started.clone(), gate.clone());
    make(move || {
        let (started, wait, v) = (started.clone(), gate.wait(), v.clone());
        async move {
            started.store(true, Ordering::SeqCst);
            wait.await;
            v
        }
    })
}

fn key(k: &str) -> SubmitOptions {
    SubmitOptions::new().key(k)
}

/// Polls `fut` once: its output if it is ready at that poll.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

impl Pool {
    /// The pool's own `submit_with` of `job`, panicking on a refusal.
    async fn put_with<T: Send + 'static>(
        &self,
        job: Make<T>,
        opts: SubmitOptions,
    ) -> nb_aiopool::TaskHandle<T> {
        self.submit_with(opts, move || job()).await
    }
}

/// The three pools with `c` slots and `q` places in the queue (NoQueueAioPool: `c`
/// places), each with `limits`.
fn pools(c: usize, q: usize, limits: FlowLimits) -> Vec<Pool> {
    flow_pools(c, q, c, limits)
}

// ----- the key's limit ------------------------------------------------------------------------

/// A crawler's group keys its tasks by host beside tasks the pool's own `submit_with`
/// keyed: with `max_per_key(1)`, no two tasks of host "h" run at once, whichever way they
/// were submitted, while another host runs beside them; the group returns its results.
#[tokio::test(start_paused = true)]
async fn a_keys_limit_holds_across_group_tasks_and_pool_tasks() {
    for watched in [false, true] {
        for pool in pools(4, 8, FlowLimits::keys(1)) {
            let name = format!("{} (watched: {watched})", pool.name());
            let gauge = Gauge::default();
            let t0 = Instant::now();
            // Each "h" task runs 1 s; "other" is noted when it starts.
            let on_h = |v: u32| {
                let gauge = gauge.clone();
                make(move || {
                    let gauge = gauge.clone();
                    async move {
                        let _in = gauge.enter();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        v
                    }
                })
            };
            let first = pool.put_with(on_h(0), key("h")).await;
            let mut group = pool.task_group::<u32>().cancel_on_panic(watched);
            within("a keyed group submit", group.submit_with(on_h(1), key("h")))
                .await
                .unwrap();
            group
                .try_submit_with(on_h(2), key("h"))
                .map_err(|(k, _)| k)
                .unwrap_or_else(|k| panic!("{name}: a keyed try_submit_with refused: {k:?}"));
            let other_at = Arc::new(Mutex::default());
            let at = other_at.clone();
            let other = make(move || {
                *at.lock().unwrap() = Some(t0.elapsed());
                std::future::ready(9)
            });
            within(
                "another key's submit",
                group.submit_with(other, key("other")),
            )
            .await
            .unwrap();
            let last = pool.put_with(on_h(3), key("h")).await;
            let mut got = Vec::new();
            while let Some(r) = within("the group's join_next", group.join_next()).await {
                got.push(r.unwrap());
            }
            got.sort_unstable();
            assert_eq!(got, [1, 2, 9], "{name}: the group's results");
            assert_eq!(within("a pool task", first).await.unwrap(), 0, "{name}");
            assert_eq!(within("a pool task", last).await.unwrap(), 3, "{name}");
            assert_eq!(gauge.started(), 4, "{name}");
            assert_eq!(
                gauge.max(),
                1,
                "{name}: tasks of key \"h\" ran at once (max_per_key 1)"
            );
            assert_eq!(t0.elapsed().as_secs(), 4, "{name}: the four ran one by one");
            assert_eq!(
                *other_at.lock().unwrap(),
                Some(Duration::ZERO),
                "{name}: another key was held up by \"h\""
            );
        }
    }
}

/// `join_next_with_id` gives each keyed task's result with the id `submit_with` returned
/// (and `try_submit_with`'s tasks too), whatever order the keys let them end in.
#[tokio::test(start_paused = true)]
async fn join_next_returns_the_results_of_keyed_tasks_with_their_ids() {
    // Room for the six (NoQueueAioPool's places are its slots).
    for pool in pools(8, 8, FlowLimits::keys(1)) {
        let name = pool.name();
        let mut group = pool.task_group::<(String, u64)>();
        let mut ids = HashMap::new();
        for (i, host) in ["a", "b", "a", "c", "b", "a"].into_iter().enumerate() {
            let i = i as u64;
            // Later tasks end sooner: the results come out of submission order.
            let job = make(move || async move {
                tokio::time::sleep(Duration::from_millis(100 * (6 - i))).await;
                (host.to_string(), i)
            });
            let opts = key(host).priority(i as i32);
            let id = if i % 2 == 0 {
                within("a keyed submit_with", group.submit_with(job, opts))
                    .await
                    .unwrap()
            } else {
                group
                    .try_submit_with(job, opts)
                    .map_err(|(k, _)| k)
                    .unwrap()
            };
            ids.insert(id, (host.to_string(), i));
        }
        assert_eq!(group.len(), 6, "{name}");
        let mut joined = 0;
        while let Some((id, r)) = within("join_next_with_id", group.join_next_with_id()).await {
            assert_eq!(Some(&r.unwrap()), ids.get(&id), "{name}: result {id}");
            joined += 1;
        }
        assert_eq!(joined, 6, "{name}");
        assert!(group.join_next().await.is_none(), "{name}");
    }
}

// ----- waiting for room --------------------------------------------------------------------------

/// Two groups' `submit_with` wait for room in a full pool, the one of priority 1 first,
/// then one of priority 5: the room a finished task frees goes to priority 5 (the later
/// one), and priority 1 waits until there is room again.
#[tokio::test(start_paused = true)]
async fn the_priority_decides_which_waiting_group_submit_gets_room_first() {
    for watched in [false, true] {
        for pool in pools(1, 0, FlowLimits::default()) {
            let name = format!("{} (watched: {watched})", pool.name());
            let (blocker_gate, groups_gate) = (Gate::new(), Gate::new());
            let started = Arc::new(AtomicBool::new(false));
            let blocker = pool
                .put_with(held(&started, &blocker_gate, 0u32), SubmitOptions::new())
                .await;
            let mut low = pool.task_group::<u32>().cancel_on_panic(watched);
            let mut high = pool.task_group::<u32>().cancel_on_panic(watched);
            let (low_started, high_started) = (Arc::default(), Arc::default());
            let mut low_submit = low.submit_with(
                held(&low_started, &groups_gate, 1),
                SubmitOptions::new().priority(1),
            );
            assert!(
                poll_once(&mut low_submit).await.is_pending(),
                "{name}: full"
            );
            let mut high_submit = high.submit_with(
                held(&high_started, &groups_gate, 5),
                SubmitOptions::new().priority(5),
            );
            assert!(
                poll_once(&mut high_submit).await.is_pending(),
                "{name}: full"
            );
            blocker_gate.open();
            within("the blocker", blocker).await.unwrap();
            within(&format!("{name}: priority 5's submit"), &mut high_submit)
                .await
                .unwrap_or_else(|e| panic!("{name}: priority 5 refused: {e:?}"));
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(
                poll_once(&mut low_submit).await.is_pending(),
                "{name}: priority 1 got room while priority 5's task holds the only place"
            );
            assert!(high_started.load(Ordering::SeqCst), "{name}");
            assert!(!low_started.load(Ordering::SeqCst), "{name}");
            groups_gate.open();
            within(&format!("{name}: priority 1's submit"), low_submit)
                .await
                .unwrap_or_else(|e| panic!("{name}: priority 1 refused: {e:?}"));
            drop(high_submit);
            let high = within("priority 5's group", high.join_all()).await;
            let low = within("priority 1's group", low.join_all()).await;
            assert_eq!(
                high.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
                [5]
            );
            assert_eq!(low.into_iter().map(Result::unwrap).collect::<Vec<_>>(), [1]);
        }
    }
}

/// A group's `submit_with` into a full pool gives up when its timeout passes: refused
/// with `TimedOut` at exactly that time, the task handed back unrun (it runs when the
/// user awaits it), and nothing added to the group.
#[tokio::test(start_paused = true)]
async fn the_timeout_refuses_with_the_task_back() {
    for watched in [false, true] {
        for pool in pools(1, 0, FlowLimits::keys(1)) {
            let name = format!("{} (watched: {watched})", pool.name());
            let _busy = pool.put_with(forever::<u32>(), SubmitOptions::new()).await;
            let mut group = pool.task_group::<u32>().cancel_on_panic(watched);
            let runs = Arc::new(AtomicUsize::new(0));
            let r = runs.clone();
            let job = make(move || {
                let r = r.clone();
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    7u32
                }
            });
            let t0 = Instant::now();
            let opts = key("h").priority(3).timeout(Duration::from_millis(50));
            let refused = within("a submit_with with a timeout", group.submit_with(job, opts))
                .await
                .unwrap_err();
            assert_eq!(refused.kind, SubmitErrorKind::TimedOut, "{name}");
            assert_eq!(t0.elapsed(), Duration::from_millis(50), "{name}");
            assert_eq!(group.len(), 0, "{name}: a refused task joined the group");
            assert_eq!(
                runs.load(Ordering::SeqCst),
                0,
                "{name}: the refused task ran"
            );
            assert_eq!(refused.back.await, 7, "{name}: the task handed back");
            assert_eq!(runs.load(Ordering::SeqCst), 1, "{name}");
            assert!(group.join_next().await.is_none(), "{name}");
            assert_eq!(pool.stats().submitted, 1, "{name}");
        }
    }
}

/// A weight beyond the pool's `weight_capacity` is refused with `TooHeavy` at the first
/// poll, even with the pool full (no wait), by `submit_with` and `try_submit_with`; a
/// weight that fits waits for room as usual.
#[tokio::test(start_paused = true)]
async fn too_heavy_is_refused_at_once() {
    let limits = FlowLimits {
        weight_capacity: Some(2),
        ..FlowLimits::default()
    };
    for watched in [false, true] {
        for pool in pools(1, 0, limits) {
            let name = format!("{} (watched: {watched})", pool.name());
            let _busy = pool.put_with(forever::<u32>(), SubmitOptions::new()).await;
            let mut group = pool.task_group::<u32>().cancel_on_panic(watched);
            let heavy = SubmitOptions::new().weight(3).key("h");
            let mut submit = group.submit_with(value(1), heavy.clone());
            match poll_once(&mut submit).await {
                Poll::Ready(Err(refused)) => {
                    assert_eq!(refused.kind, SubmitErrorKind::TooHeavy, "{name}");
                    assert_eq!(refused.back.await, 1, "{name}: the task handed back");
                }
                Poll::Ready(Ok(_)) => panic!("{name}: a task of weight 3 was accepted"),
                Poll::Pending => panic!("{name}: a task of weight 3 waited for room"),
            }
            drop(submit);
            let (kind, back) = group.try_submit_with(value(2), heavy).unwrap_err();
            assert_eq!(kind, TrySubmitErrorKind::TooHeavy, "{name}");
            assert_eq!(back.await, 2, "{name}");
            // Weight 2 fits: it waits, and times out for want of room.
            let fits = SubmitOptions::new()
                .weight(2)
                .timeout(Duration::from_millis(10));
            let refused = within("weight 2", group.submit_with(value(3), fits))
                .await
                .unwrap_err();
            assert_eq!(refused.kind, SubmitErrorKind::TimedOut, "{name}");
            assert_eq!(group.len(), 0, "{name}");
        }
    }
}

/// `try_submit_with` into a full pool: `Full`, the task handed back, nothing added to the
/// group; with room, the task is the group's.
#[tokio::test(start_paused = true)]
async fn try_submit_with_into_a_full_pool_is_full() {
    for watched in [false, true] {
        for pool in pools(1, 0, FlowLimits::keys(1)) {
            let name = format!("{} (watched: {watched})", pool.name());
            let gate = Gate::new();
            let started = Arc::new(AtomicBool::new(false));
            let busy = pool
                .put_with(held(&started, &gate, 0u32), SubmitOptions::new())
                .await;
            let mut group = pool.task_group::<u32>().cancel_on_panic(watched);
            let (kind, back) = group
                .try_submit_with(value(4), key("h").priority(9))
                .unwrap_err();
            assert_eq!(kind, TrySubmitErrorKind::Full, "{name}");
            assert_eq!(back.await, 4, "{name}: the task handed back");
            assert_eq!(group.len(), 0, "{name}");
            gate.open();
            within("the busy task", busy).await.unwrap();
            pool.wait_within().await;
            group
                .try_submit_with(value(5), key("h").priority(9))
                .map_err(|(k, _)| k)
                .unwrap_or_else(|k| panic!("{name}: refused with room: {k:?}"));
            let r = within("the group's task", group.join_next()).await;
            assert_eq!(r.unwrap().unwrap(), 5, "{name}");
        }
    }
}

// ----- the group's own ---------------------------------------------------------------------------

/// `abort_all` aborts a keyed task the key holds in the queue (behind a pool task of its
/// key) and a keyed task running: each resolves to `Aborted`, and the key's count goes
/// back, so later tasks of that key run.
#[tokio::test(start_paused = true)]
async fn abort_all_aborts_keyed_tasks_and_their_key_runs_again() {
    for watched in [false, true] {
        for pool in pools(2, 2, FlowLimits::keys(1)) {
            let name = format!("{} (watched: {watched})", pool.name());
            let gate = Gate::new();
            let pool_started = Arc::new(AtomicBool::new(false));
            let pool_task = pool
                .put_with(held(&pool_started, &gate, 0u32), key("h"))
                .await;
            let mut group = pool.task_group::<u32>().cancel_on_panic(watched);
            let queued_started = Arc::new(AtomicBool::new(false));
            let never = Gate::new();
            within(
                "a keyed group submit",
                group.submit_with(held(&queued_started, &never, 1), key("h")),
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(pool_started.load(Ordering::SeqCst), "{name}");
            assert!(
                !queued_started.load(Ordering::SeqCst),
                "{name}: a second task of key \"h\" started (max_per_key 1)"
            );
            group.abort_all();
            let r = within("the aborted queued task", group.join_next()).await;
            assert_eq!(
                r.unwrap().unwrap_err().cancel_reason(),
                Some(CancelReason::Aborted),
                "{name}"
            );
            assert!(!queued_started.load(Ordering::SeqCst), "{name}");
            gate.open();
            within("the pool's task", pool_task).await.unwrap();
            // The key is free: a keyed task of the group runs, and is aborted running.
            let running = Arc::new(AtomicBool::new(false));
            within(
                "a keyed group submit",
                group.submit_with(held(&running, &never, 2), key("h")),
            )
            .await
            .unwrap();
            within("the keyed task's start", async {
                while !running.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await;
            group.abort_all();
            let r = within("the aborted running task", group.join_next()).await;
            assert_eq!(
                r.unwrap().unwrap_err().cancel_reason(),
                Some(CancelReason::Aborted),
                "{name}"
            );
            // Its key's count went back: the next task of the key runs.
            let after = pool.put_with(value(3u32), key("h")).await;
            assert_eq!(within("a later task of key \"h\"", after).await.unwrap(), 3);
            let id = within(
                "a later group task of key \"h\"",
                group.submit_with(value(4), key("h")),
            )
            .await
            .unwrap();
            let (joined, r) = within("its result", group.join_next_with_id())
                .await
                .unwrap();
            assert_eq!((joined, r.unwrap()), (id, 4), "{name}");
            within("wait()", pool.wait_within()).await;
        }
    }
}

/// In a cancel-on-error group, a `submit_with` waiting for room (with a key, a priority
/// and a long timeout) is refused with `Closed` when a task of the group fails, at that
/// moment, with its task back; a keyed task the group took by `submit_with` is aborted
/// by the failure; `try_submit_with` is refused afterwards.
#[tokio::test(start_paused = true)]
async fn cancel_on_error_refuses_a_waiting_submit_with() {
    for pool in pools(2, 0, FlowLimits::keys(2)) {
        let name = pool.name();
        let mut group = pool.task_group::<Result<u32, u32>>().cancel_on_error();
        within(
            "a keyed task",
            group.submit_with(forever(), key("h").priority(2)),
        )
        .await
        .unwrap();
        group
            .submit(make(|| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Err(9)
            }))
            .await
            .expect("a plain group submit into a pool with room");
        let t0 = Instant::now();
        let opts = key("h").priority(3).timeout(Duration::from_secs(10));
        let refused = within(
            "the waiting submit_with",
            group.submit_with(value(Ok(5)), opts),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.kind, SubmitErrorKind::Closed, "{name}");
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(1),
            "{name}: refused when the task failed"
        );
        assert_eq!(refused.back.await, Ok(5), "{name}: the task handed back");
        let (kind, _) = group.try_submit_with(value(Ok(6)), key("h")).unwrap_err();
        assert_eq!(kind, TrySubmitErrorKind::Closed, "{name}");
        let all = within("the group's join_all", group.join_all()).await;
        assert_eq!(
            all[0].as_ref().unwrap_err().cancel_reason(),
            Some(CancelReason::Aborted),
            "{name}: the keyed task was not aborted by the failure"
        );
        assert_eq!(all[1].as_ref().unwrap(), &Err(9), "{name}");
        assert_eq!(all.len(), 2, "{name}");
    }
}

// ----- SmartTaskGroup's re-runs -----------------------------------------------------------------

/// A SmartTaskGroup's keyed task whose run is cut off by the end of its runtime is run
/// again with its key: with `max_per_key(1)`, its re-run and a pool task of the same key
/// (queued behind the first run) never run at once, though two slots are free.
#[test]
fn a_smart_groups_rerun_keeps_its_key() {
    for watched in [false, true] {
        let pool = SmartAioPool::builder()
            .max_concurrency(2)
            .max_per_key(1)
            .process_wide(false)
            .auto_shutdown(false)
            .build();
        let gauge = Gauge::default();
        let runs = Arc::new(AtomicUsize::new(0));
        // The group's task: its first run never ends; its re-run takes 1 s.
        let recipe = {
            let (gauge, runs) = (gauge.clone(), runs.clone());
            move || {
                let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
                let gauge = gauge.clone();
                async move {
                    let _in = gauge.enter();
                    if first {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    1u32
                }
            }
        };
        let other = {
            let gauge = gauge.clone();
            move || {
                let gauge = gauge.clone();
                async move {
                    let _in = gauge.enter();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    2u32
                }
            }
        };
        let a = support::current_thread();
        let (mut group, handle) = a.block_on(async {
            let mut group = pool.group::<u32>().cancel_on_panic(watched);
            within(
                "the group's submit_with",
                group.submit_with(recipe, key("h")),
            )
            .await
            .unwrap();
            let handle = pool.submit_with(other, key("h")).await.unwrap();
            support::reach(&runs, 1, Duration::from_secs(10)).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            (group, handle)
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the first run started");
        assert_eq!(gauge.started(), 1, "the pool's task of key \"h\" waits");
        drop(a);
        let b = support::paused_runtime();
        let (r, h) = b.block_on(async {
            let r = within("the group's re-run", group.join_next()).await;
            let h = within("the pool's task", handle).await;
            (r, h)
        });
        assert_eq!(r.unwrap().unwrap(), 1, "watched: {watched}");
        assert_eq!(h.unwrap(), 2, "watched: {watched}");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "watched: {watched}");
        assert_eq!(gauge.started(), 3, "watched: {watched}");
        assert_eq!(
            gauge.max(),
            1,
            "watched: {watched}: the re-run and the pool's task of key \"h\" ran at once"
        );
        drop(b);
    }
}
