//! How a NATS client error reads to the consumer loop: closed (stop) or other (retry or
//! redeliver), for the delivery's settles, the dead-letter copy and the pull loop alike.

use async_nats::connection::State;
use async_nats::jetstream::Message;
use async_nats::jetstream::context::{PublishError as JsPublishError, PublishErrorKind as JsPublishErrorKind};
use async_nats::{PublishErrorKind, SubscribeErrorKind};
use idem_consumer::TransportError;

/// A client error as the consumer sees it: [`TransportError::Closed`] when the client is
/// closed (its publish or subscribe cannot reach the connection any more: a drained or
/// dropped client) or not connected (it buffers publishes while reconnecting, so a settle
/// may be lost then, and a double ack times out), else [`TransportError::Other`].
pub(crate) fn transport_error(message: &Message, error: async_nats::Error) -> TransportError {
    if client_closed(&*error) || message.context.client().connection_state() != State::Connected {
        return TransportError::Closed;
    }
    TransportError::other(error)
}

/// Whether `error`, or an error it wraps, says the client can no longer reach its connection.
pub(crate) fn client_closed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        let closed =
            error.downcast_ref::<async_nats::PublishError>().is_some_and(|e| e.kind() == PublishErrorKind::Send)
                || error
                    .downcast_ref::<async_nats::SubscribeError>()
                    .is_some_and(|e| e.kind() == SubscribeErrorKind::Other)
                || error.downcast_ref::<JsPublishError>().is_some_and(|e| e.kind() == JsPublishErrorKind::BrokenPipe);
        if closed {
            return true;
        }
        next = error.source();
    }
    false
}
