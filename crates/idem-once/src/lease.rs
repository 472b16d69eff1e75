//! What an execution knows about its own claim while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use idem_core::{Fence, RecordId, Timestamp};

/// The lease of one running execution, shared by the renewal and the work: when it lapses,
/// and whether it was lost for good.
#[derive(Debug)]
pub struct LeaseState {
    expires_at_ms: AtomicU64,
    lost: AtomicBool,
}

impl LeaseState {
    /// A lease that lapses at `expires_at`, not lost.
    #[must_use]
    pub fn new(expires_at: Timestamp) -> LeaseState {
        LeaseState { expires_at_ms: AtomicU64::new(expires_at.unix_ms()), lost: AtomicBool::new(false) }
    }

    /// When the lease lapses unless renewed again.
    #[must_use]
    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_unix_ms(self.expires_at_ms.load(Ordering::SeqCst))
    }

    /// A renewal moved the lease's end to `expires_at` (a renewal never shortens it).
    pub fn renewed(&self, expires_at: Timestamp) {
        self.expires_at_ms.fetch_max(expires_at.unix_ms(), Ordering::SeqCst);
    }

    /// Whether a renewal was refused: another claim holds the record now (G3).
    #[must_use]
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// A renewal was refused: the claim belongs to another execution now, for good.
    pub fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }
}

/// What running work may read about its claim: the record id, the fence its completion
/// presents, when its lease lapses, and whether it was lost (then its completion will be
/// refused, so it may stop early; in atomic mode nothing of it commits either way).
#[derive(Debug, Clone)]
pub struct ClaimScope {
    id: RecordId,
    fence: Fence,
    lease: Arc<LeaseState>,
}

impl ClaimScope {
    pub(crate) fn new(id: RecordId, fence: Fence, lease: Arc<LeaseState>) -> ClaimScope {
        ClaimScope { id, fence, lease }
    }

    /// The record id: (principal, key).
    #[must_use]
    pub fn id(&self) -> &RecordId {
        &self.id
    }

    /// The claim's fence.
    #[must_use]
    pub fn fence(&self) -> Fence {
        self.fence
    }

    /// When the claim lapses unless renewed; renewal moves it on while the work runs.
    #[must_use]
    pub fn lease_expires_at(&self) -> Timestamp {
        self.lease.expires_at()
    }

    /// Whether the claim was lost to a take-over.
    #[must_use]
    pub fn lost(&self) -> bool {
        self.lease.is_lost()
    }
}
