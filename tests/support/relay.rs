//! The real `scalr-agent relay` process for tests and benchmarks: started through the agent
//! builder with an explicit environment (nothing inherited), its stderr (JSON log lines) collected, its peak RSS
//! readable, killed on drop. Also builds the git repositories the VCS serves.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use url::Url;

use super::agent::AgentBuilder;

pub struct RelayProc {
    pub child: tokio::process::Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    /// The relay's own data directory (never a shared one such as `/tmp`, whose modes the
    /// agent refuses to narrow).
    _data: tempfile::TempDir,
}

impl RelayProc {
    /// Starts the relay against `gateway` for `vcs` with `vendor`, plus `extra` variables.
    pub fn start(gateway: &Url, vcs: &Url, vendor: &str, extra: &[(&str, &str)]) -> RelayProc {
        let data = super::dirs::tempdir();
        let mut cmd = AgentBuilder::new(&[])
            .env("PATH", "/usr/bin:/bin")
            .env("SCALR_URL", gateway.as_str())
            .env("SCALR_AGENT_TOKEN", "relay-pool-token")
            .env("SCALR_AGENT_NAME", "relay-test")
            .env("SCALR_AGENT_VCS_URL", vcs.as_str())
            .env("SCALR_AGENT_VCS_VENDOR", vendor)
            .env("SCALR_AGENT_LOG_FORMAT", "json")
            .env("SCALR_AGENT_DEBUG", "true")
            .env("SCALR_AGENT_HTTP_BACKOFF", "100ms")
            .env("SCALR_AGENT_DATA_DIR", data.path())
            .envs(extra)
            .command(&["relay"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start scalr-agent relay");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let err = child.stderr.take().unwrap();
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut r = tokio::io::BufReader::new(err).lines();
            while let Ok(Some(l)) = r.next_line().await {
                sink.lock().unwrap().push(l);
            }
        });
        RelayProc {
            child,
            lines,
            _data: data,
        }
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line with {needle:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `needle` occurs `n` times in the log (the relay writes its audit line after
    /// it answered the gateway, so a test may see the answer first); returns the count seen.
    pub async fn wait_count(&self, needle: &str, n: usize, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let seen = self.log().matches(needle).count();
            if seen >= n || tokio::time::Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Peak resident set (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// SIGTERM, then waits for the exit (at most `within`).
    pub async fn stop(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the relay stops in time")
            .unwrap()
    }
}

/// Runs git with a clean environment; panics with its output when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/local/bin")
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A work repository with `commits` commits of `files` files of `file_size` pseudo-random
/// bytes each (incompressible, so packs are as big as the content), then bare copies at each
/// of `layouts` (relative paths under `root`). Returns the work repository.
pub fn make_repos(
    root: &Path,
    commits: usize,
    files: usize,
    file_size: usize,
    layouts: &[&str],
) -> PathBuf {
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    let mut seed = 0x9e3779b97f4a7c15u64;
    for c in 0..commits {
        for f in 0..files {
            let mut data = Vec::with_capacity(file_size);
            while data.len() < file_size {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                data.extend_from_slice(&seed.to_le_bytes());
            }
            data.truncate(file_size);
            std::fs::write(work.join(format!("f{f}.bin")), data).unwrap();
        }
        std::fs::write(work.join("README"), format!("commit {c}\n")).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", &format!("commit {c}")]);
    }
    for l in layouts {
        let dest = root.join(l);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        git(
            root,
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                dest.to_str().unwrap(),
            ],
        );
    }
    work
}
