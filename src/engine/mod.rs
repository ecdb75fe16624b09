//! The machinery under the three pools.
//!
//! # Design
//!
//! A pool is an [`Engine`]: room for `max_concurrency + max_queue_size` jobs, counted
//! under the engine's lock with the submitters waiting for it ([`admission`]: the
//! backpressure), a queue ([`queue::Queue`]: FIFO, or by priority once a
//! job has one), start-time flow control ([`limits`]) and *slots*.
//! A slot is a tokio task of its own that runs jobs one after the other. A submit that
//! finds a free slot *reserves* it for the job (the job now counts as running) and makes
//! sure a *claimer* is on its way: an idle slot task of the submitter's runtime woken, or
//! a new one spawned there, at most [`CLAIMERS_MAX`] at once. A slot whose job ends takes
//! the next job (a reserved one no claimer is on its way to, or an unreserved one) and
//! runs it at once, in the same tokio task, with no wake-up; with nothing queued it
//! lingers a little, then waits (idle) to be given work. So:
//!
//! - a job runs on the runtime of the code that submitted it (see [`runtimes`]), and the
//!   end of one runtime only touches the jobs submitted from it;
//! - slots are ordinary tokio tasks: tokio's scheduler spreads them over its threads and
//!   steals them from a thread that a blocking job holds up;
//! - a queued job costs no `tokio::spawn`: it runs in the slot that frees up.
//!
//! All bookkeeping (queue, counters, slots, waits) lives under one `std` mutex, held for
//! short non-blocking sections. User code (futures, recipes, their drops, the wakers the
//! pool wakes, clones or drops: a waiting submitter's is cloned before the lock and
//! dropped after it) never runs under it. A job's outcome is counted
//! and its handle's result stored in the same critical section, so `stats()` and handles
//! always agree.

mod admission;
mod elastic;
mod few;
mod graves;
mod job;
pub(crate) mod limits;
mod marks;
pub(crate) mod queue;
pub(crate) mod runtimes;
mod slot;
mod watchers;

use std::cmp::Reverse;
use std::collections::hash_map::{Entry, HashMap};
use std::collections::HashSet;
use std::future::{poll_fn, Future};
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use slab::Slab;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

pub(crate) use elastic::ElasticConfig;
pub(crate) use job::Job;
pub(crate) use limits::{LimitsConfig, Meta};

use crate::error::{CancelReason, SubmitErrorKind};
use crate::observe::{Observer, OnPanic, Stamp, Stamps};
use crate::stats::{PoolStats, ShutdownReport};
use crate::sync;
use crate::task::context::{self, Probe};
use crate::task::unqueue::{self, Unqueue};
use crate::task::{wake_quietly, BoxRun, Outcome, PoolId, QuietPoll, RUNNER_FAR};
use admission::{Admission, WaitKey, MAX_ROOM};
use elastic::Elastic;
use few::Few;
use graves::{Batch, Grave, Graves, Kept};
use limits::Limits;
use marks::{DropWatchers, Polling};
use queue::{Ordered, Queue};
use runtimes::{Deaths, RtRef, Runtimes, ANY};
pub(crate) use slot::thread_token;
use slot::Slot;
use watchers::SizeWatchers;

/// What a pool passes in when it creates its engine.
pub(crate) struct Config {
    /// The pool's name in messages ("CommonAioPool").
    pub(crate) name: &'static str,
    pub(crate) max_concurrency: usize,
    pub(crate) max_queue_size: usize,
    pub(crate) elastic: Option<ElasticConfig>,
    /// Whether a run interrupted by the end of its runtime starts again from the job's
    /// copy (jobs whose [`Job::RERUN`] allows it), or is cancelled.
    pub(crate) rerun: bool,
    /// Flow control at start time (per-key limits, weights, a rate limit).
    pub(crate) limits: LimitsConfig,
    /// The pool's display name (the builder's `name`), for tracing and metrics.
    pub(crate) label: Arc<str>,
    /// Called for panics of tasks whose handle was dropped.
    pub(crate) on_panic: OnPanic,
}

/// Unfinished tasks and tasks lost to runtime shutdowns, for the exit report.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Figures {
    /// Queued (but for `held_back`) or running.
    pub(crate) unfinished: usize,
    pub(crate) lost: u64,
    /// Queued tasks a `rate_limit` window that never reopens holds back for good (those
    /// beyond the starts it has left): still queued (a live pool), or cancelled by the
    /// pool's drop (a dropped one's figures).
    pub(crate) held_back: usize,
    /// The pool's size when it was dropped (after any `set_max_concurrency`).
    pub(crate) max_concurrency: usize,
}

/// Called when an engine is dropped with figures worth reporting at exit.
pub(crate) type DropHook = Box<dyn Fn(Figures) + Send + Sync>;

/// Why a push was refused; the item comes back.
pub(crate) enum PushError<T> {
    Closed(T),
    NoRuntime(T),
}

impl<T> PushError<T> {
    pub(crate) fn kind(&self) -> SubmitErrorKind {
        match self {
            PushError::Closed(_) => SubmitErrorKind::Closed,
            PushError::NoRuntime(_) => SubmitErrorKind::NoRuntime,
        }
    }

    pub(crate) fn into_inner(self) -> T {
        match self {
            PushError::Closed(t) | PushError::NoRuntime(t) => t,
        }
    }

    /// The same refusal, with the item changed by `f`.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> PushError<U> {
        match self {
            PushError::Closed(t) => PushError::Closed(f(t)),
            PushError::NoRuntime(t) => PushError::NoRuntime(f(t)),
        }
    }
}

/// Why [`Engine::push`] did not queue its item; the item comes back.
pub(crate) enum Admitting<T> {
    /// No room: the caller may wait for it. The item's settings come back with it.
    Full(T, Meta),
    Refused(PushError<T>),
}

/// Returned by [`Engine::try_admit`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum AdmitError {
    Full,
    Closed,
}

pub(crate) struct Queued<J> {
    job: J,
    id: u64,
    rt: RtRef,
    /// Submitted from outside the pool's runtimes (a plain thread): `rt` is only where it
    /// was sent, so the end of that runtime leaves it to another live one while it has
    /// not started (see [`Engine::settle_dead`]).
    plain: bool,
    meta: Meta,
    /// When it was queued, for the observability features (empty without them).
    stamp: Stamp,
}

impl<J> Ordered for Queued<J> {
    fn priority(&self) -> i32 {
        self.meta.priority()
    }

    fn seq(&self) -> u64 {
        self.id
    }
}

/// A live slot, as the state sees it.
struct SlotEntry<J> {
    /// Its tokio task's waker, once it has waited; woken to make it notice `cancel_all`.
    waker: Option<Waker>,
    /// The job it runs (`u64::MAX`: none yet).
    job: u64,
    /// A copy of that job for running it again (`RERUN` jobs only).
    copy: Option<J>,
    /// That job's flow-control settings, given back to the limits when it ends.
    meta: Meta,
    /// The start of the rate window that job spent when it left the queue (what
    /// [`Limits::started`](limits::Limits::started) returned): given back if the slot is
    /// dropped before it ran the job (see `Slot::drop`).
    charged: Option<Instant>,
    /// Whether (and on which thread) the slot task is being polled now.
    polling: Polling,
    /// Its job was aborted while the slot held it: the slot drops it (and counts its end)
    /// at its next poll, which a runtime that is never driven again (`process::exit`)
    /// never makes; the exit's report leaves such jobs out (finding 282).
    aborted: bool,
}

impl<J> SlotEntry<J> {
    /// The entry of a slot task with no job yet (a claimer, or an idle one).
    fn jobless(polling: &Polling) -> Self {
        SlotEntry {
            waker: None,
            job: u64::MAX,
            copy: None,
            meta: Meta::default(),
            charged: None,
            polling: polling.clone(),
            aborted: false,
        }
    }
}

#[derive(Default)]
struct Counts {
    submitted: u64,
    completed: u64,
    panicked: u64,
    cancelled: u64,
    abandoned: u64,
    /// Jobs cancelled because their runtime went away.
    lost: u64,
}

/// A slot task with nothing to do, kept for the next job of its runtime (so that a submit
/// to an idle pool wakes a task instead of spawning one).
struct Idle {
    key: usize,
    rt: RtRef,
    /// Set once it stopped lingering and waits to be woken.
    waker: Option<Waker>,
}

/// The most idle slot tasks a pool keeps.
const IDLE_MAX: usize = 256;

/// The most slot tasks scheduled at once to take reserved jobs. Reserved jobs beyond
/// these are taken by slots whose job ends (no wake-up at all), or by the next claimer,
/// which schedules another as it takes its job: a burst of submits wakes a few tasks,
/// not one per job. More than one, so that a claimer stuck behind a job that blocks its
/// thread (in a tokio worker's LIFO slot, which other workers do not steal) holds
/// nothing up.
const CLAIMERS_MAX: usize = 8;

/// A `wait()` in progress: jobs with an id below `target` not yet finished, but for
/// `except`, the job of this pool that made the wait while it ran (it could never end
/// while it waits for itself).
struct Wait {
    target: u64,
    remaining: u64,
    except: Option<u64>,
}

struct State<J> {
    queue: Queue<Queued<J>>,
    /// Flow control; `None` for a pool built without any (one branch per start).
    limits: Option<Box<Limits>>,
    /// A timer task will look at the queue again when the rate window allows a start.
    rate_timer: bool,
    /// The most jobs that run at once (changed by `set_max_concurrency`).
    max_concurrency: usize,
    /// Jobs holding a slot: running, or handed to a slot task that has not run yet, or
    /// reserved (`reserved` of them, at the queue's head) for the next slot task that
    /// looks for one.
    running: usize,
    /// Slots reserved for the jobs at the front of the queue; `reserved <= queue.len()`.
    /// Those jobs count as running, not queued. Any slot task may take a reserved job: a
    /// *claimer* (below), or a slot whose job just ended (it then gives its own slot back).
    reserved: usize,
    /// Slot tasks woken or spawned to take a reserved job, that have not looked yet (at
    /// most [`CLAIMERS_MAX`]). A claimer that finds every reservation taken goes idle.
    claimers: usize,
    /// How many jobs may run at once now: `max_concurrency`, or the live worker count of
    /// an elastic pool.
    limit: usize,
    elastic: Option<Elastic>,
    counts: Counts,
    /// Jobs whose end was applied to the waits (lags `counts` while a cancelled job's
    /// handle is being told, outside the lock).
    wait_done: u64,
    waits: Slab<Wait>,
    closed: bool,
    /// The room for jobs, and the submitters waiting for it.
    admission: Admission,
    /// Running jobs now waiting for handles of tasks of this pool, each with the tasks it
    /// waits for, once per handle (see `Probe`).
    waiting_on_own: HashMap<u64, Vec<u64>>,
    /// The waiting job whose waits are refused next, the pool being stuck on nested
    /// waits (see [`Engine::break_nested_deadlock`]); and whether its current poll
    /// refused one.
    stuck_pick: Option<u64>,
    stuck_refused: bool,
    /// The pick is of a cycle of waits among running jobs (no awaited task is queued):
    /// its waits on waiting jobs are refused, as a wait starting then would be.
    stuck_cycle: bool,
    /// Picks made so far (the number of the current one).
    picks: u64,
    cancel_reason: CancelReason,
    /// The running job the last `cancel_all` left out: the job that called
    /// `shutdown_timeout` on its own pool, whose deadline abandons the others, not it.
    cancel_spared: Option<u64>,
    /// Set by the exit take-over, cleared by [`Engine::exit_start`]: nothing starts in
    /// between, not even a job a plain thread submits, so that no job starts before every
    /// pool is taken over.
    exit_hold: bool,
    slots: Slab<SlotEntry<J>>,
    /// Idle slot tasks (see [`Idle`]).
    idle: Vec<Idle>,
    runtimes: Runtimes,
    /// Bumped when the exit hook takes the pool over; slots of older generations stop.
    generation: u64,
    /// After a take-over: every job runs on the home runtime, whatever its submitter's.
    taken_over: bool,
    /// After a take-over: queued jobs lost because a rate window that never reopens
    /// (`Duration::MAX`) held them back (the exit would have waited for them for good).
    never_started: u64,
    /// A watcher of [`Engine::when_done`] waits until the pool owes no work
    /// ([`Engine::owes_work`]): the waits are told (`changed`) each time no job runs.
    watch_owed: bool,
    /// Jobs whose run the exit take-over waits for, inside a poll on another thread.
    awaiting_poll: Vec<u64>,
    /// Those of them whose run ended in that poll (counted then): not run again.
    ended_in_take_over: Vec<u64>,
    /// What ended jobs left that their submitter made (see [`graves`]).
    graves: Graves<J>,
    /// The marks of the slot tasks that drop what ended jobs left after the lock (a
    /// re-run pool's, and any pool's after a panic, whose `on_panic` call comes first:
    /// see [`Polling::begin_drop`]); marks of slots that are gone are pruned as the list
    /// grows.
    droppers: Vec<Polling>,
}

impl<J> State<J> {
    /// Takes a place for a job if the pool is open and has room; given back when the job
    /// ends (or by [`Engine::unadmit`]).
    fn take_place(&mut self) -> Result<(), AdmitError> {
        if self.closed {
            Err(AdmitError::Closed)
        } else if self.admission.try_take() {
            Ok(())
        } else {
            Err(AdmitError::Full)
        }
    }
}

/// The engine's lock, held: its state, and on release what is owed for the critical
/// section as a whole (the stamps of elastic workers left idle, one clock read for all).
///
/// # Dropping
///
/// Releases the lock, after stamping the elastic workers that became idle under it.
struct StateGuard<'a, J: Job>(MutexGuard<'a, State<J>>);

impl<J: Job> std::ops::Deref for StateGuard<'_, J> {
    type Target = State<J>;

    fn deref(&self) -> &State<J> {
        &self.0
    }
}

impl<J: Job> std::ops::DerefMut for StateGuard<'_, J> {
    fn deref_mut(&mut self) -> &mut State<J> {
        &mut self.0
    }
}

impl<J: Job> Drop for StateGuard<'_, J> {
    fn drop(&mut self) {
        if let Some(el) = &mut self.0.elastic {
            el.settle();
        }
    }
}

/// What a critical section leaves to do once the lock is released.
///
/// Made for one call, on the caller's stack (a slot task keeps none: one kept per slot
/// task, with the buffers its lists grew, cost every running job 64 to 220 bytes, see
/// BENCHMARKS.md, "2026-12-04, before midnight"); the lists that mostly hold one item or
/// none hold it in place ([`Few`]), so that a job's end allocates nothing here.
///
/// # Dropping
///
/// Drops what it still holds, without acting on it; [`Engine::settle`] and
/// [`Engine::finish`] walk a record first, and skip the drop of one that owns nothing.
pub(crate) struct Deferred<J: Job> {
    /// Handles to wake (results already stored under the lock).
    woken: Few<crate::task::Woken>,
    /// Idle slot tasks given a job.
    wake: Few<Waker>,
    /// Queued jobs to drop unrun and tell their handles why; then applied to the waits.
    /// (Boxed, as the rate timer: rare; one word to make instead of a `Vec`'s three.)
    #[allow(clippy::type_complexity, clippy::box_collection)]
    cancels: Option<Box<Vec<(J, u64, CancelReason)>>>,
    /// Slots to spawn, each with its first job.
    spawns: Vec<(Handle, Slot<J>)>,
    /// Submitters granted room (see [`Admission::give_back`]).
    granted: Few<Waker>,
    /// Wake `wait()` callers.
    changed: bool,
    /// Start a rate timer on this runtime, firing then (boxed: rare, and every record is
    /// made, and its size written, at every job's end).
    rate_timer: Option<Box<(Handle, Instant)>>,
    /// Queue-time stamps of jobs that left the queue unrun, dropped outside the lock.
    stamps: Stamps,
    /// Look for a deadlock of nested waits afterwards (a job ended, or the pool shrank,
    /// while jobs waited on tasks of the pool): see [`Engine::break_nested_deadlock`].
    recheck_waits: bool,
    /// What ended jobs left, to drop first of all (see [`graves`]).
    graves: Vec<Batch<J>>,
    /// Arm the timer that frees kept graves, on this runtime.
    reap_timer: Option<Handle>,
}

impl<J: Job> Deferred<J> {
    /// Whether nothing was deferred and nothing allocated: what most submits leave (the job
    /// queued behind running ones). Such a record needs no walk after the lock and holds
    /// nothing to free, so it need not be dropped (see [`Engine::finish`]).
    fn untouched(&self) -> bool {
        // Every field named (no `..`): one added later fails to compile here until it is
        // checked, so a record left undropped never leaks what it holds.
        let Deferred {
            woken,
            wake,
            cancels,
            spawns,
            granted,
            changed,
            rate_timer,
            stamps,
            recheck_waits,
            graves,
            reap_timer,
        } = self;
        woken.untouched()
            && wake.untouched()
            && cancels.is_none()
            && spawns.capacity() == 0
            && granted.untouched()
            && !*changed
            && rate_timer.is_none()
            && stamps.untouched()
            && !*recheck_waits
            && graves.capacity() == 0
            && reap_timer.is_none()
    }

    /// Whether tasks are to be spawned or woken: slot tasks, or the timer that frees kept
    /// graves. From a tokio worker thread, the last of them goes to that worker's LIFO
    /// slot, which other workers never steal: a slot about to run a job (which may block
    /// the thread) yields first, so that task runs, or is stolen, before the job can hold
    /// it up. (Without this for the timer, `tests/runtimes.rs`'s isolation test had 199
    /// of 200 jobs late in 2 runs of 6: all waited for the blocking job's end.)
    pub(crate) fn schedules(&self) -> bool {
        !self.spawns.is_empty() || !self.wake.is_empty() || self.reap_timer.is_some()
    }
}

impl<J: Job> Default for Deferred<J> {
    fn default() -> Self {
        Deferred {
            woken: Few::new(),
            wake: Few::new(),
            cancels: None,
            spawns: Vec::new(),
            granted: Few::new(),
            changed: false,
            rate_timer: None,
            stamps: Stamps::default(),
            recheck_waits: false,
            graves: Vec::new(),
            reap_timer: None,
        }
    }
}

pub(crate) struct Engine<J: Job> {
    /// What the pool's tasks keep to reach it (freed after `Drop` left the registries).
    id: PoolId,
    /// Mirror of `State::max_concurrency`, for the getter.
    max_concurrency: AtomicUsize,
    /// Interrupted runs start again (see `Config::rerun`).
    rerun: bool,
    /// The pool has a rate limit, whose timer needs tokio's time driver: only runtimes
    /// that have one are let in (see [`Engine::check_timers`]).
    needs_timers: bool,
    /// The pool's type name, for messages.
    name: &'static str,
    /// `LimitsConfig::weight_capacity`, read by `check_weight` without the lock.
    weight_capacity: Option<u64>,
    max_queue_size: usize,
    state: Mutex<State<J>>,
    /// Signalled when a wait's target is reached, and at close.
    changed: Notify,
    /// Signalled when an armed rate timer has nothing left to start: the pool is closed
    /// and its queue empty ([`rate_timer_unneeded`](Self::rate_timer_unneeded)).
    rate_idle: Notify,
    /// Told when `set_max_concurrency` changes the pool's size.
    size_watchers: SizeWatchers,
    /// `wait()`s waiting for slots to finish dropping what ended jobs left: a slot that
    /// finishes one signals `changed` while there are any.
    drop_watchers: DropWatchers,
    /// Mirror of `State::generation`, so a stale slot stops without taking the lock.
    generation: AtomicU64,
    /// Running jobs with an id below this are cancelled with `State::cancel_reason` (but
    /// for `State::cancel_spared`).
    cancel_before: AtomicU64,
    /// Non-zero while the pool is stuck on nested waits after a slot went away (see
    /// [`Engine::break_nested_deadlock`]): the number of the current pick, so a slot can
    /// tell whether a poll began after it. 0 once a check finds the pool no longer stuck.
    stuck_epoch: AtomicU64,
    /// The pool holds queued jobs and knows no live runtime to run them on (re-runs cut
    /// off by the end of their runtime): a pending poll of a handle offers its runtime
    /// (see [`Engine::note_stranded`]). Written under the lock.
    stranded: AtomicBool,
    /// A thread of the crate runs a runtime of its own for this stranded pool, because a
    /// handle awaited where no live runtime could be offered (see
    /// [`serve_stranded`](Engine::serve_stranded)).
    serving: AtomicBool,
    on_drop: Option<DropHook>,
    /// Called, outside the lock, for panics of detached tasks.
    on_panic: OnPanic,
    /// Tracing and metrics handles (empty without those features).
    observer: Observer,
}

impl<J: Job> Engine<J> {
    /// # Panics
    ///
    /// Panics if `max_concurrency` is 0, `max_concurrency + max_queue_size` exceeds
    /// [`MAX_ROOM`], or `min_workers` exceeds `max_concurrency`.
    ///
    /// `me` is the engine's own `Arc`, being made (`Arc::new_cyclic`): the runtimes' sentinels
    /// call back through it.
    #[track_caller]
    pub(crate) fn new(config: Config, on_drop: Option<DropHook>, me: Weak<Self>) -> Self {
        let Config {
            name,
            max_concurrency,
            max_queue_size,
            elastic,
            rerun,
            limits,
            label,
            on_panic,
        } = config;
        assert!(
            max_concurrency > 0,
            "nb_aiopool: {name}: max_concurrency must be at least 1, got 0"
        );
        let permits = max_concurrency
            .checked_add(max_queue_size)
            .filter(|p| *p <= MAX_ROOM)
            .unwrap_or_else(|| {
                panic!(
                    "nb_aiopool: {name}: max_concurrency + max_queue_size = {max_concurrency} + \
                     {max_queue_size} exceeds the largest supported size ({MAX_ROOM})"
                )
            });
        if let Some(config) = &elastic {
            assert!(
                config.min_workers <= max_concurrency,
                "nb_aiopool: {name}: min_workers ({}) must not exceed max_concurrency ({max_concurrency})",
                config.min_workers
            );
        }
        let limit = elastic.map_or(max_concurrency, |c| c.min_workers);
        let needs_timers = limits.rate.is_some();
        let reachable: Weak<dyn Unqueue> = me.clone();
        let probe: Weak<dyn Probe> = me.clone();
        let mut runtimes = Runtimes::new(me);
        if let Ok(handle) = Handle::try_current() {
            if needs_timers && !runtimes::has_timers(&handle) {
                panic!("{}", no_timers_message(name));
            }
            // Created inside a runtime: plain threads can submit at once.
            runtimes.enter(&handle);
        }
        let state = State {
            queue: Queue::default(),
            limits: (!limits.is_empty()).then(|| Box::new(Limits::new(limits))),
            rate_timer: false,
            max_concurrency,
            running: 0,
            reserved: 0,
            claimers: 0,
            limit,
            elastic: elastic.map(|c| Elastic::new(c, limit)),
            counts: Counts::default(),
            wait_done: 0,
            waits: Slab::new(),
            closed: false,
            admission: Admission::new(permits),
            waiting_on_own: HashMap::new(),
            stuck_pick: None,
            stuck_refused: false,
            stuck_cycle: false,
            picks: 0,
            cancel_reason: CancelReason::Abandoned,
            cancel_spared: None,
            exit_hold: false,
            slots: Slab::new(),
            idle: Vec::new(),
            runtimes,
            generation: 0,
            taken_over: false,
            never_started: 0,
            watch_owed: false,
            awaiting_poll: Vec::new(),
            ended_in_take_over: Vec::new(),
            graves: Graves::new(max_concurrency.saturating_add(max_queue_size)),
            droppers: Vec::new(),
        };
        // Calls the metrics recorder (which may panic: then it is caught), before the
        // registrations below.
        let observer = Observer::new(&label);
        // Last, once nothing can panic: an engine that was never made is never reached.
        let id = PoolId::new();
        unqueue::register(id.get(), reachable);
        context::register(id.get(), probe);
        Engine {
            id,
            max_concurrency: AtomicUsize::new(max_concurrency),
            rerun: rerun && J::RERUN,
            needs_timers,
            name,
            weight_capacity: limits.weight_capacity,
            max_queue_size,
            state: Mutex::new(state),
            changed: Notify::new(),
            rate_idle: Notify::new(),
            size_watchers: SizeWatchers::default(),
            generation: AtomicU64::new(0),
            cancel_before: AtomicU64::new(0),
            stuck_epoch: AtomicU64::new(0),
            stranded: AtomicBool::new(false),
            serving: AtomicBool::new(false),
            drop_watchers: DropWatchers::default(),
            on_drop,
            on_panic,
            observer,
        }
    }

    fn lock(&self) -> StateGuard<'_, J> {
        // No user code runs under the lock (a waiting submitter's waker is cloned before
        // it and dropped after it: see `Admit`), so a poisoned lock means a bug in this
        // crate. The state is still consistent between statements, so keep going.
        StateGuard(self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// [`lock`](Self::lock) if it is free now.
    fn try_lock(&self) -> Option<StateGuard<'_, J>> {
        match self.state.try_lock() {
            Ok(st) => Some(StateGuard(st)),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(StateGuard(e.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    pub(crate) fn max_concurrency(&self) -> usize {
        self.max_concurrency.load(Ordering::Relaxed)
    }

    pub(crate) fn max_queue_size(&self) -> usize {
        self.max_queue_size
    }

    pub(crate) fn reruns(&self) -> bool {
        self.rerun
    }

    /// Identifies this engine for the nested-submission and nested-await checks.
    pub(crate) fn id(&self) -> u32 {
        self.id.get()
    }

    // ----- admission -------------------------------------------------------------------

    /// For a pool with a rate limit: panics (before anything is taken or changed) if the
    /// calling code runs on a runtime without tokio's time driver, where its task would
    /// run. (From a plain thread a task runs on the home, which was checked when it came
    /// in.) Every submit path passes here first, in [`try_admit`](Self::try_admit).
    #[track_caller]
    fn check_timers(&self) {
        if self.needs_timers {
            if let Ok(handle) = Handle::try_current() {
                if !runtimes::has_timers(&handle) {
                    panic!("{}", no_timers_message(self.name));
                }
            }
        }
    }

    #[track_caller]
    pub(crate) fn try_admit(&self) -> Result<(), AdmitError> {
        self.check_timers();
        self.lock().take_place()
    }

    /// [`try_admit`](Self::try_admit) for a `try_submit`: a refusal is reported to the
    /// observability features (a full pool as `full`, a closed one as `closed`).
    #[track_caller]
    pub(crate) fn try_admit_reported(&self) -> Result<(), AdmitError> {
        let admitted = self.try_admit();
        if let Err(refused) = admitted {
            self.refused(refused);
        }
        admitted
    }

    /// Reports a `try_submit`'s refusal (see [`try_admit_reported`](Self::try_admit_reported)).
    pub(crate) fn refused(&self, refused: AdmitError) {
        self.observer.rejected(match refused {
            AdmitError::Full => None,
            AdmitError::Closed => Some(SubmitErrorKind::Closed),
        });
    }

    /// Waits for room for a task of `priority`, behind the submitters already waiting
    /// with the same or a higher one. Cancel safe: dropping the future takes no place (one
    /// granted to it meanwhile goes to the next).
    fn admit(&self, priority: i32) -> Admit<'_, J> {
        Admit {
            engine: self,
            priority,
            key: None,
        }
    }

    /// Admission for `submit().await`: refuses a nested submit into a full pool instead of
    /// waiting (which would hold a slot while waiting for one). Cancel safe.
    pub(crate) async fn admit_submit(self: &Arc<Self>) -> Result<(), SubmitErrorKind> {
        match self.admit_or_wait() {
            Some(done) => done,
            None => self.admit_waiting(0).await,
        }
    }

    /// The waiting half of [`admit_submit`](Self::admit_submit), once
    /// [`admit_or_wait`](Self::admit_or_wait) or [`full`](Self::full) said to wait: a
    /// caller that tries first without a future of its own saves one on every submit that
    /// finds room. `priority`: the task's (see [`admit`](Self::admit)). Cancel safe.
    ///
    /// If the pool becomes stranded meanwhile, the submit's runtime is offered; with none
    /// to offer (an executor outside tokio) no room would come: refused with `NoRuntime`,
    /// as such a submit is when it finds the pool so at once (see
    /// [`admit_blocking`](Self::admit_blocking)).
    pub(crate) async fn admit_waiting(
        self: &Arc<Self>,
        priority: i32,
    ) -> Result<(), SubmitErrorKind> {
        let mut admit = pin!(self.admit(priority));
        let admitted = poll_fn(|cx| match admit.as_mut().poll(cx) {
            Poll::Ready(a) => Poll::Ready(a.map_err(|_| SubmitErrorKind::Closed)),
            Poll::Pending if self.no_room_can_come() => {
                Poll::Ready(Err(SubmitErrorKind::NoRuntime))
            }
            Poll::Pending => Poll::Pending,
        })
        .await;
        self.admitted(admitted)
    }

    /// For a submit whose wait for room just polled pending: whether the pool is stranded
    /// with no live runtime the caller can offer it (offered here if it has one), so that
    /// no room can come (see [`note_stranded`](Self::note_stranded), which wakes the
    /// waiting submitters when the pool becomes stranded). One load otherwise.
    fn no_room_can_come(self: &Arc<Self>) -> bool {
        if !self.stranded.load(Ordering::Relaxed) {
            return false;
        }
        self.offer_if_stranded();
        self.stranded.load(Ordering::Relaxed)
    }

    /// [`admit_waiting`](Self::admit_waiting) that gives up after `limit` (`TimedOut`).
    /// Its timer is made only if the submit has to wait (a separate function, so that the
    /// timer does not grow every plain submit's future). Cancel safe.
    ///
    /// # Panics
    ///
    /// Where its timer cannot be made (see [`assert_timer_here`]), with this crate's
    /// message.
    pub(crate) async fn admit_waiting_within(
        &self,
        limit: Duration,
        priority: i32,
    ) -> Result<(), SubmitErrorKind> {
        assert_timer_here(&TIMED_SUBMIT);
        let waited = timeout_or_never(limit, self.admit(priority)).await;
        self.admitted(match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SubmitErrorKind::Closed),
            Err(_) => Err(SubmitErrorKind::TimedOut),
        })
    }

    /// The first step of a submit's admission: `Some` if it is decided now (admitted, or
    /// refused and reported), `None` if the submit has to wait for room (then jobs that
    /// lost their runtime are started on the submitter's first, or it could wait for ever).
    pub(crate) fn admit_or_wait(self: &Arc<Self>) -> Option<Result<(), SubmitErrorKind>> {
        match self.try_admit() {
            Ok(()) => Some(Ok(())),
            Err(AdmitError::Closed) => Some(self.admitted(Err(SubmitErrorKind::Closed))),
            Err(AdmitError::Full) => self.full().err().map(Err),
        }
    }

    /// A submit found the pool full: `Ok` if it may wait for room (then jobs that lost
    /// their runtime are started on the submitter's first, or it could wait for ever),
    /// or the refusal, reported.
    pub(crate) fn full(self: &Arc<Self>) -> Result<(), SubmitErrorKind> {
        let kind = if context::in_pool(self.id()) {
            SubmitErrorKind::WouldDeadlock
        } else if self.ensure_started() {
            return Ok(());
        } else {
            // Outside a runtime, into a pool with none alive: the room would never come.
            SubmitErrorKind::NoRuntime
        };
        self.admitted(Err(kind))
    }

    /// Reports a refusal; passes the result on.
    fn admitted(&self, result: Result<(), SubmitErrorKind>) -> Result<(), SubmitErrorKind> {
        if let Err(kind) = result {
            self.observer.rejected(Some(kind));
        }
        result
    }

    /// The waiting half of `blocking_submit`'s admission, once [`full`](Self::full) said
    /// to wait: parks the calling thread until there is room.
    ///
    /// If the pool becomes stranded meanwhile (the end of the runtime that ran its jobs
    /// queued their re-runs, and it knows no live runtime), the calling thread's runtime
    /// is offered; with none alive to offer (a plain thread, or a `spawn_blocking` thread
    /// of the runtime that ended, whose drop waits for that thread), no room would come:
    /// refused with `NoRuntime`, as such a submit is when it finds the pool so at once.
    pub(crate) fn admit_blocking(self: &Arc<Self>) -> Result<(), SubmitErrorKind> {
        let admitted = crate::blocking::block_on_unless(self.admit(0), || self.no_room_can_come());
        let admitted = match admitted {
            Some(a) => a.map_err(|_| SubmitErrorKind::Closed),
            None => Err(SubmitErrorKind::NoRuntime),
        };
        self.admitted(admitted)
    }

    /// Gives back a place taken for a push that was refused (or for a job a stream or
    /// group did not push after all).
    pub(crate) fn unadmit(&self) {
        let mut granted = Vec::new();
        self.lock().admission.give_back(1, &mut granted);
        granted.into_iter().for_each(wake_quietly);
    }

    /// The `on_panic` callback, if set.
    pub(crate) fn on_panic(&self) -> Option<&OnPanic> {
        self.on_panic.is_set().then_some(&self.on_panic)
    }

    pub(crate) fn observer(&self) -> &Observer {
        &self.observer
    }

    /// Under the lock: the metrics gauges follow `PoolStats::queued` and `running`.
    #[inline(always)]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn gauges(&self, st: &State<J>) {
        #[cfg(feature = "metrics")]
        self.observer
            .gauges(st.queue.len() - st.reserved, st.running);
        self.unstrand(st);
    }

    // ----- submission ------------------------------------------------------------------

    /// Queues a job (built by `make` from `item` and the job's id, under the lock) with its
    /// flow-control settings, and starts it if a slot is free.
    ///
    /// With `admit`, the item is not yet admitted: it takes its place in the critical
    /// section that queues it (one lock for both), or comes back with
    /// [`Admitting::Full`] if there is no room (then its caller waits for room with
    /// [`full`](Self::full) and [`admit_waiting`](Self::admit_waiting), and pushes it
    /// again, admitted). Without, the caller holds a place for it, which a refusal gives
    /// back.
    ///
    /// With `reap` (an async submit), it also takes the graves kept for a submitter to
    /// free ([`graves`]), if enough wait and this thread is not polling a job.
    #[track_caller]
    #[inline(always)]
    pub(crate) fn push<T>(
        self: &Arc<Self>,
        item: T,
        meta: Meta,
        reap: bool,
        admit: bool,
        make: impl FnOnce(T, u64) -> J,
    ) -> Result<(), Admitting<T>> {
        if admit {
            // As `try_admit` does.
            self.check_timers();
        }
        let current = Handle::try_current().ok();
        if self.needs_timers && current.as_ref().is_some_and(|h| !runtimes::has_timers(h)) {
            // Admitted on a runtime with timers, pushed on one without (a submit future
            // moved between runtimes): its rate window could never be kept there.
            if !admit {
                self.unadmit();
            }
            self.observer.rejected(Some(SubmitErrorKind::NoRuntime));
            return Err(Admitting::Refused(PushError::NoRuntime(item)));
        }
        // Taken before the lock: with `tracing` it asks the subscriber for the current span.
        let stamp = Stamp::now();
        // Not dropped at the end of the scope: `finish` drops it only if it held anything.
        let mut later = ManuallyDrop::new(Deferred::default());
        {
            let mut st = self.lock();
            if st.closed {
                return self.refuse(st, !admit, PushError::Closed(item));
            }
            if admit && !st.admission.try_take() {
                // Before the runtime is entered: a submit that may never queue its job
                // (it may time out, or be dropped) must not make its runtime the home.
                return Err(Admitting::Full(item, meta));
            }
            // From here, the item holds a place.
            // The submitter's runtime; from a plain thread, or a `spawn_blocking` thread that
            // outlived its runtime, the home (or, if it has ended, another live runtime the
            // pool knows).
            let entered = current.as_ref().and_then(|h| st.runtimes.enter(h));
            let rt = match entered.or_else(|| st.runtimes.live_or_any(None)) {
                Some(rt) => rt,
                None => return self.refuse(st, true, PushError::NoRuntime(item)),
            };
            let id = st.counts.submitted;
            st.counts.submitted += 1;
            self.observer.submitted();
            let job = make(item, id);
            st.queue.push(Queued {
                job,
                id,
                rt,
                plain: entered.is_none(),
                meta,
                stamp,
            });
            let st = &mut *st;
            if st.reserved > 0 && st.queue.is_sorted() && st.limits.is_some() {
                // Queued ahead of reserved jobs (by its priority), it may hold them back by
                // its weight: their reservations go, and they count as queued.
                Self::clamp_reserved_to_startable(st, &mut later);
            }
            self.fill_free(st, Some(rt), &mut later);
            self.gauges(st);
            if reap && entered.is_some() && st.graves.for_submitter() && !context::polling_a_task()
            {
                Self::reap(st, &mut later);
            }
        }
        self.finish(&mut later);
        Ok(())
    }

    /// Under the lock: [`push`](Self::push) refuses its item. The place it held, if it
    /// `holds` one, goes back, and the refusal is reported.
    #[cold]
    fn refuse<T>(
        &self,
        mut st: StateGuard<'_, J>,
        holds: bool,
        refused: PushError<T>,
    ) -> Result<(), Admitting<T>> {
        let mut granted = Vec::new();
        if holds {
            st.admission.give_back(1, &mut granted);
        }
        drop(st);
        granted.into_iter().for_each(wake_quietly);
        self.observer.rejected(Some(refused.kind()));
        Err(Admitting::Refused(refused))
    }

    /// [`run_deferred`](Self::run_deferred) for a record made for one call (a slot
    /// task's, held in a `ManuallyDrop` as [`finish`](Self::finish)'s), then its drop only
    /// if it owns something: mostly it owns nothing by then (each list held its one item in
    /// place, and the walk took it), and the drop of its empty lists would cost about 60
    /// instructions per job (the whole slot path of a job costs about 480).
    fn settle(self: &Arc<Self>, later: &mut ManuallyDrop<Deferred<J>>) {
        self.run_deferred(later);
        if !later.untouched() {
            // Its buffers are dropped; an empty record, which owns nothing, is left.
            drop(std::mem::take(&mut **later));
        }
    }

    /// [`run_deferred`](Self::run_deferred), then drops the record; for a record made for
    /// one critical section, held in a `ManuallyDrop` so that the end of its scope does
    /// nothing. One left untouched (see [`Deferred::untouched`]) is neither walked nor
    /// dropped: it owns nothing, and the walk and the drop of its empty lists cost about
    /// 100 instructions per submit (BENCHMARKS.md, "2026-12-03, late morning"); the check
    /// `run_deferred` ends with is still made.
    fn finish(self: &Arc<Self>, later: &mut ManuallyDrop<Deferred<J>>) {
        if later.untouched() {
            // Untouched: no recheck was asked for.
            self.look_for_stuck_waits(false);
            return;
        }
        self.run_deferred(later);
        // What its lists still own (their buffers) is dropped; an empty record, which
        // owns nothing, is left in its place.
        drop(std::mem::take(&mut **later));
    }

    /// Under the lock: the caller holds a slot (a unit of `running`) on runtime `rt` and
    /// wants the next queued job. Returns it if it is for `rt` (the entry `key` now names
    /// it); otherwise the slot is given up, or handed with the job to a new slot on the
    /// job's runtime, and `None` is returned (the entry is removed).
    fn take_next(
        self: &Arc<Self>,
        st: &mut State<J>,
        rt: RtRef,
        key: usize,
        later: &mut Deferred<J>,
    ) -> Option<Queued<J>> {
        loop {
            // A slot on a runtime known to be shutting down starts nothing more there, and
            // tells the runtime's queued jobs (whoever noticed the death first).
            if !st.runtimes.is_alive(rt) {
                self.runtime_gone(st, rt, later);
                break;
            }
            if st.running > st.limit || st.queue.len() <= st.reserved {
                break;
            }
            let Some((mut q, charged)) = self.pop_startable(st, rt, later) else {
                break;
            };
            // The job's runtime, and its handle if that is another runtime, read once: the
            // runtime's sentinel clears its "alive" flag without the lock, so a second read
            // could find it dead.
            let (target, elsewhere) = if st.taken_over || q.rt == ANY || q.rt == rt {
                (rt, None)
            } else if let Some(handle) = st.runtimes.handle(q.rt).cloned() {
                (q.rt, Some(handle))
            } else if J::RERUN || q.plain {
                // A job that can run anywhere runs wherever there is a runtime; so does a
                // plain thread's, whose runtime ended before its end was settled (this
                // slot's runtime is alive: see `settle_dead`).
                (rt, None)
            } else {
                // Its runtime is gone: it can never run (nor spend its start).
                if let Some(limits) = &mut st.limits {
                    limits.ended(&q.meta);
                    if let Some(at) = charged {
                        limits.unstarted(at);
                    }
                }
                self.lose(st, q.job, q.id, later);
                // Dropped outside the lock: a span's drop calls the subscriber.
                later.stamps.push(q.stamp);
                continue;
            };
            q.rt = target;
            let copy = if J::RERUN { q.job.keep() } else { None };
            let meta = std::mem::take(&mut q.meta);
            let Some(handle) = elsewhere else {
                q.job.set_runner(key);
                let entry = &mut st.slots[key];
                entry.job = q.id;
                entry.aborted = false;
                entry.copy = copy;
                entry.meta = meta;
                entry.charged = charged;
                return Some(q);
            };
            // Hand the slot and the job over to the job's runtime (if it has shut down
            // meanwhile, it drops the new slot at once, whose `Drop` deals with the job).
            st.slots.remove(key);
            let polling = Polling::default();
            let new_key = st.slots.insert(SlotEntry {
                waker: None,
                job: q.id,
                copy,
                meta,
                charged,
                polling: polling.clone(),
                aborted: false,
            });
            q.job.set_runner(new_key);
            let slot = Slot::bound(Arc::clone(self), new_key, st.generation, q, polling);
            later.spawns.push((handle, slot));
            return None;
        }
        st.slots.remove(key);
        Self::vacate(st, later);
        None
    }

    /// Under the lock: gives every free slot to a queued job (a *reservation*: the job
    /// counts as running), then makes sure enough slot tasks on runtime `rt` (or the home
    /// runtime) will take reserved jobs: up to [`CLAIMERS_MAX`] idle slot tasks woken or
    /// new ones spawned. Reserved jobs are taken from the front of the queue, so jobs
    /// start in queue order.
    ///
    /// Starts nothing while the exit take-over waits for runs still inside a poll on
    /// another thread (they hold their slots till then): a submit or a rate tick from a
    /// thread that goes on queues its job, and the take-over starts it.
    fn fill_free(self: &Arc<Self>, st: &mut State<J>, rt: Option<RtRef>, later: &mut Deferred<J>) {
        self.fill(st, rt, later);
        if let Some(rt) = rt {
            self.claim_here(st, rt, later);
        }
    }

    /// [`fill_free`](Self::fill_free) without the claimer for the caller's runtime.
    fn fill(self: &Arc<Self>, st: &mut State<J>, rt: Option<RtRef>, later: &mut Deferred<J>) {
        if !st.awaiting_poll.is_empty() || st.exit_hold {
            return;
        }
        Self::grow(st);
        if !Self::wants_slots(st) {
            return;
        }
        let room = Self::has_room(st);
        let Some(rt) = Self::wake_rt(st, rt).filter(|&rt| st.runtimes.is_alive(rt)) else {
            return; // no runtime: started by the next submit, wait or take-over
        };
        if room {
            let mut want = (st.limit - st.running).min(st.queue.len() - st.reserved);
            // A rate timer, if one is armed, goes to the held job's runtime (or, if that
            // is a current-thread runtime, to a multi-thread one the pool knows).
            let timer_rt = st.limits.as_ref().and_then(|_| Self::held_job_rt(st));
            let mut never = false;
            if let Some(limits) = &mut st.limits {
                // Reserve only for jobs that may start now, or claimers would find none.
                let now = Instant::now();
                let tokens = limits.rate_tokens(now).saturating_sub(st.reserved);
                if tokens == 0 && !st.rate_timer {
                    if let Some(at) = limits.rate_ready_at(now).filter(|_| limits.rate_reopens()) {
                        // On a runtime that runs it without anyone driving it, if the
                        // pool knows one (see `driven_handle`).
                        let timer = st
                            .runtimes
                            .driven_handle(timer_rt.unwrap_or(rt))
                            .unwrap_or_else(|| st.runtimes.known_handle(rt))
                            .clone();
                        st.rate_timer = true;
                        later.rate_timer = Some(Box::new((timer, at)));
                    }
                }
                // At the exit take-over, a full window that never reopens
                // (`Duration::MAX`) holds its queued jobs back for ever: the exit would
                // wait for them for good, so they are cancelled instead.
                never =
                    st.taken_over && limits.rate_ready_at(now).is_some() && !limits.rate_reopens();
                let mut pick = limits.counter();
                let startable = st.queue.count(st.reserved + want, |q| pick(&q.meta));
                want = want.min(tokens).min(startable.saturating_sub(st.reserved));
            }
            if never {
                // Lost, as the jobs of a runtime that ended are (their handles say
                // `RuntimeShutdown`); the exit report counts them.
                for q in st.queue.extract_if(|_| true) {
                    // One aborted as the window filled is reported as aborted (its handle
                    // says so), not as held back.
                    st.never_started += u64::from(q.job.aborted().is_none());
                    self.lose(st, q.job, q.id, later);
                    later.stamps.push(q.stamp);
                }
                Self::clamp_reserved(st, later);
                want = 0;
            }
            for _ in 0..want {
                Self::occupy(st);
                st.reserved += 1;
            }
        }
        while Self::needs_claimers(st) {
            self.add_claimer(st, rt, later);
        }
    }

    /// Under the lock: one more claimer, on live runtime `rt`.
    fn add_claimer(self: &Arc<Self>, st: &mut State<J>, rt: RtRef, later: &mut Deferred<J>) {
        Self::claimer_added(st, rt);
        // Idle slot tasks of this runtime first: waking one costs less than a spawn.
        if let Some(pos) = st.idle.iter().rposition(|i| i.rt == rt) {
            let idle = st.idle.swap_remove(pos);
            // One still lingering finds itself claimed at its next poll.
            st.slots[idle.key].polling.claim();
            later.wake.extend(idle.waker);
        } else {
            let polling = Polling::default();
            let key = st.slots.insert(SlotEntry::jobless(&polling));
            let slot = Slot::reserved(Arc::clone(self), key, st.generation, rt, polling);
            // Cloned only here: most calls spawn nothing. A runtime found alive above may
            // be shutting down by now; it then drops the slot at once.
            later
                .spawns
                .push((st.runtimes.known_handle(rt).clone(), slot));
        }
    }

    /// Under the lock, for code on runtime `rt` that lets jobs start (a submit, a `wait`, a
    /// handle's offer, a resize, a slot): if jobs are reserved and none of the claimers on
    /// their way is on `rt`, one more is scheduled here. The others may be on a runtime
    /// that is alive but not driven (a current-thread runtime outside `block_on`, which
    /// submitted, or polled a handle once), where the jobs would wait until it is driven
    /// again or dropped; whichever claimer comes first takes a job, one that finds none
    /// goes idle. One per runtime at a time (about: the counts are kept only while the
    /// pool knows several runtimes, and may be low, never high); with a single runtime
    /// never (the claimers there cover the reservations).
    #[inline]
    fn claim_here(self: &Arc<Self>, st: &mut State<J>, rt: RtRef, later: &mut Deferred<J>) {
        if st.reserved > 0
            && st.runtimes.is_multi()
            && st.awaiting_poll.is_empty()
            && st.runtimes.claimers_on(rt) == 0
            && st.runtimes.is_alive(rt)
        {
            self.add_claimer(st, rt, later);
        }
    }

    /// Under the lock: a claimer is scheduled on runtime `rt`.
    fn claimer_added(st: &mut State<J>, rt: RtRef) {
        st.claimers += 1;
        st.runtimes.claimer_added(rt);
    }

    /// Under the lock: a claimer of runtime `rt` came, or was dropped before it did.
    fn claimer_gone(st: &mut State<J>, rt: RtRef) {
        st.claimers -= 1;
        st.runtimes.claimer_gone(rt);
    }

    /// Under the lock: the next queued job that flow control lets start now (the head,
    /// for a pool without limits), recorded as started. Arms the rate timer when the rate
    /// window is what holds jobs back.
    fn pop_startable(
        &self,
        st: &mut State<J>,
        rt: RtRef,
        later: &mut Deferred<J>,
    ) -> Option<(Queued<J>, Option<Instant>)> {
        if st.limits.is_none() {
            return st.queue.pop().map(|q| (q, None));
        }
        // The timer, if one is armed, goes to the held job's runtime (see `held_job_rt`).
        let timer_rt = Self::held_job_rt(st).unwrap_or(rt);
        let State {
            queue,
            limits,
            rate_timer,
            runtimes,
            ..
        } = st;
        let limits = limits.as_deref_mut().expect("checked above");
        let now = Instant::now();
        if let Some(at) = limits.rate_ready_at(now) {
            if !*rate_timer && limits.rate_reopens() {
                let handle = runtimes
                    .live_or_any(Some(timer_rt))
                    .and_then(|rt| runtimes.driven_handle(rt));
                if let Some(handle) = handle {
                    *rate_timer = true;
                    later.rate_timer = Some(Box::new((handle.clone(), at)));
                }
            }
            return None;
        }
        let q = {
            let mut pick = limits.picker();
            queue.pop_first(|q| pick(&q.meta))?
        };
        let charged = limits.started(&q.meta, now, q.job.aborted().is_none());
        Some((q, charged))
    }

    /// A rate timer was dropped unfired with its runtime (before or after that runtime's
    /// sentinel told the pool): that runtime is gone, and another timer is armed on a
    /// live one if the window still holds jobs back. Without this, a timer dropped before
    /// its first poll left `rate_timer` set, and no timer was ever armed again.
    fn rate_timer_lost(self: &Arc<Self>, handle: &Handle) {
        let mut later = Deferred::default();
        {
            let mut st = self.lock();
            st.rate_timer = false;
            if let Some(rt) = st.runtimes.known(handle) {
                self.runtime_gone(&mut st, rt, &mut later);
            }
            self.fill_free(&mut st, None, &mut later);
            self.gauges(&st);
        }
        self.run_deferred(&mut later);
    }

    /// The rate window allows a start again: give free slots to queued jobs. Called by
    /// the timer task, on a runtime that is being driven now: the slot tasks go there.
    fn rate_tick(self: &Arc<Self>) {
        let current = Handle::try_current().ok();
        let mut later = Deferred::default();
        {
            let mut st = self.lock();
            st.rate_timer = false;
            let rt = current.as_ref().and_then(|h| st.runtimes.known(h));
            self.fill_free(&mut st, rt, &mut later);
            self.gauges(&st);
        }
        self.run_deferred(&mut later);
    }

    /// Checks a job's weight against the pool's capacity, before it waits for room.
    pub(crate) fn check_weight(&self, meta: &Meta) -> Result<(), SubmitErrorKind> {
        // Fixed when the pool is built: no lock needed.
        match self.weight_capacity {
            Some(cap) if u64::from(meta.weight()) > cap => {
                self.observer.rejected(Some(SubmitErrorKind::TooHeavy));
                Err(SubmitErrorKind::TooHeavy)
            }
            _ => Ok(()),
        }
    }

    /// Changes how many jobs run at once. Growing starts queued jobs at once; shrinking
    /// lets running jobs finish and starts none until fewer than `n` run.
    ///
    /// # Panics
    ///
    /// Panics if `n` is 0 or `n + max_queue_size` exceeds [`MAX_ROOM`].
    #[track_caller]
    pub(crate) fn set_max_concurrency(self: &Arc<Self>, n: usize) {
        assert!(
            n > 0,
            "nb_aiopool: set_max_concurrency(0): a pool needs at least one slot"
        );
        let room = n
            .checked_add(self.max_queue_size)
            .filter(|room| *room <= MAX_ROOM)
            .unwrap_or_else(|| {
                panic!(
                    "nb_aiopool: set_max_concurrency({n}): max_concurrency + max_queue_size \
                     exceeds the largest supported size ({MAX_ROOM})"
                )
            });
        let current = Handle::try_current().ok();
        let mut later = Deferred::default();
        let old;
        {
            let mut st = self.lock();
            Self::retire_idle(&mut st, &mut later.wake);
            old = st.max_concurrency;
            st.max_concurrency = n;
            // At most as many ended jobs kept as the pool now holds.
            if let Some(batch) = st.graves.resize(n.saturating_add(self.max_queue_size)) {
                later.graves.push(batch);
            }
            self.max_concurrency.store(n, Ordering::Relaxed);
            let queued = st.queue.len() - st.reserved;
            let (limit, running) = (st.limit, st.running);
            match &mut st.elastic {
                // Elastic: `n` caps the live workers; growing adds workers for the tasks
                // queued now (as a submit would), and back up to `min_workers` if a shrink
                // took them below it; shrinking retires the extra ones.
                Some(el) => {
                    let floor = el.config.min_workers.max((running + queued).min(n));
                    let target = limit.max(floor).min(n);
                    // Only workers above the running jobs are idle: after a shrink below
                    // them, the first ones added back are busy.
                    let (idle_before, idle_after) = (
                        limit.saturating_sub(running),
                        target.saturating_sub(running),
                    );
                    for _ in idle_before..idle_after {
                        el.added();
                    }
                    for _ in idle_after..idle_before {
                        el.busy(); // a retired worker's idle entry goes
                    }
                    st.limit = target;
                }
                None => st.limit = n,
            }
            // Reserved jobs have not started: those beyond the new size give their slots
            // back and count as queued (their slot tasks find none to take).
            let started = st.running - st.reserved;
            let most = st.limit.saturating_sub(started);
            Self::clamp_reserved_to(&mut st, most, &mut later);
            // A shrink retires idle workers: their idle slot tasks exit.
            Self::trim_idle(&mut st, &mut later.wake);
            // Growing admits waiting submitters at once; after a shrink, places given back
            // admit nobody until fewer than the new room are taken.
            st.admission.set_room(room, &mut later.granted);
            if n < old {
                // Fewer slots may leave only waiting jobs running.
                later.recheck_waits = !st.waiting_on_own.is_empty();
            }
            // Slot tasks for the jobs it lets start: on the caller's runtime, which is being
            // driven now (see `wake_rt`).
            let rt = current.as_ref().and_then(|h| st.runtimes.known(h));
            self.fill_free(&mut st, rt, &mut later);
            self.gauges(&st);
        }
        self.run_deferred(&mut later);
        self.size_watchers.wake_all();
    }

    /// A waker slot told whenever [`set_max_concurrency`](Self::set_max_concurrency)
    /// changes the pool's size (until it is dropped).
    pub(crate) fn watch_size(&self) -> Arc<futures_util::task::AtomicWaker> {
        self.size_watchers.watch()
    }

    /// Under the lock: jobs left the queue without their reservations; give the slots
    /// reserved beyond the queued jobs that may start now back (their tasks exit when they
    /// find none). Not simply beyond the queue's length: the jobs left may be held back
    /// by their keys or weights.
    fn clamp_reserved(st: &mut State<J>, later: &mut Deferred<J>) {
        Self::clamp_reserved_to_startable(st, later);
    }

    /// Under the lock: gives back the reservations beyond `most`.
    fn clamp_reserved_to(st: &mut State<J>, most: usize, later: &mut Deferred<J>) {
        while st.reserved > most {
            st.reserved -= 1;
            Self::vacate(st, later);
        }
    }

    /// Under the lock, for an elastic pool: adds workers while queued jobs outnumber idle
    /// ones, up to `max_concurrency`. Done wherever slots are given out (a submit, a job's
    /// end, a rate window reopening), so a job queued while workers retired still gets one.
    fn grow(st: &mut State<J>) {
        let Some(el) = &mut st.elastic else { return };
        let queued = st.queue.len() - st.reserved;
        while queued > st.limit.saturating_sub(st.running) && st.limit < st.max_concurrency {
            st.limit += 1;
            // Below `running` (the pool shrank under its running jobs) the new worker is
            // one of those, busy: only one above them is idle.
            if st.limit > st.running {
                el.added();
            }
        }
    }

    /// Under the lock: the runtime for slot tasks that take queued jobs: `rt` (the
    /// caller's, being driven now) if it is alive; else the runtime of the job that starts
    /// next, whose submitter is likely waiting for it; else the home or any live runtime.
    /// Not simply the home: that is the runtime of the last submit, which may be alive but
    /// no longer driven (a current-thread runtime outside `block_on`), and slot tasks or a
    /// timer left there would hold the jobs of a running runtime back.
    fn wake_rt(st: &State<J>, rt: Option<RtRef>) -> Option<RtRef> {
        rt.filter(|&rt| st.runtimes.is_alive(rt))
            .or_else(|| Self::held_job_rt(st))
            .or_else(|| st.runtimes.live_or_any(None))
    }

    /// Under the lock: the live runtime of the job that starts next, if it has its own.
    /// A timer that lets it start is armed there, not on the runtime that noticed it must
    /// wait (which may stop being driven right after); but on a multi-thread runtime the
    /// pool knows if that one is current-thread ([`Runtimes::driven_handle`]): one that is
    /// left undriven would hold the timer, and every job behind it, until driven again.
    fn held_job_rt(st: &State<J>) -> Option<RtRef> {
        st.queue
            .first()
            .map(|q| q.rt)
            .filter(|&rt| rt != ANY && st.runtimes.is_alive(rt))
    }

    /// Under the lock: whether a queued job without a reservation could have a slot.
    fn has_room(st: &State<J>) -> bool {
        st.running < st.limit && st.queue.len() > st.reserved
    }

    /// Under the lock: whether `fill_free` has anything to do (reserve, or schedule
    /// claimers).
    fn wants_slots(st: &State<J>) -> bool {
        Self::has_room(st) || Self::needs_claimers(st)
    }

    /// Under the lock: whether a queued job without a reservation may start now: its key,
    /// its weight and the rate window allow it, the reserved jobs counted as started (as
    /// [`fill`](Self::fill) reserves). For a slot that keeps its unit as a reservation.
    fn unreserved_may_start(st: &mut State<J>) -> bool {
        if st.queue.len() <= st.reserved {
            return false;
        }
        let State {
            queue,
            limits,
            reserved,
            ..
        } = st;
        match limits.as_deref_mut() {
            None => true,
            Some(limits) => {
                limits.rate_tokens(Instant::now()) > *reserved && {
                    let mut pick = limits.counter();
                    queue.count(*reserved + 1, |q| pick(&q.meta)) > *reserved
                }
            }
        }
    }

    /// Under the lock: whether reserved jobs wait for more claimers than are scheduled.
    fn needs_claimers(st: &State<J>) -> bool {
        st.claimers < st.reserved.min(CLAIMERS_MAX)
    }

    /// Under the lock, for a slot whose job just ended and that wants another: takes over
    /// a reserved job (`true`; the slot's own unit is given back, it now holds the
    /// reservation's), saving a claimer's wake-up. Also one a claimer is on its way to:
    /// that claimer then finds none and goes idle, and a claimer held up behind a job
    /// that blocks its thread holds up no reserved job.
    fn take_reservation(st: &mut State<J>, later: &mut Deferred<J>) -> bool {
        if st.reserved == 0 {
            return false;
        }
        st.reserved -= 1;
        Self::vacate(st, later);
        true
    }

    /// Under the lock: an interrupted run of job `id` queued again, first, for any runtime,
    /// with its flow-control settings (its span starts without a parent: the subscriber
    /// is not asked for one under the lock).
    fn requeue_first(st: &mut State<J>, id: u64, job: J, meta: Meta) {
        // Its run is over: waits it counted no longer make it a waiting job, also those
        // left to handles it handed out of the run (which end them only when their task
        // ends or they are dropped), as `run_ended` does. Else the queued job would count
        // as a slot that waits, and its re-run's first wait would be added to that count
        // unchecked (see `Probe::start_waiting`).
        st.waiting_on_own.remove(&id);
        if let Some(limits) = &mut st.limits {
            limits.rerun_queued();
        }
        st.queue.push_front(Queued {
            job,
            id,
            rt: ANY,
            plain: false,
            meta,
            stamp: Stamp::requeued(),
        });
    }

    /// Under the lock: a slot is taken.
    fn occupy(st: &mut State<J>) {
        st.running += 1;
        if let Some(el) = &mut st.elastic {
            el.busy();
        }
    }

    /// Under the lock: a slot is free again (its worker idle, for elastic pools). A slot
    /// given back (to a shrink, a runtime's end) may leave only waiting jobs running: the
    /// nested-wait re-check runs afterwards if jobs wait on the pool.
    fn vacate(st: &mut State<J>, later: &mut Deferred<J>) {
        later.recheck_waits |= !st.waiting_on_own.is_empty();
        st.running -= 1;
        // A pool dropped while it ran jobs, with others a rate window holds back for ever:
        // its watcher looks again (a wait for every job would never end).
        later.changed |= st.watch_owed && st.running == 0;
        let limit = st.limit;
        if st.running >= limit {
            return; // above a lowered limit: the freed slot is not an idle worker
        }
        if let Some(el) = &mut st.elastic {
            el.idle();
        }
    }

    /// Under the lock: runtime `rt` is gone. The first time (whoever noticed: a slot
    /// dropped by it, or a slot that found it dead), the jobs queued from it are
    /// cancelled with `RuntimeShutdown`, or, if they can run anywhere, left to any runtime.
    ///
    /// Whether or not it was the first time, the pool may now be stranded (a re-run queued
    /// since, and no live runtime left): see [`note_stranded`](Self::note_stranded).
    fn runtime_gone(&self, st: &mut State<J>, rt: RtRef, later: &mut Deferred<J>) {
        if st.runtimes.mark_dead(rt) {
            self.settle_dead(st, rt, later);
        }
        self.note_stranded(st, later);
    }

    /// Under the lock, once per dead runtime `rt`: its queued jobs are cancelled, or left
    /// to any runtime: a re-run pool's, and those a plain thread sent there while
    /// another runtime is alive (they were not submitted from `rt`; they go with the
    /// last runtime, as one that comes after it would be refused).
    fn settle_dead(&self, st: &mut State<J>, rt: RtRef, later: &mut Deferred<J>) {
        if J::RERUN {
            st.queue.for_each_mut(|q| {
                if q.rt == rt {
                    q.rt = ANY;
                }
            });
        } else {
            let live = st.runtimes.live_or_any(None).is_some();
            // One walk: a plain thread's job is left to any runtime while one lives; the
            // others of `rt` are lost, and with no runtime left, those left to any.
            let lost = |q: &mut Queued<J>| {
                if live && q.plain && q.rt == rt {
                    q.rt = ANY;
                    return false;
                }
                q.rt == rt || (!live && q.rt == ANY)
            };
            for q in st.queue.extract_if(lost) {
                self.lose(st, q.job, q.id, later);
                later.stamps.push(q.stamp);
            }
            Self::clamp_reserved(st, later);
            self.rate_timer_check(st);
        }
    }

    /// Under the lock: whether the pool is stranded: it holds queued jobs and knows no live
    /// runtime to run them on. Only a SmartAioPool's re-runs get there (a runtime's end
    /// cancels the other pools' jobs queued from it), and only a runtime's end, handled
    /// by [`runtime_gone`](Self::runtime_gone), strands a pool; a runtime made known (a
    /// submit, a `wait`, an offer, the exit take-over) ends it.
    ///
    /// A stranded pool is counted process-wide ([`unqueue::stranded`]), so that a pending
    /// poll of a handle (one load while no pool is stranded) offers its runtime to its
    /// pool ([`Unqueue::offer_runtime`]). When the pool becomes stranded, the handles of its
    /// queued jobs are woken, so that each is polled again where it is awaited now and
    /// offers that runtime: a handle polled (or a stream or group collected) from a new
    /// runtime before this runs it there too.
    fn note_stranded(&self, st: &mut State<J>, later: &mut Deferred<J>) {
        let now = Self::is_stranded(st);
        if now == self.stranded.load(Ordering::Relaxed) {
            return;
        }
        self.stranded.store(now, Ordering::Relaxed);
        // Counted before the wakers are fired (after the lock): a handle woken reads it.
        unqueue::stranded(self.id(), now);
        if now {
            st.queue
                .for_each_mut(|q| later.wake.extend(q.job.handle_waker()));
            // A submit waiting for room looks again: with no live runtime to offer, none
            // would come (see `admit_blocking` and `admit_waiting`).
            st.admission.wake_waiting(&mut later.wake);
        }
    }

    /// Whether the pool counts as stranded now (see [`note_stranded`](Self::note_stranded)).
    #[cfg(all(test, not(nb_aiopool_loom)))]
    pub(crate) fn stranded_now(&self) -> bool {
        self.stranded.load(Ordering::Relaxed)
    }

    /// Under the lock: see [`note_stranded`](Self::note_stranded).
    fn is_stranded(st: &State<J>) -> bool {
        st.queue.len() != 0 && st.runtimes.live_or_any(None).is_none()
    }

    /// Under the lock, at the end of every critical section that changes the queue or
    /// the runtimes ([`gauges`](Self::gauges)): a stranded pool that no longer is (a
    /// runtime made known, or its queue emptied by aborts or a `cancel_all`) stops being
    /// counted. One load otherwise. (Only a runtime's end strands a pool.)
    #[inline(always)]
    fn unstrand(&self, st: &State<J>) {
        if self.stranded.load(Ordering::Relaxed) && !Self::is_stranded(st) {
            self.stranded.store(false, Ordering::Relaxed);
            unqueue::stranded(self.id(), false);
        }
    }

    /// Under the lock, for a job queued again for any runtime after the pool was stranded
    /// (a slot dropped by its runtime after that runtime's end was noticed): the waker of
    /// its handle, which [`note_stranded`](Self::note_stranded) did not wake, to fire
    /// after the lock.
    pub(crate) fn stranded_waker(&self, job: &J) -> Option<Waker> {
        if self.stranded.load(Ordering::Relaxed) {
            job.handle_waker()
        } else {
            None // woken by `note_stranded` if the pool becomes stranded
        }
    }

    /// Under the lock: a job that never started and never will (its runtime is gone) is
    /// counted as cancelled and lost; its handle is told after the lock is released.
    fn lose(&self, st: &mut State<J>, job: J, id: u64, later: &mut Deferred<J>) {
        self.drop_unrun(st, job, id, CancelReason::RuntimeShutdown, later);
    }

    /// Under the lock: a copy whose task was aborted while a slot held it (not polled since)
    /// ends here, unrun, as its handle says: it waits on nothing any more (as `run_ended`
    /// would record), and the other waits are looked at again.
    fn end_aborted(&self, st: &mut State<J>, copy: J, id: u64, later: &mut Deferred<J>) {
        if st.waiting_on_own.remove(&id).is_some() {
            later.recheck_waits = true;
        }
        self.drop_unrun(st, copy, id, CancelReason::Aborted, later);
    }

    /// Under the lock: a job that never started is dropped unrun for `reason`, counted as
    /// such (as aborted if its handle aborted it first: that decided its outcome; a
    /// runtime's end then loses nothing); its handle is told after the lock is released.
    fn drop_unrun(
        &self,
        st: &mut State<J>,
        job: J,
        id: u64,
        reason: CancelReason,
        later: &mut Deferred<J>,
    ) {
        let reason = job.aborted().unwrap_or(reason);
        self.count_end(st, Outcome::Cancelled(reason));
        st.counts.lost += u64::from(reason == CancelReason::RuntimeShutdown);
        // Its place is free at once (its handle is told after the lock).
        st.admission.give_back(1, &mut later.granted);
        later
            .cancels
            .get_or_insert_with(Box::default)
            .push((job, id, reason));
    }

    /// Job `id` (queued with `priority`), aborted by its handle (or its group, or a
    /// refused nested wait), leaves the queue if it has not started: counted as cancelled
    /// for the abort's reason, its place (and a reservation only it could use) given back
    /// at once, its end applied to the waits, and what it held back started. The job
    /// itself is dropped on its runtime, as a slot would drop it (not on the aborting
    /// thread, which may hold a lock its `Drop` takes), and nothing waits for that drop (a
    /// runtime no longer driven might never run it). A job a slot has taken already is
    /// dropped by that slot, woken here (it sees the abort at its next poll). Also after
    /// the exit take-over: a queued job left there would keep its place until a slot took
    /// it, which a rate window could put off for as long as the window (the exit waiting
    /// for a task already aborted), or for ever (then reported as held back).
    fn abort_queued(self: &Arc<Self>, id: u64, priority: i32, runner: &sync::AtomicU32) {
        let mut later = Deferred::default();
        let (job, id, reason, handle) = {
            let mut st = self.lock();
            // A job a slot has taken (running, or about to) is not searched for in the
            // queue, which may be long. Its slot task is woken, if it stored its waker: a
            // slot that stores it later looks at the abort flag after that (the flag was
            // set before this lock was taken). The slot is the one the job was given to
            // (`Job::set_runner`, under this lock), if it still runs it: not searched for
            // among all the slots, which made aborting many running tasks quadratic.
            let key = runner.load(sync::Ordering::Relaxed);
            let running = if key == RUNNER_FAR {
                // Too large to keep (never, in practice: each slot is a tokio task).
                st.slots.iter_mut().map(|(_, e)| e).find(|e| e.job == id)
            } else {
                // `RUNNER_NONE` (a queued job) finds none.
                st.slots.get_mut(key as usize).filter(|e| e.job == id)
            };
            if let Some(e) = running {
                e.aborted = true;
                let waker = e.waker.clone();
                drop(st);
                if let Some(waker) = waker {
                    waker.wake();
                }
                return;
            }
            let Some(q) = st.queue.remove_seq(id, priority) else {
                return; // ended meanwhile
            };
            let reason = q.job.aborted().unwrap_or(CancelReason::Aborted);
            self.count_end(&mut st, Outcome::Cancelled(reason));
            // Its end counts for the waits now: `wait()`, a shutdown and the exit must not
            // wait for the drop below, which a runtime no longer driven may never run.
            Self::wait_end(&mut st, q.id, &mut later);
            st.admission.give_back(1, &mut later.granted);
            // Dropped outside the lock: a span's drop calls the subscriber.
            later.stamps.push(q.stamp);
            Self::clamp_reserved_to_startable(&mut st, &mut later);
            // A heavy job at the head holds back the lighter ones behind it.
            self.fill_free(&mut st, None, &mut later);
            self.gauges(&st);
            // After the exit take-over, not on the runtime it was queued for, which
            // `process::exit` may have frozen (alive, never driven again).
            let rt = Some(q.rt)
                .filter(|&rt| !st.taken_over && rt != ANY && st.runtimes.is_alive(rt))
                .or_else(|| st.runtimes.live_or_any(None));
            let handle = rt.and_then(|rt| st.runtimes.handle(rt)).cloned();
            self.rate_timer_check(&st);
            (q.job, q.id, reason, handle)
        };
        self.run_deferred(&mut later);
        self.observer.cancelled(id, reason);
        let unqueued = Unqueued(Some((job, reason)));
        match handle {
            Some(handle) => drop_in_task(&handle, unqueued),
            // No runtime alive: on a thread of the crate, still not the aborting one.
            None => unqueue::run_elsewhere(Box::new(move || drop(unqueued))),
        }
    }

    /// Under the lock: jobs left the queue; give back the reservations beyond the queued
    /// jobs that may start now (their claimers would find none to start).
    fn clamp_reserved_to_startable(st: &mut State<J>, later: &mut Deferred<J>) {
        let startable = match &st.limits {
            None => st.queue.len(),
            Some(limits) => {
                let mut pick = limits.counter();
                st.queue.count(st.reserved, |q| pick(&q.meta))
            }
        };
        Self::clamp_reserved_to(st, startable, later);
    }

    /// Under the lock: counts a job's end (the waits are told separately).
    fn count_end(&self, st: &mut State<J>, outcome: Outcome) {
        self.observer.counted(outcome);
        let c = &mut st.counts;
        match outcome {
            Outcome::Completed => c.completed += 1,
            Outcome::Panicked => c.panicked += 1,
            Outcome::Cancelled(reason) => {
                c.cancelled += 1;
                c.abandoned += u64::from(reason == CancelReason::Abandoned);
            }
        }
    }

    /// Under the lock: a started run of job `id` ended with `outcome` (already published to
    /// its handle): it no longer counts as a waiting task, its end is counted and applied to
    /// the waits, and its place is given back.
    fn run_ended(&self, st: &mut State<J>, id: u64, outcome: Outcome, later: &mut Deferred<J>) {
        if !st.waiting_on_own.is_empty() {
            // Waits it started and left to handles it handed on no longer count it as a
            // waiting task (see `Probe`).
            st.waiting_on_own.remove(&id);
            // The slot it frees may leave only waiting jobs running.
            later.recheck_waits = true;
        }
        self.count_end(st, outcome);
        Self::wait_end(st, id, later);
        st.admission.give_back(1, &mut later.granted);
    }

    /// Under the lock: applies a job's end to the waits.
    fn wait_end(st: &mut State<J>, id: u64, later: &mut Deferred<J>) {
        st.wait_done += 1;
        for (_, w) in st.waits.iter_mut() {
            if id < w.target && w.except != Some(id) {
                w.remaining -= 1;
                later.changed |= w.remaining == 0;
            }
        }
    }

    /// Under the lock, for a job that ended on a multi-thread runtime (not in a panic: its
    /// run reports it after the lock; a current-thread runtime's slot drops everything
    /// itself): keeps what its submitter made for a submitter to free on its own thread
    /// ([`graves`]): a future's run; a recipe's copy (SmartAioPool, whose recipe makes
    /// its run on the slot's thread: the slot drops the run after the lock, and the copy
    /// is then the last one, with the recipe, what it captured and, unless the handle
    /// still holds it, the task's allocation).
    /// Returns the run the slot drops after the lock.
    fn bury(
        st: &mut State<J>,
        run: BoxRun,
        copy: Option<J>,
        rt: RtRef,
        later: &mut Deferred<J>,
    ) -> Option<BoxRun> {
        let (grave, left) = match copy {
            Some(copy) => (Grave::Copy(copy), Some(run)),
            None if J::RERUN => return Some(run),
            None => (Grave::Run(run), None),
        };
        match st.graves.keep(grave) {
            Kept::Done => {}
            Kept::ArmTimer => {
                // `rt`'s own if it is alive (a multi-thread runtime: see `Slot::finish`).
                let handle = st.runtimes.driven_handle(rt);
                match handle.filter(|h| runtimes::is_multi_thread(h)).cloned() {
                    Some(handle) => {
                        st.graves.arm_timer();
                        later.reap_timer = Some(handle);
                    }
                    // No runtime to run a timer: nothing kept waits.
                    None => Self::reap(st, later),
                }
            }
            Kept::Full(batch) => later.graves.push(batch),
        }
        left
    }

    /// Under the lock: hands everything kept ([`graves`]) to `later`, which drops it first
    /// of all, outside the lock.
    fn reap(st: &mut State<J>, later: &mut Deferred<J>) {
        if let Some(batch) = st.graves.take_all() {
            later.graves.push(batch);
        }
    }

    /// Under the lock, for a slot whose job ended with nothing to run next: frees the
    /// graves if the pool has nothing queued or running.
    fn reap_idle(st: &mut State<J>, later: &mut Deferred<J>) {
        if st.running == 0 && st.queue.len() == 0 {
            Self::reap(st, later);
        }
    }

    /// Outside the lock: drops `batch`, then tells the waits.
    fn drop_batch(&self, batch: Batch<J>) {
        let ticket = batch.drop_all();
        self.batch_dropped(self.lock(), ticket);
    }

    /// With the lock `st`: the batch with `ticket` was dropped; releases the lock and
    /// tells the waits.
    fn batch_dropped(&self, mut st: StateGuard<'_, J>, ticket: u64) {
        st.graves.done(ticket);
        drop(st);
        // Also a `wait()` with no task to wait for waits for batches (it has no entry in
        // `waits`).
        self.changed.notify_waiters();
    }

    /// The timer armed when the first grave was kept fired, or was dropped with its
    /// runtime: frees what is kept, on this thread.
    fn reap_timer_fired(&self) {
        let batch = self.lock().graves.timer_fired();
        if let Some(batch) = batch {
            self.drop_batch(batch);
        }
    }

    /// Does what a critical section left to do, outside the lock.
    ///
    /// Most of it is usually empty (a job's end leaves one handle to tell and one place
    /// to give back): each part is looked at before it is walked.
    fn run_deferred(self: &Arc<Self>, later: &mut Deferred<J>) {
        // Before anything is woken.
        if !later.graves.is_empty() {
            for batch in later.graves.drain(..) {
                self.drop_batch(batch);
            }
        }
        if let Some(handle) = later.reap_timer.take() {
            let timer = reap_timer(Arc::downgrade(self), handle.clone());
            drop(handle.spawn(timer));
        }
        later.stamps.clear();
        // A task's place was given back under the lock, with its result stored: code that
        // sees the task ended finds the room (a `try_submit` right after a `run`).
        later.granted.take_each(wake_quietly);
        later.woken.take_each(crate::task::Woken::fire);
        // Idle slots' wakers (tokio's), and handles' when the pool is stranded.
        later.wake.take_each(wake_quietly);
        if let Some(cancels) = later.cancels.take() {
            let mut ids = Vec::with_capacity(cancels.len());
            for (job, id, reason) in *cancels {
                // Tell the handle (dropping the job runs user code) before the waits hear
                // of it, so a wait never returns while a handle it covers is unresolved.
                let _ = catch_unwind(AssertUnwindSafe(|| job.cancel(reason)));
                self.observer.cancelled(id, reason);
                ids.push(id);
            }
            let mut st = self.lock();
            for id in ids {
                Self::wait_end(&mut st, id, later);
            }
            self.gauges(&st);
        }
        if !later.spawns.is_empty() {
            for (handle, slot) in std::mem::take(&mut later.spawns) {
                slot.spawn_on(&handle);
            }
        }
        if let Some(armed) = later.rate_timer.take() {
            let (handle, at) = *armed;
            let timer = rate_timer(Arc::clone(self), handle.clone(), at);
            drop(handle.spawn(timer));
        }
        if std::mem::take(&mut later.changed) {
            self.changed.notify_waiters();
        }
        self.look_for_stuck_waits(std::mem::take(&mut later.recheck_waits));
    }

    /// After every change: looks for a deadlock of nested waits if `recheck` asks for it
    /// or while the pool is marked stuck (every change looks again then: the mark is
    /// cleared as soon as the pool is not stuck; one load otherwise).
    #[inline]
    fn look_for_stuck_waits(self: &Arc<Self>, recheck: bool) {
        if recheck || self.is_stuck_marked() {
            self.break_nested_deadlock();
        }
    }

    /// Under the lock: every slot the pool may have is taken by a job that waits on tasks
    /// of the pool, each on one that has not started (or that waits itself): nothing can
    /// progress. Returns each waiting job with its awaited tasks still queued and whether
    /// it also awaits a waiting job; `None` if the pool is not stuck so.
    fn stuck_waits(st: &mut State<J>) -> Option<Vec<(u64, Vec<u64>, bool)>> {
        let waiting = &st.waiting_on_own;
        if waiting.is_empty()
            || st.taken_over
            || st.reserved > 0
            || waiting.len() < st.running
            || st.running < st.max_concurrency
        {
            return None;
        }
        Self::every_waiter_stuck(st)
    }

    /// Under the lock: each job counted as waiting on tasks of the pool, with its awaited
    /// tasks still queued and whether it also awaits a waiting job; `None` if one of them
    /// awaits neither (its awaited tasks have all started, or ended: the count of a wait
    /// on a task that ended goes only once its handle is told, after the lock that ended
    /// it, while the job is about to go on).
    fn every_waiter_stuck(st: &mut State<J>) -> Option<Vec<(u64, Vec<u64>, bool)>> {
        let waiting = &st.waiting_on_own;
        let awaited: HashSet<u64> = waiting.values().flatten().copied().collect();
        let mut queued = HashSet::new();
        st.queue.for_each_mut(|q| {
            if awaited.contains(&q.id) {
                queued.insert(q.id);
            }
        });
        // A job whose awaited tasks have all started (or ended, its handle not yet told)
        // is not stuck.
        let mut jobs = Vec::with_capacity(waiting.len());
        for (&job, tasks) in waiting {
            let chained = tasks.iter().any(|t| waiting.contains_key(t));
            let mine: Vec<u64> = tasks
                .iter()
                .copied()
                .filter(|t| queued.contains(t))
                .collect();
            if mine.is_empty() && !chained {
                return None;
            }
            jobs.push((job, mine, chained));
        }
        Some(jobs)
    }

    /// After a job's end, a shrink, or the poll of the job picked before: if the pool is
    /// stuck on nested waits ([`stuck_waits`](Self::stuck_waits)), the circle was closed
    /// by a slot going away, not by a wait, which [`Probe::start_waiting`] would have
    /// refused. The same rule applies, one waiting job at a time: the pool picks the job
    /// whose refusals free a slot soonest (not one that also awaits a waiting job; then
    /// the fewest queued tasks awaited; then the newest), and wakes the handles it awaits.
    /// While that job is polled, each of those handles it polls again is refused
    /// ([`Probe::refuse_stuck`]), as a wait starting then would be: a `select!` has one
    /// refused, a `join!` each. If the poll refuses none (the job no longer polls them),
    /// the newest of its queued awaited tasks is cancelled with `WouldDeadlock` at once
    /// ([`after_stuck_poll`](Self::after_stuck_poll)).
    fn break_nested_deadlock(self: &Arc<Self>) {
        let mut wakers = Vec::new();
        {
            let mut st = self.lock();
            let st = &mut *st;
            let Some(jobs) = Self::stuck_waits(st) else {
                st.stuck_pick = None;
                self.stuck_epoch.store(0, Ordering::Release);
                return;
            };
            // A cycle's pick stays only while the picture is still a cycle: once a waiting
            // job awaits a queued task, that job's refusals are what free a slot (and the
            // cycle's pick may not poll its wait again).
            let cycle = jobs.iter().all(|(_, tasks, _)| tasks.is_empty());
            if let Some(picked) = st.stuck_pick {
                if jobs.iter().any(|(job, tasks, _)| {
                    *job == picked && (!tasks.is_empty() || (st.stuck_cycle && cycle))
                }) {
                    return; // its poll decides first
                }
                st.stuck_pick = None;
            }
            let pick = jobs
                .iter()
                .filter(|(_, tasks, _)| !tasks.is_empty())
                .min_by_key(|(job, tasks, chained)| (*chained, tasks.len(), Reverse(*job)));
            let (job, tasks, cycle) = match pick {
                Some((job, tasks, _)) => (*job, tasks.clone(), false),
                // Every waiting job waits on a waiting job: a cycle of waits among running
                // jobs. The newest is picked; its waits on waiting jobs are refused (the
                // awaited job is cancelled), as the wait that closed the cycle would have
                // been had the slots been this few from the start.
                None => match jobs.iter().map(|(job, _, _)| *job).max() {
                    Some(job) => (job, Vec::new(), true),
                    None => return,
                },
            };
            st.stuck_pick = Some(job);
            st.stuck_refused = false;
            st.stuck_cycle = cycle;
            // Before the wakers are read: the job woken sees the mark, and its next poll
            // begins under this pick's number.
            st.picks += 1;
            self.stuck_epoch.store(st.picks, Ordering::Release);
            st.queue.for_each_mut(|q| {
                if tasks.contains(&q.id) {
                    wakers.extend(q.job.handle_waker());
                }
            });
            // The handles' wakers need not be the job's: a handle polled once by the job
            // (which counted the wait) and then by a spawned task, or with a no-op waker
            // (`now_or_never`), would wake only that. The job's own slot is woken too,
            // last, so that its poll refuses its waits or cancels one (`after_stuck_poll`).
            wakers.extend(Self::slot_of(st, job).and_then(|e| e.waker.clone()));
        }
        wakers.into_iter().for_each(wake_quietly);
    }

    /// Whether the pool is marked stuck on nested waits (one atomic load).
    pub(crate) fn is_stuck_marked(&self) -> bool {
        self.stuck_epoch.load(Ordering::Acquire) != 0
    }

    /// The number of the current pick (0: none), read by a slot before each poll.
    pub(crate) fn stuck_epoch(&self) -> u64 {
        self.stuck_epoch.load(Ordering::Acquire)
    }

    /// A poll of job `id` ended while the pool was marked stuck on nested waits (checked by
    /// the slot with one atomic load); `began` is the pick's number the slot read before
    /// the poll. If `id` is the job picked by
    /// [`break_nested_deadlock`](Self::break_nested_deadlock), its poll began after the
    /// pick (a poll already under way may have polled its waits before the pick, and the
    /// pick's wake-up polls it again), and the poll refused none of the waits (it does not
    /// poll those handles again), the newest of its queued awaited tasks is cancelled with
    /// `WouldDeadlock` now. Either way the pool looks again once that is done.
    pub(crate) fn after_stuck_poll(self: &Arc<Self>, id: u64, began: u64) {
        let mut later = Deferred::default();
        {
            let mut st = self.lock();
            let st = &mut *st;
            // Another job's poll changes nothing here; the look that `run_deferred` takes
            // while the pool is marked clears the mark once the pool is not stuck.
            let picked = st.stuck_pick == Some(id) && began == st.picks;
            // A cycle's pick that refused nothing stays: it is refused at its next poll of
            // a wait on a waiting job (nothing queued to cancel instead).
            if picked && (!st.stuck_cycle || st.stuck_refused) {
                st.stuck_pick = None;
            }
            if picked && !std::mem::take(&mut st.stuck_refused) {
                let victim = Self::stuck_waits(st).and_then(|jobs| {
                    jobs.into_iter()
                        .find(|(job, _, _)| *job == id)
                        .and_then(|(_, tasks, _)| tasks.into_iter().max())
                });
                if let Some(victim) = victim {
                    for q in st.queue.extract_if(|q| q.id == victim) {
                        self.drop_unrun(st, q.job, q.id, CancelReason::WouldDeadlock, &mut later);
                        later.stamps.push(q.stamp);
                    }
                    Self::clamp_reserved(st, &mut later);
                    self.gauges(st);
                }
            }
            // After the cancels (their handles end their counted waits): look again.
            later.recheck_waits = true;
        }
        self.run_deferred(&mut later);
    }

    // ----- observation -----------------------------------------------------------------

    /// Queued jobs lost since the exit take-over because a rate window that never
    /// reopens held them back: SmartAioPool's exit reports them once every task ended (a
    /// window may fill only after the take-over, with a re-run's start).
    pub(crate) fn never_started(&self) -> u64 {
        self.lock().never_started
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let st = self.lock();
        PoolStats {
            queued: st.queue.len() - st.reserved,
            running: st.running,
            submitted: st.counts.submitted,
            completed: st.counts.completed,
            panicked: st.counts.panicked,
            cancelled: st.counts.cancelled,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// (live workers, running) of an elastic pool, after retiring the workers idle for
    /// its `idle_timeout`; for others `limit` is max_concurrency.
    pub(crate) fn workers(&self) -> (usize, usize) {
        let mut wake = Vec::new();
        let counts = {
            let mut st = self.lock();
            Self::retire_idle(&mut st, &mut wake);
            (st.limit, st.running)
        };
        // The retired workers' idle slot tasks (tokio's wakers), to exit.
        wake.into_iter().for_each(wake_quietly);
        counts
    }

    /// Under the lock, for an elastic pool: retires the workers idle for `idle_timeout`
    /// (see the `elastic` module: done when the worker count is looked at), and the idle
    /// slot tasks beyond the idle workers left, whose wakers go to `wake`.
    fn retire_idle(st: &mut State<J>, wake: &mut impl Extend<Waker>) {
        if let Some(el) = &mut st.elastic {
            st.limit = el.retire(st.limit, Instant::now());
            Self::trim_idle(st, wake);
        }
    }

    /// Under the lock, for an elastic pool: no more idle slot tasks are kept than it has
    /// idle workers. The oldest of the others are taken off the idle list and woken (their
    /// wakers go to `wake`) to exit: a retired worker's tokio task ends with it.
    fn trim_idle(st: &mut State<J>, wake: &mut impl Extend<Waker>) {
        if st.elastic.is_none() {
            return;
        }
        let excess = st
            .idle
            .len()
            .saturating_sub(st.limit.saturating_sub(st.running));
        if excess == 0 {
            return;
        }
        let State { idle, slots, .. } = st;
        for retired in idle.drain(..excess) {
            slots[retired.key].polling.retire();
            wake.extend(retired.waker);
        }
    }

    /// [`figures_of`](Self::figures_of), for the exit's report: a job aborted while a slot
    /// held it is not unfinished (its handle says `Aborted`), although it counts as
    /// running until the slot polls again.
    pub(crate) fn figures(&self) -> Figures {
        let st = self.lock();
        let mut figures = Self::figures_of(&st);
        let aborted = st.slots.iter().filter(|(_, e)| e.aborted).count();
        figures.unfinished -= aborted.min(figures.unfinished);
        figures
    }

    /// Whether the pool still has a task that someone may get to the end of, for a
    /// SmartAioPool that nothing else can reach (no handle of the pool left, no
    /// process-wide call or exit run for it): a task running, or queued where it may
    /// start: not one that a rate window that never reopens holds back for ever and,
    /// while the pool is stranded (no runtime it knows is alive), only one whose handle is
    /// still held (awaiting it would offer a runtime to run it on) and that is not held
    /// back for ever either (the queue's last `held_back`: awaiting it would wait for
    /// ever). The others would hold the pool, its engine and their recipes for the life
    /// of the process; once this says `false`, the pool may be dropped, which cancels
    /// them (`RuntimeShutdown`).
    pub(crate) fn owes_work(&self) -> bool {
        let mut st = self.lock();
        if st.running > 0 {
            return true;
        }
        let figures = Self::figures_of(&st);
        if st.runtimes.live_or_any(None).is_none() {
            // Only those that may start: the queue's last `held_back` never will (a
            // handle of theirs, awaited, would offer a runtime for nothing).
            let mut startable = st.queue.len() - figures.held_back;
            let mut awaited = false;
            st.queue.for_each_mut(|q| {
                if startable > 0 {
                    startable -= 1;
                    awaited |= !q.job.detached();
                }
            });
            return awaited;
        }
        figures.unfinished > 0
    }

    fn figures_of(st: &State<J>) -> Figures {
        let queued = st.queue.len() - st.reserved;
        let held_back = st
            .limits
            .as_ref()
            .map_or(0, |l| l.rate_never_starts(queued, st.reserved));
        Figures {
            unfinished: queued - held_back + st.running,
            lost: st.counts.lost,
            held_back,
            max_concurrency: st.max_concurrency,
        }
    }

    // ----- waiting and shutdown --------------------------------------------------------

    /// Under the lock: the job of this pool whose poll is running on this thread (its slot
    /// holds it, so it has not ended), if any.
    fn calling_job(st: &State<J>, pool: u32) -> Option<u64> {
        context::current_task(pool).filter(|&id| Self::slot_of(st, id).is_some())
    }

    /// Under the lock: the slot that holds job `id` (running, or about to), if any. A scan
    /// of the slots: only for paths off a job's own (aborts, waits, the deadlock breaker).
    fn slot_of(st: &State<J>, id: u64) -> Option<&SlotEntry<J>> {
        st.slots.iter().map(|(_, e)| e).find(|e| e.job == id)
    }

    /// Waits until every job submitted before this call has finished (its handle
    /// resolved). The set of jobs is fixed when this is *called*, not when the future is
    /// first polled.
    ///
    /// Cancel safe: dropping the future only stops the wait.
    pub(crate) fn wait_all(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        self.wait_all_but(None)
    }

    /// [`wait_all`](Self::wait_all), leaving out job `spared` (while it runs or is queued
    /// for a re-run) rather than the calling job: `shutdown_timeout`'s wait after its
    /// deadline, which spared that job, and may be polled outside it (a spawned task the
    /// job awaits).
    fn wait_all_but(
        self: &Arc<Self>,
        spared: Option<u64>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let key = {
            let mut st = self.lock();
            let target = st.counts.submitted;
            // The spared job, or else the job of this pool whose poll makes the wait: not
            // yet counted as ended (its slot or the queue holds it), and never to end while
            // it waits for itself; the wait does not wait for it.
            let except = spared
                .filter(|&id| {
                    Self::slot_of(&st, id).is_some() || st.queue.count(1, |q| q.id == id) > 0
                })
                .or_else(|| Self::calling_job(&st, self.id()))
                .filter(|&id| id < target);
            let remaining = target - st.wait_done - u64::from(except.is_some());
            (remaining > 0).then(|| {
                st.waits.insert(Wait {
                    target,
                    remaining,
                    except,
                })
            })
        };
        // Made now, not at the first poll: a future dropped unpolled forgets its wait too.
        let guard = key.map(|key| WaitGuard {
            engine: Arc::clone(self),
            key,
        });
        let engine = Arc::clone(self);
        async move {
            // Also with nothing to wait for: the runtime becomes known to the pool. (A
            // wait outside a runtime, for jobs no runtime can run, waits on: a runtime
            // that waits or submits later runs them.)
            let _ = engine.ensure_started();
            // Once the tasks waited for have ended: the graves they left ([`graves`]).
            // The wait takes those kept and frees them; batches being freed elsewhere,
            // taken before, are waited for. It frees them here, on the waiter's thread,
            // unless it runs inside a job's poll (then a task of the current runtime
            // does); outside a runtime, with a runtime of the pool entered. In a re-run
            // pool, and in any pool after a panic (its `on_panic` call first), slots drop
            // what ended jobs left after the lock that counted them: the drops under way
            // then are waited for too (`drops`, watched by `_watch`).
            let mut horizon = None;
            let mut drops: Vec<(Polling, u64)> = Vec::new();
            let mut _watch = None;
            let mut quiet = QuietPoll::default();
            loop {
                let mut notified = pin!(engine.changed.notified());
                notified.as_mut().enable();
                let (batch, enter, settled) = {
                    let mut st = engine.lock();
                    let mut batch = None;
                    let mut enter = None;
                    if horizon.is_none()
                        && guard
                            .as_ref()
                            .is_none_or(|g| st.waits[g.key].remaining == 0)
                    {
                        batch = st.graves.take_all();
                        horizon = Some(st.graves.horizon());
                        drops = st
                            .droppers
                            .iter()
                            .filter_map(|p| p.dropping().map(|n| (p.clone(), n)))
                            .collect();
                        if !drops.is_empty() {
                            _watch = Some(DropWatch::new(&engine));
                        }
                        if batch.is_some() && Handle::try_current().is_err() {
                            enter = st
                                .runtimes
                                .live_or_any(None)
                                .and_then(|rt| st.runtimes.handle(rt).cloned());
                        }
                    }
                    let settled = horizon.is_some_and(|h| st.graves.settled(h));
                    (batch, enter, settled)
                };
                if let Some(batch) = batch {
                    match (enter, Handle::try_current()) {
                        (_, Ok(current)) if context::polling_a_task() => {
                            // Freed when the task runs, or is dropped unrun.
                            let freeing = Freeing {
                                engine: Arc::clone(&engine),
                                batch: Some(batch),
                            };
                            drop_in_task(&current, freeing);
                        }
                        (Some(handle), Err(_)) => {
                            let _in = handle.enter();
                            engine.drop_batch(batch);
                        }
                        _ => engine.drop_batch(batch),
                    }
                    continue;
                }
                // After the watch was counted (SeqCst: see `Polling::end_drop`).
                drops.retain(|(p, n)| !p.dropped_through(*n));
                if settled && drops.is_empty() {
                    return;
                }
                // Registered with a waker of ours that wakes the caller's quietly:
                // tokio's `Notify` wakes its waiters in batches, and drops the rest of a
                // batch unwoken if one waker panics.
                poll_fn(|cx| quiet.poll(notified.as_mut(), cx)).await;
            }
        }
    }

    /// Calls `f(true)` in a task of a runtime the pool knows (a multi-thread one if it
    /// knows one), once every job submitted so far has finished (with `owed_only`: once
    /// [`owes_work`](Self::owes_work) says `false`, leaving out the jobs a rate window
    /// holds back for ever, which would never finish); `f(false)`, on this
    /// thread, if the pool knows no live runtime, or where that task is dropped unfinished
    /// (its runtime shut down first). Returns `true` if the task went to a multi-thread
    /// runtime, whose workers run it; on a current-thread runtime it runs only while some
    /// thread drives that runtime, and may never run (nor be dropped) if none does.
    pub(crate) fn when_done(
        self: &Arc<Self>,
        owed_only: bool,
        f: impl FnOnce(bool) + Send + 'static,
    ) -> bool {
        /// Calls its function with `false` if dropped before it was taken.
        struct Unless<F: FnOnce(bool)>(Option<F>);
        impl<F: FnOnce(bool)> Drop for Unless<F> {
            fn drop(&mut self) {
                if let Some(f) = self.0.take() {
                    f(false);
                }
            }
        }
        let handle = {
            let mut st = self.lock();
            let handle = st
                .runtimes
                .live_or_any(None)
                .and_then(|rt| st.runtimes.driven_handle(rt))
                .cloned();
            st.watch_owed |= owed_only && handle.is_some();
            handle
        };
        let Some(handle) = handle else {
            f(false);
            return false;
        };
        let driven = runtimes::is_multi_thread(&handle);
        let done = self.wait_all();
        let engine = Arc::clone(self);
        let mut unless = Unless(Some(f));
        drop(handle.spawn(async move {
            if owed_only {
                drop(done);
                loop {
                    let mut notified = pin!(engine.changed.notified());
                    notified.as_mut().enable();
                    if !engine.owes_work() {
                        break;
                    }
                    notified.await;
                }
            } else {
                done.await;
            }
            drop(engine);
            if let Some(f) = unless.0.take() {
                f(true);
            }
        }));
        driven
    }

    /// Whether the pool has a rate limit (its jobs need a runtime with timers).
    pub(crate) fn needs_timers(&self) -> bool {
        self.needs_timers
    }

    /// Whether the pool has a rate limit and is stranded now (see
    /// [`note_stranded`](Self::note_stranded)): the one case where a wait must ask its
    /// runtime for timers to offer it (one load).
    pub(crate) fn needs_timer_probe(&self) -> bool {
        self.needs_timers && self.stranded.load(Ordering::Relaxed)
    }

    /// Starts queued jobs that have a free slot (or, elastic, could have one) but no
    /// runtime to run them (re-runs whose runtime went away, reservations whose claimers
    /// went with it), on the current runtime. Called by a `wait` and by a submit that has
    /// to wait for room: the pool may be full of exactly such jobs.
    ///
    /// The current runtime becomes known to the pool even if nothing starts now: jobs that
    /// lose their runtime later, while this caller waits, run there. It becomes the home
    /// only if the pool has no live home.
    ///
    /// Returns `false` if neither the current runtime (none, or one that has shut down:
    /// a `spawn_blocking` thread or a `Handle::enter` guard can outlive it) nor any other
    /// the pool knows is alive: then nothing can run the pool's jobs, and a submit waiting
    /// for room would wait for ever (a SmartAioPool full of the re-runs of a runtime that
    /// ended).
    pub(crate) fn ensure_started(self: &Arc<Self>) -> bool {
        // A current-thread runtime that a blocked `blocking_submit` entered is not offered:
        // its thread, blocked, cannot drive it (227's case for `blocking_submit`).
        let Some(handle) = Handle::try_current()
            .ok()
            .filter(|h| !crate::blocking::cannot_drive(h))
        else {
            return self.lock().runtimes.live_or_any(None).is_some();
        };
        let mut later = Deferred::default();
        let can_run;
        {
            let mut st = self.lock();
            let (rt, unasked) =
                if self.needs_timers && runtimes::timers_known(&handle) != Some(true) {
                    // Only a runtime known to have timers: one the pool knows (checked when it
                    // came in), or one this thread found to have them (a waiting submit's, by
                    // its admission). A wait makes no timer to find out (nor, so, whether this
                    // runtime is alive: it may be).
                    (st.runtimes.known(&handle), true)
                } else {
                    (st.runtimes.offer(&handle), false)
                };
            can_run = rt.is_some() || unasked || st.runtimes.live_or_any(None).is_some();
            Self::grow(&mut st);
            // Its claimers go to this runtime (also one for jobs whose claimers are
            // elsewhere: see `claim_here`).
            self.fill_free(&mut st, rt, &mut later);
            self.gauges(&st);
        }
        self.run_deferred(&mut later);
        can_run
    }

    /// At exit, once every pool is taken over: lifts the hold the take-over set, and
    /// starts the jobs on the current (exit) runtime.
    pub(crate) fn exit_start(self: &Arc<Self>) -> bool {
        self.lock().exit_hold = false;
        self.ensure_started()
    }

    /// For a pending poll of something this pool feeds: if the pool is stranded (see
    /// [`note_stranded`](Self::note_stranded)), offers it the current runtime, as a `wait`
    /// does ([`ensure_started`](Self::ensure_started)); a rate-limited pool takes it only
    /// if it has timers (asked here, outside the lock). Otherwise one load.
    pub(crate) fn offer_if_stranded(self: &Arc<Self>) {
        if !self.stranded.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = Handle::try_current() else {
            return; // a plain thread's wait has no runtime to offer
        };
        if crate::blocking::cannot_drive(&handle) {
            // A `blocking_wait` under an entered current-thread runtime, which its blocked
            // thread cannot drive: it makes a runtime of its own instead.
            return;
        }
        if self.needs_timers {
            runtimes::has_timers(&handle);
        }
        self.ensure_started();
    }

    /// For a handle of this stranded pool awaited where no live runtime can be offered:
    /// a thread of the crate (`nb_aiopool-serve`) runs a current-thread runtime of its
    /// own, offered to the pool as a `wait` offers its runtime, until the pool has no task
    /// queued or running that may still start or end ([`serve`](Self::serve)); then the
    /// runtime is shut down in the background (its drop would wait for blocking work the
    /// re-runs left). One such thread at a time per pool: it looks again, after clearing
    /// its mark, whether the pool was stranded meanwhile, so that a handle that saw the
    /// mark and left it the work is not forgotten. If no thread or runtime can be made,
    /// nothing changes: the tasks wait for a runtime to come (as before), and the process
    /// exit takes them over. Tasks that a rate window that never reopens
    /// (`Duration::MAX`) holds back for ever are not served: the thread would wait for
    /// them for ever, holding the pool's engine, whose drop cancels them.
    #[cold]
    fn serve_stranded(self: &Arc<Self>) {
        if !Self::needs_serving(&self.lock()) {
            return; // only tasks held back for ever: nothing to run
        }
        if self.serving.swap(true, Ordering::SeqCst) {
            return;
        }
        let engine = Arc::clone(self);
        let started = std::thread::Builder::new()
            .name("nb_aiopool-serve".into())
            .spawn(move || {
                let engine = Unmark(engine);
                Self::serve_loop(&engine.0);
            });
        if started.is_err() {
            self.serving.store(false, Ordering::SeqCst);
        }
    }

    /// The serving thread's work (see [`serve_stranded`](Self::serve_stranded)).
    fn serve_loop(engine: &Arc<Self>) {
        loop {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                // No runtime to be had: the tasks wait for one to come, as before.
                engine.serving.store(false, Ordering::SeqCst);
                return;
            };
            rt.block_on(engine.serve());
            rt.shutdown_background();
            engine.serving.store(false, Ordering::SeqCst);
            let again = {
                let st = engine.lock();
                st.runtimes.live_or_any(None).is_none()
                    && engine.stranded.load(Ordering::Relaxed)
                    && Self::needs_serving(&st)
            };
            if !again || engine.serving.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Under the lock: whether the pool has a task queued or running that a serving
    /// runtime could see to its end: not one that a rate window that never reopens
    /// (`Duration::MAX`) holds back for ever (see [`Limits::rate_never_starts`]).
    fn needs_serving(st: &State<J>) -> bool {
        Self::figures_of(st).unfinished > 0
    }

    /// The serving runtime's work ([`serve_stranded`](Self::serve_stranded)): offers the
    /// runtime and waits for every task, until the pool has none queued or running but
    /// those held back for ever (looked at again every [`SERVE_RECHECK`] while such tasks
    /// are queued: the wait for every task would not end).
    async fn serve(self: &Arc<Self>) {
        loop {
            if self.needs_timers {
                runtimes::has_timers(&Handle::current());
            }
            self.ensure_started();
            let figures = Self::figures_of(&self.lock());
            if figures.unfinished == 0 {
                return; // as `needs_serving` says
            }
            let held_for_ever = figures.held_back > 0;
            if held_for_ever {
                let _ = tokio::time::timeout(SERVE_RECHECK, self.wait_all()).await;
            } else {
                self.wait_all().await;
            }
        }
    }

    /// Stops intake: later submits fail and waiting submitters are refused. Queued and
    /// running jobs still finish. Idempotent.
    pub(crate) fn close(&self) {
        let mut wake: Vec<Waker>;
        {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            // Idle slot tasks exit (they hold the engine).
            wake = st.idle.iter_mut().filter_map(|i| i.waker.take()).collect();
            // Submitters waiting for room are refused.
            st.admission.close(&mut wake);
            self.rate_timer_check(&st);
        }
        wake.into_iter().for_each(wake_quietly);
        self.changed.notify_waiters();
    }

    /// Under the lock: whether an armed rate timer has nothing left to start (the pool is
    /// closed, so nothing more is queued but by the exit take-over, which arms its own,
    /// and its queue is empty). Its task then lets the engine go at once, rather than
    /// hold it until it fires, up to `per` later (finding 176 of RELIABILITY.md).
    fn rate_timer_unneeded(st: &State<J>) -> bool {
        st.rate_timer && st.closed && st.queue.len() == 0
    }

    /// Under the lock, where the pool closes or its queue loses jobs that will not start:
    /// tells an armed rate timer that has nothing left to start. Wakes only the timer's
    /// task (a tokio waker: no user code under the lock).
    fn rate_timer_check(&self, st: &State<J>) {
        if Self::rate_timer_unneeded(st) {
            self.rate_idle.notify_waiters();
        }
    }

    /// Called by an armed rate timer's task, woken by [`rate_idle`](Self::rate_idle):
    /// `true`, and the timer disarmed, if it has nothing left to start.
    fn rate_timer_release(&self) -> bool {
        let mut st = self.lock();
        let unneeded = Self::rate_timer_unneeded(&st);
        if unneeded {
            st.rate_timer = false;
        }
        unneeded
    }

    /// Closes the pool (at the call, not at the first poll: a future dropped unpolled
    /// still closed it) and waits until every queued and running job has finished.
    pub(crate) fn shutdown(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        self.close();
        self.wait_all()
    }

    /// Like [`shutdown`](Self::shutdown), but abandons what is left at the deadline. The
    /// pool is closed at the call.
    pub(crate) fn shutdown_timeout(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> impl Future<Output = ShutdownReport> + Send + 'static {
        fn ended<J>(st: &State<J>) -> (u64, u64) {
            let c = &st.counts;
            (
                c.completed + c.panicked + c.cancelled - c.abandoned,
                c.abandoned,
            )
        }
        let (start_ended, start_abandoned, caller) = {
            let st = self.lock();
            let (e, a) = ended(&st);
            // Called by a job of this pool: its wait leaves that job out, and so does the
            // abandon at the deadline (it would cancel the job waiting for the report).
            (e, a, Self::calling_job(&st, self.id()))
        };
        self.close();
        let wait = self.wait_all();
        let engine = Arc::clone(self);
        async move {
            let mut wait = pin!(wait);
            // Nothing left to wait for: no timer is made, so this works from any executor
            // (as `shutdown` does); only a deadline that may pass needs tokio's timer.
            let done = poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx).is_ready())).await;
            let passed = !done && {
                assert_timer_here(&SHUTDOWN_TIMEOUT);
                timeout_or_never(timeout, wait).await.is_err()
            };
            if passed {
                let spared = engine.cancel_all_sparing(CancelReason::Abandoned, caller);
                engine.wait_all_but(spared).await;
            }
            let (end_ended, end_abandoned) = ended(&engine.lock());
            ShutdownReport {
                finished: end_ended - start_ended,
                abandoned: end_abandoned - start_abandoned,
            }
        }
    }

    /// Cancels every job queued or running now with `reason`: queued ones are dropped at
    /// once, running ones at their next poll (their slots are woken for it).
    pub(crate) fn cancel_all(self: &Arc<Self>, reason: CancelReason) {
        let _ = self.cancel_all_sparing(reason, None);
    }

    /// [`cancel_all`](Self::cancel_all), but job `spared` (if any; running, or queued for
    /// its re-run, where it stays, first) is left alone, unless an earlier `cancel_all`
    /// covered it; returns the job left alone.
    fn cancel_all_sparing(
        self: &Arc<Self>,
        reason: CancelReason,
        spared: Option<u64>,
    ) -> Option<u64> {
        let mut later = Deferred::default();
        let wakers: Vec<Waker>;
        {
            let mut st = self.lock();
            // A job an earlier `cancel_all` covered and did not spare stays covered, even
            // if its slot has not applied that mark yet (written only under the lock).
            let before = self.cancel_before.load(Ordering::Relaxed);
            let spared = spared.filter(|&id| !(id < before && st.cancel_spared != Some(id)));
            st.cancel_reason = reason;
            st.cancel_spared = spared;
            // Release: a slot that sees the new mark (Acquire) reads this reason.
            self.cancel_before
                .store(st.counts.submitted, Ordering::Release);
            // The spared job may be queued for its re-run (cut off by its runtime's end
            // before this deadline): it stays, spared as it would be running.
            let kept = spared.and_then(|id| st.queue.pop_first(|q| q.id == id));
            while let Some(q) = st.queue.pop() {
                self.drop_unrun(&mut st, q.job, q.id, reason, &mut later);
                // Dropped outside the lock: a span's drop calls the subscriber.
                later.stamps.push(q.stamp);
            }
            if let Some(q) = kept {
                st.queue.push_front(q);
            }
            Self::clamp_reserved(&mut st, &mut later);
            self.gauges(&st);
            wakers = st
                .slots
                .iter_mut()
                .filter_map(|(_, s)| s.waker.clone())
                .collect();
            self.rate_timer_check(&st);
        }
        // Slot tasks' wakers: tokio's.
        wakers.into_iter().for_each(Waker::wake);
        self.run_deferred(&mut later);
        spared
    }

    /// At process exit: every unfinished job (queued, or running on a runtime that may
    /// never poll it again) is queued again for `handle`'s runtime, where the caller starts
    /// them ([`exit_start`](Self::exit_start)) once it has taken every pool over
    /// (interrupted runs only if the pool re-runs them; otherwise they are cancelled).
    /// A pool with nothing unfinished is taken over all the same (`handle`'s runtime
    /// becomes its home; its rate timer, claimers and idle slot tasks are forgotten).
    ///
    /// A run inside a poll right now, on a thread that goes on (`std::process::exit` leaves
    /// a multi-thread runtime's workers running), is started again only once that poll has
    /// returned, so the two runs never overlap (a run that ended in that poll is not run
    /// again). One polled by the `exiting` thread (a [`thread_token`]), which never
    /// returns (the task called `exit`), or polled for longer than [`EXIT_POLL_WAIT`], is
    /// cancelled instead, as `stuck`.
    pub(crate) fn take_over(self: &Arc<Self>, handle: Handle, exiting: u64) -> TakeOver {
        let mut later = Deferred::default();
        let mut report = TakeOver::default();
        let mut busy: Vec<(u64, J, Meta, Polling)> = Vec::new();
        {
            let mut st = self.lock();
            // Also with nothing to take over now: a job submitted from now on by a thread
            // outside every runtime must not go to the old home, which `exit` may have
            // frozen (alive, never driven again), and what the pool keeps on that runtime
            // must not hold it back: a rate timer armed there (which would never fire, and
            // while it is thought armed no other is), claimers and idle slot tasks there.
            // So an empty pool is reset as any other.
            st.generation += 1;
            // SeqCst: see `Polling::by`.
            self.generation.store(st.generation, Ordering::SeqCst);
            // Interrupted runs go back to the front of the queue, oldest first (or, without
            // re-runs, are cancelled and counted as lost).
            let mut interrupted: Vec<(u64, J, Meta)> = Vec::new();
            let entries: Vec<SlotEntry<J>> = st.slots.drain().collect();
            for s in entries {
                let Some(copy) = s.copy else { continue };
                // Aborted while it ran (its group or stream dropped, a `timeout` around
                // `batch_run`) and not polled since: its handle says `Aborted`, so it is
                // neither cut nor run again, and not reported as either.
                let aborted = copy.aborted().is_some();
                match s.polling.by() {
                    Some(t) if self.rerun && t != exiting => {
                        busy.push((s.job, copy, s.meta, s.polling));
                    }
                    Some(_) if self.rerun => {
                        // Polled by the exiting thread: it called `exit`, and never returns.
                        report.stuck += u64::from(!aborted);
                        self.lose(&mut st, copy, s.job, &mut later);
                    }
                    // It ends here, as a slot dropped with its runtime ends it.
                    _ if aborted => self.end_aborted(&mut st, copy, s.job, &mut later),
                    _ => interrupted.push((s.job, copy, s.meta)),
                }
            }
            interrupted.sort_by_key(|(id, ..)| std::cmp::Reverse(*id));
            if !self.rerun {
                report.cut = interrupted.len() as u64;
            }
            for (id, job, meta) in interrupted {
                if self.rerun {
                    // With its flow-control settings: the limits count it again when it
                    // starts (their running counts are reset below).
                    Self::requeue_first(&mut st, id, job, meta);
                } else {
                    self.lose(&mut st, job, id, &mut later);
                }
            }
            st.running = 0;
            st.reserved = 0;
            st.claimers = 0;
            st.runtimes.forget_claimers();
            // Idle slot tasks of the old generation exit when polled; none is reused.
            st.idle.clear();
            st.elastic = None;
            st.limit = st.max_concurrency;
            st.rate_timer = false;
            if let Some(limits) = &mut st.limits {
                limits.reset_running();
            }
            st.taken_over = true;
            st.exit_hold = true;
            st.awaiting_poll = busy.iter().map(|b| b.0).collect();
            st.runtimes.enter(&handle);
            // Nothing starts here: the exit hook starts the jobs of every pool once it has
            // taken them all over (`exit_start`), so that a job started at exit, and
            // submitting into a pool not taken over yet, does not have its task there
            // taken for an interrupted one. (With runs still inside a poll elsewhere,
            // nothing starts before they are settled below either: they hold their slots,
            // and their keys and weights, till then.)
            self.gauges(&st);
        }
        self.run_deferred(&mut later);
        if busy.is_empty() {
            return report;
        }
        // Outside the lock: let the polls in progress return (their slots, stale now, start
        // nothing more), then run those jobs again; a run that ended in that poll was
        // counted by its slot and is not. A poll seen ended once counts as ended: the stale
        // slot may be polled again, but runs nothing.
        let deadline = std::time::Instant::now() + EXIT_POLL_WAIT;
        let mut ended = vec![false; busy.len()];
        loop {
            for (done, b) in ended.iter_mut().zip(&busy) {
                *done |= b.3.by().is_none();
            }
            if ended.iter().all(|&d| d) || std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut settled = Vec::new();
        {
            let mut st = self.lock();
            // A poll that ends from now on settles nothing: its job is settled here.
            st.awaiting_poll.clear();
            let counted = std::mem::take(&mut st.ended_in_take_over);
            for ((id, job, meta, _), done) in busy.into_iter().zip(ended) {
                if counted.contains(&id) {
                    // Its copy may hold the last reference to a recipe: dropped below.
                    settled.push(job);
                    continue;
                }
                if done && job.aborted().is_some() {
                    // Aborted meanwhile (as above): ended, not queued again.
                    self.end_aborted(&mut st, job, id, &mut later);
                } else if done {
                    Self::requeue_first(&mut st, id, job, meta);
                } else {
                    report.stuck += u64::from(job.aborted().is_none());
                    self.lose(&mut st, job, id, &mut later);
                }
            }
            // Started by the exit hook (see above); but a job a thread that goes on
            // submitted during the wait, and found held back, is started by it too.
            self.gauges(&st);
        }
        drop_quietly(settled);
        self.run_deferred(&mut later);
        report
    }
}

/// The serving thread's hold on its pool: clears the pool's serving mark if the thread
/// unwinds (a bug of this crate), so that a later await can start another.
struct Unmark<J: Job>(Arc<Engine<J>>);

impl<J: Job> Drop for Unmark<J> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.serving.store(false, Ordering::SeqCst);
        }
    }
}

/// How often a serving runtime ([`Engine::serve`]) looks again at a pool whose queue
/// holds tasks that a rate window that never reopens holds back for ever.
const SERVE_RECHECK: Duration = Duration::from_millis(50);

/// Drops `value` outside every lock of ours, where its `Drop` is user code (a result
/// nobody wants, the last reference to a recipe, a waiting submitter's waker): a panic
/// there (the panic hook has shown it) must not end the slot task or the exit hook that
/// drops it, nor cut short the submit that drops it (see [`Admit`]).
pub(crate) fn drop_quietly<T>(value: T) {
    drop(catch_unwind(AssertUnwindSafe(move || drop(value))));
}

/// [`drop_quietly`] for a waker there may be none of (the one a waiting submit replaces
/// or leaves behind, see [`Admit`]: most often none): no catch is set up then.
#[inline(always)]
fn drop_waker_quietly(waker: Option<Waker>) {
    if waker.is_some() {
        drop_quietly(waker);
    }
}

/// Drops `value` in a task of `handle`'s runtime; if that runtime is shutting down,
/// `spawn` drops the task at once, here.
fn drop_in_task(handle: &Handle, value: impl Send + 'static) {
    drop(handle.spawn(async move { drop(value) }));
}

/// A batch of graves ([`graves`]) freed, and its ticket given back, when this is dropped.
struct Freeing<J: Job> {
    engine: Arc<Engine<J>>,
    batch: Option<Batch<J>>,
}

impl<J: Job> Drop for Freeing<J> {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            self.engine.drop_batch(batch);
        }
    }
}

/// Frees the graves of a pool ([`graves`]) after [`graves::REAP_AFTER`], or as soon as
/// the runtime drops the task (at its shutdown). On a runtime without timers, after one
/// yield.
///
/// It never waits for the pool's lock on a worker thread, where it would hold up the
/// tasks behind it (a job's polls, `tests/lock_and_reports.rs` found): while the lock is
/// taken it waits again, and it hands the freed batch's ticket back between yields.
async fn reap_timer<J: Job>(engine: Weak<Engine<J>>, handle: Handle) {
    /// What the task has to do if the runtime drops it: take and free the graves, or
    /// hand back the ticket of a batch it freed.
    struct Fire<J: Job> {
        engine: Weak<Engine<J>>,
        freed: Option<u64>,
        done: bool,
    }
    impl<J: Job> Drop for Fire<J> {
        fn drop(&mut self) {
            if self.done {
                return;
            }
            let Some(engine) = self.engine.upgrade() else {
                return;
            };
            match self.freed {
                None => engine.reap_timer_fired(),
                Some(ticket) => engine.batch_dropped(engine.lock(), ticket),
            }
        }
    }
    let timed = runtimes::has_timers(&handle);
    let mut fire = Fire {
        engine,
        freed: None,
        done: false,
    };
    let batch = loop {
        if timed {
            tokio::time::sleep(graves::REAP_AFTER).await;
        } else {
            tokio::task::yield_now().await;
        }
        let Some(engine) = fire.engine.upgrade() else {
            fire.done = true;
            return;
        };
        let taken = engine.try_lock().map(|mut st| st.graves.timer_fired());
        if let Some(batch) = taken {
            break batch;
        }
    };
    if let Some(batch) = batch {
        let ticket = batch.drop_all();
        fire.freed = Some(ticket);
        loop {
            let Some(engine) = fire.engine.upgrade() else {
                break;
            };
            if let Some(st) = engine.try_lock() {
                engine.batch_dropped(st, ticket);
                break;
            }
            drop(engine);
            tokio::task::yield_now().await;
        }
    }
    fire.done = true;
}

/// `tokio::time::timeout`, but for a `limit` that ends within a second of the largest
/// time an `Instant` can hold, which is no deadline (the future runs to its end): tokio's
/// timer rounds a deadline up to its next millisecond, an addition that panicked there
/// ("overflow when adding duration to instant"). `Duration::MAX` and other limits that
/// do not fit at all were no deadline already.
async fn timeout_or_never<F: Future>(
    limit: Duration,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    if limits::timer_at(tokio::time::Instant::now(), limit).is_none() {
        Ok(fut.await)
    } else {
        tokio::time::timeout(limit, fut).await
    }
}

/// A call that makes a tokio timer only when it has to wait, for
/// [`assert_timer_here`]'s messages.
struct TimedCall {
    /// What had to wait.
    waited: &'static str,
    /// What its timer is to the user.
    timer: &'static str,
    /// The call that needs no timer.
    instead: &'static str,
}

/// `shutdown_timeout` that has to wait.
const SHUTDOWN_TIMEOUT: TimedCall = TimedCall {
    waited: "shutdown_timeout had to wait",
    timer: "deadline",
    instead: "shutdown() without a deadline",
};

/// `submit_with(.., SubmitOptions::timeout(..))` that has to wait for room.
const TIMED_SUBMIT: TimedCall = TimedCall {
    waited: "submit_with(.., SubmitOptions::timeout(..)) had to wait for room",
    timer: "timer",
    instead: "submit without a timeout",
};

/// Panics with this crate's message, naming `call`, if a timer made here now could not
/// work: outside a tokio runtime, on one without the time driver, or in the context of
/// one that has shut down (where tokio panics at the timer's first poll, in words that
/// say nothing of the call). Outside every lock of ours. It leaves no answer behind
/// ([`runtimes::timers_here`]): which runtimes a later wait on this thread offers a
/// stranded rate-limited pool stays as it was (finding 207).
#[track_caller]
fn assert_timer_here(call: &TimedCall) {
    let TimedCall {
        waited,
        timer,
        instead,
    } = call;
    match Handle::try_current() {
        Err(_) => panic!(
            "nb_aiopool: {waited} outside a tokio runtime; its {timer} needs a runtime with \
             time enabled ({instead} works from any executor)"
        ),
        Ok(handle) if !runtimes::timers_here(&handle) => panic!(
            "nb_aiopool: {waited} on a tokio runtime without time enabled; its {timer} needs \
             a runtime built with `enable_time()` or `enable_all()` ({instead} works there)"
        ),
        Ok(handle) if runtimes::timers_shut_down(&handle) => panic!(
            "nb_aiopool: {waited} in the context of a tokio runtime that has shut down (a \
             spawn_blocking thread that outlived it, or its Handle entered); its {timer} \
             needs a live runtime with time enabled ({instead} works there)"
        ),
        Ok(_) => {}
    }
}

/// The panic message for a rate-limited pool met on a runtime without timers.
fn no_timers_message(pool: &str) -> String {
    format!(
        "nb_aiopool: {pool} has a rate_limit, whose timer needs a tokio runtime with time \
         enabled, and this runtime has none: build it with `enable_time()` or `enable_all()`"
    )
}

/// How long the exit take-over waits for a poll in progress on another thread before it
/// gives that run up (see [`Engine::take_over`]).
pub(crate) const EXIT_POLL_WAIT: Duration = Duration::from_secs(5);

/// What the exit take-over could not run again.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TakeOver {
    /// Interrupted runs of a pool that does not re-run them (cancelled).
    pub(crate) cut: u64,
    /// Runs still inside a poll: on the exiting thread (the task called `exit`), or for
    /// longer than [`EXIT_POLL_WAIT`] (cancelled).
    pub(crate) stuck: u64,
}

/// Counts a `wait()` watching for drops under way (see [`Engine::end_drop`]),
/// until it returns or is dropped.
struct DropWatch<J: Job>(Arc<Engine<J>>);

impl<J: Job> DropWatch<J> {
    fn new(engine: &Arc<Engine<J>>) -> Self {
        engine.drop_watchers.watch();
        DropWatch(Arc::clone(engine))
    }
}

impl<J: Job> Drop for DropWatch<J> {
    fn drop(&mut self) {
        self.0.drop_watchers.unwatch();
    }
}

/// Forgets a `wait()` when its future is dropped.
struct WaitGuard<J: Job> {
    engine: Arc<Engine<J>>,
    key: usize,
}

impl<J: Job> Drop for WaitGuard<J> {
    fn drop(&mut self) {
        self.engine.lock().waits.remove(self.key);
    }
}

impl<J: Job> Unqueue for Engine<J> {
    fn aborted(self: Arc<Self>, job: u64, priority: i32, runner: &sync::AtomicU32) {
        self.abort_queued(job, priority, runner);
    }

    fn offer_runtime(self: Arc<Self>) {
        self.offer_if_stranded();
        // Still stranded: the handle is awaited where no live runtime can be offered (a
        // plain executor, or a `spawn_blocking` thread of a runtime that is ending, whose
        // drop waits for that thread). A blocking wait serves itself (`block_on_serving`).
        if self.stranded.load(Ordering::Relaxed) && !crate::blocking::is_blocked() {
            self.serve_stranded();
        }
    }

    fn is_stranded(&self) -> bool {
        self.stranded.load(Ordering::Relaxed)
    }
}

/// A job an abort took out of the queue ([`Engine::abort_queued`]), counted and told
/// already, on its way to be dropped on its runtime. Dropped (run or not: a runtime that
/// shuts down drops its tasks unrun), it drops the job, a panic in its `Drop` caught; a
/// job dropped while another is (its `Drop` aborted the next of a chain) is dropped after
/// it, not inside it ([`unqueue::run_flat`]).
struct Unqueued<J: Job>(Option<(J, CancelReason)>);

impl<J: Job> Drop for Unqueued<J> {
    fn drop(&mut self) {
        if let Some((job, reason)) = self.0.take() {
            unqueue::run_flat(Box::new(move || {
                let _ = catch_unwind(AssertUnwindSafe(|| job.cancel(reason)));
            }));
        }
    }
}

impl<J: Job> Drop for Engine<J> {
    fn drop(&mut self) {
        unqueue::deregister(self.id());
        if *self.stranded.get_mut() {
            unqueue::stranded(self.id(), false);
        }
        context::deregister(self.id());
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for grave in st.graves.drain() {
            drop_quietly(grave);
        }
        // A pool dropped after losing tasks to a runtime shutdown is still reported at exit.
        let mut figures = Self::figures_of(st);
        // Jobs still queued now (held back by a rate window that never reopens, counted
        // in `held_back`: nothing else should leave a job queued with no slot or timer
        // holding the engine) are cancelled as the queue drops below, their handles told
        // `RuntimeShutdown`: not unfinished at the exit. The report says why (no runtime
        // shut down, and a `shutdown()` would have waited for them for ever); any other
        // counts as lost.
        let queued = st.queue.len() - st.reserved - figures.held_back;
        figures.unfinished -= queued;
        figures.lost += queued as u64;
        // They are cancelled here, counted and reported as any cancellation of a queued
        // job is (the `metrics` counter and the queued gauge back to 0, the `tracing`
        // event with its `task_id`), each after its handle is told: nothing else would
        // ever count them. No lock is held: the engine is going.
        let left = st.queue.extract_if(|_| true);
        if !left.is_empty() {
            let reason_of =
                |q: &Queued<J>| q.job.aborted().unwrap_or(CancelReason::RuntimeShutdown);
            for q in &left {
                self.observer.counted(Outcome::Cancelled(reason_of(q)));
            }
            #[cfg(feature = "metrics")]
            self.observer.gauges(0, st.running);
            for q in left {
                let (id, reason) = (q.id, reason_of(&q));
                drop_quietly(q);
                self.observer.cancelled(id, reason);
            }
        }
        if figures.lost > 0 || figures.unfinished > 0 || figures.held_back > 0 {
            if let Some(hook) = &self.on_drop {
                hook(figures);
            }
        }
    }
}

impl<J: Job> Probe for Engine<J> {
    fn start_waiting(&self, waiter: u64, awaited: u64) -> Option<bool> {
        let mut st = self.lock();
        let st = &mut *st;
        if let Some(tasks) = st.waiting_on_own.get_mut(&waiter) {
            // Already counted as waiting: one more handle changes nothing.
            tasks.push(awaited);
            return Some(false);
        }
        // Every slot the pool may have is taken: `max_concurrency`, not an elastic pool's
        // live workers, which grow again for a queued job (at a submit, a job's end, a
        // reopened rate window), and which a count of them may just have retired.
        let full = st.waiting_on_own.len() + 1 >= st.running && st.running >= st.max_concurrency;
        st.waiting_on_own.insert(waiter, vec![awaited]);
        // Then every running job waits, unless a wait counted is on a task that ended (or
        // was cancelled) and whose handle is not told yet: that job goes on.
        if full && Self::every_waiter_stuck(st).is_some() {
            st.waiting_on_own.remove(&waiter);
            return Some(true);
        }
        Some(false)
    }

    fn refuse_stuck(&self, waiter: u64, awaited: u64) -> bool {
        if !self.is_stuck_marked() {
            return false;
        }
        let mut st = self.lock();
        let st = &mut *st;
        if st.stuck_pick != Some(waiter) {
            return false; // another job's refusals come first
        }
        let Some(jobs) = Self::stuck_waits(st) else {
            // Broken meanwhile (by an earlier refusal, or a job's end).
            st.stuck_pick = None;
            self.stuck_epoch.store(0, Ordering::Release);
            return false;
        };
        // A cycle's pick refuses a wait on a waiting job only while no waiting job awaits
        // a queued task (else the pool picks again: see `break_nested_deadlock`).
        let cycle = st.stuck_cycle && jobs.iter().all(|(_, tasks, _)| tasks.is_empty());
        // Only a task that has not started: refusing it is what frees its waiter.
        let refuse = st.queue.count(1, |q| q.id == awaited) > 0
            || (cycle && st.waiting_on_own.contains_key(&awaited));
        st.stuck_refused |= refuse;
        refuse
    }

    fn stop_waiting(&self, waiter: u64, awaited: u64) {
        let mut st = self.lock();
        if let Entry::Occupied(mut tasks) = st.waiting_on_own.entry(waiter) {
            if let Some(i) = tasks.get().iter().position(|&t| t == awaited) {
                tasks.get_mut().swap_remove(i);
            }
            if tasks.get().is_empty() {
                tasks.remove();
            }
        }
    }
}

impl<J: Job> Deaths for Engine<J> {
    /// A runtime shut down: its queued jobs are cancelled with `RuntimeShutdown` (or, if
    /// they can run anywhere, left to any runtime), and what it held up starts elsewhere.
    /// Also when no slot of the pool ever ran there, so nothing waits for a slot to notice.
    fn runtime_died(self: Arc<Self>, rt: RtRef) {
        let mut later = Deferred::default();
        {
            let mut st = self.lock();
            self.runtime_gone(&mut st, rt, &mut later);
            self.fill_free(&mut st, None, &mut later);
            self.gauges(&st);
        }
        self.run_deferred(&mut later);
    }
}

/// Looks at the queue again when the rate window allows the next start; spawned on
/// `handle`'s runtime.
fn rate_timer<J: Job>(
    engine: Arc<Engine<J>>,
    handle: Handle,
    at: Instant,
) -> impl Future<Output = ()> + Send + 'static {
    // Made before the first poll: a runtime that shuts down drops the task unpolled too.
    let mut armed = Armed {
        engine: Some(engine),
        handle,
    };
    async move {
        let mut fires = pin!(tokio::time::sleep_until(at));
        loop {
            let engine = Arc::clone(armed.engine.as_ref().expect("held until the timer ends"));
            let mut idle = pin!(engine.rate_idle.notified());
            // Registered before the look: a pool closed or emptied after it wakes this.
            idle.as_mut().enable();
            if engine.rate_timer_release() {
                // Nothing left to start: let the engine go now, not when the timer fires
                // (without `rate_timer_lost`: its runtime is alive).
                drop(armed.engine.take());
                return;
            }
            tokio::select! {
                () = fires.as_mut() => break,
                () = idle => {}
            }
        }
        if let Some(engine) = armed.engine.take() {
            engine.rate_tick();
        }
    }
}

/// A rate timer that has not fired. Dropped so (its runtime shut down: a spawned task is
/// dropped unfinished only then), it tells the pool, which arms another elsewhere.
struct Armed<J: Job> {
    engine: Option<Arc<Engine<J>>>,
    handle: Handle,
}

impl<J: Job> Drop for Armed<J> {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.rate_timer_lost(&self.handle);
        }
    }
}

impl<J: Job> Engine<J> {
    /// Under the lock, for a slot about to drop, after the lock, what a job left (a
    /// re-run pool's slot, or any slot after a panic: [`Polling::begin_drop`]). The
    /// first time (`listed` not yet set), its mark goes in the list a `wait()` looks at.
    fn begin_drop(st: &mut State<J>, polling: &Polling, listed: &mut bool) {
        if !std::mem::replace(listed, true) {
            if st.droppers.len() == st.droppers.capacity() {
                // Before the list grows: the marks of slots that are gone.
                st.droppers.retain(Polling::is_held);
            }
            st.droppers.push(polling.clone());
        }
        polling.begin_drop();
    }

    /// A slot finished dropping what a job left ([`Polling::end_drop`]): a `wait()`
    /// watching for that looks again.
    fn end_drop(&self, polling: &Polling) {
        if self.drop_watchers.drop_ended(polling) {
            self.changed.notify_waiters();
        }
    }

    /// Under the lock, for a slot left without a job: keeps it as an idle slot task (with a
    /// fresh entry) if the pool may want it soon. Returns its new key.
    fn keep_idle(st: &mut State<J>, rt: RtRef, polling: &Polling) -> Option<usize> {
        if st.closed || st.idle.len() >= IDLE_MAX || !st.runtimes.is_alive(rt) {
            return None;
        }
        let key = st.slots.insert(SlotEntry::jobless(polling));
        st.idle.push(Idle {
            key,
            rt,
            waker: None,
        });
        Some(key)
    }

    /// Under the lock, for an idle slot task being polled: `None` once it was given a job
    /// (it now holds a reservation); else whether it should go on waiting (`Some(true)`)
    /// or exit (`Some(false)`; its entry is gone). A slot that waits leaves its waker.
    ///
    /// Only once it stops lingering: while it lingers it looks for a claim without the
    /// lock ([`Polling::claim`]).
    fn idle_poll(st: &mut State<J>, key: usize, waker: &Waker, polling: &Polling) -> Option<bool> {
        // From the back: a lingering slot task went idle last, or nearly.
        let Some(pos) = st.idle.iter().rposition(|i| i.key == key) else {
            if polling.is_retired() {
                // Its worker retired ([`trim_idle`](Self::trim_idle)): it exits.
                st.slots.remove(key);
                return Some(false);
            }
            return None;
        };
        let alive = st.runtimes.is_alive(st.idle[pos].rt);
        if st.closed || !alive {
            st.idle.swap_remove(pos);
            st.slots.remove(key);
            return Some(false);
        }
        st.idle[pos].waker = Some(waker.clone());
        Some(true)
    }

    /// Under the lock: forgets an idle slot task that was dropped; `false` if it had been
    /// given a job.
    fn forget_idle(st: &mut State<J>, key: usize) -> bool {
        match st.idle.iter().rposition(|i| i.key == key) {
            Some(pos) => {
                st.idle.swap_remove(pos);
                true
            }
            None => false,
        }
    }
}

/// A submitter waiting for room ([`Engine::admit`]): `Ok` once it holds a place, `Err`
/// if the pool closed first.
///
/// Its waker (the submitter's: any executor's, whose `clone` and `drop` are that
/// executor's code, which may panic or call the pool again) is cloned before the
/// engine's lock is taken, and the one it replaces, or leaves in the line of waiters when
/// dropped, is dropped after the lock is released, a panic in that drop caught
/// ([`drop_quietly`]): none of them runs in the critical section, as in tokio's own
/// semaphore. A waker that will wake the same task as the one kept is not cloned again.
///
/// # Dropping
///
/// Leaves the line of waiters; a place granted to it and not yet taken goes to the next
/// waiter.
struct Admit<'a, J: Job> {
    engine: &'a Engine<J>,
    /// The priority of the task it is for.
    priority: i32,
    /// Its entry among the waiters, once it waits.
    key: Option<WaitKey>,
}

impl<J: Job> Future for Admit<'_, J> {
    type Output = Result<(), AdmitError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let engine = self.engine;
        let Some(key) = self.key else {
            // The first poll, made once the pool was found full: the submit most likely
            // waits, with a clone of its waker (made here, outside the lock; dropped after
            // it if the room came meanwhile).
            let waker = cx.waker().clone();
            let mut st = engine.lock();
            return match st.take_place() {
                Err(AdmitError::Full) => {
                    self.key = Some(st.admission.wait(waker, self.priority));
                    std::task::Poll::Pending
                }
                taken_or_closed => {
                    drop(st);
                    drop_quietly(waker);
                    std::task::Poll::Ready(taken_or_closed)
                }
            };
        };
        let polled = {
            let st = &mut *engine.lock();
            st.admission.poll_wait(key, cx.waker(), st.closed)
        };
        let done = match polled {
            Some(done) => done,
            None => Self::poll_anew(engine, key, cx),
        };
        if done.is_ready() {
            self.key = None;
        }
        done.map(|granted| {
            if granted {
                Ok(())
            } else {
                Err(AdmitError::Closed)
            }
        })
    }
}

impl<J: Job> Admit<'_, J> {
    /// A waiter polled with a new waker: polled again with a clone of it made outside the
    /// lock, and the waker it replaces dropped after the lock.
    #[cold]
    #[inline(never)]
    fn poll_anew(
        engine: &Engine<J>,
        key: WaitKey,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<bool> {
        let mut fresh = Some(cx.waker().clone());
        let mut left = None;
        let done = {
            let st = &mut *engine.lock();
            st.admission
                .poll_wait_with(key, &mut fresh, st.closed, &mut left)
        };
        drop_waker_quietly(left);
        drop_waker_quietly(fresh);
        done
    }
}

impl<J: Job> Drop for Admit<'_, J> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut granted = Vec::new();
            let left = self.engine.lock().admission.cancel(key, &mut granted);
            granted.into_iter().for_each(wake_quietly);
            drop_waker_quietly(left);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::{BoxRun, CancelReason, Deferred, Job};

    /// A job type for records that never hold a job.
    struct NoJob;

    impl Job for NoJob {
        const RERUN: bool = false;
        const STARTS_USER_CODE: bool = false;

        fn keep(&self) -> Option<Self> {
            None
        }

        fn start(self) -> BoxRun {
            unreachable!("never queued")
        }

        fn start_cancelled(self, _reason: CancelReason) -> BoxRun {
            unreachable!("never queued")
        }

        fn cancel(self, _reason: CancelReason) {}

        fn aborted(&self) -> Option<CancelReason> {
            None
        }

        fn handle_waker(&self) -> Option<Waker> {
            None
        }

        fn set_runner(&self, _key: usize) {}
    }

    /// `Engine::finish` and `Engine::settle` leave an untouched record undropped: only
    /// one that owns nothing and has nothing to do may count as untouched.
    #[test]
    fn only_a_record_that_owns_nothing_is_untouched() {
        assert!(Deferred::<NoJob>::default().untouched());

        let mut used = Deferred::<NoJob>::default();
        used.wake.push(Waker::noop().clone());
        assert!(!used.untouched());
        // One item, kept in place and taken: nothing is left to drop.
        used.wake.take_each(drop);
        assert!(used.untouched());
        // Two: the second went to a buffer, which the list still owns once emptied; it
        // must be dropped, not forgotten.
        used.wake
            .extend([Waker::noop().clone(), Waker::noop().clone()]);
        used.wake.take_each(drop);
        assert!(!used.untouched());
        let mut spawned = Deferred::<NoJob>::default();
        spawned.graves.reserve(1);
        assert!(!spawned.untouched());

        for set in [
            |d: &mut Deferred<NoJob>| d.granted.push(Waker::noop().clone()),
            |d: &mut Deferred<NoJob>| d.changed = true,
            |d: &mut Deferred<NoJob>| d.recheck_waits = true,
        ] {
            let mut d = Deferred::<NoJob>::default();
            set(&mut d);
            assert!(!d.untouched());
        }
    }
}
