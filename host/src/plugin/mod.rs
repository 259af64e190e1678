//! Loading and sandboxing plugins: WebAssembly components implementing `wit/llmb-plugin.wit`.
//!
//! First-party plugins are embedded in the binary; `--plugin PATH.wasm` adds more at run time.
//! Both go through the same checks: the file must be a component (not a core module), export a
//! `llmb:plugin` interface of this host's major version, and import nothing beyond what the host
//! provides (the WASI basics Rust's std needs, the host log and, for datasets, the tokenizer).

pub mod backend;
pub mod dataset;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

pub use backend::{BackendFactory, BackendInstance, BackendPool, ParserHandle};
pub use dataset::{DatasetFactory, DatasetRequest};

/// The WIT package this host implements; components must share its major version.
pub const WIT_PACKAGE: &str = "llmb:plugin";
pub const WIT_VERSION: &str = "1.0.0";
const WIT_MAJOR: u64 = 1;

/// How often the epoch ticker advances; plugin deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Memory a plugin instance may grow to.
pub const MEMORY_CAP_BYTES: usize = 64 << 20;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_plugins.rs"));
}

/// Whether a component adapts a backend or reads a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Backend,
    Dataset,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Backend => "backend",
            PluginKind::Dataset => "dataset",
        }
    }
}

/// Where a plugin came from, shown by `llmb plugins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Embedded,
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Embedded => f.write_str("embedded"),
            Origin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A compiled, checked plugin, not yet instantiated.
pub struct PluginComponent {
    pub kind: PluginKind,
    /// The full version of the exported interface, e.g. `1.0.0`.
    pub wit_version: String,
    pub origin: Origin,
    pub sha256: String,
    pub component: Component,
}

/// One line of `llmb plugins`.
#[derive(Debug, Clone)]
pub struct PluginSummary {
    pub name: String,
    pub kind: PluginKind,
    pub wit_version: String,
    pub origin: Origin,
    pub sha256: String,
    pub description: String,
}

/// The engine every plugin runs on: synchronous calls, no component-model concurrency (cheaper
/// calls), epoch interruption for deadlines, and a ticker thread advancing the epoch.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.concurrency_support(false);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("the plugin engine configuration is valid");
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("llmb-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("spawn epoch ticker");
        engine
    })
}

/// All plugins available to a run: the embedded ones plus those given with `--plugin`.
pub struct Registry {
    pub backends: Vec<Arc<BackendFactory>>,
    pub datasets: Vec<Arc<DatasetFactory>>,
}

impl Registry {
    /// Loads the embedded plugins and every `--plugin` file; a bad file is an error naming it.
    pub fn load(extra: &[PathBuf]) -> anyhow::Result<Self> {
        let mut registry = Registry {
            backends: Vec::new(),
            datasets: Vec::new(),
        };
        for (dir, bytes) in embedded::EMBEDDED {
            let component = load_component(bytes, Origin::Embedded)
                .with_context(|| format!("embedded plugin {dir}"))?;
            registry.add(component)?;
        }
        for path in extra {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read plugin {}", path.display()))?;
            let component = load_component(&bytes, Origin::File(path.clone()))
                .with_context(|| format!("plugin {}", path.display()))?;
            registry
                .add(component)
                .with_context(|| format!("plugin {}", path.display()))?;
        }
        Ok(registry)
    }

    fn add(&mut self, plugin: PluginComponent) -> anyhow::Result<()> {
        match plugin.kind {
            PluginKind::Backend => {
                let factory = BackendFactory::new(plugin)?;
                // A loaded plugin with an embedded plugin's name replaces it: users can override.
                self.backends.retain(|b| b.info.name != factory.info.name);
                self.backends.push(Arc::new(factory));
            }
            PluginKind::Dataset => {
                let factory = DatasetFactory::new(plugin)?;
                self.datasets.retain(|d| d.info.name != factory.info.name);
                self.datasets.push(Arc::new(factory));
            }
        }
        Ok(())
    }

    pub fn backend(&self, name: &str) -> anyhow::Result<Arc<BackendFactory>> {
        self.backends
            .iter()
            .find(|b| b.info.name == name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = self.backends.iter().map(|b| b.info.name.as_str()).collect();
                anyhow::anyhow!("unknown backend {name:?} (available: {})", known.join(", "))
            })
    }

    pub fn dataset(&self, name: &str) -> anyhow::Result<Arc<DatasetFactory>> {
        self.datasets
            .iter()
            .find(|d| d.info.name == name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = self.datasets.iter().map(|d| d.info.name.as_str()).collect();
                anyhow::anyhow!("unknown dataset {name:?} (available: {})", known.join(", "))
            })
    }

    pub fn summaries(&self) -> Vec<PluginSummary> {
        let mut out: Vec<PluginSummary> = self
            .backends
            .iter()
            .map(|b| b.summary())
            .chain(self.datasets.iter().map(|d| d.summary()))
            .collect();
        out.sort_by(|a, b| (a.kind.as_str(), &a.name).cmp(&(b.kind.as_str(), &b.name)));
        out
    }
}

/// Checks and compiles a component; every refusal is one clear sentence.
pub fn load_component(bytes: &[u8], origin: Origin) -> anyhow::Result<PluginComponent> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("not a WebAssembly file (no \\0asm header)");
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        bail!(
            "is a core WebAssembly module, not a component: build it for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)"
        );
    }
    let sha256 = hex(&Sha256::digest(bytes));
    let component = compile_cached(bytes, &sha256)?;
    let engine = engine();
    let ty = component.component_type();

    let mut found: Option<(PluginKind, String)> = None;
    for (name, _) in ty.exports(engine) {
        let Some(rest) = name.strip_prefix("llmb:plugin/") else {
            continue;
        };
        let (iface, version) = rest.split_once('@').unwrap_or((rest, "0.0.0"));
        let kind = match iface {
            "backend" => PluginKind::Backend,
            "dataset" => PluginKind::Dataset,
            _ => continue,
        };
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u64>().ok());
        if major != Some(WIT_MAJOR) {
            bail!(
                "is built for WIT {WIT_PACKAGE}@{version}, but this llmb speaks \
                 {WIT_PACKAGE}@{WIT_VERSION} (major versions must match)"
            );
        }
        found = Some((kind, version.to_string()));
    }
    let Some((kind, wit_version)) = found else {
        bail!("exports neither llmb:plugin/backend nor llmb:plugin/dataset: not an llmb plugin");
    };
    for (name, _) in ty.imports(engine) {
        if !import_allowed(kind, name) {
            bail!(
                "imports `{name}`, which llmb does not provide to {} plugins",
                kind.as_str()
            );
        }
    }
    Ok(PluginComponent {
        kind,
        wit_version,
        origin,
        sha256,
        component,
    })
}

/// The host provides the WASI pieces Rust's std links against (no sockets, no HTTP), the host
/// log, and the tokenizer to dataset readers.
fn import_allowed(kind: PluginKind, name: &str) -> bool {
    let interface = name.split('@').next().unwrap_or(name);
    match interface {
        "llmb:plugin/types" | "llmb:plugin/host-log" => true,
        "llmb:plugin/tokenizer" => kind == PluginKind::Dataset,
        _ => {
            interface.starts_with("wasi:cli/")
                || interface.starts_with("wasi:io/")
                || interface.starts_with("wasi:clocks/")
                || interface.starts_with("wasi:random/")
                || interface.starts_with("wasi:filesystem/")
        }
    }
}

/// Compiling a component takes ~0.2 s; the native code is cached on disk by content hash.
fn compile_cached(bytes: &[u8], sha256: &str) -> anyhow::Result<Component> {
    let engine = engine();
    let cache = cache_dir().map(|dir| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
    });
    if let Some(path) = &cache
        && path.exists()
    {
        // SAFETY: the file was written by `Component::serialize` for an engine with the same
        // compatibility hash (part of the name), in a cache directory owned by this user.
        if let Ok(c) = unsafe { Component::deserialize_file(engine, path) } {
            return Ok(c);
        }
    }
    let component = Component::new(engine, bytes)
        .map_err(|e| anyhow::anyhow!("is not a valid component: {e}"))?;
    if let Some(path) = &cache
        && let Ok(serialized) = component.serialize()
    {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, serialized).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
    Ok(component)
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A plugin call that did not complete: the instance is unusable afterwards.
#[derive(Debug, thiserror::Error)]
pub enum PluginFault {
    #[error("plugin `{plugin}` trapped: {reason}")]
    Trap { plugin: String, reason: String },
    #[error("plugin `{plugin}` exceeded its time limit ({limit_ms} ms) and was stopped")]
    Deadline { plugin: String, limit_ms: u64 },
}

/// Rate-limited plugin log lines; error lines are kept so a trap can say what the plugin said.
#[derive(Default)]
pub struct LogSink {
    pub lines_printed: u32,
    pub last_error: Option<String>,
}

impl LogSink {
    const MAX_LINES: u32 = 50;

    pub fn log(&mut self, plugin: &str, level: &str, message: &str, is_error: bool) {
        if is_error {
            self.last_error = Some(message.to_string());
        }
        if self.lines_printed < Self::MAX_LINES {
            eprintln!("[plugin {plugin}] {level}: {message}");
        } else if self.lines_printed == Self::MAX_LINES {
            eprintln!("[plugin {plugin}] further log lines suppressed");
        }
        self.lines_printed += 1;
    }
}

/// Store data that carries a plugin's log sink and name (both plugin kinds).
pub(crate) trait PluginStore {
    fn plugin_name(&self) -> &str;
    fn log_sink(&mut self) -> &mut LogSink;
}

/// Runs a plugin call under a deadline, turning traps, deadline hits and host-side panics into
/// a [`PluginFault`] that names the plugin and, when it said one, its panic message.
pub(crate) fn guarded<S: PluginStore, T>(
    store: &mut wasmtime::Store<S>,
    deadline_ticks: u64,
    call: impl FnOnce(&mut wasmtime::Store<S>) -> wasmtime::Result<T>,
) -> Result<T, PluginFault> {
    store.set_epoch_deadline(deadline_ticks);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(&mut *store)));
    let plugin = store.data().plugin_name().to_string();
    let reason = match outcome {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(err)) => {
            if let Some(trap) = err.downcast_ref::<wasmtime::Trap>()
                && *trap == wasmtime::Trap::Interrupt
            {
                return Err(PluginFault::Deadline {
                    plugin,
                    limit_ms: deadline_ticks * EPOCH_TICK.as_millis() as u64,
                });
            }
            format!("{err:#}")
        }
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "host panic during the call".into());
            format!("the call failed in the host ({text}); plugins may not use stdio")
        }
    };
    let reason = match store.data_mut().log_sink().last_error.take() {
        Some(said) => format!("{said} ({})", first_line(&reason)),
        None => first_line(&reason).to_string(),
    };
    Err(PluginFault::Trap { plugin, reason })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
