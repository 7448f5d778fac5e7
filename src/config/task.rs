//! Fills `task::Settings` (the runner) from `SCALR_AGENT_HOOKS_DIR`, `SCALR_AGENT_TASK_*`,
//! `SCALR_AGENT_CANCEL_GRACE`, `PATH`, the stages' CA bundle and `SCALR_AGENT_NSS_WRAPPER_LIB`;
//! and `task::identity::Settings` from `SCALR_AGENT_TASK_INHERIT_IDENTITY`,
//! `SCALR_AGENT_TASK_ENV_PASSTHROUGH` and the agent's whole environment.
//! Defaults are `task::Settings::default()`'s.

use std::collections::HashMap;

use super::parse::{Parser, Raw, nonempty, pick};
use super::variables::VARIABLES;
use crate::task::Settings;
use crate::task::identity;

/// What stages inherit of the agent's environment `env`: the documented identity variables
/// present (unless `SCALR_AGENT_TASK_INHERIT_IDENTITY` is false) and the passthrough's matches.
/// A passthrough entry that could match a reserved name is one problem each.
pub(super) fn identity(
    p: &mut Parser<'_>,
    raw: &Raw,
    env: &HashMap<String, String>,
) -> identity::Settings {
    const PASSTHROUGH: &str = "SCALR_AGENT_TASK_ENV_PASSTHROUGH";
    let inherit = p
        .bool_of(
            "SCALR_AGENT_TASK_INHERIT_IDENTITY",
            &raw.scalr_agent_task_inherit_identity,
        )
        .unwrap_or(true);
    let agent: Vec<&str> = VARIABLES
        .iter()
        .flat_map(|v| std::iter::once(v.name).chain(v.legacy.iter().copied()))
        .collect();
    let passthrough = match nonempty(raw.scalr_agent_task_env_passthrough.clone()) {
        None => Vec::new(),
        Some(v) => identity::parse_passthrough(&v, &agent).unwrap_or_else(|errors| {
            for e in errors {
                let (entry, expected) = match &e {
                    identity::PatternError::Syntax { entry } => (
                        entry,
                        "a variable name or a prefix followed by `*`".to_string(),
                    ),
                    identity::PatternError::Reserved { entry, .. } => (
                        entry,
                        format!("a name or `PREFIX*` matching no reserved variable, found: {e}"),
                    ),
                };
                p.bad(PASSTHROUGH, entry, &expected);
            }
            Vec::new()
        }),
    };
    identity::Settings::select(
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        inherit,
        &passthrough,
    )
}

pub(super) fn parse(p: &mut Parser<'_>, raw: &Raw) -> Settings {
    let d = Settings::default();
    let read_paths = nonempty(raw.scalr_agent_task_read_paths.clone())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| p.abs_path("SCALR_AGENT_TASK_READ_PATHS", s))
                .collect()
        })
        .unwrap_or_default();
    let task_ca_bundle = pick(
        (
            "SCALR_AGENT_CONTAINER_TASK_CA_CERT",
            raw.scalr_agent_container_task_ca_cert.clone(),
        ),
        &[(
            "SCALR_CONTAINER_TASK_CA_CERT",
            raw.scalr_container_task_ca_cert.clone(),
        )],
    )
    .and_then(|(name, v)| super::http::ca_bundle(p, name, &v));
    Settings {
        hooks_dir: nonempty(raw.scalr_agent_hooks_dir.clone())
            .map(|v| p.abs_path("SCALR_AGENT_HOOKS_DIR", &v)),
        keep_task_dirs: p
            .bool_of(
                "SCALR_AGENT_KEEP_TASK_DIRS",
                &raw.scalr_agent_keep_task_dirs,
            )
            .unwrap_or(d.keep_task_dirs),
        cancel_grace: p
            .duration("SCALR_AGENT_CANCEL_GRACE", &raw.scalr_agent_cancel_grace)
            .unwrap_or(d.cancel_grace),
        system_path: nonempty(raw.path.clone()).unwrap_or(d.system_path),
        read_paths,
        task_ca_bundle,
        artifact_limit_bytes: p
            .number(
                "SCALR_AGENT_TASK_ARTIFACT_LIMIT_MB",
                &raw.scalr_agent_task_artifact_limit_mb,
                1,
                1 << 20,
            )
            .map_or(d.artifact_limit_bytes, |mb| mb << 20),
        log_limit_bytes: p
            .number(
                "SCALR_AGENT_TASK_LOG_LIMIT_MB",
                &raw.scalr_agent_task_log_limit_mb,
                1,
                1 << 20,
            )
            .map_or(d.log_limit_bytes, |mb| mb << 20),
        nss_wrapper_lib: nonempty(raw.scalr_agent_nss_wrapper_lib.clone())
            .map(|v| p.abs_path("SCALR_AGENT_NSS_WRAPPER_LIB", &v)),
        task_memory_limit_bytes: p
            .number(
                "SCALR_AGENT_TASK_MEMORY_LIMIT_MB",
                &raw.scalr_agent_task_memory_limit_mb,
                16,
                1 << 24,
            )
            .map(|mb| mb << 20),
        // Filled by `identity` (it needs the whole environment, not only the agent's names).
        identity: d.identity,
    }
}
