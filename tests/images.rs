//! Image prompts end to end: the `random-mm` and `images` datasets through the adapters that
//! take images (OpenAI chat, Responses, Anthropic) to the simulator, which decodes every image
//! and counts it (one token per 28×28 patch) into the usage it reports; adapters that take no
//! images fail each request with the reason.

mod common;

use std::io::{Read, Write};
use std::path::Path;

use common::*;
use llmb_sim::{SimConfig, SimHandle};

async fn start_sim(config: SimConfig) -> SimHandle {
    llmb_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A counter of the simulator's `/metrics`.
fn sim_counter(sim: &SimHandle, name: &str) -> f64 {
    let mut s = std::net::TcpStream::connect(sim.addr()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: sim\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .split_whitespace()
                .last()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

fn fast_sim() -> SimConfig {
    SimConfig {
        ttft_ms: 2.0,
        itl_ms: 1.0,
        ..SimConfig::default()
    }
}

/// `random-mm` with `images` images of 448×448 (256 patches each) per request, against `sim`.
fn random_mm_args(
    dir: &Path,
    sim: &SimHandle,
    backend: &str,
    images: u32,
) -> llmb::args::BenchArgs {
    let mut args = quick_args(dir);
    args.base_url = Some(sim.base_url());
    args.model = Some("llmb-sim".into());
    args.no_preflight = true;
    args.backend = backend.into();
    args.dataset_name = "random-mm".into();
    args.num_prompts = 6;
    // Input lengths as the dataset counted them (its text only), so the server's extra count
    // is the images and the chat template.
    args.no_server_tokenize = true;
    args.vllm.random_mm_bucket_config = Some("{(448, 448, 1): 1.0}".into());
    args.vllm.random_mm_base_items_per_request = Some(images);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_mm_images_reach_the_server_through_every_image_adapter() {
    for backend in ["openai-chat", "openai-responses", "anthropic"] {
        let sim = start_sim(fast_sim()).await;
        let dir = tempfile::tempdir().unwrap();
        let outcome = bench(&random_mm_args(dir.path(), &sim, backend, 2)).await;
        let errors: Vec<_> = outcome.records.iter().map(|r| &r.error).collect();
        assert_eq!(outcome.metrics.completed, 6, "{backend}: {errors:?}");
        // The host counts the images it sent, for the report's image throughput.
        assert_eq!(outcome.metrics.total_input_images, 12, "{backend}");
        let mut extra = Vec::new();
        for r in &outcome.records {
            assert_eq!(r.input_images, 2, "{backend}");
            let server = r.server_prompt_tokens.expect("usage has prompt tokens");
            // Two images of 16×16 patches each, plus the dialect's template tokens.
            extra.push(server - r.prompt_tokens);
        }
        let template = extra[0] - 512;
        assert!(
            extra.iter().all(|&e| e == 512 + template) && template < 32,
            "{backend}: server counted {extra:?} beyond the text"
        );
        assert_eq!(
            sim_counter(&sim, "llmb_sim:images_received_total"),
            12.0,
            "{backend}"
        );
        sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_mm_is_reproducible_and_varies_the_image_count() {
    let sim = start_sim(fast_sim()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = random_mm_args(dir.path(), &sim, "openai-chat", 2);
    // 1, 2 or 3 images per request; the limit caps them at 2.
    args.vllm.random_mm_num_mm_items_range_ratio = Some(0.5);
    args.vllm.random_mm_limit_mm_per_prompt = Some(r#"{"image": 2}"#.into());
    args.num_prompts = 12;
    let first = bench(&args).await;
    assert_eq!(first.metrics.completed, 12);
    // Images per request, in request order (records are kept as requests end).
    let images = |o: &llmb_engine::outcome::BenchOutcome| -> Vec<u32> {
        let mut by_id: Vec<_> = o.records.iter().collect();
        by_id.sort_by_key(|r| r.id);
        by_id
            .iter()
            .map(|r| (r.server_prompt_tokens.unwrap() - r.prompt_tokens) / 256)
            .collect()
    };
    let counts = images(&first);
    assert!(counts.iter().all(|&n| (1..=2).contains(&n)), "{counts:?}");
    assert!(counts.contains(&1) && counts.contains(&2), "{counts:?}");
    let again = bench(&args).await;
    assert_eq!(images(&again), counts, "same seed, same images");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_without_images_and_over_limit_requests_fail_with_the_reason() {
    // A completions adapter has nowhere to put an image: each request fails, saying so.
    let sim = start_sim(fast_sim()).await;
    let dir = tempfile::tempdir().unwrap();
    let outcome = bench(&random_mm_args(dir.path(), &sim, "vllm", 1)).await;
    assert_eq!(outcome.metrics.completed, 0);
    assert_eq!(outcome.records.len(), 6);
    for r in &outcome.records {
        let e = r.error.as_ref().expect("failed");
        assert!(e.message.contains("the dataset produced images"), "{e:?}");
    }
    assert_eq!(sim_counter(&sim, "llmb_sim:images_received_total"), 0.0);
    sim.shutdown().await;

    // A server that takes at most one image per prompt refuses two, with its own message.
    let sim = start_sim(SimConfig {
        max_images_per_prompt: Some(1),
        ..fast_sim()
    })
    .await;
    let outcome = bench(&random_mm_args(dir.path(), &sim, "openai-chat", 2)).await;
    assert_eq!(outcome.metrics.completed, 0);
    for r in &outcome.records {
        let e = r.error.as_ref().expect("failed");
        assert!(e.message.contains("At most 1 image(s)"), "{e:?}");
        assert_eq!(e.http_status, Some(400), "{e:?}");
    }
    sim.shutdown().await;
}

/// A JPEG of `width`×`height` pixels, as a user's image folder holds them.
fn write_jpeg(path: &Path, width: u16, height: u16) {
    let pixels: Vec<u8> = (0..width as usize * height as usize * 3)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    jpeg_encoder::Encoder::new_file(path, 85)
        .unwrap()
        .encode(&pixels, width, height, jpeg_encoder::ColorType::Rgb)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_folder_and_an_image_list_are_sent_as_they_are() {
    let sim = start_sim(fast_sim()).await;
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("photos");
    std::fs::create_dir(&images).unwrap();
    // 1×1, 2×1 and 16×16 patches.
    write_jpeg(&images.join("a.jpg"), 28, 28);
    write_jpeg(&images.join("b.jpg"), 56, 20);
    write_jpeg(&images.join("c.jpg"), 448, 448);

    let mut args = quick_args(dir.path());
    args.base_url = Some(sim.base_url());
    args.model = Some("llmb-sim".into());
    args.no_preflight = true;
    args.no_server_tokenize = true;
    args.backend = "openai-chat".into();
    args.dataset_name = "images".into();
    args.dataset_path = Some(images.clone());
    args.num_prompts = 3;
    let outcome = bench(&args).await;
    let errors: Vec<_> = outcome.records.iter().map(|r| &r.error).collect();
    assert_eq!(outcome.metrics.completed, 3, "{errors:?}");
    let mut patches: Vec<u32> = outcome
        .records
        .iter()
        .map(|r| r.server_prompt_tokens.unwrap() - r.prompt_tokens)
        .collect();
    patches.sort();
    let template = patches[0] - 1;
    assert!(template < 32, "server counted {patches:?} beyond the text");
    assert_eq!(
        patches,
        vec![1 + template, 2 + template, 256 + template],
        "one image each, sized as the files are"
    );

    // A list naming files beside it (granted to the reader with the list) and a remote URL,
    // which the simulator counts as 512×512 (19×19 patches) without fetching it.
    let list = images.join("list.jsonl");
    std::fs::write(
        &list,
        concat!(
            r#"{"prompt": "what is this?", "images": ["a.jpg", "c.jpg"], "output_tokens": 5}"#,
            "\n",
            r#"{"prompt": "and this?", "image_url": "https://example.com/cat.jpg"}"#,
            "\n"
        ),
    )
    .unwrap();
    args.dataset_path = Some(list);
    args.num_prompts = 2;
    args.disable_shuffle = true;
    let outcome = bench(&args).await;
    let errors: Vec<_> = outcome.records.iter().map(|r| &r.error).collect();
    assert_eq!(outcome.metrics.completed, 2, "{errors:?}");
    let by_sample = |i: u64| {
        outcome
            .records
            .iter()
            .find(|r| r.sample == i)
            .unwrap_or_else(|| panic!("sample {i}"))
    };
    let two = by_sample(0);
    assert_eq!(
        two.server_prompt_tokens.unwrap() - two.prompt_tokens,
        257 + template
    );
    assert_eq!(two.requested_output_tokens, 5);
    let remote = by_sample(1);
    assert_eq!(
        remote.server_prompt_tokens.unwrap() - remote.prompt_tokens,
        361 + template
    );

    // A missing file is named with its line before anything is sent.
    std::fs::write(
        images.join("bad.jsonl"),
        "{\"prompt\": \"x\", \"image\": \"a.jpg\"}\n{\"prompt\": \"y\", \"image\": \"nope.jpg\"}\n",
    )
    .unwrap();
    args.dataset_path = Some(images.join("bad.jsonl"));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let err = llmb::bench::run(&args, rx)
        .await
        .err()
        .expect("missing file");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("bad.jsonl:2") && msg.contains("nope.jpg"),
        "{msg}"
    );
    sim.shutdown().await;
}
