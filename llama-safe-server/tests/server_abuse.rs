//! The server under hostile input and with the protocols its clients speak:
//! costly prompts never stall `/health`, slow clients are closed, shutdown
//! has a deadline, unsupported fields are refused, Ollama's NDJSON API.
//! Every loop here is bounded in count and time; all traffic is loopback.

mod support;

use llama_safe::demo::{DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::engine::EngineConfig;
use llama_safe_server::Timeouts;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{health, ndjson, post, start, start_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config() -> EngineConfig {
    EngineConfig::default()
        .with_n_ctx(4096)
        .with_n_parallel(2)
        .with_threads(2)
        .with_queue(8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_stays_fast_while_costly_prompts_are_handled() {
    let s = start(2, 8).await;
    let b = s.base.clone();
    let no_spaces = "x".repeat(200_000);
    let mid = "y".repeat(20_000);
    let many: Vec<Value> = (0..10_000)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "hi"}))
        .collect();
    let costly = [
        ("/v1/completions", json!({"prompt": no_spaces})),
        ("/v1/completions", json!({"prompt": no_spaces})),
        ("/v1/completions", json!({"prompt": mid, "max_tokens": 4})),
        ("/v1/chat/completions", json!({"messages": many})),
    ];
    let load = futures_util::future::join_all(costly.into_iter().map(|(path, body)| {
        let b = b.clone();
        async move { post(&b, path, body).await.0 }
    }));
    let probe = async {
        let mut times = Vec::new();
        for _ in 0..100 {
            let start = Instant::now();
            let h = health(&b).await;
            times.push(start.elapsed());
            assert_eq!(h["status"], "ok");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times
    };
    let (statuses, mut times) = tokio::join!(load, probe);
    for status in &statuses[..2] {
        assert_eq!(
            *status, 400,
            "a prompt far longer than the context: {statuses:?}"
        );
    }
    assert!(
        statuses.iter().all(|s| [200, 400].contains(s)),
        "{statuses:?}"
    );
    times.sort();
    let p99 = times[98];
    assert!(p99 < Duration::from_millis(50), "/health p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_within_the_timeouts() {
    let timeouts = Timeouts {
        header: Duration::from_millis(800),
        body: Duration::from_millis(800),
        shutdown: Duration::from_secs(5),
    };
    let s = start_with(config(), timeouts).await;
    let addr = s.base.trim_start_matches("http://").to_string();

    // Headers at a byte every 200 ms: closed once the header timeout passes.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let start = Instant::now();
    let headers = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    let mut closed = false;
    for byte in headers.iter().cycle().take(100) {
        if tcp.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await
        {
            if n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408") {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a slow-header client was never closed");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );

    // The body at a byte every 200 ms: 408 within the body timeout.
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let start = Instant::now();
    tcp.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = String::new();
    for _ in 0..50 {
        let _ = tcp.write_all(b" ").await;
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await
        {
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
            if n == 0 || answer.contains("\r\n\r\n") {
                break;
            }
        }
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_has_a_deadline_and_answers_the_queue_503() {
    let timeouts = Timeouts {
        shutdown: Duration::from_secs(1),
        ..Timeouts::default()
    };
    let mut s = start_with(config().with_n_parallel(1), timeouts).await;
    let b = s.base.clone();
    // A stream that would run for 4000 tokens, from a client that reads slowly.
    let slow = reqwest::Client::new()
        .post(format!("{b}/api/generate"))
        .json(
            &json!({"prompt": DEMO_PROMPT, "temperature": 0, "max_tokens": 4000,
                      "logit_bias": {"2": -100}, "stream": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    // Two requests queued behind it.
    let queued: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move {
                post(
                    &b,
                    "/v1/completions",
                    json!({"prompt": DEMO_PROMPT, "max_tokens": 8}),
                )
                .await
            })
        })
        .collect();
    for _ in 0..100 {
        if health(&b).await["queued"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(health(&b).await["queued"], 2);
    let start = Instant::now();
    s.shut_down();
    for q in queued {
        let (status, v) = q.await.unwrap();
        assert_eq!(status, 503, "{v}");
    }
    let task = std::mem::replace(&mut s.task, tokio::spawn(async { Ok(()) }));
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returned within the deadline")
        .unwrap()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_semantics_refuse_what_is_not_supported() {
    let s = start(2, 8).await;
    let b = &s.base;
    let models: Value = reqwest::get(format!("{b}/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "demo");
    let n_vocab = s.state.model.n_vocab();
    let cases = [
        ("/v1/completions", json!({"prompt": "x", "n": 2}), "n"),
        (
            "/v1/completions",
            json!({"prompt": "x", "tools": [{"type": "function", "function": {"name": "f"}}]}),
            "tools",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f",
                "parameters": {"type": "object", "properties": {"s": {"type": "string", "pattern": "a+"}}}}}]}),
            "tools",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "tool_choice",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "nope"}}}}),
            "response_format",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "stop": ["a".repeat(120_000)]}),
            "stop",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "stop": vec!["s"; 17]}),
            "stop",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "logit_bias":
            (0..n_vocab).map(|t| (t.to_string(), json!(-100))).collect::<serde_json::Map<_, _>>()}),
            "logit_bias",
        ),
    ];
    for (path, body, param) in cases {
        let start = Instant::now();
        let (status, v) = post(b, path, body).await;
        assert_eq!(status, 400, "{param}: {v}");
        assert_eq!(v["error"]["param"], param, "{v}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
    // `n: 1` is fine, and max_completion_tokens is honoured (EOS banned).
    let (status, v) = post(
        b,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": DEMO_PROMPT}], "n": 1,
               "max_completion_tokens": 3, "logit_bias": {"2": -100}, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_api_streams_ndjson_as_ollama_documents_it() {
    let s = start(2, 8).await;
    let b = &s.base;
    let lines = ndjson(
        b,
        "/api/generate",
        json!({"model": "demo", "prompt": DEMO_PROMPT, "options": {"temperature": 0, "num_predict": 32}}),
    )
    .await;
    let (last, pieces) = lines.split_last().unwrap();
    let text: String = pieces
        .iter()
        .map(|l| l["response"].as_str().unwrap())
        .collect();
    assert_eq!(text, DEMO_CONTINUATION);
    assert!(pieces
        .iter()
        .all(|l| l["done"] == false && l["created_at"].is_string()));
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["eval_count"], 9);

    // num_predict limits the answer.
    let lines = ndjson(
        b,
        "/api/generate",
        json!({"model": "demo", "prompt": DEMO_PROMPT, "options": {"temperature": 0, "num_predict": 2}}),
    )
    .await;
    assert_eq!(lines.last().unwrap()["eval_count"], 2);
    assert_eq!(lines.last().unwrap()["done_reason"], "length");

    let lines = ndjson(
        b,
        "/api/chat",
        json!({"model": "demo", "messages": [{"role": "user", "content": DEMO_PROMPT}],
               "options": {"temperature": 0, "seed": 1, "stop": ["many"]}}),
    )
    .await;
    let text: String = lines
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, " a time there lived one tiny model with ");
    assert_eq!(lines.last().unwrap()["message"]["role"], "assistant");

    let (status, v) = post(
        b,
        "/api/chat",
        json!({"model": "demo", "stream": false,
        "messages": [{"role": "user", "content": DEMO_PROMPT}], "options": {"temperature": 0}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["message"]["content"],
        " a time there lived one tiny model with many experts."
    );

    let tags: Value = reqwest::get(format!("{b}/api/tags"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["models"][0]["name"], "demo");
    assert_eq!(tags["models"][0]["details"]["format"], "gguf");
    let (status, show) = post(b, "/api/show", json!({"model": "demo"})).await;
    assert_eq!(status, 200);
    assert_eq!(show["model_info"]["general.architecture"], "llama");
    let (status, _) = post(b, "/api/show", json!({"model": "nope"})).await;
    assert_eq!(status, 404);
}
