//! Running the app on a socket: [`fn@crate::serve`] for any listener, [`run`] for what `idem serve` does
//! (open the store named by a [`StoreSpec`], build the app from its parts with
//! [`AppBuilder`], bind, serve until shut down, close). This is the only place that picks
//! the system clock, OS-seeded ids and a TCP listener.
//!
//! With an [`AdminToken`] (`idem serve --admin-token-file`), idem-admin's key
//! administration API is mounted at [`crate::compose::ADMIN_PATH`] on the same store, for
//! the operator who holds the token; without one, nothing is mounted there.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use idem_core::{Clock, KeyAdmin, MemoryStore, Policy, SystemClock};
use idem_http::{ConfigError, ConflictPolicy, Problem};
use idem_postgres::{PlantedBug, PostgresOptions, PostgresStore};
use idem_redis::{RedisOptions, RedisStore};
use idem_sqlite::{ClaimSync, OpenError, SqliteOptions, SqliteStore};
use rand::Rng;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::app::RequestLimits;
use crate::compose::{ADMIN_PATH, AppBuilder, PurgeSchedule};
use crate::fairness::FairnessLimits;
use crate::http_server::{Drained, ServerLimits, serve_with_limits};
use crate::ids::SeededIds;
use crate::ledger::{Ledger, LedgerError, MemoryLedger, SqliteLedger};
use crate::postgres_ledger::PostgresLedger;
use crate::separate_ledger::SeparateLedger;

/// A PostgreSQL database as `idem serve` names it: `postgres://…` or `postgresql://…`, with
/// an optional `schema=NAME` query parameter (idem's own; taken out of the URL before the
/// driver sees it). Without it, the schema is `public`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    /// The URL for the driver, without `schema=`.
    pub url: String,
    /// The schema for idem's tables and the app's, if one was named.
    pub schema: Option<String>,
}

impl PostgresUrl {
    fn parse(given: &str) -> Result<PostgresUrl, StoreSpecError> {
        let (base, query) = given.split_once('?').map_or((given, None), |(base, query)| (base, Some(query)));
        let mut schema = None;
        let mut kept = Vec::new();
        for pair in query.into_iter().flat_map(|query| query.split('&')).filter(|pair| !pair.is_empty()) {
            match pair.strip_prefix("schema=") {
                Some(name) => schema = Some(name.to_owned()),
                None => kept.push(pair),
            }
        }
        let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        sqlx::postgres::PgConnectOptions::from_str(&url)
            .map_err(|error| StoreSpecError::BadUrl { given: redact(given), reason: error.to_string() })?;
        Ok(PostgresUrl { url, schema })
    }

    /// The options to open the store with.
    #[must_use]
    pub fn options(&self) -> PostgresOptions {
        let options = PostgresOptions::new(self.url.clone());
        match &self.schema {
            Some(schema) => options.schema(schema.clone()),
            None => options,
        }
    }

    /// `host:port/database`, schema `NAME`: the database without its password, for logs.
    #[must_use]
    pub fn target(&self) -> String {
        let schema = self.schema.as_deref().unwrap_or("public");
        match sqlx::postgres::PgConnectOptions::from_str(&self.url) {
            Ok(connect) => format!(
                "{}:{}/{} (schema {schema})",
                connect.get_host(),
                connect.get_port(),
                connect.get_database().unwrap_or("")
            ),
            Err(_) => format!("{} (schema {schema})", redact(&self.url)),
        }
    }
}

/// `scheme://user:password@rest` as `scheme://user:***@rest`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Which store `idem serve` keeps idempotency records in, written as a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `sqlite://PATH`: a SQLite file, durable, atomic mode (payments and users in it too).
    Sqlite(PathBuf),
    /// `memory://`: in memory, lost on exit, separate mode.
    Memory,
    /// `postgres://…` or `postgresql://…` (optionally `?schema=NAME`): durable, shared by
    /// any number of replicas, atomic mode (payments and users in the same schema).
    Postgres(PostgresUrl),
    /// `redis://…` or `rediss://…` (optionally `?prefix=NAME`): shared by replicas, separate
    /// mode; payments and users live in the `--db` database ([`DbSpec`]).
    Redis(String),
}

/// Where payments and users live when the idempotency store cannot hold them (`--db`, with
/// a Redis store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbSpec {
    /// `sqlite://PATH`: one process's file.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`, optionally `?schema=NAME`: shared by replicas.
    Postgres(PostgresUrl),
}

/// The accepted store URLs, for error messages.
const STORE_FORMS: &str = "sqlite://PATH (e.g. sqlite://./idem.db), memory://, \
postgres://USER@HOST:PORT/DB[?schema=NAME] (or postgresql://), or redis://HOST:PORT[/N][?prefix=NAME] (or rediss://)";

/// Why a store URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreSpecError {
    /// The scheme is not one of the accepted ones.
    #[error("unknown store {given:?}; accepted schemes: {STORE_FORMS}")]
    UnknownScheme {
        /// What was given.
        given: String,
    },
    /// `--db` names something other than SQLite or PostgreSQL.
    #[error(
        "unknown database {given:?} for --db; accepted: sqlite://PATH or postgres://USER@HOST:PORT/DB[?schema=NAME]"
    )]
    UnknownDb {
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
    /// A PostgreSQL or Redis URL that does not parse.
    #[error("malformed store URL {given}: {reason}")]
    BadUrl {
        /// What was given, without its password.
        given: String,
        /// What the parser said.
        reason: String,
    },
}

fn sqlite_path(path: &str) -> Result<PathBuf, StoreSpecError> {
    if path.is_empty() { Err(StoreSpecError::MissingPath) } else { Ok(path.into()) }
}

fn is_postgres(given: &str) -> bool {
    given.starts_with("postgres://") || given.starts_with("postgresql://")
}

impl FromStr for StoreSpec {
    type Err = StoreSpecError;

    fn from_str(given: &str) -> Result<StoreSpec, StoreSpecError> {
        if let Some(path) = given.strip_prefix("sqlite://") {
            return sqlite_path(path).map(StoreSpec::Sqlite);
        }
        if let Some(rest) = given.strip_prefix("memory://") {
            return if rest.is_empty() {
                Ok(StoreSpec::Memory)
            } else {
                Err(StoreSpecError::MemoryWithPath { given: given.to_owned() })
            };
        }
        if is_postgres(given) {
            return PostgresUrl::parse(given).map(StoreSpec::Postgres);
        }
        if given.starts_with("redis://") || given.starts_with("rediss://") {
            RedisOptions::new(given)
                .map_err(|error| StoreSpecError::BadUrl { given: redact(given), reason: error.to_string() })?;
            return Ok(StoreSpec::Redis(given.to_owned()));
        }
        Err(StoreSpecError::UnknownScheme { given: given.to_owned() })
    }
}

impl FromStr for DbSpec {
    type Err = StoreSpecError;

    fn from_str(given: &str) -> Result<DbSpec, StoreSpecError> {
        if let Some(path) = given.strip_prefix("sqlite://") {
            return sqlite_path(path).map(DbSpec::Sqlite);
        }
        if is_postgres(given) {
            return PostgresUrl::parse(given).map(DbSpec::Postgres);
        }
        Err(StoreSpecError::UnknownDb { given: given.to_owned() })
    }
}

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
    /// ([`ConfigError::ExecutionMax`]); `None` renews for as long as the handler runs.
    pub execution_max: Option<std::time::Duration>,
    /// The operator's bearer token for the key administration API, which is mounted at
    /// [`ADMIN_PATH`] only when this is set (`None`: nothing there, an ordinary 404).
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
    /// wrong ([`PostgresStore::with_planted_bug`]); only with a `postgres://` store, and
    /// `None` in production.
    pub planted_bug: Option<PlantedBug>,
    /// **Test knob**: how long an atomic-mode write on PostgreSQL waits after its
    /// completion locked the record's row and before `COMMIT`
    /// ([`PostgresLedger::with_commit_delay`]), so a harness can freeze or cut off a holder
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
    fn options(&self, path: &std::path::Path, claim_sync: ClaimSync) -> SqliteOptions {
        let options = SqliteOptions::new(path).claim_sync(claim_sync);
        match &self.vfs {
            Some(vfs) => options.vfs(vfs.clone()),
            None => options,
        }
    }
}

/// The most bytes an admin token file may hold: a token is a line, not a document.
pub const ADMIN_TOKEN_FILE_BYTES_MAX: usize = 4096;

/// The operator's bearer token for the admin API (`idem serve --admin-token-file`). Only
/// its SHA-256 digest is kept, and `Debug` shows neither, so the token never reaches a log.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Why an admin token file was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// The file could not be opened or read.
    #[error("cannot read the admin token file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is longer than [`ADMIN_TOKEN_FILE_BYTES_MAX`].
    #[error("the admin token file {path} is over {ADMIN_TOKEN_FILE_BYTES_MAX} bytes; it must hold one token")]
    TooLong {
        /// The file.
        path: PathBuf,
    },
    /// Nothing but whitespace in the file.
    #[error("the admin token file {path} is empty; put the operator's token in it")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A token no client could send as `Authorization: Bearer <token>`.
    #[error(
        "the admin token in {path} must be one word of visible ASCII (no spaces or control characters), to be sent as `Authorization: Bearer <token>`"
    )]
    NotSendable {
        /// The file.
        path: PathBuf,
    },
}

impl AdminToken {
    /// The token in the file at `path`: its content without surrounding whitespace (a
    /// trailing newline is common), at most [`ADMIN_TOKEN_FILE_BYTES_MAX`] bytes of file,
    /// visible ASCII only.
    ///
    /// # Errors
    /// [`AdminTokenError`], naming the file and never the token.
    pub fn read(path: &std::path::Path) -> Result<AdminToken, AdminTokenError> {
        use std::io::Read as _;
        let unreadable = |source| AdminTokenError::Unreadable { path: path.to_owned(), source };
        let file = std::fs::File::open(path).map_err(unreadable)?;
        // One byte past the bound tells a file at the bound from a longer one, without
        // reading a large file whole.
        let mut content = Vec::with_capacity(ADMIN_TOKEN_FILE_BYTES_MAX + 1);
        file.take(ADMIN_TOKEN_FILE_BYTES_MAX as u64 + 1).read_to_end(&mut content).map_err(unreadable)?;
        if content.len() > ADMIN_TOKEN_FILE_BYTES_MAX {
            return Err(AdminTokenError::TooLong { path: path.to_owned() });
        }
        let token = content.trim_ascii();
        if token.is_empty() {
            return Err(AdminTokenError::Empty { path: path.to_owned() });
        }
        if !token.iter().all(u8::is_ascii_graphic) {
            return Err(AdminTokenError::NotSendable { path: path.to_owned() });
        }
        Ok(AdminToken::new(token))
    }

    /// A token given as bytes (tests; `idem serve` reads a file with [`Self::read`]).
    ///
    /// # Panics
    /// If `token` is empty: an empty token would admit `Authorization: Bearer `.
    #[must_use]
    pub fn new(token: &[u8]) -> AdminToken {
        assert!(!token.is_empty(), "an admin token must not be empty");
        AdminToken { digest: Sha256::digest(token).into() }
    }

    /// The admin API's authorisation hook ([`idem_admin::Authorize`]): admits a request
    /// with exactly one `Authorization: Bearer <token>` header whose token is this one,
    /// compared in constant time (digests, so the length does not show either); anything
    /// else is 401 `unauthorized`, which never says what was sent.
    ///
    /// # Errors
    /// The 401 problem to answer.
    pub fn admit(&self, request: &http::request::Parts) -> Result<(), Problem> {
        let mut values = request.headers.get_all(AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(idem_admin::problems::unauthorized(
                "the admin API needs one `Authorization: Bearer <token>` header with the operator's token",
            ));
        };
        let value = value.as_bytes();
        let presented = match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => value[7..].trim_ascii_start(),
            _ => return Err(idem_admin::problems::unauthorized("the admin API takes `Authorization: Bearer <token>`")),
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        if bool::from(self.digest.ct_eq(&digest)) {
            Ok(())
        } else {
            Err(idem_admin::problems::unauthorized("the bearer token is not the admin API's"))
        }
    }
}

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

/// Opens the store, binds `config.listen`, and serves until `shutdown` completes; then
/// drains within [`ServerLimits::drain_timeout`] (no new connections, requests in progress
/// finish) and closes the store. A request still running at the deadline is cut: its claim
/// stays in flight until the lease lapses (a retry takes it over), and in atomic mode its
/// transaction rolls back, so nothing is committed twice and nothing acknowledged is lost.
///
/// Logs `listening on http://ADDR` (with the bound port, useful with port 0) once ready.
///
/// # Errors
/// [`ServeError`], worded for a person.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
    match (&config.store, &config.db) {
        (StoreSpec::Redis(_), None) => return Err(ServeError::DbRequired),
        (StoreSpec::Sqlite(_), Some(_)) => return Err(ServeError::DbNotUsed { store: "sqlite://" }),
        (StoreSpec::Postgres(_), Some(_)) => return Err(ServeError::DbNotUsed { store: "postgres://" }),
        (StoreSpec::Memory, Some(_)) => return Err(ServeError::DbNotUsed { store: "memory://" }),
        _ => {}
    }
    check_store_options(&config)?;
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
    match &config.store {
        StoreSpec::Sqlite(path) => {
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
            tracing::info!(
                "mode: atomic; {ATOMIC_GUARANTEES} (SQLite: WAL, group commit, completions synced, {claims})"
            );
            let served = serve_ledger(ledger, &config, shutdown).await;
            store.close().await;
            served
        }
        StoreSpec::Postgres(database) => {
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
            let served = serve_ledger(ledger, &config, shutdown).await;
            store.close().await;
            served
        }
        StoreSpec::Redis(url) => {
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
                    let served = serve_ledger(SeparateLedger::new(rows, Arc::clone(&store)), &config, shutdown).await;
                    rows_store.close().await;
                    served
                }
                DbSpec::Postgres(database) => {
                    let rows_store = Arc::new(open_postgres(database).await?);
                    let rows = Arc::new(PostgresLedger::open(Arc::clone(&rows_store)).await?);
                    tracing::info!(store = %target, db = %database.target(), "store: Redis, payments and users in PostgreSQL (separate mode)");
                    tracing::info!("mode: separate; {SEPARATE_GUARANTEES}; {REDIS_DURABILITY}");
                    let served = serve_ledger(SeparateLedger::new(rows, Arc::clone(&store)), &config, shutdown).await;
                    rows_store.close().await;
                    served
                }
            };
            store.close();
            served
        }
        StoreSpec::Memory => {
            let store = Arc::new(MemoryStore::default());
            tracing::warn!("store: memory (separate mode); everything is lost on exit");
            tracing::info!("mode: separate; {SEPARATE_GUARANTEES}; no G7: a restart forgets every record");
            serve_ledger(MemoryLedger::new(store, MemoryLedger::ROWS_MAX_DEFAULT), &config, shutdown).await
        }
    }
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

async fn serve_ledger<L>(
    ledger: L,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    L: Ledger,
    L::Store: KeyAdmin,
{
    // The composition root gets the real parts here, and only here: the system clock, ids
    // seeded once from the OS (the request path never draws OS randomness), a TCP listener.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ids = Arc::new(SeededIds::new(rand::rng().random()));
    let mut state = crate::app::AppState::new(Arc::new(ledger), clock, ids);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_or_say_what_is_expected() {
        // Goal: the accepted schemes parse; anything else is an error that names the accepted forms.
        assert_eq!("sqlite://./idem.db".parse(), Ok(StoreSpec::Sqlite("./idem.db".into())));
        assert_eq!("sqlite:///tmp/x.db".parse(), Ok(StoreSpec::Sqlite("/tmp/x.db".into())));
        assert_eq!("memory://".parse(), Ok(StoreSpec::Memory));
        assert_eq!("sqlite://".parse::<StoreSpec>(), Err(StoreSpecError::MissingPath));
        assert!(matches!("memory://x".parse::<StoreSpec>(), Err(StoreSpecError::MemoryWithPath { .. })));
        assert_eq!(
            "postgres://u@h:5432/d".parse(),
            Ok(StoreSpec::Postgres(PostgresUrl { url: "postgres://u@h:5432/d".into(), schema: None }))
        );
        assert_eq!(
            "postgresql://u@h/d?sslmode=disable&schema=idem_a".parse(),
            Ok(StoreSpec::Postgres(PostgresUrl {
                url: "postgresql://u@h/d?sslmode=disable".into(),
                schema: Some("idem_a".into())
            }))
        );
        assert_eq!("redis://127.0.0.1:6379".parse(), Ok(StoreSpec::Redis("redis://127.0.0.1:6379".into())));
        // rediss:// (TLS) parses when the redis driver was built with TLS; otherwise the
        // error says so.
        match "rediss://h:6380/0?prefix=p".parse::<StoreSpec>() {
            Ok(spec) => assert!(matches!(spec, StoreSpec::Redis(_))),
            Err(error) => assert!(error.to_string().contains("TLS"), "{error}"),
        }
        assert!(matches!("redis://h?prefix=a*b".parse::<StoreSpec>(), Err(StoreSpecError::BadUrl { .. })));
        let unknown = "mysql://localhost/db".parse::<StoreSpec>().expect_err("not a store");
        for scheme in ["sqlite://PATH", "memory://", "postgres://", "postgresql://", "redis://", "rediss://"] {
            assert!(unknown.to_string().contains(scheme), "{unknown}");
        }
    }

    #[test]
    fn db_urls_are_sqlite_or_postgres() {
        // Goal: --db takes the two SQL databases and names them when refused.
        assert_eq!("sqlite://x.db".parse(), Ok(DbSpec::Sqlite("x.db".into())));
        assert!(matches!("postgres://u@h/d".parse::<DbSpec>(), Ok(DbSpec::Postgres(_))));
        let refused = "redis://h".parse::<DbSpec>().expect_err("not a database for rows");
        assert!(refused.to_string().contains("sqlite://PATH") && refused.to_string().contains("postgres://"));
    }

    #[test]
    fn admin_token_files_are_one_visible_word_within_the_bound() {
        // Goal: the token is the file's content without surrounding whitespace; an empty,
        // oversized, unsendable or missing file is refused with the file named and the
        // token never shown, and `Debug` shows no token either.
        let dir = tempfile::tempdir().expect("a temporary directory");
        let write = |name: &str, content: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).expect("a temporary file");
            path
        };
        let token = AdminToken::read(&write("ok", b"  s3cret-Token_1\n")).expect("a token");
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
        let exact = AdminToken::read(&write("exact", &[b'a'; ADMIN_TOKEN_FILE_BYTES_MAX]));
        assert!(exact.is_ok(), "a file of exactly the bound is accepted");

        let refused = |path: std::path::PathBuf| AdminToken::read(&path).expect_err("refused").to_string();
        let empty = refused(write("empty", b" \n\t\n"));
        assert!(empty.contains("is empty") && empty.contains("empty"), "{empty}");
        let long = refused(write("long", &[b'a'; ADMIN_TOKEN_FILE_BYTES_MAX + 1]));
        assert!(long.contains("over 4096 bytes"), "{long}");
        let spaced = refused(write("spaced", b"two words"));
        assert!(spaced.contains("visible ASCII") && !spaced.contains("two words"), "{spaced}");
        assert!(refused(write("accent", "caf\u{e9}".as_bytes())).contains("visible ASCII"));
        let missing = refused(dir.path().join("missing"));
        assert!(missing.contains("cannot read the admin token file") && missing.contains("missing"), "{missing}");
    }

    #[test]
    fn admin_token_admits_one_bearer_header_with_the_token_only() {
        // Goal: the hook admits exactly one `Authorization: Bearer <token>` (scheme in any
        // case) with the very token, and refuses other tokens, schemes and repeated headers.
        let token = AdminToken::new(b"s3cret");
        let admit = |values: &[&str]| {
            let mut request = http::Request::get("/keys");
            for value in values {
                request = request.header(AUTHORIZATION, *value);
            }
            let (parts, ()) = request.body(()).expect("a valid request").into_parts();
            token.admit(&parts).map_err(|problem| (problem.status(), problem.slug().to_owned()))
        };
        assert_eq!(admit(&["Bearer s3cret"]), Ok(()));
        assert_eq!(admit(&["BEARER s3cret"]), Ok(()));
        let unauthorized = Err((http::StatusCode::UNAUTHORIZED, "unauthorized".to_owned()));
        for refused in [&[][..], &["Bearer s3cre"], &["Bearer s3crets"], &["Basic s3cret"], &["s3cret"]] {
            assert_eq!(admit(refused), unauthorized, "{refused:?}");
        }
        assert_eq!(admit(&["Bearer s3cret", "Bearer s3cret"]), unauthorized);
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        // Goal: a URL's password is never printed.
        assert_eq!(redact("postgres://u:secret@h:1/d?x=1"), "postgres://u:***@h:1/d?x=1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        let target = PostgresUrl::parse("postgres://u:secret@h:1/d").expect("parses").target();
        assert!(!target.contains("secret"), "{target}");
    }
}
