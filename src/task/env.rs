//! The environment of every child process, built from an allow-list: nothing of the agent's own
//! environment is inherited. Also writes the task's CLI configuration file.
//!
//! Precedence, lowest first: the agent's defaults (PATH, HOME, TMPDIR, TF_* automation flags,
//! proxies, CA bundle), the workspace's shell variables, the Terraform variables (`TF_VAR_*`),
//! then the run variables (`SCALR_*`, also as `TF_VAR_SCALR_*`), which a shell variable cannot
//! override. A shell `PATH` is kept, after the task's tool directory.
//!
//! Terraform variables are passed as `TF_VAR_<key>`: a plain value as it is (Terraform takes it
//! as a string, or converts it to the declared primitive type), an `hcl` value as the expression
//! text, which Terraform parses for variables of complex types.
#![allow(
    clippy::disallowed_methods,
    reason = "writes the CLI configuration before any task code ran"
)]

use std::collections::BTreeMap;
use std::path::Path;

use super::model::{Task, VariableCategory};
use super::prepare::TaskDirs;

/// An environment: name to value, ordered for reproducible output.
pub type Env = BTreeMap<String, String>;

/// Shell variable consumed by the agent: the content of a CLI configuration file.
pub const TERRAFORM_RC: &str = "SCALR_TERRAFORM_RC";

/// The default system PATH when the agent's own is unknown.
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Inputs that do not come from the task.
pub struct EnvContext<'a> {
    pub dirs: &'a TaskDirs,
    /// The agent's PATH (so tools added by an image's `ENV PATH` stay reachable).
    pub system_path: &'a str,
    pub http: &'a crate::http::Settings,
    /// A CA bundle file for tools (system roots plus the configured extra CA).
    pub ca_file: Option<&'a Path>,
    pub content_root: &'a Path,
    /// The stage's user entry through `libnss-wrapper` (library, identity), when available.
    pub user: Option<(&'a Path, &'a super::users::Identity)>,
}

/// Builds the base environment of a task's steps.
#[expect(
    clippy::too_many_lines,
    reason = "one task environment, variable by variable"
)]
pub fn build(task: &Task, cx: &EnvContext<'_>) -> Env {
    let mut env = Env::new();
    let mut set = |k: &str, v: &str| {
        env.insert(k.to_string(), v.to_string());
    };
    let home = cx.dirs.home.display().to_string();
    set("HOME", &home);
    set("TMPDIR", &cx.dirs.tmp.display().to_string());
    set("USER", "scalr");
    set("LANG", "C.UTF-8");
    set("TF_IN_AUTOMATION", "1");
    set("TF_INPUT", "0");
    set("CHECKPOINT_DISABLE", "1");
    set(
        "TF_PLUGIN_CACHE_DIR",
        &cx.dirs.plugin_cache.display().to_string(),
    );
    set(
        "TF_CLI_CONFIG_FILE",
        &cx.dirs.cli_config.display().to_string(),
    );
    set(
        "TERRAFORM_CONFIG",
        &cx.dirs.cli_config.display().to_string(),
    );
    if let Some(ca) = cx.ca_file {
        set("SSL_CERT_FILE", &ca.display().to_string());
    }
    for (names, value) in [
        (
            ["HTTP_PROXY", "http_proxy"],
            cx.http.http_proxy.as_ref().map(|u| u.to_string()),
        ),
        (
            ["HTTPS_PROXY", "https_proxy"],
            cx.http.https_proxy.as_ref().map(|u| u.to_string()),
        ),
        (["NO_PROXY", "no_proxy"], cx.http.no_proxy.clone()),
    ] {
        if let Some(v) = value {
            for n in names {
                set(n, &v);
            }
        }
    }
    let mut user_path = None;
    for v in task
        .variables
        .iter()
        .filter(|v| v.category == VariableCategory::Shell)
    {
        match v.key.as_str() {
            TERRAFORM_RC => {}
            "PATH" => user_path = Some(v.value.clone()),
            k if k.starts_with("SCALR_") => {} // run variables are the agent's
            k => set(k, &v.value),
        }
    }
    for v in task
        .variables
        .iter()
        .filter(|v| v.category == VariableCategory::Terraform)
    {
        set(&format!("TF_VAR_{}", v.key), &v.value);
    }
    let tools = cx.dirs.bin.display();
    let path = match user_path {
        Some(p) => format!("{tools}:{home}/.local/bin:{p}"),
        None => format!("{tools}:{home}/.local/bin:{}", cx.system_path),
    };
    set("PATH", &path);
    for (k, v) in run_variables(task, cx) {
        set(&format!("TF_VAR_{k}"), &v);
        set(&k, &v);
    }
    set("SCALR_TOKEN", task.control_plane.run_token.expose());
    set(
        &token_variable(&task.control_plane.hostname),
        task.control_plane.run_token.expose(),
    );
    if let Some((library, identity)) = cx.user {
        // After the shell variables: the agent's user entry wins (a preload of theirs is kept).
        super::users::apply_env(&mut env, library, &cx.dirs.root, identity);
    }
    env
}

/// The `SCALR_*` run variables (without `SCALR_TOKEN` and the exit code).
fn run_variables(task: &Task, cx: &EnvContext<'_>) -> Vec<(String, String)> {
    let vcs = task.run.vcs.as_ref();
    [
        ("SCALR_RUN_ID", task.run.id.clone()),
        ("SCALR_HOSTNAME", task.control_plane.hostname.clone()),
        ("SCALR_TERRAFORM_OPERATION", task.action.to_string()),
        (
            "SCALR_RUN_IS_DESTROY",
            if task.run.is_destroy { "1" } else { "0" }.to_string(),
        ),
        (
            "SCALR_RUN_VCS_BRANCH",
            vcs.map(|v| v.branch.clone()).unwrap_or_default(),
        ),
        (
            "SCALR_RUN_VCS_COMMIT",
            vcs.map(|v| v.commit.clone()).unwrap_or_default(),
        ),
        ("SCALR_RUN_MODE", task.run.mode.as_str().to_string()),
        ("SCALR_RUN_SOURCE", task.run.source.clone()),
        ("SCALR_WORKSPACE_NAME", task.workspace.name.clone()),
        ("SCALR_WORKSPACE_ID", task.workspace.id.clone()),
        ("SCALR_ENVIRONMENT_NAME", task.environment.name.clone()),
        ("SCALR_ENVIRONMENT_ID", task.environment.id.clone()),
        (
            "SCALR_RUN_CONTENT_ROOT",
            cx.content_root.display().to_string(),
        ),
        ("SCALR_AGENT_ENV", cx.dirs.agent_env.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `TF_TOKEN_<host>`: dots become `_`, hyphens `__` (Terraform 1.2+ and OpenTofu).
pub fn token_variable(host: &str) -> String {
    let mut name = String::from("TF_TOKEN_");
    for c in host.chars() {
        match c {
            '.' => name.push('_'),
            '-' => name.push_str("__"),
            c if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
            _ => {}
        }
    }
    name
}

/// Writes the CLI configuration: the user's `SCALR_TERRAFORM_RC` verbatim, plus what the agent
/// needs and the user did not set (credentials for the control plane, which Terraform before
/// 1.2 only reads from here; the plugin cache). Returns whether the user set `plugin_cache_dir`
/// (then `TF_PLUGIN_CACHE_DIR` must not override it).
/// `hosts`: the operator's registry service overrides, written as `host` blocks where the user
/// has none for that host.
pub fn write_cli_config(
    task: &Task,
    dirs: &TaskDirs,
    hosts: &std::collections::BTreeMap<String, url::Url>,
) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let user = task
        .variables
        .iter()
        .find(|v| v.category == VariableCategory::Shell && v.key == TERRAFORM_RC)
        .map(|v| v.value.as_str())
        .unwrap_or("");
    let host = &task.control_plane.hostname;
    let has_credentials = contains_block(user, "credentials", host);
    let has_cache = user
        .lines()
        .any(|l| l.trim_start().starts_with("plugin_cache_dir"));
    let mut text = String::new();
    if !user.is_empty() {
        text.push_str("# From SCALR_TERRAFORM_RC:\n");
        text.push_str(user);
        if !user.ends_with('\n') {
            text.push('\n');
        }
    }
    text.push_str("# Added by scalr-agent where not set above:\n");
    if !has_credentials {
        let token = task
            .control_plane
            .run_token
            .expose()
            .replace('\\', "\\\\")
            .replace('"', "\\\"");
        text.push_str(&format!(
            "credentials \"{host}\" {{\n  token = \"{token}\"\n}}\n"
        ));
    }
    for (host, url) in hosts {
        if !contains_block(user, "host", host) {
            text.push_str(&format!(
                "host \"{host}\" {{\n  services = {{\n    \"providers.v1\" = \"{url}\"\n  }}\n}}\n"
            ));
        }
    }
    if !has_cache {
        text.push_str(&format!(
            "plugin_cache_dir = \"{}\"\n",
            dirs.plugin_cache.display()
        ));
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&dirs.cli_config)?;
    f.write_all(text.as_bytes())?;
    Ok(has_cache)
}

/// Whether `text` has a `<kind> "<label>"` block (quotes optional).
fn contains_block(text: &str, kind: &str, label: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        l.strip_prefix(kind)
            .map(|rest| rest.trim_start().trim_start_matches('"').starts_with(label))
            .unwrap_or(false)
    })
}

/// What `SCALR_AGENT_ENV` held: new variables, malformed lines (1-based number and reason) and
/// the number of complete lines read.
pub type AgentEnvLines = (Vec<(String, String)>, Vec<(usize, String)>, usize);

/// Parses the `KEY=VALUE` lines a hook appended to `SCALR_AGENT_ENV`, starting at line `from`.
pub fn parse_agent_env(text: &str, from: usize) -> AgentEnvLines {
    let mut vars = Vec::new();
    let mut bad = Vec::new();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    // A last line without a newline may still be being written: leave it for later.
    let complete = lines.iter().filter(|l| l.ends_with('\n')).count();
    for (i, line) in lines.iter().enumerate().take(complete).skip(from) {
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if is_name(k) && !k.starts_with("SCALR_") => {
                vars.push((k.to_string(), v.to_string()))
            }
            Some((k, _)) if k.starts_with("SCALR_") => {
                bad.push((i + 1, format!("{k} is reserved for the agent")))
            }
            _ => bad.push((
                i + 1,
                "expected KEY=VALUE with KEY made of letters, digits and `_`".into(),
            )),
        }
    }
    (vars, bad, complete)
}

fn is_name(k: &str) -> bool {
    k.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_variable_names() {
        assert_eq!(token_variable("app.scalr.io"), "TF_TOKEN_app_scalr_io");
        assert_eq!(
            token_variable("my-org.scalr.io"),
            "TF_TOKEN_my__org_scalr_io"
        );
    }

    #[test]
    fn agent_env_lines() {
        let (vars, bad, n) = parse_agent_env(
            "A=1\n# c\n\nB=x=y\nnot a line\nSCALR_RUN_ID=x\n9X=1\nPART",
            0,
        );
        assert_eq!(
            vars,
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x=y".to_string())
            ]
        );
        assert_eq!(bad.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(n, 7);
        let (vars, _, _) = parse_agent_env("A=1\nC=2\n", 1);
        assert_eq!(vars, [("C".to_string(), "2".to_string())]);
    }

    #[test]
    fn blocks_are_found() {
        assert!(contains_block(
            "credentials \"app.scalr.io\" {",
            "credentials",
            "app.scalr.io"
        ));
        assert!(!contains_block(
            "# credentials",
            "credentials",
            "app.scalr.io"
        ));
    }
}
