//! What the demos' integration tests share: running a built demo binary with a time
//! limit and reading what it printed.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nb_aiopool_demos::report::ResultLine;

pub const BACKPRESSURE: &str = env!("CARGO_BIN_EXE_backpressure");
pub const HTTP_LOAD: &str = env!("CARGO_BIN_EXE_http_load");

/// What a run printed, and how it ended (`None`: still running at the limit, killed).
pub struct Run {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn results(&self) -> Vec<ResultLine> {
        ResultLine::find_all(&self.stdout)
    }

    pub fn describe(&self) -> String {
        format!(
            "status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    /// The one `RESULT` line, or a failure that shows the whole run.
    pub fn result(&self) -> ResultLine {
        let found = self.results();
        assert_eq!(
            found.len(),
            1,
            "one RESULT line expected\n{}",
            self.describe()
        );
        found.into_iter().next().unwrap()
    }

    /// A bad argument: exit code 2 (the demos' README), a message, no panic.
    pub fn assert_usage_error(&self) {
        assert!(
            !self.stderr.contains("panicked"),
            "a panic instead of an error message:\n{}",
            self.describe()
        );
        assert_eq!(self.code(), Some(2), "{}", self.describe());
    }
}

pub fn collect(mut child: Child, limit: Duration) -> Run {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Runs a demo quietly (no bar, no monitor lines), killed after `limit`.
pub fn run_for(exe: &str, args: &[&str], limit: Duration) -> Run {
    let child = Command::new(exe)
        .args(args)
        .args(["--no-progress", "--monitor-interval-ms=0"])
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo binary starts");
    collect(child, limit)
}

pub fn num(r: &ResultLine, key: &str) -> f64 {
    r.num(key)
        .unwrap_or_else(|| panic!("`{key}` missing or not a number in {r}"))
}

pub fn run(exe: &str, args: &[&str]) -> Run {
    run_for(exe, args, Duration::from_secs(30))
}
