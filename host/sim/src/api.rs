//! The dialects a route speaks: [`Api`], and the ids and object names each one's responses use.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Api {
    Completions,
    Chat,
    /// TGI `/generate_stream`: `data:` without a space, one event per token, no `[DONE]`.
    TgiStream,
    /// TGI `/generate`: one JSON body.
    TgiGenerate,
    /// llama.cpp `/completion`: a final `stop: true` event, no `[DONE]`.
    LlamaCpp,
    /// SGLang `/generate`: cumulative text, then `[DONE]`.
    Sglang,
    /// LightLLM `/generate_stream`: `data:` without a space, `finished: true` ends it.
    LightLlm,
    /// LMDeploy `/generate` (a `prompt` body): delta text, then `[DONE]`.
    Lmdeploy,
    /// Triton's generate extension (TensorRT-LLM): `text_output` deltas, no end marker.
    Trtllm,
    /// OpenAI `/v1/responses`: named events, `response.completed` ends it.
    Responses,
    /// DeepSpeed-MII: `/generate` streams `{"text": [delta]}` then `[DONE]`;
    /// `/mii/<deployment>` answers with one JSON array.
    Mii,
    /// SenseTime's serving API (`/v1/llm/chat-completions`): `data:{"data":{...}}`, `data:[DONE]`.
    Amsv2,
    /// OpenPPL's gRPC `LLMService/Generation`: one protobuf message per token, then trailers.
    Ppl,
    /// `/v1/audio/transcriptions` (multipart in), vLLM's `transcription.chunk` stream out.
    Transcription,
    /// Anthropic Messages `/v1/messages`: named events from `message_start` to `message_stop`.
    Anthropic,
}

impl Api {
    pub(crate) fn id_prefix(self) -> &'static str {
        match self {
            Api::Completions => "cmpl",
            Api::Chat => "chatcmpl",
            Api::Transcription => "trsc",
            Api::Anthropic => "msg",
            _ => "gen",
        }
    }

    pub(crate) fn chunk_object(self) -> &'static str {
        match self {
            Api::Chat => "chat.completion.chunk",
            Api::Transcription => "transcription.chunk",
            _ => "text_completion",
        }
    }

    pub(crate) fn object(self) -> &'static str {
        match self {
            Api::Chat => "chat.completion",
            _ => "text_completion",
        }
    }

    /// The dialect streams reasoning apart from the answer (`--sim-reasoning-tokens`).
    pub(crate) fn has_reasoning_channel(self) -> bool {
        matches!(self, Api::Chat | Api::Responses | Api::Anthropic)
    }

    pub(crate) fn is_openai(self) -> bool {
        matches!(
            self,
            Api::Completions | Api::Chat | Api::Responses | Api::Transcription
        )
    }
}
