//! The machinery under the three pools.
//!
//! # Design
//!
//! A pool is an [`Engine`]: room for `max_concurrency + max_queue_size` jobs, counted
//! under the engine's lock with the submitters waiting for it ([`admission`]: the
//! backpressure), a queue ([`queue::Queue`]: FIFO, or by priority once a
//! job has one; the jobs of keys at their limit set aside), start-time flow control
//! ([`limits`]) and *slots*.
//! A slot is a tokio task of its own that runs jobs one after the other. A submit that
//! finds a free slot *reserves* it for the job (the job now counts as running) and makes
//! sure a *claimer* is on its way: an idle slot task of the submitter's runtime woken, or
//! a new one spawned there, at most [`CLAIMERS_MAX`] at once (a few more when they go to
//! several runtimes). A slot whose job ends takes
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
//!
//! # Layout
//!
//! This file holds the engine's types and its constructor. The engine's work is split by
//! concern, each file an `impl Engine` block (or a type) of its own:
//!
//! - [`submit`]: room for a job, the submitters waiting for it, the push;
//! - [`start`]: slots taking jobs, claimers, reservations, resizes;
//! - [`ending`]: outcomes counted, aborts, the work done after the lock;
//! - [`lifecycle`]: `wait()`, `close`, `shutdown`, `cancel_all`, the exit's take-over;
//! - [`stranded`]: runtimes that end, and pools left with no runtime to run their jobs;
//! - [`nested`]: the nested-wait deadlock breaker;
//! - [`rate`]: the rate window's timer; [`idle`]: idle and retiring slot tasks;
//! - [`figures`]: `stats()`, the gauges, the exit's figures.
//!
//! The data they work on has files of its own: [`admission`], [`queue`], [`limits`],
//! [`runtimes`], [`graves`], [`marks`], [`elastic`], and the slot task, [`slot`].

mod admission;
mod elastic;
mod ending;
mod few;
mod figures;
mod graves;
mod idle;
mod job;
mod lifecycle;
pub(crate) mod limits;
mod marks;
mod nested;
pub(crate) mod queue;
mod rate;
pub(crate) mod runtimes;
mod slot;
mod start;
mod stranded;
mod submit;
pub(crate) mod task_key;
mod watchers;

pub(crate) use lifecycle::EXIT_POLL_WAIT;

use std::collections::hash_map::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;
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
use crate::task::context::{self, Probe};
use crate::task::unqueue::{self, Unqueue};
use crate::task::{Outcome, PoolId};
use admission::{Admission, MAX_ROOM};
use elastic::Elastic;
use few::Few;
use graves::{Batch, Graves};
use limits::Limits;
use marks::{DropWatchers, Polling};
use queue::{Ordered, Queue};
use runtimes::{RtRef, Runtimes};
pub(crate) use slot::thread_token;
use slot::Slot;
pub(crate) use watchers::SizeWatch;
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

impl<J> Queued<J> {
    /// Its flow-control settings.
    fn meta(&self) -> &Meta {
        &self.meta
    }
}

impl<J> Ordered for Queued<J> {
    fn priority(&self) -> i32 {
        self.meta.priority()
    }

    fn seq(&self) -> u64 {
        self.id
    }

    fn key(&self) -> Option<&task_key::TaskKey> {
        self.meta.key()
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
    /// The reason of the first `cancel_all` (or shutdown deadline) that covered its job,
    /// set under the lock at that call: the slot cancels the job with it when it sees the
    /// mark, which may be after a later call set another reason (`State::cancel_reason`
    /// is the last call's). The first decision holds, as an abort's does.
    cancelled: Option<CancelReason>,
    /// A job handed over by a slot of another runtime, kept here until the new slot task's
    /// first poll takes it ([`Slot::bound`](slot::Slot::bound)): till then an abort, a
    /// `cancel_all` or a shutdown deadline drops it under the lock, as a queued one, and
    /// the exit takes it over, so that none waits for a runtime that is alive but not
    /// driven (RELIABILITY.md, 400). Boxed: rare, and the entries stay small.
    handed: Option<Box<Queued<J>>>,
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
            cancelled: None,
            handed: None,
        }
    }

    /// The first covering call's reason, if a `cancel_all` covered job `id` while it was
    /// in this slot (none for a job that was not: a re-run queued again since, whose run
    /// is then cancelled with the last call's).
    fn first_cancel_reason(entry: Option<&Self>, id: u64) -> Option<CancelReason> {
        entry.filter(|e| e.job == id).and_then(|e| e.cancelled)
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

/// The most slot tasks `fill` schedules at once to take reserved jobs (`claim_here` adds
/// one on a runtime that has none on the way, and a resize on a current-thread runtime up
/// to this many on another runtime: see `claim_on_reserved_jobs_runtimes`). Reserved jobs
/// beyond these are taken by slots whose job ends (no wake-up at all), or by the next claimer,
/// which schedules another as it takes its job: a burst of submits wakes a few tasks,
/// not one per job. More than one, so that a claimer stuck behind a job that blocks its
/// thread (in a tokio worker's LIFO slot, which other workers do not steal) holds
/// nothing up.
///
/// Two, not more: in a steady stream of short jobs the producer falls behind the slots,
/// and nearly every job is reserved at its submit; a job's end then takes it over, while
/// each claimer on its way wakes an idle slot task, whose job's end later finds nothing
/// and parks it again. With 8, 10–15% of the jobs went through that round (counted,
/// BENCHMARKS.md "2026-12-08"); with 2 the stream took 0.92–0.96× the CPU per job on 2
/// workers (1.04–1.08× the throughput), and a burst of 1,000 sleeping jobs into an idle
/// pool started as fast.
const CLAIMERS_MAX: usize = 2;

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
    /// The runtimes whose timer task will look at the queue again when the rate window
    /// allows a start (see [`RateTimers`](rate::RateTimers)).
    rate_timers: rate::RateTimers,
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
    /// most [`CLAIMERS_MAX`] per runtime scheduled to at once; a resize on a
    /// current-thread runtime also schedules some on other runtimes, see
    /// `claim_on_reserved_jobs_runtimes`). A claimer that finds every reservation taken
    /// goes idle.
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
    /// The last `cancel_all`'s (or shutdown deadline's) reason: for a covered job no slot
    /// held at that call (a re-run queued again since); a job a slot held then is
    /// cancelled with the reason its entry recorded (`SlotEntry::cancelled`).
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
    /// Jobs whose run the exit take-over waits for, inside a poll on another thread, each
    /// with the reason of the first `cancel_all` or deadline that covered it (their slots
    /// are out of `slots` meanwhile: see `cancel_all_sparing`).
    /// With their flow-control settings: they hold their slots, keys and weights until
    /// settled (by their slot if the run ends in that poll, else by `settle_busy`).
    awaiting_poll: Vec<lifecycle::Awaited>,
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
    /// Whether nothing may start now: the exit take-over holds every start until it has
    /// taken every pool over (see `fill`). (Runs it waits for, still inside a poll on
    /// another thread, hold only their own slots, keys and weights.)
    fn starts_held(&self) -> bool {
        self.exit_hold
    }

    /// Whether the last `cancel_all` (or shutdown deadline), whose mark is `mark` (the
    /// pool's `cancel_before`), covers job `id`: accepted before it, and not the job it
    /// spared.
    fn cancel_covers(&self, id: u64, mark: u64) -> bool {
        id < mark && self.cancel_spared != Some(id)
    }

    /// The reason job `id` is cancelled with if a `cancel_all` (or a shutdown deadline)
    /// before `mark` covers it, with `entry` its slot's entry: the first covering call's
    /// (see [`SlotEntry::first_cancel_reason`]).
    fn covering_reason(
        &self,
        entry: Option<&SlotEntry<J>>,
        id: u64,
        mark: u64,
    ) -> Option<CancelReason> {
        self.covering_reason_first(SlotEntry::first_cancel_reason(entry, id), id, mark)
    }

    /// [`covering_reason`](Self::covering_reason) with the first covering call's reason,
    /// `first`, if one was recorded for the job (else the last call's, `cancel_reason`,
    /// holds).
    fn covering_reason_first(
        &self,
        first: Option<CancelReason>,
        id: u64,
        mark: u64,
    ) -> Option<CancelReason> {
        self.cancel_covers(id, mark)
            .then(|| first.unwrap_or(self.cancel_reason))
    }

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
    /// Jobs dropped unrun (queued ones, and copies a slot held: `end_copy`), each with
    /// its id, its reason and whether its end is reported elsewhere (then no `task
    /// cancelled` event here); their handles are told, then the waits. (Boxed, as the
    /// rate timer: rare; one word to make instead of a `Vec`'s three.)
    #[allow(clippy::type_complexity, clippy::box_collection)]
    cancels: Option<Box<Vec<(J, u64, CancelReason, bool)>>>,
    /// Slots to spawn, each with its first job.
    spawns: Vec<(Handle, Slot<J>)>,
    /// Submitters granted room (see [`Admission::give_back`]).
    granted: Few<Waker>,
    /// Wake `wait()` callers.
    changed: bool,
    /// Start rate timers on these runtimes (each a handle and its number), firing then: one
    /// for each runtime [`RateTimers::arm`](rate::RateTimers::arm) listed in the critical
    /// section, mostly one (boxed: rare, and every record is made, and its size written, at
    /// every job's end).
    rate_timers: Option<Box<Few<(Handle, RtRef, Instant)>>>,
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
            rate_timers,
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
            && rate_timers.is_none()
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
            rate_timers: None,
            stamps: Stamps::default(),
            recheck_waits: false,
            graves: Vec::new(),
            reap_timer: None,
        }
    }
}

pub(crate) struct Engine<J: Job> {
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
    /// Told when `set_max_concurrency` changes the pool's size, and when the pool closes.
    size_watchers: SizeWatchers,
    /// `wait()`s waiting for slots to finish dropping what ended jobs left: a slot that
    /// finishes one signals `changed` while there are any.
    drop_watchers: DropWatchers,
    /// Mirror of `State::generation`, so a stale slot stops without taking the lock.
    generation: AtomicU64,
    /// Running jobs with an id below this are cancelled (but for `State::cancel_spared`),
    /// with the reason of the first call that covered them (`SlotEntry::cancelled`, else
    /// `State::cancel_reason`).
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
    /// What the pool's tasks keep to reach it. Last, so freed last: after `Drop` left
    /// the registries and every field, the queue's jobs included, is dropped.
    id: PoolId,
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
            rate_timers: rate::RateTimers::default(),
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
}

/// Drops `value` outside every lock of ours, where its `Drop` is user code (a result
/// nobody wants, the last reference to a recipe, a waiting submitter's waker): a panic
/// there (the panic hook has shown it) must not end the slot task or the exit hook that
/// drops it, nor cut short the submit that drops it (see [`Admit`](submit::Admit)).
pub(crate) use crate::unwind::drop_quietly;

/// [`drop_quietly`] for a waker there may be none of (the one a waiting submit replaces
/// or leaves behind, see [`Admit`](submit::Admit): most often none): no catch is set up then.
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

/// The deadline of [`timeout_or_never`] passed.
pub(super) struct Elapsed;

/// `tokio::time::timeout`, but with a timer that follows the runtime whose context polls
/// the wait, and with no deadline for a `limit` that ends within a second of the largest
/// time an `Instant` can hold (the future runs to its end: tokio's timer rounds a deadline
/// up to its next millisecond, an addition that panicked there, "overflow when adding
/// duration to instant"; `Duration::MAX` and other limits that do not fit at all were no
/// deadline already).
///
/// A tokio timer belongs to the runtime it was made on. A submit's or a shutdown's future
/// may be polled on another runtime later (a future first polled in one `block_on`,
/// awaited in another): tokio's own timeout then went on polling the first runtime's
/// timer, which panicked inside tokio once that runtime had shut down ("it is being
/// shutdown"), and never fired while it was alive but not driven (finding 399). Here:
/// - the timer is made at the first poll that has to wait, for `limit`, on the runtime of
///   that poll (the caller has checked it with [`assert_timer_here`]);
/// - polled from another runtime that can keep a timer, it is made again there, for the
///   time left by the system clock;
/// - polled from anywhere else (outside any runtime, or a runtime without time or shut
///   down), the timer it has stays while its runtime's time driver works (a live
///   multi-thread runtime fires it undriven), as tokio's timeout would; if that driver has
///   shut down too, no timer can work: this panics with this crate's message, naming
///   `call`, not from inside tokio.
///
/// Runtimes are told apart by their ids (tokio may give a shut-down runtime's id to a new
/// one only where it has no 64-bit atomics).
async fn timeout_or_never<F: Future>(
    limit: Duration,
    fut: F,
    call: &'static TimedCall,
) -> Result<F::Output, Elapsed> {
    if limits::timer_at(Instant::now(), limit).is_none() {
        return Ok(fut.await);
    }
    let started = std::time::Instant::now();
    let mut fut = std::pin::pin!(fut);
    let mut timer: Option<(Handle, std::pin::Pin<Box<tokio::time::Sleep>>)> = None;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(cx) {
            return std::task::Poll::Ready(Ok(out));
        }
        let here = Handle::try_current().ok();
        let rearm = match (&timer, here) {
            // The first wait: the caller checked this runtime (in this same poll).
            (None, here) => Some((
                here.expect("a timed wait's caller checks for a runtime with timers"),
                limit,
            )),
            (Some((made_on, _)), Some(here)) if here.id() == made_on.id() => None,
            (Some((made_on, _)), here) => {
                let can_time =
                    |h: &Handle| runtimes::timers_here(h) && !runtimes::timers_shut_down(h);
                match here.filter(can_time) {
                    Some(here) => Some((here, limit.saturating_sub(started.elapsed()))),
                    None if !runtimes::timers_shut_down(made_on) => None,
                    None => {
                        // Neither runtime can keep it: the message says why this one
                        // cannot.
                        assert_timer_here(call);
                        unreachable!("assert_timer_here panics where no timer can be made");
                    }
                }
            }
        };
        // Made in `on`'s context: the current one.
        if let Some((on, left)) = rearm {
            timer = Some((on, Box::pin(tokio::time::sleep(left))));
        }
        let (_, sleep) = timer.as_mut().expect("armed above");
        sleep.as_mut().poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

/// A call that makes a tokio timer only when it has to wait, for
/// [`assert_timer_here`]'s messages.
pub(crate) struct TimedCall {
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
pub(crate) const TIMED_SUBMIT: TimedCall = TimedCall {
    waited: "submit_with(.., SubmitOptions::timeout(..)) had to wait for room",
    timer: "timer",
    instead: "submit without a timeout",
};

/// A stream's input (`with_options`, a timeout set) that has to wait for room.
pub(crate) const TIMED_STREAM_INPUT: TimedCall = TimedCall {
    waited: "a map stream's input with SubmitOptions::timeout(..) (with_options) had to wait \
             for room",
    timer: "timer",
    instead: "with_options without a timeout",
};

/// For a map stream given options whose staged input is about to wait for room with a
/// timeout: panics as [`assert_timer_here`] does, naming the stream's call. Called before
/// the stream's wait is made (see `Core::wait_for_room`), not in it.
#[track_caller]
pub(crate) fn assert_stream_timer_here() {
    assert_timer_here(&TIMED_STREAM_INPUT);
}

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
        // job is (the `metrics` counter, the `tracing` event with its `task_id`), each
        // after its handle is told: nothing else would ever count them. No lock is held:
        // the engine is going.
        let left = st.queue.extract_if(|_| true);
        let reason_of = |q: &Queued<J>| q.job.aborted().unwrap_or(CancelReason::RuntimeShutdown);
        for q in &left {
            self.observer.counted(Outcome::Cancelled(reason_of(q)));
        }
        // A pool gone queues and runs nothing: its share of the gauges goes back to 0,
        // also a move a recorder's panic lost (made "at the next one", and this is the
        // last).
        #[cfg(feature = "metrics")]
        self.observer.gauges(0, 0);
        for q in left {
            let (id, reason) = (q.id, reason_of(&q));
            drop_quietly(q);
            self.observer.cancelled(id, reason);
        }
        if figures.lost > 0 || figures.unfinished > 0 || figures.held_back > 0 {
            if let Some(hook) = &self.on_drop {
                hook(figures);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::{CancelReason, Deferred, Job};
    use crate::task::BoxRun;

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
