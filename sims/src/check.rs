//! The history checker: reads the history after the run and checks SPEC's guarantees.
//! A violation carries its minimal story: every event of its key.
//!
//! Every oracle is the checker's own ([`crate::oracle`]): callers, keys and requests come
//! from what the clients sent, the payments from the rows the ledger host wrote and from
//! each caller's list read over HTTP after healing ([`crate::audit`]). The store's events
//! are read only for what is the store's own business: fences (G3) and claims (G8).

mod answers;
pub(crate) mod messages;
mod not_kept;
mod rows;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;
use idem_core::{Fence, RecordId};

use crate::check::rows::Keyed;
use crate::faults::ms;
use crate::history::{Event, Kind, StoreOp};
use crate::oracle::{Asked, asked, caller_of, is_valid};
use crate::scenario::Settings;

/// A guarantee the history breaks, with the events that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which guarantee: "G1" … "G8", or "HTTP" for SPEC's "HTTP behaviour" rules (a
    /// response over the recording limit is answered whole once, never replayed).
    pub guarantee: &'static str,
    /// What it is about: an idempotency key, an operation, or the run.
    pub subject: String,
    /// What went wrong, in one sentence.
    pub detail: String,
    /// The events of that key (or operation), in order: the minimal story.
    pub story: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} violated for {}: {}", self.guarantee, self.subject, self.detail)?;
        for line in &self.story {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}

/// One operation as its client sent it.
#[derive(Debug, Clone)]
pub(crate) struct OpFacts {
    /// The caller, by the checker's reading of the `Authorization` sent.
    pub(crate) caller: Option<String>,
    pub(crate) key: String,
    pub(crate) target: String,
    pub(crate) body: Bytes,
    /// What the body asks for, if it reads as a payment request.
    pub(crate) asked: Option<Asked>,
    pub(crate) valid: bool,
}

impl OpFacts {
    /// Whether `other` is another request under the same caller and key (SPEC: same key,
    /// another method, path with query, or body bytes). All requests here are POSTs.
    fn differs_from(&self, other: &OpFacts) -> bool {
        self.caller == other.caller && self.key == other.key && (self.target != other.target || self.body != other.body)
    }
}

/// What the checker knows before it checks.
pub(crate) struct Facts<'a> {
    pub(crate) events: &'a [Event],
    pub(crate) settings: &'a Settings,
    /// (client, op) → what was sent.
    pub(crate) ops: BTreeMap<(usize, usize), OpFacts>,
    /// Each key's destinations, so a row joins its key's story.
    destinations: BTreeMap<String, BTreeSet<String>>,
    /// The store host's lifetime at the end of the run (its rows are the ones still stored).
    pub(crate) final_epoch: u32,
}

impl<'a> Facts<'a> {
    fn new(events: &'a [Event], settings: &'a Settings, final_epoch: u32) -> Facts<'a> {
        let mut ops = BTreeMap::new();
        let mut destinations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        // A key the client chose is read from its first attempt.
        let mut sent_keys: BTreeMap<(usize, usize), &String> = BTreeMap::new();
        for event in events {
            if let Kind::Send { client, op, key, .. } = &event.kind {
                sent_keys.entry((*client, *op)).or_insert(key);
            }
        }
        for event in events {
            let Kind::Invoke { client, op, auth, key, target, body, .. } = &event.kind else { continue };
            let key = if key.is_empty() { sent_keys.get(&(*client, *op)).copied().unwrap_or(key) } else { key };
            let asked = asked(body);
            if let Some(asked) = &asked {
                destinations.entry(key.clone()).or_default().insert(asked.destination.clone());
            }
            let valid = asked.as_ref().is_some_and(is_valid);
            let facts = OpFacts {
                caller: caller_of(auth),
                key: key.clone(),
                target: target.clone(),
                body: body.clone(),
                asked,
                valid,
            };
            ops.entry((*client, *op)).or_insert(facts);
        }
        Facts { events, settings, ops, destinations, final_epoch }
    }

    pub(crate) fn story_of_key(&self, key: &str) -> Vec<String> {
        let destinations = self.destinations.get(key);
        self.events
            .iter()
            .filter(|event| match &event.kind {
                Kind::Row(row) => destinations.is_some_and(|set| set.contains(&row.destination)),
                _ => {
                    event.key() == Some(key)
                        || event.op().and_then(|op| self.ops.get(&op)).is_some_and(|facts| facts.key == key)
                }
            })
            .map(ToString::to_string)
            .collect()
    }

    pub(crate) fn story_of_op(&self, op: (usize, usize)) -> Vec<String> {
        match self.ops.get(&op) {
            Some(facts) => self.story_of_key(&facts.key),
            None => Vec::new(),
        }
    }

    /// The violation about `key`, with its story.
    pub(crate) fn about_key(&self, guarantee: &'static str, key: &str, detail: String) -> Violation {
        Violation { guarantee, subject: key.to_owned(), detail, story: self.story_of_key(key) }
    }
}

/// What the checker found: violations, and counterexamples the scenario's mode does not
/// promise to exclude (SPEC: separate mode's G1 window), reported apart.
pub(crate) struct Checked {
    pub(crate) violations: Vec<Violation>,
    pub(crate) expected: Vec<Violation>,
}

/// Checks every guarantee on `events`; `run_error` is turmoil's, if the run was cut off;
/// `final_epoch` is the store host's lifetime at the end.
pub(crate) fn check(events: &[Event], settings: &Settings, final_epoch: u32, run_error: Option<&str>) -> Checked {
    let facts = Facts::new(events, settings, final_epoch);
    let mut violations = Vec::new();
    fences(&facts, &mut violations);
    claims(&facts, &mut violations);
    violations.extend(answers::check(&facts));
    violations.extend(not_kept::check(&facts));
    let rows = rows::check(&facts);
    violations.extend(rows.violations);
    progress(&facts, &rows.keyed, &mut violations);
    let expected = rows.expected;
    if let Some(error) = run_error {
        let detail = format!("the simulation did not finish: {error}");
        violations.push(Violation { guarantee: "G6", subject: "the run".to_owned(), detail, story: Vec::new() });
    }
    Checked { violations, expected }
}

/// G3: a fenced operation applies only with the fence of the record it changes, and no
/// fence is issued twice for a record id (also not across store lifetimes).
fn fences(facts: &Facts<'_>, violations: &mut Vec<Violation>) {
    let mut issued: BTreeMap<RecordId, BTreeSet<Fence>> = BTreeMap::new();
    for event in facts.events {
        let Kind::Store(store) = &event.kind else { continue };
        let key = store.id.key.as_str();
        if let Some((fence, _)) = store.issued
            && !issued.entry(store.id.clone()).or_default().insert(fence)
        {
            let detail = format!("fence {fence:?} was issued twice for this record (store lifetime {})", store.epoch);
            violations.push(facts.about_key("G3", key, detail));
        }
        let fenced =
            matches!(store.op, StoreOp::Complete | StoreOp::CompleteInTransaction | StoreOp::Release | StoreOp::Renew);
        if fenced && store.applied && store.presented != store.before.fence() {
            let detail = format!(
                "{:?} presenting {:?} was applied to a record held under {:?}",
                store.op, store.presented, store.before
            );
            violations.push(facts.about_key("G3", key, detail));
        }
    }
}

/// G8: every execution (a handler reaching its write under a claim) runs under a claim the
/// store wrote. The latest claim for each (record id, fence), as the history goes.
fn claims(facts: &Facts<'_>, violations: &mut Vec<Violation>) {
    let mut written: BTreeMap<(RecordId, u64), bool> = BTreeMap::new();
    for event in facts.events {
        match &event.kind {
            Kind::Store(store) => {
                if let Some((fence, was_written)) = store.issued {
                    written.insert((store.id.clone(), fence.get()), was_written);
                }
            }
            Kind::Execute { id, fence, .. } if written.get(&(id.clone(), fence.get())) != Some(&true) => {
                let detail = format!("an execution under {fence:?} ran without a claim written by the store");
                violations.push(facts.about_key("G8", id.key.as_str(), detail));
            }
            _ => {}
        }
    }
}

/// The answers an operation may end with (SPEC): 400 for an invalid request; 201 or 422
/// when another valid request used its caller's key; 201 otherwise. With tombstones (SPEC
/// "Key lifecycle"), 410 too once a row of its own request (same caller, key and content)
/// was written; and only 410 when it was first sent after that row's retention as two
/// skewed clocks see it, within its tombstone, and no other request used its key (whose
/// record would answer 422 instead).
fn deserved(facts: &Facts<'_>, op: &OpFacts, keyed: &Keyed<'_>, invoked_ms: u64) -> Vec<u16> {
    if !op.valid {
        return vec![400];
    }
    let reused = facts.ops.values().any(|other| other.valid && op.differs_from(other));
    let mut answers = if reused { vec![201, 422] } else { vec![201] };
    let Some(tombstone) = facts.settings.tombstone else { return answers };
    let Some(caller) = op.caller.clone() else { return answers };
    let own_row_at = keyed
        .get(&(caller, op.key.clone()))
        .into_iter()
        .flatten()
        .filter(|(_, row)| op.asked.as_ref() == Some(&rows::asked_of(row)))
        .map(|(at, _)| *at)
        .min();
    if let Some(row_at) = own_row_at {
        let (retention, skew) = (ms(facts.settings.retention), ms(facts.settings.skew_max));
        let gone = row_at + retention + 2 * skew..(row_at + retention + ms(tombstone)).saturating_sub(2 * skew);
        if !reused && gone.contains(&invoked_ms) {
            return vec![410];
        }
        answers.push(410);
    }
    answers
}

/// G6: after healing, every operation ends within the bound, with the answer it deserves.
fn progress(facts: &Facts<'_>, keyed: &Keyed<'_>, violations: &mut Vec<Violation>) {
    let heal_ms = ms(facts.settings.heal_at);
    let bound_ms = ms(facts.settings.progress_bound);
    let mut started: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    let mut ended: BTreeMap<(usize, usize), (u64, Option<u16>)> = BTreeMap::new();
    for event in facts.events {
        match &event.kind {
            Kind::Invoke { client, op, .. } => {
                started.entry((*client, *op)).or_insert(event.at_ms);
            }
            Kind::End { client, op, status } => {
                ended.insert((*client, *op), (event.at_ms, *status));
            }
            _ => {}
        }
    }
    for (op, start) in &started {
        let deadline = (*start).max(heal_ms) + bound_ms;
        let subject = format!("operation c{}.{}", op.0, op.1);
        let mut violate = |detail: String| {
            violations.push(Violation {
                guarantee: "G6",
                subject: subject.clone(),
                detail,
                story: facts.story_of_op(*op),
            });
        };
        let deserves = facts.ops.get(op).map_or_else(Vec::new, |of_op| deserved(facts, of_op, keyed, *start));
        match ended.get(op) {
            None => violate("never ended".to_owned()),
            Some((_, None)) => violate("gave up without an answer".to_owned()),
            Some((at, Some(_))) if *at > deadline => {
                violate(format!("ended at {at} ms, after the bound ({deadline} ms)"))
            }
            Some((_, Some(status))) if !deserves.contains(status) => {
                violate(format!("ended with {status}, but the request deserves {deserves:?}"));
            }
            Some(_) => {}
        }
    }
}
