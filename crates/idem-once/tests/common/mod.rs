//! Shared test parts: a clock on tokio's (paused) timer, and a store whose calls can be
//! made to fail, over the real in-memory store.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use idem_core::{
    ClaimRequest, Clock, Decision, Fence, Fenced, Fingerprint, Key, MemoryStore, Policy, Principal, Record, RecordId,
    Renewal, Store, StoreError, StoredResponse, Timestamp,
};
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

/// The in-memory store, with renewals and completions that fail while told to.
#[derive(Default)]
pub(crate) struct FlakyStore {
    pub(crate) inner: MemoryStore,
    pub(crate) renew_down: AtomicBool,
    pub(crate) complete_down: AtomicBool,
    pub(crate) renewals: AtomicU32,
}

impl FlakyStore {
    pub(crate) fn new() -> Arc<FlakyStore> {
        Arc::new(FlakyStore { inner: MemoryStore::new(Default::default()), ..FlakyStore::default() })
    }
}

fn down() -> StoreError {
    StoreError::unavailable("the test took the store down")
}

impl Store for FlakyStore {
    async fn claim(
        &self,
        id: &RecordId,
        request: impl Into<ClaimRequest> + Send,
        now: Timestamp,
        p: &Policy,
    ) -> Result<Decision, StoreError> {
        self.inner.claim(id, request, now, p).await
    }
    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        r: StoredResponse,
        now: Timestamp,
        p: &Policy,
    ) -> Result<Fenced, StoreError> {
        if self.complete_down.load(Ordering::SeqCst) {
            return Err(down());
        }
        self.inner.complete(id, fence, r, now, p).await
    }
    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        self.inner.release(id, fence).await
    }
    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, p: &Policy) -> Result<Renewal, StoreError> {
        if self.renew_down.load(Ordering::SeqCst) {
            return Err(down());
        }
        self.renewals.fetch_add(1, Ordering::SeqCst);
        self.inner.renew(id, fence, now, p).await
    }
    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.inner.get(id).await
    }
    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        self.inner.purge_expired(now, batch_max).await
    }
    async fn count_replay(&self, id: &RecordId, now: Timestamp) -> Result<bool, StoreError> {
        self.inner.count_replay(id, now).await
    }
}
