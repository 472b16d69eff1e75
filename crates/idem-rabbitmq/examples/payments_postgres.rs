//! A payments consumer on RabbitMQ with PostgreSQL in atomic mode: each payment row commits
//! in the same transaction as its message's idempotency record, so a payment is written
//! once per message id however often RabbitMQ delivers it (redeliveries, duplicate
//! publishes, a crash mid-message).
//!
//! ```text
//! cargo run -p idem-rabbitmq --example payments_postgres            # consume queue `payments`
//! cargo run -p idem-rabbitmq --example payments_postgres -- --demo  # publish 3 (one twice), check, exit
//! ```
//!
//! `AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`) and `DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`) say where the services are. Without
//! `--demo` the queue `payments` must exist; the table is made in schema `payments`.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use idem_consumer::{AtomicHandler, ClaimScope, Commit, Consumer, Message};
use idem_core::Policy;
use idem_postgres::sqlx::{self, AssertSqlSafe, PgConnection};
use idem_postgres::{PostgresOptions, PostgresStore};
use idem_rabbitmq::lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use idem_rabbitmq::lapin::types::FieldTable;
use idem_rabbitmq::lapin::{BasicProperties, Connection, ConnectionProperties};
use idem_rabbitmq::{RabbitTransport, recommended_on_conflict};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Payment {
    id: String,
    amount_cents: i64,
}

#[derive(Serialize)]
struct Receipt {
    payment: String,
}

/// The handler: parse and compute outside the store's lock, write in its transaction.
struct Payments {
    schema: String,
}

impl AtomicHandler<PostgresStore> for Payments {
    type Error = serde_json::Error;

    async fn handle(&self, message: &Message<'_>, _claim: &ClaimScope) -> Result<Commit<PostgresStore>, Self::Error> {
        let payment: Payment = serde_json::from_slice(message.payload())?;
        let outcome = idem_once::json(&Receipt { payment: payment.id.clone() })?;
        let insert = format!("INSERT INTO \"{}\".payments (id, amount_cents) VALUES ($1, $2)", self.schema);
        Ok(Commit::new(outcome, move |tx: &mut PgConnection| {
            Box::pin(async move {
                sqlx::query(AssertSqlSafe(insert))
                    .bind(payment.id)
                    .bind(payment.amount_cents)
                    .execute(&mut *tx)
                    .await?;
                Ok(())
            })
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let demo = std::env::args().any(|arg| arg == "--demo");
    // A demo run uses a queue and schema of its own, removed at the end.
    let name = if demo { format!("payments_demo_{}", std::process::id()) } else { "payments".to_owned() };
    let (amqp, database) = (
        env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
    );
    if demo {
        declare(&amqp, &name).await?;
    }
    // The glue: a store, a transport, a consumer.
    let store = PostgresStore::open(PostgresOptions::new(database).schema(&name)).await?;
    let table =
        format!("CREATE TABLE IF NOT EXISTS \"{name}\".payments (id TEXT NOT NULL, amount_cents BIGINT NOT NULL)");
    sqlx::raw_sql(AssertSqlSafe(table)).execute(store.pool()).await?;
    let transport = RabbitTransport::builder(&amqp, &name).prefetch(16).connect().await?;
    let channel = transport.channel().cloned();
    let consumer = Consumer::builder(Arc::new(store.clone()), transport)
        .in_flight_max(16)
        .on_conflict(recommended_on_conflict(&Policy::DEFAULT))
        .atomic(Payments { schema: name.clone() })?;
    if !demo {
        consumer.run_until(async { tokio::signal::ctrl_c().await.unwrap_or_default() }).await;
        return Ok(());
    }
    let result = run_demo(consumer, &store, &amqp, &name, channel).await;
    cleanup(&store, &amqp, &name).await;
    result
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Publishes three payments (the second one twice, as a retrying publisher would), runs the
/// consumer until they are paid (at most 30 s), and checks one row per payment and every
/// delivery acked.
async fn run_demo<M: idem_consumer::Mode<PostgresStore>>(
    consumer: Consumer<RabbitTransport, PostgresStore, M>,
    store: &PostgresStore,
    amqp: &str,
    queue: &str,
    channel: Option<idem_rabbitmq::lapin::Channel>,
) -> Result<(), Box<dyn Error>> {
    let publisher = Connection::connect(amqp, ConnectionProperties::default()).await?.create_channel().await?;
    for (id, cents) in [("pay-1", 1000), ("pay-2", 2500), ("pay-2", 2500), ("pay-3", 399)] {
        let body = format!(r#"{{"id":"{id}","amount_cents":{cents}}}"#);
        let properties = BasicProperties::default().with_message_id(id.into());
        publisher
            .basic_publish("".into(), queue.into(), Default::default(), body.as_bytes(), properties)
            .await?
            .await?;
    }
    let rows = format!("SELECT id, count(*) FROM \"{queue}\".payments GROUP BY id ORDER BY id");
    let paid = async {
        for _ in 0..300 {
            let seen: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(rows.clone())).fetch_all(store.pool()).await?;
            let ready = publisher.queue_declare(queue.into(), passive(), FieldTable::default()).await?.message_count();
            if seen.len() == 3 && ready == 0 {
                return Ok::<_, Box<dyn Error>>(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("the three payments were not paid within 30 s".into())
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(consumer.run_until(async move { stopped.await.unwrap_or_default() }));
    let waited = paid.await;
    let _ = stop.send(());
    let drained = running.await?;
    waited?;
    // Closing the consumer's channel requeues whatever it left unacked: none may be left.
    if let Some(channel) = channel {
        channel.close(200, "demo done".into()).await?;
    }
    let left = publisher.queue_declare(queue.into(), passive(), FieldTable::default()).await?.message_count();
    let seen: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(rows)).fetch_all(store.pool()).await?;
    let once: Vec<(String, i64)> = ["pay-1", "pay-2", "pay-3"].iter().map(|id| ((*id).to_owned(), 1)).collect();
    if seen != once || left != 0 || drained.abandoned != 0 {
        return Err(
            format!("expected one row per payment and nothing left: rows {seen:?}, {left} left, {drained:?}").into()
        );
    }
    #[allow(clippy::print_stdout)] // the demo's summary is its output
    {
        println!("4 deliveries of 3 payments: {seen:?}; every delivery acked ({} settled)", drained.settled);
    }
    Ok(())
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() }
}

async fn declare(amqp: &str, queue: &str) -> Result<(), Box<dyn Error>> {
    let channel = Connection::connect(amqp, ConnectionProperties::default()).await?.create_channel().await?;
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.into(), options, FieldTable::default()).await?;
    Ok(())
}

/// Removes the demo's queue and schema (best effort: a later run uses other names anyway).
async fn cleanup(store: &PostgresStore, amqp: &str, name: &str) {
    let drop_schema = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
    let _ = sqlx::raw_sql(AssertSqlSafe(drop_schema)).execute(store.pool()).await;
    if let Ok(connection) = Connection::connect(amqp, ConnectionProperties::default()).await
        && let Ok(channel) = connection.create_channel().await
    {
        let _ = channel.queue_delete(name.into(), QueueDeleteOptions::default()).await;
    }
}
