//! Completed records kept in memory, so a replay reads no row at all.
//!
//! A completed record never changes until it expires (SPEC: a completion is final; only
//! expiry and purge remove it), so a copy is as good as the row for as long as the record
//! has not expired: the copy is used only while `now` is before its `expires_at`, and is
//! dropped once it has. That holds across processes sharing one file too: no process can
//! change a completed record that has not expired. The cache is bounded by bytes (the
//! records' [`idem_core::usage::stored_bytes`]) and evicts what is least used
//! (`quick_cache`'s CLOCK-Pro).
//!
//! The answer is still idem-core's: [`idem_core::step::step`] decides the claim on the
//! cached record, and only an answer that writes nothing (a replay, a fingerprint
//! mismatch) is taken from the cache; anything else goes to the store.

use std::sync::Arc;

use idem_core::step::{self, Counters, StoreView, op};
use idem_core::{Decision, Limits, Record, RecordId, RecordState, Usage, usage};
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// Completed records by id, bounded by bytes.
#[derive(Debug, Clone)]
pub(crate) struct ReplayCache {
    records: Option<Arc<Cache<RecordId, Arc<Record>, RecordBytes>>>,
}

/// Weighs an entry by what it costs in a store.
#[derive(Debug, Clone, Copy)]
struct RecordBytes;

impl Weighter<RecordId, Arc<Record>> for RecordBytes {
    fn weight(&self, id: &RecordId, record: &Arc<Record>) -> u64 {
        usage::stored_bytes(id, record)
    }
}

/// A guess at the size of a typical entry (an id and a small JSON response), which
/// only sizes the cache's tables.
const TYPICAL_ENTRY_BYTES: u64 = 1024;

impl ReplayCache {
    /// A cache of at most `bytes_max` bytes of records; 0 keeps nothing.
    pub(crate) fn new(bytes_max: u64) -> ReplayCache {
        if bytes_max == 0 {
            return ReplayCache { records: None };
        }
        let entries = usize::try_from(bytes_max / TYPICAL_ENTRY_BYTES).unwrap_or(usize::MAX).max(16);
        ReplayCache { records: Some(Arc::new(Cache::with_weighter(entries, bytes_max, RecordBytes))) }
    }

    /// Whether records are kept at all.
    pub(crate) fn is_enabled(&self) -> bool {
        self.records.is_some()
    }

    /// The claim's decision from a cached completed record, when that decision writes
    /// nothing; `None` sends the claim to the store.
    pub(crate) fn claim(&self, id: &RecordId, claim: &op::Claim, limits: Limits) -> Option<Decision> {
        let records = self.records.as_ref()?;
        let record = records.get(id)?;
        if record.is_expired(claim.now) {
            records.remove(id);
            return None;
        }
        // A claim on a held record that has not expired is decided without admission, so
        // the counters do not matter to an answer that writes nothing; these are the
        // smallest the step accepts as consistent with the record.
        let counters = Counters {
            next_fence: record.fence.next(),
            usage: Usage { records: 1, stored_bytes: usage::stored_bytes(id, &record) },
        };
        let view = StoreView { record: Some(&record), counters, limits };
        let step = step::step(id, &view, claim.clone()).ok()?;
        step.writes_nothing().then_some(step.answer)
    }

    /// Keeps `record` if it is completed.
    pub(crate) fn remember(&self, id: &RecordId, record: &Record) {
        if let (Some(records), RecordState::Completed { .. }) = (&self.records, &record.state) {
            records.insert(id.clone(), Arc::new(record.clone()));
        }
    }
}
