//! The catalogue of every problem type idem answers ([`CATALOGUE`]): the layer's, the
//! demo server's and the admin router's, each with its slug, title and origin, and each
//! documented in a section of `docs/problems.md`. Re-exported by `problem`.

/// Who answers a problem type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The idempotency layer (idem-http), in any server that uses it.
    Layer,
    /// idem-server, the demo payments API (`idem serve`), around the layer.
    DemoServer,
    /// idem-admin, the key administration router, for the situations only it meets (it
    /// answers the layer's and the demo server's types for the shared ones).
    Admin,
}

/// One problem type: its slug (the part of the `type` URI after the base, and the heading
/// `## <slug>` of its section in `docs/problems.md`), its title (the same for every
/// occurrence, RFC 9457 section 3.1.3) and who answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProblemType {
    /// The slug: lower-case ASCII letters and `-`.
    pub slug: &'static str,
    /// The title.
    pub title: &'static str,
    /// Who answers it.
    pub origin: Origin,
}

/// The problem types, one constant each; [`CATALOGUE`] lists them all.
pub mod types {
    use super::{Origin, ProblemType};

    const fn admin(slug: &'static str, title: &'static str) -> ProblemType {
        ProblemType { slug, title, origin: Origin::Admin }
    }

    const fn layer(slug: &'static str, title: &'static str) -> ProblemType {
        ProblemType { slug, title, origin: Origin::Layer }
    }

    const fn server(slug: &'static str, title: &'static str) -> ProblemType {
        ProblemType { slug, title, origin: Origin::DemoServer }
    }

    /// 400: a keyed method without `Idempotency-Key`.
    pub const KEY_MISSING: ProblemType = layer("key-missing", "Idempotency-Key missing");
    /// 400: an `Idempotency-Key` that is not a key.
    pub const KEY_INVALID: ProblemType = layer("key-invalid", "Idempotency-Key invalid");
    /// 413: a body over the limit.
    pub const BODY_TOO_LARGE: ProblemType = layer("body-too-large", "Request body too large");
    /// 400: a body that could not be read to its end.
    pub const BODY_UNREADABLE: ProblemType = layer("body-unreadable", "Request body unreadable");
    /// 409: the same key is in flight.
    pub const IN_PROGRESS: ProblemType = layer("in-progress", "Request in progress");
    /// 422: the key was used for another request.
    pub const KEY_REUSED: ProblemType = layer("key-reused", "Idempotency-Key reused");
    /// 410: only the key's tombstone remains; the operation ran and will not run again.
    pub const KEY_EXPIRED: ProblemType = layer("key-expired", "Idempotency-Key expired");
    /// 503: the store is busy, unreachable or cannot write.
    pub const STORE_UNAVAILABLE: ProblemType = layer("store-unavailable", "Idempotency store unavailable");
    /// 503: the store is at its size limit.
    pub const STORE_FULL: ProblemType = layer("store-full", "Idempotency store full");
    /// 500: the record cannot be read back.
    pub const STORE_CORRUPT: ProblemType = layer("store-corrupt", "Idempotency record unreadable");
    /// 500: the handler panicked, or its body failed.
    pub const HANDLER_FAILED: ProblemType = layer("handler-failed", "Handler failed");
    /// The original status: the operation completed, its response was not kept.
    pub const RESPONSE_NOT_KEPT: ProblemType = layer("response-not-kept", "Response not kept");

    /// 404: no route, or no such row for this caller.
    pub const NOT_FOUND: ProblemType = server("not-found", "Not found");
    /// 405: the route does not take this method.
    pub const METHOD_NOT_ALLOWED: ProblemType = server("method-not-allowed", "Method not allowed");
    /// 401: an `Authorization` header the server cannot read a caller from.
    pub const UNAUTHORIZED: ProblemType = server("unauthorized", "Unauthorized");
    /// 400: `starting_after` names nothing of this caller's.
    pub const UNKNOWN_CURSOR: ProblemType = server("unknown-cursor", "Unknown cursor");
    /// 415: a `POST` body that is not JSON.
    pub const UNSUPPORTED_MEDIA_TYPE: ProblemType = server("unsupported-media-type", "Unsupported media type");
    /// 408: the body did not arrive in time.
    pub const BODY_READ_TIMEOUT: ProblemType = server("body-read-timeout", "Request body too slow");
    /// 503: too many bodies are being received at once.
    pub const SERVER_BUSY: ProblemType = server("server-busy", "Server busy");
    /// 400: a body that is not JSON text.
    pub const MALFORMED_JSON: ProblemType = server("malformed-json", "Malformed JSON");
    /// 400: a body or query that fails validation.
    pub const INVALID_REQUEST: ProblemType = server("invalid-request", "Invalid request");
    /// 503 (500 for an unreadable row): the payments database failed.
    pub const LEDGER_UNAVAILABLE: ProblemType = server("ledger-unavailable", "Ledger unavailable");
    /// 503 on `/healthz`: a store write failed and none has succeeded since.
    pub const NOT_READY: ProblemType = server("not-ready", "Not ready");
    /// 429: a caller creating new keys faster than its share.
    pub const RATE_LIMITED: ProblemType = server("rate-limited", "Too many new keys");
    /// 500: a bug in the server.
    pub const INTERNAL: ProblemType = server("internal", "Internal error");

    /// 403: a known caller the admin router's authorisation hook does not let administer keys.
    pub const FORBIDDEN: ProblemType = admin("forbidden", "Forbidden");
    /// 400: an admin listing's `starting_after` that is not a cursor the router answered.
    pub const INVALID_CURSOR: ProblemType = admin("invalid-cursor", "Invalid cursor");
}

/// Every problem type idem answers, the layer's, the demo server's and the admin router's: the one list that the
/// documentation page (`ProblemDocs`), its tests and the check of
/// `docs/problems.md` (one section per entry, and no other) use.
pub const CATALOGUE: [ProblemType; 27] = [
    types::KEY_MISSING,
    types::KEY_INVALID,
    types::BODY_TOO_LARGE,
    types::BODY_UNREADABLE,
    types::IN_PROGRESS,
    types::KEY_REUSED,
    types::KEY_EXPIRED,
    types::STORE_UNAVAILABLE,
    types::STORE_FULL,
    types::STORE_CORRUPT,
    types::HANDLER_FAILED,
    types::RESPONSE_NOT_KEPT,
    types::NOT_FOUND,
    types::METHOD_NOT_ALLOWED,
    types::UNAUTHORIZED,
    types::UNKNOWN_CURSOR,
    types::UNSUPPORTED_MEDIA_TYPE,
    types::BODY_READ_TIMEOUT,
    types::SERVER_BUSY,
    types::MALFORMED_JSON,
    types::INVALID_REQUEST,
    types::LEDGER_UNAVAILABLE,
    types::NOT_READY,
    types::RATE_LIMITED,
    types::INTERNAL,
    types::FORBIDDEN,
    types::INVALID_CURSOR,
];

/// Looks a slug up in [`CATALOGUE`].
#[must_use]
pub fn catalogued(slug: &str) -> Option<ProblemType> {
    CATALOGUE.iter().copied().find(|kind| kind.slug == slug)
}
