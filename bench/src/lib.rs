//! Shared pieces of the side-by-side benchmarks: the workloads, the payloads, and one
//! function per variant (our pools and the hand-written tokio patterns they replace).
//!
//! Every variant pushes `n` jobs through at most `c` concurrent slots, building each job's
//! payload only when the producer gets to it, and returns how many jobs completed so the
//! caller can check nothing was lost.
#![warn(missing_docs, rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod measure;

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
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
pub async fn work(payload: String, workload: Workload) -> String {
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
        use std::fmt::Write as _;
        let mut s = String::with_capacity(self.prefix.len() + 21);
        s.push_str(&self.prefix);
        s.push('_');
        write!(s, "{i}").expect("writing to a String cannot fail");
        s
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
    "mpsc-workers",
    "buffer-unordered",
];

/// The hand-written tokio patterns (the pools are compared against the best of these).
pub const TOKIO_PATTERNS: &[&str] = &[
    "spawn-sem-inside",
    "sem-before-joinset",
    "mpsc-workers",
    "buffer-unordered",
];

/// Runs one variant by name inside the current runtime; returns the number of jobs that
/// completed. Panics on an unknown name or if the library was left out of the build.
pub async fn run_variant(name: &str, p: &Params) -> u64 {
    match name {
        "common" | "no-queue" | "smart" => run_pool(name, p).await,
        "spawn-sem-inside" => spawn_sem_inside(p).await,
        "sem-before-joinset" => sem_before_joinset(p).await,
        "mpsc-workers" => mpsc_workers(p).await,
        "buffer-unordered" => buffer_unordered(p).await,
        other => panic!("unknown variant {other:?}; known: {}", VARIANTS.join(", ")),
    }
}

#[cfg(not(feature = "pools"))]
async fn run_pool(name: &str, _p: &Params) -> u64 {
    panic!("variant {name:?} needs the `pools` feature (the nb-aiopool library)")
}

#[cfg(feature = "pools")]
async fn run_pool(name: &str, p: &Params) -> u64 {
    use nb_aiopool::{CommonAioPool, NoQueueAioPool, SmartAioPool};
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
        "smart" => {
            let pool = SmartAioPool::builder()
                .max_concurrency(p.concurrency)
                .max_queue_size(p.queue)
                .build();
            for i in 0..p.tasks {
                let payload = p.payloads.get(i);
                // A recipe may be run again, so each run clones the payload it returns.
                let handle = pool
                    .submit(move || work(payload.clone(), w))
                    .await
                    .unwrap_or_else(|_| panic!("smart: submit rejected"));
                drop(handle);
            }
            pool.shutdown().await;
            pool.stats().completed
        }
        other => unreachable!("not a pool: {other}"),
    }
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
