//! What a running mode shows: an indicatif progress bar with throughput, and the process
//! monitor's line every interval. Both live on plain threads, so they keep going while the
//! runtime is saturated.

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::monitor::{MonitorError, ProcessMonitor, ProcessSample};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often the bar's position is refreshed from the counter.
const BAR_REFRESH: Duration = Duration::from_millis(100);

/// Whether to draw a progress bar: only on a terminal, and not with `--no-progress`.
pub fn want_bar(no_progress: bool) -> bool {
    !no_progress && std::io::stderr().is_terminal()
}

/// A progress bar over a shared completion counter, plus the process monitor.
///
/// Dropping it stops the monitor and the bar thread without waiting; call
/// [`finish`](Self::finish) to get the final reading.
#[derive(Debug)]
pub struct Live {
    bar: ProgressBar,
    counter: &'static AtomicU64,
    monitor: Option<ProcessMonitor>,
    done: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Live {
    /// Starts the bar (hidden unless `show_bar`) counting `counter` towards `total`, and the
    /// monitor printing a `[monitor <label>]` line every `monitor_every` (never if `None`;
    /// it still measures).
    ///
    /// # Errors
    ///
    /// If the process monitor cannot run on this platform.
    pub fn start(
        label: &str,
        unit: &str,
        total: u64,
        counter: &'static AtomicU64,
        show_bar: bool,
        monitor_every: Option<Duration>,
    ) -> Result<Live, MonitorError> {
        let bar = if show_bar {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let template = format!(
            "{{prefix:>10}} [{{elapsed_precise}}] {{wide_bar:.cyan/blue}} {{human_pos}}/{{human_len}} {unit} \
             {{rate:>12}} eta {{eta}}"
        );
        bar.set_style(
            ProgressStyle::with_template(&template)
                .expect("the template is valid")
                .with_key("rate", |state: &ProgressState, w: &mut dyn fmt::Write| {
                    let _ = write!(w, "{:.0}/s", state.per_sec());
                })
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());

        let monitor = match monitor_every {
            Some(every) => {
                let bar = bar.clone();
                let label = label.to_string();
                ProcessMonitor::start(every, move |sample| {
                    // suspend: the line goes above the bar instead of through it; with a
                    // hidden bar it simply prints.
                    bar.suspend(|| crate::errln!("[monitor {label}] {sample}"));
                })?
            }
            // Measures only (for the final reading): an interval that never elapses.
            None => ProcessMonitor::start(Duration::MAX, |_| {})?,
        };

        let done = Arc::new(AtomicBool::new(false));
        let ticker = show_bar.then(|| {
            let (bar, done) = (bar.clone(), done.clone());
            std::thread::spawn(move || {
                // Relaxed: a display position, nothing is published through these.
                while !done.load(Ordering::Relaxed) {
                    bar.set_position(counter.load(Ordering::Relaxed));
                    std::thread::sleep(BAR_REFRESH);
                }
            })
        });
        Ok(Live {
            bar,
            counter,
            monitor: Some(monitor),
            done,
            ticker,
        })
    }

    /// A reading now (peak so far, CPU so far).
    pub fn sample_now(&self) -> Option<ProcessSample> {
        self.monitor.as_ref()?.sample_now()
    }

    /// Prints a line above the bar.
    pub fn println(&self, line: &str) {
        self.bar.suspend(|| crate::errln!("{line}"));
    }

    /// Stops the bar (leaving its last state on screen) and the monitor; returns the
    /// monitor's last reading.
    pub fn finish(mut self) -> Option<ProcessSample> {
        self.done.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
        self.bar.set_position(self.counter.load(Ordering::Relaxed));
        self.bar.abandon();
        self.monitor.take()?.stop()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}
