//! The guarded completion: a completion of the claim in flight in one statement, checked
//! against idem-core's store step afterwards (crate docs, section "Round trips", the
//! paragraph "The guarded completion").

use idem_core::step::{self, Counters, Operation, Step, StoreView};
use idem_core::{
    Fence, Fenced, Fingerprint, FingerprintVersion, Holder, Record, RecordId, RecordState, StoreError, Timestamp,
    Usage, UsageDelta, Write, usage,
};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};

use crate::codec::{self, usage_shard};
use crate::error::{Failure, corrupt, store_error};
use crate::inner::Inner;
use crate::options::TimeSource;
use crate::read::decode_counters;
use crate::statements::query;

/// Atomic mode's completion in one statement (`complete_guarded` in
/// [`crate::statements`]) on the caller's transaction: decide the step on the record as
/// the claim `fence` in flight would be (its fingerprint, creation time, holder and times
/// do not change a completion: the statement keeps the first two, clears the holder and
/// counts the times from the view's clock), write it if the row is that claim, then run
/// the step again on the view the statement read and check it names exactly what was
/// written: the record as the row now holds it, its `stored_bytes` and the usage delta.
/// Returns `None`, having written nothing, when the row is not that claim (or the fence
/// counter is not past it): then the locked read and the step answer.
pub(crate) async fn complete_guarded<O: Operation<Answer = Fenced>>(
    connection: &mut PgConnection,
    inner: &Inner,
    id: &RecordId,
    fence: Fence,
    now: Timestamp,
    operation: impl Fn(Timestamp) -> O,
) -> Result<Option<Fenced>, Failure> {
    // The record the guard admits, at time zero: times are added in the statement.
    let presumed = Record {
        fingerprint: Fingerprint::new(FingerprintVersion::Bytes, [0; 32]),
        fence,
        created_at: Timestamp::EPOCH,
        expires_at: Timestamp::EPOCH,
        state: RecordState::InFlight { lease_expires_at: Timestamp::EPOCH, holder: Holder::NONE, renewals: 0 },
    };
    let view = StoreView {
        record: Some(&presumed),
        counters: Counters { next_fence: fence.next(), usage: Usage::default() },
        limits: inner.limits,
    };
    let planned = step::step(id, &view, operation(Timestamp::EPOCH))?;
    let Write::Put(completed) = &planned.write else {
        unreachable!("the step completes the claim in flight that it was shown")
    };
    debug_assert!(planned.answer == Fenced::Applied && planned.next_fence.is_none());
    let Some(row) = write_guarded(connection, inner, id, completed, planned.usage.records, now).await? else {
        return Ok(None);
    };
    let written: i64 = row.try_get("written").map_err(store_error)?;
    if written == 0 {
        return Ok(None);
    }
    if !inner.self_check {
        // A bug planted for testing: the SQL is trusted, wrong as it may be.
        return Ok(Some(planned.answer));
    }
    check(&row, inner, id, now, &planned, operation).map(Some)
}

/// Runs the guarded completion's statement, writing `completed` (as the step made it from
/// time zero) if the row is the claim in flight; the row it returns, if any.
async fn write_guarded(
    connection: &mut PgConnection,
    inner: &Inner,
    id: &RecordId,
    completed: &Record,
    records: i64,
    now: Timestamp,
) -> Result<Option<PgRow>, Failure> {
    let values = codec::encode_record(completed)?;
    // The retention and the tombstone period, as the step counted them from time zero.
    let retention_ms = values.expires_at;
    let tombstone_ms = values.tombstone_until.map(|until| until - values.expires_at);
    let stored_bytes = codec::count_to_sql("stored_bytes", usage::stored_bytes(id, completed))?;
    let base = match inner.time {
        TimeSource::Database => None,
        TimeSource::Caller => Some(codec::time_to_sql(now)),
    };
    let row = query(&inner.sql.complete_guarded)
        .bind(id.principal.as_str())
        .bind(id.key.as_str())
        .bind(values.fence)
        .bind(values.state)
        .bind(codec::status_to_sql(values.status))
        .bind(values.headers.as_deref())
        .bind(values.body.as_deref())
        .bind(base)
        .bind(retention_ms)
        .bind(tombstone_ms)
        .bind(stored_bytes)
        .bind(usage_shard(id))
        .bind(values.lease_expires_at)
        .bind(values.holder_request_id.as_deref())
        .bind(values.holder_trace_id.as_deref())
        .bind(codec::renewals_to_sql(values.renewals)?)
        .bind(values.replays)
        .bind(records)
        .fetch_optional(&mut *connection)
        .await?;
    Ok(row)
}

/// Runs the step again on the view the statement read, at the view's time, and checks it
/// names exactly what was written: the record as the row now holds it, its
/// `stored_bytes` and the usage delta. Its answer, or `Corrupt` (a panic in debug builds).
fn check<O: Operation<Answer = Fenced>>(
    row: &PgRow,
    inner: &Inner,
    id: &RecordId,
    now: Timestamp,
    planned: &Step<Fenced>,
    operation: impl Fn(Timestamp) -> O,
) -> Result<Fenced, Failure> {
    let written = Written::read(row, planned.usage.records)?;
    let counted: i64 = row.try_get("counted").map_err(store_error)?;
    if counted != i64::from(!written.delta.is_none()) {
        let shard = usage_shard(id);
        return Err(corrupt(format!("the idem_usage row of shard {shard} is missing")).into());
    }
    let (counters, db_now) = decode_counters(row)?;
    let old = codec::decode_record(row)?;
    let now = inner.time.now(now, db_now);
    let view = StoreView { record: Some(&old), counters, limits: inner.limits };
    let step = step::step(id, &view, operation(now))?;
    let agrees = match &step.write {
        Write::Put(record) => {
            // Compared as stored: times past i64::MAX ms are the store's end of time.
            codec::encode_record(record)? == codec::encode_record(&written.record)?
                && codec::count_to_sql("stored_bytes", usage::stored_bytes(id, record))? == written.stored_bytes
        }
        Write::Unchanged | Write::Delete => false,
    };
    if !agrees || step.answer != planned.answer || step.usage != written.delta || step.next_fence.is_some() {
        debug_assert!(false, "the guarded completion wrote what the step does not name: {step:?}, wrote {written:?}");
        return Err(corrupt(format!("the guarded completion disagrees with the store step ({:?})", step.write)).into());
    }
    Ok(step.answer)
}

/// What the guarded completion wrote, as its statement returns it.
#[derive(Debug)]
struct Written {
    /// The row as written (`w_` columns), read back as a record.
    record: Record,
    /// Its `stored_bytes` column.
    stored_bytes: i64,
    /// The usage delta added: the records delta bound (the planned step's), and the bytes as the row's
    /// `stored_bytes` column went from the old to the new value.
    delta: UsageDelta,
}

impl Written {
    fn read(row: &PgRow, records: i64) -> Result<Written, StoreError> {
        let record = codec::decode_record_named(row, "w_")?;
        let stored_bytes: i64 = row.try_get("w_stored_bytes").map_err(store_error)?;
        let old_bytes: i64 = row.try_get("stored_bytes").map_err(store_error)?;
        let bytes = stored_bytes.checked_sub(old_bytes).ok_or_else(|| corrupt("stored_bytes out of range"))?;
        Ok(Written { record, stored_bytes, delta: UsageDelta { records, stored_bytes: bytes } })
    }
}
