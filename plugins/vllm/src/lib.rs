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
