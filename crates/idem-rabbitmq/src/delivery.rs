//! [`RabbitDelivery`]: one AMQP delivery as the consumer sees it.

use idem_core::StoredOutcome;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use idem_consumer::{Delivery, DeliveryInfo, TransportError};
use idem_core::consume::DeadLetterReason;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::AMQPValue;

use crate::dead_letter::DeadLetter;
use crate::error::settled;

/// The header a quorum queue counts a message's earlier deliveries in.
const DELIVERY_COUNT: &str = "x-delivery-count";

/// One delivery from a [`crate::RabbitTransport`]: what the message says
/// ([`DeliveryInfo`]) and how it is settled ([`Delivery`]).
///
/// * `subject` is `exchange` + `\0` + `routing_key` (the default exchange is the empty
///   string), so a message published elsewhere under a reused `message_id` is a mismatch.
/// * `attempt` is a quorum queue's `x-delivery-count` + 1; classic queues do not count.
/// * `nak(after)` holds the delivery for `after`, then `basic.nack` with requeue: RabbitMQ
///   has no delayed nack (plan B6). The held delivery keeps its prefetch slot meanwhile.
/// * `in_progress` does nothing: AMQP has no in-progress ack; the consumer timeout is
///   checked against the lease when the consumer is built instead (crate docs).
#[derive(Debug)]
pub struct RabbitDelivery {
    delivery: lapin::message::Delivery,
    payload: Bytes,
    subject: String,
    source: Arc<str>,
    dead_letter: Arc<DeadLetter>,
}

impl RabbitDelivery {
    pub(crate) fn new(mut delivery: lapin::message::Delivery, source: Arc<str>, dead_letter: Arc<DeadLetter>) -> Self {
        let payload = Bytes::from(std::mem::take(&mut delivery.data));
        let subject = format!("{}\0{}", delivery.exchange, delivery.routing_key);
        RabbitDelivery { delivery, payload, subject, source, dead_letter }
    }

    /// The AMQP properties (headers, `reply_to`, `correlation_id`, ...), for what
    /// [`DeliveryInfo`] does not carry.
    #[must_use]
    pub fn properties(&self) -> &lapin::BasicProperties {
        &self.delivery.properties
    }

    pub(crate) fn link(&self) -> &crate::link::Link {
        &self.dead_letter.link
    }

    /// The delivery tag on its channel.
    #[must_use]
    pub fn delivery_tag(&self) -> u64 {
        self.delivery.delivery_tag
    }
}

impl DeliveryInfo for RabbitDelivery {
    fn subject(&self) -> &str {
        &self.subject
    }

    fn payload(&self) -> &Bytes {
        &self.payload
    }

    fn message_id(&self) -> Option<&str> {
        self.delivery.properties.message_id().as_ref().map(lapin::types::ShortString::as_str)
    }

    fn header(&self, name: &str) -> Option<&str> {
        match self.delivery.properties.headers().as_ref()?.inner().get(name)? {
            AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
            AMQPValue::ShortString(value) => Some(value.as_str()),
            _ => None,
        }
    }

    fn source(&self) -> &str {
        &self.source
    }

    fn attempt(&self) -> Option<u32> {
        let value = self.delivery.properties.headers().as_ref()?.inner().get(DELIVERY_COUNT)?;
        let earlier = integer(value)?;
        u32::try_from(earlier).ok()?.checked_add(1)
    }

    fn redelivered(&self) -> bool {
        self.delivery.redelivered
    }
}

/// A header's integer value, whatever width the broker chose (RabbitMQ sends `long long`).
fn integer(value: &AMQPValue) -> Option<i64> {
    Some(match *value {
        AMQPValue::ShortShortInt(v) => i64::from(v),
        AMQPValue::ShortShortUInt(v) => i64::from(v),
        AMQPValue::ShortInt(v) => i64::from(v),
        AMQPValue::ShortUInt(v) => i64::from(v),
        AMQPValue::LongInt(v) => i64::from(v),
        AMQPValue::LongUInt(v) => i64::from(v),
        AMQPValue::LongLongInt(v) => v,
        _ => return None,
    })
}

impl Delivery for RabbitDelivery {
    /// Publishes the recorded outcome to the message's `reply_to`, if it has one
    /// ([`RabbitDelivery::reply`]), before every ack: a duplicate request gets the same reply.
    async fn answer(&self, outcome: &StoredOutcome) -> Result<(), TransportError> {
        self.reply(outcome).await.map(|_replied| ())
    }

    async fn ack(self) -> Result<(), TransportError> {
        settled(self.delivery.acker.ack(BasicAckOptions::default()).await)
    }

    async fn nak(self, after: Duration) -> Result<(), TransportError> {
        if !after.is_zero() {
            tokio::time::sleep(after).await;
        }
        settled(self.delivery.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await)
    }

    async fn dead_letter(self, reason: DeadLetterReason) -> Result<(), TransportError> {
        self.dead_letter.settle(&self.delivery, &self.payload, reason).await
    }

    async fn in_progress(&self) -> Result<(), TransportError> {
        Ok(())
    }
}
