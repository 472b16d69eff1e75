//! The rules around a decision that a server layer answers by: which handler responses
//! are recorded and which give the claim back, the `Retry-After` hint of an answer "in
//! progress", and what an execution that lost its claim answers instead of its own
//! response. idem-http applies these; the model checker drives the same functions.

use std::time::Duration;

use crate::transition::{self, Look};
use crate::{ClaimRequest, Holder, Record, StoredResponse, Timestamp};

/// What becomes of a claim once its handler answered with a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Disposition {
    /// Record the response; every retry replays it.
    Record,
    /// Give the claim back without a response, so a retry may execute (the handler must
    /// not have committed anything).
    Release,
}

/// Which statuses record and which release (SPEC "HTTP behaviour"): 2xx and 4xx record,
/// except the "try again later" answers (by default 408, 425 and 429); 5xx release. A
/// configuration may choose otherwise with these fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StatusRules {
    /// Record 5xx responses too, instead of releasing.
    pub record_server_errors: bool,
    /// Record the try-later statuses too, instead of releasing.
    pub record_try_later: bool,
    /// Which 4xx statuses mean "try again later" (default [`TRY_LATER_STATUSES`]).
    pub try_later: TryLaterStatuses,
}

/// The default "try again later" statuses: 408 Request Timeout, 425 Too Early, 429 Too Many
/// Requests.
pub const TRY_LATER_STATUSES: [u16; 3] = [408, 425, 429];

/// A set of 4xx statuses that mean "try again later": a handler answering one of them
/// releases its claim (unless [`StatusRules::record_try_later`]), so the retry runs it.
/// Only 4xx can be in it (5xx release anyway; 2xx and 3xx are outcomes to record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TryLaterStatuses {
    /// Bit `status - 400` for each status in the set.
    bits: u128,
}

impl TryLaterStatuses {
    /// The set of `statuses`, or the first one that is not a 4xx status.
    ///
    /// # Errors
    /// The first status outside 400..=499.
    pub fn of(statuses: impl IntoIterator<Item = u16>) -> Result<TryLaterStatuses, u16> {
        let mut bits = 0_u128;
        for status in statuses {
            if !(400..500).contains(&status) {
                return Err(status);
            }
            bits |= 1 << (status - 400);
        }
        Ok(TryLaterStatuses { bits })
    }

    /// Whether `status` is in the set.
    #[must_use]
    pub fn contains(&self, status: u16) -> bool {
        (400..500).contains(&status) && self.bits & (1 << (status - 400)) != 0
    }
}

impl Default for TryLaterStatuses {
    fn default() -> Self {
        TryLaterStatuses::of(TRY_LATER_STATUSES).expect("the defaults are 4xx statuses")
    }
}

impl StatusRules {
    /// What a handler's response with `status` does to its claim.
    pub fn disposition(&self, status: u16) -> Disposition {
        let server_error = (500..600).contains(&status);
        let try_later = self.try_later.contains(status);
        if (server_error && !self.record_server_errors) || (try_later && !self.record_try_later) {
            Disposition::Release
        } else {
            Disposition::Record
        }
    }
}

/// The shortest `Retry-After` a layer sends: HTTP counts it in whole seconds, and zero
/// would invite a retry storm.
pub const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);

/// The `Retry-After` for an answer "in progress" whose claim holds `lease_left` more:
/// the lease left, capped at `cap` (a retrying client with a shorter budget than a whole
/// lease should look again soon), rounded up to whole seconds, at least [`RETRY_AFTER_MIN`].
#[must_use]
pub fn retry_after(lease_left: Duration, cap: Duration) -> Duration {
    let hint = lease_left.min(cap);
    let whole_seconds = hint.as_secs().saturating_add(u64::from(hint.subsec_nanos() > 0));
    Duration::from_secs(whole_seconds).max(RETRY_AFTER_MIN)
}

/// What an execution whose claim was lost (its completion, release or renewal refused:
/// another request took it over) answers instead of its own response (G2).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Superseded {
    /// The record is completed: answer the recorded response, as a replay.
    Replay {
        /// The recorded response.
        response: StoredResponse,
        /// When the record's retention ends.
        expires_at: Timestamp,
    },
    /// Another claim is in flight, or none is held any more: answer "in progress" with
    /// this lease left (zero when the client may retry at once).
    InProgress {
        /// The lease left of the claim in flight, or zero.
        lease_left: Duration,
        /// When the in-flight record's retention ends; `None` when no live claim holds the
        /// key (no record, or a lapsed one), so there is no expiry to state.
        expires_at: Option<Timestamp>,
        /// Who holds the claim in flight ([`Holder::NONE`] when none does, or it is unknown).
        holder: Holder,
    },
    /// The key now belongs to a different request: answer the mismatch.
    Mismatch {
        /// When the record that holds the key expires.
        expires_at: Timestamp,
    },
    /// Only the record's tombstone remains: answer "gone".
    Gone {
        /// When the tombstone is forgotten.
        expires_at: Timestamp,
    },
}

/// What an execution that lost its claim answers, from the record as now stored.
pub fn superseded(record: Option<&Record>, request: &ClaimRequest, now: Timestamp) -> Superseded {
    match transition::look(record, request, now) {
        Look::Replay { response, expires_at } => Superseded::Replay { response, expires_at },
        Look::InProgress { lease_left, expires_at, holder } => {
            Superseded::InProgress { lease_left, expires_at: Some(expires_at), holder }
        }
        Look::Absent | Look::Lapsed { .. } => {
            Superseded::InProgress { lease_left: Duration::ZERO, expires_at: None, holder: Holder::NONE }
        }
        Look::Mismatch { expires_at } => Superseded::Mismatch { expires_at },
        Look::Gone { expires_at } => Superseded::Gone { expires_at },
    }
}

/// Whether a request waiting for the claim in flight (SPEC: "or wait, if configured")
/// should keep waiting, given the record it just read: yes while another claim for the
/// same request holds a valid lease; otherwise it claims, and the decision table answers.
#[must_use]
pub fn keep_waiting(record: Option<&Record>, request: &ClaimRequest, now: Timestamp) -> Option<Duration> {
    match transition::look(record, request, now) {
        Look::InProgress { lease_left, .. } => Some(lease_left),
        Look::Absent | Look::Lapsed { .. } | Look::Replay { .. } | Look::Mismatch { .. } | Look::Gone { .. } => None,
    }
}
