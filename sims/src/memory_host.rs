//! The idempotency records of a store host that runs the core's own store step: a
//! [`MemoryState`], with the planted bugs that live in a store (`no-claim`,
//! `no-fence-check`, `purge-drops-tombstones`; `fence-reset` is the host state's). Each
//! operation is recorded as a store event for the checker.

use idem_core::step::{self, Step, op};
use idem_core::{
    ClaimRequest, Decision, Fence, Fenced, MemoryState, Policy, RecordId, Renewal, StoredResponse, Timestamp,
    UsageDelta, Write,
};

use crate::Variant;
use crate::history::{Kind, Recorder, StoreEvent, StoreOp};
use crate::store_protocol::{Answer, decision_text, held};

/// One operation on the host's [`MemoryState`]: the store, and who asks in which lifetime
/// of the host, as the variant says.
pub(crate) struct Memory<'a> {
    pub(crate) store: &'a mut MemoryState,
    pub(crate) variant: Variant,
    pub(crate) replica: usize,
    /// The store host's lifetime.
    pub(crate) epoch: u32,
    pub(crate) recorder: &'a Recorder,
}

impl Memory<'_> {
    /// The event of `op` on `id`, with the record as it is before.
    fn event(&self, op: StoreOp, id: &RecordId, presented: Option<Fence>) -> StoreEvent {
        StoreEvent::new(self.replica, self.epoch, op, id, presented, held(self.store.record(id)))
    }

    /// The fence a fenced operation runs with: the one presented, except under the planted
    /// bug `no-fence-check`, where it is the record's own.
    fn fence_for(&self, id: &RecordId, presented: Fence) -> Fence {
        match self.variant {
            Variant::NoFenceCheck => self.store.record(id).map_or(presented, |record| record.fence),
            _ => presented,
        }
    }

    fn record(&self, ev: StoreEvent) {
        self.recorder.record(Kind::Store(Box::new(ev)));
    }

    pub(crate) fn claim(self, id: &RecordId, request: ClaimRequest, now: Timestamp, policy: Policy) -> Answer {
        let mut ev = self.event(StoreOp::Claim, id, None);
        ev.request = Some(request.clone());
        let claim = op::Claim { request, now, policy };
        let answer = match step::step(id, &self.store.view(id), claim) {
            Err(error) => {
                ev.answer = format!("refused: {error}");
                Answer::Refused(error.into())
            }
            Ok(step) => {
                let executes = matches!(step.answer, Decision::Execute(_) | Decision::TakeOver { .. });
                // The planted bug `no-claim`: answer "execute" without writing the claim
                // (the fence counter still moves, so fences stay unique).
                let step = if executes && self.variant == Variant::NoClaim {
                    Step { write: Write::Unchanged, usage: UsageDelta::NONE, ..step }
                } else {
                    step
                };
                let written = matches!(step.write, Write::Put(_));
                let decision = self.store.commit(id, step);
                ev.issued = match &decision {
                    Decision::Execute(claim) | Decision::TakeOver { claim, .. } => Some((claim.fence, written)),
                    _ => None,
                };
                ev.answer = decision_text(&decision);
                Answer::Decision(decision)
            }
        };
        self.record(ev);
        answer
    }

    pub(crate) fn complete(
        mut self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: Policy,
    ) -> Answer {
        let mut ev = self.event(StoreOp::Complete, id, Some(fence));
        let operation = op::Complete { fence: self.fence_for(id, fence), response: response.clone(), now, policy };
        let answer = self.fenced(id, operation, &mut ev, Some(response));
        self.record(ev);
        answer
    }

    /// A completion in one transaction with business rows (atomic mode); whether it applied
    /// says whether the rows commit with it.
    pub(crate) fn complete_in_transaction(
        mut self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: Policy,
    ) -> (Answer, bool) {
        let mut ev = self.event(StoreOp::CompleteInTransaction, id, Some(fence));
        let operation =
            op::CompleteInTransaction { fence: self.fence_for(id, fence), response: response.clone(), now, policy };
        let answer = self.fenced(id, operation, &mut ev, Some(response));
        let applied = ev.applied;
        self.record(ev);
        (answer, applied)
    }

    pub(crate) fn release(mut self, id: &RecordId, fence: Fence) -> Answer {
        let mut ev = self.event(StoreOp::Release, id, Some(fence));
        let operation = op::Release { fence: self.fence_for(id, fence) };
        let answer = self.fenced(id, operation, &mut ev, None);
        self.record(ev);
        answer
    }

    pub(crate) fn renew(self, id: &RecordId, fence: Fence, now: Timestamp, policy: Policy) -> Answer {
        let mut ev = self.event(StoreOp::Renew, id, Some(fence));
        let operation = op::Renew { fence: self.fence_for(id, fence), now, policy };
        let answer = match self.store.run(id, operation) {
            Ok(renewal) => {
                ev.applied = matches!(renewal, Renewal::Renewed { .. });
                ev.answer = format!("{renewal:?}");
                Answer::Renewal(renewal)
            }
            Err(error) => {
                ev.answer = format!("refused: {error}");
                Answer::Refused(error.into())
            }
        };
        self.record(ev);
        answer
    }

    /// One replay counted (best effort, `Store::count_replay`).
    pub(crate) fn count_replay(self, id: &RecordId, now: Timestamp) -> Answer {
        let mut ev = self.event(StoreOp::CountReplay, id, None);
        let answer = match self.store.run(id, op::CountReplay { now }) {
            Ok(counted) => {
                ev.applied = counted;
                ev.answer = if counted { "counted" } else { "not counted" }.to_owned();
                Answer::Counted(counted)
            }
            Err(error) => {
                ev.answer = format!("refused: {error}");
                Answer::Refused(error.into())
            }
        };
        self.record(ev);
        answer
    }

    pub(crate) fn purge(self, now: Timestamp, batch_max: usize) -> Answer {
        let count = if self.variant == Variant::PurgeDropsTombstones {
            purge_dropping_tombstones(self.store, now, batch_max)
        } else {
            self.store.purge_expired(now, batch_max)
        };
        if count > 0 {
            self.recorder.record(Kind::Purged { count });
        }
        Answer::Count(count)
    }

    /// Runs a fenced operation; `response` is what a completion records.
    fn fenced<O: step::Operation<Answer = Fenced>>(
        &mut self,
        id: &RecordId,
        operation: O,
        ev: &mut StoreEvent,
        response: Option<StoredResponse>,
    ) -> Answer {
        match self.store.run(id, operation) {
            Ok(fenced) => {
                ev.applied = fenced == Fenced::Applied;
                if ev.applied {
                    ev.recorded = response;
                }
                ev.answer = format!("{fenced:?}");
                Answer::Fenced(fenced)
            }
            Err(error) => {
                ev.answer = format!("refused: {error}");
                Answer::Refused(error.into())
            }
        }
    }
}

/// The planted `purge-drops-tombstones`: a purge that deletes every due record (the
/// operator's `op::Forget`, which removes whatever is there) where `op::Expire` would
/// shrink a completed record to its tombstone. Due records earliest first, as the store's
/// own purge takes them.
fn purge_dropping_tombstones(store: &mut MemoryState, now: Timestamp, batch_max: usize) -> usize {
    let due: Vec<RecordId> = store
        .records()
        .take_while(|(_, record)| record.due_at() <= now)
        .take(batch_max)
        .map(|(id, _)| id.clone())
        .collect();
    due.iter().filter(|id| matches!(store.run(id, op::Forget), Ok(Some(_)))).count()
}
