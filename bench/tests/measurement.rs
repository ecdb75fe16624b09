//! The `compare` binary's measurements, run as a user runs them: child runs (`--child`)
//! and a parent's table. Each child is a debug build here, so only what does not depend on
//! speed is asserted.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

const COMPARE: &str = env!("CARGO_BIN_EXE_compare");

/// Runs `compare` with `args` (bounded: a hung run fails the test) and returns its stdout.
fn compare(args: &[&str]) -> String {
    compare_with(args, &[])
}

/// [`compare`] with environment variables set.
fn compare_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(COMPARE)
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run compare");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait for compare").is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("compare {args:?} ran for more than 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("compare's output");
    assert!(out.status.success(), "compare {args:?} failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The fields of a child's RESULT line.
fn result(args: &[&str]) -> BTreeMap<String, f64> {
    result_with(args, &[])
}

/// [`result`] with environment variables set.
fn result_with(args: &[&str], env: &[(&str, &str)]) -> BTreeMap<String, f64> {
    let out = compare_with(args, env);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in {out:?}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// On a current-thread runtime one thread does all the work, so the CPU a child reports
/// cannot exceed its wall time: the CPU window holds the run (and the readings), nothing
/// else. Finding: the tick rate's first look-up ran `getconf`, a child
/// process, between the first CPU reading and the start of the run: about 1.3 ms of CPU
/// per run on the project's machine (0.13 µs per task at 10,000 tasks). Here a `getconf`
/// first on the `PATH` prints its answer and 2 MB of blanks after it (which `compare`
/// reads and trims), so that a look-up inside the window cannot go unseen.
#[test]
fn a_childs_cpu_window_holds_only_its_run() {
    let dir = std::env::temp_dir().join(format!("review-bench-getconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let getconf = dir.join("getconf");
    std::fs::write(
        &getconf,
        "#!/bin/sh\necho 100\nhead -c 2000000 /dev/zero | tr '\\0' ' '\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&getconf, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let excess: Vec<f64> = (0..5)
        .map(|_| {
            let r = result_with(
                &["--child=buffer-unordered", "-n", "1", "--current-thread"],
                &[("PATH", path.as_str())],
            );
            r["cpu_s"] - r["wall_s"]
        })
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();
    // Both figures are printed to 0.1 ms.
    let excess = median(excess);
    assert!(
        excess <= 0.0002,
        "a one-task run on one thread reports {:.2} ms more CPU than wall time (median of \
         5): work outside the run is counted as the run's",
        excess * 1e3
    );
}

/// Pin: the CPU figure is the whole process's (every thread's `schedstat`), as the
/// kernel's own process total (`/proc/self/stat`, in clock ticks) says, on 2 workers.
#[test]
fn a_childs_cpu_is_the_whole_process() {
    let r = result(&["--child=spawn-permit-moved", "-n", "20000", "--threads=2"]);
    let (cpu, ticks) = (r["cpu_s"], r["cpu_ticks_s"]);
    assert!(
        (cpu - ticks).abs() <= 0.03 + 0.1 * ticks,
        "schedstat's {cpu:.4} s against the process total's {ticks:.2} s"
    );
    assert_eq!(r["completed"], 20000.0);
}

/// Pin: every run is its own child process, so a variant's peak RSS is its own, not the
/// largest one before it in the rotation (`spawn-sem-inside` holds every task at once).
#[test]
fn peak_rss_is_each_childs_own() {
    let out = compare(&[
        "--variants=spawn-sem-inside,buffer-unordered",
        "-n",
        "50000",
        "--rounds=1",
        "--quiet-wait=0",
    ]);
    let peak = |v: &str| -> f64 {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("| {v} |")))
            .unwrap_or_else(|| panic!("no row for {v} in {out}"));
        row.split('|')
            .nth(7)
            .unwrap()
            .trim()
            .parse()
            .expect("peak RSS")
    };
    let (all_at_once, streamed) = (peak("spawn-sem-inside"), peak("buffer-unordered"));
    assert!(
        streamed * 3.0 < all_at_once,
        "buffer-unordered's peak {streamed} MiB against spawn-sem-inside's {all_at_once} MiB"
    );
}
