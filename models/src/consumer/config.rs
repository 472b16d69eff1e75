//! What to check in the consumer configuration: consumers, messages and their publishes,
//! the broker's redelivery kind, the mode, the fault budgets, and the variant.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use crate::config::{ConfigError, Mode};

/// At most this many consumers (two already race on every duplicate).
pub const CONSUMERS_MAX: u8 = 2;
/// At most this many distinct message ids (the plan's bound, R9: the state space grows
/// exponentially with each).
pub const MESSAGES_MAX: u8 = 2;
/// At most this many deliveries a consumer runs at once.
pub const IN_FLIGHT_MAX: u8 = 2;
/// At most this many faults of one kind.
pub const CONSUMER_FAULTS_MAX: u8 = 2;
/// At most this many handler attempts when they are bounded.
pub const HANDLER_ATTEMPTS_MAX: u32 = 4;

/// How the broker brings an unacked message back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BrokerKind {
    /// JetStream-like: a delivery has an ack deadline (`ack_wait`, here idem-core's
    /// recommended one: a lease and a renewal interval); an in-progress ack after each
    /// applied renewal moves it; past it the message is redelivered.
    AckWait,
    /// RabbitMQ-like: no in-progress ack and no timer of its own that the model reaches (the
    /// consumer timeout is far longer than a lease); a consumer's channel closing (a crash, a
    /// broken connection, the consumer timeout) requeues every copy it holds, at once.
    ChannelClose,
}

/// Which consumer code runs: the shipped rules, or one with a planted bug.
///
/// A bug never copies a rule of idem-core: it changes when the consumer acks, where its
/// side effect commits, or whether it writes its claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConsumerVariant {
    /// The consumer as the rules of `idem_core::consume` say.
    Correct,
    /// Acks as soon as the handler returns (its side effect written), and completes in the
    /// next step.
    AckBeforeCompletion,
    /// The hand-rolled inbox: claims, but the side effect commits at once and the dedup
    /// record (the completion) is written in a later step, outside the side effect's
    /// transaction, even in atomic mode.
    DedupOutsideTransaction,
    /// Looks the record up, runs if it is absent, and writes the record only with the
    /// completion: no claim is ever written, so two consumers racing on a duplicate both run.
    CheckThenAct,
}

/// Fault budgets; each fault spends one when it happens, which keeps the model finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConsumerFaults {
    /// Consumer crashes: its running handlers are lost (a pending write rolls back), also
    /// between the completion's commit and the ack. Under `ChannelClose` its channel closes.
    pub crashes: u8,
    /// Stalls: a running handler stops renewing its lease and sending progress, so its lease
    /// and (under `AckWait`) its ack deadline may pass while it still runs.
    pub stalls: u8,
    /// Acks lost on their way. Under `AckWait` the copy stays out until its deadline; under
    /// `ChannelClose` an ack is lost only with its connection, so the channel closes.
    pub lost_acks: u8,
    /// The broker gives up on a live handler's copy: under `AckWait` its ack deadline runs
    /// out anyway (a lost in-progress ack) and the copy is redelivered; under `ChannelClose`
    /// the consumer's channel closes (the consumer timeout, a broken connection) and all its
    /// copies are requeued while its handlers keep running.
    pub timeouts: u8,
    /// Store outages: the next store call fails.
    pub outages: u8,
    /// Handler failures, before the side effect or after it (the claim is released).
    pub failures: u8,
}

/// A configuration of the consumer model; [`ConsumerConfig::into_model`] builds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Consumers on the same queue or durable consumer, sharing one store.
    pub consumers: u8,
    /// How many deliveries one consumer runs at once (its prefetch, `in_flight_max`).
    pub in_flight_max: u8,
    /// Distinct message ids (`m1`, `m2`), each published once with its payload.
    pub messages: u8,
    /// `m1` is published a second time with the same payload (past the broker's dedup).
    pub duplicate_publish: bool,
    /// `m1` is published again with another payload (the key reused: G5).
    pub mismatch_publish: bool,
    /// Atomic or separate side effects.
    pub mode: Mode,
    /// How the broker redelivers.
    pub broker: BrokerKind,
    /// Fault budgets.
    pub faults: ConsumerFaults,
    /// The delivery on which a failing handler's message is dead-lettered
    /// (`Redelivery::handler_attempts_max`); `None`, the default, redelivers it always.
    pub handler_attempts_max: Option<NonZeroU32>,
    /// Correct consumer or a planted bug.
    pub variant: ConsumerVariant,
}

impl Default for ConsumerConfig {
    /// The configuration `idem check --consumer` runs: two consumers running one delivery
    /// at a time, one message id
    /// published twice plus once with another payload, JetStream-like broker, atomic mode,
    /// one crash, one stall, one lost ack, no other fault.
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            consumers: 2,
            in_flight_max: 1,
            messages: 1,
            duplicate_publish: true,
            mismatch_publish: true,
            mode: Mode::Atomic,
            broker: BrokerKind::AckWait,
            faults: ConsumerFaults { crashes: 1, stalls: 1, lost_acks: 1, timeouts: 0, outages: 0, failures: 0 },
            handler_attempts_max: None,
            variant: ConsumerVariant::Correct,
        }
    }
}

impl ConsumerConfig {
    /// Checks the counts against their bounds.
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] naming the first count out of bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let faults = &self.faults;
        let checks = [
            ("consumers", self.consumers, 1, CONSUMERS_MAX),
            ("in-flight deliveries", self.in_flight_max, 1, IN_FLIGHT_MAX),
            ("messages", self.messages, 1, MESSAGES_MAX),
            ("crashes", faults.crashes, 0, CONSUMER_FAULTS_MAX),
            ("stalls", faults.stalls, 0, CONSUMER_FAULTS_MAX),
            ("lost acks", faults.lost_acks, 0, CONSUMER_FAULTS_MAX),
            ("timeouts", faults.timeouts, 0, CONSUMER_FAULTS_MAX),
            ("outages", faults.outages, 0, CONSUMER_FAULTS_MAX),
            ("failures", faults.failures, 0, CONSUMER_FAULTS_MAX),
        ];
        for (what, given, min, max) in checks {
            if given < min || given > max {
                return Err(ConfigError::OutOfRange { what, given: given.into(), min: min.into(), max: max.into() });
            }
        }
        if let Some(attempts) = self.handler_attempts_max
            && attempts.get() > HANDLER_ATTEMPTS_MAX
        {
            return Err(ConfigError::OutOfRange {
                what: "handler attempts",
                given: attempts.get().into(),
                min: 1,
                max: HANDLER_ATTEMPTS_MAX.into(),
            });
        }
        Ok(())
    }
}

/// Names on the command line, and their parsing, for the consumer's enums.
macro_rules! consumer_named {
    ($ty:ident, $what:literal, $( $variant:ident = $name:literal ),+ $(,)?) => {
        impl $ty {
            /// Every accepted name, comma-separated.
            pub const NAMES: &'static str = concat!($( $name, ", " ),+);

            /// Every value, in the order of [`Self::NAMES`].
            pub const ALL: &'static [$ty] = &[$( $ty::$variant ),+];

            /// The value's name, as the command line takes it.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $( $ty::$variant => $name ),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = ConfigError;

            fn from_str(given: &str) -> Result<$ty, ConfigError> {
                match given {
                    $( $name => Ok($ty::$variant), )+
                    _ => Err(ConfigError::UnknownName {
                        what: $what,
                        given: given.to_owned(),
                        expected: $ty::NAMES.trim_end_matches(", "),
                    }),
                }
            }
        }
    };
}

consumer_named!(BrokerKind, "broker", AckWait = "ack-wait", ChannelClose = "channel-close");
consumer_named!(
    ConsumerVariant,
    "consumer variant",
    Correct = "correct",
    AckBeforeCompletion = "ack-before-completion",
    DedupOutsideTransaction = "dedup-outside-transaction",
    CheckThenAct = "check-then-act",
);
