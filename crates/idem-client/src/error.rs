//! Why a request through the layer did not produce a response.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use idem_core::{Key, KeyError};

/// An error from a body or a transport, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why one attempt did not produce a final response (and so may be retried).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The inner service failed: the connection was refused, reset, or closed before a response.
    #[error("connection error: {}", chain(.0.as_ref()))]
    Transport(#[source] BoxError),
    /// No response headers arrived within the per-attempt timeout.
    #[error("no response within {0:?}")]
    TimedOut(Duration),
    /// The server answered with a status that asks for a retry (409, 429, 503 by default).
    #[error("server answered {status}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The server's `Retry-After`, when given in seconds.
        retry_after: Option<Duration>,
        /// The start of the response body (at most [`crate::FAILURE_BODY_BYTES_MAX`]), e.g. a problem+json.
        body: Bytes,
    },
}

/// Why the layer returns no response. `Send + Sync + 'static`, like every error it holds.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// The request body is longer than the configured limit; nothing was sent.
    #[error("request body is longer than {bytes_max} bytes; nothing was sent")]
    BodyTooLarge {
        /// The limit ([`crate::IdempotentRetryBuilder::body_bytes_max`]).
        bytes_max: usize,
    },
    /// The request body could not be read; nothing was sent.
    #[error("request body could not be read: {0}; nothing was sent")]
    Body(#[source] BoxError),
    /// The request's own `Idempotency-Key` header is not a valid key; nothing was sent.
    #[error("the request's idempotency-key header is invalid: {0}; nothing was sent")]
    InvalidKey(#[from] KeyError),
    /// The request has several `Idempotency-Key` headers; nothing was sent.
    #[error("the request has {count} idempotency-key headers, at most one is allowed; nothing was sent")]
    SeveralKeys {
        /// How many.
        count: usize,
    },
    /// The request's `Idempotency-Key` header and its [`crate::OperationKey`] differ; nothing was sent.
    #[error(
        "the request's idempotency-key header {header} differs from its operation key {operation}; nothing was sent"
    )]
    ConflictingKeys {
        /// The key in the header.
        header: Key,
        /// The key in the extension.
        operation: Key,
    },
    /// The server answered 422 with idem-http's key-reused problem: this key was already
    /// used for a different request (method, path or body). Not retried: the caller must
    /// use a new key or resend the original request. Any other 422 is returned as a
    /// response (see [`crate::IdempotentRetry`]).
    #[error("idempotency key {key} was already used for a different request (422, on attempt {attempts})")]
    KeyReused {
        /// The key.
        key: Key,
        /// Attempts made, the one answered 422 included.
        attempts: u32,
        /// When the server forgets the key's record (its `Idempotency-Expires`); after that
        /// the key may be used again, for any request.
        expires_at: Option<SystemTime>,
        /// The server's problem+json, whole (at most [`crate::PROBLEM_BODY_BYTES_MAX`]).
        body: Bytes,
    },
    /// The server answered 410 with idem-http's key-expired problem: the key's record
    /// expired and only its tombstone is left, so the first attempt's outcome can no longer
    /// be replayed (SPEC "Expiry", tombstones). Not retried: running the operation again
    /// might do it twice. The caller finds out the outcome another way (a list of payments,
    /// say) or, knowing it did not happen, sends it with a new key. Any other 410 is
    /// returned as a response.
    #[error(
        "idempotency key {key} has expired on the server; its outcome is no longer kept (410, on attempt {attempts})"
    )]
    KeyExpired {
        /// The key.
        key: Key,
        /// Attempts made, the one answered 410 included.
        attempts: u32,
        /// When the tombstone ends (its `Idempotency-Expires`); after that the key is forgotten
        /// and would run again.
        expires_at: Option<SystemTime>,
        /// The server's problem+json, whole (at most [`crate::PROBLEM_BODY_BYTES_MAX`]).
        body: Bytes,
    },
    /// Every attempt allowed failed; the last failure is attached.
    #[error("gave up after {attempts} attempts with idempotency key {key}: {last}")]
    Exhausted {
        /// The key sent on every attempt; resend with it to learn the outcome.
        key: Key,
        /// Attempts made.
        attempts: u32,
        /// Why the last attempt failed.
        last: Failure,
    },
    /// The overall deadline passed (or would pass before the next attempt could start).
    #[error("deadline of {deadline:?} reached after {attempts} attempts with idempotency key {key}")]
    DeadlineExceeded {
        /// The key sent on every attempt; resend with it to learn the outcome.
        key: Key,
        /// Attempts made (an attempt cut short by the deadline included).
        attempts: u32,
        /// The configured overall deadline.
        deadline: Duration,
        /// Why the last finished attempt failed, if one did.
        last: Option<Failure>,
    },
    /// A request that needs no key (passed through, never retried) failed in the inner service.
    #[error("request failed: {}", chain(.0.as_ref()))]
    Transport(#[source] BoxError),
}

impl RetryError {
    /// The key the request was sent with, when it got that far.
    #[must_use]
    pub fn key(&self) -> Option<&Key> {
        match self {
            RetryError::KeyReused { key, .. }
            | RetryError::KeyExpired { key, .. }
            | RetryError::Exhausted { key, .. }
            | RetryError::DeadlineExceeded { key, .. } => Some(key),
            _ => None,
        }
    }

    /// Attempts made before the error (0 when nothing was sent).
    #[must_use]
    pub fn attempts(&self) -> u32 {
        match self {
            RetryError::KeyReused { attempts, .. }
            | RetryError::KeyExpired { attempts, .. }
            | RetryError::Exhausted { attempts, .. }
            | RetryError::DeadlineExceeded { attempts, .. } => *attempts,
            RetryError::Transport(_) => 1,
            _ => 0,
        }
    }
}

impl RetryError {
    /// When the server's record (or tombstone) of the key expires, for the errors that
    /// carry a server's keyed answer (`Idempotency-Expires`).
    #[must_use]
    pub fn expires_at(&self) -> Option<SystemTime> {
        match self {
            RetryError::KeyReused { expires_at, .. } | RetryError::KeyExpired { expires_at, .. } => *expires_at,
            _ => None,
        }
    }
}

/// An error and its sources, joined by ": " (hyper's own message alone says only "client error").
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    // Bounded: a source chain is finite, and a cyclic one is cut after a few links.
    for _ in 0..8 {
        let Some(next) = source else { break };
        let next_text = next.to_string();
        if !text.ends_with(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        source = next.source();
    }
    text
}
