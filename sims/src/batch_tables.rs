//! The idempotency tables of the `sqlite-batch` store host, and one group commit's
//! decisions on them through idem-sqlite's own [`BatchDecision`]: the counters and the
//! batch's records are read into it, each operation is decided through it in order, and
//! its [`Changes`] are applied to the tables at the commit. The tables are `BTreeMap`s
//! standing in for SQL; see docs/sims.md. The queue and the batcher are
//! [`crate::batch_host`]'s.

use std::collections::BTreeMap;

use idem_core::step::{Counters, op};
use idem_core::{Decision, Fence, Fenced, Limits, Record, RecordId, Renewal, StoreError, Timestamp, Usage};
use idem_server::domain::Payment;
use idem_sqlite::batch_decision::{BatchDecision, Changes};

use crate::history::{Kind, Recorder, StoreEvent, StoreOp};
use crate::store_protocol::{Answer, Request, decision_text, held};

/// The idempotency tables as committed: `idem_records`, `idem_fence`, `idem_usage`.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    records: BTreeMap<RecordId, Record>,
    counters: Counters,
    limits: Limits,
}

impl Tables {
    pub(crate) fn new(first_fence: Fence) -> Tables {
        let counters = Counters { next_fence: first_fence, usage: Usage::default() };
        Tables { records: BTreeMap::new(), counters, limits: Limits::default() }
    }

    /// The committed record of `id` (what a reader connection reads).
    pub(crate) fn record(&self, id: &RecordId) -> Option<&Record> {
        self.records.get(id)
    }

    /// The flush and the commit: what the batch decided, written.
    fn commit(&mut self, changes: Changes) {
        for (id, record) in changes.puts {
            self.records.insert(id, record);
        }
        for id in &changes.deletes {
            self.records.remove(id);
        }
        if let Some((now, _)) = changes.counters {
            self.counters = now;
        }
    }
}

/// An idempotency operation as the core's step takes it.
enum Operation {
    Claim(op::Claim),
    Complete(op::Complete),
    CompleteInTransaction(op::CompleteInTransaction),
    Release(op::Release),
    Renew(op::Renew),
    CountReplay(op::CountReplay),
}

fn operation(request: &Request) -> Option<Operation> {
    Some(match request {
        Request::Claim { request, now, policy, .. } => {
            Operation::Claim(op::Claim { request: request.clone(), now: *now, policy: *policy })
        }
        Request::Complete { fence, response, now, policy, .. } => {
            Operation::Complete(op::Complete { fence: *fence, response: response.clone(), now: *now, policy: *policy })
        }
        Request::CompleteWithPayment { fence, response, now, policy, .. } => {
            Operation::CompleteInTransaction(op::CompleteInTransaction {
                fence: *fence,
                response: response.clone(),
                now: *now,
                policy: *policy,
            })
        }
        Request::Release { fence, .. } => Operation::Release(op::Release { fence: *fence }),
        Request::Renew { fence, now, policy, .. } => {
            Operation::Renew(op::Renew { fence: *fence, now: *now, policy: *policy })
        }
        // idem-sqlite counts a replay as one job of a group commit, as here.
        Request::CountReplay { now, .. } => Operation::CountReplay(op::CountReplay { now: *now }),
        _ => return None,
    })
}

/// The record id an idempotency operation decides on.
fn decided_on(request: &Request) -> Option<&RecordId> {
    match request {
        Request::Claim { id, .. }
        | Request::Complete { id, .. }
        | Request::CompleteWithPayment { id, .. }
        | Request::Release { id, .. }
        | Request::Renew { id, .. }
        | Request::CountReplay { id, .. } => Some(id),
        _ => None,
    }
}

/// Whether `request` goes through the writer's batches: the idempotency writes and purges.
/// Reads (`get`, the business tables) go their own way, as idem-sqlite's reader
/// connections do.
pub(crate) fn batched(request: &Request) -> bool {
    decided_on(request).is_some() || matches!(request, Request::Purge { .. })
}

/// A batch decided and not yet committed: its answers, its store events, what its flush
/// writes and the rows of the completions that applied.
pub(crate) struct Decided {
    answers: Vec<Answer>,
    events: Vec<StoreEvent>,
    changes: Changes,
    rows: Vec<Payment>,
    purged: usize,
    operations: usize,
}

impl Decided {
    /// Commits the flush to `tables`, recording the events as it commits. Returns the
    /// answers, and the payment rows written in the completions' transactions (a refused
    /// completion's are rolled back), for the caller to write next, in the same commit.
    pub(crate) fn commit(self, tables: &mut Tables, recorder: &Recorder) -> (Vec<Answer>, Vec<Payment>) {
        for ev in self.events {
            recorder.record(Kind::Store(Box::new(ev)));
        }
        tables.commit(self.changes);
        if self.purged > 0 {
            recorder.record(Kind::Purged { count: self.purged });
        }
        if self.operations > 1 {
            recorder.record(Kind::Batch { operations: self.operations });
        }
        (self.answers, self.rows)
    }
}

/// One group commit's decisions, in the store host's lifetime `epoch`: loads the counters
/// and the batch's records into the decision, then decides each job in order.
pub(crate) fn decide_batch<'a>(
    tables: &Tables,
    epoch: u32,
    jobs: impl Iterator<Item = (usize, &'a Request)> + Clone,
) -> Decided {
    let mut decision = BatchDecision::default();
    decision.counters_read(tables.counters);
    let ids: Vec<&RecordId> = jobs.clone().filter_map(|(_, request)| decided_on(request)).collect();
    for id in decision.unread(&ids) {
        decision.record_read(id.clone(), tables.records.get(id).cloned());
    }
    let mut decided = Decided {
        answers: Vec::new(),
        events: Vec::new(),
        changes: Changes::default(),
        rows: Vec::new(),
        purged: 0,
        operations: ids.len(),
    };
    for (replica, request) in jobs {
        let answer = match request {
            Request::Purge { now, batch_max } => {
                let answer = purge(tables, &mut decision, *now, *batch_max);
                if let Answer::Count(count) = answer {
                    decided.purged += count;
                }
                answer
            }
            _ => {
                let (answer, ev) = decide(&mut decision, tables.limits, epoch, replica, request);
                if let (Request::CompleteWithPayment { payment, .. }, true) = (request, ev.applied) {
                    decided.rows.push(payment.clone());
                }
                decided.events.push(ev);
                answer
            }
        };
        decided.answers.push(answer);
    }
    decided.changes = decision.take();
    decided
}

/// Decides one idempotency operation through the batch, with its store event.
fn decide(
    decision: &mut BatchDecision,
    limits: Limits,
    epoch: u32,
    replica: usize,
    request: &Request,
) -> (Answer, StoreEvent) {
    let id = decided_on(request).expect("only idempotency operations are decided").clone();
    let before = held(decision.record(&id));
    let mut ev = StoreEvent::new(replica, epoch, StoreOp::Claim, &id, None, before);
    let answer = match operation(request).expect("only idempotency operations are decided") {
        Operation::Claim(claim) => {
            ev.request = Some(claim.request.clone());
            let decided = decision.step(limits, &id, claim);
            if let Ok(Decision::Execute(claim) | Decision::TakeOver { claim, .. }) = &decided {
                let written = decision.record(&id).is_some_and(|record| record.fence == claim.fence);
                ev.issued = Some((claim.fence, written));
            }
            ev.answer = decided.as_ref().map_or_else(|error| format!("refused: {error}"), decision_text);
            decided.map_or_else(Answer::Refused, Answer::Decision)
        }
        Operation::Complete(complete) => {
            let response = complete.response.clone();
            fenced(&mut ev, StoreOp::Complete, complete.fence, Some(response), decision.step(limits, &id, complete))
        }
        Operation::CompleteInTransaction(complete) => {
            let (fence, response) = (complete.fence, complete.response.clone());
            fenced(&mut ev, StoreOp::CompleteInTransaction, fence, Some(response), decision.step(limits, &id, complete))
        }
        Operation::Release(release) => {
            fenced(&mut ev, StoreOp::Release, release.fence, None, decision.step(limits, &id, release))
        }
        Operation::Renew(renew) => {
            (ev.op, ev.presented) = (StoreOp::Renew, Some(renew.fence));
            let renewed = decision.step(limits, &id, renew);
            ev.applied = matches!(renewed, Ok(Renewal::Renewed { .. }));
            ev.answer = renewed.as_ref().map_or_else(|error| format!("refused: {error}"), |r| format!("{r:?}"));
            renewed.map_or_else(Answer::Refused, Answer::Renewal)
        }
        Operation::CountReplay(count) => {
            ev.op = StoreOp::CountReplay;
            let counted = decision.step(limits, &id, count);
            ev.applied = matches!(counted, Ok(true));
            ev.answer = match &counted {
                Ok(true) => "counted".to_owned(),
                Ok(false) => "not counted".to_owned(),
                Err(error) => format!("refused: {error}"),
            };
            counted.map_or_else(Answer::Refused, Answer::Counted)
        }
    };
    (answer, ev)
}

fn fenced(
    ev: &mut StoreEvent,
    op: StoreOp,
    fence: Fence,
    response: Option<idem_core::StoredResponse>,
    fenced: Result<Fenced, StoreError>,
) -> Answer {
    (ev.op, ev.presented) = (op, Some(fence));
    ev.applied = matches!(fenced, Ok(Fenced::Applied));
    if ev.applied {
        ev.recorded = response;
    }
    ev.answer = fenced.as_ref().map_or_else(|error| format!("refused: {error}"), |f| format!("{f:?}"));
    fenced.map_or_else(Answer::Refused, Answer::Fenced)
}

/// A purge in the batch: the due records (`due_at <= now`, earliest first, ties by fence,
/// at most `batch_max`: the purge's `SELECT` on idem-sqlite's `due_at` index, here over the
/// committed table) each through `op::Expire` in the batch's decision, which forgets a
/// record or shrinks a completed one to its tombstone.
fn purge(tables: &Tables, decision: &mut BatchDecision, now: Timestamp, batch_max: usize) -> Answer {
    let mut due: Vec<(Timestamp, Fence, &RecordId)> = tables
        .records
        .iter()
        .map(|(id, record)| (record.due_at(), record.fence, id))
        .filter(|(at, _, _)| *at <= now)
        .collect();
    due.sort_unstable();
    let mut purged = 0;
    for (_, _, id) in due.into_iter().take(batch_max) {
        if !decision.holds(id) {
            decision.record_read(id.clone(), tables.records.get(id).cloned());
        }
        match decision.step(tables.limits, id, op::Expire { now }) {
            Ok(true) => purged += 1,
            Ok(false) => {}
            Err(error) => return Answer::Refused(error),
        }
    }
    Answer::Count(purged)
}
