//! The guard that keeps the naive pattern from taking the machine down: estimate what
//! spawning every task up front will cost and refuse above a share of the free memory.

use sysinfo::System;

/// The share of available memory the naive pattern may be estimated to use.
pub const MAX_SHARE: f64 = 0.5;

/// Exit code of a mode that refused to run (so `compare` can tell refusal from failure).
pub const EXIT_REFUSED: i32 = 3;

/// Memory available to this process now, in bytes: the system's available memory, capped
/// by a cgroup (container) limit if one is set. `None` if it cannot be read.
pub fn available_bytes() -> Option<u64> {
    let mut system = System::new().ok()?;
    system.refresh_memory();
    let mut available = system.available_memory();
    if let Some(limits) = system.cgroup_limits() {
        if limits.total_memory > 0 {
            available = available.min(limits.free_memory);
        }
    }
    (available > 0).then_some(available)
}

/// Refuses (with the message to print) when `count` naive tasks of about `bytes_each` would
/// need more than [`MAX_SHARE`] of `available` bytes, unless `forced`.
pub fn check_naive(
    what: &str,
    count: u64,
    bytes_each: u64,
    available: Option<u64>,
    forced: bool,
) -> Result<u64, String> {
    let estimate = count.saturating_mul(bytes_each);
    if forced {
        return Ok(estimate);
    }
    let Some(available) = available else {
        return Err(format!(
            "refusing to run the naive {what} pattern: cannot read the available memory to \
             check that ~{} for {count} tasks fits; pass --i-know-it-may-exhaust-memory to \
             run it anyway",
            human_bytes(estimate)
        ));
    };
    if (estimate as f64) > MAX_SHARE * available as f64 {
        return Err(format!(
            "refusing to run the naive {what} pattern: spawning all {count} tasks up front \
             needs about {} (~{} each), more than {:.0}% of the {} available. That is the \
             point of the demo: the pool modes run the same work in constant memory. Use \
             fewer tasks, or pass --i-know-it-may-exhaust-memory to try anyway",
            human_bytes(estimate),
            human_bytes(bytes_each),
            MAX_SHARE * 100.0,
            human_bytes(available)
        ));
    }
    Ok(estimate)
}

/// Refuses (with the message to print) when a pool mode `what`, which holds at most `held`
/// tasks of about `bytes_each` at once, would need more than [`MAX_SHARE`] of `available`
/// bytes, unless `forced`. Unlike [`check_naive`], an unknown `available` lets it run: a
/// pool's memory does not grow with the number of tasks.
pub fn check_held(
    what: &str,
    held: u64,
    bytes_each: u64,
    available: Option<u64>,
    forced: bool,
) -> Result<u64, String> {
    let estimate = held.saturating_mul(bytes_each);
    match available {
        Some(available) if !forced && (estimate as f64) > MAX_SHARE * available as f64 => {
            Err(format!(
                "refusing to run the {what} mode: the {held} tasks it holds at once \
                 (concurrency + queue) need about {} (~{} each), more than {:.0}% of the {} \
                 available. Lower --payload-bytes, --concurrency or --queue-size, or pass \
                 --i-know-it-may-exhaust-memory to try anyway",
                human_bytes(estimate),
                human_bytes(bytes_each),
                MAX_SHARE * 100.0,
                human_bytes(available)
            ))
        }
        _ => Ok(estimate),
    }
}

/// `1536` → `1.5 KiB`, binary units.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_above_the_share() {
        let gib = 1 << 30;
        assert!(check_naive("x", 1_000_000, 1000, Some(10 * gib), false).is_ok());
        let err = check_naive("x", 10_000_000, 1000, Some(10 * gib), false).unwrap_err();
        assert!(err.contains("refusing"), "{err}");
        assert!(err.contains("--i-know-it-may-exhaust-memory"), "{err}");
        assert!(check_naive("x", 10_000_000, 1000, Some(10 * gib), true).is_ok());
        assert!(check_naive("x", 1, 1, None, false).is_err());
    }

    #[test]
    fn pools_refuse_only_what_they_hold() {
        let gib = 1 << 30;
        assert!(check_held("x", 2001, 1600, Some(gib), false).is_ok());
        let err = check_held("x", 2001, gib, Some(10 * gib), false).unwrap_err();
        assert!(err.contains("refusing"), "{err}");
        assert!(check_held("x", 2001, gib, Some(10 * gib), true).is_ok());
        assert!(check_held("x", 2001, u64::MAX, None, false).is_ok());
    }

    #[test]
    fn available_memory_is_readable_here() {
        assert!(available_bytes().unwrap() > 1 << 20);
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
