//! What a request asks for, as a digest: same key with another fingerprint is misuse.

use std::fmt;

use sha2::{Digest, Sha256};

/// Domain tag hashed first, so a fingerprint can never equal a SHA-256 of anything else,
/// and so a future change of what is hashed gets a new tag instead of silent collisions.
const DOMAIN_TAG: &[u8] = b"idem-fingerprint-v1\0";

/// Domain tag of a message's fingerprint ([`Fingerprint::of_message`]). It differs from
/// [`DOMAIN_TAG`] at its sixth byte, so no message's hashed input is any request's.
const MESSAGE_DOMAIN_TAG: &[u8] = b"idem-message-fingerprint-v1\0";

const _: () = assert!(DOMAIN_TAG[5] != MESSAGE_DOMAIN_TAG[5]);

/// A SHA-256 digest of what a request asks for.
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
/// retry may legitimately change.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint([u8; 32]);

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
        Fingerprint(hasher.finalize().into())
    }

    /// Rebuilds a fingerprint from the 32 bytes a store kept.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Fingerprint {
        Fingerprint(bytes)
    }

    /// The digest's 32 bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight bytes identify a fingerprint in logs and model traces well enough.
        f.write_str("Fingerprint(")?;
        for byte in &self.0[..8] {
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
        Fingerprint(self.hasher.finalize().into())
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
        fingerprint.as_bytes().iter().map(|byte| format!("{byte:02x}")).collect()
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
