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
//! Replicas reach it through [`RemoteStore`] (an [`idem_core::Store`]) and [`RemoteLedger`]
//! (an [`idem_server::Ledger`] in atomic mode: the payment row and the completion are one
//! fenced step on the host). Every call runs under a timeout; a call that times out or
//! fails on the network is [`StoreError::Unavailable`], so idem-http answers 503 for it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use idem_core::step::{self, Step, op};
use idem_core::{
    Decision, Fence, Fenced, Fingerprint, Limits, MemoryState, Policy, Principal, Record, RecordId, RecordState,
    Renewal, Store, StoreError, StoredResponse, Timestamp, UsageDelta, Write,
};
use idem_server::domain::{Payment, User};
use idem_server::ledger::{Completion, Written};
use idem_server::{Ledger, LedgerError, Page, PageRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Variant;
use crate::history::{Held, Kind, Recorder, Row, StoreEvent, StoreOp};
use crate::plan::payment_body;

/// The store host's name and port on the simulated network.
pub(crate) const STORE_HOST: &str = "store";
pub(crate) const STORE_PORT: u16 = 7000;

/// One operation for the store host.
#[derive(Debug)]
pub(crate) enum Request {
    Claim {
        id: RecordId,
        fingerprint: Fingerprint,
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
    fn name(&self) -> &'static str {
        match self {
            Request::Claim { .. } => "claim",
            Request::Complete { .. } => "complete",
            Request::CompleteWithPayment { .. } => "complete-with-payment",
            Request::InsertPayment { .. } => "insert-payment",
            Request::Release { .. } => "release",
            Request::Renew { .. } => "renew",
            Request::Get { .. } => "get",
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
    Done,
    Payment(Option<Payment>),
    Payments(Option<Page<Payment>>),
    Users(Option<Page<User>>),
    User(Option<User>),
    Refused(step::StepError),
}

/// Operations and answers in transit, by call number.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    next: u64,
    requests: BTreeMap<u64, (usize, Request)>,
    answers: BTreeMap<u64, Answer>,
    abandoned: BTreeSet<u64>,
}

pub(crate) type SharedMailbox = Arc<Mutex<Mailbox>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The simulation is single-threaded and nothing panics while holding these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the store host keeps: the idempotency records and the business tables.
#[derive(Debug)]
pub(crate) struct HostState {
    epoch: u32,
    store: MemoryState,
    payments: BTreeMap<String, Payment>,
    /// Each principal's payment ids in the order written.
    by_principal: BTreeMap<Principal, Vec<String>>,
    users: BTreeMap<String, User>,
    /// Each principal's user ids in the order written.
    users_by_principal: BTreeMap<Principal, Vec<String>>,
}

impl HostState {
    pub(crate) fn new(epoch: u32, variant: Variant) -> HostState {
        // The planted bug `fence-reset`: every lifetime issues fences from f1.
        let first_fence = if variant == Variant::FenceReset { Fence::FIRST } else { first_fence_of(epoch) };
        HostState {
            epoch,
            // A volatile host that booted again must not issue a fence that an execution
            // from an earlier lifetime still holds (G3); each lifetime gets its own range.
            store: MemoryState::new(Limits::default()).with_fences_from(first_fence),
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

fn held(record: Option<&Record>) -> Held {
    match record {
        None => Held::Absent,
        Some(Record { fence, state: RecordState::InFlight { .. }, .. }) => Held::InFlight(*fence),
        Some(Record { fence, state: RecordState::Completed { .. }, .. }) => Held::Completed(*fence),
    }
}

/// The store host's software: accepts connections and applies one operation per connection.
pub(crate) async fn host(disk: Disk, mailbox: SharedMailbox, variant: Variant, recorder: Recorder) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", STORE_PORT)).await?;
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let (disk, mailbox, recorder) = (Arc::clone(&disk), Arc::clone(&mailbox), recorder.clone());
        tokio::spawn(async move {
            let mut frame = [0u8; 8];
            if stream.read_exact(&mut frame).await.is_err() {
                return;
            }
            let number = u64::from_be_bytes(frame);
            let Some((replica, request)) = lock(&mailbox).requests.remove(&number) else { return };
            let answer = apply(&mut lock(&disk), variant, replica, request, &recorder);
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
fn apply(state: &mut HostState, variant: Variant, replica: usize, request: Request, recorder: &Recorder) -> Answer {
    let epoch = state.epoch;
    let event = |op, id: &RecordId, presented, before| StoreEvent {
        replica,
        epoch,
        op,
        id: id.clone(),
        presented,
        before,
        fingerprint: None,
        issued: None,
        applied: false,
        recorded: None,
        answer: String::new(),
    };
    // The planted bug `no-fence-check`: fenced operations run with the record's fence.
    let fence_for = |state: &HostState, id: &RecordId, presented: Fence| match variant {
        Variant::NoFenceCheck => state.store.record(id).map_or(presented, |record| record.fence),
        _ => presented,
    };
    match request {
        Request::Claim { id, fingerprint, now, policy } => {
            let mut ev = event(StoreOp::Claim, &id, None, held(state.store.record(&id)));
            ev.fingerprint = Some(fingerprint);
            let claim = op::Claim { fingerprint, now, policy };
            let answer = match step::step(&id, &state.store.view(&id), claim) {
                Err(error) => {
                    ev.answer = format!("refused: {error}");
                    Answer::Refused(error)
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
                    Answer::Refused(error)
                }
            };
            recorder.record(Kind::Store(Box::new(ev)));
            answer
        }
        Request::Get { id } => {
            let record = state.store.record(&id).cloned();
            let mut ev = event(StoreOp::Get, &id, None, held(record.as_ref()));
            ev.answer = "read".to_owned();
            recorder.record(Kind::Store(Box::new(ev)));
            Answer::Record(record)
        }
        Request::Purge { now, batch_max } => {
            let count = state.store.purge_expired(now, batch_max);
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
fn insert_payment(state: &mut HostState, payment: Payment, via: &'static str, recorder: &Recorder) {
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
            Answer::Refused(error)
        }
    }
}

fn decision_text(decision: &Decision) -> String {
    match decision {
        Decision::Execute(claim) => format!("Execute {:?}", claim.fence),
        Decision::TakeOver { claim, stale } => format!("TakeOver {:?} from {stale:?}", claim.fence),
        Decision::Replay(response) => format!("Replay {}", response.status),
        Decision::Conflict { retry_after } => format!("Conflict {}ms", retry_after.as_millis()),
        Decision::Mismatch => "Mismatch".to_owned(),
    }
}

/// A replica's connection to the store host: one TCP connection per call, under a timeout.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    pub(crate) replica: usize,
    pub(crate) mailbox: SharedMailbox,
    pub(crate) timeout: Duration,
    pub(crate) recorder: Recorder,
}

#[derive(Debug, thiserror::Error)]
#[error("store call {op} {why}")]
struct CallFailed {
    op: &'static str,
    why: String,
}

impl Remote {
    async fn call(&self, request: Request) -> Result<Answer, StoreError> {
        let op = request.name();
        let number = {
            let mut mailbox = lock(&self.mailbox);
            mailbox.next += 1;
            let number = mailbox.next;
            mailbox.requests.insert(number, (self.replica, request));
            number
        };
        let exchange = async {
            let mut stream = turmoil::net::TcpStream::connect((STORE_HOST, STORE_PORT)).await?;
            stream.write_all(&number.to_be_bytes()).await?;
            let mut frame = [0u8; 8];
            stream.read_exact(&mut frame).await?;
            Ok::<_, std::io::Error>(())
        };
        let failure = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(())) => match lock(&self.mailbox).answers.remove(&number) {
                Some(answer) => return Ok(answer),
                None => "had no answer".to_owned(),
            },
            Ok(Err(error)) => format!("failed: {error}"),
            Err(_) => format!("timed out after {:?}", self.timeout),
        };
        {
            // The request may still arrive and be applied; its answer is then dropped.
            let mut mailbox = lock(&self.mailbox);
            if mailbox.answers.remove(&number).is_none() {
                mailbox.abandoned.insert(number);
            }
        }
        self.recorder.record(Kind::StoreCallFailed { replica: self.replica, op, why: failure.clone() });
        Err(StoreError::Unavailable { source: Box::new(CallFailed { op, why: failure }), retry_after: None })
    }
}

fn unexpected(answer: &Answer) -> StoreError {
    StoreError::Corrupt { detail: format!("unexpected answer from the store host: {answer:?}") }
}

/// [`idem_core::Store`] over the simulated network.
#[derive(Debug, Clone)]
pub(crate) struct RemoteStore(pub(crate) Remote);

impl Store for RemoteStore {
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: &Fingerprint,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        match self.0.call(Request::Claim { id: id.clone(), fingerprint: *fingerprint, now, policy: *policy }).await? {
            Answer::Decision(decision) => Ok(decision),
            Answer::Refused(error) => Err(error.into()),
            other => Err(unexpected(&other)),
        }
    }

    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        let request = Request::Complete { id: id.clone(), fence, response, now, policy: *policy };
        fenced_answer(self.0.call(request).await?)
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        fenced_answer(self.0.call(Request::Release { id: id.clone(), fence }).await?)
    }

    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        match self.0.call(Request::Renew { id: id.clone(), fence, now, policy: *policy }).await? {
            Answer::Renewal(renewal) => Ok(renewal),
            Answer::Refused(error) => Err(error.into()),
            other => Err(unexpected(&other)),
        }
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        match self.0.call(Request::Get { id: id.clone() }).await? {
            Answer::Record(record) => Ok(record),
            other => Err(unexpected(&other)),
        }
    }

    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        match self.0.call(Request::Purge { now, batch_max }).await? {
            Answer::Count(count) => Ok(count),
            other => Err(unexpected(&other)),
        }
    }
}

fn fenced_answer(answer: Answer) -> Result<Fenced, StoreError> {
    match answer {
        Answer::Fenced(fenced) => Ok(fenced),
        Answer::Refused(error) => Err(error.into()),
        other => Err(unexpected(&other)),
    }
}

/// The payments and users tables on the store host, in atomic mode: a payment and its
/// completion are one fenced step there.
#[derive(Debug)]
pub(crate) struct RemoteLedger {
    pub(crate) store: Arc<RemoteStore>,
    /// The planted bug `double-write`: the row is also written alone, before the completion.
    pub(crate) double_write: bool,
    /// Separate mode: rows are written alone and the layer completes afterwards.
    pub(crate) separate: bool,
}

fn ledger_error(error: StoreError) -> LedgerError {
    match error {
        StoreError::Corrupt { detail } => LedgerError::Corrupt(detail),
        other => LedgerError::Unavailable(other),
    }
}

impl Ledger for RemoteLedger {
    type Store = RemoteStore;

    fn idempotency_store(&self) -> Arc<RemoteStore> {
        Arc::clone(&self.store)
    }

    fn completes_in_transaction(&self) -> bool {
        !self.separate
    }

    async fn insert_payment(
        &self,
        payment: &Payment,
        completion: Option<Completion<'_>>,
    ) -> Result<Written, LedgerError> {
        let remote = &self.store.0;
        let alone = || async {
            match remote.call(Request::InsertPayment { payment: payment.clone() }).await.map_err(ledger_error)? {
                Answer::Done => Ok(Written::Alone),
                other => Err(ledger_error(unexpected(&other))),
            }
        };
        let Some(Completion { claim, response }) = completion else {
            return alone().await;
        };
        if self.double_write {
            alone().await?;
        }
        let request = &payment.request;
        remote.recorder.record(Kind::Execute {
            replica: remote.replica,
            id: claim.id().clone(),
            fence: claim.fence(),
            body: payment_body(request.amount.minor(), &request.currency, &request.destination),
        });
        let call = Request::CompleteWithPayment {
            id: claim.id().clone(),
            fence: claim.fence(),
            response: response.clone(),
            now: claim.now(),
            policy: *claim.policy(),
            payment: payment.clone(),
        };
        match remote.call(call).await.map_err(ledger_error)? {
            Answer::Fenced(Fenced::Applied) => Ok(Written::Completed),
            Answer::Fenced(refused) => Ok(Written::Superseded(refused)),
            Answer::Refused(error) => Err(ledger_error(error.into())),
            other => Err(ledger_error(unexpected(&other))),
        }
    }

    async fn payment(&self, principal: &Principal, payment_id: &str) -> Result<Option<Payment>, LedgerError> {
        let request = Request::Payment { principal: principal.clone(), payment_id: payment_id.to_owned() };
        match self.store.0.call(request).await.map_err(ledger_error)? {
            Answer::Payment(payment) => Ok(payment),
            other => Err(ledger_error(unexpected(&other))),
        }
    }

    async fn payments(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<Payment>>, LedgerError> {
        let request = Request::Payments { principal: principal.clone(), page: page.clone() };
        match self.store.0.call(request).await.map_err(ledger_error)? {
            Answer::Payments(payments) => Ok(payments),
            other => Err(ledger_error(unexpected(&other))),
        }
    }

    async fn users(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<User>>, LedgerError> {
        let request = Request::Users { principal: principal.clone(), page: page.clone() };
        match self.store.0.call(request).await.map_err(ledger_error)? {
            Answer::Users(users) => Ok(users),
            other => Err(ledger_error(unexpected(&other))),
        }
    }

    /// The store host answers a call: the simulated store keeps everything in memory, so
    /// reaching it is what "takes a write" means here.
    async fn check_writable(&self) -> Result<(), LedgerError> {
        let key = idem_core::Key::parse(b"idem-healthz-probe").expect("a constant, valid key");
        let id = RecordId::new(Principal::anonymous(), key);
        match self.store.0.call(Request::Get { id }).await.map_err(ledger_error)? {
            Answer::Record(_) => Ok(()),
            other => Err(ledger_error(unexpected(&other))),
        }
    }

    async fn insert_user(&self, user: &User, _completion: Option<Completion<'_>>) -> Result<Written, LedgerError> {
        // Users are not simulated (the clients only pay); written alone, completed by the layer.
        match self.store.0.call(Request::InsertUser { user: user.clone() }).await.map_err(ledger_error)? {
            Answer::Done => Ok(Written::Alone),
            other => Err(ledger_error(unexpected(&other))),
        }
    }

    async fn user(&self, principal: &Principal, user_id: &str) -> Result<Option<User>, LedgerError> {
        let request = Request::User { principal: principal.clone(), user_id: user_id.to_owned() };
        match self.store.0.call(request).await.map_err(ledger_error)? {
            Answer::User(user) => Ok(user),
            other => Err(ledger_error(unexpected(&other))),
        }
    }
}
