//! The small trait a broker adapter implements (idem-nats, idem-rabbitmq, the simulation's
//! broker, `testing::MemoryTransport` with feature `testing`), so every one of them runs the same consumer
//! code ([`crate::Consumer`]).
//!
//! A [`Transport`] hands out [`Delivery`]s; a delivery says what the message is
//! ([`DeliveryInfo`]) and is settled exactly once by [`Delivery::ack`], [`Delivery::nak`] or
//! [`Delivery::dead_letter`], each of which consumes it. While its handler runs, the
//! consumer calls [`Delivery::in_progress`] after each lease renewal the store applied, so
//! the broker's own redelivery timer moves with the lease (SPEC "Message consumers").
//!
//! Settling may fail (a closed channel, a stale delivery tag, a lost connection): the
//! consumer counts and logs it and does nothing else. That is safe because no ack is ever
//! sent before the record is completed: the broker redelivers, and the redelivery is acked
//! with the recorded outcome without running the handler again.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use idem_core::StoredOutcome;
use idem_core::consume::{DeadLetterReason, RedeliveryTimer};

/// A transport failure, by what the consumer can do about it.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The connection or channel is gone; the broker redelivers what was unsettled on it.
    #[error("the broker connection is closed")]
    Closed,
    /// The broker no longer knows this delivery (redelivered elsewhere, channel reopened).
    #[error("the delivery is stale: the broker redelivered it or dropped its channel")]
    Stale,
    /// The broker answered with an error, or the client failed.
    #[error("broker error: {0}")]
    Other(#[source] idem_core::BoxError),
}

impl TransportError {
    /// Wraps a client or broker error.
    pub fn other(error: impl Into<idem_core::BoxError>) -> TransportError {
        TransportError::Other(error.into())
    }

    /// The label of this error in the `idem_transport_errors_total` metric.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            TransportError::Closed => "closed",
            TransportError::Stale => "stale",
            TransportError::Other(_) => "other",
        }
    }
}

/// What a delivery says about its message. Object-safe, so a handler sees one type
/// ([`crate::Message`]) whatever the broker.
pub trait DeliveryInfo: Send + Sync {
    /// What the message was published to: the JetStream subject, or AMQP
    /// `exchange` + `\0` + `routing_key`. Fingerprinted with the payload (SPEC "Message
    /// consumers": a redelivered id with another subject or payload is a mismatch).
    fn subject(&self) -> &str;
    /// The message body.
    fn payload(&self) -> &Bytes;
    /// The transport's own message id: JetStream's `Nats-Msg-Id` header, AMQP's
    /// `message_id` property; the default key ([`crate::KeyFrom::MessageId`]).
    fn message_id(&self) -> Option<&str>;
    /// A header's value as text, if the message has it and it is UTF-8.
    fn header(&self, name: &str) -> Option<&str>;
    /// Where the message was consumed from, the default principal: `nats:<stream>/<durable>`
    /// or `amqp:<vhost>/<queue>`. Two applications consuming one stream through two
    /// durables (or two queues on one exchange) each run their own side effect, so the
    /// consumer is part of it, not just the stream.
    fn source(&self) -> &str;
    /// Which delivery of this message this is, from 1, if the broker says (JetStream's
    /// delivered count; a quorum queue's `x-delivery-count` + 1).
    fn attempt(&self) -> Option<u32>;
    /// Whether the broker delivered this message before (AMQP `redelivered`, JetStream
    /// delivered count over 1).
    fn redelivered(&self) -> bool;
}

/// One delivery of one message, settled once.
pub trait Delivery: DeliveryInfo + 'static {
    /// Acknowledges the message: the broker forgets it. Sent only once its record is completed.
    fn ack(self) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Gives the message back, to be delivered again after `after` (JetStream: a nak with
    /// this delay; RabbitMQ: hold the delivery this long, then `basic.nack` with requeue).
    fn nak(self, after: Duration) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Hands the message to the dead-letter path with `reason` and stops its redelivery.
    /// Dead-lettering is at least once: a crash between the copy and the settle copies it again.
    fn dead_letter(self, reason: DeadLetterReason) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Restarts the broker's redelivery timer for this delivery (JetStream `+WPI`); a no-op
    /// where the broker has none (RabbitMQ).
    fn in_progress(&self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Answers the message with its recorded outcome, just before the ack: a request/reply
    /// message's reply (AMQP `reply_to`). Called before every ack, the first execution's
    /// and every replay's, always with the recorded outcome, so every copy of a request
    /// gets the same answer (G2). Does nothing by default. An error leaves the message
    /// unacked: it is naked and its redelivery answers again (replies are at least once).
    fn answer(&self, outcome: &StoredOutcome) -> impl Future<Output = Result<(), TransportError>> + Send {
        let _ = outcome;
        async { Ok(()) }
    }
}

/// A source of deliveries: one broker consumer (a JetStream pull consumer, an AMQP
/// `basic.consume` on a queue).
pub trait Transport: Send + 'static {
    /// What this transport delivers.
    type Delivery: Delivery;

    /// The next delivery, waiting for one; `None` once the transport has stopped and will
    /// deliver no more. An error is counted and logged, and the consumer asks again
    /// after a pause (a broker that went away comes back or the consumer is shut down).
    fn next(&mut self) -> impl Future<Output = Option<Result<Self::Delivery, TransportError>>> + Send;

    /// Stops taking deliveries (JetStream: stop pulling; AMQP: `basic.cancel`). Deliveries
    /// already handed out can still be settled.
    fn stop(&mut self) -> impl Future<Output = ()> + Send;

    /// The broker's own redelivery timer, checked against the lease when the consumer is
    /// built ([`idem_core::consume::check_timers`]).
    fn redelivery_timer(&self) -> RedeliveryTimer;

    /// What every delivery's [`DeliveryInfo::source`] will be, if the transport knows it up
    /// front: the consumer checks at build that it makes a principal, so a bad one is a
    /// configuration error, not every message dead-lettered.
    fn source(&self) -> Option<&str> {
        None
    }
}
