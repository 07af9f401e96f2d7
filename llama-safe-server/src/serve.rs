//! The connection loop: HTTP/1 and HTTP/2 with the header and idle
//! timeouts, and a graceful shutdown.

use crate::{models_router, AppState, Models, ServerConfig};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Serves [`router`](crate::router) on `listener` until `shutdown` resolves, then stops
/// taking connections, answers requests still queued with 503, lets the
/// streams in flight finish within the shutdown timeout, and returns.
/// Clients get the header timeout to send each request's headers, and an
/// idle kept-alive connection is closed after it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_models(listener, Models::single(state), config, shutdown).await
}

/// [`serve`] for a [pool](Models) of models ([`models_router`](crate::models_router)).
pub async fn serve_models(
    listener: tokio::net::TcpListener,
    models: Arc<Models>,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let timeouts = config.timeouts();
    let app = models_router(models.clone(), config);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .keep_alive(true);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // Out of file descriptors and the like: wait, keep serving.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Streams are many small writes: without TCP_NODELAY, Nagle's
        // algorithm holds each piece back until the client's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    models.close();
    if tokio::time::timeout(timeouts.shutdown, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!(
            "server: streams still running after {:?}; stopping anyway",
            timeouts.shutdown
        );
    }
    Ok(())
}
