//! The story events: what a step did, as plain data. [`super`] renders them.

use std::time::Duration;

use idem_core::step::StepError;
use idem_core::{Fence, Refusal, StoredResponse, Timestamp};

use crate::message::{Answer, AttemptNumber, Message, OpIndex, ServerIndex, Slot};

/// Something a step did, as the story tells it. Events of one step render, in order, into
/// one line.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum StoryEvent {
    /// A client starts an operation.
    Sent {
        /// The operation.
        op: OpIndex,
        /// When the whole operation must be over.
        deadline_at: Timestamp,
    },
    /// A client's wait ended at `at` and it retries.
    Retries {
        /// The operation.
        op: OpIndex,
        /// When.
        at: Timestamp,
    },
    /// An attempt leaves the client.
    Attempt {
        /// Its number.
        attempt: AttemptNumber,
        /// The server it goes to.
        server: ServerIndex,
    },
    /// An attempt's timer fired.
    TimedOut {
        /// The operation.
        op: OpIndex,
        /// The attempt.
        attempt: AttemptNumber,
        /// When.
        at: Timestamp,
        /// Whether its request, handler or reply was still somewhere in the system.
        alive: bool,
    },
    /// The operation's deadline passed: the client gives up.
    DeadlinePassed {
        /// The deadline.
        at: Timestamp,
    },
    /// Every attempt was used: the client gives up.
    AttemptsUsed {
        /// How many there were.
        attempts: AttemptNumber,
    },
    /// The next wait would end past the deadline: the client gives up.
    WaitPastDeadline {
        /// The wait.
        wait: Duration,
        /// The deadline.
        deadline_at: Timestamp,
    },
    /// The client sleeps before its next attempt.
    Sleeps {
        /// Why it waits that long.
        why: Wait,
        /// How long.
        wait: Duration,
        /// Until when.
        until: Timestamp,
    },
    /// A client receives an answer.
    Receives {
        /// The operation.
        op: OpIndex,
        /// The attempt answered.
        attempt: AttemptNumber,
        /// The answer.
        answer: Answer,
    },
    /// The answer just received is final.
    Final,
    /// The network holds a message back.
    HeldBack(Message),
    /// The network delivers one copy of a request and keeps the other.
    Duplicated,
    /// The network loses a message.
    Lost(Message),
    /// An answer travels to its client at once.
    Answered,
    /// A server receives a request.
    Arrives {
        /// The server.
        server: ServerIndex,
        /// The operation.
        op: OpIndex,
        /// The attempt.
        attempt: AttemptNumber,
    },
    /// The store is down and the server runs the handler anyway (variant `fail-open`).
    FailsOpen,
    /// The store is down at the claim: 503, nothing runs.
    StoreDownAtClaim,
    /// idem-core's step refused the claim (admission): 503.
    ClaimRefused(StepError),
    /// What the store decided for a request.
    Decided(Decided),
    /// A handler writes its payment row.
    Wrote {
        /// The server.
        server: ServerIndex,
        /// The operation.
        op: OpIndex,
        /// When the row committed at once (separate mode): the payments the ledger now
        /// holds for the operation's record id. `None`: pending in the open transaction.
        payments: Option<usize>,
    },
    /// A handler completes (atomic: committing its pending payment in the same transaction).
    Completing {
        /// The server.
        server: ServerIndex,
        /// The operation.
        op: OpIndex,
        /// The handler's own fence.
        fence: Fence,
        /// The fence presented to the store.
        presented: Fence,
        /// Whether the completion's transaction carries the handler's pending payment.
        pending: bool,
    },
    /// The store was down at the completion; separate mode answers `unrecorded`.
    CompletionStoreDown {
        /// The response answered unrecorded (separate mode), or none (atomic mode: 503).
        unrecorded: Option<StoredResponse>,
    },
    /// The completion was accepted.
    CompletionAccepted {
        /// What is on disk once it returns.
        disk: Disk,
        /// The response recorded and answered.
        response: StoredResponse,
    },
    /// The completion was refused.
    CompletionRefused {
        /// Why.
        refusal: Refusal,
        /// Whether a transaction (with the side effect) rolled back.
        rolled_back: bool,
    },
    /// A superseded execution answers the recorded response as a replay.
    AnswersRecorded(StoredResponse),
    /// A superseded execution answers a 409.
    AnswersConflict(Answer),
    /// A superseded execution answers 422.
    AnswersMismatch,
    /// A superseded execution answers 410: only the record's tombstone is left.
    AnswersGone,
    /// A handler fails (503), before its write or after it.
    Fails {
        /// The server.
        server: ServerIndex,
        /// The operation.
        op: OpIndex,
        /// Whether it had written its payment row.
        written: bool,
        /// Whether that row was pending in its open transaction, which rolls back.
        rolled_back: bool,
    },
    /// Under check-then-act there is no claim to release.
    NothingToRelease,
    /// The store is down at the release.
    ReleaseStoreDown,
    /// The release was applied.
    Released(Fence),
    /// The release was refused: no record.
    ReleaseRefusedNoRecord(Fence),
    /// The release was refused for another reason.
    ReleaseRefused {
        /// The fence released.
        fence: Fence,
        /// Why.
        refusal: Refusal,
    },
    /// A renewal was applied.
    Renewed {
        /// The server.
        server: ServerIndex,
        /// The operation.
        op: OpIndex,
        /// The fence renewed.
        fence: Fence,
        /// When.
        at: Timestamp,
        /// The lease's new end.
        lease_expires_at: Timestamp,
    },
    /// A renewal was refused: the execution stops.
    RenewalRefused {
        /// The server.
        server: ServerIndex,
        /// The operation.
        op: OpIndex,
        /// The fence renewed.
        fence: Fence,
        /// When.
        at: Timestamp,
        /// Why.
        refusal: Refusal,
    },
    /// A handler turns out slow.
    TurnsSlow {
        /// The server.
        server: ServerIndex,
        /// The operation.
        op: OpIndex,
        /// When it started.
        started_at: Timestamp,
        /// How long it may run.
        until: Timestamp,
    },
    /// A handler stalls.
    Stalls {
        /// The server.
        server: ServerIndex,
        /// The operation.
        op: OpIndex,
        /// Its fence.
        fence: Fence,
        /// When its lease ends, if its claim is in flight.
        lease_end: Option<Timestamp>,
    },
    /// A server crashes and restarts.
    Crashes {
        /// The server.
        server: ServerIndex,
        /// The handlers it loses: operation and fence.
        lost: Vec<(OpIndex, Fence)>,
    },
    /// The store becomes unreachable.
    StoreDown,
    /// The store is reachable again before anyone called it.
    StoreUp,
    /// The store crashes and restarts with what its disk holds.
    StoreCrashes {
        /// Each record that changed: its slot, what it held before the crash, what after.
        lost: Vec<(Slot, Held, Held)>,
        /// Where the fence counter goes on.
        fences: FenceCounter,
    },
    /// A server runs the store's purge at its own time.
    PurgeRuns {
        /// The server.
        server: ServerIndex,
        /// Its time.
        at: Timestamp,
        /// How many records the purge removed.
        purged: usize,
    },
    /// Time passes to a record's forgettable time and the store purges.
    Purged {
        /// When.
        at: Timestamp,
        /// The record's slot.
        slot: Slot,
        /// How many records the purge removed or shrank.
        purged: usize,
        /// Until when the record's tombstone stays, if the purge shrank it to one.
        tombstone_until: Option<Timestamp>,
    },
    /// An operator forgets a record.
    Forgotten {
        /// The record's slot.
        slot: Slot,
        /// What the store held before.
        removed: Held,
        /// What it holds after.
        kept: Held,
        /// The fence the next claim gets.
        next_fence: Fence,
    },
}

/// What the store decided for a request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Decided {
    /// Replay the recorded response.
    Replay(StoredResponse),
    /// In progress: a 409.
    Conflict(Answer),
    /// Another request used the key: 422.
    Mismatch,
    /// Only the record's tombstone is left: 410.
    Gone {
        /// When the tombstone ends.
        until: Timestamp,
    },
    /// Execute under a new claim.
    Execute {
        /// The claim's fence.
        fence: Fence,
        /// Its lease end.
        lease_until: Timestamp,
        /// Whether the claim was written (variant `no-claim` never writes it).
        written: bool,
    },
    /// Take over a lapsed claim.
    TakeOver {
        /// The new claim's fence.
        fence: Fence,
        /// The lapsed claim's fence.
        stale: Fence,
    },
}

/// Why a client waits before its next attempt.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wait {
    /// The backoff (no `Retry-After`).
    Backoff,
    /// The answer's `Retry-After`.
    RetryAfter,
}

/// What is on disk once a completion returns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Disk {
    /// The completion waited for the disk.
    Synced,
    /// Variant `completion-apart`: the payment is, the completion not yet.
    PaymentOnly,
    /// Variant `unsynced-completion`: nothing of it yet.
    Nothing,
}

/// A record as a store crash shows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Held {
    /// No record.
    Absent,
    /// A claim in flight under a fence.
    Claim(Fence),
    /// A completion under a fence.
    Completion(Fence),
    /// A tombstone of a completion under a fence.
    Tombstone(Fence),
}

/// Where a restarted store's fence counter goes on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FenceCounter {
    /// Past every fence issued before the crash.
    Reseeded(Fence),
    /// Where the disk left it (variant `no-fence-reseed`).
    Back(Fence),
}
