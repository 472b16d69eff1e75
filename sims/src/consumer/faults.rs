//! The consumer world's faults, swarm style: each seed turns every kind on or off with even
//! odds and draws its intensity ([`ConsumerMix`], printed on the trace's second line), then
//! a schedule of actions, all before healing.

use std::fmt;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The faults one consumer seed injects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerMix {
    /// Partitions between a consumer and the broker (lost acks and progress, lost pulls).
    pub broker_partitions: u32,
    /// Partitions between a consumer and the store host.
    pub store_partitions: u32,
    /// Consumer crashes armed to strike while one of its handlers runs (then a restart).
    pub crashes_in_handler: u32,
    /// Consumer crashes armed to strike right after the store committed one of its
    /// completions, before its ack leaves.
    pub crashes_after_commit: u32,
    /// Plain consumer restarts at any moment.
    pub consumer_bounces: u32,
    /// Broker outages (crash, then restart with its state).
    pub broker_bounces: u32,
    /// Store host outages (crash, then restart with its state).
    pub store_bounces: u32,
    /// Share (percent) of handlers that run two to three leases, before healing.
    pub slow_handler_percent: u32,
    /// Share (percent) of handlers that fail, before healing.
    pub handler_failure_percent: u32,
    /// Each consumer's clock skew, in milliseconds.
    pub skew_ms: Vec<i64>,
}

/// Which peer a consumer is cut off from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    Broker,
    Store,
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Partition { consumer: usize, peer: Peer },
    Repair { consumer: usize, peer: Peer },
    ArmCrashInHandler { consumer: usize, until_ms: u64, downtime_ms: u64 },
    ArmCrashAfterCommit { consumer: usize, until_ms: u64, downtime_ms: u64 },
    Bounce { consumer: usize },
    CrashBroker,
    RestartBroker,
    CrashStore,
    RestartStore,
    Heal,
}

/// An action at a simulated time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scheduled {
    pub(crate) at_ms: u64,
    pub(crate) action: Action,
}

impl ConsumerMix {
    pub(crate) fn draw(rng: &mut ChaCha8Rng, consumers: usize, skew_max_ms: i64) -> ConsumerMix {
        let some = |rng: &mut ChaCha8Rng, max: u32| if rng.random_bool(0.5) { rng.random_range(1..=max) } else { 0 };
        let skewed = rng.random_bool(0.5);
        ConsumerMix {
            broker_partitions: some(rng, 4),
            store_partitions: some(rng, 3),
            crashes_in_handler: some(rng, 2),
            crashes_after_commit: some(rng, 2),
            consumer_bounces: some(rng, 2),
            broker_bounces: some(rng, 2),
            store_bounces: some(rng, 2),
            slow_handler_percent: if rng.random_bool(0.5) { rng.random_range(10..=50) } else { 0 },
            handler_failure_percent: if rng.random_bool(0.5) { rng.random_range(10..=40) } else { 0 },
            skew_ms: (0..consumers)
                .map(|_| if skewed { rng.random_range(-skew_max_ms..=skew_max_ms) } else { 0 })
                .collect(),
        }
    }

    /// The schedule, sorted by time; every window closes by `heal_ms`, where `Heal` is.
    pub(crate) fn schedule(&self, rng: &mut ChaCha8Rng, consumers: usize, heal_ms: u64) -> Vec<Scheduled> {
        let mut actions = Vec::new();
        let window = |rng: &mut ChaCha8Rng, length_max: u64| {
            let start = rng.random_range(300..heal_ms - 300);
            let length = rng.random_range(200..=length_max).min(heal_ms - start);
            (start, start + length)
        };
        let mut push = |at_ms: u64, action: Action| actions.push(Scheduled { at_ms, action });
        for (count, peer) in [(self.broker_partitions, Peer::Broker), (self.store_partitions, Peer::Store)] {
            for _ in 0..count {
                let (from, to) = window(rng, 5_000);
                let consumer = rng.random_range(0..consumers);
                push(from, Action::Partition { consumer, peer });
                push(to, Action::Repair { consumer, peer });
            }
        }
        for _ in 0..self.crashes_in_handler {
            let (from, until_ms) = window(rng, 5_000);
            let (consumer, downtime_ms) = (rng.random_range(0..consumers), rng.random_range(200..=3_000));
            push(from, Action::ArmCrashInHandler { consumer, until_ms, downtime_ms });
        }
        for _ in 0..self.crashes_after_commit {
            let (from, until_ms) = window(rng, 8_000);
            let (consumer, downtime_ms) = (rng.random_range(0..consumers), rng.random_range(200..=3_000));
            push(from, Action::ArmCrashAfterCommit { consumer, until_ms, downtime_ms });
        }
        for _ in 0..self.consumer_bounces {
            let (at, _) = window(rng, 200);
            push(at, Action::Bounce { consumer: rng.random_range(0..consumers) });
        }
        for (count, crash, restart) in [
            (self.broker_bounces, Action::CrashBroker, Action::RestartBroker),
            (self.store_bounces, Action::CrashStore, Action::RestartStore),
        ] {
            for _ in 0..count {
                let (from, to) = window(rng, 2_500);
                push(from, crash.clone());
                push(to, restart.clone());
            }
        }
        push(heal_ms, Action::Heal);
        // Stable: actions at one time keep their drawing order.
        actions.sort_by_key(|scheduled| scheduled.at_ms);
        actions
    }
}

impl fmt::Display for ConsumerMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "broker-partitions={} store-partitions={} crashes-in-handler={} crashes-after-commit={} \
             consumer-bounces={} broker-bounces={} store-bounces={} slow-handlers={}% handler-failures={}% skew={:?}ms",
            self.broker_partitions,
            self.store_partitions,
            self.crashes_in_handler,
            self.crashes_after_commit,
            self.consumer_bounces,
            self.broker_bounces,
            self.store_bounces,
            self.slow_handler_percent,
            self.handler_failure_percent,
            self.skew_ms
        )
    }
}
