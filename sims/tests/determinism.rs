//! The same seed gives the same run, byte for byte.

use idem_sim::{Scenario, Variant};

#[test]
fn the_same_seed_gives_a_byte_identical_trace() {
    // Goal: several seeds, each run twice (the second time after other runs, on another
    // thread), give equal traces; different seeds give different ones.
    let seeds = [0, 1, 2, 3, 5, 8, 13, 21];
    let first: Vec<_> = seeds.iter().map(|&seed| idem_sim::run(seed, Scenario::Default, Variant::Correct)).collect();
    let again: Vec<_> = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                seeds
                    .iter()
                    .rev()
                    .map(|&seed| idem_sim::run(seed, Scenario::Default, Variant::Correct))
                    .collect::<Vec<_>>()
            })
            .join()
            .expect("runs do not panic")
    });
    for (one, two) in first.iter().zip(again.iter().rev()) {
        eprintln!("seed {}: trace {:016x}, {} events", one.seed, one.trace.hash(), one.trace.lines().len());
        assert_eq!(one.trace.hash(), two.trace.hash(), "seed {} is not deterministic", one.seed);
        assert_eq!(one.trace.lines(), two.trace.lines());
        assert_eq!(one.coverage, two.coverage);
        assert_eq!(one.faults, two.faults);
    }
    let mut hashes: Vec<u64> = first.iter().map(|report| report.trace.hash()).collect();
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), seeds.len(), "different seeds give different runs");
}

#[test]
fn every_scenario_is_deterministic() {
    // Goal: each scenario (its own hosts, clients and faults) gives the same trace for the
    // same seed, run twice.
    for scenario in Scenario::ALL {
        let one = idem_sim::run(4, scenario, Variant::Correct);
        let two = idem_sim::run(4, scenario, Variant::Correct);
        eprintln!("{scenario}: trace {:016x}, {} events", one.trace.hash(), one.trace.lines().len());
        assert_eq!(one.trace.lines(), two.trace.lines(), "{scenario} is not deterministic");
        assert_eq!(one.coverage, two.coverage);
    }
}
