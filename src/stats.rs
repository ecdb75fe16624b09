//! Snapshots of a pool's counters, and the report of a shutdown with a deadline.

/// A consistent snapshot of a pool's counters, taken under the pool's lock.
///
/// At every instant `submitted == queued + running + completed + panicked + cancelled`.
///
/// The counters agree with the handles: a task is counted no later than its handle is
/// told its result (a task that ran, in the critical section that stores its result; one
/// dropped before it ran, by [`cancel_all`](crate::CommonAioPool::cancel_all) or its
/// runtime's end, under the lock, its handle told right after it), so once a handle has
/// resolved (or `batch_run` of n tasks has returned), `stats()` counts it. (The other way
/// round holds only for tasks that ran: a thread may see a task dropped unrun counted a
/// moment before its handle resolves.) One exception: an abort
/// ([`TaskHandle::abort`](crate::TaskHandle::abort), an
/// [`AbortHandle`](crate::AbortHandle), a cancel-on-error group aborting its other tasks,
/// or a nested wait refused with `WouldDeadlock`) resolves the handle at once, before the
/// pool counts the task: a queued task is counted as cancelled before `abort` returns (a
/// thread that sees the handle resolved meanwhile may find it still queued), a running
/// one when it is dropped at its next `.await` (it holds its slot until then).
///
/// The room a task held (its place among `max_concurrency + max_queue_size`) is given back
/// in the critical section that counts the task, and a submit takes its room under the
/// same lock: code
/// that has seen a task end (its handle resolved, or
/// [`TaskHandle::is_finished`](crate::TaskHandle::is_finished), or these counters) and
/// then submits finds the room, unless submitters were already waiting for room (it goes
/// to the first of them) or `set_max_concurrency` lowered the pool's size below the
/// tasks it holds. Aborts, as above, are the exception: the room comes back when the pool
/// counts the task.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use nb_aiopool::CommonAioPool;
///
/// let pool = CommonAioPool::new(2, 10);
/// pool.run(async {}).await.unwrap();
/// let stats = pool.stats();
/// assert_eq!(stats.submitted, 1);
/// assert_eq!(stats.completed, 1);
/// assert_eq!(stats.submitted, stats.queued as u64 + stats.running as u64
///     + stats.completed + stats.panicked + stats.cancelled);
/// # }
/// ```
///
/// # Dropping
///
/// A snapshot, plain data: dropping it does nothing, and it does not change with the pool
/// after it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolStats {
    /// Tasks accepted and not started: waiting for a free slot, or, in a pool with flow
    /// control, for their key, their weight or the rate window to let them start (those
    /// may wait with a slot free; each keeps its place in the pool meanwhile).
    pub queued: usize,
    /// Tasks running now, counted from when a free slot is given to a task (at its submit
    /// if one is free, else when one frees), a moment before a slot task first polls it
    /// (longer while that runtime is not driven): never
    /// more than the pool's `max_concurrency`, except after
    /// `set_max_concurrency` lowered it under the tasks running then, which finish (no new
    /// task starts until `running` is below the new size).
    pub running: usize,
    /// Tasks accepted since the pool was created.
    pub submitted: u64,
    /// Tasks that returned a value.
    pub completed: u64,
    /// Tasks that panicked.
    pub panicked: u64,
    /// Tasks cancelled: aborted, abandoned at a shutdown deadline, lost to a runtime
    /// shutdown, cancelled by `cancel_all`, or cancelled with
    /// [`WouldDeadlock`](crate::CancelReason::WouldDeadlock).
    pub cancelled: u64,
}

/// One line: `queued 3, running 4, submitted 100, completed 90, panicked 1, cancelled 2`.
impl std::fmt::Display for PoolStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "queued {}, running {}, submitted {}, completed {}, panicked {}, cancelled {}",
            self.queued,
            self.running,
            self.submitted,
            self.completed,
            self.panicked,
            self.cancelled
        )
    }
}

impl PoolStats {
    /// Tasks accepted and not yet finished: `queued + running`.
    pub fn unfinished(&self) -> usize {
        self.queued + self.running
    }
}

/// What a shutdown with a deadline did.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::Duration;
/// use nb_aiopool::CommonAioPool;
///
/// let pool = CommonAioPool::new(1, 10);
/// let quick = pool.submit(async {}).await.unwrap();
/// let stuck = pool.submit(std::future::pending::<()>()).await.unwrap();
/// let report = pool.shutdown_timeout(Duration::from_secs(1)).await;
/// assert_eq!(report.finished(), 1);
/// assert_eq!(report.abandoned(), 1);
/// assert!(quick.await.is_ok());
/// assert!(stuck.await.unwrap_err().is_cancelled());
/// # }
/// ```
///
/// # Dropping
///
/// Plain data: dropping it does nothing (the tasks it counts were dealt with before it was
/// returned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    pub(crate) finished: u64,
    pub(crate) abandoned: u64,
}

/// One line: `12 finished, 3 abandoned`.
impl std::fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} finished, {} abandoned",
            self.finished, self.abandoned
        )
    }
}

impl ShutdownReport {
    /// Tasks that ended between the start of the shutdown and its end, except those a
    /// shutdown deadline abandoned (this one's or an overlapping shutdown's; see
    /// [`abandoned`](Self::abandoned)): returned, panicked, aborted, or cancelled otherwise
    /// meanwhile (by their runtime's end, a `cancel_all`). Counted over the whole pool.
    pub fn finished(&self) -> u64 {
        self.finished
    }

    /// Tasks still queued or running at the deadline, which were dropped; their handles
    /// resolve to [`CancelReason::Abandoned`](crate::CancelReason::Abandoned). Counted over
    /// the whole pool: of two shutdowns overlapping, each counts the tasks either one's
    /// deadline abandoned. A running task that a `cancel_all`
    /// covered before the deadline keeps that cancel's reason, and counts in
    /// [`finished`](Self::finished).
    pub fn abandoned(&self) -> u64 {
        self.abandoned
    }

    /// Returns `true` if no task was abandoned at a deadline while this shutdown waited
    /// (see [`abandoned`](Self::abandoned)).
    pub fn is_complete(&self) -> bool {
        self.abandoned == 0
    }
}
