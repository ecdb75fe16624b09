//! Runtimes that end: the jobs they held, and a pool left with queued jobs and no live
//! runtime to run them (stranded), served by a runtime that awaits one of its handles
//! or by a thread of the crate.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;

use tokio::runtime::Handle;

use crate::task::unqueue;

use super::job::Job;
use super::runtimes::{Deaths, RtRef, ANY};
use super::{runtimes, Deferred, Engine, Queued, State};

impl<J: Job> Engine<J> {
    /// Under the lock: runtime `rt` is gone. The first time (whoever noticed: a slot
    /// dropped by it, or a slot that found it dead), the jobs queued from it are
    /// cancelled with `RuntimeShutdown`, or, if they can run anywhere, left to any runtime.
    ///
    /// Whether or not it was the first time, the pool may now be stranded (a re-run queued
    /// since, and no live runtime left): see [`note_stranded`](Self::note_stranded).
    pub(super) fn runtime_gone(&self, st: &mut State<J>, rt: RtRef, later: &mut Deferred<J>) {
        if st.runtimes.mark_dead(rt) {
            self.settle_dead(st, rt, later);
        }
        self.note_stranded(st, later);
    }

    /// Under the lock, once per dead runtime `rt`: its queued jobs are cancelled, or left
    /// to any runtime: a re-run pool's, and those a plain thread sent there while
    /// another runtime is alive (they were not submitted from `rt`; they go with the
    /// last runtime, as one that comes after it would be refused).
    pub(super) fn settle_dead(&self, st: &mut State<J>, rt: RtRef, later: &mut Deferred<J>) {
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
    ///
    /// [`Unqueue::offer_runtime`]: crate::task::unqueue::Unqueue::offer_runtime
    pub(super) fn note_stranded(&self, st: &mut State<J>, later: &mut Deferred<J>) {
        let now = Self::is_stranded(st);
        if now == self.stranded.load(Ordering::Relaxed) {
            return;
        }
        self.stranded.store(now, Ordering::Relaxed);
        // Counted before the wakers are fired (after the lock): a handle woken reads it.
        unqueue::stranded(self.id(), now);
        if now {
            // Reserved jobs wait for claimers that no live runtime will run: their slots
            // are given back, so that they count as queued (not running, their workers
            // idle) until a runtime is offered, which reserves again (`fill`).
            Self::clamp_reserved_to(st, 0, later);
            st.queue
                .for_each_mut(|q| later.wake.extend(q.job.handle_waker()));
            // A submit waiting for room looks again: with no live runtime to offer, none
            // would come (see `admit_blocking` and `admit_waiting`).
            st.admission.wake_waiting(&mut later.wake);
            // So does a `wait()` (a `shutdown()`, the `*_all_*` waits): polled where no
            // live runtime can be offered, it has the pool served (see `wait_all_but`).
            later.changed = true;
        }
    }

    /// Whether the pool counts as stranded now (see [`note_stranded`](Self::note_stranded)).
    #[cfg(all(test, not(nb_aiopool_loom)))]
    pub(crate) fn stranded_now(&self) -> bool {
        self.stranded.load(Ordering::Relaxed)
    }

    /// Whether a thread of the crate serves the pool now (see
    /// [`serve_stranded`](Self::serve_stranded)).
    #[cfg(all(test, not(nb_aiopool_loom)))]
    pub(crate) fn serving_now(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    /// Under the lock: see [`note_stranded`](Self::note_stranded).
    pub(super) fn is_stranded(st: &State<J>) -> bool {
        st.queue.len() != 0 && st.runtimes.live_or_any(None).is_none()
    }

    /// Under the lock, at the end of every critical section that changes the queue or
    /// the runtimes ([`changed`](Self::changed)): a stranded pool that no longer is (a
    /// runtime made known, or its queue emptied by aborts or a `cancel_all`) stops being
    /// counted. One load otherwise. (Only a runtime's end strands a pool.)
    #[inline(always)]
    pub(super) fn unstrand(&self, st: &State<J>) {
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

    /// For a handle of this stranded pool, or a wait on it (`wait()`, `shutdown()`, the
    /// `*_all_*` waits), polled where no live runtime can be offered (or, for a
    /// rate-limited pool, on a runtime without timers or that has shut down):
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
    pub(super) fn serve_stranded(self: &Arc<Self>) {
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
    pub(super) fn serve_loop(engine: &Arc<Self>) {
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
    ///
    /// [`Limits::rate_never_starts`]: super::limits::Limits::rate_never_starts
    pub(super) fn needs_serving(st: &State<J>) -> bool {
        Self::figures_of(st).unfinished > 0
    }

    /// The serving runtime's work ([`serve_stranded`](Self::serve_stranded)): offers the
    /// runtime and waits, round after round, until the pool has no task queued or running
    /// but those held back for ever, as `needs_serving` says
    /// ([`held_back_round`](Self::held_back_round)).
    pub(super) async fn serve(self: &Arc<Self>) {
        loop {
            if self.needs_timers {
                runtimes::has_timers(&Handle::current());
            }
            self.ensure_started();
            if self.held_back_round().await {
                return;
            }
        }
    }
}

/// The serving thread's hold on its pool: clears the pool's serving mark if the thread
/// unwinds (a bug of this crate), so that a later await can start another.
pub(super) struct Unmark<J: Job>(Arc<Engine<J>>);

impl<J: Job> Drop for Unmark<J> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.serving.store(false, Ordering::SeqCst);
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
            self.changed(&st);
        }
        self.run_deferred(&mut later);
    }
}
