//! What to check: how many actors, which faults, which mode, which variant of the store.

use std::fmt;
use std::str::FromStr;

/// At most this many clients, servers or operations per client: the state space grows
/// exponentially with each, and these bounds already take minutes.
pub const ACTORS_MAX: u8 = 4;
/// At most this many faults of one kind (crashes, lapses, failures, resends, network faults).
pub const FAULTS_MAX: u8 = 4;

/// How the business side effect commits relative to the completion (SPEC, "Modes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Side effect and completion commit in one fenced transaction.
    Atomic,
    /// The side effect commits on its own, before the (fenced) completion.
    Separate,
}

/// Which store/server code runs: the correct one, or one with a planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Calls idem-core's transitions straight.
    Correct,
    /// Check-then-act: decides with `claim` but never writes the claim, so two requests
    /// can both see "absent" and both execute.
    NoClaim,
    /// Completes with the record's current fence instead of the handler's own.
    NoFenceCheck,
    /// Looks records up by key alone, as if every caller were the same principal.
    UnscopedKeys,
    /// Passes the stored fingerprint instead of the request's, so misuse goes unnoticed.
    NoFingerprintCheck,
    /// Draws fences from a per-record counter that starts again after a release.
    FenceReuse,
}

/// How messages travel between clients and servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetworkKind {
    /// Any order, and a message may be delivered twice (`network_faults` times in all).
    Duplicating,
    /// First in, first out per client-server pair; nothing lost or duplicated.
    Ordered,
    /// Any order, and a message may be lost (`network_faults` times in all).
    Lossy,
}

/// Why a name or a configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The name is not one of the known values.
    #[error("unknown {what} {given:?}; expected one of: {expected}")]
    UnknownName {
        /// What was being named (mode, variant, network).
        what: &'static str,
        /// The name given.
        given: String,
        /// The accepted names, comma-separated.
        expected: &'static str,
    },
    /// A count is outside its bounds.
    #[error("{what} must be between {min} and {max}, got {given}")]
    OutOfRange {
        /// The option.
        what: &'static str,
        /// The value given.
        given: u8,
        /// The smallest value accepted.
        min: u8,
        /// The largest value accepted.
        max: u8,
    },
}

/// A configuration of the model; [`Config::into_model`] turns it into a checkable model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Clients, each its own principal (alice, bob, carol, dave).
    pub clients: u8,
    /// Server replicas sharing the store.
    pub servers: u8,
    /// Logical operations per client; operation `n` uses key `k<n>`, so different
    /// principals use the same key strings.
    pub ops_per_client: u8,
    /// Client 1 also sends a request that reuses key `k1` with a different amount.
    pub key_reuse: bool,
    /// Server crashes (a crash loses the server's running handlers; it restarts at once).
    pub crashes: u8,
    /// Lease lapses while the claim's holder is still running (a slow handler).
    pub lapses: u8,
    /// Handler failures before the side effect (the claim is released, 500 answered).
    pub failures: u8,
    /// Timer resends per operation while an earlier send may still be in flight.
    pub resends: u8,
    /// How the network behaves.
    pub network: NetworkKind,
    /// Duplicate deliveries (duplicating network) or losses (lossy network) in all.
    pub network_faults: u8,
    /// Atomic or separate side effects.
    pub mode: Mode,
    /// Correct store code or a planted bug.
    pub variant: Variant,
}

impl Default for Config {
    /// The README's configuration: 2 clients, 2 servers, 1 operation each, a duplicating
    /// network, 1 crash, 1 lease lapse, atomic mode, the correct store.
    fn default() -> Config {
        Config {
            clients: 2,
            servers: 2,
            ops_per_client: 1,
            key_reuse: false,
            crashes: 1,
            lapses: 1,
            failures: 0,
            resends: 1,
            network: NetworkKind::Duplicating,
            network_faults: 1,
            mode: Mode::Atomic,
            variant: Variant::Correct,
        }
    }
}

impl Config {
    /// Checks the counts against their bounds.
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] naming the first count out of bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks = [
            ("clients", self.clients, 1, ACTORS_MAX),
            ("servers", self.servers, 1, ACTORS_MAX),
            ("operations per client", self.ops_per_client, 1, ACTORS_MAX),
            ("crashes", self.crashes, 0, FAULTS_MAX),
            ("lapses", self.lapses, 0, FAULTS_MAX),
            ("failures", self.failures, 0, FAULTS_MAX),
            ("resends", self.resends, 0, FAULTS_MAX),
            ("network faults", self.network_faults, 0, FAULTS_MAX),
        ];
        for (what, given, min, max) in checks {
            if given < min || given > max {
                return Err(ConfigError::OutOfRange { what, given, min, max });
            }
        }
        Ok(())
    }

    /// The most requests one operation sends (first send, timer resends, retries). G6 is
    /// checked within this bound: every fault can cost an operation at most two extra sends.
    #[must_use]
    pub fn sends_max(&self) -> u8 {
        let faults = self.crashes + self.lapses + self.failures + self.network_faults;
        1 + self.resends + 2 * faults
    }
}

macro_rules! named {
    ($ty:ident, $what:literal, $( $variant:ident = $name:literal ),+ $(,)?) => {
        impl $ty {
            /// Every accepted name, comma-separated.
            pub const NAMES: &'static str = concat!($( $name, ", " ),+);

            /// Every value, in the order of [`Self::NAMES`].
            pub const ALL: &'static [$ty] = &[$( $ty::$variant ),+];

            /// The value's name, as the command line takes it.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $( $ty::$variant => $name ),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $ty {
            type Err = ConfigError;

            fn from_str(given: &str) -> Result<$ty, ConfigError> {
                match given {
                    $( $name => Ok($ty::$variant), )+
                    _ => Err(ConfigError::UnknownName {
                        what: $what,
                        given: given.to_owned(),
                        expected: $ty::NAMES.trim_end_matches(", "),
                    }),
                }
            }
        }
    };
}

named!(Mode, "mode", Atomic = "atomic", Separate = "separate");
named!(
    Variant,
    "variant",
    Correct = "correct",
    NoClaim = "no-claim",
    NoFenceCheck = "no-fence-check",
    UnscopedKeys = "unscoped-keys",
    NoFingerprintCheck = "no-fingerprint-check",
    FenceReuse = "fence-reuse",
);
named!(NetworkKind, "network", Duplicating = "duplicating", Ordered = "ordered", Lossy = "lossy");
