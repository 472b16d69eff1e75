//! What a run simulates: a [`Scenario`] (the world and its settings); the code under
//! test is a [`crate::Variant`].

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

/// The simulated world. Every scenario but the consumer ones runs the shipped router and
/// layer on two replicas, a store host over the simulated network in atomic mode, and three
/// client hosts; the consumer ones run two consumers, a broker, the store host and a publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scenario {
    /// The store host keeps its state across a bounce, like a disk (G7 applies).
    #[default]
    Default,
    /// The store host loses its state when it bounces: G1 is checked per store lifetime,
    /// and G7 for the payments of the last one.
    VolatileStore,
    /// Separate mode: the payment row is written alone and the layer completes afterwards
    /// (a Redis-like store beside the rows, as `idem serve --store redis://` composes it).
    /// SPEC's separate-mode window (a second payment after a lapsed lease or a crash between
    /// the write and the completion) is reported as expected; every other check still holds.
    /// Handler responses carry repeated headers (two `Link`, two `Cache-Control`).
    Separate,
    /// Retention of 3 s, purged every second: records expire and are purged while clients
    /// still retry, so a key may run again (one payment per record lifetime).
    ShortRetention,
    /// `ConflictPolicy::Wait`: a request for a key in flight waits for its answer.
    ConflictWait,
    /// idem-client with its shipped defaults (deadline, attempt timeout, backoff, retried
    /// statuses) and its own keys; each operation is one call, never resubmitted.
    ClientDefaults,
    /// Before healing, handlers fail: a 500 or a panic before their write, or after it.
    HandlerFaults,
    /// The layer keeps responses of at most `OVERSIZED_LIMIT` (256) bytes, and some payments
    /// ask for a long destination, which their 201 echoes past it: the first answer is the
    /// payment whole, retries get a `response-not-kept` problem (SPEC "HTTP behaviour").
    OversizedResponses,
    /// [`Scenario::OversizedResponses`] in separate mode (the layer records the problem).
    OversizedResponsesSeparate,
    /// Separate mode, as production composes Redis: the store host runs idem-redis's own
    /// `store.lua` in an embedded Lua 5.1 against a Redis-like keyspace, on the calls and
    /// with the answer decoding of idem-redis itself (see `redis_host`). Its G1 window is
    /// expected, as in `separate`.
    RedisLua,
    /// [`Scenario::RedisLua`] in atomic mode: the host writes the payment row in the same
    /// step as a completion the script applied (production never composes Redis so; here
    /// it lets G1 and G3 bear on the script's fence check whole).
    RedisLuaAtomic,
    /// Atomic mode on idem-sqlite's group commit: the store host queues what reaches it and
    /// decides each batch (everything queued, as the writer takes it) through idem-sqlite's
    /// own `BatchDecision`, then commits it to tables it keeps (see `batch_tables`).
    SqliteBatch,
    /// Tombstones (SPEC "Key lifecycle"): retention of 3 s, then a tombstone that outlives the
    /// run, purged every second; each client also retries some of its operations, the same
    /// request under the same key, long after their retention: they must get 410
    /// (`key-expired`), and no key ever runs twice.
    Tombstones,
    /// Message consumers (SPEC "Message consumers"): two hosts run the real
    /// `idem_consumer::Consumer` in atomic mode (the effect row and the completion in one
    /// step on the store host) against a JetStream-like broker (ack wait, progress, nak with
    /// a delay), with a publisher's duplicates and mismatches, and consumer, broker and store
    /// faults (see `docs/sims.md`).
    Consumer,
    /// [`Scenario::Consumer`] against a RabbitMQ-like broker: no ack deadline and no
    /// progress; a consumer's channel that breaks (or goes silent) has all its copies
    /// requeued at once.
    ConsumerChannelClose,
    /// [`Scenario::Consumer`] in separate mode: the handler writes its effect row alone,
    /// the consumer completes afterwards. Its G1 window (a second effect row after a crash
    /// between the row and the completion) is reported as expected.
    ConsumerSeparate,
}

/// The tombstone period of the `tombstones` scenario: longer than any run, so a key that
/// completed never counts as absent again within one.
pub(crate) const TOMBSTONE: Duration = Duration::from_secs(3600);
/// Late retries per client in the `tombstones` scenario.
const LATE_RETRIES: usize = 2;

/// The recording limit of the oversized scenarios: a payment's 201 with a short destination
/// (about 150 bytes) fits, one with a long destination (over 300 bytes) does not.
pub(crate) const OVERSIZED_LIMIT: usize = 256;

impl Scenario {
    /// Every scenario's name, in [`Scenario::ALL`] order.
    pub const NAMES: [&'static str; 16] = [
        "default",
        "volatile-store",
        "separate",
        "short-retention",
        "conflict-wait",
        "client-defaults",
        "handler-faults",
        "oversized-responses",
        "oversized-responses-separate",
        "redis-lua",
        "redis-lua-atomic",
        "sqlite-batch",
        "tombstones",
        "consumer",
        "consumer-channel-close",
        "consumer-separate",
    ];
    /// Every scenario.
    pub const ALL: [Scenario; 16] = [
        Scenario::Default,
        Scenario::VolatileStore,
        Scenario::Separate,
        Scenario::ShortRetention,
        Scenario::ConflictWait,
        Scenario::ClientDefaults,
        Scenario::HandlerFaults,
        Scenario::OversizedResponses,
        Scenario::OversizedResponsesSeparate,
        Scenario::RedisLua,
        Scenario::RedisLuaAtomic,
        Scenario::SqliteBatch,
        Scenario::Tombstones,
        Scenario::Consumer,
        Scenario::ConsumerChannelClose,
        Scenario::ConsumerSeparate,
    ];

    /// The name used on the command line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Scenario::Default => "default",
            Scenario::VolatileStore => "volatile-store",
            Scenario::Separate => "separate",
            Scenario::ShortRetention => "short-retention",
            Scenario::ConflictWait => "conflict-wait",
            Scenario::ClientDefaults => "client-defaults",
            Scenario::HandlerFaults => "handler-faults",
            Scenario::OversizedResponses => "oversized-responses",
            Scenario::OversizedResponsesSeparate => "oversized-responses-separate",
            Scenario::RedisLua => "redis-lua",
            Scenario::RedisLuaAtomic => "redis-lua-atomic",
            Scenario::SqliteBatch => "sqlite-batch",
            Scenario::Tombstones => "tombstones",
            Scenario::Consumer => "consumer",
            Scenario::ConsumerChannelClose => "consumer-channel-close",
            Scenario::ConsumerSeparate => "consumer-separate",
        }
    }

    /// One line saying what it simulates.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Scenario::Default => "2 replicas, a durable store host (atomic mode), 3 clients x 2 streams, 30 s",
            Scenario::VolatileStore => "as default, but a store bounce loses every record and payment",
            Scenario::Separate => "separate mode: the row alone, then the completion; its G1 window is expected",
            Scenario::ShortRetention => "retention 3 s, purge every 1 s: keys expire while clients retry",
            Scenario::ConflictWait => "ConflictPolicy::Wait(3 s): a request for a key in flight waits",
            Scenario::ClientDefaults => "idem-client's shipped defaults and its own keys, no resubmission",
            Scenario::HandlerFaults => "handlers answer 500 or panic, before or after their write, until healing",
            Scenario::OversizedResponses => {
                "a 256-byte recording limit, some payments answered longer: retries get response-not-kept"
            }
            Scenario::OversizedResponsesSeparate => "oversized-responses in separate mode",
            Scenario::RedisLua => {
                "separate mode on idem-redis's store.lua, run in an embedded Lua on a simulated keyspace"
            }
            Scenario::RedisLuaAtomic => {
                "redis-lua in atomic mode: the row written in the step of an applied completion"
            }
            Scenario::SqliteBatch => "atomic mode through idem-sqlite's batch decision, one batch per group commit",
            Scenario::Tombstones => {
                "retention 3 s then a 1 h tombstone: late retries of a key must get 410, never run again"
            }
            Scenario::Consumer => {
                "2 consumers (idem-consumer, atomic mode), a JetStream-like broker, a publisher's plan, 60 s at most"
            }
            Scenario::ConsumerChannelClose => {
                "consumer against a RabbitMQ-like broker: a broken channel requeues its copies"
            }
            Scenario::ConsumerSeparate => "consumer in separate mode: the effect row alone; its G1 window is expected",
        }
    }

    pub(crate) fn settings(self) -> Settings {
        let base = Settings { scenario: self, ..Settings::DEFAULT };
        match self {
            Scenario::Default
            | Scenario::ConflictWait
            | Scenario::HandlerFaults
            | Scenario::RedisLuaAtomic
            | Scenario::SqliteBatch => base,
            // Their own settings: `consumer::Settings`.
            Scenario::Consumer | Scenario::ConsumerChannelClose | Scenario::ConsumerSeparate => base,
            Scenario::RedisLua => Settings { separate: true, ..base },
            Scenario::VolatileStore => Settings { durable_store: false, ..base },
            Scenario::Separate => Settings { separate: true, ..base },
            Scenario::ShortRetention => {
                Settings { retention: Duration::from_secs(3), purge_every: Duration::from_secs(1), ..base }
            }
            Scenario::Tombstones => Settings {
                retention: Duration::from_secs(3),
                tombstone: Some(TOMBSTONE),
                purge_every: Duration::from_secs(1),
                late_retries: LATE_RETRIES,
                ..base
            },
            Scenario::ClientDefaults => Settings { scenario: self, ..Settings::CLIENT_DEFAULTS },
            Scenario::OversizedResponses => Settings { response_body_bytes_max: Some(OVERSIZED_LIMIT), ..base },
            Scenario::OversizedResponsesSeparate => {
                Settings { response_body_bytes_max: Some(OVERSIZED_LIMIT), separate: true, ..base }
            }
        }
    }
}

impl Scenario {
    /// Whether its store host runs idem-redis's script (see `redis_host`).
    pub(crate) const fn runs_redis_lua(self) -> bool {
        matches!(self, Scenario::RedisLua | Scenario::RedisLuaAtomic)
    }

    /// Whether it is a message-consumer scenario (its own world: `consumer`).
    #[must_use]
    pub const fn is_consumer(self) -> bool {
        matches!(self, Scenario::Consumer | Scenario::ConsumerChannelClose | Scenario::ConsumerSeparate)
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

/// A scenario's settings. Times are simulated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) scenario: Scenario,
    pub(crate) replicas: usize,
    pub(crate) clients: usize,
    pub(crate) streams_per_client: usize,
    pub(crate) ops_per_stream: usize,
    /// The claim lease (renewed every third of it by the layer).
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    /// How long a completed record leaves a tombstone after its retention, if it does.
    pub(crate) tombstone: Option<Duration>,
    /// Per client: operations sent again, the same request under the same key, well
    /// after their retention (a stream of their own, started until `late_last_start`).
    pub(crate) late_retries: usize,
    /// Late retries are started until this time.
    pub(crate) late_last_start: Duration,
    pub(crate) durable_store: bool,
    /// Separate mode: rows written alone, the layer completes.
    pub(crate) separate: bool,
    /// The layer's recording limit (`AppBuilder::response_body_bytes_max`), if not the
    /// default; with it, some payments ask for a destination long enough to pass it.
    pub(crate) response_body_bytes_max: Option<usize>,
    /// How often each replica purges expired records.
    pub(crate) purge_every: Duration,
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
        scenario: Scenario::Default,
        replicas: 2,
        clients: 3,
        streams_per_client: 2,
        ops_per_stream: 4,
        lease: Duration::from_secs(2),
        retention: Duration::from_secs(3600),
        tombstone: None,
        late_retries: 0,
        late_last_start: Duration::from_secs(24),
        durable_store: true,
        separate: false,
        response_body_bytes_max: None,
        purge_every: Duration::from_secs(5),
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

impl Settings {
    /// idem-client's defaults: a 30 s deadline and 10 s attempts, so shorter faults, a
    /// longer bound (an attempt cut off at healing, the longest backoff, a lapsed lease,
    /// then one more attempt) and a longer run.
    pub(crate) const CLIENT_DEFAULTS: Settings = Settings {
        heal_at: Duration::from_secs(10),
        last_start: Duration::from_secs(12),
        run_for: Duration::from_secs(40),
        client_deadline: Duration::from_secs(30),
        progress_bound: Duration::from_secs(30),
        duration_max: Duration::from_secs(60),
        ..Settings::DEFAULT
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
// A late retry too.
const _: () = assert!(
    Settings::DEFAULT.late_last_start.as_millis() + Settings::DEFAULT.progress_bound.as_millis()
        < Settings::DEFAULT.duration_max.as_millis()
);
const _: () = assert!(
    Settings::CLIENT_DEFAULTS.last_start.as_millis() + Settings::CLIENT_DEFAULTS.progress_bound.as_millis()
        < Settings::CLIENT_DEFAULTS.duration_max.as_millis()
);
