//! Dead-lettering an AMQP delivery: a copy published to a configured exchange under
//! publisher confirms, then the original acked; or, with none configured, the original
//! rejected without requeue so the queue's own dead-letter exchange (if any) takes it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use idem_consumer::TransportError;
use idem_core::consume::DeadLetterReason;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, ShortString};
use lapin::{Confirmation, message::Delivery};

use crate::error::{settled, transport_error};
use crate::link::Link;

/// The header a dead-lettered copy carries its reason in ([`DeadLetterReason::as_str`]).
pub const REASON_HEADER: &str = "idem-dead-letter-reason";
/// The header a dead-lettered copy names its source queue in (`amqp:<vhost>/<queue>`).
pub const SOURCE_HEADER: &str = "idem-dead-letter-source";

/// How a delivery is dead-lettered; shared by every delivery of one transport.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    pub(crate) target: Option<(ShortString, ShortString)>,
    pub(crate) link: Arc<Link>,
    pub(crate) source: Arc<str>,
    /// How long a delivery whose copy could not be published is held before it is
    /// requeued, so a broker that refuses the copy is not asked again in a tight loop.
    pub(crate) retry_after: Duration,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Link")
    }
}

impl DeadLetter {
    pub(crate) async fn settle(
        &self,
        delivery: &Delivery,
        payload: &Bytes,
        reason: DeadLetterReason,
    ) -> Result<(), TransportError> {
        let message_id = delivery.properties.message_id().as_ref().map(ShortString::as_str);
        let Some((exchange, routing_key)) = &self.target else {
            tracing::warn!(target: "idem_rabbitmq", reason = reason.as_str(), message_id, source = %self.source,
                "dead-lettering by reject without requeue: the queue's own dead-letter exchange takes it, if it has one");
            return settled(delivery.acker.reject(BasicRejectOptions { requeue: false }).await);
        };
        match self.publish(delivery, payload, reason, exchange, routing_key).await {
            // At least once: if this ack is lost, the redelivery is a mismatch again and
            // is copied again.
            Ok(()) => settled(delivery.acker.ack(BasicAckOptions::default()).await),
            Err(error) => {
                tracing::warn!(target: "idem_rabbitmq", reason = reason.as_str(), message_id, %error,
                    "the dead-letter copy was not confirmed; the message is requeued to be dead-lettered again");
                tokio::time::sleep(self.retry_after).await;
                // The copy failed; whatever this nack does, the error to report is the copy's.
                let _ = delivery.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await;
                Err(error)
            }
        }
    }

    async fn publish(
        &self,
        delivery: &Delivery,
        payload: &Bytes,
        reason: DeadLetterReason,
        exchange: &ShortString,
        routing_key: &ShortString,
    ) -> Result<(), TransportError> {
        let channel = self.link.confirm_channel().await.map_err(transport_error)?;
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(REASON_HEADER.into(), AMQPValue::LongString(reason.as_str().into()));
        headers.insert(SOURCE_HEADER.into(), AMQPValue::LongString(self.source.as_bytes().into()));
        // Every property is kept (message_id above all, so the copy names its original).
        let properties = delivery.properties.clone().with_headers(headers);
        // mandatory: a copy no queue is bound to take comes back instead of vanishing.
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let confirm = channel
            .basic_publish(exchange.clone(), routing_key.clone(), options, payload, properties)
            .await
            .map_err(transport_error)?;
        match crate::link::confirmed(confirm).await? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(TransportError::other(format!(
                "the dead-letter copy was unroutable: no queue is bound to exchange {exchange:?} with key {routing_key:?}"
            ))),
            Confirmation::Nack(_) => Err(TransportError::other("the broker refused the dead-letter copy (nack)")),
            Confirmation::NotRequested => Err(TransportError::other("the dead-letter channel is not in confirm mode")),
        }
    }
}
