//! What the layer did with a request, for logs and metrics.

/// What the layer did with one request. Every response the layer returns carries it in
/// its extensions, and the layer emits one `tracing` event per request with it, so a
/// server can count outcomes without parsing logs.
///
/// ```
/// use idem_http::Outcome;
///
/// # let response = http::Response::new(());
/// let outcome = response.extensions().get::<Outcome>().copied();
/// assert_eq!(Outcome::Replayed.as_str(), "replayed");
/// # assert_eq!(outcome, None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The method needs no key (or a missing key is allowed): the handler ran, nothing recorded.
    PassedThrough,
    /// The handler ran under a claim and its response is recorded (by the layer, or by the
    /// handler in its own transaction).
    Executed,
    /// The handler ran under a claim and failed (5xx, error or panic) or said "try again
    /// later" (408, 425, 429): the claim was released, so a retry runs the handler again.
    Released,
    /// The handler ran, but recording its response failed after bounded retries (the store
    /// went away); the handler's response was returned. Its claim lapses with the lease.
    Unrecorded,
    /// The handler ran and its response was answered whole, but it could not be kept for
    /// replay (its body was over the recording limit, or it had trailers): the record holds
    /// a `response-not-kept` problem instead, so retries do not run the handler again and
    /// get that problem.
    ResponseTooLarge,
    /// The recorded response was answered; the handler did not run.
    Replayed,
    /// Another request holds the claim: 409, the handler did not run.
    Conflict,
    /// The key was used for another request: 422, the handler did not run.
    Mismatch,
    /// Only the record's tombstone remains: 410 `key-expired`, nothing ran.
    Gone,
    /// Refused before a claim (bad or missing key, body too large or unreadable, principal
    /// refused): nothing recorded, the handler did not run.
    Rejected,
    /// The store could not be used: 503 (or 500 for an unreadable record), the handler did not run.
    StoreFailed,
    /// The handler ran, but its claim had been taken over (its lease lapsed; a renewal or
    /// the completion was refused), so its response was not answered; the recorded
    /// response, a 409, or a 422 (the key now belongs to another request) was answered instead.
    Superseded,
}

impl Outcome {
    /// A short lower-case name, for logs and metric labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::PassedThrough => "passed_through",
            Outcome::Executed => "executed",
            Outcome::Released => "released",
            Outcome::Unrecorded => "unrecorded",
            Outcome::ResponseTooLarge => "response_too_large",
            Outcome::Replayed => "replayed",
            Outcome::Conflict => "conflict",
            Outcome::Mismatch => "mismatch",
            Outcome::Gone => "gone",
            Outcome::Rejected => "rejected",
            Outcome::StoreFailed => "store_failed",
            Outcome::Superseded => "superseded",
        }
    }
}
