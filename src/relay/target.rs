//! Path checks and target URLs: the relay, never the server, decides where a request goes.
//!
//! The server sends a path (and query) relative to the VCS base URL. Before any rule is
//! consulted, [`check_path`] refuses everything that could make that path mean something else
//! to the VCS or to a proxy in front of it: non-ASCII or control bytes, backslashes, `;`
//! parameters, fragments, empty segments (`//`, which also rules out a scheme or host),
//! `.`/`..` segments, and percent escapes of `.`, `\`, `%` (double encoding), `;` and control
//! bytes. An encoded slash (`%2F`) passes this stage and is judged by the matching rule: only
//! a GitLab project segment may carry it. Nothing is decoded here: the bytes sent upstream are
//! the bytes checked. [`decode_once`] decodes a captured project exactly once.
//!
//! [`target_url`] joins the checked path to the configured base and checks that scheme, host,
//! port and path came out unchanged.

use std::fmt;

use url::Url;

/// Longest path-and-query accepted.
pub const MAX_PATH_LEN: usize = 8192;

/// A path and query that passed [`check_path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedPath {
    /// The path, as sent (still percent-encoded), starting with `/`.
    pub path: String,
    /// The raw query, without `?`.
    pub query: Option<String>,
    /// The query's pairs, decoded once.
    pub pairs: Vec<(String, String)>,
}

/// Why a request was refused, and by which rule set (`path`, `push`, `allowlist`,
/// `projects`, `target`, `size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule_set: &'static str,
    pub reason: String,
}

impl Refusal {
    pub fn new(rule_set: &'static str, reason: impl Into<String>) -> Refusal {
        Refusal {
            rule_set,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused by {}: {}", self.rule_set, self.reason)
    }
}

fn refuse(reason: impl Into<String>) -> Refusal {
    Refusal::new("path", reason)
}

/// Checks a path-and-query from the server (see the module docs for what is refused).
pub fn check_path(raw: &str) -> Result<CheckedPath, Refusal> {
    if raw.len() > MAX_PATH_LEN {
        return Err(refuse(format!("longer than {MAX_PATH_LEN} bytes")));
    }
    if !raw.starts_with('/') {
        return Err(refuse(
            "does not start with `/` (a scheme or host is never accepted)",
        ));
    }
    for c in raw.chars() {
        match c {
            '\\' => return Err(refuse("contains a backslash")),
            ';' => return Err(refuse("contains `;` (path parameters are refused)")),
            '#' => return Err(refuse("contains a fragment (`#`)")),
            c if !c.is_ascii() => return Err(refuse("contains a non-ASCII character unencoded")),
            c if c.is_ascii_control() || c == ' ' => {
                return Err(refuse("contains a space or control character"));
            }
            _ => {}
        }
    }
    let (path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    if path.contains("//") {
        return Err(refuse("contains an empty segment (`//`)"));
    }
    for seg in path.split('/').skip(1) {
        if seg == "." || seg == ".." {
            return Err(refuse(format!("contains a `{seg}` segment")));
        }
    }
    check_escapes(path, true)?;
    let pairs = match query {
        Some(q) => {
            check_escapes(q, false)?;
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        }
        None => Vec::new(),
    };
    Ok(CheckedPath {
        path: path.to_string(),
        query: query.map(str::to_string),
        pairs,
    })
}

/// Checks every `%XX` escape of `s`; `in_path` also refuses encoded dots, backslashes and `;`.
fn check_escapes(s: &str, in_path: bool) -> Result<(), Refusal> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
            return Err(refuse("contains a malformed percent escape"));
        };
        let what = match v {
            0x00 => Some("an encoded NUL (`%00`)"),
            0x01..=0x1f | 0x7f => Some("an encoded control character"),
            b'%' => Some("double encoding (`%25`)"),
            b'.' if in_path => Some("an encoded dot (`%2e`)"),
            b'\\' if in_path => Some("an encoded backslash (`%5c`)"),
            b';' if in_path => Some("an encoded `;` (`%3b`)"),
            _ => None,
        };
        if let Some(what) = what {
            return Err(refuse(format!("contains {what}")));
        }
        i += 3;
    }
    Ok(())
}

/// Byte ranges of the encoded slashes (`%2F`, `%2f`) in a checked path.
pub fn encoded_slashes(path: &str) -> Vec<usize> {
    let lower = path.to_ascii_lowercase();
    lower.match_indices("%2f").map(|(i, _)| i).collect()
}

/// Decodes a captured project part once; it must be UTF-8 and must not decode to anything
/// [`check_path`] would have refused in clear.
pub fn decode_once(part: &str) -> Result<String, Refusal> {
    let decoded = percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map_err(|_| Refusal::new("projects", "the project is not UTF-8 once decoded"))?;
    if decoded
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(Refusal::new(
            "projects",
            "the decoded project has an empty, `.` or `..` segment",
        ));
    }
    Ok(decoded.into_owned())
}

/// The URL the relay requests: the base URL's path prefix followed by the checked path and
/// query. Scheme, host, port and the resulting path are checked unchanged after the join.
pub fn target_url(base: &Url, checked: &CheckedPath) -> Result<Url, Refusal> {
    let prefix = base.path().trim_end_matches('/');
    let wanted = format!("{prefix}{}", checked.path);
    let mut u = base.clone();
    u.set_path(&wanted);
    u.set_query(checked.query.as_deref());
    u.set_fragment(None);
    let same = u.scheme() == base.scheme()
        && u.host_str() == base.host_str()
        && u.port_or_known_default() == base.port_or_known_default()
        && u.username() == base.username()
        && u.path() == wanted
        && u.query() == checked.query.as_deref();
    if !same {
        return Err(Refusal::new(
            "target",
            "joining the path to the base URL changed its scheme, host, port or path",
        ));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_lookalikes_are_refused() {
        for p in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/%2e%2e/b",
            "/a/%2E%2E/b",
            "/a/.%2e/b",
            "/a/%252e%252e/b",
            "//evil.example/x",
            "/a//b",
            "http://evil/x",
            "evil/x",
            "/a\\..\\b",
            "/a/%5c/b",
            "/a/%00",
            "/a;jsessionid=1/b",
            "/a/%3b/b",
            "/a/b#frag",
            "/a/%zz",
            "/a/%2",
            "/a/b c",
            "/a/\u{e9}",
            "/a/b?x=%00",
            "/a/b?x=%2500",
        ] {
            let e = check_path(p).expect_err(p);
            assert_eq!(e.rule_set, "path", "{p}");
        }
    }

    #[test]
    fn ordinary_paths_pass_unchanged() {
        let c =
            check_path("/api/v4/projects/acme%2Finfra/repository/archive?sha=abc&x=a%20b").unwrap();
        assert_eq!(c.path, "/api/v4/projects/acme%2Finfra/repository/archive");
        assert_eq!(
            c.pairs,
            [("sha".into(), "abc".into()), ("x".into(), "a b".into())]
        );
        assert_eq!(encoded_slashes(&c.path).len(), 1);
    }

    #[test]
    fn target_keeps_the_base_prefix_and_host() {
        let base = Url::parse("https://vcs.internal:8443/gitlab/").unwrap();
        let c = check_path("/api/v4/user?a=1").unwrap();
        assert_eq!(
            target_url(&base, &c).unwrap().as_str(),
            "https://vcs.internal:8443/gitlab/api/v4/user?a=1"
        );
    }

    #[test]
    fn decoding_happens_once() {
        assert_eq!(decode_once("a%2Fb%2Fc").unwrap(), "a/b/c");
        assert!(decode_once("a%2F%2Fc").is_err());
        assert!(decode_once("a%2F..").is_err());
    }
}
