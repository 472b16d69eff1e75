//! Running the app on a socket: [`fn@crate::serve`] for any listener, [`run`] for what `idem serve` does
//! (open the store named by a [`StoreSpec`], build the app from its parts with
//! [`AppBuilder`], bind, serve until shut down, close). This is the only place that picks
//! the system clock, OS-seeded ids and a TCP listener.
//!
//! With an [`AdminToken`] (`idem serve --admin-token-file`), idem-admin's key
//! administration API is mounted at [`crate::compose::ADMIN_PATH`] on the same store, for
//! the operator who holds the token; without one, nothing is mounted there.

use std::future::Future;
use std::sync::Arc;

use idem_core::{Clock, KeyAdmin, MemoryStore, SystemClock};
use idem_postgres::PostgresStore;
use idem_redis::{RedisOptions, RedisStore};
use idem_sqlite::{ClaimSync, SqliteStore};
use rand::Rng;

use crate::compose::{ADMIN_PATH, App, AppBuilder, PurgeSchedule};
use crate::http_server::{Drained, serve_with_limits};
use crate::ids::SeededIds;
use crate::ledger::Ledger;
use crate::memory_ledger::MemoryLedger;
use crate::postgres_ledger::PostgresLedger;
use crate::separate_ledger::SeparateLedger;
use crate::server_config::check_config;
use crate::sqlite_ledger::SqliteLedger;
use crate::state::AppState;

pub use crate::admin_token::{ADMIN_TOKEN_FILE_BYTES_MAX, AdminToken, AdminTokenError};
pub use crate::serve_error::ServeError;
pub use crate::server_config::{ServerConfig, SqliteTuning};
pub use crate::store_spec::{DbSpec, PostgresUrl, StoreSpec, StoreSpecError};

/// Opens the store, binds `config.listen`, and serves until `shutdown` completes; then
/// drains within [`ServerLimits::drain_timeout`](crate::ServerLimits::drain_timeout) (no new connections, requests in progress
/// finish) and closes the store. A request still running at the deadline is cut: its claim
/// stays in flight until the lease lapses (a retry takes it over), and in atomic mode its
/// transaction rolls back, so nothing is committed twice and nothing acknowledged is lost.
///
/// Logs `listening on http://ADDR` (with the bound port, useful with port 0) once ready.
///
/// # Errors
/// [`ServeError`], worded for a person.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    check_config(&config)?;
    match &config.store {
        StoreSpec::Sqlite(path) => run_sqlite(path, &config, shutdown).await,
        StoreSpec::Postgres(database) => run_postgres(database, &config, shutdown).await,
        StoreSpec::Redis(url) => run_redis(url, &config, shutdown).await,
        StoreSpec::Memory => {
            let store = Arc::new(MemoryStore::default());
            tracing::warn!("store: memory (separate mode); everything is lost on exit");
            tracing::info!("mode: separate; {SEPARATE_GUARANTEES}; no G7: a restart forgets every record");
            serve_ledger(MemoryLedger::new(store, MemoryLedger::ROWS_MAX_DEFAULT), &config, shutdown).await
        }
    }
}

/// A `sqlite://` store: records, payments and users in one file (atomic mode).
async fn run_sqlite(
    path: &std::path::Path,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Atomic mode: a claim need not be synced on its own (its completion's commit syncs
    // it), so by default claims defer their sync and completions share group commits.
    let claim_sync = config.sqlite.claim_sync.unwrap_or(ClaimSync::Deferred);
    let store = Arc::new(SqliteStore::open(config.sqlite.options(path, claim_sync)).await?);
    let ledger = SqliteLedger::open(Arc::clone(&store)).await?;
    tracing::info!(path = %path.display(), vfs = ?config.sqlite.vfs, "store: SQLite (atomic mode)");
    let claims = match claim_sync {
        ClaimSync::Deferred => "claims synced with them",
        ClaimSync::EveryCommit => "claims synced on their own",
    };
    tracing::info!("mode: atomic; {ATOMIC_GUARANTEES} (SQLite: WAL, group commit, completions synced, {claims})");
    let served = serve_ledger(ledger, config, shutdown).await;
    store.close().await;
    served
}

/// A `postgres://` store: records, payments and users in one database and schema (atomic
/// mode), with the planted bug and the commit delay test knobs if asked for.
async fn run_postgres(
    database: &PostgresUrl,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = open_postgres(database).await?;
    let store = Arc::new(match config.planted_bug {
        Some(bug) => {
            tracing::warn!(
                bug = bug.name(),
                "PLANTED BUG: the store runs with this rule of its SQL wrong on purpose, for testing a test harness; never serve real data with it"
            );
            store.with_planted_bug(bug)
        }
        None => store,
    });
    let ledger = PostgresLedger::open(Arc::clone(&store)).await?.with_commit_delay(config.commit_delay);
    if !config.commit_delay.is_zero() {
        tracing::warn!(delay = ?config.commit_delay, "test knob: each atomic write waits this long holding its row lock, before COMMIT");
    }
    tracing::info!(database = %database.target(), "store: PostgreSQL (atomic mode)");
    tracing::info!("mode: atomic; {ATOMIC_GUARANTEES}, for every replica on this database and schema");
    let served = serve_ledger(ledger, config, shutdown).await;
    store.close().await;
    served
}

/// A `redis://` store: records in Redis, payments and users in the `--db` database
/// (separate mode).
async fn run_redis(
    url: &str,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let options = RedisOptions::new(url)?;
    let target = format!("{} (prefix {})", options.url_redacted(), options.key_prefix());
    let store = Arc::new(RedisStore::open(options).await?);
    let served = match config.db.as_ref().ok_or(ServeError::DbRequired)? {
        DbSpec::Sqlite(path) => {
            let options = config.sqlite.options(path, ClaimSync::EveryCommit);
            let rows_store = Arc::new(SqliteStore::open(options).await?);
            let rows = Arc::new(SqliteLedger::open(Arc::clone(&rows_store)).await?);
            tracing::info!(store = %target, db = %path.display(), "store: Redis, payments and users in SQLite (separate mode)");
            tracing::info!("mode: separate; {SEPARATE_GUARANTEES}; {REDIS_DURABILITY}");
            let served = serve_ledger(SeparateLedger::new(rows, Arc::clone(&store)), config, shutdown).await;
            rows_store.close().await;
            served
        }
        DbSpec::Postgres(database) => {
            let rows_store = Arc::new(open_postgres(database).await?);
            let rows = Arc::new(PostgresLedger::open(Arc::clone(&rows_store)).await?);
            tracing::info!(store = %target, db = %database.target(), "store: Redis, payments and users in PostgreSQL (separate mode)");
            tracing::info!("mode: separate; {SEPARATE_GUARANTEES}; {REDIS_DURABILITY}");
            let served = serve_ledger(SeparateLedger::new(rows, Arc::clone(&store)), config, shutdown).await;
            rows_store.close().await;
            served
        }
    };
    store.close();
    served
}

/// How long `idem serve` waits at start for PostgreSQL to answer and idem's migrations to
/// run (a replica starting beside another waits for its migration lock).
const POSTGRES_OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn open_postgres(database: &PostgresUrl) -> Result<PostgresStore, ServeError> {
    match tokio::time::timeout(POSTGRES_OPEN_TIMEOUT, PostgresStore::open(database.options())).await {
        Ok(opened) => Ok(opened?),
        Err(_) => Err(ServeError::PostgresTimedOut { target: database.target(), timeout: POSTGRES_OPEN_TIMEOUT }),
    }
}

/// What `idem serve` says holds in atomic mode (docs/guarantees.md).
const ATOMIC_GUARANTEES: &str = "guarantees G1-G8 hold: the payment row and the idempotency completion commit in one transaction, so a handler whose lease lapsed writes nothing";

/// What `idem serve` says holds in separate mode (docs/guarantees.md).
const SEPARATE_GUARANTEES: &str = "guarantees G2-G6 and G8 hold; G1 (at most once) holds only while each holder keeps its lease and does not crash after its side effect (a lapsed lease or a crash between the payment and the completion can run it twice)";

/// What `idem serve` says about G7 with Redis (docs/guarantees.md).
const REDIS_DURABILITY: &str = "G7 only with Redis persistence (appendonly yes, appendfsync always); without it a Redis restart forgets every record and retries of payments already made execute again";

/// The app for `ledger` with the real parts: the system clock, ids seeded once from the
/// OS, and this process's Prometheus recorder if it can be installed (its handle is
/// returned for upkeep). Logs the settings a person starting the server wants to see.
fn build_app<L>(
    ledger: L,
    config: &ServerConfig,
) -> Result<(App<L>, Option<metrics_exporter_prometheus::PrometheusHandle>), ServeError>
where
    L: Ledger,
    L::Store: KeyAdmin,
{
    // The composition root gets the real parts here, and only here: the system clock, ids
    // seeded once from the OS (the request path never draws OS randomness), a TCP listener.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ids = Arc::new(SeededIds::new(rand::rng().random()));
    let mut state = AppState::new(Arc::new(ledger), clock, ids);
    // idem-http reports through the `metrics` facade; a Prometheus recorder for this process
    // puts those numbers on `/metrics` beside the app's own.
    let prometheus = match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(handle) => {
            state = state.with_prometheus(handle.clone());
            Some(handle)
        }
        Err(error) => {
            tracing::warn!(%error, "no Prometheus recorder: /metrics shows the app's counters only");
            None
        }
    };
    let mut builder = AppBuilder::from_state(state);
    if let Some(fairness) = config.fairness {
        builder = builder.fairness(fairness);
    }
    if let Some(ceiling) = config.execution_max {
        builder = builder.execution_max(ceiling);
    }
    if let Some(token) = config.admin_token.clone() {
        builder = builder.admin(move |request: &http::request::Parts| token.admit(request));
    }
    let app = builder
        .request_limits(config.request_limits)
        .policy(config.policy)
        .conflict(config.conflict)
        .purge(PurgeSchedule::DEFAULT)
        .handler_delay(config.handler_delay)
        .build()?;
    if !config.handler_delay.is_zero() {
        tracing::warn!(delay = ?config.handler_delay, "test knob: the payment handler waits this long inside its claim");
    }
    tracing::info!(
        tombstone = ?config.policy.tombstone(),
        execution_max = ?config.execution_max,
        "key lifecycle: tombstones and execution ceiling (None: off)"
    );
    if config.admin_token.is_some() {
        tracing::info!(
            "admin API mounted at {ADMIN_PATH} (GET {ADMIN_PATH}/keys, GET and DELETE {ADMIN_PATH}/keys/{{caller}}/{{key}}), for the bearer token in --admin-token-file"
        );
    }
    Ok((app, prometheus))
}

/// Serves the app for `ledger` on `config.listen` until `shutdown`, then drains (see [`run`]).
async fn serve_ledger<L>(
    ledger: L,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    L: Ledger,
    L::Store: KeyAdmin,
{
    let (app, prometheus) = build_app(ledger, config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind { listen: config.listen, source })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind { listen: config.listen, source })?;
    tracing::info!(lease = ?config.policy.lease(), retention = ?config.policy.retention(), "listening on http://{bound}");
    tracing::info!(limits = ?config.server_limits, requests = ?config.request_limits, "limits");
    let purging = tokio::spawn(app.purge_forever());
    // The recorder's histograms need their upkeep when no exporter listener runs it.
    let upkeep = prometheus.map(|handle| {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        })
    });
    let draining_from = tokio::time::Instant::now();
    let served = serve_with_limits(listener, app.router(), config.server_limits, shutdown).await;
    // Work the layer handed to a task of its own when its client went away (it completes
    // or releases its record) gets what is left of the same drain deadline.
    let tracker = app.state().task_tracker();
    tracker.close();
    let left = config.server_limits.drain_timeout.saturating_sub(draining_from.elapsed());
    if tokio::time::timeout(left, tracker.wait()).await.is_err() {
        tracing::warn!(
            tasks = tracker.len(),
            "drain deadline passed with keyed work still running; its claims lapse with their leases"
        );
    }
    purging.abort();
    if let Some(upkeep) = upkeep {
        upkeep.abort();
    }
    match served {
        Ok(Drained::Clean) => tracing::info!("stopped"),
        Ok(Drained::Cut(connections)) => tracing::warn!(connections, "stopped; the drain deadline cut requests short"),
        Err(_) => {}
    }
    served.map(drop).map_err(ServeError::Serve)
}
