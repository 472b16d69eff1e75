//! Preparing idem's schema at open without ever waiting behind the store's business.
//!
//! A replica that starts while another holds locks on idem's tables (a completion that has
//! not committed, perhaps of a replica whose host vanished inside its transaction) must not
//! wait for them: a DDL statement that queues for a table lock also blocks every later
//! writer of that table behind it, so one starting replica could stall the whole store. So
//! [`prepare`] first reads the catalog and idem's migrations table (plain reads, which
//! conflict with no row lock and no writer), and when everything is there and up to date it
//! runs no DDL at all and takes no migration lock. Only a schema that is missing something
//! is created or migrated, and every statement here runs under
//! [`crate::PostgresOptions::schema_lock_timeout`], so a lock it cannot take at once ends the
//! attempt with [`OpenError::SchemaLocked`], which `open` tries again within its open
//! timeout.

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Row};

use crate::codec::USAGE_SHARDS;
use crate::error::{LOCK_NOT_AVAILABLE, OpenError, is_transient, sqlstate};
use crate::options::PostgresOptions;

/// The table (in the store's schema) in which sqlx's migrator notes idem's applied
/// migrations. It is not the migrator's default (`_sqlx_migrations`), so an application
/// that runs its own `sqlx::migrate!` in the same schema keeps its own list.
pub const MIGRATIONS_TABLE: &str = "_idem_migrations";

/// Every relation idem's migrations create, besides [`MIGRATIONS_TABLE`].
const RELATIONS: [&str; 4] = ["idem_records", "idem_records_by_due_at", "idem_fence_seq", "idem_usage"];

/// idem's migrations (the crate's `migrations/` folder), noted in [`MIGRATIONS_TABLE`].
pub(crate) fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// Makes sure `options`' schema holds idem's tables, up to date, and checks the usage
/// shards; runs DDL only for what is missing (module docs).
pub(crate) async fn prepare(
    connection: &mut PgConnection,
    options: &PostgresOptions,
    target: &str,
) -> Result<(), OpenError> {
    let schema = options.schema.as_str();
    let failed = Failed { target, schema };
    let lock_ms = options.session.schema_lock.as_millis();
    execute(connection, format!("SET lock_timeout = '{lock_ms}ms'")).await.map_err(|e| failed.sql(e))?;
    let found = catalog(connection, schema).await.map_err(|error| failed.sql(error))?;
    if !found.up_to_date() {
        if !found.schema {
            // The name is a plain identifier (checked by the options), safe between quotes.
            execute(connection, format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .await
                .map_err(|e| failed.sql(e))?;
        }
        execute(connection, format!("SET search_path TO \"{schema}\"")).await.map_err(|e| failed.sql(e))?;
        migrator().run(&mut *connection).await.map_err(|error| failed.migrate(error))?;
        let found = catalog(connection, schema).await.map_err(|error| failed.sql(error))?;
        if let Some(missing) = found.missing.first() {
            return Err(failed.detail(format!("{missing} is missing after the migrations ran")));
        }
    }
    let count = format!("SELECT count(*) AS shards FROM \"{schema}\".idem_usage");
    let row = sqlx::query(AssertSqlSafe(count)).fetch_one(&mut *connection).await.map_err(|e| failed.sql(e))?;
    let shards: i64 = row.try_get("shards").map_err(|error| failed.sql(error))?;
    if shards != i64::from(USAGE_SHARDS) {
        return Err(failed.detail(format!("idem_usage has {shards} shard rows, not {USAGE_SHARDS}")));
    }
    Ok(())
}

async fn execute(connection: &mut PgConnection, statement: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(AssertSqlSafe(statement)).execute(connection).await.map(|_| ())
}

/// What the catalog holds of idem's schema.
#[derive(Debug)]
struct Catalog {
    /// The schema exists.
    schema: bool,
    /// Relations of idem's (the migrations table included) that do not exist.
    missing: Vec<String>,
    /// The migrations table's rows, `(version, success, checksum)`, if it exists.
    applied: Vec<(i64, bool, Vec<u8>)>,
}

impl Catalog {
    /// Whether the migrator would find nothing to do: every relation there, and exactly
    /// idem's migrations applied, successfully, with their checksums. Anything else (a newer
    /// migration, a dirty or modified one) goes to the migrator, which applies or reports it.
    fn up_to_date(&self) -> bool {
        let migrator = migrator();
        let expected: Vec<(i64, bool, &[u8])> = migrator
            .iter()
            .filter(|migration| !migration.migration_type.is_down_migration())
            .map(|migration| (migration.version, true, &*migration.checksum))
            .collect();
        let applied: Vec<(i64, bool, &[u8])> =
            self.applied.iter().map(|(version, success, checksum)| (*version, *success, checksum.as_slice())).collect();
        self.schema && self.missing.is_empty() && applied == expected
    }
}

/// Reads the catalog for `schema` (no lock on idem's tables: `to_regclass` takes none) and,
/// if it exists, the migrations table (a plain read, which waits only for an exclusive
/// lock on that table, and then at most the schema lock timeout).
async fn catalog(connection: &mut PgConnection, schema: &str) -> Result<Catalog, sqlx::Error> {
    let relations: Vec<String> = std::iter::once(MIGRATIONS_TABLE).chain(RELATIONS).map(str::to_owned).collect();
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS schema_exists, \
         ARRAY(SELECT name FROM unnest($2::text[]) AS name \
         WHERE to_regclass(quote_ident($1) || '.' || quote_ident(name)) IS NULL) AS missing",
    )
    .bind(schema)
    .bind(&relations)
    .fetch_one(&mut *connection)
    .await?;
    let schema_exists: bool = row.try_get("schema_exists")?;
    let missing: Vec<String> = row.try_get("missing")?;
    let mut applied = Vec::new();
    if schema_exists && !missing.iter().any(|name| name == MIGRATIONS_TABLE) {
        let statement =
            format!("SELECT version, success, checksum FROM \"{schema}\".{MIGRATIONS_TABLE} ORDER BY version");
        applied = sqlx::query_as(AssertSqlSafe(statement)).fetch_all(&mut *connection).await?;
    }
    Ok(Catalog { schema: schema_exists, missing, applied })
}

/// How a failure to prepare the schema becomes an [`OpenError`].
#[derive(Clone, Copy)]
struct Failed<'a> {
    target: &'a str,
    schema: &'a str,
}

impl Failed<'_> {
    /// A lock not taken in time is [`OpenError::SchemaLocked`]; a connection that broke
    /// or a server going down is [`OpenError::Connect`] (both tried again by `open`);
    /// anything else [`OpenError::Migrate`].
    fn sql(self, error: sqlx::Error) -> OpenError {
        let (target, schema) = (self.target.to_owned(), self.schema.to_owned());
        if sqlstate(&error).as_deref() == Some(LOCK_NOT_AVAILABLE) {
            OpenError::SchemaLocked { target, schema, source: error }
        } else if is_transient(&error) {
            OpenError::Connect { target, source: error }
        } else {
            OpenError::Migrate { target, schema, detail: error.to_string() }
        }
    }

    fn migrate(self, error: MigrateError) -> OpenError {
        match error {
            MigrateError::VersionMissing(version) => {
                OpenError::NewerSchema { target: self.target.to_owned(), schema: self.schema.to_owned(), version }
            }
            MigrateError::Execute(error) | MigrateError::ExecuteMigration(error, _) if retried(&error) => {
                self.sql(error)
            }
            error => self.detail(error.to_string()),
        }
    }

    fn detail(self, detail: String) -> OpenError {
        OpenError::Migrate { target: self.target.to_owned(), schema: self.schema.to_owned(), detail }
    }
}

/// Whether `open` tries again after this error (a lock not taken in time, a connection lost).
fn retried(error: &sqlx::Error) -> bool {
    sqlstate(error).as_deref() == Some(LOCK_NOT_AVAILABLE) || is_transient(error)
}
