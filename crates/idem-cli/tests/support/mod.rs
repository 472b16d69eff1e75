//! Test support: the real `idem serve` process on a free loopback port, and a plain HTTP/1.1 client.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// How long a started server may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one request may take before the client gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `idem serve`; killed (SIGKILL) when dropped.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// The stderr lines up to and including the "listening" line.
    pub startup_log: Vec<String>,
    /// Every stderr line after the "listening" line, as the server writes them.
    pub log: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Starts `idem serve` on `127.0.0.1:0` with `args` and waits for its "listening" line.
    pub fn start(store: &str, args: &[&str]) -> ServerProcess {
        ServerProcess::start_on("127.0.0.1:0", store, args)
    }

    /// Starts `idem serve` listening on `listen` with `args` and waits for its "listening" line.
    pub fn start_on(listen: &str, store: &str, args: &[&str]) -> ServerProcess {
        ServerProcess::spawn(Command::new(env!("CARGO_BIN_EXE_idem")), listen, store, args)
    }

    /// Starts `idem serve` through `launcher` (the idem binary itself, or a wrapper such as
    /// `sh -c '...; exec "$0" "$@"' <idem>` that sets something up and execs it), with
    /// `serve --listen <listen> --store <store> <args>` appended, and waits for its
    /// "listening" line.
    pub fn spawn(mut launcher: Command, listen: &str, store: &str, args: &[&str]) -> ServerProcess {
        let mut child = launcher
            .args(["serve", "--listen", listen, "--store", store])
            .args(args)
            .env("RUST_LOG", "info,idem_http=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the idem binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (lines, log) = mpsc::channel();
        // Drains stderr for the life of the process, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut startup_log = Vec::new();
        let addr = wait_for_address(&log, &mut startup_log).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("idem serve did not report its address within {START_TIMEOUT:?}")
        });
        ServerProcess { child, addr, startup_log, log }
    }

    /// Starts it on the SQLite file `path`.
    pub fn sqlite(path: &Path, args: &[&str]) -> ServerProcess {
        ServerProcess::start(&format!("sqlite://{}", path.display()), args)
    }

    /// Starts it on the SQLite file `path`, listening on `listen` (a restart on the same
    /// address keeps the clients' URL valid).
    pub fn sqlite_on(listen: SocketAddr, path: &Path, args: &[&str]) -> ServerProcess {
        ServerProcess::start_on(&listen.to_string(), &format!("sqlite://{}", path.display()), args)
    }

    /// Kills the process with SIGKILL (no shutdown, no flush) and reaps it.
    pub fn kill(mut self) {
        self.child.kill().expect("the server process can be killed");
        self.child.wait().expect("the killed process is reaped");
    }

    /// Kills the process with SIGKILL, reaps it, and returns every log line not read yet,
    /// to the end of its stderr.
    pub fn kill_and_read_log(mut self) -> Vec<String> {
        self.child.kill().expect("the server process can be killed");
        self.child.wait().expect("the killed process is reaped");
        // The process is gone, so its stderr ends and the reading thread closes the channel.
        self.log.iter().collect()
    }

    /// The process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process, for signals and exit codes.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port that was free a moment ago (bound, read, released).
pub fn free_loopback_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback port 0 can be bound");
    listener.local_addr().expect("a bound listener has an address")
}

fn wait_for_address(log: &mpsc::Receiver<String>, seen: &mut Vec<String>) -> Option<SocketAddr> {
    const MARK: &str = "listening on http://";
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.checked_duration_since(std::time::Instant::now())?;
        let line = log.recv_timeout(left).ok()?;
        let address = line.find(MARK).and_then(|at| line[at + MARK.len()..].split_whitespace().next()?.parse().ok());
        seen.push(line);
        if address.is_some() {
            return address;
        }
    }
}

/// One response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn is_replay(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }
}

/// Sends one request on a fresh connection; `Err` for anything the network did wrong
/// (refused, reset, timed out), which a retrying client retries.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply, String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|error| format!("connect: {error}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("handshake: {error}"))?;
        tokio::spawn(connection);
        let mut request = Request::builder().method(method).uri(path).header("host", addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request =
            request.body(Full::new(Bytes::copy_from_slice(body.as_bytes()))).map_err(|error| error.to_string())?;
        let response = sender.send_request(request).await.map_err(|error| format!("send: {error}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.map_err(|error| format!("body: {error}"))?.to_bytes();
        Ok(Reply { status, headers, body })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.unwrap_or_else(|_| Err("timed out".to_owned()))
}
