//! Key administration ([`KeyAdmin`]): an operator's listing as one SQL query, and a
//! fenced forget through the group commit.
//!
//! The listing restates [`ListQuery::admits`], idem-core's one filter rule, as a `WHERE`
//! clause (pinned by idem-core's lifecycle conformance cases and, in debug builds, by an
//! assertion on every row it returns). It reads through the pool, never the writer, so
//! listing takes no write lock.

use idem_core::step::op;
use idem_core::{KeyAdmin, ListQuery, Page, Record, RecordId, StoreError};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::codec::{self, record_columns};
use crate::error::store_error;
use crate::store::SqliteStore;
use crate::writer;

impl KeyAdmin for SqliteStore {
    /// One page, in one statement:
    ///
    /// ```sql
    /// SELECT ... FROM idem_records AS r WHERE 1
    ///   [AND r.principal = ?] [AND r.state = ?] [AND r.created_at < ?] [AND r.created_at >= ?]
    ///   [AND (r.principal, r.idem_key) > (?, ?)]
    /// ORDER BY r.principal, r.idem_key LIMIT limit + 1
    /// ```
    ///
    /// Both id columns compare with SQLite's `BINARY` collation (their default, and the
    /// primary key's, which the order walks): bytewise on UTF-8, which is how
    /// [`RecordId`] orders. The extra row tells `has_more`.
    ///
    /// # Errors
    /// `Unavailable` for the driver; `Corrupt` when a listed row cannot be read back.
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let mut statement = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT r.principal AS principal, r.idem_key AS idem_key, ",
            record_columns!(),
            " FROM idem_records AS r WHERE 1"
        ));
        if let Some(principal) = &query.principal {
            statement.push(" AND r.principal = ").push_bind(principal.as_str().to_owned());
        }
        if let Some(state) = query.state {
            statement.push(" AND r.state = ").push_bind(state.name());
        }
        if let Some(before) = query.created_before {
            statement.push(" AND r.created_at < ").push_bind(codec::time_to_sql(before));
        }
        if let Some(after) = query.created_after {
            statement.push(" AND r.created_at >= ").push_bind(codec::time_to_sql(after));
        }
        if let Some(cursor) = &query.starting_after {
            statement.push(" AND (r.principal, r.idem_key) > (").push_bind(cursor.principal.as_str().to_owned());
            statement.push(", ").push_bind(cursor.key.as_str().to_owned()).push(")");
        }
        // At most LIST_LIMIT_MAX + 1 (ListQuery checks the limit), so the cast cannot fail.
        let fetch = i64::try_from(query.limit() + 1).expect("a listing's limit is at most 100");
        statement.push(" ORDER BY r.principal, r.idem_key LIMIT ").push_bind(fetch);

        let mut connection = self.pool().acquire().await.map_err(store_error)?;
        let rows = statement.build().fetch_all(&mut *connection).await.map_err(store_error)?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let principal: String = row.try_get("principal").map_err(store_error)?;
            let key: String = row.try_get("idem_key").map_err(store_error)?;
            let id = codec::id_from_sql(&principal, &key)?;
            let record = codec::decode_record(row)?;
            debug_assert!(query.admits(&id, &record), "the WHERE clause restates ListQuery::admits: {id:?}");
            records.push((id, record));
        }
        let has_more = records.len() > query.limit();
        records.truncate(query.limit());
        Ok(Page { records, has_more })
    }

    /// [`op::Forget`] as one job of the next group commit, synced: the step deletes the
    /// row and, when it removed one, sets the fence counter past every fence issued so far
    /// (`Step::next_fence`, written like a claim's), so a handler still running under the
    /// forgotten claim is refused (G3). The copy in this store's replay cache is dropped.
    ///
    /// # Errors
    /// `Unavailable` (unknown outcome: retry) or `Corrupt`.
    async fn forget(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let forgotten = self.run(id, op::Forget, writer::Sync::Full).await;
        // Whatever the outcome: after an unknown one the record may be gone too.
        self.replay_cache().forgotten(id);
        forgotten
    }
}
