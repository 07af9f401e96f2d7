//! Structured output on the demo model: JSON-schema grammars that llama.cpp
//! accepts and whose output follows the schema, lazy grammars that leave
//! the text free until their trigger, and tool calls written by the model
//! under a tool grammar and parsed back.

mod common;

use common::*;
use llama_safe::chat::{ToolCallFormat, ToolChoice};
use llama_safe::demo::{DEMO_CONTINUATION, DEMO_PROMPT};
use llama_safe::grammar::{json_object_grammar, json_schema_to_grammar};
use llama_safe::*;
use serde_json::{json, Value};

fn load() -> LlamaModel {
    load_moe()
}

/// Greedy generation of `prompt` under `stages` (ending with Greedy).
fn generate(
    model: &LlamaModel,
    prompt: &str,
    mut stages: Vec<SamplerStage>,
    max: u32,
) -> (String, StopReason) {
    stages.push(SamplerStage::Greedy);
    let mut ctx = LlamaContext::new(
        model,
        &ContextParams::default().with_n_ctx(2048).with_threads(1),
    )
    .unwrap();
    let options = GenerateOptions::default()
        .with_sampling(SamplingOptions::chain(stages))
        .with_max_tokens(max);
    let (mut text, mut reason) = (String::new(), None);
    for event in ctx.generate(prompt, &options).unwrap() {
        match event.unwrap() {
            Event::Piece(p) => text.push_str(&p.text),
            Event::Done(s) => reason = Some(s.stop_reason),
        }
    }
    (text, reason.unwrap())
}

#[test]
fn schema_grammars_make_the_model_write_json_that_follows_them() {
    let model = load();
    let schemas = [
        json!({"type": "object", "properties": {
            "city": {"enum": ["Paris", "Rome", "Oslo"]},
            "days": {"type": "integer", "minimum": 2, "maximum": 14},
            "ok": {"type": "boolean"},
        }, "required": ["city", "days", "ok"]}),
        json!({"type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 1, "maxItems": 3}),
        json!({"$defs": {"leaf": {"type": "integer", "minimum": -5, "maximum": 5}},
               "type": "object", "properties": {"a": {"$ref": "#/$defs/leaf"}, "b": {"const": "x"}},
               "required": ["a", "b"]}),
        json!({"type": "string", "format": "date"}),
    ];
    for schema in schemas {
        let grammar = json_schema_to_grammar(&schema).unwrap();
        let (text, reason) = generate(
            &model,
            DEMO_PROMPT,
            vec![SamplerStage::Grammar(grammar.clone())],
            1500,
        );
        assert_eq!(
            reason,
            StopReason::EndOfGeneration,
            "{schema}: {text:?}\n{grammar}"
        );
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        follows(&value, &schema, &schema);
    }
    // `response_format: json_object`: any object.
    let (text, _) = generate(
        &model,
        DEMO_PROMPT,
        vec![SamplerStage::Grammar(json_object_grammar())],
        1500,
    );
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        assert!(v.is_object(), "{text}");
    } else {
        // A free object may be cut by max_tokens; what was written is an object's start.
        assert!(text.trim_start().starts_with('{'), "{text}");
    }
}

/// Checks the parts of JSON schema the test's schemas use.
fn follows(v: &Value, schema: &Value, root: &Value) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return follows(v, root.pointer(&r[1..]).unwrap(), root);
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        assert!(values.contains(v), "{v} not in {values:?}");
    }
    if let Some(c) = schema.get("const") {
        assert_eq!(v, c);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let obj = v.as_object().unwrap();
            for key in schema["required"].as_array().unwrap() {
                assert!(obj.contains_key(key.as_str().unwrap()), "{v} lacks {key}");
            }
            for (k, val) in obj {
                follows(val, &schema["properties"][k], root);
            }
        }
        Some("array") => {
            let a = v.as_array().unwrap();
            assert!(a.len() as u64 >= schema["minItems"].as_u64().unwrap_or(0));
            assert!(a.len() as u64 <= schema["maxItems"].as_u64().unwrap_or(u64::MAX));
            for item in a {
                follows(item, &schema["items"], root);
            }
        }
        Some("string") => {
            let s = v.as_str().unwrap();
            assert!(s.chars().count() as u64 <= schema["maxLength"].as_u64().unwrap_or(u64::MAX));
            if schema["format"] == "date" {
                let parts: Vec<&str> = s.split('-').collect();
                assert!(parts.len() == 3 && parts[0].len() == 4, "{s}");
            }
        }
        Some("integer") => {
            let n = v.as_i64().unwrap();
            assert!(n >= schema["minimum"].as_i64().unwrap_or(i64::MIN), "{n}");
            assert!(n <= schema["maximum"].as_i64().unwrap_or(i64::MAX), "{n}");
        }
        Some("boolean") => assert!(v.is_boolean()),
        _ => {}
    }
}

#[test]
fn bad_schemas_are_typed_errors_naming_where() {
    let cases = [
        (json!({"type": "string", "pattern": "^a+$"}), "#"),
        (
            json!({"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}}),
            "#/properties/x",
        ),
        (json!({"type": "integer", "minimum": 5, "maximum": 1}), "#"),
        (
            json!({"type": "object", "properties": {"a": false}}),
            "#/properties/a",
        ),
        (json!({"type": "wat"}), "#"),
        (
            json!({"type": "object", "properties": {}, "required": ["a"]}),
            "#",
        ),
    ];
    for (schema, at) in cases {
        match json_schema_to_grammar(&schema) {
            Err(Error::JsonSchema { at: got, .. }) => assert_eq!(got, at, "{schema}"),
            other => panic!("{schema}: {other:?}"),
        }
    }
    // Deep nesting is refused, not a stack overflow.
    let mut deep = json!({"type": "integer"});
    for _ in 0..200 {
        deep = json!({"type": "array", "items": deep});
    }
    assert!(matches!(
        json_schema_to_grammar(&deep),
        Err(Error::JsonSchema { .. })
    ));
    // A recursive schema converts (its recursion is a rule referring to itself).
    let tree = json!({"$defs": {"node": {"type": "object", "properties": {
        "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}}}},
        "$ref": "#/$defs/node"});
    let grammar = json_schema_to_grammar(&tree).unwrap();
    let model = load();
    Sampler::new(&model, &SamplingOptions::greedy().with_grammar(grammar)).unwrap();
}

#[test]
fn a_lazy_grammar_leaves_the_text_free_until_its_trigger() {
    let model = load();
    // Not triggered: the demo sentence, unchanged.
    let lazy = |words: &[&str], grammar: &str| SamplerStage::LazyGrammar {
        grammar: grammar.into(),
        trigger_words: words.iter().map(|w| w.to_string()).collect(),
        trigger_tokens: Vec::new(),
    };
    let (text, _) = generate(
        &model,
        DEMO_PROMPT,
        vec![lazy(&["dragon"], r#"root ::= "dragon!""#)],
        64,
    );
    assert_eq!(text, DEMO_CONTINUATION);
    // Triggered by "lived" (across token boundaries: " lived" is one piece,
    // the word starts inside it): from there on the grammar writes.
    let (text, reason) = generate(
        &model,
        DEMO_PROMPT,
        vec![lazy(&["lived"], r#"root ::= "lived for ever.""#)],
        64,
    );
    assert_eq!(text, " there lived for ever.");
    assert_eq!(reason, StopReason::EndOfGeneration);
    // Triggers are checked.
    let bad = [
        lazy(&[], "root ::= \"a\""),
        lazy(&[""], "root ::= \"a\""),
        lazy(&["a\0b"], "root ::= \"a\""),
        lazy(&["a"], "root ::= (\"a\""),
    ];
    for stage in bad {
        let options = SamplingOptions::chain(vec![stage.clone(), SamplerStage::Greedy]);
        assert!(Sampler::new(&model, &options).is_err(), "{stage:?}");
    }
    // Regex metacharacters in a trigger word are matched literally.
    let (text, _) = generate(
        &model,
        DEMO_PROMPT,
        vec![lazy(&["l.ved"], r#"root ::= "x""#)],
        64,
    );
    assert_eq!(text, DEMO_CONTINUATION);
}

#[test]
fn tool_grammars_make_the_model_call_a_tool_and_the_parser_reads_the_call() {
    let model = load();
    let tools = [
        Tool {
            name: "weather".into(),
            description: "The weather in a city".into(),
            parameters: json!({"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"]}),
        },
        Tool {
            name: "time".into(),
            description: "The time in a zone".into(),
            parameters: json!({"type": "object", "properties": {"zone": {"type": "integer", "minimum": -12, "maximum": 12}}, "required": ["zone"]}),
        },
    ];
    for format in [
        ToolCallFormat::Hermes,
        ToolCallFormat::Mistral,
        ToolCallFormat::Llama3,
        ToolCallFormat::Generic,
    ] {
        for choice in [ToolChoice::Required, ToolChoice::Function("time".into())] {
            let stage = format.grammar(&tools, &choice, false).unwrap().unwrap();
            let (text, reason) = generate(&model, DEMO_PROMPT, vec![stage], 1500);
            assert_eq!(reason, StopReason::EndOfGeneration, "{format:?}: {text:?}");
            let reply = format.parse(&text);
            assert_eq!(reply.tool_calls.len(), 1, "{format:?} {choice:?}: {text:?}");
            let call = &reply.tool_calls[0];
            match call.name.as_str() {
                "weather" => {
                    assert!(["Paris", "Rome"].contains(&call.arguments["city"].as_str().unwrap()))
                }
                "time" => assert!((-12..=12).contains(&call.arguments["zone"].as_i64().unwrap())),
                other => panic!("{other}"),
            }
            if let ToolChoice::Function(name) = &choice {
                assert_eq!(&call.name, name);
            }
            assert!(call.id.starts_with("call_"));
        }
    }
    // Auto, with a lazy trigger the demo model never writes: free text.
    let stage = ToolCallFormat::Hermes
        .grammar(&tools, &ToolChoice::Auto, true)
        .unwrap()
        .unwrap();
    let (text, _) = generate(&model, DEMO_PROMPT, vec![stage], 64);
    assert_eq!(text, DEMO_CONTINUATION);
    assert!(ToolCallFormat::Hermes.parse(&text).tool_calls.is_empty());
}

/// Regression (audit round 3): the server's parse deadline abandoned a
/// thread that went on converting. A conversion under `with_deadline`
/// stops itself, midway, once the deadline passes.
#[test]
fn a_conversion_stops_at_its_deadline() {
    use llama_safe::grammar::{json_schema_to_grammar, with_deadline};
    use std::time::Instant;
    let mut schema =
        serde_json::json!({"type": "integer", "minimum": -123456789, "maximum": 987654321});
    for _ in 0..12 {
        schema = serde_json::json!({"anyOf": [schema.clone(), {"type": "array", "items": schema, "minItems": 3, "maxItems": 9}]});
    }
    let start = Instant::now();
    let _ = json_schema_to_grammar(&schema);
    let unbounded = start.elapsed();
    let start = Instant::now();
    let err = with_deadline(Instant::now() + unbounded / 3, || {
        json_schema_to_grammar(&schema)
    })
    .unwrap_err();
    let bounded = start.elapsed();
    assert!(err.to_string().contains("deadline"), "{err}");
    // It stopped inside the schema, not at its root, well before the end.
    assert!(err.to_string().contains("#/anyOf"), "{err}");
    assert!(bounded < unbounded, "{bounded:?} vs {unbounded:?}");
    // The deadline is this thread's, for `f` only.
    assert!(json_schema_to_grammar(&serde_json::json!({"type": "string"})).is_ok());
}
