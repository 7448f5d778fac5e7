//! User entries for stage processes: `ssh`, `git` over ssh, `whoami` and `id -un` need the
//! stage's uid to resolve to a user with a home directory, and the dedicated task uids have no
//! line in the image's `/etc/passwd`.
//!
//! The root filesystem may be read-only and `/etc/passwd` is never edited at run time. Instead,
//! when Debian's `libnss-wrapper` is present (found at start, or named by
//! `SCALR_AGENT_NSS_WRAPPER_LIB`), the agent writes a `passwd` and a `group` file into the
//! task's directory before any of the task's code runs: the image's own entries (minus any for
//! the stage's uid) plus one entry for the stage's uid, whose home is the task's `HOME`. The
//! stage's environment preloads the library and points it at those files
//! (`LD_PRELOAD`, `NSS_WRAPPER_PASSWD`, `NSS_WRAPPER_GROUP`), so lookups by uid and by name
//! answer from them. Statically linked tools (Terraform, OpenTofu) ignore `LD_PRELOAD` and do
//! not need it; setuid programs ignore it too.
//!
//! Without the library, stages run as before and `doctor` warns when task uids do not resolve.
#![allow(
    clippy::disallowed_methods,
    reason = "the image's /etc/passwd and /etc/group, and new files in a task directory no task code has run in yet"
)]

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// Where Debian and other distributions install the library, by architecture.
pub const LIBRARY_PATHS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so",
    "/usr/lib/aarch64-linux-gnu/libnss_wrapper.so",
    "/usr/lib64/libnss_wrapper.so",
    "/usr/lib/libnss_wrapper.so",
];

/// The user name of a dedicated task uid that has no entry of its own in the image.
pub const TASK_USER: &str = "scalr-task";

/// The file names written into the task's directory.
pub const PASSWD_FILE: &str = "passwd";
pub const GROUP_FILE: &str = "group";

/// Finds the library: the configured path when given (it must exist), else the first standard
/// location that exists.
pub fn find_library(configured: Option<&Path>) -> Option<PathBuf> {
    match configured {
        Some(p) => p.is_file().then(|| p.to_path_buf()),
        None => LIBRARY_PATHS
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .map(Path::to_path_buf),
    }
}

/// The stage's identity as its user entry shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
}

/// Writes `passwd` and `group` into the task directory `root` (owner-only, before the tree is
/// given to the task's uid) for a stage running as `uid:gid` with this home, and returns the
/// identity. `system_passwd` and `system_group` are the image's own files' contents.
pub fn write_files(
    root: &Path,
    uid: u32,
    gid: u32,
    home: &Path,
    system_passwd: &str,
    system_group: &str,
) -> io::Result<Identity> {
    let (passwd, name) = passwd_with(system_passwd, uid, gid, home);
    let group = group_with(system_group, gid, &name);
    write_private(&root.join(PASSWD_FILE), &passwd)?;
    write_private(&root.join(GROUP_FILE), &group)?;
    Ok(Identity { uid, gid, name })
}

/// The variables that make a stage's lookups answer from the task's files, set in a stage's
/// environment (`task::env::Env`).
pub fn apply_env(
    env: &mut BTreeMap<String, String>,
    library: &Path,
    root: &Path,
    identity: &Identity,
) {
    // The library comes first; a workspace's own preload (a shell variable) is kept after it.
    let preload = match env.get("LD_PRELOAD").filter(|v| !v.trim().is_empty()) {
        Some(theirs) => format!("{} {theirs}", library.display()),
        None => library.display().to_string(),
    };
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("LD_PRELOAD", preload);
    set(
        "NSS_WRAPPER_PASSWD",
        root.join(PASSWD_FILE).display().to_string(),
    );
    set(
        "NSS_WRAPPER_GROUP",
        root.join(GROUP_FILE).display().to_string(),
    );
    set("USER", identity.name.clone());
    set("LOGNAME", identity.name.clone());
}

/// Whether `uid` has an entry in this `passwd` content.
pub fn has_entry(passwd: &str, uid: u32) -> bool {
    passwd
        .lines()
        .any(|l| field(l, 2) == Some(&uid.to_string()))
}

fn field(line: &str, n: usize) -> Option<&str> {
    line.split(':').nth(n)
}

/// The image's entries without any for `uid` (or named like ours), then the stage's entry. A
/// uid the image knows keeps its name; its home becomes the task's.
fn passwd_with(system: &str, uid: u32, gid: u32, home: &Path) -> (String, String) {
    let uid_s = uid.to_string();
    let name = system
        .lines()
        .find(|l| field(l, 2) == Some(uid_s.as_str()))
        .and_then(|l| field(l, 0))
        .filter(|n| valid_name(n))
        .unwrap_or(TASK_USER)
        .to_string();
    let mut out = String::new();
    for line in system.lines() {
        if line.is_empty()
            || field(line, 2) == Some(uid_s.as_str())
            || field(line, 0) == Some(&name)
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    // The home is a path the agent made (no ':' or newline in it).
    out.push_str(&format!(
        "{name}:x:{uid}:{gid}:scalr-agent task:{}:/bin/sh\n",
        home.display()
    ));
    (out, name)
}

fn group_with(system: &str, gid: u32, name: &str) -> String {
    let gid_s = gid.to_string();
    let mut out = String::new();
    for line in system.lines() {
        if line.is_empty() || field(line, 2) == Some(gid_s.as_str()) || field(line, 0) == Some(name)
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("{name}:x:{gid}:\n"));
    out
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The image's `/etc/passwd` and `/etc/group` (empty when unreadable): the entries a stage's
/// own files start from. Blocking.
pub fn system_databases() -> (String, String) {
    (
        std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
        std::fs::read_to_string("/etc/group").unwrap_or_default(),
    )
}

/// Writes a new owner-only file (the task directory is fresh and the agent's own until it is
/// given to the task's uid: nothing of the task can be there yet).
fn write_private(path: &Path, content: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nscalr:x:1000:1000::/home/scalr:/bin/sh\nold:x:20000:20000::/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nscalr:x:1000:\n";

    #[test]
    fn task_uid_gets_its_entry_and_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let id = write_files(dir.path(), 20001, 20001, &home, PASSWD, GROUP).unwrap();
        assert_eq!(id.name, TASK_USER);
        let passwd = std::fs::read_to_string(dir.path().join(PASSWD_FILE)).unwrap();
        assert!(passwd.starts_with("root:x:0:0:root:/root:/bin/bash\n"));
        assert!(passwd.ends_with(&format!(
            "scalr-task:x:20001:20001:scalr-agent task:{}:/bin/sh\n",
            home.display()
        )));
        assert!(has_entry(&passwd, 20001));
        let group = std::fs::read_to_string(dir.path().join(GROUP_FILE)).unwrap();
        assert_eq!(group, "root:x:0:\nscalr:x:1000:\nscalr-task:x:20001:\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(PASSWD_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Never overwritten: a second write fails.
        assert!(write_files(dir.path(), 20001, 20001, &home, PASSWD, GROUP).is_err());
    }

    #[test]
    fn a_known_uid_keeps_its_name_and_loses_its_old_home() {
        let (passwd, name) = passwd_with(PASSWD, 20000, 20000, Path::new("/data/t/home"));
        assert_eq!(name, "old");
        assert!(!passwd.contains("/nonexistent"));
        assert!(passwd.contains("old:x:20000:20000:scalr-agent task:/data/t/home:/bin/sh\n"));
        let (passwd, name) = passwd_with(PASSWD, 1000, 1000, Path::new("/h"));
        assert_eq!(name, "scalr");
        assert_eq!(passwd.matches("scalr:").count(), 1);
    }

    #[test]
    fn environment_points_at_the_files() {
        let mut env = BTreeMap::new();
        let id = Identity {
            uid: 20000,
            gid: 20000,
            name: TASK_USER.into(),
        };
        apply_env(
            &mut env,
            Path::new("/usr/lib/x86_64-linux-gnu/libnss_wrapper.so"),
            Path::new("/d/t"),
            &id,
        );
        assert_eq!(env["NSS_WRAPPER_PASSWD"], "/d/t/passwd");
        assert_eq!(env["NSS_WRAPPER_GROUP"], "/d/t/group");
        assert_eq!(env["USER"], TASK_USER);
        assert_eq!(env["LOGNAME"], TASK_USER);
        assert!(env["LD_PRELOAD"].ends_with("libnss_wrapper.so"));
        env.insert("LD_PRELOAD".into(), "/opt/mine.so".into());
        apply_env(
            &mut env,
            Path::new("/l/libnss_wrapper.so"),
            Path::new("/d"),
            &id,
        );
        assert_eq!(env["LD_PRELOAD"], "/l/libnss_wrapper.so /opt/mine.so");
    }

    #[test]
    fn library_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libnss_wrapper.so");
        assert_eq!(find_library(Some(&lib)), None);
        std::fs::write(&lib, b"").unwrap();
        assert_eq!(find_library(Some(&lib)), Some(lib));
    }
}
