//! [`ServerConfig`]: what `idem serve` was asked to run, and the checks that refuse a
//! configuration whose parts do not go together (a `--db` without Redis, an option for
//! another store) before anything is opened. Separate from running it
//! ([`mod@crate::serve`]), which trusts a configuration these checks passed.

use std::net::SocketAddr;

use idem_core::Policy;
use idem_http::ConflictPolicy;
use idem_postgres::PlantedBug;
use idem_sqlite::{ClaimSync, SqliteOptions};

use crate::admin_token::AdminToken;
use crate::bodies::RequestLimits;
use crate::fairness::FairnessLimits;
use crate::http_server::ServerLimits;
use crate::serve_error::ServeError;
use crate::store_spec::{DbSpec, StoreSpec};

/// What `idem serve` was asked to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Which store holds the idempotency records.
    pub store: StoreSpec,
    /// Where payments and users live when the store cannot hold them: required with a Redis
    /// store, refused with the others (they keep both in one database, or in memory).
    pub db: Option<DbSpec>,
    /// Lease, retention and tombstones (SPEC "Key lifecycle": [`Policy::with_tombstone`]).
    pub policy: Policy,
    /// The execution ceiling (SPEC "Key lifecycle"): renewal stops once a handler has run
    /// this long, so a hung handler frees its key within the ceiling plus one lease. From
    /// one renewal interval (a third of the lease) to 24 h, checked when the app is built
    /// ([`ConfigError::ExecutionMax`](idem_http::ConfigError::ExecutionMax)); `None` renews for as long as the handler runs.
    pub execution_max: Option<std::time::Duration>,
    /// The operator's bearer token for the key administration API, which is mounted at
    /// [`ADMIN_PATH`](crate::compose::ADMIN_PATH) only when this is set (`None`: nothing there, an ordinary 404).
    pub admin_token: Option<AdminToken>,
    /// 409 at once, or wait for the request in flight.
    pub conflict: ConflictPolicy,
    /// Connections, header-read timeout, drain deadline.
    pub server_limits: ServerLimits,
    /// Body-read timeout and buffered body bytes.
    pub request_limits: RequestLimits,
    /// How fast each principal may create new keys; `None` for no limit.
    pub fairness: Option<FairnessLimits>,
    /// **Test knob**: how long the payment handler waits inside its claim before its write
    /// ([`crate::AppState::with_handler_delay`]); zero in production.
    pub handler_delay: std::time::Duration,
    /// **For testing a test harness only**: a rule of the PostgreSQL store's SQL planted
    /// wrong ([`PostgresStore::with_planted_bug`](idem_postgres::PostgresStore::with_planted_bug)); only with a `postgres://` store, and
    /// `None` in production.
    pub planted_bug: Option<PlantedBug>,
    /// **Test knob**: how long an atomic-mode write on PostgreSQL waits after its
    /// completion locked the record's row and before `COMMIT`
    /// ([`PostgresLedger::with_commit_delay`](crate::PostgresLedger::with_commit_delay)), so a harness can freeze or cut off a holder
    /// inside its transaction; only with a `postgres://` store, zero in production.
    pub commit_delay: std::time::Duration,
    /// SQLite files (the store, or `--db`): how claims are synced and which VFS opens them.
    pub sqlite: SqliteTuning,
}

/// How `idem serve` opens SQLite files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqliteTuning {
    /// For a `sqlite://` store (atomic mode): whether a claim is synced on its own
    /// ([`ClaimSync::EveryCommit`]) or with its completion ([`ClaimSync::Deferred`], the
    /// default when `None`: in atomic mode a lost claim loses nothing it guarded). A `--db`
    /// file beside a Redis store always syncs every commit.
    pub claim_sync: Option<ClaimSync>,
    /// **Test knob**: the SQLite VFS every connection opens through, registered by the
    /// caller beforehand (`idem serve --sqlite-power-loss-journal`: idem-power-loss's
    /// journal, which lets a harness drop the unsynced writes after a crash); `None`, SQLite's
    /// default.
    pub vfs: Option<String>,
}

impl SqliteTuning {
    /// The options to open the SQLite file at `path` with, claims synced as `claim_sync` says.
    pub(crate) fn options(&self, path: &std::path::Path, claim_sync: ClaimSync) -> SqliteOptions {
        let options = SqliteOptions::new(path).claim_sync(claim_sync);
        match &self.vfs {
            Some(vfs) => options.vfs(vfs.clone()),
            None => options,
        }
    }
}

/// Refuses a configuration whose parts do not go together, naming the option at fault:
/// `--db` only with (and always with) a Redis store, store options only with their store,
/// a planted bug only in PostgreSQL's SQL.
pub(crate) fn check_config(config: &ServerConfig) -> Result<(), ServeError> {
    match (&config.store, &config.db) {
        (StoreSpec::Redis(_), None) => return Err(ServeError::DbRequired),
        (StoreSpec::Sqlite(_), Some(_)) => return Err(ServeError::DbNotUsed { store: "sqlite://" }),
        (StoreSpec::Postgres(_), Some(_)) => return Err(ServeError::DbNotUsed { store: "postgres://" }),
        (StoreSpec::Memory, Some(_)) => return Err(ServeError::DbNotUsed { store: "memory://" }),
        _ => {}
    }
    check_store_options(config)?;
    if let Some(bug) = config.planted_bug {
        let store = match config.store {
            StoreSpec::Postgres(_) => None,
            StoreSpec::Sqlite(_) => Some("sqlite://"),
            StoreSpec::Redis(_) => Some("redis:// (payments in --db, records in Redis)"),
            StoreSpec::Memory => Some("memory://"),
        };
        if let Some(store) = store {
            return Err(ServeError::PlantedBugNeedsPostgres { bug, store });
        }
    }
    Ok(())
}

fn scheme(store: &StoreSpec) -> &'static str {
    match store {
        StoreSpec::Sqlite(_) => "sqlite://",
        StoreSpec::Memory => "memory://",
        StoreSpec::Postgres(_) => "postgres://",
        StoreSpec::Redis(_) => "redis://",
    }
}

/// Refuses options that do nothing with this store, rather than ignoring them.
fn check_store_options(config: &ServerConfig) -> Result<(), ServeError> {
    let store = scheme(&config.store);
    let needs = |option, applies_to| Err(ServeError::OptionNeedsStore { option, applies_to, store });
    let sqlite_db = matches!(config.db, Some(DbSpec::Sqlite(_)));
    if !config.commit_delay.is_zero() && !matches!(config.store, StoreSpec::Postgres(_)) {
        return needs("--commit-delay", "a postgres:// store");
    }
    if config.sqlite.claim_sync.is_some() && !matches!(config.store, StoreSpec::Sqlite(_)) {
        return needs("--sqlite-claim-sync", "a sqlite:// store (a --db file always syncs every commit)");
    }
    if config.sqlite.vfs.is_some() && !matches!(config.store, StoreSpec::Sqlite(_)) && !sqlite_db {
        return needs("--sqlite-power-loss-journal", "a sqlite:// store or --db sqlite://");
    }
    Ok(())
}
