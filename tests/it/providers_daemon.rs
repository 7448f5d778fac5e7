//! The provider store under one daemon: a single `scalr-agent run` with 8 slots takes 8
//! concurrent plan tasks (init, a `terraform validate` hook, plan) from the fake control plane,
//! five rounds, all sharing the store through the one process.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::support::control_plane::ControlPlane;
use crate::support::daemon::Daemon;
use crate::support::harness::Harness;
use crate::support::providers::{NULL_MAIN_TF, assert_one_fill, null_bytes};
use crate::support::registry::Registry;
use crate::support::releases::{self, Entry};

/// Every regular file under `dir` (the store's entries; locks and aliases are not files of
/// an entry) with its bytes, by relative path. `.last-used` records use times and changes.
fn store_files(dir: &Path, base: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let t = e.file_type().unwrap();
        if name.starts_with('.') {
            continue;
        }
        if t.is_dir() {
            store_files(&e.path(), base, out);
        } else if t.is_file() {
            let rel = e.path().strip_prefix(base).unwrap().display().to_string();
            out.insert(rel, std::fs::read(e.path()).unwrap());
        }
    }
}

#[tokio::test]
async fn concurrent_tasks_in_one_daemon_share_one_store() {
    const SLOTS: usize = 8;
    const ROUNDS: usize = 5;
    let started = std::time::Instant::now();
    let reg = Registry::with_null().await;
    let h = Harness::with(&[
        ("SCALR_AGENT_PROVIDER_REGISTRY_HOSTS", &reg.hosts_var()),
        ("SCALR_AGENT_CONCURRENCY", &SLOTS.to_string()),
    ])
    .await;
    h.publish_real_terraform();
    let s = Daemon {
        archive: releases::tar_gz(&[Entry::File("main.tf", NULL_MAIN_TF.as_bytes())]),
        cp: ControlPlane::start().await,
        h,
    };
    let doc = |id: &str| -> Value {
        let mut d = s.doc(id, "providers", "");
        d["workspace"]["iac_version"] = json!("1.0.3");
        d["workspace"]["hooks"] = json!({ "pre_plan": "terraform validate -no-color" });
        d
    };
    let mut agent = s.start("providers-daemon", &[]);
    let store = s.h.dir.path().join("cache/providers");
    let mut logs = Vec::new();
    let mut after_fill = BTreeMap::new();
    for round in 0..ROUNDS {
        let ids: Vec<String> = (0..SLOTS).map(|i| format!("d-{round}-{i}")).collect();
        for id in &ids {
            s.enqueue_doc(id, doc(id));
        }
        for id in &ids {
            let f = s.finished(&agent, id).await;
            let log = s.log(id);
            assert_eq!(f["status"], "succeeded", "{f:#}\n{log}");
            assert!(
                log.contains("Success! The configuration is valid."),
                "{log}"
            );
            logs.push(log);
        }
        if round == 0 {
            store_files(&store, &store, &mut after_fill);
        }
    }
    assert_eq!(logs.len(), SLOTS * ROUNDS);
    assert_one_fill(
        &logs,
        reg.zip_downloads("hashicorp", "null", "2.1.2"),
        (ROUNDS - 1) * SLOTS,
        "every run after the first round used the store",
    );
    // Every store file is byte-identical to what the fill wrote, the program to the real one.
    let mut now = BTreeMap::new();
    store_files(&store, &store, &mut now);
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        after_fill.keys().collect::<Vec<_>>()
    );
    assert!(now == after_fill, "a store file changed after the fill");
    let exe =
        "registry.test/hashicorp/null/2.1.2/linux_amd64/pkg/terraform-provider-null_v2.1.2_x4";
    assert!(
        now[exe] == null_bytes(),
        "the stored program is the real one"
    );
    assert!(agent.stop().await.success(), "{}", agent.stderr());
    eprintln!(
        "{} tasks on one agent in {:.1} s",
        SLOTS * ROUNDS,
        started.elapsed().as_secs_f64()
    );
}
