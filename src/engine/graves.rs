//! [`Graves`]: what ended jobs leave that their submitter made, kept for a submitter to
//! free on its own thread.
//!
//! A future's run (its cell, with its result slot, and the result of a detached task), or
//! a recipe's last copy (SmartAioPool: the recipe, what it captured, and the task's
//! allocation with its result slot unless the handle still holds it), was allocated by the
//! code that submitted it. Freed on a worker, each block goes back to
//! the submitter's allocator across threads; with glibc's malloc that takes a lock the
//! submitter's next allocation waits on, which was most of the pools' context switches
//! and a fifth to a quarter of their CPU per job (BENCHMARKS.md). Kept here, under the
//! engine's lock, they are freed in batches:
//!
//! - by a submit from async code (not from inside a job of any pool), once `batch` wait;
//! - by the slot whose job ends when the pool has nothing queued or running;
//! - by a timer task ([`REAP_AFTER`]) armed when the first one is kept, on the
//!   multi-thread runtime of the job (or another the pool knows, if that one has ended;
//!   with none, the slot frees them at once), so that nothing waits much longer than
//!   that while the pool is busy and no submit comes (or, when the runtime ends first,
//!   by that task's drop, in the runtime's shutdown);
//! - by a slot that finds no room to keep its own (then it frees the others with it),
//!   also the ones kept beyond a bound `set_max_concurrency` shrank (which frees nothing
//!   itself: its caller may hold a lock a `Drop` takes);
//! - by a `wait()` before it returns, on its own thread (outside a runtime, with one of
//!   the pool's entered; inside a job's poll, by a task of its runtime instead); it also
//!   waits for batches being freed elsewhere, taken before its tasks had all ended;
//! - by the engine's drop.
//!
//! They hold no lock and no slot: a kept result delays nothing of the pool's, only its
//! own `Drop`.
//!
//! Only slots on multi-thread runtimes keep anything here. The submitter of a job that
//! runs on a current-thread runtime ran on that runtime's thread (or was a plain thread,
//! whose allocations are freed across threads wherever they go), so the slot drops the
//! run and the copy itself, after the lock (`Slot::finish`): 100 to 150 instructions
//! less per job than keeping them.
//!
//! Every batch freed outside the lock holds a ticket until it is freed, so that a
//! `wait()` never returns before a result it covers is dropped.

use std::time::Duration;

use crate::task::BoxRun;

/// The most ended jobs kept, whatever the pool's size.
const MOST: usize = 256;

/// A submit frees the kept jobs once this many wait (fewer in a pool smaller than this).
const BATCH: usize = 32;

/// How long a kept job waits at most for a submitter, while the pool stays busy.
pub(crate) const REAP_AFTER: Duration = Duration::from_millis(2);

/// What one ended job leaves that its submitter made: a future's run, with the result
/// nobody wants if its handle was dropped; or a recipe's copy (SmartAioPool): once the
/// run is dropped, its last copy, with the recipe, what it captured and (unless the handle
/// still holds it) the task's allocation.
// Held only to be dropped, on the submitter's thread.
#[allow(dead_code)]
pub(crate) enum Grave<J> {
    Run(BoxRun),
    Copy(J),
}

/// Kept graves taken to be dropped outside the lock; [`Graves::done`] with its ticket
/// once they are.
pub(crate) struct Batch<J> {
    graves: Vec<Grave<J>>,
    ticket: u64,
}

impl<J> Batch<J> {
    /// Drops them (a panic in a `Drop` is caught: the panic hook has shown it); returns
    /// the ticket to hand to [`Graves::done`].
    pub(crate) fn drop_all(self) -> u64 {
        for grave in self.graves {
            super::drop_quietly(grave);
        }
        self.ticket
    }
}

/// The kept graves of one pool, under its lock.
pub(crate) struct Graves<J> {
    kept: Vec<Grave<J>>,
    /// At most this many kept (a submit takes them once `most.min(BATCH)` wait).
    most: usize,
    /// The next batch's ticket.
    next_ticket: u64,
    /// Tickets of the batches being dropped outside the lock.
    in_flight: Vec<u64>,
    /// The timer task that takes them is armed.
    timer: bool,
}

/// What [`Graves::keep`] asks of the caller.
pub(crate) enum Kept<J> {
    Done,
    /// Consider arming a timer ([`REAP_AFTER`]; see [`Graves::keep`]).
    ArmTimer,
    /// No room: drop these outside the lock (the caller's grave is kept).
    Full(Batch<J>),
}

impl<J> Graves<J> {
    /// For a pool that holds at most `size` jobs (queued and running).
    pub(crate) fn new(size: usize) -> Self {
        let mut graves = Graves {
            kept: Vec::new(),
            most: 1,
            next_ticket: 0,
            in_flight: Vec::new(),
            timer: false,
        };
        graves.resize(size);
        graves
    }

    /// The pool now holds at most `size` jobs (`set_max_concurrency`). What is kept
    /// beyond the new bound is not taken here: its `Drop`s (user code: what a recipe
    /// captured, a detached task's result) would run on the caller's thread, which may
    /// hold a lock they take, and `set_max_concurrency` is not one of the places the crate
    /// docs say they run. A timer is armed while anything is kept (see
    /// [`keep`](Self::keep)): it frees them within [`REAP_AFTER`], or the next job's end
    /// finds the graves full and frees them on its slot's thread.
    pub(crate) fn resize(&mut self, size: usize) {
        self.most = size.clamp(1, MOST);
    }

    /// Keeps `grave`, left by a job that ran on a multi-thread runtime. Asks for a timer
    /// when none is armed; the caller arms one ([`arm_timer`](Self::arm_timer)) or,
    /// with no runtime to run it, takes them all.
    pub(crate) fn keep(&mut self, grave: Grave<J>) -> Kept<J> {
        if self.kept.len() >= self.most {
            // Not empty: there is a batch, and a timer is armed since the first was kept.
            let full = self.take_all();
            self.kept.push(grave);
            return full.map_or(Kept::Done, Kept::Full);
        }
        self.kept.push(grave);
        if self.timer {
            Kept::Done
        } else {
            Kept::ArmTimer
        }
    }

    /// After [`Kept::ArmTimer`]: the caller armed a timer.
    pub(crate) fn arm_timer(&mut self) {
        self.timer = true;
    }

    /// A timer fired (or was dropped): takes what is kept.
    pub(crate) fn timer_fired(&mut self) -> Option<Batch<J>> {
        self.timer = false;
        self.take_all()
    }

    /// Whether a submit should take them.
    pub(crate) fn for_submitter(&self) -> bool {
        self.kept.len() >= self.most.min(BATCH)
    }

    /// Takes everything kept, with a ticket; `None` if nothing is.
    pub(crate) fn take_all(&mut self) -> Option<Batch<J>> {
        if self.kept.is_empty() {
            return None;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.in_flight.push(ticket);
        // The next ones go to a vector of a batch's size at once (one allocation per
        // batch, not one per doubling).
        let graves = std::mem::replace(&mut self.kept, Vec::with_capacity(self.most.min(BATCH)));
        Some(Batch { graves, ticket })
    }

    /// The batch with `ticket` was dropped.
    pub(crate) fn done(&mut self, ticket: u64) {
        if let Some(pos) = self.in_flight.iter().position(|&t| t == ticket) {
            self.in_flight.swap_remove(pos);
        }
    }

    /// Tickets below this were given before now.
    pub(crate) fn horizon(&self) -> u64 {
        self.next_ticket
    }

    /// Whether every batch with a ticket below `horizon` was dropped.
    pub(crate) fn settled(&self, horizon: u64) -> bool {
        self.in_flight.iter().all(|&t| t >= horizon)
    }

    /// Everything kept, for the engine's drop.
    pub(crate) fn drain(&mut self) -> Vec<Grave<J>> {
        std::mem::take(&mut self.kept)
    }
}
