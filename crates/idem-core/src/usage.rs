//! What a store holds, what it may hold, and how one step changes it.
//!
//! Every store counts the same way (one integer type, `u64`): a record costs its id's
//! bytes plus [`Record::stored_bytes`], so the limits mean the same on every backend.

use crate::{Record, RecordId};

/// What a store holds, as its size limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Usage {
    /// Records held, live or expired but not yet purged.
    pub records: u64,
    /// Bytes of ids, responses and bookkeeping ([`stored_bytes`]).
    pub stored_bytes: u64,
}

/// What a store may hold. At a limit it refuses new claims with
/// [`crate::StoreError::Full`]; it never evicts a live record, and it always accepts the
/// completion of a claim it granted, so `stored_bytes` may overshoot its limit by the
/// responses of the claims in flight when the store filled up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Most records held at once.
    pub records_max: u64,
    /// Most bytes held at once (see above for the overshoot).
    pub stored_bytes_max: u64,
}

impl Default for Limits {
    /// 100,000 records and 256 MiB.
    fn default() -> Self {
        Limits { records_max: 100_000, stored_bytes_max: 256 * 1024 * 1024 }
    }
}

/// How one step changes [`Usage`]; a store adds it to its totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UsageDelta {
    /// Records added (negative: removed).
    pub records: i64,
    /// Bytes added (negative: freed).
    pub stored_bytes: i64,
}

impl UsageDelta {
    /// No change.
    pub const NONE: UsageDelta = UsageDelta { records: 0, stored_bytes: 0 };

    /// Whether the delta changes nothing.
    #[must_use]
    pub fn is_none(&self) -> bool {
        *self == UsageDelta::NONE
    }
}

impl Usage {
    /// These totals after `delta`.
    ///
    /// # Panics
    /// If a total would go below zero or past `u64::MAX`: the store's totals and its
    /// records disagree, which only damage (or a bug) can cause.
    #[must_use]
    pub fn after(self, delta: UsageDelta) -> Usage {
        let add = |total: u64, change: i64| {
            total.checked_add_signed(change).expect("usage totals never go below zero or past u64::MAX")
        };
        Usage { records: add(self.records, delta.records), stored_bytes: add(self.stored_bytes, delta.stored_bytes) }
    }
}

/// Bytes `record` costs under `id`: the id, the response and fixed bookkeeping.
#[must_use]
pub fn stored_bytes(id: &RecordId, record: &Record) -> u64 {
    // usize is at most 64 bits on every target Rust supports.
    u64::try_from(id.stored_bytes() + record.stored_bytes()).expect("a record's size fits u64")
}
