//! [`RabbitDelivery::reply`] against the running RabbitMQ: a request message
//! (`reply_to` + `correlation_id`) delivered twice is answered twice with the same
//! recorded outcome, byte for byte, content type and correlation id kept (G2).

mod common;

use std::time::Duration;

use common::{Broker, counts, unique, until, until_counts, uri, within};
use idem_consumer::{Delivery, DeliveryInfo, Transport};
use idem_core::{ContentType, StoredOutcome};
use idem_rabbitmq::RabbitTransport;
use idem_rabbitmq::lapin::BasicProperties;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_delivered_twice_gets_the_same_answer() {
    let mut broker = Broker::connect().await;
    let queue = broker.queue(&unique("reply")).await;
    let replies = broker.queue(&unique("reply_to")).await;
    let request = BasicProperties::default()
        .with_message_id("req-1".into())
        .with_reply_to(replies.as_str().into())
        .with_correlation_id("corr-1".into());
    broker.publish_properties(&queue, b"what is owed?", request).await;
    broker.publish(&queue, Some("no-reply"), b"fire and forget", &[]).await;
    let mut transport = RabbitTransport::builder(uri(), &queue).prefetch(1).connect().await.expect("transport");
    // Every byte value, so a lossy text round trip would show.
    let outcome = StoredOutcome::new(
        ContentType::new("application/octet-stream").expect("a type"),
        (0..=255u8).collect::<Vec<u8>>(),
    );

    let first = within(WAIT, "the request", transport.next()).await.expect("open").expect("delivery");
    assert!(first.reply(&outcome).await.expect("replied"), "the request asked for a reply");
    first.nak(Duration::ZERO).await.expect("nak: delivered again, as a redelivery would be");
    let again = within(WAIT, "the request again", transport.next()).await.expect("open").expect("delivery");
    assert!(again.redelivered());
    assert!(again.reply(&outcome).await.expect("replied"));
    again.ack().await.expect("ack");
    let plain = within(WAIT, "the plain message", transport.next()).await.expect("open").expect("delivery");
    assert!(!plain.reply(&outcome).await.expect("answered"), "no reply_to: nothing sent");
    plain.ack().await.expect("ack");

    for n in 1..=2 {
        let answer = broker.get(&replies).await.unwrap_or_else(|| panic!("reply {n} is in the reply queue"));
        let properties = &answer.delivery.properties;
        assert_eq!(answer.delivery.data, outcome.bytes.as_ref(), "reply {n} is the outcome byte for byte");
        assert_eq!(properties.correlation_id().as_ref().map(|c| c.as_str()), Some("corr-1"));
        assert_eq!(properties.message_id().as_ref().map(|c| c.as_str()), Some("req-1"));
        assert_eq!(properties.content_type().as_ref().map(|c| c.as_str()), Some("application/octet-stream"));
    }
    assert!(broker.get(&replies).await.is_none(), "two deliveries, two replies, no more");
    until_counts(&queue, 0, 0, WAIT).await;
}

/// Separate-mode handler that counts its runs and answers with a receipt.
struct Quote(std::sync::atomic::AtomicU32);

#[derive(Debug, thiserror::Error)]
#[error("never fails")]
struct Never;

impl idem_consumer::Handler for Quote {
    type Error = Never;

    async fn handle(
        &self,
        message: &idem_consumer::Message<'_>,
        _claim: &idem_consumer::ClaimScope,
    ) -> Result<StoredOutcome, Never> {
        let run = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        Ok(StoredOutcome::bytes(format!("quote {run} for {}", String::from_utf8_lossy(message.payload()))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_answers_every_copy_of_a_request_with_the_recorded_outcome() {
    // End to end through idem-consumer: the request is published twice with one
    // message_id; the handler runs once, and both copies are answered before their acks
    // with the first run's outcome (G2 for request/reply).
    let mut broker = Broker::connect().await;
    let queue = broker.queue(&unique("reply_consumer")).await;
    let replies = broker.queue(&unique("reply_consumer_to")).await;
    for correlation in ["c-1", "c-2"] {
        let request = BasicProperties::default()
            .with_message_id("quote-7".into())
            .with_reply_to(replies.as_str().into())
            .with_correlation_id(correlation.into());
        broker.publish_properties(&queue, b"10 widgets", request).await;
    }
    let transport = RabbitTransport::builder(uri(), &queue).prefetch(4).connect().await.expect("transport");
    let quote = std::sync::Arc::new(Quote(std::sync::atomic::AtomicU32::new(0)));
    let consumer = idem_consumer::Consumer::builder(std::sync::Arc::new(idem_core::MemoryStore::default()), transport)
        .on_conflict(idem_consumer::OnConflict::Wait { max: Duration::from_secs(5) })
        .handler(std::sync::Arc::clone(&quote))
        .expect("valid settings");
    let waited_for = replies.clone();
    consumer
        .run_until(async move {
            until(WAIT, "two replies", || {
                let waited_for = waited_for.clone();
                async move {
                    let ready = counts(&waited_for).await.0;
                    if ready >= 2 { Ok(()) } else { Err(format!("{ready} replies")) }
                }
            })
            .await;
        })
        .await;
    assert_eq!(quote.0.load(std::sync::atomic::Ordering::SeqCst), 1, "the handler ran once");
    let mut correlations = Vec::new();
    for n in 1..=2 {
        let answer = broker.get(&replies).await.unwrap_or_else(|| panic!("reply {n} is in the reply queue"));
        assert_eq!(answer.delivery.data, b"quote 1 for 10 widgets", "reply {n} is the recorded outcome");
        correlations.push(answer.delivery.properties.correlation_id().as_ref().map(|c| c.to_string()));
    }
    correlations.sort();
    assert_eq!(correlations, [Some("c-1".to_owned()), Some("c-2".to_owned())], "each copy answered under its own id");
    until_counts(&queue, 0, 0, WAIT).await;
}
