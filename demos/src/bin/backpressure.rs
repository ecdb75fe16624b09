//! The specification's backpressure demo (seed section 1.7) as a real program.
//!
//! A million small tasks, each carrying a ~400-byte string (`"task" * 100 + "_i"`), at a
//! concurrency of 1000, run four ways:
//!
//! - `common`, `no-queue`, `smart`: the producer loop does `pool.submit(task).await` and
//!   drops the handle. `submit` waits while the pool is full, so only about
//!   `concurrency + queue` tasks exist at any moment: memory does not depend on the count.
//! - `semaphore`: the naive pattern. Spawn every task up front, each waits for a
//!   `tokio::sync::Semaphore` permit inside, then await every `JoinHandle`. Concurrency is
//!   limited just the same, but all million tasks (and their payloads) exist at once.
//!
//! `compare` (the default) runs each of them as a child process of this binary, so each
//! peak memory is its own, and prints a table.

use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use nb_aiopool::{CommonAioPool, NoQueueAioPool, SmartAioPool};
use nb_aiopool_demos::child::run_self;
use nb_aiopool_demos::live::{want_bar, Live};
use nb_aiopool_demos::memory::{self, human_bytes, EXIT_REFUSED};
use nb_aiopool_demos::report::{table, ResultLine};
use tokio::sync::Semaphore;

/// Estimated bytes one naive task costs besides its payload: the spawned tokio task (header,
/// scheduler links, the future's state with its `Arc<Semaphore>` and the pending `acquire`)
/// and its `JoinHandle` in the list. Measured on x86-64 Linux with `sleep` tasks (the
/// largest future here) at ~580 B with an empty payload; rounded up.
const NAIVE_TASK_OVERHEAD: u64 = 640;

/// Estimated bytes of a naive task's payload: measured ~1.3 KiB per task at 400 B (the
/// string's allocation plus allocator overhead and fragmentation of a million live
/// allocations: about twice the string), so count it twice.
///
/// Checked arithmetic: a payload too large to count is estimated at `u64::MAX`, which the
/// memory guard refuses.
fn naive_task_bytes(payload_bytes: usize) -> u64 {
    (payload_bytes as u64)
        .checked_add(24)
        .and_then(|b| b.checked_next_multiple_of(16))
        .and_then(|b| b.checked_mul(2))
        .and_then(|b| b.checked_add(NAIVE_TASK_OVERHEAD))
        .unwrap_or(u64::MAX)
}

/// Largest `--concurrency` and `--queue-size`: their sum stays far below what tokio's
/// `Semaphore` (and the pools built on it) accept.
const MAX_CONCURRENCY: u64 = 100_000_000;
/// Largest `--payload-bytes`: 1 GiB (one string per task).
const MAX_PAYLOAD_BYTES: u64 = 1 << 30;
/// Largest `--threads`.
const MAX_THREADS: u64 = 1024;
/// Largest `--monitor-interval-ms`: a day.
const MAX_MONITOR_INTERVAL_MS: u64 = 24 * 3600 * 1000;
/// Largest `N` of `--kind sleep:N`: a day (a longer one is a run that never ends).
const MAX_SLEEP_MS: u64 = 24 * 3600 * 1000;

#[derive(Parser, Debug)]
#[command(
    name = "backpressure",
    about = "Pool with backpressure vs \"spawn everything + Semaphore\": memory, CPU and time \
             for a million small tasks"
)]
struct Args {
    /// What to run: one mode, or `compare` to run several, each in its own process.
    #[arg(long, value_enum, default_value_t = Mode::Compare)]
    mode: Mode,
    /// Number of tasks.
    #[arg(long, default_value_t = 1_000_000)]
    tasks: u64,
    /// Bytes of payload each task carries (the seed's `"task" * 100` is 400), plus `_<i>`
    /// (at most 1 GiB).
    #[arg(
        long,
        default_value_t = 400,
        value_parser = RangedU64ValueParser::<usize>::new().range(0..=MAX_PAYLOAD_BYTES)
    )]
    payload_bytes: usize,
    /// Tasks running at once (pool size / semaphore permits), 1 to 100,000,000.
    #[arg(
        long,
        default_value_t = 1000,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_CONCURRENCY)
    )]
    concurrency: usize,
    /// Queue size of the `common` and `smart` pools, at most 100,000,000 [default: the
    /// concurrency]; not with `--mode no-queue` or `--mode semaphore`, which have none.
    #[arg(
        long,
        value_parser = RangedU64ValueParser::<usize>::new().range(0..=MAX_CONCURRENCY)
    )]
    queue_size: Option<usize>,
    /// What a task does: `tiny` (one `yield_now`) or `sleep:N` (sleep N milliseconds, at
    /// most a day).
    #[arg(long, default_value = "tiny")]
    kind: TaskKind,
    /// Tokio runtime: `multi` (multi-thread) or `current` (current-thread).
    #[arg(long, value_enum, default_value_t = Flavor::Multi)]
    runtime: Flavor,
    /// Worker threads of the multi-thread runtime, 1 to 1024 [default: one per core]; not
    /// with `--runtime current`.
    #[arg(
        long,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_THREADS)
    )]
    threads: Option<usize>,
    /// Print the process monitor's line every this many milliseconds (0: never; at most a
    /// day).
    #[arg(
        long,
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(0..=MAX_MONITOR_INTERVAL_MS)
    )]
    monitor_interval_ms: u64,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Let a mode run even when its estimated memory exceeds half of the available memory
    /// (`semaphore`: every task at once; the pools: the tasks they hold at once).
    #[arg(long)]
    i_know_it_may_exhaust_memory: bool,
    /// With `--mode compare` (only): the modes to run, in order (`compare` is not one).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "common,no-queue,smart,semaphore"
    )]
    modes: Vec<Mode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `CommonAioPool`: bounded queue, fixed workers.
    Common,
    /// `NoQueueAioPool`: `submit` waits for a free slot.
    NoQueue,
    /// `SmartAioPool`: recipes, elastic workers.
    Smart,
    /// The naive pattern: spawn all tasks, each takes a `Semaphore` permit inside.
    Semaphore,
    /// Run the other modes one after another as child processes and compare.
    Compare,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Common => "common",
            Mode::NoQueue => "no-queue",
            Mode::Smart => "smart",
            Mode::Semaphore => "semaphore",
            Mode::Compare => "compare",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Flavor {
    Multi,
    Current,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskKind {
    Tiny,
    Sleep(Duration),
}

impl FromStr for TaskKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "tiny" {
            return Ok(TaskKind::Tiny);
        }
        let ms = s
            .strip_prefix("sleep:")
            .and_then(|ms| ms.parse::<u64>().ok())
            .ok_or_else(|| format!("expected `tiny` or `sleep:<milliseconds>`, got `{s}`"))?;
        if ms > MAX_SLEEP_MS {
            return Err(format!(
                "`sleep:{ms}`: a task sleeps at most {MAX_SLEEP_MS} ms (a day)"
            ));
        }
        Ok(TaskKind::Sleep(Duration::from_millis(ms)))
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskKind::Tiny => f.write_str("tiny"),
            TaskKind::Sleep(d) => write!(f, "sleep:{}", d.as_millis()),
        }
    }
}

/// Tasks finished, in every mode (the progress bar reads it too).
static COMPLETED: AtomicU64 = AtomicU64::new(0);
/// Sum of the payload lengths the tasks saw: proves each task really got its payload.
static PAYLOAD_SEEN: AtomicU64 = AtomicU64::new(0);

/// The seed's `f"{'task' * 100}_{i}"`, for any payload size.
fn payload(i: u64, bytes: usize) -> String {
    let mut s = "task".repeat(bytes / 4 + 1);
    s.truncate(bytes);
    s.push('_');
    s.push_str(&i.to_string());
    s
}

/// The seed's `aio_task`: do the (tiny) work, use the payload, count.
async fn job<P: AsRef<str>>(payload: P, kind: TaskKind) {
    match kind {
        TaskKind::Tiny => tokio::task::yield_now().await,
        TaskKind::Sleep(d) => tokio::time::sleep(d).await,
    }
    // Relaxed: plain counters, read after every task has been awaited or shut down.
    PAYLOAD_SEEN.fetch_add(payload.as_ref().len() as u64, Ordering::Relaxed);
    COMPLETED.fetch_add(1, Ordering::Relaxed);
}

/// Runs the producer for one mode; returns (seconds until the producer loop ended, sum of
/// payload lengths it created).
async fn produce(mode: Mode, args: &Args, queue: usize) -> Result<(f64, u64), String> {
    let start = Instant::now();
    let (n, bytes, kind) = (args.tasks, args.payload_bytes, args.kind);
    let mut expected = 0u64;
    let produced_s;
    match mode {
        Mode::Common => {
            let pool = CommonAioPool::new(args.concurrency, queue);
            for i in 0..n {
                let p = payload(i, bytes);
                expected = expected.wrapping_add(p.len() as u64);
                // Waits while the pool is full: this is the backpressure. The handle is
                // detached (the job still runs): no list of a million futures.
                pool.submit(job(p, kind))
                    .await
                    .map_err(|e| format!("submit failed: {e}"))?
                    .detach();
            }
            produced_s = start.elapsed().as_secs_f64();
            pool.shutdown().await;
        }
        Mode::NoQueue => {
            let pool = NoQueueAioPool::new(args.concurrency);
            for i in 0..n {
                let p = payload(i, bytes);
                expected = expected.wrapping_add(p.len() as u64);
                pool.submit(job(p, kind))
                    .await
                    .map_err(|e| format!("submit failed: {e}"))?
                    .detach();
            }
            produced_s = start.elapsed().as_secs_f64();
            pool.wait().await;
            pool.shutdown().await;
        }
        Mode::Smart => {
            let pool = SmartAioPool::builder()
                .max_concurrency(args.concurrency)
                .max_queue_size(queue)
                .build();
            for i in 0..n {
                // A recipe may be run again, so it keeps the payload and each run borrows
                // a cheap clone of it.
                let p: Arc<str> = payload(i, bytes).into();
                expected = expected.wrapping_add(p.len() as u64);
                pool.submit(move || job(p.clone(), kind))
                    .await
                    .map_err(|e| format!("submit failed: {e}"))?
                    .detach();
            }
            produced_s = start.elapsed().as_secs_f64();
            pool.shutdown().await;
        }
        Mode::Semaphore => {
            // The naive pattern of the seed's `no_pool_main`.
            let semaphore = Arc::new(Semaphore::new(args.concurrency));
            let mut tasks = Vec::new();
            for i in 0..n {
                let p = payload(i, bytes);
                expected = expected.wrapping_add(p.len() as u64);
                let semaphore = semaphore.clone();
                tasks.push(tokio::spawn(async move {
                    let _permit = semaphore.acquire().await.expect("never closed");
                    job(p, kind).await
                }));
            }
            produced_s = start.elapsed().as_secs_f64();
            for task in tasks {
                task.await.map_err(|e| format!("task failed: {e}"))?;
            }
        }
        Mode::Compare => unreachable!("compare runs children"),
    }
    Ok((produced_s, expected))
}

fn run_one(mode: Mode, args: &Args) -> ExitCode {
    let queue = args.queue_size.unwrap_or(args.concurrency);
    let each = naive_task_bytes(args.payload_bytes);
    let guard = if mode == Mode::Semaphore {
        memory::check_naive(
            "spawn-everything + Semaphore",
            args.tasks,
            each,
            memory::available_bytes(),
            args.i_know_it_may_exhaust_memory,
        )
    } else {
        // A pool holds its running and queued tasks, plus the one being submitted.
        let held = match mode {
            Mode::NoQueue => args.concurrency,
            _ => args.concurrency + queue,
        } as u64
            + 1;
        memory::check_held(
            mode.name(),
            held.min(args.tasks),
            each,
            memory::available_bytes(),
            args.i_know_it_may_exhaust_memory,
        )
    };
    if let Err(message) = guard {
        nb_aiopool_demos::errln!("{message}");
        return ExitCode::from(EXIT_REFUSED as u8);
    }

    let mut builder = match args.runtime {
        Flavor::Multi => tokio::runtime::Builder::new_multi_thread(),
        Flavor::Current => tokio::runtime::Builder::new_current_thread(),
    };
    if let (Flavor::Multi, Some(threads)) = (args.runtime, args.threads) {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            nb_aiopool_demos::errln!("error: cannot build the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    let every =
        (args.monitor_interval_ms > 0).then(|| Duration::from_millis(args.monitor_interval_ms));
    let live = match Live::start(
        mode.name(),
        "tasks",
        args.tasks,
        &COMPLETED,
        want_bar(args.no_progress),
        every,
    ) {
        Ok(live) => live,
        Err(e) => {
            nb_aiopool_demos::errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let base = live.sample_now();
    live.println(&format!(
        "{}: {} tasks ({} kind, {} B payload), concurrency {}{}",
        mode.name(),
        args.tasks,
        args.kind,
        args.payload_bytes,
        args.concurrency,
        match mode {
            Mode::Common | Mode::Smart => format!(", queue {queue}"),
            _ => String::new(),
        }
    ));

    let start = Instant::now();
    let outcome = runtime.block_on(produce(mode, args, queue));
    let wall = start.elapsed().as_secs_f64();
    let last = live.finish();
    drop(runtime);

    let (produced_s, expected) = match outcome {
        Ok(v) => v,
        Err(e) => {
            nb_aiopool_demos::errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let completed = COMPLETED.load(Ordering::Relaxed);
    let seen = PAYLOAD_SEEN.load(Ordering::Relaxed);
    let (Some(base), Some(last)) = (base, last) else {
        nb_aiopool_demos::errln!("error: the process monitor gave no reading");
        return ExitCode::FAILURE;
    };

    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut line = ResultLine::new(mode.name());
    line.push("tasks", args.tasks)
        .push("completed", completed)
        .push("payload_ok", u8::from(seen == expected))
        .push("concurrency", args.concurrency)
        .push(
            "queue",
            match mode {
                Mode::Common | Mode::Smart => queue,
                _ => 0,
            },
        )
        .push("payload_bytes", args.payload_bytes)
        .push("kind", args.kind)
        .push("wall_s", format!("{wall:.3}"))
        .push("produce_s", format!("{produced_s:.3}"))
        .push(
            "tasks_per_s",
            format!("{:.0}", completed as f64 / wall.max(1e-9)),
        )
        .push("base_rss_mib", format!("{:.1}", mib(base.rss_bytes)))
        .push("peak_rss_mib", format!("{:.1}", mib(last.peak_rss_bytes)))
        .push("cpu_s", format!("{:.2}", last.cpu_seconds))
        .push(
            "bytes_per_task",
            format!(
                "{:.0}",
                last.peak_rss_bytes.saturating_sub(base.rss_bytes) as f64
                    / args.tasks.max(1) as f64
            ),
        );
    nb_aiopool_demos::outln!("{line}");

    if completed != args.tasks || seen != expected {
        nb_aiopool_demos::errln!(
            "error: {completed} of {} tasks completed, payload bytes seen {seen} of {expected}",
            args.tasks
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn child_args(mode: Mode, args: &Args) -> Vec<String> {
    let mut v = vec![
        "--mode".to_string(),
        mode.name().to_string(),
        format!("--tasks={}", args.tasks),
        format!("--payload-bytes={}", args.payload_bytes),
        format!("--concurrency={}", args.concurrency),
        format!("--kind={}", args.kind),
        format!(
            "--runtime={}",
            match args.runtime {
                Flavor::Multi => "multi",
                Flavor::Current => "current",
            }
        ),
        format!("--monitor-interval-ms={}", args.monitor_interval_ms),
    ];
    // Only the modes with a queue take one (the others refuse the flag).
    if let (Some(q), Mode::Common | Mode::Smart) = (args.queue_size, mode) {
        v.push(format!("--queue-size={q}"));
    }
    if let Some(t) = args.threads {
        v.push(format!("--threads={t}"));
    }
    if args.no_progress {
        v.push("--no-progress".into());
    }
    if args.i_know_it_may_exhaust_memory {
        v.push("--i-know-it-may-exhaust-memory".into());
    }
    v
}

fn compare(args: &Args) -> ExitCode {
    let modes: Vec<Mode> = args
        .modes
        .iter()
        .copied()
        .filter(|m| *m != Mode::Compare)
        .collect();
    nb_aiopool_demos::errln!(
        "backpressure compare: {} tasks, {} B payload, concurrency {}, kind {}; modes {} \
         (each in its own process)",
        args.tasks,
        args.payload_bytes,
        args.concurrency,
        args.kind,
        modes
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut rows = Vec::new();
    let mut results: Vec<ResultLine> = Vec::new();
    let mut failed = false;
    for mode in modes {
        nb_aiopool_demos::errln!();
        let run = match run_self(&child_args(mode, args)) {
            Ok(run) => run,
            Err(e) => {
                nb_aiopool_demos::errln!("error: cannot start the {} child: {e}", mode.name());
                return ExitCode::FAILURE;
            }
        };
        let result = run.results.into_iter().find(|r| r.mode() == mode.name());
        match (run.status.code(), result) {
            (Some(0), Some(r)) => {
                let cell = |k: &str| r.get(k).unwrap_or("?").to_string();
                let growth =
                    r.num("peak_rss_mib").unwrap_or(0.0) - r.num("base_rss_mib").unwrap_or(0.0);
                rows.push(vec![
                    mode.name().to_string(),
                    cell("completed"),
                    cell("wall_s"),
                    cell("tasks_per_s"),
                    cell("peak_rss_mib"),
                    format!("{growth:.1}"),
                    cell("cpu_s"),
                ]);
                results.push(r);
            }
            (Some(code), _) if code == EXIT_REFUSED => {
                let mut row = vec![mode.name().to_string(), "refused".to_string()];
                row.resize(7, "-".to_string());
                rows.push(row);
            }
            (code, _) => {
                failed = true;
                let mut row = vec![
                    mode.name().to_string(),
                    format!(
                        "FAILED ({})",
                        code.map_or("signal".to_string(), |c| c.to_string())
                    ),
                ];
                row.resize(7, "-".to_string());
                rows.push(row);
            }
        }
    }

    nb_aiopool_demos::errln!();
    nb_aiopool_demos::outln!(
        "\nbackpressure: {} tasks x {} B payload, concurrency {}, kind {}",
        args.tasks,
        args.payload_bytes,
        args.concurrency,
        args.kind
    );
    nb_aiopool_demos::out!(
        "{}",
        table(
            &[
                "mode",
                "completed",
                "wall s",
                "tasks/s",
                "peak RSS MiB",
                "growth MiB",
                "CPU s"
            ],
            &rows
        )
    );
    let peak = |name: &str| {
        results
            .iter()
            .find(|r| r.mode() == name)
            .and_then(|r| r.num("peak_rss_mib"))
    };
    if let Some(naive) = peak("semaphore") {
        for pool in ["common", "no-queue", "smart"] {
            if let Some(p) = peak(pool) {
                nb_aiopool_demos::outln!(
                    "peak RSS: semaphore / {pool} = {:.1}x ({} vs {})",
                    naive / p,
                    human_bytes((naive * 1048576.0) as u64),
                    human_bytes((p * 1048576.0) as u64)
                );
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Parses the command line; what clap's attributes cannot say is checked here, with the
/// same kind of message and exit code (2).
fn parse_args() -> Args {
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let usage =
        |kind: ErrorKind, message: &str| -> ! { Args::command().error(kind, message).exit() };
    if args.modes.contains(&Mode::Compare) {
        usage(
            ErrorKind::InvalidValue,
            "--modes lists the modes `compare` runs: common, no-queue, smart, semaphore \
             (`compare` itself is not one)",
        );
    }
    if args.runtime == Flavor::Current && args.threads.is_some() {
        usage(
            ErrorKind::ArgumentConflict,
            "--threads sizes the multi-thread runtime; it does not apply to --runtime current",
        );
    }
    if matches!(args.mode, Mode::NoQueue | Mode::Semaphore) && args.queue_size.is_some() {
        usage(
            ErrorKind::ArgumentConflict,
            &format!(
                "--queue-size sizes the queue of the common and smart pools; --mode {} has \
                 none",
                args.mode.name()
            ),
        );
    }
    if args.mode != Mode::Compare && matches.value_source("modes") == Some(ValueSource::CommandLine)
    {
        usage(
            ErrorKind::ArgumentConflict,
            &format!(
                "--modes only applies to --mode compare (the default), not to --mode {}",
                args.mode.name()
            ),
        );
    }
    args
}

fn main() -> ExitCode {
    let args = parse_args();
    match args.mode {
        Mode::Compare => compare(&args),
        mode => run_one(mode, &args),
    }
}
