//! A hostile corpus per input surface: chat templates, JSON schemas, GBNF
//! grammars, LoRA adapters, state and session files, sampler parameters.
//! Each corpus is at least 500 generated cases plus one regression per
//! crash, hang or blowup class an audit found, run in a child process
//! (`common/child.rs`) so that an abort is a failure here, not a dead test
//! run, within a time limit, and with the child's peak memory checked.
//! Every case must give a typed error or a sane result.

#[path = "common/child.rs"]
mod child;
mod common;
#[path = "common/gguf_layout.rs"]
#[allow(dead_code)]
mod gguf_layout;

use child::{in_child, peak_rss, Rng};
use common::*;
use llama_safe::chat::{render, ChatMessage, Tool};
use llama_safe::grammar::json_schema_to_grammar;
use llama_safe::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(300);
/// Peak resident memory a corpus may reach (the demo model is 0.5 MB;
/// llama.cpp, the test binary and the cases fit well within this).
const MAX_RSS: u64 = 1 << 30;
const CASES: usize = 500;

fn assert_bounded_memory(what: &str) {
    let peak = peak_rss();
    assert!(peak < MAX_RSS, "{what}: peak RSS {} MiB", peak >> 20);
}

fn ctx_params() -> ContextParams {
    ContextParams::default().with_n_ctx(256).with_threads(1)
}

/// Generates up to `n` tokens of the demo prompt with `sampling`; the
/// error, if any, is returned (a typed one, or the test fails on a crash).
fn run(model: &LlamaModel, sampling: SamplingOptions, n: u32) -> Result<String> {
    let mut ctx = LlamaContext::new(model, &ctx_params())?;
    let options = GenerateOptions::default()
        .with_max_tokens(n)
        .with_sampling(sampling);
    let mut text = String::new();
    for event in ctx.generate(demo::DEMO_PROMPT, &options)? {
        if let Event::Piece(p) = event? {
            text.push_str(&p.text);
        }
    }
    Ok(text)
}

// --- Chat templates --------------------------------------------------------------

const TEMPLATE_PIECES: &[&str] = &[
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}",
    "{% if add_generation_prompt %}<|assistant|>{% endif %}",
    "{{ bos_token }}{{ messages[0]['content'].strip() }}",
    "{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns }}",
    "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns|tojson }}",
    "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns == ns }}{{ 'a' ~ ns }}",
    "{% set ns = namespace() %}{% set ns.x = [ns] %}{{ ns }}",
    "{% set ns = namespace() %}{% set ns2 = namespace(inner=ns) %}{% set ns.b = ns2 %}{{ ns }}",
    "{% set ns = namespace() %}{% set ns.a, b = ns, 1 %}{{ ns }}",
    "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
    "{% set ns = namespace(x='ab') %}{% for i in range(64) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x }}",
    "{{ '{:>100000000000}'.format('x') }}",
    "{{ '{0:.99999999999}'.format(1.5) }}",
    "{{ '{:>50}|'.format(messages[0].content) }}",
    "{% set s = 'x'*100000 %}{{ s.replace('', 'abc') }}",
    "{{ {'a': 1}|tojson(indent=100000000000) }}",
    "{{ messages|tojson(indent=2) }}",
    "{{ tools|tojson }}",
    "{{ 'x' * 100000000 }}",
    "{{ 'x' * 10000000 }}{{ 'y' * 10000000 }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}",
    "{% macro m(v, n) %}{% if n > 0 %}{{ m([v], n - 1) }}{% else %}{{ v }}{% endif %}{% endmacro %}{{ m(1, 400) }}",
    "{{ raise_exception('refused') }}",
    "{{ strftime_now('%Y-%m-%d %B') }}",
    "{{ range(100000)|join('xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx') }}",
    "{{ (messages * 1000000)|length }}",
    "{{ ('x' * 1000).split('x')|length }}",
    "{{ '%100000000000s'|format('x') }}",
    "{{ 'x'|indent(100000000000) }}",
    "{{ messages[0].content|upper|lower|title }}",
    "{% for k, v in {'a': 1, 'b': [1, 2]}.items() %}{{ k }}={{ v }}{% endfor %}",
    "{{ messages[1000] }}{{ undefined_thing.attr }}",
    "{{",
    "{% if %}",
    "{% endfor %}",
    "{% set %}",
    "{% set ns.x = 1 %}",
    "\u{0}\u{1}\u{7f}",
    "{{ 1 / 0 }}",
    "{{ 10 ** 100000 }}",
    "{% raw %}{{ not rendered }}{% endraw %}",
];

fn template_case(rng: &mut Rng) -> String {
    let n = 1 + rng.below(3);
    (0..n).map(|_| *rng.pick(TEMPLATE_PIECES)).collect()
}

fn render_case(template: &str, messages: &[ChatMessage], tools: &[Tool]) -> Result<String> {
    render(template, messages, tools, true, "<s>", "</s>")
}

#[test]
fn template_corpus_gives_errors_or_bounded_prompts() {
    in_child(
        "template_corpus_gives_errors_or_bounded_prompts",
        LIMIT,
        || {
            let messages = vec![
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "  Hello there  "),
            ];
            let tools = vec![Tool {
                name: "f".into(),
                description: "d".into(),
                parameters: json!({"type": "object"}),
            }];
            let mut rng = Rng(0x5eed_7e3a);
            let mut errors = 0;
            let start = Instant::now();
            for i in 0..CASES {
                let template = template_case(&mut rng);
                let case = Instant::now();
                match render_case(&template, &messages, &tools) {
                    Ok(text) => assert!(text.len() <= chat::MAX_OUTPUT_BYTES, "case {i}"),
                    Err(
                        Error::ChatTemplate { .. }
                        | Error::ChatTemplateRaised { .. }
                        | Error::ChatTemplateBudget { .. },
                    ) => errors += 1,
                    Err(e) => panic!("case {i} {template:?}: untyped error {e}"),
                }
                assert!(
                    case.elapsed() < Duration::from_secs(10),
                    "case {i} {template:?} took {:?}",
                    case.elapsed()
                );
            }
            eprintln!(
                "{CASES} templates in {:?}, {errors} refused",
                start.elapsed()
            );
            assert_bounded_memory("templates");
        },
    );
}

#[test]
fn template_regressions_are_errors() {
    in_child("template_regressions_are_errors", LIMIT, || {
        let messages = [ChatMessage::new("user", "hi")];
        for template in [
            // Values that reach themselves overflowed the stack when printed,
            // serialised or compared.
            "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}",
            "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns|tojson }}",
            "{% set ns = namespace() %}{% set ns.a, b = ns, 1 %}{{ ns }}",
            // A value nested 100,000 deep, built in a loop.
            "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
            // Sizes given as numbers: 100 GB allocations.
            "{{ '{:>100000000000}'.format('x') }}",
            "{{ {'a': 1}|tojson(indent=100000000000) }}",
            // Uncharged string methods: 'x'*100000 with '' replaced.
            "{% set s = 'x'*100000 %}{{ s.replace('', s) }}",
            // A prompt of 100 MB within the instruction budget.
            "{{ 'x' * 100000000 }}",
        ] {
            let start = Instant::now();
            // Each is a budget of the sandbox's (round 3: typed as such,
            // so no caller mistakes it for a template it cannot run).
            let result = render_case(template, &messages, &[]);
            assert!(
                matches!(result, Err(Error::ChatTemplateBudget { .. })),
                "{template}: {result:?}"
            );
            assert!(start.elapsed() < Duration::from_secs(10), "{template}");
        }
        // The guard leaves ordinary namespace use alone.
        let ok = "{% set ns = namespace(found=false, items=[]) %}{% for m in messages %}\
                  {% set ns.found = true %}{% set ns.items = ns.items + [m.role] %}{% endfor %}\
                  {{ ns.found }} {{ ns.items|tojson }}";
        assert_eq!(render_case(ok, &messages, &[]).unwrap(), "True [\"user\"]");
        assert_bounded_memory("template regressions");
    });
}

// --- JSON schemas -------------------------------------------------------------------

fn deep_value(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

fn schema_case(rng: &mut Rng, depth: usize) -> Value {
    let leaf = depth >= 4;
    match rng.below(if leaf { 8 } else { 16 }) {
        0 => json!({"type": "string", "maxLength": *rng.pick(&[0u64, 5, 2000, 2001, 1 << 30])}),
        1 => {
            json!({"type": "integer", "minimum": rng.below(1000) as i64 - 500, "maximum": rng.below(1000)})
        }
        2 => json!({"type": *rng.pick(&["number", "boolean", "null", "nonsense"])}),
        3 => {
            let n = *rng.pick(&[1usize, 3, 512, 513, 5000]);
            json!({"enum": (0..n).map(|i| format!("v{i}")).collect::<Vec<_>>()})
        }
        4 => json!({"const": deep_value(*rng.pick(&[1usize, 50, 300]))}),
        5 => json!({"type": "string", "pattern": "^a+$"}),
        6 => json!({"$ref": *rng.pick(&["#/$defs/missing", "http://example.com/x", "#"])}),
        7 => json!(*rng.pick(&[json!(true), json!(false), json!(3), json!("x")])),
        8 | 9 => {
            let n = rng.below(5);
            let props: serde_json::Map<String, Value> = (0..n)
                .map(|i| (format!("p{i}"), schema_case(rng, depth + 1)))
                .collect();
            let required: Vec<String> = (0..n)
                .filter(|i| i % 2 == 0)
                .map(|i| format!("p{i}"))
                .collect();
            json!({"type": "object", "properties": props, "required": required,
                   "additionalProperties": rng.below(3) == 0})
        }
        10 => json!({"type": "array", "items": schema_case(rng, depth + 1),
                     "minItems": rng.below(3), "maxItems": *rng.pick(&[3u64, 2000, 2500])}),
        11 => json!({"anyOf": [schema_case(rng, depth + 1), schema_case(rng, depth + 1)]}),
        12 => json!({"allOf": [schema_case(rng, depth + 1)]}),
        13 => json!({"$defs": {"a": {"anyOf": [
                        {"type": "array", "items": {"$ref": "#/$defs/a"}},
                        {"type": "array", "items": {"$ref": "#/$defs/a"}}]}},
                     "$ref": "#/$defs/a"}),
        14 => json!({"prefixItems": [schema_case(rng, depth + 1)], "type": "array"}),
        _ => json!({"type": ["string", "integer", "object"]}),
    }
}

fn typed_schema_error(e: &Error) -> bool {
    matches!(
        e,
        Error::JsonSchema { .. }
            | Error::Grammar { .. }
            | Error::GrammarBudget { .. }
            | Error::GrammarDeadEnd { .. }
    )
}

#[test]
fn schema_corpus_gives_errors_or_grammars_that_run() {
    in_child(
        "schema_corpus_gives_errors_or_grammars_that_run",
        LIMIT,
        || {
            let model = load_moe();
            let mut rng = Rng(0xc0ff_ee11);
            let (mut ran, mut refused) = (0, 0);
            for i in 0..CASES {
                let schema = schema_case(&mut rng, 0);
                let start = Instant::now();
                let outcome = json_schema_to_grammar(&schema)
                    .and_then(|g| run(&model, SamplingOptions::greedy().with_grammar(g), 8));
                match outcome {
                    Ok(_) => ran += 1,
                    Err(e) if typed_schema_error(&e) => refused += 1,
                    Err(e) => panic!("case {i} {schema}: untyped error {e}"),
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "case {i} {schema} took {:?}",
                    start.elapsed()
                );
            }
            eprintln!("{CASES} schemas: {ran} ran, {refused} refused");
            assert!(ran > 0 && refused > 0);
            assert_bounded_memory("schemas");
        },
    );
}

#[test]
fn schema_regressions_are_bounded() {
    in_child("schema_regressions_are_bounded", LIMIT, || {
        let quick = |schema: &Value| {
            let start = Instant::now();
            let result = json_schema_to_grammar(schema);
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{:?}",
                start.elapsed()
            );
            result
        };
        // const/enum values nested 200,000 deep overflowed the stack.
        // (Built by hand: `json!` copies values recursively.)
        let mut schema = serde_json::Map::new();
        schema.insert("const".into(), deep_value(200_000));
        let schema = Value::Object(schema);
        assert!(matches!(quick(&schema), Err(Error::JsonSchema { .. })));
        std::mem::forget(schema); // dropping it would recurse 200,000 deep
                                  // enum of 100,000 strings: 15 s to build the sampler, as long a token.
        let many: Vec<String> = (0..100_000).map(|i| format!("v{i}")).collect();
        assert!(matches!(
            quick(&json!({"enum": many})),
            Err(Error::JsonSchema { .. })
        ));
        // Optional properties whose names collapse to one rule name were
        // cubic (2,000: over a minute); now 512 convert at once and more
        // are refused.
        let props = |n: usize| -> serde_json::Map<String, Value> {
            (0..n)
                .map(|i| {
                    // "x" and one non-ASCII letter: every name becomes rule "x-".
                    let c = char::from_u32(0x100 + i as u32).unwrap();
                    (format!("x{c}"), json!({"type": "string"}))
                })
                .collect()
        };
        quick(&json!({"type": "object", "properties": props(512)})).unwrap();
        assert!(quick(&json!({"type": "object", "properties": props(2000)})).is_err());
        // maxLength / maxItems above 2000 became unbounded in llama.cpp.
        for schema in [
            json!({"type": "string", "maxLength": 2500}),
            json!({"type": "array", "maxItems": 2500}),
        ] {
            assert!(
                matches!(quick(&schema), Err(Error::JsonSchema { .. })),
                "{schema}"
            );
        }
        // pydantic-style `$defs` in tool parameters resolve inside them.
        let tool = Tool {
            name: "lookup".into(),
            description: "d".into(),
            parameters: json!({
                "$defs": {"City": {"type": "string", "enum": ["Paris", "Rome"]}},
                "type": "object",
                "properties": {"city": {"$ref": "#/$defs/City"}},
                "required": ["city"],
            }),
        };
        for format in [chat::ToolCallFormat::Hermes, chat::ToolCallFormat::Generic] {
            for choice in [chat::ToolChoice::Auto, chat::ToolChoice::Required] {
                format
                    .grammar(std::slice::from_ref(&tool), &choice, false)
                    .unwrap_or_else(|e| panic!("{format:?} {choice:?}: {e}"));
            }
        }
        assert_bounded_memory("schema regressions");
    });
}

#[test]
fn an_ambiguous_grammar_ends_its_request_instead_of_stalling() {
    // anyOf of two recursive array shapes doubled llama.cpp's parse stacks
    // at every "[": 2.5 s, 10 s, 41 s per token.
    in_child(
        "an_ambiguous_grammar_ends_its_request_instead_of_stalling",
        LIMIT,
        || {
            let model = load_moe();
            let schema = json!({"$defs": {"a": {"anyOf": [
                {"type": "array", "items": {"$ref": "#/$defs/a"}},
                {"type": "array", "items": {"$ref": "#/$defs/a"}}]}},
                "$ref": "#/$defs/a"});
            let grammar = json_schema_to_grammar(&schema).unwrap();
            let mut sampler =
                Sampler::new(&model, &SamplingOptions::greedy().with_grammar(grammar)).unwrap();
            let open: Vec<Token> = (0..model.n_vocab() as i32)
                .map(Token)
                .filter(|&t| model.token_bytes(t, false).is_ok_and(|b| b == b"["))
                .collect();
            assert_eq!(open.len(), 1, "the demo vocabulary has one '[' token");
            let start = Instant::now();
            let mut result = Ok(());
            for _ in 0..64 {
                result = sampler.accept(open[0]);
                if result.is_err() {
                    break;
                }
            }
            // SAFETY: a query of how the shim was built.
            let enforced = unsafe { llama_safe_sys::llama_sys_grammar_budget_enforced() } != 0;
            // CI builds the pinned source, where the build must have proved
            // the mirror the budget reads through (UPDATING.md, step 9).
            if std::env::var_os("LLAMA_SYS_REQUIRE_GRAMMAR_BUDGET").is_some() {
                assert!(
                    enforced,
                    "the grammar budget is off: the build could not prove shim/grammar_mirror.h"
                );
            }
            if enforced {
                assert!(
                    matches!(result, Err(Error::GrammarBudget { .. })),
                    "{result:?}"
                );
                // The sampler stays refused until reset.
                assert!(sampler.accept(open[0]).is_err());
                sampler.reset();
                sampler.accept(open[0]).unwrap();
            } else {
                eprintln!(
                    "this build has no grammar budget (a prebuilt llama.cpp without its source)"
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{:?}",
                start.elapsed()
            );
        },
    );
}

// --- GBNF grammars -----------------------------------------------------------------

const GBNF_PIECES: &[&str] = &[
    "root ::= [a-z ]+",
    "root ::= \"Once\" | \" there\" rest\nrest ::= [a-z .]*",
    "root ::= (\"a\" | \"b\"){1,5} x\nx ::= \" \"?",
    "root ::= x{2000}\nx ::= \"ab\"",
    "root ::= x{0,2001}\nx ::= \"a\"",
    "root ::= ((\"ab\"{100}){100}){100}",
    "root ::= [^\\x00]*",
    "root ::= r0\nr0 ::= r1\nr1 ::= r2\nr2 ::= \"x\"",
    "root ::= root \"a\"",
    "root ::= undefined",
    "root ::= \"unterminated",
    "root ::= [z-a]",
    "root ::= <[999999999]>",
    "root ::= \"\\xZZ\"",
    "::=",
    "",
    "root ::= ( ( ( ( \"deep\" ) ) ) )",
    "root ::= \"a\" # comment\n  | \"b\"",
    "root ::= .{3}",
];

fn gbnf_case(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => format!(
            "root ::= {}\"a\"{}",
            "(".repeat(rng.below(200)),
            ")".repeat(rng.below(200))
        ),
        1 => {
            let n = rng.below(20_000);
            let chain: String = (0..n).map(|i| format!("r{i} ::= r{}\n", i + 1)).collect();
            format!("root ::= r0\n{chain}r{n} ::= \"x\"\n")
        }
        2 => format!(
            "root ::= \"{}\"{{{}}}",
            "a".repeat(rng.below(4000)),
            rng.below(2500)
        ),
        _ => {
            let mut g = (*rng.pick(GBNF_PIECES)).to_string();
            if rng.below(3) == 0 {
                // A byte flipped somewhere.
                let mut bytes = g.into_bytes();
                if !bytes.is_empty() {
                    let at = rng.below(bytes.len());
                    bytes[at] = b"()[]{}\"|*+?:=\\"[rng.below(14)];
                }
                g = String::from_utf8_lossy(&bytes).into_owned();
            }
            g
        }
    }
}

#[test]
fn gbnf_corpus_gives_errors_or_grammars_that_run() {
    in_child(
        "gbnf_corpus_gives_errors_or_grammars_that_run",
        LIMIT,
        || {
            let model = load_moe();
            let mut rng = Rng(0x9b1f_0042);
            let (mut ran, mut refused) = (0, 0);
            for i in 0..CASES {
                let gbnf = gbnf_case(&mut rng);
                let start = Instant::now();
                let sampling = SamplingOptions::greedy().with_grammar(gbnf.clone());
                match run(&model, sampling, 8) {
                    Ok(_) => ran += 1,
                    Err(e) if typed_schema_error(&e) || matches!(e, Error::NulByte { .. }) => {
                        refused += 1
                    }
                    Err(e) => panic!("case {i}: untyped error {e}"),
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "case {i} took {:?}: {:.200}",
                    start.elapsed(),
                    gbnf
                );
            }
            eprintln!("{CASES} grammars: {ran} ran, {refused} refused");
            assert!(ran > 0 && refused > 0);
            assert_bounded_memory("grammars");
        },
    );
}

#[test]
fn gbnf_regressions_are_errors() {
    in_child("gbnf_regressions_are_errors", LIMIT, || {
        let model = load_moe();
        for (what, gbnf) in [
            (
                "100,000 nested parentheses",
                format!(
                    "root ::= {}\"a\"{}",
                    "(".repeat(100_000),
                    ")".repeat(100_000)
                ),
            ),
            ("a chain of 100,000 rules", {
                let chain: String = (0..100_000)
                    .map(|i| format!("r{i} ::= r{}\n", i + 1))
                    .collect();
                format!("root ::= r0\n{chain}r100000 ::= \"x\"\n")
            }),
            (
                "a 300 KB literal repeated 2000 times",
                format!("root ::= \"{}\"{{2000}}", "a".repeat(300_000)),
            ),
            (
                "an unenforceable maximum",
                "root ::= \"a\"{0,5000}".to_string(),
            ),
        ] {
            let start = Instant::now();
            let result = Sampler::new(&model, &SamplingOptions::greedy().with_grammar(gbnf));
            assert!(
                matches!(result, Err(Error::Grammar { .. })),
                "{what}: {result:?}"
            );
            assert!(start.elapsed() < Duration::from_secs(5), "{what}");
        }
        assert_bounded_memory("grammar regressions");
    });
}

// --- Sampler parameters -------------------------------------------------------------

fn float(rng: &mut Rng) -> f32 {
    *rng.pick(&[
        0.0,
        1.0,
        -1.0,
        0.5,
        1e-30,
        1e30,
        f32::MAX,
        f32::MIN,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ])
}

fn stage(rng: &mut Rng) -> SamplerStage {
    let int = *rng.pick(&[0i32, 1, -1, 40, i32::MAX, i32::MIN, 1 << 20, (1 << 20) + 1]);
    let small = *rng.pick(&[0usize, 1, 64, usize::MAX]);
    match rng.below(12) {
        0 => SamplerStage::TopK(int),
        1 => SamplerStage::TopP {
            p: float(rng),
            min_keep: small,
        },
        2 => SamplerStage::MinP {
            p: float(rng),
            min_keep: small,
        },
        3 => SamplerStage::Temperature(float(rng)),
        4 => SamplerStage::TopNSigma(float(rng)),
        5 => SamplerStage::Xtc {
            probability: float(rng),
            threshold: float(rng),
            min_keep: small,
            seed: 7,
        },
        6 => SamplerStage::Penalties {
            last_n: int,
            repeat: float(rng),
            frequency: float(rng),
            presence: float(rng),
        },
        7 => SamplerStage::Dry {
            multiplier: float(rng),
            base: float(rng),
            allowed_length: int,
            last_n: int,
            breakers: (0..*rng.pick(&[0usize, 4, 64, 65, 1000]))
                .map(|i| "\n".repeat(1 + i % 70))
                .collect(),
        },
        8 => SamplerStage::LogitBias(vec![(Token(int), float(rng))]),
        9 => SamplerStage::Typical {
            p: float(rng),
            min_keep: small,
        },
        10 => SamplerStage::DynamicTemperature {
            temperature: float(rng),
            delta: float(rng),
            exponent: float(rng),
        },
        _ => SamplerStage::Mirostat {
            tau: float(rng),
            eta: float(rng),
            m: int,
            seed: 1,
        },
    }
}

#[test]
fn sampler_parameter_corpus_gives_errors_or_tokens() {
    in_child(
        "sampler_parameter_corpus_gives_errors_or_tokens",
        LIMIT,
        || {
            let model = load_moe();
            let mut rng = Rng(0x5a3b_1e00);
            let (mut ran, mut refused) = (0, 0);
            for i in 0..CASES {
                let mut stages: Vec<SamplerStage> =
                    (0..rng.below(4)).map(|_| stage(&mut rng)).collect();
                stages.push(if rng.below(2) == 0 {
                    SamplerStage::Greedy
                } else {
                    SamplerStage::Dist { seed: 3 }
                });
                let start = Instant::now();
                match run(&model, SamplingOptions::chain(stages.clone()), 4) {
                    Ok(_) => ran += 1,
                    Err(
                        Error::InvalidParameter { .. }
                        | Error::InvalidToken { .. }
                        | Error::NulByte { .. },
                    ) => refused += 1,
                    Err(e) => panic!("case {i} {stages:?}: untyped error {e}"),
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "case {i} {stages:?}"
                );
            }
            eprintln!("{CASES} sampler chains: {ran} ran, {refused} refused");
            assert!(ran > 0 && refused > 0);
            // 100,000 DRY breakers took 25 s to build on a 308-token vocabulary.
            let start = Instant::now();
            let dry = SamplingOptions::chain(vec![
                SamplerStage::Dry {
                    multiplier: 0.8,
                    base: 1.75,
                    allowed_length: 2,
                    last_n: 64,
                    breakers: (0..100_000).map(|i| format!("b{i}")).collect(),
                },
                SamplerStage::Greedy,
            ]);
            assert!(matches!(
                Sampler::new(&model, &dry),
                Err(Error::InvalidParameter { .. })
            ));
            assert!(start.elapsed() < Duration::from_secs(1));
            assert_bounded_memory("sampler parameters");
        },
    );
}

// --- LoRA adapters ------------------------------------------------------------------

/// Sets the ggml type of tensor `name` in a GGUF file's bytes (its entry in
/// the tensor table: name, dimensions, then the type).
fn retype(bytes: &mut [u8], name: &str, ggml_type: u32) {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("tensor in the table")
        + needle.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let ty = at + 4 + 8 * n_dims;
    bytes[ty..ty + 4].copy_from_slice(&ggml_type.to_le_bytes());
}

/// One generated adapter for the demo model: a pair on a random target
/// with random shapes and types, sometimes half a pair or a stray tensor.
fn adapter_case(rng: &mut Rng, n_vocab: u64) -> Vec<u8> {
    use llama_safe::gguf::{GgmlType, GgufWriter, MetaValue};
    let (target, ne0, ne1, extra) = *rng.pick(&[
        ("output.weight", 64u64, n_vocab, 1u64),
        ("token_embd.weight", 64, n_vocab, 1),
        ("blk.0.attn_q.weight", 64, 64, 1),
        ("blk.1.attn_output.weight", 64, 64, 1),
        ("blk.0.ffn_up_exps.weight", 64, 64, 4),
        ("blk.9.attn_q.weight", 64, 64, 1),
    ]);
    let rank = *rng.pick(&[1u64, 2, 32]);
    let embd = target == "token_embd.weight";
    let (mut a, mut b) = if embd {
        (vec![rank, ne1], vec![rank, ne0])
    } else {
        (vec![ne0, rank], vec![rank, ne1])
    };
    match rng.below(8) {
        0 => a.swap(0, 1),
        1 => b[1] += 1,
        2 => a.push(extra.max(2)),
        3 => {
            a.push(extra);
            b.push(extra);
        }
        4 => b[0] = rank + 1,
        5 => a.truncate(1),
        _ => {}
    }
    let ty = *rng.pick(&[GgmlType::F32, GgmlType::F16, GgmlType::Q8_0]);
    let ty_for = |dims: &[u64]| {
        if ty == GgmlType::Q8_0 && dims[0] % 32 != 0 {
            GgmlType::F32
        } else {
            ty
        }
    };
    let values = |dims: &[u64]| vec![0.01f32; dims.iter().product::<u64>() as usize];
    let mut w = GgufWriter::new();
    w.meta("general.architecture", MetaValue::Str("llama".into()))
        .meta("general.type", MetaValue::Str("adapter".into()))
        .meta("adapter.type", MetaValue::Str("lora".into()));
    if rng.below(10) == 0 {
        w.meta("adapter.lora.alpha", MetaValue::Str("one".into()));
    } else {
        w.meta("adapter.lora.alpha", MetaValue::F32(1.0));
    }
    let (name_a, name_b) = (format!("{target}.lora_a"), format!("{target}.lora_b"));
    let half = rng.below(12);
    if half != 0 {
        w.tensor(&name_a, &a, ty_for(&a), &values(&a)).unwrap();
    }
    if half != 1 {
        w.tensor(&name_b, &b, ty_for(&b), &values(&b)).unwrap();
    }
    if half == 2 {
        w.tensor("blk.0.attn_k.weight.lora_c", &[4], GgmlType::F32, &[0.0; 4])
            .unwrap();
    }
    let mut bytes = w.to_bytes();
    // Integer types ggml cannot multiply: I16 over F16 data, I32 over F32.
    if half > 2 && rng.below(5) == 0 {
        let (name, dims) = if rng.below(2) == 0 {
            (&name_b, &b)
        } else {
            (&name_a, &a)
        };
        match ty_for(dims) {
            GgmlType::F16 => retype(&mut bytes, name, 25),
            GgmlType::F32 => retype(&mut bytes, name, 26),
            _ => {}
        }
    }
    bytes
}

#[test]
fn adapter_corpus_gives_errors_or_adapters_that_decode() {
    in_child(
        "adapter_corpus_gives_errors_or_adapters_that_decode",
        LIMIT,
        || {
            let model = load_moe();
            let dir = scratch("hostile-adapters");
            let mut rng = Rng(0xada9_7e55);
            let (mut ran, mut refused) = (0, 0);
            for i in 0..CASES {
                let path = dir.join(format!("{i}.gguf"));
                std::fs::write(&path, adapter_case(&mut rng, u64::from(model.n_vocab()))).unwrap();
                let outcome = model.load_lora(&path).and_then(|adapter| {
                    let mut ctx = LlamaContext::new(&model, &ctx_params())?;
                    ctx.set_loras(&[(&adapter, 1.0)])?;
                    ctx.decode(&model.tokenize(demo::DEMO_PROMPT, Tokenize::PROMPT)?)?;
                    Ok(())
                });
                match outcome {
                    Ok(()) => ran += 1,
                    Err(Error::Lora { .. }) => refused += 1,
                    Err(e) => panic!("case {i} ({}): untyped error {e}", path.display()),
                }
            }
            eprintln!("{CASES} adapters: {ran} decoded, {refused} refused");
            assert!(ran > 0 && refused > 0);
            let _ = std::fs::remove_dir_all(&dir);
            assert_bounded_memory("adapters");
        },
    );
}

#[test]
fn adapter_regressions_are_errors() {
    // Each loaded, then aborted or crashed at the first decode.
    in_child("adapter_regressions_are_errors", LIMIT, || {
        use llama_safe::gguf::{GgmlType, GgufWriter, MetaValue};
        let model = load_moe();
        let n_vocab = u64::from(model.n_vocab());
        let dir = scratch("hostile-adapter-regressions");
        let write = |name: &str, target: &str, a: &[u64], b: &[u64], retype_b: Option<u32>| {
            let mut w = GgufWriter::new();
            w.meta("general.architecture", MetaValue::Str("llama".into()))
                .meta("general.type", MetaValue::Str("adapter".into()))
                .meta("adapter.type", MetaValue::Str("lora".into()))
                .meta("adapter.lora.alpha", MetaValue::F32(1.0));
            let values = |d: &[u64]| vec![0.01f32; d.iter().product::<u64>() as usize];
            w.tensor(&format!("{target}.lora_a"), a, GgmlType::F32, &values(a))
                .unwrap();
            w.tensor(&format!("{target}.lora_b"), b, GgmlType::F32, &values(b))
                .unwrap();
            let mut bytes = w.to_bytes();
            if let Some(t) = retype_b {
                retype(&mut bytes, &format!("{target}.lora_b"), t);
            }
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        for (what, path) in [
            (
                "3-D lora_a",
                write("3d.gguf", "output.weight", &[64, 1, 2], &[1, n_vocab], None),
            ),
            (
                "3-D pair",
                write(
                    "3d-pair.gguf",
                    "output.weight",
                    &[64, 1, 2],
                    &[1, n_vocab, 2],
                    None,
                ),
            ),
            (
                "a pair on an expert tensor",
                write(
                    "experts.gguf",
                    "blk.0.ffn_up_exps.weight",
                    &[64, 1],
                    &[1, 64],
                    None,
                ),
            ),
            (
                "lora_b of type I32",
                write(
                    "i32.gguf",
                    "output.weight",
                    &[64, 1],
                    &[1, n_vocab],
                    Some(26),
                ),
            ),
            (
                "token_embd ranks that differ",
                write(
                    "embd.gguf",
                    "token_embd.weight",
                    &[2, n_vocab],
                    &[1, 64],
                    None,
                ),
            ),
        ] {
            let result = model.load_lora(&path);
            assert!(
                matches!(result, Err(Error::Lora { .. })),
                "{what}: {result:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}

// --- State and session files ---------------------------------------------------------

fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut bad = bytes.to_vec();
    match rng.below(5) {
        0 => {
            let at = rng.below(bad.len());
            bad[at] ^= 1 << rng.below(8);
        }
        1 => bad.truncate(rng.below(bad.len())),
        2 => bad.extend_from_slice(&[0xff; 9]),
        _ => {
            // A length field anywhere set to a huge value.
            let at = rng.below(bad.len().saturating_sub(4));
            let value: u32 = *rng.pick(&[u32::MAX, 0x7fff_ffff, 1 << 20, 0]);
            bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
    }
    bad
}

#[test]
fn state_corpus_gives_errors_or_states_that_decode() {
    in_child(
        "state_corpus_gives_errors_or_states_that_decode",
        LIMIT,
        || {
            let model = load_moe();
            let mut ctx = LlamaContext::new(&model, &ctx_params()).unwrap();
            let prompt = model.tokenize(demo::DEMO_PROMPT, Tokenize::PROMPT).unwrap();
            ctx.decode(&prompt).unwrap();
            let saved = ctx.save_state().unwrap();
            let raw = saved[40..].to_vec();
            let dir = scratch("hostile-state");
            let session = dir.join("session.bin");
            ctx.save_state_file(&session, &prompt).unwrap();
            let session_bytes = std::fs::read(&session).unwrap();
            let next = model.tokenize(" there", Tokenize::TEXT).unwrap();
            let mut rng = Rng(0x57a7_e000);
            let (mut ran, mut refused) = (0, 0);
            for i in 0..CASES {
                let outcome = match i % 3 {
                    0 => ctx.load_state(&mutate(&mut rng, &saved)),
                    1 => ctx.load_state(&mutate(&mut rng, &raw)),
                    _ => {
                        let path = dir.join(format!("{i}.bin"));
                        std::fs::write(&path, mutate(&mut rng, &session_bytes)).unwrap();
                        ctx.load_state_file(&path).map(drop)
                    }
                }
                .and_then(|()| ctx.decode(&next));
                match outcome {
                    Ok(()) => ran += 1,
                    // A restored cache whose positions run past the context
                    // leaves no room for the next token: also typed.
                    Err(
                        Error::State { .. }
                        | Error::StateFile { .. }
                        | Error::Decode(_)
                        | Error::PromptTooLong { .. },
                    ) => refused += 1,
                    Err(e) => panic!("case {i}: untyped error {e}"),
                }
            }
            eprintln!("{CASES} states: {ran} restored and decoded, {refused} refused");
            assert!(ran > 0 && refused > 0);
            let _ = std::fs::remove_dir_all(&dir);
            assert_bounded_memory("states");
        },
    );
}

#[test]
fn state_regressions_are_errors() {
    in_child("state_regressions_are_errors", LIMIT, || {
        let model = load_moe();
        let dense =
            LlamaModel::load(&LlamaBackend::init(), dense_path(), &Default::default()).unwrap();
        let mut ctx = LlamaContext::new(&model, &ctx_params()).unwrap();
        let prompt = model.tokenize(demo::DEMO_PROMPT, Tokenize::PROMPT).unwrap();
        ctx.decode(&prompt).unwrap();
        let saved = ctx.save_state().unwrap();
        let dir = scratch("hostile-state-regressions");
        // A raw state whose architecture-name length is FFFFFFFF: 4.1 GB
        // zeroed before the error.
        let mut raw = saved[40..].to_vec();
        raw[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(ctx.load_state(&raw), Err(Error::State { .. })));
        // The same in llama.cpp's own session file (after magic, version,
        // count, tokens).
        let session = dir.join("s.bin");
        ctx.save_llama_cpp_session_file(&session, &prompt).unwrap();
        let mut bytes = std::fs::read(&session).unwrap();
        let at = 12 + 4 * prompt.len();
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&session, &bytes).unwrap();
        assert!(matches!(
            ctx.load_llama_cpp_session_file(&session),
            Err(Error::StateFile { .. })
        ));
        assert!(peak_rss() < 1 << 30, "no 4 GB allocation");
        // Session tokens outside the vocabulary.
        let session = dir.join("tokens.bin");
        ctx.save_state_file(&session, &[Token(1), Token(1_000_000)])
            .unwrap();
        assert!(matches!(
            ctx.load_state_file(&session),
            Err(Error::StateFile { .. })
        ));
        // Regression (audit round 3): a session file saved with one model
        // loaded into another of the same shape and architecture. Here the
        // demo model with one metadata value changed: refused by name.
        let layout = gguf_layout::Layout::parse(std::fs::read(moe_path()).unwrap());
        let mut kvs = layout.kv_triples();
        kvs.retain(|(k, _, _)| k != "general.name");
        kvs.push((
            "general.name".into(),
            gguf_layout::ty::STRING,
            gguf_layout::string_value("a twin"),
        ));
        let twin_path = dir.join("twin.gguf");
        std::fs::write(&twin_path, layout.rebuild(&kvs)).unwrap();
        let twin =
            LlamaModel::load(&LlamaBackend::init(), &twin_path, &Default::default()).unwrap();
        let mut twin_ctx = LlamaContext::new(&twin, &ctx_params()).unwrap();
        let ours = dir.join("ours.bin");
        ctx.save_state_file(&ours, &prompt).unwrap();
        let err = twin_ctx.load_state_file(&ours).unwrap_err();
        assert!(err.to_string().contains("another model"), "{err}");
        assert_eq!(
            ctx.load_state_file(&ours).unwrap(),
            prompt,
            "the same model loads it"
        );
        // llama.cpp's format carries no fingerprint: refused unless the
        // caller says that is what it is.
        let theirs = dir.join("theirs.bin");
        ctx.save_llama_cpp_session_file(&theirs, &prompt).unwrap();
        let err = ctx.load_state_file(&theirs).unwrap_err();
        assert!(
            err.to_string().contains("load_llama_cpp_session_file"),
            "{err}"
        );
        assert_eq!(ctx.load_llama_cpp_session_file(&theirs).unwrap(), prompt);
        // A FIFO given as a session file is refused unopened, not waited on.
        #[cfg(unix)]
        {
            let fifo = dir.join("fifo.bin");
            let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a NUL-terminated path; mkfifo reads it and returns a status.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let err = ctx.load_state_file(&fifo).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
        // A state saved with another model.
        let mut other = LlamaContext::new(&dense, &ctx_params()).unwrap();
        other
            .decode(&dense.tokenize(demo::DEMO_PROMPT, Tokenize::PROMPT).unwrap())
            .unwrap();
        let foreign = other.save_state().unwrap();
        let result = ctx.load_state(&foreign);
        assert!(matches!(result, Err(Error::State { .. })), "{result:?}");
        let foreign_seq = other.save_seq_state(0).unwrap();
        assert!(matches!(
            ctx.load_seq_state(&foreign_seq, 0),
            Err(Error::State { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn a_prompt_far_longer_than_the_context_is_refused_before_tokenizing() {
    // A template can render 16 MiB within its budget; tokenizing 100 MB
    // took 3.4 GB and over a minute.
    in_child(
        "a_prompt_far_longer_than_the_context_is_refused_before_tokenizing",
        LIMIT,
        || {
            let model = load_moe();
            let mut ctx = LlamaContext::new(&model, &ctx_params()).unwrap();
            let prompt = "x".repeat(100_000_000);
            let start = Instant::now();
            let result = ctx.generate(&prompt, &GenerateOptions::default()).map(drop);
            assert!(
                matches!(result, Err(Error::PromptTooLong { .. })),
                "{result:?}"
            );
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{:?}",
                start.elapsed()
            );
        },
    );
}
