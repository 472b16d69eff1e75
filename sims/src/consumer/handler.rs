//! The consumers' handler: it writes one effect row (message id, payload) and returns an
//! outcome naming that execution, so the checker can tell executions apart and compare
//! replays with the one that committed (G2). Before healing some handlers are slow (two to
//! three leases) or fail, as the seed's mix says.
//!
//! The planted variants live here, as thin wrappers a careless application could write
//! around the real consumer: `ack-before-completion` acks its own delivery before it
//! returns (so before the completion), `dedup-outside-transaction` writes its effect row
//! at once and hands the consumer a commit with no writes (a hand-rolled inbox beside the
//! idempotency record).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use idem_consumer::{AtomicHandler, Handler, Message};
use idem_core::StoredOutcome;
use idem_once::{ClaimScope, Commit};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::Variant;
use crate::clock::sim_ms;
use crate::consumer::broker::{Out, Settle};
use crate::consumer::effects::{Effect, EffectTx, insert_alone};
use crate::consumer::events::MsgEvent;
use crate::consumer::transport::{BrokerLink, DELIVERY_HEADER};
use crate::history::{Kind, Recorder};
use crate::remote::RemoteStore;

/// A handler failure (drawn from the seed, or a store call of separate mode's write).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct HandlerFailed(String);

/// What every consumer's handlers share with the run.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) recorder: Recorder,
    pub(crate) variant: Variant,
    pub(crate) heal_ms: u64,
    pub(crate) lease_ms: u64,
    pub(crate) slow_percent: u32,
    pub(crate) failure_percent: u32,
    /// Executions so far, over the run (each outcome names its own).
    pub(crate) executions: AtomicU64,
    /// Per consumer: handlers running now (an armed crash strikes while it is above zero).
    pub(crate) in_handler: Vec<AtomicU32>,
    /// Per consumer: how each handler goes.
    pub(crate) rng: Vec<Mutex<ChaCha8Rng>>,
}

/// One consumer's handler.
pub(crate) struct SimHandler {
    pub(crate) consumer: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) store: RemoteStore,
    pub(crate) link: Arc<BrokerLink>,
}

/// Counts a handler as running until dropped (also when its host crashes).
struct Running<'a>(&'a AtomicU32);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The delivery a message came in, from the transport's header: `delivery/copy/session`.
fn delivery_of(message: &Message<'_>) -> (u64, u64, u64) {
    let header = message.header(DELIVERY_HEADER).unwrap_or_default();
    let mut numbers = header.split('/').map(|part| part.parse::<u64>().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

impl SimHandler {
    fn record(&self, event: MsgEvent) {
        self.shared.recorder.record(Kind::Msg(Box::new(event)));
    }

    /// Runs the handler's body: its time, its failure, then the effect row it would write
    /// and the outcome it returns.
    async fn body(&self, message: &Message<'_>, claim: &ClaimScope) -> Result<(Effect, u64), HandlerFailed> {
        let id = message.message_id().unwrap_or_default().to_owned();
        let payload = String::from_utf8_lossy(message.payload()).into_owned();
        let (delivery, _, _) = delivery_of(message);
        let (millis, fails) = {
            let mut rng = self.shared.rng[self.consumer].lock().unwrap_or_else(PoisonError::into_inner);
            let faulty = sim_ms() < self.shared.heal_ms;
            let slow = faulty && rng.random_range(0..100) < self.shared.slow_percent;
            let fails = faulty && rng.random_range(0..100) < self.shared.failure_percent;
            let lease = self.shared.lease_ms;
            (if slow { rng.random_range(2 * lease..=3 * lease) } else { rng.random_range(10..=150) }, fails)
        };
        let fate = match (fails, millis > self.shared.lease_ms) {
            (true, _) => format!("fails after {millis} ms"),
            (false, true) => format!("slow: {millis} ms, two leases or more"),
            (false, false) => format!("{millis} ms"),
        };
        self.record(MsgEvent::Handling {
            consumer: self.consumer,
            delivery,
            id: id.clone(),
            payload: payload.clone(),
            fence: claim.fence().get(),
            fate,
        });
        let counter = &self.shared.in_handler[self.consumer];
        counter.fetch_add(1, Ordering::SeqCst);
        let _running = Running(counter);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        if fails {
            self.record(MsgEvent::Handled { consumer: self.consumer, delivery, id, result: "failed".to_owned() });
            return Err(HandlerFailed(format!("the handler of d{delivery} failed (planned by the seed)")));
        }
        let execution = self.shared.executions.fetch_add(1, Ordering::SeqCst) + 1;
        let outcome = Bytes::from(format!("{id} done by execution {execution} on consumer-{}", self.consumer));
        let result = format!("outcome {}", String::from_utf8_lossy(&outcome));
        self.record(MsgEvent::Handled { consumer: self.consumer, delivery, id: id.clone(), result });
        Ok((Effect { consumer: self.consumer, id, payload, outcome }, delivery))
    }

    /// The planted `ack-before-completion`: acks its own delivery before returning.
    async fn ack_early(&self, message: &Message<'_>) {
        let (delivery, copy, session) = delivery_of(message);
        self.record(MsgEvent::Planted {
            consumer: self.consumer,
            what: format!("acks d{delivery} before the completion"),
        });
        let out = Out { copy, delivery, session, id: String::new(), payload: String::new(), delivered: 0 };
        let _ = self.link.settle(session, &out, Settle::Ack).await;
    }

    fn replay(&self, message: &Message<'_>, outcome: &StoredOutcome) {
        let (delivery, _, _) = delivery_of(message);
        let id = message.message_id().unwrap_or_default().to_owned();
        self.record(MsgEvent::Replayed { consumer: self.consumer, delivery, id, outcome: outcome.bytes.clone() });
    }
}

impl AtomicHandler<RemoteStore> for SimHandler {
    type Error = HandlerFailed;

    async fn handle(&self, message: &Message<'_>, claim: &ClaimScope) -> Result<Commit<RemoteStore>, HandlerFailed> {
        let (effect, _) = self.body(message, claim).await?;
        let outcome = StoredOutcome::bytes(effect.outcome.clone());
        if self.shared.variant == Variant::DedupOutsideTransaction {
            // The effect commits at once; only the completion is left for the consumer.
            insert_alone(&self.store, effect).await.map_err(|error| HandlerFailed(error.to_string()))?;
            return Ok(Commit::new(outcome, |_: &mut EffectTx| Box::pin(async { Ok(()) })));
        }
        if self.shared.variant == Variant::AckBeforeCompletion {
            self.ack_early(message).await;
        }
        Ok(Commit::new(outcome, move |tx: &mut EffectTx| {
            tx.insert(effect);
            Box::pin(async { Ok(()) })
        }))
    }

    async fn replayed(&self, message: &Message<'_>, outcome: &StoredOutcome) {
        self.replay(message, outcome);
    }
}

impl Handler for SimHandler {
    type Error = HandlerFailed;

    async fn handle(&self, message: &Message<'_>, claim: &ClaimScope) -> Result<StoredOutcome, HandlerFailed> {
        let (effect, _) = self.body(message, claim).await?;
        let outcome = StoredOutcome::bytes(effect.outcome.clone());
        insert_alone(&self.store, effect).await.map_err(|error| HandlerFailed(error.to_string()))?;
        if self.shared.variant == Variant::AckBeforeCompletion {
            self.ack_early(message).await;
        }
        Ok(outcome)
    }

    async fn replayed(&self, message: &Message<'_>, outcome: &StoredOutcome) {
        self.replay(message, outcome);
    }
}
