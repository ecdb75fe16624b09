//! A review of a task group's `submit_with` / `try_submit_with` (9b94219, with the
//! refactor of the pool's own `submit_with` into `Core::submit_ready_with`) and of the
//! pools' `Debug` through `Engine::for_debug` and the `UnwindSafe` impls (37ed99d): one
//! finding (`a_busy_pools_debug_prints_its_stats`, which failed before its fix) and pins.
//! Deterministic where it can be (paused time, bounded waits); the `Debug` under load test
//! runs 600,000 jobs on real threads (about 20 s in a debug build), and the shared line of
//! waiters gives a blocking thread 300 ms to start waiting.
//! `cargo nextest run -p nb-aiopool --all-features --test group_options_and_pool_debug` (the tracing
//! and metrics tests need their features).

mod support;

#[cfg(feature = "tracing")]
mod collector;
#[cfg(feature = "metrics")]
mod metric_figures;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use nb_aiopool::{CommonAioPool, SmartAioPool, SubmitErrorKind, SubmitOptions, TrySubmitErrorKind};
use support::{flow_pools, make, per_pool, within, FlowLimits, Gate, Make, Pool};
use tokio::time::Instant;

/// A job that returns `v` at once.
fn value<T: Clone + Send + Sync + 'static>(v: T) -> Make<T> {
    make(move || std::future::ready(v.clone()))
}

/// A job that waits at `gate`, then returns `v`.
fn gated<T: Clone + Send + Sync + 'static>(gate: &Gate, v: T) -> Make<T> {
    let gate = gate.clone();
    make(move || {
        let (wait, v) = (gate.wait(), v.clone());
        async move {
            wait.await;
            v
        }
    })
}

/// A job that sleeps `ms`, then returns `v`.
fn after<T: Clone + Send + Sync + 'static>(ms: u64, v: T) -> Make<T> {
    make(move || {
        let v = v.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            v
        }
    })
}

/// Polls `fut` once: its output if it is ready at that poll.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

/// Lets the runtime run everything that is ready (paused time does not move).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Pool {
    /// The pool's own `submit_with(job, opts)`, as a boxed future owning a clone of the
    /// pool: the refusal's kind, or the task's handle.
    fn own_submit_with<T: Send + 'static>(
        &self,
        job: Make<T>,
        opts: SubmitOptions,
    ) -> Boxed<Result<nb_aiopool::TaskHandle<T>, SubmitErrorKind>> {
        let pool = self.clone();
        Box::pin(async move {
            per_pool!(
                &pool,
                |p| p.submit_with(job(), opts).await.map_err(|e| e.kind()),
                |p| p
                    .submit_with(move || job(), opts)
                    .await
                    .map_err(|e| e.kind())
            )
        })
    }

    /// The pool's own `try_submit` of `job`: the refusal's kind, or the handle.
    fn own_try_submit<T: Send + 'static>(
        &self,
        job: Make<T>,
    ) -> Result<nb_aiopool::TaskHandle<T>, TrySubmitErrorKind> {
        per_pool!(self, |p| p.try_submit(job()).map_err(|e| e.kind()), |p| p
            .try_submit(move || job())
            .map_err(|e| e.kind()))
    }

    fn is_shut(&self) -> bool {
        per_pool!(self, |p| p.is_closed(), |p| p.is_closed())
    }

    /// Cancels what runs and shuts the pool down (bounded by [`within`]).
    async fn shut_down(&self) {
        within("cancel_all", self.cancel_all_now()).await;
        let what = format!("{}: shutdown", self.name());
        per_pool!(self, |p| within(&what, p.shutdown()).await, |p| within(
            &what,
            p.shutdown()
        )
        .await)
    }

    fn debug(&self) -> String {
        per_pool!(self, |p| format!("{p:?}"), |p| format!("{p:?}"))
    }
}

/// How many tasks `pool` takes now through `try_submit` (each never ends until the pool
/// is shut down): its free places.
fn free_places(pool: &Pool, most: usize) -> usize {
    let mut n = 0;
    while n <= most {
        match pool.own_try_submit(make(std::future::pending::<()>)) {
            Ok(h) => {
                drop(h);
                n += 1;
            }
            Err(_) => break,
        }
    }
    n
}

// ----- which refusal wins ---------------------------------------------------------------------

/// A cancel-on-error group whose only running task fails after exactly 1 s, and a
/// `submit_with` of the group waiting for room with a 1 s timeout: the trip and the
/// deadline come at the same instant. The docs promise `Closed` "with cancel-on-error a
/// task of the group failed, also while this submit waited for room", and `TimedOut`
/// "when the options' timeout passes before there is room"; they do not say which wins
/// at one instant.
///
/// Pinned: the deadline wins (`TimedOut` at 1 s, the task back), on the three pools, as
/// the pool's own `submit_with` gives `TimedOut` when room comes at its deadline; no
/// place is lost either way (the pool takes as many tasks as before).
#[tokio::test(start_paused = true)]
async fn a_trip_at_the_deadline_gives_timed_out_as_room_at_the_deadline_does() {
    for pool in flow_pools(1, 0, 1, FlowLimits::default()) {
        let name = pool.name();
        let mut group = pool.task_group::<Result<u32, u32>>().cancel_on_error();
        within(
            "the failing task's submit",
            group.submit(after(1000, Err(1))),
        )
        .await
        .unwrap();
        let t0 = Instant::now();
        let opts = SubmitOptions::new().timeout(Duration::from_secs(1));
        let refused = within(
            "a waiting submit_with",
            group.submit_with(value(Ok(2)), opts),
        )
        .await
        .expect_err("a submit_with into a full pool whose group tripped was accepted");
        assert_eq!(
            (refused.kind, t0.elapsed()),
            (SubmitErrorKind::TimedOut, Duration::from_secs(1)),
            "{name}: the trip and the deadline at one instant"
        );
        assert_eq!(refused.back.await, Ok(2), "{name}: the task came back");
        let results = within("join_all", group.join_all()).await;
        assert_eq!(results.len(), 1, "{name}");
        // The pool's own: its task ends at 1 s, the waiter's deadline is 1 s.
        let _held = pool
            .own_submit_with(after(1000, 1u32), SubmitOptions::new())
            .await
            .unwrap();
        let t0 = Instant::now();
        let opts = SubmitOptions::new().timeout(Duration::from_secs(1));
        let own = pool.own_submit_with(value(2u32), opts).await.map(|_| ());
        assert_eq!(
            (own, t0.elapsed()),
            (Err(SubmitErrorKind::TimedOut), Duration::from_secs(1)),
            "{name}: room at the pool's own submit_with's deadline"
        );
        settle().await;
        assert_eq!(free_places(&pool, 4), 1, "{name}: a place was lost");
        pool.shut_down().await;
    }
}

/// A cancel-on-error group's task fails while a `submit_with` of the group waits for room
/// (no timeout): the failing task's end frees the place the submit waits for, at the
/// instant of the trip. The docs: `Closed` "with cancel-on-error a task of the group
/// failed, also while this submit waited for room", the task back.
///
/// Pinned: `Closed` with the task back, on the three pools, with and without a timeout,
/// and the place granted to the refused submit is given back (the pool still takes as
/// many tasks as it has places); `submitted` counts only the group's one task.
#[tokio::test(start_paused = true)]
async fn a_submit_with_refused_by_a_trip_gives_back_the_place_it_was_granted() {
    for timeout in [None, Some(Duration::from_secs(10))] {
        for pool in flow_pools(1, 0, 1, FlowLimits::default()) {
            let name = format!("{} (timeout {timeout:?})", pool.name());
            let mut group = pool.task_group::<Result<u32, u32>>().cancel_on_error();
            within(
                "the failing task's submit",
                group.submit(after(1000, Err(1))),
            )
            .await
            .unwrap();
            let mut opts = SubmitOptions::new().priority(3).key("k");
            if let Some(t) = timeout {
                opts = opts.timeout(t);
            }
            let t0 = Instant::now();
            let refused = within(
                "a waiting submit_with",
                group.submit_with(value(Ok(2)), opts),
            )
            .await
            .expect_err("a submit_with of a tripped group was accepted");
            assert_eq!(
                (refused.kind, t0.elapsed()),
                (SubmitErrorKind::Closed, Duration::from_secs(1)),
                "{name}"
            );
            assert_eq!(refused.back.await, Ok(2), "{name}: the task came back");
            settle().await;
            assert_eq!(pool.stats().submitted, 1, "{name}: submitted");
            assert_eq!(free_places(&pool, 4), 1, "{name}: a place was lost");
            drop(group);
            pool.shut_down().await;
        }
    }
}

// ----- cancel safety ------------------------------------------------------------------------

/// Which submit is dropped after its place was granted.
#[derive(Debug, Clone, Copy)]
enum Dropped {
    /// The pool's own `submit_with`.
    Pools,
    /// A group's, without a watcher.
    Group,
    /// A cancel-on-panic group's (the watched path).
    Watched,
}

/// Two submitters wait for room in a full pool, A with priority 5 (the pool's own
/// `submit_with`, or a group's, with or without a watcher and a timeout) and B with
/// priority 1 (the pool's own). The running task ends: its place is granted to A, which
/// is then dropped without being polled again. The docs (cancel safety): "dropped while
/// waiting for room, it submits nothing (the future is dropped with it, and the place in
/// line goes to the next submitter)".
///
/// Pinned: B gets the place (it stays pending while A holds it), on the three pools and
/// for the four kinds of A, and no place is lost.
#[tokio::test(start_paused = true)]
async fn a_submit_with_dropped_after_its_place_was_granted_passes_it_on() {
    for a_kind in [Dropped::Pools, Dropped::Group, Dropped::Watched] {
        for timeout in [None, Some(Duration::from_secs(10))] {
            for pool in flow_pools(1, 0, 1, FlowLimits::default()) {
                let name = format!("{} ({a_kind:?}, timeout {timeout:?})", pool.name());
                let gate = Gate::new();
                let held = pool
                    .own_submit_with(gated(&gate, 0u32), SubmitOptions::new())
                    .await
                    .unwrap();
                settle().await;
                let mut opts = SubmitOptions::new().priority(5);
                if let Some(t) = timeout {
                    opts = opts.timeout(t);
                }
                let mut group = pool
                    .task_group::<u32>()
                    .cancel_on_panic(matches!(a_kind, Dropped::Watched));
                // The group's future borrows the group, which outlives it.
                let mut a: Pin<Box<dyn Future<Output = Result<(), SubmitErrorKind>> + Send + '_>> =
                    match a_kind {
                        Dropped::Pools => {
                            let f = pool.own_submit_with(value(1u32), opts);
                            Box::pin(async move { f.await.map(drop) })
                        }
                        _ => {
                            let f = group.submit_with(value(1u32), opts);
                            Box::pin(async move { f.await.map(drop).map_err(|r| r.kind) })
                        }
                    };
                assert!(poll_once(&mut a).await.is_pending(), "{name}: A waits");
                let b_pool = pool.clone();
                let b = tokio::spawn(async move {
                    b_pool
                        .own_submit_with(value(2u32), SubmitOptions::new().priority(1))
                        .await
                        .map(drop)
                });
                settle().await;
                assert!(!b.is_finished(), "{name}: B waits");
                gate.open();
                within("the held task", held).await.unwrap();
                settle().await;
                assert!(
                    !b.is_finished(),
                    "{name}: B got the place while A, of a higher priority, waited for it"
                );
                drop(a);
                let got = within("B, once A was dropped", b).await.unwrap();
                assert_eq!(got, Ok(()), "{name}: B");
                drop(group);
                settle().await;
                assert_eq!(free_places(&pool, 4), 1, "{name}: a place was lost");
                pool.shut_down().await;
            }
        }
    }
}

// ----- the refusals the observability features see ------------------------------------------

/// The reasons of the `submit rejected` events recorded so far.
#[cfg(feature = "tracing")]
fn reasons(log: &collector::Collector) -> Vec<String> {
    log.events_with("submit rejected")
        .into_iter()
        .map(|e| e.fields.get("reason").unwrap_or_default().to_string())
        .collect()
}

/// With `tracing`, the crate docs promise a `submit rejected` event (with its reason) for
/// every refused submit; the group's `submit_with` "as the pool's own". A group's
/// `submit_with` and `try_submit_with`, with and without a watcher, refused for each
/// reason in turn: too heavy, full (try), timed out, closed (the pool shut down, or,
/// watched, the group tripped, also while the submit waited).
///
/// Pinned: one event per refusal, with its reason, on the three pools.
#[cfg(feature = "tracing")]
#[test]
fn every_refusal_of_a_groups_submit_with_emits_one_event_with_its_reason() {
    let _serial = support::serial();
    for watched in [false, true] {
        let limits = FlowLimits {
            weight_capacity: Some(2),
            ..FlowLimits::default()
        };
        for pool in support::paused_runtime().block_on(async { flow_pools(1, 0, 1, limits) }) {
            let name = format!("{} (watched: {watched})", pool.name());
            let log = collector::Collector::default();
            tracing::subscriber::with_default(log.clone(), || {
                support::paused_runtime().block_on(async {
                    let mut group = pool.task_group::<Result<u32, u32>>();
                    if watched {
                        group = group.cancel_on_error();
                    }
                    let mut expect: Vec<&str> = Vec::new();
                    let mut step = |what: &str, kind: String, want: &'static str| {
                        expect.push(want);
                        assert_eq!(
                            reasons(&log),
                            expect,
                            "{name}: {what} (refused {kind}) did not emit one `{want}` event"
                        );
                    };
                    let heavy = || SubmitOptions::new().weight(3);
                    let r = group.submit_with(value(Ok(1)), heavy()).await.unwrap_err();
                    step(
                        "a too heavy submit_with",
                        format!("{:?}", r.kind),
                        "too_heavy",
                    );
                    let (k, _) = group.try_submit_with(value(Ok(1)), heavy()).unwrap_err();
                    step("a too heavy try_submit_with", format!("{k:?}"), "too_heavy");
                    let gate = Gate::new();
                    let held = pool
                        .own_submit_with(gated(&gate, Ok::<u32, u32>(0)), SubmitOptions::new())
                        .await
                        .unwrap();
                    settle().await;
                    let (k, _) = group
                        .try_submit_with(value(Ok(1)), SubmitOptions::new())
                        .unwrap_err();
                    step(
                        "a try_submit_with into a full pool",
                        format!("{k:?}"),
                        "full",
                    );
                    let opts = SubmitOptions::new().timeout(Duration::from_millis(100));
                    let r = within("a timed submit", group.submit_with(value(Ok(1)), opts))
                        .await
                        .unwrap_err();
                    step(
                        "a submit_with that timed out",
                        format!("{:?}", r.kind),
                        "timed_out",
                    );
                    if watched {
                        // A task of the group fails while a submit_with waits for room.
                        let fail = make(|| async { Err(7) });
                        let mut waiting = group.submit_with(fail, SubmitOptions::new());
                        assert!(poll_once(&mut waiting).await.is_pending());
                        gate.open();
                        within("the failing task's submit", waiting).await.unwrap();
                        within("the held task", held).await.unwrap().unwrap();
                        let _ = within("the failure", group.join_next()).await;
                        let gate = Gate::new();
                        let _held = pool
                            .own_submit_with(gated(&gate, Ok::<u32, u32>(0)), SubmitOptions::new())
                            .await
                            .unwrap();
                        settle().await;
                        let r = within(
                            "a tripped submit",
                            group.submit_with(value(Ok(1)), SubmitOptions::new()),
                        )
                        .await
                        .unwrap_err();
                        step(
                            "a submit_with of a tripped group",
                            format!("{:?}", r.kind),
                            "closed",
                        );
                        let (k, _) = group
                            .try_submit_with(value(Ok(1)), SubmitOptions::new())
                            .unwrap_err();
                        step(
                            "a try_submit_with of a tripped group",
                            format!("{k:?}"),
                            "closed",
                        );
                        gate.open();
                    } else {
                        gate.open();
                        within("the held task", held).await.unwrap().unwrap();
                    }
                    pool.shut_down().await;
                    let r = within(
                        "a submit after shutdown",
                        group.submit_with(value(Ok(1)), SubmitOptions::new()),
                    )
                    .await
                    .unwrap_err();
                    step(
                        "a submit_with into a shut pool",
                        format!("{:?}", r.kind),
                        "closed",
                    );
                    let (k, _) = group
                        .try_submit_with(value(Ok(1)), SubmitOptions::new())
                        .unwrap_err();
                    step(
                        "a try_submit_with into a shut pool",
                        format!("{k:?}"),
                        "closed",
                    );
                });
            });
        }
    }
}

// ----- the order of the refusals --------------------------------------------------------------

/// A group's `submit_with` and `try_submit_with` of a task too heavy for the pool, into a
/// pool that was shut down. The pool's own `submit_with` checks the weight first
/// (`TooHeavy`, "at once"); the group's "as the pool's own".
///
/// Pinned: `TooHeavy` before `Closed`, with and without a watcher, on the three pools,
/// as the pool's own `submit_with` gives.
#[tokio::test(start_paused = true)]
async fn too_heavy_comes_before_closed_after_a_shutdown() {
    let limits = FlowLimits {
        weight_capacity: Some(2),
        ..FlowLimits::default()
    };
    for watched in [false, true] {
        for pool in flow_pools(1, 0, 1, limits) {
            let name = format!("{} (watched: {watched})", pool.name());
            let mut group = pool.task_group::<u32>().cancel_on_panic(watched);
            pool.shut_down().await;
            assert!(pool.is_shut());
            let heavy = || SubmitOptions::new().weight(3);
            let own = pool.own_submit_with(value(1), heavy()).await.map(drop);
            assert_eq!(
                own,
                Err(SubmitErrorKind::TooHeavy),
                "{name}: the pool's own"
            );
            let r = within("a submit_with", group.submit_with(value(1), heavy()))
                .await
                .unwrap_err();
            assert_eq!(
                r.kind,
                SubmitErrorKind::TooHeavy,
                "{name}: the group's submit_with"
            );
            let (k, _) = group.try_submit_with(value(1), heavy()).unwrap_err();
            assert_eq!(
                k,
                TrySubmitErrorKind::TooHeavy,
                "{name}: the group's try_submit_with"
            );
            let r = within(
                "a submit_with",
                group.submit_with(value(1), SubmitOptions::new()),
            )
            .await
            .unwrap_err();
            assert_eq!(r.kind, SubmitErrorKind::Closed, "{name}: a light one");
        }
    }
}

// ----- NoRuntime ----------------------------------------------------------------------------------

/// A pool whose only runtime has ended, and a group's `submit_with` / `try_submit_with`
/// polled on a plain thread (no tokio runtime): the pool's own `submit_with` refuses with
/// `NoRuntime` (the task back); the group's "as the pool's own".
///
/// Pinned: `NoRuntime` with the task back, with and without a watcher, on the three
/// pools; nothing is counted as submitted.
#[test]
fn a_groups_submit_with_outside_any_runtime_is_no_runtime() {
    for watched in [false, true] {
        let rt = support::current_thread();
        let pools = rt.block_on(async {
            let pools = flow_pools(2, 2, 2, FlowLimits::default());
            for pool in &pools {
                // Each pool ran a task on `rt`: its home.
                let h = pool
                    .own_submit_with(value(0u32), SubmitOptions::new())
                    .await
                    .unwrap();
                within("a first task", h).await.unwrap();
            }
            pools
        });
        drop(rt);
        for pool in pools {
            let name = format!("{} (watched: {watched})", pool.name());
            let before = pool.stats().submitted;
            let mut group = pool.task_group::<u32>().cancel_on_panic(watched);
            let opts = SubmitOptions::new()
                .key("k")
                .timeout(Duration::from_secs(1));
            let r = support::plain_block_on(group.submit_with(value(1), opts.clone()))
                .expect_err("a group's submit_with with no runtime alive was accepted");
            assert_eq!(
                r.kind,
                SubmitErrorKind::NoRuntime,
                "{name}: the group's submit_with"
            );
            assert_eq!(
                support::plain_block_on(r.back),
                1,
                "{name}: the task came back"
            );
            let (k, _) = group
                .try_submit_with(value(1), opts.clone())
                .expect_err("a group's try_submit_with with no runtime alive was accepted");
            assert_eq!(
                k,
                TrySubmitErrorKind::NoRuntime,
                "{name}: the group's try_submit_with"
            );
            let own = support::plain_block_on(pool.own_submit_with(value(1), opts)).map(drop);
            assert_eq!(
                own,
                Err(SubmitErrorKind::NoRuntime),
                "{name}: the pool's own"
            );
            assert_eq!(
                pool.stats().submitted,
                before,
                "{name}: counted as submitted"
            );
            assert!(group.is_empty(), "{name}: the group holds a refused task");
        }
    }
}

// ----- join_all ---------------------------------------------------------------------------------

/// A group's tasks submitted with different priorities while the pool's one slot is
/// busy: they start by priority (the queue's order), and `join_all` gives "every remaining
/// result, in submission order".
///
/// Pinned: on CommonAioPool and SmartAioPool (NoQueueAioPool has no queue), with and
/// without a watcher.
#[tokio::test(start_paused = true)]
async fn join_all_gives_submission_order_whatever_the_priorities() {
    for watched in [false, true] {
        for pool in flow_pools(1, 8, 1, FlowLimits::default()) {
            if matches!(pool, Pool::NoQueue(_)) {
                continue;
            }
            let name = format!("{} (watched: {watched})", pool.name());
            let gate = Gate::new();
            let held = pool
                .own_submit_with(gated(&gate, 0u32), SubmitOptions::new())
                .await
                .unwrap();
            settle().await;
            let started = Arc::new(Mutex::new(Vec::new()));
            let mut group = pool.task_group::<u32>().cancel_on_panic(watched);
            for (v, priority) in [(1u32, 1), (2, 9), (3, 5), (4, 9), (5, -2)] {
                let started = started.clone();
                let job = make(move || {
                    let started = started.clone();
                    async move {
                        started.lock().unwrap().push(v);
                        v
                    }
                });
                within(
                    "a submit_with",
                    group.submit_with(job, SubmitOptions::new().priority(priority)),
                )
                .await
                .unwrap();
            }
            gate.open();
            within("the held task", held).await.unwrap();
            let all: Vec<u32> = within("join_all", group.join_all())
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(all, [1, 2, 3, 4, 5], "{name}: join_all's order");
            assert_eq!(
                *started.lock().unwrap(),
                [2, 4, 3, 1, 5],
                "{name}: the tasks did not start by priority"
            );
            pool.shut_down().await;
        }
    }
}

// ----- Debug ---------------------------------------------------------------------------------------

/// Finding. A busy pool on a 2-worker runtime runs 600,000 tiny jobs (1M in the review) (four submitters) while
/// another thread prints it with `{:?}` every millisecond (a log line). 37ed99d made the
/// pools' `Debug` take the engine's lock with `try_lock`, retrying for up to 10 ms, and
/// print `stats: <locked>` if it stays taken; its comment: "Other threads hold it for
/// short critical sections only, which the retries wait out" (`Engine::for_debug`,
/// src/engine/figures.rs).
///
/// What happened: about 1 log line in 100 said `<locked>`, on the three pools ("common: 43
/// of 2361 log lines printed the busy pool's stats as <locked>; no_queue: 111 of 9362 ...;
/// smart: 34 of 3669 ..."), each such print costing the printing thread 10 ms of
/// `yield_now` retries (the longest print took 21 ms). `std`'s mutex is not fair to a
/// `try_lock`: the workers' and submitters' short critical sections follow each other.
/// Fixed: a thread that is not panicking cannot hold the lock (no user code runs under
/// it but the observers', which must not call back into the pool), so it waits for the
/// lock as `stats()` does; only a panicking thread (a panic hook, a `Drop` during
/// unwinding: finding 382's case) retries and may print `<locked>`.
#[test]
fn a_busy_pools_debug_prints_its_stats() {
    const JOBS: usize = 600_000;
    const SUBMITTERS: usize = 4;
    let mut wrong = Vec::new();
    for kind in 0..3 {
        let rt = support::multi_thread_of(2);
        let pool = match kind {
            0 => Pool::Common(
                CommonAioPool::builder()
                    .max_concurrency(2)
                    .max_queue_size(64)
                    .process_wide(false)
                    .build(),
            ),
            1 => Pool::NoQueue(
                nb_aiopool::NoQueueAioPool::builder()
                    .max_concurrency(2)
                    .process_wide(false)
                    .build(),
            ),
            _ => Pool::Smart(
                SmartAioPool::builder()
                    .max_concurrency(2)
                    .max_queue_size(64)
                    .process_wide(false)
                    .auto_shutdown(false)
                    .build(),
            ),
        };
        let done = Arc::new(AtomicBool::new(false));
        let printer = {
            let (pool, done) = (pool.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut prints, mut locked, mut longest) = (0usize, 0usize, Duration::ZERO);
                while !done.load(Ordering::SeqCst) {
                    let t = std::time::Instant::now();
                    let line = pool.debug();
                    longest = longest.max(t.elapsed());
                    prints += 1;
                    if line.contains("<locked>") {
                        locked += 1;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                (prints, locked, longest)
            })
        };
        let p = pool.clone();
        let ran = support::on_thread_within("the jobs", 300, move || {
            rt.block_on(async move {
                let mut submitters = Vec::new();
                for _ in 0..SUBMITTERS {
                    let p = p.clone();
                    submitters.push(tokio::spawn(async move {
                        for _ in 0..JOBS / SUBMITTERS {
                            let job = make(|| async {});
                            drop(p.own_submit_with(job, SubmitOptions::new()).await.unwrap());
                        }
                    }));
                }
                for s in submitters {
                    s.await.unwrap();
                }
                p.wait_within().await;
                p.stats().completed
            })
        });
        done.store(true, Ordering::SeqCst);
        let (prints, locked, longest) = printer.join().unwrap();
        eprintln!(
            "{}: {ran} jobs, {prints} prints, {locked} <locked>, longest print {longest:?}",
            pool.name()
        );
        if locked > 0 {
            wrong.push(format!(
                "{}: {locked} of {prints} log lines printed the busy pool's stats as <locked>",
                pool.name()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("; "));
}

/// An elastic SmartAioPool's workers idle past `idle_timeout`: `worker_count()` retires
/// them when it is read ("done when the worker count is looked at"); the pool's `{:?}`,
/// which now reads the figures with `for_debug`, prints `workers` the same way.
///
/// Pinned: `{:?}` after the idle time prints `workers: 1` (min_workers), as
/// `worker_count()` of a twin pool says 1; the busy count drops to 0.
#[tokio::test(start_paused = true)]
async fn a_smart_pools_debug_retires_idle_workers_as_worker_count_does() {
    let twin = || {
        SmartAioPool::builder()
            .max_concurrency(4)
            .min_workers(1)
            .idle_timeout(Duration::from_secs(1))
            .process_wide(false)
            .auto_shutdown(false)
            .build()
    };
    let (a, b) = (twin(), twin());
    for pool in [&a, &b] {
        let mut hs = Vec::new();
        for _ in 0..4 {
            hs.push(
                pool.submit(|| tokio::time::sleep(Duration::from_millis(10)))
                    .await
                    .unwrap(),
            );
        }
        for h in hs {
            within("a task", h).await.unwrap();
        }
    }
    assert!(format!("{a:?}").contains("workers: 4"), "{a:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let line = format!("{a:?}");
    assert_eq!(b.worker_count(), 1, "worker_count after the idle time");
    assert!(
        line.contains("workers: 1,"),
        "the pool's Debug after the idle time: {line}"
    );
    settle().await;
    assert_eq!(a.busy_worker_count(), 0);
    a.shutdown().await;
    b.shutdown().await;
}

// ----- panics in users' drops and callbacks, then the pool used again ---------------------------

/// The message of every panic these tests raise on purpose.
const DROP_PANICS: &str = "review: a drop that panics";

/// A value whose `Drop` panics.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("{}", DROP_PANICS);
        }
    }
}

/// The pool after its users' code panicked: it runs 20 more tasks, `wait()` returns, its
/// stats add up and every place is free again.
async fn still_works(pool: &Pool, places: usize, name: &str) {
    let counter = support::Counter::default();
    let mut hs = Vec::new();
    for _ in 0..20 {
        let c = counter.clone();
        hs.push(
            pool.own_submit_with(make(move || c.task()), SubmitOptions::new())
                .await
                .unwrap_or_else(|k| panic!("{name}: a submit after the panic was refused: {k:?}")),
        );
    }
    for h in hs {
        within("a task after the panic", h)
            .await
            .unwrap_or_else(|e| panic!("{name}: a task after the panic failed: {e:?}"));
    }
    assert_eq!(counter.get(), 20, "{name}");
    pool.wait_within().await;
    settle().await;
    let s = pool.stats();
    assert_eq!(
        (s.queued, s.running),
        (0, 0),
        "{name}: the pool says tasks are left after they all ended: {s:?}"
    );
    assert_eq!(
        s.submitted,
        s.completed + s.panicked + s.cancelled,
        "{name}: the stats do not add up: {s:?}"
    );
    let free = free_places(pool, places + 1);
    assert_eq!(free, places, "{name}: places lost after the panic");
    within("cancel", pool.cancel_all_now()).await;
}

/// A user drops a task's handle (after the task ended), aborts a queued task, and
/// cancels a pool's queued tasks, each inside `catch_unwind`, where the `Drop` of the
/// task's output or future panics; a group holding ended tasks with such outputs is
/// dropped. The pools are `UnwindSafe`: "a pool can be used after a panic caught around
/// its use ... its engine's lock recovers from poisoning (its state is consistent between
/// statements)".
///
/// Pinned: `abort()` and `cancel_all()` do not panic into the caller (the futures are
/// dropped quietly by the pool); each pool, after each of these, still runs tasks,
/// `wait()` returns, its stats add up and no place is lost; a group's drop does not panic.
#[tokio::test(start_paused = true)]
async fn a_pool_is_used_again_after_its_users_drops_panicked() {
    support::hide_panics(&[DROP_PANICS]);
    for pool in flow_pools(1, 2, 3, FlowLimits::default()) {
        let name = pool.name();
        let places = 3;
        // An ended task's output, dropped with its handle.
        let h = pool
            .own_submit_with(make(|| async { PanicsOnDrop }), SubmitOptions::new())
            .await
            .unwrap();
        settle().await;
        let caught = std::panic::catch_unwind(move || drop(h));
        // Either way (it is the user's value): the pool must not mind.
        drop(caught);
        still_works(&pool, places, name).await;
        // A detached task's output, dropped by the pool.
        drop(
            pool.own_submit_with(make(|| async { PanicsOnDrop }), SubmitOptions::new())
                .await
                .unwrap(),
        );
        settle().await;
        still_works(&pool, places, name).await;
        // A queued task whose future's drop panics, aborted (and one cancelled by
        // cancel_all). The Common and Smart pools queue them behind a held task.
        if !matches!(pool, Pool::NoQueue(_)) {
            let gate = Gate::new();
            let held = pool
                .own_submit_with(gated(&gate, 0u32), SubmitOptions::new())
                .await
                .unwrap();
            settle().await;
            /// A queued task whose future's drop panics.
            async fn queued(pool: &Pool) -> nb_aiopool::TaskHandle<u32> {
                let job = make(|| {
                    let p = PanicsOnDrop;
                    async move {
                        let _p = p;
                        0u32
                    }
                });
                pool.own_submit_with(job, SubmitOptions::new())
                    .await
                    .unwrap()
            }
            let a = queued(&pool).await;
            let b = queued(&pool).await;
            assert_eq!(pool.stats().queued, 2, "{name}");
            let caught = std::panic::catch_unwind(|| a.abort());
            assert!(caught.is_ok(), "{name}: abort() of a queued task panicked");
            let cancel = std::panic::catch_unwind(|| {
                let pool = pool.clone();
                per_pool!(&pool, |p| drop(p.cancel_all()), |p| drop(p.cancel_all()))
            });
            assert!(cancel.is_ok(), "{name}: cancel_all() panicked");
            settle().await;
            assert!(within("the aborted task", a).await.is_err(), "{name}");
            assert!(within("the cancelled task", b).await.is_err(), "{name}");
            assert!(within("the held task", held).await.is_err(), "{name}");
            gate.open();
            still_works(&pool, places, name).await;
        }
        // A group of ended tasks with such outputs, dropped.
        let mut group = pool.task_group::<PanicsOnDrop>();
        for _ in 0..2 {
            within(
                "a group submit",
                group.submit_with(
                    make(|| async { PanicsOnDrop }),
                    SubmitOptions::new().key("k"),
                ),
            )
            .await
            .unwrap();
        }
        settle().await;
        let caught = std::panic::catch_unwind(move || drop(group));
        assert!(caught.is_ok(), "{name}: a group's drop panicked");
        still_works(&pool, places, name).await;
        pool.shut_down().await;
    }
}

/// An `on_panic` callback that panics itself, for tasks that panic, on each pool: "a panic
/// inside it is caught and dropped (it must not take the slot task down)".
///
/// Pinned: the pool runs on, counts each panic, and its stats add up.
#[tokio::test(start_paused = true)]
async fn a_panicking_on_panic_callback_leaves_the_pool_working() {
    support::hide_panics(&[DROP_PANICS]);
    let calls = Arc::new(AtomicUsize::new(0));
    let on_panic = {
        let calls = calls.clone();
        move |_: nb_aiopool::TaskId, _: &nb_aiopool::TaskError| {
            calls.fetch_add(1, Ordering::SeqCst);
            panic!("{}", DROP_PANICS);
        }
    };
    let (c, n, s) = support::flow_builders(1, 2, 3, FlowLimits::default());
    let pools = [
        Pool::Common(c.on_panic(on_panic.clone()).build()),
        Pool::NoQueue(n.on_panic(on_panic.clone()).build()),
        Pool::Smart(s.on_panic(on_panic).build()),
    ];
    for pool in pools {
        let name = pool.name();
        calls.store(0, Ordering::SeqCst);
        for _ in 0..3 {
            // Detached: the callback is for panics nobody will see otherwise.
            drop(
                pool.own_submit_with(
                    make(|| async { std::panic::panic_any(DROP_PANICS) }),
                    SubmitOptions::new(),
                )
                .await
                .unwrap(),
            );
        }
        pool.wait_within().await;
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "{name}: on_panic calls");
        assert_eq!(pool.stats().panicked, 3, "{name}: panics counted");
        still_works(&pool, 3, name).await;
        pool.shut_down().await;
    }
}

// ----- one line of waiters ----------------------------------------------------------------------

impl Pool {
    /// The pool's own `blocking_submit_with` of `job` (on the calling thread).
    fn own_blocking_submit_with<T: Send + 'static>(
        &self,
        job: Make<T>,
        opts: SubmitOptions,
    ) -> Result<nb_aiopool::TaskHandle<T>, SubmitErrorKind> {
        per_pool!(
            self,
            |p| p.blocking_submit_with(job(), opts).map_err(|e| e.kind()),
            |p| p
                .blocking_submit_with(move || job(), opts)
                .map_err(|e| e.kind())
        )
    }
}

/// A full pool; a group's `submit_with` of priority 1 waits for room, then a thread's
/// `blocking_submit_with` of priority 5. The docs (`SubmitOptions::priority`): "the
/// submitters waiting for room in a full pool: a higher one gets the next room first",
/// and a group's `submit_with` waits "with the options' priority" in that line.
///
/// Pinned: the first room goes to the blocking thread (priority 5), the next to the
/// group's submit, with and without a watcher, on the three pools. (The thread is given
/// 300 ms to start waiting: its wait cannot be observed.)
#[test]
fn a_groups_submit_with_and_a_blocking_submit_with_share_one_line() {
    for watched in [false, true] {
        let rt = support::current_thread();
        let pools = rt.block_on(async { flow_pools(2, 0, 2, FlowLimits::default()) });
        for pool in pools {
            let name = format!("{} (watched: {watched})", pool.name());
            rt.block_on(async {
                let (g1, g2) = (Gate::new(), Gate::new());
                let h1 = pool.own_submit_with(gated(&g1, 0u32), SubmitOptions::new()).await.unwrap();
                let h2 = pool.own_submit_with(gated(&g2, 0u32), SubmitOptions::new()).await.unwrap();
                settle().await;
                let mut group = pool.task_group::<u32>().cancel_on_panic(watched);
                let mut low = group.submit_with(value(1), SubmitOptions::new().priority(1));
                assert!(poll_once(&mut low).await.is_pending(), "{name}: the pool was full");
                let (tx, rx) = tokio::sync::oneshot::channel();
                let (p, g3) = (pool.clone(), Gate::new());
                // Its task holds its place until the end.
                let high_job = gated(&g3, 5u32);
                std::thread::spawn(move || {
                    let r = p.own_blocking_submit_with(high_job, SubmitOptions::new().priority(5));
                    let _ = tx.send(r.map(drop));
                });
                tokio::time::sleep(Duration::from_millis(300)).await;
                g1.open();
                within("the first held task", h1).await.unwrap();
                let high = within("the blocking submit of priority 5", rx).await.unwrap();
                assert_eq!(high, Ok(()), "{name}: the blocking submit");
                assert!(
                    poll_once(&mut low).await.is_pending(),
                    "{name}: the group's submit of priority 1 got room before the waiting blocking submit of priority 5"
                );
                g2.open();
                within("the second held task", h2).await.unwrap();
                within("the group's submit", low).await.unwrap();
                g3.open();
                let all = within("join_all", group.join_all()).await;
                assert_eq!(all.into_iter().map(Result::unwrap).collect::<Vec<_>>(), [1], "{name}");
                pool.shut_down().await;
            });
        }
    }
}

// ----- extreme timeouts, and a submit from inside the pool -----------------------------------

/// A group's `submit_with` with a timeout of zero and one of `Duration::MAX`: zero into a
/// pool with room is accepted (the deadline "bounds only the wait for room"), into a full
/// one it is `TimedOut` at once; `MAX` waits until room comes, with no overflow.
///
/// Pinned: so with and without a watcher, on the three pools, as the pool's own.
#[tokio::test(start_paused = true)]
async fn zero_and_endless_timeouts_of_a_groups_submit_with() {
    for watched in [false, true] {
        for pool in flow_pools(1, 0, 1, FlowLimits::default()) {
            let name = format!("{} (watched: {watched})", pool.name());
            let mut group = pool.task_group::<u32>().cancel_on_panic(watched);
            let zero = || SubmitOptions::new().timeout(Duration::ZERO);
            let endless = || SubmitOptions::new().timeout(Duration::MAX);
            within("zero, with room", group.submit_with(value(1), zero()))
                .await
                .unwrap_or_else(|r| panic!("{name}: zero with room refused: {r:?}"));
            assert_eq!(within("join", group.join_next()).await.unwrap().unwrap(), 1);
            let gate = Gate::new();
            let held = pool
                .own_submit_with(gated(&gate, 0u32), SubmitOptions::new())
                .await
                .unwrap();
            settle().await;
            let t0 = Instant::now();
            let r = within("zero, full", group.submit_with(value(2), zero()))
                .await
                .expect_err("a zero timeout into a full pool was accepted");
            assert_eq!(
                (r.kind, t0.elapsed()),
                (SubmitErrorKind::TimedOut, Duration::ZERO),
                "{name}"
            );
            let own = pool.own_submit_with(value(2u32), zero()).await.map(drop);
            assert_eq!(
                own,
                Err(SubmitErrorKind::TimedOut),
                "{name}: the pool's own"
            );
            let mut waiting = group.submit_with(value(3), endless());
            assert!(poll_once(&mut waiting).await.is_pending(), "{name}");
            tokio::time::sleep(Duration::from_secs(3600)).await;
            assert!(poll_once(&mut waiting).await.is_pending(), "{name}");
            gate.open();
            within("the held task", held).await.unwrap();
            within("the endless submit", waiting)
                .await
                .unwrap_or_else(|r| panic!("{name}: the endless submit refused: {r:?}"));
            assert_eq!(within("join", group.join_next()).await.unwrap().unwrap(), 3);
            pool.shut_down().await;
        }
    }
}

/// A job of a full pool submits to a group of the same pool with `submit_with`: the
/// pool's own refuses with `WouldDeadlock` ("a task running in this pool submitted to the
/// same pool while it was full"); a weight beyond the capacity is `TooHeavy` first.
///
/// Pinned: the group's `submit_with` gives the same, with and without a watcher, on the
/// three pools.
#[tokio::test(start_paused = true)]
async fn a_groups_submit_with_from_inside_its_full_pool_would_deadlock() {
    let limits = FlowLimits {
        weight_capacity: Some(2),
        ..FlowLimits::default()
    };
    for watched in [false, true] {
        for pool in flow_pools(1, 0, 1, limits) {
            let name = format!("{} (watched: {watched})", pool.name());
            let inner = pool.clone();
            let job = make(move || {
                let pool = inner.clone();
                async move {
                    let mut group = pool.task_group::<u32>().cancel_on_panic(watched);
                    let light = group
                        .submit_with(value(1), SubmitOptions::new().priority(2))
                        .await;
                    let heavy = group
                        .submit_with(value(1), SubmitOptions::new().weight(3))
                        .await;
                    let own = pool
                        .own_submit_with(value(1u32), SubmitOptions::new())
                        .await;
                    (
                        light.map(drop).map_err(|r| r.kind),
                        heavy.map(drop).map_err(|r| r.kind),
                        own.map(drop),
                    )
                }
            });
            let h = pool
                .own_submit_with(job, SubmitOptions::new())
                .await
                .unwrap();
            let (light, heavy, own) = within("the job", h).await.unwrap();
            assert_eq!(
                own,
                Err(SubmitErrorKind::WouldDeadlock),
                "{name}: the pool's own"
            );
            assert_eq!(
                light,
                Err(SubmitErrorKind::WouldDeadlock),
                "{name}: the group's"
            );
            assert_eq!(heavy, Err(SubmitErrorKind::TooHeavy), "{name}: a heavy one");
            pool.shut_down().await;
        }
    }
}

/// With `metrics`, the crate docs: the counters and gauges agree with `PoolStats`. A
/// cancel-on-error group's `submit_with`s refused in every way (too heavy, timed out, the
/// group tripped while they waited, including after room was granted), keyed tasks
/// aborted by the trip while queued, on each pool.
///
/// Pinned: the figures agree with `stats()` after each step, and the refused submits are
/// counted nowhere.
#[cfg(feature = "metrics")]
#[test]
fn the_metrics_agree_with_the_stats_through_a_groups_refused_submit_withs() {
    let _serial = support::serial();
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        support::paused_runtime().block_on(async {
            let limits = FlowLimits {
                weight_capacity: Some(2),
                max_per_key: Some(1),
                ..FlowLimits::default()
            };
            let (c, n, s) = support::flow_builders(2, 2, 2, limits);
            let pools = [
                Pool::Common(c.name("m-common").build()),
                Pool::NoQueue(n.name("m-no-queue").build()),
                Pool::Smart(s.name("m-smart").build()),
            ];
            for pool in pools {
                let label = per_pool!(&pool, |p| p.name().to_string(), |p| p.name().to_string());
                let mut figures = metric_figures::Figures::default();
                let mut check = |what: &str| {
                    figures.take(&snapshotter, &label);
                    if let Some(wrong) = figures.against(&pool.stats()) {
                        panic!("{label}: after {what}: {wrong}");
                    }
                };
                let mut group = pool.task_group::<Result<u32, u32>>().cancel_on_error();
                let _ = group
                    .submit_with(value(Ok(1)), SubmitOptions::new().weight(3))
                    .await;
                check("a too heavy submit_with");
                // The pool's other place: a keyed task that fails after 1 s; then a keyed
                // one queued behind the key (Common, Smart) or waiting in its place.
                let gate = Gate::new();
                let held = pool
                    .own_submit_with(gated(&gate, Ok::<u32, u32>(0)), SubmitOptions::new())
                    .await
                    .unwrap();
                within(
                    "a failing task",
                    group.submit_with(after(1000, Err(1)), SubmitOptions::new().key("k")),
                )
                .await
                .unwrap();
                if !matches!(pool, Pool::NoQueue(_)) {
                    within(
                        "a keyed task",
                        group.submit_with(value(Ok(2)), SubmitOptions::new().key("k")),
                    )
                    .await
                    .unwrap();
                    let _ = group
                        .submit_with(value(Ok(2)), SubmitOptions::new().key("k"))
                        .await;
                }
                settle().await;
                check("the submits");
                let opts = SubmitOptions::new().timeout(Duration::from_millis(100));
                let r = within("a timed submit", group.submit_with(value(Ok(3)), opts)).await;
                assert!(
                    r.is_err(),
                    "{label}: a submit into a full pool was accepted"
                );
                check("a timed-out submit_with");
                let r = within(
                    "a waiting submit",
                    group.submit_with(value(Ok(4)), SubmitOptions::new()),
                )
                .await;
                assert_eq!(
                    r.map(drop).map_err(|r| r.kind),
                    Err(SubmitErrorKind::Closed),
                    "{label}"
                );
                settle().await;
                check("the trip");
                gate.open();
                within("the held task", held).await.unwrap().unwrap();
                let _ = within("join_all", group.join_all()).await;
                pool.wait_within().await;
                settle().await;
                check("the end");
                pool.shut_down().await;
                check("the shutdown");
            }
        });
    });
}

/// A group's `submit_with` waits for room when the user drops every handle of the pool
/// (the group's own stays); then the running task ends. `SubmitErrorKind::Closed`: "the
/// pool was shut down (or every handle to it was dropped) before the task was accepted".
///
/// Pinned: the group's handle keeps the pool open: the submit is accepted once the
/// running task ends, and the group returns the task's result, with and without a
/// watcher, on the three pools.
#[tokio::test(start_paused = true)]
async fn a_groups_submit_with_waiting_when_the_pools_handles_are_dropped() {
    for watched in [false, true] {
        for pool in flow_pools(1, 0, 1, FlowLimits::default()) {
            let name = format!("{} (watched: {watched})", pool.name());
            let gate = Gate::new();
            let held = pool
                .own_submit_with(gated(&gate, 0u32), SubmitOptions::new())
                .await
                .unwrap();
            settle().await;
            let mut group = pool.task_group::<u32>().cancel_on_panic(watched);
            let opts = SubmitOptions::new()
                .key("k")
                .timeout(Duration::from_secs(10));
            let mut waiting = group.submit_with(value(1), opts);
            assert!(poll_once(&mut waiting).await.is_pending(), "{name}");
            drop(pool);
            settle().await;
            gate.open();
            let got = within("the waiting submit", waiting).await;
            assert!(
                got.is_ok(),
                "{name}: refused once the pool's handles were dropped: {:?}",
                got.map_err(|r| r.kind)
            );
            assert_eq!(within("held", held).await.ok(), Some(0), "{name}");
            let joined = within("join", group.join_next()).await.unwrap();
            assert_eq!(joined.ok(), Some(1), "{name}: the accepted task");
        }
    }
}
