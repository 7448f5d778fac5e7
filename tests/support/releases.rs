//! Builds release artifacts in the vendors' exact layouts and publishes them into a [`Mirror`],
//! with checksum files and (for Terraform and OpenTofu) detached signatures.

use std::io::{Cursor, Write};

use sha2::{Digest, Sha256};

use super::keys::TestKey;
use super::mirror::Mirror;

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An archive entry.
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

pub fn zip(entries: &[Entry<'_>]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o755);
    for e in entries {
        match e {
            Entry::File(name, data) => {
                w.start_file(*name, opts).unwrap();
                w.write_all(data).unwrap();
            }
            Entry::Symlink(name, target) => w.add_symlink(*name, *target, opts).unwrap(),
            Entry::Hardlink(..) => panic!("zip has no hard links"),
        }
    }
    w.finish().unwrap().into_inner()
}

pub fn tar_gz(entries: &[Entry<'_>]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        match e {
            Entry::File(name, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                // Written raw: the tar crate refuses to build the hostile names tests need.
                let raw = &mut h.as_old_mut().name;
                raw.fill(0);
                raw[..name.len()].copy_from_slice(name.as_bytes());
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
            Entry::Symlink(name, target) | Entry::Hardlink(name, target) => {
                h.set_entry_type(if matches!(e, Entry::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_size(0);
                b.append_link(&mut h, name, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// How to sign a checksum file.
pub enum Signing<'a> {
    /// Sign with this key and serve it under this file-name suffix (e.g. `.sig`).
    With(&'a TestKey, &'a str),
    /// Publish no signature at all.
    None,
}

/// Publishes a Terraform release: `terraform/<V>/terraform_<V>_<platform>.zip` for each
/// `(platform, zip)`, the `terraform_<V>_SHA256SUMS` listing them, and its signature.
pub fn publish_terraform(
    mirror: &Mirror,
    version: &str,
    builds: &[(&str, Vec<u8>)],
    signing: Signing<'_>,
) -> String {
    let dir = format!("terraform/{version}");
    let mut sums = String::new();
    for (platform, bytes) in builds {
        let name = format!("terraform_{version}_{platform}.zip");
        sums.push_str(&format!("{}  {name}\n", sha256_hex(bytes)));
        mirror.put(&format!("{dir}/{name}"), bytes.clone());
    }
    publish_sums(
        mirror,
        &format!("{dir}/terraform_{version}_SHA256SUMS"),
        &sums,
        signing,
    );
    dir
}

/// Publishes an OpenTofu release under `opentofu/v<V>/`.
pub fn publish_opentofu(
    mirror: &Mirror,
    version: &str,
    builds: &[(&str, Vec<u8>)],
    signing: Signing<'_>,
) -> String {
    let dir = format!("opentofu/v{version}");
    let mut sums = String::new();
    for (platform, bytes) in builds {
        let name = format!("tofu_{version}_{platform}.tar.gz");
        sums.push_str(&format!("{}  {name}\n", sha256_hex(bytes)));
        mirror.put(&format!("{dir}/{name}"), bytes.clone());
    }
    publish_sums(
        mirror,
        &format!("{dir}/tofu_{version}_SHA256SUMS"),
        &sums,
        signing,
    );
    dir
}

/// Writes a checksum file and, when asked, its detached signature.
pub fn publish_sums(mirror: &Mirror, path: &str, sums: &str, signing: Signing<'_>) {
    mirror.put(path, sums.as_bytes().to_vec());
    if let Signing::With(key, suffix) = signing {
        mirror.put(&format!("{path}{suffix}"), key.sign(sums.as_bytes()));
    }
}

/// Publishes an OPA bare binary with its `.sha256` file.
pub fn publish_opa(mirror: &Mirror, version: &str, arch: &str, bytes: &[u8]) {
    let name = format!("opa_linux_{arch}_static");
    let path = format!("opa/v{version}/{name}");
    mirror.put(&path, bytes.to_vec());
    mirror.put(
        &format!("{path}.sha256"),
        format!("{}  {name}\n", sha256_hex(bytes)),
    );
}

/// Publishes an Infracost tarball with its `.sha256` file.
pub fn publish_infracost(mirror: &Mirror, version: &str, arch: &str, tarball: &[u8]) {
    let name = format!("infracost-linux-{arch}.tar.gz");
    let path = format!("infracost/v{version}/{name}");
    mirror.put(&path, tarball.to_vec());
    mirror.put(
        &format!("{path}.sha256"),
        format!("{}  {name}\n", sha256_hex(tarball)),
    );
}

/// A tiny executable standing in for a tool in tests that are about packaging, not the tool.
pub fn script(says: &str) -> Vec<u8> {
    format!("#!/bin/sh\necho '{says}'\n").into_bytes()
}
