//! What each tool's upstream release looks like: file names, URLs, archive kinds, checksum and
//! signature files, for `linux_amd64` and `linux_arm64`.
//!
//! The catalog only computes names and URLs; it never touches the network or the disk. A mirror
//! replaces the vendor's base URL and keeps the vendor's own relative layout, so a mirror is a
//! plain copy (or caching proxy) of the upstream files.

use std::fmt;
use std::str::FromStr;

use url::Url;

/// A tool the agent provisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tool {
    OpenTofu,
    Terraform,
    Opa,
    Infracost,
}

impl Tool {
    pub const ALL: [Tool; 4] = [Tool::OpenTofu, Tool::Terraform, Tool::Opa, Tool::Infracost];

    /// The name used on the command line, in the cache layout and in mirror paths.
    pub fn name(self) -> &'static str {
        match self {
            Tool::OpenTofu => "opentofu",
            Tool::Terraform => "terraform",
            Tool::Opa => "opa",
            Tool::Infracost => "infracost",
        }
    }

    /// The executable's name once installed.
    pub fn executable(self) -> &'static str {
        match self {
            Tool::OpenTofu => "tofu",
            Tool::Terraform => "terraform",
            Tool::Opa => "opa",
            Tool::Infracost => "infracost",
        }
    }

    /// Whether the vendor signs its checksum file with OpenPGP.
    pub fn is_signed(self) -> bool {
        matches!(self, Tool::OpenTofu | Tool::Terraform)
    }

    /// The vendor's base URL, before a mirror setting replaces it.
    pub fn upstream_base(self, version: &Version) -> &'static str {
        match self {
            Tool::Terraform => "https://releases.hashicorp.com/terraform",
            Tool::OpenTofu => "https://github.com/opentofu/opentofu/releases/download",
            Tool::Opa => "https://github.com/open-policy-agent/opa/releases/download",
            Tool::Infracost if version.major == 0 => {
                "https://github.com/infracost/infracost/releases/download"
            }
            Tool::Infracost => "https://github.com/infracost/cli/releases/download",
        }
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Tool {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "opentofu" | "tofu" => Ok(Tool::OpenTofu),
            "terraform" => Ok(Tool::Terraform),
            "opa" => Ok(Tool::Opa),
            "infracost" => Ok(Tool::Infracost),
            _ => Err(format!(
                "unknown tool {s:?}: expected one of opentofu, terraform, opa, infracost"
            )),
        }
    }
}

/// A build platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Platform {
    LinuxAmd64,
    LinuxArm64,
}

impl Platform {
    /// The platform this agent runs on, or `None` on an architecture no tool is built for.
    pub fn host() -> Option<Platform> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Platform::LinuxAmd64),
            "aarch64" => Some(Platform::LinuxArm64),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "linux_amd64",
            Platform::LinuxArm64 => "linux_arm64",
        }
    }

    /// `amd64` or `arm64`.
    pub fn arch(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "amd64",
            Platform::LinuxArm64 => "arm64",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linux_amd64" => Ok(Platform::LinuxAmd64),
            "linux_arm64" => Ok(Platform::LinuxArm64),
            _ => Err(format!(
                "unknown platform {s:?}: expected linux_amd64 or linux_arm64"
            )),
        }
    }
}

/// A release version: `MAJOR.MINOR.PATCH` with an optional pre-release suffix, without the
/// leading `v`. Parsing is strict because versions become path components in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    text: String,
    pub major: u64,
}

impl Version {
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "invalid version {s:?}: expected MAJOR.MINOR.PATCH with an optional -suffix, e.g. 1.8.2 or 1.9.0-beta1"
            )
        };
        let text = s.strip_prefix('v').unwrap_or(s);
        let (core, pre) = match text.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (text, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad());
        }
        if let Some(pre) = pre
            && (pre.is_empty()
                || pre.len() > 40
                || !pre
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                || pre.contains(".."))
        {
            return Err(bad());
        }
        Ok(Version {
            text: text.to_string(),
            major: parts[0].parse().map_err(|_| bad())?,
        })
    }
}

pub use crate::archive::ArchiveKind;

/// Everything needed to fetch and verify one build of one tool.
#[derive(Debug, Clone)]
pub struct Release {
    pub tool: Tool,
    pub version: Version,
    pub platform: Platform,
    /// The artifact's file name, as it appears in the checksum file.
    pub file_name: String,
    pub artifact_url: Url,
    pub checksums_url: Url,
    /// Detached signatures over the checksum file, tried in order; empty when unsigned.
    pub signature_urls: Vec<Url>,
    pub archive: ArchiveKind,
    /// The executable's entry name inside the archive.
    pub entry: String,
}

/// Computes a release's URLs. `base` is the vendor's base URL or a mirror's.
#[expect(
    clippy::too_many_lines,
    reason = "one release layout per vendor, as data"
)]
pub fn release(tool: Tool, version: &Version, platform: Platform, base: &Url) -> Release {
    let v = version.as_str();
    let arch = platform.arch();
    let (dir, file_name, checksums, signatures, archive, entry): (
        String,
        String,
        String,
        Vec<String>,
        _,
        String,
    ) = match tool {
        Tool::Terraform => {
            let sums = format!("terraform_{v}_SHA256SUMS");
            (
                v.to_string(),
                format!("terraform_{v}_linux_{arch}.zip"),
                sums.clone(),
                vec![format!("{sums}.72D7468F.sig"), format!("{sums}.sig")],
                ArchiveKind::Zip,
                "terraform".into(),
            )
        }
        Tool::OpenTofu => {
            let sums = format!("tofu_{v}_SHA256SUMS");
            (
                format!("v{v}"),
                format!("tofu_{v}_linux_{arch}.tar.gz"),
                sums.clone(),
                vec![format!("{sums}.gpgsig")],
                ArchiveKind::TarGz,
                "tofu".into(),
            )
        }
        Tool::Opa => {
            let file = format!("opa_linux_{arch}_static");
            (
                format!("v{v}"),
                file.clone(),
                format!("{file}.sha256"),
                vec![],
                ArchiveKind::Bare,
                file,
            )
        }
        Tool::Infracost => {
            let file = format!("infracost-linux-{arch}.tar.gz");
            let entry = if version.major == 0 {
                format!("infracost-linux-{arch}")
            } else {
                "infracost".into()
            };
            (
                format!("v{v}"),
                file.clone(),
                format!("{file}.sha256"),
                vec![],
                ArchiveKind::TarGz,
                entry,
            )
        }
    };
    let join = |name: &str| -> Url {
        let mut url = base.clone();
        {
            let mut segs = url
                .path_segments_mut()
                .expect("base URLs are validated as http(s) URLs");
            segs.pop_if_empty().push(&dir).push(name);
        }
        url
    };
    Release {
        tool,
        version: version.clone(),
        platform,
        artifact_url: join(&file_name),
        checksums_url: join(&checksums),
        signature_urls: signatures.iter().map(|s| join(s)).collect(),
        file_name,
        archive,
        entry,
    }
}

/// The base URL for a tool: its own mirror setting, else `<all-tools mirror>/<tool>`, else the
/// vendor's.
pub fn base_url(
    tool: Tool,
    version: &Version,
    tool_mirror: Option<&Url>,
    mirror: Option<&Url>,
) -> Url {
    if let Some(u) = tool_mirror {
        return u.clone();
    }
    if let Some(m) = mirror {
        let mut u = m.clone();
        u.path_segments_mut()
            .expect("mirror URLs are validated as http(s) URLs")
            .pop_if_empty()
            .push(tool.name());
        return u;
    }
    Url::parse(tool.upstream_base(version)).expect("upstream base URLs are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(tool: Tool, v: &str, p: Platform) -> Release {
        let v: Version = v.parse().unwrap();
        release(tool, &v, p, &base_url(tool, &v, None, None))
    }

    #[test]
    fn upstream_layouts() {
        let r = rel(Tool::Terraform, "1.0.3", Platform::LinuxAmd64);
        assert_eq!(
            r.artifact_url.as_str(),
            "https://releases.hashicorp.com/terraform/1.0.3/terraform_1.0.3_linux_amd64.zip"
        );
        assert_eq!(
            r.signature_urls[0].as_str(),
            "https://releases.hashicorp.com/terraform/1.0.3/terraform_1.0.3_SHA256SUMS.72D7468F.sig"
        );
        let r = rel(Tool::OpenTofu, "1.8.2", Platform::LinuxArm64);
        assert_eq!(
            r.artifact_url.as_str(),
            "https://github.com/opentofu/opentofu/releases/download/v1.8.2/tofu_1.8.2_linux_arm64.tar.gz"
        );
        assert_eq!(
            r.signature_urls[0].path_segments().unwrap().next_back(),
            Some("tofu_1.8.2_SHA256SUMS.gpgsig")
        );
        let r = rel(Tool::Opa, "0.68.0", Platform::LinuxArm64);
        assert_eq!(
            r.checksums_url.as_str(),
            "https://github.com/open-policy-agent/opa/releases/download/v0.68.0/opa_linux_arm64_static.sha256"
        );
        assert!(r.signature_urls.is_empty());
        let r = rel(Tool::Infracost, "0.10.39", Platform::LinuxAmd64);
        assert_eq!(r.entry, "infracost-linux-amd64");
        assert!(
            r.artifact_url
                .as_str()
                .starts_with("https://github.com/infracost/infracost/")
        );
        let r = rel(Tool::Infracost, "2.0.1", Platform::LinuxAmd64);
        assert_eq!(r.entry, "infracost");
        assert!(
            r.artifact_url
                .as_str()
                .starts_with("https://github.com/infracost/cli/")
        );
    }

    #[test]
    fn mirrors_keep_the_vendor_layout() {
        let v: Version = "1.0.3".parse().unwrap();
        let all = Url::parse("http://127.0.0.1:8080/mirror/").unwrap();
        let base = base_url(Tool::Terraform, &v, None, Some(&all));
        let r = release(Tool::Terraform, &v, Platform::LinuxAmd64, &base);
        assert_eq!(
            r.artifact_url.as_str(),
            "http://127.0.0.1:8080/mirror/terraform/1.0.3/terraform_1.0.3_linux_amd64.zip"
        );
        let own = Url::parse("https://artifacts.internal/hashicorp/terraform").unwrap();
        let base = base_url(Tool::Terraform, &v, Some(&own), Some(&all));
        assert_eq!(base, own);
    }

    #[test]
    fn versions_are_strict() {
        assert_eq!("v1.8.0".parse::<Version>().unwrap().as_str(), "1.8.0");
        assert_eq!("1.9.0-rc1".parse::<Version>().unwrap().major, 1);
        for bad in [
            "1.8",
            "1.8.0/../x",
            "../1.0.0",
            "1.0.0-",
            "1.0.x",
            "",
            "1.0.0-a/b",
            "1.0.0-a..b",
        ] {
            let e = bad.parse::<Version>().unwrap_err();
            assert!(e.contains("invalid version"), "{bad}: {e}");
        }
    }
}
