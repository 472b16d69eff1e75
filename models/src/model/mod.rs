//! The model proper: which steps are possible in a state, and what each step does, split
//! by actor: [`client`] (start, wake, timeout, receive, retry or give up), [`network`]
//! (deliver, duplicate, lose, delay), [`server`] (receive a request: the claim, and every
//! answer), [`handler`] (a claim's execution: side effect, completion, failure, renewal),
//! [`store`] (the store step, the disk, expiry), [`faults`] (crashes, stalls, slow
//! handlers, outages) and [`time`] (how far the clock may move).
//!
//! Every store operation is idem-core's store step run on the store's `MemoryState`
//! (`MemoryState::run`, or `step::step` then `MemoryState::commit` where a bug variant
//! tampers with the view, the operation or the step). Every answer a server gives around a
//! decision is idem-core's too (`reply::retry_after`, `reply::superseded`,
//! `StatusRules::disposition`). The model decides no protocol question itself: it moves
//! messages, runs the clock, applies faults, and keeps ghost facts for the properties.
//! Steps tell what they did as [`StoryEvent`]s, and only when asked (see [`Tell`]).

mod action;
mod client;
mod faults;
mod handler;
mod network;
mod operator;
mod server;
pub(crate) mod store;
mod time;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use idem_core::{Bytes, Fingerprint, Key, Limits, MemoryState, Policy, Principal, RecordId, Timestamp};
use stateright::{Model, Property};

pub use self::action::Action;
use crate::config::{Config, ConfigError, NetworkKind, Variant};
use crate::ghost::{Facts, Observed};
use crate::message::{OpIndex, ServerIndex, Slot};
pub use crate::operation::Operation;
use crate::state::{Ghost, OpState, Phase, Server, SlotGhost, State, Store};
use crate::story::{Cast, StoryEvent};

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

/// The idempotency protocol as a stateright model; build it with [`Config::into_model`].
#[derive(Clone, Debug)]
pub struct IdemModel {
    config: Config,
    operations: Vec<Operation>,
    /// Per store slot: the record id the store keys it by.
    slots: Vec<RecordId>,
    /// The policy the server passes to the store (variant `long-lease` tampers with it).
    policy: Policy,
    /// The cap on a 409's `Retry-After` (idem-http's default).
    retry_after_max: Duration,
    /// What the properties read of the configuration (see [`crate::ghost`]).
    facts: Facts,
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
        let policy = match self.tombstone {
            Some(period) => policy.with_tombstone(period).map_err(|_| ConfigError::OutOfRange {
                what: "tombstone (ms)",
                given: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
                min: 1,
                max: u64::try_from(idem_core::TOMBSTONE_MAX.as_millis()).unwrap_or(u64::MAX),
            })?,
            None => policy,
        };
        let facts = Facts {
            record_of_op: operations.iter().map(|operation| operation.record_index).collect(),
            id_of_op: operations.iter().map(|operation| slots[usize::from(operation.slot)].clone()).collect(),
            id_of_slot: slots.clone(),
            slot_of_op: operations.iter().map(|operation| operation.slot).collect(),
            ceiling: self.ceiling,
            lease: policy.lease(),
            retention: policy.retention(),
            progress_faults: self.progress_faults,
            store_crashes: self.store_crashes,
        };
        Ok(IdemModel {
            policy,
            retry_after_max: idem_http::CONFLICT_RETRY_AFTER_MAX_DEFAULT,
            config: self,
            operations,
            slots,
            facts,
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

    /// The names a story tells this model's steps with ([`crate::story::line`]).
    #[must_use]
    pub fn cast(&self) -> Cast<'_> {
        Cast { operations: &self.operations, slots: &self.slots, config: &self.config }
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

    /// What `action` does in `state`, told as story events (`None` if it does not apply).
    #[must_use]
    pub fn events(&self, state: &State, action: Action) -> Option<Vec<StoryEvent>> {
        let mut events = Vec::new();
        self.apply(state, action, &mut Tell(Some(&mut events)))?;
        Some(events)
    }

    /// Applies `action` to `state`, telling what happened to `tell`.
    fn apply(&self, state: &State, action: Action, tell: &mut Tell<'_>) -> Option<State> {
        let mut next = state.clone();
        match action {
            Action::Start { op, server } => self.start(&mut next, op, server, tell),
            Action::Wake { op, server } => self.wake(&mut next, op, server, tell),
            Action::Timeout { op } => self.timeout(&mut next, op, tell),
            Action::Delay(message) => self.delay(&mut next, message, tell)?,
            Action::Deliver(message) => self.deliver(&mut next, message, tell)?,
            Action::Duplicate(message) => self.duplicate(&mut next, message, tell)?,
            Action::Lose(message) => self.lose(&mut next, message, tell)?,
            Action::Step { server, serial } => self.step(&mut next, server, serial, tell),
            Action::Fail { server, serial } => self.fail(&mut next, server, serial, tell),
            Action::Renew { server, serial } => self.renew(&mut next, server, serial, tell),
            Action::Slow { server, serial } => self.slow(&mut next, server, serial, tell),
            Action::Stall { server, serial } => self.stall(&mut next, server, serial, tell),
            Action::Crash { server } => self.crash(&mut next, server, tell),
            Action::StoreDown => self.store_down(&mut next, tell),
            Action::StoreUp => self.store_up(&mut next, tell),
            Action::StoreCrash => self.store_crash(&mut next, tell),
            Action::Expire { slot } => self.expire(&mut next, slot, tell),
            Action::Purge { server } => self.purge(&mut next, server, tell),
            Action::Forget { slot } => self.forget(&mut next, slot, tell),
        }
        self.forget_durable_if_current(&mut next);
        Some(next)
    }

    /// Counts a fault against an operation (up to one more than G6 tolerates: beyond that
    /// the count changes no verdict, only the number of states).
    fn met_fault(&self, state: &mut State, op: OpIndex) {
        let faults = &mut state.ops[usize::from(op)].faults;
        *faults = faults.saturating_add(1).min(self.config.progress_faults.saturating_add(1));
    }
}

impl Observed for IdemModel {
    fn facts(&self) -> &Facts {
        &self.facts
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
            interchangeable: !self.clocks_differ(),
            budgets: self.budgets(),
            ghost: Ghost { serials: 0, slots: vec![SlotGhost::default(); slots], broken: 0 },
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        // A state that breaks a guarantee ends its path: what follows a violation adds
        // states, not insight, and the bug variants' state spaces would explode.
        if self.facts.is_broken(state) {
            return;
        }
        self.offer_client_steps(state, actions);
        self.offer_network_steps(state, actions);
        self.offer_handler_steps(state, actions);
        self.offer_store_steps(state, actions);
        self.offer_operator_steps(state, actions);
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        self.apply(state, action, &mut Tell(None))
    }

    fn format_action(&self, action: &Action) -> String {
        format!("{action:?}")
    }

    fn format_step(&self, state: &State, action: Action) -> Option<String> {
        self.events(state, action).map(|events| crate::story::line(&self.cast(), &events))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        crate::properties::all()
    }
}

/// Collects a step's story events, if a story is being told; costs nothing otherwise.
pub(crate) struct Tell<'a>(Option<&'a mut Vec<StoryEvent>>);

impl Tell<'_> {
    fn tell(&mut self, event: impl FnOnce() -> StoryEvent) {
        if let Some(events) = self.0.as_deref_mut() {
            events.push(event());
        }
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

fn whole_seconds(duration: Duration) -> u8 {
    // Retry-After values here are capped at a few seconds.
    u8::try_from(duration.as_secs()).unwrap_or(u8::MAX)
}

fn slot_index(slot: usize) -> Slot {
    u8::try_from(slot).expect("at most 17 slots")
}

fn server_index(server: usize) -> ServerIndex {
    u8::try_from(server).expect("at most ACTORS_MAX servers")
}

fn op_index(op: usize) -> OpIndex {
    u8::try_from(op).expect("at most 17 operations")
}
