//! The HTTP server on loopback with a real client (reqwest): both APIs,
//! streaming and not; every bad input; 429 when full; a dropped stream frees
//! its context; a bounded load test; /metrics.

mod support;

use futures_util::StreamExt;
use llama_safe::demo::{DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::engine::EngineConfig;
use llama_safe_server::Timeouts;
use serde_json::{json, Value};
use std::time::Duration;
use support::{health, parse, post, sse, start, start_with};

/// The demo model's greedy answer to one user message "Once upon a time"
/// through its chat template (see examples/chat.rs in CI).
const CHAT_REPLY: &str = " a time there lived one tiny model with many experts.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_apis_stream_and_not_give_the_known_sentence() {
    let s = start(2, 4).await;
    let b = &s.base;

    let (status, v) = post(
        b,
        "/api/generate",
        json!({"prompt": DEMO_PROMPT, "temperature": 0, "stream": false}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["response"], DEMO_CONTINUATION);
    assert_eq!(v["stats"]["generated_tokens"], 9);
    assert_eq!(v["done_reason"], "stop");

    let events = parse(
        &sse(
            b,
            "/api/generate",
            json!({"prompt": DEMO_PROMPT, "temperature": 0}),
        )
        .await,
    );
    let (last, pieces) = events.split_last().unwrap();
    let text: String = pieces
        .iter()
        .map(|e| e["response"].as_str().unwrap())
        .collect();
    assert_eq!(text, DEMO_CONTINUATION);
    assert_eq!(pieces.len(), 9);
    assert_eq!(last["done"], true);
    assert_eq!(last["stats"]["generated_tokens"], 9);

    let (status, v) = post(
        b,
        "/v1/completions",
        json!({"model": "demo", "prompt": DEMO_PROMPT, "temperature": 0, "max_tokens": 64}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], DEMO_CONTINUATION);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 9);
    assert_eq!(
        v["usage"]["total_tokens"],
        9 + v["usage"]["prompt_tokens"].as_u64().unwrap()
    );

    let raw = sse(
        b,
        "/v1/completions",
        json!({"prompt": DEMO_PROMPT, "temperature": 0, "stream": true}),
    )
    .await;
    assert_eq!(raw.last().unwrap(), "[DONE]");
    let chunks = parse(&raw);
    let text: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, DEMO_CONTINUATION);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );

    let messages = json!([{"role": "user", "content": DEMO_PROMPT}]);
    let (status, v) = post(
        b,
        "/v1/chat/completions",
        json!({"messages": messages, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], CHAT_REPLY);

    let raw = sse(
        b,
        "/v1/chat/completions",
        json!({"messages": messages, "temperature": 0, "stream": true}),
    )
    .await;
    assert_eq!(raw.last().unwrap(), "[DONE]");
    let chunks = parse(&raw);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, CHAT_REPLY);

    // Max tokens and stop strings are honoured.
    let (_, v) = post(
        b,
        "/v1/completions",
        json!({"prompt": DEMO_PROMPT, "temperature": 0, "max_tokens": 3}),
    )
    .await;
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    let (_, v) = post(
        b,
        "/v1/completions",
        json!({"prompt": DEMO_PROMPT, "temperature": 0, "stop": [" tiny"]}),
    )
    .await;
    assert_eq!(v["choices"][0]["text"], " there lived one");

    let health: Value = reqwest::get(format!("{b}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["parallel"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_4xx_naming_the_field() {
    let s = start(1, 1).await;
    let b = &s.base;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{b}/v1/completions"))
        .header("content-type", "application/json")
        .body("{\"prompt\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{v}"
    );

    let long = "many experts ".repeat(2500);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("/v1/completions", json!({}), 400, "prompt"),
        ("/api/generate", json!({"prompt": ""}), 400, "prompt"),
        ("/v1/completions", json!({"prompt": 7}), 400, "prompt"),
        (
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": -5}),
            400,
            "max_tokens",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": 1_000_000_000}),
            400,
            "max_tokens",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "max_tokens": "ten"}),
            400,
            "max_tokens",
        ),
        (
            "/v1/completions",
            json!({"prompt": long, "max_tokens": 4}),
            400,
            "prompt",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "model": "gpt-4"}),
            404,
            "model",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "temperature": "hot"}),
            400,
            "temperature",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "top_p": 2}),
            400,
            "top_p",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "seed": -1}),
            400,
            "seed",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "stop": [1]}),
            400,
            "stop",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "stream": "yes"}),
            400,
            "stream",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "logit_bias": {"99999": -100}}),
            400,
            "logit_bias",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": []}),
            400,
            "messages",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user"}]}),
            400,
            "messages",
        ),
    ];
    for (path, body, status, param) in cases {
        let (got, v) = post(b, path, body.clone()).await;
        assert_eq!(got, status, "{path} {body}: {v}");
        assert_eq!(v["error"]["param"], param, "{path} {body}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // The server still works after all that.
    let (status, _) = post(b, "/v1/completions", json!({"prompt": DEMO_PROMPT})).await;
    assert_eq!(status, 200);
}

async fn sequences_active(base: &str) -> u64 {
    health(base).await["active"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_server_answers_429_and_a_dropped_stream_frees_its_context() {
    let s = start(1, 0).await;
    let b = &s.base;
    // EOS banned: this would generate 4000 tokens if the client kept reading.
    let long = json!({"prompt": DEMO_PROMPT, "temperature": 0, "max_tokens": 4000, "logit_bias": {"2": -100}, "stream": true});
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{b}/api/generate"))
        .header("accept", "text/event-stream")
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    assert_eq!(sequences_active(b).await, 1);

    let (status, v) = post(b, "/v1/completions", json!({"prompt": DEMO_PROMPT})).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error");

    // Hang up mid-stream: the generation stops and its KV cells are freed.
    drop(body);
    let mut freed = false;
    for _ in 0..100 {
        let h = health(b).await;
        if h["active"] == 0 && h["kv_cells_used"] == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the sequence was not freed after the client left");
    let (status, v) = post(
        b,
        "/v1/completions",
        json!({"prompt": DEMO_PROMPT, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["choices"][0]["text"], DEMO_CONTINUATION);
    // The dropped generation never finished: only the last request's 9 tokens count.
    let metrics = reqwest::get(format!("{b}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\nllama_tokens_generated_total 9\n"),
        "{metrics}"
    );
    assert_eq!(s.state.engine.stats().active, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_test_64_requests_8_at_a_time() {
    let s = start(4, 64).await;
    let b = s.base.clone();
    let results: Vec<(u16, String)> = futures_util::stream::iter(0..64)
        .map(|i| {
            let b = b.clone();
            async move {
                let (path, body) = if i % 2 == 0 {
                    (
                        "/v1/completions",
                        json!({"prompt": DEMO_PROMPT, "temperature": 0}),
                    )
                } else {
                    (
                        "/api/generate",
                        json!({"prompt": DEMO_PROMPT, "temperature": 0, "stream": false}),
                    )
                };
                let (status, v) = post(&b, path, body).await;
                let text = v["choices"][0]["text"]
                    .as_str()
                    .or(v["response"].as_str())
                    .unwrap_or_default()
                    .to_string();
                (status, text)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(results.len(), 64);
    for (status, text) in &results {
        assert_eq!(*status, 200);
        assert_eq!(text, DEMO_CONTINUATION);
    }
    let metrics = reqwest::get(format!("{b}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "llama_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 32",
        "llama_requests_total{endpoint=\"/api/generate\",status=\"200\"} 32",
        "llama_tokens_generated_total 576",
        "llama_time_to_first_token_seconds_count 64",
        "llama_generation_tokens_per_second_count 64",
        "llama_sequences 4",
        "llama_sequences_active 0",
        "llama_requests_queued 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_streams_with_random_disconnects_free_every_cell() {
    let s = start_with(
        EngineConfig::default()
            .with_n_ctx(4096)
            .with_n_parallel(4)
            .with_threads(2)
            .with_queue(64)
            .with_prompt_cache(false),
        Timeouts::default(),
    )
    .await;
    let b = s.base.clone();
    // EOS banned, so every stream runs until it is dropped or ends at 200.
    let outcomes: Vec<(bool, usize)> = futures_util::stream::iter(0..16u64)
        .map(|i| {
            let b = b.clone();
            async move {
                let body = json!({"prompt": DEMO_PROMPT, "temperature": 0, "max_tokens": 200,
                                  "logit_bias": {"2": -100}, "stream": true});
                let r = reqwest::Client::new()
                    .post(format!("{b}/api/generate"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let mut stream = r.bytes_stream();
                // Odd streams hang up after a pseudo-random number of chunks.
                let hang_up_after = (i * 7919 % 13) as usize + 1;
                let mut chunks = 0;
                let mut done = false;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.unwrap();
                    chunks += 1;
                    if String::from_utf8_lossy(&chunk).contains("\"done\":true") {
                        done = true;
                    }
                    if i % 2 == 1 && chunks >= hang_up_after {
                        break;
                    }
                }
                (done, chunks)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(
        outcomes.iter().filter(|(done, _)| *done).count(),
        8,
        "{outcomes:?}"
    );
    let mut freed = false;
    for _ in 0..200 {
        let h = health(&b).await;
        if h["active"] == 0 && h["queued"] == 0 && h["kv_cells_used"] == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(freed, "cells still in use: {}", health(&b).await);
    // One after another, every generated token but the last of each stream
    // is one decode and every prompt one more: decodes would be close to
    // the tokens decoded. Batched, a decode carries every running stream.
    let stats = s.state.engine.stats();
    assert!(
        stats.decodes * 2 < stats.tokens_decoded,
        "never batched: {stats:?}"
    );
}
