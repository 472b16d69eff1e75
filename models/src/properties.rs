//! The properties checked, in plain words, each tied to a guarantee of SPEC.md.

use stateright::{Expectation, Property};

use crate::model::IdemModel;
use crate::state::{Answer, Broken, Message, State};

/// G1: a side effect commits at most once per (principal, key).
pub const AT_MOST_ONCE: &str = "at most one execution per record id";
/// G2: every answer carrying a response carries the first recorded one.
pub const REPLAY_FIDELITY: &str = "replays equal the first response";
/// G3: a completion is accepted only from the execution whose claim is current.
pub const NO_STALE_COMPLETION: &str = "no stale completion is accepted";
/// G4: a response recorded for one principal never reaches another.
pub const ISOLATION: &str = "no replay crosses principals";
/// G5: a request whose payload differs from the record's never executes (nor gets that
/// record's response).
pub const MISMATCH_NEVER_EXECUTES: &str = "a mismatch never executes";
/// G6: every client's every operation ends with a final answer.
pub const PROGRESS: &str = "every client gets its final response";
/// Reachability: a retry is answered from the record.
pub const REPLAY_HAPPENS: &str = "a replay happens";
/// Reachability: a lapsed claim is taken over.
pub const TAKE_OVER_HAPPENS: &str = "a take-over happens";
/// Reachability: a request meets a valid claim and gets 409.
pub const CONFLICT_ANSWERED: &str = "a conflict is answered";
/// Reachability: a reused key with another payload gets 422.
pub const MISMATCH_ANSWERED: &str = "a mismatch is answered";

/// Every property, with the guarantee (or reachability goal) it stands for.
pub const GUARANTEES: [(&str, &str); 10] = [
    (AT_MOST_ONCE, "G1"),
    (REPLAY_FIDELITY, "G2"),
    (NO_STALE_COMPLETION, "G3"),
    (ISOLATION, "G4"),
    (MISMATCH_NEVER_EXECUTES, "G5"),
    (PROGRESS, "G6"),
    (REPLAY_HAPPENS, "reachable"),
    (TAKE_OVER_HAPPENS, "reachable"),
    (CONFLICT_ANSWERED, "reachable"),
    (MISMATCH_ANSWERED, "reachable"),
];

/// The guarantee a property checks ("G1".."G6"), or "reachable" for a `sometimes`.
#[must_use]
pub fn guarantee(property: &str) -> &'static str {
    GUARANTEES.iter().find(|(name, _)| *name == property).map_or("?", |(_, guarantee)| guarantee)
}

/// Whether the property is an `always`, `eventually` or `sometimes`.
#[must_use]
pub fn expectation(property: &str) -> Expectation {
    all().into_iter().find(|p| p.name == property).map_or(Expectation::Always, |p| p.expectation)
}

fn replied(state: &State, answer: Answer) -> bool {
    state.network.iter().any(|m| matches!(m, Message::Reply { answer: a, .. } if *a == answer))
        || state.ops.iter().any(|op| op.answer == Some(answer))
}

pub(crate) fn all() -> Vec<Property<IdemModel>> {
    vec![
        Property::always(AT_MOST_ONCE, |model: &IdemModel, state: &State| model.at_most_once(state)),
        Property::always(REPLAY_FIDELITY, |_, state: &State| !state.broke(Broken::Replay)),
        Property::always(NO_STALE_COMPLETION, |_, state: &State| !state.broke(Broken::StaleCompletion)),
        Property::always(ISOLATION, |_, state: &State| !state.broke(Broken::CrossPrincipal)),
        Property::always(MISMATCH_NEVER_EXECUTES, |_, state: &State| !state.broke(Broken::Mismatch)),
        // Sound because the model is acyclic and the predicate never turns false again;
        // see the crate docs, "Progress". A path that broke a safety property ends there
        // (see `actions`); progress is judged on the paths that stay safe.
        Property::eventually(PROGRESS, |model: &IdemModel, state: &State| {
            state.ops.iter().all(|op| op.answer.is_some()) || model.is_broken(state)
        }),
        Property::sometimes(REPLAY_HAPPENS, |_, state: &State| replied(state, Answer::Replayed)),
        Property::sometimes(TAKE_OVER_HAPPENS, |_, state: &State| {
            state.servers.iter().any(|server| server.handlers.iter().any(|h| h.took_over))
        }),
        Property::sometimes(CONFLICT_ANSWERED, |_, state: &State| replied(state, Answer::Conflict)),
        Property::sometimes(MISMATCH_ANSWERED, |_, state: &State| replied(state, Answer::Mismatch)),
    ]
}
