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
        let token = match self.token(raw) {
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
                // A refused SCALR_AGENT_TOKEN_FILE is its own problem already.
                if needs != Needs::Local && nonempty(raw.scalr_agent_token_file.clone()).is_none() {
                    self.missing(
                        "SCALR_AGENT_TOKEN",
                        "the agent pool token (or SCALR_AGENT_TOKEN_FILE naming a file with it)",
                    );
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

impl Parser<'_> {
    /// The pool token from `SCALR_AGENT_TOKEN` (legacy `SCALR_TOKEN`) or the file
    /// `SCALR_AGENT_TOKEN_FILE` names; both set is a problem (which one wins would be a guess).
    fn token(&mut self, raw: &Raw) -> Option<(&'static str, String)> {
        let value = pick(
            ("SCALR_AGENT_TOKEN", raw.scalr_agent_token.clone()),
            &[("SCALR_TOKEN", raw.scalr_token.clone())],
        );
        let Some(file) = nonempty(raw.scalr_agent_token_file.clone()) else {
            return value;
        };
        if let Some((name, _)) = value {
            self.problems.push(Problem {
                variable: "SCALR_AGENT_TOKEN_FILE",
                value: Some(file),
                expected: format!(
                    "either SCALR_AGENT_TOKEN_FILE or {name}, found both set (unset one)"
                ),
            });
            return value;
        }
        self.secret_file("SCALR_AGENT_TOKEN_FILE", &file)
            .map(|t| ("SCALR_AGENT_TOKEN_FILE", t))
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::{Config, ConfigError, Needs};

    const URL: (&str, &str) = ("SCALR_URL", "https://acme.scalr.io");

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            Needs::ControlPlane,
        )
    }

    fn token_file(dir: &std::path::Path, content: &[u8], mode: u32) -> String {
        let path = dir.join(format!("token-{mode:o}-{}", content.len()));
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.display().to_string()
    }

    /// The one problem of `vars`, as text, after checking it names `SCALR_AGENT_TOKEN_FILE`.
    fn refused(vars: &[(&str, &str)]) -> String {
        let err = load(vars).unwrap_err();
        let names: Vec<_> = err.problems.iter().map(|p| p.variable).collect();
        assert_eq!(names, ["SCALR_AGENT_TOKEN_FILE"], "{err}");
        err.to_string()
    }

    #[test]
    fn the_pool_token_is_read_from_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let ok = token_file(dir.path(), b"file-token-61c0\n", 0o400);
        let c = load(&[URL, ("SCALR_AGENT_TOKEN_FILE", &ok)]).unwrap();
        assert_eq!(c.control_plane.unwrap().token.expose(), "file-token-61c0");
        // Group-readable is fine (Kubernetes' fsGroup for a non-root agent).
        let group = token_file(dir.path(), b"file-token-61c0", 0o440);
        assert!(load(&[URL, ("SCALR_AGENT_TOKEN_FILE", &group)]).is_ok());
        // A Kubernetes secret mount: the name is a link into `..data/`.
        let link = dir.path().join("linked-token");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        let c = load(&[URL, ("SCALR_AGENT_TOKEN_FILE", link.to_str().unwrap())]).unwrap();
        assert_eq!(c.control_plane.unwrap().token.expose(), "file-token-61c0");
    }

    #[test]
    fn a_bad_token_file_is_refused_saying_what_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let ok = token_file(dir.path(), b"file-token-61c0", 0o400);
        let both = refused(&[
            URL,
            ("SCALR_AGENT_TOKEN", "env-token"),
            ("SCALR_AGENT_TOKEN_FILE", &ok),
        ]);
        assert!(
            both.contains("either SCALR_AGENT_TOKEN_FILE or SCALR_AGENT_TOKEN, found both set"),
            "{both}"
        );
        let legacy = refused(&[
            URL,
            ("SCALR_TOKEN", "env-token"),
            ("SCALR_AGENT_TOKEN_FILE", &ok),
        ]);
        assert!(legacy.contains("or SCALR_TOKEN, found both"), "{legacy}");
        let open = token_file(dir.path(), b"world-readable-secret", 0o644);
        let text = refused(&[URL, ("SCALR_AGENT_TOKEN_FILE", &open)]);
        assert!(
            text.contains(&format!("SCALR_AGENT_TOKEN_FILE={open:?}"))
                && text.contains("found mode 0644")
                && !text.contains("world-readable-secret"),
            "{text}"
        );
        let big = token_file(dir.path(), &[b'a'; 20_000], 0o400);
        let text = refused(&[URL, ("SCALR_AGENT_TOKEN_FILE", &big)]);
        assert!(
            text.contains("at most 16384 bytes, found 20000 bytes"),
            "{text}"
        );
        let empty = token_file(dir.path(), b" \n", 0o400);
        let text = refused(&[URL, ("SCALR_AGENT_TOKEN_FILE", &empty)]);
        assert!(text.contains("found an empty file"), "{text}");
        let spaced = token_file(dir.path(), b"two words", 0o400);
        let err = load(&[URL, ("SCALR_AGENT_TOKEN_FILE", &spaced)]).unwrap_err();
        assert_eq!(err.problems[0].variable, "SCALR_AGENT_TOKEN_FILE");
        assert!(!err.to_string().contains("two words"), "{err}");
        // A directory, a FIFO (opening it must not hang), a missing file, a relative path.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (path, expected) in [
            (
                dir.path().to_str().unwrap(),
                "a regular file, found Directory",
            ),
            (fifo.to_str().unwrap(), "a regular file, found Fifo"),
            ("/nonexistent/token", "opening it failed: No such file"),
            ("token", "an absolute path"),
        ] {
            let text = refused(&[URL, ("SCALR_AGENT_TOKEN_FILE", path)]);
            assert!(text.contains(expected), "{path}: {text}");
        }
    }

    /// A CA bundle or key file named by a variable that is a FIFO, a directory or a sparse
    /// file past the limit is one more problem: the start neither hangs nor reads it whole.
    #[test]
    fn files_named_by_variables_are_regular_files_within_a_limit() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let big = dir.path().join("big.pem");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(super::super::parse::NAMED_FILE_LIMIT + 1)
            .unwrap();
        let (fifo, big) = (fifo.display().to_string(), big.display().to_string());
        let cases = [
            ("SCALR_AGENT_CA_CERT", fifo.clone(), "found Fifo"),
            ("SCALR_AGENT_SOFTWARE_TRUSTED_KEYS", fifo, "found Fifo"),
            (
                "SCALR_AGENT_CA_CERT",
                dir.path().display().to_string(),
                "found Directory",
            ),
            ("SCALR_AGENT_CA_CERT", big, "at most 16777216 bytes"),
        ];
        for (name, path, expected) in cases {
            let (tx, rx) = std::sync::mpsc::channel();
            let p = path.clone();
            std::thread::spawn(move || {
                let _ = tx.send(load(&[URL, (name, &p)]).map(|_| ()));
            });
            let got = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{name}={path}: reading it hangs"));
            let text = got.unwrap_err().to_string();
            assert!(text.contains(name) && text.contains(expected), "{text}");
        }
    }
}
