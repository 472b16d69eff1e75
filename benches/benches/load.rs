//! Load harness: the idem-server app with and without the idempotency layer, on the memory
//! store and on SQLite, side by side in one run, over real HTTP/1.1 on loopback.
//!
//! Run: `cargo bench -p idem-benches --bench load` (env `LOAD_SECONDS`, default 2, per
//! scenario and round; `LOAD_ROUNDS`, default 3; `LOAD_CONNECTIONS`, default 16). Each
//! scenario runs once per round, rounds interleaved, and the median round is shown;
//! `LOAD_STORE=memory` or `sqlite` runs one store only.
//! Prints a Markdown table: requests/s and
//! p50/p99 latency for first executions (a fresh key per request) and for replays (one key
//! per connection, sent again and again), and the layer's share of the bare throughput.
//!
//! Client and server share the machine's cores, so absolute figures are low; the ratios
//! in one run are what the goal is about.

// The table on stdout is this harness's output.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use idem_core::{Limits, MemoryStore, SystemClock};
use idem_postgres::{PostgresOptions, PostgresStore};
use idem_server::{AppState, Ledger, MemoryLedger, PostgresLedger, SeededIds, SqliteLedger, app, bare_app};
use idem_sqlite::{ClaimSync, SqliteOptions, SqliteStore};

const PAYMENT: &str = r#"{"amount": 100.00, "currency": "USD", "destination": "merchant-id-xyz"}"#;
/// Requests sent before measuring, per connection.
const WARMUP_REQUESTS: usize = 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    Memory,
    Sqlite,
    /// `PostgresLedger` + `PostgresStore` (atomic mode) on `LOAD_POSTGRES_URL`, default
    /// `postgres://postgres@127.0.0.1:5432/test`, in a schema of its own, dropped after.
    Postgres,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Sqlite => "sqlite",
            Store::Postgres => "postgres",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// `bare_app`: the same handlers, no layer, no key.
    Bare,
    /// `app`, a fresh key per request: every request executes.
    Executions,
    /// `app`, the same key again and again per connection: every request after the first replays.
    Replays,
}

struct Figures {
    requests_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    requests: usize,
}

fn main() {
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let seconds = env("LOAD_SECONDS", 2);
    let rounds = env("LOAD_ROUNDS", 3).max(1) as usize;
    let connections = env("LOAD_CONNECTIONS", 16) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime starts");
    let duration = Duration::from_secs(seconds);
    println!(
        "load: {connections} connections, {rounds} interleaved rounds of {seconds} s per scenario (median round shown), \
         server and client in one process"
    );
    println!();
    println!("| store | scenario | requests/s | p50 | p99 | vs bare |");
    println!("|---|---|---:|---:|---:|---:|");
    let variants = [Variant::Bare, Variant::Executions, Variant::Replays];
    // `LOAD_STORE=memory` or `sqlite` runs one store only (e.g. under a profiler).
    let only = std::env::var("LOAD_STORE").unwrap_or_default();
    let stores = [Store::Memory, Store::Sqlite, Store::Postgres]
        .into_iter()
        .filter(|store| only.is_empty() || only == store.name());
    for store in stores {
        // Rounds interleave the scenarios, so a burst of load from elsewhere on the machine
        // hits all of them alike instead of one.
        let mut runs: Vec<Vec<Figures>> = variants.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (variant, runs) in variants.iter().zip(&mut runs) {
                runs.push(runtime.block_on(scenario(store, *variant, connections, duration)));
            }
        }
        let medians: Vec<Figures> = runs
            .into_iter()
            .map(|mut runs| {
                runs.sort_by(|a, b| a.requests_per_s.total_cmp(&b.requests_per_s));
                runs.swap_remove(runs.len() / 2)
            })
            .collect();
        let bare = medians[0].requests_per_s;
        for (variant, figures) in variants.iter().zip(&medians) {
            let store_name = store.name();
            let name = match variant {
                Variant::Bare => "bare handler (no layer)",
                Variant::Executions => "layer, first executions",
                Variant::Replays => "layer, replays",
            };
            println!(
                "| {store_name} | {name} | {:.0} | {} | {} | {:.0}% |",
                figures.requests_per_s,
                micros(figures.p50_us),
                micros(figures.p99_us),
                100.0 * figures.requests_per_s / bare
            );
            eprintln!("  ({} requests measured in the median round)", figures.requests);
        }
    }
}

fn micros(us: u64) -> String {
    if us >= 1_000 { format!("{:.2} ms", us as f64 / 1_000.0) } else { format!("{us} µs") }
}

async fn scenario(store: Store, variant: Variant, connections: usize, duration: Duration) -> Figures {
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let (mut sqlite, mut postgres) = (None, None);
    let router = match store {
        Store::Memory => {
            let limits = Limits { records_max: 10_000_000, ..Limits::default() };
            let ledger = MemoryLedger::new(Arc::new(MemoryStore::new(limits)), 10_000_000);
            router(ledger, variant)
        }
        Store::Sqlite => {
            // Atomic mode, as `idem serve` runs it: claims need no sync of their own.
            let options =
                SqliteOptions::new(dir.path().join("load.db")).records_max(10_000_000).claim_sync(ClaimSync::Deferred);
            let store = Arc::new(SqliteStore::open(options).await.expect("a temp file opens"));
            let ledger = SqliteLedger::open(Arc::clone(&store)).await.expect("tables are created");
            sqlite = Some(store);
            router(ledger, variant)
        }
        Store::Postgres => {
            let url = std::env::var("LOAD_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
            let schema = format!("idem_load_{}", std::process::id());
            let options = PostgresOptions::new(url).schema(schema).records_max(10_000_000).connections_max(16);
            let opened = PostgresStore::open(options).await;
            let store = Arc::new(opened.expect("PostgreSQL is reachable (pg_ctlcluster 15 main start)"));
            let ledger = PostgresLedger::open(Arc::clone(&store)).await.expect("tables are created");
            postgres = Some(store);
            router(ledger, variant)
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback has free ports");
    let addr = listener.local_addr().expect("a bound listener has an address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(idem_server::serve(listener, router, async move {
        let _ = stopped.await;
    }));

    let next_key = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..connections)
        .map(|connection| tokio::spawn(drive(addr, variant, connection, Arc::clone(&next_key), duration)))
        .collect();
    let started = Instant::now();
    let mut latencies_us = Vec::new();
    for client in clients {
        latencies_us.extend(client.await.expect("load clients do not panic"));
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    server.await.expect("the server task does not panic").expect("the server stops cleanly");
    if let Some(store) = sqlite.take() {
        store.close().await;
    }
    if let Some(store) = postgres.take() {
        let drop_schema = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", store.schema());
        sqlx::query(sqlx::AssertSqlSafe(drop_schema)).execute(store.pool()).await.expect("the load schema is dropped");
        store.close().await;
    }
    latencies_us.sort_unstable();
    let at = |q: f64| latencies_us[((latencies_us.len() as f64 * q) as usize).min(latencies_us.len() - 1)];
    Figures {
        requests_per_s: latencies_us.len() as f64 / elapsed.as_secs_f64(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        requests: latencies_us.len(),
    }
}

fn router<L: Ledger>(ledger: L, variant: Variant) -> Router {
    let state = AppState::new(Arc::new(ledger), Arc::new(SystemClock), Arc::new(SeededIds::new(1)));
    match variant {
        Variant::Bare => bare_app(state),
        Variant::Executions | Variant::Replays => app(state).expect("the default configuration is valid"),
    }
}

/// One keep-alive connection sending requests back to back for `duration` after a warm-up;
/// returns each measured request's latency in microseconds.
async fn drive(
    addr: SocketAddr,
    variant: Variant,
    connection: usize,
    next_key: Arc<AtomicU64>,
    duration: Duration,
) -> Vec<u64> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("the server listens");
    stream.set_nodelay(true).expect("TCP_NODELAY can be set");
    let (mut sender, link) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1 handshake");
    tokio::spawn(link);
    let replay_key = format!("replay-{connection}");
    let mut latencies_us = Vec::new();
    let mut deadline = None;
    for sent in 0usize.. {
        if sent == WARMUP_REQUESTS {
            deadline = Some(Instant::now() + duration);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        let mut request = Request::post("/payments").header("content-type", "application/json");
        match variant {
            Variant::Bare => {}
            Variant::Executions => {
                let key = format!("exec-{}", next_key.fetch_add(1, Ordering::Relaxed));
                request = request.header("idempotency-key", key);
            }
            Variant::Replays => request = request.header("idempotency-key", replay_key.as_str()),
        }
        let request = request.body(Full::new(Bytes::from_static(PAYMENT.as_bytes()))).expect("a valid request");
        let started = Instant::now();
        sender.ready().await.expect("the connection stays open");
        let response = sender.send_request(request).await.expect("the server answers");
        let status = response.status();
        response.into_body().collect().await.expect("the body arrives");
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        assert_eq!(status, 201, "every scenario answers 201");
        if deadline.is_some() {
            latencies_us.push(latency_us);
        }
    }
    latencies_us
}
