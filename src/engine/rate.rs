//! The rate window's timer: a pool with a rate limit looks at its queue again when the
//! window lets the next job start.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::time::Instant;

use super::few::Few;
use super::job::Job;
use super::runtimes::{is_multi_thread, RtRef, Runtimes};
use super::{Deferred, Engine, State};

/// The runtimes on which a rate timer is armed, each at most once. One is enough, but on
/// a current-thread runtime it fires only while some thread drives that runtime: when
/// every armed timer is on another current-thread runtime, a runtime being driven arms
/// one more (`only_on_others_of`), as the reap timer does (findings 145 and 147 of
/// RELIABILITY.md). A runtime driven a moment, to take back a job another runtime had
/// handed it (finding 312), would otherwise hold every other runtime's jobs back until
/// it is driven again (finding 317). A timer more only fills free slots once more.
#[derive(Default)]
pub(super) struct RateTimers(Vec<RtRef>);

impl RateTimers {
    /// Whether any is armed.
    pub(super) fn any(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `rt`, driven now, needs a timer of its own: none is armed there, and every
    /// armed timer is on another current-thread runtime, or `rt` is a current-thread
    /// runtime. A timer on a multi-thread runtime runs undriven, but on that runtime's
    /// clock: a current-thread runtime whose clock is paused (a test's, tokio's
    /// `start_paused`) is idle while its jobs wait for it, and its auto-advance then
    /// jumps to its own next timer (the test's `timeout`) before the window reopens.
    pub(super) fn only_on_others_of(&self, runtimes: &Runtimes, rt: RtRef) -> bool {
        !self.0.contains(&rt)
            && (!self.on_multi_thread(runtimes)
                || runtimes.handle(rt).is_some_and(|h| !is_multi_thread(h)))
    }

    /// Arms one on `held`, the runtime of the job the rate window holds back next, if that
    /// is a live current-thread runtime with none: a timer armed for that job goes to a
    /// multi-thread runtime (`driven_handle`), which runs it undriven but on its own clock,
    /// and the code that found the window full may be that runtime's (a job's end there,
    /// `pop_startable`): the held job's runtime, paused (a test's) and idle while it waits
    /// for the job, would auto-advance to its next timer (the test's `timeout`) before the
    /// window reopens. One there, if it is not driven, fires when it is.
    pub(super) fn arm_for_held<J: Job>(
        &mut self,
        runtimes: &Runtimes,
        held: Option<RtRef>,
        at: Instant,
        later: &mut Deferred<J>,
    ) {
        let Some(rt) = held.filter(|rt| !self.0.contains(rt)) else {
            return;
        };
        if let Some(handle) = runtimes.handle(rt).filter(|h| !is_multi_thread(h)) {
            self.arm(runtimes, handle, at, later);
        }
    }

    /// Arms a timer on `handle`'s runtime (a runtime the pool knows), firing `at`, unless
    /// one is armed there. Every timer listed is spawned by `later`, also the second of one
    /// critical section (a job's end may arm one for the job that starts next, on its
    /// runtime, in `pop_startable`, then one on its own runtime, driven now, in `fill`):
    /// one listed and never spawned would hold every later arming back, and one not armed
    /// would leave the runtime being driven to wait for the other to be driven.
    pub(super) fn arm<J: Job>(
        &mut self,
        runtimes: &Runtimes,
        handle: &Handle,
        at: Instant,
        later: &mut Deferred<J>,
    ) {
        let Some(rt) = runtimes.serial_of(handle) else {
            return; // not reached: the callers pass handles of registered runtimes
        };
        if !self.0.contains(&rt) {
            self.0.push(rt);
            later
                .rate_timers
                .get_or_insert_with(|| Box::new(Few::new()))
                .push((handle.clone(), rt, at));
        }
    }

    /// Whether one is armed on a live multi-thread runtime (which runs it undriven).
    fn on_multi_thread(&self, runtimes: &Runtimes) -> bool {
        self.0
            .iter()
            .any(|&t| runtimes.handle(t).is_some_and(is_multi_thread))
    }

    /// The timer on `rt` ended (fired, let go, or dropped with its runtime).
    fn disarm(&mut self, rt: RtRef) {
        self.0.retain(|&t| t != rt);
    }

    pub(super) fn clear(&mut self) {
        self.0.clear();
    }
}

impl<J: Job> Engine<J> {
    /// A rate timer was dropped unfired with its runtime (before or after that runtime's
    /// sentinel told the pool): that runtime is gone, and another timer is armed on a
    /// live one if the window still holds jobs back. Without this, a timer dropped before
    /// its first poll stayed listed in `rate_timers`, and no timer was ever armed again.
    ///
    /// No runtime is known to be driven here (this is the dying runtime's drop), so
    /// unless a timer is left on a live multi-thread runtime, one is armed on each live
    /// runtime whose jobs are queued, and, if a queued job may run on any, on a live
    /// multi-thread runtime too, else on every live runtime (see
    /// [`arm_where_queued`](Self::arm_where_queued)): `fill_free` arms one only on
    /// the runtime of the job that starts next (for a job left to any runtime, on the home
    /// or the newest live runtime), and a current-thread runtime runs it only while it is
    /// driven, so a runtime driven all along, waiting for its tasks, waited for that one
    /// to be driven (the class of finding 317).
    pub(super) fn rate_timer_lost(self: &Arc<Self>, handle: &Handle, timer_rt: RtRef) {
        let mut later = Deferred::default();
        {
            let mut st = self.lock();
            st.rate_timers.disarm(timer_rt);
            if let Some(rt) = st.runtimes.known(handle) {
                self.runtime_gone(&mut st, rt, &mut later);
            }
            self.fill_free(&mut st, None, &mut later);
            Self::arm_where_queued(&mut st, &mut later);
            self.changed(&st);
        }
        self.run_deferred(&mut later);
    }

    /// Under the lock (see [`rate_timer_lost`](Self::rate_timer_lost)): if the rate window
    /// holds queued jobs back and no timer is armed on a live multi-thread runtime, arms
    /// one on each live runtime with a queued job that has none (a timer more only fills
    /// free slots once more). If a queued job's runtime is not alive, also on a live
    /// multi-thread runtime if there is one, else on every live runtime that has none: such
    /// a job is left to any runtime (a SmartAioPool re-run, also one whose runtime ended,
    /// and a plain thread's job whose runtime ended while another lives: `settle_dead`), or
    /// will be once its runtime's end is settled, and the runtime awaiting its handle
    /// (which offers that runtime only to a stranded pool) may be any of them.
    fn arm_where_queued(st: &mut State<J>, later: &mut Deferred<J>) {
        let State {
            queue,
            limits,
            rate_timers,
            runtimes,
            ..
        } = st;
        let Some(limits) = limits.as_deref_mut() else {
            return;
        };
        let Some(at) = limits
            .rate_ready_at(Instant::now())
            .filter(|_| limits.rate_reopens())
        else {
            return;
        };
        if rate_timers.on_multi_thread(runtimes) {
            return;
        }
        let mut rts: Vec<RtRef> = Vec::new();
        let mut anywhere = false;
        queue.for_each(|q| {
            if !runtimes.is_alive(q.rt) {
                anywhere = true; // `ANY`, or a runtime that has died
            } else if !rts.contains(&q.rt) {
                rts.push(q.rt);
            }
        });
        if anywhere {
            // A live multi-thread runtime runs a timer undriven: one there serves the jobs
            // left to any runtime (beside the timers on the runtimes of queued jobs, which
            // do not wait for it). Only when every live runtime is current-thread, one on
            // each.
            let multi = runtimes
                .live()
                .find(|&rt| runtimes.handle(rt).is_some_and(is_multi_thread));
            match multi {
                Some(rt) if !rts.contains(&rt) => rts.push(rt),
                Some(_) => {}
                None => rts = runtimes.live().collect(),
            }
        }
        for rt in rts {
            rate_timers.arm(runtimes, runtimes.known_handle(rt), at, later);
        }
    }

    /// The rate window allows a start again: give free slots to queued jobs. Called by
    /// the timer task, on a runtime that is being driven now: the slot tasks go there.
    pub(super) fn rate_tick(self: &Arc<Self>, timer_rt: RtRef) {
        let current = Handle::try_current().ok();
        let mut later = Deferred::default();
        {
            let mut st = self.lock();
            st.rate_timers.disarm(timer_rt);
            let rt = current.as_ref().and_then(|h| st.runtimes.known(h));
            self.fill_free(&mut st, rt, &mut later);
            self.changed(&st);
        }
        self.run_deferred(&mut later);
    }

    /// When a rate timer about to wait on the calling runtime should fire: when the
    /// window lets the next job start, read on this runtime's clock (now if it has room
    /// already), or `at` for a pool without a window. Its arming may have read another
    /// clock (a job's end or a submit on a paused test runtime whose clock ran ahead,
    /// arming it on a multi-thread runtime): that runtime's `at` held this one's jobs
    /// back for as long as that clock ran ahead.
    pub(super) fn rate_timer_due(&self, at: Instant) -> Instant {
        let now = Instant::now();
        let mut st = self.lock();
        match st.limits.as_deref_mut() {
            Some(limits) => limits.rate_ready_at(now).unwrap_or(now),
            None => at,
        }
    }

    /// Under the lock: whether an armed rate timer has nothing left to start (the pool is
    /// closed, so nothing more is queued but by the exit take-over, which arms its own,
    /// and its queue is empty). Its task then lets the engine go at once, rather than
    /// hold it until it fires, up to `per` later (finding 176 of RELIABILITY.md).
    pub(super) fn rate_timer_unneeded(st: &State<J>) -> bool {
        st.rate_timers.any() && st.closed && st.queue.len() == 0
    }

    /// Under the lock, where the pool closes or its queue loses jobs that will not start:
    /// tells an armed rate timer that has nothing left to start. Wakes only the timer's
    /// task (a tokio waker: no user code under the lock).
    pub(super) fn rate_timer_check(&self, st: &State<J>) {
        if Self::rate_timer_unneeded(st) {
            self.rate_idle.notify_waiters();
        }
    }

    /// Called by the task of the rate timer armed on `timer_rt`, woken by
    /// [`rate_idle`](Self::rate_idle): `true`, and the timer disarmed, if it has nothing
    /// left to start.
    pub(super) fn rate_timer_release(&self, timer_rt: RtRef) -> bool {
        let mut st = self.lock();
        let unneeded = Self::rate_timer_unneeded(&st);
        if unneeded {
            st.rate_timers.disarm(timer_rt);
        }
        unneeded
    }
}

/// Looks at the queue again when the rate window allows the next start; spawned on
/// `handle`'s runtime, the pool's runtime `rt`.
pub(super) fn rate_timer<J: Job>(
    engine: Arc<Engine<J>>,
    handle: Handle,
    rt: RtRef,
    at: Instant,
) -> impl Future<Output = ()> + Send + 'static {
    // Made before the first poll: a runtime that shuts down drops the task unpolled too.
    let mut armed = Armed {
        engine: Some(engine),
        handle,
        rt,
    };
    async move {
        let at = armed
            .engine
            .as_ref()
            .expect("held until the timer ends")
            .rate_timer_due(at);
        let mut fires = pin!(tokio::time::sleep_until(at));
        loop {
            let engine = Arc::clone(armed.engine.as_ref().expect("held until the timer ends"));
            let mut idle = pin!(engine.rate_idle.notified());
            // Registered before the look: a pool closed or emptied after it wakes this.
            idle.as_mut().enable();
            if engine.rate_timer_release(armed.rt) {
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
            engine.rate_tick(armed.rt);
        }
    }
}

/// A rate timer that has not fired. Dropped so (its runtime shut down: a spawned task is
/// dropped unfinished only then), it tells the pool, which arms another elsewhere.
pub(super) struct Armed<J: Job> {
    engine: Option<Arc<Engine<J>>>,
    handle: Handle,
    rt: RtRef,
}

impl<J: Job> Drop for Armed<J> {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.rate_timer_lost(&self.handle, self.rt);
        }
    }
}
