//! Error types: why a submission was rejected, and why a task did not produce a value.
//!
//! Every rejection hands the rejected task back with `into_inner`, so nothing is lost
//! silently. Every type here is `Send + Sync` whenever the task is `Send` (the task is kept
//! behind a lock that is never taken), and its `Debug` does not require the task to be
//! `Debug`.

use std::any::Any;
use std::fmt;
use std::sync::Mutex;

/// The `Display` of a `Closed` refusal (a pool's, or a tripped task group's).
const CLOSED: &str = "closed: the pool is shut down (or, for a task group with \
                      cancel-on-error, one of its tasks failed) and accepts no tasks";

/// The `Display` of a `TooHeavy` refusal (a submit's or a `try_submit`'s).
const TOO_HEAVY: &str = "the task's weight exceeds the pool's weight_capacity, so it could \
                         never start: lower its weight or raise the pool's weight_capacity \
                         (a submit's error hands the task back: into_inner)";

/// Holds a rejected task so that the error is `Sync` even when the task is not.
///
/// The mutex is never locked: it is only there to make the wrapper `Sync` for any `Send`
/// task, the same trick as `SyncWrapper` in the tokio ecosystem.
struct Rejected<F>(Mutex<F>);

impl<F> Rejected<F> {
    fn new(task: F) -> Self {
        Rejected(Mutex::new(task))
    }

    fn into_inner(self) -> F {
        // The lock is never taken, so it cannot be poisoned; recover the value either way.
        self.0.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why [`submit`](crate::CommonAioPool::submit) or `blocking_submit` rejected a task.
///
/// The task is handed back by [`into_inner`](SubmitError::into_inner).
///
/// # Dropping
///
/// Dropping the error drops the task it holds (a future never polled, or a recipe never
/// run): it was never accepted, so no pool counts it and no handle waits for it.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use nb_aiopool::CommonAioPool;
///
/// let pool = CommonAioPool::new(2, 10);
/// pool.shutdown().await;
/// let err = pool.submit(async { 1 }).await.unwrap_err();
/// assert!(err.is_closed());
/// let task = err.into_inner(); // the future comes back unpolled
/// assert_eq!(task.await, 1);
/// # }
/// ```
pub struct SubmitError<F> {
    kind: SubmitErrorKind,
    /// Boxed: a submit's `Result` is then a few words whatever the task's size, so an
    /// accepted submit (and `run`) never moves room for a task it does not return (at
    /// every step of the submit's future and the caller's). A rejection here is rare
    /// (closed, deadlock, timeout), unlike [`TrySubmitError`]'s "full", which allocates
    /// nothing.
    task: Box<Rejected<F>>,
}

/// The reason carried by a [`SubmitError`].
///
/// # Dropping
///
/// Plain data (`Copy`): dropping it does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SubmitErrorKind {
    /// The pool was shut down (or every handle to it was dropped) before the task was
    /// accepted; or, submitted through a task group with cancel-on-error, a task of that
    /// group had failed (the pool itself stays open).
    Closed,
    /// The submit came from a task running inside this same pool while the pool had no
    /// room. Waiting would hold a slot while waiting for a slot, which deadlocks as soon as
    /// every running task does it, so the submit fails at once instead.
    WouldDeadlock,
    /// No tokio runtime can run the task: the submit came from a thread without a runtime
    /// context (or with that of a runtime that has shut down: a `spawn_blocking` thread
    /// that outlived it, a `Handle::enter` guard), and the runtime the pool was created in
    /// or last used from has shut down (or there never was one), as has every other the
    /// pool knows. Also when such a
    /// submit would wait for room, or waits for room when the pool comes to know no live
    /// runtime (a SmartAioPool full of the re-runs of the runtime that ended): nothing
    /// would make any. A `blocking_submit` that waits for room under a current-thread
    /// runtime it entered (`Handle::enter`) does not offer that runtime, which its blocked
    /// thread could not drive: it counts as one without a runtime context here. Submit
    /// from inside a runtime, or enter one first (`Handle::enter`). Also, in a pool with a `rate_limit`, a
    /// submit that waited for room on one runtime and was finished on one without
    /// tokio's time driver (the rate window could not be kept there).
    NoRuntime,
    /// [`SubmitOptions::timeout`](crate::SubmitOptions::timeout) passed before the pool
    /// had room.
    TimedOut,
    /// The task's [`weight`](crate::SubmitOptions::weight) is larger than the pool's whole
    /// `weight_capacity`: it could never start.
    TooHeavy,
}

impl<F> SubmitError<F> {
    pub(crate) fn new(kind: SubmitErrorKind, task: F) -> Self {
        SubmitError {
            kind,
            task: Box::new(Rejected::new(task)),
        }
    }

    /// Why the task was rejected.
    pub fn kind(&self) -> SubmitErrorKind {
        self.kind
    }

    /// Returns `true` if the pool was closed (or, submitted through a task group with
    /// cancel-on-error, a task of that group had failed: see [`SubmitErrorKind::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.kind == SubmitErrorKind::Closed
    }

    /// Returns `true` if the submit was refused because it came from inside the full pool.
    pub fn is_would_deadlock(&self) -> bool {
        self.kind == SubmitErrorKind::WouldDeadlock
    }

    /// Returns `true` if no tokio runtime could run the task.
    pub fn is_no_runtime(&self) -> bool {
        self.kind == SubmitErrorKind::NoRuntime
    }

    /// Returns `true` if the submit's timeout passed before the pool had room.
    pub fn is_timed_out(&self) -> bool {
        self.kind == SubmitErrorKind::TimedOut
    }

    /// Returns `true` if the task's weight is larger than the pool's whole
    /// `weight_capacity`, so that it could never start.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use nb_aiopool::{CommonAioPool, SubmitOptions};
    ///
    /// let pool = CommonAioPool::builder().max_concurrency(4).weight_capacity(10).build();
    /// let err = pool
    ///     .submit_with(async { 1 }, SubmitOptions::new().weight(11))
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.is_too_heavy());
    /// assert_eq!(err.into_inner().await, 1); // handed back, never polled
    /// # }
    /// ```
    pub fn is_too_heavy(&self) -> bool {
        self.kind == SubmitErrorKind::TooHeavy
    }

    /// Gives back the rejected task, never polled.
    pub fn into_inner(self) -> F {
        self.task.into_inner()
    }
}

/// With the message: `unwrap()`, `expect()` and a `main` that returns the error print the
/// `Debug`, and the message says what to do (as `std::io::Error`'s `Debug` shows its own).
impl<F> fmt::Debug for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmitError")
            .field("kind", &self.kind)
            .field("message", &format_args!("\"{}\"", self.kind))
            .finish_non_exhaustive()
    }
}

/// The message of a [`SubmitError`] of this kind (a map stream's
/// [`refused`](crate::MapUnordered::refused) kind prints as the error would have).
impl fmt::Display for SubmitErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitErrorKind::Closed => f.write_str(CLOSED),
            SubmitErrorKind::WouldDeadlock => f.write_str(
                "a task running in this pool submitted to the same pool while it was full; \
                 waiting would deadlock: use try_submit (and handle Full), give the pool more \
                 queue room, or submit to another pool",
            ),
            SubmitErrorKind::NoRuntime => f.write_str(
                "no tokio runtime to run the task: submitted outside a live runtime while \
                 every runtime the pool knows has shut down (or it never had one), or, the \
                 pool having a rate_limit, finished on a runtime without tokio's time driver; \
                 submit from inside a runtime, or enter one first (Handle::enter)",
            ),
            SubmitErrorKind::TimedOut => f.write_str(
                "the timeout set by SubmitOptions::timeout passed before the pool had room: \
                 submit the task again (a submit's error hands it back: into_inner), give it a \
                 longer timeout, or give the pool more room",
            ),
            SubmitErrorKind::TooHeavy => f.write_str(TOO_HEAVY),
        }
    }
}

impl<F> fmt::Display for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl<F> std::error::Error for SubmitError<F> {}

/// Why [`try_submit`](crate::CommonAioPool::try_submit) rejected a task.
///
/// The task is handed back by [`into_inner`](TrySubmitError::into_inner).
///
/// # Dropping
///
/// Dropping the error drops the task it holds, never polled or run, as for
/// [`SubmitError`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use nb_aiopool::NoQueueAioPool;
///
/// let pool = NoQueueAioPool::new(1);
/// let _first = pool.try_submit(std::future::pending::<()>()).unwrap();
/// let err = pool.try_submit(async {}).unwrap_err();
/// assert!(err.is_full());
/// # }
/// ```
pub struct TrySubmitError<F> {
    kind: TrySubmitErrorKind,
    task: Rejected<F>,
}

/// The reason carried by a [`TrySubmitError`], for a `match`: the one condition a
/// waiting submit would have waited out ([`Full`](Self::Full)), and the refusals it shares
/// with [`SubmitErrorKind`].
///
/// # Dropping
///
/// Plain data (`Copy`): dropping it does nothing.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use nb_aiopool::{CommonAioPool, TrySubmitErrorKind};
///
/// let pool = CommonAioPool::new(1, 1);
/// let _running = pool.try_submit(std::future::pending::<()>()).unwrap();
/// let _queued = pool.try_submit(std::future::pending::<()>()).unwrap();
/// match pool.try_submit(async {}) {
///     Ok(_) => unreachable!("one slot, one queue place: both taken"),
///     Err(e) => match e.kind() {
///         TrySubmitErrorKind::Full => { /* come back later, or `submit(..).await` */ }
///         kind => panic!("refused: {kind:?}"),
///     },
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrySubmitErrorKind {
    /// The pool had no room: every slot busy and the queue full (for a NoQueueAioPool,
    /// every place taken: by a running task, or by one accepted and held back by flow
    /// control, whose place is taken while its slot is free). The one kind that passes
    /// with time:
    /// [`submit`](crate::CommonAioPool::submit) would have waited for room (or, called from
    /// a task of the same pool, been refused with
    /// [`WouldDeadlock`](crate::SubmitErrorKind::WouldDeadlock)). (A task held
    /// back by its key, its weight or the rate limit is not refused for that while a
    /// place is free: it takes the place and waits inside the pool.)
    Full,
    /// As [`SubmitErrorKind::Closed`]: the pool was shut down, or a task of the
    /// cancel-on-error group submitted through had failed.
    Closed,
    /// As [`SubmitErrorKind::NoRuntime`]: no tokio runtime can run the task.
    NoRuntime,
    /// As [`SubmitErrorKind::TooHeavy`]: the task's weight exceeds the pool's
    /// `weight_capacity`.
    TooHeavy,
}

impl<F> TrySubmitError<F> {
    pub(crate) fn full(task: F) -> Self {
        TrySubmitError {
            kind: TrySubmitErrorKind::Full,
            task: Rejected::new(task),
        }
    }

    /// A submit refused for `kind` (`Closed` or `NoRuntime`).
    pub(crate) fn refused(kind: SubmitErrorKind, task: F) -> Self {
        let kind = match kind {
            SubmitErrorKind::NoRuntime => TrySubmitErrorKind::NoRuntime,
            SubmitErrorKind::TooHeavy => TrySubmitErrorKind::TooHeavy,
            _ => TrySubmitErrorKind::Closed,
        };
        TrySubmitError {
            kind,
            task: Rejected::new(task),
        }
    }

    /// Why the task was rejected.
    pub fn kind(&self) -> TrySubmitErrorKind {
        self.kind
    }

    /// Returns `true` if the pool had no room (all slots busy and the queue full).
    pub fn is_full(&self) -> bool {
        self.kind == TrySubmitErrorKind::Full
    }

    /// Returns `true` if the pool was shut down (or, submitted through a task group with
    /// cancel-on-error, a task of that group had failed: see [`SubmitErrorKind::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.kind == TrySubmitErrorKind::Closed
    }

    /// Returns `true` if no tokio runtime could run the task (see
    /// [`SubmitErrorKind::NoRuntime`]).
    pub fn is_no_runtime(&self) -> bool {
        self.kind == TrySubmitErrorKind::NoRuntime
    }

    /// Returns `true` if the task's weight exceeds the pool's `weight_capacity` (see
    /// [`SubmitErrorKind::TooHeavy`]).
    pub fn is_too_heavy(&self) -> bool {
        self.kind == TrySubmitErrorKind::TooHeavy
    }

    /// Gives back the rejected task, never polled.
    pub fn into_inner(self) -> F {
        self.task.into_inner()
    }
}

impl<F> fmt::Debug for TrySubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            TrySubmitErrorKind::Full => "Full",
            TrySubmitErrorKind::Closed => "Closed",
            TrySubmitErrorKind::NoRuntime => "NoRuntime",
            TrySubmitErrorKind::TooHeavy => "TooHeavy",
        };
        f.debug_tuple(name).finish_non_exhaustive()
    }
}

impl<F> fmt::Display for TrySubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

/// The message of a [`TrySubmitError`] of this kind.
impl fmt::Display for TrySubmitErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySubmitErrorKind::Full => f.write_str(
                "the pool is full: wait for room with submit(..).await (not from a task of the \
                 same pool), or try again later",
            ),
            TrySubmitErrorKind::Closed => f.write_str(CLOSED),
            TrySubmitErrorKind::NoRuntime => f.write_str(
                "no tokio runtime to run the task: submitted outside a live runtime while \
                 every runtime the pool knows has shut down (or it never had one); submit \
                 from inside a runtime, or enter one first (Handle::enter)",
            ),
            TrySubmitErrorKind::TooHeavy => f.write_str(TOO_HEAVY),
        }
    }
}

impl<F> std::error::Error for TrySubmitError<F> {}

/// Why a task accepted by a pool produced no value.
///
/// Returned by awaiting a [`TaskHandle`](crate::TaskHandle).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use nb_aiopool::CommonAioPool;
///
/// let pool = CommonAioPool::new(1, 1);
/// let handle = pool.submit(async { panic!("boom") }).await.unwrap();
/// let err = handle.await.unwrap_err();
/// assert!(err.is_panic());
/// # }
/// ```
///
/// # Dropping
///
/// Dropping the error of a panicked task drops the panic's payload (as dropping a
/// `std::thread::Result` does); nothing else.
pub struct TaskError {
    repr: Repr,
}

enum Repr {
    Panicked(Mutex<Box<dyn Any + Send + 'static>>),
    Cancelled(CancelReason),
}

/// Why a task was cancelled before it could finish.
///
/// # Dropping
///
/// Plain data (`Copy`): dropping it does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelReason {
    /// [`TaskHandle::abort`](crate::TaskHandle::abort) (or an
    /// [`AbortHandle`](crate::AbortHandle)'s) was called, or the task's group or stream
    /// aborted it (dropped, or cancel-on-error tripped by another task).
    Aborted,
    /// A shutdown deadline passed before the task finished, so the pool dropped it.
    Abandoned,
    /// The tokio runtime that drove the pool shut down (for example `#[tokio::main]`
    /// returned) while the task was queued or running, or the process exited (see
    /// [`SmartAioPool`](crate::SmartAioPool)'s Shutdown for the tasks its exit does not
    /// run). Also a task held back by a
    /// [`rate_limit`](crate::CommonAioPoolBuilder::rate_limit) window that never reopens
    /// (`per` = `Duration::MAX`) once its pool is dropped and the jobs the pool was running
    /// have ended (or, a SmartAioPool, at the exit): nothing would ever start it.
    RuntimeShutdown,
    /// The pool's `cancel_all` was called
    /// ([`CommonAioPool::cancel_all`](crate::CommonAioPool::cancel_all),
    /// [`NoQueueAioPool::cancel_all`](crate::NoQueueAioPool::cancel_all) or
    /// [`SmartAioPool::cancel_all`](crate::SmartAioPool::cancel_all)).
    CancelAll,
    /// Every slot of the pool was held by a task waiting for another task of the same
    /// pool, and this task was still queued behind them: it could never start. Or this
    /// task had started and was itself one of those waiting tasks, awaited by the wait
    /// that completed the picture, or (the picture completed by a shrink, with running
    /// tasks awaiting each other in a cycle) by the wait of the task the pool picked to
    /// break it: it could never finish. It was cancelled so that the task awaiting it
    /// gets this error instead of waiting forever.
    WouldDeadlock,
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CancelReason::Aborted => "the task was aborted",
            CancelReason::Abandoned => "the task was abandoned when the shutdown deadline passed",
            CancelReason::RuntimeShutdown => {
                "the task was cancelled: the tokio runtime driving it shut down (or the process \
                 exited) before it finished, or a rate_limit window that never reopens held it \
                 back when its pool was dropped or the process exited"
            }
            CancelReason::CancelAll => "the task was cancelled by cancel_all",
            CancelReason::WouldDeadlock => {
                "the task was cancelled: every slot of its pool waited for tasks of the same \
                 pool, so it could never start (or, started and waiting itself, never finish)"
            }
        })
    }
}

impl TaskError {
    pub(crate) fn panicked(payload: Box<dyn Any + Send + 'static>) -> Self {
        TaskError {
            repr: Repr::Panicked(Mutex::new(payload)),
        }
    }

    pub(crate) fn cancelled(reason: CancelReason) -> Self {
        TaskError {
            repr: Repr::Cancelled(reason),
        }
    }

    /// Returns `true` if the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panicked(_))
    }

    /// Returns `true` if the task was cancelled (for any [`CancelReason`]: aborted,
    /// abandoned, cancelled by `cancel_all`, lost to a runtime shutdown, or cancelled to
    /// break a nested-wait deadlock).
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled(_))
    }

    /// Why the task was cancelled, or `None` if it panicked.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        match self.repr {
            Repr::Cancelled(reason) => Some(reason),
            Repr::Panicked(_) => None,
        }
    }

    /// Returns the panic payload, or gives the error back if the task did not panic.
    ///
    /// Use it with [`std::panic::resume_unwind`] to re-raise the task's panic.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, TaskError> {
        match self.repr {
            Repr::Panicked(p) => Ok(p.into_inner().unwrap_or_else(|e| e.into_inner())),
            repr => Err(TaskError { repr }),
        }
    }

    /// Returns the panic payload.
    ///
    /// # Panics
    ///
    /// Panics if the task did not panic; check [`is_panic`](TaskError::is_panic) first.
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.try_into_panic()
            .expect("TaskError::into_panic called on a task that did not panic")
    }

    fn panic_message(&self) -> Option<String> {
        let Repr::Panicked(p) = &self.repr else {
            return None;
        };
        let guard = p.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = guard.downcast_ref::<&'static str>() {
            Some((*s).to_string())
        } else {
            guard.downcast_ref::<String>().cloned()
        }
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Panicked(_) => f
                .debug_tuple("Panicked")
                .field(&self.panic_message().unwrap_or_else(|| "..".into()))
                .finish(),
            Repr::Cancelled(reason) => f.debug_tuple("Cancelled").field(reason).finish(),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Panicked(_) => match self.panic_message() {
                Some(msg) => write!(f, "the task panicked: {msg}"),
                None => f.write_str("the task panicked"),
            },
            Repr::Cancelled(reason) => fmt::Display::fmt(reason, f),
        }
    }
}

impl std::error::Error for TaskError {}

/// For `?` in functions that return [`std::io::Result`], as tokio's `JoinError` converts:
/// an error of kind [`Other`](std::io::ErrorKind::Other) whose message is the task
/// error's, and which holds it ([`get_ref`](std::io::Error::get_ref) and
/// [`into_inner`](std::io::Error::into_inner) give it back, a panic's payload with it).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use nb_aiopool::{CommonAioPool, TaskError};
///
/// async fn fetch(pool: &CommonAioPool) -> std::io::Result<u32> {
///     let handle = pool.submit(async { 7 }).await.map_err(|e| std::io::Error::other(e.to_string()))?;
///     Ok(handle.await?)
/// }
/// let pool = CommonAioPool::new(1, 1);
/// assert_eq!(fetch(&pool).await.unwrap(), 7);
///
/// let handle = pool.submit(async { panic!("boom") }).await.unwrap();
/// let err = std::io::Error::from(handle.await.unwrap_err());
/// assert_eq!(err.kind(), std::io::ErrorKind::Other);
/// assert!(err.into_inner().unwrap().downcast::<TaskError>().unwrap().is_panic());
/// # }
/// ```
impl From<TaskError> for std::io::Error {
    fn from(err: TaskError) -> Self {
        std::io::Error::other(err)
    }
}

/// Why [`run`](crate::CommonAioPool::run) produced no value: the task was rejected, or it
/// was accepted and then failed.
///
/// # Dropping
///
/// A `Rejected` error holds the task; dropping it drops the task, never polled or run.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use nb_aiopool::{CommonAioPool, RunError};
///
/// let pool = CommonAioPool::new(1, 1);
/// match pool.run(async { 21 * 2 }).await {
///     Ok(v) => assert_eq!(v, 42),
///     Err(RunError::Rejected(e)) => panic!("rejected: {e}"),
///     Err(RunError::Failed(e)) => panic!("failed: {e}"),
/// }
/// # }
/// ```
pub enum RunError<F> {
    /// The pool did not accept the task; the task is inside.
    Rejected(SubmitError<F>),
    /// The task was accepted but panicked or was cancelled.
    Failed(TaskError),
}

impl<F> RunError<F> {
    /// Returns the task error, if the task was accepted and failed.
    pub fn into_task_error(self) -> Option<TaskError> {
        match self {
            RunError::Failed(e) => Some(e),
            RunError::Rejected(_) => None,
        }
    }
}

impl<F> From<SubmitError<F>> for RunError<F> {
    fn from(e: SubmitError<F>) -> Self {
        RunError::Rejected(e)
    }
}

impl<F> From<TaskError> for RunError<F> {
    fn from(e: TaskError) -> Self {
        RunError::Failed(e)
    }
}

impl<F> fmt::Debug for RunError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Rejected(e) => f.debug_tuple("Rejected").field(e).finish(),
            RunError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<F> fmt::Display for RunError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Rejected(e) => fmt::Display::fmt(e, f),
            RunError::Failed(e) => fmt::Display::fmt(e, f),
        }
    }
}

/// `RunError` is transparent: its `Display` is the inner error's, and it has no
/// `source` of its own (so `{:#}` with `anyhow` prints the message once).
impl<F> std::error::Error for RunError<F> {}
