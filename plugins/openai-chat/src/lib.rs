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
