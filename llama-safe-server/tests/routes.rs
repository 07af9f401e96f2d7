//! The routes added with the crate, over real HTTP on loopback: API keys,
//! embeddings (OpenAI's and Ollama's), tokenize/detokenize, log-probabilities,
//! thinking apart from the answer, tools on Ollama's chat, Anthropic's
//! Messages API, and the router mounted in another app. Each with its
//! happy path and its bad input.

mod support;

use llama_safe::demo::{DemoModel, DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::LlamaModelParams;
use llama_safe_server::ServerConfig;
use serde_json::{json, Value};
use support::{call, engine, ndjson, parse, post, sse, start, start_configured, start_loaded};

/// The `data:` payloads of an SSE answer, as JSON.
async fn sse_json(base: &str, path: &str, body: Value) -> Vec<Value> {
    parse(&sse(base, path, body).await)
}

/// The demo's greedy answer to one user message of [`DEMO_PROMPT`].
const CHAT_REPLY: &str = " a time there lived one tiny model with many experts.";

/// ChatML that thinks as Qwen3's template does: the assistant's turn opens
/// `<think>`, or with `enable_thinking` false writes an empty block.
const THINKING_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n\
{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}{% endif %}";

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_every_route_but_health() {
    let key = "sk-test-0123456789";
    let server = ServerConfig::default()
        .with_api_key(key)
        .with_api_key("sk-second");
    let s = start_configured(&DemoModel::Moe.cached().unwrap(), engine(2), server).await;
    let b = &s.base;
    let routes: Vec<(&str, Option<Value>)> = vec![
        ("/v1/models", None),
        ("/api/tags", None),
        ("/metrics", None),
        (
            "/v1/completions",
            Some(json!({"prompt": DEMO_PROMPT, "max_tokens": 2})),
        ),
        (
            "/v1/chat/completions",
            Some(json!({"messages": user("hi"), "max_tokens": 2})),
        ),
        ("/v1/embeddings", Some(json!({"input": "hi"}))),
        (
            "/v1/messages",
            Some(json!({"model": "demo", "max_tokens": 2, "messages": user("hi")})),
        ),
        (
            "/api/generate",
            Some(json!({"prompt": "hi", "stream": false, "options": {"num_predict": 2}})),
        ),
        (
            "/api/chat",
            Some(json!({"messages": user("hi"), "stream": false, "options": {"num_predict": 2}})),
        ),
        ("/api/embed", Some(json!({"model": "demo", "input": "hi"}))),
        ("/api/show", Some(json!({"model": "demo"}))),
        ("/tokenize", Some(json!({"content": "hi"}))),
        ("/detokenize", Some(json!({"tokens": [5]}))),
    ];
    // A single-model server keeps its model whatever a request says: an
    // inference key's `keep_alive` changes nothing there, so it is no 403.
    let (status, v) = call(
        b,
        "/api/generate",
        Some(key),
        Some(json!({"prompt": DEMO_PROMPT, "stream": false, "keep_alive": "5m", "options": {"num_predict": 2}})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    for (path, body) in &routes {
        for wrong in [
            None,
            Some("sk-test-012345678"),
            Some("sk-test-0123456789x"),
            Some(""),
        ] {
            let (status, v) = call(b, path, wrong, body.clone()).await;
            assert_eq!(status, 401, "{path} with {wrong:?}: {v}");
            assert_eq!(v["error"]["code"], "invalid_api_key", "{path}: {v}");
            assert!(!v.to_string().contains(key), "{path} echoed the key: {v}");
        }
        for good in [key, "sk-second"] {
            let (status, v) = call(b, path, Some(good), body.clone()).await;
            assert_eq!(status, 200, "{path}: {v}");
        }
    }
    // Anthropic's clients send x-api-key; a lower-case scheme is accepted.
    let r = reqwest::Client::new()
        .get(format!("{b}/v1/models"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new()
        .get(format!("{b}/v1/models"))
        .header("authorization", format!("bearer {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new()
        .get(format!("{b}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    // /health stays open, for load balancers.
    let (status, v) = call(b, "/health", None, None).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    drop(s);

    // /metrics opened for a scraper; the rest still needs the key.
    let server = ServerConfig::default()
        .with_api_key(key)
        .with_open_metrics(true);
    let s = start_configured(&DemoModel::Moe.cached().unwrap(), engine(1), server).await;
    let r = reqwest::get(format!("{}/metrics", s.base)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("llama_requests_total"));
    assert_eq!(call(&s.base, "/v1/models", None, None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_on_both_apis_and_their_bad_input() {
    let s = start(1, 4).await;
    let b = &s.base;
    let texts = ["Once upon a time", "many experts", "Once upon a time"];
    let (status, v) = post(
        b,
        "/v1/embeddings",
        json!({"input": texts, "model": "demo"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    let vectors: Vec<Vec<f64>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            assert_eq!(d["object"], "embedding");
            serde_json::from_value(d["embedding"].clone()).unwrap()
        })
        .collect();
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    assert_eq!(vectors[0], vectors[2]);
    assert_ne!(vectors[0], vectors[1]);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 3);

    // base64: the same floats, little-endian.
    let (_, v64) = post(
        b,
        "/v1/embeddings",
        json!({"input": texts[0], "encoding_format": "base64"}),
    )
    .await;
    let text = v64["data"][0]["embedding"].as_str().unwrap();
    assert_eq!(text.len(), (vectors[0].len() * 4).div_ceil(3) * 4);

    // Ollama's /api/embed gives the same vectors.
    let (status, o) = post(b, "/api/embed", json!({"model": "demo", "input": texts})).await;
    assert_eq!(status, 200, "{o}");
    let ollama: Vec<Vec<f64>> = serde_json::from_value(o["embeddings"].clone()).unwrap();
    for (a, b) in ollama.iter().zip(&vectors) {
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6));
    }
    assert!(o["prompt_eval_count"].as_u64().unwrap() >= 3);

    // A text over the limit: refused on OpenAI's route, cut on Ollama's
    // (its `truncate` is on by default), refused with `truncate: false`.
    let long = "Once upon a time ".repeat(3000);
    let (status, v) = post(b, "/v1/embeddings", json!({"input": long})).await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("input")),
        "{v}"
    );
    let (status, v) = post(b, "/api/embed", json!({"model": "demo", "input": long})).await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = post(
        b,
        "/api/embed",
        json!({"model": "demo", "input": long, "truncate": false}),
    )
    .await;
    assert_eq!(status, 400);

    for (path, body, want) in [
        ("/v1/embeddings", json!({"input": []}), 400),
        ("/v1/embeddings", json!({"input": [""]}), 400),
        ("/v1/embeddings", json!({"input": 5}), 400),
        ("/v1/embeddings", json!({"input": vec!["a"; 257]}), 400),
        (
            "/v1/embeddings",
            json!({"input": "a", "dimensions": 8}),
            400,
        ),
        (
            "/v1/embeddings",
            json!({"input": "a", "encoding_format": "hex"}),
            400,
        ),
        (
            "/v1/embeddings",
            json!({"input": "a", "model": "other"}),
            404,
        ),
        ("/v1/embeddings", json!({}), 400),
        ("/api/embed", json!({"model": "demo", "input": []}), 400),
        ("/api/embed", json!({"input": "a"}), 400),
        (
            "/api/embed",
            json!({"model": "demo", "input": "a", "options": {"temperature": 1}}),
            400,
        ),
        ("/api/embed", json!({"model": "nope", "input": "a"}), 404),
    ] {
        let (status, v) = post(b, path, body.clone()).await;
        assert_eq!(status, want, "{path} {body}: {v}");
        assert!(v["error"].is_object(), "{v}");
    }
    let r = reqwest::Client::new()
        .post(format!("{b}/v1/embeddings"))
        .body("{\"input\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_and_detokenize_round_trip() {
    let s = start(1, 4).await;
    let b = &s.base;
    let (status, v) = post(b, "/tokenize", json!({"content": DEMO_PROMPT})).await;
    assert_eq!(status, 200, "{v}");
    let ids: Vec<i64> = serde_json::from_value(v["tokens"].clone()).unwrap();
    assert_eq!(ids.len(), 4);
    let (_, with_bos) = post(
        b,
        "/tokenize",
        json!({"content": DEMO_PROMPT, "add_special": true}),
    )
    .await;
    assert_eq!(with_bos["tokens"][0], 1, "{with_bos}");
    assert_eq!(with_bos["tokens"].as_array().unwrap().len(), 5);
    let (_, pieces) = post(
        b,
        "/tokenize",
        json!({"content": DEMO_PROMPT, "with_pieces": true}),
    )
    .await;
    let joined: String = pieces["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["piece"].as_str().unwrap())
        .collect();
    assert_eq!(joined.trim_start(), DEMO_PROMPT);
    assert_eq!(pieces["tokens"][0]["id"], ids[0]);
    let (status, v) = post(b, "/detokenize", json!({"tokens": ids})).await;
    assert_eq!(status, 200);
    assert_eq!(v["content"].as_str().unwrap().trim_start(), DEMO_PROMPT);

    for (path, body) in [
        ("/tokenize", json!({})),
        ("/tokenize", json!({"content": 5})),
        ("/tokenize", json!({"content": "a", "add_special": "yes"})),
        ("/detokenize", json!({"tokens": [-1]})),
        ("/detokenize", json!({"tokens": [1_000_000]})),
        ("/detokenize", json!({"tokens": "1 2"})),
        ("/detokenize", json!({})),
    ] {
        let (status, v) = post(b, path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {v}");
    }
    let (status, v) = post(b, "/detokenize", json!({"tokens": []})).await;
    assert_eq!((status, v["content"].as_str()), (200, Some("")));
}

/// Regression (audit round 3): `/tokenize` had no size guard (a long run
/// of one character: 400 KB took 11 s, and went on after the client left).
/// A text longer than a request's context could hold is refused before it
/// is tokenized, as the generation routes refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokenize_refuses_what_no_context_holds_before_reading_it() {
    let s = start(1, 4).await;
    let b = &s.base;
    let max = s.state.model.max_token_bytes() * s.state.n_ctx() as usize;
    let started = std::time::Instant::now();
    let (status, v) = post(b, "/tokenize", json!({"content": "a".repeat(max + 1)})).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "content");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Within the budget, the worst case (one character repeated) is served.
    let (status, v) = post(b, "/tokenize", json!({"content": "a".repeat(max / 2)})).await;
    assert_eq!(status, 200, "{v}");
}

/// Regression (audit round 3): a hidden 2 MiB limit answered bodies over it
/// with a plain-text 413 whatever `--max-body-bytes` said (an image over
/// about 1.5 MB could not be sent). The configured limit is the one, in
/// the API's JSON error shape, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_limit_is_the_configured_one_in_json() {
    for (limit, size, want) in [
        (8 << 20, 3 << 20, 200),
        (8 << 20, 9 << 20, 413),
        (4 << 10, 8 << 10, 413),
    ] {
        let server = ServerConfig::default().with_max_body_bytes(limit);
        let s = start_configured(&DemoModel::Moe.cached().unwrap(), engine(1), server).await;
        // Padding in a field the route ignores: a body of `size` bytes
        // that is a valid request.
        let body = json!({"content": DEMO_PROMPT, "padding": "x".repeat(size)});
        let r = reqwest::Client::new()
            .post(format!("{}/tokenize", s.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "limit {limit}, body {size}");
        assert!(
            r.headers()[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{:?}",
            r.headers()
        );
        let v: Value = r.json().await.unwrap();
        if want == 413 {
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&limit.to_string()),
                "{v}"
            );
        } else {
            assert!(v["tokens"].is_array(), "{v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_on_the_openai_routes() {
    let s = start(1, 4).await;
    let b = &s.base;
    let (status, v) = post(
        b,
        "/v1/chat/completions",
        json!({"messages": user(DEMO_PROMPT), "temperature": 0, "logprobs": true, "top_logprobs": 3}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        content.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let text: String = content
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(text, CHAT_REPLY);
    for t in content {
        let lp = t["logprob"].as_f64().unwrap();
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the token chosen is the most likely one.
        assert_eq!(top[0]["token"], t["token"]);
        assert!((top[0]["logprob"].as_f64().unwrap() - lp).abs() < 1e-6);
        assert!(lp <= 0.0 && top[1]["logprob"].as_f64().unwrap() <= lp);
        assert_eq!(
            t["bytes"].as_array().unwrap().len(),
            t["token"].as_str().unwrap().len()
        );
    }
    // Streamed: one entry per chunk, the same figures.
    let chunks = sse_json(
        b,
        "/v1/chat/completions",
        json!({"messages": user(DEMO_PROMPT), "temperature": 0, "stream": true, "logprobs": true}),
    )
    .await;
    let streamed: Vec<f64> = chunks
        .iter()
        .flat_map(|c| {
            c["choices"][0]["logprobs"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|t| t["logprob"].as_f64().unwrap())
        .collect();
    let whole: Vec<f64> = content
        .iter()
        .map(|t| t["logprob"].as_f64().unwrap())
        .collect();
    assert_eq!(streamed.len(), whole.len());
    assert!(streamed
        .iter()
        .zip(&whole)
        .all(|(a, b)| (a - b).abs() < 1e-5));

    // Legacy completions: `logprobs: N`.
    let (status, v) = post(
        b,
        "/v1/completions",
        json!({"prompt": DEMO_PROMPT, "temperature": 0, "logprobs": 2}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    let tokens: String = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens, DEMO_CONTINUATION);
    assert_eq!(lp["text_offset"][0], 0);
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2);

    for (path, body, param) in [
        (
            "/v1/chat/completions",
            json!({"messages": user("a"), "logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user("a"), "top_logprobs": 2}),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user("a"), "logprobs": 3}),
            "logprobs",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "logprobs": 6}),
            "logprobs",
        ),
        (
            "/v1/completions",
            json!({"prompt": "a", "logprobs": true}),
            "logprobs",
        ),
    ] {
        let (status, v) = post(b, path, body.clone()).await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some(param)),
            "{body}: {v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_apart_from_the_answer_on_every_api() {
    let params = LlamaModelParams::default().with_chat_template(THINKING_TEMPLATE);
    let s = start_loaded(
        &DemoModel::Moe.cached().unwrap(),
        &params,
        engine(1),
        ServerConfig::default(),
    )
    .await;
    let b = &s.base;
    let ask = |extra: Value| {
        let mut body = json!({"messages": user(DEMO_PROMPT), "temperature": 0, "max_tokens": 12});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };

    // The prompt opens <think>: what the model writes is thinking.
    let (status, on) = post(b, "/v1/chat/completions", ask(json!({}))).await;
    assert_eq!(status, 200, "{on}");
    let message = &on["choices"][0]["message"];
    let thought = message["reasoning_content"].as_str().unwrap();
    assert!(!thought.is_empty(), "{on}");
    assert_eq!(message["content"], "", "{on}");
    // Streamed, the same text arrives in reasoning_content deltas.
    let chunks = sse_json(b, "/v1/chat/completions", ask(json!({"stream": true}))).await;
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(streamed, thought);
    assert!(chunks.iter().all(|c| c["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap_or("")
        .is_empty()));

    // Thinking off: the template closes the block; the text is the answer.
    let off = json!({"chat_template_kwargs": {"enable_thinking": false}});
    let (_, v) = post(b, "/v1/chat/completions", ask(off)).await;
    let message = &v["choices"][0]["message"];
    assert!(message.get("reasoning_content").is_none(), "{v}");
    assert!(!message["content"].as_str().unwrap().is_empty(), "{v}");

    // Ollama: `think` and `thinking`.
    let (_, v) = post(b, "/api/chat", ask(json!({"stream": false, "think": true}))).await;
    assert_eq!(v["message"]["thinking"].as_str(), Some(thought), "{v}");
    assert_eq!(v["message"]["content"], "");
    let lines = ndjson(b, "/api/chat", ask(json!({"think": true}))).await;
    let streamed: String = lines
        .iter()
        .filter_map(|l| l["message"]["thinking"].as_str())
        .collect();
    assert_eq!(streamed, thought);
    let (_, v) = post(
        b,
        "/api/chat",
        ask(json!({"stream": false, "think": false})),
    )
    .await;
    assert!(v["message"].get("thinking").is_none(), "{v}");
    assert!(!v["message"]["content"].as_str().unwrap().is_empty());

    // Anthropic: a thinking block first.
    let body =
        json!({"model": "demo", "max_tokens": 12, "messages": user(DEMO_PROMPT), "temperature": 0});
    let (status, v) = post(b, "/v1/messages", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["content"][0]["type"], "thinking", "{v}");
    assert_eq!(v["content"][0]["thinking"].as_str(), Some(thought));
    let mut off = body;
    off["thinking"] = json!({"type": "disabled"});
    let (_, v) = post(b, "/v1/messages", off).await;
    assert_eq!(v["content"][0]["type"], "text", "{v}");

    // Bad values.
    for (path, extra, param) in [
        ("/api/chat", json!({"think": "very"}), "think"),
        ("/v1/chat/completions", json!({"think": true}), "think"),
        (
            "/v1/chat/completions",
            json!({"chat_template_kwargs": {"enable_thinking": 1}}),
            "chat_template_kwargs",
        ),
        (
            "/v1/chat/completions",
            json!({"chat_template_kwargs": []}),
            "chat_template_kwargs",
        ),
    ] {
        let (status, v) = post(b, path, ask(extra.clone())).await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some(param)),
            "{extra}: {v}"
        );
    }
    let (status, _) = post(b, "/api/generate", json!({"prompt": "a", "think": true})).await;
    assert_eq!(status, 400);
    drop(s);

    // A model that does not think: asking it to is a 400.
    let s = start(1, 4).await;
    let (status, v) = post(
        &s.base,
        "/api/chat",
        json!({"messages": user("a"), "think": true}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("think")),
        "{v}"
    );
    let (status, _) = post(
        &s.base,
        "/api/chat",
        json!({"messages": user("a"), "think": false, "stream": false}),
    )
    .await;
    assert_eq!(status, 200);
}

/// A weather tool, in OpenAI's (and Ollama's) format.
fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"]},
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_on_ollama_chat() {
    let s = start(1, 4).await;
    let b = &s.base;
    let body = json!({
        "messages": user("What is the weather in Paris?"), "tools": [weather_tool()],
        "stream": false, "options": {"temperature": 0, "num_predict": 200},
    });
    let (status, v) = post(b, "/api/chat", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    // The generic format lets the model answer or call; either is well formed.
    let calls = v["message"]["tool_calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for call in &calls {
        assert_eq!(call["function"]["name"], "weather", "{v}");
        // Ollama's arguments are an object, not a string.
        assert!(
            ["Paris", "Rome"].contains(&call["function"]["arguments"]["city"].as_str().unwrap())
        );
    }
    if calls.is_empty() {
        assert!(!v["message"]["content"].as_str().unwrap().is_empty(), "{v}");
    }
    // Streamed: the same calls, in a chunk before the last.
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let lines = ndjson(b, "/api/chat", streamed).await;
    let streamed_calls: Vec<Value> = lines
        .iter()
        .flat_map(|l| {
            l["message"]["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(streamed_calls, calls);
    assert_eq!(lines.last().unwrap()["done"], true);
    // The call and its result go back.
    let follow = json!({
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "sunny", "tool_name": "weather"},
        ],
        "tools": [weather_tool()], "stream": false, "options": {"num_predict": 50},
    });
    let (status, v) = post(b, "/api/chat", follow).await;
    assert_eq!(status, 200, "{v}");
    for (body, param) in [
        (json!({"messages": user("a"), "tools": {"a": 1}}), "tools"),
        (
            json!({"messages": user("a"), "tools": [{"type": "function", "function": {"name": "bad name"}}]}),
            "tools",
        ),
        (json!({"prompt": "a", "tools": [weather_tool()]}), "tools"),
    ] {
        let path = if body.get("prompt").is_some() {
            "/api/generate"
        } else {
            "/api/chat"
        };
        let (status, v) = post(b, path, body.clone()).await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some(param)),
            "{body}: {v}"
        );
    }
}

/// The events of an Anthropic stream: (name, data).
async fn anthropic_stream(base: &str, body: Value) -> Vec<(String, Value)> {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| e.contains("data: "))
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_string();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_messages_whole_streamed_and_with_tools() {
    let s = start(1, 4).await;
    let b = &s.base;
    let body = json!({"model": "demo", "max_tokens": 64, "temperature": 0,
                      "messages": user(DEMO_PROMPT)});
    let (status, v) = post(b, "/v1/messages", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["content"][0]["text"], CHAT_REPLY);
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 11);
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = anthropic_stream(b, streamed).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, CHAT_REPLY);
    let end = &events[events.len() - 2].1;
    assert_eq!(
        (
            end["delta"]["stop_reason"].as_str(),
            end["usage"]["output_tokens"].as_u64()
        ),
        (Some("end_turn"), Some(11))
    );

    // A system prompt, max_tokens, a stop sequence.
    let (_, v) = post(
        b,
        "/v1/messages",
        // Greedy: sampled at Anthropic's default temperature (1), the end
        // of generation came first in one CI run of many.
        json!({"model": "demo", "max_tokens": 3, "temperature": 0, "system": "Be brief.",
        "messages": user(DEMO_PROMPT)}),
    )
    .await;
    assert_eq!(v["stop_reason"], "max_tokens", "{v}");
    let (_, v) = post(
        b,
        "/v1/messages",
        json!({"model": "demo", "max_tokens": 64, "temperature": 0,
        "stop_sequences": ["lived"], "messages": user(DEMO_PROMPT)}),
    )
    .await;
    assert_eq!(v["stop_reason"], "stop_sequence", "{v}");
    assert_eq!(v["content"][0]["text"], " a time there ");

    // Tools: `any` makes the model call one.
    let tool = json!({"name": "weather", "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"]}});
    let ask = json!({"model": "demo", "max_tokens": 1000, "temperature": 0, "tools": [tool],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "messages": user("What is the weather in Paris?")});
    let (status, v) = post(b, "/v1/messages", ask.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stop_reason"], "tool_use", "{v}");
    let call = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "tool_use")
        .unwrap()
        .clone();
    assert_eq!(call["name"], "weather");
    assert!(
        ["Paris", "Rome"].contains(&call["input"]["city"].as_str().unwrap()),
        "{call}"
    );
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let events = anthropic_stream(b, streamed).await;
    let start = events
        .iter()
        .find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .unwrap();
    assert_eq!(start.1["content_block"]["name"], "weather");
    let json_text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json_text).unwrap(),
        call["input"]
    );
    // The call and its result go back.
    let follow = json!({"model": "demo", "max_tokens": 20, "tools": [tool], "messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [call.clone()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}]},
    ]});
    let (status, v) = post(b, "/v1/messages", follow).await;
    assert_eq!(status, 200, "{v}");

    // Structured output (output_config.format), and thinking left to the
    // template (`adaptive`).
    let schema = json!({"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}},
                        "required": ["city"], "additionalProperties": false});
    let (status, v) = post(
        b,
        "/v1/messages",
        json!({"model": "demo", "max_tokens": 1000, "temperature": 0,
        "output_config": {"effort": "low", "format": {"type": "json_schema", "schema": schema}},
        "thinking": {"type": "adaptive"}, "messages": user("Where?")}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let answer: Value = serde_json::from_str(v["content"][0]["text"].as_str().unwrap()).unwrap();
    assert!(
        ["Paris", "Rome"].contains(&answer["city"].as_str().unwrap()),
        "{answer}"
    );

    // Errors in Anthropic's shape.
    for (body, want) in [
        (json!({"model": "demo", "messages": user("a")}), 400),
        (
            json!({"model": "demo", "max_tokens": 0, "messages": user("a")}),
            400,
        ),
        (
            json!({"model": "demo", "max_tokens": 5, "messages": []}),
            400,
        ),
        (
            json!({"model": "demo", "max_tokens": 5, "messages": [{"role": "system", "content": "a"}]}),
            400,
        ),
        (
            json!({"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}),
            400,
        ),
        (
            json!({"model": "demo", "max_tokens": 5, "temperature": 1.5, "messages": user("a")}),
            400,
        ),
        (
            json!({"model": "demo", "max_tokens": 5, "tool_choice": {"type": "any"}, "messages": user("a")}),
            400,
        ),
        (
            json!({"model": "demo", "max_tokens": 5, "tools": [{"name": "x y", "input_schema": {}}], "messages": user("a")}),
            400,
        ),
        (
            json!({"model": "other", "max_tokens": 5, "messages": user("a")}),
            404,
        ),
    ] {
        let (status, v) = post(b, "/v1/messages", body.clone()).await;
        assert_eq!(status, want, "{body}: {v}");
        assert_eq!(v["type"], "error", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_mounts_under_a_prefix_with_its_layers() {
    use llama_safe::LlamaBackend;
    let model = llama_safe::LlamaModel::load(
        &LlamaBackend::init(),
        DemoModel::Moe.cached().unwrap(),
        &Default::default(),
    )
    .unwrap();
    let state = llama_safe_server::AppState::new(model, "demo", engine(1)).unwrap();
    let config = ServerConfig::default()
        .with_api_key("k")
        .with_max_body_bytes(4096);
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "my service" }))
        .nest("/llm", llama_safe_server::router(state, &config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    assert_eq!(
        reqwest::get(format!("{base}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "my service"
    );
    assert_eq!(call(&base, "/llm/health", None, None).await.0, 200);
    assert_eq!(call(&base, "/llm/v1/models", None, None).await.0, 401);
    let (status, v) = call(
        &base,
        "/llm/v1/completions",
        Some("k"),
        Some(json!({"prompt": DEMO_PROMPT, "temperature": 0})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], DEMO_CONTINUATION);
    // The body limit comes with the router.
    let (status, v) = call(
        &base,
        "/llm/v1/completions",
        Some("k"),
        Some(json!({"prompt": "x".repeat(5000)})),
    )
    .await;
    assert_eq!(status, 413, "{v}");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speculative_decoding_gives_the_same_text_and_counts_its_drafts() {
    speculates_as_without(engine(2).with_max_draft(8)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draft_model_gives_the_same_text_and_counts_its_drafts() {
    // The dense demo model (same vocabulary) drafting for the MoE one, as
    // `--model-draft` sets it up.
    let draft = llama_safe::LlamaModel::load(
        &llama_safe::LlamaBackend::init(),
        DemoModel::Dense.cached().unwrap(),
        &Default::default(),
    )
    .unwrap();
    let draft = llama_safe::DraftModel::new(draft).with_p_min(0.0);
    speculates_as_without(
        engine(2).with_speculation(llama_safe::Speculation::draft_model(draft).with_draft_max(8)),
    )
    .await;
}

/// A server with `config` drafting: the same text as with
/// `speculative.n_max: 0`, drafts in the stats and /metrics, bad bounds
/// refused.
async fn speculates_as_without(config: llama_safe::engine::EngineConfig) {
    let s = start_configured(
        &DemoModel::Moe.cached().unwrap(),
        config,
        ServerConfig::default(),
    )
    .await;
    let b = &s.base;
    let repeating =
        "Once upon a time there lived one tiny model with many experts. Once upon a time";
    let ask = |extra: Value| {
        let mut body = json!({"prompt": repeating, "temperature": 0, "max_tokens": 100, "logit_bias": {"2": -100}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let (status, fast) = post(b, "/v1/completions", ask(json!({}))).await;
    assert_eq!(status, 200, "{fast}");
    let (_, plain) = post(b, "/v1/completions", ask(json!({"speculative.n_max": 0}))).await;
    assert_eq!(fast["choices"][0]["text"], plain["choices"][0]["text"]);
    assert_eq!(fast["usage"]["completion_tokens"], 100);
    // The stats say what it drafted; /metrics counts it.
    let (_, v) = post(b, "/api/generate", json!({"prompt": repeating, "stream": false, "options": {"temperature": 0, "num_predict": 60}})).await;
    let drafted = v["stats"]["drafted_tokens"].as_u64().unwrap();
    let accepted = v["stats"]["accepted_tokens"].as_u64().unwrap();
    assert!(accepted > 0 && accepted <= drafted, "{v}");
    let text = reqwest::get(format!("{b}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("llama_speculative_accepted_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(counted >= accepted, "{text}");
    for (body, param) in [
        (
            ask(json!({"speculative.n_max": 2, "speculative.n_min": 3})),
            "speculative.n_min",
        ),
        (ask(json!({"speculative.n_max": "x"})), "speculative.n_max"),
        (ask(json!({"speculative.n_max": -1})), "speculative.n_max"),
    ] {
        let (status, v) = post(b, "/v1/completions", body.clone()).await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some(param)),
            "{body}: {v}"
        );
    }
}
