//! Errors: [`RabbitError`] when a transport is built, and the mapping of lapin's errors to
//! [`TransportError`] once it runs.

use idem_consumer::TransportError;
use lapin::ErrorKind;

/// Why a [`crate::RabbitTransport`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RabbitError {
    /// A name AMQP carries as a short string is empty where it must not be, or over 255 bytes.
    #[error("the {what} {name:?} is not a valid AMQP name (1 to 255 bytes)")]
    InvalidName {
        /// Which name: the queue, the dead-letter exchange, ...
        what: &'static str,
        /// The name as given.
        name: String,
    },
    /// The prefetch (the in-flight bound) is zero or over AMQP's 65 535.
    #[error("prefetch {0} is out of range: it must be 1..=65535 (AMQP's prefetch_count is 16 bits)")]
    InvalidPrefetch(usize),
    /// The consumer timeout is zero; RabbitMQ's is at least one minute.
    #[error("consumer_timeout must be over zero (RabbitMQ's default is 30 min, its minimum one minute)")]
    InvalidConsumerTimeout,
    /// Reopen attempts is zero: a closed channel could never be consumed again.
    #[error("reopen_attempts must be at least 1")]
    InvalidReopenAttempts,
    /// The broker could not be reached, or refused the login or the virtual host.
    #[error("could not connect to RabbitMQ: {0}")]
    Connect(#[source] lapin::Error),
    /// The broker refused the consumer (no such queue, access refused, exclusive use).
    #[error("could not consume queue {queue:?}: {source}")]
    Consume {
        /// The queue.
        queue: String,
        /// What the broker or client said.
        #[source]
        source: lapin::Error,
    },
}

/// What the consumer can do about a lapin error: a channel or connection that is gone
/// (the broker redelivers what was unsettled on it) is [`TransportError::Closed`]; AMQP
/// closes the channel on every soft error too, so protocol errors are `Closed` as well.
pub(crate) fn transport_error(error: lapin::Error) -> TransportError {
    match error.kind() {
        ErrorKind::InvalidChannel(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::IOError(_)
        | ErrorKind::ProtocolError(_)
        | ErrorKind::MissingHeartbeatError => {
            tracing::debug!(target: "idem_rabbitmq", %error, "channel or connection closed");
            TransportError::Closed
        }
        _ => TransportError::other(error),
    }
}

/// An acker's answer as a settle result. lapin answers `Ok(false)` for an acker that is
/// poisoned (its channel closed: the broker has requeued the message) or already used
/// (impossible here: settling consumes the delivery).
pub(crate) fn settled(result: lapin::Result<bool>) -> Result<(), TransportError> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(TransportError::Closed),
        Err(error) => Err(transport_error(error)),
    }
}
