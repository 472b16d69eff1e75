//! Renewing a claim while its work runs (SPEC vocabulary "renewal": the holder's heartbeat), and
//! telling the transport after each renewal the store applied ([`Heartbeat`]), so a broker's
//! redelivery timer moves with the lease (SPEC "Message consumers").

use std::future::Future;
use std::time::Duration;

use idem_core::{Clock, Fence, Policy, RecordId, Refusal, Renewal, Store};
use tokio::time::{Instant, MissedTickBehavior};

use crate::lease::LeaseState;
use crate::observe;

/// Told after each renewal the store applied. A JetStream consumer sends its in-progress
/// ack here; HTTP has nothing to tell (`()`).
pub trait Heartbeat: Sync {
    /// The lease was renewed; restart whatever timer runs beside it.
    fn renewed(&self) -> impl Future<Output = ()> + Send;
}

impl Heartbeat for () {
    async fn renewed(&self) {}
}

/// Which claim to renew, where, and for how long at most.
#[derive(Clone, Copy)]
pub struct Renewing<'a, S> {
    /// The store holding the claim.
    pub store: &'a S,
    /// The claimed record.
    pub id: &'a RecordId,
    /// The claim's fence.
    pub fence: Fence,
    /// Lease length and renewal interval ([`Policy::renew_every`]).
    pub policy: &'a Policy,
    /// What time it is, for the store.
    pub clock: &'a dyn Clock,
    /// Shared with the work: renewed, or lost.
    pub lease: &'a LeaseState,
    /// The execution ceiling (SPEC "Key lifecycle: execution ceiling"): no renewal once
    /// this long has passed since the renewal started, so a hung execution frees its key
    /// within the ceiling plus one lease (the last renewal, at most the ceiling in, holds
    /// one lease). `None`: renew as long as the work runs.
    pub execution_max: Option<Duration>,
}

/// Runs `work` to its end while renewing the claim every [`Policy::renew_every`] on the
/// runtime's timer (which tokio's paused time and turmoil drive). The renewal never cuts
/// `work` short: it stops when `work` ends, when a renewal is refused, or at the
/// execution ceiling (SPEC "Key lifecycle: execution ceiling"); past the ceiling the
/// lease lapses, a duplicate may take the claim over, and this work's completion is then
/// refused (G3).
pub async fn while_renewing<S: Store, T>(
    renewing: Renewing<'_, S>,
    heartbeat: &impl Heartbeat,
    work: impl Future<Output = T>,
) -> T {
    let renew = async {
        renew_until_refused(renewing, heartbeat).await;
        // Nothing left to renew; the work still runs to its end.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        biased;
        output = work => output,
        () = renew => unreachable!("renewing ends only by pending forever"),
    }
}

/// Renews at each tick until the store refuses or the ceiling is reached; a store error is
/// logged and the renewal tried again at the next tick (two failures in a row still leave
/// a third of the lease). No heartbeat follows a failed renewal: the broker's timer must
/// never outlive the lease by more than one tick.
async fn renew_until_refused<S: Store>(renewing: Renewing<'_, S>, heartbeat: &impl Heartbeat) {
    let Renewing { store, id, fence, policy, clock, lease, execution_max } = renewing;
    let every = policy.renew_every();
    debug_assert!(!every.is_zero(), "a lease is at least 1 ms, so a third of it is not zero");
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(started + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if execution_max.is_some_and(|ceiling| started.elapsed() >= ceiling) {
            tracing::warn!(
                key = id.key.as_str(),
                ?fence,
                "execution ceiling reached; the claim is no longer renewed and lapses with its lease"
            );
            return;
        }
        match observe::store("renew", store.renew(id, fence, clock.now(), policy).await) {
            Ok(Renewal::Renewed { lease_expires_at }) => {
                lease.renewed(lease_expires_at);
                // Bounded, so a stuck broker call cannot delay the next store renewal.
                if tokio::time::timeout(every / 2, heartbeat.renewed()).await.is_err() {
                    tracing::warn!(key = id.key.as_str(), "the heartbeat took over half a renewal interval; dropped");
                }
            }
            Ok(Renewal::Refused(Refusal::AlreadyCompleted { completed_by })) if completed_by == fence => {
                // The work completed the record itself (atomic mode) and is about to return.
                return;
            }
            Ok(Renewal::Refused(refusal)) => {
                tracing::warn!(key = id.key.as_str(), ?fence, %refusal, "renewal refused: another execution took the claim over");
                lease.lose();
                return;
            }
            Err(error) => {
                tracing::warn!(key = id.key.as_str(), %error, "could not renew the claim; trying again at the next tick");
            }
        }
    }
}
