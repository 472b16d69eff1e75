//! The steps of the consumer system, one variant per kind of step.

use crate::message::Serial;

use super::state::{ConsumerIndex, CopyIndex};

/// One step of the consumer system.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ConsumerAction {
    /// The broker delivers a copy to a consumer (after its nak delay, or, under `AckWait`,
    /// after its ack deadline passed: the clock moves there), and the consumer claims its
    /// record through the store step and acts on `consume::handle`.
    Deliver {
        /// The copy.
        copy: CopyIndex,
        /// The consumer.
        consumer: ConsumerIndex,
    },
    /// A handler writes its side effect (and, variant `ack-before-completion`, acks).
    Write {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler completes its record (`CompleteInTransaction` or `Complete`).
    Complete {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler fails, before its write or after it, and releases its claim.
    Fail {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler renews its lease (the clock moves to the heartbeat) and, once applied,
    /// sends the broker progress.
    Renew {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler stalls: no more renewals or progress.
    Stall {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler whose record is completed sends its ack.
    Ack {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// Its execution grant.
        serial: Serial,
        /// Under `AckWait`, for an ack of a delivery that is no longer current: whether the
        /// broker applies it (JetStream's behaviour there is not documented; both are explored).
        stale_applies: bool,
    },
    /// A handler's ack is lost on its way.
    LoseAck {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A consumer crashes and restarts, losing its running handlers.
    Crash {
        /// The consumer.
        consumer: ConsumerIndex,
    },
    /// `AckWait`: the broker's ack deadline runs out under a live handler (its progress was
    /// lost) and the copy is ready again at once.
    TimeOut {
        /// The copy.
        copy: CopyIndex,
    },
    /// `ChannelClose`: a live consumer's channel closes; every copy it holds is requeued
    /// while its handlers keep running.
    CloseChannel {
        /// The consumer.
        consumer: ConsumerIndex,
    },
    /// The store becomes unreachable: its next call fails.
    StoreDown,
}
