//! The broker: delivering a copy (and the consumer's claim and `consume::handle` on it),
//! applying acks, naks and dead letters, redelivery after an ack deadline, timeouts under
//! a live handler, closed channels, and consumer crashes.

use idem_core::consume::{self, Handle, Settle};
use idem_core::step::{self, op};
use idem_core::{DeadLetterReason, Decision, Record, StoreError, Timestamp, Write};

use super::event::{Applied, ConsumerEvent, Decided, Sent, Why};
use super::state::{ConsumerBroken, ConsumerIndex, ConsumerState, CopyIndex, CopyPhase, Happened, Run, RunPhase};
use super::{BrokerKind, ConsumerAction, ConsumerModel, ConsumerVariant, Tell, index};
use crate::model::store::call_fails;
use crate::state::Broken;

impl ConsumerModel {
    /// The broker's steps enabled in `state`, and the faults that act on the broker.
    pub(super) fn offer_broker_steps(&self, state: &ConsumerState, actions: &mut Vec<ConsumerAction>) {
        let ack_wait = self.config.broker == BrokerKind::AckWait;
        for (copy, held) in state.copies.iter().enumerate() {
            let copy = index(copy);
            let due = match held.phase {
                CopyPhase::Ready { at } => Some(at),
                CopyPhase::Out { deadline, .. } => deadline,
                CopyPhase::Acked | CopyPhase::DeadLettered(_) => None,
            };
            if let Some(due) = due
                && self.may_reach(state, due)
            {
                // A consumer takes a delivery only while it runs fewer than its prefetch.
                let free = |consumer: &u8| {
                    state.consumers[usize::from(*consumer)].runs.len() < usize::from(self.config.in_flight_max)
                };
                actions.extend(
                    (0..self.config.consumers).filter(free).map(|consumer| ConsumerAction::Deliver { copy, consumer }),
                );
            }
            let alive = state.runs().any(|(_, run)| run.copy == copy && run.delivery == held.deliveries);
            if ack_wait && state.budgets.timeouts > 0 && alive && matches!(held.phase, CopyPhase::Out { .. }) {
                actions.push(ConsumerAction::TimeOut { copy });
            }
        }
        if !ack_wait && state.budgets.timeouts > 0 {
            for consumer in 0..self.config.consumers {
                if !self.held_by(state, consumer).is_empty() {
                    actions.push(ConsumerAction::CloseChannel { consumer });
                }
            }
        }
        let calls_left = state.runs().any(|(_, run)| run.phase != RunPhase::Acking)
            || state.copies.iter().any(|copy| matches!(copy.phase, CopyPhase::Ready { .. }))
            || (ack_wait && state.copies.iter().any(|copy| matches!(copy.phase, CopyPhase::Out { .. })));
        if state.budgets.outages > 0 && state.store.up && calls_left {
            actions.push(ConsumerAction::StoreDown);
        }
    }

    /// The copies a consumer holds (out to it).
    fn held_by(&self, state: &ConsumerState, consumer: ConsumerIndex) -> Vec<CopyIndex> {
        state
            .copies
            .iter()
            .enumerate()
            .filter(|(_, copy)| matches!(copy.phase, CopyPhase::Out { consumer: on, .. } if on == consumer))
            .map(|(copy, _)| index(copy))
            .collect()
    }

    /// Requeues every copy out to `consumer`, at once (its channel closed).
    fn requeue(&self, state: &mut ConsumerState, consumer: ConsumerIndex) -> Vec<CopyIndex> {
        let held = self.held_by(state, consumer);
        let now = state.store.now;
        for copy in &held {
            state.copies[usize::from(*copy)].phase = CopyPhase::Ready { at: now };
        }
        if !held.is_empty() {
            state.saw(Happened::ChannelRequeued);
        }
        held
    }

    /// The broker delivers `copy` to `consumer`; the consumer claims its record through the
    /// store step and acts on `consume::handle`.
    pub(super) fn deliver(
        &self,
        state: &mut ConsumerState,
        copy: CopyIndex,
        consumer: ConsumerIndex,
        tell: &mut Tell<'_>,
    ) {
        let held = &mut state.copies[usize::from(copy)];
        let (at, why) = match held.phase {
            CopyPhase::Ready { at } if held.deliveries == 0 => (at, Why::First),
            CopyPhase::Ready { at } => (at, Why::Again),
            CopyPhase::Out { deadline: Some(deadline), .. } => (deadline, Why::AckTimeout),
            _ => unreachable!("only ready copies and copies past their ack deadline are delivered"),
        };
        let now = at.max(state.store.now);
        state.store.now = now;
        held.deliveries += 1;
        let delivery = held.deliveries;
        let deadline = (self.config.broker == BrokerKind::AckWait).then(|| now.saturating_add(self.ack_wait));
        held.phase = CopyPhase::Out { consumer, deadline };
        if why == Why::AckTimeout {
            state.saw(Happened::RedeliveredAfterAckTimeout);
        }
        tell.tell(|| ConsumerEvent::Delivered { copy, consumer, delivery, at: now, why });
        if call_fails(&mut state.store) {
            tell.tell(|| ConsumerEvent::StoreDownAtClaim);
            let settle = consume::store_failed(&StoreError::unavailable("the store is down"), &self.rules);
            return self.settle(state, (consumer, copy, delivery), sent(&settle), false, tell);
        }
        let (decision, believed) = self.claim(state, copy, now);
        let decided = decided_of(&decision, believed.is_none());
        tell.tell(|| ConsumerEvent::Decided(decided));
        match consume::handle(decision, &self.rules) {
            Handle::Run(claim) => {
                let run = Run {
                    serial: 0,
                    copy,
                    delivery,
                    fence: claim.fence,
                    phase: RunPhase::Claimed,
                    started_at: now,
                    renewed_at: now,
                    stalled: false,
                    believed,
                };
                self.start_run(state, consumer, run, decided);
            }
            Handle::Settle(settle) => {
                match (&settle, decided) {
                    (Settle::Ack(_), _) => state.saw(Happened::ReplayAcked),
                    (Settle::Redeliver { .. }, Decided::Conflict) => state.saw(Happened::ConflictNaked),
                    _ => {}
                }
                self.settle(state, (consumer, copy, delivery), sent(&settle), false, tell);
            }
        }
    }

    /// The consumer's claim for `copy`'s message at `now`, through the store step; under
    /// [`ConsumerVariant::CheckThenAct`] the claim is decided but never written, and the
    /// record the consumer believes it wrote comes back beside the decision.
    fn claim(&self, state: &mut ConsumerState, copy: CopyIndex, now: Timestamp) -> (Decision, Option<Record>) {
        let id = self.id_of(copy).clone();
        let claim = op::Claim { request: self.copy(copy).fingerprint.into(), now, policy: self.policy };
        if self.config.variant != ConsumerVariant::CheckThenAct {
            let decision =
                state.store.memory.run(&id, claim).expect("the model's few records are far below the limits");
            return (decision, None);
        }
        // Bug: look up and decide, but never write the claim (the fence is still drawn).
        let view = state.store.memory.view(&id);
        let mut step = step::step(&id, &view, claim).expect("the model's few records are far below the limits");
        let believed = match &step.write {
            Write::Put(record) => Some(record.clone()),
            _ => None,
        };
        if believed.is_some() {
            step.write = Write::Unchanged;
        }
        (state.store.memory.commit(&id, step), believed)
    }

    /// Starts `run` (its serial not yet drawn) for the consumer, which `decided` to run
    /// it: draws the run's ghost serial and records whose payload the message now carries.
    fn start_run(&self, state: &mut ConsumerState, consumer: ConsumerIndex, mut run: Run, decided: Decided) {
        let published = self.copy(run.copy);
        let serial = state.ghost.serials.checked_add(1).expect("fewer than 65536 claims in a bounded model");
        state.ghost.serials = serial;
        let message = usize::from(published.message);
        state.ghost.current[message] = Some(serial);
        match decided {
            Decided::TakeOver { .. } => {
                state.saw(Happened::TakeOver);
                if state.ghost.owner[message] != Some(published.payload) {
                    state.mark(Broken::Mismatch as u16);
                }
            }
            _ => state.ghost.owner[message] = Some(published.payload),
        }
        run.serial = serial;
        state.consumers[usize::from(consumer)].runs.push(run);
    }

    /// The broker applies a consumer's settle of delivery `delivery` of `copy`: to the
    /// current delivery always; a stale ack under `AckWait` when `stale_applies`; any other
    /// stale settle never.
    pub(super) fn settle(
        &self,
        state: &mut ConsumerState,
        (consumer, copy, delivery): (ConsumerIndex, CopyIndex, u8),
        sent: Sent,
        stale_applies: bool,
        tell: &mut Tell<'_>,
    ) {
        if let Sent::DeadLetter(reason) = sent {
            state.saw(Happened::DeadLettered);
            if !self.dead_letter_allowed(state, copy, reason) {
                state.mark(ConsumerBroken::WrongDeadLetter as u16);
            }
        }
        let now = state.store.now;
        let held = &mut state.copies[usize::from(copy)];
        let current =
            held.deliveries == delivery && matches!(held.phase, CopyPhase::Out { consumer: on, .. } if on == consumer);
        let applied = match held.phase {
            CopyPhase::Acked | CopyPhase::DeadLettered(_) => Applied::AlreadySettled,
            _ if current => Applied::Current,
            _ if sent == Sent::Ack && self.config.broker == BrokerKind::AckWait && stale_applies => {
                Applied::StaleApplied
            }
            _ => Applied::StaleIgnored,
        };
        if matches!(applied, Applied::Current | Applied::StaleApplied) {
            held.phase = match sent {
                Sent::Ack => CopyPhase::Acked,
                Sent::Nak(after) => CopyPhase::Ready { at: now.saturating_add(after) },
                Sent::DeadLetter(reason) => CopyPhase::DeadLettered(reason),
            };
        }
        tell.tell(|| ConsumerEvent::Settles { consumer, copy, sent, applied });
    }

    /// Whether a dead letter for `copy` with `reason` is one the configuration allows: a
    /// mismatch (its payload is not the one the record was created for), or a handler that
    /// gave up when handler attempts are bounded.
    fn dead_letter_allowed(&self, state: &ConsumerState, copy: CopyIndex, reason: DeadLetterReason) -> bool {
        let published = self.copy(copy);
        match reason {
            DeadLetterReason::KeyReused => {
                state.ghost.owner[usize::from(published.message)].is_some_and(|owner| owner != published.payload)
            }
            DeadLetterReason::HandlerGaveUp => self.config.handler_attempts_max.is_some(),
            _ => false,
        }
    }

    /// `AckWait`: the ack deadline runs out under a live handler (its progress was lost).
    pub(super) fn time_out(&self, state: &mut ConsumerState, copy: CopyIndex, tell: &mut Tell<'_>) {
        state.budgets.timeouts -= 1;
        state.copies[usize::from(copy)].phase = CopyPhase::Ready { at: state.store.now };
        tell.tell(|| ConsumerEvent::TimedOut { copy });
    }

    /// `ChannelClose`: a live consumer's channel closes; its copies are requeued, its
    /// handlers keep running (their acks will be stale).
    pub(super) fn close_channel(&self, state: &mut ConsumerState, consumer: ConsumerIndex, tell: &mut Tell<'_>) {
        state.budgets.timeouts -= 1;
        let requeued = self.requeue(state, consumer);
        tell.tell(|| ConsumerEvent::ChannelClosed { consumer, requeued });
    }

    /// A consumer crashes and restarts: its handlers are lost (a write pending in a
    /// transaction rolls back with it); under `ChannelClose` its copies are requeued at once,
    /// under `AckWait` they come back at their deadlines.
    pub(super) fn crash(&self, state: &mut ConsumerState, consumer: ConsumerIndex, tell: &mut Tell<'_>) {
        state.budgets.crashes -= 1;
        let lost = std::mem::take(&mut state.consumers[usize::from(consumer)].runs);
        if lost.iter().any(|run| run.phase == RunPhase::Acking) {
            state.saw(Happened::CrashAfterCommit);
        }
        let requeued =
            if self.config.broker == BrokerKind::ChannelClose { self.requeue(state, consumer) } else { Vec::new() };
        tell.tell(|| ConsumerEvent::Crashes {
            consumer,
            lost: lost.iter().map(|run| (run.copy, run.phase == RunPhase::Acking)).collect(),
            requeued,
        });
    }

    /// A handler's ack is lost. Under `ChannelClose` only a broken connection loses it, so
    /// the channel closes and requeues every copy the consumer holds.
    pub(super) fn lose_ack(
        &self,
        state: &mut ConsumerState,
        consumer: ConsumerIndex,
        serial: u16,
        tell: &mut Tell<'_>,
    ) {
        state.budgets.lost_acks -= 1;
        let run = self.take_run(state, consumer, serial);
        state.saw(Happened::AckLost);
        let requeued = (self.config.broker == BrokerKind::ChannelClose).then(|| self.requeue(state, consumer));
        tell.tell(|| ConsumerEvent::AckLost { consumer, copy: run.copy, requeued });
    }

    /// A run whose record is completed sends its ack.
    pub(super) fn send_ack(
        &self,
        state: &mut ConsumerState,
        consumer: ConsumerIndex,
        serial: u16,
        stale_applies: bool,
        tell: &mut Tell<'_>,
    ) {
        let run = self.take_run(state, consumer, serial);
        self.settle(state, (consumer, run.copy, run.delivery), Sent::Ack, stale_applies, tell);
    }

    /// Removes a running handler from its consumer.
    pub(super) fn take_run(&self, state: &mut ConsumerState, consumer: ConsumerIndex, serial: u16) -> Run {
        let runs = &mut state.consumers[usize::from(consumer)].runs;
        let at = runs.iter().position(|run| run.serial == serial).expect("actions name running handlers only");
        runs.remove(at)
    }
}

/// What a settle sends to the broker.
pub(super) fn sent(settle: &Settle) -> Sent {
    match settle {
        Settle::Ack(_) => Sent::Ack,
        Settle::Redeliver { after } => Sent::Nak(*after),
        Settle::DeadLetter(reason) => Sent::DeadLetter(*reason),
    }
}

/// What a story says the store decided; `written` is false when the claim was decided but
/// never written (the planted check-then-act bug).
fn decided_of(decision: &Decision, written: bool) -> Decided {
    match decision {
        Decision::Execute(claim) => {
            Decided::Execute { fence: claim.fence, lease_until: claim.lease_expires_at, written }
        }
        Decision::TakeOver { claim, stale } => Decided::TakeOver { fence: claim.fence, stale: *stale },
        Decision::Replay { .. } => Decided::Replay,
        Decision::Conflict { .. } => Decided::Conflict,
        Decision::Mismatch { .. } => Decided::Mismatch,
        Decision::Gone { .. } => Decided::Gone,
    }
}
