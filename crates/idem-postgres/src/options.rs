//! How to open a [`crate::PostgresStore`]: the database, the schema, the size limits, the
//! pool, the timeouts and where time comes from.

use std::time::Duration;

use idem_core::{Limits, Timestamp};

use crate::session::SessionOptions;

/// The most connections a pool may be given. PostgreSQL's default `max_connections` is
/// 100 for the whole server; this bound catches a misplaced zero or unit.
pub const CONNECTIONS_MAX_LIMIT: u32 = 100;

/// The most times one operation is retried after a serialization failure or a deadlock.
pub const RETRIES_MAX_LIMIT: u32 = 20;

/// The longest schema name PostgreSQL keeps (`NAMEDATALEN - 1`).
pub const SCHEMA_CHARS_MAX: usize = 63;

/// Where the `now` of every decision comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeSource {
    /// The database's clock, read inside the operation's transaction (`clock_timestamp()`,
    /// read after the record's row lock is granted where the operation takes one). The `now`
    /// that callers pass to [`idem_core::Store`] methods and to
    /// [`crate::PostgresStore::complete_in`] is
    /// ignored, so server replicas with skewed clocks agree on leases and retention, and a
    /// purger with a fast clock cannot forget live records. The default.
    #[default]
    Database,
    /// The `now` the caller passes, as idem-core's other stores use it: for tests,
    /// simulations and the conformance suite, which move time by passing later timestamps.
    Caller,
}

impl TimeSource {
    /// The `now` of a decision, from the caller's `now` and the `now` the database read.
    pub(crate) fn now(self, caller: Timestamp, database: Timestamp) -> Timestamp {
        match self {
            TimeSource::Database => database,
            TimeSource::Caller => caller,
        }
    }
}

/// Where the store lives, how big it may grow and how it talks to PostgreSQL.
///
/// [`crate::PostgresStore::with_pool`] uses only the schema, the size limits, the retries,
/// the time source, the schema lock timeout and the open timeout: the URL and the pool
/// and session settings (`connections_max`, `acquire_timeout`, `statement_timeout`, the
/// idle-in-transaction and lock timeouts, the TCP settings) are those of the service's
/// pool ([`PostgresOptions::connect_options`] gives them to it).
///
/// ```
/// use std::time::Duration;
/// use idem_postgres::{PostgresOptions, TimeSource};
///
/// let options = PostgresOptions::new("postgres://idem@db.internal:5432/payments")
///     .schema("idem")
///     .records_max(10_000_000)
///     .stored_bytes_max(8 << 30)
///     .connections_max(16)
///     .acquire_timeout(Duration::from_secs(2))
///     .statement_timeout(Duration::from_secs(2));
/// assert_eq!(options.schema_name(), "idem");
/// assert_eq!(options.limits().records_max, 10_000_000);
/// assert_eq!(options.time(), TimeSource::Database);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) limits: Limits,
    pub(crate) connections_max: u32,
    pub(crate) acquire_timeout: Duration,
    pub(crate) statement_timeout: Duration,
    pub(crate) retries_max: u32,
    pub(crate) time: TimeSource,
    pub(crate) session: SessionOptions,
}

impl PostgresOptions {
    /// The store in the database at `url` (`postgres://user:password@host:port/database`,
    /// any form sqlx's `PgConnectOptions` parses), in schema `public`, with the defaults:
    /// 1,000,000 records, 1 GiB of ids and responses, 10 connections, a 5 s wait for a free
    /// connection, a 5 s statement timeout, 5 retries after contention, time from the database,
    /// and the session settings that bound a dead holder (a 5 s idle-in-transaction timeout,
    /// a 2 s lock timeout, TCP keepalives after 5 s idle every 1 s 5 times, a 10 s TCP user
    /// timeout; the crate docs, "Dead holders") and a 10 s open timeout.
    #[must_use]
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions {
            url: url.into(),
            schema: "public".to_owned(),
            limits: Limits { records_max: 1_000_000, stored_bytes_max: 1 << 30 },
            connections_max: 10,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            retries_max: 5,
            time: TimeSource::Database,
            session: SessionOptions::default(),
        }
    }

    /// The schema idem's tables live in (default `public`), created by
    /// [`crate::PostgresStore::open`] if missing. A plain lower-case identifier:
    /// `[a-z_][a-z0-9_]*`, at most [`SCHEMA_CHARS_MAX`] characters. Every statement names it,
    /// so [`crate::PostgresStore::complete_in`] works on any transaction on the same database,
    /// whatever its `search_path`.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> PostgresOptions {
        self.schema = schema.into();
        self
    }

    /// The schema name.
    #[must_use]
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    /// The size limits the store's steps admit claims against ([`idem_core::step::step`]).
    #[must_use]
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Where time comes from.
    #[must_use]
    pub fn time(&self) -> TimeSource {
        self.time
    }

    /// Most records held at once, live or expired but not yet purged; at the limit new
    /// claims get [`idem_core::StoreError::Full`] (see the crate docs on concurrent claims).
    #[must_use]
    pub fn records_max(mut self, records_max: u64) -> PostgresOptions {
        self.limits.records_max = records_max;
        self
    }

    /// Most bytes of ids, responses and bookkeeping held at once, counted by
    /// [`idem_core::usage::stored_bytes`] as in every store.
    #[must_use]
    pub fn stored_bytes_max(mut self, stored_bytes_max: u64) -> PostgresOptions {
        self.limits.stored_bytes_max = stored_bytes_max;
        self
    }

    /// Most connections in the pool, 1..=[`CONNECTIONS_MAX_LIMIT`].
    #[must_use]
    pub fn connections_max(mut self, connections_max: u32) -> PostgresOptions {
        self.connections_max = connections_max;
        self
    }

    /// How long a call waits for a pooled connection (a free one, or a new one while the
    /// server is unreachable) before it fails with [`idem_core::StoreError::Unavailable`].
    #[must_use]
    pub fn acquire_timeout(mut self, acquire_timeout: Duration) -> PostgresOptions {
        self.acquire_timeout = acquire_timeout;
        self
    }

    /// PostgreSQL's `statement_timeout` on every pooled connection, whole milliseconds: a
    /// statement (including its wait for a row lock) that runs longer is cancelled and the
    /// call fails with [`idem_core::StoreError::Unavailable`]. It also applies to the
    /// application's statements on [`crate::PostgresStore::begin_write`] transactions.
    #[must_use]
    pub fn statement_timeout(mut self, statement_timeout: Duration) -> PostgresOptions {
        self.statement_timeout = statement_timeout;
        self
    }

    /// How many times an operation is run again after PostgreSQL aborted it for contention
    /// (SQLSTATE 40001 serialization failure, 40P01 deadlock, or a lost race to insert the
    /// same new record id), 0..=[`RETRIES_MAX_LIMIT`], with exponential backoff and jitter
    /// from 2 ms to 64 ms. When they run out the call fails with
    /// [`idem_core::StoreError::Unavailable`] and nothing was applied.
    #[must_use]
    pub fn retries_max(mut self, retries_max: u32) -> PostgresOptions {
        self.retries_max = retries_max;
        self
    }

    /// Where the `now` of every decision comes from (default [`TimeSource::Database`]).
    #[must_use]
    pub fn time_source(mut self, time: TimeSource) -> PostgresOptions {
        self.time = time;
        self
    }

    /// PostgreSQL's `idle_in_transaction_session_timeout` on every pooled connection,
    /// whole milliseconds (default 5 s): the server ends a session that sits inside a
    /// transaction without sending anything for longer, rolling it back and freeing its
    /// locks. This bounds a holder whose host vanished between its completion (which
    /// locks the record's row) and its `COMMIT` (crate docs, "Dead holders"). It applies to
    /// the application's transactions from [`crate::PostgresStore::begin_write`] too: keep
    /// a transaction busy or short.
    #[must_use]
    pub fn idle_in_transaction_timeout(mut self, timeout: Duration) -> PostgresOptions {
        self.session.idle_in_transaction = timeout;
        self
    }

    /// PostgreSQL's `lock_timeout` on every pooled connection, whole milliseconds (default
    /// 2 s): a statement that waits longer for a lock (a row another transaction completed
    /// and has not committed yet) fails with [`idem_core::StoreError::Unavailable`] and a
    /// retry hint, so requests meeting a dead holder's lock give their pooled connection
    /// back instead of holding it for the whole statement timeout. A live holder keeps a
    /// record's row locked only from its completion to its commit.
    #[must_use]
    pub fn lock_timeout(mut self, timeout: Duration) -> PostgresOptions {
        self.session.lock = timeout;
        self
    }

    /// `lock_timeout` of the statements [`crate::PostgresStore::open`] runs on idem's schema
    /// (reading the catalog and the migrations table, creating or migrating what is
    /// missing), whole milliseconds (default 1 s). A schema statement never waits longer
    /// than this behind another session's locks, so it never queues ahead of the store's
    /// writers; `open` tries again until its open timeout.
    #[must_use]
    pub fn schema_lock_timeout(mut self, timeout: Duration) -> PostgresOptions {
        self.session.schema_lock = timeout;
        self
    }

    /// PostgreSQL's TCP keepalives on the server's end of every connection (default 5 s
    /// idle, then a probe every 1 s, 5 probes): `tcp_keepalives_idle` and
    /// `tcp_keepalives_interval` in whole seconds, `tcp_keepalives_count` 1..=127. A
    /// connection whose host stopped answering is closed by the server after about
    /// `idle + interval × count` (10 s) without traffic, and its session's locks go with
    /// it. Ignored by PostgreSQL on Unix-domain sockets.
    #[must_use]
    pub fn tcp_keepalive(mut self, idle: Duration, interval: Duration, count: u32) -> PostgresOptions {
        self.session.keepalive_idle = idle;
        self.session.keepalive_interval = interval;
        self.session.keepalive_count = count;
        self
    }

    /// PostgreSQL's `tcp_user_timeout` on every connection, whole milliseconds (default
    /// 10 s): the server closes a connection whose sent data stays unacknowledged longer
    /// (a backend writing to a host that vanished). Linux only, as in PostgreSQL.
    #[must_use]
    pub fn tcp_user_timeout(mut self, timeout: Duration) -> PostgresOptions {
        self.session.user_timeout = timeout;
        self
    }

    /// How long [`crate::PostgresStore::open`] tries again while PostgreSQL refuses
    /// connections, is starting up, shutting down or in recovery (SQLSTATE 57P03), has no
    /// free connection slot, or idem's schema is locked (default 10 s): attempts with a
    /// backoff of 100 ms doubling to 2 s, each cut at the deadline. Authentication
    /// failures, a missing database and invalid options fail at once.
    #[must_use]
    pub fn open_timeout(mut self, timeout: Duration) -> PostgresOptions {
        self.session.open = timeout;
        self
    }

    /// Why these options cannot open a store, if they cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.connections_max == 0 || self.connections_max > CONNECTIONS_MAX_LIMIT {
            return Some(format!(
                "connections_max is {}; it must be 1..={CONNECTIONS_MAX_LIMIT}",
                self.connections_max
            ));
        }
        if self.retries_max > RETRIES_MAX_LIMIT {
            return Some(format!("retries_max is {}; it must be 0..={RETRIES_MAX_LIMIT}", self.retries_max));
        }
        if self.limits.records_max == 0 {
            return Some("records_max is 0; the store could take no claim".to_owned());
        }
        if self.limits.stored_bytes_max == 0 {
            return Some("stored_bytes_max is 0; the store could take no claim".to_owned());
        }
        if self.acquire_timeout.is_zero() {
            return Some("acquire_timeout is 0; no call could get a connection".to_owned());
        }
        if self.statement_timeout.as_millis() == 0 {
            return Some("statement_timeout is under 1 ms; PostgreSQL would read 0 as no timeout".to_owned());
        }
        if let Some(problem) = self.session.problem() {
            return Some(problem);
        }
        if !is_plain_identifier(&self.schema) {
            return Some(format!(
                "schema {:?} is not a plain identifier ([a-z_][a-z0-9_]*, at most {SCHEMA_CHARS_MAX} characters)",
                self.schema
            ));
        }
        None
    }
}

/// `[a-z_][a-z0-9_]*`, 1..=63 characters: safe to put in SQL between double quotes, and
/// spelled the same quoted or not.
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    first_ok
        && name.len() <= SCHEMA_CHARS_MAX
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        // Goal: only names that are safe between double quotes in SQL are accepted.
        for good in ["public", "idem", "_t1", "idem_test_123", &"a".repeat(63)] {
            assert!(PostgresOptions::new("postgres://h/d").schema(good).problem().is_none(), "{good}");
        }
        for bad in ["", "Idem", "1abc", "a-b", "a\"b", "a b", "é", &"a".repeat(64)] {
            assert!(PostgresOptions::new("postgres://h/d").schema(bad).problem().is_some(), "{bad:?}");
        }
    }

    #[test]
    fn bounds_are_checked() {
        // Goal: zero pools, zero limits, zero timeouts and unbounded retries are refused.
        let base = || PostgresOptions::new("postgres://h/d");
        assert!(base().problem().is_none());
        assert!(base().connections_max(0).problem().is_some());
        assert!(base().connections_max(CONNECTIONS_MAX_LIMIT + 1).problem().is_some());
        assert!(base().retries_max(RETRIES_MAX_LIMIT + 1).problem().is_some());
        assert!(base().records_max(0).problem().is_some());
        assert!(base().stored_bytes_max(0).problem().is_some());
        assert!(base().acquire_timeout(Duration::ZERO).problem().is_some());
        assert!(base().statement_timeout(Duration::from_micros(500)).problem().is_some());
    }

    #[test]
    fn bad_settings_are_refused() {
        // Goal: zero timeouts (PostgreSQL's "no timeout"), fractions of a second where
        // PostgreSQL counts seconds, and keepalive counts out of range are refused.
        let base = || PostgresOptions::new("postgres://h/d");
        assert!(base().problem().is_none());
        assert!(base().idle_in_transaction_timeout(Duration::ZERO).problem().is_some());
        assert!(base().lock_timeout(Duration::from_micros(10)).problem().is_some());
        assert!(base().schema_lock_timeout(Duration::ZERO).problem().is_some());
        assert!(base().open_timeout(Duration::ZERO).problem().is_some());
        assert!(base().tcp_user_timeout(Duration::from_secs(3_000_000)).problem().is_some());
        assert!(base().tcp_keepalive(Duration::from_millis(1500), Duration::from_secs(1), 3).problem().is_some());
        assert!(base().tcp_keepalive(Duration::from_secs(1), Duration::ZERO, 3).problem().is_some());
        assert!(base().tcp_keepalive(Duration::from_secs(1), Duration::from_secs(1), 0).problem().is_some());
        assert!(base().tcp_keepalive(Duration::from_secs(1), Duration::from_secs(1), 128).problem().is_some());
        assert!(base().tcp_keepalive(Duration::from_secs(2), Duration::from_secs(1), 3).problem().is_none());
    }
}
