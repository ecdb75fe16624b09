//! Cancel safety, checked systematically (a helper's review, 2026-12-05, on d975e92):
//! every public future of the three pools (submits, runs, batches, groups, streams,
//! waits, shutdowns, `cancel_all`, handles) polled 0, 1, 2, ... times with a no-op waker,
//! or raced against a timer, then dropped, in pools full, empty, resized, shut down,
//! rate-limited, with priorities, keys and weights; then the invariants a user relies
//! on: every accepted task's handle resolves, a submit that returned no handle never
//! runs its task and drops it once; the room is whole (as many `try_submit`s succeed as
//! the pool holds) and `stats()` adds up; a dropped waiter passes its place on; nothing
//! hangs.

mod support;

use support::Rng;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nb_aiopool::{
    CommonAioPool, NoQueueAioPool, PoolStats, SmartAioPool, SubmitErrorKind, SubmitOptions,
    TaskHandle,
};

// ----- probes ---------------------------------------------------------------------------

/// What happened to one submitted task: how often it was dropped, how often it ran.
#[derive(Default, Debug)]
struct Counts {
    made: AtomicUsize,
    drops: AtomicUsize,
    runs: AtomicUsize,
    /// Runs that returned.
    ends: AtomicUsize,
}

impl Counts {
    fn made(&self) -> usize {
        self.made.load(Ordering::SeqCst)
    }
    fn drops(&self) -> usize {
        self.drops.load(Ordering::SeqCst)
    }
    fn ends(&self) -> usize {
        self.ends.load(Ordering::SeqCst)
    }
    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

/// Counts its drop.
struct Tok(Arc<Counts>);

impl Drop for Tok {
    fn drop(&mut self) {
        self.0.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// A future that counts its run and its drop, yields once and returns 7.
fn probe_fut(c: &Arc<Counts>) -> impl Future<Output = u32> + Send + 'static {
    c.made.fetch_add(1, Ordering::SeqCst);
    let tok = Tok(Arc::clone(c));
    async move {
        tok.0.runs.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        tok.0.ends.fetch_add(1, Ordering::SeqCst);
        drop(tok);
        7
    }
}

/// A recipe that counts its calls (runs) and its drop; its runs yield once and return 7.
fn probe_recipe(
    c: &Arc<Counts>,
) -> impl Fn() -> Pin<Box<dyn Future<Output = u32> + Send>> + Send + Sync + 'static {
    c.made.fetch_add(1, Ordering::SeqCst);
    let tok = Tok(Arc::clone(c));
    move || {
        tok.0.runs.fetch_add(1, Ordering::SeqCst);
        let c = Arc::clone(&tok.0);
        Box::pin(async move {
            tokio::task::yield_now().await;
            c.ends.fetch_add(1, Ordering::SeqCst);
            7
        })
    }
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Polls `fut` with a no-op waker.
fn poll_noop<T>(fut: &mut BoxFut<'_, T>) -> Poll<T> {
    fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

/// Lets the pool's slot tasks run (paused time: advances only when idle).
async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// Waits, up to 5 s of real time, until each of `counts` was dropped as many times as it
/// was made. An aborted task's future is dropped by a task of its runtime, after the
/// pool's `wait()` may have returned ([`TaskHandle::abort`](nb_aiopool::TaskHandle::abort)'s
/// docs): on 2 workers of a loaded machine, later than [`settle`]'s millisecond
/// (RELIABILITY.md, 415). The callers then check the counts: a future never dropped, or
/// dropped twice, still fails.
async fn until_dropped<'a>(counts: impl Iterator<Item = &'a Arc<Counts>> + Clone) {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while counts.clone().any(|c| c.drops() < c.made()) && std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ----- the three pools behind one face ---------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Common,
    NoQueue,
    Smart,
}

/// Flow control a case's pool is built with.
#[derive(Clone, Copy, Debug, Default)]
struct Flow {
    keys: bool,
    weights: bool,
    rate: bool,
    /// SmartAioPool only: elastic workers that retire after 5 ms idle, from none.
    elastic: bool,
}

#[derive(Clone)]
enum P {
    C(CommonAioPool),
    N(NoQueueAioPool),
    S(SmartAioPool, usize),
}

macro_rules! flow {
    ($b:expr, $flow:expr) => {{
        let mut b = $b;
        if $flow.keys {
            b = b.max_per_key(1);
        }
        if $flow.weights {
            b = b.weight_capacity(2);
        }
        if $flow.rate {
            b = b.rate_limit(3, Duration::from_millis(50));
        }
        b
    }};
}

impl P {
    /// A pool of `conc` slots and `queue` places (none for NoQueue).
    fn new(kind: Kind, conc: usize, queue: usize, flow: Flow) -> P {
        match kind {
            Kind::Common => P::C(
                flow!(
                    CommonAioPool::builder()
                        .max_concurrency(conc)
                        .max_queue_size(queue)
                        .process_wide(false),
                    flow
                )
                .build(),
            ),
            Kind::NoQueue => P::N(
                flow!(
                    NoQueueAioPool::builder()
                        .max_concurrency(conc)
                        .process_wide(false),
                    flow
                )
                .build(),
            ),
            Kind::Smart => P::S(
                flow!(
                    SmartAioPool::builder()
                        .max_concurrency(conc)
                        .max_queue_size(queue)
                        .process_wide(false)
                        .auto_shutdown(false)
                        .min_workers(usize::from(!flow.elastic))
                        .idle_timeout(Duration::from_millis(5)),
                    flow
                )
                .build(),
                queue,
            ),
        }
    }

    /// The room: running + queued places.
    fn room(&self) -> usize {
        match self {
            P::C(p) => p.max_concurrency() + p.max_queue_size(),
            P::N(p) => p.max_concurrency(),
            P::S(p, q) => p.max_concurrency() + q,
        }
    }

    fn stats(&self) -> PoolStats {
        match self {
            P::C(p) => p.stats(),
            P::N(p) => p.stats(),
            P::S(p, _) => p.stats(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            P::C(p) => p.is_closed(),
            P::N(p) => p.is_closed(),
            P::S(p, _) => p.is_closed(),
        }
    }

    fn set_max_concurrency(&self, n: usize) {
        match self {
            P::C(p) => p.set_max_concurrency(n),
            P::N(p) => p.set_max_concurrency(n),
            P::S(p, _) => p.set_max_concurrency(n),
        }
    }

    /// `submit_with(probe, opts)`, its error reduced to its kind (the task inside it is
    /// dropped with it).
    fn submit_probe(
        &self,
        c: &Arc<Counts>,
        opts: SubmitOptions,
    ) -> BoxFut<'_, Result<TaskHandle<u32>, SubmitErrorKind>> {
        use futures_util::FutureExt;
        match self {
            P::C(p) => Box::pin(
                p.submit_with(probe_fut(c), opts)
                    .map(|r| r.map_err(|e| e.kind())),
            ),
            P::N(p) => Box::pin(
                p.submit_with(probe_fut(c), opts)
                    .map(|r| r.map_err(|e| e.kind())),
            ),
            P::S(p, _) => Box::pin(
                p.submit_with(probe_recipe(c), opts)
                    .map(|r| r.map_err(|e| e.kind())),
            ),
        }
    }

    /// `submit(probe)`: made at the call, as a user's `pool.submit(..)` is (the task moves
    /// into the pool's allocation there).
    fn submit_plain(
        &self,
        c: &Arc<Counts>,
    ) -> BoxFut<'_, Result<TaskHandle<u32>, SubmitErrorKind>> {
        use futures_util::FutureExt;
        match self {
            P::C(p) => Box::pin(p.submit(probe_fut(c)).map(|r| r.map_err(|e| e.kind()))),
            P::N(p) => Box::pin(p.submit(probe_fut(c)).map(|r| r.map_err(|e| e.kind()))),
            P::S(p, _) => Box::pin(p.submit(probe_recipe(c)).map(|r| r.map_err(|e| e.kind()))),
        }
    }

    /// `run(probe)`, made at the call.
    fn run_probe(&self, c: &Arc<Counts>) -> BoxFut<'_, Result<u32, ()>> {
        use futures_util::FutureExt;
        match self {
            P::C(p) => Box::pin(p.run(probe_fut(c)).map(|r| r.map_err(drop))),
            P::N(p) => Box::pin(p.run(probe_fut(c)).map(|r| r.map_err(drop))),
            P::S(p, _) => Box::pin(p.run(probe_recipe(c)).map(|r| r.map_err(drop))),
        }
    }

    /// A task that holds its place until `gate` gives it a permit.
    async fn blocker(&self, gate: &Arc<tokio::sync::Semaphore>) -> TaskHandle<()> {
        let g = Arc::clone(gate);
        let fut = async move { g.acquire().await.unwrap().forget() };
        match self {
            P::C(p) => p
                .submit(fut)
                .await
                .unwrap_or_else(|e| panic!("a blocker's room: {e}")),
            P::N(p) => p
                .submit(fut)
                .await
                .unwrap_or_else(|e| panic!("a blocker's room: {e}")),
            P::S(p, _) => {
                let g = Arc::clone(gate);
                p.submit(move || {
                    let g = Arc::clone(&g);
                    async move { g.acquire().await.unwrap().forget() }
                })
                .await
                .unwrap_or_else(|e| panic!("a blocker's room: {e}"))
            }
        }
    }

    /// `try_submit` of a task that never ends (aborted by the room check's end).
    fn try_pending(&self) -> Option<TaskHandle<()>> {
        match self {
            P::C(p) => p.try_submit(std::future::pending::<()>()).ok(),
            P::N(p) => p.try_submit(std::future::pending::<()>()).ok(),
            P::S(p, _) => p.try_submit(std::future::pending::<()>).ok(),
        }
    }

    fn wait(&self) -> BoxFut<'static, ()> {
        match self {
            P::C(p) => Box::pin(p.wait()),
            P::N(p) => Box::pin(p.wait()),
            P::S(p, _) => Box::pin(p.wait()),
        }
    }

    fn shutdown(&self) -> BoxFut<'static, ()> {
        match self {
            P::C(p) => Box::pin(p.shutdown()),
            P::N(p) => Box::pin(p.shutdown()),
            P::S(p, _) => Box::pin(p.shutdown()),
        }
    }

    fn shutdown_timeout(&self, d: Duration) -> BoxFut<'static, nb_aiopool::ShutdownReport> {
        match self {
            P::C(p) => Box::pin(p.shutdown_timeout(d)),
            P::N(p) => Box::pin(p.shutdown_timeout(d)),
            P::S(p, _) => Box::pin(p.shutdown_timeout(d)),
        }
    }

    fn cancel_all(&self) -> BoxFut<'static, ()> {
        match self {
            P::C(p) => Box::pin(p.cancel_all()),
            P::N(p) => Box::pin(p.cancel_all()),
            P::S(p, _) => Box::pin(p.cancel_all()),
        }
    }
}

/// The counters add up, and nothing is left queued or running.
fn assert_settled(pool: &P, what: &str) {
    let s = pool.stats();
    assert_eq!((s.queued, s.running), (0, 0), "{what}: not settled: {s:?}");
    assert_eq!(
        s.submitted,
        s.completed + s.panicked + s.cancelled,
        "{what}: counts do not add up: {s:?}"
    );
}

/// The room is whole: exactly `room` tasks that never end fit (a pool not closed), then
/// they are cancelled and the pool settles again.
async fn assert_room_whole(pool: &P, room: usize, what: &str) {
    if pool.is_closed() {
        assert!(
            pool.try_pending().is_none(),
            "{what}: a closed pool took a task"
        );
        return;
    }
    let mut held = Vec::new();
    for i in 0..room {
        match pool.try_pending() {
            Some(h) => held.push(h),
            None => panic!(
                "{what}: room lost: only {i} of {room} places free ({:?})",
                pool.stats()
            ),
        }
    }
    assert!(
        pool.try_pending().is_none(),
        "{what}: more room than the pool holds ({room}): {:?}",
        pool.stats()
    );
    support::within(what, pool.cancel_all()).await;
    for h in held {
        assert!(h.await.unwrap_err().is_cancelled());
    }
    assert_settled(pool, what);
}

// ----- 1. submit / submit_with / run dropped at every poll ------------------------------

/// What the case does between the polls of the submit under test.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// One blocker ends: a place frees (granted to the first waiter).
    Free,
    /// The pool grows by one slot.
    Grow,
    /// The pool shrinks by one slot (not below 1).
    Shrink,
    /// The pool shuts down (the shutdown's future dropped unpolled).
    Shutdown,
    /// `cancel_all`: every blocker ends cancelled.
    CancelAll,
    /// Time passes (a timed submit's deadline, a rate window).
    Sleep,
    Nothing,
}

const EVENTS: [Event; 7] = [
    Event::Free,
    Event::Grow,
    Event::Shrink,
    Event::Shutdown,
    Event::CancelAll,
    Event::Sleep,
    Event::Nothing,
];

/// One case: a pool made full by blockers; the submit under test `s` (options by the seed;
/// `submit`, `submit_with` or `run`) and a later waiter `w`; `s` polled `polls` times with
/// events in between, then dropped; then everything is let go and checked.
async fn submit_case(kind: Kind, seed: u64) {
    let mut rng = Rng::new(seed);
    let flow = Flow {
        keys: rng.below(4) == 0,
        weights: rng.below(4) == 0,
        rate: rng.below(4) == 0,
        elastic: rng.below(2) == 0,
    };
    let conc = 1 + rng.below(2) as usize;
    let queue = rng.below(2) as usize;
    let pool = P::new(kind, conc, queue, flow);
    let full = rng.below(5) != 0;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut blockers = Vec::new();
    if full {
        for _ in 0..pool.room() {
            blockers.push(pool.blocker(&gate).await);
        }
        settle().await;
    }
    let what = format!("{kind:?} seed {seed} flow {flow:?} conc {conc} queue {queue} full {full}");

    // The submit under test.
    let s_counts = Arc::new(Counts::default());
    let api = rng.below(3);
    let mut opts = SubmitOptions::new().priority(rng.below(3) as i32 - 1);
    if flow.keys && rng.below(2) == 0 {
        opts = opts.key("k");
    }
    if flow.weights && rng.below(2) == 0 {
        opts = opts.weight(2);
    }
    if rng.below(3) == 0 {
        opts = opts.timeout(Duration::from_millis(1 + rng.below(20)));
    }
    enum S<'a> {
        Submit(BoxFut<'a, Result<TaskHandle<u32>, SubmitErrorKind>>),
        Run(BoxFut<'a, Result<u32, ()>>),
    }
    let mut s = match api {
        0 => S::Submit(pool.submit_plain(&s_counts)),
        1 => S::Submit(pool.submit_probe(&s_counts, opts.clone())),
        _ => S::Run(pool.run_probe(&s_counts)),
    };
    // A later waiter, with a priority of its own.
    let w_counts = Arc::new(Counts::default());
    let mut w = pool.submit_probe(
        &w_counts,
        SubmitOptions::new().priority(rng.below(3) as i32 - 1),
    );
    let polls = rng.below(4);
    let mut s_handle = None;
    let mut s_done = false;
    let mut w_first = rng.below(2) == 0;
    let mut w_handle = None;
    let mut w_done = false;
    let mut cancelled_all = false;
    for _ in 0..polls {
        match &mut s {
            S::Submit(f) => {
                if let Poll::Ready(r) = poll_noop(f) {
                    s_handle = r.ok();
                    s_done = true;
                }
            }
            S::Run(f) => {
                if poll_noop(f).is_ready() {
                    s_done = true;
                }
            }
        }
        if w_first && !w_done {
            if let Poll::Ready(r) = poll_noop(&mut w) {
                w_handle = r.ok();
                w_done = true;
            }
        }
        w_first = true;
        match EVENTS[rng.below(EVENTS.len() as u64) as usize] {
            Event::Free => gate.add_permits(1),
            Event::Grow => pool.set_max_concurrency(conc + 1),
            Event::Shrink => pool.set_max_concurrency(conc.saturating_sub(1).max(1)),
            Event::Shutdown => drop(pool.shutdown()),
            Event::CancelAll => {
                cancelled_all = true;
                drop(pool.cancel_all())
            }
            Event::Sleep => tokio::time::sleep(Duration::from_millis(rng.below(30))).await,
            Event::Nothing => {}
        }
        settle().await;
        if s_done {
            break;
        }
    }
    // Dropped here, wherever it stood.
    drop(s);
    // Everything else lets go: blockers end, the pool regains its size.
    gate.add_permits(1000);
    pool.set_max_concurrency(conc);
    if !w_done {
        let r = support::within(&format!("{what}: the later waiter"), w).await;
        w_handle = r.ok();
    } else {
        drop(w);
    }
    let w_accepted = w_handle.is_some();
    if let Some(h) = w_handle {
        match support::within(&format!("{what}: w's handle"), h).await {
            Ok(v) => assert_eq!(v, 7),
            Err(e) => assert!(
                cancelled_all && e.is_cancelled(),
                "{what}: the later waiter's task: {e}"
            ),
        }
    }
    if let Some(h) = s_handle.take() {
        // Accepted: its handle resolves (the task ran, or it was cancelled and says so).
        let r = support::within(&format!("{what}: s's handle"), h).await;
        if r.is_ok() {
            assert_eq!(s_counts.runs(), 1, "{what}");
        }
    }
    let blockers_n = blockers.len();
    for b in blockers {
        let _ = support::within(&format!("{what}: a blocker"), b).await;
    }
    support::within(&format!("{what}: wait"), pool.wait()).await;
    settle().await;
    // s: dropped exactly once; ran at most once (never, if no handle was returned and it
    // was no `run` that got in).
    assert_eq!(
        s_counts.drops(),
        1,
        "{what}: s dropped {} times (api {api})",
        s_counts.drops()
    );
    assert!(
        s_counts.runs() <= 1,
        "{what}: s ran {} times",
        s_counts.runs()
    );
    if !s_done && api != 2 {
        assert_eq!(s_counts.runs(), 0, "{what}: a dropped submit's task ran");
    }
    // Was s accepted? The pool counts the blockers, w and s.
    let s_accepted = pool.stats().submitted as usize - blockers_n - usize::from(w_accepted) == 1;
    if !s_accepted {
        assert_eq!(s_counts.runs(), 0, "{what}: a task never accepted ran");
    } else if api == 2 && !cancelled_all {
        // A `run` dropped after its task was queued detaches it: it still runs.
        assert_eq!(
            (s_counts.runs(), s_counts.ends()),
            (1, 1),
            "{what}: a detached run"
        );
    }
    assert_eq!(
        w_counts.drops(),
        1,
        "{what}: w dropped {} times",
        w_counts.drops()
    );
    assert_settled(&pool, &what);
    assert_room_whole(&pool, pool.room(), &what).await;
}

/// The number of random cases: `var` from the environment if set, else `default`.
fn cases_from_env(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// [`submit_case`] over many seeds for one pool kind, on a paused current-thread runtime.
fn submit_cases(kind: Kind, cases: u64) {
    let cases = cases_from_env("RC_CASES", cases);
    for seed in 0..cases {
        let rt = support::paused_runtime();
        rt.block_on(submit_case(kind, seed));
    }
}

/// [`submit_case`] on a runtime of 2 workers (real time): the pool's slots run beside
/// the polls and drops.
fn submit_cases_multi_thread(kind: Kind, cases: u64) {
    let cases = cases_from_env("RC_CASES", cases);
    for seed in 1000..1000 + cases {
        let rt = support::multi_thread_of(2);
        rt.block_on(submit_case(kind, seed));
    }
}

#[test]
fn submits_dropped_at_every_poll_multi_thread() {
    for kind in [Kind::Common, Kind::NoQueue, Kind::Smart] {
        submit_cases_multi_thread(kind, 40);
    }
}

#[test]
fn submits_dropped_at_every_poll_common() {
    submit_cases(Kind::Common, 150);
}

#[test]
fn submits_dropped_at_every_poll_no_queue() {
    submit_cases(Kind::NoQueue, 150);
}

#[test]
fn submits_dropped_at_every_poll_smart() {
    submit_cases(Kind::Smart, 150);
}

// ----- 2. waits, shutdowns and cancel_all dropped at every poll -------------------------

/// `wait`, `shutdown`, `shutdown_timeout` and `cancel_all`, each polled 0, 1, 2 or 3
/// times (time passing in between) then dropped, in a pool with running and queued
/// tasks: the pool is left as the docs say (a wait: open, nothing cancelled; a shutdown:
/// closed, nothing cancelled, the tasks finish; a `shutdown_timeout` dropped before its
/// deadline: the same, nothing abandoned; `cancel_all`: every task cancelled, even
/// unpolled), and settles with its room whole.
#[test]
fn waits_and_shutdowns_dropped_at_every_poll() {
    for kind in [Kind::Common, Kind::NoQueue, Kind::Smart] {
        for call in 0..4 {
            for polls in 0..4 {
                let rt = support::paused_runtime();
                rt.block_on(async {
                    let what = format!("{kind:?} call {call} polls {polls}");
                    let pool = P::new(kind, 2, 2, Flow::default());
                    let gate = Arc::new(tokio::sync::Semaphore::new(0));
                    let mut blockers = Vec::new();
                    for _ in 0..pool.room() {
                        blockers.push(pool.blocker(&gate).await);
                    }
                    settle().await;
                    let mut fut: BoxFut<'static, ()> = match call {
                        0 => pool.wait(),
                        1 => pool.shutdown(),
                        2 => {
                            use futures_util::FutureExt;
                            Box::pin(pool.shutdown_timeout(Duration::from_secs(3600)).map(drop))
                        }
                        _ => pool.cancel_all(),
                    };
                    for _ in 0..polls {
                        // `cancel_all` may end once the tasks are dropped.
                        if poll_noop(&mut fut).is_ready() {
                            assert_eq!(call, 3, "{what}: ended early");
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    drop(fut);
                    assert_eq!(pool.is_closed(), call == 1 || call == 2, "{what}: closed");
                    gate.add_permits(1000);
                    let mut cancelled = 0;
                    for b in blockers {
                        match support::within(&what, b).await {
                            Ok(()) => {}
                            Err(e) => {
                                assert!(e.is_cancelled(), "{what}: {e}");
                                cancelled += 1;
                            }
                        }
                    }
                    let expect = if call == 3 { pool.room() } else { 0 };
                    assert_eq!(cancelled, expect, "{what}: tasks cancelled");
                    support::within(&what, pool.wait()).await;
                    assert_settled(&pool, &what);
                    assert_room_whole(&pool, pool.room(), &what).await;
                });
            }
        }
    }
}

// ----- 3. groups: submits and joins dropped at every poll --------------------------------

/// A group of one pool kind behind one face (futures or recipes).
enum G {
    F(nb_aiopool::TaskGroup<u32>),
    S(nb_aiopool::SmartTaskGroup<u32>),
}

impl G {
    fn of(pool: &P, watched: bool) -> G {
        match pool {
            P::C(p) => G::F(p.group().cancel_on_panic(watched)),
            P::N(p) => G::F(p.group().cancel_on_panic(watched)),
            P::S(p, _) => G::S(p.group().cancel_on_panic(watched)),
        }
    }

    fn submit(
        &mut self,
        c: &Arc<Counts>,
    ) -> BoxFut<'_, Result<nb_aiopool::TaskId, SubmitErrorKind>> {
        use futures_util::FutureExt;
        match self {
            G::F(g) => Box::pin(g.submit(probe_fut(c)).map(|r| r.map_err(|e| e.kind()))),
            G::S(g) => Box::pin(g.submit(probe_recipe(c)).map(|r| r.map_err(|e| e.kind()))),
        }
    }

    fn join_next_with_id(
        &mut self,
    ) -> BoxFut<'_, Option<(nb_aiopool::TaskId, Result<u32, nb_aiopool::TaskError>)>> {
        match self {
            G::F(g) => Box::pin(g.join_next_with_id()),
            G::S(g) => Box::pin(g.join_next_with_id()),
        }
    }

    fn len(&self) -> usize {
        match self {
            G::F(g) => g.len(),
            G::S(g) => g.len(),
        }
    }
}

/// Random submits and `join_next_with_id`s into a group of a full pool, each polled a
/// random number of times then dropped, with places freed between: every task the group
/// accepted is joined exactly once (by the id its submit returned), none that a dropped
/// submit did not return runs, every task is dropped once, and the pool settles with its
/// room whole. Then the group is dropped with tasks left: they are aborted, and their
/// places are free at once.
#[test]
fn group_submits_and_joins_dropped_at_every_poll() {
    for kind in [Kind::Common, Kind::NoQueue, Kind::Smart] {
        let n: u64 = cases_from_env("RC_CASES", 60);
        for seed in 0..n {
            let rt = support::paused_runtime();
            rt.block_on(group_case(kind, seed));
        }
    }
}

async fn group_case(kind: Kind, seed: u64) {
    let mut rng = Rng::new(seed);
    let watched = rng.below(2) == 0;
    let pool = P::new(kind, 2, 1, Flow::default());
    let what = format!("{kind:?} seed {seed} watched {watched}");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut blockers = Vec::new();
    for _ in 0..pool.room() {
        blockers.push(pool.blocker(&gate).await);
    }
    settle().await;
    let mut group = G::of(&pool, watched);
    let mut accepted = std::collections::HashMap::new();
    let mut refused = Vec::new();
    let mut joined = std::collections::HashSet::new();
    for _ in 0..12 {
        if rng.below(2) == 0 {
            let c = Arc::new(Counts::default());
            let polls = rng.below(3);
            let mut f = group.submit(&c);
            let mut got = None;
            for _ in 0..=polls {
                if let Poll::Ready(r) = poll_noop(&mut f) {
                    got = Some(r);
                    break;
                }
                if rng.below(2) == 0 {
                    gate.add_permits(1);
                }
                settle().await;
            }
            drop(f);
            match got {
                Some(Ok(id)) => {
                    assert!(accepted.insert(id, c).is_none(), "{what}: an id twice");
                }
                _ => refused.push(c),
            }
        } else {
            let polls = rng.below(3);
            let mut j = group.join_next_with_id();
            for _ in 0..=polls {
                if let Poll::Ready(r) = poll_noop(&mut j) {
                    if let Some((id, r)) = r {
                        assert!(accepted.contains_key(&id), "{what}: joined an unknown id");
                        assert!(joined.insert(id), "{what}: joined twice");
                        assert_eq!(r.ok(), Some(7), "{what}");
                    }
                    break;
                }
                if rng.below(2) == 0 {
                    gate.add_permits(1);
                }
                settle().await;
            }
        }
    }
    // Half the cases: join the rest; the others: drop the group with them in it.
    gate.add_permits(1000);
    if rng.below(2) == 0 {
        loop {
            let next = support::within(&what, group.join_next_with_id()).await;
            let Some((id, r)) = next else { break };
            assert!(joined.insert(id), "{what}: joined twice");
            assert_eq!(r.ok(), Some(7), "{what}");
        }
        assert_eq!(joined.len(), accepted.len(), "{what}: results lost");
    } else {
        let left = group.len();
        assert_eq!(left + joined.len(), accepted.len(), "{what}: len");
    }
    drop(group);
    for b in blockers {
        let _ = support::within(&what, b).await;
    }
    support::within(&what, pool.wait()).await;
    settle().await;
    until_dropped(refused.iter().chain(accepted.values())).await;
    for c in &refused {
        assert_eq!(
            (c.runs(), c.drops()),
            (0, 1),
            "{what}: a refused or dropped submit"
        );
    }
    for c in accepted.values() {
        assert_eq!(c.drops(), 1, "{what}: an accepted task's drops");
        assert!(c.runs() <= 1, "{what}");
    }
    assert_settled(&pool, &what);
    assert_room_whole(&pool, pool.room(), &what).await;
}

// ----- 4. streams dropped at every poll --------------------------------------------------

/// A map stream (ordered or not) of 8 inputs through a full pool, polled a random number
/// of times, with places freed between, then dropped: every input's task is dropped once,
/// runs at most once, and the pool settles with its room whole (a place the stream held
/// or waited for is given back).
#[test]
fn streams_dropped_at_every_poll() {
    for kind in [Kind::Common, Kind::NoQueue, Kind::Smart] {
        let n: u64 = cases_from_env("RC_CASES", 60);
        for seed in 0..n {
            let rt = support::paused_runtime();
            rt.block_on(stream_case(kind, seed));
        }
    }
}

async fn stream_case(kind: Kind, seed: u64) {
    use futures_util::StreamExt;
    let mut rng = Rng::new(seed);
    let ordered = rng.below(2) == 0;
    let pool = P::new(kind, 2, 1, Flow::default());
    let what = format!("{kind:?} seed {seed} ordered {ordered}");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut blockers = Vec::new();
    let nblock = rng.below(pool.room() as u64 + 1) as usize;
    for _ in 0..nblock {
        blockers.push(pool.blocker(&gate).await);
    }
    settle().await;
    let counts: Vec<Arc<Counts>> = (0..8).map(|_| Arc::new(Counts::default())).collect();
    let inputs = futures_util::stream::iter(counts.clone());
    let mut stream: Pin<
        Box<dyn futures_util::Stream<Item = Result<u32, nb_aiopool::TaskError>> + Send>,
    > = match (&pool, ordered) {
        (P::C(p), false) => Box::pin(p.map_unordered(inputs, |c| probe_fut(&c))),
        (P::C(p), true) => Box::pin(p.map_ordered(inputs, |c| probe_fut(&c))),
        (P::N(p), false) => Box::pin(p.map_unordered(inputs, |c| probe_fut(&c))),
        (P::N(p), true) => Box::pin(p.map_ordered(inputs, |c| probe_fut(&c))),
        (P::S(p, _), false) => Box::pin(p.map_unordered(inputs, |c| probe_recipe(&c))),
        (P::S(p, _), true) => Box::pin(p.map_ordered(inputs, |c| probe_recipe(&c))),
    };
    let polls = rng.below(8);
    let mut out = 0;
    for _ in 0..polls {
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(Some(r)) = stream.poll_next_unpin(&mut cx) {
            assert_eq!(r.ok(), Some(7), "{what}");
            out += 1;
        }
        if rng.below(2) == 0 {
            gate.add_permits(1);
        }
        settle().await;
    }
    drop(stream);
    gate.add_permits(1000);
    for b in blockers {
        let _ = support::within(&what, b).await;
    }
    support::within(&what, pool.wait()).await;
    settle().await;
    until_dropped(counts.iter()).await;
    let ran = counts.iter().filter(|c| c.runs() > 0).count();
    assert!(ran >= out, "{what}: {out} results out of {ran} runs");
    for c in &counts {
        assert_eq!(
            c.drops(),
            c.made(),
            "{what}: an input's task made {} times, dropped {}",
            c.made(),
            c.drops()
        );
        assert!(c.runs() <= 1, "{what}");
    }
    assert_settled(&pool, &what);
    assert_room_whole(&pool, pool.room(), &what).await;
}

// ----- 5. batches dropped at every poll --------------------------------------------------

/// `batch_submit` and `batch_run` of 5 tasks into a full pool, polled a random number of
/// times with places freed between, then dropped: `batch_run`'s tasks not finished are
/// aborted (on one thread, none starts or returns after the drop), `batch_submit`'s
/// submitted ones run on, detached; every task is dropped once, and the pool settles with
/// its room whole.
#[test]
fn batches_dropped_at_every_poll() {
    for kind in [Kind::Common, Kind::NoQueue, Kind::Smart] {
        let n: u64 = cases_from_env("RC_CASES", 60);
        for seed in 0..n {
            let rt = support::paused_runtime();
            rt.block_on(batch_case(kind, seed, true));
        }
    }
}

async fn batch_case(kind: Kind, seed: u64, strict: bool) {
    use futures_util::FutureExt;
    let mut rng = Rng::new(seed);
    let run = rng.below(2) == 0;
    let pool = P::new(kind, 2, 1, Flow::default());
    let what = format!("{kind:?} seed {seed} run {run}");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut blockers = Vec::new();
    for _ in 0..pool.room() {
        blockers.push(pool.blocker(&gate).await);
    }
    settle().await;
    let counts: Vec<Arc<Counts>> = (0..5).map(|_| Arc::new(Counts::default())).collect();
    let mut fut: BoxFut<'_, usize> = match (&pool, run) {
        (P::C(p), false) => Box::pin(
            p.batch_submit(counts.iter().map(probe_fut))
                .map(|r| r.map_or(0, |v| v.len())),
        ),
        (P::C(p), true) => Box::pin(
            p.batch_run(counts.iter().map(probe_fut))
                .map(|r| r.map_or(0, |v| v.len())),
        ),
        (P::N(p), false) => Box::pin(
            p.batch_submit(counts.iter().map(probe_fut))
                .map(|r| r.map_or(0, |v| v.len())),
        ),
        (P::N(p), true) => Box::pin(
            p.batch_run(counts.iter().map(probe_fut))
                .map(|r| r.map_or(0, |v| v.len())),
        ),
        (P::S(p, _), false) => Box::pin(
            p.batch_submit(counts.iter().map(probe_recipe))
                .map(|r| r.map_or(0, |v| v.len())),
        ),
        (P::S(p, _), true) => Box::pin(
            p.batch_run(counts.iter().map(probe_recipe))
                .map(|r| r.map_or(0, |v| v.len())),
        ),
    };
    let polls = rng.below(10);
    let mut done = false;
    for _ in 0..polls {
        if poll_noop(&mut fut).is_ready() {
            done = true;
            break;
        }
        if rng.below(2) == 0 {
            gate.add_permits(1);
        }
        settle().await;
    }
    drop(fut);
    let at_drop: Vec<(usize, usize)> = counts.iter().map(|c| (c.runs(), c.ends())).collect();
    gate.add_permits(1000);
    for b in blockers {
        let _ = support::within(&what, b).await;
    }
    support::within(&what, pool.wait()).await;
    settle().await;
    until_dropped(counts.iter()).await;
    for c in &counts {
        assert_eq!(
            c.drops(),
            c.made(),
            "{what}: a task made {} times, dropped {}",
            c.made(),
            c.drops()
        );
        assert!(c.runs() <= 1, "{what}");
    }
    let s = pool.stats();
    let submitted = s.submitted as usize - pool.room();
    if run && !done && strict {
        // Aborted at the drop: none starts or returns after it (on one thread; on
        // several, a poll under way on another worker when the abort comes goes on to its
        // next `.await`: `TaskHandle::abort`).
        let after: Vec<(usize, usize)> = counts.iter().map(|c| (c.runs(), c.ends())).collect();
        assert_eq!(
            at_drop, after,
            "{what}: batch_run's tasks ran on after its drop"
        );
    }
    if !run {
        let ran = counts.iter().filter(|c| c.runs() == 1).count();
        assert_eq!(
            ran, submitted,
            "{what}: batch_submit's detached tasks run on"
        );
    }
    assert_settled(&pool, &what);
    assert_room_whole(&pool, pool.room(), &what).await;
}

// ----- 6. what dropping a group, a stream or a join_all does to queued tasks -------------

/// A group's or stream's queued tasks leave the queue when it is dropped, at once (as an
/// abort of a queued task does: `TaskHandle::abort`), not "when their turn comes", as the
/// `Dropping` docs of `TaskGroup` and `MapUnordered` say: their places are free for the
/// next `try_submit` right after the drop, and `stats()` counts them cancelled. (Passes:
/// it pins the behaviour the docs understate.)
#[test]
fn dropping_a_group_or_stream_frees_its_queued_places_at_once() {
    for kind in [Kind::Common, Kind::Smart] {
        for stream in [false, true] {
            let rt = support::paused_runtime();
            rt.block_on(async {
                let what = format!("{kind:?} stream {stream}");
                let pool = P::new(kind, 1, 2, Flow::default());
                let gate = Arc::new(tokio::sync::Semaphore::new(0));
                let blocker = pool.blocker(&gate).await;
                settle().await;
                let counts: Vec<Arc<Counts>> =
                    (0..2).map(|_| Arc::new(Counts::default())).collect();
                let holder: Box<dyn Send> = if stream {
                    use futures_util::StreamExt;
                    let inputs = futures_util::stream::iter(counts.clone());
                    let mut s: Pin<
                        Box<
                            dyn futures_util::Stream<Item = Result<u32, nb_aiopool::TaskError>>
                                + Send,
                        >,
                    > = match &pool {
                        P::C(p) => Box::pin(p.map_unordered(inputs, |c| probe_fut(&c))),
                        P::N(p) => Box::pin(p.map_unordered(inputs, |c| probe_fut(&c))),
                        P::S(p, _) => Box::pin(p.map_unordered(inputs, |c| probe_recipe(&c))),
                    };
                    let mut cx = Context::from_waker(Waker::noop());
                    assert!(s.poll_next_unpin(&mut cx).is_pending());
                    Box::new(s)
                } else {
                    let mut g = G::of(&pool, false);
                    for c in &counts {
                        g.submit(c).await.unwrap();
                    }
                    Box::new(g)
                };
                let s = pool.stats();
                assert_eq!((s.running, s.queued), (1, 2), "{what}: {s:?}");
                drop(holder);
                // No yield: the places are free now.
                let s = pool.stats();
                assert_eq!((s.queued, s.cancelled), (0, 2), "{what}: {s:?}");
                let a = pool.try_pending().expect("a place freed by the drop");
                let b = pool.try_pending().expect("a place freed by the drop");
                assert!(pool.try_pending().is_none(), "{what}");
                settle().await;
                for c in &counts {
                    assert_eq!(
                        (c.runs(), c.drops()),
                        (0, 1),
                        "{what}: a queued task of the dropped holder"
                    );
                }
                a.abort();
                b.abort();
                gate.add_permits(1);
                support::within(&what, blocker).await.unwrap();
                support::within(&what, pool.wait()).await;
                assert_settled(&pool, &what);
            });
        }
    }
}

/// `join_all` polled 0, 1, 2, ... times, then dropped: it drops the group, which aborts
/// what is unfinished (a queued task never runs, a running one is dropped at its next
/// `.await`); the room is whole after.
#[test]
fn join_all_dropped_at_every_poll_aborts_the_rest() {
    for kind in [Kind::Common, Kind::NoQueue, Kind::Smart] {
        for polls in 0..5 {
            let rt = support::paused_runtime();
            rt.block_on(async {
                let what = format!("{kind:?} polls {polls}");
                let pool = P::new(kind, 2, 2, Flow::default());
                let counts: Vec<Arc<Counts>> = (0..pool.room())
                    .map(|_| Arc::new(Counts::default()))
                    .collect();
                let mut g = G::of(&pool, false);
                for c in &counts {
                    g.submit(c).await.unwrap();
                }
                let mut all: BoxFut<'static, Vec<Result<u32, nb_aiopool::TaskError>>> = match g {
                    G::F(g) => Box::pin(g.join_all()),
                    G::S(g) => Box::pin(g.join_all()),
                };
                let mut done = false;
                for _ in 0..polls {
                    if let Poll::Ready(v) = poll_noop(&mut all) {
                        assert!(v.iter().all(|r| r.as_ref().ok() == Some(&7)), "{what}");
                        done = true;
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                drop(all);
                let at_drop: Vec<(usize, usize)> =
                    counts.iter().map(|c| (c.runs(), c.ends())).collect();
                support::within(&what, pool.wait()).await;
                settle().await;
                let after: Vec<(usize, usize)> =
                    counts.iter().map(|c| (c.runs(), c.ends())).collect();
                if !done {
                    assert_eq!(
                        at_drop, after,
                        "{what}: tasks ran on after join_all was dropped"
                    );
                }
                for c in &counts {
                    assert_eq!(c.drops(), 1, "{what}");
                }
                assert_settled(&pool, &what);
                assert_room_whole(&pool, pool.room(), &what).await;
            });
        }
    }
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Woken(AtomicUsize);

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

// ----- 7. the waiting submitters' line under drops ---------------------------------------

/// A model of the submitters waiting for room: each with a priority and its arrival;
/// random steps add a waiter (polled once), drop one (granted or not), or free a place
/// (the running task ends). After each free, exactly the best live waiter (highest
/// priority, then first come) holds the place, and its waker was woken: polled, it alone
/// gets in; a granted waiter dropped before its poll passes the place to the next best,
/// and wakes it. Many waiters come and go
/// (the line's stale entries are pruned as it grows), with and without timeouts.
#[test]
fn the_waiting_line_keeps_its_order_under_drops() {
    for kind in [Kind::Common, Kind::NoQueue, Kind::Smart] {
        let n: u64 = cases_from_env("RC_CASES", 40);
        for seed in 0..n {
            let rt = support::paused_runtime();
            rt.block_on(line_case(kind, seed));
        }
    }
}

async fn line_case(kind: Kind, seed: u64) {
    let mut rng = Rng::new(seed);
    let pool = P::new(kind, 1, 0, Flow::default());
    let what = format!("{kind:?} seed {seed}");
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut running = Some(pool.blocker(&gate).await);
    settle().await;
    // (priority, arrival, future, its waker's wake-ups since its last poll)
    type Waiter<'a> = (
        i32,
        u64,
        BoxFut<'a, Result<TaskHandle<()>, SubmitErrorKind>>,
        Arc<Woken>,
    );
    // Polls a waiter with its own waker (its count of wake-ups restarts).
    fn poll_waiter<T>(f: &mut BoxFut<'_, T>, woken: &Arc<Woken>) -> Poll<T> {
        woken.0.store(0, Ordering::SeqCst);
        let waker = Waker::from(Arc::clone(woken));
        f.as_mut().poll(&mut Context::from_waker(&waker))
    }
    // The waiter granted the place was woken (a grant, or a grant passed on by a drop).
    let assert_woken = |line: &[Waiter<'_>], granted: Option<u64>, step: usize| {
        if let Some(a) = granted {
            let w = line.iter().find(|w| w.1 == a).unwrap();
            assert!(
                w.3 .0.load(Ordering::SeqCst) > 0,
                "{what} step {step}: the waiter granted the place (prio {}, arrival {a}) was not woken",
                w.0
            );
        }
    };
    let mut line: Vec<Waiter<'_>> = Vec::new();
    let mut arrivals = 0u64;
    // The best live waiter, by the line's rule: highest priority, then first come.
    fn best(line: &[Waiter<'_>]) -> Option<u64> {
        line.iter()
            .max_by_key(|w| (w.0, std::cmp::Reverse(w.1)))
            .map(|w| w.1)
    }
    // The freed place: `Some(Some(a))` granted to waiter `a` (not polled since),
    // `Some(None)` free room (nobody waited), `None` taken.
    let mut place: Option<Option<u64>> = None;
    for step in 0..300 {
        match rng.below(10) {
            0..=4 => {
                let prio = rng.below(3) as i32 - 1;
                let opts = SubmitOptions::new().priority(prio);
                let mut f: BoxFut<'_, _> = {
                    use futures_util::FutureExt;
                    let g = Arc::clone(&gate);
                    match &pool {
                        P::C(p) => Box::pin(
                            p.submit_with(async move { g.acquire().await.unwrap().forget() }, opts)
                                .map(|r| r.map_err(|e| e.kind())),
                        ),
                        P::N(p) => Box::pin(
                            p.submit_with(async move { g.acquire().await.unwrap().forget() }, opts)
                                .map(|r| r.map_err(|e| e.kind())),
                        ),
                        P::S(p, _) => Box::pin(
                            p.submit_with(
                                move || {
                                    let g = Arc::clone(&g);
                                    async move { g.acquire().await.unwrap().forget() }
                                },
                                opts,
                            )
                            .map(|r| r.map_err(|e| e.kind())),
                        ),
                    }
                };
                let woken = Arc::new(Woken::default());
                let got = poll_waiter(&mut f, &woken);
                if place == Some(None) {
                    // Free room, nobody in line: the newcomer takes it.
                    let Poll::Ready(Ok(h)) = got else {
                        panic!("{what} step {step}: free room not taken")
                    };
                    running = Some(h);
                    place = None;
                } else {
                    // A place granted to a waiter in line is never a newcomer's.
                    assert!(got.is_pending(), "{what} step {step}: a newcomer got in");
                    line.push((prio, arrivals, f, woken));
                    arrivals += 1;
                }
            }
            5..=6 if !line.is_empty() => {
                let i = rng.below(line.len() as u64) as usize;
                let (_, a, f, _) = line.remove(i);
                drop(f);
                if place == Some(Some(a)) {
                    // Granted, then dropped: the place passes to the next best, woken.
                    place = Some(best(&line));
                    assert_woken(&line, place.flatten(), step);
                }
            }
            7..=9 if running.is_some() && place.is_none() => {
                gate.add_permits(1);
                let h = running.take().unwrap();
                support::within(&what, h).await.unwrap();
                place = Some(best(&line));
                assert_woken(&line, place.flatten(), step);
            }
            _ => {}
        }
        if let Some(Some(granted)) = place {
            if rng.below(2) == 0 {
                // Poll the whole line, the granted waiter last: only it gets in.
                let at = line.iter().position(|w| w.1 == granted).unwrap();
                let mut order: Vec<usize> = (0..line.len()).filter(|&i| i != at).collect();
                order.push(at);
                for i in order {
                    let w = Arc::clone(&line[i].3);
                    let got = poll_waiter(&mut line[i].2, &w);
                    if i == at {
                        let Poll::Ready(Ok(h)) = got else {
                            panic!(
                                "{what} step {step}: the waiter granted the place (prio {}, arrival {}) did not get in",
                                line[i].0, line[i].1
                            )
                        };
                        running = Some(h);
                    } else {
                        assert!(
                            got.is_pending(),
                            "{what} step {step}: waiter (prio {}, arrival {}) got in before the one granted (prio {}, arrival {})",
                            line[i].0,
                            line[i].1,
                            line[at].0,
                            line[at].1
                        );
                    }
                }
                drop(line.remove(at));
                place = None;
            }
        }
        settle().await;
    }
    drop(line);
    gate.add_permits(1000);
    if let Some(h) = running {
        support::within(&what, h).await.unwrap();
    }
    support::within(&what, pool.wait()).await;
    assert_settled(&pool, &what);
    assert_room_whole(&pool, pool.room(), &what).await;
}

// ----- 8. submits waiting across a runtime's end -----------------------------------------

/// A submit polled outside any runtime (a plain executor) waits for room in a pool whose
/// running task belongs to a runtime that then ends (the task is cancelled and its place
/// granted to the waiter, or, for a SmartAioPool, its re-run keeps the place); the
/// waiting submit is then dropped: its task never runs and is dropped once, and a new
/// runtime finds the room whole.
#[test]
fn a_waiting_submit_dropped_after_its_pools_runtime_ended() {
    for kind in [Kind::Common, Kind::NoQueue, Kind::Smart] {
        for polls_after in 0..3 {
            let what = format!("{kind:?} polls after {polls_after}");
            let pool = P::new(kind, 1, 0, Flow::default());
            let rt_a = support::multi_thread_of(1);
            let gate = Arc::new(tokio::sync::Semaphore::new(0));
            let blocker = rt_a.block_on(pool.blocker(&gate));
            support::until("the blocker runs", || pool.stats().running == 1);
            let c = Arc::new(Counts::default());
            let mut s = pool.submit_probe(&c, SubmitOptions::new());
            assert!(
                poll_noop(&mut s).is_pending(),
                "{what}: room in a full pool"
            );
            drop(rt_a);
            let mut refused = None;
            for _ in 0..polls_after {
                if let Poll::Ready(r) = poll_noop(&mut s) {
                    refused = Some(r);
                    break;
                }
            }
            drop(s);
            // Refused (NoRuntime: no runtime left to run it), or dropped while waiting.
            if let Some(r) = refused {
                assert!(r.is_err(), "{what}: accepted with no runtime: {r:?}");
            }
            assert_eq!((c.runs(), c.drops()), (0, 1), "{what}");
            let rt_b = support::paused_runtime();
            rt_b.block_on(async {
                if kind == Kind::Smart {
                    // The cut-off blocker is re-run here; let it end.
                    gate.add_permits(1);
                    support::within(&what, blocker).await.unwrap();
                } else {
                    let e = support::within(&what, blocker).await.unwrap_err();
                    assert!(e.is_cancelled(), "{what}: {e}");
                }
                support::within(&what, pool.wait()).await;
                assert_settled(&pool, &what);
                assert_room_whole(&pool, pool.room(), &what).await;
            });
        }
    }
}

// ----- 9. handles dropped at every poll ---------------------------------------------------

/// A task's handle polled 0, 1, 2, ... times (the task queued, running or done), then
/// dropped: the task runs on to its end (detached), its result is dropped exactly once,
/// and by the time `wait()` returns (as `TaskHandle`'s "Dropping" says); current-thread
/// and 2 workers.
#[test]
fn handles_dropped_at_every_poll_detach() {
    for multi in [false, true] {
        for kind in [Kind::Common, Kind::NoQueue, Kind::Smart] {
            for polls in 0..4 {
                let rt = if multi {
                    support::multi_thread_of(2)
                } else {
                    support::paused_runtime()
                };
                rt.block_on(async {
                    let what = format!("{kind:?} multi {multi} polls {polls}");
                    let pool = P::new(kind, 1, 1, Flow::default());
                    // The result counts its drop; the task counts its run and end.
                    let result = Arc::new(Counts::default());
                    let task = Arc::new(Counts::default());
                    let (r, t) = (Arc::clone(&result), Arc::clone(&task));
                    let mut h: BoxFut<'static, Result<Tok, nb_aiopool::TaskError>> = match &pool {
                        P::C(p) => Box::pin(
                            p.submit(async move {
                                t.runs.fetch_add(1, Ordering::SeqCst);
                                tokio::task::yield_now().await;
                                t.ends.fetch_add(1, Ordering::SeqCst);
                                Tok(r)
                            })
                            .await
                            .unwrap(),
                        ),
                        P::N(p) => Box::pin(
                            p.submit(async move {
                                t.runs.fetch_add(1, Ordering::SeqCst);
                                tokio::task::yield_now().await;
                                t.ends.fetch_add(1, Ordering::SeqCst);
                                Tok(r)
                            })
                            .await
                            .unwrap(),
                        ),
                        P::S(p, _) => Box::pin(
                            p.submit(move || {
                                let (t, r) = (Arc::clone(&t), Arc::clone(&r));
                                async move {
                                    t.runs.fetch_add(1, Ordering::SeqCst);
                                    tokio::task::yield_now().await;
                                    t.ends.fetch_add(1, Ordering::SeqCst);
                                    Tok(r)
                                }
                            })
                            .await
                            .unwrap(),
                        ),
                    };
                    let mut got = None;
                    for _ in 0..polls {
                        if let Poll::Ready(v) = poll_noop(&mut h) {
                            got = Some(v);
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    drop(h);
                    let taken = got.is_some();
                    drop(got);
                    support::within(&what, pool.wait()).await;
                    assert_eq!(
                        (task.runs(), task.ends()),
                        (1, 1),
                        "{what}: a detached task runs to its end"
                    );
                    assert_eq!(
                        result.drops(),
                        1,
                        "{what}: the result dropped (taken {taken}) by the time wait() returned"
                    );
                    assert_settled(&pool, &what);
                    assert_room_whole(&pool, pool.room(), &what).await;
                });
            }
        }
    }
}

/// Groups, streams and batches dropped at every poll, on 2 workers (real time).
#[test]
fn groups_streams_and_batches_dropped_at_every_poll_multi_thread() {
    for kind in [Kind::Common, Kind::NoQueue, Kind::Smart] {
        for seed in 500..515 {
            let rt = support::multi_thread_of(2);
            rt.block_on(group_case(kind, seed));
            rt.block_on(stream_case(kind, seed));
            rt.block_on(batch_case(kind, seed, false));
        }
    }
}

// ----- 10. a storm of cancellations on 2 workers -----------------------------------------

/// Four tokio tasks on 2 workers, each doing random things to one pool (flow control by
/// the seed): submits raced against timers (`select!`, the loser dropped), timed submits,
/// `try_submit`s, aborts, resizes, `cancel_all`s dropped unpolled, streams and groups
/// consumed in part then dropped, joins under timeouts. Afterwards every task made was
/// dropped exactly once and ran at most once, and the pool settles with its room whole.
#[test]
fn storm_of_cancellations_multi_thread() {
    for kind in [Kind::Common, Kind::NoQueue, Kind::Smart] {
        let n: u64 = cases_from_env("RC_STORM", 6);
        for seed in 0..n {
            let rt = support::multi_thread_of(2);
            rt.block_on(storm_case(kind, seed));
        }
    }
}

async fn storm_case(kind: Kind, seed: u64) {
    let mut rng = Rng::new(seed + 77);
    let flow = Flow {
        keys: rng.below(2) == 0,
        weights: rng.below(2) == 0,
        rate: rng.below(3) == 0,
        elastic: rng.below(2) == 0,
    };
    let conc = 2;
    let pool = P::new(kind, conc, 2, flow);
    let what = format!("{kind:?} seed {seed} flow {flow:?}");
    let all: Arc<std::sync::Mutex<Vec<Arc<Counts>>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let pool = pool.clone();
        let all = Arc::clone(&all);
        let mut rng = Rng::new(seed * 31 + w);
        workers.push(tokio::spawn(async move {
            let mut handles: Vec<TaskHandle<u32>> = Vec::new();
            let new = |all: &Arc<std::sync::Mutex<Vec<Arc<Counts>>>>| {
                let c = Arc::new(Counts::default());
                all.lock().unwrap().push(Arc::clone(&c));
                c
            };
            for _ in 0..40 {
                match rng.below(10) {
                    0..=2 => {
                        let c = new(&all);
                        let mut opts = SubmitOptions::new().priority(rng.below(3) as i32 - 1);
                        if flow.keys && rng.below(2) == 0 {
                            opts = opts.key(if rng.below(2) == 0 { "a" } else { "b" });
                        }
                        if flow.weights {
                            opts = opts.weight(1 + rng.below(3) as u32);
                        }
                        if rng.below(3) == 0 {
                            opts = opts.timeout(Duration::from_micros(rng.below(3000)));
                        }
                        let sleep = tokio::time::sleep(Duration::from_micros(rng.below(3000)));
                        tokio::select! {
                            r = pool.submit_probe(&c, opts) => {
                                if let Ok(h) = r { handles.push(h) }
                            }
                            _ = sleep => {}
                        }
                    }
                    3 => {
                        if let Some(h) = handles.pop() {
                            h.abort();
                            let _ = h.await;
                        }
                    }
                    4 => {
                        if !handles.is_empty() {
                            let i = rng.below(handles.len() as u64) as usize;
                            let h = handles.swap_remove(i);
                            let _ = tokio::time::timeout(Duration::from_micros(rng.below(2000)), h)
                                .await;
                        }
                    }
                    5 => pool.set_max_concurrency(1 + rng.below(3) as usize),
                    6 if rng.below(4) == 0 => drop(pool.cancel_all()),
                    7 => {
                        use futures_util::StreamExt;
                        let cs: Vec<Arc<Counts>> = (0..4).map(|_| new(&all)).collect();
                        let inputs = futures_util::stream::iter(cs);
                        let mut s: Pin<
                            Box<
                                dyn futures_util::Stream<Item = Result<u32, nb_aiopool::TaskError>>
                                    + Send,
                            >,
                        > = match (&pool, rng.below(2) == 0) {
                            (P::C(p), false) => {
                                Box::pin(p.map_unordered(inputs, |c| probe_fut(&c)))
                            }
                            (P::C(p), true) => Box::pin(p.map_ordered(inputs, |c| probe_fut(&c))),
                            (P::N(p), false) => {
                                Box::pin(p.map_unordered(inputs, |c| probe_fut(&c)))
                            }
                            (P::N(p), true) => Box::pin(p.map_ordered(inputs, |c| probe_fut(&c))),
                            (P::S(p, _), false) => {
                                Box::pin(p.map_unordered(inputs, |c| probe_recipe(&c)))
                            }
                            (P::S(p, _), true) => {
                                Box::pin(p.map_ordered(inputs, |c| probe_recipe(&c)))
                            }
                        };
                        let take = rng.below(5) as usize;
                        let _ =
                            tokio::time::timeout(Duration::from_micros(rng.below(3000)), async {
                                for _ in 0..take {
                                    s.next().await;
                                }
                            })
                            .await;
                    }
                    8 => {
                        let mut g = G::of(&pool, rng.below(2) == 0);
                        for _ in 0..rng.below(4) {
                            let c = new(&all);
                            let _ = tokio::time::timeout(
                                Duration::from_micros(rng.below(2000)),
                                g.submit(&c),
                            )
                            .await;
                        }
                        let _ = tokio::time::timeout(
                            Duration::from_micros(rng.below(2000)),
                            g.join_next_with_id(),
                        )
                        .await;
                    }
                    _ => {
                        let c = new(&all);
                        if let Some(h) = match &pool {
                            P::C(p) => p.try_submit(probe_fut(&c)).ok(),
                            P::N(p) => p.try_submit(probe_fut(&c)).ok(),
                            P::S(p, _) => p.try_submit(probe_recipe(&c)).ok(),
                        } {
                            handles.push(h);
                        }
                    }
                }
            }
            // The rest run detached.
            drop(handles);
        }));
    }
    for w in workers {
        support::within(&what, w).await.unwrap();
    }
    pool.set_max_concurrency(conc);
    support::within(&what, pool.wait()).await;
    // Aborted queued tasks are dropped by a task of their runtime: give it a moment.
    let made = all.lock().unwrap().clone();
    until_dropped(made.iter()).await;
    for c in all.lock().unwrap().iter() {
        assert_eq!(
            c.drops(),
            c.made(),
            "{what}: a task made {} times, dropped {}",
            c.made(),
            c.drops()
        );
        assert!(c.runs() <= 1, "{what}: a task ran {} times", c.runs());
    }
    assert_settled(&pool, &what);
    assert_room_whole(&pool, pool.room(), &what).await;
}

// ----- 11. a group's refusals (documentation) --------------------------------------------

/// A group's `submit` and `try_submit` refuse with `NoRuntime` (the task handed back
/// unpolled) when no runtime can run the task: from outside any runtime, after the pool's
/// runtimes ended. `TaskGroup::submit`'s and `try_submit`'s `# Errors` (and
/// `SmartTaskGroup`'s, "as `TaskGroup::submit`") list shut down, a tripped group, full and
/// a nested submit into a full pool, not this (finding 186's gap, for groups). Passes: it
/// pins the behaviour the docs leave out.
#[test]
fn doc_group_submit_and_try_submit_can_refuse_with_no_runtime() {
    for kind in [Kind::Common, Kind::NoQueue, Kind::Smart] {
        let what = format!("{kind:?}");
        let pool = P::new(kind, 2, 2, Flow::default());
        {
            let rt = support::current_thread();
            let c = Arc::new(Counts::default());
            let h = rt
                .block_on(pool.submit_probe(&c, SubmitOptions::new()))
                .unwrap();
            assert_eq!(rt.block_on(h).unwrap(), 7);
        }
        let c = Arc::new(Counts::default());
        let mut g = G::of(&pool, false);
        let r = support::plain_block_on(g.submit(&c));
        assert_eq!(r.unwrap_err(), SubmitErrorKind::NoRuntime, "{what}: submit");
        assert_eq!((c.runs(), c.drops()), (0, 1), "{what}");
        let c = Arc::new(Counts::default());
        let refused = match &mut g {
            G::F(g) => g.try_submit(probe_fut(&c)).unwrap_err().kind(),
            G::S(g) => g.try_submit(probe_recipe(&c)).unwrap_err().kind(),
        };
        assert_eq!(
            refused,
            nb_aiopool::TrySubmitErrorKind::NoRuntime,
            "{what}: try_submit"
        );
        assert_eq!((c.runs(), c.drops()), (0, 1), "{what}");
    }
}

/// `TaskGroup`'s docs say `tokio::time::timeout(d, group.join_all())` "leaves no task
/// running when it fires". Its running tasks are aborted then (their handles resolve, a
/// queued one's place is free at once), but a running one is dropped only at its slot's
/// next poll: right after the timeout it still counts as running and holds its slot (as
/// `PoolStats` and `TaskHandle::abort` say of aborts), and a `try_submit` made at once
/// finds no room. Passes: it pins what the docs overstate.
#[test]
fn doc_a_group_dropped_by_a_timeout_frees_a_running_tasks_slot_at_its_next_poll() {
    for kind in [Kind::Common, Kind::NoQueue, Kind::Smart] {
        let rt = support::paused_runtime();
        rt.block_on(async {
            let what = format!("{kind:?}");
            let pool = P::new(kind, 1, 0, Flow::default());
            let c = Arc::new(Counts::default());
            let mut g = G::of(&pool, false);
            // A task that never ends, holding the one slot.
            match &mut g {
                G::F(g) => {
                    let tok = Tok(Arc::clone(&c));
                    g.submit(async move {
                        let _tok = tok;
                        std::future::pending::<u32>().await
                    })
                    .await
                    .unwrap();
                }
                G::S(g) => {
                    let c2 = Arc::clone(&c);
                    g.submit(move || {
                        let tok = Tok(Arc::clone(&c2));
                        async move {
                            let _tok = tok;
                            std::future::pending::<u32>().await
                        }
                    })
                    .await
                    .unwrap();
                }
            }
            settle().await;
            let all: BoxFut<'static, _> = match g {
                G::F(g) => Box::pin(g.join_all()),
                G::S(g) => Box::pin(g.join_all()),
            };
            assert!(tokio::time::timeout(Duration::from_millis(10), all)
                .await
                .is_err());
            // Fired: the task is aborted but not yet dropped.
            assert_eq!(pool.stats().running, 1, "{what}: {:?}", pool.stats());
            assert_eq!(c.drops(), 0, "{what}");
            assert!(pool.try_pending().is_none(), "{what}: room at once");
            tokio::task::yield_now().await;
            settle().await;
            assert_eq!(c.drops(), 1, "{what}");
            assert_settled(&pool, &what);
            assert_room_whole(&pool, pool.room(), &what).await;
        });
    }
}
