//! A run's trace does not depend on what else the process ran before it or beside it, so a
//! sweep's result does not depend on its threads (`idem_sim::sweep`, `idem sim --threads`)
//! and a failing seed replays alone (`idem sim --seed N`).
//!
//! The trap this pins: tokio numbers tasks from one process-wide counter and a runtime
//! shuts its tasks down in an order keyed by that number. When turmoil drops a crashed
//! host's runtime, any side effect of the drop order (a FIN per dropped socket, each drawing
//! its latency from the simulation's random stream) would make the trace depend on how many
//! tasks the process had spawned before: on the seeds a thread ran earlier, and on the
//! other threads.

use idem_sim::{RunReport, Scenario, Variant};

/// Spawns `count` tasks on a throwaway runtime: moves tokio's process-wide task numbering on.
fn spawn_tasks(count: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime builds");
    runtime.block_on(async {
        for _ in 0..count {
            tokio::spawn(async {}).await.expect("an empty task ends");
        }
    });
}

/// The first line where two traces differ, for the failure message.
fn first_difference(one: &RunReport, two: &RunReport) -> String {
    let (a, b) = (one.trace.lines(), two.trace.lines());
    let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    format!("event {at}:\n  first:  {:?}\n  second: {:?}", a.get(at), b.get(at))
}

#[test]
fn a_run_does_not_depend_on_the_tasks_spawned_before_it() {
    // Goal: each seed gives one trace whatever tokio's task numbering stands at when it
    // starts (all four residues of the runtime's four task shards are tried). Seeds of the
    // scenarios whose hosts crash and bounce with connections open.
    for scenario in [Scenario::Default, Scenario::Separate] {
        for seed in 240..260 {
            let reference = idem_sim::run(seed, scenario, Variant::Correct);
            for shift in 1..4 {
                spawn_tasks(shift);
                let shifted = idem_sim::run(seed, scenario, Variant::Correct);
                assert!(
                    reference.trace.lines() == shifted.trace.lines(),
                    "{scenario} seed {seed} changed after {shift} more task(s) spawned before it, at {}",
                    first_difference(&reference, &shifted)
                );
                assert_eq!(reference.coverage, shifted.coverage);
            }
        }
    }
}

#[test]
fn a_sweep_on_two_threads_sums_what_one_thread_sums() {
    // Goal: `sweep` over the same seeds on one thread and on two gives the same totals
    // (each thread runs other seeds before each seed, and runs beside the other thread).
    for scenario in [Scenario::Default, Scenario::Separate] {
        let one = idem_sim::sweep(200..300, scenario, Variant::Correct, 1, &|_| {});
        let two = idem_sim::sweep(200..300, scenario, Variant::Correct, 2, &|_| {});
        eprintln!("{scenario}: {} runs, coverage {:?}", one.runs, one.coverage);
        assert_eq!(one.coverage, two.coverage, "{scenario}");
        assert_eq!(one.expected, two.expected, "{scenario}");
        assert_eq!(one.simulated, two.simulated, "{scenario}");
        assert_eq!(one.failing_seeds(), two.failing_seeds(), "{scenario}");
    }
}
