//! Readiness that does not flap: [`Readiness`], a latch that every store write moves, and the
//! recovery probe `/healthz` runs while it is down.
//!
//! A probe that rewrites one existing row can succeed where new payments fail: on a full
//! disk, the row's page has room for its new value while a payment needs fresh pages (tried
//! with a small disk filled by payments: `/healthz` answered 200 to some probes while every
//! payment got 503). So readiness does not rest on that probe alone:
//!
//! * every store write the server sees moves the latch: a failed write (a payment or user
//!   row, a claim, a completion; `LedgerError`, the layer's `Outcome::StoreFailed` with 503,
//!   `Outcome::Unrecorded`) puts it down; a real write that succeeds (a row written, or
//!   `Outcome::Executed`: a claim and its completion) puts it up;
//! * `/healthz` answers 503 (`not-ready`) while the latch is down, and its everyday probe
//!   (the ledger's `check_writable`) can only put it down, never up;
//! * while the latch is down, `/healthz` runs the recovery probe instead
//!   ([`crate::Ledger::check_room`]): a real write that needs what a new payment needs
//!   (fresh storage in the database; a claim in the idempotency store). Only its success
//!   puts the latch up. Without it, a server that load balancers stopped sending requests to
//!   would never see a real write again, and would stay unready for good.
//!
//! Reads (a replay, a list) move nothing: they say nothing about whether writes work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use idem_core::{Fingerprint, Key, Policy, Principal, RecordId, Store, Timestamp};

use crate::ledger_error::LedgerError;

/// The readiness latch: up (ready) until a store write fails, then down until a real write
/// succeeds. Shared by the handlers, the middleware that reads the layer's outcomes and
/// `/healthz`; see the module docs.
#[derive(Debug)]
pub struct Readiness {
    down: AtomicBool,
    /// This latch's number in the process, for its probe key (see [`Readiness::probe_id`]).
    instance: u64,
}

/// Latches made so far in this process: each gets its own probe key, so two apps in one
/// process (the simulations' replicas) never claim the same one.
static INSTANCES: AtomicU64 = AtomicU64::new(0);

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new()
    }
}

impl Readiness {
    /// A latch that is up.
    #[must_use]
    pub fn new() -> Readiness {
        Readiness { down: AtomicBool::new(false), instance: INSTANCES.fetch_add(1, Ordering::Relaxed) }
    }

    /// Whether no store write failed since the last real write succeeded.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    /// A store write failed: not ready until a real write succeeds.
    pub fn write_failed(&self) {
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!("a store write failed: /healthz answers 503 until a write succeeds again");
        }
    }

    /// A real write succeeded (a row, a claim with its completion, the recovery probe).
    /// Never call it for `/healthz`'s everyday probe, which can fit where payments cannot.
    pub fn write_succeeded(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!("a store write succeeded again: /healthz answers 200");
        }
    }

    /// The record id the recovery probe claims: a principal no request can have (request
    /// principals are anonymous or 64 hex digits, `principal::principal_of`) and a key
    /// of this process and latch.
    pub(crate) fn probe_id(&self) -> RecordId {
        let principal = Principal::new("idem-readiness-probe").expect("a constant, valid principal");
        let key = format!("probe-{}-{}", std::process::id(), self.instance);
        RecordId::new(principal, Key::parse(key.as_bytes()).expect("ASCII digits, letters and '-' make a key"))
    }
}

/// The idempotency store's half of the recovery probe: claims `id` and gives the claim back
/// at once, as a request that fails would. A claim is a write (a new record, counted in the
/// store's bounds), so it fails where a new request's claim would: Redis over `maxmemory`,
/// a store at its size limit, a store that is down.
///
/// # Errors
/// The store's error. A claim that does not execute (another replica's probe holds the same
/// key) proves nothing and is an error too: the latch stays down until the next probe.
pub(crate) async fn claim_probe<St: Store>(store: &St, id: &RecordId, now: Timestamp) -> Result<(), LedgerError> {
    // A short lease and retention: a probe whose release was lost frees its key quickly.
    let policy = Policy::new(std::time::Duration::from_secs(1), std::time::Duration::from_secs(2))
        .expect("a retention longer than the lease is a valid policy");
    let fingerprint = Fingerprint::of("PROBE", "/healthz", b"");
    match store.claim(id, &fingerprint, now, &policy).await.map_err(LedgerError::Unavailable)? {
        idem_core::Decision::Execute(claim) | idem_core::Decision::TakeOver { claim, .. } => {
            // The claim was the write that proves room; a refused release (the probe's short
            // lease lapsed and another probe took the key over) changes nothing of that.
            let _ = store.release(id, claim.fence).await.map_err(LedgerError::Unavailable)?;
            Ok(())
        }
        _ => Err(LedgerError::Unavailable(idem_core::StoreError::unavailable(
            "the readiness probe's claim did not execute (another probe holds it)",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latch_goes_down_on_a_failed_write_and_up_only_on_a_successful_one() {
        // Goal: the latch's two moves; a success after a failure is what brings it back.
        let latch = Readiness::new();
        assert!(latch.is_ready());
        latch.write_failed();
        latch.write_failed();
        assert!(!latch.is_ready());
        latch.write_succeeded();
        assert!(latch.is_ready());
    }

    #[test]
    fn each_latch_has_its_own_probe_key() {
        // Goal: two apps in one process never claim the same probe record.
        assert_ne!(Readiness::new().probe_id(), Readiness::new().probe_id());
    }
}
