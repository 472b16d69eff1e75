//! What a run reports: the fault mix, the trace, violations, coverage.

use std::fmt;
use std::ops::{Add, AddAssign};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::check::Violation;
use crate::faults::FaultMix;
use crate::history::{Event, Kind, StoreOp};
use crate::{Scenario, Variant};

/// The readable event log of one run; the same seed gives the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    lines: Vec<String>,
}

impl Trace {
    pub(crate) fn new(lines: Vec<String>) -> Trace {
        Trace { lines }
    }

    /// The lines, one event each.
    #[must_use]
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The first 8 bytes of the SHA-256 of the lines (each ended by a newline).
    #[must_use]
    pub fn hash(&self) -> u64 {
        let mut hasher = Sha256::new();
        for line in &self.lines {
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
        }
        let digest = hasher.finalize();
        u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

macro_rules! coverage {
    ($($(#[doc = $doc:literal])* $field:ident: $name:literal,)*) => {
        /// How often a run reached the paths the faults target. Summed over a sweep with `+`;
        /// a sweep whose counter stays at zero did not test that path.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Coverage {
            $($(#[doc = $doc])* pub $field: u64,)*
        }

        impl Coverage {
            /// The counters' names, in [`Coverage::iter`] order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// Each counter with its name.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$(($name, self.$field)),*].into_iter()
            }
        }

        impl Add for Coverage {
            type Output = Coverage;
            fn add(self, other: Coverage) -> Coverage {
                Coverage { $($field: self.$field + other.$field),* }
            }
        }
    };
}

coverage! {
    /// A claim whose lease had lapsed was taken over.
    take_over: "take-over",
    /// A renewal was refused (another claim took over, or the record is gone).
    renewal_refused: "renewal refused",
    /// A completion or release with a fence that is not current was refused.
    stale_completion_refused: "stale completion refused",
    /// A client got a replayed response.
    replay: "replay",
    /// A client got 409 (in progress).
    conflict_409: "409",
    /// A client got 422 (key reused with another body).
    mismatch_422: "422",
    /// A replica crashed while a handler ran on it.
    crash_in_handler: "crash during a handler",
    /// A completion's call to the store failed on the network (outcome unknown).
    partition_during_completion: "partition during completion",
    /// A client got 503 because the store was unreachable.
    store_unavailable_503: "store unreachable answered 503",
}

impl AddAssign for Coverage {
    fn add_assign(&mut self, other: Coverage) {
        *self = *self + other;
    }
}

impl Coverage {
    /// The names of the counters still at zero.
    #[must_use]
    pub fn zeros(&self) -> Vec<&'static str> {
        self.iter().filter(|(_, count)| *count == 0).map(|(name, _)| name).collect()
    }

    pub(crate) fn of(events: &[Event]) -> Coverage {
        let mut coverage = Coverage::default();
        for event in events {
            match &event.kind {
                Kind::Store(store) => match store.op {
                    StoreOp::Claim if store.answer.starts_with("TakeOver") => coverage.take_over += 1,
                    StoreOp::Renew if !store.applied => coverage.renewal_refused += 1,
                    StoreOp::Complete | StoreOp::CompleteInTransaction | StoreOp::Release
                        if !store.applied && store.before.fence().is_some_and(|held| Some(held) != store.presented) =>
                    {
                        coverage.stale_completion_refused += 1;
                    }
                    _ => {}
                },
                Kind::Answer { answer, .. } => match answer.status {
                    409 => coverage.conflict_409 += 1,
                    422 => coverage.mismatch_422 += 1,
                    503 => coverage.store_unavailable_503 += 1,
                    _ if answer.replayed => coverage.replay += 1,
                    _ => {}
                },
                Kind::Fault(text) if text.contains("in a handler") => coverage.crash_in_handler += 1,
                Kind::StoreCallFailed { op: "complete-with-payment" | "complete", .. } => {
                    coverage.partition_during_completion += 1;
                }
                _ => {}
            }
        }
        coverage
    }
}

/// Everything one run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// The code under test.
    pub variant: Variant,
    /// The faults this seed drew.
    pub faults: FaultMix,
    /// The event log (its first lines name the seed and the mix).
    pub trace: Trace,
    /// What the checker found; empty when every guarantee held.
    pub violations: Vec<Violation>,
    /// Which targeted paths the run reached.
    pub coverage: Coverage,
    /// Simulated time the run took.
    pub simulated: Duration,
}

impl RunReport {
    /// Whether every guarantee held.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that replays this run with its trace.
    #[must_use]
    pub fn replay_command(&self) -> String {
        crate::replay_command(self.seed, self.scenario, self.variant)
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "passed" } else { "FAILED" };
        writeln!(
            f,
            "seed {} ({} / {}): {verdict} in {:.1} simulated s, trace {:016x}",
            self.seed,
            self.scenario,
            self.variant,
            self.simulated.as_secs_f64(),
            self.trace.hash()
        )?;
        writeln!(f, "  faults: {}", self.faults)?;
        for violation in &self.violations {
            write!(f, "  {violation}")?;
        }
        if !self.passed() {
            writeln!(f, "  replay: {}", self.replay_command())?;
        }
        Ok(())
    }
}
