//! Readiness on Redis (separate mode): a Redis that refuses writes (`maxmemory` reached
//! under `noeviction`, what a full Redis answers) keeps `/healthz` at 503 until it takes
//! writes again. The test runs a Redis of its own, so no other test's Redis is touched.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;

use idem_redis::{RedisOptions, RedisStore};
use idem_server::{AppState, SeededIds, SeparateLedger, SqliteLedger};
use idem_sqlite::{SqliteOptions, SqliteStore};
use support::{PAYMENT, Server, Setup};

/// A `redis-server` of this test's own on a free loopback port, without persistence;
/// killed (by its pid) when dropped, also when the test fails.
struct OwnRedis {
    child: Child,
    port: u16,
    /// Its log, kept open so that it never writes to a closed pipe.
    _log: BufReader<ChildStdout>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("loopback has free ports")
            .port();
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .args(["--maxmemory-policy", "noeviction"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-server runs (it is installed where the tests run)");
        let stdout = child.stdout.take().expect("stdout is piped");
        // Its log says when it listens: read it, bounded in lines (a start logs a few dozen).
        let mut log = BufReader::new(stdout);
        let ready =
            (&mut log).lines().take(200).map_while(Result::ok).any(|line| line.contains("Ready to accept connections"));
        let redis = OwnRedis { child, port, _log: log };
        assert!(ready, "redis-server on port {port} did not say it was ready");
        redis
    }

    /// `CONFIG SET maxmemory <bytes>` (0: no limit).
    fn set_maxmemory(&self, bytes: &str) {
        let status = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "CONFIG", "SET", "maxmemory", bytes])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "CONFIG SET maxmemory {bytes}");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_redis_that_refuses_writes_keeps_healthz_at_503_until_it_takes_writes_again() {
    // Goal: with Redis over its memory limit, new keys are refused (503) and every /healthz
    // probe answers 503, although the rows' SQLite file and Redis reads work (the everyday
    // probe writes only SQLite and reads Redis); once Redis takes writes again, /healthz
    // finds out by its own claim, and payments succeed.
    let redis = OwnRedis::start();
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let rows = SqliteStore::open(SqliteOptions::new(dir.path().join("rows.db"))).await.expect("a temp file opens");
    let rows = Arc::new(SqliteLedger::open(Arc::new(rows)).await.expect("tables are created"));
    let options = RedisOptions::new(&format!("redis://127.0.0.1:{}", redis.port)).expect("a valid URL");
    let store = Arc::new(RedisStore::open(options).await.expect("the test's Redis answers"));
    let ledger = Arc::new(SeparateLedger::new(rows, store));
    let state = AppState::new(ledger, Arc::new(idem_core::SystemClock), Arc::new(SeededIds::new(3)));
    let server = Server::start(state, Setup::default()).await;
    let first = server.post("/payments", Some("before-oom"), PAYMENT).await;
    assert_eq!(first.status, 201, "{first:?}");

    redis.set_maxmemory("1");
    let refused = server.post("/payments", Some("while-oom"), PAYMENT).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(!server.readiness.is_ready(), "a refused claim puts readiness down");
    for probe in 0..3 {
        let health = server.get("/healthz", None).await;
        assert_eq!(health.status, 503, "probe {probe}: {health:?}");
        assert_eq!(health.json()["type"], "/problems#not-ready");
    }

    redis.set_maxmemory("0");
    let health = server.get("/healthz", None).await;
    assert_eq!(health.status, 200, "{health:?}");
    let after = server.post("/payments", Some("after-oom"), PAYMENT).await;
    assert_eq!(after.status, 201, "{after:?}");
    server.stop().await;
}
