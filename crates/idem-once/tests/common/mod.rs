//! Shared test parts: a clock on tokio's (paused) timer, and a store whose calls can be
//! made to fail, over the real in-memory store.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use idem_core::{Clock, Fingerprint, Key, Policy, Principal, RecordId, Timestamp};
use tokio::time::Instant;

/// Time read off tokio's timer, so paused time drives the store's clock and the renewal alike.
pub(crate) struct TokioClock(Instant);

impl TokioClock {
    pub(crate) fn new() -> Arc<TokioClock> {
        Arc::new(TokioClock(Instant::now()))
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_ms(1_000_000 + self.0.elapsed().as_millis() as u64)
    }
}

pub(crate) const LEASE: Duration = Duration::from_secs(3);
pub(crate) const RETENTION: Duration = Duration::from_secs(3600);

pub(crate) fn policy() -> Policy {
    Policy::new(LEASE, RETENTION).expect("lease < retention")
}

pub(crate) fn id(key: &str) -> RecordId {
    RecordId::new(Principal::new("tests").expect("a principal"), Key::from_chars(key).expect("a key"))
}

pub(crate) fn fingerprint(payload: &str) -> Fingerprint {
    Fingerprint::of_message("orders", payload.as_bytes())
}

/// The in-memory store, with calls that fail while a test says so.
pub(crate) type FlakyStore = idem_core::conformance::FlakyStore;
