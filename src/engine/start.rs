//! Starting jobs: a slot whose job ended settles it and takes the next; a submit that
//! finds a free slot reserves it and sends a claimer (an idle slot task woken, or a new
//! one spawned on the job's runtime); reservations, start-time limits and resizes.

use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::observe::Stamp;

use super::admission::MAX_ROOM;
use super::job::Job;
use super::limits::Meta;
use super::marks::Polling;
use super::runtimes::{self, RtRef, ANY};
use super::slot::Slot;
use super::{Deferred, Engine, Queued, SlotEntry, State, CLAIMERS_MAX};

impl<J: Job> Engine<J> {
    /// [`run_deferred`](Self::run_deferred) for a record made for one call (a slot
    /// task's, held in a `ManuallyDrop` as [`finish`](Self::finish)'s), then its drop only
    /// if it owns something: mostly it owns nothing by then (each list held its one item in
    /// place, and the walk took it), and the drop of its empty lists would cost about 60
    /// instructions per job (the whole slot path of a job costs about 480). Inlined (a
    /// slot calls it once per job): as a call of its own it cost 21 to 24 instructions
    /// per job more (callgrind, current-thread, 2026-12-07).
    #[inline]
    pub(super) fn settle(self: &Arc<Self>, later: &mut ManuallyDrop<Deferred<J>>) {
        self.run_deferred(later);
        if !Self::walked_bare(later) {
            // Its buffers are dropped; an empty record, which owns nothing, is left.
            drop(std::mem::take(&mut **later));
        }
    }

    /// For a record [`run_deferred`](Self::run_deferred) has walked: whether it owns
    /// nothing ([`Deferred::untouched`], asked only of what the walk leaves behind: the
    /// buffers of lists that spilled, the graves' and the stamps'). The walk takes every
    /// other field (`take`, `mem::take`), so those need no look: 12 to 13 instructions
    /// fewer per job than `untouched` (callgrind, current-thread, 2026-12-07). Every field
    /// is named, so that one added later fails to compile here until it is placed in one
    /// group or the other; a debug build checks the two agree.
    #[inline(always)]
    fn walked_bare(later: &Deferred<J>) -> bool {
        let Deferred {
            woken,
            wake,
            granted,
            stamps,
            graves,
            // Emptied by the walk: taken, or (`spawns`) replaced by a new `Vec` if it
            // held any.
            cancels: _,
            spawns: _,
            changed: _,
            rate_timers: _,
            recheck_waits: _,
            reap_timer: _,
        } = later;
        let bare = woken.untouched()
            && wake.untouched()
            && granted.untouched()
            && stamps.untouched()
            && graves.capacity() == 0;
        debug_assert_eq!(bare, later.untouched(), "a walked record's fields");
        bare
    }

    /// [`run_deferred`](Self::run_deferred), then drops the record; for a record made for
    /// one critical section, held in a `ManuallyDrop` so that the end of its scope does
    /// nothing. One left untouched (see [`Deferred::untouched`]) is neither walked nor
    /// dropped: it owns nothing, and the walk and the drop of its empty lists cost about
    /// 100 instructions per submit (BENCHMARKS.md, "2026-12-03, late morning"); the check
    /// `run_deferred` ends with is still made.
    ///
    /// The check inline, the walk apart ([`finish_touched`](Self::finish_touched)): most
    /// submits leave the record untouched, and as one call `finish` cost them its entry
    /// and exit, 18 to 19 instructions per job of each pool on a current-thread runtime
    /// (callgrind, `bench/instructions.sh`, 2026-12-07).
    #[inline]
    pub(super) fn finish(self: &Arc<Self>, later: &mut ManuallyDrop<Deferred<J>>) {
        if later.untouched() {
            // Untouched: no recheck was asked for.
            self.look_for_stuck_waits(false);
        } else {
            self.finish_touched(later);
        }
    }

    /// [`finish`](Self::finish) of a record something was deferred in.
    #[inline(never)]
    fn finish_touched(self: &Arc<Self>, later: &mut ManuallyDrop<Deferred<J>>) {
        self.run_deferred(later);
        // What its lists still own (their buffers) is dropped; an empty record, which
        // owns nothing, is left in its place.
        drop(std::mem::take(&mut **later));
    }

    /// Under the lock: the caller holds a slot (a unit of `running`) on runtime `rt` and
    /// wants the next queued job. Puts it in `next` (empty when called) if it is for `rt`
    /// (the entry `key` now names it); otherwise the slot is given up, or handed with the
    /// job to a new slot on the job's runtime, and `next` is left empty (the entry is
    /// removed).
    ///
    /// The job is written straight into the slot's `next`, not returned: returned, it was
    /// copied once more on its way there (48 bytes for a future).
    pub(super) fn take_next(
        self: &Arc<Self>,
        st: &mut State<J>,
        rt: RtRef,
        key: usize,
        later: &mut Deferred<J>,
        next: &mut Option<Queued<J>>,
    ) {
        debug_assert!(next.is_none(), "a slot takes a job with none in hand");
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
            // Taken straight into `next` (a pool without limits takes the head here, not
            // through `pop_startable`'s pair): moved out of the queue once, where the slot
            // runs it from; each copy on the way cost 48 bytes for a future.
            let charged = if st.limits.is_none() {
                *next = st.queue.pop();
                None
            } else {
                match self.pop_startable(st, rt, later) {
                    Some((q, charged)) => {
                        *next = Some(q);
                        charged
                    }
                    None => None,
                }
            };
            let Some(q) = next.as_mut() else {
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
                let q = next.take().expect("taken above");
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
                entry.cancelled = None;
                entry.copy = copy;
                entry.meta = meta;
                entry.charged = charged;
                return;
            };
            // Hand the slot and the job over to the job's runtime (if it has shut down
            // meanwhile, it drops the new slot at once, whose `Drop` deals with the job).
            // The job waits in the new slot's entry until that slot task's first poll: a
            // runtime alive but not driven may not poll it for long, and an abort, a
            // `cancel_all` or the exit meanwhile take it from there (finding 400).
            let q = next.take().expect("taken above");
            st.slots.remove(key);
            let polling = Polling::default();
            let (id, rt) = (q.id, q.rt);
            let new_key = st.slots.vacant_key();
            q.job.set_runner(new_key);
            st.slots.insert(SlotEntry {
                waker: None,
                job: id,
                copy,
                meta,
                charged,
                polling: polling.clone(),
                aborted: false,
                cancelled: None,
                handed: Some(Box::new(q)),
            });
            let slot = Slot::bound(Arc::clone(self), new_key, st.generation, rt, polling);
            later.spawns.push((handle, slot));
            return;
        }
        st.slots.remove(key);
        Self::vacate(st, later);
    }

    /// Under the lock: gives every free slot to a queued job (a *reservation*: the job
    /// counts as running), then makes sure enough slot tasks on runtime `rt` (or the home
    /// runtime) will take reserved jobs: up to [`CLAIMERS_MAX`] idle slot tasks woken or
    /// new ones spawned. Reserved jobs are taken from the front of the queue, so jobs
    /// start in queue order.
    ///
    /// Starts nothing while the exit holds every pool's starts until it has taken them
    /// all over (`exit_start` lifts the hold): a submit or a rate tick from a thread that
    /// goes on queues its job, and the exit starts it. Runs the exit waits for, still
    /// inside a poll on another thread, hold only their own slots, keys and weights.
    ///
    /// Decided inline when there is nothing to do, as in a busy pool's steady state (every
    /// slot running, nothing reserved, no worker to add): the call's entry and exit alone
    /// cost about 38 instructions, and it is made about twice per job (BENCHMARKS.md,
    /// "2026-12-06, from 23:39 UTC").
    #[inline]
    pub(super) fn fill_free(
        self: &Arc<Self>,
        st: &mut State<J>,
        rt: Option<RtRef>,
        later: &mut Deferred<J>,
    ) {
        if Self::may_fill(st) {
            self.fill_free_now(st, rt, later);
        }
    }

    /// Whether [`fill_free`](Self::fill_free) may do anything: a slot to reserve, a
    /// reservation that wants a claimer, one that may want a claimer on the caller's
    /// runtime (the pool knows several), or (elastic) a worker to add. `false` implies
    /// that [`fill`](Self::fill) returns at `wants_slots` having grown nothing, and that
    /// [`claim_here`](Self::claim_here) adds no claimer (it needs a reservation and
    /// several runtimes). A slot that yields with its place kept as a reservation has
    /// itself as the claimer: on one runtime, the submits and job ends until it comes
    /// back (about one per job) have nothing to do here.
    #[inline]
    pub(super) fn may_fill(st: &State<J>) -> bool {
        Self::has_room(st)
            || Self::needs_claimers(st)
            || (st.reserved > 0 && st.runtimes.is_multi())
            || (st.elastic.is_some()
                && st.queue.len() > st.limit.saturating_sub(st.running)
                && st.limit < st.max_concurrency)
    }

    #[inline(never)]
    pub(super) fn fill_free_now(
        self: &Arc<Self>,
        st: &mut State<J>,
        rt: Option<RtRef>,
        later: &mut Deferred<J>,
    ) {
        self.fill(st, rt, later);
        if let Some(rt) = rt {
            self.claim_here(st, rt, later);
        }
    }

    /// [`fill_free`](Self::fill_free) without the claimer for the caller's runtime.
    pub(super) fn fill(
        self: &Arc<Self>,
        st: &mut State<J>,
        rt: Option<RtRef>,
        later: &mut Deferred<J>,
    ) {
        if st.starts_held() {
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
                if tokens == 0 {
                    if let Some(at) = limits.rate_ready_at(now).filter(|_| limits.rate_reopens()) {
                        if !st.rate_timers.any() {
                            // On a runtime that runs it without anyone driving it, if the
                            // pool knows one (see `driven_handle`).
                            if let Some(timer) =
                                st.runtimes.timer_handle(Some(timer_rt.unwrap_or(rt)))
                            {
                                st.rate_timers.arm(&st.runtimes, timer, at, later);
                            }
                        }
                        st.rate_timers
                            .arm_for_held(&st.runtimes, timer_rt, at, later);
                        if st.rate_timers.only_on_others_of(&st.runtimes, rt) {
                            // Every armed timer (also one just armed above, on the
                            // runtime of the job that starts next) is on another
                            // current-thread runtime, which may be driven only for a
                            // moment: one more here, on the runtime being driven now
                            // (RELIABILITY.md, 317).
                            let timer = st.runtimes.known_handle(rt);
                            st.rate_timers.arm(&st.runtimes, timer, at, later);
                        }
                    }
                }
                // At the exit take-over, a full window that never reopens
                // (`Duration::MAX`) holds its queued jobs back for ever: the exit would
                // wait for them for good, so they are cancelled instead.
                never =
                    st.taken_over && limits.rate_ready_at(now).is_some() && !limits.rate_reopens();
                let startable =
                    limits.count_startable(&mut st.queue, st.reserved + want, Queued::meta);
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
    pub(super) fn add_claimer(
        self: &Arc<Self>,
        st: &mut State<J>,
        rt: RtRef,
        later: &mut Deferred<J>,
    ) {
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
    /// never (the claimers there cover the reservations), nor once the exit has taken the
    /// pool over (its runtime runs every job then: see `wake_rt`).
    #[inline]
    pub(super) fn claim_here(
        self: &Arc<Self>,
        st: &mut State<J>,
        rt: RtRef,
        later: &mut Deferred<J>,
    ) {
        if st.reserved > 0
            && st.runtimes.is_multi()
            && !st.taken_over
            && !st.starts_held()
            && st.runtimes.claimers_on(rt) == 0
            && st.runtimes.is_alive(rt)
        {
            self.add_claimer(st, rt, later);
        }
    }

    /// Under the lock: a claimer is scheduled on runtime `rt`.
    pub(super) fn claimer_added(st: &mut State<J>, rt: RtRef) {
        st.claimers += 1;
        st.runtimes.claimer_added(rt);
    }

    /// Under the lock: a claimer of runtime `rt` came, or was dropped before it did.
    pub(super) fn claimer_gone(st: &mut State<J>, rt: RtRef) {
        st.claimers -= 1;
        st.runtimes.claimer_gone(rt);
    }

    /// Under the lock: the next queued job that flow control lets start now (the head,
    /// for a pool without limits), recorded as started. Arms the rate timer when the rate
    /// window is what holds jobs back.
    pub(super) fn pop_startable(
        &self,
        st: &mut State<J>,
        rt: RtRef,
        later: &mut Deferred<J>,
    ) -> Option<(Queued<J>, Option<Instant>)> {
        if st.limits.is_none() {
            return st.queue.pop().map(|q| (q, None));
        }
        // The timer, if one is armed, goes to the held job's runtime (see `held_job_rt`).
        let held_rt = Self::held_job_rt(st);
        let timer_rt = held_rt.unwrap_or(rt);
        let State {
            queue,
            limits,
            rate_timers,
            runtimes,
            ..
        } = st;
        let limits = limits.as_deref_mut().expect("checked above");
        let now = Instant::now();
        if let Some(at) = limits.rate_ready_at(now) {
            if limits.rate_reopens() {
                if !rate_timers.any() {
                    if let Some(handle) = runtimes.timer_handle(Some(timer_rt)) {
                        rate_timers.arm(runtimes, handle, at, later);
                    }
                }
                // And one of its own for the held job's current-thread runtime.
                rate_timers.arm_for_held(runtimes, held_rt, at, later);
            }
            return None;
        }
        let epoch = queue.epoch();
        let q = {
            let mut pick = limits.picker();
            queue.pop_startable(limits.key_rooms(), |q| pick(&q.meta))?
        };
        // Taken from what the last count counted (see `Limits::count_startable`).
        let counted = queue.epoch() == epoch;
        let charged = limits.started(&q.meta, now, q.job.aborted().is_none(), counted);
        Some((q, charged))
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
            // At most as many ended jobs kept as the pool now holds (those kept beyond
            // it go with the armed timer or the next job's end, not on this thread: its
            // caller may hold a lock their `Drop`s take).
            st.graves.resize(n.saturating_add(self.max_queue_size));
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
                    if idle_after > idle_before {
                        el.added_n(idle_after - idle_before);
                    } else {
                        el.busy_n(idle_before - idle_after); // retired workers' idle entries go
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
            // driven now; from a plain thread or a runtime the pool does not know, on the
            // runtime of the queue's head, or the home (see `wake_rt`).
            let rt = current.as_ref().and_then(|h| st.runtimes.known(h));
            let chosen = Self::wake_rt(&st, rt);
            self.fill_free(&mut st, rt, &mut later);
            if let Some(chosen) = chosen.filter(|&c| {
                st.runtimes
                    .handle(c)
                    .is_some_and(|h| !runtimes::is_multi_thread(h))
            }) {
                // A current-thread runtime may not be driven right after the call (the
                // caller's, in a short `block_on`; the head's, outside one): the jobs it
                // let start would wait in slot tasks there. The other runtimes of the jobs
                // it let start get claimers too; whichever comes first takes a job
                // (RELIABILITY.md, 337 and 339).
                self.claim_on_reserved_jobs_runtimes(&mut st, chosen, &mut later);
            }
            self.changed(&st);
        }
        self.run_deferred(&mut later);
        self.size_watchers.wake_all();
    }

    /// Under the lock, after [`fill_free`](Self::fill_free) on runtime `rt` (a
    /// current-thread one, which may not be driven after): claimers also on the other live
    /// runtimes of the first [`CLAIMERS_MAX`] queued jobs at most, in queue order (the
    /// reserved ones, but for keys or weights, which may let later jobs start first): as
    /// many as the reservations on the first such runtime, at least one on each other (a
    /// claimer that takes its job keeps a successor there, see `claim_here`), less those
    /// already on their way. Jobs that may run on any runtime, with no other runtime's job
    /// among them, get one on a live multi-thread runtime other than `rt`, if the pool
    /// knows one. Whichever claimer comes first takes a job (RELIABILITY.md, 337). None
    /// once the exit has taken the pool over (see `wake_rt`).
    fn claim_on_reserved_jobs_runtimes(
        self: &Arc<Self>,
        st: &mut State<J>,
        rt: RtRef,
        later: &mut Deferred<J>,
    ) {
        if st.reserved == 0 || st.starts_held() || st.taken_over {
            return;
        }
        let most = st.reserved.min(CLAIMERS_MAX);
        let mut others: Vec<RtRef> = Vec::new(); // a resize's, on a current-thread runtime: rare
        let mut any = false;
        {
            let runtimes = &st.runtimes;
            st.queue.count_unparked(most, |q| {
                if q.rt == ANY {
                    any = true;
                } else if q.rt != rt && !others.contains(&q.rt) && runtimes.is_alive(q.rt) {
                    others.push(q.rt);
                }
                true
            });
        }
        if others.is_empty() && any {
            if let Some(multi) = st.runtimes.live_multi_thread_other_than(rt) {
                others.push(multi);
            }
        }
        for (i, next) in others.into_iter().enumerate() {
            let wanted = if i == 0 { most } else { 1 };
            for _ in 0..wanted.saturating_sub(st.runtimes.claimers_on(next)) {
                self.add_claimer(st, next, later);
            }
        }
    }

    /// A waker slot told whenever [`set_max_concurrency`](Self::set_max_concurrency)
    /// changes the pool's size, and when the pool closes (until it is dropped).
    pub(crate) fn watch_size(&self) -> super::watchers::SizeWatch {
        self.size_watchers.watch()
    }

    /// Under the lock: jobs left the queue without their reservations; give the slots
    /// reserved beyond the queued jobs that may start now back (their tasks exit when they
    /// find none). Not simply beyond the queue's length: the jobs left may be held back
    /// by their keys or weights.
    pub(super) fn clamp_reserved(st: &mut State<J>, later: &mut Deferred<J>) {
        Self::clamp_reserved_to_startable(st, later);
    }

    /// Under the lock: gives back the reservations beyond `most`.
    pub(super) fn clamp_reserved_to(st: &mut State<J>, most: usize, later: &mut Deferred<J>) {
        while st.reserved > most {
            st.reserved -= 1;
            Self::vacate(st, later);
        }
    }

    /// Under the lock, for an elastic pool: adds workers while queued jobs outnumber idle
    /// ones, up to `max_concurrency`. Done wherever slots are given out (a submit, a job's
    /// end, a rate window reopening), so a job queued while workers retired still gets one.
    pub(super) fn grow(st: &mut State<J>) {
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
    /// timer left there would hold the jobs of a running runtime back. Once the exit has
    /// taken the pool over, the home (the exit's runtime) whatever `rt` is: the caller may
    /// be a thread of a runtime the exit froze (finding 407).
    pub(super) fn wake_rt(st: &State<J>, rt: Option<RtRef>) -> Option<RtRef> {
        rt.filter(|&rt| !st.taken_over && st.runtimes.is_alive(rt))
            .or_else(|| Self::held_job_rt(st))
            .or_else(|| st.runtimes.live_or_any(None))
    }

    /// Under the lock: the live runtime of the job that starts next, if it has its own.
    /// A timer that lets it start is armed there, not on the runtime that noticed it must
    /// wait (which may stop being driven right after); but on a multi-thread runtime the
    /// pool knows if that one is current-thread ([`Runtimes::driven_handle`]): one that is
    /// left undriven would hold the timer, and every job behind it, until driven again.
    ///
    /// [`Runtimes::driven_handle`]: super::runtimes::Runtimes::driven_handle
    ///
    /// None once the exit has taken the pool over: every job runs on the exit's runtime
    /// then, and the runtime a job was submitted from is frozen by the exit, though alive
    /// (its only worker may be the thread in `process::exit`), so a timer there never fires
    /// (finding 402).
    pub(super) fn held_job_rt(st: &State<J>) -> Option<RtRef> {
        if st.taken_over {
            return None;
        }
        st.queue
            .first()
            .map(|q| q.rt)
            .filter(|&rt| rt != ANY && st.runtimes.is_alive(rt))
    }

    /// Under the lock: whether a queued job without a reservation could have a slot.
    pub(super) fn has_room(st: &State<J>) -> bool {
        st.running < st.limit && st.queue.len() > st.reserved
    }

    /// Under the lock: whether `fill_free` has anything to do (reserve, or schedule
    /// claimers).
    pub(super) fn wants_slots(st: &State<J>) -> bool {
        Self::has_room(st) || Self::needs_claimers(st)
    }

    /// Under the lock: whether a queued job without a reservation may start now: its key,
    /// its weight and the rate window allow it, the reserved jobs counted as started (as
    /// [`fill`](Self::fill) reserves). For a slot that keeps its unit as a reservation.
    pub(super) fn unreserved_may_start(st: &mut State<J>) -> bool {
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
                limits.rate_tokens(Instant::now()) > *reserved
                    && limits.count_startable(queue, *reserved + 1, Queued::meta) > *reserved
            }
        }
    }

    /// Under the lock: whether reserved jobs wait for more claimers than are scheduled.
    pub(super) fn needs_claimers(st: &State<J>) -> bool {
        st.claimers < st.reserved.min(CLAIMERS_MAX)
    }

    /// Under the lock, for a slot whose job just ended and that wants another: takes over
    /// a reserved job (`true`; the slot's own unit is given back, it now holds the
    /// reservation's), saving a claimer's wake-up. Also one a claimer is on its way to:
    /// that claimer then finds none and goes idle, and a claimer held up behind a job
    /// that blocks its thread holds up no reserved job.
    pub(super) fn take_reservation(st: &mut State<J>, later: &mut Deferred<J>) -> bool {
        if st.reserved == 0 {
            return false;
        }
        st.reserved -= 1;
        Self::vacate(st, later);
        true
    }

    /// Under the lock: job `id` queued again for any runtime, with its flow-control
    /// settings (its span starts without a parent: the subscriber is not asked for one
    /// under the lock). An interrupted run (`started`) goes first; a job taken and never
    /// started goes back to its place (its priority, then its submit order), as one put
    /// back does.
    pub(super) fn requeue(st: &mut State<J>, id: u64, job: J, meta: Meta, started: bool) {
        // Its run is over: waits it counted no longer make it a waiting job, also those
        // left to handles it handed out of the run (which end them only when their task
        // ends or they are dropped), as `run_ended` does. Else the queued job would count
        // as a slot that waits, and its re-run's first wait would be added to that count
        // unchecked (see `Probe::start_waiting`).
        st.waiting_on_own.remove(&id);
        if let Some(limits) = &mut st.limits {
            limits.rerun_queued();
        }
        let again = Queued {
            job,
            id,
            rt: ANY,
            plain: false,
            meta,
            stamp: Stamp::requeued(),
        };
        if started {
            st.queue.push_front(again);
        } else {
            st.queue.put_back(again);
        }
    }

    /// Under the lock: the job handed over to slot `key` (see `SlotEntry::handed`), if its
    /// slot task has not taken it yet, taken out with the entry, for the caller to end
    /// unrun: it never started, so its slot, its key and weight and the start of the rate
    /// window it was charged are given back now. Its slot task, when polled or dropped,
    /// finds its entry gone and does nothing more (finding 400).
    pub(super) fn take_handed(
        st: &mut State<J>,
        key: usize,
        later: &mut Deferred<J>,
    ) -> Option<Queued<J>> {
        if st.slots.get(key).is_none_or(|e| e.handed.is_none()) {
            return None;
        }
        let mut entry = st.slots.remove(key);
        let q = entry.handed.take().expect("looked at above");
        if let Some(limits) = &mut st.limits {
            limits.ended(&entry.meta);
            if let Some(at) = entry.charged {
                limits.unstarted(at);
            }
        }
        Self::vacate(st, later);
        // Its settings moved to the entry when it left the queue. (A re-runnable job's
        // copy in the entry is not the last reference: the job holds one.)
        Some(Queued {
            meta: std::mem::take(&mut entry.meta),
            ..*q
        })
    }

    /// Under the lock: a slot is taken.
    pub(super) fn occupy(st: &mut State<J>) {
        st.running += 1;
        if let Some(el) = &mut st.elastic {
            el.busy();
        }
    }

    /// Under the lock: a slot is free again (its worker idle, for elastic pools). A slot
    /// given back (to a shrink, a runtime's end) may leave only waiting jobs running: the
    /// nested-wait re-check runs afterwards if jobs wait on the pool.
    pub(super) fn vacate(st: &mut State<J>, later: &mut Deferred<J>) {
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

    /// Under the lock: jobs left the queue; give back the reservations beyond the queued
    /// jobs that may start now (their claimers would find none to start).
    pub(super) fn clamp_reserved_to_startable(st: &mut State<J>, later: &mut Deferred<J>) {
        let startable = match &mut st.limits {
            None => st.queue.len(),
            Some(limits) => limits.count_startable(&mut st.queue, st.reserved, Queued::meta),
        };
        Self::clamp_reserved_to(st, startable, later);
    }
}
