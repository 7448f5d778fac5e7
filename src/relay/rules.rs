//! The allowlist: ordered rules, first match wins, default deny.
//!
//! A rule is a method, a path pattern (a regex the relay anchors as `^(?:…)$` over the whole
//! path) and a query condition. Project parts are the pattern's named groups `p1`, `p2`, `p3`
//! (joined with `/` once decoded); a rule with `encoded_project` lets its `p1` carry `%2F`
//! (GitLab's `group%2Fsub%2Frepo`), and no other part of any path may. The operator's rules
//! (from `SCALR_AGENT_RELAY_RULES_FILE`) come before the vendor's preset, so an operator can
//! also deny a preset endpoint. Pushes (`git-receive-pack`) are refused before any rule.
//!
//! The rules file: one rule per line, `allow|deny METHOD PATTERN [key=value ...]`, `#`
//! comments and blank lines ignored. `key=value` pairs are required query values; `key=value`
//! preceded by `only` (`only service=git-upload-pack`) requires the query to be exactly those
//! pairs.
#![allow(
    clippy::disallowed_methods,
    reason = "the operator's rules file, named by a variable"
)]

use std::path::Path;

use regex::Regex;
use reqwest::Method;

pub use super::target::Refusal;
use super::target::{CheckedPath, decode_once, encoded_slashes};

/// What a rule requires of the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryRule {
    /// Any query (already checked for syntax).
    Any,
    /// These pairs must be present (others may be too).
    Requires(Vec<(String, String)>),
    /// The query must be exactly these pairs.
    Exactly(Vec<(String, String)>),
}

/// Where a rule comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Preset,
    File { line: usize },
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub allow: bool,
    pub method: Method,
    pub pattern: Regex,
    pub query: QueryRule,
    pub encoded_project: bool,
    pub origin: Origin,
}

/// A bad rule (preset or file), with where it is.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("rules file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "rules file {path} holds no rule (an empty file is refused: remove the setting instead)"
    )]
    Empty { path: String },
    #[error("rules file {path}, line {line}: {problem}")]
    Line {
        path: String,
        line: usize,
        problem: String,
    },
    #[error("rule {name:?}: pattern {pattern:?}: {source}")]
    Pattern {
        name: String,
        pattern: String,
        source: regex::Error,
    },
}

/// Anchors an operator's or preset's pattern over the whole subject.
pub fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

impl Rule {
    /// A rule from its parts; the pattern is anchored here.
    pub fn new(
        name: &str,
        allow: bool,
        method: Method,
        pattern: &str,
        query: QueryRule,
        origin: Origin,
    ) -> Result<Rule, RuleError> {
        let compiled = anchored(pattern).map_err(|source| RuleError::Pattern {
            name: name.into(),
            pattern: pattern.into(),
            source,
        })?;
        Ok(Rule {
            name: name.into(),
            allow,
            method,
            pattern: compiled,
            query,
            encoded_project: false,
            origin,
        })
    }

    fn query_ok(&self, pairs: &[(String, String)]) -> bool {
        let has = |k: &String, v: &String| pairs.iter().any(|(a, b)| a == k && b == v);
        match &self.query {
            QueryRule::Any => true,
            QueryRule::Requires(req) => req.iter().all(|(k, v)| has(k, v)),
            QueryRule::Exactly(req) => {
                pairs.len() == req.len() && req.iter().all(|(k, v)| has(k, v))
            }
        }
    }
}

/// The outcome of matching one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub rule: String,
    /// The decoded project, when the rule names one.
    pub project: Option<String>,
}

/// The ordered rules and the project pattern.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// `^(?:…)$` around the operator's pattern; `None` allows every project.
    pub projects: Option<Regex>,
    /// For the log: e.g. `gitlab/2026.1`.
    pub preset: String,
}

impl RuleSet {
    /// Judges a checked request: a push is refused first, then the first rule matching method,
    /// path and query decides; no match is a refusal. An allowed request's encoded slashes and
    /// project are checked last.
    pub fn judge(&self, method: &Method, p: &CheckedPath) -> Result<Allowed, Refusal> {
        let pushes = p.path.ends_with("/git-receive-pack")
            || p.pairs.iter().any(|(_, v)| v == "git-receive-pack");
        if pushes {
            return Err(Refusal::new("push", "git-receive-pack is never relayed"));
        }
        for rule in &self.rules {
            if rule.method != *method || !rule.query_ok(&p.pairs) {
                continue;
            }
            let Some(caps) = rule.pattern.captures(&p.path) else {
                continue;
            };
            if !rule.allow {
                return Err(Refusal::new(
                    "allowlist",
                    format!("denied by rule {:?}", rule.name),
                ));
            }
            let p1 = caps.name("p1");
            for at in encoded_slashes(&p.path) {
                let inside = rule.encoded_project
                    && p1.is_some_and(|m| m.start() <= at && at + 3 <= m.end());
                if !inside {
                    return Err(Refusal::new(
                        "path",
                        "contains an encoded slash (`%2f`) outside a GitLab project segment",
                    ));
                }
            }
            let parts: Vec<&str> = ["p1", "p2", "p3"]
                .iter()
                .filter_map(|n| caps.name(n).map(|m| m.as_str()))
                .collect();
            let project = if parts.is_empty() {
                None
            } else {
                let decoded = parts
                    .iter()
                    .map(|s| decode_once(s))
                    .collect::<Result<Vec<_>, _>>()?
                    .join("/");
                if let Some(re) = &self.projects
                    && !re.is_match(&decoded)
                {
                    return Err(Refusal::new(
                        "projects",
                        format!(
                            "project {decoded:?} is not allowed by SCALR_AGENT_VCS_ALLOWED_PROJECTS"
                        ),
                    ));
                }
                Some(decoded)
            };
            return Ok(Allowed {
                rule: rule.name.clone(),
                project,
            });
        }
        Err(Refusal::new(
            "allowlist",
            format!("no rule of {} allows {method} on this path", self.preset),
        ))
    }
}

/// Reads the operator's rules file (blocking: call from `spawn_blocking` or before the
/// runtime's work starts).
pub fn read_file(path: &Path) -> Result<Vec<Rule>, RuleError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| RuleError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_file(&shown, &text)
}

/// Parses the rules file's text (format in the module docs).
pub fn parse_file(path: &str, text: &str) -> Result<Vec<Rule>, RuleError> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.split_once('#').map_or(line, |(l, _)| l).trim();
        if line.is_empty() {
            continue;
        }
        let bad = |problem: String| RuleError::Line {
            path: path.into(),
            line: line_no,
            problem,
        };
        let mut words = line.split_whitespace();
        let allow = match words.next() {
            Some("allow") => true,
            Some("deny") => false,
            Some(w) => return Err(bad(format!("expected `allow` or `deny`, found {w:?}"))),
            None => unreachable!("the line is not empty"),
        };
        let method = match words.next() {
            Some(m) if m.chars().all(|c| c.is_ascii_uppercase()) => {
                Method::from_bytes(m.as_bytes()).map_err(|_| bad(format!("bad method {m:?}")))?
            }
            other => {
                return Err(bad(format!(
                    "expected an upper-case method, found {other:?}"
                )));
            }
        };
        let pattern = words
            .next()
            .ok_or_else(|| bad("expected a path pattern after the method".into()))?;
        if !pattern.starts_with('/') {
            return Err(bad(format!(
                "the path pattern {pattern:?} must start with `/`"
            )));
        }
        let mut exact = false;
        let mut pairs = Vec::new();
        for w in words {
            if w == "only" {
                exact = true;
                continue;
            }
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| bad(format!("expected key=value, found {w:?}")))?;
            pairs.push((k.to_string(), v.to_string()));
        }
        let query = match (exact, pairs.is_empty()) {
            (true, _) => QueryRule::Exactly(pairs),
            (false, true) => QueryRule::Any,
            (false, false) => QueryRule::Requires(pairs),
        };
        let name = format!("file:{line_no}");
        rules.push(Rule::new(
            &name,
            allow,
            method,
            pattern,
            query,
            Origin::File { line: line_no },
        )?);
    }
    if rules.is_empty() {
        return Err(RuleError::Empty { path: path.into() });
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_rules_parse_and_bad_lines_are_named() {
        let r = parse_file(
            "f",
            "# extra\nallow POST /api/graphql\ndeny GET /api/v4/projects/(?P<p1>[^/]+)/repository/archive\nallow GET /x/info/refs only service=git-upload-pack\n",
        )
        .unwrap();
        assert_eq!(r.len(), 3);
        assert!(r[0].allow && !r[1].allow);
        assert_eq!(
            r[2].query,
            QueryRule::Exactly(vec![("service".into(), "git-upload-pack".into())])
        );
        let e = parse_file("f", "allow get /x\n").unwrap_err().to_string();
        assert!(
            e.contains("line 1") && e.contains("upper-case method"),
            "{e}"
        );
        let e = parse_file("f", "# nothing\n\n").unwrap_err().to_string();
        assert!(e.contains("no rule"), "{e}");
        let e = parse_file("f", "allow GET /x(\n").unwrap_err().to_string();
        assert!(e.contains("pattern"), "{e}");
    }
}
