//! A throw-away Redis: `redis-server` on a free port, without persistence.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::process::{self, Launch, LogOn};
use crate::{PORT_ATTEMPTS, Started};

/// The program, and the Debian package that has it.
const PROGRAM: &str = "redis-server";

/// The server's log line once it takes connections (Redis 7 adds ` tcp`).
const READY: &str = "Ready to accept connections";

/// The server's log line when another process holds its port.
const PORT_TAKEN: &str = "Address already in use";

/// Longest the confirming PING may take to connect, and then to be answered.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// A `redis-server` of this process on a free loopback port.
pub(crate) fn throw_away() -> Result<Started, String> {
    let program = process::find_program(PROGRAM).ok_or_else(|| {
        format!(
            "no `{PROGRAM}` on PATH: install the Debian package `{PROGRAM}` (`apt-get install {PROGRAM}`), \
             or set IDEM_TEST_REDIS_URL to a running server"
        )
    })?;
    process::on_keeper_thread("idem-testkit-redis", move |tail, answer| {
        for _ in 0..PORT_ATTEMPTS {
            let port = match process::free_port() {
                Ok(port) => port,
                Err(why) => {
                    let _ = answer.send(Err(why));
                    return;
                }
            };
            // SIGKILL: without persistence Redis has nothing to save on the way out.
            let mut redis = process::dies_with_this_thread(&program, "KILL");
            redis
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                // Nothing is written, but a SAVE a test might send lands in the temp dir.
                .current_dir(std::env::temp_dir());
            match process::launch(redis, LogOn::Stdout, READY, PORT_TAKEN, tail) {
                Launch::Ready(running) => {
                    if let Err(why) = ping(port) {
                        running.kill();
                        let _ = answer.send(Err(why));
                        return;
                    }
                    let how = format!("a throw-away redis-server, pid {}", running.pid());
                    // The test process may have given up waiting; the server then idles until it exits.
                    let _ = answer.send(Ok(Started { url: format!("redis://127.0.0.1:{port}"), how }));
                    running.watch_until_exit("Redis");
                    return;
                }
                Launch::PortTaken => continue,
                Launch::Failed(why) => {
                    let _ = answer.send(Err(format!("{}: {why}", program.display())));
                    return;
                }
            }
        }
        let _ = answer.send(Err(format!(
            "another process took each of the {PORT_ATTEMPTS} free ports tried before {PROGRAM} bound it"
        )));
    })
}

/// One `PING` to 127.0.0.1:`port`, answered `+PONG` within [`PING_TIMEOUT`]s.
pub(crate) fn ping(port: u16) -> Result<(), String> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let failed = |error: std::io::Error| format!("PING to {address} failed: {error}");
    let mut stream = TcpStream::connect_timeout(&address, PING_TIMEOUT).map_err(failed)?;
    stream.set_read_timeout(Some(PING_TIMEOUT)).map_err(failed)?;
    stream.set_write_timeout(Some(PING_TIMEOUT)).map_err(failed)?;
    stream.write_all(b"PING\r\n").map_err(failed)?;
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).map_err(failed)?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(format!("PING to {address} answered {:?}", String::from_utf8_lossy(&reply)))
    }
}
