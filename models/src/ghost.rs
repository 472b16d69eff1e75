//! What the properties read: facts about the state that no real component keeps (the
//! ghost facts in [`State::ghost`], the ledger), judged with the few configuration facts
//! they need. It sits below both the model and the properties, so that neither reads the
//! other's insides.

use std::time::Duration;

use idem_core::{RecordId, RecordState};

use crate::message::OpIndex;
use crate::state::{Pace, SlotGhost};

use crate::message::Answer;
use crate::state::{OpState, Phase, State};

/// The configuration facts the properties need.
#[derive(Clone, Debug)]
pub(crate) struct Facts {
    /// Per operation: which of the distinct record ids (principal, key) it is.
    pub(crate) record_of_op: Vec<u8>,
    /// Per operation: the id the store keys its record by.
    pub(crate) id_of_op: Vec<RecordId>,
    /// Per store slot: the id the store keys it by.
    pub(crate) id_of_slot: Vec<RecordId>,
    /// Per operation: its store slot.
    pub(crate) slot_of_op: Vec<u8>,
    /// The execution ceiling, if any.
    pub(crate) ceiling: Option<Duration>,
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
    /// G1: the business ledger holds at most one payment per record id (per life of it:
    /// an operator's forget lets the key run again).
    pub(crate) fn at_most_once(&self, state: &State) -> bool {
        let mut seen: Vec<(u8, u8)> = Vec::with_capacity(state.store.ledger.len());
        for execution in &state.store.ledger {
            let record = (self.record_of_op[usize::from(execution.op)], execution.life);
            if seen.contains(&record) {
                return false;
            }
            seen.push(record);
        }
        true
    }

    /// The execution ceiling: no claim in the store has a lease that ends past its grant
    /// time plus the ceiling and one lease (the bound the model noted at the grant).
    pub(crate) fn within_ceiling(&self, state: &State) -> bool {
        self.id_of_slot.iter().zip(&state.ghost.slots).all(|(id, ghost)| {
            match (state.store.memory.record(id).map(|record| &record.state), ghost.lease_bound) {
                (Some(RecordState::InFlight { lease_expires_at, .. }), Some(bound)) => *lease_expires_at <= bound,
                _ => true,
            }
        })
    }

    /// Whether any always-property fails in `state`.
    pub(crate) fn is_broken(&self, state: &State) -> bool {
        state.ghost.broken != 0 || !self.at_most_once(state) || !self.within_ceiling(state)
    }

    /// Whether G6 promises `progress` its final response: it met no more faults than tolerated.
    pub(crate) fn progress_promised(&self, progress: &OpState) -> bool {
        progress.faults <= self.progress_faults
    }

    /// Whether a record held in the store was renewed at least once (its lease ends later
    /// than its claim's first lease).
    pub(crate) fn renewed(&self, state: &State) -> bool {
        state.store.memory.records().any(|(_, record)| match record.state {
            RecordState::InFlight { lease_expires_at, .. } => {
                let claimed_at = record.expires_at.unix_ms().saturating_sub(millis(self.retention));
                lease_expires_at.unix_ms() > claimed_at.saturating_add(millis(self.lease))
            }
            RecordState::Completed { .. } | RecordState::Tombstone => false,
        })
    }

    /// Whether a completed record shrank to its tombstone after its retention.
    pub(crate) fn tombstone_left(state: &State) -> bool {
        state.store.memory.records().any(|(_, record)| record.state == RecordState::Tombstone)
    }

    /// Whether an operator forgot a record while a handler granted before still runs.
    pub(crate) fn forgotten_under_a_handler(&self, state: &State) -> bool {
        state.handlers().any(|(_, handler)| handler.life < self.ghost_of(state, handler.op).lives)
    }

    /// Whether a handler that did not stall ran past the execution ceiling and lost its
    /// claim: it stopped renewing and its lease ended, or another claim took it over.
    pub(crate) fn lapsed_at_the_ceiling(&self, state: &State) -> bool {
        let Some(ceiling) = self.ceiling else { return false };
        let now = state.store.now;
        state.handlers().any(|(_, handler)| {
            let record = state.store.memory.record(&self.id_of_op[usize::from(handler.op)]);
            let lost = match record.map(|record| (record.fence, &record.state)) {
                Some((fence, RecordState::InFlight { lease_expires_at, .. })) => {
                    fence != handler.fence || *lease_expires_at <= now
                }
                _ => true,
            };
            handler.pace != Pace::Stalled && now >= handler.started_at.saturating_add(ceiling) && lost
        })
    }

    fn ghost_of<'a>(&self, state: &'a State, op: OpIndex) -> &'a SlotGhost {
        &state.ghost.slots[usize::from(self.slot_of_op[usize::from(op)])]
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
