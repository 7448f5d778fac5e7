//! Stage uids have user entries (through `libnss-wrapper`, from files in the task directory):
//! `id -un`, `whoami`, `ssh` and `git clone` over ssh to a real sshd on 127.0.0.1 work from a
//! hook under the dedicated task uid, with strict host key checking; without the library they
//! fail as they do on a plain image. As root (CI runs as root); fails, not skips, when
//! `libnss-wrapper`, `openssh-server` or `openssh-client` are missing.

use serde_json::json;

use crate::support::exec::{Exec, text};
use crate::support::sshd::{Sshd, clone_hook};

fn ssh_task(e: &Exec, id: &str, sshd: &Sshd) -> serde_json::Value {
    let mut task = e.task(id);
    task["workspace"]["hooks"] = json!({ "pre_init": clone_hook(sshd) });
    task["variables"]
        .as_array_mut()
        .unwrap()
        .extend([
            json!({"key": "SSH_KEY", "value": sshd.client_key.trim(), "category": "shell", "sensitive": true}),
            json!({"key": "SSH_KNOWN_HOSTS", "value": sshd.known_hosts, "category": "shell"}),
        ]);
    task
}

#[tokio::test]
async fn git_over_ssh_works_under_the_task_uid() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the user-entry tests must run as root"
    );
    assert!(
        scalr_agent::task::users::find_library(None).is_some(),
        "libnss_wrapper.so not found: install libnss-wrapper"
    );
    let e = Exec::new().await;
    let sshd = Sshd::start(e.h.dir.path());
    let task = ssh_task(&e, "users-ssh", &sshd);
    let (out, result, _) = e.run(&task, &[]).await;
    let log = text(&out.stdout);
    assert!(out.status.success(), "{log}\n{}", sshd.log());
    assert!(log.contains("id-un=scalr-task\n"), "{log}");
    assert!(log.contains("whoami=scalr-task\n"), "{log}");
    assert!(log.contains("ssh-ok\n"), "{log}");
    assert!(
        log.contains("module says: hello from the private module"),
        "{log}"
    );
    // The key is a sensitive variable: masked if anything printed it, and the stage ran
    // under a dedicated uid.
    assert!(!log.contains("OPENSSH PRIVATE KEY-----\n"), "{log}");
    let uid = result["isolation"]["uid"].as_u64().unwrap();
    assert!((20000..=20999).contains(&uid), "{result:#}");
}

#[tokio::test]
async fn without_the_library_the_task_uid_has_no_name() {
    let e = Exec::new().await;
    let sshd = Sshd::start(e.h.dir.path());
    let task = ssh_task(&e, "users-none", &sshd);
    let (out, _, _) = e
        .run(
            &task,
            &[(
                "SCALR_AGENT_NSS_WRAPPER_LIB",
                "/nonexistent/libnss_wrapper.so",
            )],
        )
        .await;
    let log = text(&out.stdout);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("cannot find name for user ID"), "{log}");
    assert!(!log.contains("ssh-ok"), "{log}");
}

#[tokio::test]
async fn a_host_key_not_in_known_hosts_is_refused() {
    let e = Exec::new().await;
    let sshd = Sshd::start(e.h.dir.path());
    let mut task = ssh_task(&e, "users-hostkey", &sshd);
    for v in task["variables"].as_array_mut().unwrap() {
        if v["key"] == "SSH_KNOWN_HOSTS" {
            v["value"] = json!(format!(
                "[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEJm7aAD5UHYHbu2KSTMvbIbsfmJ1zMhPwD5/fEYTlTe",
                sshd.port
            ));
        }
    }
    let (out, _, _) = e.run(&task, &[]).await;
    let log = text(&out.stdout);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("id-un=scalr-task"), "{log}");
    assert!(
        log.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || log.contains("Host key verification failed"),
        "{log}"
    );
    assert!(!log.contains("ssh-ok"), "{log}");
}
