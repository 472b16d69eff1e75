//! Answering a request message (`reply_to` + `correlation_id`, AMQP's RPC pattern) with
//! its recorded outcome, so a duplicate or a redelivery gets the same answer byte for byte
//! as the first delivery (G2 read for messages).

use idem_consumer::TransportError;
use idem_core::StoredOutcome;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;

use crate::delivery::RabbitDelivery;
use crate::error::transport_error;

impl RabbitDelivery {
    /// Publishes `outcome` (the record's, byte for byte, with its content type) to the
    /// message's `reply_to` queue through the default exchange, with the message's
    /// `correlation_id` and `message_id`, and waits for the broker's confirm. `Ok(false)`:
    /// the message asked for no reply.
    ///
    /// Call it with the recorded outcome only: from `replayed` for a completed record, and
    /// after the completion committed for an execution, so every answer is the stored one.
    /// A reply whose requester has gone (no such queue) is dropped by the broker, as AMQP's
    /// RPC pattern expects; it is not an error.
    ///
    /// # Errors
    /// [`TransportError`]: the reply could not be published or was not confirmed.
    pub async fn reply(&self, outcome: &StoredOutcome) -> Result<bool, TransportError> {
        let request = self.properties();
        let Some(reply_to) = request.reply_to().clone() else {
            return Ok(false);
        };
        let mut properties = BasicProperties::default();
        if let Ok(content_type) = ShortString::try_new(outcome.content_type.as_str()) {
            properties = properties.with_content_type(content_type);
        }
        if let Some(correlation_id) = request.correlation_id().clone() {
            properties = properties.with_correlation_id(correlation_id);
        }
        if let Some(message_id) = request.message_id().clone() {
            properties = properties.with_message_id(message_id);
        }
        let channel = self.link().confirm_channel().await.map_err(transport_error)?;
        let confirm = channel
            .basic_publish(ShortString::default(), reply_to, BasicPublishOptions::default(), &outcome.bytes, properties)
            .await
            .map_err(transport_error)?;
        let confirmation = crate::link::confirmed(confirm).await?;
        if confirmation.is_ack() { Ok(true) } else { Err(TransportError::other("the broker refused the reply (nack)")) }
    }
}
