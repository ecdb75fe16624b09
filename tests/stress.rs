//! Stress test (issue 6): for each pool, `NB_STRESS_TASKS` tasks in all (default 1M)
//! from three async producers and two plain threads (`blocking_submit`), on a 2-worker
//! multi-thread runtime; 1% of the tasks panic, about 3% sleep 0.1-1 ms (so the slots
//! fill up), the rest return at once or after a yield, 1% are aborted, 10% of the handles are
//! dropped (detached), and a `shutdown` races the producers at a random point, after which
//! every submission is refused and must hand its task back.
//!
//! Asserted: every task is accounted for exactly once (a per-task outcome record written
//! by the task itself, and by its handle when awaited); no handle resolves twice or wrongly;
//! the pool never runs more than `max_concurrency` tasks; at the end
//! `submitted == completed + panicked + cancelled` with nothing queued or running, and
//! the counts match the per-task records. A watchdog thread aborts the process with a
//! clear message if a test takes longer than `NB_STRESS_WATCHDOG_SECS` (default 100).
//!
//! `NB_STRESS_SEED` fixes the random choices (default: from the clock, printed).

mod reliability;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nb_aiopool::{CancelReason, TaskHandle};
use reliability::*;
use tokio::sync::Notify;

/// Tasks per pool when `NB_STRESS_TASKS` is not set. A debug build runs the three tests
/// in well under two minutes on 2 cores (figures in RELIABILITY.md).
const DEFAULT_TASKS: usize = 1_000_000;
const ASYNC_PRODUCERS: usize = 3;
const THREAD_PRODUCERS: usize = 2;
const CONCURRENCY: usize = 16;
const QUEUE: usize = 64;
/// Handles a producer keeps before it awaits the oldest.
const WINDOW: usize = 256;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: cheap, seedable, good enough to pick behaviours.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A percentage draw: true with probability `pct`%.
    fn pct(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

// What a handle said, per task.
const H_NONE: u8 = 0;
const H_VALUE: u8 = 1;
const H_PANIC: u8 = 2;
const H_ABORTED: u8 = 3;
const H_OTHER_CANCEL: u8 = 4;

struct Run {
    pool: Pool,
    board: Arc<Board>,
    max_concurrency: usize,
    n: usize,
    aborted: Vec<AtomicBool>,
    handle_said: Vec<AtomicU8>,
    attempts: AtomicUsize,
    shutdown_at: usize,
    shutdown_now: Notify,
    shutdown_started: AtomicBool,
    failures: Mutex<Vec<String>>,
}

impl Run {
    fn fail(&self, msg: String) {
        let mut f = self.failures.lock().unwrap();
        if f.len() < 20 {
            f.push(msg);
        }
    }

    fn spec(&self, id: usize, rng: &mut Rng) -> Spec {
        let beh = if rng.pct(1) {
            Beh::Panic(0)
        } else if rng.pct(3) {
            // 100 µs .. 1 ms: keeps the slots full, so the bound is exercised.
            Beh::Sleep(1 + (rng.next() % 10) as u8)
        } else if rng.pct(10) {
            Beh::Yield(1)
        } else {
            Beh::Ready
        };
        Spec {
            id,
            beh,
            board: self.board.clone(),
        }
    }

    fn attempted(&self) {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.shutdown_at {
            self.shutdown_now.notify_one();
        }
        if n % 16 == 0 {
            // A snapshot taken under the pool's lock: the identity and the bounds hold.
            let q = match self.pool {
                Pool::NoQueue(_) => 0,
                _ => QUEUE,
            };
            let s = self.pool.stats();
            if let Some(problem) = stats_problem("during the run", &s, self.max_concurrency, q) {
                self.fail(problem);
            }
        }
    }

    /// Handles an accepted submission: maybe abort it, maybe drop the handle; returns the
    /// handle to keep.
    fn accepted(&self, id: usize, h: TaskHandle<u64>, rng: &mut Rng) -> Option<TaskHandle<u64>> {
        if rng.pct(1) {
            self.aborted[id].store(true, Ordering::SeqCst);
            h.abort();
            if !h.is_finished() {
                self.fail(format!(
                    "task {id}: handle not resolved right after abort()"
                ));
            }
        }
        if rng.pct(10) {
            None
        } else {
            Some(h)
        }
    }

    fn refused(&self, id: usize, r: Rejection, via_try: bool) {
        let ok = match r {
            Rejection::Full => via_try,
            Rejection::Closed => self.shutdown_started.load(Ordering::SeqCst),
            Rejection::WouldDeadlock => false,
        };
        if !ok {
            self.fail(format!("task {id}: refused with {r:?}"));
        }
    }

    fn resolved(&self, id: usize, r: Result<u64, nb_aiopool::TaskError>) {
        let said = match &r {
            Ok(v) => {
                if *v != value_of(id) {
                    self.fail(format!("task {id}: handle gave value {v}"));
                }
                H_VALUE
            }
            Err(e) if e.is_panic() => H_PANIC,
            Err(e) if e.cancel_reason() == Some(CancelReason::Aborted) => H_ABORTED,
            Err(_) => H_OTHER_CANCEL,
        };
        if self.handle_said[id].swap(said, Ordering::SeqCst) != H_NONE {
            self.fail(format!("task {id}: handle resolved twice"));
        }
    }

    async fn async_producer(self: Arc<Self>, ids: std::ops::Range<usize>, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut window: VecDeque<(usize, TaskHandle<u64>)> = VecDeque::new();
        for id in ids {
            let spec = self.spec(id, &mut rng);
            let via_try = rng.pct(10);
            let res = if via_try {
                self.pool.try_submit(&spec)
            } else {
                self.pool.submit(&spec).await
            };
            self.attempted();
            match res {
                Ok(h) => {
                    if let Some(h) = self.accepted(id, h, &mut rng) {
                        window.push_back((id, h));
                    }
                }
                Err(r) => self.refused(id, r, via_try),
            }
            if window.len() >= WINDOW {
                let (id, h) = window.pop_front().unwrap();
                self.resolved(id, h.await);
            }
        }
        for (id, h) in window {
            self.resolved(id, h.await);
        }
    }

    fn thread_producer(self: Arc<Self>, ids: std::ops::Range<usize>, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut window: VecDeque<(usize, TaskHandle<u64>)> = VecDeque::new();
        for id in ids {
            let spec = self.spec(id, &mut rng);
            let via_try = rng.pct(10);
            let res = if via_try {
                self.pool.try_submit(&spec)
            } else {
                self.pool.blocking_submit(&spec)
            };
            self.attempted();
            match res {
                Ok(h) => {
                    if let Some(h) = self.accepted(id, h, &mut rng) {
                        window.push_back((id, h));
                    }
                }
                Err(r) => self.refused(id, r, via_try),
            }
            if window.len() >= WINDOW {
                let (id, h) = window.pop_front().unwrap();
                self.resolved(id, h.blocking_wait());
            }
        }
        for (id, h) in window {
            self.resolved(id, h.blocking_wait());
        }
    }

    /// The end-of-run accounting: every task, one outcome, matching the counters.
    fn verify(&self) -> String {
        let s = self.pool.stats();
        let q = match self.pool {
            Pool::NoQueue(_) => 0,
            _ => QUEUE,
        };
        check_stats("end", &s, self.max_concurrency, q);
        assert_eq!((s.queued, s.running), (0, 0), "work left at the end: {s:?}");
        let failures = self.failures.lock().unwrap().clone();
        assert!(failures.is_empty(), "failures: {failures:#?}");
        let violations = self.board.violations();
        assert!(violations.is_empty(), "violations: {violations:#?}");
        assert_eq!(self.board.running_now(), 0);

        let (mut accepted, mut rejected) = (0u64, 0u64);
        let (mut completed, mut panicked, mut cancelled) = (0u64, 0u64, 0u64);
        let (mut completed_flex, mut panicked_flex) = (0u64, 0u64);
        let mut aborted_n = 0u64;
        let mut awaited = 0u64;
        for id in 0..self.n {
            let state = self.board.state(id);
            let aborted = self.aborted[id].load(Ordering::SeqCst);
            let said = self.handle_said[id].load(Ordering::SeqCst);
            if state == REJECTED {
                rejected += 1;
                assert_eq!(said, H_NONE, "task {id}: rejected, yet a handle resolved");
                continue;
            }
            accepted += 1;
            aborted_n += u64::from(aborted);
            awaited += u64::from(said != H_NONE);
            match (state, aborted) {
                (COMPLETED, false) => completed += 1,
                (COMPLETED, true) => completed_flex += 1,
                (PANICKED, false) => panicked += 1,
                (PANICKED, true) => panicked_flex += 1,
                (NOT_STARTED | DROPPED, true) => cancelled += 1,
                (other, _) => panic!(
                    "task {id} (aborted: {aborted}) ended {} though only an abort could cancel it",
                    state_name(other)
                ),
            }
            let consistent = match said {
                H_NONE => true,
                H_VALUE => state == COMPLETED,
                H_PANIC => state == PANICKED,
                H_ABORTED => aborted,
                _ => false,
            };
            assert!(
                consistent,
                "task {id}: handle said {said}, task {} (aborted: {aborted})",
                state_name(state)
            );
        }
        assert_eq!(accepted + rejected, self.n as u64, "tasks unaccounted for");
        assert_eq!(s.submitted, accepted, "submitted vs accepted tasks: {s:?}");
        assert_eq!(
            s.completed + s.panicked + s.cancelled,
            s.submitted,
            "submitted != completed + panicked + cancelled: {s:?}"
        );
        assert!(
            completed <= s.completed
                && s.completed <= completed + completed_flex
                && panicked <= s.panicked
                && s.panicked <= panicked + panicked_flex
                && cancelled <= s.cancelled,
            "counters vs tasks: {s:?}; tasks: {completed} completed (+{completed_flex} \
             aborted), {panicked} panicked (+{panicked_flex} aborted), {cancelled} cancelled"
        );
        format!(
            "{} tasks: {accepted} accepted, {rejected} handed back; {} completed, {} panicked, \
             {} cancelled; {aborted_n} aborted; {awaited} handles awaited; max {} running \
             (limit {})",
            self.n,
            s.completed,
            s.panicked,
            s.cancelled,
            self.board.max_running(),
            self.max_concurrency
        )
    }
}

/// Aborts the process with a message if `what` is not done within the deadline.
struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(what: String, progress: Arc<Run>) -> Self {
        let secs: u64 = env_or("NB_STRESS_WATCHDOG_SECS", 100);
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < deadline {
                if d.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !d.load(Ordering::SeqCst) {
                eprintln!(
                    "WATCHDOG: {what} did not finish within {secs} s (hang?): {} of {} \
                     submissions attempted, shutdown started: {}, stats {:?}",
                    progress.attempts.load(Ordering::SeqCst),
                    progress.n,
                    progress.shutdown_started.load(Ordering::SeqCst),
                    progress.pool.stats()
                );
                std::process::abort();
            }
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

fn stress(kind: Kind) {
    quiet_intentional_panics();
    let n: usize = env_or("NB_STRESS_TASKS", DEFAULT_TASKS);
    let seed: u64 = env_or(
        "NB_STRESS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let sizes = Sizes {
        max_concurrency: CONCURRENCY,
        max_queue_size: QUEUE,
        min_workers: 4,
        idle_timeout: Duration::from_millis(5),
    };
    let mut rng = Rng::new(seed);
    // The shutdown lands somewhere between 60% and 95% of the submissions.
    let shutdown_at = n * 60 / 100 + (rng.next() as usize) % (n * 35 / 100 + 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let run = Arc::new(Run {
        pool: Pool::new(kind, sizes),
        board: Board::new(n, sizes.max_concurrency, Timing::Real, false, false),
        max_concurrency: sizes.max_concurrency,
        n,
        aborted: (0..n).map(|_| AtomicBool::new(false)).collect(),
        handle_said: (0..n).map(|_| AtomicU8::new(H_NONE)).collect(),
        attempts: AtomicUsize::new(0),
        shutdown_at,
        shutdown_now: Notify::new(),
        shutdown_started: AtomicBool::new(false),
        failures: Mutex::new(Vec::new()),
    });
    let what = format!("stress {kind:?} (seed {seed}, {n} tasks)");
    let _watchdog = Watchdog::start(what.clone(), run.clone());
    let started = Instant::now();

    let producers = ASYNC_PRODUCERS + THREAD_PRODUCERS;
    let chunk = n.div_ceil(producers);
    let range = |p: usize| (p * chunk).min(n)..((p + 1) * chunk).min(n);
    rt.block_on(async {
        // Start the pool on this runtime before the plain threads use it.
        run.pool
            .submit(&Spec {
                id: 0,
                beh: Beh::Ready,
                board: run.board.clone(),
            })
            .await
            .expect("first task")
            .await
            .expect("first task runs");
    });
    // Task 0 ran as the warm-up: treat it as the first task of producer 0.
    let mut tasks = Vec::new();
    let mut threads = Vec::new();
    for p in 0..producers {
        let mut ids = range(p);
        if p == 0 {
            ids.start = 1;
            run.handle_said[0].store(H_VALUE, Ordering::SeqCst);
            run.attempted();
        }
        let seed = rng.next();
        if p < ASYNC_PRODUCERS {
            tasks.push(rt.spawn(run.clone().async_producer(ids, seed)));
        } else {
            let run = run.clone();
            threads.push(std::thread::spawn(move || run.thread_producer(ids, seed)));
        }
    }
    let shutter = {
        let run = run.clone();
        rt.spawn(async move {
            run.shutdown_now.notified().await;
            run.shutdown_started.store(true, Ordering::SeqCst);
            run.pool.shutdown().await;
        })
    };
    rt.block_on(async {
        for t in tasks {
            if let Err(e) = t.await {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    });
    for t in threads {
        if let Err(p) = t.join() {
            std::panic::resume_unwind(p);
        }
    }
    rt.block_on(async {
        shutter.await.unwrap();
        run.pool.shutdown().await;
    });
    let summary = run.verify();
    println!(
        "{what}: {summary}; shutdown after {shutdown_at} submissions; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn stress_common() {
    stress(Kind::Common);
}

#[test]
fn stress_no_queue() {
    stress(Kind::NoQueue);
}

#[test]
fn stress_smart() {
    stress(Kind::Smart);
}
