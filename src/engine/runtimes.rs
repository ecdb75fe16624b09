//! The runtimes a pool's jobs run on.
//!
//! A job runs on the runtime of the code that submitted it; from a plain thread, on the
//! pool's *home*: the runtime it was created in or last used from. Each runtime the pool
//! has seen gets an entry with a liveness flag, cleared by a sentinel task that the
//! runtime drops when it shuts down, so a submit from a plain thread can tell at once
//! that its home is gone (and say so) instead of queueing a job nobody will run.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::runtime::{Handle, Id};

/// Names an entry; stable while the entry lives.
pub(crate) type RtRef = u64;

/// A job that may run on any runtime (a re-run whose runtime went away).
pub(crate) const ANY: RtRef = u64::MAX;

struct Entry {
    serial: RtRef,
    id: Id,
    handle: Handle,
    alive: Arc<AtomicBool>,
    /// The queue was swept of this runtime's jobs after it died.
    swept: bool,
}

#[derive(Default)]
pub(crate) struct Runtimes {
    entries: Vec<Entry>,
    home: Option<RtRef>,
    next_serial: RtRef,
}

impl Runtimes {
    /// The entry of `handle`'s runtime, made if new; it becomes the home.
    pub(crate) fn enter(&mut self, handle: &Handle) -> RtRef {
        let id = handle.id();
        // Newest first: the runtime in use now is nearly always the last one added.
        let found = self.entries.iter().rev().find(|e| e.id == id);
        let serial = match found {
            Some(e) if e.alive.load(Ordering::Acquire) => e.serial,
            _ => self.add(handle.clone()),
        };
        self.home = Some(serial);
        serial
    }

    fn add(&mut self, handle: Handle) -> RtRef {
        // Forget runtimes that are gone; jobs still naming one are cancelled when a slot
        // takes them (an unknown runtime counts as gone).
        self.entries.retain(|e| e.alive.load(Ordering::Acquire));
        let alive = Arc::new(AtomicBool::new(true));
        // Dropped by the runtime when it shuts down (at once, if it already has).
        drop(handle.spawn(Sentinel(Arc::clone(&alive))));
        let serial = self.next_serial;
        self.next_serial += 1;
        self.entries.push(Entry {
            serial,
            id: handle.id(),
            handle,
            alive,
            swept: false,
        });
        serial
    }

    /// The home runtime, if it is still alive.
    pub(crate) fn home(&self) -> Option<RtRef> {
        self.home.filter(|&s| self.is_alive(s))
    }

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
        match self.entries.iter_mut().rev().find(|e| e.serial == serial) {
            Some(e) => {
                e.alive.store(false, Ordering::Release);
                !std::mem::replace(&mut e.swept, true)
            }
            None => false,
        }
    }

    fn entry(&self, serial: RtRef) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.serial == serial)
    }
}

/// A task that never finishes; the runtime drops it when it shuts down.
struct Sentinel(Arc<AtomicBool>);

impl Future for Sentinel {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
