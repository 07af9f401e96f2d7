//! JSON schema → GBNF, following the rules of llama.cpp's own converter
//! (`common/json-schema-to-grammar.cpp`, which the C API does not export):
//! the same primitive rules, whitespace, property order and treatment of
//! `additionalProperties` (absent means none).

use super::{int_range, literal};
use crate::error::{Error, Result};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// Deepest nesting of schemas followed (a hostile schema cannot overflow
/// the stack).
pub const MAX_DEPTH: usize = 64;
/// Most rules one grammar may hold.
pub const MAX_RULES: usize = 4096;
/// Deepest JSON nesting of a whole schema, `const` and `enum` values
/// included (checked without recursion before anything else).
pub const MAX_JSON_DEPTH: usize = 256;
/// Most values of one `enum`, and most properties of one object.
pub const MAX_ALTERNATIVES: usize = 512;
/// Longest grammar a schema may become, in bytes.
pub const MAX_GRAMMAR_LEN: usize = super::MAX_GRAMMAR_BYTES;

/// Rule names the converter does not give to properties or definitions.
const RESERVED: [&str; 3] = ["space", "root", "call"];

/// llama.cpp's whitespace between tokens: none, one space, or one or two
/// newlines and some indentation.
const SPACE: &str = r#"| " " | "\n"{1,2} [ \t]{0,20}"#;

/// The primitive rules and the rules each needs.
const PRIMITIVES: &[(&str, &str, &[&str])] = &[
    ("boolean", r#"("true" | "false") space"#, &[]),
    ("decimal-part", "[0-9]{1,16}", &[]),
    ("integral-part", "[0] | [1-9] [0-9]{0,15}", &[]),
    (
        "number",
        r#"("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)? space"#,
        &["integral-part", "decimal-part"],
    ),
    (
        "integer",
        r#"("-"? integral-part) space"#,
        &["integral-part"],
    ),
    (
        "value",
        "object | array | string | number | boolean | null",
        &["object", "array", "string", "number", "boolean", "null"],
    ),
    (
        "object",
        r#""{" space ( string ":" space value ("," space string ":" space value)* )? "}" space"#,
        &["string", "value"],
    ),
    (
        "array",
        r#""[" space ( value ("," space value)* )? "]" space"#,
        &["value"],
    ),
    (
        "uuid",
        r#""\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\"" space"#,
        &[],
    ),
    (
        "char",
        r#"[^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})"#,
        &[],
    ),
    ("string", r#""\"" char* "\"" space"#, &["char"]),
    ("null", r#""null" space"#, &[]),
    (
        "date",
        r#"[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )"#,
        &[],
    ),
    (
        "time",
        r#"([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? ( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )"#,
        &[],
    ),
    ("date-time", r#"date "T" time"#, &["date", "time"]),
    ("date-string", r#""\"" date "\"" space"#, &["date"]),
    ("time-string", r#""\"" time "\"" space"#, &["time"]),
    (
        "date-time-string",
        r#""\"" date-time "\"" space"#,
        &["date-time"],
    ),
];

/// The GBNF grammar of the JSON values `schema` accepts, with root rule
/// `root`. Supported: `type` (one or a list), `enum`, `const`,
/// `properties`/`required`/`additionalProperties`, `items`/`prefixItems`/
/// `minItems`/`maxItems`, `minLength`/`maxLength`, `format` (`date`,
/// `time`, `date-time`, `uuid`), integer `minimum`/`maximum` (and their
/// exclusive forms), `anyOf`/`oneOf`, `allOf` of objects, and local `$ref`s
/// (`#/$defs/...`, recursion included). Bounds of non-integer numbers are
/// not enforced (as in llama.cpp). A `pattern`, a remote `$ref` or a
/// schema that allows nothing is [`Error::JsonSchema`] naming where in the
/// schema it is.
///
/// ```
/// use llama_safe::grammar::json_schema_to_grammar;
/// let schema = serde_json::json!({
///     "type": "object",
///     "properties": {"city": {"enum": ["Paris", "Rome"]}, "days": {"type": "integer", "minimum": 1, "maximum": 14}},
///     "required": ["city", "days"],
/// });
/// let gbnf = json_schema_to_grammar(&schema)?;
/// assert!(gbnf.starts_with("root ::= \"{\" space city-kv"));
/// # Ok::<(), llama_safe::Error>(())
/// ```
pub fn json_schema_to_grammar(schema: &Value) -> Result<String> {
    check_depth(schema)?;
    let mut c = Converter {
        root: schema,
        rules: BTreeMap::new(),
        refs: HashMap::new(),
        by_body: HashMap::new(),
        next_suffix: HashMap::new(),
        bytes: 0,
        depth: 0,
    };
    c.rules.insert("space".into(), SPACE.into());
    c.visit(schema, "", "#")?;
    let mut out = String::new();
    if let Some(root) = c.rules.get("root") {
        out.push_str(&format!("root ::= {root}\n"));
    }
    for (name, body) in c.rules.iter().filter(|(n, _)| *n != "root") {
        out.push_str(&format!("{name} ::= {body}\n"));
    }
    if out.len() > MAX_GRAMMAR_LEN {
        return Err(fail(
            "#",
            format!(
                "the grammar would be {} bytes; at most {MAX_GRAMMAR_LEN}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// Refuses a schema nested deeper than [`MAX_JSON_DEPTH`], walking it with
/// a stack of its own (a recursive walk, or serialising a `const`, would
/// overflow the thread's stack first).
pub(crate) fn check_depth(schema: &Value) -> Result<()> {
    let mut pending = vec![(schema, 0usize)];
    while let Some((v, depth)) = pending.pop() {
        if depth > MAX_JSON_DEPTH {
            return Err(fail(
                "#",
                format!("the schema is nested deeper than {MAX_JSON_DEPTH} levels"),
            ));
        }
        match v {
            Value::Array(items) => pending.extend(items.iter().map(|i| (i, depth + 1))),
            Value::Object(map) => pending.extend(map.values().map(|i| (i, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

struct Converter<'a> {
    root: &'a Value,
    rules: BTreeMap<String, String>,
    /// `$ref` → the rule it became.
    refs: HashMap<String, String>,
    /// (base name, body) → the rule added for it, so a body added again
    /// under the same name is found at once.
    by_body: HashMap<(String, String), String>,
    /// Base name → the suffix to try next for a new rule.
    next_suffix: HashMap<String, usize>,
    /// Bytes of the rules so far, bounded by [`MAX_GRAMMAR_LEN`] as they grow.
    bytes: usize,
    depth: usize,
}

/// The name of a rule under the one named `name` (`""` at the root).
fn child(name: &str, part: &str) -> String {
    if name.is_empty() {
        part.to_string()
    } else {
        format!("{name}-{part}")
    }
}

fn fail(at: &str, reason: impl Into<String>) -> Error {
    Error::JsonSchema {
        at: at.to_string(),
        reason: reason.into().into(),
    }
}

/// A rule name from a property or definition name: GBNF names are letters,
/// digits and `-`.
fn rule_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if clean.is_empty() {
        "root".into()
    } else if PRIMITIVES.iter().any(|(p, _, _)| *p == clean) || RESERVED.contains(&clean.as_str()) {
        // Taken by the primitives, the root, and the rule a tool-call
        // grammar names a call's grammar by.
        format!("{clean}-")
    } else {
        clean
    }
}

impl Converter<'_> {
    /// Adds `body` as a rule named after `name` (made unique) and returns
    /// its name.
    fn add_rule(&mut self, name: &str, body: String, at: &str) -> Result<String> {
        super::deadline::check(at)?;
        let base = rule_name(name);
        if let Some(key) = self.by_body.get(&(base.clone(), body.clone())) {
            return Ok(key.clone());
        }
        if self.rules.len() >= MAX_RULES {
            return Err(fail(
                at,
                format!("the grammar would need more than {MAX_RULES} rules"),
            ));
        }
        // The first free name of `base`, `base1`, `base2`, ... (names
        // already tried are not tried again: linear, not quadratic).
        let next = self.next_suffix.entry(base.clone()).or_insert(0);
        let mut key = if *next == 0 {
            base.clone()
        } else {
            format!("{base}{next}")
        };
        while self.rules.contains_key(&key) {
            *next += 1;
            key = format!("{base}{next}");
        }
        *next += 1;
        self.bytes += key.len() + body.len() + 6;
        if self.bytes > MAX_GRAMMAR_LEN {
            return Err(fail(
                at,
                format!("the grammar would be over {MAX_GRAMMAR_LEN} bytes"),
            ));
        }
        self.rules.insert(key.clone(), body.clone());
        self.by_body.insert((base, body), key.clone());
        Ok(key)
    }

    fn primitive(&mut self, name: &str) -> String {
        let (_, body, deps) = PRIMITIVES
            .iter()
            .find(|(n, _, _)| *n == name)
            .expect("a primitive rule");
        if !self.rules.contains_key(name) {
            self.rules.insert(name.to_string(), body.to_string());
            for dep in *deps {
                self.primitive(dep);
            }
        }
        name.to_string()
    }

    /// The rule for `schema` (at JSON pointer `at`), named after `name`.
    fn visit(&mut self, schema: &Value, name: &str, at: &str) -> Result<String> {
        super::deadline::check(at)?;
        if self.depth >= MAX_DEPTH {
            return Err(fail(at, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let rule = self.visit_inner(schema, name, at);
        self.depth -= 1;
        rule
    }

    fn visit_inner(&mut self, schema: &Value, name: &str, at: &str) -> Result<String> {
        let sub = |s: &str| child(name, s);
        let obj = match schema {
            Value::Bool(true) => return self.any(name, at),
            Value::Bool(false) => return Err(fail(at, "`false` allows no value")),
            Value::Object(o) => o,
            _ => return Err(fail(at, "a schema must be an object or a boolean")),
        };
        if let Some(r) = obj.get("$ref") {
            let r = r
                .as_str()
                .ok_or_else(|| fail(at, "`$ref` must be a string"))?;
            let target = self.reference(r, at)?;
            return self.add_rule(name, target, at);
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(alts) = obj.get(key) {
                let alts = alts
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| fail(at, format!("`{key}` must be a non-empty array")))?;
                if alts.len() > MAX_ALTERNATIVES {
                    return Err(fail(
                        at,
                        format!("`{key}` has more than {MAX_ALTERNATIVES} alternatives"),
                    ));
                }
                let mut parts = Vec::with_capacity(alts.len());
                for (i, alt) in alts.iter().enumerate() {
                    parts.push(self.visit(
                        alt,
                        &sub(&i.to_string()),
                        &format!("{at}/{key}/{i}"),
                    )?);
                }
                return self.add_rule(name, parts.join(" | "), at);
            }
        }
        if let Some(all) = obj.get("allOf") {
            return self.all_of(all, name, at);
        }
        if let Some(value) = obj.get("const") {
            return self.add_rule(name, format!("{} space", literal(&value.to_string())), at);
        }
        if let Some(values) = obj.get("enum") {
            let values = values
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| fail(at, "`enum` must be a non-empty array"))?;
            if values.len() > MAX_ALTERNATIVES {
                return Err(fail(
                    at,
                    format!("`enum` has more than {MAX_ALTERNATIVES} values"),
                ));
            }
            let alts: Vec<String> = values.iter().map(|v| literal(&v.to_string())).collect();
            return self.add_rule(name, format!("({}) space", alts.join(" | ")), at);
        }
        match obj.get("type") {
            Some(Value::Array(types)) if !types.is_empty() => {
                let mut parts = Vec::with_capacity(types.len());
                for (i, t) in types.iter().enumerate() {
                    let mut one = obj.clone();
                    one.insert("type".into(), t.clone());
                    parts.push(self.visit(
                        &Value::Object(one),
                        &sub(&i.to_string()),
                        &format!("{at}/type/{i}"),
                    )?);
                }
                self.add_rule(name, parts.join(" | "), at)
            }
            Some(Value::String(t)) => self.typed(t, obj, name, at),
            Some(_) => Err(fail(
                at,
                "`type` must be a type name or a non-empty list of them",
            )),
            None if obj.contains_key("properties") => self.typed("object", obj, name, at),
            None if obj.contains_key("items") || obj.contains_key("prefixItems") => {
                self.typed("array", obj, name, at)
            }
            None => self.any(name, at),
        }
    }

    fn any(&mut self, name: &str, at: &str) -> Result<String> {
        let value = self.primitive("value");
        self.add_rule(name, value, at)
    }

    fn reference(&mut self, r: &str, at: &str) -> Result<String> {
        if let Some(rule) = self.refs.get(r) {
            return Ok(rule.clone());
        }
        let pointer = r
            .strip_prefix('#')
            .ok_or_else(|| fail(at, format!("`$ref` {r:?} is not local (only `#/...`)")))?;
        let target = self
            .root
            .pointer(pointer)
            .ok_or_else(|| fail(at, format!("`$ref` {r:?} points at nothing")))?;
        let name = rule_name(r.rsplit('/').next().unwrap_or("ref"));
        // Reserve the name first, so a recursive reference finds it.
        let mut key = format!("ref-{name}");
        let mut i = 0;
        while self.rules.contains_key(&key) {
            i += 1;
            key = format!("ref-{name}{i}");
        }
        self.rules.insert(key.clone(), String::new());
        self.refs.insert(r.to_string(), key.clone());
        let rule = self.visit(target, &format!("{key}-body"), r)?;
        self.rules.insert(key.clone(), rule);
        Ok(key)
    }

    fn typed(&mut self, t: &str, obj: &Map<String, Value>, name: &str, at: &str) -> Result<String> {
        let sub = |s: &str| child(name, s);
        match t {
            "object" => {
                let props: Vec<(&str, &Value)> = match obj.get("properties") {
                    None => Vec::new(),
                    Some(Value::Object(p)) if p.len() > MAX_ALTERNATIVES => {
                        return Err(fail(at, format!("more than {MAX_ALTERNATIVES} properties")))
                    }
                    Some(Value::Object(p)) => p.iter().map(|(k, v)| (k.as_str(), v)).collect(),
                    Some(_) => return Err(fail(at, "`properties` must be an object")),
                };
                let required = required(obj, at)?;
                let additional = match obj.get("additionalProperties") {
                    None | Some(Value::Bool(false)) => None,
                    Some(v) => Some(v),
                };
                if props.is_empty() && matches!(additional, Some(Value::Bool(true))) {
                    let object = self.primitive("object");
                    return self.add_rule(name, object, at);
                }
                if props.is_empty() && additional.is_none() && !obj.contains_key("properties") {
                    // `{"type": "object"}` alone: any object.
                    let object = self.primitive("object");
                    return self.add_rule(name, object, at);
                }
                let body = self.object(&props, &required, additional, name, at)?;
                self.add_rule(name, body, at)
            }
            "array" => {
                let min = count(obj, "minItems", at)?.unwrap_or(0);
                let max = count(obj, "maxItems", at)?;
                if let Some(Value::Array(prefix)) = obj.get("prefixItems") {
                    let mut parts = Vec::new();
                    for (i, item) in prefix.iter().enumerate() {
                        parts.push(self.visit(
                            item,
                            &sub(&format!("tuple-{i}")),
                            &format!("{at}/prefixItems/{i}"),
                        )?);
                    }
                    let body = format!(r#""[" space {} "]" space"#, parts.join(r#" "," space "#));
                    return self.add_rule(name, body, at);
                }
                let item = match obj.get("items") {
                    None => self.primitive("value"),
                    Some(items) => self.visit(items, &sub("item"), &format!("{at}/items"))?,
                };
                if max.is_some_and(|m| m < min) {
                    return Err(fail(at, "`maxItems` is below `minItems`"));
                }
                let body = format!(
                    r#""[" space {} "]" space"#,
                    repetition(&item, min, max, r#""," space"#)
                );
                self.add_rule(name, body, at)
            }
            "string" => {
                if obj.contains_key("pattern") {
                    return Err(fail(at, "`pattern` is not supported"));
                }
                match obj.get("format").and_then(Value::as_str) {
                    Some("uuid") => {
                        let rule = self.primitive("uuid");
                        return self.add_rule(name, rule, at);
                    }
                    Some(f @ ("date" | "time" | "date-time")) => {
                        let rule = self.primitive(&format!("{f}-string"));
                        return self.add_rule(name, rule, at);
                    }
                    _ => {}
                }
                let min = count(obj, "minLength", at)?.unwrap_or(0);
                let max = count(obj, "maxLength", at)?;
                if min == 0 && max.is_none() {
                    let rule = self.primitive("string");
                    return self.add_rule(name, rule, at);
                }
                if max.is_some_and(|m| m < min) {
                    return Err(fail(at, "`maxLength` is below `minLength`"));
                }
                let ch = self.primitive("char");
                let body = format!(r#""\"" {} "\"" space"#, repetition(&ch, min, max, ""));
                self.add_rule(name, body, at)
            }
            "integer" => {
                let bound = |key: &str, exclusive: &str, step: i64| -> Result<Option<i64>> {
                    let inclusive = match obj.get(key) {
                        None => None,
                        Some(v) => Some(integer(v, at, key)?),
                    };
                    let exclusive = match obj.get(exclusive) {
                        None => None,
                        Some(v) => Some(integer(v, at, exclusive)?.saturating_add(step)),
                    };
                    Ok(match (inclusive, exclusive) {
                        (Some(a), Some(b)) if step > 0 => Some(a.max(b)),
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    })
                };
                let lo = bound("minimum", "exclusiveMinimum", 1)?;
                let hi = bound("maximum", "exclusiveMaximum", -1)?;
                if lo.is_none() && hi.is_none() {
                    let rule = self.primitive("integer");
                    return self.add_rule(name, rule, at);
                }
                let body = int_range::gbnf(lo, hi)
                    .ok_or_else(|| fail(at, "the range of integers allowed is empty"))?;
                self.add_rule(name, format!("({body}) space"), at)
            }
            "number" | "boolean" | "null" => {
                let rule = self.primitive(t);
                self.add_rule(name, rule, at)
            }
            other => Err(fail(at, format!("unknown type {other:?}"))),
        }
    }

    /// `{ required, then optional in order }`, as llama.cpp builds it.
    fn object(
        &mut self,
        props: &[(&str, &Value)],
        required: &[String],
        additional: Option<&Value>,
        name: &str,
        at: &str,
    ) -> Result<String> {
        let sub = |s: &str| child(name, s);
        let mut kv = HashMap::new();
        let mut required_keys = Vec::new();
        let mut optional_keys = Vec::new();
        for (prop, schema) in props {
            let value = self.visit(schema, &sub(prop), &format!("{at}/properties/{prop}"))?;
            let key_literal = literal(&Value::String(prop.to_string()).to_string());
            let rule = self.add_rule(
                &sub(&format!("{prop}-kv")),
                format!(r#"{key_literal} space ":" space {value}"#),
                at,
            )?;
            kv.insert(prop.to_string(), rule);
            if required.iter().any(|r| r == prop) {
                required_keys.push(prop.to_string());
            } else {
                optional_keys.push(prop.to_string());
            }
        }
        if let Some(r) = required.iter().find(|r| !kv.contains_key(*r)) {
            return Err(fail(
                at,
                format!("required property {r:?} is not in `properties`"),
            ));
        }
        if let Some(extra) = additional {
            let value = match extra {
                Value::Bool(true) => self.primitive("value"),
                schema => self.visit(
                    schema,
                    &sub("additional-value"),
                    &format!("{at}/additionalProperties"),
                )?,
            };
            // llama.cpp excludes the named keys from the extra ones with a
            // negative match; any string key is a superset of that.
            let key = self.primitive("string");
            let rule = self.add_rule(
                &sub("additional-kv"),
                format!(r#"{key} ":" space {value}"#),
                at,
            )?;
            kv.insert("*".into(), rule);
            optional_keys.push("*".into());
        }
        if required_keys.is_empty() && optional_keys.is_empty() {
            return Ok(r#""{" space "}" space"#.into());
        }
        let mut rule = String::from(r#""{" space "#);
        rule.push_str(
            &required_keys
                .iter()
                .map(|k| kv[k].clone())
                .collect::<Vec<_>>()
                .join(r#" "," space "#),
        );
        if !optional_keys.is_empty() {
            rule.push_str(" (");
            if !required_keys.is_empty() {
                rule.push_str(r#" "," space ( "#);
            }
            let alts = self.optional_chains(&optional_keys, &kv, name, at)?;
            rule.push_str(&alts.join(" | "));
            if !required_keys.is_empty() {
                rule.push_str(" )");
            }
            rule.push_str(" )?");
        }
        rule.push_str(r#" "}" space"#);
        Ok(rule)
    }

    /// For each `i`, the optional keys from `keys[i]` on, each at most
    /// once, in order, as llama.cpp builds them: the rule for the keys
    /// after `keys[j]` is named `{keys[j]}-rest` and shared by every start
    /// before it. Built from the end, without recursion.
    fn optional_chains(
        &mut self,
        keys: &[String],
        kv: &HashMap<String, String>,
        name: &str,
        at: &str,
    ) -> Result<Vec<String>> {
        // rest[i]: the rule for keys[i..] when keys[i] is itself optional
        // (the tail after keys[i - 1]); None past the end.
        let mut rest: Vec<Option<String>> = vec![None; keys.len() + 1];
        let mut alts = vec![String::new(); keys.len()];
        for i in (0..keys.len()).rev() {
            let k = &keys[i];
            let kv_rule = &kv[k];
            let comma = format!(r#"( "," space {kv_rule} )"#);
            let tail = rest[i + 1]
                .as_ref()
                .map(|r| format!(" {r}"))
                .unwrap_or_default();
            alts[i] = if k == "*" {
                format!("{kv_rule} {comma}*{tail}")
            } else {
                format!("{kv_rule}{tail}")
            };
            if i > 0 {
                let body = format!("{comma}{}{tail}", if k == "*" { "*" } else { "?" });
                let before = &keys[i - 1];
                let before = if before == "*" {
                    "additional"
                } else {
                    before.as_str()
                };
                rest[i] = Some(self.add_rule(&child(name, &format!("{before}-rest")), body, at)?);
            }
        }
        Ok(alts)
    }

    /// `allOf` of objects (and `$ref`s to them): their properties merged,
    /// each component's `required` kept.
    fn all_of(&mut self, all: &Value, name: &str, at: &str) -> Result<String> {
        let parts = all
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| fail(at, "`allOf` must be a non-empty array"))?;
        let mut props: Vec<(String, Value)> = Vec::new();
        let mut required_all = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let mut part = part;
            let mut hops = 0;
            while let Some(r) = part.get("$ref").and_then(Value::as_str) {
                hops += 1;
                if hops > MAX_DEPTH {
                    return Err(fail(at, "`$ref`s in `allOf` loop"));
                }
                part = r
                    .strip_prefix('#')
                    .and_then(|p| self.root.pointer(p))
                    .ok_or_else(|| fail(at, format!("`$ref` {r:?} points at nothing local")))?;
            }
            let here = format!("{at}/allOf/{i}");
            let obj = part
                .as_object()
                .filter(|o| o.contains_key("properties"))
                .ok_or_else(|| fail(&here, "only objects with `properties` can be combined"))?;
            let Some(Value::Object(p)) = obj.get("properties") else {
                return Err(fail(&here, "`properties` must be an object"));
            };
            for (k, v) in p {
                props.push((k.clone(), v.clone()));
            }
            required_all.extend(required(obj, &here)?);
        }
        let props: Vec<(&str, &Value)> = props.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let body = self.object(&props, &required_all, None, name, at)?;
        self.add_rule(name, body, at)
    }
}

fn required(obj: &Map<String, Value>, at: &str) -> Result<Vec<String>> {
    match obj.get("required") {
        None => Ok(Vec::new()),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| fail(at, "`required` must list property names")),
        Some(_) => Err(fail(at, "`required` must be an array")),
    }
}

/// A `minItems`/`maxItems`/`minLength`/`maxLength`: llama.cpp's grammar
/// cannot repeat anything more than [`MAX_REPETITION`](super::MAX_REPETITION)
/// times (a larger maximum would silently become "no maximum").
fn count(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Option<u64>> {
    let limit = super::MAX_REPETITION;
    match obj.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().filter(|n| *n <= limit).map(Some).ok_or_else(|| {
            fail(
                at,
                format!("`{key}` must be an integer from 0 to {limit} (what llama.cpp's grammars can count to)"),
            )
        }),
    }
}

fn integer(v: &Value, at: &str, key: &str) -> Result<i64> {
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    match v.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(fail(at, format!("`{key}` must be an integer"))),
    }
}

/// `item` between `min` and `max` times (no upper bound: `None`), separated
/// by `sep`.
fn repetition(item: &str, min: u64, max: Option<u64>, sep: &str) -> String {
    if max == Some(0) {
        return String::new();
    }
    if sep.is_empty() {
        return match (min, max) {
            (0, Some(1)) => format!("{item}?"),
            (1, None) => format!("{item}+"),
            (0, None) => format!("{item}*"),
            (m, None) => format!("{item}{{{m},}}"),
            (m, Some(n)) => format!("{item}{{{m},{n}}}"),
        };
    }
    let rest = repetition(
        &format!("({sep} {item})"),
        min.saturating_sub(1),
        max.map(|m| m - 1),
        "",
    );
    let one_or_more = format!("{item} {rest}");
    if min == 0 {
        format!("({one_or_more})?")
    } else {
        one_or_more
    }
}
