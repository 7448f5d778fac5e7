//! Temporary directories for tests: traversable by the tasks' own uids.
//!
//! `tempfile::tempdir()` makes a 0700 directory; a data directory under it is out of reach of
//! every task uid (the agent refuses to start, naming it). Every test and benchmark takes its
//! directories from here instead.

use std::os::unix::fs::PermissionsExt;

/// Mode of a test's temporary directory: task uids may traverse it and read the fixtures in it
/// (workspaces, keys, certificates); only the test writes it.
pub const MODE: u32 = 0o755;

/// A fresh temporary directory (under `/tmp`) with mode [`MODE`], removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(MODE))
        .expect("chmod the temporary directory");
    dir
}
