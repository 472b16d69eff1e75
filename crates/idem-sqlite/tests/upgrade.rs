//! The upgrade path: a file written by the schema before the key lifecycle (migrations
//! 0001 and 0002 only, rows as that version wrote them, 32-byte fingerprints) opens with
//! this store, which migrates it (0003) and reads, replays, counts, completes, lists and
//! purges its records as if it had written them.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{at, fingerprint, id, policy};
use idem_core::{
    Bytes, ClaimRequest, Decision, Fence, Fenced, Fingerprint, FingerprintVersion, Holder, KeyAdmin, ListQuery, Record,
    RecordState, Store, StoredResponse, usage,
};
use idem_sqlite::sqlx::migrate::Migrator;
use idem_sqlite::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use idem_sqlite::sqlx::{self, Connection, SqliteConnection};
use idem_sqlite::{MIGRATIONS_TABLE, SqliteOptions, SqliteStore, Usage};

/// The last migration of the schema before this one.
const PREVIOUS_SCHEMA: i64 = 2;

/// The completed record's bytes as the previous version counted them: id ("alice" +
/// "k1") 7, fixed 64, header name and value 12 + 16, body 5.
const DONE_BYTES: i64 = 7 + 64 + 12 + 16 + 5;
/// The in-flight record's: id 7, fixed 64.
const HELD_BYTES: i64 = 7 + 64;

/// The header encoding (version 1, one header), byte for byte as the previous version wrote it.
fn old_headers() -> Vec<u8> {
    let mut encoded = vec![1, 0, 0, 0, 1, 0, 0, 0, 12];
    encoded.extend_from_slice(b"content-type");
    encoded.extend_from_slice(&[0, 0, 0, 16]);
    encoded.extend_from_slice(b"application/json");
    encoded
}

fn stored_response() -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![("content-type".to_owned(), Bytes::from_static(b"application/json"))],
        body: Bytes::from_static(b"pay_1"),
    }
}

/// A file at the previous schema, holding what the previous version wrote for: `k1`
/// claimed at 0 and completed at 1 s (fence 1), and `k2` claimed at 1 s, in flight until
/// 2 s (fence 2), both with a 10 s retention.
async fn previous_version_file(path: &Path) {
    let connect =
        SqliteConnectOptions::new().filename(path).create_if_missing(true).journal_mode(SqliteJournalMode::Wal);
    let mut connection = SqliteConnection::connect_with(&connect).await.expect("a new file");
    let mut migrator =
        Migrator::new(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))).await.expect("the migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator.run_to(PREVIOUS_SCHEMA, &mut connection).await.expect("0001 and 0002 apply");
    let digest = fingerprint("a").digest().to_vec();
    assert_eq!(digest.len(), 32, "the previous version kept 32 bytes");
    sqlx::query(
        "INSERT INTO idem_records (principal, idem_key, fingerprint, fence, state, lease_expires_at, expires_at, \
         forgettable_at, status, headers, body, stored_bytes) VALUES \
         ('alice', 'k1', ?1, 1, 'completed', NULL, 11000, 11000, 201, ?2, CAST('pay_1' AS BLOB), ?3), \
         ('alice', 'k2', ?1, 2, 'in_flight', 2000, 11000, 11000, NULL, NULL, NULL, ?4)",
    )
    .bind(&digest)
    .bind(old_headers())
    .bind(DONE_BYTES)
    .bind(HELD_BYTES)
    .execute(&mut connection)
    .await
    .expect("the previous version's rows");
    sqlx::query("UPDATE idem_fence SET next_fence = 3 WHERE id = 1").execute(&mut connection).await.unwrap();
    sqlx::query("UPDATE idem_usage SET records = 2, stored_bytes = ?1 WHERE id = 1")
        .bind(DONE_BYTES + HELD_BYTES)
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.expect("the file closes");
}

#[tokio::test]
async fn a_file_of_the_previous_schema_reads_back_and_replays() {
    // Goal: after the upgrade, the old completed row reads back as the record it was (no
    // holder, renewals, replays or tombstone; created at 0, unknown), replays with its
    // expiry to the byte fingerprint and to a semantic one that names it as earlier,
    // counts replays in its new column; the old claim conflicts and completes; the usage
    // the old rows were counted with agrees with idem-core's; purging finds them by the
    // renamed due_at index; fences go on from the old counter.
    let dir = common::temp_dir(false);
    let path = dir.path().join("idem.db");
    previous_version_file(&path).await;
    let store = SqliteStore::open(SqliteOptions::new(&path)).await.expect("the store migrates the old file");
    let (done, held, fp) = (id("alice", "k1"), id("alice", "k2"), fingerprint("a"));

    let record = store.get(&done).await.unwrap().expect("the old row reads back");
    let completed = RecordState::Completed { response: stored_response(), replays: 0, tombstone_until: None };
    let expected =
        Record { fingerprint: fp, fence: Fence::new(1), created_at: at(0), expires_at: at(11_000), state: completed };
    assert_eq!(record, expected);
    assert_eq!(usage::stored_bytes(&done, &record), DONE_BYTES.unsigned_abs(), "old accounting agrees");
    let replay = Decision::Replay { response: stored_response(), expires_at: at(11_000) };
    assert_eq!(store.claim(&done, &fp, at(2_000), &policy()).await.unwrap(), replay);
    let semantic = Fingerprint::new(FingerprintVersion::Semantic, [7; 32]);
    let upgraded = ClaimRequest { fingerprint: semantic, earlier: Some(fp), holder: Holder::NONE };
    assert_eq!(store.claim(&done, &upgraded, at(2_000), &policy()).await.unwrap(), replay);
    let alone = store.claim(&done, &semantic, at(2_000), &policy()).await.unwrap();
    assert_eq!(alone, Decision::Mismatch { expires_at: at(11_000) }, "versions never cross-match");
    assert!(store.count_replay(&done, at(2_000)).await.unwrap());

    let in_flight = store.get(&held).await.unwrap().expect("the old claim reads back");
    assert_eq!(
        in_flight.state,
        RecordState::InFlight { lease_expires_at: at(2_000), holder: Holder::NONE, renewals: 0 }
    );
    assert_eq!(usage::stored_bytes(&held, &in_flight), HELD_BYTES.unsigned_abs());
    let conflict =
        Decision::Conflict { retry_after: Duration::from_millis(500), expires_at: at(11_000), holder: Holder::NONE };
    assert_eq!(store.claim(&held, &fp, at(1_500), &policy()).await.unwrap(), conflict);
    let response = StoredResponse::new(200, &b"late"[..]);
    assert_eq!(store.complete(&held, Fence::new(2), response, at(1_600), &policy()).await.unwrap(), Fenced::Applied);

    let page = store.list(&ListQuery::new(10).unwrap()).await.unwrap();
    assert_eq!(page.records.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), [done.clone(), held.clone()]);
    assert!(matches!(page.records[0].1.state, RecordState::Completed { replays: 1, .. }));
    let fresh = store.claim(&id("alice", "k3"), &fp, at(3_000), &policy()).await.unwrap();
    assert_eq!(fresh.claim().map(|claim| claim.fence), Some(Fence::new(3)), "fences go on from the old counter");

    assert_eq!(store.purge_expired(at(11_000), 10).await.unwrap(), 1, "the old row is due at its old time");
    assert_eq!(store.purge_expired(at(13_000), 10).await.unwrap(), 2);
    assert_eq!(
        store.usage().await.unwrap(),
        Usage { records: 0, stored_bytes: 0 },
        "old and new rows gave back what they counted"
    );
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_index_list('idem_records') WHERE origin = 'c' ORDER BY name")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(indexes, ["idem_records_by_due_at"]);
}
