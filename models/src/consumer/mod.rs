//! The consumer configuration: message consumers guarded by the same record, store step
//! and rules as HTTP requests (SPEC "Message consumers"), checked with stateright.
//!
//! The model drives the shipped decision code, never a copy of it: a delivery's claim is
//! idem-core's store step (`op::Claim` with [`Fingerprint::of_message`] and a key from
//! [`consume::message_key`]) on the same [`crate::Store`] half as [`crate::IdemModel`]
//! (its `MemoryState` and its ledger of side effects); what the consumer does with the
//! decision is [`consume::handle`]; after its completion, [`consume::after_completion`];
//! after a lost claim, [`consume::superseded`]; after a handler failure and its release,
//! [`consume::after_failure`]; when the store is down, [`consume::store_failed`]. The ack
//! deadline is [`consume::recommended_ack_wait`], checked by [`consume::check_timers`].
//!
//! # What is modelled
//!
//! * **Publishes**: message ids `m1`, `m2` (`Nats-Msg-Id` / `message_id`), each published
//!   once; `m1` optionally a second time with the same payload (past the broker's dedup),
//!   and again with another payload (a reused key). All copies are published at the start;
//!   the broker delivers them in any order.
//! * **The broker** (`AckWait`, JetStream-like, or `ChannelClose`, RabbitMQ-like): a copy is
//!   ready, out to a consumer (with an ack deadline under `AckWait`), acked, or
//!   dead-lettered. It applies acks, naks (ready again after the delay) and dead letters of
//!   the current delivery; under `AckWait` a stale ack (of an earlier delivery) is explored
//!   both applied and ignored, under `ChannelClose` it fails (its channel is gone).
//! * **Consumers** (1 or 2): a delivery is claimed, then run or settled at once (replay:
//!   ack; conflict: nak with a delay; mismatch: dead letter). A run writes its side effect
//!   (atomic mode: pending in the claim's transaction; separate mode: committed at once),
//!   renews its lease on schedule and then sends progress (which moves the ack deadline
//!   under `AckWait`), completes, and acks only once the completion committed.
//! * **Faults**, each with a budget: consumer crashes (also between the commit and the ack),
//!   stalls (no renewals or progress: lease and ack deadline pass under a live handler),
//!   lost acks, the broker giving up on a live handler (a lost progress, or a channel closed
//!   by the consumer timeout), store outages, handler failures.
//!
//! # Time
//!
//! The clock moves only to a nak's delay, an ack deadline, or a renewal. A ready copy is
//! delivered and a completed run acks before the clock moves; a healthy handler returns
//! within [`HANDLER_TIME`] (one renewal fits) and renews on schedule, so its lease and its
//! ack deadline never pass while it runs; only a stall lets them.
//!
//! # What is abstracted away
//!
//! * Broker internals: delivery order is any order; a consumer takes a delivery while it runs
//!   fewer than its prefetch (`in_flight_max`), so a copy never waits for a busy consumer
//!   at the broker (prompt delivery, below, assumes a free one); the broker's own publish dedup is the reason copies are few; the
//!   delivery limits (`max_deliver`, `x-delivery-limit`) are not modelled.
//! * RabbitMQ's consumer timeout as a clock: it is the `timeouts` fault, since it is far
//!   longer than any lease; a nak's delay on RabbitMQ (hold, then requeue) is a ready time.
//! * Retention and expiry (24 h, far past every delay here), store crashes (the HTTP model
//!   covers them with the same store half), key and principal parsing beyond one id.
//! * Dead-lettering is one step (publish to the dead-letter path, then term/ack).
//!
//! # Progress
//!
//! As in [`crate::IdemModel`], the state graph has no cycles (every fault spends a budget,
//! every redelivery waits at least a second, the clock only moves forward and is bounded
//! by the handlers), so stateright's `eventually`, checked at terminal states, is sound.

mod action;
mod broker;
mod checking;
mod config;
mod event;
pub mod properties;
mod run;
mod state;
mod story;
mod time;

use std::time::Duration;

use idem_core::consume::{self, Redelivery, RedeliveryTimer};
use idem_core::{Fingerprint, Limits, MemoryState, Policy, Principal, RecordId, Timestamp};
use stateright::{Model, Property};

pub use self::action::ConsumerAction;
pub use self::checking::{ConsumerChecker, consumer_verdicts, shortest_consumer_discovery, spawn_consumer};
pub use self::config::{
    BrokerKind, CONSUMER_FAULTS_MAX, CONSUMERS_MAX, ConsumerConfig, ConsumerFaults, ConsumerVariant,
    HANDLER_ATTEMPTS_MAX, IN_FLIGHT_MAX, MESSAGES_MAX,
};
pub use self::event::{Applied, ConsumerEvent, Decided, Sent, Why};
pub use self::state::{
    ConsumerBroken, ConsumerBudgets, ConsumerGhost, ConsumerIndex, ConsumerState, Copy, CopyIndex, CopyPhase, Happened,
    Run, RunPhase,
};
pub use self::story::consumer_story;
use crate::config::{ConfigError, Mode};
use crate::model::POLICY;
use crate::state::Store;

/// How long a healthy handler runs at most: past one renewal (a third of a lease), well
/// within the lease and the ack deadline.
pub const HANDLER_TIME: Duration = Duration::from_secs(5);
/// The principal every record is filed under: the stream and its durable consumer (B9).
pub const SOURCE: &str = "nats:orders/billing";
/// The subject every message is published on.
pub const SUBJECT: &str = "orders.paid";

/// One published copy of a message: its id, payload, fingerprint and record id.
#[derive(Clone, Debug)]
pub struct Published {
    /// Which message id (0 for `m1`).
    pub message: u8,
    /// Which payload (0: the first; 1: the mismatch publish's).
    pub payload: u8,
    /// "m1 {"amount":100}": how the story names it.
    pub label: String,
    /// idem-core's fingerprint of subject and payload.
    pub fingerprint: Fingerprint,
}

/// The consumer protocol as a stateright model; build it with [`ConsumerConfig::into_model`].
#[derive(Clone, Debug)]
pub struct ConsumerModel {
    config: ConsumerConfig,
    copies: Vec<Published>,
    /// Per message id: its record id (source, key from the message id).
    ids: Vec<RecordId>,
    rules: Redelivery,
    policy: Policy,
    ack_wait: Duration,
}

impl ConsumerConfig {
    /// The model for this configuration.
    ///
    /// # Errors
    /// [`ConfigError`] when a count is out of bounds.
    pub fn into_model(self) -> Result<ConsumerModel, ConfigError> {
        self.validate()?;
        let principal = Principal::new(SOURCE).expect("the source name is a valid principal");
        let ids = (1..=self.messages)
            .map(|n| {
                let key = consume::message_key(Some(&format!("m{n}"))).expect("m<n> is a valid message key");
                RecordId::new(principal.clone(), key)
            })
            .collect();
        let mut plan: Vec<(u8, u8)> = (0..self.messages).map(|message| (message, 0)).collect();
        if self.duplicate_publish {
            plan.push((0, 0));
        }
        if self.mismatch_publish {
            plan.push((0, 1));
        }
        let copies = plan
            .into_iter()
            .map(|(message, payload)| {
                let body = format!("{{\"amount\":{}}}", 100 * u32::from(message + 1) + 600 * u32::from(payload));
                Published {
                    message,
                    payload,
                    label: format!("m{} {body}", message + 1),
                    fingerprint: Fingerprint::of_message(SUBJECT, body.as_bytes()),
                }
            })
            .collect();
        let policy = POLICY;
        let ack_wait = consume::recommended_ack_wait(&policy);
        consume::check_timers(&policy, RedeliveryTimer::AckWait(ack_wait), HANDLER_TIME)
            .expect("idem-core's recommended ack wait fits its own policy");
        let rules = Redelivery { handler_attempts_max: self.handler_attempts_max, ..Redelivery::DEFAULT };
        Ok(ConsumerModel { config: self, copies, ids, rules, policy, ack_wait })
    }
}

impl ConsumerModel {
    /// The configuration it was built from.
    #[must_use]
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// The published copies, in publish order.
    #[must_use]
    pub fn published(&self) -> &[Published] {
        &self.copies
    }

    /// The ack deadline after a delivery or a progress (`AckWait`).
    #[must_use]
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    fn copy(&self, copy: CopyIndex) -> &Published {
        &self.copies[usize::from(copy)]
    }

    fn id_of(&self, copy: CopyIndex) -> &RecordId {
        &self.ids[usize::from(self.copy(copy).message)]
    }

    /// What `action` does in `state`, told as story events (`None` if it does not apply).
    #[must_use]
    pub fn events(&self, state: &ConsumerState, action: ConsumerAction) -> Option<Vec<ConsumerEvent>> {
        let mut events = Vec::new();
        self.apply(state, action, &mut Tell(Some(&mut events)))?;
        Some(events)
    }

    fn apply(&self, state: &ConsumerState, action: ConsumerAction, tell: &mut Tell<'_>) -> Option<ConsumerState> {
        let mut next = state.clone();
        next.ghost.happened = 0;
        match action {
            ConsumerAction::Deliver { copy, consumer } => self.deliver(&mut next, copy, consumer, tell),
            ConsumerAction::Write { consumer, serial } => self.write(&mut next, consumer, serial, tell),
            ConsumerAction::Complete { consumer, serial } => self.complete(&mut next, consumer, serial, tell),
            ConsumerAction::Fail { consumer, serial } => self.fail(&mut next, consumer, serial, tell),
            ConsumerAction::Renew { consumer, serial } => self.renew(&mut next, consumer, serial, tell),
            ConsumerAction::Stall { consumer, serial } => self.stall(&mut next, consumer, serial, tell),
            ConsumerAction::Ack { consumer, serial, stale_applies } => {
                self.send_ack(&mut next, consumer, serial, stale_applies, tell);
            }
            ConsumerAction::LoseAck { consumer, serial } => self.lose_ack(&mut next, consumer, serial, tell),
            ConsumerAction::Crash { consumer } => self.crash(&mut next, consumer, tell),
            ConsumerAction::TimeOut { copy } => self.time_out(&mut next, copy, tell),
            ConsumerAction::CloseChannel { consumer } => self.close_channel(&mut next, consumer, tell),
            ConsumerAction::StoreDown => {
                next.budgets.outages -= 1;
                next.store.up = false;
                tell.tell(|| ConsumerEvent::StoreDown);
            }
        }
        Some(next)
    }

    /// Whether a step broke an always-property: then the path ends there.
    pub(crate) fn is_broken(&self, state: &ConsumerState) -> bool {
        state.ghost.broken != 0 || !self.at_most_once(state) || !self.acked_after_completion(state)
    }

    fn writes_in_transaction(&self) -> bool {
        self.config.mode == Mode::Atomic && self.config.variant != ConsumerVariant::DedupOutsideTransaction
    }
}

impl Model for ConsumerModel {
    type State = ConsumerState;
    type Action = ConsumerAction;

    fn init_states(&self) -> Vec<ConsumerState> {
        let messages = usize::from(self.config.messages);
        let faults = self.config.faults;
        vec![ConsumerState {
            copies: vec![Copy { deliveries: 0, phase: CopyPhase::Ready { at: Timestamp::EPOCH } }; self.copies.len()],
            consumers: vec![state::Consumer::default(); usize::from(self.config.consumers)],
            store: Store {
                memory: MemoryState::new(Limits::default()),
                now: Timestamp::EPOCH,
                up: true,
                ledger: Vec::new(),
                durable: None,
            },
            budgets: ConsumerBudgets {
                crashes: faults.crashes,
                stalls: faults.stalls,
                lost_acks: faults.lost_acks,
                timeouts: faults.timeouts,
                outages: faults.outages,
                failures: faults.failures,
            },
            ghost: ConsumerGhost {
                serials: 0,
                current: vec![None; messages],
                owner: vec![None; messages],
                broken: 0,
                happened: 0,
            },
        }]
    }

    fn actions(&self, state: &ConsumerState, actions: &mut Vec<ConsumerAction>) {
        if self.is_broken(state) {
            return;
        }
        self.offer_broker_steps(state, actions);
        self.offer_run_steps(state, actions);
    }

    fn next_state(&self, state: &ConsumerState, action: ConsumerAction) -> Option<ConsumerState> {
        self.apply(state, action, &mut Tell(None))
    }

    fn format_action(&self, action: &ConsumerAction) -> String {
        format!("{action:?}")
    }

    fn format_step(&self, state: &ConsumerState, action: ConsumerAction) -> Option<String> {
        self.events(state, action).map(|events| story::line(self, &events))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        properties::all()
    }
}

/// Collects a step's story events, if a story is being told; costs nothing otherwise.
pub(crate) struct Tell<'a>(Option<&'a mut Vec<ConsumerEvent>>);

impl Tell<'_> {
    fn tell(&mut self, event: impl FnOnce() -> ConsumerEvent) {
        if let Some(events) = self.0.as_deref_mut() {
            events.push(event());
        }
    }
}

fn index(i: usize) -> u8 {
    u8::try_from(i).expect("the consumer model's counts fit a byte")
}
