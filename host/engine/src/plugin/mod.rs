//! Loading and sandboxing plugins: WebAssembly components implementing `wit/llmb-plugin.wit`.
//!
//! First-party plugins are embedded in the binary; `--plugin PATH.wasm` adds more at run time.
//! Both go through the same checks: the file must be a component (not a core module), export a
//! `llmb:plugin` interface of this host's major version, and import nothing beyond what the host
//! provides (the WASI basics Rust's std needs, the host log and, for datasets, the tokenizer and
//! a read-only filesystem holding only the files the user named).

/// Implements one WIT version's `host-log` import for a plugin store (a type with `name` and
/// `log` fields): every version declares the same interface, but each binding has its own
/// trait and level enum.
macro_rules! impl_host_log {
    ($state:ty, $($iface:ident)::+) => {
        impl $($iface)::+::Host for $state {
            fn log(&mut self, level: $($iface)::+::Level, message: String) {
                use $($iface)::+::Level;
                let (label, is_error) = match level {
                    Level::Debug => ("debug", false),
                    Level::Info => ("info", false),
                    Level::Warn => ("warn", false),
                    Level::Error => ("error", true),
                };
                let name = self.name.clone();
                self.log.log(&name, label, &message, is_error);
            }
        }
    };
}

pub mod backend;
mod cache;
pub mod dataset;
mod legacy;
pub mod native;
mod pins;
mod pool;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

pub use backend::{BackendFactory, BackendInstance, BackendPool, ParserHandle};
pub use cache::load_timing;
pub use dataset::{DatasetFactory, DatasetRequest};
pub use pins::{Pin, Pins};

/// The WIT package this host implements; components must share its major version, or be
/// built for an earlier one this host still runs ([`LEGACY_WIT_VERSIONS`]).
pub const WIT_PACKAGE: &str = "llmb:plugin";
pub const WIT_VERSION: &str = "2.0.0";
const WIT_MAJOR: u64 = 2;
/// Earlier contracts whose components still load, converted at the boundary (`legacy.rs`).
pub const LEGACY_WIT_VERSIONS: &[&str] = &["1.0.0"];

/// The unit of deadlines given in ticks, and how often the epoch advances under
/// [`Metering::Epoch`]. Each tick wakes a thread, which on a 2-core VM costs about 26 µs of CPU
/// (`/proc/PID/task/TID/schedstat` during `llmb bench`): at 10 ms that thread alone was 8% of
/// the client's CPU at 16 streams. At 50 ms it is under 2%, and a spinning plugin is still
/// stopped within about three ticks (the deadline of two, then its CPU budget).
pub const EPOCH_TICK: Duration = Duration::from_millis(50);

/// `d` in whole [`EPOCH_TICK`]s (at least one), for deadlines written as durations.
pub const fn ticks_in(d: Duration) -> u64 {
    let ticks = d.as_millis() / EPOCH_TICK.as_millis();
    if ticks == 0 { 1 } else { ticks as u64 }
}
/// Fuel (about one unit per WebAssembly instruction) standing for one microsecond of plugin
/// work. `llmb selfbench --parse-only` measures the `openai-chat` parser at 11,000-13,000 fuel
/// per 260-byte chunk and 5-9 fuel per ns of wall time (most wasm locals live in registers), so
/// a µs of work is at least a µs on current machines; and it is the same on a loaded one
/// (fuel counts instructions, not time).
pub const FUEL_PER_US: u64 = 10_000;
/// `--plugin-call-budget`: the work one backend call may do, in microseconds (see
/// [`FUEL_PER_US`]). Parsing a 260-byte chunk takes about 1 µs of work, so this leaves four
/// orders of magnitude for large batches and bodies.
pub const DEFAULT_CALL_BUDGET_US: u64 = 10_000;
/// Memory a plugin instance may grow to.
pub const MEMORY_CAP_BYTES: usize = 64 << 20;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_plugins.rs"));
}

/// The `.wasm` bytes of the embedded plugin whose digest is `sha256` (as its summary shows),
/// so `llmb plugin export` can hand out exactly what this build runs.
pub fn embedded_bytes(sha256: &str) -> Option<&'static [u8]> {
    embedded::EMBEDDED
        .iter()
        .map(|(_, bytes)| *bytes)
        .find(|bytes| hex(&Sha256::digest(bytes)) == sha256)
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
    /// A trusted native library (`--allow-native`), unsandboxed.
    Native(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Embedded => f.write_str("embedded"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Native(p) => write!(f, "native (unsandboxed) {}", p.display()),
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
    /// The plugin's own version (what `info` says), which registry manifests must match.
    pub version: String,
    pub kind: PluginKind,
    pub wit_version: String,
    pub origin: Origin,
    pub sha256: String,
    pub description: String,
}

/// How a plugin call that runs too long is stopped (`--plugin-metering`).
///
/// `llmb selfbench --parse-only` on a 2-core machine, 32 chat chunks per call: no metering
/// 1.65× native, epoch 2.06×, fuel 2.27× (585, 738 and 812 ns per chunk; with plugins built at
/// a higher inline threshold since, none 710 and epoch 780-830 ns). So the default is
/// epoch: a wall-clock deadline checked at function entries and loop heads, stopping a spinning
/// plugin within a tick of its budget. Fuel counts instructions instead, so a budget means the
/// same on a loaded machine (a preempted thread is not charged); choose it when budgets must
/// be reproducible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metering {
    #[default]
    Epoch,
    Fuel,
    /// No limit at all (`LLMB_NO_FUEL=1`): only for measuring what metering costs.
    Off,
}

impl Metering {
    pub fn as_str(self) -> &'static str {
        match self {
            Metering::Epoch => "epoch",
            Metering::Fuel => "fuel",
            Metering::Off => "off",
        }
    }
}

static METERING: OnceLock<Metering> = OnceLock::new();

/// Chooses the metering before the first plugin loads; afterwards the engine is built and a
/// different choice is refused.
pub fn set_metering(metering: Metering) -> anyhow::Result<()> {
    let chosen = *METERING.get_or_init(|| metering);
    anyhow::ensure!(
        chosen == metering,
        "plugin metering is already {} (set it before any plugin loads)",
        chosen.as_str()
    );
    Ok(())
}

/// The metering in force: as set, else `LLMB_PLUGIN_METERING` (`epoch`, `fuel`), else epoch;
/// `LLMB_NO_FUEL=1` turns it off.
pub fn metering() -> Metering {
    *METERING.get_or_init(|| {
        if std::env::var_os("LLMB_NO_FUEL").is_some() {
            return Metering::Off;
        }
        match std::env::var("LLMB_PLUGIN_METERING").as_deref() {
            Ok("fuel") => Metering::Fuel,
            Ok("off") => Metering::Off,
            _ => Metering::Epoch,
        }
    })
}

/// The engine every plugin runs on: synchronous calls, no component-model concurrency (cheaper
/// calls), and the [`Metering`] chosen. With epochs, one thread advances the engine's epoch
/// every [`EPOCH_TICK`] for the life of the process.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.concurrency_support(false);
        let metering = metering();
        config.consume_fuel(metering == Metering::Fuel);
        config.epoch_interruption(metering == Metering::Epoch);
        let engine = Engine::new(&config).expect("the plugin engine configuration is valid");
        if metering == Metering::Epoch {
            let ticking = engine.clone();
            std::thread::Builder::new()
                .name("llmb-plugin-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(EPOCH_TICK);
                        ticking.increment_epoch();
                    }
                })
                .expect("starting the plugin epoch thread");
        }
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
    /// A native library is refused: see [`Registry::load_with`].
    pub fn load(extra: &[PathBuf]) -> anyhow::Result<Self> {
        Self::load_with(extra, false)
    }

    /// [`Registry::load`], loading native adapter libraries among `extra` when `allow_native`
    /// (`--allow-native`: they run unsandboxed).
    pub fn load_with(extra: &[PathBuf], allow_native: bool) -> anyhow::Result<Self> {
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
            if native::is_native_library(path, &bytes) {
                if !allow_native {
                    bail!(
                        "plugin {} is a native library: it would run unsandboxed, with all your \
                         rights; load it only with --allow-native",
                        path.display()
                    );
                }
                let library = native::NativeLibrary::load(path)?;
                let sha256 = hex(&Sha256::digest(&bytes));
                let factory = BackendFactory::native(library, sha256, Origin::Native(path.clone()))
                    .with_context(|| format!("plugin {}", path.display()))?;
                registry
                    .backends
                    .retain(|b| b.info.name != factory.info.name);
                registry.backends.push(Arc::new(factory));
                continue;
            }
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

/// Loads `bytes` the way a run would (compiled, linked against only what the host provides,
/// instantiated, `info` called) and says what it is: the check an install makes before it
/// stores anything.
pub fn inspect(bytes: &[u8], origin: Origin) -> anyhow::Result<PluginSummary> {
    let component = load_component(bytes, origin)?;
    Ok(match component.kind {
        PluginKind::Backend => BackendFactory::new(component)?.summary(),
        PluginKind::Dataset => DatasetFactory::new(component)?.summary(),
    })
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
    let component = cache::compile_cached(bytes, &sha256)?;
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
        let legacy = LEGACY_WIT_VERSIONS
            .iter()
            .any(|v| v.split('.').next().and_then(|m| m.parse::<u64>().ok()) == major);
        if major != Some(WIT_MAJOR) && !legacy {
            bail!(
                "is built for WIT {WIT_PACKAGE}@{version}, but this llmb speaks \
                 {WIT_PACKAGE}@{WIT_VERSION} (and runs components built for {})",
                LEGACY_WIT_VERSIONS.join(", ")
            );
        }
        found = Some((kind, version.to_string()));
    }
    let Some((kind, wit_version)) = found else {
        bail!("exports neither llmb:plugin/backend nor llmb:plugin/dataset: not an llmb plugin");
    };
    for (name, _) in ty.imports(engine) {
        if !import_allowed(kind, name) {
            let why = match kind {
                PluginKind::Backend => {
                    " (backend adapters get no files, environment or network: a request is \
                     built from what build-request receives, and llmb sends it)"
                }
                PluginKind::Dataset => {
                    " (dataset readers get the files the user named, read-only, and no network)"
                }
            };
            bail!(
                "imports `{name}`, which llmb does not provide to {} plugins{why}",
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

/// The host provides the WASI pieces Rust's std links against (streams, an empty environment,
/// exit, clocks, random; no sockets, no HTTP), the host log, and to dataset readers the
/// tokenizer and a filesystem holding only the files the user named. Backend adapters get no
/// filesystem at all.
fn import_allowed(kind: PluginKind, name: &str) -> bool {
    let interface = name.split('@').next().unwrap_or(name);
    match interface {
        "llmb:plugin/types" | "llmb:plugin/host-log" => true,
        "llmb:plugin/tokenizer" => kind == PluginKind::Dataset,
        "wasi:filesystem/types" | "wasi:filesystem/preopens" => kind == PluginKind::Dataset,
        _ => WASI_BASICS.contains(&interface),
    }
}

/// The WASI interfaces every plugin may import: what Rust's std for `wasm32-wasip2` links
/// against, none of which reaches a file, a socket or the host's environment.
const WASI_BASICS: [&str; 18] = [
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// Links [`WASI_BASICS`] (plus `wasi:random/insecure` and `insecure-seed`, which std's hash
/// maps use) and nothing else. Behind them is the store's `WasiCtx`, built without
/// environment variables, arguments or a working directory, with stdin closed and stdout and
/// stderr discarded.
pub(crate) fn add_wasi_basics<T: wasmtime_wasi::WasiView>(
    linker: &mut wasmtime::component::Linker<T>,
) -> anyhow::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
    use wasmtime_wasi::p2::bindings::{cli, clocks, random, sync};
    use wasmtime_wasi::random::{WasiRandom, WasiRandomView as _};

    struct Table;
    impl wasmtime::component::HasData for Table {
        type Data<'a> = &'a mut wasmtime::component::ResourceTable;
    }

    let l = linker;
    sync::io::error::add_to_linker::<T, Table>(l, |t| t.ctx().table)?;
    sync::io::poll::add_to_linker::<T, Table>(l, |t| t.ctx().table)?;
    sync::io::streams::add_to_linker::<T, Table>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, T::random)?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, T::random)?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, T::random)?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A plugin call that did not complete: the instance is unusable afterwards.
#[derive(Debug, thiserror::Error)]
pub enum PluginFault {
    #[error("plugin `{plugin}` trapped: {reason}")]
    Trap { plugin: String, reason: String },
    #[error("plugin `{plugin}` exceeded its time limit ({limit_ms} ms of work) and was stopped")]
    Deadline { plugin: String, limit_ms: u64 },
    #[error(
        "plugin `{plugin}` exceeded its time limit: its budget of {budget_us} µs of work per call \
         (--plugin-call-budget) ran out and it was stopped"
    )]
    Budget { plugin: String, budget_us: u64 },
    #[error("plugin `{plugin}` hit its memory limit ({limit_mib} MiB) and was stopped")]
    Memory { plugin: String, limit_mib: u64 },
    #[error(
        "plugin `{plugin}`: this request shared an instance (--plugin-instances) with another \
         request whose call failed ({cause}), so the instance was discarded"
    )]
    Shared { plugin: String, cause: &'static str },
}

impl PluginFault {
    pub fn kind(&self) -> FaultKind {
        match self {
            PluginFault::Trap { .. } => FaultKind::Trap,
            PluginFault::Deadline { .. } | PluginFault::Budget { .. } => FaultKind::Deadline,
            PluginFault::Memory { .. } => FaultKind::Memory,
            PluginFault::Shared { .. } => FaultKind::Shared,
        }
    }
}

/// What went wrong in a plugin call, for counting faults by kind.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// A panic, an `unreachable`, any other trap.
    Trap,
    /// The call's work budget (fuel) or wall-clock deadline ran out.
    Deadline,
    /// The instance asked for memory beyond its cap.
    Memory,
    /// Another request's fault poisoned the instance this request shared with it.
    Shared,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Trap => "trap",
            FaultKind::Deadline => "deadline",
            FaultKind::Memory => "memory",
            FaultKind::Shared => "shared",
        }
    }
}

/// The store limits of a plugin instance, remembering whether a memory growth was refused so
/// the trap that follows (Rust aborts on allocation failure) is reported as a memory fault.
pub(crate) struct Limits {
    inner: wasmtime::StoreLimits,
    pub memory_denied: bool,
}

impl Limits {
    pub fn new(inner: wasmtime::StoreLimits) -> Self {
        Limits {
            inner,
            memory_denied: false,
        }
    }
}

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        self.memory_denied |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
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
        let message = crate::secrets::scrub(message);
        let message = message.as_ref();
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
    /// Whether a memory growth was refused since the last call (and forget it).
    fn take_memory_denied(&mut self) -> bool {
        false
    }
}

/// What one plugin call may do, as fuel: `--plugin-call-budget` µs of work for backend calls,
/// else a deadline in ticks of [`EPOCH_TICK`] of work (dataset readers, which may read for
/// long).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallBudget {
    pub deadline_ticks: u64,
    /// A work budget in µs; `None`: `deadline_ticks` is the limit.
    pub budget_us: Option<u64>,
}

impl CallBudget {
    /// Gives `store` this budget for its next call, as fuel or as an epoch deadline.
    pub fn arm<T>(&self, store: &mut wasmtime::Store<T>) {
        match metering() {
            Metering::Fuel => {
                let _ = store.set_fuel(self.fuel());
            }
            Metering::Epoch => {
                // No clock is read here (this runs for every call): the deadline callback reads
                // the thread's CPU time when the wall-clock deadline first passes.
                CALL_CPU.with(|c| {
                    c.set(CallCpu {
                        since: None,
                        budget: self.cpu_budget(),
                        ticks: self.ticks(),
                    })
                });
                store.set_epoch_deadline(self.ticks());
            }
            Metering::Off => {}
        }
    }

    /// The work the call may do, as CPU time of its thread.
    fn cpu_budget(&self) -> Duration {
        match self.budget_us {
            Some(us) => Duration::from_micros(us),
            None => EPOCH_TICK.saturating_mul(self.deadline_ticks.min(u32::MAX as u64) as u32),
        }
    }

    /// The deadline in epoch ticks: at least one whole tick after the call starts (the first
    /// tick may come at once).
    pub fn ticks(&self) -> u64 {
        match self.budget_us {
            Some(us) => us.div_ceil(EPOCH_TICK.as_micros() as u64) + 1,
            None => self.deadline_ticks,
        }
    }

    pub fn fuel(&self) -> u64 {
        let us = self.budget_us.unwrap_or_else(|| {
            self.deadline_ticks
                .saturating_mul(EPOCH_TICK.as_micros() as u64)
        });
        us.saturating_mul(FUEL_PER_US).max(1)
    }
}

/// The running call's CPU budget under epoch metering: an epoch deadline is wall time, and a
/// call whose thread was descheduled (a loaded client) must not be stopped for time it did not
/// run.
#[derive(Debug, Clone, Copy)]
struct CallCpu {
    /// The thread's CPU time when the wall-clock deadline first passed.
    since: Option<Duration>,
    budget: Duration,
    /// The call's deadline in ticks.
    ticks: u64,
}

thread_local! {
    static CALL_CPU: std::cell::Cell<CallCpu> = const {
        std::cell::Cell::new(CallCpu {
            since: None,
            budget: Duration::ZERO,
            ticks: 1,
        })
    };
}

/// CPU time this thread has run (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What a store does when a call reaches its epoch deadline. The first time, the call gets its
/// budget again, now counted in CPU time of its thread from this moment; after that it is
/// stopped once that CPU time is used, and a call that was only waiting for a core gets one
/// more tick. A spinning plugin is stopped after at most its wall-clock deadline plus its
/// budget of CPU time.
pub(crate) fn on_epoch_deadline<T>(
    _store: wasmtime::StoreContextMut<'_, T>,
) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    let mut call = CALL_CPU.with(std::cell::Cell::get);
    let now = thread_cpu_time();
    let update = match call.since {
        None => {
            call.since = Some(now);
            wasmtime::UpdateDeadline::Continue(call.ticks)
        }
        Some(since) if now.saturating_sub(since) >= call.budget => {
            wasmtime::UpdateDeadline::Interrupt
        }
        Some(_) => wasmtime::UpdateDeadline::Continue(1),
    };
    CALL_CPU.with(|c| c.set(call));
    Ok(update)
}

/// Runs a plugin call under a deadline, turning traps, deadline hits and host-side panics into
/// a [`PluginFault`] that names the plugin and, when it said one, its panic message.
pub(crate) fn guarded<S: PluginStore, T>(
    store: &mut wasmtime::Store<S>,
    deadline_ticks: u64,
    call: impl FnOnce(&mut wasmtime::Store<S>) -> wasmtime::Result<T>,
) -> Result<T, PluginFault> {
    let budget = CallBudget {
        deadline_ticks,
        budget_us: None,
    };
    guarded_with(store, budget, call)
}

/// [`guarded`] with a work budget: the call gets `budget_us * FUEL_PER_US` fuel.
pub(crate) fn guarded_with<S: PluginStore, T>(
    store: &mut wasmtime::Store<S>,
    budget: CallBudget,
    call: impl FnOnce(&mut wasmtime::Store<S>) -> wasmtime::Result<T>,
) -> Result<T, PluginFault> {
    let deadline_ticks = budget.deadline_ticks;
    budget.arm(store);
    store.data_mut().take_memory_denied();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(&mut *store)));
    // The call's error or the host's panic.
    let failure = match outcome {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(err)) => Ok(err),
        Err(panic) => Err(panic),
    };
    // Only a failed call names its plugin: the name is not copied on the per-frame path.
    let plugin = store.data().plugin_name().to_string();
    // Rust aborts on a failed allocation, after trying to print why (which panics in the
    // host): either way a call that ends after a refused growth is a memory fault.
    let memory_fault = |plugin| PluginFault::Memory {
        plugin,
        limit_mib: (MEMORY_CAP_BYTES >> 20) as u64,
    };
    let denied = store.data_mut().take_memory_denied();
    let reason = match failure {
        Ok(err) => {
            match err.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::OutOfFuel | wasmtime::Trap::Interrupt) => {
                    return Err(match budget.budget_us {
                        Some(budget_us) => PluginFault::Budget { plugin, budget_us },
                        None => PluginFault::Deadline {
                            plugin,
                            limit_ms: deadline_ticks * EPOCH_TICK.as_millis() as u64,
                        },
                    });
                }
                _ if denied => return Err(memory_fault(plugin)),
                _ => {}
            }
            format!("{err:#}")
        }
        Err(_) if denied => return Err(memory_fault(plugin)),
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
