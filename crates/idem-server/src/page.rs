//! Paging a caller's rows, Stripe's list shape: what a list request asks for ([`PageRequest`])
//! and what it gets ([`Page`]). Separate from [`crate::ledger`] because every ledger and the
//! row decoders share it, and the HTTP handlers build it from the query.

/// The most rows listed by `GET /payments` or `GET /users` in one page.
pub const LIST_LIMIT_MAX: usize = 100;

/// Which page of a caller's rows to list, in Stripe's shape: at most `limit` rows, the
/// ones written before the row `starting_after` (a payment or user id), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows in the page, 1..=[`LIST_LIMIT_MAX`] (larger values are cut to it).
    pub limit: usize,
    /// The last id of the previous page; `None` for the first page.
    pub starting_after: Option<String>,
}

impl PageRequest {
    /// The first page of `limit` rows.
    #[must_use]
    pub fn first(limit: usize) -> PageRequest {
        PageRequest { limit, starting_after: None }
    }

    /// The limit within 1..=[`LIST_LIMIT_MAX`].
    pub(crate) fn limit(&self) -> usize {
        self.limit.clamp(1, LIST_LIMIT_MAX)
    }

    /// The limit plus one, as SQL binds it: one row more than the page tells `has_more`.
    pub(crate) fn probe(&self) -> i64 {
        i64::try_from(self.limit() + 1).expect("the list limit is small")
    }
}

/// One page of a caller's rows, newest first.
///
/// Rows are ordered by when they were written (a sequence number the ledger assigns), and
/// a page starts after a row, not at an offset, so paging is stable under concurrent
/// inserts: a walk from the first page to `has_more == false` sees every row that existed
/// when it started exactly once (rows written during the walk are newer than its cursor
/// and appear in a later walk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows, newest first.
    pub items: Vec<T>,
    /// Whether older rows follow the last one.
    pub has_more: bool,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` rows read newest first.
    pub(crate) fn from_probe(mut rows: Vec<T>, request: &PageRequest) -> Page<T> {
        let has_more = rows.len() > request.limit();
        rows.truncate(request.limit());
        Page { items: rows, has_more }
    }
}
