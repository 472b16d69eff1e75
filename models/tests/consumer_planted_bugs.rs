//! Each planted consumer bug is found: the checker reports a counterexample for the
//! property the bug breaks, with a story naming the broker events that matter, and the
//! correct consumer holds that property in the same configuration. Also separate mode's
//! G1 window, which is a limit SPEC states, not a bug.

use idem_model::consumer::properties::{AT_MOST_ONCE, NO_EARLY_ACK};
use idem_model::consumer::{BrokerKind, ConsumerConfig, ConsumerFaults, ConsumerModel, ConsumerVariant};
use idem_model::{Mode, Search, Strategy};
use stateright::{Checker, Model};

const NO_FAULTS: ConsumerFaults =
    ConsumerFaults { crashes: 0, stalls: 0, lost_acks: 0, timeouts: 0, outages: 0, failures: 0 };

/// One consumer, one delivery at a time, `m1` published once, atomic mode, no faults.
fn small() -> ConsumerConfig {
    ConsumerConfig {
        consumers: 1,
        in_flight_max: 1,
        messages: 1,
        duplicate_publish: false,
        mismatch_publish: false,
        mode: Mode::Atomic,
        broker: BrokerKind::AckWait,
        faults: NO_FAULTS,
        handler_attempts_max: None,
        variant: ConsumerVariant::Correct,
    }
}

fn model(config: ConsumerConfig) -> ConsumerModel {
    config.into_model().expect("the test configurations are within bounds")
}

/// Whether the checker finds a counterexample for `property` in `config`.
fn violated(config: ConsumerConfig, property: &'static str) -> bool {
    model(config).checker().threads(2).spawn_dfs().join().discovery(property).is_some()
}

/// The shortest counterexample for `property` in `config`, as a story.
fn shortest_story(config: ConsumerConfig, property: &'static str) -> Vec<String> {
    let model = model(config);
    let found = model.clone().checker().spawn_bfs().join().discovery(property);
    let path = found.unwrap_or_else(|| panic!("{property:?} is violated"));
    let shortest = idem_model::shortest_consumer_discovery(&model, property, path.clone().into_actions().len());
    idem_model::consumer_story(&model, shortest.as_ref().unwrap_or(&path))
}

/// Asserts that `variant` breaks `property` in `config` and the correct consumer does not;
/// returns the shortest story.
fn assert_found(config: ConsumerConfig, variant: ConsumerVariant, property: &'static str) -> Vec<String> {
    assert!(!violated(config.clone(), property), "the correct consumer holds {property:?}");
    shortest_story(ConsumerConfig { variant, ..config }, property)
}

/// The index of the first line containing `text`.
fn line_with(story: &[String], text: &str) -> usize {
    story.iter().position(|line| line.contains(text)).unwrap_or_else(|| panic!("no line with {text:?}: {story:#?}"))
}

#[test]
fn acking_before_the_completion_acks_a_message_whose_side_effect_is_not_committed() {
    // Goal: a consumer that acks when its handler returns acks while the side effect is
    // still pending in the claim's transaction (A1); a crash then would lose the message
    // with nothing done. The path is pinned.
    let story = assert_found(small(), ConsumerVariant::AckBeforeCompletion, NO_EARLY_ACK);
    let expected = [
        "1. the broker delivers copy 1 (m1 {\"amount\":100}) to consumer 1 (delivery 1); the store decides: execute \
         under fence f1 (lease until t=10s)",
        "2. consumer 1 writes the side effect of m1 {\"amount\":100} in its open transaction (pending until the \
         completion commits); consumer 1 acks copy 1 (m1 {\"amount\":100})",
    ];
    assert_eq!(story, expected);
}

#[test]
fn a_dedup_record_written_outside_the_side_effects_transaction_runs_twice_after_a_crash() {
    // Goal: the hand-rolled inbox (side effect committed, dedup record later, apart) loses
    // to a crash between the two: the copy comes back after its ack deadline, the lapsed
    // claim is taken over and the side effect runs again (G1). Atomic mode, where the side
    // effect commits with the completion, holds. The path is pinned.
    let config = ConsumerConfig { faults: ConsumerFaults { crashes: 1, ..NO_FAULTS }, ..small() };
    let story = assert_found(config, ConsumerVariant::DedupOutsideTransaction, AT_MOST_ONCE);
    let expected = [
        "1. the broker delivers copy 1 (m1 {\"amount\":100}) to consumer 1 (delivery 1); the store decides: execute \
         under fence f1 (lease until t=10s)",
        "2. consumer 1 runs the side effect of m1 {\"amount\":100} on its own (outside the claim's transaction): the \
         ledger now holds 1 side effect(s) for m1",
        "3. consumer 1 crashes and restarts, losing its handler(s) for m1 {\"amount\":100}",
        "4. at t=13.333s the ack deadline of copy 1 (m1 {\"amount\":100}) passes: the broker redelivers it to \
         consumer 1 (delivery 2); the store decides: take over the lapsed claim, execute under fence f2 (f1 is \
         stale now)",
        "5. consumer 1 runs the side effect of m1 {\"amount\":100} on its own (outside the claim's transaction): the \
         ledger now holds 2 side effect(s) for m1",
    ];
    assert_eq!(story, expected);
}

#[test]
fn a_dedup_record_apart_runs_twice_after_a_channel_close_too() {
    // Goal: on a RabbitMQ-like broker the crash requeues the copy at once; it meets the
    // crashed holder's valid lease and is naked, and once the lease lapsed it is taken
    // over and runs again (G1).
    let config = ConsumerConfig {
        broker: BrokerKind::ChannelClose,
        faults: ConsumerFaults { crashes: 1, ..NO_FAULTS },
        ..small()
    };
    let story = assert_found(config, ConsumerVariant::DedupOutsideTransaction, AT_MOST_ONCE);
    let requeued = line_with(&story, "its channel closes and the broker requeues copy 1");
    let naked =
        line_with(&story, "in flight elsewhere; consumer 1 naks copy 1 (m1 {\"amount\":100}) with a delay of 10 s");
    let taken = line_with(&story, "take over the lapsed claim");
    assert!(requeued < naked && naked < taken, "{story:#?}");
    assert!(story.last().is_some_and(|line| line.contains("holds 2 side effect(s) for m1")), "{story:#?}");
}

#[test]
fn check_then_act_runs_a_duplicate_on_two_racing_consumers() {
    // Goal: a consumer that looks the record up, runs if absent and writes the record only
    // after, lets two consumers that each get one copy of a duplicate publish both run it
    // (G1); the shipped claim makes the second one conflict instead.
    let config = ConsumerConfig { consumers: 2, duplicate_publish: true, ..small() };
    let story = assert_found(config, ConsumerVariant::CheckThenAct, AT_MOST_ONCE);
    let first = line_with(&story, "to consumer 1 (delivery 1); the store decides: execute under fence");
    let second = line_with(&story, "to consumer 2 (delivery 1); the store decides: execute under fence");
    for decided in [first, second] {
        assert!(story[decided].contains("but the claim is never written (check-then-act)"), "{story:#?}");
    }
    assert!(first.max(second) < line_with(&story, "completes"), "both decide before either records: {story:#?}");
    assert_eq!(story.iter().filter(|line| line.contains("writes the side effect")).count(), 2, "{story:#?}");
    assert!(story.last().is_some_and(|line| line.contains("accepted")), "{story:#?}");
}

#[test]
fn separate_mode_reports_its_at_most_once_window_and_nothing_else() {
    // Goal: SPEC's separate mode, not a bug: a side effect that committed before a crash
    // runs again after the take-over (G1), on both broker kinds; every other property
    // (acks after completion, mismatches, fences, progress) still holds.
    for broker in [BrokerKind::AckWait, BrokerKind::ChannelClose] {
        let separate = ConsumerConfig {
            mode: Mode::Separate,
            broker,
            duplicate_publish: true,
            mismatch_publish: true,
            faults: ConsumerFaults { crashes: 1, ..NO_FAULTS },
            ..small()
        };
        let search = Search { strategy: Strategy::Dfs, symmetry: true, threads: 2, depth_max: None };
        let mut checker = idem_model::spawn_consumer(model(separate.clone()), search).expect("DFS allows symmetry");
        for handle in checker.handles() {
            handle.join().expect("the checker's threads do not panic");
        }
        let verdicts = idem_model::consumer_verdicts(&checker, false);
        let broken: Vec<_> = verdicts.iter().filter(|v| v.is_violation()).map(|v| v.property).collect();
        assert_eq!(broken, [AT_MOST_ONCE], "{broker:?}");
        let story = shortest_story(separate, AT_MOST_ONCE);
        let taken = line_with(&story, "take over the lapsed claim");
        assert!(line_with(&story, "crashes") < taken, "{story:#?}");
        assert!(
            story.last().is_some_and(|line| line.contains("(separate mode): the ledger now holds 2")),
            "{story:#?}"
        );
    }
}
