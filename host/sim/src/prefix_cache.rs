//! Automatic prefix caching as vLLM does it: prompts are hashed in chained blocks of
//! [`PREFIX_BLOCK_TOKENS`] tokens, and a request is charged prefill only past the longest prefix
//! of blocks served before.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::PoisonError;
use std::sync::atomic::Ordering::Relaxed;

use crate::state::SimState;

/// Prompt tokens per prefix-cache block, vLLM's default block size.
const PREFIX_BLOCK_TOKENS: u32 = 16;
/// Blocks the prefix cache remembers before it starts over (about 16 M prompt tokens).
const PREFIX_CACHE_BLOCKS: usize = 1 << 20;

/// vLLM-style block hashes: one per whole block of [`PREFIX_BLOCK_TOKENS`] tokens, each covering
/// its block and (through the previous hash) everything before it, so equal hashes mean equal
/// prefixes.
pub(crate) fn block_hashes<T: Hash>(tokens: impl Iterator<Item = T>) -> Vec<u64> {
    let mut hashes = Vec::new();
    let mut hasher = DefaultHasher::new();
    let mut in_block = 0;
    for token in tokens {
        token.hash(&mut hasher);
        in_block += 1;
        if in_block == PREFIX_BLOCK_TOKENS {
            let hash = hasher.finish();
            hashes.push(hash);
            hasher = DefaultHasher::new();
            hash.hash(&mut hasher);
            in_block = 0;
        }
    }
    hashes
}

impl SimState {
    /// Prompt tokens served from the prefix cache, then remembers every block of this prompt.
    ///
    /// As in vLLM, the hit never covers the last prompt token (its logits must be computed), so
    /// a repeated prompt of exactly k blocks hits k − 1 of them.
    pub(crate) fn prefix_lookup(&self, blocks: &[u64], prompt_tokens: u32) -> u32 {
        let usable = (prompt_tokens.saturating_sub(1) / PREFIX_BLOCK_TOKENS) as usize;
        let mut cache = self
            .prefix_blocks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let hit = blocks[..usable.min(blocks.len())]
            .iter()
            .take_while(|h| cache.contains(h))
            .count();
        if cache.len() + blocks.len() > PREFIX_CACHE_BLOCKS {
            cache.clear();
        }
        cache.extend(blocks);
        drop(cache);
        let cached = hit as u32 * PREFIX_BLOCK_TOKENS;
        self.prefix_queries
            .fetch_add(u64::from(prompt_tokens), Relaxed);
        self.prefix_hits.fetch_add(u64::from(cached), Relaxed);
        cached
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use llmb_engine::tokenizer::word_for;
    use serde_json::Value;

    use super::block_hashes;
    use crate::config::SimConfig;
    use crate::testutil::*;

    #[tokio::test]
    async fn prefix_cache_skips_prefill_of_served_prefixes() {
        let sim = sim(SimConfig {
            prefill_us_per_token: 500.0,
            prefix_cache: true,
            ..fast()
        })
        .await;
        let words: Vec<&str> = (0..400).map(word_for).collect();
        let prompt = words.join(" ");
        let body = |stream: bool| {
            format!(
                r#"{{"prompt":"{prompt}","max_tokens":1,"ignore_eos":true,"stream":{stream},"stream_options":{{"include_usage":true}}}}"#
            )
        };
        let t0 = std::time::Instant::now();
        let first = post(&sim, "/v1/completions", &body(false)).await;
        let cold = t0.elapsed();
        let v: Value = serde_json::from_str(&first.body).unwrap();
        assert_eq!(v["usage"]["prompt_tokens"], 400);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

        let t0 = std::time::Instant::now();
        let second = post(&sim, "/v1/completions", &body(true)).await;
        let warm = t0.elapsed();
        // 400 tokens at 500 µs is 200 ms of prefill; 384 cached tokens leave 8 ms.
        assert!(cold >= Duration::from_millis(200), "{cold:?}");
        assert!(
            warm < Duration::from_millis(100),
            "cold {cold:?}, warm {warm:?}"
        );
        let usage = event_json(&second.chunks[1]);
        assert_eq!(
            usage["usage"],
            serde_json::json!({"prompt_tokens":400,"total_tokens":401,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":384}})
        );

        // The same words as a chat message start with the template's tokens: no shared blocks
        // with the raw prompt, but the next identical chat request hits.
        let chat =
            format!(r#"{{"messages":[{{"role":"user","content":"{prompt}"}}],"max_tokens":1}}"#);
        let v: Value =
            serde_json::from_str(&post(&sim, "/v1/chat/completions", &chat).await.body).unwrap();
        assert_eq!(v["usage"]["prompt_tokens"], 408);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        let v: Value =
            serde_json::from_str(&post(&sim, "/v1/chat/completions", &chat).await.body).unwrap();
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 400);
        let half = format!("{} zzz", words[..200].join(" "));
        let v: Value = serde_json::from_str(
            &post(
                &sim,
                "/v1/completions",
                &format!(r#"{{"prompt":"{half}","max_tokens":1}}"#),
            )
            .await
            .body,
        )
        .unwrap();
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 192);

        let metrics = get(&sim, "/metrics").await.body;
        assert!(
            metrics.contains("vllm:prefix_cache_queries_total{model_name=\"llmb-sim\"} 1817\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("vllm:prefix_cache_hits_total{model_name=\"llmb-sim\"} 976\n"),
            "{metrics}"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn prefix_cache_is_off_by_default() {
        let sim = sim(SimConfig {
            prefill_us_per_token: 1.0,
            ..fast()
        })
        .await;
        let prompt: Vec<&str> = (0..40).map(word_for).collect();
        let body = format!(
            r#"{{"prompt":"{}","max_tokens":1,"ignore_eos":true}}"#,
            prompt.join(" ")
        );
        for _ in 0..2 {
            let v: Value =
                serde_json::from_str(&post(&sim, "/v1/completions", &body).await.body).unwrap();
            assert!(v["usage"]["prompt_tokens_details"].is_null(), "{v}");
        }
        let metrics = get(&sim, "/metrics").await.body;
        assert!(
            metrics.contains("vllm:prefix_cache_hits_total{model_name=\"llmb-sim\"} 0\n"),
            "{metrics}"
        );
        sim.shutdown().await;
    }

    #[test]
    fn block_hashes_chain_whole_blocks() {
        let words: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
        let all = block_hashes(words.iter());
        assert_eq!(all.len(), 2);
        assert_eq!(block_hashes(words[..35].iter()), all);
        assert_eq!(block_hashes(words[..31].iter()), all[..1]);
        let mut changed = words.clone();
        changed[0] = "other".into();
        let other = block_hashes(changed.iter());
        // A different first block changes every later hash too.
        assert!(other[0] != all[0] && other[1] != all[1]);
    }
}
