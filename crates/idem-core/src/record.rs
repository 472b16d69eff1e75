//! What a store keeps: who asked, under which key, for what, and what came of it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::{Fingerprint, Holder, Key, Timestamp};

/// The longest principal, in bytes.
pub const PRINCIPAL_BYTES_MAX: usize = 255;

/// Why a string is not a principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalError {
    /// Empty: the empty principal is reserved for [`Principal::anonymous`].
    #[error("principal is empty (the empty principal is reserved for anonymous callers)")]
    Empty,
    /// Longer than [`PRINCIPAL_BYTES_MAX`] bytes.
    #[error("principal has {bytes} bytes, at most {PRINCIPAL_BYTES_MAX} are allowed")]
    TooLong {
        /// Its length in bytes.
        bytes: usize,
    },
    /// Holds a control character.
    #[error("principal holds a control character")]
    ControlCharacter,
}

/// Who is asking. Keys are always scoped by principal (G4): two principals never share
/// a record, even when they send the same key string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Principal(Arc<str>);

impl Principal {
    /// A named principal: 1..=255 bytes, no control characters.
    ///
    /// # Errors
    /// [`PrincipalError`] when the name breaks those rules.
    pub fn new(name: &str) -> Result<Principal, PrincipalError> {
        if name.is_empty() {
            return Err(PrincipalError::Empty);
        }
        if name.len() > PRINCIPAL_BYTES_MAX {
            return Err(PrincipalError::TooLong { bytes: name.len() });
        }
        if name.chars().any(char::is_control) {
            return Err(PrincipalError::ControlCharacter);
        }
        Ok(Principal(Arc::from(name)))
    }

    /// The caller who did not authenticate. It is the empty name, which
    /// [`Principal::new`] refuses, so no named principal can collide with it.
    #[must_use]
    pub fn anonymous() -> Principal {
        Principal(Arc::from(""))
    }

    /// The principal's name (empty for the anonymous principal).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is [`Principal::anonymous`].
    #[must_use]
    pub fn is_anonymous(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_anonymous() { f.write_str("Principal(anonymous)") } else { write!(f, "Principal({:?})", &*self.0) }
    }
}

/// The identity of a record: (principal, key).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RecordId {
    /// Who sent the key.
    pub principal: Principal,
    /// The key they sent.
    pub key: Key,
}

impl RecordId {
    /// The record id of `key` as sent by `principal`.
    #[must_use]
    pub fn new(principal: Principal, key: Key) -> RecordId {
        RecordId { principal, key }
    }

    /// Bytes this id occupies in a store, for size limits.
    #[must_use]
    pub fn stored_bytes(&self) -> usize {
        self.principal.as_str().len() + self.key.as_str().len()
    }
}

/// The token of one claim. A completion or release is accepted only with the fence of
/// the current claim (G3). A store issues fences from one counter that only grows, so a
/// fence is never reused for a record id, not after a release, a take-over or a purge.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence(u64);

impl Fence {
    /// The first fence a store issues.
    pub const FIRST: Fence = Fence(1);

    /// A fence from its number, e.g. as read back from a store.
    #[must_use]
    pub const fn new(number: u64) -> Fence {
        Fence(number)
    }

    /// The fence's number.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The fence issued after this one.
    ///
    /// # Panics
    /// After `u64::MAX` claims, which no store reaches (2^64 claims at a billion a second
    /// take 584 years); wrapping would reuse fences, so it is refused loudly.
    #[must_use]
    pub fn next(self) -> Fence {
        Fence(self.0.checked_add(1).expect("fence counter exhausted after 2^64 claims"))
    }
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "f{}", self.0)
    }
}

/// At most this many headers are stored with a response.
pub const STORED_HEADERS_MAX: usize = 64;

/// A response as recorded for replay: status, the headers worth replaying, body bytes.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct StoredResponse {
    /// HTTP status code.
    pub status: u16,
    /// Header names (lower-case) and values, in the order they are to be replayed.
    pub headers: Vec<(String, Bytes)>,
    /// The body, byte for byte.
    pub body: Bytes,
}

impl StoredResponse {
    /// A response with no stored headers.
    #[must_use]
    pub fn new(status: u16, body: impl Into<Bytes>) -> StoredResponse {
        StoredResponse { status, headers: Vec::new(), body: body.into() }
    }

    /// Bytes this response occupies in a store, for size limits.
    #[must_use]
    pub fn stored_bytes(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(name, value)| name.len() + value.len()).sum();
        headers + self.body.len()
    }
}

/// The default lease. Short, because the holder renews it every third of a lease while
/// its handler runs ([`Policy::renew_every`]): a crashed holder blocks its key for at
/// most this long, which is less than a retrying client's default budget (idem-client's
/// defaults are checked against it at compile time).
pub const LEASE_DEFAULT: Duration = Duration::from_secs(10);

/// Renewals per lease: the holder renews every `lease / RENEWALS_PER_LEASE`.
pub const RENEWALS_PER_LEASE: u32 = 3;

/// The longest tombstone period a [`Policy`] accepts: 366 days.
pub const TOMBSTONE_MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// How long claims, records and tombstones live.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Policy {
    lease: Duration,
    retention: Duration,
    tombstone: Option<Duration>,
}

/// Why a [`Policy`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The lease is zero or shorter than a millisecond.
    #[error("lease must be at least 1 ms")]
    LeaseTooShort,
    /// Retention must outlast the lease, or an in-flight record could expire while its
    /// claim is still valid.
    #[error("retention ({retention:?}) must be longer than the lease ({lease:?})")]
    RetentionNotLongerThanLease {
        /// The lease asked for.
        lease: Duration,
        /// The retention asked for.
        retention: Duration,
    },
    /// The tombstone period is zero or longer than [`TOMBSTONE_MAX`].
    #[error("a tombstone must last 1 ms to {TOMBSTONE_MAX:?}, not {0:?}")]
    TombstoneOutOfRange(Duration),
}

impl Policy {
    /// The defaults: a [`LEASE_DEFAULT`] (10 s) lease, renewed while the handler runs, and
    /// 24 h retention (SPEC, "HTTP behaviour").
    pub const DEFAULT: Policy =
        Policy { lease: LEASE_DEFAULT, retention: Duration::from_secs(24 * 3600), tombstone: None };

    /// A policy with the given lease and retention.
    ///
    /// # Errors
    /// When the lease is under 1 ms or the retention is not longer than the lease.
    pub fn new(lease: Duration, retention: Duration) -> Result<Policy, PolicyError> {
        if lease < Duration::from_millis(1) {
            return Err(PolicyError::LeaseTooShort);
        }
        if retention <= lease {
            return Err(PolicyError::RetentionNotLongerThanLease { lease, retention });
        }
        Ok(Policy { lease, retention, tombstone: None })
    }

    /// This policy, with completed records leaving a tombstone for `period` after their
    /// retention (SPEC "Key lifecycle"): the same key then gets [`crate::Decision::Gone`]
    /// and never runs again until the tombstone is purged in turn.
    ///
    /// # Errors
    /// [`PolicyError::TombstoneOutOfRange`] unless 1 ms <= `period` <= [`TOMBSTONE_MAX`].
    pub fn with_tombstone(self, period: Duration) -> Result<Policy, PolicyError> {
        if period < Duration::from_millis(1) || period > TOMBSTONE_MAX {
            return Err(PolicyError::TombstoneOutOfRange(period));
        }
        Ok(Policy { tombstone: Some(period), ..self })
    }

    /// How long a completed record's tombstone stays after its retention, if it leaves one.
    #[must_use]
    pub const fn tombstone(&self) -> Option<Duration> {
        self.tombstone
    }

    /// How long a claim stays valid without completion.
    #[must_use]
    pub const fn lease(&self) -> Duration {
        self.lease
    }

    /// How long a record is kept.
    #[must_use]
    pub const fn retention(&self) -> Duration {
        self.retention
    }

    /// How often a holder renews its lease while its handler runs: a third of the lease,
    /// so two renewals in a row may fail (a store hiccup) before the claim lapses.
    #[must_use]
    pub fn renew_every(&self) -> Duration {
        self.lease / RENEWALS_PER_LEASE
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::DEFAULT
    }
}

/// A record as a store keeps it.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Record {
    /// What the first request asked for; later requests must match it.
    pub fingerprint: Fingerprint,
    /// The fence of the claim that made the record what it is now.
    pub fence: Fence,
    /// When the claim that made the record was taken (a take-over restarts it): what an
    /// operator's listing filters by age.
    pub created_at: Timestamp,
    /// When the record's retention ends: in flight, only once its lease lapsed too; for a
    /// tombstone, when the tombstone is forgotten.
    pub expires_at: Timestamp,
    /// In flight, completed, or a tombstone.
    pub state: RecordState,
}

/// Where a record is in its life. Absent is the lack of a record.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum RecordState {
    /// A handler holds the claim `Record::fence` until the lease lapses.
    InFlight {
        /// When the claim stops being valid without completion.
        lease_expires_at: Timestamp,
        /// Who holds the claim.
        holder: Holder,
        /// How many renewals extended the lease.
        renewals: u32,
    },
    /// The response is recorded; retries replay it.
    Completed {
        /// The recorded response.
        response: StoredResponse,
        /// How many replays were counted ([`crate::Store::count_replay`], best effort).
        replays: u64,
        /// When the tombstone this record leaves after its retention is forgotten, if it
        /// leaves one ([`Policy::tombstone`]).
        tombstone_until: Option<Timestamp>,
    },
    /// The record's retention ended and only this much of it is left, until `expires_at`:
    /// the key is never executed again meanwhile (SPEC "Key lifecycle").
    Tombstone,
}

impl RecordState {
    /// The state's name, as stores and operators spell it: `in_flight`, `completed`, `tombstone`.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            RecordState::InFlight { .. } => "in_flight",
            RecordState::Completed { .. } => "completed",
            RecordState::Tombstone => "tombstone",
        }
    }
}

impl Record {
    /// Bytes this record occupies in a store (without its id), for size limits.
    #[must_use]
    pub fn stored_bytes(&self) -> usize {
        const FIXED_BYTES: usize = 64; // fingerprint, fence, times, counts, status: rounded up
        match &self.state {
            RecordState::InFlight { holder, .. } => FIXED_BYTES + holder.stored_bytes(),
            RecordState::Completed { response, .. } => FIXED_BYTES + response.stored_bytes(),
            RecordState::Tombstone => FIXED_BYTES,
        }
    }

    /// When the record starts to count as absent: its retention's end, or for an
    /// in-flight record whose lease outlasts that, the lease's end; for a completed
    /// record that leaves a tombstone, the tombstone's end.
    #[must_use]
    pub fn forgettable_at(&self) -> Timestamp {
        match self.state {
            RecordState::InFlight { lease_expires_at, .. } => self.expires_at.max(lease_expires_at),
            RecordState::Completed { tombstone_until, .. } => tombstone_until.unwrap_or(self.expires_at),
            RecordState::Tombstone => self.expires_at,
        }
    }

    /// When a purge must next visit the record ([`crate::step::op::Expire`]): to forget
    /// it, or, for a completed record that leaves a tombstone, to shrink it to one at
    /// the end of its retention. Stores index records by this time.
    #[must_use]
    pub fn due_at(&self) -> Timestamp {
        match self.state {
            RecordState::Completed { .. } => self.expires_at,
            RecordState::InFlight { .. } | RecordState::Tombstone => self.forgettable_at(),
        }
    }

    /// Whether the record counts as absent at `now`: past [`Record::forgettable_at`].
    #[must_use]
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.forgettable_at()
    }

    /// Whether the record answers [`crate::Decision::Gone`] at `now`: a tombstone, or a
    /// completed record past its retention whose tombstone has not ended.
    #[must_use]
    pub fn is_tombstone(&self, now: Timestamp) -> bool {
        match self.state {
            RecordState::Tombstone => !self.is_expired(now),
            RecordState::Completed { tombstone_until: Some(_), .. } => now >= self.expires_at && !self.is_expired(now),
            RecordState::Completed { .. } | RecordState::InFlight { .. } => false,
        }
    }

    /// What an answer for this record at `now` states as its expiry (SPEC "Key
    /// lifecycle", expiry on the wire): the end of its retention, or while it is a
    /// tombstone, the tombstone's end.
    #[must_use]
    pub fn answered_expiry(&self, now: Timestamp) -> Timestamp {
        if self.is_tombstone(now) { self.forgettable_at() } else { self.expires_at }
    }
}
