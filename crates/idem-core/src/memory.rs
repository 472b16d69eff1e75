//! A bounded in-process store: a map behind a lock.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use crate::transition::{self, Transition, Write};
use crate::{
    Decision, Fence, Fenced, Fingerprint, Policy, Record, RecordId, Store, StoreError, StoredResponse, Timestamp,
};

/// Size limits of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Most records held at once.
    pub records_max: usize,
    /// Most bytes of ids, responses and bookkeeping held at once (see [`MemoryStore`] for
    /// how completions may overshoot it).
    pub stored_bytes_max: usize,
}

impl Default for MemoryLimits {
    /// 100,000 records and 256 MiB.
    fn default() -> Self {
        MemoryLimits { records_max: 100_000, stored_bytes_max: 256 * 1024 * 1024 }
    }
}

/// A [`Store`] in process memory: for tests, the model, single-process services that can
/// lose their records on restart, and as the reference for other backends.
///
/// # Limits
///
/// When it holds `records_max` records, or `stored_bytes_max` bytes, it refuses new claims
/// with [`StoreError::Full`]. It never evicts a live record to make room, and it always
/// accepts the completion of a claim it granted (refusing it would lose a response that
/// a client may have been promised), so the byte count can overshoot the limit by at most
/// the responses of the claims in flight when it filled up. Expired records free their
/// room when [`Store::purge_expired`] forgets them.
///
/// It is not durable (G7 needs a durable store) and it is separate mode only.
#[derive(Debug)]
pub struct MemoryStore {
    limits: MemoryLimits,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    records: HashMap<RecordId, Held>,
    /// Every record by the time it becomes forgettable, so purging finds expired records
    /// in order without scanning (and without depending on the map's iteration order).
    /// Slots are (time, sequence number): integer keys keep the index cheap to update.
    expiry: BTreeMap<ExpirySlot, RecordId>,
    next_slot: u64,
    next_fence: Fence,
    stored_bytes: usize,
}

type ExpirySlot = (Timestamp, u64);

#[derive(Debug)]
struct Held {
    record: Record,
    slot: ExpirySlot,
}

impl MemoryStore {
    /// An empty store with the given limits.
    #[must_use]
    pub fn new(limits: MemoryLimits) -> MemoryStore {
        MemoryStore {
            limits,
            state: Mutex::new(State {
                records: HashMap::new(),
                expiry: BTreeMap::new(),
                next_slot: 0,
                next_fence: Fence::FIRST,
                stored_bytes: 0,
            }),
        }
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

    /// Bytes it accounts as held.
    #[must_use]
    pub fn stored_bytes(&self) -> usize {
        self.lock().stored_bytes
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock happens only inside idem-core's own asserts, which
        // fire before any write, so the state behind a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn claim_now(
        &self,
        id: &RecordId,
        fingerprint: &Fingerprint,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        let mut state = self.lock();
        let fresh_fence = state.next_fence;
        let existing = state.record(id);
        let replaces_a_record = existing.is_some();
        let Transition { outcome, write } = transition::claim(existing, fingerprint, now, policy, fresh_fence);
        if let Write::Put(_) = write {
            self.check_room(&state, replaces_a_record)?;
            state.next_fence = fresh_fence.next();
        }
        state.apply(id, write);
        Ok(outcome)
    }

    fn check_room(&self, state: &State, replaces_a_record: bool) -> Result<(), StoreError> {
        if !replaces_a_record && state.records.len() >= self.limits.records_max {
            return Err(StoreError::Full { what: format!("{} records", self.limits.records_max) });
        }
        if state.stored_bytes >= self.limits.stored_bytes_max {
            return Err(StoreError::Full { what: format!("{} bytes", self.limits.stored_bytes_max) });
        }
        Ok(())
    }

    fn complete_now(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Fenced {
        let mut state = self.lock();
        let Transition { outcome, write } = transition::complete(state.record(id), fence, response, now, policy);
        state.apply(id, write);
        outcome
    }

    fn release_now(&self, id: &RecordId, fence: Fence) -> Fenced {
        let mut state = self.lock();
        let Transition { outcome, write } = transition::release(state.record(id), fence);
        state.apply(id, write);
        outcome
    }

    fn purge_now(&self, now: Timestamp, batch_max: usize) -> usize {
        let mut state = self.lock();
        let due: Vec<RecordId> = state
            .expiry
            .iter()
            .take_while(|((forgettable_at, _), _)| *forgettable_at <= now)
            .take(batch_max)
            .map(|(_, id)| id.clone())
            .collect();
        for id in &due {
            let record = state.record(id).expect("the expiry index lists only held records");
            let write = transition::expire(record, now);
            debug_assert_eq!(write, Write::Delete, "indexed by forgettable_at, so due records are expired");
            state.apply(id, write);
        }
        due.len()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(MemoryLimits::default())
    }
}

impl State {
    fn record(&self, id: &RecordId) -> Option<&Record> {
        self.records.get(id).map(|held| &held.record)
    }

    fn apply(&mut self, id: &RecordId, write: Write) {
        match write {
            Write::Unchanged => {}
            Write::Put(record) => self.put(id, record),
            Write::Delete => self.forget(id),
        }
    }

    fn put(&mut self, id: &RecordId, record: Record) {
        let forgettable_at = record.forgettable_at();
        let added_bytes = id.stored_bytes() + record.stored_bytes();
        match self.records.entry(id.clone()) {
            // Replace in place: a completion keeps the map entry, and the index entry too
            // when the record becomes forgettable at the same time.
            Entry::Occupied(mut held) => {
                let held = held.get_mut();
                self.stored_bytes = self.stored_bytes - (id.stored_bytes() + held.record.stored_bytes()) + added_bytes;
                if held.slot.0 != forgettable_at {
                    let indexed = self.expiry.remove(&held.slot);
                    debug_assert!(indexed.is_some(), "every held record is in the expiry index");
                    held.slot = (forgettable_at, self.next_slot);
                    self.next_slot += 1;
                    self.expiry.insert(held.slot, id.clone());
                }
                held.record = record;
            }
            Entry::Vacant(vacant) => {
                self.stored_bytes += added_bytes;
                let slot = (forgettable_at, self.next_slot);
                self.next_slot += 1;
                self.expiry.insert(slot, id.clone());
                vacant.insert(Held { record, slot });
            }
        }
    }

    fn forget(&mut self, id: &RecordId) {
        if let Some(held) = self.records.remove(id) {
            self.stored_bytes -= id.stored_bytes() + held.record.stored_bytes();
            let indexed = self.expiry.remove(&held.slot);
            debug_assert!(indexed.is_some(), "every held record is in the expiry index");
        }
    }
}

impl Store for MemoryStore {
    async fn claim(
        &self,
        id: &RecordId,
        fingerprint: &Fingerprint,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Decision, StoreError> {
        self.claim_now(id, fingerprint, now, policy)
    }

    async fn complete(
        &self,
        id: &RecordId,
        fence: Fence,
        response: StoredResponse,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Fenced, StoreError> {
        Ok(self.complete_now(id, fence, response, now, policy))
    }

    async fn release(&self, id: &RecordId, fence: Fence) -> Result<Fenced, StoreError> {
        Ok(self.release_now(id, fence))
    }

    async fn get(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        Ok(self.lock().record(id).cloned())
    }

    async fn purge_expired(&self, now: Timestamp, batch_max: usize) -> Result<usize, StoreError> {
        Ok(self.purge_now(now, batch_max))
    }
}
