//! `nb-aiopool-redis`: look at and repair a queue from the shell.
//!
//! ```text
//! nb-aiopool-redis --url redis://127.0.0.1:6379 emails stats [--watch 1]
//! nb-aiopool-redis emails dead [--count 20]
//! nb-aiopool-redis emails requeue <dead-letter-id>... | --all
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nb_aiopool_redis::{Error, QueueStats, RedisQueue};

/// Inspect an nb-aiopool-redis queue: waiting, in-flight per consumer, dead letters,
/// rates; re-queue dead letters.
#[derive(Parser, Debug)]
#[command(name = "nb-aiopool-redis", version)]
struct Cli {
    /// Redis URL (redis://[user:password@]host:port/db, redis+unix:///path, rediss:// with
    /// the `tls` feature).
    // hide_env_values: `--help` must not print REDIS_URL's value, password included.
    #[arg(
        long,
        env = "REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379/"
    )]
    url: String,
    /// Queue name.
    queue: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Counts: waiting, in flight (per consumer), delayed retries, dead, totals.
    Stats {
        /// Print again every SECS seconds, with completion and submission rates.
        // A string, checked by `run`: a bad value is one line and status 1, as the README
        // says, not clap's usage block (and `-1` is a value, not an option).
        #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
        watch: Option<String>,
        /// With --watch: stop after N prints, at least 1 (default: until interrupted).
        #[arg(
            long,
            value_name = "N",
            requires = "watch",
            value_parser = clap::value_parser!(u64).range(1..)
        )]
        iterations: Option<u64>,
    },
    /// Lists dead letters, oldest first.
    Dead {
        /// How many to list.
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
    /// Moves dead letters back to the work stream.
    Requeue {
        /// Dead-letter ids (as `dead` lists them).
        ids: Vec<String>,
        /// Requeue every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

/// Writes `text` to stdout. A reader that went away (`| head`, a pager the operator
/// quit: a broken pipe) is not an error: `Ok(false)`, and the caller stops printing
/// (what it was asked to do is done). Any other write error is one line, as the others.
/// (`println!` would panic there: status 101 and a panic message.)
fn say(text: &str) -> Result<bool, String> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(format!("cannot write to stdout: {e}")),
    }
}

fn print_stats(s: &QueueStats, rates: Option<(f64, f64)>) -> Result<bool, String> {
    let mut text = format!(
        "waiting {}  in_flight {}  delayed {}  dead {}  submitted {}  completed {}",
        s.waiting, s.in_flight, s.delayed, s.dead, s.submitted, s.completed
    );
    if let Some((sub, done)) = rates {
        let _ = write!(text, "  rate: {sub:.0} submitted/s {done:.0} completed/s");
    }
    text.push('\n');
    for (consumer, n) in &s.consumers {
        let _ = writeln!(text, "  {}: {n} in flight", shown(consumer));
    }
    say(&text)
}

/// An error's text on one line: a multi-line message (the redis crate's parse errors,
/// for a URL that points at something that is not Redis) joined with "; ", and control
/// characters escaped (error text may quote what the server sent).
fn one_line(e: &str) -> String {
    let joined: Vec<&str> = e.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    shown(&joined.join("; "))
}

/// `s` with its control characters (and the invisible ones that reorder text) escaped
/// as Rust does (`\n`, `\u{1b}`): dead-letter payloads and reasons, job ids and
/// consumer names come from whoever wrote to the queue's keys, and must neither send
/// escape sequences to the operator's terminal nor fake lines of the listing.
fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let hidden = c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if hidden {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The `--watch` interval: a positive number of seconds that fits a `Duration`.
fn parse_watch(secs: &str) -> Result<Duration, String> {
    match secs
        .trim()
        .parse::<f64>()
        .map_err(|_| ())
        .and_then(|f| Duration::try_from_secs_f64(f).map_err(|_| ()))
    {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "--watch must be a positive number of seconds (at most {}), got {secs}",
            u64::MAX
        )),
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    // Bad values are refused before connecting (and before anything is printed).
    let every = match &cli.command {
        Command::Stats {
            watch: Some(secs), ..
        } => Some(parse_watch(secs)?),
        _ => None,
    };
    if let Command::Dead { count: 0 } = cli.command {
        // dead_letters(0) lists none: "no dead letters" would not be true.
        return Err("--count must be at least 1".into());
    }
    if let Command::Requeue { ids, all: false } = &cli.command {
        if ids.is_empty() {
            return Err("give dead-letter ids or --all".into());
        }
    }
    // No command creates the stream and group of a queue that does not exist (a
    // misspelled name): `stats` and `dead` only read, and `requeue` writes only a dead
    // letter that exists (workers create the group from id 0, so the job is delivered).
    let queue = RedisQueue::builder(&cli.url, &cli.queue)
        .create(false)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    // `stats` and `dead` of a queue that does not exist (a misspelled name) would show
    // zeros and "no dead letters": say so instead. (`requeue` says "no such dead letter".)
    if matches!(cli.command, Command::Stats { .. } | Command::Dead { .. })
        && !queue.exists().await.map_err(|e| e.to_string())?
    {
        return Err(format!(
            "no such queue: {} (none of its keys exists on the server)",
            cli.queue
        ));
    }
    match cli.command {
        Command::Stats { iterations, .. } => {
            let mut prev = queue.stats().await.map_err(|e| e.to_string())?;
            if !print_stats(&prev, None)? {
                return Ok(());
            }
            let Some(every) = every else { return Ok(()) };
            let mut t = Instant::now();
            let mut left = iterations.map(|n| n.saturating_sub(1));
            while left != Some(0) {
                tokio::time::sleep(every).await;
                let s = queue.stats().await.map_err(|e| e.to_string())?;
                let dt = t.elapsed().as_secs_f64();
                t = Instant::now();
                let sub = s.submitted.saturating_sub(prev.submitted) as f64 / dt;
                let done = s.completed.saturating_sub(prev.completed) as f64 / dt;
                if !print_stats(&s, Some((sub, done)))? {
                    return Ok(());
                }
                prev = s;
                left = left.map(|n| n - 1);
            }
        }
        Command::Dead { count } => {
            let dead = queue.dead_letters(count).await.map_err(|e| e.to_string())?;
            if dead.is_empty() {
                say("no dead letters\n")?;
            }
            for d in dead {
                let letter = format!(
                    "{}  job {}  task {:?}  attempts {}  at {} ms\n  reason: {}\n  payload: {}\n",
                    d.id,
                    shown(&d.job),
                    d.task,
                    d.attempts,
                    d.at_ms,
                    shown(&d.reason),
                    shown(&d.payload)
                );
                if !say(&letter)? {
                    break;
                }
            }
        }
        Command::Requeue { ids, all } => {
            if all {
                let n = queue.requeue_all().await.map_err(|e| e.to_string())?;
                say(&format!("requeued {n}\n"))?;
            } else {
                // Every good id is requeued; the bad ones (not found, or not a full stream
                // id) are named in one error line at the end. A Redis error stops here,
                // and the line names it, and the bad ids met before it.
                let mut missing = Vec::new();
                let mut malformed = Vec::new();
                let mut bad = Vec::new();
                let mut unwritten = None;
                for id in &ids {
                    match queue.requeue(id).await {
                        // Requeued: the ids after it are requeued too, whether or not
                        // anyone still reads what is printed.
                        Ok(Some(new)) => {
                            if let Err(e) = say(&format!("{id} -> {new}\n")) {
                                unwritten.get_or_insert(e);
                            }
                        }
                        Ok(None) => missing.push(id.as_str()),
                        Err(Error::Config(_)) => malformed.push(id.as_str()),
                        Err(e) => {
                            bad.push(format!("{e} (at {id}; the ids after it were not tried)"));
                            break;
                        }
                    }
                }
                bad.extend(unwritten);
                if !missing.is_empty() {
                    bad.push(format!("no such dead letter: {}", missing.join(", ")));
                }
                if !malformed.is_empty() {
                    bad.push(format!(
                        "not a dead-letter id <ms>-<seq>: {}",
                        malformed.join(", ")
                    ));
                }
                if !bad.is_empty() {
                    return Err(bad.join("; "));
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}
