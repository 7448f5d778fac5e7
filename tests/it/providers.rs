//! The provider store with the real null provider (from PyPI) and real Terraform 1.0.3 against a
//! loopback registry: fills and their refusals, lock-file cases, concurrent runs in separate
//! agent processes sharing one store, leases against eviction, and runs that cannot write it.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use scalr_agent::providers::addr::Package;
use scalr_agent::providers::{FillError, ProviderStore, Settings, hash, store};

use crate::support::exec::{Exec, text};
use crate::support::keys::TestKey;
use crate::support::procs::{marker, processes_with};
use crate::support::providers::{NULL_MAIN_TF, assert_one_fill, null_bytes, provider_zip};
use crate::support::registry::{HOST, Publish, Registry};

/// The `h1:` Terraform 1.0.3 itself records for the real null 2.1.2 linux_amd64 package.
const NULL_H1: &str = "h1:CFnENdqQu4g3LJNevA32aDxcUz2qGkRGQpFfkI8TCdE=";

struct Fixture {
    e: Exec,
    reg: Registry,
}

impl Fixture {
    async fn new() -> Fixture {
        let reg = Registry::with_null().await;
        let hosts = reg.hosts_var();
        let e = Exec::with(&[("SCALR_AGENT_PROVIDER_REGISTRY_HOSTS", &hosts)]).await;
        std::fs::write(e.dir.join("config/main.tf"), NULL_MAIN_TF).unwrap();
        Fixture { e, reg }
    }

    fn store_root(&self) -> PathBuf {
        self.e.h.dir.path().join("cache/providers")
    }

    fn task(&self, id: &str) -> Value {
        let mut t = self.e.task(id);
        t["variables"] = json!([]);
        t
    }

    fn set_lock(&self, text: Option<&str>) {
        let path = self.e.dir.join("config/.terraform.lock.hcl");
        match text {
            Some(t) => std::fs::write(path, t).unwrap(),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Runs a plan task; asserts it succeeded; returns its log.
    async fn plan(&self, id: &str, task: Option<Value>) -> String {
        let task = task.unwrap_or_else(|| self.task(id));
        let (out, result, _) = self.e.run(&task, &[]).await;
        let log = text(&out.stdout);
        assert_eq!(
            result["status"],
            "succeeded",
            "{log}\n{}",
            text(&out.stderr)
        );
        log
    }

    fn zips(&self) -> u32 {
        self.reg.zip_downloads("hashicorp", "null", "2.1.2")
    }
}

fn null_pkg() -> Package {
    Package::new(
        format!("{HOST}/hashicorp/null").parse().unwrap(),
        "2.1.2",
        "linux_amd64",
    )
    .unwrap()
}

fn lock_text(hashes: &[&str]) -> String {
    let list: String = hashes.iter().map(|h| format!("    \"{h}\",\n")).collect();
    format!(
        "provider \"{HOST}/hashicorp/null\" {{\n  version = \"2.1.2\"\n  hashes = [\n{list}  ]\n}}\n"
    )
}

/// Every stored package is intact: the cheap check passes and the re-hash equals `h1:`.
fn assert_store_intact(root: &Path, pkg: &Package) -> store::Manifest {
    let layout = store::Layout {
        root: root.to_path_buf(),
    };
    let m = store::check_entry(&layout, pkg).expect("the stored entry passes its check");
    assert_eq!(hash::h1_of_dir(&layout.pkg_dir(pkg)).unwrap(), m.h1);
    let exe = layout
        .pkg_dir(pkg)
        .join("terraform-provider-null_v2.1.2_x4");
    assert!(
        std::fs::read(exe).unwrap() == null_bytes(),
        "store file changed"
    );
    m
}

#[tokio::test]
async fn lock_file_cases_each_end_in_a_successful_init() {
    let f = Fixture::new().await;
    // No lock, empty store: Terraform downloads into the run, the agent fills the store after.
    let log = f.plan("lock-none-1", None).await;
    assert!(
        log.contains("registry.test/hashicorp/null 2.1.2 was downloaded into the run"),
        "{log}"
    );
    assert!(
        log.contains("registry.test/hashicorp/null 2.1.2 added to the store after the run"),
        "{log}"
    );
    assert_eq!(f.zips(), 2, "Terraform's download and the agent's own");
    let m = assert_store_intact(&f.store_root(), &null_pkg());
    assert_eq!(m.h1, NULL_H1, "the agent's h1: is Terraform's");
    let zh = m.zh.clone();

    // No lock, warm store: linked, nothing downloaded; afterwards the entry's pages are
    // dropped (SCALR_AGENT_PROVIDER_CACHE_DROP_KERNEL_PAGES, on by default).
    let log = f.plan("lock-none-2", None).await;
    assert!(
        log.contains("registry.test/hashicorp/null 2.1.2 from the store"),
        "{log}"
    );
    let dropped = format!(
        "dropped the kernel's page cache of {} stored file(s) this run used",
        m.files.len()
    );
    assert!(log.contains(&dropped), "{log}");
    assert_eq!(f.zips(), 2, "{log}");

    // Matching h1:.
    f.set_lock(Some(&lock_text(&[NULL_H1, &zh])));
    let log = f.plan("lock-h1", None).await;
    assert!(
        log.contains("from the store") && log.contains("its h1: is in the lock file"),
        "{log}"
    );
    assert_eq!(f.zips(), 2, "{log}");

    // zh: only (e.g. `terraform providers lock` output): Terraform cannot check an unpacked
    // entry against it, so the run downloads (verified by the zh:).
    f.set_lock(Some(&lock_text(&[&zh])));
    let log = f.plan("lock-zh", None).await;
    assert!(
        log.contains("not offered: the lock file lists only zh: hashes"),
        "{log}"
    );
    assert!(log.contains("was downloaded into the run"), "{log}");
    assert_eq!(f.zips(), 3, "{log}");

    // Another platform's h1: plus the zh: (a lock made on macOS): not offered, downloaded.
    f.set_lock(Some(&lock_text(&[
        "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        &zh,
    ])));
    let log = f.plan("lock-other-os", None).await;
    assert!(
        log.contains("not offered: the lock file's h1: hashes do not include"),
        "{log}"
    );
    assert!(log.contains("was downloaded into the run"), "{log}");
    assert_eq!(f.zips(), 4, "{log}");
    assert_store_intact(&f.store_root(), &null_pkg());
}

fn store_for(reg: &Registry, root: &Path) -> ProviderStore {
    let mut s = Settings::new(root.to_path_buf());
    s.registry_hosts =
        serde_json::from_str::<std::collections::BTreeMap<String, String>>(&reg.hosts_var())
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, url::Url::parse(&v).unwrap()))
            .collect();
    let http = scalr_agent::http::Settings {
        max_retries: 0,
        ..Default::default()
    };
    ProviderStore::new(s, http)
}

fn pkg(kind: &str) -> Package {
    Package::new(
        format!("{HOST}/test/{kind}").parse().unwrap(),
        "1.0.0",
        "linux_amd64",
    )
    .unwrap()
}

fn zip_with_dir_entry() -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default();
    w.add_directory("docs/", o).unwrap();
    w.start_file("docs/README", o).unwrap();
    w.write_all(b"readme").unwrap();
    w.start_file("terraform-provider-dirs_v1.0.0_x4", o)
        .unwrap();
    w.write_all(b"program").unwrap();
    w.finish().unwrap().into_inner()
}

#[tokio::test]
async fn fills_verify_signature_zh_and_h1_and_refuse_bad_packages() {
    use crate::support::releases::{Entry, zip};
    let reg = Registry::start().await;
    let other = TestKey::generate("Someone Else <else@example.test>");
    let good = provider_zip("good", "1.0.0", b"#!/bin/sh\necho good\n");
    reg.publish("test", "good", "1.0.0", &good, Publish::default());
    let wrong_sha = "0".repeat(64);
    reg.publish(
        "test",
        "badzh",
        "1.0.0",
        &good,
        Publish {
            listed_sha: Some(&wrong_sha),
            ..Default::default()
        },
    );
    reg.publish(
        "test",
        "badsig",
        "1.0.0",
        &good,
        Publish {
            signer: Some(&other),
            ..Default::default()
        },
    );
    reg.publish(
        "test",
        "dirs",
        "1.0.0",
        &zip_with_dir_entry(),
        Publish::default(),
    );
    let slip = zip(&[
        Entry::File("../../escaped", b"x"),
        Entry::File("terraform-provider-slip_v1.0.0_x4", b"p"),
    ]);
    reg.publish("test", "slip", "1.0.0", &slip, Publish::default());

    let dir = crate::support::dirs::tempdir();
    let root = dir.path().join("providers");
    let s = store_for(&reg, &root);

    let ok = s.ensure(&pkg("good")).await.unwrap();
    assert!(ok.filled.is_some());
    let expected_h1 = hash::h1([(
        "terraform-provider-good_v1.0.0_x4",
        crate::support::releases::sha256_hex(b"#!/bin/sh\necho good\n").as_str(),
    )]);
    assert_eq!(ok.manifest.h1, expected_h1);
    assert_eq!(
        ok.manifest.zh,
        format!("zh:{}", crate::support::releases::sha256_hex(&good))
    );
    assert!(
        ok.manifest
            .verification
            .contains(&crate::support::registry::registry_key().fingerprint)
    );
    let again = s.ensure(&pkg("good")).await.unwrap();
    assert!(again.filled.is_none(), "a second ensure is a hit");

    let err = s.ensure(&pkg("badzh")).await.unwrap_err();
    assert!(matches!(err.kind, FillError::Hash { .. }), "{err}");
    let err = s.ensure(&pkg("badsig")).await.unwrap_err();
    assert!(matches!(err.kind, FillError::Signature { .. }), "{err}");
    let err = s.ensure(&pkg("dirs")).await.unwrap_err();
    assert!(err.to_string().contains("directory entry"), "{err}");
    let err = s.ensure(&pkg("slip")).await.unwrap_err();
    assert!(err.to_string().contains("`..`"), "{err}");

    let stored: Vec<String> = s
        .layout()
        .scan()
        .iter()
        .map(|p| p.provider.kind.clone())
        .collect();
    assert_eq!(stored, ["good"], "nothing stored for refused packages");
    assert!(!dir.path().join("escaped").exists() && !root.join("escaped").exists());
    let leftovers: Vec<_> = std::fs::read_dir(root.join(".tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "staging cleaned up: {leftovers:?}");
    // Stored files are read-only for everyone, directories writable by the owner only.
    use std::os::unix::fs::MetadataExt;
    let pkg_dir = s.layout().pkg_dir(&pkg("good"));
    assert_eq!(std::fs::metadata(&pkg_dir).unwrap().mode() & 0o777, 0o755);
    let exe = std::fs::metadata(pkg_dir.join("terraform-provider-good_v1.0.0_x4")).unwrap();
    assert_eq!(exe.mode() & 0o777, 0o555);
}

/// A damaged entry is replaced only while no run leases it: a fill while a lease is held fails
/// naming the damage and leaves the entry (and its files) to the run; once the lease ends the
/// next fill replaces it.
#[tokio::test]
async fn a_damaged_entry_is_replaced_only_when_no_run_leases_it() {
    use std::os::unix::fs::PermissionsExt;
    let reg = Registry::start().await;
    let program = b"#!/bin/sh\necho good\n";
    let good = provider_zip("good", "1.0.0", program);
    reg.publish("test", "good", "1.0.0", &good, Publish::default());
    let dir = crate::support::dirs::tempdir();
    let s = store_for(&reg, &dir.path().join("providers"));
    let p = pkg("good");
    s.ensure(&p).await.unwrap();
    let exe = s
        .layout()
        .pkg_dir(&p)
        .join("terraform-provider-good_v1.0.0_x4");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&exe, b"#!/bin/sh\necho tampered\n").unwrap();
    assert!(
        store::check_entry(s.layout(), &p).is_err(),
        "the entry is damaged"
    );

    let lease = s.lease(&p).unwrap();
    let err = s.ensure(&p).await.unwrap_err();
    assert!(
        matches!(err.kind, FillError::DamagedInUse { .. }),
        "a leased damaged entry is not replaced: {err}"
    );
    assert!(
        err.to_string().contains("leased by a running task"),
        "{err}"
    );
    assert_eq!(std::fs::read(&exe).unwrap(), b"#!/bin/sh\necho tampered\n");
    assert_eq!(
        reg.zip_downloads("test", "good", "1.0.0"),
        1,
        "nothing downloaded while leased"
    );

    drop(lease);
    let replaced = s.ensure(&p).await.unwrap();
    assert!(replaced.filled.is_some(), "replaced by a fill");
    assert_eq!(std::fs::read(&exe).unwrap(), program);
    store::check_entry(s.layout(), &p).unwrap();
}

/// Bytes of `path` in the kernel's page cache (util-linux `fincore`).
fn resident(path: &Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (util-linux-extra) runs");
    assert!(out.status.success(), "fincore: {}", text(&out.stderr));
    text(&out.stdout)
        .trim()
        .parse()
        .expect("fincore prints a number")
}

/// `SCALR_AGENT_PROVIDER_CACHE_DROP_KERNEL_PAGES`' work: an unleased entry's files leave the
/// page cache (and stay on disk); a leased entry keeps its pages; a store file replaced by a
/// link to a file outside the store is not followed (that file keeps its pages). Under the
/// target directory, not /tmp: tmpfs pages cannot be dropped.
#[tokio::test]
async fn dropping_kernel_pages_touches_only_unleased_store_files() {
    use std::io::Read;
    let reg = Registry::start().await;
    let program = vec![b'#'; 1 << 20];
    let good = provider_zip("good", "1.0.0", &program);
    reg.publish("test", "good", "1.0.0", &good, Publish::default());
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let s = store_for(&reg, &dir.path().join("providers"));
    let p = pkg("good");
    let manifest = s.ensure(&p).await.unwrap().manifest;
    let exe = s
        .layout()
        .pkg_dir(&p)
        .join("terraform-provider-good_v1.0.0_x4");
    let warm = |path: &Path| {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert!(
            resident(path) > 0,
            "{} is in the page cache",
            path.display()
        );
    };

    warm(&exe);
    let lease = s.lease(&p).unwrap();
    assert_eq!(
        s.drop_pages(std::slice::from_ref(&p)),
        0,
        "leased: left alone"
    );
    assert!(resident(&exe) > 0, "a leased entry keeps its pages");
    drop(lease);
    assert_eq!(s.drop_pages(std::slice::from_ref(&p)), 1);
    assert_eq!(resident(&exe), 0, "an unleased entry's pages are dropped");
    assert_eq!(std::fs::read(&exe).unwrap(), program, "the file stays");
    store::check_entry(s.layout(), &p).unwrap();

    let outside = dir.path().join("outside");
    std::fs::write(&outside, &program).unwrap();
    warm(&outside);
    let pkg_dir = s.layout().pkg_dir(&p);
    let mode = |m| std::os::unix::fs::PermissionsExt::from_mode(m);
    std::fs::set_permissions(&pkg_dir, mode(0o755)).unwrap();
    std::fs::remove_file(&exe).unwrap();
    std::os::unix::fs::symlink(&outside, &exe).unwrap();
    assert_eq!(s.layout().drop_pages(&p, &manifest).unwrap(), 0);
    assert!(
        resident(&outside) > 0,
        "a link in the store is never followed"
    );
}

#[tokio::test]
async fn concurrent_runs_in_separate_agents_share_one_store() {
    let f = Fixture::new().await;
    const TASKS: usize = 8;
    const ROUNDS: usize = 5;
    let mut logs = Vec::new();
    for round in 0..ROUNDS {
        let runs = (0..TASKS).map(|i| {
            let id = format!("conc-{round}-{i}");
            let task = f.task(&id);
            let e = &f.e;
            async move { e.run(&task, &[]).await }
        });
        for (out, result, _) in futures_util::future::join_all(runs).await {
            let log = text(&out.stdout);
            assert_eq!(
                result["status"],
                "succeeded",
                "{log}\n{}",
                text(&out.stderr)
            );
            logs.push(log);
        }
    }
    assert_eq!(logs.len(), TASKS * ROUNDS);
    assert_one_fill(&logs, f.zips(), TASKS, "the second round used the store");
    let m = assert_store_intact(&f.store_root(), &null_pkg());
    assert_eq!(m.h1, NULL_H1);
}

/// A hook that tries every way to change the store through the run's links, then says who it is.
const TAMPER: &str = r#"
d=$(readlink -f "$TF_PLUGIN_CACHE_DIR/registry.test/hashicorp/null/2.1.2/linux_amd64")
f="$d/terraform-provider-null_v2.1.2_x4"
echo "tamper uid $(id -u) dir $d"
try() { if sh -c "$1" 2>/dev/null; then echo "MODIFIED: $1"; fi; }
try "echo x >> $f"
try "chmod 0777 $f"
try "rm -f $f"
try "mv $f $f.moved"
try "touch $d/new-file"
try "rm -rf $d"
try "echo x > $d/../manifest.json"
try "touch -m -d 2001-01-01 $f"
"#;

#[tokio::test]
async fn a_hook_cannot_modify_the_store() {
    let f = Fixture::new().await;
    f.plan("tamper-fill", None).await;
    let before = assert_store_intact(&f.store_root(), &null_pkg());
    let mut task = f.task("tamper-1");
    task["workspace"]["hooks"] = json!({ "pre_plan": TAMPER });
    let log = f.plan("tamper-1", Some(task)).await;
    assert!(log.contains("tamper uid "), "{log}");
    assert!(
        !log.contains("tamper uid 0 "),
        "the hook must run as a task uid: {log}"
    );
    assert!(!log.contains("MODIFIED"), "{log}");
    let after = assert_store_intact(&f.store_root(), &null_pkg());
    assert_eq!(before, after);
}

#[tokio::test]
async fn a_leased_entry_survives_forced_eviction_while_its_run_uses_it() {
    let f = Fixture::new().await;
    f.plan("lease-fill", None).await;
    // The hook sleeps until the test kills its `sleep` (found by a number no other process's
    // command line holds, so a concurrent test run elsewhere on the machine cannot be taken
    // for it); the run leases the entry from before init until after the run.
    let m = marker();
    let mut task = f.task("lease-1");
    task["workspace"]["hooks"] = json!({ "pre_plan": format!("sleep {m} || true") });
    let run = f.e.run(&task, &[]);
    tokio::pin!(run);
    let prune = || async {
        let out =
            f.e.h
                .agent()
                .env("SCALR_AGENT_PROVIDER_CACHE_SIZE_LIMIT_MB", "0")
                .output(&["software", "providers", "--prune", "--json"])
                .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let sleeps = || {
        processes_with(&m)
            .into_iter()
            .filter(|(_, cmd)| cmd.starts_with("sleep "))
            .map(|(pid, _)| pid)
            .collect::<Vec<_>>()
    };
    let waited = async {
        while sleeps().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        () = waited => {}
        r = &mut run => panic!("the run ended before its hook waited: {}", text(&r.0.stdout)),
    }
    // The run cannot end while the prune runs: its hook waits for the kill below.
    let report = tokio::select! {
        report = prune() => report,
        r = &mut run => panic!("the run ended before the kill: {}", text(&r.0.stdout)),
    };
    assert_eq!(
        report["pruned"]["kept_in_use"],
        json!([null_pkg().to_string()]),
        "{report:#}"
    );
    assert_store_intact(&f.store_root(), &null_pkg());
    for pid in sleeps() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let (out, result, _) = run.await;
    assert_eq!(result["status"], "succeeded", "{}", text(&out.stdout));
    // Lease released: the same forced eviction now removes it.
    let report = prune().await;
    assert_eq!(
        report["pruned"]["removed"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
    assert!(
        report["entries"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
}

#[tokio::test]
async fn kill_9_during_a_fill_leaves_no_entry_that_passes_the_check() {
    use crate::support::mirror::Fault;
    let f = Fixture::new().await;
    let zip = Registry::zip_path("hashicorp", "null", "2.1.2");
    // Terraform's own download goes through; the agent's fill after the run hangs on the zip.
    f.reg.server.fail_next(
        &zip,
        [
            Fault::Delay(std::time::Duration::ZERO),
            Fault::Delay(std::time::Duration::from_secs(120)),
        ],
    );
    let task = f.task("kill-fill");
    let run = f.e.run(&task, &[]);
    tokio::pin!(run);
    let waited = async {
        while f.zips() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        () = waited => {}
        r = &mut run => panic!("the run ended before its fill: {}", text(&r.0.stdout)),
    }
    // The full path of this test's task file: a concurrent run of this test elsewhere on the
    // machine has its own.
    let task_file = f.e.dir.join("kill-fill.json").display().to_string();
    let (pid, _) = processes_with(&task_file)
        .into_iter()
        .find(|(_, cmd)| cmd.contains(" exec "))
        .expect("exec is running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = run.await;
    let layout = store::Layout {
        root: f.store_root(),
    };
    assert!(
        store::check_entry(&layout, &null_pkg()).is_err(),
        "a killed fill left an entry that passes the check"
    );
    // The fill lock died with the process: the next run fills the store.
    let log = f.plan("kill-fill-2", None).await;
    assert!(log.contains("added to the store after the run ("), "{log}");
    assert_store_intact(&f.store_root(), &null_pkg());
}

#[tokio::test]
async fn fills_use_network_mirrors_in_order_then_the_registry() {
    let reg = Registry::start().await;
    let program = b"#!/bin/sh\necho mirrored\n";
    let zip = provider_zip("mirrored", "1.0.0", program);
    reg.publish("test", "mirrored", "1.0.0", &zip, Publish::default());
    reg.publish("test", "other", "1.0.0", &zip, Publish::default());
    // A mirror whose hash for `mirrored` is wrong must refuse, not fall back silently.
    let bad = format!("mirror/{HOST}/test/other/1.0.0.json");
    reg.server.put(
        &bad,
        json!({"archives": {"linux_amd64": {"url": format!("/{}", Registry::zip_path("test", "other", "1.0.0")), "hashes": [format!("zh:{}", "0".repeat(64))]}}}).to_string(),
    );
    let dir = crate::support::dirs::tempdir();
    let mut s = store_for(&reg, &dir.path().join("providers"));
    let mirror = |include: &[&str]| scalr_agent::providers::NetworkMirror {
        url: reg.server.url.join("mirror/").unwrap(),
        token: None,
        include: include.iter().map(|s| s.to_string()).collect(),
    };
    s = {
        let mut settings = s.settings().clone();
        settings.mirrors = vec![mirror(&[&format!("{HOST}/test/*")])];
        ProviderStore::new(settings, scalr_agent::http::Settings::default())
    };
    let got = s.ensure(&pkg("mirrored")).await.unwrap();
    assert_eq!(got.manifest.origin, "mirror");
    assert_eq!(
        reg.server
            .hits(&format!("mirror/{HOST}/test/mirrored/1.0.0.json")),
        1
    );
    let err = s.ensure(&pkg("other")).await.unwrap_err();
    assert!(matches!(err.kind, FillError::Hash { .. }), "{err}");
    // A provider the mirror does not include comes from the registry.
    let p = Package::new(
        format!("{HOST}/else/mirrored").parse().unwrap(),
        "1.0.0",
        "linux_amd64",
    )
    .unwrap();
    reg.publish("else", "mirrored", "1.0.0", &zip, Publish::default());
    let got = s.ensure(&p).await.unwrap();
    assert_eq!(got.manifest.origin, "registry");
}
