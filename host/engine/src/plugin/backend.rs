//! Backend adapters: sandboxed instances leased to in-flight requests from a pool.
//!
//! Each request gets an instance of its own up to `--plugin-instances` live instances (so a
//! trap fails only that request); past that, requests share the least-loaded instance (each
//! keeps its own parser resource in it), which holds memory at ~66 KiB per instance instead of
//! per stream when a run has thousands of streams in flight.

use std::sync::Arc;

use anyhow::Context;
use llmb_plugin_sdk::native::op;
use wasmtime::component::{HasSelf, Linker, ResourceAny, ResourceTable};
use wasmtime::{Store, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::{
    CallBudget, DEFAULT_CALL_BUDGET_US, FaultKind, Limits, LogSink, MEMORY_CAP_BYTES, Origin,
    PluginComponent, PluginFault, PluginKind, PluginStore, PluginSummary, engine, guarded_with,
};

/// Host-side bindings of the `backend-plugin` world.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "backend-plugin",
        path: "../../wit",
        // Native adapters get the same types as postcard bytes across their C ABI.
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

use super::legacy::{self, backend_v1};
pub use super::pool::{BackendPool, DEFAULT_MAX_INSTANCES, PooledBackend};
pub use bindings::exports::llmb::plugin::backend::BackendInfo;
pub use bindings::llmb::plugin::types::{
    AudioClip, BackendError, ChatMessage, Completion, ContentPart, Delta, ErrorKind, FrameBatch,
    FrameSpan, Framing, GenRequest, HttpRequest, Image, Kv, MultimodalMessage, Prompt, Role,
    StreamEvent, Usage,
};

/// Every image a prompt carries, in order.
pub fn prompt_images(prompt: &Prompt) -> impl Iterator<Item = &Image> {
    let messages = match prompt {
        Prompt::Multimodal(messages) => messages.as_slice(),
        _ => &[],
    };
    messages
        .iter()
        .flat_map(|m| &m.parts)
        .filter_map(|part| match part {
            ContentPart::Image(image) => Some(image),
            ContentPart::Text(_) => None,
        })
}

/// Response headers or trailers as the adapter sees them.
pub type Headers = Vec<(String, String)>;

/// A per-request parser living inside one instance: a component resource, or a native
/// adapter's handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParserHandle {
    Wasm(ResourceAny),
    Native(u64),
}

/// Work allowed to instantiation, `info` and `configure` (1 s); calls on the hot path (feed,
/// build-request, ...) get `--plugin-call-budget` instead.
const CALL_DEADLINE_TICKS: u64 = super::ticks_in(std::time::Duration::from_secs(1));

/// What a backend instance's store holds: an empty WASI context (no environment, no arguments,
/// no preopened directory), of which only the basics are linked (no filesystem, no sockets).
pub struct BackendState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limits,
    log: LogSink,
    name: Arc<str>,
}

impl WasiView for BackendState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl PluginStore for BackendState {
    fn plugin_name(&self) -> &str {
        &self.name
    }
    fn log_sink(&mut self) -> &mut LogSink {
        &mut self.log
    }
    fn take_memory_denied(&mut self) -> bool {
        std::mem::take(&mut self.limits.memory_denied)
    }
}

impl bindings::llmb::plugin::types::Host for BackendState {}
impl backend_v1::llmb::plugin::types::Host for BackendState {}

impl_host_log!(BackendState, bindings::llmb::plugin::host_log);
impl_host_log!(BackendState, backend_v1::llmb::plugin::host_log);

/// A compiled backend plugin, linked and ready to instantiate.
pub struct BackendFactory {
    runtime: FactoryRuntime,
    pub info: BackendInfo,
    pub wit_version: String,
    pub origin: Origin,
    pub sha256: String,
}

/// What a factory instantiates.
enum FactoryRuntime {
    Wasm(bindings::BackendPluginPre<BackendState>),
    /// A component built for an earlier WIT major version (`legacy.rs`).
    Legacy(backend_v1::BackendPluginPre<BackendState>),
    /// A trusted native library (`--allow-native`).
    Native(Arc<super::native::NativeLibrary>),
}

/// An adapter's info before it was asked.
fn blank_info() -> BackendInfo {
    BackendInfo {
        name: String::new(),
        version: String::new(),
        description: String::new(),
        default_endpoint: String::new(),
        framing: Framing::Sse,
        supports_ignore_eos: false,
        http2: false,
        api_key_header: None,
    }
}

impl BackendFactory {
    /// A trusted native adapter, asked for its info.
    pub(super) fn native(
        library: Arc<super::native::NativeLibrary>,
        sha256: String,
        origin: Origin,
    ) -> anyhow::Result<Self> {
        let mut factory = BackendFactory {
            runtime: FactoryRuntime::Native(library),
            info: blank_info(),
            wit_version: format!("native-abi-{}", llmb_plugin_sdk::native::ABI_VERSION),
            origin,
            sha256,
        };
        let mut probe = factory.instantiate("(loading)".into())?;
        factory.info = probe.info().context("calling info()")?;
        Ok(factory)
    }

    pub(super) fn new(plugin: PluginComponent) -> anyhow::Result<Self> {
        debug_assert_eq!(plugin.kind, PluginKind::Backend);
        // Only what the WIT gives plus the WASI basics std needs: no filesystem, no sockets.
        let mut linker = Linker::<BackendState>::new(engine());
        super::add_wasi_basics(&mut linker)?;
        let legacy = plugin.wit_version.starts_with("1.");
        if legacy {
            backend_v1::BackendPlugin::add_to_linker::<_, HasSelf<BackendState>>(
                &mut linker,
                |s| s,
            )?;
        } else {
            bindings::BackendPlugin::add_to_linker::<_, HasSelf<BackendState>>(&mut linker, |s| s)?;
        }
        let pre = linker
            .instantiate_pre(&plugin.component)
            .map_err(|e| anyhow::anyhow!("cannot be linked: {e}"))?;
        let mismatch = |e| {
            anyhow::anyhow!(
                "does not match the {} backend world: {e}",
                plugin.wit_version
            )
        };
        let runtime = if legacy {
            FactoryRuntime::Legacy(backend_v1::BackendPluginPre::new(pre).map_err(mismatch)?)
        } else {
            FactoryRuntime::Wasm(bindings::BackendPluginPre::new(pre).map_err(mismatch)?)
        };
        let mut factory = BackendFactory {
            runtime,
            info: blank_info(),
            wit_version: plugin.wit_version,
            origin: plugin.origin,
            sha256: plugin.sha256,
        };
        let mut probe = factory.instantiate("(loading)".into())?;
        factory.info = probe.info().context("calling info()")?;
        Ok(factory)
    }

    pub(super) fn instantiate(&self, name: Arc<str>) -> anyhow::Result<BackendInstance> {
        if let FactoryRuntime::Native(library) = &self.runtime {
            return Ok(BackendInstance::with_runtime(InstanceRuntime::Native(
                library.instantiate(name),
            )));
        }
        let state = BackendState {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            limits: Limits::new(
                StoreLimitsBuilder::new()
                    .memory_size(MEMORY_CAP_BYTES)
                    .build(),
            ),
            log: LogSink::default(),
            name,
        };
        let mut store = Store::new(engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(super::on_epoch_deadline);
        let setup = CallBudget {
            deadline_ticks: CALL_DEADLINE_TICKS,
            budget_us: None,
        };
        setup.arm(&mut store);
        let failed = |e: wasmtime::Error| anyhow::anyhow!("instantiating the plugin: {e:#}");
        let runtime = match &self.runtime {
            FactoryRuntime::Wasm(pre) => InstanceRuntime::Wasm {
                bindings: pre.instantiate(&mut store).map_err(failed)?,
                store,
            },
            FactoryRuntime::Legacy(pre) => InstanceRuntime::Legacy {
                bindings: pre.instantiate(&mut store).map_err(failed)?,
                store,
            },
            FactoryRuntime::Native(_) => unreachable!("handled above"),
        };
        Ok(BackendInstance::with_runtime(runtime))
    }

    pub fn summary(&self) -> PluginSummary {
        PluginSummary {
            name: self.info.name.clone(),
            version: self.info.version.clone(),
            kind: PluginKind::Backend,
            wit_version: self.wit_version.clone(),
            origin: self.origin.clone(),
            sha256: self.sha256.clone(),
            description: self.info.description.clone(),
        }
    }
}

/// One live adapter instance. After a fault it is poisoned and never reused.
pub struct BackendInstance {
    runtime: InstanceRuntime,
    pub(super) poisoned: bool,
    /// What poisoned it.
    pub(super) fault: Option<FaultKind>,
    /// Work each call may do, in µs (`--plugin-call-budget`).
    budget_us: u64,
    /// Wall time inside calls since the last [`Self::take_usage`].
    plugin_ns: u64,
    /// Fuel burnt by calls since the last [`Self::take_usage`].
    fuel_used: u64,
}

/// What an instance runs on. One per instance, held in place: the size of the WASM variant
/// costs nothing, and boxing it would add a pointer chase to every call.
#[allow(clippy::large_enum_variant)]
enum InstanceRuntime {
    Wasm {
        store: Store<BackendState>,
        bindings: bindings::BackendPlugin,
    },
    Legacy {
        store: Store<BackendState>,
        bindings: backend_v1::BackendPlugin,
    },
    Native(super::native::NativeInstance),
}

/// Time and work spent inside an instance's calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginUsage {
    pub ns: u64,
    /// About one unit per WebAssembly instruction.
    pub fuel: u64,
}

impl BackendInstance {
    fn with_runtime(runtime: InstanceRuntime) -> Self {
        BackendInstance {
            runtime,
            poisoned: false,
            fault: None,
            budget_us: DEFAULT_CALL_BUDGET_US,
            plugin_ns: 0,
            fuel_used: 0,
        }
    }

    fn flavor(&self) -> Flavor {
        match self.runtime {
            InstanceRuntime::Wasm { .. } => Flavor::Wasm,
            InstanceRuntime::Legacy { .. } => Flavor::Legacy,
            InstanceRuntime::Native(_) => Flavor::Native,
        }
    }

    fn store(&mut self) -> Option<&mut Store<BackendState>> {
        match &mut self.runtime {
            InstanceRuntime::Wasm { store, .. } | InstanceRuntime::Legacy { store, .. } => {
                Some(store)
            }
            InstanceRuntime::Native(_) => None,
        }
    }

    /// A call into a WASM instance of the current WIT, under its budget.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut Store<BackendState>, &bindings::BackendPlugin) -> wasmtime::Result<T>,
    ) -> Result<T, PluginFault> {
        let budget_us = self.budget_us;
        let InstanceRuntime::Wasm { store, bindings } = &mut self.runtime else {
            unreachable!("only current-WIT instances take these calls");
        };
        let bindings = &*bindings;
        let (result, ns, fuel) = metered(store, budget_us, |s| f(s, bindings));
        self.account(ns, fuel, &result);
        result
    }

    /// A call into a WASM instance built for the 1.0 WIT, under its budget.
    fn call_legacy<T>(
        &mut self,
        f: impl FnOnce(&mut Store<BackendState>, &backend_v1::BackendPlugin) -> wasmtime::Result<T>,
    ) -> Result<T, PluginFault> {
        let budget_us = self.budget_us;
        let InstanceRuntime::Legacy { store, bindings } = &mut self.runtime else {
            unreachable!("only 1.0 instances take these calls");
        };
        let bindings = &*bindings;
        let (result, ns, fuel) = metered(store, budget_us, |s| f(s, bindings));
        self.account(ns, fuel, &result);
        result
    }

    fn account<T>(&mut self, ns: u64, fuel: u64, result: &Result<T, PluginFault>) {
        self.plugin_ns += ns;
        self.fuel_used += fuel;
        self.note(result);
    }

    /// A call into a native instance (no budget: native adapters are trusted); a panic in it
    /// fails the call.
    fn native<A: serde::Serialize, R: serde::de::DeserializeOwned>(
        &mut self,
        op: u32,
        args: &A,
    ) -> Result<R, PluginFault> {
        let InstanceRuntime::Native(instance) = &mut self.runtime else {
            unreachable!("WASM instances take WASM calls");
        };
        let start = std::time::Instant::now();
        let result = instance.call(op, args);
        self.plugin_ns += start.elapsed().as_nanos() as u64;
        self.note(&result);
        result
    }

    /// [`Self::native`] with the arguments already encoded.
    fn native_encoded<R: serde::de::DeserializeOwned>(
        &mut self,
        op: u32,
        input: &[u8],
    ) -> Result<R, PluginFault> {
        let InstanceRuntime::Native(instance) = &mut self.runtime else {
            unreachable!("WASM instances take WASM calls");
        };
        let start = std::time::Instant::now();
        let result = instance.call_encoded(op, input);
        self.plugin_ns += start.elapsed().as_nanos() as u64;
        self.note(&result);
        result
    }

    fn note<T>(&mut self, result: &Result<T, PluginFault>) {
        if let Err(fault) = result {
            self.poisoned = true;
            self.fault.get_or_insert(fault.kind());
        }
    }

    /// The kind of the fault that poisoned this instance, if one did.
    pub fn fault(&self) -> Option<FaultKind> {
        self.fault
    }

    /// Time and fuel spent in calls since the last time this was asked (or checkout).
    pub fn take_usage(&mut self) -> PluginUsage {
        PluginUsage {
            ns: std::mem::take(&mut self.plugin_ns),
            fuel: std::mem::take(&mut self.fuel_used),
        }
    }

    /// The work one call may do, in microseconds (at least 1).
    pub fn set_call_budget_us(&mut self, us: u64) {
        self.budget_us = us.max(1);
    }

    pub fn info(&mut self) -> Result<BackendInfo, PluginFault> {
        match self.flavor() {
            Flavor::Native => self.native(op::INFO, &()),
            Flavor::Legacy => self
                .call_legacy(|s, b| b.llmb_plugin_backend().call_info(s))
                .map(legacy::info_from_v1),
            Flavor::Wasm => self.call(|s, b| b.llmb_plugin_backend().call_info(s)),
        }
    }

    pub fn configure(&mut self, options: &[Kv]) -> Result<Result<(), String>, PluginFault> {
        match self.flavor() {
            Flavor::Native => self.native(op::CONFIGURE, &options),
            Flavor::Legacy => {
                let options = legacy::kvs_to_v1(options);
                self.call_legacy(|s, b| b.llmb_plugin_backend().call_configure(s, &options))
            }
            Flavor::Wasm => self.call(|s, b| b.llmb_plugin_backend().call_configure(s, options)),
        }
    }

    pub fn build_request(
        &mut self,
        req: &GenRequest,
    ) -> Result<Result<HttpRequest, String>, PluginFault> {
        match self.flavor() {
            Flavor::Native => self.native(op::BUILD_REQUEST, req),
            Flavor::Legacy => {
                let req = match legacy::request_to_v1(req) {
                    Ok(req) => req,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                self.call_legacy(|s, b| b.llmb_plugin_backend().call_build_request(s, &req))
                    .map(|built| built.map(legacy::http_from_v1))
            }
            Flavor::Wasm => self.call(|s, b| b.llmb_plugin_backend().call_build_request(s, req)),
        }
    }

    pub fn new_parser(
        &mut self,
        status: u16,
        headers: &Headers,
    ) -> Result<ParserHandle, PluginFault> {
        match self.flavor() {
            Flavor::Native => self
                .native(op::NEW_PARSER, &(status, headers))
                .map(ParserHandle::Native),
            Flavor::Legacy => self
                .call_legacy(|s, b| {
                    b.llmb_plugin_backend()
                        .response_parser()
                        .call_constructor(s, status, headers)
                })
                .map(ParserHandle::Wasm),
            Flavor::Wasm => self
                .call(|s, b| {
                    b.llmb_plugin_backend()
                        .response_parser()
                        .call_constructor(s, status, headers)
                })
                .map(ParserHandle::Wasm),
        }
    }

    /// Hands over every frame of one read; events name their frame by index.
    pub fn feed(
        &mut self,
        parser: ParserHandle,
        batch: &FrameBatch,
    ) -> Result<Vec<StreamEvent>, PluginFault> {
        match parser {
            ParserHandle::Native(handle) => {
                let input = llmb_plugin_sdk::native::encode_feed(
                    handle,
                    &batch.data,
                    batch
                        .frames
                        .iter()
                        .map(|f| (f.start, f.len, f.event.as_deref())),
                );
                self.native_encoded(op::FEED, &input)
            }
            ParserHandle::Wasm(parser) if self.flavor() == Flavor::Legacy => {
                let batch = legacy::batch_to_v1(batch);
                self.call_legacy(|s, b| {
                    b.llmb_plugin_backend()
                        .response_parser()
                        .call_feed(s, parser, &batch)
                })
                .map(legacy::events_from_v1)
            }
            ParserHandle::Wasm(parser) => self.call(|s, b| {
                b.llmb_plugin_backend()
                    .response_parser()
                    .call_feed(s, parser, batch)
            }),
        }
    }

    pub fn finish(
        &mut self,
        parser: ParserHandle,
        trailers: &Headers,
    ) -> Result<Vec<StreamEvent>, PluginFault> {
        match parser {
            ParserHandle::Native(handle) => self.native(op::FINISH, &(handle, trailers)),
            ParserHandle::Wasm(parser) if self.flavor() == Flavor::Legacy => self
                .call_legacy(|s, b| {
                    b.llmb_plugin_backend()
                        .response_parser()
                        .call_finish(s, parser, trailers)
                })
                .map(legacy::events_from_v1),
            ParserHandle::Wasm(parser) => self.call(|s, b| {
                b.llmb_plugin_backend()
                    .response_parser()
                    .call_finish(s, parser, trailers)
            }),
        }
    }

    pub fn drop_parser(&mut self, parser: ParserHandle) {
        if self.poisoned {
            return;
        }
        let parser = match parser {
            ParserHandle::Native(handle) => {
                let _: Result<(), _> = self.native(op::DROP_PARSER, &handle);
                return;
            }
            ParserHandle::Wasm(parser) => parser,
        };
        let budget_us = self.budget_us;
        let Some(store) = self.store() else {
            return;
        };
        // The destructor runs plugin code too: give it a call's budget.
        CallBudget {
            deadline_ticks: CALL_DEADLINE_TICKS,
            budget_us: Some(budget_us),
        }
        .arm(store);
        if parser.resource_drop(&mut *store).is_err() {
            self.poisoned = true;
            self.fault.get_or_insert(FaultKind::Trap);
        }
    }

    pub fn parse_body(
        &mut self,
        status: u16,
        headers: &Headers,
        body: &[u8],
    ) -> Result<Result<Completion, BackendError>, PluginFault> {
        match self.flavor() {
            Flavor::Native => self.native(op::PARSE_BODY, &(status, headers, body)),
            Flavor::Legacy => self
                .call_legacy(|s, b| {
                    b.llmb_plugin_backend()
                        .call_parse_body(s, status, headers, body)
                })
                .map(legacy::completion_from_v1),
            Flavor::Wasm => self.call(|s, b| {
                b.llmb_plugin_backend()
                    .call_parse_body(s, status, headers, body)
            }),
        }
    }

    /// The request to the server's tokenize route for `req`'s prompt, if the adapter has one.
    pub fn tokenize_request(
        &mut self,
        req: &GenRequest,
    ) -> Result<Option<HttpRequest>, PluginFault> {
        match self.flavor() {
            Flavor::Native => self.native(op::TOKENIZE_REQUEST, req),
            Flavor::Legacy => {
                // A prompt 1.0 cannot express cannot be counted by a 1.0 adapter either.
                let Ok(req) = legacy::request_to_v1(req) else {
                    return Ok(None);
                };
                self.call_legacy(|s, b| b.llmb_plugin_backend().call_tokenize_request(s, &req))
                    .map(|built| built.map(legacy::http_from_v1))
            }
            Flavor::Wasm => self.call(|s, b| b.llmb_plugin_backend().call_tokenize_request(s, req)),
        }
    }

    pub fn parse_tokenize(&mut self, body: &[u8]) -> Result<Result<u32, String>, PluginFault> {
        match self.flavor() {
            Flavor::Native => self.native(op::PARSE_TOKENIZE, &body),
            Flavor::Legacy => {
                self.call_legacy(|s, b| b.llmb_plugin_backend().call_parse_tokenize(s, body))
            }
            Flavor::Wasm => self.call(|s, b| b.llmb_plugin_backend().call_parse_tokenize(s, body)),
        }
    }

    pub fn map_error(
        &mut self,
        status: u16,
        headers: &Headers,
        body: &[u8],
    ) -> Result<BackendError, PluginFault> {
        match self.flavor() {
            Flavor::Native => self.native(op::MAP_ERROR, &(status, headers, body)),
            Flavor::Legacy => self
                .call_legacy(|s, b| {
                    b.llmb_plugin_backend()
                        .call_map_error(s, status, headers, body)
                })
                .map(legacy::error_from_v1),
            Flavor::Wasm => self.call(|s, b| {
                b.llmb_plugin_backend()
                    .call_map_error(s, status, headers, body)
            }),
        }
    }
}

/// Which kind of runtime an instance is, for dispatching calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Wasm,
    Legacy,
    Native,
}

/// Runs `f` under a call's budget; gives its result, the wall time it took and the fuel it
/// burnt.
fn metered<T>(
    store: &mut Store<BackendState>,
    budget_us: u64,
    f: impl FnOnce(&mut Store<BackendState>) -> wasmtime::Result<T>,
) -> (Result<T, PluginFault>, u64, u64) {
    let budget = CallBudget {
        deadline_ticks: CALL_DEADLINE_TICKS,
        budget_us: Some(budget_us),
    };
    let start = std::time::Instant::now();
    let result = guarded_with(store, budget, f);
    let ns = start.elapsed().as_nanos() as u64;
    let given = budget.fuel();
    let fuel = given.saturating_sub(store.get_fuel().unwrap_or(given));
    (result, ns, fuel)
}
