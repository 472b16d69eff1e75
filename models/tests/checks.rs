//! Small configurations checked completely: every guarantee holds, the interesting paths
//! are reachable, and the state counts are pinned so that a change to the model's
//! semantics cannot slip by unnoticed.

use std::collections::HashMap;

use idem_model::properties::{CONFLICT_ANSWERED, MISMATCH_ANSWERED, PROGRESS, REPLAY_HAPPENS, TAKE_OVER_HAPPENS};
use idem_model::{Config, IdemModel, Mode, NetworkKind, Outcome, Search, State, Strategy, Variant};
use stateright::{Checker, Model};

fn config(clients: u8, servers: u8) -> Config {
    Config {
        clients,
        servers,
        ops_per_client: 1,
        key_reuse: false,
        crashes: 0,
        lapses: 0,
        failures: 0,
        resends: 1,
        network: NetworkKind::Ordered,
        network_faults: 0,
        mode: Mode::Atomic,
        variant: Variant::Correct,
    }
}

fn model(config: Config) -> IdemModel {
    config.into_model().expect("the test configurations are within bounds")
}

#[test]
fn one_client_one_server_holds_every_guarantee() {
    // Goal: the smallest system with a resend replays instead of executing twice.
    let checker = model(config(1, 1)).checker().spawn_bfs().join();
    checker.assert_no_discovery(PROGRESS);
    for property in idem_model::properties::GUARANTEES.iter().map(|(name, _)| *name).take(6) {
        checker.assert_no_discovery(property);
    }
    checker.assert_any_discovery(REPLAY_HAPPENS);
    checker.assert_any_discovery(CONFLICT_ANSWERED);
    assert_eq!(checker.unique_state_count(), 17);
}

#[test]
fn faults_and_misuse_hold_every_guarantee_and_reach_every_path() {
    // Goal: with a resend, a crash, a lapse, a handler failure and a reused key, all
    // guarantees hold and replays, take-overs, conflicts and mismatches all happen.
    let faulty = Config { key_reuse: true, crashes: 1, lapses: 1, failures: 1, ..config(1, 1) };
    let checker = model(faulty).checker().spawn_bfs().join();
    checker.assert_properties();
    assert_eq!(checker.unique_state_count(), 33_717);
}

#[test]
fn two_principals_sharing_a_key_string_stay_apart() {
    // Goal: alice and bob both send key k1 through a lossy network; neither sees the other's response.
    let lossy = Config { lapses: 1, network: NetworkKind::Lossy, network_faults: 1, ..config(2, 1) };
    let checker = model(lossy).checker().spawn_bfs().join();
    for property in idem_model::properties::GUARANTEES.iter().map(|(name, _)| *name).take(6) {
        checker.assert_no_discovery(property);
    }
    checker.assert_any_discovery(TAKE_OVER_HAPPENS);
    assert_eq!(checker.discovery(MISMATCH_ANSWERED), None, "nobody reuses a key here");
    assert_eq!(checker.unique_state_count(), 26_075);
}

#[test]
fn symmetry_reduction_explores_fewer_states_with_the_same_verdicts() {
    // Goal: treating server replicas as interchangeable shrinks the search, not its findings.
    let faulty = Config { crashes: 1, lapses: 1, network: NetworkKind::Duplicating, network_faults: 1, ..config(1, 2) };
    let plain = Search { strategy: Strategy::Dfs, symmetry: false, threads: 1, depth_max: None };
    let reduced = Search { symmetry: true, ..plain };
    let mut full = idem_model::spawn(model(faulty.clone()), plain).expect("DFS takes these options");
    let mut symmetric = idem_model::spawn(model(faulty), reduced).expect("DFS allows symmetry");
    idem_model::join(&mut full);
    idem_model::join(&mut symmetric);
    let kinds = |checker: &idem_model::RunningChecker| {
        idem_model::verdicts(checker)
            .into_iter()
            .map(|v| (v.property, matches!(v.outcome, Outcome::Holds | Outcome::Reached(_))))
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&full), kinds(&symmetric));
    let unreachable = |property: &str| property == MISMATCH_ANSWERED; // nobody reuses a key here
    assert!(kinds(&full).iter().all(|(property, fine)| *fine || unreachable(property)), "{:?}", kinds(&full));
    assert!(symmetric.unique_state_count() < full.unique_state_count());
    assert_eq!((full.unique_state_count(), symmetric.unique_state_count()), (1_854, 978));
}

#[test]
fn state_graph_has_no_cycles_so_eventually_is_sound() {
    // Goal: every path ends in a state without successors, which is what makes
    // stateright's `eventually` (checked at terminal states only) a sound check of G6.
    let faulty = Config { key_reuse: true, crashes: 1, lapses: 1, failures: 1, ..config(1, 1) };
    let model = model(faulty);
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    let mut marks: HashMap<State, Mark> = HashMap::new();
    let init = model.init_states().remove(0);
    // Iterative DFS: (state, successors left to visit).
    let mut stack: Vec<(State, Vec<State>)> = vec![(init.clone(), model.next_states(&init))];
    marks.insert(init, Mark::OnPath);
    while let Some((state, successors)) = stack.last_mut() {
        match successors.pop() {
            Some(next) => match marks.get(&next) {
                Some(Mark::OnPath) => panic!("a cycle through {next:#?}"),
                Some(Mark::Done) => {}
                None => {
                    marks.insert(next.clone(), Mark::OnPath);
                    let after = model.next_states(&next);
                    stack.push((next, after));
                }
            },
            None => {
                marks.insert(state.clone(), Mark::Done);
                stack.pop();
            }
        }
    }
    assert!(marks.values().all(|mark| *mark == Mark::Done));
    assert!(marks.len() > 1000, "the search covered the configuration ({} states)", marks.len());
}
