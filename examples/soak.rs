//! Soak run (issue 6; not part of CI): keeps a pool at full load for a while and watches
//! resident memory, to show nothing leaks per task.
//!
//! ```text
//! cargo run --release --example soak -- --pool common --secs 300
//! cargo run --release --example soak -- --pool all --secs 200   # each pool in turn
//! ```
//!
//! Options: `--pool common|no_queue|smart|all` (default `all`), `--secs N` per pool
//! (default 60), `--every N` seconds between reports (default 5), `--concurrency N`
//! (default 100), `--queue N` (default 1000), `--workers N` runtime threads (default 2),
//! `--churn-ms N`: the producers run on runtimes of their own, each dropped and made
//! again every N ms (current-thread and multi-thread in turn), with jobs still queued
//! and running: one pool used from thousands of short-lived runtimes, as a `static`
//! pool is by a test suite (CommonAioPool and NoQueueAioPool jobs then end cancelled
//! with `RuntimeShutdown`; SmartAioPool's run again on the next runtime).
//!
//! Load: three async producers submit without pause; tasks yield, 2% sleep 0-2 ms, 1%
//! panic, 1% are aborted, 90% of the handles are dropped (detached) and the rest awaited
//! in a sliding window. Every `--every` seconds it prints the tasks finished, the rate and
//! VmRSS (from /proc/self/status); at the end the RSS slope by least squares over the
//! samples after the first fifth of the run (the warm-up), in KiB per minute, and the
//! accounting: `submitted - (completed + panicked + cancelled)` must be 0 after shutdown.
//!
//! `--flow` (off by default) soaks flow control, groups and streams instead:
//!
//! ```text
//! cargo run --release --example soak -- --flow --pool all --secs 60 --every 10
//! cargo run --release --example soak -- --flow --pool all --secs 60 --every 10 --churn-ms 20
//! ```
//!
//! Each pool is built with `max_per_key(4)`, `weight_capacity(200)` and
//! `rate_limit(1_000, 10 ms)` (100k starts a second; `--rate N` sets the count per 10 ms),
//! `max_concurrency` 100 and, in flow mode, a queue of 100 unless `--queue` is given (one
//! small enough to fill when tasks are held back, so that submits wait and some time
//! out). Why these: weights 1..=4 average 2.5, so 100 running tasks would weigh 250 and
//! the weight capacity bites all the time; some 60 keys are live at once, so a key goes
//! over its 4 now and then; and two shared cores start some 85-95k flow-controlled tasks
//! a second, just under the rate cap, so the window fills in bursts (reports with
//! `queued` at its whole room and `running=0` are those moments). Every plain submit is a
//! `submit_with`: priority -1 (10%), 1 (20%), 5 (10%), else 0; weight 1..=4, and 0.1% one
//! above the capacity (refused `TooHeavy`); 90% keyed, with the key
//! `"{task number / 1000}:{0..64}"`, a rotating key space (64 keys per 1,000 tasks,
//! hundreds of thousands over a minute: a per-key map that never forgot a key would
//! grow); 20% with a submit timeout of 0-2 ms, some of which expire while the pool is
//! full (refused `TimedOut`). Tasks behave as in the plain soak (1% panic, 2% sleep, 1%
//! aborted, 10% awaited and their values checked, the rest detached). Every 3,000 tasks a
//! producer runs a group of 24-47 jobs (`TaskGroup` / `SmartTaskGroup`, each submitted with
//! `submit_with`: a priority, weight and key as above, never a timeout or a weight above
//! the capacity, so that none is refused): 70% joined with
//! `join_all` (values checked in order), 15% half joined with `join_next_with_id` then
//! dropped (aborting the rest), 15% `abort_all` then `join_all`; and, 1,500 tasks later, a
//! stream of 24-47 inputs (those drained whole give each input its options the same
//! way, `with_options`): `map_unordered` drained (40%), `map_ordered` drained (40%,
//! values checked in input order), or either dropped half-way (20%). `--churn-ms` churns
//! the producers' runtimes as in the plain soak. `--no-aborts` leaves out every abort
//! (handles, groups, dropped streams), which makes the job-count check below exact.
//!
//! Accounting, which must come out exactly (else exit 1): every plain submit is accepted
//! or refused (counted by its error kind); after `shutdown()`, `submitted` equals the
//! accepted plain submits + the group submits accepted + the stream inputs pulled,
//! `submitted = completed + panicked + cancelled`, nothing queued or running; every
//! awaited handle and every group or stream result carries its own task's value (or a
//! panic exactly where its input panics); a drained stream yields one item per input and
//! a joined group one per accepted submit; at every report, the handles already seen
//! resolved are counted in `stats()` (`completed`, `panicked` at least those seen), and
//! `stats()` adds up. The jobs count their own ends: `completed <= returned` and
//! `panicked <= panicked bodies`, the difference ("ended after their abort") no more than
//! `cancelled`: a job whose body ends during the poll in which another thread aborts it
//! counts as aborted, as its handle already said (`src/task/run.rs`, "An abort decided
//! first"); with `--no-aborts` and no churn, both are equal. A watchdog thread exits with
//! 3, printing the pool's stats and the counters, if no task finishes for 10 s.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use nb_aiopool::{
    CommonAioPool, NoQueueAioPool, PoolStats, SmartAioPool, SubmitErrorKind, SubmitOptions,
    TaskError, TaskHandle,
};

const PANIC_TEXT: &str = "soak: intentional panic";

#[derive(Clone)]
enum Pool {
    Common(CommonAioPool),
    NoQueue(NoQueueAioPool),
    Smart(SmartAioPool),
}

impl Pool {
    fn stats(&self) -> PoolStats {
        match self {
            Pool::Common(p) => p.stats(),
            Pool::NoQueue(p) => p.stats(),
            Pool::Smart(p) => p.stats(),
        }
    }

    async fn submit(&self, kind: u64) -> Option<TaskHandle<u64>> {
        match self {
            Pool::Common(p) => p.submit(job(kind)).await.ok(),
            Pool::NoQueue(p) => p.submit(job(kind)).await.ok(),
            Pool::Smart(p) => p.submit(move || job(kind)).await.ok(),
        }
    }

    async fn shutdown(&self) {
        match self {
            Pool::Common(p) => p.shutdown().await,
            Pool::NoQueue(p) => p.shutdown().await,
            Pool::Smart(p) => p.shutdown().await,
        }
    }
}

/// A task: `kind` (a random number) picks what it does.
async fn job(kind: u64) -> u64 {
    match kind % 100 {
        0 => panic!("{PANIC_TEXT}"),
        1 | 2 => tokio::time::sleep(Duration::from_micros(kind % 2000)).await,
        _ => tokio::task::yield_now().await,
    }
    // A little allocation per task, so a leak of task state would show.
    // Wrapping: `kind` is random, and a debug build checks for overflow.
    let v: Vec<u64> = (0..16u64).map(|i| i.wrapping_mul(kind)).collect();
    v.iter().fold(0, |a, &b| a.wrapping_add(b))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Least-squares slope of `(t seconds, kib)` in KiB per minute.
fn slope_kib_per_min(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mx = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let sxy: f64 = samples.iter().map(|s| (s.0 - mx) * (s.1 as f64 - my)).sum();
    let sxx: f64 = samples.iter().map(|s| (s.0 - mx) * (s.0 - mx)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx * 60.0
    }
}

struct Args {
    pool: String,
    secs: u64,
    every: u64,
    concurrency: usize,
    queue: usize,
    queue_given: bool,
    workers: usize,
    churn_ms: Option<u64>,
    flow: bool,
    rate: u32,
}

fn parse_args() -> Args {
    let mut a = Args {
        pool: "all".into(),
        secs: 60,
        every: 5,
        concurrency: 100,
        queue: 1000,
        queue_given: false,
        workers: 2,
        churn_ms: None,
        flow: false,
        rate: 1_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| panic!("soak: {flag} needs a value"))
        };
        match flag.as_str() {
            "--pool" => a.pool = value(),
            "--secs" => a.secs = value().parse().expect("--secs N"),
            "--every" => a.every = value().parse().expect("--every N"),
            "--concurrency" => a.concurrency = value().parse().expect("--concurrency N"),
            "--queue" => {
                a.queue = value().parse().expect("--queue N");
                a.queue_given = true;
            }
            "--workers" => a.workers = value().parse().expect("--workers N"),
            "--churn-ms" => a.churn_ms = Some(value().parse().expect("--churn-ms N")),
            "--flow" => a.flow = true,
            "--no-aborts" => NO_ABORTS.store(true, Ordering::Relaxed),
            "--rate" => a.rate = value().parse().expect("--rate N"),
            other => panic!("soak: unknown option {other}"),
        }
    }
    a
}

/// Submits until `stop` (or `until`), awaiting a sliding window of the handles.
async fn produce(pool: Pool, stop: Arc<AtomicBool>, seq: Arc<AtomicU64>, until: Option<Instant>) {
    if FLOW.load(Ordering::Relaxed) {
        return produce_flow(pool, stop, seq, until).await;
    }
    let mut window: VecDeque<TaskHandle<u64>> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) && until.is_none_or(|u| Instant::now() < u) {
        // splitmix64 over a shared counter: cheap random numbers.
        let mut z = seq.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let x = z ^ (z >> 31);
        let Some(h) = pool.submit(x).await else { break };
        match x % 100 {
            3 => h.abort(),
            4..=13 => window.push_back(h),
            _ => {} // dropped: detached
        }
        if window.len() > 64 {
            let _ = window.pop_front().unwrap().await;
        }
    }
    if until.is_none() {
        for h in window {
            let _ = h.await;
        }
    }
}

/// A producer on runtimes of its own, each dropped after `churn` with its jobs still
/// queued and running; returns how many runtimes it went through.
fn churning_producer(
    pool: Pool,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
    churn: Duration,
) -> u64 {
    let mut runtimes = 0;
    while !stop.load(Ordering::Relaxed) {
        let rt = if runtimes % 2 == 0 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
        }
        .expect("runtime");
        let until = Instant::now() + churn;
        rt.block_on(produce(
            pool.clone(),
            stop.clone(),
            seq.clone(),
            Some(until),
        ));
        drop(rt);
        runtimes += 1;
    }
    runtimes
}

/// A soak's three producers: tasks on this runtime, or (`--churn-ms`) threads that each go
/// through runtimes of their own.
struct Producers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    churners: Vec<std::thread::JoinHandle<u64>>,
}

impl Producers {
    fn start(pool: &Pool, a: &Args) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seq = Arc::new(AtomicU64::new(0x9E37_79B9_7F4A_7C15));
        let (mut tasks, mut churners) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let (pool, stop, seq) = (pool.clone(), stop.clone(), seq.clone());
            match a.churn_ms {
                None => tasks.push(tokio::spawn(produce(pool, stop, seq, None))),
                Some(ms) => churners.push(std::thread::spawn(move || {
                    churning_producer(pool, stop, seq, Duration::from_millis(ms))
                })),
            }
        }
        Producers {
            stop,
            tasks,
            churners,
        }
    }

    /// Stops them and waits for them; says how many runtimes the churning ones went
    /// through.
    async fn stop(self, name: &str) {
        self.stop.store(true, Ordering::Relaxed);
        for p in self.tasks {
            let _ = p.await;
        }
        let churners = self.churners;
        if !churners.is_empty() {
            let joined = tokio::task::spawn_blocking(move || {
                churners
                    .into_iter()
                    .map(|c| c.join().expect("producer"))
                    .sum::<u64>()
            });
            println!(
                "{name}: the producers went through {} runtimes",
                joined.await.expect("join")
            );
        }
    }
}

async fn soak(name: &str, pool: Pool, a: &Args) -> bool {
    let producers = Producers::start(&pool, a);

    let start = Instant::now();
    let total = Duration::from_secs(a.secs);
    let mut samples = Vec::new();
    let mut last_done = 0;
    let mut last_t = start;
    println!(
        "{name}: {} s at full load, max_concurrency {}, queue {}",
        a.secs, a.concurrency, a.queue
    );
    while start.elapsed() < total {
        let left = total.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(a.every))).await;
        let s = pool.stats();
        let done = s.completed + s.panicked + s.cancelled;
        let t = start.elapsed().as_secs_f64();
        let rss = rss_kib();
        samples.push((t, rss));
        let rate = (done - last_done) as f64 / last_t.elapsed().as_secs_f64();
        println!(
            "{name}: t={t:>6.1}s finished={done:>11} rate={rate:>9.0}/s rss={rss} KiB queued={} running={}",
            s.queued, s.running
        );
        last_done = done;
        last_t = Instant::now();
    }
    producers.stop(name).await;
    pool.shutdown().await;
    let s = pool.stats();
    let lost = s.submitted as i128 - (s.completed + s.panicked + s.cancelled) as i128;
    let skip = samples.len() / 5;
    let slope = slope_kib_per_min(&samples[skip..]);
    let first = samples.get(skip).map(|s| s.1).unwrap_or(0);
    let last = samples.last().map(|s| s.1).unwrap_or(0);
    println!(
        "{name}: SUMMARY secs={} submitted={} completed={} panicked={} cancelled={} lost={lost} \
         queued={} running={} rss_start={first} KiB rss_end={last} KiB rss_slope={slope:+.1} KiB/min \
         (least squares over {} samples after warm-up)",
        a.secs,
        s.submitted,
        s.completed,
        s.panicked,
        s.cancelled,
        s.queued,
        s.running,
        samples.len() - skip
    );
    lost == 0 && s.queued == 0 && s.running == 0
}

fn main() {
    let mut a = parse_args();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let text = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !text.contains(PANIC_TEXT) {
            previous(info);
        }
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.workers)
        .enable_all()
        .build()
        .expect("runtime");
    FLOW.store(a.flow, Ordering::Relaxed);
    if a.flow && !a.queue_given {
        a.queue = FLOW_QUEUE;
    }
    let pools: Vec<&str> = match a.pool.as_str() {
        "all" => vec!["common", "no_queue", "smart"],
        one => vec![one],
    };
    let mut ok = true;
    for name in pools {
        let pool = match name {
            _ if a.flow => flow_pool(name, &a),
            "common" => Pool::Common(CommonAioPool::new(a.concurrency, a.queue)),
            "no_queue" => Pool::NoQueue(NoQueueAioPool::new(a.concurrency)),
            "smart" => Pool::Smart(
                SmartAioPool::builder()
                    .max_concurrency(a.concurrency)
                    .max_queue_size(a.queue)
                    .min_workers(1)
                    .idle_timeout(Duration::from_millis(50))
                    .auto_shutdown(false)
                    .build(),
            ),
            other => panic!("soak: unknown pool {other} (common, no_queue, smart, all)"),
        };
        ok &= if a.flow {
            rt.block_on(soak_flow(name, pool, &a))
        } else {
            rt.block_on(soak(name, pool, &a))
        };
    }
    if !ok {
        eprintln!("soak: tasks unaccounted for");
        std::process::exit(1);
    }
}

// ------------------------------------------------------------------------------------
// `--flow`: flow control, groups and streams (see the file's docs).

static FLOW: AtomicBool = AtomicBool::new(false);
/// `--no-aborts`: no handle aborted, no group aborted or dropped unjoined, no stream
/// dropped half-way (to tell the races of aborts with the tasks' ends from losses).
static NO_ABORTS: AtomicBool = AtomicBool::new(false);

const MAX_PER_KEY: usize = 4;
const WEIGHT_CAPACITY: u64 = 200;
const RATE_PER: Duration = Duration::from_millis(10);
const ROUND_EVERY: u64 = 3_000;
/// `--queue` in flow mode unless given: small enough to fill when the rate window, keys
/// or weights hold tasks back, so that submits wait and some time out.
const FLOW_QUEUE: usize = 100;

/// Declares the flow mode's counters once: the enum `C` and `ALL`, every counter in order
/// (for the counters' line).
macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// The flow mode's counters, reset before each pool's run (when nothing of the
        /// pool before runs any more).
        #[derive(Clone, Copy, Debug)]
        enum C {
            $($name),*
        }

        const ALL: &[C] = &[$(C::$name),*];
    };
}

counters! {
    Attempts,
    Accepted,
    RefTimedOut,
    RefTooHeavy,
    RefClosed,
    RefWouldDeadlock,
    RefNoRuntime,
    RefOther,
    Aborted,
    AwaitedOk,
    AwaitedPanicked,
    AwaitedCancelled,
    GroupRounds,
    GroupAccepted,
    GroupRefused,
    GroupDropped,
    GroupOk,
    GroupPanicked,
    GroupCancelled,
    StreamRounds,
    StreamPulled,
    StreamDropped,
    StreamRefused,
    StreamOk,
    StreamPanicked,
    StreamCancelled,
    RanOk,
    RanPanic,
    WrongValue,
    MissingItems,
}

static COUNTERS: [AtomicU64; ALL.len()] = [const { AtomicU64::new(0) }; ALL.len()];
static TASKS: AtomicU64 = AtomicU64::new(0);

fn bump(c: C) {
    COUNTERS[c as usize].fetch_add(1, Ordering::SeqCst);
}

fn get(c: C) -> u64 {
    COUNTERS[c as usize].load(Ordering::SeqCst)
}

fn reset_counters() {
    for c in &COUNTERS {
        c.store(0, Ordering::SeqCst);
    }
    TASKS.store(0, Ordering::SeqCst);
}

fn counters_line() -> String {
    ALL.iter()
        .map(|&c| format!("{c:?}={}", get(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What `flow_job(kind)` returns (computed without the job's allocation).
fn value_of(kind: u64) -> u64 {
    (0..16u64).fold(0, |a, i| a.wrapping_add(i.wrapping_mul(kind)))
}

/// The plain soak's task, counting its own end: `RanOk` right before it returns (nothing
/// can stop it there: no `.await` is left), `RanPanic` right before it panics.
async fn flow_job(kind: u64) -> u64 {
    match kind % 100 {
        0 => {
            bump(C::RanPanic);
            panic!("{PANIC_TEXT}")
        }
        1 | 2 => tokio::time::sleep(Duration::from_micros(kind % 2000)).await,
        _ => tokio::task::yield_now().await,
    }
    let v: Vec<u64> = (0..16u64).map(|i| i.wrapping_mul(kind)).collect();
    let v = v.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    bump(C::RanOk);
    v
}

#[derive(Clone, Copy)]
enum Seen {
    Awaited,
    Group,
    Stream,
}

/// Counts a result seen through a handle, a group or a stream, and checks that it is its
/// own task's: the value of `kind`, or a panic exactly when `kind` panics.
fn record(r: &Result<u64, TaskError>, kind: u64, seen: Seen) {
    let (ok, panicked, cancelled) = match seen {
        Seen::Awaited => (C::AwaitedOk, C::AwaitedPanicked, C::AwaitedCancelled),
        Seen::Group => (C::GroupOk, C::GroupPanicked, C::GroupCancelled),
        Seen::Stream => (C::StreamOk, C::StreamPanicked, C::StreamCancelled),
    };
    match r {
        Ok(v) => {
            bump(ok);
            if *v != value_of(kind) || kind % 100 == 0 {
                bump(C::WrongValue);
            }
        }
        Err(e) if e.is_panic() => {
            bump(panicked);
            if kind % 100 != 0 {
                bump(C::WrongValue);
            }
        }
        Err(e) if e.is_cancelled() => bump(cancelled),
        Err(_) => bump(C::WrongValue),
    }
}

fn refused(kind: SubmitErrorKind) {
    bump(match kind {
        SubmitErrorKind::TimedOut => C::RefTimedOut,
        SubmitErrorKind::TooHeavy => C::RefTooHeavy,
        SubmitErrorKind::Closed => C::RefClosed,
        SubmitErrorKind::WouldDeadlock => C::RefWouldDeadlock,
        SubmitErrorKind::NoRuntime => C::RefNoRuntime,
        _ => C::RefOther,
    });
}

/// Priority, weight, a key from the rotating key space, and now and then a timeout.
fn flow_opts(n: u64, y: u64) -> SubmitOptions {
    let mut o = member_opts(n, y);
    if (y >> 8) % 1000 == 0 {
        o = o.weight(WEIGHT_CAPACITY as u32 + 1);
    }
    if (y >> 40) % 5 == 0 {
        o = o.timeout(Duration::from_micros((y >> 44) % 2000));
    }
    o
}

/// The options of a group's task or a stream's input (`submit_with`, `with_options`), and
/// the base of a plain submit's ([`flow_opts`]): a priority, a weight that fits and (90%)
/// a key of task `n`'s key space; never a timeout or a weight above the capacity, so that
/// no group submit or stream input is refused and the counts stay exact.
fn member_opts(n: u64, y: u64) -> SubmitOptions {
    let priority = match y % 10 {
        0 => -1,
        1 | 2 => 1,
        3 => 5,
        _ => 0,
    };
    let weight = 1 + ((y >> 18) % 4) as u32;
    let o = SubmitOptions::new().priority(priority).weight(weight);
    if (y >> 28) % 10 != 0 {
        o.key(format!("{}:{}", n / 1000, (y >> 32) % 64))
    } else {
        o
    }
}

fn flow_pool(name: &str, a: &Args) -> Pool {
    match name {
        "common" => Pool::Common(
            CommonAioPool::builder()
                .max_concurrency(a.concurrency)
                .max_queue_size(a.queue)
                .max_per_key(MAX_PER_KEY)
                .weight_capacity(WEIGHT_CAPACITY)
                .rate_limit(a.rate, RATE_PER)
                .build(),
        ),
        "no_queue" => Pool::NoQueue(
            NoQueueAioPool::builder()
                .max_concurrency(a.concurrency)
                .max_per_key(MAX_PER_KEY)
                .weight_capacity(WEIGHT_CAPACITY)
                .rate_limit(a.rate, RATE_PER)
                .build(),
        ),
        "smart" => Pool::Smart(
            SmartAioPool::builder()
                .max_concurrency(a.concurrency)
                .max_queue_size(a.queue)
                .min_workers(1)
                .idle_timeout(Duration::from_millis(50))
                .auto_shutdown(false)
                .max_per_key(MAX_PER_KEY)
                .weight_capacity(WEIGHT_CAPACITY)
                .rate_limit(a.rate, RATE_PER)
                .build(),
        ),
        other => panic!("soak: unknown pool {other} (common, no_queue, smart, all)"),
    }
}

impl Pool {
    async fn submit_flow(
        &self,
        kind: u64,
        opts: SubmitOptions,
    ) -> Result<TaskHandle<u64>, SubmitErrorKind> {
        match self {
            Pool::Common(p) => p
                .submit_with(flow_job(kind), opts)
                .await
                .map_err(|e| e.kind()),
            Pool::NoQueue(p) => p
                .submit_with(flow_job(kind), opts)
                .await
                .map_err(|e| e.kind()),
            Pool::Smart(p) => p
                .submit_with(move || flow_job(kind), opts)
                .await
                .map_err(|e| e.kind()),
        }
    }
}

/// A group of `kinds.len()` jobs: joined with `join_all` (mode < 70), half joined with
/// `join_next_with_id` then dropped (mode < 85), or `abort_all` then `join_all`.
macro_rules! group_round {
    ($group:expr, $kinds:expr, $mode:expr, $n:expr, $task:expr) => {{
        let mut group = $group;
        let mut ids = Vec::new();
        for &k in $kinds {
            match group.submit_with($task(k), member_opts($n, k)).await {
                Ok(id) => {
                    bump(C::GroupAccepted);
                    ids.push((id, k));
                }
                Err(e) => {
                    bump(C::GroupRefused);
                    eprintln!("soak: a group's submit refused: {:?}", e.kind());
                }
            }
        }
        if (70..85).contains(&$mode) {
            let kinds: std::collections::HashMap<_, _> = ids.iter().copied().collect();
            for _ in 0..ids.len() / 2 {
                match group.join_next_with_id().await {
                    Some((id, r)) => match kinds.get(&id) {
                        Some(&k) => record(&r, k, Seen::Group),
                        None => bump(C::WrongValue),
                    },
                    None => bump(C::MissingItems),
                }
            }
            bump(C::GroupDropped);
            drop(group);
        } else {
            if $mode >= 85 {
                group.abort_all();
            }
            let results = group.join_all().await;
            if results.len() != ids.len() {
                eprintln!(
                    "soak: join_all gave {} results for {} tasks",
                    results.len(),
                    ids.len()
                );
                COUNTERS[C::MissingItems as usize]
                    .fetch_add(ids.len().abs_diff(results.len()) as u64, Ordering::SeqCst);
            }
            for (r, &(_, k)) in results.iter().zip(&ids) {
                record(r, k, Seen::Group);
            }
        }
    }};
}

async fn group_round(pool: &Pool, x: u64, n: u64) {
    bump(C::GroupRounds);
    let size = 24 + (x >> 8) % 24;
    let kinds: Vec<u64> = (1..=size).map(|i| splitmix(x ^ i)).collect();
    let mode = (x >> 16) % 100;
    let mode = if NO_ABORTS.load(Ordering::Relaxed) {
        mode % 70
    } else {
        mode
    };
    match pool {
        Pool::Common(p) => group_round!(p.group::<u64>(), &kinds, mode, n, flow_job),
        Pool::NoQueue(p) => group_round!(p.group::<u64>(), &kinds, mode, n, flow_job),
        Pool::Smart(p) => {
            group_round!(p.group::<u64>(), &kinds, mode, n, |k| move || flow_job(k))
        }
    }
}

/// Drains a stream (or half of it, then drops it), checking the items against `kinds`:
/// in order if `ordered`, else as a multiset of values.
async fn drain<S>(mut s: S, kinds: &[u64], ordered: bool, half: bool) -> S
where
    S: futures_util::Stream<Item = Result<u64, TaskError>> + Unpin,
{
    let want = if half { kinds.len() / 2 } else { kinds.len() };
    let mut left: Vec<u64> = kinds.to_vec();
    let mut got = 0;
    while got < want {
        let Some(r) = s.next().await else { break };
        if ordered {
            record(&r, kinds[got], Seen::Stream);
        } else {
            // Unordered: a value must be one of the inputs' not yet seen; a panic, of
            // an input that panics.
            let pos = match &r {
                Ok(v) => left.iter().position(|&k| k % 100 != 0 && value_of(k) == *v),
                Err(e) if e.is_panic() => left.iter().position(|&k| k % 100 == 0),
                Err(_) => Some(0),
            };
            match pos {
                Some(i) => record(&r, left.swap_remove(i), Seen::Stream),
                None => {
                    bump(C::WrongValue);
                    record(&r, 1, Seen::Stream);
                }
            }
        }
        got += 1;
    }
    if !half && got < kinds.len() {
        COUNTERS[C::MissingItems as usize].fetch_add((kinds.len() - got) as u64, Ordering::SeqCst);
    }
    if !half && s.next().await.is_some() {
        bump(C::WrongValue); // an item more than the inputs
    }
    s
}

macro_rules! stream_round {
    ($p:expr, $kinds:expr, $ordered:expr, $half:expr, $n:expr, $f:expr) => {{
        let inputs = stream::iter($kinds.clone());
        let n = $n;
        let opts = move |&k: &u64| member_opts(n, k);
        // A stream dropped half-way runs without options: with them, an input is pulled
        // (and `f` called) before its wait for room, and a stream dropped while it waits
        // drops that job unsubmitted, which the count of inputs pulled cannot tell apart.
        let refusal = match ($ordered, $half) {
            (true, false) => {
                let s = $p.map_ordered(inputs, $f).with_options(opts);
                drain(s, &$kinds, true, false).await.refused()
            }
            (false, false) => {
                let s = $p.map_unordered(inputs, $f).with_options(opts);
                drain(s, &$kinds, false, false).await.refused()
            }
            (true, true) => drain($p.map_ordered(inputs, $f), &$kinds, true, true)
                .await
                .refused(),
            (false, true) => drain($p.map_unordered(inputs, $f), &$kinds, false, true)
                .await
                .refused(),
        };
        if let Some(kind) = refusal {
            bump(C::StreamRefused);
            eprintln!("soak: a stream refused: {kind:?}");
        }
        if $half {
            bump(C::StreamDropped);
        }
    }};
}

async fn stream_round(pool: &Pool, x: u64, n: u64) {
    bump(C::StreamRounds);
    let size = 24 + (x >> 8) % 24;
    let kinds: Vec<u64> = (1..=size).map(|i| splitmix(x ^ (i << 32))).collect();
    let mode = (x >> 16) % 100;
    let half = mode >= 80 && !NO_ABORTS.load(Ordering::Relaxed);
    let ordered = if half { mode % 2 == 0 } else { mode < 40 };
    let pulled = |k: u64| {
        bump(C::StreamPulled);
        flow_job(k)
    };
    match pool {
        Pool::Common(p) => stream_round!(p, kinds, ordered, half, n, pulled),
        Pool::NoQueue(p) => stream_round!(p, kinds, ordered, half, n, pulled),
        Pool::Smart(p) => stream_round!(p, kinds, ordered, half, n, |k: u64| {
            bump(C::StreamPulled);
            move || flow_job(k)
        }),
    }
}

/// The flow producer: `submit_with` without pause, a group and a stream every
/// `ROUND_EVERY` tasks, a sliding window of awaited handles.
async fn produce_flow(
    pool: Pool,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
    until: Option<Instant>,
) {
    let mut window: VecDeque<(u64, TaskHandle<u64>)> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) && until.is_none_or(|u| Instant::now() < u) {
        let x = splitmix(seq.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed));
        let n = TASKS.fetch_add(1, Ordering::Relaxed);
        if n % ROUND_EVERY == 0 {
            group_round(&pool, x, n).await;
        } else if n % ROUND_EVERY == ROUND_EVERY / 2 {
            stream_round(&pool, x, n).await;
        }
        bump(C::Attempts);
        match pool
            .submit_flow(x, flow_opts(n, splitmix(x ^ 0x5EED)))
            .await
        {
            Err(kind) => {
                refused(kind);
                if kind == SubmitErrorKind::Closed {
                    break;
                }
            }
            Ok(h) => {
                bump(C::Accepted);
                match x % 100 {
                    3 if !NO_ABORTS.load(Ordering::Relaxed) => {
                        bump(C::Aborted);
                        h.abort()
                    }
                    4..=13 => window.push_back((x, h)),
                    _ => {} // dropped: detached
                }
            }
        }
        if window.len() > 64 {
            let (k, h) = window.pop_front().unwrap();
            record(&h.await, k, Seen::Awaited);
        }
    }
    if until.is_none() {
        for (k, h) in window {
            record(&h.await, k, Seen::Awaited);
        }
    }
}

/// Exits the process with 3, printing the pool's stats, if no task finishes for 10 s
/// before `done` is set.
fn watchdog(name: String, pool: Pool, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = u64::MAX;
        let mut since = Instant::now();
        while !done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
            let s = pool.stats();
            let finished = s.completed + s.panicked + s.cancelled;
            if finished != last {
                last = finished;
                since = Instant::now();
            } else if since.elapsed() >= Duration::from_secs(10) && !done.load(Ordering::SeqCst) {
                eprintln!("{name}: WATCHDOG: no task finished for 10 s: {s}");
                eprintln!("{name}: WATCHDOG: {}", counters_line());
                std::process::exit(3);
            }
        }
    })
}

async fn soak_flow(name: &str, pool: Pool, a: &Args) -> bool {
    reset_counters();
    let wall = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let dog = watchdog(name.to_string(), pool.clone(), done.clone());
    let producers = Producers::start(&pool, a);

    let start = Instant::now();
    let total = Duration::from_secs(a.secs);
    let mut samples = Vec::new();
    let mut last_done = 0;
    let mut last_t = start;
    let mut ok = true;
    println!(
        "{name}: flow: {} s at full load, max_concurrency {}, queue {}, max_per_key {MAX_PER_KEY}, \
         weight_capacity {WEIGHT_CAPACITY}, rate_limit {} per {:?}",
        a.secs, a.concurrency, a.queue, a.rate, RATE_PER
    );
    while start.elapsed() < total {
        let left = total.saturating_sub(start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(a.every))).await;
        // The results seen first, then the stats: every one must be counted there.
        let seen_ok = get(C::AwaitedOk) + get(C::GroupOk) + get(C::StreamOk);
        let seen_panicked =
            get(C::AwaitedPanicked) + get(C::GroupPanicked) + get(C::StreamPanicked);
        let s = pool.stats();
        if s.completed < seen_ok || s.panicked < seen_panicked {
            println!(
                "{name}: MISMATCH stats {s} behind the handles seen resolved (ok {seen_ok}, panicked {seen_panicked})"
            );
            ok = false;
        }
        let sum = s.queued as u64 + s.running as u64 + s.completed + s.panicked + s.cancelled;
        if s.submitted != sum {
            println!("{name}: MISMATCH stats do not add up: {s}");
            ok = false;
        }
        let finished = s.completed + s.panicked + s.cancelled;
        let t = start.elapsed().as_secs_f64();
        let rss = rss_kib();
        samples.push((t, rss));
        let rate = (finished - last_done) as f64 / last_t.elapsed().as_secs_f64();
        println!(
            "{name}: t={t:>6.1}s finished={finished:>11} rate={rate:>9.0}/s rss={rss} KiB queued={} running={} \
             timed_out={} groups={} streams={}",
            s.queued,
            s.running,
            get(C::RefTimedOut),
            get(C::GroupRounds),
            get(C::StreamRounds)
        );
        last_done = finished;
        last_t = Instant::now();
    }
    producers.stop(name).await;
    pool.shutdown().await;
    done.store(true, Ordering::SeqCst);
    dog.join().expect("watchdog");
    let s = pool.stats();

    let refused_sum = get(C::RefTimedOut)
        + get(C::RefTooHeavy)
        + get(C::RefClosed)
        + get(C::RefWouldDeadlock)
        + get(C::RefNoRuntime)
        + get(C::RefOther);
    let mut problems = Vec::new();
    if get(C::Attempts) != get(C::Accepted) + refused_sum {
        problems.push("plain submits: attempts != accepted + refused".to_string());
    }
    let accepted_all = get(C::Accepted) + get(C::GroupAccepted) + get(C::StreamPulled);
    if s.submitted != accepted_all {
        problems.push(format!(
            "stats.submitted {} != accepted (plain + group + stream inputs) {accepted_all}",
            s.submitted
        ));
    }
    let lost = s.submitted as i128 - (s.completed + s.panicked + s.cancelled) as i128;
    if lost != 0 || s.queued != 0 || s.running != 0 {
        problems.push(format!("after shutdown: lost {lost}, {s}"));
    }
    // A job whose body ends (returns or panics) after an abort of its task was asked for
    // (an abort during its last poll, from another thread) is counted cancelled, as its
    // handle already said: so `completed <= RanOk`, `panicked <= RanPanic`, and the jobs
    // that ended uncounted were cancelled ones. With `--no-aborts` and no churn, exact.
    let raced = (get(C::RanOk) + get(C::RanPanic)) as i128 - (s.completed + s.panicked) as i128;
    let exact = NO_ABORTS.load(Ordering::Relaxed) && a.churn_ms.is_none();
    if s.completed > get(C::RanOk)
        || s.panicked > get(C::RanPanic)
        || raced > s.cancelled as i128
        || (exact && raced != 0)
    {
        problems.push(format!(
            "stats.completed {} / panicked {} against jobs that returned {} / panicked {}",
            s.completed,
            s.panicked,
            get(C::RanOk),
            get(C::RanPanic)
        ));
    }
    let seen_ok = get(C::AwaitedOk) + get(C::GroupOk) + get(C::StreamOk);
    let seen_panicked = get(C::AwaitedPanicked) + get(C::GroupPanicked) + get(C::StreamPanicked);
    let seen_cancelled =
        get(C::AwaitedCancelled) + get(C::GroupCancelled) + get(C::StreamCancelled);
    if s.completed < seen_ok || s.panicked < seen_panicked || s.cancelled < seen_cancelled {
        problems.push(format!(
            "stats {s} behind the results seen (ok {seen_ok}, panicked {seen_panicked}, cancelled {seen_cancelled})"
        ));
    }
    for c in [
        C::WrongValue,
        C::MissingItems,
        C::GroupRefused,
        C::StreamRefused,
    ] {
        if get(c) != 0 {
            problems.push(format!("{c:?} = {}", get(c)));
        }
    }
    if a.churn_ms.is_none() && get(C::RefNoRuntime) + get(C::RefClosed) + get(C::RefOther) != 0 {
        problems.push("refusals other than TimedOut / TooHeavy without churn".to_string());
    }

    let skip = samples.len() / 5;
    let slope = slope_kib_per_min(&samples[skip..]);
    let first = samples.get(skip).map(|s| s.1).unwrap_or(0);
    let last = samples.last().map(|s| s.1).unwrap_or(0);
    let (lo, hi) = samples
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s.1), hi.max(s.1)));
    println!(
        "{name}: SUMMARY flow secs={} wall={:.1}s submitted={} completed={} panicked={} cancelled={} lost={lost} \
         queued={} running={} attempts={} accepted={} refused: timed_out={} too_heavy={} closed={} \
         would_deadlock={} no_runtime={} other={} | aborted={} awaited ok/panicked/cancelled={}/{}/{} | \
         groups={} (dropped {}) group tasks={} ok/panicked/cancelled={}/{}/{} | streams={} (dropped {}) \
         stream inputs={} ok/panicked/cancelled={}/{}/{} | ended after their abort={raced} | rss_min={lo} rss_max={hi} rss_start={first} KiB \
         rss_end={last} KiB rss_slope={slope:+.1} KiB/min (least squares over {} samples after warm-up)",
        a.secs,
        wall.elapsed().as_secs_f64(),
        s.submitted,
        s.completed,
        s.panicked,
        s.cancelled,
        s.queued,
        s.running,
        get(C::Attempts),
        get(C::Accepted),
        get(C::RefTimedOut),
        get(C::RefTooHeavy),
        get(C::RefClosed),
        get(C::RefWouldDeadlock),
        get(C::RefNoRuntime),
        get(C::RefOther),
        get(C::Aborted),
        get(C::AwaitedOk),
        get(C::AwaitedPanicked),
        get(C::AwaitedCancelled),
        get(C::GroupRounds),
        get(C::GroupDropped),
        get(C::GroupAccepted),
        get(C::GroupOk),
        get(C::GroupPanicked),
        get(C::GroupCancelled),
        get(C::StreamRounds),
        get(C::StreamDropped),
        get(C::StreamPulled),
        get(C::StreamOk),
        get(C::StreamPanicked),
        get(C::StreamCancelled),
        samples.len() - skip
    );
    for p in &problems {
        println!("{name}: PROBLEM {p}");
    }
    ok && problems.is_empty()
}
