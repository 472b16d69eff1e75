//! The key lifecycle of issue 22 (SPEC "Key lifecycle"): an operator's forget is fenced,
//! a tombstoned key never executes, and no claim lives past the execution ceiling plus one
//! lease. Each property holds for the shipped code, is really exercised (its reachability
//! property is reached), and is broken by its planted variant, with the story pinned.

use std::time::Duration;

use idem_model::properties::{
    AT_MOST_ONCE, CEILING_BOUNDS_CLAIMS, CEILING_LAPSE_HAPPENS, FORGET_IS_FENCED, FORGET_UNDER_A_HANDLER,
    NO_STALE_COMPLETION, TAKE_OVER_HAPPENS, TOMBSTONE_LEFT, TOMBSTONE_NEVER_EXECUTES,
};
use idem_model::{Action, Config, IdemModel, Mode, NetworkKind, State, Variant};
use stateright::{Checker, Model, Path};

/// One client, one server, a reliable network, nothing fails unless a test says so.
fn small() -> Config {
    Config {
        clients: 1,
        servers: 1,
        key_reuse: false,
        crashes: 0,
        lapses: 0,
        network: NetworkKind::Ordered,
        network_faults: 0,
        outages: 0,
        ..Config::default()
    }
}

fn model(config: Config) -> IdemModel {
    config.into_model().expect("the test configurations are within bounds")
}

fn assert_guarantees(checker: &impl Checker<IdemModel>) {
    for property in idem_model::properties::guarantees() {
        checker.assert_no_discovery(property);
    }
}

fn counterexample(config: Config, property: &'static str) -> Option<Path<State, Action>> {
    model(config).checker().threads(2).spawn_dfs().join().discovery(property)
}

/// Asserts that `variant` breaks `property` in `config` and the shipped code does not;
/// returns the shortest counterexample as a story.
fn assert_found(config: Config, variant: Variant, property: &'static str) -> Vec<String> {
    assert_eq!(counterexample(config.clone(), property), None, "the shipped code holds {property:?}");
    let planted = Config { variant, ..config };
    let path = counterexample(planted.clone(), property).unwrap_or_else(|| panic!("{property:?} is violated"));
    let model = model(planted);
    let shortest = idem_model::shortest_discovery(&model, property, path.clone().into_actions().len());
    idem_model::story(&model, shortest.as_ref().unwrap_or(&path))
}

/// Every line a step of `model` tells, over its whole state graph.
fn every_line(model: &IdemModel) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut queue = model.init_states();
    let mut lines = Vec::new();
    while let Some(state) = queue.pop() {
        if !seen.insert(state.clone()) {
            continue;
        }
        let mut actions = Vec::new();
        model.actions(&state, &mut actions);
        for action in actions {
            lines.extend(model.format_step(&state, action));
            queue.extend(model.next_state(&state, action));
        }
    }
    lines
}

/// An operator's forget at any moment, a stalled holder and a duplicate on the way.
fn forgetting() -> Config {
    Config { forgets: 1, lapses: 1, network: NetworkKind::Duplicating, network_faults: 1, ..small() }
}

#[test]
fn a_forget_at_any_moment_is_fenced_and_the_key_runs_again_once() {
    // Goal: an operator may forget the record while its handler runs, after it completed,
    // or between a take-over and its completion; every guarantee holds (G1 per life of the
    // key: a forget lets it run again), nothing granted before the forget completes after
    // it, and the forget really meets a running handler. The size is pinned.
    let checker = model(forgetting()).checker().threads(2).spawn_dfs().join();
    assert_guarantees(&checker);
    checker.assert_any_discovery(FORGET_UNDER_A_HANDLER);
    checker.assert_any_discovery(TAKE_OVER_HAPPENS);
    assert_eq!(checker.unique_state_count(), 9_347);
}

#[test]
fn a_forget_that_keeps_the_fence_lets_the_forgotten_handler_complete() {
    // Goal: a forget that only makes the claim lapse (the record stays under its fence and
    // the counter does not move) lets the handler still running under it complete after
    // the forget (G3). idem-core's forget removes the record and moves the fence on, so
    // that completion is refused. The path is pinned.
    let story = assert_found(Config { forgets: 1, ..small() }, Variant::ForgetKeepsFence, FORGET_IS_FENCED);
    let expected = [
        "1. client 1 (alice) sends POST /payments key=k1 amount=100 (deadline t=30s): attempt 1 of 20 to server 1",
        "2. server 1 receives POST /payments key=k1 amount=100 from client 1 (alice) (attempt 1); the store decides: execute under fence f1 (lease until t=10s)",
        "3. server 1 writes the payment of alice's k1 (amount=100) in its open transaction (pending until the completion commits)",
        "4. an operator forgets alice/k1 (a claim under f1): the store now holds a claim under f1; the next claim gets f2",
        "5. server 1 completes alice's k1 (amount=100) under fence f1, committing its payment in the same transaction: accepted, answers 201 location=/payments/pay_1 \"alice/k1/100#1\". client 1 (alice) receives 201 for attempt 1, final",
    ];
    assert_eq!(story, expected);
    let stale =
        counterexample(Config { forgets: 1, variant: Variant::ForgetKeepsFence, ..small() }, NO_STALE_COMPLETION);
    assert!(stale.is_some(), "the ghost's current claim sees it too");
}

/// Tombstones an hour long, and an unordered network that may hold a request back while
/// time passes: the client's retry overtakes it, and it can arrive after the retention.
fn tombstoning() -> Config {
    Config { tombstone: Some(Duration::from_secs(3600)), delays: 1, network: NetworkKind::Duplicating, ..small() }
}

#[test]
fn a_request_that_arrives_after_retention_meets_the_tombstone_and_never_runs() {
    // Goal: the clock may pass a completed record's retention while a copy of its request
    // is still on its way; the purge shrinks the record to a tombstone, the late copy gets
    // 410 and runs nothing (G1 holds over the whole run), and the tombstone is forgotten in
    // turn. The size is pinned.
    let config = tombstoning();
    let checker = model(config.clone()).checker().threads(2).spawn_dfs().join();
    assert_guarantees(&checker);
    checker.assert_any_discovery(TOMBSTONE_LEFT);
    let lines = every_line(&model(config));
    assert!(lines.iter().any(|line| line.contains("shrinks it to a tombstone")), "a purge shrinks a record");
    assert!(lines.iter().any(|line| line.contains("the store decides: gone")), "a late request meets the tombstone");
    assert_eq!(checker.unique_state_count(), 68);
}

#[test]
fn a_claim_that_reads_a_tombstone_as_absent_runs_a_late_request_again() {
    // Goal: a tombstoned key never executes. A server whose claim reads the tombstone as
    // no record (variant ignores-tombstones) runs the late copy again. The path is pinned.
    let story = assert_found(tombstoning(), Variant::IgnoresTombstones, TOMBSTONE_NEVER_EXECUTES);
    let expected = [
        "1. client 1 (alice) sends POST /payments key=k1 amount=100 (deadline t=30s): attempt 1 of 20 to server 1",
        "2. the network holds back the request POST /payments key=k1 amount=100 from client 1 (alice) (attempt 1) to server 1 (a slow network)",
        "3. at t=10s client 1 (alice)'s attempt 1 times out while it is still on its way or running; it backs off 0.1 s until t=10.1s",
        "4. at t=10.1s client 1 (alice) retries: attempt 2 of 20 to server 1",
        "5. server 1 receives POST /payments key=k1 amount=100 from client 1 (alice) (attempt 2); the store decides: execute under fence f1 (lease until t=20.1s)",
        "6. server 1 writes the payment of alice's k1 (amount=100) in its open transaction (pending until the completion commits)",
        "7. server 1 completes alice's k1 (amount=100) under fence f1, committing its payment in the same transaction: accepted, answers 201 location=/payments/pay_1 \"alice/k1/100#1\". client 1 (alice) receives 201 for attempt 2, final",
        "8. time passes to t=86410.1s, when the retention of alice/k1 ends; the store's purge (1 record(s)) shrinks it to a tombstone until t=90010.1s",
        "9. server 1 receives POST /payments key=k1 amount=100 from client 1 (alice) (attempt 1); the store decides: execute under fence f2 (lease until t=86420.1s)",
    ];
    assert_eq!(story, expected);
}

/// A 5 s execution ceiling and a slow handler (it may run 20 s, renewing).
fn ceiling() -> Config {
    Config { ceiling: Some(Duration::from_secs(5)), slow: 1, ..small() }
}

#[test]
fn a_handler_past_the_ceiling_loses_its_claim_within_one_lease() {
    // Goal: the layer stops renewing at the ceiling, so a slow handler's claim lapses at
    // most a lease later and a retry takes it over; no lease ever ends past its grant plus
    // the ceiling and one lease, and in atomic mode the old handler's completion rolls back
    // (G1 holds). The size is pinned.
    let checker = model(ceiling()).checker().threads(2).spawn_dfs().join();
    assert_guarantees(&checker);
    checker.assert_any_discovery(CEILING_LAPSE_HAPPENS);
    checker.assert_any_discovery(TAKE_OVER_HAPPENS);
    assert_eq!(checker.unique_state_count(), 79);
    // In separate mode the ceiling trades G1 for the key's release: the slow handler's
    // side effect has committed, and the take-over runs it again.
    let separate = Config { mode: Mode::Separate, ..ceiling() };
    assert!(counterexample(separate, AT_MOST_ONCE).is_some(), "separate mode pays twice past the ceiling");
}

#[test]
fn a_heartbeat_that_ignores_the_ceiling_holds_a_claim_for_ever() {
    // Goal: no claim lives past the ceiling plus one lease; a heartbeat that renews past
    // the ceiling (variant renews-past-ceiling) extends the lease beyond it. The path is pinned.
    let story = assert_found(ceiling(), Variant::RenewsPastCeiling, CEILING_BOUNDS_CLAIMS);
    let expected = [
        "1. client 1 (alice) sends POST /payments key=k1 amount=100 (deadline t=30s): attempt 1 of 20 to server 1",
        "2. server 1 receives POST /payments key=k1 amount=100 from client 1 (alice) (attempt 1); the store decides: execute under fence f1 (lease until t=10s)",
        "3. server 1's handler for alice's k1 (amount=100) (started at t=0s) turns out slow: it may run until t=20s, renewing its lease",
        "4. server 1's handler for alice's k1 (amount=100) renews fence f1 at t=3.333s: the lease now ends at t=13.333s",
        "5. server 1's handler for alice's k1 (amount=100) renews fence f1 at t=6.666s: the lease now ends at t=16.666s",
    ];
    assert_eq!(story, expected);
}
