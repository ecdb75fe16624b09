//! The runtimes a pool's jobs run on.
//!
//! A job runs on the runtime of the code that submitted it; from a plain thread, on the
//! pool's *home*: the runtime it was created in or last used from. Each runtime the pool
//! has seen gets an entry with a liveness flag, cleared by a sentinel task that the
//! runtime drops when it shuts down, so a submit from a plain thread can tell at once
//! that its home is gone (and say so) instead of queueing a job nobody will run. The
//! sentinel also tells the engine ([`Deaths`]), which then settles the jobs queued from
//! that runtime, even if no slot of the pool ever ran there. A sentinel ends with its
//! entry, when the pool is dropped: a runtime that outlives many pools (one made per
//! request) keeps none of them.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use tokio::runtime::{Handle, Id};
use tokio::sync::oneshot;

/// Names an entry; stable while the entry lives.
pub(crate) type RtRef = u64;

/// A job that may run on any runtime (a re-run whose runtime went away).
pub(crate) const ANY: RtRef = u64::MAX;

struct Entry {
    serial: RtRef,
    id: Id,
    handle: Handle,
    alive: Arc<AtomicBool>,
    /// Dropped with the entry (the pool is gone): its sentinel task ends.
    _sentinel_ends: oneshot::Sender<()>,
    /// The queue was swept of this runtime's jobs after it died.
    swept: bool,
    /// Claimers scheduled on this runtime and not yet come (see `Engine::claim_here`);
    /// counted only while the pool knows more than one runtime, and never more than
    /// there are (fewer at worst: an entry that was alone counted none).
    claimers: usize,
}

/// Told by a runtime's sentinel when that runtime shuts down (never under the engine's
/// lock: a sentinel dropped while the lock is held, in [`Runtimes::enter`], tells nobody).
pub(crate) trait Deaths: Send + Sync {
    fn runtime_died(self: Arc<Self>, rt: RtRef);
}

pub(crate) struct Runtimes {
    entries: Vec<Entry>,
    home: Option<RtRef>,
    next_serial: RtRef,
    /// The engine, for the sentinels.
    deaths: Weak<dyn Deaths>,
}

thread_local! {
    /// Set while `add` spawns a sentinel (under the engine's lock): a sentinel dropped at
    /// once, by a runtime that has shut down already, must not call back into the engine.
    static ADDING: Cell<bool> = const { Cell::new(false) };
}

thread_local! {
    /// The last runtime this thread asked about, and whether it has tokio's time driver.
    static TIMED: Cell<Option<(Id, bool)>> = const { Cell::new(None) };
}

/// What [`has_timers`] last found on this thread for `handle`'s runtime, without asking.
pub(crate) fn timers_known(handle: &Handle) -> Option<bool> {
    let id = handle.id();
    TIMED
        .with(Cell::get)
        .and_then(|(known, timed)| (known == id).then_some(timed))
}

/// Whether `handle`'s runtime has worker threads of its own (runs its tasks without
/// anyone driving it), as opposed to a current-thread runtime.
pub(crate) fn is_multi_thread(handle: &Handle) -> bool {
    handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread
}

/// [`has_timers`] for the current runtime, if there is one: once it is known to have
/// timers, a rate-limited pool takes it when a wait offers it (what `smart_run` and
/// `shutdown_all_smart_aiopools` do for stranded pools).
pub(crate) fn ask_current_for_timers() {
    if let Ok(handle) = Handle::try_current() {
        has_timers(&handle);
    }
}

/// Whether `handle`'s runtime has tokio's time driver. Asked by making a timer (tokio has
/// no other way to tell): on a runtime without one, tokio's "timers are disabled" panic is
/// caught, its message silenced (call this outside every lock of ours). The answer is
/// remembered per thread for the last runtime asked (a runtime's `Id` is unique in a
/// process).
pub(crate) fn has_timers(handle: &Handle) -> bool {
    if let Some(timed) = timers_known(handle) {
        return timed;
    }
    if std::thread::panicking() {
        // No probe while unwinding (a `Drop` that submits): assume the runtime has timers.
        return true;
    }
    let timed = probe_timers(handle);
    TIMED.with(|t| t.set(Some((handle.id(), timed))));
    timed
}

/// [`has_timers`] without remembering the answer: for a caller that needs to know and must
/// not change what later waits on this thread offer a rate-limited pool (a
/// `shutdown_timeout`'s deadline). Asks by making a timer unless this thread knows.
pub(crate) fn timers_here(handle: &Handle) -> bool {
    timers_known(handle).unwrap_or_else(|| std::thread::panicking() || probe_timers(handle))
}

fn probe_timers(handle: &Handle) -> bool {
    let _in = handle.enter();
    !crate::blocking::panics_quietly(|| drop(tokio::time::sleep(std::time::Duration::ZERO)))
}

/// Whether the time driver of `handle`'s runtime has shut down (the runtime has: the
/// context of a `spawn_blocking` thread that outlived it, or of a `Handle::enter` guard),
/// so that a timer made there panics inside tokio at its first poll ("it is being
/// shutdown"). Asked by polling one, unconstrained (tokio's cooperative budget would
/// skip the check), its panic caught and silenced as [`has_timers`]'s; not remembered (a
/// runtime may shut down after). Only for a runtime [`has_timers`] said has the driver;
/// call it outside every lock of ours.
pub(crate) fn timers_shut_down(handle: &Handle) -> bool {
    if std::thread::panicking() {
        // No probe while unwinding: assume they work (tokio's panic then, if not).
        return false;
    }
    let _in = handle.enter();
    crate::blocking::panics_quietly(|| {
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let mut probe = std::pin::pin!(tokio::task::unconstrained(tokio::time::sleep(
            std::time::Duration::ZERO
        )));
        let _ = probe.as_mut().poll(&mut cx);
    })
}

impl Runtimes {
    pub(crate) fn new(deaths: Weak<dyn Deaths>) -> Self {
        Runtimes {
            entries: Vec::new(),
            home: None,
            next_serial: 0,
            deaths,
        }
    }

    /// The entry of `handle`'s runtime, made if new; it becomes the home. `None` if that
    /// runtime has shut down (a `spawn_blocking` thread can outlive its runtime): no entry
    /// is made and the home stays.
    #[inline]
    pub(crate) fn enter(&mut self, handle: &Handle) -> Option<RtRef> {
        let serial = match self.known(handle) {
            Some(serial) => serial,
            None => self.add(handle.clone())?,
        };
        self.home = Some(serial);
        Some(serial)
    }

    /// The entry of `handle`'s runtime if there is a live one; makes none, changes nothing.
    #[inline]
    pub(crate) fn known(&self, handle: &Handle) -> Option<RtRef> {
        let id = handle.id();
        // Newest first: the runtime in use now is nearly always the last one added.
        self.entries
            .iter()
            .rev()
            .find(|e| e.id == id && e.alive.load(Ordering::Acquire))
            .map(|e| e.serial)
    }

    /// The number of a runtime the pool registered, alive or not (a handle taken from a
    /// live entry whose runtime may have died since: a rate timer armed there is dropped
    /// with it, and says so by this number).
    pub(crate) fn serial_of(&self, handle: &Handle) -> Option<RtRef> {
        let id = handle.id();
        self.entries
            .iter()
            .rev()
            .find(|e| e.id == id)
            .map(|e| e.serial)
    }

    /// Like [`enter`](Self::enter), for a runtime offered by a `wait` or a waiting submit:
    /// it becomes known (jobs that lose their runtime may run there), but the home only if
    /// the pool has no live home, so that plain threads' jobs stay where they were going.
    pub(crate) fn offer(&mut self, handle: &Handle) -> Option<RtRef> {
        let home = self.home();
        let rt = self.enter(handle);
        if home.is_some() {
            self.home = home;
        }
        rt
    }

    fn add(&mut self, handle: Handle) -> Option<RtRef> {
        // Forget runtimes that are gone and settled; one whose queued jobs were not swept
        // yet stays until its sentinel's call does that.
        self.entries
            .retain(|e| e.alive.load(Ordering::Acquire) || !e.swept);
        if self.entries.len() == 1 {
            // Alone, it counted no claimers: from now on it counts them, from none.
            self.entries[0].claimers = 0;
        }
        let alive = Arc::new(AtomicBool::new(true));
        let serial = self.next_serial;
        self.next_serial += 1;
        let (ends, entry_gone) = oneshot::channel();
        let sentinel = Sentinel {
            alive: Arc::clone(&alive),
            serial,
            deaths: Weak::clone(&self.deaths),
            entry_gone,
        };
        // Dropped by the runtime when it shuts down; at once, inside `spawn`, if it has.
        ADDING.with(|a| a.set(true));
        drop(handle.spawn(sentinel));
        ADDING.with(|a| a.set(false));
        if !alive.load(Ordering::Acquire) {
            return None;
        }
        self.entries.push(Entry {
            serial,
            id: handle.id(),
            handle,
            alive,
            _sentinel_ends: ends,
            swept: false,
            claimers: 0,
        });
        Some(serial)
    }

    /// A live runtime for work that has none of its own: `rt` if it is alive, else the
    /// home, else the newest live runtime.
    pub(crate) fn live_or_any(&self, rt: Option<RtRef>) -> Option<RtRef> {
        rt.filter(|&rt| self.is_alive(rt))
            .or_else(|| self.home())
            .or_else(|| {
                self.entries
                    .iter()
                    .rev()
                    .find(|e| e.alive.load(Ordering::Acquire))
                    .map(|e| e.serial)
            })
    }

    /// For work that must run soon without anyone driving a runtime for it (a timer):
    /// `rt` if it is a live multi-thread runtime (its workers always run), else the newest
    /// live multi-thread runtime, else `rt` if it is alive (a current-thread runtime runs
    /// it only while some thread drives it).
    pub(crate) fn driven_handle(&self, rt: RtRef) -> Option<&Handle> {
        let own = self.handle(rt);
        own.filter(|h| is_multi_thread(h))
            .or_else(|| {
                self.entries
                    .iter()
                    .rev()
                    .filter(|e| e.alive.load(Ordering::Acquire))
                    .map(|e| &e.handle)
                    .find(|h| is_multi_thread(h))
            })
            .or(own)
    }

    /// For a timer (a rate window's, a wait's): [`driven_handle`](Self::driven_handle) of
    /// [`live_or_any`](Self::live_or_any)`(rt)`, the one rule every timer follows.
    pub(crate) fn timer_handle(&self, rt: Option<RtRef>) -> Option<&Handle> {
        self.live_or_any(rt).and_then(|rt| self.driven_handle(rt))
    }

    /// The newest live multi-thread runtime other than `rt`, if the pool knows one.
    pub(crate) fn live_multi_thread_other_than(&self, rt: RtRef) -> Option<RtRef> {
        self.entries
            .iter()
            .rev()
            .find(|e| {
                e.serial != rt && e.alive.load(Ordering::Acquire) && is_multi_thread(&e.handle)
            })
            .map(|e| e.serial)
    }

    /// The home runtime, if it is still alive.
    pub(crate) fn home(&self) -> Option<RtRef> {
        self.home.filter(|&s| self.is_alive(s))
    }

    /// The numbers of the live runtimes, oldest first.
    pub(crate) fn live(&self) -> impl Iterator<Item = RtRef> + '_ {
        self.entries
            .iter()
            .filter(|e| e.alive.load(Ordering::Acquire))
            .map(|e| e.serial)
    }

    #[inline]
    pub(crate) fn is_alive(&self, serial: RtRef) -> bool {
        self.entry(serial)
            .is_some_and(|e| e.alive.load(Ordering::Acquire))
    }

    pub(crate) fn handle(&self, serial: RtRef) -> Option<&Handle> {
        self.entry(serial)
            .filter(|e| e.alive.load(Ordering::Acquire))
            .map(|e| &e.handle)
    }

    /// Records that a runtime is gone (one of its tasks of ours was dropped unfinished).
    /// Returns `true` the first time it is called for that runtime, whoever noticed the
    /// death first (the sentinel may have): the caller then sweeps the queue of its jobs.
    pub(crate) fn mark_dead(&mut self, serial: RtRef) -> bool {
        match self.entry_mut(serial) {
            Some(e) => {
                e.alive.store(false, Ordering::Release);
                !std::mem::replace(&mut e.swept, true)
            }
            None => false,
        }
    }

    /// The handle of runtime `serial`, which the pool has registered and not forgotten
    /// (an entry is removed only once its runtime is dead and its jobs were swept; the
    /// callers pass live runtimes).
    pub(crate) fn known_handle(&self, serial: RtRef) -> &Handle {
        &self
            .entry(serial)
            .expect("a runtime the pool registered and has not forgotten")
            .handle
    }

    /// Whether the pool knows more than one runtime (dead ones included until settled).
    pub(crate) fn is_multi(&self) -> bool {
        self.entries.len() > 1
    }

    /// A claimer was scheduled on runtime `serial` (its count of claimers on the way; not
    /// counted while it is the only runtime).
    pub(crate) fn claimer_added(&mut self, serial: RtRef) {
        if !self.is_multi() {
            return;
        }
        if let Some(e) = self.entry_mut(serial) {
            e.claimers += 1;
        }
    }

    /// A claimer of runtime `serial` came (or was dropped). An entry forgotten since
    /// (its runtime gone and settled) counts nothing.
    pub(crate) fn claimer_gone(&mut self, serial: RtRef) {
        if !self.is_multi() {
            return;
        }
        if let Some(e) = self.entry_mut(serial) {
            e.claimers = e.claimers.saturating_sub(1);
        }
    }

    /// Claimers on the way on runtime `serial`.
    pub(crate) fn claimers_on(&self, serial: RtRef) -> usize {
        self.entry(serial).map_or(0, |e| e.claimers)
    }

    /// No claimer is on its way any more (the exit take-over: the old generation's
    /// claimers exit when polled).
    pub(crate) fn forget_claimers(&mut self) {
        self.entries.iter_mut().for_each(|e| e.claimers = 0);
    }

    #[inline]
    fn entry(&self, serial: RtRef) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.serial == serial)
    }

    fn entry_mut(&mut self, serial: RtRef) -> Option<&mut Entry> {
        self.entries.iter_mut().rev().find(|e| e.serial == serial)
    }
}

/// A task on a runtime the pool knows, pending until that runtime drops it (it shuts
/// down: the sentinel tells the engine) or the pool is dropped (its entry goes, and the
/// sentinel ends; the engine, gone, is told nothing). Before it ended then, every pool
/// left its sentinel on each runtime it had used, with the engine's allocation (held by
/// `deaths`), until that runtime ended (RELIABILITY.md, finding 164).
struct Sentinel {
    alive: Arc<AtomicBool>,
    serial: RtRef,
    deaths: Weak<dyn Deaths>,
    /// Ready (closed) once the entry is dropped.
    entry_gone: oneshot::Receiver<()>,
}

impl Future for Sentinel {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.entry_gone).poll(cx).map(drop)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
        // Dropped inside `add` (under the engine's lock): `add` sees the flag instead.
        if ADDING.try_with(Cell::get).unwrap_or(false) {
            return;
        }
        if let Some(engine) = self.deaths.upgrade() {
            engine.runtime_died(self.serial);
        }
    }
}
