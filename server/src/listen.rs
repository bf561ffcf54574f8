//! Accepting and serving connections, with the limits a public socket needs: at most
//! `max_connections` at once (the listener waits for a free slot; the kernel's backlog holds the
//! rest), a header-read timeout that also bounds a kept-alive connection's idle time (hyper
//! starts it whenever a connection waits for a request head), so a client that trickles its
//! headers or opens connections and sends nothing is cut off, and the same time as a write
//! timeout (`tokio-io-timeout`), so a client that stops reading its response is cut off too.
//! Body reads are bounded where bodies are read (`routes::ApiJson`).
//!
//! `axum::serve` sets no timer on hyper's connection builder, which leaves hyper's header timeout
//! off; this loop is `axum::serve` with the timer, the cap and hyper-util's graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;

/// Limits on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time for a request's head to arrive, counted from when the connection starts waiting for
    /// it (a new connection, or a kept-alive one after its last response); also the longest a
    /// response may wait for the client to read it.
    pub header_timeout: Duration,
}

/// Serve `app` on `listener` until `shutdown`; then stop accepting and wait for the open
/// connections to finish their requests (idle ones close at once). The caller bounds that wait.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        // a free slot first: at the cap, connections wait in the kernel's backlog
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: wait a little rather than spin
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // a response the client stops reading holds its slot no longer than an idle connection
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.header_timeout));
        let conn = builder.serve_connection(
            TokioIo::new(Box::pin(stream)),
            TowerToHyperService::new(app.clone()),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
