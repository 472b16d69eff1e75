//! Running the checker on the consumer model and reading its verdicts, as
//! [`crate::spawn`] and [`crate::verdicts`] do for the HTTP model.

use std::collections::BTreeSet;

use stateright::{Checker, Expectation, HasDiscoveries, Model, Path};

use super::state::ConsumerState;
use super::story::consumer_story;
use super::{ConsumerAction, ConsumerModel, properties};
use crate::checking::{Outcome, Search, SearchError, Strategy, Verdict};

/// A running checker of the consumer model, whatever its strategy.
pub type ConsumerChecker = Box<dyn Checker<ConsumerModel> + Send + Sync>;

/// Starts checking `model` on background threads (join its [`Checker::handles`], or wait
/// for [`Checker::is_done`]).
///
/// # Errors
/// [`SearchError`] for options stateright cannot honour.
pub fn spawn_consumer(model: ConsumerModel, search: Search) -> Result<ConsumerChecker, SearchError> {
    if search.symmetry && search.strategy != Strategy::Dfs {
        return Err(SearchError::SymmetryNeedsDfs);
    }
    if search.threads == 0 {
        return Err(SearchError::NoThreads);
    }
    let mut builder = model.checker().threads(search.threads);
    if let Some(depth_max) = search.depth_max {
        builder = builder.target_max_depth(depth_max);
    }
    if search.symmetry {
        builder = builder.symmetry();
    }
    Ok(match search.strategy {
        Strategy::Bfs => Box::new(builder.spawn_bfs()),
        Strategy::Dfs => Box::new(builder.spawn_dfs()),
    })
}

/// The verdict for every property, in the model's order, once the checker is done. Each
/// counterexample is a shortest one; so is each example when `examples` is set.
#[must_use]
pub fn consumer_verdicts(checker: &ConsumerChecker, examples: bool) -> Vec<Verdict> {
    let model = checker.model();
    let discoveries = checker.discoveries();
    model
        .properties()
        .into_iter()
        .map(|property| {
            let shortest = examples || property.expectation != Expectation::Sometimes;
            let found = discoveries.get(property.name).map(|path| {
                let steps = path.clone().into_actions().len();
                let shortest = if shortest { shortest_consumer_discovery(model, property.name, steps) } else { None };
                consumer_story(model, shortest.as_ref().unwrap_or(path))
            });
            let outcome = match (property.expectation, found) {
                (Expectation::Sometimes, Some(story)) => Outcome::Reached(story),
                (Expectation::Sometimes, None) => Outcome::NotReached,
                (_, Some(story)) => Outcome::Violated(story),
                (_, None) => Outcome::Holds,
            };
            Verdict { property: property.name, guarantee: properties::guarantee(property.name), outcome }
        })
        .collect()
}

/// The shortest path to a discovery of `property`, given that one of `steps` steps exists:
/// a binary search over the depth bound of a bounded BFS (see [`crate::shortest_discovery`]).
#[must_use]
pub fn shortest_consumer_discovery(
    model: &ConsumerModel,
    property: &'static str,
    steps: usize,
) -> Option<Path<ConsumerState, ConsumerAction>> {
    let probe = |bound: usize| {
        // A path of n steps holds n + 1 states, the last at depth n + 1; a bound of n + 2 admits it.
        let checker = model
            .clone()
            .checker()
            .target_max_depth(bound + 2)
            .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property])))
            .spawn_bfs()
            .join();
        checker.discovery(property)
    };
    let (mut low, mut high) = (0, steps);
    let mut shortest = None;
    while low < high {
        let middle = low + (high - low) / 2;
        match probe(middle) {
            Some(path) => {
                high = path.clone().into_actions().len().min(middle);
                shortest = Some(path);
            }
            None => low = middle + 1,
        }
    }
    match shortest {
        Some(path) if path.clone().into_actions().len() == low => Some(path),
        _ => probe(low),
    }
}
