//! Each refusal, by both resolutions (`openat2` and the per-component walk). Run as root in
//! CI: the device and ownership cases need it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

const CANARY: &[u8] = b"CANARY-taskfs-secret";

/// A task directory with a plain file and one of each hostile kind.
fn fixture() -> (tempfile::TempDir, TaskRoot) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("task");
    std::fs::create_dir(&root).unwrap();
    let task = TaskRoot::open(&root).unwrap();
    let outside = dir.path().join("secret");
    std::fs::write(&outside, CANARY).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(root.join("artifacts/sub")).unwrap();
    std::fs::write(root.join("artifacts/plan.json"), b"{}").unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", root.join("artifacts/environ")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("artifacts/secret")).unwrap();
    std::os::unix::fs::symlink("sub", root.join("artifacts/via")).unwrap();
    std::fs::write(root.join("artifacts/sub/inner"), b"x").unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        root.join("artifacts/fifo"),
        Mode::from_raw_mode(0o600),
    )
    .unwrap();
    std::fs::write(root.join("artifacts/linked"), b"x").unwrap();
    std::fs::hard_link(
        root.join("artifacts/linked"),
        root.join("artifacts/linked2"),
    )
    .unwrap();
    let sparse = File::create(root.join("artifacts/sparse")).unwrap();
    sparse.set_len(2 << 20).unwrap();
    // A real character device, as only root can make one (the same as /dev/zero).
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("artifacts/zero"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o600),
        rustix::fs::makedev(1, 5),
    )
    .expect("making a device node needs root (CI runs as root)");
    (dir, task)
}

fn both(task: &TaskRoot) -> [TaskRoot; 2] {
    [task.clone(), task.walking_only()]
}

#[test]
fn reads_a_regular_file_by_both_resolutions() {
    let (_d, task) = fixture();
    for t in both(&task) {
        assert_eq!(
            t.read(Path::new("artifacts/plan.json"), Kind::PlanJson)
                .unwrap(),
            b"{}"
        );
        assert_eq!(
            t.read(Path::new("artifacts/sub/inner"), Kind::Policy)
                .unwrap(),
            b"x"
        );
        let e = t
            .read(Path::new("artifacts/none"), Kind::PlanJson)
            .unwrap_err();
        assert!(e.is_missing(), "{e}");
    }
}

#[test]
fn refuses_every_hostile_kind_by_both_resolutions() {
    let (_d, task) = fixture();
    for t in both(&task) {
        let walk = t.walk;
        let cases: [(&str, Kind, &str); 10] = [
            ("artifacts/environ", Kind::PlanJson, "symbolic link"),
            ("artifacts/secret", Kind::PlanJson, "symbolic link"),
            ("artifacts/via/inner", Kind::Policy, "symbolic link"),
            ("up/secret", Kind::Policy, "symbolic link"),
            ("../secret", Kind::Policy, "leading outside"),
            ("artifacts/fifo", Kind::AgentEnv, "found a FIFO"),
            ("artifacts/zero", Kind::AgentEnv, "found a character device"),
            ("artifacts/sub", Kind::LockFile, "found a directory"),
            (
                "artifacts/linked",
                Kind::LockFile,
                "expected 1 link, found 2",
            ),
            (
                "artifacts/sparse",
                Kind::AgentEnv,
                "the limit is 1048576 bytes, found 2097152 bytes",
            ),
        ];
        for (rel, kind, want) in cases {
            let e = t.read(Path::new(rel), kind).unwrap_err().to_string();
            assert!(e.contains(want), "walk={walk} {rel}: {e}");
            assert!(e.contains(rel) && e.contains(kind.name()), "{e}");
            let out = tempfile::tempdir().unwrap();
            let dest = out.path().join("copy");
            assert!(t.copy_out(Path::new(rel), kind, &dest).is_err());
            assert_eq!(
                std::fs::read_dir(out.path()).unwrap().count(),
                0,
                "{rel}: nothing left"
            );
        }
    }
}

#[test]
fn refuses_a_file_of_another_owner() {
    let (_d, task) = fixture();
    let t = task.owned_by(4_000_123, 4_000_123);
    let e = t
        .read(Path::new("artifacts/plan.json"), Kind::PlanJson)
        .unwrap_err();
    assert!(
        e.to_string()
            .ends_with("expected owner uid 4000123, found uid 0"),
        "{e}"
    );
}

#[test]
fn copies_in_constant_memory_up_to_the_limit() {
    let (_d, task) = fixture();
    let t = task.with_limits(Limits { artifact: 3 << 20 });
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("plan.tfplan");
    std::fs::write(&dest, b"previous").unwrap();
    let n = t
        .copy_out(Path::new("artifacts/sparse"), Kind::PlanFile, &dest)
        .unwrap();
    assert_eq!(n, 2 << 20);
    let meta = std::fs::metadata(&dest).unwrap();
    assert_eq!((meta.len(), meta.mode() & 0o777), (2 << 20, 0o600));
    let t = task.with_limits(Limits { artifact: 1 << 20 });
    let e = t
        .copy_out(Path::new("artifacts/sparse"), Kind::PlanFile, &dest)
        .unwrap_err();
    assert!(e.to_string().contains("the limit is 1048576 bytes"), "{e}");
    assert_eq!(
        std::fs::metadata(&dest).unwrap().len(),
        2 << 20,
        "the old copy stays whole"
    );
}

#[test]
fn writes_replace_links_instead_of_following_them() {
    let (d, task) = fixture();
    for t in both(&task) {
        t.write(Path::new("artifacts/secret"), Kind::CheckOutput, b"input")
            .unwrap();
        assert_eq!(std::fs::read(d.path().join("secret")).unwrap(), CANARY);
        assert_eq!(
            std::fs::read(task.path().join("artifacts/secret")).unwrap(),
            b"input"
        );
        std::os::unix::fs::symlink(
            d.path().join("secret"),
            task.path().join("artifacts/secret"),
        )
        .unwrap_or_else(|_| {
            std::fs::remove_file(task.path().join("artifacts/secret")).unwrap();
            std::os::unix::fs::symlink(
                d.path().join("secret"),
                task.path().join("artifacts/secret"),
            )
            .unwrap();
        });
        let e = t
            .write(Path::new("up/secret"), Kind::CheckOutput, b"x")
            .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(d.path().join("secret")).unwrap(), CANARY);
    }
    let owned = task.owned_by(4_000_123, 4_000_124);
    owned
        .write(Path::new("artifacts/input.json"), Kind::CheckOutput, b"{}")
        .unwrap();
    let meta = std::fs::metadata(task.path().join("artifacts/input.json")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (4_000_123, 4_000_124, 0o600)
    );
}

#[test]
fn an_operator_path_that_is_a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("token");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = read_input(&fifo, Kind::IdentityToken, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            e,
            TaskFileError::NotRegular {
                found: "a FIFO",
                ..
            }
        ),
        "{e}"
    );
}
