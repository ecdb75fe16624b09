//! Async concurrency pools **with backpressure** for tokio.
//!
//! Push millions of async jobs (HTTP calls, queue messages, crawls, load tests) through a
//! bounded number of slots, without the memory blow-up of "spawn everything, limit with a
//! `Semaphore` inside the task", and without losing work when `main` returns.
//!
//! A Rust port of the Python package `nb_aiopool`, keeping its names.
//!
//! # Which pool do I want?
//!
//! | pool | takes | queue | workers | when `main` returns |
//! |---|---|---|---|---|
//! | [`CommonAioPool`] | futures | bounded FIFO (`max_queue_size`) | fixed (`max_concurrency`) | call [`shutdown_all_common_aiopools`] at the end of `main` |
//! | [`NoQueueAioPool`] | futures | none: `submit` waits for a free slot | fixed | call [`wait_all_no_queue_aiopools`] |
//! | [`SmartAioPool`] | recipes (`Fn() -> Future`) | bounded FIFO | elastic (`min_workers`..=`max_concurrency`) | nothing to call: unfinished tasks still complete ([`smart_run`], or an at-exit hook) |
//!
//! - Most programs: [`CommonAioPool`]. It is the fastest per job and its queue lets the
//!   producer run ahead a little.
//! - You want `submit` to return only when the job has a slot of its own (it starts as
//!   soon as the slot's task runs, with no queue in between): [`NoQueueAioPool`] (without
//!   flow control, which can hold an accepted task back).
//! - Fire-and-forget jobs that must not be lost when `main` returns, or elastic workers:
//!   [`SmartAioPool`].
//!
//! # Why not a `Semaphore`?
//!
//! ```no_run
//! # async fn job(_: String) {}
//! # #[tokio::main] async fn main() {
//! let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(1000));
//! for i in 0..10_000_000 {
//!     let sem = sem.clone();
//!     // Every task is created *now*; each waits for its permit inside. Memory grows with N.
//!     tokio::spawn(async move {
//!         let _permit = sem.acquire().await;
//!         job(format!("{}_{i}", "task".repeat(100))).await
//!     });
//! }
//! # }
//! ```
//!
//! With a pool, `submit(..).await` waits while the pool is full, so the loop only creates a
//! job when there is room for it: memory depends on the pool's size, never on N.
//!
//! ```
//! use nb_aiopool::{shutdown_all_common_aiopools, CommonAioPool};
//!
//! async fn job(payload: String) -> usize {
//!     tokio::task::yield_now().await;
//!     payload.len()
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let pool = CommonAioPool::new(1000, 1000);
//! for i in 0..10_000 {
//!     // Drop the handle: nothing to keep per job.
//!     pool.submit(job(format!("{}_{i}", "task".repeat(100)))).await.unwrap().detach();
//! }
//! shutdown_all_common_aiopools().await; // waits for what is still queued or running
//! assert_eq!(pool.stats().completed, 10_000);
//! # }
//! ```
//!
//! # Guarantees
//!
//! - At most `max_concurrency` jobs run at once, on all runtime threads; queued jobs start
//!   in submission order.
//! - Every accepted job resolves its [`TaskHandle`] exactly once: a value, or a
//!   [`TaskError`] saying it panicked or why it was cancelled. A panic never reduces a
//!   pool's capacity. Every rejected submission hands the job back.
//! - `submit` is cancel safe; `try_submit` never waits; `blocking_submit` (and
//!   `blocking_submit_with`, with per-task options) serves plain threads and
//!   `spawn_blocking` threads, and refuses to block a thread that drives async tasks.
//! - A job that submits into its own full pool gets an error instead of a deadlock, and
//!   when every slot waits for tasks of its own pool (also once a shrink leaves only
//!   waiting tasks running), one wait is broken with [`CancelReason::WouldDeadlock`]
//!   instead of hanging (see [`TaskHandle`], "Awaiting from inside the same pool", for the
//!   cases it does not break: keys, weights, a cycle of running tasks whose picked task
//!   never polls its handle again, and waits it cannot see: a job that waits through a
//!   spawned task, a channel or another pool's task rather than polling the handle). A
//!   `wait()` or `shutdown()` made inside a job of its own pool does not wait for that
//!   job (see [`CommonAioPool::wait`]; a SmartAioPool shut down so stays in the
//!   process-wide list until that job has finished, so [`smart_run`] and the exit hook
//!   still cover it: see [`SmartAioPool::shutdown`]).
//! - `shutdown()`, `shutdown_timeout()` and the `shutdown_all_*` functions close the pools
//!   when they are called, not when their future is first polled: a future dropped
//!   unpolled (a `select!` lost) still shut them down.
//! - Aborting a task that has not started frees its place in the queue at once
//!   ([`TaskHandle::abort`]).
//! - [`PoolStats`] agree with handles: when a handle resolves, the counters include its
//!   task, and the task's room in the pool is back (a `try_submit` right after a `run`,
//!   or after `is_finished` said `true`, finds it, unless submitters were already waiting
//!   for room: it goes to the first of them, and stays theirs until their submit is
//!   polled again; a submit waiting in a task of a runtime that is alive but not driven,
//!   a current-thread runtime between two `block_on`s, holds it until that runtime is
//!   driven or dropped, and the submitters after it, on other runtimes, wait meanwhile,
//!   their deadlines too; in an `auto_shutdown` [`SmartAioPool`], from the process exit's
//!   take-over on, when the runtimes the exit does not drive are frozen for good, a
//!   freed place goes to whichever waiting submitter, or new submit, takes it first
//!   instead). An abort is the exception: it resolves the handle at once, and a running
//!   task is counted, and gives its room back, only when it is dropped at its next
//!   `.await` (see [`PoolStats`]). A panic in a job's `poll` or in its
//!   future's `Drop` only fails that job.
//! - A waker that panics when the pool wakes it (a handle, a submit or a `wait()` polled
//!   by an executor whose waker is faulty) costs only that wake-up: the pool catches the
//!   panic (the panic hook still prints it), as tokio does with a `JoinHandle`'s waker,
//!   and its other tasks, handles and waits go on; the handle keeps its result for its
//!   next poll. The pool wakes, clones and drops wakers outside its locks, so a waker may
//!   call back into the pool (an executor that polls inside `wake`, or whose waker's
//!   `clone` or `drop` does); a panic in the `drop` of a waiting submit's waker is caught
//!   as a wake's is. Not covered: a waker whose `clone` panics when a handle (or a map
//!   stream waiting on a resize) registers it, or whose `drop` panics when a later poll
//!   replaces it. The panic comes out of that poll, and the handle is never woken again,
//!   on any executor: `futures`' `AtomicWaker`, which stores it, is left half
//!   registered. A tokio `JoinHandle` recovers from this; the crate keeps `futures`'
//!   waker cell rather than a copy of its own made for such executors.
//!
//! # How jobs run
//!
//! - **Slots.** A pool runs each job in a *slot*, a tokio task that runs jobs one after
//!   the other: a queued job costs no `tokio::spawn`, it runs in the slot that frees up.
//!   Every job has its own [`TaskId`] (on its handle), also when it shares a slot task.
//! - **Which runtime.** A job runs on the runtime of the code that submitted it. From a
//!   plain thread it runs on the pool's *home* runtime: the one the pool was created in or
//!   last submitted from (if it has ended, another live runtime the pool knows; a job of a
//!   plain thread still queued when that runtime ends goes there too, and one it was
//!   running is cancelled with it). A pool is
//!   bound to no runtime, so a `static` pool can serve several runtimes at once; the end of
//!   one runtime cancels only the jobs submitted from it
//!   ([`CancelReason::RuntimeShutdown`]; SmartAioPool queues them again, to run on the
//!   home, or on another live runtime the pool knows: a `wait`, or a submit that waits for
//!   room, makes its runtime known, and the home if the home has ended; with a rate limit,
//!   a `wait` only from a runtime the pool already knows, while [`smart_run`],
//!   [`shutdown_all_smart_aiopools`] and [`SmartAioPool::shutdown`] check theirs for
//!   timers and offer it; and when no runtime the pool knows is left, awaiting one of
//!   its tasks (a handle, a stream or a group fed by the pool) offers the awaiting
//!   runtime, which then runs the queued
//!   tasks; a `blocking_wait` with no live runtime to offer, or only a current-thread
//!   one it entered with `Handle::enter` and so cannot drive, makes one of its own for
//!   its wait; a `spawn_blocking` thread offers its own runtime, as it is alive; awaited
//!   where no live runtime can be offered, by a handle, or by the pool's `wait()` or
//!   `shutdown()` or [`shutdown_all_smart_aiopools`] (a non-tokio executor,
//!   `Handle::block_on` on a `spawn_blocking` thread of a runtime that ended), they run
//!   on a runtime of a thread of the crate, started for the pool until it has none
//!   left). When no
//!   runtime can run a job, the submit fails with [`SubmitErrorKind::NoRuntime`] and
//!   hands it back; so does a submit from outside any runtime that would wait for room
//!   (or waits, and then sees it so; a `blocking_submit` under a current-thread runtime
//!   it entered counts as outside) while the pool knows no live runtime (a SmartAioPool
//!   full of the re-runs of a
//!   runtime that ended: no room would come until a runtime waits on the pool or submits
//!   to it). A runtime that is alive but not driven (a current-thread runtime outside
//!   `block_on`) runs nothing, so the slot tasks that take queued jobs, and a rate
//!   limit's timer, go to a runtime that is: the one of the code that lets the jobs start
//!   (a job's end, a submit, a resize, a `wait`), else the one of the job that starts
//!   next, the home only after these. If the slot tasks already on their way to jobs are
//!   all on other runtimes (which may not be driven), that code's runtime gets one too;
//!   whichever comes first takes the job. A resize whose slot tasks go to a
//!   current-thread runtime (the caller's, which may stop being driven as soon as the call
//!   returns, a short `block_on`; or, called from a plain thread or a runtime the pool does
//!   not know, the next job's, or the home for a job that may run anywhere, which may not
//!   be driven) also sends slot tasks to the other runtimes of the jobs it lets start (for
//!   jobs that may run on any runtime, with no other runtime's job among them, to a
//!   multi-thread runtime the pool knows). Likewise, when no rate timer is armed on
//!   that code's runtime and every one armed is on another current-thread runtime, or
//!   that code's runtime is a current-thread one (whose clock may be paused: a timer on a
//!   multi-thread runtime runs on that runtime's clock), that code's runtime gets a rate
//!   timer too, and so does the current-thread runtime of the job the window holds back
//!   next; a rate timer waits on the clock of the runtime it is on; and a
//!   timer lost with its runtime is armed again on each runtime whose tasks are queued
//!   (and, for tasks that may run on any runtime, on a multi-thread runtime if one lives,
//!   else on every live one), unless one is left on a multi-thread runtime. Once
//!   SmartAioPool's at-exit hook has taken a pool over, its own runtime runs every job of
//!   that pool, whoever submits it: a `spawn_blocking` thread of the runtime that called
//!   `std::process::exit` (alive, never driven again) gets its jobs run there too.
//! - **Isolation.** Slots are ordinary tokio tasks, so tokio's work-stealing scheduler
//!   moves runnable slots off a thread that a job blocks (a slow synchronous call), as
//!   with `tokio::spawn`. Queued jobs are not bound to a slot: any slot that frees up
//!   takes the next one, so a job that blocks its thread holds up only itself. (As with
//!   `tokio::spawn`, code that submits and then blocks its own worker thread can hold up
//!   the slot task its submit woke there.) Measured by `bench/src/bin/isolation.rs`
//!   beside `tokio::spawn`; see BENCHMARKS.md.
//! - **Memory.** A queued or running future job is one allocation, as a tokio task is: a
//!   cell that holds the task's result slot (about 100 bytes on 64-bit targets, plus the
//!   result's size beyond a `u64`), the future, and the result until it is handed over. A
//!   future larger than 256 bytes, or aligned to more than 8, gets a cell of its own
//!   beside its result slot (two allocations). A running job also holds its slot, one
//!   tokio task (about 120 bytes of state, and no buffers kept between jobs): 100,000
//!   jobs sleeping at once, each with a 407-byte payload, take about 1.3 KiB each, and
//!   as many `tokio::spawn`s about 1.0 KiB (BENCHMARKS.md). A [`TaskHandle`] pins its
//!   task's cell, as a tokio `JoinHandle` pins its task's (so does an [`AbortHandle`]):
//!   the future is dropped when it ends (and what it owned is freed then), but its
//!   storage stays until the handles go. The 256-byte limit bounds that: a held handle
//!   pins at most 416 bytes for a `u64` result (beyond that, twice the result's size),
//!   so `batch_run` of many large futures holds little beyond their results.
//!   (`batch_run`, a group's `join_all` and `map_ordered` take the results in
//!   submission order, unless run inside a task of their own pool (`map_ordered`: from
//!   its first poll there on): a job that ended before an earlier one is pinned so until
//!   that one is in.) A SmartAioPool task is its recipe and its result slot in one
//!   allocation, plus one cell per run, freed when the run ends. The recipe, with what
//!   it captured, is dropped when the task has ended and the pool holds no copy of it
//!   any more; its handles pin the allocation: the result slot and the recipe's own
//!   bytes (a closure's captures by value: a few words for `String`s and `Arc`s, the
//!   whole of an array). A recipe larger than 256 bytes (or aligned to more than 8)
//!   keeps its result slot apart, as a large future does, so that its handles pin only
//!   the slot.
//! - **Where an ended job is freed.** What the submitter made for a job of a
//!   CommonAioPool or NoQueueAioPool (the future's cell, the result slot) is freed, as
//!   far as the pool can, on a thread that submits to the pool, where it was allocated.
//!   With glibc's allocator, frees across threads take a lock the submitter's next
//!   allocation waits on; freeing them where they were made is what brought the pools
//!   from 0.7× to about the throughput of the hand-written JoinSet pattern
//!   (BENCHMARKS.md; later work took them past it, see "What a job costs" below). So the
//!   pool keeps what ended jobs leave (no more than the pool holds, and 256; after a
//!   `set_max_concurrency` shrink, what was kept beyond the new size goes at the next
//!   job's end or within the 2 ms below) and frees it in batches: in a `submit` from
//!   async code (never in a `try_submit`, `blocking_submit` or `set_max_concurrency`,
//!   whose caller may hold a lock, and never inside a job's poll); when the pool runs
//!   out of work; else after about 2 ms, by a tokio task of the pool on the job's
//!   multi-thread runtime, or another the pool knows (with
//!   none, at once; a runtime's shutdown frees them too); and before a `wait()` or `shutdown()` returns (outside a
//!   runtime, with a runtime of the pool entered; inside a job, by a task of that
//!   runtime). A future's cell is freed by the last of its run and its handles: a handle
//!   held past that point frees it where the handle is dropped. The result of a detached
//!   task (its handle dropped before it ended) goes with its future's run, so its `Drop`
//!   runs at one of those points. A SmartAioPool's recipe, with what it captured and its
//!   task's result slot, is made by the submitter and kept the same way once its last run
//!   ended. The recipe makes each run's future on the slot's thread: a run and its result
//!   are dropped where the run ended, just after its end is counted, and a `wait()` that
//!   counts it as ended returns only once that drop is over. On a current-thread runtime
//!   nothing is kept: the thread that runs a job there is the one its async submitter
//!   ran on, so a future's run (with a detached task's result) and a recipe's last copy
//!   are dropped the same way, where the job ended.
//! - **What a job costs.** On the project's 2-core machine (BENCHMARKS.md, "2026-12-03"
//!   and "2026-12-03, evening"), a million tiny jobs with 407-byte payloads at a
//!   concurrency of 1000, submitted from `block_on`, took 0.72–0.95 µs of CPU per job
//!   (the whole process, glibc's allocator, 2 worker threads): 1.2–1.6× the throughput of
//!   the hand-written "permit, then `JoinSet::spawn`" loop at 0.6–0.8× its CPU per job;
//!   0.33–0.51 µs on a current-thread runtime; 0.59–0.90 µs with mimalloc as the
//!   application's allocator. Measured again on 2026-12-05 with nothing else running
//!   (the same per-job work, counted in instructions), the multi-thread ratios were lower,
//!   1.27–1.31× at 0.86–0.91× (this machine's multi-thread figures move by a third from
//!   day to day), and a current-thread runtime took 0.34–0.57 µs. On the hosts of
//!   2026-12-07 and 2026-12-08, with mimalloc (BENCHMARKS.md, "2026-12-07, 17:48" and
//!   "2026-12-08"): 1.13–1.17× the loop's throughput at 0.90–0.97× its CPU on 2 workers,
//!   and on a current-thread runtime 0.28–0.32 µs, 0.53–0.54× the loop's CPU.
//!   SmartAioPool costs the most of the three (a run's future is made from the recipe,
//!   and a copy kept for a re-run). The figures include making each payload
//!   and the job's one `yield_now`; for jobs that do real I/O the pool's share is small
//!   beside the job itself. With jobs that wait (200,000 jobs sleeping 5 ms, 2 workers,
//!   glibc; BENCHMARKS.md, "Issue 9's targets today"), CommonAioPool took 1.6 µs of CPU
//!   per job, 0.74× the loop's; SmartAioPool 2.1 µs (its runs made from the recipe, as
//!   above) and NoQueueAioPool 2.2, about the loop's: with no queue, a job's slot has
//!   nothing to take when its job ends, so it parks and is woken for the next submit's
//!   job.
//! - **Large futures.** `submit`, `submit_with` and `run` move the future into its task's
//!   allocation when they are called: the future they return holds a pointer to it, and a
//!   rejection's [`SubmitError`] a box, so a future of kilobytes (an HTTP client's, a
//!   parser's) is not copied again at each step of the submit. Counted with callgrind
//!   (BENCHMARKS.md, "2026-12-03, evening"), a task whose future holds 8 KiB of state
//!   costs 0.27× the instructions of the "permit, then `JoinSet::spawn`" loop, whose
//!   `spawn` copies it several times; 2 KiB, 0.60×.
//!
//! # Streams, groups and flow control
//!
//! - [`map_unordered`](CommonAioPool::map_unordered) / [`map_ordered`](CommonAioPool::map_ordered)
//!   turn a stream of inputs into a stream of results through the pool, pulling no more
//!   inputs than the pool can hold. `stream.then(|i| pool.run(job(i)))` would run one job
//!   at a time: use these instead.
//! - [`group`](CommonAioPool::group) gives a [`TaskGroup`]: join as completed or all in
//!   order, cancel the rest on the first error, abort everything when dropped.
//! - [`SubmitOptions`] with [`submit_with`](CommonAioPool::submit_with): priority, weight,
//!   key, and a deadline for waiting for room; a group takes them too
//!   ([`TaskGroup::submit_with`], [`SmartTaskGroup::submit_with`], and `try_submit_with`),
//!   its tasks counted with the pool's others, and so do a stream's inputs, one set per
//!   input ([`MapUnordered::with_options`], [`MapOrdered::with_options`]). Builders add
//!   `rate_limit`, `weight_capacity` and `max_per_key`; [`set_max_concurrency`](CommonAioPool::set_max_concurrency)
//!   resizes a running pool.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use futures_util::StreamExt;
//! use nb_aiopool::{CommonAioPool, SubmitOptions};
//!
//! let pool = CommonAioPool::builder()
//!     .max_concurrency(100)
//!     .max_per_key(4)
//!     .rate_limit(1000, Duration::from_secs(1))
//!     .build();
//! let doubled: Vec<u32> = pool
//!     .map_ordered(futures_util::stream::iter(1..=5u32), |i| async move { i * 2 })
//!     .map(Result::unwrap)
//!     .collect()
//!     .await;
//! assert_eq!(doubled, [2, 4, 6, 8, 10]);
//!
//! let opts = SubmitOptions::new().key("example.com").priority(1);
//! assert_eq!(pool.submit_with(async { 7 }, opts.clone()).await.unwrap().await.unwrap(), 7);
//!
//! let mut group = pool.group();
//! group.submit_with(async { 8 }, opts).await.unwrap();
//! assert_eq!(group.join_next().await.unwrap().unwrap(), 8);
//! # }
//! ```
//!
//! # Feature flags
//!
//! The default build depends on tokio, futures-util, pin-project-lite and slab only. The
//! features below are off by default; off, their hooks compile to nothing.
//!
//! - **`tracing`**: every task runs inside a span named `task` (target `nb_aiopool`, level
//!   INFO) with the fields `pool` (the builder's `name`) and `task_id` (its [`TaskId`]),
//!   a child of the span current where it was submitted (a [`SmartAioPool`] run started
//!   again after its runtime ended has a span without a parent, and so has the run of a
//!   task that the process exit runs after a slot had taken it and never started it: the
//!   slot, frozen on its runtime, keeps the task's submit-time stamp). The span is entered whenever the
//!   task is polled (and while a [`SmartAioPool`] recipe builds its future), so the task's
//!   own events carry both fields. Events, target `nb_aiopool`:
//!   `submit rejected` (DEBUG; `pool`, `reason`: `full` for a `try_submit` of a full pool,
//!   `closed`, `would_deadlock`, `no_runtime`, `timed_out`, `too_heavy`),
//!   `task panicked` (WARN; `pool`, `error` with the panic message, inside the task's span)
//!   and `task cancelled` (DEBUG; `pool`, `reason`: `aborted`, `cancel_all`, `abandoned`,
//!   `runtime_shutdown`, `would_deadlock`; inside the task's span, or, for a task
//!   cancelled before it started, with a `task_id` field and no parent span: the span
//!   current where it was cancelled may be another task's, whose events it is not).
//! - **`metrics`**: figures through the [`metrics`](https://docs.rs/metrics) facade, each
//!   labelled `pool` (the builder's `name`). Counters `nb_aiopool_tasks_submitted`,
//!   `nb_aiopool_tasks_completed`, `nb_aiopool_tasks_panicked` and
//!   `nb_aiopool_tasks_cancelled` (as [`PoolStats`] counts them), and
//!   `nb_aiopool_submits_rejected` with a second label `reason` (the values of the
//!   `submit rejected` event's, above: one count per refused submit, as the event); gauges
//!   `nb_aiopool_tasks_queued` and `nb_aiopool_tasks_running` (as `PoolStats::queued` and
//!   `running`; pools sharing a name add up, as their counters do: each moves the gauges
//!   by its own changes); histograms `nb_aiopool_queue_wait_seconds` (accepted to
//!   started; a SmartAioPool re-run records one more sample, from its return to the
//!   queue, and a task the exit runs after a slot had taken it and never started it
//!   records its one sample from the exit's take-over) and `nb_aiopool_run_time_seconds` (started to ended; a SmartAioPool run cut
//!   off by its runtime's end, to run again, records none), in seconds. A pool registers
//!   its metrics when it is built, and describes them (with their units) to the
//!   recorder: install the recorder before building pools. The counters and gauges are
//!   updated under the pool's lock, where [`PoolStats`] counts, so that the two agree: a
//!   recorder must not call into the pool from them (it would deadlock), and one that
//!   blocks holds the pool up while it does.
//!
//! What they cost, counted in instructions per tiny task on one thread (BENCHMARKS.md,
//! "what `tracing` and `metrics` cost per task"): each feature on with nothing installed,
//! +11–15%; `tracing` with a bare `tracing_subscriber::registry()`, about +34–42%; with
//! `fmt()` at its default INFO level, about +110%, most of it formatting each task's span
//! fields (filtering the `nb_aiopool` target below INFO skips the span); `metrics` with a
//! recorder, about +21%.
//!
//! A subscriber or recorder that panics when a pool calls it costs only that record
//! (the span, event or figure of that call; the panic hook still prints the panic): the
//! pool catches the panic, and its tasks, handles, `wait()`, `shutdown` and
//! [`PoolStats`] go on as if the call had returned. A gauge move lost so (a recorder
//! that panics is taken not to have moved the gauge) is made at the next one, the last
//! being the pool's drop, which takes its share of the gauges back to 0; a span whose
//! entry panicked is left again; a metric whose registration panicked (at `build`)
//! stays unrecorded for that pool. The task's own calls (its events, in its span) are
//! its own: a panic there is the task's panic. The panic hook runs for a recorder's panic
//! while the pool's lock is held (the gauges move under it, and the panic is caught only
//! as it unwinds): such a hook may print a pool with `{:?}`, which never waits for the
//! lock (it prints `<locked>` then), but must not call the pool's methods, `stats()`
//! included, which would wait for good.
//!
//! Without either feature, the builders' `on_panic` (for example
//! [`CommonAioPoolBuilder::on_panic`]) reports panics of detached tasks.
//!
//! The per-second CPU / memory monitor of the seed's demos lives in the demos crate
//! (`demos/src/monitor.rs`).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

/// `eprintln!` that drops its line when stderr cannot take it (a broken pipe: `2>&1 |
/// head -1`), where `eprintln!` panics. The crate's warnings go through it: most are
/// printed at the process exit, by the C runtime's `atexit` hook, where a panic cannot
/// unwind (the process would abort, and the hooks after it, such as the SmartAioPools'
/// exit run, would not run).
macro_rules! warn_stderr {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr().lock(), $($arg)*);
    }};
}

// Modules form a DAG: leaves (errors, stats, blocking waits, sys, and the unit tests'
// `testing`) <- the task cell and handle <- the engine <- the exit hook <- the pools.
mod blocking;
mod engine;
mod error;
mod exit;
mod observe;
mod options;
mod pool;
mod stats;
mod sync;
mod sys;
mod task;
#[cfg(test)]
mod testing;
mod unwind;

pub use error::{
    CancelReason, RunError, SubmitError, SubmitErrorKind, TaskError, TrySubmitError,
    TrySubmitErrorKind,
};
pub use options::SubmitOptions;
pub use pool::common::{CommonAioPool, CommonAioPoolBuilder};
pub use pool::no_queue::{NoQueueAioPool, NoQueueAioPoolBuilder};
pub use pool::registry::{shutdown_all_common_aiopools, wait_all_no_queue_aiopools};
pub use pool::smart::{shutdown_all_smart_aiopools, smart_run, SmartAioPool, SmartAioPoolBuilder};
pub use stats::{PoolStats, ShutdownReport};
pub use task::{AbortHandle, TaskHandle, TaskId};
// Streams and task groups (src/pool/stream/, src/pool/group/):
pub use pool::group::{SmartTaskGroup, TaskGroup};
pub use pool::stream::{MapOrdered, MapUnordered};
