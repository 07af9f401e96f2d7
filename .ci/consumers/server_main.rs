//! A service of its own that mounts llama-safe-server's router under /llm,
//! next to its own route, with an API key. Prints its address, then serves.

use llama_safe::demo::DemoModel;
use llama_safe::engine::EngineConfig;
use llama_safe::{LlamaBackend, LlamaModel};
use llama_safe_server::{router, AppState, ServerConfig};
use std::io::Write;

#[tokio::main]
async fn main() {
    let backend = LlamaBackend::init();
    let model = LlamaModel::load(&backend, DemoModel::Moe.cached().unwrap(), &Default::default())
        .expect("the demo model loads");
    let engine = EngineConfig::default().with_n_ctx(2048).with_n_parallel(2).with_threads(2);
    let state = AppState::new(model, "demo", engine).expect("the engine starts");
    let config = ServerConfig::default().with_api_key("consumer-key");
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "my service" }))
        .nest("/llm", router(state, &config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("http://{}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    axum::serve(listener, app).await.unwrap();
}
