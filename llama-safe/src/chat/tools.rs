//! Tool calls in model output: the syntax each model family writes them
//! in, a parser for it, and the grammar that makes the model write them
//! correctly.

use super::{ChatMessage, Tool, ToolCall};
use crate::error::{Error, Result};
use crate::grammar::{json_schema_to_grammar, literal};
use crate::SamplerStage;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};

/// How a model writes tool calls, told from its chat template
/// ([`ToolCallFormat::detect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolCallFormat {
    /// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block
    /// per call: Hermes 2 Pro, Qwen 2.5, Qwen 3, QwQ and their derivatives.
    Hermes,
    /// `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`: Mistral
    /// Nemo, Mistral Small and Magistral.
    Mistral,
    /// `{"name": ..., "parameters": {...}}` alone (optionally after
    /// `<|python_tag|>`): Llama 3.1 to 3.3.
    Llama3,
    /// For templates with no tool syntax (llama.cpp's "generic" format): the
    /// whole answer is JSON, `{"tool_calls": [{"name": ..., "arguments":
    /// ...}]}` or `{"response": "..."}`.
    Generic,
}

/// Whether and which tools the model may call (OpenAI's `tool_choice`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model answers in text or calls tools, as it chooses.
    #[default]
    Auto,
    /// The model must call at least one tool.
    Required,
    /// The model must call this tool.
    Function(String),
    /// No tool calls.
    None,
}

/// A model's answer split into its text and its tool calls.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedReply {
    /// The text outside the tool calls, trimmed.
    pub content: String,
    /// The calls, in order.
    pub tool_calls: Vec<ToolCall>,
}

impl ToolCallFormat {
    /// The format a chat template writes tool calls in (its markers), or
    /// [`Generic`](Self::Generic) for a template with none.
    ///
    /// ```
    /// use llama_safe::chat::ToolCallFormat;
    /// let qwen = "{% for tool in tools %}{{ tool | tojson }}{% endfor %}<tool_call>...</tool_call>";
    /// assert_eq!(ToolCallFormat::detect(Some(qwen)), ToolCallFormat::Hermes);
    /// assert_eq!(ToolCallFormat::detect(None), ToolCallFormat::Generic);
    /// ```
    pub fn detect(template: Option<&str>) -> ToolCallFormat {
        let Some(t) = template else {
            return ToolCallFormat::Generic;
        };
        if t.contains("<tool_call>") {
            ToolCallFormat::Hermes
        } else if t.contains("[TOOL_CALLS]") {
            ToolCallFormat::Mistral
        } else if t.contains("<|python_tag|>")
            || (t.contains("<|start_header_id|>") && t.contains("ipython"))
        {
            ToolCallFormat::Llama3
        } else {
            ToolCallFormat::Generic
        }
    }

    /// The word a call starts with (what a lazy grammar waits for), if the
    /// format has one.
    pub fn trigger(self) -> Option<&'static str> {
        match self {
            ToolCallFormat::Hermes => Some("<tool_call>"),
            ToolCallFormat::Mistral => Some("[TOOL_CALLS]"),
            ToolCallFormat::Llama3 => Some("{\"name\""),
            ToolCallFormat::Generic => None,
        }
    }

    /// The name of the arguments field in this format.
    fn arguments_key(self) -> &'static str {
        match self {
            ToolCallFormat::Llama3 => "parameters",
            _ => "arguments",
        }
    }

    /// Splits `text` (a whole answer) into content and tool calls. Text
    /// that looks like a call but is not valid JSON stays content.
    ///
    /// ```
    /// use llama_safe::chat::ToolCallFormat;
    /// let reply = ToolCallFormat::Hermes.parse(
    ///     "Let me look.\n<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
    /// );
    /// assert_eq!(reply.content, "Let me look.");
    /// assert_eq!(reply.tool_calls[0].name, "weather");
    /// assert_eq!(reply.tool_calls[0].arguments["city"], "Paris");
    /// ```
    pub fn parse(self, text: &str) -> ParsedReply {
        match self {
            ToolCallFormat::Hermes => parse_hermes(text),
            ToolCallFormat::Mistral => parse_after_marker(text, "[TOOL_CALLS]", "arguments"),
            ToolCallFormat::Llama3 => parse_llama3(text),
            ToolCallFormat::Generic => parse_generic(text),
        }
    }

    /// The sampler stage that makes the model write well-formed calls of
    /// `tools` (their arguments following each tool's JSON schema):
    /// - [`ToolChoice::Auto`]: a [lazy grammar](SamplerStage::LazyGrammar)
    ///   from the format's trigger on, free text before it (for
    ///   [`Generic`](Self::Generic), a grammar of either answer);
    /// - [`ToolChoice::Required`] and [`ToolChoice::Function`]: a grammar
    ///   of calls only;
    /// - [`ToolChoice::None`] or no tools: no stage.
    ///
    /// With `parallel` the model may make several calls in one answer,
    /// otherwise exactly one. A tool whose schema cannot be converted is
    /// [`Error::JsonSchema`]; a named function that is not among `tools` is
    /// [`Error::InvalidParameter`].
    pub fn grammar(
        self,
        tools: &[Tool],
        choice: &ToolChoice,
        parallel: bool,
    ) -> Result<Option<SamplerStage>> {
        let tools: Vec<&Tool> = match choice {
            ToolChoice::None => return Ok(None),
            ToolChoice::Function(name) => {
                let t: Vec<&Tool> = tools.iter().filter(|t| &t.name == name).collect();
                if t.is_empty() {
                    return Err(Error::InvalidParameter {
                        name: "tool_choice",
                        reason: format!("no tool is named {name:?}").into(),
                    });
                }
                t
            }
            _ => tools.iter().collect(),
        };
        if tools.is_empty() {
            return Ok(None);
        }
        let key = self.arguments_key();
        // Where each call's schema ends up in the schema converted below,
        // so that the parameters' own local `$ref`s (`#/$defs/X`, as
        // pydantic writes them) still point into them.
        let calls_at = match (self, choice) {
            (ToolCallFormat::Generic, ToolChoice::Auto) => {
                "#/anyOf/0/properties/tool_calls/items/anyOf"
            }
            (ToolCallFormat::Generic, _) => "#/properties/tool_calls/items/anyOf",
            _ => "#/anyOf",
        };
        for t in &tools {
            crate::grammar::check_depth(&t.parameters)?;
        }
        let calls: Vec<Value> = tools
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let parameters =
                    rebase_refs(&t.parameters, &format!("{calls_at}/{i}/properties/{key}"));
                json!({
                    "type": "object",
                    "properties": {"name": {"const": t.name}, key: parameters},
                    "required": ["name", key],
                })
            })
            .collect();
        let grammar = if self == ToolCallFormat::Generic {
            // The whole answer is JSON: one schema for it.
            let mut list = json!({"type": "array", "items": {"anyOf": calls}, "minItems": 1});
            if !parallel {
                list["maxItems"] = json!(1);
            }
            let tool_calls = json!({
                "type": "object", "properties": {"tool_calls": list}, "required": ["tool_calls"],
            });
            let answer = if *choice == ToolChoice::Auto {
                let response = json!({
                    "type": "object", "properties": {"response": {"type": "string"}},
                    "required": ["response"],
                });
                json!({"anyOf": [tool_calls, response]})
            } else {
                tool_calls
            };
            json_schema_to_grammar(&answer)?
        } else {
            // The call's grammar, its root renamed, under a root of the format.
            let call = json_schema_to_grammar(&json!({"anyOf": calls}))?
                .replacen("root ::=", "call ::=", 1);
            let root = match self {
                ToolCallFormat::Hermes => {
                    let one = r#""<tool_call>" space call "</tool_call>""#;
                    if parallel {
                        format!("{one} (space {one})*")
                    } else {
                        one.to_string()
                    }
                }
                ToolCallFormat::Mistral => {
                    let calls = if parallel {
                        r#"call ("," space call)*"#
                    } else {
                        "call"
                    };
                    format!(r#"{} space "[" space {calls} "]""#, literal("[TOOL_CALLS]"))
                }
                // Llama 3: the JSON calls themselves.
                _ => {
                    if parallel {
                        r#"call (";" space call)*"#.to_string()
                    } else {
                        "call".to_string()
                    }
                }
            };
            format!("root ::= {root}\n{call}")
        };
        let lazy = *choice == ToolChoice::Auto && self != ToolCallFormat::Generic;
        Ok(Some(if lazy {
            SamplerStage::LazyGrammar {
                grammar,
                trigger_words: self.trigger().map(String::from).into_iter().collect(),
                trigger_tokens: Vec::new(),
            }
        } else {
            SamplerStage::Grammar(grammar)
        }))
    }
}

/// A fresh call id, `call_` and 24 hex digits (OpenAI's ids are opaque).
pub fn new_call_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "call_{:016x}{:08x}",
        t ^ (u64::from(std::process::id()) << 32),
        n as u32
    )
}

/// A call from a JSON object `{"name": ..., key: {...}}` (the arguments may
/// also be a JSON string holding the object, as OpenAI sends them).
fn call_from(value: &Value, key: &str) -> Option<ToolCall> {
    let name = value.get("name")?.as_str()?.to_string();
    let arguments = match value.get(key).or_else(|| value.get("arguments")) {
        None => json!({}),
        Some(Value::String(s)) => serde_json::from_str(s).ok()?,
        Some(v) => v.clone(),
    };
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(new_call_id, String::from);
    Some(ToolCall {
        id,
        name,
        arguments,
    })
}

/// The first JSON value at the start of `text` (after whitespace) and the
/// rest of the text after it.
fn leading_json(text: &str) -> Option<(Value, &str)> {
    let trimmed = text.trim_start();
    let mut stream = serde_json::Deserializer::from_str(trimmed).into_iter::<Value>();
    let value = stream.next()?.ok()?;
    Some((value, &trimmed[stream.byte_offset()..]))
}

fn parse_hermes(text: &str) -> ParsedReply {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let mut reply = ParsedReply::default();
    let mut content = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        match leading_json(after).and_then(|(v, tail)| Some((call_from(&v, "arguments")?, tail))) {
            Some((call, tail)) => {
                content.push_str(&rest[..start]);
                reply.tool_calls.push(call);
                let tail = tail.trim_start();
                rest = tail.strip_prefix(CLOSE).unwrap_or(tail);
            }
            None => {
                // Not a call: keep it as text.
                content.push_str(&rest[..start + OPEN.len()]);
                rest = after;
            }
        }
    }
    content.push_str(rest);
    reply.content = content.trim().to_string();
    reply
}

fn parse_after_marker(text: &str, marker: &str, key: &str) -> ParsedReply {
    let Some(start) = text.find(marker) else {
        return ParsedReply {
            content: text.trim().to_string(),
            tool_calls: Vec::new(),
        };
    };
    let after = &text[start + marker.len()..];
    let calls = leading_json(after).and_then(|(v, tail)| {
        let list = match v {
            Value::Array(list) => list,
            single @ Value::Object(_) => vec![single],
            _ => return None,
        };
        let calls = list
            .iter()
            .map(|c| call_from(c, key))
            .collect::<Option<Vec<_>>>()?;
        Some((calls, tail))
    });
    match calls {
        Some((tool_calls, tail)) => ParsedReply {
            content: format!("{}{}", &text[..start], tail).trim().to_string(),
            tool_calls,
        },
        None => ParsedReply {
            content: text.trim().to_string(),
            tool_calls: Vec::new(),
        },
    }
}

fn parse_llama3(text: &str) -> ParsedReply {
    let body = text.trim_start();
    let body = body.strip_prefix("<|python_tag|>").unwrap_or(body);
    let mut calls = Vec::new();
    let mut rest = body;
    while let Some((value, tail)) = leading_json(rest) {
        match call_from(&value, "parameters") {
            Some(call) => calls.push(call),
            None => break,
        }
        let tail = tail.trim_start();
        rest = tail.strip_prefix(';').unwrap_or(tail);
    }
    if calls.is_empty() {
        return ParsedReply {
            content: text.trim().to_string(),
            tool_calls: Vec::new(),
        };
    }
    ParsedReply {
        content: rest.trim().to_string(),
        tool_calls: calls,
    }
}

fn parse_generic(text: &str) -> ParsedReply {
    let plain = || ParsedReply {
        content: text.trim().to_string(),
        tool_calls: Vec::new(),
    };
    let Some((value, tail)) = leading_json(text) else {
        return plain();
    };
    if !tail.trim().is_empty() {
        return plain();
    }
    if let Some(list) = value.get("tool_calls").and_then(Value::as_array) {
        if let Some(calls) = list
            .iter()
            .map(|c| call_from(c, "arguments"))
            .collect::<Option<Vec<_>>>()
        {
            return ParsedReply {
                content: String::new(),
                tool_calls: calls,
            };
        }
    }
    if let Some(call) = value
        .get("tool_call")
        .and_then(|c| call_from(c, "arguments"))
    {
        return ParsedReply {
            content: String::new(),
            tool_calls: vec![call],
        };
    }
    match value.get("response").and_then(Value::as_str) {
        Some(response) => ParsedReply {
            content: response.to_string(),
            tool_calls: Vec::new(),
        },
        None => plain(),
    }
}

/// `schema` with every local `$ref` (`#` or `#/...`) moved under the JSON
/// pointer `at`, where the schema is placed inside a larger one. Walked
/// with a stack of its own: nesting is bounded later, by the converter.
fn rebase_refs(schema: &Value, at: &str) -> Value {
    let mut out = schema.clone();
    let mut pending = vec![&mut out];
    while let Some(v) = pending.pop() {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    match v {
                        Value::String(r) if k == "$ref" && (r == "#" || r.starts_with("#/")) => {
                            *r = format!("{at}{}", &r[1..]);
                        }
                        v => pending.push(v),
                    }
                }
            }
            Value::Array(items) => pending.extend(items.iter_mut()),
            _ => {}
        }
    }
    out
}

/// For the generic format (a template with no tool syntax): a system
/// message that describes the tools and the JSON to answer with, put
/// first (or joined to the caller's system message).
pub(crate) fn with_generic_instructions(
    messages: &[ChatMessage],
    tools: &[Tool],
) -> Vec<ChatMessage> {
    let list: Vec<Value> = tools
        .iter()
        .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
        .collect();
    let text = format!(
        "You can call these tools:\n{}\nAnswer with JSON only: {{\"tool_calls\": [{{\"name\": ..., \"arguments\": {{...}}}}]}} to call tools, or {{\"response\": \"...\"}} to answer directly.",
        serde_json::to_string_pretty(&list).unwrap_or_default()
    );
    let mut out = messages.to_vec();
    match out.first_mut() {
        Some(first) if first.role == "system" => {
            first.content = format!("{}\n\n{text}", first.content);
        }
        _ => out.insert(0, ChatMessage::new("system", text)),
    }
    out
}

/// Streams an answer that may hold tool calls: text goes out as it comes,
/// except what may be the start of a call (the format's trigger, or a
/// prefix of it at the end), which is held back; at the end the whole
/// answer is parsed.
#[derive(Debug, Clone)]
pub struct ToolStream {
    format: ToolCallFormat,
    text: String,
    /// Bytes of `text` sent as content.
    sent: usize,
    /// The trigger was seen: nothing more goes out until the end.
    holding: bool,
}

impl ToolStream {
    /// A stream for answers in `format`.
    pub fn new(format: ToolCallFormat) -> ToolStream {
        ToolStream {
            format,
            text: String::new(),
            sent: 0,
            // The generic format's answer is JSON from its first byte.
            holding: format == ToolCallFormat::Generic,
        }
    }

    /// Adds a piece; returns the text that can go out now.
    pub fn push(&mut self, piece: &str) -> Option<String> {
        self.text.push_str(piece);
        if self.holding {
            return None;
        }
        let trigger = self.format.trigger().unwrap_or_default();
        let pending = &self.text[self.sent..];
        let safe = match pending.find(trigger) {
            Some(at) => {
                self.holding = true;
                at
            }
            // Keep back a tail that could grow into the trigger.
            None => (1..trigger.len().min(pending.len() + 1))
                .rev()
                .find(|&n| {
                    pending.is_char_boundary(pending.len() - n)
                        && trigger.starts_with(&pending[pending.len() - n..])
                })
                .map_or(pending.len(), |n| pending.len() - n),
        };
        let out = pending[..safe].to_string();
        self.sent += safe;
        (!out.is_empty()).then_some(out)
    }

    /// The end: the content not yet sent and the calls.
    pub fn finish(self) -> ParsedReply {
        let reply = self.format.parse(&self.text);
        if reply.tool_calls.is_empty() {
            let content = if self.format == ToolCallFormat::Generic {
                reply.content
            } else {
                self.text[self.sent..].to_string()
            };
            return ParsedReply {
                content,
                tool_calls: Vec::new(),
            };
        }
        // Text after the calls, if the model wrote any.
        let sent = self.text[..self.sent].trim();
        let rest = reply.content.strip_prefix(sent).unwrap_or("").to_string();
        ParsedReply {
            content: rest,
            tool_calls: reply.tool_calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Tool {
        Tool {
            name: "weather".into(),
            description: "The weather in a city".into(),
            parameters: json!({"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"]}),
        }
    }

    #[test]
    fn each_format_parses_its_calls_and_keeps_the_text() {
        let r = ToolCallFormat::Hermes.parse(
            "<tool_call>{\"name\": \"a\", \"arguments\": {\"x\": 1}}</tool_call>\n<tool_call>{\"name\": \"b\", \"arguments\": \"{\\\"y\\\": 2}\"}</tool_call>",
        );
        assert_eq!(r.content, "");
        assert_eq!(r.tool_calls.len(), 2);
        assert_eq!(r.tool_calls[1].arguments, json!({"y": 2}));

        let r = ToolCallFormat::Mistral.parse(
            "Sure.[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}, \"id\": \"abc123xyz\"}]",
        );
        assert_eq!(
            (r.content.as_str(), r.tool_calls[0].id.as_str()),
            ("Sure.", "abc123xyz")
        );

        let r = ToolCallFormat::Llama3
            .parse("<|python_tag|>{\"name\": \"a\", \"parameters\": {\"q\": \"x\"}}; {\"name\": \"b\", \"parameters\": {}}");
        assert_eq!(r.tool_calls.len(), 2);
        assert_eq!(r.tool_calls[0].arguments["q"], "x");

        let r = ToolCallFormat::Generic.parse("{\"response\": \"hello\"}");
        assert_eq!((r.content.as_str(), r.tool_calls.len()), ("hello", 0));
        let r = ToolCallFormat::Generic
            .parse("{\"tool_calls\": [{\"name\": \"a\", \"arguments\": {\"k\": true}}]}");
        assert_eq!(r.tool_calls[0].arguments, json!({"k": true}));
    }

    #[test]
    fn broken_calls_stay_text() {
        for (format, text) in [
            (
                ToolCallFormat::Hermes,
                "<tool_call>{\"name\": \"a\", \"argu",
            ),
            (ToolCallFormat::Hermes, "I use <tool_call> tags"),
            (ToolCallFormat::Mistral, "[TOOL_CALLS] not json"),
            (ToolCallFormat::Llama3, "{\"no_name\": 1}"),
            (ToolCallFormat::Generic, "plain words"),
        ] {
            let r = format.parse(text);
            assert!(r.tool_calls.is_empty(), "{format:?} {text:?}");
            assert_eq!(r.content, text.trim());
        }
    }

    #[test]
    fn templates_name_their_format() {
        assert_eq!(
            ToolCallFormat::detect(Some("[TOOL_CALLS]")),
            ToolCallFormat::Mistral
        );
        assert_eq!(
            ToolCallFormat::detect(Some("<|start_header_id|>ipython<|end_header_id|>")),
            ToolCallFormat::Llama3
        );
        assert_eq!(
            ToolCallFormat::detect(Some("<|im_start|>")),
            ToolCallFormat::Generic
        );
    }

    #[test]
    fn grammars_start_with_the_trigger_and_name_every_tool() {
        for format in [
            ToolCallFormat::Hermes,
            ToolCallFormat::Mistral,
            ToolCallFormat::Llama3,
            ToolCallFormat::Generic,
        ] {
            let stage = format
                .grammar(&[weather()], &ToolChoice::Auto, false)
                .unwrap()
                .unwrap();
            match (&stage, format.trigger().map(literal)) {
                (
                    SamplerStage::LazyGrammar {
                        grammar,
                        trigger_words,
                        ..
                    },
                    Some(t),
                ) => {
                    assert!(grammar.contains("\"\\\"weather\\\"\""), "{grammar}");
                    assert_eq!(trigger_words, &vec![format.trigger().unwrap().to_string()]);
                    if format != ToolCallFormat::Llama3 {
                        assert!(grammar.starts_with(&format!("root ::= {t}")), "{grammar}");
                    }
                }
                (SamplerStage::Grammar(g), None) => assert!(g.contains("tool_calls")),
                other => panic!("{format:?}: {other:?}"),
            }
            let forced = format
                .grammar(&[weather()], &ToolChoice::Required, true)
                .unwrap();
            assert!(matches!(forced, Some(SamplerStage::Grammar(_))));
            assert!(format
                .grammar(&[weather()], &ToolChoice::None, true)
                .unwrap()
                .is_none());
            assert!(format
                .grammar(&[weather()], &ToolChoice::Function("nope".into()), true)
                .is_err());
        }
    }

    #[test]
    fn a_stream_holds_back_what_may_start_a_call() {
        let mut s = ToolStream::new(ToolCallFormat::Hermes);
        let mut out = String::new();
        for piece in [
            "Let me ",
            "check.<tool",
            "_call>{\"name\": \"f\", ",
            "\"arguments\": {}}</tool_call>",
        ] {
            out.push_str(&s.push(piece).unwrap_or_default());
        }
        assert_eq!(out, "Let me check.");
        let end = s.finish();
        assert_eq!(end.tool_calls[0].name, "f");
        assert_eq!(end.content, "");

        // A held-back prefix that does not become the trigger goes out.
        let mut s = ToolStream::new(ToolCallFormat::Hermes);
        assert_eq!(s.push("a <to").as_deref(), Some("a "));
        assert_eq!(s.push("ad").as_deref(), Some("<toad"));
        assert_eq!(s.finish().content, "");
    }
}
