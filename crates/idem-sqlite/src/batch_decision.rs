//! What one group commit decides, without SQL: the write-back view's state and rules
//! (sans-IO).
//!
//! [`BatchDecision`] holds the counters and the records a batch has read, decides each
//! operation on them with [`idem_core::step::step`], keeps the step's writes, and hands
//! back what the flush must write ([`Changes`]). The writer's `BatchView` (batch.rs) does
//! the reading and the writing around it on SQLite; the deterministic simulation
//! (`sims/`, scenario `sqlite-batch`) runs this same code on tables its store host keeps
//! in memory, with batches formed as the writer forms them (everything queued, up to
//! [`BATCH_MAX`]).

use std::collections::{BTreeMap, BTreeSet};

use idem_core::step::{self, Counters, Operation, StoreView};
use idem_core::{Limits, Record, RecordId, RecordState, StoreError, Usage, UsageDelta, Write};

use crate::error::corrupt;

/// Most jobs in one transaction (one group commit takes everything queued, up to this).
/// A bound on how long one commit holds the write lock; far above what 64 connections of
/// concurrent requests queue between two fsyncs.
pub const BATCH_MAX: usize = 256;

/// What a batch has read and decided; empty between batches.
#[derive(Debug, Default)]
pub struct BatchDecision {
    /// The counters as the batch has left them, and as it found them (read under the
    /// write lock at first use).
    counters: Option<(Counters, Counters)>,
    /// Every record read or written in this batch (`None`: not held).
    records: BTreeMap<RecordId, Option<Record>>,
    /// The ids whose record the batch changed, to write at the flush.
    changed: BTreeSet<RecordId>,
}

/// What a flush writes: the records put (inserted or replaced) and deleted, in id order,
/// and the counters when they changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Records to insert or replace.
    pub puts: Vec<(RecordId, Record)>,
    /// Ids whose row goes (each read in this same batch).
    pub deletes: Vec<RecordId>,
    /// The counters as the batch left them and as it found them, if it read them.
    pub counters: Option<(Counters, Counters)>,
}

impl BatchDecision {
    /// Whether the batch has read the counters.
    #[must_use]
    pub fn has_counters(&self) -> bool {
        self.counters.is_some()
    }

    /// Takes the counters as read under the write lock (once: later reads are ignored, the
    /// batch's own count wins).
    pub fn counters_read(&mut self, counters: Counters) {
        self.counters.get_or_insert((counters, counters));
    }

    /// Whether the batch has read (or written) the record of `id`.
    #[must_use]
    pub fn holds(&self, id: &RecordId) -> bool {
        self.records.contains_key(id)
    }

    /// Of `ids`, those whose record the batch has not read, sorted, each once.
    #[must_use]
    pub fn unread<'a>(&self, ids: &[&'a RecordId]) -> Vec<&'a RecordId> {
        let mut wanted: Vec<&RecordId> = ids.iter().copied().filter(|id| !self.holds(id)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// Takes the record of `id` as read (`None`: no row).
    pub fn record_read(&mut self, id: RecordId, record: Option<Record>) {
        self.records.insert(id, record);
    }

    /// The record of `id` as the batch holds it now (`None` too when not read).
    #[must_use]
    pub fn record(&self, id: &RecordId) -> Option<&Record> {
        self.records.get(id).and_then(Option::as_ref)
    }

    /// Decides `operation` for `id` on what the batch holds and keeps the step's writes.
    /// The counters and the record must have been read. Changes nothing when the step
    /// refuses, as the operation's savepoint would leave the tables.
    ///
    /// # Errors
    /// The step's errors; `Corrupt` when the counters or the record were not read, or the
    /// usage totals would go below zero.
    pub fn step<O: Operation>(&mut self, limits: Limits, id: &RecordId, operation: O) -> Result<O::Answer, StoreError> {
        let (counters, _) = self.counters.ok_or_else(|| corrupt("the batch lost its counters"))?;
        let record = self.records.get(id).ok_or_else(|| corrupt("the batch decided on a record it did not read"))?;
        let step = step::step(id, &StoreView { record: record.as_ref(), counters, limits }, operation)?;
        let after = Counters {
            next_fence: step.next_fence.unwrap_or(counters.next_fence),
            usage: add(counters.usage, step.usage)?,
        };
        match step.write {
            Write::Unchanged => {}
            Write::Put(record) => {
                self.records.insert(id.clone(), Some(record));
                self.changed.insert(id.clone());
            }
            Write::Delete => {
                self.records.insert(id.clone(), None);
                self.changed.insert(id.clone());
            }
        }
        if let Some((now, _)) = self.counters.as_mut() {
            *now = after;
        }
        Ok(step.answer)
    }

    /// The record of `id` as the batch holds it, if it is completed.
    #[must_use]
    pub fn completed(&self, id: &RecordId) -> Option<&Record> {
        let record = self.record(id)?;
        matches!(record.state, RecordState::Completed { .. }).then_some(record)
    }

    /// What the flush must write; empties the batch.
    pub fn take(&mut self) -> Changes {
        let view = std::mem::take(self);
        let mut changes = Changes { counters: view.counters, ..Changes::default() };
        for id in view.changed {
            match view.records.get(&id) {
                Some(Some(record)) => changes.puts.push((id, record.clone())),
                _ => changes.deletes.push(id),
            }
        }
        changes
    }

    /// Forgets everything without writing (the batch rolled back).
    pub fn clear(&mut self) {
        *self = BatchDecision::default();
    }
}

/// `usage` after `delta`; a total below zero means the totals and the records disagree.
fn add(usage: Usage, delta: UsageDelta) -> Result<Usage, StoreError> {
    let records = usage.records.checked_add_signed(delta.records);
    let stored_bytes = usage.stored_bytes.checked_add_signed(delta.stored_bytes);
    match (records, stored_bytes) {
        (Some(records), Some(stored_bytes)) => Ok(Usage { records, stored_bytes }),
        _ => Err(corrupt("the usage totals would go below zero: they disagree with the records")),
    }
}
