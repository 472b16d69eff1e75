//! The consumer (idem-consumer, atomic mode on PostgreSQL) over this transport against the
//! running RabbitMQ: duplicates, racing consumers and a reused id. Every test ends with
//! exactly one payment row per message id and the queue empty with nothing unacked.

mod common;
mod support;

use std::time::Duration;

use common::pg::{Schema, payments};
use common::{Broker, unique, until, until_counts, uri};
use idem_rabbitmq::lapin::types::AMQPValue;
use idem_rabbitmq::{REASON_HEADER, RabbitTransport};
use support::{Payments, Running};

const WAIT: Duration = Duration::from_secs(20);

/// Publishes ids `pay-0..n`, id `i` published `i % 3 + 1` times (RabbitMQ never dedups).
async fn publish_with_duplicates(broker: &Broker, queue: &str, n: usize) -> usize {
    let mut published = 0;
    for i in 0..n {
        for _ in 0..=i % 3 {
            broker.publish(queue, Some(&format!("pay-{i:03}")), format!("amount {i}").as_bytes(), &[]).await;
            published += 1;
        }
    }
    published
}

/// Waits until `n` ids have a payment row.
async fn until_paid(store: &idem_postgres::PostgresStore, n: usize) {
    until(WAIT, "a payment row per id", || async {
        let rows = payments(store).await;
        // Done once every id has a row; more ids than published is a failure for the
        // caller's exact check to name, not something to wait out.
        if rows.len() >= n { Ok(()) } else { Err(format!("{} ids paid of {n}", rows.len())) }
    })
    .await;
}

fn assert_once_each(rows: &[(String, i64)], n: usize) {
    let expected: Vec<(String, i64)> = (0..n).map(|i| (format!("pay-{i:03}"), 1)).collect();
    assert_eq!(rows, expected, "exactly one payment row per message id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_publishes_run_once() {
    let mut broker = Broker::connect().await;
    let queue = broker.queue(&unique("dups")).await;
    let schema = Schema::fresh("dups");
    let store = schema.open().await;
    let n = 30;
    let published = publish_with_duplicates(&broker, &queue, n).await;
    assert_eq!(published, 60);
    let handler = Payments::new(&schema.name);
    let transport = RabbitTransport::builder(uri(), &queue).prefetch(8).connect().await.expect("transport");
    let running = Running::start(&store, transport, handler.clone(), 8);
    until_paid(&store, n).await;
    until_counts(&queue, 0, 0, WAIT).await;
    running.stop().await;
    assert_once_each(&payments(&store).await, n);
    assert_eq!(handler.runs(), n, "the handler ran once per id; duplicates were replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_on_two_connections_race() {
    let mut broker = Broker::connect().await;
    let queue = broker.queue(&unique("race")).await;
    let schema = Schema::fresh("race");
    let store = schema.open().await;
    let n = 100;
    publish_with_duplicates(&broker, &queue, n).await;
    let (one, two) = (Payments::new(&schema.name), Payments::new(&schema.name));
    let first = RabbitTransport::builder(uri(), &queue).prefetch(8).connect().await.expect("transport");
    let second = RabbitTransport::builder(uri(), &queue).prefetch(8).connect().await.expect("transport");
    let running = [Running::start(&store, first, one.clone(), 8), Running::start(&store, second, two.clone(), 8)];
    until_paid(&store, n).await;
    until_counts(&queue, 0, 0, WAIT).await;
    for consumer in running {
        consumer.stop().await;
    }
    assert_once_each(&payments(&store).await, n);
    assert_eq!(one.runs() + two.runs(), n, "one execution per id across both consumers");
    assert!(one.runs() > 0 && two.runs() > 0, "both consumers took part: {} and {}", one.runs(), two.runs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_id_with_another_payload_is_dead_lettered() {
    let mut broker = Broker::connect().await;
    let queue = broker.queue(&unique("mismatch")).await;
    let dlq = broker.queue(&unique("mismatch_dlq")).await;
    let schema = Schema::fresh("mismatch");
    let store = schema.open().await;
    let handler = Payments::new(&schema.name);
    let transport =
        RabbitTransport::builder(uri(), &queue).dead_letter_to("", &dlq).connect().await.expect("transport");
    let running = Running::start(&store, transport, handler.clone(), 4);
    broker.publish(&queue, Some("pay-000"), b"amount 0", &[]).await;
    until_paid(&store, 1).await;
    broker.publish(&queue, Some("pay-000"), b"amount 999", &[]).await;
    let copy = common::within(WAIT, "the dead-letter copy", async {
        loop {
            if let Some(copy) = broker.get(&dlq).await {
                return copy;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    until_counts(&queue, 0, 0, WAIT).await;
    running.stop().await;
    assert_eq!(copy.delivery.data, b"amount 999", "the second message is the one dead-lettered");
    let headers = copy.delivery.properties.headers().clone().unwrap_or_default();
    let reason = match headers.inner().get(REASON_HEADER) {
        Some(AMQPValue::LongString(value)) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        other => panic!("no reason header: {other:?}"),
    };
    assert_eq!(reason, "key-reused");
    assert_once_each(&payments(&store).await, 1);
    assert_eq!(handler.runs(), 1, "the mismatch never ran");
}
