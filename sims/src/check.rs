//! The history checker: reads the history after the run and checks SPEC's guarantees.
//! A violation carries its minimal story: every event of its key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bytes::Bytes;
use http::HeaderMap;
use idem_core::{Fence, Fingerprint, Principal, RecordId, StoredResponse};

use crate::faults::ms;
use crate::history::{Answer, Event, Kind, StoreOp};
use crate::scenario::Settings;

/// A guarantee the history breaks, with the events that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which guarantee: "G1" … "G8".
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

/// The principal the replicas derive from a client's bearer token.
pub(crate) fn principal_of_token(token: &str) -> Principal {
    let mut headers = HeaderMap::new();
    let value = http::HeaderValue::try_from(format!("Bearer {token}")).expect("tokens are plain ASCII words");
    headers.insert(http::header::AUTHORIZATION, value);
    idem_server::principal::principal_of(&headers).expect("a bearer token is a valid principal")
}

/// Statuses that are not the answer to a request but a reason to retry or a refusal of it.
fn is_final(answer: &Answer) -> bool {
    !matches!(answer.status, 409 | 422 | 429 | 503)
}

struct Facts<'a> {
    events: &'a [Event],
    /// (client, op) → (token, key).
    ops: BTreeMap<(usize, usize), (&'static str, String)>,
}

impl Facts<'_> {
    fn story_of_key(&self, key: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|event| {
                event.key() == Some(key)
                    || event.op().and_then(|op| self.ops.get(&op)).is_some_and(|(_, op_key)| op_key == key)
            })
            .map(ToString::to_string)
            .collect()
    }

    fn story_of_op(&self, op: (usize, usize)) -> Vec<String> {
        match self.ops.get(&op) {
            Some((_, key)) => self.story_of_key(key),
            None => Vec::new(),
        }
    }
}

/// Checks every guarantee on `events`; `run_error` is turmoil's, if the run was cut off.
pub(crate) fn check(events: &[Event], settings: &Settings, run_error: Option<&str>) -> Vec<Violation> {
    let mut facts = Facts { events, ops: BTreeMap::new() };
    for event in events {
        if let Kind::Invoke { client, op, token, key, .. } = &event.kind {
            facts.ops.entry((*client, *op)).or_insert_with(|| (*token, key.clone()));
        }
    }
    let mut violations = Vec::new();
    let mut violate = |guarantee, subject: String, detail: String, story| {
        violations.push(Violation { guarantee, subject, detail, story });
    };

    // Store-side facts, by record id.
    let mut payments: BTreeMap<(RecordId, u32), Vec<String>> = BTreeMap::new();
    let mut recorded: BTreeMap<RecordId, (u32, StoredResponse)> = BTreeMap::new();
    let mut epochs: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let mut recorded_for: BTreeMap<Bytes, Principal> = BTreeMap::new();
    let mut issued: BTreeMap<RecordId, BTreeSet<Fence>> = BTreeMap::new();
    for event in events {
        match &event.kind {
            Kind::Payment { epoch, id, payment_id, .. } => {
                payments.entry((id.clone(), *epoch)).or_default().push(payment_id.clone());
            }
            Kind::Store(store) => {
                epochs.entry(store.id.key.as_str().to_owned()).or_default().insert(store.epoch);
                if let Some(response) = &store.recorded {
                    recorded.entry(store.id.clone()).or_insert_with(|| (store.epoch, response.clone()));
                    recorded_for.entry(response.body.clone()).or_insert_with(|| store.id.principal.clone());
                }
                // G3's premise: a fence is never issued twice for a record id, not across a
                // store that lost its state either, or a stale execution could match a new claim.
                if let Some((fence, _)) = store.issued
                    && !issued.entry(store.id.clone()).or_default().insert(fence)
                {
                    violate(
                        "G3",
                        store.id.key.as_str().to_owned(),
                        format!("fence {fence:?} was issued twice for this record (store lifetime {})", store.epoch),
                        facts.story_of_key(store.id.key.as_str()),
                    );
                }
                // G3: a fenced operation applies only with the fence of the record it changes.
                let fenced = matches!(
                    store.op,
                    StoreOp::Complete | StoreOp::CompleteInTransaction | StoreOp::Release | StoreOp::Renew
                );
                if fenced && store.applied && store.presented != store.before.fence() {
                    violate(
                        "G3",
                        store.id.key.as_str().to_owned(),
                        format!(
                            "{:?} presenting {:?} was applied to a record held under {:?}",
                            store.op, store.presented, store.before
                        ),
                        facts.story_of_key(store.id.key.as_str()),
                    );
                }
            }
            _ => {}
        }
    }
    let single_lifetime = |key: &str| settings.durable_store || epochs.get(key).is_none_or(|set| set.len() <= 1);

    // G1: at most one payment per record id (per store lifetime: a volatile store forgets).
    for ((id, _), made) in &payments {
        if made.len() > 1 {
            violate(
                "G1",
                id.key.as_str().to_owned(),
                format!("{} payments for one record id: {}", made.len(), made.join(", ")),
                facts.story_of_key(id.key.as_str()),
            );
        }
    }

    // G8 and G5: every execution runs under a claim the store wrote, for the request claimed.
    // The latest claim issued for each (record id, fence), as the history goes: a volatile
    // store that restarts issues the same fence numbers again.
    let mut claims: BTreeMap<(RecordId, u64), (Fingerprint, bool)> = BTreeMap::new();
    for event in events {
        if let Kind::Store(store) = &event.kind
            && let (Some((fence, written)), Some(fingerprint)) = (store.issued, store.fingerprint)
        {
            claims.insert((store.id.clone(), fence.get()), (fingerprint, written));
        }
        let Kind::Execute { id, fence, body, .. } = &event.kind else { continue };
        let key = id.key.as_str();
        match claims.get(&(id.clone(), fence.get())) {
            Some((fingerprint, true)) => {
                if *fingerprint != Fingerprint::of("POST", "/payments", body) {
                    violate(
                        "G5",
                        key.to_owned(),
                        format!("an execution under {fence:?} ran a request other than the one claimed"),
                        facts.story_of_key(key),
                    );
                }
            }
            Some((_, false)) | None => violate(
                "G8",
                key.to_owned(),
                format!("an execution under {fence:?} ran without a claim written by the store"),
                facts.story_of_key(key),
            ),
        }
    }

    // G2 and G4, from the clients' answers.
    let mut answers: BTreeMap<(&'static str, String), Vec<&Answer>> = BTreeMap::new();
    for event in events {
        let Kind::Answer { client, op, answer, .. } = &event.kind else { continue };
        let Some((token, key)) = facts.ops.get(&(*client, *op)) else { continue };
        if !is_final(answer) {
            continue;
        }
        // G4: a response recorded for one principal is never answered to another.
        if let Some(owner) = recorded_for.get(&answer.body)
            && *owner != principal_of_token(token)
        {
            violate(
                "G4",
                key.clone(),
                format!("{token} got a response recorded for principal {}", owner_name(owner)),
                facts.story_of_key(key),
            );
        }
        answers.entry((*token, key.clone())).or_default().push(answer);
    }
    for ((token, key), seen) in &answers {
        if !single_lifetime(key) {
            continue;
        }
        let id = idem_core::Key::try_from(key.as_str()).map(|key| RecordId::new(principal_of_token(token), key));
        let stored = id.ok().and_then(|id| recorded.get(&id).map(|(_, response)| response.clone()));
        let first = seen[0];
        for answer in seen {
            let differs_from_first = !same_answer(first, answer);
            let differs_from_stored = stored.as_ref().is_some_and(|stored| !matches_stored(answer, stored));
            if differs_from_first || differs_from_stored {
                let what = if differs_from_stored { "the recorded response" } else { "the first answer" };
                violate(
                    "G2",
                    key.clone(),
                    format!("{token} got an answer ({}) that differs from {what}", answer.status),
                    facts.story_of_key(key),
                );
                break;
            }
        }
    }

    // G6: after healing, every operation ends, with an answer, within the bound.
    let heal_ms = ms(settings.heal_at);
    let bound_ms = ms(settings.progress_bound);
    let mut started: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    let mut ended: BTreeMap<(usize, usize), (u64, Option<u16>)> = BTreeMap::new();
    for event in events {
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
        match ended.get(op) {
            None => violate("G6", subject, "never ended".to_owned(), facts.story_of_op(*op)),
            Some((_, None)) => violate("G6", subject, "gave up without an answer".to_owned(), facts.story_of_op(*op)),
            Some((at, Some(_))) if *at > deadline => violate(
                "G6",
                subject,
                format!("ended at {at} ms, after the bound ({deadline} ms)"),
                facts.story_of_op(*op),
            ),
            Some(_) => {}
        }
    }
    if let Some(error) = run_error {
        violate("G6", "the run".to_owned(), format!("the simulation did not finish: {error}"), Vec::new());
    }
    violations
}

fn owner_name(principal: &Principal) -> &str {
    if principal.is_anonymous() { "anonymous" } else { &principal.as_str()[..8] }
}

fn same_answer(a: &Answer, b: &Answer) -> bool {
    a.status == b.status && a.headers == b.headers && a.body == b.body
}

/// The answer carries the recorded status, body and every recorded header.
fn matches_stored(answer: &Answer, stored: &StoredResponse) -> bool {
    answer.status == stored.status
        && answer.body == stored.body
        && stored.headers.iter().all(|(name, value)| {
            answer.headers.iter().any(|(answer_name, answer_value)| answer_name == name && answer_value == value)
        })
}
