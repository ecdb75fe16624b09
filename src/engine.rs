//! The machinery shared by the three pools.
//!
//! # Design
//!
//! A pool is an [`Engine`]: an admission [`Semaphore`] with `max_concurrency +
//! max_queue_size` permits, a FIFO queue, and a few *driver* tasks (one per runtime worker
//! thread). A submit takes a permit (waiting while there is none: that is the
//! backpressure), pushes the job and, if a driver is idle, wakes it. A driver pulls jobs
//! while fewer than the limit are running and polls its jobs together in a
//! [`FuturesUnordered`]; when a job finishes, the driver releases its permit and pulls the
//! next one. So a job costs no `tokio::spawn`, yet every runtime thread takes part.
//!
//! All bookkeeping (queue, counters, idle drivers, waiters) lives under one `std` mutex that
//! is held only for short, non-blocking sections; user code (futures, recipes, drops of
//! user futures) never runs under it. Wake-ups are race-free because a driver registers
//! its waker under the same lock under which it found nothing to do.
//!
//! `wait()` semantics ("everything submitted so far") come from *epochs*: each job is
//! tagged with the epoch current at its submission; a waiter bumps the epoch and waits
//! until no job of an older epoch is left.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::runtime::Handle;
use tokio::sync::{Notify, Semaphore, TryAcquireError};
use tokio::time::Instant;

use crate::error::{CancelReason, SubmitErrorKind};
use crate::stats::{PoolStats, ShutdownReport};

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Panicked,
    Cancelled,
}

/// A job while it runs: a future that reports how it ended, and can be told to give up.
pub(crate) trait RunJob: Future<Output = Outcome> + Send {
    /// Tells the job's handle that it was cancelled for `reason`; the job is dropped next.
    fn cancel(self: Pin<&mut Self>, reason: CancelReason);

    /// The job will be polled with a new waker from now on.
    fn rearm(self: Pin<&mut Self>);
}

pub(crate) type BoxRun = Pin<Box<dyn RunJob>>;

/// A queued job.
pub(crate) trait Job: Send + Sized + 'static {
    /// Whether a run interrupted by a runtime shutdown is queued again (recipes) rather
    /// than reported as cancelled (futures).
    const RERUN: bool;

    /// A copy kept while the job runs, for re-running it (only for `RERUN` jobs).
    fn keep(&self) -> Option<Self>;

    /// Starts a run. May call user code (a recipe); never called under the engine lock.
    fn start(self) -> BoxRun;

    /// Drops a job that will never run, telling its handle why.
    fn cancel(self, reason: CancelReason);
}

/// Which pool an engine serves; used in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolKind {
    Common,
    NoQueue,
    Smart,
}

impl PoolKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            PoolKind::Common => "CommonAioPool",
            PoolKind::NoQueue => "NoQueueAioPool",
            PoolKind::Smart => "SmartAioPool",
        }
    }
}

/// Elastic worker settings (SmartAioPool).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ElasticConfig {
    pub(crate) min_workers: usize,
    pub(crate) idle_timeout: Duration,
}

struct Elastic {
    config: ElasticConfig,
    /// When each idle worker became idle; oldest at the front. Its length is always
    /// `limit - running`.
    idle_since: VecDeque<Instant>,
    /// Whether the janitor waits without a deadline and needs a notification.
    janitor_parked: bool,
}

struct Queued<J> {
    job: J,
    epoch: u64,
    id: u64,
}

struct State<J> {
    queue: VecDeque<Queued<J>>,
    /// Jobs holding a slot: being polled, or at the front of the queue with a slot
    /// reserved (`reserved` of them), about to be pulled by a driver.
    running: usize,
    /// Jobs at the front of the queue that already hold a slot. Jobs without one exist only
    /// while every slot is taken, so `queue.len() - reserved <= max_queue_size`.
    reserved: usize,
    /// A driver of the current set was dropped by its runtime: the others are about to be
    /// dropped too, so they start nothing more.
    dying: bool,
    /// How many jobs may run at once now: `max_concurrency`, or the live worker count of
    /// an elastic pool.
    limit: usize,
    elastic: Option<Elastic>,

    submitted: u64,
    completed: u64,
    panicked: u64,
    cancelled: u64,
    abandoned: u64,
    /// Jobs cancelled because the runtime driving the pool went away.
    lost_to_runtime: u64,

    closed: bool,
    /// Running jobs now waiting for a handle of a task of this pool (see `Probe`).
    waiting_on_own: usize,
    /// Running jobs with an id below this are cancelled with `cancel_reason` (abandoned at
    /// a shutdown deadline, or `cancel_all`).
    cancel_before: u64,
    cancel_reason: CancelReason,

    /// Drivers of the current generation still alive.
    drivers: usize,
    /// Bumped when a new set of drivers takes over (at process exit); stale drivers stop.
    generation: u64,
    /// Waker of each driver of this generation that finished a poll; taken when woken.
    wakers: Vec<Option<Waker>>,
    runtime: Option<Handle>,

    /// Outstanding jobs per epoch, oldest first, no zero entries.
    epochs: VecDeque<(u64, usize)>,
    current_epoch: u64,

    next_id: u64,
    /// Copies of running re-runnable jobs, by id, with their epoch.
    tracked: HashMap<u64, (J, u64)>,
}

impl<J> State<J> {
    fn finish_epoch(&mut self, epoch: u64) -> bool {
        let Some(pos) = self.epochs.iter().position(|(e, _)| *e == epoch) else {
            debug_assert!(false, "job of unknown epoch {epoch}");
            return false;
        };
        self.epochs[pos].1 -= 1;
        if self.epochs[pos].1 == 0 {
            self.epochs.remove(pos);
            return pos == 0;
        }
        false
    }

    fn unfinished(&self) -> usize {
        self.queue.len() - self.reserved + self.running
    }

    /// Jobs waiting for a slot.
    fn queued(&self) -> usize {
        self.queue.len() - self.reserved
    }

    /// Gives free slots to the jobs at the front of the queue (while drivers exist to run
    /// them). Returns whether any job holds a reserved slot.
    fn reserve_slots(&mut self) -> bool {
        if self.drivers > 0 && !self.dying {
            while self.running < self.limit && self.reserved < self.queue.len() {
                self.running += 1;
                self.reserved += 1;
                if let Some(el) = &mut self.elastic {
                    el.idle_since.pop_back();
                }
            }
        }
        self.reserved > 0
    }

    /// Takes every queued job out, releasing the slots reserved for some of them.
    fn drain_queue(&mut self) -> Vec<Queued<J>> {
        for _ in 0..self.reserved {
            self.running -= 1;
            self.worker_idle();
        }
        self.reserved = 0;
        self.queue.drain(..).collect()
    }

    /// A running slot was freed; returns whether the janitor must be told.
    fn worker_idle(&mut self) -> bool {
        match &mut self.elastic {
            Some(el) => {
                el.idle_since.push_back(Instant::now());
                let notify = el.janitor_parked && self.limit > el.config.min_workers;
                if notify {
                    el.janitor_parked = false;
                }
                notify
            }
            None => false,
        }
    }

    fn take_wakers(&mut self, out: &mut Vec<Waker>) {
        out.extend(self.wakers.iter_mut().filter_map(Option::take));
    }
}

/// Returned by [`Engine::try_admit`].
pub(crate) enum AdmitError {
    Full,
    Closed,
}

pub(crate) struct Engine<J> {
    kind: PoolKind,
    max_concurrency: usize,
    max_queue_size: usize,
    admission: Semaphore,
    state: Mutex<State<J>>,
    /// Signalled when the oldest epoch drains, when the pool empties, and at close.
    changed: Notify,
    /// Wakes the elastic janitor.
    janitor: Notify,
    /// Mirror of `State::generation` so a stale driver stops without taking the lock.
    generation: AtomicU64,
}

impl<J: Job> Engine<J> {
    /// # Panics
    ///
    /// Panics if `max_concurrency` is 0 or the sizes are too large for a semaphore.
    #[track_caller]
    pub(crate) fn new(
        kind: PoolKind,
        max_concurrency: usize,
        max_queue_size: usize,
        elastic: Option<ElasticConfig>,
    ) -> Self {
        let name = kind.name();
        assert!(
            max_concurrency > 0,
            "nb_aiopool: {name}: max_concurrency must be at least 1, got 0"
        );
        let permits = max_concurrency
            .checked_add(max_queue_size)
            .filter(|p| *p <= Semaphore::MAX_PERMITS)
            .unwrap_or_else(|| {
                panic!(
                    "nb_aiopool: {name}: max_concurrency + max_queue_size = {max_concurrency} + \
                     {max_queue_size} exceeds the largest supported size ({})",
                    Semaphore::MAX_PERMITS
                )
            });
        let elastic = elastic.map(|config| {
            assert!(
                config.min_workers <= max_concurrency,
                "nb_aiopool: {name}: min_workers ({}) must not exceed max_concurrency ({max_concurrency})",
                config.min_workers
            );
            Elastic {
                config,
                idle_since: VecDeque::new(),
                janitor_parked: false,
            }
        });
        let limit = match &elastic {
            Some(el) => el.config.min_workers,
            None => max_concurrency,
        };
        let mut state = State {
            queue: VecDeque::new(),
            running: 0,
            reserved: 0,
            dying: false,
            limit,
            elastic,
            submitted: 0,
            completed: 0,
            panicked: 0,
            cancelled: 0,
            abandoned: 0,
            lost_to_runtime: 0,
            closed: false,
            waiting_on_own: 0,
            cancel_before: 0,
            cancel_reason: CancelReason::Abandoned,
            drivers: 0,
            generation: 0,
            wakers: Vec::new(),
            runtime: None,
            epochs: VecDeque::new(),
            current_epoch: 0,
            next_id: 0,
            tracked: HashMap::new(),
        };
        if let Some(el) = &mut state.elastic {
            // The first workers exist from the start; they count as idle since now. Taken
            // outside a runtime this is std's clock, which is what tokio's Instant uses then.
            let now = Instant::now();
            el.idle_since.extend(std::iter::repeat_n(now, limit));
        }
        Engine {
            kind,
            max_concurrency,
            max_queue_size,
            admission: Semaphore::new(permits),
            state: Mutex::new(state),
            changed: Notify::new(),
            janitor: Notify::new(),
            generation: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<J>> {
        // No user code runs under the lock, so a poisoned lock means a bug in this crate;
        // the state is still consistent between statements, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn kind(&self) -> PoolKind {
        self.kind
    }

    pub(crate) fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    pub(crate) fn max_queue_size(&self) -> usize {
        self.max_queue_size
    }

    /// Identifies this engine for the nested-submission and nested-await checks.
    pub(crate) fn id(&self) -> usize {
        self as *const Self as *const () as usize
    }

    /// Whether the current code runs inside a job of this pool.
    pub(crate) fn in_own_job(&self) -> bool {
        CURRENT_POOL.with(|c| c.get()) == self.id()
    }

    // ----- admission -------------------------------------------------------------------

    pub(crate) fn try_admit(&self) -> Result<(), AdmitError> {
        match self.admission.try_acquire() {
            Ok(permit) => {
                // The permit is given back with `add_permits` when the job finishes.
                permit.forget();
                Ok(())
            }
            Err(TryAcquireError::NoPermits) => Err(AdmitError::Full),
            Err(TryAcquireError::Closed) => Err(AdmitError::Closed),
        }
    }

    /// Waits for room. Cancel safe: dropping the future takes no permit.
    pub(crate) async fn admit(&self) -> Result<(), AdmitError> {
        match self.admission.acquire().await {
            Ok(permit) => {
                permit.forget();
                Ok(())
            }
            Err(_) => Err(AdmitError::Closed),
        }
    }

    /// Admission for `submit().await`: refuses a nested submit into a full pool instead of
    /// waiting (which would hold a slot while waiting for one). Cancel safe.
    pub(crate) async fn admit_submit(&self) -> Result<(), SubmitErrorKind> {
        match self.try_admit() {
            Ok(()) => Ok(()),
            Err(AdmitError::Closed) => Err(SubmitErrorKind::Closed),
            Err(AdmitError::Full) if self.in_own_job() => Err(SubmitErrorKind::WouldDeadlock),
            Err(AdmitError::Full) => self.admit().await.map_err(|_| SubmitErrorKind::Closed),
        }
    }

    /// Admission for `blocking_submit`: parks the calling (non-async) thread while full.
    ///
    /// # Panics
    ///
    /// Panics if the thread has a tokio runtime context.
    #[track_caller]
    pub(crate) fn admit_blocking(&self) -> Result<(), SubmitErrorKind> {
        crate::blocking::assert_not_in_runtime("blocking_submit", "submit(..).await");
        match self.try_admit() {
            Ok(()) => Ok(()),
            Err(AdmitError::Closed) => Err(SubmitErrorKind::Closed),
            Err(AdmitError::Full) => {
                crate::blocking::block_on(self.admit()).map_err(|_| SubmitErrorKind::Closed)
            }
        }
    }

    fn release(&self, n: usize) {
        if n > 0 {
            self.admission.add_permits(n);
        }
    }

    // ----- submission ------------------------------------------------------------------

    /// Queues an admitted job and wakes a driver if one can take it.
    ///
    /// # Panics
    ///
    /// Panics if the pool has never run and there is no tokio runtime to start it on.
    #[track_caller]
    pub(crate) fn push<T>(
        self: &Arc<Self>,
        item: T,
        make: impl FnOnce(T, u64) -> J,
    ) -> Result<(), T> {
        let mut wake = None;
        let spawn;
        {
            let mut st = self.lock();
            if st.closed {
                drop(st);
                self.release(1);
                return Err(item);
            }
            spawn = match self.prepare_start(&mut st) {
                Ok(spawn) => spawn,
                Err(()) => {
                    drop(st);
                    self.release(1);
                    panic!(
                        "nb_aiopool: {}: no tokio runtime to run tasks on; submit from inside a \
                         runtime at least once before using blocking_submit from plain threads",
                        self.kind.name()
                    );
                }
            };
            let epoch = st.current_epoch;
            match st.epochs.back_mut() {
                Some((e, n)) if *e == epoch => *n += 1,
                _ => st.epochs.push_back((epoch, 1)),
            }
            let id = st.next_id;
            st.next_id += 1;
            st.submitted += 1;
            st.queue.push_back(Queued {
                job: make(item, id),
                epoch,
                id,
            });
            let queued = st.queued();
            let st = &mut *st;
            if let Some(el) = &mut st.elastic {
                // Add a worker when queued tasks outnumber idle ones.
                if queued > st.limit - st.running && st.limit < self.max_concurrency {
                    st.limit += 1;
                    el.idle_since.push_back(Instant::now());
                }
            }
            if st.reserve_slots() {
                wake = st.wakers.iter_mut().find_map(Option::take);
            }
        }
        if let Some(spawn) = spawn {
            self.spawn_drivers(spawn);
        }
        if let Some(w) = wake {
            w.wake();
        }
        Ok(())
    }

    /// Under the lock: if no drivers are alive, records that a new set starts, and returns
    /// what to spawn once the lock is released.
    #[allow(clippy::result_unit_err)]
    fn prepare_start(&self, st: &mut State<J>) -> Result<Option<(Handle, u64, usize)>, ()> {
        if st.drivers > 0 {
            return Ok(None);
        }
        let handle = match Handle::try_current() {
            Ok(h) => h,
            Err(_) => st.runtime.clone().ok_or(())?,
        };
        Ok(Some(self.claim_drivers(st, handle)))
    }

    fn claim_drivers(&self, st: &mut State<J>, handle: Handle) -> (Handle, u64, usize) {
        let n = handle.metrics().num_workers().max(1);
        st.drivers = n;
        st.dying = false;
        st.wakers = vec![None; n];
        st.runtime = Some(handle.clone());
        (handle, st.generation, n)
    }

    fn spawn_drivers(self: &Arc<Self>, (handle, generation, n): (Handle, u64, usize)) {
        for slot in 0..n {
            handle.spawn(Driver {
                engine: Arc::clone(self),
                slot,
                generation,
                in_flight: FuturesUnordered::new(),
                cancel_seen: 0,
                exited: false,
                finished: Finished::default(),
                started: Vec::new(),
            });
        }
        if self.lock().elastic.is_some() {
            handle.spawn(janitor(Arc::clone(self), generation));
        }
    }

    /// Starts drivers if there is queued work and none are alive (after a runtime change).
    pub(crate) fn ensure_started(self: &Arc<Self>) {
        let spawn = {
            let mut st = self.lock();
            if st.queue.is_empty() {
                return;
            }
            let spawn = self.prepare_start(&mut st).ok().flatten();
            st.reserve_slots();
            spawn
        };
        if let Some(spawn) = spawn {
            self.spawn_drivers(spawn);
        }
    }

    // ----- observation -----------------------------------------------------------------

    pub(crate) fn stats(&self) -> PoolStats {
        let st = self.lock();
        PoolStats {
            queued: st.queued(),
            running: st.running,
            submitted: st.submitted,
            completed: st.completed,
            panicked: st.panicked,
            cancelled: st.cancelled,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// (live workers, running) of an elastic pool; for others `limit` is max_concurrency.
    pub(crate) fn workers(&self) -> (usize, usize) {
        let st = self.lock();
        (st.limit, st.running)
    }

    /// Unfinished tasks and tasks lost to runtime shutdowns, for the exit report.
    pub(crate) fn exit_figures(&self) -> crate::registry::ExitFigures {
        let st = self.lock();
        crate::registry::ExitFigures {
            kind: self.kind,
            max_concurrency: self.max_concurrency,
            unfinished: st.unfinished(),
            lost: st.lost_to_runtime,
        }
    }

    // ----- waiting and shutdown --------------------------------------------------------

    /// Waits until every job submitted before this call has finished. The set of jobs is
    /// fixed when this is *called*, not when the future is first polled.
    ///
    /// Cancel safe: dropping the future only stops the wait.
    pub(crate) fn wait_all(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let target = {
            let mut st = self.lock();
            let target = st.current_epoch;
            if st.epochs.back().is_some_and(|(e, _)| *e == target) {
                st.current_epoch += 1;
            }
            target
        };
        let engine = Arc::clone(self);
        async move {
            engine.ensure_started();
            loop {
                let mut notified = pin!(engine.changed.notified());
                notified.as_mut().enable();
                {
                    let st = engine.lock();
                    if st.epochs.front().is_none_or(|(e, _)| *e > target) {
                        return;
                    }
                }
                notified.await;
            }
        }
    }

    /// Stops intake: later submits fail, waiting submitters are refused, and drivers exit
    /// once the queue is drained. Idempotent.
    pub(crate) fn close(&self) {
        let mut wakers = Vec::new();
        {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            st.take_wakers(&mut wakers);
        }
        self.admission.close();
        self.janitor.notify_one();
        self.changed.notify_waiters();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Closes the pool and waits until every queued and running job has finished.
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        self.close();
        self.wait_all().await;
    }

    /// Like [`shutdown`](Self::shutdown), but abandons what is left at the deadline.
    pub(crate) async fn shutdown_timeout(self: &Arc<Self>, timeout: Duration) -> ShutdownReport {
        let ended_before = |st: &State<J>| st.completed + st.panicked + st.cancelled - st.abandoned;
        let (start_ended, start_abandoned) = {
            let st = self.lock();
            (ended_before(&st), st.abandoned)
        };
        self.close();
        if tokio::time::timeout(timeout, self.wait_all())
            .await
            .is_err()
        {
            self.abandon();
            self.wait_all().await;
        }
        let st = self.lock();
        ShutdownReport {
            finished: ended_before(&st) - start_ended,
            abandoned: st.abandoned - start_abandoned,
        }
    }

    /// Drops every queued job and tells the drivers to drop their running ones.
    fn abandon(&self) {
        self.cancel_all(CancelReason::Abandoned);
    }

    /// Cancels every job queued or running now with `reason`: queued ones are dropped at
    /// once, running ones by their drivers at their next poll.
    pub(crate) fn cancel_all(&self, reason: CancelReason) {
        let mut wakers = Vec::new();
        let jobs = {
            let mut st = self.lock();
            st.cancel_before = st.next_id;
            st.cancel_reason = reason;
            let jobs = st.drain_queue();
            st.cancelled += jobs.len() as u64;
            if reason == CancelReason::Abandoned {
                st.abandoned += jobs.len() as u64;
            }
            st.take_wakers(&mut wakers);
            jobs
        };
        wakers.into_iter().for_each(Waker::wake);
        // Tell the handles (and drop the jobs, which may run user code) outside the lock;
        // only then are the jobs finished for waiters, so a wait never returns while a
        // handle of a task it covers is still unresolved.
        let epochs: Vec<u64> = jobs.iter().map(|q| q.epoch).collect();
        for q in jobs {
            q.job.cancel(reason);
        }
        self.finish_epochs(&epochs);
    }

    /// Marks jobs finished for waiters and gives their permits back.
    fn finish_epochs(&self, epochs: &[u64]) {
        if epochs.is_empty() {
            return;
        }
        let mut drained_front = false;
        {
            let mut st = self.lock();
            for &epoch in epochs {
                drained_front |= st.finish_epoch(epoch);
            }
        }
        self.release(epochs.len());
        if drained_front {
            self.changed.notify_waiters();
        }
    }

    /// At process exit: makes every unfinished job (queued, or running on a runtime that
    /// may never poll it again) start over under new drivers on `handle`. Returns `false`
    /// if there was nothing to do.
    pub(crate) fn take_over(self: &Arc<Self>, handle: Handle) -> bool {
        let spawn = {
            let mut st = self.lock();
            if st.unfinished() == 0 {
                return false;
            }
            st.generation += 1;
            self.generation.store(st.generation, Ordering::Release);
            let mut tracked: Vec<_> = st.tracked.drain().collect();
            // Requeue interrupted runs ahead of the queue, oldest first.
            tracked.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
            for (id, (job, epoch)) in tracked {
                st.queue.push_front(Queued { job, epoch, id });
            }
            st.running = 0;
            st.reserved = 0;
            if let Some(el) = &mut st.elastic {
                el.idle_since.clear();
                el.janitor_parked = false;
            }
            st.elastic = None;
            st.limit = self.max_concurrency;
            let spawn = self.claim_drivers(&mut st, handle);
            st.reserve_slots();
            spawn
        };
        self.spawn_drivers(spawn);
        true
    }
}

impl<J> Drop for Engine<J> {
    fn drop(&mut self) {
        // A pool dropped after losing tasks to a runtime shutdown is still reported at exit.
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let unfinished = st.queue.len() - st.reserved + st.running;
        if st.lost_to_runtime > 0 || unfinished > 0 {
            crate::registry::remember_dropped(crate::registry::ExitFigures {
                kind: self.kind,
                max_concurrency: self.max_concurrency,
                unfinished,
                lost: st.lost_to_runtime,
            });
        }
    }
}

/// What a [`TaskHandle`](crate::TaskHandle) polled inside a job may ask of that job's pool.
pub(crate) trait Probe: Send + Sync {
    /// The running job polling the handle starts waiting for task `job` of this pool.
    /// Returns `None` if `job` holds a slot but has not started (it starts soon: no
    /// count), `Some(false)` once the wait is counted (undo with `stop_waiting`), and
    /// `Some(true)` if counting it would make every slot wait for tasks of the pool
    /// itself: then no task of the pool can make progress (nothing is counted then).
    fn start_waiting(&self, job: u64) -> Option<bool>;

    /// A wait counted by `start_waiting` ended.
    fn stop_waiting(&self);
}

impl<J: Job> Probe for Engine<J> {
    fn start_waiting(&self, job: u64) -> Option<bool> {
        let mut st = self.lock();
        if let Some(pos) = st.queue.iter().position(|q| q.id == job) {
            if pos < st.reserved {
                return None; // it holds a slot and starts soon
            }
        }
        if st.waiting_on_own + 1 >= st.running && st.running >= st.limit {
            return Some(true);
        }
        st.waiting_on_own += 1;
        Some(false)
    }

    fn stop_waiting(&self) {
        let mut st = self.lock();
        st.waiting_on_own = st.waiting_on_own.saturating_sub(1);
    }
}

thread_local! {
    /// The engine whose jobs the current thread is polling, if any.
    static CURRENT_POOL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static CURRENT_PROBE: std::cell::RefCell<Option<Arc<dyn Probe>>> =
        const { std::cell::RefCell::new(None) };
}

/// The pool whose job the current thread is polling, if it is `pool`.
pub(crate) fn current_probe(pool: usize) -> Option<Arc<dyn Probe>> {
    if CURRENT_POOL.with(|c| c.get()) != pool {
        return None;
    }
    CURRENT_PROBE.with(|p| p.borrow().clone())
}

struct EnterPool(usize, Option<Arc<dyn Probe>>);

impl EnterPool {
    fn enter(id: usize, probe: Arc<dyn Probe>) -> Self {
        let old_probe = CURRENT_PROBE.with(|p| p.replace(Some(probe)));
        EnterPool(CURRENT_POOL.with(|c| c.replace(id)), old_probe)
    }
}

impl Drop for EnterPool {
    fn drop(&mut self) {
        CURRENT_POOL.with(|c| c.set(self.0));
        let old = self.1.take();
        CURRENT_PROBE.with(|p| *p.borrow_mut() = old);
    }
}

/// A job being polled by a driver, with the bookkeeping needed when it ends.
struct InFlight {
    run: BoxRun,
    epoch: u64,
    id: u64,
    abandoned: bool,
}

impl Future for InFlight {
    type Output = (Outcome, u64, u64, bool);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = std::task::ready!(self.run.as_mut().poll(cx));
        Poll::Ready((outcome, self.epoch, self.id, self.abandoned))
    }
}

/// The most jobs a driver finishes or starts in one poll before yielding to the runtime.
const POLL_BUDGET: usize = 256;

/// One of a pool's long-lived tasks: pulls jobs and polls them together.
///
/// Dropped by its runtime's shutdown, it hands its running jobs back (re-runnable ones are
/// queued again, others are reported cancelled).
struct Driver<J: Job> {
    engine: Arc<Engine<J>>,
    slot: usize,
    generation: u64,
    in_flight: FuturesUnordered<InFlight>,
    /// The `cancel_before` mark this driver has applied.
    cancel_seen: u64,
    exited: bool,
    finished: Finished,
    started: Vec<Queued<J>>,
}

// Never pinned structurally: jobs are boxed or shared before they get here.
impl<J: Job> Unpin for Driver<J> {}

#[derive(Default)]
struct Finished {
    completed: u64,
    panicked: u64,
    cancelled: u64,
    abandoned: u64,
    epochs: Vec<u64>,
    ids: Vec<u64>,
}

impl Finished {
    fn count(&self) -> usize {
        self.epochs.len()
    }

    fn clear(&mut self) {
        self.completed = 0;
        self.panicked = 0;
        self.cancelled = 0;
        self.abandoned = 0;
        self.epochs.clear();
        self.ids.clear();
    }
}

impl<J: Job> Future for Driver<J> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.is_stale() {
            return Poll::Ready(()); // stale: Drop leaves the state alone
        }
        let probe: Arc<dyn Probe> = this.engine.clone();
        let _in_pool = EnterPool::enter(this.engine.id(), probe);
        // Permits of finished jobs are given back once per poll: each release may wake a
        // producer thread, and waking it for every few jobs costs more than the jobs.
        let mut released = 0;
        let poll = this.drive(cx, &mut released);
        this.engine.release(released);
        poll
    }
}

impl<J: Job> Driver<J> {
    /// Whether a newer set of drivers took over (at process exit). Checked without the
    /// lock; every state change re-checks under it.
    fn is_stale(&self) -> bool {
        self.engine.generation.load(Ordering::Acquire) != self.generation
    }

    fn drive(&mut self, cx: &mut Context<'_>, released: &mut usize) -> Poll<()> {
        // Buffers reused across polls, so a poll allocates nothing of its own.
        let mut finished = std::mem::take(&mut self.finished);
        let mut started = std::mem::take(&mut self.started);
        let poll = self.drive_with(cx, released, &mut finished, &mut started);
        self.finished = finished;
        self.started = started;
        poll
    }

    fn drive_with(
        &mut self,
        cx: &mut Context<'_>,
        released: &mut usize,
        finished: &mut Finished,
        started: &mut Vec<Queued<J>>,
    ) -> Poll<()> {
        let this = self;
        let engine = Arc::clone(&this.engine);
        let mut budget = POLL_BUDGET;
        loop {
            while budget > 0 {
                match this.in_flight.poll_next_unpin(cx) {
                    Poll::Ready(Some((outcome, epoch, id, abandoned))) => {
                        match outcome {
                            Outcome::Completed => finished.completed += 1,
                            Outcome::Panicked => finished.panicked += 1,
                            Outcome::Cancelled => finished.cancelled += 1,
                        }
                        finished.abandoned += u64::from(abandoned);
                        finished.epochs.push(epoch);
                        if J::RERUN {
                            finished.ids.push(id);
                        }
                        budget -= 1;
                    }
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }

            let mut cancel = None;
            let mut other_wake = None;
            let mut notify_changed = false;
            let mut notify_janitor = false;
            let exit;
            {
                let mut st = engine.lock();
                if st.generation != this.generation {
                    return Poll::Ready(());
                }
                // Account for finished jobs.
                st.completed += finished.completed;
                st.panicked += finished.panicked;
                st.cancelled += finished.cancelled;
                st.abandoned += finished.abandoned;
                st.running -= finished.count();
                for &epoch in &finished.epochs {
                    notify_changed |= st.finish_epoch(epoch);
                }
                for id in &finished.ids {
                    st.tracked.remove(id);
                }
                for _ in 0..finished.count() {
                    notify_janitor |= st.worker_idle();
                }
                st.reserve_slots();
                if st.cancel_before > this.cancel_seen {
                    this.cancel_seen = st.cancel_before;
                    cancel = Some((st.cancel_before, st.cancel_reason));
                }

                // Pull jobs. Beyond its fair share, a driver leaves work for a driver that
                // is waiting, so every runtime thread takes part.
                let fair = st.limit.div_ceil(st.drivers.max(1));
                while st.reserved > 0 && !st.dying && started.len() < budget {
                    if this.in_flight.len() + started.len() >= fair {
                        let slot = this.slot;
                        let queue_nonempty = !st.queue.is_empty();
                        let waiting = st
                            .wakers
                            .iter_mut()
                            .enumerate()
                            .find(|(i, w)| *i != slot && w.is_some());
                        if let Some((_, w)) = waiting {
                            if queue_nonempty {
                                other_wake = w.take();
                            }
                            break;
                        }
                    }
                    let Some(q) = st.queue.pop_front() else { break };
                    st.reserved -= 1;
                    if J::RERUN {
                        if let Some(copy) = q.job.keep() {
                            st.tracked.insert(q.id, (copy, q.epoch));
                        }
                    }
                    started.push(q);
                }
                exit = st.closed
                    && st.queue.is_empty()
                    && this.in_flight.is_empty()
                    && started.is_empty();
                if exit {
                    st.drivers -= 1;
                    st.wakers[this.slot] = None;
                    notify_changed = true;
                } else {
                    st.wakers[this.slot] = Some(cx.waker().clone());
                }
            }
            *released += finished.count();
            finished.clear();
            if notify_changed {
                engine.changed.notify_waiters();
            }
            if notify_janitor {
                engine.janitor.notify_one();
            }
            if let Some(w) = other_wake {
                w.wake();
            }
            if exit {
                this.exited = true;
                return Poll::Ready(());
            }
            let mut again = false;
            if let Some((before, reason)) = cancel {
                again |= this.cancel_in_flight(before, reason);
            }
            if !started.is_empty() {
                budget = budget.saturating_sub(started.len());
                for q in started.drain(..) {
                    this.in_flight.push(InFlight {
                        run: q.job.start(),
                        epoch: q.epoch,
                        id: q.id,
                        abandoned: false,
                    });
                }
                again = true;
            }
            if budget == 0 {
                // Let other tasks on this thread run, and come back for the jobs that are
                // ready or new (their wake-ups were already consumed by this poll).
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !again {
                return Poll::Pending;
            }
        }
    }
}

impl<J: Job> Driver<J> {
    /// Cancels running jobs with an id below `before`: each one's next poll reports it
    /// cancelled without polling user code. Returns whether any job must be polled again.
    fn cancel_in_flight(&mut self, before: u64, reason: CancelReason) -> bool {
        let old = std::mem::take(&mut self.in_flight);
        let mut any = false;
        for mut job in old {
            if job.id < before {
                job.run.as_mut().cancel(reason);
                job.abandoned = reason == CancelReason::Abandoned;
                any = true;
            } else {
                job.run.as_mut().rearm();
            }
            // Pushing again marks every job ready, so the cancelled ones are reaped.
            self.in_flight.push(job);
        }
        any
    }
}

impl<J: Job> Drop for Driver<J> {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        let mut in_flight = std::mem::take(&mut self.in_flight);
        if self.is_stale() {
            // Superseded at exit: a newer set of drivers re-runs these jobs.
            return;
        }
        // First end the runs in our hands (telling the handles, and dropping the futures,
        // which may run user code, outside the lock); only then give their slots back, so
        // no other driver starts a job, or the same task again, while they are alive.
        if !J::RERUN {
            for job in in_flight.iter_mut() {
                job.run.as_mut().cancel(CancelReason::RuntimeShutdown);
            }
        }
        let ended: Vec<(u64, u64)> = in_flight.iter().map(|j| (j.id, j.epoch)).collect();
        drop(in_flight);
        let mut cancelled_queue = Vec::new();
        let mut epochs = Vec::new();
        {
            let mut st = self.engine.lock();
            if st.generation != self.generation {
                return;
            }
            st.drivers -= 1;
            st.wakers[self.slot] = None;
            st.dying = true;
            for &(id, epoch) in &ended {
                st.running -= 1;
                st.worker_idle();
                if J::RERUN {
                    if let Some((copy, epoch)) = st.tracked.remove(&id) {
                        st.queue.push_front(Queued {
                            job: copy,
                            epoch,
                            id,
                        });
                        continue;
                    }
                }
                st.cancelled += 1;
                st.lost_to_runtime += 1;
                epochs.push(epoch);
            }
            if st.drivers == 0 && !J::RERUN {
                // No driver is left to run queued jobs: report them instead of keeping
                // their handles waiting forever.
                cancelled_queue = st.drain_queue();
                st.cancelled += cancelled_queue.len() as u64;
                st.lost_to_runtime += cancelled_queue.len() as u64;
            }
            if st.drivers == 0 {
                // Nobody is left to pull reserved jobs: they wait for the next drivers.
                for _ in 0..st.reserved {
                    st.running -= 1;
                    st.worker_idle();
                }
                st.reserved = 0;
            }
        }
        for q in cancelled_queue {
            epochs.push(q.epoch);
            q.job.cancel(CancelReason::RuntimeShutdown);
        }
        self.engine.finish_epochs(&epochs);
        // Waiters re-check, e.g. to start new drivers for requeued jobs.
        self.engine.changed.notify_waiters();
    }
}

/// Retires workers of an elastic pool that stayed idle for `idle_timeout`.
async fn janitor<J: Job>(engine: Arc<Engine<J>>, generation: u64) {
    loop {
        let next = {
            let mut st = engine.lock();
            if st.generation != generation || st.drivers == 0 {
                return;
            }
            let State { elastic, limit, .. } = &mut *st;
            let Some(el) = elastic else { return };
            let now = Instant::now();
            let mut next = None;
            while *limit > el.config.min_workers {
                match el.idle_since.front() {
                    Some(&since) if since + el.config.idle_timeout <= now => {
                        el.idle_since.pop_front();
                        *limit -= 1;
                    }
                    Some(&since) => {
                        next = Some(since + el.config.idle_timeout);
                        break;
                    }
                    None => break,
                }
            }
            el.janitor_parked = next.is_none();
            next
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = engine.janitor.notified() => {}
                }
            }
            None => engine.janitor.notified().await,
        }
    }
}
