//! Publisher keys the user trusts (`llmb plugin trust KEY`): one per line in
//! `<config dir>/trusted-keys`, with an optional name after the key.

use std::path::PathBuf;

use anyhow::Context;

/// A key the user trusts, with the name they gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub key: String,
    pub name: String,
}

/// The trusted-keys file.
pub fn path() -> anyhow::Result<PathBuf> {
    Ok(crate::dirs::config_dir()?.join("trusted-keys"))
}

/// Every trusted key (none when the file does not exist).
pub fn load() -> anyhow::Result<Vec<TrustedKey>> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, name) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            TrustedKey {
                key: key.to_string(),
                name: name.trim().to_string(),
            }
        })
        .collect())
}

/// Adds `key` (checked to be an ed25519 public key); a key already trusted is left as it was.
pub fn add(key: &str, name: &str) -> anyhow::Result<bool> {
    crate::signing::parse_public_key(key)?;
    if load()?.iter().any(|k| k.key == key) {
        return Ok(false);
    }
    let path = path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{key} {name}\n"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

/// Whether `key` is trusted.
pub fn is_trusted(key: &str) -> anyhow::Result<bool> {
    Ok(load()?.iter().any(|k| k.key == key.trim()))
}
