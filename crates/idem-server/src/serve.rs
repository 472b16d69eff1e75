//! Running the app on a socket: [`serve`] for any listener, [`run`] for what `idem serve` does
//! (open the store named by a [`StoreSpec`], build the app from its parts with
//! [`AppBuilder`], bind, serve until shut down, close). This is the only place that picks
//! the system clock, OS-seeded ids and a TCP listener.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use idem_core::{Clock, MemoryStore, Policy, SystemClock};
use idem_http::{ConfigError, ConflictPolicy};
use idem_sqlite::{OpenError, SqliteOptions, SqliteStore};
use rand::Rng;

use crate::compose::{AppBuilder, PurgeSchedule};
use crate::ids::SeededIds;
use crate::ledger::{Ledger, LedgerError, MemoryLedger, SqliteLedger};

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits
/// for the requests in progress to finish (graceful shutdown).
///
/// Generic over the listener so that simulations can pass their own.
///
/// # Errors
/// What the listener reports (axum's server retries accept errors itself).
pub async fn serve<L>(
    listener: L,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Which store `idem serve` uses, written as a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `sqlite://PATH`: a SQLite file, durable, atomic mode.
    Sqlite(PathBuf),
    /// `memory://`: in memory, lost on exit, separate mode.
    Memory,
}

/// Why a store URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreSpecError {
    /// The scheme is neither `sqlite://` nor `memory://`.
    #[error("unknown store {given:?}; expected sqlite://PATH (e.g. sqlite://./idem.db) or memory://")]
    UnknownScheme {
        /// What was given.
        given: String,
    },
    /// `sqlite://` without a path.
    #[error("sqlite:// needs a file path, e.g. sqlite://./idem.db")]
    MissingPath,
    /// `memory://` followed by something.
    #[error("memory:// takes nothing after it, got {given:?}")]
    MemoryWithPath {
        /// What was given.
        given: String,
    },
}

impl FromStr for StoreSpec {
    type Err = StoreSpecError;

    fn from_str(given: &str) -> Result<StoreSpec, StoreSpecError> {
        if let Some(path) = given.strip_prefix("sqlite://") {
            return if path.is_empty() { Err(StoreSpecError::MissingPath) } else { Ok(StoreSpec::Sqlite(path.into())) };
        }
        if let Some(rest) = given.strip_prefix("memory://") {
            return if rest.is_empty() {
                Ok(StoreSpec::Memory)
            } else {
                Err(StoreSpecError::MemoryWithPath { given: given.to_owned() })
            };
        }
        Err(StoreSpecError::UnknownScheme { given: given.to_owned() })
    }
}

/// What `idem serve` was asked to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Which store.
    pub store: StoreSpec,
    /// Lease and retention.
    pub policy: Policy,
    /// 409 at once, or wait for the request in flight.
    pub conflict: ConflictPolicy,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The SQLite store could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
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

/// Opens the store, binds `config.listen`, and serves until `shutdown` completes; then
/// finishes the requests in progress and closes the store.
///
/// Limit: a request whose client disconnected during shutdown has been handed to a task
/// of its own by idem-http, and that task is not awaited here; stopping the runtime can
/// cut it short. Its claim then stays in flight until the lease lapses (a retry takes it
/// over), and in atomic mode its transaction rolls back, so nothing is committed twice.
///
/// Logs `listening on http://ADDR` (with the bound port, useful with port 0) once ready.
///
/// # Errors
/// [`ServeError`], worded for a person.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    match &config.store {
        StoreSpec::Sqlite(path) => {
            let store = Arc::new(SqliteStore::open(SqliteOptions::new(path)).await?);
            let ledger = SqliteLedger::open(Arc::clone(&store)).await?;
            tracing::info!(path = %path.display(), "store: SQLite (atomic mode)");
            let served = serve_ledger(ledger, &config, shutdown).await;
            store.close().await;
            served
        }
        StoreSpec::Memory => {
            let store = Arc::new(MemoryStore::default());
            tracing::warn!("store: memory (separate mode); everything is lost on exit");
            serve_ledger(MemoryLedger::new(store, MemoryLedger::ROWS_MAX_DEFAULT), &config, shutdown).await
        }
    }
}

async fn serve_ledger<L: Ledger>(
    ledger: L,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // The composition root gets the real parts here, and only here: the system clock, ids
    // seeded once from the OS (the request path never draws OS randomness), a TCP listener.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ids = Arc::new(SeededIds::new(rand::rng().random()));
    let app = AppBuilder::new(Arc::new(ledger), clock, ids)
        .policy(config.policy)
        .conflict(config.conflict)
        .purge(PurgeSchedule::DEFAULT)
        .build()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind { listen: config.listen, source })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind { listen: config.listen, source })?;
    tracing::info!(lease = ?config.policy.lease(), retention = ?config.policy.retention(), "listening on http://{bound}");
    let purging = tokio::spawn(app.purge_forever());
    let served = serve(listener, app.router(), shutdown).await.map_err(ServeError::Serve);
    purging.abort();
    tracing::info!("stopped");
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_or_say_what_is_expected() {
        // Goal: the two schemes parse; anything else is an error that names the accepted forms.
        assert_eq!("sqlite://./idem.db".parse(), Ok(StoreSpec::Sqlite("./idem.db".into())));
        assert_eq!("sqlite:///tmp/x.db".parse(), Ok(StoreSpec::Sqlite("/tmp/x.db".into())));
        assert_eq!("memory://".parse(), Ok(StoreSpec::Memory));
        assert_eq!("sqlite://".parse::<StoreSpec>(), Err(StoreSpecError::MissingPath));
        assert!(matches!("memory://x".parse::<StoreSpec>(), Err(StoreSpecError::MemoryWithPath { .. })));
        let unknown = "postgres://localhost/db".parse::<StoreSpec>().expect_err("not supported here");
        assert!(unknown.to_string().contains("sqlite://PATH"), "{unknown}");
    }
}
