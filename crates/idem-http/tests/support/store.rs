//! A store wrapper that counts calls and injects faults (it delegates to the real
//! `MemoryStore`; it replaces nothing), and a clock that follows tokio's.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use idem_core::{
    Clock, Decision, Fence, Fenced, MemoryStore, Policy, Record, RecordId, Renewal, Store, StoreError, StoredResponse,
    Timestamp,
};

/// The real `MemoryStore`, with call counters and switches that make calls fail.
#[derive(Default)]
pub struct TestStore {
    pub memory: MemoryStore,
    pub claims: AtomicU64,
    pub completes: AtomicU64,
    /// When each completion was asked for, on tokio's clock (paused in tests that read it).
    pub complete_times: Mutex<Vec<tokio::time::Instant>>,
    /// Renewals asked for, failed ones included.
    pub renewals: AtomicU64,
    /// Renewals the memory store answered `Renewed`.
    pub renewed: AtomicU64,
    pub fail_claims: AtomicBool,
    pub fail_completes: AtomicBool,
    /// Renewals fail as if the store were unreachable (they never reach the memory store).
    pub fail_renewals: AtomicBool,
}

impl TestStore {
    fn injected(retry_after_s: u64) -> StoreError {
        StoreError::Unavailable {
            source: "injected fault".into(),
            retry_after: Some(Duration::from_secs(retry_after_s)),
        }
    }

    pub async fn record(&self, id: &RecordId) -> Option<Record> {
        self.memory.get(id).await.expect("the memory store is always reachable")
    }
}

impl Store for TestStore {
    async fn claim(
        &self,
        id: &RecordId,
        request: impl Into<idem_core::ClaimRequest> + Send,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let request = request.into();
        self.claims.fetch_add(1, Ordering::SeqCst);
        if self.fail_claims.load(Ordering::SeqCst) {
            return Err(Self::injected(7));
        }
        self.memory.claim(id, request, now, policy).await
    }

    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        self.completes.fetch_add(1, Ordering::SeqCst);
        self.complete_times.lock().expect("not poisoned").push(tokio::time::Instant::now());
        if self.fail_completes.load(Ordering::SeqCst) {
            return Err(Self::injected(1));
        }
        self.memory.complete(id, fence, response, now, policy).await
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        self.memory.release(id, fence).await
    }

    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        if self.fail_renewals.load(Ordering::SeqCst) {
            return Err(Self::injected(1));
        }
        let renewal = self.memory.renew(id, fence, now, policy).await?;
        if matches!(renewal, Renewal::Renewed { .. }) {
            self.renewed.fetch_add(1, Ordering::SeqCst);
        }
        Ok(renewal)
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.memory.get(id).await
    }

    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        self.memory.purge_expired(now, batch_max).await
    }

    async fn count_replay(&self, id: &RecordId, now: Timestamp) -> Result<bool, StoreError> {
        self.memory.count_replay(id, now).await
    }
}

/// A clock that reads tokio's clock, so that paused time moves the layer's `now` and its
/// renewal ticks together. Create it inside the runtime.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
    base: Timestamp,
}

impl TokioClock {
    pub fn new(base: Timestamp) -> TokioClock {
        TokioClock { start: tokio::time::Instant::now(), base }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.base.saturating_add(self.start.elapsed())
    }
}

/// The record id of `key` sent without credentials.
pub fn anonymous(key: &str) -> RecordId {
    RecordId::new(idem_core::Principal::anonymous(), idem_core::Key::try_from(key).expect("test keys are valid"))
}
