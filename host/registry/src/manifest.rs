//! One plugin version as a registry describes it (Spin's plugin manifest, with the digest
//! Envoy requires for remote Wasm and an optional publisher signature).

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};

/// A plugin version: what it is, where its `.wasm` is, and how to check the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// What users pass to `--backend` / `--dataset-name`; the plugin's own `info` must agree.
    pub name: String,
    /// `backend` or `dataset`.
    pub kind: String,
    /// The plugin's version (semver), as its `info` reports it.
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// The versions of the `llmb:plugin` WIT package it works with, as a semver range
    /// (`^1.0.0`); the host refuses a plugin whose range does not hold its own version.
    pub wit: String,
    /// Where the `.wasm` is: an absolute URL, or a path relative to this manifest.
    pub url: String,
    /// Lowercase hex sha256 of the `.wasm`; install refuses any other bytes.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ManifestSignature>,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub license: String,
    #[serde(default)]
    pub homepage: String,
}

/// An ed25519 signature by a publisher over [`Manifest::signed_message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSignature {
    /// The publisher's public key, base64 (32 bytes).
    pub key: String,
    /// The signature, base64 (64 bytes).
    pub sig: String,
}

impl Manifest {
    /// What a publisher signs: name, version and digest together, so a signature cannot be
    /// moved to another plugin or another version.
    pub fn signed_message(&self) -> Vec<u8> {
        signed_message(&self.name, &self.version, &self.sha256)
    }

    /// Parses and checks a manifest; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        let m: Manifest = serde_json::from_str(text)
            .with_context(|| format!("{origin}: not a plugin manifest"))?;
        m.check()
            .with_context(|| format!("{origin}: invalid manifest"))?;
        Ok(m)
    }

    /// Every field the host relies on is well formed.
    pub fn check(&self) -> anyhow::Result<()> {
        ensure!(
            valid_name(&self.name),
            "name {:?}: use lowercase letters, digits, `-`, `_` and `.`",
            self.name
        );
        ensure!(
            self.kind == "backend" || self.kind == "dataset",
            "kind {:?}: must be `backend` or `dataset`",
            self.kind
        );
        semver::Version::parse(&self.version)
            .with_context(|| format!("version {:?} is not semver", self.version))?;
        semver::VersionReq::parse(&self.wit)
            .with_context(|| format!("wit {:?} is not a semver range", self.wit))?;
        ensure!(
            self.sha256.len() == 64 && self.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            "sha256 {:?}: expected 64 hex digits",
            self.sha256
        );
        if self.url.is_empty() {
            bail!("url is empty");
        }
        Ok(())
    }

    pub fn semver(&self) -> semver::Version {
        semver::Version::parse(&self.version).expect("checked when parsed")
    }
}

/// The bytes a signature covers: `llmb-plugin-signature-v1`, name, version, sha256, one per line.
pub fn signed_message(name: &str, version: &str, sha256: &str) -> Vec<u8> {
    format!("llmb-plugin-signature-v1\n{name}\n{version}\n{sha256}\n").into_bytes()
}

/// Plugin names are path components and command-line words: keep them plain (`llama.cpp`
/// is fine; `..`, `.hidden` and `a/b` are not).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.contains("..")
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            name: "tgi".into(),
            kind: "backend".into(),
            version: "0.1.0".into(),
            description: String::new(),
            wit: "^1.0.0".into(),
            url: "tgi-0.1.0.wasm".into(),
            sha256: "ab".repeat(32),
            signature: None,
            author: String::new(),
            license: String::new(),
            homepage: String::new(),
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let mut m = manifest();
        m.check().unwrap();
        m.name = "../etc".into();
        assert!(m.check().unwrap_err().to_string().contains("name"));
        m.name = "llama.cpp".into();
        m.check().unwrap();
        m.name = ".hidden".into();
        assert!(m.check().unwrap_err().to_string().contains("name"));
        let mut m = manifest();
        m.sha256 = "xyz".into();
        assert!(m.check().unwrap_err().to_string().contains("sha256"));
        let mut m = manifest();
        m.wit = "one".into();
        assert!(m.check().unwrap_err().to_string().contains("wit"));
        let text = serde_json::to_string(&manifest()).unwrap();
        assert_eq!(Manifest::parse(&text, "m.json").unwrap(), manifest());
        let e = Manifest::parse("{}", "m.json").unwrap_err();
        assert!(format!("{e:#}").contains("m.json"), "{e:#}");
    }
}
