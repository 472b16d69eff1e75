//! The store URLs `idem serve` takes: [`StoreSpec`] (`--store`), [`DbSpec`] (`--db`) and
//! [`PostgresUrl`], parsed and refused with the accepted forms named, and passwords kept out
//! of every message. Separate from running the server ([`mod@crate::serve`]): parsing
//! opens nothing.

use std::path::PathBuf;
use std::str::FromStr;

use idem_postgres::PostgresOptions;
use idem_redis::RedisOptions;

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
    pub(crate) fn parse(given: &str) -> Result<PostgresUrl, StoreSpecError> {
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
    fn passwords_stay_out_of_messages() {
        // Goal: a URL's password is never printed.
        assert_eq!(redact("postgres://u:secret@h:1/d?x=1"), "postgres://u:***@h:1/d?x=1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        let target = PostgresUrl::parse("postgres://u:secret@h:1/d").expect("parses").target();
        assert!(!target.contains("secret"), "{target}");
    }
}
