//! The platforms' conventions, with the real agent: the pool token read from a secret mount
//! (`SCALR_AGENT_TOKEN_FILE`), a Cloud Run service's `PORT` serving the health listener, and
//! `doctor` probing from a stage which identity endpoints and metadata server answer (fakes on
//! 127.0.0.1), with identity inheritance on and off.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::support::aws::FakeAws;
use crate::support::control_plane::ControlPlane;
use crate::support::daemon::get;
use crate::support::harness::Harness;

/// A port free right now on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_run_service_reads_its_token_file_and_serves_health_on_port() {
    let h = Harness::new().await;
    let cp = ControlPlane::start().await;
    // A Kubernetes-style secret mount: `token` links into `..data/`, the file is 0400.
    let mount = h.dir.path().join("secret");
    std::fs::create_dir_all(mount.join("..data")).unwrap();
    let real = mount.join("..data/token");
    std::fs::write(&real, "pool-token\n").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::os::unix::fs::symlink("..data/token", mount.join("token")).unwrap();
    let port = free_port();
    let mut a = h
        .agent()
        .control_plane(&cp, "cloud-run-agent")
        .env_remove("SCALR_AGENT_TOKEN")
        .env("SCALR_AGENT_TOKEN_FILE", mount.join("token"))
        .env("K_SERVICE", "scalr-agents")
        .env("PORT", port.to_string())
        .run();
    // Registered with the file's token (the fake control plane refuses any other).
    a.ready().await;
    let addr = a.health_addr().await;
    assert_eq!(addr.to_string(), format!("0.0.0.0:{port}"));
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(get(local, "/healthz").await.0, 200);
    assert_eq!(get(local, "/readyz").await.0, 200);
    assert!(!a.stderr().contains("pool-token"), "{}", a.stderr());
    a.stop().await;

    // Both the variable and the file: refused before anything starts, naming both.
    let out = h
        .agent()
        .control_plane(&cp, "both")
        .env("SCALR_AGENT_TOKEN_FILE", mount.join("token"))
        .output(&["run"])
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("SCALR_AGENT_TOKEN_FILE=")
            && stderr.contains("either SCALR_AGENT_TOKEN_FILE or SCALR_AGENT_TOKEN, found both"),
        "{stderr}"
    );
    assert!(!stderr.contains("pool-token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_what_a_stage_reaches_of_the_identity_endpoints() {
    let h = Harness::new().await;
    let fake = FakeAws::start("authz-doctor-3f9a").await;
    // The metadata server stand-in: the fake STS answers any request (403 without a signature).
    let metadata = fake.sts_url.trim_start_matches("http://").to_string();
    let closed = format!("http://127.0.0.1:{}/msi/token", free_port());
    let doctor = |extra: Vec<(&str, String)>| {
        let mut b = h.agent().envs(&[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                fake.credentials_url.as_str(),
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "authz-doctor-3f9a"),
            ("IDENTITY_ENDPOINT", closed.as_str()),
            ("IDENTITY_HEADER", "identity-header-doctor-77"),
            ("GCE_METADATA_HOST", metadata.as_str()),
        ]);
        for (k, v) in &extra {
            b = b.env(k, v);
        }
        b.output(&["doctor", "--json"])
    };
    let out = doctor(Vec::new()).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let reach = |r: &Value| -> Vec<(String, Value, String)> {
        r["identity_endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["reachable"].clone(),
                    e["detail"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let seen = reach(&report);
    let names: Vec<_> = seen.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "AWS container credentials",
            "Azure managed identity",
            "cloud metadata server"
        ],
        "{text}"
    );
    assert_eq!(seen[0].1, Value::Bool(true), "{text}");
    assert_eq!(
        seen[0].2, "answers a stage (HTTP 401)",
        "no credential is sent: {text}"
    );
    assert_eq!(seen[1].1, Value::Bool(false), "{text}");
    assert!(seen[1].2.contains("not reachable from a stage"), "{text}");
    assert_eq!(seen[2].1, Value::Bool(true), "{text}");
    assert_eq!(seen[2].2, "answers a stage (HTTP 403)", "{text}");
    let advice = report["advice"].to_string();
    assert!(
        advice.contains("whatever SCALR_AGENT_TASK_INHERIT_IDENTITY says"),
        "{advice}"
    );
    let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    for secret in ["authz-doctor-3f9a", "identity-header-doctor-77"] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
    // The requests came without any credential, and nothing of the probe is left.
    for r in fake.seen() {
        assert!(
            !r.headers.iter().any(|(k, _)| k == "authorization"),
            "{r:?}"
        );
    }
    let tasks = h.data_dir().join("tasks");
    let left: Vec<_> = std::fs::read_dir(&tasks)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // Inheritance off: the identity variables are not probed (stages do not get them), but
    // the metadata server, which needs no secret, still answers.
    let before = fake.seen().len();
    let out = doctor(vec![("SCALR_AGENT_TASK_INHERIT_IDENTITY", "false".into())]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let seen = reach(&report);
    assert_eq!(seen.len(), 1, "{text}");
    assert_eq!(seen[0].0, "cloud metadata server");
    assert_eq!(seen[0].1, Value::Bool(true), "{text}");
    let new = &fake.seen()[before..];
    assert!(new.iter().all(|r| r.service == "sts"), "{new:?}");
}
