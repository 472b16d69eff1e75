//! The shipped code over many seeds: every guarantee holds, and the faults reach every
//! path they target.

use idem_sim::{Scenario, Sweep, Variant};

fn report_failures(sweep: &Sweep) {
    for report in &sweep.failures {
        eprintln!("{report}");
    }
}

#[test]
fn two_hundred_seeds_of_the_default_scenario_keep_every_guarantee_and_reach_every_targeted_path() {
    // Goal: CI runs 200 seeds of the default scenario against the shipped code: no
    // violation, and no coverage counter at zero (the faults reach what they target).
    eprintln!(
        "seeds 0..200, scenario default; replay one with: {}",
        idem_sim::replay_command(0, Scenario::Default, Variant::Correct)
    );
    let sweep = idem_sim::sweep(0..200, Scenario::Default, Variant::Correct, 2, &|_| {});
    report_failures(&sweep);
    assert_eq!(sweep.runs, 200);
    assert!(sweep.failures.is_empty(), "failing seeds: {:?}", sweep.failing_seeds());
    eprintln!("coverage: {:?}", sweep.coverage);
    let untested = sweep.coverage.zeros(Scenario::Default);
    assert!(untested.is_empty(), "paths never reached: {untested:?}");
}

#[test]
fn names_parse_and_print_back() {
    // Goal: every scenario and variant name round-trips, and an unknown one names the choices.
    for name in Scenario::NAMES {
        assert_eq!(name.parse::<Scenario>().expect("a known name").to_string(), name);
    }
    for name in Variant::NAMES {
        assert_eq!(name.parse::<Variant>().expect("a known name").to_string(), name);
    }
    let unknown = "nope".parse::<Variant>().expect_err("not a variant");
    assert!(unknown.to_string().contains("stale-answers-own"), "{unknown}");
    assert_eq!(
        idem_sim::replay_command(7, Scenario::Default, Variant::NoClaim),
        "idem sim --seed 7 --scenario default --variant no-claim --trace"
    );
}
