//! Each planted bug is found: the checker reports a counterexample for the property the
//! bug breaks, and the correct store holds that property in the same configuration. Also
//! the counterexamples that are not bugs but limits: separate mode, and progress when one
//! operation meets more faults than idem-client's default budget absorbs.

use idem_model::properties::{
    AT_MOST_ONCE, ISOLATION, MISMATCH_NEVER_EXECUTES, NO_STALE_COMPLETION, NOTHING_RUNS_WITHOUT_A_CLAIM, PROGRESS,
    PURGE_WAITS_FOR_EXPIRY, REPLAY_FIDELITY,
};
use idem_model::{Action, Config, IdemModel, Mode, NetworkKind, State, Variant};
use std::time::Duration;

use stateright::{Checker, Model, Path};

/// The smallest system: one client, one server, a reliable network, nothing fails unless
/// a test says so; idem-client's default retry policy.
fn small() -> Config {
    Config {
        clients: 1,
        servers: 1,
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
        mode: Mode::Atomic,
        variant: Variant::Correct,
        ..Config::default()
    }
}

fn model(config: Config) -> IdemModel {
    config.into_model().expect("the test configurations are within bounds")
}

/// The counterexample the checker finds for `property`, if any.
fn counterexample(config: Config, property: &'static str) -> Option<Path<State, Action>> {
    model(config).checker().threads(2).spawn_dfs().join().discovery(property)
}

/// The shortest counterexample for `property` in `config`, as a story.
fn shortest_story(config: Config, property: &'static str) -> Vec<String> {
    let path = counterexample(config.clone(), property).unwrap_or_else(|| panic!("{property:?} is violated"));
    let model = model(config);
    let shortest = idem_model::shortest_discovery(&model, property, path.clone().into_actions().len());
    idem_model::story(&model, shortest.as_ref().unwrap_or(&path))
}

/// Asserts that `variant` breaks `property` in `config` and that the correct store does
/// not; returns the shortest story.
fn assert_found(config: Config, variant: Variant, property: &'static str) -> Vec<String> {
    assert_eq!(counterexample(config.clone(), property), None, "the correct store holds {property:?}");
    shortest_story(Config { variant, ..config }, property)
}

#[test]
fn check_then_act_executes_twice() {
    // Goal: without a written claim, a duplicated request executes next to the first (G1).
    let config = Config { network: NetworkKind::Duplicating, network_faults: 1, ..small() };
    let story = assert_found(config, Variant::NoClaim, AT_MOST_ONCE);
    assert_eq!(story.iter().filter(|line| line.contains("never written")).count(), 2, "{story:#?}");
}

#[test]
fn completion_without_fence_check_accepts_a_stale_handler() {
    // Goal: after a stall, a lapse and a take-over, the first handler's completion must be refused (G3).
    let config = Config { lapses: 1, ..small() };
    let story = assert_found(config, Variant::NoFenceCheck, NO_STALE_COMPLETION);
    assert!(story.iter().any(|line| line.contains("stalls")), "{story:#?}");
    assert!(story.iter().any(|line| line.contains("take over")), "{story:#?}");
}

#[test]
fn keys_not_scoped_by_principal_replay_across_principals() {
    // Goal: alice and bob both use key k1; an unscoped store replays one's response to the other (G4).
    let config = Config { clients: 2, ..small() };
    let story = assert_found(config, Variant::UnscopedKeys, ISOLATION);
    assert!(story.last().is_some_and(|line| line.contains("replay")), "{story:#?}");
}

#[test]
fn missing_fingerprint_check_lets_a_reused_key_execute() {
    // Goal: a reused key with another amount is answered 700's recorded response instead
    // of 422; with a stalled holder it would even take the claim over and run (G5).
    let config = Config { key_reuse: true, lapses: 1, ..small() };
    let story = assert_found(config, Variant::NoFingerprintCheck, MISMATCH_NEVER_EXECUTES);
    let last = story.last().expect("a counterexample has steps");
    assert!(last.contains("amount=100") && last.contains("replay") && last.contains("alice/k1/700"), "{story:#?}");
}

#[test]
fn fences_restarting_after_release_let_a_stale_handler_complete() {
    // Goal: a per-record fence counter hands a stale fence out again after a release (G3).
    let config = Config { lapses: 1, failures: 1, ..small() };
    let story = assert_found(config, Variant::FenceReuse, NO_STALE_COMPLETION);
    assert!(story.iter().any(|line| line.contains("releases")), "{story:#?}");
}

#[test]
fn the_old_long_lease_outlasts_the_clients_budget() {
    // Goal: with the 60 s lease idem-core had before renewals, one crashed holder blocks
    // its key longer than idem-client's default attempts and deadline: the client gives up (G6).
    let config = Config { crashes: 1, ..small() };
    let story = assert_found(config, Variant::LongLease, PROGRESS);
    assert!(story.iter().any(|line| line.contains("crashes")), "{story:#?}");
    assert!(story.iter().any(|line| line.contains("gives up")), "{story:#?}");
}

#[test]
fn failing_open_runs_a_handler_without_a_claim() {
    // Goal: a server that runs the handler while the store is down breaks G8.
    let config = Config { outages: 1, ..small() };
    let story = assert_found(config, Variant::FailOpen, NOTHING_RUNS_WITHOUT_A_CLAIM);
    assert!(story.iter().any(|line| line.contains("unreachable")), "{story:#?}");
    assert!(story.last().is_some_and(|line| line.contains("without a claim")), "{story:#?}");
}

#[test]
fn separate_mode_executes_twice_after_a_lease_lapse() {
    // Goal: SPEC's expected counterexample: in separate mode a stalled holder's lease
    // lapses, a retry takes over, and the side effect runs twice (G1). The path is pinned.
    let config = Config { lapses: 1, ..small() };
    assert_eq!(counterexample(config.clone(), AT_MOST_ONCE), None, "atomic mode holds G1");
    let story = shortest_story(Config { mode: Mode::Separate, ..config }, AT_MOST_ONCE);
    let expected = [
        "1. client 1 (alice) sends POST /payments key=k1 amount=100 (deadline t=30s): attempt 1 of 20 to server 1",
        "2. server 1 receives POST /payments key=k1 amount=100 from client 1 (alice) (attempt 1); the store \
         decides: execute under fence f1 (lease until t=10s)",
        "3. server 1's handler for alice's k1 (amount=100) (fence f1) stalls and stops renewing; its lease ends \
         at t=10s",
        "4. at t=10s client 1 (alice)'s attempt 1 times out while it is still on its way or running; it backs \
         off 0.1 s until t=10.1s",
        "5. at t=10.1s client 1 (alice) retries: attempt 2 of 20 to server 1",
        "6. server 1 receives POST /payments key=k1 amount=100 from client 1 (alice) (attempt 2); the store \
         decides: take over the lapsed claim, execute under fence f2 (f1 is stale now)",
        "7. server 1 runs the side effect of alice's k1 (amount=100) on its own (separate mode): the ledger now \
         holds 1 payment(s) for alice/k1",
        "8. server 1 runs the side effect of alice's k1 (amount=100) on its own (separate mode): the ledger now \
         holds 2 payment(s) for alice/k1",
    ];
    assert_eq!(story, expected);
}

#[test]
fn renewals_keep_a_slow_handlers_claim_even_in_separate_mode() {
    // Goal: a handler slower than its lease keeps its claim by renewing, so no retry takes
    // it over and separate mode holds G1; without renewals its lease lapses under it.
    let slow = Config { slow: 1, mode: Mode::Separate, ..small() };
    assert_eq!(counterexample(slow.clone(), AT_MOST_ONCE), None, "renewals keep the claim");
    let story = shortest_story(Config { renewals: false, ..slow }, AT_MOST_ONCE);
    assert!(story.iter().any(|line| line.contains("turns out slow")), "{story:#?}");
    assert!(story.iter().any(|line| line.contains("take over")), "{story:#?}");
}

#[test]
fn a_heartbeat_once_per_lease_lets_a_retry_take_over_a_renewing_handler() {
    // Goal: the renewal timer is part of G1 in separate mode. A slow handler renewing every
    // third of a lease keeps its claim (the test above); a heartbeat once per lease (variant
    // renews-every-lease) is due exactly when the lease ends, and a request arriving then
    // (here a duplicate the network held back) takes the claim over from the running
    // handler: the payment is made twice, with no stall.
    let slow = Config {
        slow: 1,
        network: NetworkKind::Duplicating,
        network_faults: 1,
        delays: 1,
        mode: Mode::Separate,
        ..small()
    };
    let story = assert_found(slow, Variant::RenewsEveryLease, AT_MOST_ONCE);
    let expected = [
        "1. client 1 (alice) sends POST /payments key=k1 amount=100 (deadline t=30s): attempt 1 of 20 to server 1",
        "2. the network holds back the request POST /payments key=k1 amount=100 from client 1 (alice) (attempt 1) \
         to server 1 (a slow network)",
        "3. the network duplicates a request; one copy arrives: server 1 receives POST /payments key=k1 amount=100 \
         from client 1 (alice) (attempt 1); the store decides: execute under fence f1 (lease until t=10s)",
        "4. server 1's handler for alice's k1 (amount=100) (started at t=0s) turns out slow: it may run until t=20s, \
         renewing its lease",
        "5. at t=10s client 1 (alice)'s attempt 1 times out while it is still on its way or running; it backs off \
         0.1 s until t=10.1s",
        "6. server 1 receives POST /payments key=k1 amount=100 from client 1 (alice) (attempt 1); the store \
         decides: take over the lapsed claim, execute under fence f2 (f1 is stale now)",
        "7. server 1 runs the side effect of alice's k1 (amount=100) on its own (separate mode): the ledger now \
         holds 1 payment(s) for alice/k1",
        "8. server 1 runs the side effect of alice's k1 (amount=100) on its own (separate mode): the ledger now \
         holds 2 payment(s) for alice/k1",
    ];
    assert_eq!(story, expected);
}

#[test]
fn two_faults_on_one_operation_can_outlast_the_default_retry_budget() {
    // Goal: G6 is promised to an operation that meets at most one fault. Demanding it
    // whatever the faults shows the limit of idem-client's defaults: a store outage costs
    // an attempt, then a crash orphans the claim, and the 409s until its lease lapses use
    // up the rest.
    let two_faults = Config { crashes: 1, outages: 1, ..small() };
    assert_eq!(counterexample(two_faults.clone(), PROGRESS), None, "one fault per operation is absorbed");
    let story = shortest_story(Config { progress_faults: u8::MAX, ..two_faults }, PROGRESS);
    assert!(story.iter().any(|line| line.contains("store is down")), "{story:#?}");
    assert!(story.iter().any(|line| line.contains("crashes")), "{story:#?}");
    assert!(story.iter().any(|line| line.contains("gives up")), "{story:#?}");
}

/// A duplicated request and a store crash: the request's copy is the retry that meets the
/// store as the crash left it.
fn store_crashing() -> Config {
    Config { network: NetworkKind::Duplicating, network_faults: 1, store_crashes: 1, ..small() }
}

#[test]
fn a_completion_off_disk_while_its_payment_is_on_disk_executes_twice() {
    // Goal: atomic mode's G1 under store crashes rests on the completion waiting for the
    // disk together with the payment it carries. A store whose completion does not wait
    // while the payment is durable anyway (records in a database file of their own) loses
    // the completion, and the duplicate runs the payment again (G1). The path is pinned.
    let story = assert_found(store_crashing(), Variant::CompletionApart, AT_MOST_ONCE);
    let expected = [
        "1. client 1 (alice) sends POST /payments key=k1 amount=100 (deadline t=30s): attempt 1 of 20 to server 1",
        "2. the network duplicates a request; one copy arrives: server 1 receives POST /payments key=k1 amount=100 \
         from client 1 (alice) (attempt 1); the store decides: execute under fence f1 (lease until t=10s)",
        "3. server 1 writes the payment of alice's k1 (amount=100) in its open transaction (pending until the \
         completion commits)",
        "4. server 1 completes alice's k1 (amount=100) under fence f1, committing its payment in the same \
         transaction: accepted (the payment is on disk, the completion not yet), answers 201 \
         location=/payments/pay_1 \"alice/k1/100#1\". client 1 (alice) receives 201 for attempt 1, final",
        "5. the store crashes and restarts, losing the writes not yet on disk: alice/k1 goes back from a \
         completion under f1 to no record; its fences go on from f2",
        "6. server 1 receives POST /payments key=k1 amount=100 from client 1 (alice) (attempt 1); the store \
         decides: execute under fence f2 (lease until t=10s)",
        "7. server 1 writes the payment of alice's k1 (amount=100) in its open transaction (pending until the \
         completion commits)",
        "8. server 1 completes alice's k1 (amount=100) under fence f2, committing its payment in the same \
         transaction: accepted (the payment is on disk, the completion not yet), answers 201 \
         location=/payments/pay_2 \"alice/k1/100#2\"",
    ];
    assert_eq!(story, expected);
}

#[test]
fn a_completion_that_skips_the_fsync_loses_a_response_already_answered() {
    // Goal: a store whose completion does not wait for the disk loses it with its payment
    // (no payment twice), but after its response was answered: the next execution answers
    // another one (G2; and the response the client saw is gone, G7).
    let story = assert_found(store_crashing(), Variant::UnsyncedCompletion, REPLAY_FIDELITY);
    assert!(story.iter().any(|line| line.contains("goes back from a completion under f1 to no record")), "{story:#?}");
    assert!(story.last().is_some_and(|line| line.contains("pay_2")), "{story:#?}");
    let checker =
        model(Config { variant: Variant::UnsyncedCompletion, ..store_crashing() }).checker().spawn_bfs().join();
    assert_eq!(checker.discovery(AT_MOST_ONCE), None, "the payment is lost with its completion, not repeated");
}

#[test]
fn a_restarted_store_that_reissues_fences_accepts_a_stale_completion() {
    // Goal: a store that lost unsynced claims must not draw fences from where its disk
    // left the counter: an execution from before the crash still holds the fence it would
    // hand out again, and its completion is accepted for another execution's claim (G3).
    let story = assert_found(store_crashing(), Variant::NoFenceReseed, NO_STALE_COMPLETION);
    assert!(story.iter().any(|line| line.contains("its fence counter goes back to f1")), "{story:#?}");
    assert_eq!(story.iter().filter(|line| line.contains("execute under fence f1")).count(), 2, "{story:#?}");
}

#[test]
fn a_write_outside_the_claims_transaction_survives_a_5xx_and_runs_again() {
    // Goal: in atomic mode a handler that fails (503) after its write rolls the write back
    // with its transaction before it releases, so the retry's payment is the only one (G1).
    // A handler that writes outside the claim's transaction keeps its row through the
    // release, and the retry pays again. The path is pinned.
    let config = Config { failures: 1, ..small() };
    let story = assert_found(config, Variant::WriteOutsideTransaction, AT_MOST_ONCE);
    let expected = [
        "1. client 1 (alice) sends POST /payments key=k1 amount=100 (deadline t=30s): attempt 1 of 20 to server 1",
        "2. server 1 receives POST /payments key=k1 amount=100 from client 1 (alice) (attempt 1); the store \
         decides: execute under fence f1 (lease until t=10s)",
        "3. server 1 runs the side effect of alice's k1 (amount=100) on its own (outside the claim's \
         transaction): the ledger now holds 1 payment(s) for alice/k1",
        "4. server 1's handler for alice's k1 (amount=100) fails after its side effect committed (503): releases \
         fence f1; answers 503. client 1 (alice) receives 503 (no Retry-After) for attempt 1; it backs off 0.1 s \
         until t=0.1s",
        "5. at t=0.1s client 1 (alice) retries: attempt 2 of 20 to server 1",
        "6. server 1 receives POST /payments key=k1 amount=100 from client 1 (alice) (attempt 2); the store \
         decides: execute under fence f2 (lease until t=10.1s)",
        "7. server 1 runs the side effect of alice's k1 (amount=100) on its own (outside the claim's \
         transaction): the ledger now holds 2 payment(s) for alice/k1",
    ];
    assert_eq!(story, expected);
}

#[test]
fn a_handler_that_writes_after_its_claim_was_lost_pays_twice_outside_the_transaction() {
    // Goal: a stalled handler whose lease lapsed and was taken over still runs to its write.
    // Inside the claim's transaction its refused completion rolls the write back (G1 holds);
    // outside it the row stays next to the new holder's.
    let config = Config { lapses: 1, ..small() };
    let story = assert_found(config, Variant::WriteOutsideTransaction, AT_MOST_ONCE);
    assert!(story.iter().any(|line| line.contains("stalls")), "{story:#?}");
    let take_over = story.iter().position(|line| line.contains("take over")).expect("a take-over");
    let writes = story.iter().filter(|line| line.contains("outside the claim's transaction")).count();
    assert_eq!(writes, 2, "{story:#?}");
    assert!(story.last().is_some_and(|line| line.contains("holds 2 payment(s)")), "{story:#?}");
    assert!(take_over < story.len() - 1, "{story:#?}");
}

#[test]
fn separate_mode_pays_twice_after_a_5xx_that_follows_the_write() {
    // Goal: SPEC's separate-mode window, the other way in: a handler that fails after its
    // side effect committed releases its claim, and the retry runs the payment again (G1).
    // Atomic mode holds in the same configuration (the write rolls back with the release).
    let config = Config { failures: 1, ..small() };
    assert_eq!(counterexample(config.clone(), AT_MOST_ONCE), None, "atomic mode holds G1");
    let story = shortest_story(Config { mode: Mode::Separate, ..config }, AT_MOST_ONCE);
    assert!(story.iter().any(|line| line.contains("fails after its side effect committed (503)")), "{story:#?}");
    assert!(story.iter().any(|line| line.contains("releases fence f1")), "{story:#?}");
    assert!(story.last().is_some_and(|line| line.contains("holds 2 payment(s) for alice/k1")), "{story:#?}");
}

/// Two servers, a slow handler that renews its lease on schedule, separate mode (where a
/// take-over shows as a second payment): clock skew is the only way to lose the claim.
fn skewed(skew: Duration) -> Config {
    Config { servers: 2, slow: 1, mode: Mode::Separate, skew, ..small() }
}

#[test]
fn clocks_apart_by_less_than_the_renewal_margin_keep_a_renewing_holders_claim() {
    // Goal: a holder renews every third of a lease, so a server whose clock runs ahead by
    // less than lease - renew_every (6.67 s) never sees its lease lapsed; 7 s ahead, a retry
    // just before a renewal takes the claim over from a running handler (separate mode
    // pays twice). This pins the bound docs/model.md states.
    assert_eq!(counterexample(skewed(Duration::from_secs(2)), AT_MOST_ONCE), None, "2 s is within the bound");
    assert_eq!(counterexample(skewed(Duration::from_secs(6)), AT_MOST_ONCE), None, "6 s is within the bound");
    let story = shortest_story(skewed(Duration::from_secs(7)), AT_MOST_ONCE);
    assert!(story.iter().any(|line| line.contains("take over")), "{story:#?}");
    assert!(!story.iter().any(|line| line.contains("stalls")), "{story:#?}");
}

#[test]
fn a_server_clock_a_lease_ahead_takes_over_a_renewing_holder() {
    // Goal: a server whose clock runs a whole lease ahead (variant skewed-lease) takes over
    // the claim of a running handler that renews on schedule: separate mode pays twice
    // (G1), where a 2 s skew holds. Atomic mode holds G1 even then: the fence refuses the
    // old holder's completion and its pending write rolls back.
    let story = assert_found(skewed(Duration::from_secs(2)), Variant::SkewedLease, AT_MOST_ONCE);
    assert!(story.iter().any(|line| line.contains("turns out slow")), "{story:#?}");
    assert!(story.iter().any(|line| line.contains("take over")), "{story:#?}");
    assert!(!story.iter().any(|line| line.contains("stalls")), "{story:#?}");
    let atomic = Config { mode: Mode::Atomic, variant: Variant::SkewedLease, ..skewed(Duration::ZERO) };
    assert_eq!(counterexample(atomic, AT_MOST_ONCE), None, "fences keep atomic mode's G1 under any skew");
}

#[test]
fn a_purge_whose_horizon_runs_ahead_removes_a_running_handlers_claim() {
    // Goal: the store's purge may run while a claim is in flight; at the server's own time
    // it removes nothing whose time is not over. A purge passed a horizon a retention and a
    // lease ahead (variant purge-in-flight) removes the claim of a running handler, whose
    // lease is valid. The path is pinned.
    let config = Config { purges: 1, ..small() };
    let story = assert_found(config, Variant::PurgeInFlight, PURGE_WAITS_FOR_EXPIRY);
    let expected = [
        "1. client 1 (alice) sends POST /payments key=k1 amount=100 (deadline t=30s): attempt 1 of 20 to server 1",
        "2. server 1 receives POST /payments key=k1 amount=100 from client 1 (alice) (attempt 1); the store \
         decides: execute under fence f1 (lease until t=10s)",
        "3. server 1 runs the store's purge of expired records at t=0s (its clock): 1 record(s) removed",
    ];
    assert_eq!(story, expected);
}
