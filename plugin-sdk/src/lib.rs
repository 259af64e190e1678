//! The crate llmb plugin authors build on.
//!
//! It hides the component-model plumbing (the bindings generated from `wit/`) and gives the
//! pieces every adapter needs: OpenAI-style error mapping, `--extra-body` merging and stream
//! framing for servers the host cannot frame by itself. An adapter is a type implementing
//! [`backend::Guest`] plus a parser implementing [`backend::GuestResponseParser`], exported
//! with [`export_backend!`]; a dataset reader implements [`dataset::Guest`] and is exported
//! with [`export_dataset!`].

pub mod errors;
pub mod framing;
pub mod json;
pub mod json_array;
pub mod media;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
pub mod openai;
pub mod sampler;
pub mod testing;
pub mod tokenize;
pub mod tokens;
pub mod whole_body;

/// Bindings for the `backend-plugin` world (adapters).
pub mod backend_bindings {
    wit_bindgen::generate!({
        world: "backend-plugin",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_backend_world",
        default_bindings_module: "llmb_plugin_sdk::backend_bindings",
        generate_all,
        // Native adapters pass the WIT types across their C ABI as postcard bytes.
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// Bindings for the `dataset-plugin` world (dataset readers).
pub mod dataset_bindings {
    wit_bindgen::generate!({
        world: "dataset-plugin",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_dataset_world",
        default_bindings_module: "llmb_plugin_sdk::dataset_bindings",
        generate_all,
    });
}

/// Exports an adapter type (implementing [`backend::Guest`]) as this component's backend.
///
/// Routes panic messages to the host log instead of stderr, so the host can say why a
/// plugin trapped.
#[macro_export]
macro_rules! export_backend {
    ($ty:ty) => {
        type __LlmbBackendExport = $crate::Hooked<$ty>;
        $crate::backend_bindings::export_backend_world!(
            __LlmbBackendExport with_types_in $crate::backend_bindings
        );
    };
}

/// Exports a dataset type (implementing [`dataset::Guest`]) as this component's dataset reader.
#[macro_export]
macro_rules! export_dataset {
    ($ty:ty) => {
        type __LlmbDatasetExport = $crate::Hooked<$ty>;
        $crate::dataset_bindings::export_dataset_world!(
            __LlmbDatasetExport with_types_in $crate::dataset_bindings
        );
    };
}

/// Wraps a plugin's exports so the first call installs a panic hook that reports the panic
/// message through the host log (the host attaches it to the failed request).
#[doc(hidden)]
pub struct Hooked<T>(std::marker::PhantomData<T>);

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = format!("panic: {info}");
            #[cfg(target_arch = "wasm32")]
            backend_bindings::llmb::plugin::host_log::log(
                backend_bindings::llmb::plugin::host_log::Level::Error,
                &message,
            );
            #[cfg(not(target_arch = "wasm32"))]
            eprintln!("{message}");
        }));
    });
}

impl<T: backend::Guest> backend::Guest for Hooked<T> {
    type ResponseParser = T::ResponseParser;

    fn info() -> backend::BackendInfo {
        install_panic_hook();
        T::info()
    }

    fn configure(options: Vec<backend::Kv>) -> Result<(), String> {
        install_panic_hook();
        T::configure(options)
    }

    fn build_request(req: backend::GenRequest) -> Result<backend::HttpRequest, String> {
        T::build_request(req)
    }

    fn parse_body(
        status: u16,
        headers: backend::Headers,
        body: Vec<u8>,
    ) -> Result<backend::Completion, backend::BackendError> {
        T::parse_body(status, headers, body)
    }

    fn map_error(status: u16, headers: backend::Headers, body: Vec<u8>) -> backend::BackendError {
        T::map_error(status, headers, body)
    }

    fn tokenize_request(req: backend::GenRequest) -> Option<backend::HttpRequest> {
        T::tokenize_request(req)
    }

    fn parse_tokenize(body: Vec<u8>) -> Result<u32, String> {
        T::parse_tokenize(body)
    }
}

impl<T: dataset::Guest> dataset::Guest for Hooked<T> {
    type Source = T::Source;

    fn info() -> dataset::DatasetInfo {
        install_panic_hook();
        T::info()
    }
}

/// Everything an adapter touches, under short names.
pub mod backend {
    pub use crate::backend_bindings::exports::llmb::plugin::backend::{
        BackendInfo, Guest, GuestResponseParser, ResponseParser,
    };
    pub use crate::backend_bindings::llmb::plugin::host_log::{Level, log};
    pub use crate::backend_bindings::llmb::plugin::types::{
        AudioClip, BackendError, ChatMessage, Completion, ContentPart, Delta, ErrorKind,
        FrameBatch, FrameSpan, Framing, GenRequest, HttpRequest, Image, Kv, MultimodalMessage,
        Prompt, Role, StreamEvent, Usage,
    };
    pub type Headers = Vec<(String, String)>;
}

impl backend::FrameBatch {
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frame `i` as (event name, payload); a span outside the data gives an empty payload.
    pub fn get(&self, i: usize) -> (Option<&str>, &[u8]) {
        let span = &self.frames[i];
        let start = span.start as usize;
        let data = start
            .checked_add(span.len as usize)
            .and_then(|end| self.data.get(start..end))
            .unwrap_or_default();
        (span.event.as_deref(), data)
    }

    /// `(frame index, event name, payload)` for every frame, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, Option<&str>, &[u8])> {
        (0..self.frames.len()).map(|i| {
            let (event, data) = self.get(i);
            (i as u32, event, data)
        })
    }
}

/// Everything a dataset reader touches, under short names.
pub mod dataset {
    pub use crate::dataset_bindings::exports::llmb::plugin::dataset::{
        DatasetInfo, DatasetParams, Guest, GuestSource, Sample, Source,
    };
    pub use crate::dataset_bindings::llmb::plugin::host_log::{Level, log};
    pub use crate::dataset_bindings::llmb::plugin::tokenizer;
    pub use crate::dataset_bindings::llmb::plugin::types::{
        AudioClip, ChatMessage, ContentPart, Image, Kv, MultimodalMessage, Prompt, Role,
    };

    /// Looks up a `--option` value passed through [`DatasetParams::options`].
    pub fn option<'a>(params: &'a DatasetParams, key: &str) -> Option<&'a str> {
        params
            .options
            .iter()
            .rev()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value.as_str())
    }

    /// Parses an option, naming the option in the error.
    pub fn parse_option<T: std::str::FromStr>(
        params: &DatasetParams,
        key: &str,
        default: T,
    ) -> Result<T, String> {
        match option(params, key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("invalid value {v:?} for --{key}")),
        }
    }
}

/// Seeded, reproducible random numbers for dataset plugins (plugins get no host randomness).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform integer in `lo..=hi`.
    pub fn range_inclusive(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }
}
