//! Calling llama.cpp entry points that can throw a C++ exception, through
//! llama-sys's exception firewall (`shim/firewall.cpp`): a C++ exception
//! that reached Rust would abort the process, so those calls go through
//! wrappers that catch it and return a status, turned here into
//! [`Error::Exception`] (or [`Error::GrammarDeadEnd`] for a grammar with no
//! way forward).

use crate::error::{Error, Result};
use std::ffi::{c_int, CStr};

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
        return Err(Error::GrammarDeadEnd { reason: message });
    }
    Err(Error::Exception { call, message })
}
