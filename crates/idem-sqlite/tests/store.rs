//! SqliteStore on real SQLite files: what idem-core's conformance suite
//! (`tests/conformance.rs`) does not see. The first fence and the anonymous principal as
//! stored, the usage row and the `stored_bytes` column, renewals that persist and move the
//! purge index, atomic mode, concurrency across connections, durability, purging, damaged
//! rows, and bad files.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{at, fingerprint, id, open, open_with, options_in, policy, replay, replay_of, response};
use idem_core::{Claim, Decision, Fence, Fenced, Holder, Record, RecordState, Refusal, Renewal, Store, StoreError};
use idem_sqlite::{OpenError, SqliteOptions, SqliteStore, Usage};

fn expect_claim(decision: Decision) -> Claim {
    decision.claim().unwrap_or_else(|| panic!("expected a claim, got {decision:?}"))
}

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

// ---- atomic mode ----

async fn create_payments(store: &SqliteStore) {
    sqlx::query("CREATE TABLE payments (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)")
        .execute(store.pool())
        .await
        .expect("the application's table is created");
}

async fn payments(store: &SqliteStore) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM payments ORDER BY id")
        .fetch_all(store.pool())
        .await
        .expect("payments are readable")
}

#[tokio::test]
async fn atomic_completion_commits_with_business_row() {
    // Goal: a business row and complete_in in one transaction commit together; retries replay.
    let t = open().await;
    create_payments(&t.store).await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let claim = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    let stored = response("{\"payment_id\":\"pay_1\"}");
    let mut tx = t.store.begin_write().await.unwrap();
    sqlx::query("INSERT INTO payments VALUES ('pay_1', 100)").execute(&mut *tx).await.unwrap();
    let outcome = t.store.complete_in(&mut tx, &id, claim.fence, stored.clone(), at(10), &policy()).await.unwrap();
    assert_eq!(outcome, Fenced::Applied);
    tx.commit().await.unwrap();
    assert_eq!(payments(&t.store).await, ["pay_1"]);
    assert_eq!(t.store.claim(&id, &fp, at(20), &policy()).await.unwrap(), replay_of(stored, 10));
}

#[tokio::test]
async fn atomic_completion_with_stale_fence_rolls_back_business_row() {
    // Goal: a handler whose lease lapsed and was taken over gets Refused, and its rollback
    // removes its business row; the new claim is untouched (G1 in atomic mode).
    let t = open().await;
    create_payments(&t.store).await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let stale = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    let current = expect_claim(t.store.claim(&id, &fp, at(1_500), &policy()).await.unwrap());
    let before = t.store.get(&id).await.unwrap();

    let mut tx = t.store.begin_write().await.unwrap();
    sqlx::query("INSERT INTO payments VALUES ('pay_stale', 100)").execute(&mut *tx).await.unwrap();
    let outcome =
        t.store.complete_in(&mut tx, &id, stale.fence, response("stale"), at(1_600), &policy()).await.unwrap();
    assert_eq!(outcome, Fenced::Refused(Refusal::StaleFence { presented: stale.fence, current: current.fence }));
    tx.rollback().await.unwrap();

    assert!(payments(&t.store).await.is_empty(), "the stale handler's payment must not exist");
    assert_eq!(t.store.get(&id).await.unwrap(), before);
}

#[tokio::test]
async fn atomic_completion_twice_with_same_fence_is_refused() {
    // Goal: a second transaction completing with the fence that already completed is
    // refused, so its business writes (a second payment) roll back.
    let t = open().await;
    create_payments(&t.store).await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let claim = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    let mut usage_after_first = None;
    for (payment, expected) in [
        ("pay_1", Fenced::Applied),
        ("pay_2", Fenced::Refused(Refusal::AlreadyCompleted { completed_by: claim.fence })),
    ] {
        let mut tx = t.store.begin_write().await.unwrap();
        sqlx::query("INSERT INTO payments VALUES (?1, 100)").bind(payment).execute(&mut *tx).await.unwrap();
        let outcome =
            t.store.complete_in(&mut tx, &id, claim.fence, response(payment), at(1), &policy()).await.unwrap();
        assert_eq!(outcome, expected);
        match outcome {
            Fenced::Applied => tx.commit().await.unwrap(),
            Fenced::Refused(_) => tx.rollback().await.unwrap(),
        }
        if payment == "pay_1" {
            usage_after_first = Some(t.store.usage().await.unwrap());
        }
    }
    assert_eq!(payments(&t.store).await, ["pay_1"], "the repeated completion's payment rolled back");
    assert_eq!(t.store.claim(&id, &fp, at(2), &policy()).await.unwrap(), replay("pay_1", 1));
    assert_eq!(Some(t.store.usage().await.unwrap()), usage_after_first, "the refusal wrote nothing");
}

#[tokio::test]
async fn atomic_completion_after_a_separate_completion_is_refused() {
    // Goal: complete_in with the fence that Store::complete already used is refused too
    // (the record holds a response from outside this transaction), so the business write rolls back.
    let t = open().await;
    create_payments(&t.store).await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let claim = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    let _ = t.store.complete(&id, claim.fence, response("separate"), at(1), &policy()).await.unwrap();
    let mut tx = t.store.begin_write().await.unwrap();
    sqlx::query("INSERT INTO payments VALUES ('pay_1', 100)").execute(&mut *tx).await.unwrap();
    let outcome = t.store.complete_in(&mut tx, &id, claim.fence, response("atomic"), at(2), &policy()).await.unwrap();
    assert_eq!(outcome, Fenced::Refused(Refusal::AlreadyCompleted { completed_by: claim.fence }));
    tx.rollback().await.unwrap();
    assert!(payments(&t.store).await.is_empty());
    assert_eq!(t.store.claim(&id, &fp, at(3), &policy()).await.unwrap(), replay("separate", 1));
}

#[tokio::test]
async fn dropped_atomic_transaction_leaves_claim_in_flight() {
    // Goal: a handler that completes but never commits (a crash) leaves no completion and no business row.
    let t = open().await;
    create_payments(&t.store).await;
    let (id, fp) = (id("alice", "k1"), fingerprint("a"));
    let claim = expect_claim(t.store.claim(&id, &fp, at(0), &policy()).await.unwrap());
    {
        let mut tx = t.store.begin_write().await.unwrap();
        sqlx::query("INSERT INTO payments VALUES ('pay_1', 100)").execute(&mut *tx).await.unwrap();
        let _ = t.store.complete_in(&mut tx, &id, claim.fence, response("x"), at(1), &policy()).await.unwrap();
    }
    assert!(payments(&t.store).await.is_empty());
    let record = t.store.get(&id).await.unwrap().unwrap();
    assert!(matches!(record.state, RecordState::InFlight { .. }), "got {record:?}");
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
