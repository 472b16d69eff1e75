//! Dead-lettering a JetStream message: JetStream has no dead-letter queue of its own (its
//! `+TERM` only stops redelivery), so the adapter publishes a copy to a subject a stream
//! captures, awaits that stream's ack, and only then terminates the original.

use async_nats::HeaderMap;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::Message;
use async_nats::jetstream::message::PublishMessage;
use idem_consumer::TransportError;
use idem_core::DeadLetterReason;

use crate::error::transport_error;

/// Why the message was dead-lettered: [`DeadLetterReason::as_str`] (`key-reused`, ...).
pub const REASON_HEADER: &str = "Idem-Dead-Letter-Reason";
/// The subject the original was published to.
pub const ORIGINAL_SUBJECT_HEADER: &str = "Idem-Original-Subject";
/// The stream the original is stored in.
pub const ORIGINAL_STREAM_HEADER: &str = "Idem-Original-Stream";
/// The original's sequence in its stream.
pub const ORIGINAL_SEQUENCE_HEADER: &str = "Idem-Original-Sequence";

/// The headers of the copy: the original's own headers except the server's `Nats-*` ones
/// (a `Nats-Expected-*` header would make the copy's publish fail), then the reason, the
/// original subject, stream and sequence, and a `Nats-Msg-Id`: the original's, or
/// `<stream>:<sequence>` for a message that has none, so publishing the copy again after a
/// crash is deduplicated by the dead-letter stream inside its duplicate window.
pub(crate) fn headers(message: &Message, reason: DeadLetterReason, stream_sequence: Option<u64>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(original) = &message.headers {
        for (name, values) in original.iter() {
            let name_text: &str = name.as_ref();
            let server_owned = name_text.get(..5).is_some_and(|prefix| prefix.eq_ignore_ascii_case("nats-"));
            if server_owned {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    let stream = message.info().ok().map(|info| info.stream.to_owned());
    headers.insert(REASON_HEADER, reason.as_str());
    headers.insert(ORIGINAL_SUBJECT_HEADER, message.subject.as_str());
    if let Some(stream) = &stream {
        headers.insert(ORIGINAL_STREAM_HEADER, stream.as_str());
    }
    if let Some(sequence) = stream_sequence {
        headers.insert(ORIGINAL_SEQUENCE_HEADER, sequence.to_string());
    }
    let original_id = message.headers.as_ref().and_then(|h| h.get(NATS_MESSAGE_ID)).map(|v| v.as_str().to_owned());
    let id = match (original_id, stream, stream_sequence) {
        (Some(id), _, _) => Some(id),
        (None, Some(stream), Some(sequence)) => Some(format!("{stream}:{sequence}")),
        _ => None,
    };
    if let Some(id) = id {
        headers.insert(NATS_MESSAGE_ID, id);
    }
    headers
}

/// Publishes the copy of `message` to `subject` and waits for its stream's ack.
pub(crate) async fn publish(
    message: &Message,
    subject: &str,
    reason: DeadLetterReason,
    stream_sequence: Option<u64>,
) -> Result<(), TransportError> {
    let copy =
        PublishMessage::build().payload(message.payload.clone()).headers(headers(message, reason, stream_sequence));
    let ack = message
        .context
        .send_publish(subject.to_owned(), copy)
        .await
        .map_err(|error| transport_error(message, error.into()))?;
    ack.await.map_err(|error| transport_error(message, error.into()))?;
    Ok(())
}
