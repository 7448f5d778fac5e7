//! How URLs are shown: passwords, tokens and signed query parameters replaced by `***`.

use url::Url;

/// A URL as it may be shown: any password or token in it replaced by `***`.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    } else if !u.username().is_empty() {
        // `https://TOKEN@host/`: a user name alone is how many mirrors take a token.
        let _ = u.set_username("***");
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let secret = [
                    "token",
                    "sig",
                    "signature",
                    "key",
                    "password",
                    "x-amz-signature",
                    "x-amz-credential",
                ]
                .iter()
                .any(|s| k.to_ascii_lowercase().contains(s));
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// [`redact`] for a string that may not even parse as a URL: whatever stands before an `@` in
/// its authority is hidden, and the scheme and the rest are kept so the reader sees the mistake.
pub fn redact_str(s: &str) -> String {
    if let Ok(u) = Url::parse(s)
        && s.contains("://")
    {
        return redact(&u);
    }
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), s),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}***@{host}{}", &rest[authority_end..]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_credentials() {
        let u =
            Url::parse("https://user:pa55@mirror.internal/tf/?X-Amz-Signature=abc&v=1").unwrap();
        let shown = redact(&u);
        assert!(!shown.contains("pa55") && !shown.contains("abc"), "{shown}");
        assert!(
            shown.contains("user:***@") && shown.contains("v=1"),
            "{shown}"
        );
        assert_eq!(redact_str("u:p@proxy:3128"), "***@proxy:3128");
        // A token as the user name, with no password.
        let shown = redact(&Url::parse("https://TOKEN123@mirror.internal/tf/").unwrap());
        assert_eq!(shown, "https://***@mirror.internal/tf/");
        // A URL that does not parse keeps its scheme and loses its credentials.
        assert_eq!(
            redact_str("http://user:pw@127.0.0.1:99999/terraform"),
            "http://***@127.0.0.1:99999/terraform"
        );
        assert_eq!(redact_str("http://a@b@host:1/x@y"), "http://***@host:1/x@y");
    }
}
