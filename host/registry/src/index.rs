//! A registry index: static files any team can host (a folder, a git checkout, an HTTP(S)
//! URL; mirror one by copying the folder).
//!
//! ```text
//! index.json                         {"format": 1, "plugins": {"tgi": ["0.1.0", ...], ...}}
//! plugins/<name>/<version>.json      one Manifest per plugin version
//! plugins/<name>/<name>-<version>.wasm   the artifact, when published beside its manifest
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::fetch::{Location, fetch};
use crate::manifest::Manifest;

pub const INDEX_FILE: &str = "index.json";
pub const FORMAT: u32 = 1;

/// `index.json`: every plugin and its versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    pub format: u32,
    pub plugins: BTreeMap<String, Vec<String>>,
}

/// An index at a location.
#[derive(Debug, Clone)]
pub struct Index {
    pub location: Location,
}

impl Index {
    pub fn open(location: &str) -> Self {
        Index {
            location: Location::parse(location),
        }
    }

    /// Its `index.json`.
    pub async fn list(&self) -> anyhow::Result<IndexFile> {
        let at = self.location.child(INDEX_FILE);
        let bytes = fetch(&at).await.context("reading the registry index")?;
        let file: IndexFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("{at}: not a registry index"))?;
        if file.format != FORMAT {
            bail!(
                "{at}: index format {} (this llmb reads {FORMAT})",
                file.format
            );
        }
        Ok(file)
    }

    /// Where a version's manifest lives.
    pub fn manifest_location(&self, name: &str, version: &str) -> Location {
        self.location
            .child(&format!("plugins/{name}/{version}.json"))
    }

    /// One version's manifest, checked to be about what was asked for.
    pub async fn manifest(
        &self,
        name: &str,
        version: &str,
    ) -> anyhow::Result<(Manifest, Location)> {
        let at = self.manifest_location(name, version);
        let bytes = fetch(&at).await?;
        let text = String::from_utf8(bytes).with_context(|| format!("{at}: not UTF-8"))?;
        let manifest = Manifest::parse(&text, &at.to_string())?;
        if manifest.name != name || manifest.version != version {
            bail!(
                "{at}: the manifest is for {}@{}, not {name}@{version}",
                manifest.name,
                manifest.version
            );
        }
        Ok((manifest, at))
    }

    /// The newest version of `name` matching `wanted` (an exact version, or a semver range
    /// such as `^0.2`; any when `None`).
    pub async fn resolve(
        &self,
        name: &str,
        wanted: Option<&str>,
    ) -> anyhow::Result<(Manifest, Location)> {
        let list = self.list().await?;
        let versions = list.plugins.get(name).with_context(|| {
            let known: Vec<&str> = list.plugins.keys().map(String::as_str).collect();
            format!(
                "no plugin {name:?} in the registry at {} (it has: {})",
                self.location,
                known.join(", ")
            )
        })?;
        let version = pick_version(versions, wanted).with_context(|| {
            format!(
                "{name} has no version matching {:?} in the registry (it has: {})",
                wanted.unwrap_or("*"),
                versions.join(", ")
            )
        })?;
        self.manifest(name, &version).await
    }

    /// The newest manifest of every plugin whose name or description contains `term`.
    pub async fn search(&self, term: &str) -> anyhow::Result<Vec<Manifest>> {
        let term = term.to_lowercase();
        let list = self.list().await?;
        let mut found = Vec::new();
        for (name, versions) in &list.plugins {
            let Some(version) = pick_version(versions, None) else {
                continue;
            };
            let (m, _) = self.manifest(name, &version).await?;
            if term.is_empty()
                || m.name.contains(&term)
                || m.description.to_lowercase().contains(&term)
            {
                found.push(m);
            }
        }
        Ok(found)
    }
}

/// The highest version in `versions` that `wanted` allows (`1.2.3` means exactly that one).
pub fn pick_version(versions: &[String], wanted: Option<&str>) -> Option<String> {
    let req = match wanted {
        None => semver::VersionReq::STAR,
        Some(w) => match semver::Version::parse(w) {
            Ok(exact) => semver::VersionReq::parse(&format!("={exact}")).ok()?,
            Err(_) => semver::VersionReq::parse(w).ok()?,
        },
    };
    versions
        .iter()
        .filter_map(|v| semver::Version::parse(v).ok())
        .filter(|v| req.matches(v))
        .max()
        .map(|v| v.to_string())
}

/// Adds a manifest to the index folder `dir` (creating it), with its artifact beside it when
/// `wasm` is given (then the manifest's `url` is made relative to it), and lists it in
/// `index.json`. Returns the manifest's path.
pub fn publish(dir: &Path, manifest: &Manifest, wasm: Option<&[u8]>) -> anyhow::Result<PathBuf> {
    manifest.check()?;
    let plugin_dir = dir.join("plugins").join(&manifest.name);
    std::fs::create_dir_all(&plugin_dir)
        .with_context(|| format!("creating {}", plugin_dir.display()))?;
    let mut manifest = manifest.clone();
    if let Some(bytes) = wasm {
        let file = format!("{}-{}.wasm", manifest.name, manifest.version);
        let path = plugin_dir.join(&file);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        manifest.url = file;
    }
    let manifest_path = plugin_dir.join(format!("{}.json", manifest.version));
    std::fs::write(
        &manifest_path,
        serde_json::to_string_pretty(&manifest)? + "\n",
    )
    .with_context(|| format!("writing {}", manifest_path.display()))?;
    let index_path = dir.join(INDEX_FILE);
    let mut index: IndexFile = match std::fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a registry index", index_path.display()))?,
        Err(_) => IndexFile {
            format: FORMAT,
            plugins: BTreeMap::new(),
        },
    };
    let versions = index.plugins.entry(manifest.name.clone()).or_default();
    if !versions.contains(&manifest.version) {
        versions.push(manifest.version.clone());
        versions.sort_by_key(|v| semver::Version::parse(v).ok());
    }
    std::fs::write(&index_path, serde_json::to_string_pretty(&index)? + "\n")
        .with_context(|| format!("writing {}", index_path.display()))?;
    Ok(manifest_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_picked_by_semver() {
        let v: Vec<String> = ["0.1.0", "0.2.0", "0.10.1", "1.0.0-rc.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(pick_version(&v, None).as_deref(), Some("0.10.1"));
        assert_eq!(pick_version(&v, Some("0.2.0")).as_deref(), Some("0.2.0"));
        assert_eq!(pick_version(&v, Some("^0.2")).as_deref(), Some("0.2.0"));
        assert_eq!(pick_version(&v, Some("0.3.0")), None);
    }
}
