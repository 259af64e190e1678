//! From a record's cells to a prompt and an output length: which columns hold what, and how a
//! cell of each kind reads.
//!
//! Every format hands its cells over as `serde_json::Value`s, so the rules live here once:
//! parquet fields are converted, CSV cells arrive as strings (a messages cell holding JSON text
//! is parsed), JSON values are taken as they are.

use llmb_plugin_sdk::dataset::{ChatMessage, ContentPart, Image, MultimodalMessage, Prompt, Role};
use serde_json::Value;

use crate::image::{IMAGE_COLUMNS, Media};

/// Prompt columns tried in order when `hf-prompt-column` is not given.
pub const PROMPT_COLUMNS: [&str; 7] = [
    "prompt",
    "question",
    "instruction",
    "input",
    "text",
    "problem",
    "query",
];
/// Conversation columns tried in order when there is no prompt column.
pub const MESSAGES_COLUMNS: [&str; 4] = ["messages", "conversations", "conversation", "chat"];
/// Output length columns tried in order when `hf-output-len-column` is not given.
pub const OUTPUT_LEN_COLUMNS: [&str; 3] = ["output_len", "output_tokens", "max_tokens"];
/// Reference reply columns tried in order when `hf-output-column` is not given.
pub const OUTPUT_COLUMNS: [&str; 5] = ["output", "response", "answer", "completion", "chosen"];

/// What goes between an alpaca instruction and its input.
pub const ALPACA_SEPARATOR: &str = "\n\n";

/// The column options as the user gave them (`None` = auto-detect).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    /// `hf-prompt-column`.
    pub prompt: Option<String>,
    /// `hf-messages-column`.
    pub messages: Option<String>,
    /// `hf-output-len-column`.
    pub output_len: Option<String>,
    /// `hf-output-column`.
    pub output: Option<String>,
    /// `hf-image-column`.
    pub image: Option<String>,
    /// `hf-text-only`: images are not read, and image parts of messages are dropped.
    pub text_only: bool,
}

/// The columns one file is read through, resolved against the columns it has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Text prompt column; exclusive with `messages`.
    pub prompt: Option<String>,
    /// Alpaca `input`, appended to the `instruction` prompt when not empty (auto-detect only).
    pub input: Option<String>,
    /// Conversation column.
    pub messages: Option<String>,
    /// Output length column; not read when `hf-output-len` fixes the length.
    pub output_len: Option<String>,
    /// Reference reply column; not read when `hf-output-len` fixes the length.
    pub output: Option<String>,
    /// Image column (vision datasets): its images join the prompt.
    pub image: Option<String>,
    /// `hf-text-only`: no image column, and image parts of messages are dropped.
    pub text_only: bool,
}

impl Mapping {
    /// The columns to read, each once, for projecting a columnar file.
    pub fn used(&self) -> Vec<&str> {
        let mut used: Vec<&str> = Vec::new();
        for name in [
            &self.prompt,
            &self.input,
            &self.messages,
            &self.output_len,
            &self.output,
            &self.image,
        ]
        .into_iter()
        .flatten()
        {
            if !used.contains(&name.as_str()) {
                used.push(name);
            }
        }
        used
    }
}

/// The columns a file has (a JSON record's keys, for JSON).
pub trait ColumnSet {
    fn has(&self, name: &str) -> bool;
    /// The names, for error messages.
    fn names(&self) -> Vec<&str>;
    /// Whether column `name` (which it has) may hold images, for auto-detection.
    fn may_hold_images(&self, _name: &str) -> bool {
        true
    }
}

impl ColumnSet for [String] {
    fn has(&self, name: &str) -> bool {
        self.iter().any(|c| c == name)
    }

    fn names(&self) -> Vec<&str> {
        self.iter().map(String::as_str).collect()
    }
}

impl ColumnSet for serde_json::Map<String, Value> {
    fn has(&self, name: &str) -> bool {
        self.contains_key(name)
    }

    fn names(&self) -> Vec<&str> {
        self.keys().map(String::as_str).collect()
    }

    fn may_hold_images(&self, name: &str) -> bool {
        self.get(name).is_some_and(crate::image::json_holds_images)
    }
}

fn listed<C: ColumnSet + ?Sized>(columns: &C) -> String {
    let names = columns.names();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn explicit<C: ColumnSet + ?Sized>(
    columns: &C,
    name: &Option<String>,
    option: &str,
    strict: bool,
    at: &str,
) -> Result<Option<String>, String> {
    match name {
        Some(name) if strict && !columns.has(name) => Err(format!(
            "{at}: no column {name:?} (--{option}); its columns: {}",
            listed(columns)
        )),
        _ => Ok(name.clone()),
    }
}

fn first_of<C: ColumnSet + ?Sized>(
    columns: &C,
    candidates: &[&str],
    taken: &[&Option<String>],
) -> Option<String> {
    candidates
        .iter()
        .find(|c| columns.has(c) && !taken.iter().any(|t| t.as_deref() == Some(**c)))
        .map(|c| (*c).to_owned())
}

/// Picks the columns to read from what `columns` has. A named column that is missing, or no
/// prompt column at all, is an error when `strict`; otherwise (later JSON records, which may
/// leave keys out) the missing column reads as null and a record without a prompt is skipped. `fixed_output` (`hf-output-len` given) leaves the output columns unread, though named
/// ones must still exist.
pub fn resolve<C: ColumnSet + ?Sized>(
    columns: &C,
    wanted: &Columns,
    fixed_output: bool,
    strict: bool,
    at: &str,
) -> Result<Mapping, String> {
    let mut mapping = Mapping {
        prompt: explicit(columns, &wanted.prompt, "hf-prompt-column", strict, at)?,
        messages: explicit(columns, &wanted.messages, "hf-messages-column", strict, at)?,
        ..Mapping::default()
    };
    if mapping.prompt.is_none() && mapping.messages.is_none() {
        mapping.prompt = first_of(columns, &PROMPT_COLUMNS, &[]);
        if mapping.prompt.is_none() {
            mapping.messages = first_of(columns, &MESSAGES_COLUMNS, &[]);
        }
        if mapping.prompt.is_none() && mapping.messages.is_none() {
            if !strict {
                return Ok(mapping);
            }
            return Err(format!(
                "{at}: no prompt column ({}) or conversation column ({}); its columns: {}; \
                 name the one to use with --hf-prompt-column or --hf-messages-column",
                PROMPT_COLUMNS.join(", "),
                MESSAGES_COLUMNS.join(", "),
                listed(columns)
            ));
        }
        if mapping.prompt.as_deref() == Some("instruction") && columns.has("input") {
            mapping.input = Some("input".into());
        }
    }
    let output_len = explicit(
        columns,
        &wanted.output_len,
        "hf-output-len-column",
        strict,
        at,
    )?;
    let output = explicit(columns, &wanted.output, "hf-output-column", strict, at)?;
    mapping.image = match explicit(columns, &wanted.image, "hf-image-column", strict, at)? {
        Some(name) => {
            if [&mapping.prompt, &mapping.input, &mapping.messages]
                .iter()
                .any(|c| c.as_deref() == Some(name.as_str()))
            {
                return Err(format!(
                    "{at}: --hf-image-column names {name:?}, the column the prompt is read from"
                ));
            }
            Some(name)
        }
        None if wanted.text_only => None,
        None => IMAGE_COLUMNS
            .iter()
            .find(|c| columns.has(c) && columns.may_hold_images(c))
            .map(|c| (*c).to_owned()),
    };
    mapping.text_only = wanted.text_only;
    if fixed_output {
        return Ok(mapping);
    }
    let taken = [
        &mapping.prompt,
        &mapping.input,
        &mapping.messages,
        &mapping.image,
    ];
    mapping.output_len = output_len.or_else(|| first_of(columns, &OUTPUT_LEN_COLUMNS, &taken));
    mapping.output = output.or_else(|| first_of(columns, &OUTPUT_COLUMNS, &taken));
    Ok(mapping)
}

/// A record's values for the mapped columns, `Null` where a column is unmapped or empty.
#[derive(Debug, Clone, Default)]
pub struct Cells {
    pub prompt: Value,
    pub input: Value,
    pub messages: Value,
    pub output_len: Value,
    pub output: Value,
    /// The image column's cell: not taken by [`Cells::take`], each format converts its own
    /// (parquet binary stays bytes).
    pub image: Media,
}

impl Cells {
    /// Fills the cells by calling `take` once with each mapped column's name (a column mapped
    /// twice is copied, so `take` may move values out of the record).
    pub fn take(mapping: &Mapping, mut take: impl FnMut(&str) -> Value) -> Self {
        let names = [
            &mapping.prompt,
            &mapping.input,
            &mapping.messages,
            &mapping.output_len,
            &mapping.output,
        ];
        let mut values: Vec<Value> = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let value = match name.as_deref() {
                None => Value::Null,
                Some(name) => match names[..i].iter().position(|n| n.as_deref() == Some(name)) {
                    Some(j) => values[j].clone(),
                    None => take(name),
                },
            };
            values.push(value);
        }
        let mut values = values.into_iter();
        let mut next = || values.next().unwrap_or_default();
        Cells {
            prompt: next(),
            input: next(),
            messages: next(),
            output_len: next(),
            output: next(),
            image: Media::Null,
        }
    }
}

/// How a sample's `max-tokens` is found once the record is drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// From the output length column.
    Tokens(u32),
    /// The token count of this reference reply (at least 1).
    Reference(String),
    /// `custom-output-len`.
    Default,
}

/// A usable record: what a sample is made of, before tokenizing.
#[derive(Debug, Clone)]
pub struct Row {
    pub prompt: Prompt,
    pub output: Output,
}

/// What a JSON cell is, in the words of an error ("the content is a number, not text").
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn text(value: Value, column: &Option<String>, at: &str) -> Result<String, String> {
    match value {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        other => Err(format!(
            "{at}: column {:?} holds {}, not text",
            column.as_deref().unwrap_or_default(),
            kind(&other)
        )),
    }
}

/// The role names of OpenAI and ShareGPT conversations (as the custom reader takes them).
pub fn role(name: &str) -> Option<Role> {
    match name {
        "system" => Some(Role::System),
        "user" | "human" => Some(Role::User),
        "assistant" | "gpt" | "model" | "chatgpt" | "bard" => Some(Role::Assistant),
        "tool" => Some(Role::Tool),
        _ => None,
    }
}

/// A message's content: a string, null (a tool call's empty content), or content parts of
/// which text ones are taken and `{"type": "image"}` placeholders (the images are in the image
/// column, as in `HuggingFaceH4/llava-instruct-mix-vsft`) are counted in `placeholders`.
fn content(value: Option<&Value>, at: &str, placeholders: &mut usize) -> Result<String, String> {
    match value {
        None => Err(format!("{at}: no \"content\" (or \"value\")")),
        Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text") | None, Some(Value::String(t))) => texts.push(t.as_str()),
                    (Some("image"), _) => *placeholders += 1,
                    (kind, _) => {
                        return Err(format!(
                            "{at}: a content part of type {:?}; llmb's hf reader sends text only",
                            kind.unwrap_or("?")
                        ));
                    }
                }
            }
            Ok(texts.join("\n"))
        }
        Some(other) => Err(format!("{at}: the content is {}, not text", kind(other))),
    }
}

/// Parses a conversation (`[{"role", "content"}]` or `[{"from", "value"}]`); a string cell is
/// JSON text holding the list. A list of turns, each a list of messages (VisionArena's
/// `conversation`), reads as the turns' messages one after the other.
/// Image placeholders in the messages' content parts are counted in `placeholders`.
fn conversation(
    value: Value,
    column: &str,
    at: &str,
    placeholders: &mut usize,
) -> Result<Vec<ChatMessage>, String> {
    let value = match value {
        Value::String(s) if s.trim().is_empty() => return Ok(Vec::new()),
        Value::String(s) => serde_json::from_str(&s).map_err(|e| {
            format!("{at}: column {column:?} holds text that is not a JSON list of messages: {e}")
        })?,
        other => other,
    };
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => {
            return Err(format!(
                "{at}: column {column:?} holds {}, not a list of messages",
                kind(&other)
            ));
        }
    };
    let items: Vec<Value> = if items.iter().any(Value::is_array) {
        items
            .into_iter()
            .flat_map(|item| match item {
                Value::Array(turn) => turn,
                other => vec![other],
            })
            .collect()
    } else {
        items
    };
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("{at}: column {column:?}: message {}", i + 1);
            let name = m
                .get("role")
                .or_else(|| m.get("from"))
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}: no \"role\" (or \"from\") string"))?;
            let role = role(name).ok_or_else(|| format!("{at}: unknown role {name:?}"))?;
            let content = content(
                m.get("content").or_else(|| m.get("value")),
                &at,
                placeholders,
            )?;
            Ok(ChatMessage { role, content })
        })
        .collect()
}

/// The output length cell: a positive integer, as a number or as text (CSV). Null, empty text
/// and NaN (how pandas writes a missing integer) mean "no value".
fn output_len(value: &Value, column: &Option<String>, at: &str) -> Result<Option<u32>, String> {
    let bad = || {
        format!(
            "{at}: column {:?} must hold a positive integer, found {value}",
            column.as_deref().unwrap_or_default()
        )
    };
    let n = match value {
        Value::Null => return Ok(None),
        Value::String(s) if s.trim().is_empty() || s.trim() == "NaN" => return Ok(None),
        Value::String(s) => s.trim().parse::<f64>().map_err(|_| bad())?,
        Value::Number(n) => n.as_f64().ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if n.is_nan() {
        return Ok(None);
    }
    if n.fract() != 0.0 || n < 1.0 || n > f64::from(u32::MAX) {
        return Err(bad());
    }
    Ok(Some(n as u32))
}

/// A reference reply cell: text, or a conversation (preference datasets keep `chosen` as
/// one) whose last assistant message is the reply.
fn reference(value: Value, column: &Option<String>, at: &str) -> Result<Option<String>, String> {
    let reply = match value {
        Value::Array(_) => {
            let column = column.as_deref().unwrap_or_default();
            conversation(value, column, at, &mut 0)?
                .into_iter()
                .rev()
                .find(|m| matches!(m.role, Role::Assistant))
                .map(|m| m.content)
        }
        other => Some(text(other, column, at)?),
    };
    Ok(reply.filter(|r| !r.trim().is_empty()))
}

/// A prompt with a row's images: none leaves it as it is; a text prompt becomes one user
/// message of the text then the images (as vLLM sends them); a conversation gets them after
/// the text of its first user message, where a chat dataset's image belongs.
fn with_images(prompt: Prompt, images: Vec<Image>) -> Prompt {
    if images.is_empty() {
        return prompt;
    }
    let text_parts = |text: String| {
        if text.is_empty() {
            Vec::new()
        } else {
            vec![ContentPart::Text(text)]
        }
    };
    let mut images = Some(images);
    let mut attach = |parts: &mut Vec<ContentPart>| {
        if let Some(images) = images.take() {
            parts.extend(images.into_iter().map(ContentPart::Image));
        }
    };
    match prompt {
        Prompt::Text(text) => {
            let mut parts = text_parts(text);
            attach(&mut parts);
            Prompt::Multimodal(vec![MultimodalMessage {
                role: Role::User,
                parts,
            }])
        }
        Prompt::Chat(messages) => {
            let mut messages: Vec<MultimodalMessage> = messages
                .into_iter()
                .map(|m| {
                    let mut parts = text_parts(m.content);
                    if matches!(m.role, Role::User) {
                        attach(&mut parts);
                    }
                    MultimodalMessage {
                        role: m.role,
                        parts,
                    }
                })
                .collect();
            // A conversation with no user turn still sends its images, as a user turn of
            // their own, rather than dropping them.
            let mut rest = Vec::new();
            attach(&mut rest);
            if !rest.is_empty() {
                messages.push(MultimodalMessage {
                    role: Role::User,
                    parts: rest,
                });
            }
            Prompt::Multimodal(messages)
        }
        other => other,
    }
}

/// Makes a record's row; `None` when its prompt is empty (the caller counts those). `at` names
/// the record in errors.
pub fn row(
    mapping: &Mapping,
    cells: Cells,
    fixed_output: bool,
    at: &str,
) -> Result<Option<Row>, String> {
    let mut trailing = None;
    let prompt = if let Some(column) = &mapping.messages {
        let mut placeholders = 0;
        let mut messages = conversation(cells.messages, column, at, &mut placeholders)?;
        if placeholders > 0 && mapping.image.is_none() && !mapping.text_only {
            return Err(format!(
                "{at}: column {column:?}: the conversation has image parts but no image column \
                 ({}) was found; name it with --hf-image-column, or pass hf-text-only to send \
                 the text alone",
                IMAGE_COLUMNS.join(", ")
            ));
        }
        if messages.is_empty() {
            return Ok(None);
        }
        if messages.len() > 1 && matches!(messages.last().map(|m| &m.role), Some(Role::Assistant)) {
            trailing = messages.pop().map(|m| m.content);
        }
        if !messages.iter().any(|m| matches!(m.role, Role::User)) {
            return Err(format!(
                "{at}: column {column:?}: the conversation has no user message"
            ));
        }
        if messages.iter().all(|m| m.content.trim().is_empty()) {
            return Ok(None);
        }
        Prompt::Chat(messages)
    } else {
        let main = text(cells.prompt, &mapping.prompt, at)?;
        let input = text(cells.input, &mapping.input, at)?;
        let joined = match (main.trim().is_empty(), input.trim().is_empty()) {
            (true, true) => return Ok(None),
            (false, true) => main,
            (true, false) => input,
            (false, false) => format!("{main}{ALPACA_SEPARATOR}{input}"),
        };
        Prompt::Text(joined)
    };
    let prompt = match &mapping.image {
        Some(column) => with_images(
            prompt,
            crate::image::images(cells.image, column, at)
                .map_err(|e| format!("{e} (hf-text-only sends the text alone)"))?,
        ),
        None => prompt,
    };
    if fixed_output {
        return Ok(Some(Row {
            prompt,
            output: Output::Default,
        }));
    }
    let output = if let Some(n) = output_len(&cells.output_len, &mapping.output_len, at)? {
        Output::Tokens(n)
    } else if let Some(reply) = reference(cells.output, &mapping.output, at)? {
        Output::Reference(reply)
    } else if let Some(reply) = trailing.filter(|r| !r.trim().is_empty()) {
        Output::Reference(reply)
    } else {
        Output::Default
    };
    Ok(Some(Row { prompt, output }))
}
