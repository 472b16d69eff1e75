//! [`ServeError`]: why `idem serve` could not start or stopped with an error, worded for a
//! person. Separate so that the configuration checks ([`crate::server_config`]) and the run
//! ([`mod@crate::serve`]) name the same errors without depending on one another.

use std::net::SocketAddr;

use idem_http::ConfigError;
use idem_postgres::PlantedBug;
use idem_sqlite::OpenError;

use crate::ledger_error::LedgerError;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The SQLite store could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The PostgreSQL store could not be opened (bad options, unreachable, migration).
    #[error(transparent)]
    OpenPostgres(#[from] idem_postgres::OpenError),
    /// The Redis options were refused.
    #[error("invalid Redis store: {0}")]
    RedisOptions(#[from] idem_redis::OptionsError),
    /// Redis could not be reached.
    #[error(transparent)]
    OpenRedis(#[from] idem_redis::OpenError),
    /// A PostgreSQL database did not answer in time at start (a host that drops packets).
    #[error("PostgreSQL at {target} did not answer within {timeout:?} (is it running and reachable?)")]
    PostgresTimedOut {
        /// The database, without its password.
        target: String,
        /// How long `idem serve` waited.
        timeout: std::time::Duration,
    },
    /// A planted bug with a store other than PostgreSQL, whose SQL it is planted in.
    #[error(
        "--plant-bug {bug} plants a bug in the PostgreSQL store's SQL; {store} has none to plant (use --store postgres://…)"
    )]
    PlantedBugNeedsPostgres {
        /// The bug asked for.
        bug: PlantedBug,
        /// The store's scheme.
        store: &'static str,
    },
    /// A store-specific option given with a store it does not apply to.
    #[error("{option} applies only to {applies_to}; the store here is {store}")]
    OptionNeedsStore {
        /// The option (its flag).
        option: &'static str,
        /// The stores it applies to.
        applies_to: &'static str,
        /// The store's scheme.
        store: &'static str,
    },
    /// A Redis store without `--db`.
    #[error(
        "a Redis store keeps only idempotency records; name where payments and users live with --db sqlite://PATH or --db postgres://USER@HOST:PORT/DB"
    )]
    DbRequired,
    /// `--db` with a store that keeps payments and users itself.
    #[error(
        "--db is only for a Redis store; with {store} payments, users and idempotency records live in the same place"
    )]
    DbNotUsed {
        /// The store's scheme.
        store: &'static str,
    },
    /// The app's tables could not be created.
    #[error("cannot prepare the payments and users tables: {0}")]
    Ledger(#[from] LedgerError),
    /// The idempotency layer refused the configuration.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The address could not be bound.
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        /// The address.
        listen: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
}
