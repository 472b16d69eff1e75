//! What to check: how many actors, which faults, which mode, which client policy, which
//! variant of the store.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// At most this many clients, servers or operations per client: the state space grows
/// exponentially with each, and these bounds already take minutes.
pub const ACTORS_MAX: u8 = 4;
/// At most this many faults of one kind (crashes, lapses, slow handlers, failures, network
/// faults, delays, outages, store crashes).
pub const FAULTS_MAX: u8 = 4;
/// At most this many attempts per operation (idem-client allows 100; the model's state
/// space grows with every attempt, and its serial numbers are bytes).
pub const ATTEMPTS_MAX: u32 = 24;
/// The longest client deadline or attempt timeout the model takes: an hour of logical time.
pub const CLIENT_TIME_MAX: Duration = Duration::from_secs(3600);

/// How long a healthy handler runs at most: a second, what idem-http's 409 `Retry-After`
/// cap ([`idem_http::CONFLICT_RETRY_AFTER_MAX_DEFAULT`]) assumes of requests in flight. A
/// handler that takes longer is the fault `slow` (or `lapses`, if it also stops renewing).
pub const HANDLER_TIME_DEFAULT: Duration = Duration::from_secs(1);

/// How long a slow handler runs at most: two leases, so it lives only by renewing.
pub const SLOW_HANDLER_TIME_DEFAULT: Duration = Duration::from_secs(20);

/// How the business side effect commits relative to the completion (SPEC, "Modes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Side effect and completion commit in one fenced transaction (`op::CompleteInTransaction`).
    Atomic,
    /// The side effect commits on its own, before the fenced completion (`op::Complete`).
    Separate,
}

/// Which store/server code runs: the correct one, or one with a planted bug.
///
/// A bug never copies a rule of idem-core: it tampers with what the server passes to
/// `MemoryState` (the view, the operation's fields, the step before it is committed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Drives idem-core's store step as shipped.
    Correct,
    /// Check-then-act: decides with the claim step but never writes the claim, and later
    /// completes against the record it believes it wrote.
    NoClaim,
    /// Completes with the record's current fence instead of the handler's own.
    NoFenceCheck,
    /// Looks records up by key alone, as if every caller were the same principal.
    UnscopedKeys,
    /// Passes the stored fingerprint instead of the request's, so misuse goes unnoticed.
    NoFingerprintCheck,
    /// Draws fences from a per-record counter that starts again after a release.
    FenceReuse,
    /// Claims with the old 60 s lease: a crashed holder blocks its key for longer than a
    /// client's default budget (G6).
    LongLease,
    /// Fail open: when the store is down the server runs the handler anyway, without a claim (G8).
    FailOpen,
    /// A store that lost unsynced claims restarts with its fence counter where its disk
    /// left it, so it hands out again fences that executions from before the crash still
    /// hold (G3: fences are never reused).
    NoFenceReseed,
    /// The completion's transaction, too, commits without waiting for the disk: a store
    /// crash loses it together with the business write it carries, after its response
    /// was answered.
    UnsyncedCompletion,
    /// The completion commits without waiting for the disk while the business write it
    /// carries is durable on its own (records in a database file of their own: SQLite's
    /// WAL mode makes a transaction across attached files atomic per file only).
    CompletionApart,
    /// Atomic mode, but the handler writes its payment on a connection of its own instead
    /// of the claim's transaction (a handler that bypasses `Claim::commit`): the row commits
    /// at once, so a release after a 5xx, or a claim lost while it ran, does not take it back.
    WriteOutsideTransaction,
    /// Every server but the first reads a clock a whole lease ahead, past the bound a
    /// renewing holder survives (`lease - renew_every`): it takes over claims whose holders
    /// renew on schedule.
    SkewedLease,
    /// The server's purge passes the store a horizon a whole retention and lease ahead of
    /// its time, so it removes claims whose lease is valid and records still retained.
    PurgeInFlight,
    /// The layer's heartbeat fires once per lease instead of every third of one
    /// (`Policy::lease` where `Policy::renew_every` belongs): each renewal is due at the
    /// moment the lease ends, so a retry arriving then takes the claim over from a handler
    /// that renews on schedule (the renewal timer's bug; SPEC, "renewal").
    RenewsEveryLease,
    /// An operator's forget makes the claim lapse instead of removing the record: the
    /// record stays in flight under its fence with its lease ended, and the fence counter
    /// does not move, so a handler still running under the forgotten claim completes
    /// afterwards (SPEC "Key lifecycle": forget is fenced, G3).
    ForgetKeepsFence,
    /// The claim reads a tombstone as no record (the view the server passes drops it), so
    /// a late retry after retention runs again (SPEC "Key lifecycle": tombstones).
    IgnoresTombstones,
    /// The layer's heartbeat ignores the execution ceiling and renews as long as the
    /// handler runs, so a hung handler holds its key for ever (SPEC "Key lifecycle").
    RenewsPastCeiling,
}

/// How messages travel between clients and servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NetworkKind {
    /// Any order, and a request may be delivered twice (`network_faults` times in all).
    Duplicating,
    /// First in, first out per client-server pair; nothing lost or duplicated.
    Ordered,
    /// Any order, and a message may be lost (`network_faults` times in all).
    Lossy,
}

/// The client's retry policy: idem-client's defaults unless overridden.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Attempts per operation, the first included ([`idem_client::ATTEMPTS_MAX_DEFAULT`]).
    pub attempts_max: u32,
    /// The time all attempts and waits of one operation may take ([`idem_client::DEADLINE_DEFAULT`]).
    pub deadline: Duration,
    /// The time one attempt may take without an answer ([`idem_client::ATTEMPT_TIMEOUT_DEFAULT`]).
    pub attempt_timeout: Duration,
    /// The backoff before a retry that got no `Retry-After` (a timeout, a reset, a 503
    /// without it): idem-client's defaults. The model waits its ceiling, see the crate docs.
    pub backoff: idem_client::Backoff,
}

impl Default for ClientPolicy {
    /// idem-client's shipped defaults.
    fn default() -> ClientPolicy {
        ClientPolicy {
            attempts_max: idem_client::ATTEMPTS_MAX_DEFAULT,
            deadline: idem_client::DEADLINE_DEFAULT,
            attempt_timeout: idem_client::ATTEMPT_TIMEOUT_DEFAULT,
            backoff: idem_client::Backoff {
                base: idem_client::config::BACKOFF_BASE_DEFAULT,
                max: idem_client::config::BACKOFF_MAX_DEFAULT,
            },
        }
    }
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
        given: u64,
        /// The smallest value accepted.
        min: u64,
        /// The largest value accepted.
        max: u64,
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
    /// Server crashes (a crash loses the server's running handlers and resets their
    /// connections; it restarts at once).
    pub crashes: u8,
    /// Stalls: a running handler pauses and stops renewing its lease, so its lease may
    /// lapse while it still runs; the pause may last any time. If it renews again, it is
    /// a slow handler from then on.
    pub lapses: u8,
    /// Slow handlers: a running handler takes longer than `handler_time`, up to
    /// `slow_handler_time`, renewing its lease on schedule (without renewals its lease
    /// lapses while it runs).
    pub slow: u8,
    /// Handler failures (503; the claim is released), before the write or after it.
    pub failures: u8,
    /// How the network behaves.
    pub network: NetworkKind,
    /// Duplicate deliveries (duplicating network) or losses (lossy network) in all.
    pub network_faults: u8,
    /// Delays in all: the network holds a message back while the clock moves (a slow
    /// network). Any other message arrives before the clock moves.
    pub delays: u8,
    /// Store outages: while the store is down requests get 503, completions fail, and time
    /// does not pass (an outage is shorter than any wait).
    pub outages: u8,
    /// Store crashes: the store loses every write not yet on disk and restarts at once.
    /// Claims, renewals and releases commit without waiting for the disk; a completion (and
    /// a purge) waits, and with it everything committed before it (as SQLite's WAL does).
    /// Running handlers keep running against the store as it came back.
    pub store_crashes: u8,
    /// Purges racing the requests: a server runs the store's purge of expired records
    /// (`MemoryState::purge_expired`) at its own time while claims are in flight.
    pub purges: u8,
    /// An operator's forgets (`op::Forget` on a held record, at any moment): the record is
    /// removed and the fence counter moves on, so a handler still running under it cannot
    /// complete, renew or release afterwards (SPEC "Key lifecycle", G3).
    pub forgets: u8,
    /// The tombstone a completed record leaves after its retention (`Policy::with_tombstone`),
    /// or none. With one, the clock may pass a record's retention while a request the
    /// network held back is still on its way: the late request must get 410, never run.
    pub tombstone: Option<Duration>,
    /// The execution ceiling (idem-once's `with_execution_max`): a handler stops renewing
    /// once it has run this long, so its claim lapses at most one lease later. `None`: no
    /// ceiling (idem-http's default).
    pub ceiling: Option<Duration>,
    /// How far the clocks of servers 2, 3, ... run ahead of server 1's and the store's:
    /// each server passes its own `now` to the store step (claim, renewal, completion).
    pub skew: Duration,
    /// Whether a running handler renews its lease (the layer's heartbeat, every
    /// `Policy::renew_every`).
    pub renewals: bool,
    /// How long a handler runs at most unless it is slow or stalled (a fault).
    pub handler_time: Duration,
    /// How long a slow handler runs at most (a stalled one that resumes, too).
    pub slow_handler_time: Duration,
    /// G6 is promised to every operation that met at most this many faults (a fault an
    /// operation meets: its handler crashed, stalled, was slow or failed, its message was
    /// duplicated, lost or delayed, it met the store down).
    pub progress_faults: u8,
    /// The client's retry policy.
    pub client: ClientPolicy,
    /// Atomic or separate side effects.
    pub mode: Mode,
    /// Correct store code or a planted bug.
    pub variant: Variant,
}

impl Default for Config {
    /// The configuration `idem check` runs: 2 clients (alice and bob both use key `k1`;
    /// alice also reuses it with another amount), 2 servers, 1 operation each, a
    /// duplicating network with 1 duplicate, 1 crash, 1 stall, 1 store outage, renewals,
    /// idem-client's default retry policy, atomic mode, the correct store. Delays are off:
    /// each one multiplies the search by about ten (see docs/model.md for the figures).
    fn default() -> Config {
        Config {
            clients: 2,
            servers: 2,
            ops_per_client: 1,
            key_reuse: true,
            crashes: 1,
            lapses: 1,
            slow: 0,
            failures: 0,
            network: NetworkKind::Duplicating,
            network_faults: 1,
            delays: 0,
            outages: 1,
            store_crashes: 0,
            purges: 0,
            forgets: 0,
            tombstone: None,
            ceiling: None,
            skew: Duration::ZERO,
            renewals: true,
            handler_time: HANDLER_TIME_DEFAULT,
            slow_handler_time: SLOW_HANDLER_TIME_DEFAULT,
            progress_faults: 1,
            client: ClientPolicy::default(),
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
            ("slow handlers", self.slow, 0, FAULTS_MAX),
            ("failures", self.failures, 0, FAULTS_MAX),
            ("delays", self.delays, 0, FAULTS_MAX),
            ("network faults", self.network_faults, 0, FAULTS_MAX),
            ("outages", self.outages, 0, FAULTS_MAX),
            ("store crashes", self.store_crashes, 0, FAULTS_MAX),
            ("purges", self.purges, 0, FAULTS_MAX),
            ("forgets", self.forgets, 0, FAULTS_MAX),
        ];
        for (what, given, min, max) in checks {
            if given < min || given > max {
                return Err(ConfigError::OutOfRange { what, given: given.into(), min: min.into(), max: max.into() });
            }
        }
        let attempts = self.client.attempts_max;
        if !(1..=ATTEMPTS_MAX).contains(&attempts) {
            return Err(ConfigError::OutOfRange {
                what: "attempts",
                given: attempts.into(),
                min: 1,
                max: ATTEMPTS_MAX.into(),
            });
        }
        let whole_ms = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let time_max_ms = whole_ms(CLIENT_TIME_MAX);
        for (what, duration) in [
            ("deadline (ms)", self.client.deadline),
            ("attempt timeout (ms)", self.client.attempt_timeout),
            ("handler time (ms)", self.handler_time),
            ("slow handler time (ms)", self.slow_handler_time),
            ("skew (ms)", self.skew),
            ("ceiling (ms)", self.ceiling.unwrap_or(Duration::from_millis(1))),
        ] {
            let given = whole_ms(duration);
            let min = u64::from(what != "skew (ms)");
            if !(min..=time_max_ms).contains(&given) {
                return Err(ConfigError::OutOfRange { what, given, min, max: time_max_ms });
            }
        }
        if let Some(period) = self.tombstone {
            let max_ms = whole_ms(idem_core::TOMBSTONE_MAX);
            let given = whole_ms(period);
            if !(1..=max_ms).contains(&given) {
                return Err(ConfigError::OutOfRange { what: "tombstone (ms)", given, min: 1, max: max_ms });
            }
        }
        Ok(())
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
    LongLease = "long-lease",
    FailOpen = "fail-open",
    NoFenceReseed = "no-fence-reseed",
    UnsyncedCompletion = "unsynced-completion",
    CompletionApart = "completion-apart",
    WriteOutsideTransaction = "write-outside-transaction",
    SkewedLease = "skewed-lease",
    PurgeInFlight = "purge-in-flight",
    RenewsEveryLease = "renews-every-lease",
    ForgetKeepsFence = "forget-keeps-fence",
    IgnoresTombstones = "ignores-tombstones",
    RenewsPastCeiling = "renews-past-ceiling",
);
named!(NetworkKind, "network", Duplicating = "duplicating", Ordered = "ordered", Lossy = "lossy");
