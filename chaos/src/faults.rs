//! The faults: drawn per seed from a ChaCha stream (so a seed replays the same faults, at
//! the same planned times, on the same replicas), applied one after another by the fault
//! thread, each logged in the history as it is injected and reverted.
//!
//! Processes get signals (`crate::replica`), links go down or slow (`crate::network`), the
//! SQLite disk fills (`crate::disk`), stores stop (`crate::services`); a power loss
//! kills every process on the host at once and drops what was not synced.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::StoreKind;

/// One slot of the fault window per fault: a fault starts and ends inside its slot.
pub(crate) const SLOT: Duration = Duration::from_secs(3);

/// A fault, as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A replica's host vanishes: SIGSTOP (frozen inside its request, if one comes within
    /// a second), both its links cut without a FIN or RST, SIGKILL; the host comes back
    /// (links up, replica restarted) after `gone`. Its store sessions, locks and claims
    /// must be freed by the store's own timeouts (SPEC G6, docs/guarantees.md).
    VanishReplica {
        /// Which replica.
        replica: usize,
        /// How long the host is gone.
        gone: Duration,
    },
    /// The link between the clients and a replica drops everything, both ways, for `length`.
    PartitionClients {
        /// Which replica.
        replica: usize,
        /// How long.
        length: Duration,
    },
    /// The link between a replica and the stores drops everything, both ways, for `length`.
    PartitionStore {
        /// Which replica.
        replica: usize,
        /// How long.
        length: Duration,
    },
    /// Both of a replica's links slowed to `kbit` per second (a token bucket) for `length`.
    SlowLinks {
        /// Which replica.
        replica: usize,
        /// The rate, kbit/s.
        kbit: u32,
        /// How long.
        length: Duration,
    },
    /// The SQLite file's disk is full for `length` (every write there fails with ENOSPC).
    DiskFull {
        /// How long.
        length: Duration,
    },
    /// The host loses power: every replica SIGKILLed at once and every write not yet synced
    /// lost (SQLite: the unsynced-write journal rolled back; PostgreSQL stopped
    /// `-m immediate`; Redis SIGKILLed on its fsynced append-only file), everything back
    /// after `down`.
    PowerLoss {
        /// How long the host is down.
        down: Duration,
    },
    /// SIGKILL a replica (while one of its requests is in flight, if one comes within a
    /// second), restart it after `down`.
    KillReplica {
        /// Which replica.
        replica: usize,
        /// How long it stays down.
        down: Duration,
    },
    /// SIGSTOP a replica for longer than the lease (while one of its requests is in flight,
    /// if one comes within a second: its claim lapses and is taken over), then SIGCONT: it
    /// wakes and tries to complete.
    PauseReplica {
        /// Which replica.
        replica: usize,
        /// How long it stays stopped.
        paused: Duration,
    },
    /// SIGKILL every replica at once (the host crashes), restart them after `down`.
    KillAllReplicas {
        /// How long they stay down.
        down: Duration,
    },
    /// Stop the private PostgreSQL (`pg_ctl stop -m fast` or `-m immediate`), start it again.
    RestartPostgres {
        /// `-m immediate` (crash recovery at the next start) rather than `-m fast`.
        immediate: bool,
        /// How long it stays down.
        down: Duration,
    },
    /// SIGKILL the private Redis and start it again, with its append-only file or without
    /// (every idempotency record lost; the payments stay in PostgreSQL).
    RestartRedis {
        /// Whether its files survive.
        keep_data: bool,
        /// How long it stays down.
        down: Duration,
    },
}

/// A fault's kind, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// [`Fault::KillReplica`].
    KillReplica,
    /// [`Fault::PauseReplica`].
    PauseReplica,
    /// [`Fault::KillAllReplicas`].
    KillAllReplicas,
    /// [`Fault::VanishReplica`].
    VanishReplica,
    /// [`Fault::PartitionClients`].
    PartitionClients,
    /// [`Fault::PartitionStore`].
    PartitionStore,
    /// [`Fault::SlowLinks`].
    SlowLinks,
    /// [`Fault::RestartPostgres`], `-m fast`.
    PostgresFast,
    /// [`Fault::RestartPostgres`], `-m immediate`.
    PostgresImmediate,
    /// [`Fault::RestartRedis`] keeping its data.
    RedisKeepData,
    /// [`Fault::RestartRedis`] losing its data.
    RedisLoseData,
    /// [`Fault::DiskFull`].
    DiskFull,
    /// [`Fault::PowerLoss`].
    PowerLoss,
}

impl FaultKind {
    /// Every kind, in table order.
    pub const ALL: [FaultKind; 13] = [
        FaultKind::KillReplica,
        FaultKind::PauseReplica,
        FaultKind::KillAllReplicas,
        FaultKind::VanishReplica,
        FaultKind::PartitionClients,
        FaultKind::PartitionStore,
        FaultKind::SlowLinks,
        FaultKind::PostgresFast,
        FaultKind::PostgresImmediate,
        FaultKind::RedisKeepData,
        FaultKind::RedisLoseData,
        FaultKind::DiskFull,
        FaultKind::PowerLoss,
    ];

    /// The kinds a store's runs draw from, in table order.
    #[must_use]
    pub fn of_store(store: StoreKind) -> &'static [FaultKind] {
        match store {
            StoreKind::Sqlite => &[
                FaultKind::KillReplica,
                FaultKind::PauseReplica,
                FaultKind::KillAllReplicas,
                FaultKind::VanishReplica,
                FaultKind::PartitionClients,
                FaultKind::SlowLinks,
                FaultKind::DiskFull,
                FaultKind::PowerLoss,
            ],
            StoreKind::Postgres => &[
                FaultKind::KillReplica,
                FaultKind::PauseReplica,
                FaultKind::KillAllReplicas,
                FaultKind::VanishReplica,
                FaultKind::PartitionClients,
                FaultKind::PartitionStore,
                FaultKind::SlowLinks,
                FaultKind::PostgresFast,
                FaultKind::PostgresImmediate,
                FaultKind::PowerLoss,
            ],
            StoreKind::Redis => &[
                FaultKind::KillReplica,
                FaultKind::PauseReplica,
                FaultKind::KillAllReplicas,
                FaultKind::VanishReplica,
                FaultKind::PartitionClients,
                FaultKind::PartitionStore,
                FaultKind::SlowLinks,
                FaultKind::RedisKeepData,
                FaultKind::RedisLoseData,
                FaultKind::PowerLoss,
            ],
        }
    }

    /// Its name in tables.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillReplica => "SIGKILL a replica",
            FaultKind::PauseReplica => "SIGSTOP a replica past the lease",
            FaultKind::KillAllReplicas => "SIGKILL every replica",
            FaultKind::PostgresFast => "PostgreSQL stop -m fast",
            FaultKind::PostgresImmediate => "PostgreSQL stop -m immediate",
            FaultKind::RedisKeepData => "Redis killed, data kept",
            FaultKind::RedisLoseData => "Redis killed, data lost",
            FaultKind::VanishReplica => "a replica's host vanishes",
            FaultKind::PartitionClients => "partition clients | replica",
            FaultKind::PartitionStore => "partition replica | store",
            FaultKind::SlowLinks => "slow links (token bucket)",
            FaultKind::DiskFull => "disk full (SQLite)",
            FaultKind::PowerLoss => "power loss",
        }
    }
}

impl Fault {
    /// Its kind.
    #[must_use]
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::KillReplica { .. } => FaultKind::KillReplica,
            Fault::PauseReplica { .. } => FaultKind::PauseReplica,
            Fault::KillAllReplicas { .. } => FaultKind::KillAllReplicas,
            Fault::RestartPostgres { immediate: false, .. } => FaultKind::PostgresFast,
            Fault::RestartPostgres { immediate: true, .. } => FaultKind::PostgresImmediate,
            Fault::RestartRedis { keep_data: true, .. } => FaultKind::RedisKeepData,
            Fault::RestartRedis { keep_data: false, .. } => FaultKind::RedisLoseData,
            Fault::VanishReplica { .. } => FaultKind::VanishReplica,
            Fault::PartitionClients { .. } => FaultKind::PartitionClients,
            Fault::PartitionStore { .. } => FaultKind::PartitionStore,
            Fault::SlowLinks { .. } => FaultKind::SlowLinks,
            Fault::DiskFull { .. } => FaultKind::DiskFull,
            Fault::PowerLoss { .. } => FaultKind::PowerLoss,
        }
    }

    pub(crate) fn length(&self) -> Duration {
        match self {
            Fault::KillReplica { down, .. }
            | Fault::KillAllReplicas { down }
            | Fault::RestartPostgres { down, .. }
            | Fault::RestartRedis { down, .. }
            | Fault::PowerLoss { down } => *down,
            Fault::PauseReplica { paused, .. } => *paused,
            Fault::VanishReplica { gone, .. } => *gone,
            Fault::PartitionClients { length, .. }
            | Fault::PartitionStore { length, .. }
            | Fault::SlowLinks { length, .. }
            | Fault::DiskFull { length } => *length,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillReplica { replica, down } => write!(f, "SIGKILL replica-{replica}, down {down:?}"),
            Fault::PauseReplica { replica, paused } => write!(f, "SIGSTOP replica-{replica} for {paused:?}"),
            Fault::KillAllReplicas { down } => write!(f, "SIGKILL every replica, down {down:?}"),
            Fault::RestartPostgres { immediate, down } => {
                let mode = if *immediate { "immediate" } else { "fast" };
                write!(f, "PostgreSQL stop -m {mode}, down {down:?}")
            }
            Fault::RestartRedis { keep_data, down } => {
                let data = if *keep_data { "data kept" } else { "data lost" };
                write!(f, "Redis SIGKILL, {data}, down {down:?}")
            }
            Fault::VanishReplica { replica, gone } => write!(f, "replica-{replica}'s host vanishes for {gone:?}"),
            Fault::PartitionClients { replica, length } => {
                write!(f, "partition clients | replica-{replica} for {length:?}")
            }
            Fault::PartitionStore { replica, length } => {
                write!(f, "partition replica-{replica} | store for {length:?}")
            }
            Fault::SlowLinks { replica, kbit, length } => {
                write!(f, "replica-{replica}'s links at {kbit} kbit/s for {length:?}")
            }
            Fault::DiskFull { length } => write!(f, "SQLite's disk full for {length:?}"),
            Fault::PowerLoss { down } => write!(f, "power loss, down {down:?}"),
        }
    }
}

/// A fault and when it is planned, after the run's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// When it is planned to strike.
    pub at: Duration,
    /// What it is.
    pub fault: Fault,
}

fn millis(rng: &mut ChaCha8Rng, low: u64, high: u64) -> Duration {
    Duration::from_millis(rng.random_range(low..=high))
}

/// Draws `count` faults for `store`, one per [`SLOT`] starting at `first`.
pub(crate) fn draw(
    rng: &mut ChaCha8Rng,
    store: StoreKind,
    replicas: usize,
    count: usize,
    first: Duration,
    lease: Duration,
) -> Vec<Scheduled> {
    let kinds = FaultKind::of_store(store);
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    (0..count)
        .map(|slot| {
            let replica = rng.random_range(0..replicas.max(1));
            let fault = match kinds[rng.random_range(0..kinds.len())] {
                FaultKind::KillReplica => Fault::KillReplica { replica, down: millis(rng, 200, 1500) },
                FaultKind::PauseReplica => {
                    Fault::PauseReplica { replica, paused: millis(rng, lease_ms + 300, lease_ms + 2500) }
                }
                FaultKind::KillAllReplicas => Fault::KillAllReplicas { down: millis(rng, 200, 1000) },
                FaultKind::PostgresFast => Fault::RestartPostgres { immediate: false, down: millis(rng, 200, 1500) },
                FaultKind::PostgresImmediate => {
                    Fault::RestartPostgres { immediate: true, down: millis(rng, 200, 1500) }
                }
                FaultKind::RedisKeepData => Fault::RestartRedis { keep_data: true, down: millis(rng, 200, 1500) },
                FaultKind::RedisLoseData => Fault::RestartRedis { keep_data: false, down: millis(rng, 200, 1500) },
                // Longer than PostgreSQL's idle-in-transaction timeout (5 s), so the store's own
                // timeout, not the FIN retransmitted when the host comes back, ends its session.
                FaultKind::VanishReplica => Fault::VanishReplica { replica, gone: millis(rng, 6000, 10_000) },
                FaultKind::PartitionClients => Fault::PartitionClients { replica, length: millis(rng, 500, 2500) },
                FaultKind::PartitionStore => Fault::PartitionStore { replica, length: millis(rng, 500, 2500) },
                FaultKind::SlowLinks => {
                    Fault::SlowLinks { replica, kbit: rng.random_range(32..=256), length: millis(rng, 500, 2500) }
                }
                FaultKind::DiskFull => Fault::DiskFull { length: millis(rng, 500, 2500) },
                FaultKind::PowerLoss => Fault::PowerLoss { down: millis(rng, 200, 1000) },
            };
            let slack = SLOT.saturating_sub(fault.length()).saturating_sub(Duration::from_millis(200));
            let offset = Duration::from_millis(rng.random_range(0..=u64::try_from(slack.as_millis()).unwrap_or(0)));
            Scheduled { at: first + SLOT * u32::try_from(slot).unwrap_or(u32::MAX) + offset, fault }
        })
        .collect()
}
