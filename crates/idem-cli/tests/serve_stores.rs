//! `idem serve` with the shared stores: what it refuses at start, and how it says so.
//!
//! Every case here fails before the server listens, so none needs PostgreSQL or Redis to
//! be running; the replica tests (`replicas_postgres.rs`) run against the real ones.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn idem_serve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("IDEM_STORE")
        .env_remove("IDEM_DB")
        .output()
        .expect("the idem binary runs")
}

/// Runs `idem serve` with `args`, which must fail at start: exit code 2, a message on
/// stderr holding every one of `expected`, no panic, within a few seconds.
fn refused(args: &[&str], expected: &[&str]) {
    let started = Instant::now();
    let output = idem_serve(args);
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
    assert!(message.contains("idem: error:") || message.contains("error:"), "{args:?}: {message}");
    for expected in expected {
        assert!(message.contains(expected), "{args:?}: missing {expected:?} in {message}");
    }
    assert!(!message.contains("panicked"), "{args:?}: {message}");
    assert!(started.elapsed() < Duration::from_secs(15), "{args:?} took {:?}", started.elapsed());
}

#[test]
fn an_unknown_scheme_names_every_accepted_one() {
    // Goal: `--store mysql://x` exits 2 and lists the schemes idem serve accepts.
    refused(
        &["--store", "mysql://x"],
        &["unknown store", "sqlite://PATH", "memory://", "postgres://", "postgresql://", "redis://", "rediss://"],
    );
}

#[test]
fn an_unreachable_postgres_is_a_readable_error() {
    // Goal: a PostgreSQL that refuses connections stops the start with exit 2, naming the
    // database and how to start one.
    refused(&["--store", "postgres://postgres@127.0.0.1:1/test"], &["PostgreSQL", "127.0.0.1:1/test", "is it running"]);
}

#[test]
fn an_unreachable_redis_is_a_readable_error() {
    // Goal: a Redis that refuses connections stops the start with exit 2, naming it.
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let db = format!("sqlite://{}", dir.path().join("rows.db").display());
    refused(&["--store", "redis://127.0.0.1:1", "--db", &db], &["Redis", "127.0.0.1:1"]);
}

#[test]
fn redis_needs_a_database_for_the_rows() {
    // Goal: a Redis store without --db is refused before anything is contacted, saying what to add.
    refused(&["--store", "redis://127.0.0.1:1"], &["--db sqlite://PATH", "--db postgres://"]);
}

#[test]
fn malformed_urls_and_misplaced_db_are_refused() {
    // Goal: URLs that do not parse, a bad Redis prefix, a PostgreSQL schema that is not a
    // plain identifier, and --db beside a store that keeps the rows itself all exit 2.
    refused(&["--store", "postgres://u@h:notaport/d"], &["malformed store URL"]);
    refused(&["--store", "redis://127.0.0.1:1?prefix=a*b"], &["prefix"]);
    refused(&["--store", "postgres://postgres@127.0.0.1:1/test?schema=Bad-Name"], &["schema", "Bad-Name"]);
    refused(&["--store", "memory://", "--db", "sqlite://x.db"], &["--db is only for a Redis store"]);
    refused(&["--store", "redis://127.0.0.1:1", "--db", "redis://127.0.0.1:2"], &["--db", "sqlite://PATH"]);
}

#[test]
fn passwords_are_not_printed() {
    // Goal: the error for an unreachable PostgreSQL does not echo the URL's password.
    let output = idem_serve(&["--store", "postgres://postgres:hunter2@127.0.0.1:1/test"]);
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}
