//! The features used together (a review of 2026-12-05, on c77046b): flow control (rate
//! windows, weights, per-key limits, priorities, deadlines, elastic workers), task groups
//! (cancel-on-error trips), map streams, and the lifecycle (resize, abort, `cancel_all`,
//! runtimes that end, SmartAioPool re-runs, the exit run), each with the others. One
//! fault (RELIABILITY.md, finding 312: a task handed to a runtime that is not being
//! driven had its rate-window start charged at the hand-over, so such tasks started
//! together, past the window) has a test that failed before its fix; the other tests pin
//! behaviour found sound, and two randomized tests (at the end) mix the features.

mod support;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use nb_aiopool::{CancelReason, NoQueueAioPool, SmartAioPool, SubmitOptions};
use support::common_builder;
use tokio::time::Instant;

async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3600), fut)
        .await
        .unwrap_or_else(|_| panic!("hang (an hour of paused time): {what}"))
}

/// Starts recorded as seconds since t0.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<(u32, u64)>>>);
impl Starts {
    fn task(
        &self,
        t0: Instant,
        id: u32,
        hold: Duration,
    ) -> impl std::future::Future<Output = u32> + Send + 'static {
        let s = self.0.clone();
        async move {
            s.lock().unwrap().push((id, t0.elapsed().as_secs()));
            tokio::time::sleep(hold).await;
            id
        }
    }
    fn get(&self) -> Vec<(u32, u64)> {
        self.0.lock().unwrap().clone()
    }
}

/// `set_max_concurrency` growing ("starts queued tasks at once") still keeps the rate
/// window: two starts per 10 s, five tasks queued behind one slot, grown to five.
#[tokio::test(start_paused = true)]
async fn pin_a_grow_does_not_let_queued_tasks_past_the_rate_window() {
    let pool = common_builder(1, 10)
        .rate_limit(2, Duration::from_secs(10))
        .build();
    let t0 = Instant::now();
    let s = Starts::default();
    let mut hs = vec![];
    for i in 0..5 {
        hs.push(
            pool.submit(s.task(t0, i, Duration::from_secs(1000)))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    pool.set_max_concurrency(5);
    tokio::time::sleep(Duration::from_secs(25)).await;
    let st = s.get();
    let secs: Vec<u64> = st.iter().map(|x| x.1).collect();
    assert_eq!(secs, [0, 0, 10, 10, 20]);
    for h in &hs {
        h.abort();
    }
}

/// A cancel-on-error group trips while the rate window holds three of its tasks back: they
/// are aborted at once (the group ends at the failure, not at the window), counted
/// cancelled, and spend no start of the window.
#[tokio::test(start_paused = true)]
async fn pin_a_trip_aborts_tasks_the_rate_window_holds_back_and_they_spend_no_start() {
    // Two starts per 10 s: the failing task and one that runs on start at once; three
    // more are held back by the window when the first fails (1 s in).
    let pool = common_builder(4, 10)
        .rate_limit(2, Duration::from_secs(10))
        .build();
    let t0 = Instant::now();
    let mut g = pool
        .group::<Result<u32, &'static str>>()
        .cancel_on_error(true);
    g.submit(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Err("bad")
    })
    .await
    .unwrap();
    for _ in 0..4 {
        g.submit(async {
            tokio::time::sleep(Duration::from_secs(100)).await;
            Ok(1)
        })
        .await
        .unwrap();
    }
    let rs = within("join_all", g.join_all()).await;
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(1),
        "the trip ends the group at once"
    );
    assert_eq!(rs[0].as_ref().unwrap(), &Err("bad"));
    for r in &rs[1..] {
        assert_eq!(
            r.as_ref().unwrap_err().cancel_reason(),
            Some(CancelReason::Aborted)
        );
    }
    // The running one is dropped at its next poll: a moment later it is counted.
    tokio::task::yield_now().await;
    let st = pool.stats();
    assert_eq!(
        (st.queued, st.running, st.completed, st.cancelled),
        (0, 0, 1, 4),
        "{st:?}"
    );
    // The aborted held-back tasks spent no start: the window reopens 10 s after the two
    // starts, and then two more may start at once.
    let h1 = pool.submit(async { Instant::now() }).await.unwrap();
    let h2 = pool.submit(async { Instant::now() }).await.unwrap();
    let h3 = pool.submit(async { Instant::now() }).await.unwrap();
    let (a, b, c) = (
        within("1", h1).await.unwrap(),
        within("2", h2).await.unwrap(),
        within("3", h3).await.unwrap(),
    );
    assert_eq!(
        (a - t0, b - t0, c - t0),
        (
            Duration::from_secs(10),
            Duration::from_secs(10),
            Duration::from_secs(20)
        )
    );
    within("wait", pool.wait()).await;
}

/// Both map streams through a small rate-limited pool yield every input, and leave nothing
/// queued or running.
#[tokio::test(start_paused = true)]
async fn pin_map_streams_through_a_rate_limited_pool_yield_every_input() {
    for ordered in [false, true] {
        let pool = common_builder(3, 2)
            .rate_limit(2, Duration::from_secs(1))
            .build();
        let inputs = futures_util::stream::iter(0..20u32);
        let out: Vec<u32> = if ordered {
            within(
                "ordered",
                pool.map_ordered(inputs, |i| async move { i })
                    .map(Result::unwrap)
                    .collect(),
            )
            .await
        } else {
            within(
                "unordered",
                pool.map_unordered(inputs, |i| async move { i })
                    .map(Result::unwrap)
                    .collect(),
            )
            .await
        };
        assert_eq!(out.len(), 20);
        let st = pool.stats();
        assert_eq!(
            (st.queued, st.running, st.completed),
            (0, 0, 20),
            "{ordered}"
        );
    }
}

/// An elastic SmartAioPool (`min_workers(0)`, idle workers retire after 1 s) whose tasks the
/// rate window spaces 5 s apart: each starts on time, though every worker retired between.
#[tokio::test(start_paused = true)]
async fn pin_elastic_workers_that_retire_under_a_rate_window_still_start_its_tasks() {
    let pool = SmartAioPool::builder()
        .max_concurrency(4)
        .min_workers(0)
        .idle_timeout(Duration::from_secs(1))
        .rate_limit(1, Duration::from_secs(5))
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let t0 = Instant::now();
    let s = Starts::default();
    let mut hs = vec![];
    for i in 0..3 {
        let s = s.clone();
        hs.push(
            pool.submit(move || s.task(t0, i, Duration::ZERO))
                .await
                .unwrap(),
        );
    }
    for h in hs {
        within("handle", h).await.unwrap();
    }
    let secs: Vec<u64> = s.get().iter().map(|x| x.1).collect();
    assert_eq!(secs, [0, 5, 10]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pool.worker_count(), 0, "idle workers retire");
    let st = pool.stats();
    assert_eq!((st.queued, st.running, st.completed), (0, 0, 3));
}

/// Two tasks `try_submit`ted into free slots of a window of one start: one counted running,
/// one queued; the queued one aborted is counted cancelled at once.
#[tokio::test(start_paused = true)]
async fn pin_a_task_the_rate_window_holds_back_is_counted_queued_and_its_abort_counted() {
    let pool = common_builder(4, 4)
        .rate_limit(1, Duration::from_secs(10))
        .build();
    let a = pool.try_submit(std::future::pending::<()>()).unwrap();
    let b = pool.try_submit(std::future::pending::<()>()).unwrap();
    let st = pool.stats();
    assert_eq!((st.running, st.queued), (1, 1));
    tokio::task::yield_now().await;
    let st = pool.stats();
    assert_eq!((st.running, st.queued), (1, 1));
    b.abort();
    let st = pool.stats();
    assert_eq!((st.running, st.queued, st.cancelled), (1, 0, 1));
    a.abort();
}

/// A NoQueueAioPool task the rate window holds back holds a place; aborting it admits a
/// waiting submit at once, whose task then waits for the window.
#[tokio::test(start_paused = true)]
async fn pin_aborting_a_held_back_task_of_a_no_queue_pool_admits_a_waiting_submit() {
    let pool = NoQueueAioPool::builder()
        .max_concurrency(2)
        .process_wide(false)
        .rate_limit(1, Duration::from_secs(100))
        .build();
    let a = pool.submit(std::future::pending::<()>()).await.unwrap();
    let b = pool.submit(std::future::pending::<()>()).await.unwrap();
    let st = pool.stats();
    assert_eq!(
        (st.running, st.queued),
        (1, 1),
        "the second held back: {st:?}"
    );
    let p2 = pool.clone();
    let c = tokio::spawn(async move { p2.submit(async { 3 }).await.map_err(|e| e.kind()) });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!c.is_finished());
    b.abort();
    let ch = within("c", c).await.unwrap().unwrap();
    let st = pool.stats();
    assert_eq!((st.running, st.queued, st.cancelled), (1, 1, 1), "{st:?}");
    // The window reopens 100 s after the first start.
    let t0 = Instant::now();
    assert_eq!(within("c runs", ch).await.unwrap(), 3);
    assert_eq!(t0.elapsed(), Duration::from_secs(99));
    a.abort();
}

/// Weights never exceed the capacity through a shrink to one slot and a grow to eight.
#[tokio::test(start_paused = true)]
async fn pin_weights_hold_through_a_shrink_and_a_grow() {
    let pool = common_builder(4, 10).weight_capacity(4).build();
    let gauge = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let mut hs = vec![];
    for _ in 0..8 {
        let (g, m) = (gauge.clone(), max.clone());
        hs.push(
            pool.submit_with(
                async move {
                    let n = g.fetch_add(2, Ordering::SeqCst) + 2;
                    m.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    g.fetch_sub(2, Ordering::SeqCst);
                },
                SubmitOptions::new().weight(2),
            )
            .await
            .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    pool.set_max_concurrency(1);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    pool.set_max_concurrency(8);
    for h in hs {
        within("h", h).await.unwrap();
    }
    assert!(max.load(Ordering::SeqCst) <= 4);
    let st = pool.stats();
    assert_eq!((st.queued, st.running, st.completed), (0, 0, 8));
}

/// A group submit waits for room held by a running task and one the window holds back; a
/// grow admits it.
#[tokio::test(start_paused = true)]
async fn pin_a_group_submit_waiting_for_room_held_by_held_back_tasks_is_admitted_by_a_grow() {
    let pool = common_builder(1, 1)
        .rate_limit(1, Duration::from_secs(100))
        .build();
    let mut g = pool.group::<u32>();
    g.submit(async {
        tokio::time::sleep(Duration::from_secs(1000)).await;
        1
    })
    .await
    .unwrap();
    g.submit(async { 2 }).await.unwrap(); // held back (queue)
    let p = pool.clone();
    let t0 = Instant::now();
    // grows after 1 s
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        p.set_max_concurrency(2);
    });
    within("group submit after grow", g.submit(async { 3 }))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(1), "admitted by the grow");
    g.abort_all();
}

/// `cancel_all` with a running task, tasks the window holds back and a waiting submit: the
/// three are cancelled; the waiting submit is admitted by the room they free (it came
/// after the call) and its task runs when the window reopens.
#[tokio::test(start_paused = true)]
async fn pin_cancel_all_with_held_back_tasks_and_a_waiting_submit() {
    let pool = common_builder(2, 1)
        .rate_limit(1, Duration::from_secs(100))
        .build();
    let a = pool.submit(std::future::pending::<u32>()).await.unwrap();
    let b = pool.submit(async { 2u32 }).await.unwrap();
    let c = pool.submit(async { 3u32 }).await.unwrap();
    let st = pool.stats();
    assert_eq!((st.running, st.queued), (1, 2), "{st:?}");
    let p = pool.clone();
    let d = tokio::spawn(async move { p.submit(async { 4u32 }).await.map_err(|e| e.kind()) });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!d.is_finished());
    within("cancel_all", pool.cancel_all()).await;
    for h in [a, b, c] {
        assert_eq!(
            within("h", h).await.unwrap_err().cancel_reason(),
            Some(CancelReason::CancelAll)
        );
    }
    let dh = within("d", d).await.unwrap().expect("admitted");
    let t0 = Instant::now();
    assert_eq!(within("d runs", dh).await.unwrap(), 4);
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(99),
        "when the window reopens"
    );
    let st = pool.stats();
    assert_eq!(
        (st.queued, st.running, st.completed, st.cancelled),
        (0, 0, 1, 3)
    );
}

// ----- child processes -----------------------------------------------------------------

#[test]
#[ignore]
fn child() {
    let (scenario, dir) = support::child_scenario();
    match scenario.as_str() {
        "never-window-fills-at-exit" => {
            let pool = SmartAioPool::builder()
                .name("never")
                .max_concurrency(2)
                .rate_limit(1, Duration::MAX)
                .build();
            let rt = support::current_thread();
            rt.block_on(async {
                for i in 0..2u32 {
                    let d = dir.clone();
                    pool.submit(move || {
                        let d = d.clone();
                        async move {
                            support::append(&d.join("log"), &format!("ran {i}"));
                        }
                    })
                    .await
                    .unwrap()
                    .detach();
                }
            });
            drop(rt);
        }
        "never-window-rerun-fills-at-exit" => {
            // One task interrupted by its runtime's end (its start given back), one behind it.
            let pool = SmartAioPool::builder()
                .name("never2")
                .max_concurrency(2)
                .rate_limit(1, Duration::MAX)
                .build();
            let rt = support::multi_thread_of(1);
            rt.block_on(async {
                for i in 0..2u32 {
                    let d = dir.clone();
                    pool.submit(move || {
                        let d = d.clone();
                        async move {
                            support::append(&d.join("log"), &format!("ran {i}"));
                            if support::lines(&d.join("log")).len() == 1 {
                                std::future::pending::<()>().await;
                            }
                        }
                    })
                    .await
                    .unwrap()
                    .detach();
                }
                while support::lines(&dir.join("log")).is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            drop(rt);
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// A `rate_limit(1, Duration::MAX)` SmartAioPool whose window is first filled during the
/// exit run (its two tasks were queued, unstarted or cut off, when `main` returned): the
/// exit runs one, cancels the other with its warning, and the process ends.
#[test]
fn pin_a_never_ending_window_filled_during_the_exit_run_cancels_the_rest() {
    for s in [
        "never-window-fills-at-exit",
        "never-window-rerun-fills-at-exit",
    ] {
        let c = support::run_child(s, 20);
        let log = support::lines(&c.dir.join("log"));
        let _ = std::fs::remove_dir_all(&c.dir);
        assert_eq!(
            c.code,
            Some(0),
            "{s}: the exit hung or failed; stderr: {}",
            c.stderr
        );
        // The first task runs (again, if it was cut off), the second never does.
        assert!(log.iter().all(|l| l == "ran 0"), "{s}: log {log:?}");
        assert!(
            c.stderr.contains("1 task(s)") && c.stderr.contains("were never started"),
            "{s}: stderr: {}",
            c.stderr
        );
    }
}

/// Waiting submitters of a full pool (priorities, a deadline that passes, a group's and a
/// stream's waits at priority 0) under a rate window: the tasks start by priority, then
/// in the order their submitters came.
/// Waiting submits of a full pool (priorities, one whose deadline passes) under a rate
/// window: their tasks start by priority, then in the order they came (CommonAioPool with
/// no queue, and NoQueueAioPool).
#[tokio::test(start_paused = true)]
async fn pin_waiting_submits_start_by_priority_then_in_order_under_a_rate_window() {
    for noq in [false, true] {
        let order = Arc::new(Mutex::new(Vec::new()));
        let rec = |tag: &'static str| {
            let o = order.clone();
            async move {
                o.lock().unwrap().push(tag);
            }
        };
        let c = if noq {
            None
        } else {
            Some(
                common_builder(1, 0)
                    .rate_limit(1, Duration::from_secs(10))
                    .build(),
            )
        };
        let n = if noq {
            Some(
                NoQueueAioPool::builder()
                    .max_concurrency(1)
                    .process_wide(false)
                    .rate_limit(1, Duration::from_secs(10))
                    .build(),
            )
        } else {
            None
        };
        macro_rules! with {
            ($p:ident => $e:expr) => {
                if let Some($p) = &c {
                    $e
                } else {
                    let $p = n.as_ref().unwrap();
                    $e
                }
            };
        }
        let first = with!(p => p.submit(async { tokio::time::sleep(Duration::from_secs(1)).await; }).await.unwrap());
        let mut waits = Vec::new();
        let specs: [(&'static str, i32, Option<u64>); 5] = [
            ("low", -1, None),
            ("zero", 0, None),
            ("high-timed-out", 9, Some(500)),
            ("high", 5, None),
            ("zero2", 0, None),
        ];
        for (tag, prio, to) in specs {
            let mut o = SubmitOptions::new().priority(prio);
            if let Some(ms) = to {
                o = o.timeout(Duration::from_millis(ms));
            }
            let f = rec(tag);
            let c2 = c.clone();
            let n2 = n.clone();
            waits.push(tokio::spawn(async move {
                let r = if let Some(p) = c2 {
                    p.submit_with(f, o)
                        .await
                        .map(|h| h.detach())
                        .map_err(|e| e.kind())
                } else {
                    n2.unwrap()
                        .submit_with(f, o)
                        .await
                        .map(|h| h.detach())
                        .map_err(|e| e.kind())
                };
                (tag, r)
            }));
            tokio::task::yield_now().await;
        }
        let mut results = Vec::new();
        for w in waits {
            results.push(within("waiter", w).await.unwrap());
        }
        within("first", first).await.unwrap();
        with!(p => within("wait", p.wait()).await);
        let order = order.lock().unwrap().clone();
        assert!(
            results
                .iter()
                .all(|(tag, r)| r.is_ok() == (*tag != "high-timed-out")),
            "{results:?}"
        );
        assert_eq!(order, ["high", "zero", "zero2", "low"]);
    }
}

/// Fault 1. A task submitted from a runtime that is alive but not being driven (a
/// current-thread runtime outside `block_on`) is taken from the queue by a slot of another
/// runtime, which charges its rate-window start and hands it to a new slot task on the
/// task's own runtime. The task starts only when that runtime is next driven, which may be
/// long after: meanwhile the window moved on and let further starts in, so the tasks
/// handed over start all at once. Here: `rate_limit(1, 100 ms)`, four tasks of such a
/// runtime; the other runtime runs for 450 ms, then the first is driven again: the four
/// start within a millisecond of each other (the pool charged them 100 ms apart).
#[test]
fn tasks_handed_to_a_runtime_not_driven_do_not_start_together_past_the_rate_window() {
    let per = Duration::from_millis(100);
    let pool = common_builder(8, 10).rate_limit(1, per).build();
    let starts: Arc<Mutex<Vec<(u32, std::time::Instant)>>> = Default::default();
    let rec = |tag: u32| {
        let s = starts.clone();
        async move { s.lock().unwrap().push((tag, std::time::Instant::now())) }
    };
    // Four tasks submitted from `v`, which is then left undriven.
    let v = support::current_thread();
    let xs: Vec<_> = v.block_on(async {
        let mut hs = Vec::new();
        for i in 0..4 {
            hs.push(pool.submit(rec(i)).await.unwrap());
        }
        hs
    });
    // Another runtime submits one task of its own (the pool now knows two runtimes, and
    // this one's slots take the queued tasks), and runs on for 450 ms.
    let main = support::multi_thread_of(2);
    main.block_on(async {
        pool.submit(rec(99)).await.unwrap().detach();
        tokio::time::sleep(Duration::from_millis(450)).await;
    });
    // `v` is driven again until its tasks are done.
    v.block_on(async {
        for x in xs {
            tokio::time::timeout(Duration::from_secs(10), x)
                .await
                .expect("a task of v did not end within 10 s")
                .unwrap();
        }
    });
    let mut s = starts.lock().unwrap().clone();
    s.sort_by_key(|x| x.1);
    let t0 = s[0].1;
    let seen: Vec<(u32, Duration)> = s.iter().map(|(t, at)| (*t, *at - t0)).collect();
    for w in s.windows(2) {
        // 5 ms of slack for the timer's and the threads' latency.
        assert!(
            w[1].1 - w[0].1 >= per - Duration::from_millis(5),
            "two starts {:?} apart under rate_limit(1, {per:?}): starts (task, since the first) {seen:?}",
            w[1].1 - w[0].1
        );
    }
}

/// Runs the randomized cases `FEATURE_MIXES_START` (1) to `+ FEATURE_MIXES_CASES`
/// (`default_cases`) with `run_seed`, and fails naming every seed that failed or panicked.
fn run_cases(default_cases: u64, run_seed: impl Fn(u64) -> Result<(), String>) {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let n = var("FEATURE_MIXES_CASES", default_cases);
    let start = var("FEATURE_MIXES_START", 1);
    let mut failed = Vec::new();
    for seed in start..start + n {
        match std::panic::catch_unwind(AssertUnwindSafe(|| run_seed(seed))) {
            Ok(Ok(())) => {}
            Ok(Err(m)) => {
                eprintln!("FAIL {m}");
                failed.push(seed);
            }
            Err(p) => {
                eprintln!("PANIC seed {seed}: {}", support::panic_message(&*p));
                failed.push(seed);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "seeds that failed: {failed:?} (messages above)"
    );
}

// ----- randomized: the features mixed on one runtime, paused time -----------------------
//
// Each case builds one pool (any of the three; flow control drawn at random: per-key
// limits, weights, a rate window) on a paused current-thread runtime and plays 10-50 ops
// on it: submits that wait for room (priorities, keys, weights, deadlines), groups with
// and without cancel-on-error (one task of some failing), groups joined under a short
// timeout (dropped), map streams run out or dropped after their first result, ends of
// running tasks, aborts, resizes, `cancel_all` and time passing. Checked after every op:
// the stats add up (submitted = ended + queued + running) and agree with the `metrics`
// counters and gauges; in every task: its key's and the weights' limits; at the end,
// with every task let go: nothing left, no start past the rate window, every handle
// resolved with its own value or `Aborted`/`CancelAll`, every group's `join_all` in
// order (the failing task keeps its error, the others end `Ok` or aborted), every
// ordered stream in order, and no hang (an hour of paused time). 20,000 cases passed
// in the review's runs (`FEATURE_MIXES_CASES=20000`); 300 here. `FEATURE_MIXES_START` sets
// the first seed; `FEATURE_MIXES_MULTI_THREAD=1` plays the cases on a 2-worker runtime in
// real time (durations scaled down, the rate check then reads starts in the tasks' own
// code: run it on a quiet machine); `FEATURE_MIXES_VERBOSE=1` prints each case's stats.
// It reads the `metrics` counters, so it is built with that feature only (`.ci/run` runs
// this file again with `--all-features`).

#[cfg(feature = "metrics")]
mod metric_figures;

#[cfg(feature = "metrics")]
mod mixed {

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures_util::StreamExt;
    use metrics_util::debugging::{DebuggingRecorder, Snapshotter};

    use super::metric_figures::Figures;
    use super::support::Rng;

    use nb_aiopool::{
        CommonAioPool, NoQueueAioPool, PoolStats, SmartAioPool, SubmitOptions, TaskHandle,
    };

    #[derive(Default)]
    struct Model {
        gates: Vec<Arc<tokio::sync::Semaphore>>,
        keys: Vec<Option<u8>>,
        weights: Vec<u32>,
        running: Vec<usize>,
        started: Vec<bool>,
        starts: Vec<tokio::time::Instant>,
        violations: Vec<String>,
    }

    #[derive(Clone)]
    enum P {
        C(CommonAioPool),
        N(NoQueueAioPool),
        S(SmartAioPool),
    }

    impl P {
        fn stats(&self) -> PoolStats {
            match self {
                P::C(p) => p.stats(),
                P::N(p) => p.stats(),
                P::S(p) => p.stats(),
            }
        }
        fn resize(&self, n: usize) {
            match self {
                P::C(p) => p.set_max_concurrency(n),
                P::N(p) => p.set_max_concurrency(n),
                P::S(p) => p.set_max_concurrency(n),
            }
        }
    }

    // Not an `async fn`: the future is built (and its `Send` checked) where it is called.
    #[allow(clippy::manual_async_fn)]
    fn job(
        model: Arc<Mutex<Model>>,
        i: usize,
        cfg: (Option<usize>, Option<u64>),
        fail: bool,
    ) -> impl std::future::Future<Output = Result<usize, usize>> + Send + 'static {
        async move {
            let gate = {
                let mut m = model.lock().unwrap();
                if m.started[i] {
                    m.violations.push(format!("{i} started twice"));
                }
                m.started[i] = true;
                m.starts.push(tokio::time::Instant::now());
                m.running.push(i);
                let (key, w) = (m.keys[i], m.weights[i]);
                if let (Some(k), Some(max)) = (key, cfg.0) {
                    let n = m.running.iter().filter(|&&j| m.keys[j] == Some(k)).count();
                    if n > max {
                        m.violations.push(format!("{i}: key {k} has {n}"));
                    }
                }
                if let Some(cap) = cfg.1 {
                    let s: u64 = m.running.iter().map(|&j| u64::from(m.weights[j])).sum();
                    if s > cap {
                        m.violations.push(format!("{i}: weight {s} > {cap}"));
                    }
                }
                let _ = w;
                m.gates[i].clone()
            };
            struct Out(Arc<Mutex<Model>>, usize);
            impl Drop for Out {
                fn drop(&mut self) {
                    let mut m = self.0.lock().unwrap();
                    m.running.retain(|&j| j != self.1);
                }
            }
            let _out = Out(model, i);
            let _ = gate.acquire().await;
            if fail {
                Err(i)
            } else {
                Ok(i)
            }
        }
    }

    fn run_seed(seed: u64) -> Result<(), String> {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || run_seed_in(seed, &snapshotter))
    }

    fn run_seed_in(seed: u64, snapshotter: &Snapshotter) -> Result<(), String> {
        let pname = format!("fuzz{seed}");
        let mut figs = Figures::default();
        let mt = std::env::var("FEATURE_MIXES_MULTI_THREAD").is_ok();
        let rt = if mt {
            super::support::multi_thread_of(2)
        } else {
            super::support::paused_runtime()
        };
        let ms = |x: u64| {
            if mt {
                Duration::from_micros(x * 50)
            } else {
                Duration::from_millis(x)
            }
        };
        rt.block_on(async move {
        let mut r = Rng::new(seed);
        for _ in 0..4 { r.draw(); }
        let kind = r.below(3);
        let conc = 1 + r.below(4) as usize;
        let queue = r.below(4) as usize;
        let per_key = r.chance(40).then(|| 1 + r.below(2) as usize);
        let cap = r.chance(40).then(|| 3 + r.below(4));
        let rate = r.chance(40).then(|| (1 + r.below(3) as u32, 100 + r.below(900)));
        let cfg = (per_key, cap);
        macro_rules! lim { ($b:expr) => {{
            let mut b = $b;
            if let Some(n) = per_key { b = b.max_per_key(n); }
            if let Some(c) = cap { b = b.weight_capacity(c); }
            if let Some((n, per)) = rate { b = b.rate_limit(n, ms(per)); }
            b.build()
        }}}
        let pool = match kind {
            0 => P::C(lim!(CommonAioPool::builder().name(pname.clone()).max_concurrency(conc).max_queue_size(queue).process_wide(false))),
            1 => P::N(lim!(NoQueueAioPool::builder().name(pname.clone()).max_concurrency(conc).process_wide(false))),
            _ => P::S(lim!(SmartAioPool::builder().name(pname.clone()).max_concurrency(conc).max_queue_size(queue).min_workers(r.below(2) as usize).idle_timeout(ms(300)).process_wide(false).auto_shutdown(false))),
        };
        let desc = format!("seed {seed}: kind {kind} conc {conc} queue {queue} per_key {per_key:?} cap {cap:?} rate {rate:?}");
        let model = Arc::new(Mutex::new(Model::default()));
        let new_job = |key: Option<u8>, w: u32| {
            let mut m = model.lock().unwrap();
            m.gates.push(Arc::new(tokio::sync::Semaphore::new(0)));
            m.keys.push(key);
            m.weights.push(w);
            m.started.push(false);
            m.gates.len() - 1
        };
        type Handles = Vec<(usize, TaskHandle<Result<usize, usize>>)>;
        let handles: Arc<Mutex<Handles>> = Default::default();
        let mut spawned = Vec::new();
        let log: Arc<Mutex<Vec<String>>> = Default::default();
        let nops = 10 + r.below(40);
        let mut ops = Vec::new();
        for _ in 0..nops {
            let op = r.below(100);
            ops.push(op);
            if op < 35 {
                // a submit, maybe waiting, with options
                let key = (per_key.is_some() && r.chance(60)).then(|| r.below(3) as u8);
                let w = if cap.is_some() { 1 + r.below(3) as u32 } else { 1 };
                let prio = if r.chance(30) { r.below(5) as i32 - 2 } else { 0 };
                let timeout = r.chance(25).then(|| ms(50 + r.below(500)));
                let i = new_job(key, w);
                let mut o = SubmitOptions::new().priority(prio).weight(w);
                if let Some(k) = key { o = o.key(format!("k{k}")); }
                if let Some(t) = timeout { o = o.timeout(t); }
                let fut = job(model.clone(), i, cfg, false);
                let (p, hs, log) = (pool.clone(), handles.clone(), log.clone());
                spawned.push(tokio::spawn(async move {
                    let res = match &p {
                        P::C(p) => p.submit_with(fut, o).await.map_err(|e| e.kind()),
                        P::N(p) => p.submit_with(fut, o).await.map_err(|e| e.kind()),
                        P::S(p) => { let f = Mutex::new(Some(fut)); let f = Arc::new(f);
                            // a recipe that runs the future once (re-runs are not expected here)
                            p.submit_with(move || { let f = f.clone(); async move { let x = f.lock().unwrap().take(); match x { Some(x) => x.await, None => Err(usize::MAX) } } }, o).await.map_err(|e| e.kind()) }
                    };
                    match res {
                        Ok(h) => hs.lock().unwrap().push((i, h)),
                        Err(k) => log.lock().unwrap().push(format!("submit {i} refused {k:?}")),
                    }
                }));
            } else if op < 45 {
                // a group of 1..4 tasks, maybe cancel-on-error with one failing
                let n = 1 + r.below(4) as usize;
                let coe = r.chance(60);
                let fail_at = (coe && r.chance(60)).then(|| r.below(n as u64) as usize);
                let ids: Vec<usize> = (0..n).map(|_| new_job(None, 1)).collect();
                let (p, m, log) = (pool.clone(), model.clone(), log.clone());
                spawned.push(tokio::spawn(async move {
                    let results = match &p {
                        P::C(p) => { let mut g = p.group().cancel_on_error(coe);
                            for (k, &i) in ids.iter().enumerate() { if let Err(e) = g.submit(job(m.clone(), i, cfg, fail_at == Some(k))).await { log.lock().unwrap().push(format!("group submit {i}: {:?}", e.kind())); } }
                            g.join_all().await }
                        P::N(p) => { let mut g = p.group().cancel_on_error(coe);
                            for (k, &i) in ids.iter().enumerate() { if let Err(e) = g.submit(job(m.clone(), i, cfg, fail_at == Some(k))).await { log.lock().unwrap().push(format!("group submit {i}: {:?}", e.kind())); } }
                            g.join_all().await }
                        P::S(p) => { let mut g = p.group().cancel_on_error(coe);
                            for (k, &i) in ids.iter().enumerate() { let f = Arc::new(Mutex::new(Some(job(m.clone(), i, cfg, fail_at == Some(k)))));
                                if let Err(e) = g.submit(move || { let f = f.clone(); async move { let x = f.lock().unwrap().take(); match x { Some(x) => x.await, None => Err(usize::MAX) } } }).await { log.lock().unwrap().push(format!("group submit {i}: {:?}", e.kind())); } }
                            g.join_all().await }
                    };
                    // join_all: in submission order; the failing task keeps its error; the
                    // others end Ok or Aborted (or CancelAll, from a cancel_all).
                    let submitted: Vec<usize> = ids.iter().copied().filter(|i| !log.lock().unwrap().iter().any(|l| l.starts_with(&format!("group submit {i}:")))).collect();
                    if results.len() != submitted.len() { log.lock().unwrap().push(format!("VIOLATION group {ids:?}: {} results for {} submitted", results.len(), submitted.len())); }
                    for (r, &i) in results.iter().zip(&submitted) {
                        let failing = fail_at.map(|k| ids[k]) == Some(i);
                        let ok = match r {
                            Ok(Ok(v)) => *v == i && !failing,
                            Ok(Err(v)) => *v == i && failing,
                            Err(e) => matches!(e.cancel_reason(), Some(nb_aiopool::CancelReason::Aborted | nb_aiopool::CancelReason::CancelAll)),
                        };
                        if !ok { log.lock().unwrap().push(format!("VIOLATION group {ids:?} task {i} (failing {failing}): {r:?}")); }
                    }
                    log.lock().unwrap().push(format!("group {ids:?} {results:?}"));
                }));
            } else if op < 48 {
                // a group joined under a short timeout (dropped mid-way)
                let n = 1 + r.below(4) as usize;
                let ids: Vec<usize> = (0..n).map(|_| new_job(None, 1)).collect();
                let (p, m) = (pool.clone(), model.clone());
                let d = ms(r.below(300));
                spawned.push(tokio::spawn(async move {
                    match &p {
                        P::C(p) => { let mut g = p.group().cancel_on_error(true);
                            let _ = tokio::time::timeout(d, async { for &i in &ids { let _ = g.submit(job(m.clone(), i, cfg, false)).await; } g.join_all().await }).await; }
                        P::N(p) => { let mut g = p.group();
                            let _ = tokio::time::timeout(d, async { for &i in &ids { let _ = g.submit(job(m.clone(), i, cfg, false)).await; } g.join_all().await }).await; }
                        P::S(p) => { let mut g = p.group();
                            let _ = tokio::time::timeout(d, async { for &i in &ids { let f = Arc::new(Mutex::new(Some(job(m.clone(), i, cfg, false)))); let _ = g.submit(move || { let f = f.clone(); async move { let x = f.lock().unwrap().take(); match x { Some(x) => x.await, None => Err(usize::MAX) } } }).await; } g.join_all().await }).await; }
                    }
                }));
            } else if op < 50 {
                // a stream dropped after its first result (or a short while)
                let n = 2 + r.below(5) as usize;
                let ids: Vec<usize> = (0..n).map(|_| new_job(None, 1)).collect();
                let (p, m) = (pool.clone(), model.clone());
                let d = ms(r.below(300));
                spawned.push(tokio::spawn(async move {
                    let inputs = futures_util::stream::iter(ids.clone());
                    match &p {
                        P::C(p) => { let mut st = p.map_unordered(inputs, move |i| job(m.clone(), i, cfg, false)); let _ = tokio::time::timeout(d, st.next()).await; }
                        P::N(p) => { let mut st = p.map_ordered(inputs, move |i| job(m.clone(), i, cfg, false)); let _ = tokio::time::timeout(d, st.next()).await; }
                        P::S(p) => { let mk = move |i: usize| { let f = Arc::new(Mutex::new(Some(job(m.clone(), i, cfg, false)))); move || { let f = f.clone(); async move { let x = f.lock().unwrap().take(); match x { Some(x) => x.await, None => Err(usize::MAX) } } } };
                            let mut st = p.map_unordered(inputs, mk); let _ = tokio::time::timeout(d, st.next()).await; }
                    }
                }));
            } else if op < 52 {
                let n = 1 + r.below(5) as usize;
                let ids: Vec<usize> = (0..n).map(|_| new_job(None, 1)).collect();
                let (p, m, log) = (pool.clone(), model.clone(), log.clone());
                let ordered = r.chance(50);
                spawned.push(tokio::spawn(async move {
                    let inputs = futures_util::stream::iter(ids.clone());
                    let out: Vec<_> = match &p {
                        P::C(p) => if ordered { p.map_ordered(inputs, move |i| job(m.clone(), i, cfg, false)).collect().await } else { p.map_unordered(inputs, move |i| job(m.clone(), i, cfg, false)).collect().await },
                        P::N(p) => if ordered { p.map_ordered(inputs, move |i| job(m.clone(), i, cfg, false)).collect().await } else { p.map_unordered(inputs, move |i| job(m.clone(), i, cfg, false)).collect().await },
                        P::S(p) => { let mk = move |i: usize| { let f = Arc::new(Mutex::new(Some(job(m.clone(), i, cfg, false)))); move || { let f = f.clone(); async move { let x = f.lock().unwrap().take(); match x { Some(x) => x.await, None => Err(usize::MAX) } } } };
                            if ordered { p.map_ordered(inputs, mk).collect().await } else { p.map_unordered(inputs, mk).collect().await } }
                    };
                    let oks: Vec<_> = out.iter().filter_map(|x| x.as_ref().ok().cloned()).collect();
                    if ordered { let mut s = oks.clone(); s.sort(); if s != oks { log.lock().unwrap().push(format!("VIOLATION ordered stream out of order {oks:?}")); } }
                    log.lock().unwrap().push(format!("stream {ids:?} {out:?}"));
                }));
            } else if op < 75 {
                // finish some started job
                let m = model.lock().unwrap();
                if !m.running.is_empty() {
                    let j = m.running[r.below(m.running.len() as u64) as usize];
                    m.gates[j].add_permits(1);
                }
            } else if op < 80 {
                let hs = handles.lock().unwrap();
                if !hs.is_empty() { hs[r.below(hs.len() as u64) as usize].1.abort(); }
            } else if op < 86 {
                pool.resize(1 + r.below(4) as usize);
            } else if op < 88 {
                let p = pool.clone();
                spawned.push(tokio::spawn(async move { match &p { P::C(p) => p.cancel_all().await, P::N(p) => p.cancel_all().await, P::S(p) => p.cancel_all().await } }));
            } else {
                tokio::time::sleep(ms(r.below(400))).await;
            }
            for _ in 0..r.below(6) { tokio::task::yield_now().await; }
            let st = pool.stats();
            if st.submitted != st.completed + st.cancelled + st.panicked + st.queued as u64 + st.running as u64 {
                model.lock().unwrap().violations.push(format!("stats do not add up: {st:?}"));
            }
            if !mt {
                figs.take(snapshotter, &pname);
                if let Some(e) = figs.against(&st) { model.lock().unwrap().violations.push(format!("after op {op}: {e}")); }
            }
        }
        // Drain: open every gate, let time pass.
        let end = async {
            loop {
                {
                    let m = model.lock().unwrap();
                    for g in &m.gates { if g.available_permits() == 0 { g.add_permits(1); } }
                }
                tokio::time::sleep(ms(100)).await;
                if spawned.iter().all(|s| s.is_finished()) { break; }
            }
            for s in spawned.drain(..) { s.await.unwrap(); }
            {
                let m = model.lock().unwrap();
                for g in &m.gates { if g.available_permits() == 0 { g.add_permits(1); } }
            }
            let hs: Vec<_> = std::mem::take(&mut *handles.lock().unwrap());
            for (i, h) in hs {
                match h.await {
                    Ok(Ok(v)) if v == i => {}
                    Err(e) if matches!(e.cancel_reason(), Some(nb_aiopool::CancelReason::Aborted | nb_aiopool::CancelReason::CancelAll)) => {}
                    other => log.lock().unwrap().push(format!("VIOLATION handle {i}: {other:?}")),
                }
            }
            match &pool { P::C(p) => p.wait().await, P::N(p) => p.wait().await, P::S(p) => p.wait().await }
        };
        if tokio::time::timeout(if mt { Duration::from_secs(20) } else { Duration::from_secs(3600) }, end).await.is_err() {
            return Err(format!("{desc}: HANG; stats {:?}; ops {ops:?}; log {:?}", pool.stats(), log.lock().unwrap()));
        }
        let s = pool.stats();
        if !mt {
            figs.take(snapshotter, &pname);
            if let Some(e) = figs.against(&s) { model.lock().unwrap().violations.push(format!("at the end: {e}")); }
        }
        if let Some((n, per)) = rate {
            let mut m = model.lock().unwrap();
            let mut st = m.starts.clone();
            st.sort();
            for w in st.windows(n as usize + 1) {
                if w[n as usize] - w[0] < ms(per) {
                    m.violations.push(format!("rate: {} starts within {:?}", n + 1, w[n as usize] - w[0]));
                    break;
                }
            }
        }
        let v = model.lock().unwrap().violations.clone();
        let logv: Vec<String> = log.lock().unwrap().iter().filter(|l| l.contains("VIOLATION")).cloned().collect();
        if s.queued != 0 || s.running != 0 || s.submitted != s.completed + s.cancelled + s.panicked || !v.is_empty() || !logv.is_empty() {
            return Err(format!("{desc}: stats {s:?} violations {v:?} {logv:?}; ops {ops:?}"));
        }
        if std::env::var("FEATURE_MIXES_VERBOSE").is_ok() { eprintln!("{desc}: {s:?} log {}", log.lock().unwrap().len()); }
        Ok(())
    })
    }

    #[test]
    fn fuzz_cross() {
        super::run_cases(300, run_seed);
    }
}

// ----- randomized: a flow-controlled pool driven from two runtimes, one of which ends ----
//
// A CommonAioPool or SmartAioPool (keys, weights, a rate window, priorities at random),
// its tasks submitted from a two-worker runtime and from a "victim" runtime (current-thread
// or one worker) that ends a moment later, cutting off its running tasks (SmartAioPool:
// run again on the other runtime; CommonAioPool: cancelled, `RuntimeShutdown`). Checked:
// no two runs of a task at once, the key and weight limits in every run (re-runs
// included), every handle resolves (a SmartAioPool's with its value, a CommonAioPool's
// with its value or, for the victim's tasks only, `RuntimeShutdown`), the stats agree,
// and no more starts than the window allows (5 ms of slack for the threads' latency).
// Before finding 312's fix this check failed for a few seeds in a thousand: tasks handed to
// the victim started late, together.

mod two_runtimes {

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use nb_aiopool::{CommonAioPool, SmartAioPool, SubmitOptions, TaskHandle};

    use super::support::Rng;

    #[derive(Default)]
    struct Model {
        running: Vec<(usize, Option<u8>, u32)>,
        violations: Vec<String>,
        starts: Vec<std::time::Instant>,
        log: Vec<(std::time::Instant, usize, String)>,
        runs: Vec<usize>,
    }

    fn recipe(
        m: Arc<Mutex<Model>>,
        i: usize,
        key: Option<u8>,
        w: u32,
        per_key: Option<usize>,
        cap: Option<u64>,
        sleep_us: u64,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = usize> + Send>>
           + Send
           + Sync
           + 'static {
        move || {
            let m = m.clone();
            Box::pin(async move {
                {
                    let mut g = m.lock().unwrap();
                    if g.running.iter().any(|r| r.0 == i) {
                        g.violations.push(format!("{i}: two runs at once"));
                    }
                    g.running.push((i, key, w));
                    g.starts.push(std::time::Instant::now());
                    let th = format!("{:?}", std::thread::current().name());
                    g.log.push((std::time::Instant::now(), i, th));
                    g.runs[i] += 1;
                    if let (Some(k), Some(max)) = (key, per_key) {
                        let n = g.running.iter().filter(|r| r.1 == Some(k)).count();
                        if n > max {
                            g.violations.push(format!("{i}: key {k} has {n} running"));
                        }
                    }
                    if let Some(c) = cap {
                        let s: u64 = g.running.iter().map(|r| u64::from(r.2)).sum();
                        if s > c {
                            g.violations.push(format!("{i}: weight {s} > {c}"));
                        }
                    }
                }
                struct Out(Arc<Mutex<Model>>, usize);
                impl Drop for Out {
                    fn drop(&mut self) {
                        self.0.lock().unwrap().running.retain(|r| r.0 != self.1);
                    }
                }
                let _o = Out(m.clone(), i);
                tokio::time::sleep(Duration::from_micros(sleep_us)).await;
                i
            })
        }
    }

    /// One job: its index, key, weight, priority, sleep (µs), and whether the victim
    /// runtime submits it.
    type Job = (usize, Option<u8>, u32, i32, u64, bool);

    /// A multi-thread runtime of `workers` threads named `name`.
    fn named_runtime(workers: usize, name: &str) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Where the jobs go: the SmartAioPool or the CommonAioPool, and what their recipes
    /// check.
    #[derive(Clone)]
    struct Target {
        smart: bool,
        pool: SmartAioPool,
        common: CommonAioPool,
        model: Arc<Mutex<Model>>,
        per_key: Option<usize>,
        cap: Option<u64>,
    }

    impl Target {
        /// Submits `jobs` one by one, with their keys, weights and priorities, and keeps
        /// their handles in `handles`.
        async fn submit_all(
            &self,
            jobs: Vec<Job>,
            handles: &Mutex<Vec<(usize, TaskHandle<usize>)>>,
        ) {
            for (i, key, w, prio, sleep, _) in jobs {
                let mut o = SubmitOptions::new().weight(w).priority(prio);
                if let Some(k) = key {
                    o = o.key(format!("k{k}"));
                }
                let recipe = recipe(self.model.clone(), i, key, w, self.per_key, self.cap, sleep);
                let h = if self.smart {
                    self.pool.submit_with(recipe, o).await.unwrap()
                } else {
                    self.common.submit_with(recipe(), o).await.unwrap()
                };
                handles.lock().unwrap().push((i, h));
            }
        }
    }

    fn run_seed(seed: u64) -> Result<(), String> {
        let mut r = Rng::new(seed);
        for _ in 0..4 {
            r.draw();
        }
        let conc = 1 + r.below(4) as usize;
        let per_key = (r.below(2) == 0).then(|| 1 + r.below(2) as usize);
        let cap = (r.below(2) == 0).then(|| 3 + r.below(3));
        let rate = (r.below(3) == 0).then(|| (1 + r.below(3) as u32, 20 + r.below(20)));
        // The same limits on either pool's builder (two types with the same methods).
        macro_rules! limited {
            ($builder:expr) => {{
                let mut b = $builder;
                if let Some(n) = per_key {
                    b = b.max_per_key(n);
                }
                if let Some(c) = cap {
                    b = b.weight_capacity(c);
                }
                if let Some((n, ms)) = rate {
                    b = b.rate_limit(n, Duration::from_millis(ms));
                }
                b.build()
            }};
        }
        let pool = limited!(SmartAioPool::builder()
            .max_concurrency(conc)
            .max_queue_size(1000)
            .min_workers(r.below(2) as usize)
            .idle_timeout(Duration::from_millis(5))
            .process_wide(false)
            .auto_shutdown(false));
        let smart = r.below(2) == 0;
        let common = limited!(CommonAioPool::builder()
            .max_concurrency(conc)
            .max_queue_size(1000)
            .process_wide(false));
        let desc = format!(
            "seed {seed}: smart {smart} conc {conc} per_key {per_key:?} cap {cap:?} rate {rate:?}"
        );
        let model = Arc::new(Mutex::new(Model::default()));
        let n_jobs = 10 + r.below(30) as usize;
        model.lock().unwrap().runs = vec![0; n_jobs];
        let mut jobs = Vec::new();
        for i in 0..n_jobs {
            let key = per_key.and_then(|_| (r.below(3) > 0).then(|| r.below(3) as u8));
            let w = if cap.is_some() {
                1 + r.below(3) as u32
            } else {
                1
            };
            let prio = if r.below(4) == 0 {
                r.below(5) as i32 - 2
            } else {
                0
            };
            let sleep = r.below(3000);
            let victim = r.below(2) == 0;
            jobs.push((i, key, w, prio, sleep, victim));
        }
        let victim_end_us = r.below(4000);
        let jobs_victim: Vec<bool> = jobs.iter().map(|j| j.5).collect();
        let jobs_dbg: Vec<(usize, u64, bool)> = jobs.iter().map(|j| (j.0, j.4, j.5)).collect();
        let lost = AtomicUsize::new(0);
        let victim_mt = r.below(2) == 0;
        #[allow(clippy::type_complexity)]
        let handles: Arc<Mutex<Vec<(usize, TaskHandle<usize>)>>> = Default::default();
        // The victim: submits its jobs, runs a while, ends.
        let victim_jobs: Vec<_> = jobs.iter().filter(|j| j.5).cloned().collect();
        let main_target = Target {
            smart,
            pool: pool.clone(),
            common: common.clone(),
            model: model.clone(),
            per_key,
            cap,
        };
        let (target, hs) = (main_target.clone(), handles.clone());
        let victim = std::thread::Builder::new()
            .name("victim".into())
            .spawn(move || {
                let rt = if victim_mt {
                    named_runtime(1, "victim-w")
                } else {
                    super::support::current_thread()
                };
                rt.block_on(async {
                    target.submit_all(victim_jobs, &hs).await;
                    tokio::time::sleep(Duration::from_micros(victim_end_us)).await;
                });
                drop(rt);
            })
            .unwrap();
        let main_jobs: Vec<_> = jobs.iter().filter(|j| !j.5).cloned().collect();
        let rt = named_runtime(2, "main-w");
        let res = rt.block_on(async {
            main_target.submit_all(main_jobs, &handles).await;
            let done = tokio::task::spawn_blocking(move || victim.join())
                .await
                .unwrap();
            if done.is_err() {
                return Err("victim panicked".to_string());
            }
            let hs: Vec<_> = std::mem::take(&mut *handles.lock().unwrap());
            let all = async {
                for (i, h) in hs {
                    match h.await {
                        Ok(v) if v == i => {}
                        Err(e)
                            if !smart
                                && jobs_victim[i]
                                && e.cancel_reason()
                                    == Some(nb_aiopool::CancelReason::RuntimeShutdown) =>
                        {
                            lost.fetch_add(1, Ordering::SeqCst);
                        }
                        other => return Err(format!("job {i}: {other:?}")),
                    }
                }
                if smart {
                    pool.wait().await
                } else {
                    common.wait().await
                }
                Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(20), all).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "HANG stats {:?} {:?}",
                    pool.stats(),
                    common.stats()
                )),
            }
        });
        let m = model.lock().unwrap();
        let s = if smart { pool.stats() } else { common.stats() };
        let mut errs = m.violations.clone();
        if let Err(e) = res {
            errs.push(e);
        }
        if s.queued != 0
            || s.running != 0
            || s.cancelled != lost.load(Ordering::SeqCst) as u64
            || s.completed + s.cancelled != n_jobs as u64
        {
            errs.push(format!("stats {s:?}"));
        }
        if let Some((n, ms)) = rate {
            let mut st = m.starts.clone();
            st.sort();
            for w in st.windows(n as usize + 1) {
                if w[n as usize] - w[0] < Duration::from_millis(ms) - Duration::from_millis(5) {
                    errs.push(format!(
                        "rate: {} starts within {:?}",
                        n + 1,
                        w[n as usize] - w[0]
                    ));
                    let t0 = m.log.iter().map(|l| l.0).min().unwrap();
                    let mut l: Vec<_> = m
                        .log
                        .iter()
                        .map(|(t, i, th)| (t.duration_since(t0), *i, th.clone()))
                        .collect();
                    l.sort();
                    eprintln!(
                    "victim ends at {victim_end_us} us (mt {victim_mt}); jobs {:?}\nstarts {l:?}",
                    jobs_dbg
                );
                    break;
                }
            }
        }
        if std::env::var("FEATURE_MIXES_VERBOSE").is_ok() {
            eprintln!(
                "{desc}: reruns {}",
                m.runs.iter().filter(|&&x| x > 1).count()
            );
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(format!("{desc}: {errs:?} runs {:?}", m.runs))
        }
    }

    #[test]
    fn fuzz_two_runtimes() {
        super::run_cases(40, run_seed);
    }
}
