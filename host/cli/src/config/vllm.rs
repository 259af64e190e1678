//! The `vllm bench serve` flags checked and turned into what the run uses: sampling parameters
//! into every request body, `--metadata` into the result JSON.

use anyhow::Context;
use hyper::header::HeaderValue;
use serde_json::Value;

use crate::args::{BenchArgs, split_kv};

/// Fails on values the run cannot use, before anything is sent.
pub fn validate(args: &BenchArgs) -> anyhow::Result<()> {
    let vllm = &args.vllm;
    parse_metadata(&vllm.metadata)?;
    request_extra_body(args)?;
    if let Some(prefix) = &vllm.request_id_prefix {
        HeaderValue::try_from(format!("{prefix}0"))
            .ok()
            .with_context(|| format!("--request-id-prefix {prefix:?} is not usable in a header"))?;
    }
    anyhow::ensure!(
        vllm.lora_modules.iter().all(|m| !m.trim().is_empty()),
        "--lora-modules: a module name is empty"
    );
    Ok(())
}

/// What goes in every request's `extra-body`: the sampling parameters, then `--extra-body`'s
/// keys over them (vLLM: `{**sampling_params, **extra_body}`). `--extra-body` alone passes
/// through as given.
pub fn request_extra_body(args: &BenchArgs) -> anyhow::Result<Option<String>> {
    let mut body = args.vllm.sampling(&args.backend);
    if body.is_empty() {
        return Ok(args.extra_body.clone());
    }
    if let Some(extra) = &args.extra_body {
        let v: Value = serde_json::from_str(extra).context("--extra-body is not valid JSON")?;
        let Value::Object(extra) = v else {
            anyhow::bail!("--extra-body must be a JSON object");
        };
        body.extend(extra);
    }
    Ok(Some(Value::Object(body).to_string()))
}

/// `--metadata KEY=VALUE` pairs, as vLLM saves them in the result JSON.
pub fn parse_metadata(items: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|item| {
            let (k, v) = split_kv("--metadata", item)?;
            Ok((k, v.trim().to_string()))
        })
        .collect()
}
