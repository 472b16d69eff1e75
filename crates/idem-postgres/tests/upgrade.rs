//! An upgrade in place: a schema that an idem before the key lifecycle migrated (migration
//! 0001 only) and wrote records into, opened by this idem. Migration 0002 runs at open,
//! and the records written the old way read back (created at 0, no holder, no counts, no
//! tombstone), replay, conflict, complete under their fence, count a replay and purge,
//! with the usage totals still the rows' sums.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Schemas, at, connect, fingerprint, id, response};
use idem_core::{
    Decision, Fenced, Holder, Policy, Record, RecordId, RecordState, Store, StoredResponse, Timestamp, usage,
};
use idem_postgres::{MIGRATIONS_TABLE, PostgresStore, TimeSource};
use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, Row};

/// Creates `schema` and applies idem's migration 0001 alone, noted where idem notes it. The
/// file is copied byte for byte, so its checksum is the one this idem embeds.
async fn migrate_first_only(schema: &str) {
    let folder = std::env::temp_dir().join(format!("idem-upgrade-{schema}"));
    std::fs::create_dir_all(&folder).expect("a temporary folder");
    let first = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/0001_idem_tables.sql");
    std::fs::copy(first, folder.join("0001_idem_tables.sql")).expect("migration 0001 is readable");
    let mut migrator = Migrator::new(folder.as_path()).await.expect("the folder holds a migration");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    let mut connection = connect().await;
    let setup = format!("CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\"");
    sqlx::raw_sql(AssertSqlSafe(setup)).execute(&mut connection).await.expect("the schema is created");
    migrator.run(&mut connection).await.expect("migration 0001 applies");
    std::fs::remove_dir_all(&folder).expect("the temporary folder is removed");
}

/// The usage shard of `id` as the crate docs define it ("Usage shards"): FNV-1a (64 bit)
/// over the principal, a zero byte and the key, modulo 64.
fn shard(id: &RecordId) -> i32 {
    let bytes = id.principal.as_str().bytes().chain([0]).chain(id.key.as_str().bytes());
    let hash =
        bytes.fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
    i32::try_from(hash % 64).expect("below 64")
}

/// Stored headers in the documented encoding (crate docs, "Schema").
fn encoded_headers(response: &StoredResponse) -> Vec<u8> {
    let mut out = vec![1];
    out.extend_from_slice(&u32::try_from(response.headers.len()).expect("few").to_be_bytes());
    for (name, value) in &response.headers {
        out.extend_from_slice(&u32::try_from(name.len()).expect("short").to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&u32::try_from(value.len()).expect("short").to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Writes `record` into 0001's columns as an idem before the lifecycle did, and counts it
/// in its usage shard.
async fn write_old_way(schema: &str, id: &RecordId, record: &Record) {
    let (state, lease, response) = match &record.state {
        RecordState::InFlight { lease_expires_at, .. } => ("in_flight", Some(lease_expires_at.unix_ms()), None),
        RecordState::Completed { response, .. } => ("completed", None, Some(response)),
        RecordState::Tombstone => unreachable!("0001 had no tombstones"),
    };
    let ms = |time: u64| i64::try_from(time).expect("fits");
    let bytes = i64::try_from(usage::stored_bytes(id, record)).expect("fits");
    let insert = format!(
        "INSERT INTO \"{schema}\".idem_records (principal, idem_key, fingerprint, fence, state, lease_expires_at, \
         expires_at, forgettable_at, status, headers, body, stored_bytes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    );
    let mut connection = connect().await;
    sqlx::query(AssertSqlSafe(insert))
        .bind(id.principal.as_str())
        .bind(id.key.as_str())
        .bind(record.fingerprint.to_stored())
        .bind(ms(record.fence.get()))
        .bind(state)
        .bind(lease.map(ms))
        .bind(ms(record.expires_at.unix_ms()))
        .bind(ms(record.forgettable_at().unix_ms()))
        .bind(response.map(|response| i32::from(response.status)))
        .bind(response.map(encoded_headers))
        .bind(response.map(|response| response.body.to_vec()))
        .bind(bytes)
        .execute(&mut connection)
        .await
        .expect("the old row is written");
    let count = format!(
        "UPDATE \"{schema}\".idem_usage SET records = records + 1, stored_bytes = stored_bytes + $1 WHERE shard = $2"
    );
    let counted = sqlx::query(AssertSqlSafe(count)).bind(bytes).bind(shard(id)).execute(&mut connection).await;
    assert_eq!(counted.expect("the usage is counted").rows_affected(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_before_the_lifecycle_migration_read_back_and_replay() {
    // Goal: upgrading in place loses nothing: a completed record and a claim in flight
    // written under migration 0001 read back after 0002 with the documented defaults,
    // the completed one replays (and counts the replay), the claim in flight conflicts and
    // completes under its fence, purging forgets both when due, and usage still matches.
    let schemas = Schemas::default();
    let schema = schemas.fresh();
    migrate_first_only(&schema).await;
    let policy = Policy::new(Duration::from_secs(10), Duration::from_secs(60)).expect("lease < retention");
    let (done, running) = (id("alice", "done"), id("", "running"));
    let fingerprint = fingerprint("pay 10 EUR");
    let old_completed = Record {
        fingerprint,
        fence: idem_core::Fence::new(1),
        created_at: Timestamp::EPOCH,
        expires_at: at(1_000_060_000),
        state: RecordState::Completed { response: response("pay_1"), replays: 0, tombstone_until: None },
    };
    let old_in_flight = Record {
        fingerprint,
        fence: idem_core::Fence::new(2),
        created_at: Timestamp::EPOCH,
        expires_at: at(1_000_060_000),
        state: RecordState::InFlight { lease_expires_at: at(1_000_010_000), holder: Holder::NONE, renewals: 0 },
    };
    write_old_way(&schema, &done, &old_completed).await;
    write_old_way(&schema, &running, &old_in_flight).await;
    let bump = format!("SELECT setval('\"{schema}\".idem_fence_seq', 2)");
    sqlx::query(AssertSqlSafe(bump)).execute(&mut connect().await).await.expect("the sequence is past fence 2");

    let store: PostgresStore =
        schemas.open_with(|options| options.schema(&schema).time_source(TimeSource::Caller)).await;
    assert_eq!(store.get(&done).await.unwrap(), Some(old_completed.clone()), "created at 0, no counts, no tombstone");
    assert_eq!(store.get(&running).await.unwrap(), Some(old_in_flight.clone()), "no holder, no renewals");

    let now = at(1_000_001_000);
    let replay = store.claim(&done, &fingerprint, now, &policy).await.unwrap();
    assert_eq!(replay, Decision::Replay { response: response("pay_1"), expires_at: old_completed.expires_at });
    assert!(store.count_replay(&done, now).await.unwrap(), "the replay is counted");
    let conflict = store.claim(&running, &fingerprint, now, &policy).await.unwrap();
    assert!(matches!(conflict, Decision::Conflict { ref holder, .. } if *holder == Holder::NONE), "{conflict:?}");
    let completed = store.complete(&running, old_in_flight.fence, response("pay_2"), now, &policy).await.unwrap();
    assert_eq!(completed, Fenced::Applied, "the old claim completes under its fence");
    let replayed = store.claim(&running, &fingerprint, now, &policy).await.unwrap();
    assert_eq!(replayed.replayed(), Some(&response("pay_2")));
    let record = store.get(&done).await.unwrap().expect("held");
    assert!(matches!(record.state, RecordState::Completed { replays: 1, .. }), "{record:?}");

    let totals = format!("SELECT count(*), coalesce(sum(stored_bytes), 0)::int8 FROM \"{schema}\".idem_records");
    let row = sqlx::query(AssertSqlSafe(totals)).fetch_one(store.pool()).await.unwrap();
    let usage = store.usage().await.unwrap();
    let (rows, bytes): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((usage.records, usage.stored_bytes), (u64::try_from(rows).unwrap(), u64::try_from(bytes).unwrap()));
    assert_eq!(store.purge_expired(at(2_000_000_000), 10).await.unwrap(), 2, "both are due, by due_at");
    let usage = store.usage().await.unwrap();
    assert_eq!((usage.records, usage.stored_bytes), (0, 0), "usage is given back");
    schemas.close_all().await;
}
