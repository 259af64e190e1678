//! OpenAI chat completions API (POST /v1/chat/completions), streaming with usage; role-only first chunk counts for TTFT as in vLLM.

use llmb_plugin_sdk::openai::{Api, Flavor, MaxTokensField, OpenAiAdapter};

pub struct OpenAiChat;

impl Flavor for OpenAiChat {
    const NAME: &'static str = "openai-chat";
    const DESCRIPTION: &'static str = "OpenAI chat completions API (POST /v1/chat/completions), streaming with usage; role-only first chunk counts for TTFT as in vLLM.";
    const API: Api = Api::Chat;
    const DEFAULT_ENDPOINT: &'static str = "/v1/chat/completions";
    const DEFAULT_MAX_TOKENS_FIELD: MaxTokensField = MaxTokensField::MaxCompletionTokens;
    const REPETITION_PENALTY_ONE: bool = false;
}

pub type Adapter = OpenAiAdapter<OpenAiChat>;

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);
// The same source as a trusted native library (`llmb --allow-native`), which `llmb selfbench
// --native-plugin` measures against the WASM build.
#[cfg(not(target_arch = "wasm32"))]
llmb_plugin_sdk::export_backend_native!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;

    /// A vLLM `/v1/chat/completions` stream with usage, and the other bodies a server sends.
    const STREAM: &[u8] = b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Paris\",\"reasoning_content\":\"hm\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":null}\n\ndata: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"total_tokens\":9,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
    const BODY: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Paris","reasoning_content":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"total_tokens":9,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":4}}}"#;
    const ERROR: &[u8] = br#"{"object":"error","message":"This model's maximum context length is 8 tokens","type":"BadRequestError","param":null,"code":400}"#;
    const IN_STREAM_ERROR: &[u8] = b"data: {\"error\":{\"message\":\"boom\",\"type\":\"InternalServerError\",\"code\":500}}\n\ndata: [DONE]\n\n";
    const TOKENIZE: &[u8] = br#"{"count":3,"max_model_len":8,"tokens":[1,2,3]}"#;

    /// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
    #[test]
    fn fuzz() {
        llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
            STREAM,
            BODY,
            ERROR,
            IN_STREAM_ERROR,
            TOKENIZE,
        ]);
    }
}
