//! Ending jobs: a job's outcome counted (with its handle's result, in one critical
//! section), aborts of queued and running jobs, jobs lost with their runtime, and the
//! work done after the lock is released ([`Deferred`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::CancelReason;
use crate::sync;
use crate::task::unqueue::{self, Unqueue};
use crate::task::{wake_quietly, BoxRun, Outcome, RUNNER_FAR};
use crate::unwind;

use super::graves::{Batch, Grave, Kept};
use super::job::Job;
use super::runtimes::{RtRef, ANY};
use super::{drop_in_task, reap_timer, runtimes, Deferred, Engine, State, StateGuard};

use super::rate::rate_timer;

impl<J: Job> Engine<J> {
    /// Under the lock: a job that never started and never will (its runtime is gone) is
    /// counted as cancelled and lost; its handle is told after the lock is released.
    pub(super) fn lose(&self, st: &mut State<J>, job: J, id: u64, later: &mut Deferred<J>) {
        self.drop_unrun(st, job, id, CancelReason::RuntimeShutdown, later);
    }

    /// Under the lock: a copy whose task was aborted (`reason` [`CancelReason::Aborted`])
    /// or covered by a `cancel_all` (its reason) while a slot held it, not polled since,
    /// ends here, unrun, as its handle says or is about to: it waits on nothing any more
    /// (as `run_ended` would record), and the other waits are looked at again. With
    /// `reported`, the caller reports the end itself (a slot dropped with its runtime: in
    /// the task's span, with its run-time sample, if the task had started), and no `task
    /// cancelled` event is emitted for it here. Returns the reason counted (an abort's, if
    /// one decided first).
    pub(super) fn end_copy(
        &self,
        st: &mut State<J>,
        copy: J,
        id: u64,
        reason: CancelReason,
        later: &mut Deferred<J>,
        reported: bool,
    ) -> CancelReason {
        if st.waiting_on_own.remove(&id).is_some() {
            later.recheck_waits = true;
        }
        self.drop_unrun_as(st, copy, id, reason, later, reported)
    }

    /// Under the lock: a job that never started is dropped unrun for `reason`, counted as
    /// such (as aborted if its handle aborted it first: that decided its outcome; a
    /// runtime's end then loses nothing); its handle is told after the lock is released.
    pub(super) fn drop_unrun(
        &self,
        st: &mut State<J>,
        job: J,
        id: u64,
        reason: CancelReason,
        later: &mut Deferred<J>,
    ) {
        self.drop_unrun_as(st, job, id, reason, later, false);
    }

    /// [`drop_unrun`](Self::drop_unrun); with `reported`, the caller reports the end
    /// (no `task cancelled` event here). Returns the reason counted.
    fn drop_unrun_as(
        &self,
        st: &mut State<J>,
        job: J,
        id: u64,
        reason: CancelReason,
        later: &mut Deferred<J>,
        reported: bool,
    ) -> CancelReason {
        let reason = job.aborted().unwrap_or(reason);
        self.count_end(st, Outcome::Cancelled(reason));
        st.counts.lost += u64::from(reason == CancelReason::RuntimeShutdown);
        // Its place is free at once (its handle is told after the lock).
        st.admission.give_back(1, &mut later.granted);
        later
            .cancels
            .get_or_insert_with(Box::default)
            .push((job, id, reason, reported));
        reason
    }

    /// Under the lock: the key of the slot running job `id`, if one does: the slot the
    /// job was given to (`runner`, set by `Job::set_runner` under this lock), not searched
    /// for among all the slots (which made aborting many running tasks quadratic), but for
    /// a key too large to keep (`RUNNER_FAR`: never, in practice, each slot being a tokio
    /// task). A queued job (`RUNNER_NONE`) finds none.
    fn runner_slot(st: &State<J>, runner: &sync::AtomicU32, id: u64) -> Option<usize> {
        let key = runner.load(sync::Ordering::Relaxed);
        if key == RUNNER_FAR {
            return st
                .slots
                .iter()
                .find(|(_, e)| e.job == id)
                .map(|(key, _)| key);
        }
        let key = key as usize;
        st.slots
            .get(key)
            .is_some_and(|e| e.job == id)
            .then_some(key)
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
    pub(super) fn abort_queued(self: &Arc<Self>, id: u64, priority: i32, runner: &sync::AtomicU32) {
        let mut later = Deferred::default();
        let (job, id, reason, handle) = {
            let mut st = self.lock();
            // A job a slot has taken (running, or about to) is not searched for in the
            // queue, which may be long. Its slot task is woken, if it stored its waker: a
            // slot that stores it later looks at the abort flag after that (the flag was
            // set before this lock was taken). The slot is the one the job was given to,
            // if it still runs it (`runner_slot`).
            // One handed over to a slot task that has not taken it yet (finding 400) leaves
            // as a queued one does: that slot task may not be polled for long.
            let running = Self::runner_slot(&st, runner, id);
            let handed = running.and_then(|key| Self::take_handed(&mut st, key, &mut later));
            if let Some(e) = running
                .filter(|_| handed.is_none())
                .map(|key| &mut st.slots[key])
            {
                e.aborted = true;
                let waker = e.waker.clone();
                drop(st);
                if let Some(waker) = waker {
                    waker.wake();
                }
                return;
            }
            let Some(q) = handed.or_else(|| st.queue.remove_seq(id, priority)) else {
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
            // A heavy job at the head holds back the lighter ones behind it: its slot
            // tasks go where the job that starts next runs (`wake_rt` with no runtime),
            // not to the caller's, which may not be driven (an abort under `enter()`, or
            // from a `spawn_blocking` thread of a runtime no one drives). An abort lets
            // jobs start, as a job's end does: if the claimers on their way are all on
            // other runtimes, which may not be driven (the claimer of a job handed to a
            // slot task on a runtime not driven stays counted there: finding 405), one
            // more goes to the caller's runtime if the pool knows it, else to that of the
            // job that starts next; after the exit's take-over, never to a runtime the
            // exit froze (only the job's runtime is looked at then, and `held_job_rt` is
            // none: a review of 405's fix).
            self.fill_free(&mut st, None, &mut later);
            let here = tokio::runtime::Handle::try_current()
                .ok()
                .and_then(|h| st.runtimes.known(&h))
                .filter(|_| !st.taken_over);
            if let Some(rt) = here.or_else(|| Self::held_job_rt(&st)) {
                self.claim_here(&mut st, rt, &mut later);
            }
            self.changed(&st);
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

    /// Under the lock: counts a job's end (the waits are told separately).
    pub(super) fn count_end(&self, st: &mut State<J>, outcome: Outcome) {
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
    pub(super) fn run_ended(
        &self,
        st: &mut State<J>,
        id: u64,
        outcome: Outcome,
        later: &mut Deferred<J>,
    ) {
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
    pub(super) fn wait_end(st: &mut State<J>, id: u64, later: &mut Deferred<J>) {
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
    ///
    /// [`graves`]: super::graves
    pub(super) fn bury(
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
    ///
    /// [`graves`]: super::graves
    pub(super) fn reap(st: &mut State<J>, later: &mut Deferred<J>) {
        if let Some(batch) = st.graves.take_all() {
            later.graves.push(batch);
        }
    }

    /// Under the lock, for a slot whose job ended with nothing to run next: frees the
    /// graves if the pool has nothing queued or running.
    pub(super) fn reap_idle(st: &mut State<J>, later: &mut Deferred<J>) {
        if st.running == 0 && st.queue.len() == 0 {
            Self::reap(st, later);
        }
    }

    /// Outside the lock: drops `batch`, then tells the waits.
    pub(super) fn drop_batch(&self, batch: Batch<J>) {
        let ticket = batch.drop_all();
        self.batch_dropped(self.lock(), ticket);
    }

    /// With the lock `st`: the batch with `ticket` was dropped; releases the lock and
    /// tells the waits.
    pub(super) fn batch_dropped(&self, mut st: StateGuard<'_, J>, ticket: u64) {
        st.graves.done(ticket);
        drop(st);
        // Also a `wait()` with no task to wait for waits for batches (it has no entry in
        // `waits`).
        self.changed.notify_waiters();
    }

    /// The timer armed when the first grave was kept fired, or was dropped with its
    /// runtime: frees what is kept, on this thread.
    pub(super) fn reap_timer_fired(&self) {
        let batch = self.lock().graves.timer_fired();
        if let Some(batch) = batch {
            self.drop_batch(batch);
        }
    }

    /// Does what a critical section left to do, outside the lock.
    ///
    /// Most of it is usually empty (a job's end leaves one handle to tell and one place
    /// to give back): each part is looked at before it is walked.
    pub(super) fn run_deferred(self: &Arc<Self>, later: &mut Deferred<J>) {
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
            for (job, id, reason, reported) in *cancels {
                // Tell the handle (dropping the job runs user code) before the waits hear
                // of it, so a wait never returns while a handle it covers is unresolved.
                unwind::quietly(|| job.cancel(reason));
                if !reported {
                    self.observer.cancelled(id, reason);
                }
                ids.push(id);
            }
            let mut st = self.lock();
            for id in ids {
                Self::wait_end(&mut st, id, later);
            }
            self.changed(&st);
        }
        if !later.spawns.is_empty() {
            for (handle, slot) in std::mem::take(&mut later.spawns) {
                slot.spawn_on(&handle);
            }
        }
        if let Some(mut armed) = later.rate_timers.take() {
            armed.take_each(|(handle, rt, at)| {
                let timer = rate_timer(Arc::clone(self), handle.clone(), rt, at);
                drop(handle.spawn(timer));
            });
        }
        if std::mem::take(&mut later.changed) {
            self.changed.notify_waiters();
        }
        self.look_for_stuck_waits(std::mem::take(&mut later.recheck_waits));
    }
}

impl<J: Job> Unqueue for Engine<J> {
    fn aborted(self: Arc<Self>, job: u64, priority: i32, runner: &sync::AtomicU32) {
        self.abort_queued(job, priority, runner);
    }

    fn covering(&self, job: u64, runner: &sync::AtomicU32) -> Option<CancelReason> {
        // One load unless a `cancel_all` or deadline came after the task was accepted.
        if job >= self.cancel_before.load(Ordering::Acquire) {
            return None;
        }
        let st = self.lock();
        // Written under this lock.
        let mark = self.cancel_before.load(Ordering::Relaxed);
        let entry = Self::runner_slot(&st, runner, job).map(|key| &st.slots[key]);
        st.covering_reason(entry, job, mark)
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
pub(super) struct Unqueued<J: Job>(Option<(J, CancelReason)>);

impl<J: Job> Drop for Unqueued<J> {
    fn drop(&mut self) {
        if let Some((job, reason)) = self.0.take() {
            unqueue::run_flat(Box::new(move || {
                unwind::quietly(|| job.cancel(reason));
            }));
        }
    }
}
