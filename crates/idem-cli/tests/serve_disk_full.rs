//! `idem serve` on a disk that fills up, then frees: the real process on a real SQLite file
//! in a small tmpfs (mounted by the test; needs root, which the CI machine has).

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

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
        assert!(
            mounted.success(),
            "this test mounts a small tmpfs to fill a real disk and needs root (or CAP_SYS_ADMIN); \
             run it as root, as .ci/run does"
        );
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

async fn pay(server: &ServerProcess, key: &str) -> Reply {
    let headers = [("idempotency-key", key), ("content-type", "application/json")];
    send(server.addr, Method::POST, "/payments", &headers, PAYMENT).await.expect("the server answers")
}

async fn health(server: &ServerProcess) -> Reply {
    send(server.addr, Method::GET, "/healthz", &[], "").await.expect("the server answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_recovered_from_without_a_restart() {
    // Goal: when the disk fills, new payments and /healthz answer 503 naming the failure class
    // (no SQLite text), replays still answer, and once space is freed writes succeed again in
    // the same process; nothing acknowledged is lost.
    let disk = SmallDisk::mount("3m");
    let server = ServerProcess::sqlite(&disk.path().join("idem.db"), &[]);
    let first = pay(&server, "before-full").await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(health(&server).await.status, 200);

    let filler = disk.fill();
    // The WAL may still have room for a few frames: write until the disk refuses (bounded).
    let mut refused = None;
    for n in 0..200 {
        let reply = pay(&server, &format!("while-full-{n}")).await;
        if reply.status == 503 {
            refused = Some(reply);
            break;
        }
        assert_eq!(reply.status, 201, "{reply:?}");
    }
    let refused = refused.expect("a full disk refuses writes within 200 payments");
    let text = String::from_utf8_lossy(&refused.body).to_string();
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    for driver_text in ["SQLITE", "sqlite", "code", "database or disk is full (code"] {
        assert!(!text.contains(driver_text), "no driver text in the problem: {text}");
    }
    let unhealthy = health(&server).await;
    assert_eq!(unhealthy.status, 503, "{unhealthy:?}");
    // A replay needs no write.
    let replay = pay(&server, "before-full").await;
    assert!(replay.status == 201 && replay.is_replay(), "{replay:?}");

    std::fs::remove_file(filler).expect("the filler file is removed");
    // Space is back: the same process writes again, without a restart (bounded retries
    // while SQLite's connections come back).
    let mut recovered = None;
    for n in 0..20 {
        let reply = pay(&server, &format!("after-free-{n}")).await;
        if reply.status == 201 {
            recovered = Some(reply);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered.is_some(), "writes succeed again once space is freed");
    assert_eq!(health(&server).await.status, 200);
    let replay = pay(&server, "before-full").await;
    assert!(replay.is_replay() && replay.body == first.body, "the first payment is still there");

    // The log keeps the full driver error.
    let log = server.kill_and_read_log();
    assert!(log.iter().any(|line| line.contains("full")), "the log names the disk-full error: {log:?}");
}
