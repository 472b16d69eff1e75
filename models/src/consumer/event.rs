//! The consumer model's story events: what a step did, as plain data (the broker's side
//! and the consumer's). [`super::story`] renders them.

use std::time::Duration;

use idem_core::{DeadLetterReason, Fence, Refusal, Timestamp};

use super::state::{ConsumerIndex, CopyIndex};

/// Why the broker delivers a copy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Why {
    /// Its first delivery.
    First,
    /// It was ready again (naked, or requeued by a closed channel or a timeout).
    Again,
    /// Its ack deadline passed (`AckWait`).
    AckTimeout,
}

/// What the store decided for a delivery, as the story tells it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Decided {
    /// Execute under a new claim (`written: false`: variant `check-then-act`).
    Execute {
        /// The claim's fence.
        fence: Fence,
        /// Its lease's end.
        lease_until: Timestamp,
        /// Whether the claim was written.
        written: bool,
    },
    /// Take a lapsed claim over.
    TakeOver {
        /// The new fence.
        fence: Fence,
        /// The lapsed one's.
        stale: Fence,
    },
    /// The record is completed: replay.
    Replay,
    /// Another claim holds the record.
    Conflict,
    /// Another payload's record.
    Mismatch,
    /// Only the record's tombstone is left (never here: the consumer policy keeps none).
    Gone,
}

/// How a delivery is settled, as the consumer sends it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sent {
    /// Ack.
    Ack,
    /// Nak with this delay.
    Nak(Duration),
    /// Dead-letter with this reason.
    DeadLetter(DeadLetterReason),
}

/// What the broker does with a settle.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Applied {
    /// Applied to the current delivery.
    Current,
    /// The delivery is no longer current; the broker applies it anyway.
    StaleApplied,
    /// The delivery is no longer current; the broker ignores it.
    StaleIgnored,
    /// The copy was settled already; nothing changes.
    AlreadySettled,
}

/// Something a consumer-model step did. Events of one step render, in order, into one line.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ConsumerEvent {
    /// The broker delivers a copy.
    Delivered {
        /// The copy.
        copy: CopyIndex,
        /// To whom.
        consumer: ConsumerIndex,
        /// Which delivery of it.
        delivery: u8,
        /// When.
        at: Timestamp,
        /// Why now.
        why: Why,
    },
    /// The store was down at the claim: nothing runs.
    StoreDownAtClaim,
    /// The store decided.
    Decided(Decided),
    /// The consumer settles a delivery with the broker.
    Settles {
        /// The consumer.
        consumer: ConsumerIndex,
        /// The copy.
        copy: CopyIndex,
        /// What it sends.
        sent: Sent,
        /// What the broker does with it.
        applied: Applied,
    },
    /// An ack is lost on its way.
    AckLost {
        /// The consumer.
        consumer: ConsumerIndex,
        /// The copy.
        copy: CopyIndex,
        /// Whether its channel closed with it (`ChannelClose`), requeuing these copies.
        requeued: Option<Vec<CopyIndex>>,
    },
    /// A handler writes its side effect.
    Wrote {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// Its copy.
        copy: CopyIndex,
        /// When it committed at once: the side effects the ledger now holds for the id.
        /// `None`: pending in the claim's transaction.
        effects: Option<usize>,
    },
    /// A handler completes.
    Completing {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// Its copy.
        copy: CopyIndex,
        /// Its fence.
        fence: Fence,
        /// Whether the transaction carries its pending side effect.
        pending: bool,
    },
    /// The completion was accepted.
    CompletionAccepted,
    /// The completion was refused.
    CompletionRefused {
        /// Why.
        refusal: Refusal,
        /// Whether a pending side effect rolled back.
        rolled_back: bool,
    },
    /// The store was down at the completion.
    CompletionStoreDown {
        /// Whether a pending side effect rolled back.
        rolled_back: bool,
    },
    /// A handler fails.
    Fails {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// Its copy.
        copy: CopyIndex,
        /// Whether it had written.
        written: bool,
        /// Whether that write rolled back.
        rolled_back: bool,
    },
    /// The release was applied.
    Released(Fence),
    /// The release was refused.
    ReleaseRefused {
        /// The fence.
        fence: Fence,
        /// Why.
        refusal: Refusal,
    },
    /// The store was down at the release.
    ReleaseStoreDown,
    /// Under check-then-act there is nothing to release.
    NothingToRelease,
    /// A renewal was applied, and progress sent.
    Renewed {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// Its copy.
        copy: CopyIndex,
        /// When.
        at: Timestamp,
        /// The lease's new end.
        lease_until: Timestamp,
        /// The copy's new ack deadline, when progress moved it.
        deadline: Option<Timestamp>,
    },
    /// The store was down at a renewal: no progress either.
    RenewalStoreDown {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// When.
        at: Timestamp,
    },
    /// A renewal was refused: the handler stops.
    RenewalRefused {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// Its copy.
        copy: CopyIndex,
        /// When.
        at: Timestamp,
        /// Why.
        refusal: Refusal,
    },
    /// A handler stalls.
    Stalls {
        /// Its consumer.
        consumer: ConsumerIndex,
        /// Its copy.
        copy: CopyIndex,
        /// Its fence.
        fence: Fence,
    },
    /// A consumer crashes.
    Crashes {
        /// The consumer.
        consumer: ConsumerIndex,
        /// The handlers lost: copy, and whether it had committed its completion.
        lost: Vec<(CopyIndex, bool)>,
        /// Copies requeued by its closed channel (`ChannelClose`).
        requeued: Vec<CopyIndex>,
    },
    /// The ack deadline ran out under a live handler.
    TimedOut {
        /// The copy.
        copy: CopyIndex,
    },
    /// A live consumer's channel closed.
    ChannelClosed {
        /// The consumer.
        consumer: ConsumerIndex,
        /// The copies requeued.
        requeued: Vec<CopyIndex>,
    },
    /// The store becomes unreachable.
    StoreDown,
}
