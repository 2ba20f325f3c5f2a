//! Serving the router over HTTP/1.1: `axum::serve`'s accept loop, plus the two deadlines it
//! does not set (it gives hyper no timer, so hyper keeps none).
//!
//! - **Headers**: a request's head must arrive within `header_timeout` (hyper's
//!   `header_read_timeout`). Without it a client that sent half a header held its connection
//!   for ever, and a graceful shutdown waited on it for ever: SIGTERM never ended the process
//!   (seen with one `POST ... HTTP/1.1\r\nHost: x\r\n` and nothing more).
//! - **Shutdown**: after the signal, no new connection is taken and open ones are asked to
//!   close once their response is out; those still open after `grace` are dropped and the
//!   function returns, so the process exits on time whatever its clients do.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// The deadlines of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Longest a request's head may take to arrive (hyper's default when it has a timer).
    pub header_timeout: Duration,
    /// Longest the shutdown waits for open connections.
    pub grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(5),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then closes connections (see the
/// module documentation). Accept errors (too many open files, a connection reset before it
/// was taken) are waited out, not fatal.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // As axum::serve: out of file descriptors and the like pass.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = connections.shutdown() => {}
        () = tokio::time::sleep(options.grace) => {}
    }
}
