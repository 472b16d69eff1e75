//! What a request asks for, as a digest: same key with another fingerprint is misuse.
//!
//! A fingerprint carries its [`FingerprintVersion`]: the byte fingerprint (version 1,
//! [`Fingerprint::of`], [`Fingerprint::of_message`]) or the semantic one (version 2,
//! [`Fingerprint::semantic`], SPEC "Key lifecycle"). A store keeps the version with the
//! digest, and a request may name the byte fingerprint as well
//! ([`crate::ClaimRequest::earlier`]), so records written before a route turned semantic
//! fingerprints on still compare correctly after the upgrade.

use std::fmt;

use sha2::{Digest, Sha256};

/// Domain tag hashed first, so a fingerprint can never equal a SHA-256 of anything else,
/// and so a future change of what is hashed gets a new tag instead of silent collisions.
const DOMAIN_TAG: &[u8] = b"idem-fingerprint-v1\0";

/// Domain tag of a message's fingerprint ([`Fingerprint::of_message`]). It differs from
/// [`DOMAIN_TAG`] at its sixth byte, so no message's hashed input is any request's.
const MESSAGE_DOMAIN_TAG: &[u8] = b"idem-message-fingerprint-v1\0";

const _: () = assert!(DOMAIN_TAG[5] != MESSAGE_DOMAIN_TAG[5]);

/// Domain tag of a semantic fingerprint ([`Fingerprint::semantic`]).
const SEMANTIC_DOMAIN_TAG: &[u8] = b"idem-fingerprint-v2\0";

/// Which rules made a fingerprint. Two fingerprints of different versions never match:
/// their digests are domain-separated, and equality (which
/// [`crate::ClaimRequest::matches`] uses) compares versions first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum FingerprintVersion {
    /// Version 1: the bytes as sent ([`Fingerprint::of`], [`Fingerprint::of_message`]).
    Bytes,
    /// Version 2: what the request means ([`Fingerprint::semantic`]).
    Semantic,
}

impl FingerprintVersion {
    /// The version's number, as stored.
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            FingerprintVersion::Bytes => 1,
            FingerprintVersion::Semantic => 2,
        }
    }

    /// The version numbered `number`, if there is one.
    #[must_use]
    pub const fn from_number(number: u8) -> Option<FingerprintVersion> {
        match number {
            1 => Some(FingerprintVersion::Bytes),
            2 => Some(FingerprintVersion::Semantic),
            _ => None,
        }
    }
}

/// Why stored bytes are not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// Neither 32 bytes (version 1) nor a version byte and 32 bytes.
    #[error("a stored fingerprint has {0} bytes, not 32 or 33")]
    Length(usize),
    /// The version byte names no version this idem knows (written by a newer idem?).
    #[error("a stored fingerprint has version {0}, which this idem does not know")]
    UnknownVersion(u8),
}

/// The parts of a request that a semantic fingerprint covers, each already in canonical
/// form (idem-http builds them: RFC 8785 JSON, sorted query, chosen headers).
#[derive(Clone, Copy, Debug)]
pub struct SemanticParts<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The path without its query, as sent.
    pub path: &'a str,
    /// The query parameters in canonical order, each `(name, value)` percent-decoded.
    pub query: &'a [(String, String)],
    /// The chosen headers, each `(lower-case name, value)`, sorted by name, absent ones left out.
    pub headers: &'a [(String, Vec<u8>)],
    /// The canonical body (RFC 8785 JSON without the ignored fields, or the bytes as sent).
    pub body: &'a [u8],
}

/// A SHA-256 digest of what a request asks for, and the version of the rules that made it.
///
/// Exactly what goes in, in this order:
///
/// 1. the bytes `idem-fingerprint-v1` and one zero byte (a domain tag);
/// 2. the method's length as a big-endian `u64`, then the method's bytes (`POST`), as sent;
/// 3. the path-and-query's length as a big-endian `u64`, then its bytes (`/payments?x=1`),
///    as sent: no normalisation, so `/a?x=1&y=2` and `/a?y=2&x=1` differ;
/// 4. the body bytes, in order, as they stream in.
///
/// Every field but the last is length-prefixed, so no two requests share an input.
/// Headers are not included: they carry transport details (tracing ids, dates) that a
/// retry may legitimately change. That is version 1 ([`FingerprintVersion::Bytes`]);
/// version 2 is [`Fingerprint::semantic`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint {
    version: FingerprintVersion,
    digest: [u8; 32],
}

impl Fingerprint {
    /// Starts a fingerprint; feed the body with [`FingerprintBuilder::update`] as it arrives.
    #[must_use]
    pub fn builder(method: &str, path_and_query: &str) -> FingerprintBuilder {
        let mut hasher = Sha256::new();
        hasher.update(DOMAIN_TAG);
        for field in [method.as_bytes(), path_and_query.as_bytes()] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field);
        }
        FingerprintBuilder { hasher }
    }

    /// The semantic fingerprint (version 2) of a request whose parts are in canonical form.
    ///
    /// Exactly what goes in, in this order, each field as its length (big-endian `u64`)
    /// and then its bytes:
    ///
    /// 1. the bytes `idem-fingerprint-v2` and one zero byte (a domain tag, unprefixed);
    /// 2. the method; the path;
    /// 3. the number of query parameters, then each name and value;
    /// 4. the number of headers, then each name and value;
    /// 5. the body.
    #[must_use]
    pub fn semantic(parts: &SemanticParts<'_>) -> Fingerprint {
        let mut hasher = Sha256::new();
        hasher.update(SEMANTIC_DOMAIN_TAG);
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        field(parts.method.as_bytes());
        field(parts.path.as_bytes());
        field(&(parts.query.len() as u64).to_be_bytes());
        for (name, value) in parts.query {
            field(name.as_bytes());
            field(value.as_bytes());
        }
        field(&(parts.headers.len() as u64).to_be_bytes());
        for (name, value) in parts.headers {
            field(name.as_bytes());
            field(value);
        }
        field(parts.body);
        Fingerprint { version: FingerprintVersion::Semantic, digest: hasher.finalize().into() }
    }

    /// The fingerprint of a request whose body is already in memory.
    #[must_use]
    pub fn of(method: &str, path_and_query: &str, body: &[u8]) -> Fingerprint {
        let mut builder = Self::builder(method, path_and_query);
        builder.update(body);
        builder.finish()
    }

    /// The fingerprint of a message: what it asks for is its subject and its payload.
    ///
    /// Exactly what goes in, in this order:
    ///
    /// 1. the bytes `idem-message-fingerprint-v1` and one zero byte (its own domain tag);
    /// 2. the subject's length as a big-endian `u64`, then its bytes, as given (the
    ///    JetStream subject, or an AMQP `exchange`, a zero byte and the `routing_key`,
    ///    as the adapter builds it);
    /// 3. the payload bytes.
    ///
    /// Headers are not included: trace ids and publish options (`Nats-Expected-*`) may
    /// differ between two publishes of one message. The domain tag differs from a
    /// request's ([`Fingerprint::of`]), so a message never fingerprint-equals an HTTP
    /// request, whatever its bytes: under one principal and key the two answer
    /// [`crate::Decision::Mismatch`], never a replay of each other's record. The format is
    /// pinned by a test: a change would turn every redelivery of a message recorded
    /// before it into a mismatch.
    #[must_use]
    pub fn of_message(subject: &str, payload: &[u8]) -> Fingerprint {
        let mut hasher = Sha256::new();
        hasher.update(MESSAGE_DOMAIN_TAG);
        hasher.update((subject.len() as u64).to_be_bytes());
        hasher.update(subject.as_bytes());
        hasher.update(payload);
        Fingerprint { version: FingerprintVersion::Bytes, digest: hasher.finalize().into() }
    }

    /// A fingerprint from its version and digest, e.g. as a store kept them.
    #[must_use]
    pub const fn new(version: FingerprintVersion, digest: [u8; 32]) -> Fingerprint {
        Fingerprint { version, digest }
    }

    /// The version of the rules that made it.
    #[must_use]
    pub const fn version(&self) -> FingerprintVersion {
        self.version
    }

    /// The digest's 32 bytes.
    #[must_use]
    pub const fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The bytes a store keeps: the 32 digest bytes for version 1 (as every store kept
    /// fingerprints before versions, so older rows read back unchanged), the version
    /// byte and then the digest for any later version.
    #[must_use]
    pub fn to_stored(&self) -> Vec<u8> {
        match self.version {
            FingerprintVersion::Bytes => self.digest.to_vec(),
            version => {
                let mut stored = Vec::with_capacity(33);
                stored.push(version.number());
                stored.extend_from_slice(&self.digest);
                stored
            }
        }
    }

    /// Reads back what [`Fingerprint::to_stored`] wrote.
    ///
    /// # Errors
    /// [`FingerprintError`] for any other length or an unknown version.
    pub fn from_stored(stored: &[u8]) -> Result<Fingerprint, FingerprintError> {
        match stored.len() {
            32 => Ok(Fingerprint::new(FingerprintVersion::Bytes, stored.try_into().expect("32 bytes"))),
            33 => {
                let version =
                    FingerprintVersion::from_number(stored[0]).ok_or(FingerprintError::UnknownVersion(stored[0]))?;
                Ok(Fingerprint::new(version, stored[1..].try_into().expect("32 bytes")))
            }
            length => Err(FingerprintError::Length(length)),
        }
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight bytes identify a fingerprint in logs and model traces well enough.
        write!(f, "Fingerprint(v{} ", self.version.number())?;
        for byte in &self.digest[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…)")
    }
}

/// A fingerprint being computed over a streaming body.
#[derive(Clone)]
pub struct FingerprintBuilder {
    hasher: Sha256,
}

impl FingerprintBuilder {
    /// Feeds the next chunk of the body.
    pub fn update(&mut self, body_chunk: &[u8]) {
        self.hasher.update(body_chunk);
    }

    /// Finishes the digest.
    #[must_use]
    pub fn finish(self) -> Fingerprint {
        Fingerprint { version: FingerprintVersion::Bytes, digest: self.hasher.finalize().into() }
    }
}

impl fmt::Debug for FingerprintBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintBuilder")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_equals_one_shot() {
        // Goal: hashing the body in chunks gives the same digest as hashing it whole.
        let mut builder = Fingerprint::builder("POST", "/payments");
        builder.update(b"{\"amount\":");
        builder.update(b"");
        builder.update(b"100}");
        assert_eq!(builder.finish(), Fingerprint::of("POST", "/payments", b"{\"amount\":100}"));
    }

    #[test]
    fn every_field_changes_the_digest() {
        // Goal: method, path, query and body each take part, and field boundaries are fixed.
        let base = Fingerprint::of("POST", "/payments?a=1", b"{}");
        assert_ne!(base, Fingerprint::of("PATCH", "/payments?a=1", b"{}"));
        assert_ne!(base, Fingerprint::of("POST", "/payments?a=2", b"{}"));
        assert_ne!(base, Fingerprint::of("POST", "/users?a=1", b"{}"));
        assert_ne!(base, Fingerprint::of("POST", "/payments?a=1", b"{ }"));
        assert_ne!(Fingerprint::of("POS", "T/x", b""), Fingerprint::of("POST", "/x", b""));
        assert_ne!(Fingerprint::of("POST", "/x", b"y"), Fingerprint::of("POST", "/xy", b""));
    }

    fn hex(fingerprint: Fingerprint) -> String {
        fingerprint.digest().iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn both_formats_are_pinned() {
        // Goal: what is hashed stays as documented (stores keep fingerprints; a silent change
        // would make every retry or redelivery of an older record a mismatch). The expected
        // digests were computed outside Rust from the documented layout.
        let request = Fingerprint::of("POST", "/payments", b"{\"amount\":100}");
        assert_eq!(hex(request), "869c31da1db5c074c04e01b80f474adea431e37a4421c63a199c5494a44cf973");
        let message = Fingerprint::of_message("orders.created", b"{\"id\":1}");
        assert_eq!(hex(message), "deac82c65c9c383ab98f521673c6ac30d6b70b1dc54670585ca24c2e223876b6");
    }

    #[test]
    fn stored_form_round_trips_and_keeps_version_one_as_it_was() {
        // Goal: version 1 is stored as the bare 32 bytes every store held before versions,
        // a later version with its number first, and bad bytes are an error, not a panic.
        let bytes = Fingerprint::of("POST", "/p", b"{}");
        assert_eq!(bytes.to_stored(), bytes.digest().to_vec());
        let parts = SemanticParts { method: "POST", path: "/p", query: &[], headers: &[], body: b"{}" };
        let semantic = Fingerprint::semantic(&parts);
        assert_eq!(semantic.to_stored()[0], 2);
        for fingerprint in [bytes, semantic] {
            assert_eq!(Fingerprint::from_stored(&fingerprint.to_stored()), Ok(fingerprint));
        }
        assert_eq!(Fingerprint::from_stored(&[0; 31]), Err(FingerprintError::Length(31)));
        let mut unknown = semantic.to_stored();
        unknown[0] = 9;
        assert_eq!(Fingerprint::from_stored(&unknown), Err(FingerprintError::UnknownVersion(9)));
    }

    #[test]
    fn semantic_fields_are_separated_and_never_equal_a_byte_fingerprint() {
        // Goal: each semantic part takes part, boundaries are fixed, and the same digest
        // under two versions is two different fingerprints.
        let query = [("a".to_owned(), "1".to_owned())];
        let headers = [("content-type".to_owned(), b"application/json".to_vec())];
        let base = SemanticParts { method: "POST", path: "/p", query: &query, headers: &headers, body: b"{}" };
        let fingerprint = Fingerprint::semantic(&base);
        assert_ne!(fingerprint, Fingerprint::semantic(&SemanticParts { method: "PUT", ..base }));
        assert_ne!(fingerprint, Fingerprint::semantic(&SemanticParts { path: "/q", ..base }));
        assert_ne!(fingerprint, Fingerprint::semantic(&SemanticParts { query: &[], ..base }));
        assert_ne!(fingerprint, Fingerprint::semantic(&SemanticParts { headers: &[], ..base }));
        assert_ne!(fingerprint, Fingerprint::semantic(&SemanticParts { body: b"[]", ..base }));
        let shifted = [("a1".to_owned(), String::new())];
        assert_ne!(fingerprint, Fingerprint::semantic(&SemanticParts { query: &shifted, ..base }));
        let twin = Fingerprint::new(FingerprintVersion::Bytes, *fingerprint.digest());
        assert_ne!(twin, fingerprint);
    }

    #[test]
    fn subject_and_payload_each_change_a_message_fingerprint() {
        // Goal: subject and payload both take part, and their boundary is fixed by the length prefix.
        let base = Fingerprint::of_message("orders.created", b"{}");
        assert_eq!(base, Fingerprint::of_message("orders.created", b"{}"));
        assert_ne!(base, Fingerprint::of_message("orders.updated", b"{}"));
        assert_ne!(base, Fingerprint::of_message("orders.created", b"{ }"));
        assert_ne!(Fingerprint::of_message("a", b"bc"), Fingerprint::of_message("ab", b"c"));
        assert_ne!(Fingerprint::of_message("", b""), Fingerprint::of_message("", b"\0"));
    }

    #[test]
    fn a_message_never_fingerprints_as_a_request() {
        // Goal: for every way of cutting the same bytes into (subject, payload) and into
        // (method, path, body), no message fingerprint equals a request fingerprint, so one
        // record id shared by HTTP and a consumer answers mismatch, never a cross replay.
        // Cuts include empty fields, so a message fingerprint built on the request's hash
        // with an empty method or path (`of("", subject, payload)`) would be caught.
        for text in ["POST/payments{\"amount\":100}", "orders.created{\"id\":1}", "", "a"] {
            let cuts = 0..=text.len();
            let requests: std::collections::BTreeSet<Fingerprint> = cuts
                .clone()
                .flat_map(|i| (i..=text.len()).map(move |j| (i, j)))
                .map(|(i, j)| Fingerprint::of(&text[..i], &text[i..j], &text.as_bytes()[j..]))
                .collect();
            for cut in cuts {
                let (subject, payload) = text.split_at(cut);
                let message = Fingerprint::of_message(subject, payload.as_bytes());
                assert!(!requests.contains(&message), "{subject:?} + {payload:?} fingerprints as a request");
            }
        }
    }
}
