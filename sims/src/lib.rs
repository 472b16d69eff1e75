//! Deterministic simulation of the code that ships: the payments server built by
//! idem-server's composition root ([`idem_server::AppBuilder`]), with idem-http's layer,
//! on two replicas, a store host running idem-core's store step over a simulated network,
//! and clients on idem-client, all inside turmoil. The network and the hosts misbehave
//! on purpose, reproducibly from a seed; a checker reads the history afterwards.
//!
//! One run ([`run`]) is independent and deterministic: its own turmoil simulation (seeded),
//! its own ChaCha streams for faults, keys, jitter and handler times, simulated time on
//! every clock, no `std::time`, no OS randomness, and no decision taken in a hash map's
//! iteration order. The same seed gives a byte-identical [`Trace`].
//!
//! The consumer scenarios ([`Scenario::is_consumer`]) build another world: two hosts
//! running the real `idem_consumer::Consumer` against a simulated at-least-once broker
//! (JetStream-like or RabbitMQ-like) and the store host, a publisher whose plan is the
//! checker's oracle, and their own faults ([`ConsumerMix`]) and checks.
//!
//! # Running a sweep from code
//!
//! ```no_run
//! use idem_sim::{Coverage, Scenario, Variant};
//!
//! let mut coverage = Coverage::default();
//! for seed in 0..100 {
//!     let report = idem_sim::run(seed, Scenario::Default, Variant::Correct);
//!     if !report.passed() {
//!         eprintln!("{report}"); // the violations, their stories and the replay command
//!     }
//!     coverage += report.coverage;
//! }
//! let untested = coverage.zeros(Scenario::Default);
//! assert!(untested.is_empty(), "untested paths: {untested:?}");
//! ```
//!
//! [`sweep`] does the same over several threads and sums the results into a [`Sweep`].
//!
//! See `docs/sims.md` for the scenarios, the faults, the checks, and what is not modelled.
//!
//! # Contents
//!
//! * [`Scenario`], [`Variant`]: what to run (both `FromStr`, with `NAMES`).
//! * [`run`], [`RunReport`], [`replay_command`]; [`sweep`], [`Sweep`].
//! * [`external`]: the workload, history and checker for a harness of real processes
//!   (`idem-chaos`).
//! * [`FaultMix`]: the faults a seed drew (a consumer scenario's are a [`ConsumerMix`]). [`Trace`]: the event log. [`Violation`]: a broken
//!   guarantee and its story. [`Coverage`]: which targeted paths were reached.

mod audit;
mod batch_host;
mod batch_tables;
mod check;
mod client;
mod clock;
mod consumer;
mod drive;
pub mod external;
mod faults;
mod glue;
mod history;
mod host_state;
mod hosts;
mod keyspace;
mod lua;
mod memory_host;
mod net;
mod oracle;
mod plan;
mod redis_host;
mod remote;
mod replica;
mod report;
mod run;
mod scenario;
mod store_host;
mod store_protocol;
mod variant;
mod world;

use std::ops::Range;
use std::time::Duration;

pub use check::Violation;
pub use consumer::ConsumerMix;
pub use faults::FaultMix;
pub use report::{Coverage, RunReport, Trace};
pub use scenario::{Scenario, UnknownName};
pub use variant::Variant;

/// Runs one seed of `scenario` with `variant` and checks its history (G1-G8).
#[must_use]
pub fn run(seed: u64, scenario: Scenario, variant: Variant) -> RunReport {
    if scenario.is_consumer() {
        return consumer::run(seed, scenario, variant);
    }
    run::run(seed, scenario, variant)
}

/// The command that replays one seed and prints its trace.
#[must_use]
pub fn replay_command(seed: u64, scenario: Scenario, variant: Variant) -> String {
    format!("idem sim --seed {seed} --scenario {scenario} --variant {variant} --trace")
}

/// What a sweep over many seeds found.
#[derive(Debug, Clone, Default)]
pub struct Sweep {
    /// Seeds run.
    pub runs: u64,
    /// The reports of the seeds that failed, in seed order.
    pub failures: Vec<RunReport>,
    /// Coverage summed over every run.
    pub coverage: Coverage,
    /// Simulated time summed over every run.
    pub simulated: Duration,
    /// Counterexamples the scenario's mode does not exclude (separate mode's G1 window),
    /// summed over every run; not failures.
    pub expected: u64,
}

impl Sweep {
    /// Adds one run.
    pub fn add(&mut self, report: RunReport) {
        self.runs += 1;
        self.coverage += report.coverage;
        self.simulated += report.simulated;
        self.expected += report.expected.len() as u64;
        if !report.passed() {
            self.failures.push(report);
        }
    }

    /// The failing seeds.
    #[must_use]
    pub fn failing_seeds(&self) -> Vec<u64> {
        self.failures.iter().map(|report| report.seed).collect()
    }
}

/// Runs every seed of `seeds` on `threads` threads (at least one) and sums the results;
/// `progress` is called after each run, from the thread that ran it. The result does not
/// depend on the number of threads.
pub fn sweep(
    seeds: Range<u64>,
    scenario: Scenario,
    variant: Variant,
    threads: usize,
    progress: &(dyn Fn(&RunReport) + Sync),
) -> Sweep {
    let threads = threads.max(1) as u64;
    let mut parts: Vec<Sweep> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let seeds = seeds.clone();
                scope.spawn(move || {
                    let mut part = Sweep::default();
                    for seed in seeds.filter(|seed| seed % threads == thread) {
                        let report = run(seed, scenario, variant);
                        progress(&report);
                        part.add(report);
                    }
                    part
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("a simulation run does not panic")).collect()
    });
    let mut total = Sweep::default();
    for part in &mut parts {
        total.runs += part.runs;
        total.coverage += part.coverage;
        total.simulated += part.simulated;
        total.expected += part.expected;
        total.failures.append(&mut part.failures);
    }
    total.failures.sort_by_key(|report| report.seed);
    total
}
