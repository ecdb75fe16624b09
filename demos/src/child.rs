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
/// On Linux the child is killed (SIGKILL) when the thread that started it ends, so when
/// this process is killed (SIGTERM, SIGKILL, ...): a long run does not go on alone. The
/// calling thread must stay until the child is done, as it does here (blocking).
///
/// # Errors
///
/// If the executable cannot be found or started.
pub fn run_self(args: &[String]) -> io::Result<ChildRun> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    #[cfg(target_os = "linux")]
    die_with_parent(&mut command);
    let output = command.output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    crate::out!("{stdout}");
    Ok(ChildRun {
        status: output.status,
        results: ResultLine::find_all(&stdout),
        stdout,
    })
}

/// Makes the child ask the kernel for SIGKILL when its parent (precisely: the thread that
/// forks it) ends, `prctl(PR_SET_PDEATHSIG, SIGKILL)`, between `fork` and `exec`.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use rustix::process::{getpid, getppid, set_parent_process_death_signal, Signal};
    use std::os::unix::process::CommandExt;

    let parent = getpid();
    let hook = move || -> io::Result<()> {
        set_parent_process_death_signal(Some(Signal::KILL))?;
        // The parent may have died before the prctl: then nobody would send the signal.
        if getppid() != Some(parent) {
            return Err(rustix::io::Errno::SRCH.into());
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before `exec`, where only async-signal-safe
    // operations are allowed. It makes two system calls (`prctl`, `getppid`) through rustix,
    // compares two integers and may build an `io::Error` from an errno (no allocation); it
    // takes no lock, allocates nothing and touches no state shared with other threads.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(hook);
    }
}
