//! NATS JetStream with SQLite: a fresh stream and SQLite file per round.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Context, stream};
use idem_consumer::{AtomicHandler, ClaimScope, Commit, Consumer, Message};
use idem_core::{Policy, StoredOutcome};
use idem_nats::{NatsOptions, NatsTransport};
use idem_sqlite::{SqliteOptions, SqliteStore};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::{IN_FLIGHT_MAX, Kind, bare_consume, parse, payment, rate, until_rows};

const CREATE_PAYMENTS: &str = "CREATE TABLE IF NOT EXISTS payments (id TEXT NOT NULL, amount INTEGER NOT NULL)";

pub(crate) async fn connect() -> Context {
    jetstream::new(async_nats::connect("127.0.0.1:4222").await.expect("NATS runs on 127.0.0.1:4222"))
}

/// One timed round; messages per second.
pub(crate) async fn round(js: &Context, messages: usize, round: usize, kind: Kind) -> f64 {
    let name = format!("idem_bench_{}_{round}_{kind:?}", std::process::id());
    let config = stream::Config { name: name.clone(), subjects: vec![format!("{name}.>")], ..Default::default() };
    let stream = js.create_stream(config).await.expect("the stream is created");
    publish(js, &name, messages).await;
    let policy = Policy::DEFAULT;
    stream
        .create_consumer(idem_nats::recommended_consumer("bench", &policy, IN_FLIGHT_MAX, 1))
        .await
        .expect("the consumer is created");
    let options = NatsOptions::default().in_flight_max(IN_FLIGHT_MAX);
    let transport = NatsTransport::open(js, &name, "bench", options).await.expect("the transport opens");
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("bench.db");
    let elapsed = match kind {
        Kind::Bare => {
            let pool = bare_pool(&path).await;
            sqlx::query(CREATE_PAYMENTS).execute(&pool).await.expect("the table");
            let insert = {
                let pool = pool.clone();
                move |id: String, amount: i64| {
                    let pool = pool.clone();
                    async move {
                        let mut tx = pool.begin().await.expect("a transaction");
                        let insert = sqlx::query("INSERT INTO payments (id, amount) VALUES (?, ?)");
                        insert.bind(id).bind(amount).execute(&mut *tx).await.expect("inserted");
                        tx.commit().await.expect("committed");
                    }
                }
            };
            let started = Instant::now();
            bare_consume(transport, messages, insert).await;
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
            consumer.run_until(until_rows(messages, || rows(&pool))).await;
            let elapsed = started.elapsed();
            store.close().await;
            elapsed
        }
    };
    js.delete_stream(&name).await.expect("the stream is deleted");
    rate("JetStream + SQLite", round, kind, messages, elapsed)
}

async fn rows(pool: &SqlitePool) -> usize {
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM payments").fetch_one(pool).await.expect("counts");
    usize::try_from(rows).unwrap_or_default()
}

async fn publish(js: &Context, name: &str, messages: usize) {
    let mut acks = Vec::with_capacity(messages);
    for n in 0..messages {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("payment-{n}").as_str());
        let subject = format!("{name}.payments");
        acks.push(js.publish_with_headers(subject, headers, payment(n).into()).await.expect("published"));
    }
    for ack in acks {
        ack.await.expect("the stream stored the message");
    }
}

/// The same durability idem-sqlite uses for completions: WAL, `synchronous=FULL`.
async fn bare_pool(path: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new().max_connections(4).connect_with(options).await.expect("the bare pool opens")
}

struct Payments;

#[derive(Debug, thiserror::Error)]
#[error("not a payment")]
struct NotAPayment;

impl AtomicHandler<SqliteStore> for Payments {
    type Error = NotAPayment;

    async fn handle(&self, message: &Message<'_>, _claim: &ClaimScope) -> Result<Commit<SqliteStore>, NotAPayment> {
        let (id, amount) = parse(message.payload()).ok_or(NotAPayment)?;
        Ok(Commit::new(StoredOutcome::bytes(id.clone()), move |tx| {
            Box::pin(async move {
                let insert = sqlx::query("INSERT INTO payments (id, amount) VALUES (?, ?)");
                insert.bind(id).bind(amount).execute(&mut *tx).await?;
                Ok(())
            })
        }))
    }
}
