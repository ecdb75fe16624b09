//! The submitter's side: room for a job (the backpressure: a submit waits while the
//! pool holds `max_concurrency + max_queue_size` jobs, in line by priority), and the
//! push that queues the job or reserves a slot for it.

use std::future::{poll_fn, Future};
use std::mem::ManuallyDrop;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::error::SubmitErrorKind;
use crate::observe::Stamp;
use crate::task::context;
use crate::task::wake_quietly;

use super::admission::WaitKey;
use super::job::Job;
use super::limits::Meta;
use super::{
    assert_timer_here, drop_quietly, drop_waker_quietly, no_timers_message, runtimes,
    timeout_or_never, AdmitError, Admitting, Deferred, Engine, PushError, Queued, StateGuard,
    TimedCall,
};

impl<J: Job> Engine<J> {
    /// For a pool with a rate limit: panics (before anything is taken or changed) if the
    /// calling code runs on a runtime without tokio's time driver, where its task would
    /// run. (From a plain thread a task runs on the home, which was checked when it came
    /// in.) Every submit path passes here first, in [`try_admit`](Self::try_admit).
    ///
    /// The flag's check inline, the asking apart ([`check_timers_here`](Self::check_timers_here)):
    /// with `#[inline]` alone it stayed a call in SmartAioPool's submit, 13 instructions per
    /// job of a pool without a rate limit.
    #[track_caller]
    #[inline(always)]
    pub(super) fn check_timers(&self) {
        if self.needs_timers {
            self.check_timers_here();
        }
    }

    /// [`check_timers`](Self::check_timers) of a pool with a rate limit.
    #[track_caller]
    #[inline(never)]
    fn check_timers_here(&self) {
        if let Ok(handle) = Handle::try_current() {
            if !runtimes::has_timers(&handle) {
                panic!("{}", no_timers_message(self.name));
            }
        }
    }

    #[track_caller]
    pub(crate) fn try_admit(&self) -> Result<(), AdmitError> {
        self.check_timers();
        self.lock().take_place()
    }

    /// [`try_admit`](Self::try_admit) for a `try_submit`: a refusal is reported to the
    /// observability features (a full pool as `full`, a closed one as `closed`).
    #[track_caller]
    pub(crate) fn try_admit_reported(&self) -> Result<(), AdmitError> {
        let admitted = self.try_admit();
        if let Err(refused) = admitted {
            self.refused(refused);
        }
        admitted
    }

    /// Reports a `try_submit`'s refusal (see [`try_admit_reported`](Self::try_admit_reported)).
    pub(crate) fn refused(&self, refused: AdmitError) {
        self.observer.rejected(match refused {
            AdmitError::Full => None,
            AdmitError::Closed => Some(SubmitErrorKind::Closed),
        });
    }

    /// Waits for room for a task of `priority`, behind the submitters already waiting
    /// with the same or a higher one. Cancel safe: dropping the future takes no place (one
    /// granted to it meanwhile goes to the next).
    pub(super) fn admit(&self, priority: i32) -> Admit<'_, J> {
        Admit {
            engine: self,
            priority,
            key: None,
        }
    }

    /// Admission for a map stream's input, as for `submit().await`: refuses a nested
    /// submit into a full pool instead of waiting (which would hold a slot while waiting
    /// for one), but does not report that `WouldDeadlock` here. A stream
    /// with jobs of its own in the pool waits for one of them to end and tries again, which
    /// refuses nothing; it reports the `WouldDeadlock` it stops on itself
    /// ([`reject`](Self::reject)). (Reported here, a fan-out that refused no input emitted
    /// a `submit rejected` event for each retry, several per input: a review of 286366f.)
    /// Cancel safe.
    pub(crate) async fn admit_for_stream(self: &Arc<Self>) -> Result<(), SubmitErrorKind> {
        match self.try_admit() {
            Ok(()) => Ok(()),
            Err(AdmitError::Closed) => self.admitted(Err(SubmitErrorKind::Closed)),
            Err(AdmitError::Full) if context::in_pool(self.id()) => {
                Err(SubmitErrorKind::WouldDeadlock)
            }
            Err(AdmitError::Full) => match self.full() {
                Ok(()) => self.admit_waiting(0).await,
                Err(kind) => Err(kind),
            },
        }
    }

    /// Reports a refusal of `kind` decided by the caller (see
    /// [`admit_for_stream`](Self::admit_for_stream)).
    pub(crate) fn reject(&self, kind: SubmitErrorKind) {
        self.observer.rejected(Some(kind));
    }

    /// The waiting half of an async submit's admission, once
    /// [`admit_or_wait`](Self::admit_or_wait) or [`full`](Self::full) said to wait: a
    /// caller that tries first without a future of its own saves one on every submit that
    /// finds room. `priority`: the task's (see [`admit`](Self::admit)). Cancel safe.
    ///
    /// If the pool becomes stranded meanwhile, the submit's runtime is offered; with none
    /// to offer (an executor outside tokio) no room would come: refused with `NoRuntime`,
    /// as such a submit is when it finds the pool so at once (see
    /// [`admit_blocking`](Self::admit_blocking)).
    pub(crate) async fn admit_waiting(
        self: &Arc<Self>,
        priority: i32,
    ) -> Result<(), SubmitErrorKind> {
        let mut admit = pin!(self.admit(priority));
        let admitted = poll_fn(|cx| match admit.as_mut().poll(cx) {
            Poll::Ready(a) => Poll::Ready(a.map_err(|_| SubmitErrorKind::Closed)),
            Poll::Pending if self.no_room_can_come() => {
                Poll::Ready(Err(SubmitErrorKind::NoRuntime))
            }
            Poll::Pending => Poll::Pending,
        })
        .await;
        self.admitted(admitted)
    }

    /// A wait for room with a submit's options: [`admit_waiting`](Self::admit_waiting) in
    /// line with `priority`, or, with a `limit`,
    /// [`admit_waiting_within`](Self::admit_waiting_within) it. For the waits that are
    /// made only with options (a group's `submit_with` with a watcher, a stream's input),
    /// whose futures hold the timer's room either way. Cancel safe.
    ///
    /// # Panics
    ///
    /// As [`admit_waiting_within`](Self::admit_waiting_within), with a `limit`.
    pub(crate) async fn admit_waiting_with(
        self: &Arc<Self>,
        priority: i32,
        limit: Option<Duration>,
        call: &'static TimedCall,
    ) -> Result<(), SubmitErrorKind> {
        match limit {
            None => self.admit_waiting(priority).await,
            Some(limit) => self.admit_waiting_within(limit, priority, call).await,
        }
    }

    /// For a submit whose wait for room just polled pending: whether the pool is stranded
    /// with no live runtime the caller can offer it (offered here if it has one), so that
    /// no room can come (see [`note_stranded`](Self::note_stranded), which wakes the
    /// waiting submitters when the pool becomes stranded). One load otherwise.
    pub(super) fn no_room_can_come(self: &Arc<Self>) -> bool {
        if !self.stranded.load(Ordering::Relaxed) {
            return false;
        }
        self.offer_if_stranded();
        self.stranded.load(Ordering::Relaxed)
    }

    /// [`admit_waiting`](Self::admit_waiting) that gives up after `limit` (`TimedOut`).
    /// Its timer is made only if the submit has to wait (a separate function, so that the
    /// timer does not grow every plain submit's future). Cancel safe.
    ///
    /// # Panics
    ///
    /// Where its timer cannot be made (see [`assert_timer_here`]), with this crate's
    /// message naming `call` (the submit's, or a stream input's).
    pub(crate) async fn admit_waiting_within(
        &self,
        limit: Duration,
        priority: i32,
        call: &'static TimedCall,
    ) -> Result<(), SubmitErrorKind> {
        assert_timer_here(call);
        let waited = timeout_or_never(limit, self.admit(priority), call).await;
        self.admitted(match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SubmitErrorKind::Closed),
            Err(_) => Err(SubmitErrorKind::TimedOut),
        })
    }

    /// The first step of a submit's admission: `Some` if it is decided now (admitted, or
    /// refused and reported), `None` if the submit has to wait for room (then jobs that
    /// lost their runtime are started on the submitter's first, or it could wait for ever).
    pub(crate) fn admit_or_wait(self: &Arc<Self>) -> Option<Result<(), SubmitErrorKind>> {
        match self.try_admit() {
            Ok(()) => Some(Ok(())),
            Err(AdmitError::Closed) => Some(self.admitted(Err(SubmitErrorKind::Closed))),
            Err(AdmitError::Full) => self.full().err().map(Err),
        }
    }

    /// A submit found the pool full: `Ok` if it may wait for room (then jobs that lost
    /// their runtime are started on the submitter's first, or it could wait for ever),
    /// or the refusal, reported.
    pub(crate) fn full(self: &Arc<Self>) -> Result<(), SubmitErrorKind> {
        let kind = if context::in_pool(self.id()) {
            SubmitErrorKind::WouldDeadlock
        } else if self.ensure_started() {
            return Ok(());
        } else {
            // Outside a runtime, into a pool with none alive: the room would never come.
            SubmitErrorKind::NoRuntime
        };
        self.admitted(Err(kind))
    }

    /// Reports a refusal; passes the result on.
    pub(super) fn admitted(
        &self,
        result: Result<(), SubmitErrorKind>,
    ) -> Result<(), SubmitErrorKind> {
        if let Err(kind) = result {
            self.reject(kind);
        }
        result
    }

    /// The waiting half of `blocking_submit`'s admission, once [`full`](Self::full) said
    /// to wait: parks the calling thread until there is room.
    ///
    /// If the pool becomes stranded meanwhile (the end of the runtime that ran its jobs
    /// queued their re-runs, and it knows no live runtime), the calling thread's runtime
    /// is offered; with none alive to offer (a plain thread, or a `spawn_blocking` thread
    /// of the runtime that ended, whose drop waits for that thread), no room would come:
    /// refused with `NoRuntime`, as such a submit is when it finds the pool so at once.
    ///
    /// It waits in line with `priority`, and gives up after `limit` (`TimedOut`, by the
    /// system clock) if one is given.
    pub(crate) fn admit_blocking(
        self: &Arc<Self>,
        priority: i32,
        limit: Option<Duration>,
    ) -> Result<(), SubmitErrorKind> {
        use crate::blocking::{block_on_until, Blocked};
        // A deadline past the clock's end is none.
        let deadline = limit.and_then(|l| std::time::Instant::now().checked_add(l));
        let admitted = block_on_until(self.admit(priority), || self.no_room_can_come(), deadline);
        let admitted = match admitted {
            Blocked::Done(a) => a.map_err(|_| SubmitErrorKind::Closed),
            Blocked::GaveUp => Err(SubmitErrorKind::NoRuntime),
            Blocked::TimedOut => Err(SubmitErrorKind::TimedOut),
        };
        self.admitted(admitted)
    }

    /// Gives back a place taken for a push that was refused (or for a job a stream or
    /// group did not push after all, or for an input not ready yet). Returns whether the
    /// pool is still open, read under the same lock (a stream whose input is not ready
    /// needs both: one lock).
    pub(crate) fn unadmit(&self) -> bool {
        let mut granted = Vec::new();
        let open = {
            let mut st = self.lock();
            st.admission.give_back(1, &mut granted);
            !st.closed
        };
        granted.into_iter().for_each(wake_quietly);
        open
    }

    /// Queues a job (built by `make` from `item` and the job's id, under the lock) with its
    /// flow-control settings, and starts it if a slot is free.
    ///
    /// With `admit`, the item is not yet admitted: it takes its place in the critical
    /// section that queues it (one lock for both), or comes back with
    /// [`Admitting::Full`] if there is no room (then its caller waits for room with
    /// [`full`](Self::full) and [`admit_waiting`](Self::admit_waiting), and pushes it
    /// again, admitted). Without, the caller holds a place for it, which a refusal gives
    /// back.
    ///
    /// With `reap` (an async submit), it also takes the graves kept for a submitter to
    /// free ([`graves`]), if enough wait and this thread is not polling a job.
    ///
    /// [`graves`]: super::graves
    #[track_caller]
    #[inline(always)]
    pub(crate) fn push<T>(
        self: &Arc<Self>,
        item: T,
        meta: Meta,
        reap: bool,
        admit: bool,
        make: impl FnOnce(T, u64) -> J,
    ) -> Result<(), Admitting<T>> {
        if admit {
            // As `try_admit` does.
            self.check_timers();
        }
        let current = Handle::try_current().ok();
        if self.needs_timers && current.as_ref().is_some_and(|h| !runtimes::has_timers(h)) {
            // Admitted on a runtime with timers, pushed on one without (a submit future
            // moved between runtimes): its rate window could never be kept there.
            if !admit {
                self.unadmit();
            }
            self.observer.rejected(Some(SubmitErrorKind::NoRuntime));
            return Err(Admitting::Refused(PushError::NoRuntime(item)));
        }
        // Taken before the lock: with `tracing` it asks the subscriber for the current span.
        let stamp = Stamp::now();
        // Made only by a step that may defer something (most submits, the job queued
        // behind running ones, make none: its making and `finish`'s check of it cost
        // about 35 instructions per submit). Not dropped at the end of the scope: `finish`
        // drops it only if it held anything.
        let mut later: Option<ManuallyDrop<Deferred<J>>> = None;
        {
            let mut st = self.lock();
            if st.closed {
                return self.refuse(st, !admit, PushError::Closed(item));
            }
            if admit && !st.admission.try_take() {
                // Before the runtime is entered: a submit that may never queue its job
                // (it may time out, or be dropped) must not make its runtime the home.
                return Err(Admitting::Full(item, meta));
            }
            // From here, the item holds a place.
            // The submitter's runtime; from a plain thread, or a `spawn_blocking` thread that
            // outlived its runtime, the home (or, if it has ended, another live runtime the
            // pool knows). Once the exit has taken the pool over, the home (the exit's
            // runtime) for every submit: the submitter's runtime may be one the exit froze
            // (a `spawn_blocking` thread of it goes on), and entering it would make it the
            // home, where the job's slot task would never be polled (finding 407).
            let entered = current
                .as_ref()
                .filter(|_| !st.taken_over)
                .and_then(|h| st.runtimes.enter(h));
            let rt = match entered.or_else(|| st.runtimes.live_or_any(None)) {
                Some(rt) => rt,
                None => return self.refuse(st, true, PushError::NoRuntime(item)),
            };
            let id = st.counts.submitted;
            st.counts.submitted += 1;
            self.observer.submitted();
            let job = make(item, id);
            st.queue.push(Queued {
                job,
                id,
                rt,
                plain: entered.is_none(),
                meta,
                stamp,
            });
            let st = &mut *st;
            if st.reserved > 0 && st.queue.is_sorted() && st.limits.is_some() {
                let later = later.insert(Default::default());
                // Queued ahead of reserved jobs (by its priority), it may hold them back by
                // its weight: their reservations go, and they count as queued.
                Self::clamp_reserved_to_startable(st, later);
                self.fill_free(st, Some(rt), later);
            } else if Self::may_fill(st) {
                // `fill_free`, whose check this is: without it, no record is needed.
                self.fill_free_now(st, Some(rt), later.insert(Default::default()));
            }
            self.changed(st);
            if reap && entered.is_some() && st.graves.for_submitter() && !context::polling_a_task()
            {
                Self::reap(st, later.get_or_insert_with(Default::default));
            }
        }
        match &mut later {
            Some(later) => self.finish(later),
            // What `finish` does with an untouched record.
            None => self.look_for_stuck_waits(false),
        }
        Ok(())
    }

    /// Under the lock: [`push`](Self::push) refuses its item. The place it held, if it
    /// `holds` one, goes back, and the refusal is reported.
    #[cold]
    pub(super) fn refuse<T>(
        &self,
        mut st: StateGuard<'_, J>,
        holds: bool,
        refused: PushError<T>,
    ) -> Result<(), Admitting<T>> {
        let mut granted = Vec::new();
        if holds {
            st.admission.give_back(1, &mut granted);
        }
        drop(st);
        granted.into_iter().for_each(wake_quietly);
        self.observer.rejected(Some(refused.kind()));
        Err(Admitting::Refused(refused))
    }

    /// Checks a job's weight against the pool's capacity, before it waits for room.
    pub(crate) fn check_weight(&self, meta: &Meta) -> Result<(), SubmitErrorKind> {
        // Fixed when the pool is built: no lock needed.
        match self.weight_capacity {
            Some(cap) if u64::from(meta.weight()) > cap => {
                self.observer.rejected(Some(SubmitErrorKind::TooHeavy));
                Err(SubmitErrorKind::TooHeavy)
            }
            _ => Ok(()),
        }
    }
}

/// A submitter waiting for room ([`Engine::admit`]): `Ok` once it holds a place, `Err`
/// if the pool closed first.
///
/// Its waker (the submitter's: any executor's, whose `clone` and `drop` are that
/// executor's code, which may panic or call the pool again) is cloned before the
/// engine's lock is taken, and the one it replaces, or leaves in the line of waiters when
/// dropped, is dropped after the lock is released, a panic in that drop caught
/// ([`drop_quietly`]): none of them runs in the critical section, as in tokio's own
/// semaphore. A waker that will wake the same task as the one kept is not cloned again.
///
/// # Dropping
///
/// Leaves the line of waiters; a place granted to it and not yet taken goes to the next
/// waiter.
pub(super) struct Admit<'a, J: Job> {
    engine: &'a Engine<J>,
    /// The priority of the task it is for.
    priority: i32,
    /// Its entry among the waiters, once it waits.
    key: Option<WaitKey>,
}

impl<J: Job> Future for Admit<'_, J> {
    type Output = Result<(), AdmitError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let engine = self.engine;
        let Some(key) = self.key else {
            // The first poll, made once the pool was found full: the submit most likely
            // waits, with a clone of its waker (made here, outside the lock; dropped after
            // it if the room came meanwhile).
            let waker = cx.waker().clone();
            let mut st = engine.lock();
            return match st.take_place() {
                Err(AdmitError::Full) => {
                    self.key = Some(st.admission.wait(waker, self.priority));
                    std::task::Poll::Pending
                }
                taken_or_closed => {
                    drop(st);
                    drop_quietly(waker);
                    std::task::Poll::Ready(taken_or_closed)
                }
            };
        };
        let polled = {
            let st = &mut *engine.lock();
            st.admission.poll_wait(key, cx.waker(), st.closed)
        };
        let done = match polled {
            Some(done) => done,
            None => Self::poll_anew(engine, key, cx),
        };
        if done.is_ready() {
            self.key = None;
        }
        done.map(|granted| {
            if granted {
                Ok(())
            } else {
                Err(AdmitError::Closed)
            }
        })
    }
}

impl<J: Job> Admit<'_, J> {
    /// A waiter polled with a new waker: polled again with a clone of it made outside the
    /// lock, and the waker it replaces dropped after the lock.
    #[cold]
    #[inline(never)]
    fn poll_anew(
        engine: &Engine<J>,
        key: WaitKey,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<bool> {
        let mut fresh = Some(cx.waker().clone());
        let mut left = None;
        let done = {
            let st = &mut *engine.lock();
            st.admission
                .poll_wait_with(key, &mut fresh, st.closed, &mut left)
        };
        drop_waker_quietly(left);
        drop_waker_quietly(fresh);
        done
    }
}

impl<J: Job> Drop for Admit<'_, J> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut granted = Vec::new();
            let left = self.engine.lock().admission.cancel(key, &mut granted);
            granted.into_iter().for_each(wake_quietly);
            drop_waker_quietly(left);
        }
    }
}
