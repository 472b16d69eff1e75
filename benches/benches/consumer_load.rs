//! Messages per second through a JetStream consumer with idem and without it, in one run.
//!
//! Same broker (the local NATS JetStream), same transport (idem-nats's `NatsTransport`, so
//! pulling and acking cost the same), same handler body (insert the payment row), same
//! durable store (SQLite in WAL with `synchronous=FULL`), same bound on messages in flight:
//!
//! * **bare**: takes each delivery, inserts its payment row in a transaction of its own,
//!   acks. No deduplication at all: the baseline a consumer without idem pays.
//! * **idem**: `idem_consumer::Consumer` in atomic mode on `SqliteStore` (the same file
//!   kind and durability): claim, the payment row and the completion in one transaction
//!   (group commit), then the ack.
//!
//! Each round pre-publishes `IDEM_BENCH_MESSAGES` (default 3000) messages with unique
//! `Nats-Msg-Id`s to a fresh stream (not timed), then times from starting the consumer to
//! the last payment row. Rounds alternate bare, idem, bare, idem… (`IDEM_BENCH_ROUNDS`,
//! default 3 each); the table gives medians and the ratio idem/bare.
//!
//! ```sh
//! cargo bench -p idem-benches --bench consumer_load
//! ```

#![allow(clippy::print_stdout)] // the report is the point of a harness

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Context, stream};
use idem_consumer::{AtomicHandler, ClaimScope, Commit, Consumer, Delivery, DeliveryInfo, Message, Transport};
use idem_core::{Policy, StoredOutcome};
use idem_nats::{NatsOptions, NatsTransport};
use idem_sqlite::{SqliteOptions, SqliteStore};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::Semaphore;

const IN_FLIGHT_MAX: usize = 64;
/// Longest one round may take before the bench gives up on it.
const ROUND_MAX: Duration = Duration::from_secs(300);
const CREATE_PAYMENTS: &str = "CREATE TABLE IF NOT EXISTS payments (id TEXT NOT NULL, amount INTEGER NOT NULL)";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let messages = env_usize("IDEM_BENCH_MESSAGES", 3000);
    let rounds = env_usize("IDEM_BENCH_ROUNDS", 3);
    let client = async_nats::connect("127.0.0.1:4222").await.expect("NATS runs on 127.0.0.1:4222");
    let js = jetstream::new(client);
    let (mut bare, mut idem) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        bare.push(run_round(&js, messages, round, Kind::Bare).await);
        idem.push(run_round(&js, messages, round, Kind::Idem).await);
    }
    let (bare, idem) = (median(&mut bare), median(&mut idem));
    println!(
        "\n| JetStream + SQLite, {messages} messages, in flight {IN_FLIGHT_MAX}, median of {rounds} | msgs/s | vs bare |"
    );
    println!("|---|---:|---:|");
    println!("| bare consumer (row per message, own transaction) | {bare:.0} | 1.00x |");
    println!("| idem consumer (atomic mode, SqliteStore) | {idem:.0} | {:.2}x |", idem / bare);
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Bare,
    Idem,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One timed round on a fresh stream and a fresh SQLite file; messages per second.
async fn run_round(js: &Context, messages: usize, round: usize, kind: Kind) -> f64 {
    let name = format!("idem_bench_{}_{round}_{kind:?}", std::process::id());
    let stream = js
        .create_stream(stream::Config { name: name.clone(), subjects: vec![format!("{name}.>")], ..Default::default() })
        .await
        .expect("the stream is created");
    publish(js, &name, messages).await;
    let policy = Policy::DEFAULT;
    let config = idem_nats::recommended_consumer("bench", &policy, IN_FLIGHT_MAX, 1);
    stream.create_consumer(config).await.expect("the consumer is created");
    let options = NatsOptions::default().in_flight_max(IN_FLIGHT_MAX);
    let transport = NatsTransport::open(js, &name, "bench", options).await.expect("the transport opens");
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("bench.db");

    let elapsed = match kind {
        Kind::Bare => {
            let pool = bare_pool(&path).await;
            sqlx::query(CREATE_PAYMENTS).execute(&pool).await.expect("the table");
            let started = Instant::now();
            bare_consume(transport, pool.clone(), messages).await;
            let elapsed = started.elapsed();
            pool.close().await;
            elapsed
        }
        Kind::Idem => {
            let store = Arc::new(SqliteStore::open(SqliteOptions::new(&path)).await.expect("the store opens"));
            sqlx::query(CREATE_PAYMENTS).execute(store.pool()).await.expect("the table");
            let consumer = Consumer::builder(Arc::clone(&store), transport)
                .policy(policy)
                .in_flight_max(IN_FLIGHT_MAX)
                .atomic(Payments)
                .expect("valid settings");
            let pool = store.pool().clone();
            let started = Instant::now();
            consumer.run_until(until_rows(&pool, messages)).await;
            let elapsed = started.elapsed();
            store.close().await;
            elapsed
        }
    };
    js.delete_stream(&name).await.expect("the stream is deleted");
    let rate = messages as f64 / elapsed.as_secs_f64();
    eprintln!("round {round} {kind:?}: {messages} messages in {elapsed:?} = {rate:.0} msgs/s");
    rate
}

async fn publish(js: &Context, name: &str, messages: usize) {
    let mut acks = Vec::with_capacity(messages);
    for n in 0..messages {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("payment-{n}").as_str());
        let payload = format!("{{\"id\":\"payment-{n}\",\"amount\":{}}}", 100 + n % 900);
        let ack =
            js.publish_with_headers(format!("{name}.payments"), headers, payload.into()).await.expect("published");
        acks.push(ack);
    }
    for ack in acks {
        ack.await.expect("the stream stored the message");
    }
}

/// The same durability idem-sqlite uses for completions: WAL, `synchronous=FULL`.
async fn bare_pool(path: &std::path::Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new().max_connections(4).connect_with(options).await.expect("the bare pool opens")
}

/// The bare consumer: same transport, same bound in flight, no idempotency.
async fn bare_consume(mut transport: NatsTransport, pool: SqlitePool, messages: usize) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let done = Arc::new(Semaphore::new(0));
    let deadline = Instant::now() + ROUND_MAX;
    for _ in 0..messages {
        assert!(Instant::now() < deadline, "the bare round took longer than {ROUND_MAX:?}");
        let permit = Arc::clone(&permits).acquire_owned().await.expect("open");
        let delivery = transport.next().await.expect("the transport runs").expect("a delivery");
        let (pool, done) = (pool.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let payment: serde_json::Value = serde_json::from_slice(delivery.payload()).expect("json");
            let mut tx = pool.begin().await.expect("a transaction");
            sqlx::query("INSERT INTO payments (id, amount) VALUES (?, ?)")
                .bind(payment["id"].as_str().expect("an id").to_owned())
                .bind(payment["amount"].as_i64().expect("an amount"))
                .execute(&mut *tx)
                .await
                .expect("inserted");
            tx.commit().await.expect("committed");
            delivery.ack().await.expect("acked");
            done.add_permits(1);
            drop(permit);
        });
    }
    let all = u32::try_from(messages).expect("fits");
    tokio::time::timeout(ROUND_MAX, done.acquire_many(all))
        .await
        .expect("the bare round ended")
        .expect("open")
        .forget();
    transport.stop().await;
}

/// Resolves once `messages` payment rows exist (checked every 20 ms, at most [`ROUND_MAX`]).
async fn until_rows(pool: &SqlitePool, messages: usize) {
    let step = Duration::from_millis(20);
    for _ in 0..(ROUND_MAX.as_millis() / step.as_millis()) {
        let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM payments").fetch_one(pool).await.expect("counts");
        if rows as usize >= messages {
            return;
        }
        tokio::time::sleep(step).await;
    }
    panic!("the idem round did not write {messages} rows within {ROUND_MAX:?}");
}

struct Payments;

#[derive(Debug, thiserror::Error)]
#[error("not a payment: {0}")]
struct NotAPayment(#[from] serde_json::Error);

impl AtomicHandler<SqliteStore> for Payments {
    type Error = NotAPayment;

    async fn handle(&self, message: &Message<'_>, _claim: &ClaimScope) -> Result<Commit<SqliteStore>, NotAPayment> {
        let payment: serde_json::Value = serde_json::from_slice(message.payload())?;
        let id = payment["id"].as_str().unwrap_or_default().to_owned();
        let amount = payment["amount"].as_i64().unwrap_or_default();
        Ok(Commit::new(StoredOutcome::bytes(id.clone()), move |tx| {
            Box::pin(async move {
                sqlx::query("INSERT INTO payments (id, amount) VALUES (?, ?)")
                    .bind(id)
                    .bind(amount)
                    .execute(&mut *tx)
                    .await?;
                Ok(())
            })
        }))
    }
}
