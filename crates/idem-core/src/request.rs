//! What a new request brings to a claim: its fingerprint (and the byte fingerprint of an
//! earlier version, for records written before an upgrade), and who holds the claim it
//! may take, for operators and for the answer a concurrent duplicate gets.

use std::sync::Arc;

use crate::Fingerprint;

/// The longest request id or trace id a claim keeps, in bytes.
pub const HOLDER_ID_BYTES_MAX: usize = 128;

/// Who holds a claim: the holder's request id and trace id, as its server saw them
/// (e.g. `X-Request-Id` and the W3C `traceparent` trace id). A claim keeps them so an
/// operator's `idem keys show` and a duplicate's 409 can name the execution in flight.
///
/// Both are optional and bounded: a value that is empty, longer than
/// [`HOLDER_ID_BYTES_MAX`] bytes, or not visible ASCII (0x21..=0x7E) is not kept, since
/// they come from request headers a client controls.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Holder {
    request_id: Option<Arc<str>>,
    trace_id: Option<Arc<str>>,
}

impl Holder {
    /// No request id and no trace id.
    pub const NONE: Holder = Holder { request_id: None, trace_id: None };

    /// A holder with the given ids; each that breaks the rules above is dropped.
    #[must_use]
    pub fn new(request_id: Option<&str>, trace_id: Option<&str>) -> Holder {
        Holder { request_id: request_id.and_then(kept), trace_id: trace_id.and_then(kept) }
    }

    /// The holder's request id.
    #[must_use]
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The holder's trace id.
    #[must_use]
    pub fn trace_id(&self) -> Option<&str> {
        self.trace_id.as_deref()
    }

    /// Bytes the ids occupy in a store, for size limits.
    #[must_use]
    pub fn stored_bytes(&self) -> usize {
        self.request_id().map_or(0, str::len) + self.trace_id().map_or(0, str::len)
    }
}

fn kept(id: &str) -> Option<Arc<str>> {
    let visible = |byte: u8| (0x21..=0x7E).contains(&byte);
    (!id.is_empty() && id.len() <= HOLDER_ID_BYTES_MAX && id.bytes().all(visible)).then(|| Arc::from(id))
}

/// A new request for a record id, as [`crate::Store::claim`] takes it.
///
/// `From<&Fingerprint>` makes a request with nothing but its fingerprint, so
/// `store.claim(&id, &fingerprint, now, &policy)` reads as before.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ClaimRequest {
    /// The fingerprint a new record keeps.
    pub fingerprint: Fingerprint,
    /// The same request's byte fingerprint ([`crate::FingerprintVersion::Bytes`]) when
    /// `fingerprint` is of a later version: a record written before the upgrade matches
    /// it (SPEC "Key lifecycle": a fingerprint carries its version).
    pub earlier: Option<Fingerprint>,
    /// Who would hold the claim.
    pub holder: Holder,
}

impl ClaimRequest {
    /// A request with `fingerprint` only.
    #[must_use]
    pub fn new(fingerprint: Fingerprint) -> ClaimRequest {
        ClaimRequest { fingerprint, earlier: None, holder: Holder::NONE }
    }

    /// Whether a record that kept `recorded` was made by this same request: equal to its
    /// fingerprint, or to its earlier-version one. Versions never cross-match.
    #[must_use]
    pub fn matches(&self, recorded: &Fingerprint) -> bool {
        *recorded == self.fingerprint || self.earlier.as_ref() == Some(recorded)
    }
}

impl From<Fingerprint> for ClaimRequest {
    fn from(fingerprint: Fingerprint) -> ClaimRequest {
        ClaimRequest::new(fingerprint)
    }
}

impl From<&Fingerprint> for ClaimRequest {
    fn from(fingerprint: &Fingerprint) -> ClaimRequest {
        ClaimRequest::new(*fingerprint)
    }
}

impl From<&ClaimRequest> for ClaimRequest {
    fn from(request: &ClaimRequest) -> ClaimRequest {
        request.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FingerprintVersion, SemanticParts};

    #[test]
    fn holder_keeps_only_bounded_visible_ids() {
        // Goal: ids from client headers are kept only when short and printable.
        let holder = Holder::new(Some("req-1"), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!((holder.request_id(), holder.trace_id()), (Some("req-1"), Some("4bf92f3577b34da6a3ce929d0e0e4736")));
        let long = "x".repeat(HOLDER_ID_BYTES_MAX + 1);
        for bad in ["", "has space", "tab\t", "é", long.as_str()] {
            assert_eq!(Holder::new(Some(bad), Some(bad)), Holder::NONE, "{bad:?}");
        }
        assert_eq!(Holder::new(Some(&long[1..]), None).request_id().map(str::len), Some(HOLDER_ID_BYTES_MAX));
    }

    #[test]
    fn a_request_matches_its_own_and_its_earlier_fingerprint_only() {
        // Goal: the upgrade path (semantic now, byte record before) matches; nothing else does.
        let bytes = Fingerprint::of("POST", "/p", b"{ }");
        let parts = SemanticParts { method: "POST", path: "/p", query: &[], headers: &[], body: b"{}" };
        let semantic = Fingerprint::semantic(&parts);
        let request = ClaimRequest { fingerprint: semantic, earlier: Some(bytes), holder: Holder::NONE };
        assert!(request.matches(&semantic) && request.matches(&bytes));
        assert!(!request.matches(&Fingerprint::of("POST", "/p", b"{}")));
        assert!(!request.matches(&Fingerprint::new(FingerprintVersion::Bytes, *semantic.digest())));
        assert!(!ClaimRequest::new(semantic).matches(&bytes));
    }
}
