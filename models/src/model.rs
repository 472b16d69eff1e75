//! The model proper: which steps are possible in a state, and what each step does.
//!
//! Every decision about a record is made by idem-core: `transition::claim` when a request
//! arrives, `transition::complete` when a handler finishes, `transition::release` when it
//! fails. The store applies the returned `Write` and nothing else. Bug variants change only
//! what is passed to those functions, or skip applying a write.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use idem_core::transition::{self, Transition};
use idem_core::{
    Bytes, Decision, Fence, Fenced, Fingerprint, Key, Policy, Principal, Record, RecordId, RecordState, StoredResponse,
    Timestamp, Write,
};
use stateright::{Model, Property};

use crate::config::{Config, ConfigError, Mode, NetworkKind, Variant};
use crate::state::{
    Answer, Broken, Budgets, Execution, Ghost, Handler, Message, OpIndex, OpState, Serial, Server, ServerIndex, Slot,
    Stage, State, Store, StoredRecord,
};

/// The lease every claim gets; lapses move the store's clock past it.
pub const LEASE: Duration = Duration::from_secs(10);
/// How long completed records are kept: longer than any run of the model lasts in
/// logical time (each lapse advances it by at most one lease), so nothing expires.
pub const RETENTION: Duration = Duration::from_secs(3600);
const PRINCIPALS: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// The amount client 1's key-reusing request asks for (its first operation asks for 100).
const REUSED_KEY_AMOUNT: u32 = 700;

/// One logical operation of one client: a key and a payload, fixed for the whole run.
#[derive(Clone, Debug)]
pub struct Operation {
    /// The client (0-based) that performs it.
    pub client: u8,
    /// The client's principal.
    pub principal: Principal,
    /// The idempotency key it sends on every attempt.
    pub key: Key,
    /// The payment amount in its body.
    pub amount: u32,
    /// idem-core's fingerprint of `POST /payments` with that body.
    pub fingerprint: Fingerprint,
    /// Its record id (principal, key).
    pub record_id: RecordId,
    /// Which of the distinct record ids it is (for "at most one execution per record id").
    pub record_index: u8,
    /// The store slot the store variant files it under.
    pub slot: Slot,
    /// "alice/k1/100": what a response to it must start with.
    pub label: String,
}

/// The idempotency protocol as a stateright model; build it with [`Config::into_model`].
#[derive(Clone, Debug)]
pub struct IdemModel {
    config: Config,
    operations: Vec<Operation>,
    /// Per store slot: the record id the store keys it by.
    slots: Vec<RecordId>,
    record_ids: usize,
    policy: Policy,
}

/// Why a client sends.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SendKind {
    /// The operation's first request.
    First,
    /// Its timer fired while an earlier request may still be on its way.
    Timer,
    /// Its earlier requests all ended without a final answer (lost, crashed, 409, 5xx).
    Retry,
}

/// One step of the system.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Action {
    /// A client sends a request for an operation to a server.
    Send {
        /// The operation.
        op: OpIndex,
        /// The server chosen.
        server: ServerIndex,
        /// Why it sends.
        kind: SendKind,
    },
    /// The network delivers a message (and forgets it).
    Deliver(Message),
    /// The network delivers a copy of a message and keeps it for a second delivery.
    Duplicate(Message),
    /// The network loses a message.
    Lose(Message),
    /// A handler takes its next step (atomic: side effect and completion together).
    Step {
        /// Its server.
        server: ServerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler fails before its side effect and releases its claim.
    Fail {
        /// Its server.
        server: ServerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A server crashes and restarts, losing its running handlers.
    Crash {
        /// The server.
        server: ServerIndex,
    },
    /// Time passes until the lease of the claim in a slot lapses.
    Lapse {
        /// The store slot.
        slot: Slot,
    },
}

impl Config {
    /// The model for this configuration.
    ///
    /// # Errors
    /// [`ConfigError`] when a count is out of bounds.
    pub fn into_model(self) -> Result<IdemModel, ConfigError> {
        self.validate()?;
        let mut requests = Vec::new();
        for client in 0..self.clients {
            for op in 0..self.ops_per_client {
                requests.push((client, op + 1, 100 * u32::from(op + 1)));
            }
        }
        if self.key_reuse {
            requests.insert(self.ops_per_client.into(), (0, 1, REUSED_KEY_AMOUNT));
        }
        let mut record_indices: BTreeMap<RecordId, u8> = BTreeMap::new();
        let mut slot_indices: BTreeMap<RecordId, u8> = BTreeMap::new();
        let mut slots = Vec::new();
        let mut operations = Vec::new();
        for (client, key_number, amount) in requests {
            let name = PRINCIPALS[usize::from(client)];
            let principal = Principal::new(name).expect("the model's principal names are valid");
            let key_text = format!("k{key_number}");
            let key = Key::parse(key_text.as_bytes()).expect("k<n> is a valid key");
            let record_id = RecordId::new(principal.clone(), key.clone());
            let next = u8::try_from(record_indices.len()).expect("at most 17 operations");
            let record_index = *record_indices.entry(record_id.clone()).or_insert(next);
            // What the store keys the record by: the bug `unscoped-keys` forgets the principal.
            let store_id = match self.variant {
                Variant::UnscopedKeys => RecordId::new(Principal::anonymous(), key.clone()),
                _ => record_id.clone(),
            };
            let next_slot = u8::try_from(slot_indices.len()).expect("at most 17 operations");
            let slot = *slot_indices.entry(store_id.clone()).or_insert_with(|| {
                slots.push(store_id);
                next_slot
            });
            let body = format!("{{\"amount\":{amount}}}");
            operations.push(Operation {
                client,
                fingerprint: Fingerprint::of("POST", "/payments", body.as_bytes()),
                label: format!("{name}/{key_text}/{amount}"),
                principal,
                key,
                amount,
                record_id,
                record_index,
                slot,
            });
        }
        Ok(IdemModel {
            policy: Policy::new(LEASE, RETENTION).expect("the retention outlasts the lease"),
            record_ids: record_indices.len(),
            config: self,
            operations,
            slots,
        })
    }
}

impl IdemModel {
    /// The configuration it was built from.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The operations, in the order clients are numbered.
    #[must_use]
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    fn op(&self, op: OpIndex) -> &Operation {
        &self.operations[usize::from(op)]
    }

    /// Whether a request, handler or reply of `op` is still somewhere in the system.
    fn attempt_alive(&self, state: &State, op: OpIndex) -> bool {
        state.network.iter().any(|m| m.op() == op)
            || state.servers.iter().any(|server| server.handlers.iter().any(|h| h.op == op))
    }

    /// Whether the record `op` maps to is claimed under a lease that has not lapsed:
    /// a client honouring `Retry-After` does not retry then (it would only get a 409).
    fn lease_valid(&self, state: &State, op: OpIndex) -> bool {
        let slot = self.op(op).slot;
        match &state.store.records[usize::from(slot)] {
            Some(StoredRecord(Record { state: RecordState::InFlight { lease_expires_at }, .. })) => {
                state.store.now < *lease_expires_at
            }
            _ => false,
        }
    }

    /// Whether a running handler holds the current claim of `slot` (with `fence`).
    fn holder_alive(&self, state: &State, slot: Slot, fence: Fence) -> bool {
        state
            .servers
            .iter()
            .any(|server| server.handlers.iter().any(|h| self.op(h.op).slot == slot && h.fence == fence))
    }

    /// Requests and replies travel on one channel per (client, server) and direction.
    fn channel(&self, message: Message) -> (u8, ServerIndex, bool) {
        let client = self.op(message.op()).client;
        (client, message.server(), matches!(message, Message::Request { .. }))
    }

    fn deliverable(&self, state: &State, index: usize) -> bool {
        let message = state.network[index];
        if state.ordered {
            let channel = self.channel(message);
            !state.network[..index].iter().any(|earlier| self.channel(*earlier) == channel)
        } else {
            // Equal messages sit side by side; offer each distinct message once.
            index == 0 || state.network[index - 1] != message
        }
    }

    fn send_kind(&self, state: &State, op: OpIndex) -> Option<SendKind> {
        let progress = state.ops[usize::from(op)];
        if progress.answer.is_some() || progress.sends >= self.config.sends_max() {
            return None;
        }
        if progress.sends == 0 {
            Some(SendKind::First)
        } else if self.attempt_alive(state, op) {
            (progress.early_resends < self.config.resends).then_some(SendKind::Timer)
        } else {
            (!self.lease_valid(state, op)).then_some(SendKind::Retry)
        }
    }

    /// Applies `action` to `state`; with `story`, also tells what happened in one line.
    pub(crate) fn apply(&self, state: &State, action: Action, story: Option<&mut String>) -> Option<State> {
        let mut next = state.clone();
        let mut teller = Teller(story);
        match action {
            Action::Send { op, server, kind } => {
                let progress = &mut next.ops[usize::from(op)];
                progress.sends += 1;
                if kind == SendKind::Timer {
                    progress.early_resends += 1;
                }
                next.send(Message::Request { op, server });
                teller.tell(|| self.tell_send(op, server, kind));
            }
            Action::Deliver(message) | Action::Duplicate(message) | Action::Lose(message) => {
                let index = next.network.iter().position(|m| *m == message)?;
                match action {
                    Action::Deliver(_) => {
                        next.network.remove(index);
                    }
                    Action::Duplicate(_) => {
                        next.budgets.network_faults -= 1;
                        teller.tell(|| "the network duplicates a message; one copy arrives: ".to_owned());
                    }
                    _ => {
                        next.network.remove(index);
                        next.budgets.network_faults -= 1;
                        teller.tell(|| format!("the network loses {}", self.tell_message(message)));
                        return Some(next);
                    }
                }
                match message {
                    Message::Request { op, server } => self.receive(&mut next, op, server, &mut teller),
                    Message::Reply { op, answer, .. } => {
                        let progress = &mut next.ops[usize::from(op)];
                        if answer.is_final() && progress.answer.is_none() {
                            progress.answer = Some(answer);
                        }
                        teller.tell(|| self.tell_reply(op, answer));
                    }
                }
            }
            Action::Step { server, serial } => self.step(&mut next, server, serial, &mut teller),
            Action::Fail { server, serial } => self.fail(&mut next, server, serial, &mut teller),
            Action::Crash { server } => {
                next.budgets.crashes -= 1;
                let lost = std::mem::take(&mut next.servers[usize::from(server)].handlers);
                teller.tell(|| {
                    let lost: Vec<String> =
                        lost.iter().map(|h| format!("{} under fence {}", self.who(h.op), fence(h.fence))).collect();
                    format!("server {} crashes and restarts, losing its handler for {}", server + 1, lost.join(" and "))
                });
            }
            Action::Lapse { slot } => {
                let Some(StoredRecord(record)) = &state.store.records[usize::from(slot)] else {
                    unreachable!("a lapse is offered only for a record in flight")
                };
                let RecordState::InFlight { lease_expires_at } = record.state else {
                    unreachable!("a lapse is offered only for a record in flight")
                };
                let alive = self.holder_alive(state, slot, record.fence);
                if alive {
                    next.budgets.lapses -= 1;
                }
                next.store.now = lease_expires_at;
                teller.tell(|| {
                    let holder = if alive { "while its holder is still running" } else { "(its holder crashed)" };
                    format!(
                        "the lease of {} (fence {}) lapses {holder}; the store's clock reads {}",
                        self.slot_name(slot),
                        fence(record.fence),
                        time(lease_expires_at)
                    )
                });
            }
        }
        Some(next)
    }

    /// A server receives a request: the store decides with `transition::claim`.
    fn receive(&self, state: &mut State, op: OpIndex, server: ServerIndex, teller: &mut Teller<'_>) {
        let operation = self.op(op);
        let slot = usize::from(operation.slot);
        let stored = state.store.records[slot].as_ref().map(|r| &r.0);
        let fresh_fence = match self.config.variant {
            // Bug: a per-record counter, which starts again once the record is gone.
            Variant::FenceReuse => stored.map_or(Fence::FIRST, |record| record.fence.next()),
            _ => state.store.next_fence,
        };
        let fingerprint = match self.config.variant {
            // Bug: compare the stored fingerprint with itself.
            Variant::NoFingerprintCheck => stored.map_or(operation.fingerprint, |record| record.fingerprint),
            _ => operation.fingerprint,
        };
        let Transition { outcome, write } =
            transition::claim(stored, &fingerprint, state.store.now, &self.policy, fresh_fence);
        teller.tell(|| format!("server {} receives {}; the store decides: ", server + 1, self.tell_request(op)));
        let (claim, took_over) = match outcome {
            Decision::Execute(claim) => (claim, None),
            Decision::TakeOver { claim, stale } => (claim, Some(stale)),
            Decision::Replay(response) => {
                teller.tell(|| format!("replay {}", tell_response(&response)));
                return self.answer(state, op, server, Answer::Replayed, Some(&response));
            }
            Decision::Conflict { retry_after } => {
                teller.tell(|| format!("conflict, 409 (retry after {} s)", retry_after.as_secs()));
                return self.answer(state, op, server, Answer::Conflict, None);
            }
            Decision::Mismatch => {
                teller.tell(|| "mismatch, 422".to_owned());
                return self.answer(state, op, server, Answer::Mismatch, None);
            }
        };
        let believed = match (self.config.variant, write) {
            // Bug: check-then-act; the claim is never written.
            (Variant::NoClaim, Write::Put(record)) => Some(StoredRecord(record)),
            (_, write) => {
                apply_write(&mut state.store, slot, write);
                None
            }
        };
        if fresh_fence == state.store.next_fence {
            state.store.next_fence = fresh_fence.next();
        }
        let serial = state.ghost.serials.checked_add(1).expect("fewer than 256 claims in a bounded model");
        state.ghost.serials = serial;
        state.ghost.current[slot] = Some(serial);
        match (took_over, state.ghost.owner[slot]) {
            (Some(_), Some(owner)) if self.op(owner).label != operation.label => {
                state.ghost.broken |= Broken::Mismatch as u8;
            }
            (Some(_), _) => {}
            (None, _) => state.ghost.owner[slot] = Some(op),
        }
        teller.tell(|| match took_over {
            None if believed.is_some() => {
                format!("execute under fence {}, but the claim is never written (check-then-act)", fence(claim.fence))
            }
            None => {
                format!("execute under fence {} (lease until {})", fence(claim.fence), time(claim.lease_expires_at))
            }
            Some(stale) => format!(
                "take over the lapsed claim: execute under fence {} ({} is stale now)",
                fence(claim.fence),
                fence(stale)
            ),
        });
        state.servers[usize::from(server)].handlers.push(Handler {
            op,
            serial,
            fence: claim.fence,
            took_over: took_over.is_some(),
            stage: Stage::Claimed,
            believed,
        });
    }

    fn handler_index(state: &State, server: ServerIndex, serial: Serial) -> usize {
        state.servers[usize::from(server)]
            .handlers
            .iter()
            .position(|h| h.serial == serial)
            .expect("actions name running handlers only")
    }

    /// A handler's next step: run the side effect, complete, or (atomic) both at once.
    fn step(&self, state: &mut State, server: ServerIndex, serial: Serial, teller: &mut Teller<'_>) {
        let index = Self::handler_index(state, server, serial);
        let handler = &mut state.servers[usize::from(server)].handlers[index];
        let (op, stage) = (handler.op, handler.stage);
        if self.config.mode == Mode::Separate && stage == Stage::Claimed {
            handler.stage = Stage::Effected;
            state.store.ledger.push(Execution { op, serial });
            let record_index = self.op(op).record_index;
            teller.tell(|| {
                let count = state.store.ledger.iter().filter(|e| self.op(e.op).record_index == record_index).count();
                format!(
                    "server {} runs the side effect of {} on its own (separate mode): the ledger now holds {count} \
                     payment(s) for {}",
                    server + 1,
                    self.who(op),
                    self.record_name(op)
                )
            });
            return;
        }
        let handler = state.servers[usize::from(server)].handlers.remove(index);
        self.complete(state, server, handler, teller);
    }

    /// The completion, fenced by `transition::complete`; in atomic mode the side effect
    /// commits with it or not at all.
    fn complete(&self, state: &mut State, server: ServerIndex, handler: Handler, teller: &mut Teller<'_>) {
        let operation = self.op(handler.op);
        let slot = usize::from(operation.slot);
        let response = StoredResponse::new(201, Bytes::from(format!("{}#{}", operation.label, handler.serial)));
        let record = match &handler.believed {
            Some(believed) => Some(&believed.0),
            None => state.store.records[slot].as_ref().map(|r| &r.0),
        };
        let presented = match self.config.variant {
            // Bug: present whatever fence the record holds, so the check always passes.
            Variant::NoFenceCheck => record.map_or(handler.fence, |record| record.fence),
            _ => handler.fence,
        };
        let Transition { outcome, write } =
            transition::complete(record, presented, response.clone(), state.store.now, &self.policy);
        let atomic = self.config.mode == Mode::Atomic;
        match outcome {
            Fenced::Applied => {
                apply_write(&mut state.store, slot, write);
                if state.ghost.current[slot] != Some(handler.serial) {
                    state.ghost.broken |= Broken::StaleCompletion as u8;
                }
                if atomic {
                    state.store.ledger.push(Execution { op: handler.op, serial: handler.serial });
                }
                if state.ghost.first_response[slot].is_none() {
                    state.ghost.first_response[slot] = Some(response.body.clone());
                }
                teller.tell(|| {
                    format!(
                        "{}: accepted, answers {}",
                        self.tell_completion(server, &handler, presented),
                        tell_response(&response)
                    )
                });
                self.answer(state, handler.op, server, Answer::Created, Some(&response));
            }
            Fenced::Refused(refusal) => {
                teller.tell(|| {
                    let rollback = if atomic { ", the transaction rolls back with its side effect" } else { "" };
                    format!(
                        "{}: refused ({refusal}){rollback}; answers 503",
                        self.tell_completion(server, &handler, presented)
                    )
                });
                self.answer(state, handler.op, server, Answer::LostClaim, None);
            }
        }
    }

    /// A handler fails before its side effect and gives its claim back with `transition::release`.
    fn fail(&self, state: &mut State, server: ServerIndex, serial: Serial, teller: &mut Teller<'_>) {
        state.budgets.failures -= 1;
        let index = Self::handler_index(state, server, serial);
        let handler = state.servers[usize::from(server)].handlers.remove(index);
        let slot = usize::from(self.op(handler.op).slot);
        // Under check-then-act there is no claim to give back.
        let outcome = if handler.believed.is_some() {
            None
        } else {
            let Transition { outcome, write } =
                transition::release(state.store.records[slot].as_ref().map(|r| &r.0), handler.fence);
            if outcome == Fenced::Applied {
                apply_write(&mut state.store, slot, write);
                state.ghost.current[slot] = None;
                state.ghost.owner[slot] = None;
            }
            Some(outcome)
        };
        teller.tell(|| {
            let released = match outcome {
                None => "nothing to release".to_owned(),
                Some(Fenced::Applied) => format!("releases fence {}", fence(handler.fence)),
                Some(Fenced::Refused(refusal)) => format!("release of {} refused ({refusal})", fence(handler.fence)),
            };
            format!(
                "server {}'s handler for {} fails before its side effect: {released}; answers 500",
                server + 1,
                self.who(handler.op)
            )
        });
        self.answer(state, handler.op, server, Answer::Failed, None);
    }

    /// Sends an answer back, checking what it carries against G2, G4 and G5.
    fn answer(
        &self,
        state: &mut State,
        op: OpIndex,
        server: ServerIndex,
        answer: Answer,
        response: Option<&StoredResponse>,
    ) {
        if let Some(response) = response {
            let operation = self.op(op);
            let slot = usize::from(operation.slot);
            if state.ghost.first_response[slot].as_ref() != Some(&response.body) {
                state.ghost.broken |= Broken::Replay as u8;
            }
            let body = std::str::from_utf8(&response.body).expect("the model writes UTF-8 bodies");
            let answered_for = body.split('#').next().unwrap_or(body);
            if answered_for != operation.label {
                let principal = answered_for.split('/').next().unwrap_or(answered_for);
                let broke =
                    if principal == operation.principal.as_str() { Broken::Mismatch } else { Broken::CrossPrincipal };
                state.ghost.broken |= broke as u8;
            }
        }
        state.send(Message::Reply { op, server, answer });
    }

    /// Whether any always-property fails in `state`.
    pub(crate) fn is_broken(&self, state: &State) -> bool {
        state.ghost.broken != 0 || !self.at_most_once(state)
    }

    pub(crate) fn at_most_once(&self, state: &State) -> bool {
        let mut executions = vec![0_u8; self.record_ids];
        for execution in &state.store.ledger {
            let count = &mut executions[usize::from(self.op(execution.op).record_index)];
            *count += 1;
            if *count > 1 {
                return false;
            }
        }
        true
    }

    // Story telling: short phrases for the numbered counterexample lines.

    fn who(&self, op: OpIndex) -> String {
        let operation = self.op(op);
        format!("{}'s {} (amount={})", operation.principal.as_str(), operation.key.as_str(), operation.amount)
    }

    fn record_name(&self, op: OpIndex) -> String {
        let operation = self.op(op);
        format!("{}/{}", operation.principal.as_str(), operation.key.as_str())
    }

    fn slot_name(&self, slot: Slot) -> String {
        let id = &self.slots[usize::from(slot)];
        if id.principal.is_anonymous() {
            format!("key {} (unscoped)", id.key.as_str())
        } else {
            format!("{}/{}", id.principal.as_str(), id.key.as_str())
        }
    }

    fn tell_request(&self, op: OpIndex) -> String {
        let operation = self.op(op);
        format!(
            "POST /payments key={} amount={} from client {} ({})",
            operation.key.as_str(),
            operation.amount,
            operation.client + 1,
            operation.principal.as_str()
        )
    }

    fn tell_completion(&self, server: ServerIndex, handler: &Handler, presented: Fence) -> String {
        let op = handler.op;
        let presented = if presented == handler.fence {
            fence(presented)
        } else {
            format!("{} (its own claim's fence is {})", fence(presented), fence(handler.fence))
        };
        match self.config.mode {
            Mode::Atomic => format!(
                "server {} runs the side effect of {} and completes under fence {} in one transaction",
                server + 1,
                self.who(op),
                presented
            ),
            Mode::Separate => {
                format!("server {} completes {} under fence {}", server + 1, self.who(op), presented)
            }
        }
    }

    fn tell_send(&self, op: OpIndex, server: ServerIndex, kind: SendKind) -> String {
        let operation = self.op(op);
        let verb = match kind {
            SendKind::First => "sends",
            SendKind::Timer => "times out early and resends",
            SendKind::Retry => "retries",
        };
        format!(
            "client {} ({}) {verb} POST /payments key={} amount={} to server {}",
            operation.client + 1,
            operation.principal.as_str(),
            operation.key.as_str(),
            operation.amount,
            server + 1
        )
    }

    fn tell_message(&self, message: Message) -> String {
        match message {
            Message::Request { op, server } => {
                format!("the request {} to server {}", self.tell_request(op), server + 1)
            }
            Message::Reply { op, server, answer } => {
                format!("the {} reply from server {} to {}", answer.status(), server + 1, self.who(op))
            }
        }
    }

    fn tell_reply(&self, op: OpIndex, answer: Answer) -> String {
        let operation = self.op(op);
        let meaning = match answer {
            Answer::Created => "created, final",
            Answer::Replayed => "replayed, final",
            Answer::Mismatch => "key reused for another request, final",
            Answer::Conflict => "in progress, will retry",
            Answer::Failed | Answer::LostClaim => "failed, will retry",
        };
        format!(
            "client {} ({}) receives {} for key={} amount={} ({meaning})",
            operation.client + 1,
            operation.principal.as_str(),
            answer.status(),
            operation.key.as_str(),
            operation.amount
        )
    }
}

impl Model for IdemModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let slots = self.slots.len();
        vec![State {
            ops: vec![OpState::default(); self.operations.len()],
            servers: vec![Server::default(); usize::from(self.config.servers)],
            store: Store {
                records: vec![None; slots],
                next_fence: Fence::FIRST,
                now: Timestamp::EPOCH,
                ledger: Vec::new(),
            },
            network: Vec::new(),
            ordered: self.config.network == NetworkKind::Ordered,
            budgets: Budgets {
                crashes: self.config.crashes,
                lapses: self.config.lapses,
                failures: self.config.failures,
                network_faults: match self.config.network {
                    NetworkKind::Ordered => 0,
                    NetworkKind::Duplicating | NetworkKind::Lossy => self.config.network_faults,
                },
            },
            ghost: Ghost {
                serials: 0,
                current: vec![None; slots],
                owner: vec![None; slots],
                first_response: vec![None; slots],
                broken: 0,
            },
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        // A state that breaks a guarantee ends its path: what follows a violation adds
        // states, not insight, and the bug variants' state spaces would explode.
        if self.is_broken(state) {
            return;
        }
        for op in 0..self.operations.len() {
            let op = u8::try_from(op).expect("at most 17 operations");
            if let Some(kind) = self.send_kind(state, op) {
                actions.extend((0..self.config.servers).map(|server| Action::Send { op, server, kind }));
            }
        }
        for (index, message) in state.network.iter().enumerate() {
            if !self.deliverable(state, index) {
                continue;
            }
            actions.push(Action::Deliver(*message));
            if state.budgets.network_faults > 0 {
                match self.config.network {
                    NetworkKind::Duplicating => actions.push(Action::Duplicate(*message)),
                    NetworkKind::Lossy => actions.push(Action::Lose(*message)),
                    NetworkKind::Ordered => {}
                }
            }
        }
        for (server, replica) in state.servers.iter().enumerate() {
            let server = u8::try_from(server).expect("at most ACTORS_MAX servers");
            for handler in &replica.handlers {
                actions.push(Action::Step { server, serial: handler.serial });
                if state.budgets.failures > 0 && handler.stage == Stage::Claimed {
                    actions.push(Action::Fail { server, serial: handler.serial });
                }
            }
            // A crash of an idle server changes nothing, so only busy servers crash.
            if state.budgets.crashes > 0 && !replica.handlers.is_empty() {
                actions.push(Action::Crash { server });
            }
        }
        for (slot, record) in state.store.records.iter().enumerate() {
            let Some(StoredRecord(record)) = record else { continue };
            let RecordState::InFlight { lease_expires_at } = record.state else { continue };
            let slot = u8::try_from(slot).expect("at most 17 slots");
            // Time always passes for a claim whose holder is gone (that is recovery, not a
            // fault); a lapse under a running holder is a fault and spends the budget.
            let allowed = !self.holder_alive(state, slot, record.fence) || state.budgets.lapses > 0;
            if state.store.now < lease_expires_at && allowed {
                actions.push(Action::Lapse { slot });
            }
        }
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        self.apply(state, action, None)
    }

    fn format_action(&self, action: &Action) -> String {
        format!("{action:?}")
    }

    fn format_step(&self, state: &State, action: Action) -> Option<String> {
        let mut line = String::new();
        self.apply(state, action, Some(&mut line)).map(|_| line)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        crate::properties::all()
    }
}

fn apply_write(store: &mut Store, slot: usize, write: Write) {
    match write {
        Write::Unchanged => {}
        Write::Put(record) => store.records[slot] = Some(StoredRecord(record)),
        Write::Delete => store.records[slot] = None,
    }
}

fn fence(fence: Fence) -> String {
    format!("f{}", fence.get())
}

fn time(at: Timestamp) -> String {
    format!("t={}s", at.unix_ms() / 1000)
}

fn tell_response(response: &StoredResponse) -> String {
    format!("{} {:?}", response.status, String::from_utf8_lossy(&response.body))
}

/// Collects one line of story, if a story is being told; costs nothing otherwise.
struct Teller<'a>(Option<&'a mut String>);

impl Teller<'_> {
    fn tell(&mut self, phrase: impl FnOnce() -> String) {
        if let Some(line) = self.0.as_deref_mut() {
            let _ = write!(line, "{}", phrase());
        }
    }
}
