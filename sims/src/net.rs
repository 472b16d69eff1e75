//! turmoil plumbing: axum serving on turmoil's listener, and hyper's client connecting
//! over turmoil's TCP.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;

/// turmoil's listener, for `axum::serve`.
pub(crate) struct SimListener(pub(crate) turmoil::net::TcpListener);

impl axum::serve::Listener for SimListener {
    type Io = turmoil::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // turmoil's accept fails only when the host is going down; the loop ends with it.
        loop {
            if let Ok(accepted) = self.0.accept().await {
                return accepted;
            }
            tokio::task::yield_now().await;
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A simulated TCP connection, as hyper's client wants it.
pub(crate) struct SimIo(TokioIo<turmoil::net::TcpStream>);

impl hyper::rt::Read for SimIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SimIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Connection for SimIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Connects hyper's client to simulated hosts by name.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SimConnector;

impl tower::Service<Uri> for SimConnector {
    type Response = SimIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<SimIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| io::Error::other("the URI has no host"))?.to_owned();
            let stream = turmoil::net::TcpStream::connect((host, uri.port_u16().unwrap_or(80))).await?;
            Ok(SimIo(TokioIo::new(stream)))
        })
    }
}
