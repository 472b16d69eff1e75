//! Key administration (SPEC "Key lifecycle"): an operator lists records, shows one, and
//! forgets one. [`KeyAdmin`] is what a store offers for it; the rules of a listing (what
//! a filter admits, the order, the cursor) live here once, in [`ListQuery`].

use std::future::Future;

use crate::{Principal, Record, RecordId, RecordState, Store, StoreError, Timestamp};

/// The most records one page of a listing holds.
pub const LIST_LIMIT_MAX: usize = 100;

/// A record's state, as a listing filters by it (the stored state: a completed record
/// past its retention is still `Completed` until a purge shrinks it to its tombstone).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum StateFilter {
    /// In flight.
    InFlight,
    /// Completed.
    Completed,
    /// A tombstone.
    Tombstone,
}

impl StateFilter {
    /// The filter named as [`RecordState::name`] spells it: `in_flight`, `completed`, `tombstone`.
    #[must_use]
    pub fn parse(name: &str) -> Option<StateFilter> {
        match name {
            "in_flight" => Some(StateFilter::InFlight),
            "completed" => Some(StateFilter::Completed),
            "tombstone" => Some(StateFilter::Tombstone),
            _ => None,
        }
    }

    /// The state's name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            StateFilter::InFlight => "in_flight",
            StateFilter::Completed => "completed",
            StateFilter::Tombstone => "tombstone",
        }
    }

    fn admits(self, state: &RecordState) -> bool {
        self.name() == state.name()
    }
}

/// Why a listing's query is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListQueryError {
    /// The limit is 0 or over [`LIST_LIMIT_MAX`].
    #[error("limit must be 1 to {LIST_LIMIT_MAX}, not {0}")]
    Limit(usize),
}

/// One page of a listing: filters, a cursor and a size (Stripe's list API: records in
/// a fixed order, `starting_after` the last id of the page before).
///
/// Records are listed in (principal, key) order, bytewise, expired ones included (they
/// are held until purged; [`Record::is_expired`] tells).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ListQuery {
    /// Only this caller's records.
    pub principal: Option<Principal>,
    /// Only records in this stored state.
    pub state: Option<StateFilter>,
    /// Only records created before this time (older than an age).
    pub created_before: Option<Timestamp>,
    /// Only records created at or after this time (younger than an age).
    pub created_after: Option<Timestamp>,
    /// Only records after this id (the last id of the page before).
    pub starting_after: Option<RecordId>,
    limit: usize,
}

impl ListQuery {
    /// The first page of every record, `limit` at a time.
    ///
    /// # Errors
    /// [`ListQueryError::Limit`] unless 1 <= `limit` <= [`LIST_LIMIT_MAX`].
    pub fn new(limit: usize) -> Result<ListQuery, ListQueryError> {
        if limit == 0 || limit > LIST_LIMIT_MAX {
            return Err(ListQueryError::Limit(limit));
        }
        Ok(ListQuery {
            principal: None,
            state: None,
            created_before: None,
            created_after: None,
            starting_after: None,
            limit,
        })
    }

    /// How many records a page holds at most.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the listing includes `id`'s `record`: every filter admits it and it comes
    /// after the cursor. SQL stores restate this as a `WHERE` clause, pinned by the
    /// conformance suite.
    #[must_use]
    pub fn admits(&self, id: &RecordId, record: &Record) -> bool {
        self.principal.as_ref().is_none_or(|principal| id.principal == *principal)
            && self.state.is_none_or(|state| state.admits(&record.state))
            && self.created_before.is_none_or(|before| record.created_at < before)
            && self.created_after.is_none_or(|after| record.created_at >= after)
            && self.starting_after.as_ref().is_none_or(|cursor| id > cursor)
    }

    /// The page of `records` (any order) this query selects: what a store without a
    /// query language answers.
    #[must_use]
    pub fn select<'a>(&self, records: impl IntoIterator<Item = (&'a RecordId, &'a Record)>) -> Page {
        let mut admitted: Vec<(&RecordId, &Record)> =
            records.into_iter().filter(|(id, record)| self.admits(id, record)).collect();
        admitted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let has_more = admitted.len() > self.limit;
        let records = admitted.into_iter().take(self.limit).map(|(id, record)| (id.clone(), record.clone())).collect();
        Page { records, has_more }
    }
}

/// One page of records, in (principal, key) order.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Page {
    /// The records.
    pub records: Vec<(RecordId, Record)>,
    /// Whether records follow after the last one (ask again with `starting_after` it).
    pub has_more: bool,
}

/// What a store offers an operator: list, and forget. Show is [`Store::get`].
pub trait KeyAdmin: Store {
    /// One page of records.
    ///
    /// Retry after `Unavailable`: safe, it changes nothing.
    fn list(&self, query: &ListQuery) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Forgets `id`'s record whatever its state, and moves the fence counter on (SPEC
    /// "Key lifecycle": forget is fenced), so a handler still running under a claim of
    /// the record can never complete afterwards (G3). Answers the record removed.
    ///
    /// Retry after `Unavailable`: safe; a second forget finds nothing.
    fn forget(&self, id: &RecordId) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;
}
