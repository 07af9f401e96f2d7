//! An answer as the chat APIs return it: thinking apart, tool calls parsed,
//! the rest content; piece by piece for streams, whole at the end.

use crate::request::GenRequest;
use llama_safe::chat::{ReasoningSplitter, Split, ToolStream};
use llama_safe::ToolCall;

/// Splits the pieces of one answer.
pub(crate) struct ReplyStream {
    /// For a model that thinks.
    reasoning: Option<ReasoningSplitter>,
    /// Thinking goes out (else it is dropped: thinking was turned off and
    /// the model thought anyway).
    keep_reasoning: bool,
    /// For a request with tools.
    tools: Option<ToolStream>,
}

/// A whole answer.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    pub reasoning: String,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
}

impl ReplyStream {
    /// For `req`'s answer to a prompt that `opens_thinking` (or not), from
    /// a model whose template `thinks` (or not).
    pub fn new(req: &GenRequest, thinks: bool, opens_thinking: bool) -> ReplyStream {
        ReplyStream {
            reasoning: (thinks && req.messages.is_some())
                .then(|| ReasoningSplitter::new(opens_thinking)),
            keep_reasoning: req.think != Some(false),
            tools: req.tools.as_ref().map(|t| ToolStream::new(t.format)),
        }
    }

    /// What `text` adds that can go out now.
    pub fn push(&mut self, text: &str) -> Split {
        let split = match self.reasoning.as_mut() {
            Some(r) => r.push(text),
            None => Split {
                reasoning: String::new(),
                content: text.to_string(),
            },
        };
        self.pass(split)
    }

    fn pass(&mut self, mut split: Split) -> Split {
        if !self.keep_reasoning {
            split.reasoning.clear();
        }
        if let Some(tools) = self.tools.as_mut() {
            split.content = tools.push(&split.content).unwrap_or_default();
        }
        split
    }

    /// The end: what was held back, and the calls.
    pub fn finish(mut self) -> Reply {
        let tail = match self.reasoning.take() {
            Some(r) => r.finish(),
            None => Split::default(),
        };
        let tail = self.pass(tail);
        let mut reply = Reply {
            reasoning: tail.reasoning,
            content: tail.content,
            tool_calls: Vec::new(),
        };
        if let Some(tools) = self.tools.take() {
            let parsed = tools.finish();
            reply.content.push_str(&parsed.content);
            reply.tool_calls = parsed.tool_calls;
        }
        reply
    }

    /// A whole answer `text`, split.
    pub fn whole(mut self, text: &str) -> Reply {
        let first = self.push(text);
        let mut reply = self.finish();
        reply.reasoning.insert_str(0, &first.reasoning);
        reply.content.insert_str(0, &first.content);
        reply
    }
}
