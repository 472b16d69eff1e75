//! RabbitMQ with PostgreSQL: a fresh queue and schema per round.

use std::sync::Arc;
use std::time::Instant;

use idem_consumer::{AtomicHandler, ClaimScope, Commit, Consumer, Message};
use idem_core::{Policy, StoredOutcome};
use idem_postgres::sqlx::{self, AssertSqlSafe, PgPool};
use idem_postgres::{PostgresOptions, PostgresStore};
use idem_rabbitmq::RabbitTransport;
use idem_rabbitmq::lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use idem_rabbitmq::lapin::types::FieldTable;
use idem_rabbitmq::lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::{IN_FLIGHT_MAX, Kind, bare_consume, parse, payment, rate, until_rows};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const DATABASE: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Connections of the one pool both consumers write through (PostgreSQL commits in
/// parallel, so the pool, not the disk, bounds a consumer with 64 messages in flight).
const POOL_MAX: u32 = 32;

/// One timed round; messages per second.
pub(crate) async fn round(messages: usize, round: usize, kind: Kind) -> f64 {
    let name = format!("idem_bench_{}_{round}_{kind:?}", std::process::id()).to_lowercase();
    let connection = Connection::connect(AMQP, ConnectionProperties::default()).await.expect("RabbitMQ runs");
    let channel = connection.create_channel().await.expect("a channel");
    channel
        .queue_declare(name.as_str().into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("q");
    publish(&channel, &name, messages).await;
    let store = Arc::new(
        PostgresStore::open(PostgresOptions::new(DATABASE).schema(&name).connections_max(POOL_MAX))
            .await
            .expect("PostgreSQL runs"),
    );
    let table = format!("CREATE TABLE \"{name}\".payments (id TEXT NOT NULL, amount BIGINT NOT NULL)");
    sqlx::raw_sql(AssertSqlSafe(table)).execute(store.pool()).await.expect("the table");
    let transport = RabbitTransport::builder(AMQP, &name).prefetch(IN_FLIGHT_MAX).connect().await.expect("transport");
    let pool = store.pool().clone();
    let elapsed = match kind {
        Kind::Bare => {
            let insert = {
                let (pool, sql) = (pool.clone(), insert_sql(&name));
                move |id: String, amount: i64| {
                    let (pool, sql) = (pool.clone(), sql.clone());
                    async move {
                        let mut tx = pool.begin().await.expect("a transaction");
                        let insert = sqlx::query(AssertSqlSafe(sql));
                        insert.bind(id).bind(amount).execute(&mut *tx).await.expect("inserted");
                        tx.commit().await.expect("committed");
                    }
                }
            };
            let started = Instant::now();
            bare_consume(transport, messages, insert).await;
            started.elapsed()
        }
        Kind::Idem => {
            let consumer = Consumer::builder(Arc::clone(&store), transport)
                .policy(Policy::DEFAULT)
                .in_flight_max(IN_FLIGHT_MAX)
                .atomic(Payments { insert: insert_sql(&name) })
                .expect("valid settings");
            let started = Instant::now();
            consumer.run_until(until_rows(messages, || rows(&pool, &name))).await;
            started.elapsed()
        }
    };
    let drop_schema = format!("DROP SCHEMA \"{name}\" CASCADE");
    sqlx::raw_sql(AssertSqlSafe(drop_schema)).execute(store.pool()).await.expect("the schema is dropped");
    store.close().await;
    channel.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await.expect("the queue is deleted");
    rate("RabbitMQ + PostgreSQL", round, kind, messages, elapsed)
}

fn insert_sql(schema: &str) -> String {
    format!("INSERT INTO \"{schema}\".payments (id, amount) VALUES ($1, $2)")
}

async fn rows(pool: &PgPool, schema: &str) -> usize {
    let count = format!("SELECT count(*) FROM \"{schema}\".payments");
    let (rows,): (i64,) = sqlx::query_as(AssertSqlSafe(count)).fetch_one(pool).await.expect("counts");
    usize::try_from(rows).unwrap_or_default()
}

/// Publishes with confirms, each with its own `message_id`.
async fn publish(channel: &idem_rabbitmq::lapin::Channel, queue: &str, messages: usize) {
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let mut confirms = Vec::with_capacity(messages);
    for n in 0..messages {
        let properties = BasicProperties::default().with_message_id(format!("payment-{n}").as_str().into());
        let body = payment(n);
        let options = BasicPublishOptions::default();
        let confirm = channel.basic_publish("".into(), queue.into(), options, body.as_bytes(), properties).await;
        confirms.push(confirm.expect("published"));
    }
    for confirm in confirms {
        confirm.await.expect("confirmed");
    }
}

struct Payments {
    insert: String,
}

#[derive(Debug, thiserror::Error)]
#[error("not a payment")]
struct NotAPayment;

impl AtomicHandler<PostgresStore> for Payments {
    type Error = NotAPayment;

    async fn handle(&self, message: &Message<'_>, _claim: &ClaimScope) -> Result<Commit<PostgresStore>, NotAPayment> {
        let (id, amount) = parse(message.payload()).ok_or(NotAPayment)?;
        let insert = self.insert.clone();
        Ok(Commit::new(StoredOutcome::bytes(id.clone()), move |tx| {
            Box::pin(async move {
                sqlx::query(AssertSqlSafe(insert)).bind(id).bind(amount).execute(&mut *tx).await?;
                Ok(())
            })
        }))
    }
}
