//! `llmb.lock`: the exact plugins a run may use, by name, version and sha256 (as `wkg.lock`
//! pins components). A run with a lock refuses any plugin that is not in it or differs.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use llmb_engine::plugin::PluginSummary;

/// The lock file's name next to a recipe.
pub const FILE_NAME: &str = "llmb.lock";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub version: u32,
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<LockedPlugin>,
}

/// One pinned plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedPlugin {
    pub name: String,
    pub kind: String,
    pub version: String,
    pub sha256: String,
}

impl LockedPlugin {
    pub fn of(p: &PluginSummary) -> Self {
        LockedPlugin {
            name: p.name.clone(),
            kind: p.kind.as_str().to_string(),
            version: p.version.clone(),
            sha256: p.sha256.clone(),
        }
    }
}

impl Lock {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the lock file {}", path.display()))?;
        let lock: Lock = toml::from_str(&text)
            .with_context(|| format!("{}: not an llmb lock file", path.display()))?;
        if lock.version != 1 {
            bail!(
                "{}: lock format {} (this llmb reads 1)",
                path.display(),
                lock.version
            );
        }
        Ok(lock)
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = format!(
            "# llmb.lock: the plugins runs with this lock may use (written by `llmb plugin lock`).\n{}",
            toml::to_string(self)?
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Pins `plugin`, replacing an entry of the same kind and name.
    pub fn pin(&mut self, plugin: &PluginSummary) {
        self.version = 1;
        let entry = LockedPlugin::of(plugin);
        self.plugins
            .retain(|p| !(p.name == entry.name && p.kind == entry.kind));
        self.plugins.push(entry);
        self.plugins
            .sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    }

    /// The engine's pins: a run refuses any plugin they do not hold exactly.
    pub fn pins(&self, origin: &Path) -> llmb_engine::plugin::Pins {
        llmb_engine::plugin::Pins {
            origin: origin.to_path_buf(),
            pins: self
                .plugins
                .iter()
                .map(|p| llmb_engine::plugin::Pin {
                    name: p.name.clone(),
                    kind: p.kind.clone(),
                    version: p.version.clone(),
                    sha256: p.sha256.clone(),
                })
                .collect(),
        }
    }
}
