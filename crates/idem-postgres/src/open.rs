//! Opening a store: the driver's connect options with idem's session settings
//! (`session.rs`: PostgreSQL's own, sent in the connection's startup packet as `-c
//! name=value`, so they hold on the server's side of the connection, where the locks are),
//! attempts tried again while PostgreSQL is still starting, the schema prepared (`schema.rs`),
//! and the pool.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use tokio::time::Instant;

use crate::error::OpenError;
use crate::inner::Inner;
use crate::options::PostgresOptions;
use crate::schema;
use crate::statements::Statements;
use crate::store::PostgresStore;

impl PostgresStore {
    /// Connects to `options`' database, creates the schema if missing, runs idem's
    /// migrations in it (on one connection whose `search_path` is the schema, under
    /// sqlx's migration lock, so replicas starting together migrate once), checks the
    /// usage shards, and opens the pool.
    ///
    /// # Errors
    /// [`OpenError`], whose message names the database and the reason (for an unreachable
    /// server, how to start one).
    pub async fn open(options: PostgresOptions) -> Result<PostgresStore, OpenError> {
        let connect = options.connect_options()?;
        let target = target(&connect);
        let attempt = || async {
            let mut setup = PgConnection::connect_with(&connect)
                .await
                .map_err(|source| OpenError::Connect { target: target.clone(), source })?;
            let prepared = schema::prepare(&mut setup, &options, &target).await;
            // Closing only says goodbye on a connection that is dropped anyway.
            let _ = setup.close().await;
            prepared?;
            PgPoolOptions::new()
                .max_connections(options.connections_max)
                .min_connections(0)
                .acquire_timeout(options.acquire_timeout)
                .test_before_acquire(true)
                .connect_with(connect.clone())
                .await
                .map_err(|source| OpenError::Connect { target: target.clone(), source })
        };
        let pool = retrying(options.session.open, &target, attempt).await?;
        Ok(PostgresStore::on(pool, options))
    }

    /// Opens the store on the service's own pool: creates the schema if missing and runs
    /// idem's migrations in it, as [`PostgresStore::open`] does, then shares `pool` for
    /// every operation. The service's queries and idem's then draw from one pool, and
    /// [`PostgresStore::begin_write`] transactions are the service's connections.
    ///
    /// From `options` this takes the schema, the size limits, the retries and the time
    /// source; the URL and the pool settings (`connections_max`, `acquire_timeout`,
    /// `statement_timeout`, and the session settings that bound a dead holder) are the
    /// pool's business and are not used: build the pool from
    /// [`PostgresOptions::connect_options`] to give its connections idem's settings. A
    /// schema that is locked or a server that is starting is tried again within
    /// [`PostgresOptions::open_timeout`], as in `open`. The migrations run
    /// on one connection taken from `pool` and detached from it (the pool opens a
    /// replacement), because they set that connection's `search_path`; the connections the
    /// pool keeps are never changed. idem's migrations are noted in [`crate::MIGRATIONS_TABLE`],
    /// not sqlx's default table, so the service's own `sqlx::migrate!` on the same pool and
    /// schema keeps its own list. [`PostgresStore::close`] closes `pool`.
    ///
    /// ```no_run
    /// use idem_postgres::sqlx::postgres::PgPoolOptions;
    /// use idem_postgres::{PostgresOptions, PostgresStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let url = "postgres://postgres@127.0.0.1:5432/test";
    /// let pool = PgPoolOptions::new().max_connections(20).connect(url).await?;
    /// let store = PostgresStore::with_pool(pool.clone(), PostgresOptions::new(url).schema("idem")).await?;
    /// assert_eq!(store.schema(), "idem");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`OpenError::InvalidOptions`] for options that cannot work (a schema name that is
    /// not a plain identifier, zero limits), [`OpenError::Connect`] when `pool` gives no
    /// connection, and [`OpenError::NewerSchema`] or [`OpenError::Migrate`] as for `open`.
    pub async fn with_pool(pool: PgPool, options: PostgresOptions) -> Result<PostgresStore, OpenError> {
        let target = target(&pool.connect_options());
        if let Some(detail) = options.problem() {
            return Err(OpenError::InvalidOptions { target, detail });
        }
        let attempt = || async {
            let setup = pool.acquire().await.map_err(|source| OpenError::Connect { target: target.clone(), source });
            let mut setup = setup?.detach();
            let prepared = schema::prepare(&mut setup, &options, &target).await;
            // Closing only says goodbye on a connection that is dropped anyway.
            let _ = setup.close().await;
            prepared
        };
        retrying(options.session.open, &target, attempt).await?;
        Ok(PostgresStore::on(pool, options))
    }

    /// The store on `pool`, whose database is prepared for `options`.
    fn on(pool: PgPool, options: PostgresOptions) -> PostgresStore {
        let inner = Inner {
            limits: options.limits,
            time: options.time,
            retries_max: options.retries_max,
            sql: Statements::new(&options.schema),
            schema: options.schema,
            self_check: true,
        };
        PostgresStore { pool, inner: Arc::new(inner) }
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
    /// keepalives and user timeout). [`PostgresStore::open`] opens its pool with
    /// them; a service that builds its own pool for [`PostgresStore::with_pool`]
    /// builds it with them to get the same bounds on a dead holder.
    ///
    /// # Errors
    /// [`OpenError::InvalidOptions`] for a URL that does not parse or options that cannot work.
    pub fn connect_options(&self) -> Result<PgConnectOptions, OpenError> {
        let connect = PgConnectOptions::from_str(&self.url).map_err(|error| OpenError::InvalidOptions {
            target: redacted(&self.url),
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

/// `url` without its password, for messages.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
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
    fn backoff_is_bounded() {
        // Goal: open retries wait 50 ms to 2 s, never more.
        for attempt in 0..40 {
            let wait = open_backoff(attempt);
            assert!(wait >= Duration::from_millis(50) && wait <= Duration::from_secs(2), "{attempt}: {wait:?}");
        }
    }

    #[test]
    fn urls_lose_their_password() {
        // Goal: messages never carry credentials.
        assert_eq!(redacted("postgres://u:secret@h:5432/d"), "postgres://…@h:5432/d");
        assert_eq!(redacted("postgres://h/d"), "postgres://h/d");
    }
}
