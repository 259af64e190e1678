//! Where a user's plugins and trusted keys live (XDG base directories).

use std::path::PathBuf;

/// Installed plugins: `LLMB_DATA_DIR`, else `$XDG_DATA_HOME/llmb`, else `~/.local/share/llmb`.
pub fn data_dir() -> anyhow::Result<PathBuf> {
    base("LLMB_DATA_DIR", "XDG_DATA_HOME", ".local/share")
}

/// Trusted keys: `LLMB_CONFIG_DIR`, else `$XDG_CONFIG_HOME/llmb`, else `~/.config/llmb`.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    base("LLMB_CONFIG_DIR", "XDG_CONFIG_HOME", ".config")
}

fn base(own: &str, xdg: &str, home_relative: &str) -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(own).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os(xdg).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("llmb"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow::anyhow!("neither {own}, {xdg} nor HOME is set"))?;
    Ok(PathBuf::from(home).join(home_relative).join("llmb"))
}
