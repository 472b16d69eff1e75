//! `idem serve` on a store that runs out of room, then gets it back: the real process on a
//! real SQLite file, two ways.
//!
//! - Any user: a file-size limit on the server process (`RLIMIT_FSIZE`, set on the running
//!   process with util-linux `prlimit --pid`; a user may lower its own processes' soft limit
//!   and raise it again up to the hard one). No file may grow past its size at that moment:
//!   a write past it fails with `EFBIG` (the server ignores `SIGXFSZ`, started through
//!   `sh -c 'trap "" XFSZ; exec ...'`, so it gets the error rather than the signal), which
//!   SQLite answers with `SQLITE_IOERR_WRITE`, "disk I/O error". Raising the limit again
//!   plays the freed space.
//! - As root (CI): a small tmpfs, filled to the last block by a file of the test's; SQLite
//!   answers `SQLITE_FULL`, "database or disk is full". Removing the file frees the space.
//!
//! Both reach the server the same way: idem-sqlite classes either driver error as
//! `StoreError::Unavailable`, which the server answers 503 with a problem naming the class
//! and a Retry-After, never the driver's text (that goes to the log).

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use http::Method;
use support::{Reply, ServerProcess, send};

const PAYMENT: &str = r#"{"amount": 5.00, "currency": "EUR", "destination": "disk"}"#;

/// A tmpfs of `size` mounted on a fresh directory; unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("a temp dir can be made");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount(8) runs");
        assert!(mounted.success(), "as root, a small tmpfs can be mounted");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk says it is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut filler = std::fs::File::create(&path).expect("the filler file is created");
        let chunk = vec![0_u8; 4096];
        // Bounded: the tmpfs is a few MiB, so 64 Ki chunks (256 MiB) is far more than it holds.
        for _ in 0..65_536 {
            if filler.write_all(&chunk).and_then(|()| filler.sync_data()).is_err() {
                return path;
            }
        }
        panic!("the small disk never filled up");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Where the store's room runs out, and how it comes back.
enum Room {
    /// A tmpfs, filled by a file of the test's (root).
    Tmpfs { disk: SmallDisk, filler: Option<PathBuf> },
    /// A file-size limit on the server process; `soft` is its soft limit before (any user).
    FileSizeLimit { dir: tempfile::TempDir, soft: Option<String> },
}

impl Room {
    fn dir(&self) -> &Path {
        match self {
            Room::Tmpfs { disk, .. } => disk.path(),
            Room::FileSizeLimit { dir, .. } => dir.path(),
        }
    }

    /// What the server's log says of the driver error once the room is gone.
    fn driver_error(&self) -> &'static str {
        match self {
            Room::Tmpfs { .. } => "full",
            Room::FileSizeLimit { .. } => "disk I/O error",
        }
    }

    fn fill(&mut self, server: &ServerProcess) {
        match self {
            Room::Tmpfs { disk, filler } => *filler = Some(disk.fill()),
            Room::FileSizeLimit { dir, soft } => {
                *soft = Some(prlimit(server.pid(), &["--fsize", "--output", "SOFT", "--noheadings"]));
                // No file may grow past the biggest of the store's files as they are now.
                let biggest = std::fs::read_dir(dir.path())
                    .expect("the store's directory lists")
                    .map(|entry| entry.expect("an entry").metadata().expect("its metadata").len())
                    .max()
                    .expect("the store has files");
                prlimit(server.pid(), &[&format!("--fsize={biggest}:")]);
            }
        }
    }

    fn free(&mut self, server: &ServerProcess) {
        match self {
            Room::Tmpfs { filler, .. } => {
                std::fs::remove_file(filler.take().expect("filled")).expect("the filler file is removed");
            }
            Room::FileSizeLimit { soft, .. } => {
                let soft = soft.take().expect("filled");
                prlimit(server.pid(), &[&format!("--fsize={}:", soft.trim())]);
            }
        }
    }
}

/// Runs `prlimit --pid <pid> <args>` and returns what it printed.
fn prlimit(pid: u32, args: &[&str]) -> String {
    let output =
        Command::new("prlimit").args(["--pid", &pid.to_string()]).args(args).output().expect("util-linux prlimit runs");
    assert!(output.status.success(), "prlimit {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `idem serve` on the SQLite file `db`, ignoring `SIGXFSZ` (see the module docs): `sh` sets
/// the signal to ignored and execs the server, which keeps the setting (and the pid).
fn start_server(db: &Path) -> ServerProcess {
    let mut launcher = Command::new("sh");
    launcher.args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_idem")]);
    ServerProcess::spawn(launcher, "127.0.0.1:0", &format!("sqlite://{}", db.display()), &[])
}

async fn pay(server: &ServerProcess, key: &str) -> Reply {
    let headers = [("idempotency-key", key), ("content-type", "application/json")];
    send(server.addr, Method::POST, "/payments", &headers, PAYMENT).await.expect("the server answers")
}

async fn health(server: &ServerProcess) -> Reply {
    send(server.addr, Method::GET, "/healthz", &[], "").await.expect("the server answers")
}

/// The scenario on `room`: room runs out under a running server, then comes back.
async fn out_of_room_is_reported_and_recovered_from(mut room: Room) {
    let server = start_server(&room.dir().join("idem.db"));
    let first = pay(&server, "before-full").await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(health(&server).await.status, 200);

    room.fill(&server);
    // The WAL may still have room for a few frames: write until the store refuses (bounded).
    let mut refused = None;
    for n in 0..200 {
        let reply = pay(&server, &format!("while-full-{n}")).await;
        if reply.status == 503 {
            refused = Some(reply);
            break;
        }
        assert_eq!(reply.status, 201, "{reply:?}");
    }
    let refused = refused.expect("a store without room refuses writes within 200 payments");
    let text = String::from_utf8_lossy(&refused.body).to_string();
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    for driver_text in ["SQLITE", "sqlite", "code", "database or disk is full (code", "disk I/O error"] {
        assert!(!text.contains(driver_text), "no driver text in the problem: {text}");
    }
    let unhealthy = health(&server).await;
    assert_eq!(unhealthy.status, 503, "{unhealthy:?}");
    // A replay needs no write.
    let replay = pay(&server, "before-full").await;
    assert!(replay.status == 201 && replay.is_replay(), "{replay:?}");

    room.free(&server);
    // Room is back: the same process writes again, without a restart (bounded retries
    // while SQLite's connections come back).
    let mut recovered = None;
    for n in 0..20 {
        let reply = pay(&server, &format!("after-free-{n}")).await;
        if reply.status == 201 {
            recovered = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered.is_some(), "writes succeed again once there is room");
    assert_eq!(health(&server).await.status, 200);
    let replay = pay(&server, "before-full").await;
    assert!(replay.is_replay() && replay.body == first.body, "the first payment is still there");

    // The log keeps the full driver error.
    let driver_error = room.driver_error();
    let log = server.kill_and_read_log();
    assert!(log.iter().any(|line| line.contains(driver_error)), "the log names {driver_error:?}: {log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_recovered_from_without_a_restart() {
    // Goal: when the store runs out of room, new payments and /healthz answer 503 naming the
    // failure class (no SQLite text), replays still answer, and once there is room again
    // writes succeed in the same process; nothing acknowledged is lost. A file-size limit
    // for any user; a real full disk (tmpfs) as well as root.
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    out_of_room_is_reported_and_recovered_from(Room::FileSizeLimit { dir, soft: None }).await;
    if idem_testkit::is_root() {
        let disk = SmallDisk::mount("3m");
        out_of_room_is_reported_and_recovered_from(Room::Tmpfs { disk, filler: None }).await;
    } else {
        eprintln!("not root: the full tmpfs case needs a mount, so only the file-size limit ran (CI runs both)");
    }
}
