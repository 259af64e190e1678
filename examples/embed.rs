//! A benchmark run through llmb's engine from a program of your own, with no command line:
//! a simulated server on 127.0.0.1, 24 requests from the `random` reader, at most 4 in
//! flight, then two of the metrics `llmb bench` reports.
//!
//! ```sh
//! cargo run --example embed
//! ```
//!
//! Against a real server, drop the simulator and give its URL to `RunConfig::new` (and
//! `config.server.model` when `/v1/models` lists more than one model).

use llmb_engine::config::RunConfig;
use llmb_engine::lifecycle::Cancel;
use llmb_engine::plan::Stage;
use llmb_engine::plugin::DatasetRequest;
use llmb_engine::session::{self, Quiet};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = llmb_sim::start(
        llmb_sim::SimConfig {
            ttft_ms: 20.0,
            itl_ms: 2.0,
            ..llmb_sim::SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;

    let requests = 24;
    let mut config = RunConfig::new(server.base_url(), "openai-chat", requests);
    config.dataset.source = llmb_engine::config::DatasetSource::Reader(DatasetRequest {
        seed: 7,
        count: requests as u64,
        options: vec![
            ("random-input-len".into(), "64".into()),
            ("random-output-len".into(), "16".into()),
        ],
        file: None,
    });
    config.request.ignore_eos = true;
    config.request.streaming = true;
    config.load.stages = vec![Stage::single(f64::INFINITY, Some(4), requests)];

    // `Quiet` keeps each stage in memory; an observer of your own could save or print it.
    let sweep = session::run(&config, Cancel::new(), &mut Quiet).await?;
    server.shutdown().await;

    let metrics = &sweep.stages[0].metrics;
    println!("completed requests: {}", metrics.completed);
    println!("mean TTFT (ms): {:.2}", metrics.ttft.mean);
    Ok(())
}
