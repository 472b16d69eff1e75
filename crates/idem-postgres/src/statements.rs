//! Every statement the store sends, with the schema spelled out, built once at open.
//!
//! Parameters are numbered as [`crate::codec::COLUMNS`] binds a record: the record id is
//! `$1, $2`, a record's 15 columns follow (`$3..=$17`), then what a statement adds.

use std::sync::Arc;

use sqlx::postgres::PgArguments;
use sqlx::{AssertSqlSafe, Postgres};

use crate::codec::{self, COLUMNS, STATE_IN_FLIGHT};

/// The database's clock in unix milliseconds.
pub(crate) const DB_NOW_MS: &str = "floor(extract(epoch FROM clock_timestamp()) * 1000)::int8";

/// The largest time a row holds: [`idem_core::Timestamp`]'s saturating sums, as stored.
const TIME_MAX: &str = "9223372036854775807";

/// A query on one of the prebuilt statements.
pub(crate) fn query<'q>(sql: &Arc<str>) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    sqlx::query(AssertSqlSafe(Arc::clone(sql)))
}

/// Every statement, with the schema spelled out.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    pub(crate) read_view_draw: Arc<str>,
    pub(crate) read_view_peek: Arc<str>,
    pub(crate) read_view_locked: Arc<str>,
    pub(crate) complete_guarded: Arc<str>,
    pub(crate) read_counters: Arc<str>,
    pub(crate) read_record: Arc<str>,
    pub(crate) insert_record: Arc<str>,
    pub(crate) update_record: Arc<str>,
    pub(crate) delete_record: Arc<str>,
    pub(crate) purge_due: Arc<str>,
    pub(crate) purge_delete: Arc<str>,
    pub(crate) purge_put: Arc<str>,
    pub(crate) purge_usage: Arc<str>,
    pub(crate) usage_totals: Arc<str>,
    pub(crate) list: Arc<str>,
}

impl Statements {
    /// Every statement, for planting a bug in one ([`crate::PostgresStore::with_planted_bug`]).
    pub(crate) fn all(&mut self) -> [&mut Arc<str>; 15] {
        [
            &mut self.read_view_draw,
            &mut self.read_view_peek,
            &mut self.read_view_locked,
            &mut self.complete_guarded,
            &mut self.read_counters,
            &mut self.read_record,
            &mut self.insert_record,
            &mut self.update_record,
            &mut self.delete_record,
            &mut self.purge_due,
            &mut self.purge_delete,
            &mut self.purge_put,
            &mut self.purge_usage,
            &mut self.usage_totals,
            &mut self.list,
        ]
    }

    #[allow(clippy::too_many_lines)] // one statement after another, each with its comment
    pub(crate) fn new(schema: &str) -> Statements {
        // `schema` is a plain identifier (checked by the options), safe between quotes.
        let s = format!("\"{schema}\"");
        let record_columns = codec::columns_of("r", "");
        let usage_sums = format!(
            "(SELECT coalesce(sum(records), 0)::int8 FROM {s}.idem_usage) AS usage_records, \
             (SELECT coalesce(sum(stored_bytes), 0)::int8 FROM {s}.idem_usage) AS usage_stored_bytes"
        );
        let peek =
            format!("(SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {s}.idem_fence_seq)");
        // The record's row version: the id of the transaction that wrote it (`xmin`). A
        // later write of the row is another transaction's, so the version differs; a write
        // guarded by the version read applies only to the row as read (see the crate docs).
        let version = "r.xmin::text::int8";
        // The record is read in a lateral subquery (locked, for the locked read); the outer
        // projection (the fence counter, the clock) is evaluated at the join, after the
        // record was read (and its lock granted), so a claim draws a fence after the fence
        // of the record it read was drawn, and reads the time after that record was
        // written. The usage sums read the statement's snapshot (see the crate docs).
        let read_view = |fence: &str, lock: &str| {
            let outer = COLUMNS.map(|column| format!("x.{column}")).join(", ");
            format!(
                "SELECT x.held IS NOT NULL AS held, x.version, {outer}, \
                 {fence} AS next_fence, {usage_sums}, {DB_NOW_MS} AS db_now \
                 FROM (SELECT 1) AS one LEFT JOIN LATERAL \
                 (SELECT true AS held, {version} AS version, {record_columns} FROM {s}.idem_records AS r \
                 WHERE r.principal = $1 AND r.idem_key = $2{lock}) AS x ON true"
            )
        };
        // The usage delta goes to the record's shard, only when the record write happened
        // and the delta changes something.
        let usage_cte = |first: u32| {
            let (records, bytes, shard) = (first, first + 1, first + 2);
            format!(
                "u AS (UPDATE {s}.idem_usage SET records = records + ${records}, \
                 stored_bytes = stored_bytes + ${bytes} WHERE shard = ${shard} \
                 AND (${records} <> 0 OR ${bytes} <> 0) AND EXISTS (SELECT 1 FROM w) RETURNING 1)"
            )
        };
        let counts = "SELECT (SELECT count(*) FROM w) AS written, (SELECT count(*) FROM u) AS counted";
        let columns = COLUMNS.join(", ");
        let values = (3..=17).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
        let assignments = COLUMNS.iter().zip(3..).map(|(column, n)| format!("{column} = ${n}")).collect::<Vec<_>>();
        let assignments = assignments.join(", ");
        let arc = |sql: String| Arc::<str>::from(sql);
        Statements {
            read_view_draw: arc(read_view(&format!("nextval('{s}.idem_fence_seq')"), "")),
            read_view_peek: arc(read_view(&peek, "")),
            read_view_locked: arc(read_view(&peek, " FOR UPDATE")),
            complete_guarded: arc(complete_guarded(&s, &record_columns, &peek, &usage_sums, version, counts)),
            read_counters: arc(format!("SELECT {peek} AS next_fence, {usage_sums}, {DB_NOW_MS} AS db_now")),
            read_record: arc(format!(
                "SELECT {record_columns} FROM {s}.idem_records AS r WHERE r.principal = $1 AND r.idem_key = $2"
            )),
            // A new record id: two operations that both found it absent race here, and the
            // unique key lets exactly one insert; the other inserts nothing and runs again.
            insert_record: arc(format!(
                "WITH w AS (INSERT INTO {s}.idem_records (principal, idem_key, {columns}, stored_bytes) \
                 VALUES ($1, $2, {values}, $18) \
                 ON CONFLICT (principal, idem_key) DO NOTHING RETURNING 1), {} {counts}",
                usage_cte(19)
            )),
            // A held record: only the row version the step read (`$22`); a row another
            // operation wrote (or deleted) since is left alone, and this one runs again.
            update_record: arc(format!(
                "WITH w AS (UPDATE {s}.idem_records AS r SET {assignments}, stored_bytes = $18 \
                 WHERE r.principal = $1 AND r.idem_key = $2 AND {version} = $22 RETURNING 1), {} {counts}",
                usage_cte(19)
            )),
            delete_record: arc(format!(
                "WITH w AS (DELETE FROM {s}.idem_records AS r WHERE r.principal = $1 AND r.idem_key = $2 \
                 AND {version} = $6 RETURNING 1), {} {counts}",
                usage_cte(3)
            )),
            // Rows other transactions hold are skipped: they are being worked on, and the
            // next batch finds them if they are still due.
            purge_due: arc(format!(
                "SELECT r.principal AS principal, r.idem_key AS idem_key, r.stored_bytes AS stored_bytes, \
                 {record_columns} FROM {s}.idem_records AS r WHERE r.due_at <= $1 \
                 ORDER BY r.due_at, r.fence LIMIT $2 FOR UPDATE SKIP LOCKED"
            )),
            purge_delete: arc(format!(
                "DELETE FROM {s}.idem_records WHERE (principal, idem_key) IN \
                 (SELECT * FROM unnest($1::text[], $2::text[]))"
            )),
            // Records a purge shrinks to their tombstones, one array per column, rows this
            // transaction locked.
            purge_put: arc(purge_put(&s)),
            purge_usage: arc(format!(
                "UPDATE {s}.idem_usage AS u SET records = u.records + d.records, \
                 stored_bytes = u.stored_bytes + d.stored_bytes \
                 FROM unnest($1::int4[], $2::int8[], $3::int8[]) AS d(shard, records, stored_bytes) \
                 WHERE u.shard = d.shard"
            )),
            usage_totals: arc(format!("SELECT count(*) AS shards, {usage_sums} FROM {s}.idem_usage")),
            list: arc(list(&s, &record_columns)),
        }
    }
}

/// Atomic mode's completion in one statement (crate docs, "The guarded completion"):
/// `old` locks the record's row if it is the claim `$3` in flight and reads the view
/// around it (counters, clock) after the lock is granted; `w` writes the completion the
/// store step names for that view, only if the fence counter is past the record's fence
/// (the step's check). The columns the completion sets come from the step (`$4` state,
/// `$5..$7` the response, `$13..$17` the in-flight columns it clears and the counts it
/// starts); its times count from the view's clock (`$8`: the caller's time under
/// `TimeSource::Caller`, else the clock) plus the retention (`$9`, ms) and, for its
/// tombstone, the tombstone period after that (`$10`, ms, NULL for none); the fingerprint,
/// fence and creation time stay the row's. `d` is the usage delta: `$18` records and the
/// new `stored_bytes` (`$11`) less the row's; `u` adds it to the shard `$12`. The view and
/// the row as written (`w_`-named columns) come back for the step to check.
fn complete_guarded(
    s: &str,
    record_columns: &str,
    peek: &str,
    usage_sums: &str,
    version: &str,
    counts: &str,
) -> String {
    let written = codec::columns_of("r", "w_");
    let guard = format!("r.principal = $1 AND r.idem_key = $2 AND r.state = '{STATE_IN_FLIGHT}' AND r.fence = $3");
    format!(
        "WITH old AS (SELECT x.*, {peek} AS next_fence, {usage_sums}, {DB_NOW_MS} AS db_now \
         FROM (SELECT {version} AS version, {record_columns}, r.stored_bytes AS stored_bytes \
         FROM {s}.idem_records AS r WHERE {guard} FOR UPDATE) AS x), \
         t AS (SELECT LEAST(coalesce($8::int8, old.db_now)::numeric + $9::int8, {TIME_MAX})::int8 AS at FROM old), \
         w AS (UPDATE {s}.idem_records AS r SET state = $4, lease_expires_at = $13, holder_request_id = $14, \
         holder_trace_id = $15, renewals = $16, expires_at = t.at, due_at = t.at, status = $5, headers = $6, \
         body = $7, replays = $17, \
         tombstone_until = CASE WHEN $10::int8 IS NULL THEN NULL \
         ELSE LEAST(t.at::numeric + $10::int8, {TIME_MAX})::int8 END, stored_bytes = $11 \
         FROM old, t WHERE {guard} AND old.next_fence > old.fence \
         RETURNING {written}, r.stored_bytes AS w_stored_bytes), \
         d AS (SELECT $18::int8 AS records, $11::int8 - old.stored_bytes AS bytes FROM old), \
         u AS (UPDATE {s}.idem_usage AS g SET records = g.records + d.records, \
         stored_bytes = g.stored_bytes + d.bytes FROM d WHERE g.shard = $12 AND (d.records <> 0 OR d.bytes <> 0) AND EXISTS (SELECT 1 FROM w) RETURNING 1), \
         counts AS ({counts}) \
         SELECT old.*, w.*, counts.written, counts.counted FROM old CROSS JOIN counts LEFT JOIN w ON true"
    )
}

/// Puts records by id from one array per column (`$1, $2` the ids, `$3..=$17` the
/// columns, `$18` `stored_bytes`).
fn purge_put(s: &str) -> String {
    let types = [
        "bytea", "int8", "int8", "text", "int8", "text", "text", "int4", "int8", "int8", "int4", "bytea", "bytea",
        "int8", "int8",
    ];
    let arrays = types.iter().zip(3..).map(|(kind, n)| format!("${n}::{kind}[]")).collect::<Vec<_>>().join(", ");
    let names = COLUMNS.join(", ");
    let assignments = COLUMNS.map(|column| format!("{column} = d.{column}")).join(", ");
    format!(
        "UPDATE {s}.idem_records AS r SET {assignments}, stored_bytes = d.stored_bytes \
         FROM unnest($1::text[], $2::text[], {arrays}, $18::int8[]) \
         AS d(principal, idem_key, {names}, stored_bytes) \
         WHERE r.principal = d.principal AND r.idem_key = d.idem_key"
    )
}

/// One page of an operator's listing: `idem_core::ListQuery::admits` restated, each filter
/// off when its parameter is NULL (`$1` principal, `$2` state, `$3` created before, `$4`
/// created at or after, `$5, $6` the cursor's id), in (principal, key) order bytewise (the
/// "C" collation: `str`'s order in Rust), `$7` rows at most.
fn list(s: &str, record_columns: &str) -> String {
    format!(
        "SELECT r.principal AS principal, r.idem_key AS idem_key, {record_columns} FROM {s}.idem_records AS r \
         WHERE ($1::text IS NULL OR r.principal = $1::text) \
         AND ($2::text IS NULL OR r.state = $2::text) \
         AND ($3::int8 IS NULL OR r.created_at < $3::int8) \
         AND ($4::int8 IS NULL OR r.created_at >= $4::int8) \
         AND ($5::text IS NULL OR (r.principal COLLATE \"C\", r.idem_key COLLATE \"C\") > ($5::text, $6::text)) \
         ORDER BY r.principal COLLATE \"C\", r.idem_key COLLATE \"C\" LIMIT $7"
    )
}
