//! Configurations checked completely: every guarantee holds, the interesting paths are
//! reachable, and the state counts are pinned so that a change to the model's semantics,
//! to idem-core's store step or to idem-client's retry defaults cannot slip by unnoticed.

use std::collections::HashMap;
use std::time::Duration;

use idem_model::properties::{
    AT_MOST_ONCE, CEILING_LAPSE_HAPPENS, CONFLICT_ANSWERED, EXPIRED_IS_FORGOTTEN, FORGET_UNDER_A_HANDLER,
    FORGETTING_HAPPENS, MISMATCH_ANSWERED, OUTAGE_ANSWERED, PROGRESS, RENEWAL_HAPPENS, REPLAY_HAPPENS,
    STORE_CRASH_LOSES_WRITES, TAKE_OVER_HAPPENS, TOMBSTONE_LEFT, UNRECORDED_ANSWERED,
};
use idem_model::{
    Action, ClientPolicy, Config, IdemModel, Message, Mode, NetworkKind, Outcome, Search, State, Strategy, Variant,
};
use stateright::{Checker, Model};

/// `clients` clients and `servers` servers on a reliable FIFO network, nothing failing.
fn config(clients: u8, servers: u8) -> Config {
    Config {
        clients,
        servers,
        ops_per_client: 1,
        key_reuse: false,
        crashes: 0,
        lapses: 0,
        slow: 0,
        failures: 0,
        network: NetworkKind::Ordered,
        network_faults: 0,
        delays: 0,
        outages: 0,
        client: ClientPolicy::default(),
        mode: Mode::Atomic,
        variant: Variant::Correct,
        ..Config::default()
    }
}

fn model(config: Config) -> IdemModel {
    config.into_model().expect("the test configurations are within bounds")
}

/// Asserts that every guarantee (`always` and `eventually`) holds.
fn assert_guarantees(checker: &impl Checker<IdemModel>) {
    for property in idem_model::properties::guarantees() {
        checker.assert_no_discovery(property);
    }
}

/// DFS on both cores with symmetry reduction, as `idem check` runs by default.
fn check_like_the_cli(config: Config) -> idem_model::RunningChecker {
    let search = Search { strategy: Strategy::Dfs, symmetry: true, threads: 2, depth_max: None };
    let mut checker = idem_model::spawn(model(config), search).expect("DFS allows symmetry");
    idem_model::join(&mut checker);
    checker
}

#[test]
fn one_client_one_server_holds_every_guarantee() {
    // Goal: the smallest system with a duplicated request replays instead of executing twice.
    let duplicating = Config { network: NetworkKind::Duplicating, network_faults: 1, ..config(1, 1) };
    let checker = model(duplicating).checker().spawn_bfs().join();
    assert_guarantees(&checker);
    checker.assert_any_discovery(REPLAY_HAPPENS);
    checker.assert_any_discovery(CONFLICT_ANSWERED);
    checker.assert_any_discovery(FORGETTING_HAPPENS);
    assert_eq!(checker.unique_state_count(), 28);
}

#[test]
fn every_fault_and_misuse_hold_every_guarantee_and_reach_every_path() {
    // Goal: with a crash, a stall, a slow handler, a handler failure, a duplicate, a store
    // outage and a reused key, all guarantees hold and every interesting path (replay,
    // take-over, conflict, mismatch, renewal, outage, forgetting) happens. Delays have
    // their own test: together with all of these they take minutes.
    let faulty = Config {
        key_reuse: true,
        crashes: 1,
        lapses: 1,
        slow: 1,
        failures: 1,
        network: NetworkKind::Duplicating,
        network_faults: 1,
        outages: 1,
        ..config(1, 1)
    };
    let checker = model(faulty).checker().threads(2).spawn_dfs().join();
    assert_guarantees(&checker);
    for reachable in [
        REPLAY_HAPPENS,
        TAKE_OVER_HAPPENS,
        CONFLICT_ANSWERED,
        MISMATCH_ANSWERED,
        RENEWAL_HAPPENS,
        OUTAGE_ANSWERED,
        FORGETTING_HAPPENS,
    ] {
        checker.assert_any_discovery(reachable);
    }
    assert_eq!(checker.discovery(UNRECORDED_ANSWERED), None, "atomic mode never answers unrecorded");
    assert_eq!(checker.unique_state_count(), 2_317_128);
}

/// A lossy network that also holds a message back while time passes, with a crash and a
/// stall: the configuration where a delayed request or answer meets a take-over.
fn lossy_and_delaying() -> Config {
    Config { crashes: 1, lapses: 1, network: NetworkKind::Lossy, network_faults: 1, delays: 1, ..config(1, 1) }
}

#[test]
fn a_message_held_back_while_time_passes_breaks_no_guarantee() {
    // Goal: a request delivered after its client timed out and retried, or an answer that
    // arrives late, neither executes twice nor answers a stale response.
    let checker = model(lossy_and_delaying()).checker().threads(2).spawn_dfs().join();
    assert_guarantees(&checker);
    checker.assert_any_discovery(TAKE_OVER_HAPPENS);
    checker.assert_any_discovery(REPLAY_HAPPENS);
    assert_eq!(checker.unique_state_count(), 124_974);
}

#[test]
fn two_principals_sharing_a_key_string_stay_apart() {
    // Goal: alice and bob both send key k1 through a lossy network, a crash and a stall;
    // neither sees the other's response.
    let lossy = Config { crashes: 1, lapses: 1, network: NetworkKind::Lossy, network_faults: 1, ..config(2, 1) };
    let checker = model(lossy).checker().threads(2).spawn_dfs().join();
    assert_guarantees(&checker);
    checker.assert_any_discovery(TAKE_OVER_HAPPENS);
    assert_eq!(checker.discovery(MISMATCH_ANSWERED), None, "nobody reuses a key here");
    assert_eq!(checker.unique_state_count(), 126_836);
}

#[test]
fn symmetry_reduction_explores_fewer_states_with_the_same_verdicts() {
    // Goal: treating server replicas as interchangeable shrinks the search, not its findings.
    let faulty = Config {
        crashes: 1,
        lapses: 1,
        network: NetworkKind::Duplicating,
        network_faults: 1,
        outages: 1,
        ..config(1, 2)
    };
    let plain = Search { strategy: Strategy::Dfs, symmetry: false, threads: 1, depth_max: None };
    let reduced = Search { symmetry: true, ..plain };
    let mut full = idem_model::spawn(model(faulty.clone()), plain).expect("DFS takes these options");
    let mut symmetric = idem_model::spawn(model(faulty), reduced).expect("DFS allows symmetry");
    idem_model::join(&mut full);
    idem_model::join(&mut symmetric);
    let kinds = |checker: &idem_model::RunningChecker| {
        idem_model::verdicts(checker, false)
            .into_iter()
            .map(|v| (v.property, matches!(v.outcome, Outcome::Holds | Outcome::Reached(_))))
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&full), kinds(&symmetric));
    // Nobody reuses a key, nothing is slow, atomic mode never answers unrecorded, the store
    // does not crash, and there are no forgets, tombstones or execution ceiling.
    let unreachable = [
        MISMATCH_ANSWERED,
        RENEWAL_HAPPENS,
        UNRECORDED_ANSWERED,
        STORE_CRASH_LOSES_WRITES,
        FORGET_UNDER_A_HANDLER,
        TOMBSTONE_LEFT,
        CEILING_LAPSE_HAPPENS,
    ];
    assert!(kinds(&full).iter().all(|(property, fine)| *fine || unreachable.contains(property)), "{:?}", kinds(&full));
    assert!(symmetric.unique_state_count() < full.unique_state_count());
    assert_eq!((full.unique_state_count(), symmetric.unique_state_count()), (51_563, 29_780));
}

#[test]
fn default_configuration_holds_every_guarantee_with_the_shipped_client() {
    // Goal: `idem check`'s configuration holds G1-G8, progress included, with idem-client's
    // default retry policy; its size is pinned (docs/model.md gives the same figure).
    let checker = check_like_the_cli(Config::default());
    let verdicts = idem_model::verdicts(&checker, false);
    let violated: Vec<_> = verdicts.iter().filter(|v| v.is_violation()).collect();
    assert!(violated.is_empty(), "{violated:#?}");
    for reachable in
        [REPLAY_HAPPENS, TAKE_OVER_HAPPENS, CONFLICT_ANSWERED, MISMATCH_ANSWERED, OUTAGE_ANSWERED, FORGETTING_HAPPENS]
    {
        checker.assert_any_discovery(reachable);
    }
    assert_eq!(checker.unique_state_count(), 5_212_391);
}

#[test]
fn separate_mode_breaks_only_at_most_once_and_its_state_count_is_pinned() {
    // Goal: the same configuration in separate mode loses G1 (and only G1; the completion
    // is still fenced), and the size of its search is pinned.
    let separate = Config { mode: Mode::Separate, ..Config::default() };
    let checker = check_like_the_cli(separate);
    let violated: Vec<_> =
        idem_model::verdicts(&checker, false).into_iter().filter(|v| v.is_violation()).map(|v| v.property).collect();
    assert_eq!(violated, [idem_model::properties::AT_MOST_ONCE]);
    assert_eq!(checker.unique_state_count(), 7_967_719);
}

/// One client (alice, who also reuses k1 with another amount), two servers, a crash, a
/// stall, a duplicate, a store outage, and a store crash that loses what is not on disk.
fn store_crashing() -> Config {
    Config {
        key_reuse: true,
        crashes: 1,
        lapses: 1,
        network: NetworkKind::Duplicating,
        network_faults: 1,
        outages: 1,
        store_crashes: 1,
        ..config(1, 2)
    }
}

#[test]
fn claims_lost_in_a_store_crash_break_no_guarantee_in_atomic_mode() {
    // Goal: a store that commits claims, renewals and releases without waiting for the
    // disk, and completions with it, keeps G1-G8 in atomic mode: a claim it loses belongs
    // to an execution that cannot have committed (its completion would have put the claim
    // on disk). Lost claims are re-granted, to a retry or to a take-over's rival, with new
    // fences. The size is pinned.
    let checker = check_like_the_cli(store_crashing());
    let violated: Vec<_> = idem_model::verdicts(&checker, false).into_iter().filter(|v| v.is_violation()).collect();
    assert!(violated.is_empty(), "{violated:#?}");
    for reachable in [STORE_CRASH_LOSES_WRITES, TAKE_OVER_HAPPENS, REPLAY_HAPPENS, MISMATCH_ANSWERED, OUTAGE_ANSWERED] {
        checker.assert_any_discovery(reachable);
    }
    assert_eq!(checker.unique_state_count(), 1_117_172);
}

#[test]
fn claims_lost_in_a_store_crash_break_at_most_once_in_separate_mode() {
    // Goal: in separate mode a side effect that committed outside the store survives the
    // crash that loses its claim, so a retry runs it again (G1), and only G1 breaks. The
    // shortest story is pinned: no other fault is needed.
    let separate = Config { mode: Mode::Separate, ..store_crashing() };
    let checker = check_like_the_cli(separate);
    let violated: Vec<_> =
        idem_model::verdicts(&checker, false).into_iter().filter(|v| v.is_violation()).map(|v| v.property).collect();
    assert_eq!(violated, [AT_MOST_ONCE]);
    assert_eq!(checker.unique_state_count(), 1_343_718);

    let plain = Config { store_crashes: 1, mode: Mode::Separate, ..config(1, 1) };
    let model = model(plain);
    let found = model.clone().checker().spawn_bfs().join().discovery(AT_MOST_ONCE).expect("G1 breaks");
    let shortest = idem_model::shortest_discovery(&model, AT_MOST_ONCE, found.into_actions().len());
    let story = idem_model::story(&model, &shortest.expect("a shortest path exists when one does"));
    let expected = [
        "1. client 1 (alice) sends POST /payments key=k1 amount=100 (deadline t=30s): attempt 1 of 20 to server 1",
        "2. server 1 receives POST /payments key=k1 amount=100 from client 1 (alice) (attempt 1); the store \
         decides: execute under fence f1 (lease until t=10s)",
        "3. server 1 runs the side effect of alice's k1 (amount=100) on its own (separate mode): the ledger now \
         holds 1 payment(s) for alice/k1",
        "4. the store crashes and restarts, losing the writes not yet on disk: alice/k1 goes back from a claim \
         under f1 to no record; its fences go on from f2",
        "5. server 1 completes alice's k1 (amount=100) under fence f1: refused (no record is in flight for this \
         id); answers 409 (Retry-After 1 s). client 1 (alice) receives 409 (Retry-After 1 s) for attempt 1; it \
         waits the Retry-After 1 s until t=1s",
        "6. at t=1s client 1 (alice) retries: attempt 2 of 20 to server 1",
        "7. server 1 receives POST /payments key=k1 amount=100 from client 1 (alice) (attempt 2); the store \
         decides: execute under fence f2 (lease until t=11s)",
        "8. server 1 runs the side effect of alice's k1 (amount=100) on its own (separate mode): the ledger now \
         holds 2 payment(s) for alice/k1",
    ];
    assert_eq!(story, expected);
}

#[test]
fn purges_racing_requests_on_skewed_clocks_break_no_guarantee() {
    // Goal: the store's purge may run at any moment on either server, one of whose clocks
    // runs 2 s ahead (within the renewal margin), while a claim is in flight, a handler
    // stalls or crashes and a duplicate arrives: it removes nothing before its time, and
    // every guarantee holds. The skew turns symmetry reduction off. The size is pinned.
    let racing = Config {
        crashes: 1,
        lapses: 1,
        network: NetworkKind::Duplicating,
        network_faults: 1,
        purges: 1,
        skew: Duration::from_secs(2),
        ..config(1, 2)
    };
    let checker = check_like_the_cli(racing);
    let violated: Vec<_> = idem_model::verdicts(&checker, false).into_iter().filter(|v| v.is_violation()).collect();
    assert!(violated.is_empty(), "{violated:#?}");
    checker.assert_any_discovery(TAKE_OVER_HAPPENS);
    checker.assert_any_discovery(REPLAY_HAPPENS);
    assert_eq!(checker.unique_state_count(), 45_375);
}

#[test]
fn state_graph_has_no_cycles_so_eventually_is_sound() {
    // Goal: every path ends in a state without successors, which is what makes
    // stateright's `eventually` (checked at terminal states only) a sound check of G6.
    let model = model(lossy_and_delaying());
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
    // The walk saw exactly the states the checker counts: it covered the whole configuration.
    let counted = model.checker().spawn_bfs().join().unique_state_count();
    assert_eq!(marks.len(), counted);
}

/// Every state of `model`, breadth first.
fn every_state(model: &IdemModel) -> Vec<State> {
    let mut seen: HashMap<State, ()> = HashMap::new();
    let mut queue: Vec<State> = model.init_states();
    let mut all = Vec::new();
    while let Some(state) = queue.pop() {
        if seen.insert(state.clone(), ()).is_some() {
            continue;
        }
        queue.extend(model.next_states(&state));
        all.push(state);
    }
    all
}

#[test]
fn a_refused_renewal_stops_the_execution_and_answers_from_the_record() {
    // Goal: a handler whose claim was taken over learns it from its renewal, stops, and
    // never answers its own response: its client gets what the record says (SPEC, renewal).
    let stalling = Config { lapses: 1, network: NetworkKind::Duplicating, network_faults: 1, ..config(1, 1) };
    let model = model(stalling);
    let mut refused = 0;
    for state in every_state(&model) {
        let mut actions = Vec::new();
        model.actions(&state, &mut actions);
        for action in actions {
            let Action::Renew { server, serial } = action else { continue };
            let line = model.format_step(&state, action).expect("enabled actions apply");
            if !line.contains("refused") {
                continue;
            }
            refused += 1;
            let next = model.next_state(&state, action).expect("enabled actions apply");
            assert!(
                next.handlers().all(|(on, handler)| on != server || handler.serial != serial),
                "a refused renewal ends the execution: {line}"
            );
            assert!(!line.contains("answers 201 location"), "a superseded execution answers from the record: {line}");
            let answered_own = next.network.iter().any(|m| matches!(m, Message::Reply { .. }));
            assert!(!answered_own, "answers travel at once on this network: {line}");
        }
    }
    assert!(refused > 0, "some renewal is refused after a take-over");
}

#[test]
fn expiry_forgets_a_settled_record_and_nothing_runs_again() {
    // Goal: once nothing for a record is alive, its retention ends and the purge forgets it;
    // the guarantees hold across forgetting.
    let checker = model(Config { crashes: 1, ..config(2, 1) }).checker().spawn_bfs().join();
    checker.assert_any_discovery(FORGETTING_HAPPENS);
    checker.assert_no_discovery(EXPIRED_IS_FORGOTTEN);
    checker.assert_no_discovery(PROGRESS);
    assert_guarantees(&checker);
}
