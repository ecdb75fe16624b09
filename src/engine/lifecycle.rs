//! A pool's waits and ends: `wait()`, a dropped pool's watcher, `close`, `shutdown`,
//! `cancel_all`, and the exit's take-over of the runs of a runtime that no longer runs.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::runtime::Handle;

use crate::error::CancelReason;
use crate::stats::ShutdownReport;
use crate::task::context;
use crate::task::{wake_quietly, Outcome, QuietPoll};

use super::job::Job;
use super::limits::Meta;
use super::marks::Polling;
use super::{
    assert_timer_here, drop_in_task, drop_quietly, runtimes, timeout_or_never, Deferred, Engine,
    Freeing, SlotEntry, State, Wait, SHUTDOWN_TIMEOUT,
};

impl<J: Job> Engine<J> {
    /// Waits until every job submitted before this call has finished (its handle
    /// resolved). The set of jobs is fixed when this is *called*, not when the future is
    /// first polled.
    ///
    /// Cancel safe: dropping the future only stops the wait.
    pub(crate) fn wait_all(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        self.wait_all_but(None, Serving::IfStranded)
    }

    /// Waits until the pool has no task queued or running but those a rate window that
    /// never reopens holds back for ever (which would never finish: `smart_run` leaves
    /// them to the exit). Cancel safe, as [`wait_all`](Self::wait_all).
    pub(crate) async fn wait_all_but_held_back(self: &Arc<Self>) {
        while !self.held_back_round().await {}
    }

    /// One round of [`wait_all_but_held_back`](Self::wait_all_but_held_back) (and of the
    /// serving thread's [`serve`](Self::serve)): `true` if nothing is queued or running
    /// but tasks held back for ever; otherwise waits for the tasks submitted so far, for
    /// at most [`HELD_BACK_RECHECK`] while some are held back (that wait would not end),
    /// and returns `false`.
    pub(super) async fn held_back_round(self: &Arc<Self>) -> bool {
        let figures = Self::figures_of(&self.lock());
        if figures.unfinished == 0 {
            return true;
        }
        if figures.held_back > 0 {
            let _ = tokio::time::timeout(HELD_BACK_RECHECK, self.wait_all()).await;
        } else {
            self.wait_all().await;
        }
        false
    }

    /// [`wait_all`](Self::wait_all), leaving out job `spared` (while it runs or is queued
    /// for a re-run) rather than the calling job: `shutdown_timeout`'s wait after its
    /// deadline, which spared that job, and may be polled outside it (a spawned task the
    /// job awaits). With [`Serving::Never`], a stranded pool is not served by a thread of
    /// the crate for this wait (see [`Serving`]).
    pub(super) fn wait_all_but(
        self: &Arc<Self>,
        spared: Option<u64>,
        serving: Serving,
    ) -> impl Future<Output = ()> + Send + 'static {
        let key = {
            let mut st = self.lock();
            let target = st.counts.submitted;
            // The spared job, or else the job of this pool whose poll makes the wait: not
            // yet counted as ended (its slot or the queue holds it), and never to end while
            // it waits for itself; the wait does not wait for it.
            let except = spared
                .filter(|&id| Self::slot_of(&st, id).is_some() || st.queue.any(|q| q.id == id))
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
            // wait where no live runtime can be offered, for jobs no runtime can run, is
            // served below, as a pending handle's poll is.)
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
                // The pool is stranded (re-runs queued, no runtime it knows alive: its
                // runtimes ended, before or during this wait): this wait's runtime is
                // offered as at its start; if none can be (a plain executor, a
                // `spawn_blocking` thread of a runtime that ended), a thread of the
                // crate serves the pool, as for a pending handle (finding 273).
                // Otherwise nothing would run the tasks waited for, and the wait (a
                // `shutdown()`, `shutdown_all_smart_aiopools`) would never end. One load
                // otherwise.
                if serving == Serving::IfStranded
                    && engine.stranded.load(Ordering::Relaxed)
                    && (!engine.ensure_started() || engine.cannot_take_current())
                {
                    engine.serve_stranded();
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
        let handle = {
            let mut st = self.lock();
            let handle = st.runtimes.timer_handle(None).cloned();
            st.watch_owed |= owed_only && handle.is_some();
            handle
        };
        let Some(handle) = handle else {
            f(false);
            return false;
        };
        let driven = runtimes::is_multi_thread(&handle);
        drop(handle.spawn(self.watcher(owed_only, f)));
        driven
    }

    /// The task [`when_done`](Self::when_done) spawns: calls `f(true)` once the jobs it
    /// watches have finished, `f(false)` if dropped before. A watcher, not a caller: its
    /// wait never has the pool served ([`Serving::Never`]).
    pub(crate) fn watcher(
        self: &Arc<Self>,
        owed_only: bool,
        f: impl FnOnce(bool) + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        /// Calls its function with `false` if dropped before it was taken.
        struct Unless<F: FnOnce(bool)>(Option<F>);
        impl<F: FnOnce(bool)> Drop for Unless<F> {
            fn drop(&mut self) {
                if let Some(f) = self.0.take() {
                    f(false);
                }
            }
        }
        // The jobs submitted so far, fixed now; none registered for a watch of owed work.
        let done = (!owed_only).then(|| self.wait_all_but(None, Serving::Never));
        let engine = Arc::clone(self);
        let mut unless = Unless(Some(f));
        async move {
            if let Some(done) = done {
                done.await;
            } else {
                loop {
                    let mut notified = pin!(engine.changed.notified());
                    notified.as_mut().enable();
                    if !engine.owes_work() {
                        break;
                    }
                    notified.await;
                }
            }
            drop(engine);
            if let Some(f) = unless.0.take() {
                f(true);
            }
        }
    }

    /// Whether the pool has a rate limit (its jobs need a runtime with timers).
    pub(crate) fn needs_timers(&self) -> bool {
        self.needs_timers
    }

    /// For a stranded rate-limited pool's wait, which [`ensure_started`] leaves "unasked"
    /// on a runtime whose timers this thread has not asked about (a wait makes no timer to
    /// find out): whether the current runtime can never take the pool's jobs anyway, as it
    /// has no timers, or has shut down (a `spawn_blocking` thread that outlived it, a
    /// `Handle::enter` guard). Then the pool is served by a thread of the crate, as for a
    /// wait with no runtime to offer (findings 329, 336). Asks by making a timer (outside
    /// every lock of ours), not remembered: a live runtime with timers stays unasked, by
    /// the rule of waits on rate-limited pools.
    ///
    /// [`ensure_started`]: Self::ensure_started
    fn cannot_take_current(&self) -> bool {
        if !self.needs_timers {
            return false;
        }
        let Ok(handle) = Handle::try_current() else {
            return false;
        };
        !runtimes::timers_here(&handle) || runtimes::timers_shut_down(&handle)
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
            self.changed(&st);
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
        // A map stream waiting for its input ends now, not at its next input.
        self.size_watchers.wake_all();
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
                timeout_or_never(timeout, wait, &SHUTDOWN_TIMEOUT)
                    .await
                    .is_err()
            };
            if passed {
                let spared = engine.cancel_all_sparing(CancelReason::Abandoned, caller);
                engine.wait_all_but(spared, Serving::IfStranded).await;
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
    pub(super) fn cancel_all_sparing(
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
            let spared = spared.filter(|&id| !st.cancel_covers(id, before));
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
            // Jobs handed over to slot tasks that have not taken them yet are dropped now,
            // as queued ones (those slot tasks may not be polled for long: finding 400),
            // for the first covering call's reason.
            let handed: Vec<usize> = st
                .slots
                .iter()
                .filter(|(_, s)| s.handed.is_some() && Some(s.job) != spared)
                .map(|(key, _)| key)
                .collect();
            for key in handed {
                let first = st.slots[key].cancelled;
                if let Some(q) = Self::take_handed(&mut st, key, &mut later) {
                    self.drop_unrun(&mut st, q.job, q.id, first.unwrap_or(reason), &mut later);
                    later.stamps.push(q.stamp);
                }
            }
            Self::clamp_reserved(&mut st, &mut later);
            // The slots freed above go to what is left (the job spared, queued again).
            self.fill_free(&mut st, None, &mut later);
            self.changed(&st);
            // The jobs the slots hold now are cancelled for this call's reason, unless an
            // earlier call covered them first (its reason holds: their slots may not have
            // seen that mark yet, in the middle of a poll).
            for (_, s) in st.slots.iter_mut() {
                if s.job != u64::MAX && Some(s.job) != spared {
                    s.cancelled.get_or_insert(reason);
                }
            }
            // So are the runs the exit take-over waits for (their entries left `slots`).
            for (id, first, _) in &mut st.awaiting_poll {
                if Some(*id) != spared {
                    first.get_or_insert(reason);
                }
            }
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
    /// (interrupted runs only if the pool re-runs them; otherwise they are cancelled; a
    /// job a slot took but never started runs once in either pool). A job its handle
    /// aborted, or a `cancel_all` or shutdown deadline covered, while a slot held it ends
    /// here with that reason (the first covering call's), reported as started if its slot
    /// had started it.
    /// A pool with nothing unfinished is taken over all the same (`handle`'s runtime
    /// becomes its home; its rate timer, claimers and idle slot tasks are forgotten).
    ///
    /// A run inside a poll right now, on a thread that goes on (`std::process::exit` leaves
    /// a multi-thread runtime's workers running), is started again only once that poll has
    /// returned, so the two runs never overlap (a run that ended in that poll is not run
    /// again). One polled by the `exiting` thread (a [`thread_token`]), which never
    /// returns (the task called `exit`), is cancelled instead, as `stuck`. The others are
    /// returned as [`Busy`]: they keep their slots (and their keys and weights) until the
    /// caller settles them ([`settle_busy`](Self::settle_busy)) once their polls have
    /// returned, or gives them up at its deadline. Meanwhile the pool's other jobs may
    /// start in the slots left (once the exit lifts its hold): a poll that waits for
    /// another task of the exit's, of this pool or another, sees it run.
    ///
    /// [`thread_token`]: super::thread_token
    pub(crate) fn take_over(self: &Arc<Self>, handle: Handle, exiting: u64) -> (TakeOver, Busy<J>) {
        let mut later = Deferred::default();
        let mut report = TakeOver::default();
        let mut busy: Vec<(u64, J, Polling)> = Vec::new();
        // The runs waited for, each with the first reason of a cancel that covered it, and
        // its flow-control settings (it holds its key and weight until it is settled).
        let mut awaiting: Vec<Awaited> = Vec::new();
        let mut seen = Seen::default();
        let mut handed = Vec::new();
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
            // A submitter of a runtime the exit froze would hold a place granted to it for
            // ever, and the tasks run at the exit would wait for it: places go to whoever
            // polls first from now on (RELIABILITY.md, 340).
            st.admission.barge(&mut later.granted);
            // Interrupted runs go back to the front of the queue, oldest first (or, without
            // re-runs, are cancelled and counted as lost); jobs a slot took and never
            // started go back too, in every pool, to their place (they run once).
            // With `Some(started)` when the job is queued again (first if it started),
            // `None` when it is cut.
            let mut interrupted: Vec<(u64, J, Meta, Option<bool>, Polling)> = Vec::new();
            let entries: Vec<SlotEntry<J>> = st.slots.drain().collect();
            // A `cancel_all` or shutdown deadline that covered a job a slot holds decided
            // its end, as at a runtime's end (RELIABILITY.md, 332, 334): the first covering
            // call's reason, recorded in its entry.
            let mark = self.cancel_before.load(Ordering::Acquire);
            for mut s in entries {
                // A job handed over and not taken by its slot task (finding 400): its copy
                // below is taken over as the job itself would be (its slot never started
                // it); the job, dropped after the lock, is one more reference to it.
                handed.extend(s.handed.take());
                let Some(copy) = s.copy.take() else { continue };
                // Aborted while it ran (its group or stream dropped, a `timeout` around
                // `batch_run`), or covered by a cancel, and not polled since: its handle
                // says `Aborted` (or is told the cancel's reason now), so it is neither cut
                // nor run again, and not reported as either.
                let aborted = copy.aborted().is_some();
                let covered = st.covering_reason(Some(&s), s.job, mark);
                match s.polling.by() {
                    Some(t) if self.rerun && t != exiting => {
                        awaiting.push((s.job, s.cancelled, s.meta));
                        busy.push((s.job, copy, s.polling));
                    }
                    Some(_) if self.rerun => {
                        // Polled by the exiting thread: it called `exit`, and never returns.
                        if let Some(reason) = covered {
                            self.end_seen(&mut st, copy, s.job, reason, &s.polling, &mut seen);
                        } else {
                            report.stuck += u64::from(!aborted);
                            self.end_seen(
                                &mut st,
                                copy,
                                s.job,
                                CancelReason::RuntimeShutdown,
                                &s.polling,
                                &mut seen,
                            );
                        }
                    }
                    // It ends here, as a slot dropped with its runtime ends it.
                    _ if aborted || covered.is_some() => {
                        // One its slot never started gives back the rate window's start
                        // it was charged, as a slot dropped unpolled does (RELIABILITY.md,
                        // 344).
                        if let (false, Some(limits), Some(at)) =
                            (s.polling.settle(s.job), &mut st.limits, s.charged)
                        {
                            limits.unstarted(at);
                        }
                        let reason = covered.unwrap_or(CancelReason::Aborted);
                        self.end_seen(&mut st, copy, s.job, reason, &s.polling, &mut seen);
                    }
                    _ => {
                        // Taken by a slot that never started it (a slot handed to a runtime
                        // not driven since, a job kept across a yield): it runs once, also
                        // without re-runs (its slot starts nothing now: see
                        // `Polling::start`).
                        let unstarted = !s.polling.settle(s.job);
                        if let (true, Some(limits), Some(at)) =
                            (unstarted, &mut st.limits, s.charged)
                        {
                            // The start of the rate window it spent when it was taken, never
                            // made: given back, as a slot dropped unpolled gives it back (in
                            // a window that never reopens, its return to the queue below
                            // gives one back).
                            if limits.rate_reopens() {
                                limits.unstarted(at);
                            }
                        }
                        let again = (self.rerun || unstarted).then_some(!unstarted);
                        interrupted.push((s.job, copy, s.meta, again, s.polling));
                    }
                }
            }
            interrupted.sort_by_key(|(id, ..)| std::cmp::Reverse(*id));
            for (id, job, meta, again, polling) in interrupted {
                if let Some(started) = again {
                    // With its flow-control settings: the limits count it again when it
                    // starts (their running counts are reset below). Its run's span, if
                    // kept, closes after the lock (its re-run has one of its own).
                    seen.dropped.extend(polling.take_obs(id));
                    Self::requeue(&mut st, id, job, meta, started);
                } else {
                    report.cut += 1;
                    self.end_seen(
                        &mut st,
                        job,
                        id,
                        CancelReason::RuntimeShutdown,
                        &polling,
                        &mut seen,
                    );
                }
            }
            // The runs still inside a poll elsewhere hold their slots until they are
            // settled (`settle_busy`, or their slot, if the run ends in that poll).
            st.running = awaiting.len();
            st.reserved = 0;
            st.claimers = 0;
            st.runtimes.forget_claimers();
            // Idle slot tasks of the old generation exit when polled; none is reused.
            st.idle.clear();
            // Elastic workers start again from `min_workers` (or the size, if a shrink
            // went below it), but no fewer than the busy runs' workers (within the size),
            // idle from now but those: the exit's jobs grow them as a submit does, and they
            // retire when idle, so the counts come back once the exit's run is over. (Busy
            // runs above a lowered size leave no worker idle when they are settled, as
            // runs above it at any time.)
            match st.elastic.take() {
                Some(el) => {
                    st.limit = el
                        .config
                        .min_workers
                        .max(st.running)
                        .min(st.max_concurrency);
                    st.elastic = Some(super::elastic::Elastic::new(
                        el.config,
                        st.limit.saturating_sub(st.running),
                    ));
                }
                None => st.limit = st.max_concurrency,
            }
            st.rate_timers.clear();
            if let Some(limits) = &mut st.limits {
                limits.reset_running();
                for (_, _, meta) in &awaiting {
                    limits.holds(meta);
                }
            }
            st.taken_over = true;
            st.exit_hold = true;
            st.awaiting_poll = awaiting;
            st.runtimes.enter(&handle);
            // Nothing starts here: the exit hook starts the jobs of every pool once it has
            // taken them all over (`exit_start`), so that a job started at exit, and
            // submitting into a pool not taken over yet, does not have its task there
            // taken for an interrupted one. (Runs still inside a poll elsewhere hold their
            // slots, and their keys and weights, until they are settled.)
            self.changed(&st);
        }
        drop(handed);
        self.report_seen(&mut seen);
        self.run_deferred(&mut later);
        let ended = vec![false; busy.len()];
        (report, Busy { busy, ended })
    }

    /// Under the lock: the exit waits no more for run `id`, found inside a poll on another
    /// thread (the run ended in that poll, or is being settled): the slot, key and weight
    /// it held are given back. Returns the first reason of a cancel that covered it and
    /// its flow-control settings; `None` if it was not awaited.
    pub(super) fn end_awaiting(
        st: &mut State<J>,
        id: u64,
        later: &mut Deferred<J>,
    ) -> Option<(Option<CancelReason>, Meta)> {
        let pos = st.awaiting_poll.iter().position(|&(j, ..)| j == id)?;
        let (_, first, meta) = st.awaiting_poll.swap_remove(pos);
        Self::vacate(st, later);
        if let Some(limits) = &mut st.limits {
            limits.ended(&meta);
        }
        Some((first, meta))
    }

    /// At process exit, after [`take_over`](Self::take_over): settles the runs it found
    /// inside a poll on another thread (`busy`) whose polls have returned (see
    /// [`Busy::look`]), each as soon as its own poll has (another busy run of the pool may
    /// wait in its poll for that one's re-run); with `last` (the caller's deadline
    /// passed), also those still in their poll, by giving them up (`stuck`). A run that
    /// ended in that poll was counted by its slot and is not run again; the others are
    /// queued again (first), or end here if an abort or a cancel covered them meanwhile.
    /// Then starts what may start.
    pub(crate) fn settle_busy(self: &Arc<Self>, busy: &mut Busy<J>, last: bool) -> TakeOver {
        let mut report = TakeOver::default();
        busy.look();
        // The runs settled now, each with whether its poll has returned.
        let mut picked = Vec::new();
        let mut i = 0;
        while i < busy.busy.len() {
            if last || busy.ended[i] {
                picked.push((busy.busy.swap_remove(i), busy.ended.swap_remove(i)));
            } else {
                i += 1;
            }
        }
        if picked.is_empty() {
            return report;
        }
        // Queued again oldest first, as the take-over queues interrupted runs.
        picked.sort_by_key(|((id, ..), _)| std::cmp::Reverse(*id));
        let mut later = Deferred::default();
        let mut seen = Seen::default();
        let mut settled = Vec::new();
        {
            let mut st = self.lock();
            // A poll that ends from now on settles nothing: its job is settled here, with
            // the first reason of a cancel that covered it, also one made during the wait.
            // The runs not settled by their slot give back their slots, keys and weights.
            let mut awaited = Vec::new();
            let mut counted = Vec::new();
            for ((id, ..), _) in &picked {
                if let Some(pos) = st.ended_in_take_over.iter().position(|j| j == id) {
                    st.ended_in_take_over.swap_remove(pos);
                    counted.push(*id);
                } else if let Some((first, meta)) = Self::end_awaiting(&mut st, *id, &mut later) {
                    awaited.push((*id, first, meta));
                }
            }
            let mark = self.cancel_before.load(Ordering::Acquire);
            for ((id, job, polling), done) in picked {
                if counted.contains(&id) {
                    // Its copy may hold the last reference to a recipe: dropped below.
                    settled.push(job);
                    continue;
                }
                // Covered by a cancel (the first covering call's reason, as above); its
                // flow-control settings, for its queueing again.
                let (first, meta) = awaited
                    .iter()
                    .position(|&(j, ..)| j == id)
                    .map(|pos| {
                        let (_, first, meta) = awaited.swap_remove(pos);
                        (first, meta)
                    })
                    .unwrap_or_default();
                let covered = st.covering_reason_first(first, id, mark);
                if done && (job.aborted().is_some() || covered.is_some()) {
                    // Aborted or covered meanwhile (as above): ended, not queued again.
                    let reason = covered.unwrap_or(CancelReason::Aborted);
                    self.end_seen(&mut st, job, id, reason, &polling, &mut seen);
                } else if done {
                    seen.dropped.extend(polling.take_obs(id));
                    Self::requeue(&mut st, id, job, meta, true);
                } else if let Some(reason) = covered {
                    self.end_seen(&mut st, job, id, reason, &polling, &mut seen);
                } else {
                    report.stuck += u64::from(job.aborted().is_none());
                    self.end_seen(
                        &mut st,
                        job,
                        id,
                        CancelReason::RuntimeShutdown,
                        &polling,
                        &mut seen,
                    );
                }
            }
            self.changed(&st);
        }
        drop_quietly(settled);
        self.report_seen(&mut seen);
        self.run_deferred(&mut later);
        // The runs queued again, and what the slots given back let start (on the exit's
        // runtime, current here).
        self.ensure_started();
        report
    }

    /// Under the lock, at the exit take-over: a job a slot held ends here, unrun, for
    /// `reason` (its handle's, if an abort decided first): a cancel's that covered it, or
    /// `RuntimeShutdown` for a run the take-over cuts (a pool without re-runs) or gives up
    /// (busy past [`EXIT_POLL_WAIT`], or the run that called `exit`), which is lost. One
    /// whose run the slot had started (its observation kept in the slot's mark) is
    /// reported after the lock as a run's end, in its span, with its run-time sample
    /// ([`report_seen`](Self::report_seen)), as a slot dropped by its runtime reports it;
    /// one that never started, as a task cancelled before it started.
    fn end_seen(
        &self,
        st: &mut State<J>,
        copy: J,
        id: u64,
        reason: CancelReason,
        polling: &Polling,
        seen: &mut Seen<J>,
    ) {
        let run = polling.take_obs(id);
        let reason = self.end_copy(st, copy, id, reason, &mut seen.later, run.is_some());
        if let Some(run) = run {
            seen.ended.push((run, reason));
        }
    }

    /// After the lock: reports the ends [`end_seen`](Self::end_seen) left, drops the
    /// observations taken (their spans close), then does the ends' deferred work (their
    /// handles told, the waits).
    fn report_seen(self: &Arc<Self>, seen: &mut Seen<J>) {
        for (run, reason) in seen.ended.drain(..) {
            self.observer.ended_in(&run, Outcome::Cancelled(reason));
        }
        seen.dropped.clear();
        self.run_deferred(&mut seen.later);
    }
}

/// What the exit take-over ends and reports after its lock (see [`Engine::end_seen`]).
///
/// Dropping it drops what it holds without acting on it (the ends' handles are not told,
/// the spans close where it is dropped): only a `take_over` that unwinds does.
struct Seen<J: Job> {
    /// Started runs ended, with the reason counted, to report in their spans.
    ended: Vec<(crate::observe::Running, CancelReason)>,
    /// Observations of runs queued again, dropped after the lock.
    dropped: Vec<crate::observe::Running>,
    /// The ends' own deferred work (their handles told, the waits).
    later: Deferred<J>,
}

impl<J: Job> Default for Seen<J> {
    fn default() -> Self {
        Seen {
            ended: Vec::new(),
            dropped: Vec::new(),
            later: Deferred::default(),
        }
    }
}

/// How often a wait for every task but those held back for ever
/// ([`Engine::held_back_round`]) looks again while the queue holds such tasks.
const HELD_BACK_RECHECK: Duration = Duration::from_millis(50);

/// Whether a wait on a stranded pool (its re-runs queued, no runtime it knows alive) that
/// can offer no live runtime has a thread of the crate serve the pool
/// ([`Engine::serve_stranded`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Serving {
    /// A caller's wait (`wait()`, a shutdown, the `*_all_*` waits): the tasks it waits for
    /// must run somewhere, or it would never end.
    IfStranded,
    /// The watcher of a pool dropped busy ([`Engine::when_done`]): bookkeeping, which
    /// nobody awaits. It runs on a runtime the pool knows, so it finds the pool stranded
    /// only when polled by a worker of that runtime in the moment its shutdown drops the
    /// pool's slot tasks; it is dropped next. A thread started then ran the re-runs, and the
    /// process exit that often follows (`main` returned) took them over mid-run and ran
    /// them a third time (RELIABILITY.md, 419). The re-runs wait, as when the watcher is
    /// dropped unpolled, for a runtime that submits, waits or awaits a handle, or for the
    /// exit.
    Never,
}

/// How long, from its start, the exit waits for polls in progress on other threads before
/// it gives their runs up (see [`Engine::take_over`]): once for all the pools.
pub(crate) const EXIT_POLL_WAIT: Duration = Duration::from_secs(5);

/// A run the exit take-over waits for, inside a poll on another thread: its job, the
/// reason of the first `cancel_all` or deadline that covered it, and its flow-control
/// settings (see `State::awaiting_poll`).
pub(super) type Awaited = (u64, Option<CancelReason>, Meta);

/// The runs an exit take-over found inside a poll on another thread, to settle
/// ([`Engine::settle_busy`]) once their polls have returned.
pub(crate) struct Busy<J: Job> {
    /// Each run's job, its copy to run again and its slot's marks (its flow-control
    /// settings are in `State::awaiting_poll`, where its slot gives them back if the run
    /// ends in that poll).
    busy: Vec<(u64, J, Polling)>,
    /// Whose poll was seen returned (it counts as returned from then on: the stale slot
    /// may be polled again, but runs nothing).
    ended: Vec<bool>,
}

impl<J: Job> Busy<J> {
    /// Looks at the polls waited for again (those not settled yet): whether every one has
    /// returned, and whether one returned since the last look (to settle: its run may
    /// have ended there, giving its slot back, or is to be queued again).
    pub(crate) fn look(&mut self) -> (bool, bool) {
        let mut new = false;
        for (done, b) in self.ended.iter_mut().zip(&self.busy) {
            if !*done && b.2.by().is_none() {
                *done = true;
                new = true;
            }
        }
        (self.ended.iter().all(|&d| d), new)
    }
}

impl<J: Job> std::fmt::Debug for Busy<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Busy")
            .field("runs", &self.busy.len())
            .finish()
    }
}

/// What the exit take-over could not run again.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TakeOver {
    /// Interrupted runs of a pool that does not re-run them (cancelled).
    pub(crate) cut: u64,
    /// Runs still inside a poll: on the exiting thread (the task called `exit`), or for
    /// longer than [`EXIT_POLL_WAIT`] (cancelled).
    pub(crate) stuck: u64,
}

impl TakeOver {
    /// Adds what a later step of the same take-over could not run again.
    pub(crate) fn add(&mut self, more: TakeOver) {
        self.cut += more.cut;
        self.stuck += more.stuck;
    }
}

/// Counts a `wait()` watching for drops under way (see [`Engine::end_drop`]),
/// until it returns or is dropped.
pub(super) struct DropWatch<J: Job>(Arc<Engine<J>>);

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
pub(super) struct WaitGuard<J: Job> {
    engine: Arc<Engine<J>>,
    key: usize,
}

impl<J: Job> Drop for WaitGuard<J> {
    fn drop(&mut self) {
        self.engine.lock().waits.remove(self.key);
    }
}
