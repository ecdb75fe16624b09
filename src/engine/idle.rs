//! Idle slots: a slot task with no job lingers a few polls, then waits to be given work;
//! an elastic pool retires the ones idle for longer than its timeout.

use std::task::Waker;

use tokio::time::Instant;

use super::job::Job;
use super::marks::Polling;
use super::runtimes::RtRef;
use super::{Engine, Idle, SlotEntry, State, IDLE_MAX};

impl<J: Job> Engine<J> {
    /// Under the lock, for an elastic pool: retires the workers idle for `idle_timeout`
    /// (see the `elastic` module: done when the worker count is looked at), and the idle
    /// slot tasks beyond the idle workers left, whose wakers go to `wake`.
    pub(super) fn retire_idle(st: &mut State<J>, wake: &mut impl Extend<Waker>) {
        if let Some(el) = &mut st.elastic {
            st.limit = el.retire(st.limit, Instant::now());
            Self::trim_idle(st, wake);
        }
    }

    /// Under the lock, for an elastic pool: no more idle slot tasks are kept than it has
    /// idle workers. The oldest of the others are taken off the idle list and woken (their
    /// wakers go to `wake`) to exit: a retired worker's tokio task ends with it.
    pub(super) fn trim_idle(st: &mut State<J>, wake: &mut impl Extend<Waker>) {
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

    /// Under the lock, for a slot about to drop, after the lock, what a job left (a
    /// re-run pool's slot, or any slot after a panic: [`Polling::begin_drop`]). The
    /// first time (`listed` not yet set), its mark goes in the list a `wait()` looks at.
    ///
    /// Inlined, with the listing (once per slot task) out of line: on a current-thread
    /// runtime every job's end announces a drop (see `Slot::finish`), and the call cost
    /// its entry and exit there: 20 to 22 instructions per job (callgrind, current-thread,
    /// 2026-12-07).
    #[inline]
    pub(super) fn begin_drop(st: &mut State<J>, polling: &Polling, listed: &mut bool) {
        if !*listed {
            Self::list_dropper(st, polling, listed);
        }
        polling.begin_drop();
    }

    /// [`begin_drop`](Self::begin_drop)'s first time for a slot task: its mark goes in the
    /// list a `wait()` looks at.
    #[inline(never)]
    fn list_dropper(st: &mut State<J>, polling: &Polling, listed: &mut bool) {
        *listed = true;
        if st.droppers.len() == st.droppers.capacity() {
            // Before the list grows: the marks of slots that are gone.
            st.droppers.retain(Polling::is_held);
        }
        st.droppers.push(polling.clone());
    }

    /// A slot finished dropping what a job left ([`Polling::end_drop`]): a `wait()`
    /// watching for that looks again.
    pub(super) fn end_drop(&self, polling: &Polling) {
        if self.drop_watchers.drop_ended(polling) {
            self.changed.notify_waiters();
        }
    }

    /// Under the lock, for a slot left without a job: keeps it as an idle slot task (with a
    /// fresh entry) if the pool may want it soon. Returns its new key.
    pub(super) fn keep_idle(st: &mut State<J>, rt: RtRef, polling: &Polling) -> Option<usize> {
        if st.closed || st.idle.len() >= IDLE_MAX || !st.runtimes.is_alive(rt) {
            return None;
        }
        // An elastic pool keeps no more idle slot tasks than idle workers (see
        // `trim_idle`): a slot whose worker a shrink retired while it ran exits.
        if st.elastic.is_some() && st.idle.len() >= st.limit.saturating_sub(st.running) {
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
    pub(super) fn idle_poll(
        st: &mut State<J>,
        key: usize,
        waker: &Waker,
        polling: &Polling,
    ) -> Option<bool> {
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
    pub(super) fn forget_idle(st: &mut State<J>, key: usize) -> bool {
        match st.idle.iter().rposition(|i| i.key == key) {
            Some(pos) => {
                st.idle.swap_remove(pos);
                true
            }
            None => false,
        }
    }
}
