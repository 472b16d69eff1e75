//! Records to and from SQLite rows: idem-core's one layout of a record as columns
//! ([`idem_core::sql_row`], shared with idem-postgres) read through [`Columns`] over a
//! [`SqliteRow`], and the column list this crate's statements select.

use idem_core::sql_row::{self, Columns};
pub(crate) use idem_core::sql_row::{
    count_from_sql, count_to_sql, encode_record, fence_from_sql, fence_to_sql, id_from_sql, time_to_sql,
};
use idem_core::{Record, StoreError};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::error::store_error;

/// The columns [`decode_record`] reads, from `idem_records AS r`, as a literal for
/// `concat!` (statements stay `&'static str`). Each is named as its column, so the list
/// works in a join with tables that share column names (`idem_usage.stored_bytes`).
macro_rules! record_columns {
    () => {
        "r.fingerprint AS fingerprint, r.fence AS fence, r.state AS state, \
         r.lease_expires_at AS lease_expires_at, r.expires_at AS expires_at, \
         r.due_at AS due_at, r.status AS status, r.headers AS headers, r.body AS body, \
         r.created_at AS created_at, r.holder_request_id AS holder_request_id, \
         r.holder_trace_id AS holder_trace_id, r.renewals AS renewals, r.replays AS replays, \
         r.tombstone_until AS tombstone_until"
    };
}
pub(crate) use record_columns;

/// Reads a record from a row that holds the columns of `record_columns!`.
pub(crate) fn decode_record(row: &SqliteRow) -> Result<Record, StoreError> {
    sql_row::decode_record(&Named(row))
}

/// A row's columns by name.
struct Named<'a>(&'a SqliteRow);

impl Columns for Named<'_> {
    fn int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.0.try_get(column).map_err(store_error)
    }

    fn text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.0.try_get(column).map_err(store_error)
    }

    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.try_get(column).map_err(store_error)
    }
}
