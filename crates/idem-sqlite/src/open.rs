//! Opening a store's file: the options checked, WAL switched on and idem's migrations run
//! on a connection of their own, then the group-commit writer's connection and the read
//! pool. `SqliteStore::open` assembles the store from what [`open_file`] opened.

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio_util::sync::CancellationToken;

use crate::error::OpenError;
use crate::options::{ClaimSync, SqliteOptions};
use crate::writer::{self, Writer, WriterConfig};

/// The table in which sqlx's migrator notes idem's applied migrations. It is not the
/// migrator's default (`_sqlx_migrations`), so an application that runs its own
/// `sqlx::migrate!` on the same file keeps its own list and neither sees the other's
/// migrations as unknown.
pub const MIGRATIONS_TABLE: &str = "_idem_migrations";

/// What an opened file gives the store: the read pool, the running writer and how to
/// stop it, and how claims are synced.
pub(crate) struct Opened {
    pub(crate) pool: SqlitePool,
    pub(crate) writer: Writer,
    pub(crate) stop_writer: CancellationToken,
    pub(crate) claim_sync: writer::Sync,
}

/// Opens (or creates) `options.path()`: switches the file to WAL and runs idem's
/// migrations, starts the writer on a connection of its own, and opens a pool whose
/// connections use `synchronous=FULL` and the busy timeout.
pub(crate) async fn open_file(options: &SqliteOptions) -> Result<Opened, OpenError> {
    let path = options.path.clone();
    if let Some(detail) = options.problem() {
        return Err(OpenError::InvalidOptions { path, detail });
    }
    let connect = SqliteConnectOptions::new()
        .filename(&options.path)
        .create_if_missing(options.create_if_missing)
        .busy_timeout(options.busy_timeout)
        .synchronous(SqliteSynchronous::Full);
    // A named VFS (a crash harness's power-loss layer) applies to every connection.
    let connect = match &options.vfs {
        Some(vfs) => connect.vfs(vfs.clone()),
        None => connect,
    };

    // WAL is a property of the file, and switching to it needs the file to itself, so
    // one connection sets it and migrates before the pool opens; pool connections
    // then find the file in WAL already.
    let mut setup = SqliteConnection::connect_with(&connect.clone().journal_mode(SqliteJournalMode::Wal))
        .await
        .map_err(|error| OpenError::from_sqlx(path.clone(), error))?;
    let prepared = prepare(&mut setup, options).await;
    // Closing only flushes a connection that is dropped anyway; its failure changes nothing.
    let _ = setup.close().await;
    prepared?;

    // The group-commit writer's own connection: every write of the store goes through it.
    let write_connection =
        SqliteConnection::connect_with(&connect).await.map_err(|error| OpenError::from_sqlx(path.clone(), error))?;
    let stop_writer = CancellationToken::new();
    let deferred_claims = options.claim_sync == ClaimSync::Deferred;
    let config =
        WriterConfig { deferred_claims, enqueue_timeout: options.acquire_timeout, job_timeout: options.busy_timeout };
    let writer = Writer::start(write_connection, config, stop_writer.clone())
        .await
        .map_err(|error| OpenError::from_sqlx(path.clone(), error))?;
    let claim_sync = if deferred_claims { writer::Sync::Deferred } else { writer::Sync::Full };

    let pool = SqlitePoolOptions::new()
        .max_connections(options.connections_max)
        .min_connections(0)
        .acquire_timeout(options.acquire_timeout)
        // A connection that comes back still inside a transaction is in a state nobody
        // knows: SQLite rolls a transaction back by itself on some errors (SQLITE_FULL,
        // SQLITE_IOERR), after which sqlx's own ROLLBACK fails and its transaction count
        // stays above zero, so every later `BEGIN` on that connection would fail. Such a
        // connection is closed, never handed out again; the pool opens a fresh one.
        .after_release(|connection, _| Box::pin(async move { Ok(!connection.is_in_transaction()) }))
        .connect_with(connect)
        .await
        .map_err(|error| OpenError::from_sqlx(path, error))?;
    Ok(Opened { pool, writer, stop_writer, claim_sync })
}

/// Sets the file up: WAL verified, idem's tables migrated.
async fn prepare(connection: &mut SqliteConnection, options: &SqliteOptions) -> Result<(), OpenError> {
    let path = || options.path.clone();
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *connection)
        .await
        .map_err(|error| OpenError::from_sqlx(path(), error))?;
    if !journal_mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal { path: path(), journal_mode });
    }
    migrator().run(&mut *connection).await.map_err(|error| OpenError::from_migrate(path(), error))?;
    if options.claim_sync == ClaimSync::Deferred {
        // A crash may have lost claims committed without a sync, and the fences they were
        // issued with: skip past all of them (this connection commits synced).
        sqlx::query("UPDATE idem_fence SET next_fence = next_fence + ?1, unsynced_fences = 0 WHERE id = 1")
            .bind(writer::FENCE_GAP)
            .execute(&mut *connection)
            .await
            .map_err(|error| OpenError::from_sqlx(path(), error))?;
    }
    Ok(())
}

/// idem's migrations (the crate's `migrations/` folder), noted in [`MIGRATIONS_TABLE`].
fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}
