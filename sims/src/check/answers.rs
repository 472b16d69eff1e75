//! What the clients were answered: every 201 names a payment, and every answer naming one
//! payment is the same answer (G2), to one caller (G4), for one request (G5).

use std::collections::BTreeMap;

use crate::check::{Facts, Violation};
use crate::history::{Answer, Kind};
use crate::oracle::{is_not_kept, payment_of};

/// A 201 as a client saw it, with the operation it answered.
pub(crate) struct Created<'a> {
    pub(crate) op: (usize, usize),
    pub(crate) answer: &'a Answer,
    pub(crate) payment_id: String,
}

/// Every 201 answer, in history order, by the payment it names; 201s that name no payment
/// are violations.
pub(crate) fn created<'a>(facts: &Facts<'a>, violations: &mut Vec<Violation>) -> Vec<Created<'a>> {
    let mut created = Vec::new();
    for event in facts.events {
        let Kind::Answer { client, op, answer, .. } = &event.kind else { continue };
        // A response-not-kept problem names its payment by `Location` only (`not_kept.rs`).
        if answer.status != 201 || is_not_kept(&answer.body) {
            continue;
        }
        let Some(sent) = facts.ops.get(&(*client, *op)) else { continue };
        let Some((payment_id, asked)) = payment_of(&answer.body) else {
            violations.push(facts.about_key("G2", &sent.key, "a 201 answer names no payment".to_owned()));
            continue;
        };
        // G5: the payment answered is the one this request asked for.
        if sent.asked.as_ref() != Some(&asked) {
            let detail = format!("c{client}.{op} was answered with payment {payment_id}, made for another request");
            violations.push(facts.about_key("G5", &sent.key, detail));
        }
        created.push(Created { op: (*client, *op), answer, payment_id });
    }
    created
}

/// G2, G4, G5 over the 201 answers.
pub(crate) fn check(facts: &Facts<'_>) -> Vec<Violation> {
    let mut violations = Vec::new();
    let created = created(facts, &mut violations);
    let mut by_payment: BTreeMap<&str, Vec<&Created<'_>>> = BTreeMap::new();
    for one in &created {
        by_payment.entry(&one.payment_id).or_default().push(one);
    }
    for (payment_id, answers) in by_payment {
        let first = answers[0];
        let Some(first_op) = facts.ops.get(&first.op) else { continue };
        for other in &answers[1..] {
            let Some(other_op) = facts.ops.get(&other.op) else { continue };
            let (guarantee, detail) = if other_op.caller != first_op.caller {
                ("G4", format!("payment {payment_id} of {:?} was answered to {:?}", first_op.caller, other_op.caller))
            } else if other_op.key != first_op.key {
                ("G2", format!("payment {payment_id} was answered for keys {} and {}", first_op.key, other_op.key))
            } else if other_op.differs_from(first_op) {
                ("G5", format!("payment {payment_id} was answered to two different requests with one key"))
            } else if !same_answer(first.answer, other.answer) {
                ("G2", format!("two answers naming payment {payment_id} differ (status, headers in order, or body)"))
            } else {
                continue;
            };
            violations.push(facts.about_key(guarantee, &other_op.key, detail));
            break;
        }
    }
    violations
}

/// Same status, same headers (repeated ones in order), same body bytes.
pub(crate) fn same_answer(a: &Answer, b: &Answer) -> bool {
    a.status == b.status && a.headers == b.headers && a.body == b.body
}
