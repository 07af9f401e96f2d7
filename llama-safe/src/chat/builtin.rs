//! llama.cpp's built-in chat templates (`llama_chat_apply_template`), which
//! recognise the common templates by their text: the fallback for models
//! whose Jinja template the renderer cannot run.

use super::ChatMessage;
use crate::error::{Error, Result};
use std::ffi::CString;

/// Formats `messages` with llama.cpp's built-in implementation of the
/// template `template` names or looks like.
pub(super) fn apply(
    template: &str,
    messages: &[ChatMessage],
    add_assistant: bool,
) -> Result<String> {
    let template = CString::new(template).map_err(|_| Error::NulByte {
        what: "the chat template",
    })?;
    let owned: Vec<(CString, CString)> = messages
        .iter()
        .map(|m| {
            Ok((
                CString::new(m.role.as_str())?,
                CString::new(m.content.as_str())?,
            ))
        })
        .collect::<std::result::Result<_, std::ffi::NulError>>()
        .map_err(|_| Error::NulByte {
            what: "a chat message",
        })?;
    let raw: Vec<llama_safe_sys::llama_chat_message> = owned
        .iter()
        .map(|(r, c)| llama_safe_sys::llama_chat_message {
            role: r.as_ptr(),
            content: c.as_ptr(),
        })
        .collect();
    let mut buf = vec![0u8; 1024 + messages.iter().map(|m| m.content.len() * 2).sum::<usize>()];
    loop {
        let mut n = 0;
        // SAFETY: every pointer refers to `owned`/`template`, alive for the
        // call; buf is writable for its length; a throw is caught by the
        // firewall.
        let status = unsafe {
            llama_safe_sys::llama_sys_chat_apply_template(
                template.as_ptr(),
                raw.as_ptr(),
                raw.len(),
                add_assistant,
                buf.as_mut_ptr().cast(),
                i32::try_from(buf.len()).unwrap_or(i32::MAX),
                &mut n,
            )
        };
        crate::ffi::check("llama_chat_apply_template", status)?;
        if n < 0 {
            return Err(Error::ChatTemplate {
                reason: "llama.cpp does not support this model's template".into(),
            });
        }
        if (n as usize) <= buf.len() {
            buf.truncate(n as usize);
            return String::from_utf8(buf).map_err(|_| Error::ChatTemplate {
                reason: "not UTF-8".into(),
            });
        }
        buf.resize(n as usize, 0);
    }
}
