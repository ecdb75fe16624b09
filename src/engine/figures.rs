//! What a pool reports: `stats()`, its gauges and the exit's figures.

use std::fmt;

use crate::observe::{Observer, OnPanic};
use crate::stats::PoolStats;
use crate::task::wake_quietly;

use super::job::Job;
use super::{Engine, Figures, State};

impl<J: Job> Engine<J> {
    /// The `on_panic` callback, if set.
    pub(crate) fn on_panic(&self) -> Option<&OnPanic> {
        self.on_panic.is_set().then_some(&self.on_panic)
    }

    pub(crate) fn observer(&self) -> &Observer {
        &self.observer
    }

    /// Under the lock, at the end of every critical section that changes the queue, the
    /// reservations, `running` or the runtimes: the metrics gauges follow
    /// `PoolStats::queued` and `running`, and a stranded pool that no longer is stops
    /// being counted ([`unstrand`](Self::unstrand)).
    #[inline(always)]
    pub(super) fn changed(&self, st: &State<J>) {
        #[cfg(feature = "metrics")]
        self.observer
            .gauges(st.queue.len() - st.reserved, st.running);
        self.unstrand(st);
    }

    /// Queued jobs lost since the exit take-over because a rate window that never
    /// reopens held them back: SmartAioPool's exit reports them once every task ended (a
    /// window may fill only after the take-over, with a re-run's start).
    pub(crate) fn never_started(&self) -> u64 {
        self.lock().never_started
    }

    pub(crate) fn stats(&self) -> PoolStats {
        Self::stats_of(&self.lock())
    }

    /// The stats and live workers for a pool's `Debug`, or `<locked>` in their place if
    /// the lock stays taken for about 10 ms while this thread is panicking. A `Debug` must not block on the lock
    /// there: it may be called with the lock held by its own thread (a panic hook run for a
    /// panic under it: a `metrics` recorder's, caught; or a `Drop` run by the unwinding),
    /// where `lock` would never return. A thread that is not panicking does not hold the
    /// lock (no user code runs under it but the observers', which must not call back into
    /// the pool): it waits for the lock, as `stats()` does. (Retrying for 10 ms there, a
    /// busy pool's `{:?}` printed `<locked>` for about 1 in 100 log lines: a review of
    /// 37ed99d, 1M tiny jobs on 2 workers; `std`'s mutex is not fair to a `try_lock`.)
    pub(crate) fn for_debug(&self) -> DebugFigures {
        let mut st = match self.try_lock() {
            Some(st) => st,
            None if !std::thread::panicking() => self.lock(),
            None => match self.try_lock_for_panicking() {
                Some(st) => st,
                None => return DebugFigures(None),
            },
        };
        let mut wake = Vec::new();
        Self::retire_idle(&mut st, &mut wake);
        let figures = (Self::stats_of(&st), st.limit.max(st.running));
        drop(st);
        wake.into_iter().for_each(wake_quietly);
        DebugFigures(Some(figures))
    }

    /// [`for_debug`](Self::for_debug)'s lock on a panicking thread: retried for about
    /// 10 ms, `None` if it stays taken.
    #[cold]
    fn try_lock_for_panicking(&self) -> Option<super::StateGuard<'_, J>> {
        let give_up = std::time::Instant::now() + std::time::Duration::from_millis(10);
        loop {
            std::thread::yield_now();
            if let Some(st) = self.try_lock() {
                return Some(st);
            }
            if std::time::Instant::now() >= give_up {
                return None;
            }
        }
    }

    fn stats_of(st: &State<J>) -> PoolStats {
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
            st.queue.for_each_mut_in_order(|q| {
                if startable > 0 {
                    startable -= 1;
                    awaited |= !q.job.detached();
                }
            });
            return awaited;
        }
        figures.unfinished > 0
    }

    pub(super) fn figures_of(st: &State<J>) -> Figures {
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
}

/// A pool's figures for its `Debug` ([`Engine::for_debug`]): each field's value, or
/// `<locked>` where they could not be read.
pub(crate) struct DebugFigures(Option<(PoolStats, usize)>);

impl DebugFigures {
    /// The pool's [`PoolStats`], for the `stats` field.
    pub(crate) fn stats(&self) -> &dyn fmt::Debug {
        match &self.0 {
            Some((stats, _)) => stats,
            None => &Locked,
        }
    }

    /// The live workers (SmartAioPool's `workers` field).
    pub(crate) fn workers(&self) -> &dyn fmt::Debug {
        match &self.0 {
            Some((_, workers)) => workers,
            None => &Locked,
        }
    }
}

/// What a `Debug` prints for figures it could not read, as std's `Mutex` prints
/// `data: <locked>`.
struct Locked;

impl fmt::Debug for Locked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<locked>")
    }
}
