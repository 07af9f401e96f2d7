//! Chat templates rendered from the model's own Jinja template: the
//! templates of the families people run, written into the demo model's
//! metadata, against llama.cpp's built-in versions of the same templates
//! and against known text; tools; a hostile template cannot hang.

mod common;
#[path = "common/gguf_layout.rs"]
#[allow(dead_code)]
mod gguf_layout;

use common::*;
use gguf_layout::{string_value, ty, Layout};
use llama_safe::chat::{render, render_builtin, ChatMessage, Tool, ToolCall};
use llama_safe::*;

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const LLAMA3: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

const GEMMA: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";

const PHI3: &str = "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}";

/// Qwen2.5's template (tools included), as its GGUF files carry it.
const QWEN25: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

/// The demo model with `template` as its `tokenizer.chat_template`.
fn model_with(template: &str) -> LlamaModel {
    let layout = Layout::parse(std::fs::read(moe_path()).unwrap());
    let mut kvs = layout.kv_triples();
    for kv in kvs
        .iter_mut()
        .filter(|(k, _, _)| k == "tokenizer.chat_template")
    {
        *kv = (kv.0.clone(), ty::STRING, string_value(template));
    }
    // One folder per call: tests run in parallel in one process, and
    // `scratch` empties the folder it names.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = scratch(&format!("template-{n}")).join("m.gguf");
    std::fs::write(&path, layout.rebuild(&kvs)).unwrap();
    LlamaModel::load(&LlamaBackend::init(), &path, &Default::default()).unwrap()
}

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("user", "Hello there"),
        ChatMessage::new("assistant", "Hi! How can I help?"),
        ChatMessage::new("user", "Tell me a story."),
    ]
}

#[test]
fn family_templates_render_as_llama_cpps_built_ins_do() {
    for (name, template) in [
        ("chatml", CHATML),
        ("llama3", LLAMA3),
        ("gemma", GEMMA),
        ("phi3", PHI3),
    ] {
        let model = model_with(template);
        for add in [true, false] {
            let ours = model.apply_chat_template(&conversation(), add).unwrap();
            let theirs = render_builtin(template, &conversation(), add).unwrap();
            if name == "phi3" && !add {
                // Phi-3's own template ends a finished chat with EOS; llama.cpp's
                // built-in leaves it out. The model's template wins.
                assert_eq!(ours, theirs + "</s>");
            } else {
                assert_eq!(ours, theirs, "{name}, add_generation_prompt {add}");
            }
        }
    }
}

#[test]
fn known_text_and_template_errors() {
    let m = model_with(LLAMA3);
    let text = m
        .apply_chat_template(&[ChatMessage::new("user", "  Hi  ")], true)
        .unwrap();
    // The vocabulary adds BOS when the prompt is tokenized, so the template
    // gets an empty bos_token (as llama.cpp's built-ins leave it out).
    assert_eq!(
        text,
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    // raise_exception is an error the caller sees.
    let err = render(
        GEMMA,
        &[ChatMessage::new("system", "x")],
        &[],
        true,
        "<bos>",
        "<eos>",
    );
    assert!(
        matches!(&err, Err(Error::ChatTemplateRaised { message }) if message.contains("System role not supported")),
        "{err:?}"
    );
    // A template that would run forever is stopped.
    let forever =
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
    let start = std::time::Instant::now();
    assert!(render(forever, &conversation(), &[], true, "", "").is_err());
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
    // strftime_now gives a date.
    let date = render("{{ strftime_now('%d %b %Y') }}", &[], &[], false, "", "").unwrap();
    assert_eq!(date.len(), 11, "{date}");
}

#[test]
fn tools_tool_calls_and_tool_results_reach_the_template() {
    let model = model_with(QWEN25);
    let tools = [Tool {
        name: "get_weather".into(),
        description: "The weather in a city".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }];
    let messages = vec![
        ChatMessage::new("user", "Weather in Paris?"),
        ChatMessage::tool_calls(vec![ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: serde_json::json!({"city": "Paris"}),
        }]),
        ChatMessage::tool_result("call_1", "18 C, sunny"),
    ];
    let text = model
        .apply_chat_template_with_tools(&messages, &tools, true)
        .unwrap();
    assert!(
        text.starts_with("<|im_start|>system\nYou are Qwen"),
        "{text}"
    );
    // tojson as Python's json.dumps writes it (what the models were trained
    // on): keys in order, ", " and ": " separators.
    assert!(text.contains(r#"{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}"#), "{text}");
    assert!(text.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>"), "{text}");
    assert!(
        text.contains(
            "<|im_start|>user\n<tool_response>\n18 C, sunny\n</tool_response><|im_end|>\n"
        ),
        "{text}"
    );
    assert!(text.ends_with("<|im_start|>assistant\n"));
    // Without tools, the same template renders the plain system prompt.
    let plain = model
        .apply_chat_template(&[ChatMessage::new("user", "Hi")], true)
        .unwrap();
    assert_eq!(plain, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

/// Regression (audit round 3): every failure to render the model's template
/// fell back to llama.cpp's built-in one, so a template's own refusal and a
/// template over its budget gave a prompt in another format. Now they are
/// typed errors; only a template the renderer cannot run falls back, and
/// says so.
#[test]
fn a_refusal_and_a_budget_are_errors_and_only_a_template_that_cannot_run_falls_back() {
    use llama_safe::chat::TemplateOptions;
    use llama_safe::{LlamaBackend, LlamaModel, LlamaModelParams};
    let backend = LlamaBackend::init();
    let path = llama_safe::demo::DemoModel::Moe.cached().unwrap();
    let with = |template: &str| {
        let params = LlamaModelParams::default().with_chat_template(template);
        LlamaModel::load(&backend, &path, &params).unwrap()
    };
    let user = [ChatMessage::new("user", "Hi")];
    let options = TemplateOptions::default();

    let model = with(GEMMA);
    let err = model.apply_chat_template(&[ChatMessage::new("system", "x")], true);
    assert!(
        matches!(&err, Err(Error::ChatTemplateRaised { message }) if message.contains("System role not supported")),
        "{err:?}"
    );
    assert_eq!(err.unwrap_err().kind(), llama_safe::ErrorKind::InvalidInput);
    let ok = model.render_chat(&user, &options).unwrap();
    assert_eq!(ok.fallback, None);

    let model = with("{{ 'x' * 100000000 }}");
    let err = model.render_chat(&user, &options);
    assert!(
        matches!(err, Err(Error::ChatTemplateBudget { .. })),
        "{err:?}"
    );
    let model =
        with("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}");
    let err = model.render_chat(&user, &options);
    assert!(
        matches!(err, Err(Error::ChatTemplateBudget { .. })),
        "{err:?}"
    );

    // A template this renderer cannot run (here, a syntax error in a
    // ChatML template): llama.cpp's built-in ChatML, said in the result.
    let model = with("<|im_start|>{% for m in messages %}{{ m.role }{% endfor %}");
    let prompt = model.render_chat(&user, &options).unwrap();
    assert!(
        prompt.text.contains("<|im_start|>user\nHi<|im_end|>"),
        "{prompt:?}"
    );
    assert!(
        prompt
            .fallback
            .as_deref()
            .is_some_and(|w| w.contains("chat template")),
        "{prompt:?}"
    );
}
