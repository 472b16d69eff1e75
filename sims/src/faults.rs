//! Faults as data, swarm style: each seed picks which kinds of fault it injects and how
//! hard ([`FaultMix`], printed at the start of every trace), then a schedule of actions in
//! simulated time, all before the healed phase.

use std::fmt;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::scenario::Settings;

/// The faults one seed injects and their intensities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultMix {
    /// Partitions between a client and a replica.
    pub client_partitions: u32,
    /// Partitions between a replica and the store host.
    pub store_partitions: u32,
    /// Of all partitions, the share (percent) that cut one direction only.
    pub one_way_percent: u32,
    /// Links whose messages are held, then released together.
    pub holds: u32,
    /// Links whose latency spikes.
    pub latency_spikes: u32,
    /// The highest latency of a spike, in milliseconds.
    pub spike_ms_max: u64,
    /// Replica crashes armed to strike while a handler runs (then a restart).
    pub crashes_in_handler: u32,
    /// Replica-store partitions armed to strike when a handler starts, longer than the
    /// lease, healing before that (slowed) handler ends: its claim is taken over while it runs.
    pub isolations_in_handler: u32,
    /// Plain replica restarts at any moment.
    pub replica_bounces: u32,
    /// Store host outages (crash, then restart).
    pub store_bounces: u32,
    /// Share (percent) of handlers that run slower than the lease, before healing.
    pub slow_handler_percent: u32,
    /// How long a slow handler runs at most, in milliseconds.
    pub slow_handler_ms_max: u64,
    /// The clients' per-attempt timeout, in milliseconds (may be shorter than a handler).
    pub attempt_timeout_ms: u64,
    /// Each replica's clock skew, in milliseconds.
    pub skew_ms: Vec<i64>,
    /// The consumer scenarios' own faults (the fields above are then all zero).
    pub consumer: Option<crate::consumer::ConsumerMix>,
}

impl FaultMix {
    /// Draws a mix: each kind of fault is on or off with even odds, and its intensity is drawn.
    pub(crate) fn draw(rng: &mut ChaCha8Rng, settings: &Settings) -> FaultMix {
        let some = |rng: &mut ChaCha8Rng, max: u32| if rng.random_bool(0.5) { rng.random_range(1..=max) } else { 0 };
        let client_partitions = some(rng, 4);
        let store_partitions = some(rng, 3);
        let holds = some(rng, 3);
        let latency_spikes = some(rng, 3);
        let crashes_in_handler = some(rng, 2);
        let isolations_in_handler = some(rng, 3);
        let replica_bounces = some(rng, 2);
        let store_bounces = some(rng, 2);
        let slow = rng.random_bool(0.5);
        let skewed = rng.random_bool(0.5);
        let skew_max = i64::try_from(settings.skew_max.as_millis()).unwrap_or(i64::MAX);
        FaultMix {
            client_partitions,
            store_partitions,
            one_way_percent: rng.random_range(0..=100),
            holds,
            latency_spikes,
            spike_ms_max: rng.random_range(200..=2_000),
            crashes_in_handler,
            isolations_in_handler,
            replica_bounces,
            store_bounces,
            slow_handler_percent: if slow { rng.random_range(10..=60) } else { 0 },
            slow_handler_ms_max: rng.random_range(2_500..=6_000),
            attempt_timeout_ms: rng.random_range(400..=6_000),
            skew_ms: (0..settings.replicas)
                .map(|_| if skewed { rng.random_range(-skew_max..=skew_max) } else { 0 })
                .collect(),
            consumer: None,
        }
    }

    /// The mix of a consumer scenario: only its own faults.
    pub(crate) fn of_consumers(mix: crate::consumer::ConsumerMix) -> FaultMix {
        FaultMix {
            client_partitions: 0,
            store_partitions: 0,
            one_way_percent: 0,
            holds: 0,
            latency_spikes: 0,
            spike_ms_max: 0,
            crashes_in_handler: 0,
            isolations_in_handler: 0,
            replica_bounces: 0,
            store_bounces: 0,
            slow_handler_percent: 0,
            slow_handler_ms_max: 0,
            attempt_timeout_ms: 0,
            skew_ms: Vec::new(),
            consumer: Some(mix),
        }
    }

    /// The schedule of actions, sorted by time; every window closes by the healing.
    pub(crate) fn schedule(&self, rng: &mut ChaCha8Rng, settings: &Settings) -> Vec<Scheduled> {
        let heal_ms = ms(settings.heal_at);
        let mut actions = Vec::new();
        let window = |rng: &mut ChaCha8Rng, length_max: u64| {
            let start = rng.random_range(300..heal_ms - 300);
            let length = rng.random_range(200..=length_max).min(heal_ms - start);
            (start, start + length)
        };
        let pick = |rng: &mut ChaCha8Rng, n: usize| rng.random_range(0..n);
        for _ in 0..self.client_partitions {
            let (from, to) = window(rng, 4_000);
            let (a, b) = (Node::Client(pick(rng, settings.clients)), Node::Replica(pick(rng, settings.replicas)));
            let one_way = self.one_way(rng, a, b);
            actions.push(Scheduled { at_ms: from, action: Action::Partition { a, b, one_way } });
            actions.push(Scheduled { at_ms: to, action: Action::Repair { a, b, one_way } });
        }
        for _ in 0..self.store_partitions {
            let (from, to) = window(rng, 5_000);
            let (a, b) = (Node::Replica(pick(rng, settings.replicas)), Node::Store);
            let one_way = self.one_way(rng, a, b);
            actions.push(Scheduled { at_ms: from, action: Action::Partition { a, b, one_way } });
            actions.push(Scheduled { at_ms: to, action: Action::Repair { a, b, one_way } });
        }
        for _ in 0..self.holds {
            let (from, to) = window(rng, 2_000);
            let replica = Node::Replica(pick(rng, settings.replicas));
            let other = if rng.random_bool(0.5) { Node::Store } else { Node::Client(pick(rng, settings.clients)) };
            actions.push(Scheduled { at_ms: from, action: Action::Hold { a: replica, b: other } });
            actions.push(Scheduled { at_ms: to, action: Action::Release { a: replica, b: other } });
        }
        for _ in 0..self.latency_spikes {
            let (from, to) = window(rng, 3_000);
            let replica = Node::Replica(pick(rng, settings.replicas));
            let other = if rng.random_bool(0.5) { Node::Store } else { Node::Client(pick(rng, settings.clients)) };
            let max_ms = rng.random_range(100..=self.spike_ms_max);
            actions.push(Scheduled { at_ms: from, action: Action::Spike { a: replica, b: other, max_ms } });
            actions.push(Scheduled { at_ms: to, action: Action::Unspike { a: replica, b: other } });
        }
        for _ in 0..self.crashes_in_handler {
            let (from, to) = window(rng, 4_000);
            let downtime_ms = rng.random_range(200..=3_000);
            let replica = pick(rng, settings.replicas);
            actions.push(Scheduled { at_ms: from, action: Action::ArmCrash { replica, until_ms: to, downtime_ms } });
        }
        for _ in 0..self.isolations_in_handler {
            let (from, to) = window(rng, 4_000);
            let length_ms = rng.random_range(ms(settings.lease) + 300..=ms(settings.lease) * 2);
            let replica = pick(rng, settings.replicas);
            actions.push(Scheduled { at_ms: from, action: Action::ArmIsolation { replica, until_ms: to, length_ms } });
        }
        for _ in 0..self.replica_bounces {
            let (at, _) = window(rng, 200);
            actions.push(Scheduled { at_ms: at, action: Action::Bounce { replica: pick(rng, settings.replicas) } });
        }
        for _ in 0..self.store_bounces {
            let (from, to) = window(rng, 2_500);
            actions.push(Scheduled { at_ms: from, action: Action::CrashStore });
            actions.push(Scheduled { at_ms: to, action: Action::RestartStore });
        }
        actions.push(Scheduled { at_ms: heal_ms, action: Action::Heal });
        // Stable: actions at the same time keep the order they were drawn in.
        actions.sort_by_key(|scheduled| scheduled.at_ms);
        actions
    }

    fn one_way(&self, rng: &mut ChaCha8Rng, a: Node, b: Node) -> Option<(Node, Node)> {
        if rng.random_range(0..100) >= self.one_way_percent {
            return None;
        }
        Some(if rng.random_bool(0.5) { (a, b) } else { (b, a) })
    }
}

impl fmt::Display for FaultMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(consumer) = &self.consumer {
            return write!(f, "{consumer}");
        }
        write!(
            f,
            "client-partitions={} store-partitions={} one-way={}% holds={} latency-spikes={}(<={}ms) \
             crashes-in-handler={} isolations-in-handler={} replica-bounces={} store-bounces={} slow-handlers={}%(<={}ms) \
             attempt-timeout={}ms skew={:?}ms",
            self.client_partitions,
            self.store_partitions,
            self.one_way_percent,
            self.holds,
            self.latency_spikes,
            self.spike_ms_max,
            self.crashes_in_handler,
            self.isolations_in_handler,
            self.replica_bounces,
            self.store_bounces,
            self.slow_handler_percent,
            self.slow_handler_ms_max,
            self.attempt_timeout_ms,
            self.skew_ms
        )
    }
}

pub(crate) fn ms(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A simulated host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    Client(usize),
    Replica(usize),
    Store,
}

impl Node {
    pub(crate) fn name(self) -> String {
        match self {
            Node::Client(c) => format!("client-{c}"),
            Node::Replica(r) => format!("replica-{r}"),
            Node::Store => crate::store_protocol::STORE_HOST.to_owned(),
        }
    }
}

/// One fault action at a simulated time.
#[derive(Debug, Clone)]
pub(crate) struct Scheduled {
    pub(crate) at_ms: u64,
    pub(crate) action: Action,
}

#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Both ways, or one way (from, to).
    Partition {
        a: Node,
        b: Node,
        one_way: Option<(Node, Node)>,
    },
    Repair {
        a: Node,
        b: Node,
        one_way: Option<(Node, Node)>,
    },
    Hold {
        a: Node,
        b: Node,
    },
    Release {
        a: Node,
        b: Node,
    },
    Spike {
        a: Node,
        b: Node,
        max_ms: u64,
    },
    Unspike {
        a: Node,
        b: Node,
    },
    /// Crash `replica` the first moment a handler runs on it before `until_ms`; restart
    /// it `downtime_ms` later.
    ArmCrash {
        replica: usize,
        until_ms: u64,
        downtime_ms: u64,
    },
    /// The next handler to start on `replica` before `until_ms` runs `length_ms` and more,
    /// and the replica is cut from the store for `length_ms` from its start.
    ArmIsolation {
        replica: usize,
        until_ms: u64,
        length_ms: u64,
    },
    Bounce {
        replica: usize,
    },
    CrashStore,
    RestartStore,
    /// Everything is repaired, released and restarted.
    Heal,
}
