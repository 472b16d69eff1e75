//! Completed records kept in memory, so a replay reads no row at all.
//!
//! A completed record does not change until its retention ends (SPEC: a completion is
//! final; only expiry and purge remove it), except in two ways that change no claim's
//! answer or are seen here: its replay count ([`idem_core::Store::count_replay`], which
//! no decision reads), and an operator's forget. So a copy answers claims as the row
//! would while `now` is before its `expires_at`, and is dropped once it is not (past
//! retention a record may be shrunk to its tombstone, so the store answers then). That
//! holds across processes sharing one file too, except for a forget by another process
//! (e.g. `idem keys forget` while a server runs): this process keeps replaying its copy
//! until the copy is evicted or its retention ends. A forget through this store drops
//! the copy ([`ReplayCache::forgotten`]). The cache is bounded by bytes (the records'
//! [`idem_core::usage::stored_bytes`]) and evicts what is least used (`quick_cache`'s
//! CLOCK-Pro).
//!
//! The answer is still idem-core's: [`idem_core::step::step`] decides the claim on the
//! cached record, and only an answer that writes nothing (a replay, a fingerprint
//! mismatch) is taken from the cache; anything else goes to the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use idem_core::step::{self, Counters, StoreView, op};
use idem_core::{Decision, Limits, Record, RecordId, RecordState, Usage, usage};
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// Completed records by id, bounded by bytes.
#[derive(Debug, Clone)]
pub(crate) struct ReplayCache {
    records: Option<Arc<Cache<RecordId, Arc<Record>, RecordBytes>>>,
    /// How many forgets this store has run: an operation that read a record before a
    /// forget must not cache it after (see [`ReplayCache::remember`]).
    forgets: Arc<AtomicU64>,
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
        let forgets = Arc::new(AtomicU64::new(0));
        if bytes_max == 0 {
            return ReplayCache { records: None, forgets };
        }
        let entries = usize::try_from(bytes_max / TYPICAL_ENTRY_BYTES).unwrap_or(usize::MAX).max(16);
        ReplayCache { records: Some(Arc::new(Cache::with_weighter(entries, bytes_max, RecordBytes))), forgets }
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
        // Past its retention a record answers as a tombstone or not at all, and a purge may
        // shrink or remove it: the store decides.
        if claim.now >= record.expires_at {
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

    /// The forget count now; an operation takes it before it reads the record it may
    /// [`ReplayCache::remember`].
    pub(crate) fn epoch(&self) -> u64 {
        self.forgets.load(Ordering::SeqCst)
    }

    /// Keeps `record` if it is completed, unless a forget ran since `epoch` was taken: the
    /// record may be the one it removed. Checked after the insert (and undone), so a
    /// forget that lands between the check and the insert still wins: it counts before it
    /// removes.
    pub(crate) fn remember(&self, id: &RecordId, record: &Record, epoch: u64) {
        if let (Some(records), RecordState::Completed { .. }) = (&self.records, &record.state) {
            records.insert(id.clone(), Arc::new(record.clone()));
            if self.epoch() != epoch {
                records.remove(id);
            }
        }
    }

    /// `id`'s record was forgotten (or may have been: call it whatever the forget's
    /// outcome): drop the copy, and keep operations that read it earlier from caching it.
    pub(crate) fn forgotten(&self, id: &RecordId) {
        self.forgets.fetch_add(1, Ordering::SeqCst);
        if let Some(records) = &self.records {
            records.remove(id);
        }
    }
}
