//! The model proper: which steps are possible in a state, and what each step does.
//!
//! Every store operation is idem-core's store step run on the store's `MemoryState`
//! (`MemoryState::run`, or `step::step` then `MemoryState::commit` where a bug variant
//! tampers with the view, the operation or the step). Every answer a server gives around a
//! decision is idem-core's too (`reply::retry_after`, `reply::superseded`,
//! `StatusRules::disposition`). The model decides no protocol question itself: it moves
//! messages, runs the clock, applies faults, and keeps ghost facts for the properties.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use idem_core::reply::{self, Disposition, StatusRules, Superseded};
use idem_core::step::{self, Operation as StoreOperation, StepError, op};
use idem_core::{
    Bytes, Decision, Fence, Fenced, Fingerprint, Key, Limits, MemoryState, Policy, Principal, Record, RecordId,
    RecordState, Refusal, Renewal, StoredResponse, Timestamp, Write,
};
use stateright::{Model, Property};

use crate::config::{Config, ConfigError, Mode, NetworkKind, Variant};
use crate::state::{
    Answer, AttemptNumber, Broken, Budgets, Durable, Execution, Ghost, GiveUp, Handler, Message, OpIndex, OpState,
    Pace, Phase, Serial, Server, ServerIndex, Slot, SlotGhost, Stage, State, Store,
};

/// The lease and retention every claim gets: idem-core's shipped default (10 s lease,
/// renewed while the handler runs; 24 h retention).
pub const POLICY: Policy = Policy::DEFAULT;
/// The lease of the planted bug `long-lease`: the 60 s idem-core shipped before renewals.
pub const LONG_LEASE: Duration = Duration::from_secs(60);
/// The status a failing handler answers: 503, which idem-core's default status rules
/// release (and which idem-client retries).
pub const FAILURE_STATUS: u16 = 503;
const PRINCIPALS: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// The amount client 1's key-reusing request asks for (its first operation asks for 100).
const REUSED_KEY_AMOUNT: u32 = 700;
/// Purge at most this many records per expiry step (the model holds at most 17).
const PURGE_BATCH_MAX: usize = 64;

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
    /// The policy the server passes to the store (variant `long-lease` tampers with it).
    policy: Policy,
    /// The cap on a 409's `Retry-After` (idem-http's default).
    retry_after_max: Duration,
}

/// One step of the system.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Action {
    /// A client sends the first attempt of an operation to a server.
    Start {
        /// The operation.
        op: OpIndex,
        /// The server chosen.
        server: ServerIndex,
    },
    /// A client's wait ends (the clock moves to its end) and it sends the next attempt.
    Wake {
        /// The operation.
        op: OpIndex,
        /// The server chosen.
        server: ServerIndex,
    },
    /// An attempt's timer fires (the clock moves to it): the client stops waiting for it.
    Timeout {
        /// The operation.
        op: OpIndex,
    },
    /// The network delivers a message (and forgets it).
    Deliver(Message),
    /// The network delivers a copy of a request and keeps it for a second delivery.
    Duplicate(Message),
    /// The network loses a message.
    Lose(Message),
    /// The network holds a message back: the clock may move before it arrives.
    Delay(Message),
    /// A handler takes its next step (atomic: side effect and completion together).
    Step {
        /// Its server.
        server: ServerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler fails before its side effect (503) and releases its claim.
    Fail {
        /// Its server.
        server: ServerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler renews its lease: the clock moves to its heartbeat, a third of a lease
    /// after its last renewal (or the renewal is late and happens now).
    Renew {
        /// Its server.
        server: ServerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler turns out slow: it runs past the handler time, renewing on schedule.
    Slow {
        /// Its server.
        server: ServerIndex,
        /// Its execution grant.
        serial: Serial,
    },
    /// A handler stalls: it stops renewing, so its lease may lapse while it runs.
    Stall {
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
    /// The store becomes unreachable: the next store call fails (and the outage is over).
    StoreDown,
    /// The store is reachable again although nobody called it (offered only when no call
    /// is left to make: the requests were lost, the handlers crashed).
    StoreUp,
    /// The store crashes and restarts at once: it loses every write not yet on disk.
    StoreCrash,
    /// Time passes until a record may be forgotten, and the store purges expired records.
    Expire {
        /// The store slot of the record.
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
        let policy = match self.variant {
            // Bug: the old lease, longer than a retrying client's whole budget.
            Variant::LongLease => {
                Policy::new(LONG_LEASE, POLICY.retention()).expect("retention (24 h) outlasts a 60 s lease")
            }
            _ => POLICY,
        };
        Ok(IdemModel {
            policy,
            retry_after_max: idem_http::CONFLICT_RETRY_AFTER_MAX_DEFAULT,
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

    /// The record id a store slot is keyed by.
    #[must_use]
    pub fn slot_id(&self, slot: Slot) -> &RecordId {
        &self.slots[usize::from(slot)]
    }

    fn op(&self, op: OpIndex) -> &Operation {
        &self.operations[usize::from(op)]
    }

    fn ops_of_slot(&self, slot: Slot) -> impl Iterator<Item = OpIndex> + '_ {
        self.operations
            .iter()
            .enumerate()
            .filter(move |(_, operation)| operation.slot == slot)
            .map(|(op, _)| u8::try_from(op).expect("at most 17 operations"))
    }

    /// When the attempt sent at `sent_at` times out: after the attempt timeout, or at the
    /// deadline if that comes first (idem-client's `attempt_at`).
    fn attempt_ends_at(&self, progress: &OpState, sent_at: Timestamp) -> Timestamp {
        sent_at.saturating_add(self.config.client.attempt_timeout).min(progress.deadline_at)
    }

    /// Whether a request, handler or reply of this attempt is still somewhere in the system.
    fn attempt_alive(&self, state: &State, op: OpIndex, attempt: AttemptNumber) -> bool {
        state.network.iter().any(|m| m.op() == op && m.attempt() == attempt)
            || state.handlers().any(|(_, h)| h.op == op && h.attempt == attempt)
    }

    /// The current claim of the store's record for `slot`: its fence and lease end.
    fn claim_in_flight(&self, state: &State, slot: Slot) -> Option<(Fence, Timestamp)> {
        let record = state.store.memory.record(self.slot_id(slot))?;
        match record.state {
            RecordState::InFlight { lease_expires_at } => Some((record.fence, lease_expires_at)),
            RecordState::Completed { .. } => None,
        }
    }

    /// The latest time the clock may move to now: every operation has begun, no client
    /// timer may be skipped (each fires at its time), a message arrives before the clock moves unless the network
    /// holds it back, a healthy handler answers within the handler time (a slow one within
    /// the slow handler time), a running handler renews on schedule unless it stalled (so
    /// its lease cannot lapse), and no time passes while the store is down.
    fn time_limit(&self, state: &State) -> Timestamp {
        if !state.store.up || state.network.iter().any(|m| !m.delayed()) {
            return state.store.now;
        }
        let mut limit = Timestamp::from_unix_ms(u64::MAX);
        for progress in &state.ops {
            match progress.phase {
                // Every operation begins before the clock first moves.
                Phase::Idle => return state.store.now,
                Phase::Waiting { sent_at } => limit = limit.min(self.attempt_ends_at(progress, sent_at)),
                Phase::Sleeping { until } => limit = limit.min(until),
                Phase::Done(_) | Phase::GaveUp(_) => {}
            }
        }
        for (_, handler) in state.handlers() {
            let runs_for = match handler.pace {
                Pace::Healthy => Some(self.config.handler_time),
                Pace::Slow => Some(self.config.slow_handler_time),
                Pace::Stalled => None,
            };
            if let Some(runs_for) = runs_for {
                limit = limit.min(handler.started_at.saturating_add(runs_for));
            }
            let renews = self.config.renewals && handler.pace != Pace::Stalled && handler.believed.is_none();
            if renews {
                // The heartbeat fires on schedule, before the lease could lapse.
                limit = limit.min(handler.renewed_at.saturating_add(self.policy.renew_every()));
            }
        }
        limit
    }

    /// Whether the clock may move to `target` now.
    fn may_move_to(&self, state: &State, target: Timestamp) -> bool {
        state.store.now <= target && target <= self.time_limit(state)
    }

    /// When `handler` renews next: a third of a lease after its last renewal, or now if
    /// that is past.
    fn renewal_due(&self, handler: &Handler, now: Timestamp) -> Timestamp {
        handler.renewed_at.saturating_add(self.policy.renew_every()).max(now)
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

    /// Whether nothing for the record in `slot` is alive any more: every operation filed
    /// under it is over, and no message or handler of theirs remains. Forgetting it then
    /// cannot let anything run again. (A request that outlives the retention runs again:
    /// the model assumes none does, as SPEC's 24 h retention assumes of real ones.)
    fn slot_settled(&self, state: &State, slot: Slot) -> bool {
        self.ops_of_slot(slot).all(|op| {
            state.ops[usize::from(op)].is_over()
                && !state.network.iter().any(|m| m.op() == op)
                && !state.handlers().any(|(_, h)| h.op == op)
        })
    }

    /// Applies `action` to `state`; with `story`, also tells what happened in one line.
    pub(crate) fn apply(&self, state: &State, action: Action, story: Option<&mut String>) -> Option<State> {
        let mut next = state.clone();
        let mut teller = Teller(story);
        match action {
            Action::Start { op, server } => {
                let deadline_at = next.store.now.saturating_add(self.config.client.deadline);
                next.ops[usize::from(op)].deadline_at = deadline_at;
                teller.tell(|| {
                    format!("{} sends {} (deadline {})", self.client_name(op), self.tell_request(op), time(deadline_at))
                });
                self.send_attempt(&mut next, op, server, &mut teller);
            }
            Action::Wake { op, server } => {
                let Phase::Sleeping { until } = next.ops[usize::from(op)].phase else {
                    unreachable!("a wake is offered only to a sleeping client")
                };
                next.store.now = until;
                teller.tell(|| format!("at {} {} retries", time(until), self.client_name(op)));
                self.send_attempt(&mut next, op, server, &mut teller);
            }
            Action::Timeout { op } => self.timeout(&mut next, op, &mut teller),
            Action::Delay(message) => {
                let index = next.network.iter().position(|m| *m == message)?;
                next.budgets.delays -= 1;
                self.met_fault(&mut next, message.op());
                next.network.remove(index);
                next.send(message.held_back());
                teller.tell(|| format!("the network holds back {} (a slow network)", self.tell_message(message)));
            }
            Action::Deliver(message) | Action::Duplicate(message) | Action::Lose(message) => {
                let index = next.network.iter().position(|m| *m == message)?;
                match action {
                    Action::Deliver(_) => {
                        next.network.remove(index);
                    }
                    Action::Duplicate(_) => {
                        next.budgets.network_faults -= 1;
                        self.met_fault(&mut next, message.op());
                        teller.tell(|| "the network duplicates a request; one copy arrives: ".to_owned());
                    }
                    _ => {
                        next.network.remove(index);
                        next.budgets.network_faults -= 1;
                        self.met_fault(&mut next, message.op());
                        teller.tell(|| format!("the network loses {}", self.tell_message(message)));
                        return Some(next);
                    }
                }
                match message {
                    Message::Request { op, attempt, server, .. } => {
                        self.receive(&mut next, op, attempt, server, &mut teller);
                    }
                    Message::Reply { op, attempt, answer, .. } => {
                        self.client_receives(&mut next, op, attempt, answer, &mut teller);
                    }
                }
            }
            Action::Step { server, serial } => self.step(&mut next, server, serial, &mut teller),
            Action::Fail { server, serial } => self.fail(&mut next, server, serial, &mut teller),
            Action::Renew { server, serial } => self.renew(&mut next, server, serial, &mut teller),
            Action::Slow { server, serial } => {
                next.budgets.slow -= 1;
                let index = Self::handler_index(&next, server, serial);
                let handler = &mut next.servers[usize::from(server)].handlers[index];
                handler.pace = Pace::Slow;
                let (op, started_at) = (handler.op, handler.started_at);
                self.met_fault(&mut next, op);
                teller.tell(|| {
                    format!(
                        "server {}'s handler for {} (started at {}) turns out slow: it may run until {}, renewing its \
                         lease",
                        server + 1,
                        self.who(op),
                        time(started_at),
                        time(started_at.saturating_add(self.config.slow_handler_time))
                    )
                });
            }
            Action::Stall { server, serial } => {
                next.budgets.lapses -= 1;
                let index = Self::handler_index(&next, server, serial);
                let handler = &mut next.servers[usize::from(server)].handlers[index];
                handler.pace = Pace::Stalled;
                let (op, fence) = (handler.op, handler.fence);
                self.met_fault(&mut next, op);
                teller.tell(|| {
                    let until = self
                        .claim_in_flight(state, self.op(op).slot)
                        .map_or(String::new(), |(_, end)| format!("; its lease ends at {}", time(end)));
                    format!(
                        "server {}'s handler for {} (fence {}) stalls and stops renewing{until}",
                        server + 1,
                        self.who(op),
                        fence_name(fence)
                    )
                });
            }
            Action::Crash { server } => self.crash(&mut next, server, &mut teller),
            Action::StoreDown => {
                next.budgets.outages -= 1;
                next.store.up = false;
                teller.tell(|| "the store becomes unreachable (an outage, which fails the next store call)".to_owned());
            }
            Action::StoreUp => {
                next.store.up = true;
                teller.tell(|| "the store is reachable again before anyone called it".to_owned());
            }
            Action::StoreCrash => self.store_crash(&mut next, &mut teller),
            Action::Expire { slot } => self.expire(&mut next, slot, &mut teller),
        }
        self.forget_durable_if_current(&mut next);
        Some(next)
    }

    /// A client sends its next attempt at the current time.
    fn send_attempt(&self, state: &mut State, op: OpIndex, server: ServerIndex, teller: &mut Teller<'_>) {
        let now = state.store.now;
        let progress = &mut state.ops[usize::from(op)];
        progress.attempts += 1;
        progress.phase = Phase::Waiting { sent_at: now };
        progress.last = None;
        let attempt = progress.attempts;
        teller.tell(|| format!(": attempt {attempt} of {} to server {}", self.config.client.attempts_max, server + 1));
        state.send(Message::Request { op, attempt, server, delayed: false });
    }

    /// The attempt's timer fires: the client closes its connection (answers to it go
    /// nowhere now) and retries after a backoff, or gives up.
    fn timeout(&self, state: &mut State, op: OpIndex, teller: &mut Teller<'_>) {
        let progress = state.ops[usize::from(op)];
        let Phase::Waiting { sent_at } = progress.phase else {
            unreachable!("a timeout is offered only to a waiting client")
        };
        let attempt = progress.attempts;
        let at = self.attempt_ends_at(&progress, sent_at);
        let alive = self.attempt_alive(state, op, attempt);
        state.store.now = at;
        state.network.retain(|m| !matches!(m, Message::Reply { op: o, attempt: a, .. } if *o == op && *a == attempt));
        teller.tell(|| {
            let why = if alive { "while it is still on its way or running" } else { "without an answer" };
            format!("at {} {}'s attempt {attempt} times out {why}", time(at), self.client_name(op))
        });
        if at == progress.deadline_at {
            state.ops[usize::from(op)].phase = Phase::GaveUp(GiveUp::Deadline);
            teller.tell(|| format!("; its deadline {} has passed: it gives up", time(at)));
            return;
        }
        let wait = self.config.client.backoff.ceiling(attempt.into());
        self.retry_or_give_up(state, op, wait, "backs off", teller);
    }

    /// After an attempt that failed: wait `wait` and retry, unless the attempts or the
    /// deadline are used up (idem-client's order of checks).
    fn retry_or_give_up(&self, state: &mut State, op: OpIndex, wait: Duration, how: &str, teller: &mut Teller<'_>) {
        let now = state.store.now;
        let progress = &mut state.ops[usize::from(op)];
        let until = now.saturating_add(wait);
        if u32::from(progress.attempts) >= self.config.client.attempts_max {
            progress.phase = Phase::GaveUp(GiveUp::Exhausted);
            let attempts = progress.attempts;
            teller.tell(|| format!("; all {attempts} attempts are used: it gives up"));
        } else if until >= progress.deadline_at {
            progress.phase = Phase::GaveUp(GiveUp::Deadline);
            let deadline_at = progress.deadline_at;
            teller.tell(|| {
                format!("; waiting {} would end past its deadline {}: it gives up", seconds(wait), time(deadline_at))
            });
        } else {
            progress.phase = Phase::Sleeping { until };
            teller.tell(|| format!("; it {how} {} until {}", seconds(wait), time(until)));
        }
    }

    /// A client receives the answer to the attempt it is waiting for.
    fn client_receives(
        &self,
        state: &mut State,
        op: OpIndex,
        attempt: AttemptNumber,
        answer: Answer,
        teller: &mut Teller<'_>,
    ) {
        debug_assert!(
            matches!(state.ops[usize::from(op)].phase, Phase::Waiting { .. })
                && state.ops[usize::from(op)].attempts == attempt,
            "replies travel only to the attempt a client waits for"
        );
        // One answer per attempt: copies of other deliveries of the request go nowhere now.
        state.network.retain(|m| !matches!(m, Message::Reply { op: o, attempt: a, .. } if *o == op && *a == attempt));
        state.ops[usize::from(op)].last = Some(answer);
        teller.tell(|| format!("{} receives {} for attempt {attempt}", self.client_name(op), tell_answer(answer)));
        if answer.is_final() {
            state.ops[usize::from(op)].phase = Phase::Done(answer);
            teller.tell(|| ", final".to_owned());
            return;
        }
        match answer.retry_after() {
            Some(wait) => self.retry_or_give_up(state, op, wait, "waits the Retry-After", teller),
            None => {
                let wait = self.config.client.backoff.ceiling(attempt.into());
                self.retry_or_give_up(state, op, wait, "backs off", teller);
            }
        }
    }

    /// Runs `operation` on the record in `slot` through idem-core's store step. `believed`
    /// (variant `no-claim`) replaces the record the step reads.
    fn store_step<O: StoreOperation>(
        &self,
        state: &mut State,
        slot: Slot,
        believed: Option<&Record>,
        operation: O,
    ) -> Result<O::Answer, StepError> {
        let id = self.slot_id(slot);
        match believed {
            None => state.store.memory.run(id, operation),
            Some(believed) => {
                let mut view = state.store.memory.view(id);
                view.record = Some(believed);
                let step = step::step(id, &view, operation)?;
                Ok(state.store.memory.commit(id, step))
            }
        }
    }

    /// A server receives a request: the store decides with idem-core's claim step.
    fn receive(
        &self,
        state: &mut State,
        op: OpIndex,
        attempt: AttemptNumber,
        server: ServerIndex,
        teller: &mut Teller<'_>,
    ) {
        let operation = self.op(op);
        let slot = operation.slot;
        let now = state.store.now;
        teller.tell(|| format!("server {} receives {} (attempt {attempt}); ", server + 1, self.tell_request_from(op)));
        if Self::store_call_fails(state) {
            if self.config.variant == Variant::FailOpen {
                // Bug: fail open; the handler runs although the store granted nothing.
                state.mark(Broken::NoClaim);
                teller.tell(|| "the store is down, and the server runs the handler anyway, without a claim".to_owned());
                let serial = Self::next_serial(state);
                // Fence 0 is never issued: this handler holds no claim at all.
                self.start_handler(state, server, op, attempt, serial, Fence::new(0), false, None);
                return;
            }
            teller.tell(|| "the store is down: 503, the handler does not run".to_owned());
            self.met_fault(state, op);
            return self.answer(state, ReplyTo { op, attempt, server }, Self::unavailable(), None, teller);
        }
        let id = self.slot_id(slot);
        let step = {
            let mut view = state.store.memory.view(id);
            let stored = view.record;
            if self.config.variant == Variant::FenceReuse {
                // Bug: a per-record counter, which starts again once the record is gone.
                view.counters.next_fence = stored.map_or(Fence::FIRST, |record| record.fence.next());
            }
            let fingerprint = match self.config.variant {
                // Bug: compare the stored fingerprint with itself.
                Variant::NoFingerprintCheck => stored.map_or(operation.fingerprint, |record| record.fingerprint),
                _ => operation.fingerprint,
            };
            step::step(id, &view, op::Claim { fingerprint, now, policy: self.policy })
        };
        let mut step = match step {
            Ok(step) => step,
            Err(error) => {
                teller.tell(|| format!("the store refuses ({error}): 503"));
                return self.answer(state, ReplyTo { op, attempt, server }, Self::unavailable(), None, teller);
            }
        };
        let believed = match (self.config.variant, &step.write) {
            // Bug: check-then-act; the claim is never written (its fence is still drawn
            // and its room counted, as the usage of the record the handler later writes).
            (Variant::NoClaim, Write::Put(record)) => {
                let record = record.clone();
                step.write = Write::Unchanged;
                Some(record)
            }
            _ => None,
        };
        self.write_unsynced(state);
        let decision = state.store.memory.commit(id, step);
        let (claim, took_over) = match decision {
            Decision::Execute(claim) => (claim, None),
            Decision::TakeOver { claim, stale } => (claim, Some(stale)),
            Decision::Replay(response) => {
                teller.tell(|| format!("the store decides: replay {}", tell_response(&response)));
                return self.answer(state, ReplyTo { op, attempt, server }, Answer::Replayed, Some(&response), teller);
            }
            Decision::Conflict { retry_after: lease_left } => {
                let answer = self.conflict(lease_left);
                teller.tell(|| format!("the store decides: in progress, {}", tell_answer(answer)));
                return self.answer(state, ReplyTo { op, attempt, server }, answer, None, teller);
            }
            Decision::Mismatch => {
                teller.tell(|| "the store decides: mismatch, 422".to_owned());
                return self.answer(state, ReplyTo { op, attempt, server }, Answer::Mismatch, None, teller);
            }
        };
        let serial = Self::next_serial(state);
        let slot_index = usize::from(slot);
        state.ghost.slots[slot_index].current = Some(serial);
        match (took_over, state.ghost.slots[slot_index].owner) {
            (Some(_), Some(owner)) if self.op(owner).label != operation.label => state.mark(Broken::Mismatch),
            (Some(_), _) => {}
            (None, _) => state.ghost.slots[slot_index].owner = Some(op),
        }
        teller.tell(|| match took_over {
            None if believed.is_some() => format!(
                "the store decides: execute under fence {}, but the claim is never written (check-then-act)",
                fence_name(claim.fence)
            ),
            None => format!(
                "the store decides: execute under fence {} (lease until {})",
                fence_name(claim.fence),
                time(claim.lease_expires_at)
            ),
            Some(stale) => format!(
                "the store decides: take over the lapsed claim, execute under fence {} ({} is stale now)",
                fence_name(claim.fence),
                fence_name(stale)
            ),
        });
        self.start_handler(state, server, op, attempt, serial, claim.fence, took_over.is_some(), believed);
    }

    /// Counts a fault against an operation (up to one more than G6 tolerates: beyond that
    /// the count changes no verdict, only the number of states).
    fn met_fault(&self, state: &mut State, op: OpIndex) {
        let faults = &mut state.ops[usize::from(op)].faults;
        *faults = faults.saturating_add(1).min(self.config.progress_faults.saturating_add(1));
    }

    /// Whether G6 promises `op` its final response: it met no more faults than tolerated.
    pub(crate) fn progress_promised(&self, progress: &OpState) -> bool {
        progress.faults <= self.config.progress_faults
    }

    /// Whether the store call about to be made fails for an outage. An outage fails one
    /// call and is over: a longer one is several outages.
    fn store_call_fails(state: &mut State) -> bool {
        let down = !state.store.up;
        state.store.up = true;
        down
    }

    fn next_serial(state: &mut State) -> Serial {
        let serial = state.ghost.serials.checked_add(1).expect("fewer than 65536 claims in a bounded model");
        state.ghost.serials = serial;
        serial
    }

    #[allow(clippy::too_many_arguments)]
    fn start_handler(
        &self,
        state: &mut State,
        server: ServerIndex,
        op: OpIndex,
        attempt: AttemptNumber,
        serial: Serial,
        fence: Fence,
        took_over: bool,
        believed: Option<Record>,
    ) {
        let now = state.store.now;
        state.servers[usize::from(server)].handlers.push(Handler {
            op,
            attempt,
            serial,
            fence,
            took_over,
            stage: Stage::Claimed,
            started_at: now,
            renewed_at: now,
            pace: Pace::Healthy,
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

    /// The response execution `serial` of `op` produces: 201, a `location` naming the
    /// execution, and a body naming principal, key, amount and execution.
    fn response(&self, op: OpIndex, serial: Serial) -> StoredResponse {
        let operation = self.op(op);
        StoredResponse {
            status: 201,
            headers: vec![("location".to_owned(), interned(format!("/payments/pay_{serial}")))],
            body: interned(format!("{}#{serial}", operation.label)),
        }
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

    /// The completion through the store step: `op::CompleteInTransaction` in atomic mode
    /// (the side effect commits with it or not at all), `op::Complete` in separate mode.
    fn complete(&self, state: &mut State, server: ServerIndex, handler: Handler, teller: &mut Teller<'_>) {
        let (op, serial) = (handler.op, handler.serial);
        let slot = self.op(op).slot;
        let response = self.response(op, serial);
        let atomic = self.config.mode == Mode::Atomic;
        if Self::store_call_fails(state) {
            self.met_fault(state, op);
            if atomic {
                teller.tell(|| {
                    format!(
                        "{}: the store is down, the transaction rolls back with its side effect; answers 503 \
                         (the claim stays until its lease lapses)",
                        self.tell_completion(server, &handler, handler.fence)
                    )
                });
                return self.answer(
                    state,
                    ReplyTo { op, attempt: handler.attempt, server },
                    Self::unavailable(),
                    None,
                    teller,
                );
            }
            teller.tell(|| {
                format!(
                    "{}: the store is down; answers {} unrecorded (the claim stays until its lease lapses)",
                    self.tell_completion(server, &handler, handler.fence),
                    tell_response(&response)
                )
            });
            return self.answer(
                state,
                ReplyTo { op, attempt: handler.attempt, server },
                Answer::Unrecorded,
                Some(&response),
                teller,
            );
        }
        let believed = handler.believed.as_ref();
        let presented = match self.config.variant {
            // Bug: present whatever fence the record holds, so the check always passes.
            Variant::NoFenceCheck => self.claim_in_flight(state, slot).map_or(handler.fence, |(fence, _)| fence),
            _ => handler.fence,
        };
        let (now, policy) = (state.store.now, self.policy);
        let before = state.store.memory.record(self.slot_id(slot)).cloned();
        let synced = !matches!(self.config.variant, Variant::UnsyncedCompletion | Variant::CompletionApart);
        if !synced {
            // Bug: the completion's commit does not wait for the disk.
            self.write_unsynced(state);
        }
        let outcome = if atomic {
            let completion = op::CompleteInTransaction { fence: presented, response: response.clone(), now, policy };
            self.store_step(state, slot, believed, completion)
        } else {
            let completion = op::Complete { fence: presented, response: response.clone(), now, policy };
            self.store_step(state, slot, believed, completion)
        }
        .expect("a completion admits nothing and issues no fence, so the step never refuses it");
        match outcome {
            Fenced::Applied => {
                if state.ghost.slots[usize::from(slot)].current != Some(serial) {
                    state.mark(Broken::StaleWrite);
                }
                if atomic {
                    state.store.ledger.push(Execution { op, serial });
                }
                if state.ghost.slots[usize::from(slot)].first_response.is_none() {
                    state.ghost.slots[usize::from(slot)].first_response = Some((op, serial));
                }
                if synced {
                    // The commit waits for the disk, and with it everything committed before.
                    state.store.durable = None;
                }
                teller.tell(|| {
                    let disk = match self.config.variant {
                        _ if synced => "",
                        Variant::CompletionApart => " (the payment is on disk, the completion not yet)",
                        _ => " (not on disk yet)",
                    };
                    format!(
                        "{}: accepted{disk}, answers {}",
                        self.tell_completion(server, &handler, presented),
                        tell_response(&response)
                    )
                });
                self.answer(
                    state,
                    ReplyTo { op, attempt: handler.attempt, server },
                    Answer::Created,
                    Some(&response),
                    teller,
                );
            }
            Fenced::Refused(refusal) => {
                self.check_unchanged(state, slot, before.as_ref());
                teller.tell(|| {
                    let rollback = if atomic { ", the transaction rolls back with its side effect" } else { "" };
                    format!("{}: refused ({refusal}){rollback}; ", self.tell_completion(server, &handler, presented))
                });
                self.superseded(state, op, handler.attempt, server, teller);
            }
        }
    }

    /// A refused operation must leave the record as it was (G3).
    fn check_unchanged(&self, state: &mut State, slot: Slot, before: Option<&Record>) {
        if state.store.memory.record(self.slot_id(slot)) != before {
            state.mark(Broken::RefusedChanged);
        }
    }

    /// An execution that lost its claim answers what the record says now
    /// (`reply::superseded`), never its own response.
    fn superseded(
        &self,
        state: &mut State,
        op: OpIndex,
        attempt: AttemptNumber,
        server: ServerIndex,
        teller: &mut Teller<'_>,
    ) {
        let operation = self.op(op);
        let record = state.store.memory.record(self.slot_id(operation.slot));
        match reply::superseded(record, &operation.fingerprint, state.store.now) {
            Superseded::Replay(response) => {
                teller.tell(|| format!("answers the recorded {} as a replay", tell_response(&response)));
                self.answer(state, ReplyTo { op, attempt, server }, Answer::Replayed, Some(&response), teller);
            }
            Superseded::InProgress { lease_left } => {
                let answer = self.conflict(lease_left);
                teller.tell(|| format!("answers {}", tell_answer(answer)));
                self.answer(state, ReplyTo { op, attempt, server }, answer, None, teller);
            }
            Superseded::Mismatch => {
                teller.tell(|| "answers 422".to_owned());
                self.answer(state, ReplyTo { op, attempt, server }, Answer::Mismatch, None, teller);
            }
        }
    }

    /// A handler fails before its side effect with a 503; idem-core's status rules say
    /// release, and the release goes through the store step.
    fn fail(&self, state: &mut State, server: ServerIndex, serial: Serial, teller: &mut Teller<'_>) {
        state.budgets.failures -= 1;
        let index = Self::handler_index(state, server, serial);
        let handler = state.servers[usize::from(server)].handlers.remove(index);
        let (op, attempt) = (handler.op, handler.attempt);
        self.met_fault(state, op);
        let slot = self.op(op).slot;
        teller.tell(|| {
            format!("server {}'s handler for {} fails before its side effect (503): ", server + 1, self.who(op))
        });
        match StatusRules::default().disposition(FAILURE_STATUS) {
            Disposition::Release => {}
            Disposition::Record => unreachable!("idem-core's default status rules release a 5xx"),
        }
        if handler.believed.is_some() {
            // Under check-then-act there is no claim to give back.
            teller.tell(|| "nothing to release; answers 503".to_owned());
            return self.answer(state, ReplyTo { op, attempt, server }, Answer::Failed, None, teller);
        }
        if Self::store_call_fails(state) {
            self.met_fault(state, op);
            teller.tell(|| "the store is down, the release fails (the claim lapses); answers 503".to_owned());
            return self.answer(state, ReplyTo { op, attempt, server }, Answer::Failed, None, teller);
        }
        let before = state.store.memory.record(self.slot_id(slot)).cloned();
        self.write_unsynced(state);
        let outcome = self
            .store_step(state, slot, None, op::Release { fence: handler.fence })
            .expect("a release admits nothing and issues no fence, so the step never refuses it");
        match outcome {
            Fenced::Applied => {
                if state.ghost.slots[usize::from(slot)].current != Some(serial) {
                    state.mark(Broken::StaleWrite);
                }
                state.ghost.slots[usize::from(slot)].current = None;
                state.ghost.slots[usize::from(slot)].owner = None;
                teller.tell(|| format!("releases fence {}; answers 503", fence_name(handler.fence)));
                self.answer(state, ReplyTo { op, attempt, server }, Answer::Failed, None, teller);
            }
            Fenced::Refused(Refusal::NoRecord) => {
                self.check_unchanged(state, slot, before.as_ref());
                teller.tell(|| format!("release of {} refused (no record); answers 503", fence_name(handler.fence)));
                self.answer(state, ReplyTo { op, attempt, server }, Answer::Failed, None, teller);
            }
            Fenced::Refused(refusal) => {
                self.check_unchanged(state, slot, before.as_ref());
                teller.tell(|| format!("release of {} refused ({refusal}); ", fence_name(handler.fence)));
                self.superseded(state, op, attempt, server, teller);
            }
        }
    }

    /// A handler renews its lease through the store step; a refused renewal means it was
    /// taken over: it stops and answers what the record says (`reply::superseded`).
    fn renew(&self, state: &mut State, server: ServerIndex, serial: Serial, teller: &mut Teller<'_>) {
        let index = Self::handler_index(state, server, serial);
        let handler = state.servers[usize::from(server)].handlers[index].clone();
        let slot = self.op(handler.op).slot;
        let now = self.renewal_due(&handler, state.store.now);
        state.store.now = now;
        let before = state.store.memory.record(self.slot_id(slot)).cloned();
        self.write_unsynced(state);
        let outcome = self
            .store_step(state, slot, None, op::Renew { fence: handler.fence, now, policy: self.policy })
            .expect("a renewal admits nothing and issues no fence, so the step never refuses it");
        let what = || {
            format!(
                "server {}'s handler for {} renews fence {}",
                server + 1,
                self.who(handler.op),
                fence_name(handler.fence)
            )
        };
        match outcome {
            Renewal::Renewed { lease_expires_at } => {
                if state.ghost.slots[usize::from(slot)].current != Some(serial) {
                    state.mark(Broken::StaleWrite);
                }
                let running = &mut state.servers[usize::from(server)].handlers[index];
                running.renewed_at = now;
                if running.pace == Pace::Stalled {
                    // The pause is over; the handler has overrun its time, so it is slow now.
                    running.pace = Pace::Slow;
                }
                teller
                    .tell(|| format!("{} at {}: the lease now ends at {}", what(), time(now), time(lease_expires_at)));
            }
            Renewal::Refused(refusal) => {
                self.check_unchanged(state, slot, before.as_ref());
                state.servers[usize::from(server)].handlers.remove(index);
                teller.tell(|| {
                    format!("{} at {}: refused ({refusal}), so it was taken over and stops; ", what(), time(now))
                });
                self.superseded(state, handler.op, handler.attempt, server, teller);
            }
        }
    }

    /// A server crashes and restarts at once: its handlers are gone, their claims stay in
    /// the store, and the clients waiting on them see their connections reset.
    fn crash(&self, state: &mut State, server: ServerIndex, teller: &mut Teller<'_>) {
        state.budgets.crashes -= 1;
        let lost = std::mem::take(&mut state.servers[usize::from(server)].handlers);
        teller.tell(|| {
            let lost: Vec<String> =
                lost.iter().map(|h| format!("{} under fence {}", self.who(h.op), fence_name(h.fence))).collect();
            format!("server {} crashes and restarts, losing its handler for {}", server + 1, lost.join(" and "))
        });
        let mut met: Vec<OpIndex> = lost.iter().map(|h| h.op).collect();
        met.dedup();
        met.sort_unstable();
        met.dedup();
        for op in met {
            self.met_fault(state, op);
        }
        for handler in &lost {
            self.answer(
                state,
                ReplyTo { op: handler.op, attempt: handler.attempt, server },
                Answer::Reset,
                None,
                teller,
            );
        }
    }

    /// Before a write that does not wait for the disk (a claim, renewal or release): keep
    /// the store as its disk holds it, unless that is kept already or no store crash is
    /// left to lose anything.
    fn write_unsynced(&self, state: &mut State) {
        if state.budgets.store_crashes == 0 || state.store.durable.is_some() {
            return;
        }
        state.store.durable = Some(Durable {
            memory: state.store.memory.clone(),
            ledger_len: if self.ledger_in_store() { state.store.ledger.len() } else { 0 },
            slots: state.ghost.slots.clone(),
        });
    }

    /// Whether a store crash can take payments back: only when the completion that carries
    /// them in its transaction does not wait for the disk (variant `unsynced-completion`,
    /// atomic mode). Otherwise a payment is durable once it commits: with a completion that
    /// waits for the disk (atomic mode), or outside the store (separate mode).
    fn ledger_in_store(&self) -> bool {
        self.config.mode == Mode::Atomic && self.config.variant == Variant::UnsyncedCompletion
    }

    /// Whether the restarted store moves its fence counter past every fence it issued
    /// before the crash (`MemoryState::with_fences_from`, as idem-redis reseeds from its
    /// clock), so that fences are never reused.
    fn reseeds_fences(&self) -> bool {
        self.config.variant != Variant::NoFenceReseed
    }

    /// Forgets the durable copy once a crash would change nothing: the unsynced writes
    /// since undid one another (a claim released). Keeps equal systems equal states.
    fn forget_durable_if_current(&self, state: &mut State) {
        let Some(durable) = &state.store.durable else { return };
        let live = &state.store.memory;
        let same = durable.memory.records().eq(live.records())
            && (self.reseeds_fences() || durable.memory.counters() == live.counters())
            && durable.ledger_len == if self.ledger_in_store() { state.store.ledger.len() } else { 0 }
            && durable
                .slots
                .iter()
                .zip(&state.ghost.slots)
                .all(|(then, now)| (then.current, then.owner) == (now.current, now.owner));
        if same {
            state.store.durable = None;
        }
    }

    /// The store crashes and restarts at once with what its disk holds. Running handlers
    /// keep running; their next store call meets the store as it came back (a claim it lost
    /// is absent, so a completion, renewal or release is refused with `NoRecord`). A
    /// payment that committed stays: with a completion that waited for the disk, or outside
    /// the store (separate mode).
    fn store_crash(&self, state: &mut State, teller: &mut Teller<'_>) {
        state.budgets.store_crashes -= 1;
        let durable = state.store.durable.take().expect("a store crash is offered only with writes not on disk");
        let next_fence = state.store.memory.counters().next_fence;
        let lost: Vec<String> = (0..self.slots.len())
            .filter_map(|slot| {
                let id = &self.slots[slot];
                let (now, then) = (state.store.memory.record(id), durable.memory.record(id));
                (now != then).then(|| {
                    format!(
                        "{} goes back from {} to {}",
                        self.slot_name(slot_index(slot)),
                        tell_record(now),
                        tell_record(then)
                    )
                })
            })
            .collect();
        let changed: Vec<Slot> = (0..self.slots.len())
            .filter(|slot| state.store.memory.record(&self.slots[*slot]) != durable.memory.record(&self.slots[*slot]))
            .map(slot_index)
            .collect();
        state.store.memory =
            if self.reseeds_fences() { durable.memory.with_fences_from(next_fence) } else { durable.memory };
        if self.ledger_in_store() {
            state.store.ledger.truncate(durable.ledger_len);
        }
        for (now, then) in state.ghost.slots.iter_mut().zip(durable.slots) {
            // The first recorded response stays history: G2 holds answers to it.
            *now = SlotGhost { first_response: now.first_response, ..then };
        }
        for slot in changed {
            let ops: Vec<OpIndex> = self.ops_of_slot(slot).collect();
            for op in ops {
                if !state.ops[usize::from(op)].is_over() {
                    self.met_fault(state, op);
                }
            }
        }
        teller.tell(|| {
            let fences = if self.reseeds_fences() {
                format!("its fences go on from {}", fence_name(next_fence))
            } else {
                format!("its fence counter goes back to {}", fence_name(state.store.memory.counters().next_fence))
            };
            format!(
                "the store crashes and restarts, losing the writes not yet on disk: {}; {fences}",
                if lost.is_empty() { "no record changes".to_owned() } else { lost.join(", ") }
            )
        });
    }

    /// Time passes to the record's forgettable time and the store purges what expired.
    fn expire(&self, state: &mut State, slot: Slot, teller: &mut Teller<'_>) {
        let id = self.slot_id(slot);
        let forgettable_at =
            state.store.memory.record(id).expect("expiry is offered only for a held record").forgettable_at();
        state.store.now = forgettable_at;
        let purged = state.store.memory.purge_expired(forgettable_at, PURGE_BATCH_MAX);
        // A purge runs off the request path and waits for the disk.
        state.store.durable = None;
        if state.store.memory.record(id).is_some() {
            state.mark(Broken::NotForgotten);
        }
        for (slot, held) in self.slots.iter().enumerate() {
            if state.store.memory.record(held).is_none() {
                state.ghost.slots[slot].current = None;
                state.ghost.slots[slot].owner = None;
                state.ghost.slots[slot].first_response = None;
            }
        }
        teller.tell(|| {
            format!(
                "time passes to {}, when the record of {} may be forgotten; the store purges {purged} expired record(s)",
                time(forgettable_at),
                self.slot_name(slot)
            )
        });
    }

    /// A 409 for a claim with `lease_left`: idem-core's `Retry-After`, capped as idem-http does.
    fn conflict(&self, lease_left: Duration) -> Answer {
        let retry_after = reply::retry_after(lease_left, self.retry_after_max);
        Answer::Conflict { retry_after_s: whole_seconds(retry_after) }
    }

    /// A 503 for an unreachable store, with the shortest `Retry-After` a layer sends.
    fn unavailable() -> Answer {
        Answer::Unavailable { retry_after_s: whole_seconds(reply::RETRY_AFTER_MIN) }
    }

    /// Sends an answer back to the attempt, checking what it carries against G2, G4 and
    /// G5. A client that no longer waits for that attempt has closed the connection: the
    /// answer goes nowhere. Only a lossy network carries answers as messages (it may lose
    /// or delay them); otherwise the client receives the answer in the same step.
    fn answer(
        &self,
        state: &mut State,
        to: ReplyTo,
        answer: Answer,
        response: Option<&StoredResponse>,
        teller: &mut Teller<'_>,
    ) {
        let ReplyTo { op, attempt, server } = to;
        if let Some(response) = response {
            let operation = self.op(op);
            let slot = usize::from(operation.slot);
            match state.ghost.slots[slot].first_response {
                Some((first_op, first_serial)) if self.response(first_op, first_serial) != *response => {
                    state.mark(Broken::Replay);
                }
                // Only an answer given unrecorded, before any completion, has no first response.
                None if answer != Answer::Unrecorded => state.mark(Broken::Replay),
                _ => {}
            }
            let body = std::str::from_utf8(&response.body).expect("the model writes UTF-8 bodies");
            let answered_for = body.split('#').next().unwrap_or(body);
            if answered_for != operation.label {
                let principal = answered_for.split('/').next().unwrap_or(answered_for);
                let broke =
                    if principal == operation.principal.as_str() { Broken::Mismatch } else { Broken::CrossPrincipal };
                state.mark(broke);
            }
        }
        let progress = state.ops[usize::from(op)];
        if !matches!(progress.phase, Phase::Waiting { .. }) || progress.attempts != attempt {
            return;
        }
        if self.config.network == NetworkKind::Lossy {
            state.send(Message::Reply { op, attempt, server, answer, delayed: false });
        } else {
            // Only a lossy network can do anything to an answer but deliver it, and the
            // clock cannot move before it arrives: the client receives it at once.
            teller.tell(|| ". ".to_owned());
            self.client_receives(state, op, attempt, answer, teller);
        }
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

    /// Whether a record held in the store was renewed at least once (its lease ends later
    /// than its claim's first lease).
    pub(crate) fn renewed(&self, state: &State) -> bool {
        state.store.memory.records().any(|(_, record)| match record.state {
            RecordState::InFlight { lease_expires_at } => {
                let claimed_at = record.expires_at.unix_ms().saturating_sub(millis(self.policy.retention()));
                lease_expires_at.unix_ms() > claimed_at.saturating_add(millis(self.policy.lease()))
            }
            RecordState::Completed { .. } => false,
        })
    }

    /// Whether an operation got its final response and its record was forgotten since.
    pub(crate) fn forgotten(&self, state: &State) -> bool {
        self.operations.iter().zip(&state.ops).any(|(operation, progress)| {
            matches!(progress.phase, Phase::Done(Answer::Created | Answer::Replayed))
                && state.store.memory.record(self.slot_id(operation.slot)).is_none()
        })
    }

    // Story telling: short phrases for the numbered counterexample lines.

    fn client_name(&self, op: OpIndex) -> String {
        let operation = self.op(op);
        format!("client {} ({})", operation.client + 1, operation.principal.as_str())
    }

    fn who(&self, op: OpIndex) -> String {
        let operation = self.op(op);
        format!("{}'s {} (amount={})", operation.principal.as_str(), operation.key.as_str(), operation.amount)
    }

    fn record_name(&self, op: OpIndex) -> String {
        let operation = self.op(op);
        format!("{}/{}", operation.principal.as_str(), operation.key.as_str())
    }

    fn slot_name(&self, slot: Slot) -> String {
        let id = self.slot_id(slot);
        if id.principal.is_anonymous() {
            format!("key {} (unscoped)", id.key.as_str())
        } else {
            format!("{}/{}", id.principal.as_str(), id.key.as_str())
        }
    }

    fn tell_request(&self, op: OpIndex) -> String {
        let operation = self.op(op);
        format!("POST /payments key={} amount={}", operation.key.as_str(), operation.amount)
    }

    fn tell_request_from(&self, op: OpIndex) -> String {
        format!("{} from {}", self.tell_request(op), self.client_name(op))
    }

    fn tell_completion(&self, server: ServerIndex, handler: &Handler, presented: Fence) -> String {
        let op = handler.op;
        let presented = if presented == handler.fence {
            fence_name(presented)
        } else {
            format!("{} (its own claim's fence is {})", fence_name(presented), fence_name(handler.fence))
        };
        match self.config.mode {
            Mode::Atomic => format!(
                "server {} runs the side effect of {} and completes under fence {} in one transaction",
                server + 1,
                self.who(op),
                presented
            ),
            Mode::Separate => format!("server {} completes {} under fence {}", server + 1, self.who(op), presented),
        }
    }

    fn tell_message(&self, message: Message) -> String {
        match message {
            Message::Request { op, attempt, server, .. } => {
                format!("the request {} (attempt {attempt}) to server {}", self.tell_request_from(op), server + 1)
            }
            Message::Reply { op, attempt, server, answer, .. } => format!(
                "the {} reply from server {} to {}'s attempt {attempt}",
                tell_answer(answer),
                server + 1,
                self.client_name(op)
            ),
        }
    }
}

impl Model for IdemModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let slots = self.slots.len();
        vec![State {
            ops: vec![
                OpState { phase: Phase::Idle, attempts: 0, faults: 0, last: None, deadline_at: Timestamp::EPOCH };
                self.operations.len()
            ],
            servers: vec![Server::default(); usize::from(self.config.servers)],
            store: Store {
                memory: MemoryState::new(Limits::default()),
                now: Timestamp::EPOCH,
                up: true,
                ledger: Vec::new(),
                durable: None,
            },
            network: Vec::new(),
            ordered: self.config.network == NetworkKind::Ordered,
            budgets: Budgets {
                crashes: self.config.crashes,
                lapses: if self.config.renewals { self.config.lapses } else { 0 },
                slow: self.config.slow,
                failures: self.config.failures,
                network_faults: match self.config.network {
                    NetworkKind::Ordered => 0,
                    NetworkKind::Duplicating | NetworkKind::Lossy => self.config.network_faults,
                },
                delays: self.config.delays,
                outages: self.config.outages,
                store_crashes: self.config.store_crashes,
            },
            ghost: Ghost { serials: 0, slots: vec![SlotGhost::default(); slots], broken: 0 },
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        // A state that breaks a guarantee ends its path: what follows a violation adds
        // states, not insight, and the bug variants' state spaces would explode.
        if self.is_broken(state) {
            return;
        }
        let servers = self.config.servers;
        for (op, progress) in state.ops.iter().enumerate() {
            let op = u8::try_from(op).expect("at most 17 operations");
            match progress.phase {
                Phase::Idle => actions.extend((0..servers).map(|server| Action::Start { op, server })),
                Phase::Sleeping { until } if self.may_move_to(state, until) => {
                    actions.extend((0..servers).map(|server| Action::Wake { op, server }));
                }
                Phase::Waiting { sent_at } => {
                    if self.may_move_to(state, self.attempt_ends_at(progress, sent_at)) {
                        actions.push(Action::Timeout { op });
                    }
                }
                Phase::Sleeping { .. } | Phase::Done(_) | Phase::GaveUp(_) => {}
            }
        }
        for (index, message) in state.network.iter().enumerate() {
            if !self.deliverable(state, index) {
                continue;
            }
            actions.push(Action::Deliver(*message));
            if state.budgets.delays > 0 && !message.delayed() {
                actions.push(Action::Delay(*message));
            }
            if state.budgets.network_faults > 0 {
                match (self.config.network, message) {
                    (NetworkKind::Duplicating, Message::Request { .. }) => actions.push(Action::Duplicate(*message)),
                    (NetworkKind::Lossy, _) => actions.push(Action::Lose(*message)),
                    _ => {}
                }
            }
        }
        let now = state.store.now;
        for (server, replica) in state.servers.iter().enumerate() {
            let server = u8::try_from(server).expect("at most ACTORS_MAX servers");
            for handler in &replica.handlers {
                let serial = handler.serial;
                actions.push(Action::Step { server, serial });
                if state.budgets.failures > 0 && handler.stage == Stage::Claimed {
                    actions.push(Action::Fail { server, serial });
                }
                // The layer renews every third of a lease: the clock moves to the renewal (or,
                // for a stalled handler, it is late and renews now); either way the clock moved
                // since the last one.
                let renews = self.config.renewals && handler.believed.is_none() && state.store.up;
                if renews && self.may_move_to(state, self.renewal_due(handler, now)) {
                    actions.push(Action::Renew { server, serial });
                }
                if state.budgets.slow > 0 && handler.pace == Pace::Healthy {
                    actions.push(Action::Slow { server, serial });
                }
                // Only a holder of the current claim has a lease that a stall lets lapse.
                if state.budgets.lapses > 0
                    && handler.pace != Pace::Stalled
                    && self
                        .claim_in_flight(state, self.op(handler.op).slot)
                        .is_some_and(|(fence, _)| fence == handler.fence)
                {
                    actions.push(Action::Stall { server, serial });
                }
            }
            // A crash of an idle server changes nothing, so only busy servers crash.
            if state.budgets.crashes > 0 && !replica.handlers.is_empty() {
                actions.push(Action::Crash { server });
            }
        }
        // Whether a store call is still to come: a request or a running handler is out.
        let busy =
            state.network.iter().any(|m| matches!(m, Message::Request { .. })) || state.handlers().next().is_some();
        if state.store.up {
            // An outage nobody meets changes nothing.
            if state.budgets.outages > 0 && busy {
                actions.push(Action::StoreDown);
            }
            // A store crash with everything on disk loses nothing.
            if state.budgets.store_crashes > 0 && state.store.durable.is_some() {
                actions.push(Action::StoreCrash);
            }
            for slot in 0..self.slots.len() {
                let slot = u8::try_from(slot).expect("at most 17 slots");
                let Some(record) = state.store.memory.record(self.slot_id(slot)) else { continue };
                let at = record.forgettable_at();
                // The purge forgets every record expired by then: each must be settled.
                let settled = (0..self.slots.len()).all(|other| {
                    let other = u8::try_from(other).expect("at most 17 slots");
                    state.store.memory.record(self.slot_id(other)).is_none_or(|held| held.forgettable_at() > at)
                        || self.slot_settled(state, other)
                });
                if settled && self.may_move_to(state, at) {
                    actions.push(Action::Expire { slot });
                }
            }
        } else if !busy {
            actions.push(Action::StoreUp);
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

/// `text` as static bytes, kept once per process: cloning a state then copies a pointer
/// instead of counting references (which two checker threads would contend for).
fn interned(text: String) -> Bytes {
    static TEXTS: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
    let mut texts = TEXTS.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
    let text: &'static str = match texts.get(text.as_str()) {
        Some(known) => known,
        None => {
            // Bounded: one text per (operation, execution grant) of a bounded model.
            let leaked: &'static str = Box::leak(text.into_boxed_str());
            texts.insert(leaked);
            leaked
        }
    };
    Bytes::from_static(text.as_bytes())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn whole_seconds(duration: Duration) -> u8 {
    // Retry-After values here are capped at a few seconds.
    u8::try_from(duration.as_secs()).unwrap_or(u8::MAX)
}

/// Where an answer goes: the attempt of an operation, from the server that answers it.
#[derive(Clone, Copy)]
struct ReplyTo {
    op: OpIndex,
    attempt: AttemptNumber,
    server: ServerIndex,
}

fn slot_index(slot: usize) -> Slot {
    u8::try_from(slot).expect("at most 17 slots")
}

fn tell_record(record: Option<&Record>) -> String {
    match record {
        None => "no record".to_owned(),
        Some(Record { fence, state: RecordState::InFlight { .. }, .. }) => {
            format!("a claim under {}", fence_name(*fence))
        }
        Some(Record { fence, state: RecordState::Completed { .. }, .. }) => {
            format!("a completion under {}", fence_name(*fence))
        }
    }
}

fn fence_name(fence: Fence) -> String {
    format!("f{}", fence.get())
}

/// Milliseconds as seconds with no trailing zeros: "10", "10.1", "0.25".
fn decimal_seconds(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}", ms / 1000)
    } else {
        let fraction = format!("{:03}", ms % 1000);
        format!("{}.{}", ms / 1000, fraction.trim_end_matches('0'))
    }
}

fn seconds(duration: Duration) -> String {
    format!("{} s", decimal_seconds(millis(duration)))
}

fn time(at: Timestamp) -> String {
    format!("t={}s", decimal_seconds(at.unix_ms()))
}

fn tell_response(response: &StoredResponse) -> String {
    let location = response
        .headers
        .iter()
        .find(|(name, _)| name == "location")
        .map_or(String::new(), |(_, value)| format!(" location={}", String::from_utf8_lossy(value)));
    format!("{}{location} {:?}", response.status, String::from_utf8_lossy(&response.body))
}

fn tell_answer(answer: Answer) -> String {
    match answer {
        Answer::Created => "201".to_owned(),
        Answer::Unrecorded => "201 (unrecorded)".to_owned(),
        Answer::Replayed => "201 (replayed)".to_owned(),
        Answer::Conflict { retry_after_s } => format!("409 (Retry-After {retry_after_s} s)"),
        Answer::Mismatch => "422".to_owned(),
        Answer::Failed => "503 (no Retry-After)".to_owned(),
        Answer::Unavailable { retry_after_s } => format!("503 (Retry-After {retry_after_s} s)"),
        Answer::Reset => "a reset connection".to_owned(),
    }
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
