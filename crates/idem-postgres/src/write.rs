//! Writes: what a [`Step`] names, in one statement guarded by what the read found.

use idem_core::step::Step;
use idem_core::{RecordId, Write, usage};
use sqlx::Row;
use sqlx::postgres::PgConnection;

use crate::codec::{self, usage_shard};
use crate::error::{Failure, corrupt, store_error};
use crate::inner::Inner;
use crate::read::Seen;
use crate::statements::query;

/// Writes what `step` names on `connection` in one statement, guarded by what the read
/// found (`seen`): the record put (inserted when none was seen, else updated if still the
/// version seen) or deleted (if still the version seen), and the usage delta added to the
/// record id's shard. The fence counter needs no write: the fence a step issues was drawn
/// from the sequence by [`crate::read::decide`]. Returns the step's answer, or `None` when the guard
/// failed and nothing was written.
pub(crate) async fn write<A>(
    connection: &mut PgConnection,
    inner: &Inner,
    id: &RecordId,
    seen: Seen,
    step: Step<A>,
) -> Result<Option<A>, Failure> {
    let Step { answer, write, next_fence, usage } = step;
    if let (Some(next_fence), Write::Put(record)) = (next_fence, &write) {
        debug_assert_eq!(record.fence.next(), next_fence, "the step issues the fence it was shown");
    }
    let sql = &inner.sql;
    let shard = usage_shard(id);
    let principal = id.principal.as_str();
    let key = id.key.as_str();
    let row = match (&write, seen) {
        (Write::Unchanged, _) => {
            debug_assert!(usage.is_none(), "a step that writes no record changes no usage");
            return Ok(Some(answer));
        }
        (Write::Put(record), seen) => {
            let values = codec::encode_record(record)?;
            let stored_bytes = codec::count_to_sql("stored_bytes", usage::stored_bytes(id, record))?;
            let (statement, version) = match seen {
                Seen::Absent => (&sql.insert_record, None),
                Seen::Held { version } => (&sql.update_record, Some(version)),
            };
            let statement = codec::bind_record(query(statement).bind(principal).bind(key), values)?
                .bind(stored_bytes)
                .bind(usage.records)
                .bind(usage.stored_bytes)
                .bind(shard);
            match version {
                Some(version) => statement.bind(version),
                None => statement,
            }
            .fetch_one(&mut *connection)
            .await?
        }
        (Write::Delete, Seen::Held { version }) => {
            query(&sql.delete_record)
                .bind(principal)
                .bind(key)
                .bind(usage.records)
                .bind(usage.stored_bytes)
                .bind(shard)
                .bind(version)
                .fetch_one(&mut *connection)
                .await?
        }
        (Write::Delete, Seen::Absent) => unreachable!("the step deletes only a record it was shown"),
    };
    let written: i64 = row.try_get("written").map_err(store_error)?;
    let counted: i64 = row.try_get("counted").map_err(store_error)?;
    if written != 1 {
        debug_assert_eq!(written, 0, "a write names one row by its primary key");
        debug_assert_eq!(counted, 0, "usage is counted only with a record write");
        return Ok(None);
    }
    if counted != i64::from(!usage.is_none()) {
        return Err(corrupt(format!("the idem_usage row of shard {shard} is missing")).into());
    }
    Ok(Some(answer))
}
