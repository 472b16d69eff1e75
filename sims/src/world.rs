//! What every host of a run shares ([`World`]): the seed and settings, the history's
//! recorder, the store host's mailbox, and the counters and generators by which the
//! replicas' handlers and the driver's faults meet.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::Variant;
use crate::clock::sim_ms;
use crate::faults::{FaultMix, ms};
use crate::history::Recorder;
use crate::scenario::Settings;
use crate::store_protocol::SharedMailbox;

/// Everything the hosts share, for one run.
pub(crate) struct World {
    pub(crate) seed: u64,
    pub(crate) settings: Settings,
    pub(crate) variant: Variant,
    pub(crate) mix: FaultMix,
    pub(crate) recorder: Recorder,
    pub(crate) mailbox: SharedMailbox,
    /// Handlers running on each replica (the armed crashes strike when it is above zero).
    pub(crate) in_handler: Vec<AtomicU32>,
    pub(crate) replica_boots: Vec<AtomicU64>,
    /// Per replica: how long each handler takes.
    handler_rng: Vec<Mutex<ChaCha8Rng>>,
    /// Per replica: an armed isolation's length (0: none), taken by the next handler.
    pub(crate) isolation_armed: Vec<AtomicU64>,
    /// Per replica: an isolation a handler asked for (0: none), for the driver to start.
    pub(crate) isolation_due: Vec<AtomicU64>,
    /// Operations that have not ended yet (the audit waits for none).
    pub(crate) ops_left: Arc<AtomicUsize>,
}

impl World {
    /// The world of `seed`, with `ops_total` operations planned; each replica's handler
    /// times are seeded from `rng`.
    pub(crate) fn new(
        seed: u64,
        settings: Settings,
        variant: Variant,
        mix: FaultMix,
        ops_total: usize,
        rng: &mut ChaCha8Rng,
    ) -> World {
        World {
            seed,
            settings,
            variant,
            mix,
            recorder: Recorder::default(),
            mailbox: SharedMailbox::default(),
            in_handler: (0..settings.replicas).map(|_| AtomicU32::new(0)).collect(),
            replica_boots: (0..settings.replicas).map(|_| AtomicU64::new(0)).collect(),
            isolation_armed: (0..settings.replicas).map(|_| AtomicU64::new(0)).collect(),
            isolation_due: (0..settings.replicas).map(|_| AtomicU64::new(0)).collect(),
            ops_left: Arc::new(AtomicUsize::new(ops_total)),
            handler_rng: (0..settings.replicas)
                .map(|r| Mutex::new(ChaCha8Rng::seed_from_u64(rng.random::<u64>() ^ r as u64)))
                .collect(),
        }
    }

    /// How long the next handler on `replica` takes: short, or (a share of them, before
    /// healing) longer than the lease.
    pub(crate) fn handler_delay(&self, replica: usize) -> Duration {
        let mut rng = self.handler_rng[replica].lock().unwrap_or_else(PoisonError::into_inner);
        let before_heal = sim_ms() < ms(self.settings.heal_at);
        let isolation_ms = self.isolation_armed[replica].swap(0, Ordering::SeqCst);
        if isolation_ms > 0 && before_heal {
            // This handler outlives its isolation: its claim is taken over while it runs.
            self.isolation_due[replica].store(isolation_ms, Ordering::SeqCst);
            return Duration::from_millis(isolation_ms + rng.random_range(300..=1_500));
        }
        let slow = before_heal && rng.random_range(0..100) < self.mix.slow_handler_percent;
        let delay_ms = if slow {
            rng.random_range(ms(self.settings.lease) / 2..=self.mix.slow_handler_ms_max)
        } else {
            rng.random_range(5..=50)
        };
        Duration::from_millis(delay_ms)
    }
}
