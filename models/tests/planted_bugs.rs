//! Each planted bug is found: the checker reports a counterexample for the property the
//! bug breaks, and the correct store holds that property in the same configuration.

use idem_model::properties::{AT_MOST_ONCE, ISOLATION, MISMATCH_NEVER_EXECUTES, NO_STALE_COMPLETION};
use idem_model::{Config, IdemModel, Mode, NetworkKind, Variant};
use stateright::{Checker, Model, Path};

/// The smallest system: one client, one server, nothing fails unless a test says so.
fn small() -> Config {
    Config {
        clients: 1,
        servers: 1,
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

/// The counterexample the checker finds for `property`, if any.
fn counterexample(config: Config, property: &'static str) -> Option<Path<idem_model::State, idem_model::Action>> {
    model(config).checker().spawn_bfs().join().discovery(property)
}

/// Asserts that `variant` breaks `property` in `config` and that the correct store does not.
fn assert_found(config: Config, variant: Variant, property: &'static str) -> Vec<String> {
    assert_eq!(counterexample(config.clone(), property), None, "the correct store holds {property:?}");
    let buggy = Config { variant, ..config };
    let path = counterexample(buggy.clone(), property).unwrap_or_else(|| panic!("{variant} breaks {property:?}"));
    let model = model(buggy);
    let shortest = idem_model::shortest_discovery(&model, property, path.clone().into_actions().len());
    idem_model::story(&model, shortest.as_ref().unwrap_or(&path))
}

#[test]
fn check_then_act_executes_twice() {
    // Goal: without a written claim, a resend executes concurrently with the first request (G1).
    let story = assert_found(small(), Variant::NoClaim, AT_MOST_ONCE);
    assert!(story.iter().filter(|line| line.contains("never written")).count() == 2, "{story:#?}");
}

#[test]
fn completion_without_fence_check_accepts_a_stale_handler() {
    // Goal: after a lapse and a take-over, the first handler's completion must be refused (G3).
    let config = Config { lapses: 1, ..small() };
    let story = assert_found(config, Variant::NoFenceCheck, NO_STALE_COMPLETION);
    assert!(story.iter().any(|line| line.contains("lapses")), "{story:#?}");
    assert!(story.iter().any(|line| line.contains("take over")), "{story:#?}");
}

#[test]
fn keys_not_scoped_by_principal_replay_across_principals() {
    // Goal: alice and bob both use key k1; an unscoped store replays one's response to the other (G4).
    let config = Config { clients: 2, resends: 0, ..small() };
    let story = assert_found(config, Variant::UnscopedKeys, ISOLATION);
    assert!(story.last().is_some_and(|line| line.contains("replay")), "{story:#?}");
}

#[test]
fn missing_fingerprint_check_lets_a_reused_key_execute() {
    // Goal: a reused key with another amount takes over a lapsed claim and runs (G5).
    let config = Config { key_reuse: true, lapses: 1, resends: 0, ..small() };
    let story = assert_found(config, Variant::NoFingerprintCheck, MISMATCH_NEVER_EXECUTES);
    assert!(story.iter().any(|line| line.contains("amount=700")), "{story:#?}");
}

#[test]
fn fences_restarting_after_release_let_a_stale_handler_complete() {
    // Goal: a per-record fence counter hands a stale fence out again after a release (G3).
    let config = Config { lapses: 1, failures: 1, resends: 2, ..small() };
    let story = assert_found(config, Variant::FenceReuse, NO_STALE_COMPLETION);
    assert!(story.iter().any(|line| line.contains("releases")), "{story:#?}");
}

#[test]
fn separate_mode_executes_twice_after_a_lease_lapse() {
    // Goal: SPEC's expected counterexample: in separate mode a lapse lets the side effect run twice (G1).
    let config = Config { lapses: 1, ..small() };
    assert_eq!(counterexample(config.clone(), AT_MOST_ONCE), None, "atomic mode holds G1");
    let separate = Config { mode: Mode::Separate, ..config };
    let model = model(separate);
    let path = model.clone().checker().spawn_bfs().join().discovery(AT_MOST_ONCE).expect("separate mode breaks G1");
    let story = idem_model::story(&model, &path);
    assert!(story.iter().any(|line| line.contains("lapses while its holder is still running")), "{story:#?}");
}
