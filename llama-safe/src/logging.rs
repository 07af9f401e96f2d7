//! llama.cpp's log, routed to the [`log`] crate.
//!
//! We use `log` because every Rust logger (env_logger, simple_logger, and
//! tracing itself through `tracing-log`) consumes it; with the `tracing`
//! feature the lines are also `tracing` events (target `llama_cpp`), inside
//! the crate's spans (`llama_load`, `llama_decode`, `llama_generate`,
//! `llama_engine_step`). Messages use the
//! target `llama_cpp`; nothing is printed unless the application installs a
//! logger. The callback is installed once per process, null-checks its
//! input, and never unwinds into C.
//!
//! Separately, a load can *capture* the lines llama.cpp logs on the loading
//! thread (whatever the logger's level), which is how load errors carry
//! llama.cpp's own reason and how the placement report is built.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Once;

/// The `log` target of llama.cpp's messages.
pub const TARGET: &str = "llama_cpp";

/// Severity of a captured line, as llama.cpp gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Debug detail.
    Debug,
    /// Progress and facts.
    Info,
    /// Something worth attention.
    Warn,
    /// A failure.
    Error,
}

/// One complete line llama.cpp logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its severity.
    pub level: LogLevel,
    /// The text, without the trailing newline.
    pub text: String,
}

#[derive(Default)]
struct ThreadLog {
    /// The line being assembled (llama.cpp logs pieces and continuations).
    partial: String,
    partial_level: Option<LogLevel>,
    /// Lines captured for an operation in progress on this thread.
    capture: Option<Vec<LogLine>>,
}

thread_local! {
    static THREAD_LOG: RefCell<ThreadLog> = RefCell::new(ThreadLog::default());
}

/// Installs the callback (once per process).
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: `callback` is a valid `extern "C"` function for the whole
        // program and ignores its user data, so NULL is fine.
        unsafe { llama_safe_sys::llama_log_set(Some(callback), std::ptr::null_mut()) };
    });
}

/// Routes libmtmd's log (its own logger, besides llama.cpp's) through the
/// same callback, so [`capture`] sees its reasons too.
#[cfg(feature = "mtmd")]
pub(crate) fn install_mtmd() {
    static INSTALL: Once = Once::new();
    install();
    INSTALL.call_once(|| {
        // SAFETY: as in `install`: a valid function for the whole program
        // that ignores its user data. mtmd_helper_log_set sets libmtmd's
        // logger and its helpers'.
        unsafe { llama_safe_sys::mtmd::mtmd_helper_log_set(Some(callback), std::ptr::null_mut()) };
    });
}

/// Runs `f`, returning what it returned and every line llama.cpp logged on
/// this thread meanwhile.
pub(crate) fn capture<R>(f: impl FnOnce() -> R) -> (R, Vec<LogLine>) {
    install();
    let previous = THREAD_LOG.with(|t| t.borrow_mut().capture.replace(Vec::new()));
    let result = f();
    let (lines, last) = THREAD_LOG.with(|t| {
        let mut t = t.borrow_mut();
        let last = flush(&mut t);
        let lines = t.capture.take().unwrap_or_default();
        t.capture = previous;
        (lines, last)
    });
    // The application's logger runs with nothing borrowed, so it may call
    // back into this crate.
    emit(last);
    (result, lines)
}

/// What llama.cpp logged during a failed call, as an error's reason.
pub(crate) fn reason(lines: &[LogLine]) -> crate::error::Reason {
    crate::error::Reason::from_log(lines)
}

unsafe extern "C" fn callback(
    level: llama_safe_sys::ggml_log_level,
    text: *const c_char,
    _: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for this call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    // A panic (say, in the application's logger) must not unwind into C.
    let _ = std::panic::catch_unwind(|| handle(level, &text));
}

fn handle(level: llama_safe_sys::ggml_log_level, text: &str) {
    let level = match level {
        llama_safe_sys::GGML_LOG_LEVEL_ERROR => Some(LogLevel::Error),
        llama_safe_sys::GGML_LOG_LEVEL_WARN => Some(LogLevel::Warn),
        llama_safe_sys::GGML_LOG_LEVEL_INFO => Some(LogLevel::Info),
        llama_safe_sys::GGML_LOG_LEVEL_DEBUG => Some(LogLevel::Debug),
        // CONT continues the previous message; NONE is treated the same.
        _ => None,
    };
    let mut complete = Vec::new();
    let _ = THREAD_LOG.try_with(|t| {
        // Nothing that runs while this is borrowed calls out of the crate,
        // so the borrow cannot be taken twice.
        let Ok(mut t) = t.try_borrow_mut() else {
            return;
        };
        if let Some(level) = level {
            if !t.partial.is_empty() {
                complete.extend(flush(&mut t));
            }
            t.partial_level = Some(level);
        }
        let mut rest = text;
        while let Some(at) = rest.find('\n') {
            t.partial.push_str(&rest[..at]);
            complete.extend(flush(&mut t));
            rest = &rest[at + 1..];
        }
        t.partial.push_str(rest);
    });
    for line in complete {
        emit(Some(line));
    }
}

/// Ends the line being assembled: keeps it in the capture, if one is on,
/// and returns it for [`emit`].
fn flush(t: &mut ThreadLog) -> Option<LogLine> {
    if t.partial.is_empty() {
        return None;
    }
    let line = LogLine {
        level: t.partial_level.unwrap_or(LogLevel::Info),
        text: std::mem::take(&mut t.partial),
    };
    if let Some(capture) = t.capture.as_mut() {
        capture.push(line.clone());
    }
    Some(line)
}

/// Hands a line to the application's logger.
fn emit(line: Option<LogLine>) {
    let Some(line) = line else {
        return;
    };
    let log_level = match line.level {
        LogLevel::Error => log::Level::Error,
        LogLevel::Warn => log::Level::Warn,
        LogLevel::Info => log::Level::Info,
        LogLevel::Debug => log::Level::Debug,
    };
    log::log!(target: TARGET, log_level, "{}", line.text);
    #[cfg(feature = "tracing")]
    match line.level {
        LogLevel::Error => tracing::error!(target: "llama_cpp", "{}", line.text),
        LogLevel::Warn => tracing::warn!(target: "llama_cpp", "{}", line.text),
        LogLevel::Info => tracing::info!(target: "llama_cpp", "{}", line.text),
        LogLevel::Debug => tracing::debug!(target: "llama_cpp", "{}", line.text),
    }
}
