//! The settings every connection of the store's pool is opened with, so a holder whose
//! host vanished in the middle of a transaction holds nothing for long (docs/guarantees.md,
//! "A dead holder holds nothing"), and opening with retries while PostgreSQL is still
//! starting.
//!
//! The settings are PostgreSQL's own, sent in the connection's startup packet (`options`,
//! as `-c name=value`), so they hold on the server's side of the connection, where the
//! locks are: the server ends a session that sat idle inside a transaction, or whose peer
//! stopped answering, and its locks go with it. sqlx has no client-side TCP keepalive
//! option; the server's keepalives (`tcp_keepalives_*`, `tcp_user_timeout`) are the ones
//! that free locks, and the client side is bounded by `statement_timeout` and the pool's
//! liveness check.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use tokio::time::Instant;

use crate::error::{OpenError, sqlstate};
use crate::options::PostgresOptions;

/// The session settings of [`PostgresOptions`] besides `statement_timeout` (see the
/// builder methods on [`PostgresOptions`] for each, and the crate docs, "Dead holders").
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

/// The startup settings of every connection `options` open: name and value with its unit.
pub(crate) fn settings(options: &PostgresOptions) -> Vec<(&'static str, String)> {
    let session = &options.session;
    let ms = |value: Duration| format!("{}ms", value.as_millis());
    vec![
        ("statement_timeout", ms(options.statement_timeout)),
        ("idle_in_transaction_session_timeout", ms(session.idle_in_transaction)),
        ("lock_timeout", ms(session.lock)),
        ("tcp_keepalives_idle", format!("{}s", session.keepalive_idle.as_secs())),
        ("tcp_keepalives_interval", format!("{}s", session.keepalive_interval.as_secs())),
        ("tcp_keepalives_count", session.keepalive_count.to_string()),
        ("tcp_user_timeout", ms(session.user_timeout)),
    ]
}

impl PostgresOptions {
    /// The driver's connect options for these options: the URL, `application_name` `idem`
    /// and every session setting (statement, idle-in-transaction and lock timeouts, TCP
    /// keepalives and user timeout). [`crate::PostgresStore::open`] opens its pool with
    /// them; a service that builds its own pool for [`crate::PostgresStore::with_pool`]
    /// builds it with them to get the same bounds on a dead holder.
    ///
    /// # Errors
    /// [`OpenError::InvalidOptions`] for a URL that does not parse or options that cannot work.
    pub fn connect_options(&self) -> Result<PgConnectOptions, OpenError> {
        let connect = PgConnectOptions::from_str(&self.url).map_err(|error| OpenError::InvalidOptions {
            target: crate::store::redacted(&self.url),
            detail: format!("the URL does not parse: {error}"),
        })?;
        if let Some(detail) = self.problem() {
            return Err(OpenError::InvalidOptions { target: target(&connect), detail });
        }
        Ok(connect.application_name("idem").options(settings(self)))
    }
}

/// `host:port/database`, for messages.
pub(crate) fn target(connect: &PgConnectOptions) -> String {
    format!("{}:{}/{}", connect.get_host(), connect.get_port(), connect.get_database().unwrap_or(""))
}

/// Whether opening may succeed if tried again soon: the server refused or dropped the
/// connection, is starting up, shutting down or in recovery, has no free connection slot,
/// or a schema statement could not take its lock in time. Authentication, a missing
/// database, permissions and malformed options are final.
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    if let Some(code) = sqlstate(error) {
        // 08: connection exception; 57P01-57P03: admin or crash shutdown, cannot connect
        // now (starting up, shutting down, recovery); 53300: too many connections; 55P03:
        // lock not available (`lock_timeout`); 57014: a statement cancelled by its timeout.
        return code.starts_with("08")
            || matches!(code.as_str(), "57P01" | "57P02" | "57P03" | "53300" | "55P03" | "57014");
    }
    matches!(error, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
}

/// Backoff between open attempts: 100 ms doubling to 2 s, jittered.
fn open_backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(100).saturating_mul(1 << attempt.min(5)).min(Duration::from_secs(2));
    ceiling.mul_f64(rand::random_range(0.5..=1.0))
}

/// Runs `attempt` until it succeeds, fails for good, or `timeout` has passed (each attempt
/// is cut at the deadline too); transient failures ([`OpenError::is_transient`]) are tried
/// again after a backoff. The last failure comes back wrapped in [`OpenError::NotReady`].
pub(crate) async fn retrying<T, F>(
    timeout: Duration,
    target: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T, OpenError>
where
    F: Future<Output = Result<T, OpenError>>,
{
    let started = Instant::now();
    let deadline = started + timeout;
    let mut attempts = 0;
    let mut previous = None;
    loop {
        attempts += 1;
        let error = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) if error.is_transient() => error,
            Ok(Err(error)) => return Err(error),
            // Cut at the deadline: the last failure that came back says more than the cut,
            // if there was one.
            Err(_) => OpenError::TimedOut { target: target.to_owned(), timeout },
        };
        let wait = open_backoff(attempts - 1);
        if Instant::now() + wait >= deadline || matches!(error, OpenError::TimedOut { .. }) {
            let last = match (error, previous) {
                (OpenError::TimedOut { .. }, Some(previous)) => previous,
                (error, _) => error,
            };
            return Err(OpenError::NotReady { waited: started.elapsed(), attempts, last: Box::new(last) });
        }
        tracing::info!(%error, attempts, "PostgreSQL is not ready; opening again");
        previous = Some(error);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_sent_with_its_unit() {
        // Goal: the defaults reach PostgreSQL as the documented values, in units it parses.
        let settings = settings(&PostgresOptions::new("postgres://h/d"));
        let expected = [
            ("statement_timeout", "5000ms"),
            ("idle_in_transaction_session_timeout", "5000ms"),
            ("lock_timeout", "2000ms"),
            ("tcp_keepalives_idle", "5s"),
            ("tcp_keepalives_interval", "1s"),
            ("tcp_keepalives_count", "5"),
            ("tcp_user_timeout", "10000ms"),
        ];
        let settings: Vec<(&str, &str)> = settings.iter().map(|(name, value)| (*name, value.as_str())).collect();
        assert_eq!(settings, expected);
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

    #[test]
    fn backoff_is_bounded() {
        // Goal: open retries wait 50 ms to 2 s, never more.
        for attempt in 0..40 {
            let wait = open_backoff(attempt);
            assert!(wait >= Duration::from_millis(50) && wait <= Duration::from_secs(2), "{attempt}: {wait:?}");
        }
    }
}
