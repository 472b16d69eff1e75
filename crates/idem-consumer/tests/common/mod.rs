//! Shared test parts: a clock on tokio's (paused) timer, a store that can be taken down,
//! a counting handler, and a bounded wait for the broker to settle everything.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_consumer::testing::MemoryBroker;
use idem_consumer::{ClaimScope, Handler, Message};
use idem_core::{Clock, Policy, StoredOutcome, Timestamp};
use tokio::time::Instant;

pub(crate) const LEASE: Duration = Duration::from_secs(3);
/// The recommended ack wait for [`LEASE`]: a lease and a renewal interval.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(4);

pub(crate) fn policy() -> Policy {
    Policy::new(LEASE, Duration::from_secs(3600)).expect("lease < retention")
}

/// Time read off tokio's timer, so paused time drives the store's clock too.
pub(crate) struct TokioClock(Instant);

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_ms(1_000_000 + self.0.elapsed().as_millis() as u64)
    }
}

pub(crate) fn clock() -> Arc<dyn Clock> {
    Arc::new(TokioClock(Instant::now()))
}

/// Waits (in tokio time, paused in these tests) until every message is acked or
/// dead-lettered; at most `limit`, then fails saying what is left.
pub(crate) async fn until_settled(broker: &MemoryBroker, limit: Duration) {
    let step = Duration::from_millis(50);
    for _ in 0..(limit.as_millis() / step.as_millis()) {
        if broker.all_settled() {
            return;
        }
        tokio::time::sleep(step).await;
    }
    panic!("not every message settled within {limit:?}: {:#?}", broker.messages());
}

/// The side effect: counts runs per key (G1 is "at most one per key").
#[derive(Default)]
pub(crate) struct Payments {
    pub(crate) effects: Mutex<BTreeMap<String, u32>>,
    pub(crate) replayed: Mutex<Vec<(String, StoredOutcome)>>,
    pub(crate) runs: AtomicU32,
    /// Fails this many runs before succeeding.
    pub(crate) failures_left: AtomicU32,
    /// How long a run takes.
    pub(crate) delay: Mutex<Duration>,
}

impl Payments {
    pub(crate) fn effects(&self) -> BTreeMap<String, u32> {
        self.effects.lock().expect("not poisoned").clone()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the payment service failed")]
pub(crate) struct PaymentFailed;

impl Handler for Payments {
    type Error = PaymentFailed;

    async fn handle(&self, message: &Message<'_>, _claim: &ClaimScope) -> Result<StoredOutcome, PaymentFailed> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let delay = *self.delay.lock().expect("not poisoned");
        tokio::time::sleep(delay).await;
        if self.failures_left.load(Ordering::SeqCst) > 0 {
            self.failures_left.fetch_sub(1, Ordering::SeqCst);
            return Err(PaymentFailed);
        }
        let key = message.id().key.as_str().to_owned();
        *self.effects.lock().expect("not poisoned").entry(key.clone()).or_default() += 1;
        Ok(StoredOutcome::bytes(format!("receipt for {key}: {}", String::from_utf8_lossy(message.payload()))))
    }

    async fn replayed(&self, message: &Message<'_>, outcome: &StoredOutcome) {
        let key = message.id().key.as_str().to_owned();
        self.replayed.lock().expect("not poisoned").push((key, outcome.clone()));
    }
}

/// The in-memory store, with every call failing while `down` is set, or only completions.
pub(crate) type FlakyStore = idem_core::conformance::FlakyStore;
