//! The model's configuration as command-line options, shared by `check` and `explore`.
//! Every default is `idem_model::Config::default()`'s, so `idem check` with no options
//! checks exactly the configuration the docs give figures for; `idem check --consumer`
//! takes the consumer model's options ([`ConsumerOptions`]) and the fault counts, mode and
//! variant shared with it, with `idem_model::ConsumerConfig::default()`'s defaults.

use std::time::Duration;

use std::num::NonZeroU32;

use clap::Args;
use idem_model::{
    BrokerKind, ClientPolicy, Config, ConfigError, ConsumerConfig, ConsumerFaults, ConsumerVariant, IdemModel, Mode,
    NetworkKind, Variant,
};

/// Which system to model.
#[derive(Args, Debug, Clone)]
pub(crate) struct ModelOptions {
    /// Clients (each its own principal: alice, bob, carol, dave; all use key k1).
    #[arg(long, default_value_t = Config::default().clients)]
    clients: u8,
    /// Server replicas sharing one store.
    #[arg(long, default_value_t = Config::default().servers)]
    servers: u8,
    /// Logical operations per client (operation n uses key kn).
    #[arg(long = "ops", default_value_t = Config::default().ops_per_client)]
    ops_per_client: u8,
    /// Client 1 also reuses key k1 with a different amount (expects 422) [default: on]
    #[arg(long, overrides_with = "no_key_reuse")]
    key_reuse: bool,
    /// Nobody reuses a key with a different amount.
    #[arg(long)]
    no_key_reuse: bool,
    /// Server crashes (a crash loses the server's running handlers and resets their connections)
    /// [default: 1; with --consumer: consumer crashes, 1]
    #[arg(long)]
    crashes: Option<u8>,
    /// Stalls: a running handler stops renewing, so its lease may lapse while it runs (0 turns
    /// them off) [default: 1; with --consumer also no progress, 1]
    #[arg(long)]
    lapses: Option<u8>,
    /// Slow handlers: a handler runs past --handler-time, renewing its lease on schedule.
    #[arg(long, default_value_t = Config::default().slow)]
    slow: u8,
    /// How long a handler runs at most unless it is slow or stalled.
    #[arg(long, default_value_t = Config::default().handler_time.into(), value_parser = parse_duration)]
    handler_time: humantime::Duration,
    /// How long a slow handler runs at most (and a stalled one once it renews again).
    #[arg(long, default_value_t = Config::default().slow_handler_time.into(), value_parser = parse_duration)]
    slow_time: humantime::Duration,
    /// Handler failures, before the write or after it (each answers 503, or naks, and releases
    /// its claim; atomic mode rolls a pending write back, separate mode keeps it) [default: 0]
    #[arg(long)]
    failures: Option<u8>,
    /// Network: duplicating (unordered, duplicates), ordered (FIFO, reliable), lossy (unordered, drops).
    #[arg(long, default_value_t = Config::default().network)]
    network: NetworkKind,
    /// Duplicate deliveries (duplicating) or losses (lossy) in all.
    #[arg(long, default_value_t = Config::default().network_faults)]
    network_faults: u8,
    /// Delays in all: the network holds a message back while time passes (any other message
    /// arrives before the clock moves).
    #[arg(long, default_value_t = Config::default().delays)]
    delays: u8,
    /// Store outages: requests meanwhile get 503 and run nothing; completions fail (G8)
    /// [default: 1; with --consumer: 0]
    #[arg(long)]
    outages: Option<u8>,
    /// Purges racing the requests: a server runs the store's purge of expired records at its
    /// own time while claims are in flight (it must remove nothing before its time).
    #[arg(long, default_value_t = Config::default().purges)]
    purges: u8,
    /// An operator's forgets: `idem keys forget` on a held record at any moment (the store
    /// removes it and moves its fence on, so a handler still running cannot complete).
    #[arg(long, default_value_t = Config::default().forgets)]
    forgets: u8,
    /// Completed records leave a tombstone for this long after their retention (a late
    /// request then gets 410); the clock may pass a retention while a request the network
    /// held back (--delays) is still on its way [default: none]
    #[arg(long, value_parser = parse_duration)]
    tombstone: Option<humantime::Duration>,
    /// The execution ceiling: a handler stops renewing once it has run this long, so its
    /// claim lapses at most one lease later [default: none, as idem-http ships]
    #[arg(long, value_parser = parse_duration)]
    ceiling: Option<humantime::Duration>,
    /// How far the clocks of servers 2, 3, ... run ahead of server 1's; each server passes its
    /// own time to the store. Below lease - renew_every (6.67 s) a renewing holder keeps its claim.
    #[arg(long, default_value_t = Config::default().skew.into(), value_parser = parse_duration)]
    skew: humantime::Duration,
    /// Handlers do not renew their leases (every lease then lapses as time passes, also under a running handler).
    #[arg(long)]
    no_renewals: bool,
    /// G6 is judged for every operation that met at most this many faults (a large number
    /// demands progress whatever the faults).
    #[arg(long, default_value_t = Config::default().progress_faults)]
    progress_faults: u8,
    /// The client's attempts per operation, the first included [default: idem-client's]
    #[arg(long, default_value_t = Config::default().client.attempts_max)]
    attempts: u32,
    /// The client's deadline for one operation, all attempts and waits [default: idem-client's]
    #[arg(long, default_value_t = Config::default().client.deadline.into(), value_parser = parse_duration)]
    deadline: humantime::Duration,
    /// The client's timeout of one attempt without an answer [default: idem-client's]
    #[arg(long, default_value_t = Config::default().client.attempt_timeout.into(), value_parser = parse_duration)]
    attempt_timeout: humantime::Duration,
    /// atomic: side effect and completion in one fenced transaction; separate: side effect on its own.
    #[arg(long, default_value_t = Config::default().mode)]
    mode: Mode,
    /// correct, or a planted bug: no-claim, no-fence-check, unscoped-keys, no-fingerprint-check,
    /// fence-reuse, long-lease, fail-open, write-outside-transaction (with --failures or
    /// --lapses), skewed-lease (with --servers 2 and --slow 1 in separate mode), purge-in-flight (with
    /// --purges 1), renews-every-lease (with --slow 1 and a delayed duplicate in separate mode),
    /// forget-keeps-fence (with --forgets 1), ignores-tombstones (with --tombstone and
    /// --delays 1), renews-past-ceiling (with --ceiling and --slow 1);
    /// with --store-crashes also no-fence-reseed, unsynced-completion, completion-apart. With
    /// --consumer: ack-before-completion, dedup-outside-transaction (with --crashes 1),
    /// check-then-act (with --consumers 2).
    #[arg(long, default_value = "correct")]
    variant: String,
}

fn parse_duration(given: &str) -> Result<humantime::Duration, String> {
    given.parse::<humantime::Duration>().map_err(|error| format!("{error} (e.g. 30s, 1m, 500ms)"))
}

impl ModelOptions {
    /// The configuration these options describe.
    ///
    /// # Errors
    /// [`ConfigError::UnknownName`] for a variant that is not one of the HTTP model's.
    pub(crate) fn config(&self) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        Ok(Config {
            clients: self.clients,
            servers: self.servers,
            ops_per_client: self.ops_per_client,
            key_reuse: self.key_reuse || (Config::default().key_reuse && !self.no_key_reuse),
            crashes: self.crashes.unwrap_or(defaults.crashes),
            lapses: self.lapses.unwrap_or(defaults.lapses),
            slow: self.slow,
            failures: self.failures.unwrap_or(defaults.failures),
            network: self.network,
            network_faults: self.network_faults,
            delays: self.delays,
            outages: self.outages.unwrap_or(defaults.outages),
            // `idem check --store-crashes` sets its own (crates/idem-cli/src/check.rs).
            store_crashes: Config::default().store_crashes,
            purges: self.purges,
            forgets: self.forgets,
            tombstone: self.tombstone.map(Duration::from),
            ceiling: self.ceiling.map(Duration::from),
            skew: Duration::from(self.skew),
            renewals: !self.no_renewals,
            handler_time: Duration::from(self.handler_time),
            slow_handler_time: Duration::from(self.slow_time),
            progress_faults: self.progress_faults,
            client: ClientPolicy {
                attempts_max: self.attempts,
                deadline: Duration::from(self.deadline),
                attempt_timeout: Duration::from(self.attempt_timeout),
                ..ClientPolicy::default()
            },
            mode: self.mode,
            variant: self.variant.parse::<Variant>()?,
        })
    }

    /// The model these options describe, or why they are refused.
    pub(crate) fn model(&self) -> Result<IdemModel, ConfigError> {
        self.config()?.into_model()
    }

    /// The consumer configuration these options and `consumer`'s describe: the shared fault
    /// counts (crashes, stalls as --lapses, outages, failures), mode and variant, with the
    /// consumer model's defaults.
    ///
    /// # Errors
    /// [`ConfigError::UnknownName`] for a variant that is not one of the consumer model's.
    pub(crate) fn consumer_config(&self, consumer: &ConsumerOptions) -> Result<ConsumerConfig, ConfigError> {
        let defaults = ConsumerConfig::default();
        let faults = ConsumerFaults {
            crashes: self.crashes.unwrap_or(defaults.faults.crashes),
            stalls: self.lapses.unwrap_or(defaults.faults.stalls),
            lost_acks: consumer.lost_acks,
            timeouts: consumer.timeouts,
            outages: self.outages.unwrap_or(defaults.faults.outages),
            failures: self.failures.unwrap_or(defaults.faults.failures),
        };
        Ok(ConsumerConfig {
            consumers: consumer.consumers,
            in_flight_max: consumer.in_flight,
            messages: consumer.messages,
            duplicate_publish: !consumer.no_duplicate_publish,
            mismatch_publish: !consumer.no_mismatch_publish,
            mode: self.mode,
            broker: consumer.broker,
            faults,
            handler_attempts_max: consumer.handler_attempts,
            variant: self.variant.parse::<ConsumerVariant>()?,
        })
    }
}

/// The consumer model's own options (`idem check --consumer`); each needs --consumer.
#[derive(Args, Debug, Clone)]
pub(crate) struct ConsumerOptions {
    /// Consumers on one queue or durable consumer, sharing the store (1 or 2).
    #[arg(long, requires = "consumer", default_value_t = ConsumerConfig::default().consumers)]
    consumers: u8,
    /// Deliveries one consumer runs at once (its prefetch; 1 or 2).
    #[arg(long, requires = "consumer", default_value_t = ConsumerConfig::default().in_flight_max)]
    in_flight: u8,
    /// Distinct message ids m1, m2 (1 or 2).
    #[arg(long, requires = "consumer", default_value_t = ConsumerConfig::default().messages)]
    messages: u8,
    /// m1 is not published a second time with the same payload.
    #[arg(long, requires = "consumer")]
    no_duplicate_publish: bool,
    /// m1 is not published again with another payload (no reused key).
    #[arg(long, requires = "consumer")]
    no_mismatch_publish: bool,
    /// ack-wait (JetStream-like: ack deadline, progress moves it) or channel-close
    /// (RabbitMQ-like: a closing channel requeues all its copies).
    #[arg(long, requires = "consumer", default_value_t = ConsumerConfig::default().broker)]
    broker: BrokerKind,
    /// Acks lost on their way (channel-close: with their connection).
    #[arg(long, requires = "consumer", default_value_t = ConsumerConfig::default().faults.lost_acks)]
    lost_acks: u8,
    /// The broker gives up on a live handler: ack-wait, its progress lost; channel-close, its
    /// channel closed by the consumer timeout.
    #[arg(long, requires = "consumer", default_value_t = ConsumerConfig::default().faults.timeouts)]
    timeouts: u8,
    /// Dead-letter a failing handler's message on this delivery (default: redeliver always).
    #[arg(long, requires = "consumer")]
    handler_attempts: Option<NonZeroU32>,
}
