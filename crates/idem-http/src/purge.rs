//! Expiry that runs by itself: the layer forgets expired records on a schedule, so a
//! service's store stays bounded without purge code of its own (SPEC: old keys expire;
//! a store at its record bound answers `store-full` until records are purged).
//!
//! The layer starts its purge task on its first request (a tokio runtime exists then) and
//! stops it when the last clone of the layer is dropped. Each round calls
//! [`Store::purge_expired`] at the layer's clock's time, in batches of
//! [`PurgeSchedule::batch_max`], at most [`PurgeSchedule::batches_per_round_max`] batches, so
//! a round's work is bounded. Progress goes to the log (`idem_http::purge`, one line per round
//! that purged something) and to the counter `idem_purged_records_total`; a failed round is
//! logged, counted in `idem_store_errors_total{operation="purge_expired"}`, and tried again
//! at the next one.
//!
//! Turn it off ([`crate::IdempotencyBuilder::no_purge`]) when the application runs its own
//! purge (as `idem serve` does, so simulations drive it) or in tests that move time by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use idem_core::{Clock, Store};
use tokio_util::sync::CancellationToken;

use crate::observe;

/// How often expired records are forgotten, in bounded work per round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeSchedule {
    /// Time between rounds (on tokio's timer). The first round runs one interval after start.
    pub every: Duration,
    /// Records deleted per store call.
    pub batch_max: usize,
    /// Store calls per round at most.
    pub batches_per_round_max: usize,
}

impl PurgeSchedule {
    /// Every minute, 1,000 records per call, at most 100 calls (100,000 records) per round.
    pub const DEFAULT: PurgeSchedule =
        PurgeSchedule { every: Duration::from_secs(60), batch_max: 1_000, batches_per_round_max: 100 };
}

impl Default for PurgeSchedule {
    fn default() -> Self {
        PurgeSchedule::DEFAULT
    }
}

/// One round: purge in batches until a batch comes back short, the round's bound is
/// reached, or the store fails. Returns the records forgotten.
pub async fn purge_round<St: Store + ?Sized>(store: &St, clock: &dyn Clock, schedule: PurgeSchedule) -> usize {
    let mut purged = 0;
    for _ in 0..schedule.batches_per_round_max {
        match observe::store("purge_expired", store.purge_expired(clock.now(), schedule.batch_max).await) {
            Ok(count) => {
                purged += count;
                metrics::counter!(observe::PURGED_RECORDS_TOTAL).increment(count as u64);
                if count < schedule.batch_max {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(target: "idem_http::purge", %error, "purging expired records failed; trying again next round");
                break;
            }
        }
    }
    if purged > 0 {
        tracing::info!(target: "idem_http::purge", purged, "forgot expired idempotency records");
    }
    purged
}

/// Runs [`purge_round`] every [`PurgeSchedule::every`] until `cancel` fires.
pub async fn purge_until_cancelled<St: Store + ?Sized>(
    store: Arc<St>,
    clock: Arc<dyn Clock>,
    schedule: PurgeSchedule,
    cancel: CancellationToken,
) {
    let first = tokio::time::Instant::now() + schedule.every;
    let mut every = tokio::time::interval_at(first, schedule.every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = every.tick() => {
                purge_round(&*store, &*clock, schedule).await;
            }
        }
    }
}

/// The layer's purge task: started once, cancelled when the layer's configuration is
/// dropped (the last clone of the layer and its services).
#[derive(Debug)]
pub(crate) struct Purger {
    schedule: Option<PurgeSchedule>,
    started: AtomicBool,
    cancel: CancellationToken,
}

impl Purger {
    pub(crate) fn new(schedule: Option<PurgeSchedule>) -> Purger {
        Purger { schedule, started: AtomicBool::new(false), cancel: CancellationToken::new() }
    }

    /// Starts the purge task on the current runtime, the first time only.
    pub(crate) fn start_once<St: Store + 'static>(&self, store: &Arc<St>, clock: &Arc<dyn Clock>) {
        let Some(schedule) = self.schedule else { return };
        if self.started.load(Ordering::Relaxed) || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Not on a tokio runtime: nothing to run the task on; try again next request.
            self.started.store(false, Ordering::Release);
            return;
        };
        let task = purge_until_cancelled(Arc::clone(store), Arc::clone(clock), schedule, self.cancel.clone());
        runtime.spawn(task);
    }
}

impl Drop for Purger {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
