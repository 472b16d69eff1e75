//! What a run found, and what a sweep of runs sums to.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use idem_sim::Violation;
use idem_sim::external::Checked;

use crate::faults::{FaultKind, Scheduled};
use crate::{Config, StoreKind};

/// One seed's run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// The store.
    pub store: StoreKind,
    /// Replicas.
    pub replicas: usize,
    /// The faults drawn, as planned (each was injected: the fault thread runs them all,
    /// late rather than never).
    pub faults: Vec<Scheduled>,
    /// Take-overs of lapsed claims the replicas logged.
    pub takeovers: u64,
    /// Kills and pauses that struck a replica while a request was in flight on it.
    pub struck_busy: u64,
    /// Replica starts that failed and were tried again, with the last line of each
    /// (e.g. `idem serve` exiting while PostgreSQL is still starting up).
    pub failed_starts: Vec<String>,
    /// Broken guarantees, each with its story.
    pub violations: Vec<Violation>,
    /// Counterexamples the mode does not exclude (Redis, separate mode: a second payment
    /// for one key after a lapsed lease, a crash between the row and the record, or lost
    /// records); counted, not failures.
    pub expected: Vec<Violation>,
    /// The history, one event a line.
    pub trace: Vec<String>,
    /// How long the run took.
    pub wall: Duration,
    /// The command that runs this seed again.
    pub replay: String,
}

/// What the replicas' logs and the fault thread counted in a run.
#[derive(Debug, Clone)]
pub(crate) struct Counts {
    pub(crate) takeovers: u64,
    pub(crate) struck_busy: u64,
    pub(crate) failed_starts: Vec<String>,
}

impl RunReport {
    pub(crate) fn new(
        seed: u64,
        config: &Config,
        faults: Vec<Scheduled>,
        counts: Counts,
        checked: Checked,
        trace: Vec<String>,
        wall: Duration,
    ) -> RunReport {
        let replay = format!(
            "idem chaos --store {} --seeds {seed}..{} --replicas {} --faults {} --trace",
            config.store,
            seed + 1,
            config.replicas,
            config.faults
        );
        RunReport {
            seed,
            store: config.store,
            replicas: config.replicas,
            faults,
            takeovers: counts.takeovers,
            struck_busy: counts.struck_busy,
            failed_starts: counts.failed_starts,
            violations: checked.violations,
            expected: checked.expected,
            trace,
            wall,
            replay,
        }
    }

    /// Whether every guarantee held.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Faults injected, by kind.
    #[must_use]
    pub fn faults_by_kind(&self) -> BTreeMap<FaultKind, u64> {
        let mut counts = BTreeMap::new();
        for scheduled in &self.faults {
            *counts.entry(scheduled.fault.kind()).or_insert(0) += 1;
        }
        counts
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "passed" } else { "FAILED" };
        writeln!(
            f,
            "seed {} on {} ({} replicas): {verdict} in {:.1} s",
            self.seed,
            self.store,
            self.replicas,
            self.wall.as_secs_f64()
        )?;
        for scheduled in &self.faults {
            writeln!(f, "  fault at {:>6} ms: {}", scheduled.at.as_millis(), scheduled.fault)?;
        }
        writeln!(
            f,
            "  take-overs logged: {}; faults that struck a request in flight: {}",
            self.takeovers, self.struck_busy
        )?;
        for why in &self.failed_starts {
            writeln!(f, "  a replica start failed and was tried again: {why}")?;
        }
        for expected in &self.expected {
            writeln!(
                f,
                "  expected in separate mode: {} for {}: {}",
                expected.guarantee, expected.subject, expected.detail
            )?;
        }
        for violation in &self.violations {
            write!(f, "  {violation}")?;
        }
        if !self.passed() {
            writeln!(f, "  replay: {}", self.replay)?;
            writeln!(f, "  (a seed replays its workload and faults, not the timing of real processes)")?;
        }
        Ok(())
    }
}

/// A sweep's totals.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Runs.
    pub runs: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Take-overs logged.
    pub takeovers: u64,
    /// Kills and pauses that struck a replica with a request in flight.
    pub struck_busy: u64,
    /// Replica starts that failed and were tried again.
    pub failed_starts: u64,
    /// Runs with a violation.
    pub failed_seeds: Vec<u64>,
    /// Violations, by guarantee.
    pub violations: BTreeMap<&'static str, u64>,
    /// Expected counterexamples (separate mode).
    pub expected: u64,
    /// Of those, the ones in runs where Redis lost its data (every record forgotten).
    pub expected_after_data_loss: u64,
    /// Wall time over every run.
    pub wall: Duration,
}

impl Summary {
    /// Adds one run.
    pub fn add(&mut self, report: &RunReport) {
        self.runs += 1;
        for (kind, count) in report.faults_by_kind() {
            *self.faults.entry(kind).or_insert(0) += count;
        }
        self.takeovers += report.takeovers;
        self.struck_busy += report.struck_busy;
        self.failed_starts += report.failed_starts.len() as u64;
        if !report.passed() {
            self.failed_seeds.push(report.seed);
        }
        for violation in &report.violations {
            *self.violations.entry(violation.guarantee).or_insert(0) += 1;
        }
        self.expected += report.expected.len() as u64;
        if report.faults.iter().any(|scheduled| scheduled.fault.kind() == FaultKind::RedisLoseData) {
            self.expected_after_data_loss += report.expected.len() as u64;
        }
        self.wall += report.wall;
    }

    /// The summary table, for `store`.
    #[must_use]
    pub fn table(&self, store: StoreKind) -> String {
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line(format!("runs                              {}", self.runs));
        line(format!("wall seconds                      {:.1}", self.wall.as_secs_f64()));
        line("faults injected".to_owned());
        for kind in FaultKind::of_store(store) {
            line(format!("  {:32}{:>6}", kind.name(), self.faults.get(kind).copied().unwrap_or(0)));
        }
        line(format!("  (faults that struck a request in flight: {})", self.struck_busy));
        line(format!("take-overs                        {}", self.takeovers));
        line(format!("replica starts failed, tried again {}", self.failed_starts));
        let total: u64 = self.violations.values().sum();
        line(format!("violations                        {total}"));
        for (guarantee, count) in &self.violations {
            line(format!("  {guarantee:32}{count:>6}"));
        }
        if store == StoreKind::Redis {
            line(format!("expected (separate mode)          {}", self.expected));
            line(format!("  in runs where Redis lost its data {}", self.expected_after_data_loss));
        }
        line(format!("failed runs                       {}", self.failed_seeds.len()));
        out
    }
}
