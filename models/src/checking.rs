//! Running the checker and reading its verdicts, shared by the CLI and the tests.

use std::collections::BTreeSet;

use stateright::{Checker, Expectation, HasDiscoveries, Model, Path};

use crate::model::{Action, IdemModel};
use crate::properties;
use crate::state::State;

/// How to search the state space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Breadth first: shortest counterexamples, more memory.
    Bfs,
    /// Depth first: less memory; allows symmetry reduction.
    Dfs,
}

/// Search options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Search {
    /// BFS or DFS.
    pub strategy: Strategy,
    /// Explore states that differ only by which server replica is which once (DFS only).
    pub symmetry: bool,
    /// Checker threads.
    pub threads: usize,
    /// Stop exploring paths longer than this many steps (incomplete search).
    pub depth_max: Option<usize>,
}

impl Default for Search {
    fn default() -> Search {
        Search { strategy: Strategy::Bfs, symmetry: false, threads: 1, depth_max: None }
    }
}

/// Why search options are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// stateright applies symmetry reduction under DFS and simulation only.
    #[error("symmetry reduction needs the DFS strategy (stateright does not apply it under BFS)")]
    SymmetryNeedsDfs,
    /// At least one thread is needed.
    #[error("threads must be at least 1")]
    NoThreads,
}

/// A running checker, whatever its strategy.
pub type RunningChecker = Box<dyn Checker<IdemModel> + Send + Sync>;

/// Starts checking `model` on background threads.
///
/// # Errors
/// [`SearchError`] for options stateright cannot honour.
pub fn spawn(model: IdemModel, search: Search) -> Result<RunningChecker, SearchError> {
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

/// Blocks until the checker has finished.
pub fn join(checker: &mut RunningChecker) {
    for handle in checker.handles() {
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// What the search found for one property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `always`/`eventually`: no counterexample in the states explored.
    Holds,
    /// `always`/`eventually`: a counterexample, as a numbered story.
    Violated(Vec<String>),
    /// `sometimes`: an example, as a numbered story.
    Reached(Vec<String>),
    /// `sometimes`: no example in the states explored.
    NotReached,
}

/// One property's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The property, in plain words.
    pub property: &'static str,
    /// The guarantee it checks, e.g. "G1", or "reachable".
    pub guarantee: &'static str,
    /// What was found.
    pub outcome: Outcome,
}

impl Verdict {
    /// Whether this verdict means a guarantee is broken.
    #[must_use]
    pub fn is_violation(&self) -> bool {
        matches!(self.outcome, Outcome::Violated(_))
    }
}

/// The verdict for every property, in the model's order, after [`join`]. Each
/// counterexample is the shortest one there is (see [`shortest_discovery`]); so is each
/// example of a reachability property when `examples` is set, otherwise an example is the
/// path the search happened to find (finding the shortest costs a bounded search each).
#[must_use]
pub fn verdicts(checker: &RunningChecker, examples: bool) -> Vec<Verdict> {
    let model = checker.model();
    let discoveries = checker.discoveries();
    model
        .properties()
        .into_iter()
        .map(|property| {
            let shortest = examples || property.expectation != Expectation::Sometimes;
            let found = discoveries.get(property.name).map(|path| {
                let steps = path.clone().into_actions().len();
                let shortest = if shortest { shortest_discovery(model, property.name, steps) } else { None };
                story(model, shortest.as_ref().unwrap_or(path))
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

/// The shortest path to a discovery of `property`, given that one of `steps` steps exists.
///
/// stateright 0.31 keeps the *last* discovery it meets for a property, not the first, so
/// even a single-threaded BFS may report a long path. A BFS bounded at depth `d` reports
/// only paths shorter than `d`, and whether it finds one at all only grows with `d`; so a
/// binary search over the bound finds the smallest bound that admits a discovery, and the
/// path found there is a shortest one. Each probe is a bounded BFS; long paths (a client
/// using up a dozen attempts) need only a handful of probes.
#[must_use]
pub fn shortest_discovery(model: &IdemModel, property: &'static str, steps: usize) -> Option<Path<State, Action>> {
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
    // Invariant: no path of fewer than `low` steps; a path of at most `high` steps exists.
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

/// The steps of `path`, one numbered line each ("1. client 1 (alice) sends ...").
#[must_use]
pub fn story(model: &IdemModel, path: &Path<State, Action>) -> Vec<String> {
    crate::story::numbered(path, |state, action| {
        // Every action on a discovered path was enabled in its state, so it applies.
        let events = model.events(state, action).unwrap_or_default();
        crate::story::line(&model.cast(), &events)
    })
}
