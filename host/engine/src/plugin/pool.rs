//! Leasing backend instances to requests: one each up to `--plugin-instances`, shared past
//! that, each lease keeping its own time, fuel and fault.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::backend::{
    BackendError, BackendFactory, BackendInfo, BackendInstance, Completion, FrameBatch, GenRequest,
    Headers, HttpRequest, Kv, ParserHandle, PluginUsage, StreamEvent,
};
use super::{DEFAULT_CALL_BUDGET_US, FaultKind, PluginFault, PluginSummary};

/// Instances of one configured adapter, leased to requests. A request holds its lease for its
/// whole life because its parser lives in that instance.
pub struct BackendPool {
    factory: Arc<BackendFactory>,
    options: std::sync::RwLock<Vec<Kv>>,
    slots: Mutex<Slots>,
    /// Instances discarded after a fault.
    pub faults: AtomicU64,
    /// `--plugin-call-budget` in µs of work, given to every instance at checkout.
    call_budget_us: AtomicU64,
    /// `--plugin-instances`: live instances beyond which requests share.
    max_instances: AtomicUsize,
    /// What the first instance says of itself once configured: an option may change its default
    /// endpoint (the rerank adapter's `api=tei` serves `/rerank`).
    configured_info: std::sync::OnceLock<BackendInfo>,
}

/// The pool's live instances with how many requests lease each.
#[derive(Default)]
struct Slots {
    live: Vec<(Arc<Slot>, usize)>,
    /// Bumped when the adapter's options change; older instances are dropped when idle.
    generation: u64,
}

/// One instance that one or more leases call into, one call at a time.
struct Slot {
    inst: Mutex<BackendInstance>,
    generation: u64,
    /// Set by the call that faulted, so no new request is leased this instance.
    poisoned: AtomicBool,
}

/// Live instances past which requests share one, unless `--plugin-instances` says otherwise.
/// Measured with `llmb selfbench` (2 cores, 64-token chat streams), memory per stream in flight
/// at 256 / 1,000 / 10,000 streams: cap 256: 128 / 65 / 44 KiB; cap 64: 82 / 51 / 44 KiB;
/// cap 32: 64 / 47 / 44 KiB, with no change in CPU per token beyond run-to-run noise. So 32
/// (~2 MiB of instances): up to 32 requests in flight keep a fault domain each.
pub const DEFAULT_MAX_INSTANCES: usize = 32;

impl BackendPool {
    /// Configures a first instance with `options`, so a bad `--plugin-opt` fails before the run.
    pub fn new(
        factory: Arc<BackendFactory>,
        options: Vec<(String, String)>,
    ) -> anyhow::Result<Arc<Self>> {
        let options: Vec<Kv> = options
            .into_iter()
            .map(|(key, value)| Kv { key, value })
            .collect();
        let pool = Arc::new(BackendPool {
            factory,
            options: options.into(),
            slots: Mutex::new(Slots::default()),
            faults: AtomicU64::new(0),
            call_budget_us: AtomicU64::new(DEFAULT_CALL_BUDGET_US),
            max_instances: AtomicUsize::new(DEFAULT_MAX_INSTANCES),
            configured_info: std::sync::OnceLock::new(),
        });
        let first = pool.fresh(0)?;
        let configured = first.inst.lock().unwrap().info()?;
        let _ = pool.configured_info.set(configured);
        pool.slots.lock().unwrap().live.push((first, 0));
        Ok(pool)
    }

    /// The adapter's info as configured with the run's options.
    pub fn info(&self) -> &BackendInfo {
        self.configured_info.get().unwrap_or(&self.factory.info)
    }

    /// What the adapter is and where it came from (name, version, sha256), for pins and results.
    pub fn summary(&self) -> PluginSummary {
        self.factory.summary()
    }

    /// `--plugin-call-budget`: the work each call may do from the next checkout on, in µs.
    pub fn set_call_budget_us(&self, us: u64) {
        self.call_budget_us.store(us.max(1), Ordering::Relaxed);
    }

    pub fn call_budget_us(&self) -> u64 {
        self.call_budget_us.load(Ordering::Relaxed)
    }

    /// `--plugin-instances`: how many instances may live at once (at least 1). Requests past
    /// that share the least-loaded one, and a fault in it fails every request sharing it.
    pub fn set_max_instances(&self, n: usize) {
        self.max_instances.store(n.max(1), Ordering::Relaxed);
    }

    pub fn max_instances(&self) -> usize {
        self.max_instances.load(Ordering::Relaxed)
    }

    /// Instances alive now, leased or idle.
    pub fn live_instances(&self) -> usize {
        self.slots.lock().unwrap().live.len()
    }

    fn fresh(&self, generation: u64) -> anyhow::Result<Arc<Slot>> {
        let name: Arc<str> = self.factory.info.name.as_str().into();
        let mut inst = self.factory.instantiate(name.clone())?;
        inst.info()?;
        let options = self.options.read().unwrap().clone();
        inst.configure(&options)?
            .map_err(|e| anyhow::anyhow!("backend {name}: {e}"))?;
        Ok(Arc::new(Slot {
            inst: Mutex::new(inst),
            generation,
            poisoned: AtomicBool::new(false),
        }))
    }

    /// Offers the adapter something the host learned about the server (e.g. `server=llamacpp`
    /// from `/v1/models`). An adapter that knows the option keeps it for every instance; one
    /// that refuses it is left as it was. The user's own `--plugin-opt` of that name wins.
    pub fn offer_hint(&self, key: &str, value: &str) -> bool {
        if self.options.read().unwrap().iter().any(|kv| kv.key == key) {
            return false;
        }
        let hint = Kv {
            key: key.into(),
            value: value.into(),
        };
        let accepted = self
            .factory
            .instantiate(self.factory.info.name.as_str().into())
            .ok()
            .and_then(|mut inst| {
                inst.configure(std::slice::from_ref(&hint)).ok()?.ok()?;
                Some(inst)
            });
        let Some(_) = accepted else {
            return false;
        };
        self.options.write().unwrap().push(hint);
        // Instances configured before the hint are rebuilt on demand with it.
        let mut slots = self.slots.lock().unwrap();
        slots.generation += 1;
        slots.live.retain(|(_, leases)| *leases > 0);
        true
    }

    /// Creates instances up front (at most `--plugin-instances`) so instantiation stays out of
    /// the measured run.
    pub fn prewarm(&self, count: usize) -> anyhow::Result<()> {
        let count = count.min(self.max_instances());
        let (have, generation) = {
            let slots = self.slots.lock().unwrap();
            (slots.live.len(), slots.generation)
        };
        let mut fresh = Vec::new();
        for _ in have..count {
            fresh.push((self.fresh(generation)?, 0));
        }
        self.slots.lock().unwrap().live.extend(fresh);
        Ok(())
    }

    /// Leases an idle instance, else a new one while fewer than `--plugin-instances` live,
    /// else a share of the least-loaded one.
    pub fn checkout(self: &Arc<Self>) -> anyhow::Result<PooledBackend> {
        let generation = {
            let mut slots = self.slots.lock().unwrap();
            let generation = slots.generation;
            let full = slots.live.len() >= self.max_instances();
            let least = slots
                .live
                .iter_mut()
                .filter(|(slot, _)| {
                    slot.generation == generation && !slot.poisoned.load(Ordering::Relaxed)
                })
                .min_by_key(|(_, leases)| *leases);
            match least {
                Some((slot, leases)) if *leases == 0 || full => {
                    *leases += 1;
                    let slot = slot.clone();
                    drop(slots);
                    return Ok(self.lease(slot));
                }
                _ => generation,
            }
        };
        let slot = self.fresh(generation)?;
        self.slots.lock().unwrap().live.push((slot.clone(), 1));
        Ok(self.lease(slot))
    }

    fn lease(self: &Arc<Self>, slot: Arc<Slot>) -> PooledBackend {
        slot.inst
            .lock()
            .unwrap()
            .set_call_budget_us(self.call_budget_us());
        PooledBackend {
            pool: self.clone(),
            slot,
            usage: PluginUsage::default(),
            fault: None,
            parsers: Vec::new(),
        }
    }

    /// A lease ended: the instance stays for the next request, unless it faulted or its
    /// options are out of date and no one else holds it.
    fn release(&self, slot: &Arc<Slot>, poisoned: bool) {
        let mut slots = self.slots.lock().unwrap();
        let generation = slots.generation;
        let Some(at) = slots.live.iter().position(|(s, _)| Arc::ptr_eq(s, slot)) else {
            return;
        };
        if poisoned {
            slots.live.swap_remove(at);
            self.faults.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let leases = &mut slots.live[at].1;
        *leases = leases.saturating_sub(1);
        if *leases == 0 && slot.generation != generation {
            slots.live.swap_remove(at);
        }
    }
}

/// A request's lease on an instance: the calls it makes, the time and fuel they took and any
/// fault, kept apart from other requests sharing the instance. Parsers it did not drop are
/// dropped with it.
pub struct PooledBackend {
    pool: Arc<BackendPool>,
    slot: Arc<Slot>,
    usage: PluginUsage,
    fault: Option<FaultKind>,
    parsers: Vec<ParserHandle>,
}

impl PooledBackend {
    /// Runs `f` on the instance; a fault in it is this request's, and a fault that poisoned
    /// the instance earlier (another request's) fails this call as `shared`.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut BackendInstance) -> Result<T, PluginFault>,
    ) -> Result<T, PluginFault> {
        let mut inst = self.slot.inst.lock().unwrap();
        if inst.poisoned {
            let plugin = self.pool.factory.info.name.clone();
            let cause = inst.fault.unwrap_or(FaultKind::Trap).as_str();
            if self.fault.is_some() {
                return Err(PluginFault::Trap {
                    plugin,
                    reason: format!("called again after its {cause} fault"),
                });
            }
            self.fault = Some(FaultKind::Shared);
            return Err(PluginFault::Shared { plugin, cause });
        }
        let result = f(&mut inst);
        let used = inst.take_usage();
        self.usage.ns += used.ns;
        self.usage.fuel += used.fuel;
        if inst.poisoned {
            // Poisoned by this very call (an instance is checked before each call).
            self.fault
                .get_or_insert(inst.fault.unwrap_or(FaultKind::Trap));
            self.slot.poisoned.store(true, Ordering::Relaxed);
        }
        result
    }

    /// The fault that failed this request's calls: its own, or `shared` when another request
    /// poisoned the instance they shared.
    pub fn fault(&self) -> Option<FaultKind> {
        self.fault
    }

    /// Time and fuel this request's calls spent since the last time this was asked.
    pub fn take_usage(&mut self) -> PluginUsage {
        std::mem::take(&mut self.usage)
    }

    pub fn info(&mut self) -> Result<BackendInfo, PluginFault> {
        self.with(|i| i.info())
    }

    pub fn build_request(
        &mut self,
        req: &GenRequest,
    ) -> Result<Result<HttpRequest, String>, PluginFault> {
        self.with(|i| i.build_request(req))
    }

    pub fn new_parser(
        &mut self,
        status: u16,
        headers: &Headers,
    ) -> Result<ParserHandle, PluginFault> {
        let parser = self.with(|i| i.new_parser(status, headers))?;
        self.parsers.push(parser);
        Ok(parser)
    }

    /// Hands over every frame of one read; events name their frame by index.
    pub fn feed(
        &mut self,
        parser: ParserHandle,
        batch: &FrameBatch,
    ) -> Result<Vec<StreamEvent>, PluginFault> {
        self.with(|i| i.feed(parser, batch))
    }

    pub fn finish(
        &mut self,
        parser: ParserHandle,
        trailers: &Headers,
    ) -> Result<Vec<StreamEvent>, PluginFault> {
        self.with(|i| i.finish(parser, trailers))
    }

    pub fn drop_parser(&mut self, parser: ParserHandle) {
        self.parsers.retain(|p| *p != parser);
        let _ = self.with(|i| {
            i.drop_parser(parser);
            Ok(())
        });
    }

    pub fn parse_body(
        &mut self,
        status: u16,
        headers: &Headers,
        body: &[u8],
    ) -> Result<Result<Completion, BackendError>, PluginFault> {
        self.with(|i| i.parse_body(status, headers, body))
    }

    /// The request to the server's tokenize route for `req`'s prompt, if the adapter has one.
    pub fn tokenize_request(
        &mut self,
        req: &GenRequest,
    ) -> Result<Option<HttpRequest>, PluginFault> {
        self.with(|i| i.tokenize_request(req))
    }

    pub fn parse_tokenize(&mut self, body: &[u8]) -> Result<Result<u32, String>, PluginFault> {
        self.with(|i| i.parse_tokenize(body))
    }

    pub fn map_error(
        &mut self,
        status: u16,
        headers: &Headers,
        body: &[u8],
    ) -> Result<BackendError, PluginFault> {
        self.with(|i| i.map_error(status, headers, body))
    }
}

impl Drop for PooledBackend {
    fn drop(&mut self) {
        let poisoned = {
            let mut inst = self.slot.inst.lock().unwrap();
            for parser in self.parsers.drain(..) {
                inst.drop_parser(parser);
            }
            // A budget of this request's, not the next one's, was spent on the drops.
            inst.take_usage();
            inst.poisoned
        };
        self.pool.release(&self.slot, poisoned);
    }
}
