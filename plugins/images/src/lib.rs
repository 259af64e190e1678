//! The `images` dataset: local image files for vision models (`--dataset-name images
//! --dataset-path PATH`, sent as chat messages with images, e.g. by `--backend openai-chat`).
//! Each request is one user message: its text, then its images.
//!
//! PATH is one of:
//! - a folder: every `.jpg`, `.jpeg`, `.png`, `.webp` and `.gif` file under it (sub-folders
//!   included, hidden names skipped), sorted by name, one image per request;
//! - one image file: a request with that image;
//! - a JSONL list, a request per line: `{"prompt": "...", "image": "cats/1.png"}`, or
//!   `"images": ["a.png", "b.jpg"]` for several, `"image_url": "https://..."` (or a list) for
//!   images the server fetches itself (the URL is sent, no bytes), and `"output_tokens": N`.
//!   Paths are relative to the list's folder, which is where the host grants the files the list
//!   names, so absolute paths and `..` are refused. Errors name the list and the line.
//!
//! Options: `images-prompt` (the text of requests without a `"prompt"`, default
//! [`DEFAULT_PROMPT`]), `images-output-len` (default 128), `disable-shuffle` (keep the name or
//! file order instead of shuffling with the seed) and `cycle` (repeat the requests when more are
//! asked for than there are; otherwise the run gets what there is). Width, height and format come
//! from each file's header when the run opens, so a missing or unreadable image fails before the
//! benchmark starts; the MIME type follows the content, not the name. The bytes themselves are
//! read batch by batch, never all at once. Input tokens count the text only: how many tokens an
//! image costs is the server's business.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use llmb_plugin_sdk::dataset::{
    ContentPart, DatasetInfo, DatasetParams, Guest, GuestSource, Image, MultimodalMessage, Prompt,
    Role, Sample, option,
};
use llmb_plugin_sdk::sampler::{DATA_DIR, Plan, positive, shuffle};

pub mod list;

use list::{Entry, ImageRef, folder_entries, is_image_name, list_folder, parse_list};

/// The text of a request that does not give its own.
pub const DEFAULT_PROMPT: &str = "Describe this image in detail.";
/// The output length of a request that does not give its own.
pub const DEFAULT_OUTPUT_LEN: u32 = 128;
/// A batch stops adding requests once its images reach this many bytes (it always holds one).
pub const BATCH_BYTES: usize = 32 << 20;
/// Larger files are refused: no vision API takes them (OpenAI's cap is 20 MB), and the reader's
/// sandbox could not hold many.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

const USAGE: &str = "the images dataset needs --dataset-path: a folder of images, an image \
    file, or a JSONL list of {\"prompt\": \"...\", \"image\": \"a.png\"} lines";

pub use llmb_plugin_sdk::media::{ImageHeader as Header, url_mime};

/// The format (by content) and size of the image at `path`, from its first bytes.
pub fn probe(path: &Path) -> Result<Header, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "{} MiB is too large (images are limited to {} MiB)",
            len >> 20,
            MAX_FILE_BYTES >> 20
        ));
    }
    llmb_plugin_sdk::media::image_header(&mut std::io::BufReader::new(file))
}

/// One image of a request, checked.
#[derive(Debug, Clone, PartialEq)]
enum Ready {
    File { rel: String, header: Header },
    Url(String),
}

/// One request, its files checked and its lengths known.
#[derive(Debug, Clone, PartialEq)]
struct Request {
    at: String,
    text: String,
    images: Vec<Ready>,
    output_tokens: u32,
}

/// One run: the requests in play order, read as batches are asked for.
pub struct State {
    base: PathBuf,
    requests: Vec<Request>,
    order: Vec<usize>,
    count: u64,
    produced: u64,
    batch_bytes: usize,
}

impl State {
    /// Reads the options and checks every file `entries` name (relative to `base`) by its header.
    pub fn new(params: &DatasetParams, base: PathBuf, entries: Vec<Entry>) -> Result<Self, String> {
        let plan = Plan::from_params(params)?;
        let prompt = option(params, "images-prompt").unwrap_or(DEFAULT_PROMPT);
        let output_len = positive(params, "images-output-len")?.unwrap_or(DEFAULT_OUTPUT_LEN);
        let mut requests = Vec::with_capacity(entries.len());
        for e in entries {
            let mut images = Vec::with_capacity(e.images.len());
            for image in e.images {
                images.push(match image {
                    ImageRef::File(rel) => {
                        let header = probe(&base.join(&rel))
                            .map_err(|err| format!("{}: cannot read {rel}: {err}", e.at))?;
                        Ready::File { rel, header }
                    }
                    ImageRef::Url(url) => Ready::Url(url),
                });
            }
            requests.push(Request {
                text: e.prompt.unwrap_or_else(|| prompt.to_owned()),
                output_tokens: e.output_tokens.unwrap_or(output_len),
                at: e.at,
                images,
            });
        }
        let mut order: Vec<usize> = (0..requests.len()).collect();
        if plan.shuffle {
            shuffle(&mut order, plan.seed);
        }
        let n = requests.len() as u64;
        let count = match plan.count {
            0 => n,
            c if plan.cycle => c,
            c => c.min(n),
        };
        Ok(Self {
            base,
            requests,
            order,
            count,
            produced: 0,
            batch_bytes: BATCH_BYTES,
        })
    }

    /// Up to `max` more samples (fewer once a batch holds [`BATCH_BYTES`] of images), reading
    /// their files now; `count` is the tokenizer. Empty when the run has them all.
    pub fn next(&mut self, max: u32, count: &dyn Fn(&str) -> u32) -> Result<Vec<Sample>, String> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < max as usize && self.produced < self.count && bytes < self.batch_bytes {
            let i = self.order[(self.produced % self.order.len() as u64) as usize];
            let r = &self.requests[i];
            let mut parts = Vec::with_capacity(r.images.len() + 1);
            if !r.text.is_empty() {
                parts.push(ContentPart::Text(r.text.clone()));
            }
            for image in &r.images {
                parts.push(ContentPart::Image(match image {
                    Ready::File { rel, header } => {
                        let data = std::fs::read(self.base.join(rel))
                            .map_err(|e| format!("{}: cannot read {rel}: {e}", r.at))?;
                        bytes += data.len();
                        Image {
                            data,
                            mime_type: header.mime.into(),
                            url: None,
                            width: Some(header.width),
                            height: Some(header.height),
                        }
                    }
                    Ready::Url(url) => Image {
                        data: Vec::new(),
                        mime_type: url_mime(url),
                        url: Some(url.clone()),
                        width: None,
                        height: None,
                    },
                }));
            }
            out.push(Sample {
                prompt: Prompt::Multimodal(vec![MultimodalMessage {
                    role: Role::User,
                    parts,
                }]),
                input_tokens: count(&r.text),
                output_tokens: r.output_tokens,
                timestamp: None,
            });
            self.produced += 1;
        }
        Ok(out)
    }
}

/// Opens what the host granted at `/data`: the folder (named "."), an image file or a list.
fn open(params: &DatasetParams) -> Result<State, String> {
    let file = params.files.first().ok_or(USAGE)?;
    let shown = option(params, "dataset-path-display").unwrap_or(file);
    let root = PathBuf::from(DATA_DIR);
    if file == "." {
        let files =
            list_folder(&root).map_err(|e| format!("{shown}: cannot list the folder: {e}"))?;
        if files.is_empty() {
            return Err(format!(
                "{shown}: no image files (.jpg, .jpeg, .png, .webp, .gif) in the folder"
            ));
        }
        return State::new(params, root, folder_entries(shown, files));
    }
    let (base, name) = match file.rsplit_once('/') {
        Some((dir, name)) => (root.join(dir), name),
        None => (root, file.as_str()),
    };
    if is_image_name(name) {
        let entries = folder_entries(shown, vec![name.to_owned()]);
        return State::new(params, base, entries);
    }
    let text = std::fs::read_to_string(base.join(name))
        .map_err(|e| format!("{shown}: cannot read: {e}"))?;
    let entries = parse_list(shown, &text)?;
    State::new(params, base, entries)
}

pub struct Images;

/// One `source` resource: the run, or the error opening it gave (repeated on every call).
pub struct ImagesSource {
    state: RefCell<Result<State, String>>,
}

impl Guest for Images {
    type Source = ImagesSource;

    fn info() -> DatasetInfo {
        DatasetInfo {
            name: "images".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Local images for vision models (--dataset-path): a folder of \
                .jpg/.jpeg/.png/.webp/.gif files (one per request), an image file, or a JSONL \
                list of {\"prompt\": ..., \"image\": path | \"images\": [paths] | \"image_url\": URL, \
                \"output_tokens\": N} with paths relative to the list; images-prompt (default \
                \"Describe this image in detail.\"), images-output-len (default 128), \
                --disable-shuffle, cycle; input tokens count the text"
                .into(),
        }
    }
}

impl GuestSource for ImagesSource {
    fn new(params: DatasetParams) -> Self {
        Self {
            state: RefCell::new(open(&params)),
        }
    }

    fn next_batch(&self, max: u32) -> Result<Vec<Sample>, String> {
        let mut guard = self.state.borrow_mut();
        let st = guard.as_mut().map_err(|e| e.clone())?;
        st.next(max, &|text| {
            llmb_plugin_sdk::dataset::tokenizer::count(text)
        })
        .inspect_err(|e| *guard = Err(e.clone()))
    }
}

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_dataset!(Images);

#[cfg(test)]
mod tests;
