//! A handler running under a claim: its side effect, its completion (idem-core's fenced
//! `CompleteInTransaction` or `Complete`), its failure and release, its lease renewals,
//! and what it answers when it finds it lost its claim (`reply::superseded`).

use idem_core::reply::{self, Disposition, StatusRules, Superseded};
use idem_core::step::op;
use idem_core::{ClaimRequest, Fenced, Refusal, Renewal};

use super::server::ReplyTo;
use super::{FAILURE_STATUS, IdemModel, Tell, server_index};
use crate::config::{Mode, Variant};
use crate::message::{Answer, Serial, ServerIndex};
use crate::model::Action;
use crate::state::{Broken, Execution, Handler, Pace, Stage, State};
use crate::story::{StoryEvent, disk_of};

impl IdemModel {
    /// The steps of running handlers enabled in `state` (and the crash of a busy server).
    pub(super) fn offer_handler_steps(&self, state: &State, actions: &mut Vec<Action>) {
        let now = state.store.now;
        for (server, replica) in state.servers.iter().enumerate() {
            let server = server_index(server);
            for handler in &replica.handlers {
                let serial = handler.serial;
                actions.push(Action::Step { server, serial });
                // A handler may fail before its write or after it (a 5xx after the write).
                if state.budgets.failures > 0 {
                    actions.push(Action::Fail { server, serial });
                }
                // The layer renews every third of a lease: the clock moves to the renewal (or,
                // for a stalled handler, it is late and renews now); either way the clock moved
                // since the last one.
                let renews = self.config.renewals && handler.believed.is_none() && state.store.up;
                let due = self.renewal_due(handler, now);
                if renews && self.renews_at(handler, due) && self.may_move_to(state, due) {
                    actions.push(Action::Renew { server, serial });
                }
                self.offer_handler_faults(state, server, handler, actions);
            }
            // A crash of an idle server changes nothing, so only busy servers crash.
            if state.budgets.crashes > 0 && !replica.handlers.is_empty() {
                actions.push(Action::Crash { server });
            }
        }
    }

    pub(super) fn handler_index(state: &State, server: ServerIndex, serial: Serial) -> usize {
        state.servers[usize::from(server)]
            .handlers
            .iter()
            .position(|h| h.serial == serial)
            .expect("actions name running handlers only")
    }

    /// A handler's next step: write the payment, or complete.
    pub(super) fn step(&self, state: &mut State, server: ServerIndex, serial: Serial, tell: &mut Tell<'_>) {
        let index = Self::handler_index(state, server, serial);
        if state.servers[usize::from(server)].handlers[index].stage == Stage::Claimed {
            return self.write(state, server, index, tell);
        }
        let handler = state.servers[usize::from(server)].handlers.remove(index);
        self.complete(state, server, handler, tell);
    }

    /// The handler writes its payment row. In atomic mode the row is pending in the
    /// handler's open transaction: the completion commits it, a refused or failed
    /// completion, a release or a crash rolls it back. In separate mode it commits at once.
    fn write(&self, state: &mut State, server: ServerIndex, index: usize, tell: &mut Tell<'_>) {
        let handler = &mut state.servers[usize::from(server)].handlers[index];
        handler.stage = Stage::Written;
        let (op, serial, life) = (handler.op, handler.serial, handler.life);
        let commits_now = !self.writes_in_transaction();
        if commits_now {
            state.store.ledger.push(Execution { op, serial, life });
        }
        tell.tell(|| {
            let record_index = self.op(op).record_index;
            let payments = state.store.ledger.iter().filter(|e| self.op(e.op).record_index == record_index).count();
            StoryEvent::Wrote { server, op, payments: commits_now.then_some(payments) }
        });
    }

    /// Whether a handler's write is pending in the transaction its completion commits
    /// (atomic mode), rather than committed on its own (separate mode).
    pub(super) fn writes_in_transaction(&self) -> bool {
        // Bug `write-outside-transaction`: the handler writes on a connection of its own
        // (not the claim's transaction), so its row commits at once even in atomic mode.
        self.config.mode == Mode::Atomic && self.config.variant != Variant::WriteOutsideTransaction
    }

    /// The completion through the store step: `op::CompleteInTransaction` in atomic mode
    /// (the pending payment commits with it or not at all), `op::Complete` in separate mode.
    fn complete(&self, state: &mut State, server: ServerIndex, handler: Handler, tell: &mut Tell<'_>) {
        let (op, serial) = (handler.op, handler.serial);
        let to = ReplyTo { op, attempt: handler.attempt, server };
        let slot = self.op(op).slot;
        let response = self.response(op, serial);
        let atomic = self.config.mode == Mode::Atomic;
        let pending = self.writes_in_transaction();
        if Self::store_call_fails(state) {
            self.met_fault(state, op);
            tell.tell(|| StoryEvent::Completing {
                server,
                op,
                fence: handler.fence,
                presented: handler.fence,
                pending,
            });
            if atomic {
                tell.tell(|| StoryEvent::CompletionStoreDown { unrecorded: None });
                return self.answer(state, to, Self::unavailable(), None, tell);
            }
            tell.tell(|| StoryEvent::CompletionStoreDown { unrecorded: Some(response.clone()) });
            return self.answer(state, to, Answer::Unrecorded, Some(&response), tell);
        }
        let believed = handler.believed.as_ref();
        let presented = match self.config.variant {
            // Bug: present whatever fence the record holds, so the check always passes.
            Variant::NoFenceCheck => self.claim_in_flight(state, slot).map_or(handler.fence, |(fence, _)| fence),
            _ => handler.fence,
        };
        let (now, policy) = (self.server_now(state, server), self.policy);
        let before = state.store.memory.record(self.slot_id(slot)).cloned();
        let synced = !matches!(self.config.variant, Variant::UnsyncedCompletion | Variant::CompletionApart);
        if !synced {
            // Bug: the completion's commit does not wait for the disk.
            self.write_unsynced(state);
        }
        let outcome = if atomic {
            let completion = op::CompleteInTransaction { fence: presented, response: response.clone(), now, policy };
            self.store_step(state, slot, believed, completion)
        } else {
            let completion = op::Complete { fence: presented, response: response.clone(), now, policy };
            self.store_step(state, slot, believed, completion)
        }
        .expect("a completion admits nothing and issues no fence, so the step never refuses it");
        tell.tell(|| StoryEvent::Completing { server, op, fence: handler.fence, presented, pending });
        match outcome {
            Fenced::Applied => {
                self.check_applied(state, &handler);
                if pending {
                    // The transaction commits the payment row with the completion.
                    state.store.ledger.push(Execution { op, serial, life: handler.life });
                }
                let ghost = &mut state.ghost.slots[usize::from(slot)];
                if ghost.first_response.is_none() {
                    ghost.first_response = Some((op, serial));
                }
                if let (None, Some(period)) = (ghost.tombstone, self.policy.tombstone()) {
                    // The model's own reading of SPEC: retention from the completion, then the tombstone.
                    let retention_ends = now.saturating_add(self.policy.retention());
                    ghost.tombstone = Some((retention_ends, retention_ends.saturating_add(period)));
                }
                if synced {
                    // The commit waits for the disk, and with it everything committed before.
                    state.store.durable = None;
                }
                let disk = disk_of(self.config.variant, synced);
                tell.tell(|| StoryEvent::CompletionAccepted { disk, response: response.clone() });
                self.answer(state, to, Answer::Created, Some(&response), tell);
            }
            Fenced::Refused(refusal) => {
                self.check_unchanged(state, slot, before.as_ref());
                tell.tell(|| StoryEvent::CompletionRefused { refusal, rolled_back: pending });
                self.superseded(state, to, tell);
            }
        }
    }

    /// An execution that lost its claim answers what the record says now
    /// (`reply::superseded`), never its own response.
    fn superseded(&self, state: &mut State, to: ReplyTo, tell: &mut Tell<'_>) {
        let operation = self.op(to.op);
        let record = state.store.memory.record(self.slot_id(operation.slot));
        let request = ClaimRequest::new(operation.fingerprint);
        match reply::superseded(record, &request, self.server_now(state, to.server)) {
            Superseded::Replay { response, .. } => {
                tell.tell(|| StoryEvent::AnswersRecorded(response.clone()));
                self.answer(state, to, Answer::Replayed, Some(&response), tell);
            }
            Superseded::InProgress { lease_left, .. } => {
                let answer = self.conflict(lease_left);
                tell.tell(|| StoryEvent::AnswersConflict(answer));
                self.answer(state, to, answer, None, tell);
            }
            Superseded::Mismatch { .. } => {
                tell.tell(|| StoryEvent::AnswersMismatch);
                self.answer(state, to, Answer::Mismatch, None, tell);
            }
            Superseded::Gone { .. } => {
                tell.tell(|| StoryEvent::AnswersGone);
                self.answer(state, to, Answer::Gone, None, tell);
            }
        }
    }

    /// A handler fails with a 503, before its write or after it; idem-core's status rules
    /// say release, and the release goes through the store step. A write pending in the
    /// open transaction (atomic mode) rolls back with it; one that committed on its own
    /// (separate mode) stays, and the release lets a retry run it again.
    pub(super) fn fail(&self, state: &mut State, server: ServerIndex, serial: Serial, tell: &mut Tell<'_>) {
        state.budgets.failures -= 1;
        let index = Self::handler_index(state, server, serial);
        let handler = state.servers[usize::from(server)].handlers.remove(index);
        let (op, attempt) = (handler.op, handler.attempt);
        self.met_fault(state, op);
        let written = handler.stage == Stage::Written;
        let rolled_back = written && self.writes_in_transaction();
        tell.tell(|| StoryEvent::Fails { server, op, written, rolled_back });
        match StatusRules::default().disposition(FAILURE_STATUS) {
            Disposition::Release => {}
            Disposition::Record => unreachable!("idem-core's default status rules release a 5xx"),
        }
        let to = ReplyTo { op, attempt, server };
        if handler.believed.is_some() {
            // Under check-then-act there is no claim to give back.
            tell.tell(|| StoryEvent::NothingToRelease);
            return self.answer(state, to, Answer::Failed, None, tell);
        }
        if Self::store_call_fails(state) {
            self.met_fault(state, op);
            tell.tell(|| StoryEvent::ReleaseStoreDown);
            return self.answer(state, to, Answer::Failed, None, tell);
        }
        self.release(state, to, &handler, tell);
    }

    /// The release of a failed handler's claim through the store step.
    fn release(&self, state: &mut State, to: ReplyTo, handler: &Handler, tell: &mut Tell<'_>) {
        let slot = self.op(to.op).slot;
        let fence = handler.fence;
        let before = state.store.memory.record(self.slot_id(slot)).cloned();
        self.write_unsynced(state);
        let outcome = self
            .store_step(state, slot, None, op::Release { fence })
            .expect("a release admits nothing and issues no fence, so the step never refuses it");
        match outcome {
            Fenced::Applied => {
                self.check_applied(state, handler);
                let ghost = &mut state.ghost.slots[usize::from(slot)];
                (ghost.current, ghost.owner, ghost.lease_bound) = (None, None, None);
                tell.tell(|| StoryEvent::Released(fence));
                self.answer(state, to, Answer::Failed, None, tell);
            }
            Fenced::Refused(Refusal::NoRecord) => {
                self.check_unchanged(state, slot, before.as_ref());
                tell.tell(|| StoryEvent::ReleaseRefusedNoRecord(fence));
                self.answer(state, to, Answer::Failed, None, tell);
            }
            Fenced::Refused(refusal) => {
                self.check_unchanged(state, slot, before.as_ref());
                tell.tell(|| StoryEvent::ReleaseRefused { fence, refusal });
                self.superseded(state, to, tell);
            }
        }
    }

    /// G3: a completion, release or renewal the store applied must be the current claim's
    /// (the ghost grant), and granted since the record id was last forgotten.
    fn check_applied(&self, state: &mut State, handler: &Handler) {
        let ghost = state.ghost.slots[usize::from(self.op(handler.op).slot)];
        if ghost.current != Some(handler.serial) {
            state.mark(Broken::StaleWrite);
        }
        if handler.life != ghost.lives {
            state.mark(Broken::Forgotten);
        }
    }

    /// A handler renews its lease through the store step; a refused renewal means it was
    /// taken over: it stops and answers what the record says (`reply::superseded`).
    pub(super) fn renew(&self, state: &mut State, server: ServerIndex, serial: Serial, tell: &mut Tell<'_>) {
        let index = Self::handler_index(state, server, serial);
        let handler = state.servers[usize::from(server)].handlers[index].clone();
        let (op, fence) = (handler.op, handler.fence);
        let slot = self.op(op).slot;
        let now = self.renewal_due(&handler, state.store.now);
        state.store.now = now;
        // The renewal carries the server's own clock, the heartbeat runs on it too: a
        // constant offset moves neither the schedule nor the lease's length.
        let server_now = self.server_now(state, server);
        let before = state.store.memory.record(self.slot_id(slot)).cloned();
        self.write_unsynced(state);
        let outcome = self
            .store_step(state, slot, None, op::Renew { fence, now: server_now, policy: self.policy })
            .expect("a renewal admits nothing and issues no fence, so the step never refuses it");
        match outcome {
            Renewal::Renewed { lease_expires_at } => {
                self.check_applied(state, &handler);
                let running = &mut state.servers[usize::from(server)].handlers[index];
                running.renewed_at = now;
                if running.pace == Pace::Stalled {
                    // The pause is over; the handler has overrun its time, so it is slow now.
                    running.pace = Pace::Slow;
                }
                tell.tell(|| StoryEvent::Renewed { server, op, fence, at: now, lease_expires_at });
            }
            Renewal::Refused(refusal) => {
                self.check_unchanged(state, slot, before.as_ref());
                state.servers[usize::from(server)].handlers.remove(index);
                tell.tell(|| StoryEvent::RenewalRefused { server, op, fence, at: now, refusal });
                self.superseded(state, ReplyTo { op, attempt: handler.attempt, server }, tell);
            }
        }
    }
}
