//! [`Slot`]: the tokio task that runs a pool's jobs, one after the other.
//!
//! A slot task starts as a *claimer* (spawned, or an idle slot task woken, to take a
//! reserved job from the head of the queue), or *bound* to a job handed over from a slot
//! of another runtime. When its job ends, the slot counts it and stores its result for the
//! handle (one critical section), takes the next job for the same runtime (a reserved one
//! no claimer is coming for, or an unreserved one) and runs it at once; with none it
//! becomes an idle slot task, or exits. Jobs of other runtimes get slots of their own
//! there.

use std::cmp::Reverse;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::runtime::Handle;
use tokio::time::Instant;

use super::marks::Polling;
use super::queue::Ordered;
use super::runtimes::{self, RtRef, ANY};
use super::{drop_quietly, Deferred, Engine, Job, Queued, SlotEntry};
use crate::error::CancelReason;
use crate::observe::Running;
use crate::task::context::Entered;
use crate::task::{BoxRun, Outcome};

/// The most jobs a slot finishes in one poll before it lets its thread run other tasks.
const JOBS_PER_POLL: usize = 32;

/// How many times an idle slot task yields, looking for a new job, before it waits to be
/// woken: jobs that arrive meanwhile cost no wake-up at all.
pub(super) const LINGER_POLLS: u8 = 2;

/// A number for the current thread, never 0.
pub(crate) fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    // During the thread's teardown: a token no thread has.
    TOKEN.try_with(|t| *t).unwrap_or(u64::MAX)
}

pub(crate) struct Slot<J: Job> {
    /// Set while the task is polled (see [`Polling`]).
    polling: Polling,
    /// Its entry in the state's slab (valid while `generation` is current).
    key: usize,
    generation: u64,
    rt: RtRef,
    /// The job to start next.
    next: Option<Queued<J>>,
    /// The job running now, with its id.
    run: Option<(BoxRun, u64)>,
    /// That job's span and start time (empty without the observability features).
    obs: Running,
    /// The `cancel_before` mark this slot has applied.
    cancel_seen: u64,
    /// Its waker is in its entry in the state (once per entry: a tokio task's waker does
    /// not change; stored by a claim, else when its job first waits).
    registered: bool,
    /// It is counted in `State::claimers`: its next poll takes a reserved job.
    claiming: bool,
    /// The running job has not been polled yet: a `cancel_all` mark that came after its
    /// start waits for that first poll, so a recipe that panicked when called (its run
    /// re-raises on the first poll) is reported as the panic it was.
    fresh: bool,
    /// The run in hand is one a `cancel_all` covered, or its handle aborted, before it
    /// started: it calls no user code and never starts, so it is reported as a task
    /// cancelled while queued is (its event with a `task_id`; no span, no queue-wait or
    /// run-time sample).
    unstarted: bool,
    /// Its `next` job's start was charged to the rate window before this slot runs it: by
    /// a slot of another runtime that handed it over, or by this slot before a yield. The
    /// start is taken again when the job begins (see [`restart`](Self::restart)).
    recharge: bool,
    /// Bound to a job handed over that is still in its entry: the first poll takes it
    /// (see [`bound`](Self::bound)).
    handed: bool,
    /// It ended normally; `Drop` has nothing to do.
    done: bool,
    /// Idle (no job, kept for the next one): how many times it has lingered.
    idle: Option<u8>,
    /// Its [`Polling`] is in the state's list of slots that drop leftovers (re-run pools;
    /// any pool's slot after a panic).
    listed: bool,
    /// Its runtime (a tokio task never changes runtimes) has worker threads of its own:
    /// see [`must_yield_first`]. Set when it is spawned.
    multi_thread: bool,
    /// Last, so dropped last: a stale slot (whose `Drop` leaves its fields to their own
    /// drops) may hold its pool's last reference, and its jobs must be dropped while the
    /// pool, and so its number, lives (a review of finding 289: a task still open after
    /// its pool's number went to a new pool could be aborted into that pool).
    engine: Arc<Engine<J>>,
}

// Never pinned structurally: jobs are boxed or shared before they get here.
impl<J: Job> Unpin for Slot<J> {}

impl<J: Job> Slot<J> {
    fn make(
        engine: Arc<Engine<J>>,
        key: usize,
        generation: u64,
        rt: RtRef,
        polling: Polling,
    ) -> Self {
        Slot {
            engine,
            polling,
            key,
            generation,
            rt,
            next: None,
            run: None,
            obs: Running::none(),
            cancel_seen: 0,
            registered: false,
            claiming: false,
            fresh: false,
            unstarted: false,
            recharge: false,
            handed: false,
            done: false,
            idle: None,
            listed: false,
            multi_thread: false,
        }
    }

    /// Spawns the slot task on `handle`'s runtime, the one it will always run on. A
    /// runtime that has shut down drops it at once; its `Drop` deals with that.
    pub(super) fn spawn_on(mut self, handle: &Handle) {
        self.multi_thread = runtimes::is_multi_thread(handle);
        drop(handle.spawn(self));
    }

    /// A claimer: a slot task that takes a reserved job when it first runs (it is counted
    /// in `State::claimers`, and holds no slot until it takes a job).
    pub(super) fn reserved(
        engine: Arc<Engine<J>>,
        key: usize,
        generation: u64,
        rt: RtRef,
        polling: Polling,
    ) -> Self {
        let mut slot = Slot::make(engine, key, generation, rt, polling);
        slot.claiming = true;
        slot
    }

    /// A slot handed its first job (from a slot of another runtime), on runtime `rt`: the
    /// job waits in the slot's entry (`SlotEntry::handed`) until this slot task's first
    /// poll takes it ([`take_handed`](Self::take_handed)).
    pub(super) fn bound(
        engine: Arc<Engine<J>>,
        key: usize,
        generation: u64,
        rt: RtRef,
        polling: Polling,
    ) -> Self {
        let mut slot = Slot::make(engine, key, generation, rt, polling);
        slot.handed = true;
        // Its start was charged by the slot that handed it over (see `restart`).
        slot.recharge = slot.engine.needs_timers();
        slot
    }

    /// A bound slot's first poll takes the job handed over from its entry into `next`.
    /// `false` if it is not there any more: an abort, a `cancel_all` (or shutdown
    /// deadline) or the exit took it meanwhile, with the entry (see
    /// `Engine::take_handed`), and this slot task has nothing to do.
    fn take_handed(&mut self) -> bool {
        self.handed = false;
        let mut st = self.engine.lock();
        let q = (st.generation == self.generation)
            .then(|| st.slots.get_mut(self.key))
            .flatten()
            .filter(|e| e.polling.same(&self.polling))
            .and_then(|e| e.handed.take());
        drop(st);
        match q {
            Some(q) => {
                self.next = Some(*q);
                true
            }
            None => false,
        }
    }

    /// A job handed over by a slot of another runtime ([`bound`](Self::bound)) starts only
    /// now, when this runtime first polls its slot, which may be long after the other slot
    /// charged its start to the rate window (this runtime busy, or not driven: a
    /// current-thread runtime outside `block_on` runs nothing): meanwhile the window moved
    /// on and let other starts in, and the jobs handed over would start all at once, past
    /// it. (The same, on a smaller scale, for a job this slot took and then yielded before
    /// running, `After::YieldThenRun`: a busy multi-thread runtime may come back to it
    /// late.) So, in a rate-limited pool, the start is taken again now
    /// ([`Limits::restart`](super::limits::Limits::restart)); if the window has no room for
    /// it now, the job goes back to the queue, at its place by id (several put back keep
    /// their order), as a job the window holds back: its key and weight given back, the
    /// rate timer armed. So does a job whose start leaves the window no room beyond the
    /// jobs reserved a slot when a job queued ahead of it may start on this runtime (one
    /// this runtime's slots put back just before, as their starts had left the window;
    /// looked for without this job's key and weight, as the claimer's pop will look): the
    /// start goes to that one, through a claimer here, and the jobs handed over start in
    /// queue order (not in a window that never reopens). This slot then gives its place up:
    /// `None`, and the slot task ends. A job that will not run (aborted, or covered by a
    /// `cancel_all`, since it left the queue) gives its start back and is dropped here
    /// unrun, never put back.
    fn restart(&mut self, q: Queued<J>) -> Option<Queued<J>> {
        let engine = Arc::clone(&self.engine);
        let mut later = Deferred::default();
        {
            let mut st = engine.lock();
            let st = &mut *st;
            if st.generation != self.generation {
                return Some(q); // the exit took the pool over: as any stale slot's job
            }
            let covered = st.cancel_covers(q.id, engine.cancel_before.load(Ordering::Acquire));
            let reserved = st.reserved;
            let Some(limits) = st.limits.as_deref_mut() else {
                return Some(q);
            };
            let Some(entry) = st.slots.get_mut(self.key).filter(|e| e.job == q.id) else {
                return Some(q);
            };
            let Some(at) = entry.charged else {
                return Some(q); // it spent no start (aborted when it left the queue)
            };
            // One that will not run (its handle aborted it, or a `cancel_all` covers it,
            // since it left the queue) is not held back as one that runs would be: its
            // start is given back (as a job aborted while queued spends none), and this
            // slot drops it unrun now. Put back, it kept its place, its handle's result
            // (a `cancel_all`'s) and the waits for it until the window let it "start".
            if covered || q.job.aborted().is_some() {
                limits.unstarted(at);
                entry.charged = None;
                return Some(q);
            }
            let now = Instant::now();
            // Whether this job's key and weight were given back already (below).
            let mut released = false;
            if let Some(new) = limits.restart(at, now) {
                // The job the window's next start would go to (see `pop_startable`), if it
                // is queued ahead of this one and may run here: one put back by a slot of
                // this runtime just before (their starts had left the window while this
                // one's was still in it). When this start leaves no room for more than the
                // jobs already reserved a slot (each to spend a start, as `fill` counts
                // them), that job takes it, and this one goes back behind it, so that the
                // jobs start in queue order; with room left, this one keeps its start and
                // the job ahead takes the room (the rate timer armed when it was put back
                // starts it). Not in a window that never reopens, where `restart` changes
                // nothing (313): a start given away there is gone for this job.
                // Looked for without this job's key and weight, as the claimer's
                // `pop_startable` will look once this one is back in the queue: counted,
                // its key could hide a job ahead (another runtime's, which the claimer
                // would then hand over) behind one of this runtime's (finding 325).
                let ahead = limits.rate_reopens() && limits.rate_tokens(now) <= reserved && {
                    limits.ended(&entry.meta);
                    released = true;
                    let mut pick = limits.picker();
                    st.queue
                        .first_startable(limits.key_rooms(), |x| pick(&x.meta))
                        .is_some_and(|x| {
                            (x.rt == self.rt || x.rt == ANY)
                                && (Reverse(x.priority()), x.seq())
                                    < (Reverse(entry.meta.priority()), q.id)
                        })
                };
                if !ahead {
                    if released {
                        limits.holds(&entry.meta);
                    }
                    entry.charged = Some(new);
                    return Some(q);
                }
                limits.unstarted(new);
            }
            let entry = st.slots.remove(self.key);
            if !released {
                limits.ended(&entry.meta);
            }
            st.queue.put_back(Queued {
                meta: entry.meta,
                ..q
            });
            Engine::vacate(st, &mut later);
            engine.fill_free(st, Some(self.rt), &mut later);
            engine.changed(st);
        }
        self.done = true;
        engine.run_deferred(&mut later);
        None
    }

    /// Whether the exit hook took the pool over since this slot was made.
    fn is_stale(&self) -> bool {
        // SeqCst: see `Polling::by`.
        self.engine.generation.load(Ordering::SeqCst) != self.generation
    }

    /// Cancels the running job if `cancel_all` (or a shutdown deadline) covers it.
    fn apply_cancel_mark(&mut self) {
        // Acquire pairs with the Release store in `cancel_all`.
        let mark = self.engine.cancel_before.load(Ordering::Acquire);
        if mark <= self.cancel_seen {
            return;
        }
        if let Some((run, id)) = &mut self.run {
            if *id < mark {
                let (reason, spared) = {
                    let st = self.engine.lock();
                    let entry = st.slots.get(self.key);
                    (
                        SlotEntry::first_cancel_reason(entry, *id).unwrap_or(st.cancel_reason),
                        st.cancel_spared,
                    )
                };
                if spared == Some(*id) {
                    // Left out (the caller of `shutdown_timeout`): not marked as seen, so
                    // that a later `cancel_all` reaches it even with the same mark.
                    return;
                }
                run.cancel(reason);
            }
        }
        self.cancel_seen = mark;
    }

    /// A claimer takes a reserved job (from the head of the queue) into `next`: `Run`,
    /// or `YieldThenRun`. If slots whose jobs ended took them all, it becomes an idle slot
    /// task (`Yield`), or exits.
    ///
    /// It leaves its waker in its entry (`waker`, its task's) in the same critical
    /// section, for a `cancel_all` or an abort to wake it by: a claimer's entry is new
    /// (see `Engine::keep_idle`), and storing it when the job first waits took a critical
    /// section of its own (0.15 to 0.18 per job on 2 workers, BENCHMARKS.md).
    fn claim_reservation(&mut self, waker: &Waker) -> After {
        let engine = &self.engine;
        // Made once this poll claims: a record held in a `ManuallyDrop` is never dropped
        // (see `Engine::settle`), so no return may come between its making and its
        // settling.
        let mut record: ManuallyDrop<Deferred<J>>;
        let claim = {
            let mut st = engine.lock();
            if st.generation != self.generation {
                return After::Exit;
            }
            self.claiming = false;
            Engine::claimer_gone(&mut st, self.rt);
            if st.reserved == 0 {
                st.slots.remove(self.key);
                return match Engine::keep_idle(&mut st, self.rt, &self.polling) {
                    Some(key) => {
                        // A new entry: its next job's waker is stored there again.
                        self.key = key;
                        self.registered = false;
                        self.idle = Some(0);
                        After::Yield
                    }
                    None => After::Exit,
                };
            }
            st.reserved -= 1;
            if !self.registered {
                self.registered = true;
                st.slots[self.key].waker = Some(waker.clone());
            }
            record = ManuallyDrop::new(Deferred::default());
            let later = &mut *record;
            engine.take_next(&mut st, self.rt, self.key, later, &mut self.next);
            engine.fill_free(&mut st, Some(self.rt), later);
            engine.changed(&st);
            if self.next.is_none() {
                After::Exit
            } else if must_yield_first(self.multi_thread, later) {
                After::YieldThenRun
            } else {
                After::Run
            }
        };
        engine.settle(&mut record);
        claim
    }

    /// Ends this poll as `after` (anything but `Run`) says: a job kept for the next poll,
    /// a yield, or the end of the slot task.
    fn stop(&mut self, after: After, cx: &Context<'_>) -> Poll<()> {
        match after {
            After::Run | After::YieldThenRun => {
                // Its start was charged now; it runs after the yield (see `restart`). The
                // job is in `next` already.
                self.recharge = self.engine.needs_timers();
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            After::Yield => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            After::Exit => {
                self.done = true;
                Poll::Ready(())
            }
        }
    }

    /// Records how the job ended and hands its result to the handle, in one critical
    /// section; then takes the next job for this slot (`more`) into `next`, or (its
    /// budget spent) yields as a claimer, keeping its slot as a reservation if a queued
    /// job has none.
    fn finish(&mut self, mut run: BoxRun, id: u64, more: bool) -> After {
        let engine = &self.engine;
        // A panic's message, for its event (the only one that names the error): read
        // before the result goes to the handle.
        #[cfg(feature = "tracing")]
        let error = run
            .held_error()
            .filter(|e| e.is_panic())
            .map(ToString::to_string);
        #[cfg(not(feature = "tracing"))]
        let error: Option<String> = None;
        // Never dropped (see `Engine::settle`): both ways out below settle it.
        let mut record = ManuallyDrop::new(Deferred::default());
        let later = &mut *record;
        let outcome;
        let copy;
        let left;
        let announced;
        let after = {
            let mut st = engine.lock();
            if st.generation != self.generation {
                // Taken over at exit while this poll ran. The result goes to the handle
                // (first one wins). If the take-over is waiting for this poll, the job ended
                // here: it is counted here, and not run again; otherwise the take-over
                // settled it already (cancelled, and counted).
                let (woken, outcome) = run.publish_locked();
                // It held its slot, key and weight till now: given back.
                let counted_here = Engine::end_awaiting(&mut st, id, later).is_some();
                if counted_here {
                    engine.run_ended(&mut st, id, outcome, later);
                    st.ended_in_take_over.push(id);
                }
                drop(st);
                // Fired by `run_deferred`, after the task's room is given back.
                later.woken.push(woken);
                self.polling.forget_obs();
                if counted_here {
                    Self::report_end(
                        engine,
                        &mut self.obs,
                        &mut self.unstarted,
                        Some(&run),
                        id,
                        outcome,
                        error.as_deref(),
                    );
                } else {
                    // Settled, and reported, by the take-over: only its span closes here.
                    self.obs = Running::none();
                    self.unstarted = false;
                }
                drop_quietly(run);
                engine.settle(&mut record);
                return After::Exit;
            }
            // Decide and store the result, then count what was decided (an abort may have
            // come first), in one critical section.
            let (woken, decided) = run.publish_locked();
            outcome = decided;
            engine.run_ended(&mut st, id, outcome, later);
            // A detached task's (its handle dropped) fires nothing: not kept, so that the
            // record is not written and walked for it.
            if !woken.is_empty() {
                later.woken.push(woken);
            }
            let entry = &mut st.slots[self.key];
            entry.job = u64::MAX;
            entry.aborted = false;
            entry.cancelled = None;
            // It may hold the last reference to a recipe (a task aborted while queued runs
            // nothing): kept for a submitter to free (see `Engine::bury`), or, after a
            // panic or on a current-thread runtime, dropped below, outside the lock.
            let kept = entry.copy.take();
            let meta = std::mem::take(&mut entry.meta);
            // A panic is reported from its run, after the lock. On a current-thread
            // runtime what the job leaves is dropped here too: its submitter ran on this
            // thread, so nothing is gained by keeping it for a submitter (see `graves`).
            let drop_here = outcome == Outcome::Panicked || !self.multi_thread;
            (left, copy) = if drop_here {
                (Some(run), kept)
            } else {
                (Engine::bury(&mut st, run, kept, self.rt, later), None)
            };
            // A recipe's run (and, after a panic, its copy), a panicked run with the
            // `on_panic` call that reads it first, and a run dropped here end below,
            // after the lock: a wait waits for that (a wait that returns has seen the
            // callback of every panic it covers, and what it covers is dropped).
            announced = J::RERUN || drop_here;
            if announced {
                Engine::begin_drop(&mut st, &self.polling, &mut self.listed);
            }
            if let Some(limits) = &mut st.limits {
                limits.ended(&meta);
            }
            let after = if more {
                // A reserved job runs here, at once (a claimer coming for it finds none).
                Engine::take_reservation(&mut st, later);
                // Taken straight into `next`, where the slot's loop runs it from: the
                // job (48 bytes for a future) is not copied on through `After`, this
                // function's return and the loop (four copies fewer; with `poll_slot`
                // out of line, 14 instructions per job fewer for common and no-queue,
                // 42 for smart: callgrind, current-thread, 2026-12-07).
                engine.take_next(&mut st, self.rt, self.key, later, &mut self.next);
                match self.next {
                    Some(_) => After::Run,
                    None => match Engine::keep_idle(&mut st, self.rt, &self.polling) {
                        Some(key) => {
                            // A new entry: its next job's waker is stored there again.
                            self.key = key;
                            self.registered = false;
                            self.idle = Some(0);
                            After::Yield
                        }
                        None => After::Exit,
                    },
                }
            } else if st.running <= st.limit
                && Engine::unreserved_may_start(&mut st)
                && st.runtimes.is_alive(self.rt)
            {
                // Its slot becomes a reservation it claims itself after yielding (only for
                // a job that may start now: one held back by its key, its weight or the
                // rate window counts as queued).
                st.reserved += 1;
                Engine::claimer_added(&mut st, self.rt);
                self.claiming = true;
                After::Yield
            } else if st.reserved > st.claimers && st.runtimes.is_alive(self.rt) {
                // Its slot is given back; it claims a waiting reservation after yielding.
                Engine::vacate(&mut st, later);
                Engine::claimer_added(&mut st, self.rt);
                self.claiming = true;
                After::Yield
            } else {
                if !st.runtimes.is_alive(self.rt) {
                    engine.runtime_gone(&mut st, self.rt, later);
                }
                st.slots.remove(self.key);
                Engine::vacate(&mut st, later);
                After::Exit
            };
            engine.fill_free(&mut st, Some(self.rt), later);
            engine.changed(&st);
            if !matches!(after, After::Run) {
                Engine::reap_idle(&mut st, later);
            }
            match after {
                After::Run if must_yield_first(self.multi_thread, later) => After::YieldThenRun,
                after => after,
            }
        };
        if J::RERUN {
            self.polling.forget_obs();
        }
        Self::report_end(
            engine,
            &mut self.obs,
            &mut self.unstarted,
            left.as_ref(),
            id,
            outcome,
            error.as_deref(),
        );
        // A result nobody wants, if not kept, is dropped here, outside the lock (mostly
        // nothing is left: the run went to the graves).
        // Each on its own (user code both): a panic in the run's drop (its result's) must
        // not unwind through the recipe copy's (finding 401).
        if left.is_some() || copy.is_some() {
            crate::unwind::drop_apart_quietly(left, copy);
        }
        if announced {
            engine.end_drop(&self.polling);
        }
        engine.settle(&mut record);
        after
    }

    /// Outside the lock, after the result was published: reports how the task ended (with
    /// the features, in its span, as decided: an abort during its last poll makes it a
    /// cancellation) and closes its span; hands a panic that nobody will see (the handle
    /// was dropped) to the pool's `on_panic` callback.
    #[inline(always)]
    #[cfg_attr(
        not(any(feature = "tracing", feature = "metrics")),
        allow(unused_variables)
    )]
    fn report_end(
        engine: &Engine<J>,
        obs: &mut Running,
        unstarted: &mut bool,
        run: Option<&BoxRun>,
        id: u64,
        outcome: Outcome,
        error: Option<&str>,
    ) {
        if std::mem::take(unstarted) {
            // Cancelled before it started (a covered run ends cancelled: its cancel came
            // before any poll), reported as a task cancelled while queued is.
            if let Outcome::Cancelled(reason) = outcome {
                engine.observer().cancelled(id, reason);
            }
        } else {
            #[cfg(any(feature = "tracing", feature = "metrics"))]
            {
                // A completion records no event, only its run-time sample: without
                // `metrics`, the span is entered only for the events of the other ends
                // (about 170 instructions a task with a `Registry`; BENCHMARKS.md). With it, the
                // sample is recorded in the span, whatever the end, as before (a recorder
                // may read the current span, as `metrics-tracing-context` does).
                let _span = (cfg!(feature = "metrics") || outcome != Outcome::Completed)
                    .then(|| obs.enter());
                engine.observer().ended(obs, outcome, error);
            }
        }
        // The task's span closes with the task, not when the slot runs its next.
        *obs = Running::none();
        if outcome == Outcome::Panicked {
            if let (Some(hook), Some(err)) = (engine.on_panic(), run.and_then(|r| r.held_error())) {
                hook.call(id, err);
            }
        }
    }
}

/// Whether a slot about to run a job must yield first because it is scheduling slot tasks
/// (see [`Deferred::schedules`]). Only on a multi-thread runtime (`multi_thread`, the
/// slot's): a current-thread one has no other thread to run them on, and there jobs keep
/// starting in the order they left the queue. (The slot's own flag, not
/// `Handle::try_current`, whose handle clone and drop are two atomic writes to a count
/// every worker shares.)
fn must_yield_first<J: Job>(multi_thread: bool, later: &Deferred<J>) -> bool {
    multi_thread && later.schedules()
}

/// What a slot does next, after a job ended or a claimer looked for one.
enum After {
    /// Run the job now in the slot's `next`.
    Run,
    /// Run it after yielding once (see [`Deferred::schedules`]).
    YieldThenRun,
    /// Yield, and come back as a claimer or as a lingering idle slot task.
    Yield,
    Exit,
}

impl<J: Job> Future for Slot<J> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // The mark is read only by the exit take-over of a pool that runs interrupted jobs
        // again (only their entries keep a copy to run), so only such a pool pays for it:
        // a store that is a full fence, on a line other threads read, at every poll (5.8%
        // of the CPU of a profile of 5 ms sleeps on 2 workers).
        let mark = J::RERUN && this.engine.reruns();
        if mark {
            // Before the staleness check (see `Polling::by`). A panic here is a bug of this
            // crate; the mark then stays, and the exit take-over waits for it a bounded time.
            this.polling.enter(thread_token());
        }
        let poll = this.poll_slot(cx);
        if mark {
            this.polling.leave();
        }
        poll
    }
}

impl<J: Job> Slot<J> {
    /// Out of line: inlined into `poll` or not as the compiler chose, its copy of the
    /// taken job (see `finish`) saved 21 instructions per job for common and cost 8 for
    /// smart (whose `poll` also marks the poll); out of line, 14 fewer and 42 fewer
    /// (callgrind, current-thread, 2026-12-07).
    #[inline(never)]
    fn poll_slot(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let this = self;
        if this.is_stale() {
            this.done = true;
            return Poll::Ready(());
        }
        if this.handed && !this.take_handed() {
            this.done = true;
            return Poll::Ready(());
        }
        let pool = this.engine.id();
        let mut budget = JOBS_PER_POLL;
        if let Some(rounds) = this.idle {
            if !this.polling.take_claim() {
                if rounds < LINGER_POLLS {
                    // Lingering, without the lock: a claim is seen above; the pool closing,
                    // or the runtime going away, when it waits below.
                    this.idle = Some(rounds + 1);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let mut st = this.engine.lock();
                if st.generation != this.generation {
                    this.done = true;
                    return Poll::Ready(());
                }
                match Engine::idle_poll(&mut st, this.key, cx.waker(), &this.polling) {
                    // Claimed since the look above (the mark is cleared here, under the
                    // lock that set it).
                    None => {
                        this.polling.take_claim();
                    }
                    Some(true) => return Poll::Pending,
                    Some(false) => {
                        this.done = true;
                        return Poll::Ready(());
                    }
                }
            }
            // Scheduled to take a reserved job: go on as a claimer.
            this.idle = None;
            this.claiming = true;
        }
        loop {
            if this.run.is_none() {
                let q = match this.next.take() {
                    Some(q) if std::mem::take(&mut this.recharge) => match this.restart(q) {
                        Some(q) => q,
                        // Back in the queue: this slot gave its place up.
                        None => return Poll::Ready(()),
                    },
                    Some(q) => q,
                    None => match this.claim_reservation(cx.waker()) {
                        After::Run => this.next.take().expect("a job was claimed"),
                        after => return this.stop(after, cx),
                    },
                };
                // A `cancel_all` (or shutdown deadline) that came after the job left the
                // queue covers it too: it is cancelled without calling user code (a
                // recipe). Marks up to here are then settled for this run.
                let mark = this.engine.cancel_before.load(Ordering::Acquire);
                let id = q.id;
                // But for the run the last mark spared (`shutdown_timeout`'s caller, run
                // again after its runtime ended or at exit): it starts as it was left.
                let covered = if id < mark {
                    let st = this.engine.lock();
                    st.covering_reason(st.slots.get(this.key), id, mark)
                } else {
                    None
                };
                // Nor does one its handle aborted after it left the queue: its run would
                // see the abort before its first poll (cancelled unpolled, as a covered
                // one is). Neither starts: no span, no queue-wait sample (see `unstarted`).
                // Asked only where it is observed: with neither feature, the run sees the
                // abort before its first poll, as it always did, and a job's start pays
                // no call for it (30 instructions, 1% of a job).
                #[cfg(any(feature = "tracing", feature = "metrics"))]
                let never = covered.or_else(|| q.job.aborted());
                #[cfg(not(any(feature = "tracing", feature = "metrics")))]
                let never = covered;
                if J::RERUN && never.is_none() {
                    // The exit take-over runs a job whose slot never started it once more
                    // (its copy): in a pool without re-runs, it must not have started here.
                    let fenced = !this.engine.reruns();
                    if !this.polling.start(id, fenced) {
                        // Taken over since this poll began, and the take-over found the job
                        // not started: it is the take-over's, which runs it once at the
                        // exit. (A start made first runs here: the take-over cuts it as
                        // one interrupted, RELIABILITY.md, 346.)
                        this.done = true;
                        drop(q);
                        return Poll::Ready(());
                    }
                }
                this.unstarted = never.is_some();
                if never.is_none() {
                    this.obs = this.engine.observer().start(q.id, q.stamp);
                    if J::RERUN {
                        // For the exit take-over (with the features; else nothing).
                        this.polling.keep_obs(id, &this.obs);
                    }
                }
                let run = if let Some(reason) = never {
                    let mut run = q.job.start_cancelled(reason);
                    run.cancel(reason);
                    run
                } else if J::STARTS_USER_CODE {
                    // Starting a recipe's run calls user code: inside the pool's context.
                    let _in_pool = Entered::new(pool, id);
                    let _span = this.obs.enter();
                    q.job.start()
                } else {
                    q.job.start()
                };
                this.cancel_seen = if id < mark && covered.is_none() {
                    // Spared: not seen, so that a later `cancel_all` still reaches it (as
                    // in `apply_cancel_mark`).
                    this.cancel_seen.min(id)
                } else {
                    this.cancel_seen.max(mark)
                };
                this.run = Some((run, id));
                this.fresh = true;
            }
            if !std::mem::take(&mut this.fresh) {
                this.apply_cancel_mark();
            }
            let (run, id) = this.run.as_mut().expect("a job was started above");
            let id = *id;
            let began = this.engine.stuck_epoch();
            let poll = {
                let _in_pool = Entered::new(pool, id);
                let _span = this.obs.enter();
                run.poll_run(cx)
            };
            match poll {
                Poll::Ready(_) => {}
                Poll::Pending => {
                    // The pool is stuck on nested waits: this may be the job picked to
                    // have its waits refused (one load; set only in that rare state).
                    if this.engine.is_stuck_marked() {
                        this.engine.after_stuck_poll(id, began);
                    }
                    if !this.registered {
                        this.registered = true;
                        let mut st = this.engine.lock();
                        if st.generation == this.generation {
                            st.slots[this.key].waker = Some(cx.waker().clone());
                        }
                        drop(st);
                        // A `cancel_all`, or an abort of this job, that read the wakers
                        // before ours was stored set its mark first (both under the lock):
                        // look again.
                        let aborted = this
                            .run
                            .as_ref()
                            .is_some_and(|(r, _)| r.aborted().is_some());
                        if aborted
                            || this.engine.cancel_before.load(Ordering::Acquire) > this.cancel_seen
                        {
                            cx.waker().wake_by_ref();
                        }
                    }
                    return Poll::Pending;
                }
            };
            let (run, _) = this.run.take().expect("the job polled above");
            budget -= 1;
            match this.finish(run, id, budget > 0) {
                After::Run => {}
                after => return this.stop(after, cx),
            }
        }
    }
}

impl<J: Job> Drop for Slot<J> {
    /// A slot dropped before it ended was dropped by its runtime: the runtime is shutting
    /// down (or was already gone when the slot was spawned). Its job is cancelled with
    /// [`CancelReason::RuntimeShutdown`], or queued again if it can be re-run.
    fn drop(&mut self) {
        if self.listed {
            // A drop announced by a poll that unwound between the two (the user's and the
            // observers' code there is called through `catch_unwind`: a bug of this crate)
            // is over now: the leftovers went with the unwinding.
            self.engine.end_drop(&self.polling);
        }
        if self.done || self.is_stale() {
            if J::RERUN {
                // Its span closes here, not where the last mark goes (maybe under the lock).
                self.polling.forget_obs();
            }
            return;
        }
        let engine = &self.engine;
        // End the run in our hands first (dropping it runs user code, outside the lock);
        // only then give its slot back, so the same task never runs twice at once.
        let mut run = self.run.take();
        if let Some((r, id)) = &mut run {
            if engine.reruns() {
                drop(run.take());
            } else {
                // A `cancel_all` or deadline that covered it first holds, as an abort does
                // (RELIABILITY.md, 332, 334).
                let mark = engine.cancel_before.load(Ordering::Acquire);
                let first = (*id < mark)
                    .then(|| {
                        let st = engine.lock();
                        (st.generation == self.generation)
                            .then(|| st.covering_reason(st.slots.get(self.key), *id, mark))
                            .flatten()
                    })
                    .flatten();
                r.cancel(first.unwrap_or(CancelReason::RuntimeShutdown));
            }
        }
        let mut next = self.next.take();
        let mut later = Deferred::default();
        let mut told = None;
        {
            let mut st = engine.lock();
            if st.generation != self.generation {
                return;
            }
            // An idle slot task not given a job (or retired) holds nothing; one given a job
            // is a claimer.
            let idle_unclaimed = self.idle.is_some()
                && (Engine::forget_idle(&mut st, self.key) || self.polling.is_retired());
            let claimer = self.claiming || (self.idle.is_some() && !idle_unclaimed);
            // A bound slot never polled: its job is still in its entry, unless an abort or
            // a `cancel_all` took it, with the entry (whose key may be another slot's now).
            let ours = !self.handed
                || st
                    .slots
                    .get(self.key)
                    .is_some_and(|e| e.polling.same(&self.polling));
            let mut entry = if ours {
                st.slots.try_remove(self.key)
            } else {
                None
            };
            if self.handed {
                next = entry.as_mut().and_then(|e| e.handed.take()).map(|q| *q);
            }
            // The reason of a `cancel_all` or deadline that covered the job this slot holds
            // (not its run, ended above), as the slot would have cancelled it: it ends so
            // (332, 334), neither lost nor queued again.
            let mark = engine.cancel_before.load(Ordering::Acquire);
            let held = next
                .as_ref()
                .map(|q| q.id)
                .or(entry.as_ref().map(|e| e.job));
            let covered = held
                .filter(|_| run.is_none())
                .and_then(|id| st.covering_reason(entry.as_ref(), id, mark));
            if let (Some(limits), Some(e)) = (&mut st.limits, &entry) {
                if e.job != u64::MAX {
                    // Its job had started as far as flow control is concerned.
                    limits.ended(&e.meta);
                }
            }
            let lost = Outcome::Cancelled(CancelReason::RuntimeShutdown);
            let holds_unit = if let Some((r, id)) = &mut run {
                // A future's run, cancelled above (unless an abort decided first).
                let (woken, decided) = r.publish_locked();
                if let Outcome::Cancelled(reason) = decided {
                    told = Some((reason, *id));
                }
                engine.run_ended(&mut st, *id, decided, &mut later);
                st.counts.lost += u64::from(decided == lost);
                later.woken.push(woken);
                if J::RERUN {
                    // A recipe's run (the last copy, maybe), dropped after the lock: a wait
                    // waits for that (finding 152).
                    Engine::begin_drop(&mut st, &self.polling, &mut self.listed);
                }
                true
            } else if let Some(q) = next {
                // It spent a start of the rate window when it was taken (its entry has
                // it: a bound slot's first job, or one this slot took for itself and kept
                // across a yield), and never ran (put back, or lost): given back.
                let charged = entry.as_ref().and_then(|e| e.charged);
                if let (Some(limits), Some(at)) = (&mut st.limits, charged) {
                    limits.unstarted(at);
                }
                let rehome = J::RERUN || (q.plain && st.runtimes.live_or_any(None).is_some());
                if let Some(reason) = covered {
                    // Counted as aborted if its handle aborted it first.
                    engine.drop_unrun(&mut st, q.job, q.id, reason, &mut later);
                    later.stamps.push(q.stamp);
                } else if rehome && q.job.aborted().is_none() {
                    // Its flow-control settings moved to the entry when it left the queue.
                    // Back to its place (its priority, then its submit order): it never
                    // started, as one put back for the rate window.
                    let meta = entry.map(|e| e.meta).unwrap_or_default();
                    later.wake.extend(engine.stranded_waker(&q.job));
                    st.queue.put_back(Queued { rt: ANY, meta, ..q });
                } else {
                    // Lost, or aborted (then counted so: `drop_unrun` reads the abort).
                    engine.lose(&mut st, q.job, q.id, &mut later);
                    // Dropped outside the lock: a span's drop calls the subscriber.
                    later.stamps.push(q.stamp);
                }
                true
            } else if let Some((id, copy, meta)) =
                entry.and_then(|e| e.copy.map(|c| (e.job, c, e.meta)))
            {
                if copy.aborted().is_some() || covered.is_some() {
                    // Aborted while it ran, or covered by a cancel: it ends here, as its
                    // handle said (or is told now), reported below as a run's end (in its
                    // span, with its run-time sample), or, if it never started, as a task
                    // cancelled before it started.
                    let reason = covered.unwrap_or(CancelReason::Aborted);
                    let reason = engine.end_copy(&mut st, copy, id, reason, &mut later, true);
                    told = Some((reason, id));
                } else {
                    // A re-runnable job interrupted mid-run: queued again, first, with its
                    // flow-control settings (its key, weight and priority still apply).
                    later.wake.extend(engine.stranded_waker(&copy));
                    Engine::requeue(&mut st, id, copy, meta, true);
                }
                true
            } else if claimer {
                // A claimer that never looked holds no slot: the reservations stay, for
                // the claimers `fill_free` schedules below.
                Engine::claimer_gone(&mut st, self.rt);
                false
            } else {
                false
            };
            if holds_unit {
                Engine::vacate(&mut st, &mut later);
            }
            engine.runtime_gone(&mut st, self.rt, &mut later);
            engine.fill_free(&mut st, None, &mut later);
            engine.changed(&st);
        }
        if let Some((reason, told_id)) = told {
            if std::mem::take(&mut self.unstarted) {
                // Never started (see `unstarted`): reported as cancelled while queued.
                engine.observer().cancelled(told_id, reason);
            } else {
                // The reason counted (an abort may have decided before the runtime's
                // end), reported in the task's span, as the end of a task in a slot's
                // poll is.
                engine
                    .observer()
                    .ended_in(&self.obs, Outcome::Cancelled(reason));
            }
        }
        self.obs = Running::none();
        if J::RERUN {
            self.polling.forget_obs();
        }
        drop(run);
        if J::RERUN && self.listed {
            engine.end_drop(&self.polling);
        }
        engine.run_deferred(&mut later);
    }
}
