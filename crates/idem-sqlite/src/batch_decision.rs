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
    usage
        .checked_after(delta)
        .ok_or_else(|| corrupt("the usage totals would go below zero: they disagree with the records"))
}

#[cfg(test)]
mod tests {
    use idem_core::step::op;
    use idem_core::{Decision, Fence, Fenced, Fingerprint, Key, Policy, Principal, Refusal, StoredResponse, Timestamp};

    use super::*;

    fn id(key: &str) -> RecordId {
        RecordId::new(Principal::anonymous(), Key::parse(key.as_bytes()).expect("a valid key"))
    }

    #[test]
    fn a_batch_decides_on_its_own_writes_and_flushes_them_once() {
        // Goal: the decision the writer and the simulation share: a completion later in a
        // batch sees the claim decided earlier in it, a refused step changes nothing, the
        // flush has each changed record once with the counters as found and as left, and
        // a record not read is damage, never decided on as absent.
        let (now, policy, limits) = (Timestamp::from_unix_ms(1_000), Policy::default(), Limits::default());
        let (a, unread) = (id("a"), id("b"));
        let mut batch = BatchDecision::default();
        batch.counters_read(Counters::EMPTY);
        assert_eq!(batch.unread(&[&a, &a, &unread]), vec![&a, &unread]);
        batch.record_read(a.clone(), None);
        let claim = op::Claim { request: Fingerprint::of("POST", "/p", b"{}").into(), now, policy };
        let Ok(Decision::Execute(claimed)) = batch.step(limits, &a, claim) else { panic!("a first claim executes") };
        let response = StoredResponse { status: 201, headers: vec![], body: bytes::Bytes::from_static(b"ok") };
        let stale = op::Complete { fence: Fence::new(99), response: response.clone(), now, policy };
        let refused = batch.step(limits, &a, stale).expect("a refusal is an answer");
        assert_eq!(refused, Fenced::Refused(Refusal::StaleFence { presented: Fence::new(99), current: claimed.fence }));
        let complete = op::Complete { fence: claimed.fence, response, now, policy };
        assert_eq!(batch.step(limits, &a, complete).expect("completes"), Fenced::Applied);
        assert!(batch.completed(&a).is_some());
        let release = op::Release { fence: claimed.fence };
        assert!(matches!(batch.step(limits, &unread, release), Err(StoreError::Corrupt { .. })));
        let changes = batch.take();
        assert_eq!(changes.puts.len(), 1);
        assert!(changes.deletes.is_empty());
        let (left, found) = changes.counters.expect("the counters were read");
        assert_eq!((found, left.next_fence, left.usage.records), (Counters::EMPTY, claimed.fence.next(), 1));
        assert!(!batch.has_counters() && !batch.holds(&a), "take empties the batch");
    }
}
