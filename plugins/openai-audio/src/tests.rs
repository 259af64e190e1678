//! Tests of the `openai-audio` adapter: the multipart request and its fields, both stream
//! dialects (OpenAI and vLLM) with split invariance, errors, and whole bodies.

use super::*;
use llmb_plugin_sdk::testing::{self, Outcome};

use llmb_plugin_sdk::backend_bindings::llmb::plugin::types::AudioClip;

/// The OpenAI-service stream of openai-audio-transcriptions.md, byte for byte.
const OPENAI: &[u8] = b"data: {\"type\":\"transcript.text.delta\",\"delta\":\"The\"}\n\ndata: {\"type\":\"transcript.text.delta\",\"delta\":\" quick\"}\n\ndata: {\"type\":\"transcript.text.delta\",\"delta\":\" brown\"}\n\ndata: {\"type\":\"transcript.text.delta\",\"delta\":\" fox.\"}\n\ndata: {\"type\":\"transcript.text.done\",\"text\":\"The quick brown fox.\",\"usage\":{\"type\":\"tokens\",\"input_tokens\":63,\"output_tokens\":5,\"total_tokens\":68,\"input_token_details\":{\"audio_tokens\":51,\"text_tokens\":12}}}\n\n";

/// The vLLM stream of openai-audio-transcriptions.md, byte for byte.
const VLLM: &[u8] = b"data: {\"id\":\"trsc-4f2a9c0b7e1d4a5b\",\"object\":\"transcription.chunk\",\"created\":1736900000,\"model\":\"openai/whisper-large-v3\",\"choices\":[{\"delta\":{\"content\":\" The\"}}],\"usage\":{\"prompt_tokens\":1502,\"completion_tokens\":1,\"total_tokens\":1503}}\n\ndata: {\"id\":\"trsc-4f2a9c0b7e1d4a5b\",\"object\":\"transcription.chunk\",\"created\":1736900000,\"model\":\"openai/whisper-large-v3\",\"choices\":[{\"delta\":{\"content\":\" quick\"}}],\"usage\":{\"prompt_tokens\":1502,\"completion_tokens\":2,\"total_tokens\":1504}}\n\ndata: {\"id\":\"trsc-4f2a9c0b7e1d4a5b\",\"object\":\"transcription.chunk\",\"created\":1736900000,\"model\":\"openai/whisper-large-v3\",\"choices\":[{\"delta\":{\"content\":\" brown fox.\"},\"finish_reason\":\"stop\",\"stop_reason\":null}],\"usage\":{\"prompt_tokens\":1502,\"completion_tokens\":5,\"total_tokens\":1507}}\n\ndata: {\"id\":\"trsc-4f2a9c0b7e1d4a5b\",\"object\":\"transcription.chunk\",\"created\":1736900000,\"model\":\"openai/whisper-large-v3\",\"choices\":[],\"usage\":{\"prompt_tokens\":1502,\"completion_tokens\":5,\"total_tokens\":1507}}\n\ndata: [DONE]\n\n";

/// The short vLLM-form stream given to the simulator: three tokens, usage chunk, `[DONE]`.
const SHORT: &[u8] = b"data: {\"id\":\"trsc-1\",\"object\":\"transcription.chunk\",\"created\":1736900000,\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\" a\"}}]}\n\ndata: {\"id\":\"trsc-1\",\"object\":\"transcription.chunk\",\"created\":1736900000,\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\" b\"}}]}\n\ndata: {\"id\":\"trsc-1\",\"object\":\"transcription.chunk\",\"created\":1736900000,\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\" c\"},\"finish_reason\":\"stop\",\"stop_reason\":null}]}\n\ndata: {\"id\":\"trsc-1\",\"object\":\"transcription.chunk\",\"created\":1736900000,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"total_tokens\":13}}\n\ndata: [DONE]\n\n";

/// vLLM's in-stream error after one token, then its `[DONE]`.
const ERROR: &[u8] = b"data: {\"id\":\"trsc-1\",\"object\":\"transcription.chunk\",\"created\":1736900000,\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\" a\"}}]}\n\ndata: {\"error\":{\"message\":\"Transcription failed: engine error\",\"type\":\"InternalServerError\",\"param\":null,\"code\":500}}\n\ndata: [DONE]\n\n";

/// Frames `chunks` as the host does (one batch per read) and feeds one parser (the SDK's
/// harness).
fn run_with(headers: Headers, chunks: &[&[u8]]) -> Outcome {
    testing::run_framed(&Parser::new(200, headers), Framing::Sse, chunks, Vec::new())
}

fn run(chunks: &[&[u8]]) -> Outcome {
    run_with(
        vec![("content-type".into(), "text/event-stream".into())],
        chunks,
    )
}

/// Same events whatever the read boundaries: every two-way split and one byte per read.
fn assert_split_invariant(body: &[u8]) -> Outcome {
    let whole = run(&[body]);
    for k in 0..=body.len() {
        assert_eq!(run(&[&body[..k], &body[k..]]), whole, "split at byte {k}");
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "one byte per read");
    whole
}

fn clip(data: &[u8], filename: &str) -> Prompt {
    Prompt::Audio(AudioClip {
        data: data.to_vec(),
        filename: filename.into(),
        reference: Some("ref".into()),
        duration_s: None,
    })
}

fn request(prompt: Prompt) -> GenRequest {
    GenRequest {
        id: 1,
        model: "m".into(),
        prompt,
        max_tokens: 64,
        ignore_eos: false,
        streaming: true,
        include_usage: true,
        temperature: None,
        extra_body: None,
    }
}

/// Splits a multipart body into (headers, content) per part, checking the delimiters.
fn parts(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delim = format!("--{boundary}");
    let end = format!("{delim}--\r\n");
    assert!(body.ends_with(end.as_bytes()), "closing delimiter");
    let body = &body[..body.len() - end.len()];
    let sep = format!("\r\n{delim}\r\n");
    let first = format!("{delim}\r\n");
    assert!(body.starts_with(first.as_bytes()));
    let mut rest = &body[first.len()..];
    assert!(rest.ends_with(b"\r\n"));
    rest = &rest[..rest.len() - 2];
    let mut out = Vec::new();
    loop {
        let next = rest.windows(sep.len()).position(|w| w == sep.as_bytes());
        let part = &rest[..next.unwrap_or(rest.len())];
        let split = part.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        out.push((
            String::from_utf8(part[..split].to_vec()).unwrap(),
            part[split + 4..].to_vec(),
        ));
        match next {
            Some(n) => rest = &rest[n + sep.len()..],
            None => return out,
        }
    }
}

#[test]
fn multipart_body_bytes() {
    let http = Adapter::build_request(request(clip(b"RIFF", "a.wav"))).unwrap();
    assert_eq!(http.method, "POST");
    assert_eq!(http.path, "/v1/audio/transcriptions");
    assert_eq!(
        http.headers,
        [(
            "content-type".to_owned(),
            "multipart/form-data; boundary=llmb-form-boundary-0000000000000001".to_owned()
        )]
    );
    let expected = concat!(
        "--llmb-form-boundary-0000000000000001\r\n",
        "Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n",
        "Content-Type: audio/wav\r\n",
        "\r\n",
        "RIFF\r\n",
        "--llmb-form-boundary-0000000000000001\r\n",
        "Content-Disposition: form-data; name=\"model\"\r\n",
        "\r\n",
        "m\r\n",
        "--llmb-form-boundary-0000000000000001\r\n",
        "Content-Disposition: form-data; name=\"stream\"\r\n",
        "\r\n",
        "true\r\n",
        "--llmb-form-boundary-0000000000000001\r\n",
        "Content-Disposition: form-data; name=\"response_format\"\r\n",
        "\r\n",
        "json\r\n",
        "--llmb-form-boundary-0000000000000001--\r\n",
    );
    assert_eq!(String::from_utf8(http.body).unwrap(), expected);
}

#[test]
fn content_types_by_extension() {
    for (name, ct) in [
        ("a.wav", "audio/wav"),
        ("b.WAV", "audio/wav"),
        ("c.mp3", "audio/mpeg"),
        ("d.flac", "audio/flac"),
        ("e.ogg", "audio/ogg"),
        ("f.m4a", "audio/mp4"),
        ("g.webm", "application/octet-stream"),
        ("noext", "application/octet-stream"),
    ] {
        assert_eq!(content_type(name), ct, "{name}");
        let http = Adapter::build_request(request(clip(b"xyz", name))).unwrap();
        let p = parts(&http.body, "llmb-form-boundary-0000000000000001");
        assert_eq!(
            p[0].0,
            format!(
                "Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {ct}"
            )
        );
        assert_eq!(p[0].1, b"xyz");
    }
}

fn field_map(http: &HttpRequest) -> Vec<(String, String)> {
    let ct = &http.headers[0].1;
    let boundary = ct.split_once("boundary=").unwrap().1;
    parts(&http.body, boundary)
        .into_iter()
        .skip(1)
        .map(|(h, v)| {
            let name = h
                .strip_prefix("Content-Disposition: form-data; name=\"")
                .and_then(|n| n.strip_suffix('"'))
                .unwrap()
                .to_owned();
            (name, String::from_utf8(v).unwrap())
        })
        .collect()
}

#[test]
fn fields_temperature_and_extra_body() {
    let mut req = request(clip(b"RIFF", "a.wav"));
    req.streaming = false;
    req.temperature = Some(0.2);
    req.extra_body = Some(
        r#"{"language":"en","response_format":"verbose_json","stream_include_usage":true,"max_completion_tokens":128,"timestamp_granularities[]":["word"],"temperature":null}"#
            .into(),
    );
    let http = build(&req, false).unwrap();
    let mut got = field_map(&http);
    got[3..].sort();
    let mut want: Vec<(String, String)> = [
        ("model", "m"),
        ("stream", "false"),
        ("response_format", "verbose_json"),
        ("language", "en"),
        ("stream_include_usage", "true"),
        ("max_completion_tokens", "128"),
        ("timestamp_granularities[]", "[\"word\"]"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    want[3..].sort();
    assert_eq!(got, want);

    req.extra_body = None;
    let got = field_map(&build(&req, false).unwrap());
    assert_eq!(got[3], ("temperature".into(), "0.2".into()));
    assert_eq!(got.len(), 4);

    req.streaming = true;
    let got = field_map(&build(&req, true).unwrap());
    assert_eq!(got[4], ("max_completion_tokens".into(), "64".into()));
    assert_eq!(got[5], ("stream_include_usage".into(), "true".into()));

    req.extra_body = Some(r#"{"file":"x"}"#.into());
    assert!(build(&req, false).unwrap_err().contains("\"file\""));
    req.extra_body = Some("[1]".into());
    assert!(build(&req, false).unwrap_err().contains("JSON object"));
}

#[test]
fn boundary_avoids_the_data_and_names_are_escaped() {
    let data = b"xx--llmb-form-boundary-0000000000000001yy";
    let http = Adapter::build_request(request(clip(data, "a \"b\"\r\n.wav"))).unwrap();
    let ct = &http.headers[0].1;
    assert!(ct.ends_with("boundary=llmb-form-boundary-0000000000000001-1"));
    let p = parts(&http.body, "llmb-form-boundary-0000000000000001-1");
    assert_eq!(p.len(), 4);
    assert_eq!(p[0].1, data);
    assert!(p[0].0.contains("filename=\"a %22b%22%0D%0A.wav\""));
}

#[test]
fn text_and_chat_prompts_are_refused() {
    let err = Adapter::build_request(request(Prompt::Text("hi".into()))).unwrap_err();
    assert_eq!(err, NEEDS_AUDIO);
    let err = Adapter::build_request(request(Prompt::Chat(vec![ChatMessage {
        role: Role::User,
        content: "hi".into(),
    }])))
    .unwrap_err();
    assert!(err.contains("--dataset-name audio"));
}

#[test]
fn info_and_options() {
    let info = Adapter::info();
    assert_eq!(info.name, "openai-audio");
    assert!(!info.supports_ignore_eos && !info.http2);
    assert!(matches!(info.framing, Framing::Sse));
    assert!(
        Adapter::configure(vec![Kv {
            key: "x".into(),
            value: "1".into()
        }])
        .unwrap_err()
        .contains("vllm-extras")
    );
    assert!(
        Adapter::configure(vec![Kv {
            key: "vllm-extras".into(),
            value: "maybe".into()
        }])
        .is_err()
    );
}

#[test]
fn openai_stream_conformance() {
    let out = assert_split_invariant(OPENAI);
    assert_eq!(out.text(), "The quick brown fox.");
    assert_eq!(
        out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(out.usage, Some((Some(63), Some(5), None)));
    assert_eq!(out.finish, None);
    assert_eq!(out.done, 1);
    assert!(out.errors.is_empty());

    let mut with_done = OPENAI.to_vec();
    with_done.extend_from_slice(b"data: [DONE]\n\n");
    assert_eq!(assert_split_invariant(&with_done), out);
}

#[test]
fn vllm_stream_conformance() {
    let out = assert_split_invariant(VLLM);
    assert_eq!(out.text(), " The quick brown fox.");
    assert_eq!(
        out.deltas.iter().map(|d| d.0).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(out.finish.as_deref(), Some("stop"));
    assert_eq!(out.usage, Some((Some(1502), Some(5), None)));
    assert_eq!(out.done, 1);
    assert!(out.errors.is_empty());
}

#[test]
fn short_stream_for_the_simulator() {
    let out = assert_split_invariant(SHORT);
    assert_eq!(out.deltas.len(), 3);
    assert_eq!(out.text(), " a b c");
    assert_eq!(out.finish.as_deref(), Some("stop"));
    assert_eq!(out.usage, Some((Some(10), Some(3), None)));
    assert_eq!(out.done, 1);
    assert!(out.errors.is_empty());
}

#[test]
fn vllm_stream_without_done_after_finish_is_complete() {
    let cut = VLLM.len() - b"data: [DONE]\n\n".len();
    let out = assert_split_invariant(&VLLM[..cut]);
    assert_eq!(out.text(), " The quick brown fox.");
    assert_eq!(out.usage, Some((Some(1502), Some(5), None)));
    assert_eq!(out.done, 1);
    assert!(out.errors.is_empty());
}

#[test]
fn in_stream_error_carries_the_server_message() {
    let out = assert_split_invariant(ERROR);
    assert_eq!(out.text(), " a");
    assert_eq!(out.done, 0);
    assert_eq!(
        out.errors,
        [(
            ErrorKind::Server,
            "Transcription failed: engine error".to_owned()
        )]
    );
    let out = assert_split_invariant(
        b"data: {\"type\":\"transcript.text.delta\",\"delta\":\"Hi\"}\n\ndata: {\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"param\":null,\"code\":\"rate_limit_exceeded\"}}\n\n",
    );
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].1, "Rate limit reached");
    let out = assert_split_invariant(
        b"data: {\"id\":\"t\",\"object\":\"transcription.chunk\",\"choices\":[{\"delta\":{\"content\":\"\"},\"finish_reason\":\"abort\"}]}\n\ndata: [DONE]\n\n",
    );
    assert_eq!(out.errors.len(), 1);
    assert!(out.errors[0].1.contains("abort"));
}

#[test]
fn truncated_stream_fails_at_finish() {
    let marker = b"\"finish_reason\"";
    let at = VLLM
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap();
    let cut = VLLM[..at].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    let out = assert_split_invariant(&VLLM[..cut]);
    assert_eq!(out.text(), " The quick");
    assert_eq!(out.done, 0);
    assert_eq!(out.errors.len(), 1);
    assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
    assert!(out.errors[0].1.contains("ended before"));

    let marker = b"data: {\"type\":\"transcript.text.done\"";
    let cut = OPENAI
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap();
    let out = assert_split_invariant(&OPENAI[..cut]);
    assert_eq!(out.text(), "The quick brown fox.");
    assert_eq!((out.done, out.usage), (0, None));
    assert_eq!(out.errors.len(), 1);
    assert!(matches!(out.errors[0].0, ErrorKind::Protocol));

    let out = run(&[&OPENAI[..cut + 40]]);
    assert_eq!(out.errors.len(), 1);
    assert!(matches!(out.errors[0].0, ErrorKind::Protocol));
}

#[test]
fn whole_json_body_to_a_streaming_request_is_explained() {
    let out = run_with(
        vec![("Content-Type".into(), "application/json".into())],
        &[b"{\n  \"text\": \"Hello there.\"\n}\n"],
    );
    assert_eq!(out.errors.len(), 1);
    assert!(out.errors[0].1.contains("whisper-1"));
}

#[test]
fn http_errors_carry_the_server_message() {
    let e = Adapter::map_error(
        400,
        Vec::new(),
        br#"{"error":{"message":"Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']","type":"invalid_request_error","param":null,"code":null}}"#.to_vec(),
    );
    assert!(matches!(e.kind, ErrorKind::BadRequest));
    assert!(e.message.starts_with("Invalid file format."));
    assert_eq!(e.http_status, Some(400));
    let e = Adapter::map_error(
        400,
        Vec::new(),
        br#"{"object":"error","message":"Maximum clip duration (30s) exceeded.","type":"BadRequestError","param":null,"code":400}"#.to_vec(),
    );
    assert_eq!(e.message, "Maximum clip duration (30s) exceeded.");
    let e = Adapter::map_error(503, Vec::new(), Vec::new());
    assert!(matches!(e.kind, ErrorKind::Overloaded) && e.retryable);
}

#[test]
fn non_streaming_bodies() {
    let json = vec![("content-type".to_owned(), "application/json".to_owned())];
    let c = Adapter::parse_body(
        200,
        json.clone(),
        br#"{"text":"The quick brown fox.","usage":{"type":"tokens","input_tokens":63,"output_tokens":5,"total_tokens":68}}"#.to_vec(),
    )
    .unwrap();
    assert_eq!(c.text, "The quick brown fox.");
    let u = c.usage.unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(63), Some(5)));
    let c = Adapter::parse_body(
        200,
        json.clone(),
        br#"{"text":"Hi","usage":{"type":"duration","seconds":2}}"#.to_vec(),
    )
    .unwrap();
    assert_eq!(c.text, "Hi");
    assert!(c.usage.is_none());
    let c = Adapter::parse_body(
        200,
        json.clone(),
        br#"{"text":"Hi","usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#
            .to_vec(),
    )
    .unwrap();
    assert_eq!(c.usage.unwrap().completion_tokens, Some(2));
    let c = Adapter::parse_body(
        200,
        vec![("content-type".into(), "text/plain; charset=utf-8".into())],
        b"Hello there.\n".to_vec(),
    )
    .unwrap();
    assert_eq!(c.text, "Hello there.\n");
    let e = Adapter::parse_body(200, json.clone(), b"{\"segments\":[]}".to_vec()).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Protocol));
    let e = Adapter::parse_body(
        200,
        json,
        br#"{"error":{"message":"boom","type":"x","param":null,"code":null}}"#.to_vec(),
    )
    .unwrap_err();
    assert_eq!(e.message, "boom");
}

/// Arbitrary and mutated responses in arbitrary reads: no panic, the same events.
#[test]
fn fuzz() {
    llmb_plugin_sdk::testing::fuzz::adapter::<Adapter>(&[
        OPENAI,
        VLLM,
        SHORT,
        ERROR,
        br#"{"text":"The quick brown fox.","usage":{"type":"tokens","input_tokens":63,"output_tokens":5}}"#,
        br#"{"text":"x","segments":[{"id":0,"start":0.0,"end":1.0,"text":"x"}]}"#,
    ]);
}
