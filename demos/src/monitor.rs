//! A process monitor: this process's resident memory and CPU use, reported every interval
//! from a plain thread. It lives in the demos crate, not in the library.
//!
//! This is the Rust form of the seed's `thread_show_process_cpu_usage(1)` and
//! `thread_show_process_memory_usage(1)`: start a [`ProcessMonitor`] at the top of `main`
//! and it reports a [`ProcessSample`] each interval until it is stopped or dropped. It runs
//! on its own OS thread, not on a tokio runtime, so it needs no runtime and keeps reporting
//! while every runtime worker is busy: exactly when you want to see what a flood of tasks
//! is doing to the process.
//!
//! ```
//! use std::time::Duration;
//! use nb_aiopool_demos::monitor::ProcessMonitor;
//!
//! // Prints one line per second to stderr, like the seed's helpers.
//! let monitor = ProcessMonitor::start_printing(Duration::from_secs(1)).unwrap();
//! // ... the program's work ...
//! let last = monitor.stop().unwrap();
//! assert!(last.rss_bytes > 0);
//! ```
//!
//! # What is measured
//!
//! - **Resident memory** (`rss_bytes`): the bytes of the process in physical memory, as the
//!   operating system reports them.
//! - **Peak resident memory** (`peak_rss_bytes`): on Linux the kernel's high-water mark
//!   (`VmHWM`), which counts from the start of the process and does not miss a peak that
//!   falls between two samples; elsewhere the highest value this monitor has sampled.
//! - **CPU** (`cpu_seconds`, `cpu_percent`): user + system CPU time of the whole process (all
//!   threads) since it started, and the CPU time used since the previous sample divided by
//!   the wall time between them, in percent of one core (200% = two cores busy).

use std::error::Error;
use std::fmt;
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

const MIB: f64 = 1024.0 * 1024.0;

/// One reading of this process's memory and CPU use, made by a [`ProcessMonitor`].
///
/// Dropping a sample does nothing special: it is plain data.
///
/// Its [`Display`](fmt::Display) form is the line
/// [`ProcessMonitor::start_printing`] prints, for example
/// `rss 43.1 MiB (peak 44.0 MiB) | cpu 12.3% | cpu time 0.42 s | at 3.0 s`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nb_aiopool_demos::monitor::ProcessMonitor;
///
/// let monitor = ProcessMonitor::start(Duration::from_secs(1), |_| {}).unwrap();
/// let sample = monitor.sample_now().unwrap();
/// assert!(sample.rss_bytes > 0);
/// assert!(sample.peak_rss_bytes >= sample.rss_bytes);
/// assert!(sample.cpu_seconds >= 0.0);
/// println!("{sample}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ProcessSample {
    /// Resident memory of the process now, in bytes.
    pub rss_bytes: u64,
    /// The highest resident memory so far, in bytes: on Linux the kernel's high-water mark
    /// since the process started, elsewhere the highest value the monitor has sampled.
    /// Never below `rss_bytes`.
    pub peak_rss_bytes: u64,
    /// CPU used since the previous sample (or since the monitor started), in percent of
    /// one core: 100.0 is one core busy all the time, 200.0 two cores.
    pub cpu_percent: f64,
    /// CPU time (user + system, all threads) the process has used since it started, in
    /// seconds.
    pub cpu_seconds: f64,
    /// Time since the monitor started.
    pub elapsed: Duration,
}

impl ProcessSample {
    /// [`rss_bytes`](Self::rss_bytes) in MiB.
    ///
    /// # Examples
    ///
    /// ```
    /// let monitor = nb_aiopool_demos::monitor::ProcessMonitor::start_printing(
    ///     std::time::Duration::from_secs(60),
    /// ).unwrap();
    /// let s = monitor.sample_now().unwrap();
    /// assert_eq!(s.rss_mib(), s.rss_bytes as f64 / (1024.0 * 1024.0));
    /// ```
    pub fn rss_mib(&self) -> f64 {
        self.rss_bytes as f64 / MIB
    }

    /// [`peak_rss_bytes`](Self::peak_rss_bytes) in MiB.
    ///
    /// # Examples
    ///
    /// ```
    /// let monitor = nb_aiopool_demos::monitor::ProcessMonitor::start_printing(
    ///     std::time::Duration::from_secs(60),
    /// ).unwrap();
    /// let s = monitor.sample_now().unwrap();
    /// assert!(s.peak_rss_mib() >= s.rss_mib());
    /// ```
    pub fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_bytes as f64 / MIB
    }
}

impl fmt::Display for ProcessSample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rss {:.1} MiB (peak {:.1} MiB) | cpu {:.1}% | cpu time {:.2} s | at {:.1} s",
            self.rss_mib(),
            self.peak_rss_mib(),
            self.cpu_percent,
            self.cpu_seconds,
            self.elapsed.as_secs_f64(),
        )
    }
}

/// Why a [`ProcessMonitor`] could not start.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use nb_aiopool_demos::monitor::{MonitorError, ProcessMonitor};
///
/// match ProcessMonitor::start(Duration::from_secs(1), |_| {}) {
///     Ok(monitor) => drop(monitor),
///     Err(e) => eprintln!("no monitor: {e}"), // e.g. an unsupported platform
/// }
/// ```
pub struct MonitorError {
    kind: ErrorKind,
}

enum ErrorKind {
    /// The platform (or sandbox) does not let sysinfo read this process.
    Unsupported(Option<sysinfo::Error>),
    /// The OS refused to start the monitor thread.
    Spawn(io::Error),
}

impl fmt::Debug for MonitorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Unsupported(e) => f.debug_tuple("Unsupported").field(e).finish(),
            ErrorKind::Spawn(e) => f.debug_tuple("Spawn").field(e).finish(),
        }
    }
}

impl fmt::Display for MonitorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Unsupported(Some(e)) => {
                write!(f, "cannot read this process's memory and cpu use: {e}")
            }
            ErrorKind::Unsupported(None) => {
                f.write_str("cannot read this process's memory and cpu use")
            }
            ErrorKind::Spawn(_) => f.write_str("cannot start the monitor thread"),
        }
    }
}

impl Error for MonitorError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.kind {
            ErrorKind::Unsupported(Some(e)) => Some(e),
            ErrorKind::Unsupported(None) => None,
            ErrorKind::Spawn(e) => Some(e),
        }
    }
}

/// Reports this process's resident memory and CPU use every interval, from a plain thread,
/// until it is stopped.
///
/// Start it with [`start`](Self::start) (your callback gets each [`ProcessSample`]) or
/// [`start_printing`](Self::start_printing) (one line per sample on stderr). The callback
/// runs on the monitor's own thread, named `nb-aiopool-monitor`; a callback that panics ends
/// the reporting (the panic is printed by the panic hook, the process goes on).
///
/// # Dropping
///
/// Dropping the monitor stops it without waiting: the thread wakes at once and exits, after
/// finishing a callback already under way. Dropping never blocks. To wait until no callback
/// can run any more, and to get a last reading, call [`stop`](Self::stop) instead.
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use nb_aiopool_demos::monitor::ProcessMonitor;
///
/// let (tx, rx) = mpsc::channel();
/// let monitor = ProcessMonitor::start(Duration::from_millis(10), move |sample| {
///     let _ = tx.send(*sample);
/// })
/// .unwrap();
///
/// let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
/// assert!(first.rss_bytes > 0);
/// assert!(monitor.peak_rss_bytes() >= first.rss_bytes);
/// monitor.stop();
/// ```
pub struct ProcessMonitor {
    shared: Arc<Shared>,
    interval: Duration,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    sampler: Mutex<Sampler>,
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    fn sampler(&self) -> MutexGuard<'_, Sampler> {
        // A panic while sampling cannot leave the sampler inconsistent in a way that
        // matters (every field is a plain reading), so a poisoned lock is still usable.
        self.sampler.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Sleeps until `deadline` (for ever if `None`: a deadline past what `Instant` can
    /// hold); returns `true` if the monitor was stopped meanwhile.
    fn sleep_until(&self, deadline: Option<Instant>) -> bool {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *stopped {
                return true;
            }
            let Some(deadline) = deadline else {
                stopped = self.wake.wait(stopped).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stopped = self
                .wake
                .wait_timeout(stopped, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Reads the process through sysinfo and keeps what a CPU percentage and a peak need.
struct Sampler {
    system: System,
    pid: Pid,
    started: Instant,
    last_at: Instant,
    last_cpu_ms: u64,
    peak_rss: u64,
    latest: Option<ProcessSample>,
}

impl Sampler {
    fn new() -> Result<Sampler, MonitorError> {
        let system = System::new().map_err(|e| MonitorError {
            kind: ErrorKind::Unsupported(Some(e)),
        })?;
        let now = Instant::now();
        let mut sampler = Sampler {
            system,
            pid: Pid::from_u32(std::process::id()),
            started: now,
            last_at: now,
            last_cpu_ms: 0,
            peak_rss: 0,
            latest: None,
        };
        // The baseline for the first CPU percentage; also proves the process is readable.
        let (rss, cpu_ms) = sampler.read().ok_or(MonitorError {
            kind: ErrorKind::Unsupported(None),
        })?;
        sampler.last_cpu_ms = cpu_ms;
        sampler.peak_rss = rss;
        Ok(sampler)
    }

    /// Resident bytes and cumulative CPU milliseconds, or `None` if the OS said nothing.
    fn read(&mut self) -> Option<(u64, u64)> {
        let pids = [self.pid];
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            false,
            ProcessRefreshKind::nothing()
                .with_memory()
                .with_cpu()
                .without_tasks(),
        );
        let process = self.system.process(self.pid)?;
        Some((process.memory(), process.accumulated_cpu_time()))
    }

    fn sample(&mut self) -> Option<ProcessSample> {
        let (rss, cpu_ms) = self.read()?;
        let now = Instant::now();
        let wall = now.duration_since(self.last_at).as_secs_f64();
        let cpu = cpu_ms.saturating_sub(self.last_cpu_ms) as f64 / 1000.0;
        let cpu_percent = if wall > 0.0 { cpu / wall * 100.0 } else { 0.0 };
        self.last_at = now;
        self.last_cpu_ms = cpu_ms;
        self.peak_rss = self.peak_rss.max(rss).max(kernel_peak_rss().unwrap_or(0));
        let sample = ProcessSample {
            rss_bytes: rss,
            peak_rss_bytes: self.peak_rss,
            cpu_percent,
            cpu_seconds: cpu_ms as f64 / 1000.0,
            elapsed: now.duration_since(self.started),
        };
        self.latest = Some(sample);
        Some(sample)
    }
}

/// The kernel's resident-memory high-water mark of this process (`VmHWM`), Linux only.
#[cfg(target_os = "linux")]
fn kernel_peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(not(target_os = "linux"))]
fn kernel_peak_rss() -> Option<u64> {
    None
}

impl ProcessMonitor {
    /// Starts a monitor that calls `callback` with a fresh [`ProcessSample`] every
    /// `interval`, on its own thread, until the monitor is stopped or dropped.
    ///
    /// The first call comes one `interval` after the start. If a callback takes longer than
    /// the interval, the ticks it overran are skipped, not bunched up. An interval too long
    /// for the clock to count (`Duration::MAX`) never elapses: the monitor only measures
    /// ([`sample_now`](Self::sample_now), [`stop`](Self::stop)).
    ///
    /// # Errors
    ///
    /// A [`MonitorError`] if this platform (or sandbox) does not let the process read its
    /// own memory and CPU use, or if the thread cannot be started.
    ///
    /// # Panics
    ///
    /// Panics if `interval` is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use nb_aiopool_demos::monitor::ProcessMonitor;
    ///
    /// let highest = Arc::new(AtomicU64::new(0));
    /// let seen = highest.clone();
    /// let monitor = ProcessMonitor::start(Duration::from_millis(100), move |s| {
    ///     seen.fetch_max(s.rss_bytes, Ordering::Relaxed);
    /// })
    /// .unwrap();
    /// // ... work ...
    /// let last = monitor.stop().unwrap();
    /// assert!(last.peak_rss_bytes >= highest.load(Ordering::Relaxed));
    /// ```
    pub fn start<F>(interval: Duration, callback: F) -> Result<ProcessMonitor, MonitorError>
    where
        F: FnMut(&ProcessSample) + Send + 'static,
    {
        assert!(
            !interval.is_zero(),
            "ProcessMonitor::start: the interval must be greater than zero"
        );
        let shared = Arc::new(Shared {
            sampler: Mutex::new(Sampler::new()?),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("nb-aiopool-monitor".into())
            .spawn({
                let shared = shared.clone();
                move || run(&shared, interval, callback)
            })
            .map_err(|e| MonitorError {
                kind: ErrorKind::Spawn(e),
            })?;
        Ok(ProcessMonitor {
            shared,
            interval,
            thread: Some(thread),
        })
    }

    /// Starts a monitor that prints each sample as one line on stderr, prefixed with
    /// `[monitor]`: the seed's `thread_show_process_cpu_usage` and
    /// `thread_show_process_memory_usage` in one.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// # Panics
    ///
    /// Panics if `interval` is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use nb_aiopool_demos::monitor::ProcessMonitor;
    ///
    /// // [monitor] rss 43.1 MiB (peak 44.0 MiB) | cpu 12.3% | cpu time 0.42 s | at 1.0 s
    /// let _monitor = ProcessMonitor::start_printing(Duration::from_secs(1)).unwrap();
    /// // ... the program's work; the monitor stops when `_monitor` is dropped ...
    /// ```
    pub fn start_printing(interval: Duration) -> Result<ProcessMonitor, MonitorError> {
        ProcessMonitor::start(interval, |sample| {
            // A closed stderr is no reason to stop the program.
            let _ = writeln!(io::stderr().lock(), "[monitor] {sample}");
        })
    }

    /// Takes a reading now, on the calling thread, outside the regular schedule.
    ///
    /// Its `cpu_percent` covers the time since the previous reading (scheduled or not).
    /// Returns `None` if the operating system gave no reading this time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use nb_aiopool_demos::monitor::ProcessMonitor;
    ///
    /// let monitor = ProcessMonitor::start(Duration::from_secs(60), |_| {}).unwrap();
    /// let before = monitor.sample_now().unwrap();
    /// let after = monitor.sample_now().unwrap();
    /// assert!(after.elapsed >= before.elapsed);
    /// assert!(after.cpu_seconds >= before.cpu_seconds);
    /// ```
    pub fn sample_now(&self) -> Option<ProcessSample> {
        self.shared.sampler().sample()
    }

    /// The most recent reading, scheduled or taken with [`sample_now`](Self::sample_now);
    /// `None` before the first one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use nb_aiopool_demos::monitor::ProcessMonitor;
    ///
    /// let monitor = ProcessMonitor::start(Duration::from_secs(60), |_| {}).unwrap();
    /// assert!(monitor.latest().is_none());
    /// let s = monitor.sample_now().unwrap();
    /// assert_eq!(monitor.latest(), Some(s));
    /// ```
    pub fn latest(&self) -> Option<ProcessSample> {
        self.shared.sampler().latest
    }

    /// The highest resident memory seen so far, in bytes (see
    /// [`ProcessSample::peak_rss_bytes`]): at least the resident memory when the monitor
    /// started.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use nb_aiopool_demos::monitor::ProcessMonitor;
    ///
    /// let monitor = ProcessMonitor::start(Duration::from_secs(1), |_| {}).unwrap();
    /// let big = vec![1u8; 32 << 20]; // touch 32 MiB
    /// let now = monitor.sample_now().unwrap();
    /// assert!(monitor.peak_rss_bytes() >= now.rss_bytes);
    /// drop(big);
    /// ```
    pub fn peak_rss_bytes(&self) -> u64 {
        self.shared.sampler().peak_rss
    }

    /// The interval the monitor was started with.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use nb_aiopool_demos::monitor::ProcessMonitor;
    ///
    /// let monitor = ProcessMonitor::start(Duration::from_secs(2), |_| {}).unwrap();
    /// assert_eq!(monitor.interval(), Duration::from_secs(2));
    /// ```
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Stops the monitor, waits until its thread has exited (so the callback will not run
    /// again), and returns a last reading taken after that.
    ///
    /// Waits at most for a callback already under way. Returns `None` if the operating
    /// system gave no last reading.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use nb_aiopool_demos::monitor::ProcessMonitor;
    ///
    /// let monitor = ProcessMonitor::start(Duration::from_millis(50), |_| {}).unwrap();
    /// let last = monitor.stop().unwrap();
    /// println!("used {:.2} s of cpu, peak {:.1} MiB", last.cpu_seconds, last.peak_rss_mib());
    /// ```
    pub fn stop(mut self) -> Option<ProcessSample> {
        self.shared.stop();
        if let Some(thread) = self.thread.take() {
            // A panicking callback already ended the thread; its panic was reported then.
            let _ = thread.join();
        }
        self.shared.sampler().sample()
    }
}

fn run<F>(shared: &Shared, interval: Duration, mut callback: F)
where
    F: FnMut(&ProcessSample),
{
    // Checked: an interval too long for `Instant` (`Duration::MAX`) means "never", not a
    // panic on this thread.
    let mut deadline = Instant::now().checked_add(interval);
    while !shared.sleep_until(deadline) {
        // The sampler lock is released before the callback runs, so `sample_now` and
        // `peak_rss_bytes` never wait for a slow callback.
        let sample = shared.sampler().sample();
        if let Some(sample) = sample {
            if catch_unwind(AssertUnwindSafe(|| callback(&sample))).is_err() {
                return;
            }
        }
        let now = Instant::now();
        deadline = deadline.and_then(|d| d.checked_add(interval));
        if deadline.is_some_and(|d| d <= now) {
            // Overran (slow callback, starved thread): skip the missed ticks.
            deadline = now.checked_add(interval);
        }
    }
}

impl Drop for ProcessMonitor {
    fn drop(&mut self) {
        // Never blocks: the thread is told to stop and left to exit on its own.
        self.shared.stop();
    }
}

impl fmt::Debug for ProcessMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessMonitor")
            .field("interval", &self.interval)
            .field("latest", &self.latest())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn collecting(interval: Duration) -> (ProcessMonitor, mpsc::Receiver<ProcessSample>) {
        let (tx, rx) = mpsc::channel();
        let monitor = ProcessMonitor::start(interval, move |s| {
            let _ = tx.send(*s);
        })
        .expect("monitor starts on this platform");
        (monitor, rx)
    }

    #[test]
    fn reports_each_interval_with_growing_elapsed_time() {
        let (monitor, rx) = collecting(Duration::from_millis(5));
        let samples: Vec<_> = (0..5)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        for pair in samples.windows(2) {
            assert!(pair[1].elapsed > pair[0].elapsed);
            assert!(pair[1].cpu_seconds >= pair[0].cpu_seconds);
        }
        for s in &samples {
            assert!(s.rss_bytes > 0);
            assert!(s.peak_rss_bytes >= s.rss_bytes);
            assert!(s.cpu_percent >= 0.0);
            assert!(s.elapsed >= Duration::from_millis(5));
        }
        assert!(monitor.stop().is_some());
    }

    #[test]
    fn sees_memory_that_is_touched() {
        let monitor = ProcessMonitor::start(Duration::from_secs(3600), |_| {}).unwrap();
        let before = monitor.sample_now().unwrap();
        // 64 MiB, every page written, so it is resident.
        let block = vec![7u8; 64 << 20];
        let during = monitor.sample_now().unwrap();
        assert!(
            during.rss_bytes >= before.rss_bytes + (48 << 20),
            "rss went from {} to {} after touching 64 MiB",
            before.rss_bytes,
            during.rss_bytes
        );
        assert!(monitor.peak_rss_bytes() >= during.rss_bytes);
        assert_eq!(block.iter().map(|&b| b as u64).sum::<u64>(), 7 * (64 << 20));
        drop(block);
        // The peak does not go down when memory is given back.
        let after = monitor.sample_now().unwrap();
        assert!(after.peak_rss_bytes >= during.rss_bytes);
    }

    #[test]
    fn counts_cpu_time_that_is_burnt() {
        let monitor = ProcessMonitor::start(Duration::from_secs(3600), |_| {}).unwrap();
        let before = monitor.sample_now().unwrap();
        // Burn until the process has 0.2 s more CPU time. On a loaded machine that takes
        // longer, but it must happen: the 60 s limit only catches a monitor that does not
        // count CPU time at all.
        let start = Instant::now();
        let mut x = 0u64;
        let after = loop {
            let slice = Instant::now();
            while slice.elapsed() < Duration::from_millis(20) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            let now = monitor.sample_now().unwrap();
            if now.cpu_seconds - before.cpu_seconds >= 0.2 {
                break now;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "cpu time stuck at {} s (from {} s) after burning for a minute",
                now.cpu_seconds,
                before.cpu_seconds
            );
        };
        // The last slice is the one that crossed the threshold, so it used CPU.
        assert!(after.cpu_percent > 0.0, "cpu {}%", after.cpu_percent);
        assert!(after.elapsed > before.elapsed);
    }

    #[test]
    fn stop_ends_the_callbacks() {
        let (monitor, rx) = collecting(Duration::from_millis(1));
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        monitor.stop();
        // The sender lived in the callback, owned by the thread that `stop` joined.
        while rx.try_recv().is_ok() {}
        assert_eq!(rx.try_recv(), Err(mpsc::TryRecvError::Disconnected));
    }

    #[test]
    fn drop_stops_the_thread_without_waiting_for_the_interval() {
        let (monitor, rx) = collecting(Duration::from_secs(3600));
        drop(monitor);
        // The thread wakes at once and drops the callback (and its sender) on exit.
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn a_panicking_callback_ends_reporting_but_not_the_monitor() {
        let monitor = ProcessMonitor::start(Duration::from_millis(1), |_| {
            panic!("callback failure (expected by the test)")
        })
        .unwrap();
        // Once the thread is gone, `stop` still joins and still reads.
        assert!(monitor.stop().is_some());
    }

    #[test]
    #[should_panic(expected = "interval must be greater than zero")]
    fn zero_interval_panics() {
        let _ = ProcessMonitor::start(Duration::ZERO, |_| {});
    }

    #[test]
    fn display_and_debug() {
        let monitor = ProcessMonitor::start(Duration::from_secs(1), |_| {}).unwrap();
        let s = monitor.sample_now().unwrap();
        let line = s.to_string();
        assert!(line.starts_with("rss "), "{line}");
        assert!(line.contains("MiB") && line.contains("cpu"), "{line}");
        assert!(format!("{monitor:?}").starts_with("ProcessMonitor"));
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ProcessMonitor>();
        check::<ProcessSample>();
        check::<MonitorError>();
    }
}
