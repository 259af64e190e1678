//! llmb's plugin ecosystem, the way Spin and wkg do it: a registry index any team can host as
//! static files (a folder, a git checkout or an HTTP(S) URL), one manifest per plugin version
//! pinning its sha256 and optionally signed with ed25519; installs into a per-user directory
//! that refuse anything unverified before storing it; keys the user trusts; and `llmb.lock`,
//! which pins the exact plugins a run may use.
//!
//! Data flows one way: [`index`] (where manifests come from) -> [`fetch`] (bytes) ->
//! [`verify`] (digest, signature, WIT range, the host's own load check) -> [`store`] (installed
//! files) -> [`lock`] (what a run pins).

pub mod dirs;
pub mod fetch;
pub mod index;
pub mod lock;
pub mod manifest;
pub mod signing;
pub mod store;
pub mod trust;
pub mod verify;

pub use manifest::{Manifest, ManifestSignature};

/// Lowercase hex sha256 of `bytes`, the digest every manifest, lock and result uses.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
