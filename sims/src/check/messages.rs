//! The consumer scenarios' checker. Its oracle is the publisher's plan (which payload is
//! each id's first, which copies are mismatches), the effect rows the store host wrote, the
//! broker's settles and its final state; it calls no idem code. The store's events are read
//! only for the store's own business, fences (G3).
//!
//! | check | what it reads |
//! |---|---|
//! | G1 | effect rows per message id at most one (separate mode: expected) |
//! | G5 | no effect row carries a payload other than the plan's first; a mismatch copy is never acked, and is dead-lettered with `key-reused` |
//! | ACK | an ack the broker applied comes after an effect row of its id (an ack only after the completion committed) |
//! | G6 | every copy is acked or dead-lettered, within the bound after healing or its publish; a copy of the first payload is acked, never dead-lettered; an acked id has an effect row (else it is lost); every planned publish happened |
//! | G2 | every replayed outcome equals the outcome of an effect row of its id written before it, and all replays of an id are equal |
//! | G3 | a fenced store operation applies only with the record's fence; no fence issued twice |
//! | G8 | every handler ran under a claim (its fence) the store wrote for its message |

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use idem_core::{Fence, RecordId};

use crate::check::{Checked, Violation};
use crate::consumer::{Copy, MsgEvent, Phase, Planned, Settings};
use crate::faults::ms;
use crate::history::{Event, Kind, StoreOp};

/// At most this many events in a violation's story.
const STORY_MAX: usize = 120;

/// Checks one consumer run.
pub(crate) fn check(
    events: &[Event],
    plan: &[Planned],
    copies: &[Copy],
    settings: &Settings,
    run_error: Option<&str>,
) -> Checked {
    let planned: BTreeMap<&str, &Planned> = plan.iter().map(|planned| (planned.id.as_str(), planned)).collect();
    let mut found = Found { events, violations: Vec::new(), expected: Vec::new() };
    effects(&mut found, &planned, settings.separate);
    acks_after_effects(&mut found);
    settled(&mut found, &planned, copies, settings);
    replays(&mut found);
    fences(&mut found);
    claims(&mut found);
    if let Some(error) = run_error {
        let detail = format!("the simulation did not finish: {error}");
        found.violations.push(Violation { guarantee: "G6", subject: "the run".to_owned(), detail, story: Vec::new() });
    }
    Checked { violations: found.violations, expected: found.expected }
}

struct Found<'a> {
    events: &'a [Event],
    violations: Vec<Violation>,
    expected: Vec<Violation>,
}

impl Found<'_> {
    /// Every event about message id `id`, and every fault, in order.
    fn story(&self, id: &str) -> Vec<String> {
        let about = |event: &&Event| match &event.kind {
            Kind::Msg(msg) => msg.mentions(id),
            Kind::Store(store) => store.id.key.as_str() == id,
            Kind::Fault(_) => true,
            _ => false,
        };
        self.events.iter().filter(about).take(STORY_MAX).map(ToString::to_string).collect()
    }

    fn violation(&self, guarantee: &'static str, id: &str, detail: String) -> Violation {
        Violation { guarantee, subject: format!("message {id}"), detail, story: self.story(id) }
    }

    fn push(&mut self, guarantee: &'static str, id: &str, detail: String) {
        let violation = self.violation(guarantee, id, detail);
        self.violations.push(violation);
    }

    fn msgs(&self) -> impl Iterator<Item = &MsgEvent> {
        self.events.iter().filter_map(|event| match &event.kind {
            Kind::Msg(msg) => Some(msg.as_ref()),
            _ => None,
        })
    }
}

/// G1 (at most one effect row per id; separate mode's window is expected) and G5 (no row
/// with another payload than the plan's first).
fn effects(found: &mut Found<'_>, planned: &BTreeMap<&str, &Planned>, separate: bool) {
    let mut rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for msg in found.msgs() {
        if let MsgEvent::Effect { id, payload, .. } = msg {
            rows.entry(id.clone()).or_default().push(payload.clone());
        }
    }
    for (id, payloads) in rows {
        let first = planned.get(id.as_str()).map(|planned| planned.payload.as_str());
        for payload in payloads.iter().filter(|payload| Some(payload.as_str()) != first) {
            found.push("G5", &id, format!("an effect row carries {payload}, not the first payload {first:?}"));
        }
        if payloads.len() > 1 {
            let detail = format!("{} effect rows for one message id", payloads.len());
            let violation = found.violation("G1", &id, detail);
            if separate {
                found.expected.push(violation);
            } else {
                found.violations.push(violation);
            }
        }
    }
}

/// An ack only after the completion committed: every ack the broker applied comes after an
/// effect row of its id (atomic mode writes the row with the completion; separate mode
/// writes it before).
fn acks_after_effects(found: &mut Found<'_>) {
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut early: Vec<(String, String)> = Vec::new();
    for msg in found.msgs() {
        match msg {
            MsgEvent::Effect { id, .. } => {
                written.insert(id.clone());
            }
            MsgEvent::Settle { id, delivery, what, applied: "applied", .. }
                if what == "ack" && !written.contains(id) =>
            {
                early.push((
                    id.clone(),
                    format!("the broker applied an ack of d{delivery} before any effect row of it"),
                ));
            }
            _ => {}
        }
    }
    for (id, detail) in early {
        found.push("ACK", &id, detail);
    }
}

/// G6 and the dead-letter rules, from the broker's final state and the plan.
fn settled(found: &mut Found<'_>, planned: &BTreeMap<&str, &Planned>, copies: &[Copy], settings: &Settings) {
    let heal = ms(settings.heal_at);
    let bound = ms(settings.settle_bound);
    for copy in copies {
        let Some(plan) = planned.get(copy.id.as_str()) else {
            found.push("G6", &copy.id, format!("copy #{} has an id the plan does not hold", copy.seq));
            continue;
        };
        let mismatch = copy.payload != plan.payload;
        let due = heal.max(copy.published_ms) + bound;
        let what = format!("copy #{} ({})", copy.seq, copy.payload);
        match &copy.phase {
            Phase::Ready { .. } | Phase::Out { .. } => {
                found.push(
                    "G6",
                    &copy.id,
                    format!("{what} is neither acked nor dead-lettered at the end: {:?}", copy.phase),
                );
            }
            Phase::Acked { at_ms, .. } | Phase::DeadLettered { at_ms, .. } if *at_ms > due => {
                found.push("G6", &copy.id, format!("{what} was settled at {at_ms} ms, after its bound {due} ms"));
            }
            _ => {}
        }
        match (&copy.phase, mismatch) {
            (Phase::DeadLettered { reason, .. }, false) => {
                found.push(
                    "G6",
                    &copy.id,
                    format!("{what} carries the first payload but was dead-lettered ({reason})"),
                );
            }
            (Phase::DeadLettered { reason, .. }, true) if reason != "key-reused" => {
                found.push("G5", &copy.id, format!("{what} is a mismatch dead-lettered as {reason}, not key-reused"));
            }
            (Phase::Acked { .. }, true) => {
                found.push("G5", &copy.id, format!("{what} is a mismatch (another payload) and was acked"));
            }
            _ => {}
        }
    }
    let effects: BTreeSet<String> = found
        .msgs()
        .filter_map(|msg| match msg {
            MsgEvent::Effect { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    let mut lost = Vec::new();
    for plan in planned.values() {
        let published: Vec<&Copy> = copies.iter().filter(|copy| copy.id == plan.id).collect();
        let acked = published.iter().any(|copy| matches!(copy.phase, Phase::Acked { .. }));
        if acked && !effects.contains(&plan.id) {
            lost.push(plan.id.clone());
        }
        let firsts = published.iter().filter(|copy| copy.payload == plan.payload).count();
        if firsts < plan.copies_ms.len() {
            let detail = format!("{} of {} planned copies were published", firsts, plan.copies_ms.len());
            found.push("G6", &plan.id, detail);
        }
        if let Some((payload, _)) = &plan.mismatch
            && !published.iter().any(|copy| &copy.payload == payload)
        {
            found.push(
                "G6",
                &plan.id,
                format!("the mismatch {payload} was never published (no copy of the first was acked?)"),
            );
        }
    }
    for id in lost {
        found.push("G6", &id, "acked, but no effect row of it was ever written: the message is lost".to_owned());
    }
}

/// G2: a replay gives back the outcome of the execution that committed.
fn replays(found: &mut Found<'_>) {
    let mut outcomes: BTreeMap<String, Vec<Bytes>> = BTreeMap::new();
    let mut replayed: BTreeMap<String, Bytes> = BTreeMap::new();
    let mut wrong: Vec<(String, String)> = Vec::new();
    for msg in found.msgs() {
        match msg {
            MsgEvent::Effect { id, outcome, .. } => outcomes.entry(id.clone()).or_default().push(outcome.clone()),
            MsgEvent::Replayed { id, outcome, delivery, .. } => {
                let text = String::from_utf8_lossy(outcome);
                if !outcomes.get(id).is_some_and(|known| known.contains(outcome)) {
                    wrong.push((id.clone(), format!("d{delivery} replayed {text:?}, which no execution of it wrote")));
                }
                if let Some(first) = replayed.get(id).filter(|first| *first != outcome) {
                    let first = String::from_utf8_lossy(first);
                    wrong.push((id.clone(), format!("d{delivery} replayed {text:?}, an earlier replay {first:?}")));
                }
                replayed.entry(id.clone()).or_insert_with(|| outcome.clone());
            }
            _ => {}
        }
    }
    for (id, detail) in wrong {
        found.push("G2", &id, detail);
    }
}

/// G3: fenced operations apply only with the record's fence; no fence is issued twice.
fn fences(found: &mut Found<'_>) {
    let mut issued: BTreeMap<RecordId, BTreeSet<Fence>> = BTreeMap::new();
    let mut wrong: Vec<(String, String)> = Vec::new();
    for event in found.events {
        let Kind::Store(store) = &event.kind else { continue };
        let key = store.id.key.as_str().to_owned();
        if let Some((fence, _)) = store.issued
            && !issued.entry(store.id.clone()).or_default().insert(fence)
        {
            wrong.push((key.clone(), format!("fence {fence:?} was issued twice for this record")));
        }
        let fenced =
            matches!(store.op, StoreOp::Complete | StoreOp::CompleteInTransaction | StoreOp::Release | StoreOp::Renew);
        if fenced && store.applied && store.presented != store.before.fence() {
            wrong.push((key, format!("{:?} presenting {:?} applied to {:?}", store.op, store.presented, store.before)));
        }
    }
    for (id, detail) in wrong {
        found.push("G3", &id, detail);
    }
}

/// G8: every handler ran under a claim the store wrote for its message id, with its fence
/// (the latest answer for that record id and fence, as the history goes).
fn claims(found: &mut Found<'_>) {
    let mut written: BTreeMap<(String, u64), bool> = BTreeMap::new();
    let mut wrong: Vec<(String, String)> = Vec::new();
    for event in found.events {
        match &event.kind {
            Kind::Store(store) => {
                if let Some((fence, was_written)) = store.issued {
                    written.insert((store.id.key.as_str().to_owned(), fence.get()), was_written);
                }
            }
            Kind::Msg(msg) => {
                if let MsgEvent::Handling { id, fence, delivery, .. } = msg.as_ref()
                    && written.get(&(id.clone(), *fence)) != Some(&true)
                {
                    wrong.push((
                        id.clone(),
                        format!("the handler of d{delivery} ran under f{fence}, a claim the store never wrote"),
                    ));
                }
            }
            _ => {}
        }
    }
    for (id, detail) in wrong {
        found.push("G8", &id, detail);
    }
}
