//! Purging due records: one bounded batch through the `due_at` index, each record through
//! idem-core's [`op::Expire`] step, and the damage recovery for a due row that cannot be
//! read back ([`forget_damaged`]). The store runs a batch as one job of the group
//! commit.

use idem_core::step::{self, StoreView, op};
use idem_core::{Limits, StoreError, Timestamp, UsageDelta};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqliteRow};

use crate::codec::{self, record_columns};
use crate::error::{corrupt, store_error};
use crate::rows::{add_usage, read_counters, write_record};

/// One purge batch on `transaction` (the writer's, inside its group commit).
pub(crate) async fn purge_batch(
    transaction: &mut SqliteConnection,
    limits: Limits,
    now: Timestamp,
    batch_max: usize,
) -> Result<usize, StoreError> {
    let limit = i64::try_from(batch_max).unwrap_or(i64::MAX);
    let counters = read_counters(&mut *transaction).await?;
    let rows = sqlx::query(concat!(
        "SELECT r.principal AS principal, r.idem_key AS idem_key, r.stored_bytes AS stored_bytes, ",
        record_columns!(),
        " FROM idem_records AS r WHERE r.due_at <= ?1",
        " ORDER BY r.due_at, r.fence LIMIT ?2"
    ))
    .bind(codec::time_to_sql(now))
    .bind(limit)
    .fetch_all(&mut *transaction)
    .await
    .map_err(store_error)?;
    let mut purged = 0;
    let mut batch = UsageDelta::NONE;
    for row in &rows {
        let principal: String = row.try_get("principal").map_err(store_error)?;
        let key: String = row.try_get("idem_key").map_err(store_error)?;
        let read =
            codec::id_from_sql(&principal, &key).and_then(|id| codec::decode_record(row).map(|record| (id, record)));
        let delta = match read {
            Ok((id, record)) => {
                // Expiry issues no fence and admits nothing, so every step of the batch
                // reads the counters as the batch found them.
                let view = StoreView { record: Some(&record), counters, limits };
                let step = step::step(&id, &view, op::Expire { now })?;
                debug_assert!(step.next_fence.is_none(), "expiry issues no fence");
                // The index and the record agree (decode_record checks the column), so
                // every candidate is due: forgotten, or shrunk to its tombstone.
                debug_assert!(step.answer, "the due_at index lists only due records");
                if !step.answer {
                    continue;
                }
                write_record(&mut *transaction, &id, step.write).await?;
                step.usage
            }
            Err(error) => forget_damaged(&mut *transaction, row, &principal, &key, &error).await?,
        };
        batch = sum(batch, delta)?;
        purged += 1;
    }
    add_usage(&mut *transaction, batch).await?;
    Ok(purged)
}

/// Damage recovery, not a protocol rule: a row the index calls due that cannot be read
/// back (a hand-edited row, a row from another version) is forgotten anyway. Refusing
/// would leave it first in every later batch, and purging would stall for good (and the
/// store fill up). Forgetting a record is always safe: its fence stops being current, so
/// a late completion is refused (G3); the fence counter is not touched. Its usage is given
/// back as its `stored_bytes` column says (nothing, if that is unreadable too).
async fn forget_damaged(
    connection: &mut SqliteConnection,
    row: &SqliteRow,
    principal: &str,
    key: &str,
    error: &StoreError,
) -> Result<UsageDelta, StoreError> {
    tracing::warn!(principal, key, %error, "expired record cannot be read; purging it");
    sqlx::query("DELETE FROM idem_records WHERE principal = ?1 AND idem_key = ?2")
        .bind(principal)
        .bind(key)
        .execute(&mut *connection)
        .await
        .map_err(store_error)?;
    let stored_bytes = row.try_get::<i64, _>("stored_bytes").ok().filter(|bytes| *bytes >= 0).unwrap_or(0);
    Ok(UsageDelta { records: -1, stored_bytes: -stored_bytes })
}

/// Two deltas as one; a sum past `i64` is damage (no batch frees that much).
fn sum(a: UsageDelta, b: UsageDelta) -> Result<UsageDelta, StoreError> {
    a.checked_add(b).ok_or_else(|| corrupt("a purge batch frees more than an SQLite integer counts"))
}
