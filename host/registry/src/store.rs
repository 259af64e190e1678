//! Installed plugins: `<data dir>/plugins/<name>/<version>/` holding `plugin.wasm`, the
//! verified `manifest.json` and `source` (where it came from, for `update`).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::manifest::Manifest;

/// One installed plugin version.
#[derive(Debug, Clone)]
pub struct Installed {
    pub manifest: Manifest,
    pub wasm: PathBuf,
    pub dir: PathBuf,
    /// The index, URL or file it was installed from.
    pub source: String,
}

/// The folder of installed plugins.
pub fn root() -> anyhow::Result<PathBuf> {
    Ok(crate::dirs::data_dir()?.join("plugins"))
}

/// Stores verified bytes; an existing install of the same version is replaced whole (written
/// beside it, then renamed), so a failed install leaves nothing half-written.
pub fn install(manifest: &Manifest, bytes: &[u8], source: &str) -> anyhow::Result<Installed> {
    let root = root()?;
    let dir = root.join(&manifest.name).join(&manifest.version);
    let staging = root.join(format!(
        ".staging-{}-{}-{}",
        manifest.name,
        manifest.version,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    std::fs::write(staging.join("plugin.wasm"), bytes)?;
    std::fs::write(
        staging.join("manifest.json"),
        serde_json::to_string_pretty(manifest)? + "\n",
    )?;
    std::fs::write(staging.join("source"), format!("{source}\n"))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.parent().expect("has a parent"))?;
    std::fs::rename(&staging, &dir)
        .with_context(|| format!("installing into {}", dir.display()))?;
    read(&dir)
}

fn read(dir: &Path) -> anyhow::Result<Installed> {
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let manifest = Manifest::parse(&text, &manifest_path.display().to_string())?;
    let source = std::fs::read_to_string(dir.join("source"))
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok(Installed {
        manifest,
        wasm: dir.join("plugin.wasm"),
        dir: dir.to_path_buf(),
        source,
    })
}

/// Every installed plugin version, by name then version.
pub fn list() -> anyhow::Result<Vec<Installed>> {
    let root = root()?;
    let mut out = Vec::new();
    let Ok(names) = std::fs::read_dir(&root) else {
        return Ok(out);
    };
    for name in names.flatten() {
        if name.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(versions) = std::fs::read_dir(name.path()) else {
            continue;
        };
        for version in versions.flatten() {
            out.push(read(&version.path())?);
        }
    }
    out.sort_by(|a, b| {
        (&a.manifest.name, a.manifest.semver()).cmp(&(&b.manifest.name, b.manifest.semver()))
    });
    Ok(out)
}

/// The newest installed version of `name` (or exactly `version`).
pub fn find(name: &str, version: Option<&str>) -> anyhow::Result<Option<Installed>> {
    Ok(list()?
        .into_iter()
        .filter(|i| i.manifest.name == name && version.is_none_or(|v| i.manifest.version == v))
        .max_by_key(|i| i.manifest.semver()))
}

/// Removes `name` (every version, or just `version`); returns what was removed.
pub fn remove(name: &str, version: Option<&str>) -> anyhow::Result<Vec<Installed>> {
    let gone: Vec<Installed> = list()?
        .into_iter()
        .filter(|i| i.manifest.name == name && version.is_none_or(|v| i.manifest.version == v))
        .collect();
    for i in &gone {
        std::fs::remove_dir_all(&i.dir).with_context(|| format!("removing {}", i.dir.display()))?;
    }
    let name_dir = root()?.join(name);
    let _ = std::fs::remove_dir(&name_dir);
    Ok(gone)
}
