//! Model-based property tests of the three pools (issue 6).
//!
//! Each case is a random scenario: pool sizes, a few async producers (tokio tasks) and, on
//! real-time runtimes, a few plain-thread producers, each running a random list of
//! operations: `submit` / `try_submit` / `blocking_submit` of instrumented jobs that
//! return, yield, sleep, sleep "forever", panic (or, on SmartAioPool, whose recipe
//! panics); `abort`, drop or await a handle; and a stop (`shutdown`, `shutdown_timeout`,
//! NoQueue `wait`, Smart `wait_for_all` / `cancel_all`) at a random point.
//!
//! Checked after every operation: the `PoolStats` identity and bounds, and (current-thread
//! runtimes) that jobs running never exceed `stats().running`. Checked by every job at its
//! start: no more than `max_concurrency` jobs run. Checked at the end, against what every
//! job recorded about itself: every accepted job ended exactly once, as its handle says;
//! nothing was cancelled that nothing could have cancelled; every rejected job came back
//! unpolled; the counters match the jobs; and (where submission order is observable) jobs
//! started in submission order.
//!
//! `PROPTEST_CASES` (default 64) sets the cases per test; `PROPTEST_RNG_SEED` fixes the
//! seed. Every wait is guarded by a timeout, so a hang fails with a message.

mod reliability;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nb_aiopool::{CancelReason, TaskHandle};
use proptest::prelude::*;
use reliability::*;

// ----- scenarios ----------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Via {
    Submit,
    Try,
    Blocking,
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Shutdown,
    /// `shutdown_timeout` with this many ticks.
    ShutdownTimeout(u8),
    /// NoQueue `wait`, Smart `wait_for_all` (Common: `shutdown`).
    Wait,
    /// Smart `cancel_all` (others: `shutdown_timeout(0)`).
    CancelAll,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Submit(Via, Beh),
    Abort(u8),
    Drop(u8),
    Await(u8),
    Stop(Stop),
}

#[derive(Debug, Clone)]
struct Producer {
    /// A plain `std::thread` (blocking calls) rather than a tokio task.
    thread: bool,
    ops: Vec<Op>,
    /// At the end, await the handles still held (else drop them).
    await_rest: bool,
}

#[derive(Debug, Clone)]
struct Scenario {
    max_concurrency: usize,
    max_queue_size: usize,
    min_workers: usize,
    idle_ticks: u8,
    producers: Vec<Producer>,
}

fn beh() -> impl Strategy<Value = Beh> {
    prop_oneof![
        3 => Just(Beh::Ready),
        2 => (1u8..4).prop_map(Beh::Yield),
        3 => (0u8..20).prop_map(Beh::Sleep),
        1 => Just(Beh::Long),
        1 => (0u8..3).prop_map(Beh::Panic),
        1 => Just(Beh::RecipePanic),
    ]
}

fn stop() -> impl Strategy<Value = Stop> {
    prop_oneof![
        Just(Stop::Shutdown),
        (0u8..30).prop_map(Stop::ShutdownTimeout),
        Just(Stop::Wait),
        Just(Stop::CancelAll),
    ]
}

fn op(thread: bool) -> BoxedStrategy<Op> {
    let via = if thread {
        prop_oneof![3 => Just(Via::Blocking), 1 => Just(Via::Try)].boxed()
    } else {
        prop_oneof![3 => Just(Via::Submit), 1 => Just(Via::Try)].boxed()
    };
    let submit = (via, beh()).prop_map(|(v, b)| Op::Submit(v, b));
    if thread {
        prop_oneof![
            8 => submit,
            1 => any::<u8>().prop_map(Op::Abort),
            1 => any::<u8>().prop_map(Op::Drop),
            1 => any::<u8>().prop_map(Op::Await),
        ]
        .boxed()
    } else {
        prop_oneof![
            8 => submit,
            1 => any::<u8>().prop_map(Op::Abort),
            1 => any::<u8>().prop_map(Op::Drop),
            1 => any::<u8>().prop_map(Op::Await),
            1 => stop().prop_map(Op::Stop),
        ]
        .boxed()
    }
}

fn producer(thread: bool) -> impl Strategy<Value = Producer> {
    (prop::collection::vec(op(thread), 0..14), any::<bool>()).prop_map(move |(ops, await_rest)| {
        Producer {
            thread,
            ops,
            await_rest,
        }
    })
}

fn scenario(threads: bool) -> impl Strategy<Value = Scenario> {
    let max_threads = if threads { 2 } else { 0 };
    (
        1usize..=4,
        0usize..=4,
        0usize..=4,
        1u8..=5,
        prop::collection::vec(producer(false), 1..=3),
        prop::collection::vec(producer(true), 0..=max_threads),
    )
        .prop_map(|(c, q, m, idle, mut asyncs, threads)| {
            asyncs.extend(threads);
            Scenario {
                max_concurrency: c,
                max_queue_size: q,
                min_workers: m.min(c),
                idle_ticks: idle,
                producers: asyncs,
            }
        })
}

// ----- running a scenario -------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// current_thread runtime, paused clock, async producers only: deterministic.
    Paused,
    /// current_thread runtime, real clock, with plain-thread producers.
    CurrentThread,
    /// multi_thread runtime with 2 workers, real clock, with plain-thread producers.
    MultiThread,
}

impl Flavor {
    fn timing(self) -> Timing {
        match self {
            Flavor::Paused => Timing::Paused,
            _ => Timing::Real,
        }
    }

    fn tick(self) -> Duration {
        match self {
            Flavor::Paused => Duration::from_millis(1),
            _ => Duration::from_micros(100),
        }
    }

    /// How long any single wait may take before the case fails as a hang. Under paused
    /// time a hang makes the clock jump here at once.
    fn patience(self) -> Duration {
        match self {
            Flavor::Paused => Duration::from_secs(1_000_000),
            _ => Duration::from_secs(30),
        }
    }
}

struct Ctx {
    pool: Pool,
    kind: Kind,
    flavor: Flavor,
    sizes: Sizes,
    board: Arc<Board>,
    flags: Flags,
    next_id: AtomicUsize,
    /// Accepted ids, with whether the test aborted them.
    accepted: Mutex<Vec<(usize, Beh)>>,
    aborted: Mutex<Vec<bool>>,
    /// What each awaited handle said, by id.
    resolved: Mutex<Vec<Option<Resolved>>>,
}

struct Held {
    id: usize,
    handle: Option<TaskHandle<u64>>,
}

impl Ctx {
    fn q(&self) -> usize {
        self.pool.queue_size(self.sizes)
    }

    async fn guard<F: std::future::Future>(
        &self,
        what: impl std::fmt::Display,
        fut: F,
    ) -> F::Output {
        match tokio::time::timeout(self.flavor.patience(), fut).await {
            Ok(v) => v,
            Err(_) => panic!("hang: waited {:?} for {what}", self.flavor.patience()),
        }
    }

    fn check(&self, where_: &str, in_async: bool) {
        let s = self.pool.stats();
        check_stats(where_, &s, self.sizes.max_concurrency, self.q());
        if in_async && self.flavor != Flavor::MultiThread {
            // Nothing else runs while this task runs, so the two views must agree.
            let now = self.board.running_now();
            assert!(
                now <= s.running,
                "{where_}: {now} jobs are running but stats say {}: {s:?}",
                s.running
            );
        }
        if let Some((workers, busy)) = self.pool.workers() {
            // worker_count() and busy_worker_count() are two snapshots: compare them only
            // where nothing can run between the two calls.
            let atomic = in_async && self.flavor != Flavor::MultiThread;
            assert!(
                (!atomic || busy <= workers)
                    && workers <= self.sizes.max_concurrency
                    && busy <= self.sizes.max_concurrency,
                "{where_}: {busy} busy of {workers} workers, max_concurrency {}",
                self.sizes.max_concurrency
            );
            assert!(
                workers >= self.sizes.min_workers,
                "{where_}: {workers} workers, min_workers {}",
                self.sizes.min_workers
            );
        }
    }

    fn new_spec(&self, beh: Beh) -> Spec {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        Spec {
            id,
            beh,
            board: self.board.clone(),
        }
    }

    /// Records a submission's outcome; returns the handle if it was accepted.
    fn after_submit(
        &self,
        spec: &Spec,
        via: Via,
        res: Result<TaskHandle<u64>, Rejection>,
    ) -> Option<Held> {
        match res {
            Ok(h) => {
                if self.board.track_order {
                    self.board.accept_order.lock().unwrap().push(spec.id);
                }
                self.accepted.lock().unwrap().push((spec.id, spec.beh));
                Some(Held {
                    id: spec.id,
                    handle: Some(h),
                })
            }
            Err(Rejection::Full) => {
                assert!(
                    matches!(via, Via::Try),
                    "{via:?} of job {} refused as full",
                    spec.id
                );
                None
            }
            Err(Rejection::Closed) => {
                assert!(
                    Flags::get(&self.flags.closing),
                    "job {} refused as closed, but no shutdown was started",
                    spec.id
                );
                None
            }
            Err(Rejection::WouldDeadlock) => {
                panic!("job {} refused as WouldDeadlock outside the pool", spec.id)
            }
        }
    }

    fn abort(&self, held: &[Held], k: u8) {
        if held.is_empty() {
            return;
        }
        let h = &held[k as usize % held.len()];
        if let Some(handle) = &h.handle {
            self.aborted.lock().unwrap()[h.id] = true;
            handle.abort();
            assert!(
                handle.is_finished(),
                "job {}: its handle is not resolved right after abort()",
                h.id
            );
        }
    }

    fn record(&self, id: usize, r: Resolved) {
        let mut resolved = self.resolved.lock().unwrap();
        assert!(resolved[id].is_none(), "handle of job {id} resolved twice");
        resolved[id] = Some(r);
    }

    async fn run_stop(&self, p: usize, s: Stop, held: &[Held]) {
        let kind = self.kind;
        let (closes, waits) = match (s, kind) {
            (Stop::Wait, Kind::NoQueue | Kind::Smart) => (false, true),
            (Stop::CancelAll, Kind::Smart) => (false, true),
            _ => (true, true),
        };
        if closes {
            Flags::set(&self.flags.closing);
        }
        let what = format!("producer {p}: {s:?}");
        match (s, kind) {
            (Stop::Shutdown, _) => self.guard(&what, self.pool.shutdown()).await,
            (Stop::Wait, _) => {
                self.guard(&what, self.pool.wait()).await;
            }
            (Stop::CancelAll, Kind::Smart) => {
                Flags::set(&self.flags.cancel_all_called);
                let Pool::Smart(pool) = &self.pool else {
                    unreachable!()
                };
                self.guard(&what, pool.cancel_all()).await;
            }
            (Stop::ShutdownTimeout(_) | Stop::CancelAll, _) => {
                let ticks = match s {
                    Stop::ShutdownTimeout(t) => u32::from(t),
                    _ => 0,
                };
                if kind != Kind::NoQueue {
                    Flags::set(&self.flags.abandon_possible);
                }
                let report = self
                    .guard(
                        &what,
                        self.pool.shutdown_timeout(self.flavor.tick() * ticks),
                    )
                    .await;
                if let Some(r) = report {
                    assert_eq!(r.is_complete(), r.abandoned() == 0, "{what}: {r:?}");
                }
            }
        }
        if closes {
            let st = self.pool.stats();
            assert_eq!(
                (st.queued, st.running),
                (0, 0),
                "{what}: work left after the shutdown returned: {st:?}"
            );
        }
        if waits {
            for h in held {
                if let Some(handle) = &h.handle {
                    assert!(
                        handle.is_finished(),
                        "{what}: job {} (submitted before) is not finished",
                        h.id
                    );
                }
            }
        }
    }

    async fn run_async_producer(self: Arc<Self>, p: usize, prod: Producer) {
        let mut held: Vec<Held> = Vec::new();
        for (i, op) in prod.ops.iter().enumerate() {
            let where_ = format!("producer {p} op {i} {op:?}");
            match *op {
                Op::Submit(via, beh) => {
                    let spec = self.new_spec(beh);
                    let res = match via {
                        Via::Submit => self.guard(&where_, self.pool.submit(&spec)).await,
                        _ => self.pool.try_submit(&spec),
                    };
                    held.extend(self.after_submit(&spec, via, res));
                }
                Op::Abort(k) => self.abort(&held, k),
                Op::Drop(k) => {
                    if !held.is_empty() {
                        let n = held.len();
                        held[k as usize % n].handle = None;
                    }
                }
                Op::Await(k) => {
                    if !held.is_empty() {
                        let n = held.len();
                        let h = &mut held[k as usize % n];
                        if let Some(handle) = h.handle.take() {
                            let r = self.guard(&where_, handle).await;
                            self.record(h.id, Resolved::from_result(r));
                        }
                    }
                }
                Op::Stop(s) => self.run_stop(p, s, &held).await,
            }
            self.check(&where_, true);
        }
        for h in held {
            if let (true, Some(handle)) = (prod.await_rest, h.handle) {
                let r = self
                    .guard(format!("producer {p}: final await of job {}", h.id), handle)
                    .await;
                self.record(h.id, Resolved::from_result(r));
            }
        }
    }

    fn run_thread_producer(self: Arc<Self>, p: usize, prod: Producer, at: Arc<AtomicUsize>) {
        let mut held: Vec<Held> = Vec::new();
        for (i, op) in prod.ops.iter().enumerate() {
            at.store(i, Ordering::SeqCst);
            let where_ = format!("thread producer {p} op {i} {op:?}");
            match *op {
                Op::Submit(via, beh) => {
                    let spec = self.new_spec(beh);
                    let res = match via {
                        Via::Try => self.pool.try_submit(&spec),
                        _ => self.pool.blocking_submit(&spec),
                    };
                    held.extend(self.after_submit(&spec, via, res));
                }
                Op::Abort(k) => self.abort(&held, k),
                Op::Drop(k) => {
                    if !held.is_empty() {
                        let n = held.len();
                        held[k as usize % n].handle = None;
                    }
                }
                Op::Await(k) => {
                    if !held.is_empty() {
                        let n = held.len();
                        let h = &mut held[k as usize % n];
                        if let Some(handle) = h.handle.take() {
                            self.record(h.id, Resolved::from_result(handle.blocking_wait()));
                        }
                    }
                }
                Op::Stop(_) => unreachable!("thread producers do not stop the pool"),
            }
            self.check(&where_, false);
        }
        at.store(usize::MAX, Ordering::SeqCst);
        for h in held {
            if let (true, Some(handle)) = (prod.await_rest, h.handle) {
                self.record(h.id, Resolved::from_result(handle.blocking_wait()));
            }
        }
    }

    /// The end-of-case checks, once the pool is shut down.
    fn verify(&self) {
        let s = self.pool.stats();
        check_stats("end", &s, self.sizes.max_concurrency, self.q());
        assert_eq!((s.queued, s.running), (0, 0), "end: work left: {s:?}");
        let violations = self.board.violations();
        assert!(violations.is_empty(), "violations: {violations:#?}");
        assert_eq!(self.board.running_now(), 0, "jobs still marked running");

        let accepted = self.accepted.lock().unwrap().clone();
        let aborted = self.aborted.lock().unwrap().clone();
        let resolved = self.resolved.lock().unwrap().clone();
        let abandon = Flags::get(&self.flags.abandon_possible);
        let cancel_all = Flags::get(&self.flags.cancel_all_called);
        let (mut completed, mut panicked, mut cancelled) = (0u64, 0u64, 0u64);
        // An aborted job whose code ran to its end may still count as cancelled: an abort
        // resolves the handle at once, and the first result delivered is the one counted.
        let (mut completed_or_aborted, mut panicked_or_aborted) = (0u64, 0u64);
        // The warm-up job (id 0) is accepted and completed outside `accepted`.
        completed += 1;
        for &(id, beh) in &accepted {
            let state = self.board.state(id);
            let cancellable = aborted[id] || abandon || cancel_all;
            match state {
                COMPLETED => {
                    if aborted[id] {
                        completed_or_aborted += 1;
                    } else {
                        completed += 1;
                    }
                    assert!(!beh.panics(), "job {id} ({beh:?}) completed");
                }
                PANICKED => {
                    if aborted[id] {
                        panicked_or_aborted += 1;
                    } else {
                        panicked += 1;
                    }
                    assert!(beh.panics(), "job {id} ({beh:?}) panicked");
                }
                NOT_STARTED | DROPPED => {
                    cancelled += 1;
                    assert!(
                        cancellable,
                        "job {id} ({beh:?}) was cancelled ({}) though nothing cancelled it",
                        state_name(state)
                    );
                }
                other => panic!("job {id} ({beh:?}) ended {}", state_name(other)),
            }
            if self.kind == Kind::Smart {
                assert!(
                    self.board.recipe_calls(id) <= 1,
                    "recipe {id} called {} times",
                    self.board.recipe_calls(id)
                );
            }
            let Some(r) = &resolved[id] else { continue };
            match r {
                Resolved::Value(v) => {
                    assert_eq!(
                        state,
                        COMPLETED,
                        "job {id}: handle gave a value but the job {}",
                        state_name(state)
                    );
                    assert_eq!(
                        *v,
                        value_of(id),
                        "job {id}: handle gave another job's value"
                    );
                }
                Resolved::Panicked(msg) => {
                    assert_eq!(
                        state,
                        PANICKED,
                        "job {id}: handle says panicked but the job {}",
                        state_name(state)
                    );
                    assert!(
                        msg.contains(&format!("job {id}")) || msg.contains(&format!("recipe {id}")),
                        "job {id}: handle carries another panic: {msg}"
                    );
                }
                Resolved::Cancelled(reason) => {
                    let aborted_first = *reason == CancelReason::Aborted && aborted[id];
                    assert!(
                        state == NOT_STARTED || state == DROPPED || aborted_first,
                        "job {id}: handle says cancelled ({reason:?}) but the job {}",
                        state_name(state)
                    );
                    let allowed = match reason {
                        CancelReason::Aborted => aborted[id],
                        CancelReason::Abandoned => abandon,
                        CancelReason::CancelAll => cancel_all,
                        _ => false,
                    };
                    assert!(
                        allowed,
                        "job {id}: cancelled with {reason:?}, which nothing caused"
                    );
                }
            }
        }
        assert_eq!(s.submitted, accepted.len() as u64 + 1, "submitted: {s:?}");
        let in_range = |got: u64, low: u64, flex: u64| low <= got && got <= low + flex;
        assert!(
            in_range(s.completed, completed, completed_or_aborted)
                && in_range(s.panicked, panicked, panicked_or_aborted)
                && s.completed + s.panicked + s.cancelled == accepted.len() as u64 + 1,
            "counters differ from what the jobs did: {s:?}; jobs: {completed} completed \
             (+{completed_or_aborted} aborted), {panicked} panicked (+{panicked_or_aborted} \
             aborted), {cancelled} cancelled"
        );
        // Every job that was neither accepted nor the warm-up was rejected and checked.
        let n = self.next_id.load(Ordering::SeqCst);
        let accepted_ids: std::collections::HashSet<usize> =
            accepted.iter().map(|(id, _)| *id).collect();
        for id in 1..n {
            if !accepted_ids.contains(&id) {
                assert_eq!(
                    self.board.state(id),
                    REJECTED,
                    "job {id} neither accepted nor handed back"
                );
            }
        }
        if self.board.track_order {
            let accept_order = self.board.accept_order.lock().unwrap().clone();
            let pos: std::collections::HashMap<usize, usize> = accept_order
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, i))
                .collect();
            // A rejected recipe that panics, called by the check of the handed-back recipe,
            // records a start too: keep accepted jobs only.
            let starts: Vec<usize> = self
                .board
                .start_order
                .lock()
                .unwrap()
                .iter()
                .copied()
                .filter(|id| pos.contains_key(id))
                .collect();
            for w in starts.windows(2) {
                assert!(
                    pos[&w[0]] < pos[&w[1]],
                    "job {} started before job {}, submitted earlier; starts {starts:?}, submissions {accept_order:?}",
                    w[1],
                    w[0]
                );
            }
        }
    }
}

async fn run_case(kind: Kind, flavor: Flavor, sc: Scenario) {
    let sizes = Sizes {
        max_concurrency: sc.max_concurrency,
        max_queue_size: sc.max_queue_size,
        min_workers: sc.min_workers,
        idle_timeout: flavor.tick() * u32::from(sc.idle_ticks) * 10,
    };
    let asyncs = sc.producers.iter().filter(|p| !p.thread).count();
    let threads = sc.producers.len() - asyncs;
    let n_jobs = 1 + sc.producers.iter().map(|p| p.ops.len()).sum::<usize>();
    // Submission order is observable when producers cannot interleave between a push and
    // its record (one thread runs everything), and start order follows it when jobs
    // cannot start in parallel on two threads.
    let track_order = threads == 0
        && (flavor != Flavor::MultiThread || (asyncs == 1 && sizes.max_concurrency == 1));
    let board = Board::new(
        n_jobs,
        sizes.max_concurrency,
        flavor.timing(),
        track_order,
        kind == Kind::Smart,
    );
    let ctx = Arc::new(Ctx {
        pool: Pool::new(kind, sizes),
        kind,
        flavor,
        sizes,
        board: board.clone(),
        flags: Flags::default(),
        next_id: AtomicUsize::new(0),
        accepted: Mutex::new(Vec::new()),
        aborted: Mutex::new(vec![false; n_jobs]),
        resolved: Mutex::new(vec![None; n_jobs]),
    });

    // Warm-up: starts the pool on this runtime (plain threads need that) as job 0.
    let warm = ctx.new_spec(Beh::Ready);
    let h = ctx.guard("warm-up submit", ctx.pool.submit(&warm)).await;
    let h = h.unwrap_or_else(|r| panic!("warm-up rejected: {r:?}"));
    let v = ctx
        .guard("warm-up await", h)
        .await
        .expect("warm-up job failed");
    assert_eq!(v, value_of(0));
    if board.track_order {
        board.start_order.lock().unwrap().clear();
    }

    let mut tasks = Vec::new();
    let mut thread_done = Vec::new();
    for (p, prod) in sc.producers.iter().cloned().enumerate() {
        if prod.thread {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let at = Arc::new(AtomicUsize::new(0));
            let ctx2 = ctx.clone();
            let at2 = at.clone();
            let ops = prod.ops.clone();
            let t = std::thread::spawn(move || {
                ctx2.run_thread_producer(p, prod, at2);
                let _ = tx.send(());
            });
            thread_done.push((p, rx, t, at, ops));
        } else {
            tasks.push((p, tokio::spawn(ctx.clone().run_async_producer(p, prod))));
        }
    }
    for (p, t) in tasks {
        match ctx.guard(format!("async producer {p}"), t).await {
            Ok(()) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("async producer {p}: {e}"),
        }
    }
    for (p, rx, t, at, ops) in thread_done {
        match tokio::time::timeout(flavor.patience(), rx).await {
            Ok(Ok(())) => t.join().unwrap(),
            Ok(Err(_)) => match t.join() {
                Err(payload) => std::panic::resume_unwind(payload),
                Ok(()) => unreachable!(),
            },
            Err(_) => {
                let i = at.load(Ordering::SeqCst);
                let op = ops
                    .get(i)
                    .map(|o| format!("{o:?}"))
                    .unwrap_or("final blocking_wait".into());
                panic!("hang: thread producer {p} stuck at op {i}: {op}");
            }
        }
    }
    Flags::set(&ctx.flags.closing);
    ctx.guard("final shutdown", ctx.pool.shutdown()).await;
    ctx.verify();
}

fn run(kind: Kind, flavor: Flavor, sc: Scenario) {
    quiet_intentional_panics();
    let rt = match flavor {
        Flavor::Paused => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build(),
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    }
    .unwrap();
    rt.block_on(run_case(kind, flavor, sc));
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn common_paused(sc in scenario(false)) {
        run(Kind::Common, Flavor::Paused, sc);
    }

    #[test]
    fn common_current_thread(sc in scenario(true)) {
        run(Kind::Common, Flavor::CurrentThread, sc);
    }

    #[test]
    fn common_multi_thread(sc in scenario(true)) {
        run(Kind::Common, Flavor::MultiThread, sc);
    }

    #[test]
    fn no_queue_paused(sc in scenario(false)) {
        run(Kind::NoQueue, Flavor::Paused, sc);
    }

    #[test]
    fn no_queue_current_thread(sc in scenario(true)) {
        run(Kind::NoQueue, Flavor::CurrentThread, sc);
    }

    #[test]
    fn no_queue_multi_thread(sc in scenario(true)) {
        run(Kind::NoQueue, Flavor::MultiThread, sc);
    }

    #[test]
    fn smart_paused(sc in scenario(false)) {
        run(Kind::Smart, Flavor::Paused, sc);
    }

    #[test]
    fn smart_current_thread(sc in scenario(true)) {
        run(Kind::Smart, Flavor::CurrentThread, sc);
    }

    #[test]
    fn smart_multi_thread(sc in scenario(true)) {
        run(Kind::Smart, Flavor::MultiThread, sc);
    }
}

// ----- the runtime goes away ----------------------------------------------------------

/// Jobs submitted on a runtime that is then dropped, with jobs queued and running.
#[derive(Debug, Clone)]
struct RuntimeDrop {
    max_concurrency: usize,
    max_queue_size: usize,
    /// Each job, and whether its handle is aborted right after the submit.
    jobs: Vec<(Beh, bool)>,
    /// How often the submitting task yields before the runtime is dropped.
    yields: u8,
    multi_thread: bool,
}

fn runtime_drop() -> impl Strategy<Value = RuntimeDrop> {
    let job = prop_oneof![
        3 => Just(Beh::Ready),
        2 => (1u8..4).prop_map(Beh::Yield),
        2 => (0u8..20).prop_map(Beh::Sleep),
        2 => Just(Beh::Long),
        1 => (0u8..3).prop_map(Beh::Panic),
    ];
    (
        1usize..=4,
        0usize..=4,
        prop::collection::vec((job, prop::bool::weighted(0.1)), 1..16),
        0u8..6,
        any::<bool>(),
    )
        .prop_map(|(c, q, jobs, yields, multi_thread)| RuntimeDrop {
            max_concurrency: c,
            max_queue_size: q,
            jobs,
            yields,
            multi_thread,
        })
}

/// Drops the runtime a pool runs on, part-way through its work. Then every accepted job's
/// handle resolves (no hang): for CommonAioPool and NoQueueAioPool to its result or
/// `RuntimeShutdown`; SmartAioPool runs its unfinished tasks again on the next runtime
/// and no handle says `RuntimeShutdown`. The counters add up and nothing is left queued
/// or running.
///
/// It also requires what finding 3 of RELIABILITY.md broke on multi-thread runtimes (fixed
/// in `Driver::drop`): no more than `max_concurrency` user futures alive while the runtime
/// goes away, no second run of a Smart task while the first one's future is alive, each
/// recipe called at most twice.
fn run_runtime_drop(kind: Kind, sc: RuntimeDrop) {
    quiet_intentional_panics();
    let sizes = Sizes {
        max_concurrency: sc.max_concurrency,
        max_queue_size: sc.max_queue_size,
        min_workers: 1,
        idle_timeout: Duration::from_millis(5),
    };
    let n = sc.jobs.len();
    let board = Board::new(n, sizes.max_concurrency, Timing::Real, false, false);
    if kind == Kind::Smart {
        board.allow_restarts();
    }
    let pool = Pool::new(kind, sizes);
    let rt1 = if sc.multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .unwrap();
    let handles: Vec<(usize, bool, TaskHandle<u64>)> = rt1.block_on(async {
        let mut handles = Vec::new();
        for (id, &(beh, abort)) in sc.jobs.iter().enumerate() {
            let spec = Spec {
                id,
                beh,
                board: board.clone(),
            };
            match pool.try_submit(&spec) {
                Ok(h) => {
                    if abort {
                        h.abort();
                    }
                    handles.push((id, abort, h));
                }
                Err(r) => assert_eq!(r, Rejection::Full, "job {id}"),
            }
        }
        for _ in 0..sc.yields {
            tokio::task::yield_now().await;
        }
        handles
    });
    drop(rt1);

    let rt2 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt2.block_on(async {
        let patience = Duration::from_secs(30);
        if kind == Kind::Smart {
            // The new runtime takes the interrupted and queued tasks over.
            tokio::time::timeout(patience, pool.shutdown())
                .await
                .expect("hang: shutdown on the second runtime");
        }
        let mut cancelled_by_runtime = 0u64;
        for (id, aborted, h) in handles {
            let r = tokio::time::timeout(patience, h)
                .await
                .unwrap_or_else(|_| panic!("hang: job {id}'s handle after the runtime went away"));
            let state = board.state(id);
            match Resolved::from_result(r) {
                Resolved::Value(v) => {
                    assert_eq!(v, value_of(id), "job {id}");
                    assert!(
                        state == COMPLETED,
                        "job {id}: value, yet {}",
                        state_name(state)
                    );
                }
                Resolved::Panicked(_) => assert_eq!(state, PANICKED, "job {id}"),
                Resolved::Cancelled(CancelReason::Aborted) => assert!(aborted, "job {id}"),
                Resolved::Cancelled(CancelReason::RuntimeShutdown) if kind != Kind::Smart => {
                    assert!(
                        state == NOT_STARTED || state == DROPPED,
                        "job {id}: RuntimeShutdown, yet it {}",
                        state_name(state)
                    );
                    cancelled_by_runtime += 1;
                }
                Resolved::Cancelled(other) => panic!("job {id}: cancelled with {other:?}"),
            }
            if kind == Kind::Smart {
                // Once on the first runtime, at most once more on the next one.
                assert!(
                    board.recipe_calls(id) <= 2,
                    "recipe {id} called {} times for one runtime drop",
                    board.recipe_calls(id)
                );
            }
        }
        tokio::time::timeout(patience, pool.shutdown())
            .await
            .expect("hang: final shutdown");
        let s = pool.stats();
        check_stats(
            "after the runtime went away",
            &s,
            sizes.max_concurrency,
            pool.queue_size(sizes),
        );
        assert_eq!((s.queued, s.running), (0, 0), "{s:?}");
        assert!(s.cancelled >= cancelled_by_runtime, "{s:?}");
    });
    let violations = board.violations();
    assert!(violations.is_empty(), "violations: {violations:#?}");
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn common_runtime_dropped(sc in runtime_drop()) {
        run_runtime_drop(Kind::Common, sc);
    }

    #[test]
    fn no_queue_runtime_dropped(sc in runtime_drop()) {
        run_runtime_drop(Kind::NoQueue, sc);
    }

    #[test]
    fn smart_runtime_dropped(sc in runtime_drop()) {
        run_runtime_drop(Kind::Smart, sc);
    }
}
