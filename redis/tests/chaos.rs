//! Chaos: worker *processes* SIGKILLed and restarted on a seeded schedule while jobs
//! flow. Afterwards every job completed at least once, duplicates come only from
//! killed workers, nothing is pending, and Redis memory is back near its start.
//!
//! The workers are this test binary re-run as children (the ignored `chaos_child` test,
//! configured through environment variables). Each child incarnation appends the number
//! of every job it completes to its own file; the parent reads the files.
//!
//! Seed: `NB_CHAOS_SEED` (default 7). Kills: `NB_CHAOS_KILLS` (default 10).

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nb_aiopool_redis::{RedisQueue, Worker};
use serde::{Deserialize, Serialize};
use support::*;

const QUEUE: &str = "chaos";
const CHILDREN: usize = 4;
const CONCURRENCY: usize = 32;
const JOBS: u64 = 12_000;
const MAX_LEN: u64 = 1_500;

#[derive(Serialize, Deserialize)]
struct ChaosJob {
    n: u64,
    ms: u64,
}

/// xorshift64*: a tiny seeded generator, so a failing schedule can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The worker process. Does nothing unless started by `worker_processes_killed_and_restarted`.
#[test]
#[ignore = "run as a child process by the chaos test"]
fn chaos_child() {
    let Ok(url) = std::env::var("NB_CHAOS_URL") else {
        return;
    };
    let out = PathBuf::from(std::env::var("NB_CHAOS_OUT").unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let file = Arc::new(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&out)
                .unwrap(),
        ));
        let f2 = file.clone();
        let worker = Worker::builder(&url, QUEUE)
            .concurrency(CONCURRENCY)
            .lease(Duration::from_millis(1000))
            .max_deliveries(50)
            .block(Duration::from_millis(200))
            .task("job", move |j: ChaosJob| {
                let file = f2.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(j.ms)).await;
                    // One unbuffered write per job: a SIGKILL cannot lose a line the
                    // kernel already has.
                    file.lock()
                        .unwrap()
                        .write_all(format!("{}\n", j.n).as_bytes())
                        .unwrap();
                    Ok::<(), String>(())
                }
            })
            .build()
            .await
            .unwrap();
        file.lock()
            .unwrap()
            .write_all(format!("consumer {}\n", worker.consumer_name()).as_bytes())
            .unwrap();
        worker.run().await.unwrap();
    });
}

struct Incarnation {
    child: Child,
    file: PathBuf,
}

fn spawn_child(url: &str, dir: &Path, slot: usize, generation: usize) -> Incarnation {
    let file = dir.join(format!("child-{slot}-{generation}.log"));
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "chaos_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NB_CHAOS_URL", url)
        .env("NB_CHAOS_OUT", &file)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Incarnation { child, file }
}

/// The consumer name a child wrote at its start, if it got that far.
fn consumer_of(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("consumer "))
        .map(str::to_owned)
}

/// Job numbers per file.
fn completions(files: &[PathBuf]) -> Vec<Vec<u64>> {
    files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.parse().ok())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_killed_and_restarted() {
    let seed: u64 = std::env::var("NB_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let kills: usize = std::env::var("NB_CHAOS_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let server = RedisServer::start();
    let url = server.url();
    let dir = server.path().join("chaos");
    std::fs::create_dir_all(&dir).unwrap();
    let queue = RedisQueue::builder(&url, QUEUE)
        .max_len(MAX_LEN)
        .connect()
        .await
        .unwrap();
    // Warm-up (scripts loaded, Lua heap and allocator pools grown) with an in-process
    // worker, so that the memory baseline is that of a queue that has been in use.
    {
        let w = Worker::builder(&url, QUEUE)
            .concurrency(CONCURRENCY)
            .task("job", |_j: ChaosJob| async { Ok::<(), String>(()) })
            .build()
            .await
            .unwrap();
        let run = {
            let w = w.clone();
            tokio::spawn(async move { w.run().await.unwrap() })
        };
        for n in 0..MAX_LEN {
            queue.submit("job", &ChaosJob { n, ms: 0 }).await.unwrap();
        }
        while queue.stats().await.unwrap().completed < MAX_LEN {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        w.shutdown().await;
        run.await.unwrap();
    }
    let mem_start = server.used_memory();

    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut slots: Vec<Incarnation> = (0..CHILDREN)
        .map(|s| spawn_child(&url, &dir, s, 0))
        .collect();
    let mut files: Vec<PathBuf> = slots.iter().map(|i| i.file.clone()).collect();
    let mut killed_files: Vec<PathBuf> = Vec::new();

    // Producer: at least JOBS jobs, and more while the kills go on, so that jobs flow
    // during every kill. Each job sleeps 20-60 ms.
    let kills_done = Arc::new(AtomicBool::new(false));
    let submitted = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for p in 0..4u64 {
        let (q, done, sub) = (queue.clone(), kills_done.clone(), submitted.clone());
        producers.push(tokio::spawn(async move {
            loop {
                let n = sub.fetch_add(1, Ordering::SeqCst);
                if n >= JOBS && done.load(Ordering::SeqCst) {
                    sub.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
                let ms = 20 + (n * 7 + p) % 41;
                q.submit("job", &ChaosJob { n, ms }).await.unwrap();
            }
        }));
    }

    // Sampler: invariants I2 (per-consumer pending <= concurrency) and I3 (queue <= max_len).
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop_sampler.clone();
        let url = url.clone();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let (mut samples, mut max_pending, mut max_len) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                for (name, n) in pending_per_consumer(&mut c, QUEUE) {
                    assert!(n <= CONCURRENCY as u64, "{name} holds {n} > {CONCURRENCY}");
                    max_pending = max_pending.max(n);
                }
                let (x, z): (u64, u64) = redis::pipe()
                    .cmd("XLEN")
                    .arg(stream_key(QUEUE))
                    .cmd("ZCARD")
                    .arg(delayed_key(QUEUE))
                    .query(&mut c)
                    .unwrap();
                assert!(x + z <= MAX_LEN, "queue holds {} > {MAX_LEN}", x + z);
                max_len = max_len.max(x + z);
                samples += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (samples, max_pending, max_len)
        })
    };

    // The kill schedule.
    let mut c = server.conn();
    let mut held_at_kill = 0u64;
    let t0 = Instant::now();
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.range(150, 450))).await;
        let victim = rng.range(0, CHILDREN as u64 - 1) as usize;
        let inc = &mut slots[victim];
        let consumer = consumer_of(&inc.file);
        inc.child.kill().unwrap();
        inc.child.wait().unwrap();
        // What the dead consumer held is what may run twice.
        if let Some(name) = consumer {
            held_at_kill += pending_per_consumer(&mut c, QUEUE)
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, n)| n)
                .unwrap_or(0);
        }
        killed_files.push(inc.file.clone());
        *inc = spawn_child(&url, &dir, victim, k + 1);
        files.push(inc.file.clone());
    }
    let kill_phase = t0.elapsed();
    kills_done.store(true, Ordering::SeqCst);
    let done_during_kills: usize = completions(&files).iter().map(Vec::len).sum();
    for p in producers {
        within(120, "producers", p).await.unwrap();
    }
    let total = submitted.load(Ordering::SeqCst);
    assert!(
        (done_during_kills as u64) < total,
        "jobs must still be flowing when the kills end"
    );

    // Drain: every job done, nothing pending.
    let start = Instant::now();
    loop {
        let s = queue.stats().await.unwrap();
        let distinct = {
            let mut seen = vec![false; total as usize];
            for n in completions(&files).into_iter().flatten() {
                seen[n as usize] = true;
            }
            seen.iter().filter(|b| **b).count() as u64
        };
        if distinct == total && s.waiting == 0 && s.in_flight == 0 && s.delayed == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "not drained: {distinct}/{total} done, {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain = start.elapsed();
    stop_sampler.store(true, Ordering::SeqCst);
    let (samples, max_pending, max_len) = sampler.join().unwrap();

    // I1: every job at least once; I4: duplicates only in killed incarnations' files.
    let per_file = completions(&files);
    let mut count: HashMap<u64, u64> = HashMap::new();
    let mut from_killed: HashMap<u64, u64> = HashMap::new();
    for (f, jobs) in files.iter().zip(&per_file) {
        let killed = killed_files.contains(f);
        for &n in jobs {
            *count.entry(n).or_default() += 1;
            if killed {
                *from_killed.entry(n).or_default() += 1;
            }
        }
    }
    assert_eq!(count.len() as u64, total, "every job completed");
    let executions: u64 = count.values().sum();
    let duplicates = executions - total;
    for (n, c) in &count {
        if *c > 1 {
            let k = from_killed.get(n).copied().unwrap_or(0);
            assert!(
                k >= c - 1,
                "job {n} ran {c} times but only {k} of them in killed workers"
            );
        }
    }
    assert!(
        duplicates <= (kills * CONCURRENCY) as u64,
        "{duplicates} duplicates from {kills} kills of {CONCURRENCY} slots"
    );

    // I5: nothing left; no dead letters.
    let s = queue.stats().await.unwrap();
    assert_eq!(
        (s.waiting, s.in_flight, s.delayed, s.dead),
        (0, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.submitted, total + MAX_LEN);
    for inc in &mut slots {
        inc.child.kill().unwrap();
        inc.child.wait().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mem_end = server.used_memory();
    let stream_bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(stream_key(QUEUE))
        .arg("SAMPLES")
        .arg(0)
        .query(&mut c)
        .unwrap();
    let grown = mem_end.saturating_sub(mem_start);
    println!(
        "chaos seed {seed}: {total} jobs, {kills} kills in {kill_phase:?}, drain {drain:?}, \
         {executions} executions, {duplicates} duplicates (killed workers held \
         {held_at_kill} entries when killed), samples {samples}, max pending per consumer \
         {max_pending}, max queue {max_len}, used_memory {mem_start} -> {mem_end} (+{grown} B), \
         stream {stream_bytes} B"
    );
    assert!(
        stream_bytes < 64 * 1024,
        "the stream keeps {stream_bytes} bytes"
    );
    assert!(
        grown < 256 * 1024,
        "redis memory grew by {grown} bytes ({mem_start} -> {mem_end})"
    );
}
