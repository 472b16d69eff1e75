//! A server replica: it receives a request, asks the store to decide (idem-core's claim
//! step), starts a handler under the claim or answers at once, and checks every answer it
//! sends against G2, G4 and G5.

use std::time::Duration;

use idem_core::reply;
use idem_core::step::{self, Step, StepError, op};
use idem_core::{ClaimRequest, Decision, Fence, Record, RecordState, StoredResponse, Timestamp, Write};

use super::{IdemModel, Tell, interned, whole_seconds};
use crate::config::{NetworkKind, Variant};
use crate::message::{Answer, AttemptNumber, Message, OpIndex, Serial, ServerIndex, Slot};
use crate::state::{Broken, Handler, Pace, Phase, Stage, State};
use crate::story::{Decided, StoryEvent};

/// Where an answer goes: the attempt of an operation, from the server that answers it.
#[derive(Clone, Copy)]
pub(super) struct ReplyTo {
    pub(super) op: OpIndex,
    pub(super) attempt: AttemptNumber,
    pub(super) server: ServerIndex,
}

impl IdemModel {
    /// A server receives a request: the store decides with idem-core's claim step.
    pub(super) fn receive(
        &self,
        state: &mut State,
        op: OpIndex,
        attempt: AttemptNumber,
        server: ServerIndex,
        tell: &mut Tell<'_>,
    ) {
        let to = ReplyTo { op, attempt, server };
        tell.tell(|| StoryEvent::Arrives { server, op, attempt });
        if Self::store_call_fails(state) {
            return self.store_down_at_claim(state, to, tell);
        }
        let mut step = match self.claim_step(state, op, server) {
            Ok(step) => step,
            Err(error) => {
                tell.tell(|| StoryEvent::ClaimRefused(error));
                return self.answer(state, to, Self::unavailable(), None, tell);
            }
        };
        let believed = match (self.config.variant, &step.write) {
            // Bug: check-then-act; the claim is never written (its fence is still drawn
            // and its room counted, as the usage of the record the handler later writes).
            (Variant::NoClaim, Write::Put(record)) => {
                let record = record.clone();
                step.write = Write::Unchanged;
                Some(record)
            }
            _ => None,
        };
        self.write_unsynced(state);
        let decision = state.store.memory.commit(self.slot_id(self.op(op).slot), step);
        self.decided(state, to, decision, believed, tell);
    }

    /// The store is down when a request arrives: 503 and no handler runs (G8), unless the
    /// variant `fail-open` runs it anyway.
    fn store_down_at_claim(&self, state: &mut State, to: ReplyTo, tell: &mut Tell<'_>) {
        if self.config.variant == Variant::FailOpen {
            // Bug: fail open; the handler runs although the store granted nothing.
            state.mark(Broken::NoClaim);
            tell.tell(|| StoryEvent::FailsOpen);
            let serial = Self::next_serial(state);
            // Fence 0 is never issued: this handler holds no claim at all.
            self.start_handler(state, to, serial, Fence::new(0), false, None);
            return;
        }
        tell.tell(|| StoryEvent::StoreDownAtClaim);
        self.met_fault(state, to.op);
        self.answer(state, to, Self::unavailable(), None, tell);
    }

    /// idem-core's claim step for `op`'s request, on the view the server passes (which a
    /// bug variant tampers with).
    fn claim_step(&self, state: &State, op: OpIndex, server: ServerIndex) -> Result<Step<Decision>, StepError> {
        let operation = self.op(op);
        let id = self.slot_id(operation.slot);
        let mut view = state.store.memory.view(id);
        let stored = view.record;
        if self.config.variant == Variant::IgnoresTombstones
            && stored.is_some_and(|record| record.state == RecordState::Tombstone)
        {
            // Bug: a tombstone reads as no record.
            view.record = None;
        }
        if self.config.variant == Variant::FenceReuse {
            // Bug: a per-record counter, which starts again once the record is gone.
            view.counters.next_fence = stored.map_or(Fence::FIRST, |record| record.fence.next());
        }
        let fingerprint = match self.config.variant {
            // Bug: compare the stored fingerprint with itself.
            Variant::NoFingerprintCheck => stored.map_or(operation.fingerprint, |record| record.fingerprint),
            _ => operation.fingerprint,
        };
        let request = ClaimRequest::new(fingerprint);
        step::step(id, &view, op::Claim { request, now: self.server_now(state, server), policy: self.policy })
    }

    /// Acts on the store's decision: answer at once, or start a handler under the claim.
    fn decided(
        &self,
        state: &mut State,
        to: ReplyTo,
        decision: Decision,
        believed: Option<Record>,
        tell: &mut Tell<'_>,
    ) {
        let (claim, took_over) = match decision {
            Decision::Execute(claim) => (claim, None),
            Decision::TakeOver { claim, stale } => (claim, Some(stale)),
            Decision::Replay { response, .. } => {
                tell.tell(|| StoryEvent::Decided(Decided::Replay(response.clone())));
                return self.answer(state, to, Answer::Replayed, Some(&response), tell);
            }
            Decision::Conflict { retry_after: lease_left, .. } => {
                let answer = self.conflict(lease_left);
                tell.tell(|| StoryEvent::Decided(Decided::Conflict(answer)));
                return self.answer(state, to, answer, None, tell);
            }
            Decision::Mismatch { .. } => {
                tell.tell(|| StoryEvent::Decided(Decided::Mismatch));
                return self.answer(state, to, Answer::Mismatch, None, tell);
            }
            Decision::Gone { expires_at } => {
                tell.tell(|| StoryEvent::Decided(Decided::Gone { until: expires_at }));
                return self.answer(state, to, Answer::Gone, None, tell);
            }
        };
        let serial = Self::next_serial(state);
        let operation = self.op(to.op);
        let slot = usize::from(operation.slot);
        let granted_at = self.server_now(state, to.server);
        self.note_grant(state, operation.slot, serial, granted_at);
        match (took_over, state.ghost.slots[slot].owner) {
            (Some(_), Some(owner)) if self.op(owner).label != operation.label => state.mark(Broken::Mismatch),
            (Some(_), _) => {}
            (None, _) => state.ghost.slots[slot].owner = Some(to.op),
        }
        tell.tell(|| {
            StoryEvent::Decided(match took_over {
                None => Decided::Execute {
                    fence: claim.fence,
                    lease_until: claim.lease_expires_at,
                    written: believed.is_none(),
                },
                Some(stale) => Decided::TakeOver { fence: claim.fence, stale },
            })
        });
        self.start_handler(state, to, serial, claim.fence, took_over.is_some(), believed);
    }

    /// The ghost facts of a grant: the claim current, the latest its lease may end under
    /// the execution ceiling, and whether the record id's tombstone still lives (from the
    /// completion the model saw applied, not from the store's answer).
    fn note_grant(&self, state: &mut State, slot: Slot, serial: Serial, granted_at: Timestamp) {
        let ghost = &mut state.ghost.slots[usize::from(slot)];
        ghost.current = Some(serial);
        ghost.lease_bound =
            self.config.ceiling.map(|ceiling| granted_at.saturating_add(ceiling).saturating_add(self.policy.lease()));
        if ghost.tombstone.is_some_and(|(from, until)| from <= granted_at && granted_at < until) {
            state.mark(Broken::Tombstoned);
        }
    }

    pub(super) fn next_serial(state: &mut State) -> Serial {
        let serial = state.ghost.serials.checked_add(1).expect("fewer than 65536 claims in a bounded model");
        state.ghost.serials = serial;
        serial
    }

    fn start_handler(
        &self,
        state: &mut State,
        to: ReplyTo,
        serial: Serial,
        fence: Fence,
        took_over: bool,
        believed: Option<Record>,
    ) {
        let now = state.store.now;
        let life = state.ghost.slots[usize::from(self.op(to.op).slot)].lives;
        state.servers[usize::from(to.server)].handlers.push(Handler {
            op: to.op,
            attempt: to.attempt,
            serial,
            life,
            fence,
            took_over,
            stage: Stage::Claimed,
            started_at: now,
            renewed_at: now,
            pace: Pace::Healthy,
            believed,
        });
    }

    /// The response execution `serial` of `op` produces: 201, a `location` naming the
    /// execution, and a body naming principal, key, amount and execution.
    pub(super) fn response(&self, op: OpIndex, serial: Serial) -> StoredResponse {
        let operation = self.op(op);
        StoredResponse {
            status: 201,
            headers: vec![("location".to_owned(), interned(format!("/payments/pay_{serial}")))],
            body: interned(format!("{}#{serial}", operation.label)),
        }
    }

    /// A 409 for a claim with `lease_left`: idem-core's `Retry-After`, capped as idem-http does.
    pub(super) fn conflict(&self, lease_left: Duration) -> Answer {
        let retry_after = reply::retry_after(lease_left, self.retry_after_max);
        Answer::Conflict { retry_after_s: whole_seconds(retry_after) }
    }

    /// A 503 for an unreachable store, with the shortest `Retry-After` a layer sends.
    pub(super) fn unavailable() -> Answer {
        Answer::Unavailable { retry_after_s: whole_seconds(reply::RETRY_AFTER_MIN) }
    }

    /// Sends an answer back to the attempt, checking what it carries against G2, G4 and
    /// G5. A client that no longer waits for that attempt has closed the connection: the
    /// answer goes nowhere. Only a lossy network carries answers as messages (it may lose
    /// or delay them); otherwise the client receives the answer in the same step.
    pub(super) fn answer(
        &self,
        state: &mut State,
        to: ReplyTo,
        answer: Answer,
        response: Option<&StoredResponse>,
        tell: &mut Tell<'_>,
    ) {
        let ReplyTo { op, attempt, server } = to;
        if let Some(response) = response {
            self.check_response(state, op, answer, response);
        }
        let progress = state.ops[usize::from(op)];
        if !matches!(progress.phase, Phase::Waiting { .. }) || progress.attempts != attempt {
            return;
        }
        if self.config.network == NetworkKind::Lossy {
            state.send(Message::Reply { op, attempt, server, answer, delayed: false });
        } else {
            // Only a lossy network can do anything to an answer but deliver it, and the
            // clock cannot move before it arrives: the client receives it at once.
            tell.tell(|| StoryEvent::Answered);
            self.client_receives(state, op, attempt, answer, tell);
        }
    }

    /// G2: the response is the first recorded one; G4 and G5: it was recorded for this
    /// principal and this payload.
    fn check_response(&self, state: &mut State, op: OpIndex, answer: Answer, response: &StoredResponse) {
        let operation = self.op(op);
        let slot = usize::from(operation.slot);
        match state.ghost.slots[slot].first_response {
            Some((first_op, first_serial)) if self.response(first_op, first_serial) != *response => {
                state.mark(Broken::Replay);
            }
            // Only an answer given unrecorded, before any completion, has no first response.
            None if answer != Answer::Unrecorded => state.mark(Broken::Replay),
            _ => {}
        }
        let body = std::str::from_utf8(&response.body).expect("the model writes UTF-8 bodies");
        let answered_for = body.split('#').next().unwrap_or(body);
        if answered_for != operation.label {
            let principal = answered_for.split('/').next().unwrap_or(answered_for);
            let broke =
                if principal == operation.principal.as_str() { Broken::Mismatch } else { Broken::CrossPrincipal };
            state.mark(broke);
        }
    }
}
