//! The consumer configuration's properties, in plain words, each tied to a guarantee of
//! SPEC.md ("Message consumers": G1-G8 read with "message" for "request" and "ack" for
//! "answer") or to a path that must be reachable.

use idem_core::RecordState;
use stateright::{Expectation, Property};

use super::state::{ConsumerBroken, ConsumerState, CopyPhase, Happened};
use super::{BrokerKind, ConsumerModel};
use crate::state::Broken;

/// G1: the ledger holds at most one side effect per message id (atomic mode).
pub const AT_MOST_ONCE: &str = "at most one side effect per message id";
/// A1: a copy is acked only once its id's record is completed and its side effect is in
/// the ledger.
pub const NO_EARLY_ACK: &str = "no ack before the completion committed";
/// G5: a copy whose payload differs from the record's never runs.
pub const MISMATCH_NEVER_RUNS: &str = "a mismatch never runs";
/// G5 (consumer row "mismatch"): only a mismatch is dead-lettered (or, when handler
/// attempts are bounded, a handler that gave up).
pub const ONLY_MISMATCHES_DEAD_LETTERED: &str = "only mismatches are dead-lettered";
/// G3: a completion, release or renewal is applied only for the current claim, and a
/// refused one changes nothing.
pub const NO_STALE_COMPLETION: &str = "no stale completion, release or renewal is applied";
/// G6: every copy ends acked or dead-lettered.
pub const PROGRESS: &str = "every message is acked or dead-lettered";
/// Reachability: a copy comes back after its ack deadline.
pub const REDELIVERED_AFTER_ACK_TIMEOUT: &str = "a copy is redelivered after its ack deadline";
/// Reachability: a lapsed claim is taken over.
pub const TAKE_OVER: &str = "a take-over happens";
/// Reachability: a completed record is replayed and the copy acked without running.
pub const REPLAY_ACKED: &str = "a replay is acked";
/// Reachability: a delivery meets another claim and is naked with a delay.
pub const CONFLICT_NAKED: &str = "a conflict is naked";
/// Reachability: a copy is dead-lettered.
pub const DEAD_LETTER: &str = "a copy is dead-lettered";
/// Reachability: an ack is lost.
pub const ACK_LOST: &str = "an ack is lost";
/// Reachability: a consumer crashes after a completion committed and before its ack.
pub const CRASH_AFTER_COMMIT: &str = "a consumer crashes between commit and ack";
/// Reachability: progress after a renewal moves an ack deadline (`AckWait`).
pub const PROGRESS_EXTENDS_DEADLINE: &str = "progress extends an ack deadline";
/// Reachability: a closed channel requeues copies (`ChannelClose`).
pub const CHANNEL_REQUEUES: &str = "a closed channel requeues its copies";

/// Every property, with the guarantee (or reachability goal) it stands for.
pub const GUARANTEES: [(&str, &str); 15] = [
    (AT_MOST_ONCE, "G1"),
    (NO_EARLY_ACK, "A1"),
    (MISMATCH_NEVER_RUNS, "G5"),
    (ONLY_MISMATCHES_DEAD_LETTERED, "G5"),
    (NO_STALE_COMPLETION, "G3"),
    (PROGRESS, "G6"),
    (REDELIVERED_AFTER_ACK_TIMEOUT, "reachable"),
    (TAKE_OVER, "reachable"),
    (REPLAY_ACKED, "reachable"),
    (CONFLICT_NAKED, "reachable"),
    (DEAD_LETTER, "reachable"),
    (ACK_LOST, "reachable"),
    (CRASH_AFTER_COMMIT, "reachable"),
    (PROGRESS_EXTENDS_DEADLINE, "reachable"),
    (CHANNEL_REQUEUES, "reachable"),
];

/// The `always` and `eventually` properties: the guarantees proper.
pub fn guarantees() -> impl Iterator<Item = &'static str> {
    GUARANTEES.iter().filter(|(_, guarantee)| *guarantee != "reachable").map(|(name, _)| *name)
}

/// The reachability properties a broker kind can reach (the others belong to the other kind).
#[must_use]
pub fn reachable_with(broker: BrokerKind) -> Vec<&'static str> {
    GUARANTEES
        .iter()
        .filter(|(_, guarantee)| *guarantee == "reachable")
        .map(|(name, _)| *name)
        .filter(|name| match broker {
            BrokerKind::AckWait => *name != CHANNEL_REQUEUES,
            BrokerKind::ChannelClose => ![REDELIVERED_AFTER_ACK_TIMEOUT, PROGRESS_EXTENDS_DEADLINE].contains(name),
        })
        .collect()
}

/// The guarantee a property checks, or "reachable".
#[must_use]
pub fn guarantee(property: &str) -> &'static str {
    GUARANTEES.iter().find(|(name, _)| *name == property).map_or("?", |(_, guarantee)| guarantee)
}

/// Whether the property is an `always`, `eventually` or `sometimes`.
#[must_use]
pub fn expectation(property: &str) -> Expectation {
    match guarantee(property) {
        "reachable" => Expectation::Sometimes,
        _ if property == PROGRESS => Expectation::Eventually,
        _ => Expectation::Always,
    }
}

impl ConsumerModel {
    /// G1: per message id, at most one side effect in the ledger.
    pub(crate) fn at_most_once(&self, state: &ConsumerState) -> bool {
        let mut effects = vec![0_u8; usize::from(self.config.messages)];
        state.store.ledger.iter().all(|effect| {
            let count = &mut effects[usize::from(self.copy(effect.op).message)];
            *count += 1;
            *count <= 1
        })
    }

    /// A1: every acked copy's record is completed and its side effect is in the ledger.
    pub(crate) fn acked_after_completion(&self, state: &ConsumerState) -> bool {
        state.copies.iter().enumerate().all(|(copy, held)| {
            if held.phase != CopyPhase::Acked {
                return true;
            }
            let message = self.copies[copy].message;
            let completed = state
                .store
                .memory
                .record(&self.ids[usize::from(message)])
                .is_some_and(|record| matches!(record.state, RecordState::Completed { .. }));
            completed && state.store.ledger.iter().any(|effect| self.copy(effect.op).message == message)
        })
    }
}

/// Every property of the consumer model.
pub(crate) fn all() -> Vec<Property<ConsumerModel>> {
    vec![
        Property::always(AT_MOST_ONCE, |model: &ConsumerModel, state: &ConsumerState| model.at_most_once(state)),
        Property::always(NO_EARLY_ACK, |model: &ConsumerModel, state: &ConsumerState| {
            model.acked_after_completion(state)
        }),
        Property::always(MISMATCH_NEVER_RUNS, |_, state: &ConsumerState| !state.broke(Broken::Mismatch as u16)),
        Property::always(ONLY_MISMATCHES_DEAD_LETTERED, |_, state: &ConsumerState| {
            !state.broke(ConsumerBroken::WrongDeadLetter as u16)
        }),
        Property::always(NO_STALE_COMPLETION, |_, state: &ConsumerState| {
            !state.broke(Broken::StaleWrite as u16) && !state.broke(Broken::RefusedChanged as u16)
        }),
        // Sound because the model is acyclic and the predicate never turns false again; a
        // path that broke a safety property ends there and is judged by that property.
        Property::eventually(PROGRESS, |model: &ConsumerModel, state: &ConsumerState| {
            model.is_broken(state)
                || state.copies.iter().all(|copy| matches!(copy.phase, CopyPhase::Acked | CopyPhase::DeadLettered(_)))
        }),
        Property::sometimes(REDELIVERED_AFTER_ACK_TIMEOUT, |_, state: &ConsumerState| {
            state.happened(Happened::RedeliveredAfterAckTimeout)
        }),
        Property::sometimes(TAKE_OVER, |_, state: &ConsumerState| state.happened(Happened::TakeOver)),
        Property::sometimes(REPLAY_ACKED, |_, state: &ConsumerState| state.happened(Happened::ReplayAcked)),
        Property::sometimes(CONFLICT_NAKED, |_, state: &ConsumerState| state.happened(Happened::ConflictNaked)),
        Property::sometimes(DEAD_LETTER, |_, state: &ConsumerState| state.happened(Happened::DeadLettered)),
        Property::sometimes(ACK_LOST, |_, state: &ConsumerState| state.happened(Happened::AckLost)),
        Property::sometimes(CRASH_AFTER_COMMIT, |_, state: &ConsumerState| state.happened(Happened::CrashAfterCommit)),
        Property::sometimes(PROGRESS_EXTENDS_DEADLINE, |_, state: &ConsumerState| {
            state.happened(Happened::ProgressExtended)
        }),
        Property::sometimes(CHANNEL_REQUEUES, |_, state: &ConsumerState| state.happened(Happened::ChannelRequeued)),
    ]
}
