//! Shared machinery of the reliability tests (`prop_pools.rs`, `stress.rs`): an
//! instrumented job whose every step is recorded on a [`Board`], and one wrapper over the
//! three pools so a scenario can drive any of them.
//!
//! Included with `mod reliability;`; not every test file uses every item.
#![allow(dead_code)]

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll};
use std::time::Duration;

use nb_aiopool::{
    CancelReason, CommonAioPool, NoQueueAioPool, PoolStats, ShutdownReport, SmartAioPool,
    SubmitError, SubmitErrorKind, TaskError, TaskHandle, TrySubmitError,
};

/// Every panic the tests cause on purpose carries this text; the panic hook keeps them
/// quiet (a stress run panics thousands of times).
pub const INTENTIONAL: &str = "intentional test panic";

/// Silences the intentional panics of the jobs, leaving every other panic message alone.
pub fn quiet_intentional_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            if !msg.contains(INTENTIONAL) {
                previous(info);
            }
        }));
    });
}

/// What a job does when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beh {
    /// Returns at its first poll.
    Ready,
    /// Yields this many times, then returns.
    Yield(u8),
    /// Sleeps this many ticks (see [`Timing`]), then returns.
    Sleep(u8),
    /// Sleeps a long time (effectively pending, but it does end: nothing can hang on it).
    Long,
    /// Yields this many times, then panics.
    Panic(u8),
    /// SmartAioPool: the recipe itself panics when called. Other pools treat it as
    /// `Panic(0)`.
    RecipePanic,
}

impl Beh {
    pub fn panics(self) -> bool {
        matches!(self, Beh::Panic(_) | Beh::RecipePanic)
    }
}

/// How long a tick is: virtual milliseconds under paused time, 100 µs of real time
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    Paused,
    Real,
}

impl Timing {
    fn ticks(self, n: u8) -> Duration {
        match self {
            Timing::Paused => Duration::from_millis(u64::from(n)),
            Timing::Real => Duration::from_micros(100 * u64::from(n)),
        }
    }

    fn long(self) -> Duration {
        match self {
            Timing::Paused => Duration::from_secs(3600),
            Timing::Real => Duration::from_millis(20),
        }
    }
}

// Job states on the board.
pub const NOT_STARTED: u8 = 0;
pub const RUNNING: u8 = 1;
pub const COMPLETED: u8 = 2;
pub const PANICKED: u8 = 3;
/// Dropped after its first poll and before it ended: cancelled while running.
pub const DROPPED: u8 = 4;
/// Rejected by the pool, handed back, and checked.
pub const REJECTED: u8 = 5;

pub fn state_name(s: u8) -> &'static str {
    match s {
        NOT_STARTED => "not started",
        RUNNING => "running",
        COMPLETED => "completed",
        PANICKED => "panicked",
        DROPPED => "dropped while running",
        REJECTED => "rejected",
        _ => "?",
    }
}

/// The value a job returns: derived from its id, so a mixed-up result is caught.
pub fn value_of(id: usize) -> u64 {
    id as u64 * 7 + 1
}

/// What every job did, by id; the ground truth the pools' answers are checked against.
pub struct Board {
    pub timing: Timing,
    states: Vec<AtomicU8>,
    starts: Vec<AtomicU32>,
    recipe_calls: Vec<AtomicU32>,
    /// Jobs between their first poll and their end.
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// The pool's max_concurrency: `running` must never exceed it.
    limit: usize,
    violations: Mutex<Vec<String>>,
    /// Ids in the order their user code first ran (only when `track_order`).
    pub start_order: Mutex<Vec<usize>>,
    /// Ids in the order the pool accepted them (filled by the producers).
    pub accept_order: Mutex<Vec<usize>>,
    pub track_order: bool,
    /// Record the start order at recipe calls (SmartAioPool: a worker calls the recipes of
    /// the tasks it takes in queue order, then polls their futures) rather than at first
    /// polls.
    pub order_by_recipe: bool,
    /// A job may start again after it was dropped while running (SmartAioPool re-runs a
    /// task interrupted by the end of its runtime).
    restarts_allowed: AtomicBool,
}

impl Board {
    pub fn new(
        n: usize,
        limit: usize,
        timing: Timing,
        track_order: bool,
        order_by_recipe: bool,
    ) -> Arc<Self> {
        Arc::new(Board {
            timing,
            states: (0..n).map(|_| AtomicU8::new(NOT_STARTED)).collect(),
            starts: (0..n).map(|_| AtomicU32::new(0)).collect(),
            recipe_calls: (0..n).map(|_| AtomicU32::new(0)).collect(),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            limit,
            violations: Mutex::new(Vec::new()),
            start_order: Mutex::new(Vec::new()),
            accept_order: Mutex::new(Vec::new()),
            track_order,
            order_by_recipe,
            restarts_allowed: AtomicBool::new(false),
        })
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn state(&self, id: usize) -> u8 {
        self.states[id].load(Ordering::SeqCst)
    }

    pub fn set_state(&self, id: usize, s: u8) {
        self.states[id].store(s, Ordering::SeqCst);
    }

    pub fn starts(&self, id: usize) -> u32 {
        self.starts[id].load(Ordering::SeqCst)
    }

    pub fn recipe_calls(&self, id: usize) -> u32 {
        self.recipe_calls[id].load(Ordering::SeqCst)
    }

    /// Jobs running now (first poll seen, end not yet).
    pub fn running_now(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub fn max_running(&self) -> usize {
        self.max_running.load(Ordering::SeqCst)
    }

    pub fn violation(&self, msg: String) {
        self.violations.lock().unwrap().push(msg);
    }

    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    pub fn allow_restarts(&self) {
        self.restarts_allowed.store(true, Ordering::SeqCst);
    }

    fn on_start(&self, id: usize) {
        let restarts = self.restarts_allowed.load(Ordering::SeqCst);
        let starts = self.starts[id].fetch_add(1, Ordering::SeqCst) + 1;
        if starts > 1 && !restarts {
            self.violation(format!("job {id} started {starts} times"));
        }
        let prev = self.states[id].swap(RUNNING, Ordering::SeqCst);
        if prev != NOT_STARTED && !(restarts && prev == DROPPED) {
            self.violation(format!("job {id} started while {}", state_name(prev)));
        }
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        if now > self.limit {
            self.violation(format!(
                "{now} jobs running at once, max_concurrency is {}",
                self.limit
            ));
        }
        if self.track_order && !self.order_by_recipe {
            self.start_order.lock().unwrap().push(id);
        }
    }

    fn on_end(&self, id: usize, state: u8) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.states[id].store(state, Ordering::SeqCst);
    }
}

/// An instrumented job. A plain struct (not an `async` block) so that a job handed back
/// by a rejected submit can be inspected: same id, never polled.
pub struct Job {
    pub id: usize,
    pub beh: Beh,
    board: Arc<Board>,
    pub polled: bool,
    step: u8,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    ended: bool,
}

impl Job {
    pub fn new(id: usize, beh: Beh, board: Arc<Board>) -> Self {
        Job {
            id,
            beh,
            board,
            polled: false,
            step: 0,
            sleep: None,
            ended: false,
        }
    }

    fn end(&mut self, state: u8) {
        self.ended = true;
        self.board.on_end(self.id, state);
    }
}

impl Future for Job {
    type Output = u64;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let this = self.get_mut();
        if this.ended {
            this.board
                .violation(format!("job {} polled after it ended", this.id));
            return Poll::Pending;
        }
        if !this.polled {
            this.polled = true;
            this.board.on_start(this.id);
        }
        let yields = match this.beh {
            Beh::Yield(n) | Beh::Panic(n) => n,
            _ => 0,
        };
        if this.step < yields {
            this.step += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match this.beh {
            Beh::Ready | Beh::Yield(_) => {}
            Beh::Sleep(_) | Beh::Long => {
                let timing = this.board.timing;
                let d = match this.beh {
                    Beh::Sleep(n) => timing.ticks(n),
                    _ => timing.long(),
                };
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(d)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            Beh::Panic(_) | Beh::RecipePanic => {
                this.end(PANICKED);
                panic!("{INTENTIONAL}: job {}", this.id);
            }
        }
        this.end(COMPLETED);
        Poll::Ready(value_of(this.id))
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.polled && !self.ended {
            self.ended = true;
            self.board.on_end(self.id, DROPPED);
        }
    }
}

/// One job to submit: builds the future (Common, NoQueue) or the recipe (Smart).
#[derive(Clone)]
pub struct Spec {
    pub id: usize,
    pub beh: Beh,
    pub board: Arc<Board>,
}

impl Spec {
    pub fn job(&self) -> Job {
        let beh = match self.beh {
            Beh::RecipePanic => Beh::Panic(0),
            b => b,
        };
        Job::new(self.id, beh, self.board.clone())
    }

    pub fn recipe(&self) -> impl Fn() -> Job + Send + Sync + 'static {
        let Spec { id, beh, board } = self.clone();
        move || {
            board.recipe_calls[id].fetch_add(1, Ordering::SeqCst);
            if board.track_order && board.order_by_recipe {
                board.start_order.lock().unwrap().push(id);
            }
            if beh == Beh::RecipePanic {
                let prev = board.states[id].swap(PANICKED, Ordering::SeqCst);
                if prev != NOT_STARTED {
                    board.violation(format!("recipe {id} called while {}", state_name(prev)));
                }
                panic!("{INTENTIONAL}: recipe {id}");
            }
            Job::new(id, beh, board.clone())
        }
    }

    /// Checks a job handed back by a rejected submit: this very job, never polled.
    fn check_back_job(&self, job: Job) {
        assert_eq!(job.id, self.id, "a rejected submit handed back another job");
        assert!(
            !job.polled,
            "job {}: handed back after being polled",
            self.id
        );
        drop(job);
        self.mark_rejected();
    }

    /// Checks a recipe handed back by a rejected submit: never called by the pool, and it
    /// builds this task's job.
    fn check_back_recipe<R: Fn() -> Job>(&self, recipe: R) {
        assert_eq!(
            self.board.recipe_calls(self.id),
            0,
            "recipe {}: called by the pool although the submit was rejected",
            self.id
        );
        match catch_unwind(AssertUnwindSafe(&recipe)) {
            Ok(job) => {
                assert_ne!(self.beh, Beh::RecipePanic);
                self.check_back_job(job);
            }
            Err(payload) => {
                assert_eq!(self.beh, Beh::RecipePanic, "recipe {} panicked", self.id);
                let msg = panic_text(&*payload);
                assert!(
                    msg.contains(&format!("recipe {}", self.id)),
                    "handed-back recipe is another task's: {msg}"
                );
                self.mark_rejected();
            }
        }
    }

    fn mark_rejected(&self) {
        let prev = self.board.states[self.id].swap(REJECTED, Ordering::SeqCst);
        // A panicking recipe we called ourselves set PANICKED; anything else means the
        // pool ran a job it rejected.
        if prev != NOT_STARTED && !(prev == PANICKED && self.beh == Beh::RecipePanic) {
            self.board.violation(format!(
                "rejected job {} was {} by the pool",
                self.id,
                state_name(prev)
            ));
        }
    }
}

pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string panic>".into())
}

/// Why a submission was refused (after its task was checked and marked [`REJECTED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Full,
    Closed,
    WouldDeadlock,
}

fn submit_rejection<F>(e: &SubmitError<F>) -> Rejection {
    match e.kind() {
        SubmitErrorKind::Closed => Rejection::Closed,
        SubmitErrorKind::WouldDeadlock => Rejection::WouldDeadlock,
        other => panic!("unknown SubmitErrorKind {other:?}"),
    }
}

fn try_rejection<F>(e: &TrySubmitError<F>) -> Rejection {
    assert_ne!(
        e.is_full(),
        e.is_closed(),
        "TrySubmitError is full xor closed"
    );
    if e.is_full() {
        Rejection::Full
    } else {
        Rejection::Closed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Common,
    NoQueue,
    Smart,
}

/// Sizes of a pool under test.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub max_concurrency: usize,
    pub max_queue_size: usize,
    pub min_workers: usize,
    pub idle_timeout: Duration,
}

/// Any of the three pools, behind one interface.
#[derive(Clone)]
pub enum Pool {
    Common(CommonAioPool),
    NoQueue(NoQueueAioPool),
    Smart(SmartAioPool),
}

impl Pool {
    pub fn new(kind: Kind, s: Sizes) -> Self {
        match kind {
            Kind::Common => Pool::Common(CommonAioPool::new(s.max_concurrency, s.max_queue_size)),
            Kind::NoQueue => Pool::NoQueue(NoQueueAioPool::new(s.max_concurrency)),
            Kind::Smart => Pool::Smart(
                SmartAioPool::builder()
                    .max_concurrency(s.max_concurrency)
                    .max_queue_size(s.max_queue_size)
                    .min_workers(s.min_workers)
                    .idle_timeout(s.idle_timeout)
                    // A failing case must not leave work for the at-exit hook to re-run.
                    .auto_shutdown(false)
                    .build(),
            ),
        }
    }

    /// The queue size this pool really has (NoQueue: 0).
    pub fn queue_size(&self, s: Sizes) -> usize {
        match self {
            Pool::NoQueue(_) => 0,
            _ => s.max_queue_size,
        }
    }

    pub async fn submit(&self, t: &Spec) -> Result<TaskHandle<u64>, Rejection> {
        match self {
            Pool::Common(p) => p.submit(t.job()).await.map_err(|e| {
                let r = submit_rejection(&e);
                t.check_back_job(e.into_inner());
                r
            }),
            Pool::NoQueue(p) => p.submit(t.job()).await.map_err(|e| {
                let r = submit_rejection(&e);
                t.check_back_job(e.into_inner());
                r
            }),
            Pool::Smart(p) => p.submit(t.recipe()).await.map_err(|e| {
                let r = submit_rejection(&e);
                t.check_back_recipe(e.into_inner());
                r
            }),
        }
    }

    pub fn try_submit(&self, t: &Spec) -> Result<TaskHandle<u64>, Rejection> {
        match self {
            Pool::Common(p) => p.try_submit(t.job()).map_err(|e| {
                let r = try_rejection(&e);
                t.check_back_job(e.into_inner());
                r
            }),
            Pool::NoQueue(p) => p.try_submit(t.job()).map_err(|e| {
                let r = try_rejection(&e);
                t.check_back_job(e.into_inner());
                r
            }),
            Pool::Smart(p) => p.try_submit(t.recipe()).map_err(|e| {
                let r = try_rejection(&e);
                t.check_back_recipe(e.into_inner());
                r
            }),
        }
    }

    pub fn blocking_submit(&self, t: &Spec) -> Result<TaskHandle<u64>, Rejection> {
        match self {
            Pool::Common(p) => p.blocking_submit(t.job()).map_err(|e| {
                let r = submit_rejection(&e);
                t.check_back_job(e.into_inner());
                r
            }),
            Pool::NoQueue(p) => p.blocking_submit(t.job()).map_err(|e| {
                let r = submit_rejection(&e);
                t.check_back_job(e.into_inner());
                r
            }),
            Pool::Smart(p) => p.blocking_submit(t.recipe()).map_err(|e| {
                let r = submit_rejection(&e);
                t.check_back_recipe(e.into_inner());
                r
            }),
        }
    }

    pub fn stats(&self) -> PoolStats {
        match self {
            Pool::Common(p) => p.stats(),
            Pool::NoQueue(p) => p.stats(),
            Pool::Smart(p) => p.stats(),
        }
    }

    pub async fn shutdown(&self) {
        match self {
            Pool::Common(p) => p.shutdown().await,
            Pool::NoQueue(p) => p.shutdown().await,
            Pool::Smart(p) => p.shutdown().await,
        }
    }

    /// `shutdown_timeout`; NoQueueAioPool has none, so it gets `shutdown` (and `None`).
    pub async fn shutdown_timeout(&self, d: Duration) -> Option<ShutdownReport> {
        match self {
            Pool::Common(p) => Some(p.shutdown_timeout(d).await),
            Pool::NoQueue(p) => {
                p.shutdown().await;
                None
            }
            Pool::Smart(p) => Some(p.shutdown_timeout(d).await),
        }
    }

    /// Waits for everything submitted so far without closing (Common has no such call:
    /// it shuts down instead, and returns `true` if it did).
    pub async fn wait(&self) -> bool {
        match self {
            Pool::Common(p) => {
                p.shutdown().await;
                true
            }
            Pool::NoQueue(p) => {
                p.wait().await;
                false
            }
            Pool::Smart(p) => {
                p.wait_for_all().await;
                false
            }
        }
    }

    /// The elastic worker counts (workers, busy) of a SmartAioPool.
    pub fn workers(&self) -> Option<(usize, usize)> {
        match self {
            Pool::Smart(p) => {
                // Busy first: from another thread a submit can only add workers, so
                // busy-then-workers keeps `busy <= workers` on a current-thread runtime.
                let busy = p.busy_worker_count();
                Some((p.worker_count(), busy))
            }
            _ => None,
        }
    }
}

/// What an awaited handle said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Value(u64),
    Panicked(String),
    Cancelled(CancelReason),
}

impl Resolved {
    pub fn from_result(r: Result<u64, TaskError>) -> Self {
        match r {
            Ok(v) => Resolved::Value(v),
            Err(e) if e.is_panic() => Resolved::Panicked(panic_text(&*e.into_panic())),
            Err(e) => Resolved::Cancelled(
                e.cancel_reason()
                    .expect("a TaskError is either a panic or a cancellation"),
            ),
        }
    }
}

/// Checks the counter identity of [`PoolStats`] and the bounds a pool of these sizes must
/// keep; panics with the first problem.
pub fn check_stats(where_: &str, s: &PoolStats, c: usize, q: usize) {
    if let Some(problem) = stats_problem(where_, s, c, q) {
        panic!("{problem}");
    }
}

/// The first problem [`check_stats`] would panic with, if any.
pub fn stats_problem(where_: &str, s: &PoolStats, c: usize, q: usize) -> Option<String> {
    let sum = s.queued as u64 + s.running as u64 + s.completed + s.panicked + s.cancelled;
    if s.submitted != sum {
        return Some(format!(
            "{where_}: submitted != queued + running + completed + panicked + cancelled: {s:?}"
        ));
    }
    if s.running > c {
        return Some(format!(
            "{where_}: {} running, max_concurrency {c}: {s:?}",
            s.running
        ));
    }
    if s.queued > q {
        return Some(format!(
            "{where_}: {} queued, max_queue_size {q}: {s:?}",
            s.queued
        ));
    }
    None
}

/// A flag set before the operation it names starts, so that the final check knows which
/// cancellations were possible.
#[derive(Default)]
pub struct Flags {
    pub closing: AtomicBool,
    pub abandon_possible: AtomicBool,
    pub cancel_all_called: AtomicBool,
}

impl Flags {
    pub fn get(f: &AtomicBool) -> bool {
        f.load(Ordering::SeqCst)
    }

    pub fn set(f: &AtomicBool) {
        f.store(true, Ordering::SeqCst);
    }
}
