//! Dataset readers: run once before the benchmark, in a sandbox that sees only the host
//! tokenizer and, read-only at `/data`, exactly the file the user named (or the folder, when
//! the user named a folder; for the `audio` and `images` readers also the files their lists name).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::backend::{
    ChatMessage as BChatMessage, ContentPart as BContentPart, Image as BImage,
    MultimodalMessage as BMultimodalMessage, Prompt as BPrompt, Role as BRole,
};
use super::legacy::{self, dataset_v1};
use super::{
    LogSink, MEMORY_CAP_BYTES, Origin, PluginComponent, PluginKind, PluginStore, PluginSummary,
    engine, guarded,
};
use crate::tokenizer::HostTokenizer;

/// Host-side bindings of the `dataset-plugin` world.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "dataset-plugin",
        path: "../../wit",
    });
}

pub use bindings::exports::llmb::plugin::dataset::DatasetInfo;
use bindings::exports::llmb::plugin::dataset::DatasetParams;
use bindings::llmb::plugin::types as dtypes;

/// Reading a big file may take a while; a call that runs 60 s is stuck.
const CALL_DEADLINE_TICKS: u64 = super::ticks_in(std::time::Duration::from_secs(60));
const BATCH: u32 = 512;

/// One prompt ready for the scheduler.
#[derive(Debug, Clone)]
pub struct Sample {
    pub prompt: BPrompt,
    /// Prompt length by the host tokenizer.
    pub input_tokens: u32,
    /// Requested output length (max-tokens).
    pub output_tokens: u32,
    /// Send time in a recorded trace, seconds (any origin), for trace replay.
    pub timestamp: Option<f64>,
}

/// What the user asked of a dataset.
#[derive(Debug, Clone, Default)]
pub struct DatasetRequest {
    pub seed: u64,
    /// Requests wanted; 0 = the whole dataset.
    pub count: u64,
    /// Dataset options such as `random-input-len` (without the leading dashes).
    pub options: Vec<(String, String)>,
    /// `--dataset-path`, if any.
    pub file: Option<PathBuf>,
}

pub struct DatasetState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    log: LogSink,
    name: Arc<str>,
    tokenizer: Arc<HostTokenizer>,
}

impl WasiView for DatasetState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl PluginStore for DatasetState {
    fn plugin_name(&self) -> &str {
        &self.name
    }
    fn log_sink(&mut self) -> &mut LogSink {
        &mut self.log
    }
}

impl dtypes::Host for DatasetState {}
impl dataset_v1::llmb::plugin::types::Host for DatasetState {}

/// Implements one WIT version's `tokenizer` import with the host tokenizer.
macro_rules! impl_tokenizer_host {
    ($($iface:ident)::+) => {
        impl $($iface)::+::Host for DatasetState {
            fn count(&mut self, text: String) -> u32 {
                self.tokenizer.count(&text)
            }
            fn encode(&mut self, text: String) -> Vec<u32> {
                self.tokenizer.encode(&text)
            }
            fn decode(&mut self, tokens: Vec<u32>) -> String {
                self.tokenizer.decode(&tokens)
            }
            fn vocab_size(&mut self) -> u32 {
                self.tokenizer.vocab_size()
            }
            fn special_ids(&mut self) -> Vec<u32> {
                self.tokenizer.special_ids()
            }
        }
    };
}

impl_host_log!(DatasetState, bindings::llmb::plugin::host_log);
impl_host_log!(DatasetState, dataset_v1::llmb::plugin::host_log);
impl_tokenizer_host!(bindings::llmb::plugin::tokenizer);
impl_tokenizer_host!(dataset_v1::llmb::plugin::tokenizer);

/// A linked dataset component: of the current WIT, or of 1.0 (`legacy.rs`).
enum DatasetPre {
    Current(bindings::DatasetPluginPre<DatasetState>),
    Legacy(dataset_v1::DatasetPluginPre<DatasetState>),
}

/// An instantiated dataset component.
enum DatasetBindings {
    Current(bindings::DatasetPlugin),
    Legacy(dataset_v1::DatasetPlugin),
}

impl DatasetBindings {
    fn info(&self, store: &mut Store<DatasetState>) -> anyhow::Result<DatasetInfo> {
        Ok(match self {
            DatasetBindings::Current(p) => guarded(store, CALL_DEADLINE_TICKS, |s| {
                p.llmb_plugin_dataset().call_info(s)
            })?,
            DatasetBindings::Legacy(p) => {
                let info = guarded(store, CALL_DEADLINE_TICKS, |s| {
                    p.llmb_plugin_dataset().call_info(s)
                })?;
                DatasetInfo {
                    name: info.name,
                    version: info.version,
                    description: info.description,
                }
            }
        })
    }

    fn open(
        &self,
        store: &mut Store<DatasetState>,
        params: &DatasetParams,
    ) -> anyhow::Result<wasmtime::component::ResourceAny> {
        Ok(match self {
            DatasetBindings::Current(p) => guarded(store, CALL_DEADLINE_TICKS, |s| {
                p.llmb_plugin_dataset().source().call_constructor(s, params)
            })?,
            DatasetBindings::Legacy(p) => {
                let params = legacy::dataset_params_to_v1(params);
                guarded(store, CALL_DEADLINE_TICKS, |s| {
                    p.llmb_plugin_dataset()
                        .source()
                        .call_constructor(s, &params)
                })?
            }
        })
    }

    /// The next samples (empty at the end), or the reader's own error.
    fn next_batch(
        &self,
        store: &mut Store<DatasetState>,
        source: wasmtime::component::ResourceAny,
    ) -> anyhow::Result<Result<Vec<Sample>, String>> {
        // Both versions' samples have the same fields; only the prompt type differs.
        macro_rules! read {
            ($plugin:expr, $prompt:path) => {
                guarded(store, CALL_DEADLINE_TICKS, |s| {
                    $plugin
                        .llmb_plugin_dataset()
                        .source()
                        .call_next_batch(s, source, BATCH)
                })?
                .map(|batch| {
                    batch
                        .into_iter()
                        .map(|s| Sample {
                            prompt: $prompt(s.prompt),
                            input_tokens: s.input_tokens,
                            output_tokens: s.output_tokens,
                            timestamp: s.timestamp,
                        })
                        .collect()
                })
            };
        }
        Ok(match self {
            DatasetBindings::Current(p) => read!(p, convert_prompt),
            DatasetBindings::Legacy(p) => read!(p, legacy::dataset_prompt_from_v1),
        })
    }
}

/// A compiled dataset plugin.
pub struct DatasetFactory {
    pre: DatasetPre,
    pub info: DatasetInfo,
    pub wit_version: String,
    pub origin: Origin,
    pub sha256: String,
}

impl DatasetFactory {
    pub(super) fn new(plugin: PluginComponent) -> anyhow::Result<Self> {
        debug_assert_eq!(plugin.kind, PluginKind::Dataset);
        // The WASI basics plus a filesystem (which holds only the granted files); no sockets.
        let mut linker = Linker::<DatasetState>::new(engine());
        super::add_wasi_basics(&mut linker)?;
        {
            use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
            use wasmtime_wasi::p2::bindings::{filesystem, sync};
            filesystem::preopens::add_to_linker::<_, WasiFilesystem>(
                &mut linker,
                DatasetState::filesystem,
            )?;
            sync::filesystem::types::add_to_linker::<_, WasiFilesystem>(
                &mut linker,
                DatasetState::filesystem,
            )?;
        }
        let legacy = plugin.wit_version.starts_with("1.");
        if legacy {
            dataset_v1::DatasetPlugin::add_to_linker::<_, HasSelf<DatasetState>>(
                &mut linker,
                |s| s,
            )?;
        } else {
            bindings::DatasetPlugin::add_to_linker::<_, HasSelf<DatasetState>>(&mut linker, |s| s)?;
        }
        let pre = linker
            .instantiate_pre(&plugin.component)
            .map_err(|e| anyhow::anyhow!("cannot be linked: {e}"))?;
        let mismatch = |e| {
            anyhow::anyhow!(
                "does not match the {} dataset world: {e}",
                plugin.wit_version
            )
        };
        let pre = if legacy {
            DatasetPre::Legacy(dataset_v1::DatasetPluginPre::new(pre).map_err(mismatch)?)
        } else {
            DatasetPre::Current(bindings::DatasetPluginPre::new(pre).map_err(mismatch)?)
        };
        let mut factory = DatasetFactory {
            pre,
            info: DatasetInfo {
                name: String::new(),
                version: String::new(),
                description: String::new(),
            },
            wit_version: plugin.wit_version,
            origin: plugin.origin,
            sha256: plugin.sha256,
        };
        // Instantiation may touch WASI; keep it off any async runtime thread.
        let info = std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<DatasetInfo> {
                let (mut store, plugin) = factory.instantiate(
                    "(loading)".into(),
                    Arc::new(HostTokenizer::Words),
                    WasiCtxBuilder::new().build(),
                )?;
                plugin.info(&mut store)
            })
            .join()
            .expect("dataset info thread")
        })?;
        factory.info = info;
        Ok(factory)
    }

    fn instantiate(
        &self,
        name: Arc<str>,
        tokenizer: Arc<HostTokenizer>,
        wasi: WasiCtx,
    ) -> anyhow::Result<(Store<DatasetState>, DatasetBindings)> {
        let state = DatasetState {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(4 * MEMORY_CAP_BYTES)
                .build(),
            log: LogSink::default(),
            name,
            tokenizer,
        };
        let mut store = Store::new(engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(super::on_epoch_deadline);
        // Instantiation gets a call's work budget (see `super::CallBudget`).
        let setup = super::CallBudget {
            deadline_ticks: CALL_DEADLINE_TICKS,
            budget_us: None,
        };
        setup.arm(&mut store);
        let failed =
            |e: wasmtime::Error| anyhow::anyhow!("instantiating the dataset plugin: {e:#}");
        let plugin = match &self.pre {
            DatasetPre::Current(pre) => {
                DatasetBindings::Current(pre.instantiate(&mut store).map_err(failed)?)
            }
            DatasetPre::Legacy(pre) => {
                DatasetBindings::Legacy(pre.instantiate(&mut store).map_err(failed)?)
            }
        };
        Ok((store, plugin))
    }

    pub fn summary(&self) -> PluginSummary {
        PluginSummary {
            name: self.info.name.clone(),
            version: self.info.version.clone(),
            kind: PluginKind::Dataset,
            wit_version: self.wit_version.clone(),
            origin: self.origin.clone(),
            sha256: self.sha256.clone(),
            description: self.info.description.clone(),
        }
    }

    /// Produces the samples for a run. Runs on its own thread: WASI file access must not
    /// happen on an async runtime's worker.
    pub fn load(
        &self,
        req: &DatasetRequest,
        tokenizer: Arc<HostTokenizer>,
    ) -> anyhow::Result<Vec<Sample>> {
        std::thread::scope(|s| {
            s.spawn(|| self.load_here(req, tokenizer))
                .join()
                .expect("dataset thread")
        })
    }

    fn load_here(
        &self,
        req: &DatasetRequest,
        tokenizer: Arc<HostTokenizer>,
    ) -> anyhow::Result<Vec<Sample>> {
        let name = self.info.name.clone();
        let mut wasi = WasiCtxBuilder::new();
        let mut options: Vec<dtypes::Kv> = req
            .options
            .iter()
            .map(|(k, v)| dtypes::Kv {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        let mut files = Vec::new();
        let mut grant = None;
        if let Some(path) = &req.file {
            let (granted, file) = Grant::new(path, listed_fields(&name))?;
            wasi.preopened_dir(&granted.dir, "/data", FsPerms::ReadOnly)
                .map_err(|e| {
                    anyhow::anyhow!("cannot grant read access to {}: {e}", path.display())
                })?;
            grant = Some(granted);
            files.push(file);
            options.push(dtypes::Kv {
                key: "dataset-path-display".into(),
                value: path.display().to_string(),
            });
        }
        let (mut store, plugin) =
            self.instantiate(name.as_str().into(), tokenizer, wasi.build())?;
        plugin.info(&mut store)?;
        let params = DatasetParams {
            seed: req.seed,
            count: req.count,
            options,
            files,
        };
        let source = plugin.open(&mut store, &params)?;
        let mut samples = Vec::new();
        loop {
            let batch = plugin
                .next_batch(&mut store, source)?
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("dataset {name}"))?;
            if batch.is_empty() {
                break;
            }
            samples.extend(batch);
            if req.count > 0 && samples.len() as u64 >= req.count {
                samples.truncate(req.count as usize);
                break;
            }
        }
        drop(store);
        drop(grant);
        anyhow::ensure!(!samples.is_empty(), "dataset {name} produced no prompts");
        Ok(samples)
    }
}

/// The folder a dataset reader sees as `/data`, read-only. A folder the user named is granted
/// as it is; a file is granted alone: hard-linked (copied when it cannot be) into a private
/// temporary folder, removed afterwards, so the reader cannot open its siblings.
struct Grant {
    dir: PathBuf,
    temporary: bool,
}

impl Grant {
    /// The grant for `path` and the name the reader opens it by. With `listed` fields (see
    /// [`listed_fields`]), the files a JSONL list names in them by relative path inside its own
    /// folder are granted too, at the same relative paths.
    fn new(path: &Path, listed: &[&str]) -> anyhow::Result<(Grant, String)> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("dataset path {}: cannot open", path.display()))?;
        let abs = std::fs::canonicalize(path)
            .with_context(|| format!("dataset path {}", path.display()))?;
        if meta.is_dir() {
            // A folder (a downloaded dataset snapshot) is granted whole and named ".".
            let grant = Grant {
                dir: abs,
                temporary: false,
            };
            return Ok((grant, ".".into()));
        }
        let grant = Grant {
            dir: private_dir()?,
            temporary: true,
        };
        let name = abs
            .file_name()
            .context("a file has a name")?
            .to_string_lossy()
            .into_owned();
        grant.add(&abs, Path::new(&name))?;
        if !listed.is_empty() {
            let folder = abs.parent().context("a file has a parent directory")?;
            for rel in listed_files(&abs, listed) {
                if rel == Path::new(&name) {
                    continue;
                }
                // A file that is missing or is not a plain file inside the folder is left out;
                // the reader then says it cannot read it.
                if let Ok(target) = std::fs::canonicalize(folder.join(&rel))
                    && target.starts_with(folder)
                    && target.is_file()
                {
                    grant.add(&target, &rel)?;
                }
            }
        }
        Ok((grant, name))
    }

    fn add(&self, source: &Path, rel: &Path) -> anyhow::Result<()> {
        let dest = self.dir.join(rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot prepare {}", parent.display()))?;
        }
        if dest.exists() {
            return Ok(());
        }
        if std::fs::hard_link(source, &dest).is_err() {
            std::fs::copy(source, &dest)
                .with_context(|| format!("cannot grant the dataset reader {}", source.display()))?;
        }
        Ok(())
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A new, empty folder only this user can enter, under the system's temporary folder.
fn private_dir() -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for _ in 0..100 {
        let dir = base.join(format!(
            "llmb-data-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create a folder in {}", base.display()));
            }
        }
    }
    anyhow::bail!("cannot create a private folder in {}", base.display())
}

/// The JSONL fields in which a reader's list names files to read with it: the `audio` reader's
/// clips, the `images` reader's images (a path or a list of paths).
fn listed_fields(reader: &str) -> &'static [&'static str] {
    match reader {
        "audio" => &["audio"],
        "images" => &["image", "images"],
        _ => &[],
    }
}

/// The relative paths a JSONL list names in its `fields` (a string or a list of strings): no
/// absolute paths, no `..` (a leading `./` is fine).
fn listed_files(list: &Path, fields: &[&str]) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(list) else {
        return Vec::new();
    };
    // A list saved with a byte-order mark (Windows editors) is read as the readers read it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .flat_map(|v| {
            let mut paths = Vec::new();
            for field in fields {
                match v.get(field) {
                    Some(serde_json::Value::String(s)) => paths.push(PathBuf::from(s)),
                    Some(serde_json::Value::Array(items)) => {
                        paths.extend(items.iter().filter_map(|i| i.as_str()).map(PathBuf::from))
                    }
                    _ => {}
                }
            }
            paths
        })
        .filter(|p| {
            p.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            })
        })
        .collect()
}

fn convert_role(role: dtypes::Role) -> BRole {
    match role {
        dtypes::Role::System => BRole::System,
        dtypes::Role::User => BRole::User,
        dtypes::Role::Assistant => BRole::Assistant,
        dtypes::Role::Tool => BRole::Tool,
    }
}

fn convert_prompt(p: dtypes::Prompt) -> BPrompt {
    match p {
        dtypes::Prompt::Text(t) => BPrompt::Text(t),
        dtypes::Prompt::Chat(messages) => BPrompt::Chat(
            messages
                .into_iter()
                .map(|m| BChatMessage {
                    role: convert_role(m.role),
                    content: m.content,
                })
                .collect(),
        ),
        dtypes::Prompt::Audio(a) => BPrompt::Audio(super::backend::AudioClip {
            data: a.data,
            filename: a.filename,
            reference: a.reference,
            duration_s: a.duration_s,
        }),
        dtypes::Prompt::Multimodal(messages) => BPrompt::Multimodal(
            messages
                .into_iter()
                .map(|m| BMultimodalMessage {
                    role: convert_role(m.role),
                    parts: m
                        .parts
                        .into_iter()
                        .map(|part| match part {
                            dtypes::ContentPart::Text(t) => BContentPart::Text(t),
                            dtypes::ContentPart::Image(i) => BContentPart::Image(BImage {
                                data: i.data,
                                mime_type: i.mime_type,
                                url: i.url,
                                width: i.width,
                                height: i.height,
                            }),
                        })
                        .collect(),
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_grants_the_files_its_lines_name_and_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list.jsonl");
        // A byte-order mark (Windows editors) must not hide the first line's file.
        std::fs::write(
            &list,
            "\u{feff}{\"image\": \"a.png\"}\n{\"images\": [\"./b.png\", \"../c.png\", \"/etc/passwd\"]}\n",
        )
        .unwrap();
        let files = listed_files(&list, listed_fields("images"));
        assert_eq!(files, [PathBuf::from("a.png"), PathBuf::from("./b.png")]);
        assert!(listed_files(&list, listed_fields("random")).is_empty());
    }
}
