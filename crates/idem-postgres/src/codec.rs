//! Records to and from PostgreSQL rows: idem-core's one layout of a record as columns
//! ([`idem_core::sql_row`], shared with idem-sqlite) read through [`Columns`] over a
//! [`PgRow`], and what is PostgreSQL's own: the column list, the binding (`renewals` and
//! `status` are `integer` columns), and the usage shards.

use idem_core::sql_row::{self, Columns};
pub(crate) use idem_core::sql_row::{
    RecordRow, STATE_IN_FLIGHT, count_from_sql, count_to_sql, encode_record, fence_from_sql, id_from_sql, time_to_sql,
};
use idem_core::{Record, RecordId, StoreError};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Column, Postgres, Row};

use crate::error::{corrupt, store_error};

/// A query with its parameters, as the prebuilt statements make them.
type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// The columns of a record in `idem_records` (the record id and `stored_bytes` aside), in
/// the order [`bind_record`] binds them.
pub(crate) const COLUMNS: [&str; 15] = [
    "fingerprint",
    "fence",
    "created_at",
    "state",
    "lease_expires_at",
    "holder_request_id",
    "holder_trace_id",
    "renewals",
    "expires_at",
    "due_at",
    "status",
    "headers",
    "body",
    "replays",
    "tombstone_until",
];

/// `table`'s record columns, each named as its column after `prefix`: what
/// [`decode_record_named`] reads (with `prefix` empty, [`decode_record`]). Naming each
/// column lets the list work in a join with tables that share column names.
pub(crate) fn columns_of(table: &str, prefix: &str) -> String {
    COLUMNS.map(|column| format!("{table}.{column} AS {prefix}{column}")).join(", ")
}

/// How many shards the usage totals are kept in (`idem_usage`, migration 0001).
pub(crate) const USAGE_SHARDS: u32 = 64;

/// The usage shard of `id`: FNV-1a (64 bit) over the principal's bytes, a zero byte (which
/// neither a principal nor a key holds) and the key's bytes, modulo [`USAGE_SHARDS`]. Every
/// step on one record id adds to the same shard, so no shard's totals go below zero.
pub(crate) fn usage_shard(id: &RecordId) -> i32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let bytes = id.principal.as_str().bytes().chain([0]).chain(id.key.as_str().bytes());
    let hash = bytes.fold(OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME));
    i32::try_from(hash % u64::from(USAGE_SHARDS)).expect("a shard number is below 64")
}

/// `renewals` as its `integer` column holds it. 2^31 renewals, one every third of a lease,
/// take centuries; refused, not wrapped.
pub(crate) fn renewals_to_sql(renewals: u32) -> Result<i32, StoreError> {
    i32::try_from(renewals).map_err(|_| corrupt(format!("renewals of {renewals} do not fit a PostgreSQL integer")))
}

/// `status` as its `integer` column holds it.
pub(crate) fn status_to_sql(status: Option<u16>) -> Option<i32> {
    status.map(i32::from)
}

/// `statement` with `row` bound as its next 15 parameters, in the order of [`COLUMNS`].
pub(crate) fn bind_record(statement: Query<'_>, row: RecordRow) -> Result<Query<'_>, StoreError> {
    Ok(statement
        .bind(row.fingerprint)
        .bind(row.fence)
        .bind(row.created_at)
        .bind(row.state)
        .bind(row.lease_expires_at)
        .bind(row.holder_request_id)
        .bind(row.holder_trace_id)
        .bind(renewals_to_sql(row.renewals)?)
        .bind(row.expires_at)
        .bind(row.due_at)
        .bind(status_to_sql(row.status))
        .bind(row.headers)
        .bind(row.body)
        .bind(row.replays)
        .bind(row.tombstone_until))
}

/// Reads a record from a row that holds the columns of `columns_of(_, "")`.
pub(crate) fn decode_record(row: &PgRow) -> Result<Record, StoreError> {
    decode_record_named(row, "")
}

/// Reads a record from a row that holds the columns of `columns_of(_, prefix)`.
pub(crate) fn decode_record_named(row: &PgRow, prefix: &str) -> Result<Record, StoreError> {
    sql_row::decode_record(&Named { row, prefix })
}

/// The columns of one row, named after a prefix.
struct Named<'a> {
    row: &'a PgRow,
    prefix: &'a str,
}

impl Named<'_> {
    fn get<'r, T>(&'r self, name: &str) -> Result<Option<T>, StoreError>
    where
        T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    {
        self.row.try_get(name).map_err(store_error)
    }
}

impl Columns for Named<'_> {
    /// `renewals` and `status` are `integer` columns, the others `bigint`; either is read
    /// as its own type (sqlx refuses to decode one as the other) and widened.
    fn int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        let name = format!("{}{column}", self.prefix);
        let column_type = self.row.try_column(name.as_str()).map_err(store_error)?.type_info();
        let narrow = <i32 as sqlx::Type<Postgres>>::compatible(column_type);
        if narrow { Ok(self.get::<i32>(&name)?.map(i64::from)) } else { self.get(&name) }
    }

    fn text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.get(&format!("{}{column}", self.prefix))
    }

    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(&format!("{}{column}", self.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_in_range() {
        // Goal: the shard of an id never changes between versions (stored totals depend on
        // it) and every id lands in 0..USAGE_SHARDS.
        assert_eq!(
            usage_shard(&id_from_sql("alice", "k1").unwrap()),
            usage_shard(&id_from_sql("alice", "k1").unwrap())
        );
        assert_eq!(usage_shard(&id_from_sql("", "k").unwrap()), 28, "pinned: FNV-1a of \"\\0k\" modulo 64");
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..1000 {
            let shard = usage_shard(&id_from_sql("alice", &format!("k{n}")).unwrap());
            assert!((0..64).contains(&shard));
            seen.insert(shard);
        }
        assert_eq!(seen.len(), 64, "1000 keys reach every shard");
    }
}
