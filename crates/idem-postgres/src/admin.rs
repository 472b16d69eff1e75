//! Key administration ([`KeyAdmin`], SPEC "Key lifecycle"): a listing in one statement
//! that restates [`ListQuery::admits`], and a forget through idem-core's [`op::Forget`]
//! step, which moves the fence counter on.

use idem_core::step::op;
use idem_core::{KeyAdmin, ListQuery, Page, Record, RecordId, StoreError, Timestamp};
use sqlx::Row;

use crate::codec;
use crate::error::store_error;
use crate::read::ReadKind;
use crate::statements::query;
use crate::store::PostgresStore;

impl KeyAdmin for PostgresStore {
    /// One statement (`list` in the crate's statements): every filter of
    /// [`ListQuery::admits`] as a `WHERE` clause, the cursor as a row comparison, the
    /// order `(principal, idem_key)` in the "C" collation (bytewise, as Rust orders
    /// `str`), `limit + 1` rows to learn whether more follow. The primary key's index (in
    /// that collation since migration 0002) serves the order and the cursor. Expired
    /// records that are not purged yet are listed, as the query's docs say.
    ///
    /// # Errors
    /// `Unavailable` for driver errors; `Corrupt` when a listed row cannot be read back.
    async fn list(&self, list_query: &ListQuery) -> Result<Page, StoreError> {
        let limit = list_query.limit();
        let cursor = list_query.starting_after.as_ref();
        let rows = query(&self.inner.sql.list)
            .bind(list_query.principal.as_ref().map(|principal| principal.as_str()))
            .bind(list_query.state.map(|state| state.name()))
            .bind(list_query.created_before.map(codec::time_to_sql))
            .bind(list_query.created_after.map(codec::time_to_sql))
            .bind(cursor.map(|id| id.principal.as_str()))
            .bind(cursor.map(|id| id.key.as_str()))
            .bind(i64::try_from(limit).map_or(i64::MAX, |limit| limit.saturating_add(1)))
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        let has_more = rows.len() > limit;
        let mut records = Vec::with_capacity(rows.len().min(limit));
        for row in rows.iter().take(limit) {
            let principal: String = row.try_get("principal").map_err(store_error)?;
            let key: String = row.try_get("idem_key").map_err(store_error)?;
            let id = codec::id_from_sql(&principal, &key)?;
            let record = codec::decode_record(row)?;
            debug_assert!(list_query.admits(&id, &record), "the listing's SQL admits what ListQuery admits");
            records.push((id, record));
        }
        Ok(Page { records, has_more })
    }

    /// idem-core's [`op::Forget`] through the store's ordinary read and guarded write. The
    /// read draws from the fence sequence, as a claim's does: that draw is the step's
    /// advance of the fence counter (a forget is fenced), so no fence issued before the
    /// forget is ever current afterwards (G3). A forget that finds nothing leaves a gap in
    /// the sequence, as a claim that replays does.
    ///
    /// # Errors
    /// As every operation: `Unavailable` (retrying is safe: a second forget finds
    /// nothing), `Corrupt`.
    async fn forget(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.run(id, ReadKind::Draw, Timestamp::EPOCH, |_| op::Forget).await
    }
}
