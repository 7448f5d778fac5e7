//! Workload identity for runs (`task::identity`), with the real runner as root: for each
//! simulated platform the exact documented set of identity variables reaches the stages (a
//! pre-plan hook, which runs in Terraform's environment), token files arrive as 0400 copies
//! owned by the task's uid and point the variables at them, credentials and token contents are
//! masked, the pool token never appears, and a workspace's shell variable wins.

use std::path::Path;
use std::sync::{Arc, Mutex};

use scalr_agent::sandbox::stage::Launcher;
use scalr_agent::task::cancel::Cancel;
use scalr_agent::task::identity::{self, Pattern, Settings};
use scalr_agent::task::log::{Masker, Sink, TaskLog};
use scalr_agent::task::model::Task;
use scalr_agent::task::runner::TaskPaths;
use serde_json::{Value, json};

use crate::support::exec::Exec;

const BIN: &str = env!("CARGO_BIN_EXE_scalr-agent");
const POOL_TOKEN: &str = "pool-token-4b1d9e0c7a";

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The hook: every inherited variable, and for each token file its mode, owner and content.
const HOOK: &str = "env | grep -E '^(AWS_|AZURE_|IDENTITY_|MSI_|GOOGLE_|TFE_|SCALR_AGENT_TOKEN)' | sort | sed 's/^/ENV /'; \
for v in AWS_WEB_IDENTITY_TOKEN_FILE AZURE_FEDERATED_TOKEN_FILE AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE; do \
eval f=\\$$v; [ -n \"$f\" ] && echo \"FILE $v $(stat -c '%a %u' \"$f\") $(cat \"$f\")\"; done; id -u | sed 's/^/UID /'";

/// Runs a plan with the hook under `settings`; returns the masked log and the result.
async fn run(e: &Exec, id: &str, settings: Settings, shell: &[(&str, &str)]) -> (String, Value) {
    let mut doc = e.task(id);
    doc["workspace"]["hooks"] = json!({"pre_plan": HOOK});
    let vars = doc["variables"].as_array_mut().unwrap();
    for (k, v) in shell {
        vars.push(json!({"key": k, "value": v, "category": "shell"}));
    }
    let task = Task::parse(&serde_json::to_vec(&doc).unwrap()).unwrap();
    let mut runner = scalr_agent::exec::runner(&e.h.config().exec(), Launcher::new(BIN));
    runner.settings.identity = settings;
    let buf = Buf::default();
    let sinks: Vec<Sink> = vec![Box::new(buf.clone())];
    let mut log = TaskLog::new(Arc::new(Masker::for_task(&task)), sinks);
    let out = e.dir.join(format!("{id}.out"));
    std::fs::create_dir_all(&out).unwrap();
    let result = runner
        .run(
            &task,
            TaskPaths {
                base: &e.dir,
                out: &out,
            },
            &mut log,
            &Cancel::default(),
            None,
        )
        .await;
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (text, serde_json::to_value(&result).unwrap())
}

fn lines<'a>(log: &'a str, prefix: &str) -> Vec<&'a str> {
    log.lines().filter_map(|l| l.strip_prefix(prefix)).collect()
}

fn token_file(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_platforms_identity_reaches_stages_masked_with_token_copies() {
    let e = Exec::new().await;
    let src = e.dir.join("platform");
    std::fs::create_dir_all(&src).unwrap();
    let irsa = token_file(
        &src,
        "irsa-token",
        "eyJhbGciOiJSUzI1NiJ9.irsa-jwt-payload.sig",
    );
    let pod = token_file(&src, "eks-pod-identity-token", "pod-identity-token-7f3e");
    let azure = token_file(&src, "azure-identity-token", "azure-federated-jwt-91c2");
    // Each platform's variables as it sets them, next to the agent's own secrets.
    let platforms: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "ecs",
            vec![
                (
                    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                    "/v2/credentials/4f1e",
                ),
                ("AWS_REGION", "eu-west-1"),
                ("AWS_DEFAULT_REGION", "eu-west-1"),
            ],
        ),
        (
            "eks-irsa",
            vec![
                ("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/runs"),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", &irsa),
                ("AWS_STS_REGIONAL_ENDPOINTS", "regional"),
                ("AWS_REGION", "eu-west-1"),
            ],
        ),
        (
            "eks-pod-identity",
            vec![
                (
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "http://169.254.170.23/v1/credentials",
                ),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &pod),
            ],
        ),
        (
            "aca",
            vec![
                ("IDENTITY_ENDPOINT", "http://localhost:42356/msi/token"),
                ("IDENTITY_HEADER", "aca-identity-header-5d2a"),
                ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000001"),
            ],
        ),
        (
            "aks",
            vec![
                ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000002"),
                ("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000003"),
                ("AZURE_FEDERATED_TOKEN_FILE", &azure),
                ("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com/"),
            ],
        ),
        (
            "app-service",
            vec![
                ("MSI_ENDPOINT", "http://127.0.0.1:41741/MSI/token/"),
                ("MSI_SECRET", "msi-secret-e83b"),
            ],
        ),
    ];
    for (platform, vars) in platforms {
        let mut agent_env = vars.clone();
        agent_env.extend([
            ("SCALR_AGENT_TOKEN", POOL_TOKEN),
            ("HOME", "/root"),
            ("AWS_PROFILE", "agent-profile"),
        ]);
        let settings = Settings::select(agent_env.iter().copied(), true, &[]);
        let (log, result) = run(&e, &format!("id-{platform}"), settings, &[]).await;
        assert_eq!(result["status"], "succeeded", "{platform}: {log}");
        assert!(!log.contains(POOL_TOKEN), "{platform}: {log}");
        let uid: u32 = lines(&log, "UID ")[0].parse().unwrap();
        assert!(
            (20000..=20999).contains(&uid),
            "{platform}: stages run under a task uid"
        );
        // Exactly the platform's variables, nothing else of the agent's (AWS_PROFILE is not
        // on the list).
        let mut expected: Vec<String> = vars.iter().map(|(k, _)| k.to_string()).collect();
        expected.sort();
        let seen: Vec<String> = lines(&log, "ENV ")
            .iter()
            .map(|l| l.split('=').next().unwrap().to_string())
            .collect();
        assert_eq!(seen, expected, "{platform}: {log}");
        for (k, v) in &vars {
            let line = lines(&log, "ENV ")
                .into_iter()
                .find(|l| l.starts_with(&format!("{k}=")))
                .unwrap();
            let shown = &line[k.len() + 1..];
            if identity::SECRET_VARIABLES.contains(k) {
                assert_eq!(shown, "***", "{platform}: {k} masked");
            } else if identity::TOKEN_FILE_VARIABLES.contains(k) {
                assert!(
                    shown.ends_with(&format!("/identity.{k}"))
                        && !shown.starts_with(src.to_str().unwrap()),
                    "{platform}: {k}={shown}"
                );
            } else {
                assert_eq!(shown, *v, "{platform}: {k}");
            }
        }
        for file in lines(&log, "FILE ") {
            // "<VAR> 400 <uid> ***": read-only, the task's own, the content masked.
            let f: Vec<&str> = file.split(' ').collect();
            assert_eq!(f[1], "400", "{platform}: {file}");
            assert_eq!(f[2].parse::<u32>().unwrap(), uid, "{platform}: {file}");
            assert_eq!(f[3], "***", "{platform}: {file}");
        }
        for secret in [
            "irsa-jwt-payload",
            "pod-identity-token-7f3e",
            "azure-federated-jwt-91c2",
            "aca-identity-header-5d2a",
            "msi-secret-e83b",
        ] {
            assert!(!log.contains(secret), "{platform}: {secret} leaked: {log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_switch_passthrough_and_workspace_precedence() {
    let e = Exec::new().await;
    let agent_env = [
        (
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/off",
        ),
        ("AWS_REGION", "eu-west-1"),
        ("TFE_TOKEN", "tfe-token-1234"),
        ("TFE_HOSTNAME", "tfe.example"),
        ("OTHER", "x"),
    ];
    let passthrough = identity::parse_passthrough("TFE_*", &["SCALR_AGENT_TOKEN"]).unwrap();
    assert_eq!(passthrough, [Pattern::Prefix("TFE_".into())]);
    // Inheritance off: only the passthrough names.
    let (log, result) = run(
        &e,
        "id-off",
        Settings::select(agent_env, false, &passthrough),
        &[],
    )
    .await;
    assert_eq!(result["status"], "succeeded", "{log}");
    assert_eq!(
        lines(&log, "ENV "),
        ["TFE_HOSTNAME=tfe.example", "TFE_TOKEN=tfe-token-1234"],
        "{log}"
    );
    // On, with a workspace shell variable of the same name: the workspace wins.
    let (log, _) = run(
        &e,
        "id-ws",
        Settings::select(agent_env, true, &[]),
        &[("AWS_REGION", "us-east-2")],
    )
    .await;
    assert_eq!(
        lines(&log, "ENV "),
        [
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/credentials/off",
            "AWS_REGION=us-east-2"
        ],
        "{log}"
    );
}
