//! Process-level measurements from `/proc` (Linux), std only.

use std::fs;
use std::process::Command;
use std::sync::OnceLock;

/// Clock ticks per second for `/proc/self/stat`: the kernel's `AT_CLKTCK` from
/// `/proc/self/auxv`, else `getconf CLK_TCK` (a child process: its cost would land in a
/// measured window, see [`warm_up`]), else 100.
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| auxv_clock_ticks().unwrap_or_else(getconf_clock_ticks))
}

/// `AT_CLKTCK` (17) from this process's auxiliary vector: pairs of native words.
fn auxv_clock_ticks() -> Option<u64> {
    const AT_CLKTCK: u64 = 17;
    let auxv = fs::read("/proc/self/auxv").ok()?;
    let word = std::mem::size_of::<usize>();
    let read = |b: &[u8]| -> u64 {
        let mut w = [0u8; 8];
        if cfg!(target_endian = "little") {
            w[..b.len()].copy_from_slice(b);
            u64::from_le_bytes(w)
        } else {
            w[8 - b.len()..].copy_from_slice(b);
            u64::from_be_bytes(w)
        }
    };
    auxv.chunks_exact(2 * word)
        .map(|pair| (read(&pair[..word]), read(&pair[word..])))
        .find(|&(key, _)| key == AT_CLKTCK)
        .map(|(_, ticks)| ticks)
        .filter(|&t| t > 0)
}

fn getconf_clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Does, once, what the first reading of each function here would do besides reading
/// (finding the clock's tick rate): call it before the first reading of a measured window,
/// so that the window holds the run alone.
pub fn warm_up() {
    clock_ticks();
}

/// CPU seconds used so far by this process: the sum of every live thread's on-CPU time
/// from `/proc/self/task/*/schedstat` (nanoseconds; up to date for the calling thread and
/// for threads that are not running, while another thread running at that moment may lag
/// by up to a scheduler tick), or, where that file does
/// not exist, [`process_cpu_seconds_ticks`]. Threads that already exited are not counted
/// by the former, so take both readings while the same threads are alive (a tokio
/// runtime's workers are).
pub fn process_cpu_seconds() -> f64 {
    schedstat_cpu_seconds().unwrap_or_else(process_cpu_seconds_ticks)
}

fn schedstat_cpu_seconds() -> Option<f64> {
    // The kernel adds a running thread's time to its sum only when the thread is switched
    // out or at a scheduler tick: read as it is, the calling thread's own figure lags by
    // up to a tick (about 1-2 ms here), so a window's first reading missed CPU spent
    // before the window and counted it in. A yield brings the caller's figure up to date.
    std::thread::yield_now();
    let mut ns: u64 = 0;
    for entry in fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        // A thread may exit between listing and reading: skip it.
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e9)
}

/// User + system CPU seconds used so far by this whole process (all threads, including
/// threads that already exited). Resolution: one clock tick (usually 10 ms).
pub fn process_cpu_seconds_ticks() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = &stat[stat.rfind(')').expect("malformed /proc/self/stat") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    (utime + stime) as f64 / clock_ticks() as f64
}

/// Peak resident set size of this process so far (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Current resident set size of this process (`VmRSS`), in KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn status_kib(key: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The 1-minute load average, to flag noisy runs.
pub fn load_average_1m() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The fraction (0..=1) of the machine's CPU time that was busy over `window`, from the
/// aggregate `cpu` line of `/proc/stat`.
pub fn machine_busy_fraction(window: std::time::Duration) -> f64 {
    fn sample() -> Option<(u64, u64)> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...: idle + iowait are not busy.
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        Some((total, idle))
    }
    let Some((t0, i0)) = sample() else {
        return f64::NAN;
    };
    std::thread::sleep(window);
    let Some((t1, i1)) = sample() else {
        return f64::NAN;
    };
    let dt = t1.saturating_sub(t0);
    if dt == 0 {
        return f64::NAN;
    }
    1.0 - (i1.saturating_sub(i0)) as f64 / dt as f64
}

/// Context switches of this process so far, `(voluntary, involuntary)`, summed over every
/// live thread (`/proc/self/task/*/status`; `/proc/self/status` alone counts only the main
/// thread). Threads that already exited are not counted: take both readings while the
/// same threads are alive, as for [`process_cpu_seconds`].
pub fn context_switches() -> (u64, u64) {
    let Ok(dir) = fs::read_dir("/proc/self/task") else {
        return (0, 0);
    };
    let (mut vol, mut invol) = (0, 0);
    for entry in dir.flatten() {
        let Ok(text) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        for line in text.lines() {
            let num = |v: &str| v.trim().parse::<u64>().unwrap_or(0);
            if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                vol += num(v);
            } else if let Some(v) = line.strip_prefix("nonvoluntary_ctxt_switches:") {
                invol += num(v);
            }
        }
    }
    (vol, invol)
}

#[cfg(test)]
mod tests {
    /// The tick rate read from the auxiliary vector is the one `getconf` reports.
    #[test]
    fn the_auxv_tick_rate_is_getconfs() {
        assert_eq!(
            super::auxv_clock_ticks(),
            Some(super::getconf_clock_ticks())
        );
    }
}
