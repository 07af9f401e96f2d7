//! One process, two copies of ggml: llama-safe's (its symbols prefixed
//! `llama_safe_`) and whisper-rs-sys's (whisper.cpp's ggml, unprefixed).

include!("coexist_ours.rs");

fn main() -> llama_safe::Result<()> {
    let path = llama_safe::demo::DemoModel::Moe.cached()?;
    let prompt = llama_safe::demo::DEMO_PROMPT;
    println!("llama-safe:  {}", ours(&path, prompt)?);
    // SAFETY: whisper_print_system_info returns a static NUL-terminated
    // string; whisper_init_from_buffer_with_params reads `len` bytes of the
    // buffer, returns NULL for one that is not a model (checked), and
    // whisper_free is called only on a non-NULL context.
    unsafe {
        let info = std::ffi::CStr::from_ptr(whisper_rs_sys::whisper_print_system_info());
        println!("whisper.cpp: {}", info.to_string_lossy().trim());
        let mut garbage = *b"not a whisper model, but enough bytes to read a magic";
        let params = whisper_rs_sys::whisper_context_default_params();
        let ctx = whisper_rs_sys::whisper_init_from_buffer_with_params(
            garbage.as_mut_ptr().cast(),
            garbage.len(),
            params,
        );
        println!("whisper.cpp: a buffer that is not a model loads as {}", if ctx.is_null() { "NULL" } else { "a context" });
        if !ctx.is_null() {
            whisper_rs_sys::whisper_free(ctx);
        }
    }
    println!("llama-safe:  {}", ours(&path, prompt)?);
    Ok(())
}
