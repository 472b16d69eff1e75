//! The faults idem-testkit lets a test cause without root: a throw-away PostgreSQL stopped
//! and started again, and a TCP proxy whose connections are cut.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use idem_testkit::proxy::TcpProxy;
use idem_testkit::{POSTGRES_URL_VAR, is_root, postgres_cluster, postgres_url};
use sqlx::Connection as _;

/// Longest one read from the proxy may take here (the echo answers at once).
const READ_MAX: Duration = Duration::from_secs(5);

/// An echo server on a free loopback port: every connection gets back what it sends.
fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().expect("bound");
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reading = stream.try_clone().expect("a clone");
                let mut writing = stream;
                let _ = std::io::copy(&mut reading, &mut writing);
            });
        }
    });
    addr
}

/// Sends `text` through `stream` and reads the echo.
fn round_trip(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(text)?;
    let mut echoed = vec![0_u8; text.len()];
    stream.read_exact(&mut echoed)?;
    Ok(echoed)
}

#[test]
fn a_cut_ends_every_connection_through_the_proxy_and_new_ones_work() {
    // Goal: bytes pass both ways; `cut` ends the live connections (the client reads their
    // end instead of waiting) and counts them; the proxy forwards new connections afterwards.
    let proxy = TcpProxy::start(echo_server()).expect("the proxy starts");
    let mut first = TcpStream::connect(proxy.local_addr()).expect("connects through the proxy");
    let mut second = TcpStream::connect(proxy.local_addr()).expect("connects through the proxy");
    for stream in [&first, &second] {
        stream.set_read_timeout(Some(READ_MAX)).expect("a read timeout");
    }
    assert_eq!(round_trip(&mut first, b"hello").expect("echoed"), b"hello");
    assert_eq!(round_trip(&mut second, b"world").expect("echoed"), b"world");
    assert_eq!(proxy.live(), 2);

    assert_eq!(proxy.cut(), 2, "both live connections were cut");
    for stream in [&mut first, &mut second] {
        let mut byte = [0_u8; 1];
        // The end of the stream (0) or a reset, never the read timeout.
        match stream.read(&mut byte) {
            Ok(read) => assert_eq!(read, 0, "nothing but the end comes after a cut"),
            Err(error) => assert_ne!(error.kind(), std::io::ErrorKind::WouldBlock, "the cut was not seen: {error}"),
        }
    }
    assert_eq!(proxy.live(), 0);

    let mut third = TcpStream::connect(proxy.local_addr()).expect("connects after the cut");
    third.set_read_timeout(Some(READ_MAX)).expect("a read timeout");
    assert_eq!(round_trip(&mut third, b"again").expect("echoed"), b"again");
}

#[test]
fn a_proxy_to_nothing_closes_what_it_accepts() {
    // Goal: with no upstream listening, a client's connection is closed, not left hanging.
    let gone = TcpListener::bind("127.0.0.1:0").expect("a loopback port").local_addr().expect("bound");
    let proxy = TcpProxy::start(gone).expect("the proxy starts");
    let mut client = TcpStream::connect(proxy.local_addr()).expect("the proxy accepts");
    client.set_read_timeout(Some(READ_MAX)).expect("a read timeout");
    let mut byte = [0_u8; 1];
    match client.read(&mut byte) {
        Ok(read) => assert_eq!(read, 0),
        Err(error) => assert_ne!(error.kind(), std::io::ErrorKind::WouldBlock, "left hanging: {error}"),
    }
}

#[tokio::test]
async fn the_throw_away_cluster_stops_and_starts_again_with_its_rows() {
    // Goal: stop makes the server refuse connections; start brings it back on the same URL
    // with what was written before. As root (no throw-away cluster) or with the variable set,
    // there is none to restart, and `postgres_cluster` says so.
    let url = postgres_url();
    let Some(cluster) = postgres_cluster() else {
        assert!(is_root() || std::env::var(POSTGRES_URL_VAR).is_ok_and(|set| !set.is_empty()), "{url}");
        eprintln!("no throw-away cluster here ({url}): root or {POSTGRES_URL_VAR} names the server");
        return;
    };
    assert!(url.contains(&format!(":{}/", cluster.port())), "{url}");
    let mut connection = sqlx::PgConnection::connect(&url).await.expect("the cluster answers");
    let table = format!("restart_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE TABLE {table} (v int); INSERT INTO {table} VALUES (7)")))
        .execute(&mut connection)
        .await
        .expect("a row is written");
    drop(connection);

    tokio::task::spawn_blocking(|| cluster.stop()).await.expect("the stop task").expect("the cluster stops");
    assert!(sqlx::PgConnection::connect(&url).await.is_err(), "a stopped cluster takes no connection");
    assert!(cluster.stop().is_err(), "a second stop is refused");

    tokio::task::spawn_blocking(|| cluster.start()).await.expect("the start task").expect("the cluster starts");
    assert!(cluster.start().is_err(), "a start of a running cluster is refused");
    let mut connection = sqlx::PgConnection::connect(&url).await.expect("the cluster answers again");
    let (value,): (i32,) = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT v FROM {table}")))
        .fetch_one(&mut connection)
        .await
        .expect("the row reads");
    assert_eq!(value, 7, "the row written before the stop is there");
}
