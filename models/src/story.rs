//! Counterexamples as numbered, readable stories instead of state dumps.

use stateright::Path;

use crate::model::{Action, IdemModel};
use crate::state::State;

/// The steps of `path`, one numbered line each ("1. client 1 (alice) sends ...").
#[must_use]
pub fn story(model: &IdemModel, path: &Path<State, Action>) -> Vec<String> {
    path.clone()
        .into_vec()
        .into_iter()
        .filter_map(|(state, action)| action.map(|action| (state, action)))
        .enumerate()
        .map(|(index, (state, action))| {
            let mut line = String::new();
            // Every action on a discovered path was enabled in its state, so it applies.
            let _applied = model.apply(&state, action, Some(&mut line));
            format!("{}. {line}", index + 1)
        })
        .collect()
}
