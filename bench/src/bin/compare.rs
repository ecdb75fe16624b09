//! Side-by-side comparison of nb-aiopool's pools and the hand-written tokio patterns.
//!
//! Each run of each variant happens in its own child process (this binary re-executed
//! with `--child VARIANT`), so its peak RSS and CPU time are its own. Variants alternate
//! (A B C D, A B C D, ...) for `--rounds` rounds; the table shows medians.
//!
//! ```text
//! cargo run --release -p nb-aiopool-bench --bin compare -- --rounds 5
//! cargo run --release -p nb-aiopool-bench --bin compare -- --workload sleep:5 -n 200000 --rounds 3
//! cargo run --release -p nb-aiopool-bench --bin compare --features mimalloc -- --rounds 3
//! ```
//!
//! With the `mimalloc` feature this binary (the application, never the library) makes
//! mimalloc its global allocator, so every variant and the Rust side of every child uses it.
//!
//! With `obs-tracing` / `obs-metrics` the pools are built with the library's `tracing` /
//! `metrics` features, and `--observe=registry|fmt` installs a subscriber and a recorder
//! before the run (see `Args::observe`): what the features cost per task, counted with
//! `bench/instructions.sh` (`… 100000 --current-thread --observe=registry -- BIN`).
#![forbid(unsafe_code)]

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator this binary was built with (printed in the header and the JSON).
const ALLOCATOR: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "system"
};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::{Parser, ValueEnum};
use nb_aiopool_bench::{
    measure, run_variant, Params, Payloads, Workload, FLOW_VARIANTS, PROBE_VARIANTS,
    SMART_VARIANTS, SURFACE_VARIANTS, TOKIO_PATTERNS, VARIANTS,
};

/// Above this many tasks `spawn-sem-inside` is skipped unless `--force` (it keeps every
/// task alive at once: about 1 KiB each, so 10M tasks need more than 10 GiB).
const SPAWN_ALL_LIMIT: u64 = 2_000_000;

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Compare nb-aiopool's pools with hand-written tokio patterns (and the Python nb_aiopool)"
)]
struct Args {
    /// `tiny` (one yield_now) or `sleep:MS`.
    #[arg(long, default_value = "tiny")]
    workload: Workload,
    /// Number of jobs.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    tasks: u64,
    /// Maximum number of jobs running at once.
    #[arg(short = 'c', long, default_value_t = 1000)]
    concurrency: usize,
    /// Queue size for the pools and mpsc-workers' channel [default: the concurrency].
    #[arg(short = 'q', long)]
    queue: Option<usize>,
    /// Worker threads of the multi-thread runtime.
    #[arg(short = 't', long, default_value_t = 2)]
    threads: usize,
    /// Use a current-thread runtime instead of a multi-thread one.
    #[arg(long)]
    current_thread: bool,
    /// Run the producer as a task spawned on the runtime (on a multi-thread runtime, on
    /// one of its workers, beside the jobs) instead of in `block_on` on the main thread.
    #[arg(long)]
    spawned_producer: bool,
    /// Payload prefix length: each job's payload is `"task"` repeated to this many bytes,
    /// then `_{i}` (400 gives the seed's 407-byte payloads).
    #[arg(long, default_value_t = 400)]
    payload_bytes: usize,
    /// Comma-separated variants to run [default: all].
    #[arg(long, value_delimiter = ',')]
    variants: Vec<String>,
    /// Rounds: every variant runs once per round, in turn.
    #[arg(short = 'r', long, default_value_t = 3)]
    rounds: usize,
    /// Also run the Python nb_aiopool peer (bench/python/run_peer.sh) each round.
    #[arg(long)]
    python: bool,
    /// Run spawn-sem-inside even above 2,000,000 tasks (needs about 1 KiB per task).
    #[arg(long)]
    force: bool,
    /// Write every run and the medians as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the medians as CSV to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Before each run, wait up to this many seconds for the machine to be idle (under 15%
    /// busy over half a second); 0 disables the wait.
    #[arg(long, default_value_t = 120)]
    quiet_wait: u64,
    /// Before the run, install an observer for each observability feature this binary was
    /// built with (`obs-tracing`, `obs-metrics`): for `tracing`, `registry` installs
    /// tracing-subscriber's `Registry` with no layer (it keeps every span), `fmt` its `fmt`
    /// layer over it writing to `io::sink` (the usual `fmt().init()`, INFO and up); for
    /// `metrics`, either installs metrics-util's `DebuggingRecorder`. `none`: the features
    /// (if built) are on and nothing is installed.
    #[arg(long, value_enum, default_value_t = Observe::None)]
    observe: Observe,
    /// Internal: run one variant in this process and print its RESULT line.
    #[arg(long, hide = true)]
    child: Option<String>,
}

/// What `--observe` installs before the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Observe {
    None,
    Registry,
    Fmt,
}

/// The features' observers, installed before the pool is built (a pool registers its
/// metrics handles with the recorder in place at its build). Returns the recorder's
/// snapshotter, to check after the run that it saw every task.
fn install_observers(observe: Observe) -> Option<Box<dyn Fn() -> u64>> {
    if observe == Observe::None {
        return None;
    }
    if !cfg!(any(feature = "obs-tracing", feature = "obs-metrics")) {
        panic!("--observe needs a build with the obs-tracing or obs-metrics feature");
    }
    #[cfg(feature = "obs-tracing")]
    {
        use tracing_subscriber::util::SubscriberInitExt;
        match observe {
            Observe::Registry => tracing_subscriber::registry().init(),
            Observe::Fmt => tracing_subscriber::fmt()
                .with_writer(std::io::sink)
                .finish()
                .init(),
            Observe::None => unreachable!(),
        }
    }
    #[cfg(feature = "obs-metrics")]
    let completed: Option<Box<dyn Fn() -> u64>> = {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().expect("install the metrics recorder");
        Some(Box::new(move || {
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .filter(|(key, ..)| key.key().name() == "nb_aiopool_tasks_completed")
                .map(|(.., value)| match value {
                    DebugValue::Counter(n) => n,
                    _ => 0,
                })
                .sum()
        }))
    };
    #[cfg(not(feature = "obs-metrics"))]
    let completed = None;
    completed
}

impl Args {
    fn queue(&self) -> usize {
        self.queue.unwrap_or(self.concurrency)
    }

    fn runtime_label(&self) -> String {
        let producer = if self.spawned_producer {
            "+spawned"
        } else {
            ""
        };
        if self.current_thread {
            format!("current{producer}")
        } else {
            format!("multi:{}{producer}", self.threads)
        }
    }

    /// The arguments a child needs to run the same configuration.
    fn child_args(&self) -> Vec<String> {
        let mut a = vec![
            format!("--workload={}", self.workload),
            format!("--tasks={}", self.tasks),
            format!("--concurrency={}", self.concurrency),
            format!("--queue={}", self.queue()),
            format!("--threads={}", self.threads),
            format!("--payload-bytes={}", self.payload_bytes),
        ];
        if self.current_thread {
            a.push("--current-thread".into());
        }
        if self.spawned_producer {
            a.push("--spawned-producer".into());
        }
        if self.observe != Observe::None {
            a.push(format!(
                "--observe={}",
                self.observe
                    .to_possible_value()
                    .expect("a value")
                    .get_name()
            ));
        }
        a
    }
}

fn main() {
    let args = Args::parse();
    if let Some(variant) = args.child.clone() {
        child(&args, &variant);
    } else {
        parent(&args);
    }
}

/// Runs one variant and prints one `RESULT key=value ...` line on stdout.
fn child(args: &Args, variant: &str) {
    let params = Params {
        tasks: args.tasks,
        concurrency: args.concurrency,
        queue: args.queue(),
        workload: args.workload,
        payloads: Payloads::new(args.payload_bytes),
    };
    let recorded = install_observers(args.observe);
    let rt = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("build runtime");

    // The CPU window holds the run and the readings around it, nothing else: the tick
    // rate is looked up before it (its first look-up ran `getconf`, a child process), and
    // every CPU reading is brought up to date first (`measure::process_cpu_seconds`; a
    // stale first reading counted CPU spent before the window). It lies within the
    // wall-clock window: on one thread, CPU never exceeds wall time.
    measure::warm_up();
    let t0 = Instant::now();
    let cpu0 = measure::process_cpu_seconds();
    let ticks0 = measure::process_cpu_seconds_ticks();
    let cs0 = measure::context_switches();
    let completed = if args.spawned_producer {
        let variant = variant.to_string();
        rt.block_on(async move {
            tokio::spawn(async move { run_variant(&variant, &params).await })
                .await
                .expect("the producer task panicked")
        })
    } else {
        rt.block_on(run_variant(variant, &params))
    };
    let cpu = measure::process_cpu_seconds() - cpu0;
    let cpu_ticks = measure::process_cpu_seconds_ticks() - ticks0;
    // Threads started during the run (async-executor's runners) start from zero.
    let cs1 = measure::context_switches();
    let wall = t0.elapsed().as_secs_f64();
    let (vcs, ics) = (cs1.0.saturating_sub(cs0.0), cs1.1.saturating_sub(cs0.1));
    let peak_kib = measure::peak_rss_kib();
    assert_eq!(
        completed, args.tasks,
        "{variant}: {completed} of {} jobs completed",
        args.tasks
    );
    // The hand-written patterns and the probes use no pool: nothing for the recorder.
    let on_the_library = !TOKIO_PATTERNS.contains(&variant) && !PROBE_VARIANTS.contains(&variant);
    if let Some(recorded) = recorded.filter(|_| on_the_library) {
        let counted = recorded();
        assert_eq!(
            counted, args.tasks,
            "{variant}: the recorder counted {counted} of {} completions",
            args.tasks
        );
    }
    println!(
        "RESULT variant={variant} workload={} tasks={} concurrency={} queue={} runtime={} \
         wall_s={wall:.4} tasks_per_s={:.0} cpu_s={cpu:.4} cpu_ticks_s={cpu_ticks:.2} cpu_us_per_task={:.4} \
         peak_rss_mib={:.2} vol_cs={vcs} invol_cs={ics} allocator={ALLOCATOR} completed={completed}",
        args.workload,
        args.tasks,
        args.concurrency,
        args.queue(),
        args.runtime_label(),
        args.tasks as f64 / wall,
        cpu * 1e6 / args.tasks as f64,
        peak_kib as f64 / 1024.0,
    );
    // Skip the runtime's shutdown: the measurement is done.
    std::mem::forget(rt);
}

/// One measured run, parsed from a RESULT line.
#[derive(Clone, Debug)]
struct Run {
    round: usize,
    variant: String,
    wall_s: f64,
    tasks_per_s: f64,
    cpu_us_per_task: f64,
    peak_rss_mib: f64,
    vol_cs: f64,
    invol_cs: f64,
    load1: f64,
    busy_pct: f64,
}

fn parse_result(line: &str) -> Option<BTreeMap<String, String>> {
    let rest = line.trim().strip_prefix("RESULT ")?;
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn run_once(args: &Args, variant: &str) -> Result<BTreeMap<String, String>, String> {
    let mut cmd = if variant == "python" {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/run_peer.sh");
        let mut c = Command::new("bash");
        c.arg(script).args([
            format!("--workload={}", args.workload),
            format!("--tasks={}", args.tasks),
            format!("--concurrency={}", args.concurrency),
            format!("--queue={}", args.queue()),
            format!("--payload-bytes={}", args.payload_bytes),
        ]);
        c
    } else {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut c = Command::new(exe);
        c.args(args.child_args()).arg(format!("--child={variant}"));
        c
    };
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("spawn {variant}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{variant} failed ({}): {stdout}", out.status));
    }
    stdout
        .lines()
        .find_map(parse_result)
        .ok_or_else(|| format!("{variant}: no RESULT line in {stdout:?}"))
}

fn field(m: &BTreeMap<String, String>, k: &str) -> f64 {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Medians of one variant.
#[derive(Clone, Debug)]
struct Summary {
    variant: String,
    runs: usize,
    wall_s: f64,
    tasks_per_s: f64,
    spread_pct: f64,
    cpu_us_per_task: f64,
    peak_rss_mib: f64,
    vol_cs: f64,
    invol_cs: f64,
    vs_best_tokio: f64,
    vs_joinset: f64,
    vs_python: f64,
}

fn summarize(variants: &[String], runs: &[Run]) -> Vec<Summary> {
    let mut out: Vec<Summary> = variants
        .iter()
        .map(|v| {
            let mine: Vec<&Run> = runs.iter().filter(|r| &r.variant == v).collect();
            let tps: Vec<f64> = mine.iter().map(|r| r.tasks_per_s).collect();
            let med = median(tps.clone());
            let lo = tps.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = tps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            Summary {
                variant: v.clone(),
                runs: mine.len(),
                wall_s: median(mine.iter().map(|r| r.wall_s).collect()),
                tasks_per_s: med,
                spread_pct: if mine.is_empty() {
                    f64::NAN
                } else {
                    (hi - lo) / med * 100.0
                },
                cpu_us_per_task: median(mine.iter().map(|r| r.cpu_us_per_task).collect()),
                peak_rss_mib: median(mine.iter().map(|r| r.peak_rss_mib).collect()),
                vol_cs: median(mine.iter().map(|r| r.vol_cs).collect()),
                invol_cs: median(mine.iter().map(|r| r.invol_cs).collect()),
                vs_best_tokio: f64::NAN,
                vs_joinset: f64::NAN,
                vs_python: f64::NAN,
            }
        })
        .collect();
    let tps_of = |name: &str, s: &[Summary]| {
        s.iter()
            .find(|x| x.variant == name)
            .map_or(f64::NAN, |x| x.tasks_per_s)
    };
    let best_tokio = out
        .iter()
        .filter(|s| TOKIO_PATTERNS.contains(&s.variant.as_str()) && !s.tasks_per_s.is_nan())
        .map(|s| s.tasks_per_s)
        .fold(f64::NAN, f64::max);
    let joinset = tps_of("sem-before-joinset", &out);
    let python = tps_of("python", &out);
    for s in &mut out {
        s.vs_best_tokio = s.tasks_per_s / best_tokio;
        s.vs_joinset = s.tasks_per_s / joinset;
        s.vs_python = s.tasks_per_s / python;
    }
    out
}

fn fmt_num(x: f64, decimals: usize) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.decimals$}")
    }
}

fn markdown_table(s: &[Summary]) -> String {
    let mut t = String::from(
        "| variant | runs | wall s | tasks/s | spread % | CPU µs/task | peak RSS MiB | vol. ctx sw | invol. ctx sw | x best pattern | x sem-before-joinset | x python |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in s {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.variant,
            r.runs,
            fmt_num(r.wall_s, 3),
            fmt_num(r.tasks_per_s, 0),
            fmt_num(r.spread_pct, 1),
            fmt_num(r.cpu_us_per_task, 3),
            fmt_num(r.peak_rss_mib, 1),
            fmt_num(r.vol_cs, 0),
            fmt_num(r.invol_cs, 0),
            fmt_num(r.vs_best_tokio, 2),
            fmt_num(r.vs_joinset, 2),
            fmt_num(r.vs_python, 1),
        );
    }
    t
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

fn to_json(args: &Args, runs: &[Run], summary: &[Summary]) -> String {
    let mut j = String::new();
    let _ = write!(
        j,
        "{{\n  \"config\": {{\"workload\": \"{}\", \"tasks\": {}, \"concurrency\": {}, \"queue\": {}, \
         \"runtime\": \"{}\", \"payload_bytes\": {}, \"rounds\": {}, \"allocator\": \"{ALLOCATOR}\"}},\n  \"runs\": [\n",
        args.workload,
        args.tasks,
        args.concurrency,
        args.queue(),
        args.runtime_label(),
        args.payload_bytes,
        args.rounds
    );
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            j,
            "    {{\"round\": {}, \"variant\": \"{}\", \"wall_s\": {}, \"tasks_per_s\": {}, \
             \"cpu_us_per_task\": {}, \"peak_rss_mib\": {}, \"vol_cs\": {}, \"invol_cs\": {}, \
             \"load1\": {}, \"busy_pct_before\": {}}}{}",
            r.round,
            r.variant,
            json_num(r.wall_s),
            json_num(r.tasks_per_s),
            json_num(r.cpu_us_per_task),
            json_num(r.peak_rss_mib),
            json_num(r.vol_cs),
            json_num(r.invol_cs),
            json_num(r.load1),
            json_num(r.busy_pct),
            if i + 1 < runs.len() { "," } else { "" }
        );
    }
    j.push_str("  ],\n  \"medians\": [\n");
    for (i, s) in summary.iter().enumerate() {
        let _ = writeln!(
            j,
            "    {{\"variant\": \"{}\", \"runs\": {}, \"wall_s\": {}, \"tasks_per_s\": {}, \
             \"spread_pct\": {}, \"cpu_us_per_task\": {}, \"peak_rss_mib\": {}, \
             \"vol_cs\": {}, \"invol_cs\": {}, \"vs_best_tokio\": {}, \"vs_sem_before_joinset\": {}, \"vs_python\": {}}}{}",
            s.variant,
            s.runs,
            json_num(s.wall_s),
            json_num(s.tasks_per_s),
            json_num(s.spread_pct),
            json_num(s.cpu_us_per_task),
            json_num(s.peak_rss_mib),
            json_num(s.vol_cs),
            json_num(s.invol_cs),
            json_num(s.vs_best_tokio),
            json_num(s.vs_joinset),
            json_num(s.vs_python),
            if i + 1 < summary.len() { "," } else { "" }
        );
    }
    j.push_str("  ]\n}\n");
    j
}

fn to_csv(args: &Args, summary: &[Summary]) -> String {
    let mut c = String::from(
        "workload,tasks,concurrency,queue,runtime,variant,runs,wall_s,tasks_per_s,spread_pct,\
         cpu_us_per_task,peak_rss_mib,vs_best_tokio,vs_sem_before_joinset,vs_python\n",
    );
    for s in summary {
        let _ = writeln!(
            c,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            args.workload,
            args.tasks,
            args.concurrency,
            args.queue(),
            args.runtime_label(),
            s.variant,
            s.runs,
            fmt_num(s.wall_s, 4),
            fmt_num(s.tasks_per_s, 0),
            fmt_num(s.spread_pct, 1),
            fmt_num(s.cpu_us_per_task, 4),
            fmt_num(s.peak_rss_mib, 2),
            fmt_num(s.vs_best_tokio, 3),
            fmt_num(s.vs_joinset, 3),
            fmt_num(s.vs_python, 2),
        );
    }
    c
}

/// Waits (up to `max_secs`) until the machine is under 15% busy; returns the last reading.
fn wait_for_quiet(max_secs: u64) -> f64 {
    let window = std::time::Duration::from_millis(500);
    let deadline = Instant::now() + std::time::Duration::from_secs(max_secs);
    let mut warned = false;
    loop {
        let busy = measure::machine_busy_fraction(window);
        if max_secs == 0 || busy.is_nan() || busy < 0.15 || Instant::now() >= deadline {
            return busy;
        }
        if !warned {
            eprintln!(
                "  (machine {:.0}% busy: waiting up to {max_secs} s for it to calm down)",
                busy * 100.0
            );
            warned = true;
        }
    }
}

fn parent(args: &Args) {
    let mut variants: Vec<String> = if args.variants.is_empty() {
        VARIANTS.iter().map(|s| s.to_string()).collect()
    } else {
        args.variants.clone()
    };
    for v in &variants {
        assert!(
            VARIANTS.contains(&v.as_str())
                || FLOW_VARIANTS.contains(&v.as_str())
                || PROBE_VARIANTS.contains(&v.as_str())
                || SMART_VARIANTS.contains(&v.as_str())
                || SURFACE_VARIANTS.contains(&v.as_str())
                || v == "python",
            "unknown variant {v:?}; known: {}, {}, {}, {}, {}, python",
            VARIANTS.join(", "),
            FLOW_VARIANTS.join(", "),
            PROBE_VARIANTS.join(", "),
            SMART_VARIANTS.join(", "),
            SURFACE_VARIANTS.join(", ")
        );
    }
    if args.tasks > SPAWN_ALL_LIMIT && !args.force {
        variants.retain(|v| {
            let keep = v != "spawn-sem-inside";
            if !keep {
                eprintln!(
                    "skipping spawn-sem-inside at {} tasks (needs ~1 KiB per task; --force to run it)",
                    args.tasks
                );
            }
            keep
        });
    }
    if args.python && !variants.iter().any(|v| v == "python") {
        variants.push("python".into());
    }
    eprintln!(
        "compare: workload={} tasks={} concurrency={} queue={} runtime={} payload={} bytes, allocator={ALLOCATOR}, {} rounds of [{}]",
        args.workload,
        args.tasks,
        args.concurrency,
        args.queue(),
        args.runtime_label(),
        Payloads::new(args.payload_bytes).get(args.tasks.saturating_sub(1)).len(),
        args.rounds,
        variants.join(" ")
    );
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for v in &variants {
            let busy = wait_for_quiet(args.quiet_wait);
            let load1 = measure::load_average_1m();
            match run_once(args, v) {
                Ok(m) => {
                    let run = Run {
                        round,
                        variant: v.clone(),
                        wall_s: field(&m, "wall_s"),
                        tasks_per_s: field(&m, "tasks_per_s"),
                        cpu_us_per_task: field(&m, "cpu_us_per_task"),
                        peak_rss_mib: field(&m, "peak_rss_mib"),
                        vol_cs: field(&m, "vol_cs"),
                        invol_cs: field(&m, "invol_cs"),
                        load1,
                        busy_pct: busy * 100.0,
                    };
                    eprintln!(
                        "  round {round} {:<20} wall {:>8.3} s  {:>10.0} tasks/s  {:>7.3} CPU µs/task  {:>8.1} MiB peak  {:>7.0}+{:.0} ctx sw  (load {:.2}, machine {:.0}% busy before)",
                        v, run.wall_s, run.tasks_per_s, run.cpu_us_per_task, run.peak_rss_mib, run.vol_cs, run.invol_cs, load1, run.busy_pct
                    );
                    runs.push(run);
                }
                Err(e) => eprintln!("  round {round} {v}: FAILED: {e}"),
            }
        }
    }
    let summary = summarize(&variants, &runs);
    println!(
        "\nMedians of {} rounds: workload={} tasks={} concurrency={} queue={} runtime={} allocator={ALLOCATOR}\n",
        args.rounds,
        args.workload,
        args.tasks,
        args.concurrency,
        args.queue(),
        args.runtime_label()
    );
    print!("{}", markdown_table(&summary));
    if let Some(path) = &args.json {
        std::fs::write(path, to_json(args, &runs, &summary)).expect("write --json file");
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, to_csv(args, &summary)).expect("write --csv file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(variant: &str, tasks_per_s: f64, cpu: f64) -> Run {
        Run {
            round: 1,
            variant: variant.into(),
            wall_s: 1e6 / tasks_per_s,
            tasks_per_s,
            cpu_us_per_task: cpu,
            peak_rss_mib: 5.0,
            vol_cs: 0.0,
            invol_cs: 0.0,
            load1: 0.0,
            busy_pct: 0.0,
        }
    }

    /// Pin: medians of odd and even counts, a failed (NaN) reading left out.
    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![f64::NAN, 1.0, 3.0]), 2.0);
        assert!(median(vec![]).is_nan());
    }

    /// Pin: "x best pattern" divides by the best hand-written pattern's median only: a
    /// faster probe or pool is not a pattern, and a pattern's best run is not its median.
    #[test]
    fn best_pattern_is_the_best_patterns_median() {
        let variants: Vec<String> = ["common", "slots-reap", "sem-before-joinset", "mpsc-workers"]
            .map(String::from)
            .to_vec();
        let mut runs = Vec::new();
        for (common, probe, joinset, mpsc) in [
            (2.0e6, 4.0e6, 1.0e6, 1.0e6),
            (2.2e6, 4.0e6, 1.2e6, 3.0e6),
            (1.8e6, 4.0e6, 1.1e6, 1.5e6),
        ] {
            runs.push(run("common", common, 0.7));
            runs.push(run("slots-reap", probe, 0.5));
            runs.push(run("sem-before-joinset", joinset, 1.0));
            runs.push(run("mpsc-workers", mpsc, 1.2));
        }
        let s = summarize(&variants, &runs);
        let common = &s[0];
        assert_eq!(common.tasks_per_s, 2.0e6);
        assert_eq!(
            common.vs_best_tokio,
            2.0e6 / 1.5e6,
            "mpsc-workers' median is the best"
        );
        assert_eq!(common.vs_joinset, 2.0e6 / 1.1e6);
        assert!(common.vs_python.is_nan());
        assert_eq!(common.spread_pct, (2.2e6 - 1.8e6) / 2.0e6 * 100.0);
        assert_eq!(s[1].vs_best_tokio, 4.0e6 / 1.5e6);
    }
}
