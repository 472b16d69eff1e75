//! What a handler sees of a message, and where its key and principal come from.

use bytes::Bytes;
use idem_core::consume::{self, DeadLetterReason};
use idem_core::{Principal, RecordId};

use crate::transport::DeliveryInfo;

/// One message as its handler sees it: its record id and what the delivery says. A
/// handler cannot settle the delivery; the consumer does, after the record is completed.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    id: &'a RecordId,
    info: &'a dyn DeliveryInfo,
}

impl<'a> Message<'a> {
    pub(crate) fn new(id: &'a RecordId, info: &'a dyn DeliveryInfo) -> Message<'a> {
        Message { id, info }
    }

    /// The record id guarding this message: (principal, key).
    #[must_use]
    pub fn id(&self) -> &'a RecordId {
        self.id
    }

    /// The message body.
    #[must_use]
    pub fn payload(&self) -> &'a Bytes {
        self.info.payload()
    }

    /// What it was published to ([`DeliveryInfo::subject`]).
    #[must_use]
    pub fn subject(&self) -> &'a str {
        self.info.subject()
    }

    /// A header's value as text.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.info.header(name)
    }

    /// The transport's own message id, if any.
    #[must_use]
    pub fn message_id(&self) -> Option<&'a str> {
        self.info.message_id()
    }

    /// Which delivery of the message this is, from 1, if the broker says.
    #[must_use]
    pub fn attempt(&self) -> Option<u32> {
        self.info.attempt()
    }

    /// Whether the broker delivered it before.
    #[must_use]
    pub fn redelivered(&self) -> bool {
        self.info.redelivered()
    }
}

/// Where a message's idempotency key comes from (SPEC "Message consumers"). A message
/// without a key, or with one that is not a key (1..=255 visible ASCII characters), is
/// dead-lettered (`key-missing`, `key-invalid`), never run unguarded.
#[derive(Clone, Debug, Default)]
pub enum KeyFrom {
    /// The transport's message id: JetStream `Nats-Msg-Id`, AMQP `message_id`.
    #[default]
    MessageId,
    /// A header's value.
    Header(String),
    /// A function of the message (e.g. an id inside the payload).
    Fn(fn(&dyn DeliveryInfo) -> Option<String>),
}

/// Where a message's principal comes from: records are scoped by it (G4).
#[derive(Clone, Debug, Default)]
pub enum PrincipalFrom {
    /// Where the message was consumed from ([`DeliveryInfo::source`]): the stream and
    /// durable consumer, or the vhost and queue. Two applications reading one stream each
    /// run their own side effect.
    #[default]
    Source,
    /// One principal for every message.
    Fixed(Principal),
    /// A function of the message (e.g. a tenant header).
    Fn(fn(&dyn DeliveryInfo) -> Option<String>),
}

/// The record id of a message, or why it cannot be guarded.
pub(crate) fn record_id(
    info: &dyn DeliveryInfo,
    key_from: &KeyFrom,
    principal_from: &PrincipalFrom,
) -> Result<RecordId, DeadLetterReason> {
    let key = match key_from {
        KeyFrom::MessageId => consume::message_key(info.message_id()),
        KeyFrom::Header(name) => consume::message_key(info.header(name)),
        KeyFrom::Fn(key_of) => consume::message_key(key_of(info).as_deref()),
    }?;
    let principal = match principal_from {
        PrincipalFrom::Source => Principal::new(info.source()),
        PrincipalFrom::Fixed(principal) => Ok(principal.clone()),
        PrincipalFrom::Fn(principal_of) => Principal::new(&principal_of(info).ok_or(DeadLetterReason::KeyMissing)?),
    };
    let principal = principal.map_err(|error| {
        tracing::error!(%error, source = info.source(), "the message's principal is not a principal");
        DeadLetterReason::KeyInvalid
    })?;
    Ok(RecordId::new(principal, key))
}
