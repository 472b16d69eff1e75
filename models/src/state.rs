//! The model's state: clients, servers, the store (holding idem-core `Record`s), the
//! network, the fault budgets, and the ghost facts the properties read.

use std::hash::{Hash, Hasher};

use idem_core::{Bytes, Fence, Record, RecordState, StoredResponse, Timestamp};
use stateright::Representative;

/// An index into the model's operations (which also names the client and the key).
pub type OpIndex = u8;
/// An index into the store's record slots (one per record id the store can tell apart).
pub type Slot = u8;
/// A server replica's index.
pub type ServerIndex = u8;
/// The ghost serial number of one execution grant (one `Execute` or `TakeOver`).
pub type Serial = u8;

/// An idem-core [`Record`] as the store holds it, hashable so that it can live in a
/// model state (idem-core's types do not derive `Hash`; the model should not ask them to).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredRecord(pub Record);

impl Hash for StoredRecord {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let Record { fingerprint, fence, expires_at, state: record_state } = &self.0;
        fingerprint.hash(state);
        fence.hash(state);
        expires_at.hash(state);
        match record_state {
            RecordState::InFlight { lease_expires_at } => {
                0_u8.hash(state);
                lease_expires_at.hash(state);
            }
            RecordState::Completed { response } => {
                1_u8.hash(state);
                hash_response(response, state);
            }
        }
    }
}

fn hash_response<H: Hasher>(response: &StoredResponse, state: &mut H) {
    response.status.hash(state);
    response.headers.hash(state);
    response.body.hash(state);
}

/// A response as it travels back to a client: what the properties need, nothing more.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Answer {
    /// 201: the handler ran and its completion was accepted.
    Created,
    /// The stored response, replayed (`Idempotent-Replayed: true`).
    Replayed,
    /// 409: another request holds a valid claim.
    Conflict,
    /// 422: the key was used for a different request.
    Mismatch,
    /// 500: the handler failed before its side effect and released the claim.
    Failed,
    /// 503: the completion was refused (the claim was lost to a take-over); in atomic mode
    /// the side effect rolled back with it.
    LostClaim,
}

impl Answer {
    /// Whether the client stops retrying on this answer (SPEC: 2xx, replays and 422).
    #[must_use]
    pub const fn is_final(self) -> bool {
        matches!(self, Answer::Created | Answer::Replayed | Answer::Mismatch)
    }

    /// The HTTP status this answer stands for.
    #[must_use]
    pub const fn status(self) -> u16 {
        match self {
            Answer::Created | Answer::Replayed => 201,
            Answer::Conflict => 409,
            Answer::Mismatch => 422,
            Answer::Failed => 500,
            Answer::LostClaim => 503,
        }
    }
}

/// A message in the network.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Message {
    /// A client's request for an operation, to a server.
    Request {
        /// The operation (and so the client, key and payload).
        op: OpIndex,
        /// The server it is addressed to.
        server: ServerIndex,
    },
    /// A server's answer to an operation's request.
    Reply {
        /// The operation answered.
        op: OpIndex,
        /// The server answering.
        server: ServerIndex,
        /// What it answered.
        answer: Answer,
    },
}

impl Message {
    /// The operation the message is about.
    #[must_use]
    pub const fn op(self) -> OpIndex {
        match self {
            Message::Request { op, .. } | Message::Reply { op, .. } => op,
        }
    }

    /// The server at the other end.
    #[must_use]
    pub const fn server(self) -> ServerIndex {
        match self {
            Message::Request { server, .. } | Message::Reply { server, .. } => server,
        }
    }

    const fn with_server(self, server: ServerIndex) -> Message {
        match self {
            Message::Request { op, .. } => Message::Request { op, server },
            Message::Reply { op, answer, .. } => Message::Reply { op, server, answer },
        }
    }
}

/// Where a running handler is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Stage {
    /// It holds a claim and has not run the side effect yet.
    Claimed,
    /// Separate mode only: the side effect ran and committed; the completion is next.
    Effected,
}

/// A request a server is executing under a claim (in memory: a crash loses it).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Handler {
    /// The operation it executes.
    pub op: OpIndex,
    /// Ghost: which execution grant this is.
    pub serial: Serial,
    /// The fence the store handed out with the claim.
    pub fence: Fence,
    /// Whether the claim was a take-over of a lapsed one.
    pub took_over: bool,
    /// Where it is.
    pub stage: Stage,
    /// Variant `no-claim` only: the record the claim would have written, which the
    /// handler believes it holds (the store never saw it).
    pub believed: Option<StoredRecord>,
}

/// One server replica: its running handlers, in the order they started.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Server {
    /// Handlers holding a claim.
    pub handlers: Vec<Handler>,
}

/// A side effect that committed to the business ledger.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Execution {
    /// The operation whose payload was executed.
    pub op: OpIndex,
    /// The execution grant it ran under.
    pub serial: Serial,
}

/// The store: idempotency records and, in atomic mode, the business ledger beside them.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Store {
    /// Records by slot, exactly as idem-core's transitions left them.
    pub records: Vec<Option<StoredRecord>>,
    /// The store-wide fence counter: the fence the next claim gets. It only grows.
    pub next_fence: Fence,
    /// The store's logical clock; only a lease lapse moves it.
    pub now: Timestamp,
    /// Side effects that committed (the business ledger), in order.
    pub ledger: Vec<Execution>,
}

/// A client's view of one logical operation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct OpState {
    /// Requests sent so far (first send, timer resends and retries).
    pub sends: u8,
    /// Of those, timer resends sent while an earlier request was still alive.
    pub early_resends: u8,
    /// The final answer, once one arrived.
    pub answer: Option<Answer>,
}

/// Facts the properties read that no real component keeps ("history variables").
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Ghost {
    /// Execution grants issued so far.
    pub serials: Serial,
    /// Per store slot: the grant whose claim is current (the newest one).
    pub current: Vec<Option<Serial>>,
    /// Per store slot: the operation whose request created the record.
    pub owner: Vec<Option<OpIndex>>,
    /// Per store slot: the first response a completion recorded.
    pub first_response: Vec<Option<Bytes>>,
    /// Guarantees a step broke (bits of [`Broken`]).
    pub broken: u8,
}

/// Bits for [`Ghost::broken`]: which guarantee an event broke.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Broken {
    /// G2: an answer carried a response other than the first recorded one.
    Replay = 1,
    /// G3: a completion was accepted from an execution whose claim is not current.
    StaleCompletion = 2,
    /// G4: an answer carried a response recorded for another principal.
    CrossPrincipal = 4,
    /// G5: a request executed, or was answered with a response, for another payload.
    Mismatch = 8,
}

/// Faults still allowed (each is spent when it happens, which keeps the model finite).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Budgets {
    /// Server crashes left.
    pub crashes: u8,
    /// Lapses of a lease whose holder still runs.
    pub lapses: u8,
    /// Handler failures left.
    pub failures: u8,
    /// Duplicate deliveries or losses left.
    pub network_faults: u8,
}

/// The whole system at one moment.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct State {
    /// Per operation (all clients' operations, flattened).
    pub ops: Vec<OpState>,
    /// Per server replica.
    pub servers: Vec<Server>,
    /// The shared store.
    pub store: Store,
    /// Messages in flight: sorted (a multiset) when unordered, in send order when ordered.
    pub network: Vec<Message>,
    /// Whether `network` is kept in send order (a FIFO network).
    pub ordered: bool,
    /// Faults left.
    pub budgets: Budgets,
    /// History variables for the properties.
    pub ghost: Ghost,
}

impl State {
    /// Whether a step broke the given guarantee.
    #[must_use]
    pub fn broke(&self, guarantee: Broken) -> bool {
        self.ghost.broken & guarantee as u8 != 0
    }

    /// Adds a message: at its sorted place (unordered) or at the end (ordered).
    pub(crate) fn send(&mut self, message: Message) {
        if self.ordered {
            self.network.push(message);
        } else {
            let at = self.network.partition_point(|m| *m <= message);
            self.network.insert(at, message);
        }
    }
}

/// Server replicas are interchangeable: states that differ only by which replica is which
/// are explored once (stateright applies this under DFS and simulation).
impl Representative for State {
    fn representative(&self) -> State {
        let servers = self.servers.len();
        let signature = |server: usize| {
            let handlers: Vec<_> =
                self.servers[server].handlers.iter().map(|h| (h.op, h.serial, h.stage, h.took_over)).collect();
            let mut messages: Vec<Message> =
                self.network.iter().filter(|m| usize::from(m.server()) == server).map(|m| m.with_server(0)).collect();
            messages.sort_unstable();
            (handlers, messages)
        };
        let signatures: Vec<_> = (0..servers).map(signature).collect();
        let mut order: Vec<usize> = (0..servers).collect();
        order.sort_by(|a, b| signatures[*a].cmp(&signatures[*b]));
        let mut renamed = vec![0; servers];
        for (new, old) in order.iter().enumerate() {
            // At most ACTORS_MAX servers, so an index fits in a u8.
            renamed[*old] = u8::try_from(new).expect("at most ACTORS_MAX servers");
        }
        let mut representative = self.clone();
        representative.servers = order.iter().map(|old| self.servers[*old].clone()).collect();
        for message in &mut representative.network {
            *message = message.with_server(renamed[usize::from(message.server())]);
        }
        if !self.ordered {
            representative.network.sort_unstable();
        }
        representative
    }
}
