//! Purging: one bounded batch of due records per transaction, each through idem-core's
//! [`op::Expire`] step, which forgets a record or shrinks a completed one to its tombstone.

use std::collections::BTreeMap;

use idem_core::step::{self, StoreView, op};
use idem_core::{StoreError, Timestamp, UsageDelta, Write, usage};
use sqlx::Row;
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgRow};

use crate::codec::{self, RecordRow, usage_shard};
use crate::error::{Failure, corrupt, store_error};
use crate::inner::Inner;
use crate::read::decode_counters;
use crate::statements::{Statements, query};

/// What one batch writes: ids to delete, records to put (with their `stored_bytes`), and
/// the usage deltas per shard.
#[derive(Default)]
struct Batch {
    deleted: (Vec<String>, Vec<String>),
    put: Vec<(String, String, RecordRow, i64)>,
    deltas: BTreeMap<i32, UsageDelta>,
}

impl Batch {
    fn count(&mut self, shard: i32, delta: UsageDelta) -> Result<(), StoreError> {
        let total = self.deltas.entry(shard).or_insert(UsageDelta::NONE);
        *total = sum(*total, delta)?;
        Ok(())
    }

    fn len(&self) -> usize {
        self.deleted.0.len() + self.put.len()
    }
}

/// Purges up to `batch_max` due records in one transaction on `pool`, skipping rows other
/// transactions hold: candidates come from the `due_at` index (earliest first, ties by
/// fence, as `idem_core::MemoryState` purges), each goes through [`op::Expire`], the
/// records it forgets are deleted in one statement, those it shrinks to tombstones are
/// put in another, and the usage deltas are added per shard in a third.
pub(crate) async fn purge_batch(
    pool: &PgPool,
    inner: &Inner,
    now: Timestamp,
    batch_max: usize,
) -> Result<usize, Failure> {
    let sql = &inner.sql;
    let limit = i64::try_from(batch_max).unwrap_or(i64::MAX);
    let mut transaction = pool.begin().await?;
    let counters_row = query(&sql.read_counters).fetch_one(&mut *transaction).await?;
    let (counters, db_now) = decode_counters(&counters_row)?;
    let now = inner.time.now(now, db_now);
    let rows = query(&sql.purge_due).bind(codec::time_to_sql(now)).bind(limit).fetch_all(&mut *transaction).await?;
    let mut batch = Batch::default();
    for row in &rows {
        let principal: String = row.try_get("principal").map_err(store_error)?;
        let key: String = row.try_get("idem_key").map_err(store_error)?;
        let read =
            codec::id_from_sql(&principal, &key).and_then(|id| codec::decode_record(row).map(|record| (id, record)));
        let (id, record) = match read {
            Ok(read) => read,
            Err(error) => {
                let (shard, delta) = forget_damaged(row, &principal, &key, &error);
                batch.count(shard, delta)?;
                batch.deleted.0.push(principal);
                batch.deleted.1.push(key);
                continue;
            }
        };
        let view = StoreView { record: Some(&record), counters, limits: inner.limits };
        let step = step::step(&id, &view, op::Expire { now })?;
        debug_assert!(step.next_fence.is_none(), "expiry issues no fence");
        // The index and the record agree (decode_record checks the column), so every
        // candidate is due.
        debug_assert!(step.answer, "the due_at index lists only due records");
        match step.write {
            Write::Unchanged => continue,
            Write::Delete => {
                batch.deleted.0.push(principal);
                batch.deleted.1.push(key);
            }
            Write::Put(shrunk) => {
                let stored_bytes = codec::count_to_sql("stored_bytes", usage::stored_bytes(&id, &shrunk))?;
                batch.put.push((principal, key, codec::encode_record(&shrunk)?, stored_bytes));
            }
        }
        batch.count(usage_shard(&id), step.usage)?;
    }
    let purged = batch.len();
    if purged == 0 {
        return Ok(0);
    }
    write_batch(&mut transaction, sql, batch).await?;
    transaction.commit().await?;
    Ok(purged)
}

async fn write_batch(transaction: &mut PgConnection, sql: &Statements, batch: Batch) -> Result<(), Failure> {
    let Batch { deleted: (principals, keys), put, deltas } = batch;
    if !principals.is_empty() {
        let deleted = query(&sql.purge_delete).bind(&principals).bind(&keys).execute(&mut *transaction).await?;
        // Every row was locked by this transaction, so every one is deleted.
        debug_assert_eq!(deleted.rows_affected(), u64::try_from(principals.len()).unwrap_or(u64::MAX));
    }
    if !put.is_empty() {
        let rows = put.len();
        let updated = bind_columns(query(&sql.purge_put), put)?.execute(&mut *transaction).await?;
        debug_assert_eq!(updated.rows_affected(), u64::try_from(rows).unwrap_or(u64::MAX));
    }
    let shards: Vec<i32> = deltas.keys().copied().collect();
    let records: Vec<i64> = deltas.values().map(|delta| delta.records).collect();
    let bytes: Vec<i64> = deltas.values().map(|delta| delta.stored_bytes).collect();
    query(&sql.purge_usage).bind(&shards).bind(&records).bind(&bytes).execute(&mut *transaction).await?;
    Ok(())
}

/// Binds records to put as one array per column (`purge_put`'s parameters).
fn bind_columns<'q>(
    statement: sqlx::query::Query<'q, sqlx::Postgres, PgArguments>,
    put: Vec<(String, String, RecordRow, i64)>,
) -> Result<sqlx::query::Query<'q, sqlx::Postgres, PgArguments>, StoreError> {
    let mut c = Columns::default();
    for (principal, key, row, stored_bytes) in put {
        c.principal.push(principal);
        c.key.push(key);
        c.fingerprint.push(row.fingerprint);
        c.fence.push(row.fence);
        c.created_at.push(row.created_at);
        c.state.push(row.state.to_owned());
        c.lease_expires_at.push(row.lease_expires_at);
        c.holder_request_id.push(row.holder_request_id);
        c.holder_trace_id.push(row.holder_trace_id);
        c.renewals.push(codec::renewals_to_sql(row.renewals)?);
        c.expires_at.push(row.expires_at);
        c.due_at.push(row.due_at);
        c.status.push(codec::status_to_sql(row.status));
        c.headers.push(row.headers);
        c.body.push(row.body);
        c.replays.push(row.replays);
        c.tombstone_until.push(row.tombstone_until);
        c.stored_bytes.push(stored_bytes);
    }
    Ok(statement
        .bind(c.principal)
        .bind(c.key)
        .bind(c.fingerprint)
        .bind(c.fence)
        .bind(c.created_at)
        .bind(c.state)
        .bind(c.lease_expires_at)
        .bind(c.holder_request_id)
        .bind(c.holder_trace_id)
        .bind(c.renewals)
        .bind(c.expires_at)
        .bind(c.due_at)
        .bind(c.status)
        .bind(c.headers)
        .bind(c.body)
        .bind(c.replays)
        .bind(c.tombstone_until)
        .bind(c.stored_bytes))
}

/// One array per column of [`RecordRow`], in its order.
#[derive(Default)]
struct Columns {
    principal: Vec<String>,
    key: Vec<String>,
    fingerprint: Vec<Vec<u8>>,
    fence: Vec<i64>,
    created_at: Vec<i64>,
    state: Vec<String>,
    lease_expires_at: Vec<Option<i64>>,
    holder_request_id: Vec<Option<String>>,
    holder_trace_id: Vec<Option<String>>,
    renewals: Vec<i32>,
    expires_at: Vec<i64>,
    due_at: Vec<i64>,
    status: Vec<Option<i32>>,
    headers: Vec<Option<Vec<u8>>>,
    body: Vec<Option<Vec<u8>>>,
    replays: Vec<i64>,
    tombstone_until: Vec<Option<i64>>,
    stored_bytes: Vec<i64>,
}

/// Damage recovery, not a protocol rule: a row the index calls due that cannot be read
/// back (a hand-edited row, a row from another version) is forgotten anyway. Refusing
/// would leave it first in every later batch, and purging would stall for good (and the
/// store fill up). Forgetting a record is always safe: its fence stops being current, so
/// a late completion is refused (G3); the fence counter is not touched. Its usage is given
/// back as its `stored_bytes` column says (nothing, if that is unreadable too), to the
/// shard of its id (shard 0 if the id is unreadable too).
fn forget_damaged(row: &PgRow, principal: &str, key: &str, error: &StoreError) -> (i32, UsageDelta) {
    tracing::warn!(principal, key, %error, "due record cannot be read; purging it");
    let shard = codec::id_from_sql(principal, key).map_or(0, |id| usage_shard(&id));
    let stored_bytes = row.try_get::<i64, _>("stored_bytes").ok().filter(|bytes| *bytes >= 0).unwrap_or(0);
    (shard, UsageDelta { records: -1, stored_bytes: -stored_bytes })
}

/// Two deltas as one; a sum past `i64` is damage (no batch frees that much).
fn sum(a: UsageDelta, b: UsageDelta) -> Result<UsageDelta, StoreError> {
    a.checked_add(b).ok_or_else(|| corrupt("a purge batch frees more than a PostgreSQL bigint counts"))
}
