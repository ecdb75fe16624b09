//! Helpers shared by the integration tests (included with `mod support;`).
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nb_aiopool::{CommonAioPool, NoQueueAioPool, SmartAioPool};

/// Serialises the tests of one test binary that must not overlap (tracing's callsite
/// cache, a global allocation counter, process-wide state); a test that panicked while
/// holding it does not poison the others.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A current-thread runtime with time enabled and paused (time advances when it idles).
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// A current-thread runtime with time (not paused).
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A multi-thread runtime of `workers` worker threads, with time.
pub fn multi_thread_of(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// A value (a task's result) that counts its drop.
pub struct Counted(pub Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Waits (real time, bounded, async) until `n` reaches `want`; returns what it reached.
pub async fn reach(n: &AtomicUsize, want: usize, within: std::time::Duration) -> usize {
    let end = std::time::Instant::now() + within;
    while n.load(Ordering::SeqCst) < want && std::time::Instant::now() < end {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    n.load(Ordering::SeqCst)
}

/// Waits (up to `within`) until `pool` counts `want` completed tasks; returns the count
/// then.
pub async fn reach_completed(pool: &CommonAioPool, want: u64, within: std::time::Duration) -> u64 {
    let end = std::time::Instant::now() + within;
    while pool.stats().completed < want && std::time::Instant::now() < end {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    pool.stats().completed
}

/// [`reach`] outside a runtime, sleeping the thread.
pub fn reach_blocking(n: &AtomicUsize, want: usize, within: std::time::Duration) -> usize {
    let end = std::time::Instant::now() + within;
    while n.load(Ordering::SeqCst) < want && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    n.load(Ordering::SeqCst)
}

/// A multi-thread runtime of one worker thread, with time.
pub fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Counts tasks running now (entered and not yet dropped), remembers the most seen at
/// once, and counts starts.
#[derive(Clone, Default)]
pub struct Gauge {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
}

impl Gauge {
    pub fn enter(&self) -> GaugeGuard {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        self.started.fetch_add(1, Ordering::SeqCst);
        GaugeGuard(self.now.clone())
    }

    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    pub fn now(&self) -> usize {
        self.now.load(Ordering::SeqCst)
    }

    /// The most from now on: the tasks running now count.
    pub fn reset_max(&self) {
        self.max.store(self.now(), Ordering::SeqCst);
    }
}

pub struct GaugeGuard(Arc<AtomicUsize>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A gate tasks wait on until the test opens it.
#[derive(Clone)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }
}

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until the gate is open (a future of its own, which a task can own).
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let gate = Arc::clone(&self.0);
        async move {
            gate.acquire().await.unwrap().forget();
            gate.add_permits(1);
        }
    }

    pub fn open(&self) {
        self.0.add_permits(1);
    }
}

/// Keeps the panics a test raises on purpose (those whose message is one of `messages`)
/// off stderr; any other panic goes to the hook that was in place. Installed once per test
/// binary: every call in one binary passes the same messages.
pub fn hide_panics(messages: &'static [&'static str]) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let text = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !messages.contains(&text) {
                default(info);
            }
        }));
    });
}

/// Fails the test with a clear message instead of hanging.
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(std::time::Duration::from_secs(30), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out (30 s) waiting for: {what}"),
    }
}

/// Counts finished tasks; hands out tasks that count themselves.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    /// A task that yields once, then counts itself.
    pub fn task(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let count = self.0.clone();
        async move {
            tokio::task::yield_now().await;
            count.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A task that sleeps `ms` milliseconds, then counts itself.
    pub fn sleeping_task(&self, ms: u64) -> impl std::future::Future<Output = ()> + Send + 'static {
        let count = self.0.clone();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            count.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// One of the three pools, for tests that run the same scenario on each (the methods
/// several files use are here; a file adds the others it needs in an `impl Pool` block
/// of its own).
#[derive(Clone)]
pub enum Pool {
    Common(CommonAioPool),
    NoQueue(NoQueueAioPool),
    Smart(SmartAioPool),
}

/// A `match` on a [`Pool`] whose CommonAioPool and NoQueueAioPool arms are the same code
/// (their APIs are alike, their types are not): `per_pool!(pool, |p| for_futures, |p|
/// for_recipes)` runs `for_futures` with `p` bound to either of the first two and
/// `for_recipes` with `p` bound to the SmartAioPool. The `|p|` only names the binding:
/// the arms are expanded in place (no closures), so they may `.await`, `return` or `?`.
/// `Pool` must be in scope.
macro_rules! per_pool {
    ($pool:expr, |$p:ident| $futures:expr, |$q:ident| $recipes:expr $(,)?) => {
        match $pool {
            Pool::Common($p) => $futures,
            Pool::NoQueue($p) => $futures,
            Pool::Smart($q) => $recipes,
        }
    };
}
#[allow(unused_imports)]
pub(crate) use per_pool;

impl Pool {
    /// Submits a task made by `make` with `opts` (the future for CommonAioPool and
    /// NoQueueAioPool, `make` itself as SmartAioPool's recipe), waiting for room as long
    /// as the options say (bounded by [`within`]); the refusal's kind if refused.
    #[allow(dead_code)]
    pub async fn try_submit_with<T, F, M>(
        &self,
        opts: nb_aiopool::SubmitOptions,
        make: M,
    ) -> Result<nb_aiopool::TaskHandle<T>, nb_aiopool::SubmitErrorKind>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
        M: Fn() -> F + Send + Sync + 'static,
    {
        let what = format!("{}: a submit_with", self.name());
        per_pool!(
            self,
            |p| within(&what, p.submit_with(make(), opts))
                .await
                .map_err(|e| e.kind()),
            |p| within(&what, p.submit_with(make, opts))
                .await
                .map_err(|e| e.kind())
        )
    }

    /// The three pools with `conc` slots and `queue` places in the queue (NoQueue has
    /// none), each with how many tasks it holds at once.
    pub fn all(conc: usize, queue: usize) -> Vec<(Pool, usize)> {
        vec![
            (Pool::Common(CommonAioPool::new(conc, queue)), conc + queue),
            (Pool::NoQueue(NoQueueAioPool::new(conc)), conc),
            (
                Pool::Smart(
                    SmartAioPool::builder()
                        .max_concurrency(conc)
                        .max_queue_size(queue)
                        .auto_shutdown(false)
                        .build(),
                ),
                conc + queue,
            ),
        ]
    }

    /// [`try_submit_with`](Self::try_submit_with), panicking if the submit is refused.
    pub async fn submit_with<T, F, M>(
        &self,
        opts: nb_aiopool::SubmitOptions,
        make: M,
    ) -> nb_aiopool::TaskHandle<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
        M: Fn() -> F + Send + Sync + 'static,
    {
        let name = self.name();
        (self.try_submit_with(opts, make).await)
            .unwrap_or_else(|kind| panic!("{name}: a submit was refused ({kind:?})"))
    }

    /// The pool's `wait()`, bounded by [`within`].
    pub async fn wait_within(&self) {
        let what = format!("{}: wait()", self.name());
        per_pool!(self, |p| within(&what, p.wait()).await, |p| within(
            &what,
            p.wait()
        )
        .await)
    }

    pub fn stats(&self) -> nb_aiopool::PoolStats {
        per_pool!(self, |p| p.stats(), |p| p.stats())
    }

    pub fn set_max_concurrency(&self, n: usize) {
        per_pool!(self, |p| p.set_max_concurrency(n), |p| p
            .set_max_concurrency(n))
    }

    /// The pool's `cancel_all()`, awaited.
    pub async fn cancel_all_now(&self) {
        per_pool!(self, |p| p.cancel_all().await, |p| p.cancel_all().await)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Pool::Common(_) => "common",
            Pool::NoQueue(_) => "no_queue",
            Pool::Smart(_) => "smart",
        }
    }

    /// The pool's `map_unordered(inputs, f)` (for SmartAioPool, recipes made from `f`).
    pub fn unordered<St, F, Fut>(
        &self,
        inputs: St,
        f: F,
    ) -> nb_aiopool::MapUnordered<St, Fut::Output>
    where
        St: futures_util::Stream,
        St::Item: Clone + Send + Sync + 'static,
        F: Fn(St::Item) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        match self {
            Pool::Common(p) => p.map_unordered(inputs, f),
            Pool::NoQueue(p) => p.map_unordered(inputs, f),
            Pool::Smart(p) => p.map_unordered(inputs, move |i| {
                let f = f.clone();
                move || f(i.clone())
            }),
        }
    }

    /// The pool's `map_ordered(inputs, f)` (for SmartAioPool, recipes made from `f`).
    pub fn ordered<St, F, Fut>(&self, inputs: St, f: F) -> nb_aiopool::MapOrdered<St, Fut::Output>
    where
        St: futures_util::Stream,
        St::Item: Clone + Send + Sync + 'static,
        F: Fn(St::Item) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        match self {
            Pool::Common(p) => p.map_ordered(inputs, f),
            Pool::NoQueue(p) => p.map_ordered(inputs, f),
            Pool::Smart(p) => p.map_ordered(inputs, move |i| {
                let f = f.clone();
                move || f(i.clone())
            }),
        }
    }

    /// The pool's `shutdown_timeout(d)`, boxed (one type for the three pools).
    pub fn shutdown_timeout(
        &self,
        d: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = nb_aiopool::ShutdownReport> + Send + '_>>
    {
        per_pool!(self, |p| Box::pin(p.shutdown_timeout(d)), |p| Box::pin(
            p.shutdown_timeout(d)
        ))
    }
}

// ----- child processes (process-exit tests) -------------------------------------------
//
// A test file with process-exit scenarios has an ignored test named `child` that reads
// its scenario with `child_scenario()`; its tests start it with `run_child`.

/// What a handle says in a child's record at the process exit: `ok(value)` if it ended
/// well, `Err(reason)` (its cancel reason, `None` for a panic) if not, or `pending` if it
/// has not finished (not waited for: the record must not hang the exit).
pub fn said<T: Send + 'static>(
    h: nb_aiopool::TaskHandle<T>,
    ok: impl FnOnce(T) -> String,
) -> String {
    if !h.is_finished() {
        return "pending".to_string();
    }
    match h.blocking_wait() {
        Ok(v) => ok(v),
        Err(e) => format!("Err({:?})", e.cancel_reason()),
    }
}

/// In a child's at-exit hook: takes the named handles out of `handles` and appends to
/// `dir/handles` a line `name=what` for each, `what` as [`said`] tells it (`ok` for a value).
pub fn record_handles<T: Send + 'static>(
    dir: &std::path::Path,
    handles: &std::sync::Mutex<Vec<(&'static str, nb_aiopool::TaskHandle<T>)>>,
    ok: impl Fn(T) -> String,
) {
    for (name, h) in std::mem::take(&mut *handles.lock().unwrap()) {
        let said = said(h, &ok);
        append(&dir.join("handles"), &format!("{name}={said}"));
    }
}

/// In a child's at-exit hook: appends `pool`'s `completed`, `cancelled` and `unfinished()`
/// counts to `dir/stats`, one line.
pub fn record_exit_stats(dir: &std::path::Path, pool: &SmartAioPool) {
    let s = pool.stats();
    append(
        &dir.join("stats"),
        &format!(
            "completed={} cancelled={} unfinished={}",
            s.completed,
            s.cancelled,
            s.unfinished()
        ),
    );
}

/// Appends `line` to the file at `path` (made if missing).
pub fn append(path: &std::path::Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// Yields (inside a child's runtime, which keeps its other tasks going) until the file at
/// `path` holds at least `n` lines (see [`lines`]).
pub async fn until_lines(path: &std::path::Path, n: usize) {
    while lines(path).len() < n {
        tokio::task::yield_now().await;
    }
}

/// The lines of the file at `path` (none if it is missing).
pub fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// In a child process: waits until `path` has a line (a marker another task appends).
pub async fn appended(path: impl AsRef<std::path::Path>) {
    while lines(path.as_ref()).is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Milliseconds since the Unix epoch: a clock a child process and its parent share.
pub fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// In a child process: records `"{name} {event} {unix ms}"` in `dir/ev` (read back with
/// [`Played::at`]).
pub fn event(dir: &std::path::Path, name: &str, event: &str) {
    append(&dir.join("ev"), &format!("{name} {event} {}", unix_ms()));
}

/// A boxed future of a recipe's run that returns a `u32` (the exit scenarios' tasks).
pub type U32Run = std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>>;

/// In a child process: a recipe that appends `name` to `dir/runs` and returns `value`.
pub fn recorded(
    dir: &std::path::Path,
    name: &'static str,
    value: u32,
) -> impl Fn() -> U32Run + Send + Sync + 'static {
    let runs = dir.join("runs");
    move || {
        append(&runs, name);
        Box::pin(async move { value })
    }
}

/// In a child process: a recipe that appends `name` to `dir/runs` at each run; its first
/// run never ends (the exit interrupts it), later runs sleep `ms`, append `name` to
/// `dir/ended` and return `value`.
pub fn first_run_hangs(
    dir: &std::path::Path,
    name: &'static str,
    value: u32,
    ms: u64,
) -> impl Fn() -> U32Run + Send + Sync + 'static {
    let runs = dir.join("runs");
    let ended = dir.join("ended");
    let n = AtomicUsize::new(0);
    move || {
        append(&runs, name);
        let first = n.fetch_add(1, Ordering::SeqCst) == 0;
        let ended = ended.clone();
        Box::pin(async move {
            if first {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            append(&ended, name);
            value
        })
    }
}

/// In a child process: the number of times `name` is in `dir/runs`.
pub fn ran(dir: &std::path::Path, name: &str) -> usize {
    lines(&dir.join("runs"))
        .iter()
        .filter(|l| *l == name)
        .count()
}

/// In a child process: on `rt` (not driven afterwards), submits `recipe` to `pool` and
/// drives `rt` until its first run has started (it appends `name` to `dir/runs`).
pub fn start_on(
    rt: &tokio::runtime::Runtime,
    pool: &SmartAioPool,
    dir: &std::path::Path,
    name: &str,
    recipe: impl Fn() -> U32Run + Send + Sync + 'static,
) -> nb_aiopool::TaskHandle<u32> {
    // The handle is awaited elsewhere.
    #[allow(clippy::async_yields_async)]
    rt.block_on(async {
        let h = pool.submit(recipe).await.unwrap();
        while ran(dir, name) == 0 {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        h
    })
}

/// A boxed future of a recipe's run.
pub type BoxedRun = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A recipe whose run number `n` (0 for the first) does what `body(n)` returns.
pub fn numbered_recipe(
    body: impl Fn(usize) -> BoxedRun + Send + Sync + 'static,
) -> impl Fn() -> BoxedRun + Send + Sync + 'static {
    let runs = AtomicUsize::new(0);
    move || body(runs.fetch_add(1, Ordering::SeqCst))
}

/// In a child process: marks the exit's start in `dir/exit_at` (read back with
/// [`Played::exit_at`]), then calls `process::exit` from the main thread, outside the
/// runtime, which is kept: its workers go on.
pub fn exit_from_main(dir: &std::path::Path, rt: tokio::runtime::Runtime) -> ! {
    append(&dir.join("exit_at"), &unix_ms().to_string());
    std::mem::forget(rt);
    std::process::exit(0);
}

/// A child process played to its end (see [`run_child`]); its directory is removed when
/// this is dropped.
pub struct Played {
    pub code: Option<i32>,
    pub stderr: String,
    pub dir: std::path::PathBuf,
    /// When the child had ended (the parent's clock, within 20 ms).
    pub ended_at: u128,
}

impl Played {
    /// The lines the child wrote to `file` in its directory.
    pub fn lines(&self, file: &str) -> Vec<String> {
        lines(&self.dir.join(file))
    }

    /// The events it recorded (see [`event`]).
    pub fn events(&self) -> Vec<String> {
        self.lines("ev")
    }

    /// The time of its first event `"{name} {event}"`.
    pub fn at(&self, what: &str) -> Option<u128> {
        self.events().iter().find_map(|l| {
            l.strip_prefix(what)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|ms| ms.parse().ok())
        })
    }

    pub fn has(&self, what: &str) -> bool {
        self.at(what).is_some()
    }

    /// When it began to exit (see [`exit_from_main`]).
    pub fn exit_at(&self) -> u128 {
        self.lines("exit_at")[0].parse().unwrap()
    }
}

impl Drop for Played {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// [`run_child`], kept as a [`Played`].
pub fn play(scenario: &str, secs: u64) -> Played {
    let c = run_child(scenario, secs);
    Played {
        code: c.code,
        stderr: c.stderr,
        dir: c.dir,
        ended_at: unix_ms(),
    }
}

/// [`play`], asserting that the child exited with 0 (it was not killed at its deadline),
/// with the head of its stderr if it did not.
pub fn play_to_its_end(scenario: &str, secs: u64) -> Played {
    let played = play(scenario, secs);
    assert_eq!(played.code, Some(0), "{}", stderr_head(&played.stderr));
    played
}

/// In the `child` test: the scenario to play, and the directory to write to.
pub fn child_scenario() -> (String, std::path::PathBuf) {
    let scenario = std::env::var("NB_CHILD_SCENARIO").expect("NB_CHILD_SCENARIO");
    let dir = std::env::var("NB_CHILD_DIR").expect("NB_CHILD_DIR");
    (scenario, dir.into())
}

/// The first lines of a child's stderr, without a backtrace's indented ones, on one line:
/// what a failed assertion on a child's exit shows.
pub fn stderr_head(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("  "))
        .take(8)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// How a child process ended.
pub struct Child {
    /// Its exit code; `None` if it was still running at the deadline (then killed).
    pub code: Option<i32>,
    pub stderr: String,
    /// The directory it wrote to (the caller removes it).
    pub dir: std::path::PathBuf,
}

/// Runs this test binary's ignored `child` test as a child process playing `scenario`,
/// with a fresh directory (one per call: two tests of one process may play the same
/// scenario at once under `cargo test`); kills it after `secs`.
pub fn run_child(scenario: &str, secs: u64) -> Child {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let exe = std::env::current_exe().unwrap();
    let binary = exe.file_stem().unwrap().to_string_lossy().into_owned();
    let dir = std::env::temp_dir().join(format!(
        "nb_aiopool_{binary}_{scenario}_{}_{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(exe)
        .args([
            "child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NB_CHILD_SCENARIO", scenario)
        .env("NB_CHILD_DIR", &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.code().unwrap_or(-1));
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Child { code, stderr, dir }
}

/// A private SmartAioPool with one slot and a queue of `queue`, not finished at exit: the
/// pool [`fill_smart_from_a_new_runtime`] is given in the tests of stranded re-runs.
pub fn one_slot_smart(queue: usize) -> SmartAioPool {
    SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(queue)
        .auto_shutdown(false)
        .process_wide(false)
        .build()
}

/// On a new current-thread runtime V (returned, alive), fills `pool` with a task that
/// never ends on its first run (returns 1 when run again) and a queued one (returns 2);
/// returns once the first run has started.
pub fn fill_smart_from_a_new_runtime(
    pool: &SmartAioPool,
) -> (
    tokio::runtime::Runtime,
    nb_aiopool::TaskHandle<u32>,
    nb_aiopool::TaskHandle<u32>,
) {
    let rt_v = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (first, second) = rt_v.block_on(async {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let first = pool
            .submit(move || {
                let again = r.fetch_add(1, Ordering::SeqCst) > 0;
                async move {
                    if !again {
                        std::future::pending::<()>().await;
                    }
                    1u32
                }
            })
            .await
            .unwrap();
        let second = pool.submit(|| async { 2u32 }).await.unwrap();
        // Until the first task's first run has started (a reservation counts as running
        // before its slot task runs).
        while runs.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        tokio::task::yield_now().await;
        (first, second)
    });
    assert_eq!((pool.stats().running, pool.stats().queued), (1, 1));
    (rt_v, first, second)
}

/// A SmartAioPool recipe whose first run never ends (it is to be cut off by the end of its
/// runtime) and whose later runs return `value`; `runs` counts the runs.
pub fn cut_off_once(
    runs: &Arc<AtomicUsize>,
    value: u32,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = u32> + Send>> + Send + Sync + 'static
{
    let runs = Arc::clone(runs);
    move || {
        let first = runs.fetch_add(1, Ordering::SeqCst) == 0;
        Box::pin(async move {
            if first {
                std::future::pending::<()>().await;
            }
            value
        })
    }
}

/// A CommonAioPool of `c` slots and a queue of `q` that the process-wide functions leave
/// alone (a test's own).
pub fn common_local(c: usize, q: usize) -> CommonAioPool {
    common_builder(c, q).build()
}

/// A CommonAioPool, a NoQueueAioPool and a SmartAioPool of `c` slots (a queue of `q` where
/// there is one), each the test's own (`process_wide(false)`, no exit run).
pub fn local_pools(c: usize, q: usize) -> Vec<Pool> {
    flow_pools(c, q, c, FlowLimits::default())
}

/// Flow-control settings, the same for each pool of [`flow_pools`].
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowLimits {
    pub max_per_key: Option<usize>,
    pub weight_capacity: Option<u64>,
    /// `rate_limit(count, per)`.
    pub rate: Option<(u32, std::time::Duration)>,
}

impl FlowLimits {
    /// `max_per_key(n)` alone.
    pub fn keys(n: usize) -> Self {
        FlowLimits {
            max_per_key: Some(n),
            ..FlowLimits::default()
        }
    }
}

/// As [`local_pools`], each pool with `limits`, and NoQueueAioPool with `no_queue_c` slots
/// (a test may give it the others' queue places as well, where its held tasks wait).
pub fn flow_pools(c: usize, q: usize, no_queue_c: usize, limits: FlowLimits) -> Vec<Pool> {
    let (common, no_queue, smart) = flow_builders(c, q, no_queue_c, limits);
    vec![
        Pool::Common(common.build()),
        Pool::NoQueue(no_queue.build()),
        Pool::Smart(smart.build()),
    ]
}

/// The builders of [`flow_pools`]' pools, for a test that sets more before building.
pub fn flow_builders(
    c: usize,
    q: usize,
    no_queue_c: usize,
    limits: FlowLimits,
) -> (
    nb_aiopool::CommonAioPoolBuilder,
    nb_aiopool::NoQueueAioPoolBuilder,
    nb_aiopool::SmartAioPoolBuilder,
) {
    let mut common = common_builder(c, q);
    let mut no_queue = NoQueueAioPool::builder()
        .max_concurrency(no_queue_c)
        .process_wide(false);
    let mut smart = SmartAioPool::builder()
        .max_concurrency(c)
        .max_queue_size(q)
        .process_wide(false)
        .auto_shutdown(false);
    if let Some(k) = limits.max_per_key {
        common = common.max_per_key(k);
        no_queue = no_queue.max_per_key(k);
        smart = smart.max_per_key(k);
    }
    if let Some(w) = limits.weight_capacity {
        common = common.weight_capacity(w);
        no_queue = no_queue.weight_capacity(w);
        smart = smart.weight_capacity(w);
    }
    if let Some((count, per)) = limits.rate {
        common = common.rate_limit(count, per);
        no_queue = no_queue.rate_limit(count, per);
        smart = smart.rate_limit(count, per);
    }
    (common, no_queue, smart)
}

/// The builder of [`common_local`]'s pool, for a test that sets more.
pub fn common_builder(c: usize, q: usize) -> nb_aiopool::CommonAioPoolBuilder {
    CommonAioPool::builder()
        .max_concurrency(c)
        .max_queue_size(q)
        .process_wide(false)
}

/// A task that counts its runs in `runs` and returns 7.
pub fn counted(runs: &Arc<AtomicUsize>) -> impl std::future::Future<Output = u32> + Send + 'static {
    let runs = runs.clone();
    async move {
        runs.fetch_add(1, Ordering::SeqCst);
        7
    }
}

/// `n` SmartAioPools (`auto_shutdown`, the exit take-over's) named `{prefix}0`, `{prefix}1`,
/// ..., re-running interrupted tasks or not.
pub fn named_smart_pools(prefix: &str, n: usize, rerun: bool) -> Vec<SmartAioPool> {
    (0..n)
        .map(|i| {
            SmartAioPool::builder()
                .name(format!("{prefix}{i}"))
                .rerun_interrupted(rerun)
                .build()
        })
        .collect()
}

/// A SmartAioPool of `c` slots that the process-wide functions and the exit hook leave
/// alone (a test's own).
pub fn smart_local(c: usize) -> SmartAioPool {
    SmartAioPool::builder()
        .max_concurrency(c)
        .process_wide(false)
        .auto_shutdown(false)
        .build()
}

/// Polls `fut` to completion on the calling thread, outside any tokio runtime (a plain
/// executor, as `futures::executor::block_on`).
pub fn plain_block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// Runs `f` on a thread of its own and fails if it has not returned within `secs`.
pub fn on_thread_within<T: Send + 'static>(
    what: &str,
    secs: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    on_thread_or_else(what, secs, f, |what, secs| {
        panic!("timed out ({secs} s): {what}")
    })
}

/// [`on_thread_within`] with what a time-out does (`timed_out(what, secs)`, which is not
/// to return).
pub fn on_thread_or_else<T: Send + 'static>(
    what: &str,
    secs: u64,
    f: impl FnOnce() -> T + Send + 'static,
    timed_out: impl FnOnce(&str, u64) -> T,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => timed_out(what, secs),
    }
}

/// Polls `wait` (a pool's `wait()`, whose first poll adds a claimer on the calling
/// runtime) until a task of current-thread runtime `a`, not driven, has been handed over to
/// `a`: its slot task spawned there, one task more than `a_tasks` (read after its submit).
/// Fails if `wait` ends first, or after 30 s. Not a fixed time: on a loaded machine the
/// claimer may not run for that long, and the task is then only reserved a slot, which a
/// task queued ahead of it meanwhile would take (RELIABILITY.md, 413 and 416).
pub async fn polled_until_handed_over(
    wait: impl std::future::Future<Output = ()>,
    a: &tokio::runtime::Runtime,
    a_tasks: usize,
) {
    let handed_over = async {
        while a.metrics().num_alive_tasks() <= a_tasks {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    };
    tokio::select! {
        () = wait => panic!("wait() returned before the task was handed over"),
        () = within("the task handed over", handed_over) => {}
    }
}

/// Waits (bounded, sleeping the thread) until `cond` holds.
pub fn until(what: &str, cond: impl Fn() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < end,
            "timed out (10 s) waiting for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// A pool of one slot and no queue whose one task's first run never ends, started on a
/// new multi-thread runtime (returned): once that runtime is dropped, the task is queued
/// again with no live runtime: the pool is stranded and full.
pub fn full_smart_pool_on_a_runtime(
    runs: &Arc<AtomicUsize>,
) -> (
    SmartAioPool,
    tokio::runtime::Runtime,
    nb_aiopool::TaskHandle<u32>,
) {
    let pool = SmartAioPool::builder()
        .max_concurrency(1)
        .max_queue_size(0)
        .process_wide(false)
        .auto_shutdown(false)
        .build();
    let rt = multi_thread_of(1);
    let h = rt.block_on(pool.submit(cut_off_once(runs, 9))).unwrap();
    until("the first run", || runs.load(Ordering::SeqCst) == 1);
    (pool, rt, h)
}

/// The message of a caught panic (`&str` or `String` payloads; empty for others).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// How many live threads of this process are named `comm` in `/proc` (where Linux keeps a
/// thread's name to its first 15 bytes).
///
/// One listing of `/proc/self/task` may miss live threads: Linux stops listing a
/// process's threads at one that exits while the listing is on it (`next_tid` in
/// `fs/proc/base.c` finds no next thread once `pid_alive` fails), so every thread made
/// after it goes unlisted (RELIABILITY.md, finding 279). So the threads of three listings
/// are taken together (one exit cuts one listing short), and each is then looked up by
/// its id, a lookup no other thread's exit can hide, to keep those still alive.
pub fn threads_named(comm: &str) -> usize {
    let named = |tid: u32| {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
            .is_ok_and(|c| c.trim_end() == comm)
    };
    let mut tids = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return 0;
        };
        tids.extend(
            dir.filter_map(Result::ok)
                .filter_map(|t| t.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&tid| named(tid)),
        );
    }
    tids.retain(|&tid| named(tid));
    tids.len()
}

/// A tiny seeded generator (xorshift), so that every randomized case can be replayed from
/// its seed.
pub struct Rng(u64);

impl Rng {
    /// The generator of case `seed` (any seed, 0 included).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn draw(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A draw below `n` (not 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.draw() % n
    }

    /// True with probability `pct`%.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// A SmartAioPool named `name`, of `c` slots and `q` places, not process-wide, with no
/// auto-shutdown, re-running interrupted tasks if `rerun`.
pub fn smart_named(name: &str, c: usize, q: usize, rerun: bool) -> nb_aiopool::SmartAioPool {
    nb_aiopool::SmartAioPool::builder()
        .name(name)
        .max_concurrency(c)
        .max_queue_size(q)
        .process_wide(false)
        .auto_shutdown(false)
        .rerun_interrupted(rerun)
        .build()
}

/// Finding 252's setup: A runs on a current-thread runtime `rt1` of `pool` (one slot)
/// until released; B (`b`) is submitted from another, `rt2`, and queued; A ends on `rt1`,
/// and its slot hands B to a new slot on `rt2`, which is not driven now. B has left the
/// queue and has not started. Returns `(rt1, rt2, B's handle)`.
#[allow(clippy::async_yields_async)] // the blocks hand their tasks' handles out
pub fn handed_to_an_undriven_runtime<F>(
    pool: &nb_aiopool::CommonAioPool,
    b: F,
) -> (
    tokio::runtime::Runtime,
    tokio::runtime::Runtime,
    nb_aiopool::TaskHandle<F::Output>,
)
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt1 = current_thread();
    let rt2 = current_thread();
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let a = rt1.block_on(async {
        let a = pool
            .submit(async move {
                let _ = wait.await;
            })
            .await
            .unwrap();
        tokio::task::yield_now().await;
        a
    });
    let b = rt2.block_on(async { pool.submit(b).await.unwrap() });
    assert_eq!(pool.stats().queued, 1, "B is queued");
    rt1.block_on(async {
        release.send(()).unwrap();
        within("A", a).await.unwrap();
    });
    assert_eq!(pool.stats().queued, 0, "B left the queue for a slot on rt2");
    (rt1, rt2, b)
}

/// [`handed_to_an_undriven_runtime`] for a SmartAioPool (`pool`, one slot; B a recipe,
/// `b`): A's first run waits until released (a re-run of A returns at once), and A
/// returns 1. Returns `(rt1, rt2, B's handle)`.
#[allow(clippy::async_yields_async)] // the blocks hand their tasks' handles out
pub fn smart_handed_to_an_undriven_runtime<R, Fut>(
    pool: &SmartAioPool,
    b: R,
) -> (
    tokio::runtime::Runtime,
    tokio::runtime::Runtime,
    nb_aiopool::TaskHandle<Fut::Output>,
)
where
    R: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let rt1 = current_thread();
    let rt2 = current_thread();
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let wait = std::sync::Mutex::new(Some(wait));
    let a = rt1.block_on(async {
        let a = pool
            .submit(move || {
                let w = wait.lock().unwrap().take();
                async move {
                    if let Some(w) = w {
                        let _ = w.await;
                    }
                    1u32
                }
            })
            .await
            .unwrap();
        tokio::task::yield_now().await;
        a
    });
    let b = rt2.block_on(async { pool.submit(b).await.unwrap() });
    assert_eq!(pool.stats().queued, 1, "B is queued");
    rt1.block_on(async {
        release.send(()).unwrap();
        assert_eq!(within("A", a).await.unwrap(), 1);
    });
    assert_eq!(pool.stats().queued, 0, "B left the queue for a slot on rt2");
    (rt1, rt2, b)
}

// ----- groups of the three pools ------------------------------------------------------------

/// A boxed future, for tests that give the three pools one job type.
pub type BoxFut<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// What a test submits: a factory of futures (SmartAioPool's recipe, called once per run;
/// the other two pools take the future it makes).
pub type Make<T> = Arc<dyn Fn() -> BoxFut<T> + Send + Sync>;

/// A [`Make`] of `f`.
pub fn make<T, F, Fut>(f: F) -> Make<T>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    Arc::new(move || Box::pin(f()) as BoxFut<T>)
}

/// A refused group `submit_with`: its kind, and the task handed back (for SmartAioPool, a
/// run of the recipe that came back).
pub struct Refused<T> {
    pub kind: nb_aiopool::SubmitErrorKind,
    pub back: BoxFut<T>,
}

impl<T> std::fmt::Debug for Refused<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Refused({:?})", self.kind)
    }
}

/// A group's submit future, boxed to one type.
pub type Submitting<'a, T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<nb_aiopool::TaskId, Refused<T>>> + Send + 'a>,
>;

/// A task group of one of the three pools ([`Pool::task_group`]), with one surface, for
/// jobs given as [`Make`]s.
pub enum Group<T> {
    Futures(nb_aiopool::TaskGroup<T>),
    Recipes(nb_aiopool::SmartTaskGroup<T>),
}

impl<T: Send + 'static> Group<T> {
    /// `submit(job)`; the refusal's kind on error.
    pub async fn submit(
        &mut self,
        job: Make<T>,
    ) -> Result<nb_aiopool::TaskId, nb_aiopool::SubmitErrorKind> {
        match self {
            Group::Futures(g) => g.submit(job()).await.map_err(|e| e.kind()),
            Group::Recipes(g) => g.submit(move || job()).await.map_err(|e| e.kind()),
        }
    }

    /// `try_submit(job)`; the refusal's kind on error.
    pub fn try_submit(
        &mut self,
        job: Make<T>,
    ) -> Result<nb_aiopool::TaskId, nb_aiopool::TrySubmitErrorKind> {
        match self {
            Group::Futures(g) => g.try_submit(job()).map_err(|e| e.kind()),
            Group::Recipes(g) => g.try_submit(move || job()).map_err(|e| e.kind()),
        }
    }

    /// `submit_with(job, opts)`; the refusal's kind and the task handed back on error.
    pub fn submit_with(
        &mut self,
        job: Make<T>,
        opts: nb_aiopool::SubmitOptions,
    ) -> Submitting<'_, T> {
        match self {
            Group::Futures(g) => Box::pin(async move {
                g.submit_with(job(), opts).await.map_err(|e| Refused {
                    kind: e.kind(),
                    back: e.into_inner(),
                })
            }),
            Group::Recipes(g) => Box::pin(async move {
                g.submit_with(move || job(), opts)
                    .await
                    .map_err(|e| Refused {
                        kind: e.kind(),
                        back: e.into_inner()(),
                    })
            }),
        }
    }

    /// `try_submit_with(job, opts)`; the refusal's kind and the task handed back on error.
    pub fn try_submit_with(
        &mut self,
        job: Make<T>,
        opts: nb_aiopool::SubmitOptions,
    ) -> Result<nb_aiopool::TaskId, (nb_aiopool::TrySubmitErrorKind, BoxFut<T>)> {
        match self {
            Group::Futures(g) => g
                .try_submit_with(job(), opts)
                .map_err(|e| (e.kind(), e.into_inner())),
            Group::Recipes(g) => g
                .try_submit_with(move || job(), opts)
                .map_err(|e| (e.kind(), e.into_inner()())),
        }
    }

    pub async fn join_next(&mut self) -> Option<Result<T, nb_aiopool::TaskError>> {
        match self {
            Group::Futures(g) => g.join_next().await,
            Group::Recipes(g) => g.join_next().await,
        }
    }

    pub async fn join_next_with_id(
        &mut self,
    ) -> Option<(nb_aiopool::TaskId, Result<T, nb_aiopool::TaskError>)> {
        match self {
            Group::Futures(g) => g.join_next_with_id().await,
            Group::Recipes(g) => g.join_next_with_id().await,
        }
    }

    pub async fn join_all(self) -> Vec<Result<T, nb_aiopool::TaskError>> {
        match self {
            Group::Futures(g) => g.join_all().await,
            Group::Recipes(g) => g.join_all().await,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Group::Futures(g) => g.len(),
            Group::Recipes(g) => g.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn abort_all(&self) {
        match self {
            Group::Futures(g) => g.abort_all(),
            Group::Recipes(g) => g.abort_all(),
        }
    }

    /// With `enabled`, cancel-on-panic: the group's submits go through its watcher.
    pub fn cancel_on_panic(self, enabled: bool) -> Self {
        match self {
            Group::Futures(g) => Group::Futures(g.cancel_on_panic(enabled)),
            Group::Recipes(g) => Group::Recipes(g.cancel_on_panic(enabled)),
        }
    }
}

impl<T: Send + 'static, E: Send + 'static> Group<Result<T, E>> {
    pub fn cancel_on_error(self) -> Self {
        match self {
            Group::Futures(g) => Group::Futures(g.cancel_on_error(true)),
            Group::Recipes(g) => Group::Recipes(g.cancel_on_error(true)),
        }
    }
}

impl Pool {
    /// A new task group of this pool (`group()`), as a [`Group`].
    pub fn task_group<T: Send + 'static>(&self) -> Group<T> {
        match self {
            Pool::Common(p) => Group::Futures(p.group()),
            Pool::NoQueue(p) => Group::Futures(p.group()),
            Pool::Smart(p) => Group::Recipes(p.group()),
        }
    }
}

/// A scenario run whose steps took longer than the window it plays against allows (a rate
/// window, a deadline): its thread was held up by a loaded machine, and a step meant to
/// come within the window came after it, so what it saw says nothing. See [`in_time`].
pub struct TooLate;

/// `Err(TooLate)` if the time is `deadline` or later: what a scenario played by
/// [`in_time`] read before this call was read in time if this returns `Ok`.
pub fn came_by(deadline: std::time::Instant) -> Result<(), TooLate> {
    if std::time::Instant::now() < deadline {
        Ok(())
    } else {
        Err(TooLate)
    }
}

/// Plays `scenario` (a fresh pool and runtimes each time) until one run's steps came in
/// time, up to 5 runs: a run held up past the window it assumes (its thread stalled for
/// longer than the window, on a machine loaded as CI's is) is played again, never judged.
/// Fails if none came in time. A run that came in time asserts all it checks: a fault
/// that shows whatever the timing still fails it.
pub fn in_time(what: &str, scenario: impl Fn() -> Result<(), TooLate>) {
    for _ in 0..5 {
        if scenario().is_ok() {
            return;
        }
    }
    panic!("{what}: none of 5 runs came within the window it plays against (is the machine that busy?)");
}

/// Drives `v` (a current-thread runtime left undriven) for a moment: its slot tasks poll
/// the tasks handed over to it.
pub fn drive(v: &tokio::runtime::Runtime) {
    v.block_on(async {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    });
}

/// A task `x` of `v`, a current-thread runtime left undriven, handed over to it by a slot of
/// `main` (its start charged to a rate window of one start per window then), with `main`'s
/// task `w` started a window later and ended (see [`hand_x_over_to_v`]).
pub struct HandedToV<H> {
    pub v: tokio::runtime::Runtime,
    pub main: tokio::runtime::Runtime,
    /// `x`'s handle.
    pub x: H,
    /// `x`'s runs.
    pub x_runs: Arc<AtomicUsize>,
    /// When `w` started, or before (never after): `x`'s start is charged once `main` runs
    /// (this set just before), and `w`'s comes a window after it. Not the time `w`'s body
    /// reads: its start is charged a moment before its body runs, and a check against that
    /// would let in a run whose `v` was driven just after `w`'s start left the window.
    pub w_start: std::time::Instant,
}

/// The set-up of the hand-over scenarios of a pool limited to one start per `per`: `x`
/// (`submit_x` on `v`, which returns at once, so its slot task, a claimer, is not run) is
/// taken by a slot of `main` (a 2-worker runtime), which charges its start and hands it to
/// a slot task on `v`; `w` (`submit_w` on `main`) starts a window later; returns once `w`
/// started and its end is counted (`completed() == 1`). Driven after that while `w`'s start
/// is in the window (up to `w_start + per`), `v` puts `x` back in the queue: a scenario
/// checks that with `came_by` and is played by `in_time`.
pub fn hand_x_over_to_v<H>(
    per: std::time::Duration,
    submit_x: impl FnOnce(&tokio::runtime::Runtime, &Arc<AtomicUsize>) -> H,
    submit_w: impl FnOnce(&Arc<AtomicUsize>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
    completed: impl Fn() -> u64,
) -> HandedToV<H> {
    let x_runs = Arc::new(AtomicUsize::new(0));
    let v = current_thread();
    let x = submit_x(&v, &x_runs);
    let main = multi_thread_of(2);
    let w_runs = Arc::new(AtomicUsize::new(0));
    // Nothing has taken `x` yet (`v`'s claimer is not run): its start comes after this.
    let w_start = std::time::Instant::now() + per;
    main.block_on(async {
        // `main`'s claimer takes `x` (the queue's head) and hands it to `v`; `w` waits for
        // the window.
        submit_w(&w_runs).await;
        let reached = reach(&w_runs, 1, std::time::Duration::from_secs(10)).await;
        assert_eq!(reached, 1, "w did not start within 10 s");
    });
    // `w`'s end counted by `main`'s worker (a moment after its body ran; not a fixed 20
    // ms: RELIABILITY.md, 416).
    until("w's end counted", || completed() == 1);
    HandedToV {
        v,
        main,
        x,
        x_runs,
        w_start,
    }
}
