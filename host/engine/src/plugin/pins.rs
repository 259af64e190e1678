//! Pins from a lock file: the only plugins a run may use.

use std::path::PathBuf;

use anyhow::bail;

use super::PluginSummary;

/// A plugin a run is pinned to (an `llmb.lock` entry): a run with pins refuses, before it
/// starts, any plugin it would use that is not pinned by kind and name, or whose version or
/// sha256 differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub name: String,
    /// `backend` or `dataset`.
    pub kind: String,
    pub version: String,
    pub sha256: String,
}

/// The pins of a run and the file they came from (named in refusals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    pub origin: PathBuf,
    pub pins: Vec<Pin>,
}

impl Pins {
    /// Refuses `used` unless it is pinned exactly.
    pub fn check(&self, used: &PluginSummary) -> anyhow::Result<()> {
        let kind = used.kind.as_str();
        let origin = self.origin.display();
        let Some(pin) = self
            .pins
            .iter()
            .find(|p| p.name == used.name && p.kind == kind)
        else {
            bail!(
                "the {kind} plugin {} is not in the lock file {origin} (`llmb plugin lock` adds it)",
                used.name
            );
        };
        if pin.version != used.version || pin.sha256 != used.sha256 {
            bail!(
                "the {kind} plugin {} is {} (sha256 {}), but the lock file {origin} pins {} \
                 (sha256 {})",
                used.name,
                used.version,
                used.sha256,
                pin.version,
                pin.sha256
            );
        }
        Ok(())
    }
}
