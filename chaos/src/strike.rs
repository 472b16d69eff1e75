//! How each fault strikes and is reverted, on what the run holds: its replicas (signals),
//! the test network (links down, links slowed), the SQLite disk (filled), the stores
//! (stopped, killed), and for a power loss the unsynced writes (dropped).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::ChaosError;
use crate::disk::Disk;
use crate::faults::Fault;
use crate::network::{Link, Network};
use crate::replica::Replica;
use crate::services::{PgStop, Postgres, Redis};

/// How long a kill waits for a request in flight on its replica before it strikes anyway.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

/// What the faults act on.
pub(crate) struct Targets<'a> {
    pub(crate) replicas: &'a mut [Replica],
    pub(crate) network: &'a Network,
    /// The private PostgreSQL, when it holds the records (postgres runs).
    pub(crate) postgres: Option<&'a mut Postgres>,
    pub(crate) redis: Option<&'a mut Redis>,
    /// The SQLite runs' disk, the run's database file on it, and the power-loss journal
    /// directory (off that disk).
    pub(crate) sqlite: Option<(&'a mut Disk, PathBuf, PathBuf)>,
    /// Requests in flight per replica (the clients' transport counts them).
    pub(crate) in_flight: Arc<Vec<AtomicUsize>>,
    /// How long a kill or pause waits after it saw a request in flight: long enough for
    /// the request to reach its handler (claimed, then waiting out the handler delay).
    pub(crate) into_handler: Duration,
    /// How long a vanishing host waits after it saw a request in flight: into the store's
    /// transaction when the replicas have a commit delay (PostgreSQL), else into the handler.
    pub(crate) into_transaction: Duration,
}

/// Applies `fault` and reverts it; `log` records each step. Blocks for the fault's length.
/// Returns whether it struck a replica with a request in flight.
pub(crate) fn apply(fault: &Fault, targets: &mut Targets<'_>, log: &dyn Fn(String)) -> Result<bool, ChaosError> {
    match fault {
        Fault::KillReplica { replica, down } => {
            let busy = wait_in_flight(targets, *replica, targets.into_handler);
            let Some(target) = targets.replicas.get_mut(*replica) else { return Ok(false) };
            target.kill();
            log(format!("SIGKILL replica-{replica} ({})", busy_or_idle(busy)));
            std::thread::sleep(*down);
            target.start_again()?;
            log(format!("replica-{replica} restarted"));
            Ok(busy)
        }
        Fault::PauseReplica { replica, paused } => {
            let busy = wait_in_flight(targets, *replica, targets.into_handler);
            let Some(target) = targets.replicas.get_mut(*replica) else { return Ok(false) };
            target.pause()?;
            log(format!("SIGSTOP replica-{replica} ({})", busy_or_idle(busy)));
            std::thread::sleep(*paused);
            target.resume()?;
            log(format!("SIGCONT replica-{replica}"));
            Ok(busy)
        }
        Fault::KillAllReplicas { down } => {
            targets.replicas.iter_mut().for_each(Replica::kill);
            log("SIGKILL every replica".to_owned());
            std::thread::sleep(*down);
            start_every_replica(targets)?;
            log("every replica restarted".to_owned());
            Ok(false)
        }
        Fault::VanishReplica { replica, gone } => vanish(targets, *replica, *gone, log),
        Fault::PartitionClients { replica, length } => partition(targets, *replica, Link::Front, *length, log),
        Fault::PartitionStore { replica, length } => partition(targets, *replica, Link::Back, *length, log),
        Fault::SlowLinks { replica, kbit, length } => {
            for link in [Link::Front, Link::Back] {
                targets.network.set_rate(*replica, link, Some(*kbit))?;
            }
            log(format!("replica-{replica}'s links at {kbit} kbit/s"));
            std::thread::sleep(*length);
            for link in [Link::Front, Link::Back] {
                targets.network.set_rate(*replica, link, None)?;
            }
            log(format!("replica-{replica}'s links at full speed"));
            Ok(false)
        }
        Fault::DiskFull { length } => {
            let Some((disk, _, _)) = targets.sqlite.as_mut() else { return Ok(false) };
            let filled = disk.fill()?;
            log(format!("SQLite's disk full ({filled} bytes of filler)"));
            std::thread::sleep(*length);
            disk.free()?;
            log("SQLite's disk has room again".to_owned());
            Ok(false)
        }
        Fault::PowerLoss { down } => power_loss(targets, *down, log),
        Fault::RestartPostgres { immediate, down } => {
            let Some(postgres) = targets.postgres.as_deref_mut() else { return Ok(false) };
            postgres.stop(if *immediate { PgStop::Immediate } else { PgStop::Fast })?;
            log(format!("PostgreSQL stopped -m {}", if *immediate { "immediate" } else { "fast" }));
            std::thread::sleep(*down);
            postgres.start_again()?;
            log("PostgreSQL started".to_owned());
            Ok(false)
        }
        Fault::RestartRedis { keep_data, down } => {
            let Some(redis) = targets.redis.as_deref_mut() else { return Ok(false) };
            redis.kill(!keep_data)?;
            log(format!("Redis SIGKILL{}", if *keep_data { "" } else { ", its files deleted" }));
            std::thread::sleep(*down);
            redis.start_again()?;
            log("Redis started".to_owned());
            Ok(false)
        }
    }
}

fn busy_or_idle(busy: bool) -> &'static str {
    if busy { "a request was in flight" } else { "idle" }
}

/// Frozen inside its request (on PostgreSQL, inside its transaction, holding the record's
/// row lock), cut off without a word, killed; back after `gone`.
fn vanish(targets: &mut Targets<'_>, replica: usize, gone: Duration, log: &dyn Fn(String)) -> Result<bool, ChaosError> {
    let busy = wait_in_flight(targets, replica, targets.into_transaction);
    let Some(target) = targets.replicas.get_mut(replica) else { return Ok(false) };
    target.pause()?;
    for link in [Link::Front, Link::Back] {
        targets.network.set_link(replica, link, false)?;
    }
    // Killed while cut off: the FINs and RSTs its sockets send on exit are dropped, so its
    // store sessions stay open on the store's side, holding what they held.
    target.kill();
    log(format!("replica-{replica}'s host vanished: frozen, links cut, killed ({})", busy_or_idle(busy)));
    std::thread::sleep(gone);
    for link in [Link::Front, Link::Back] {
        targets.network.set_link(replica, link, true)?;
    }
    target.start_again()?;
    log(format!("replica-{replica}'s host is back, replica restarted"));
    Ok(busy)
}

fn partition(
    targets: &Targets<'_>,
    replica: usize,
    link: Link,
    length: Duration,
    log: &dyn Fn(String),
) -> Result<bool, ChaosError> {
    let between = if link == Link::Front { "clients | replica" } else { "replica | store" };
    targets.network.set_link(replica, link, false)?;
    log(format!("partition {between} (replica-{replica})"));
    std::thread::sleep(length);
    targets.network.set_link(replica, link, true)?;
    log(format!("partition {between} (replica-{replica}) healed"));
    Ok(false)
}

/// Every process on the host killed at once, the unsynced writes dropped, all back after `down`.
fn power_loss(targets: &mut Targets<'_>, down: Duration, log: &dyn Fn(String)) -> Result<bool, ChaosError> {
    // Strike while a request is inside its handler somewhere: its claim is committed and,
    // with deferred claim sync, not yet synced, so the loss has something to drop.
    let busy = wait_in_flight_anywhere(targets);
    targets.replicas.iter_mut().for_each(Replica::kill);
    if let Some(postgres) = targets.postgres.as_deref_mut() {
        postgres.stop(PgStop::Immediate)?;
    }
    if let Some(redis) = targets.redis.as_deref_mut() {
        redis.kill(false)?;
    }
    let dropped = match &targets.sqlite {
        Some((_, database, journal)) => crate::power::drop_unsynced(database, journal)?,
        None => "the store's own fsync decides what survives".to_owned(),
    };
    log(format!("power loss ({}): every replica killed, the store crashed; {dropped}", busy_or_idle(busy)));
    std::thread::sleep(down);
    if let Some(postgres) = targets.postgres.as_deref_mut() {
        postgres.start_again()?;
    }
    if let Some(redis) = targets.redis.as_deref_mut() {
        redis.start_again()?;
    }
    start_every_replica(targets)?;
    log("power back: every replica restarted".to_owned());
    Ok(busy)
}

fn start_every_replica(targets: &mut Targets<'_>) -> Result<(), ChaosError> {
    for replica in targets.replicas.iter_mut() {
        replica.start_again()?;
    }
    Ok(())
}

/// Waits up to [`IN_FLIGHT_WAIT`] for a request in flight on any replica, then into its
/// handler; whether one was in flight.
fn wait_in_flight_anywhere(targets: &Targets<'_>) -> bool {
    let deadline = Instant::now() + IN_FLIGHT_WAIT;
    let busy = || targets.in_flight.iter().any(|count| count.load(Ordering::SeqCst) > 0);
    while !busy() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let seen = busy();
    if seen {
        std::thread::sleep(targets.into_handler);
    }
    seen
}

/// Waits up to [`IN_FLIGHT_WAIT`] for a request in flight on `replica`, then `into` more
/// so it gets where the fault should find it; whether one was in flight.
fn wait_in_flight(targets: &Targets<'_>, replica: usize, into: Duration) -> bool {
    let deadline = Instant::now() + IN_FLIGHT_WAIT;
    let busy = || targets.in_flight.get(replica).is_some_and(|count| count.load(Ordering::SeqCst) > 0);
    while !busy() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let seen = busy();
    if seen {
        std::thread::sleep(into);
    }
    seen
}

/// Everything back up: links, disk, stores running, replicas resumed or restarted.
pub(crate) fn heal(targets: &mut Targets<'_>, log: &dyn Fn(String)) -> Result<(), ChaosError> {
    targets.network.heal()?;
    if let Some((disk, _, _)) = targets.sqlite.as_mut()
        && disk.is_full()
    {
        disk.free()?;
        log("heal: SQLite's disk has room again".to_owned());
    }
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
