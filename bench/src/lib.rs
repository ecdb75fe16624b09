//! Shared pieces of the side-by-side benchmarks: the workloads, the payloads, and one
//! function per variant (our pools and the hand-written tokio patterns they replace).
//!
//! Every variant pushes `n` jobs through at most `c` concurrent slots, building each job's
//! payload only when the producer gets to it, and returns how many jobs completed so the
//! caller can check nothing was lost.
#![warn(missing_docs, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod cells;
pub mod measure;
pub mod slots;

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio::task::JoinSet;

/// What each job does before returning its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// One `tokio::task::yield_now().await`: measures the pool's own overhead.
    Tiny,
    /// `tokio::time::sleep` for this many milliseconds: an I/O-like job.
    Sleep(u64),
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "tiny" {
            return Ok(Workload::Tiny);
        }
        match s.strip_prefix("sleep:") {
            Some(ms) => ms
                .parse()
                .map(Workload::Sleep)
                .map_err(|e| format!("bad sleep milliseconds in {s:?}: {e}")),
            None => Err(format!(
                "unknown workload {s:?} (want `tiny` or `sleep:MS`)"
            )),
        }
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Workload::Tiny => f.write_str("tiny"),
            Workload::Sleep(ms) => write!(f, "sleep:{ms}"),
        }
    }
}

/// The job body shared by every variant: do the workload, hand the payload back.
///
/// Executor-agnostic for `Tiny`: `tokio::task::yield_now` defers its wake-up to the tokio
/// scheduler it runs on, and outside one (on `async-executor`'s threads) wakes its task at
/// once (`waker.wake_by_ref()`), so it still returns `Pending` once and the task goes back
/// to its executor's queue (checked by the `tiny_yields_once_outside_tokio` test). `Sleep`
/// needs a tokio timer: the `async-executor` variant enters the tokio runtime's handle on
/// its runner threads, so the sleeps use the tokio runtime's timer driver.
///
/// The payload is a `String` everywhere but in `smart-shared` and `smart-arc`, whose
/// recipes share an `Arc<str>` between their runs.
pub async fn work<P>(payload: P, workload: Workload) -> P {
    match workload {
        Workload::Tiny => tokio::task::yield_now().await,
        Workload::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
    }
    payload
}

/// Builds job payloads: `"{prefix}_{i}"`, where the prefix is `"task"` repeated and cut to
/// `prefix_bytes` (400 gives the seed's `f"{'task' * 100}_{i}"`, 407 bytes near i = 10^6).
#[derive(Clone, Debug)]
pub struct Payloads {
    prefix: Arc<str>,
}

impl Payloads {
    /// A payload builder whose prefix is `prefix_bytes` long.
    pub fn new(prefix_bytes: usize) -> Self {
        let mut prefix = "task".repeat(prefix_bytes.div_ceil(4));
        prefix.truncate(prefix_bytes);
        Payloads {
            prefix: prefix.into(),
        }
    }

    /// The payload of job `i` (one fresh allocation of the right size, as a careful
    /// producer would make; `format!` would grow the string twice).
    pub fn get(&self, i: u64) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 21);
        self.write_into(i, &mut s);
        s
    }

    /// Writes the payload of job `i` into `s` (cleared first): with a reused `s`, the text
    /// without an allocation of its own (`smart-arc` copies it into an `Arc<str>`, one
    /// allocation of the right size, as [`get`](Self::get)'s `String` is).
    #[inline]
    pub fn write_into(&self, i: u64, s: &mut String) {
        use std::fmt::Write as _;
        s.clear();
        s.push_str(&self.prefix);
        s.push('_');
        write!(s, "{i}").expect("writing to a String cannot fail");
    }
}

/// The parameters every variant gets.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of jobs.
    pub tasks: u64,
    /// Maximum number of jobs running at once.
    pub concurrency: usize,
    /// Queue size for the pools and the channel of `mpsc-workers`.
    pub queue: usize,
    /// What each job does.
    pub workload: Workload,
    /// Payload builder.
    pub payloads: Payloads,
}

/// The variants `compare` knows, in the order it runs them.
pub const VARIANTS: &[&str] = &[
    "common",
    "no-queue",
    "smart",
    "spawn-sem-inside",
    "sem-before-joinset",
    "spawn-permit-moved",
    "mpsc-workers",
    "buffer-unordered",
    "async-executor",
];

/// Flow-control variants of `common` (issue 11), run only when named with `--variants`:
/// `common-opts` submits with `submit_with(SubmitOptions::new())` into a pool built
/// without limits (the cost of the options path when nothing is used);
/// `common-limits-idle` builds the pool with a rate limit, a weight capacity and a
/// per-key limit that never bind (the cost of carrying them); `common-limits-used`
/// gives every job a key among 16 hosts with `max_per_key(C / 8)`, a priority and a
/// weight, under a rate limit that never binds.
pub const FLOW_VARIANTS: &[&str] = &["common-opts", "common-limits-idle", "common-limits-used"];

/// `smart` with a recipe that shares its payload (`Arc<str>`) instead of cloning 407 bytes
/// at each run (which `smart`'s recipe must, as a recipe that may run again and owns a
/// `String`): SmartAioPool's own cost without the recipe's copy. Run only when named with
/// `--variants`. `smart-arc` is `smart-shared` with its payload made as an `Arc<str>` by
/// the producer (one payload allocation per job, as `common`'s `String`; `smart-shared`
/// makes a `String` and copies it into an `Arc`): the same user work per job as `common`,
/// so that the difference is SmartAioPool's own.
pub const SMART_VARIANTS: &[&str] = &["smart-shared", "smart-arc"];

/// The surface over `common`'s pool, run only when named with `--variants`: `common-map`
/// feeds every job through `map_unordered` (reading each result), to compare with
/// `buffer-unordered`, and `common-map-ordered` through `map_ordered`; `common-group`
/// submits each job to a `TaskGroup`, joined every 10,000 jobs, and `common-batch` runs
/// them through `batch_run` calls of 10,000 jobs, to compare with `sem-before-joinset`.
pub const SURFACE_VARIANTS: &[&str] = &[
    "common-map",
    "common-map-ordered",
    "common-group",
    "common-batch",
];

/// Probes of designs the pools do not use (yet), run only when named with `--variants`:
/// `cells-probe` is issue 9's design B1 without a pool's semantics (see [`cells`]).
/// `cells-reap` is the same with its cells freed on the producer's thread ([`cells::Reaper`]).
/// `cells-booked` is `cells-reap` with today's engine's bookkeeping ([`cells::CellPool::booked`]).
/// `slots-probe` is today's slot design stripped bare ([`slots`]), to compare with
/// `cells-probe`; `slots-reap` the same with ended jobs freed by the producer
/// ([`slots::SlotPool::reaping`]), to compare with `cells-reap`.
pub const PROBE_VARIANTS: &[&str] = &[
    "cells-probe",
    "cells-reap",
    "cells-booked",
    "slots-probe",
    "slots-reap",
];

/// The hand-written patterns (the pools are compared against the best of these). All are
/// tokio patterns but `async-executor` (smol's executor: the price of another general
/// executor on the same cores).
pub const TOKIO_PATTERNS: &[&str] = &[
    "spawn-sem-inside",
    "sem-before-joinset",
    "spawn-permit-moved",
    "mpsc-workers",
    "buffer-unordered",
    "async-executor",
];

/// Runs one variant by name inside the current runtime; returns the number of jobs that
/// completed. Panics on an unknown name or if the library was left out of the build.
pub async fn run_variant(name: &str, p: &Params) -> u64 {
    match name {
        "common" | "no-queue" | "smart" | "smart-shared" | "smart-arc" => run_pool(name, p).await,
        "common-map" | "common-map-ordered" | "common-group" | "common-batch" => {
            run_surface(name, p).await
        }
        "common-opts" | "common-limits-idle" | "common-limits-used" => run_flow(name, p).await,
        "cells-probe" | "cells-reap" | "cells-booked" => cells_probe(name, p).await,
        "slots-probe" | "slots-reap" => slots_probe(name, p).await,
        "spawn-sem-inside" => spawn_sem_inside(p).await,
        "sem-before-joinset" => sem_before_joinset(p).await,
        "spawn-permit-moved" => spawn_permit_moved(p).await,
        "async-executor" => async_executor(p).await,
        "mpsc-workers" => mpsc_workers(p).await,
        "buffer-unordered" => buffer_unordered(p).await,
        other => panic!("unknown variant {other:?}; known: {}", VARIANTS.join(", ")),
    }
}

#[cfg(not(feature = "pools"))]
async fn run_pool(name: &str, _p: &Params) -> u64 {
    panic!("variant {name:?} needs the `pools` feature (the nb-aiopool library)")
}

#[cfg(not(feature = "flow"))]
async fn run_flow(name: &str, _p: &Params) -> u64 {
    panic!("variant {name:?} needs the `flow` feature (nb-aiopool's builders and SubmitOptions)")
}

#[cfg(feature = "flow")]
async fn run_flow(name: &str, p: &Params) -> u64 {
    use nb_aiopool::{CommonAioPool, SubmitOptions};
    use std::time::Duration;
    let w = p.workload;
    let builder = CommonAioPool::builder()
        .max_concurrency(p.concurrency)
        .max_queue_size(p.queue);
    let pool = match name {
        "common-opts" => builder.build(),
        "common-limits-idle" => builder
            .rate_limit(u32::MAX, Duration::from_millis(1))
            .weight_capacity(u64::MAX)
            .max_per_key(usize::MAX)
            .build(),
        _ => builder
            .rate_limit(u32::MAX, Duration::from_millis(1))
            .weight_capacity(u64::MAX)
            .max_per_key((p.concurrency / 8).max(1))
            .build(),
    };
    let keys: Vec<String> = (0..16).map(|h| format!("host{h}")).collect();
    for i in 0..p.tasks {
        let opts = if name == "common-limits-used" {
            SubmitOptions::new()
                .key(keys[(i % 16) as usize].as_str())
                .priority((i % 3) as i32)
                .weight(1 + (i % 4) as u32)
        } else {
            SubmitOptions::new()
        };
        let handle = pool
            .submit_with(work(p.payloads.get(i), w), opts)
            .await
            .unwrap_or_else(|_| panic!("{name}: submit rejected"));
        drop(handle);
    }
    pool.shutdown().await;
    pool.stats().completed
}

#[cfg(feature = "pools")]
async fn run_pool(name: &str, p: &Params) -> u64 {
    use nb_aiopool::{CommonAioPool, NoQueueAioPool};
    let w = p.workload;
    match name {
        "common" => {
            let pool = CommonAioPool::new(p.concurrency, p.queue);
            for i in 0..p.tasks {
                let handle = pool
                    .submit(work(p.payloads.get(i), w))
                    .await
                    .unwrap_or_else(|_| panic!("common: submit rejected"));
                drop(handle); // detach: nothing kept per job
            }
            pool.shutdown().await;
            pool.stats().completed
        }
        "no-queue" => {
            let pool = NoQueueAioPool::new(p.concurrency);
            for i in 0..p.tasks {
                let handle = pool
                    .submit(work(p.payloads.get(i), w))
                    .await
                    .unwrap_or_else(|_| panic!("no-queue: submit rejected"));
                drop(handle);
            }
            pool.wait().await;
            pool.stats().completed
        }
        // A recipe may be run again, so each run clones the payload it returns.
        "smart" => {
            run_smart(name, p, |i| {
                let payload = p.payloads.get(i);
                move || work(payload.clone(), w)
            })
            .await
        }
        // Made as `smart`'s is, then shared: each run clones a pointer.
        "smart-shared" => {
            run_smart(name, p, |i| {
                let payload: Arc<str> = p.payloads.get(i).into();
                move || work(Arc::clone(&payload), w)
            })
            .await
        }
        // The payload made as an `Arc<str>` at once: one allocation, as `common`'s.
        "smart-arc" => {
            let mut text = String::new();
            run_smart(name, p, |i| {
                p.payloads.write_into(i, &mut text);
                let payload: Arc<str> = text.as_str().into();
                move || work(Arc::clone(&payload), w)
            })
            .await
        }
        other => unreachable!("not a pool: {other}"),
    }
}

#[cfg(feature = "pools")]
async fn run_surface(name: &str, p: &Params) -> u64 {
    let w = p.workload;
    let pool = nb_aiopool::CommonAioPool::new(p.concurrency, p.queue);
    let mut done = 0;
    if name == "common-map" || name == "common-map-ordered" {
        let inputs = futures::stream::iter(0..p.tasks).map(|i| p.payloads.get(i));
        let f = move |payload| work(payload, w);
        done = if name == "common-map" {
            read_all(name, pool.map_unordered(inputs, f)).await
        } else {
            read_all(name, pool.map_ordered(inputs, f)).await
        };
    } else if name == "common-batch" {
        for chunk in chunks(p.tasks, 10_000) {
            let results = pool
                .batch_run(chunk.map(|i| work(p.payloads.get(i), w)))
                .await
                .unwrap_or_else(|_| panic!("common-batch: submit rejected"));
            for out in results {
                drop(out.unwrap_or_else(|e| panic!("common-batch: {e}")));
                done += 1;
            }
        }
    } else {
        for chunk in chunks(p.tasks, 10_000) {
            let mut group = pool.group();
            for i in chunk {
                group
                    .submit(work(p.payloads.get(i), w))
                    .await
                    .unwrap_or_else(|_| panic!("common-group: submit rejected"));
            }
            while let Some(out) = group.join_next().await {
                drop(out.unwrap_or_else(|e| panic!("common-group: {e}")));
                done += 1;
            }
        }
    }
    pool.shutdown().await;
    assert_eq!(
        pool.stats().completed,
        done,
        "{name}: every result was read"
    );
    done
}

/// Reads (and drops) every result of a map stream; returns how many there were.
#[cfg(feature = "pools")]
async fn read_all<T>(
    name: &str,
    mut results: impl futures::Stream<Item = Result<T, nb_aiopool::TaskError>> + Unpin,
) -> u64 {
    let mut n = 0;
    while let Some(out) = results.next().await {
        drop(out.unwrap_or_else(|e| panic!("{name}: {e}")));
        n += 1;
    }
    n
}

/// `0..n` in consecutive ranges of `size` (the last one shorter): the calls of a batch or
/// the lifetimes of a group.
pub fn chunks(n: u64, size: u64) -> impl Iterator<Item = std::ops::Range<u64>> {
    (0..n)
        .step_by(size as usize)
        .map(move |start| start..(start + size).min(n))
}

#[cfg(not(feature = "pools"))]
async fn run_surface(name: &str, _p: &Params) -> u64 {
    panic!("variant {name:?} needs the `pools` feature (the nb-aiopool library)")
}

/// `smart`, `smart-shared` and `smart-arc`: the producer loop of `common`, with the recipe
/// `recipe` makes for job `i` (and its payload).
#[cfg(feature = "pools")]
async fn run_smart<R, Fut>(name: &str, p: &Params, mut recipe: impl FnMut(u64) -> R) -> u64
where
    R: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let pool = nb_aiopool::SmartAioPool::builder()
        .max_concurrency(p.concurrency)
        .max_queue_size(p.queue)
        .build();
    for i in 0..p.tasks {
        let handle = pool
            .submit(recipe(i))
            .await
            .unwrap_or_else(|_| panic!("{name}: submit rejected"));
        drop(handle);
    }
    pool.shutdown().await;
    pool.stats().completed
}

/// Issue 9's design B1 as a bare probe ([`cells::CellPool`]): the same producer loop as
/// `common`, detached jobs, then a wait for all of them.
async fn cells_probe(name: &str, p: &Params) -> u64 {
    let pool = if name == "cells-booked" {
        cells::CellPool::booked(p.concurrency, p.queue)
    } else {
        cells::CellPool::new(p.concurrency, p.queue)
    };
    let w = p.workload;
    if name != "cells-probe" {
        let mut reaper = cells::Reaper::new(2 * (p.concurrency + p.queue));
        for i in 0..p.tasks {
            reaper.keep(pool.submit_task(work(p.payloads.get(i), w)).await);
        }
        pool.wait().await;
        drop(reaper);
    } else {
        for i in 0..p.tasks {
            pool.submit(work(p.payloads.get(i), w)).await;
        }
        pool.wait().await;
    }
    assert_eq!(pool.panicked(), 0, "cells-probe: a job panicked");
    pool.finished() as u64
}

/// Today's slot design stripped bare ([`slots::SlotPool`]): the same producer loop as
/// `cells-probe`.
async fn slots_probe(name: &str, p: &Params) -> u64 {
    let pool = if name == "slots-reap" {
        slots::SlotPool::reaping(p.concurrency, p.queue)
    } else {
        slots::SlotPool::new(p.concurrency, p.queue)
    };
    for i in 0..p.tasks {
        pool.submit(work(p.payloads.get(i), p.workload)).await;
    }
    pool.wait().await;
    assert_eq!(pool.panicked(), 0, "slots-probe: a job panicked");
    pool.finished() as u64
}

/// The anti-pattern: spawn every job at once, each waits for a permit inside. Memory grows
/// with `n` (every task and payload exists before most can run).
async fn spawn_sem_inside(p: &Params) -> u64 {
    let sem = Arc::new(Semaphore::new(p.concurrency));
    let w = p.workload;
    let mut handles = Vec::with_capacity(usize::try_from(p.tasks).expect("task count fits usize"));
    for i in 0..p.tasks {
        let sem = Arc::clone(&sem);
        let payload = p.payloads.get(i);
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("semaphore never closed");
            work(payload, w).await
        }));
    }
    let mut done = 0;
    for h in handles {
        h.await.expect("job panicked");
        done += 1;
    }
    done
}

/// Acquire a permit *before* spawning into a `JoinSet`; reap finished jobs with
/// `try_join_next` so the set (and memory) stays at about `c` entries.
async fn sem_before_joinset(p: &Params) -> u64 {
    let sem = Arc::new(Semaphore::new(p.concurrency));
    let w = p.workload;
    let mut set = JoinSet::new();
    let mut done = 0;
    for i in 0..p.tasks {
        let permit = Arc::clone(&sem)
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let payload = p.payloads.get(i);
        set.spawn(async move {
            let out = work(payload, w).await;
            drop(permit);
            out
        });
        while let Some(r) = set.try_join_next() {
            r.expect("job panicked");
            done += 1;
        }
    }
    while let Some(r) = set.join_next().await {
        r.expect("job panicked");
        done += 1;
    }
    done
}

/// Waits until every job has given its permit back (all `c` permits free again).
async fn wait_all_permits(sem: &Semaphore, c: usize) {
    let all = u32::try_from(c).expect("concurrency fits u32");
    let _all = sem.acquire_many(all).await.expect("semaphore never closed");
}

/// Acquire an owned permit *before* a plain `tokio::spawn` and move it into the task; keep
/// no `JoinHandle` (no `JoinSet`). Each job counts itself done, then drops its permit; the
/// end is waited for by taking all `c` permits back.
async fn spawn_permit_moved(p: &Params) -> u64 {
    let sem = Arc::new(Semaphore::new(p.concurrency));
    let done = Arc::new(AtomicU64::new(0));
    let w = p.workload;
    for i in 0..p.tasks {
        let permit = Arc::clone(&sem)
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let payload = p.payloads.get(i);
        let done = Arc::clone(&done);
        drop(tokio::spawn(async move {
            let out = work(payload, w).await;
            drop(out);
            done.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        }));
    }
    wait_all_permits(&sem, p.concurrency).await;
    done.load(Ordering::Relaxed)
}

/// smol's `async-executor` on runner threads of its own (plain threads, each running
/// `futures_lite::future::block_on(executor.run(pending()))`), fed by the producer: an
/// owned permit of a tokio `Semaphore` first, then `executor.spawn(..).detach()`. tokio's
/// `Semaphore` is runtime-agnostic (plain wakers, no driver), so jobs on the executor's
/// threads can give permits back and wake the producer. The end is waited for by taking
/// all permits back.
///
/// The executor gets the threads the pools' jobs get ([`executor_runners`]): one runner
/// per worker of the runtime when the producer runs in `block_on` beside them (the
/// default); when the producer shares a thread with the jobs (a current-thread runtime,
/// or `--spawned-producer`), one runner fewer, and the producer's own task drives the
/// executor too (`executor.run(producer)`), so jobs also run on the producer's thread.
///
/// The runner threads are never stopped: like the tokio runtime's workers they stay alive
/// (parked) until the process exits, so their CPU time is still in `/proc/self/task` when
/// the run is measured. They enter the tokio runtime's handle so `Sleep` jobs can use its
/// timer; `Tiny` jobs yield to the executor (see [`work`]).
async fn async_executor(p: &Params) -> u64 {
    let ex = Arc::new(async_executor::Executor::new());
    let tokio_handle = tokio::runtime::Handle::current();
    let (runners, producer_drives) = executor_runners(&tokio_handle);
    for r in 0..runners {
        let ex = Arc::clone(&ex);
        let tokio_handle = tokio_handle.clone();
        std::thread::Builder::new()
            .name(format!("async-executor-{r}"))
            .spawn(move || {
                let _tokio = tokio_handle.enter();
                futures_lite::future::block_on(ex.run(std::future::pending::<()>()))
            })
            .expect("spawn an executor thread");
    }
    let sem = Arc::new(Semaphore::new(p.concurrency));
    let done = Arc::new(AtomicU64::new(0));
    let w = p.workload;
    let produce = async {
        for i in 0..p.tasks {
            let permit = Arc::clone(&sem)
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            let payload = p.payloads.get(i);
            let done = Arc::clone(&done);
            ex.spawn(async move {
                let out = work(payload, w).await;
                drop(out);
                done.fetch_add(1, Ordering::Relaxed);
                drop(permit);
            })
            .detach();
        }
        wait_all_permits(&sem, p.concurrency).await;
    };
    if producer_drives {
        ex.run(produce).await;
    } else {
        produce.await;
    }
    done.load(Ordering::Relaxed)
}

/// The `async-executor` variant's threads on the current runtime: `(runner threads, the
/// producer's task drives the executor too)`. The pools' jobs run on the runtime's
/// workers; a producer in `block_on` of a multi-thread runtime has the main thread to
/// itself, so the executor gets one runner per worker. A producer on a current-thread
/// runtime, or spawned on a worker, shares its thread with the jobs: the executor gets
/// one runner fewer and the producer's thread runs jobs as well.
fn executor_runners(handle: &tokio::runtime::Handle) -> (usize, bool) {
    let workers = match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => 1,
        _ => handle.metrics().num_workers(),
    };
    let shares = handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
        || tokio::task::try_id().is_some();
    if shares {
        (workers - 1, true)
    } else {
        (workers, false)
    }
}

type BoxJob = Pin<Box<dyn Future<Output = String> + Send>>;

/// A bounded tokio mpsc of boxed futures and `c` worker tasks sharing the receiver behind a
/// tokio `Mutex` (the classic hand-written worker pool; it takes any future, as a pool does).
async fn mpsc_workers(p: &Params) -> u64 {
    let (tx, rx) = mpsc::channel::<BoxJob>(p.queue.max(1));
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = JoinSet::new();
    for _ in 0..p.concurrency {
        let rx = Arc::clone(&rx);
        workers.spawn(async move {
            let mut done = 0u64;
            loop {
                let job = rx.lock().await.recv().await;
                match job {
                    Some(job) => {
                        job.await;
                        done += 1;
                    }
                    None => return done,
                }
            }
        });
    }
    let w = p.workload;
    for i in 0..p.tasks {
        let job: BoxJob = Box::pin(work(p.payloads.get(i), w));
        if tx.send(job).await.is_err() {
            panic!("mpsc-workers: all workers gone");
        }
    }
    drop(tx);
    let mut done = 0;
    while let Some(r) = workers.join_next().await {
        done += r.expect("worker panicked");
    }
    done
}

/// `stream::iter(..).map(..).buffer_unordered(c)` polled by the producer task itself (no
/// spawning: all jobs run inside this one task).
async fn buffer_unordered(p: &Params) -> u64 {
    let w = p.workload;
    let mut s = futures::stream::iter(0..p.tasks)
        .map(|i| work(p.payloads.get(i), w))
        .buffer_unordered(p.concurrency);
    let mut done = 0;
    while let Some(out) = s.next().await {
        drop(out);
        done += 1;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll, Wake, Waker};

    struct CountWakes(AtomicU64);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Outside a tokio scheduler `work(.., Tiny)` still yields once and wakes itself.
    #[test]
    fn tiny_yields_once_outside_tokio() {
        let wakes = Arc::new(CountWakes(AtomicU64::new(0)));
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let mut job = std::pin::pin!(work("x".to_string(), Workload::Tiny));
        assert!(job.as_mut().poll(&mut cx).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(job.as_mut().poll(&mut cx), Poll::Ready("x".to_string()));
    }

    fn small(workload: Workload) -> Params {
        Params {
            tasks: 5000,
            concurrency: 7,
            queue: 7,
            workload,
            payloads: Payloads::new(400),
        }
    }

    #[test]
    fn a_payload_written_into_a_reused_string_is_the_same_text_as_a_plain_one() {
        let payloads = Payloads::new(400);
        for i in [0, 7, 999_999, u64::MAX] {
            let plain = payloads.get(i);
            assert_eq!(plain.len(), 401 + i.to_string().len());
            let mut text = String::from("left from before");
            payloads.write_into(i, &mut text);
            assert_eq!(text, plain, "payload {i}");
        }
    }

    #[test]
    fn new_variants_complete_every_job() {
        for workload in [Workload::Tiny, Workload::Sleep(1)] {
            let mut p = small(workload);
            if workload != Workload::Tiny {
                p.tasks = 200;
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            for v in [
                "spawn-permit-moved",
                "async-executor",
                "smart-shared",
                "smart-arc",
            ] {
                assert_eq!(rt.block_on(run_variant(v, &p)), p.tasks, "{v} {workload}");
            }
        }
    }

    /// The environment variable that makes a re-run of this test binary one child run of
    /// [`async_executor_gets_the_threads_the_pools_jobs_get`].
    const THREADS_CHILD: &str = "NB_AIOPOOL_BENCH_THREADS_CHILD";

    fn threads_of_this_process() -> usize {
        std::fs::read_dir("/proc/self/task")
            .expect("read /proc/self/task")
            .count()
    }

    /// The `async-executor` pattern runs its jobs on as many threads as the pools' jobs
    /// get: the runtime's workers, or the producer's one thread on a current-thread
    /// runtime. Each configuration runs in a child process of its own (this test binary
    /// re-run for this test alone), so no other test's threads are counted.
    #[test]
    fn async_executor_gets_the_threads_the_pools_jobs_get() {
        if let Ok(config) = std::env::var(THREADS_CHILD) {
            let rt = match config.as_str() {
                "current" => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build(),
                _ => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build(),
            }
            .unwrap();
            let before = threads_of_this_process();
            let p = small(Workload::Tiny);
            let done = if config == "spawned-multi1" {
                rt.block_on(async move {
                    tokio::spawn(async move { run_variant("async-executor", &p).await })
                        .await
                        .unwrap()
                })
            } else {
                rt.block_on(run_variant("async-executor", &p))
            };
            assert_eq!(done, 5000);
            println!("NEW_THREADS={}", threads_of_this_process() - before);
            return;
        }
        // (configuration, threads the pools' jobs get beside the producer's thread)
        for (config, want) in [("current", 0), ("multi1", 1), ("spawned-multi1", 0)] {
            let exe = std::env::current_exe().expect("this test binary");
            let run = std::process::Command::new(exe)
                .args([
                    "--exact",
                    "tests::async_executor_gets_the_threads_the_pools_jobs_get",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(THREADS_CHILD, config)
                .output()
                .expect("run this test binary as a child");
            let out = String::from_utf8_lossy(&run.stdout);
            assert!(run.status.success(), "{config}: the child failed: {out}");
            // libtest prints the child's line after the test's name, on the same line.
            let new: usize = out
                .split("NEW_THREADS=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("{config}: no NEW_THREADS in {out:?}"))
                .parse()
                .expect("a number");
            assert_eq!(
                new, want,
                "{config}: async-executor started {new} threads of its own to run its jobs; the \
                 pools' jobs get {want} beside the producer's thread"
            );
        }
    }

    /// Never more than `c` jobs at once.
    #[test]
    fn new_variants_bound_concurrency() {
        use std::sync::atomic::AtomicUsize;
        static NOW: AtomicUsize = AtomicUsize::new(0);
        static PEAK: AtomicUsize = AtomicUsize::new(0);
        // The same shape as the variants, with a gauge around the job body.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let ex = Arc::new(async_executor::Executor::new());
        for _ in 0..2 {
            let ex = Arc::clone(&ex);
            std::thread::spawn(move || {
                futures_lite::future::block_on(ex.run(std::future::pending::<()>()))
            });
        }
        rt.block_on(async {
            let sem = Arc::new(Semaphore::new(7));
            for i in 0..3000u64 {
                let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
                let job = async move {
                    let n = NOW.fetch_add(1, Ordering::SeqCst) + 1;
                    PEAK.fetch_max(n, Ordering::SeqCst);
                    work(String::new(), Workload::Tiny).await;
                    NOW.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                };
                if i % 2 == 0 {
                    drop(tokio::spawn(job));
                } else {
                    ex.spawn(job).detach();
                }
            }
            wait_all_permits(&sem, 7).await;
        });
        assert!(PEAK.load(Ordering::SeqCst) <= 7);
        assert_eq!(NOW.load(Ordering::SeqCst), 0);
    }
}
