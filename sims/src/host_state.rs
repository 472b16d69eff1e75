//! What the store host keeps ([`HostState`]): the idempotency records and the business
//! tables, and how one operation is applied to them ([`apply`]).
//!
//! The idempotency records are the core's [`MemoryState`] ([`crate::memory_host`]), or,
//! in the scenarios that run real store code, the Redis of [`crate::redis_host`] or the
//! tables of [`crate::batch_tables`]. The business tables (payments, users) are plain maps;
//! every payment row is recorded as it is written, by any path. A durable host keeps its
//! state in a cell outside the host's software (a bounce keeps it, like a disk); a volatile
//! one starts empty at every boot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use idem_core::{Fence, Limits, MemoryState, Principal, RecordId, StoreError};
use idem_server::domain::{Payment, User};
use idem_server::{Page, PageRequest};

use crate::batch_tables::Tables;
use crate::history::{Kind, Recorder, Row, StoreEvent, StoreOp};
use crate::memory_host::Memory;
use crate::redis_host::{self, RedisHost};
use crate::store_protocol::{Answer, Request, held};
use crate::{Scenario, Variant};

/// What the store host keeps: the idempotency records and the business tables.
#[derive(Debug)]
pub(crate) struct HostState {
    epoch: u32,
    store: MemoryState,
    /// The Redis the `redis-lua` scenarios run `store.lua` in; when present, it holds the
    /// idempotency records instead of `store`.
    pub(crate) redis: Option<RedisHost>,
    /// The tables the `sqlite-batch` scenario decides on through idem-sqlite's batch
    /// decision; when present, they hold the idempotency records instead of `store`.
    pub(crate) sqlite: Option<Tables>,
    payments: BTreeMap<String, Payment>,
    /// Each principal's payment ids in the order written.
    by_principal: BTreeMap<Principal, Vec<String>>,
    users: BTreeMap<String, User>,
    /// Each principal's user ids in the order written.
    users_by_principal: BTreeMap<Principal, Vec<String>>,
}

impl HostState {
    pub(crate) fn new(epoch: u32, scenario: Scenario, variant: Variant) -> HostState {
        // The planted bug `fence-reset`: every lifetime issues fences from f1.
        let first_fence = if variant == Variant::FenceReset { Fence::FIRST } else { first_fence_of(epoch) };
        HostState {
            epoch,
            // A volatile host that booted again must not issue a fence that an execution
            // from an earlier lifetime still holds (G3); each lifetime gets its own range.
            store: MemoryState::new(Limits::default()).with_fences_from(first_fence),
            redis: scenario.runs_redis_lua().then(|| RedisHost::new(variant)),
            sqlite: (scenario == Scenario::SqliteBatch).then(|| Tables::new(first_fence)),
            payments: BTreeMap::new(),
            by_principal: BTreeMap::new(),
            users: BTreeMap::new(),
            users_by_principal: BTreeMap::new(),
        }
    }
}

impl HostState {
    /// The host's lifetime (bumped by every boot of a volatile host).
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch
    }
}

/// The first fence a store host issues in lifetime `epoch`: 2^40 fences per lifetime, far
/// more than a run issues.
fn first_fence_of(epoch: u32) -> Fence {
    Fence::new((u64::from(epoch) << 40) + 1)
}

/// The host's "disk": survives a bounce of a durable host.
pub(crate) type Disk = Arc<Mutex<HostState>>;

/// Applies one operation to the host's state, as the variant says, and records it. Each
/// operation is applied in one poll of the host, so it is atomic.
pub(crate) fn apply(
    state: &mut HostState,
    variant: Variant,
    replica: usize,
    request: Request,
    recorder: &Recorder,
) -> Answer {
    if let Some(redis) = state.redis.as_mut()
        && redis_host::handles(&request)
    {
        let (answer, payment) = redis_host::apply(redis, state.epoch, replica, request, recorder);
        if let Some(payment) = payment {
            insert_payment(state, payment, "complete-with-payment", recorder);
        }
        return answer;
    }
    let memory = Memory { store: &mut state.store, variant, replica, epoch: state.epoch, recorder };
    match request {
        Request::Claim { id, request, now, policy } => memory.claim(&id, request, now, policy),
        Request::Complete { id, fence, response, now, policy } => memory.complete(&id, fence, response, now, policy),
        Request::CompleteWithPayment { id, fence, response, now, policy, payment } => {
            let (answer, applied) = memory.complete_in_transaction(&id, fence, response, now, policy);
            if applied {
                // The payment commits with the completion, or not at all (atomic mode).
                insert_payment(state, payment, "complete-with-payment", recorder);
            }
            answer
        }
        Request::CompleteWithEffects { id, fence, response, now, policy, effects } => {
            let (answer, applied) = memory.complete_in_transaction(&id, fence, response, now, policy);
            if applied {
                // The rows commit with the completion, or not at all (atomic mode).
                for effect in effects {
                    effect.record("complete-with-effects", recorder);
                }
            }
            answer
        }
        Request::Release { id, fence } => memory.release(&id, fence),
        Request::Renew { id, fence, now, policy } => memory.renew(&id, fence, now, policy),
        Request::Get { id } => get(state, replica, &id, recorder),
        Request::CountReplay { id, now } => memory.count_replay(&id, now),
        Request::Purge { now, batch_max } => memory.purge(now, batch_max),
        business => tables(state, business, recorder),
    }
}

/// Reads a record, from the tables that hold the idempotency records.
fn get(state: &HostState, replica: usize, id: &RecordId, recorder: &Recorder) -> Answer {
    let record = match &state.sqlite {
        Some(tables) => tables.record(id).cloned(),
        None => state.store.record(id).cloned(),
    };
    let mut ev = StoreEvent::new(replica, state.epoch, StoreOp::Get, id, None, held(record.as_ref()));
    ev.answer = "read".to_owned();
    recorder.record(Kind::Store(Box::new(ev)));
    Answer::Record(record)
}

/// An operation on the business tables alone: payments, users and effect rows written
/// apart from a completion (separate mode), and the ledgers' reads.
fn tables(state: &mut HostState, request: Request, recorder: &Recorder) -> Answer {
    match request {
        Request::InsertPayment { payment } => {
            insert_payment(state, payment, "insert-payment", recorder);
            Answer::Done
        }
        Request::InsertEffect { effect } => {
            effect.record("insert-effect", recorder);
            Answer::Done
        }
        Request::Payment { principal, payment_id } => {
            Answer::Payment(state.payments.get(&payment_id).filter(|payment| payment.principal == principal).cloned())
        }
        Request::Payments { principal, page } => {
            let ids = state.by_principal.get(&principal).map(Vec::as_slice).unwrap_or_default();
            Answer::Payments(page_of(ids, &state.payments, &page))
        }
        Request::Users { principal, page } => {
            let ids = state.users_by_principal.get(&principal).map(Vec::as_slice).unwrap_or_default();
            Answer::Users(page_of(ids, &state.users, &page))
        }
        Request::InsertUser { user } => {
            state.users_by_principal.entry(user.principal.clone()).or_default().push(user.user_id.clone());
            state.users.insert(user.user_id.clone(), user);
            Answer::Done
        }
        Request::User { principal, user_id } => {
            Answer::User(state.users.get(&user_id).filter(|user| user.principal == principal).cloned())
        }
        // `apply` hands the idempotency operations to the records' store, never here.
        idempotency => {
            let detail = format!("the business tables answer no {}", idempotency.name());
            Answer::Refused(StoreError::Corrupt { detail })
        }
    }
}

/// A page of one principal's rows (`ids` in write order), as the ledgers page: the rows
/// written before `starting_after`, newest first; `None` for a cursor that is not theirs.
fn page_of<T: Clone>(ids: &[String], rows: &BTreeMap<String, T>, request: &PageRequest) -> Option<Page<T>> {
    let end = match &request.starting_after {
        None => ids.len(),
        Some(cursor) => ids.iter().position(|id| id == cursor)?,
    };
    let limit = request.limit.clamp(1, idem_server::ledger::LIST_LIMIT_MAX);
    let newest_first: Vec<T> = ids[..end].iter().rev().take(limit).filter_map(|id| rows.get(id).cloned()).collect();
    Some(Page { items: newest_first, has_more: end > limit })
}

/// Writes a payment row and records it, whichever request wrote it (item 3 of issue 19:
/// the checker counts rows, not completions).
pub(crate) fn insert_payment(state: &mut HostState, payment: Payment, via: &'static str, recorder: &Recorder) {
    recorder.record(Kind::Row(Box::new(Row {
        epoch: state.epoch,
        via,
        owner: payment.principal.as_str().to_owned(),
        payment_id: payment.payment_id.clone(),
        amount_minor: payment.request.amount.minor(),
        currency: payment.request.currency.clone(),
        destination: payment.request.destination.clone(),
    })));
    state.by_principal.entry(payment.principal.clone()).or_default().push(payment.payment_id.clone());
    state.payments.insert(payment.payment_id.clone(), payment);
}
