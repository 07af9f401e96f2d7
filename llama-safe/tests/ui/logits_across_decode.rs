// Logits borrow the context until the next decode overwrites them.
use llama_safe::{demo::DemoModel, ContextParams, LlamaBackend, LlamaContext, LlamaModel, Tokenize};

fn main() -> llama_safe::Result<()> {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, DemoModel::Moe.cached()?, &Default::default())?;
    let mut ctx = LlamaContext::new(&model, &ContextParams::default())?;
    ctx.decode(&model.tokenize("Once", Tokenize::PROMPT)?)?;
    let logits = ctx.logits();
    ctx.decode(&model.tokenize(" upon", Tokenize::TEXT)?)?;
    println!("{}", logits[0]);
    Ok(())
}
