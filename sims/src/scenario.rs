//! What a run simulates: a [`Scenario`] (the world and its settings) and a [`Variant`]
//! (the shipped code, or the shipped code with one planted bug).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A name that is not one of the accepted ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?}; expected one of: {expected}")]
pub struct UnknownName {
    /// "scenario" or "variant".
    pub what: &'static str,
    /// What was given.
    pub given: String,
    /// The accepted names, comma-separated.
    pub expected: String,
}

/// The simulated world. Every scenario runs the shipped router and layer on two replicas,
/// a store host over the simulated network in atomic mode, and three client hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scenario {
    /// The store host keeps its state across a bounce, like a disk (G7 applies).
    #[default]
    Default,
    /// The store host loses its state when it bounces: G1 and G2 are checked per store
    /// lifetime, for keys that did not outlive one.
    VolatileStore,
}

impl Scenario {
    /// Every scenario's name, in [`Scenario::ALL`] order.
    pub const NAMES: [&'static str; 2] = ["default", "volatile-store"];
    /// Every scenario.
    pub const ALL: [Scenario; 2] = [Scenario::Default, Scenario::VolatileStore];

    /// The name used on the command line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Scenario::Default => "default",
            Scenario::VolatileStore => "volatile-store",
        }
    }

    /// One line saying what it simulates.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Scenario::Default => "2 replicas, a durable store host (atomic mode), 3 clients x 2 streams, 30 s",
            Scenario::VolatileStore => "as default, but a store bounce loses every record and payment",
        }
    }

    pub(crate) fn settings(self) -> Settings {
        Settings { durable_store: self == Scenario::Default, ..Settings::DEFAULT }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = UnknownName;

    fn from_str(given: &str) -> Result<Scenario, UnknownName> {
        Scenario::ALL.into_iter().find(|scenario| scenario.name() == given).ok_or_else(|| UnknownName {
            what: "scenario",
            given: given.to_owned(),
            expected: Scenario::NAMES.join(", "),
        })
    }
}

/// The code under test: the shipped code, or the shipped code with one planted bug, each
/// planted through a part the composition root injects (never compiled into idem-http,
/// idem-core or idem-server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Variant {
    /// The shipped code.
    #[default]
    Correct,
    /// Check-then-act: the store host answers "execute" without writing the claim.
    NoClaim,
    /// The store host runs completions, releases and renewals with the record's current
    /// fence instead of the one presented.
    NoFenceCheck,
    /// The replicas' principal extractor ignores the caller, so keys are shared by everyone.
    UnscopedKeys,
    /// An execution whose claim was taken over answers its own response (the HTTP layer's
    /// rule, planted around the real layer by a handler wrap).
    StaleAnswersOwn,
    /// A volatile store host that lost its state starts its fence counter at f1 again, so
    /// it can issue a fence an execution from before the loss still holds (run it with the
    /// `volatile-store` scenario; a durable host never loses its counter).
    FenceReset,
}

impl Variant {
    /// Every variant's name, in [`Variant::ALL`] order.
    pub const NAMES: [&'static str; 6] =
        ["correct", "no-claim", "no-fence-check", "unscoped-keys", "stale-answers-own", "fence-reset"];
    /// Every variant.
    pub const ALL: [Variant; 6] = [
        Variant::Correct,
        Variant::NoClaim,
        Variant::NoFenceCheck,
        Variant::UnscopedKeys,
        Variant::StaleAnswersOwn,
        Variant::FenceReset,
    ];
    /// The planted bugs.
    pub const BUGS: [Variant; 5] =
        [Variant::NoClaim, Variant::NoFenceCheck, Variant::UnscopedKeys, Variant::StaleAnswersOwn, Variant::FenceReset];

    /// The name used on the command line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Variant::Correct => "correct",
            Variant::NoClaim => "no-claim",
            Variant::NoFenceCheck => "no-fence-check",
            Variant::UnscopedKeys => "unscoped-keys",
            Variant::StaleAnswersOwn => "stale-answers-own",
            Variant::FenceReset => "fence-reset",
        }
    }

    /// One line saying what is planted.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Variant::Correct => "the shipped code",
            Variant::NoClaim => "check-then-act: the store answers execute without writing the claim",
            Variant::NoFenceCheck => {
                "the store completes, releases and renews with the current fence, not the one presented"
            }
            Variant::UnscopedKeys => "keys are not scoped by principal",
            Variant::StaleAnswersOwn => "an execution whose claim was taken over answers its own response",
            Variant::FenceReset => "a volatile store that lost its state issues fences from f1 again",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = UnknownName;

    fn from_str(given: &str) -> Result<Variant, UnknownName> {
        Variant::ALL.into_iter().find(|variant| variant.name() == given).ok_or_else(|| UnknownName {
            what: "variant",
            given: given.to_owned(),
            expected: Variant::NAMES.join(", "),
        })
    }
}

/// A scenario's settings. Times are simulated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) replicas: usize,
    pub(crate) clients: usize,
    pub(crate) streams_per_client: usize,
    pub(crate) ops_per_stream: usize,
    /// The claim lease (renewed every third of it by the layer).
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    pub(crate) durable_store: bool,
    /// Every call from a replica to the store host is cut off after this.
    pub(crate) store_call_timeout: Duration,
    /// Faults stop and every link, host and clock is healthy again (skew stays) from here.
    pub(crate) heal_at: Duration,
    /// Operations are started until this time.
    pub(crate) last_start: Duration,
    /// The clients stay up until this time (a run lasts this long unless an operation
    /// is still going).
    pub(crate) run_for: Duration,
    /// The client's whole budget per submission.
    pub(crate) client_deadline: Duration,
    /// G6: after healing, every operation ends within this (see `check`).
    pub(crate) progress_bound: Duration,
    /// The largest clock skew a replica gets, either way.
    pub(crate) skew_max: Duration,
    /// turmoil's tick: coarse, for speed; message latency is drawn below it and rounded up.
    pub(crate) tick: Duration,
    /// A run that has not ended by this is cut off (and fails G6).
    pub(crate) duration_max: Duration,
}

impl Settings {
    pub(crate) const DEFAULT: Settings = Settings {
        replicas: 2,
        clients: 3,
        streams_per_client: 2,
        ops_per_stream: 4,
        lease: Duration::from_secs(2),
        retention: Duration::from_secs(3600),
        durable_store: true,
        store_call_timeout: Duration::from_millis(300),
        heal_at: Duration::from_secs(15),
        last_start: Duration::from_secs(18),
        run_for: Duration::from_secs(30),
        client_deadline: Duration::from_secs(8),
        // lease + 2 x skew_max (a lapsed claim as two skewed clocks see it) + one whole
        // client deadline + the pause before a resubmission, rounded up.
        progress_bound: Duration::from_secs(13),
        skew_max: Duration::from_millis(500),
        tick: Duration::from_millis(10),
        duration_max: Duration::from_secs(45),
    };
}

// G6's bound must cover a lapsed lease seen through two skewed clocks and a whole client deadline.
const _: () = assert!(
    Settings::DEFAULT.progress_bound.as_millis()
        > Settings::DEFAULT.lease.as_millis()
            + 2 * Settings::DEFAULT.skew_max.as_millis()
            + Settings::DEFAULT.client_deadline.as_millis()
);
// The run ends (the last start, after healing, then the bound) before turmoil would cut it off.
const _: () = assert!(Settings::DEFAULT.last_start.as_millis() >= Settings::DEFAULT.heal_at.as_millis());
const _: () = assert!(
    Settings::DEFAULT.last_start.as_millis() + Settings::DEFAULT.progress_bound.as_millis()
        < Settings::DEFAULT.duration_max.as_millis()
);
