//! The idem tables as one group commit sees them: a write-back view.
//!
//! Every statement costs the writer a round trip to sqlx's connection thread (two thread
//! wake-ups), which on a busy machine costs far more than the statement itself. So inside
//! a group commit the store's own operations do not write their rows one by one: the view
//! reads the counters once and each record at most once, decides every operation in memory
//! with [`idem_core::step::step`] (through [`BatchDecision`], the sans-IO part the simulation
//! runs too), and [`BatchView::flush`] writes what changed in a few
//! multi-row statements before the commit. A claim or completion then costs one `SELECT`
//! in the batch instead of six statements.
//!
//! The view changes only when an operation's step succeeded, as the last thing the
//! operation does (after its last `.await`), so an operation that fails, times out or
//! panics leaves it as it was, as its savepoint would have left the tables. Whatever the
//! view holds is written by the flush in the same transaction, so it commits with the
//! batch or not at all.

use idem_core::step::Operation;
use idem_core::{Limits, Record, RecordId, StoreError, usage};
use sqlx::sqlite::SqliteConnection;
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::batch_decision::BatchDecision;
use crate::codec::{self, record_columns};
use crate::error::{corrupt, store_error};
use crate::store::{one_row, read_counters};

/// Most rows per `INSERT` or `DELETE` of a flush (18 parameters a row, far below SQLite's
/// 32,766).
const ROWS_PER_STATEMENT: usize = 64;

/// What the batch has read and decided ([`BatchDecision`], which decides without SQL),
/// with the reads and writes around it; empty between batches.
#[derive(Debug, Default)]
pub(crate) struct BatchView {
    decision: BatchDecision,
}

impl BatchView {
    /// Reads the counters and the records of `ids` (those not read yet) in as few
    /// statements as it can, so that the batch's operations on them read nothing more.
    pub(crate) async fn load(
        &mut self,
        connection: &mut SqliteConnection,
        ids: &[&RecordId],
    ) -> Result<(), StoreError> {
        self.load_counters(connection).await?;
        let wanted = self.decision.unread(ids);
        for chunk in wanted.chunks(ROWS_PER_STATEMENT) {
            let found = read_records(connection, chunk).await?;
            for id in chunk {
                // Matched on the columns as stored, as the statement matched them.
                let record = found
                    .iter()
                    .find(|(principal, key, _)| principal == id.principal.as_str() && key == id.key.as_str())
                    .map(|(_, _, record)| record.clone());
                self.decision.record_read((*id).clone(), record);
            }
        }
        Ok(())
    }

    async fn load_counters(&mut self, connection: &mut SqliteConnection) -> Result<(), StoreError> {
        if !self.decision.has_counters() {
            self.decision.counters_read(read_counters(connection).await?);
        }
        Ok(())
    }

    /// Decides `operation` for `id` on what the batch holds, reading what it has not read
    /// yet, and keeps the step's writes in the view. Returns the step's answer.
    pub(crate) async fn step<O: Operation>(
        &mut self,
        connection: &mut SqliteConnection,
        limits: Limits,
        id: &RecordId,
        operation: O,
    ) -> Result<O::Answer, StoreError> {
        self.load_counters(connection).await?;
        if !self.decision.holds(id) {
            let record = read_record(connection, id).await?;
            self.decision.record_read(id.clone(), record);
        }
        // No `.await` from here on: the view changes whole or not at all.
        self.decision.step(limits, id, operation)
    }

    /// The record of `id` as the batch holds it, if it is completed.
    pub(crate) fn completed(&self, id: &RecordId) -> Option<&Record> {
        self.decision.completed(id)
    }

    /// Writes what the batch changed (records, fence counter, usage) and empties the view.
    /// On error the view is emptied too: the caller rolls the transaction back.
    pub(crate) async fn flush(&mut self, connection: &mut SqliteConnection) -> Result<(), StoreError> {
        let changes = self.decision.take();
        let puts: Vec<(&RecordId, &Record)> = changes.puts.iter().map(|(id, record)| (id, record)).collect();
        let deletes: Vec<&RecordId> = changes.deletes.iter().collect();
        for chunk in puts.chunks(ROWS_PER_STATEMENT) {
            put_records(connection, chunk).await?;
        }
        for chunk in deletes.chunks(ROWS_PER_STATEMENT) {
            delete_records(connection, chunk).await?;
        }
        if let Some((now, found)) = changes.counters {
            write_counters(connection, now, found).await?;
        }
        Ok(())
    }

    /// Forgets everything without writing (the batch rolled back).
    pub(crate) fn clear(&mut self) {
        self.decision.clear();
    }
}

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
async fn read_records(
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
            .push_bind(row.status)
            .push_bind(row.headers)
            .push_bind(row.body)
            .push_bind(stored_bytes)
            .push_bind(row.created_at)
            .push_bind(row.holder_request_id)
            .push_bind(row.holder_trace_id)
            .push_bind(row.renewals)
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

/// Writes the counters the batch changed. `found` is what it read under the write lock,
/// so nothing else changed them since.
async fn write_counters(
    connection: &mut SqliteConnection,
    now: idem_core::step::Counters,
    found: idem_core::step::Counters,
) -> Result<(), StoreError> {
    if now.next_fence != found.next_fence {
        let next_fence = codec::fence_to_sql(now.next_fence).map_err(|_| corrupt("the fence counter is exhausted"))?;
        let done = sqlx::query("UPDATE idem_fence SET next_fence = ?1 WHERE id = 1")
            .bind(next_fence)
            .execute(&mut *connection)
            .await
            .map_err(store_error)?;
        one_row(&done, "idem_fence")?;
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
