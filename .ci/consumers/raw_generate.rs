// Greedy generation through the raw llama.cpp C API of whichever binding
// crate the including file names as `ffi` (llama-safe-sys, or another crate
// with its own copy of llama.cpp, for the coexistence check).

/// Loads `path`, generates up to 32 tokens after `prompt` greedily, frees
/// everything, and returns prompt + continuation.
pub fn generate(path: &str, prompt: &str) -> String {
    use self::ffi::*;
    let path = std::ffi::CString::new(path).expect("no NUL in the path");
    // SAFETY: the raw API used as llama.cpp's simple example does: every
    // pointer is checked for NULL, buffers are sized by the calls' own
    // returns, and each object is freed once, in reverse order of creation.
    unsafe {
        llama_backend_init();
        let model = llama_model_load_from_file(path.as_ptr(), llama_model_default_params());
        assert!(!model.is_null(), "model failed to load");
        let vocab = llama_model_get_vocab(model);
        let n = -llama_tokenize(vocab, prompt.as_ptr().cast(), prompt.len() as i32, std::ptr::null_mut(), 0, true, false);
        let mut tokens = vec![0i32; n as usize];
        llama_tokenize(vocab, prompt.as_ptr().cast(), prompt.len() as i32, tokens.as_mut_ptr(), n, true, false);
        let mut cparams = llama_context_default_params();
        cparams.n_ctx = 128;
        let ctx = llama_init_from_model(model, cparams);
        assert!(!ctx.is_null(), "context failed");
        let sampler = llama_sampler_init_greedy();
        let mut text = prompt.as_bytes().to_vec();
        let mut batch = llama_batch_get_one(tokens.as_mut_ptr(), tokens.len() as i32);
        let mut next = 0i32;
        for _ in 0..32 {
            assert_eq!(llama_decode(ctx, batch), 0, "decode failed");
            next = llama_sampler_sample(sampler, ctx, -1);
            if llama_vocab_is_eog(vocab, next) {
                break;
            }
            let mut piece = [0u8; 64];
            let len = llama_token_to_piece(vocab, next, piece.as_mut_ptr().cast(), 64, 0, false);
            text.extend_from_slice(&piece[..len.max(0) as usize]);
            batch = llama_batch_get_one(&mut next, 1);
        }
        llama_sampler_free(sampler);
        llama_free(ctx);
        llama_model_free(model);
        llama_backend_free();
        String::from_utf8_lossy(&text).into_owned()
    }
}
