//! The settings every connection of the store's pool is opened with, so a holder whose
//! host vanished in the middle of a transaction holds nothing for long (docs/guarantees.md,
//! "A dead holder holds nothing"), and how long opening waits for a server that is starting.
//!
//! The settings are PostgreSQL's own, sent in the connection's startup packet (`options`,
//! as `-c name=value`, by `open.rs`), so they hold on the server's side of the connection, where the
//! locks are: the server ends a session that sat idle inside a transaction, or whose peer
//! stopped answering, and its locks go with it. sqlx has no client-side TCP keepalive
//! option; the server's keepalives (`tcp_keepalives_*`, `tcp_user_timeout`) are the ones
//! that free locks, and the client side is bounded by `statement_timeout` and the pool's
//! liveness check.

use std::time::Duration;

/// The session settings of the store's options besides `statement_timeout` (see the
/// builder methods on [`crate::PostgresOptions`] for each, and the crate docs, "Dead holders").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionOptions {
    /// `idle_in_transaction_session_timeout`.
    pub(crate) idle_in_transaction: Duration,
    /// `lock_timeout` of every statement.
    pub(crate) lock: Duration,
    /// `lock_timeout` of the schema statements run by `open`.
    pub(crate) schema_lock: Duration,
    /// `tcp_keepalives_idle`, whole seconds.
    pub(crate) keepalive_idle: Duration,
    /// `tcp_keepalives_interval`, whole seconds.
    pub(crate) keepalive_interval: Duration,
    /// `tcp_keepalives_count`.
    pub(crate) keepalive_count: u32,
    /// `tcp_user_timeout`.
    pub(crate) user_timeout: Duration,
    /// How long `open` retries a database that refuses or is starting up.
    pub(crate) open: Duration,
}

impl Default for SessionOptions {
    /// Tied to idem's default lease (`idem_core::LEASE_DEFAULT`, 10 s), with the default
    /// 5 s statement timeout: statement + idle timeout = 10 s, keepalive idle + interval ×
    /// count = 10 s and the user timeout 10 s, so a holder that vanishes inside its
    /// transaction holds its key at most one lease past its own lease end.
    fn default() -> SessionOptions {
        SessionOptions {
            idle_in_transaction: Duration::from_secs(5),
            lock: Duration::from_secs(2),
            schema_lock: Duration::from_secs(1),
            keepalive_idle: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(1),
            keepalive_count: 5,
            user_timeout: Duration::from_secs(10),
            open: Duration::from_secs(10),
        }
    }
}

/// The most keepalive probes a connection may be given (Linux's own limit).
pub const KEEPALIVE_COUNT_MAX: u32 = 127;

impl SessionOptions {
    /// Why these settings cannot work, if they cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        let millis = [
            ("idle_in_transaction_timeout", self.idle_in_transaction),
            ("lock_timeout", self.lock),
            ("schema_lock_timeout", self.schema_lock),
            ("tcp_user_timeout", self.user_timeout),
            ("open_timeout", self.open),
        ];
        if let Some((name, _)) = millis.iter().find(|(_, value)| value.as_millis() == 0) {
            return Some(format!("{name} is under 1 ms; PostgreSQL would read 0 as no timeout"));
        }
        if let Some((name, _)) = millis.iter().find(|(_, value)| i32::try_from(value.as_millis()).is_err()) {
            return Some(format!("{name} is over PostgreSQL's limit of {} ms", i32::MAX));
        }
        for (name, value) in [("keepalive idle", self.keepalive_idle), ("keepalive interval", self.keepalive_interval)]
        {
            if value.subsec_nanos() != 0 || value.is_zero() || value.as_secs() > 32_767 {
                return Some(format!("tcp {name} is {value:?}; it must be whole seconds, 1..=32767"));
            }
        }
        if self.keepalive_count == 0 || self.keepalive_count > KEEPALIVE_COUNT_MAX {
            return Some(format!(
                "tcp keepalive count is {}; it must be 1..={KEEPALIVE_COUNT_MAX}",
                self.keepalive_count
            ));
        }
        None
    }
}
