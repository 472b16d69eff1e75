//! The model's state: clients, servers, the store (an idem-core `MemoryState`), the
//! network, the fault budgets, and the ghost facts the properties read.

use idem_core::{Fence, MemoryState, Record, Timestamp};
use stateright::Representative;

use crate::message::{Answer, AttemptNumber, Message, OpIndex, Serial, ServerIndex};

/// Where a running handler is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Stage {
    /// It holds a claim and has not written the payment yet.
    Claimed,
    /// It wrote the payment; the completion is next. In atomic mode the row is pending in
    /// the handler's open transaction, which the completion commits (or not at all); in
    /// separate mode it committed on its own.
    Written,
}

/// How a running handler behaves in time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Pace {
    /// It answers within the configured handler time and renews on schedule.
    Healthy,
    /// It takes longer than the handler time, up to the slow handler time (a fault),
    /// renewing on schedule.
    Slow,
    /// It paused and stopped renewing (a fault): its lease may lapse while it runs, for
    /// any time. A renewal ends the pause; it is slow from then on.
    Stalled,
}

/// A request a server is executing under a claim (in memory: a crash loses it).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Handler {
    /// The operation it executes.
    pub op: OpIndex,
    /// The attempt whose request it executes (its answer goes there).
    pub attempt: AttemptNumber,
    /// Ghost: which execution grant this is.
    pub serial: Serial,
    /// Ghost: how many times the record id had been forgotten when the claim was granted
    /// (its "life"; [`SlotGhost::lives`]).
    pub life: u8,
    /// The fence the store handed out with the claim.
    pub fence: Fence,
    /// Whether the claim was a take-over of a lapsed one.
    pub took_over: bool,
    /// Where it is.
    pub stage: Stage,
    /// When it started (claimed).
    pub started_at: Timestamp,
    /// When it last renewed its lease (or claimed): the next renewal is due a third of a
    /// lease later.
    pub renewed_at: Timestamp,
    /// How it behaves in time.
    pub pace: Pace,
    /// Variant `no-claim` only: the record the claim would have written, which the
    /// handler believes it holds (the store never saw it).
    pub believed: Option<Record>,
}

/// One server replica: its running handlers, in the order they started.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct Server {
    /// Handlers holding a claim.
    pub handlers: Vec<Handler>,
}

/// A payment row that committed to the business ledger.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Execution {
    /// The operation whose payload was executed.
    pub op: OpIndex,
    /// The execution grant it ran under.
    pub serial: Serial,
    /// The life of the record id it ran in (forgets before its grant): an operator's forget
    /// lets the key run again, so G1 counts per life.
    pub life: u8,
}

/// The store: idem-core's own store value, its clock, and the business ledger beside it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Store {
    /// The records, the fence counter and the usage, exactly as `MemoryStore` holds them;
    /// changed only by `MemoryState::run`/`commit` with idem-core's store step.
    pub memory: MemoryState,
    /// The logical clock; it moves only when someone waits (see the crate docs, "Time").
    pub now: Timestamp,
    /// Whether the store can be reached.
    pub up: bool,
    /// Payment rows that committed (the business ledger), in order. A row pending in an
    /// open transaction (atomic mode, [`Stage::Written`]) is not here until it commits.
    pub ledger: Vec<Execution>,
    /// What a store crash would leave: the store as of its last write that waited for the
    /// disk, while a later one did not (`None`: everything is on disk, or no store crash
    /// is left to lose anything).
    pub durable: Option<Durable>,
}

/// The store as its disk holds it, kept while writes after it are not yet on disk.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Durable {
    /// The records and counters on disk.
    pub memory: MemoryState,
    /// How much of the ledger is on disk (variant `unsynced-completion` only: otherwise a
    /// payment is durable when it commits, with its completion or outside the store).
    pub ledger_len: usize,
    /// The ghost facts of each slot as they were then (the claim current, the owner); a
    /// crash rolls them back with the records, except the first recorded response, which
    /// stays history.
    pub slots: Vec<SlotGhost>,
}

/// Why a client gave up on an operation (idem-client's `RetryError`s other than 422).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum GiveUp {
    /// Every attempt was used.
    Exhausted,
    /// The overall deadline passed, or the next wait would end past it.
    Deadline,
}

/// Where a client is with one operation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Phase {
    /// Not started.
    Idle,
    /// An attempt is out; it times out at `sent_at` + the attempt timeout (or the deadline).
    Waiting {
        /// When the attempt was sent.
        sent_at: Timestamp,
    },
    /// Waiting before the next attempt (a `Retry-After` or a backoff).
    Sleeping {
        /// When the next attempt is sent.
        until: Timestamp,
    },
    /// A final answer arrived.
    Done(Answer),
    /// The client gave up without a final answer.
    GaveUp(GiveUp),
}

/// A client's view of one logical operation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct OpState {
    /// Where it is.
    pub phase: Phase,
    /// Attempts sent so far.
    pub attempts: AttemptNumber,
    /// Faults this operation met, counted up to one more than G6 tolerates.
    pub faults: u8,
    /// The answer the client received last, until it sends its next attempt.
    pub last: Option<Answer>,
    /// When the whole operation must be over (set by the first attempt).
    pub deadline_at: Timestamp,
}

impl OpState {
    /// Whether the operation has ended, with or without its final answer.
    #[must_use]
    pub const fn is_over(&self) -> bool {
        matches!(self.phase, Phase::Done(_) | Phase::GaveUp(_))
    }

    /// The final answer, once one arrived.
    #[must_use]
    pub const fn answer(&self) -> Option<Answer> {
        match self.phase {
            Phase::Done(answer) => Some(answer),
            _ => None,
        }
    }
}

/// Facts the properties read that no real component keeps ("history variables").
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Ghost {
    /// Execution grants issued so far.
    pub serials: Serial,
    /// Per store slot.
    pub slots: Vec<SlotGhost>,
    /// Guarantees a step broke (bits of [`Broken`]).
    pub broken: u16,
}

/// History variables of one store slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct SlotGhost {
    /// The grant whose claim is current (the newest one).
    pub current: Option<Serial>,
    /// The operation whose request created the record.
    pub owner: Option<OpIndex>,
    /// The execution (operation and grant) whose response a completion recorded first;
    /// the model rebuilds that response to compare answers with it.
    pub first_response: Option<(OpIndex, Serial)>,
    /// How many times an operator forgot the record id; kept across purges.
    pub lives: u8,
    /// With an execution ceiling: the latest a lease of the current claim may end (its
    /// grant time, on the granting server's clock, plus the ceiling and one lease).
    pub lease_bound: Option<Timestamp>,
    /// With tombstones: when the completed record's retention ends and when its tombstone
    /// ends, from the time the model passed to the applied completion.
    pub tombstone: Option<(Timestamp, Timestamp)>,
}

/// Bits for [`Ghost::broken`]: which guarantee an event broke.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Broken {
    /// G2: an answer carried a response (status, stored headers or body) other than the
    /// first recorded one.
    Replay = 1,
    /// G3: a completion, release or renewal was applied for an execution whose claim is
    /// not current.
    StaleWrite = 2,
    /// G4: an answer carried a response recorded for another principal.
    CrossPrincipal = 4,
    /// G5: a request executed, or was answered with a response, for another payload.
    Mismatch = 8,
    /// G3: a completion, release or renewal was refused and the record changed anyway.
    RefusedChanged = 16,
    /// G8: a handler started without a claim granted by the store.
    NoClaim = 32,
    /// Retention: a purge at a record's forgettable time left the record in the store.
    NotForgotten = 64,
    /// Retention: a purge removed a record before its time (a claim whose lease is valid,
    /// or a record whose retention is not over).
    PurgedEarly = 128,
    /// Lifecycle: a claim was granted for a record id while its tombstone lived.
    Tombstoned = 256,
    /// G3: a completion, release or renewal was applied for a claim granted before the
    /// record id was forgotten.
    Forgotten = 512,
}

/// Faults still allowed (each is spent when it happens, which keeps the model finite).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Budgets {
    /// Server crashes left.
    pub crashes: u8,
    /// Stalls of a running holder left.
    pub lapses: u8,
    /// Slow handlers left.
    pub slow: u8,
    /// Handler failures left.
    pub failures: u8,
    /// Duplicate deliveries or losses left.
    pub network_faults: u8,
    /// Messages the network may still hold back.
    pub delays: u8,
    /// Store outages left.
    pub outages: u8,
    /// Store crashes left.
    pub store_crashes: u8,
    /// Purges racing the requests left.
    pub purges: u8,
    /// An operator's forgets left.
    pub forgets: u8,
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
    /// Whether server replicas are interchangeable: their clocks agree (no skew). Symmetry
    /// reduction applies only then.
    pub interchangeable: bool,
    /// Faults left.
    pub budgets: Budgets,
    /// History variables for the properties.
    pub ghost: Ghost,
}

impl State {
    /// Whether a step broke the given guarantee.
    #[must_use]
    pub fn broke(&self, guarantee: Broken) -> bool {
        self.ghost.broken & guarantee as u16 != 0
    }

    pub(crate) fn mark(&mut self, guarantee: Broken) {
        self.ghost.broken |= guarantee as u16;
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

    /// Every running handler, with its server.
    pub fn handlers(&self) -> impl Iterator<Item = (ServerIndex, &Handler)> {
        self.servers.iter().enumerate().flat_map(|(server, replica)| {
            // At most ACTORS_MAX servers, so an index fits in a u8.
            let server = u8::try_from(server).expect("at most ACTORS_MAX servers");
            replica.handlers.iter().map(move |handler| (server, handler))
        })
    }
}

/// Server replicas are interchangeable: states that differ only by which replica is which
/// are explored once (stateright applies this under DFS and simulation).
impl Representative for State {
    fn representative(&self) -> State {
        if !self.interchangeable {
            return self.clone();
        }
        let servers = self.servers.len();
        let signature = |server: usize| {
            let handlers: Vec<_> = self.servers[server]
                .handlers
                .iter()
                .map(|h| {
                    (
                        h.op,
                        h.attempt,
                        h.serial,
                        h.life,
                        h.fence,
                        h.stage,
                        h.took_over,
                        h.started_at,
                        h.renewed_at,
                        h.pace,
                    )
                })
                .collect();
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
