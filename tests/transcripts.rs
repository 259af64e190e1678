//! Real llama.cpp responses, recorded with `LLMB_RECORD_TRANSCRIPTS=DIR` (see
//! tests/fixtures/transcripts/README.md), replayed over a local socket read by read, with the
//! server's own headers and read boundaries, through the host framing and each adapter. Guards in
//! CI what only the real server showed: its role and finish chunks, its usage chunk, its
//! non-streaming bodies, its native `/completion` events.

mod common;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use llmb_engine::transport::transcript::Transcript;
use serde_json::Value;

/// Recorded exchanges of one backend and mode: `tests/fixtures/transcripts/<server>/<backend>[-nostream]/`.
struct Fixture {
    backend: String,
    streaming: bool,
    transcripts: Vec<Transcript>,
}

fn fixtures() -> Vec<Fixture> {
    let root = workspace_root().join("tests/fixtures/transcripts/llamacpp");
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (backend, streaming) = match name.strip_suffix("-nostream") {
            Some(b) => (b.to_string(), false),
            None => (name.clone(), true),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let transcripts: Vec<Transcript> = files
            .iter()
            .map(|f| {
                serde_json::from_slice(&std::fs::read(f).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            })
            .filter(|t: &Transcript| t.status == 200 && !t.path.contains("tokenize"))
            .collect();
        assert!(!transcripts.is_empty(), "{}: no transcripts", dir.display());
        out.push(Fixture {
            backend,
            streaming,
            transcripts,
        });
    }
    out
}

/// Serves the transcripts in turn: the recorded status and headers, then each recorded read
/// as its own write, 2 ms apart, so the client sees the server's boundaries.
async fn replay_server(transcripts: Arc<Vec<Transcript>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let transcripts = transcripts.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let transcripts = transcripts.clone();
                    let next = next.clone();
                    async move {
                        let generation = transcripts.iter().any(|t| t.path == req.uri().path());
                        if !generation {
                            let mut r = hyper::Response::new(
                                StreamBody::new(futures_util::stream::iter(Vec::<
                                    Result<Frame<Bytes>, Infallible>,
                                >::new(
                                )))
                                .boxed(),
                            );
                            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                            return Ok::<_, Infallible>(r);
                        }
                        let t = transcripts
                            [next.fetch_add(1, Ordering::Relaxed) % transcripts.len()]
                        .clone();
                        let reads = t.reads.clone();
                        let body = futures_util::stream::unfold(
                            (reads.into_iter(), true),
                            |(mut it, first)| async move {
                                let read = it.next()?;
                                if !first {
                                    tokio::time::sleep(Duration::from_millis(2)).await;
                                }
                                Some((
                                    Ok::<_, Infallible>(Frame::data(Bytes::from(read))),
                                    (it, false),
                                ))
                            },
                        );
                        let mut r = hyper::Response::new(StreamBody::new(body).boxed());
                        *r.status_mut() = hyper::StatusCode::from_u16(t.status).unwrap();
                        for (k, v) in &t.headers {
                            let k = k.to_ascii_lowercase();
                            if [
                                "content-length",
                                "transfer-encoding",
                                "connection",
                                "keep-alive",
                            ]
                            .contains(&k.as_str())
                            {
                                continue;
                            }
                            r.headers_mut().append(
                                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                hyper::header::HeaderValue::from_str(v).unwrap(),
                            );
                        }
                        Ok(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// The text a transcript carries, read independently of llmb's adapters: every SSE `data:`
/// event's (or the whole body's) `choices[0].delta.content`, `choices[0].text`,
/// `choices[0].message.content` or llama.cpp's `content`.
fn expected_text(t: &Transcript) -> String {
    let body: String = t.reads.concat();
    let pick = |v: &Value| -> String {
        let c = &v["choices"][0];
        [
            &c["delta"]["content"],
            &c["text"],
            &c["message"]["content"],
            &v["content"],
        ]
        .iter()
        .find_map(|x| x.as_str())
        .unwrap_or("")
        .to_string()
    };
    if body.trim_start().starts_with('{') {
        return pick(&serde_json::from_str(&body).unwrap());
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .filter(|d| d.trim() != "[DONE]")
        .map(|d| pick(&serde_json::from_str(d.trim()).unwrap()))
        .collect()
}

/// `usage.completion_tokens` or llama.cpp's `tokens_predicted`, wherever the transcript has it.
fn expected_tokens(t: &Transcript) -> Option<u32> {
    let body: String = t.reads.concat();
    let docs: Vec<Value> = if body.trim_start().starts_with('{') {
        vec![serde_json::from_str(&body).unwrap()]
    } else {
        body.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| d.trim() != "[DONE]")
            .map(|d| serde_json::from_str(d.trim()).unwrap())
            .collect()
    };
    docs.iter().rev().find_map(|v| {
        v["usage"]["completion_tokens"]
            .as_u64()
            .or(v["timings"]["predicted_n"].as_u64())
            .or(v["tokens_predicted"].as_u64())
            .map(|n| n as u32)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_llama_cpp_responses_replay_through_every_adapter() {
    let fixtures = fixtures();
    assert!(
        fixtures.len() >= 4,
        "expected streaming and non-streaming transcripts"
    );
    for fx in fixtures {
        let n = fx.transcripts.len();
        let transcripts = Arc::new(fx.transcripts);
        let url = replay_server(transcripts.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let mut args = quick_args(dir.path());
        args.base_url = Some(url);
        args.model = Some("smollm2".into());
        args.backend = fx.backend.clone();
        args.no_stream = !fx.streaming;
        args.num_prompts = n;
        args.max_concurrency = Some(1);
        args.no_preflight = true;
        args.no_server_tokenize = true;
        args.save_detailed = true;
        let outcome = bench(&args).await;
        let what = format!("{} streaming={}", fx.backend, fx.streaming);
        assert_eq!(
            outcome.metrics.failed,
            0,
            "{what}: {:?}",
            outcome
                .records
                .iter()
                .find(|r| !r.success)
                .map(|r| &r.error)
        );
        assert_eq!(outcome.metrics.completed, n, "{what}");
        // With one request in flight, request k got transcript k.
        let mut records = outcome.records.clone();
        records.sort_by_key(|r| r.sent_ns);
        for (r, t) in records.iter().zip(transcripts.iter()) {
            assert_eq!(r.generated_text, expected_text(t), "{what}: {r:?}");
            if let Some(tokens) = expected_tokens(t) {
                assert_eq!(r.output_tokens, tokens, "{what}: {r:?}");
            }
            if fx.streaming {
                assert!(r.ttft_s().is_some(), "{what}");
            }
        }
    }
}
