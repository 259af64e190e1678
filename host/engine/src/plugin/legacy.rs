//! Components built for an earlier major version of the WIT package (`llmb:plugin@1.0.0`).
//!
//! A component's types must match the host's exactly, so a 1.0 adapter cannot be called through
//! the 2.0 bindings. These are bindings of the frozen 1.0 contract
//! (`wit/legacy/1.0.0/llmb-plugin.wit`) and the conversions between its types and the current
//! ones: everything 1.0 could say converts up losslessly; a request 1.0 cannot express (an
//! image prompt) is refused with a sentence saying so, failing that request, not the run.

use super::backend::{
    BackendError, BackendInfo, ChatMessage, Completion, Delta, ErrorKind, FrameBatch, Framing,
    GenRequest, HttpRequest, Kv, Prompt, Role, StreamEvent, Usage,
};

/// Host-side bindings of the 1.0 `backend-plugin` world.
pub mod backend_v1 {
    wasmtime::component::bindgen!({
        world: "backend-plugin",
        path: "../../wit/legacy/1.0.0",
    });
}

/// Host-side bindings of the 1.0 `dataset-plugin` world.
pub mod dataset_v1 {
    wasmtime::component::bindgen!({
        world: "dataset-plugin",
        path: "../../wit/legacy/1.0.0",
    });
}

use backend_v1::exports::llmb::plugin::backend as b1;
use backend_v1::llmb::plugin::types as t1;

/// The version legacy components were built for, as the refusals name it.
const V1: &str = "llmb:plugin@1.0.0";

/// A 1.0 adapter's view of a request, or why it cannot have one.
pub fn request_to_v1(req: &GenRequest) -> Result<t1::GenRequest, String> {
    Ok(t1::GenRequest {
        id: req.id,
        model: req.model.clone(),
        prompt: prompt_to_v1(&req.prompt)?,
        max_tokens: req.max_tokens,
        ignore_eos: req.ignore_eos,
        streaming: req.streaming,
        include_usage: req.include_usage,
        temperature: req.temperature,
        extra_body: req.extra_body.clone(),
    })
}

fn prompt_to_v1(prompt: &Prompt) -> Result<t1::Prompt, String> {
    Ok(match prompt {
        Prompt::Text(text) => t1::Prompt::Text(text.clone()),
        Prompt::Chat(messages) => t1::Prompt::Chat(
            messages
                .iter()
                .map(|m| t1::ChatMessage {
                    role: role_to_v1(m.role),
                    content: m.content.clone(),
                })
                .collect(),
        ),
        Prompt::Audio(clip) => t1::Prompt::Audio(t1::AudioClip {
            data: clip.data.clone(),
            filename: clip.filename.clone(),
            reference: clip.reference.clone(),
            duration_s: clip.duration_s,
        }),
        Prompt::Multimodal(_) => {
            return Err(format!(
                "this adapter is built for {V1}, which cannot carry images; rebuild it \
                 against llmb:plugin@{} to send image prompts",
                super::WIT_VERSION
            ));
        }
    })
}

fn role_to_v1(role: Role) -> t1::Role {
    match role {
        Role::System => t1::Role::System,
        Role::User => t1::Role::User,
        Role::Assistant => t1::Role::Assistant,
        Role::Tool => t1::Role::Tool,
    }
}

pub fn kvs_to_v1(options: &[Kv]) -> Vec<t1::Kv> {
    options
        .iter()
        .map(|kv| t1::Kv {
            key: kv.key.clone(),
            value: kv.value.clone(),
        })
        .collect()
}

/// A copy of the batch in 1.0's type (the same shape): legacy adapters pay one copy per read.
pub fn batch_to_v1(batch: &FrameBatch) -> t1::FrameBatch {
    t1::FrameBatch {
        data: batch.data.clone(),
        frames: batch
            .frames
            .iter()
            .map(|f| t1::FrameSpan {
                start: f.start,
                len: f.len,
                event: f.event.clone(),
            })
            .collect(),
    }
}

pub fn info_from_v1(info: b1::BackendInfo) -> BackendInfo {
    BackendInfo {
        name: info.name,
        version: info.version,
        description: info.description,
        default_endpoint: info.default_endpoint,
        framing: match info.framing {
            t1::Framing::Sse => Framing::Sse,
            t1::Framing::Ndjson => Framing::Ndjson,
            t1::Framing::Raw => Framing::Raw,
            t1::Framing::Grpc => Framing::Grpc,
        },
        supports_ignore_eos: info.supports_ignore_eos,
        http2: info.http2,
        api_key_header: None,
    }
}

pub fn http_from_v1(req: t1::HttpRequest) -> HttpRequest {
    HttpRequest {
        method: req.method,
        path: req.path,
        headers: req.headers,
        body: req.body,
    }
}

pub fn events_from_v1(events: Vec<t1::StreamEvent>) -> Vec<StreamEvent> {
    events.into_iter().map(event_from_v1).collect()
}

fn event_from_v1(event: t1::StreamEvent) -> StreamEvent {
    match event {
        t1::StreamEvent::Delta(d) => StreamEvent::Delta(Delta {
            frame: d.frame,
            text: d.text,
            reasoning: d.reasoning,
            tokens: d.tokens,
            index: d.index,
        }),
        t1::StreamEvent::Finish(reason) => StreamEvent::Finish(reason),
        t1::StreamEvent::Usage(usage) => StreamEvent::Usage(usage_from_v1(usage)),
        t1::StreamEvent::Error(error) => StreamEvent::Error(error_from_v1(error)),
        t1::StreamEvent::Done => StreamEvent::Done,
    }
}

fn usage_from_v1(usage: t1::Usage) -> Usage {
    Usage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        cached_prompt_tokens: usage.cached_prompt_tokens,
        reasoning_tokens: None,
    }
}

pub fn error_from_v1(error: t1::BackendError) -> BackendError {
    BackendError {
        kind: match error.kind {
            t1::ErrorKind::BadRequest => ErrorKind::BadRequest,
            t1::ErrorKind::ContextLength => ErrorKind::ContextLength,
            t1::ErrorKind::Unauthorized => ErrorKind::Unauthorized,
            t1::ErrorKind::NotFound => ErrorKind::NotFound,
            t1::ErrorKind::RateLimited => ErrorKind::RateLimited,
            t1::ErrorKind::Overloaded => ErrorKind::Overloaded,
            t1::ErrorKind::Timeout => ErrorKind::Timeout,
            t1::ErrorKind::Server => ErrorKind::Server,
            t1::ErrorKind::Protocol => ErrorKind::Protocol,
            t1::ErrorKind::Unknown => ErrorKind::Unknown,
        },
        message: error.message,
        http_status: error.http_status,
        retryable: error.retryable,
    }
}

pub fn completion_from_v1(
    body: Result<t1::Completion, t1::BackendError>,
) -> Result<Completion, BackendError> {
    body.map(|c| Completion {
        text: c.text,
        reasoning: String::new(),
        finish: c.finish,
        usage: c.usage.map(usage_from_v1),
    })
    .map_err(error_from_v1)
}

/// A 1.0 dataset reader's prompt in the current type (1.0 prompts are a subset).
pub fn dataset_prompt_from_v1(prompt: dataset_v1::llmb::plugin::types::Prompt) -> Prompt {
    use dataset_v1::llmb::plugin::types as d1;
    match prompt {
        d1::Prompt::Text(text) => Prompt::Text(text),
        d1::Prompt::Chat(messages) => Prompt::Chat(
            messages
                .into_iter()
                .map(|m| ChatMessage {
                    role: match m.role {
                        d1::Role::System => Role::System,
                        d1::Role::User => Role::User,
                        d1::Role::Assistant => Role::Assistant,
                        d1::Role::Tool => Role::Tool,
                    },
                    content: m.content,
                })
                .collect(),
        ),
        d1::Prompt::Audio(a) => Prompt::Audio(super::backend::AudioClip {
            data: a.data,
            filename: a.filename,
            reference: a.reference,
            duration_s: a.duration_s,
        }),
    }
}

/// 1.0 dataset parameters (the same fields).
pub fn dataset_params_to_v1(
    params: &super::dataset::bindings::exports::llmb::plugin::dataset::DatasetParams,
) -> dataset_v1::exports::llmb::plugin::dataset::DatasetParams {
    dataset_v1::exports::llmb::plugin::dataset::DatasetParams {
        seed: params.seed,
        count: params.count,
        options: params
            .options
            .iter()
            .map(|kv| dataset_v1::llmb::plugin::types::Kv {
                key: kv.key.clone(),
                value: kv.value.clone(),
            })
            .collect(),
        files: params.files.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(prompt: Prompt) -> GenRequest {
        GenRequest {
            id: 7,
            model: "m".into(),
            prompt,
            max_tokens: 16,
            ignore_eos: true,
            streaming: true,
            include_usage: true,
            temperature: Some(0.5),
            extra_body: Some("{\"a\":1}".into()),
        }
    }

    #[test]
    fn text_and_chat_requests_reach_a_1_0_adapter_unchanged() {
        let v1 = request_to_v1(&request(Prompt::Chat(vec![ChatMessage {
            role: Role::User,
            content: "hi".into(),
        }])))
        .unwrap();
        assert_eq!(v1.id, 7);
        assert_eq!(v1.max_tokens, 16);
        assert_eq!(v1.extra_body.as_deref(), Some("{\"a\":1}"));
        match v1.prompt {
            t1::Prompt::Chat(m) => {
                assert_eq!(m.len(), 1);
                assert_eq!(m[0].content, "hi");
                assert!(matches!(m[0].role, t1::Role::User));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_image_prompt_is_refused_naming_both_versions() {
        let err = request_to_v1(&request(Prompt::Multimodal(Vec::new()))).unwrap_err();
        assert!(err.contains("llmb:plugin@1.0.0"), "{err}");
        assert!(err.contains("2.0.0"), "{err}");
    }

    #[test]
    fn usage_and_errors_convert_up_without_loss() {
        let events = events_from_v1(vec![
            t1::StreamEvent::Usage(t1::Usage {
                prompt_tokens: Some(3),
                completion_tokens: Some(4),
                cached_prompt_tokens: Some(1),
            }),
            t1::StreamEvent::Error(t1::BackendError {
                kind: t1::ErrorKind::RateLimited,
                message: "slow down".into(),
                http_status: Some(429),
                retryable: true,
            }),
        ]);
        match &events[0] {
            StreamEvent::Usage(u) => {
                assert_eq!(
                    (u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens),
                    (Some(3), Some(4), Some(1))
                );
                assert_eq!(u.reasoning_tokens, None);
            }
            other => panic!("{other:?}"),
        }
        match &events[1] {
            StreamEvent::Error(e) => {
                assert!(matches!(e.kind, ErrorKind::RateLimited));
                assert_eq!(e.http_status, Some(429));
                assert!(e.retryable);
            }
            other => panic!("{other:?}"),
        }
    }
}
