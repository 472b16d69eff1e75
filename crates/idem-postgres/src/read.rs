//! Reads: what [`idem_core::step::step`] needs for a record id (the record with its row
//! version, the counters, the database's clock) in one statement, and the step decided on
//! it.

use idem_core::step::{self, Counters, Operation, Step, StoreView};
use idem_core::{RecordId, StoreError, Timestamp, Usage};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};

use crate::codec;
use crate::error::{Failure, corrupt, store_error};
use crate::inner::Inner;
use crate::statements::query;

/// How a step reads the record and the fence counter (the sequence `idem_fence_seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadKind {
    /// A claim, without a lock: `nextval`, the value a claim issues if its step puts a new
    /// claim. Drawing reserves it for this operation (so the write has nothing left to
    /// advance); a draw the step does not use leaves a gap.
    Draw,
    /// Any other operation, without a lock: the next value without drawing it, read only
    /// for idem-core's check that the counter is past the record's fence.
    Peek,
    /// As [`ReadKind::Peek`], locking the record's row (`FOR UPDATE`) until the enclosing
    /// transaction ends: [`crate::PostgresStore::complete_in`]'s fallback, inside the caller's
    /// transaction.
    PeekLocked,
}

/// What a read found of the record: what a write must find for the step to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// No row: the write inserts, and inserts nothing if a row appeared.
    Absent,
    /// A row of this version (its `xmin`): the write updates or deletes that version only.
    Held {
        /// The row version.
        version: i64,
    },
}

/// Reads what [`step::step`] needs for `id` (record, counters, clock) in one statement on
/// `connection` (for [`ReadKind::PeekLocked`], locking the record's row in the enclosing
/// transaction) and decides the operation made for the decision's time. Returns the step
/// and what was read of the record.
pub(crate) async fn decide<O: Operation>(
    connection: &mut PgConnection,
    inner: &Inner,
    id: &RecordId,
    read: ReadKind,
    now: Timestamp,
    operation: impl Fn(Timestamp) -> O,
) -> Result<(Step<O::Answer>, Seen), Failure> {
    let sql = match read {
        ReadKind::Draw => &inner.sql.read_view_draw,
        ReadKind::Peek => &inner.sql.read_view_peek,
        ReadKind::PeekLocked => &inner.sql.read_view_locked,
    };
    let row = query(sql).bind(id.principal.as_str()).bind(id.key.as_str()).fetch_one(&mut *connection).await?;
    let (counters, db_now) = decode_counters(&row)?;
    let held: bool = row.try_get("held").map_err(store_error)?;
    let (record, seen) = if held {
        let version: i64 = row.try_get("version").map_err(store_error)?;
        (Some(codec::decode_record(&row)?), Seen::Held { version })
    } else {
        (None, Seen::Absent)
    };
    let now = inner.time.now(now, db_now);
    let view = StoreView { record: record.as_ref(), counters, limits: inner.limits };
    let step = step::step(id, &view, operation(now))?;
    debug_assert!(read == ReadKind::Draw || step.next_fence.is_none(), "only claims issue fences, and claims draw one");
    Ok((step, seen))
}

/// The counters and the database's clock from a row with `next_fence`, the usage sums
/// and `db_now`.
pub(crate) fn decode_counters(row: &PgRow) -> Result<(Counters, Timestamp), StoreError> {
    let next_fence = codec::fence_from_sql("idem_fence_seq", row.try_get("next_fence").map_err(store_error)?)?;
    let db_now: i64 = row.try_get("db_now").map_err(store_error)?;
    let db_now = u64::try_from(db_now).map_err(|_| corrupt(format!("the database's clock reads {db_now} ms")))?;
    Ok((Counters { next_fence, usage: decode_usage(row)? }, Timestamp::from_unix_ms(db_now)))
}

pub(crate) fn decode_usage(row: &PgRow) -> Result<Usage, StoreError> {
    let column = |name: &str| row.try_get::<i64, _>(name).map_err(store_error);
    Ok(Usage {
        records: codec::count_from_sql("idem_usage.records", column("usage_records")?)?,
        stored_bytes: codec::count_from_sql("idem_usage.stored_bytes", column("usage_stored_bytes")?)?,
    })
}
