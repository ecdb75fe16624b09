//! [`SubmitOptions`]: per-task settings for `submit_with` / `try_submit_with`.

use std::sync::Arc;
use std::time::Duration;

/// Per-task settings: priority, weight, key and a deadline for waiting for room.
///
/// Each is ignored by a pool that has no use for it: a weight counts only in a pool built
/// with `weight_capacity`, a key only in a pool built with `max_per_key`.
///
/// A priority, a weight other than 1 or a key costs the submit one small allocation (about
/// 32 bytes), which the task keeps while it is queued or running; a task submitted without
/// them carries one word for them.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use nb_aiopool::{CommonAioPool, SubmitOptions};
///
/// let pool = CommonAioPool::builder().max_per_key(4).build();
/// let opts = SubmitOptions::new()
///     .priority(10)
///     .key("example.com")
///     .timeout(Duration::from_secs(5));
/// let handle = pool.submit_with(async { 200 }, opts).await.unwrap();
/// assert_eq!(handle.await.unwrap(), 200);
/// # }
/// ```
///
/// # Dropping
///
/// Options not passed to a submit do nothing, so dropping them does nothing; passed to
/// one, they go with the task (its key, with the pool's per-key count, until it ends).
#[derive(Debug, Clone)]
#[must_use = "options do nothing until passed to `submit_with`, `try_submit_with` or `blocking_submit_with` (of a pool or a task group)"]
pub struct SubmitOptions {
    pub(crate) priority: i32,
    pub(crate) weight: u32,
    pub(crate) key: Option<Arc<str>>,
    pub(crate) timeout: Option<Duration>,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        SubmitOptions {
            priority: 0,
            weight: 1,
            key: None,
            timeout: None,
        }
    }
}

impl SubmitOptions {
    /// The defaults: priority 0, weight 1, no key, no deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Higher runs first; FIFO among equal priorities. Default: 0.
    ///
    /// Priorities order the pool's queue, and the submitters waiting for room in a full
    /// pool: a higher one gets the next room first (first come, first served among
    /// equals), also in a [`NoQueueAioPool`](crate::NoQueueAioPool), which has no queue.
    /// Only `submit_with` (a pool's or a task group's), `blocking_submit_with` and streams
    /// given options ([`MapUnordered::with_options`](crate::MapUnordered::with_options))
    /// wait with a priority: `submit`, `blocking_submit`, other streams and a group's
    /// `submit` wait with priority 0. From the process
    /// exit's take-over of an `auto_shutdown` `SmartAioPool` on, room goes to whichever
    /// waiting submitter, or new submit, takes it first, whatever its priority (the crate
    /// docs, "Guarantees"); queued tasks keep their priority order, but for interrupted
    /// runs queued again (at the exit or a runtime's end), which go first. A task taken
    /// for a slot that never started it (its slot dropped with its runtime, or the
    /// exit's) goes back to its place by priority and submit order.
    ///
    /// A queued task of low priority waits while higher ones keep arriving (strict
    /// priority, no aging): under a constant stream of higher-priority tasks it may wait
    /// indefinitely. Tasks already running are never preempted. A task given a free slot
    /// at its submit is counted as running from then ([`PoolStats::running`](crate::PoolStats::running)),
    /// but a slot task takes it a moment later, when its runtime next runs that task:
    /// a task of a higher priority submitted before that takes the slot (and, in a
    /// rate-limited pool, the window's start) first, and the earlier one waits for the
    /// next.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// How much of the pool's `weight_capacity` the task takes while it runs. Default: 1.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The task's key (a host, a tenant): in a pool built with `max_per_key(n)`, at most
    /// `n` running tasks share a key. Default: none (never limited by key).
    ///
    /// Keys are the same key when their strings are equal, byte for byte: no case folding
    /// or Unicode normalisation (`"Example.com"` and `"example.com"` are two keys), so a
    /// crawler keying by host normalises its hosts itself.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(Arc::from(key.into()));
        self
    }

    /// Gives up waiting for room after `timeout`: the submit fails with
    /// [`SubmitErrorKind::TimedOut`](crate::SubmitErrorKind::TimedOut) and hands the task
    /// back. Default: wait as long as it takes.
    ///
    /// It bounds the wait for admission only: once accepted, a task queued or held back
    /// by its key, weight or the rate window waits as long as that takes.
    /// `blocking_submit_with` bounds its thread's wait by the system clock. For the async
    /// submits, the timer needs a tokio runtime with time enabled, and is made only if the
    /// submit has to wait, on the runtime whose context polls the submit: it runs only
    /// while that runtime is driven (under `Handle::enter` of a current-thread runtime
    /// that no thread drives, it never fires, and the submit waits as long as it takes).
    /// A submit's future polled on another runtime later takes its timer there, for the
    /// time left by the system clock (if that runtime has time enabled; else it keeps the
    /// first runtime's while that runtime lives, and panics with this crate's message when
    /// neither can keep one).
    /// Room freed goes first to the submitters ahead of this one in the line (a higher
    /// priority, or the same and earlier; but for the process exit, see
    /// [`priority`](Self::priority)): one of them waiting on a runtime that is alive but
    /// not driven holds it until that runtime is driven again or dropped (see the crate
    /// docs, "Guarantees"), and the deadline may pass meanwhile with the pool idle.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}
