//! A handler running under a claim: its side effect, its completion (fenced
//! `CompleteInTransaction` or `Complete`) and `consume::after_completion`, its failure and
//! release with `consume::after_failure`, its renewals with progress, and how a run that
//! lost its claim settles (`consume::superseded`).

use idem_core::consume::{self, Settle};
use idem_core::step::op;
use idem_core::{Bytes, Fenced, Record, Renewal, StoreError, StoredOutcome, StoredResponse};

use super::broker::sent;
use super::event::{ConsumerEvent, Sent};
use super::state::{ConsumerIndex, ConsumerState, CopyPhase, Happened, Run, RunPhase};
use super::{BrokerKind, ConsumerAction, ConsumerModel, ConsumerVariant, Tell, index};
use crate::message::Serial;
use crate::model::store::{call_fails, run_on};
use crate::state::{Broken, Execution};

impl ConsumerModel {
    /// The steps of running handlers enabled in `state`, and crashes of busy consumers.
    pub(super) fn offer_run_steps(&self, state: &ConsumerState, actions: &mut Vec<ConsumerAction>) {
        let now = state.store.now;
        for (consumer, held) in state.consumers.iter().enumerate() {
            let consumer = index(consumer);
            for run in &held.runs {
                let serial = run.serial;
                match run.phase {
                    RunPhase::Claimed => actions.push(ConsumerAction::Write { consumer, serial }),
                    RunPhase::Written | RunPhase::AckedEarly => {
                        actions.push(ConsumerAction::Complete { consumer, serial });
                    }
                    RunPhase::Acking => {
                        actions.push(ConsumerAction::Ack { consumer, serial, stale_applies: false });
                        if self.ack_is_stale(state, consumer, run) && self.config.broker == BrokerKind::AckWait {
                            actions.push(ConsumerAction::Ack { consumer, serial, stale_applies: true });
                        }
                        if state.budgets.lost_acks > 0 {
                            actions.push(ConsumerAction::LoseAck { consumer, serial });
                        }
                        continue;
                    }
                }
                if state.budgets.failures > 0 && run.phase != RunPhase::AckedEarly {
                    actions.push(ConsumerAction::Fail { consumer, serial });
                }
                if !run.stalled && run.believed.is_none() {
                    if self.may_reach(state, self.renewal_due(run, now)) {
                        actions.push(ConsumerAction::Renew { consumer, serial });
                    }
                    if state.budgets.stalls > 0 {
                        actions.push(ConsumerAction::Stall { consumer, serial });
                    }
                }
            }
            if state.budgets.crashes > 0 && !held.runs.is_empty() {
                actions.push(ConsumerAction::Crash { consumer });
            }
        }
    }

    /// Whether `run`'s ack is for a delivery the broker no longer has out (and not settled).
    fn ack_is_stale(&self, state: &ConsumerState, consumer: ConsumerIndex, run: &Run) -> bool {
        let held = &state.copies[usize::from(run.copy)];
        match held.phase {
            CopyPhase::Out { consumer: on, .. } => on != consumer || held.deliveries != run.delivery,
            CopyPhase::Ready { .. } => true,
            CopyPhase::Acked | CopyPhase::DeadLettered(_) => false,
        }
    }

    fn run_mut(state: &mut ConsumerState, consumer: ConsumerIndex, serial: Serial) -> &mut Run {
        state.consumers[usize::from(consumer)]
            .runs
            .iter_mut()
            .find(|run| run.serial == serial)
            .expect("actions name running handlers only")
    }

    /// What execution `serial` of `copy` records: its label and its grant.
    fn outcome(&self, run: &Run) -> StoredOutcome {
        StoredOutcome::bytes(Bytes::from(format!("{}#{}", self.copy(run.copy).label, run.serial)))
    }

    /// The handler writes its side effect: pending in the claim's transaction (atomic mode)
    /// or committed at once (separate mode, and the inbox bug). Variant
    /// `ack-before-completion` acks now, as the handler returned.
    pub(super) fn write(
        &self,
        state: &mut ConsumerState,
        consumer: ConsumerIndex,
        serial: Serial,
        tell: &mut Tell<'_>,
    ) {
        let commits_now = !self.writes_in_transaction();
        let run = Self::run_mut(state, consumer, serial);
        run.phase = RunPhase::Written;
        let (copy, delivery) = (run.copy, run.delivery);
        if commits_now {
            state.store.ledger.push(Execution { op: copy, serial, life: 0 });
        }
        tell.tell(|| {
            let message = self.copy(copy).message;
            let effects = state.store.ledger.iter().filter(|e| self.copy(e.op).message == message).count();
            ConsumerEvent::Wrote { consumer, copy, effects: commits_now.then_some(effects) }
        });
        if self.config.variant == ConsumerVariant::AckBeforeCompletion {
            // Bug: the handler returned, so ack; the completion comes next.
            Self::run_mut(state, consumer, serial).phase = RunPhase::AckedEarly;
            self.settle(state, (consumer, copy, delivery), Sent::Ack, false, tell);
        }
    }

    /// The completion through the store step; `consume::after_completion` on its answer.
    pub(super) fn complete(
        &self,
        state: &mut ConsumerState,
        consumer: ConsumerIndex,
        serial: Serial,
        tell: &mut Tell<'_>,
    ) {
        let mut run = self.take_run(state, consumer, serial);
        let pending = self.writes_in_transaction();
        let (copy, fence) = (run.copy, run.fence);
        tell.tell(|| ConsumerEvent::Completing { consumer, copy, fence, pending });
        if call_fails(&mut state.store) {
            // Atomic mode rolls the side effect back with the transaction; separate mode
            // keeps it. Either way nothing is recorded, so never ack: redeliver.
            tell.tell(|| ConsumerEvent::CompletionStoreDown { rolled_back: pending });
            let settle = consume::store_failed(&StoreError::unavailable("the store is down"), &self.rules);
            return self.finish(state, consumer, run, settle, tell);
        }
        let id = self.id_of(copy).clone();
        let outcome = self.outcome(&run);
        let response = StoredResponse::from(outcome.clone());
        let now = state.store.now;
        let before = state.store.memory.record(&id).cloned();
        let believed = run.believed.as_ref();
        let fenced = if pending {
            let completion = op::CompleteInTransaction { fence, response, now, policy: self.policy };
            run_on(&mut state.store.memory, &id, believed, completion)
        } else {
            let completion = op::Complete { fence, response, now, policy: self.policy };
            run_on(&mut state.store.memory, &id, believed, completion)
        }
        .expect("a completion admits nothing and issues no fence, so the step never refuses it");
        let refusal = match &fenced {
            Fenced::Refused(refusal) => Some(*refusal),
            Fenced::Applied => None,
        };
        match consume::after_completion(fenced, outcome) {
            Some(Settle::Ack(_)) => {
                self.check_current(state, copy, serial);
                if pending {
                    // The transaction commits the side effect with the completion.
                    state.store.ledger.push(Execution { op: copy, serial, life: 0 });
                }
                tell.tell(|| ConsumerEvent::CompletionAccepted);
                run.phase = RunPhase::Acking;
                state.consumers[usize::from(consumer)].runs.push(run);
            }
            Some(other) => unreachable!("after_completion settles an applied completion by an ack, not {other:?}"),
            None => {
                self.check_unchanged(state, copy, before.as_ref());
                let refusal = refusal.expect("after_completion gives no settle only for a refusal");
                tell.tell(|| ConsumerEvent::CompletionRefused { refusal, rolled_back: pending });
                let settle = self.superseded(state, copy);
                self.finish(state, consumer, run, settle, tell);
            }
        }
    }

    /// How a run that lost its claim settles: `consume::superseded` on the record as stored.
    fn superseded(&self, state: &ConsumerState, copy: u8) -> Settle {
        let record = state.store.memory.record(self.id_of(copy));
        consume::superseded(record, &self.copy(copy).fingerprint.into(), state.store.now, &self.rules)
    }

    /// Ends a run with `settle`: an ack waits for its own step (a crash may come first); a
    /// nak or a dead letter goes to the broker at once.
    fn finish(
        &self,
        state: &mut ConsumerState,
        consumer: ConsumerIndex,
        mut run: Run,
        settle: Settle,
        tell: &mut Tell<'_>,
    ) {
        if matches!(settle, Settle::Ack(_)) {
            run.phase = RunPhase::Acking;
            state.consumers[usize::from(consumer)].runs.push(run);
            return;
        }
        self.settle(state, (consumer, run.copy, run.delivery), sent(&settle), false, tell);
    }

    /// G3: an applied completion, release or renewal belongs to the current claim.
    fn check_current(&self, state: &mut ConsumerState, copy: u8, serial: Serial) {
        if state.ghost.current[usize::from(self.copy(copy).message)] != Some(serial) {
            state.mark(Broken::StaleWrite as u16);
        }
    }

    /// G3: a refused operation leaves the record as it was.
    fn check_unchanged(&self, state: &mut ConsumerState, copy: u8, before: Option<&Record>) {
        if state.store.memory.record(self.id_of(copy)) != before {
            state.mark(Broken::RefusedChanged as u16);
        }
    }

    /// A handler fails, before its write or after it: a pending write rolls back; the claim
    /// is released, and `consume::after_failure` says nak or dead-letter.
    pub(super) fn fail(&self, state: &mut ConsumerState, consumer: ConsumerIndex, serial: Serial, tell: &mut Tell<'_>) {
        state.budgets.failures -= 1;
        let run = self.take_run(state, consumer, serial);
        let written = run.phase == RunPhase::Written;
        let rolled_back = written && self.writes_in_transaction();
        let copy = run.copy;
        tell.tell(|| ConsumerEvent::Fails { consumer, copy, written, rolled_back });
        let failed = consume::after_failure(Some(u32::from(run.delivery)), &self.rules);
        if run.believed.is_some() {
            tell.tell(|| ConsumerEvent::NothingToRelease);
            return self.finish(state, consumer, run, failed, tell);
        }
        if call_fails(&mut state.store) {
            tell.tell(|| ConsumerEvent::ReleaseStoreDown);
            let settle = consume::store_failed(&StoreError::unavailable("the store is down"), &self.rules);
            return self.finish(state, consumer, run, settle, tell);
        }
        let id = self.id_of(copy).clone();
        let before = state.store.memory.record(&id).cloned();
        let fence = run.fence;
        let released = run_on(&mut state.store.memory, &id, None, op::Release { fence })
            .expect("a release admits nothing and issues no fence, so the step never refuses it");
        match released {
            Fenced::Applied => {
                self.check_current(state, copy, serial);
                state.ghost.current[usize::from(self.copy(copy).message)] = None;
                tell.tell(|| ConsumerEvent::Released(fence));
                self.finish(state, consumer, run, failed, tell);
            }
            Fenced::Refused(refusal) => {
                self.check_unchanged(state, copy, before.as_ref());
                tell.tell(|| ConsumerEvent::ReleaseRefused { fence, refusal });
                let settle = self.superseded(state, copy);
                self.finish(state, consumer, run, settle, tell);
            }
        }
    }

    /// A handler renews its lease at its heartbeat (the clock moves there); once the
    /// renewal is applied it sends progress, which under `AckWait` moves its copy's ack
    /// deadline. A refused renewal means its claim was lost: it stops and settles.
    pub(super) fn renew(
        &self,
        state: &mut ConsumerState,
        consumer: ConsumerIndex,
        serial: Serial,
        tell: &mut Tell<'_>,
    ) {
        let now = state.store.now;
        let run = Self::run_mut(state, consumer, serial);
        let at = self.renewal_due(run, now);
        let (copy, fence, delivery) = (run.copy, run.fence, run.delivery);
        run.renewed_at = at;
        state.store.now = at;
        if call_fails(&mut state.store) {
            // No renewal, so no progress: the broker's timer must not outlive the lease.
            tell.tell(|| ConsumerEvent::RenewalStoreDown { consumer, at });
            return;
        }
        let id = self.id_of(copy).clone();
        let before = state.store.memory.record(&id).cloned();
        let renewal = run_on(&mut state.store.memory, &id, None, op::Renew { fence, now: at, policy: self.policy })
            .expect("a renewal admits nothing and issues no fence, so the step never refuses it");
        match renewal {
            Renewal::Renewed { lease_expires_at } => {
                self.check_current(state, copy, serial);
                let held = &mut state.copies[usize::from(copy)];
                let mut moved = None;
                if let CopyPhase::Out { consumer: on, deadline: Some(deadline) } = &mut held.phase
                    && *on == consumer
                    && held.deliveries == delivery
                {
                    *deadline = at.saturating_add(self.ack_wait);
                    moved = Some(*deadline);
                }
                if moved.is_some() {
                    state.saw(Happened::ProgressExtended);
                }
                tell.tell(|| ConsumerEvent::Renewed {
                    consumer,
                    copy,
                    at,
                    lease_until: lease_expires_at,
                    deadline: moved,
                });
            }
            Renewal::Refused(refusal) => {
                self.check_unchanged(state, copy, before.as_ref());
                let run = self.take_run(state, consumer, serial);
                tell.tell(|| ConsumerEvent::RenewalRefused { consumer, copy, at, refusal });
                let settle = self.superseded(state, copy);
                self.finish(state, consumer, run, settle, tell);
            }
        }
    }

    /// A handler stalls: it renews no more and sends no progress.
    pub(super) fn stall(
        &self,
        state: &mut ConsumerState,
        consumer: ConsumerIndex,
        serial: Serial,
        tell: &mut Tell<'_>,
    ) {
        state.budgets.stalls -= 1;
        let run = Self::run_mut(state, consumer, serial);
        run.stalled = true;
        let (copy, fence) = (run.copy, run.fence);
        tell.tell(|| ConsumerEvent::Stalls { consumer, copy, fence });
    }
}
