//! Values the store crates' own tests share beside the suite: one id, fingerprint,
//! policy and response each, so a store's test reads the same as another's.
//!
//! Times are absolute milliseconds since the epoch ([`at`]); the policy is short (a 1 s
//! lease, a 10 s retention) so tests move time in small steps.

use std::time::Duration;

use bytes::Bytes;

use crate::{Clock, Decision, Fingerprint, Key, Policy, Principal, RecordId, StoredResponse, SystemClock, Timestamp};

/// The lease of [`policy`].
pub const LEASE: Duration = Duration::from_secs(1);
/// The retention of [`policy`].
pub const RETENTION: Duration = Duration::from_secs(10);

/// The id of `key` under `principal`; `""` is the anonymous principal.
///
/// # Panics
/// If the principal or key is not valid (a test's own mistake).
pub fn id(principal: &str, key: &str) -> RecordId {
    let principal = if principal.is_empty() {
        Principal::anonymous()
    } else {
        Principal::new(principal).expect("test principals are valid")
    };
    RecordId::new(principal, Key::parse(key.as_bytes()).expect("test keys are valid"))
}

/// The byte fingerprint of `POST /payments` with `body`.
pub fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::of("POST", "/payments", body.as_bytes())
}

/// `unix_ms` milliseconds after the epoch.
pub fn at(unix_ms: u64) -> Timestamp {
    Timestamp::from_unix_ms(unix_ms)
}

/// The machine's wall clock through [`SystemClock`], as the HTTP layer reads it; for tests
/// that compare a store's own clock (a database's `now()`) with the process's. (The core
/// itself never reads a clock; this is a test fixture's, like `SystemClock` a caller's.)
pub fn wall_clock() -> Timestamp {
    SystemClock.now()
}

/// A [`LEASE`] of 1 s and a [`RETENTION`] of 10 s.
///
/// # Panics
/// Never: the lease is shorter than the retention.
pub fn policy() -> Policy {
    Policy::new(LEASE, RETENTION).expect("lease is shorter than retention")
}

/// A 201 with two headers (one of them binary, which a store must keep byte for byte)
/// and `body`.
pub fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![
            ("content-type".to_owned(), Bytes::from_static(b"application/json")),
            ("x-trace".to_owned(), Bytes::from_static(&[0, 1, 254, 255])),
        ],
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

/// The replay of `response` completed at `completed_ms` under [`policy`]: its record
/// expires a [`RETENTION`] after the completion, and the replay says so.
pub fn replay_of(response: StoredResponse, completed_ms: u64) -> Decision {
    let retention_ms = u64::try_from(RETENTION.as_millis()).expect("10 s fits u64");
    Decision::Replay { response, expires_at: at(completed_ms + retention_ms) }
}

/// [`replay_of`] for [`response`]`(body)`.
pub fn replay(body: &str, completed_ms: u64) -> Decision {
    replay_of(response(body), completed_ms)
}
