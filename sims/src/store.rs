//! The store host and the replicas' way to it.
//!
//! The host holds a [`MemoryState`] (the core's store step) and the payments table, and
//! answers a small request/response protocol on turmoil's TCP: one connection per call,
//! an 8-byte frame each way. The frame carries a call number; the operation and its
//! answer are handed over in memory, in a mailbox keyed by that number (what travels, and
//! whether and when it arrives, is the network's; encoding is not simulated). A frame
//! that arrives is applied, also after the caller gave up, as a real late write would be.
//!
//! Each operation is applied in one poll of the host, so it is atomic. A durable host
//! keeps its state in a cell outside the host's software (a bounce keeps it, like a disk);
//! a volatile one starts empty at every boot.
//!
//! Replicas reach it through `crate::remote`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use idem_core::step::{self, Step, op};
use idem_core::{
    ClaimRequest, Decision, Fence, Fenced, Limits, MemoryState, Policy, Principal, Record, RecordId, RecordState,
    Renewal, StoreError, StoredResponse, Timestamp, UsageDelta, Write,
};
use idem_server::domain::{Payment, User};
use idem_server::{Page, PageRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::batch_host::{self, Tables};
use crate::consumer::Effect;
use crate::history::{Held, Kind, Recorder, Row, StoreEvent, StoreOp};
use crate::redis_host::RedisHost;
use crate::{Scenario, Variant};

/// The store host's name and port on the simulated network.
pub(crate) const STORE_HOST: &str = "store";
pub(crate) const STORE_PORT: u16 = 7000;

/// One operation for the store host.
#[derive(Debug)]
pub(crate) enum Request {
    /// The whole request travels (fingerprint with its version, the earlier one, the
    /// holder), as a store's claim takes it.
    Claim {
        id: RecordId,
        request: ClaimRequest,
        now: Timestamp,
        policy: Policy,
    },
    Complete {
        id: RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: Policy,
    },
    CompleteWithPayment {
        id: RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: Policy,
        payment: Payment,
    },
    InsertPayment {
        payment: Payment,
    },
    /// Atomic mode of the consumer scenarios: the effect rows and the fenced completion in
    /// one step (`op::CompleteInTransaction`), or neither.
    CompleteWithEffects {
        id: RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: Policy,
        effects: Vec<Effect>,
    },
    /// Separate mode of the consumer scenarios: an effect row written alone.
    InsertEffect {
        effect: Effect,
    },
    Release {
        id: RecordId,
        fence: Fence,
    },
    Renew {
        id: RecordId,
        fence: Fence,
        now: Timestamp,
        policy: Policy,
    },
    Get {
        id: RecordId,
    },
    /// One replay counted (best effort, `Store::count_replay`).
    CountReplay {
        id: RecordId,
        now: Timestamp,
    },
    Purge {
        now: Timestamp,
        batch_max: usize,
    },
    Payment {
        principal: Principal,
        payment_id: String,
    },
    Payments {
        principal: Principal,
        page: PageRequest,
    },
    Users {
        principal: Principal,
        page: PageRequest,
    },
    InsertUser {
        user: User,
    },
    User {
        principal: Principal,
        user_id: String,
    },
}

impl Request {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Request::Claim { .. } => "claim",
            Request::Complete { .. } => "complete",
            Request::CompleteWithPayment { .. } => "complete-with-payment",
            Request::InsertPayment { .. } => "insert-payment",
            Request::CompleteWithEffects { .. } => "complete-with-effects",
            Request::InsertEffect { .. } => "insert-effect",
            Request::Release { .. } => "release",
            Request::Renew { .. } => "renew",
            Request::Get { .. } => "get",
            Request::CountReplay { .. } => "count-replay",
            Request::Purge { .. } => "purge",
            Request::Payment { .. } => "payment",
            Request::Payments { .. } => "payments",
            Request::Users { .. } => "users",
            Request::InsertUser { .. } => "insert-user",
            Request::User { .. } => "user",
        }
    }
}

/// The host's answer.
#[derive(Debug)]
pub(crate) enum Answer {
    Decision(Decision),
    Fenced(Fenced),
    Renewal(Renewal),
    Record(Option<Record>),
    Count(usize),
    /// Whether a replay was counted.
    Counted(bool),
    Done,
    Payment(Option<Payment>),
    Payments(Option<Page<Payment>>),
    Users(Option<Page<User>>),
    User(Option<User>),
    /// The store refused or failed (the step's errors; a script's damage or error reply).
    Refused(StoreError),
}

/// Operations and answers in transit, by call number.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    pub(crate) next: u64,
    pub(crate) requests: BTreeMap<u64, (usize, Request)>,
    pub(crate) answers: BTreeMap<u64, Answer>,
    pub(crate) abandoned: BTreeSet<u64>,
}

pub(crate) type SharedMailbox = Arc<Mutex<Mailbox>>;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The simulation is single-threaded and nothing panics while holding these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

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

pub(crate) fn held(record: Option<&Record>) -> Held {
    match record {
        None => Held::Absent,
        Some(Record { fence, state: RecordState::InFlight { .. }, .. }) => Held::InFlight(*fence),
        Some(Record { fence, state: RecordState::Completed { .. }, .. }) => Held::Completed(*fence),
        Some(Record { fence, state: RecordState::Tombstone, .. }) => Held::Tombstone(*fence),
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

/// The store host's software: accepts connections and applies one operation per connection.
pub(crate) async fn host(disk: Disk, mailbox: SharedMailbox, variant: Variant, recorder: Recorder) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", STORE_PORT)).await?;
    // The `sqlite-batch` host's writer: idempotency writes and purges go through its batches.
    let batches = batch_host::start(&disk, &recorder);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let (disk, mailbox, recorder, batches) =
            (Arc::clone(&disk), Arc::clone(&mailbox), recorder.clone(), batches.clone());
        tokio::spawn(async move {
            let mut frame = [0u8; 8];
            if stream.read_exact(&mut frame).await.is_err() {
                return;
            }
            let number = u64::from_be_bytes(frame);
            let Some((replica, request)) = lock(&mailbox).requests.remove(&number) else { return };
            let answer = match batches {
                Some(queue) if batch_host::batched(&request) => {
                    let Some(answer) = batch_host::submit(&queue, replica, request).await else { return };
                    answer
                }
                _ => apply(&mut lock(&disk), variant, replica, request, &recorder),
            };
            {
                let mut mailbox = lock(&mailbox);
                if !mailbox.abandoned.remove(&number) {
                    mailbox.answers.insert(number, answer);
                }
            }
            let _ = stream.write_all(&frame).await;
        });
    }
}

/// Applies one operation to the host's state (the core's store step), as the variant says,
/// and records it.
pub(crate) fn apply(
    state: &mut HostState,
    variant: Variant,
    replica: usize,
    request: Request,
    recorder: &Recorder,
) -> Answer {
    if state.redis.is_some() && crate::redis_host::handles(&request) {
        return crate::redis_host::apply(state, replica, request, recorder);
    }
    let epoch = state.epoch;
    let event = |op, id: &RecordId, presented, before| StoreEvent::new(replica, epoch, op, id, presented, before);
    // The planted bug `no-fence-check`: fenced operations run with the record's fence.
    let fence_for = |state: &HostState, id: &RecordId, presented: Fence| match variant {
        Variant::NoFenceCheck => state.store.record(id).map_or(presented, |record| record.fence),
        _ => presented,
    };
    match request {
        Request::Claim { id, request, now, policy } => {
            let mut ev = event(StoreOp::Claim, &id, None, held(state.store.record(&id)));
            ev.request = Some(request.clone());
            let claim = op::Claim { request, now, policy };
            let answer = match step::step(&id, &state.store.view(&id), claim) {
                Err(error) => {
                    ev.answer = format!("refused: {error}");
                    Answer::Refused(error.into())
                }
                Ok(step) => {
                    let executes = matches!(step.answer, Decision::Execute(_) | Decision::TakeOver { .. });
                    // The planted bug `no-claim`: answer "execute" without writing the claim
                    // (the fence counter still moves, so fences stay unique).
                    let step = if executes && variant == Variant::NoClaim {
                        Step { write: Write::Unchanged, usage: UsageDelta::NONE, ..step }
                    } else {
                        step
                    };
                    let written = matches!(step.write, Write::Put(_));
                    let decision = state.store.commit(&id, step);
                    ev.issued = match &decision {
                        Decision::Execute(claim) | Decision::TakeOver { claim, .. } => Some((claim.fence, written)),
                        _ => None,
                    };
                    ev.answer = decision_text(&decision);
                    Answer::Decision(decision)
                }
            };
            recorder.record(Kind::Store(Box::new(ev)));
            answer
        }
        Request::Complete { id, fence, response, now, policy } => {
            let mut ev = event(StoreOp::Complete, &id, Some(fence), held(state.store.record(&id)));
            let operation =
                op::Complete { fence: fence_for(state, &id, fence), response: response.clone(), now, policy };
            let answer = fenced(state, &id, operation, &mut ev, Some(response));
            recorder.record(Kind::Store(Box::new(ev)));
            answer
        }
        Request::CompleteWithPayment { id, fence, response, now, policy, payment } => {
            let mut ev = event(StoreOp::CompleteInTransaction, &id, Some(fence), held(state.store.record(&id)));
            let operation = op::CompleteInTransaction {
                fence: fence_for(state, &id, fence),
                response: response.clone(),
                now,
                policy,
            };
            let answer = fenced(state, &id, operation, &mut ev, Some(response));
            let applied = ev.applied;
            recorder.record(Kind::Store(Box::new(ev)));
            if applied {
                // The payment commits with the completion, or not at all (atomic mode).
                insert_payment(state, payment, "complete-with-payment", recorder);
            }
            answer
        }
        Request::InsertPayment { payment } => {
            insert_payment(state, payment, "insert-payment", recorder);
            Answer::Done
        }
        Request::CompleteWithEffects { id, fence, response, now, policy, effects } => {
            let mut ev = event(StoreOp::CompleteInTransaction, &id, Some(fence), held(state.store.record(&id)));
            let operation = op::CompleteInTransaction {
                fence: fence_for(state, &id, fence),
                response: response.clone(),
                now,
                policy,
            };
            let answer = fenced(state, &id, operation, &mut ev, Some(response));
            let applied = ev.applied;
            recorder.record(Kind::Store(Box::new(ev)));
            if applied {
                // The rows commit with the completion, or not at all (atomic mode).
                for effect in effects {
                    effect.record("complete-with-effects", recorder);
                }
            }
            answer
        }
        Request::InsertEffect { effect } => {
            effect.record("insert-effect", recorder);
            Answer::Done
        }
        Request::Release { id, fence } => {
            let mut ev = event(StoreOp::Release, &id, Some(fence), held(state.store.record(&id)));
            let operation = op::Release { fence: fence_for(state, &id, fence) };
            let answer = fenced(state, &id, operation, &mut ev, None);
            recorder.record(Kind::Store(Box::new(ev)));
            answer
        }
        Request::Renew { id, fence, now, policy } => {
            let mut ev = event(StoreOp::Renew, &id, Some(fence), held(state.store.record(&id)));
            let operation = op::Renew { fence: fence_for(state, &id, fence), now, policy };
            let answer = match state.store.run(&id, operation) {
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
            recorder.record(Kind::Store(Box::new(ev)));
            answer
        }
        Request::Get { id } => {
            let record = match &state.sqlite {
                Some(tables) => tables.record(&id).cloned(),
                None => state.store.record(&id).cloned(),
            };
            let mut ev = event(StoreOp::Get, &id, None, held(record.as_ref()));
            ev.answer = "read".to_owned();
            recorder.record(Kind::Store(Box::new(ev)));
            Answer::Record(record)
        }
        Request::CountReplay { id, now } => {
            let mut ev = event(StoreOp::CountReplay, &id, None, held(state.store.record(&id)));
            let answer = match state.store.run(&id, op::CountReplay { now }) {
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
            recorder.record(Kind::Store(Box::new(ev)));
            answer
        }
        Request::Purge { now, batch_max } => {
            let count = if variant == Variant::PurgeDropsTombstones {
                purge_dropping_tombstones(&mut state.store, now, batch_max)
            } else {
                state.store.purge_expired(now, batch_max)
            };
            if count > 0 {
                recorder.record(Kind::Purged { count });
            }
            Answer::Count(count)
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

fn fenced<O: step::Operation<Answer = Fenced>>(
    state: &mut HostState,
    id: &RecordId,
    operation: O,
    ev: &mut StoreEvent,
    response: Option<StoredResponse>,
) -> Answer {
    match state.store.run(id, operation) {
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

pub(crate) fn decision_text(decision: &Decision) -> String {
    match decision {
        Decision::Execute(claim) => format!("Execute {:?}", claim.fence),
        Decision::TakeOver { claim, stale } => format!("TakeOver {:?} from {stale:?}", claim.fence),
        Decision::Replay { response, .. } => format!("Replay {}", response.status),
        Decision::Conflict { retry_after, .. } => format!("Conflict {}ms", retry_after.as_millis()),
        Decision::Mismatch { .. } => "Mismatch".to_owned(),
        Decision::Gone { .. } => "Gone".to_owned(),
    }
}
