//! The one way this crate calls llama.cpp: with its log captured (so a
//! failure carries llama.cpp's own reason), NULL or a failed status turned
//! into a typed error, and paths handed over as C strings.
//!
//! Entry points that can throw a C++ exception go through llama-sys's
//! exception firewall (`shim/firewall.cpp`): a C++ exception that reached
//! Rust would abort the process, so those calls go through wrappers that
//! catch it and return a status, turned here into [`Error::Exception`] (or
//! [`Error::GrammarDeadEnd`] for a grammar with no way forward).

use crate::error::{Error, Reason, Result};
use crate::logging;
use std::ffi::{c_int, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

/// Turns a firewall wrapper's status into `Ok(())` or the error for the
/// exception it caught in `call`.
pub(crate) fn check(call: &'static str, status: c_int) -> Result<()> {
    if status == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a NUL-terminated string owned by this
    // thread, valid until the next wrapper call on this thread; it is
    // copied out at once.
    let message = unsafe { CStr::from_ptr(llama_safe_sys::llama_sys_last_exception()) }
        .to_string_lossy()
        .into_owned();
    if message.contains("empty grammar stack") {
        return Err(Error::GrammarDeadEnd {
            reason: message.into(),
        });
    }
    if let Some(reason) = message.strip_prefix("llama_sys: grammar budget: ") {
        return Err(Error::GrammarBudget {
            reason: reason.into(),
        });
    }
    Err(Error::Exception { call, message })
}

/// Runs `call` with llama.cpp's log captured; when `failed` says its result
/// is a failure, the error is `fail` of what llama.cpp logged.
pub(crate) fn logged<T>(
    call: impl FnOnce() -> T,
    failed: impl FnOnce(&T) -> bool,
    fail: impl FnOnce(Reason) -> Error,
) -> Result<T> {
    let (value, lines) = logging::capture(call);
    if failed(&value) {
        return Err(fail(logging::reason(&lines)));
    }
    Ok(value)
}

/// A llama.cpp constructor: NULL is `fail` of what llama.cpp logged.
pub(crate) fn non_null<T>(
    call: impl FnOnce() -> *mut T,
    fail: impl FnOnce(Reason) -> Error,
) -> Result<NonNull<T>> {
    let raw = logged(call, |p| p.is_null(), fail)?;
    Ok(NonNull::new(raw).expect("checked for NULL"))
}

/// A constructor behind the exception firewall (`call` is its name): a
/// throw is [`check`]'s error, NULL is `fail` of what llama.cpp logged.
pub(crate) fn guarded_non_null<T>(
    name: &'static str,
    call: impl FnOnce(&mut *mut T) -> c_int,
    fail: impl FnOnce(Reason) -> Error,
) -> Result<NonNull<T>> {
    let mut out = std::ptr::null_mut();
    let (status, lines) = logging::capture(|| call(&mut out));
    check(name, status)?;
    NonNull::new(out).ok_or_else(|| fail(logging::reason(&lines)))
}

/// `path` as a C string for llama.cpp's `fopen`: on Unix any path (its
/// bytes as they are, UTF-8 or not, as rusqlite does), elsewhere a UTF-8
/// one. A NUL byte is [`Error::NulByte`].
pub(crate) fn c_path(path: &Path) -> Result<CString> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path
        .to_str()
        .ok_or_else(|| Error::InvalidParameter {
            name: "path",
            reason: format!("{} is not valid UTF-8", path.display()),
        })?
        .as_bytes()
        .to_vec();
    CString::new(bytes).map_err(|_| Error::NulByte { what: "a path" })
}
