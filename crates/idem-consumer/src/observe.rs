//! What the consumer reports: one `tracing` span per delivery, and metrics through the
//! [`metrics`] facade (names parallel idem-http's).
//!
//! | name | kind | labels | unit | counts |
//! |---|---|---|---|---|
//! | [`MESSAGES_TOTAL`] `idem_messages_total` | counter | `outcome` | deliveries | every delivery settled (or left to the broker), by [`Outcome::as_str`] |
//! | [`MESSAGE_DURATION_SECONDS`] `idem_message_duration_seconds` | histogram | `outcome` | seconds | from receiving the delivery to its settle |
//! | [`TRANSPORT_ERRORS_TOTAL`] `idem_transport_errors_total` | counter | `operation`, `error` | errors | failed broker calls: `operation` is `next`, `answer`, `ack`, `nak`, `dead_letter` or `in_progress`; `error` is `closed`, `stale` or `other` |
//! | [`MESSAGES_IN_FLIGHT`] `idem_messages_in_flight` | gauge | — | deliveries | deliveries received and not yet settled |
//! | `idem_store_errors_total` | counter | `operation`, `error` | errors | failed store calls (idem-once's [`idem_once::observe`]) |
//!
//! The span `idem_message` (target `idem_consumer`, level INFO) has the fields `key`,
//! `principal`, `subject`, `attempt`, `redelivered`, and `outcome` once settled; every event
//! the consumer logs for the delivery is inside it.

use idem_core::RecordId;
use tokio::time::Instant;
use tracing::Span;

use crate::transport::{DeliveryInfo, TransportError};

/// Counter of settled deliveries, label `outcome`.
pub const MESSAGES_TOTAL: &str = "idem_messages_total";
/// Histogram of the time from receiving a delivery to its settle, in seconds, label `outcome`.
pub const MESSAGE_DURATION_SECONDS: &str = "idem_message_duration_seconds";
/// Counter of failed broker calls, labels `operation` and `error`.
pub const TRANSPORT_ERRORS_TOTAL: &str = "idem_transport_errors_total";
/// Gauge of deliveries in flight.
pub const MESSAGES_IN_FLIGHT: &str = "idem_messages_in_flight";

/// What the consumer did with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The handler ran and its completion committed; acked.
    Executed,
    /// The record was completed before; acked without running.
    Replayed,
    /// Another claim holds the record: naked, to come back later.
    Conflict,
    /// Dead-lettered (mismatch, no key, a bad key, a record without an outcome, or a
    /// handler that kept failing).
    DeadLettered,
    /// The handler failed; its claim was released and the message naked.
    Released,
    /// The handler's claim was lost to a take-over; settled by the record as stored.
    Superseded,
    /// Separate mode: the side effect ran but its completion could not be recorded;
    /// naked, never acked (SPEC: an ack only after the completion committed).
    Unrecorded,
    /// The store failed before a claim: nothing ran; naked (G8).
    StoreFailed,
    /// Handling the delivery panicked outside the handler (a key function, a `replayed`
    /// hook); naked. A panic inside the handler is [`Outcome::Released`].
    Panicked,
}

impl Outcome {
    /// The metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Executed => "executed",
            Outcome::Replayed => "replayed",
            Outcome::Conflict => "conflict",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Released => "released",
            Outcome::Superseded => "superseded",
            Outcome::Unrecorded => "unrecorded",
            Outcome::StoreFailed => "store_failed",
            Outcome::Panicked => "panicked",
        }
    }
}

/// Describes the metrics to the recorder installed now, if any.
pub(crate) fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(MESSAGES_TOTAL, Unit::Count, "Deliveries settled by the idempotent consumer, by outcome.");
    describe_histogram!(MESSAGE_DURATION_SECONDS, Unit::Seconds, "Time from receiving a delivery to its settle.");
    describe_counter!(TRANSPORT_ERRORS_TOTAL, Unit::Count, "Failed broker calls, by operation and error.");
    describe_gauge!(MESSAGES_IN_FLIGHT, Unit::Count, "Deliveries received and not yet settled.");
    idem_once::observe::describe();
}

/// The span of one delivery.
pub(crate) fn message_span(info: &dyn DeliveryInfo) -> Span {
    tracing::info_span!(
        target: "idem_consumer",
        "idem_message",
        key = tracing::field::Empty,
        principal = tracing::field::Empty,
        subject = info.subject(),
        attempt = info.attempt(),
        redelivered = info.redelivered(),
        outcome = tracing::field::Empty,
    )
}

/// Records the record id on the span.
pub(crate) fn identified(span: &Span, id: &RecordId) {
    span.record("key", id.key.as_str());
    span.record("principal", id.principal.as_str());
}

/// Records a settled delivery.
pub(crate) fn settled(span: &Span, outcome: Outcome, started: Instant) {
    span.record("outcome", outcome.as_str());
    let label = outcome.as_str();
    metrics::counter!(MESSAGES_TOTAL, "outcome" => label).increment(1);
    metrics::histogram!(MESSAGE_DURATION_SECONDS, "outcome" => label).record(started.elapsed().as_secs_f64());
}

/// Counts a failed broker call.
pub(crate) fn transport_failed(operation: &'static str, error: &TransportError) {
    tracing::warn!(operation, %error, "broker call failed; the broker redelivers what was not settled");
    metrics::counter!(TRANSPORT_ERRORS_TOTAL, "operation" => operation, "error" => error.kind()).increment(1);
}
