//! Runs one mode as a child process of the current executable, so each mode's peak memory
//! is its own, and collects the `RESULT` lines it prints.

use std::io;
use std::process::{Command, ExitStatus, Stdio};

use crate::report::ResultLine;

/// What a child run produced.
#[derive(Debug)]
pub struct ChildRun {
    /// The child's exit status.
    pub status: ExitStatus,
    /// The `RESULT` lines on its stdout.
    pub results: Vec<ResultLine>,
    /// Its whole stdout.
    pub stdout: String,
}

/// Runs `current_exe args...` with stderr passed through (progress bar, monitor lines,
/// messages) and stdout captured; echoes the captured stdout once the child is done.
///
/// # Errors
///
/// If the executable cannot be found or started.
pub fn run_self(args: &[String]) -> io::Result<ChildRun> {
    let exe = std::env::current_exe()?;
    let output = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{stdout}");
    Ok(ChildRun {
        status: output.status,
        results: ResultLine::find_all(&stdout),
        stdout,
    })
}
