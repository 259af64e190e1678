//! The multipart/form-data request: the [`Multipart`] body builder, the upload's content type,
//! the boundary, the text fields and [`build`], which puts one clip's request together.

use llmb_plugin_sdk::backend::{GenRequest, HttpRequest, Prompt};
use llmb_plugin_sdk::backend_bindings::llmb::plugin::types::AudioClip;
use serde_json::Value;

use crate::{NEEDS_AUDIO, PATH};

/// The upload's content type, from the file name's extension: some servers decode by it.
pub fn content_type(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "ogg" => "audio/ogg",
        "m4a" => "audio/mp4",
        _ => "application/octet-stream",
    }
}

/// A multipart/form-data body under construction (RFC 7578), with CRLF line ends as the format
/// requires. The boundary is fixed by the caller so a request is a pure function of its input.
pub struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Multipart {
    /// Starts a body delimited by `boundary`, which must not occur in any part.
    pub fn new(boundary: String) -> Self {
        Self {
            boundary,
            body: Vec::new(),
        }
    }

    /// The request's `Content-Type` header value, which carries the boundary.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    fn head(&mut self, name: &str) {
        self.body.extend_from_slice(b"--");
        self.body.extend_from_slice(self.boundary.as_bytes());
        self.body
            .extend_from_slice(b"\r\nContent-Disposition: form-data; name=\"");
        self.body.extend_from_slice(quote(name).as_bytes());
        self.body.push(b'"');
    }

    /// Appends a text field.
    pub fn text(&mut self, name: &str, value: &str) {
        self.head(name);
        self.body.extend_from_slice(b"\r\n\r\n");
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
    }

    /// Appends a file part with its name and content type.
    pub fn file(&mut self, name: &str, filename: &str, content_type: &str, data: &[u8]) {
        self.head(name);
        self.body.extend_from_slice(b"; filename=\"");
        self.body.extend_from_slice(quote(filename).as_bytes());
        self.body.extend_from_slice(b"\"\r\nContent-Type: ");
        self.body.extend_from_slice(content_type.as_bytes());
        self.body.extend_from_slice(b"\r\n\r\n");
        self.body.extend_from_slice(data);
        self.body.extend_from_slice(b"\r\n");
    }

    /// Closes the body with the final delimiter.
    pub fn finish(mut self) -> Vec<u8> {
        self.body.extend_from_slice(b"--");
        self.body.extend_from_slice(self.boundary.as_bytes());
        self.body.extend_from_slice(b"--\r\n");
        self.body
    }
}

/// Escapes a name for a quoted Content-Disposition parameter the way browsers do (WHATWG), so a
/// quote or line break in a file name cannot break the part header.
fn quote(s: &str) -> String {
    s.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A boundary derived from the request id; extended until no part contains it, so arbitrary
/// audio bytes can never end a part early.
fn boundary(id: u64, parts: &[&[u8]]) -> String {
    let base = format!("llmb-form-boundary-{id:016x}");
    let mut candidate = base.clone();
    let mut n = 0u32;
    while parts.iter().any(|p| {
        p.windows(candidate.len())
            .any(|w| w == candidate.as_bytes())
    }) {
        n += 1;
        candidate = format!("{base}-{n}");
    }
    candidate
}

/// The text fields in send order; `--extra-body` keys replace same-named fields in place (last
/// wins, no duplicates) and a `null` value removes a field.
fn fields(req: &GenRequest, vllm_extras: bool) -> Result<Vec<(String, String)>, String> {
    let mut fields: Vec<(String, String)> = vec![
        ("model".into(), req.model.clone()),
        ("stream".into(), req.streaming.to_string()),
        ("response_format".into(), "json".into()),
    ];
    if let Some(t) = req.temperature {
        fields.push(("temperature".into(), t.to_string()));
    }
    if vllm_extras {
        fields.push(("max_completion_tokens".into(), req.max_tokens.to_string()));
        if req.streaming && req.include_usage {
            fields.push(("stream_include_usage".into(), "true".into()));
        }
    }
    let Some(extra) = req.extra_body.as_deref() else {
        return Ok(fields);
    };
    let extra: Value =
        serde_json::from_str(extra).map_err(|e| format!("--extra-body is not valid JSON: {e}"))?;
    let Value::Object(extra) = extra else {
        return Err("--extra-body must be a JSON object".into());
    };
    for (key, value) in extra {
        if key == "file" {
            return Err(
                "--extra-body cannot set \"file\": the audio comes from the dataset".into(),
            );
        }
        let value = match value {
            Value::Null => {
                fields.retain(|(k, _)| *k != key);
                continue;
            }
            Value::String(s) => s,
            other => other.to_string(),
        };
        match fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => fields.push((key, value)),
        }
    }
    Ok(fields)
}

/// The whole request for one clip: a pure function of the request and the `vllm-extras` choice.
pub fn build(req: &GenRequest, vllm_extras: bool) -> Result<HttpRequest, String> {
    let clip: &AudioClip = match &req.prompt {
        Prompt::Audio(clip) => clip,
        Prompt::Text(_) | Prompt::Chat(_) | Prompt::Multimodal(_) => {
            return Err(NEEDS_AUDIO.into());
        }
    };
    let fields = fields(req, vllm_extras)?;
    let mut parts: Vec<&[u8]> = vec![&clip.data, clip.filename.as_bytes()];
    for (k, v) in &fields {
        parts.push(k.as_bytes());
        parts.push(v.as_bytes());
    }
    let mut form = Multipart::new(boundary(req.id, &parts));
    form.file(
        "file",
        &clip.filename,
        content_type(&clip.filename),
        &clip.data,
    );
    for (k, v) in &fields {
        form.text(k, v);
    }
    Ok(HttpRequest {
        method: "POST".into(),
        path: PATH.into(),
        headers: vec![("content-type".into(), form.content_type())],
        body: form.finish(),
    })
}
