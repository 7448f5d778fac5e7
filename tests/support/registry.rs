//! A provider registry (and a provider network mirror) on 127.0.0.1, in the protocols'
//! exact layouts, signing its `SHA256SUMS` with an RSA test key. Built on [`Mirror`], so
//! tests count requests per path and inject faults.
//!
//! ```text
//! /.well-known/terraform.json                               {"providers.v1": "/v1/providers/"}
//! /v1/providers/<ns>/<type>/versions
//! /v1/providers/<ns>/<type>/<v>/download/<os>/<arch>        the download JSON
//! /files/<ns>/<type>/<v>/<zip>, <...>_SHA256SUMS, <...>_SHA256SUMS.sig
//! /mirror/<host>/<ns>/<type>/index.json, <v>.json            the network mirror protocol
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::json;

use super::keys::TestKey;
use super::mirror::Mirror;
use super::releases::sha256_hex;

/// The registry host name runs and the agent use (mapped to the loopback server by
/// `SCALR_AGENT_PROVIDER_REGISTRY_HOSTS` and a `host` block).
pub const HOST: &str = "registry.test";

/// One RSA key per test process: generating RSA keys is slow.
pub fn registry_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| TestKey::generate_rsa("Test Registry <registry@example.test>"))
}

/// Published versions per (namespace, type).
type Versions = BTreeMap<(String, String), Vec<String>>;

#[derive(Clone)]
pub struct Registry {
    pub server: Mirror,
    versions: Arc<Mutex<Versions>>,
}

/// How a published package is served (tests make it wrong on purpose).
#[derive(Clone, Copy, Default)]
pub struct Publish<'a> {
    /// Sign with this key instead of the one the download JSON names.
    pub signer: Option<&'a TestKey>,
    /// List this SHA-256 in `SHA256SUMS` instead of the zip's.
    pub listed_sha: Option<&'a str>,
}

impl Registry {
    pub async fn start() -> Registry {
        let server = Mirror::start().await;
        server.put(
            ".well-known/terraform.json",
            json!({"providers.v1": "/v1/providers/"}).to_string(),
        );
        Registry {
            server,
            versions: Arc::default(),
        }
    }

    /// A registry serving the real `hashicorp/null` 2.1.2 (what [`super::providers::NULL_MAIN_TF`]
    /// asks for).
    pub async fn with_null() -> Registry {
        let reg = Registry::start().await;
        reg.publish(
            "hashicorp",
            "null",
            "2.1.2",
            &super::providers::null_zip("null", "2.1.2"),
            Publish::default(),
        );
        reg
    }

    /// The `SCALR_AGENT_PROVIDER_REGISTRY_HOSTS` value pointing [`HOST`] here.
    pub fn hosts_var(&self) -> String {
        json!({ HOST: format!("{}v1/providers/", self.server.url) }).to_string()
    }

    pub fn zip_path(ns: &str, kind: &str, version: &str) -> String {
        format!("files/{ns}/{kind}/{version}/terraform-provider-{kind}_{version}_linux_amd64.zip")
    }

    /// Publishes a linux_amd64 package (and the same zip in the network mirror layout, listed
    /// with its `zh:`).
    pub fn publish(&self, ns: &str, kind: &str, version: &str, zip: &[u8], how: Publish<'_>) {
        let key = registry_key();
        let file = format!("terraform-provider-{kind}_{version}_linux_amd64.zip");
        let dir = format!("files/{ns}/{kind}/{version}");
        let sha = sha256_hex(zip);
        let sums = format!("{}  {file}\n", how.listed_sha.unwrap_or(&sha));
        let sums_name = format!("terraform-provider-{kind}_{version}_SHA256SUMS");
        self.server.put(&format!("{dir}/{file}"), zip.to_vec());
        self.server.put(&format!("{dir}/{sums_name}"), sums.clone());
        self.server.put(
            &format!("{dir}/{sums_name}.sig"),
            how.signer.unwrap_or(key).sign(sums.as_bytes()),
        );
        let download = json!({
            "protocols": ["4.0", "5.1"],
            "os": "linux",
            "arch": "amd64",
            "filename": file,
            "download_url": format!("/{dir}/{file}"),
            "shasums_url": format!("/{dir}/{sums_name}"),
            "shasums_signature_url": format!("/{dir}/{sums_name}.sig"),
            "shasum": how.listed_sha.unwrap_or(&sha),
            "signing_keys": {"gpg_public_keys": [{
                "key_id": key.key_id(),
                "ascii_armor": key.armored_public(),
                "trust_signature": "",
                "source": "Test",
                "source_url": null,
            }]},
        });
        self.server.put(
            &format!("v1/providers/{ns}/{kind}/{version}/download/linux/amd64"),
            download.to_string(),
        );
        let mut all = self.versions.lock().unwrap();
        let list = all.entry((ns.into(), kind.into())).or_default();
        if !list.contains(&version.to_string()) {
            list.push(version.into());
        }
        let versions: Vec<_> = list
            .iter()
            .map(|v| json!({"version": v, "protocols": ["4.0", "5.1"], "platforms": [{"os": "linux", "arch": "amd64"}]}))
            .collect();
        self.server.put(
            &format!("v1/providers/{ns}/{kind}/versions"),
            json!({ "versions": versions }).to_string(),
        );
        let mirror = format!("mirror/{HOST}/{ns}/{kind}");
        let index: serde_json::Map<_, _> = list.iter().map(|v| (v.clone(), json!({}))).collect();
        self.server.put(
            &format!("{mirror}/index.json"),
            json!({ "versions": index }).to_string(),
        );
        self.server.put(
            &format!("{mirror}/{version}.json"),
            json!({"archives": {"linux_amd64": {
                "url": format!("/{dir}/{file}"),
                "hashes": [format!("zh:{sha}")],
            }}})
            .to_string(),
        );
    }

    /// How many times the zip of a package was downloaded.
    pub fn zip_downloads(&self, ns: &str, kind: &str, version: &str) -> u32 {
        self.server.hits(&Registry::zip_path(ns, kind, version))
    }
}
