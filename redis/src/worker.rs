//! The consumer side: [`Worker`] and its builder.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{AbortHandle, Abortable};
use futures_util::FutureExt;
use nb_aiopool::CommonAioPool;
use redis::aio::ConnectionManager;
use redis::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::is_transient;
use crate::store::{self, Keys, RawEntry, FINISH_ARITY, GROUP};
use crate::Error;

/// A handler run's outcome: `Err` is the handler's failure; `Ok(Err)` is a success whose
/// value could not be encoded as JSON (not worth a retry: the handler did its work).
type HandlerFuture = Pin<Box<dyn Future<Output = Result<Result<String, String>, String>> + Send>>;
type Handler = Arc<dyn Fn(&str, JobCtx) -> Result<HandlerFuture, String> + Send + Sync>;
type ErrorHook = Arc<dyn Fn(&Error) + Send + Sync>;

tokio::task_local! {
    /// Set while a handler of a worker runs: the address of that worker's [`Inner`], so
    /// that a [`Worker::shutdown`] made inside one of its own handlers does not wait for
    /// the job that makes it.
    static IN_HANDLER_OF: usize;
}

/// Most entries one read or reclaim asks for, whatever the free slots.
const MAX_BATCH: usize = 1000;
/// Most records one acknowledgement script carries.
const MAX_FINISH_BATCH: usize = 256;
/// Most pending entries one `XPENDING` page lists when a stopping worker looks for
/// entries left under its consumer.
const PENDING_PAGE: usize = 10_000;

/// The longest handler error kept in a dead letter's reason, in bytes.
const MAX_REASON: usize = 64 * 1024;

/// A worker process's consumer: reads jobs of one queue, runs their handlers with bounded
/// local concurrency (an [`nb_aiopool::CommonAioPool`] plus one slot permit per held
/// entry), and acknowledges, retries or dead-letters them.
///
/// `Worker` is a cheap `Clone` handle: call [`run`](Worker::run) on one clone and
/// [`shutdown`](Worker::shutdown) from another (a signal handler, a test).
///
/// Guarantees:
/// - **Pull backpressure.** It reads with `COUNT` = free slots and keeps a slot for each
///   entry until that entry is acknowledged, so the entries pending under its consumer
///   name never exceed its concurrency (entries whose record Redis refused are the
///   exception: their slot is freed, and they stay pending until reclaimed after the
///   lease; so are entries a lost read reply left there).
/// - **At least once.** An entry is acknowledged and deleted only after its handler
///   finished (or failed for the last time). Entries of a worker that died are reclaimed
///   by live workers after the lease; running handlers renew their lease every lease/3,
///   and so do finished ones whose record waits to be written (until it is written or
///   given up), so a slow acknowledgement does not make a finished job run again.
///   Make handlers idempotent: a job whose worker is killed mid-run runs again (and so
///   may a job whose worker could not renew its lease for longer than the lease, on
///   another worker; a worker does not start a second run of an entry it still runs, or
///   whose record it still holds).
/// - **One outcome per entry.** An outcome (completion, result, retry or dead letter) is
///   recorded only by the worker the entry is pending under, the one that holds it: a
///   worker whose lease lapsed (a stalled runtime) while another reclaimed its entry
///   records nothing, whether or not the other has finished it (the other records the
///   outcome: its run's, or a dead letter if the job has used up `max_deliveries`); and
///   after the stream was lost, a late acknowledgement of a job from before does not
///   record its outcome for a new job that got the same id (on the worker that read the
///   new job, only a call already on its way at that read can still do so).
/// - **Bounded acknowledgements.** An acknowledgement call carries at most 256 records and
///   about 4 MB (less with the server's client eviction, `maxmemory-clients`, on); a
///   call that loses the connection (or gets no reply in time) is sent again record by
///   record, and a record whose call alone keeps losing it is given up (its job runs
///   again after the lease), so one record never holds up the others. A record is sent
///   again after a lost call only if its entry is still pending under the worker (one
///   cheap read): a call applied whose reply was lost or came too late (a big result on
///   a slow link) costs one lost call, and nothing is given up. A record given up (so
///   also one Redis refuses) is reported through [`on_error`](WorkerBuilder::on_error)
///   with its entry and job ids.
/// - **Failures.** An error or panic is retried after an exponential backoff (a sorted set
///   of delayed jobs that workers move back); after `max_deliveries` runs, or at once for
///   an unknown task or an undecodable payload, the job goes to the dead-letter stream.
/// - **Connection loss / Redis restart.** Reads, acks and maintenance retry with backoff
///   and resume; the consumer group is recreated if it vanished.
///
/// Dropping a `Worker` handle does nothing while other clones or a running
/// [`run`](Worker::run) future exist. Dropping the `run` future itself stops the worker at
/// once: background tasks end and running handlers are aborted, without acknowledging
/// anything, so their entries are reclaimed by other workers after the lease. Use [`shutdown`](Worker::shutdown) to stop cleanly.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), nb_aiopool_redis::Error> {
/// use std::time::Duration;
/// use nb_aiopool_redis::Worker;
/// #[derive(serde::Deserialize)]
/// struct Email { to: String }
///
/// let worker = Worker::builder("redis://127.0.0.1:6379", "emails")
///     .concurrency(100)
///     .lease(Duration::from_secs(30))
///     .max_deliveries(5)
///     .task("send_email", |e: Email| async move {
///         println!("sending to {}", e.to);
///         Ok::<(), String>(())
///     })
///     .build()
///     .await?;
/// let stopper = worker.clone();
/// tokio::spawn(async move {
///     tokio::signal::ctrl_c().await.ok();
///     stopper.shutdown().await;
/// });
/// worker.run().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

/// Configures and connects a [`Worker`]; from [`Worker::builder`].
///
/// Dropping the builder does nothing (no connection is made before
/// [`build`](WorkerBuilder::build)).
pub struct WorkerBuilder {
    url: String,
    name: String,
    concurrency: usize,
    lease: Duration,
    max_deliveries: u64,
    backoff_base: Duration,
    backoff_max: Duration,
    block: Duration,
    promote_interval: Duration,
    consumer: Option<String>,
    tasks: HashMap<String, Handler>,
    bad_task: Option<String>,
    on_error: Option<ErrorHook>,
}

/// What a shutdown did, from [`Worker::shutdown_timeout`] (and [`Worker::shutdown`]).
///
/// Dropping it does nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Whether every running job finished and was acknowledged before the deadline.
    pub drained: bool,
    /// Jobs still running at the deadline: their handlers were aborted and the jobs put
    /// back in the stream (same job id; the aborted run counts as a run, see
    /// [`JobCtx::attempt`]) for other workers. A job whose entry is no longer pending
    /// under this consumer (its lease lapsed and another worker reclaimed it, and may be
    /// running it) is left to that worker and not counted.
    pub released: u64,
    /// Entries found pending under this consumer after the drain and put back in the
    /// stream. Delivered by a read whose reply was lost, no handler saw them, so that
    /// delivery does not count as a run: the next run's [`JobCtx::attempt`] and
    /// [`JobCtx::is_redelivery`] are what they would have been without it. Run here, with a
    /// record that could not be written (a retry or dead letter Redis refused), that run
    /// counts, as at a deadline.
    pub leftover: u64,
    /// Entries that could not be put back (Redis refused the writes, for example at
    /// `maxmemory`, or could not be reached) and stay pending under this consumer, as far
    /// as the worker could tell. The consumer then stays in the group, so that other
    /// workers reclaim these entries after the lease (the janitor removes the empty
    /// consumer later); it leaves the group only when nothing is pending under it.
    pub left_pending: u64,
}

/// Counters of one worker since it was built, from [`Worker::stats`].
///
/// Dropping it does nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// This worker's consumer name in the group.
    pub consumer: String,
    /// Entries held right now (running, or finished and being acknowledged): at most the
    /// concurrency, and what `XPENDING` shows for this consumer, give or take entries in
    /// transit. Free slots the worker reserves while it waits for new entries do not
    /// count; an idle worker holds 0.
    pub held: u64,
    /// Handler runs that succeeded (also those whose acknowledgement came after another
    /// worker had reclaimed the entry, and so recorded nothing).
    pub succeeded: u64,
    /// Handler runs that failed (error or panic), whether retried or dead-lettered.
    pub failed: u64,
    /// Jobs this worker sent to the dead-letter stream.
    pub dead_lettered: u64,
    /// Entries this worker took over from other consumers after their lease ran out.
    pub reclaimed: u64,
    /// Redis errors met (and retried) while running.
    pub errors: u64,
    /// The last of those errors, as text.
    pub last_error: Option<String>,
}

/// What a handler registered with [`WorkerBuilder::task_with_ctx`] learns about its job.
///
/// Dropping it does nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCtx {
    id: String,
    attempt: u64,
    redelivery: bool,
}

impl JobCtx {
    /// The job's id, as [`RedisQueue::submit`](crate::RedisQueue::submit) returned it. It
    /// stays the same across retries, redeliveries and requeues.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Which run of the job this is, from 1: failed runs, deliveries to workers that
    /// died before finishing and runs aborted at a
    /// [`shutdown_timeout`](Worker::shutdown_timeout) deadline all count (at most
    /// `max_deliveries`; a requeue starts again from 1).
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// Whether an earlier run of this job was cut off before its outcome was recorded:
    /// its stream entry was delivered before (to a worker that died or lost its lease),
    /// or the job was put back in the stream by a worker stopped at a
    /// [`shutdown_timeout`](Worker::shutdown_timeout) deadline. An earlier run may have
    /// had effects already. (A retry after a failed run is not a redelivery: see
    /// [`attempt`](Self::attempt).)
    pub fn is_redelivery(&self) -> bool {
        self.redelivery
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Run,
    Graceful,
    Deadline(Instant),
}

const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const FINISHED: u8 = 2;

struct Inner {
    keys: Keys,
    consumer: String,
    concurrency: usize,
    lease: Duration,
    max_deliveries: u64,
    backoff_base: Duration,
    backoff_max: Duration,
    block: Duration,
    promote_interval: Duration,
    tasks: HashMap<String, Handler>,
    on_error: Option<ErrorHook>,
    conn: ConnectionManager,
    read_conn: ConnectionManager,
    /// The longest argument the server takes (`proto-max-bulk-len`, read when the worker
    /// was built; see [`store::max_arg_len`]): a longer result or reason is not sent.
    max_arg: u64,
    /// The most bytes of records one acknowledgement call carries (see
    /// [`store::finish_budget`], read when the worker was built); one record longer than
    /// that goes alone.
    finish_budget: u64,
    slots: Arc<Semaphore>,
    pool: CommonAioPool,
    /// Entries whose handler runs here, by id: the run's number (from `run_seq`) and its
    /// abort handle.
    running: Mutex<HashMap<String, RunningJob>>,
    run_seq: AtomicU64,
    /// Abort handles of runs whose entry id a new entry took while they ran (the stream
    /// was lost and ids restarted: finding 65): they record nothing, and are aborted
    /// with the others (a deadline, a dropped `run`).
    superseded: Mutex<Vec<AbortHandle>>,
    /// Entries whose handler ran here and whose record is not written yet (the acker
    /// removes them once it is, or once their group is gone): if one is still pending at
    /// shutdown, its run counts when it is put back (see [`Release`]). While its record
    /// waits to be written, the lease keeper renews the entry, as a running one, and this
    /// worker's reclaim does not run it again (finding 68). An entry whose record the acker
    /// gave up (Redis refused it) stays pending and stays here, marked given up (no longer
    /// renewed: it is reclaimed after the lease); the lease keeper forgets it once it is no
    /// longer pending under this consumer (another worker reclaimed and finished it),
    /// unless it ran here again meanwhile (a newer insertion number).
    ran_unrecorded: Mutex<HashMap<String, Unrecorded>>,
    ran_seq: AtomicU64,
    stop: watch::Sender<Stop>,
    done: watch::Sender<Option<ShutdownReport>>,
    state: AtomicU8,
    /// Entries held right now: live [`HeldSlot`]s.
    held: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    reclaimed: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A run that ended here and whose record is not written: see [`Inner::ran_unrecorded`].
#[derive(Clone, Copy)]
struct Unrecorded {
    /// The number of its insertion (from `ran_seq`).
    seq: u64,
    /// The acker gave its record up: the entry is no longer renewed.
    given_up: bool,
}

/// A handler running here: see [`Inner::running`].
struct RunningJob {
    run: u64,
    abort: AbortHandle,
}

/// A parsed job entry.
struct Job {
    sid: String,
    job: String,
    task: String,
    payload: String,
    /// Runs that failed before this entry was added (the `a` field).
    attempt: u64,
    rttl: u64,
    /// Deliveries of this entry, counting the current one.
    deliveries: u64,
    /// The entry is a copy put back by a worker stopped at a shutdown deadline while it
    /// ran (the `i` field): its `attempt` counts that run already.
    interrupted: bool,
}

/// One record for the FINISH script, with the slot it frees once written.
struct Record {
    fields: [String; FINISH_ARITY],
    /// The number of the run's insertion in [`Inner::ran_unrecorded`] (from `ran_seq`),
    /// or [`NO_RUN`] for a record written without a run (dead-lettered or cleared at
    /// dispatch). A run's record is sent only while that insertion is there: a new
    /// entry read with the same id (the stream was lost: finding 65) removes it, and the
    /// record, which would finish the new entry, is dropped (see [`Inner::supersede`]).
    seq: u64,
    _slot: HeldSlot,
}

/// [`Record::seq`] of a record that no handler run wrote.
const NO_RUN: u64 = u64::MAX;

impl Record {
    /// The bytes of its arguments (counted against [`Inner::finish_budget`]).
    fn len(&self) -> u64 {
        self.fields.iter().map(|f| f.len() as u64).sum()
    }
}

/// The slot of one delivered entry, from its dispatch until its record is written (or
/// the worker stops without writing it): a slot permit that is also counted in
/// [`Inner::held`], since the semaphore alone cannot tell these apart from the free
/// permits the read loop holds while it blocks. The permit is forgotten on the way in
/// and added back on drop, as dropping it would have done: one pointer instead of an
/// `OwnedSemaphorePermit` plus a pointer keeps `Record` (and `AckMsg`) small.
struct HeldSlot {
    inner: Arc<Inner>,
}

impl HeldSlot {
    fn new(inner: &Arc<Inner>, permit: OwnedSemaphorePermit) -> Self {
        debug_assert!(Arc::ptr_eq(permit.semaphore(), &inner.slots));
        debug_assert_eq!(permit.num_permits(), 1);
        permit.forget();
        // Relaxed: a statistic; nothing is ordered by it.
        inner.held.fetch_add(1, Ordering::Relaxed);
        HeldSlot {
            inner: inner.clone(),
        }
    }
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.inner.held.fetch_sub(1, Ordering::Relaxed);
        self.inner.slots.add_permits(1);
    }
}

enum AckMsg {
    Record(Record),
    Flush(oneshot::Sender<()>),
}

impl Worker {
    /// A builder for a worker of the queue `name` on the Redis server at `url`.
    ///
    /// Defaults: concurrency 10, lease 30 s, max_deliveries 5, retry backoff 1 s doubling
    /// up to 5 min.
    pub fn builder(url: &str, name: &str) -> WorkerBuilder {
        WorkerBuilder {
            url: url.to_owned(),
            name: name.to_owned(),
            concurrency: 10,
            lease: Duration::from_secs(30),
            max_deliveries: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            block: Duration::from_millis(500),
            promote_interval: Duration::from_millis(250),
            consumer: None,
            tasks: HashMap::new(),
            bad_task: None,
            on_error: None,
        }
    }

    /// This worker's consumer name (unique per build: host, pid and a random part).
    pub fn consumer_name(&self) -> &str {
        &self.inner.consumer
    }

    /// The local counters.
    pub fn stats(&self) -> WorkerStats {
        let i = &self.inner;
        WorkerStats {
            consumer: i.consumer.clone(),
            held: i.held.load(Ordering::Relaxed),
            succeeded: i.succeeded.load(Ordering::Relaxed),
            failed: i.failed.load(Ordering::Relaxed),
            dead_lettered: i.dead_lettered.load(Ordering::Relaxed),
            reclaimed: i.reclaimed.load(Ordering::Relaxed),
            errors: i.errors.load(Ordering::Relaxed),
            last_error: i
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Runs the worker until [`shutdown`](Self::shutdown) (or
    /// [`shutdown_timeout`](Self::shutdown_timeout)) is called on any clone. Redis errors
    /// while running are retried with backoff (and reported to the `on_error` hook and
    /// [`stats`](Self::stats)); they do not end `run`.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyRunning`] if this worker is running, has run already, or was shut
    /// down before it ran.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the worker at once without a drain: see the type's
    /// docs. Nothing is lost (unacknowledged entries are reclaimed after the lease), but
    /// jobs that were running may run twice.
    pub async fn run(&self) -> Result<ShutdownReport, Error> {
        let inner = &self.inner;
        if inner
            .state
            .compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::AlreadyRunning);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut guard = RunGuard {
            inner: inner.clone(),
            tasks: Vec::new(),
        };
        guard
            .tasks
            .push(tokio::spawn(acker(inner.clone(), rx)).abort_handle());
        guard
            .tasks
            .push(tokio::spawn(lease_keeper(inner.clone())).abort_handle());
        let maintenance = tokio::spawn(maintenance(inner.clone()));
        guard.tasks.push(maintenance.abort_handle());
        // The read in flight (and a maintenance call) may outlast a stop's deadline by up
        // to `block` plus the response timeout (Redis slow or not answering): running
        // handlers are aborted at the deadline meanwhile, not when they return, and the
        // reads are left `block` and `READ_GRACE` after it (see `abort_at_deadline`).
        tokio::select! {
            _ = async {
                read_loop(inner, &tx).await;
                let _ = maintenance.await;
            } => {}
            _ = abort_at_deadline(inner) => {}
        }
        let report = drain(inner, &tx).await;
        inner.done.send_replace(Some(report));
        drop(guard);
        Ok(report)
    }

    /// Stops the worker gracefully and waits until `run` has returned: no more reads,
    /// running jobs finish and are acknowledged, nothing stays pending under this
    /// consumer, which then leaves the group (unless Redis refused to take entries back:
    /// see [`ShutdownReport::left_pending`]). Waits as long as the handlers take (and, for
    /// their acknowledgements, as long as Redis is unreachable); see
    /// [`shutdown_timeout`](Self::shutdown_timeout) for a deadline. Returns at once if
    /// the worker never ran.
    ///
    /// Called inside one of this worker's own handlers (a "stop" job), it cannot wait for
    /// the job that calls it: it requests the stop and returns at once, with an empty
    /// report (`drained` false); [`run`](Self::run) returns the stop's report once that
    /// job, and the others, have ended and been acknowledged. "Inside" means that the call
    /// is made while the handler's future is being polled (in its own code, or in a future
    /// it polls: `join!`, `select!`). A call made in a task the handler spawns
    /// (`tokio::spawn(async move { w.shutdown().await })`: tokio task-locals do not cross
    /// `spawn`) is not inside it, and waits for the handler like any other: a handler that
    /// awaits such a task never ends, and neither does `run`, until a deadline is set
    /// ([`shutdown_timeout`](Self::shutdown_timeout), which aborts the handler then).
    ///
    /// The stop is requested when `shutdown` is called, not when its future is first
    /// polled: a future dropped unpolled (a `select!` branch that lost) still stops the
    /// worker, and a worker that never ran is shut down at the call (`run` then returns
    /// [`Error::AlreadyRunning`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the stop request stays in effect; only the waiting ends.
    pub fn shutdown(&self) -> impl Future<Output = ShutdownReport> + Send + 'static {
        self.inner.stop.send_if_modified(|s| {
            if *s == Stop::Run {
                *s = Stop::Graceful;
                true
            } else {
                false
            }
        });
        self.wait_unless_own_handler()
    }

    /// The wait of a shutdown requested now: none inside one of this worker's own
    /// handlers (decided at the call, where the task-local is visible).
    /// A worker that never ran is marked shut down here too, at the call (so `run`
    /// refuses it even if the returned future is dropped unpolled).
    fn wait_unless_own_handler(&self) -> impl Future<Output = ShutdownReport> + Send + 'static {
        if self
            .inner
            .state
            .compare_exchange(IDLE, FINISHED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.inner.done.send_replace(Some(ShutdownReport {
                drained: true,
                ..Default::default()
            }));
        }
        let own = self.in_own_handler();
        let this = self.clone();
        async move {
            if own {
                return ShutdownReport::default();
            }
            this.wait_done().await
        }
    }

    /// Whether the caller is a handler of this worker (its job holds a slot that the
    /// shutdown's drain waits for).
    fn in_own_handler(&self) -> bool {
        IN_HANDLER_OF
            .try_with(|w| *w == Arc::as_ptr(&self.inner) as usize)
            .unwrap_or(false)
    }

    /// Like [`shutdown`](Self::shutdown), but jobs still running after `timeout` are
    /// aborted and put back in the stream for other workers (see
    /// [`ShutdownReport::released`]). The returned future resolves by the deadline plus
    /// [`block`](WorkerBuilder::block) plus 2 s even if Redis does not answer: the read
    /// in flight is waited for until `block` and 0.5 s past the deadline, the drain's
    /// calls until `block` and 2 s past it, and what could not be put back by then stays
    /// pending ([`ShutdownReport::left_pending`]), for other workers to reclaim after the
    /// lease. A `timeout` too long to be added to the current time (`Duration::MAX`), or
    /// ending within a second of the largest time that can be, sets no deadline: as
    /// [`shutdown`](Self::shutdown).
    /// Called inside one of this worker's own handlers, it requests the stop and returns
    /// at once, as [`shutdown`](Self::shutdown) does there (see it for what "inside"
    /// means); the calling job is aborted and put back too if it still runs at the
    /// deadline. The stop and its deadline are set when it is called, not when its future
    /// is first polled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the stop request and its deadline stay in effect.
    pub fn shutdown_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = ShutdownReport> + Send + 'static {
        // tokio's timer rounds a deadline up to the next millisecond (an addition that
        // panics on overflow): a deadline too close to the largest `Instant` is none.
        let Some(deadline) = Instant::now()
            .checked_add(timeout)
            .filter(|d| d.checked_add(Duration::from_secs(1)).is_some())
        else {
            return futures_util::future::Either::Left(self.shutdown());
        };
        self.inner.stop.send_if_modified(|s| match *s {
            Stop::Deadline(d) if d <= deadline => false,
            _ => {
                *s = Stop::Deadline(deadline);
                true
            }
        });
        futures_util::future::Either::Right(self.wait_unless_own_handler())
    }

    async fn wait_done(&self) -> ShutdownReport {
        let mut rx = self.inner.done.subscribe();
        let r = rx.wait_for(|d| d.is_some()).await;
        r.ok().and_then(|d| *d).unwrap_or_default()
    }
}

/// Ends the background tasks and publishes the report when `run` returns or is dropped.
struct RunGuard {
    inner: Arc<Inner>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Handlers that did not finish will not be acknowledged by this worker: stop them
        // (their entries are reclaimed by other workers after the lease).
        for (_, job) in self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            job.abort.abort();
        }
        self.inner.abort_superseded();
        self.inner.state.store(FINISHED, Ordering::Release);
        self.inner.done.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(ShutdownReport::default());
                true
            } else {
                false
            }
        });
    }
}

impl Inner {
    fn report(&self, e: &Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        if let Some(hook) = &self.on_error {
            // Caught: it runs inside the worker's own tasks (the reads, the lease
            // renewals, the acknowledgements), which a panic would stop for good, and a
            // graceful shutdown would then wait for acknowledgements that never come.
            // The panic hook has shown the panic.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| hook(e)));
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow() != Stop::Run
    }

    /// Whether a stop's deadline has passed: entries delivered now (a read or a reclaim
    /// whose reply came after it) are left pending, for the drain to put back as
    /// leftovers (their delivery does not count as a run), rather than started only to
    /// be aborted.
    fn past_deadline(&self) -> bool {
        matches!(*self.stop.borrow(), Stop::Deadline(d) if Instant::now() >= d)
    }

    fn backoff(&self, runs: u64) -> Duration {
        let exp = runs.saturating_sub(1).min(32) as u32;
        self.backoff_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.backoff_max)
    }

    fn record(&self, kind: &str, job: &Job, attempt: u64, extra: String) -> [String; FINISH_ARITY] {
        // An ack needs neither task nor payload: leave them out of the script's arguments.
        let full = kind != "A";
        [
            kind.to_owned(),
            job.sid.clone(),
            job.job.clone(),
            if full {
                job.task.clone()
            } else {
                String::new()
            },
            if full {
                job.payload.clone()
            } else {
                String::new()
            },
            attempt.to_string(),
            job.rttl.to_string(),
            extra,
        ]
    }

    /// Routes one delivered entry: dead letter at once, or into the pool.
    fn dispatch(
        self: &Arc<Self>,
        entry: RawEntry,
        deliveries: u64,
        slot: OwnedSemaphorePermit,
        tx: &mpsc::UnboundedSender<AckMsg>,
    ) {
        let slot = HeldSlot::new(self, slot);
        let send = |fields: [String; FINISH_ARITY], slot| {
            let _ = tx.send(AckMsg::Record(Record {
                fields,
                seq: NO_RUN,
                _slot: slot,
            }));
        };
        if entry.fields.is_empty() {
            // Deleted under us: only clear the pending entry ("X": no other effect).
            let f = ["X", &entry.id, "", "", "", "0", "0", ""].map(str::to_owned);
            send(f, slot);
            return;
        }
        let job = match parse_job(&entry, deliveries) {
            Ok(job) => job,
            Err(reason) => {
                self.dead_lettered.fetch_add(1, Ordering::Relaxed);
                // Lossy UTF-8 can be three times the entry's bytes (U+FFFD for each bad
                // byte): past the server's argument limit, the dead letter would never be
                // written, and the entry would come back after every lease. Cut to the
                // entry's own length (which the server took in one argument), or 64 KB.
                let text = |f: &str| {
                    entry
                        .field(f)
                        .map(|b| {
                            cut(
                                String::from_utf8_lossy(b).into_owned(),
                                b.len().max(MAX_REASON),
                            )
                        })
                        .unwrap_or_default()
                };
                let f = [
                    "D".to_owned(),
                    entry.id.clone(),
                    entry.id.clone(),
                    text("t"),
                    text("p"),
                    "0".to_owned(),
                    "0".to_owned(),
                    // The reason quotes a field (escaped): bounded as a handler's error.
                    cut(format!("malformed entry: {reason}"), MAX_REASON),
                ];
                send(f, slot);
                return;
            }
        };
        // Saturating: `a` is whatever the entry says (anyone can write to the stream).
        // `deliveries` is at least 1.
        let runs_before = job.attempt.saturating_add(job.deliveries - 1);
        if runs_before >= self.max_deliveries {
            self.dead_lettered.fetch_add(1, Ordering::Relaxed);
            let reason = format!(
                "delivered {runs_before} times without an acknowledgement (worker died, lost \
                 its lease or was stopped at a shutdown deadline)",
            );
            send(self.record("D", &job, runs_before, reason), slot);
            return;
        }
        let Some(handler) = self.tasks.get(&job.task) else {
            self.dead_lettered.fetch_add(1, Ordering::Relaxed);
            // The task name is whatever the entry says (escaped here): bounded.
            let reason = cut(format!("unknown task {:?}", job.task), MAX_REASON);
            send(self.record("D", &job, runs_before, reason), slot);
            return;
        };
        let ctx = JobCtx {
            id: job.job.clone(),
            attempt: runs_before.saturating_add(1),
            redelivery: job.deliveries > 1 || job.interrupted,
        };
        let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(&job.payload, ctx))) {
            Ok(Ok(fut)) => fut,
            Ok(Err(e)) => {
                self.dead_lettered.fetch_add(1, Ordering::Relaxed);
                let reason = format!("cannot decode payload: {e}");
                send(self.record("D", &job, runs_before, reason), slot);
                return;
            }
            Err(p) => {
                let msg = format!("handler panicked: {}", panic_message(&*p));
                Box::pin(async move { Err(msg) })
            }
        };
        // Marks the handler's task as running a job of this worker (see `in_own_handler`).
        let fut = IN_HANDLER_OF.scope(Arc::as_ptr(self) as usize, fut);
        let (abort, registration) = AbortHandle::new_pair();
        let run = self.run_seq.fetch_add(1, Ordering::Relaxed);
        let earlier = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.sid.clone(), RunningJob { run, abort });
        if let Some(earlier) = earlier {
            // A new entry with the id of one still running here: the stream was lost, and
            // ids restarted from the clock. The earlier run's entry is gone; its record
            // would finish this one. (Not expected: a read's entries were passed through
            // `Inner::supersede` already, and the reclaim skips entries running here.)
            self.keep_superseded(earlier);
        }
        let inner = self.clone();
        let tx = tx.clone();
        let work = async move {
            let out = Abortable::new(AssertUnwindSafe(fut).catch_unwind(), registration).await;
            let Ok(out) = out else {
                return; // aborted at the shutdown deadline; the entry was released
            };
            // Under the lock of `running`, as `Inner::supersede`: a new entry read with
            // this id either finds this run still running or finds its insertion in
            // `ran_unrecorded`, never neither.
            let seq = {
                let mut running = inner.running.lock().unwrap_or_else(|p| p.into_inner());
                match running.get(&job.sid) {
                    Some(j) if j.run == run => {
                        running.remove(&job.sid);
                    }
                    // Released by a shutdown deadline meanwhile, or superseded: a new
                    // entry took this one's id (see above), and this run's entry is gone.
                    _ => return,
                }
                let seq = inner.ran_seq.fetch_add(1, Ordering::Relaxed);
                inner
                    .ran_unrecorded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(
                        job.sid.clone(),
                        Unrecorded {
                            seq,
                            given_up: false,
                        },
                    );
                seq
            };
            let runs = job.attempt.saturating_add(job.deliveries);
            let fields = match out {
                // A result longer than the server takes in one argument would make Redis
                // close the connection (the worker's, shared), and the job would run again
                // after every lease until it is dead-lettered: it cannot be stored, as
                // one that cannot be encoded.
                Ok(Ok(Ok(json))) if job.rttl > 0 && json.len() as u64 > inner.max_arg => {
                    inner.succeeded.fetch_add(1, Ordering::Relaxed);
                    inner.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    let reason = format!(
                        "the handler succeeded, but its result cannot be stored: its JSON is \
                         {} bytes; the server takes at most {} bytes in one argument \
                         (proto-max-bulk-len)",
                        json.len(),
                        inner.max_arg
                    );
                    inner.record("D", &job, runs, reason)
                }
                Ok(Ok(Ok(json))) => {
                    inner.succeeded.fetch_add(1, Ordering::Relaxed);
                    // The result goes to Redis only if the submitter asked for it.
                    let json = if job.rttl > 0 { json } else { String::new() };
                    inner.record("A", &job, runs, json)
                }
                // The handler succeeded; only its value cannot be stored. Not retried: a
                // new run would redo the work to fail the same way.
                Ok(Ok(Err(_))) if job.rttl == 0 => {
                    inner.succeeded.fetch_add(1, Ordering::Relaxed);
                    inner.record("A", &job, runs, String::new())
                }
                Ok(Ok(Err(enc))) => {
                    inner.succeeded.fetch_add(1, Ordering::Relaxed);
                    inner.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    let reason =
                        format!("the handler succeeded, but its result cannot be stored: {enc}");
                    inner.record("D", &job, runs, reason)
                }
                Ok(Err(msg)) => inner.failure(&job, runs, msg),
                Err(p) => {
                    let msg = format!("handler panicked: {}", panic_message(&*p));
                    inner.failure(&job, runs, msg)
                }
            };
            let _ = tx.send(AckMsg::Record(Record {
                fields,
                seq,
                _slot: slot,
            }));
        };
        // The pool always has room: it runs `concurrency` jobs and queues `concurrency`
        // more, and the slots admit at most `concurrency` entries (the queue only absorbs
        // the moment between a job's end and its pool slot's release). So `try_submit`
        // does not fail; if it ever did (a closed pool), the job must still run and be
        // acknowledged.
        match self.pool.try_submit(work) {
            Ok(handle) => handle.detach(),
            Err(e) => {
                tokio::spawn(e.into_inner());
            }
        }
    }

    /// Called for each entry a read (`XREADGROUP >`) delivers, before its dispatch: a
    /// read delivers only entries this worker has not seen, so a run here with the same
    /// id belongs to an entry that is gone (the stream was lost and ids restarted from
    /// the clock, finding 65; or the group was reset, and the entry runs again). That
    /// run's record would finish the new entry, now pending under this same consumer
    /// (FINISH cannot tell them apart): a run still going is superseded (it records
    /// nothing, and is still aborted at a deadline), and the record of one that ended
    /// but is not written yet is dropped (its insertion in `ran_unrecorded` removed).
    fn supersede(&self, sid: &str) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(earlier) = running.remove(sid) {
            self.keep_superseded(earlier);
        }
        self.ran_unrecorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sid);
    }

    /// A run whose id a new entry took: it records nothing, and is still aborted by a
    /// stop at its deadline or a dropped `run` ([`abort_superseded`](Self::abort_superseded)).
    fn keep_superseded(&self, run: RunningJob) {
        self.superseded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(run.abort);
    }

    /// Aborts every superseded run (the worker stops).
    fn abort_superseded(&self) {
        for abort in self
            .superseded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            abort.abort();
        }
    }

    /// Whether a record is still to be sent: not one of a run whose id a new entry took
    /// since (see [`Inner::supersede`]).
    fn live(&self, ran: &HashMap<String, Unrecorded>, r: &Record) -> bool {
        r.seq == NO_RUN || ran.get(&r.fields[1]).map(|u| u.seq) == Some(r.seq)
    }

    /// Whether this worker holds the entry `sid` without it being free for a reclaim: its
    /// handler runs here, or ran here and its record waits to be written (not given up).
    fn holds(&self, sid: &str) -> bool {
        if self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(sid)
        {
            return true;
        }
        self.ran_unrecorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sid)
            .is_some_and(|u| !u.given_up)
    }

    fn failure(&self, job: &Job, runs: u64, msg: String) -> [String; FINISH_ARITY] {
        self.failed.fetch_add(1, Ordering::Relaxed);
        // The error goes into the dead letter's reason, one argument of the script: cut
        // to a length any server takes (its `proto-max-bulk-len` is at least 1 MB).
        let msg = cut(msg, MAX_REASON);
        if runs >= self.max_deliveries {
            self.dead_lettered.fetch_add(1, Ordering::Relaxed);
            let reason = format!("failed {runs} times; last error: {msg}");
            self.record("D", job, runs, reason)
        } else {
            let delay = self.backoff(runs).as_millis().to_string();
            self.record("R", job, runs, delay)
        }
    }

    async fn sleep_or_stop(&self, d: Duration) {
        let mut rx = self.stop.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = rx.wait_for(|s| *s != Stop::Run) => {}
        }
    }
}

/// `s` cut to at most `max` bytes (at a character boundary), marked "... (cut)", the mark
/// included: a lossy field cut to its entry's own length fits where the entry did.
fn cut(mut s: String, max: usize) -> String {
    const MARK: &str = "... (cut)";
    if s.len() > max {
        let mut end = max.saturating_sub(MARK.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(MARK);
    }
    s
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

fn parse_job(e: &RawEntry, deliveries: u64) -> Result<Job, String> {
    let text = |f: &str| -> Result<Option<String>, String> {
        match e.field(f) {
            None => Ok(None),
            Some(b) => String::from_utf8(b.to_vec())
                .map(Some)
                .map_err(|_| format!("field {f:?} is not UTF-8")),
        }
    };
    let num = |f: &str| -> Result<u64, String> {
        match text(f)? {
            None => Ok(0),
            Some(s) => s
                .parse()
                .map_err(|_| format!("field {f:?} is not a number: {s:?}")),
        }
    };
    let task = text("t")?.ok_or("no task field \"t\"")?;
    let payload = text("p")?.ok_or("no payload field \"p\"")?;
    let job = text("j")?
        .filter(|j| !j.is_empty())
        .unwrap_or_else(|| e.id.clone());
    Ok(Job {
        sid: e.id.clone(),
        job,
        task,
        payload,
        attempt: num("a")?,
        rttl: num("r")?,
        deliveries: deliveries.max(1),
        interrupted: text("i")?.is_some_and(|i| i == "1"),
    })
}

/// Reads new entries with COUNT = free slots until a stop is requested.
async fn read_loop(inner: &Arc<Inner>, tx: &mpsc::UnboundedSender<AckMsg>) {
    let mut stop_rx = inner.stop.subscribe();
    let mut conn = inner.read_conn.clone();
    let mut pause = Duration::from_millis(50);
    let block_ms = store::redis_ms(inner.block).max(1);
    let mut cmd_conn = inner.conn.clone();
    let reclaim_every = (inner.lease / 2).max(Duration::from_millis(20));
    let mut next_reclaim = store::deadline_after(Instant::now(), reclaim_every);
    let mut cursor = "0-0".to_owned();
    loop {
        if inner.stopping() {
            return;
        }
        let first = tokio::select! {
            p = inner.slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop_rx.wait_for(|s| *s != Stop::Run) => return,
        };
        let mut slots = vec![first];
        while slots.len() < MAX_BATCH {
            match inner.slots.clone().try_acquire_owned() {
                Ok(p) => slots.push(p),
                Err(_) => break,
            }
        }
        // Reclaiming shares the read's slots: the read holds every free slot while it
        // blocks, so a separate reclaimer would rarely find one.
        if Instant::now() >= next_reclaim {
            next_reclaim = store::deadline_after(Instant::now(), reclaim_every);
            reclaim(inner, &mut cmd_conn, &mut cursor, &mut slots, tx).await;
            // A stop requested while the reclaim was in flight: no read after it (its
            // entries would only delay a graceful stop, or be left at a deadline).
            if inner.stopping() {
                return;
            }
            if slots.is_empty() {
                continue;
            }
        }
        // Not raced against the stop signal: a read cancelled on the wire could deliver
        // entries that nobody holds. BLOCK bounds how long the stop waits.
        let r: redis::RedisResult<Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&inner.consumer)
            .arg("COUNT")
            .arg(slots.len())
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&inner.keys.stream)
            .arg(">")
            .query_async(&mut conn)
            .await;
        match r {
            Ok(v) => {
                pause = Duration::from_millis(50);
                // A stop whose deadline passed while the read was in flight: these entries
                // would be aborted before they run. Leave them pending: the drain puts them
                // back as leftovers (their delivery does not count as a run).
                if inner.past_deadline() {
                    return;
                }
                for entry in store::parse_read_reply(v) {
                    let slot = match slots.pop() {
                        Some(s) => s,
                        // More entries than asked for (not expected): wait for a slot.
                        None => match inner.slots.clone().acquire_owned().await {
                            Ok(s) => s,
                            Err(_) => return,
                        },
                    };
                    inner.supersede(&entry.id);
                    inner.dispatch(entry, 1, slot, tx);
                }
            }
            Err(e) => {
                drop(slots);
                // UNBLOCKED: Redis 7.0 answers a read blocked on a stream that is deleted
                // meanwhile (a purge) with "UNBLOCKED the stream key no longer exists".
                if matches!(e.code(), Some("NOGROUP") | Some("UNBLOCKED")) {
                    // The stream or group vanished (Redis restarted without persistence,
                    // or the queue was purged): recreate and go on.
                    let mut c = inner.conn.clone();
                    if let Err(e) = store::ensure_group(&mut c, &inner.keys).await {
                        inner.report(&e);
                    }
                } else {
                    inner.report(&Error::Redis(e));
                }
                inner.sleep_or_stop(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Batches finished entries into FINISH scripts; frees their slots once written.
///
/// A batch closes at [`MAX_FINISH_BATCH`] records or once its records reach the byte
/// budget ([`Inner::finish_budget`]); a record that would take a batch past the budget
/// starts the next one (alone if it is longer than the budget itself).
async fn acker(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
    let mut conn = inner.conn.clone();
    let mut batch: Vec<Record> = Vec::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    // A record left over from the last batch (it did not fit): first in the next one.
    // Nothing after it was taken from the channel, so the flushes answered with the last
    // batch all came before it.
    let mut carried: Option<Record> = None;
    loop {
        let first = match carried.take() {
            Some(r) => AckMsg::Record(r),
            None => match rx.recv().await {
                Some(msg) => msg,
                None => break,
            },
        };
        let mut bytes = 0u64;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                AckMsg::Record(r) => {
                    let len = r.len();
                    if !batch.is_empty() && bytes.saturating_add(len) > inner.finish_budget {
                        carried = Some(r);
                        break;
                    }
                    bytes = bytes.saturating_add(len);
                    batch.push(r);
                }
                AckMsg::Flush(f) => flushes.push(f),
            }
            if batch.len() < MAX_FINISH_BATCH && bytes < inner.finish_budget {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            // The records written (or whose entries went with their group).
            let mut done: Vec<&Record> = Vec::with_capacity(batch.len());
            // The records given up, with their last error: their entries stay pending,
            // are no longer renewed, and are reclaimed after the lease.
            let mut given_up: Vec<(&Record, String)> = Vec::new();
            match finish(&inner, &mut conn, &batch, false).await {
                Ok(()) => done.extend(&batch),
                Err(e) => {
                    // NOGROUP: the entries are gone with their group; nothing left to
                    // acknowledge. Any other error came from one record the script could
                    // not apply, and stopped it there, before the batch's plain acks, or
                    // the call was lost (the connection closed, or no reply in time: the
                    // server may not take a call that big): send each record alone, so
                    // that the bad one fails alone. Records applied before the error are
                    // applied once: sent again, they record nothing.
                    let nogroup = e.code() == Some("NOGROUP");
                    let oom = is_oom(&e);
                    // A lost call may have been applied all the same (its reply came too
                    // late): each record is then sent again only if its entry is still
                    // pending here (one cheap read first, see `finish`: finding 70).
                    let lost = lost_with_the_call(&e);
                    let text = e.to_string();
                    // A record given up is reported once, with its last error (below).
                    if batch.len() > 1 || nogroup || oom {
                        inner.report(&Error::Redis(e));
                    }
                    // Records refused for want of memory (`OOM` at `maxmemory`): tried
                    // again below, once the others (plain acks among them, which free
                    // memory) went through.
                    let mut refused: Vec<(&Record, String)> = Vec::new();
                    if nogroup {
                        done.extend(&batch);
                    } else if batch.len() > 1 {
                        // (A batch of one failed alone already.)
                        for r in &batch {
                            match finish(&inner, &mut conn, std::slice::from_ref(r), lost).await {
                                Ok(()) => done.push(r),
                                Err(e) => {
                                    if e.code() == Some("NOGROUP") {
                                        // Gone with its group, as above.
                                        done.push(r);
                                    } else if is_oom(&e) {
                                        refused.push((r, e.to_string()));
                                    } else {
                                        given_up.push((r, e.to_string()));
                                        continue;
                                    }
                                    inner.report(&Error::Redis(e));
                                }
                            }
                        }
                    } else if oom {
                        refused.extend(batch.iter().map(|r| (r, text.clone())));
                    } else {
                        given_up.extend(batch.iter().map(|r| (r, text.clone())));
                    }
                    // A memory spike of a moment: a few tries over about 1.5 s, then the
                    // record is given up (its entry stays pending, and the job runs again
                    // after the lease), so that the acker is never held for long.
                    for pause in OOM_RETRY_PAUSES {
                        if refused.is_empty() {
                            break;
                        }
                        tokio::time::sleep(pause).await;
                        let mut still = Vec::new();
                        for (r, _) in refused {
                            match finish(&inner, &mut conn, std::slice::from_ref(r), false).await {
                                Ok(()) => done.push(r),
                                Err(e) if is_oom(&e) => still.push((r, e.to_string())),
                                Err(e) => given_up.push((r, e.to_string())),
                            }
                        }
                        refused = still;
                    }
                    given_up.extend(refused);
                }
            }
            let mut reports = Vec::new();
            {
                let mut ran = inner
                    .ran_unrecorded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                for r in done {
                    // Not a newer run's insertion (or a dropped record's: none).
                    if inner.live(&ran, r) {
                        ran.remove(&r.fields[1]);
                    }
                }
                for (r, why) in given_up {
                    if !inner.live(&ran, r) {
                        // A new entry took its id since: dropped, not given up (its
                        // error is still one met).
                        reports.push(Error::Redis(redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "acknowledgement dropped",
                            why,
                        ))));
                        continue;
                    }
                    if let Some(u) = ran.get_mut(&r.fields[1]) {
                        u.given_up = true;
                    }
                    reports.push(given_up_error(r, &why));
                }
            }
            for e in &reports {
                inner.report(e);
            }
            batch.clear();
        }
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
    }
}

/// The error reported for a record the acker gives up (its entry stays pending, and its
/// job runs again after the lease), with `why`, its last error (reported only here: one
/// record refused once is one error): the errors of its earlier tries were reported
/// already, but they do not say that this job's outcome was dropped.
fn given_up_error(r: &Record, why: &str) -> Error {
    let what = match r.fields[0].as_str() {
        "A" => "success",
        "R" => "retry",
        "D" => "dead letter",
        _ => "clearing",
    };
    Error::Redis(redis::RedisError::from((
        redis::ErrorKind::Client,
        "acknowledgement given up",
        format!(
            "the {what} record of entry {} (job {}) was not written ({why}); the entry \
             stays pending and the job runs again after the lease",
            r.fields[1], r.fields[2]
        ),
    )))
}

/// The pauses before each new try of records Redis refused with `OOM` (about 1.5 s in all).
const OOM_RETRY_PAUSES: [Duration; 5] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
];

/// Whether Redis refused a command for want of memory (`maxmemory` reached).
fn is_oom(e: &redis::RedisError) -> bool {
    e.code() == Some("OOM")
}

/// Whether an error may have come from the call itself rather than from the server's
/// state: the connection was lost during it (Redis closes the connection of a call it
/// cannot take, e.g. a client evicted at `maxmemory-clients`), or no reply came in time.
fn lost_with_the_call(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout()
}

/// How many times in a row a lone record's call may be lost (see [`lost_with_the_call`])
/// before [`finish`] asks whether Redis answers otherwise (about 0.3 s of pauses).
const LONE_RECORD_LOST_TRIES: u32 = 5;

/// Sends `records` as one FINISH script call, retrying transient errors with backoff.
///
/// Not retried, returned to the acker instead: `OOM` (see below) and, for more than one
/// record, a call lost with the connection or its response timeout (the acker then sends
/// the records one by one): such a call may be what the server cannot take, and sent
/// again whole it would fail the same way for ever (finding 66). A lone record whose call
/// is lost [`LONE_RECORD_LOST_TRIES`] times in a row, then once more after Redis answered
/// a `PING`, and Redis answers again (the server is there; this call is what fails), is
/// given up (about 0.6 s in all when the connection is closed at each call): its entry
/// stays pending and the job runs again after the lease, as for any record Redis refuses.
/// While Redis does not answer, it is tried on (an outage or a restart: the first call
/// after the reconnection goes through).
///
/// A lost call may have been applied all the same (no reply within the response timeout,
/// e.g. a big record on a slow link: finding 70). So before a lone record is sent again
/// after a lost call (`after_lost`: the acker's call of a batch holding it was lost; or
/// a call of this loop was), and before it is given up, one cheap read
/// ([`still_pending`]) asks whether its entry is still pending under this consumer; if
/// not, it is done: the record was applied, or the entry is not this worker's to finish
/// (another consumer took it, or it is gone with its group), and a re-sent FINISH would
/// record nothing anyway. Nothing is given up or reported as given up then, and the
/// acker is held one lost call, not six (31 s with calls that each time out after 5 s).
/// If that read fails too (lost, or timed out), the record is sent again, as before. The
/// normal path (a call answered) makes no such read.
///
/// Records of runs whose id a new entry took since they ended (see [`Inner::supersede`])
/// are left out of each try, and the call is not made if none is left; a lone record is
/// looked at again after the pending read above, which takes a round trip (longer behind
/// a late reply or a reconnection) during which such an entry may be read: pending under
/// this consumer, it would make the read say "still pending" and be finished by this
/// record.
///
/// Cancel safety: dropping the future stops the tries; a call already sent may still be
/// applied (a FINISH call applied twice records nothing twice).
async fn finish(
    inner: &Inner,
    conn: &mut ConnectionManager,
    records: &[Record],
    after_lost: bool,
) -> Result<(), redis::RedisError> {
    let mut pause = Duration::from_millis(20);
    let mut lost = 0u32;
    // Whether Redis answered a PING after the last lost call.
    let mut answered = false;
    // Whether the last call of these records was lost: it may have been applied.
    let mut maybe_applied = after_lost;
    loop {
        // Records whose id a new entry took since are dropped (checked before each try).
        let live: Vec<&Record> = {
            let ran = inner
                .ran_unrecorded
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            records.iter().filter(|r| inner.live(&ran, r)).collect()
        };
        if live.is_empty() {
            return Ok(());
        }
        if maybe_applied && live.len() == 1 {
            if !still_pending(inner, conn, live[0]).await {
                return Ok(());
            }
            // That read took a round trip (behind a late reply, or a reconnection): a new
            // entry with this id read meanwhile by this worker (see `Inner::supersede`)
            // is pending here too, and the record would finish it. Checked again.
            let ran = inner
                .ran_unrecorded
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !inner.live(&ran, live[0]) {
                return Ok(());
            }
        }
        let mut inv = store::FINISH.prepare_invoke();
        inv.key(&inner.keys.stream)
            .key(&inner.keys.delayed)
            .key(&inner.keys.dead)
            .key(&inner.keys.completed)
            .arg(GROUP)
            .arg(&inner.keys.result_prefix)
            .arg(&inner.consumer);
        for r in &live {
            for f in &r.fields {
                inv.arg(f);
            }
        }
        match inv.invoke_async::<i64>(conn).await {
            Ok(_) => return Ok(()),
            // OOM (maxmemory reached): refused for this batch's writes, not for the plain
            // acks, which free memory. Not retried as a whole: the acker re-sends the
            // records one by one, tries those refused again for about 1.5 s, then gives
            // them up (pending, delivered again after the lease), as any record Redis
            // refuses.
            Err(e) if is_transient(&e) && !is_oom(&e) => {
                maybe_applied = false;
                if lost_with_the_call(&e) {
                    if live.len() > 1 {
                        return Err(e);
                    }
                    maybe_applied = true;
                    lost += 1;
                    if lost >= LONE_RECORD_LOST_TRIES {
                        let pong: redis::RedisResult<String> =
                            redis::cmd("PING").query_async(conn).await;
                        if pong.is_ok() && answered {
                            // Not given up if this last call was applied after all (its
                            // error is then one met, as for the earlier lost calls).
                            if !still_pending(inner, conn, live[0]).await {
                                inner.report(&Error::Redis(e));
                                return Ok(());
                            }
                            return Err(e);
                        }
                        answered = pong.is_ok();
                    }
                }
                inner.report(&Error::Redis(e));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether the entry of record `r` is still pending under this consumer (the one read
/// [`finish`] makes after a lost call, with [`store::OWNED`]: `XPENDING <stream> <group>
/// <id> <id> 1 <consumer>` through `pcall`, so without the group it is not pending).
/// True, so that the record is sent again, if the read itself fails (lost or timed out):
/// it is not reported, the call that follows meets the same fault and reports it.
///
/// Not pending means that FINISH would record nothing for it: it removes an entry from
/// the pending list only in the script that writes the record's outcome (acknowledged
/// and deleted with it), and applies a record only to an entry pending under this
/// consumer. (The entry may also have left for another reason: reclaimed by another
/// worker, released by this worker's drain, gone with its group; a re-sent FINISH would
/// record nothing then either.) Pending does not mean that it is still this record's
/// entry: [`finish`] checks the record's insertion again after this read. On a
/// connection that is still the one of the lost call (a response timeout does not close
/// it), this read is answered after that call was.
async fn still_pending(inner: &Inner, conn: &mut ConnectionManager, r: &Record) -> bool {
    let owned: redis::RedisResult<Vec<i64>> = store::OWNED
        .key(&inner.keys.stream)
        .arg(GROUP)
        .arg(&inner.consumer)
        .arg(&r.fields[1])
        .invoke_async(conn)
        .await;
    !matches!(owned.as_deref(), Ok([0]))
}

/// Renews the lease of running entries, and of finished ones whose record waits in the
/// acker, every lease/3, until `run` ends; and forgets the
/// entries of [`Inner::ran_unrecorded`] that are no longer pending under this consumer.
async fn lease_keeper(inner: Arc<Inner>) {
    let mut conn = inner.conn.clone();
    let every = inner.lease / 3;
    // Insertions before this number were there at the previous tick.
    let mut seen_before = 0;
    loop {
        tokio::time::sleep(every).await;
        let mut ids: Vec<String> = inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        // And the entries whose record waits in the acker (not those it gave up): a slow
        // acknowledgement must not let them be reclaimed and run again (finding 68).
        ids.extend(
            inner
                .ran_unrecorded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(_, u)| !u.given_up)
                .map(|(id, _)| id.clone()),
        );
        let mut renewed = true;
        for chunk in ids.chunks(500) {
            let mut inv = store::RENEW.prepare_invoke();
            inv.key(&inner.keys.stream).arg(GROUP).arg(&inner.consumer);
            for id in chunk {
                inv.arg(id);
            }
            if let Err(e) = inv.invoke_async::<i64>(&mut conn).await {
                inner.report(&Error::Redis(e));
                renewed = false;
            }
        }
        // Housekeeping, tried again next tick: not while Redis fails (one report a tick).
        if renewed {
            forget_unowned(&inner, &mut conn, seen_before).await;
            seen_before = inner.ran_seq.load(Ordering::Relaxed);
        }
    }
}

/// Forgets the entries of [`Inner::ran_unrecorded`] inserted before `before` (there
/// since the previous tick at least: not those whose record the acker is writing now) that are no
/// longer pending under this consumer: their record was refused, and another worker has
/// reclaimed the entry since (and may have finished it). If such an entry comes back to
/// this worker, by a delivery whose handler runs it is inserted again; by one whose reply
/// was lost it is a leftover at shutdown, whose last delivery never ran.
async fn forget_unowned(inner: &Inner, conn: &mut ConnectionManager, before: u64) {
    let old: Vec<(String, u64)> = inner
        .ran_unrecorded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, u)| u.seq < before)
        .map(|(id, u)| (id.clone(), u.seq))
        .collect();
    for chunk in old.chunks(500) {
        let mut inv = store::OWNED.prepare_invoke();
        inv.key(&inner.keys.stream).arg(GROUP).arg(&inner.consumer);
        for (id, _) in chunk {
            inv.arg(id);
        }
        let owned: Vec<i64> = match inv.invoke_async(conn).await {
            Ok(v) => v,
            Err(e) => {
                inner.report(&Error::Redis(e));
                return;
            }
        };
        let mut ran = inner
            .ran_unrecorded
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for ((id, seq), owned) in chunk.iter().zip(owned) {
            // Not if it ran here again since the snapshot (a newer insertion).
            if owned == 0 && ran.get(id).map(|u| u.seq) == Some(*seq) {
                ran.remove(id);
            }
        }
    }
}

/// Promotes due retries and removes empty dead consumers, until a stop is requested.
async fn maintenance(inner: Arc<Inner>) {
    let mut conn = inner.conn.clone();
    let janitor_every = inner.lease.saturating_mul(10);
    let mut next_janitor = store::deadline_after(Instant::now(), janitor_every);
    loop {
        inner.sleep_or_stop(inner.promote_interval).await;
        if inner.stopping() {
            return;
        }
        let r: redis::RedisResult<i64> = store::PROMOTE
            .key(&inner.keys.stream)
            .key(&inner.keys.delayed)
            .key(&inner.keys.dead)
            .arg(500)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = r {
            inner.report(&Error::Redis(e));
        }
        let now = Instant::now();
        if now >= next_janitor {
            next_janitor = store::deadline_after(now, janitor_every);
            let r: redis::RedisResult<i64> = store::JANITOR
                .key(&inner.keys.stream)
                .arg(GROUP)
                .arg(&inner.consumer)
                .arg(store::redis_ms(janitor_every))
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = r {
                if e.code() != Some("NOGROUP") {
                    inner.report(&Error::Redis(e));
                }
            }
        }
    }
}

/// Takes over entries idle longer than the lease (their consumer died or is cut off),
/// at most one per slot in `slots`; the slots used go with the entries.
async fn reclaim(
    inner: &Arc<Inner>,
    conn: &mut ConnectionManager,
    cursor: &mut String,
    slots: &mut Vec<OwnedSemaphorePermit>,
    tx: &mpsc::UnboundedSender<AckMsg>,
) {
    let r: redis::RedisResult<Value> = store::RECLAIM
        .key(&inner.keys.stream)
        .arg(GROUP)
        .arg(&inner.consumer)
        .arg(store::redis_ms(inner.lease))
        .arg(cursor.as_str())
        .arg(slots.len())
        .invoke_async(conn)
        .await;
    let v = match r {
        Ok(v) => v,
        Err(e) => {
            if e.code() != Some("NOGROUP") {
                inner.report(&Error::Redis(e));
            }
            *cursor = "0-0".to_owned();
            return;
        }
    };
    let mut parts = match v {
        Value::Array(a) => a.into_iter(),
        _ => Vec::new().into_iter(),
    };
    *cursor = parts
        .next()
        .as_ref()
        .and_then(store::string)
        .unwrap_or_else(|| "0-0".to_owned());
    let entries = parts.next().map(store::parse_entries).unwrap_or_default();
    let counts: Vec<u64> = parts
        .next()
        .as_ref()
        .map(store::array)
        .unwrap_or(&[])
        .iter()
        .map(|c| store::int(c).unwrap_or(1).max(1) as u64)
        .collect();
    // Entries this worker is still running, or has run with their record waiting in the
    // acker: its renewals failed for longer than the lease (Redis unreachable for a
    // while), so its own XAUTOCLAIM found them idle. The claim renewed them; starting
    // them again would run the job twice here (and a running job's second run's abort
    // handle would replace the first's: a deadline could not stop it).
    let mut own: Vec<(String, u64)> = Vec::new();
    // A stop whose deadline passed while the claim was in flight: the entries taken are
    // left pending, not started only to be aborted and counted as a run cut off; the
    // drain puts them back as leftovers (as those of a read, finding 46).
    let past_deadline = inner.past_deadline();
    for (i, entry) in entries.into_iter().enumerate() {
        let deliveries = counts.get(i).copied().unwrap_or(1);
        if inner.holds(&entry.id) {
            own.push((entry.id, deliveries));
            continue;
        }
        if past_deadline {
            continue;
        }
        let Some(slot) = slots.pop() else { break };
        inner.reclaimed.fetch_add(1, Ordering::Relaxed);
        inner.dispatch(entry, deliveries, slot, tx);
    }
    if !own.is_empty() {
        // That claim is no new run: give the delivery it counted back, so that a later
        // release or reclaim does not count a run that did not happen.
        let mut inv = store::UNCOUNT.prepare_invoke();
        inv.key(&inner.keys.stream).arg(GROUP).arg(&inner.consumer);
        for (id, deliveries) in &own {
            inv.arg(id).arg(*deliveries);
        }
        if let Err(e) = inv.invoke_async::<i64>(conn).await {
            inner.report(&Error::Redis(e));
        }
    }
}

/// How long past a stop's deadline, beyond the read in flight's `block`, the stop still
/// waits for the reads to end: Redis answers a read within `block` if it answers at all.
const READ_GRACE: Duration = Duration::from_millis(500);

/// How long past a stop's deadline, beyond `block`, the stop's drain may wait for Redis
/// in all (putting back what was cut off, the last acknowledgements, the pending list,
/// leaving the group): a stop with a deadline returns by then even if Redis does not
/// answer, and what it could not put back stays pending (counted as
/// [`ShutdownReport::left_pending`]), for other workers to reclaim after the lease.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// `deadline + block + grace`, or none if that cannot be told (no later `Instant`).
fn past(deadline: Instant, block: Duration, grace: Duration) -> Option<Instant> {
    deadline.checked_add(block)?.checked_add(grace)
}

/// `call`, or, once `give_up` has passed, an error that says Redis did not answer in
/// time (the drain of a stop with a deadline; no limit for a graceful stop). Cancel safe
/// as `call` is.
async fn before<T>(
    give_up: Option<Instant>,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    let Some(at) = give_up else {
        return call.await;
    };
    tokio::time::timeout_at(at, call).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "Redis did not answer before the stop's deadline and grace had passed",
        )
        .into())
    })
}

/// Aborts the running handlers (and superseded runs) when a stop's deadline passes, then
/// returns once the read in flight at the stop should have been answered (`block` and
/// [`READ_GRACE`] later): raced by `run` against its read loop, whose read in flight is
/// not cancelled before then (a read cancelled while Redis still holds it may take
/// entries for this consumer after the drain). The aborted runs stay in
/// [`Inner::running`], so the drain still puts their jobs back as runs cut off.
async fn abort_at_deadline(inner: &Inner) {
    let mut rx = inner.stop.subscribe();
    loop {
        let deadline = match *rx.borrow_and_update() {
            Stop::Deadline(d) => Some(d),
            _ => None,
        };
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                for job in inner
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                {
                    job.abort.abort();
                }
                inner.abort_superseded();
                // Redis does not answer the read (or a maintenance call): the stop goes
                // on without it. What it may still take for this consumer stays pending
                // and is reclaimed by other workers after the lease.
                return match deadline.and_then(|d| past(d, inner.block, READ_GRACE)) {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                };
            }
        }
    }
}

/// After the reads stopped: waits for running jobs (until the deadline, if any), releases
/// what is left, and leaves the group if nothing is pending under the consumer any more.
async fn drain(inner: &Arc<Inner>, tx: &mpsc::UnboundedSender<AckMsg>) -> ShutdownReport {
    let mut stop_rx = inner.stop.subscribe();
    let all = inner.concurrency as u32;
    let (drained, deadline) = loop {
        let deadline = match *stop_rx.borrow_and_update() {
            Stop::Deadline(d) => Some(d),
            _ => None,
        };
        tokio::select! {
            // Biased: with every slot free and the deadline passed at once, nothing ran
            // over: drained.
            biased;
            p = inner.slots.acquire_many(all) => {
                drop(p);
                break (true, deadline);
            }
            _ = stop_rx.changed() => continue,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => break (false, deadline),
        }
    };
    // A stop with a deadline waits for Redis until `block` and `STOP_GRACE` past it.
    let give_up = deadline.and_then(|d| past(d, inner.block, STOP_GRACE));
    // Handlers aborted at the deadline while the read loop still waited (see
    // `abort_at_deadline`) freed their slots, but were cut off: they are still listed
    // as running, and are put back below. (A run that ended leaves `running` before its
    // slot is freed, so with every slot free nothing else is listed.)
    let drained = drained
        && inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
    let mut report = ShutdownReport {
        drained,
        ..Default::default()
    };
    let mut conn = inner.conn.clone();
    // Aborted jobs that could not be put back: still pending here, as far as we can tell
    // if the pending list cannot be read below (Redis unreachable).
    let mut unreleased_aborted = 0u64;
    if !drained {
        let ids: Vec<String> = {
            let mut running = inner.running.lock().unwrap_or_else(|p| p.into_inner());
            let ids = running
                .drain()
                .map(|(id, job)| {
                    job.abort.abort();
                    id
                })
                .collect();
            // Their entries are gone: nothing to put back.
            inner.abort_superseded();
            ids
        };
        report.released = release(inner, &mut conn, &ids, Release::Deadline, give_up).await;
        unreleased_aborted = (ids.len() as u64).saturating_sub(report.released);
    }
    let mut listed = true;
    // Everything finished so far is written before the pending list is read.
    let (f_tx, f_rx) = oneshot::channel();
    if tx.send(AckMsg::Flush(f_tx)).is_ok() {
        let at = Instant::now() + Duration::from_secs(10);
        let _ = tokio::time::timeout_at(give_up.map_or(at, |g| g.min(at)), f_rx).await;
    }
    // What is still pending under the consumer is put back, a page at a time (XPENDING
    // lists at most COUNT entries; an exclusive start pages past entries that could not
    // be released).
    let mut start = "-".to_owned();
    let mut unreleased = 0u64;
    loop {
        let mut xpending = redis::cmd("XPENDING");
        xpending
            .arg(&inner.keys.stream)
            .arg(GROUP)
            .arg(&start)
            .arg("+")
            .arg(PENDING_PAGE)
            .arg(&inner.consumer);
        let pending: redis::RedisResult<Value> =
            before(give_up, xpending.query_async(&mut conn)).await;
        let ids: Vec<String> = match &pending {
            Ok(v) => store::array(v)
                .iter()
                .filter_map(|p| store::array(p).first().and_then(store::string))
                .collect(),
            Err(e) => {
                if e.code() != Some("NOGROUP") {
                    inner.report(&Error::Redis(e.clone()));
                    listed = false;
                }
                Vec::new()
            }
        };
        if ids.is_empty() {
            break;
        }
        // A handler ran some of them here, but their records could not be written: those
        // runs count.
        let (ran, unseen): (Vec<String>, Vec<String>) = {
            let ran = inner
                .ran_unrecorded
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            ids.iter().cloned().partition(|id| ran.contains_key(id))
        };
        let n = release(inner, &mut conn, &ran, Release::Deadline, give_up).await
            + release(inner, &mut conn, &unseen, Release::Leftover, give_up).await;
        report.leftover += n;
        unreleased += (ids.len() as u64).saturating_sub(n);
        if ids.len() < PENDING_PAGE {
            break;
        }
        start = format!("({}", ids[ids.len() - 1]);
    }
    // Leave the group only if nothing is pending under the consumer any more (checked
    // again, after the releases): deleting a consumer drops its pending entries, and
    // nobody could reclaim them. Otherwise the consumer stays, its entries are reclaimed
    // by other workers after the lease, and the janitor removes it once it is empty.
    let mut leave = store::LEAVE.prepare_invoke();
    leave
        .key(&inner.keys.stream)
        .arg(GROUP)
        .arg(&inner.consumer);
    let left: redis::RedisResult<i64> = before(give_up, leave.invoke_async(&mut conn)).await;
    report.left_pending = match left {
        Ok(n) => n.max(0) as u64,
        Err(e) => {
            inner.report(&Error::Redis(e));
            // Unknown: what the releases above could not put back.
            if listed {
                unreleased
            } else {
                // Also the jobs that ran here and whose records could not be written:
                // their entries are still pending too (never aborted, so not counted
                // above).
                let unrecorded = inner
                    .ran_unrecorded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .len() as u64;
                unreleased + unreleased_aborted + unrecorded
            }
        }
    };
    // Every job has ended (or was aborted): the pool has nothing left to wait for.
    let at = Instant::now() + Duration::from_secs(5);
    let _ = tokio::time::timeout_at(
        give_up.map_or(at, |g| g.max(Instant::now()).min(at)),
        inner.pool.shutdown(),
    )
    .await;
    report
}

/// Why entries are released (see [`store::RELEASE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Release {
    /// Handlers aborted at a shutdown deadline: their runs count, and the copies are
    /// marked interrupted.
    Deadline,
    /// Entries pending under the consumer that no handler saw: their last delivery did
    /// not run, and does not count. (Leftovers whose handler ran here, but whose record
    /// could not be written, are released as `Deadline`: that run counts.)
    Leftover,
}

/// Releases the entries of `ids` still pending under this consumer (those reclaimed by
/// another worker meanwhile are left alone), waiting for Redis until `give_up` if set;
/// returns how many were put back.
async fn release(
    inner: &Inner,
    conn: &mut ConnectionManager,
    ids: &[String],
    why: Release,
    give_up: Option<Instant>,
) -> u64 {
    let mut n = 0;
    for chunk in ids.chunks(500) {
        let mut inv = store::RELEASE.prepare_invoke();
        inv.key(&inner.keys.stream)
            .arg(GROUP)
            .arg(&inner.consumer)
            .arg(match why {
                Release::Deadline => "deadline",
                Release::Leftover => "leftover",
            });
        for id in chunk {
            inv.arg(id);
        }
        match before(give_up, inv.invoke_async::<i64>(conn)).await {
            Ok(k) => n += k.max(0) as u64,
            Err(e) => inner.report(&Error::Redis(e)),
        }
    }
    n
}

impl WorkerBuilder {
    /// Local slots: how many jobs this worker holds (runs or acknowledges) at once.
    /// Default: 10.
    ///
    /// # Panics
    ///
    /// If `n` is 0 or above 1,000,000.
    pub fn concurrency(mut self, n: usize) -> Self {
        assert!(
            (1..=1_000_000).contains(&n),
            "concurrency must be between 1 and 1000000, got {n}"
        );
        self.concurrency = n;
        self
    }

    /// How long an entry may stay unacknowledged, without its lease being renewed, before
    /// other workers reclaim it. Running handlers renew it every lease/3 (and finished
    /// ones whose record waits to be written, until it is written or given up), so only
    /// the entries of dead (or partitioned) workers, and those whose record Redis refused,
    /// are reclaimed. Default: 30 s.
    ///
    /// Give every worker of a queue the same lease. Each renews by its own lease and
    /// reclaims by its own: a worker with a lease shorter than another's lease/3 takes
    /// over that worker's running jobs (they run twice, at least once as promised, and
    /// only the later run's outcome is recorded). To shorten the lease of a running
    /// fleet, stop the old workers before starting the new ones, or lower it in steps
    /// (each new lease above the old lease/3).
    ///
    /// Any longer duration is accepted (`Duration::MAX`: entries are in practice never
    /// reclaimed); Redis takes the reclaim's min-idle time in milliseconds up to 2^62
    /// (about 146 million years), and longer leases are clamped to that.
    ///
    /// # Panics
    ///
    /// If `lease` is under 30 ms.
    pub fn lease(mut self, lease: Duration) -> Self {
        assert!(
            lease >= Duration::from_millis(30),
            "lease must be at least 30 ms, got {lease:?}"
        );
        self.lease = lease;
        self
    }

    /// How many handler runs a job gets before it is dead-lettered (failures and
    /// deliveries to workers that died both count). Default: 5.
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    pub fn max_deliveries(mut self, n: u64) -> Self {
        assert!(n > 0, "max_deliveries must be at least 1");
        self.max_deliveries = n;
        self
    }

    /// Retry backoff after a failed run: `base`, doubled per failure, capped at `max`.
    /// Default: 1 s and 5 min.
    ///
    /// # Panics
    ///
    /// If `max < base`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        assert!(
            max >= base,
            "backoff max ({max:?}) is below base ({base:?})"
        );
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// How long one read blocks waiting for new entries; also the longest a stop waits
    /// for the read in progress (a [`shutdown_timeout`](Worker::shutdown_timeout) aborts
    /// running handlers at its deadline all the same, and waits for the read at most
    /// until `block` and 0.5 s past its deadline), and, since idle entries are
    /// reclaimed between reads, how late a reclaim may come. Default: 500 ms.
    ///
    /// Redis takes `BLOCK` in milliseconds up to about 2^63; longer durations
    /// (`Duration::MAX`) are clamped to 2^62 ms (about 146 million years), which means a
    /// read, and a stop, wait as long as it takes for an entry.
    ///
    /// # Panics
    ///
    /// If `block` is under 1 ms.
    pub fn block(mut self, block: Duration) -> Self {
        assert!(
            block >= Duration::from_millis(1),
            "block must be at least 1 ms"
        );
        self.block = block;
        self
    }

    /// How often due retries are moved back to the stream. Default: 250 ms.
    ///
    /// # Panics
    ///
    /// If `every` is under 1 ms.
    pub fn promote_interval(mut self, every: Duration) -> Self {
        assert!(
            every >= Duration::from_millis(1),
            "promote_interval must be at least 1 ms"
        );
        self.promote_interval = every;
        self
    }

    /// Sets the consumer name instead of the generated `host-pid-random` one. It must be
    /// unique per worker *and per process start*: a restarted process that reuses a name
    /// would inherit (and never redeliver) the dead one's entries until their lease.
    pub fn consumer_name(mut self, name: &str) -> Self {
        self.consumer = Some(name.to_owned());
        self
    }

    /// Called with each Redis error the worker meets while running (it retries them
    /// anyway, except a finished job's record that Redis keeps refusing or whose calls it
    /// keeps losing while its entry stays pending: that record is given up, and its last
    /// error is reported as an "acknowledgement given up" error naming its entry and job;
    /// the entry stays pending and the job runs again after the lease). Default: none; the count and the last one
    /// are in [`Worker::stats`]. It runs inside the worker's own tasks: keep it short. A
    /// panic in it is caught (the panic hook shows it) and the worker goes on.
    pub fn on_error(mut self, hook: impl Fn(&Error) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(hook));
        self
    }

    /// Registers the handler of task `name`. The payload is decoded from JSON into `T`
    /// (a payload that does not decode goes to the dead-letter stream at once). An `Err`
    /// (or a panic) is retried with backoff, then dead-lettered with its `Display` text.
    /// The `Ok` value is stored only if the job was submitted with
    /// [`RedisQueue::submit_with_result`](crate::RedisQueue::submit_with_result). An `Ok`
    /// value serde_json cannot encode is not a failure: the job is acknowledged, or, if
    /// its result was asked for, dead-lettered with the reason (not retried); so is one
    /// whose JSON is longer than the server takes in one argument (`proto-max-bulk-len`,
    /// read when the worker was built; 512 MB if it could not be read). A dead letter
    /// keeps at most 64 KB of the handler's error.
    ///
    /// Registering the same name twice keeps the last handler. To learn the job's id and
    /// attempt (for idempotency keys), use [`task_with_ctx`](Self::task_with_ctx).
    pub fn task<T, F, Fut, R, E>(self, name: &str, handler: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        self.task_with_ctx(name, move |payload: T, _ctx: JobCtx| handler(payload))
    }

    /// Like [`task`](Self::task), and the handler also gets the job's [`JobCtx`]: its id
    /// (the same across retries and redeliveries: a natural idempotency key), which run
    /// this is, and whether the entry was delivered before.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), nb_aiopool_redis::Error> {
    /// use nb_aiopool_redis::{JobCtx, Worker};
    /// let worker = Worker::builder("redis://127.0.0.1/", "charges")
    ///     .task_with_ctx("charge", |cents: u64, ctx: JobCtx| async move {
    ///         // Use ctx.id() as the payment provider's idempotency key.
    ///         println!("charging {cents} (job {}, attempt {})", ctx.id(), ctx.attempt());
    ///         Ok::<(), String>(())
    ///     })
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn task_with_ctx<T, F, Fut, R, E>(mut self, name: &str, handler: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(T, JobCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        if store::validate_name("task name", name).is_err() && self.bad_task.is_none() {
            self.bad_task = Some(name.to_owned());
        }
        let erased: Handler = Arc::new(move |payload: &str, ctx: JobCtx| {
            let value: T = serde_json::from_str(payload).map_err(|e| e.to_string())?;
            let fut = handler(value, ctx);
            Ok(Box::pin(async move {
                match fut.await {
                    Ok(r) => Ok(serde_json::to_string(&r)
                        .map_err(|e| format!("cannot encode the handler's result: {e}"))),
                    Err(e) => Err(e.to_string()),
                }
            }) as HandlerFuture)
        });
        self.tasks.insert(name.to_owned(), erased);
        self
    }

    /// Connects (two connections: one for the blocking reads, one for the rest) and joins
    /// the consumer group, creating the stream and group if needed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a bad queue or task name, [`Error::Config`] if no task
    /// is registered, [`Error::Redis`] for a bad URL or an unreachable server.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the half-made connections.
    pub async fn build(self) -> Result<Worker, Error> {
        let keys = Keys::new(&self.name)?;
        if let Some(bad) = self.bad_task {
            store::validate_name("task name", &bad)?;
        }
        if self.tasks.is_empty() {
            return Err(Error::Config(
                "no task registered: add at least one with .task(name, handler)".into(),
            ));
        }
        let consumer = match self.consumer {
            Some(c) => {
                store::validate_name("consumer name", &c)?;
                c
            }
            None => generated_consumer_name(),
        };
        let (client, mut conn) = store::connect(&self.url, Duration::from_secs(5)).await?;
        let read_conn =
            store::manager(&client, self.block.saturating_add(Duration::from_secs(5))).await?;
        store::ensure_group(&mut conn, &keys).await?;
        let max_arg = store::max_arg_len(&mut conn).await;
        let finish_budget = store::finish_budget(&mut conn).await;
        let (stop, _) = watch::channel(Stop::Run);
        let (done, _) = watch::channel(None);
        Ok(Worker {
            inner: Arc::new(Inner {
                keys,
                consumer,
                concurrency: self.concurrency,
                lease: self.lease,
                max_deliveries: self.max_deliveries,
                backoff_base: self.backoff_base,
                backoff_max: self.backoff_max,
                block: self.block,
                promote_interval: self.promote_interval,
                tasks: self.tasks,
                on_error: self.on_error,
                conn,
                read_conn,
                max_arg,
                finish_budget,
                slots: Arc::new(Semaphore::new(self.concurrency)),
                // Slots are counted by `slots`; the pool runs what they admit. Its queue
                // absorbs the moment between a job's end and its pool slot's release.
                pool: CommonAioPool::new(self.concurrency, self.concurrency),
                running: Mutex::new(HashMap::new()),
                run_seq: AtomicU64::new(0),
                superseded: Mutex::new(Vec::new()),
                ran_unrecorded: Mutex::new(HashMap::new()),
                ran_seq: AtomicU64::new(0),
                stop,
                done,
                state: AtomicU8::new(IDLE),
                held: AtomicU64::new(0),
                succeeded: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                dead_lettered: AtomicU64::new(0),
                reclaimed: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
        })
    }
}

fn generated_consumer_name() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let host: String = host
        .chars()
        .filter(|c| !(c.is_control() || c.is_whitespace() || *c == '{' || *c == '}'))
        .take(60)
        .collect();
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{host}-{}-{:016x}", std::process::id(), h.finish())
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.inner.keys.name)
            .field("consumer", &self.inner.consumer)
            .field("concurrency", &self.inner.concurrency)
            .field("lease", &self.inner.lease)
            .field("max_deliveries", &self.inner.max_deliveries)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tasks: Vec<&String> = self.tasks.keys().collect();
        tasks.sort();
        f.debug_struct("WorkerBuilder")
            .field("name", &self.name)
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .field("max_deliveries", &self.max_deliveries)
            .field("tasks", &tasks)
            .finish_non_exhaustive()
    }
}
