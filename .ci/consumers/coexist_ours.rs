// The README's shortest program, as a function: greedy text through
// llama-safe (its own llama.cpp, symbols prefixed) on `path`.

fn ours(path: &std::path::Path, prompt: &str) -> llama_safe::Result<String> {
    use llama_safe::*;
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, path, &LlamaModelParams::default())?;
    let mut ctx = LlamaContext::new(&model, &ContextParams::default().with_n_ctx(2048))?;
    let options = GenerateOptions::default()
        .with_max_tokens(32)
        .with_sampling(SamplingOptions::greedy());
    let mut text = prompt.to_string();
    for event in ctx.generate(prompt, &options)? {
        if let Event::Piece(piece) = event? {
            text.push_str(&piece.text);
        }
    }
    Ok(text)
}
