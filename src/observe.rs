//! Observability: the `on_panic` callback, and the hooks of the optional `tracing` and
//! `metrics` features.
//!
//! The engine calls the hooks below unconditionally; without the features every type here
//! is empty and every hook an empty `#[inline(always)]` function, so the plain build pays
//! nothing (no field, no clock read, no branch).
//!
//! - `tracing`: a span `task` (fields `pool`, `task_id`) per task, created when the task
//!   starts, as a child of the span current at its submit (a run queued again after an
//!   interruption: no parent, see [`Stamp::requeued`]), and entered while the task is
//!   started and polled; events for rejections (DEBUG), panics (WARN) and cancellations
//!   (DEBUG), with the same fields.
//! - `metrics`: handles registered once per pool (label `pool`), so recording costs no
//!   lookup; the recorder in place when the pool is *built* receives them. Counters and
//!   gauges are recorded under the engine's lock, where `PoolStats` counts, so the two
//!   agree (a recorder's handles are atomics; they must not call back into the pool).
//!
//! A subscriber or a recorder that panics when the pool calls it loses that call's record
//! and nothing else: every call into one from here is made through [`quietly`], which
//! catches the panic (the panic hook has printed it). The pool's own work around the calls
//! (its counts, the handles' and the waits' wake-ups, the task's room) must not be skipped
//! by an unwinding observer; and some of the calls are made under the engine's lock, or in
//! a `Drop`, where a second panic aborts the process.

use std::fmt;
use std::sync::Arc;

#[cfg(feature = "tracing")]
use crate::error::CancelReason;
#[cfg(any(feature = "tracing", feature = "metrics"))]
use crate::error::SubmitErrorKind;
use crate::error::TaskError;
use crate::task::{Outcome, TaskId};
use crate::unwind;

/// Calls an observer (a subscriber, a recorder) and catches a panic in it; `or` is what
/// the call gives back then. Only the feature builds call observers.
#[cfg(any(feature = "tracing", feature = "metrics"))]
#[inline(always)]
fn quietly<T>(call: impl FnOnce() -> T, or: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|payload| {
        unwind::drop_payload(payload);
        or()
    })
}

// ----- on_panic --------------------------------------------------------------------------

/// The callback itself.
type PanicFn = dyn Fn(TaskId, &TaskError) + Send + Sync;

/// A builder's `on_panic` callback.
#[derive(Clone, Default)]
pub(crate) struct OnPanic(Option<Arc<PanicFn>>);

impl OnPanic {
    pub(crate) fn new(f: impl Fn(TaskId, &TaskError) + Send + Sync + 'static) -> Self {
        OnPanic(Some(Arc::new(f)))
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Calls the callback for a panic nobody will see otherwise; a panic inside it is
    /// caught and dropped (it must not take the slot task down). Never called under a lock.
    pub(crate) fn call(&self, id: u64, err: &TaskError) {
        if let Some(f) = &self.0 {
            unwind::quietly(|| f(TaskId(id), err));
        }
    }
}

impl fmt::Debug for OnPanic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

// ----- per pool ---------------------------------------------------------------------------

/// The `reason` of a refusal, as the `submit rejected` event and the
/// `nb_aiopool_submits_rejected` counter label it (`None`: a `try_submit` found the pool
/// full), in the order of [`REASONS`].
#[cfg(any(feature = "tracing", feature = "metrics"))]
fn reason_index(kind: Option<SubmitErrorKind>) -> usize {
    match kind {
        None => 0,
        Some(SubmitErrorKind::Closed) => 1,
        Some(SubmitErrorKind::WouldDeadlock) => 2,
        Some(SubmitErrorKind::NoRuntime) => 3,
        Some(SubmitErrorKind::TimedOut) => 4,
        Some(SubmitErrorKind::TooHeavy) => 5,
    }
}

/// The refusals' `reason` labels, by [`reason_index`].
#[cfg(any(feature = "tracing", feature = "metrics"))]
const REASONS: [&str; 6] = [
    "full",
    "closed",
    "would_deadlock",
    "no_runtime",
    "timed_out",
    "too_heavy",
];

#[cfg(feature = "metrics")]
struct Metrics {
    submitted: metrics::Counter,
    completed: metrics::Counter,
    panicked: metrics::Counter,
    cancelled: metrics::Counter,
    queued: metrics::Gauge,
    running: metrics::Gauge,
    queue_wait: metrics::Histogram,
    run_time: metrics::Histogram,
    /// `nb_aiopool_submits_rejected`, one per `reason` label, by [`reason_index`].
    rejected: [metrics::Counter; REASONS.len()],
    /// The figures this pool last added to the gauges (written under the engine's lock).
    last_queued: std::sync::atomic::AtomicUsize,
    last_running: std::sync::atomic::AtomicUsize,
}

/// Moves `gauge` by how far `now` is from the `last` figure this pool gave it: pools that
/// share a name (every pool made by `new` is named after its type) add up, as their
/// counters do, instead of each setting the gauge to its own figure.
///
/// Called under the engine's lock. The figure is stored once the gauge has moved: a move
/// lost to a recorder that panicked is made at the next call (the last one is the
/// engine's drop, to 0), so the gauge cannot stay off from `PoolStats` for good.
#[cfg(feature = "metrics")]
fn move_gauge(gauge: &metrics::Gauge, last: &std::sync::atomic::AtomicUsize, now: usize) {
    let before = last.load(std::sync::atomic::Ordering::Relaxed);
    quietly(
        || {
            if now > before {
                gauge.increment((now - before) as f64);
            } else if now < before {
                gauge.decrement((before - now) as f64);
            }
            last.store(now, std::sync::atomic::Ordering::Relaxed);
        },
        || (),
    );
}

/// A pool's observability handles (empty without the features).
pub(crate) struct Observer {
    #[cfg(feature = "tracing")]
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

impl Observer {
    #[cfg_attr(
        not(any(feature = "tracing", feature = "metrics")),
        allow(unused_variables)
    )]
    pub(crate) fn new(name: &Arc<str>) -> Self {
        #[cfg(feature = "metrics")]
        let metrics = {
            use metrics::{counter, gauge, histogram};
            describe_metrics();
            let pool = name.to_string();
            // A registration that panics leaves that figure unrecorded (a no-op handle).
            let counter = |name: &'static str| {
                quietly(
                    || counter!(name, "pool" => pool.clone()),
                    metrics::Counter::noop,
                )
            };
            let gauge = |name: &'static str| {
                quietly(
                    || gauge!(name, "pool" => pool.clone()),
                    metrics::Gauge::noop,
                )
            };
            let histogram = |name: &'static str| {
                quietly(
                    || histogram!(name, "pool" => pool.clone()),
                    metrics::Histogram::noop,
                )
            };
            Metrics {
                submitted: counter("nb_aiopool_tasks_submitted"),
                completed: counter("nb_aiopool_tasks_completed"),
                panicked: counter("nb_aiopool_tasks_panicked"),
                cancelled: counter("nb_aiopool_tasks_cancelled"),
                queued: gauge("nb_aiopool_tasks_queued"),
                running: gauge("nb_aiopool_tasks_running"),
                queue_wait: histogram("nb_aiopool_queue_wait_seconds"),
                run_time: histogram("nb_aiopool_run_time_seconds"),
                rejected: REASONS.map(|reason| {
                    quietly(
                        || {
                            counter!("nb_aiopool_submits_rejected",
                                "pool" => pool.clone(), "reason" => reason)
                        },
                        metrics::Counter::noop,
                    )
                }),
                last_queued: Default::default(),
                last_running: Default::default(),
            }
        };
        Observer {
            #[cfg(feature = "tracing")]
            name: Arc::clone(name),
            #[cfg(feature = "metrics")]
            metrics,
        }
    }

    /// A task was accepted (under the engine's lock).
    #[inline(always)]
    pub(crate) fn submitted(&self) {
        #[cfg(feature = "metrics")]
        quietly(|| self.metrics.submitted.increment(1), || ());
    }

    /// A task's outcome was counted (under the engine's lock, where `PoolStats` counts it).
    #[inline(always)]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn counted(&self, outcome: crate::task::Outcome) {
        #[cfg(feature = "metrics")]
        quietly(
            || match outcome {
                Outcome::Completed => self.metrics.completed.increment(1),
                Outcome::Panicked => self.metrics.panicked.increment(1),
                Outcome::Cancelled(_) => self.metrics.cancelled.increment(1),
            },
            || (),
        );
    }

    /// The figures of `PoolStats::queued` and `running` (under the engine's lock): the
    /// gauges are moved by the change since the last call (see [`move_gauge`]).
    #[cfg(feature = "metrics")]
    #[inline(always)]
    pub(crate) fn gauges(&self, queued: usize, running: usize) {
        let m = &self.metrics;
        move_gauge(&m.queued, &m.last_queued, queued);
        move_gauge(&m.running, &m.last_running, running);
    }

    /// A submit was refused (`kind`), or found the pool full (`None`).
    #[inline(always)]
    #[cfg_attr(
        not(any(feature = "tracing", feature = "metrics")),
        allow(unused_variables)
    )]
    pub(crate) fn rejected(&self, kind: Option<crate::error::SubmitErrorKind>) {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        let at = reason_index(kind);
        #[cfg(feature = "metrics")]
        quietly(|| self.metrics.rejected[at].increment(1), || ());
        #[cfg(feature = "tracing")]
        {
            let reason = REASONS[at];
            quietly(
                || tracing::debug!(target: "nb_aiopool", pool = %self.name, reason, "submit rejected"),
                || (),
            );
        }
    }

    /// A task was cancelled before it started (outside the lock): while queued, in its
    /// slot before its start (a `cancel_all` that covered it, or an abort, after it left
    /// the queue), or with its slot task.
    ///
    /// A root event (no parent span), named by its `task_id` field: the span current here
    /// is the canceller's, which may be another task's `task` span (a cancel-on-error
    /// group's failing task aborts the others from its poll, a job calls `cancel_all`, a
    /// nested wait is refused), and an event in it would be taken for that task's.
    #[inline(always)]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn cancelled(&self, id: u64, reason: crate::error::CancelReason) {
        #[cfg(feature = "tracing")]
        quietly(
            || {
                tracing::debug!(
                    target: "nb_aiopool",
                    parent: None,
                    pool = %self.name,
                    task_id = id,
                    reason = reason_name(reason),
                    "task cancelled"
                )
            },
            || (),
        );
    }

    /// A task starts in a slot: records its queue wait and opens its span.
    #[inline(always)]
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    pub(crate) fn start(&self, id: u64, stamp: Stamp) -> Running {
        #[cfg(feature = "metrics")]
        let now = clock_now();
        #[cfg(feature = "metrics")]
        quietly(
            || {
                self.metrics
                    .queue_wait
                    .record(now.saturating_duration_since(stamp.at))
            },
            || (),
        );
        Running {
            #[cfg(feature = "tracing")]
            span: quietly(
                || {
                    tracing::info_span!(
                        target: "nb_aiopool",
                        parent: &stamp.parent,
                        "task",
                        pool = %self.name,
                        task_id = id
                    )
                },
                tracing::Span::none,
            ),
            #[cfg(feature = "metrics")]
            started: Some(now),
        }
    }

    /// A started task ended with `outcome` outside a slot's poll (its slot dropped by its
    /// runtime): reported as `ended` (built with the features) reports it, inside the
    /// task's span. Called outside the lock.
    #[inline(always)]
    #[cfg_attr(
        not(any(feature = "tracing", feature = "metrics")),
        allow(unused_variables)
    )]
    pub(crate) fn ended_in(&self, run: &Running, outcome: Outcome) {
        #[cfg(any(feature = "tracing", feature = "metrics"))]
        {
            let _span = run.enter();
            self.ended(run, outcome, None);
        }
    }

    /// A started task ended with `outcome` (`error`: its error, if any). Called outside
    /// the lock, inside the task's span (but for a completion without `metrics`, which
    /// records nothing).
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    #[cfg_attr(
        not(all(feature = "tracing", feature = "metrics")),
        allow(unused_variables)
    )]
    pub(crate) fn ended(&self, run: &Running, outcome: Outcome, error: Option<&str>) {
        #[cfg(feature = "metrics")]
        quietly(
            || {
                if let Some(started) = run.started {
                    self.metrics.run_time.record(started.elapsed());
                }
            },
            || (),
        );
        #[cfg(feature = "tracing")]
        quietly(|| self.event(outcome, error), || ());
    }

    /// The event of a task's end (none for a completion).
    #[cfg(feature = "tracing")]
    fn event(&self, outcome: Outcome, error: Option<&str>) {
        match (outcome, error) {
            (Outcome::Panicked, Some(error)) => {
                tracing::warn!(
                    target: "nb_aiopool",
                    pool = %self.name,
                    error = %error,
                    "task panicked"
                )
            }
            (Outcome::Panicked, None) => {
                tracing::warn!(target: "nb_aiopool", pool = %self.name, "task panicked")
            }
            (Outcome::Cancelled(reason), _) => tracing::debug!(
                target: "nb_aiopool",
                pool = %self.name,
                reason = reason_name(reason),
                "task cancelled"
            ),
            (Outcome::Completed, _) => {}
        }
    }
}

#[cfg(feature = "tracing")]
fn reason_name(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Aborted => "aborted",
        CancelReason::Abandoned => "abandoned",
        CancelReason::RuntimeShutdown => "runtime_shutdown",
        CancelReason::CancelAll => "cancel_all",
        CancelReason::WouldDeadlock => "would_deadlock",
    }
}

// ----- per task ---------------------------------------------------------------------------

/// Queue-time stamps of jobs that left the queue unrun, kept to be dropped outside the
/// engine's lock (with `tracing`, a span's drop calls the subscriber). Without the
/// features a stamp is empty, and so is this list: it takes no room in a slot task, whose
/// size is the number of cache lines each of its polls touches (BENCHMARKS.md,
/// "2026-12-03, midday").
#[derive(Default)]
pub(crate) struct Stamps {
    #[cfg(any(feature = "metrics", feature = "tracing"))]
    list: Vec<Stamp>,
}

impl Stamps {
    #[inline(always)]
    pub(crate) fn push(&mut self, stamp: Stamp) {
        #[cfg(any(feature = "metrics", feature = "tracing"))]
        self.list.push(stamp);
        // Empty without the features: nothing to keep.
        #[cfg(not(any(feature = "metrics", feature = "tracing")))]
        let _ = stamp;
    }

    /// Whether it never held a stamp (nothing allocated: always, without the features).
    #[inline(always)]
    pub(crate) fn untouched(&self) -> bool {
        #[cfg(any(feature = "metrics", feature = "tracing"))]
        return self.list.capacity() == 0;
        #[cfg(not(any(feature = "metrics", feature = "tracing")))]
        true
    }

    /// Drops the stamps kept (outside the lock).
    #[inline(always)]
    pub(crate) fn clear(&mut self) {
        #[cfg(any(feature = "metrics", feature = "tracing"))]
        self.list.clear();
    }
}

/// Now, on tokio's clock (the rate limit's: paused with it under `test-util`), or std's
/// on a thread whose tokio context thread-local is gone (a thread-local's destructor, a
/// runtime dropped with its thread), where `tokio::time::Instant::now()` panics once a
/// clock was paused in the process (with `test-util`); outside a runtime tokio reads
/// std's clock anyway.
#[cfg(feature = "metrics")]
#[inline]
fn clock_now() -> tokio::time::Instant {
    match tokio::runtime::Handle::try_current() {
        Err(e) if e.is_thread_local_destroyed() => {
            tokio::time::Instant::from_std(std::time::Instant::now())
        }
        _ => tokio::time::Instant::now(),
    }
}

/// Tells the recorder what the pool's metrics are and their units (the histograms are in
/// seconds), for exporters that show them. Called at each pool's build: a recorder keeps
/// the last description of a name. A recorder that panics here loses the descriptions.
#[cfg(feature = "metrics")]
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    quietly(
        || {
            describe_counter!(
                "nb_aiopool_tasks_submitted",
                Unit::Count,
                "Tasks a pool accepted."
            );
            describe_counter!(
                "nb_aiopool_tasks_completed",
                Unit::Count,
                "Tasks that returned their output."
            );
            describe_counter!(
                "nb_aiopool_tasks_panicked",
                Unit::Count,
                "Tasks that panicked."
            );
            describe_counter!(
                "nb_aiopool_tasks_cancelled",
                Unit::Count,
                "Tasks cancelled: aborted, by cancel_all, abandoned, by their runtime's end, with \
                 their pool dropped, or refused as a deadlock."
            );
            describe_counter!(
                "nb_aiopool_submits_rejected",
                Unit::Count,
                "Submits a pool refused, by reason (label reason: full for a try_submit of a \
                 full pool, closed, would_deadlock, no_runtime, timed_out, too_heavy)."
            );
            describe_gauge!(
                "nb_aiopool_tasks_queued",
                Unit::Count,
                "Tasks waiting in a pool's queue."
            );
            describe_gauge!(
                "nb_aiopool_tasks_running",
                Unit::Count,
                "Tasks a pool runs now, with those a slot took and has not polled yet."
            );
            describe_histogram!(
                "nb_aiopool_queue_wait_seconds",
                Unit::Seconds,
                "From a task's acceptance (or a re-run's return to the queue) to its start."
            );
            describe_histogram!(
                "nb_aiopool_run_time_seconds",
                Unit::Seconds,
                "From a task's start to its end."
            );
        },
        || (),
    );
}

/// Taken when a task is queued: when, and the span current at its submit.
pub(crate) struct Stamp {
    #[cfg(feature = "metrics")]
    at: tokio::time::Instant,
    #[cfg(feature = "tracing")]
    parent: tracing::Span,
}

impl Stamp {
    #[inline(always)]
    pub(crate) fn now() -> Self {
        Stamp {
            #[cfg(feature = "metrics")]
            at: clock_now(),
            #[cfg(feature = "tracing")]
            parent: quietly(tracing::Span::current, tracing::Span::none),
        }
    }

    /// For a run queued again after an interruption, under the engine's lock: asks the
    /// subscriber nothing, so the re-run's span has no parent.
    #[inline(always)]
    pub(crate) fn requeued() -> Self {
        Stamp {
            #[cfg(feature = "metrics")]
            at: clock_now(),
            #[cfg(feature = "tracing")]
            parent: tracing::Span::none(),
        }
    }
}

/// Kept by a slot for the task it runs: its span and when it started.
pub(crate) struct Running {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
    /// `None` while the slot runs no task (before its first, and after each end, which
    /// resets it without reading the clock).
    #[cfg(feature = "metrics")]
    started: Option<tokio::time::Instant>,
}

impl Running {
    /// While the slot runs no task.
    #[inline(always)]
    pub(crate) fn none() -> Self {
        Running {
            #[cfg(feature = "tracing")]
            span: tracing::Span::none(),
            #[cfg(feature = "metrics")]
            started: None,
        }
    }

    /// Another handle on the same task's span and start (a span's clone calls the
    /// subscriber: a panic there leaves the copy without the span).
    #[cfg(any(feature = "tracing", feature = "metrics"))]
    pub(crate) fn share(&self) -> Running {
        Running {
            #[cfg(feature = "tracing")]
            span: quietly(|| self.span.clone(), tracing::Span::none),
            #[cfg(feature = "metrics")]
            started: self.started,
        }
    }

    /// Enters the task's span until the guard is dropped.
    #[cfg(feature = "tracing")]
    #[inline(always)]
    pub(crate) fn enter(&self) -> InSpan<'_> {
        // `Span::none()` (no subscriber, or a task never started): nothing to enter, and no
        // `catch_unwind` to pay for (with `close` below and the end of a completion,
        // 36–44 instructions a task with `tracing` alone and no subscriber; BENCHMARKS.md).
        // A span disabled by the subscriber is still entered: with tracing's `log`
        // feature, entering it may log.
        if self.span.is_none() {
            return InSpan(None);
        }
        InSpan(quietly(
            || Some(self.span.enter()),
            || {
                // The subscriber may have entered the span before it panicked (a
                // `Registry` pushes it on the thread's stack, then calls its layers):
                // leave it, or it would stay current on this thread (and be the parent of
                // spans made there) for good. Leaving a span not entered does nothing.
                quietly(
                    || {
                        self.span.with_subscriber(|(id, d)| d.exit(id));
                    },
                    || (),
                );
                None
            },
        ))
    }

    /// Enters the task's span until the guard is dropped (nothing to enter here).
    #[cfg(not(feature = "tracing"))]
    #[inline(always)]
    pub(crate) fn enter(&self) -> NoSpan {
        NoSpan
    }
}

/// A task's span entered (if entering it did not panic), until this is dropped.
#[cfg(feature = "tracing")]
pub(crate) struct InSpan<'a>(Option<tracing::span::Entered<'a>>);

#[cfg(feature = "tracing")]
impl Drop for InSpan<'_> {
    /// Exits the span (a panic in the subscriber's `exit` is caught).
    fn drop(&mut self) {
        if let Some(entered) = self.0.take() {
            quietly(|| drop(entered), || ());
        }
    }
}

/// Drops a span (a panic in the subscriber's `try_close` is caught).
#[cfg(feature = "tracing")]
fn close(span: &mut tracing::Span) {
    // Nothing to close (see `Running::enter`).
    if span.is_none() {
        return;
    }
    let span = std::mem::replace(span, tracing::Span::none());
    quietly(|| drop(span), || ());
}

#[cfg(feature = "tracing")]
impl Drop for Stamp {
    /// Drops the submitter's span it holds (see [`close`]).
    fn drop(&mut self) {
        close(&mut self.parent);
    }
}

#[cfg(feature = "tracing")]
impl Drop for Running {
    /// Closes the task's span (see [`close`]).
    fn drop(&mut self) {
        close(&mut self.span);
    }
}

/// The span guard of a build without `tracing`.
#[cfg(not(feature = "tracing"))]
pub(crate) struct NoSpan;
