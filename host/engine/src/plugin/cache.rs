//! The on-disk cache of compiled plugins.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::{engine, hex};

/// Compiling a component takes ~0.2 s; the native code is cached on disk, named by the plugin's
/// sha256 and the engine's compatibility hash (wasmtime version and configuration). Native code
/// from disk runs unchecked, so an entry is used only when its bytes match the digest written
/// beside it when it was compiled (a truncated, corrupted or swapped file is not); anything
/// else is compiled afresh and the entry replaced.
pub(super) fn compile_cached(bytes: &[u8], sha256: &str) -> anyhow::Result<Component> {
    compile_cached_in(cache_dir().as_deref(), bytes, sha256)
}

fn compile_cached_in(dir: Option<&Path>, bytes: &[u8], sha256: &str) -> anyhow::Result<Component> {
    let engine = engine();
    let cache = dir.map(|dir| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
    });
    if let Some(path) = &cache
        && let Some(c) = load_cache_entry(engine, path)
    {
        return Ok(c);
    }
    let component = Component::new(engine, bytes)
        .map_err(|e| anyhow::anyhow!("is not a valid component: {e}"))?;
    if let Some(path) = &cache
        && let Ok(serialized) = component.serialize()
    {
        let digest = hex(&Sha256::digest(&serialized));
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let digest_path = path.with_extension("cwasm.sha256");
        if std::fs::write(&tmp, &serialized).is_ok() && std::fs::write(&digest_path, digest).is_ok()
        {
            let _ = std::fs::rename(&tmp, path);
        }
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(component)
}

/// A cache entry whose bytes still hash to the digest stored beside them, deserialized.
fn load_cache_entry(engine: &Engine, path: &Path) -> Option<Component> {
    let expected = std::fs::read_to_string(path.with_extension("cwasm.sha256")).ok()?;
    let serialized = std::fs::read(path).ok()?;
    if hex(&Sha256::digest(&serialized)) != expected.trim() {
        return None;
    }
    // SAFETY: the bytes are exactly what `Component::serialize` wrote for an engine with the
    // same compatibility hash (part of the name): their digest matches the one stored then.
    unsafe { Component::deserialize(engine, &serialized) }.ok()
}

fn cache_dir() -> Option<PathBuf> {
    if std::env::var_os("LLMB_NO_CACHE").is_some() {
        return None;
    }
    let dir = std::env::var_os("LLMB_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("llmb")))
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/llmb")))?;
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// How long `bytes` takes to become a runnable component: compiled afresh (filling a cache in
/// `dir`), then read back from that cache, as `llmb selfbench` reports them.
pub fn load_timing(
    bytes: &[u8],
    dir: &Path,
) -> anyhow::Result<(std::time::Duration, std::time::Duration)> {
    let sha256 = hex(&Sha256::digest(bytes));
    let start = std::time::Instant::now();
    compile_cached_in(Some(dir), bytes, &sha256)?;
    let compiled = start.elapsed();
    let start = std::time::Instant::now();
    compile_cached_in(Some(dir), bytes, &sha256)?;
    Ok((compiled, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::embedded;

    /// A cache entry is used only while it matches its digest: a corrupted one is compiled
    /// afresh and replaced, never loaded.
    #[test]
    fn a_corrupted_compile_cache_entry_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let (_, bytes) = embedded::EMBEDDED[0];
        let sha = hex(&Sha256::digest(bytes));
        compile_cached_in(Some(dir.path()), bytes, &sha).unwrap();
        let entry = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .expect("an entry was written");
        let good = std::fs::read(&entry).unwrap();
        assert!(load_cache_entry(engine(), &entry).is_some());
        let mut bad = good.clone();
        let middle = bad.len() / 2;
        bad[middle] ^= 0xff;
        std::fs::write(&entry, &bad).unwrap();
        assert!(
            load_cache_entry(engine(), &entry).is_none(),
            "a bad entry is refused"
        );
        compile_cached_in(Some(dir.path()), bytes, &sha).unwrap();
        assert_eq!(
            std::fs::read(&entry).unwrap(),
            good,
            "and replaced by a fresh compile"
        );
    }
}
