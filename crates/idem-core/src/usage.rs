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

    /// `self` and `other` as one delta (a batch's steps summed), or `None` if a sum does not
    /// fit `i64`: no batch changes that much, so a store reports it as damage.
    #[must_use]
    pub fn checked_add(self, other: UsageDelta) -> Option<UsageDelta> {
        Some(UsageDelta {
            records: self.records.checked_add(other.records)?,
            stored_bytes: self.stored_bytes.checked_add(other.stored_bytes)?,
        })
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
        self.checked_after(delta).expect("usage totals never go below zero or past u64::MAX")
    }

    /// These totals after `delta`, or `None` if a total would go below zero or past
    /// `u64::MAX`: a store whose totals come from its backend reports that as damage
    /// ([`crate::StoreError::Corrupt`]) instead of panicking.
    #[must_use]
    pub fn checked_after(self, delta: UsageDelta) -> Option<Usage> {
        Some(Usage {
            records: self.records.checked_add_signed(delta.records)?,
            stored_bytes: self.stored_bytes.checked_add_signed(delta.stored_bytes)?,
        })
    }
}

/// Bytes `record` costs under `id`: the id, the response and fixed bookkeeping.
#[must_use]
pub fn stored_bytes(id: &RecordId, record: &Record) -> u64 {
    // usize is at most 64 bits on every target Rust supports.
    u64::try_from(id.stored_bytes() + record.stored_bytes()).expect("a record's size fits u64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_sums_refuse_what_does_not_fit() {
        // Goal: the one place stores add usage refuses a total below zero or past its type
        // instead of wrapping or panicking.
        let one = UsageDelta { records: 1, stored_bytes: 10 };
        assert_eq!(one.checked_add(one), Some(UsageDelta { records: 2, stored_bytes: 20 }));
        assert_eq!(UsageDelta { records: i64::MAX, stored_bytes: 0 }.checked_add(one), None);
        assert_eq!(
            UsageDelta { records: 0, stored_bytes: i64::MIN }.checked_add(UsageDelta { records: 0, stored_bytes: -1 }),
            None
        );

        let held = Usage { records: 1, stored_bytes: 10 };
        assert_eq!(held.checked_after(UsageDelta { records: -1, stored_bytes: -10 }), Some(Usage::default()));
        assert_eq!(held.checked_after(UsageDelta { records: -2, stored_bytes: 0 }), None);
        assert_eq!(Usage { records: u64::MAX, stored_bytes: 0 }.checked_after(one), None);
        assert_eq!(held.after(one), Usage { records: 2, stored_bytes: 20 });
    }
}
