//! A full disk under the VFS looks like a full disk to SQLite: `SQLITE_FULL` (13), never
//! an I/O error (`SQLITE_IOERR_WRITE`, 778). With the side files in a journal directory
//! on another filesystem, a full database filesystem fails only what needs new space (an
//! in-place overwrite still succeeds); with them on the full filesystem too, the failed
//! undo append says `SQLITE_FULL`.
//!
//! The filesystem is a small tmpfs mounted for the test: by the test as root; otherwise by
//! the child, run in a user and mount namespace of its own (`unshare --user
//! --map-root-user --mount`), where any user may mount a tmpfs (the parent never sees it).
//! Where neither is allowed (unprivileged user namespaces switched off), the mount tests
//! check the mount was refused for want of permission and stop there, saying so; the
//! `/dev/full` test (side files that are links to `/dev/full`, whose every write fails
//! with `ENOSPC`) runs anyway.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use idem_power_loss::{register, register_with_journal_dir, side_file_in};
use idem_sqlite::sqlx::sqlite::SqliteJournalMode;
use support::{block_on, child_role, connect_through_vfs, outcome, say, spawn_through, suffixed, watchdog};

/// The role of a child that mounts the small tmpfs on its database's directory itself,
/// then fills it as `fill` does.
const MOUNT_AND_FILL: &str = "mount-and-fill";

/// The command a child runs through to mount a tmpfs without root.
const USER_NAMESPACE: [&str; 5] = ["unshare", "--user", "--map-root-user", "--mount", "--"];

/// The child: on `db`, makes a table with one row, fills `db`'s filesystem (`fill`) or
/// not, then says how an in-place overwrite and a growing insert end.
#[test]
fn child() {
    let Some((role, db)) = child_role() else { return };
    watchdog(Duration::from_secs(30));
    let (mut role, journal) = role.split_once(':').expect("a role and a journal directory");
    if role == MOUNT_AND_FILL {
        // Root of a mount namespace of its own: the tmpfs is this process's alone.
        let mounted = mount_tmpfs(db.parent().expect("a directory"));
        assert!(mounted.status.success(), "mounting a tmpfs in the child's namespaces: {mounted:?}");
        role = "fill";
    }
    if journal.is_empty() {
        register().expect("registering the VFS");
    } else {
        register_with_journal_dir(Path::new(journal)).expect("registering the VFS");
    }
    if role == "dev-full" {
        // Every side file is a link to /dev/full before SQLite opens a file.
        for suffix in ["", "-journal"] {
            let side = side_file_in(Path::new(journal), &suffixed(&db, suffix));
            std::os::unix::fs::symlink("/dev/full", side).expect("linking a side file to /dev/full");
        }
    }
    block_on(async {
        // No journal file: an update overwrites its page in the database, in place.
        let mut connection = connect_through_vfs(&db, SqliteJournalMode::Memory).await;
        say(&format!("CREATE {}", outcome(&mut connection, "CREATE TABLE t (v BLOB NOT NULL)").await));
        say(&format!("INSERT {}", outcome(&mut connection, "INSERT INTO t VALUES (zeroblob(1000))").await));
        if role == "fill" {
            fill(db.parent().expect("a directory"));
        }
        say(&format!("OVERWRITE {}", outcome(&mut connection, "UPDATE t SET v = randomblob(1000)").await));
        say(&format!("GROW {}", outcome(&mut connection, "INSERT INTO t VALUES (zeroblob(500000))").await));
    });
}

/// Fills the filesystem of `dir` to the last byte with a file of its own.
fn fill(dir: &Path) {
    let mut filler = std::fs::File::create(dir.join("filler")).expect("creating the filler");
    for chunk in [1 << 16, 1 << 12, 1] {
        while filler.write_all(&vec![1; chunk]).is_ok() {}
    }
}

/// Mounts a 1 MiB tmpfs on `dir`.
fn mount_tmpfs(dir: &Path) -> std::process::Output {
    Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(dir).output().expect("running mount")
}

/// A 1 MiB tmpfs for one test: mounted by this process (unmounted when dropped), or by the
/// child in namespaces of its own (gone with the child).
enum Tmpfs {
    Here(tempfile::TempDir),
    InChild(tempfile::TempDir),
}

impl Tmpfs {
    /// Mounts it here; if this process may not mount, checks that is why and has the child
    /// mount it in a user namespace; if that is not allowed either, says so and answers `None`.
    fn mount() -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = mount_tmpfs(dir.path());
        if mounted.status.success() {
            return Some(Tmpfs::Here(dir));
        }
        let said = String::from_utf8_lossy(&mounted.stderr).to_lowercase();
        assert!(said.contains("permission denied") || said.contains("superuser"), "mount failed otherwise: {said}");
        let unshare = Command::new(USER_NAMESPACE[0]).args(&USER_NAMESPACE[1..]).arg("true").output();
        match unshare {
            Ok(unshare) if unshare.status.success() => Some(Tmpfs::InChild(dir)),
            unshare => {
                let why = unshare.map_or_else(|e| e.to_string(), |o| String::from_utf8_lossy(&o.stderr).into_owned());
                eprintln!(
                    "not allowed to mount a tmpfs ({said}) nor to make a user namespace ({}); the full-filesystem \
                     case is not run here (CI runs it as root)",
                    why.trim()
                );
                None
            }
        }
    }

    fn path(&self) -> PathBuf {
        match self {
            Tmpfs::Here(dir) | Tmpfs::InChild(dir) => dir.path().to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Tmpfs::Here(dir) = self {
            let _ = Command::new("umount").arg(dir.path()).status();
        }
    }
}

/// Runs the child with `role` on `db`, side files in `journal` (`None`: next to the
/// files), and returns what it said of each step. With `Tmpfs::InChild` the child mounts
/// `tmpfs` itself, in namespaces of its own.
fn run(role: &str, db: &Path, journal: Option<&Path>, tmpfs: Option<&Tmpfs>) -> [String; 4] {
    let journal = journal.map_or_else(String::new, |journal| journal.display().to_string());
    let mut child = match tmpfs {
        Some(Tmpfs::InChild(_)) => {
            assert_eq!(role, "fill", "only a filling child mounts");
            spawn_through(&USER_NAMESPACE, "child", &format!("{MOUNT_AND_FILL}:{journal}"), db)
        }
        _ => spawn_through(&[], "child", &format!("{role}:{journal}"), db),
    };
    let said = ["CREATE ", "INSERT ", "OVERWRITE ", "GROW "].map(|step| child.expect(step));
    child.drain("(to its end)");
    said
}

#[test]
fn a_full_database_filesystem_fails_only_what_needs_space_while_the_journal_is_elsewhere() {
    let Some(tmpfs) = Tmpfs::mount() else { return };
    let journal = tempfile::tempdir().unwrap();
    let said = run("fill", &tmpfs.path().join("idem.db"), Some(journal.path()), Some(&tmpfs));
    assert_eq!(said, ["ok", "ok", "ok", "13"], "create, insert, overwrite in place, grow past the full disk");
}

#[test]
fn a_full_filesystem_under_database_and_side_files_is_sqlite_full_not_an_io_error() {
    let Some(tmpfs) = Tmpfs::mount() else { return };
    let said = run("fill", &tmpfs.path().join("idem.db"), None, Some(&tmpfs));
    // The overwrite fails too: its undo record needs the space a real disk would not.
    assert_eq!(said, ["ok", "ok", "13", "13"]);
}

#[test]
fn a_side_file_that_cannot_grow_is_sqlite_full_not_an_io_error() {
    let (dir, journal) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let said = run("dev-full", &dir.path().join("idem.db"), Some(journal.path()), None);
    assert_eq!(said[0], "13", "the first write's undo record hit ENOSPC: {said:?}");
}
