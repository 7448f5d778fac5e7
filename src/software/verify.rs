//! Checksum files and OpenPGP signatures.
//!
//! The vendors' public keys ship inside the binary (`keys/`) and are pinned by the primary key's
//! fingerprint; signatures made by any valid signing subkey of a pinned key are accepted.
//! Operators may add keys (a private mirror re-signing checksum files). Key expiry is not a
//! reason to reject: HashiCorp extended its key's expiry with the same fingerprint, and the pin
//! is what carries trust.

use std::fmt;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::types::KeyDetails;

use super::catalog::Tool;

const HASHICORP_ASC: &str =
    include_str!("../../keys/hashicorp-C874011F0AB405110D02105534365D9472D7468F.asc");
const OPENTOFU_ASC: &str =
    include_str!("../../keys/opentofu-E3E6E43D84CB852EADB0051D0C0AF313E5FD9F80.asc");
pub const HASHICORP_FINGERPRINT: &str = "C874011F0AB405110D02105534365D9472D7468F";
pub const OPENTOFU_FINGERPRINT: &str = "E3E6E43D84CB852EADB0051D0C0AF313E5FD9F80";

/// A public key trusted to sign checksum files.
#[derive(Clone)]
pub struct TrustedKey {
    /// Upper-case hex fingerprint of the primary key.
    pub fingerprint: String,
    pub user_id: String,
    /// Where the key came from: `built-in` or the operator's file path.
    pub origin: String,
    key: SignedPublicKey,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TrustedKey({} {:?} from {})",
            self.fingerprint, self.user_id, self.origin
        )
    }
}

/// Why an armored key text gave no usable key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Armor(pgp::errors::Error),
    #[error("key {fingerprint}: invalid self-signature: {source}")]
    Binding {
        fingerprint: String,
        source: pgp::errors::Error,
    },
    #[error("no public key found")]
    NoKey,
}

/// Parses every public key in an armored text.
pub fn parse_armored_keys(text: &str, origin: &str) -> Result<Vec<TrustedKey>, KeyError> {
    let (keys, _) = SignedPublicKey::from_armor_many(text.as_bytes()).map_err(KeyError::Armor)?;
    let mut out = Vec::new();
    for key in keys {
        let key = key.map_err(KeyError::Armor)?;
        key.verify_bindings().map_err(|source| KeyError::Binding {
            fingerprint: fingerprint_hex(&key),
            source,
        })?;
        out.push(TrustedKey {
            fingerprint: fingerprint_hex(&key),
            user_id: key
                .details
                .users
                .first()
                .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
                .unwrap_or_default(),
            origin: origin.to_string(),
            key,
        });
    }
    if out.is_empty() {
        return Err(KeyError::NoKey);
    }
    Ok(out)
}

fn fingerprint_hex(key: &impl KeyDetails) -> String {
    hex::encode_upper(key.fingerprint().as_bytes())
}

/// The vendor key pinned for a tool, checked against its fingerprint.
pub fn vendor_key(tool: Tool) -> Option<TrustedKey> {
    let (asc, pin) = match tool {
        Tool::Terraform => (HASHICORP_ASC, HASHICORP_FINGERPRINT),
        Tool::OpenTofu => (OPENTOFU_ASC, OPENTOFU_FINGERPRINT),
        Tool::Opa | Tool::Infracost => return None,
    };
    let keys = parse_armored_keys(asc, "built-in").expect("the embedded vendor keys parse");
    let key = keys
        .into_iter()
        .find(|k| k.fingerprint == pin)
        .expect("the embedded vendor key has the pinned fingerprint");
    Some(key)
}

/// The key that made a good signature.
#[derive(Debug, Clone)]
pub struct Signer {
    pub fingerprint: String,
    pub signing_key: String,
    pub user_id: String,
    pub origin: String,
}

/// Why a signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("not an OpenPGP signature: {0}")]
    Malformed(String),
    #[error(
        "signed by key {issuers}, which is not trusted (trusted: {trusted}); to trust it, add \
         its public key to SCALR_AGENT_SOFTWARE_TRUSTED_KEYS"
    )]
    Untrusted { issuers: String, trusted: String },
    #[error("signature by trusted key {key} does not match the checksum file: {reason}")]
    /// Boxed: the OpenPGP error is large, and this one travels inside the cache's errors.
    Bad {
        key: String,
        reason: Box<pgp::errors::Error>,
    },
}

/// Verifies a detached signature (binary or armored) over `data` against `keys`.
pub fn verify_detached(
    data: &[u8],
    signature: &[u8],
    keys: &[TrustedKey],
) -> Result<Signer, SignatureError> {
    let sigs: Vec<DetachedSignature> = if signature.starts_with(b"-----BEGIN") {
        let (sigs, _) = DetachedSignature::from_armor_many(signature)
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        sigs.collect::<Result<_, _>>()
            .map_err(|e| SignatureError::Malformed(e.to_string()))?
    } else {
        DetachedSignature::from_bytes_many(signature)
            .map_err(|e| SignatureError::Malformed(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| SignatureError::Malformed(e.to_string()))?
    };
    if sigs.is_empty() {
        return Err(SignatureError::Malformed("no signature packet".into()));
    }
    let mut bad = None;
    let mut issuers = Vec::new();
    for sig in &sigs {
        issuers.extend(
            sig.signature
                .issuer_fingerprint()
                .iter()
                .map(|f| hex::encode_upper(f.as_bytes())),
        );
        issuers.extend(
            sig.signature
                .issuer_key_id()
                .iter()
                .map(|k| hex::encode_upper(k.as_ref())),
        );
        for trusted in keys {
            let candidates = signing_keys(&trusted.key);
            for (fpr, verifier) in candidates {
                if !issued_by(sig, &fpr, &verifier) {
                    continue;
                }
                match verifier.verify(sig, data) {
                    Ok(()) => {
                        return Ok(Signer {
                            fingerprint: trusted.fingerprint.clone(),
                            signing_key: fpr,
                            user_id: trusted.user_id.clone(),
                            origin: trusted.origin.clone(),
                        });
                    }
                    Err(reason) => {
                        bad = Some(SignatureError::Bad {
                            key: format!("{} ({})", trusted.fingerprint, trusted.user_id),
                            reason: Box::new(reason),
                        })
                    }
                }
            }
        }
    }
    if let Some(bad) = bad {
        return Err(bad);
    }
    issuers.sort();
    issuers.dedup();
    Err(SignatureError::Untrusted {
        issuers: if issuers.is_empty() {
            "(no issuer recorded)".into()
        } else {
            issuers.join(", ")
        },
        trusted: keys
            .iter()
            .map(|k| k.fingerprint.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// A key able to check data signatures: the primary key or a bound signing subkey.
enum Verifier<'a> {
    Primary(&'a SignedPublicKey),
    Subkey(&'a pgp::composed::SignedPublicSubKey),
}

impl Verifier<'_> {
    fn verify(&self, sig: &DetachedSignature, data: &[u8]) -> Result<(), pgp::errors::Error> {
        match self {
            Verifier::Primary(k) => sig.verify(*k, data),
            Verifier::Subkey(k) => sig.verify(*k, data),
        }
    }

    fn key_id(&self) -> pgp::types::KeyId {
        match self {
            Verifier::Primary(k) => k.legacy_key_id(),
            Verifier::Subkey(k) => k.legacy_key_id(),
        }
    }
}

fn issued_by(sig: &DetachedSignature, fpr: &str, verifier: &Verifier<'_>) -> bool {
    let fprs = sig.signature.issuer_fingerprint();
    let ids = sig.signature.issuer_key_id();
    if fprs.is_empty() && ids.is_empty() {
        return true;
    }
    fprs.iter().any(|f| hex::encode_upper(f.as_bytes()) == fpr)
        || ids.iter().any(|id| **id == verifier.key_id())
}

/// The primary key and every subkey whose binding signature verifies and that may sign.
fn signing_keys(key: &SignedPublicKey) -> Vec<(String, Verifier<'_>)> {
    let mut out = vec![(fingerprint_hex(key), Verifier::Primary(key))];
    for sub in &key.public_subkeys {
        let bound = sub.signatures.iter().any(|s| {
            s.key_flags().sign()
                && s.verify_subkey_binding(&key.primary_key, &sub.key).is_ok()
                && s.embedded_signature().is_some_and(|b| {
                    b.verify_primary_key_binding(&sub.key, &key.primary_key)
                        .is_ok()
                })
        });
        if bound {
            out.push((fingerprint_hex(sub), Verifier::Subkey(sub)));
        }
    }
    out
}

/// What is wrong with a checksum file.
#[derive(Debug, thiserror::Error)]
pub enum ChecksumFileError {
    #[error("line {line}: expected a 64-digit hex SHA256, found {found:?}")]
    NotAHash { line: usize, found: String },
    #[error("line {line}: {name:?} is listed twice with different hashes")]
    Twice { line: usize, name: String },
    #[error("the file lists no checksum")]
    Empty,
}

/// A parsed checksum file: `<hex sha256><whitespace>[*]<file name>` per line.
#[derive(Debug)]
pub struct Checksums {
    entries: Vec<(String, String)>,
}

impl Checksums {
    /// Parses a checksum file. Empty lines are ignored and extra whitespace tolerated; any other
    /// malformed line is an error naming its number, because a half-understood file cannot be
    /// trusted.
    pub fn parse(text: &str) -> Result<Checksums, ChecksumFileError> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (hash, name) = match line.split_once(char::is_whitespace) {
                Some((h, rest)) => (h, rest.trim().trim_start_matches('*')),
                None => (line, ""),
            };
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ChecksumFileError::NotAHash {
                    line: n + 1,
                    found: truncate(line).to_string(),
                });
            }
            let hash = hash.to_ascii_lowercase();
            if let Some((_, h)) = entries.iter().find(|(_, f)| f == name)
                && *h != hash
            {
                return Err(ChecksumFileError::Twice {
                    line: n + 1,
                    name: name.to_string(),
                });
            }
            entries.push((hash, name.to_string()));
        }
        if entries.is_empty() {
            return Err(ChecksumFileError::Empty);
        }
        Ok(Checksums { entries })
    }

    /// The hash listed for exactly `file_name`. A file holding a single bare hash (no name) is
    /// accepted for the per-artifact `.sha256` files of OPA and Infracost.
    pub fn find(&self, file_name: &str, allow_bare: bool) -> Option<&str> {
        self.entries
            .iter()
            .find(|(_, f)| f == file_name)
            .or_else(|| {
                (allow_bare && self.entries.len() == 1 && self.entries[0].1.is_empty())
                    .then(|| &self.entries[0])
            })
            .map(|(h, _)| h.as_str())
    }

    /// The names listed, for error messages.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(_, f)| f.as_str())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_keys_are_pinned_and_have_signing_subkeys() {
        let hc = vendor_key(Tool::Terraform).unwrap();
        assert_eq!(hc.fingerprint, HASHICORP_FINGERPRINT);
        assert!(hc.user_id.contains("HashiCorp"), "{}", hc.user_id);
        let subkeys: Vec<String> = signing_keys(&hc.key).into_iter().map(|(f, _)| f).collect();
        assert!(
            subkeys.contains(&"374EC75B485913604A831CC7C820C6D5CD27AB87".to_string()),
            "{subkeys:?}"
        );
        let tofu = vendor_key(Tool::OpenTofu).unwrap();
        assert_eq!(tofu.fingerprint, OPENTOFU_FINGERPRINT);
        assert!(vendor_key(Tool::Opa).is_none());
    }

    #[test]
    fn checksum_lines_match_by_exact_name() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let text = format!(
            "{a}  terragrunt_linux_amd64.tar.gz\n\n{b}  terragrunt_linux_amd64\n   {a} *other.zip   \n"
        );
        let c = Checksums::parse(&text).unwrap();
        assert_eq!(c.find("terragrunt_linux_amd64", false), Some(b.as_str()));
        assert_eq!(c.find("other.zip", false), Some(a.as_str()));
        assert_eq!(c.find("terragrunt_linux", false), None);
        let bare = Checksums::parse(&format!("{}\n", "C".repeat(64))).unwrap();
        assert_eq!(bare.find("opa", true), Some("c".repeat(64).as_str()));
        assert_eq!(bare.find("opa", false), None);
    }

    #[test]
    fn malformed_checksum_files_are_rejected() {
        assert!(
            Checksums::parse("")
                .unwrap_err()
                .to_string()
                .contains("no checksum")
        );
        assert!(
            Checksums::parse("nothex  file\n")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        let twice = format!("{}  f\n{}  f\n", "a".repeat(64), "b".repeat(64));
        assert!(
            Checksums::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn garbage_signature_is_malformed() {
        let hc = vendor_key(Tool::Terraform).unwrap();
        let err = verify_detached(b"data", b"\x00\x01garbage", &[hc]).unwrap_err();
        assert!(matches!(err, SignatureError::Malformed(_)), "{err}");
    }
}
