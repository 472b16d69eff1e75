//! The transport on its own against the running RabbitMQ: what a delivery says, and that
//! each settle does to the broker what the consumer relies on (no consumer, no store).

mod common;

use std::time::{Duration, Instant};

use common::{Broker, assert_counts, proxied_uri, unique, until_counts, uri, within};
use idem_consumer::{Delivery, DeliveryInfo, Transport, TransportError};
use idem_core::consume::{DeadLetterReason, RedeliveryTimer};
use idem_rabbitmq::lapin::options::BasicAckOptions;
use idem_rabbitmq::lapin::types::{AMQPValue, FieldTable};
use idem_rabbitmq::{REASON_HEADER, RabbitError, RabbitTransport, SOURCE_HEADER};

const WAIT: Duration = Duration::from_secs(10);

async fn next(transport: &mut RabbitTransport, what: &str) -> idem_rabbitmq::RabbitDelivery {
    within(WAIT, what, transport.next())
        .await
        .unwrap_or_else(|| panic!("the transport stopped before {what}"))
        .unwrap_or_else(|error| panic!("{what}: {error}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_read_right_and_acks_empty_the_queue() {
    let mut broker = Broker::connect().await;
    let queue = broker.queue(&unique("read_ack")).await;
    for i in 0..3 {
        broker.publish(&queue, Some(&format!("id-{i}")), format!("body {i}").as_bytes(), &[("tenant", "t1")]).await;
    }
    broker.publish(&queue, None, b"no id", &[]).await;
    let mut transport = RabbitTransport::builder(uri(), &queue).prefetch(4).connect().await.expect("transport");
    assert_eq!(transport.redelivery_timer(), RedeliveryTimer::ChannelTimeout(Duration::from_secs(1800)));
    for i in 0..3 {
        let delivery = next(&mut transport, "a published message").await;
        assert_eq!(delivery.message_id(), Some(format!("id-{i}").as_str()));
        assert_eq!(delivery.payload().as_ref(), format!("body {i}").as_bytes());
        assert_eq!(delivery.subject(), format!("\0{queue}"), "default exchange, routing key = queue");
        assert_eq!(delivery.source(), format!("amqp://{queue}"), "vhost / then the queue");
        assert_eq!(delivery.header("tenant"), Some("t1"));
        assert_eq!(delivery.header("absent"), None);
        assert_eq!(delivery.attempt(), None, "a classic queue does not count deliveries");
        assert!(!delivery.redelivered());
        delivery.in_progress().await.expect("in_progress is a no-op");
        delivery.ack().await.expect("ack");
    }
    let without_id = next(&mut transport, "the message without an id").await;
    assert_eq!(without_id.message_id(), None);
    // One delivery still unsettled: the broker must count it as unacked, so the count
    // below shows what an ack changes.
    until_counts(&queue, 0, 1, WAIT).await;
    without_id.ack().await.expect("ack");
    until_counts(&queue, 0, 0, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nak_holds_then_redelivers() {
    let mut broker = Broker::connect().await;
    let queue = broker.queue(&unique("nak")).await;
    broker.publish(&queue, Some("n1"), b"x", &[]).await;
    let mut transport = RabbitTransport::builder(uri(), &queue).connect().await.expect("transport");
    let first = next(&mut transport, "the message").await;
    assert!(!first.redelivered());
    let hold = Duration::from_secs(2);
    let naked_at = Instant::now();
    let nak = tokio::spawn(first.nak(hold));
    // While held, the broker still has it out to us: not ready for anyone else.
    assert_counts(&queue, 0, 1, "a held nak keeps the delivery").await;
    assert!(!nak.is_finished(), "the count above was taken during the hold");
    let again = next(&mut transport, "the redelivery after the nak").await;
    assert!(naked_at.elapsed() >= hold, "redelivered after {:?}, before the {hold:?} asked", naked_at.elapsed());
    nak.await.expect("nak task").expect("nak");
    assert!(again.redelivered());
    assert_eq!(again.message_id(), Some("n1"));
    again.ack().await.expect("ack");
    until_counts(&queue, 0, 0, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_copies_to_the_configured_exchange_then_acks() {
    let mut broker = Broker::connect().await;
    let queue = broker.queue(&unique("dl_copy")).await;
    let dlq = broker.queue(&unique("dl_copy_dlq")).await;
    broker.publish(&queue, Some("m1"), b"payload", &[("tenant", "t1")]).await;
    let mut transport =
        RabbitTransport::builder(uri(), &queue).dead_letter_to("", &dlq).connect().await.expect("transport");
    let delivery = next(&mut transport, "the message").await;
    delivery.dead_letter(DeadLetterReason::KeyReused).await.expect("dead-lettered");
    until_counts(&queue, 0, 0, WAIT).await;
    let copy = broker.get(&dlq).await.expect("the copy is in the dead-letter queue");
    let properties = &copy.delivery.properties;
    assert_eq!(properties.message_id().as_ref().map(|id| id.as_str()), Some("m1"));
    assert_eq!(copy.delivery.data, b"payload");
    let headers = properties.headers().clone().unwrap_or_default();
    let text = |name: &str| match headers.inner().get(name) {
        Some(AMQPValue::LongString(value)) => String::from_utf8(value.as_bytes().to_vec()).ok(),
        _ => None,
    };
    assert_eq!(text(REASON_HEADER).as_deref(), Some("key-reused"));
    assert_eq!(text(SOURCE_HEADER), Some(format!("amqp://{queue}")));
    assert_eq!(text("tenant").as_deref(), Some("t1"), "the original headers are kept");
    assert!(broker.get(&dlq).await.is_none(), "exactly one copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_dead_letter_copy_fails_and_requeues() {
    let mut broker = Broker::connect().await;
    let queue = broker.queue(&unique("dl_unroutable")).await;
    broker.publish(&queue, Some("u1"), b"x", &[]).await;
    let mut transport = RabbitTransport::builder(uri(), &queue)
        .dead_letter_to("", unique("dl_nowhere"))
        .dead_letter_retry_after(Duration::ZERO)
        .connect()
        .await
        .expect("transport");
    let delivery = next(&mut transport, "the message").await;
    let error = delivery.dead_letter(DeadLetterReason::KeyMissing).await.expect_err("no queue takes the copy");
    assert!(matches!(error, TransportError::Other(_)), "{error}");
    assert!(error.to_string().contains("unroutable"), "{error}");
    // Not lost: requeued, to be dead-lettered again.
    let again = next(&mut transport, "the requeued message").await;
    assert!(again.redelivered());
    again.ack().await.expect("ack");
    until_counts(&queue, 0, 0, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_without_target_goes_to_the_queues_own_dlx() {
    let mut broker = Broker::connect().await;
    let dlq = broker.queue(&unique("dl_reject_dlq")).await;
    let mut arguments = FieldTable::default();
    arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(dlq.as_str().into()));
    let queue = broker.queue_with(&unique("dl_reject"), arguments).await;
    broker.publish(&queue, Some("r1"), b"x", &[]).await;
    let mut transport = RabbitTransport::builder(uri(), &queue).connect().await.expect("transport");
    next(&mut transport, "the message").await.dead_letter(DeadLetterReason::KeyInvalid).await.expect("rejected");
    until_counts(&queue, 0, 0, WAIT).await;
    let copy = within(WAIT, "the DLX copy", async {
        loop {
            if let Some(copy) = broker.get(&dlq).await {
                return copy;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(copy.delivery.properties.message_id().as_ref().map(|id| id.as_str()), Some("r1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_channel_is_reported_and_consumed_again() {
    let mut broker = Broker::connect().await;
    let queue = broker.queue(&unique("channel_closed")).await;
    broker.publish(&queue, Some("c1"), b"x", &[]).await;
    broker.publish(&queue, Some("c2"), b"y", &[]).await;
    let mut transport = RabbitTransport::builder(uri(), &queue).connect().await.expect("transport");
    let held = next(&mut transport, "the first message").await;
    // What the consumer timeout does: the broker closes the channel with
    // PRECONDITION_FAILED. An ack of a tag it never sent draws that same close.
    let channel = transport.channel().expect("consuming").clone();
    let _ = channel.basic_ack(held.delivery_tag() + 1000, BasicAckOptions::default()).await;
    within(WAIT, "the broker to close the channel", async {
        while channel.status().connected() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let reported = within(WAIT, "the close to be reported", transport.next()).await.expect("not stopped");
    assert!(matches!(reported, Err(TransportError::Closed)), "{reported:?}");
    assert!(matches!(held.ack().await, Err(TransportError::Closed)), "an ack on the closed channel fails");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let delivery = next(&mut transport, "a requeued message on the new channel").await;
        assert!(delivery.redelivered(), "requeued by the close");
        ids.push(delivery.message_id().expect("an id").to_owned());
        delivery.ack().await.expect("ack on the new channel");
    }
    ids.sort();
    assert_eq!(ids, ["c1", "c2"]);
    until_counts(&queue, 0, 0, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connection_is_reported_and_reconnected() {
    // Goal: when the transport's connection drops (cut under it, as a network or a broker
    // that gave up on it would), the loss is reported as Closed, an ack of a delivery taken
    // on it fails, and the transport reconnects by itself and gets the message again,
    // requeued by the broker (redelivered).
    let mut broker = Broker::connect().await;
    let queue = broker.queue(&unique("connection_closed")).await;
    broker.publish(&queue, Some("k1"), b"x", &[]).await;
    let (proxy, through_proxy) = proxied_uri();
    let mut transport = RabbitTransport::builder(through_proxy, &queue).connect().await.expect("transport");
    let held = next(&mut transport, "the message").await;
    assert_eq!(proxy.cut(), 1, "the transport's one connection went through the proxy");
    let reported = within(WAIT, "the close to be reported", transport.next()).await.expect("not stopped");
    assert!(matches!(reported, Err(TransportError::Closed)), "{reported:?}");
    assert!(held.ack().await.is_err(), "an ack on the closed connection fails");
    let again = next(&mut transport, "the requeued message on a new connection").await;
    assert!(again.redelivered());
    assert_eq!(proxy.live(), 1, "the new connection goes through the proxy too");
    again.ack().await.expect("ack");
    until_counts(&queue, 0, 0, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queue_attempts_count_deliveries() {
    let mut broker = Broker::connect().await;
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let queue = broker.queue_with(&unique("quorum"), arguments).await;
    broker.publish(&queue, Some("q1"), b"x", &[]).await;
    let mut transport = RabbitTransport::builder(uri(), &queue).connect().await.expect("transport");
    let first = next(&mut transport, "the message").await;
    assert_eq!(first.attempt(), None, "3.10 sends x-delivery-count only from the first redelivery");
    first.nak(Duration::ZERO).await.expect("nak");
    let second = next(&mut transport, "the redelivery").await;
    assert_eq!(second.attempt(), Some(2));
    second.nak(Duration::ZERO).await.expect("nak");
    let third = next(&mut transport, "the second redelivery").await;
    assert_eq!(third.attempt(), Some(3));
    third.ack().await.expect("ack");
    until_counts(&queue, 0, 0, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_cancels_gives_back_the_buffered_and_keeps_settling() {
    let mut broker = Broker::connect().await;
    let queue = broker.queue(&unique("stop")).await;
    for i in 0..3 {
        broker.publish(&queue, Some(&format!("s{i}")), b"x", &[]).await;
    }
    let mut transport = RabbitTransport::builder(uri(), &queue).prefetch(3).connect().await.expect("transport");
    let handed_out = next(&mut transport, "the first message").await;
    until_counts(&queue, 0, 3, WAIT).await; // all three prefetched before the stop
    within(WAIT, "stop", transport.stop()).await;
    assert!(within(WAIT, "next after stop", transport.next()).await.is_none());
    until_counts(&queue, 2, 1, WAIT).await; // the two never handed out are back
    handed_out.ack().await.expect("a delivery handed out before the stop still settles");
    until_counts(&queue, 2, 0, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_clear_errors() {
    let long = "q".repeat(256);
    let error = RabbitTransport::builder(uri(), "").connect().await.expect_err("empty queue name");
    assert!(matches!(error, RabbitError::InvalidName { what: "queue", .. }), "{error}");
    let error = RabbitTransport::builder(uri(), long).connect().await.expect_err("256-byte queue name");
    assert!(matches!(error, RabbitError::InvalidName { .. }), "{error}");
    for prefetch in [0, 65_536] {
        let error = RabbitTransport::builder(uri(), "q").prefetch(prefetch).connect().await.expect_err("prefetch");
        assert!(matches!(error, RabbitError::InvalidPrefetch(p) if p == prefetch), "{error}");
    }
    let error =
        RabbitTransport::builder(uri(), "q").consumer_timeout(Duration::ZERO).connect().await.expect_err("zero");
    assert!(matches!(error, RabbitError::InvalidConsumerTimeout), "{error}");
    let error =
        RabbitTransport::builder("amqp://guest:guest@127.0.0.1:1/%2f", "q").connect().await.expect_err("no broker");
    assert!(matches!(error, RabbitError::Connect(_)), "{error}");
    let missing = unique("never_declared");
    let error = RabbitTransport::builder(uri(), &missing).connect().await.expect_err("no such queue");
    assert!(matches!(&error, RabbitError::Consume { queue, .. } if *queue == missing), "{error}");
    assert!(error.to_string().contains("NOT_FOUND"), "the broker's reason is in the message: {error}");
}
