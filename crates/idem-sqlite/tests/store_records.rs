//! SqliteStore on real SQLite files: what idem-core's conformance suite
//! (`tests/conformance.rs`) does not see of the records themselves. The first fence and the
//! anonymous principal as stored, fences across release, take-over, purge and reopen,
//! concurrency across connections, durability, purging, renewals that persist and move the
//! purge index, and the usage row and the `stored_bytes` column.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{at, expect_claim, fingerprint, id, open, options_in, policy, replay, replay_of, response};
use idem_core::{Claim, Decision, Fence, Fenced, Holder, Record, RecordState, Refusal, Renewal, Store};
use idem_sqlite::{SqliteOptions, SqliteStore, Usage};

// ---- what the rows hold ----

#[tokio::test]
async fn absent_record_executes_with_first_fence() {
    // Goal: a new record id executes under fence 1 and is stored in flight with its lease.
    let t = open().await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let decision = t.store.claim(&id, &fp, at(1_000), &policy()).await.unwrap();
    assert_eq!(decision, Decision::Execute(Claim { fence: Fence::FIRST, lease_expires_at: at(2_000) }));
    let stored = t.store.get(&id).await.unwrap().expect("the claim is stored");
    assert_eq!(stored.fence, Fence::FIRST);
    assert_eq!(stored.state, RecordState::InFlight { lease_expires_at: at(2_000), holder: Holder::NONE, renewals: 0 });
    assert_eq!((stored.created_at, stored.expires_at), (at(1_000), at(11_000)));
}

#[tokio::test]
async fn principals_never_share_a_record() {
    // Goal: the same key from two principals (one anonymous) makes two records (G4).
    let t = open().await;
    let fp = fingerprint("a");
    let alice = expect_claim(t.store.claim(&id("alice", "k1"), &fp, at(0), &policy()).await.unwrap());
    let _ = t.store.complete(&id("alice", "k1"), alice.fence, response("alice's"), at(0), &policy()).await.unwrap();
    let decision = t.store.claim(&id("", "k1"), &fp, at(0), &policy()).await.unwrap();
    assert!(matches!(decision, Decision::Execute(_)), "got {decision:?}");
    let decision = t.store.claim(&id("bob", "k1"), &fp, at(0), &policy()).await.unwrap();
    assert!(matches!(decision, Decision::Execute(_)), "got {decision:?}");
}

// ---- fences (G3) ----

#[tokio::test]
async fn stale_fence_is_refused_and_record_untouched() {
    // Goal: after a take-over, completion and release with the old fence are refused and change nothing.
    let t = open().await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let first = expect_claim(t.store.claim(&id, &fp, at(1_000), &policy()).await.unwrap());
    let second = expect_claim(t.store.claim(&id, &fp, at(2_500), &policy()).await.unwrap());
    let before = t.store.get(&id).await.unwrap();
    let usage = t.store.usage().await.unwrap();
    let stale = Refusal::StaleFence { presented: first.fence, current: second.fence };

    let completed = t.store.complete(&id, first.fence, response("late"), at(2_600), &policy()).await.unwrap();
    assert_eq!(completed, Fenced::Refused(stale));
    assert_eq!(t.store.release(&id, first.fence).await.unwrap(), Fenced::Refused(stale));
    assert_eq!(t.store.get(&id).await.unwrap(), before);
    assert_eq!(t.store.usage().await.unwrap(), usage);
}

#[tokio::test]
async fn release_frees_the_key_and_its_fence_is_refused_afterwards() {
    // Goal: a release deletes the claim, a retry executes under a newer fence, and the released fence is refused.
    let t = open().await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let first = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    assert_eq!(t.store.release(&id, first.fence).await.unwrap(), Fenced::Applied);
    assert_eq!(t.store.get(&id).await.unwrap(), None);
    assert_eq!(t.store.usage().await.unwrap(), Usage { records: 0, stored_bytes: 0 });
    let no_record = Fenced::Refused(Refusal::NoRecord);
    assert_eq!(t.store.complete(&id, first.fence, response("x"), at(1), &policy()).await.unwrap(), no_record);
    assert_eq!(t.store.release(&id, first.fence).await.unwrap(), no_record);
    let second = expect_claim(t.store.claim(&id, &fp, at(1), &policy()).await.unwrap());
    assert!(second.fence > first.fence);
    let stale = Refusal::StaleFence { presented: first.fence, current: second.fence };
    assert_eq!(
        t.store.complete(&id, first.fence, response("x"), at(2), &policy()).await.unwrap(),
        Fenced::Refused(stale)
    );
}

#[tokio::test]
async fn fences_never_reused_across_release_take_over_purge_and_reopen() {
    // Goal: every claim of one record id gets a strictly newer fence, whatever happened in between.
    let t = open().await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let mut fences = Vec::new();
    let claim = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    fences.push(claim.fence);
    assert_eq!(t.store.release(&id, claim.fence).await.unwrap(), Fenced::Applied);
    fences.push(expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap()).fence);
    // Take-over after the lease lapses.
    let claim = expect_claim(t.store.claim(&id, &fp, at(1_000), &policy()).await.unwrap());
    fences.push(claim.fence);
    let _ = t.store.complete(&id, claim.fence, response("x"), at(1_000), &policy()).await.unwrap();
    // Purge after retention, then claim again.
    assert_eq!(t.store.purge_expired(at(11_000), 10).await.unwrap(), 1);
    fences.push(expect_claim(t.store.claim(&id, &fp, at(11_000), &policy()).await.unwrap()).fence);
    // Close, reopen, take over again.
    t.store.close().await;
    let reopened = SqliteStore::open(SqliteOptions::new(&t.path)).await.unwrap();
    fences.push(expect_claim(reopened.claim(&id, &fp, at(12_000), &policy()).await.unwrap()).fence);
    assert!(fences.windows(2).all(|pair| pair[0] < pair[1]), "fences {fences:?} must only grow");
}

// ---- concurrency ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_of_one_id_execute_exactly_once() {
    // Goal: 32 concurrent claims of one record id, through two stores on the same file
    // (as two processes would), yield exactly one Execute; the rest see Conflict.
    let t = open().await;
    let second = SqliteStore::open(SqliteOptions::new(&t.path)).await.unwrap();
    let stores = [Arc::new(t.store.clone()), Arc::new(second)];
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let mut tasks = Vec::new();
    for n in 0..32 {
        let store = Arc::clone(&stores[n % 2]);
        let (id, fp) = (id.clone(), fp);
        tasks.push(tokio::spawn(async move { store.claim(&id, &fp, at(0), &policy()).await }));
    }
    let mut executes = 0;
    for task in tasks {
        match task.await.expect("claim tasks do not panic").expect("claims succeed") {
            Decision::Execute(_) => executes += 1,
            Decision::Conflict { .. } => {}
            other => panic!("unexpected decision {other:?}"),
        }
    }
    assert_eq!(executes, 1);
    assert_eq!(t.store.usage().await.unwrap().records, 1);
}

// ---- durability ----

#[tokio::test]
async fn completed_records_replay_identically_after_reopen() {
    // Goal: close the store, reopen the same file: completed records replay byte for byte (G7),
    // in-flight claims keep their fence, and the file is in WAL with synchronous=FULL.
    let t = open().await;
    let (done, pending, fp) = (id("alice", "done"), id("", "pending"), fingerprint("a"));
    let claim = expect_claim(t.store.claim(&done, &fp, at(0), &policy()).await.unwrap());
    let stored = response("{\"payment_id\":\"pay_1\"}");
    let _ = t.store.complete(&done, claim.fence, stored.clone(), at(0), &policy()).await.unwrap();
    let pending_claim = expect_claim(t.store.claim(&pending, &fp, at(0), &policy()).await.unwrap());
    let records_before: Vec<Option<Record>> =
        vec![t.store.get(&done).await.unwrap(), t.store.get(&pending).await.unwrap()];
    t.store.close().await;

    let reopened = SqliteStore::open(SqliteOptions::new(&t.path)).await.unwrap();
    let records_after = vec![reopened.get(&done).await.unwrap(), reopened.get(&pending).await.unwrap()];
    assert_eq!(records_after, records_before);
    assert_eq!(reopened.claim(&done, &fp, at(100), &policy()).await.unwrap(), replay_of(stored, 0));
    assert_eq!(
        reopened.complete(&pending, pending_claim.fence, response("later"), at(100), &policy()).await.unwrap(),
        Fenced::Applied
    );
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(reopened.pool()).await.unwrap();
    assert_eq!(journal_mode, "wal");
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(reopened.pool()).await.unwrap();
    assert_eq!(synchronous, 2, "2 is FULL");
}

/// Set in the child process of `completed_record_survives_a_crash_of_the_process`: the file to write.
const CRASH_CHILD_PATH: &str = "IDEM_SQLITE_CRASH_CHILD_PATH";

#[tokio::test]
async fn completed_record_survives_a_crash_of_the_process() {
    // Goal: a completion that returned survives the process dying without closing anything
    // (abort: no destructors, no checkpoint), as G7 needs; run as a child of this test.
    if let Ok(path) = std::env::var(CRASH_CHILD_PATH) {
        let store = SqliteStore::open(SqliteOptions::new(&path)).await.unwrap();
        let (id, fp) = (id("alice", "k1"), fingerprint("a"));
        let claim = expect_claim(store.claim(&id, &fp, at(0), &policy()).await.unwrap());
        assert_eq!(
            store.complete(&id, claim.fence, response("pay_1"), at(0), &policy()).await.unwrap(),
            Fenced::Applied
        );
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = options_in(&dir).path().to_path_buf();
    let status = std::process::Command::new(std::env::current_exe().expect("the test binary knows its path"))
        .args(["--exact", "completed_record_survives_a_crash_of_the_process", "--test-threads=1"])
        .env(CRASH_CHILD_PATH, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the child test process starts");
    assert!(!status.success(), "the child must die by abort, after completing");
    assert!(path.exists(), "the child created the file");

    let store = SqliteStore::open(SqliteOptions::new(&path)).await.unwrap();
    let replayed = store.claim(&id("alice", "k1"), &fingerprint("a"), at(1), &policy()).await.unwrap();
    assert_eq!(replayed, replay("pay_1", 0));
}

// ---- purging ----

#[tokio::test]
async fn purge_deletes_only_expired_records_in_bounded_batches() {
    // Goal: purge removes at most batch_max expired records per call, oldest first, and
    // never a live record (nor an in-flight one whose lease outlasts its retention).
    let t = open().await;
    let fp = fingerprint("a");
    // Six records completed at t=0 (retention ends at 10 s), four at t=5 s (ends at 15 s).
    for (n, now) in (0..10).map(|n| (n, if n < 6 { 0 } else { 5_000 })) {
        let id = id("alice", &format!("k{n}"));
        let claim = expect_claim(t.store.claim(&id, &fp, at(now), &policy()).await.unwrap());
        let _ = t.store.complete(&id, claim.fence, response("x"), at(now), &policy()).await.unwrap();
    }
    let long_lease = idem_core::Policy::new(Duration::from_secs(20), Duration::from_secs(21)).unwrap();
    let _ = expect_claim(t.store.claim(&id("bob", "long"), &fp, at(0), &long_lease).await.unwrap());

    assert_eq!(t.store.purge_expired(at(10_000), 4).await.unwrap(), 4);
    assert_eq!(t.store.purge_expired(at(10_000), 4).await.unwrap(), 2);
    assert_eq!(t.store.purge_expired(at(10_000), 4).await.unwrap(), 0);
    assert_eq!(t.store.usage().await.unwrap().records, 5);
    for n in 0..10 {
        let held = t.store.get(&id("alice", &format!("k{n}"))).await.unwrap().is_some();
        assert_eq!(held, n >= 6, "record k{n}");
    }
    assert!(t.store.get(&id("bob", "long")).await.unwrap().is_some());
    assert_eq!(t.store.purge_expired(at(15_000), 0).await.unwrap(), 0, "a zero batch purges nothing");
    assert_eq!(t.store.purge_expired(at(15_000), 100).await.unwrap(), 4);
    assert_eq!(t.store.purge_expired(at(21_000), 100).await.unwrap(), 1);
    assert_eq!(t.store.usage().await.unwrap(), Usage { records: 0, stored_bytes: 0 });
}

// ---- renewal ----

#[tokio::test]
async fn renewal_persists_across_reopen_and_moves_the_purge_index() {
    // Goal: a renewed lease is in the file (a reopened store still sees it, so a retry gets
    // Conflict, not a take-over), and a lease renewed past the retention's end moves the
    // record's due_at, so purging does not forget a claim that is still held.
    let t = open().await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    // Lease 1 s, retention 10 s: the claim at 0 expires at 10 s, its lease ends at 1 s.
    let claim = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    let renewed = t.store.renew(&id, claim.fence, at(600), &policy()).await.unwrap();
    assert_eq!(renewed, Renewal::Renewed { lease_expires_at: at(1_600) });
    t.store.close().await;

    let reopened = SqliteStore::open(SqliteOptions::new(&t.path)).await.unwrap();
    let held = reopened.get(&id).await.unwrap().expect("the claim is held");
    assert_eq!(held.state, RecordState::InFlight { lease_expires_at: at(1_600), holder: Holder::NONE, renewals: 1 });
    let retry = reopened.claim(&id, &fp, at(1_200), &policy()).await.unwrap();
    let expected =
        Decision::Conflict { retry_after: Duration::from_millis(400), expires_at: at(10_000), holder: Holder::NONE };
    assert_eq!(retry, expected);

    // Renewed at 9.5 s, the lease outlasts the retention (10 s) by half a second.
    let renewed = reopened.renew(&id, claim.fence, at(9_500), &policy()).await.unwrap();
    assert_eq!(renewed, Renewal::Renewed { lease_expires_at: at(10_500) });
    let due_at: i64 = sqlx::query_scalar("SELECT due_at FROM idem_records").fetch_one(reopened.pool()).await.unwrap();
    assert_eq!(due_at, 10_500);
    assert_eq!(reopened.purge_expired(at(10_000), 10).await.unwrap(), 0, "the held claim is not due");
    assert_eq!(
        reopened.complete(&id, claim.fence, response("late but held"), at(10_200), &policy()).await.unwrap(),
        Fenced::Applied
    );
    assert_eq!(reopened.claim(&id, &fp, at(10_300), &policy()).await.unwrap(), replay("late but held", 10_200));
}

#[tokio::test]
async fn renewal_that_changes_nothing_keeps_the_row() {
    // Goal: a renewal stamped before the lease's end minus a lease (a lagging clock) answers
    // the lease as it is and leaves the row exactly as it was.
    let t = open().await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let claim = expect_claim(t.store.claim(&id, &fp, at(1_000), &policy()).await.unwrap());
    let before = t.store.get(&id).await.unwrap();
    let renewed = t.store.renew(&id, claim.fence, at(500), &policy()).await.unwrap();
    assert_eq!(renewed, Renewal::Renewed { lease_expires_at: at(2_000) });
    assert_eq!(t.store.get(&id).await.unwrap(), before);
}

// ---- usage ----

#[tokio::test]
async fn stored_bytes_column_and_usage_row_count_as_idem_core_counts() {
    // Goal: every row's stored_bytes is idem_core::usage::stored_bytes of its record, and the
    // usage row is the sum over the rows, through claims, completions, releases, take-overs
    // and a purge (which must read every id back, anonymous and oddly spelled ones too).
    let t = open().await;
    let fp = fingerprint("a");
    // The third key's characters are `"a\b`: they start with a quote, so only their
    // structured-field spelling parses back to them.
    let ids = [id("alice", "k1"), id("", "k2"), id("bob", r#""\"a\\b""#), id("bob", "k4")];
    assert_eq!(ids[2].key.as_str(), r#""a\b"#);
    for (n, id) in ids.iter().enumerate() {
        let claim = expect_claim(t.store.claim(id, &fp, at(0), &policy()).await.unwrap());
        if n % 2 == 0 {
            let body = "x".repeat(10 * n + 1);
            let _ = t.store.complete(id, claim.fence, response(&body), at(0), &policy()).await.unwrap();
        }
    }
    let _ = expect_claim(t.store.claim(&ids[1], &fp, at(5_000), &policy()).await.unwrap()); // take-over
    let k4 = t.store.get(&ids[3]).await.unwrap().expect("k4 is held");
    assert_eq!(t.store.release(&ids[3], k4.fence).await.unwrap(), Fenced::Applied);

    let mut expected = Usage { records: 0, stored_bytes: 0 };
    for id in &ids[..3] {
        let record = t.store.get(id).await.unwrap().expect("the record is held");
        let column: i64 =
            sqlx::query_scalar("SELECT stored_bytes FROM idem_records WHERE principal = ?1 AND idem_key = ?2")
                .bind(id.principal.as_str())
                .bind(id.key.as_str())
                .fetch_one(t.store.pool())
                .await
                .unwrap();
        let counted = idem_core::usage::stored_bytes(id, &record);
        assert_eq!(u64::try_from(column).unwrap(), counted, "{id:?}");
        expected = Usage { records: expected.records + 1, stored_bytes: expected.stored_bytes + counted };
    }
    assert_eq!(t.store.usage().await.unwrap(), expected);

    // Purging reads each id back from its row and gives back exactly what it counted.
    assert_eq!(t.store.purge_expired(at(60_000), 10).await.unwrap(), 3);
    assert_eq!(t.store.usage().await.unwrap(), Usage { records: 0, stored_bytes: 0 });
}
