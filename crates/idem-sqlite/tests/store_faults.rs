//! SqliteStore on real SQLite files when something is wrong: damaged rows and counters,
//! files and options refused at open (and an application's migrations beside idem's), and
//! an unreachable store (busy writer, exhausted pool, closed store).

mod common;

use std::time::Duration;

use common::{at, expect_claim, fingerprint, id, open, open_with, options_in, policy, replay, response};
use idem_core::{Decision, Fence, Fenced, Store, StoreError};
use idem_sqlite::{OpenError, SqliteOptions, SqliteStore};

// ---- damaged rows ----

async fn damaged(statement: &'static str) -> StoreError {
    // Without the replay cache: the row is damaged behind the store's back, and a cached
    // copy (right by the cache's rule that completed rows never change) would answer.
    let t = open_with(|options| options.replay_cache_bytes(0)).await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let claim = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    let _ = t.store.complete(&id, claim.fence, response("x"), at(0), &policy()).await.unwrap();
    sqlx::query(statement).execute(t.store.pool()).await.expect("the damaging statement runs");
    let read = t.store.get(&id).await;
    let claimed = t.store.claim(&id, &fp, at(1), &policy()).await;
    assert!(matches!(claimed, Err(StoreError::Corrupt { .. })), "claim on a damaged row: {claimed:?}");
    read.expect_err("a damaged row does not read back")
}

#[tokio::test]
async fn damaged_rows_are_corrupt_not_panics() {
    // Goal: every kind of undecodable row is StoreError::Corrupt with a detail, never a panic.
    for statement in [
        "UPDATE idem_records SET fingerprint = x'00'",
        "UPDATE idem_records SET fence = -1",
        "UPDATE idem_records SET fence = 0",
        "UPDATE idem_records SET state = 'weird'",
        "UPDATE idem_records SET status = 70000",
        "UPDATE idem_records SET status = NULL",
        "UPDATE idem_records SET headers = x'0102'",
        "UPDATE idem_records SET body = NULL",
        "UPDATE idem_records SET expires_at = -5",
        "UPDATE idem_records SET due_at = 1",
        "UPDATE idem_records SET state = 'in_flight'",
        // Version 3 of a fingerprint, which no idem writes.
        concat!(
            "UPDATE idem_records SET fingerprint = x'03",
            "0000000000000000000000000000000000000000000000000000000000000000'"
        ),
        "UPDATE idem_records SET fingerprint = zeroblob(34)",
        "UPDATE idem_records SET created_at = -1",
        "UPDATE idem_records SET replays = -1",
        "UPDATE idem_records SET tombstone_until = -1",
        "UPDATE idem_records SET state = 'in_flight', lease_expires_at = 500, holder_request_id = 'has space'",
        "UPDATE idem_records SET state = 'in_flight', lease_expires_at = 500, holder_trace_id = ''",
        "UPDATE idem_records SET state = 'in_flight', lease_expires_at = 500, renewals = 4294967296",
    ] {
        let error = damaged(statement).await;
        assert!(matches!(&error, StoreError::Corrupt { detail } if !detail.is_empty()), "{statement}: {error:?}");
    }
}

#[tokio::test]
async fn purge_forgets_an_expired_row_it_cannot_read_instead_of_stalling() {
    // Goal: one damaged expired row does not stop purging for good: it is forgotten along
    // with the healthy expired rows, and usage is given back.
    let t = open().await;
    let fp = fingerprint("a");
    for key in ["1", "2", "3"] {
        let claim = expect_claim(t.store.claim(&id("alice", key), &fp, at(0), &policy()).await.unwrap());
        let _ = t.store.complete(&id("alice", key), claim.fence, response("x"), at(0), &policy()).await.unwrap();
    }
    sqlx::query("UPDATE idem_records SET state = 'weird' WHERE idem_key = '1'")
        .execute(t.store.pool())
        .await
        .expect("the damaging statement runs");
    let after_retention = at(60_000); // a minute: past the 10 s retention
    assert_eq!(t.store.purge_expired(after_retention, 10).await.expect("purge goes on"), 3);
    assert_eq!(t.store.purge_expired(after_retention, 10).await.expect("purge goes on"), 0);
    for key in ["1", "2", "3"] {
        assert!(t.store.get(&id("alice", key)).await.expect("readable").is_none(), "key {key} was purged");
    }
    let claim = t.store.claim(&id("alice", "1"), &fp, after_retention, &policy()).await;
    assert!(matches!(claim, Ok(Decision::Execute(_))), "the key is usable again: {claim:?}");
}

#[tokio::test]
async fn fence_counter_behind_a_record_is_corrupt_not_a_reused_fence() {
    // Goal: a fence counter lowered by hand is reported as Corrupt instead of reusing a fence or panicking.
    let t = open().await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let _ = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    sqlx::query("UPDATE idem_fence SET next_fence = 1").execute(t.store.pool()).await.unwrap();
    let taken_over = t.store.claim(&id, &fp, at(5_000), &policy()).await;
    assert!(matches!(taken_over, Err(StoreError::Corrupt { .. })), "got {taken_over:?}");
}

#[tokio::test]
async fn fence_counter_behind_makes_every_step_corrupt_and_purge_keeps_the_evidence() {
    // Goal: with the fence counter lowered by hand, completion, renewal and purge of a record
    // at or past it fail as Corrupt and change nothing: the record (whose fence a new claim
    // could otherwise reuse) is kept, not forgotten as damage.
    let t = open().await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let claim = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    sqlx::query("UPDATE idem_fence SET next_fence = 1").execute(t.store.pool()).await.unwrap();
    let before = t.store.get(&id).await.unwrap();
    let completed = t.store.complete(&id, claim.fence, response("x"), at(100), &policy()).await;
    assert!(matches!(completed, Err(StoreError::Corrupt { .. })), "got {completed:?}");
    let renewed = t.store.renew(&id, claim.fence, at(100), &policy()).await;
    assert!(matches!(renewed, Err(StoreError::Corrupt { .. })), "got {renewed:?}");
    let purged = t.store.purge_expired(at(60_000), 10).await;
    assert!(matches!(purged, Err(StoreError::Corrupt { .. })), "got {purged:?}");
    assert_eq!(t.store.get(&id).await.unwrap(), before);
}

#[tokio::test]
async fn usage_counters_that_disagree_with_records_are_corrupt() {
    // Goal: a usage row zeroed by hand makes a release (which would drive it negative)
    // fail as Corrupt and roll back, leaving the claim in place.
    let t = open().await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let claim = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    sqlx::query("UPDATE idem_usage SET records = 0, stored_bytes = 0").execute(t.store.pool()).await.unwrap();
    let released = t.store.release(&id, claim.fence).await;
    assert!(matches!(released, Err(StoreError::Corrupt { .. })), "got {released:?}");
    assert_eq!(t.store.get(&id).await.unwrap().map(|record| record.fence), Some(claim.fence));
}

// ---- opening ----

#[tokio::test]
async fn text_file_is_a_readable_open_error() {
    // Goal: a text file named idem.db is refused with an error that names the file and the cause.
    let dir = tempfile::tempdir().unwrap();
    let options = options_in(&dir);
    std::fs::write(options.path(), "this is not a database, it is a shopping list\n".repeat(100)).unwrap();
    let error = SqliteStore::open(options.clone()).await.expect_err("a text file is not a database");
    assert!(matches!(error, OpenError::NotADatabase { .. }), "got {error:?}");
    let message = error.to_string();
    assert!(message.contains(&options.path().display().to_string()), "{message}");
    assert!(message.contains("not a SQLite database"), "{message}");
}

#[tokio::test]
async fn missing_directory_is_a_readable_open_error() {
    // Goal: a path in a directory that does not exist fails to open with the path in the message.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("idem.db");
    let error = SqliteStore::open(SqliteOptions::new(&path)).await.expect_err("the directory is missing");
    assert!(matches!(error, OpenError::CannotOpen { .. }), "got {error:?}");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("directory does not exist"), "{message}");
}

#[tokio::test]
async fn directory_path_is_a_readable_open_error() {
    // Goal: a path that names a directory is refused with a message that says so.
    let dir = tempfile::tempdir().unwrap();
    let error = SqliteStore::open(SqliteOptions::new(dir.path())).await.expect_err("a directory is not a database");
    assert!(matches!(error, OpenError::CannotOpen { .. }), "got {error:?}");
    assert!(error.to_string().contains("it is a directory"), "{error}");
}

#[tokio::test]
async fn missing_file_without_create_is_an_open_error() {
    // Goal: create_if_missing(false) refuses to open a file that is not there (and does not create it).
    let dir = tempfile::tempdir().unwrap();
    let options = options_in(&dir).create_if_missing(false);
    let error = SqliteStore::open(options.clone()).await.expect_err("the file is missing");
    assert!(matches!(error, OpenError::CannotOpen { .. }), "got {error:?}");
    assert!(error.to_string().contains("the file does not exist"), "{error}");
    assert!(!options.path().exists());
}

#[tokio::test]
async fn invalid_options_are_refused_before_touching_the_file() {
    // Goal: a zero-connection pool or zero limits are an InvalidOptions error naming the setting.
    let dir = tempfile::tempdir().unwrap();
    for (options, setting) in [
        (options_in(&dir).connections_max(0), "connections_max"),
        (options_in(&dir).connections_max(1_000), "connections_max"),
        (options_in(&dir).records_max(0), "records_max"),
        (options_in(&dir).stored_bytes_max(0), "stored_bytes_max"),
        (options_in(&dir).acquire_timeout(Duration::ZERO), "acquire_timeout"),
    ] {
        let error = SqliteStore::open(options.clone()).await.expect_err("the options are invalid");
        assert!(matches!(error, OpenError::InvalidOptions { .. }), "got {error:?}");
        assert!(error.to_string().contains(setting), "{error}");
        assert!(!options.path().exists());
    }
}

#[tokio::test]
async fn application_migrations_coexist_with_idem_migrations() {
    // Goal: an application's own sqlx migrations on the same pool and idem's migrations
    // keep separate lists, so each reopen succeeds for both.
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let t = open().await;
    let app = Migrator::with_migrations(vec![Migration::new(
        1,
        "payments".into(),
        MigrationType::Simple,
        sqlx::SqlSafeStr::into_sql_str("CREATE TABLE payments (id TEXT PRIMARY KEY)"),
        false,
    )]);
    app.run(t.store.pool()).await.expect("the application's migrations run beside idem's");
    t.store.close().await;
    let reopened = SqliteStore::open(SqliteOptions::new(&t.path)).await.expect("idem's migrations still apply");
    app.run(reopened.pool()).await.expect("the application's migrations are still in step");
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .fetch_all(reopened.pool())
        .await
        .unwrap();
    assert_eq!(
        tables,
        ["_idem_migrations", "_sqlx_migrations", "idem_fence", "idem_records", "idem_usage", "payments"]
    );
}

// ---- an unreachable store (G8: refused, never a claim without the store) ----

#[tokio::test]
async fn busy_writer_past_busy_timeout_is_unavailable_with_retry_hint() {
    // Goal: while another connection (here another store on the file, as another process
    // would) holds the write lock past the busy timeout, a claim fails with Unavailable and
    // a retry hint, takes nothing, and succeeds once the lock is free.
    let t = open().await;
    let impatient =
        SqliteStore::open(SqliteOptions::new(&t.path).busy_timeout(Duration::from_millis(20))).await.unwrap();
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let holder = t.store.begin_write().await.unwrap();
    let refused = impatient.claim(&id, &fp, at(0), &policy()).await;
    assert!(matches!(refused, Err(StoreError::Unavailable { retry_after: Some(_), .. })), "got {refused:?}");
    holder.rollback().await.unwrap();
    assert_eq!(t.store.get(&id).await.unwrap(), None, "the refused claim took nothing");
    let _ = expect_claim(impatient.claim(&id, &fp, at(0), &policy()).await.unwrap());
}

#[tokio::test]
async fn exhausted_pool_is_unavailable_with_retry_hint() {
    // Goal: when every pooled connection is busy past the acquire timeout, calls fail with
    // Unavailable and a retry hint instead of waiting without bound.
    let t = open_with(|options| options.connections_max(1).acquire_timeout(Duration::from_millis(20))).await;
    let holder = t.store.begin_write().await.unwrap();
    let refused = t.store.get(&id("alice", "k1")).await;
    assert!(matches!(refused, Err(StoreError::Unavailable { retry_after: Some(_), .. })), "got {refused:?}");
    holder.rollback().await.unwrap();
    assert_eq!(t.store.get(&id("alice", "k1")).await.unwrap(), None);
}

#[tokio::test]
async fn closed_store_is_unavailable() {
    // Goal: every operation on a closed store is Unavailable, never a panic.
    let t = open().await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    t.store.close().await;
    assert!(matches!(t.store.claim(&id, &fp, at(0), &policy()).await, Err(StoreError::Unavailable { .. })));
    let completed = t.store.complete(&id, Fence::FIRST, response("x"), at(0), &policy()).await;
    assert!(matches!(completed, Err(StoreError::Unavailable { .. })));
    assert!(matches!(t.store.release(&id, Fence::FIRST).await, Err(StoreError::Unavailable { .. })));
    let renewed = t.store.renew(&id, Fence::FIRST, at(0), &policy()).await;
    assert!(matches!(renewed, Err(StoreError::Unavailable { .. })));
    assert!(matches!(t.store.get(&id).await, Err(StoreError::Unavailable { .. })));
    assert!(matches!(t.store.usage().await, Err(StoreError::Unavailable { .. })));
    assert!(matches!(t.store.purge_expired(at(0), 10).await, Err(StoreError::Unavailable { .. })));
    assert!(matches!(t.store.begin_write().await, Err(StoreError::Unavailable { .. })));
}

#[tokio::test]
async fn file_from_a_newer_idem_is_a_readable_open_error() {
    // Goal: a file whose idem migrations include one this version does not know is refused
    // with an error naming the file and the migration, instead of being misread.
    let t = open().await;
    sqlx::query(
        "INSERT INTO _idem_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(t.store.pool())
    .await
    .unwrap();
    t.store.close().await;
    let error = SqliteStore::open(SqliteOptions::new(&t.path)).await.expect_err("the schema is newer");
    assert!(matches!(error, OpenError::NewerSchema { version: 9999, .. }), "got {error:?}");
    assert!(error.to_string().contains(&t.path.display().to_string()), "{error}");
}

#[tokio::test]
async fn replays_and_conflicts_take_no_write_lock() {
    // Goal: with another writer holding SQLite's write lock, a replay and a conflict are
    // still answered (they are decided on a snapshot and write nothing), while a new key,
    // which must write, waits for the lock and fails at the busy timeout. This is the
    // store without a replay cache; with one, see `cached_replays_take_no_write_lock`.
    let t = open_with(|options| options.busy_timeout(Duration::from_millis(200)).replay_cache_bytes(0)).await;
    let (done, busy) = (id("alice", "done"), id("alice", "busy"));
    let fp = fingerprint("a");
    let claim = expect_claim(t.store.claim(&done, &fp, at(1_000), &policy()).await.unwrap());
    assert_eq!(
        t.store.complete(&done, claim.fence, response("pay_1"), at(1_100), &policy()).await.unwrap(),
        Fenced::Applied
    );
    expect_claim(t.store.claim(&busy, &fp, at(1_000), &policy()).await.unwrap());

    let writer = t.store.begin_write().await.expect("the write lock is free");
    assert_eq!(t.store.claim(&done, &fp, at(1_200), &policy()).await.unwrap(), replay("pay_1", 1_100));
    assert!(matches!(t.store.claim(&busy, &fp, at(1_200), &policy()).await.unwrap(), Decision::Conflict { .. }));
    let new_key = t.store.claim(&id("alice", "new"), &fp, at(1_200), &policy()).await;
    assert!(matches!(new_key, Err(StoreError::Unavailable { .. })), "{new_key:?}");
    drop(writer);
}

#[tokio::test]
async fn cached_replays_take_no_write_lock() {
    // Goal: with the replay cache (the default), a replay of a record this store completed
    // is answered while another writer holds the lock; a new key waits for it.
    let t = open_with(|options| options.busy_timeout(Duration::from_millis(200))).await;
    let done = id("alice", "done");
    let fp = fingerprint("a");
    let claim = expect_claim(t.store.claim(&done, &fp, at(1_000), &policy()).await.unwrap());
    let _ = t.store.complete(&done, claim.fence, response("pay_1"), at(1_100), &policy()).await.unwrap();

    let writer = t.store.begin_write().await.expect("the write lock is free");
    assert_eq!(t.store.claim(&done, &fp, at(1_200), &policy()).await.unwrap(), replay("pay_1", 1_100));
    let new_key = t.store.claim(&id("alice", "new"), &fp, at(1_200), &policy()).await;
    assert!(matches!(new_key, Err(StoreError::Unavailable { .. })), "{new_key:?}");
    drop(writer);
}
