//! [`RabbitDelivery::reply`] against the running RabbitMQ: a request message
//! (`reply_to` + `correlation_id`) delivered twice is answered twice with the same
//! recorded outcome, byte for byte, content type and correlation id kept (G2).

mod common;

use std::time::Duration;

use common::{Broker, unique, until_counts, uri, within};
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
