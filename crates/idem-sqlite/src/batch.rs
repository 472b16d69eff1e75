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
use idem_core::{Limits, Record, RecordId, StoreError};
use sqlx::sqlite::SqliteConnection;

use crate::batch_decision::BatchDecision;
use crate::rows::{delete_records, put_records, read_counters, read_record, read_records, write_counters};

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
