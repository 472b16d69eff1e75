//! (c) The layer has teeth: a row committed with `synchronous=OFF` (never synced) is gone
//! after the roll-back, while a row committed with `synchronous=FULL` before it stays,
//! and a kill alone (the control copy) keeps both.

mod support;

use idem_power_loss::{VFS_NAME, register, roll_back_unsynced};
use idem_sqlite::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use idem_sqlite::sqlx::{self, ConnectOptions};
use support::{block_on, child_role, copy_as_killed, park, say, spawn, suffixed};

/// The child: one connection through the VFS in WAL mode, a synced row, then an
/// unsynced one.
#[test]
fn child() {
    let Some((role, db)) = child_role() else { return };
    register().expect("registering the VFS");
    block_on(async {
        let mut connection = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .vfs(VFS_NAME)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .connect()
            .await
            .expect("opening through the VFS");
        for statement in [
            "CREATE TABLE rows (name TEXT NOT NULL)",
            "INSERT INTO rows VALUES ('synced')",
            "PRAGMA synchronous = OFF",
            "INSERT INTO rows VALUES ('unsynced')",
        ] {
            sqlx::query(statement).execute(&mut connection).await.expect(statement);
        }
        if role == "checkpoint" {
            // Copies the WAL into the database and truncates the WAL, neither synced.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut connection).await.expect("checkpoint");
        }
        say("COMMITTED");
        park()
    })
}

fn rows(db: &std::path::Path) -> Vec<String> {
    block_on(async {
        let mut connection = SqliteConnectOptions::new().filename(db).connect().await.unwrap();
        sqlx::query_scalar("SELECT name FROM rows ORDER BY rowid").fetch_all(&mut connection).await.unwrap()
    })
}

/// Runs the child with `role`, kills it, checks the control copy and rolls back.
fn power_loss(role: &str) -> (std::path::PathBuf, idem_power_loss::Summary, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let control_dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("teeth.db");
    let mut writer = spawn("child", role, &db);
    writer.expect("COMMITTED");
    writer.kill();
    let control = copy_as_killed(&db, control_dir.path());
    assert_eq!(rows(&control), ["synced", "unsynced"], "a kill alone loses nothing");
    let summary = roll_back_unsynced(&db).unwrap();
    (db, summary, dir)
}

/// The unsynced writes of a checkpoint (into the database file) and of the `-wal`'s
/// truncation after it are taken back too: the `-wal` gets its synced frames back.
#[test]
fn an_unsynced_checkpoint_and_truncation_are_taken_back() {
    let (db, summary, _dir) = power_loss("checkpoint");
    let file =
        |suffix: &str| summary.files.iter().find(|file| file.path == suffixed(&db, suffix)).expect("a side file");
    assert!(file("").records > 0, "the checkpoint wrote the database: {summary:?}");
    let wal = file("-wal");
    assert_eq!(wal.size_before, 0, "the checkpoint truncated the -wal");
    assert!(wal.size_after > 0, "the -wal has its synced frames back: {summary:?}");
    assert_eq!(rows(&db), ["synced"]);
}

#[test]
fn a_commit_never_synced_is_gone_after_the_power_loss() {
    let (db, summary, _dir) = power_loss("teeth");
    let wal = summary.files.iter().find(|file| file.path == suffixed(&db, "-wal")).expect("the -wal had writes");
    assert!(wal.records > 0 && wal.bytes_dropped > 0, "{summary:?}");
    assert_eq!(rows(&db), ["synced"], "the unsynced commit is dropped, the synced one kept");
}
