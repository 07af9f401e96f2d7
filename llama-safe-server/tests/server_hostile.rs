//! The server under the hostile inputs of the library's surfaces (chat
//! templates, JSON schemas, tools, sampling fields): a generated corpus of
//! request bodies over real HTTP, the regressions an audit found, and one
//! hostile client beside a well-behaved one. Each test runs its server in a
//! child process (`in_child`), so a crash is a failure here, not a dead
//! test run. All traffic is loopback; every loop is bounded.

#[path = "../../llama-safe/tests/common/child.rs"]
mod child;
#[path = "../../llama-safe/tests/common/gguf_layout.rs"]
#[allow(dead_code)]
mod gguf_layout;
mod support;

use child::{in_child, peak_rss, Rng};
use gguf_layout::{string_value, ty, Layout};
use llama_safe::demo::{DemoModel, DEMO_PROMPT};
use llama_safe::engine::EngineConfig;
use llama_safe::*;
use llama_safe_server::Timeouts;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::health;

const LIMIT: Duration = Duration::from_secs(300);
/// Peak resident memory of a child (server and client in one process).
const MAX_RSS: u64 = 1 << 30;

/// A chat template that renders ChatML, and runs one of the audit's
/// kill switches when the last message names it.
const HOSTILE_TEMPLATE: &str = "{% set ns = namespace() %}\
{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% set last = messages[-1].content %}\
{% if 'KILL-cycle' in last %}{% set ns.me = ns %}{{ ns }}{% endif %}\
{% if 'KILL-json' in last %}{% set ns.me = ns %}{{ ns|tojson }}{% endif %}\
{% if 'KILL-format' in last %}{{ '{:>100000000000}'.format('x') }}{% endif %}\
{% if 'KILL-indent' in last %}{{ messages|tojson(indent=100000000000) }}{% endif %}\
{% if 'KILL-replace' in last %}{% set s = 'x'*100000 %}{{ s.replace('', s) }}{% endif %}\
{% if 'KILL-long' in last %}{{ 'x' * 100000000 }}{% endif %}\
{% if 'REFUSE' in last %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}{% endif %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

const KILLS: [&str; 6] = [
    "KILL-cycle",
    "KILL-json",
    "KILL-format",
    "KILL-indent",
    "KILL-replace",
    "KILL-long",
];

/// The demo model with [`HOSTILE_TEMPLATE`] as its chat template.
fn hostile_model() -> PathBuf {
    let layout = Layout::parse(std::fs::read(DemoModel::Moe.cached().unwrap()).unwrap());
    let mut kvs = layout.kv_triples();
    for kv in kvs
        .iter_mut()
        .filter(|(k, _, _)| k == "tokenizer.chat_template")
    {
        *kv = (kv.0.clone(), ty::STRING, string_value(HOSTILE_TEMPLATE));
    }
    let dir = std::env::temp_dir().join(format!("llama-safe-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hostile-template.gguf");
    std::fs::write(&path, layout.rebuild(&kvs)).unwrap();
    path
}

/// Every request drafts (prompt lookup, up to 4 tokens) unless it says
/// otherwise: the hostile bodies run through speculative decoding too.
fn config() -> EngineConfig {
    EngineConfig::default()
        .with_n_ctx(2048)
        .with_n_parallel(2)
        .with_threads(1)
        .with_queue(8)
        .with_max_draft(4)
}

/// The hostile model served with the demo projector (so media in the
/// corpus reach the decoders), or without one when built without `mtmd`.
async fn start_with_projector(path: &std::path::Path) -> support::Server {
    #[cfg(feature = "mtmd")]
    {
        use llama_safe::media::{Projector, ProjectorParams};
        let model = llama_safe::LlamaModel::load(
            &llama_safe::LlamaBackend::init(),
            path,
            &Default::default(),
        )
        .unwrap();
        let params = ProjectorParams::default().with_gpu(false).with_n_threads(1);
        let projector = Projector::load(
            &model,
            llama_safe::demo::DemoProjector::cached().unwrap(),
            &params,
        )
        .unwrap();
        let state = llama_safe_server::AppState::new_with_projector(
            model,
            "demo",
            Vec::new(),
            config(),
            projector,
        )
        .unwrap();
        let server = llama_safe_server::ServerConfig::default().with_timeouts(Timeouts::default());
        support::start_state(state, server).await
    }
    #[cfg(not(feature = "mtmd"))]
    support::start_model(path, config(), Timeouts::default()).await
}

/// Runs `body` on a fresh runtime (inside the child process).
fn block_on<F: std::future::Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body)
}

/// POSTs `body`; the status and the answer's text (JSON or a stream).
async fn send(client: &reqwest::Client, base: &str, path: &str, body: &Value) -> (u16, String) {
    let r = client
        .post(format!("{base}{path}"))
        .json(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path} {body}: {e}"));
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// The demo vocabulary's `[` token.
fn open_bracket() -> u32 {
    let model = LlamaModel::load(
        &LlamaBackend::init(),
        DemoModel::Moe.cached().unwrap(),
        &Default::default(),
    )
    .unwrap();
    (0..model.n_vocab() as i32)
        .find(|&t| model.token_bytes(Token(t), false).is_ok_and(|b| b == b"["))
        .expect("a '[' token") as u32
}

/// A chat request whose schema's grammar doubles its parse stacks at every
/// `[`, with `[` (token `bracket`) forced at every step.
fn ambiguous_request(bracket: u32) -> Value {
    let schema = json!({"$defs": {"a": {"anyOf": [
        {"type": "array", "items": {"$ref": "#/$defs/a"}},
        {"type": "array", "items": {"$ref": "#/$defs/a"}}]}},
        "$ref": "#/$defs/a"});
    json!({"messages": [{"role": "user", "content": "go"}], "max_tokens": 64,
           "logit_bias": {bracket.to_string(): 100},
           "response_format": {"type": "json_schema",
               "json_schema": {"name": "a", "schema": schema}}})
}

/// Runs `body` in a child process, against a server of the demo model with
/// [`HOSTILE_TEMPLATE`], given the `[` token; then checks the child's peak
/// memory.
fn with_hostile_server<F>(test_name: &str, body: impl FnOnce(support::Server, u32) -> F)
where
    F: std::future::Future<Output = ()>,
{
    in_child(test_name, LIMIT, || {
        let path = hostile_model();
        let bracket = open_bracket();
        block_on(async move {
            let s = start_with_projector(&path).await;
            body(s, bracket).await;
        });
        assert!(peak_rss() < MAX_RSS, "peak RSS {} MiB", peak_rss() >> 20);
    });
}

#[test]
fn template_and_schema_regressions_are_4xx_and_the_server_lives() {
    with_hostile_server(
        "template_and_schema_regressions_are_4xx_and_the_server_lives",
        |s, bracket| async move {
            let c = reqwest::Client::new();
            for kill in KILLS {
                for endpoint in ["/v1/chat/completions", "/api/chat"] {
                    let body = json!({"messages": [{"role": "user", "content": kill}],
                                          "max_tokens": 4, "stream": false});
                    let start = Instant::now();
                    // A template over its budget on this input is the
                    // request's 400 (regression, audit round 3: it fell back
                    // to llama.cpp's built-in template and answered 200 in
                    // another format); never a dead server.
                    let (status, text) = send(&c, &s.base, endpoint, &body).await;
                    assert_eq!(status, 400, "{kill} on {endpoint}: {text}");
                    assert!(text.contains("budget"), "{kill} on {endpoint}: {text}");
                    assert!(start.elapsed() < Duration::from_secs(10), "{kill}");
                }
            }
            // The template's own refusal is a 400 with its message.
            for endpoint in ["/v1/chat/completions", "/api/chat"] {
                let body = json!({"messages": [{"role": "user", "content": "REFUSE"}],
                                  "max_tokens": 4, "stream": false});
                let (status, text) = send(&c, &s.base, endpoint, &body).await;
                assert_eq!(status, 400, "{endpoint}: {text}");
                assert!(text.contains("roles must alternate"), "{endpoint}: {text}");
            }
            // The ambiguous schema, with '[' forced at every step: the
            // request ends with a 400 instead of stalling the engine.
            let start = Instant::now();
            let (status, text) = send(
                &c,
                &s.base,
                "/v1/chat/completions",
                &ambiguous_request(bracket),
            )
            .await;
            assert_eq!(status, 400, "{text}");
            assert!(text.contains("grammar over budget"), "{text}");
            assert!(start.elapsed() < Duration::from_secs(10));
            // Schemas the converter refuses: 4xx at once.
            let many: Vec<String> = (0..100_000).map(|i| format!("v{i}")).collect();
            for schema in [
                json!({"enum": many}),
                json!({"type": "string", "maxLength": 5000}),
            ] {
                let start = Instant::now();
                let (status, text) = send(
                    &c,
                    &s.base,
                    "/api/chat",
                    &json!({"messages": [{"role": "user", "content": "go"}], "format": schema,
                                "stream": false}),
                )
                .await;
                assert_eq!(status, 400, "{text}");
                assert!(start.elapsed() < Duration::from_secs(5));
            }
            // And the server still answers a plain chat.
            let (status, text) = send(
                &c,
                &s.base,
                "/v1/chat/completions",
                &json!({"messages": [{"role": "user", "content": DEMO_PROMPT}], "max_tokens": 4}),
            )
            .await;
            assert_eq!(status, 200, "{text}");
            assert_eq!(health(&s.base).await["status"], "ok");
        },
    );
}

/// A request for the routes that do not generate with the OpenAI/Ollama
/// body (embeddings, tokens, Anthropic's messages): valid and hostile
/// values mixed.
fn other_case(rng: &mut Rng) -> (&'static str, Value) {
    let text = |rng: &mut Rng| -> Value {
        match rng.below(7) {
            0 => json!(""),
            1 => json!("x".repeat(rng.below(200_000))),
            2 => json!(12),
            3 => json!(null),
            4 => json!(vec!["a"; rng.below(600)]),
            5 => json!([DEMO_PROMPT, "", 3]),
            _ => json!(DEMO_PROMPT),
        }
    };
    match rng.below(7) {
        // Model management and keep-alives (audit round 3): names that are
        // no model, and durations that are none.
        5 => (
            *rng.pick(&["/models/unload", "/models/load"]),
            json!({"model": *rng.pick(&[json!("demo"), json!("x"), json!(""), json!(3), json!("../../etc/passwd"), json!(null)])}),
        ),
        6 => (
            *rng.pick(&["/api/generate", "/api/chat"]),
            json!({
                "prompt": *rng.pick(&[json!(DEMO_PROMPT), json!(null)]),
                "keep_alive": *rng.pick(&[json!(""), json!("inf"), json!("-inf"), json!("NaN"), json!(0), json!(-1), json!("5m"), json!("1e400"), json!([]), json!({})]),
                "options": {"num_predict": 2},
                "stream": false,
            }),
        ),
        0 => (
            "/v1/embeddings",
            json!({"input": text(rng), "encoding_format": *rng.pick(&[json!("float"), json!("base64"), json!("x"), json!(1)])}),
        ),
        1 => (
            "/api/embed",
            json!({"model": *rng.pick(&["demo", "x"]), "input": text(rng), "truncate": *rng.pick(&[json!(true), json!(false), json!("yes")])}),
        ),
        2 => (
            "/tokenize",
            json!({"content": text(rng), "add_special": rng.below(2) == 0, "with_pieces": rng.below(2) == 0}),
        ),
        3 => (
            "/detokenize",
            json!({"tokens": *rng.pick(&[json!([1, 2, 3]), json!([-5]), json!([1u64 << 40]), json!(vec![7; 5000]), json!("x")])}),
        ),
        _ => {
            let content = match rng.below(5) {
                0 => {
                    json!([{"type": "tool_result", "tool_use_id": "x", "content": [{"type": "image"}]}])
                }
                1 => json!([{"type": "tool_use", "id": "x", "name": "f", "input": 3}]),
                2 => json!([{"type": "nonsense"}]),
                3 => text(rng),
                _ => json!(DEMO_PROMPT),
            };
            (
                "/v1/messages",
                json!({
                    "model": *rng.pick(&["demo", "default", "x"]),
                    "max_tokens": *rng.pick(&[json!(4), json!(0), json!(-1), json!(1u64 << 40), json!("4")]),
                    "messages": [{"role": *rng.pick(&["user", "assistant", "system"]), "content": content}],
                    "system": *rng.pick(&[json!(null), json!("be brief"), json!([{"type": "image"}]), json!(KILLS[0])]),
                    "tools": *rng.pick(&[json!(null), json!([{"name": "f", "input_schema": {"type": "string", "maxLength": 5000}}]), json!([{"name": "", "input_schema": 1}])]),
                    "thinking": *rng.pick(&[json!(null), json!({"type": "enabled"}), json!({"type": "x"})]),
                    "stream": rng.below(2) == 0,
                }),
            )
        }
    }
}

/// One generated request: an endpoint and a body mixing valid and hostile
/// fields.
/// Content parts with media, good and bad: a small PNG, garbage base64, a
/// remote URL, a PNG header claiming 16,000 × 16,000 pixels, audio, too
/// many images, a stray marker.
fn media_parts(rng: &mut Rng) -> Value {
    const PNG_1X1: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
    const BOMB: &str = "iVBORw0KGgoAAAANSUhEUgAAPoAAAD6ACAIAAADOHEiJAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";
    let image = |data: &str| json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{data}")}});
    let text = json!({"type": "text", "text": *rng.pick(&[DEMO_PROMPT, "<__media__>", ""])});
    let part = match rng.below(7) {
        0 => image(PNG_1X1),
        1 => image("@@not base64@@"),
        2 => json!({"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/x.png"}}),
        3 => image(BOMB),
        4 => {
            json!({"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}})
        }
        5 => {
            return json!((0..rng.below(60))
                .map(|_| image(PNG_1X1))
                .chain([text])
                .collect::<Vec<_>>())
        }
        _ => image(&PNG_1X1[..40]),
    };
    json!([part, text])
}

fn body_case(rng: &mut Rng) -> (&'static str, Value) {
    if rng.below(3) == 0 {
        return other_case(rng);
    }
    let endpoint = *rng.pick(&[
        "/v1/completions",
        "/v1/chat/completions",
        "/api/generate",
        "/api/chat",
    ]);
    let chat = endpoint.ends_with("chat") || endpoint.ends_with("chat/completions");
    let text = |rng: &mut Rng| -> Value {
        match rng.below(8) {
            0 => json!(""),
            1 => json!(*rng.pick(&KILLS)),
            2 => json!("x".repeat(rng.below(20_000))),
            3 => json!(12),
            4 => json!(null),
            5 => json!([{"type": "text", "text": "hi"}, {"type": "image_url"}]),
            6 => media_parts(rng),
            _ => json!(DEMO_PROMPT),
        }
    };
    let mut body = serde_json::Map::new();
    if chat {
        let n = rng.below(4);
        let messages: Vec<Value> = (0..n)
            .map(|_| {
                json!({"role": *rng.pick(&["user", "assistant", "system", "tool", "nobody", ""]),
                       "content": text(rng)})
            })
            .collect();
        body.insert("messages".into(), json!(messages));
    } else {
        body.insert("prompt".into(), text(rng));
    }
    let schema = || -> Value {
        json!([
            {"type": "object", "properties": {"a": {"type": "integer"}}},
            {"enum": (0..5000).map(|i| i.to_string()).collect::<Vec<_>>()},
            {"type": "string", "maxLength": 2500},
            {"type": "string", "pattern": "a+"},
            {"$ref": "#/nowhere"},
            {"type": "array", "items": {"type": "array"}, "maxItems": 3},
            {"const": {"a": [[[[[[1]]]]]]}},
            {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
            "not a schema",
            {"type": "object", "properties": (0..600).map(|i| (format!("p{i}"), json!({"type": "string"}))).collect::<serde_json::Map<_, _>>()}
        ])
    };
    for _ in 0..rng.below(5) {
        let (key, value) = match rng.below(16) {
            15 => (
                *rng.pick(&["speculative.n_max", "speculative.n_min"]),
                json!(*rng.pick(&[
                    json!(0),
                    json!(2),
                    json!(64),
                    json!(-1),
                    json!("4"),
                    json!(1u64 << 40)
                ])),
            ),
            13 => (
                *rng.pick(&["think", "logprobs", "top_logprobs"]),
                json!(*rng.pick(&[
                    json!(true),
                    json!(false),
                    json!(3),
                    json!(21),
                    json!("high"),
                    json!(-1)
                ])),
            ),
            14 => (
                "chat_template_kwargs",
                json!(*rng.pick(&[
                    json!({"enable_thinking": false}),
                    json!({"enable_thinking": "x"}),
                    json!(3)
                ])),
            ),
            0 => ("max_tokens", json!(*rng.pick(&[0i64, 1, 4, -1, 1 << 40]))),
            1 => ("temperature", json!(*rng.pick(&[0.0, 1.0, -1.0, 1e300]))),
            2 => ("top_p", json!(*rng.pick(&[0.0, 0.5, 2.0]))),
            3 => (
                "stop",
                json!(*rng.pick(&[json!(["."]), json!(""), json!(vec!["a"; 100]), json!(3)])),
            ),
            4 => (
                "logit_bias",
                json!(*rng.pick(&[
                    json!({"5": 100}),
                    json!({"-1": 1}),
                    json!({"x": 1}),
                    json!({"99999999": 1})
                ])),
            ),
            5 => {
                let list = schema();
                let s = list.as_array().unwrap()[rng.below(10)].clone();
                (
                    "response_format",
                    json!({"type": "json_schema", "json_schema": {"name": "x", "schema": s}}),
                )
            }
            6 => {
                let list = schema();
                ("format", list.as_array().unwrap()[rng.below(10)].clone())
            }
            7 => {
                let list = schema();
                let s = list.as_array().unwrap()[rng.below(10)].clone();
                (
                    "tools",
                    json!([{"type": "function", "function": {"name": "f", "parameters": s}}]),
                )
            }
            8 => (
                "tool_choice",
                json!(*rng.pick(&[
                    json!("required"),
                    json!("none"),
                    json!({"type": "function", "function": {"name": "g"}})
                ])),
            ),
            9 => (
                "options",
                json!({"num_predict": 4, "temperature": 0, "repeat_last_n": *rng.pick(&[-5i64, 64, 1 << 40])}),
            ),
            10 => ("stream", json!(rng.below(2) == 0)),
            11 => (
                *rng.pick(&[
                    "images", "system", "template", "context", "raw", "suffix", "n",
                ]),
                json!(*rng.pick(&[json!(["aGk="]), json!("x"), json!(false), json!(2)])),
            ),
            _ => ("model", json!(*rng.pick(&["demo", "default", "other", ""]))),
        };
        body.insert(key.into(), value);
    }
    // Keep the answers short: the corpus is about input, not output.
    body.entry("max_tokens").or_insert(json!(4));
    (endpoint, Value::Object(body))
}

#[test]
fn request_corpus_gets_answers_or_4xx_never_a_crash() {
    with_hostile_server(
        "request_corpus_gets_answers_or_4xx_never_a_crash",
        |s, _| async move {
            let c = reqwest::Client::new();
            let mut rng = Rng(0x5e7e_c0de);
            let mut by_status = std::collections::BTreeMap::new();
            for i in 0..500 {
                let (endpoint, body) = body_case(&mut rng);
                let start = Instant::now();
                let (status, text) = send(&c, &s.base, endpoint, &body).await;
                assert!(
                    status == 200 || (400..500).contains(&status),
                    "case {i} {endpoint} {body:.300}: {status} {text:.300}"
                );
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "case {i} {endpoint} took {:?}",
                    start.elapsed()
                );
                *by_status.entry(status).or_insert(0) += 1;
            }
            eprintln!("500 requests: {by_status:?}");
            assert!(by_status.contains_key(&200) && by_status.contains_key(&400));
            assert_eq!(health(&s.base).await["status"], "ok");
        },
    );
}

#[test]
fn one_hostile_client_stalls_neither_health_nor_a_stream() {
    with_hostile_server(
        "one_hostile_client_stalls_neither_health_nor_a_stream",
        |s, bracket| async move {
            let base = s.base.clone();
            let hostile = {
                let base = base.clone();
                tokio::spawn(async move {
                    let c = reqwest::Client::new();
                    let many: Vec<String> = (0..100_000).map(|i| format!("v{i}")).collect();
                    let worst = [
                        ("/v1/chat/completions", ambiguous_request(bracket)),
                        (
                            "/api/chat",
                            json!({"messages": [{"role": "user", "content": "go"}],
                            "format": {"enum": many}, "stream": false}),
                        ),
                        (
                            "/v1/chat/completions",
                            json!({"messages": [{"role": "user", "content": "KILL-long"}]}),
                        ),
                        (
                            "/v1/chat/completions",
                            json!({"messages": [{"role": "user", "content": "KILL-replace"}]}),
                        ),
                        ("/v1/completions", json!({"prompt": "x".repeat(1_000_000)})),
                    ];
                    let mut sent = 0;
                    let until = Instant::now() + Duration::from_secs(20);
                    while Instant::now() < until && sent < 200 {
                        let (path, body) = &worst[sent % worst.len()];
                        let (status, _) = send(&c, &base, path, body).await;
                        assert!(
                            status == 200 || (400..500).contains(&status),
                            "{path}: {status}"
                        );
                        sent += 1;
                    }
                    sent
                })
            };
            // A well-behaved stream: 48 tokens (end of generation banned),
            // no gap between its chunks longer than the bound.
            let stream = {
                let base = base.clone();
                tokio::spawn(async move {
                    let mut r = reqwest::Client::new()
                        .post(format!("{base}/v1/completions"))
                        .json(
                            &json!({"prompt": DEMO_PROMPT, "max_tokens": 48, "stream": true,
                                      "temperature": 0, "logit_bias": {"2": -100}}),
                        )
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let mut last = Instant::now();
                    let mut worst_gap = Duration::ZERO;
                    let mut chunks = 0;
                    while let Some(chunk) = r.chunk().await.unwrap() {
                        worst_gap = worst_gap.max(last.elapsed());
                        last = Instant::now();
                        chunks += usize::from(!chunk.is_empty());
                    }
                    (chunks, worst_gap)
                })
            };
            let mut times = Vec::new();
            for _ in 0..100 {
                let start = Instant::now();
                assert_eq!(health(&base).await["status"], "ok");
                times.push(start.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (chunks, worst_gap) = stream.await.unwrap();
            let sent = hostile.await.unwrap();
            times.sort();
            let p99 = times[98];
            eprintln!(
                "hostile requests {sent}; /health p99 {p99:?}; stream chunks {chunks}, worst gap {worst_gap:?}"
            );
            assert!(p99 < Duration::from_millis(100), "/health p99 {p99:?}");
            assert!(chunks >= 48, "the stream ended early: {chunks} chunks");
            assert!(
                worst_gap < Duration::from_secs(2),
                "the stream stalled {worst_gap:?}"
            );
            assert!(sent >= 10);
        },
    );
}
