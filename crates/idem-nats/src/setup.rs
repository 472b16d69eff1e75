//! What a JetStream consumer must look like before idem consumes from it, checked once at
//! construction ([`crate::NatsTransport::new`]), so a wrong setting is a clear error at start
//! rather than a lost or doubled side effect later.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::context::{Context, GetStreamByNameErrorKind};
use idem_core::Policy;

/// The lowest finite `max_deliver` accepted. Every redelivery counts toward it: a crashed
/// holder's message (one), each "in flight elsewhere" nak while another consumer holds the
/// record, each handler failure. At the limit JetStream stops redelivering and the message
/// stays unacked in the stream, never run to completion, so a limit close to 1 turns
/// ordinary conflicts into lost messages. `-1` (no limit) is the recommended setting;
/// bound poison messages with the consumer's `Redelivery::handler_attempts_max` instead,
/// which dead-letters them.
pub const MAX_DELIVER_MIN: i64 = 10;

/// How many messages the transport asks JetStream for at a time, by default: the consumer's
/// own default in-flight bound (`ConsumerBuilder::in_flight_max`).
pub const IN_FLIGHT_MAX_DEFAULT: usize = idem_consumer::IN_FLIGHT_MAX_DEFAULT;

/// How the transport pulls and where it dead-letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    in_flight_max: usize,
    dead_letter_subject: Option<String>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions { in_flight_max: IN_FLIGHT_MAX_DEFAULT, dead_letter_subject: None }
    }
}

impl NatsOptions {
    /// Pull up to `n` messages per batch: set it to the consumer's `in_flight_max`, so the
    /// messages the client holds unhandled stay few (their `ack_wait` runs while they wait).
    #[must_use]
    pub fn in_flight_max(mut self, n: usize) -> Self {
        self.in_flight_max = n;
        self
    }

    /// Publish dead letters to `subject` (which a stream other than the consumed one must
    /// capture), then terminate them. Without one, a dead letter is terminated and logged.
    #[must_use]
    pub fn dead_letter_subject(mut self, subject: impl Into<String>) -> Self {
        self.dead_letter_subject = Some(subject.into());
        self
    }

    /// The pull batch size.
    #[must_use]
    pub fn batch(&self) -> usize {
        self.in_flight_max
    }

    /// The dead-letter subject, if any.
    #[must_use]
    pub fn dead_letter(&self) -> Option<&str> {
        self.dead_letter_subject.as_deref()
    }
}

/// Why a consumer cannot be used, or could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The consumer's stream or the consumer itself could not be looked up.
    #[error("JetStream consumer {stream}/{consumer} could not be read: {source}")]
    Lookup {
        /// The stream name.
        stream: String,
        /// The consumer name.
        consumer: String,
        /// What the client said.
        #[source]
        source: async_nats::Error,
    },
    /// An ephemeral consumer has a made-up name that changes on every start; the name is
    /// part of each record's principal, so a restart would forget every completed message.
    #[error("consumer {consumer} is not durable: give it a durable_name, it is part of every record's principal")]
    NotDurable {
        /// The consumer name.
        consumer: String,
    },
    /// Only explicit acks let idem ack a message after its completion committed, and no other.
    #[error("consumer {consumer} has ack policy {found:?}: idem needs AckPolicy::Explicit")]
    AckPolicy {
        /// The consumer name.
        consumer: String,
        /// The policy it has.
        found: AckPolicy,
    },
    /// A finite delivery limit below [`MAX_DELIVER_MIN`]: conflicts and crashes would use up
    /// a message's deliveries before it ran to completion.
    #[error(
        "consumer {consumer} has max_deliver {max_deliver}, below {min}: set -1 (no limit) and bound handler failures with handler_attempts_max"
    )]
    MaxDeliverTooLow {
        /// The consumer name.
        consumer: String,
        /// Its limit.
        max_deliver: i64,
        /// The lowest accepted.
        min: i64,
    },
    /// An in-flight bound of zero would never pull a message.
    #[error("in_flight_max must be at least 1")]
    InFlightMaxZero,
    /// The dead-letter subject is not a valid publish subject (empty, or with wildcards or spaces).
    #[error("dead-letter subject {subject:?} is not a publish subject")]
    DeadLetterInvalid {
        /// The subject.
        subject: String,
    },
    /// No stream captures the dead-letter subject: every dead letter would fail to publish
    /// and its message would come back forever.
    #[error("no JetStream stream captures dead-letter subject {subject:?}")]
    DeadLetterUnbound {
        /// The subject.
        subject: String,
    },
    /// The consumed stream itself captures the dead-letter subject, so dead letters would
    /// be delivered to this consumer again.
    #[error("dead-letter subject {subject:?} is captured by the consumed stream {stream}: use a stream of its own")]
    DeadLetterLoop {
        /// The subject.
        subject: String,
        /// The stream.
        stream: String,
    },
    /// The dead-letter subject's stream could not be looked up.
    #[error("the stream of dead-letter subject {subject:?} could not be looked up: {source}")]
    DeadLetterLookup {
        /// The subject.
        subject: String,
        /// What the client said.
        #[source]
        source: async_nats::Error,
    },
    /// The pull subscription could not be started.
    #[error("pulling from consumer {consumer} failed: {source}")]
    Pull {
        /// The consumer name.
        consumer: String,
        /// What the client said.
        #[source]
        source: async_nats::Error,
    },
}

/// Checks a consumer's configuration as the server reports it.
///
/// # Errors
/// [`SetupError::NotDurable`], [`SetupError::AckPolicy`], [`SetupError::MaxDeliverTooLow`].
pub fn check_consumer(info: &async_nats::jetstream::consumer::Info) -> Result<(), SetupError> {
    let consumer = info.name.clone();
    let config = &info.config;
    if config.durable_name.is_none() {
        return Err(SetupError::NotDurable { consumer });
    }
    if config.ack_policy != AckPolicy::Explicit {
        return Err(SetupError::AckPolicy { consumer, found: config.ack_policy });
    }
    // The server reports "no limit" as -1; 0 is its "use the default" (also no limit).
    if config.max_deliver > 0 && config.max_deliver < MAX_DELIVER_MIN {
        return Err(SetupError::MaxDeliverTooLow { consumer, max_deliver: config.max_deliver, min: MAX_DELIVER_MIN });
    }
    Ok(())
}

/// Checks that `subject` is published into a stream, and not into `consumed`.
pub(crate) async fn check_dead_letter(js: &Context, subject: &str, consumed: &str) -> Result<(), SetupError> {
    let invalid = subject.is_empty() || subject.contains(['*', '>', ' ', '\t', '\r', '\n']);
    if invalid {
        return Err(SetupError::DeadLetterInvalid { subject: subject.to_owned() });
    }
    match js.stream_by_subject(subject).await {
        Ok(stream) if stream == consumed => Err(SetupError::DeadLetterLoop { subject: subject.to_owned(), stream }),
        Ok(_) => Ok(()),
        Err(error) if error.kind() == GetStreamByNameErrorKind::NotFound => {
            Err(SetupError::DeadLetterUnbound { subject: subject.to_owned() })
        }
        Err(error) => Err(SetupError::DeadLetterLookup { subject: subject.to_owned(), source: error.into() }),
    }
}

/// A durable pull consumer configured as idem needs it for `policy`: explicit acks,
/// `ack_wait` = lease + renewal interval (a crashed holder's message returns just after its
/// lease lapsed, so it is taken over at once), no delivery limit, and `max_ack_pending` at
/// `in_flight_max` per consumer process times `processes`.
#[must_use]
pub fn recommended_consumer(durable: &str, policy: &Policy, in_flight_max: usize, processes: usize) -> pull::Config {
    let ack_pending = in_flight_max.saturating_mul(processes.max(1));
    pull::Config {
        durable_name: Some(durable.to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: idem_core::consume::recommended_ack_wait(policy),
        max_deliver: -1,
        max_ack_pending: i64::try_from(ack_pending).unwrap_or(i64::MAX),
        ..pull::Config::default()
    }
}

/// The consumer's `ack_wait`, with the server's default (30 s) where it reports none.
pub(crate) fn ack_wait(config: &async_nats::jetstream::consumer::Config) -> Duration {
    if config.ack_wait.is_zero() { Duration::from_secs(30) } else { config.ack_wait }
}
