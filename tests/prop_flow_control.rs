//! Property tests of flow control: priorities, per-key limits, weights and rate limits,
//! alone and combined, with aborts of queued and running tasks, `cancel_all`, resizes and
//! shutdowns, in each of the three pools (each supports every option: `submit_with`,
//! `try_submit_with`, the builders' `max_per_key`, `weight_capacity` and `rate_limit`,
//! `set_max_concurrency`, `cancel_all`, `shutdown`, `shutdown_timeout`).
//!
//! A case is a random scenario: pool sizes, limits, and one to four producers (tokio
//! tasks) each running a random list of operations. Every task records, on a shared
//! [`Board`], when it starts (its first poll) and ends (its last poll, or its drop), with
//! its options. What is checked, and the documentation it rests on:
//!
//! - at every start: no more than `max_per_key` running tasks of its key ("at most `n`
//!   running tasks share a key"), the running weights within the capacity ("the running
//!   tasks' weights never sum above `n`"), and no more than `max_concurrency` running
//!   ("at most `max_concurrency` jobs run at once"; after a shrink, "starts none until fewer
//!   than `n` run");
//! - priorities (paused runtime only, where a task's first poll comes in the same slot
//!   poll as the pool's decision): when a task starts, every task still queued ahead of it
//!   in queue order (higher priority, or the same priority and accepted earlier: "higher
//!   first, FIFO among equals") is held back by its key ("a saturated key's queued tasks
//!   wait without holding up other keys behind them"). Not by its weight: "a heavy task at
//!   the head waits for room rather than being overtaken", "Weights keep FIFO order". Nor
//!   by the rate window, which holds every task back alike.
//! - rate limit: no more than `count` starts in any window of `per` ("at most `count`
//!   starts in any window of `per` (a sliding window; a burst of `count` may start at
//!   once)"; a start leaves the window when it is `per` old). Exactly on the paused
//!   runtime; on the multi-thread one (real time: a first poll may come a while after the
//!   pool's decision) in the weaker, sound form that no `count + 1` tasks were submitted and
//!   started, all of them, within one window;
//! - every accepted task's handle resolves: its value, its panic, or a cancellation whose
//!   reason something caused (`Aborted` by its own abort, `CancelAll` by a `cancel_all`
//!   made after it was accepted, `Abandoned` by a `shutdown_timeout`); none runs twice, none
//!   runs after an abort or `cancel_all` took it out of the queue, a rejected one comes
//!   back unpolled and only for a reason the call allows; `stats()` keeps
//!   `submitted = queued + running + completed + panicked + cancelled` after every
//!   operation and, at the end, agrees with the handles (`queued` and `running` 0);
//! - nothing waits for no reason (paused runtime): after every tick, once the tasks ready
//!   at that instant have run, no queued task waits that the rules above would let start
//!   (a free slot, room for its key, its weight fits and no task ahead of it waits for
//!   weight, a start left in the rate window): "growing starts queued tasks at once", and
//!   a saturated key does not hold up other keys;
//! - no hang: every wait is bounded, and each case runs on a thread of its own with a
//!   real-time budget, so a hang fails with the scenario.
//!
//! `PROPTEST_CASES` (default 64) sets the cases of the paused-runtime tests; the
//! multi-thread ones run a quarter of them. `PROPTEST_RNG_SEED` fixes the seed.

mod reliability;
mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use nb_aiopool::{
    CancelReason, CommonAioPool, NoQueueAioPool, PoolStats, SmartAioPool, SubmitErrorKind,
    SubmitOptions, TaskHandle, TrySubmitErrorKind,
};
use proptest::prelude::*;
use reliability::{quiet_intentional_panics, Resolved, INTENTIONAL};
use tokio::time::Instant;

// ----- scenarios ----------------------------------------------------------------------

/// What a task does when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Ready,
    Yield(u8),
    Sleep(u8),
    Panic(u8),
}

#[derive(Debug, Clone, Copy)]
enum Via {
    /// `submit_with`, waiting for room as long as it takes.
    Wait,
    /// `submit_with` with a `timeout` of this many ticks.
    Timeout(u8),
    /// `try_submit_with`.
    Try,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Opts {
    priority: i32,
    key: Option<u8>,
    weight: u32,
}

#[derive(Debug, Clone, Copy)]
enum Stop {
    Shutdown,
    /// `shutdown_timeout` of this many ticks.
    ShutdownTimeout(u8),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Submit(Via, Opts, Work),
    /// Aborts one of the producer's handles (queued, running or finished).
    Abort(u8),
    /// Sleeps this many ticks.
    Pause(u8),
    Resize(usize),
    CancelAll,
    Stop(Stop),
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_per_key: Option<usize>,
    weight_capacity: Option<u32>,
    /// `count` starts per `ticks` ticks.
    rate: Option<(u32, u8)>,
}

#[derive(Debug, Clone)]
struct Scenario {
    max_concurrency: usize,
    max_queue_size: usize,
    min_workers: usize,
    idle_ticks: u8,
    limits: Limits,
    producers: Vec<Vec<Op>>,
}

fn work() -> impl Strategy<Value = Work> {
    prop_oneof![
        3 => Just(Work::Ready),
        2 => (1u8..4).prop_map(Work::Yield),
        4 => (0u8..20).prop_map(Work::Sleep),
        1 => (0u8..3).prop_map(Work::Panic),
    ]
}

fn opts() -> impl Strategy<Value = Opts> {
    let priority = prop_oneof![3 => Just(0i32), 2 => -1i32..=2];
    let key = proptest::option::weighted(0.7, 0u8..2);
    // Mostly within the capacities below (2..=5); now and then 0, or too heavy.
    let weight = prop_oneof![9 => 1u32..=3, 1 => 0u32..=6];
    (priority, key, weight).prop_map(|(priority, key, weight)| Opts {
        priority,
        key,
        weight,
    })
}

fn via() -> impl Strategy<Value = Via> {
    prop_oneof![
        6 => Just(Via::Wait),
        1 => Just(Via::Try),
        1 => (0u8..10).prop_map(Via::Timeout),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    // A `cancel_all` in about half the cases, a stop (after which every submit is
    // refused) in about a third.
    prop_oneof![
        80 => (via(), opts(), work()).prop_map(|(v, o, w)| Op::Submit(v, o, w)),
        12 => any::<u8>().prop_map(Op::Abort),
        10 => (0u8..15).prop_map(Op::Pause),
        6 => (1usize..=5).prop_map(Op::Resize),
        2 => Just(Op::CancelAll),
        1 => prop_oneof![
            Just(Stop::Shutdown),
            (0u8..30).prop_map(Stop::ShutdownTimeout)
        ]
        .prop_map(Op::Stop),
    ]
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        proptest::option::weighted(0.6, 1usize..=2),
        proptest::option::weighted(0.5, 2u32..=5),
        proptest::option::weighted(0.4, (1u32..=3, 1u8..=20)),
    )
        .prop_map(|(max_per_key, weight_capacity, rate)| Limits {
            max_per_key,
            weight_capacity,
            rate,
        })
}

fn scenario(most_ops: usize) -> impl Strategy<Value = Scenario> {
    (
        1usize..=4,
        0usize..=6,
        0usize..=4,
        1u8..=20,
        limits(),
        prop::collection::vec(prop::collection::vec(op(), 0..=most_ops), 1..=4),
    )
        .prop_map(|(c, q, m, idle_ticks, limits, producers)| Scenario {
            max_concurrency: c,
            max_queue_size: q,
            min_workers: m.min(c),
            idle_ticks,
            limits,
            producers,
        })
}

// ----- the board: what every task did -------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Common,
    NoQueue,
    Smart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// current_thread runtime, paused clock: deterministic, and every check exact.
    Paused,
    /// multi_thread runtime of 2 workers, real clock.
    MultiThread,
}

impl Flavor {
    fn tick(self) -> Duration {
        match self {
            Flavor::Paused => Duration::from_millis(1),
            Flavor::MultiThread => Duration::from_micros(200),
        }
    }

    fn ticks(self, n: u8) -> Duration {
        self.tick() * u32::from(n)
    }

    /// How long any one wait may take before the case fails as a hang (under paused time
    /// a hang makes the clock jump there at once).
    fn patience(self) -> Duration {
        match self {
            Flavor::Paused => Duration::from_secs(1_000_000),
            Flavor::MultiThread => Duration::from_secs(20),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Made, not yet accepted or refused.
    New,
    /// Accepted, not started (or taken out of the queue: see `Task::gone`).
    Queued,
    Running,
    Completed,
    Panicked,
    /// Dropped after its first poll and before its end: cancelled while running.
    Dropped,
    /// Refused, handed back unpolled.
    Rejected,
}

#[derive(Debug)]
struct Task {
    opts: Opts,
    work: Work,
    /// The admission order (FIFO among equal priorities), once accepted.
    seq: Option<u64>,
    state: State,
    /// Taken out of the queue by an abort, a `cancel_all` or a shutdown deadline: it
    /// must never start.
    gone: bool,
    aborted: bool,
    /// Just before its submit was called: no start of it can be earlier.
    submitted_at: Instant,
    started_at: Option<Instant>,
    ended_at: Option<Instant>,
    starts: u32,
    recipe_calls: u32,
}

struct Shared {
    tasks: Vec<Task>,
    next_seq: u64,
    running: Vec<usize>,
    /// `max_concurrency` now, and the largest it has been.
    limit_now: usize,
    limit_max: usize,
    /// Start times, in the order seen (non-decreasing: read under this lock).
    starts: Vec<Instant>,
    violations: Vec<String>,
    /// Tasks accepted before the last `cancel_all` call have `seq` below this.
    cancel_all_before: u64,
    /// Tasks whose submit began before the last `cancel_all` call returned have ids below
    /// this.
    cancel_all_reach: usize,
    shutdown_timeout_called: bool,
    closing: bool,
}

struct Board {
    max_per_key: Option<usize>,
    weight_capacity: Option<u64>,
    rate: Option<(usize, Duration)>,
    /// The paused runtime: a start is seen in the poll that decided it.
    exact: bool,
    /// When the case began (times in messages are counted from it).
    t0: Instant,
    tick: Duration,
    st: Mutex<Shared>,
}

/// What the cases exercised, summed over the cases run so far in this process; printed
/// after each case when `NB_PROPFLOW_COVERAGE` is set.
mod coverage {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub static STARTS: AtomicU64 = AtomicU64::new(0);
    /// Starts that went past a queued task held back by its key.
    pub static PAST_A_HELD_KEY: AtomicU64 = AtomicU64::new(0);
    /// Starts with a task of lower priority, or accepted later, still queued.
    pub static AHEAD_OF_QUEUED: AtomicU64 = AtomicU64::new(0);
    /// Starts that had waited for the rate window (started later than accepted, with the
    /// window full of starts).
    pub static RATE_FULL: AtomicU64 = AtomicU64::new(0);
    /// Starts that took the weight capacity to its full.
    pub static WEIGHT_FULL: AtomicU64 = AtomicU64::new(0);
    pub static ABORTED_QUEUED: AtomicU64 = AtomicU64::new(0);
    pub static CANCEL_ALL_QUEUED: AtomicU64 = AtomicU64::new(0);
    pub static REFUSED: AtomicU64 = AtomicU64::new(0);

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn report(what: &str) {
        if std::env::var_os("NB_PROPFLOW_COVERAGE").is_none() {
            return;
        }
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        eprintln!(
            "coverage after {what}: {} starts, {} past a held key, {} ahead of queued \
             tasks, {} at a full rate window, {} filling the weight capacity; {} queued \
             tasks aborted, {} cancelled by cancel_all; {} submits refused",
            g(&STARTS),
            g(&PAST_A_HELD_KEY),
            g(&AHEAD_OF_QUEUED),
            g(&RATE_FULL),
            g(&WEIGHT_FULL),
            g(&ABORTED_QUEUED),
            g(&CANCEL_ALL_QUEUED),
            g(&REFUSED),
        );
    }
}

fn value_of(id: usize) -> u64 {
    id as u64 * 7 + 1
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_task(&self, opts: Opts, work: Work) -> usize {
        let mut st = self.lock();
        st.tasks.push(Task {
            opts,
            work,
            seq: None,
            state: State::New,
            gone: false,
            aborted: false,
            submitted_at: Instant::now(),
            started_at: None,
            ended_at: None,
            starts: 0,
            recipe_calls: 0,
        });
        st.tasks.len() - 1
    }

    fn accepted(&self, id: usize) {
        let mut st = self.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let t = &mut st.tasks[id];
        t.seq = Some(seq);
        if t.state == State::New {
            t.state = State::Queued;
        }
    }

    fn running_of_key(&self, st: &Shared, key: u8) -> usize {
        st.running
            .iter()
            .filter(|&&r| st.tasks[r].opts.key == Some(key))
            .count()
    }

    fn on_start(&self, id: usize) {
        let mut st = self.lock();
        let now = Instant::now();
        let st = &mut *st;
        let t = &st.tasks[id];
        let mut bad = Vec::new();
        if t.starts > 0 {
            bad.push(format!("task {id} started a second time"));
        }
        // On the multi-thread runtime a task may start before its producer records the
        // acceptance: checked at the end there (a refused task must not have started).
        if self.exact && t.seq.is_none() {
            bad.push(format!("task {id} started though it was not accepted"));
        }
        if self.exact && t.gone {
            bad.push(format!(
                "task {id} started after an abort, cancel_all or shutdown deadline took it \
                 out of the queue"
            ));
        }
        let limit = if self.exact {
            st.limit_now
        } else {
            st.limit_max
        };
        if st.running.len() + 1 > limit {
            bad.push(format!(
                "task {id} started as the {}th running task, max_concurrency {limit} \
                 (running: {:?})",
                st.running.len() + 1,
                st.running
            ));
        }
        let opts = t.opts;
        if let (Some(max), Some(key)) = (self.max_per_key, opts.key) {
            let n = self.running_of_key(st, key) + 1;
            if n > max {
                bad.push(format!(
                    "task {id} started as the {n}th running task of key {key}, max_per_key \
                     {max}"
                ));
            }
        }
        if let Some(cap) = self.weight_capacity {
            let sum: u64 = st
                .running
                .iter()
                .map(|&r| u64::from(st.tasks[r].opts.weight))
                .sum::<u64>()
                + u64::from(opts.weight);
            if sum == cap {
                coverage::add(&coverage::WEIGHT_FULL, 1);
            }
            if sum > cap {
                bad.push(format!(
                    "task {id} (weight {}) started: running weights sum to {sum}, capacity \
                     {cap}",
                    opts.weight
                ));
            }
        }
        coverage::add(&coverage::STARTS, 1);
        if self.exact {
            // Queue order: higher priority first, then the admission order.
            let my_seq = t.seq.unwrap_or(u64::MAX);
            let (mut past, mut behind) = (0, 0);
            for (u, q) in st.tasks.iter().enumerate() {
                if u == id || q.state != State::Queued || q.gone {
                    continue;
                }
                let Some(seq) = q.seq else { continue };
                let ahead = q.opts.priority > opts.priority
                    || (q.opts.priority == opts.priority && seq < my_seq);
                if !ahead {
                    behind = 1;
                    continue;
                }
                past = 1;
                let held_by_key = match (self.max_per_key, q.opts.key) {
                    (Some(max), Some(key)) => self.running_of_key(st, key) >= max,
                    _ => false,
                };
                if !held_by_key {
                    bad.push(format!(
                        "task {id} ({opts:?}, accepted #{my_seq}) started while task {u} \
                         ({:?}, accepted #{seq}), ahead of it in the queue, waited though \
                         its key had room, and weights are not overtaken (running: {:?})",
                        q.opts,
                        st.running
                            .iter()
                            .map(|&r| (r, st.tasks[r].opts))
                            .collect::<Vec<_>>()
                    ));
                }
            }
            coverage::add(&coverage::PAST_A_HELD_KEY, past);
            coverage::add(&coverage::AHEAD_OF_QUEUED, behind);
        }
        if let (Some((count, per)), true) = (self.rate, self.exact) {
            // The starts in the window of `per` that ends with this one: a start made at
            // `s` has left it at `s + per`.
            let in_window = st.starts.iter().filter(|&&s| s + per > now).count() + 1;
            if in_window == count && self.tasks_waited(t, now) {
                coverage::add(&coverage::RATE_FULL, 1);
            }
            if in_window > count {
                bad.push(format!(
                    "task {id} started at {:?}: {in_window} starts within {per:?}, rate \
                     limit {count}",
                    now - self.t0
                ));
            }
        }
        st.starts.push(now);
        let t = &mut st.tasks[id];
        t.starts += 1;
        t.started_at = Some(now);
        t.state = State::Running;
        st.running.push(id);
        st.violations.extend(bad);
    }

    /// Whether task `t`, starting at `now`, had waited since its submit.
    fn tasks_waited(&self, t: &Task, now: Instant) -> bool {
        now > t.submitted_at
    }

    fn on_end(&self, id: usize, state: State) {
        let mut st = self.lock();
        if let Some(pos) = st.running.iter().position(|&r| r == id) {
            st.running.swap_remove(pos);
        } else {
            st.violations
                .push(format!("task {id} ended ({state:?}) without running"));
        }
        let t = &mut st.tasks[id];
        t.state = state;
        t.ended_at = Some(Instant::now());
    }

    fn recipe_called(&self, id: usize) {
        self.lock().tasks[id].recipe_calls += 1;
    }

    /// Tasks queued now (as far as the test knows) leave the queue.
    fn queued_gone(st: &mut Shared, only: Option<usize>) {
        for (i, t) in st.tasks.iter_mut().enumerate() {
            if only.is_none_or(|o| o == i) && t.state == State::Queued {
                t.gone = true;
            }
        }
    }

    fn running_now(&self) -> usize {
        self.lock().running.len()
    }

    /// Paused runtime, once every task ready at this instant has run: a queued task that
    /// the documented rules would let start now, if there is one. Each waits only for a
    /// reason the docs give: `max_concurrency` reached, its key saturated, a task ahead of
    /// it (not held by its key) waiting for weight, or the rate window full.
    fn could_start(&self) -> Option<String> {
        let st = self.lock();
        let now = Instant::now();
        if st.running.len() >= st.limit_now || st.closing {
            return None;
        }
        if let Some((count, per)) = self.rate {
            if st.starts.iter().filter(|&&s| s + per > now).count() >= count {
                return None;
            }
        }
        let mut queued: Vec<(usize, &Task)> = st
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.state == State::Queued && !t.gone && t.seq.is_some())
            .collect();
        queued.sort_by_key(|(_, t)| (std::cmp::Reverse(t.opts.priority), t.seq));
        let weight: u64 = st
            .running
            .iter()
            .map(|&r| u64::from(st.tasks[r].opts.weight))
            .sum();
        for (id, t) in queued {
            if let (Some(max), Some(key)) = (self.max_per_key, t.opts.key) {
                if self.running_of_key(&st, key) >= max {
                    continue;
                }
            }
            if self
                .weight_capacity
                .is_some_and(|cap| weight + u64::from(t.opts.weight) > cap)
            {
                return None;
            }
            return Some(format!(
                "at {:?}, task {id} ({:?}, accepted #{}) could start but waits: {} of \
                 {} running ({:?}), {} starts so far",
                now - self.t0,
                t.opts,
                t.seq.unwrap_or(0),
                st.running.len(),
                st.limit_now,
                st.running
                    .iter()
                    .map(|&r| (r, st.tasks[r].opts))
                    .collect::<Vec<_>>(),
                st.starts.len()
            ));
        }
        None
    }
}

/// An instrumented task: a plain struct, so that one handed back by a refused submit can
/// be checked (same id, never polled).
struct Job {
    id: usize,
    work: Work,
    board: Arc<Board>,
    polled: bool,
    ended: bool,
    step: u8,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Job {
    fn new(id: usize, work: Work, board: Arc<Board>) -> Self {
        Job {
            id,
            work,
            board,
            polled: false,
            ended: false,
            step: 0,
            sleep: None,
        }
    }

    fn end(&mut self, state: State) {
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
                .lock()
                .violations
                .push(format!("task {} polled after it ended", this.id));
            return Poll::Pending;
        }
        if !this.polled {
            this.polled = true;
            this.board.on_start(this.id);
        }
        let yields = match this.work {
            Work::Yield(n) | Work::Panic(n) => n,
            _ => 0,
        };
        if this.step < yields {
            this.step += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match this.work {
            Work::Ready | Work::Yield(_) => {}
            Work::Sleep(n) => {
                let d = this.board.tick * u32::from(n);
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(d)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            Work::Panic(_) => {
                this.end(State::Panicked);
                panic!("{INTENTIONAL}: task {}", this.id);
            }
        }
        this.end(State::Completed);
        Poll::Ready(value_of(this.id))
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if self.polled && !self.ended {
            self.ended = true;
            self.board.on_end(self.id, State::Dropped);
        }
    }
}

// ----- the pools behind one interface -------------------------------------------------

#[derive(Clone)]
enum Pool {
    Common(CommonAioPool),
    NoQueue(NoQueueAioPool),
    Smart(SmartAioPool),
}

/// Why a submit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Full,
    Closed,
    TimedOut,
    TooHeavy,
    Other,
}

fn refusal(kind: SubmitErrorKind) -> Refusal {
    match kind {
        SubmitErrorKind::Closed => Refusal::Closed,
        SubmitErrorKind::TimedOut => Refusal::TimedOut,
        SubmitErrorKind::TooHeavy => Refusal::TooHeavy,
        _ => Refusal::Other,
    }
}

fn try_refusal(kind: TrySubmitErrorKind) -> Refusal {
    match kind {
        TrySubmitErrorKind::Full => Refusal::Full,
        TrySubmitErrorKind::Closed => Refusal::Closed,
        TrySubmitErrorKind::TooHeavy => Refusal::TooHeavy,
        _ => Refusal::Other,
    }
}

impl Pool {
    fn new(kind: Kind, sc: &Scenario, flavor: Flavor) -> Self {
        let l = sc.limits;
        macro_rules! limited {
            ($b:expr) => {{
                let mut b = $b;
                if let Some(n) = l.max_per_key {
                    b = b.max_per_key(n);
                }
                if let Some(c) = l.weight_capacity {
                    b = b.weight_capacity(u64::from(c));
                }
                if let Some((count, ticks)) = l.rate {
                    b = b.rate_limit(count, flavor.ticks(ticks));
                }
                b.build()
            }};
        }
        match kind {
            Kind::Common => Pool::Common(limited!(CommonAioPool::builder()
                .max_concurrency(sc.max_concurrency)
                .max_queue_size(sc.max_queue_size)
                .process_wide(false))),
            Kind::NoQueue => Pool::NoQueue(limited!(NoQueueAioPool::builder()
                .max_concurrency(sc.max_concurrency)
                .process_wide(false))),
            Kind::Smart => Pool::Smart(limited!(SmartAioPool::builder()
                .max_concurrency(sc.max_concurrency)
                .max_queue_size(sc.max_queue_size)
                .min_workers(sc.min_workers)
                .idle_timeout(flavor.ticks(sc.idle_ticks) * 10)
                .process_wide(false)
                // A failing case must leave nothing for the exit hook to run.
                .auto_shutdown(false))),
        }
    }

    fn queue_size(&self, sc: &Scenario) -> usize {
        match self {
            Pool::NoQueue(_) => 0,
            _ => sc.max_queue_size,
        }
    }

    fn recipe(board: &Arc<Board>, id: usize, work: Work) -> impl Fn() -> Job + Send + Sync {
        let board = board.clone();
        move || {
            board.recipe_called(id);
            Job::new(id, work, board.clone())
        }
    }

    /// Submits task `id`; on a refusal, checks what came back (this task, unpolled).
    async fn submit(
        &self,
        board: &Arc<Board>,
        id: usize,
        work: Work,
        via: Via,
        opts: SubmitOptions,
        tick: Duration,
    ) -> Result<TaskHandle<u64>, Refusal> {
        let job = || Job::new(id, work, board.clone());
        let check_job = |job: Job| {
            assert!(
                job.id == id && !job.polled,
                "task {id}: a refused submit handed back task {} (polled: {})",
                job.id,
                job.polled
            );
        };
        let check_recipe = || {
            let calls = board.lock().tasks[id].recipe_calls;
            assert_eq!(calls, 0, "task {id}: recipe called though refused");
        };
        let opts = match via {
            Via::Timeout(t) => opts.timeout(tick * u32::from(t)),
            _ => opts,
        };
        match (self, via) {
            (Pool::Common(p), Via::Try) => p.try_submit_with(job(), opts).map_err(|e| {
                let r = try_refusal(e.kind());
                check_job(e.into_inner());
                r
            }),
            (Pool::Common(p), _) => p.submit_with(job(), opts).await.map_err(|e| {
                let r = refusal(e.kind());
                check_job(e.into_inner());
                r
            }),
            (Pool::NoQueue(p), Via::Try) => p.try_submit_with(job(), opts).map_err(|e| {
                let r = try_refusal(e.kind());
                check_job(e.into_inner());
                r
            }),
            (Pool::NoQueue(p), _) => p.submit_with(job(), opts).await.map_err(|e| {
                let r = refusal(e.kind());
                check_job(e.into_inner());
                r
            }),
            (Pool::Smart(p), Via::Try) => p
                .try_submit_with(Self::recipe(board, id, work), opts)
                .map_err(|e| {
                    check_recipe();
                    try_refusal(e.kind())
                }),
            (Pool::Smart(p), _) => p
                .submit_with(Self::recipe(board, id, work), opts)
                .await
                .map_err(|e| {
                    check_recipe();
                    refusal(e.kind())
                }),
        }
    }

    fn stats(&self) -> PoolStats {
        match self {
            Pool::Common(p) => p.stats(),
            Pool::NoQueue(p) => p.stats(),
            Pool::Smart(p) => p.stats(),
        }
    }

    fn set_max_concurrency(&self, n: usize) {
        match self {
            Pool::Common(p) => p.set_max_concurrency(n),
            Pool::NoQueue(p) => p.set_max_concurrency(n),
            Pool::Smart(p) => p.set_max_concurrency(n),
        }
    }

    fn cancel_all(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        match self {
            Pool::Common(p) => Box::pin(p.cancel_all()),
            Pool::NoQueue(p) => Box::pin(p.cancel_all()),
            Pool::Smart(p) => Box::pin(p.cancel_all()),
        }
    }

    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        match self {
            Pool::Common(p) => Box::pin(p.shutdown()),
            Pool::NoQueue(p) => Box::pin(p.shutdown()),
            Pool::Smart(p) => Box::pin(p.shutdown()),
        }
    }

    fn shutdown_timeout(
        &self,
        d: Duration,
    ) -> Pin<Box<dyn Future<Output = nb_aiopool::ShutdownReport> + Send>> {
        match self {
            Pool::Common(p) => Box::pin(p.shutdown_timeout(d)),
            Pool::NoQueue(p) => Box::pin(p.shutdown_timeout(d)),
            Pool::Smart(p) => Box::pin(p.shutdown_timeout(d)),
        }
    }
}

// ----- running a scenario -------------------------------------------------------------

struct Ctx {
    pool: Pool,
    flavor: Flavor,
    board: Arc<Board>,
    /// Names the case in every failure.
    label: String,
    queue_size: usize,
}

impl Ctx {
    async fn guard<F: Future>(&self, what: impl std::fmt::Display, fut: F) -> F::Output {
        match tokio::time::timeout(self.flavor.patience(), fut).await {
            Ok(v) => v,
            Err(_) => panic!(
                "hang: waited {:?} for {what}; stats {:?}; violations before: {:?}\n{}",
                self.flavor.patience(),
                self.pool.stats(),
                self.board.lock().violations,
                self.label
            ),
        }
    }

    /// The counter identity and the bounds, after an operation.
    fn check(&self, where_: &str) {
        let s = self.pool.stats();
        let limit_max = self.board.lock().limit_max;
        let sum = s.queued as u64 + s.running as u64 + s.completed + s.panicked + s.cancelled;
        assert_eq!(
            s.submitted, sum,
            "{where_}: submitted != queued + running + completed + panicked + cancelled: \
             {s:?}\n{}",
            self.label
        );
        assert!(
            s.running <= limit_max && s.queued + s.running <= limit_max + self.queue_size,
            "{where_}: {s:?} beyond max_concurrency {limit_max} (at most), queue {}\n{}",
            self.queue_size,
            self.label
        );
        if self.flavor == Flavor::Paused {
            // Nothing else runs while this task does: the two views must agree.
            let now = self.board.running_now();
            assert!(
                now <= s.running,
                "{where_}: {now} tasks running but stats say {s:?}\n{}",
                self.label
            );
        }
    }

    async fn run_producer(
        self: Arc<Self>,
        p: usize,
        ops: Vec<Op>,
    ) -> Vec<(usize, TaskHandle<u64>)> {
        let mut held: Vec<(usize, TaskHandle<u64>)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let where_ = format!("producer {p} op {i} {op:?}");
            match *op {
                Op::Submit(via, o, work) => {
                    let id = self.board.new_task(o, work);
                    let mut opts = SubmitOptions::new().priority(o.priority).weight(o.weight);
                    if let Some(k) = o.key {
                        opts = opts.key(format!("k{k}"));
                    }
                    let res = self
                        .guard(
                            &where_,
                            self.pool
                                .submit(&self.board, id, work, via, opts, self.flavor.tick()),
                        )
                        .await;
                    match res {
                        Ok(h) => {
                            // On the paused runtime nothing runs between the push and this
                            // record: the order is the pool's admission order.
                            self.board.accepted(id);
                            held.push((id, h));
                        }
                        Err(r) => {
                            let closing = self.board.lock().closing;
                            let heavy = self
                                .board
                                .weight_capacity
                                .is_some_and(|c| u64::from(o.weight) > c);
                            let allowed = match r {
                                Refusal::TooHeavy => heavy,
                                // A weight too heavy is refused before anything else.
                                _ if heavy => false,
                                Refusal::Closed => closing,
                                Refusal::Full => matches!(via, Via::Try),
                                Refusal::TimedOut => matches!(via, Via::Timeout(_)),
                                Refusal::Other => false,
                            };
                            assert!(
                                allowed,
                                "{where_}: task {id} refused ({r:?}; closing {closing}, \
                                 weight {} of capacity {:?})\n{}",
                                o.weight, self.board.weight_capacity, self.label
                            );
                            self.board.lock().tasks[id].state = State::Rejected;
                            coverage::add(&coverage::REFUSED, 1);
                        }
                    }
                }
                Op::Abort(k) => {
                    if !held.is_empty() {
                        let (id, h) = &held[k as usize % held.len()];
                        {
                            let mut st = self.board.lock();
                            if st.tasks[*id].state == State::Queued {
                                coverage::add(&coverage::ABORTED_QUEUED, 1);
                            }
                            st.tasks[*id].aborted = true;
                            Board::queued_gone(&mut st, Some(*id));
                        }
                        h.abort();
                        assert!(
                            h.is_finished(),
                            "{where_}: task {id}'s handle not resolved right after abort()\n{}",
                            self.label
                        );
                    }
                }
                Op::Pause(t) => tokio::time::sleep(self.flavor.ticks(t)).await,
                Op::Resize(n) => {
                    {
                        let mut st = self.board.lock();
                        // Growing: the new size holds from the call on (a start it allows
                        // may come before the call returns, on another thread).
                        st.limit_max = st.limit_max.max(n);
                        if n > st.limit_now {
                            st.limit_now = n;
                        }
                    }
                    self.pool.set_max_concurrency(n);
                    // Shrinking: from the return on (tasks running go on).
                    self.board.lock().limit_now = n;
                }
                Op::CancelAll => {
                    {
                        let mut st = self.board.lock();
                        st.cancel_all_before = st.next_seq;
                        let queued = st.tasks.iter().filter(|t| t.state == State::Queued);
                        coverage::add(&coverage::CANCEL_ALL_QUEUED, queued.count() as u64);
                        Board::queued_gone(&mut st, None);
                    }
                    let fut = self.pool.cancel_all();
                    // The cancellation is made at the call: a task whose submit began
                    // before it returned may be covered (on the multi-thread runtime one
                    // accepted at the same time as the call, too).
                    {
                        let mut st = self.board.lock();
                        st.cancel_all_reach = st.tasks.len();
                    }
                    self.guard(&where_, fut).await;
                }
                Op::Stop(s) => {
                    self.board.lock().closing = true;
                    match s {
                        Stop::Shutdown => {
                            let fut = self.pool.shutdown();
                            self.guard(&where_, fut).await;
                        }
                        Stop::ShutdownTimeout(t) => {
                            self.board.lock().shutdown_timeout_called = true;
                            let fut = self.pool.shutdown_timeout(self.flavor.ticks(t));
                            let report = self.guard(&where_, fut).await;
                            assert_eq!(
                                report.is_complete(),
                                report.abandoned() == 0,
                                "{where_}: {report:?}\n{}",
                                self.label
                            );
                            // Its deadline dropped what was queued.
                            Board::queued_gone(&mut self.board.lock(), None);
                        }
                    }
                    let s = self.pool.stats();
                    assert_eq!(
                        (s.queued, s.running),
                        (0, 0),
                        "{where_}: work left after the shutdown returned: {s:?}\n{}",
                        self.label
                    );
                    for (id, h) in &held {
                        assert!(
                            h.is_finished(),
                            "{where_}: task {id} (submitted before) not finished\n{}",
                            self.label
                        );
                    }
                }
            }
            self.check(&where_);
        }
        held
    }

    /// The end-of-case checks, every handle resolved and the pool shut down.
    fn verify(&self, resolved: &[(usize, Resolved)]) {
        let label = &self.label;
        let st = self.board.lock();
        assert!(
            st.violations.is_empty(),
            "violations:\n{}\n{label}",
            st.violations.join("\n")
        );
        assert!(
            st.running.is_empty(),
            "tasks still running: {:?}",
            st.running
        );
        let s = self.pool.stats();
        assert_eq!(
            (s.queued, s.running),
            (0, 0),
            "end: work left: {s:?}\n{label}"
        );
        let (mut values, mut panics, mut cancels) = (0u64, 0u64, 0u64);
        for (id, r) in resolved {
            let t = &st.tasks[*id];
            assert!(
                t.starts <= 1,
                "task {id} started {} times\n{label}",
                t.starts
            );
            if self.pool_is_smart() {
                assert!(
                    t.recipe_calls <= 1,
                    "task {id}: recipe called {} times\n{label}",
                    t.recipe_calls
                );
            }
            if let (State::Completed, Work::Sleep(n), Some(a), Some(b)) =
                (t.state, t.work, t.started_at, t.ended_at)
            {
                assert!(
                    b - a >= self.board.tick * u32::from(n),
                    "task {id} ({:?}) ran from {a:?} to {b:?}\n{label}",
                    t.work
                );
            }
            match r {
                Resolved::Value(v) => {
                    values += 1;
                    assert!(
                        *v == value_of(*id) && t.state == State::Completed,
                        "task {id}: handle gave {v}, the task {:?}\n{label}",
                        t.state
                    );
                }
                Resolved::Panicked(msg) => {
                    panics += 1;
                    assert!(
                        t.state == State::Panicked && msg.contains(&format!("task {id}")),
                        "task {id}: handle says panicked ({msg}), the task {:?}\n{label}",
                        t.state
                    );
                    assert!(matches!(t.work, Work::Panic(_)), "task {id} panicked");
                }
                Resolved::Cancelled(reason) => {
                    let reason = *reason;
                    cancels += 1;
                    let seq = t.seq.expect("an accepted task");
                    let allowed = match reason {
                        CancelReason::Aborted => t.aborted,
                        // Exactly, on the paused runtime; on the multi-thread one, a
                        // cancel_all made while the submit ran may cover it.
                        CancelReason::CancelAll if self.board.exact => seq < st.cancel_all_before,
                        CancelReason::CancelAll => *id < st.cancel_all_reach,
                        CancelReason::Abandoned => st.shutdown_timeout_called,
                        _ => false,
                    };
                    assert!(
                        allowed,
                        "task {id}: cancelled with {reason:?}, which nothing caused \
                         (aborted {}, accepted #{seq}, cancel_all before #{})\n{label}",
                        t.aborted, st.cancel_all_before
                    );
                    // An abort decides first even for a task whose code ran to its end.
                    assert!(
                        matches!(t.state, State::Queued | State::Dropped)
                            || reason == CancelReason::Aborted,
                        "task {id}: cancelled ({reason:?}), yet the task {:?}\n{label}",
                        t.state
                    );
                }
            }
        }
        let accepted = st.tasks.iter().filter(|t| t.seq.is_some()).count();
        assert_eq!(
            resolved.len(),
            accepted,
            "handles held for every accepted task\n{label}"
        );
        for (id, t) in st.tasks.iter().enumerate() {
            if t.seq.is_none() {
                assert!(
                    t.state == State::Rejected && t.starts == 0,
                    "task {id} neither accepted nor handed back: {:?}\n{label}",
                    t.state
                );
            }
        }
        assert_eq!(
            (s.submitted, s.completed, s.panicked, s.cancelled),
            (accepted as u64, values, panics, cancels),
            "stats disagree with the handles: {s:?}\n{label}"
        );
        if let (Some((count, per)), false) = (self.board.rate, self.board.exact) {
            // Sound under real time: a task's start lies between its submit call and its
            // first poll. No `count + 1` tasks may have both within one window.
            let spans: Vec<(usize, Instant, Instant)> = st
                .tasks
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.started_at.map(|s| (i, t.submitted_at, s)))
                .collect();
            for &(_, from, _) in &spans {
                let inside: Vec<usize> = spans
                    .iter()
                    .filter(|&&(_, a, s)| a >= from && s < from + per)
                    .map(|&(i, _, _)| i)
                    .collect();
                assert!(
                    inside.len() <= count,
                    "tasks {inside:?} were all submitted and started within {per:?}, rate \
                     limit {count}\n{label}"
                );
            }
        }
    }

    fn pool_is_smart(&self) -> bool {
        matches!(self.pool, Pool::Smart(_))
    }
}

async fn run_case(kind: Kind, flavor: Flavor, sc: Scenario) {
    let label = format!("case: {kind:?} pool, {flavor:?} runtime, {sc:?}");
    let board = Arc::new(Board {
        max_per_key: sc.limits.max_per_key,
        weight_capacity: sc.limits.weight_capacity.map(u64::from),
        rate: sc
            .limits
            .rate
            .map(|(count, ticks)| (count as usize, flavor.ticks(ticks))),
        exact: flavor == Flavor::Paused,
        t0: Instant::now(),
        tick: flavor.tick(),
        st: Mutex::new(Shared {
            tasks: Vec::new(),
            next_seq: 0,
            running: Vec::new(),
            limit_now: sc.max_concurrency,
            limit_max: sc.max_concurrency,
            starts: Vec::new(),
            violations: Vec::new(),
            cancel_all_before: 0,
            cancel_all_reach: 0,
            shutdown_timeout_called: false,
            closing: false,
        }),
    });
    let pool = Pool::new(kind, &sc, flavor);
    let ctx = Arc::new(Ctx {
        queue_size: pool.queue_size(&sc),
        pool,
        flavor,
        board: board.clone(),
        label,
    });
    // Paused runtime: after every tick, once what was ready has run, no task waits that
    // could start (for a bounded virtual time: a hang must still let the clock jump).
    let monitor = (flavor == Flavor::Paused).then(|| {
        let board = board.clone();
        tokio::spawn(async move {
            for _ in 0..20_000 {
                tokio::time::sleep(flavor.tick()).await;
                for _ in 0..MONITOR_YIELDS {
                    tokio::task::yield_now().await;
                }
                if let Some(v) = board.could_start() {
                    board.lock().violations.push(v);
                    return;
                }
            }
        })
    });
    let mut producers = Vec::new();
    for (p, ops) in sc.producers.iter().cloned().enumerate() {
        producers.push((p, tokio::spawn(ctx.clone().run_producer(p, ops))));
    }
    let mut handles = Vec::new();
    for (p, t) in producers {
        match ctx.guard(format!("producer {p}"), t).await {
            Ok(held) => handles.extend(held),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("producer {p}: {e}\n{}", ctx.label),
        }
    }
    let mut resolved = Vec::new();
    for (id, h) in handles {
        let r = ctx.guard(format!("the handle of task {id}"), h).await;
        resolved.push((id, Resolved::from_result(r)));
    }
    if let Some(m) = monitor {
        m.abort();
    }
    ctx.board.lock().closing = true;
    let fut = ctx.pool.shutdown();
    ctx.guard("the final shutdown", fut).await;
    resolved.sort_by_key(|(id, _)| *id);
    ctx.verify(&resolved);
}

/// How often the monitor yields, after a tick, before it looks: enough for the slot tasks
/// woken at that instant (and those they wake) to run.
const MONITOR_YIELDS: usize = 20;

/// How long a whole case may take, in real time, before it fails as a hang: also when the
/// runtime's threads are blocked, where no timer of its own could fire. (Cases take well
/// under a second.)
const CASE_BUDGET: Duration = Duration::from_secs(60);

fn run(kind: Kind, flavor: Flavor, sc: Scenario) {
    quiet_intentional_panics();
    let label = format!("case: {kind:?} pool, {flavor:?} runtime, {sc:?}");
    let (tx, rx) = std::sync::mpsc::channel();
    // On a thread of its own, so that a hang fails the case with its scenario (the thread
    // is left behind then).
    let case = std::thread::spawn(move || {
        let rt = match flavor {
            Flavor::Paused => support::paused_runtime(),
            Flavor::MultiThread => support::multi_thread_of(2),
        };
        rt.block_on(run_case(kind, flavor, sc));
        let _ = tx.send(());
    });
    match rx.recv_timeout(CASE_BUDGET) {
        Ok(()) => {
            case.join().unwrap();
            coverage::report(&format!("{kind:?} {flavor:?}"));
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match case.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("the case ended without saying so"),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("hang: the case did not end within {CASE_BUDGET:?}\n{label}")
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 400,
        // A case that hangs takes `CASE_BUDGET` each time: shrink for 5 minutes at most.
        max_shrink_time: 300_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(cases()))]

    #[test]
    fn common_paused(sc in scenario(24)) {
        run(Kind::Common, Flavor::Paused, sc);
    }

    #[test]
    fn no_queue_paused(sc in scenario(24)) {
        run(Kind::NoQueue, Flavor::Paused, sc);
    }

    #[test]
    fn smart_paused(sc in scenario(24)) {
        run(Kind::Smart, Flavor::Paused, sc);
    }
}

proptest! {
    #![proptest_config(config((cases() / 4).max(1)))]

    #[test]
    fn common_multi_thread(sc in scenario(12)) {
        run(Kind::Common, Flavor::MultiThread, sc);
    }

    #[test]
    fn no_queue_multi_thread(sc in scenario(12)) {
        run(Kind::NoQueue, Flavor::MultiThread, sc);
    }

    #[test]
    fn smart_multi_thread(sc in scenario(12)) {
        run(Kind::Smart, Flavor::MultiThread, sc);
    }
}
