//! A loopback TCP forwarder whose connections a test can cut: a network fault that needs no
//! privilege (no `rabbitmqctl close_connection`, no firewall rule), for tests of what a
//! client does when its connection to a server drops.
//!
//! Each accepted connection gets its own connection to the upstream and two threads, one per
//! direction, that copy through a buffer of [`BUFFER`] bytes: a slow reader slows its writer
//! down (blocking writes), nothing piles up in memory. A thread waits only on its sockets:
//! until data comes, the peer closes, [`TcpProxy::cut`] shuts the sockets down (which wakes
//! a blocked read or write at once), or a write stays blocked past [`WRITE_MAX`].
//!
//! Plain threads and `std::net`, like the rest of this crate: no runtime to build or to
//! share with the test's. (idem-postgres's tests have a proxy of their own,
//! `tests/common/proxy.rs`, that also freezes a connection and answers as a starting
//! PostgreSQL; this one only cuts.)

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Bytes one direction of one connection holds at most on their way through.
pub const BUFFER: usize = 16 * 1024;

/// Longest the connection to the upstream may take; the accepted one is closed after it.
pub const CONNECT_MAX: Duration = Duration::from_secs(5);

/// Longest one write may stay blocked on a peer that reads nothing; the connection is then
/// closed both ways, as a kernel would after its retransmissions.
pub const WRITE_MAX: Duration = Duration::from_secs(30);

/// A forwarder from a free loopback port to `upstream`; stops and closes every connection
/// when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
}

/// What the accepting thread, the copying threads and the handle share.
#[derive(Default)]
struct Shared {
    /// Both sockets of every live connection (clones), under the connection's number.
    live: Mutex<Vec<(u64, [TcpStream; 2])>>,
    next: AtomicU64,
    /// Set by the drop: the accepting thread stops at its next connection.
    closing: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, [TcpStream; 2])>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TcpProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream` (its first
    /// address).
    ///
    /// # Errors
    ///
    /// When `upstream` resolves to no address or no loopback port can be bound.
    pub fn start(upstream: impl ToSocketAddrs) -> io::Result<TcpProxy> {
        let upstream = upstream
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the upstream resolves to no address"))?;
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("idem-testkit-proxy".to_owned())
            .spawn(move || accept(&listener, upstream, &accepting))?;
        Ok(TcpProxy { addr, upstream, shared })
    }

    /// The address to connect to instead of the upstream.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address connections are forwarded to.
    #[must_use]
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// How many connections are open through the proxy now.
    #[must_use]
    pub fn live(&self) -> usize {
        self.shared.lock().len()
    }

    /// Closes every live connection, both ways, on both sides (the client and the upstream
    /// each see the connection end, as when a network path or a middlebox drops it); answers
    /// how many there were. Connections made afterwards are forwarded as before.
    pub fn cut(&self) -> usize {
        let cut: Vec<_> = self.shared.lock().drain(..).collect();
        for (_, sockets) in &cut {
            for socket in sockets {
                // Wakes the copying threads blocked on it; an error means it is closed already.
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        cut.len()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees `closing`; if this fails, it ends at
        // the next connection or with the process.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_MAX);
        self.cut();
    }
}

/// The accepting thread: forwards every connection until the proxy is dropped.
fn accept(listener: &TcpListener, upstream: SocketAddr, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.closing.load(Ordering::SeqCst) {
            return;
        }
        // A failed accept (the client gave up already) concerns that client only.
        if let Ok(client) = client
            && let Err(error) = forward(client, upstream, shared)
        {
            eprintln!("idem-testkit: the proxy to {upstream} could not forward a connection: {error}");
        }
    }
}

/// Connects to `upstream` for `client` and starts the two copying threads.
fn forward(client: TcpStream, upstream: SocketAddr, shared: &Arc<Shared>) -> io::Result<()> {
    // Dropping `client` on an error closes it: the client sees its connection refused.
    let server = TcpStream::connect_timeout(&upstream, CONNECT_MAX)?;
    for socket in [&client, &server] {
        socket.set_nodelay(true)?;
        socket.set_write_timeout(Some(WRITE_MAX))?;
    }
    let id = shared.next.fetch_add(1, Ordering::Relaxed);
    shared.lock().push((id, [client.try_clone()?, server.try_clone()?]));
    // The second of the two threads to end removes the connection from the live ones.
    let running = Arc::new(AtomicU8::new(2));
    for (from, to, name) in [
        (client.try_clone()?, server.try_clone()?, "idem-testkit-proxy-up"),
        (server, client, "idem-testkit-proxy-down"),
    ] {
        let (shared, running) = (Arc::clone(shared), Arc::clone(&running));
        std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            copy(from, to);
            if running.fetch_sub(1, Ordering::SeqCst) == 1 {
                shared.lock().retain(|(live, _)| *live != id);
            }
        })?;
    }
    Ok(())
}

/// Copies `from` to `to` until `from` ends (then passes the end on, so a half-close stays
/// one) or either fails (then closes both both ways, so the other direction ends too).
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = vec![0_u8; BUFFER];
    loop {
        match from.read(&mut buffer) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(read) => {
                if to.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
