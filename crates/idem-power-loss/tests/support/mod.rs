//! Child processes for the power-loss tests: the test binary runs itself again with a
//! role, the child writes through the VFS and says what it was answered, and the parent
//! kills it with `SIGKILL`, as a power loss would, before rolling back.

#![allow(dead_code, unreachable_pub)] // each test binary uses part of it

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::Duration;

use idem_core::{Fingerprint, Key, Policy, Principal, Record, RecordId, Store, Timestamp};
use idem_sqlite::{SqliteOptions, SqliteStore};

/// The child's role; unset in the parent.
const ROLE_VAR: &str = "IDEM_POWER_LOSS_ROLE";
/// The database the child writes.
const DB_VAR: &str = "IDEM_POWER_LOSS_DB";

/// The role and database this process was started with, if it is a child.
pub fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(ROLE_VAR).ok()?;
    let db = std::env::var_os(DB_VAR).expect("a child is given its database");
    Some((role, PathBuf::from(db)))
}

/// A child process and its standard output.
pub struct Child {
    process: std::process::Child,
    lines: BufReader<ChildStdout>,
}

/// Starts this test binary again, running only its test `entry` with `role` on `db`.
pub fn spawn(entry: &str, role: &str, db: &Path) -> Child {
    spawn_through(&[], entry, role, db)
}

/// [`spawn`] through `wrapper`, a command that ends by executing the program and
/// arguments that follow it (e.g. `unshare --user --map-root-user --mount --`).
pub fn spawn_through(wrapper: &[&str], entry: &str, role: &str, db: &Path) -> Child {
    let test_binary = std::env::current_exe().expect("the test binary");
    let mut command = match wrapper.split_first() {
        Some((program, arguments)) => {
            let mut command = Command::new(program);
            command.args(arguments).arg(test_binary);
            command
        }
        None => Command::new(test_binary),
    };
    let mut process = command
        .args(["--exact", entry, "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .env(DB_VAR, db)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the child");
    let lines = BufReader::new(process.stdout.take().expect("piped stdout"));
    Child { process, lines }
}

impl Child {
    /// What follows `prefix` in the next line the child said that holds it. Panics if the
    /// child ended first (its panic message is on the test's stderr).
    pub fn expect(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.lines.read_line(&mut line).expect("reading the child") > 0,
                "the child ended before saying {prefix:?}"
            );
            if let Some(rest) = after(&line, prefix) {
                return rest;
            }
        }
    }

    /// Kills the child with `SIGKILL` and waits for it.
    pub fn kill(&mut self) {
        self.process.kill().expect("killing the child");
        self.process.wait().expect("reaping the child");
    }

    /// What follows `prefix` in every line the (dead) child said that the parent had not
    /// read yet.
    pub fn drain(&mut self, prefix: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut line = String::new();
        while self.lines.read_line(&mut line).expect("reading the child") > 0 {
            if let Some(rest) = after(&line, prefix) {
                found.push(rest);
            }
            line.clear();
        }
        found
    }
}

/// What follows `prefix` in `line`. The test harness may have printed `test child ... `
/// before the child's first line, so the prefix need not start the line.
fn after(line: &str, prefix: &str) -> Option<String> {
    let at = line.find(prefix)?;
    Some(line[at + prefix.len()..].trim_end().to_owned())
}

/// Says one line to the parent, at once.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

/// Waits to be killed.
pub fn park() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Runs `future` to its end on a runtime of its own.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(future)
}

/// The record id for `key`.
pub fn id(key: &str) -> RecordId {
    RecordId::new(Principal::new("tester").expect("principal"), Key::parse(key.as_bytes()).expect("key"))
}

/// The fingerprint every test request carries.
pub fn fingerprint() -> Fingerprint {
    Fingerprint::of("POST", "/power-loss", b"{}")
}

/// The one clock reading of every test request.
pub const NOW: Timestamp = Timestamp::from_unix_ms(1_000);

/// The policy of every test request.
pub fn policy() -> Policy {
    Policy::default()
}

/// The records for `keys` as a plain store (default VFS, no journaling) finds them.
pub fn read_back(db: &Path, keys: &[&str]) -> Vec<Option<Record>> {
    block_on(async {
        let store =
            SqliteStore::open(SqliteOptions::new(db).create_if_missing(false)).await.expect("reopening the store");
        let mut records = Vec::new();
        for key in keys {
            records.push(store.get(&id(key)).await.expect("reading a record"));
        }
        let check: String = idem_sqlite::sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(store.pool())
            .await
            .expect("integrity check");
        assert_eq!(check, "ok", "the database is intact after the power loss");
        store.close().await;
        records
    })
}

/// Copies the database and its `-wal` into `into` as a kill alone leaves them (the
/// control: what survives without the power loss).
pub fn copy_as_killed(db: &Path, into: &Path) -> PathBuf {
    let copy = into.join(db.file_name().expect("a file name"));
    std::fs::copy(db, &copy).expect("copying the database");
    let wal = suffixed(db, "-wal");
    if wal.exists() {
        std::fs::copy(&wal, suffixed(&copy, "-wal")).expect("copying the -wal");
    }
    copy
}

/// `path` with `suffix` appended to its name.
pub fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A connection to `db` through the VFS, creating the file, with SQLite's journal in
/// `journal_mode` and every commit synced.
pub async fn connect_through_vfs(
    db: &Path,
    journal_mode: idem_sqlite::sqlx::sqlite::SqliteJournalMode,
) -> idem_sqlite::sqlx::SqliteConnection {
    use idem_sqlite::sqlx::ConnectOptions;
    idem_sqlite::sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        .vfs(idem_power_loss::VFS_NAME)
        .journal_mode(journal_mode)
        .synchronous(idem_sqlite::sqlx::sqlite::SqliteSynchronous::Full)
        .connect()
        .await
        .expect("opening through the VFS")
}

/// Runs `statement` and says how it ended: `ok`, or SQLite's extended result code
/// (`13` SQLITE_FULL, `778` SQLITE_IOERR_WRITE, `1034` SQLITE_IOERR_FSYNC).
pub async fn outcome(connection: &mut idem_sqlite::sqlx::SqliteConnection, statement: &'static str) -> String {
    match idem_sqlite::sqlx::query(statement).execute(connection).await {
        Ok(_) => "ok".to_owned(),
        Err(idem_sqlite::sqlx::Error::Database(error)) => {
            error.code().map_or_else(|| format!("{error}"), |code| code.into_owned())
        }
        Err(error) => format!("{error}"),
    }
}

/// Ends this (child) process after `limit`, saying `HUNG`, so a parent waiting for a
/// line is never left waiting on a child stuck in a system call.
pub fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        say("HUNG");
        std::process::exit(3);
    });
}
