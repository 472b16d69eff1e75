//! The consumer configuration checked completely: every guarantee holds on both broker
//! kinds, every interesting path is reachable, the state graph is acyclic (so `eventually`
//! is sound), and the state counts are pinned so that a change to the model, to idem-core's
//! store step or to its `consume` rules cannot slip by unnoticed.

use std::collections::HashMap;
use std::num::NonZeroU32;

use idem_model::consumer::properties::{self, CONFLICT_NAKED, DEAD_LETTER, TAKE_OVER};
use idem_model::consumer::{BrokerKind, ConsumerConfig, ConsumerFaults, ConsumerModel, ConsumerState, ConsumerVariant};
use idem_model::{ConsumerChecker, Mode, Search, Strategy};
use stateright::{Checker, Model};

const NO_FAULTS: ConsumerFaults =
    ConsumerFaults { crashes: 0, stalls: 0, lost_acks: 0, timeouts: 0, outages: 0, failures: 0 };

/// `consumers` consumers taking one delivery at a time; `m1` published twice with one
/// payload and once with another; atomic mode; no faults unless a test adds them.
fn config(consumers: u8, broker: BrokerKind, faults: ConsumerFaults) -> ConsumerConfig {
    ConsumerConfig {
        consumers,
        in_flight_max: 1,
        messages: 1,
        duplicate_publish: true,
        mismatch_publish: true,
        mode: Mode::Atomic,
        broker,
        faults,
        handler_attempts_max: None,
        variant: ConsumerVariant::Correct,
    }
}

fn model(config: ConsumerConfig) -> ConsumerModel {
    config.into_model().expect("the test configurations are within bounds")
}

/// DFS on both cores with symmetry reduction, as `idem check --consumer` runs by default.
fn check(config: ConsumerConfig) -> ConsumerChecker {
    let search = Search { strategy: Strategy::Dfs, symmetry: true, threads: 2, depth_max: None };
    let mut checker = idem_model::spawn_consumer(model(config), search).expect("DFS allows symmetry");
    for handle in checker.handles() {
        handle.join().expect("the checker's threads do not panic");
    }
    checker
}

/// Asserts that every guarantee holds (no counterexample, printed as a story if one exists).
fn assert_guarantees(checker: &ConsumerChecker) {
    let violated: Vec<_> =
        idem_model::consumer_verdicts(checker, false).into_iter().filter(|v| v.is_violation()).collect();
    assert!(violated.is_empty(), "{violated:#?}");
    for property in properties::guarantees() {
        checker.assert_no_discovery(property);
    }
}

/// Asserts that every reachability property the broker kind can reach is reached.
fn assert_every_path_reached(checker: &ConsumerChecker, broker: BrokerKind) {
    for property in properties::reachable_with(broker) {
        checker.assert_any_discovery(property);
    }
}

#[test]
fn jetstream_like_broker_with_a_crash_a_stall_and_a_lost_ack_holds_and_reaches_every_path() {
    // Goal: two consumers racing on a duplicate and a reused key, with a crash (also
    // between commit and ack), a stalled handler whose lease and ack deadline pass, and a
    // lost ack: one side effect, acks only after the completion, only the mismatch
    // dead-lettered, every copy settled; every AckWait path (redelivery after the ack
    // deadline, take-over, replay, conflict nak, dead letter, lost ack, crash after commit,
    // progress moving a deadline) is reached.
    let faults = ConsumerFaults { crashes: 1, stalls: 1, lost_acks: 1, ..NO_FAULTS };
    let checker = check(config(2, BrokerKind::AckWait, faults));
    assert_guarantees(&checker);
    assert_every_path_reached(&checker, BrokerKind::AckWait);
    assert_eq!(checker.unique_state_count(), 17_672);
}

#[test]
fn rabbitmq_like_broker_with_a_crash_a_lost_ack_and_a_closed_channel_holds_and_reaches_every_path() {
    // Goal: the same under channel-close redelivery: a crash or a lost ack closes the
    // channel and requeues its copies at once (they meet the crashed holder's valid lease
    // and are naked until it lapses), and the consumer timeout closes a live consumer's
    // channel under its running handler (its ack is then stale and fails).
    let faults = ConsumerFaults { crashes: 1, lost_acks: 1, timeouts: 1, ..NO_FAULTS };
    let checker = check(config(2, BrokerKind::ChannelClose, faults));
    assert_guarantees(&checker);
    assert_every_path_reached(&checker, BrokerKind::ChannelClose);
    assert_eq!(checker.unique_state_count(), 2_474);
}

#[test]
fn store_outages_and_handler_failures_hold_on_both_brokers() {
    // Goal: a store outage at a claim, a renewal, a completion or a release, and a handler
    // failure before or after its write (released, then naked), with a crash, on one
    // consumer running two deliveries at once: nothing runs without a claim, a failed
    // completion is never acked, and every copy is settled, on both broker kinds.
    let faults = ConsumerFaults { crashes: 1, outages: 1, failures: 1, ..NO_FAULTS };
    let mut counts = Vec::new();
    for broker in [BrokerKind::AckWait, BrokerKind::ChannelClose] {
        let checker = check(ConsumerConfig { in_flight_max: 2, ..config(1, broker, faults) });
        assert_guarantees(&checker);
        for reachable in [TAKE_OVER, CONFLICT_NAKED, DEAD_LETTER] {
            checker.assert_any_discovery(reachable);
        }
        counts.push(checker.unique_state_count());
    }
    assert_eq!(counts, [46_441, 30_672]);
}

#[test]
fn a_handler_that_gives_up_is_dead_lettered_within_the_bound() {
    // Goal: with handler attempts bounded at 1, a failing handler's message is
    // dead-lettered (`handler-gave-up`): the one dead letter besides a mismatch the
    // property allows, and a settled copy for G6. Without the bound the same failure is
    // naked and runs again.
    let faults = ConsumerFaults { failures: 1, ..NO_FAULTS };
    let unique =
        ConsumerConfig { mismatch_publish: false, duplicate_publish: false, ..config(1, BrokerKind::AckWait, faults) };
    let bounded = ConsumerConfig { handler_attempts_max: NonZeroU32::new(1), ..unique.clone() };
    let checker = check(bounded);
    assert_guarantees(&checker);
    checker.assert_any_discovery(DEAD_LETTER);
    let checker = check(unique);
    assert_guarantees(&checker);
    assert_eq!(checker.discovery(DEAD_LETTER), None, "unbounded attempts never dead-letter a unique message");
}

#[test]
fn two_message_ids_stay_apart() {
    // Goal: m1 and m2 on one consumer running both at once, with a crash and a stall:
    // each id's side effect happens once, neither's record answers for the other.
    let faults = ConsumerFaults { crashes: 1, stalls: 1, ..NO_FAULTS };
    let two = ConsumerConfig {
        messages: 2,
        in_flight_max: 2,
        mismatch_publish: false,
        ..config(1, BrokerKind::AckWait, faults)
    };
    let checker = check(two);
    assert_guarantees(&checker);
    checker.assert_any_discovery(TAKE_OVER);
    assert_eq!(checker.unique_state_count(), 195_617);
}

#[test]
fn state_graph_has_no_cycles_so_eventually_is_sound() {
    // Goal: every path ends in a state without successors, which is what makes
    // stateright's `eventually` (checked at terminal states only) a sound check of G6.
    let faults = ConsumerFaults { crashes: 1, stalls: 1, lost_acks: 1, outages: 1, ..NO_FAULTS };
    assert_acyclic(&model(ConsumerConfig { in_flight_max: 2, ..config(1, BrokerKind::AckWait, faults) }));
    let faults = ConsumerFaults { crashes: 1, stalls: 1, lost_acks: 1, timeouts: 1, ..NO_FAULTS };
    assert_acyclic(&model(ConsumerConfig { in_flight_max: 2, ..config(1, BrokerKind::ChannelClose, faults) }));
}

/// Walks every state of `model` depth first and panics on a state met again on its own path.
fn assert_acyclic(model: &ConsumerModel) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    let mut marks: HashMap<ConsumerState, Mark> = HashMap::new();
    let init = model.init_states().remove(0);
    let mut stack: Vec<(ConsumerState, Vec<ConsumerState>)> = vec![(init.clone(), model.next_states(&init))];
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
    let counted = model.clone().checker().spawn_bfs().join().unique_state_count();
    assert_eq!(marks.len(), counted);
}

#[test]
fn the_default_configuration_is_within_bounds_and_out_of_range_counts_are_refused() {
    // Goal: `idem check --consumer`'s default builds, and bad counts are errors, not panics.
    assert!(ConsumerConfig::default().into_model().is_ok());
    let three = ConsumerConfig { consumers: 3, ..ConsumerConfig::default() };
    let error = three.into_model().expect_err("three consumers are out of range");
    assert_eq!(error.to_string(), "consumers must be between 1 and 2, got 3");
    let unknown = "kafka".parse::<BrokerKind>().expect_err("not a broker kind");
    assert!(unknown.to_string().contains("ack-wait, channel-close"), "{unknown}");
}
