//! [`PlantedBug`]: rules of [`PostgresStore`](crate::PostgresStore)'s SQL planted wrong, on
//! purpose, **for testing the tests**: a check that claims to catch a wrong rule (the
//! differential check in `src/planted.rs`, a fault-injection harness running `idem serve
//! --plant-bug NAME`) shows it has teeth by catching the store with that rule wrong, while
//! the store as shipped passes the same check.
//!
//! Each bug is one text replacement in one prebuilt statement, named here and nowhere else.
//! Nothing in a request can plant one: only the code that opens the store.

use std::fmt;
use std::str::FromStr;

/// One rule of the store's SQL planted wrong; `src/planting.rs` says how each is used.
///
/// Planted with [`PostgresStore::with_planted_bug`](crate::PostgresStore::with_planted_bug).
/// The names ([`PlantedBug::name`], parsed back by [`FromStr`]) are what `idem serve
/// --plant-bug` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// `completion-without-fence`: the guarded completion locks and completes whichever
    /// claim of the key is in flight, whatever fence it was given (G3 broken: a stale or
    /// made-up fence completes another request's claim).
    CompletionWithoutFence,
    /// `completion-fence-at-most`: the guarded completion compares fences with `<=` (the
    /// given fence at most the record's) instead of `=`, so a stale holder's fence, older
    /// than the claim that took over, completes that claim (G3 broken).
    CompletionFenceAtMost,
    /// `completion-without-state`: the guarded completion also "completes" a completed
    /// record again with the fence that completed it, replacing the response kept (G2
    /// broken: a repeat must change nothing).
    CompletionWithoutState,
    /// `completion-unguarded`: the guarded completion checks neither state nor fence, so a
    /// stale holder overwrites the record another request completed, and in atomic mode
    /// its business writes commit beside the other's (G1 and G3 broken: two executions of
    /// one key).
    CompletionUnguarded,
    /// `retention-from-lease-end`: a completion's retention is counted from the claim's
    /// lease end instead of the completion's time, so records are kept too long.
    RetentionFromLeaseEnd,
    /// `completion-without-tombstone`: the guarded completion never keeps when the
    /// record's tombstone ends, so under a policy with tombstones the key runs again after
    /// retention instead of answering Gone (SPEC "Key lifecycle" broken).
    CompletionWithoutTombstone,
    /// `usage-delta-needs-both`: a write adds its usage delta only when both the record
    /// count and the bytes change (`AND` for `OR`), so the size limits count wrong totals.
    UsageDeltaNeedsBoth,
    /// `list-without-collation`: an operator's listing orders record ids in the columns'
    /// collation instead of bytewise (`COLLATE "C"`), so on a database whose collation is
    /// a natural language's, pages come in another order than Rust's and a cursor skips
    /// or repeats records.
    ListWithoutCollation,
    /// `purge-one-ms-late`: the purge keeps a record whose time is up at the very
    /// millisecond (`<` for `<=`).
    PurgeOneMsLate,
}

impl PlantedBug {
    /// Every planted bug, in the order of the enum.
    pub const ALL: [PlantedBug; 9] = [
        PlantedBug::CompletionWithoutFence,
        PlantedBug::CompletionFenceAtMost,
        PlantedBug::CompletionWithoutState,
        PlantedBug::CompletionUnguarded,
        PlantedBug::RetentionFromLeaseEnd,
        PlantedBug::CompletionWithoutTombstone,
        PlantedBug::UsageDeltaNeedsBoth,
        PlantedBug::PurgeOneMsLate,
        PlantedBug::ListWithoutCollation,
    ];

    /// The bug's name, as `idem serve --plant-bug` takes it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            PlantedBug::CompletionWithoutFence => "completion-without-fence",
            PlantedBug::CompletionFenceAtMost => "completion-fence-at-most",
            PlantedBug::CompletionWithoutState => "completion-without-state",
            PlantedBug::CompletionUnguarded => "completion-unguarded",
            PlantedBug::RetentionFromLeaseEnd => "retention-from-lease-end",
            PlantedBug::CompletionWithoutTombstone => "completion-without-tombstone",
            PlantedBug::UsageDeltaNeedsBoth => "usage-delta-needs-both",
            PlantedBug::PurgeOneMsLate => "purge-one-ms-late",
            PlantedBug::ListWithoutCollation => "list-without-collation",
        }
    }

    /// The SQL as shipped and what replaces it: text found in exactly one prebuilt
    /// statement (every occurrence in it is replaced).
    pub(crate) const fn replacement(self) -> (&'static str, &'static str) {
        match self {
            PlantedBug::CompletionWithoutFence => {
                ("AND r.state = 'in_flight' AND r.fence = $3", "AND r.state = 'in_flight'")
            }
            PlantedBug::CompletionFenceAtMost => {
                ("AND r.state = 'in_flight' AND r.fence = $3", "AND r.state = 'in_flight' AND $3 <= r.fence")
            }
            PlantedBug::CompletionWithoutState => ("r.state = 'in_flight' AND r.fence = $3", "r.fence = $3"),
            PlantedBug::CompletionUnguarded => ("AND r.state = 'in_flight' AND r.fence = $3", ""),
            PlantedBug::RetentionFromLeaseEnd => {
                ("coalesce($8::int8, old.db_now)", "coalesce(old.lease_expires_at, $8::int8, old.db_now)")
            }
            PlantedBug::CompletionWithoutTombstone => {
                ("CASE WHEN $10::int8 IS NULL THEN NULL", "CASE WHEN true THEN NULL")
            }
            PlantedBug::UsageDeltaNeedsBoth => {
                ("(d.records <> 0 OR d.bytes <> 0)", "(d.records <> 0 AND d.bytes <> 0)")
            }
            PlantedBug::PurgeOneMsLate => ("r.due_at <= $1", "r.due_at < $1"),
            PlantedBug::ListWithoutCollation => {
                ("ORDER BY r.principal COLLATE \"C\", r.idem_key COLLATE \"C\"", "ORDER BY r.principal, r.idem_key")
            }
        }
    }
}

impl fmt::Display for PlantedBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`PlantedBug::ALL`]'s; the message lists them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown planted bug {given:?}; known: {}", known_names())]
pub struct UnknownPlantedBug {
    /// What was given.
    pub given: String,
}

fn known_names() -> String {
    PlantedBug::ALL.map(PlantedBug::name).join(", ")
}

impl FromStr for PlantedBug {
    type Err = UnknownPlantedBug;

    fn from_str(given: &str) -> Result<PlantedBug, UnknownPlantedBug> {
        PlantedBug::ALL
            .into_iter()
            .find(|bug| bug.name() == given)
            .ok_or_else(|| UnknownPlantedBug { given: given.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_unknown_names_list_the_known_ones() {
        // Goal: `--plant-bug` takes exactly the names printed, and a typo says what exists.
        for bug in PlantedBug::ALL {
            assert_eq!(bug.name().parse(), Ok(bug));
            assert_eq!(bug.to_string(), bug.name());
        }
        let unknown = "completion-without-fences".parse::<PlantedBug>().expect_err("a typo");
        for bug in PlantedBug::ALL {
            assert!(unknown.to_string().contains(bug.name()), "{unknown}");
        }
    }
}
