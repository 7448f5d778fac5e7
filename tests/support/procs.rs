//! Processes seen from `/proc`: which run with a marker in their command line, their state,
//! parent and session, and unique markers for hooks to carry.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Pids (other than this test process) whose command line contains `marker`, with the
/// command line (arguments joined by spaces).
pub fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(marker).then_some((pid, cmd))
        })
        .collect()
}

/// A number no other process's command line contains: the seconds of a hook's `sleep`, or a
/// no-op word in its command line.
pub fn marker() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 100;
    format!("5{:06}{n:02}", nanos / 1000 % 1_000_000)
}

/// `(state, parent, session)` from `/proc/<pid>/stat`, if the process exists.
pub fn stat(pid: u32) -> Option<(char, u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = stat[stat.rfind(')')? + 2..].split(' ');
    let state = f.next()?.chars().next()?;
    let parent = f.next()?.parse().ok()?;
    let _group = f.next()?;
    Some((state, parent, f.next()?.parse().ok()?))
}

/// Pids whose parent is `parent` and that are zombies.
pub fn zombie_children(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(state, pp, _)| pp == parent && state == 'Z'))
        .collect()
}

/// Waits until no process's command line contains `marker`; fails after `timeout` naming
/// the survivors.
pub async fn nothing_left(marker: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes survive: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `pid` is `ancestor` or one of its descendants (the `/proc` parent chain).
pub fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut at = pid;
    for _ in 0..64 {
        if at == ancestor {
            return true;
        }
        match stat(at) {
            Some((_, parent, _)) if parent != 0 => at = parent,
            _ => return false,
        }
    }
    false
}

/// Sends SIGTERM to the running `scalr-agent exec` of the task file `<id>.json` started by this
/// test process (another worktree's test may run an `exec` of the same name meanwhile).
pub fn sigterm_exec(id: &str) {
    let me = std::process::id();
    let (pid, _) = processes_with(&format!("{id}.json"))
        .into_iter()
        .find(|(pid, cmd)| cmd.contains(" exec ") && descends_from(*pid, me))
        .expect("exec is running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}
