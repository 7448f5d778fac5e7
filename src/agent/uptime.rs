//! How long this process has existed, logged when the agent is ready to receive tasks:
//! - `startup_ms`: since `main` began ([`mark_start`], the first thing `cli::main` does), i.e.
//!   from the program's start after `exec` (only the dynamic loader runs before it);
//! - `process_age_ms`: since the kernel created the process (`/proc/self/stat`'s start time
//!   against `CLOCK_BOOTTIME`; one clock tick of resolution, 10 ms at the usual 100 Hz). In a
//!   container this counts from the fork of the runtime's init process, so it also holds the
//!   engine's own set-up before `exec`.
//!
//! The container start-up benchmark reads both (`benches/container_start.rs`).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Records the start of `main`; later calls change nothing.
pub fn mark_start() {
    STARTED.get_or_init(Instant::now);
}

/// Time since [`mark_start`]; `None` when it was never called (e.g. in unit tests).
pub(super) fn since_start() -> Option<Duration> {
    STARTED.get().map(Instant::elapsed)
}

/// The process's age; `None` where `/proc` is not mounted or does not parse.
pub(super) fn age() -> Option<Duration> {
    // The agent's own /proc entry: no task can write it.
    #[allow(
        clippy::disallowed_methods,
        reason = "the agent's own /proc/self/stat (allow-list:fs)"
    )]
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let now = Duration::new(
        u64::try_from(now.tv_sec).ok()?,
        u32::try_from(now.tv_nsec).ok()?,
    );
    age_from(&stat, now, rustix::param::clock_ticks_per_second())
}

/// The age from a `/proc/<pid>/stat` line, the boot clock's reading and the tick rate.
fn age_from(stat: &str, boot_clock: Duration, ticks_per_second: u64) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may itself hold spaces or ')': the
    // fields after the last ')' start with field 3; the start time is field 22.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let start_ticks: u64 = rest.split_whitespace().nth(22 - 3)?.parse().ok()?;
    if ticks_per_second == 0 {
        return None;
    }
    let started = Duration::from_secs(start_ticks / ticks_per_second)
        + Duration::from_nanos((start_ticks % ticks_per_second) * 1_000_000_000 / ticks_per_second);
    boot_clock.checked_sub(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_field_22_even_when_the_name_holds_parentheses() {
        // Fields 3..=21 are placeholders; field 22 (start time) is 12345 ticks.
        let mut fields: Vec<String> = (3..=21).map(|n| n.to_string()).collect();
        fields.push("12345".into());
        fields.push("999".into());
        let stat = format!("42 (a) b) c) {}", fields.join(" "));
        let age = age_from(&stat, Duration::from_millis(123_550), 100).unwrap();
        assert_eq!(age, Duration::from_millis(100));
        assert_eq!(age_from("42 (x) R 1", Duration::from_secs(1), 100), None);
        assert_eq!(
            age_from(&stat, Duration::from_secs(1), 100),
            None,
            "started in the future"
        );
    }

    #[test]
    fn this_test_process_is_younger_than_the_machine_and_older_than_nothing() {
        let age = age().expect("/proc/self/stat parses");
        assert!(age < Duration::from_secs(24 * 3600), "{age:?}");
    }
}
