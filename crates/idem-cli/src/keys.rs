//! `idem keys list|show|forget`: an operator's view of the idempotency records in a store,
//! printed as idem-admin's JSON (the admin router answers the same shapes).
//!
//! `--store` takes the URLs `idem serve --store` takes (idem-server's [`StoreSpec`]), plus a
//! bare file path for SQLite.
//!
//! `keys` never creates anything: a missing SQLite file, a file
//! or PostgreSQL schema without idem's tables is an error, not a new empty store.

use std::process::ExitCode;
use std::sync::Arc;

use idem_admin::{KeyView, ListParams, ListView, cursor};
use idem_core::{Key, KeyAdmin, Principal, RecordId};
use idem_server::StoreSpec;

/// Options of `idem keys`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// List records a page at a time, in (caller, key) order, as {"object":"list","data":[…],"has_more","next_cursor"}.
    List(ListArgs),
    /// Show one record: state, fence, lease left, renewals, replays, expiry, the holder's ids.
    Show(RecordArgs),
    /// Forget one record. Fenced: the fence moves on, so a handler still running under its
    /// claim can never complete (G3). Without --yes, prints the record and forgets nothing (exit 1).
    Forget(ForgetArgs),
}

#[derive(clap::Args, Debug)]
struct StoreArg {
    /// The store, as `idem serve --store` names it: sqlite://PATH (or a plain PATH),
    /// postgres://USER@HOST:PORT/DB[?schema=NAME], redis://HOST:PORT[/N][?prefix=NAME].
    #[arg(long, env = "IDEM_STORE")]
    store: String,
}

#[derive(clap::Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Only this caller's records.
    #[arg(long, conflicts_with = "anonymous")]
    caller: Option<String>,
    /// Only the anonymous caller's records.
    #[arg(long)]
    anonymous: bool,
    /// Only records in this state: in_flight, completed or tombstone.
    #[arg(long)]
    state: Option<String>,
    /// Only records created longer ago than this (e.g. 90s, 2h).
    #[arg(long)]
    older_than: Option<String>,
    /// Only records created within this age (e.g. 10m).
    #[arg(long)]
    newer_than: Option<String>,
    /// Only records created before this time (RFC 3339 or Unix ms).
    #[arg(long)]
    created_before: Option<String>,
    /// Only records created at or after this time (RFC 3339 or Unix ms).
    #[arg(long)]
    created_after: Option<String>,
    /// Records per page, 1 to 100.
    #[arg(long, default_value = "10")]
    limit: String,
    /// The next_cursor of the page before.
    #[arg(long)]
    starting_after: Option<String>,
    /// json (the page object), lines (one record per line) or table.
    #[arg(long, default_value = "json", value_parser = ["json", "lines", "table"])]
    format: String,
}

#[derive(clap::Args, Debug)]
struct RecordArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The caller (principal) who sent the key.
    #[arg(long, conflicts_with_all = ["anonymous", "id"])]
    caller: Option<String>,
    /// The key was sent by the anonymous caller.
    #[arg(long, conflicts_with = "id")]
    anonymous: bool,
    /// The record's id as a listing shows it, instead of caller and key.
    #[arg(long, conflicts_with = "key")]
    id: Option<String>,
    /// The idempotency key, unquoted.
    key: Option<String>,
    /// json or table.
    #[arg(long, default_value = "json", value_parser = ["json", "table"])]
    format: String,
}

#[derive(clap::Args, Debug)]
struct ForgetArgs {
    #[command(flatten)]
    record: RecordArgs,
    /// Really forget it.
    #[arg(long)]
    yes: bool,
}

/// Why `idem keys` failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeysError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Store(String),
    #[error("no record for {0}")]
    NotFound(String),
}

pub(crate) fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    run_keys(args).map_err(Into::into)
}

fn run_keys(args: &Args) -> Result<ExitCode, KeysError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| KeysError::Store(format!("cannot start a runtime: {error}")))?;
    runtime.block_on(async {
        let store_arg = match &args.command {
            Command::List(list) => &list.store,
            Command::Show(record) => &record.store,
            Command::Forget(forget) => &forget.record.store,
        };
        match open(&store_arg.store).await? {
            Opened::Sqlite(store) => {
                let done = on(&*store, &args.command).await;
                store.close().await;
                done
            }
            Opened::Postgres(store) => {
                let done = on(&*store, &args.command).await;
                store.close().await;
                done
            }
            Opened::Redis(store) => {
                let done = on(&*store, &args.command).await;
                store.close();
                done
            }
        }
    })
}

enum Opened {
    Sqlite(Arc<idem_sqlite::SqliteStore>),
    Postgres(Arc<idem_postgres::PostgresStore>),
    Redis(Arc<idem_redis::RedisStore>),
}

/// Opens the store `given` names, refusing to create one.
async fn open(given: &str) -> Result<Opened, KeysError> {
    let spec = if given.contains("://") {
        given.parse::<StoreSpec>().map_err(|error| KeysError::Usage(error.to_string()))?
    } else {
        StoreSpec::Sqlite(given.into())
    };
    let failed = |error: &dyn std::fmt::Display| KeysError::Store(error.to_string());
    match spec {
        StoreSpec::Sqlite(path) => {
            if !path.is_file() {
                return Err(KeysError::Store(format!(
                    "no SQLite file at {}; keys opens existing stores only",
                    path.display()
                )));
            }
            sqlite_has_tables(&path).await?;
            let options = idem_sqlite::SqliteOptions::new(&path).create_if_missing(false);
            let store = idem_sqlite::SqliteStore::open(options).await.map_err(|error| failed(&error))?;
            Ok(Opened::Sqlite(Arc::new(store)))
        }
        StoreSpec::Postgres(database) => {
            postgres_has_tables(&database).await?;
            let store = idem_postgres::PostgresStore::open(database.options()).await.map_err(|error| failed(&error))?;
            Ok(Opened::Postgres(Arc::new(store)))
        }
        StoreSpec::Redis(url) => {
            let options = idem_redis::RedisOptions::new(&url).map_err(|error| failed(&error))?;
            let prefix = options.key_prefix().to_owned();
            let store = idem_redis::RedisStore::open(options).await.map_err(|error| failed(&error))?;
            if store.next_fence().await.map_err(|error| failed(&error))?.is_none() {
                store.close();
                return Err(KeysError::Store(format!(
                    "no idem store under Redis prefix {prefix:?} (it has no fence counter)"
                )));
            }
            Ok(Opened::Redis(Arc::new(store)))
        }
        StoreSpec::Memory => {
            Err(KeysError::Usage("memory:// lives inside one `idem serve` process; keys cannot reach it".to_owned()))
        }
    }
}

/// Refuses a SQLite file without idem's tables, before the store's migrations would add them.
async fn sqlite_has_tables(path: &std::path::Path) -> Result<(), KeysError> {
    use sqlx::Connection as _;
    let connect = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
    let mut connection = sqlx::SqliteConnection::connect_with(&connect)
        .await
        .map_err(|error| KeysError::Store(format!("cannot open {}: {error}", path.display())))?;
    let found: Option<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'idem_records'")
            .fetch_optional(&mut connection)
            .await
            .map_err(|error| KeysError::Store(format!("cannot read {}: {error}", path.display())))?;
    let _ = connection.close().await;
    found
        .map(|_| ())
        .ok_or_else(|| KeysError::Store(format!("{} holds no idem store (no idem_records table)", path.display())))
}

/// Refuses a PostgreSQL schema without idem's tables (`PostgresStore::open` would create it).
async fn postgres_has_tables(database: &idem_server::PostgresUrl) -> Result<(), KeysError> {
    use sqlx::Connection as _;
    let schema = database.schema.clone().unwrap_or_else(|| "public".to_owned());
    let mut connection = sqlx::PgConnection::connect(&database.url)
        .await
        .map_err(|error| KeysError::Store(format!("cannot connect to {}: {error}", database.target())))?;
    let found: (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'idem_records')",
    )
    .bind(&schema)
    .fetch_one(&mut connection)
    .await
    .map_err(|error| KeysError::Store(format!("cannot read {}: {error}", database.target())))?;
    let _ = connection.close().await;
    if found.0 {
        Ok(())
    } else {
        Err(KeysError::Store(format!("schema {schema:?} of {} holds no idem store", database.target())))
    }
}

async fn on<S: KeyAdmin>(store: &S, command: &Command) -> Result<ExitCode, KeysError> {
    let now = idem_admin::params::system_now();
    let failed = |error: idem_core::StoreError| KeysError::Store(error.to_string());
    match command {
        Command::List(list) => {
            let query = list_params(list).to_query(now).map_err(|error| KeysError::Usage(error.to_string()))?;
            let page = store.list(&query).await.map_err(failed)?;
            print_page(&ListView::new(&page, now), &list.format);
        }
        Command::Show(record) => {
            let id = record_id(record)?;
            let found = store.get(&id).await.map_err(failed)?.ok_or_else(|| KeysError::NotFound(describe(&id)))?;
            print_view(&KeyView::new(&id, &found, now), &record.format);
        }
        Command::Forget(forget) => {
            let id = record_id(&forget.record)?;
            if !forget.yes {
                let found = store.get(&id).await.map_err(failed)?.ok_or_else(|| KeysError::NotFound(describe(&id)))?;
                print_view(&KeyView::new(&id, &found, now), &forget.record.format);
                eprintln!("idem: would forget {}; nothing was changed (add --yes to forget it)", describe(&id));
                return Ok(ExitCode::from(1));
            }
            let forgotten =
                store.forget(&id).await.map_err(failed)?.ok_or_else(|| KeysError::NotFound(describe(&id)))?;
            print_view(&KeyView::new(&id, &forgotten, now), &forget.record.format);
            eprintln!("idem: forgot {} (its fence moved on)", describe(&id));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_params(list: &ListArgs) -> ListParams {
    ListParams {
        caller: if list.anonymous { Some(String::new()) } else { list.caller.clone() },
        state: list.state.clone(),
        created_before: list.created_before.clone(),
        created_after: list.created_after.clone(),
        older_than: list.older_than.clone(),
        newer_than: list.newer_than.clone(),
        limit: Some(list.limit.clone()),
        starting_after: list.starting_after.clone(),
    }
}

fn record_id(args: &RecordArgs) -> Result<RecordId, KeysError> {
    if let Some(id) = &args.id {
        return cursor::decode(id).map_err(|error| KeysError::Usage(format!("--id: {error}")));
    }
    let key = args.key.as_deref().ok_or_else(|| KeysError::Usage("give the KEY (or --id)".to_owned()))?;
    let key = Key::from_chars(key).map_err(|error| KeysError::Usage(format!("KEY: {error}")))?;
    let principal = match (&args.caller, args.anonymous) {
        (Some(caller), false) => {
            Principal::new(caller).map_err(|error| KeysError::Usage(format!("--caller: {error}")))?
        }
        (None, true) => Principal::anonymous(),
        _ => return Err(KeysError::Usage("give --caller NAME or --anonymous (or --id)".to_owned())),
    };
    Ok(RecordId::new(principal, key))
}

fn describe(id: &RecordId) -> String {
    let caller = if id.principal.is_anonymous() {
        "the anonymous caller".to_owned()
    } else {
        format!("caller {:?}", id.principal.as_str())
    };
    format!("key {:?} of {caller}", id.key.as_str())
}

#[allow(clippy::print_stdout)] // printing is this command's output
fn print_page(page: &ListView, format: &str) {
    match format {
        "lines" => page.data.iter().for_each(|view| println!("{}", json(view))),
        "table" => {
            println!(
                "{:<20} {:<32} {:<10} {:>8} {:<24} {:>12}",
                "CALLER", "KEY", "STATE", "FENCE", "EXPIRES", "LEASE_LEFT_MS"
            );
            for view in &page.data {
                println!(
                    "{:<20} {:<32} {:<10} {:>8} {:<24} {:>12}",
                    view.caller.as_deref().unwrap_or("(anonymous)"),
                    view.key,
                    view.state,
                    view.fence,
                    view.expires_at.as_deref().unwrap_or("-"),
                    view.lease_left_ms.map_or("-".to_owned(), |left| left.to_string()),
                );
            }
            if let Some(cursor) = &page.next_cursor {
                println!("more: --starting-after {cursor}");
            }
        }
        _ => println!("{}", json(page)),
    }
}

#[allow(clippy::print_stdout)] // printing is this command's output
fn print_view(view: &KeyView, format: &str) {
    if format == "table" {
        if let serde_json::Value::Object(fields) = serde_json::to_value(view).unwrap_or_default() {
            for (name, value) in fields {
                println!("{name:<20} {value}");
            }
        }
    } else {
        println!("{}", json(view));
    }
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
}
