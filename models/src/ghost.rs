//! What the properties read: facts about the state that no real component keeps (the
//! ghost facts in [`State::ghost`], the ledger), judged with the few configuration facts
//! they need. It sits below both the model and the properties, so that neither reads the
//! other's insides.

use std::time::Duration;

use idem_core::{RecordId, RecordState};

use crate::state::{Answer, OpState, Phase, State};

/// The configuration facts the properties need.
#[derive(Clone, Debug)]
pub(crate) struct Facts {
    /// Per operation: which of the distinct record ids (principal, key) it is.
    pub(crate) record_of_op: Vec<u8>,
    /// How many distinct record ids there are.
    pub(crate) records: usize,
    /// Per operation: the id the store keys its record by.
    pub(crate) id_of_op: Vec<RecordId>,
    /// The lease the server claims with.
    pub(crate) lease: Duration,
    /// The retention the server claims with.
    pub(crate) retention: Duration,
    /// G6 is promised to operations that met at most this many faults.
    pub(crate) progress_faults: u8,
    /// Store crashes the run starts with.
    pub(crate) store_crashes: u8,
}

/// A model whose states the properties can judge.
pub(crate) trait Observed {
    /// Its facts.
    fn facts(&self) -> &Facts;
}

impl Facts {
    /// G1: the business ledger holds at most one payment per record id.
    pub(crate) fn at_most_once(&self, state: &State) -> bool {
        let mut executions = vec![0_u8; self.records];
        for execution in &state.store.ledger {
            let count = &mut executions[usize::from(self.record_of_op[usize::from(execution.op)])];
            *count += 1;
            if *count > 1 {
                return false;
            }
        }
        true
    }

    /// Whether any always-property fails in `state`.
    pub(crate) fn is_broken(&self, state: &State) -> bool {
        state.ghost.broken != 0 || !self.at_most_once(state)
    }

    /// Whether G6 promises `progress` its final response: it met no more faults than tolerated.
    pub(crate) fn progress_promised(&self, progress: &OpState) -> bool {
        progress.faults <= self.progress_faults
    }

    /// Whether a record held in the store was renewed at least once (its lease ends later
    /// than its claim's first lease).
    pub(crate) fn renewed(&self, state: &State) -> bool {
        state.store.memory.records().any(|(_, record)| match record.state {
            RecordState::InFlight { lease_expires_at } => {
                let claimed_at = record.expires_at.unix_ms().saturating_sub(millis(self.retention));
                lease_expires_at.unix_ms() > claimed_at.saturating_add(millis(self.lease))
            }
            RecordState::Completed { .. } => false,
        })
    }

    /// Whether an operation got its final response and its record was forgotten since.
    pub(crate) fn forgotten(&self, state: &State) -> bool {
        self.id_of_op.iter().zip(&state.ops).any(|(id, progress)| {
            matches!(progress.phase, Phase::Done(Answer::Created | Answer::Replayed))
                && state.store.memory.record(id).is_none()
        })
    }

    /// Whether a store crash happened (one is offered only when it loses something).
    pub(crate) fn store_crashed(&self, state: &State) -> bool {
        state.budgets.store_crashes < self.store_crashes
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
