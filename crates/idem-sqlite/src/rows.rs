//! idem's rows in SQL: the statements that read and write `idem_records`, `idem_fence` and
//! `idem_usage`, shared by the layers above: the group commit's view (`batch.rs`), the purge
//! (`purge.rs`) and a caller's own transaction (`SqliteStore::complete_in`).
//!
//! Nothing here decides: each function reads or writes what its caller names, converting
//! with [`crate::codec`]. A statement on a one-row counter table that changes no row is
//! [`StoreError::Corrupt`]: the counter rows are created by the migrations and never
//! deleted.

use idem_core::step::Counters;
use idem_core::{Fence, Record, RecordId, StoreError, Usage, UsageDelta, Write, usage};
use sqlx::sqlite::{SqliteConnection, SqliteQueryResult, SqliteRow};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::codec::{self, record_columns};
use crate::error::{corrupt, store_error};

/// The store-wide counters, named apart from the record's columns, for `concat!`.
macro_rules! counter_columns {
    () => {
        "f.next_fence AS next_fence, u.records AS usage_records, u.stored_bytes AS usage_stored_bytes"
    };
}

/// The two one-row counter tables, joined; `WHERE f.id = 1` completes it.
macro_rules! counter_tables {
    () => {
        "idem_fence AS f JOIN idem_usage AS u ON u.id = 1"
    };
}

/// Everything a step reads for one record id, in one statement: the counters, and the
/// record if one is held (`held` tells a missing record from a row of NULLs).
const READ_VIEW: &str = concat!(
    "SELECT ",
    counter_columns!(),
    ", r.principal IS NOT NULL AS held, ",
    record_columns!(),
    " FROM ",
    counter_tables!(),
    " LEFT JOIN idem_records AS r ON r.principal = ?1 AND r.idem_key = ?2 WHERE f.id = 1"
);

/// The counters alone.
const READ_COUNTERS: &str = concat!("SELECT ", counter_columns!(), " FROM ", counter_tables!(), " WHERE f.id = 1");

/// The counters and the record of `id`, in one statement (one snapshot).
pub(crate) async fn read_view(
    connection: &mut SqliteConnection,
    id: &RecordId,
) -> Result<(Counters, Option<Record>), StoreError> {
    let row = sqlx::query(READ_VIEW)
        .bind(id.principal.as_str())
        .bind(id.key.as_str())
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?
        .ok_or_else(missing_counters)?;
    let counters = decode_counters(&row)?;
    let held: bool = row.try_get("held").map_err(store_error)?;
    let record = if held { Some(codec::decode_record(&row)?) } else { None };
    Ok((counters, record))
}

/// The counters alone, as they stand in `connection`'s snapshot.
pub(crate) async fn read_counters(connection: &mut SqliteConnection) -> Result<Counters, StoreError> {
    let row = sqlx::query(READ_COUNTERS)
        .fetch_optional(&mut *connection)
        .await
        .map_err(store_error)?
        .ok_or_else(missing_counters)?;
    decode_counters(&row)
}

fn decode_counters(row: &SqliteRow) -> Result<Counters, StoreError> {
    let column = |name: &str| row.try_get::<i64, _>(name).map_err(store_error);
    Ok(Counters {
        next_fence: codec::fence_from_sql("idem_fence.next_fence", column("next_fence")?)?,
        usage: Usage {
            records: codec::count_from_sql("idem_usage.records", column("usage_records")?)?,
            stored_bytes: codec::count_from_sql("idem_usage.stored_bytes", column("usage_stored_bytes")?)?,
        },
    })
}

fn missing_counters() -> StoreError {
    corrupt("the counter rows (idem_fence, idem_usage) are missing")
}

/// A statement on a one-row table must have changed that row.
pub(crate) fn one_row(done: &SqliteQueryResult, table: &str) -> Result<(), StoreError> {
    match done.rows_affected() {
        1 => Ok(()),
        _ => Err(corrupt(format!("the {table} row is missing"))),
    }
}

/// The record of `id`, if one is held.
pub(crate) async fn read_record(
    connection: &mut SqliteConnection,
    id: &RecordId,
) -> Result<Option<Record>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        record_columns!(),
        " FROM idem_records AS r WHERE r.principal = ?1 AND r.idem_key = ?2"
    ))
    .bind(id.principal.as_str())
    .bind(id.key.as_str())
    .fetch_optional(&mut *connection)
    .await
    .map_err(store_error)?;
    row.as_ref().map(codec::decode_record).transpose()
}

/// The records held under `ids`, each with its `principal` and `idem_key` columns.
pub(crate) async fn read_records(
    connection: &mut SqliteConnection,
    ids: &[&RecordId],
) -> Result<Vec<(String, String, Record)>, StoreError> {
    let mut statement = QueryBuilder::<Sqlite>::new(concat!(
        "SELECT r.principal AS principal, r.idem_key AS idem_key, ",
        record_columns!(),
        " FROM idem_records AS r WHERE (r.principal, r.idem_key) IN ("
    ));
    push_ids(&mut statement, ids);
    statement.push(")");
    let rows = statement.build().fetch_all(&mut *connection).await.map_err(store_error)?;
    rows.iter()
        .map(|row| {
            let principal: String = row.try_get("principal").map_err(store_error)?;
            let key: String = row.try_get("idem_key").map_err(store_error)?;
            Ok((principal, key, codec::decode_record(row)?))
        })
        .collect()
}

/// `(?, ?), (?, ?), ...`: the ids as row values, for `(principal, idem_key) IN (...)`.
fn push_ids(statement: &mut QueryBuilder<Sqlite>, ids: &[&RecordId]) {
    let mut separated = statement.separated(", ");
    for id in ids {
        separated.push("(");
        separated.push_bind_unseparated(id.principal.as_str().to_owned());
        separated.push_unseparated(", ");
        separated.push_bind_unseparated(id.key.as_str().to_owned());
        separated.push_unseparated(")");
    }
}

/// Writes `records` (inserted, or replacing the row of the same id) in one statement.
pub(crate) async fn put_records(
    connection: &mut SqliteConnection,
    records: &[(&RecordId, &Record)],
) -> Result<(), StoreError> {
    let mut rows = Vec::with_capacity(records.len());
    for (id, record) in records {
        let stored_bytes = codec::count_to_sql("stored_bytes", usage::stored_bytes(id, record))?;
        rows.push((*id, codec::encode_record(record)?, stored_bytes));
    }
    let mut statement = QueryBuilder::<Sqlite>::new(
        "INSERT INTO idem_records (principal, idem_key, fingerprint, fence, state, lease_expires_at, \
         expires_at, due_at, status, headers, body, stored_bytes, created_at, holder_request_id, \
         holder_trace_id, renewals, replays, tombstone_until) ",
    );
    statement.push_values(rows, |mut values, (id, row, stored_bytes)| {
        values
            .push_bind(id.principal.as_str().to_owned())
            .push_bind(id.key.as_str().to_owned())
            .push_bind(row.fingerprint)
            .push_bind(row.fence)
            .push_bind(row.state)
            .push_bind(row.lease_expires_at)
            .push_bind(row.expires_at)
            .push_bind(row.due_at)
            .push_bind(row.status.map(i64::from))
            .push_bind(row.headers)
            .push_bind(row.body)
            .push_bind(stored_bytes)
            .push_bind(row.created_at)
            .push_bind(row.holder_request_id)
            .push_bind(row.holder_trace_id)
            .push_bind(i64::from(row.renewals))
            .push_bind(row.replays)
            .push_bind(row.tombstone_until);
    });
    statement.push(
        " ON CONFLICT (principal, idem_key) DO UPDATE SET fingerprint = excluded.fingerprint, \
         fence = excluded.fence, state = excluded.state, lease_expires_at = excluded.lease_expires_at, \
         expires_at = excluded.expires_at, due_at = excluded.due_at, \
         status = excluded.status, headers = excluded.headers, body = excluded.body, \
         stored_bytes = excluded.stored_bytes, created_at = excluded.created_at, \
         holder_request_id = excluded.holder_request_id, holder_trace_id = excluded.holder_trace_id, \
         renewals = excluded.renewals, replays = excluded.replays, tombstone_until = excluded.tombstone_until",
    );
    statement.build().execute(&mut *connection).await.map_err(store_error)?;
    Ok(())
}

/// Deletes the rows of `ids`, each of which the caller read in this same transaction.
pub(crate) async fn delete_records(connection: &mut SqliteConnection, ids: &[&RecordId]) -> Result<(), StoreError> {
    let mut statement = QueryBuilder::<Sqlite>::new("DELETE FROM idem_records WHERE (principal, idem_key) IN (");
    push_ids(&mut statement, ids);
    statement.push(")");
    let done = statement.build().execute(&mut *connection).await.map_err(store_error)?;
    // Steps delete only records they were shown, read in this same transaction.
    debug_assert_eq!(done.rows_affected(), ids.len() as u64, "a step deletes only held records");
    Ok(())
}

/// Puts or deletes the record row of `id`. A put stores the cost idem-core counts the
/// record at ([`usage::stored_bytes`]) in the row's `stored_bytes` column.
pub(crate) async fn write_record(
    connection: &mut SqliteConnection,
    id: &RecordId,
    write: Write,
) -> Result<(), StoreError> {
    match write {
        Write::Unchanged => Ok(()),
        Write::Put(record) => put_records(connection, &[(id, &record)]).await,
        Write::Delete => delete_records(connection, &[id]).await,
    }
}

/// Adds `delta` to the usage row, if it changes anything. The row's `CHECK`s refuse a
/// total below zero, which only totals edited by hand can cause: that is `Corrupt`, and
/// the transaction rolls back.
pub(crate) async fn add_usage(connection: &mut SqliteConnection, delta: UsageDelta) -> Result<(), StoreError> {
    if delta.is_none() {
        return Ok(());
    }
    let done =
        sqlx::query("UPDATE idem_usage SET records = records + ?1, stored_bytes = stored_bytes + ?2 WHERE id = 1")
            .bind(delta.records)
            .bind(delta.stored_bytes)
            .execute(&mut *connection)
            .await
            .map_err(store_error)?;
    one_row(&done, "idem_usage")
}

/// Sets the fence counter to `next_fence`, the value a step or a batch names.
pub(crate) async fn set_next_fence(connection: &mut SqliteConnection, next_fence: Fence) -> Result<(), StoreError> {
    let next_fence = codec::fence_to_sql(next_fence).map_err(|_| corrupt("the fence counter is exhausted"))?;
    let done = sqlx::query("UPDATE idem_fence SET next_fence = ?1 WHERE id = 1")
        .bind(next_fence)
        .execute(&mut *connection)
        .await
        .map_err(store_error)?;
    one_row(&done, "idem_fence")
}

/// Writes the counters a group commit changed. `found` is what it read under the write lock,
/// so nothing else changed them since.
pub(crate) async fn write_counters(
    connection: &mut SqliteConnection,
    now: Counters,
    found: Counters,
) -> Result<(), StoreError> {
    if now.next_fence != found.next_fence {
        set_next_fence(connection, now.next_fence).await?;
    }
    if now.usage != found.usage {
        let done = sqlx::query("UPDATE idem_usage SET records = ?1, stored_bytes = ?2 WHERE id = 1")
            .bind(codec::count_to_sql("idem_usage.records", now.usage.records)?)
            .bind(codec::count_to_sql("idem_usage.stored_bytes", now.usage.stored_bytes)?)
            .execute(&mut *connection)
            .await
            .map_err(store_error)?;
        one_row(&done, "idem_usage")?;
    }
    Ok(())
}
