//! Side files in a journal directory (`register_with_journal_dir`): they land there and
//! nowhere near the database, `roll_back_unsynced_in` takes the unsynced writes back from
//! there, and the process-wide registration refuses a second, different directory.

mod support;

use std::path::Path;

use idem_power_loss::{RegisterError, register, register_with_journal_dir, roll_back_unsynced_in, side_file_in};
use idem_sqlite::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use idem_sqlite::sqlx::{self, ConnectOptions};
use support::{block_on, child_role, connect_through_vfs, park, say, spawn, suffixed};

/// The child: `rows:<journal dir>` commits a synced row and an unsynced one through the
/// VFS in WAL mode; `register-twice:<journal dir>` tries every second registration.
#[test]
fn child() {
    let Some((role, db)) = child_role() else { return };
    let (role, journal) = role.split_once(':').expect("a role and a journal directory");
    let journal = Path::new(journal);
    match role {
        "rows" => rows_child(&db, journal),
        "register-twice" => register_twice_child(journal),
        _ => panic!("unknown role {role}"),
    }
}

fn rows_child(db: &Path, journal: &Path) {
    register_with_journal_dir(journal).expect("registering the VFS");
    block_on(async {
        let mut connection = connect_through_vfs(db, SqliteJournalMode::Wal).await;
        for statement in [
            "CREATE TABLE rows (name TEXT NOT NULL)",
            "INSERT INTO rows VALUES ('synced')",
            "PRAGMA synchronous = OFF",
            "INSERT INTO rows VALUES ('unsynced')",
        ] {
            sqlx::query(statement).execute(&mut connection).await.expect(statement);
        }
        say("COMMITTED");
        park()
    })
}

fn register_twice_child(journal: &Path) {
    register_with_journal_dir(journal).expect("the first registration");
    let again = register_with_journal_dir(&journal.join("."));
    say(&format!("SAME {again:?}"));
    let other = journal.join("other");
    match register_with_journal_dir(&other) {
        Err(RegisterError::OtherJournal { registered, asked }) => {
            assert_eq!(registered.as_deref(), Some(journal.canonicalize().unwrap().as_path()));
            assert_eq!(asked.as_deref(), Some(other.canonicalize().unwrap().as_path()));
            say("OTHER refused");
        }
        outcome => say(&format!("OTHER {outcome:?}")),
    }
    match register() {
        Err(RegisterError::OtherJournal { asked: None, .. }) => say("NEXT refused"),
        outcome => say(&format!("NEXT {outcome:?}")),
    }
}

fn rows(db: &Path) -> Vec<String> {
    block_on(async {
        let mut connection = SqliteConnectOptions::new().filename(db).connect().await.unwrap();
        sqlx::query_scalar("SELECT name FROM rows ORDER BY rowid").fetch_all(&mut connection).await.unwrap()
    })
}

/// Every file in `dir` whose name ends with `.unsynced`.
fn side_files(dir: &Path) -> Vec<String> {
    let names = std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap());
    names.filter(|name| name.ends_with(idem_power_loss::SIDE_SUFFIX)).collect()
}

#[test]
fn side_files_land_in_the_journal_dir_and_the_roll_back_takes_from_there() {
    let (dir, journal) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = dir.path().join("idem.db");
    let mut writer = spawn("child", &format!("rows:{}", journal.path().display()), &db);
    writer.expect("COMMITTED");
    writer.kill();

    assert_eq!(side_files(dir.path()), Vec::<String>::new(), "nothing next to the database");
    for file in [db.clone(), suffixed(&db, "-wal")] {
        assert!(side_file_in(journal.path(), &file).exists(), "{file:?}'s side file is in the journal directory");
    }

    let summary = roll_back_unsynced_in(&db, journal.path()).unwrap();
    let journaled: Vec<_> = summary.journaled_files().map(Path::to_path_buf).collect();
    assert_eq!(journaled, [db.clone(), suffixed(&db, "-wal")]);
    assert!(summary.files[1].records > 0 && summary.shm_removed, "{summary:?}");
    assert_eq!(summary.files[1].side_file, side_file_in(journal.path(), &suffixed(&db, "-wal")));
    assert_eq!(rows(&db), ["synced"], "the unsynced commit is dropped, the synced one kept");
    assert_eq!(side_files(journal.path()), Vec::<String>::new(), "the roll-back removed the side files");
}

/// A database named through a symbolic link (as the harness might) is rolled back from
/// the side files SQLite wrote under its resolved name; the summary names the file as the
/// caller did.
#[test]
fn a_database_named_through_a_link_rolls_back_from_its_resolved_side_files() {
    let (dir, journal) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = dir.path().join("idem.db");
    let mut writer = spawn("child", &format!("rows:{}", journal.path().display()), &db);
    writer.expect("COMMITTED");
    writer.kill();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path(), &link).unwrap();

    let summary = roll_back_unsynced_in(&link.join("idem.db"), journal.path()).unwrap();
    assert_eq!(summary.files.len(), 2, "{summary:?}");
    assert_eq!(summary.files[1].path, link.join("idem.db-wal"));
    assert_eq!(rows(&db), ["synced"]);
}

#[test]
fn a_file_opened_and_synced_is_listed_with_no_records() {
    let (dir, journal) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let db = dir.path().join("idem.db");
    let mut writer = spawn("child", &format!("rows:{}", journal.path().display()), &db);
    writer.expect("COMMITTED");
    writer.kill();
    // The database file's own writes (the switch to WAL) were synced, and no checkpoint
    // wrote it since: its side file is there and empty, and still listed.
    let summary = roll_back_unsynced_in(&db, journal.path()).unwrap();
    assert_eq!(summary.files[0].path, db);
    assert_eq!(summary.files[0].records, 0, "{summary:?}");
}

#[test]
fn a_second_registration_with_another_journal_is_refused() {
    let (dir, journal) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut child = spawn("child", &format!("register-twice:{}", journal.path().display()), &dir.path().join("x.db"));
    assert_eq!(child.expect("SAME "), "Ok(())", "the same directory, spelled otherwise, is the same journal");
    assert_eq!(child.expect("OTHER "), "refused");
    assert_eq!(child.expect("NEXT "), "refused");
    child.drain("(to its end)");
}
