//! Provider addresses, versions and platforms as they appear in lock files and on disk.
//!
//! Every part becomes a path component of the store, so each is checked against a strict
//! character set when parsed: a name from a hostile lock file can never escape the store.

use std::fmt;
use std::str::FromStr;

/// The registry every short source address (`hashicorp/null`) refers to.
pub const DEFAULT_HOST: &str = "registry.terraform.io";

/// `HOST/NAMESPACE/TYPE`, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Provider {
    pub host: String,
    pub namespace: String,
    pub kind: String,
}

/// Why a provider address, version or platform was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid provider {what} {given:?}: expected {expected}")]
pub struct AddrError {
    pub what: &'static str,
    pub given: String,
    pub expected: &'static str,
}

fn part_ok(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
}

impl FromStr for Provider {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Provider, AddrError> {
        let bad = || AddrError {
            what: "address",
            given: s.to_string(),
            expected: "[HOST/]NAMESPACE/TYPE with lower-case letters, digits, `-` and `_`",
        };
        let lower = s.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        let (host, ns, kind) = match parts.as_slice() {
            [ns, kind] => (DEFAULT_HOST, *ns, *kind),
            [host, ns, kind] => (*host, *ns, *kind),
            _ => return Err(bad()),
        };
        if !part_ok(host, b".-:") || !part_ok(ns, b"-_") || !part_ok(kind, b"-_") {
            return Err(bad());
        }
        Ok(Provider {
            host: host.into(),
            namespace: ns.into(),
            kind: kind.into(),
        })
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.host, self.namespace, self.kind)
    }
}

/// One installable package: a provider version for one platform (`linux_amd64`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Package {
    pub provider: Provider,
    pub version: String,
    pub target: String,
}

impl Package {
    /// Checks the version and target and builds the package.
    pub fn new(provider: Provider, version: &str, target: &str) -> Result<Package, AddrError> {
        let v_ok = !version.is_empty()
            && version.len() <= 64
            && version.as_bytes()[0].is_ascii_digit()
            && !version.contains("..")
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
        if !v_ok {
            return Err(AddrError {
                what: "version",
                given: version.into(),
                expected: "a semantic version such as 2.1.2",
            });
        }
        if !matches!(target.split_once('_'), Some((os, arch)) if part_ok(os, b"") && part_ok(arch, b""))
        {
            return Err(AddrError {
                what: "platform",
                given: target.into(),
                expected: "OS_ARCH such as linux_amd64",
            });
        }
        Ok(Package {
            provider,
            version: version.into(),
            target: target.into(),
        })
    }

    /// `[HOST/]NAMESPACE/TYPE@VERSION` for this machine's platform (`software providers --add`).
    pub fn parse_spec(spec: &str) -> Result<Package, AddrError> {
        let (provider, version) = spec.split_once('@').ok_or_else(|| AddrError {
            what: "package",
            given: spec.into(),
            expected: "[HOST/]NAMESPACE/TYPE@VERSION such as hashicorp/null@3.2.1",
        })?;
        let target = host_target().ok_or_else(|| AddrError {
            what: "platform",
            given: std::env::consts::ARCH.into(),
            expected: "a machine with provider builds (x86_64 or aarch64)",
        })?;
        Package::new(provider.parse()?, version, target)
    }

    /// `(os, arch)` of the target.
    pub fn os_arch(&self) -> (&str, &str) {
        self.target.split_once('_').expect("checked in new")
    }

    /// A file-name-safe identifier (lock files).
    pub fn slug(&self) -> String {
        format!(
            "{}_{}_{}_{}_{}",
            self.provider.host.replace(':', "-"),
            self.provider.namespace,
            self.provider.kind,
            self.version,
            self.target
        )
    }

    /// `HOST/NAMESPACE/TYPE/VERSION/TARGET`, the unpacked layout Terraform uses.
    pub fn rel_path(&self) -> std::path::PathBuf {
        [
            self.provider.host.as_str(),
            &self.provider.namespace,
            &self.provider.kind,
            &self.version,
            &self.target,
        ]
        .iter()
        .collect()
    }
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.provider, self.version, self.target)
    }
}

/// The platform of this machine in Terraform's spelling, if it has provider builds.
pub fn host_target() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("linux_amd64"),
        "aarch64" => Some("linux_arm64"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let p: Provider = "hashicorp/null".parse().unwrap();
        assert_eq!(p.to_string(), "registry.terraform.io/hashicorp/null");
        let p: Provider = "Registry.Test:8443/acme/my-thing_x".parse().unwrap();
        assert_eq!(p.host, "registry.test:8443");
        for bad in [
            "a/../b", "../x/y", "a/b/c/d", "x", "h/n/t y", "h/.n/t", "h//t",
        ] {
            assert!(bad.parse::<Provider>().is_err(), "{bad}");
        }
        let p: Provider = "h.io/n/t".parse().unwrap();
        assert!(Package::new(p.clone(), "../1", "linux_amd64").is_err());
        assert!(Package::new(p.clone(), "1.0.0", "linux/amd64").is_err());
        assert!(Package::parse_spec("h.io/n/t").is_err());
        assert_eq!(Package::parse_spec("n/t@1.2.3").unwrap().version, "1.2.3");
        let pkg = Package::new(p, "1.0.0-beta+x", "linux_amd64").unwrap();
        assert_eq!(
            pkg.rel_path(),
            std::path::Path::new("h.io/n/t/1.0.0-beta+x/linux_amd64")
        );
    }
}
