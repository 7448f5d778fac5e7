//! Builds the whole [`Config`] from the raw variables: each module's settings through its own
//! filler (`http`, `software`, `sandbox`, `task`, `providers`, `agent`), plus what several
//! commands share (control plane, name, debug, log format, data and cache directories).

use std::path::PathBuf;

use super::parse::{Parser, Raw, nonempty, pick};
use super::{Config, Needs, Problem};
use crate::agent::ControlPlane;
use crate::logging::Format;
use crate::secret::Secret;

impl Parser<'_> {
    pub(super) fn build(&mut self, raw: Raw, needs: Needs) -> Config {
        let software = super::software::parse(self, &raw);
        let http = super::http::parse(self, &raw);
        let control_plane = self.control_plane(&raw, needs);
        let sandbox = super::sandbox::parse(self, &raw);
        let runtime = super::sandbox::runtime_hints(&raw);
        let task = super::task::parse(self, &raw);
        let name = self.name(&raw);
        let debug = self
            .pick_bool(
                ("SCALR_AGENT_DEBUG", raw.scalr_agent_debug.clone()),
                ("SCALR_DEBUG", raw.scalr_debug.clone()),
            )
            .unwrap_or(false);
        let log_format = self.log_format(&raw);
        let data_dir = match pick(
            ("SCALR_AGENT_DATA_DIR", raw.scalr_agent_data_dir.clone()),
            &[
                ("SCALR_WORK_DIR", raw.scalr_work_dir.clone()),
                ("SCALR_DATA_HOME", raw.scalr_data_home.clone()),
            ],
        ) {
            None => PathBuf::from("/var/lib/scalr-agent"),
            Some((name, v)) => self.abs_path(name, &v),
        };
        let cache_dir = match nonempty(raw.scalr_agent_cache_dir.clone()) {
            None => data_dir.clone(),
            Some(v) => self.abs_path("SCALR_AGENT_CACHE_DIR", &v),
        };
        let unused_days = software.unused_threshold.as_secs() / 86_400;
        let providers = super::providers::parse(self, &raw, &cache_dir, unused_days);
        let agent = crate::agent::Settings {
            control_plane: control_plane.clone(),
            name: name.clone(),
            data_dir: data_dir.clone(),
            http: http.clone(),
            keep_task_dirs: task.keep_task_dirs,
            runtime: runtime.clone(),
            ..super::agent::parse(self, &raw)
        };
        Config {
            providers,
            control_plane,
            name,
            debug,
            log_format,
            data_dir,
            cache_dir,
            software,
            http,
            sandbox,
            task,
            runtime,
            agent,
            relay: None,
            unknown_variables: Vec::new(),
            ignored_variables: Vec::new(),
        }
    }

    fn name(&mut self, raw: &Raw) -> String {
        match nonempty(raw.scalr_agent_name.clone()) {
            Some(n) => {
                if n.len() > 128 || n.chars().any(|c| c.is_control()) {
                    self.bad("SCALR_AGENT_NAME", &n, "at most 128 printable characters");
                }
                n
            }
            None => hostname(),
        }
    }

    fn log_format(&mut self, raw: &Raw) -> Format {
        match pick(
            ("SCALR_AGENT_LOG_FORMAT", raw.scalr_agent_log_format.clone()),
            &[("SCALR_LOG_FORMAT", raw.scalr_log_format.clone())],
        ) {
            None => Format::Plain,
            Some((name, v)) => match v.to_ascii_lowercase().as_str() {
                "plain" | "dev" => Format::Plain,
                "json" => Format::Json,
                _ => {
                    self.bad(name, &v, "`plain`, `dev` or `json`");
                    Format::Plain
                }
            },
        }
    }

    fn control_plane(&mut self, raw: &Raw, needs: Needs) -> Option<ControlPlane> {
        let url = match nonempty(raw.scalr_url.clone()) {
            Some(v) => self.url("SCALR_URL", &v),
            None => {
                if needs != Needs::Local {
                    self.missing(
                        "SCALR_URL",
                        "the control plane's URL, e.g. https://example.scalr.io",
                    );
                }
                None
            }
        };
        let token = match pick(
            ("SCALR_AGENT_TOKEN", raw.scalr_agent_token.clone()),
            &[("SCALR_TOKEN", raw.scalr_token.clone())],
        ) {
            Some((name, v)) => {
                if v.trim() != v || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    self.problems.push(Problem {
                        variable: name,
                        value: None,
                        expected: "a token without whitespace (value hidden)".into(),
                    });
                }
                Some(Secret::new(v))
            }
            None => {
                if needs != Needs::Local {
                    self.missing("SCALR_AGENT_TOKEN", "the agent pool token");
                }
                None
            }
        };
        Some(ControlPlane {
            url: url?,
            token: token?,
        })
    }
}

fn hostname() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().into_owned();
    if name.is_empty() {
        "scalr-agent".into()
    } else {
        name
    }
}
