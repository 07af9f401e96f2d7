//! Chat templates: turning messages (and tool definitions) into a prompt
//! with the model's own template.
//!
//! The template is the GGUF's `tokenizer.chat_template`, a Jinja template,
//! rendered with [minijinja](https://docs.rs/minijinja) and the helpers real
//! templates use: Python string and dict methods (`strip`, `startswith`,
//! `items`, ...), `tojson`, `raise_exception`, `strftime_now`, `bos_token`
//! and `eos_token`. llama.cpp's built-in implementations of the common
//! templates are the fallback for a template the renderer cannot run
//! (without tools), said in [`ChatPrompt::fallback`] and logged. A template
//! that refuses its input (its `raise_exception`, such as roles that do not
//! alternate) is [`Error::ChatTemplateRaised`] with its message, and one
//! that runs out of its fuel or output budget is
//! [`Error::ChatTemplateBudget`]: never another format in their place.

mod builtin;
mod reasoning;
mod sandbox;
mod tools;

pub use reasoning::{ReasoningSplitter, Split, THINK_CLOSE, THINK_OPEN};
pub use sandbox::{FUEL, MAX_FORMAT_WIDTH, MAX_JSON_INDENT, MAX_OUTPUT_BYTES, MAX_VALUE_DEPTH};
pub use tools::{new_call_id, ParsedReply, ToolCallFormat, ToolChoice, ToolStream};

use crate::error::{Error, Result};
use crate::model::LlamaModel;
use serde::Serialize;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
    /// Tools the assistant called in this message.
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            ..Default::default()
        }
    }

    /// An assistant message that calls tools.
    pub fn tool_calls(calls: Vec<ToolCall>) -> Self {
        ChatMessage {
            role: "assistant".into(),
            tool_calls: calls,
            ..Default::default()
        }
    }

    /// A tool's result, answering call `id`.
    pub fn tool_result(id: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: "tool".into(),
            content: content.into(),
            tool_call_id: Some(id.into()),
            ..Default::default()
        }
    }
}

/// A call of a tool by the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call's id (answered by a `tool` message with the same id).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Its arguments (a JSON object).
    pub arguments: serde_json::Value,
}

/// A tool the model may call, as OpenAI's API describes a function.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its parameters, as a JSON schema.
    pub parameters: serde_json::Value,
}

/// How [`LlamaModel::apply_chat_template_with`] renders: tools, the
/// assistant's turn, thinking.
///
/// ```
/// use llama_safe::chat::TemplateOptions;
/// let options = TemplateOptions::default().with_thinking(false);
/// assert_eq!(options.thinking(), Some(false));
/// assert!(options.add_assistant());
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TemplateOptions {
    tools: Vec<Tool>,
    no_assistant: bool,
    thinking: Option<bool>,
}

impl TemplateOptions {
    /// Tools the model may call: rendered by the template, or for a
    /// template with no tool syntax ([`ToolCallFormat::Generic`]) described
    /// in a system message with the JSON to answer with.
    pub fn with_tools(mut self, tools: Vec<Tool>) -> Self {
        self.tools = tools;
        self
    }

    /// End with the assistant's turn (the default) or not.
    pub fn with_add_assistant(mut self, add: bool) -> Self {
        self.no_assistant = !add;
        self
    }

    /// Thinking on or off, for templates that read `enable_thinking`
    /// (Qwen3's and its derivatives'); unset, the template's default.
    pub fn with_thinking(mut self, on: bool) -> Self {
        self.thinking = Some(on);
        self
    }

    /// The tools.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// Whether the prompt ends with the assistant's turn.
    pub fn add_assistant(&self) -> bool {
        !self.no_assistant
    }

    /// Thinking on or off, if set.
    pub fn thinking(&self) -> Option<bool> {
        self.thinking
    }
}

/// A message as templates expect it (OpenAI's shape).
#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'a str,
    content: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

/// A prompt rendered from chat messages.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChatPrompt {
    /// The prompt.
    pub text: String,
    /// Why the model's own template could not be run, when llama.cpp's
    /// built-in version of it rendered the prompt instead (also logged as
    /// a warning). A template that refuses its input (`raise_exception`)
    /// or runs over its budget on it is an error, never a fallback.
    pub fallback: Option<String>,
}

/// Renders a Jinja chat `template` (see the [module docs](self)).
///
/// ```
/// use llama_safe::chat::{render, ChatMessage};
/// let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content.strip() }}<|im_end|>\n{% endfor %}\
///               {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
/// let text = render(chatml, &[ChatMessage::new("user", " Hi ")], &[], true, "<s>", "</s>")?;
/// assert_eq!(text, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
/// # Ok::<(), llama_safe::Error>(())
/// ```
pub fn render(
    template: &str,
    messages: &[ChatMessage],
    tools: &[Tool],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    render_with(
        template,
        messages,
        tools,
        add_generation_prompt,
        None,
        [bos_token, eos_token],
    )
}

/// [`render`], with `enable_thinking` set for the template when given.
fn render_with(
    template: &str,
    messages: &[ChatMessage],
    tools: &[Tool],
    add_generation_prompt: bool,
    thinking: Option<bool>,
    [bos_token, eos_token]: [&str; 2],
) -> Result<String> {
    let fail = |e: minijinja::Error| sandbox::classify(&e, || format!("{e:#}"));
    // Namespace assignments pass through the guard (see `sandbox`); the
    // source outlives the environment that borrows it.
    let source = sandbox::guard_namespace_sets(template);
    let mut env = minijinja::Environment::new();
    // A template comes from a model file: bound its work, so a hostile one
    // cannot hang the caller or exhaust its memory or stack.
    env.set_fuel(Some(FUEL));
    env.set_unknown_method_callback(sandbox::unknown_method);
    env.add_filter("tojson", sandbox::tojson);
    env.add_function(sandbox::GUARD, sandbox::checked_namespace_value);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(
                minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message)
                    .with_source(sandbox::Marker::Raised),
            )
        },
    );
    env.add_function("strftime_now", strftime_now);
    env.add_template("chat", &source).map_err(fail)?;
    let messages: Vec<TemplateMessage<'_>> = messages
        .iter()
        .map(|m| TemplateMessage {
            role: &m.role,
            content: &m.content,
            tool_calls: m
                .tool_calls
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    })
                })
                .collect(),
            tool_call_id: m.tool_call_id.as_deref(),
        })
        .collect();
    let tools: Vec<serde_json::Value> = tools
        .iter()
        .map(|t| {
            serde_json::json!({
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            })
        })
        .collect();
    let context = minijinja::context! {
        messages => minijinja::Value::from(minijinja::value::Serde(&messages)),
        tools => if tools.is_empty() {
            minijinja::Value::from(())
        } else {
            minijinja::Value::from(minijinja::value::Serde(&tools))
        },
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
        enable_thinking => thinking.map_or(minijinja::Value::UNDEFINED, minijinja::Value::from),
    };
    let mut out = sandbox::CappedOutput(Vec::new());
    env.get_template("chat")
        .and_then(|t| t.render_captured_to(context, &mut out).map(drop))
        .map_err(fail)?;
    String::from_utf8(out.0).map_err(|_| Error::ChatTemplate {
        reason: "the template wrote invalid UTF-8".into(),
    })
}

/// Formats `messages` with llama.cpp's built-in implementation of the
/// template `template` names (`chatml`, `llama3`, `gemma`, ...) or looks
/// like: what [`LlamaModel::apply_chat_template`] falls back to.
pub fn render_builtin(
    template: &str,
    messages: &[ChatMessage],
    add_assistant: bool,
) -> Result<String> {
    builtin::apply(template, messages, add_assistant)
}

/// `strftime_now(format)`: today's date (UTC) in a `strftime` format;
/// `%d`, `%m`, `%Y`, `%b` and `%B` are what templates use.
fn strftime_now(format: String) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = MONTHS[(month - 1) as usize];
    format
        .replace("%d", &format!("{day:02}"))
        .replace("%m", &format!("{month:02}"))
        .replace("%Y", &year.to_string())
        .replace("%B", name)
        .replace("%b", &name[..3])
}

impl LlamaModel {
    /// Formats `messages` with the model's chat template, ending with the
    /// assistant's turn when `add_assistant` is set: the template rendered
    /// with [`render`], or llama.cpp's built-in version of it when the
    /// renderer cannot run it. `bos_token` is empty where tokenizing the
    /// prompt adds BOS anyway.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_assistant: bool,
    ) -> Result<String> {
        self.apply_chat_template_with_tools(messages, &[], add_assistant)
    }

    /// How this model writes tool calls, told from its chat template.
    pub fn tool_call_format(&self) -> ToolCallFormat {
        ToolCallFormat::detect(self.chat_template().as_deref())
    }

    /// As [`apply_chat_template`](Self::apply_chat_template), with tool
    /// definitions for the template (which needs a Jinja template that
    /// renders them; llama.cpp's built-ins know no tools).
    pub fn apply_chat_template_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        add_assistant: bool,
    ) -> Result<String> {
        self.render_template(messages, tools, add_assistant, None)
            .map(|p| p.text)
    }

    /// Formats `messages` as [`options`](TemplateOptions) say: with tools
    /// (for a template with no tool syntax, described in a system message,
    /// as [`ToolCallFormat::Generic`] parses the answer), thinking on or
    /// off. Whether the answer starts inside a thinking block is
    /// [`ReasoningSplitter::for_prompt`] of the result.
    ///
    /// ```
    /// use llama_safe::chat::TemplateOptions;
    /// use llama_safe::{demo::DemoModel, ChatMessage, LlamaBackend, LlamaModel};
    /// let model = LlamaModel::load(&LlamaBackend::init(), DemoModel::Moe.cached()?, &Default::default())?;
    /// let prompt = model.apply_chat_template_with(
    ///     &[ChatMessage::new("user", "Hi")],
    ///     &TemplateOptions::default().with_thinking(false),
    /// )?;
    /// assert!(prompt.contains("Hi"));
    /// # Ok::<(), llama_safe::Error>(())
    /// ```
    pub fn apply_chat_template_with(
        &self,
        messages: &[ChatMessage],
        options: &TemplateOptions,
    ) -> Result<String> {
        self.render_chat(messages, options).map(|p| p.text)
    }

    /// As [`apply_chat_template_with`](Self::apply_chat_template_with),
    /// saying whether llama.cpp's built-in template stood in for the
    /// model's (see [`ChatPrompt`]).
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        options: &TemplateOptions,
    ) -> Result<ChatPrompt> {
        let tools = options.tools();
        if !tools.is_empty() && self.tool_call_format() == ToolCallFormat::Generic {
            let messages = tools::with_generic_instructions(messages, tools);
            return self.render_template(
                &messages,
                &[],
                options.add_assistant(),
                options.thinking(),
            );
        }
        self.render_template(messages, tools, options.add_assistant(), options.thinking())
    }

    fn render_template(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        add_assistant: bool,
        thinking: Option<bool>,
    ) -> Result<ChatPrompt> {
        let template = self.chat_template();
        let token_text = |t: Option<crate::Token>| {
            t.and_then(|t| self.token_bytes(t, true).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        // Tokenizing the prompt adds BOS where the vocabulary asks for it, so
        // the template must not write it too (llama.cpp's built-ins do not).
        // SAFETY: the vocab lives with the model.
        let adds_bos = unsafe { llama_safe_sys::llama_vocab_get_add_bos(self.vocab()) };
        let bos = if adds_bos {
            String::new()
        } else {
            token_text(self.token_bos())
        };
        let eos = token_text(self.token_eos());
        let rendered = template
            .as_deref()
            .map(|t| render_with(t, messages, tools, add_assistant, thinking, [&bos, &eos]));
        match (rendered, template) {
            (Some(Ok(text)), _) => Ok(ChatPrompt {
                text,
                fallback: None,
            }),
            (Some(Err(e)), _) if !tools.is_empty() => Err(e),
            // The template's own refusal, and a template over its budget on
            // this input, are the caller's errors: another format would
            // answer what the template refused.
            (
                Some(Err(
                    e @ (Error::ChatTemplateRaised { .. } | Error::ChatTemplateBudget { .. }),
                )),
                _,
            ) => Err(e),
            (Some(Err(e)), Some(t)) => {
                let text = render_builtin(&t, messages, add_assistant)?;
                log::warn!("the chat template cannot be rendered ({e}); llama.cpp's built-in template stands in");
                Ok(ChatPrompt {
                    text,
                    fallback: Some(e.to_string()),
                })
            }
            _ if !tools.is_empty() => Err(Error::ChatTemplate {
                reason: "the model has no chat template to render tools with".into(),
            }),
            _ => Err(Error::ChatTemplate {
                reason: "the model has no chat template".into(),
            }),
        }
    }
}

/// A chat template file's text, for
/// [`LlamaModelParams::with_chat_template`](crate::LlamaModelParams::with_chat_template):
/// a regular file of at most [`MAX_CHAT_TEMPLATE_BYTES`](crate::MAX_CHAT_TEMPLATE_BYTES)
/// bytes of UTF-8 (a FIFO or `/dev/zero` is refused unread, a bigger file
/// after the limit; see [`files::read_regular`](crate::files::read_regular)).
pub fn read_template_file(file: &std::path::Path) -> crate::Result<String> {
    let bytes = crate::files::read_regular(file, crate::MAX_CHAT_TEMPLATE_BYTES as u64)?;
    String::from_utf8(bytes).map_err(|_| crate::Error::InvalidParameter {
        name: "chat_template_file",
        reason: format!("{} is not UTF-8", file.display()).into(),
    })
}
