//! Nested waits: a job awaiting a handle of its own pool is counted, and when every slot
//! would wait on the pool for ever (a shrink, or too many nested waits), one wait is
//! refused with `WouldDeadlock`.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::CancelReason;
use crate::task::context::{self, Probe};
use crate::task::wake_quietly;

use super::job::Job;
use super::{Deferred, Engine, SlotEntry, State};

impl<J: Job> Engine<J> {
    /// After every change: looks for a deadlock of nested waits if `recheck` asks for it
    /// or while the pool is marked stuck (every change looks again then: the mark is
    /// cleared as soon as the pool is not stuck; one load otherwise).
    #[inline]
    pub(super) fn look_for_stuck_waits(self: &Arc<Self>, recheck: bool) {
        if recheck || self.is_stuck_marked() {
            self.break_nested_deadlock();
        }
    }

    /// Under the lock: every slot the pool may have is taken by a job that waits on tasks
    /// of the pool, each on one that has not started (or that waits itself): nothing can
    /// progress. Returns each waiting job with its awaited tasks still queued and whether
    /// it also awaits a waiting job; `None` if the pool is not stuck so. Also during the
    /// exit's run, but not while the exit waits for runs busy in a poll elsewhere (they
    /// hold slots they give back once settled; until 411, never during the exit: a
    /// deadlock a shrink closed then was never broken, and the exit hung).
    pub(super) fn stuck_waits(st: &mut State<J>) -> Option<Vec<(u64, Vec<u64>, bool)>> {
        let waiting = &st.waiting_on_own;
        if waiting.is_empty()
            || !st.awaiting_poll.is_empty()
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
    pub(super) fn every_waiter_stuck(st: &mut State<J>) -> Option<Vec<(u64, Vec<u64>, bool)>> {
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
    pub(super) fn break_nested_deadlock(self: &Arc<Self>) {
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
                    self.changed(st);
                }
            }
            // After the cancels (their handles end their counted waits): look again.
            later.recheck_waits = true;
        }
        self.run_deferred(&mut later);
    }

    /// Under the lock: the job of this pool whose poll is running on this thread (its slot
    /// holds it, so it has not ended), if any.
    pub(super) fn calling_job(st: &State<J>, pool: u32) -> Option<u64> {
        context::current_task(pool).filter(|&id| Self::slot_of(st, id).is_some())
    }

    /// Under the lock: the slot that holds job `id` (running, or about to), if any. A scan
    /// of the slots: only for paths off a job's own (aborts, waits, the deadlock breaker).
    pub(super) fn slot_of(st: &State<J>, id: u64) -> Option<&SlotEntry<J>> {
        st.slots.iter().map(|(_, e)| e).find(|e| e.job == id)
    }
}

impl<J: Job> Probe for Engine<J> {
    fn start_waiting(&self, waiter: u64, awaited: u64) -> Option<bool> {
        let mut st = self.lock();
        let st = &mut *st;
        if st.taken_over
            && Self::slot_of(st, waiter).is_none()
            && !st.awaiting_poll.iter().any(|&(job, ..)| job == waiter)
        {
            // A run the exit gave up (busy in one poll past its deadline: settled, its
            // task run again or ended, while that poll goes on) holds no slot: counted, it
            // would be a slot that waits, and the deadlock breaker could refuse a wait of
            // the pool's running tasks that would have gone on (finding 412).
            return None;
        }
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
        let refuse = st.queue.any(|q| q.id == awaited)
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
