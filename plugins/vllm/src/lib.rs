//! vLLM completions (POST /v1/completions) with vLLM extras: ignore_eos, repetition_penalty=1.0, as vllm bench serve sends.

use llmb_plugin_sdk::openai::{Api, Flavor, MaxTokensField, OpenAiAdapter};

pub struct Vllm;

impl Flavor for Vllm {
    const NAME: &'static str = "vllm";
    const DESCRIPTION: &'static str = "vLLM completions (POST /v1/completions) with vLLM extras: ignore_eos, repetition_penalty=1.0, as vllm bench serve sends.";
    const API: Api = Api::Completions;
    const DEFAULT_ENDPOINT: &'static str = "/v1/completions";
    const DEFAULT_MAX_TOKENS_FIELD: MaxTokensField = MaxTokensField::MaxTokens;
    const REPETITION_PENALTY_ONE: bool = true;
}

pub type Adapter = OpenAiAdapter<Vllm>;

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);

#[cfg(test)]
mod tests {
    use super::*;

    /// A vLLM `/v1/completions` stream with usage, and the other bodies a server sends.
    const STREAM: &[u8] = b"data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\" Paris\",\"logprobs\":null,\"finish_reason\":null,\"stop_reason\":null}],\"usage\":null}\n\ndata: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\",\",\"logprobs\":null,\"finish_reason\":\"length\",\"stop_reason\":null}],\"usage\":null}\n\ndata: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"total_tokens\":10,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\ndata: [DONE]\n\n";
    const BODY: &[u8] = br#"{"id":"cmpl-1","object":"text_completion","model":"m","choices":[{"index":0,"text":" Paris,","logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":8,"total_tokens":10,"completion_tokens":2}}"#;
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
