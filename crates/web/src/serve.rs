//! Serving the router over HTTP/1.1: `axum::serve`'s accept loop, plus the two deadlines it
//! does not set (it gives hyper no timer, so hyper keeps none).
//!
//! - **Headers**: a request's head must arrive within `header_timeout` (hyper's
//!   `header_read_timeout`). Without it a client that sent half a header held its connection
//!   for ever, and a graceful shutdown waited on it for ever: SIGTERM never ended the process
//!   (seen with one `POST ... HTTP/1.1\r\nHost: x\r\n` and nothing more).
//! - **Connections**: at most `max_connections` are open at once; past it the loop stops
//!   taking new ones, which wait in the kernel's listen backlog until one closes (an idle
//!   keep-alive connection closes at the header deadline). Without a cap a client that
//!   opens thousands of idle connections takes every file descriptor (1,024 by default on
//!   Linux), and the process can no longer open files either: the web chat's store fails.
//! - **Shutdown**: after the signal, no new connection is taken and open ones are asked to
//!   close once their response is out; those still open after `grace` are dropped and the
//!   function returns, so the process exits on time whatever its clients do.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The deadlines of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Longest a request's head may take to arrive (hyper's default when it has a timer).
    pub header_timeout: Duration,
    /// Longest the shutdown waits for open connections.
    pub grace: Duration,
    /// Connections open at once (at least 1); more wait to be taken.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(5),
            max_connections: 512,
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
    // tokio's semaphore panics past MAX_PERMITS (2^61 - 1); no machine has that many sockets.
    let permits = options.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let open = Arc::new(Semaphore::new(permits));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, permit) = tokio::select! {
            accepted = accept(&listener, &open) => match accepted {
                Some(taken) => taken,
                None => {
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
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = connections.shutdown() => {}
        () = tokio::time::sleep(options.grace) => {}
    }
}

/// The next connection, once one of the `open` permits is free (it is held for the
/// connection's life); `None` when accepting failed.
async fn accept(
    listener: &TcpListener,
    open: &Arc<Semaphore>,
) -> Option<(tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let permit = open.clone().acquire_owned().await.ok()?;
    let (stream, _) = listener.accept().await.ok()?;
    Some((stream, permit))
}
