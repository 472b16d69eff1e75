//! The HTTP/1.1 server under the app: hyper's connection driver with idem's limits, and a
//! drain with a deadline. The limits that need an answer (a problem+json body) live in the
//! app instead ([`crate::RequestLimits`]); the ones here act on connections.
//!
//! * **Connections** are capped ([`ServerLimits::connections_max`]): at the cap the server
//!   stops accepting, so new connections wait in the kernel's backlog until one closes,
//!   instead of each taking memory and a file descriptor.
//! * **Slow or silent clients**: hyper's header-read timer
//!   ([`ServerLimits::header_read_timeout`]) starts whenever a connection waits for a
//!   request head, right after accept and again after each response, so it bounds both a
//!   client that sends half its headers and a keep-alive connection left idle. Request
//!   heads are bounded in size (hyper's read buffer, [`HEAD_BUFFER_BYTES`]).
//! * **HTTP/2 is refused**: connections speak HTTP/1.1 only, so an `h2c` preface gets the
//!   connection closed, and no client can open hundreds of streams on one socket.
//! * **Drain**: when `shutdown` completes the server stops accepting, asks every
//!   connection to finish its request in progress and close, and waits at most
//!   [`ServerLimits::drain_timeout`]; connections still open then are closed.
//!
//! Built from hyper and hyper-util's parts (the `http1` connection builder, `TokioTimer`,
//! `GracefulShutdown`), generic over axum's [`Listener`] so that simulations serve the same
//! code on turmoil's TCP.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The most bytes hyper buffers while reading one request head (hyper's minimum is 8 KiB).
/// A head larger than this is answered 431 and the connection closed.
pub const HEAD_BUFFER_BYTES: usize = 64 * 1024;

/// Connection limits of [`serve_with_limits`]. Every field has a flag in `idem serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open connections at most; past it the server stops accepting until one closes.
    pub connections_max: usize,
    /// How long a connection may take to send a complete request head, counted from when
    /// the server starts waiting for it: after accept and after each response, so this is
    /// also how long a keep-alive connection may stay idle.
    pub header_read_timeout: Duration,
    /// How long the server waits, after `shutdown`, for requests in progress to finish.
    pub drain_timeout: Duration,
}

impl ServerLimits {
    /// 1,024 connections, 10 s to send a request head (or to stay idle), 10 s to drain.
    pub const DEFAULT: ServerLimits = ServerLimits {
        connections_max: 1024,
        header_read_timeout: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(10),
    };
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits::DEFAULT
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished its request and closed within the deadline.
    Clean,
    /// The deadline passed; this many connections were closed with requests in progress.
    Cut(usize),
}

/// Serves `app` on `listener` with [`ServerLimits::DEFAULT`] until `shutdown` completes,
/// then drains (see the module docs).
///
/// # Errors
/// Never at present: accept errors (a full file-descriptor table, a reset before accept)
/// are logged and retried after a pause, as a server must survive them.
pub async fn serve<L>(
    listener: L,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    serve_with_limits(listener, app, ServerLimits::DEFAULT, shutdown).await.map(|_| ())
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then drains: no
/// new connections, requests in progress get [`ServerLimits::drain_timeout`] to finish.
///
/// # Errors
/// As [`serve`].
pub async fn serve_with_limits<L>(
    mut listener: L,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<Drained>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(HEAD_BUFFER_BYTES)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first: at the cap, nothing is accepted (the backlog holds new clients).
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (io, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone()));
        let watched = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = watched.await {
                tracing::debug!(?peer, %error, "connection ended with an error");
            }
            drop(slot);
        });
        // Reap finished connection tasks so the set stays as small as the open connections.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    Ok(drain(graceful, connections, limits.drain_timeout).await)
}

/// Asks every connection to close after its request in progress, waits up to `deadline`,
/// then closes what is left.
async fn drain(graceful: GracefulShutdown, mut connections: JoinSet<()>, deadline: Duration) -> Drained {
    let open = graceful.count();
    tracing::info!(connections = open, ?deadline, "draining");
    if tokio::time::timeout(deadline, graceful.shutdown()).await.is_ok() {
        while connections.join_next().await.is_some() {}
        return Drained::Clean;
    }
    let cut = connections.len();
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    tracing::warn!(connections = cut, ?deadline, "drain deadline passed; closed connections with requests in progress");
    Drained::Cut(cut)
}
