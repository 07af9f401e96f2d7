//! The one error type of this crate.

use crate::logging::{LogLevel, LogLine};
use std::path::PathBuf;

/// Everything that can go wrong, with the context needed to act on it: the
/// path, the pattern, llama.cpp's own reason or status code.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model path does not exist.
    #[error("model file not found: {path}")]
    NotFound {
        /// The path concerned.
        path: PathBuf,
    },
    /// The model path is a directory.
    #[error("model path is a directory, not a GGUF file: {path}")]
    IsDirectory {
        /// The path concerned.
        path: PathBuf,
    },
    /// The model file cannot be opened or read.
    #[error("cannot read model file {path}: {source}")]
    Unreadable {
        /// The path concerned.
        path: PathBuf,
        /// The underlying I/O error (shared, so the error is `Clone`).
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// The file does not start with the GGUF magic.
    #[error("not a GGUF file (no GGUF magic at the start): {path}")]
    NotGguf {
        /// The path concerned.
        path: PathBuf,
    },
    /// llama.cpp's GGUF reader rejected the file.
    #[error("invalid GGUF file {path}: {reason}")]
    InvalidGguf {
        /// The path concerned.
        path: PathBuf,
        /// What went wrong, in llama.cpp's words where it gave any.
        reason: Reason,
    },
    /// llama.cpp failed to load the model; `reason` is what it logged.
    #[error("llama.cpp failed to load {path}: {reason}")]
    Load {
        /// The path concerned.
        path: PathBuf,
        /// What went wrong, in llama.cpp's words where it gave any.
        reason: Reason,
    },
    /// The load progress callback returned `false` or panicked.
    #[error("loading {path} was cancelled by the progress callback")]
    LoadCancelled {
        /// The path concerned.
        path: PathBuf,
    },
    /// A tensor-override pattern is not a valid ECMAScript regex.
    #[error("invalid tensor override pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// What went wrong, in llama.cpp's words where it gave any.
        reason: Reason,
    },
    /// A device name is not among the ggml backend devices.
    #[error("unknown device {name:?}; available: {}", available.join(", "))]
    UnknownDevice {
        /// The name as given.
        name: String,
        /// The names that exist.
        available: Vec<String>,
    },
    /// A sequence id is not below the context's `n_seq_max` (in a batch,
    /// or given to a KV cache or state call).
    #[error("sequence id {seq} is not below n_seq_max = {n_seq_max}")]
    InvalidSequence {
        /// The id used.
        seq: i64,
        /// The context's limit.
        n_seq_max: u32,
    },
    /// A parameter is out of its range.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// The name as given.
        name: &'static str,
        /// What went wrong, in llama.cpp's words where it gave any.
        reason: Reason,
    },
    /// A string handed to llama.cpp contains a NUL byte.
    #[error("{what} contains a NUL byte")]
    NulByte {
        /// What held the NUL byte.
        what: &'static str,
    },
    /// A metadata key is missing or has another type.
    #[error("metadata key {key:?}: {reason}")]
    Metadata {
        /// The metadata key.
        key: String,
        /// What went wrong, in llama.cpp's words where it gave any.
        reason: Reason,
    },
    /// Too many tensor overrides for llama.cpp.
    #[error("{count} tensor overrides exceed llama.cpp's limit of {limit}")]
    TooManyOverrides {
        /// Overrides asked for.
        count: usize,
        /// llama.cpp's maximum.
        limit: usize,
    },
    /// A budget cannot be met even with every expert on the CPU.
    #[error(
        "{needed} bytes stay on the device even with all experts on the CPU; budget is {budget}"
    )]
    BudgetTooSmall {
        /// Bytes that stay on the device.
        needed: u64,
        /// The budget asked for.
        budget: u64,
    },
    /// An I/O error while writing a file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// The operating system refused something that is not a file: a
    /// thread, a socket, a runtime.
    #[error("{what}: {source}")]
    System {
        /// What was being done (`start the engine thread`, `listen on 127.0.0.1:8080`).
        what: String,
        /// The underlying I/O error.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// Creating a context failed.
    #[error("llama.cpp could not create a context: {reason}")]
    Context {
        /// What went wrong, in llama.cpp's words where it gave any.
        reason: Reason,
    },
    /// `llama_decode` returned a status.
    #[error("decode failed: {0}")]
    Decode(#[from] DecodeError),
    /// Tokenization failed.
    #[error("tokenization failed: {reason}")]
    Tokenize {
        /// What went wrong, in llama.cpp's words where it gave any.
        reason: Reason,
    },
    /// The prompt does not fit the context.
    #[error("prompt of {tokens} tokens does not fit the context of {n_ctx} tokens")]
    PromptTooLong {
        /// Tokens needed.
        tokens: usize,
        /// The context size.
        n_ctx: u32,
    },
    /// A chat template could not be applied.
    #[error("chat template: {reason}")]
    ChatTemplate {
        /// What went wrong, in llama.cpp's words where it gave any.
        reason: Reason,
    },
    /// The chat template refused its input with its own
    /// `raise_exception(message)` (roles that do not alternate, a role it
    /// does not know).
    #[error("the chat template refused the messages: {message}")]
    ChatTemplateRaised {
        /// The template's message.
        message: Reason,
    },
    /// The chat template ran over its budget on this input (its fuel, the
    /// output size, a width or depth limit of the sandbox).
    #[error("the chat template ran over its budget: {reason}")]
    ChatTemplateBudget {
        /// Which budget.
        reason: Reason,
    },
    /// A token id outside the model's vocabulary.
    #[error("token {token} is outside the vocabulary of {n_vocab} tokens")]
    InvalidToken {
        /// The token id.
        token: i32,
        /// The vocabulary size.
        n_vocab: u32,
    },
    /// A context state could not be saved or restored.
    #[error("context state: {reason}")]
    State {
        /// What went wrong, in llama.cpp's words where it gave any.
        reason: Reason,
    },
    /// A session file could not be written or read.
    #[error("session file {path}: {reason}")]
    StateFile {
        /// The path concerned.
        path: PathBuf,
        /// What went wrong, in llama.cpp's words where it gave any.
        reason: Reason,
    },
    /// Sampling was asked of a context with no logits there.
    #[error("no logits to sample from{}", index.map(|i| format!(" at batch entry {i}")).unwrap_or_default())]
    NoLogits {
        /// The batch entry asked for, if one was.
        index: Option<usize>,
    },
    /// An RPC server cannot be used (unreachable, not an RPC server, another
    /// protocol version) or cannot start.
    #[error("RPC server {endpoint}: {reason}")]
    Rpc {
        /// The endpoint as given.
        endpoint: String,
        /// What went wrong, in llama.cpp's words where it gave any.
        reason: Reason,
    },
    /// A llama.cpp call threw a C++ exception; the exception firewall in
    /// llama-sys caught it before it could reach Rust.
    #[error("llama.cpp threw in {call}: {message}")]
    Exception {
        /// The llama.cpp function that threw.
        call: &'static str,
        /// The exception's message (`what()`).
        message: String,
    },
    /// The grammar allows no further token (it is complete, or every token
    /// it allows is banned); [`generate`](crate::LlamaContext::generate) ends
    /// with [`StopReason::GrammarDeadEnd`](crate::StopReason::GrammarDeadEnd) instead.
    #[error("grammar dead end: {reason}")]
    GrammarDeadEnd {
        /// llama.cpp's message.
        reason: Reason,
    },
    /// A grammar went past its budget while sampling (more parse stacks
    /// than [`MAX_GRAMMAR_STACKS`](crate::grammar::MAX_GRAMMAR_STACKS)):
    /// the grammar is too ambiguous to follow. The sampler is not used
    /// again before a reset.
    #[error("grammar over budget: {reason}")]
    GrammarBudget {
        /// What went past which limit.
        reason: Reason,
    },
    /// An object of one model was used with a context of another.
    #[error("{what} belongs to another model than the context")]
    ModelMismatch {
        /// What was mixed up (a sampler, a generation).
        what: &'static str,
    },
    /// A draft model whose vocabulary is not the target's (see
    /// [`DraftModel::check_compatible`](crate::DraftModel::check_compatible)).
    #[error("draft model {draft} cannot draft for {target}: {reason}")]
    IncompatibleDraft {
        /// The draft model's file.
        draft: PathBuf,
        /// The target model's file.
        target: PathBuf,
        /// What differs.
        reason: Reason,
    },
    /// The model file holds a value the pinned llama.cpp would abort on (a
    /// `GGML_ASSERT` in its loader or at the first decode), found before
    /// llama.cpp sees it; `key` is the metadata key (after key/value
    /// overrides) or a description of the structure concerned.
    #[error("invalid model {path}: {key}: {reason}")]
    InvalidModel {
        /// The path concerned.
        path: PathBuf,
        /// The metadata key or structure concerned.
        key: String,
        /// Why the value cannot be loaded.
        reason: Reason,
    },
    /// An operation the model cannot do (a context on a vocabulary-only
    /// model, say).
    #[error("unsupported: {reason}")]
    Unsupported {
        /// What and why.
        reason: Reason,
    },
    /// A GBNF grammar llama.cpp could not parse (or a lazy grammar's
    /// trigger it refused).
    #[error("invalid grammar: {reason}")]
    Grammar {
        /// llama.cpp's reason.
        reason: Reason,
    },
    /// A JSON schema that cannot be turned into a grammar: `at` is where in
    /// the schema (a JSON pointer, `#` for its root).
    #[error("JSON schema at {at}: {reason}")]
    JsonSchema {
        /// Where in the schema.
        at: String,
        /// What is wrong or unsupported.
        reason: Reason,
    },
    /// A LoRA adapter could not be loaded (another architecture, tensors
    /// of the wrong shape, not an adapter).
    #[error("LoRA adapter {path}: {reason}")]
    Lora {
        /// The path concerned.
        path: PathBuf,
        /// What went wrong, in llama.cpp's words.
        reason: Reason,
    },
    /// The engine's queue is full; retry later.
    #[error("the engine's queue is full ({queued} requests waiting)")]
    EngineBusy {
        /// Requests waiting.
        queued: usize,
    },
    /// The engine has stopped (or its thread could not start).
    #[error("the engine has stopped")]
    EngineStopped,
    /// A prompt or text with no tokens, wherever it was given (`generate`,
    /// `decode`, the engine, `embed`).
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// Embeddings were asked of a context that cannot give them.
    #[error("embeddings: {reason}")]
    Embeddings {
        /// What went wrong, in llama.cpp's words where it gave any.
        reason: Reason,
    },
    /// A projector (`mmproj`) file that cannot be used with this model: not
    /// a projector, a value libmtmd would abort on, or made for another
    /// model (its embedding width differs).
    #[error("projector {path}: {reason}")]
    Projector {
        /// The projector's file.
        path: PathBuf,
        /// What is wrong, in libmtmd's words where it gave any.
        reason: Reason,
    },
    /// An image or audio clip that cannot be used: undecodable, empty,
    /// the wrong size of data, or a kind the projector does not take.
    #[error("{what}: {reason}")]
    Media {
        /// Which input (`image 2`, `audio 0`, ...).
        what: String,
        /// What is wrong with it.
        reason: Reason,
    },
    /// A media input over its budget (`media::MediaLimits`, the `mtmd`
    /// feature).
    #[error("{what}: {value} is over the limit of {limit}")]
    MediaLimit {
        /// What was measured (`image 0 pixels`, `media in the prompt`, ...).
        what: String,
        /// Its size.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// The prompt's media markers and the media given do not pair up.
    #[error("the prompt has {markers} media markers for {media} media")]
    MediaMarkers {
        /// Markers in the prompt.
        markers: usize,
        /// Media given.
        media: usize,
    },
}

/// The class of an [`Error`], for callers that act on the class rather
/// than the details: a server picks its HTTP status from it, a retry loop
/// retries [`Busy`](ErrorKind::Busy) only.
///
/// ```
/// use llama_safe::{Error, ErrorKind};
/// let e = Error::NotFound { path: "missing.gguf".into() };
/// assert_eq!(e.kind(), ErrorKind::NotFound);
/// assert_eq!(e.clone().kind(), ErrorKind::NotFound); // errors are Clone
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller's input is wrong: a parameter, pattern, token, sequence
    /// id, batch, prompt, template, grammar or schema.
    InvalidInput,
    /// A file or device that does not exist.
    NotFound,
    /// A file that is not what it should be: not GGUF, a corrupt GGUF, a
    /// model, adapter or state llama.cpp would misread.
    InvalidFile,
    /// Something is full or too small: the context, a budget the input
    /// exceeds, device memory.
    ResourceExhausted,
    /// The engine's queue is full: retry later.
    Busy,
    /// Stopped by the caller: an abort or progress callback, or a stopped
    /// engine.
    Cancelled,
    /// This build, model or context cannot do it.
    Unsupported,
    /// llama.cpp failed where it gave no better reason (a throw, an unknown
    /// status, a load that failed on a well-formed file, an RPC server).
    Backend,
    /// The operating system: reading or writing a file, a thread, a socket.
    Io,
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            Error::NotFound { .. } | Error::UnknownDevice { .. } => K::NotFound,
            Error::IsDirectory { .. }
            | Error::NotGguf { .. }
            | Error::InvalidGguf { .. }
            | Error::Metadata { .. }
            | Error::InvalidModel { .. }
            | Error::StateFile { .. }
            | Error::State { .. }
            | Error::Lora { .. }
            | Error::ModelMismatch { .. }
            | Error::IncompatibleDraft { .. }
            | Error::Projector { .. } => K::InvalidFile,
            Error::Unreadable { .. } | Error::Io { .. } | Error::System { .. } => K::Io,
            Error::Load { .. } | Error::Exception { .. } | Error::Rpc { .. } => K::Backend,
            Error::LoadCancelled { .. } | Error::EngineStopped => K::Cancelled,
            Error::InvalidPattern { .. }
            | Error::InvalidSequence { .. }
            | Error::InvalidParameter { .. }
            | Error::NulByte { .. }
            | Error::TooManyOverrides { .. }
            | Error::Tokenize { .. }
            | Error::ChatTemplate { .. }
            | Error::ChatTemplateRaised { .. }
            | Error::ChatTemplateBudget { .. }
            | Error::InvalidToken { .. }
            | Error::NoLogits { .. }
            | Error::Grammar { .. }
            | Error::JsonSchema { .. }
            | Error::GrammarDeadEnd { .. }
            | Error::Embeddings { .. }
            | Error::EmptyPrompt
            | Error::Media { .. }
            | Error::MediaMarkers { .. } => K::InvalidInput,
            Error::BudgetTooSmall { .. }
            | Error::PromptTooLong { .. }
            | Error::GrammarBudget { .. }
            | Error::MediaLimit { .. } => K::ResourceExhausted,
            Error::Context { .. } => K::InvalidInput,
            Error::Unsupported { .. } => K::Unsupported,
            Error::EngineBusy { .. } => K::Busy,
            Error::Decode(d) => match d {
                DecodeError::NoKvSlot => K::ResourceExhausted,
                DecodeError::Aborted => K::Cancelled,
                DecodeError::InvalidBatch
                | DecodeError::BatchTooLarge { .. }
                | DecodeError::TooManyOutputs { .. } => K::InvalidInput,
                DecodeError::Other(_) => K::Backend,
            },
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why `llama_decode` failed, one variant per status it documents, plus the
/// batch checks done here before llama.cpp sees the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No KV cache slot for the batch: the context is full.
    #[error("no KV cache slot for the batch (the context is full)")]
    NoKvSlot,
    /// The abort callback stopped the computation.
    #[error("aborted by the abort callback")]
    Aborted,
    /// llama.cpp rejected the batch (empty, a token outside the vocabulary,
    /// inconsistent positions); its log says which.
    #[error("invalid batch")]
    InvalidBatch,
    /// The batch is larger than one decode takes (`n_batch`, or `n_ubatch`
    /// for non-causal models).
    #[error("batch of {tokens} tokens exceeds the limit of {limit} per decode")]
    BatchTooLarge {
        /// Tokens in the batch.
        tokens: usize,
        /// The most one decode takes.
        limit: u32,
    },
    /// The batch asks for more outputs (logits or embeddings) than the
    /// context keeps room for ([`ContextParams::with_n_outputs_max`](crate::ContextParams::with_n_outputs_max)).
    #[error("batch asks for {outputs} outputs, more than the context's limit of {limit}")]
    TooManyOutputs {
        /// Outputs the batch asks for.
        outputs: usize,
        /// The context's limit.
        limit: u32,
    },
    /// Any other status.
    #[error("llama_decode returned {0}")]
    Other(i32),
}

impl DecodeError {
    pub(crate) fn from_status(status: i32) -> Option<DecodeError> {
        match status {
            0 => None,
            1 => Some(DecodeError::NoKvSlot),
            2 => Some(DecodeError::Aborted),
            -1 => Some(DecodeError::InvalidBatch),
            other => Some(DecodeError::Other(other)),
        }
    }
}

/// Why llama.cpp (or this crate, before calling it) refused something: a
/// one-line summary, and the lines llama.cpp itself logged at warning level
/// or above while failing, kept as they were (empty when the reason is this
/// crate's own). It reads as the summary (`Display`, and `Deref` to `str`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    summary: String,
    lines: Vec<LogLine>,
}

impl Reason {
    /// What llama.cpp logged during a failed call: its warnings and errors,
    /// the last three of them as the summary.
    pub(crate) fn from_log(lines: &[LogLine]) -> Reason {
        let lines: Vec<LogLine> = lines
            .iter()
            .filter(|l| l.level >= LogLevel::Warn && !l.text.trim().is_empty())
            .cloned()
            .collect();
        let texts: Vec<&str> = lines.iter().map(|l| l.text.trim()).collect();
        let summary = if texts.is_empty() {
            "llama.cpp gave no reason".to_string()
        } else {
            texts[texts.len().saturating_sub(3)..].join("; ")
        };
        Reason { summary, lines }
    }

    /// llama.cpp's own lines (empty when the reason is this crate's).
    pub fn llama_lines(&self) -> &[LogLine] {
        &self.lines
    }
}

impl From<String> for Reason {
    fn from(summary: String) -> Reason {
        Reason {
            summary,
            lines: Vec::new(),
        }
    }
}

impl From<&str> for Reason {
    fn from(summary: &str) -> Reason {
        summary.to_string().into()
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

impl std::ops::Deref for Reason {
    type Target = str;
    fn deref(&self) -> &str {
        &self.summary
    }
}
