//! Workload identity for runs (`task::identity`, filled by `config` from the agent's
//! environment), with the real `scalr-agent exec` as root: for each simulated platform the exact
//! documented set of identity variables reaches the stages (a pre-plan hook, which runs in
//! Terraform's environment), token files arrive as 0400 copies owned by the task's uid and point
//! the variables at them, credentials and token contents are masked, the pool token never
//! appears, every other name a stage sees is one the agent reserves, and a workspace's shell
//! variable wins. `SCALR_AGENT_TASK_INHERIT_IDENTITY=false` keeps the list out;
//! `SCALR_AGENT_TASK_ENV_PASSTHROUGH` adds names, and a reserved one stops the agent (exit 64).

use std::path::Path;

use scalr_agent::task::identity::{self, Pattern};
use serde_json::{Value, json};

use crate::support::aws::{self, FakeAws};
use crate::support::exec::{Exec, text};

const POOL_TOKEN: &str = "pool-token-4b1d9e0c7a";

/// The hook: every inherited variable, and for each token file its mode, owner and content;
/// then every name in the stage's environment.
const HOOK: &str = "env | grep -E '^(AWS_|AZURE_|IDENTITY_|MSI_|GOOGLE_|TFE_|SCALR_AGENT_TOKEN)' | sort | sed 's/^/ENV /'; \
for v in AWS_WEB_IDENTITY_TOKEN_FILE AZURE_FEDERATED_TOKEN_FILE AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE; do \
eval f=\\$$v; [ -n \"$f\" ] && echo \"FILE $v $(stat -c '%a %u' \"$f\") $(cat \"$f\")\"; done; id -u | sed 's/^/UID /'; \
env | grep -oE '^[A-Za-z_][A-Za-z0-9_]*=' | tr -d = | sed 's/^/NAME /'";

/// Names the hook's own shell sets.
const SHELL_NAMES: &[&str] = &["PWD", "OLDPWD", "SHLVL", "_"];

/// Runs a plan with the hook through `scalr-agent exec`, the agent's environment being the
/// harness's plus `agent_env`; returns the exit code, the masked log (stdout), the result and
/// the agent's stderr.
async fn run(
    e: &Exec,
    id: &str,
    agent_env: &[(&str, &str)],
    shell: &[(&str, &str)],
) -> (Option<i32>, String, Value, String) {
    run_hook(e, id, HOOK, agent_env, shell).await
}

/// [`run`] with another pre-plan hook.
async fn run_hook(
    e: &Exec,
    id: &str,
    hook: &str,
    agent_env: &[(&str, &str)],
    shell: &[(&str, &str)],
) -> (Option<i32>, String, Value, String) {
    let mut doc = e.task(id);
    doc["workspace"]["hooks"] = json!({"pre_plan": hook});
    let vars = doc["variables"].as_array_mut().unwrap();
    for (k, v) in shell {
        vars.push(json!({"key": k, "value": v, "category": "shell"}));
    }
    let (output, result, out) = e.run(&doc, agent_env).await;
    let log = text(&output.stdout);
    if output.status.code() == Some(0) || output.status.code() == Some(1) {
        // The log on stdout and in the output directory are the same masked text.
        let file = std::fs::read_to_string(out.join("task.log")).unwrap_or_default();
        assert_eq!(file, log, "{id}: task.log and stdout differ");
    }
    (output.status.code(), log, result, text(&output.stderr))
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
            "cloud-run",
            vec![("GOOGLE_CLOUD_PROJECT", "acme-prod-4711")],
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
        // The platform's own marker, which the agent reads and stages never get.
        agent_env.push(match platform {
            "ecs" => (
                "ECS_CONTAINER_METADATA_URI_V4",
                "http://169.254.170.2/v4/1f2e",
            ),
            "cloud-run" => ("K_SERVICE", "scalr-agents"),
            "aca" => ("CONTAINER_APP_NAME", "scalr-agents"),
            _ => ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        });
        let (code, log, result, stderr) = run(&e, &format!("id-{platform}"), &agent_env, &[]).await;
        assert_eq!(code, Some(0), "{platform}: {stderr}\n{log}");
        assert_eq!(result["status"], "succeeded", "{platform}: {log}");
        for shown in [&log, &stderr, &result.to_string()] {
            assert!(!shown.contains(POOL_TOKEN), "{platform}: {shown}");
        }
        // Every other name a stage sees is one a passthrough entry may not replace.
        for name in lines(&log, "NAME ") {
            let inherited = vars.iter().any(|(k, _)| *k == name);
            let reserved = Pattern::Name(name.to_string()).check(name, &[]).is_err();
            assert!(
                inherited || reserved || SHELL_NAMES.contains(&name),
                "{platform}: the stage has {name}, which a passthrough could replace"
            );
        }
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
        ("IDENTITY_HEADER", "header-off-6a1c"),
        ("TFE_TOKEN", "tfe-token-1234"),
        ("TFE_HOSTNAME", "tfe.example"),
        ("OTHER", "x"),
        ("SCALR_AGENT_TOKEN", POOL_TOKEN),
    ];
    // Inheritance off: only the passthrough names.
    let mut off = agent_env.to_vec();
    off.extend([
        ("SCALR_AGENT_TASK_INHERIT_IDENTITY", "false"),
        ("SCALR_AGENT_TASK_ENV_PASSTHROUGH", "TFE_*"),
    ]);
    let (code, log, result, stderr) = run(&e, "id-off", &off, &[]).await;
    assert_eq!(code, Some(0), "{stderr}\n{log}");
    assert_eq!(result["status"], "succeeded", "{log}");
    assert_eq!(
        lines(&log, "ENV "),
        ["TFE_HOSTNAME=tfe.example", "TFE_TOKEN=tfe-token-1234"],
        "{log}"
    );
    assert!(
        !log.contains(POOL_TOKEN) && !log.contains("header-off-6a1c"),
        "{log}"
    );
    // The default is on; a workspace shell variable of the same name wins.
    let (code, log, _, stderr) = run(&e, "id-ws", &agent_env, &[("AWS_REGION", "us-east-2")]).await;
    assert_eq!(code, Some(0), "{stderr}\n{log}");
    assert_eq!(
        lines(&log, "ENV "),
        [
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=/v2/credentials/off",
            "AWS_REGION=us-east-2",
            "IDENTITY_HEADER=***",
        ],
        "{log}"
    );
}

#[tokio::test]
async fn a_reserved_passthrough_entry_stops_the_agent_naming_it() {
    let e = Exec::new().await;
    let doc = e.task("id-reserved");
    let (output, result, _) = e
        .run(
            &doc,
            &[
                ("SCALR_AGENT_TOKEN", POOL_TOKEN),
                (
                    "SCALR_AGENT_TASK_ENV_PASSTHROUGH",
                    "TFE_TOKEN,SCALR_AGENT_TOKEN,SCA*,HOME,TF_VAR_region,AWS_*,bad-name",
                ),
            ],
        )
        .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert_eq!(result, Value::Null, "nothing ran");
    for (entry, found) in [
        (
            "SCALR_AGENT_TOKEN",
            "matches SCALR_AGENT_TOKEN, a variable the agent itself reads",
        ),
        (
            "SCA*",
            "matches SCALR_URL, a variable the agent itself reads",
        ),
        (
            "HOME",
            "matches HOME, a variable the agent sets for every stage",
        ),
        (
            "TF_VAR_region",
            "matches TF_VAR_*, a variable the agent sets",
        ),
        (
            "AWS_*",
            "an identity variable: stages inherit it through SCALR_AGENT_TASK_INHERIT_IDENTITY",
        ),
        (
            "bad-name",
            "expected a variable name or a prefix followed by `*`",
        ),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("SCALR_AGENT_TASK_ENV_PASSTHROUGH=\"{entry}\"")))
            .unwrap_or_else(|| panic!("{entry} not named: {stderr}"));
        assert!(line.contains(found), "{entry}: {line}");
    }
    assert!(
        !stderr.contains("\"TFE_TOKEN\""),
        "a free name is accepted: {stderr}"
    );
    assert!(!stderr.contains(POOL_TOKEN), "{stderr}");
}

/// awscli v1 from PyPI, installed by `.ci/run` into a venv of Debian's Python: its botocore
/// reads `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (EKS Pod Identity), which Debian bookworm's
/// `awscli` 2.9 predates.
const PIP_AWS: &str = "/opt/scalr-agent-tests/awscli/bin/aws";
/// Debian's `awscli` package, installed by `.ci/run`.
const DEBIAN_AWS: &str = "/usr/bin/aws";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_in_a_stage_gets_the_containers_role() {
    for cli in [DEBIAN_AWS, PIP_AWS] {
        assert!(
            Path::new(cli).exists(),
            "{cli} is missing: .ci/run installs it (apt-get install awscli; pip install awscli)"
        );
    }
    let e = Exec::new().await;
    let authz = "pod-identity-authz-5e8f01";
    let fake = FakeAws::start(authz).await;
    let src = e.dir.join("platform");
    std::fs::create_dir_all(&src).unwrap();
    let file = token_file(&src, "eks-pod-identity-token", authz);
    let hook = |cli: &str| {
        format!(
            "arn=$({cli} sts get-caller-identity --endpoint-url {} --region us-east-1 \
             --output text --query Arn) || exit 1; echo \"ARN $arn\"; id -u | sed 's/^/UID /'",
            fake.sts_url
        )
    };
    let common = [
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            fake.credentials_url.as_str(),
        ),
        ("AWS_REGION", "us-east-1"),
        ("SCALR_AGENT_TOKEN", POOL_TOKEN),
        ("SCALR_AGENT_TASK_READ_PATHS", "/opt/scalr-agent-tests"),
    ];
    // ECS: the authorization token in a variable (Debian's CLI); EKS Pod Identity: in a file,
    // which reaches the stage as its 0400 copy (the CLI from PyPI).
    let cases = [
        (
            "aws-debian",
            DEBIAN_AWS,
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", authz),
        ),
        (
            "aws-pip",
            PIP_AWS,
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", file.as_str()),
        ),
    ];
    for (id, cli, authz_var) in cases {
        let before = fake.seen().len();
        let mut env = common.to_vec();
        env.push(authz_var);
        let (code, log, result, stderr) = run_hook(&e, id, &hook(cli), &env, &[]).await;
        assert_eq!(code, Some(0), "{id}: {stderr}\n{log}");
        assert_eq!(result["status"], "succeeded", "{id}: {log}");
        assert_eq!(lines(&log, "ARN "), [aws::ARN], "{id}: {log}");
        let uid: u32 = lines(&log, "UID ")[0].parse().unwrap();
        assert!((20000..=20999).contains(&uid), "{id}: under a task uid");
        assert!(!log.contains(authz), "{id}: the token is masked: {log}");
        let seen = &fake.seen()[before..];
        let creds: Vec<_> = seen.iter().filter(|s| s.service == "credentials").collect();
        assert!(!creds.is_empty(), "{id}: the CLI asked for credentials");
        for s in creds {
            let authz_header = s.headers.iter().find(|(k, _)| k == "authorization");
            assert_eq!(authz_header.map(|(_, v)| v.as_str()), Some(authz), "{id}");
        }
        assert!(
            seen.iter()
                .any(|s| s.service == "sts" && s.body.contains("GetCallerIdentity")),
            "{id}: {seen:?}"
        );
        for s in seen {
            let text = format!("{:?} {}", s.headers, s.body);
            assert!(
                !text.contains(POOL_TOKEN),
                "{id}: the pool token reached AWS: {text}"
            );
        }
    }
}
