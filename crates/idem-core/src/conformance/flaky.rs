//! A store whose calls fail while a test says so, over a real one: for the tests of what
//! sits above a store (idem-once's and idem-consumer's) when the store is unreachable.
//!
//! Each switch is an `AtomicBool` a test flips at any point; a failing call answers
//! [`StoreError::Unavailable`] and never reaches the inner store, exactly as a lost
//! connection would.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::{
    ClaimRequest, Decision, Fence, Fenced, MemoryStore, Policy, Record, RecordId, Renewal, Store, StoreError,
    StoredResponse, Timestamp,
};

/// `inner`, with calls that fail while a switch is on.
#[derive(Debug, Default)]
pub struct FlakyStore<S = MemoryStore> {
    /// The store the calls reach while no switch stops them.
    pub inner: S,
    /// Every call fails.
    pub down: AtomicBool,
    /// Renewals fail.
    pub renew_down: AtomicBool,
    /// Completions fail.
    pub complete_down: AtomicBool,
    /// Renewals that reached `inner`.
    pub renewals: AtomicU32,
}

impl<S> FlakyStore<S> {
    /// `inner` with every switch off.
    pub fn new(inner: S) -> FlakyStore<S> {
        FlakyStore {
            inner,
            down: AtomicBool::new(false),
            renew_down: AtomicBool::new(false),
            complete_down: AtomicBool::new(false),
            renewals: AtomicU32::new(0),
        }
    }

    /// Renewals that reached the inner store so far.
    pub fn renewals(&self) -> u32 {
        self.renewals.load(Ordering::SeqCst)
    }

    fn unless(&self, switch: Option<&AtomicBool>) -> Result<(), StoreError> {
        let on = |switch: &AtomicBool| switch.load(Ordering::SeqCst);
        if on(&self.down) || switch.is_some_and(on) {
            return Err(StoreError::unavailable("the test took the store down"));
        }
        Ok(())
    }
}

impl<S: Store> Store for FlakyStore<S> {
    async fn claim(
        &self,
        id: &RecordId,
        request: impl Into<ClaimRequest> + Send,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        self.unless(None)?;
        self.inner.claim(id, request, now, policy).await
    }

    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        self.unless(Some(&self.complete_down))?;
        self.inner.complete(id, fence, response, now, policy).await
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        self.unless(None)?;
        self.inner.release(id, fence).await
    }

    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        self.unless(Some(&self.renew_down))?;
        self.renewals.fetch_add(1, Ordering::SeqCst);
        self.inner.renew(id, fence, now, policy).await
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.unless(None)?;
        self.inner.get(id).await
    }

    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        self.unless(None)?;
        self.inner.purge_expired(now, batch_max).await
    }

    async fn count_replay(&self, id: &RecordId, now: Timestamp) -> Result<bool, StoreError> {
        self.unless(None)?;
        self.inner.count_replay(id, now).await
    }

    fn decides_with_callers_now(&self) -> bool {
        self.inner.decides_with_callers_now()
    }
}
