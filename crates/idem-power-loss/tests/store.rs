//! G7 under a power loss, on real files: the store in a child process writes through the
//! VFS, the child is killed with `SIGKILL`, its unsynced writes are rolled back, and a
//! plain store (default VFS) reads what is left.

mod support;

use idem_core::{Decision, Fenced, Record, RecordState, Store, StoredResponse};
use idem_power_loss::{VFS_NAME, register, roll_back_unsynced};
use idem_sqlite::{ClaimSync, SqliteOptions, SqliteStore};
use support::{NOW, block_on, child_role, copy_as_killed, fingerprint, id, park, policy, read_back, say, spawn};

/// The child side of every test here; a no-op in the parent.
#[test]
fn child() {
    let Some((role, db)) = child_role() else { return };
    register().expect("registering the VFS");
    let claim_sync = if role.ends_with("deferred") { ClaimSync::Deferred } else { ClaimSync::EveryCommit };
    let options = SqliteOptions::new(&db).vfs(VFS_NAME).claim_sync(claim_sync);
    block_on(async {
        let store = SqliteStore::open(options).await.expect("opening through the VFS");
        match role.split(':').next() {
            Some("one") => complete_then_claim(&store).await,
            Some("many") => complete_many(&store, role.split(':').nth(1).expect("a prefix")).await,
            _ => panic!("unknown role {role}"),
        }
        say("PARKED");
        park()
    })
}

/// Completes `done`, then claims `pending` and leaves it in flight.
async fn complete_then_claim(store: &SqliteStore) {
    complete(store, "done").await;
    let Decision::Execute(_) = store.claim(&id("pending"), &fingerprint(), NOW, &policy()).await.expect("claim") else {
        panic!("a new key executes")
    };
    say("CLAIMED pending");
}

/// Completes `<prefix>-0`, `<prefix>-1`, ... saying each once it is answered.
async fn complete_many(store: &SqliteStore, prefix: &str) {
    for n in 0..1_000 {
        let key = format!("{prefix}-{n}");
        complete(store, &key).await;
        say(&format!("ACK {key}"));
    }
}

async fn complete(store: &SqliteStore, key: &str) {
    let Decision::Execute(claim) = store.claim(&id(key), &fingerprint(), NOW, &policy()).await.expect("claim") else {
        panic!("a new key executes")
    };
    let fenced = store.complete(&id(key), claim.fence, response(key), NOW, &policy()).await.expect("complete");
    assert_eq!(fenced, Fenced::Applied);
}

fn response(key: &str) -> StoredResponse {
    StoredResponse::new(201, key.as_bytes().to_vec())
}

fn completed(record: Option<&Record>) -> Option<&StoredResponse> {
    match &record?.state {
        RecordState::Completed { response, .. } => Some(response),
        RecordState::InFlight { .. } | RecordState::Tombstone => None,
    }
}

fn in_flight(record: Option<&Record>) -> bool {
    matches!(record.map(|record| &record.state), Some(RecordState::InFlight { .. }))
}

/// Runs the `one` role with `setting`, kills it, keeps a control copy, rolls back.
/// Returns the records `done` and `pending` after the power loss and in the control,
/// and how many writes the roll-back took back.
fn one_power_loss(setting: &str) -> ([Option<Record>; 2], [Option<Record>; 2], usize) {
    let dir = tempfile::tempdir().unwrap();
    let control_dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("idem.db");
    let mut writer = spawn("child", &format!("one:{setting}"), &db);
    writer.expect("CLAIMED pending");
    writer.kill();
    let control = copy_as_killed(&db, control_dir.path());

    let summary = roll_back_unsynced(&db).unwrap();
    let names: Vec<_> = summary.files.iter().map(|file| file.path.clone()).collect();
    assert_eq!(names, [db.clone(), support::suffixed(&db, "-wal")], "the store wrote through the VFS");
    assert!(summary.shm_removed);
    assert!(!idem_power_loss::side_file(&db).exists());

    let [after_done, after_pending] = read_back(&db, &["done", "pending"]).try_into().unwrap();
    let [control_done, control_pending] = read_back(&control, &["done", "pending"]).try_into().unwrap();
    ([after_done, after_pending], [control_done, control_pending], summary.records())
}

/// (a) With every commit synced, what the store answered survives: the completion and
/// the claim after it.
#[test]
fn every_commit_keeps_the_completion_and_the_claim() {
    let ([done, pending], _, _) = one_power_loss("every-commit");
    assert_eq!(completed(done.as_ref()), Some(&response("done")));
    assert!(in_flight(pending.as_ref()), "an EveryCommit claim is synced: {pending:?}");
}

/// (b) With deferred claim sync, the completion survives (G7) and the claim after it,
/// never synced, is lost; a kill alone (the control copy) loses neither.
#[test]
fn deferred_keeps_the_completion_and_loses_the_unsynced_claim() {
    let ([done, pending], [control_done, control_pending], dropped) = one_power_loss("deferred");
    assert_eq!(completed(done.as_ref()), Some(&response("done")));
    assert_eq!(pending, None, "the deferred claim was never synced");
    assert!(dropped > 0);
    assert_eq!(completed(control_done.as_ref()), Some(&response("done")));
    assert!(in_flight(control_pending.as_ref()), "a kill alone keeps the claim: {control_pending:?}");
}

/// (d) Three processes complete keys concurrently on one file in WAL mode, all through
/// the VFS; all are killed mid-run, and every completion any of them answered survives.
fn several_processes(setting: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("idem.db");
    // Create and migrate the file once, so the writers do not race to set it up.
    let claim_sync = if setting == "deferred" { ClaimSync::Deferred } else { ClaimSync::EveryCommit };
    register().unwrap();
    block_on(async {
        SqliteStore::open(SqliteOptions::new(&db).vfs(VFS_NAME).claim_sync(claim_sync)).await.unwrap().close().await;
    });
    let mut writers: Vec<_> =
        ["a", "b", "c"].iter().map(|prefix| spawn("child", &format!("many:{prefix}:{setting}"), &db)).collect();
    let mut acknowledged = Vec::new();
    for (writer, prefix) in writers.iter_mut().zip(["a", "b", "c"]) {
        // Each has answered ten while the others write too.
        while acknowledged.iter().filter(|key: &&String| key.starts_with(prefix)).count() < 10 {
            acknowledged.push(writer.expect("ACK "));
        }
    }
    for writer in &mut writers {
        writer.kill();
    }
    for writer in &mut writers {
        acknowledged.extend(writer.drain("ACK "));
    }
    let summary = roll_back_unsynced(&db).unwrap();
    assert!(summary.shm_removed);
    assert!(summary.files.iter().any(|file| file.path == support::suffixed(&db, "-wal")), "the writers used the VFS");

    let keys: Vec<&str> = acknowledged.iter().map(String::as_str).collect();
    for (key, record) in keys.iter().zip(read_back(&db, &keys)) {
        assert_eq!(completed(record.as_ref()), Some(&response(key)), "{key} was answered, so it survives");
    }
}

#[test]
fn several_processes_every_commit() {
    several_processes("every-commit");
}

#[test]
fn several_processes_deferred() {
    several_processes("deferred");
}
