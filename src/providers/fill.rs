//! Filling one store entry: fetch (mirrors in order, then the origin registry), extract with
//! the software cache's archive rules, compute `h1:`, check it against what the source vouched
//! for, write the manifest, fsync, rename. Runs under the entry's fill lock.
#![allow(
    clippy::disallowed_methods,
    reason = "the provider store's own staging files"
)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;

use super::addr::Package;
use super::registry::{self, Fetched};
use super::store::{self, Layout, Manifest, StoredFile};
use super::{FillError, Settings, hash};
use crate::archive;
use crate::http::HttpClient;
use crate::software::store::{Staging, mtime_ns, write_synced};

/// Most files accepted in one provider zip.
const MAX_ENTRIES: usize = 1000;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FillError + use<> {
    let path = path.to_path_buf();
    move |source| FillError::Io { path, source }
}

/// Fetches, verifies and commits `pkg`. The caller holds the fill lock and has removed any
/// damaged entry.
pub async fn fill(
    layout: &Layout,
    settings: &Settings,
    client: &HttpClient,
    pkg: &Package,
) -> Result<Manifest, FillError> {
    let (at, slug) = (layout.clone(), pkg.slug());
    let staging = tokio::task::spawn_blocking(move || {
        at.ensure_root().map_err(io(&at.root))?;
        Staging::create(&at.tmp(), &slug).map_err(io(&at.tmp()))
    })
    .await
    .expect("staging does not panic")?;
    let zip = staging.path().join("package.zip");
    let fetched = match fetch(settings, client, pkg, &zip).await {
        Ok(f) => f,
        Err(e) => {
            // A partial download is removed on a blocking thread too.
            let _ = tokio::task::spawn_blocking(move || drop(staging)).await;
            return Err(e);
        }
    };
    let (cap, h1s, url) = (
        settings.max_package_bytes,
        fetched.h1s.clone(),
        fetched.url.clone(),
    );
    // Extraction and the h1: check on a blocking thread, which also removes the staging
    // directory (up to the package cap) when either fails.
    let (staging, files, h1) = tokio::task::spawn_blocking(move || {
        let pkg_dir = staging.path().join(store::PKG);
        fs::create_dir(&pkg_dir).map_err(io(&pkg_dir))?;
        let extracted = archive::extract_zip_tree(&zip, &pkg_dir, cap, MAX_ENTRIES);
        let _ = fs::remove_file(&zip);
        let files = extracted.map_err(|reason| FillError::Archive {
            url: url.clone(),
            reason,
        })?;
        let h1 = hash::h1_of_tree(&files);
        if !h1s.is_empty() && !h1s.contains(&h1) {
            return Err(FillError::Hash {
                what: format!("h1: of the package from {url}"),
                expected: h1s.join(", "),
                found: h1,
            });
        }
        Ok((staging, files, h1))
    })
    .await
    .expect("extract task does not panic")?;
    let manifest = commit(layout, pkg, staging, files, h1, &fetched).await?;
    Ok(manifest)
}

async fn fetch(
    settings: &Settings,
    client: &HttpClient,
    pkg: &Package,
    zip: &Path,
) -> Result<Fetched, FillError> {
    for mirror in settings.mirrors.iter().filter(|m| m.serves(&pkg.provider)) {
        if let Some(f) =
            registry::from_mirror(client, mirror, pkg, zip, settings.max_package_bytes).await?
        {
            return Ok(f);
        }
    }
    let base = registry::discover(client, &pkg.provider.host, &settings.registry_hosts).await?;
    registry::from_registry(client, &base, pkg, zip, settings.max_package_bytes).await
}

/// Writes the manifest, fixes modes, fsyncs and renames the staging directory into place.
async fn commit(
    layout: &Layout,
    pkg: &Package,
    staging: Staging,
    files: Vec<archive::TreeFile>,
    h1: String,
    fetched: &Fetched,
) -> Result<Manifest, FillError> {
    let (layout, pkg, fetched_url) = (layout.clone(), pkg.clone(), fetched.url.clone());
    let (size, sha256, origin, verification) = (
        fetched.size,
        fetched.sha256.clone(),
        fetched.origin,
        fetched.verification.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let pkg_dir = staging.path().join(store::PKG);
        let mut stored = Vec::new();
        for f in files {
            let meta = fs::symlink_metadata(pkg_dir.join(&f.name)).map_err(io(&pkg_dir))?;
            stored.push(StoredFile {
                name: f.name,
                size: f.size,
                sha256: f.sha256,
                mtime_ns: mtime_ns(&meta),
            });
        }
        let manifest = Manifest {
            schema: Manifest::schema(),
            provider: pkg.provider.to_string(),
            version: pkg.version.clone(),
            target: pkg.target.clone(),
            h1,
            zh: hash::zh(&sha256),
            files: stored,
            zip_url: fetched_url,
            zip_size: size,
            origin: origin.into(),
            verification,
            installed_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        let mpath = staging.path().join(store::MANIFEST);
        write_synced(
            &mpath,
            &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"),
        )
        .map_err(io(&mpath))?;
        fs::set_permissions(&mpath, fs::Permissions::from_mode(0o644)).map_err(io(&mpath))?;
        sync_dirs(&pkg_dir).map_err(io(&pkg_dir))?;
        fs::set_permissions(staging.path(), fs::Permissions::from_mode(0o755))
            .map_err(io(staging.path()))?;
        let dest = layout.entry(&pkg);
        layout.make_parents(&pkg).map_err(io(&dest))?;
        staging.commit(&dest).map_err(io(&dest))?;
        Ok(manifest)
    })
    .await
    .expect("commit task does not panic")
}

/// Sets 0755 on every directory of the package and fsyncs it.
fn sync_dirs(dir: &Path) -> std::io::Result<()> {
    for item in fs::read_dir(dir)? {
        let item = item?;
        if item.file_type()?.is_dir() {
            sync_dirs(&item.path())?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    fs::File::open(dir)?.sync_all()
}
