//! A process stopped (`SIGSTOP`) while it holds a side file's lock makes another
//! process's sync or write of that file fail after a bounded wait — `SQLITE_IOERR_FSYNC`
//! (1034), `SQLITE_IOERR_WRITE` (778) — rather than hang until it resumes. The stopped
//! holder is played by a second open file description of the side file, whose `flock`
//! conflicts as another process's does.

mod support;

use std::fs::File;
use std::time::{Duration, Instant};

use idem_power_loss::{register, side_file};
use idem_sqlite::sqlx::sqlite::SqliteJournalMode;
use support::{block_on, child_role, connect_through_vfs, outcome, say, spawn, suffixed, watchdog};

/// The child: commits one row in WAL mode, then holds the `-wal`'s side file as a
/// stopped writer (`write`: shared) or a stopped sync (`sync`: exclusive) would, and
/// says how the next commit ends, how long it took, and how the one after the release
/// ends.
#[test]
fn child() {
    let Some((role, db)) = child_role() else { return };
    watchdog(Duration::from_secs(20));
    register().expect("registering the VFS");
    block_on(async {
        let mut connection = connect_through_vfs(&db, SqliteJournalMode::Wal).await;
        assert_eq!(outcome(&mut connection, "CREATE TABLE t (v INTEGER NOT NULL)").await, "ok");
        let holder = File::open(side_file(&suffixed(&db, "-wal"))).expect("the -wal's side file");
        match role.as_str() {
            "write" => holder.lock_shared().expect("holding it shared"),
            _ => holder.lock().expect("holding it exclusively"),
        }
        let started = Instant::now();
        let held = outcome(&mut connection, "INSERT INTO t VALUES (1)").await;
        say(&format!("HELD {held} {}", started.elapsed().as_secs()));
        holder.unlock().expect("releasing it");
        say(&format!("RELEASED {}", outcome(&mut connection, "INSERT INTO t VALUES (2)").await));
    });
}

/// What the child said while and after it held the lock as `role`.
fn run(role: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn("child", role, &dir.path().join("idem.db"));
    let held = child.expect("HELD ");
    let released = child.expect("RELEASED ");
    child.drain("(to its end)");
    (held, released)
}

#[test]
fn a_sync_fails_rather_than_wait_for_a_stopped_writer() {
    // The commit's write shares the lock; its sync waits 2 s for it, then fails.
    let (held, released) = run("write");
    let (code, seconds) = held.split_once(' ').expect("a code and seconds");
    assert_eq!(code, "1034", "SQLITE_IOERR_FSYNC: {held}");
    assert!(seconds.parse::<u64>().unwrap() < 10, "the wait is bounded: {held}");
    assert_eq!(released, "ok", "the file works again once the writer is gone");
}

#[test]
fn a_write_fails_rather_than_wait_for_a_stopped_sync() {
    let (held, released) = run("sync");
    assert!(held.starts_with("778 "), "SQLITE_IOERR_WRITE: {held}");
    assert_eq!(released, "ok");
}
