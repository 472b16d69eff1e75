//! A bounded in-process store: [`MemoryState`], a plain value that applies store steps,
//! and [`MemoryStore`], that value behind a lock.
//!
//! The model checker (`models/`) holds a [`MemoryState`] in its states, so the model and
//! the shipped store run the same code for every rule.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use crate::admin::{KeyAdmin, ListQuery, Page};
use crate::step::{self, Counters, Operation, Step, StepError, StoreView, op};
use crate::usage::{Limits, Usage};
use crate::{
    ClaimRequest, Decision, Fence, Fenced, Policy, Record, RecordId, Renewal, Store, StoreError, StoredResponse,
    Timestamp, Write,
};

/// Every record a store holds, its counters and an expiry index: a store as a value.
///
/// Deterministic: no clock, no randomness, and nothing iterates the hash map (purges,
/// [`MemoryState::records`] and hashing walk the ordered expiry index), so equal states
/// hash equally whatever order their records arrived in. Its only rule of its own is
/// bookkeeping; every decision is [`step::step`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryState {
    limits: Limits,
    counters: Counters,
    /// A hash map: lookups by id are the hot path of every step.
    records: HashMap<RecordId, Record>,
    /// Every record by the time a purge is due ([`Record::due_at`]), so purging finds
    /// due records in order without scanning. Ties are broken by the record's fence, which no two held
    /// records share (fences are never reused), so the index has integer keys and depends
    /// only on the records held.
    expiry: BTreeMap<ExpirySlot, RecordId>,
}

/// A held record's place in the expiry index: (due at, fence).
type ExpirySlot = (Timestamp, Fence);

fn slot(record: &Record) -> ExpirySlot {
    (record.due_at(), record.fence)
}

impl Hash for MemoryState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.limits.hash(state);
        self.counters.hash(state);
        for (id, record) in self.records() {
            id.hash(state);
            record.hash(state);
        }
    }
}

impl MemoryState {
    /// An empty store with the given limits.
    #[must_use]
    pub fn new(limits: Limits) -> MemoryState {
        MemoryState { limits, counters: Counters::EMPTY, records: HashMap::new(), expiry: BTreeMap::new() }
    }

    /// This store with its fence counter moved to `next_fence`, if that is ahead.
    ///
    /// What a store that lost its state (a volatile one that restarted) does so that it
    /// never issues a fence an execution from before the loss still holds (SPEC G3: fences
    /// are never reused for a record id). idem-redis reseeds from the server's clock; the
    /// simulation's volatile store host from its boot number.
    #[must_use]
    pub fn with_fences_from(mut self, next_fence: Fence) -> MemoryState {
        self.counters.next_fence = self.counters.next_fence.max(next_fence);
        self
    }

    /// What a store step needs to know about `id`.
    #[must_use]
    pub fn view(&self, id: &RecordId) -> StoreView<'_> {
        StoreView { record: self.records.get(id), counters: self.counters, limits: self.limits }
    }

    /// Decides `operation` on `id` and applies it: [`step::step`], then [`MemoryState::commit`].
    ///
    /// # Errors
    /// [`StepError`]; nothing changed.
    pub fn run<O: Operation>(&mut self, id: &RecordId, operation: O) -> Result<O::Answer, StepError> {
        let step = step::step(id, &self.view(id), operation)?;
        Ok(self.commit(id, step))
    }

    /// Writes what `step` names for `id` and returns its answer.
    pub fn commit<A>(&mut self, id: &RecordId, step: Step<A>) -> A {
        self.counters = self.counters.after(&step);
        match step.write {
            Write::Unchanged => {}
            Write::Put(record) => {
                let new_slot = slot(&record);
                // Replace in place: a completion or renewal keeps the map entry, and the
                // index entry too when the record becomes forgettable at the same time.
                if let Some(held) = self.records.get_mut(id) {
                    let old_slot = slot(held);
                    *held = record;
                    if old_slot != new_slot {
                        let indexed = self.expiry.remove(&old_slot);
                        debug_assert!(indexed.is_some(), "every held record is in the expiry index");
                        self.expiry.insert(new_slot, id.clone());
                    }
                } else {
                    self.expiry.insert(new_slot, id.clone());
                    self.records.insert(id.clone(), record);
                }
            }
            Write::Delete => {
                if let Some(old) = self.records.remove(id) {
                    let indexed = self.expiry.remove(&slot(&old));
                    debug_assert!(indexed.is_some(), "every held record is in the expiry index");
                }
            }
        }
        step.answer
    }

    /// Forgets (or shrinks to a tombstone) up to `batch_max` records due at `now`,
    /// earliest first (ties by fence), each through the [`op::Expire`] step; returns how many.
    pub fn purge_expired(&mut self, now: Timestamp, batch_max: usize) -> usize {
        let due: Vec<RecordId> = self
            .expiry
            .iter()
            .take_while(|((due_at, _), _)| *due_at <= now)
            .take(batch_max)
            .map(|(_, id)| id.clone())
            .collect();
        let mut purged = 0;
        for id in &due {
            // Expiry admits nothing and issues no fence; the one refusal left, a fence
            // counter behind a record, cannot happen in memory, where only steps write.
            if self.run(id, op::Expire { now }).expect("expiry is never refused in memory") {
                purged += 1;
            }
        }
        debug_assert_eq!(purged, due.len(), "the index lists only records expired at `now`");
        purged
    }

    /// The record held for `id`, expired or not.
    #[must_use]
    pub fn record(&self, id: &RecordId) -> Option<&Record> {
        self.records.get(id)
    }

    /// Every record held, in expiry order (then by fence): deterministic.
    pub fn records(&self) -> impl Iterator<Item = (&RecordId, &Record)> {
        self.expiry.values().map(|id| (id, &self.records[id]))
    }

    /// The store-wide counters.
    #[must_use]
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The size limits.
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// A [`Store`] in process memory: for tests, single-process services that can lose their
/// records on restart, and as the reference for other backends. A [`MemoryState`] behind
/// a mutex; each call is one step under the lock.
///
/// # Limits
///
/// As every store (see [`step::step`]): at [`Limits::records_max`] records or
/// [`Limits::stored_bytes_max`] bytes it refuses new claims with [`StoreError::Full`],
/// never evicts a live record, and always accepts the completion of a claim it granted.
/// Expired records free their room when [`Store::purge_expired`] forgets them.
///
/// It is not durable (G7 needs a durable store) and it is separate mode only.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

impl MemoryStore {
    /// An empty store with the given limits.
    #[must_use]
    pub fn new(limits: Limits) -> MemoryStore {
        MemoryStore { state: Mutex::new(MemoryState::new(limits)) }
    }

    /// How many records it holds (live or expired but not yet purged).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether it holds no record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What it holds, as its limits count it.
    #[must_use]
    pub fn usage(&self) -> Usage {
        self.lock().counters.usage
    }

    /// A copy of the whole state, for tests and checks.
    #[must_use]
    pub fn snapshot(&self) -> MemoryState {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        // A panic while holding the lock happens only inside idem-core's own asserts, which
        // fire before any write, so the state behind a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn run<O: Operation>(&self, id: &RecordId, operation: O) -> Result<O::Answer, StoreError> {
        Ok(self.lock().run(id, operation)?)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(Limits::default())
    }
}

impl Store for MemoryStore {
    async fn claim(
        &self,
        id: &RecordId,
        request: impl Into<ClaimRequest> + Send,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        self.run(id, op::Claim { request: request.into(), now, policy: *policy })
    }

    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        self.run(id, op::Complete { fence, response, now, policy: *policy })
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        self.run(id, op::Release { fence })
    }

    async fn renew(&self, id: &RecordId, fence: Fence, now: Timestamp, policy: &Policy) -> Result<Renewal, StoreError> {
        self.run(id, op::Renew { fence, now, policy: *policy })
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        Ok(self.lock().record(id).cloned())
    }

    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        Ok(self.lock().purge_expired(now, batch_max))
    }

    async fn count_replay(&self, id: &RecordId, now: Timestamp) -> Result<bool, StoreError> {
        self.run(id, op::CountReplay { now })
    }
}

impl KeyAdmin for MemoryStore {
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        Ok(query.select(self.lock().records.iter()))
    }

    async fn forget(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.run(id, op::Forget)
    }
}
