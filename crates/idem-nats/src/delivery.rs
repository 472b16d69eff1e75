//! One JetStream delivery as an [`idem_consumer::Delivery`].

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderName;
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use idem_consumer::{Delivery, DeliveryInfo, TransportError};
use idem_core::DeadLetterReason;

use crate::dead_letter;
use crate::error::transport_error;

/// What every delivery of one transport shares.
#[derive(Debug)]
pub(crate) struct Origin {
    /// `nats:<stream>/<durable>`, the default principal.
    pub(crate) source: String,
    /// Where dead letters go, if anywhere.
    pub(crate) dead_letter_subject: Option<String>,
}

/// One delivery of a JetStream message, from [`crate::NatsTransport`].
///
/// - `ack` is a double ack: it returns once the server confirmed it, so an `Ok` means the
///   message will not come back (nats-server 2.9.10 answers it).
/// - `nak(after)` is `-NAK {"delay": after}`: the server redelivers after `after`, and that
///   counts toward `max_deliver`.
/// - `in_progress` is `+WPI`: the server restarts the message's `ack_wait`.
/// - `dead_letter` publishes a copy to the dead-letter subject (if one is configured) and
///   awaits its stream's ack, then terminates the message (`+TERM`, confirmed). A crash in
///   between publishes the copy again on redelivery: at least once, deduplicated by the
///   dead-letter stream on `Nats-Msg-Id` within its duplicate window.
///
/// JetStream cannot say an ack came too late (it answers an ack for a message it already
/// redelivered like any other), so settling never reports [`TransportError::Stale`].
#[derive(Debug)]
pub struct NatsDelivery {
    message: Message,
    origin: Arc<Origin>,
    delivered: Option<u32>,
    stream_sequence: Option<u64>,
}

impl NatsDelivery {
    pub(crate) fn new(message: Message, origin: Arc<Origin>) -> NatsDelivery {
        let (delivered, stream_sequence) = match message.info() {
            Ok(info) => (u32::try_from(info.delivered).ok(), Some(info.stream_sequence)),
            Err(_) => (None, None),
        };
        NatsDelivery { message, origin, delivered, stream_sequence }
    }

    /// The message's sequence in its stream, if its reply subject says.
    #[must_use]
    pub fn stream_sequence(&self) -> Option<u64> {
        self.stream_sequence
    }

    /// The JetStream message itself.
    #[must_use]
    pub fn message(&self) -> &Message {
        &self.message
    }

    async fn settle(&self, kind: AckKind) -> Result<(), TransportError> {
        self.message.ack_with(kind).await.map_err(|error| transport_error(&self.message, error))
    }

    async fn settle_confirmed(&self, kind: AckKind) -> Result<(), TransportError> {
        self.message.double_ack_with(kind).await.map_err(|error| transport_error(&self.message, error))
    }
}

impl DeliveryInfo for NatsDelivery {
    fn subject(&self) -> &str {
        self.message.subject.as_str()
    }

    fn payload(&self) -> &Bytes {
        &self.message.payload
    }

    fn message_id(&self) -> Option<&str> {
        let headers = self.message.headers.as_ref()?;
        headers.get(async_nats::header::NATS_MESSAGE_ID).map(|value| value.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        // Not `headers.get(name)`: it panics on a name that is not a header name, and the
        // name here may come from configuration.
        let name = HeaderName::from_str(name).ok()?;
        self.message.headers.as_ref()?.get(name).map(|value| value.as_str())
    }

    fn source(&self) -> &str {
        &self.origin.source
    }

    fn attempt(&self) -> Option<u32> {
        self.delivered
    }

    fn redelivered(&self) -> bool {
        self.delivered.is_some_and(|delivered| delivered > 1)
    }
}

impl Delivery for NatsDelivery {
    async fn ack(self) -> Result<(), TransportError> {
        self.settle_confirmed(AckKind::Ack).await
    }

    async fn nak(self, after: Duration) -> Result<(), TransportError> {
        let delay = if after.is_zero() { None } else { Some(after) };
        self.settle(AckKind::Nak(delay)).await
    }

    async fn dead_letter(self, reason: DeadLetterReason) -> Result<(), TransportError> {
        match &self.origin.dead_letter_subject {
            Some(subject) => {
                dead_letter::publish(&self.message, subject, reason, self.stream_sequence).await?;
            }
            None => tracing::warn!(
                target: "idem_nats",
                subject = self.message.subject.as_str(),
                message_id = self.message_id(),
                stream_sequence = self.stream_sequence,
                reason = reason.as_str(),
                "dead letter terminated with no dead-letter subject configured: the message is dropped"
            ),
        }
        self.settle_confirmed(AckKind::Term).await
    }

    async fn in_progress(&self) -> Result<(), TransportError> {
        self.settle(AckKind::Progress).await
    }
}
