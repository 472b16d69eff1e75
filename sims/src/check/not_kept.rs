//! Responses over the recording limit (SPEC "HTTP behaviour"): "a response too large to
//! record still reaches the first client whole; the operation never runs again for that
//! key, and retries get a problem saying it completed and its response was not kept".
//!
//! The checker's own reading, from the bytes the clients saw: a payment's response is its
//! 201 body (the list shows the same bytes, G7), over the limit if longer than the
//! scenario's limit. Then:
//!
//! * such a payment is answered whole at most once, and never as a replay (it was not
//!   recorded); one within the limit is never answered `response-not-kept`;
//! * a `response-not-kept` answer is a replay with the payment's own status (201) and a
//!   `Location` naming a payment that was written for this very request and is in its
//!   caller's list (G7), and every such answer for one key is the same (G2).
//!
//! "Never runs again" is G1 on the rows (`rows.rs`): one payment per (caller, key).

use std::collections::BTreeMap;

use crate::check::answers::same_answer;
use crate::check::{Facts, Violation};
use crate::history::{Answer, Kind, Row};
use crate::oracle::{Asked, caller_of, is_not_kept, payment_at, payment_of};

/// idem-http's documented default recording limit (1 MiB), for scenarios that keep it.
const LIMIT_DEFAULT: usize = 1 << 20;

/// The label of a violation of SPEC's "HTTP behaviour" rules (no G number of its own).
const HTTP: &str = "HTTP";

/// What the history shows of the payments: every row written, each payment's bytes as
/// answered whole or listed, and each caller's listed payment ids.
struct Payments<'a> {
    rows: BTreeMap<&'a str, &'a Row>,
    bytes: BTreeMap<String, usize>,
    listed: BTreeMap<String, Vec<String>>,
}

impl<'a> Payments<'a> {
    fn of(facts: &Facts<'a>) -> Payments<'a> {
        let mut payments = Payments { rows: BTreeMap::new(), bytes: BTreeMap::new(), listed: BTreeMap::new() };
        for event in facts.events {
            match &event.kind {
                Kind::Row(row) => {
                    payments.rows.insert(&row.payment_id, row);
                }
                Kind::Answer { answer, .. } if answer.status == 201 => {
                    if let Some((payment_id, _)) = payment_of(&answer.body) {
                        payments.bytes.insert(payment_id, answer.body.len());
                    }
                }
                Kind::Listed { auth, items: Some(items), .. } => {
                    let caller = caller_of(auth).unwrap_or_default();
                    for item in items {
                        if let Some((payment_id, _)) = payment_of(item) {
                            payments.bytes.insert(payment_id.clone(), item.len());
                            payments.listed.entry(caller.clone()).or_default().push(payment_id);
                        }
                    }
                }
                _ => {}
            }
        }
        payments
    }
}

/// The checks above.
pub(crate) fn check(facts: &Facts<'_>) -> Vec<Violation> {
    let limit = facts.settings.response_body_bytes_max.unwrap_or(LIMIT_DEFAULT);
    let payments = Payments::of(facts);
    let mut violations = Vec::new();
    answered_whole(facts, limit, &mut violations);
    let mut first_by_key: BTreeMap<(Option<String>, String), &Answer> = BTreeMap::new();
    for event in facts.events {
        let Kind::Answer { client, op, answer, .. } = &event.kind else { continue };
        let Some(sent) = facts.ops.get(&(*client, *op)).filter(|_| is_not_kept(&answer.body)) else { continue };
        if let Some(detail) =
            not_kept_answer(facts, sent.asked.as_ref(), sent.caller.as_deref(), answer, limit, &payments)
        {
            violations.push(facts.about_key(detail.0, &sent.key, format!("c{client}.{op}: {}", detail.1)));
        }
        let first = first_by_key.entry((sent.caller.clone(), sent.key.clone())).or_insert(answer);
        if !same_answer(first, answer) {
            let detail = format!("c{client}.{op}: two response-not-kept answers for one key differ");
            violations.push(facts.about_key("G2", &sent.key, detail));
        }
    }
    violations
}

/// A payment over the limit is answered whole at most once, never as a replay.
fn answered_whole(facts: &Facts<'_>, limit: usize, violations: &mut Vec<Violation>) {
    let mut whole: BTreeMap<String, u32> = BTreeMap::new();
    for event in facts.events {
        let Kind::Answer { client, op, answer, .. } = &event.kind else { continue };
        let Some(sent) = facts.ops.get(&(*client, *op)) else { continue };
        let Some((payment_id, _)) = payment_of(&answer.body).filter(|_| answer.body.len() > limit) else { continue };
        let count = whole.entry(payment_id.clone()).or_default();
        *count += 1;
        let bytes = answer.body.len();
        let detail = if answer.replayed {
            format!(
                "c{client}.{op} got payment {payment_id} replayed whole ({bytes} bytes, over the {limit}-byte limit: it was recorded)"
            )
        } else if *count > 1 {
            format!("c{client}.{op} got payment {payment_id} ({bytes} bytes, over the limit) whole a second time")
        } else {
            continue;
        };
        violations.push(facts.about_key(HTTP, &sent.key, detail));
    }
}

/// What is wrong with a `response-not-kept` answer to a request asking for `asked`, if
/// anything: the guarantee and the detail.
fn not_kept_answer(
    facts: &Facts<'_>,
    asked: Option<&Asked>,
    caller: Option<&str>,
    answer: &Answer,
    limit: usize,
    payments: &Payments<'_>,
) -> Option<(&'static str, String)> {
    if !answer.replayed || answer.status != 201 {
        let (status, replayed) = (answer.status, answer.replayed);
        return Some((
            HTTP,
            format!("a response-not-kept answer must replay the payment's 201: {status}, replayed {replayed}"),
        ));
    }
    let Some(payment_id) = answer.header("location").and_then(|location| payment_at(location)) else {
        return Some(("G2", "a response-not-kept answer names no payment in its Location".to_owned()));
    };
    let Some(row) = payments.rows.get(payment_id.as_str()) else {
        return Some(("G2", format!("a response-not-kept answer names payment {payment_id}, never written")));
    };
    let wrote =
        Asked { amount_minor: row.amount_minor, currency: row.currency.clone(), destination: row.destination.clone() };
    if asked != Some(&wrote) {
        return Some((
            "G5",
            format!("a response-not-kept answer names payment {payment_id}, made for another request"),
        ));
    }
    if let Some(bytes) = payments.bytes.get(&payment_id).filter(|bytes| **bytes <= limit) {
        return Some((
            HTTP,
            format!("payment {payment_id} ({bytes} bytes) fits the {limit}-byte limit, yet was not kept"),
        ));
    }
    let listed = caller.and_then(|caller| payments.listed.get(caller)).is_some_and(|ids| ids.contains(&payment_id));
    if row.epoch == facts.final_epoch && !listed {
        return Some(("G7", format!("payment {payment_id}, acknowledged as not kept, is not in {caller:?}'s list")));
    }
    None
}
