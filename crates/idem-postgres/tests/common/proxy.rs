//! A TCP proxy between a store and the real PostgreSQL that injects host faults: it can
//! freeze (stop forwarding in both directions while keeping every socket open, as a frozen
//! VM or a host cut off from the network looks to PostgreSQL), and it can answer the first
//! connections as a server that is still starting (SQLSTATE 57P03), as PostgreSQL does.
//! (`idem_testkit::proxy::TcpProxy` is the workspace's plain forwarder that only cuts
//! connections; this one speaks enough of PostgreSQL's protocol for the startup refusal.)

#![allow(dead_code, unreachable_pub)] // included by path in the tests that inject host faults

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The proxy; dropping it closes every socket it holds.
pub struct Proxy {
    address: SocketAddr,
    frozen: Arc<AtomicBool>,
    starting: Arc<AtomicU32>,
    refused: Arc<AtomicU32>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// Listens on `listener`, forwarding each connection to PostgreSQL at `upstream`.
    pub fn on(listener: TcpListener, upstream: SocketAddr) -> Proxy {
        let address = listener.local_addr().expect("a bound listener has an address");
        let proxy = Proxy {
            address,
            frozen: Arc::default(),
            starting: Arc::default(),
            refused: Arc::default(),
            tasks: Arc::default(),
        };
        let (frozen, starting, refused, tasks) =
            (proxy.frozen.clone(), proxy.starting.clone(), proxy.refused.clone(), proxy.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (frozen, starting, refused) = (frozen.clone(), starting.clone(), refused.clone());
                let tasks_inner = tasks.clone();
                let task = tokio::spawn(async move {
                    let still_starting =
                        starting.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
                    if still_starting {
                        refused.fetch_add(1, Ordering::SeqCst);
                        answer_starting_up(client).await;
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = tokio::spawn(pump(client_read, server_write, frozen.clone()));
                    let down = tokio::spawn(pump(server_read, client_write, frozen));
                    tasks_inner.lock().expect("no panic while holding").extend([up, down]);
                });
                tasks.lock().expect("no panic while holding").push(task);
            }
        });
        proxy.tasks.lock().expect("no panic while holding").push(accept);
        proxy
    }

    /// A proxy on a fresh port of 127.0.0.1 to the PostgreSQL of `url`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a local port is free");
        Proxy::on(listener, upstream)
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = authority.rsplit_once('@').map_or(String::new(), |(user, _)| format!("{user}@"));
        format!("{scheme}://{user}{}/{path}", self.address)
    }

    /// From now on nothing is forwarded either way; every socket stays open.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// The next `connections` connections are answered "the database system is starting up".
    pub fn starting_for(&self, connections: u32) {
        self.starting.store(connections, Ordering::SeqCst);
    }

    /// How many connections were answered "starting up".
    pub fn refused(&self) -> u32 {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain(..) {
            task.abort();
        }
    }
}

/// Forwards `from` to `to` until either closes; once frozen, it forwards nothing more and
/// keeps both halves open (a frozen host: its sockets neither send nor close).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, frozen: Arc<AtomicBool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if frozen.load(Ordering::SeqCst) {
            let _kept = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// What PostgreSQL answers a client while it starts: it declines TLS, reads the startup
/// packet, and sends a FATAL ErrorResponse with SQLSTATE 57P03, then closes.
async fn answer_starting_up(mut client: TcpStream) {
    /// The SSLRequest code in a startup-phase message.
    const SSL_REQUEST: u32 = 80_877_103;
    let Ok(mut length) = client.read_u32().await else { return };
    let mut body = vec![0u8; (length as usize).saturating_sub(4).min(10_000)];
    if client.read_exact(&mut body).await.is_err() {
        return;
    }
    if length == 8 && body[..4] == SSL_REQUEST.to_be_bytes() {
        if client.write_all(b"N").await.is_err() {
            return;
        }
        let Ok(next) = client.read_u32().await else { return };
        length = next;
        body = vec![0u8; (length as usize).saturating_sub(4).min(10_000)];
        if client.read_exact(&mut body).await.is_err() {
            return;
        }
    }
    let mut fields = Vec::new();
    for (code, value) in
        [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "57P03"), (b'M', "the database system is starting up")]
    {
        fields.push(code);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&u32::try_from(fields.len() + 4).expect("a short message").to_be_bytes());
    message.extend_from_slice(&fields);
    let _ = client.write_all(&message).await;
    let _ = client.shutdown().await;
}
