//! The mutation itself (issue 19, item 3): the payment rows the ledger host wrote, by any
//! path, and each caller's payments as a user lists them over HTTP after healing.
//!
//! * G1: one payment per (caller, key) per record lifetime (a store lifetime, and the
//!   retention, plus the tombstone period when the scenario leaves tombstones: a key
//!   forgotten may run again, a tombstoned one never); nothing stored that no request
//!   asked for.
//! * G7: every payment acknowledged with a 201 is still stored, and its caller's list
//!   shows it with the bytes answered (G2 if the bytes differ).
//! * G4: every stored payment is in exactly one caller's list, the one that asked for it;
//!   one caller's lists agree however its scheme is spelled.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::check::answers::{Created, created};
use crate::check::{Facts, Violation};
use crate::faults::ms;
use crate::history::{Kind, Row};
use crate::oracle::{Asked, caller_of, payment_of};

/// Each caller's list: payment id → the item as listed.
type Lists = BTreeMap<String, BTreeMap<String, Bytes>>;

/// The rows of each (caller, key), in the order written, with the time each was written.
pub(crate) type Keyed<'a> = BTreeMap<(String, String), Vec<(u64, &'a Row)>>;

/// What the rows showed: violations, separate mode's expected G1 counterexamples, and
/// each key's rows (for G6's deserved answers).
pub(crate) struct Checked<'a> {
    pub(crate) violations: Vec<Violation>,
    pub(crate) expected: Vec<Violation>,
    pub(crate) keyed: Keyed<'a>,
}

/// The checks above.
pub(crate) fn check<'a>(facts: &Facts<'a>) -> Checked<'a> {
    let mut violations = Vec::new();
    let mut expected = Vec::new();
    let created = created(facts, &mut Vec::new());
    let rows: Vec<(u64, &Row)> = facts
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            Kind::Row(row) => Some((event.at_ms, &**row)),
            _ => None,
        })
        .collect();
    let lists = lists(facts, &mut violations);
    visible(facts, &rows, &lists, &mut violations);
    acknowledged(facts, &rows, &lists, &created, &mut violations);
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    for (caller, items) in &lists {
        for payment_id in items.keys() {
            owners.insert(payment_id, caller);
        }
    }
    for one in &created {
        if let Some(caller) = facts.ops.get(&one.op).and_then(|op| op.caller.as_deref()) {
            owners.entry(&one.payment_id).or_insert(caller);
        }
    }
    let keyed = by_key(facts, &rows, &owners, &mut violations);
    at_most_once(facts, &keyed, &mut violations, &mut expected);
    Checked { violations, expected, keyed }
}

fn audit_violation(guarantee: &'static str, detail: String) -> Violation {
    Violation { guarantee, subject: "the audit after healing".to_owned(), detail, story: Vec::new() }
}

/// Each caller's list; a list that could not be read, or two lists of one caller that
/// differ, are violations.
fn lists(facts: &Facts<'_>, violations: &mut Vec<Violation>) -> Lists {
    let mut lists: Lists = BTreeMap::new();
    let mut read_by: BTreeMap<String, String> = BTreeMap::new();
    for event in facts.events {
        let Kind::Listed { auth, items, .. } = &event.kind else { continue };
        let Some(caller) = caller_of(auth) else { continue };
        let Some(items) = items else {
            violations.push(audit_violation("G6", format!("[{auth}] could not list its payments after healing")));
            continue;
        };
        let mut list = BTreeMap::new();
        for item in items {
            match payment_of(item) {
                Some((payment_id, _)) => {
                    list.insert(payment_id, item.clone());
                }
                None => violations.push(audit_violation("G7", format!("[{auth}] listed an unreadable payment"))),
            }
        }
        match lists.get(&caller) {
            Some(earlier) if *earlier != list => violations.push(audit_violation(
                "G4",
                format!("one caller, two lists: [{}] and [{auth}] list different payments", read_by[&caller]),
            )),
            Some(_) => {}
            None => {
                read_by.insert(caller.clone(), auth.clone());
                lists.insert(caller, list);
            }
        }
    }
    lists
}

pub(crate) fn asked_of(row: &Row) -> Asked {
    Asked { amount_minor: row.amount_minor, currency: row.currency.clone(), destination: row.destination.clone() }
}

/// Every row still stored is in exactly one caller's list, as written.
fn visible(facts: &Facts<'_>, rows: &[(u64, &Row)], lists: &Lists, violations: &mut Vec<Violation>) {
    let mut stored: BTreeMap<&str, &Row> = BTreeMap::new();
    for (_, row) in rows.iter().filter(|(_, row)| row.epoch == facts.final_epoch) {
        stored.insert(&row.payment_id, row);
        let shown: Vec<&String> =
            lists.iter().filter(|(_, list)| list.contains_key(&row.payment_id)).map(|(c, _)| c).collect();
        if shown.len() != 1 {
            let detail =
                format!("payment {} is stored, and {} callers' lists show it: {shown:?}", row.payment_id, shown.len());
            violations.push(audit_violation(if shown.is_empty() { "G1" } else { "G4" }, detail));
        }
    }
    for (caller, list) in lists {
        for (payment_id, item) in list {
            let matches = stored
                .get(payment_id.as_str())
                .is_some_and(|row| payment_of(item).is_some_and(|(_, asked)| asked == asked_of(row)));
            if !matches {
                violations.push(audit_violation(
                    "G7",
                    format!("{caller:?} lists payment {payment_id}, which is not stored as listed"),
                ));
            }
        }
    }
}

/// Every 201 names a payment that was written; if it is still stored, its caller's list
/// shows it with the bytes answered.
fn acknowledged(
    facts: &Facts<'_>,
    rows: &[(u64, &Row)],
    lists: &Lists,
    created: &[Created<'_>],
    violations: &mut Vec<Violation>,
) {
    let written: BTreeMap<&str, u32> = rows.iter().map(|(_, row)| (row.payment_id.as_str(), row.epoch)).collect();
    for one in created {
        let Some(op) = facts.ops.get(&one.op) else { continue };
        let payment_id = one.payment_id.as_str();
        let Some(epoch) = written.get(payment_id) else {
            let detail =
                format!("c{}.{} was answered payment {payment_id}, which was never written", one.op.0, one.op.1);
            violations.push(facts.about_key("G2", &op.key, detail));
            continue;
        };
        if *epoch != facts.final_epoch {
            continue; // written in a store lifetime that ended: a volatile store lost it
        }
        let listed = op.caller.as_ref().and_then(|caller| lists.get(caller)).and_then(|list| list.get(payment_id));
        let (guarantee, detail) = match listed {
            Some(item) if *item == one.answer.body => continue,
            Some(_) => ("G2", format!("the list shows payment {payment_id} otherwise than it was answered")),
            None if lists.values().any(|list| list.contains_key(payment_id)) => {
                ("G4", format!("payment {payment_id}, answered to {:?}, is in another caller's list", op.caller))
            }
            None => ("G7", format!("payment {payment_id}, answered with 201, is not in {:?}'s list", op.caller)),
        };
        violations.push(facts.about_key(guarantee, &op.key, detail));
    }
}

/// Each row under the (caller, key) of the request that asked for it; a row no request of
/// its caller asked for is a violation.
fn by_key<'a>(
    facts: &Facts<'_>,
    rows: &[(u64, &'a Row)],
    owners: &BTreeMap<&str, &str>,
    violations: &mut Vec<Violation>,
) -> Keyed<'a> {
    let mut groups: Keyed<'a> = BTreeMap::new();
    for (at, row) in rows {
        let asked = asked_of(row);
        let asking: Vec<_> = facts.ops.values().filter(|op| op.valid && op.asked.as_ref() == Some(&asked)).collect();
        let callers: BTreeSet<&str> = asking.iter().filter_map(|op| op.caller.as_deref()).collect();
        let owner = owners.get(row.payment_id.as_str()).copied();
        let caller = match owner {
            Some(owner) => owner.to_owned(),
            None if callers.len() == 1 => callers.iter().next().map(|caller| (*caller).to_owned()).unwrap_or_default(),
            // Asked for by several callers and shown to none: grouped by the owner it was stored for.
            None => format!("owner {}", row.owner),
        };
        let Some(op) = asking.iter().find(|op| owner.is_none_or(|owner| op.caller.as_deref() == Some(owner))) else {
            let detail = format!(
                "payment {} ({:?}) was stored, but no request of its caller asked for it",
                row.payment_id, owner
            );
            violations.push(audit_violation(if asking.is_empty() { "G1" } else { "G4" }, detail));
            continue;
        };
        groups.entry((caller, op.key.clone())).or_default().push((*at, row));
    }
    groups
}

/// One row per (caller, key) per record lifetime.
fn at_most_once(facts: &Facts<'_>, groups: &Keyed<'_>, violations: &mut Vec<Violation>, expected: &mut Vec<Violation>) {
    // A key is forgotten once its retention ends, or with tombstones once its tombstone
    // ends too (SPEC "Key lifecycle": a tombstoned key never runs again), as two skewed
    // clocks see it. The plan's tombstone outlives the run, so there a key runs once.
    let skew = ms(facts.settings.skew_max);
    let tombstone = facts.settings.tombstone.map_or(0, ms);
    let lifetime = (ms(facts.settings.retention) + tombstone).saturating_sub(2 * skew);
    for ((caller, key), rows) in groups {
        for pair in rows.windows(2) {
            let ((first_at, first), (then_at, then)) = (pair[0], pair[1]);
            if first.epoch == then.epoch && then_at - first_at < lifetime {
                let guarantee = if asked_of(first) == asked_of(then) { "G1" } else { "G5" };
                let tombstoned = if tombstone > 0 { ", the second while the key was tombstoned" } else { "" };
                let detail = format!(
                    "two payments for {caller:?} with one key in one record lifetime: {} ({}) and {} ({}){}",
                    first.payment_id,
                    first.via,
                    then.payment_id,
                    then.via,
                    if then_at - first_at >= ms(facts.settings.retention) { tombstoned } else { "" }
                );
                // Separate mode: a write that committed alone before a lapsed lease or a
                // crash can run again (SPEC "Modes"); a second payment is expected.
                // A write that committed alone while its claim was released (its call timed
                // out, then arrived) lets another request of the key run too: the same window.
                let window = facts.settings.separate;
                let found = facts.about_key(guarantee, key, detail);
                if window {
                    expected.push(found)
                } else {
                    violations.push(found)
                }
                break;
            }
        }
    }
}
