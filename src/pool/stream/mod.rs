//! Streams through a pool: [`MapUnordered`] and [`MapOrdered`], made by `map_unordered`
//! and `map_ordered` on each pool.
//!
//! Both are one state machine over the pool's engine, erased behind [`Feed`] so that one
//! public type serves the three pools (futures or recipes). Each step takes an admission
//! permit *first*, checks that the pool is still open (the permit may have been held for
//! long) and only then pulls the next input, so the input stream is never pulled further
//! than the pool has room for; a permit taken for an input that turned out not to exist
//! (the stream ended, or the pool closed), or not to be ready yet, is given back (an idle
//! input holds no room: see [`Mapper::wait_for_input`]).
//!
//! A stream given options (`with_options`) takes a place first too when there is one; when
//! the pool is full, its wait for room is the input's (its priority, its deadline), so it
//! pulls the input first, then waits as `submit_with` does (see [`Mapper::stage`]).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, Stream, StreamExt};

use super::core::{Core, Submit};

mod map_ordered;
mod map_unordered;

use super::group::{abort_newest_first, Tagged};
use crate::engine::{AdmitError, Job, Meta, SizeWatch};
use crate::error::{SubmitErrorKind, TaskError};
use crate::options::SubmitOptions;
use crate::task::{Shared, SlotRef, TaskHandle};
pub use map_ordered::MapOrdered;
pub use map_unordered::MapUnordered;

/// A pending admission, owned (it holds its own reference to the engine).
type Admission = Pin<Box<dyn Future<Output = Result<(), SubmitErrorKind>> + Send>>;

/// The options of each input (`with_options`), boxed once per stream so that the stream's
/// type does not change.
type OptionsFn<I> = Box<dyn FnMut(&I) -> SubmitOptions + Send>;

/// The pool-specific half of a map stream: admission, and turning an input into a job.
trait Feed<I, T>: Send {
    fn try_admit(&self) -> Result<(), AdmitError>;
    /// The wait for room of an input that takes its place first (`submit`'s: a plain
    /// stream's, or, inside a job of the pool, one given options), which does not report
    /// a `WouldDeadlock`: the stream may retry then (see `fill`), and reports it if it
    /// stops.
    fn admit(&self) -> Admission;
    /// Gives a place back; returns whether the pool is still open (one lock).
    fn unadmit(&self) -> bool;
    /// Whether the pool was shut down (it refuses every job from then on).
    fn is_closed(&self) -> bool;
    /// Reports a refusal of `kind` the stream decided (the pool was shut down, or a nested
    /// wait for room with no job of its own to wait for), as a submit's is reported.
    fn refused(&self, kind: SubmitErrorKind);
    /// Builds the input's job (calls `f`) and pushes it; the caller holds a permit, which
    /// moves into the job or, on a refusal, is given back. If `f` panics, the caller
    /// still holds it.
    fn push(&mut self, input: I) -> Result<TaskHandle<T>, SubmitErrorKind>;
    /// [`push`](Self::push) of an input with its options (`with_options`), refused as
    /// `submit_with` refuses it (`TooHeavy`).
    fn push_with(
        &mut self,
        input: I,
        opts: &SubmitOptions,
    ) -> Result<TaskHandle<T>, SubmitErrorKind>;
    /// Builds the job of an input with options, pulled while the pool was full (calls
    /// `f`), and keeps it until [`push_staged`](Self::push_staged); refused at once as
    /// `submit_with` refuses it (`TooHeavy`: the job is dropped). No permit is held.
    fn stage(&mut self, input: I, opts: &SubmitOptions) -> Result<(), SubmitErrorKind>;
    /// The wait for room of the staged job, as `submit_with`'s: with its priority and
    /// timeout.
    fn admit_staged(&self) -> Admission;
    /// Pushes the staged job; the caller holds a permit, as for [`push`](Self::push).
    fn push_staged(&mut self) -> Result<TaskHandle<T>, SubmitErrorKind>;
    /// Drops the staged job, if any (never run: the stream was refused or stopped).
    fn unstage(&mut self);
    /// How many jobs the pool holds at most (running + queued).
    fn capacity(&self) -> usize;
    /// Whether the current thread is polling a job of this pool.
    fn in_pool(&self) -> bool;
    /// A waker slot told when the pool's size changes, and when it closes.
    fn watch_size(&self) -> SizeWatch;
}

/// The job of an input with options, as a stream pushes it: the same job as `S`, of a
/// type of its own so that the core's push of it is a function of its own. The plain path
/// (`push`) then keeps the only call of the core's push of `S`, which the compiler inlines
/// there as before streams took options; with a second call, from the options' path, it
/// no longer did, which cost every input of a plain stream about 50 instructions (a
/// callgrind count of a stream of 40,000 inputs through a `CommonAioPool`, before and
/// after).
struct WithOptions<S>(S);

impl<J, S: Submit<J>> Submit<J> for WithOptions<S> {
    type Output = S::Output;
    type Ready = S::Ready;

    fn ready(self, shared: Shared<S::Output>) -> S::Ready {
        self.0.ready(shared)
    }

    fn slot(ready: &S::Ready) -> SlotRef<S::Output> {
        S::slot(ready)
    }

    fn into_job(ready: S::Ready) -> J {
        S::into_job(ready)
    }

    fn unready(ready: S::Ready) -> Self {
        WithOptions(S::unready(ready))
    }
}

struct Feeder<J: Job, F, S: Submit<J>> {
    core: Core<J>,
    f: F,
    /// The job of an input with options pulled while the pool was full, made ready, with
    /// its settings and its deadline for the wait (see [`Mapper::stage`]).
    staged: Option<(S::Ready, Meta, Option<Duration>)>,
    _item: PhantomData<fn() -> S>,
}

impl<J: Job, F, S: Submit<J>> Feeder<J, F, S> {
    /// Pushes an admitted job of an input with options (see [`WithOptions`]).
    fn push_ready(
        &self,
        ready: S::Ready,
        meta: Meta,
    ) -> Result<TaskHandle<S::Output>, SubmitErrorKind> {
        self.core
            .push_admitted_ready::<WithOptions<S>>(ready, meta)
            .map_err(|e| e.kind())
    }
}

impl<J, F, I, S> Feed<I, S::Output> for Feeder<J, F, S>
where
    J: Job,
    F: FnMut(I) -> S + Send,
    S: Submit<J>,
{
    fn try_admit(&self) -> Result<(), AdmitError> {
        self.core.engine.try_admit()
    }

    fn refused(&self, kind: SubmitErrorKind) {
        self.core.engine.reject(kind);
    }

    fn admit(&self) -> Admission {
        let engine = Arc::clone(&self.core.engine);
        // A `WouldDeadlock` is the stream's to report: it retries if it can.
        Box::pin(async move { engine.admit_for_stream().await })
    }

    fn unadmit(&self) -> bool {
        self.core.engine.unadmit()
    }

    fn is_closed(&self) -> bool {
        self.core.engine.is_closed()
    }

    fn push(&mut self, input: I) -> Result<TaskHandle<S::Output>, SubmitErrorKind> {
        let item = (self.f)(input);
        // A refused job is dropped here. The stream checks that the pool is open before it
        // pulls an input, so only a shutdown racing with the pull and `f`, or a pool with
        // no runtime, loses an input this way (see "Refusal" in the stream's docs).
        (self.core)
            .push_admitted_with(item, Meta::default())
            .map_err(|e| e.kind())
    }

    fn push_with(
        &mut self,
        input: I,
        opts: &SubmitOptions,
    ) -> Result<TaskHandle<S::Output>, SubmitErrorKind> {
        let item = (self.f)(input);
        match self.core.ready_with(item, opts) {
            Ok((ready, meta)) => self.push_ready(ready, meta),
            Err(refused) => {
                // Dropped, as in `push`; the permit goes back, as on a refused push.
                self.core.engine.unadmit();
                Err(refused.kind())
            }
        }
    }

    fn stage(&mut self, input: I, opts: &SubmitOptions) -> Result<(), SubmitErrorKind> {
        let item = (self.f)(input);
        let (ready, meta) = self.core.ready_with(item, opts).map_err(|e| e.kind())?;
        self.staged = Some((ready, meta, opts.timeout));
        Ok(())
    }

    fn admit_staged(&self) -> Admission {
        let (_, meta, limit) = self.staged.as_ref().expect("a job is staged");
        Box::pin(self.core.wait_for_room(meta.priority(), *limit))
    }

    fn push_staged(&mut self) -> Result<TaskHandle<S::Output>, SubmitErrorKind> {
        let (ready, meta, _) = self.staged.take().expect("a job is staged");
        self.push_ready(ready, meta)
    }

    fn unstage(&mut self) {
        // Never queued: the item comes back, and is dropped here (on the task polling the
        // stream, or the one dropping it). Quietly: it is the user's future or recipe, and
        // this may run in the stream's `Drop`, where a panic of its `Drop` would escape
        // (or, while unwinding, abort), as a held result's would (RELIABILITY.md, 355).
        if let Some((ready, ..)) = self.staged.take() {
            crate::engine::drop_quietly(S::unready(ready));
        }
    }

    fn capacity(&self) -> usize {
        let engine = &self.core.engine;
        engine
            .max_concurrency()
            .saturating_add(engine.max_queue_size())
    }

    fn in_pool(&self) -> bool {
        crate::task::context::in_pool(self.core.engine.id())
    }

    fn watch_size(&self) -> SizeWatch {
        self.core.engine.watch_size()
    }
}

fn feed<J, F, I, S>(core: &Core<J>, f: F) -> Box<dyn Feed<I, S::Output>>
where
    J: Job,
    F: FnMut(I) -> S + Send + 'static,
    S: Submit<J>,
{
    Box::new(Feeder {
        core: core.clone(),
        f,
        staged: None,
        _item: PhantomData,
    })
}

/// Where the stream stands with the pool's admission.
enum Permit {
    /// No permit held, none asked for.
    None,
    /// Waiting for room; `true` if the wait began inside a job of the pool.
    Waiting(Admission, bool),
    /// A permit is held for the next input.
    Held,
}

/// Why [`Mapper::fill`] last stopped pulling inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// For room (a wait that a job's end or a grow wakes), for an input, or for good.
    Other,
    /// At a full window (inputs remaining): as many inputs held as the pool holds.
    Window,
    /// At a full pool it polls from inside, where waiting for room could deadlock: it
    /// tries again when one of its own jobs ends.
    Retry,
}

/// The state machine behind both map streams.
struct Mapper<St: Stream, T> {
    /// `None` once the input stream ended or the pool refused a job.
    inputs: Option<Pin<Box<St>>>,
    feed: Box<dyn Feed<St::Item, T>>,
    /// Each input's options, if the stream was given them (`with_options`).
    options: Option<OptionsFn<St::Item>>,
    /// Whether the feed holds the job of an input with options pulled while the pool was
    /// full, waiting for room (see [`stage`](Self::stage)).
    staged: bool,
    permit: Permit,
    /// The tasks polled together: all of the unordered stream's, and the ordered
    /// stream's once it was polled inside a job of its own pool.
    tasks: FuturesUnordered<Tagged<T>>,
    /// The ordered stream's tasks in input order, the first one alone awaited, while
    /// `in_order` (see [`poll_ordered`](Self::poll_ordered)).
    queue: VecDeque<Tagged<T>>,
    /// New tasks go to `queue`: an ordered stream, until it is polled inside a job of its
    /// own pool.
    in_order: bool,
    /// Told when the pool's size changes or it closes, once the stream waited with a full
    /// window (see [`watch_window`](Self::watch_window)) or for its input (see
    /// [`wait_for_input`](Self::wait_for_input)).
    size_watch: Option<SizeWatch>,
    /// Why `fill` last stopped.
    stop: Stop,
    /// For the ordered stream polling its tasks together: results that finished before
    /// an earlier one, by position (`buffer[0]` is input number `next_out`).
    buffer: VecDeque<Option<Result<T, TaskError>>>,
    next_in: u64,
    next_out: u64,
    refused: Option<SubmitErrorKind>,
}

impl<St: Stream, T> Mapper<St, T> {
    /// `in_order` for the ordered stream.
    fn new(inputs: St, feed: Box<dyn Feed<St::Item, T>>, in_order: bool) -> Self {
        Mapper {
            inputs: Some(Box::pin(inputs)),
            feed,
            options: None,
            staged: false,
            permit: Permit::None,
            tasks: FuturesUnordered::new(),
            queue: VecDeque::new(),
            in_order,
            size_watch: None,
            stop: Stop::Other,
            buffer: VecDeque::new(),
            next_in: 0,
            next_out: 0,
            refused: None,
        }
    }

    /// Inputs pulled and not yet yielded.
    fn held(&self) -> usize {
        (self.next_in - self.next_out) as usize
    }

    fn stop_intake(&mut self, refused: Option<SubmitErrorKind>) {
        self.inputs = None;
        self.stop = Stop::Other;
        if refused.is_some() {
            self.refused = refused;
        }
        if let Permit::Held = std::mem::replace(&mut self.permit, Permit::None) {
            self.feed.unadmit();
        }
        if std::mem::take(&mut self.staged) {
            self.feed.unstage();
        }
    }

    /// Whether the window has room for another input: fewer held than the pool holds (read
    /// each time: the pool's size can change while the stream runs).
    fn window_open(&self) -> bool {
        self.held() < self.feed.capacity().max(1)
    }

    /// For a stream about to wait: if `fill` stopped at a full window, or at a full pool
    /// it may not wait on (`Stop::Retry`), what it waits for (a job's end: for an ordered
    /// stream awaiting its jobs in order, its first job's) may come long after the pool
    /// grew, so it registers to hear of a resize, *then* looks again (reads the size, or
    /// tries for room): a resize before the registration is seen by that look (and the
    /// window filled), one after it wakes the stream. (`fill` stopped for anything else
    /// waits for room or an input, each of which wakes it; a grow grants room to a
    /// waiting stream.) Returns whether it pushed any job (a `FuturesUnordered` must then
    /// be polled again, to poll the new ones).
    fn watch_window(&mut self, cx: &mut Context<'_>) -> bool {
        let pulled = self.next_in;
        loop {
            let stop = self.stop;
            if stop == Stop::Other {
                break;
            }
            let feed = &self.feed;
            self.size_watch
                .get_or_insert_with(|| feed.watch_size())
                .register(cx.waker());
            if stop == Stop::Window && !self.window_open() {
                break;
            }
            let before = self.next_in;
            self.fill(cx);
            if stop == Stop::Retry && self.stop == Stop::Retry && self.next_in == before {
                break; // still no room: the registration stands
            }
        }
        self.next_in != pulled
    }

    /// Takes permits and pulls inputs while both are ready and the window has room.
    fn fill(&mut self, cx: &mut Context<'_>) {
        self.stop = Stop::Other;
        while self.inputs.is_some() {
            if !self.window_open() {
                self.stop = Stop::Window;
                return;
            }
            // Admission first.
            loop {
                match &mut self.permit {
                    Permit::Held => break,
                    Permit::None => match self.feed.try_admit() {
                        Ok(()) => self.permit = Permit::Held,
                        Err(AdmitError::Closed) => {
                            self.feed.refused(SubmitErrorKind::Closed);
                            return self.stop_intake(Some(SubmitErrorKind::Closed));
                        }
                        Err(AdmitError::Full) => {
                            let inside = self.feed.in_pool();
                            let admission = if self.options.is_some() && !inside {
                                match self.stage(cx) {
                                    Some(admission) => admission,
                                    None => return,
                                }
                            } else {
                                self.feed.admit()
                            };
                            self.permit = Permit::Waiting(admission, inside)
                        }
                    },
                    // A wait begun outside the pool, polled now inside one of its jobs
                    // (the stream was moved there): the pool's check of nested submits
                    // was made when it began, so it could wait for good. It starts again,
                    // checked (a place granted to it meanwhile goes to the next waiter).
                    Permit::Waiting(_, false) if self.feed.in_pool() => {
                        self.permit = Permit::None;
                    }
                    Permit::Waiting(fut, _) => match fut.as_mut().poll(cx) {
                        Poll::Ready(Ok(())) => self.permit = Permit::Held,
                        Poll::Ready(Err(SubmitErrorKind::WouldDeadlock)) if self.has_tasks() => {
                            // Polled from a job of this same full pool: waiting for room
                            // could deadlock, but this stream's own jobs will free some.
                            // Try again once one of them ends (its completion wakes us), or
                            // the pool grows (see `watch_window`).
                            self.permit = Permit::None;
                            self.stop = Stop::Retry;
                            return;
                        }
                        Poll::Ready(Err(kind)) => {
                            self.permit = Permit::None;
                            if kind == SubmitErrorKind::WouldDeadlock {
                                // Not reported by the admission (see `Feed::admit`).
                                self.feed.refused(kind);
                            }
                            return self.stop_intake(Some(kind));
                        }
                        Poll::Pending => return,
                    },
                }
            }
            // Then the input: one pulled already and waiting for this place (its push
            // refused if the pool closed meanwhile, as a `submit_with`'s is), ...
            let pushed = if self.staged {
                self.staged = false;
                self.feed.push_staged()
            } else {
                // ... or the next one, unless the pool closed since the permit was taken
                // (inside a job of the pool it may have been held for long, waiting for a
                // slow input): its job would be refused and the input lost.
                if self.feed.is_closed() {
                    self.feed.refused(SubmitErrorKind::Closed);
                    return self.stop_intake(Some(SubmitErrorKind::Closed));
                }
                let Some(inputs) = self.inputs.as_mut() else {
                    return;
                };
                match inputs.as_mut().poll_next(cx) {
                    Poll::Pending => return self.wait_for_input(cx),
                    Poll::Ready(None) => return self.stop_intake(None),
                    // The permit stays held while the options and `f` run: if either
                    // panics, it is still here to be given back (by `Drop`, or used for
                    // the next input).
                    Poll::Ready(Some(input)) => match self.options {
                        None => self.feed.push(input),
                        Some(_) => self.push_with_options(input),
                    },
                }
            };
            // It moved into the job, or was given back on refusal.
            self.permit = Permit::None;
            match pushed {
                Ok(handle) => self.add_task(handle),
                Err(kind) => return self.stop_intake(Some(kind)),
            }
        }
    }

    /// Pushes the job of an input with options, a permit held. Out of line, as
    /// [`stage`](Self::stage): [`fill`](Self::fill), the plain path's loop, stays as small
    /// as before streams took options (see [`add_task`](Self::add_task)).
    #[inline(never)]
    fn push_with_options(&mut self, input: St::Item) -> Result<TaskHandle<T>, SubmitErrorKind> {
        let options = self.options.as_mut().expect("called with options");
        let opts = options(&input);
        self.feed.push_with(input, &opts)
    }

    /// Adds the task of the input just pushed. Called from one place, so that
    /// `FuturesUnordered::push` stays inlined in `fill`, as before streams took options
    /// (a second call, for a staged job, left it out of line: about 10 instructions more
    /// per input of a plain stream, see [`WithOptions`]).
    #[inline(always)]
    fn add_task(&mut self, handle: TaskHandle<T>) {
        let task = Tagged {
            seq: self.next_in,
            key: None,
            id: (),
            handle,
        };
        self.next_in += 1;
        if self.in_order {
            self.queue.push_back(task);
        } else {
            self.tasks.push(task);
        }
    }

    /// A stream given options found the pool full, outside a job of the pool: the wait
    /// for room is to be `submit_with`'s for the next input (in line with its priority,
    /// for at most its timeout), so the input is pulled first and its job staged (built,
    /// its weight checked) before the wait begins. Returns that wait, or `None` if there
    /// is none: the input is not ready (then, as for any idle input, the stream holds no
    /// place, see [`wait_for_input`](Self::wait_for_input)), the inputs ended, or the job
    /// was refused (`TooHeavy`: the stream stops as on any refusal). A job staged already
    /// (its wait dropped and begun again) waits again.
    ///
    /// Inside a job of the pool a full pool refuses a wait (`WouldDeadlock`): the stream
    /// takes the plain path there, a place first, then the input (its options then give
    /// its job's settings; there is no wait for their priority or timeout to apply to).
    #[inline(never)]
    fn stage(&mut self, cx: &mut Context<'_>) -> Option<Admission> {
        if !self.staged {
            let inputs = self.inputs.as_mut()?;
            let input = match inputs.as_mut().poll_next(cx) {
                Poll::Pending => {
                    self.wait_for_input(cx);
                    return None;
                }
                Poll::Ready(None) => {
                    self.stop_intake(None);
                    return None;
                }
                Poll::Ready(Some(input)) => input,
            };
            let options = self.options.as_mut().expect("staged only with options");
            let opts = options(&input);
            if let Err(kind) = self.feed.stage(input, &opts) {
                self.stop_intake(Some(kind));
                return None;
            }
            self.staged = true;
        }
        Some(self.feed.admit_staged())
    }

    /// The input stream is not ready (it will wake the stream), a permit held for its next
    /// input. An input may stay idle for long (a channel, a socket): the place goes back
    /// to the pool meanwhile, for other submitters and streams (held, idle streams, one
    /// per connection, could take every place of a shared pool while it runs nothing);
    /// the input's wake-up takes one again before it pulls. Inside a job of its own pool
    /// the stream keeps it: given back, the input could find the pool full when it comes,
    /// and a wait for room there is refused (`WouldDeadlock`).
    ///
    /// Either way the stream registers to hear of the pool's close *then* reads whether
    /// it is open: a shutdown ends a stream waiting for its input at once (refused,
    /// `Closed`), not at its next input (a close before the registration is seen by the
    /// read, one after it wakes the stream).
    fn wait_for_input(&mut self, cx: &mut Context<'_>) {
        let feed = &self.feed;
        self.size_watch
            .get_or_insert_with(|| feed.watch_size())
            .register(cx.waker());
        // A stream given options that found the pool full holds no place here (see
        // `stage`).
        let open = if self.feed.in_pool() || !matches!(self.permit, Permit::Held) {
            !self.feed.is_closed()
        } else {
            self.permit = Permit::None;
            self.feed.unadmit()
        };
        if !open {
            self.feed.refused(SubmitErrorKind::Closed);
            self.stop_intake(Some(SubmitErrorKind::Closed));
        }
    }

    /// Whether jobs of the stream are in the pool, or results not yielded yet.
    fn has_tasks(&self) -> bool {
        !self.tasks.is_empty() || !self.queue.is_empty()
    }

    fn is_done(&self) -> bool {
        self.inputs.is_none() && !self.has_tasks() && self.buffer.is_empty()
    }

    /// Aborts every unfinished task, newest first ([`abort_newest_first`]).
    fn abort_tasks(&self) {
        abort_newest_first(self.queue.iter(), &self.tasks);
    }

    fn poll_unordered(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, TaskError>>> {
        self.fill(cx);
        loop {
            match self.tasks.poll_next_unpin(cx) {
                Poll::Ready(Some((_, _, _, r))) => {
                    self.next_out += 1;
                    return Poll::Ready(Some(r));
                }
                _ if self.is_done() => return Poll::Ready(None),
                _ if self.watch_window(cx) => {} // jobs pushed: poll them
                _ => return Poll::Pending,
            }
        }
    }

    /// Outside a job of its own pool, the ordered stream awaits its first task alone: its
    /// other tasks' ends wake nobody (their results wait in their handles), and a task
    /// costs no node of a `FuturesUnordered`. The room freed by their ends still reaches
    /// the stream: a `fill` that found the pool full waits for room; and a full window
    /// waits for a resize too ([`watch_window`](Self::watch_window)). Polled inside a job
    /// of its own pool, it polls every task together from then on, as the unordered
    /// stream does, so that the pool's check of nested waits sees every wait of the job
    /// at once (as a group's `join_all` does there; RELIABILITY.md, finding 165), and a
    /// `WouldDeadlock` retry is woken by whichever of its jobs ends first (or by a grow
    /// of the pool, see [`watch_window`](Self::watch_window)).
    fn poll_ordered(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, TaskError>>> {
        if self.in_order && self.feed.in_pool() {
            self.in_order = false;
            for task in self.queue.drain(..) {
                self.tasks.push(task);
            }
        }
        self.fill(cx);
        if self.in_order {
            let Some(first) = self.queue.front_mut() else {
                return if self.is_done() {
                    Poll::Ready(None)
                } else {
                    Poll::Pending
                };
            };
            let Poll::Ready((_, _, _, r)) = Pin::new(first).poll(cx) else {
                // Jobs it pushes need no poll: only the first one's end is awaited.
                self.watch_window(cx);
                return Poll::Pending;
            };
            self.queue.pop_front();
            self.next_out += 1;
            return Poll::Ready(Some(r));
        }
        loop {
            if let Some(Some(_)) = self.buffer.front() {
                let r = self.buffer.pop_front().flatten();
                self.next_out += 1;
                return Poll::Ready(r);
            }
            match self.tasks.poll_next_unpin(cx) {
                Poll::Ready(Some((seq, _, _, r))) => {
                    let at = (seq - self.next_out) as usize;
                    if self.buffer.len() <= at {
                        self.buffer.resize_with(at + 1, || None);
                    }
                    self.buffer[at] = Some(r);
                }
                _ if self.is_done() => return Poll::Ready(None),
                _ if self.watch_window(cx) => {} // jobs pushed: poll them
                _ => return Poll::Pending,
            }
        }
    }

    /// At least the results held (each submitted input yields one); at most those plus the
    /// inputs left, which the pool may still refuse (a closed pool ends the stream).
    fn size_hint(&self) -> (usize, Option<usize>) {
        let held = self.held();
        // An input staged (pulled, waiting for room) may still be refused.
        let most = held + usize::from(self.staged);
        match &self.inputs {
            None => (held, Some(held)),
            Some(inputs) => (held, inputs.size_hint().1.and_then(|h| h.checked_add(most))),
        }
    }

    /// Sets each input's options (`with_options`), for the inputs pulled from now on.
    pub(super) fn set_options(&mut self, options: OptionsFn<St::Item>) {
        self.options = Some(options);
    }
}

// Nothing in a `Mapper` is ever pinned in place: the input stream is boxed, and results
// are plain values moved in and out.
impl<St: Stream, T> Unpin for Mapper<St, T> {}

impl<St: Stream, T> Drop for Mapper<St, T> {
    fn drop(&mut self) {
        self.abort_tasks();
        if let Permit::Held = self.permit {
            self.feed.unadmit();
        }
        if self.staged {
            self.feed.unstage();
        }
        // Results that finished out of order (the ordered stream polled in its own pool):
        // each dropped quietly, as a handle drops a stored result (a panicking `Drop` of
        // one would leave this drop, and a second one, during that unwinding, abort).
        for r in self.buffer.drain(..).flatten() {
            crate::engine::drop_quietly(r);
        }
    }
}

impl<St: Stream, T> Mapper<St, T> {
    /// The stream's `Debug`, under the name of the public type (`MapOrdered`,
    /// `MapUnordered`) that wraps it.
    pub(super) fn fmt_as(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("in_flight", &self.held())
            .field("window", &self.feed.capacity())
            .field("inputs_done", &self.inputs.is_none())
            .field("with_options", &self.options.is_some())
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Waker;
    use std::time::Duration;

    use futures_util::stream;

    use super::*;
    use crate::testing::WakeCount;

    /// A stream's feed whose size reads (`capacity`) each first run the resize scheduled
    /// for that read, if any: as if another thread's `set_max_concurrency` landed there.
    struct Resizing<I, T> {
        inner: Box<dyn Feed<I, T>>,
        reads: AtomicUsize,
        /// (read number, new `max_concurrency`), run by the pool given.
        at: Vec<(usize, usize)>,
        pool: crate::CommonAioPool,
    }

    impl<I, T> Feed<I, T> for Resizing<I, T> {
        fn try_admit(&self) -> Result<(), AdmitError> {
            self.inner.try_admit()
        }
        fn admit(&self) -> Admission {
            self.inner.admit()
        }
        fn unadmit(&self) -> bool {
            self.inner.unadmit()
        }
        fn is_closed(&self) -> bool {
            self.inner.is_closed()
        }
        fn refused(&self, kind: SubmitErrorKind) {
            self.inner.refused(kind)
        }
        fn push(&mut self, input: I) -> Result<TaskHandle<T>, SubmitErrorKind> {
            self.inner.push(input)
        }
        fn push_with(
            &mut self,
            input: I,
            opts: &SubmitOptions,
        ) -> Result<TaskHandle<T>, SubmitErrorKind> {
            self.inner.push_with(input, opts)
        }
        fn push_staged(&mut self) -> Result<TaskHandle<T>, SubmitErrorKind> {
            self.inner.push_staged()
        }
        fn stage(&mut self, input: I, opts: &SubmitOptions) -> Result<(), SubmitErrorKind> {
            self.inner.stage(input, opts)
        }
        fn admit_staged(&self) -> Admission {
            self.inner.admit_staged()
        }
        fn unstage(&mut self) {
            self.inner.unstage()
        }
        fn capacity(&self) -> usize {
            let n = self.reads.fetch_add(1, Ordering::SeqCst);
            for &(_, size) in self.at.iter().filter(|(at, _)| *at == n) {
                self.pool.set_max_concurrency(size);
            }
            self.inner.capacity()
        }
        fn in_pool(&self) -> bool {
            self.inner.in_pool()
        }
        fn watch_size(&self) -> SizeWatch {
            self.inner.watch_size()
        }
    }

    /// A stream of jobs that run for 100 s through a pool of 2 slots, with the resizes
    /// `at`, polled by hand (time stands still) whenever it was woken: returns how many
    /// inputs it holds once nothing wakes it, and the pool's final size.
    async fn held_after(ordered: bool, at: &[(usize, usize)]) -> (usize, usize) {
        let pool = crate::CommonAioPool::new(2, 0);
        let job = |i: u64| async move {
            tokio::time::sleep(Duration::from_secs(100)).await;
            i
        };
        let counter = Arc::new(WakeCount::default());
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let resizing = |inner| -> Box<dyn Feed<u64, u64>> {
            Box::new(Resizing {
                inner,
                reads: AtomicUsize::new(0),
                at: at.to_vec(),
                pool: pool.clone(),
            })
        };
        let mut inner = if ordered {
            pool.map_ordered(stream::iter(0..100u64), job).inner
        } else {
            pool.map_unordered(stream::iter(0..100u64), job).inner
        };
        inner.feed = resizing(std::mem::replace(&mut inner.feed, Box::new(Gone)));
        let poll = |inner: &mut Mapper<_, u64>, cx: &mut Context<'_>| {
            if ordered {
                inner.poll_ordered(cx)
            } else {
                inner.poll_unordered(cx)
            }
        };
        let mut seen = usize::MAX;
        // As an executor would: polled again while woken since its last poll.
        while counter.get() != seen {
            seen = counter.get();
            assert!(poll(&mut inner, &mut cx).is_pending());
            tokio::task::yield_now().await;
        }
        (inner.held(), pool.max_concurrency())
    }

    /// Stands in for a feed while it is wrapped.
    struct Gone;

    impl<I, T> Feed<I, T> for Gone {
        fn try_admit(&self) -> Result<(), AdmitError> {
            unreachable!()
        }
        fn admit(&self) -> Admission {
            unreachable!()
        }
        fn unadmit(&self) -> bool {
            true
        }
        fn is_closed(&self) -> bool {
            unreachable!()
        }
        fn refused(&self, _: SubmitErrorKind) {}
        fn push(&mut self, _: I) -> Result<TaskHandle<T>, SubmitErrorKind> {
            unreachable!()
        }
        fn push_with(&mut self, _: I, _: &SubmitOptions) -> Result<TaskHandle<T>, SubmitErrorKind> {
            unreachable!()
        }
        fn push_staged(&mut self) -> Result<TaskHandle<T>, SubmitErrorKind> {
            unreachable!()
        }
        fn stage(&mut self, _: I, _: &SubmitOptions) -> Result<(), SubmitErrorKind> {
            unreachable!()
        }
        fn admit_staged(&self) -> Admission {
            unreachable!()
        }
        fn unstage(&mut self) {}
        fn capacity(&self) -> usize {
            unreachable!()
        }
        fn in_pool(&self) -> bool {
            unreachable!()
        }
        fn watch_size(&self) -> SizeWatch {
            unreachable!()
        }
    }

    /// Wherever a resize lands among a stream's reads of the pool's size (a grow; a shrink
    /// then a grow), a stream waiting with jobs that do not end holds at least as many
    /// inputs as the pool's final size once it is no longer woken: no grow is lost
    /// (reviews of 9f3c7ba and 560ac95 each found a place where one was).
    #[tokio::test(start_paused = true)]
    async fn no_resize_is_lost_wherever_it_lands() {
        let mut lost = Vec::new();
        // Fewer under Miri, which interprets every step.
        let reads = if cfg!(miri) { 4 } else { 12 };
        for ordered in [true, false] {
            for a in 0..reads {
                let mut schedules = vec![vec![(a, 4)]];
                schedules.extend((a + 1..reads + 2).map(|b| vec![(a, 1), (b, 4)]));
                for at in schedules {
                    let (held, size) = held_after(ordered, &at).await;
                    // After a shrink alone (the grow's read never came), it holds more.
                    if held < size {
                        lost.push((ordered, at, held, size));
                    }
                }
            }
        }
        assert!(lost.is_empty(), "(ordered, resizes, held, size): {lost:?}");
    }
}
