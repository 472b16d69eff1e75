//! The faults: drawn per seed from a ChaCha stream (so a seed replays the same faults, at
//! the same planned times, on the same replicas), applied one after another by the fault
//! thread, each logged in the history as it is injected and reverted.
//!
//! Kinds that need more than processes and signals come in later sessions and slot in as
//! new variants here and new arms in `apply`: partitions and slow links (network
//! namespaces, nftables, tc), a full disk under SQLite, a power loss (unsynced writes
//! dropped), a host that vanishes with its connections open.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::replica::Replica;
use crate::services::{PgStop, Postgres, Redis};
use crate::{ChaosError, StoreKind};

/// One slot of the fault window per fault: a fault starts and ends inside its slot.
pub(crate) const SLOT: Duration = Duration::from_secs(3);
/// How long a kill waits for a request in flight on its replica before it strikes anyway.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

/// A fault, as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
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
    /// [`Fault::RestartPostgres`], `-m fast`.
    PostgresFast,
    /// [`Fault::RestartPostgres`], `-m immediate`.
    PostgresImmediate,
    /// [`Fault::RestartRedis`] keeping its data.
    RedisKeepData,
    /// [`Fault::RestartRedis`] losing its data.
    RedisLoseData,
}

impl FaultKind {
    /// Every kind, in table order.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::KillReplica,
        FaultKind::PauseReplica,
        FaultKind::KillAllReplicas,
        FaultKind::PostgresFast,
        FaultKind::PostgresImmediate,
        FaultKind::RedisKeepData,
        FaultKind::RedisLoseData,
    ];

    /// The kinds a store's runs draw from.
    #[must_use]
    pub fn of_store(store: StoreKind) -> &'static [FaultKind] {
        match store {
            StoreKind::Sqlite => &FaultKind::ALL[..3],
            StoreKind::Postgres => &FaultKind::ALL[..5],
            StoreKind::Redis => &[
                FaultKind::KillReplica,
                FaultKind::PauseReplica,
                FaultKind::KillAllReplicas,
                FaultKind::RedisKeepData,
                FaultKind::RedisLoseData,
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
        }
    }

    fn length(&self) -> Duration {
        match self {
            Fault::KillReplica { down, .. }
            | Fault::KillAllReplicas { down }
            | Fault::RestartPostgres { down, .. }
            | Fault::RestartRedis { down, .. } => *down,
            Fault::PauseReplica { paused, .. } => *paused,
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
                    Fault::PauseReplica { replica, paused: millis(rng, lease_ms + 300, lease_ms + 800) }
                }
                FaultKind::KillAllReplicas => Fault::KillAllReplicas { down: millis(rng, 200, 1000) },
                FaultKind::PostgresFast => Fault::RestartPostgres { immediate: false, down: millis(rng, 200, 1500) },
                FaultKind::PostgresImmediate => {
                    Fault::RestartPostgres { immediate: true, down: millis(rng, 200, 1500) }
                }
                FaultKind::RedisKeepData => Fault::RestartRedis { keep_data: true, down: millis(rng, 200, 1500) },
                FaultKind::RedisLoseData => Fault::RestartRedis { keep_data: false, down: millis(rng, 200, 1500) },
            };
            let slack = SLOT.saturating_sub(fault.length()).saturating_sub(Duration::from_millis(200));
            let offset = Duration::from_millis(rng.random_range(0..=u64::try_from(slack.as_millis()).unwrap_or(0)));
            Scheduled { at: first + SLOT * u32::try_from(slot).unwrap_or(u32::MAX) + offset, fault }
        })
        .collect()
}

/// What the faults act on.
pub(crate) struct Targets<'a> {
    pub(crate) replicas: &'a mut [Replica],
    pub(crate) postgres: Option<&'a mut Postgres>,
    pub(crate) redis: Option<&'a mut Redis>,
    /// Requests in flight per replica (the clients' transport counts them).
    pub(crate) in_flight: Arc<Vec<AtomicUsize>>,
}

/// Applies `fault` and reverts it; `log` records each step. Blocks for the fault's length.
/// Returns whether it struck a replica with a request in flight.
pub(crate) fn apply(fault: &Fault, targets: &mut Targets<'_>, log: &dyn Fn(String)) -> Result<bool, ChaosError> {
    let mut struck_busy = false;
    match fault {
        Fault::KillReplica { replica, down } => {
            let busy = wait_in_flight(&targets.in_flight, *replica);
            struck_busy = busy;
            let Some(target) = targets.replicas.get_mut(*replica) else { return Ok(false) };
            target.kill();
            log(format!("SIGKILL replica-{replica} ({})", if busy { "a request was in flight" } else { "idle" }));
            std::thread::sleep(*down);
            target.start_again()?;
            log(format!("replica-{replica} restarted"));
        }
        Fault::PauseReplica { replica, paused } => {
            let busy = wait_in_flight(&targets.in_flight, *replica);
            struck_busy = busy;
            let Some(target) = targets.replicas.get_mut(*replica) else { return Ok(false) };
            target.pause()?;
            log(format!("SIGSTOP replica-{replica} ({})", if busy { "a request was in flight" } else { "idle" }));
            std::thread::sleep(*paused);
            target.resume()?;
            log(format!("SIGCONT replica-{replica}"));
        }
        Fault::KillAllReplicas { down } => {
            targets.replicas.iter_mut().for_each(Replica::kill);
            log("SIGKILL every replica".to_owned());
            std::thread::sleep(*down);
            for replica in targets.replicas.iter_mut() {
                replica.start_again()?;
            }
            log("every replica restarted".to_owned());
        }
        Fault::RestartPostgres { immediate, down } => {
            let Some(postgres) = targets.postgres.as_deref_mut() else { return Ok(false) };
            postgres.stop(if *immediate { PgStop::Immediate } else { PgStop::Fast })?;
            log(format!("PostgreSQL stopped -m {}", if *immediate { "immediate" } else { "fast" }));
            std::thread::sleep(*down);
            postgres.start_again()?;
            log("PostgreSQL started".to_owned());
        }
        Fault::RestartRedis { keep_data, down } => {
            let Some(redis) = targets.redis.as_deref_mut() else { return Ok(false) };
            redis.kill(!keep_data)?;
            log(format!("Redis SIGKILL{}", if *keep_data { "" } else { ", its files deleted" }));
            std::thread::sleep(*down);
            redis.start_again()?;
            log("Redis started".to_owned());
        }
    }
    Ok(struck_busy)
}

/// Waits up to [`IN_FLIGHT_WAIT`] for a request in flight on `replica`; whether one was.
fn wait_in_flight(in_flight: &[AtomicUsize], replica: usize) -> bool {
    let deadline = Instant::now() + IN_FLIGHT_WAIT;
    let busy = || in_flight.get(replica).is_some_and(|count| count.load(Ordering::SeqCst) > 0);
    while !busy() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    busy()
}

/// Everything back up: stores running, replicas resumed or restarted.
pub(crate) fn heal(targets: &mut Targets<'_>, log: &dyn Fn(String)) -> Result<(), ChaosError> {
    if let Some(postgres) = targets.postgres.as_deref_mut()
        && !postgres.running()
    {
        postgres.start_again()?;
        log("heal: PostgreSQL started".to_owned());
    }
    if let Some(redis) = targets.redis.as_deref_mut()
        && !redis.running()
    {
        redis.start_again()?;
        log("heal: Redis started".to_owned());
    }
    for replica in targets.replicas.iter_mut() {
        if !replica.is_up() {
            log(format!("heal: replica-{} restarted", replica.index));
        }
        replica.heal()?;
    }
    Ok(())
}
