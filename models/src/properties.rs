//! The properties checked, in plain words, each tied to a guarantee of SPEC.md.

use stateright::{Expectation, Model, Property};

use crate::ghost::{Facts, Observed};
use crate::message::{Answer, Message};
use crate::state::{Broken, State};

/// G1: a side effect commits at most once per (principal, key).
pub const AT_MOST_ONCE: &str = "at most one execution per record id";
/// G2: every answer carrying a response carries the first recorded one: the same status,
/// stored headers and body.
pub const REPLAY_FIDELITY: &str = "replays equal the first response";
/// G3: a completion, release or renewal is applied only for the execution whose claim is current.
pub const NO_STALE_COMPLETION: &str = "no stale completion, release or renewal is applied";
/// G3: a completion, release or renewal that is refused leaves the record as it was.
pub const REFUSAL_CHANGES_NOTHING: &str = "a refused operation leaves the record unchanged";
/// G4: a response recorded for one principal never reaches another.
pub const ISOLATION: &str = "no replay crosses principals";
/// G5: a request whose payload differs from the record's never executes (nor gets that
/// record's response).
pub const MISMATCH_NEVER_EXECUTES: &str = "a mismatch never executes";
/// G8: a handler runs only under a claim the store granted.
pub const NOTHING_RUNS_WITHOUT_A_CLAIM: &str = "nothing runs without a claim";
/// Retention: once a record's time is over and the store purged, the record is gone.
pub const EXPIRED_IS_FORGOTTEN: &str = "an expired record is forgotten";
/// Retention: a purge removes a record only once its time is over (never a claim whose
/// lease is valid, nor a record whose retention is not over).
pub const PURGE_WAITS_FOR_EXPIRY: &str = "a purge removes only expired records";
/// G3 with forget (SPEC "Key lifecycle"): a forget moves the fence on, so a completion,
/// release or renewal of a claim granted before it is never applied afterwards.
pub const FORGET_IS_FENCED: &str = "nothing granted before a forget completes after it";
/// Tombstones (SPEC "Key lifecycle"): no claim is granted for a record id while its
/// tombstone lives (from the end of its retention to the end of its tombstone).
pub const TOMBSTONE_NEVER_EXECUTES: &str = "a tombstoned key never executes";
/// The execution ceiling (SPEC "Key lifecycle"): no claim's lease ends past its grant plus
/// the ceiling and one lease.
pub const CEILING_BOUNDS_CLAIMS: &str = "no claim lives past the ceiling plus one lease";
/// G6: every client's every operation ends with a final answer (every operation that met
/// no more faults than `Config::progress_faults`).
pub const PROGRESS: &str = "every client gets its final response";
/// Reachability: a retry is answered from the record.
pub const REPLAY_HAPPENS: &str = "a replay happens";
/// Reachability: a lapsed claim is taken over.
pub const TAKE_OVER_HAPPENS: &str = "a take-over happens";
/// Reachability: a request meets a valid claim and gets 409.
pub const CONFLICT_ANSWERED: &str = "a conflict is answered";
/// Reachability: a reused key with another payload gets 422.
pub const MISMATCH_ANSWERED: &str = "a mismatch is answered";
/// Reachability: a running handler extends its lease.
pub const RENEWAL_HAPPENS: &str = "a lease is renewed";
/// Reachability: a request meets a store outage and gets 503.
pub const OUTAGE_ANSWERED: &str = "a store outage is answered 503";
/// Reachability: a response is answered that the store could not record.
pub const UNRECORDED_ANSWERED: &str = "an unrecorded response is answered";
/// Reachability: a completed record is forgotten after its retention.
pub const FORGETTING_HAPPENS: &str = "a record is forgotten after its retention";

/// Reachability: a store crash loses writes that were not on disk yet.
pub const STORE_CRASH_LOSES_WRITES: &str = "a store crash loses writes not on disk";
/// Reachability: an operator forgets a record while a handler granted before still runs.
pub const FORGET_UNDER_A_HANDLER: &str = "a record is forgotten under a running handler";
/// Reachability: a completed record shrinks to its tombstone after its retention.
pub const TOMBSTONE_LEFT: &str = "a record leaves a tombstone";
/// Reachability: a handler that did not stall passes the ceiling and loses its claim.
pub const CEILING_LAPSE_HAPPENS: &str = "a claim lapses under a running handler at the ceiling";

/// Every property, with the guarantee (or reachability goal) it stands for.
pub const GUARANTEES: [(&str, &str); 25] = [
    (AT_MOST_ONCE, "G1"),
    (REPLAY_FIDELITY, "G2"),
    (NO_STALE_COMPLETION, "G3"),
    (REFUSAL_CHANGES_NOTHING, "G3"),
    (ISOLATION, "G4"),
    (MISMATCH_NEVER_EXECUTES, "G5"),
    (NOTHING_RUNS_WITHOUT_A_CLAIM, "G8"),
    (EXPIRED_IS_FORGOTTEN, "TTL"),
    (PURGE_WAITS_FOR_EXPIRY, "TTL"),
    (FORGET_IS_FENCED, "G3"),
    (TOMBSTONE_NEVER_EXECUTES, "lifecycle"),
    (CEILING_BOUNDS_CLAIMS, "lifecycle"),
    (PROGRESS, "G6"),
    (REPLAY_HAPPENS, "reachable"),
    (TAKE_OVER_HAPPENS, "reachable"),
    (CONFLICT_ANSWERED, "reachable"),
    (MISMATCH_ANSWERED, "reachable"),
    (RENEWAL_HAPPENS, "reachable"),
    (OUTAGE_ANSWERED, "reachable"),
    (UNRECORDED_ANSWERED, "reachable"),
    (FORGETTING_HAPPENS, "reachable"),
    (STORE_CRASH_LOSES_WRITES, "reachable"),
    (FORGET_UNDER_A_HANDLER, "reachable"),
    (TOMBSTONE_LEFT, "reachable"),
    (CEILING_LAPSE_HAPPENS, "reachable"),
];

/// The `always` and `eventually` properties: the guarantees proper.
pub fn guarantees() -> impl Iterator<Item = &'static str> {
    GUARANTEES.iter().filter(|(_, guarantee)| *guarantee != "reachable").map(|(name, _)| *name)
}

/// The guarantee a property checks ("G1".."G8", "TTL", "lifecycle"), or "reachable" for a
/// `sometimes`.
#[must_use]
pub fn guarantee(property: &str) -> &'static str {
    GUARANTEES.iter().find(|(name, _)| *name == property).map_or("?", |(_, guarantee)| guarantee)
}

/// Whether the property is an `always`, `eventually` or `sometimes`.
#[must_use]
pub fn expectation(property: &str) -> Expectation {
    match guarantee(property) {
        "reachable" => Expectation::Sometimes,
        _ if property == PROGRESS => Expectation::Eventually,
        _ => Expectation::Always,
    }
}

/// Whether a client received an answer of the wanted kind last, or one is on its way.
fn replied(state: &State, wanted: fn(Answer) -> bool) -> bool {
    state.ops.iter().any(|op| op.last.is_some_and(wanted))
        || state.network.iter().any(|m| matches!(m, Message::Reply { answer, .. } if wanted(*answer)))
}

/// Every property, for any model whose states are [`State`]s and whose facts the
/// properties can read.
pub(crate) fn all<M: Model<State = State> + Observed>() -> Vec<Property<M>> {
    vec![
        Property::always(AT_MOST_ONCE, |model: &M, state: &State| model.facts().at_most_once(state)),
        Property::always(REPLAY_FIDELITY, |_, state: &State| !state.broke(Broken::Replay)),
        Property::always(NO_STALE_COMPLETION, |_, state: &State| !state.broke(Broken::StaleWrite)),
        Property::always(REFUSAL_CHANGES_NOTHING, |_, state: &State| !state.broke(Broken::RefusedChanged)),
        Property::always(ISOLATION, |_, state: &State| !state.broke(Broken::CrossPrincipal)),
        Property::always(MISMATCH_NEVER_EXECUTES, |_, state: &State| !state.broke(Broken::Mismatch)),
        Property::always(NOTHING_RUNS_WITHOUT_A_CLAIM, |_, state: &State| !state.broke(Broken::NoClaim)),
        Property::always(EXPIRED_IS_FORGOTTEN, |_, state: &State| !state.broke(Broken::NotForgotten)),
        Property::always(PURGE_WAITS_FOR_EXPIRY, |_, state: &State| !state.broke(Broken::PurgedEarly)),
        Property::always(FORGET_IS_FENCED, |_, state: &State| !state.broke(Broken::Forgotten)),
        Property::always(TOMBSTONE_NEVER_EXECUTES, |_, state: &State| !state.broke(Broken::Tombstoned)),
        Property::always(CEILING_BOUNDS_CLAIMS, |model: &M, state: &State| model.facts().within_ceiling(state)),
        // Sound because the model is acyclic and the predicate never turns false again;
        // see the crate docs, "Progress". A path that broke a safety property ends there
        // (see `actions`); progress is judged on the paths that stay safe.
        Property::eventually(PROGRESS, |model: &M, state: &State| {
            let facts = model.facts();
            state.ops.iter().all(|op| op.answer().is_some() || !facts.progress_promised(op)) || facts.is_broken(state)
        }),
        Property::sometimes(REPLAY_HAPPENS, |_, state: &State| replied(state, |a| a == Answer::Replayed)),
        Property::sometimes(TAKE_OVER_HAPPENS, |_, state: &State| state.handlers().any(|(_, h)| h.took_over)),
        Property::sometimes(CONFLICT_ANSWERED, |_, state: &State| {
            replied(state, |a| matches!(a, Answer::Conflict { .. }))
        }),
        Property::sometimes(MISMATCH_ANSWERED, |_, state: &State| replied(state, |a| a == Answer::Mismatch)),
        Property::sometimes(RENEWAL_HAPPENS, |model: &M, state: &State| model.facts().renewed(state)),
        Property::sometimes(OUTAGE_ANSWERED, |_, state: &State| {
            replied(state, |a| matches!(a, Answer::Unavailable { .. }))
        }),
        Property::sometimes(UNRECORDED_ANSWERED, |_, state: &State| replied(state, |a| a == Answer::Unrecorded)),
        Property::sometimes(FORGETTING_HAPPENS, |model: &M, state: &State| model.facts().forgotten(state)),
        // A store crash is offered only when it loses something (see `actions`).
        Property::sometimes(STORE_CRASH_LOSES_WRITES, |model: &M, state: &State| model.facts().store_crashed(state)),
        Property::sometimes(FORGET_UNDER_A_HANDLER, |model: &M, state: &State| {
            model.facts().forgotten_under_a_handler(state)
        }),
        Property::sometimes(TOMBSTONE_LEFT, |_, state: &State| Facts::tombstone_left(state)),
        Property::sometimes(CEILING_LAPSE_HAPPENS, |model: &M, state: &State| {
            model.facts().lapsed_at_the_ceiling(state)
        }),
    ]
}
