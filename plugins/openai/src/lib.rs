//! OpenAI completions API (POST /v1/completions), streaming with usage.

use llmb_plugin_sdk::openai::{Api, Flavor, MaxTokensField, OpenAiAdapter};

pub struct OpenAiCompletions;

impl Flavor for OpenAiCompletions {
    const NAME: &'static str = "openai";
    const DESCRIPTION: &'static str =
        "OpenAI completions API (POST /v1/completions), streaming with usage.";
    const API: Api = Api::Completions;
    const DEFAULT_ENDPOINT: &'static str = "/v1/completions";
    const DEFAULT_MAX_TOKENS_FIELD: MaxTokensField = MaxTokensField::MaxTokens;
    const REPETITION_PENALTY_ONE: bool = false;
}

pub type Adapter = OpenAiAdapter<OpenAiCompletions>;

#[cfg(target_arch = "wasm32")]
llmb_plugin_sdk::export_backend!(Adapter);
