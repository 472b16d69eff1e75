//! The store host's protocol: the operations it takes ([`Request`]) and its answers
//! ([`Answer`]), the mailbox they are handed over in, and what every store host's events
//! share ([`held`], [`decision_text`]).
//!
//! One connection per call, an 8-byte frame each way. The frame carries a call number; the
//! operation and its answer are handed over in memory, in a [`Mailbox`] keyed by that
//! number (what travels, and whether and when it arrives, is the network's; encoding is not
//! simulated). The host is `crate::store_host`; replicas reach it through `crate::remote`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use idem_core::{
    ClaimRequest, Decision, Fence, Fenced, Policy, Principal, Record, RecordId, RecordState, Renewal, StoreError,
    StoredResponse, Timestamp,
};
use idem_server::domain::{Payment, User};
use idem_server::{Page, PageRequest};

use crate::consumer::Effect;
use crate::history::Held;

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

/// What a record is before an operation, as the checker's store events hold it.
pub(crate) fn held(record: Option<&Record>) -> Held {
    match record {
        None => Held::Absent,
        Some(Record { fence, state: RecordState::InFlight { .. }, .. }) => Held::InFlight(*fence),
        Some(Record { fence, state: RecordState::Completed { .. }, .. }) => Held::Completed(*fence),
        Some(Record { fence, state: RecordState::Tombstone, .. }) => Held::Tombstone(*fence),
    }
}

/// A claim's decision as the trace prints it.
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
