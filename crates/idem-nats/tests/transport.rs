//! The transport alone against the real server: what each settle does to a message.
//! Each test makes its own stream (`idem_t_<test>_<pid>`) and deletes it at the end.

mod common;

use std::time::Duration;

use async_nats::jetstream::stream::RetentionPolicy;
use common::{Fixture, next_within, nothing_until};
use idem_consumer::{Delivery, DeliveryInfo, Transport, TransportError};
use idem_core::{DeadLetterReason, RedeliveryTimer};
use idem_nats::{NatsOptions, NatsTransport, dead_letter};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_delivery_says_what_it_is_and_its_ack_removes_it() {
    let fixture = Fixture::new("ack").await;
    let mut transport = fixture.transport("app", Duration::from_secs(5)).await;
    assert_eq!(transport.redelivery_timer(), RedeliveryTimer::AckWait(Duration::from_secs(5)));

    let subject = fixture.subject("payments");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, "pay-1");
    headers.insert("Trace", "t-7");
    let published = fixture.js.publish_with_headers(subject.clone(), headers, "100".into()).await;
    published.expect("publish").await.expect("publish ack");
    assert!(fixture.publish(&fixture.subject("other"), b"no id", None).await);

    let delivery = next_within(&mut transport, WAIT, "the first message").await;
    assert_eq!(delivery.subject(), subject);
    assert_eq!(delivery.payload().as_ref(), b"100");
    assert_eq!(delivery.message_id(), Some("pay-1"));
    assert_eq!(delivery.header("Trace"), Some("t-7"));
    assert_eq!(delivery.header("Absent"), None);
    // A configured header name that is no header name is absent, not a panic.
    assert_eq!(delivery.header("bad:name"), None);
    assert_eq!(delivery.source(), format!("nats:{}/app", fixture.stream));
    assert_eq!(delivery.attempt(), Some(1));
    assert!(!delivery.redelivered());
    assert_eq!(delivery.stream_sequence(), Some(1));
    delivery.ack().await.expect("double ack confirmed by nats-server");

    let second = next_within(&mut transport, WAIT, "the message without an id").await;
    assert_eq!(second.message_id(), None);
    let info = fixture.consumer_info("app").await;
    assert_eq!((info.num_ack_pending, info.num_pending), (1, 0), "the second is delivered and unacked");
    second.ack().await.expect("ack");

    fixture.until_settled("app", WAIT).await;
    let stream = fixture.js.get_stream(&fixture.stream).await.expect("stream");
    assert_eq!(stream.get_info().await.expect("stream info").state.messages, 0, "acked messages left the work queue");
}

#[tokio::test]
async fn a_nak_with_a_delay_redelivers_after_it_as_attempt_two() {
    let fixture = Fixture::new("nak").await;
    let mut transport = fixture.transport("app", Duration::from_secs(30)).await;
    fixture.publish(&fixture.subject("p"), b"x", Some("n-1")).await;

    let first = next_within(&mut transport, WAIT, "the message").await;
    let delay = Duration::from_millis(1500);
    let naked = Instant::now();
    first.nak(delay).await.expect("nak");
    // The server starts the delay when the nak reaches it, after `naked`.
    nothing_until(&mut transport, naked + delay / 2, "the nak's delay is not over").await;
    let again = next_within(&mut transport, WAIT, "the naked message's redelivery").await;
    assert!(naked.elapsed() >= delay, "redelivered {:?} after a nak of {delay:?}", naked.elapsed());
    assert_eq!(again.message_id(), Some("n-1"));
    assert_eq!(again.attempt(), Some(2));
    assert!(again.redelivered());
    again.ack().await.expect("ack");
    fixture.until_settled("app", WAIT).await;
}

#[tokio::test]
async fn in_progress_keeps_a_message_past_its_ack_wait_and_without_it_it_returns() {
    let fixture = Fixture::new("progress").await;
    // Two seconds, renewed every half second: a loaded machine may stall the renewals a
    // while without the message coming back.
    let ack_wait = Duration::from_secs(2);
    let mut transport = fixture.transport("app", ack_wait).await;
    fixture.publish(&fixture.subject("p"), b"kept", Some("kept")).await;
    let kept = next_within(&mut transport, WAIT, "the kept message").await;
    fixture.publish(&fixture.subject("p"), b"left", Some("left")).await;
    let left = next_within(&mut transport, WAIT, "the left message").await;
    let left_at = Instant::now();

    // Hold both for three ack waits; only `kept` gets in-progress acks (every quarter of one).
    let mut copies = Vec::new();
    let mut tick = tokio::time::interval(ack_wait / 4);
    let held = Instant::now();
    while held.elapsed() < ack_wait * 3 {
        tokio::select! {
            _ = tick.tick() => kept.in_progress().await.expect("in progress"),
            next = transport.next() => copies.push(next.expect("transport open").expect("delivery")),
        }
    }
    assert!(left_at.elapsed() > ack_wait * 2);
    let seen: Vec<_> = copies.iter().map(|d| (d.message_id().unwrap_or("?").to_owned(), d.attempt())).collect();
    assert!(!seen.is_empty(), "the message without progress came back after its ack wait");
    for (n, (id, attempt)) in seen.iter().enumerate() {
        assert_eq!(id, "left", "only the message without progress came back: {seen:?}");
        assert_eq!(*attempt, u32::try_from(n + 2).ok(), "each copy is the next attempt: {seen:?}");
    }
    let info = fixture.consumer_info("app").await;
    assert_eq!(info.num_redelivered, 1, "only `left` was redelivered");
    assert_eq!(kept.attempt(), Some(1));
    kept.ack().await.expect("ack kept");
    drop(left);
    copies.pop().expect("the latest copy").ack().await.expect("ack left");
    fixture.until_settled("app", WAIT).await;
}

#[tokio::test]
async fn dead_letter_publishes_a_copy_with_its_reason_then_terminates() {
    let mut fixture = Fixture::new("dlq").await;
    let dlq_stream = format!("idem_t_dlq_copies_{}", std::process::id());
    fixture.add_stream(&dlq_stream, RetentionPolicy::Limits).await;
    let dlq_subject = format!("{dlq_stream}.payments");
    let consumer = fixture.consumer("app", Duration::from_secs(2)).await;
    let options = NatsOptions::default().dead_letter_subject(&dlq_subject);
    let mut transport = NatsTransport::new(&fixture.js, consumer, options).await.expect("transport");

    let subject = fixture.subject("payments");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, "pay-9");
    headers.insert("Trace", "t-9");
    headers.insert("Nats-Expected-Stream", fixture.stream.as_str());
    let published = fixture.js.publish_with_headers(subject.clone(), headers, "999".into()).await;
    published.expect("publish").await.expect("publish ack");
    fixture.publish(&fixture.subject("payments"), b"no id", None).await;

    let delivery = next_within(&mut transport, WAIT, "the message to dead-letter").await;
    delivery.dead_letter(DeadLetterReason::KeyReused).await.expect("dead letter");
    let second = next_within(&mut transport, WAIT, "the message without an id").await;
    second.dead_letter(DeadLetterReason::KeyMissing).await.expect("dead letter");

    let dlq = fixture.js.get_stream(&dlq_stream).await.expect("dlq stream");
    let copy = dlq.get_raw_message(1).await.expect("the first dead letter is in its stream");
    assert_eq!(copy.subject.as_str(), dlq_subject);
    assert_eq!(copy.payload.as_ref(), b"999");
    let header = |name: &str| copy.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header(dead_letter::REASON_HEADER).as_deref(), Some("key-reused"));
    assert_eq!(header("Nats-Msg-Id").as_deref(), Some("pay-9"));
    assert_eq!(header(dead_letter::ORIGINAL_SUBJECT_HEADER), Some(subject));
    assert_eq!(header(dead_letter::ORIGINAL_STREAM_HEADER), Some(fixture.stream.clone()));
    assert_eq!(header(dead_letter::ORIGINAL_SEQUENCE_HEADER).as_deref(), Some("1"));
    assert_eq!(header("Trace").as_deref(), Some("t-9"), "the original's own headers travel along");
    assert_eq!(header("Nats-Expected-Stream"), None, "the server's headers do not");

    let copy = dlq.get_raw_message(2).await.expect("the second dead letter is in its stream");
    let header = |name: &str| copy.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header(dead_letter::REASON_HEADER).as_deref(), Some("key-missing"));
    let id = format!("{}:2", fixture.stream);
    assert_eq!(header("Nats-Msg-Id"), Some(id), "without an id of its own the copy's id is stream:sequence");

    // Terminated, not waiting for redelivery: nothing comes back after the ack wait.
    fixture.until_settled("app", WAIT).await;
    nothing_until(&mut transport, Instant::now() + Duration::from_secs(3), "a terminated message came back").await;
    let info = fixture.consumer_info("app").await;
    assert_eq!(info.delivered.consumer_sequence, 2, "each of the two was delivered once");
}

#[tokio::test]
async fn dead_letter_without_a_subject_terminates() {
    let fixture = Fixture::new("dlq_none").await;
    let mut transport = fixture.transport("app", Duration::from_secs(1)).await;
    fixture.publish(&fixture.subject("p"), b"x", Some("x")).await;
    let delivery = next_within(&mut transport, WAIT, "the message").await;
    delivery.dead_letter(DeadLetterReason::HandlerGaveUp).await.expect("terminate");
    fixture.until_settled("app", WAIT).await;
    nothing_until(&mut transport, Instant::now() + Duration::from_secs(2), "a terminated message came back").await;
    assert_eq!(fixture.consumer_info("app").await.delivered.consumer_sequence, 1, "delivered once, never again");
}

#[tokio::test]
async fn stop_gives_back_what_the_client_buffered() {
    let fixture = Fixture::new("stop").await;
    // A long ack wait: only the give-back can make the buffered messages pending again soon.
    let consumer = fixture.consumer("app", Duration::from_secs(60)).await;
    let options = NatsOptions::default().in_flight_max(5);
    let mut transport = NatsTransport::new(&fixture.js, consumer, options).await.expect("transport");
    for n in 0..5 {
        fixture.publish(&fixture.subject("p"), b"x", Some(&format!("s-{n}"))).await;
    }
    let taken = next_within(&mut transport, WAIT, "the first message").await;
    let all_delivered =
        common::poll_until(WAIT, || async { fixture.consumer_info("app").await.num_ack_pending == 5 }).await;
    assert!(all_delivered, "the server delivered all 5 to the client's buffer within {WAIT:?}");

    transport.stop().await;
    assert!(transport.next().await.is_none(), "a stopped transport delivers nothing more");
    // A naked message counts as unacked until redelivered; another transport gets the 4
    // back at once, as second deliveries, long before their 60 s ack wait.
    let mut other =
        NatsTransport::open(&fixture.js, &fixture.stream, "app", NatsOptions::default()).await.expect("open");
    let mut ids = Vec::new();
    for _ in 0..4 {
        let back = next_within(&mut other, WAIT, "a buffered message given back by stop").await;
        assert_eq!(back.attempt(), Some(2));
        ids.push(back.message_id().map(str::to_owned));
        back.ack().await.expect("ack");
    }
    ids.sort();
    assert!(!ids.contains(&taken.message_id().map(str::to_owned)), "the taken one is not given back: {ids:?}");
    taken.ack().await.expect("a delivery handed out before stop can still be settled");
    fixture.until_settled("app", WAIT).await;
}

#[tokio::test]
async fn settling_on_a_closed_client_is_closed_and_next_says_so() {
    let fixture = Fixture::new("closed").await;
    fixture.consumer("app", Duration::from_secs(1)).await;
    // A client of the transport's own, so closing it leaves the fixture's working.
    let js = common::connect().await;
    let mut transport = NatsTransport::open(&js, &fixture.stream, "app", NatsOptions::default()).await.expect("open");
    let mut held = Vec::new();
    for n in 0..3 {
        fixture.publish(&fixture.subject("p"), b"x", Some(&format!("c-{n}"))).await;
        held.push(next_within(&mut transport, WAIT, "a message").await);
    }

    js.client().drain().await.expect("drain the transport's client");
    // Draining ends the pull subscription first, then closes the connection.
    let next = tokio::time::timeout(WAIT, transport.next()).await;
    assert!(matches!(next, Ok(Some(Err(TransportError::Closed)))), "next on a drained client: {next:?}");
    let next = tokio::time::timeout(WAIT, transport.next()).await;
    let closed = matches!(next, Ok(Some(Err(TransportError::Closed))));
    assert!(closed, "next keeps saying Closed (the consumer retries it): {next:?}");
    let (third, second, first) = (held.pop().expect("3"), held.pop().expect("2"), held.pop().expect("1"));
    let error = first.ack().await.expect_err("an ack on a closed client fails");
    assert!(matches!(error, TransportError::Closed), "ack: {error:?}");
    let error = second.nak(Duration::ZERO).await.expect_err("a nak on a closed client fails");
    assert!(matches!(error, TransportError::Closed), "nak: {error:?}");
    let error =
        third.dead_letter(DeadLetterReason::KeyMissing).await.expect_err("a dead letter on a closed client fails");
    assert!(matches!(error, TransportError::Closed), "dead letter: {error:?}");

    // Nothing was settled: all three come back to a working transport after their ack wait.
    let mut other = fixture.transport("app", Duration::from_secs(1)).await;
    for _ in 0..3 {
        let again = next_within(&mut other, WAIT, "a message its closed client never settled").await;
        assert_eq!(again.attempt(), Some(2));
        again.ack().await.expect("ack");
    }
    fixture.until_settled("app", WAIT).await;
}

#[tokio::test]
async fn a_dead_letter_whose_copy_fails_is_not_terminated() {
    let mut fixture = Fixture::new("dlq_gone").await;
    let dlq_stream = format!("idem_t_dlq_gone_copies_{}", std::process::id());
    fixture.add_stream(&dlq_stream, RetentionPolicy::Limits).await;
    let consumer = fixture.consumer("app", Duration::from_secs(1)).await;
    let options = NatsOptions::default().dead_letter_subject(format!("{dlq_stream}.x"));
    let mut transport = NatsTransport::new(&fixture.js, consumer, options).await.expect("transport");
    // The dead-letter stream goes away after the check at construction.
    fixture.js.delete_stream(&dlq_stream).await.expect("delete the dead-letter stream");
    fixture.publish(&fixture.subject("p"), b"x", Some("g-1")).await;

    let delivery = next_within(&mut transport, WAIT, "the message").await;
    let error = delivery.dead_letter(DeadLetterReason::KeyReused).await.expect_err("no stream takes the copy");
    assert!(matches!(error, TransportError::Other(_)), "{error:?}");
    let again = next_within(&mut transport, WAIT, "the message whose copy failed, back after its ack wait").await;
    assert_eq!((again.message_id(), again.attempt()), (Some("g-1"), Some(2)));
    again.ack().await.expect("ack");
    fixture.until_settled("app", WAIT).await;
}
