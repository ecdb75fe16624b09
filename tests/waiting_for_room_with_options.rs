//! A review of waiting for room with per-task options (2026-12-06): `SubmitOptions`
//! (priority, weight, key, timeout) through `submit_with` / `try_submit_with` of the three
//! pools, and the order in which waiting submitters are served when room appears, by
//! every route (a task ends, panics, is aborted running or queued; a waiter is dropped,
//! granted or not, or times out; the pool shuts down, is resized or cancels all; a
//! runtime ends). One finding, a limitation now documented (RELIABILITY.md, 331): a place
//! granted to a waiter of a runtime alive but not driven holds up the submitters of driven
//! runtimes until that runtime is driven (the last test pins it); the other tests pin
//! behaviour found sound.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nb_aiopool::{
    CommonAioPool, NoQueueAioPool, SmartAioPool, SubmitError, SubmitErrorKind, SubmitOptions,
    TaskHandle, TrySubmitErrorKind,
};
use support::{current_thread, within};

fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(f).poll(&mut cx)
}

/// The panics of this file's tasks, kept off the output.
const PANICS: &[&str] = &[
    "waiting_for_room: the filler panics",
    "waiting_for_room: keyed panic",
];

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Submitted = Result<TaskHandle<()>, SubmitErrorKind>;

/// One of the three pools, of one slot and no waiting room, behind one surface: what it
/// runs is a future made by a shareable function (a recipe for SmartAioPool).
#[derive(Clone)]
enum Pool {
    Common(CommonAioPool),
    NoQueue(NoQueueAioPool),
    Smart(SmartAioPool),
}

impl Pool {
    /// Each pool with `c` slots, no waiting room, and `key_limit` as `max_per_key` if any.
    fn all(c: usize, q: usize, key_limit: Option<usize>) -> Vec<Pool> {
        let limits = support::FlowLimits {
            max_per_key: key_limit,
            ..support::FlowLimits::default()
        };
        // NoQueueAioPool only where the others have no waiting room either.
        support::flow_pools(c, q, c, limits)
            .into_iter()
            .filter_map(|pool| match pool {
                support::Pool::Common(p) => Some(Pool::Common(p)),
                support::Pool::NoQueue(p) => (q == 0).then_some(Pool::NoQueue(p)),
                support::Pool::Smart(p) => Some(Pool::Smart(p)),
            })
            .collect()
    }

    fn name(&self) -> &'static str {
        match self {
            Pool::Common(_) => "CommonAioPool",
            Pool::NoQueue(_) => "NoQueueAioPool",
            Pool::Smart(_) => "SmartAioPool",
        }
    }

    /// `submit_with` of the future `make()` makes (called once, or per run).
    fn submit_with<F, Fut>(&self, make: F, opts: SubmitOptions) -> BoxFut<Submitted>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        fn kind<T>(r: Result<TaskHandle<()>, SubmitError<T>>) -> Submitted {
            r.map_err(|e| e.kind())
        }
        match self.clone() {
            Pool::Common(p) => Box::pin(async move { kind(p.submit_with(make(), opts).await) }),
            Pool::NoQueue(p) => Box::pin(async move { kind(p.submit_with(make(), opts).await) }),
            Pool::Smart(p) => Box::pin(async move { kind(p.submit_with(make, opts).await) }),
        }
    }

    fn try_submit_with<F, Fut>(
        &self,
        make: F,
        opts: SubmitOptions,
    ) -> Result<TaskHandle<()>, TrySubmitErrorKind>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        match self {
            Pool::Common(p) => p.try_submit_with(make(), opts).map_err(|e| e.kind()),
            Pool::NoQueue(p) => p.try_submit_with(make(), opts).map_err(|e| e.kind()),
            Pool::Smart(p) => p.try_submit_with(make, opts).map_err(|e| e.kind()),
        }
    }

    async fn shutdown(&self) {
        match self {
            Pool::Common(p) => p.shutdown().await,
            Pool::NoQueue(p) => p.shutdown().await,
            Pool::Smart(p) => p.shutdown().await,
        }
    }

    fn set_max_concurrency(&self, n: usize) {
        match self {
            Pool::Common(p) => p.set_max_concurrency(n),
            Pool::NoQueue(p) => p.set_max_concurrency(n),
            Pool::Smart(p) => p.set_max_concurrency(n),
        }
    }

    fn cancel_all(&self) -> BoxFut<()> {
        match self {
            Pool::Common(p) => Box::pin(p.cancel_all()),
            Pool::NoQueue(p) => Box::pin(p.cancel_all()),
            Pool::Smart(p) => Box::pin(p.cancel_all()),
        }
    }

    fn running(&self) -> usize {
        match self {
            Pool::Common(p) => p.stats().running,
            Pool::NoQueue(p) => p.stats().running,
            Pool::Smart(p) => p.stats().running,
        }
    }
}

/// A task that waits for `gate` (a oneshot's receiver, shared so that a recipe can take it
/// once), then does `then`.
fn gated(
    gate: tokio::sync::oneshot::Receiver<()>,
    then: fn(),
) -> impl Fn() -> BoxFut<()> + Send + Sync + 'static {
    let gate = Arc::new(Mutex::new(Some(gate)));
    move || {
        let gate = gate.lock().unwrap().take();
        Box::pin(async move {
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            then();
        })
    }
}

/// A task that counts its start in `started` and ends.
fn counting(started: &Arc<AtomicUsize>) -> impl Fn() -> BoxFut<()> + Send + Sync + 'static {
    let started = started.clone();
    move || {
        let started = started.clone();
        Box::pin(async move {
            started.fetch_add(1, Ordering::SeqCst);
        })
    }
}

/// A task that records `i` in `order` when it starts.
fn records(order: &Arc<Mutex<Vec<usize>>>, i: usize) -> impl Fn() -> BoxFut<()> + Send + Sync {
    let order = order.clone();
    move || {
        let order = order.clone();
        Box::pin(async move { order.lock().unwrap().push(i) })
    }
}

/// How the room held by the task that fills the pool is given back.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// It ends.
    Ends,
    /// It panics.
    Panics,
    /// Its handle aborts it while it runs.
    AbortedRunning,
}

/// When room appears in a full pool by any route a task's end takes (it ends, panics, or
/// is aborted), the submitters waiting for it are served by priority, first come first
/// served among equals, in each pool; a waiter that timed out or whose future was dropped
/// meanwhile (even the highest) takes no place and holds up nobody. Pins the crate docs'
/// "Priorities" and `SubmitOptions::priority`.
#[tokio::test(start_paused = true)]
async fn waiting_submitters_are_served_by_priority_whatever_frees_the_room() {
    support::hide_panics(PANICS);
    for route in [Route::Ends, Route::Panics, Route::AbortedRunning] {
        for pool in Pool::all(1, 0, None) {
            let what = format!("{} {route:?}", pool.name());
            let (tx, rx) = tokio::sync::oneshot::channel();
            let then: fn() = match route {
                Route::Panics => || panic!("waiting_for_room: the filler panics"),
                _ => || {},
            };
            let filler = pool
                .submit_with(gated(rx, then), SubmitOptions::new())
                .await
                .unwrap();
            let order = Arc::new(Mutex::new(Vec::new()));
            let prios = [0, 5, 0, 5, -1, 7];
            let mut subs = Vec::new();
            for (i, p) in prios.iter().enumerate() {
                let mut s = pool.submit_with(records(&order, i), SubmitOptions::new().priority(*p));
                assert!(poll_once(&mut s).is_pending(), "{what}: found room");
                subs.push(s);
            }
            // A waiter of the highest priority that gives up (dropped), and one that
            // times out, before the room appears.
            let mut dropped =
                pool.submit_with(records(&order, 100), SubmitOptions::new().priority(9));
            assert!(poll_once(&mut dropped).is_pending());
            drop(dropped);
            let timed = pool.submit_with(
                records(&order, 101),
                SubmitOptions::new()
                    .priority(9)
                    .timeout(Duration::from_millis(10)),
            );
            assert_eq!(
                within("the timed waiter", timed).await.err(),
                Some(SubmitErrorKind::TimedOut),
                "{what}"
            );
            match route {
                Route::AbortedRunning => {
                    filler.abort();
                    drop(tx);
                }
                _ => {
                    filler.detach();
                    tx.send(()).unwrap();
                }
            }
            // Polled together: each waiter queues its task only when polled.
            let handles = within(&what, futures_util::future::join_all(subs)).await;
            for h in handles {
                within(&what, h.unwrap()).await.unwrap();
            }
            assert_eq!(*order.lock().unwrap(), vec![5, 1, 3, 0, 2, 4], "{what}");
            pool.shutdown().await;
        }
    }
}

/// A place granted to a waiter is its own until it takes it (a `try_submit_with` finds
/// none), and a waiter granted a place and dropped before it took it passes the place on
/// to the next by priority (not to the next that came). Pins `Admit`'s drop and
/// `Admission::cancel`.
#[tokio::test(start_paused = true)]
async fn a_granted_waiter_dropped_passes_its_place_to_the_next_by_priority() {
    for pool in Pool::all(1, 0, None) {
        let what = pool.name();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let filler = pool
            .submit_with(gated(rx, || {}), SubmitOptions::new())
            .await
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut first = pool.submit_with(records(&order, 0), SubmitOptions::new());
        let mut high = pool.submit_with(records(&order, 1), SubmitOptions::new().priority(3));
        let mut mid = pool.submit_with(records(&order, 2), SubmitOptions::new().priority(1));
        for s in [&mut first, &mut high, &mut mid] {
            assert!(poll_once(s).is_pending(), "{what}");
        }
        filler.detach();
        tx.send(()).unwrap();
        within("the filler's end", async {
            while pool.running() != 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        // The place went to `high` (not polled since): a `try_submit_with` of a higher
        // priority does not take it.
        assert_eq!(
            pool.try_submit_with(|| async {}, SubmitOptions::new().priority(100))
                .err(),
            Some(TrySubmitErrorKind::Full),
            "{what}: a try_submit took the place granted to a waiter"
        );
        // `high` gives up without taking it: `mid` has it.
        drop(high);
        assert!(
            poll_once(&mut first).is_pending(),
            "{what}: first overtook mid"
        );
        let h = match poll_once(&mut mid) {
            Poll::Ready(r) => r.unwrap(),
            Poll::Pending => panic!("{what}: the place of the dropped waiter was not passed on"),
        };
        within(what, h).await.unwrap();
        within(what, within(what, first).await.unwrap())
            .await
            .unwrap();
        assert_eq!(*order.lock().unwrap(), vec![2, 0], "{what}");
        pool.shutdown().await;
    }
}

/// A waiting submitter, with or without a deadline, gets `Closed` and its task back when
/// the pool shuts down; the ones that come after it too. A place granted to a waiter
/// before the shutdown is not lost: the shutdown waits for nothing that was not queued.
#[tokio::test(start_paused = true)]
async fn waiting_submitters_with_options_are_refused_at_shutdown() {
    for pool in Pool::all(1, 0, None) {
        let what = pool.name();
        let (tx, rx) = tokio::sync::oneshot::channel();
        pool.submit_with(gated(rx, || {}), SubmitOptions::new())
            .await
            .unwrap()
            .detach();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut plain = pool.submit_with(records(&order, 0), SubmitOptions::new().priority(2));
        let mut timed = pool.submit_with(
            records(&order, 1),
            SubmitOptions::new().timeout(Duration::from_secs(3600)),
        );
        assert!(poll_once(&mut plain).is_pending() && poll_once(&mut timed).is_pending());
        let shutdown = pool.shutdown();
        let mut shutdown = std::pin::pin!(shutdown);
        assert!(poll_once(&mut shutdown).is_pending());
        assert_eq!(
            within(what, plain).await.err(),
            Some(SubmitErrorKind::Closed)
        );
        assert_eq!(
            within(what, timed).await.err(),
            Some(SubmitErrorKind::Closed)
        );
        tx.send(()).unwrap();
        within(what, shutdown).await;
        assert!(order.lock().unwrap().is_empty(), "{what}");
    }
}

/// A key's count is given back by every end of a keyed task (ends, panics, aborted while
/// running, aborted while held back by its key) and is not taken by a keyed submit that
/// timed out or was dropped while waiting: afterwards the key runs exactly `max_per_key`
/// tasks again, no more, no fewer.
#[tokio::test(start_paused = true)]
async fn a_key_count_is_given_back_by_every_end_and_taken_by_no_failed_submit() {
    support::hide_panics(PANICS);
    let pools = Pool::all(2, 0, Some(1)).into_iter().map(|p| (p, 0));
    for (pool, q) in pools.chain(Pool::all(2, 2, Some(1)).into_iter().map(|p| (p, 2))) {
        let what = pool.name();
        let key = || SubmitOptions::new().key("k");
        // Ends; panics.
        within(what, pool.submit_with(|| async {}, key()).await.unwrap())
            .await
            .unwrap();
        let p = pool
            .submit_with(|| async { panic!("waiting_for_room: keyed panic") }, key())
            .await
            .unwrap();
        assert!(within(what, p).await.unwrap_err().is_panic());
        // Aborted while running, with another of its key held back behind it, aborted too.
        let running = pool
            .submit_with(std::future::pending::<()>, key())
            .await
            .unwrap();
        let mut held = Vec::new();
        for _ in 0..1 + q {
            let h = pool
                .submit_with(std::future::pending::<()>, key())
                .await
                .unwrap();
            held.push(h);
        }
        // The pool is full (2 places, and its queue): a keyed submit that times out, one dropped.
        let late = pool.submit_with(
            || async {},
            key().timeout(Duration::from_millis(5)).priority(4),
        );
        assert_eq!(
            within(what, late).await.err(),
            Some(SubmitErrorKind::TimedOut)
        );
        let mut dropped = pool.submit_with(|| async {}, key());
        assert!(poll_once(&mut dropped).is_pending());
        drop(dropped);
        for h in &held {
            h.abort();
        }
        running.abort();
        for h in held {
            assert!(within(what, h).await.unwrap_err().is_cancelled());
        }
        assert!(within(what, running).await.unwrap_err().is_cancelled());
        // One of the key runs; the second waits for it; another key runs beside it.
        let started = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let first = pool.submit_with(gated(rx, || {}), key()).await.unwrap();
        let second = pool.submit_with(counting(&started), key()).await.unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            started.load(Ordering::SeqCst),
            0,
            "{what}: two of a key limited to one ran"
        );
        tx.send(()).unwrap();
        within(what, first).await.unwrap();
        within(what, second).await.unwrap();
        assert_eq!(started.load(Ordering::SeqCst), 1, "{what}");
        pool.shutdown().await;
    }
}

/// A weight above the capacity is refused at once (`TooHeavy`, the task handed back, even
/// into a full pool, by `submit_with` and `try_submit_with` alike); a weight of exactly
/// the capacity is admitted and runs alone.
#[tokio::test(start_paused = true)]
async fn a_weight_above_the_capacity_is_refused_at_once_and_one_equal_to_it_runs_alone() {
    let pools = vec![
        Pool::Common(support::common_builder(2, 0).weight_capacity(3).build()),
        Pool::NoQueue(
            NoQueueAioPool::builder()
                .max_concurrency(2)
                .weight_capacity(3)
                .process_wide(false)
                .build(),
        ),
        Pool::Smart(
            SmartAioPool::builder()
                .max_concurrency(2)
                .max_queue_size(0)
                .weight_capacity(3)
                .process_wide(false)
                .auto_shutdown(false)
                .build(),
        ),
    ];
    for pool in pools {
        let what = pool.name();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let a = pool
            .submit_with(gated(rx, || {}), SubmitOptions::new())
            .await
            .unwrap();
        let (tx2, rx2) = tokio::sync::oneshot::channel();
        let b = pool
            .submit_with(gated(rx2, || {}), SubmitOptions::new())
            .await
            .unwrap();
        let heavy = SubmitOptions::new().weight(4);
        assert_eq!(
            pool.try_submit_with(|| async {}, heavy.clone()).err(),
            Some(TrySubmitErrorKind::TooHeavy),
            "{what}"
        );
        // Refused at once, though the pool is full and the deadline far.
        let heavy = pool.submit_with(|| async {}, heavy.timeout(Duration::from_secs(3600)));
        let mut heavy = heavy;
        assert_eq!(
            match poll_once(&mut heavy) {
                Poll::Ready(r) => r.err(),
                Poll::Pending => None,
            },
            Some(SubmitErrorKind::TooHeavy),
            "{what}"
        );
        let started = Arc::new(AtomicUsize::new(0));
        let full = pool.submit_with(counting(&started), SubmitOptions::new().weight(3));
        tx.send(()).unwrap();
        within(what, a).await.unwrap();
        let full = within(what, full).await.unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            started.load(Ordering::SeqCst),
            0,
            "{what}: weight 1 + 3 ran"
        );
        tx2.send(()).unwrap();
        within(what, b).await.unwrap();
        within(what, full).await.unwrap();
        assert_eq!(started.load(Ordering::SeqCst), 1, "{what}");
        pool.shutdown().await;
    }
}

/// A `submit_with` with a deadline (`SubmitOptions::timeout`, with or without a priority,
/// into a pool with or without a rate window) waiting for room when the runtime that ran
/// its SmartAioPool's tasks ends is admitted once their re-runs have run on its own
/// runtime: its wait made that runtime known (`Engine::full`, `ensure_started`), as for a
/// submit without a deadline (finding 53, `tests/timers_and_offers.rs`), though its wait
/// (`admit_waiting_within`) does not look for a stranded pool as `admit_waiting` does.
#[test]
fn a_timed_submit_waiting_when_its_pool_becomes_stranded_is_admitted() {
    for (opts, rated) in [
        (
            SubmitOptions::new().timeout(Duration::from_secs(3600)),
            false,
        ),
        (
            SubmitOptions::new()
                .timeout(Duration::from_secs(3600))
                .priority(3),
            false,
        ),
        (
            SubmitOptions::new().timeout(Duration::from_secs(3600)),
            true,
        ),
    ] {
        let pool = if rated {
            SmartAioPool::builder()
                .max_concurrency(1)
                .max_queue_size(1)
                .rate_limit(1000, Duration::from_secs(1))
                .auto_shutdown(false)
                .process_wide(false)
                .build()
        } else {
            support::one_slot_smart(1)
        };
        let (rt_v, first, second) = support::fill_smart_from_a_new_runtime(&pool);
        let (polled_tx, polled_rx) = mpsc::channel();
        let (v_gone_tx, v_gone_rx) = tokio::sync::oneshot::channel::<()>();
        let waiter = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                current_thread().block_on(async {
                    let mut sub = Box::pin(pool.submit_with(|| async { 3u32 }, opts));
                    assert!(
                        tokio::time::timeout(Duration::from_millis(50), &mut sub)
                            .await
                            .is_err(),
                        "the submit found room in a full pool"
                    );
                    polled_tx.send(()).unwrap();
                    v_gone_rx.await.unwrap();
                    let done = tokio::time::timeout(Duration::from_secs(3), &mut sub).await;
                    match done {
                        Ok(Ok(h)) => Some(h.await.unwrap()),
                        Ok(Err(e)) => panic!("submit refused: {:?}", e.kind()),
                        Err(_) => None,
                    }
                })
            })
        };
        polled_rx.recv().unwrap();
        drop(rt_v);
        v_gone_tx.send(()).unwrap();
        let out = support::on_thread_within("the waiter", 20, move || waiter.join().unwrap());
        assert_eq!(
            out,
            Some(3),
            "a submit_with(.., timeout) waiting on a live runtime was not admitted within 3 s \
             after the runtime that ran the pool's tasks ended (its re-runs stranded: \
             stats {})",
            pool.stats()
        );
        assert_eq!(first.blocking_wait().unwrap(), 1);
        assert_eq!(second.blocking_wait().unwrap(), 2);
    }
}

/// What the controlled scenario below records.
#[derive(Default)]
struct Board {
    /// The waiters whose task started, in the order they started.
    started: Vec<usize>,
    /// Each admitted waiter's handle.
    handles: std::collections::HashMap<usize, TaskHandle<()>>,
    /// Each refused waiter's refusal.
    refused: std::collections::HashMap<usize, SubmitErrorKind>,
}

/// A task that records its start as `i`'s, waits for `gate`, then panics if `panics` is
/// set by then.
fn controlled(
    i: usize,
    board: &Arc<Mutex<Board>>,
    gate: tokio::sync::oneshot::Receiver<()>,
    panics: &Arc<std::sync::atomic::AtomicBool>,
) -> impl Fn() -> BoxFut<()> + Send + Sync + 'static {
    let (board, panics) = (board.clone(), panics.clone());
    let gate = Arc::new(Mutex::new(Some(gate)));
    move || {
        let (board, panics) = (board.clone(), panics.clone());
        let gate = gate.lock().unwrap().take();
        Box::pin(async move {
            board.lock().unwrap().started.push(i);
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            if panics.load(Ordering::SeqCst) {
                panic!("waiting_for_room: the filler panics");
            }
        })
    }
}

/// A model of the line of waiting submitters checked against the three pools (one or two
/// places, no waiting room), driven one event at a time on a paused runtime: a submitter
/// comes (a random priority, with or without a deadline), a running task gives its place
/// back (it ends, panics, or its handle aborts it), a waiting submitter's task is aborted
/// (its submit dropped), time passes (deadlines pass). After each event, the tasks started
/// must be the model's: a freed place goes to the waiter of the highest priority that came
/// first, among those still waiting; a waiter that gave up or timed out takes none; a
/// waiter times out only while every place is taken; a submit that finds a place starts
/// at once. 40 seeded scenarios of 60 events each.
#[tokio::test(start_paused = true)]
async fn waiters_follow_the_model_of_the_line_under_random_events() {
    support::hide_panics(PANICS);
    const TICK: Duration = Duration::from_millis(10);
    for seed in 0..40u64 {
        let mut rng = support::Rng::new(seed);
        let first_places = 1 + rng.below(2) as usize;
        for pool in Pool::all(first_places, 0, None) {
            let mut places = first_places;
            let what = format!("{} seed {seed}", pool.name());
            let board = Arc::new(Mutex::new(Board::default()));
            // The model: running tasks; waiters (priority, seq, deadline in ms); the
            // expected start order.
            let mut running: Vec<usize> = Vec::new();
            let mut waiting: Vec<(i32, usize, Option<u64>)> = Vec::new();
            let mut expected: Vec<usize> = Vec::new();
            let mut gates = std::collections::HashMap::new();
            let mut panics = std::collections::HashMap::new();
            let mut tasks = std::collections::HashMap::new();
            let base = tokio::time::Instant::now();
            let now_ms = || base.elapsed().as_millis() as u64;
            let settle = || async {
                for _ in 0..20 {
                    tokio::task::yield_now().await;
                }
            };
            let grant = |running: &mut Vec<usize>,
                         waiting: &mut Vec<(i32, usize, Option<u64>)>,
                         expected: &mut Vec<usize>,
                         places: usize| {
                while running.len() < places {
                    let Some(best) = (0..waiting.len())
                        .max_by_key(|&k| (waiting[k].0, std::cmp::Reverse(waiting[k].1)))
                    else {
                        return;
                    };
                    let (_, i, _) = waiting.remove(best);
                    running.push(i);
                    expected.push(i);
                }
            };
            let mut next = 0usize;
            for _ in 0..60 {
                match rng.below(10) {
                    // A submitter comes.
                    0..=3 => {
                        let i = next;
                        next += 1;
                        let prio = rng.below(5) as i32 - 2;
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
                        gates.insert(i, tx);
                        panics.insert(i, flag.clone());
                        let mut opts = SubmitOptions::new().priority(prio);
                        // A deadline at a half tick: never at the instant of a tick.
                        let deadline = rng.chance(40).then(|| {
                            let d = TICK * (1 + rng.below(4) as u32) + TICK / 2;
                            opts = opts.clone().timeout(d);
                            now_ms() + d.as_millis() as u64
                        });
                        let submit = pool.submit_with(controlled(i, &board, rx, &flag), opts);
                        let b = board.clone();
                        tasks.insert(
                            i,
                            tokio::spawn(async move {
                                match submit.await {
                                    Ok(h) => {
                                        b.lock().unwrap().handles.insert(i, h);
                                    }
                                    Err(kind) => {
                                        b.lock().unwrap().refused.insert(i, kind);
                                    }
                                }
                            }),
                        );
                        if running.len() < places {
                            running.push(i);
                            expected.push(i);
                        } else {
                            waiting.push((prio, i, deadline));
                        }
                    }
                    // A running task gives its place back: ends, panics, or is aborted.
                    4..=6 if !running.is_empty() => {
                        let k = rng.below(running.len() as u64) as usize;
                        let i = running.remove(k);
                        match rng.below(3) {
                            0 => {
                                gates.remove(&i).unwrap().send(()).unwrap();
                            }
                            1 => {
                                panics[&i].store(true, Ordering::SeqCst);
                                gates.remove(&i).unwrap().send(()).unwrap();
                            }
                            _ => {
                                let h = board.lock().unwrap().handles.remove(&i);
                                h.unwrap_or_else(|| panic!("{what}: no handle of {i}"))
                                    .abort();
                            }
                        }
                        grant(&mut running, &mut waiting, &mut expected, places);
                    }
                    // The pool is resized (growing admits waiters at once; shrinking
                    // admits none until fewer than the new size hold a place).
                    8 if rng.chance(50) => {
                        places = 1 + rng.below(3) as usize;
                        pool.set_max_concurrency(places);
                        grant(&mut running, &mut waiting, &mut expected, places);
                    }
                    // Every running task is cancelled.
                    8 if rng.chance(30) => {
                        let cancelled = pool.cancel_all();
                        for i in running.drain(..) {
                            board.lock().unwrap().handles.remove(&i);
                        }
                        grant(&mut running, &mut waiting, &mut expected, places);
                        settle().await;
                        within(&what, cancelled).await;
                    }
                    // A waiting submitter gives up: its future is dropped.
                    7 if !waiting.is_empty() => {
                        let k = rng.below(waiting.len() as u64) as usize;
                        let (_, i, _) = waiting.remove(k);
                        tasks[&i].abort();
                    }
                    // Time passes: deadlines pass.
                    _ => {
                        tokio::time::sleep(TICK).await;
                        let now = now_ms();
                        waiting.retain(|&(_, i, d)| {
                            let gone = d.is_some_and(|d| d <= now);
                            if gone {
                                tasks.remove(&i);
                            }
                            !gone
                        });
                    }
                }
                settle().await;
                let started = board.lock().unwrap().started.clone();
                assert_eq!(started, expected, "{what}: the tasks started");
            }
            // Every waiter that timed out said so; the others were admitted or dropped.
            for (i, kind) in board.lock().unwrap().refused.iter() {
                assert_eq!(*kind, SubmitErrorKind::TimedOut, "{what}: waiter {i}");
            }
            for (_, tx) in gates.drain() {
                let _ = tx.send(());
            }
            within(&what, pool.shutdown()).await;
            for (_, t) in tasks.drain() {
                let _ = within(&what, t).await;
            }
        }
    }
}

/// A keyed, weighted task cut off by the end of its runtime gives its key and weight back
/// (a CommonAioPool's or NoQueueAioPool's is lost with its runtime, a SmartAioPool's runs
/// again elsewhere and gives them back when that run ends): on another runtime, a task of
/// the same key and the full weight starts, and a second of the key waits for it.
#[test]
fn a_key_and_weight_held_by_a_task_cut_off_with_its_runtime_are_given_back() {
    let build = |kind: usize| -> Pool {
        match kind {
            0 => Pool::Common(
                support::common_builder(2, 2)
                    .max_per_key(1)
                    .weight_capacity(2)
                    .build(),
            ),
            1 => Pool::NoQueue(
                NoQueueAioPool::builder()
                    .max_concurrency(2)
                    .max_per_key(1)
                    .weight_capacity(2)
                    .process_wide(false)
                    .build(),
            ),
            _ => Pool::Smart(
                SmartAioPool::builder()
                    .max_concurrency(2)
                    .max_queue_size(2)
                    .max_per_key(1)
                    .weight_capacity(2)
                    .process_wide(false)
                    .auto_shutdown(false)
                    .build(),
            ),
        }
    };
    for kind in 0..3 {
        for multi in [false, true] {
            let pool = build(kind);
            let what = format!("{} multi {multi}", pool.name());
            let heavy = || SubmitOptions::new().key("k").weight(2);
            let runs = Arc::new(AtomicUsize::new(0));
            let rt_v = if multi {
                support::multi_thread_of(1)
            } else {
                current_thread()
            };
            let r = runs.clone();
            let cut = rt_v
                .block_on(pool.submit_with(
                    move || {
                        let first = r.fetch_add(1, Ordering::SeqCst) == 0;
                        async move {
                            if first {
                                std::future::pending::<()>().await;
                            }
                        }
                    },
                    heavy(),
                ))
                .unwrap();
            if multi {
                support::until("the first run", || runs.load(Ordering::SeqCst) == 1);
            } else {
                rt_v.block_on(async {
                    while runs.load(Ordering::SeqCst) == 0 {
                        tokio::task::yield_now().await;
                    }
                });
            }
            drop(rt_v);
            let p = pool.clone();
            let w = what.clone();
            support::on_thread_within(&what.clone(), 10, move || {
                current_thread().block_on(async move {
                    let what = w.as_str();
                    let ended = within(what, cut).await;
                    match &p {
                        Pool::Smart(_) => ended.unwrap(),
                        _ => assert!(ended.unwrap_err().is_cancelled(), "{what}"),
                    }
                    let started = Arc::new(AtomicUsize::new(0));
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let first = within(what, p.submit_with(counting(&started), heavy()))
                        .await
                        .unwrap();
                    within(what, first).await.unwrap();
                    assert_eq!(started.load(Ordering::SeqCst), 1, "{what}");
                    let gate = within(what, p.submit_with(gated(rx, || {}), heavy()))
                        .await
                        .unwrap();
                    let second = within(
                        what,
                        p.submit_with(counting(&started), SubmitOptions::new().key("k")),
                    )
                    .await
                    .unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    assert_eq!(
                        started.load(Ordering::SeqCst),
                        1,
                        "{what}: a second task of the key ran beside the first"
                    );
                    tx.send(()).unwrap();
                    within(what, gate).await.unwrap();
                    within(what, second).await.unwrap();
                    assert_eq!(started.load(Ordering::SeqCst), 2, "{what}");
                    p.shutdown().await;
                })
            });
        }
    }
}

/// Once the handle of the task that fills a full pool has resolved (it ended, panicked, or
/// was aborted before its slot polled it), a `try_submit_with` with options finds its
/// room at once, in each pool (the crate docs' "Guarantees": "when a handle resolves ...
/// the task's room in the pool is back"). An abort of a running task is the documented
/// exception (finding 217): its handle resolves at once, its room comes back when its
/// slot drops it at its next poll (one yield here), not before.
#[tokio::test(start_paused = true)]
async fn the_room_of_a_task_is_free_once_its_handle_resolved_whatever_ended_it() {
    support::hide_panics(PANICS);
    for route in 0..4 {
        for pool in Pool::all(1, 0, Some(1)) {
            let what = format!("{} route {route}", pool.name());
            let (tx, rx) = tokio::sync::oneshot::channel();
            let then: fn() = if route == 1 {
                || panic!("waiting_for_room: the filler panics")
            } else {
                || {}
            };
            let key = SubmitOptions::new().key("k").priority(2);
            let filler = pool
                .submit_with(gated(rx, then), key.clone())
                .await
                .unwrap();
            let opts = SubmitOptions::new().key("k").weight(3).priority(-1);
            assert_eq!(
                pool.try_submit_with(|| async {}, opts.clone()).err(),
                Some(TrySubmitErrorKind::Full),
                "{what}"
            );
            let ended = match route {
                0 | 1 => {
                    tx.send(()).unwrap();
                    within(&what, filler).await
                }
                _ => {
                    if route == 3 {
                        // Aborted after its running time: the same, while it runs.
                        tokio::task::yield_now().await;
                    }
                    filler.abort();
                    within(&what, filler).await
                }
            };
            assert_eq!(ended.is_ok(), route == 0, "{what}: {ended:?}");
            if route == 3 {
                // The slot drops the aborted task at its next poll: then the room is back.
                tokio::task::yield_now().await;
            }
            let h = pool.try_submit_with(|| async {}, opts);
            assert!(
                h.is_ok(),
                "{what}: no room once the handle resolved: {:?}",
                h.err()
            );
            within(&what, h.unwrap()).await.unwrap();
            pool.shutdown().await;
        }
    }
}

/// A storm on a multi-thread runtime: 300 submitters of random priority, key and weight,
/// some with a short deadline, some dropped at a random moment (a `select!` lost), into
/// each pool (2 places, one key limited to 1, a weight capacity of 3), while tasks end,
/// panic and are aborted. Every submitter returns (no lost wake-up), every refusal is a
/// timeout, and afterwards no place, key count or weight is left taken: the pool takes
/// as many keyed, full-weight tasks as before, one at a time, and then is empty.
#[test]
fn a_storm_of_waiters_with_options_leaves_no_place_key_or_weight_taken() {
    support::hide_panics(PANICS);
    for round in 0..3u64 {
        for kind in 0..3 {
            let pool = match kind {
                0 => Pool::Common(
                    support::common_builder(2, 0)
                        .max_per_key(1)
                        .weight_capacity(3)
                        .build(),
                ),
                1 => Pool::NoQueue(
                    NoQueueAioPool::builder()
                        .max_concurrency(2)
                        .max_per_key(1)
                        .weight_capacity(3)
                        .process_wide(false)
                        .build(),
                ),
                _ => Pool::Smart(
                    SmartAioPool::builder()
                        .max_concurrency(2)
                        .max_queue_size(0)
                        .max_per_key(1)
                        .weight_capacity(3)
                        .process_wide(false)
                        .auto_shutdown(false)
                        .build(),
                ),
            };
            let what = format!("{} round {round}", pool.name());
            let p = pool.clone();
            let w = what.clone();
            support::on_thread_within(&what, 30, move || {
                support::multi_thread_of(4).block_on(async move {
                    let what = w.as_str();
                    let mut rng = support::Rng::new(round * 7 + kind as u64);
                    let mut joins = Vec::new();
                    for i in 0..300u64 {
                        let mut opts = SubmitOptions::new()
                            .priority(rng.below(5) as i32 - 2)
                            .weight(1 + rng.below(3) as u32);
                        if rng.chance(30) {
                            opts = opts.key("k");
                        }
                        if rng.chance(30) {
                            opts = opts.timeout(Duration::from_micros(100 + rng.below(2000)));
                        }
                        let dropped_after = rng
                            .chance(20)
                            .then(|| Duration::from_micros(50 + rng.below(2000)));
                        let (ms, panics, aborted) = (rng.below(3), rng.chance(10), rng.chance(10));
                        let submit = p.submit_with(
                            move || async move {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                                if panics {
                                    panic!("waiting_for_room: the filler panics");
                                }
                            },
                            opts,
                        );
                        joins.push(tokio::spawn(async move {
                            let submitted = match dropped_after {
                                Some(d) => tokio::select! {
                                    r = submit => Some(r),
                                    _ = tokio::time::sleep(d) => None,
                                },
                                None => Some(submit.await),
                            };
                            match submitted {
                                Some(Ok(h)) => {
                                    if aborted {
                                        h.abort();
                                    }
                                    let _ = h.await;
                                    Ok(())
                                }
                                Some(Err(kind)) => Err(kind),
                                None => Ok(()),
                            }
                        }));
                        if i % 16 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    for j in joins {
                        let r = within(what, j).await.unwrap();
                        assert!(
                            matches!(r, Ok(()) | Err(SubmitErrorKind::TimedOut)),
                            "{what}: {r:?}"
                        );
                    }
                    // Nothing left taken: two places, a key count of 0, the full weight.
                    let mut hs = Vec::new();
                    for _ in 0..2 {
                        let h = p.try_submit_with(std::future::pending::<()>, SubmitOptions::new());
                        hs.push(
                            h.unwrap_or_else(|e| panic!("{what}: a place is left taken: {e:?}")),
                        );
                    }
                    for h in &hs {
                        h.abort();
                    }
                    while p.running() != 0 {
                        tokio::task::yield_now().await;
                    }
                    let h = within(
                        what,
                        p.submit_with(|| async {}, SubmitOptions::new().key("k").weight(3)),
                    )
                    .await
                    .unwrap();
                    within(what, h).await.unwrap();
                    p.shutdown().await;
                })
            });
        }
    }
}

/// In a pool with a queue (one slot, one queued place), room appears when the queued
/// task is aborted, or when a `cancel_all` ends both: the waiting submitters get in by
/// priority, first come first served among equals, and their tasks start in that order
/// (the queue orders them the same way).
#[tokio::test(start_paused = true)]
async fn waiters_get_in_by_priority_when_a_queued_task_is_aborted_or_all_are_cancelled() {
    for cancel_all in [false, true] {
        for pool in Pool::all(1, 1, None) {
            let what = format!("{} cancel_all {cancel_all}", pool.name());
            let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
            let running = pool
                .submit_with(gated(rx, || {}), SubmitOptions::new())
                .await
                .unwrap();
            tokio::task::yield_now().await;
            let queued = pool
                .submit_with(std::future::pending::<()>, SubmitOptions::new().priority(9))
                .await
                .unwrap();
            let order = Arc::new(Mutex::new(Vec::new()));
            let prios = [0, 5, 0, 5, -1, 7];
            let mut subs = Vec::new();
            for (i, p) in prios.iter().enumerate() {
                let mut s = pool.submit_with(records(&order, i), SubmitOptions::new().priority(*p));
                assert!(poll_once(&mut s).is_pending(), "{what}: found room");
                subs.push(s);
            }
            if cancel_all {
                within(&what, pool.cancel_all()).await;
            } else {
                queued.abort();
                running.abort();
            }
            let handles = within(&what, futures_util::future::join_all(subs)).await;
            for h in handles {
                within(&what, h.unwrap()).await.unwrap();
            }
            assert_eq!(*order.lock().unwrap(), vec![5, 1, 3, 0, 2, 4], "{what}");
            pool.shutdown().await;
        }
    }
}

/// Panics in `Drop` when dropped (the task's future, aborted).
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("waiting_for_room: keyed panic");
        }
    }
}

/// A task whose future panics when it is dropped, aborted while running or while held
/// back by its key, still gives its place and its key back: the submitters waiting for
/// room get in by priority, and the key runs again.
#[tokio::test(start_paused = true)]
async fn a_task_whose_drop_panics_gives_its_place_and_key_back_when_aborted() {
    support::hide_panics(PANICS);
    for pool in Pool::all(2, 0, Some(1)) {
        let what = pool.name();
        let key = || SubmitOptions::new().key("k");
        let make = || {
            let held = PanicsOnDrop;
            async move {
                std::future::pending::<()>().await;
                drop(held);
            }
        };
        let running = pool.submit_with(make, key()).await.unwrap();
        tokio::task::yield_now().await;
        let held = pool.submit_with(make, key()).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut low = pool.submit_with(records(&order, 0), key().priority(-1));
        let mut high = pool.submit_with(records(&order, 1), key().priority(1));
        assert!(poll_once(&mut low).is_pending() && poll_once(&mut high).is_pending());
        held.abort();
        running.abort();
        let (low, high) = within(what, futures_util::future::join(low, high)).await;
        within(what, high.unwrap()).await.unwrap();
        within(what, low.unwrap()).await.unwrap();
        assert_eq!(*order.lock().unwrap(), vec![1, 0], "{what}");
        pool.shutdown().await;
    }
}

/// Limitation 331 (documented in the crate docs' "Guarantees", `SubmitOptions::timeout`
/// and the README): a place is granted to the first waiting submitter by priority
/// whatever runs its future, as with tokio's fair `Semaphore`. One waiting in a task of a
/// current-thread runtime that is alive but no longer driven (its `block_on` returned:
/// one `block_on` per request) is granted the place freed by the end of a task that ran
/// elsewhere, and holds it until that runtime is driven again: a submitter of a driven
/// runtime that came later waits meanwhile, and its deadline may pass with the pool
/// idle. Pinned as documented: the deadline passes with the pool running nothing, and
/// once the waiter's runtime is driven again its submit takes the place and runs.
#[test]
fn a_place_granted_to_a_waiter_of_a_runtime_not_driven_is_held_until_that_runtime_is_driven() {
    let pool = support::common_local(1, 0);
    let driven = current_thread();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let filler = driven
        .block_on(pool.submit(async move {
            let _ = rx.await;
        }))
        .unwrap();
    // Runtime b: a task waits for room (say a request's spawned task), then b's
    // `block_on` returns and b is not driven again for a while.
    let b = current_thread();
    let p = pool.clone();
    let waiting_on_b = b.spawn(async move {
        let h = p.submit(async { 1u32 }).await.map_err(|e| e.kind())?;
        Ok::<_, SubmitErrorKind>(h.await)
    });
    b.block_on(async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
    assert!(!waiting_on_b.is_finished());
    let (late, stats) = driven.block_on(async {
        let mut late = Box::pin(pool.submit_with(
            async { 2u32 },
            SubmitOptions::new().timeout(Duration::from_millis(200)),
        ));
        assert!(poll_once(&mut late).is_pending());
        // The filler ends on the driven runtime: its place goes to b's waiter.
        tx.send(()).unwrap();
        within("the filler", filler).await.unwrap();
        let late = within("the late submit", late).await.map(|h| h.detach());
        (late.map_err(|e| e.kind()), pool.stats())
    });
    assert_eq!(
        late.err(),
        Some(SubmitErrorKind::TimedOut),
        "the late submit got the place held for b's waiter ({stats:?})"
    );
    assert_eq!((stats.running, stats.queued), (0, 0), "{stats:?}");
    assert_eq!(
        pool.try_submit(async { 3u32 })
            .map(|h| h.detach())
            .map_err(|e| e.kind())
            .err(),
        Some(TrySubmitErrorKind::Full),
        "the place is b's waiter's until b is driven"
    );
    // b driven again: its waiter takes the place, and its task runs there.
    let out = b.block_on(async { within("b's waiter", waiting_on_b).await.unwrap() });
    assert_eq!(out.unwrap().unwrap(), 1);
    let stats = pool.stats();
    assert_eq!((stats.completed, stats.running), (2, 0), "{stats:?}");
}
